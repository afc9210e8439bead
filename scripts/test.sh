#!/usr/bin/env bash
# Run every test of the workspace, against real dependencies:
# PostgreSQL (a throwaway cluster on 127.0.0.1), e2fsprogs, busybox-static, skopeo.
#
#   scripts/test.sh [extra `cargo test` args...]
#
# Installs what is missing (Debian packages), starts PostgreSQL, runs
# `cargo test --workspace`, stops PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in build-essential pkg-config e2fsprogs busybox-static skopeo postgresql; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

eval "$(scripts/test-postgres.sh start)"
trap 'scripts/test-postgres.sh stop' EXIT
echo "PostgreSQL for tests: $VT_TEST_DATABASE_URL" >&2

# Two test binaries at a time: the machine has 2 cores and some tests boot servers.
cargo test --workspace --locked "$@" -- --test-threads=2
