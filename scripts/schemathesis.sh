#!/usr/bin/env bash
# Schemathesis against a real `vt server`, with the committed OpenAPI document
# (api/openapi.json): every operation, with the checks
#   not_a_server_error, status_code_conformance, response_schema_conformance, negative_data_rejection
# and zero failures allowed. scripts/test.sh runs it after `cargo test`.
#
#   scripts/schemathesis.sh
#
# Environment: VT_SCHEMATHESIS_EXAMPLES (default 50, per operation and phase; about 30 s),
# VT_SCHEMATHESIS_SEED (default fixed below, so CI is reproducible; `random` for a new one),
# CARGO_TARGET_DIR (where `vt` is built and the virtualenv lives; default target/).
#
# Schemathesis 4.32.5 from PyPI, in a virtualenv under the target directory (installed when
# missing). The command it runs, with the server's address and token filled in:
#
#   st --config-file <tmp>/schemathesis.toml run api/openapi.json --url http://127.0.0.1:PORT \
#     --checks not_a_server_error,status_code_conformance,response_schema_conformance,negative_data_rejection \
#     --phases examples,coverage,fuzzing,stateful --max-examples 50 --seed 20251 \
#     --workers 2 --request-timeout 15 --no-shrink
#
# The server is `vt server --no-agent --no-ingress --no-workspace-origin` in a fresh data directory on a free
# loopback port. Before the run this script makes what the operations need to find
# (org `acme`, app `web`, env `prod`, a release, a deploy, node `node-1` with the instance
# placed on it, a route, a token to revoke, a volume with a snapshot) through the API with the
# admin token, and pins
# the path parameters to them (`[parameters]` below), so requests reach past the lookups.
# Two query parameters are pinned for time only: `follow=false` (a follow stream never ends)
# and `wait_ms=0` on a node's instances (a long poll waits up to 20 s); the Rust tests cover
# both (crates/vt-control-plane/tests/{api,strict}.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
cargo_on_path
command -v python3 >/dev/null && command -v curl >/dev/null || ensure_packages python3 python3-venv curl

SCHEMATHESIS_VERSION=4.32.5
examples=${VT_SCHEMATHESIS_EXAMPLES:-50}
seed=${VT_SCHEMATHESIS_SEED:-20251}
target=${CARGO_TARGET_DIR:-target}

# The virtualenv with schemathesis, made or upgraded when it is not this version.
venv="$target/schemathesis-venv"
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
    python3 -m venv "$venv" 2>/dev/null || { ensure_packages python3-venv python3-pip; python3 -m venv "$venv"; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --locked -p vt
vt="$target/debug/vt"

work=$(mktemp -d /tmp/vt-schemathesis.XXXXXX)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port: bind :0, read it, let it go.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
"$vt" server --no-agent --no-ingress --no-workspace-origin --sqlite-sync normal --data-dir "$work/data" --listen "127.0.0.1:$port" \
    2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do
    grep -q "vt server ready" "$work/server.log" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "vt server did not start" >&2; exit 1; }
    sleep 0.1
done
token=$(cat "$work/data/admin-token")

# api METHOD PATH [JSON]: the answer's body; fails on an HTTP error.
api() {
    local out
    out=$(curl -sS --fail-with-body -X "$1" -H "authorization: Bearer $token" -H 'content-type: application/json' \
        ${3:+--data "$3"} "$base$2") || { echo "setup: $1 $2 failed: $out" >&2; return 1; }
    printf '%s' "$out"
}
field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

api POST /v1/orgs '{"name": "acme"}' >/dev/null
api POST /v1/orgs/acme/apps '{"name": "web"}' >/dev/null
api POST /v1/orgs/acme/apps/web/envs '{"name": "prod"}' >/dev/null
node=$(api POST /v1/nodes '{"name": "node-1", "capacity": {"cpu_millis": 64000, "memory_mib": 262144}}' | field '["id"]')
release_body=$(python3 -c 'import json; print(json.dumps({
    "image": "acme/web@sha256:" + "a" * 64,
    "manifest": "schema_version = 1\n\n[processes.web]\nports = [{ name = \"http\", port = 8080 }]\nscaling = { min = 1, max = 3 }\n",
}))')
release=$(api POST /v1/orgs/acme/apps/web/releases "$release_body" | field '["id"]')
deploy=$(api POST /v1/orgs/acme/apps/web/envs/prod/deploys "{\"release_id\": \"$release\"}" | field '["id"]')
route=$(api POST /v1/orgs/acme/apps/web/envs/prod/routes \
    '{"hostname": "www.example.com", "process": "web", "backend_port": 8080}' | field '["id"]')
doomed=$(api POST /v1/tokens '{"name": "doomed", "role": "viewer", "org": "acme"}' | field '["id"]')
volume=$(api POST /v1/orgs/acme/apps/web/envs/prod/volumes '{"name": "data", "size_gib": 1, "node": "node-1"}' |
    field '["id"]')
snapshot=$(api POST "/v1/orgs/acme/apps/web/envs/prod/volumes/$volume/snapshots" | field '["id"]')
instance=
for _ in $(seq 100); do
    instance=$(api GET /v1/orgs/acme/apps/web/envs/prod/instances |
        python3 -c 'import json, sys; items = json.load(sys.stdin)["items"]; print(items[0]["id"] if items else "")')
    [ -n "$instance" ] && break
    sleep 0.1
done
[ -n "$instance" ] || { echo "the scheduler placed no instance on node-1" >&2; exit 1; }

cat >"$work/schemathesis.toml" <<EOF
headers = { Authorization = "Bearer $token" }

# Invalid data may also be refused as too large: a body of invalid secrets can pass 2 MiB
# before any field is checked (413 is a rejection too).
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]

[parameters]
"path.org" = "acme"
"path.app" = "web"
"path.env" = "prod"
"path.node" = "node-1"
"path.release" = "$release"
"path.deploy" = "$deploy"
"path.route" = "$route"
"path.instance" = "$instance"
"path.token" = "$doomed"
"path.volume" = "$volume"
"path.snapshot" = "$snapshot"

[[operations]]
include-operation-id = ["event_list", "instance_logs"]
parameters = { "query.follow" = "false" }

[[operations]]
include-operation-id = "node_instances"
parameters = { "query.wait_ms" = 0 }
EOF

echo "schemathesis $SCHEMATHESIS_VERSION against $base (node $node), $examples examples per operation, seed $seed" >&2
started=$(date +%s)
status=0
st="$(cd "$venv" && pwd)/bin/st"
document="$(pwd)/api/openapi.json"
# From the temporary directory: schemathesis keeps its cache (`.schemathesis/`) in the current one.
(cd "$work" && "$st" --config-file schemathesis.toml run "$document" --url "$base" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance,negative_data_rejection \
    --phases examples,coverage,fuzzing,stateful --max-examples "$examples" \
    $([ "$seed" = random ] || echo --seed "$seed") \
    --workers 2 --request-timeout 15 --no-shrink) || status=$?
echo "schemathesis took $(( $(date +%s) - started )) s; exit status $status" >&2
if [ "$status" -ne 0 ]; then
    echo "--- the server's log (last 50 lines) ---" >&2
    tail -n 50 "$work/server.log" >&2
fi
exit "$status"
