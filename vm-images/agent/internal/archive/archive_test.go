package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// entry is one entry of a test archive.
type entry struct {
	name string
	kind byte // tar typeflag, or for zips: 'f' file, 'd' dir, 'l' symlink
	body string
	link string
	mode int64
}

func file(name, body string) entry { return entry{name: name, kind: tar.TypeReg, body: body} }
func dir(name string) entry        { return entry{name: name, kind: tar.TypeDir} }
func symlink(name, target string) entry {
	return entry{name: name, kind: tar.TypeSymlink, link: target}
}
func hardlink(name, target string) entry   { return entry{name: name, kind: tar.TypeLink, link: target} }
func special(name string, kind byte) entry { return entry{name: name, kind: kind} }

func tarBytes(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Typeflag: e.kind, Linkname: e.link, Mode: mode, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if e.kind != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.kind == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t *testing.T, data []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	return buf.Bytes()
}

// zipBytes makes a zip "made on Unix": modes and symlinks count. mode is the whole external
// attribute's upper half (0 for the defaults of each kind).
func zipBytes(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Store}
		mode := uint32(e.mode)
		if mode == 0 {
			switch e.kind {
			case 'd':
				mode = 0o40755
			case 'l':
				mode = 0o120777
			default:
				mode = 0o100644
			}
		}
		h.CreatorVersion = 3<<8 | 20
		h.ExternalAttrs = mode << 16
		w, err := zw.CreateRaw(withCRC(h, e))
		if err != nil {
			t.Fatal(err)
		}
		body := e.body
		if e.kind == 'l' {
			body = e.link
		}
		if _, err := w.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func withCRC(h *zip.FileHeader, e entry) *zip.FileHeader {
	body := e.body
	if e.kind == 'l' {
		body = e.link
	}
	h.CRC32 = crc([]byte(body))
	h.CompressedSize64 = uint64(len(body))
	h.UncompressedSize64 = uint64(len(body))
	return h
}

func write(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var limits = Limits{MaxEntries: 10000, MaxBytes: 1 << 30, MaxRatio: 100}

func ruleOf(err error) string {
	if r, ok := err.(*Refusal); ok {
		return r.Rule
	}
	if err == nil {
		return ""
	}
	return "error: " + err.Error()
}

func zeroBomb(t *testing.T, bytesOfZeros int) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	_ = tw.WriteHeader(&tar.Header{Name: "zeros.bin", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(bytesOfZeros)})
	chunk := make([]byte, 1<<20)
	for n := 0; n < bytesOfZeros; n += len(chunk) {
		_, _ = tw.Write(chunk)
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

const evil = "evil-3f9a"

// The 17 archives of e2e/guest/hostile-archives.test.ts, each refused by its rule.
func TestHostileArchivesAreRefusedByTheirRule(t *testing.T) {
	many := []entry{dir("many/")}
	for i := 0; i < 150; i++ {
		many = append(many, file("many/f"+strings.Repeat("x", i%5)+string(rune('a'+i%26))+string(rune('a'+i/26)), ""))
	}
	cases := []struct {
		name, rule string
		kind       Kind
		data       func() []byte
		lim        Limits
	}{
		{"dotdot.tar.gz", "parent-dir", TarGz, func() []byte { return gz(t, tarBytes(t, []entry{file("ok.txt", ""), file("../"+evil, "")})) }, limits},
		{"deep-dotdot.tar.gz", "parent-dir", TarGz, func() []byte { return gz(t, tarBytes(t, []entry{file("a/b/../../../../../tmp/"+evil, "")})) }, limits},
		{"absolute.tar.gz", "absolute-path", TarGz, func() []byte { return gz(t, tarBytes(t, []entry{file("/tmp/"+evil, "")})) }, limits},
		{"link-absolute.tar.gz", "absolute-link", TarGz, func() []byte {
			return gz(t, tarBytes(t, []entry{symlink("etc", "/etc"), file("etc/"+evil, "")}))
		}, limits},
		{"link-relative.tar.gz", "link-escape", TarGz, func() []byte {
			return gz(t, tarBytes(t, []entry{dir("d/"), symlink("d/up", "../../.."), file("d/up/tmp/"+evil, "")}))
		}, limits},
		{"link-chain.tar.gz", "link-escape", TarGz, func() []byte {
			return gz(t, tarBytes(t, []entry{symlink("here", "."), symlink("out", "here/../..")}))
		}, limits},
		{"through-link.tar.gz", "through-symlink", TarGz, func() []byte {
			return gz(t, tarBytes(t, []entry{dir("sub/"), symlink("inside", "sub"), file("inside/"+evil, "")}))
		}, limits},
		{"hardlink-absolute.tar.gz", "hardlink-escape", TarGz, func() []byte { return gz(t, tarBytes(t, []entry{hardlink("shadow", "/etc/shadow")})) }, limits},
		{"hardlink-relative.tar.gz", "hardlink-escape", TarGz, func() []byte {
			return gz(t, tarBytes(t, []entry{hardlink("passwd", "../../etc/passwd")}))
		}, limits},
		{"bomb.tar.gz", "size", TarGz, func() []byte { return zeroBomb(t, 32<<20) }, limits},
		{"many.tar.gz", "entry-count", TarGz, func() []byte { return gz(t, tarBytes(t, many)) }, Limits{MaxEntries: 100, MaxBytes: 1 << 30, MaxRatio: 100}},
		{"device.tar.gz", "special-file", TarGz, func() []byte { return gz(t, tarBytes(t, []entry{special("null", tar.TypeChar)})) }, limits},
		{"fifo.tar", "special-file", Tar, func() []byte { return tarBytes(t, []entry{special("pipe", tar.TypeFifo)}) }, limits},
		{"dotdot.zip", "parent-dir", Zip, func() []byte { return zipBytes(t, []entry{{name: "ok.txt"}, {name: "../" + evil}}) }, limits},
		{"absolute.zip", "absolute-path", Zip, func() []byte { return zipBytes(t, []entry{{name: "/tmp/" + evil}}) }, limits},
		{"link.zip", "absolute-link", Zip, func() []byte {
			return zipBytes(t, []entry{{name: "etc", kind: 'l', link: "/etc"}, {name: "etc/" + evil}})
		}, limits},
		{"link-relative.zip", "link-escape", Zip, func() []byte { return zipBytes(t, []entry{{name: "up", kind: 'l', link: "../.."}}) }, limits},
	}
	if len(cases) != 17 {
		t.Fatalf("%d cases, not the 17 hostile archives", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := write(t, c.name, c.data())
			if KindOf(c.name) != c.kind {
				t.Fatalf("kind %s, want %s", KindOf(c.name), c.kind)
			}
			_, err := Check(path, c.kind, c.lim)
			if ruleOf(err) != c.rule {
				t.Fatalf("refused by %q (%v), want %q", ruleOf(err), err, c.rule)
			}
			if !strings.HasPrefix(err.Error(), "refused by the archive rule "+c.rule+": ") {
				t.Fatalf("message %q", err.Error())
			}
			// And unpacked anyway, the unpacker refuses it too (or, for a bomb, stops at the cap),
			// and writes nothing outside its directory.
			base := t.TempDir()
			out := filepath.Join(base, "unpack")
			_, uerr := Unpack(path, c.kind, 1<<20, out)
			if c.rule == "entry-count" {
				return // many harmless entries: the listing rule alone refuses them
			}
			if uerr == nil {
				uerr = CheckTree(out, 1<<20)
			}
			if uerr == nil {
				t.Fatalf("unpacked without complaint")
			}
			entries, _ := os.ReadDir(base)
			if len(entries) != 1 {
				t.Fatalf("written beside the unpack dir: %v", entries)
			}
		})
	}
}

// The four wrong refusals of the shell agent.
func TestSmallTarballWithSymlinkIsNotRefusedForItsBlocks(t *testing.T) {
	data := gz(t, tarBytes(t, []entry{file("a", "x"), file("b", "y"), symlink("c", "a")}))
	if len(data) > 400 {
		t.Fatalf("%d bytes: not a small archive", len(data))
	}
	path := write(t, "small.tar.gz", data)
	limit, err := Check(path, TarGz, limits)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "small")
	if _, err := Unpack(path, TarGz, limit, out); err != nil {
		t.Fatal(err)
	}
	if err := CheckTree(out, limit); err != nil {
		t.Fatalf("the tree (4 KiB blocks each on disk) is refused: %v", err)
	}
	if target, _ := os.Readlink(filepath.Join(out, "c")); target != "a" {
		t.Fatalf("symlink c -> %q", target)
	}
}

func TestZipEntriesWithoutFileTypeBitsAreFiles(t *testing.T) {
	// Python's zipfile.writestr: external attributes 0o600 << 16, no S_IFREG.
	path := write(t, "py.zip", zipBytes(t, []entry{{name: "hello.txt", body: "hi\n", mode: 0o600}, {name: "sub/", kind: 'd', mode: 0o700}, {name: "sub/x", body: "x", mode: 0o644}}))
	limit, err := Check(path, Zip, limits)
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	out := filepath.Join(t.TempDir(), "py")
	if _, err := Unpack(path, Zip, limit, out); err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(filepath.Join(out, "hello.txt"))
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
		t.Fatalf("hello.txt: %v %v", st, err)
	}
	if data, _ := os.ReadFile(filepath.Join(out, "sub", "x")); string(data) != "x" {
		t.Fatalf("sub/x: %q", data)
	}
}

func TestATarThatFailsHalfWayNamesTheRuleItBroke(t *testing.T) {
	long := strings.Repeat("n", 300)
	path := write(t, "long.tar", tarBytes(t, []entry{file("ok", "1"), file("dir/"+long, "2")}))
	if _, err := Check(path, Tar, limits); ruleOf(err) != "name-too-long" {
		t.Fatalf("a 300-byte name: %v", err)
	}
	// Cut off after a hostile entry: that entry's rule, not "unreadable".
	whole := tarBytes(t, []entry{file("../escape", "x"), file("big", strings.Repeat("y", 5000))})
	path = write(t, "cut.tar", whole[:2048])
	if _, err := Check(path, Tar, limits); ruleOf(err) != "parent-dir" {
		t.Fatalf("cut after ../escape: %v", err)
	}
	// Cut off after harmless entries: unreadable.
	whole = tarBytes(t, []entry{file("fine", "x"), file("big", strings.Repeat("y", 5000))})
	path = write(t, "cut2.tar.gz", gz(t, whole[:2048]))
	if _, err := Check(path, TarGz, limits); ruleOf(err) != "unreadable" {
		t.Fatalf("cut after harmless entries: %v", err)
	}
}

func TestTheHardlinkRefusalNamesTheAbsoluteTarget(t *testing.T) {
	path := write(t, "h.tar.gz", gz(t, tarBytes(t, []entry{hardlink("shadow", "/etc/shadow")})))
	_, err := Check(path, TarGz, limits)
	if ruleOf(err) != "hardlink-escape" || !strings.Contains(err.Error(), `"shadow" -> "/etc/shadow"`) {
		t.Fatalf("%v", err)
	}
}

func TestMoreRules(t *testing.T) {
	cases := []struct {
		name    string
		entries []entry
		rule    string
	}{
		{"a file twice", []entry{file("a", "1"), file("a", "2")}, "duplicate-entry"},
		{"a file, then a symlink of its name", []entry{file("a", "1"), symlink("a", "b")}, "duplicate-entry"},
		{"a directory twice", []entry{dir("d/"), file("d/x", ""), dir("d/")}, ""},
		{"an entry under a file", []entry{file("a", "1"), file("a/b", "2")}, "not-a-directory"},
		{"a hardlink to a later file", []entry{hardlink("h", "f"), file("f", "x")}, "hardlink-escape"},
		{"a hardlink inside", []entry{file("f", "x"), hardlink("h", "./f")}, ""},
		{"a symlink through a symlink", []entry{symlink("a", "."), symlink("b", "a/x")}, "link-escape"},
		{"a symlink up and in again", []entry{dir("d/"), symlink("d/l", "../d")}, ""},
		{"a device", []entry{special("blk", tar.TypeBlock)}, "special-file"},
		{"a long symlink target", []entry{symlink("l", strings.Repeat("a/", 2100))}, "name-too-long"},
		{"./ and ./a", []entry{dir("./"), file("./a", "")}, ""},
		{"setuid bits", []entry{{name: "s", kind: tar.TypeReg, body: "x", mode: 0o4755}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := write(t, "t.tar", tarBytes(t, c.entries))
			limit, err := Check(path, Tar, limits)
			if ruleOf(err) != c.rule {
				t.Fatalf("%v, want %q", err, c.rule)
			}
			if c.rule != "" {
				return
			}
			out := filepath.Join(t.TempDir(), "out")
			if _, err := Unpack(path, Tar, limit, out); err != nil {
				t.Fatal(err)
			}
			if err := CheckTree(out, limit); err != nil {
				t.Fatal(err)
			}
			if st, err := os.Stat(filepath.Join(out, "s")); err == nil && st.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
				t.Fatalf("setuid bit kept: %v", st.Mode())
			}
		})
	}
}

func TestZipBackslashesAreSeparators(t *testing.T) {
	path := write(t, "w.zip", zipBytes(t, []entry{{name: `..\` + evil}}))
	if _, err := Check(path, Zip, limits); ruleOf(err) != "parent-dir" {
		t.Fatalf("%v", err)
	}
	path = write(t, "w2.zip", zipBytes(t, []entry{{name: `\` + evil}}))
	if _, err := Check(path, Zip, limits); ruleOf(err) != "absolute-path" {
		t.Fatalf("%v", err)
	}
	path = write(t, "w3.zip", zipBytes(t, []entry{{name: `C:\` + evil}}))
	if _, err := Check(path, Zip, limits); ruleOf(err) != "absolute-path" {
		t.Fatalf("%v", err)
	}
}

func TestSizeRules(t *testing.T) {
	// Letters at random: little for gzip to squeeze, so the ratio rule is not what refuses it.
	rng := rand.New(rand.NewPCG(1, 2))
	letters := make([]byte, 100_000)
	for i := range letters {
		letters[i] = byte('a' + rng.IntN(26))
	}
	body := string(letters)
	path := write(t, "z.tar.gz", gz(t, tarBytes(t, []entry{file("z", body)})))
	if _, err := Check(path, TarGz, Limits{MaxEntries: 10, MaxBytes: 50_000, MaxRatio: 1000}); ruleOf(err) != "size" {
		t.Fatalf("over MAX_BYTES: %v", err)
	}
	if _, err := Check(path, TarGz, Limits{MaxEntries: 10, MaxBytes: 1 << 30, MaxRatio: 1}); ruleOf(err) != "size" {
		t.Fatalf("over the ratio: %v", err)
	}
	if _, err := Check(path, TarGz, limits); err != nil {
		t.Fatalf("within: %v", err)
	}
	zpath := write(t, "z.zip", zipBytes(t, []entry{{name: "z", body: body}}))
	if _, err := Check(zpath, Zip, Limits{MaxEntries: 10, MaxBytes: 50_000, MaxRatio: 1000}); ruleOf(err) != "size" {
		t.Fatalf("zip over MAX_BYTES: %v", err)
	}
	if _, err := Check(write(t, "junk.zip", []byte("not a zip")), Zip, limits); ruleOf(err) != "unreadable" {
		t.Fatalf("junk zip: %v", err)
	}
	if _, err := Check(write(t, "junk.tar.gz", []byte("not gzip")), TarGz, limits); ruleOf(err) != "unreadable" {
		t.Fatalf("junk tar.gz: %v", err)
	}
}

func TestKindsAndSuffixes(t *testing.T) {
	for name, want := range map[string][2]string{
		"hello-1.0.tar.gz": {"tar.gz", "hello-1.0"}, "a.tgz": {"tar.gz", "a"}, "a.tbz": {"tar.bz2", "a"},
		"a.tar.xz": {"tar.xz", "a"}, "a.txz": {"tar.xz", "a"}, "a.zip": {"zip", "a"}, "a.deb": {"deb", "a.deb"},
		"a.rpm": {"rpm", "a.rpm"}, "a.bin": {"unknown", "a.bin"}, "a.tar": {"tar", "a"}, "a.tbz2": {"tar.bz2", "a"},
	} {
		if k, s := KindOf(name), StripSuffix(name); string(k) != want[0] || s != want[1] {
			t.Errorf("%s: %s %s", name, k, s)
		}
	}
}
