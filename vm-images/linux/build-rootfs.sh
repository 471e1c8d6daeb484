#!/bin/sh
# Builds (or reuses) a Debian bookworm root filesystem with debootstrap from the machine's own Debian
# mirror, and prints its path. The result is cached under
#   ${CODEBROWSE_CACHE:-$HOME/.cache/codebrowse}/rootfs/<profile>-<key>
# where <key> hashes this script and the profile's package list, so a change to either builds anew.
# A lock makes a second caller (another test worker) wait for the first build instead of racing it.
#
# Usage: build-rootfs.sh PROFILE        PROFILE: test (no kernel, for e2e/guest) | image (bootable)
# Env:   CODEBROWSE_CACHE            cache root
#        CODEBROWSE_DEBIAN_MIRROR    mirror URL (default: read from /etc/apt/sources.list*)
#        CODEBROWSE_DEBIAN_SUITE     default bookworm
# Needs: root, debootstrap, flock (util-linux), sha256sum, curl or wget.
set -eu

profile=${1:-}
here=$(cd "$(dirname "$0")" && pwd)
packages_file="$here/packages-$profile.txt"
if [ -z "$profile" ] || [ ! -f "$packages_file" ]; then
  echo "usage: $0 test|image" >&2
  exit 2
fi
suite=${CODEBROWSE_DEBIAN_SUITE:-bookworm}
cache=${CODEBROWSE_CACHE:-${HOME:-/root}/.cache/codebrowse}/rootfs
key=$(cat "$0" "$packages_file" | sha256sum | cut -c1-16)
out="$cache/$profile-$key"

say() { printf 'build-rootfs: %s\n' "$*" >&2; }
fail() {
  say "$*"
  exit 1
}

if [ -f "$out.ok" ]; then
  printf '%s\n' "$out"
  exit 0
fi
[ "$(id -u)" = 0 ] || fail "must run as root (debootstrap, chroot)"
command -v debootstrap >/dev/null || fail "debootstrap is not installed (apt-get install debootstrap)"
command -v flock >/dev/null || fail "flock is not installed (util-linux)"
mkdir -p "$cache"

# The mirror the machine's apt uses: deb822 (URIs:) or one-line (deb URL suite ...) sources.
detect_mirror() {
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      /^[ \t]*$/ { if (uri != "" && ok) { print uri; done = 1; exit } uri = ""; ok = 0; next }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
      END { if (!done && uri != "" && ok) print uri }' "$f"
  done | grep -v security | head -n 1
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '$1 == "deb" && $0 !~ /\[/ && $3 == suite { print $2; exit }
      $1 == "deb" && $0 ~ /\[/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1) == suite) print $i; break } }' "$f"
  done | head -n 1
}
mirror=${CODEBROWSE_DEBIAN_MIRROR:-$(detect_mirror | head -n 1)}
[ -n "$mirror" ] || fail "no Debian mirror for $suite in /etc/apt/sources.list*; set CODEBROWSE_DEBIAN_MIRROR"

exec 9>"$out.lock"
if ! flock -n 9; then
  say "another process is building $out; waiting for it"
  flock 9
fi
if [ -f "$out.ok" ]; then
  printf '%s\n' "$out"
  exit 0
fi

release="$mirror/dists/$suite/Release"
if command -v curl >/dev/null; then
  curl -fsS --max-time 30 -o /dev/null "$release" || fail "the Debian mirror $mirror is unreachable ($release)"
else
  wget -q -T 30 -O /dev/null "$release" || fail "the Debian mirror $mirror is unreachable ($release)"
fi

include=$(grep -v '^[[:space:]]*#' "$packages_file" | tr -s ' \n\t' ',' | sed 's/^,//; s/,$//')
tmp="$out.tmp"
rm -rf "$tmp"
start=$(date +%s)
say "debootstrap --variant=minbase $suite from $mirror into $tmp (profile $profile)"
# A private mount namespace: debootstrap's /proc and /sys mounts in the target vanish with it, even
# when it is killed half-way.
if ! unshare --mount --propagation private \
  debootstrap --variant=minbase --include="$include" "$suite" "$tmp" "$mirror" >"$out.log" 2>&1; then
  tail -n 30 "$out.log" >&2
  fail "debootstrap failed (whole log: $out.log)"
fi

# The image waits for its claim with ssh off: the agent enables it once the user exists.
rm -f "$tmp/etc/systemd/system/multi-user.target.wants/ssh.service" "$tmp/etc/systemd/system/sshd.service"
# Offline: no package lists or downloaded .debs in the image.
rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*_Packages "$tmp/var/lib/apt/lists/"*Release*
printf 'codebrowse\n' >"$tmp/etc/hostname"

mv "$tmp" "$out"
touch "$out.ok"
say "built $out in $(($(date +%s) - start)) s"
# Builds of this profile by older versions of the script or package list are garbage now (unless
# someone holds their lock).
for old in "$cache/$profile"-*.ok; do
  old=${old%.ok}
  if [ "$old" = "$out" ] || [ ! -d "$old" ]; then continue; fi
  (flock -n 7 && rm -rf "$old" "$old.ok" "$old.log") 7>"$old.lock" && rm -f "$old.lock"
done
printf '%s\n' "$out"
