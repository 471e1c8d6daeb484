// Package archive checks package archives against the agent's safety rules before anything is
// unpacked, unpacks them in-process where nothing can be written outside the unpack directory, and
// checks the unpacked tree again. The rules and their names are the shell agent's
// (install-rules.sh, vm-images/README.md "Archive safety"); a refusal names the rule it broke.
package archive

import "strings"

// Kind is what a package file is, by its name's suffix.
type Kind string

const (
	Deb     Kind = "deb"
	RPM     Kind = "rpm"
	TarGz   Kind = "tar.gz"
	TarBz2  Kind = "tar.bz2"
	TarXz   Kind = "tar.xz"
	Tar     Kind = "tar"
	Zip     Kind = "zip"
	MSI     Kind = "msi"
	EXE     Kind = "exe"
	Unknown Kind = "unknown"
)

// KindOf is the kind of a package file named name (Linux suffixes; MSI and EXE only on request
// of the Windows rules, see WindowsKindOf).
func KindOf(name string) Kind {
	switch {
	case strings.HasSuffix(name, ".deb"):
		return Deb
	case strings.HasSuffix(name, ".rpm"):
		return RPM
	case strings.HasSuffix(name, ".tar.gz"), strings.HasSuffix(name, ".tgz"):
		return TarGz
	case strings.HasSuffix(name, ".tar.bz2"), strings.HasSuffix(name, ".tbz2"), strings.HasSuffix(name, ".tbz"):
		return TarBz2
	case strings.HasSuffix(name, ".tar.xz"), strings.HasSuffix(name, ".txz"):
		return TarXz
	case strings.HasSuffix(name, ".tar"):
		return Tar
	case strings.HasSuffix(name, ".zip"):
		return Zip
	}
	return Unknown
}

// WindowsKindOf is the kind by the Windows agent's rules: .msi, .exe and .zip (any case).
func WindowsKindOf(name string) Kind {
	lower := strings.ToLower(name)
	switch {
	case strings.HasSuffix(lower, ".msi"):
		return MSI
	case strings.HasSuffix(lower, ".exe"):
		return EXE
	case strings.HasSuffix(lower, ".zip"):
		return Zip
	}
	return Unknown
}

// IsArchive says whether a kind is unpacked (and so checked).
func (k Kind) IsArchive() bool {
	return k == TarGz || k == TarBz2 || k == TarXz || k == Tar || k == Zip
}

// StripSuffix is the directory name an archive unpacks into: hello-1.0.tar.gz -> hello-1.0.
func StripSuffix(name string) string {
	for _, s := range []string{".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".tbz", ".txz", ".tar", ".zip"} {
		if strings.HasSuffix(name, s) {
			return strings.TrimSuffix(name, s)
		}
	}
	return name
}
