#!/usr/bin/env bash
# The whole test suite: pg_regress (sql/ + expected/), isolation specs
# (specs/ + expected/), pgTAP (test/*.sql through pg_prove), the script tests
# (dump/restore, upgrades, old versions with the current library, the R1
# stress run, scheduling with pg_cron, the psycopg and node-pg clients; one
# test each) and a smoke run of the
# benchmarks (settlement and payer; ingest), against a throwaway server.  Ends with "N passed, N failed" and
# exits non-zero on any failure.
source "$(dirname "$0")/common.sh"
set +e
trap pg_stop EXIT

ensure_deps || exit 1
build_install || exit 1
pg_start || exit 1
cd "$TCO_ROOT"

LOGS="$PG_TMP/logs"; mkdir -p "$LOGS"; chmod 777 "$LOGS"
passed=0; failed=0
# count <expected-number> <ok-regex> <log>: what did not report ok failed
# (a crash, a missing expected file, a runner that stopped early).
count() {
    local ok bad
    ok=$(grep -cE "$2" "$3"); bad=$(( $1 - ok )); [ "$bad" -lt 0 ] && bad=0
    passed=$((passed + ok)); failed=$((failed + bad))
    echo "    $ok passed, $bad failed"
}
n_regress=$(ls sql/*.sql 2>/dev/null | wc -l)
n_iso=$(ls specs/*.spec 2>/dev/null | wc -l)
n_tap=$(ls test/*.sql 2>/dev/null | wc -l)

rm -rf results output_iso regression.diffs regression.out
log "pg_regress: behaviour (sql/)"
make -s installcheck PG_CONFIG=/usr/bin/pg_config ISOLATION= 2>&1 | tee "$LOGS/regress.log"
count "$n_regress" ' \.\.\. ok ' "$LOGS/regress.log"
[ -f regression.diffs ] && cat regression.diffs

log "isolation tester: concurrency (specs/)"
make -s installcheck PG_CONFIG=/usr/bin/pg_config REGRESS= 2>&1 | tee "$LOGS/isolation.log"
count "$n_iso" ' \.\.\. ok ' "$LOGS/isolation.log"
[ -f output_iso/regression.diffs ] && cat output_iso/regression.diffs

log "pgTAP: rules and invariants (test/)"
psql -qX -v ON_ERROR_STOP=1 -c 'DROP DATABASE IF EXISTS tco_tap' -c 'CREATE DATABASE tco_tap' >/dev/null
psql -qX -v ON_ERROR_STOP=1 -d tco_tap -c 'CREATE EXTENSION pgtap' >/dev/null
# one pg_prove per file, judged by its exit status: a failing todo() test
# does not fail its file, a failing test, a plan mismatch or a crash does
tap_ok=0; tap_bad=0
for f in test/*.sql; do
    if pg_prove -d tco_tap --ext .sql "$f" 2>&1 | tee -a "$LOGS/tap.log"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
        tap_ok=$((tap_ok + 1))
    else
        tap_bad=$((tap_bad + 1))
    fi
done
[ $((tap_ok + tap_bad)) -eq "$n_tap" ] || tap_bad=$((n_tap - tap_ok))
passed=$((passed + tap_ok)); failed=$((failed + tap_bad))
echo "    $tap_ok passed, $tap_bad failed"

# script tests: each is one test, passed when it exits 0
for t in scripts/test_dump_restore.sh scripts/test_upgrade.sh scripts/test_old_versions.sh \
         scripts/stress_r1.sh scripts/test_schedule.sh \
         scripts/test_client_psycopg.sh scripts/test_client_node.sh; do
    [ -f "$t" ] || continue
    log "script test: $t"
    if bash "$t" >"$LOGS/$(basename "$t").log" 2>&1; then
        tail -n 3 "$LOGS/$(basename "$t").log"; echo "    1 passed, 0 failed"; passed=$((passed + 1))
    else
        tail -n 30 "$LOGS/$(basename "$t").log"; echo "    0 passed, 1 failed"; failed=$((failed + 1))
    fi
done

# smoke runs of the benchmarks (small sizes), on this server: one test each
smoke() {  # smoke <title> <script>
    [ -f "$2" ] || return 0
    log "$1 smoke run (small sizes)"
    if BENCH_SMOKE=1 bash "$2" --reuse-server >"$LOGS/$(basename "$2").log" 2>&1; then
        tail -n 20 "$LOGS/$(basename "$2").log"; echo "    1 passed, 0 failed"; passed=$((passed + 1))
    else
        tail -n 40 "$LOGS/$(basename "$2").log"; echo "    0 passed, 1 failed"; failed=$((failed + 1))
    fi
}
smoke "settlement and payer benchmark" scripts/bench.sh
smoke "ingest benchmark" scripts/bench_ingest.sh

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
