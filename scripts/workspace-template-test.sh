#!/usr/bin/env bash
# Check that the default workspace template works: build it (or take it from the cache,
# scripts/workspace-template.sh), unpack its layer and run the image's entrypoint with the
# image's environment, as vt's init would: as root, in new PID, mount and network namespaces
# (only loopback, so it binds [::]:8080 exactly as in a workspace and nothing on the host),
# /home/vt an empty root-owned directory with a lost+found, like a new home disk. Then:
#   * /healthz answers on 127.0.0.1 and on [::1] (the IPv6 wildcard also serves IPv4);
#   * GET / redirects to the home folder, whose page is the code-server workbench;
#   * code-server runs as uid 1000, the home became vt's and holds the seeded settings
#     (AI features and telemetry off) in the user-data-dir code-server reports using;
#   * a second start on the same home keeps what the user changed.
#
#   scripts/workspace-template-test.sh [--cache-dir DIR]      # as root; same env as the build
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

fail() { echo "workspace-template-test: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (namespaces, chroot): run it as root, e.g. sudo $0"
[ "${VT_SKIP_APT:-}" = 1 ] || ensure_packages jq curl iproute2 util-linux

t0=$SECONDS
layout=$("$here/workspace-template.sh" "$@")
t_build=$((SECONDS - t0))

tmp=$(mktemp -d /var/tmp/vt-workspace-template-test.XXXXXX)
ns_pid=
stop() {
    [ -n "$ns_pid" ] || return 0
    # unshare ignores SIGTERM while it waits: signal the namespace's PID 1 (code-server).
    local init _
    init=$(pgrep -P "$ns_pid" || true)
    [ -z "$init" ] || kill -TERM "$init" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$ns_pid" 2>/dev/null || break; sleep 0.1; done
    [ -z "$init" ] || kill -KILL "$init" 2>/dev/null || true
    wait "$ns_pid" 2>/dev/null || true
    ns_pid=
}
trap 'stop; rm -rf --one-file-system "$tmp"' EXIT

# The image: its one layer, its entrypoint and environment.
blob() { echo "$layout/blobs/${1/://}"; }
manifest=$(jq -r '.manifests[0].digest' "$layout/index.json")
config=$(jq -r '.config.digest' "$(blob "$manifest")")
layer=$(jq -r '.layers[0].digest' "$(blob "$manifest")")
mapfile -t entrypoint < <(jq -r '(.config.Entrypoint // []) + (.config.Cmd // []) | .[]' "$(blob "$config")")
mapfile -t image_env < <(jq -r '.config.Env[]' "$(blob "$config")")
root=$tmp/root home=$tmp/home
mkdir -p "$root" "$home/lost+found"
chmod 0700 "$home/lost+found"
tar -xzf "$(blob "$layer")" -C "$root" --numeric-owner
echo "workspace-template-test: unpacked $(du -sh "$root" | cut -f1) from $layer" >&2

# start N: run the entrypoint in its namespaces (log: $tmp/run-N.log); sets ns_pid.
start() {
    # shellcheck disable=SC2016 # the inner script's own variables
    unshare --net --mount --pid --fork --kill-child -- sh -c '
        set -e
        root=$1 home=$2; shift 2
        ip link set lo up
        mount --bind "$home" "$root/home/vt"
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        exec "$@"' sh "$root" "$home" env -i "${image_env[@]}" chroot "$root" "${entrypoint[@]}" \
        >"$tmp/run-$1.log" 2>&1 &
    ns_pid=$!
}
in_ns() { nsenter --target "$ns_pid" --net -- "$@"; }
ms() { echo $(($(date +%s%N) / 1000000)); }
wait_healthy() { # wait_healthy N: milliseconds from start until /healthz answers
    local t=$1 n=$2
    until in_ns curl -fsS -o /dev/null http://127.0.0.1:8080/healthz 2>/dev/null; do
        kill -0 "$ns_pid" 2>/dev/null || { cat "$tmp/run-$n.log" >&2; fail "code-server exited (log above)"; }
        [ $(($(ms) - t)) -lt 90000 ] || { cat "$tmp/run-$n.log" >&2; fail "no /healthz after 90 s (log above)"; }
        sleep 0.05
    done
    echo $(($(ms) - t))
}

# First start: a new, empty home.
t=$(ms)
start 1
ready1=$(wait_healthy "$t" 1)
in_ns curl -fsS http://127.0.0.1:8080/healthz | jq -e '.status' >/dev/null || fail "/healthz on IPv4 is not code-server's"
in_ns curl -fsS 'http://[::1]:8080/healthz' | jq -e '.status' >/dev/null || fail "/healthz on IPv6 is not code-server's"
redirect=$(in_ns curl -sS -o /dev/null -w '%{http_code} %header{location}' http://127.0.0.1:8080/)
case $redirect in
    "302 "*folder=*home*vt*) ;;
    *) fail "GET / answered \"$redirect\", wanted a 302 to ?folder=/home/vt" ;;
esac
page=$(in_ns curl -fsS 'http://[::1]:8080/?folder=/home/vt')
grep -q 'vs/code/browser/workbench/workbench.js' <<<"$page" \
    || fail "GET /?folder=/home/vt is not the workbench: $(head -c 300 <<<"$page")"
grep -q 'userDataPath&quot;:&quot;/home/vt/.local/share/code-server' <<<"$page" \
    || fail "the workbench's user data is not in /home/vt/.local/share/code-server"
# Who runs it: the entrypoint's process (PID 1 of the namespace) is code-server, as vt.
pid1=$(pgrep -P "$ns_pid" | head -1)
uids=$(ps -o uid= -p "$pid1" --ppid "$pid1" | tr -d ' ' | sort -u | tr '\n' ' ')
[ "$uids" = "1000 " ] || fail "code-server's processes run as uid(s) $uids, wanted only 1000"
[ "$(stat -c %u:%g "$home")" = 1000:1000 ] || fail "the home is $(stat -c %u:%g "$home"), wanted 1000:1000"
[ "$(stat -c %u "$home/lost+found")" = 0 ] || fail "lost+found changed owner"
settings=$home/.local/share/code-server/User/settings.json
[ -f "$settings" ] || fail "no seeded $settings"
jq -e '."chat.disableAIFeatures" == true and ."telemetry.telemetryLevel" == "off"' "$settings" >/dev/null \
    || fail "settings lack AI features off / telemetry off: $(cat "$settings")"
[ "$(stat -c %u "$settings")" = 1000 ] || fail "the settings are not vt's"
[ -f "$home/.bashrc" ] || fail "no .bashrc seeded from /etc/skel"
grep -q 'Using user-data-dir /home/vt/.local/share/code-server' "$tmp/run-1.log" \
    || fail "code-server does not use the seeded user-data-dir: $(cat "$tmp/run-1.log")"
# A terminal as code-server opens one (node-pty, as vt, the image's environment), with the
# image's tools; and the native modules built against Node 24 load.
cat >"$tmp/check.js" <<'EOF'
const vscode = "/opt/code-server/lib/node_modules/code-server/lib/vscode";
const load = (name) => require(require.resolve(name, { paths: [vscode] }));
for (const m of ["kerberos", "@vscode/spdlog", "@vscode/sqlite3", "@parcel/watcher"]) load(m);
const t = load("node-pty").spawn("/bin/bash", ["-c",
    'echo "pty: $(id -un) $(pwd) node $(node --version) npm $(npm --version) $(git --version) $(cc --version | head -1)"; ' +
    'ssh -V 2>&1; curl --version | head -1; ps -o user= -p $$; less --version | head -1'],
    { cwd: process.env.HOME, env: process.env });
let out = "";
t.onData((d) => { out += d; });
t.onExit(({ exitCode }) => { process.stdout.write(out); process.exit(exitCode); });
EOF
in_image() {
    nsenter --target "$pid1" --mount --pid --root --wd -- env -i "${image_env[@]}" \
        setpriv --reuid=1000 --regid=1000 --init-groups -- "$@"
}
term=$(in_image node - <"$tmp/check.js") || fail "the terminal check failed: $term"
grep -q "^pty: vt /home/vt node v24" <<<"$term" || fail "the terminal is not vt's with Node 24: $term"
for want in "git version" "cc (Debian" "OpenSSH" "curl " "less "; do
    grep -q "$want" <<<"$term" || fail "the terminal lacks $want: $term"
done
echo "workspace-template-test: terminal: $(head -1 <<<"$term" | tr -d '\r')" >&2
stop

# Second start: an existing home; the user's changes stay.
jq '. + {"editor.fontSize": 17}' "$settings" >"$settings.new" && mv "$settings.new" "$settings"
chown 1000:1000 "$settings"
echo mine >"$home/notes.txt"
t=$(ms)
start 2
ready2=$(wait_healthy "$t" 2)
jq -e '."editor.fontSize" == 17' "$settings" >/dev/null || fail "the second start replaced the user's settings"
[ "$(cat "$home/notes.txt")" = mine ] || fail "the second start lost a file"
in_ns curl -fsS 'http://127.0.0.1:8080/?folder=/home/vt' | grep -q workbench || fail "no workbench on the second start"
stop

echo "workspace-template-test: ok: template in ${t_build} s (built or cached), /healthz ${ready1} ms after the start (new home), ${ready2} ms (existing home)" >&2
