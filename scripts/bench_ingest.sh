#!/usr/bin/env bash
# Ingest benchmark (issue 11, README "Performance"): bill lines into
# tco.bill_line against a twin table with the same columns, checks, foreign
# keys and indexes but no tco trigger (bench/ingest_data.sql), in the same run.
#   COPY: BENCH_INGEST_LINES lines (default 300,000) in one COPY, median of
#         alternating runs, each rolled back; limit 1.5x the twin.
#   pgbench: BENCH_CLIENTS clients (default 8) inserting one line per
#         transaction for BENCH_SECONDS seconds (default 20) each, twin and
#         tco alternately, twice; limit: tco's tps at least 1/1.5 of the twin's.
# The lines are of the current cycle, issued after the trusteeship changes of
# their accounts: the ordinary stream, which takes no settlement lock and
# sends no cache invalidation (src/sql/48_bill_line_triggers.sql).
#   bash scripts/bench_ingest.sh                 (own server)
#   BENCH_SMOKE=1 bash scripts/bench_ingest.sh --reuse-server   (the tests)
# Prints the ratios; with BENCH_ENFORCE=1 exits non-zero when one is over.
source "$(dirname "$0")/common.sh"
cd "$TCO_ROOT"
if [ "${1:-}" != "--reuse-server" ]; then
    trap pg_stop EXIT
    ensure_deps
    build_install
    pg_start
fi
if [ -n "${BENCH_SMOKE:-}" ]; then
    LINES=${BENCH_INGEST_LINES:-20000}; SECONDS_EACH=${BENCH_SECONDS:-3}; RUNS=2
else
    LINES=${BENCH_INGEST_LINES:-300000}; SECONDS_EACH=${BENCH_SECONDS:-20}; RUNS=3
fi
CLIENTS=${BENCH_CLIENTS:-8}
WORK=$(mktemp -d /tmp/tco-ingest.XXXXXX); chmod 777 "$WORK"
trap 'rm -rf "$WORK"; [ "${1:-}" != "--reuse-server" ] && pg_stop' EXIT
psql -qX -c 'DROP DATABASE IF EXISTS tco_bench_ingest' -c 'CREATE DATABASE tco_bench_ingest' >/dev/null
export PGDATABASE=tco_bench_ingest
PSQL=(psql -X -v ON_ERROR_STOP=1 -q)
"${PSQL[@]}" -f bench/harness.sql >/dev/null
log "ingest benchmark: $LINES lines for COPY, $CLIENTS clients x ${SECONDS_EACH}s for pgbench"
"${PSQL[@]}" -v lines="$LINES" -v accounts=400 -v csv="$WORK/lines.csv" -f bench/ingest_data.sql >/dev/null

cols="account_id, product_code, period_start, period_end, list_amount, issued_at, tags"
copy_out=$("${PSQL[@]}" -At -F ' ' <<SQL
SET work_mem = '4MB';   -- PostgreSQL's default
SELECT 'ingest: ' || benchmark || ': ' || subject_ms || ' ms vs twin ' || baseline_ms || ' ms, ratio ' || ratio
       || CASE WHEN ratio <= 1.5 THEN ' (ok, limit 1.5)' ELSE ' (OVER LIMIT 1.5)' END
FROM public.bench_compare('COPY of $LINES lines',
    \$\$COPY tco.bill_line ($cols) FROM '$WORK/lines.csv' (FORMAT csv)\$\$,
    \$\$COPY public.bill_line_twin ($cols) FROM '$WORK/lines.csv' (FORMAT csv)\$\$, $RUNS, true);
SQL
)
echo "$copy_out"

# one line per transaction, from many sessions at once
for t in twin tco; do
    if [ $t = tco ]; then target=tco.bill_line; else target=public.bill_line_twin; fi
    cat > "$WORK/$t.sql" <<SQL
\set aid random(1, 400)
\set p random(1, 4)
INSERT INTO $target (account_id, product_code, period_start, period_end, list_amount)
VALUES (:aid, (ARRAY['cvm', 'cos', 'cdn', 'cbs'])[:p], now() - interval '1 hour', now(), 1.5);
SQL
done
tps() {  # tps <twin|tco>: one pgbench run, prints its tps
    pgbench -n -c "$CLIENTS" -j 2 -T "$SECONDS_EACH" -f "$WORK/$1.sql" 2>&1 \
        | sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | head -n 1
}
twin_tps=(); tco_tps=()
for round in 1 2; do
    twin_tps+=("$(tps twin)"); tco_tps+=("$(tps tco)")
done
ratio_out=$(python3 - "${twin_tps[@]}" "${tco_tps[@]}" <<'PY'
import sys
v = [float(x or 0) for x in sys.argv[1:]]
twin, tco = max(v[:len(v)//2]), max(v[len(v)//2:])
r = tco / twin if twin else 0
print("ingest: pgbench one line per transaction: tco %.0f tps vs twin %.0f tps (best of 2 each), ratio %.2f%s"
      % (tco, twin, r, " (ok, limit 1/1.5 = 0.67)" if r >= 1 / 1.5 else " (UNDER LIMIT 1/1.5 = 0.67)"))
PY
)
echo "$ratio_out"
# what was inserted is all there, once
"${PSQL[@]}" -At -c "SELECT 'ingest: lines inserted by pgbench: ' || (SELECT count(*) FROM tco.bill_line) || ' in tco.bill_line, '
                            || (SELECT count(*) FROM public.bill_line_twin) || ' in the twin; ids unique: '
                            || ((SELECT count(*) FROM tco.bill_line) = (SELECT count(*) FROM tco.bill_line_id))"
if [ -n "${BENCH_ENFORCE:-}" ] && echo "$copy_out $ratio_out" | grep -q 'OVER LIMIT\|UNDER LIMIT'; then
    exit 1
fi
[ -n "$copy_out" ] && [ -n "$ratio_out" ]
