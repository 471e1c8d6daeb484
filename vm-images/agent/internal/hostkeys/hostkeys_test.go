package hostkeys

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestTwoGenerationsDifferAndParse(t *testing.T) {
	dir := t.TempDir()
	for _, old := range []string{"ssh_host_rsa_key", "ssh_host_rsa_key.pub", "ssh_host_dsa_key"} {
		os.WriteFile(filepath.Join(dir, old), []byte("old"), 0o600)
	}
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte("keep"), 0o644)
	first := map[string][]byte{}
	for round := 0; round < 2; round++ {
		written, err := Make(dir, "root@vm")
		if err != nil {
			t.Fatal(err)
		}
		if len(written) != 4 {
			t.Fatalf("%v", written)
		}
		for _, kind := range Kinds {
			priv := filepath.Join(dir, "ssh_host_"+kind+"_key")
			data, err := os.ReadFile(priv)
			if err != nil {
				t.Fatal(err)
			}
			signer, err := ssh.ParsePrivateKey(data)
			if err != nil {
				t.Fatalf("%s: %v", kind, err)
			}
			pubData, _ := os.ReadFile(priv + ".pub")
			pub, comment, _, _, err := ssh.ParseAuthorizedKey(pubData)
			if err != nil || comment != "root@vm" || !bytes.Equal(pub.Marshal(), signer.PublicKey().Marshal()) {
				t.Fatalf("%s.pub: %v %q", kind, err, comment)
			}
			if want := map[string]string{"ed25519": ssh.KeyAlgoED25519, "ecdsa": ssh.KeyAlgoECDSA256}[kind]; pub.Type() != want {
				t.Fatalf("%s is %s", kind, pub.Type())
			}
			if runtime.GOOS != "windows" {
				for p, mode := range map[string]os.FileMode{priv: 0o600, priv + ".pub": 0o644} {
					if st, _ := os.Stat(p); st.Mode().Perm() != mode {
						t.Fatalf("%s: %v", p, st.Mode())
					}
				}
			}
			if round == 0 {
				first[kind] = data
			} else if bytes.Equal(first[kind], data) {
				t.Fatalf("%s: the same key twice", kind)
			}
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(left) != 5 {
		t.Fatalf("files left: %v", left)
	}
}

func TestSSHDConfig(t *testing.T) {
	if NamesHostKey([]byte("#HostKey /etc/ssh/ssh_host_rsa_key\nPort 22\n")) {
		t.Error("a comment counted")
	}
	if !NamesHostKey([]byte("  hostkey /etc/ssh/k\n")) {
		t.Error("a HostKey line missed")
	}
	if got := SSHDConfig("/etc/ssh"); !bytes.Contains([]byte(got), []byte("HostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n")) {
		t.Error(got)
	}
}
