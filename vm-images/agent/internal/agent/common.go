package agent

// What the Linux and the Windows agent share, whatever the platform files do differently.

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"codebrowse.io/agent/internal/archive"
)

// setClock: after a memory snapshot is restored the clock is that of the snapshot: take the
// portal's (the manifest response's Date) when it is more than 5 s off.
func (a *Agent) setClock() {
	if !a.S.SetClock || a.date == "" {
		return
	}
	start := time.Now()
	portal, err := http.ParseTime(a.date)
	if err != nil {
		return
	}
	skew := portal.Unix() - time.Now().Unix()
	if skew > 5 || skew < -5 {
		if a.Host.SetClock(portal) == nil {
			a.step("clock", start, "set from the portal's Date header (was %d s off)", skew)
		} else {
			a.step("clock", start, "%d s off the portal, and setting it failed", skew)
		}
	}
}

// refused says why an archive was not unpacked.
func (a *Agent) refused(pr *pkgRun, err error) {
	if r, ok := err.(*archive.Refusal); ok {
		pr.note("%s", r.Error())
		pr.summary = r.Error()
		return
	}
	pr.note("unpacking failed: %v", err)
	pr.summary = "unpacking failed: " + err.Error()
}

// sourceDir is where the build steps run: the unpack dir, or its only entry when that is a
// directory.
func sourceDir(dir string) string {
	entries, err := os.ReadDir(dir)
	if err == nil && len(entries) == 1 && entries[0].IsDir() && entries[0].Type()&os.ModeSymlink == 0 {
		return filepath.Join(dir, entries[0].Name())
	}
	return dir
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// unpackChecked checks an archive's listing, unpacks it into a fresh directory in the user's home
// and checks the tree again; the directory, or false when the package was refused (said in pr).
// A crash half-way left an unpack dir of ours in the home: it goes, and this one takes its place.
func (a *Agent) unpackChecked(pr *pkgRun, file, name string, kind archive.Kind) (string, bool) {
	lim := archive.Limits{MaxEntries: a.S.ArchiveMaxEntries, MaxBytes: a.S.ArchiveMaxBytes, MaxRatio: a.S.ArchiveMaxRatio}
	limit, err := archive.Check(file, kind, lim)
	if err != nil {
		a.refused(pr, err)
		return "", false
	}
	stateFile := a.session("pkg-" + pr.p.Index + ".unpack-dir")
	dir := firstLine(stateFile)
	if dir != "" && isDir(dir) {
		_ = os.RemoveAll(dir)
	} else {
		dir = freshPath(a.path(a.user.Home), archive.StripSuffix(name))
	}
	_ = os.WriteFile(stateFile, []byte(dir+"\n"), 0o600)
	notes, err := archive.Unpack(file, kind, limit, dir)
	for _, n := range notes {
		pr.note("%s", n)
	}
	if err == nil {
		err = archive.CheckTree(dir, limit)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		a.refused(pr, err)
		return "", false
	}
	return dir, true
}

// interfaceAddresses: the addresses on a NIC (the hosts' Addresses).
func interfaceAddresses(iface string) ([]net.IP, error) {
	i, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, err
	}
	addrs, err := i.Addrs()
	if err != nil {
		return nil, err
	}
	var out []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			out = append(out, n.IP)
		}
	}
	return out, nil
}
