#!/usr/bin/env bash
# Memcheck over tco's C code, as its own command (too slow for scripts/test.sh):
# a throwaway server runs under valgrind (memcheck, --trace-children=yes, so
# every backend is checked), the C-heavy regression tests run against it, and
# the report says whether memcheck saw an error in any process.
#
#   bash scripts/valgrind.sh                   # default tests
#   VALGRIND_TESTS="payer settlement" bash scripts/valgrind.sh
#   VALGRIND_SUPP=/path/to/valgrind.supp bash scripts/valgrind.sh
#
# Suppressions: scripts/valgrind-tco.supp (reports of PostgreSQL itself, not
# of tco, seen on this build: raw structures with padding written to disk or
# sockets), plus VALGRIND_SUPP if given, e.g. PostgreSQL's own
# src/tools/valgrind.supp from the PostgreSQL source tree.
# The server is Debian's build, without USE_VALGRIND: memcheck sees malloc'd
# blocks, uninitialized values and invalid accesses, but not misuse of
# palloc'd chunks inside a memory context block (PostgreSQL must be built
# with USE_VALGRIND for that).  Exits 0 when clean.
source "$(dirname "$0")/common.sh"
set +e

VALGRIND_TESTS=${VALGRIND_TESTS:-"billing_cycle payer settlement sharing robustness"}
ensure_deps valgrind || exit 1
build_install || exit 1
cd "$TCO_ROOT"

PG_TMP=$(mktemp -d /tmp/tco-vg.XXXXXX)
chmod 755 "$PG_TMP"
[ "$(id -u)" -eq 0 ] && chown postgres: "$PG_TMP"
export PGHOST="$PG_TMP" PGPORT=$(free_port) PGUSER=postgres PGDATABASE=postgres
[ "$(id -u)" -eq 0 ] || export PGUSER="$(id -un)"
VGLOG=${VALGRIND_LOGDIR:-$(mktemp -d /tmp/tco-valgrind-logs.XXXXXX)}   # kept after the run
mkdir -p "$VGLOG"; chmod 777 "$VGLOG"
stop() {
    if [ -f "$PG_TMP/data/postmaster.pid" ]; then
        kill -INT "$(head -1 "$PG_TMP/data/postmaster.pid")" 2>/dev/null
        for _ in $(seq 1 120); do [ -f "$PG_TMP/data/postmaster.pid" ] || break; sleep 1; done
    fi
}
trap 'stop; rm -rf "$PG_TMP"' EXIT

as_pg "$PG_BIN/initdb" -D "$PG_TMP/data" -U "$PGUSER" --auth=trust --no-sync -E UTF8 --locale=C >"$PG_TMP/initdb.log" 2>&1 \
    || { cat "$PG_TMP/initdb.log"; exit 1; }
cat >>"$PG_TMP/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$PG_TMP'
port = $PGPORT
fsync = off
synchronous_commit = off
full_page_writes = off
timezone = 'UTC'
max_connections = 20
shared_buffers = 64MB
autovacuum = off
jit = off
max_prepared_transactions = 10
CONF
supp=(--suppressions="$TCO_ROOT/scripts/valgrind-tco.supp")
[ -n "${VALGRIND_SUPP:-}" ] && supp+=(--suppressions="$VALGRIND_SUPP")
log "starting PostgreSQL under valgrind memcheck (logs in $VGLOG)"
as_pg valgrind --tool=memcheck --trace-children=yes --track-origins=yes --read-var-info=no \
    --leak-check=no --num-callers=30 --error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END \
    "${supp[@]}" --gen-suppressions=all --log-file="$VGLOG/%p.log" \
    "$PG_BIN/postgres" -D "$PG_TMP/data" >"$PG_TMP/server.log" 2>&1 &
for _ in $(seq 1 300); do
    psql -qXAt -c 'SELECT 1' >/dev/null 2>&1 && break
    sleep 1
done
psql -qXAt -c 'SELECT 1' >/dev/null || { cat "$PG_TMP/server.log"; exit 1; }

log "regression tests under valgrind: $VALGRIND_TESTS"
rm -rf results regression.diffs regression.out
start=$(date +%s)
make -s installcheck PG_CONFIG=/usr/bin/pg_config ISOLATION= REGRESS="$VALGRIND_TESTS" 2>&1 | tee "$PG_TMP/regress.log"
regress_ok=$?
grep -q "failed" "$PG_TMP/regress.log" && regress_ok=1
echo "    $(( $(date +%s) - start )) s"
stop

errors=$(grep -l "VALGRINDERROR-BEGIN" "$VGLOG"/*.log 2>/dev/null | wc -l)
procs=$(ls "$VGLOG"/*.log 2>/dev/null | wc -l)
tco_errors=$(awk '/VALGRINDERROR-BEGIN/,/VALGRINDERROR-END/' "$VGLOG"/*.log 2>/dev/null | grep -c "tco\.so\|src/.*\.c")
if [ "$errors" -gt 0 ]; then
    log "memcheck reports (the first 40 lines of each; full logs in $VGLOG):"
    awk '/VALGRINDERROR-BEGIN/ { n = 0; on = 1 } on && n < 40 { print; n++ } /VALGRINDERROR-END/ { on = 0 }' \
        "$VGLOG"/*.log | grep -v "^   \(fun\|obj\|\.\.\.\)\|^[{}]\|<insert_a_suppression_name_here>\|^   Memcheck:"
fi
echo
echo "valgrind: $procs processes checked, $errors with memcheck errors ($tco_errors report lines in tco.so); regression tests $([ "$regress_ok" -eq 0 ] && echo passed || echo FAILED)"
if [ "$errors" -eq 0 ] && [ "$regress_ok" -eq 0 ]; then echo "CLEAN"; exit 0; fi
echo "NOT CLEAN"
exit 1
