// Package agent is the codebrowse guest agent: it waits until its VM is claimed by a session, then
// does what the session's manifest says (clock, hostname, address, user, sudo, ssh, the packages
// in order), reporting each package and finally "done" to the portal's agent API. It is the Go
// form of codebrowse-agent.sh with the same contract (vm-images/README.md): the same settings,
// state files, steps, messages and reports, and it is safe to run again: what is done is
// remembered under the state dir and not done twice.
package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"codebrowse.io/agent/internal/manifest"
	"codebrowse.io/agent/internal/portal"
	"codebrowse.io/agent/internal/report"
	"codebrowse.io/agent/internal/settings"
)

// messageBytes is how much of a package's output its report carries (the end of it).
const messageBytes = 8192

// Agent is one run of the agent.
type Agent struct {
	S settings.Settings
	// Root is "" on a real machine; the agent's own end-to-end test puts every system path
	// (/etc, /home, /sys, /usr/sbin ...) under a temporary directory instead.
	Root   string
	Host   Host
	Stdout io.Writer
	// Sleep waits between polls and tries (tests make it short).
	Sleep func(ctx context.Context, d time.Duration)

	client  *portal.Client
	logFile *os.File
	steps   []string
	claimed time.Time

	m       *manifest.Manifest
	sd      string // the session's state dir
	user    *Account
	runMode bool
	date    string // the manifest response's Date header
	// sshEarly: how the ssh service was started before the claim (Linux; "" when it was not).
	sshEarly string
	// announcing: the address's announcement on the LAN, under way (nil when none is).
	announcing chan string
}

// waitAnnounced: the address's announcement done, as a step of its own ("announce: ...").
func (a *Agent) waitAnnounced() {
	if a.announcing == nil {
		return
	}
	text := "announce: " + <-a.announcing
	a.announcing = nil
	a.log("%s", text)
	a.steps = append(a.steps, text)
}

// path is a system path as the agent reads and writes it (under Root in the agent's tests).
func (a *Agent) path(p string) string {
	if a.Root == "" {
		return p
	}
	return filepath.Join(a.Root, p)
}

func (a *Agent) priv() string { return filepath.Join(a.S.StateDir, "private") }

func (a *Agent) state(name string) string { return filepath.Join(a.S.StateDir, name) }

func (a *Agent) session(name string) string { return filepath.Join(a.sd, name) }

// log writes a line to stdout and the log file.
func (a *Agent) log(format string, args ...any) {
	line := time.Now().UTC().Format("2006-01-02T15:04:05Z") + " codebrowse-agent: " + fmt.Sprintf(format, args...) + "\n"
	_, _ = io.WriteString(a.Stdout, line)
	if a.logFile != nil {
		_, _ = a.logFile.WriteString(line)
	}
}

// step logs a setup step with how long it took, and keeps it for the done message.
func (a *Agent) step(name string, start time.Time, format string, args ...any) {
	text := fmt.Sprintf("%s: %s (%d ms)", name, fmt.Sprintf(format, args...), time.Since(start).Milliseconds())
	a.log("%s", text)
	a.steps = append(a.steps, text)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func executable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

func touch(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// firstLine is a file's first line ("" when it cannot be read).
func firstLine(p string) string {
	data, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return line
}

// writeIfChanged writes data to p only when it differs (a second run changes nothing); an
// existing file is rewritten in place (its mode and owner kept), a new one made with perm.
func writeIfChanged(p string, data []byte, perm os.FileMode) error {
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return os.WriteFile(p, data, perm)
}

// writeAtomic replaces p by data (a crash leaves the old or the new, never half).
func writeAtomic(p string, data []byte, perm os.FileMode) error {
	tmp := p + ".new"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// freshPath is a path under dir named name that does not exist yet: name, name-2, name-3 ...
func freshPath(dir, name string) string {
	p := filepath.Join(dir, name)
	for n := 2; exists(p); n++ {
		p = filepath.Join(dir, name+"-"+strconv.Itoa(n))
	}
	return p
}

// tail is the last n bytes of a file.
func tail(p string, n int64) []byte {
	f, err := os.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	return data
}

func (a *Agent) sleep(ctx context.Context, d time.Duration) {
	if a.Sleep != nil {
		a.Sleep(ctx, d)
		return
	}
	portal.SleepCtx(ctx, d)
}

// safeDirName makes a session's name a directory name: every byte outside [A-Za-z0-9._-] is "_".
func safeDirName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	if out := string(b); out != "." && out != ".." {
		return out
	}
	return strings.Repeat("_", len(b))
}

// Run runs the agent to its end and returns its exit status: 0 when done is reported (and a test
// run's result), 1 when a report did not get through (the service restarts it), 3 when it gave up
// waiting for a claim (CODEBROWSE_MAX_POLLS).
func (a *Agent) Run(ctx context.Context) int {
	if err := a.prepare(); err != nil {
		fmt.Fprintf(os.Stderr, "codebrowse-agent: %v\n", err)
		return 1
	}
	defer a.logFile.Close()
	unlock, err := a.lock()
	if err != nil {
		a.log("could not take the agent's lock: %v", err)
		return 1
	}
	defer unlock()
	if !a.loadSettings(ctx) {
		return 1
	}
	a.beforeClaim(ctx)
	// Ready for a claim: systemd may start what is ordered after the agent (the image starts
	// qemu-guest-agent after it, and the warm pool pauses a VM once KubeVirt reports that agent
	// connected, so a warm VM is paused with this work done, not in the middle of it).
	notifyReady()
	a.client = portalClient(a.S.Portal, a)
	a.log("portal %s; waiting for the manifest", a.S.Portal)
	m, body, date, ok := a.waitForManifest(ctx)
	if !ok {
		return 3
	}
	return a.serve(ctx, m, body, date)
}

func (a *Agent) prepare() error {
	for _, d := range []string{a.S.StateDir, a.priv(), filepath.Dir(a.S.Log)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	_ = os.Chmod(a.S.StateDir, 0o755)
	// The token, the manifest (it may hold the password) and HTTP leftovers: root only.
	if err := os.Chmod(a.priv(), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(a.S.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		f = nil // the log file is a copy of stdout: go on without it
	}
	a.logFile = f
	return nil
}

// loadSettings waits until the portal URL and token are known: the environment, the env file, or
// the NoCloud disk (read again every poll: a golden image's disk has none, a restored VM's has).
func (a *Agent) loadSettings(ctx context.Context) bool {
	base := a.S
	said := false
	for {
		s := base
		if s.Portal == "" || s.Token == "" {
			a.readNoCloud()
		}
		envFile, err := os.ReadFile(s.Config)
		if err != nil {
			envFile = nil
		}
		if s.Complete(envFile) {
			a.S = s
			return true
		}
		if !said {
			a.log("no portal URL and token yet (environment, %s or a NoCloud disk); waiting", s.Config)
			said = true
		}
		a.sleep(ctx, s.PollEvery)
		if ctx.Err() != nil {
			return false
		}
	}
}

func pollText(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

// waitForManifest polls until the VM is claimed: the manifest, its bytes and the response's Date.
func (a *Agent) waitForManifest(ctx context.Context) (*manifest.Manifest, []byte, string, bool) {
	said := ""
	for polls := 1; ; polls++ {
		start := time.Now()
		r := a.client.Manifest(ctx, portal.LongPoll)
		pause := a.S.PollEvery
		var now string
		switch {
		case r.Status == 200:
			m, err := manifest.Parse(r.Body)
			if err == nil {
				return m, r.Body, r.Date, true
			}
			now = "the manifest is not JSON: " + err.Error()
		case r.Status == 204:
			now = fmt.Sprintf("unclaimed: waiting for a session (polling every %s s)", pollText(a.S.PollEvery))
			// A portal that held the answer (a long poll) has waited already.
			pause -= time.Since(start)
		case r.Status == 401 || r.Status == 403:
			now = fmt.Sprintf("the portal refused this VM's token (HTTP %d)", r.Status)
		case r.Status == 0:
			now = fmt.Sprintf("the portal %s does not answer: %v", a.S.Portal, r.Err)
		default:
			now = fmt.Sprintf("the portal answered HTTP %d", r.Status)
		}
		if r.RetryAfter > pause {
			pause = r.RetryAfter // 429 (the portal's rate limit) or 503
		}
		// Each new state once, and every 600 polls again.
		if now != said || polls%600 == 0 {
			a.log("%s", now)
			said = now
		}
		if a.S.MaxPolls > 0 && polls >= a.S.MaxPolls {
			a.log("gave up after %d polls (CODEBROWSE_MAX_POLLS)", polls)
			return nil, nil, "", false
		}
		a.sleep(ctx, pause)
		if ctx.Err() != nil {
			return nil, nil, "", false
		}
	}
}

// serve does what a claim asks: the setup steps, the packages, done, and a test run.
func (a *Agent) serve(ctx context.Context, m *manifest.Manifest, body []byte, date string) int {
	a.m = m
	a.date = date
	a.claimed = time.Now()
	session := m.Session()
	// Per session object (its uid): a VM restored from an archive may serve a new session of the same name.
	uid := m.String("uid")
	name := session
	if uid != "" {
		name += "-" + uid
	}
	a.sd = filepath.Join(a.S.StateDir, "sessions", safeDirName(name))
	if err := os.MkdirAll(a.sd, 0o700); err != nil {
		a.log("cannot make the session's state dir %s: %v", a.sd, err)
		return 1
	}
	_ = os.Chmod(a.sd, 0o700)
	_ = writeIfChanged(a.session("manifest.json"), body, 0o600)
	a.log("claimed by session %s", session)

	setupOK := a.setup(ctx)
	pkgs := m.Packages()
	if a.user != nil {
		if script, ok := m.Raw("installScript"); ok && strings.TrimRight(script, "\n") != "" {
			if err := writeIfChanged(a.session(installScriptFile), []byte(script), 0o600); err != nil {
				a.log("cannot save the installScript: %v", err)
			}
			a.runInstallScript(ctx, pkgs)
		}
	}
	ok, undelivered := 0, 0
	var failed []string
	for _, p := range pkgs {
		result := a.session("pkg-" + p.Index + ".result")
		reported := a.session("pkg-" + p.Index + ".reported")
		switch {
		case exists(result):
			if !exists(reported) {
				a.log("package %s: %s", p.Index, firstLine(result))
			}
		case a.user == nil:
			pr := a.newPkgRun(p, a.session("pkg-"+p.Index+".log"))
			pr.note("not installed: the session user could not be set up")
			a.saveResult(pr)
		default:
			a.doPackage(ctx, p)
		}
		if !exists(result) {
			a.log("package %s: the install step ended without a result; the agent stops here", p.Index)
			return 1
		}
		if !exists(reported) && !a.reportPackage(ctx, p.Index) {
			undelivered++
		}
		if strings.HasPrefix(firstLine(result), "true") {
			ok++
		} else {
			failed = append(failed, p.Index)
		}
	}

	if exists(a.session("done.reported")) {
		a.log("done was reported before")
	} else {
		all := setupOK && len(failed) == 0
		var message string
		if all {
			message = fmt.Sprintf("all is well: %d of %d packages installed", ok, len(pkgs))
		} else {
			message = fmt.Sprintf("%d of %d packages installed", ok, len(pkgs))
			if len(failed) > 0 {
				message += "; failed: " + strings.Join(failed, ", ")
			}
			if !setupOK {
				message += "; a setup step failed"
			}
		}
		a.waitAnnounced()
		message += ". " + strings.Join(a.steps, "; ")
		message += fmt.Sprintf("; %d ms from the claim to done", time.Since(a.claimed).Milliseconds())
		a.log("%s", message)
		done := report.Done(all, message)
		_ = os.WriteFile(a.session("done.json"), done, 0o600)
		if undelivered == 0 && a.client.Post(ctx, "/agent/v1/done", done) == nil {
			_ = touch(a.session("done.reported"))
			a.log("reported done (installed: %t)", all)
		} else {
			a.log("the done report did not reach the portal; exiting with failure so the service restarts")
			return 1
		}
	}
	if a.runMode {
		done, _ := os.ReadFile(a.session("done.json"))
		if bytes.HasPrefix(done, []byte(`{"installed":true`)) {
			if !a.runTest(ctx) {
				return 1
			}
		} else {
			a.log("the test script is not run: the install failed")
		}
	}
	return 0
}

// portalClient is the agent's client of the portal at base.
func portalClient(base string, a *Agent) *portal.Client {
	c := portal.New(base, a.S.Token, a.log)
	if a.Sleep != nil {
		c.Sleep = a.Sleep
	}
	return c
}

// notifyReady tells systemd the service is ready (sd_notify READY=1 to $NOTIFY_SOCKET, as a
// Type=notify unit expects); nothing without a NOTIFY_SOCKET (a chroot, a test, Windows).
func notifyReady() {
	socket := os.Getenv("NOTIFY_SOCKET")
	if socket == "" {
		return
	}
	if strings.HasPrefix(socket, "@") {
		socket = "\x00" + socket[1:] // an abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("READY=1"))
}
