#!/usr/bin/env bash
# Benchmarks: each reports the median of several runs of tco's operation
# against a baseline query measured in the same run, alternately, and their
# ratio (README "Settlement speed").
#   bash scripts/bench.sh                 full run (about an hour on 2 cores)
#   BENCH_SMOKE=1 bash scripts/bench.sh   small smoke run (used by the tests)
# Sizes (environment):
#   BENCH_LINES          payer benchmark: bill lines (default 1,000,000)
#   BENCH_SETTLE_LINES   settlement: table sizes (default "1000000 5000000")
#   BENCH_ORDERS         physical orders of the rows (default "time shuffled")
#   BENCH_WORK_MEMS      work_mem of the runs (default "4MB 64MB"; 4MB is
#                        PostgreSQL's default, the test server's is 64MB)
#   BENCH_SCALE_LINES    linear-scale run: table size (default 20000000, time
#                        order, work_mem 4MB, compared per line with the
#                        1,000,000 time-order 4MB run; 0 skips it)
#   BENCH_ACCOUNTS       accounts (default 2000), BENCH_RUNS runs (default 5)
#   BENCH_PAYER=0        skip the payer benchmark
#   BENCH_OUT=file       also write the report to file
# With --reuse-server it uses the server in PGHOST/PGPORT (the test suite's).
source "$(dirname "$0")/common.sh"
cd "$TCO_ROOT"
RESULTS=$(mktemp)
cleanup() { rm -f "$RESULTS" "$RESULTS.err"; }
if [ "${1:-}" != "--reuse-server" ]; then
    trap 'cleanup; pg_stop' EXIT
    ensure_deps
    build_install
    pg_start
else
    trap cleanup EXIT
fi
if [ -n "${BENCH_SMOKE:-}" ]; then
    LINES=${BENCH_LINES:-20000}; RUNS=${BENCH_RUNS:-3}
    SETTLE_LINES=${BENCH_SETTLE_LINES:-20000}; ORDERS=${BENCH_ORDERS:-"shuffled time"}
    # 64kB (PostgreSQL's minimum): the cycle does not fit, the spill path runs
    WORK_MEMS=${BENCH_WORK_MEMS:-"64kB 64MB"}; SCALE_LINES=${BENCH_SCALE_LINES:-0}
else
    LINES=${BENCH_LINES:-1000000}; RUNS=${BENCH_RUNS:-5}
    SETTLE_LINES=${BENCH_SETTLE_LINES:-"1000000 5000000"}; ORDERS=${BENCH_ORDERS:-"time shuffled"}
    WORK_MEMS=${BENCH_WORK_MEMS:-"4MB 64MB"}; SCALE_LINES=${BENCH_SCALE_LINES:-20000000}
fi
ACCOUNTS=${BENCH_ACCOUNTS:-2000}
MAX_RATIO=${BENCH_MAX_RATIO:-3}
SETTLE_MAX_RATIO=${BENCH_SETTLE_MAX_RATIO:-2}
OUT=${BENCH_OUT:-/dev/null}
: >"$OUT"
psql -qX -c 'DROP DATABASE IF EXISTS tco_bench' -c 'CREATE DATABASE tco_bench' >/dev/null
export PGDATABASE=tco_bench
PSQL=(psql -X -v ON_ERROR_STOP=1 -q)
"${PSQL[@]}" -f bench/harness.sql >/dev/null

if [ "${BENCH_PAYER:-1}" != 0 ]; then
log "payer benchmark: generating $LINES bill lines"
"${PSQL[@]}" -v lines="$LINES" -f bench/payer_data.sql >/dev/null
"${PSQL[@]}" -At -F ' ' <<SQL | tee -a "$OUT"
SET max_parallel_workers_per_gather = 0;   -- both queries serial: the same plan shape
SELECT 'payer: ' || benchmark || ': ' || subject_ms || ' ms vs baseline ' || baseline_ms
       || ' ms, ratio ' || ratio || CASE WHEN ratio <= $MAX_RATIO THEN ' (ok, limit $MAX_RATIO)' ELSE ' (OVER LIMIT $MAX_RATIO)' END
FROM public.bench_compare('sum(hashint8(effective_payer)) over $LINES lines',
    'SELECT sum(hashint8(tco.trusteeship_effective_payer(account_id, product_code, period_start))) FROM tco.bill_line',
    'SELECT sum(hashint8(account_id)) FROM tco.bill_line', $RUNS);
SELECT 'payer: backend memory after the runs: ' || public.bench_backend_memory();
SQL
fi

# Settlement (issues 5 and 11): tco.settle_cycle('2023-02') against the plain
# aggregate of the cycle's lines, alternately in one session with the same
# settings, each run rolled back, median of $RUNS after a warm-up; for every
# table size, physical order and work_mem.  Then, in fresh backends, the peak
# private memory of one settlement and of one aggregate (VmHWM - RssShmem)
# and the settlement's phase timings (DEBUG1), and the result is checked
# against plain SQL over the bill lines.
AGG_SQL="CREATE TEMP TABLE agg AS SELECT account_id, product_code, sum(list_amount) FROM tco.bill_line WHERE period_start >= :'cs' AND period_start < :'ce' GROUP BY 1, 2"

settle_case() {  # settle_case <lines> <order> <work_mem> <runs>
    local lines=$1 order=$2 wm=$3 runs=$4
    "${PSQL[@]}" -At -F ' ' <<SQL | tee -a "$OUT"
SET work_mem = '$wm';
SELECT lower(tco.cycle_range('2023-02')) AS cs, upper(tco.cycle_range('2023-02')) AS ce \gset
SELECT count(*) AS n FROM tco.bill_line WHERE period_start >= :'cs' AND period_start < :'ce' \gset
SELECT subject_ms AS s, baseline_ms AS b, ratio AS r FROM public.bench_compare('settle',
    \$\$SELECT * FROM tco.settle_cycle('2023-02')\$\$,
    format('CREATE TEMP TABLE agg AS SELECT account_id, product_code, sum(list_amount) FROM tco.bill_line '
           'WHERE period_start >= %L AND period_start < %L GROUP BY 1, 2', :'cs', :'ce'),
    $runs, true) \gset
\o | cat >> $RESULTS
SELECT 'RESULT $lines $order $wm ' || :n || ' ' || :s || ' ' || :b || ' ' || :r;
\o
SELECT format('settle: %s lines (%s in the cycle), %s order, work_mem %s: settle_cycle %s ms vs aggregate %s ms, ratio %s%s',
              $lines, :n, '$order', '$wm', :s, :b, :r,
              CASE WHEN :r <= $SETTLE_MAX_RATIO THEN ' (ok, target $SETTLE_MAX_RATIO)' ELSE ' (OVER TARGET $SETTLE_MAX_RATIO)' END);
SQL
    # peak private memory and phase timings of one settlement in a fresh backend
    local mem phases aggmem
    mem=$("${PSQL[@]}" -At 2>"$RESULTS.err" <<SQL
SET work_mem = '$wm';
SET client_min_messages = debug1;
BEGIN;
SELECT * FROM tco.settle_cycle('2023-02') \g /dev/null
RESET client_min_messages;
SELECT public.bench_private_kb();
ROLLBACK;
SQL
)
    phases=$(grep -o 'tco settle_cycle 2023-02:.*' "$RESULTS.err" || true)
    aggmem=$("${PSQL[@]}" -At <<SQL
SET work_mem = '$wm';
SELECT lower(tco.cycle_range('2023-02')) AS cs, upper(tco.cycle_range('2023-02')) AS ce \gset
BEGIN;
$AGG_SQL;
SELECT public.bench_private_kb();
ROLLBACK;
SQL
)
    echo "RESULTMEM $lines $order $wm $mem $aggmem" >>"$RESULTS"
    echo "settle:   private peak (VmHWM - RssShmem) of a fresh backend: settle_cycle $mem kB, aggregate $aggmem kB" | tee -a "$OUT"
    echo "settle:   phases: $phases" | tee -a "$OUT"
}

# settle_check <work_mem> [parallel]: the settled result against plain SQL
# over the bill lines (rolled back); with "parallel", the read is shared by
# parallel workers whatever the table's size, and the settlement's DEBUG1
# phase line (on stderr) says how many.
settle_check() {
    local opts="" par=0
    if [ "${2:-}" = parallel ]; then
        opts="-c min_parallel_table_scan_size=0 -c max_parallel_workers_per_gather=2"; par=1
    fi
    PGOPTIONS="${PGOPTIONS:-} $opts" "${PSQL[@]}" -At -v wm="$1" -v par="$par" <<'SQL'
SET work_mem = :'wm';
SELECT lower(tco.cycle_range('2023-02')) AS cs, upper(tco.cycle_range('2023-02')) AS ce \gset
BEGIN;
\if :par
SET client_min_messages = debug1;
\endif
SELECT * FROM tco.settle_cycle('2023-02') \g /dev/null
RESET client_min_messages;
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
SELECT 'settle:   result checked at work_mem ' || current_setting('work_mem') || ': ' || (SELECT sum(n) FROM expect)
       || ' lines, per account and product list amounts equal the plain GROUP BY sums, totals rounded right';
-- every line's pricing and every benefit use, to compare across work_mem
SELECT 'DIGEST ' || md5(string_agg(format('%s %s %s %s %s', line_id, payer_account_id, discount_amount,
                                          benefit_amount, due_amount), ',' ORDER BY line_id))
       || md5(coalesce((SELECT string_agg(format('%s %s %s', benefit_id, line_id, amount), ',' ORDER BY use_id)
                        FROM tco.benefit_use), ''))
FROM tco.settled_line;
ROLLBACK;
SQL
}

DIFFERS=0
settle_check_all() {  # settle_check at each work_mem: the same lines, priced the same, at every one
    local wm out digest first=""
    for wm in "$@"; do
        out=$(settle_check "$wm")
        echo "$out" | grep -v '^DIGEST' | tee -a "$OUT"
        digest=$(echo "$out" | sed -n 's/^DIGEST //p')
        if [ -z "$first" ]; then first=$digest
        elif [ "$digest" != "$first" ]; then
            echo "settle:   RESULT DIFFERS at work_mem $wm from work_mem ${1}: per-line digest $digest, not $first" | tee -a "$OUT"
            DIFFERS=1
        fi
    done
    [ "$#" -gt 1 ] && [ "$DIFFERS" = 0 ] && echo "settle:   every line priced the same and every benefit use the same at work_mem $*" | tee -a "$OUT"
    # the read shared by parallel workers (README "Settlement speed"), at the first work_mem
    out=$(settle_check "$1" parallel 2>&1)
    digest=$(echo "$out" | sed -n 's/^DIGEST //p')
    workers=$(echo "$out" | grep -o 'one read shared with [0-9]* parallel workers' | grep -o '[0-9][0-9]*' || true)
    if [ "$digest" != "$first" ]; then
        echo "$out" | grep -v '^DIGEST' | tail -n 5 | tee -a "$OUT"
        echo "settle:   RESULT DIFFERS with the read shared by parallel workers at work_mem ${1}: per-line digest $digest, not $first" | tee -a "$OUT"
        DIFFERS=1
    elif [ -z "$workers" ]; then
        echo "settle:   PARALLEL READ NOT USED at work_mem $1 with min_parallel_table_scan_size 0" | tee -a "$OUT"
        DIFFERS=1
    else
        echo "settle:   read shared with $workers parallel workers at work_mem $1: every line priced the same" | tee -a "$OUT"
    fi
    return 0
}

echo "settle: server: max_parallel_workers_per_gather $(psql -XAt -c 'SHOW max_parallel_workers_per_gather'), shared_buffers $(psql -XAt -c 'SHOW shared_buffers')" | tee -a "$OUT"
for lines in $SETTLE_LINES; do
    for order in $ORDERS; do
        log "settlement benchmark: generating $lines bill lines, $order order"
        "${PSQL[@]}" -v lines="$lines" -v accounts="$ACCOUNTS" -v order="$order" -f bench/settle_data.sql >/dev/null
        for wm in $WORK_MEMS; do
            settle_case "$lines" "$order" "$wm" "$RUNS"
        done
        # shellcheck disable=SC2086
        settle_check_all $WORK_MEMS
    done
done

# Linear scale: time per line of the cycle at SCALE_LINES against 1,000,000,
# both in time order at work_mem 4MB.
if [ "$SCALE_LINES" != 0 ]; then
    log "settlement benchmark: generating $SCALE_LINES bill lines, time order (linear scale)"
    "${PSQL[@]}" -v lines="$SCALE_LINES" -v accounts="$ACCOUNTS" -v order=time -f bench/settle_data.sql >/dev/null
    settle_case "$SCALE_LINES" time 4MB "${BENCH_SCALE_RUNS:-3}"
    settle_check_all 4MB
fi

# Summary: all ratios, memory, and the scale figure.
{
    echo "settle: summary (ms are medians; private = VmHWM - RssShmem of a fresh backend, kB)"
    printf 'settle: %10s %9s %8s %9s %10s %10s %6s %12s %12s\n' lines order work_mem in_cycle settle_ms agg_ms ratio settle_priv agg_priv
    awk '$1 == "RESULTMEM" { mem[$2 " " $3 " " $4] = $5 " " $6 }
         $1 == "RESULT" { key = $2 " " $3 " " $4; row[++n] = $0; k[n] = key }
         END { for (i = 1; i <= n; i++) { split(row[i], f, " "); split(mem[k[i]], m, " ");
               printf "settle: %10s %9s %8s %9s %10s %10s %6s %12s %12s\n", f[2], f[3], f[4], f[5], f[6], f[7], f[8], m[1], m[2] } }' "$RESULTS"
    if [ "$SCALE_LINES" != 0 ]; then
        awk -v big="$SCALE_LINES" '$1 == "RESULT" && $3 == "time" && $4 == "4MB" { per[$2] = $6 / $5 * 1000000 }
             END { if ((1000000 in per) && (big in per))
                       printf "settle: linear scale: %.0f ns per cycle line at %s lines, %.0f ns at 1000000: ratio %.2f (target 1.3)\n",
                              per[big], big, per[1000000], per[big] / per[1000000];
                   else print "settle: linear scale: needs the 1000000 and " big " runs in time order at 4MB" }' "$RESULTS"
    fi
} | tee -a "$OUT"
# a settlement that priced a line differently at another work_mem fails the run
[ "$DIFFERS" = 0 ]
