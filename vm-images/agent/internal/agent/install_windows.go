//go:build windows

package agent

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"

	"codebrowse.io/agent/internal/archive"
)

// timedOut is the status of a command stopped by the install timeout (as the .ps1's Invoke-Step).
const timedOut = -1

const (
	installScriptFile = "install-script.ps1"
	runScriptFile     = "run-script.ps1"
)

func powershell(script string, args ...string) (string, []string) {
	return "powershell.exe", append([]string{"-NoProfile", "-ExecutionPolicy", "Bypass", "-File", script}, args...)
}

func runScriptCommand(script string) (string, []string) { return powershell(script) }

// keepDir: what did not install is left on the user's Desktop with its note.
func (a *Agent) keepDir() string {
	dir := filepath.Join(a.path(a.user.Home), "Desktop")
	_ = os.MkdirAll(dir, 0o755)
	return dir
}

// freshDownloads: an installScript's downloads go to Downloads\codebrowse in the profile.
func (a *Agent) freshDownloads() string {
	parent := filepath.Join(a.path(a.user.Home), "Downloads")
	_ = os.MkdirAll(parent, 0o755)
	return freshPath(parent, "codebrowse")
}

func (a *Agent) runScript(ctx context.Context, pr *pkgRun, dir string, args []string) int {
	name, argv := powershell(a.session(installScriptFile), args...)
	return a.runLogged(ctx, pr, nil, dir, "(installScript, in "+dir+") "+strings.Join(args, " "), name, argv...)
}

// install by the Windows rules (codebrowse-agent.ps1): .msi (msiexec /i /qn /norestart; 0 and
// 3010 are success), .exe (a silent installer: NSIS /S, or the flags its builder's marks ask
// for), .zip (checked and unpacked with the Linux rules, then its install script), anything else
// left on the Desktop with a note.
func (a *Agent) install(ctx context.Context, pr *pkgRun, file, name, work string) {
	kind := archive.WindowsKindOf(name)
	pr.note("package %s: %s (%s)", pr.p.Index, name, kind)
	if len(pr.p.Install) > 0 && kind != archive.Zip {
		status := a.runInstallSteps(ctx, pr, filepath.Dir(file), work)
		pr.setExit(status)
		if status == 0 {
			pr.installed, pr.summary = true, "its install steps succeeded"
		} else {
			pr.summary = pr.step + " exited " + itoa(status)
		}
		return
	}
	switch kind {
	case archive.MSI:
		msiLog := pr.logPath + ".msi"
		status := a.runLogged(ctx, pr, nil, "", "", "msiexec.exe", "/i", file, "/qn", "/norestart", "/l*v", msiLog)
		if data, err := os.ReadFile(msiLog); err == nil {
			appendFile(pr.logPath, msiLogTail(data, 40))
			_ = os.Remove(msiLog)
		}
		pr.setExit(status)
		// 3010: installed, a restart is needed (a session VM is not restarted for it).
		pr.installed = status == 0 || status == 3010
		pr.summary = "msiexec exited " + itoa(status)
	case archive.EXE:
		flags := silentFlags(file)
		status := a.runLogged(ctx, pr, nil, filepath.Dir(file), "", file, flags...)
		pr.setExit(status)
		pr.installed = status == 0 || status == 3010
		pr.summary = name + " " + strings.Join(flags, " ") + " exited " + itoa(status)
	case archive.Zip:
		a.installZip(ctx, pr, file, name, work)
	default:
		pr.note("no install rule for this file type: it is left on the Desktop")
		pr.summary = "no install rule for this file type on Windows (known: .msi .exe .zip)"
	}
}

// silentFlags: which silent flags an .exe installer takes, by the marks its builder leaves in
// the file (its first 4 MiB); NSIS's /S for any other.
func silentFlags(file string) []string {
	f, err := os.Open(file)
	if err != nil {
		return []string{"/S"}
	}
	defer f.Close()
	head := make([]byte, 4<<20)
	n, _ := f.Read(head)
	head = head[:n]
	switch {
	case bytes.Contains(head, []byte("Nullsoft")):
		return []string{"/S"}
	case bytes.Contains(head, []byte("Inno Setup")):
		return []string{"/VERYSILENT", "/SUPPRESSMSGBOXES", "/NORESTART", "/SP-"}
	case bytes.Contains(head, []byte("WixBundle")), bytes.Contains(head, []byte(".wixburn")):
		return []string{"/quiet", "/norestart"}
	case bytes.Contains(head, []byte("InstallShield")):
		return []string{"/s", `/v"/qn REBOOT=ReallySuppress"`}
	}
	return []string{"/S"}
}

func (a *Agent) installZip(ctx context.Context, pr *pkgRun, file, name, work string) {
	dir, ok := a.unpackChecked(pr, file, name, archive.Zip)
	if !ok {
		return
	}
	pr.note("unpacked into %s", dir)
	if len(pr.p.Install) > 0 {
		status := a.runInstallSteps(ctx, pr, sourceDir(dir), work)
		pr.setExit(status)
		pr.installed = status == 0
		pr.summary = "unpacked into " + dir + "; " + pr.step + " exited " + itoa(status)
		return
	}
	src := sourceDir(dir)
	for _, script := range []string{"codebrowse-install.ps1", "codebrowse-install.cmd", "codebrowse-install.bat", "install.ps1", "install.cmd", "install.bat"} {
		path := filepath.Join(src, script)
		if !isFile(path) {
			continue
		}
		var status int
		if strings.HasSuffix(script, ".ps1") {
			cmd, args := powershell(path)
			status = a.runLogged(ctx, pr, nil, src, "", cmd, args...)
		} else {
			status = a.runLogged(ctx, pr, nil, src, "", "cmd.exe", "/c", path)
		}
		pr.setExit(status)
		pr.installed = status == 0
		pr.summary = script + " exited " + itoa(status)
		return
	}
	pr.setExit(0)
	pr.installed, pr.summary = true, "unpacked into "+dir+" (nothing to run)"
}

// runInstallSteps runs a package's own install steps as PowerShell, in dir, in order.
func (a *Agent) runInstallSteps(ctx context.Context, pr *pkgRun, dir, work string) int {
	stepsDir := filepath.Join(work, "steps")
	_ = os.MkdirAll(stepsDir, 0o755)
	for i, step := range pr.p.Install {
		shown := step
		if len(shown) > 200 {
			shown = shown[:200]
		}
		pr.step = "install step " + itoa(i+1) + " (" + strings.ReplaceAll(shown, "\n", " ") + ")"
		file := filepath.Join(stepsDir, itoa(i)+".ps1")
		if err := os.WriteFile(file, []byte(step), 0o644); err != nil {
			return 1
		}
		cmd, args := powershell(file)
		if status := a.runLogged(ctx, pr, nil, dir, "(in "+dir+") "+step, cmd, args...); status != 0 {
			return status
		}
	}
	return 0
}
