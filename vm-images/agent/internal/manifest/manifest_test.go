package manifest

import (
	"reflect"
	"testing"
)

const doc = `{
  "session": "team-a/alice-1", "uid": "u-1", "hostname": "alice.example.org", "ip": "10.0.0.5",
  "network": {"mac": "02:00:00:00:00:aa", "address": "10.0.0.5", "prefixLength": 24, "gateway": "10.0.0.1",
              "dns": ["10.0.0.53", "1.1.1.1"], "broadcast": "10.0.0.255"},
  "user": "alice", "password": "c0rrect \"horse\" \\ battery\n", "sshKeys": ["ssh-ed25519 AAA a@b\r\n"],
  "installScript": "#!/bin/sh\necho \u00e9 \ud83d\ude00\n\n", "expiresAt": "2030-01-01T00:00:00Z",
  "mode": "Run", "run": {"script": "exit 0", "timeoutSeconds": 300},
  "packages": [
    {"index": 0, "url": "https://x/a.deb", "filename": "a.deb", "digest": "sha256:ab", "download": "/agent/v1/packages/0",
     "install": ["make", "make install"], "unknown": {"deep": [1, null]}},
    {"index": "x", "url": "https://x/b.tgz", "digest": null},
    {"index": 7, "url": "https://x/c.zip"}
  ],
  "someFutureField": [true, {"a": 1}], "number": -1.5e3, "flag": false
}`

func TestEveryFieldIsReadAndUnknownOnesIgnored(t *testing.T) {
	m, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"session": "team-a/alice-1", "uid": "u-1", "hostname": "alice.example.org", "ip": "10.0.0.5",
		"network.mac": "02:00:00:00:00:aa", "network.prefixLength": "24", "network.gateway": "10.0.0.1",
		"network.broadcast": "10.0.0.255", "user": "alice", "mode": "Run", "run.timeoutSeconds": "300",
		"number": "-1.5e3", "flag": "false", "password": "c0rrect \"horse\" \\ battery",
	} {
		if got, ok := m.Get(path); !ok || got != want {
			t.Errorf("%s = %q %v, want %q", path, got, ok, want)
		}
	}
	if raw, _ := m.Raw("installScript"); raw != "#!/bin/sh\necho é 😀\n\n" {
		t.Errorf("installScript %q", raw)
	}
	for _, absent := range []string{"nothing", "network", "packages", "packages.1.digest", "packages.9.url", "packages.01.url", "someFutureField.1"} {
		if _, ok := m.Get(absent); ok {
			t.Errorf("%s is read", absent)
		}
	}
	if m.Count("packages") != 3 || m.Count("sshKeys") != 1 || m.Count("nothing") != 0 || m.Count("user") != 0 {
		t.Error("counts")
	}
	if got := m.Strings("network.dns"); !reflect.DeepEqual(got, []string{"10.0.0.53", "1.1.1.1"}) {
		t.Errorf("dns %v", got)
	}
	pkgs := m.Packages()
	want := []Package{
		{K: 0, Index: "0", URL: "https://x/a.deb", Filename: "a.deb", Digest: "sha256:ab", Download: "/agent/v1/packages/0", Install: []string{"make", "make install"}},
		{K: 1, Index: "1", URL: "https://x/b.tgz"},
		{K: 2, Index: "7", URL: "https://x/c.zip"},
	}
	if !reflect.DeepEqual(pkgs, want) {
		t.Errorf("packages\n%+v\nwant\n%+v", pkgs, want)
	}
	if m.Session() != "team-a/alice-1" {
		t.Error(m.Session())
	}
}

func TestAManifestThatIsNotJSONIsRefusedWhole(t *testing.T) {
	for _, bad := range []string{`{"a":1`, `{"a":1}x`, `{"a":"b}`, `[1,]`, `{"a" 1}`, ``, "{\"a\":\"line\nbreak\"}", `nul`, `[1]`, `"s"`} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	m, _ := Parse([]byte(`{}`))
	if m.Session() != "unknown" {
		t.Error("session of an empty manifest")
	}
}
