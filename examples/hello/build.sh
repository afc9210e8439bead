#!/usr/bin/env bash
# Build the sample app into an OCI image layout, from this repository alone (no Docker, no
# network): busybox (Debian's busybox-static) for the shell and the HTTP server, plus app/.
#
#   examples/hello/build.sh OUT_LAYOUT      # then: vt image push OUT_LAYOUT --tag v1
#
# Uses `vt image build` from $VT, else `vt` on PATH, else target/release/vt (run from the
# repository, as the README does).
set -euo pipefail
out=${1:?usage: examples/hello/build.sh OUT_LAYOUT}
here=$(dirname "$0")
vt=${VT:-$(command -v vt || echo target/release/vt)}
busybox=/bin/busybox
if ! "$busybox" --list 2>/dev/null | grep -x httpd >/dev/null; then
    echo "error: $busybox with httpd is missing: apt-get install busybox-static" >&2
    exit 2
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,proc,sys,dev,run,tmp,root}
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in sh httpd cat echo printf wc sleep test [ env ls id; do
    ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
cp -R "$here/app" "$root/app"

"$vt" image build "$root" --output "$out" --cmd /app/web.sh --env PATH=/bin
