// Package settings reads the agent's settings: the environment first, then the env file
// (/etc/codebrowse/agent.env: KEY=value lines, read and never sourced), which the NoCloud disk
// KubeVirt attaches (label cidata) fills when the image has no cloud-init.
package settings

import (
	"bufio"
	"bytes"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Settings are what the agent runs with. Paths are the real ones (a test moves them).
type Settings struct {
	Portal string // without a trailing "/"
	Token  string
	MAC    string // CODEBROWSE_MAC: this VM's own MAC (a VM restored from a memory snapshot has another)
	LANMAC string // CODEBROWSE_LAN_MAC: the pool network's NIC, which networkd must leave alone

	Config   string // CODEBROWSE_CONFIG
	StateDir string // CODEBROWSE_STATE_DIR
	Log      string // CODEBROWSE_LOG

	PollEvery time.Duration // CODEBROWSE_POLL_SECONDS (1)
	MaxPolls  int           // CODEBROWSE_MAX_POLLS (0: forever)
	SetClock  bool          // CODEBROWSE_SET_CLOCK (1)

	ArchiveMaxEntries int   // CODEBROWSE_ARCHIVE_MAX_ENTRIES (10000)
	ArchiveMaxBytes   int64 // CODEBROWSE_ARCHIVE_MAX_BYTES (1 GiB)
	ArchiveMaxRatio   int64 // CODEBROWSE_ARCHIVE_MAX_RATIO (100)

	InstallTimeout time.Duration // CODEBROWSE_INSTALL_TIMEOUT (3600 s)
	RunOutputMax   int64         // CODEBROWSE_RUN_OUTPUT_MAX (921600)
	UnpackUser     string        // CODEBROWSE_UNPACK_USER (codebrowse-unpack)

	// SkipAccount (CODEBROWSE_SKIP_ACCOUNT=1, Windows only) is a test switch: the session user's
	// account is not made (Wine has no local accounts), only its profile directory is used.
	SkipAccount bool
}

// Defaults are the paths of the platform (set in defaults_*.go).
type Defaults struct {
	Config, StateDir, Log string
}

// FromEnv reads every setting the environment gives (getenv), with the platform's defaults. The
// portal, token and MACs are completed by Complete from the env file.
func FromEnv(getenv func(string) string, d Defaults) Settings {
	or := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	s := Settings{
		Portal:            first(getenv("CODEBROWSE_PORTAL_URL"), getenv("CODEBROWSE_PORTAL")),
		Token:             first(getenv("CODEBROWSE_AGENT_TOKEN"), getenv("CODEBROWSE_TOKEN")),
		MAC:               getenv("CODEBROWSE_MAC"),
		LANMAC:            getenv("CODEBROWSE_LAN_MAC"),
		Config:            or("CODEBROWSE_CONFIG", d.Config),
		StateDir:          or("CODEBROWSE_STATE_DIR", d.StateDir),
		PollEvery:         seconds(getenv("CODEBROWSE_POLL_SECONDS"), time.Second),
		MaxPolls:          int(number(getenv("CODEBROWSE_MAX_POLLS"), 0)),
		SetClock:          or("CODEBROWSE_SET_CLOCK", "1") == "1",
		ArchiveMaxEntries: int(number(getenv("CODEBROWSE_ARCHIVE_MAX_ENTRIES"), 10000)),
		ArchiveMaxBytes:   number(getenv("CODEBROWSE_ARCHIVE_MAX_BYTES"), 1<<30),
		ArchiveMaxRatio:   number(getenv("CODEBROWSE_ARCHIVE_MAX_RATIO"), 100),
		InstallTimeout:    seconds(getenv("CODEBROWSE_INSTALL_TIMEOUT"), time.Hour),
		RunOutputMax:      number(getenv("CODEBROWSE_RUN_OUTPUT_MAX"), 921600),
		UnpackUser:        or("CODEBROWSE_UNPACK_USER", "codebrowse-unpack"),
		SkipAccount:       getenv("CODEBROWSE_SKIP_ACCOUNT") == "1",
	}
	s.Log = or("CODEBROWSE_LOG", d.Log)
	if s.Log == "" {
		s.Log = s.StateDir + string(os.PathSeparator) + "agent.log"
	}
	return s
}

// Complete fills what the environment left out of the portal, token and MACs from the env file's
// text; true when the agent has a portal and a token.
func (s *Settings) Complete(envFile []byte) bool {
	if envFile != nil {
		fill := func(v *string, keys ...string) {
			for _, k := range keys {
				if *v == "" {
					*v = Value(envFile, k)
				}
			}
		}
		fill(&s.Portal, "CODEBROWSE_PORTAL_URL", "CODEBROWSE_PORTAL")
		fill(&s.Token, "CODEBROWSE_AGENT_TOKEN", "CODEBROWSE_TOKEN")
		fill(&s.MAC, "CODEBROWSE_MAC")
		fill(&s.LANMAC, "CODEBROWSE_LAN_MAC")
	}
	s.Portal = strings.TrimSuffix(s.Portal, "/")
	return s.Portal != "" && s.Token != ""
}

// Value is KEY's value in an env file (KEY=value, an optional "export ", optional quotes around
// the value); the last line that sets it wins; "" when none does.
func Value(file []byte, key string) string {
	value := ""
	sc := bufio.NewScanner(bytes.NewReader(file))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimLeft(sc.Text(), " \t\v\f\r")
		if rest, ok := strings.CutPrefix(line, "export"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			line = strings.TrimLeft(rest, " \t\v\f\r")
		}
		v, ok := strings.CutPrefix(line, key+"=")
		if !ok {
			continue
		}
		value = unquote(v)
	}
	return value
}

func unquote(v string) string {
	trimmed := strings.TrimRight(v, " \t\v\f\r")
	for _, q := range []string{`"`, `'`} {
		if len(trimmed) >= 2 && strings.HasPrefix(trimmed, q) && strings.HasSuffix(trimmed, q) {
			return trimmed[1 : len(trimmed)-1]
		}
	}
	return trimmed
}

var settingLine = regexp.MustCompile(`^[ \t\v\f\r]*(CODEBROWSE_[A-Z_]*=.*)$`)

// FromUserData is the env file a NoCloud user-data makes: its CODEBROWSE_*= lines, unindented;
// nil when it has none (a golden image's disk: the agent looks again later).
func FromUserData(userData []byte) []byte {
	var out bytes.Buffer
	for _, line := range strings.Split(string(userData), "\n") {
		if m := settingLine.FindStringSubmatch(line); m != nil {
			out.WriteString(m[1])
			out.WriteByte('\n')
		}
	}
	if out.Len() == 0 {
		return nil
	}
	return out.Bytes()
}

func first(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

func number(v string, def int64) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return def
	}
	return n
}

// seconds reads a number of seconds as sleep(1) does (fractions allowed).
func seconds(v string, def time.Duration) time.Duration {
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || f < 0 {
		return def
	}
	return time.Duration(f * float64(time.Second))
}
