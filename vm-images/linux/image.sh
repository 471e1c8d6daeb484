#!/bin/sh
# Builds (or reuses) the Linux session image and prints its directory:
#   ${CODEBROWSE_CACHE:-$HOME/.cache/codebrowse}/image-linux-<key>/{disk.qcow2,disk.img,vmlinuz,initrd.img}
# <key> hashes everything that goes into it (these scripts, the package list, the agent and its
# service), so a change to any of them builds anew; an unchanged tree is reused (make image-linux).
# A lock makes a second caller wait for the first build instead of racing it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache=${CODEBROWSE_CACHE:-${HOME:-/root}/.cache/codebrowse}
# The guest agent, compiled (cached by a hash of its sources, which its directory's name carries).
agent=$(sh "$here/../agent/build.sh" | tail -n 1)
key=$({
  cat "$here/image.sh" "$here/build-image.sh" "$here/build-rootfs.sh" "$here/packages-image.txt" \
    "$here/install-agent.sh" "$here/codebrowse-agent.service"
  basename "$agent"
} | sha256sum | cut -c1-16)
out="$cache/image-linux-$key"
if [ -f "$out.ok" ]; then
  printf '%s\n' "$out"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$out.lock"
flock 9
if [ ! -f "$out.ok" ]; then
  start=$(date +%s)
  rm -rf "$out"
  CODEBROWSE_AGENT_BIN="$agent/codebrowse-agent-linux-amd64" sh "$here/build-image.sh" "$out" >&2
  # the raw disk is only the step to the qcow2 (the VM host and KubeVirt's containerDisk use it)
  if [ -f "$out/disk.qcow2" ]; then rm -f "$out/disk.img"; fi
  touch "$out.ok"
  echo "image.sh: built $out in $(($(date +%s) - start)) s" >&2
  for old in "$cache"/image-linux-*.ok; do
    old=${old%.ok}
    if [ "$old" = "$out" ] || [ ! -d "$old" ]; then continue; fi
    (flock -n 7 && rm -rf "$old" "$old.ok") 7>"$old.lock" && rm -f "$old.lock"
  done
fi
printf '%s\n' "$out"
