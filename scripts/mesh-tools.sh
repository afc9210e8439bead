#!/usr/bin/env bash
# The mesh's userspace WireGuard for tests and nodes without the kernel module (docs/nodes.md):
# `boringtun-cli` from crates.io, built once per version into /var/cache/vt/boringtun-cli-<version>
# (about 1 minute on 2 cores, then cached), and Debian's `wireguard-tools` (`wg`) and
# `iputils-ping` (the tests ping through the tunnel).
#
#   export PATH="$(scripts/mesh-tools.sh):$PATH"
#
# Prints the directory holding `boringtun-cli` on stdout; everything else goes to stderr.
# The version is `vt_mesh::BORINGTUN_VERSION` (crates/vt-mesh/src/wg.rs): change both together.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

version=0.7.1
root=${VT_CACHE_DIR:-/var/cache/vt}/boringtun-cli-$version

ensure_packages wireguard-tools iputils-ping iproute2 build-essential >&2
cargo_on_path

if [ ! -x "$root/bin/boringtun-cli" ]; then
    echo "building boringtun-cli $version into $root (once per version)" >&2
    as_root mkdir -p "$(dirname "$root")"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # Its own target directory: nothing of the workspace's build is touched.
    CARGO_TARGET_DIR="$tmp/target" cargo install boringtun-cli --locked --version "$version" --root "$tmp/root" >&2
    as_root rm -rf "$root"
    as_root mv "$tmp/root" "$root"
fi
"$root/bin/boringtun-cli" --version >&2
echo "$root/bin"
