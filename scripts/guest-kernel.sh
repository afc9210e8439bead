#!/usr/bin/env bash
# Prepare the guest side of the qemu runtime (see docs/runtime.md):
#   * installs (apt, as root) what is missing: Debian's linux-image-cloud-amd64, qemu-system-x86,
#     lz4, cpio, e2fsprogs, python3;
#   * extracts the uncompressed vmlinux from the LZ4 bzImage (PVH entry: faster boot);
#   * builds vt-init (static, glibc) and an uncompressed newc initramfs holding it as /init,
#     /dev/console (char 5,1), the virtio/overlay modules and /etc/vt/modules (load order).
#
# Output in ${VT_GUEST_DIR:-/var/cache/vt/guest}: vmlinux, initramfs.cpio, kernel.release,
# modules.txt. Idempotent; deterministic for the same kernel and vt-init binary.
#
# Env: VT_GUEST_DIR (output), VT_INIT_BIN (use this vt-init binary instead of building it),
#      VT_SKIP_APT=1 (never call apt-get), CARGO_TARGET_DIR (as usual).
set -euo pipefail

OUT=${VT_GUEST_DIR:-/var/cache/vt/guest}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Modules the guest needs, in no particular order: dependencies are resolved from modules.dep.
# BOOT ones are loaded by init on every boot (/etc/vt/modules); NET ones only when the instance
# has a network (/etc/vt/modules.net): each finit_module costs ~20 ms under TCG.
BOOT_MODS=(virtio_mmio virtio_blk virtio_console overlay)
NET_MODS=(virtio_net)
# VSOCK ones only when the VM has no virtio-console (Firecracker: the guest channel is vsock;
# /etc/vt/modules.vsock).
VSOCK_MODS=(vmw_vsock_virtio_transport)

need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
command -v lz4 >/dev/null || need_pkgs+=(lz4)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v mkfs.ext4 >/dev/null || need_pkgs+=(e2fsprogs)
[ -x /usr/bin/python3 ] || need_pkgs+=(python3)
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || need_pkgs+=(linux-image-cloud-amd64)
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

# The newest installed cloud kernel.
VMLINUZ=$(ls -1 /boot/vmlinuz-*-cloud-amd64 | sort -V | tail -1)
KREL=${VMLINUZ#/boot/vmlinuz-}
MODDIR=/lib/modules/$KREL
[ -f "$MODDIR/modules.dep" ] || { echo "no $MODDIR/modules.dep" >&2; exit 1; }
mkdir -p "$OUT"
TMP=$(mktemp -d "$OUT/.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# 1. vmlinux: find the LZ4 frame (legacy magic 02 21 4c 18) inside the bzImage and inflate it.
if [ ! -f "$OUT/vmlinux" ] || [ "$(cat "$OUT/kernel.release" 2>/dev/null)" != "$KREL" ]; then
  off=$(LC_ALL=C grep -obUaP '\x02\x21\x4c\x18' "$VMLINUZ" | head -1 | cut -d: -f1)
  [ -n "$off" ] || { echo "no LZ4 payload in $VMLINUZ" >&2; exit 1; }
  # lz4 complains about the bzImage trailer after the frame; the output is complete.
  tail -c +$((off + 1)) "$VMLINUZ" | lz4 -dc > "$TMP/vmlinux" 2>/dev/null || true
  [ "$(head -c 4 "$TMP/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] \
    || { echo "extracted vmlinux is not an ELF file" >&2; exit 1; }
  mv "$TMP/vmlinux" "$OUT/vmlinux"
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

# 3. Module load order: dependencies first (modules.dep lists them deepest last), no repeats.
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

# 4. The initramfs (newc, uncompressed: nothing to inflate under TCG), written by a tiny
#    deterministic writer (cpio(1) cannot make /dev/console without root; mtimes are 0).
/usr/bin/python3 - "$TMP/initramfs.cpio" "$TMP/init" "$MODDIR" "$TMP/modules.boot" "$TMP/modules.net" "$TMP/modules.vsock" <<'PY'
import os, sys
out, init, moddir, boot, net, vsock = sys.argv[1:]
lists = [("etc/vt/modules", [l.strip() for l in open(boot) if l.strip()]),
         ("etc/vt/modules.net", [l.strip() for l in open(net) if l.strip()]),
         ("etc/vt/modules.vsock", [l.strip() for l in open(vsock) if l.strip()])]
entries = []  # (name, mode, data, rdevmajor, rdevminor)
for d in ["dev", "etc", "etc/vt", "lib", "lib/modules", "proc", "sys", "run", "tmp",
          "vt", "vt/lower", "vt/scratch", "vt/root"]:
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
echo "$KREL" > "$OUT/kernel.release"
echo "guest kernel $KREL ready in $OUT:" >&2
ls -l "$OUT" >&2
