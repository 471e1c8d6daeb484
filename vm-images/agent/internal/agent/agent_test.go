//go:build linux

package agent

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"codebrowse.io/agent/internal/settings"
)

// fakeHost plays the machine for the agent's end-to-end test: the commands that change the
// system (useradd, chpasswd, ip, systemctl ...) are recorded and played on the temporary root;
// sh and make run for real (as the test's user), in the package directories.
type fakeHost struct {
	root     string
	mu       sync.Mutex
	commands []string
	hostname string
	nextUID  int
}

func (h *fakeHost) record(c Command) {
	h.mu.Lock()
	defer h.mu.Unlock()
	line := strings.Join(append([]string{c.Name}, c.Args...), " ")
	if c.As != nil {
		line = "(as " + c.As.Name + ") " + line
	}
	h.commands = append(h.commands, line)
}

func (h *fakeHost) ran(prefix string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.commands {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return false
}

func appendTo(p, line string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(line)
	return err
}

func (h *fakeHost) Run(ctx context.Context, c Command) (int, error) {
	h.record(c)
	switch c.Name {
	case "useradd":
		name := c.Args[len(c.Args)-1]
		h.mu.Lock()
		uid := h.nextUID
		h.nextUID++
		h.mu.Unlock()
		_ = appendTo(filepath.Join(h.root, "etc/passwd"), fmt.Sprintf("%s:x:%d:%d:codebrowse session user:/home/%s:/bin/sh\n", name, uid, uid, name))
		_ = appendTo(filepath.Join(h.root, "etc/group"), fmt.Sprintf("%s:x:%d:\n", name, uid))
		_ = appendTo(filepath.Join(h.root, "etc/shadow"), name+":!:19000:0:99999:7:::\n")
		return 0, os.MkdirAll(filepath.Join(h.root, "home", name), 0o755)
	case "sh", "make", "./configure":
		cmd := exec.CommandContext(ctx, c.Name, c.Args...)
		cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = c.Dir, env(os.Environ(), c.Env), c.Output, c.Output
		if c.Stdin != nil {
			cmd.Stdin = bytes.NewReader(c.Stdin)
		}
		err := cmd.Run()
		if cmd.ProcessState == nil {
			return -1, err
		}
		return cmd.ProcessState.ExitCode(), nil
	case "ip":
		if len(c.Args) > 2 && c.Args[1] == "addr" && c.Args[2] == "add" || len(c.Args) > 1 && c.Args[0] == "link" {
			return 0, nil
		}
		return 0, nil
	}
	return 0, nil // chpasswd, usermod, systemctl, networkctl, arping, ping: done
}

func (h *fakeHost) Has(p string) bool {
	return p == "ip" || p == "arping" || p == "systemctl"
}
func (h *fakeHost) Hostname() string                   { return h.hostname }
func (h *fakeHost) SetHostname(name string) error      { h.hostname = name; return nil }
func (h *fakeHost) SetClock(time.Time) error           { return nil }
func (h *fakeHost) Chown(string, int, int) error       { return nil }
func (h *fakeHost) ChownTree(string, int, int) error   { return nil }
func (h *fakeHost) Addresses(string) ([]net.IP, error) { return nil, nil }
func (h *fakeHost) Mount(string, string) error         { return os.ErrNotExist }
func (h *fakeHost) Unmount(string) error               { return nil }

// A Debian-like tree with what the agent reads.
func makeRoot(t *testing.T) string {
	root := t.TempDir()
	files := map[string]string{
		"etc/passwd":                     "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
		"etc/group":                      "root:x:0:\ndaemon:x:1:\nsudo:x:27:\n",
		"etc/shadow":                     "root:*:19000:0:99999:7:::\n",
		"etc/hosts":                      "127.0.0.1\tlocalhost\n127.0.1.1\tgolden\n",
		"etc/hostname":                   "golden\n",
		"etc/ssh/sshd_config":            "Include /etc/ssh/sshd_config.d/*.conf\n#HostKey /etc/ssh/ssh_host_rsa_key\n",
		"etc/ssh/ssh_host_rsa_key":       "an image's RSA key",
		"etc/ssh/ssh_host_rsa_key.pub":   "ssh-rsa AAAA",
		"lib/systemd/system/ssh.service": "[Service]\n",
		"sys/class/net/eth0/address":     "02:00:00:00:00:01\n",
		"sys/class/net/lan0/address":     "02:00:00:00:00:aa\n",
		"sys/class/net/lo/address":       "00:00:00:00:00:00\n",
	}
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"etc/sudoers.d", "etc/ssh/sshd_config.d", "home", "root", "usr/sbin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/sbin/sshd"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

type tarEntry struct {
	name, body, link string
	kind             byte
	mode             int64
}

func tarGz(t *testing.T, entries []tarEntry) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		kind := e.kind
		if kind == 0 {
			kind = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		size := int64(len(e.body))
		if kind != tar.TypeReg {
			size = 0
		}
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: kind, Linkname: e.link, Mode: mode, Size: size}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// A zip as Python's zipfile.writestr makes it: modes without file-type bits.
func pythonZip(t *testing.T, files map[string]string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range []string{"README", "install.sh"} {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate, CreatorVersion: 3<<8 | 20, ExternalAttrs: 0o600 << 16}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(files[name]))
	}
	zw.Close()
	return buf.Bytes()
}

type pkg struct {
	url    string
	body   []byte
	digest *string
}

// portalStub is the portal's agent API as e2e/guest/agent-api-stub.ts plays it, plus its rate
// limit: one 429 with Retry-After while the VM is unclaimed.
type portalStub struct {
	t               *testing.T
	token           string
	mu              sync.Mutex
	polls           int
	claimAt         int
	manifest        map[string]any
	pkgs            []pkg
	reports         []map[string]any
	done            []map[string]any
	results         []map[string]any
	downloads       []int
	queries         []string
	keysAtFirstPoll bool
	root            string
}

func (p *portalStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+p.token {
		w.WriteHeader(401)
		return
	}
	switch {
	case r.Method == "GET" && r.URL.Path == "/agent/v1/manifest":
		p.polls++
		p.queries = append(p.queries, r.URL.RawQuery)
		if p.polls == 1 {
			_, err := os.Stat(filepath.Join(p.root, "etc/ssh/ssh_host_ed25519_key"))
			p.keysAtFirstPoll = err == nil
		}
		switch {
		case p.polls == 2:
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(429)
		case p.polls < p.claimAt:
			w.WriteHeader(204)
		default:
			json.NewEncoder(w).Encode(p.manifest)
		}
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/agent/v1/packages/"):
		var i int
		fmt.Sscanf(strings.TrimPrefix(r.URL.Path, "/agent/v1/packages/"), "%d", &i)
		p.downloads = append(p.downloads, i)
		w.Write(p.pkgs[i].body)
	case r.Method == "POST" && (r.URL.Path == "/agent/v1/report" || r.URL.Path == "/agent/v1/done" || r.URL.Path == "/agent/v1/result"):
		data, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(data, &body); err != nil {
			p.t.Errorf("%s: not JSON: %q", r.URL.Path, data)
			w.WriteHeader(400)
			return
		}
		if r.URL.Path == "/agent/v1/done" {
			p.done = append(p.done, body)
		} else if r.URL.Path == "/agent/v1/result" {
			p.results = append(p.results, body)
		} else {
			p.reports = append(p.reports, body)
		}
		w.WriteHeader(204)
	default:
		w.WriteHeader(404)
	}
}

func (p *portalStub) claim(session, user, password string, pkgs []pkg) {
	list := []any{}
	for i, pk := range pkgs {
		sum := sha256.Sum256(pk.body)
		digest := "sha256:" + hex.EncodeToString(sum[:])
		if pk.digest != nil {
			digest = *pk.digest
		}
		entry := map[string]any{"index": i, "url": pk.url, "download": fmt.Sprintf("/agent/v1/packages/%d", i), "future": true}
		if digest != "" {
			entry["digest"] = digest
		}
		list = append(list, entry)
	}
	p.pkgs = pkgs
	p.manifest = map[string]any{
		"session": session, "uid": "0b5e", "hostname": user + ".sessions.example.org", "ip": "10.0.0.5",
		"network": map[string]any{"mac": "02:00:00:00:00:AA", "address": "10.0.0.5", "prefixLength": 24, "gateway": "10.0.0.1", "broadcast": "10.0.0.255"},
		"user":    user, "password": password, "expiresAt": "2030-01-01T00:00:00Z", "packages": list,
	}
}

type run struct {
	code   int
	stdout string
	slept  []time.Duration
}

func runAgent(t *testing.T, root string, host *fakeHost, portal string, token string) run {
	env := map[string]string{
		"CODEBROWSE_PORTAL_URL": portal, "CODEBROWSE_AGENT_TOKEN": token, "CODEBROWSE_SET_CLOCK": "0",
		"CODEBROWSE_MAX_POLLS": "20",
		"CODEBROWSE_STATE_DIR": filepath.Join(root, "var/lib/codebrowse-agent"),
		"CODEBROWSE_LOG":       filepath.Join(root, "var/log/codebrowse-agent.log"),
		"CODEBROWSE_CONFIG":    filepath.Join(root, "etc/codebrowse/agent.env"),
	}
	var out bytes.Buffer
	var mu sync.Mutex
	var slept []time.Duration
	a := &Agent{
		S:      settings.FromEnv(func(k string) string { return env[k] }, settings.Defaults{}),
		Root:   root,
		Host:   host,
		Stdout: &out,
		Sleep: func(ctx context.Context, d time.Duration) {
			mu.Lock()
			slept = append(slept, d)
			mu.Unlock()
			time.Sleep(time.Millisecond)
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := a.Run(ctx)
	return run{code: code, stdout: out.String(), slept: slept}
}

// snapshot: every path under root with its type, mode and content (as rootfs.ts's snapshot).
func snapshot(t *testing.T, root string) map[string]string {
	out := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, _ := d.Info()
		key := strings.TrimPrefix(p, root)
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[key] = "link " + target
		case info.IsDir():
			out[key] = "dir " + info.Mode().String()
		default:
			data, _ := os.ReadFile(p)
			sum := sha256.Sum256(data)
			out[key] = info.Mode().String() + " " + hex.EncodeToString(sum[:])
		}
		return nil
	})
	return out
}

func TestTheAgentServesAClaimEndToEnd(t *testing.T) {
	root := makeRoot(t)
	host := &fakeHost{root: root, hostname: "golden", nextUID: 1000}
	noDigest := ""
	stub := &portalStub{t: t, token: "vm-token", claimAt: 4, root: root}
	stub.claim("team-a/alice-1", "alice", `c0rrect "horse" \ battery $staple`, []pkg{
		{url: "https://example.org/releases/custom-2.0.tar.gz", body: tarGz(t, []tarEntry{
			{name: "custom-2.0/", kind: tar.TypeDir, mode: 0o755},
			{name: "custom-2.0/codebrowse-install.sh", body: "echo \"ran in $(basename \"$(pwd)\") for $CODEBROWSE_USER\" > ran.txt\necho custom installed\n"},
			{name: "custom-2.0/configure", mode: 0o755, body: "#!/bin/sh\necho configure ran; exit 1\n"},
		})},
		{url: "https://example.org/notes%20and%20more.zip", body: pythonZip(t, map[string]string{
			"README": "notes\n", "install.sh": "cp README README.installed\necho notes installed\n",
		})},
		{url: "https://example.org/evil.tar.gz", body: tarGz(t, []tarEntry{{name: "ok.txt"}, {name: "../evil-e2e"}})},
		{url: "https://example.org/unverified.tar.gz", body: tarGz(t, []tarEntry{{name: "x"}}), digest: &noDigest},
		{url: "https://example.org/mystery.bin", body: []byte("\x7fELF not really")},
		{url: "https://example.org/small.tar.gz", body: tarGz(t, []tarEntry{{name: "a", body: "x"}, {name: "b", body: "y"}, {name: "c", kind: tar.TypeSymlink, link: "a"}})},
	})
	srv := httptest.NewServer(stub)
	defer srv.Close()

	first := runAgent(t, root, host, srv.URL+"/", stub.token)
	if first.code != 0 {
		t.Fatalf("exit %d:\n%s", first.code, first.stdout)
	}

	t.Log(first.stdout)
	// The warm VM made its host keys before it first asked for a claim, polled with ?wait=30, and
	// honoured the portal's Retry-After.
	if !stub.keysAtFirstPoll {
		t.Error("no host keys at the first poll")
	}
	if stub.queries[0] != "wait=30" {
		t.Errorf("manifest query %q", stub.queries[0])
	}
	if !containsDuration(first.slept, 2*time.Second) {
		t.Errorf("Retry-After not honoured: slept %v", first.slept)
	}

	var got [][]any
	for _, r := range stub.reports {
		got = append(got, []any{r["package"], r["installed"], r["exitCode"]})
	}
	want := [][]any{{0.0, true, 0.0}, {1.0, true, 0.0}, {2.0, false, nil}, {3.0, false, nil}, {4.0, false, nil}, {5.0, true, 0.0}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("reports %v\n%s", got, first.stdout)
	}
	if !reflect.DeepEqual(stub.downloads, []int{0, 1, 2, 3, 4, 5}) {
		t.Errorf("downloads %v", stub.downloads)
	}
	msg := func(i int) string { s, _ := stub.reports[i]["message"].(string); return s }
	if !strings.Contains(msg(0), "custom installed") || strings.Contains(msg(0), "configure ran") {
		t.Errorf("report 0: %s", msg(0))
	}
	if !strings.Contains(msg(2), "refused by the archive rule parent-dir:") {
		t.Errorf("report 2: %s", msg(2))
	}
	if !strings.Contains(msg(3), "not installed unverified") {
		t.Errorf("report 3: %s", msg(3))
	}
	if len(stub.done) != 1 || stub.done[0]["installed"] != false {
		t.Fatalf("done %v", stub.done)
	}
	done := stub.done[0]["message"].(string)
	for _, part := range []string{"3 of 6 packages installed; failed: 2, 3, 4. ", "hostname: alice.sessions.example.org (kernel: alice)",
		"address: 10.0.0.5 on lan0 (02:00:00:00:00:aa) as /24; replies leave by 10.0.0.1; announced beside the next steps", "announce: gratuitous ARP sent; broadcast ping to 10.0.0.255",
		"user: alice created, password set", "sudo: /etc/sudoers.d/codebrowse-alice", "ssh: ssh enabled (systemd not running here); fresh host keys", "ms from the claim to done"} {
		if !strings.Contains(done, part) {
			t.Errorf("done message lacks %q: %s", part, done)
		}
	}
	if !regexp.MustCompile(`hostname: [^;]* \(\d+ ms\); address: `).MatchString(done) {
		t.Errorf("steps without their time: %s", done)
	}
	if !strings.Contains(first.stdout, "codebrowse-agent: claimed by session team-a/alice-1\n") {
		t.Errorf("stdout: %s", first.stdout)
	}
	if log, _ := os.ReadFile(filepath.Join(root, "var/log/codebrowse-agent.log")); string(log) != first.stdout {
		t.Error("the log file is not what stdout said")
	}

	read := func(p string) string { data, _ := os.ReadFile(filepath.Join(root, p)); return string(data) }
	for p, want := range map[string]string{
		"etc/hostname":                                   "alice\n",
		"etc/hosts":                                      "127.0.0.1\tlocalhost\n10.0.0.5\talice.sessions.example.org alice # codebrowse\n",
		"etc/sudoers.d/codebrowse-alice":                 "# the codebrowse session user: it is their VM\nalice ALL=(ALL:ALL) NOPASSWD: ALL\n",
		"home/alice/custom-2.0/custom-2.0/ran.txt":       "ran in custom-2.0 for alice\n",
		"home/alice/notes_and_more/README.installed":     "notes\n",
		"home/alice/mystery.bin":                         "\x7fELF not really",
		"etc/ssh/sshd_config.d/codebrowse-hostkeys.conf": "# codebrowse: this VM's host keys, made by its agent (no RSA key)\nHostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n",
		"run/systemd/network/10-codebrowse-lan.network":  "[Match]\nMACAddress=02:00:00:00:00:aa\n\n[Link]\nUnmanaged=yes\n",
	} {
		if got := read(p); got != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
	if !strings.Contains(read("home/alice/mystery.bin.codebrowse-note.txt"), "why:    no install rule for this file type") {
		t.Error("no note for mystery.bin")
	}
	if !strings.Contains(read("home/alice/evil.tar.gz.codebrowse-note.txt"), "refused by the archive rule parent-dir") {
		t.Error("no note for evil.tar.gz")
	}
	if _, err := os.Lstat(filepath.Join(root, "home/alice/evil")); err == nil {
		t.Error("the refused archive was unpacked")
	}
	if target, _ := os.Readlink(filepath.Join(root, "home/alice/small/c")); target != "a" {
		t.Error("small.tar.gz not unpacked")
	}
	if _, err := os.Stat(filepath.Join(root, "etc/ssh/ssh_host_rsa_key")); err == nil {
		t.Error("the image's RSA key is still there")
	}
	for _, k := range []string{"etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ecdsa_key"} {
		if st, err := os.Stat(filepath.Join(root, k)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v", k, err)
		}
	}
	if st, _ := os.Stat(filepath.Join(root, "var/lib/codebrowse-agent/private")); st.Mode().Perm() != 0o700 {
		t.Error("private dir not 0700")
	}
	for _, c := range []string{"useradd -m -s /bin/sh -c codebrowse session user alice", "chpasswd", "ip -4 addr add 10.0.0.5/24 dev lan0",
		"arping -U -c 2 -I lan0 10.0.0.5", "systemctl enable ssh.service", "sh ./codebrowse-install.sh", "sh ./install.sh"} {
		if !host.ran(c) {
			t.Errorf("did not run %q: %v", c, host.commands)
		}
	}

	// Again: nothing installed, reported or written twice; only its log and private scratch change.
	before := snapshot(t, root)
	stub.reports, stub.done, stub.downloads = nil, nil, nil
	second := runAgent(t, root, host, srv.URL, stub.token)
	if second.code != 0 || len(stub.reports) != 0 || len(stub.done) != 0 || len(stub.downloads) != 0 {
		t.Fatalf("second run: exit %d, %d reports, %d done, %d downloads\n%s", second.code, len(stub.reports), len(stub.done), len(stub.downloads), second.stdout)
	}
	after := snapshot(t, root)
	for p := range merge(before, after) {
		if before[p] != after[p] && p != "/var/log/codebrowse-agent.log" && !strings.HasPrefix(p, "/var/lib/codebrowse-agent/private/") {
			t.Errorf("the second run changed %s: %q -> %q", p, before[p], after[p])
		}
	}
	if !strings.Contains(second.stdout, "done was reported before") {
		t.Errorf("second run: %s", second.stdout)
	}
}

func TestASystemAccountIsRefusedAndAnUndeliveredReportFails(t *testing.T) {
	root := makeRoot(t)
	host := &fakeHost{root: root, hostname: "golden", nextUID: 1000}
	stub := &portalStub{t: t, token: "t", claimAt: 1, root: root}
	stub.claim("team-e/daemon", "daemon", "pw", []pkg{{url: "https://example.org/x.tgz", body: tarGz(t, []tarEntry{{name: "x"}})}})
	srv := httptest.NewServer(stub)
	defer srv.Close()
	r := runAgent(t, root, host, srv.URL, stub.token)
	if r.code != 0 || len(stub.reports) != 1 || stub.reports[0]["installed"] != false {
		t.Fatalf("exit %d %v\n%s", r.code, stub.reports, r.stdout)
	}
	if done := stub.done[0]["message"].(string); !strings.Contains(done, "user: refused: daemon is a system account") {
		t.Errorf("done: %s", done)
	}
	if host.ran("chpasswd") || host.ran("useradd") {
		t.Error("touched the system account")
	}
	if _, err := os.Stat(filepath.Join(root, "etc/sudoers.d/codebrowse-daemon")); err == nil {
		t.Error("sudo for a system account")
	}
}

func TestAPortalThatRefusesTheTokenIsWaitedOutUpToMaxPolls(t *testing.T) {
	root := makeRoot(t)
	host := &fakeHost{root: root, hostname: "golden", nextUID: 1000}
	stub := &portalStub{t: t, token: "right", root: root}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	r := runAgent(t, root, host, srv.URL, "wrong")
	if r.code != 3 || !strings.Contains(r.stdout, "the portal refused this VM's token (HTTP 401)") || !strings.Contains(r.stdout, "gave up after 20 polls (CODEBROWSE_MAX_POLLS)") {
		t.Fatalf("exit %d\n%s", r.code, r.stdout)
	}
	if strings.Count(r.stdout, "refused this VM's token") != 1 {
		t.Error("the same state said more than once")
	}
}

func containsDuration(ds []time.Duration, want time.Duration) bool {
	for _, d := range ds {
		if d == want {
			return true
		}
	}
	return false
}

func merge(a, b map[string]string) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func TestAnInstallScriptAndATestRun(t *testing.T) {
	root := makeRoot(t)
	host := &fakeHost{root: root, hostname: "golden", nextUID: 1000}
	bad := "sha256:" + strings.Repeat("1", 64)
	stub := &portalStub{t: t, token: "t", claimAt: 1, root: root}
	stub.claim("team-c/carol-1", "carol", "pw", []pkg{
		{url: "https://example.org/src-1.0.tar.gz", body: tarGz(t, []tarEntry{{name: "src-1.0/x", body: "x"}})},
		{url: "https://example.org/tool.bin", body: []byte("a tool")},
		{url: "https://example.org/bad_1.0_all.deb", body: []byte("not this"), digest: &bad},
	})
	stub.manifest["installScript"] = "printf '%s|%s\\n' \"$(basename \"$(pwd)\")\" \"$*\" > ../script.log\necho \"script saw $CODEBROWSE_USER\"\n"
	stub.manifest["mode"] = "Run"
	stub.manifest["run"] = map[string]any{"script": "echo \"run in $(basename \"$CODEBROWSE_RUN_DIR\")\"; exit 3", "timeoutSeconds": 60}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	r := runAgent(t, root, host, srv.URL, stub.token)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stdout)
	}
	var got [][]any
	for _, rep := range stub.reports {
		got = append(got, []any{rep["package"], rep["installed"], rep["exitCode"]})
	}
	if want := [][]any{{0.0, true, 0.0}, {1.0, true, 0.0}, {2.0, false, nil}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("reports %v\n%s", got, r.stdout)
	}
	if !strings.Contains(stub.reports[0]["message"].(string), "script saw carol") {
		t.Errorf("report 0: %v", stub.reports[0]["message"])
	}
	if data, _ := os.ReadFile(filepath.Join(root, "home/carol/script.log")); string(data) != "downloads|src-1.0.tar.gz tool.bin\n" {
		t.Errorf("the script saw %q", data)
	}
	if _, err := os.Stat(filepath.Join(root, "home/carol/downloads/bad_1.0_all.deb.codebrowse-note.txt")); err != nil {
		t.Error("no note for the mismatch")
	}
	if !strings.Contains(r.stdout, "ssh: not enabled: a test run needs no login") {
		t.Error("ssh enabled for a test run")
	}
	// The install failed (a digest mismatch): no test run.
	if len(stub.results) != 0 || !strings.Contains(r.stdout, "the test script is not run: the install failed") {
		t.Fatalf("results %v", stub.results)
	}

	// A test run whose install succeeds: the script's status and output go to the portal, once.
	root = makeRoot(t)
	host = &fakeHost{root: root, hostname: "golden", nextUID: 1000}
	stub = &portalStub{t: t, token: "t", claimAt: 1, root: root}
	stub.claim("team-r/pat", "pat", "", nil)
	stub.manifest["mode"] = "Run"
	stub.manifest["run"] = map[string]any{"script": "echo \"run in $(basename \"$CODEBROWSE_RUN_DIR\")\"; exit 3", "timeoutSeconds": 60}
	srv2 := httptest.NewServer(stub)
	defer srv2.Close()
	if r = runAgent(t, root, host, srv2.URL, stub.token); r.code != 0 || len(stub.results) != 1 {
		t.Fatalf("exit %d, results %v\n%s", r.code, stub.results, r.stdout)
	}
	res := stub.results[0]
	if res["exitCode"] != 3.0 || res["timedOut"] != false || res["output"] != "run in test-run\n" || res["outputBytes"] != 16.0 {
		t.Errorf("result %v", res)
	}
	if r = runAgent(t, root, host, srv2.URL, stub.token); r.code != 0 || len(stub.results) != 1 {
		t.Fatalf("again: exit %d, %d results", r.code, len(stub.results))
	}
}

func TestALongPollThatWasHeldIsNotFollowedByAPause(t *testing.T) {
	var mu sync.Mutex
	polls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		polls++
		n := polls
		mu.Unlock()
		switch n {
		case 1:
			w.WriteHeader(204) // a portal that ignores ?wait
		case 2:
			time.Sleep(300 * time.Millisecond) // one that holds the answer
			w.WriteHeader(204)
		default:
			w.Write([]byte(`{"session":"s"}`))
		}
	}))
	defer srv.Close()
	var slept []time.Duration
	a := &Agent{S: settings.Settings{Portal: srv.URL, PollEvery: 200 * time.Millisecond}, Stdout: io.Discard,
		Sleep: func(_ context.Context, d time.Duration) { slept = append(slept, d) }}
	a.client = portalClient(srv.URL, a)
	m, _, _, ok := a.waitForManifest(context.Background())
	if !ok || m.Session() != "s" || len(slept) != 2 {
		t.Fatalf("%v %v", ok, slept)
	}
	if slept[0] < 150*time.Millisecond || slept[1] > 0 {
		t.Fatalf("slept %v: a full pause after the quick 204, none after the held one", slept)
	}
}
