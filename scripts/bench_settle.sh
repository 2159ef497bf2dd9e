#!/usr/bin/env bash
# Benchmark of tco.settle_cycle (issue 5): with BENCH_LINES bill lines in the
# table (a third of them in cycle 2023-02), the median of 3 runs of
#     SELECT * FROM tco.settle_cycle('2023-02')
# against the median of 3 runs of the plain aggregate
#     CREATE TEMP TABLE agg AS SELECT account_id, product_code, sum(list_amount)
#     FROM tco.bill_line WHERE <period_start in 2023-02> GROUP BY 1, 2
# each in its own session and rolled back; prints the ratio and the peak
# memory (VmHWM, and RssAnon for private memory) of the settling backend.
#
#   BENCH_LINES=1000000 bash scripts/bench_settle.sh        (default size)
#   BENCH_LINES=30000 TCO_PGROOT=/tmp/pgroot bash scripts/bench_settle.sh
# Environment: BENCH_LINES (default 1000000), BENCH_ACCOUNTS (default 2000),
# BENCH_RUNS (default 3).  VmHWM counts the shared buffers the backend
# touched as well; RssAnon is its private memory at the end of the run.
source "$(dirname "$0")/common.sh"
trap pg_stop EXIT

LINES=${BENCH_LINES:-1000000}
ACCOUNTS=${BENCH_ACCOUNTS:-2000}
RUNS=${BENCH_RUNS:-3}

ensure_deps
build_install
pg_start

psql -qX -v ON_ERROR_STOP=1 -c 'CREATE DATABASE tco_bench' >/dev/null
export PGDATABASE=tco_bench

log "generating $LINES bill lines over 2023-01..2023-03 for $ACCOUNTS accounts"
psql -qX -v ON_ERROR_STOP=1 -v lines="$LINES" -v accounts="$ACCOUNTS" -f "$TCO_ROOT/bench/settle_data.sql" >/dev/null
psql -qXAt -c "SELECT count(*) FILTER (WHERE tco.cycle_of(period_start)::text = '2023-02') || ' of ' || count(*) || ' lines in 2023-02' FROM tco.bill_line"

CYCLE_START=$(psql -qXAt -c "SELECT lower(tco.cycle_range('2023-02'))")
CYCLE_END=$(psql -qXAt -c "SELECT upper(tco.cycle_range('2023-02'))")

time_ms() {  # time_ms <sql>: run in a fresh session inside BEGIN .. ROLLBACK, print ms
    psql -qXAt -v ON_ERROR_STOP=1 <<SQL | tail -n 1
BEGIN;
SELECT clock_timestamp() AS t0 \gset
$1
SELECT round(extract(epoch FROM clock_timestamp() - :'t0') * 1000) ;
ROLLBACK;
SQL
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

SETTLE_SQL="SELECT * FROM tco.settle_cycle('2023-02') \\g /dev/null"
AGG_SQL="CREATE TEMP TABLE agg AS SELECT account_id, product_code, sum(list_amount) FROM tco.bill_line WHERE period_start >= '$CYCLE_START' AND period_start < '$CYCLE_END' GROUP BY 1, 2;"

time_ms "$AGG_SQL" >/dev/null   # warm the cache
settle=(); agg=()
for i in $(seq 1 "$RUNS"); do
    agg+=("$(time_ms "$AGG_SQL")")
    settle+=("$(time_ms "$SETTLE_SQL")")
done
s=$(median "${settle[@]}"); a=$(median "${agg[@]}")
echo "settle_cycle runs (ms): ${settle[*]}"
echo "aggregate runs (ms):    ${agg[*]}"
echo "median settle_cycle: ${s} ms; median aggregate: ${a} ms; ratio: $(awk -v s="$s" -v a="$a" 'BEGIN {printf "%.2f", (a > 0 ? s / a : 0)}')"

log "peak memory of a settling backend, and of one running the aggregate"
# VmHWM is the peak resident size, shared buffers touched included (they grow
# with the cycle for any query that reads it); VmHWM - RssShmem at the end
# approximates the peak private memory (RssShmem only grows during a run).
mem_sql="SELECT string_agg(regexp_replace(l, '\s+', ' ', 'g'), ', ') FROM regexp_split_to_table(pg_read_file('/proc/' || pg_backend_pid() || '/status'), E'\n') l WHERE l ~ '^(VmHWM|RssAnon|RssShmem)'"
psql -qXAt -v ON_ERROR_STOP=1 <<SQL
SELECT 'fresh backend: ' || ($mem_sql);
BEGIN;
SELECT * FROM tco.settle_cycle('2023-02') \g /dev/null
SELECT 'after settle_cycle: ' || ($mem_sql);
ROLLBACK;
SQL
psql -qXAt -v ON_ERROR_STOP=1 <<SQL
BEGIN;
$AGG_SQL
SELECT 'after the aggregate: ' || ($mem_sql);
ROLLBACK;
SQL
echo "lines: $LINES, work_mem: $(psql -qXAt -c 'SHOW work_mem')"
