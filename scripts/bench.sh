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

# Settlement (issue 5): tco.settle_cycle against the plain aggregate of the
# cycle's lines, each run rolled back; a third of the lines are in the cycle.
log "settlement benchmark: generating $LINES bill lines"
"${PSQL[@]}" -v lines="$LINES" -v accounts="${BENCH_ACCOUNTS:-2000}" -f bench/settle_data.sql >/dev/null
"${PSQL[@]}" -At -F ' ' <<SQL | tee -a "${BENCH_OUT:-/dev/null}"
SELECT lower(tco.cycle_range('2023-02')) AS cs, upper(tco.cycle_range('2023-02')) AS ce \gset
SELECT 'settle: ' || benchmark || ': ' || subject_ms || ' ms vs baseline ' || baseline_ms
       || ' ms, ratio ' || ratio || CASE WHEN ratio <= $MAX_RATIO THEN ' (ok, limit $MAX_RATIO)' ELSE ' (OVER LIMIT $MAX_RATIO)' END
FROM public.bench_compare(
    'settle_cycle(2023-02) with ' || (SELECT count(*) FROM tco.bill_line WHERE period_start >= :'cs' AND period_start < :'ce')
        || ' of $LINES lines in the cycle',
    \$\$SELECT * FROM tco.settle_cycle('2023-02')\$\$,
    format('CREATE TEMP TABLE agg AS SELECT account_id, product_code, sum(list_amount) FROM tco.bill_line '
           'WHERE period_start >= %L AND period_start < %L GROUP BY 1, 2', :'cs', :'ce'),
    $RUNS, true);
SQL
# peak memory of a fresh backend that settles once; then the result is checked
# against plain SQL over the bill lines (and rolled back)
"${PSQL[@]}" -At <<'SQL' | tee -a "${BENCH_OUT:-/dev/null}"
SELECT lower(tco.cycle_range('2023-02')) AS cs, upper(tco.cycle_range('2023-02')) AS ce \gset
BEGIN;
SELECT * FROM tco.settle_cycle('2023-02') \g /dev/null
SELECT 'settle: backend memory after settle_cycle: ' || public.bench_backend_memory();
CREATE TEMP TABLE expect ON COMMIT DROP AS
SELECT account_id, product_code, sum(list_amount) AS list, count(*) AS n FROM tco.bill_line
WHERE period_start >= :'cs' AND period_start < :'ce' GROUP BY 1, 2;
CREATE TEMP TABLE got ON COMMIT DROP AS
SELECT sl.account_id, sl.product_code, sum(sl.list_amount) AS list, sum(sl.lines) AS n,
       sum(sl.discount_amount + sl.benefit_amount + sl.due_amount) AS parts
FROM tco.statement_line sl JOIN tco.statement s USING (statement_id)
WHERE s.cycle OPERATOR(tco.=) '2023-02' GROUP BY 1, 2;
DO $check$
DECLARE
    bad text;
BEGIN
    SELECT format('account %s product %s: expected %s in %s lines, settled %s in %s lines',
                  coalesce(e.account_id, g.account_id), coalesce(e.product_code, g.product_code), e.list, e.n, g.list, g.n)
      INTO bad
      FROM expect e FULL JOIN got g USING (account_id, product_code)
     WHERE e.list IS DISTINCT FROM g.list OR e.n IS DISTINCT FROM g.n OR g.parts IS DISTINCT FROM g.list
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'settlement result wrong: %', bad;
    END IF;
    IF (SELECT sum(n) FROM expect) IS DISTINCT FROM (SELECT count(*) FROM tco.settled_line) THEN
        RAISE EXCEPTION 'settled_line has % rows for % lines', (SELECT count(*) FROM tco.settled_line), (SELECT sum(n) FROM expect);
    END IF;
    IF EXISTS (SELECT 1 FROM tco.statement s
               WHERE s.list_total <> round((SELECT sum(list_amount) FROM tco.statement_line l WHERE l.statement_id = s.statement_id), 2)
                  OR s.due_total <> round((SELECT sum(due_amount) FROM tco.statement_line l WHERE l.statement_id = s.statement_id), 2)) THEN
        RAISE EXCEPTION 'a statement total is not its lines'' sum rounded';
    END IF;
    IF EXISTS (SELECT 1 FROM tco.benefit WHERE balance < 0) THEN
        RAISE EXCEPTION 'a benefit balance went negative';
    END IF;
END
$check$;
SELECT 'settle: result checked: ' || (SELECT sum(n) FROM expect) || ' lines, per account and product list amounts equal the plain GROUP BY sums, totals rounded right';
ROLLBACK;
SQL
