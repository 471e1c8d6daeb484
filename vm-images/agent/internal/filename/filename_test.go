package filename

import (
	"strings"
	"testing"
)

// What the portal's packageFileName (operator/src/portal/agent-api.ts) gives each URL, index 4:
// the cases of e2e/guest/agent-shell.test.ts and of the shell agent's file_name_awk, checked
// against Node's URL parser when they were written here.
func TestFileNamesOfTrickyURLs(t *testing.T) {
	cases := map[string]string{
		"https://x/pool/hello_1.0_all.deb":                "hello_1.0_all.deb",
		"https://x/a/notes%20and%20more.zip?token=1#frag": "notes_and_more.zip",
		"https://x/a/..%2F..%2Fetc%2Fpasswd":              "_.._etc_passwd",
		"https://x/a/.hidden.tar.gz":                      "hidden.tar.gz",
		"https://x/a/-rf.tgz":                             "rf.tgz",
		"https://x/a/%2e%2e":                              "package-4",
		"https://x/a/..":                                  "package-4",
		"https://x/a/":                                    "package-4",
		"https://x":                                       "package-4",
		"ftp://x/":                                        "package-4",
		"":                                                "package-4",
		"not a url":                                       "package-4",
		"https://x/$(reboot);`id`.tgz":                    "__reboot___id_.tgz",
		"https://x/caf%C3%A9.zip":                         "caf_.zip",
		"https://x/café-😀.zip":                            "caf_-__.zip",
		"https://x/%ff.zip":                               "package-4",
		"https://x/%zz.zip":                               "package-4",
		"https://x/%00.zip":                               "_.zip",
		`https://x/a\b.zip`:                               "b.zip",
		"https://x/" + strings.Repeat("long-", 40) + "1.0.tar.gz": strings.Repeat("long-", 40)[200-118:] + "1.0.tar.gz",
		"https://x/_.zip":                     "_.zip",
		"https://x/___":                       "package-4",
		"https:///a.zip":                      "package-4",
		"https:x/a.zip":                       "a.zip",
		"http://user:pw@host:8080/p/q.tar.gz": "q.tar.gz",
		"http://host:99999/a.zip":             "package-4",
		"http://ho st/a.zip":                  "package-4",
		"mailto:a/b.zip":                      "b.zip",
		"file:///tmp/x.deb":                   "x.deb",
		"https://x/a.zip/.":                   "package-4",
		"  https://x/a.zip  ":                 "a.zip",
		"https://x/a\tb.zip":                  "ab.zip",
		"https://[::1]:80/x.deb":              "x.deb",
		"https://x/a?b/c.zip":                 "a",
		"https://x/%F0%9F%98%80.zip":          "__.zip",
		"https://x/%C3.zip":                   "package-4",
	}
	for url, want := range cases {
		if got := FromURL(url, "4"); got != want {
			t.Errorf("FromURL(%q) = %q, want %q", url, got, want)
		}
	}
}

func TestManifestFileNamesAreMadeSafeAgain(t *testing.T) {
	cases := map[string]string{
		"fails.tgz":              "fails.tgz",
		"../../etc/passwd":       "_.._etc_passwd",
		"a b%20c.zip":            "a_b_20c.zip",
		".hidden":                "hidden",
		"--x.deb":                "x.deb",
		"___":                    "package-7",
		"":                       "package-7",
		"\xff.zip":               "package-7",
		"é😀.zip":                 "___.zip",
		"line\nbreak.tar":        "line_break.tar",
		strings.Repeat("a", 200): strings.Repeat("a", 128),
	}
	for name, want := range cases {
		if got := FromName(name, "7"); got != want {
			t.Errorf("FromName(%q) = %q, want %q", name, got, want)
		}
	}
}
