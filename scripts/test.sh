#!/usr/bin/env bash
# The whole test suite: pg_regress (sql/ + expected/), isolation specs
# (specs/ + expected/), pgTAP (test/*.sql through pg_prove) and a smoke run
# of the benchmarks, and the R1 stress run, against a throwaway server.  Ends with
# "N passed, N failed" and exits non-zero on any failure.
source "$(dirname "$0")/common.sh"
set +e
trap pg_stop EXIT

ensure_deps || exit 1
build_install || exit 1
pg_start || exit 1
cd "$TCO_ROOT"

passed=0; failed=0
count() {  # count "<ok-regex>" "<fail-regex>" file
    local ok bad
    ok=$(grep -cE "$1" "$3"); bad=$(grep -cE "$2" "$3")
    passed=$((passed + ok)); failed=$((failed + bad))
    echo "    $ok passed, $bad failed"
}

rm -rf results output_iso regression.diffs regression.out
log "pg_regress: behaviour (sql/)"
make -s installcheck PG_CONFIG=/usr/bin/pg_config ISOLATION= 2>&1 | tee /tmp/tco-regress.log
count ' \.\.\. ok|^ok ' ' \.\.\. FAILED|^not ok ' /tmp/tco-regress.log
[ -f regression.diffs ] && { cat regression.diffs; cp regression.diffs /tmp/tco-regress.diffs; }

log "isolation tester: concurrency (specs/)"
make -s installcheck PG_CONFIG=/usr/bin/pg_config REGRESS= 2>&1 | tee /tmp/tco-isolation.log
count ' \.\.\. ok|^ok ' ' \.\.\. FAILED|^not ok ' /tmp/tco-isolation.log
[ -f output_iso/regression.diffs ] && cat output_iso/regression.diffs

log "pgTAP: rules and invariants (test/)"
psql -qX -v ON_ERROR_STOP=1 -c 'DROP DATABASE IF EXISTS tco_tap' -c 'CREATE DATABASE tco_tap' >/dev/null
psql -qX -v ON_ERROR_STOP=1 -d tco_tap -c 'CREATE EXTENSION pgtap' >/dev/null
pg_prove -d tco_tap --ext .sql -r test/ 2>&1 | tee /tmp/tco-tap.log
count '^test/.*\.\. ok' '^test/.*\.\. (Failed|Dubious|not ok)|^test/.*\.\. [^o]' /tmp/tco-tap.log
grep -qE '^Files=.*Tests=' /tmp/tco-tap.log || { echo "    pg_prove did not finish"; failed=$((failed + 1)); }

log "R1 stress: 16 clients racing for 300 places (scripts/stress_r1.sh)"
if bash scripts/stress_r1.sh >/tmp/tco-stress.log 2>&1; then
    tail -n 3 /tmp/tco-stress.log; echo "    1 passed, 0 failed"; passed=$((passed + 1))
else
    tail -n 20 /tmp/tco-stress.log; echo "    0 passed, 1 failed"; failed=$((failed + 1))
fi

if [ -x scripts/bench.sh ]; then
    log "benchmark smoke run (small sizes)"
    if BENCH_SMOKE=1 bash scripts/bench.sh --reuse-server >/tmp/tco-bench.log 2>&1; then
        tail -n 20 /tmp/tco-bench.log; echo "    1 passed, 0 failed"; passed=$((passed + 1))
    else
        tail -n 40 /tmp/tco-bench.log; echo "    0 passed, 1 failed"; failed=$((failed + 1))
    fi
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
