package settings

import (
	"testing"
	"time"
)

func getenv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

var defaults = Defaults{Config: "/etc/codebrowse/agent.env", StateDir: "/var/lib/codebrowse-agent", Log: "/var/log/codebrowse-agent.log"}

func TestTheEnvironmentComesFirstThenTheEnvFile(t *testing.T) {
	s := FromEnv(getenv(map[string]string{"CODEBROWSE_PORTAL": "http://env/", "CODEBROWSE_MAC": "02:00:00:00:00:01"}), defaults)
	file := []byte("CODEBROWSE_PORTAL_URL=http://file\nexport CODEBROWSE_TOKEN='tok en'\nCODEBROWSE_MAC=02:00:00:00:00:99\nCODEBROWSE_LAN_MAC=\"02:00:00:00:00:aa\"  \n")
	if !s.Complete(file) {
		t.Fatal("not complete")
	}
	if s.Portal != "http://env" || s.Token != "tok en" || s.MAC != "02:00:00:00:00:01" || s.LANMAC != "02:00:00:00:00:aa" {
		t.Fatalf("%+v", s)
	}
}

func TestBothSpellingsAndTheLastLineWins(t *testing.T) {
	s := FromEnv(getenv(map[string]string{"CODEBROWSE_AGENT_TOKEN": "a", "CODEBROWSE_TOKEN": "b"}), defaults)
	if s.Token != "a" {
		t.Fatalf("token %q", s.Token)
	}
	s = FromEnv(getenv(nil), defaults)
	if s.Complete([]byte("CODEBROWSE_PORTAL=http://one\nCODEBROWSE_PORTAL=http://two/\n  CODEBROWSE_TOKEN=t\n")) != true || s.Portal != "http://two" {
		t.Fatalf("%+v", s)
	}
	s = FromEnv(getenv(nil), defaults)
	if s.Complete([]byte("CODEBROWSE_PORTAL=http://x\n# CODEBROWSE_TOKEN=t\nXCODEBROWSE_TOKEN=t\n")) {
		t.Fatal("a comment or another key counted as the token")
	}
	if s.Complete(nil) {
		t.Fatal("complete without a file")
	}
}

func TestDefaultsAndTunables(t *testing.T) {
	s := FromEnv(getenv(nil), defaults)
	if s.Config != defaults.Config || s.StateDir != defaults.StateDir || s.Log != defaults.Log || s.PollEvery != time.Second ||
		s.MaxPolls != 0 || !s.SetClock || s.ArchiveMaxEntries != 10000 || s.ArchiveMaxBytes != 1<<30 || s.ArchiveMaxRatio != 100 ||
		s.InstallTimeout != time.Hour || s.RunOutputMax != 921600 || s.UnpackUser != "codebrowse-unpack" || s.SkipAccount {
		t.Fatalf("%+v", s)
	}
	s = FromEnv(getenv(map[string]string{
		"CODEBROWSE_CONFIG": "/c", "CODEBROWSE_STATE_DIR": "/s", "CODEBROWSE_LOG": "/l", "CODEBROWSE_POLL_SECONDS": "0.25",
		"CODEBROWSE_MAX_POLLS": "600", "CODEBROWSE_SET_CLOCK": "0", "CODEBROWSE_ARCHIVE_MAX_ENTRIES": "5",
		"CODEBROWSE_ARCHIVE_MAX_BYTES": "100", "CODEBROWSE_ARCHIVE_MAX_RATIO": "3", "CODEBROWSE_INSTALL_TIMEOUT": "7",
		"CODEBROWSE_RUN_OUTPUT_MAX": "99", "CODEBROWSE_UNPACK_USER": "u", "CODEBROWSE_SKIP_ACCOUNT": "1",
	}), defaults)
	if s.Config != "/c" || s.StateDir != "/s" || s.Log != "/l" || s.PollEvery != 250*time.Millisecond || s.MaxPolls != 600 ||
		s.SetClock || s.ArchiveMaxEntries != 5 || s.ArchiveMaxBytes != 100 || s.ArchiveMaxRatio != 3 ||
		s.InstallTimeout != 7*time.Second || s.RunOutputMax != 99 || s.UnpackUser != "u" || !s.SkipAccount {
		t.Fatalf("%+v", s)
	}
	w := FromEnv(getenv(map[string]string{"CODEBROWSE_STATE_DIR": "/state"}), Defaults{Config: "/c"})
	if w.Log != "/state/agent.log" {
		t.Fatalf("log %q", w.Log)
	}
}

func TestUserDataLinesBecomeTheEnvFile(t *testing.T) {
	ud := []byte("#cloud-config\nwrite_files:\n  - path: /etc/codebrowse/agent.env\n    content: |\n      CODEBROWSE_PORTAL=http://p\n      CODEBROWSE_TOKEN=t\n")
	if got := string(FromUserData(ud)); got != "CODEBROWSE_PORTAL=http://p\nCODEBROWSE_TOKEN=t\n" {
		t.Fatalf("%q", got)
	}
	if FromUserData([]byte("#cloud-config\nhostname: golden\n")) != nil {
		t.Fatal("a golden image's user-data made an env file")
	}
}
