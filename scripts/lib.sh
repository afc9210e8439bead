# Shared helpers for the scripts in this folder. Source it; do not run it.

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ensure_packages PKG...: install the Debian packages that are not installed yet.
ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# The web console (crates/vt-console) is built with npm during `cargo build`: Debian's nodejs
# and npm when no npm is on PATH (a Node.js from elsewhere, NodeSource's say, brings its own
# npm, which Debian's npm package would conflict with).
ensure_npm() {
    command -v npm >/dev/null 2>&1 || ensure_packages nodejs npm
}

# Put rustup's cargo on PATH when it is installed but not on PATH.
cargo_on_path() {
    command -v cargo >/dev/null 2>&1 || export PATH="$HOME/.cargo/bin:$PATH"
}
