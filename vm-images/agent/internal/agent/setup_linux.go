//go:build linux

package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"codebrowse.io/agent/internal/hostkeys"
	"codebrowse.io/agent/internal/settings"
)

// setup runs the setup steps in order; false when one failed.
func (a *Agent) setup(ctx context.Context) bool {
	a.setClock()
	ok := a.setHostname(ctx)
	ok = a.setAddress(ctx) && ok
	if a.createUser(ctx) {
		ok = a.grantSudo(ctx) && ok
	} else {
		ok = false
		a.user = nil
	}
	a.runMode = a.m.String("mode") == "Run"
	if a.runMode {
		start := time.Now()
		if a.sshEarly != "" {
			unit := strings.Fields(a.sshEarly)[0]
			a.run(ctx, nil, "systemctl", "disable", "--now", "--no-reload", unit+".service")
		}
		a.step("ssh", start, "not enabled: a test run needs no login")
	} else {
		ok = a.enableSSH(ctx) && ok
	}
	return ok
}

// lock: one agent at a time (a restart waits for a stray one).
func (a *Agent) lock() (func(), error) {
	f, err := os.OpenFile(a.state("agent.lock"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		a.log("another agent is running; waiting for it")
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
	}
	return func() { f.Close() }, nil
}

// readNoCloud: KubeVirt's cloudInitNoCloud disk (label cidata). Its user-data's CODEBROWSE_*=
// lines become the env file, so the image needs no cloud-init. A disk without settings (a golden
// image's boot) writes nothing: the next look reads it again.
func (a *Agent) readNoCloud() {
	for _, dev := range []string{"/dev/disk/by-label/cidata", "/dev/disk/by-label/CIDATA"} {
		if !exists(a.path(dev)) {
			continue
		}
		mnt := a.state("nocloud")
		_ = os.MkdirAll(mnt, 0o755)
		if err := a.Host.Mount(a.path(dev), mnt); err != nil {
			continue
		}
		for _, name := range []string{"user-data", "userdata"} {
			data, err := os.ReadFile(filepath.Join(mnt, name))
			if err != nil {
				continue
			}
			if lines := settings.FromUserData(data); lines != nil {
				_ = os.MkdirAll(filepath.Dir(a.S.Config), 0o755)
				if err := writeIfChanged(a.S.Config, lines, 0o600); err == nil {
					a.log("read the agent settings from the NoCloud disk %s into %s", dev, a.S.Config)
				}
			}
			break
		}
		_ = a.Host.Unmount(mnt)
		return
	}
}

// beforeClaim: what a VM does once it has its settings, before it asks for a session: its own
// MAC (a VM restored from a memory snapshot), the pool network's NIC left to the agent, and its
// own ssh host keys (made now, so a warm VM has them before it is claimed).
func (a *Agent) beforeClaim(ctx context.Context) {
	a.adoptMAC(ctx)
	a.lanUnmanaged(ctx, a.S.LANMAC)
	if !exists(a.state("hostkeys.done")) && executable(a.path("/usr/sbin/sshd")) {
		start := time.Now()
		if err := a.makeHostKeys(); err != nil {
			a.log("could not make the ssh host keys: %v (the ssh step tries again)", err)
		} else {
			a.log("made this VM's ssh host keys (%s) in %d ms", strings.Join(hostkeys.Kinds, ", "), time.Since(start).Milliseconds())
		}
	}
	// sshd started now, before the first poll, so a warm VM has it running before its claim
	// (starting it cost a claim 7-9 s under software emulation). Before a claim no account can log
	// in (root has no password, there is no session user yet); a test run stops it again.
	if exists(a.state("hostkeys.done")) && executable(a.path("/usr/sbin/sshd")) && isDir(a.path("/run/systemd/system")) {
		start := time.Now()
		if how, ok := a.enableService(ctx, "ssh", "sshd"); ok {
			a.sshEarly = how
			a.log("%s before the claim (%d ms)", how, time.Since(start).Milliseconds())
		}
	}
}

// makeHostKeys: host keys made once per VM (VMs cloned from one image or snapshot must not share
// them), and sshd told to use exactly them when its config names none (else it looks for an RSA
// key too, and complains).
func (a *Agent) makeHostKeys() error {
	comment := "root@" + a.Host.Hostname()
	if _, err := hostkeys.Make(a.path("/etc/ssh"), comment); err != nil {
		return err
	}
	config, _ := os.ReadFile(a.path("/etc/ssh/sshd_config"))
	if isDir(a.path("/etc/ssh/sshd_config.d")) && !hostkeys.NamesHostKey(config) {
		if err := writeIfChanged(a.path("/etc/ssh/sshd_config.d/codebrowse-hostkeys.conf"), []byte(hostkeys.SSHDConfig("/etc/ssh")), 0o644); err != nil {
			return err
		}
	}
	return touch(a.state("hostkeys.done"))
}

// run runs a command for a setup step: its status and output (stdout and stderr).
func (a *Agent) run(ctx context.Context, stdin []byte, name string, args ...string) (int, string) {
	var out bytes.Buffer
	status, err := a.Host.Run(ctx, Command{Name: name, Args: args, Stdin: stdin, Output: &out})
	if err != nil {
		return 127, err.Error()
	}
	return status, out.String()
}

var macPattern = regexp.MustCompile(`^[0-9a-f]{2}(:[0-9a-f]{2}){5}$`)

// nicByMAC is the NIC with MAC mac (lower case), or "".
func (a *Agent) nicByMAC(mac string) string {
	devs, _ := filepath.Glob(a.path("/sys/class/net/*"))
	for _, dev := range devs {
		if strings.ToLower(firstLine(filepath.Join(dev, "address"))) == mac {
			return filepath.Base(dev)
		}
	}
	return ""
}

// adoptMAC: a guest restored from a memory snapshot wakes with the snapshot's MAC address and
// DHCP lease, shared by every VM restored from it: it takes its own MAC and a lease of its own.
func (a *Agent) adoptMAC(ctx context.Context) {
	if a.S.MAC == "" {
		return
	}
	mac := strings.ToLower(a.S.MAC)
	if !macPattern.MatchString(mac) {
		a.log("refused the invalid CODEBROWSE_MAC %q", a.S.MAC)
		return
	}
	iface := ""
	devs, _ := filepath.Glob(a.path("/sys/class/net/*"))
	for _, dev := range devs {
		name := filepath.Base(dev)
		if name == "lo" || !exists(filepath.Join(dev, "address")) {
			continue
		}
		if firstLine(filepath.Join(dev, "address")) == mac {
			return
		}
		if iface == "" {
			iface = name
		}
	}
	if iface == "" {
		return
	}
	if status, out := a.run(ctx, nil, "ip", "link", "set", "dev", iface, "address", mac); status != 0 {
		a.log("could not set the MAC %s on %s: %s", mac, iface, strings.TrimSpace(out))
		return
	}
	// A new lease for the new MAC (the image's networkd identifies DHCP clients by MAC).
	if status, _ := a.run(ctx, nil, "networkctl", "reconfigure", iface); status != 0 {
		a.run(ctx, nil, "networkctl", "renew", iface)
	}
	var got []string
	for i := 0; i < 30; i++ {
		got = a.globalIPv4(iface)
		if len(got) > 0 {
			break
		}
		a.sleep(ctx, time.Second)
	}
	a.log("set this VM's MAC %s on %s (restored from a memory snapshot): %s", mac, iface, strings.Join(got, " "))
}

func (a *Agent) globalIPv4(iface string) []string {
	addrs, _ := a.Host.Addresses(iface)
	var out []string
	for _, ip := range addrs {
		if ip.To4() != nil && ip.IsGlobalUnicast() {
			out = append(out, ip.String())
		}
	}
	return out
}

// writeProc sets a kernel parameter (sysctl -w), quietly.
func (a *Agent) writeProc(key, value string) {
	_ = os.WriteFile(a.path("/proc/sys/"+strings.ReplaceAll(key, ".", "/")), []byte(value), 0o644)
}

// lanUnmanaged: the pool network's NIC is the agent's, not networkd's: no DHCP there (a LAN's
// DHCP server must not hand the VM an address of its own), and nothing networkd would later
// remove. Run at every start, before the claim: /run is empty after a boot.
func (a *Agent) lanUnmanaged(ctx context.Context, lanMAC string) {
	if lanMAC == "" {
		return
	}
	mac := strings.ToLower(lanMAC)
	if !macPattern.MatchString(mac) {
		a.log("refused the invalid CODEBROWSE_LAN_MAC %q", mac)
		return
	}
	dir := a.path("/run/systemd/network")
	if isDir(dir) || os.MkdirAll(dir, 0o755) == nil {
		unit := fmt.Sprintf("[Match]\nMACAddress=%s\n\n[Link]\nUnmanaged=yes\n", mac)
		file := filepath.Join(dir, "10-codebrowse-lan.network")
		if old, err := os.ReadFile(file); err != nil || string(old) != unit {
			if os.WriteFile(file, []byte(unit), 0o644) == nil {
				a.run(ctx, nil, "networkctl", "reload")
			}
		}
	}
	nic := a.nicByMAC(mac)
	if nic == "" {
		a.log("no NIC with the pool network's MAC %s (yet)", mac)
		return
	}
	// Only the NIC that holds an address answers ARP for it (not the pod network's, for the LAN's).
	a.writeProc("net.ipv4.conf.all.arp_ignore", "1")
	a.writeProc("net.ipv4.conf.all.arp_announce", "2")
	a.run(ctx, nil, "ip", "link", "set", nic, "up")
}

var hostnamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$`)

// setHostname: kernel name = first label, /etc/hostname, /etc/hosts (<ip> <fqdn> <short>); files
// are written only when they differ.
func (a *Agent) setHostname(ctx context.Context) bool {
	start := time.Now()
	fqdn, ok := a.m.Get("hostname")
	if !ok {
		a.step("hostname", start, "none in the manifest; left as it is")
		return true
	}
	fqdn = strings.TrimSuffix(fqdn, ".")
	if !hostnamePattern.MatchString(fqdn) || len(fqdn) > 253 {
		a.step("hostname", start, "refused the invalid name %q", fqdn)
		return false
	}
	short, _, _ := strings.Cut(fqdn, ".")
	_ = writeIfChanged(a.path("/etc/hostname"), []byte(short+"\n"), 0o644)
	if a.Host.Hostname() != short {
		_ = a.Host.SetHostname(short)
	}
	addr := "127.0.1.1"
	if ip, ok := a.m.Get("ip"); ok {
		addr, _, _ = strings.Cut(ip, "/")
	}
	var hosts strings.Builder
	for _, line := range a.readLines("/etc/hosts") {
		if line == "" || strings.HasSuffix(line, "# codebrowse") || isLoopbackName(line) {
			continue
		}
		hosts.WriteString(line + "\n")
	}
	if short == fqdn {
		fmt.Fprintf(&hosts, "%s\t%s # codebrowse\n", addr, fqdn)
	} else {
		fmt.Fprintf(&hosts, "%s\t%s %s # codebrowse\n", addr, fqdn, short)
	}
	_ = writeIfChanged(a.path("/etc/hosts"), []byte(hosts.String()), 0o644)
	a.step("hostname", start, "%s (kernel: %s)", fqdn, a.Host.Hostname())
	return true
}

func isLoopbackName(line string) bool {
	rest, ok := strings.CutPrefix(line, "127.0.1.1")
	return ok && rest != "" && strings.ContainsAny(rest[:1], " \t\v\f\r")
}

var addressPattern = regexp.MustCompile(`^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$|^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*/[0-9]{1,3}$`)

func onlyChars(s, set string) bool {
	for _, c := range s {
		if !strings.ContainsRune(set, c) {
			return false
		}
	}
	return true
}

// setAddress: the session's address on the pool network's NIC (manifest network.mac), with the
// prefix of the pool's range; replies from it leave through its gateway (a routing table of its
// own: the pod network's NIC keeps the main default route, to the portal); its DNS servers; then
// announced: gratuitous ARP and one broadcast ping to the subnet (switches that cache ARP learn
// the new MAC), or for IPv6 an unsolicited neighbour advertisement (ndisc_notify).
func (a *Agent) setAddress(ctx context.Context) bool {
	start := time.Now()
	addr, ok := a.m.Get("network.address")
	if !ok {
		addr, ok = a.m.Get("ip")
	}
	if !ok {
		a.step("address", start, "none in the manifest; left as it is")
		return true
	}
	addr, _, _ = strings.Cut(addr, "/")
	length, ok := a.m.Get("network.prefixLength")
	if !ok {
		a.step("address", start, "the manifest gives %s no network.prefixLength: not set", addr)
		return false
	}
	if !addressPattern.MatchString(addr + "/" + length) {
		a.step("address", start, "refused the invalid address %q", addr+"/"+length)
		return false
	}
	if !a.Host.Has("ip") {
		a.step("address", start, "ip (iproute2) is not installed: %s not set", addr)
		return false
	}
	mac := strings.ToLower(a.m.String("network.mac"))
	if !macPattern.MatchString(mac) {
		a.step("address", start, "the manifest names no valid network.mac: %s not set", addr)
		return false
	}
	a.lanUnmanaged(ctx, mac)
	iface := a.nicByMAC(mac)
	if iface == "" {
		a.step("address", start, "no NIC with MAC %s (the pool network's): %s not set", mac, addr)
		return false
	}
	gw := a.m.String("network.gateway")
	if !onlyChars(gw, "0123456789abcdefABCDEF:.") {
		a.step("address", start, "refused the invalid gateway %q", gw)
		return false
	}
	fam := "-4"
	if strings.Contains(addr, ":") {
		fam = "-6"
		a.writeProc("net.ipv6.conf."+iface+".ndisc_notify", "1")
		a.writeProc("net.ipv6.conf."+iface+".accept_ra", "0")
	}
	a.run(ctx, nil, "ip", "link", "set", iface, "up")
	var how string
	if a.hasAddress(iface, addr) {
		how = "already on " + iface
	} else {
		// Only the session's address: nothing a DHCP client may have put there before the claim.
		a.run(ctx, nil, "ip", fam, "addr", "flush", "dev", iface, "scope", "global")
		if status, out := a.run(ctx, nil, "ip", fam, "addr", "add", addr+"/"+length, "dev", iface); status != 0 {
			a.step("address", start, "ip addr add %s/%s dev %s failed: %s", addr, length, iface, strings.TrimRight(out, "\n"))
			return false
		}
		how = fmt.Sprintf("on %s (%s) as /%s", iface, mac, length)
	}
	if gw != "" {
		_, routes := a.run(ctx, nil, "ip", "-o", fam, "route", "show", "dev", iface, "scope", "link", "proto", "kernel")
		if fields := strings.Fields(routes); len(fields) > 0 {
			a.run(ctx, nil, "ip", fam, "route", "replace", fields[0], "dev", iface, "table", "100")
		}
		if status, out := a.run(ctx, nil, "ip", fam, "route", "replace", "default", "via", gw, "dev", iface, "table", "100"); status == 0 {
			if _, rules := a.run(ctx, nil, "ip", fam, "rule", "show"); !strings.Contains(rules, "from "+addr+" lookup 100") {
				a.run(ctx, nil, "ip", fam, "rule", "add", "from", addr, "lookup", "100", "priority", "100")
			}
			how += "; replies leave by " + gw
		} else {
			how += fmt.Sprintf("; no route by %s (%s)", gw, strings.TrimRight(out, "\n"))
		}
	}
	var dns []string
	for _, d := range a.m.Strings("network.dns") {
		if onlyChars(d, "0123456789abcdefABCDEF:.") {
			dns = append(dns, d)
		}
	}
	if len(dns) > 0 && a.Host.Has("resolvectl") {
		if status, _ := a.run(ctx, nil, "resolvectl", append([]string{"dns", iface}, dns...)...); status == 0 {
			how += "; DNS " + strings.Join(dns, " ")
		}
	}
	if fam == "-6" {
		how += "; unsolicited neighbour advertisement after DAD (ndisc_notify)"
		if a.Host.Has("ndisc6") {
			a.run(ctx, nil, "ndisc6", "-q", "-1", addr, iface)
		}
	} else {
		a.announce(ctx, iface, addr)
		how += "; announced beside the next steps"
	}
	a.step("address", start, "%s %s", addr, how)
	return true
}

// announce tells the LAN of the address (gratuitous ARP, and a broadcast ping so neighbours learn
// it) in the background: arping waits a second between its two packets and ping a second for its
// answer, which the user and package steps need not wait for. The agent waits for it before it
// says done (waitAnnounced), so a Ready session has been announced.
func (a *Agent) announce(ctx context.Context, iface, addr string) {
	bc := a.m.String("network.broadcast")
	if !onlyChars(bc, "0123456789.") {
		bc = ""
	}
	done := make(chan string, 1)
	a.announcing = done
	go func() {
		start := time.Now()
		arp := make(chan string, 1)
		go func() {
			if a.Host.Has("arping") {
				if status, _ := a.run(ctx, nil, "arping", "-U", "-c", "2", "-I", iface, addr); status == 0 {
					arp <- "gratuitous ARP sent"
					return
				}
			}
			arp <- "no gratuitous ARP (arping missing or failed)"
		}()
		text := ""
		if bc != "" {
			a.run(ctx, nil, "ping", "-b", "-c", "1", "-W", "1", "-I", iface, bc)
			text = "; broadcast ping to " + bc
		}
		done <- fmt.Sprintf("%s%s (%d ms)", <-arp, text, time.Since(start).Milliseconds())
	}()
}

func (a *Agent) hasAddress(iface, addr string) bool {
	want := net.ParseIP(addr)
	addrs, _ := a.Host.Addresses(iface)
	for _, ip := range addrs {
		if want != nil && ip.Equal(want) {
			return true
		}
	}
	return false
}

var userPattern = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// createUser: useradd -m, the password via chpasswd, or ~/.ssh/authorized_keys with the password
// field "*" (no password matches; "!" would make sshd refuse the keys).
func (a *Agent) createUser(ctx context.Context) bool {
	start := time.Now()
	name, ok := a.m.Get("user")
	if !ok {
		a.step("user", start, "none in the manifest")
		return false
	}
	if !userPattern.MatchString(name) || name == "root" {
		a.step("user", start, "refused the invalid user name %q", name)
		return false
	}
	acc, found := a.lookupUser(name)
	var how string
	switch {
	case exists(a.state("user-"+name+".done")) && found:
		if exists(a.session("login.done")) {
			a.user = acc
			a.step("user", start, "%s (made before)", name)
			return true
		}
		// Made for another session (a VM restored from an archive): this session's login is set.
		how = "made before"
	case found:
		// Never hand out a system account (a session user named like a daemon).
		if acc.UID < 1000 {
			a.step("user", start, "refused: %s is a system account of this image", name)
			return false
		}
		how = "exists already"
	default:
		shell := "/bin/sh"
		if executable(a.path("/bin/bash")) {
			shell = "/bin/bash"
		}
		if status, out := a.run(ctx, nil, "useradd", "-m", "-s", shell, "-c", "codebrowse session user", name); status != 0 {
			a.step("user", start, "useradd %s failed: %s", name, lastBytes(out, 300))
			return false
		}
		if acc, found = a.lookupUser(name); !found {
			a.step("user", start, "useradd %s made no user", name)
			return false
		}
		how = "created"
	}
	password, _ := a.m.Get("password")
	if password != "" {
		if strings.Contains(password, "\n") {
			a.step("user", start, "refused a password with a line break")
			return false
		}
		// Set only when it changed (a digest of the last one set, root only): a new session of
		// the same user with the same password leaves /etc/shadow alone.
		sum := sha256.Sum256([]byte(password))
		digest := hex.EncodeToString(sum[:])
		sumFile := filepath.Join(a.priv(), "password-"+name+".sha256")
		if firstLine(sumFile) == digest {
			how += ", password as before"
		} else if status, out := a.run(ctx, []byte(name+":"+password+"\n"), "chpasswd"); status != 0 {
			a.step("user", start, "chpasswd failed: %s", strings.TrimRight(out, "\n"))
			return false
		} else {
			_ = os.WriteFile(sumFile, []byte(digest+"\n"), 0o600)
			how += ", password set"
		}
	}
	if n := a.m.Count("sshKeys"); n > 0 {
		var keys strings.Builder
		for _, k := range a.m.Strings("sshKeys") {
			// One key a line: a line break inside a key could smuggle in another key or options.
			keys.WriteString(strings.NewReplacer("\r", "", "\n", "").Replace(k) + "\n")
		}
		sshDir := filepath.Join(a.path(acc.Home), ".ssh")
		_ = os.MkdirAll(sshDir, 0o700)
		_ = writeIfChanged(filepath.Join(sshDir, "authorized_keys"), []byte(keys.String()), 0o600)
		_ = a.Host.ChownTree(sshDir, acc.UID, acc.GID)
		_ = os.Chmod(sshDir, 0o700)
		_ = os.Chmod(filepath.Join(sshDir, "authorized_keys"), 0o600)
		// No password: "*" (no password can match) rather than "!" (locked, which sshd refuses).
		if field, _ := a.shadowPassword(name); password == "" && field != "*" {
			a.run(ctx, nil, "usermod", "-p", "*", name)
		}
		how += fmt.Sprintf(", %d ssh key(s)", n)
	}
	_ = touch(a.state("user-" + name + ".done"))
	_ = touch(a.session("login.done"))
	a.user = acc
	a.step("user", start, "%s %s", name, how)
	return true
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// grantSudo: /etc/sudoers.d/codebrowse-<user>, checked with visudo -c under a dotted name (which
// sudo's includedir skips) before it is moved in place.
func (a *Agent) grantSudo(ctx context.Context) bool {
	start := time.Now()
	name := a.user.Name
	file := "/etc/sudoers.d/codebrowse-" + name
	if exists(a.state("sudo-"+name+".done")) && exists(a.path(file)) {
		a.step("sudo", start, "%s (made before)", file)
		return true
	}
	if !isDir(a.path("/etc/sudoers.d")) {
		a.step("sudo", start, "no /etc/sudoers.d (sudo not installed?)")
		return false
	}
	tmp := a.path("/etc/sudoers.d/.codebrowse-" + name + ".new")
	rule := fmt.Sprintf("# the codebrowse session user: it is their VM\n%s ALL=(ALL:ALL) NOPASSWD: ALL\n", name)
	_ = os.Remove(tmp)
	if err := os.WriteFile(tmp, []byte(rule), 0o440); err != nil {
		a.step("sudo", start, "cannot write %s: %v", tmp, err)
		return false
	}
	_ = os.Chmod(tmp, 0o440)
	if a.Host.Has("visudo") {
		if status, out := a.run(ctx, nil, "visudo", "-c", "-q", "-f", tmp); status != 0 {
			_ = os.Remove(tmp)
			a.step("sudo", start, "visudo -c refused the rule: %s", strings.TrimRight(out, "\n"))
			return false
		}
	}
	if err := os.Rename(tmp, a.path(file)); err != nil {
		a.step("sudo", start, "cannot move the rule in place: %v", err)
		return false
	}
	_ = touch(a.state("sudo-" + name + ".done"))
	a.step("sudo", start, "%s", file)
	return true
}

// enableService enables (and, on a running system, starts) the first of units that the image
// has; it says how, or false.
func (a *Agent) enableService(ctx context.Context, units ...string) (string, bool) {
	for _, unit := range units {
		known := exists(a.path("/lib/systemd/system/"+unit+".service")) || exists(a.path("/usr/lib/systemd/system/"+unit+".service"))
		if !known && a.Host.Has("systemctl") {
			status, _ := a.run(ctx, nil, "systemctl", "cat", unit+".service")
			known = status == 0
		}
		switch {
		case known && isDir(a.path("/run/systemd/system")):
			// --no-reload: the unit is known already; a daemon reload took most of the 10 s this step
			// cost a claim under software emulation.
			if status, _ := a.run(ctx, nil, "systemctl", "enable", "--now", "--no-reload", unit+".service"); status == 0 {
				return unit + " enabled and started", true
			}
		case known:
			if status, _ := a.run(ctx, nil, "systemctl", "enable", unit+".service"); status == 0 {
				return unit + " enabled (systemd not running here)", true
			}
		case executable(a.path("/etc/init.d/" + unit)):
			a.Host.Run(ctx, Command{Name: "update-rc.d", Args: []string{unit, "enable"}})
			// Output to /dev/null: the daemon it starts keeps its descriptors.
			if status, err := a.Host.Run(ctx, Command{Name: "/etc/init.d/" + unit, Args: []string{"start"}}); err == nil && status == 0 {
				return unit + " started (init.d)", true
			}
		}
	}
	return "", false
}

// enableSSH: the ssh service enabled and started (only enabled when systemd is not running, as
// in a chroot); telnet through inetd when the image has a telnetd.
func (a *Agent) enableSSH(ctx context.Context) bool {
	start := time.Now()
	ok := true
	if executable(a.path("/usr/sbin/sshd")) {
		if !exists(a.state("hostkeys.done")) {
			if err := a.makeHostKeys(); err != nil {
				a.step("ssh", start, "making the host keys failed: %v", err)
				return false
			}
		}
		if a.sshEarly != "" {
			a.step("ssh", start, "%s before the claim; fresh host keys", a.sshEarly)
		} else if how, enabled := a.enableService(ctx, "ssh", "sshd"); enabled {
			a.step("ssh", start, "%s; fresh host keys", how)
		} else {
			a.step("ssh", start, "could not enable the ssh service")
			return false
		}
	} else {
		a.step("ssh", start, "no openssh-server on this image")
	}
	if executable(a.path("/usr/sbin/in.telnetd")) || executable(a.path("/usr/sbin/telnetd")) {
		start = time.Now()
		how, enabled := a.enableService(ctx, "inetd", "openbsd-inetd", "inetutils-inetd", "xinetd")
		if !enabled {
			how = "could not enable inetd"
		}
		a.step("telnet", start, "%s", how)
	}
	return ok
}
