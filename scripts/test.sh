#!/usr/bin/env bash
# Run every test of the workspace, against real dependencies:
# PostgreSQL (a throwaway cluster on 127.0.0.1), e2fsprogs, busybox-static, skopeo,
# WireGuard (wireguard-tools, boringtun-cli: scripts/mesh-tools.sh) in network namespaces,
# and real microVMs: QEMU with vt's guest kernel and our initramfs (scripts/guest-kernel.sh: the
# kernel is built from Debian's linux-source-6.1 on the first run, ~14 min on 2 cores, then cached).
#
#   scripts/test.sh [extra `cargo test` args...]
#
# Installs what is missing (Debian packages), checks formatting and lints
# (`cargo fmt --check`, `cargo clippy -D warnings`), starts PostgreSQL, runs
# `cargo test --workspace`, stops PostgreSQL, builds and runs the default workspace
# template (scripts/workspace-template-test.sh; docs/workspaces.md), then holds a real
# `vt server` to its OpenAPI document with schemathesis (scripts/schemathesis.sh; docs/api.md).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
ensure_packages build-essential pkg-config e2fsprogs busybox-static skopeo postgresql iproute2 nftables curl jq procps python3 bsdutils restic \
    chromium chromium-driver    # the console's browser test (docs/console.md)
ensure_npm                      # the web console is built into the binary
cargo_on_path

# rustfmt and clippy come with rustup's default profile; add them where a minimal one was installed.
for c in rustfmt clippy; do
    cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$c"
done

# Style and lints first: they fail in seconds, the suite takes minutes.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# The guest kernel (built once per kernel config, then cached), vmlinux and the initramfs with a
# freshly built vt-init.
scripts/guest-kernel.sh

# The mesh's tests (crates/vt-mesh, crates/vt-agent/tests/mesh.rs): wg, ping, and boringtun-cli
# (this machine's kernel has no WireGuard), built once per version (about 1 minute) and cached.
PATH="$(scripts/mesh-tools.sh):$PATH"
export PATH

eval "$(scripts/test-postgres.sh start)"
trap 'scripts/test-postgres.sh stop' EXIT
echo "PostgreSQL for tests: $VT_TEST_DATABASE_URL" >&2

# The console's unit tests (its client-side logic; docs/console.md).
(cd console && npm ci --no-audit --no-fund --loglevel=error && npm test)

# Two tests at a time in each test binary: the machine has 2 cores and many tests start servers.
cargo test --workspace --locked "$@" -- --test-threads=2

# The default workspace template (docs/workspaces.md): built from the package registries when its
# pins or script changed (about 5 minutes; cached in /var/cache/vt/workspace-template), then
# code-server run from the image's unpacked layer (about 40 s). `vt image build` is the vt that
# the tests above built.
vt_bin=${CARGO_TARGET_DIR:-target}/debug/vt
[ -x "$vt_bin" ] || cargo build -p vt --locked
VT=$vt_bin scripts/workspace-template-test.sh

# The API against api/openapi.json: every operation, zero failures (a few minutes at most).
scripts/schemathesis.sh
