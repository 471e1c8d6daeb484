package main

import (
	"os"
	"path/filepath"

	"codebrowse.io/agent/internal/agent"
	"codebrowse.io/agent/internal/settings"
)

// Paths of codebrowse-agent.ps1: state under %ProgramData%\codebrowse-agent, its log there.
func defaults() settings.Defaults {
	data := os.Getenv("ProgramData")
	if data == "" {
		data = `C:\ProgramData`
	}
	return settings.Defaults{
		Config:   filepath.Join(data, "codebrowse", "agent.env"),
		StateDir: filepath.Join(data, "codebrowse-agent"),
	}
}

func newHost() agent.Host { return agent.WindowsHost{} }

// prepareProcess: the agent runs as SYSTEM (a scheduled task "At startup"); nothing to set.
func prepareProcess() error { return nil }
