#!/usr/bin/env bash
# Start a throwaway PostgreSQL on loopback for the store tests and print its URL.
#
#   eval "$(scripts/test-postgres.sh start)"   # exports VT_TEST_DATABASE_URL (and _SOCKET_URL)
#   scripts/test-postgres.sh stop
#
# Uses Debian's postgresql package (installed if missing). The cluster lives in
# ${VT_PG_DIR:-/tmp/vt-test-pg}, listens on 127.0.0.1:${VT_PG_PORT:-54329} only,
# and trusts local connections: it is for tests, never for data.
set -euo pipefail

dir=${VT_PG_DIR:-/tmp/vt-test-pg}
port=${VT_PG_PORT:-54329}

find_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
    [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

bin=$(find_bin || true)
if [ -z "$bin" ]; then
    . "$(dirname "$0")/lib.sh"
    ensure_packages postgresql >&2
    bin=$(find_bin)
fi

# initdb and postgres refuse to run as root: use the postgres user when we are root.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-start}" in
start)
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home /var/lib/postgresql postgres
    fi
    if [ ! -f "$dir/PG_VERSION" ]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        [ "$(id -u)" = 0 ] && chown postgres "$dir"
        as_pg "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    if ! as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
            -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=on" start >/dev/null
    fi
    as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'vt_test'" | grep -q 1 ||
        as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE vt_test" >/dev/null
    echo "export VT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/vt_test"
    # The same database through its Unix socket: for servers in network namespaces, which
    # do not share this host's loopback (crates/vt/tests/cluster.rs).
    echo "export VT_TEST_DATABASE_SOCKET_URL='postgres://postgres@localhost/vt_test?host=$dir&port=$port'"
    ;;
stop)
    as_pg "$bin/pg_ctl" -D "$dir" -m fast stop >/dev/null 2>&1 || true
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
