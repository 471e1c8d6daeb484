// Package hostkeys makes a VM's ssh host keys in-process: ed25519 and ECDSA P-256 (no RSA, no
// ssh-keygen), in OpenSSH's formats, so that clones of one image never share them. The agent
// makes them once per VM as soon as it has its settings, before the claim: a warm VM has them
// when its user first connects.
package hostkeys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Kinds are the key types made, by their file name part (ssh_host_<kind>_key).
var Kinds = []string{"ed25519", "ecdsa"}

func generate(kind string) (crypto.PrivateKey, crypto.PublicKey, error) {
	switch kind {
	case "ed25519":
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, pub, err
	case "ecdsa":
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		return priv, &priv.PublicKey, nil
	}
	return nil, nil, fmt.Errorf("no key kind %q", kind)
}

// Make removes every ssh_host_*_key (and .pub) in dir, RSA's too, and writes a fresh ed25519 and
// ECDSA key: the private key 0600 (OpenSSH format), the public one 0644 (authorized_keys format,
// with comment). It returns the files it wrote.
func Make(dir, comment string) ([]string, error) {
	old, _ := filepath.Glob(filepath.Join(dir, "ssh_host_*_key"))
	pubs, _ := filepath.Glob(filepath.Join(dir, "ssh_host_*_key.pub"))
	for _, f := range append(old, pubs...) {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			return nil, err
		}
	}
	var written []string
	for _, kind := range Kinds {
		priv, pub, err := generate(kind)
		if err != nil {
			return written, err
		}
		block, err := ssh.MarshalPrivateKey(priv, comment)
		if err != nil {
			return written, err
		}
		sshPub, err := ssh.NewPublicKey(pub)
		if err != nil {
			return written, err
		}
		line := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(sshPub)), "\n")
		if comment != "" {
			line += " " + comment
		}
		path := filepath.Join(dir, "ssh_host_"+kind+"_key")
		if err := writeFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			return written, err
		}
		written = append(written, path)
		if err := writeFile(path+".pub", []byte(line+"\n"), 0o644); err != nil {
			return written, err
		}
		written = append(written, path+".pub")
	}
	return written, nil
}

// writeFile writes a new file next to path and renames it over: a crash leaves the old or the new.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".codebrowse-new"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode) // whatever the umask
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// SSHDConfig is the drop-in that makes sshd use exactly these keys, for a config that names no
// HostKey itself (then sshd would look for RSA's too, and complain that it is missing).
func SSHDConfig(dir string) string {
	var b strings.Builder
	b.WriteString("# codebrowse: this VM's host keys, made by its agent (no RSA key)\n")
	for _, kind := range Kinds {
		fmt.Fprintf(&b, "HostKey %s\n", filepath.ToSlash(filepath.Join(dir, "ssh_host_"+kind+"_key")))
	}
	return b.String()
}

// NamesHostKey says whether an sshd_config text has a HostKey line of its own.
func NamesHostKey(config []byte) bool {
	for _, line := range strings.Split(string(config), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 0 && strings.EqualFold(fields[0], "HostKey") {
			return true
		}
	}
	return false
}
