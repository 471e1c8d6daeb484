#!/bin/sh
# Makes a debootstrap tree (build-rootfs.sh image) a codebrowse session image: the guest agent as a
# systemd service, DHCP on the first NIC (the address of a claim is added by the agent), a login on
# the serial console, ssh off until the claim, and nothing that two VMs cloned from it must not
# share (machine-id, ssh host keys).
# Usage: install-agent.sh ROOT
set -eu
root=${1:?usage: install-agent.sh ROOT}
here=$(cd "$(dirname "$0")" && pwd)
lib="$root/usr/local/lib/codebrowse-agent"

mkdir -p "$lib" "$root/etc/codebrowse"
chmod 0700 "$root/etc/codebrowse"
# The compiled agent (vm-images/agent/build.sh), for the image's architecture.
bin=${CODEBROWSE_AGENT_BIN:-$(sh "$here/../agent/build.sh" | tail -n 1)/codebrowse-agent-linux-amd64}
install -m 0755 "$bin" "$lib/codebrowse-agent"
cp "$here/codebrowse-agent.service" "$root/etc/systemd/system/codebrowse-agent.service"

cat >"$root/etc/systemd/network/80-codebrowse-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=yes

[DHCPv4]
# By MAC, not by machine-id: VMs restored from one memory snapshot share a machine-id.
ClientIdentifier=mac
NET

# Online as soon as one link is (the pod network's, by DHCP). By default wait-online waits for
# every managed link, and the pool network's NIC gets no DHCP answer (the agent sets its address):
# the agent, ordered after network-online.target, started only at wait-online's 2-minute timeout —
# after a warm VM was paused, so every warm claim waited for it.
mkdir -p "$root/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat >"$root/etc/systemd/system/systemd-networkd-wait-online.service.d/codebrowse-any.conf" <<'WAIT'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any
WAIT

# KubeVirt's guest agent after codebrowse's: KubeVirt reports AgentConnected when qemu-guest-agent
# answers, and the warm pool pauses a VM then; so it is paused with the agent's pre-claim work done
# (host keys, sshd running), not in the middle of it, which the claim would then wait for.
mkdir -p "$root/etc/systemd/system/qemu-guest-agent.service.d"
cat >"$root/etc/systemd/system/qemu-guest-agent.service.d/codebrowse-after-agent.conf" <<'QGA'
[Unit]
After=codebrowse-agent.service
QGA

printf '/dev/vda\t/\text4\trw,relatime\t0\t1\n' >"$root/etc/fstab"
ln -sf /run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
printf 'codebrowse\n' >"$root/etc/hostname"

# systemctl enable works offline in a chroot (it only makes the symlinks).
chroot "$root" systemctl enable codebrowse-agent.service systemd-networkd.service \
  systemd-networkd-wait-online.service systemd-resolved.service serial-getty@ttyS0.service >/dev/null 2>&1
chroot "$root" systemctl disable ssh.service >/dev/null 2>&1 || :

# Per-VM identity is made at first boot (machine-id) or by the agent when it gets its settings,
# before it is claimed (host keys).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*
rm -rf "$root/var/lib/codebrowse-agent" "$root/var/log/codebrowse-agent.log"
