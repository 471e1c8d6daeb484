#!/bin/sh
# Builds the codebrowse Linux session image from the machine's Debian mirror:
#   OUT/disk.img     a BIOS-bootable disk: one partition (ext4, label codebrowse-root) and GRUB
#                    (OUT/disk.qcow2 too when qemu-img is installed: what a containerDisk carries)
#   OUT/vmlinuz, OUT/initrd.img   for direct kernel boot (root=LABEL=codebrowse-root)
# Boot it with QEMU (RECIPES.md) or import it into KubeVirt (vm-images/linux/kubevirt/).
# Usage: build-image.sh OUT
# Needs: root, debootstrap, e2fsprogs (mke2fs -d).
set -eu
out=${1:?usage: build-image.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
size_mib=${CODEBROWSE_IMAGE_MIB:-3072}
label=codebrowse-root

base=$(sh "$here/build-rootfs.sh" image)
mkdir -p "$out"
out=$(cd "$out" && pwd)
tree="$out/rootfs.tmp"
rm -rf "$tree"
cp -a "$base" "$tree"
sh "$here/install-agent.sh" "$tree"
printf 'LABEL=%s\t/\text4\trw,relatime\t0\t1\n' "$label" >"$tree/etc/fstab"

kernel="" initrd=""
for f in "$tree"/boot/vmlinuz-*; do kernel=${f##*/}; done
for f in "$tree"/boot/initrd.img-*; do initrd=${f##*/}; done
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
  echo "no kernel in $tree/boot" >&2
  exit 1
fi
cp "$tree/boot/$kernel" "$out/vmlinuz"
cp "$tree/boot/$initrd" "$out/initrd.img"
# GRUB for BIOS boot, without grub-install (it needs the disk's partitions as block devices, which
# not every build machine has): the modules go to /boot/grub/i386-pc, core.img (with what it needs
# to find /boot) goes in the gap after the MBR, boot.img's code in the MBR.
mkdir -p "$tree/boot/grub/i386-pc"
cp "$tree"/usr/lib/grub/i386-pc/*.mod "$tree"/usr/lib/grub/i386-pc/*.lst "$tree/boot/grub/i386-pc/"
cat >"$tree/boot/grub/grub.cfg" <<GRUB
set timeout=0
menuentry 'codebrowse session' {
  linux /boot/$kernel root=LABEL=$label rw console=tty0 console=ttyS0,115200 quiet
  initrd /boot/$initrd
}
GRUB
chroot "$tree" grub-mkimage -O i386-pc -o /core.img -p '(hd0,msdos1)/boot/grub' \
  biosdisk part_msdos ext2 normal linux configfile search search_label echo
mv "$tree/core.img" "$out/core.img.tmp"

# A little-endian 32-bit number as printf escapes.
le32() {
  printf '\\%03o\\%03o\\%03o\\%03o' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255))
}

# An MBR with one bootable Linux partition from 1 MiB to the end (written by hand: no fdisk
# needed); its file system is made straight from the tree (no mount).
disk="$out/disk.img"
rm -f "$disk"
truncate -s "${size_mib}M" "$disk"
sectors=$((size_mib * 2048 - 2048))
mke2fs -q -t ext4 -L "$label" -E offset=1048576 -d "$tree" "$disk" "$((size_mib - 1))M"
rm -rf "$tree"
# shellcheck disable=SC2059 # the format is made of escapes on purpose
printf "\\200\\376\\377\\377\\203\\376\\377\\377$(le32 2048)$(le32 "$sectors")" |
  dd of="$disk" bs=1 seek=446 conv=notrunc status=none
printf '\125\252' | dd of="$disk" bs=1 seek=510 conv=notrunc status=none

if [ "$(wc -c <"$out/core.img.tmp")" -ge $((2047 * 512)) ]; then
  echo "GRUB's core.img does not fit before 1 MiB" >&2
  exit 1
fi
dd if="$base/usr/lib/grub/i386-pc/boot.img" of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$out/core.img.tmp" of="$disk" bs=512 seek=1 conv=notrunc status=none
rm -f "$out/core.img.tmp"
if command -v qemu-img >/dev/null 2>&1; then
  qemu-img convert -O qcow2 "$disk" "$out/disk.qcow2"
fi
echo "built the image in $out (disk.img, vmlinuz, initrd.img$([ -f "$out/disk.qcow2" ] && echo ', disk.qcow2'))" >&2
