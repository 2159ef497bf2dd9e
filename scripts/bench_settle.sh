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
psql -qX -v ON_ERROR_STOP=1 -v lines="$LINES" -v accounts="$ACCOUNTS" <<'SQL' >/dev/null
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SELECT tco.set_billing_timezone('Asia/Shanghai');
SELECT setseed(0.5);
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme', true), (2, 'Beta', true);
INSERT INTO tco.account (account_id, entity_id, balance)
SELECT a, CASE WHEN a % 4 = 0 THEN 2 ELSE 1 END, 1000 FROM generate_series(1, :accounts) a;
SELECT tco.create_organization(1, 'Bench Org') AS org \gset
SELECT tco.add_member(:org, a) FROM generate_series(2, :accounts) a;
-- 10% of the accounts (at most 250) managed by the admin: half legacy, half new.
INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
SELECT a, 1, CASE WHEN a % 2 = 0 THEN '2022-06-01 00:00+08'::timestamptz ELSE '2022-10-01 00:00+08' END
FROM generate_series(2, :accounts) a WHERE a % 10 = 1 AND a % 4 <> 0 LIMIT 250;
INSERT INTO tco.product (product_code, granularity) VALUES
    ('p_min', 'minute'), ('p_hour', 'hour'), ('p_day', 'day'), ('p_week', 'week'), ('p_month', 'month');
SELECT tco.set_contract_discount(a, NULL, 0.05 + (a % 20) / 100.0, CASE WHEN a % 3 = 0 THEN 'p_hour' END, '-infinity')
FROM generate_series(1, :accounts) a WHERE a % 5 = 0 OR a = 1;
SELECT tco.set_contract_discount(NULL, 1, 0.12, NULL, '-infinity');
SELECT tco.grant_benefit((ARRAY['coupon','voucher','stored_value_card'])[1 + a % 3], a, 50 + a % 100,
                         '2022-12-01 00:00+08', '2023-06-01 00:00+08',
                         CASE WHEN a % 7 = 0 THEN 'p_day' END)
FROM generate_series(1, :accounts) a WHERE a % 3 = 0 OR a = 1;
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
SELECT 1 + (g * 7919) % :accounts,
       (ARRAY['p_min','p_hour','p_day','p_week','p_month'])[1 + g % 5],
       s, s + interval '1 hour', round((random() * 3)::numeric, 6), s + interval '2 hours'
FROM (SELECT g, '2023-01-01 00:00+08'::timestamptz + (g::float8 / :lines) * interval '90 days' AS s
      FROM generate_series(0, :lines - 1) g) x;
VACUUM ANALYZE;
SQL
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

log "peak memory of a settling backend"
psql -qXAt -v ON_ERROR_STOP=1 <<'SQL'
SELECT 'fresh backend: ' || string_agg(l, ', ') FROM regexp_split_to_table(pg_read_file('/proc/' || pg_backend_pid() || '/status'), E'\n') l WHERE l ~ '^(VmHWM|RssAnon)';
BEGIN;
SELECT * FROM tco.settle_cycle('2023-02') \g /dev/null
SELECT 'after settle_cycle: ' || string_agg(regexp_replace(l, '\s+', ' ', 'g'), ', ') FROM regexp_split_to_table(pg_read_file('/proc/' || pg_backend_pid() || '/status'), E'\n') l WHERE l ~ '^(VmHWM|RssAnon)';
ROLLBACK;
SQL
echo "lines: $LINES"
