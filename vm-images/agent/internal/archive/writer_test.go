//go:build linux

package archive

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// What the unpacker writes cannot leave its directory even when a symlink to outside is planted
// in it meanwhile (as a racing process would): it never follows one.
func TestTheWriterNeverFollowsASymlink(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := newWriter(filepath.Join(base, "unpack"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	if err := os.Symlink(outside, filepath.Join(base, "unpack", "planted")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.file([]string{"planted", "x"}, 0o644, strings.NewReader("x")); err == nil {
		t.Fatal("wrote through a planted symlink")
	}
	if _, err := w.file([]string{"planted"}, 0o644, strings.NewReader("x")); err == nil {
		t.Fatal("wrote over a planted symlink")
	}
	if err := w.mkdir([]string{"planted", "d"}, 0o755); err == nil {
		t.Fatal("made a directory through a planted symlink")
	}
	if err := os.WriteFile(filepath.Join(outside, "passwd"), []byte("root"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.link([]string{"h"}, []string{"planted", "passwd"}); err == nil {
		t.Fatal("hard-linked through a planted symlink")
	}
	if err := os.Symlink(filepath.Join(outside, "passwd"), filepath.Join(base, "unpack", "tofile")); err != nil {
		t.Fatal(err)
	}
	if err := w.link([]string{"h2"}, []string{"tofile"}); err == nil {
		t.Fatal("hard-linked to a symlink's target")
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 1 {
		t.Fatalf("outside holds %v", entries)
	}
}

// Unpacked without the listing's check, the per-entry rules still refuse what would escape.
func TestUnpackAloneCannotEscape(t *testing.T) {
	cases := map[string][]entry{
		"symlink then file":       {symlink("l", "."), file("l/x", "")},
		"../":                     {file("../escape", "x")},
		"absolute":                {file("/tmp/escape", "x")},
		"hardlink to /etc/passwd": {hardlink("p", "/etc/passwd")},
		"symlink out then file":   {symlink("up", ".."), file("up/escape", "x")},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			path := filepath.Join(base, "a.tar")
			if err := os.WriteFile(path, tarBytes(t, entries), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Unpack(path, Tar, 1<<20, filepath.Join(base, "out")); err == nil {
				t.Fatal("unpacked")
			}
			got, _ := os.ReadDir(base)
			if len(got) != 2 {
				t.Fatalf("base holds %v", got)
			}
		})
	}
}

func TestCheckTreeFindsWhatTheRulesWouldHaveRefused(t *testing.T) {
	cases := map[string]func(dir string) error{
		"link-escape":  func(d string) error { return os.Symlink("/etc", filepath.Join(d, "etc")) },
		"special-file": func(d string) error { return mkfifo(filepath.Join(d, "p")) },
		"hardlink-escape": func(d string) error {
			outside := filepath.Join(filepath.Dir(d), "outside")
			if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
				return err
			}
			return os.Link(outside, filepath.Join(d, "h"))
		},
		"size": func(d string) error { return os.WriteFile(filepath.Join(d, "big"), make([]byte, 2000), 0o644) },
		"": func(d string) error {
			os.MkdirAll(filepath.Join(d, "a", "b"), 0o755)
			return os.Symlink("b", filepath.Join(d, "a", "link"))
		},
	}
	for rule, plant := range cases {
		t.Run(rule, func(t *testing.T) {
			d := filepath.Join(t.TempDir(), "tree")
			os.Mkdir(d, 0o755)
			if err := plant(d); err != nil {
				t.Fatal(err)
			}
			if got := ruleOf(CheckTree(d, 1000)); got != rule {
				t.Fatalf("%q, want %q", got, rule)
			}
		})
	}
}
