#!/usr/bin/env bash
# Benchmark of tco_cluster (README "Running on several servers"): the same
# bill lines settled on one server and on three shards behind a router, all
# on this machine, and the router's overhead per routed call.
#
#   bash scripts/bench_cluster.sh                          (3,000,000 lines)
#   BENCH_LINES=60000 TCO_PGROOT=/tmp/pgroot bash scripts/bench_cluster.sh
#
# 1. ingest: BENCH_LINES lines of cycle 2023-02 (BENCH_ORGS organizations of
#    20 accounts, half of the members in trusteeship) written with
#    tco.insert_bill_lines in batches of 50,000, to the single server and
#    through the router (split by shard);
# 2. settlement: SELECT * FROM tco.settle_cycle('2023-02') on the single
#    server and on the router (every shard in parallel), with the totals
#    checked equal;
# 3. routed calls: pgbench, one client, BENCH_SECONDS seconds, of
#    tco.trusteeship_effective_payer for accounts of organization 1, on the
#    router and straight on the shard holding it: calls/s and the difference
#    in latency per call;
# 4. account moves: tco.add_member of accounts with BENCH_MOVE_LINES bill
#    lines each (default "0 1000 10000"; open lines of cycle 2023-02), each
#    moved to an organization of the other shard (two-phase commit, README
#    "Accounts that change shard"), BENCH_MOVES accounts per size (default 5):
#    ms per move (median, min, max) and lines moved per second.
#
#   bash scripts/bench_cluster.sh moves                    (part 4 only: a router and two shards)
source "$(dirname "$0")/common.sh"
cd "$TCO_ROOT"
MODE=${1:-all}
case "$MODE" in all|moves) ;; *) echo "usage: $0 [moves]" >&2; exit 2 ;; esac
LINES=${BENCH_LINES:-3000000}
ORGS=${BENCH_ORGS:-30}
SECONDS_RUN=${BENCH_SECONDS:-10}
MOVE_LINES=${BENCH_MOVE_LINES:-0 1000 10000}
MOVES=${BENCH_MOVES:-5}
BATCH=50000
ensure_deps
build_install
[ "$(id -u)" -eq 0 ] && export PGUSER=postgres
export PGUSER="${PGUSER:-$(id -un)}"

B_TMP=$(mktemp -d /tmp/tco-bench-cluster.XXXXXX); chmod 755 "$B_TMP"
NODES=(router shard1 shard2 shard3 single)
[ "$MODE" = moves ] && NODES=(router shard1 shard2)
declare -A PORT
cleanup() { local n; for n in "${NODES[@]}"; do node_stop "$B_TMP/$n"; done; rm -rf "$B_TMP"; }
trap cleanup EXIT
export NODE_SHARED_BUFFERS=256MB
for n in "${NODES[@]}"; do PORT[$n]=$(node_start "$B_TMP/$n"); done
on() { local n=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -h "$B_TMP/$n" -p "${PORT[$n]}" -d tco "$@"; }
for n in "${NODES[@]}"; do
    psql -X -q -h "$B_TMP/$n" -p "${PORT[$n]}" -d postgres -c 'CREATE DATABASE tco' >/dev/null
done
for n in "${NODES[@]}"; do
    [ "$n" = router ] || on "$n" -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION tco CASCADE' >/dev/null
done
on router -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION tco_cluster CASCADE' >/dev/null
for n in "${NODES[@]}"; do
    case "$n" in shard*) on router -c "SELECT tco_cluster.add_shard('$n', 'host=$B_TMP/$n port=${PORT[$n]} dbname=tco')" >/dev/null ;; esac
done

# 4. account moves (run last in the full benchmark, alone with "moves")
bench_moves() {
    local n first a org_a org_b id t sizes=() results=()
    log "account moves: $MOVES accounts each of ${MOVE_LINES// /, } lines, moved by tco.add_member"
    # two organizations, one per shard (admins 9000001, 9000002), whose shards
    # hold lines of 2023-02 already (the cycle's partition exists on both)
    on router >/dev/null <<SQL
SET client_min_messages = warning;
SELECT tco.create_product('mv', 'hour') WHERE NOT EXISTS (SELECT 1 FROM tco_cluster.product WHERE product_code = 'mv');
SELECT tco.create_account(9000001, 'mover admin 1'), tco.create_account(9000002, 'mover admin 2');
SQL
    on router -c "SELECT tco.create_organization(9000001, 'Movers 1')" -c "SELECT tco.create_organization(9000002, 'Movers 2')" >/dev/null
    org_a=$(on router -At -c "SELECT org_id FROM tco_cluster.account_directory WHERE account_id = 9000001")
    org_b=$(on router -At -c "SELECT org_id FROM tco_cluster.account_directory WHERE account_id = 9000002")
    [ "$(on router -At -c "SELECT tco_cluster.shard_of_org($org_a) <> tco_cluster.shard_of_org($org_b)")" = t ] \
        || { echo "FAIL: the movers' organizations are on one shard"; exit 1; }
    on router -c "SELECT tco.insert_bill_lines(ARRAY[9000001, 9000002]::bigint[], ARRAY['mv', 'mv'], NULL, ARRAY['2023-02-01 00:00+08', '2023-02-01 00:00+08']::timestamptz[],
                  ARRAY['2023-02-01 01:00+08', '2023-02-01 01:00+08']::timestamptz[], ARRAY[1, 1]::numeric[], NULL, NULL)" >/dev/null
    id=9100000
    for n in $MOVE_LINES; do
        local ms_list=()
        for _ in $(seq 1 "$MOVES"); do
            id=$((id + 1))
            on router -c "SELECT tco.create_account($id, 'mover $id', NULL, 10)" >/dev/null
            if [ "$n" -gt 0 ]; then
                first=0
                while [ "$first" -lt "$n" ]; do
                    local count=$(( n - first < BATCH ? n - first : BATCH ))
                    on router -c "SELECT tco.insert_bill_lines(array_fill($id::bigint, ARRAY[$count]), array_fill('mv'::text, ARRAY[$count]), NULL,
                        ARRAY(SELECT '2023-02-01 00:00+08'::timestamptz + (g % 600) * interval '1 hour' + (g / 600) * interval '1 minute' FROM generate_series($first, $first + $count - 1) g),
                        ARRAY(SELECT '2023-02-01 01:00+08'::timestamptz + (g % 600) * interval '1 hour' + (g / 600) * interval '1 minute' FROM generate_series($first, $first + $count - 1) g),
                        ARRAY(SELECT round(0.01 * (1 + g % 997), 6) FROM generate_series($first, $first + $count - 1) g), NULL, NULL)" >/dev/null
                    first=$((first + count))
                done
            fi
            # the organization of the other shard
            a=$(on router -At -c "SELECT CASE WHEN tco_cluster.shard_of_account($id) = tco_cluster.shard_of_org($org_a) THEN $org_b ELSE $org_a END")
            t=$(on router -At <<SQL
SELECT clock_timestamp() AS t0 \gset
SELECT tco.add_member($a, $id);
SELECT round(extract(epoch FROM clock_timestamp() - :'t0') * 1000, 1);
SQL
)
            t=$(tail -n 1 <<<"$t")
            [ "$(on router -At -c "SELECT tco_cluster.shard_of_account($id) = tco_cluster.shard_of_org($a)")" = t ] \
                || { echo "FAIL: account $id did not move"; exit 1; }
            ms_list+=("$t")
        done
        results+=("$n $(printf '%s\n' "${ms_list[@]}" | sort -n | awk '{ v[NR] = $1 } END { printf "%s %s %s", v[int((NR + 1) / 2)], v[1], v[NR] }')")
    done
    echo
    echo "tco_cluster account moves: tco.add_member to an organization of the other shard, $MOVES accounts per size ($(nproc) cores)"
    printf '%-12s %14s %10s %10s %14s\n' "bill lines" "ms per move" "min" "max" "lines/s"
    local r
    for r in "${results[@]}"; do
        set -- $r
        printf '%-12s %14s %10s %10s %14s\n' "$1" "$2" "$3" "$4" \
            "$(awk -v n="$1" -v t="$2" 'BEGIN { if (n > 0) printf "%.0f", n / (t / 1000); else print "-" }')"
    done
}
if [ "$MODE" = moves ]; then
    bench_moves
    exit 0
fi

# now in milliseconds
ms() { date +%s%3N; }
setup="SET client_min_messages = warning;
SELECT tco.set_billing_timezone('Asia/Shanghai');
SELECT tco.create_product(p, g::tco.granularity) FROM (VALUES ('cvm', 'hour'), ('cos', 'day'), ('cdn', 'week')) v(p, g);
SELECT count(tco.create_entity(o, 'Entity ' || o, true)) FROM generate_series(1, $ORGS) o;
SELECT count(tco.create_account(1000 * o + m, 'a', o, 1000, 100)) FROM generate_series(1, $ORGS) o, generate_series(0, 19) m;
SELECT count(tco.create_organization(1000 * o, 'Org ' || o)) FROM generate_series(1, $ORGS) o;
SELECT count(tco.add_member(o, 1000 * o + m)) FROM generate_series(1, $ORGS) o, generate_series(1, 19) m;
SELECT count(tco.establish_trusteeship(1000 * o + m, 1000 * o, '2023-01-15 10:30+08')) FROM generate_series(1, $ORGS) o, generate_series(1, 19, 2) m;"
batch_sql() {   # batch_sql FIRST COUNT: lines FIRST .. FIRST+COUNT-1 of the workload
    echo "SELECT tco.insert_bill_lines(array_agg(1000 * (1 + g % $ORGS) + (g / $ORGS) % 20), array_agg((ARRAY['cvm','cos','cdn'])[1 + g % 3]), NULL,
        array_agg('2023-02-01 00:00+08'::timestamptz + (g % 27) * interval '1 day' + (g % 24) * interval '1 hour'),
        array_agg('2023-02-01 01:00+08'::timestamptz + (g % 27) * interval '1 day' + (g % 24) * interval '1 hour'),
        array_agg(round(0.01 * (1 + g % 997), 6)), NULL, NULL) FROM generate_series($1, $(( $1 + $2 - 1 ))) g"
}
declare -A INGEST SETTLE TOTALS
for n in single router; do
    on "$n" -c "$setup" >/dev/null
    log "ingest on $n: $LINES lines"
    t0=$(ms); first=0
    while [ "$first" -lt "$LINES" ]; do
        count=$(( LINES - first < BATCH ? LINES - first : BATCH ))
        on "$n" -c "$(batch_sql "$first" "$count")" >/dev/null
        first=$(( first + count ))
    done
    INGEST[$n]=$(( $(ms) - t0 ))
done
for n in shard1 shard2 shard3 single; do on "$n" -c 'VACUUM ANALYZE' >/dev/null; done
for n in single router; do
    log "settlement on $n"
    t0=$(ms)
    TOTALS[$n]=$(on "$n" -At -c "SELECT concat_ws('|', statements, lines, list_total, due_total) FROM tco.settle_cycle('2023-02')")
    SETTLE[$n]=$(( $(ms) - t0 ))
    echo "    $n: ${TOTALS[$n]} in ${SETTLE[$n]} ms"
done
[ "${TOTALS[single]}" = "${TOTALS[router]}" ] || { echo "FAIL: the totals differ: ${TOTALS[single]} vs ${TOTALS[router]}"; exit 1; }

log "routed calls: tco.trusteeship_effective_payer, pgbench, 1 client, $SECONDS_RUN s"
shard=$(on router -At -c "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_org(1)")
cat >"$B_TMP/payer.sql" <<'PGB'
\set m random(0, 19)
SELECT tco.trusteeship_effective_payer(1000 + :m, 'cvm', '2023-02-10 00:00+08');
PGB
chmod 644 "$B_TMP/payer.sql"
declare -A TPS
for n in router "$shard"; do
    TPS[$n]=$(pgbench -n -M prepared -c 1 -T "$SECONDS_RUN" -f "$B_TMP/payer.sql" -h "$B_TMP/$n" -p "${PORT[$n]}" tco 2>/dev/null \
              | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
done

echo
echo "tco_cluster benchmark: $LINES lines of 2023-02, $ORGS organizations of 20 accounts, 3 shards on one machine ($(nproc) cores)"
printf '%-34s %12s %12s %8s\n' "" "one server" "router+3" "ratio"
printf '%-34s %10s ms %10s ms %8s\n' "ingest (insert_bill_lines, 50k)" "${INGEST[single]}" "${INGEST[router]}" \
    "$(awk -v a="${INGEST[router]}" -v b="${INGEST[single]}" 'BEGIN { printf "%.2f", a / b }')"
printf '%-34s %10s ms %10s ms %8s\n' "settle_cycle('2023-02')" "${SETTLE[single]}" "${SETTLE[router]}" \
    "$(awk -v a="${SETTLE[router]}" -v b="${SETTLE[single]}" 'BEGIN { printf "%.2f", a / b }')"
printf '%-34s %9s /s %9s /s  (on %s / through the router)\n' "trusteeship_effective_payer calls" "${TPS[$shard]}" "${TPS[router]}" "$shard"
awk -v r="${TPS[router]}" -v s="${TPS[$shard]}" 'BEGIN { printf "router overhead per routed call: %.3f ms (%.3f ms through the router, %.3f ms on the shard)\n", 1000 / r - 1000 / s, 1000 / r, 1000 / s }'

bench_moves
