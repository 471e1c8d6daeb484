// codebrowse-agent: the codebrowse guest agent, compiled (see internal/agent and
// vm-images/README.md for its contract). Started with no arguments (codebrowse-agent.service on
// Linux, a scheduled task as SYSTEM on Windows) it waits for its VM's claim and sets the VM up;
// it exits 0 once "done" is delivered. Subcommands for tests:
//
//	codebrowse-agent file-name URL INDEX            the file name the portal gives a package URL
//	codebrowse-agent file-name --name NAME INDEX    a manifest's file name, made safe again
//	codebrowse-agent check-unpacked DIR CAP         the checks after unpacking, on a tree
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"codebrowse.io/agent/internal/agent"
	"codebrowse.io/agent/internal/archive"
	"codebrowse.io/agent/internal/filename"
	"codebrowse.io/agent/internal/settings"
)

func main() {
	if len(os.Args) > 1 {
		os.Exit(subcommand(os.Args[1:]))
	}
	if err := prepareProcess(); err != nil {
		fmt.Fprintf(os.Stderr, "codebrowse-agent: %v\n", err)
		os.Exit(1)
	}
	// No signal handling: SIGTERM ends the agent at once, as it ended the shell agent, and a package
	// cut off half-way has no result, so the next start installs it again (systemd stops the
	// install steps with the service's cgroup).
	a := &agent.Agent{
		S:      settings.FromEnv(os.Getenv, defaults()),
		Host:   newHost(),
		Stdout: os.Stdout,
	}
	os.Exit(a.Run(context.Background()))
}

func usage() int {
	fmt.Fprintln(os.Stderr, "usage: codebrowse-agent [file-name URL INDEX | file-name --name NAME INDEX | check-unpacked DIR CAP]")
	return 2
}

func subcommand(args []string) int {
	switch {
	case len(args) == 3 && args[0] == "file-name":
		fmt.Println(filename.FromURL(args[1], args[2]))
	case len(args) == 4 && args[0] == "file-name" && args[1] == "--name":
		fmt.Println(filename.FromName(args[2], args[3]))
	case len(args) == 3 && args[0] == "check-unpacked":
		limit, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			return usage()
		}
		if err := archive.CheckTree(args[1], limit); err != nil {
			if r, ok := err.(*archive.Refusal); ok {
				fmt.Printf("%s: %s\n", r.Rule, r.Detail)
				return 1
			}
			fmt.Fprintf(os.Stderr, "codebrowse-agent: %v\n", err)
			return 2
		}
	default:
		return usage()
	}
	return 0
}
