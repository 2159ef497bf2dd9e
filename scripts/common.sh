# Shared set-up for the demo, the tests and the benchmarks: install what is
# missing, build and install tco, run a throwaway PostgreSQL 15 server.
# Sourced, not run.  Everything it starts is stopped by pg_stop, which the
# callers register with `trap pg_stop EXIT` so a failure never leaves a server.

set -euo pipefail

TCO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# TCO_PGROOT (optional): a private relocated copy of the PostgreSQL install to
# build into and run from, so that several work trees can test side by side
# without overwriting each other's installed extension.
if [ -n "${TCO_PGROOT:-}" ]; then
    if [ ! -x "$TCO_PGROOT/usr/lib/postgresql/15/bin/postgres" ]; then
        mkdir -p "$TCO_PGROOT/usr/lib/postgresql" "$TCO_PGROOT/usr/share/postgresql"
        cp -a /usr/lib/postgresql/15 "$TCO_PGROOT/usr/lib/postgresql/"
        cp -a /usr/share/postgresql/15 "$TCO_PGROOT/usr/share/postgresql/"
    fi
    PG_BIN="$TCO_PGROOT/usr/lib/postgresql/15/bin"
    DESTDIR_ARG="DESTDIR=$TCO_PGROOT"
else
    PG_BIN=/usr/lib/postgresql/15/bin
    DESTDIR_ARG=""
fi
export PATH="$PG_BIN:$PATH"

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

log() { printf '\n==> %s\n' "$*" >&2; }

# Debian packages tco needs to build and test (pg_cron for scheduled
# settlement, psycopg and Node.js for the client tests).  Installed only when
# missing, after `apt-get update` (a fresh machine has no package lists).
ensure_deps() {
    local pkgs=(build-essential postgresql-15 postgresql-server-dev-15 postgresql-contrib
                postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
                postgresql-15-cron postgresql-15-plproxy python3-psycopg "$@")
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    # Node.js and npm may come from elsewhere than Debian (npm bundled with
    # nodejs): only install Debian's when the commands are missing.
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        $SUDO apt-get update -qq -o DPkg::Lock::Timeout=300 || log "apt-get update reported errors; installing with the lists it has"
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
            --no-install-recommends "${missing[@]}" >/dev/null || return 1
    fi
    # a private copy made before pg_cron or PL/Proxy was installed lacks them
    if [ -n "${TCO_PGROOT:-}" ]; then
        local f
        for f in /usr/lib/postgresql/15/lib/pg_cron.so /usr/share/postgresql/15/extension/pg_cron* \
                 /usr/lib/postgresql/15/lib/plproxy.so /usr/share/postgresql/15/extension/plproxy*; do
            [ -e "$f" ] && [ ! -e "$TCO_PGROOT$f" ] && cp -a "$f" "$TCO_PGROOT$f"
        done
    fi
    return 0
}

build_install() {
    log "building and installing tco"
    make -C "$TCO_ROOT" -s PG_CONFIG=/usr/bin/pg_config with_llvm=no
    if [ -n "$DESTDIR_ARG" ]; then
        make -C "$TCO_ROOT" -s PG_CONFIG=/usr/bin/pg_config with_llvm=no install "$DESTDIR_ARG"
    else
        $SUDO make -C "$TCO_ROOT" -s PG_CONFIG=/usr/bin/pg_config with_llvm=no install
    fi
}

# Run a command as the server's owner: PostgreSQL refuses to run as root.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    echo 54329
}

# Start a private server: its own data directory, its own socket directory, a
# free port, and no TCP listener at all (clients use the private socket).
pg_start() {
    PG_TMP=$(mktemp -d /tmp/tco-pg.XXXXXX)
    chmod 755 "$PG_TMP"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$PG_TMP"
    PGPORT=$(free_port)
    export PGHOST="$PG_TMP" PGPORT PGUSER=postgres PGDATABASE=postgres
    [ "$(id -u)" -eq 0 ] || export PGUSER="$(id -un)"
    log "starting a throwaway PostgreSQL 15 server (socket $PGHOST, port $PGPORT)"
    as_pg "$PG_BIN/initdb" -D "$PG_TMP/data" -U "$PGUSER" --auth=trust --no-sync -E UTF8 --locale=C >"$PG_TMP/initdb.log" 2>&1 \
        || { cat "$PG_TMP/initdb.log"; return 1; }
    cat >>"$PG_TMP/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$PG_TMP'
port = $PGPORT
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 60
shared_buffers = 512MB
work_mem = 64MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
timezone = 'UTC'
max_prepared_transactions = 10
shared_preload_libraries = 'pg_cron'
cron.database_name = 'tco_cron'
cron.host = '$PG_TMP'
CONF
    as_pg "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w -t 60 start >/dev/null \
        || { cat "$PG_TMP/server.log"; return 1; }
    # pg_cron's scheduler connects to cron.database_name (scripts/test_schedule.sh
    # installs the extension there); other databases are unaffected.
    "$PG_BIN/psql" -qX -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE tco_cron' >/dev/null
}

pg_stop() {
    if [ -n "${PG_TMP:-}" ] && [ -d "$PG_TMP/data" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$PG_TMP"
    fi
    PG_TMP=""
}

# Extra throwaway servers for the several-server tests and benchmark
# (scripts/test_cluster.sh, scripts/bench_cluster.sh): node_start DIR starts a
# server whose data, socket and logs are under DIR (created, owned by the
# server's user) on a free port, and prints the port; node_stop DIR stops it
# and removes DIR.  Same settings as pg_start, smaller memory, prepared
# transactions on (two-phase commit of account moves), no pg_cron.
node_start() {
    local dir=$1 port
    mkdir -p "$dir"; chmod 755 "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    port=$(free_port)
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U "${PGUSER:-postgres}" --auth=trust --no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; return 1; }
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 40
shared_buffers = ${NODE_SHARED_BUFFERS:-64MB}
work_mem = 32MB
maintenance_work_mem = 128MB
max_wal_size = 2GB
timezone = 'UTC'
max_prepared_transactions = 10
CONF
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
        || { cat "$dir/server.log" >&2; return 1; }
    echo "$port"
}

node_stop() {
    local dir=$1
    if [ -n "$dir" ] && [ -d "$dir/data" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    [ -n "$dir" ] && rm -rf "$dir"
    return 0
}
