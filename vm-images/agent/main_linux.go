package main

import (
	"errors"
	"os"
	"syscall"

	"codebrowse.io/agent/internal/agent"
	"codebrowse.io/agent/internal/settings"
)

func defaults() settings.Defaults {
	return settings.Defaults{
		Config:   "/etc/codebrowse/agent.env",
		StateDir: "/var/lib/codebrowse-agent",
		Log:      "/var/log/codebrowse-agent.log",
	}
}

func newHost() agent.Host { return agent.LinuxHost{} }

// prepareProcess: root, umask 022 and the standard PATH, as the shell agent set them.
func prepareProcess() error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root")
	}
	syscall.Umask(0o022)
	return os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}
