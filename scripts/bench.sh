#!/usr/bin/env bash
# Benchmarks: each reports the median of several runs of tco's operation
# against a baseline query measured in the same run, and their ratio.
#   bash scripts/bench.sh                 full size (1,000,000 bill lines)
#   BENCH_LINES=200000 bash scripts/bench.sh
#   BENCH_SMOKE=1 bash scripts/bench.sh   small smoke run (used by the tests)
# With --reuse-server it uses the server in PGHOST/PGPORT (the test suite's).
source "$(dirname "$0")/common.sh"
cd "$TCO_ROOT"
if [ "${1:-}" != "--reuse-server" ]; then
    trap pg_stop EXIT
    ensure_deps
    build_install
    pg_start
fi
if [ -n "${BENCH_SMOKE:-}" ]; then LINES=${BENCH_LINES:-20000}; RUNS=3; else LINES=${BENCH_LINES:-1000000}; RUNS=5; fi
MAX_RATIO=${BENCH_MAX_RATIO:-3}
psql -qX -c 'DROP DATABASE IF EXISTS tco_bench' -c 'CREATE DATABASE tco_bench' >/dev/null
export PGDATABASE=tco_bench
PSQL=(psql -X -v ON_ERROR_STOP=1 -q)
"${PSQL[@]}" -f bench/harness.sql >/dev/null

log "payer benchmark: generating $LINES bill lines"
"${PSQL[@]}" -v lines="$LINES" -f bench/payer_data.sql >/dev/null
"${PSQL[@]}" -At -F ' ' <<SQL | tee "${BENCH_OUT:-/dev/null}"
SET max_parallel_workers_per_gather = 0;   -- both queries serial: the same plan shape
SELECT 'payer: ' || benchmark || ': ' || subject_ms || ' ms vs baseline ' || baseline_ms
       || ' ms, ratio ' || ratio || CASE WHEN ratio <= $MAX_RATIO THEN ' (ok, limit $MAX_RATIO)' ELSE ' (OVER LIMIT $MAX_RATIO)' END
FROM public.bench_compare('sum(hashint8(effective_payer)) over $LINES lines',
    'SELECT sum(hashint8(tco.trusteeship_effective_payer(account_id, product_code, period_start))) FROM tco.bill_line',
    'SELECT sum(hashint8(account_id)) FROM tco.bill_line', $RUNS);
SELECT 'payer: backend memory after the runs: ' || public.bench_backend_memory();
SQL
