#!/usr/bin/env bash
# Prepare the guest side of the microVM runtimes (see docs/runtime.md, "Guest kernel"):
#   * installs (apt, as root) what is missing: qemu-system-x86, cpio, e2fsprogs, python3, and
#     for the kernel linux-source-6.1 and its build tools (or linux-image-cloud-amd64 + lz4);
#   * the kernel, one of:
#       vt (default)       vt's own guest kernel: Debian's linux-source-6.1 configured with
#                          `make allnoconfig` + guest/kernel/vt-guest-x86_64.config (everything
#                          built in, no modules), built once per (source version, config, build
#                          recipe, compiler) and cached in ${VT_KERNEL_CACHE:-/var/cache/vt/kernel}/<key>/;
#       debian             Debian's linux-image-cloud-amd64: the uncompressed vmlinux extracted
#                          from its LZ4 bzImage, and its virtio/overlay/vsock modules;
#   * builds vt-init (static, glibc) and an uncompressed newc initramfs holding it as /init,
#     /dev/console (char 5,1) and, for the Debian kernel only, the modules and the lists init
#     loads them from (/etc/vt/modules, modules.net, modules.vsock).
#
#   scripts/guest-kernel.sh [--debian-kernel]
#
# Output in ${VT_GUEST_DIR:-/var/cache/vt/guest}, the same files for both kernels: vmlinux,
# initramfs.cpio, kernel.release, modules.txt (empty for vt's kernel), kernel.features (`no-acpi`
# for vt's kernel: the qemu backend boots it with acpi=off). Idempotent; deterministic for the
# same kernel and vt-init binary.
#
# Env: VT_GUEST_DIR (output), VT_GUEST_KERNEL=vt|debian (default vt; --debian-kernel = debian),
#      VT_KERNEL_CACHE (vt kernel cache), VT_INIT_BIN (use this vt-init binary instead of
#      building it), VT_SKIP_APT=1 (never call apt-get), CARGO_TARGET_DIR (as usual).
set -euo pipefail

OUT=${VT_GUEST_DIR:-/var/cache/vt/guest}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIND=${VT_GUEST_KERNEL:-vt}
for a in "$@"; do
  case "$a" in
    --debian-kernel) KIND=debian ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "guest-kernel.sh: unknown argument '$a' (expected --debian-kernel)" >&2; exit 2 ;;
  esac
done
case "$KIND" in
  vt|debian) ;;
  *) echo "guest-kernel.sh: VT_GUEST_KERNEL=$KIND: expected vt or debian" >&2; exit 2 ;;
esac

# vt's kernel: the committed config fragment, the Debian source package it applies to.
KCONFIG_FRAGMENT=$ROOT/guest/kernel/vt-guest-x86_64.config
LINUX_SOURCE_PKG=linux-source-6.1
KERNEL_CACHE=${VT_KERNEL_CACHE:-/var/cache/vt/kernel}

# Debian's kernel: modules the guest needs, in no particular order (dependencies are resolved
# from modules.dep). BOOT ones are loaded by init on every boot (/etc/vt/modules); NET ones
# only when the instance has a network (/etc/vt/modules.net): each finit_module costs ~20 ms
# under TCG. VSOCK ones only when the VM has no virtio-console (Firecracker: the guest channel
# is vsock; /etc/vt/modules.vsock).
BOOT_MODS=(virtio_mmio virtio_blk virtio_console overlay)
NET_MODS=(virtio_net)
VSOCK_MODS=(vmw_vsock_virtio_transport)

need_pkgs=()
need_pkg() { dpkg -s "$1" >/dev/null 2>&1 || need_pkgs+=("$1"); }
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v mkfs.ext4 >/dev/null || need_pkgs+=(e2fsprogs)
[ -x /usr/bin/python3 ] || need_pkgs+=(python3)
if [ "$KIND" = vt ]; then
  for p in "$LINUX_SOURCE_PKG" gcc make flex bison bc libelf-dev libssl-dev xz-utils; do need_pkg "$p"; done
else
  command -v lz4 >/dev/null || need_pkgs+=(lz4)
  ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || need_pkgs+=(linux-image-cloud-amd64)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "${VT_SKIP_APT:-}" = 1 ]; then
    echo "guest-kernel.sh: missing packages: ${need_pkgs[*]}" >&2
    exit 1
  fi
  echo "guest-kernel.sh: installing ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2
fi

mkdir -p "$OUT"
TMP=$(mktemp -d "$OUT/.tmp.XXXXXX")
BUILD=
trap 'rm -rf "$TMP" ${BUILD:+"$BUILD"}' EXIT

# build_vt_kernel SRC_TARBALL DEST: configure and build vmlinux into DEST (vmlinux, config,
# kernel.release, build.log, build-seconds). Its text is part of the cache key: change it and
# the kernel is rebuilt (so messages are printed by the caller).
build_vt_kernel() {
  local tarball=$1 dest=$2 src=$BUILD/linux start
  start=$(date +%s)
  mkdir -p "$src"
  tar -xf "$tarball" -C "$src" --strip-components=1
  # Reproducible: no build user, host or date in the image.
  export KBUILD_BUILD_USER=vt KBUILD_BUILD_HOST=vt KBUILD_BUILD_TIMESTAMP=1970-01-01
  make -C "$src" -s allnoconfig KCONFIG_ALLCONFIG="$KCONFIG_FRAGMENT" >"$dest/build.log" 2>&1
  # Every symbol the fragment sets (or unsets) must end up so: an unmet dependency drops one
  # silently, a `select` turns one on.
  local line sym bad=0
  while IFS= read -r line; do
    sym=${line#\# }; sym=${sym%%[= ]*}
    if [ "${line:0:1}" = "#" ]; then
      ! grep -q "^$sym=" "$src/.config"
    else
      grep -qxF "$line" "$src/.config"
    fi || {
      echo "guest-kernel.sh: $KCONFIG_FRAGMENT: '$line' did not take (got: $(grep -E "^(# )?$sym[= ]" "$src/.config" || echo unset))" >&2
      bad=1
    }
  done < <(grep -E '^(CONFIG_[A-Z0-9_]+=|# CONFIG_[A-Z0-9_]+ is not set$)' "$KCONFIG_FRAGMENT")
  [ "$bad" = 0 ] || return 1
  make -C "$src" -j"$(nproc)" vmlinux >>"$dest/build.log" 2>&1 \
    || { tail -30 "$dest/build.log" >&2; echo "guest-kernel.sh: kernel build failed (log: $dest/build.log)" >&2; return 1; }
  make -C "$src" -s kernelrelease > "$dest/kernel.release"
  cp "$src/.config" "$dest/config"
  cp "$src/vmlinux" "$dest/vmlinux"
  echo "$(( $(date +%s) - start ))" > "$dest/build-seconds"
}

if [ "$KIND" = vt ]; then
  # 1. vmlinux from the cache, keyed by what determines it.
  TARBALL=/usr/src/$LINUX_SOURCE_PKG.tar.xz
  [ -f "$TARBALL" ] || { echo "guest-kernel.sh: no $TARBALL (package $LINUX_SOURCE_PKG)" >&2; exit 1; }
  [ -f "$KCONFIG_FRAGMENT" ] || { echo "guest-kernel.sh: no $KCONFIG_FRAGMENT" >&2; exit 1; }
  KEY=$( {
    echo "$LINUX_SOURCE_PKG $(dpkg-query -W -f='${Version}' "$LINUX_SOURCE_PKG")"
    cat "$KCONFIG_FRAGMENT"
    declare -f build_vt_kernel
    gcc --version | head -1
  } | sha256sum | cut -c1-16)
  CACHED=$KERNEL_CACHE/$KEY
  mkdir -p "$KERNEL_CACHE"
  exec 9>"$KERNEL_CACHE/.lock"
  flock 9 # one build at a time; a second caller then finds the cache filled
  if [ -f "$CACHED/vmlinux" ]; then
    echo "guest-kernel.sh: vt kernel $KEY cached ($CACHED)" >&2
  else
    BUILD=$(mktemp -d "$KERNEL_CACHE/.build-$KEY.XXXXXX")
    mkdir "$BUILD/out"
    echo "guest-kernel.sh: building vt's guest kernel $KEY (make -j$(nproc) vmlinux; ~14 min on 2 cores)" >&2
    build_vt_kernel "$TARBALL" "$BUILD/out"
    rm -rf "$CACHED"
    mv "$BUILD/out" "$CACHED"
    echo "guest-kernel.sh: vt kernel $KEY built in $(cat "$CACHED/build-seconds") s" >&2
  fi
  exec 9>&-
  KREL=$(cat "$CACHED/kernel.release")
  if ! cmp -s "$CACHED/vmlinux" "$OUT/vmlinux"; then
    cp "$CACHED/vmlinux" "$TMP/vmlinux"
    mv "$TMP/vmlinux" "$OUT/vmlinux"
  fi
else
  # 1. vmlinux: the newest installed cloud kernel; find the LZ4 frame (legacy magic 02 21 4c
  #    18) inside its bzImage and inflate it.
  VMLINUZ=$(ls -1 /boot/vmlinuz-*-cloud-amd64 | sort -V | tail -1)
  KREL=${VMLINUZ#/boot/vmlinuz-}
  MODDIR=/lib/modules/$KREL
  [ -f "$MODDIR/modules.dep" ] || { echo "no $MODDIR/modules.dep" >&2; exit 1; }
  if [ ! -f "$OUT/vmlinux" ] || [ "$(cat "$OUT/kernel.release" 2>/dev/null)" != "$KREL" ]; then
    off=$(LC_ALL=C grep -obUaP '\x02\x21\x4c\x18' "$VMLINUZ" | head -1 | cut -d: -f1)
    [ -n "$off" ] || { echo "no LZ4 payload in $VMLINUZ" >&2; exit 1; }
    # lz4 complains about the bzImage trailer after the frame; the output is complete.
    tail -c +$((off + 1)) "$VMLINUZ" | lz4 -dc > "$TMP/vmlinux" 2>/dev/null || true
    [ "$(head -c 4 "$TMP/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] \
      || { echo "extracted vmlinux is not an ELF file" >&2; exit 1; }
    mv "$TMP/vmlinux" "$OUT/vmlinux"
  fi
fi

# 2. vt-init, static.
if [ -n "${VT_INIT_BIN:-}" ]; then
  INIT=$VT_INIT_BIN
else
  TD=${CARGO_TARGET_DIR:-$ROOT/target}
  (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build -q --release -p vt-init --target x86_64-unknown-linux-gnu)
  INIT=$TD/x86_64-unknown-linux-gnu/release/vt-init
fi
file_out=$(file -b "$INIT" 2>/dev/null || true)
case "$file_out" in *dynamically*) echo "$INIT is dynamically linked" >&2; exit 1;; esac
strip -o "$TMP/init" "$INIT"

# 3. Debian's kernel: module load order, dependencies first (modules.dep lists them deepest
#    last), no repeats. vt's kernel has everything built in: no lists, init loads nothing.
: > "$TMP/modules.txt"
LISTS=()
if [ "$KIND" = debian ]; then
  declare -A seen=()
  resolve() { # resolve OUTFILE MODULE...
    local out=$1; shift
    : > "$out"
    local m line p i deps chain
    for m in "$@"; do
      line=$(grep -E "(^|/)$m\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | head -1) \
        || { echo "module $m not in $MODDIR/modules.dep (built in?)" >&2; continue; }
      read -r -a deps <<<"${line#*:}"
      chain=()
      for ((i=${#deps[@]}-1; i>=0; i--)); do chain+=("${deps[i]}"); done
      chain+=("${line%%:*}")
      for p in "${chain[@]}"; do
        [ -n "${seen[$p]:-}" ] && continue
        seen[$p]=1
        case "$p" in *.ko) ;; *) echo "compressed module $p not supported" >&2; exit 1;; esac
        echo "$p" >> "$out"
      done
    done
  }
  resolve "$TMP/modules.boot" "${BOOT_MODS[@]}"
  resolve "$TMP/modules.net" "${NET_MODS[@]}"
  resolve "$TMP/modules.vsock" "${VSOCK_MODS[@]}"
  cat "$TMP/modules.boot" "$TMP/modules.net" "$TMP/modules.vsock" > "$TMP/modules.txt"
  LISTS=("etc/vt/modules=$TMP/modules.boot" "etc/vt/modules.net=$TMP/modules.net"
         "etc/vt/modules.vsock=$TMP/modules.vsock")
fi

# 4. The initramfs (newc, uncompressed: nothing to inflate under TCG), written by a tiny
#    deterministic writer (cpio(1) cannot make /dev/console without root; mtimes are 0).
/usr/bin/python3 - "$TMP/initramfs.cpio" "$TMP/init" "${MODDIR:-}" "${LISTS[@]}" <<'PY'
import os, sys
out, init, moddir = sys.argv[1:4]
lists = []  # (list path in the initramfs, [module paths relative to moddir])
for arg in sys.argv[4:]:
    name, path = arg.split("=", 1)
    lists.append((name, [l.strip() for l in open(path) if l.strip()]))
entries = []  # (name, mode, data, rdevmajor, rdevminor)
dirs = ["dev", "etc", "proc", "sys", "run", "tmp", "vt", "vt/lower", "vt/scratch", "vt/root"]
if lists:
    dirs[2:2] = ["etc/vt", "lib", "lib/modules"]
for d in dirs:
    entries.append((d, 0o040755, b"", 0, 0))
entries.append(("dev/console", 0o020600, b"", 5, 1))
entries.append(("init", 0o100755, open(init, "rb").read(), 0, 0))
for listname, mods in lists:
    listing = ""
    for m in mods:
        name = "lib/modules/" + os.path.basename(m)
        entries.append((name, 0o100644, open(os.path.join(moddir, m), "rb").read(), 0, 0))
        listing += "/" + name + "\n"
    entries.append((listname, 0o100644, listing.encode(), 0, 0))
entries.append(("TRAILER!!!", 0, b"", 0, 0))
buf = bytearray()
for ino, (name, mode, data, maj, mi) in enumerate(entries, 1):
    nb = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 2 if mode & 0o040000 else 1, 0, len(data), 0, 0, maj, mi,
              len(nb), 0]
    if name == "TRAILER!!!":
        fields[0] = 0; fields[4] = 1
    buf += b"070701" + b"".join(b"%08X" % f for f in fields) + nb
    buf += b"\0" * (-len(buf) % 4)
    buf += data
    buf += b"\0" * (-len(buf) % 4)
buf += b"\0" * (-len(buf) % 512)
open(out, "wb").write(bytes(buf))
PY

mv "$TMP/initramfs.cpio" "$OUT/initramfs.cpio"
mv "$TMP/modules.txt" "$OUT/modules.txt"
# What the runtime must know of the kernel (crates/vt-runtime/src/qemu.rs, QemuConfig::acpi):
# vt's has no ACPI (QEMU boots it with acpi=off, devices on the command line).
if [ "$KIND" = vt ]; then echo no-acpi; fi > "$TMP/kernel.features"
mv "$TMP/kernel.features" "$OUT/kernel.features"
echo "$KREL" > "$OUT/kernel.release"
echo "guest kernel $KREL ($KIND) ready in $OUT:" >&2
ls -l "$OUT" >&2
