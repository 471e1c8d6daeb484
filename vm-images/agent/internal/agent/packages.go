package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"codebrowse.io/agent/internal/filename"
	"codebrowse.io/agent/internal/manifest"
	"codebrowse.io/agent/internal/report"
)

// pkgRun is one package on its way: its output log (the report's message is its end) and the
// outcome the install rules decide.
type pkgRun struct {
	p         manifest.Package
	logPath   string
	url       string
	installed bool
	exit      *int   // the status of the step that decided; nil when no command did
	summary   string // one line for the log and the note
	step      string // the build step that ran last ("" when none)
	env       []string
}

func (a *Agent) newPkgRun(p manifest.Package, logPath string) *pkgRun {
	_ = os.WriteFile(logPath, nil, 0o600)
	return &pkgRun{p: p, logPath: logPath, url: p.URL}
}

// note appends a line of the agent's own to the package's output (it becomes part of the report).
func (pr *pkgRun) note(format string, args ...any) {
	f, err := os.OpenFile(pr.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, format+"\n", args...)
}

func (pr *pkgRun) setExit(status int) { pr.exit = &status }

// packageName is the file name a package is installed by (its suffix picks the rule): the
// manifest's filename made safe again, else what the portal makes of the URL.
func packageName(p manifest.Package) string {
	if p.Filename != "" {
		return filename.FromName(p.Filename, p.Index)
	}
	return filename.FromURL(p.URL, p.Index)
}

// runLogged runs a command with the package's output log and the install timeout; its status.
// as: nil for root; label: what the log says ran ("" for the command line).
func (a *Agent) runLogged(ctx context.Context, pr *pkgRun, as *Identity, dir, label string, name string, args ...string) int {
	if label == "" {
		label = strings.Join(append([]string{name}, args...), " ")
	}
	if as != nil {
		pr.note("+ (as %s) %s", as.Name, label)
	} else {
		pr.note("+ %s", label)
	}
	out, err := os.OpenFile(pr.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return 1
	}
	status, err := a.Host.Run(ctx, Command{Name: name, Args: args, Dir: dir, Env: pr.env, Output: out, As: as, Timeout: a.S.InstallTimeout})
	out.Close()
	if err != nil {
		pr.note("%s: %v", name, err)
		return 127
	}
	if status == timedOut {
		pr.note("(stopped after %s s: CODEBROWSE_INSTALL_TIMEOUT)", pollText(a.S.InstallTimeout))
	}
	return status
}

// saveResult saves the outcome of a package (a crash after this does not install it again).
func (a *Agent) saveResult(pr *pkgRun) {
	_ = os.WriteFile(a.session("pkg-"+pr.p.Index+".message"), tail(pr.logPath, messageBytes), 0o600)
	exit := "-"
	if pr.exit != nil {
		exit = strconv.Itoa(*pr.exit)
	}
	_ = writeAtomic(a.session("pkg-"+pr.p.Index+".result"), []byte(fmt.Sprintf("%t %s\n", pr.installed, exit)), 0o600)
}

// reportPackage sends a package's saved outcome; false when the portal did not take it.
func (a *Agent) reportPackage(ctx context.Context, index string) bool {
	fields := strings.Fields(firstLine(a.session("pkg-" + index + ".result")))
	if len(fields) < 2 {
		return false
	}
	var exit *int
	if n, err := strconv.Atoi(fields[1]); err == nil {
		exit = &n
	}
	message, _ := os.ReadFile(a.session("pkg-" + index + ".message"))
	if a.client.Post(ctx, "/agent/v1/report", report.Package(index, fields[0] == "true", exit, message)) == nil {
		_ = touch(a.session("pkg-" + index + ".reported"))
		return true
	}
	a.log("package %s: the report did not reach the portal; a restart of the agent sends it again", index)
	return false
}

// keepWithNote leaves the package file in dir (the user's home) with a note saying why it is not
// installed. file "" (or one that is gone): the note alone.
func (a *Agent) keepWithNote(pr *pkgRun, file, name, why, dir string) {
	dest := file
	if file == "" || filepath.Dir(file) != dir {
		dest = freshPath(dir, name)
		if file != "" {
			if data, err := os.ReadFile(file); err == nil && os.WriteFile(dest, data, 0o644) == nil {
				_ = a.Host.Chown(dest, a.user.UID, a.user.GID)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "codebrowse could not install %s\n\n", name)
	fmt.Fprintf(&b, "from:   %s\n", pr.url)
	fmt.Fprintf(&b, "why:    %s\n", why)
	if st, err := os.Stat(dest); err == nil && st.Mode().IsRegular() {
		fmt.Fprintf(&b, "file:   %s\n", dest)
	}
	b.WriteString("\nThe last lines of the install output:\n\n")
	b.Write(tail(pr.logPath, 4096))
	note := dest + ".codebrowse-note.txt"
	if err := os.WriteFile(note, []byte(b.String()), 0o644); err == nil {
		_ = a.Host.Chown(note, a.user.UID, a.user.GID)
	}
}

// fetch downloads a package into dir and checks its digest: the file, or "" with pr.summary
// saying why not.
func (a *Agent) fetch(ctx context.Context, pr *pkgRun, dir string) string {
	name := packageName(pr.p)
	file := freshPath(dir, name)
	a.log("package %s: %s from %s", pr.p.Index, name, pr.url)
	from, auth := "", false
	switch d := pr.p.Download; {
	case strings.HasPrefix(d, "/"):
		from, auth = a.S.Portal+d, true
	case strings.HasPrefix(d, "http://") || strings.HasPrefix(d, "https://"):
		from = d
	default:
		for _, scheme := range []string{"http://", "https://", "ftp://"} {
			if strings.HasPrefix(pr.url, scheme) {
				from = pr.url
			}
		}
		if from != "" {
			pr.note("the manifest has no download path: fetching %s directly", pr.url)
		}
	}
	if from == "" {
		pr.summary = "the manifest gives no way to download it (no download path, no http(s)/ftp URL)"
	} else {
		d := a.client.Download(ctx, from, auth, file)
		switch {
		case d.Status != 0 && d.Status != 200:
			pr.summary = fmt.Sprintf("download failed: HTTP %d", d.Status)
		case d.Err != nil:
			pr.summary = fmt.Sprintf("download failed: %v", d.Err)
		default:
			pr.note("downloaded %d bytes", d.Bytes)
			digest := pr.p.Digest
			switch {
			case strings.HasPrefix(digest, "sha256:"):
				want := strings.ToLower(strings.TrimPrefix(digest, "sha256:"))
				if d.SHA256 != want {
					pr.note("sha256 mismatch: the manifest says %s, the download is %s", want, d.SHA256)
					pr.summary = fmt.Sprintf("checksum mismatch: sha256 %s, expected %s", d.SHA256, want)
				}
			case digest == "":
				pr.summary = "the manifest has no sha256 digest for it: not installed unverified"
			default:
				pr.summary = fmt.Sprintf("unsupported digest %q (only sha256:<hex>)", digest)
			}
		}
	}
	if pr.summary != "" {
		_ = os.Remove(file)
		pr.note("not installed: %s", pr.summary)
		return ""
	}
	pr.note("sha256 verified")
	return file
}

// doPackage downloads, verifies and installs one package by the suffix rules, leaves what failed
// with a note, and saves the outcome.
func (a *Agent) doPackage(ctx context.Context, p manifest.Package) {
	start := time.Now()
	workRoot := a.state("work")
	work := filepath.Join(workRoot, p.Index)
	_ = os.RemoveAll(work)
	_ = os.MkdirAll(work, 0o755)
	_ = os.Chmod(workRoot, 0o755)
	_ = os.Chmod(work, 0o755)
	defer os.RemoveAll(work)
	pr := a.newPkgRun(p, filepath.Join(work, "output.log"))
	file := a.fetch(ctx, pr, work)
	if file != "" {
		pr.env = []string{
			"CODEBROWSE_PACKAGE_FILE=" + file,
			"CODEBROWSE_PACKAGE_URL=" + pr.url,
			"CODEBROWSE_USER=" + a.user.Name,
			"CODEBROWSE_HOME=" + a.user.Home,
		}
		a.install(ctx, pr, file, filepath.Base(file), work)
	}
	if !pr.installed {
		a.keepWithNote(pr, file, packageName(p), pr.summary, a.keepDir())
	}
	exit := "no exit status"
	if pr.exit != nil {
		exit = strconv.Itoa(*pr.exit)
	}
	a.log("package %s: installed=%t (%s) %s (%d ms)", p.Index, pr.installed, exit, pr.summary, time.Since(start).Milliseconds())
	a.saveResult(pr)
}

// runInstallScript: the session's installScript replaces the suffix rules (the BrowseSession API
// says so): every package is downloaded and verified into ~/downloads, then the script runs once,
// as root, there, with the package files as arguments; each package's report carries the
// script's outcome. A package that failed its download or digest is not passed and fails alone.
func (a *Agent) runInstallScript(ctx context.Context, pkgs []manifest.Package) {
	dl := firstLine(a.session("downloads.dir"))
	if dl == "" {
		dl = a.freshDownloads()
		_ = os.WriteFile(a.session("downloads.dir"), []byte(dl+"\n"), 0o600)
	}
	_ = os.MkdirAll(dl, 0o755)
	_ = a.Host.Chown(dl, a.user.UID, a.user.GID)
	for _, p := range pkgs {
		if exists(a.session("pkg-"+p.Index+".result")) || exists(a.session("pkg-"+p.Index+".fetched")) {
			continue
		}
		pr := a.newPkgRun(p, a.session("pkg-"+p.Index+".log"))
		if file := a.fetch(ctx, pr, dl); file != "" {
			_ = a.Host.Chown(file, a.user.UID, a.user.GID)
			_ = os.WriteFile(a.session("pkg-"+p.Index+".fetched"), []byte(file+"\n"), 0o600)
		} else {
			a.keepWithNote(pr, "", packageName(p), pr.summary, dl)
			a.saveResult(pr)
		}
	}
	scriptLog := a.session("script.log")
	if !exists(a.session("script.result")) {
		var args []string
		for _, p := range pkgs {
			if f := firstLine(a.session("pkg-" + p.Index + ".fetched")); f != "" {
				args = append(args, filepath.Base(f))
			}
		}
		pr := a.newPkgRun(manifest.Package{}, scriptLog)
		a.log("running the session's installScript in %s with: %s", dl, strings.Join(args, " "))
		pr.env = []string{"CODEBROWSE_USER=" + a.user.Name, "CODEBROWSE_HOME=" + a.user.Home, "CODEBROWSE_DOWNLOADS=" + dl}
		status := a.runScript(ctx, pr, dl, args)
		// What the script unpacked as root in the user's home is the user's (links not followed).
		_ = a.Host.ChownTree(dl, a.user.UID, a.user.GID)
		a.log("installScript exited %d", status)
		_ = os.WriteFile(a.session("script.result"), []byte(strconv.Itoa(status)+"\n"), 0o600)
	}
	status, _ := strconv.Atoi(firstLine(a.session("script.result")))
	scriptOutput, _ := os.ReadFile(scriptLog)
	for _, p := range pkgs {
		if exists(a.session("pkg-" + p.Index + ".result")) {
			continue
		}
		pr := &pkgRun{p: p, logPath: a.session("pkg-" + p.Index + ".log"), url: p.URL}
		file := firstLine(a.session("pkg-" + p.Index + ".fetched"))
		pr.note("installScript exited %d", status)
		if f, err := os.OpenFile(pr.logPath, os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
			_, _ = f.Write(scriptOutput)
			f.Close()
		}
		pr.setExit(status)
		if status == 0 {
			pr.installed = true
		} else {
			a.keepWithNote(pr, file, filepath.Base(file), fmt.Sprintf("the installScript exited %d", status), dl)
		}
		a.saveResult(pr)
	}
}
