//go:build linux

package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"codebrowse.io/agent/internal/archive"
)

// timedOut is the status of a command stopped by the install timeout (timeout(1)'s).
const timedOut = 124

// installScriptFile is where the session's installScript is kept in its state dir.
const installScriptFile = "install-script.sh"

// keepDir is where what did not install is left with its note: the user's home.
func (a *Agent) keepDir() string { return a.path(a.user.Home) }

// freshDownloads is the directory an installScript's downloads go to: ~/downloads.
func (a *Agent) freshDownloads() string { return freshPath(a.path(a.user.Home), "downloads") }

func (a *Agent) runScript(ctx context.Context, pr *pkgRun, dir string, args []string) int {
	return a.runLogged(ctx, pr, nil, dir, "(installScript, in "+dir+") "+strings.Join(args, " "),
		"sh", append([]string{a.session(installScriptFile)}, args...)...)
}

// install installs a downloaded, digest-checked package file by its suffix (install-rules.sh):
// .deb (dpkg -i), .rpm (rpm -i), archives (checked, unpacked, checked again, moved to
// ~/<name-without-suffix>/, given to the user, and built), anything else left with a note.
func (a *Agent) install(ctx context.Context, pr *pkgRun, file, name, work string) {
	kind := archive.KindOf(name)
	pr.note("package %s: %s (%s)", pr.p.Index, name, kind)
	// Its own install steps replace the rule of a file that is not an archive (an archive is
	// unpacked first, and the steps run in it).
	if len(pr.p.Install) > 0 && !kind.IsArchive() {
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
	case archive.Deb:
		a.installDeb(ctx, pr, file)
	case archive.RPM:
		if !a.Host.Has("rpm") {
			pr.note("rpm not available on this image")
			pr.summary = "rpm not available on this image"
			return
		}
		status := a.runLogged(ctx, pr, nil, "", "", "rpm", "-i", file)
		pr.setExit(status)
		if status == 0 {
			pr.installed, pr.summary = true, "rpm -i succeeded"
		} else {
			pr.summary = "rpm -i exited " + itoa(status)
		}
	case archive.Unknown:
		pr.note("no install rule for this file type: it is left in %s", a.user.Home)
		pr.summary = "no install rule for this file type (known: .deb .rpm .tar.gz .tgz .tar.bz2 .tar.xz .zip)"
	default:
		a.installArchive(ctx, pr, file, name, kind, work)
	}
}

func (a *Agent) installDeb(ctx context.Context, pr *pkgRun, file string) {
	if !a.Host.Has("dpkg") {
		pr.summary = "dpkg not available on this image"
		return
	}
	var out strings.Builder
	pkg := ""
	if _, err := a.Host.Run(ctx, Command{Name: "dpkg-deb", Args: []string{"-f", file, "Package"}, Output: &out}); err == nil {
		pkg = strings.TrimSpace(out.String())
	}
	status := a.runLogged(ctx, pr, nil, "", "", "env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "-i", file)
	if status != 0 {
		// Missing dependencies: apt can fetch them only when it has package lists (a mirror).
		lists, _ := filepath.Glob(a.path("/var/lib/apt/lists/*_Packages"))
		if a.Host.Has("apt-get") && len(lists) > 0 {
			fix := a.runLogged(ctx, pr, nil, "", "", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-f", "install", "-y")
			var state strings.Builder
			if pkg != "" {
				_, _ = a.Host.Run(ctx, Command{Name: "dpkg-query", Args: []string{"-W", "-f=${Status}", pkg}, Output: &state})
			}
			if pkg != "" && strings.HasSuffix(state.String(), " installed") {
				pr.installed, pr.summary = true, "dpkg -i exited "+itoa(status)+"; apt-get -f install fixed it"
				pr.setExit(0)
				return
			}
			pr.note("apt-get -f install exited %d and did not install %s", fix, pkg)
		} else {
			pr.note("no apt package lists on this image: dependencies cannot be fetched")
		}
		pr.setExit(status)
		pr.summary = "dpkg -i exited " + itoa(status)
		return
	}
	if pkg == "" {
		pkg = "the package"
	}
	pr.installed, pr.summary = true, "dpkg -i installed "+pkg
	pr.setExit(0)
}

func (a *Agent) installArchive(ctx context.Context, pr *pkgRun, file, name string, kind archive.Kind, work string) {
	dir, ok := a.unpackChecked(pr, file, name, kind)
	if !ok {
		return
	}
	_ = os.Chmod(dir, 0o755)
	if err := a.Host.ChownTree(dir, a.user.UID, a.user.GID); err != nil {
		_ = os.RemoveAll(dir)
		pr.summary = "could not give the unpacked files in " + dir + " to " + a.user.Name + ": " + err.Error()
		return
	}
	pr.note("unpacked into %s", dir)
	status := a.buildUnpacked(ctx, pr, sourceDir(dir), work)
	// Root's build steps may have left root-owned files; the tree is the user's (links not followed).
	_ = a.Host.ChownTree(dir, a.user.UID, a.user.GID)
	switch {
	case pr.step == "":
		pr.installed, pr.summary = true, "unpacked into "+dir+" (nothing to build)"
		pr.setExit(0)
	case status == 0:
		pr.installed, pr.summary = true, "unpacked into "+dir+"; "+pr.step+" succeeded"
		pr.setExit(0)
	default:
		pr.setExit(status)
		pr.summary = "unpacked into " + dir + "; " + pr.step + " exited " + itoa(status)
	}
}

// buildUnpacked runs the build conventions in src; pr.step names the step that ran last ("" when
// there was nothing to build).
func (a *Agent) buildUnpacked(ctx context.Context, pr *pkgRun, src, work string) int {
	as := a.identity(a.user)
	as.Home = a.user.Home
	if len(pr.p.Install) > 0 {
		return a.runInstallSteps(ctx, pr, src, work)
	}
	switch {
	case isFile(filepath.Join(src, "codebrowse-install.sh")):
		pr.step = "codebrowse-install.sh"
		return a.runLogged(ctx, pr, nil, src, "", "sh", "./codebrowse-install.sh")
	case isFile(filepath.Join(src, "configure")):
		pr.step = "configure"
		var status int
		if executable(filepath.Join(src, "configure")) {
			status = a.runLogged(ctx, pr, as, src, "", "./configure")
		} else {
			status = a.runLogged(ctx, pr, as, src, "", "sh", "./configure")
		}
		if status != 0 {
			return status
		}
		return a.make(ctx, pr, as, src)
	case isFile(filepath.Join(src, "Makefile")) || isFile(filepath.Join(src, "makefile")) || isFile(filepath.Join(src, "GNUmakefile")):
		return a.make(ctx, pr, as, src)
	case isFile(filepath.Join(src, "install.sh")):
		pr.step = "install.sh"
		return a.runLogged(ctx, pr, nil, src, "", "sh", "./install.sh")
	}
	pr.step = ""
	pr.note("nothing to build: no codebrowse-install.sh, configure, Makefile or install.sh at the top level")
	return 0
}

// make: make as the user, make install as root.
func (a *Agent) make(ctx context.Context, pr *pkgRun, as *Identity, src string) int {
	pr.step = "make"
	if status := a.runLogged(ctx, pr, as, src, "", "make"); status != 0 {
		return status
	}
	pr.step = "make install"
	return a.runLogged(ctx, pr, nil, src, "", "make", "install")
}

// runInstallSteps runs the package's own install steps (its codebrowse.yaml "install"), each as
// root in dir, in order; the first that fails stops them.
func (a *Agent) runInstallSteps(ctx context.Context, pr *pkgRun, dir, work string) int {
	stepsDir := filepath.Join(work, "steps")
	_ = os.MkdirAll(stepsDir, 0o755)
	for i, step := range pr.p.Install {
		shown := step
		if len(shown) > 200 {
			shown = shown[:200]
		}
		pr.step = "install step " + itoa(i+1) + " (" + strings.ReplaceAll(shown, "\n", " ") + ")"
		file := filepath.Join(stepsDir, itoa(i))
		if err := os.WriteFile(file, []byte(step), 0o644); err != nil {
			return 1
		}
		if status := a.runLogged(ctx, pr, nil, dir, "(in "+dir+") "+step, "sh", file); status != 0 {
			return status
		}
	}
	return 0
}

// runScriptFile is where a test run's script is kept; runScriptCommand runs it.
const runScriptFile = "run-script.sh"

func runScriptCommand(script string) (string, []string) { return "sh", []string{script} }
