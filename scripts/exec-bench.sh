#!/usr/bin/env bash
# `vt exec` on a real microVM, the whole path (CLI → grant → WebSocket → agent → guest
# channel → vt-init): the round trip of `vt exec INSTANCE -- busybox true` over RUNS runs
# (p50, p95, max) and the throughput of MIB MiB of output through one session (`head -c` in
# the guest, counted by `wc -c` here).
#
#   scripts/exec-bench.sh [RUNS] [MIB]      # defaults: 20 100
#
# Uses target/release/vt (built if missing), a throwaway `vt server` on a free port with its
# own data directory, and the sample image (examples/hello/build.sh) running `sleep`. Needs
# what scripts/up.sh installs (QEMU and the guest kernel). Prints a table.
set -euo pipefail
RUNS=${1:-20}
MIB=${2:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ -x target/release/vt ] || cargo build --release -q -p vt
VT=$ROOT/target/release/vt
TMP=$(mktemp -d /tmp/vt-exec-bench.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cd "$TMP"
"$VT" server --data-dir "$TMP/data" --listen "127.0.0.1:$PORT" --no-ingress 2> server.log &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 300); do grep -q "ready on" server.log && break; sleep 0.1; done
export VT_SERVER=http://127.0.0.1:$PORT VT_DATA_DIR=$TMP/data VT_ORG=bench VT_APP=app VT_ENV=prod
"$VT" org create bench >/dev/null
"$VT" app create app >/dev/null
"$VT" env create prod >/dev/null
VT=$VT "$ROOT/examples/hello/build.sh" image >/dev/null
"$VT" image push ./image --repo bench/app --tag v1 >/dev/null
printf 'schema_version = 1\n\n[processes.web]\ncommand = ["sleep", "36000"]\n' > vt.toml
"$VT" deploy --wait --image bench/app:v1 --manifest vt.toml >/dev/null
INST=$("$VT" instances -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')

python3 - "$VT" "$INST" "$RUNS" "$MIB" <<'PY'
import math, subprocess, sys, time
vt, inst, runs, mib = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
trips = []
for _ in range(runs):
    t = time.monotonic()
    subprocess.run([vt, "exec", inst, "--", "busybox", "true"], check=True)
    trips.append(time.monotonic() - t)
trips.sort()
rank = lambda p: trips[min(len(trips), max(1, math.ceil(p * len(trips)))) - 1]  # nearest rank
t = time.monotonic()
out = subprocess.run(f"{vt} exec {inst} -- sh -c 'head -c {mib << 20} /dev/zero' | wc -c",
                     shell=True, check=True, capture_output=True, text=True).stdout.strip()
took = time.monotonic() - t
assert int(out) == mib << 20, f"received {out} bytes of {mib << 20}"
print(f"vt exec through vt server ({runs} round trips, {mib} MiB)")
print("| measure | value |\n| --- | --- |")
print(f"| `vt exec -- busybox true` p50 | {rank(0.5) * 1000:.0f} ms |")
print(f"| p95 | {rank(0.95) * 1000:.0f} ms |")
print(f"| max | {trips[-1] * 1000:.0f} ms |")
print(f"| {mib} MiB of output | {took:.2f} s, {mib / took:.1f} MiB/s |")
PY
