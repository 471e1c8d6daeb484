//go:build windows

package agent

import (
	"context"
	"crypto/des"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"

	"codebrowse.io/agent/internal/hostkeys"
	"codebrowse.io/agent/internal/settings"
)

// The Windows steps are codebrowse-agent.ps1's: hostname (effective at the next restart), the
// address (Windows announces it itself), a local user in Administrators and Remote Desktop Users
// (ssh keys in administrators_authorized_keys), RDP and sshd enabled, the TightVNC password.
// Accounts and services are made with net, sc, netsh and icacls, as a person would at a prompt.
func (a *Agent) setup(ctx context.Context) bool {
	a.setClock()
	ok := a.setHostname(ctx)
	ok = a.setAddress(ctx) && ok
	if !a.createUser(ctx) {
		ok = false
		a.user = nil
	}
	a.runMode = a.m.String("mode") == "Run"
	if a.runMode {
		a.step("ssh", time.Now(), "not enabled: a test run needs no login")
	} else {
		a.enableRemote(ctx)
		a.setVNCPassword(ctx)
	}
	if a.user != nil {
		_ = os.MkdirAll(a.path(a.user.Home), 0o755)
	}
	return ok
}

func (a *Agent) lock() (func(), error) {
	f, err := os.OpenFile(a.state("agent.lock"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	h := windows.Handle(f.Fd())
	ol := new(windows.Overlapped)
	if err := windows.LockFileEx(h, windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol); err != nil {
		a.log("another agent is running; waiting for it")
		if err := windows.LockFileEx(h, windows.LOCKFILE_EXCLUSIVE_LOCK, 0, 1, 0, ol); err != nil {
			f.Close()
			return nil, err
		}
	}
	return func() { f.Close() }, nil
}

// readNoCloud: the NoCloud volume (label cidata) Windows mounted on a drive letter.
func (a *Agent) readNoCloud() {
	for letter := 'D'; letter <= 'Z'; letter++ {
		root := string(letter) + `:\`
		p, _ := windows.UTF16PtrFromString(root)
		label := make([]uint16, 261)
		if windows.GetVolumeInformation(p, &label[0], uint32(len(label)), nil, nil, nil, nil, 0) != nil {
			continue
		}
		if l := windows.UTF16ToString(label); !strings.EqualFold(l, "cidata") {
			continue
		}
		for _, name := range []string{"user-data", "userdata"} {
			data, err := os.ReadFile(root + name)
			if err != nil {
				continue
			}
			if lines := settings.FromUserData(data); lines != nil {
				_ = os.MkdirAll(filepath.Dir(a.S.Config), 0o755)
				if writeIfChanged(a.S.Config, lines, 0o600) == nil {
					a.log("read the agent settings from the NoCloud disk into %s", a.S.Config)
				}
			}
			return
		}
	}
}

// beforeClaim: this VM's own ssh host keys (when OpenSSH Server is installed), before the claim.
func (a *Agent) beforeClaim(ctx context.Context) {
	dir := filepath.Join(os.Getenv("ProgramData"), "ssh")
	if exists(a.state("hostkeys.done")) || !isDir(a.path(dir)) {
		return
	}
	written, err := hostkeys.Make(a.path(dir), "SYSTEM@"+a.Host.Hostname())
	if err != nil {
		a.log("could not make the ssh host keys: %v", err)
		return
	}
	// sshd refuses a private key that others may read.
	for _, f := range written {
		if !strings.HasSuffix(f, ".pub") {
			a.run(ctx, "icacls.exe", f, "/inheritance:r", "/grant", "SYSTEM:F", "/grant", "*S-1-5-32-544:F")
		}
	}
	_ = touch(a.state("hostkeys.done"))
	a.log("made this VM's ssh host keys (%s)", strings.Join(hostkeys.Kinds, ", "))
}

func (a *Agent) run(ctx context.Context, name string, args ...string) (int, string) {
	var out strings.Builder
	status, err := a.Host.Run(ctx, Command{Name: name, Args: args, Output: &out})
	if err != nil {
		return -1, err.Error()
	}
	return status, out.String()
}

func (a *Agent) setHostname(ctx context.Context) bool {
	start := time.Now()
	fqdn := a.m.String("hostname")
	if fqdn == "" {
		a.step("hostname", start, "none in the manifest")
		return true
	}
	short, _, _ := strings.Cut(fqdn, ".")
	if len(short) > 15 {
		short = short[:15] // NetBIOS names
	}
	if strings.EqualFold(os.Getenv("COMPUTERNAME"), short) {
		a.step("hostname", start, "%s (already)", short)
		return true
	}
	if err := a.Host.SetHostname(short); err != nil {
		a.step("hostname", start, "renaming the computer failed: %v", err)
		return false
	}
	a.step("hostname", start, "%s (takes effect at the next restart; DNS uses %s)", short, fqdn)
	return true
}

// setAddress: the session's address on the pool network's adapter (manifest network.mac), with
// the pool range's prefix, its gateway (a route of that adapter only, behind the pod network's)
// and DNS servers.
func (a *Agent) setAddress(ctx context.Context) bool {
	start := time.Now()
	address := a.m.String("network.address")
	if address == "" {
		a.step("address", start, "none in the manifest")
		return true
	}
	address, _, _ = strings.Cut(address, "/")
	prefix := a.m.String("network.prefixLength")
	if prefix == "" {
		a.step("address", start, "the manifest gives %s no network.prefixLength", address)
		return false
	}
	mac, err := net.ParseMAC(a.m.String("network.mac"))
	if err != nil || len(mac) != 6 {
		a.step("address", start, "the manifest names no valid network.mac")
		return false
	}
	ip := net.ParseIP(address)
	var bits int
	if _, err := fmt.Sscanf(prefix, "%d", &bits); ip == nil || err != nil {
		a.step("address", start, "refused the invalid address %q", address+"/"+prefix)
		return false
	}
	ifaces, _ := net.Interfaces()
	var adapter *net.Interface
	for i := range ifaces {
		if ifaces[i].HardwareAddr.String() == mac.String() {
			adapter = &ifaces[i]
			break
		}
	}
	if adapter == nil {
		a.step("address", start, "no adapter with MAC %s (the pool network's)", a.m.String("network.mac"))
		return false
	}
	if addrs, _ := a.Host.Addresses(adapter.Name); containsIP(addrs, ip) {
		a.step("address", start, "%s already on %s", address, adapter.Name)
		return true
	}
	family := "ipv4"
	if ip.To4() == nil {
		family = "ipv6"
	}
	var status int
	var out string
	if family == "ipv4" {
		mask := net.IP(net.CIDRMask(bits, 32)).String()
		status, out = a.run(ctx, "netsh", "interface", "ipv4", "add", "address", adapter.Name, address, mask)
	} else {
		status, out = a.run(ctx, "netsh", "interface", "ipv6", "add", "address", adapter.Name, address+"/"+prefix)
	}
	if status != 0 {
		a.step("address", start, "setting %s failed: %s", address, strings.TrimSpace(out))
		return false
	}
	how := fmt.Sprintf("%s/%s on %s", address, prefix, adapter.Name)
	if gw := a.m.String("network.gateway"); gw != "" {
		dest := "0.0.0.0/0"
		if family == "ipv6" {
			dest = "::/0"
		}
		// A higher metric than the pod network's: the portal stays reachable the way it was.
		a.run(ctx, "netsh", "interface", family, "add", "route", dest, adapter.Name, gw, "metric=500")
		how += "; gateway " + gw
	}
	if dns := a.m.Strings("network.dns"); len(dns) > 0 {
		a.run(ctx, "netsh", "interface", family, "set", "dnsservers", adapter.Name, "static", dns[0], "primary")
		for _, d := range dns[1:] {
			a.run(ctx, "netsh", "interface", family, "add", "dnsservers", adapter.Name, d)
		}
		how += "; DNS " + strings.Join(dns, " ")
	}
	if bc := a.m.String("network.broadcast"); bc != "" {
		// One broadcast ping to the subnet; Windows sends the gratuitous ARP itself (DAD).
		a.run(ctx, "ping.exe", "-n", "1", "-w", "1000", "-S", address, bc)
		how += "; broadcast ping to " + bc
	}
	a.step("address", start, "%s; Windows announces the address itself", how)
	return true
}

// localUser says whether Windows has a local account name.
func localUser(name string) bool {
	p, err := windows.UTF16PtrFromString(name)
	if err != nil {
		return false
	}
	var info *byte
	if windows.NetUserGetInfo(nil, p, 0, &info) != nil {
		return false
	}
	_ = windows.NetApiBufferFree(info)
	return true
}

func containsIP(addrs []net.IP, ip net.IP) bool {
	for _, a := range addrs {
		if a.Equal(ip) {
			return true
		}
	}
	return false
}

var windowsUser = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,19}$`)

// createUser: a local user in Administrators and Remote Desktop Users, with the manifest's
// password (or, for a key-only user, a long random one nobody knows), the ssh keys in
// administrators_authorized_keys when OpenSSH Server is installed. Whether the account exists is
// asked of Windows (NetUserGetInfo), before and after net makes it, never taken from net's exit
// status alone: Wine's net has no "user" command, prints its usage and exits 0.
func (a *Agent) createUser(ctx context.Context) bool {
	start := time.Now()
	name := a.m.String("user")
	if !windowsUser.MatchString(name) {
		a.step("user", start, "refused the user name '%s'", name)
		return false
	}
	home := filepath.Join(os.Getenv("SystemDrive")+`\`, "Users", name)
	account := &Account{Name: name, Home: home}
	if a.S.SkipAccount {
		a.user = account
		a.step("user", start, "%s not made: CODEBROWSE_SKIP_ACCOUNT=1 (a test switch); its packages go to %s", name, home)
		return true
	}
	marker := a.state("user-" + name + ".done")
	known := localUser(name)
	if exists(marker) && known && exists(a.session("login.done")) {
		a.user = account
		a.step("user", start, "%s (made before)", name)
		return true
	}
	password := a.m.String("password")
	if password == "" {
		random := make([]byte, 24)
		_, _ = rand.Read(random)
		password = base64.StdEncoding.EncodeToString(random) + "aA1!"
	}
	var how string
	if known {
		// /y: net asks before it sets a password over 14 characters (for Windows before 2000).
		if status, out := a.run(ctx, "net", "user", name, password, "/y"); status != 0 {
			a.step("user", start, "setting the password of %s failed: %s", name, strings.TrimSpace(out))
			return false
		}
		how = "exists already, password set"
	} else {
		status, out := a.run(ctx, "net", "user", name, password, "/add", "/fullname:codebrowse session user", "/passwordchg:no", "/y")
		if status != 0 {
			a.step("user", start, "creating %s failed: %s", name, strings.TrimSpace(out))
			return false
		}
		if !localUser(name) {
			said, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
			a.step("user", start, "creating %s failed: net exited 0 but Windows knows no such account (net said: %s)", name, strings.TrimSpace(said))
			return false
		}
		how = "created"
	}
	a.run(ctx, "wmic", "useraccount", "where", "name='"+name+"'", "set", "PasswordExpires=false")
	for _, group := range []string{"Administrators", "Remote Desktop Users"} {
		a.run(ctx, "net", "localgroup", group, name, "/add")
	}
	if keys := a.m.Strings("sshKeys"); len(keys) > 0 {
		// Administrators' keys live in one file that only SYSTEM and Administrators may read.
		file := filepath.Join(os.Getenv("ProgramData"), "ssh", "administrators_authorized_keys")
		var b strings.Builder
		for _, k := range keys {
			b.WriteString(strings.NewReplacer("\r", "", "\n", "").Replace(k) + "\r\n")
		}
		_ = os.MkdirAll(filepath.Dir(a.path(file)), 0o755)
		_ = os.WriteFile(a.path(file), []byte(b.String()), 0o600)
		a.run(ctx, "icacls.exe", a.path(file), "/inheritance:r", "/grant", "SYSTEM:F", "/grant", "*S-1-5-32-544:F")
		how += fmt.Sprintf(", %d ssh key(s)", len(keys))
	}
	_ = touch(marker)
	_ = touch(a.session("login.done"))
	a.user = account
	a.step("user", start, "%s %s", name, how)
	return true
}

// enableRemote: sshd enabled and started when OpenSSH Server is installed; RDP allowed.
func (a *Agent) enableRemote(ctx context.Context) {
	start := time.Now()
	if status, _ := a.run(ctx, "sc.exe", "query", "sshd"); status == 0 {
		a.run(ctx, "sc.exe", "config", "sshd", "start=", "auto")
		a.run(ctx, "sc.exe", "start", "sshd")
		a.step("ssh", start, "sshd enabled and started")
	} else {
		a.step("ssh", start, "no OpenSSH Server on this image")
	}
	if k, err := registry.OpenKey(registry.LOCAL_MACHINE, `System\CurrentControlSet\Control\Terminal Server`, registry.SET_VALUE); err == nil {
		_ = k.SetDWordValue("fDenyTSConnections", 0)
		k.Close()
	}
	a.run(ctx, "netsh", "advfirewall", "firewall", "set", "rule", "group=remote desktop", "new", "enable=Yes")
}

// vncKey is VNC's fixed DES key (its bits already reversed, as VNC uses it).
var vncKey = []byte{23, 82, 107, 6, 35, 78, 88, 7}

// setVNCPassword: TightVNC keeps its password DES-encrypted with VNC's fixed key (8 characters
// at most).
func (a *Agent) setVNCPassword(ctx context.Context) {
	start := time.Now()
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, `SOFTWARE\TightVNC\Server`, registry.SET_VALUE)
	if err != nil {
		a.step("vnc", start, "no VNC server in the image: the console is KubeVirt's VNC through the portal")
		return
	}
	defer k.Close()
	password := a.m.String("password")
	if password == "" {
		a.step("vnc", start, "no password in the manifest: VNC left as it is")
		return
	}
	a.step("vnc", start, "%s", setVNC(k, password, func() {
		a.run(ctx, "sc.exe", "stop", "tvnserver")
		a.run(ctx, "sc.exe", "start", "tvnserver")
	}))
}

func setVNC(k registry.Key, password string, restart func()) string {
	plain := make([]byte, 8)
	copy(plain, password)
	block, _ := des.NewCipher(vncKey)
	cipher := make([]byte, 8)
	block.Encrypt(cipher, plain)
	if err := k.SetBinaryValue("Password", cipher); err != nil {
		return "setting the TightVNC password failed: " + err.Error()
	}
	_ = k.SetDWordValue("UseVncAuthentication", 1)
	restart()
	if len(password) > 8 {
		return "TightVNC password set (VNC uses its first 8 characters)"
	}
	return "TightVNC password set"
}
