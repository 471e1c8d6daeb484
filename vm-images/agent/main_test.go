package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

func output(t *testing.T, args ...string) (string, int) {
	r, w, _ := os.Pipe()
	stdout := os.Stdout
	os.Stdout = w
	code := subcommand(args)
	os.Stdout = stdout
	w.Close()
	out, _ := io.ReadAll(r)
	return string(out), code
}

func TestFileNameSubcommands(t *testing.T) {
	if out, code := output(t, "file-name", "https://x/a/notes%20and%20more.zip?token=1", "4"); code != 0 || out != "notes_and_more.zip\n" {
		t.Fatalf("%q %d", out, code)
	}
	if out, code := output(t, "file-name", "--name", "../x y.tgz", "2"); code != 0 || out != "_x_y.tgz\n" {
		t.Fatalf("%q %d", out, code)
	}
	if out, code := output(t, "file-name", "", "0"); code != 0 || out != "package-0\n" {
		t.Fatalf("%q %d", out, code)
	}
}

func TestCheckUnpackedSubcommand(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/big", make([]byte, 100), 0o644)
	if out, code := output(t, "check-unpacked", dir, "50"); code != 1 || !strings.HasPrefix(out, "size: ") {
		t.Fatalf("%q %d", out, code)
	}
	if out, code := output(t, "check-unpacked", dir, "500"); code != 0 || out != "" {
		t.Fatalf("%q %d", out, code)
	}
}
