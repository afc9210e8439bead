#!/usr/bin/env bash
# Install what is missing, build `vt`, and start the platform on this machine:
# `vt server` with the embedded SQLite store in ./.vt (or $VT_DATA_DIR).
#
#   scripts/up.sh [extra `vt server` flags...]
#
# Needs a Debian 12 machine (root or sudo for apt). Idempotent: a second run
# installs nothing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

# Build tools (gcc for the bundled SQLite) and e2fsprogs (mkfs.ext4 for root disks).
ensure_packages build-essential pkg-config e2fsprogs ca-certificates curl iproute2 nftables busybox-static jq procps restic
ensure_npm    # the web console is built into the binary (docs/console.md)

# Rust: Debian's packaged cargo is too old for this workspace; use rustup's stable.
cargo_on_path
if ! command -v cargo >/dev/null 2>&1; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
fi

cargo build --release --locked -p vt

# The guest side of the microVM runtime (kernel, QEMU, initramfs with vt-init):
# the node agent inside `vt server` boots instances with it.
template=()
if [ "$(id -u)" = 0 ]; then
    scripts/guest-kernel.sh
    # The default workspace template (docs/workspaces.md): built once (minutes), then a cache hit.
    layout=$(VT=target/release/vt scripts/workspace-template.sh)
    template=(--workspace-template "$layout")
else
    echo "warning: run 'sudo scripts/guest-kernel.sh' once so the node agent can boot microVMs" >&2
    echo "warning: run 'sudo scripts/workspace-template.sh' and pass --workspace-template DIR for 'vt workspace create'" >&2
fi
echo "starting: target/release/vt server ${template[*]} $*" >&2
exec target/release/vt server "${template[@]}" "$@"
