#!/usr/bin/env bash
# One tco installation over several servers (DESIGN section 10, README
# "Running on several servers"): starts a router and three shards, plus one
# single tco server for reference, each a throwaway cluster of its own
# (private socket directory and port, run as postgres, all stopped at the end,
# also on failure), then:
#   1. the same workload (test/cluster/workload.sql) against one server and
#      against the router: identical output (payers, settlement, BI views);
#   2. the router's own checks (test/cluster/router.sql): topology, directory,
#      SPLIT reaching each shard once, remote SQL of the BI views;
#   3. faults, security and account moves (below).
# Run by scripts/test.sh; alone: TCO_PGROOT=... bash scripts/test_cluster.sh
source "$(dirname "$0")/common.sh"
cd "$TCO_ROOT"
if [ -z "${PGHOST:-}" ]; then          # alone: set up as scripts/test.sh does
    ensure_deps
    build_install
fi
[ "$(id -u)" -eq 0 ] && export PGUSER=postgres
export PGUSER="${PGUSER:-$(id -un)}"

CL_TMP=$(mktemp -d /tmp/tco-cluster.XXXXXX); chmod 755 "$CL_TMP"
NODES=(router shard1 shard2 shard3 single)
declare -A PORT
cleanup() {
    local n
    for n in "${NODES[@]}"; do node_stop "$CL_TMP/$n"; done
    rm -rf "$CL_TMP"
}
trap cleanup EXIT

for n in "${NODES[@]}"; do
    PORT[$n]=$(node_start "$CL_TMP/$n")
done
log "router ${PORT[router]}, shards ${PORT[shard1]} ${PORT[shard2]} ${PORT[shard3]}, single ${PORT[single]} (sockets under $CL_TMP)"
# psql on a node: on NODE [psql args...]
on() { local n=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -h "$CL_TMP/$n" -p "${PORT[$n]}" "$@"; }
conninfo() { echo "host=$CL_TMP/$1 port=${PORT[$1]} dbname=tco"; }

for n in shard1 shard2 shard3 single; do
    on "$n" -d postgres -c 'CREATE DATABASE tco' >/dev/null
    on "$n" -d tco -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION tco CASCADE' >/dev/null
done
on router -d postgres -c 'CREATE DATABASE tco' >/dev/null
on router -d tco >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION tco_cluster CASCADE;
SELECT tco_cluster.add_shard('shard1', '$(conninfo shard1)');
SELECT tco_cluster.add_shard('shard2', '$(conninfo shard2)');
SELECT tco_cluster.add_shard('shard3', '$(conninfo shard3)');
SQL

log "1. differential: the same workload on one server and on the router"
on single -d tco -f test/cluster/workload.sql >"$CL_TMP/single.out"
on router -d tco -f test/cluster/workload.sql >"$CL_TMP/router.out"
if ! diff -u "$CL_TMP/single.out" "$CL_TMP/router.out" >"$CL_TMP/workload.diff"; then
    head -n 60 "$CL_TMP/workload.diff"; echo "FAIL: the router's answers differ from one server's"; exit 1
fi
lines=$(wc -l <"$CL_TMP/router.out")
[ "$lines" -gt 2000 ] || { echo "FAIL: the workload output is too short ($lines lines)"; exit 1; }
log "identical output ($lines lines)"
[ -n "${TCO_CLUSTER_KEEP:-}" ] && cp "$CL_TMP/router.out" "$TCO_CLUSTER_KEEP"
on router -d tco -c 'SELECT * FROM tco_cluster.shard ORDER BY shard_id'

# check NODE DESCRIPTION EXPECTED SQL: the one-value answer of SQL on NODE
checks=0
check() {
    local node=$1 what=$2 want=$3 got
    got=$(psql -X -q -At -v ON_ERROR_STOP=1 -h "$CL_TMP/$node" -p "${PORT[$node]}" -d "${CHECK_DB:-tco}" -c "$4" 2>&1) || true
    if [ "$got" != "$want" ]; then
        echo "FAIL: $what"; echo "  on $node: $4"; echo "  expected: $want"; echo "  got:      $got"; exit 1
    fi
    checks=$((checks + 1)); echo "ok $checks - $what"
}
# fails NODE DESCRIPTION PATTERN SQL [ROLE]: SQL fails with an error matching PATTERN
fails() {
    local node=$1 what=$2 pattern=$3 out
    if out=$(psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -h "$CL_TMP/$node" -p "${PORT[$node]}" -d tco -U "${5:-$PGUSER}" -c "$4" 2>&1); then
        echo "FAIL: $what: no error"; echo "  $4"; echo "  got: $out"; exit 1
    fi
    if ! grep -Eq -- "$pattern" <<<"$out"; then
        echo "FAIL: $what: the error does not match /$pattern/"; echo "  $4"; echo "$out" | sed 's/^/  /'; exit 1
    fi
    checks=$((checks + 1)); echo "ok $checks - $what"; echo "$out" | sed -n '1,3s/^/    /p'
}

log "2. topology, directory, SPLIT, pushed-down BI reads"
check router "three shards, two organizations and twelve accounts each" "1|2|12,2|2|12,3|2|12" \
    "SELECT string_agg(concat_ws('|', shard_id, organizations, accounts), ',' ORDER BY shard_id) FROM tco_cluster.shard"
check router "an organization's accounts live on its shard" "0" \
    "SELECT count(*) FROM tco_cluster.account_directory d WHERE d.org_id IS NOT NULL AND d.shard_id <> tco_cluster.shard_of_org(d.org_id)"
check router "unknown ids are not in the directory" "|" "SELECT concat(tco_cluster.shard_of_org(999), '|', tco_cluster.shard_of_account(999))"
fails router "an unknown account is refused as on one server (23503)" "23503.*account 999 does not exist" \
    "SELECT tco.available_credit(999)"
for n in shard1 shard2 shard3; do
    want=$(on router -d tco -At -c "SELECT string_agg(account_id::text, ',' ORDER BY account_id) FROM tco_cluster.account_directory
                                     WHERE shard_id = (SELECT shard_id FROM tco_cluster.shard_conf WHERE name = '$n')")
    check "$n" "$n holds the bill lines of its own accounts, and only those" "$want" \
        "SELECT string_agg(account_id::text, ',' ORDER BY account_id) FROM (SELECT DISTINCT account_id FROM tco.bill_line) b"
    check "$n" "$n got its lines of the big SPLIT call (3,600) in one statement, one transaction" "1:3600" \
        "SELECT count(DISTINCT xmin::text) || ':' || count(*) FROM tco.bill_line WHERE issued_at = period_start + interval '2 hours'"
    check "$n" "$n has the global entities, products and billing zone" "6|5|Asia/Shanghai" \
        "SELECT concat_ws('|', (SELECT count(*) FROM tco.entity), (SELECT count(*) FROM tco.product), tco.billing_timezone())"
done
on router -d tco -At -c "EXPLAIN (VERBOSE, COSTS OFF) SELECT payer_account_id, due_total FROM tco.settlement_by_payer WHERE cycle = '2023-02' AND org_id = 3 AND payer_account_id IN (300, 303)" >"$CL_TMP/explain.txt"
sed 's/^/    /' "$CL_TMP/explain.txt"
# grep_count WHAT WANT PATTERN FILE
grep_count() {
    local got; got=$(grep -cE -- "$3" "$4") || true
    [ "$got" = "$2" ] || { echo "FAIL: $1 (expected $2 lines matching /$3/, got $got)"; exit 1; }
    checks=$((checks + 1)); echo "ok $checks - $1"
}
grep_count "the BI view reads the three shards concurrently (async foreign scans)" 3 'Async Foreign Scan on tco_cluster.s[123]_settlement_by_payer' "$CL_TMP/explain.txt"
grep_count "the filters on cycle, organization and payer are pushed down to every shard" 3 \
    "Remote SQL: SELECT payer_account_id, due_total FROM tco.settlement_by_payer WHERE .*payer_account_id = ANY \\('\\{300,303\\}'::bigint\\[\\]\\).* AND \\(\\(cycle = '2023-02'\\)\\) AND \\(\\(org_id = 3\\)\\)" "$CL_TMP/explain.txt"

# a shard added later: the global data is copied to it, new organizations go there
on shard3 -d postgres -c 'CREATE DATABASE tco4' >/dev/null
psql -X -q -h "$CL_TMP/shard3" -p "${PORT[shard3]}" -d tco4 -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION tco CASCADE' >/dev/null
check router "a fourth shard can be added later" "4" \
    "SELECT tco_cluster.add_shard('shard4', 'host=$CL_TMP/shard3 port=${PORT[shard3]} dbname=tco4')"
on router -d tco -c "SELECT tco.create_entity(7, 'Entity 7', true)" -c "SELECT tco.create_account(700, 'acct-7-0', 7, 50)" \
    -c "SELECT tco.create_organization(700, 'Org 7')" >/dev/null
check router "a new entity's account and organization go to the new, least loaded shard" "4|4" \
    "SELECT concat(tco_cluster.shard_of_account(700), '|', tco_cluster.shard_of_org(7))"
check router "the new shard answers through the router" "50.00|0" \
    "SELECT concat(tco.available_credit(700), '|', (SELECT count(*) FROM tco_cluster.s4_settlement_by_payer))"
got=$(psql -X -At -h "$CL_TMP/shard3" -p "${PORT[shard3]}" -d tco4 -c "SELECT concat_ws('|', (SELECT count(*) FROM tco.entity), (SELECT count(*) FROM tco.product), tco.billing_timezone(), (SELECT count(*) FROM tco.organization))")
[ "$got" = "7|5|Asia/Shanghai|1" ] || { echo "FAIL: the new shard lacks the global data: $got"; exit 1; }
checks=$((checks + 1)); echo "ok $checks - the new shard got the entities, products and billing zone"

log "3. corrections routed to the line's shard; faults: a shard down during a cluster-wide settlement"
on single -d tco -f test/cluster/march_lines.sql >/dev/null
on router -d tco -f test/cluster/march_lines.sql >/dev/null
# line_of NODE ACCOUNT PRODUCT START: the id of an original line (on the router:
# asked of the account's shard)
line_of() {
    local n=$1
    [ "$n" = router ] && n=$(on router -d tco -At -c "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account($2)")
    on "$n" -d tco -At -c "SELECT line_id FROM tco.bill_line WHERE account_id = $2 AND product_code = '$3' AND period_start = '$4' AND corrects_line_id IS NULL"
}
for n in single router; do
    on "$n" -d tco -v l_jan="$(line_of $n 104 cvm '2023-01-01 00:00+08')" -v l_feb="$(line_of $n 305 cos '2023-02-03 07:00+08')" \
        -v l_mar="$(line_of $n 201 cvm '2023-03-02 00:00+08')" -f test/cluster/corrections.sql >"$CL_TMP/${n}_corrections.out"
done
if ! diff -u "$CL_TMP/single_corrections.out" "$CL_TMP/router_corrections.out" || [ "$(grep -c '^t$' "$CL_TMP/router_corrections.out")" != 5 ]; then
    echo "FAIL: corrections through the router answer otherwise than on one server:"; cat "$CL_TMP/router_corrections.out"; exit 1
fi
checks=$((checks + 1)); echo "ok $checks - corrections through the router answer as on one server (a settled line cancelled and corrected again through its correction line, a no-op, a raise, an open line updated in place)"
corr_q="SELECT concat_ws('|', account_id, product_code, period_start, list_amount, correction_reason, corrects_line_id IS NOT NULL) FROM tco.bill_line
         WHERE corrects_line_id IS NOT NULL OR correction_reason IS NOT NULL
            OR (account_id, product_code, period_start) IN ((104, 'cvm', '2023-01-01 00:00+08'), (305, 'cos', '2023-02-03 07:00+08'), (201, 'cvm', '2023-03-02 00:00+08'))"
on single -d tco -At -c "$corr_q" | sort >"$CL_TMP/corr_single.txt"
for n in shard1 shard2 shard3; do on "$n" -d tco -At -c "$corr_q"; done | sort >"$CL_TMP/corr_router.txt"
[ "$(wc -l <"$CL_TMP/corr_router.txt")" = 6 ] && diff -u "$CL_TMP/corr_single.txt" "$CL_TMP/corr_router.txt" \
    || { echo "FAIL: the corrected lines on the shards differ from one server's:"; cat "$CL_TMP/corr_router.txt"; exit 1; }
checks=$((checks + 1)); echo "ok $checks - the corrected lines and correction lines on the shards equal one server's (6 rows; March's settlement below bills them)"
for n in single router; do
    fails "$n" "on $n, a correction of an unknown line is refused (23503)" "23503.*bill line 999999 does not exist" \
        "SELECT tco.correct_bill_line(999999, 1, 'unknown')"
done
fails router "a correction of a line id in a shard's range that no shard has is refused (23503)" "23503.*bill line 2000000999999 does not exist" \
    "SELECT tco.correct_bill_line(2000000999999, 1, 'unknown')"
fails router "a correction without a line id is refused as on one server (22004)" "22004.*line_id" \
    "SELECT tco.correct_bill_line(NULL, 1, 'unknown')"
fails router "a correction's arguments are checked before the line, as on one server (22023)" "22023.*new_list_amount" \
    "SELECT tco.correct_bill_line(999999, -1, 'unknown')"
# errors a shard raises read as one server's (no PL/Proxy prefix)
for n in single router; do
    psql -X -q -h "$CL_TMP/$n" -p "${PORT[$n]}" -d tco -f test/cluster/errors.sql 2>&1 \
        | grep -Ev '^(LOCATION|SCHEMA NAME|TABLE NAME|COLUMN NAME|DATATYPE NAME|CONSTRAINT NAME): ' >"$CL_TMP/${n}_errors.out"
done
if ! diff -u "$CL_TMP/single_errors.out" "$CL_TMP/router_errors.out" || [ "$(grep -c '^psql:.*ERROR:' "$CL_TMP/router_errors.out")" -lt 20 ]; then
    echo "FAIL: errors through the router read otherwise than on one server:"; cat "$CL_TMP/router_errors.out"; exit 1
fi
checks=$((checks + 1)); echo "ok $checks - $(grep -c '^psql:.*ERROR:' "$CL_TMP/router_errors.out") errors raised by shards read through the router as on one server (SQLSTATE, message, detail, hint)"
on single -d tco -f test/cluster/march_settle.sql >"$CL_TMP/single_march.out"
# statements SHARD [MAX_ID]: the statements of a shard (ids, payers, cycles,
# totals) up to an id, as one digest, after the largest id
statements() { psql -X -At -h "$CL_TMP/$1" -p "${PORT[$1]}" -d tco -c \
    "SELECT max(statement_id) || ' ' || md5(coalesce(string_agg(concat_ws('|', statement_id, payer_account_id, cycle, list_total, due_total), ',' ORDER BY statement_id), ''))
       FROM tco.statement WHERE statement_id <= ${2:-9223372036854775807}"; }
l_down=$(line_of router 202 cvm '2023-03-03 00:00+08')
l_up=$(line_of router 101 cvm '2023-03-03 00:00+08')
a_up=$(on shard1 -d tco -At -c "SELECT list_amount FROM tco.bill_line WHERE line_id = $l_up")
as_pg "$PG_BIN/pg_ctl" -D "$CL_TMP/shard2/data" -m fast -w stop >/dev/null
fails router "a correction of a line on the stopped shard names the shard" \
    "08006.*shard 2 \"shard2\" \\(host=$CL_TMP/shard2 port=${PORT[shard2]} dbname=tco\\) is unreachable" \
    "SELECT tco.correct_bill_line($l_down, 1, 'outage')"
check router "a correction of a line of another shard is routed during the outage (here to its own amount: nothing written)" "t" \
    "SELECT tco.correct_bill_line($l_up, $a_up, 'outage') IS NULL"
fails router "a call for an account on the stopped shard names the shard and its conninfo" \
    "08006.*shard 2 \"shard2\" \\(host=$CL_TMP/shard2 port=${PORT[shard2]} dbname=tco\\) is unreachable" \
    "SELECT tco.trusteeship_effective_payer(200, 'cvm', '2023-03-05 00:00+08')"
check router "calls for organizations on the other shards go on working" "100|300" \
    "SELECT concat(tco.trusteeship_effective_payer(101, 'cvm', '2023-03-05 00:00+08'), '|', tco.trusteeship_effective_payer(301, 'cvm', '2023-03-05 00:00+08'))"
check router "settling an organization of another shard works" "t" "SELECT statements > 0 FROM tco.settle_cycle('2023-03', 1)"
fails router "the cluster-wide settlement fails naming the stopped shard" \
    "08006.*settlement of cycle 2023-03 on every shard failed: shard 2 \"shard2\" \\(host=[^)]*\\) unreachable" \
    "SELECT * FROM tco.settle_cycle('2023-03')"
fails router "a cross-shard BI read fails instead of returning a partial result" \
    "could not connect to server \"tco_shard_shard2\"" "SELECT count(*) FROM tco.settlement_by_payer WHERE cycle = '2023-03'"
fails router "writing global data fails naming the stopped shard" "08006.*shard 2 \"shard2\"" \
    "SELECT tco.create_product('gpu', 'hour')"
check router "the failed write left nothing on the router" "0" "SELECT count(*) FROM tco_cluster.product WHERE product_code = 'gpu'"
s1_before=$(statements shard1); s3_before=$(statements shard3)
as_pg "$PG_BIN/pg_ctl" -D "$CL_TMP/shard2/data" -l "$CL_TMP/shard2/server.log" -w -t 60 start >/dev/null
on router -d tco -f test/cluster/march_settle.sql >"$CL_TMP/router_march.out"
if ! diff -u "$CL_TMP/single_march.out" "$CL_TMP/router_march.out"; then
    echo "FAIL: the settlement rerun after the outage differs from one server's"; exit 1
fi
checks=$((checks + 1)); echo "ok $checks - the rerun after the restart completes the settlement: same totals and views as one server"
[ "$(statements shard1 "${s1_before%% *}")" = "$s1_before" ] && [ "$(statements shard3 "${s3_before%% *}")" = "$s3_before" ] \
    || { echo "FAIL: the rerun changed statements of shard 1 or 3 written before the outage"; exit 1; }
checks=$((checks + 1)); echo "ok $checks - the rerun left the statements written before the outage unchanged (organization 1 of shard 1 settled during it)"
all_after=$(for n in shard1 shard2 shard3; do statements $n; done)
on router -d tco -c "SELECT * FROM tco.settle_cycle('2023-03')" >/dev/null
[ "$(for n in shard1 shard2 shard3; do statements $n; done)" = "$all_after" ] \
    || { echo "FAIL: a second cluster-wide settlement changed statements"; exit 1; }
checks=$((checks + 1)); echo "ok $checks - settling again changes nothing on any shard"

log "4. security: conninfo for admins only, a reader across the shards through user mappings and RLS"
# roles are per server: the same names on the router, on every shard and on the single server
for n in router shard1 shard2 shard3 single; do
    on "$n" -d tco >/dev/null <<'SQL'
CREATE ROLE cl_ops LOGIN IN ROLE tco_admin;
CREATE ROLE cl_reader LOGIN IN ROLE tco_reader;
CREATE ROLE cl_outsider LOGIN;
SQL
done
shard_of_300=$(on router -d tco -At -c "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account(300)")
# the login -> account mapping lives with the account, on its shard
on "$shard_of_300" -d tco -c "INSERT INTO tco.account_login (role_name, account_id) VALUES ('cl_reader', 300)" >/dev/null
on single -d tco -c "INSERT INTO tco.account_login (role_name, account_id) VALUES ('cl_reader', 300)" >/dev/null
check router "user mappings give the reader and the operator their credentials on the four shards" "4|4" \
    "SELECT concat(tco_cluster.map_role('cl_reader'), '|', tco_cluster.map_role('cl_ops'))"
as_role() { local node=$1 role=$2; shift 2; psql -X -q -At -v ON_ERROR_STOP=1 -h "$CL_TMP/$node" -p "${PORT[$node]}" -d tco -U "$role" "$@"; }
reader_q="SELECT concat_ws('|', cycle, payer_account_id, org_id, list_total, due_total) FROM tco.settlement_by_payer ORDER BY cycle, payer_account_id"
as_role single cl_reader -c "$reader_q" >"$CL_TMP/reader_single.out"
as_role router cl_reader -c "$reader_q" >"$CL_TMP/reader_router.out"
[ -s "$CL_TMP/reader_router.out" ] && diff -u "$CL_TMP/reader_single.out" "$CL_TMP/reader_router.out" \
    || { echo "FAIL: the reader sees other rows through the router than on one server"; exit 1; }
checks=$((checks + 1)); echo "ok $checks - the reader (admin of organization 3) sees through the router exactly what it sees on one server ($(wc -l <"$CL_TMP/reader_router.out") rows)"
check router "the reader's rows come from its own organization only, over the four shards" "3" \
    "SET ROLE cl_reader; SELECT string_agg(DISTINCT org_id::text, ',') FROM tco.settlement_by_member"
check router "the reader lists the shards without their conninfo" "4|0" \
    "SET ROLE cl_reader; SELECT concat(count(*), '|', count(conninfo)) FROM tco_cluster.shard"
check router "an operator (tco_admin) reads the conninfo" "4|4" \
    "SET ROLE cl_ops; SELECT concat(count(*), '|', count(conninfo)) FROM tco_cluster.shard"
check router "an operator's routed calls reach the shards as itself" "100|cl_ops" \
    "SET ROLE cl_ops; SELECT concat(tco.trusteeship_effective_payer(101, 'cvm', '2023-03-05 00:00+08'), '|', current_user)"
fails router "the reader cannot read the shard table" "42501" "SELECT conninfo FROM tco_cluster.shard_conf" cl_reader
fails router "the reader cannot change topology" "42501" "SELECT tco_cluster.add_shard('x', 'host=/tmp port=1 dbname=x')" cl_reader
fails router "the operator cannot hand out credentials" "42501" "SELECT tco_cluster.map_role('cl_outsider')" cl_ops
fails router "the reader cannot write through the router" "42501" "SELECT tco.create_product('gpu', 'hour')" cl_reader
fails router "a role without tco_reader reads nothing" "42501" "SELECT count(*) FROM tco.settlement_by_payer" cl_outsider
fails router "a role without tco_reader calls nothing" "42501" "SELECT tco.available_credit(101)" cl_outsider
fails router "a conninfo with a password is refused (credentials belong in user mappings)" "22023.*names a user or a password" \
    "SELECT tco_cluster.add_shard('x', 'host=/tmp port=1 dbname=x password=secret')"
check router "the operator adds a shard's error-free description with no password anywhere" "0" \
    "SELECT count(*) FROM tco_cluster.shard_conf WHERE conninfo ~* 'password'"

log "5. accounts that change shard: all their rows, two-phase commit, crashes, tco_cluster.recover()"
check router "every shard draws the ids of schema tco from its own range (every sequence of schema tco but the 4 of the router's ids)" \
    "1:1000000000000:1999999999999:true,2:2000000000000:2999999999999:true,3:3000000000000:3999999999999:true" \
    "SELECT string_agg(concat_ws(':', s.shard_id, r.lo, r.hi, r.n), ',' ORDER BY s.shard_id) FROM tco_cluster.shard_conf s,
            LATERAL (SELECT * FROM tco_cluster.dblink_values(s.fdw_server::text,
                     'SELECT min(seqmin) || '':'' || max(seqmax) || '':'' || (count(*) = (SELECT count(*) - 4 FROM pg_class c
                          WHERE c.relnamespace = ''tco''::regnamespace AND c.relkind = ''S'')) FROM pg_sequence q JOIN tco_shard.id_sequences() i ON i.seq = q.seqrelid') v) x(v),
            LATERAL (SELECT split_part(x.v, ':', 1) lo, split_part(x.v, ':', 2) hi, split_part(x.v, ':', 3) n) r WHERE s.shard_id <= 3"
check shard1 "ids drawn on a shard are in its range (statements, lines, trusteeships)" "t" \
    "SELECT (SELECT min(statement_id) FROM tco.statement) > 1000000000000 AND (SELECT max(line_id) FROM tco.bill_line) < 2000000000000
        AND (SELECT min(trusteeship_id) FROM tco.trusteeship) > 1000000000000"
# accounts 900-902 of a new entity get a home shard (one of the first three:
# entity 7's accounts fill shard 4 first); organization $org lives on another one
on router -d tco -c "SELECT count(tco.create_account(a, 'acct-7-' || a, 7)) FROM generate_series(710, 729) a" \
    -c "SELECT tco.create_entity(9, 'Entity 9', true)" \
    -c "SELECT tco.create_account(a, 'mover-' || a, 9, 30) FROM generate_series(900, 902) a" >/dev/null
acct_0=900; acct_1=901; rich=902
org=$(on router -d tco -At -c "SELECT min(org_id) FROM tco_cluster.org_directory WHERE shard_id <> tco_cluster.shard_of_account(900) AND shard_id <= 3")
src=$(on router -d tco -At -c "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account($acct_0)")
dst=$(on router -d tco -At -c "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_org($org)")
# an organization on the accounts' home shard, for membership history
home_org=$(on router -d tco -At -c "SELECT min(org_id) FROM tco_cluster.org_directory WHERE shard_id = tco_cluster.shard_of_account(900)")
lines_of() {   # lines_of ACCOUNT CYCLE-START N AMOUNT: N hourly lines, a day apart
    echo "SELECT tco.insert_bill_lines(array_fill($1::bigint, ARRAY[$3]), array_fill('cvm'::text, ARRAY[$3]), NULL,
       ARRAY(SELECT '$2 00:00+08'::timestamptz + g * interval '1 day' FROM generate_series(0, $3 - 1) g),
       ARRAY(SELECT '$2 01:00+08'::timestamptz + g * interval '1 day' FROM generate_series(0, $3 - 1) g),
       array_fill($4::numeric, ARRAY[$3]), NULL, NULL);"
}
# a. an account with history: ledger, membership history, benefits used by
# settlement, an alert that fired, bill lines of three cycles, two of them
# settled cluster-wide with its statements paid and invoiced (a credit note too)
on router -d tco >/dev/null <<SQL
SELECT tco.deposit($acct_0, 20);
$(lines_of $acct_0 2023-04-01 5 2.5)
SELECT tco.set_contract_discount($acct_0, NULL, 0.1);
SELECT tco.deposit($rich, 200);
SELECT tco.add_member($home_org, $rich);
SELECT tco.remove_member($rich);
SELECT tco.set_contract_discount($rich, NULL, 0.05, 'cvm', '2023-05-01 00:00+08');
SELECT tco.grant_coupon($rich, 6, '2023-12-31 00:00+08', 'cvm');
SELECT tco.grant_stored_value_card($rich, 10, '2023-12-31 00:00+08');
$(lines_of $rich 2023-05-01 20 1.25)
$(lines_of $rich 2023-06-01 20 2.5)
$(lines_of $rich 2023-07-01 10 3)
SELECT * FROM tco.settle_cycle('2023-05');
SELECT * FROM tco.settle_cycle('2023-06');
SQL
on "$src" -d tco >/dev/null <<SQL
SELECT tco.set_alert_threshold($rich, 'cycle_spending', 5);
$(lines_of $rich 2023-07-11 2 4)
SELECT tco.pay_statement(statement_id) FROM tco.statement WHERE payer_account_id = $rich ORDER BY cycle;
SELECT tco.issue_invoice(statement_id) FROM tco.statement WHERE payer_account_id = $rich ORDER BY cycle;
SELECT tco.issue_credit_note(min(invoice_id), 1, 'goodwill') FROM tco.invoice WHERE recipient_account_id = $rich;
SQL
# every row of the account (as tco_shard.move_closure finds it), per table, and a digest of them all
rows_q="SELECT (SELECT string_agg(key || '=' || jsonb_array_length(value), ',' ORDER BY key) FROM jsonb_each(c) WHERE jsonb_array_length(value) > 0)
                 || ' ' || (SELECT md5(string_agg(key || (e - E'\\ttid')::text, E'\\n' ORDER BY key || (e - E'\\ttid')::text))
                              FROM jsonb_each(c), jsonb_array_elements(value) e)
          FROM tco_shard.move_closure($rich) c"
rows_before=$(on "$src" -d tco -At -c "$rows_q")
echo "    account $rich on $src: ${rows_before% *}"
for t in tco.statement tco.invoice tco.credit_note tco.benefit tco.alert tco.member_history tco.settled_pack; do
    grep -q "$t=" <<<"$rows_before" || { echo "FAIL: account $rich has no rows of $t to move"; exit 1; }
done
explain_q="SELECT md5(string_agg(tco.explain_line(line_id)::text, ',' ORDER BY line_id)) || ' ' || count(*) FROM tco.bill_line WHERE account_id = $rich"
explain_before=$(on "$src" -d tco -At -c "$explain_q")
bi_q="SELECT md5(string_agg(concat_ws('|', b.*), ',' ORDER BY b.cycle, b.statement_id)) FROM tco.settlement_by_payer b WHERE payer_account_id = $rich"
bim_q="SELECT md5(string_agg(concat_ws('|', b.*), ',' ORDER BY b.cycle, b.product_code)) FROM tco.settlement_by_member b WHERE account_id = $rich"
settle_q="SELECT string_agg(concat_ws('|', s.*), ',') FROM (SELECT * FROM tco.settle_cycle('2023-05') UNION ALL SELECT * FROM tco.settle_cycle('2023-06')) s"
bi_before=$(on router -d tco -At -c "$bi_q"); bim_before=$(on router -d tco -At -c "$bim_q"); settle_before=$(on router -d tco -At -c "$settle_q")
credit_before=$(on router -d tco -At -c "SELECT tco.available_credit($rich)")

fails router "an account with unpaid statements is refused, naming them" \
    "55000.*account 605 cannot move to another shard: it has unpaid statements \\(cycles 2023-01, 2023-02, 2023-03\\)" \
    "SELECT tco_cluster.move_account(605, (SELECT shard_id FROM tco_cluster.shard_conf WHERE shard_id <> tco_cluster.shard_of_account(605) LIMIT 1))"
fails router "an account in an organization and an active trusteeship is refused" \
    "55000.*account 101 cannot move to another shard: it is a member of organization 1; it is in an active trusteeship" \
    "SELECT tco_cluster.move_account(101, (SELECT shard_id FROM tco_cluster.shard_conf WHERE shard_id <> tco_cluster.shard_of_account(101) LIMIT 1))"
on router -d tco -c "SELECT tco.remove_member(202)" >/dev/null
fails router "history shared with accounts and organizations that stay is refused, naming it (here a manager, an organization)" \
    "55000.*account 202 cannot move to another shard: .*its tco.statement rows reference tco.organization org_id 2, which stays on this shard.*its tco.trusteeship rows reference tco.account account_id 200, which stays" \
    "SELECT tco_cluster.move_account(202, (SELECT shard_id FROM tco_cluster.shard_conf WHERE shard_id <> tco_cluster.shard_of_account(202) LIMIT 1))"
fails "$src" "on a shard, the move's functions are for superusers only (not tco_admin)" "42501.*superusers only" \
    "SELECT tco_shard.detach_account($rich)" cl_ops
check router "refused moves leave nothing prepared and are recorded as aborted" "0|aborted" \
    "SELECT concat((SELECT count(*) FROM tco_cluster.recover()), '|', (SELECT state FROM tco_cluster.account_move ORDER BY move_id DESC LIMIT 1))"

fails router "a move needs a target shard (22004)" "22004.*to_shard_id" "SELECT tco_cluster.move_account($rich, NULL)"
fails router "the size of a move's chunks is checked" "22023.*invalid value for tco_cluster.move_chunk_rows" \
    "SET tco_cluster.move_chunk_rows = '-3'; SELECT tco_cluster.move_account($rich, tco_cluster.shard_of_org($org))"
# chunks of 3 rows: every table of more than 3 rows crosses in several
on router -d tco -c "SET tco_cluster.move_chunk_rows = 3" -c "SELECT tco_cluster.move_account($rich, tco_cluster.shard_of_org($org))" >/dev/null
check router "the account moves with its whole history to another shard (tco_cluster.move_account)" "$dst|done" \
    "SELECT (SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account($rich)) || '|' || state FROM tco_cluster.account_move ORDER BY move_id DESC LIMIT 1"
check "$dst" "every row arrived unchanged, ids included (account, ledger, lines, statements, packs, invoices, credit note, benefits, alerts, history)" \
    "$rows_before" "$rows_q"
check "$src" "and none is left on the source shard" "" "SELECT string_agg(key, ',') FROM jsonb_each(tco_shard.move_closure($rich)) WHERE jsonb_array_length(value) > 0"
for n in "$src" "$dst"; do
    check "$n" "the move left no table of its own on $n (tco_shard.move_drop)" "0" \
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'tco_shard'::regnamespace AND relkind IN ('r', 'p')"
done
check "$dst" "explain_line of each of its lines gives what it gave before the move" "$explain_before" "$explain_q"
check router "the BI views show the same rows (statement ids included)" "$bi_before|$bim_before" "SELECT ($bi_q) || '|' || ($bim_q)"
check router "settling its settled cycles again gives the same totals" "$settle_before" "$settle_q"
check router "its balance and credit are the same" "$credit_before" "SELECT tco.available_credit($rich)"
on router -d tco -c "SELECT tco.add_member($org, $rich)" >/dev/null
check router "and joins an organization there" "$org" "SELECT org_id FROM tco_cluster.account_directory WHERE account_id = $rich"
on router -d tco -c "SELECT * FROM tco.settle_cycle('2023-07')" >/dev/null
check router "its open cycle is settled where it lives now, once" "1|38.00|$dst" \
    "SELECT concat_ws('|', count(*), sum(b.list_total), (SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account($rich)))
       FROM tco.settlement_by_payer b WHERE b.payer_account_id = $rich AND b.cycle = '2023-07'"
for n in "$src" "$dst"; do
    check "$n" "tco.bill_line_id of $n lists exactly the lines there" "0|0" \
        "SELECT (SELECT count(*) FROM tco.bill_line_id k WHERE NOT EXISTS (SELECT 1 FROM tco.bill_line b WHERE b.line_id = k.line_id)) || '|' ||
                (SELECT count(*) FROM tco.bill_line b WHERE NOT EXISTS (SELECT 1 FROM tco.bill_line_id k WHERE k.line_id = b.line_id))"
done
# its lines keep the ids of the source's range: the router finds them on every shard
rich_line=$(on "$dst" -d tco -At -c "SELECT min(line_id) FROM tco.bill_line WHERE account_id = $rich AND corrects_line_id IS NULL")
check router "a line of the moved account (its id in the source's range) is found on its new shard" "$src|$dst" \
    "SELECT (SELECT name FROM tco_cluster.shard_conf WHERE shard_id = $rich_line / tco_cluster.id_range_size()) || '|'
            || (SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_line($rich_line))"
on router -d tco -c "SELECT tco.correct_bill_line($rich_line, 0.5, 'moved')" >/dev/null
check "$dst" "and a correction of it through the router is written there (its May line, settled: a correction line)" "1|-0.750000" \
    "SELECT count(*) || '|' || sum(list_amount) FROM tco.bill_line WHERE corrects_line_id = $rich_line AND correction_reason = 'moved'"

# b. crashes between PREPARE and COMMIT PREPARED, without any hook in the
# code: a session holds a lock on the router's directory, which the move's
# decision waits for once both shards have prepared; then the router's
# session is killed (b1), or the target shard crashes (b2).
state_q="SELECT concat_ws('|', (SELECT balance FROM tco.account WHERE account_id = $acct_0), (SELECT count(*) FROM tco.ledger WHERE account_id = $acct_0),
                  (SELECT count(*) || ':' || sum(list_amount) FROM tco.bill_line WHERE account_id = $acct_0),
                  (SELECT count(*) FROM tco.contract_discount WHERE account_id = $acct_0))"
before=$(on "$src" -d tco -At -c "$state_q")
echo "    account $acct_0 on $src: $before; organization $org on $dst"
prepared() { on "$1" -d tco -At -c "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'tco_move_%'"; }
# hold_directory: lock the directory in the background (released by release_directory)
hold_directory() {
    on router -d tco -c "BEGIN" -c "LOCK TABLE tco_cluster.account_directory IN EXCLUSIVE MODE" -c "SELECT pg_sleep(120)" >/dev/null 2>&1 &
    for _ in $(seq 1 100); do
        [ "$(on router -d tco -At -c "SELECT count(*) FROM pg_locks WHERE relation = 'tco_cluster.account_directory'::regclass AND mode = 'ExclusiveLock' AND granted")" = 1 ] && return
        sleep 0.1
    done
    echo "FAIL: could not lock the directory"; exit 1
}
release_directory() {
    on router -d tco -At -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(120)'" >/dev/null
}
# wait_prepared: until both shards hold the move's prepared transaction
wait_prepared() {
    for _ in $(seq 1 300); do
        [ "$(prepared "$src")" = 1 ] && [ "$(prepared "$dst")" = 1 ] && return
        sleep 0.1
    done
    echo "FAIL: the move did not prepare on both shards"; exit 1
}
# b1. the router crashes (its session killed with SIGKILL: PostgreSQL resets every
# session of the router) after both PREPAREs, before the decision: recover() rolls back
hold_directory
on router -d tco -c "SELECT tco.add_member($org, $acct_0)" >"$CL_TMP/crash_a.log" 2>&1 &
mover=$!
wait_prepared
kill -9 "$(on router -d tco -At -c "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT tco.add_member%'")"
wait $mover && { echo "FAIL: the move's session did not die"; exit 1; }
for _ in $(seq 1 100); do on router -d tco -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
check "$src" "after the router crashed between prepare and decision, the source shard holds a prepared transaction" "1" \
    "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'tco_move_%'"
check "$dst" "and so does the target shard" "1" "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'tco_move_%'"
check router "recover() rolls the undecided move back on both shards" "rolled back|2" \
    "SELECT action || '|' || transactions FROM tco_cluster.recover()"
check "$src" "the account is whole on its shard again" "$before" "$state_q"
check "$dst" "and absent from the target" "0|0" "$state_q"
check router "the directory still points at the source shard, the move is recorded as aborted" "$src|aborted" \
    "SELECT (SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account($acct_0)) || '|' || state FROM tco_cluster.account_move ORDER BY move_id DESC LIMIT 1"

# b2. the target shard crashes after both PREPAREs; the decision is then taken and
# COMMIT PREPARED fails on it; recover() commits once it is back
hold_directory
on router -d tco -c "SELECT tco.add_member($org, $acct_0)" >"$CL_TMP/crash_b.log" 2>&1 &
mover=$!
wait_prepared
as_pg "$PG_BIN/pg_ctl" -D "$CL_TMP/$dst/data" -m immediate -w stop >/dev/null
release_directory
wait $mover && { echo "FAIL: the move reported success with its target shard down"; exit 1; }
grep -q "is decided but not finished" "$CL_TMP/crash_b.log" || { echo "FAIL: the move did not report the unfinished decision:"; cat "$CL_TMP/crash_b.log"; exit 1; }
checks=$((checks + 1)); echo "ok $checks - the move reports a decided but unfinished move when COMMIT PREPARED cannot reach the target"
check router "after the decision, the directory already points at the target" "$dst" \
    "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account($acct_0)"
as_pg "$PG_BIN/pg_ctl" -D "$CL_TMP/$dst/data" -l "$CL_TMP/$dst/server.log" -w -t 60 start >/dev/null
check "$dst" "the prepared transaction survived the target shard's crash" "1" "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'tco_move_%'"
check router "recover() commits the decided move on both shards" "committed|2" \
    "SELECT action || '|' || transactions FROM tco_cluster.recover()"
check "$dst" "the account arrived whole: balance, ledger, bill lines, discount" "$before" "$state_q"
check "$src" "and left the source shard" "0|0" "$state_q"
check router "recover() again finds nothing to do" "0" "SELECT count(*) FROM tco_cluster.recover()"
on router -d tco -c "SELECT tco.add_member($org, $acct_0)" >/dev/null
check router "the moved account joins organization $org on its shard" "$org|$acct_0" \
    "SELECT concat((SELECT org_id FROM tco_cluster.account_directory WHERE account_id = $acct_0), '|', tco.trusteeship_effective_payer($acct_0, 'cvm', '2023-04-01 00:00+08'))"

# c. an ordinary move, in the add_member call itself, held between prepare and
# decision: a line written meanwhile through the router (the directory still
# names the source) waits on the source for the move and is then refused, and
# recover() leaves the move alone
hold_directory
on router -d tco -c "SELECT tco.add_member($org, $acct_1)" >"$CL_TMP/move_c.log" 2>&1 &
mover=$!
wait_prepared
on router -d tco -c "$(lines_of $acct_1 2023-04-10 1 6)" >"$CL_TMP/write_c.log" 2>&1 &
writer=$!
for _ in $(seq 1 100); do
    [ "$(on "$src" -d tco -At -c "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%insert_bill_lines%'")" = 1 ] && break
    sleep 0.1
done
check "$src" "a line written through the router during the move waits on the source shard for it" "1" \
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%insert_bill_lines%'"
check router "recover() during the move skips it and says so (after waiting 5 s for the move's lock)" "skipped: in progress in another session|0" \
    "SELECT action || '|' || transactions FROM tco_cluster.recover() WHERE account_id = $acct_1"
release_directory
wait $mover || { echo "FAIL: the held move failed:"; cat "$CL_TMP/move_c.log"; exit 1; }
if wait $writer; then echo "FAIL: the line written during the move was accepted on the source shard"; exit 1; fi
grep -q "23503" "$CL_TMP/write_c.log" || grep -q "violates foreign key constraint" "$CL_TMP/write_c.log" \
    || { echo "FAIL: the line written during the move was not refused as a line of an absent account:"; cat "$CL_TMP/write_c.log"; exit 1; }
checks=$((checks + 1)); echo "ok $checks - once the move has committed, that line is refused (the account left the source: $(grep -o 'ERROR:.*' "$CL_TMP/write_c.log" | head -c 90))"
on router -d tco -c "$(lines_of $acct_1 2023-04-10 1 6)" >/dev/null
check router "written again, it goes to the account's new shard" "0|1" \
    "SELECT (SELECT v FROM tco_cluster.dblink_values((SELECT fdw_server::text FROM tco_cluster.shard_conf WHERE name = '$src'),
                 'SELECT count(*) FROM tco.bill_line WHERE account_id = $acct_1') v) || '|' ||
            (SELECT v FROM tco_cluster.dblink_values((SELECT fdw_server::text FROM tco_cluster.shard_conf WHERE name = '$dst'),
                 'SELECT count(*) FROM tco.bill_line WHERE account_id = $acct_1') v)"
check router "add_member of an account of another shard moves it there first" "$dst|done" \
    "SELECT (SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account($acct_1)) || '|' || state FROM tco_cluster.account_move ORDER BY move_id DESC LIMIT 1"
check "$dst" "the moved account is a member of organization $org on the target shard" "$org" "SELECT org_id FROM tco.member WHERE account_id = $acct_1"
check "$src" "no transaction is left prepared" "0" "SELECT count(*) FROM pg_prepared_xacts"
# c2. a row of the account changed while the move gathers it: the move waits
# for it (rows are locked as they are gathered) and copies it as committed,
# once, and leaves nothing on the source
on router -d tco -c "SELECT tco.create_account(904, 'mover-904', 9, 30)" -c "SELECT tco.deposit(904, 5)" >/dev/null
src904=$(on router -d tco -At -c "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account(904)")
on "$src904" -d tco -c "SELECT tco.set_alert_threshold(904, 'cycle_spending', 5)" >/dev/null
led904=$(on "$src904" -d tco -At -c "SELECT count(*) FROM tco.ledger WHERE account_id = 904")
on "$src904" -d tco -c "BEGIN" -c "UPDATE tco.alert_threshold SET threshold = 7 WHERE account_id = 904" -c "SELECT pg_sleep(2)" -c "COMMIT" >/dev/null &
updater=$!
for _ in $(seq 1 50); do
    [ "$(on "$src904" -d tco -At -c "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(2)'")" = 1 ] && break
    sleep 0.1
done
on router -d tco -c "SELECT tco_cluster.move_account(904, (SELECT shard_id FROM tco_cluster.shard_conf WHERE name <> '$src904' AND shard_id <= 3 LIMIT 1))" >/dev/null
wait $updater
dst904=$(on router -d tco -At -c "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account(904)")
check "$dst904" "a row updated while the move gathered it arrives once, as committed (threshold 7), with the account's ledger" "1|7.00|$led904" \
    "SELECT concat_ws('|', count(*), max(threshold), (SELECT count(*) FROM tco.ledger WHERE account_id = 904)) FROM tco.alert_threshold WHERE account_id = 904"
check "$src904" "and nothing of the account is left on the source" "" \
    "SELECT string_agg(key, ',') FROM jsonb_each(tco_shard.move_closure(904)) WHERE jsonb_array_length(value) > 0"

# c3. a move cancelled by statement_timeout ends the shards' transactions at
# once (no session of it stays open holding the account), recover() records
# it rolled back, and the account is whole where it was
on router -d tco -c "SELECT tco.create_account(905, 'mover-905', 9, 30)" \
    -c "SELECT tco.insert_bill_lines(array_fill(905::bigint, ARRAY[20000]), array_fill('cvm'::text, ARRAY[20000]), NULL,
            ARRAY(SELECT '2023-05-01 00:00+08'::timestamptz + g * interval '1 minute' FROM generate_series(1, 20000) g),
            ARRAY(SELECT '2023-05-01 01:00+08'::timestamptz + g * interval '1 minute' FROM generate_series(1, 20000) g),
            array_fill(0.5::numeric, ARRAY[20000]), NULL, NULL)" >/dev/null
src905=$(on router -d tco -At -c "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account(905)")
# the router's session stays open after the cancel (its dblink connections would close with it)
psql -X -q -v VERBOSITY=verbose -h "$CL_TMP/router" -p "${PORT[router]}" -d tco -c "SET statement_timeout = '300ms'" \
    -c "SELECT tco_cluster.move_account(905, (SELECT shard_id FROM tco_cluster.shard_conf WHERE name <> '$src905' AND shard_id <= 3 LIMIT 1))" \
    -c "RESET statement_timeout" -c "SELECT pg_sleep(4)" >"$CL_TMP/cancel.log" 2>&1 &
canceller=$!
sleep 2
check "$src905" "no transaction of a move cancelled by statement_timeout is left open on the source shard (its router session still open)" "0" \
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
wait $canceller
grep -q "57014" "$CL_TMP/cancel.log" || { echo "FAIL: the move was not cancelled by statement_timeout:"; cat "$CL_TMP/cancel.log"; exit 1; }
checks=$((checks + 1)); echo "ok $checks - that move failed with 57014"
check router "recover() records the cancelled move rolled back" "rolled back" \
    "SELECT string_agg(action, ',') FROM tco_cluster.recover() WHERE account_id = 905"
check "$src905" "and the account is whole on its shard" "905|20000" \
    "SELECT concat_ws('|', (SELECT account_id FROM tco.account WHERE account_id = 905), (SELECT count(*) FROM tco.bill_line WHERE account_id = 905))"

# c4. lines in a detached (archived) cycle keep the account on its shard, with a
# clear refusal; once the cycle is attached again, the account moves with them
on router -d tco -c "SELECT tco.create_account(906, 'mover-906', 9, 30)" -c "$(lines_of 906 2023-11-01 3 2)" \
    -c "SELECT * FROM tco.settle_cycle('2023-11')" >/dev/null
src906=$(on router -d tco -At -c "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account(906)")
on "$src906" -d tco -c "SELECT tco.pay_statement(statement_id) FROM tco.statement WHERE payer_account_id = 906" \
    -c "SELECT tco.detach_cycle('2023-11')" >/dev/null
to906="(SELECT shard_id FROM tco_cluster.shard_conf WHERE name <> '$src906' AND shard_id <= 3 LIMIT 1)"
fails router "an account with lines in a detached cycle is refused, naming the cycle and what to do" \
    "55000.*account 906 cannot move to another shard: it has bill lines in detached billing cycle 2023-11 \\(table tco.bill_line_p2023_11\\): attach it again first" \
    "SELECT tco_cluster.move_account(906, $to906)"
on "$src906" -d tco -c "SELECT tco.attach_cycle('2023-11')" >/dev/null
on router -d tco -c "SELECT tco_cluster.move_account(906, $to906)" >/dev/null
check router "attached again, the cycle's lines move with the account" "3|0" \
    "SELECT (SELECT v FROM tco_cluster.dblink_values((SELECT fdw_server::text FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account(906)),
                 'SELECT count(*) FROM tco.bill_line WHERE account_id = 906') v) || '|' ||
            (SELECT v FROM tco_cluster.dblink_values((SELECT fdw_server::text FROM tco_cluster.shard_conf WHERE name = '$src906'),
                 'SELECT count(*) FROM tco.bill_line WHERE account_id = 906') v)"

# d. a new organization goes to the shard with the fewest organizations (shard 4), its admin moved there
on router -d tco -c "SELECT tco.create_entity(11, 'Entity 11', true)" -c "SELECT tco.create_account(1100, 'admin-11', 11, 10)" >/dev/null
check router "the new admin account's home is one of the first three shards" "t" "SELECT tco_cluster.shard_of_account(1100) <= 3"
on router -d tco -c "SELECT tco.create_organization(1100, 'Org 11')" -c "SELECT tco.create_organization(605, 'Org 605')" >/dev/null
check router "its organization goes to the shard with the fewest organizations, the admin moved there first" "4|4|done" \
    "SELECT concat(tco_cluster.shard_of_org(d.org_id), '|', d.shard_id, '|', (SELECT state FROM tco_cluster.account_move WHERE account_id = 1100))
       FROM tco_cluster.account_directory d WHERE d.account_id = 1100"
check router "an admin that cannot move stays: its organization is created on its shard" "t" \
    "SELECT tco_cluster.shard_of_org(d.org_id) = d.shard_id FROM tco_cluster.account_directory d WHERE d.account_id = 605"

# f. the settlement state: a move waits at most 5 seconds for a settlement of one
# of the account's cycles, and does not bring unsettled lines into a cycle settled
# on the target
on router -d tco -c "SELECT tco.create_account(903, 'mover-903', 9, 30)" >/dev/null
on router -d tco -c "$(lines_of 903 2023-09-01 3 1)" >/dev/null
h903=$(on router -d tco -At -c "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account(903)")
to903=$(on router -d tco -At -c "SELECT min(shard_id) FROM tco_cluster.shard_conf WHERE shard_id <> tco_cluster.shard_of_account(903) AND shard_id <= 3")
t903=$(on router -d tco -At -c "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = $to903")
org903=$(on router -d tco -At -c "SELECT min(org_id) FROM tco_cluster.org_directory WHERE shard_id = tco_cluster.shard_of_account(903)")
on "$h903" -d tco -c "BEGIN" -c "SELECT count(*) FROM tco.settle_cycle('2023-09', $org903)" -c "SELECT pg_sleep(120)" >"$CL_TMP/hold.log" 2>&1 &
for i in $(seq 1 101); do
    [ "$(on "$h903" -d tco -At -c "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(120)'")" = 1 ] && break; sleep 0.1
    [ "$i" = 101 ] && { echo "FAIL: no settlement holds cycle 2023-09:"; cat "$CL_TMP/hold.log"; exit 1; }
done
fails router "a move while a settlement of one of the account's cycles runs is refused (55P03)" \
    "55P03.*billing cycle 2023-09 is being settled" "SELECT tco_cluster.move_account(903, $to903)"
on "$h903" -d tco -At -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(120)'" >/dev/null
on "$t903" -d tco -c "SELECT * FROM tco.settle_cycle('2023-09')" >/dev/null
fails router "unsettled lines are not moved into a cycle settled on the target" \
    "55000.*account 903 has bill lines of billing cycle 2023-09 not settled yet, and the cycle is settled on this shard" \
    "SELECT tco_cluster.move_account(903, $to903)"
check router "both refusals left the account on its shard, nothing prepared" "$h903|0|0" \
    "SELECT concat_ws('|', (SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account(903)), (SELECT count(*) FROM tco_cluster.recover()),
                       (SELECT count(*) FROM tco_cluster.account_move WHERE account_id = 903 AND state <> 'aborted'))"
check "$h903" "with its lines" "3" "SELECT count(*) FROM tco.bill_line WHERE account_id = 903"

# e. the move reads its tables from the catalog: every column of schema tco that
# names an account or another row is a reference the move follows, or one of
# the few known non-references; tables and columns added later move too.
unhandled_q="SELECT coalesce(string_agg(c.oid::regclass || '.' || a.attname, ',' ORDER BY 1), '')
  FROM tco_shard.move_tables() t JOIN pg_class c ON c.oid = t.tbl
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE t.kind = 'account' AND a.attname ~ '(_id|_ids|account|payer|owner|holder)'
   AND NOT EXISTS (SELECT 1 FROM tco_shard.move_refs() r WHERE r.tbl = c.oid AND r.col = a.attname)
   AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p' AND k.conkey = ARRAY[a.attnum])
   AND (c.relname, a.attname) NOT IN (('bill_line', 'line_id'), ('member_history', 'org_id'), ('settled_pack', 'line_ids'),
                                      ('settled_pack', 'discount_ids'), ('settled_pack', 'use_line_ids'), ('settled_pack', 'use_benefit_ids'))"
check "$src" "every column of tco's account data that names an account or a row is followed by the move (or is a known non-reference)" "" "$unhandled_q"
check "$src" "the account data is inserted parents first (no table before one it references)" "0" \
    "SELECT count(*) FROM tco_shard.move_refs() r
       JOIN unnest(tco_shard.move_order()) WITH ORDINALITY a(t, i) ON a.t = r.tbl
       JOIN unnest(tco_shard.move_order()) WITH ORDINALITY b(t, j) ON b.t = r.ref_tbl
      WHERE r.tbl <> r.ref_tbl AND j > i"
support=$(on router -d tco -At -c "SELECT tco_cluster.shard_support_sql()")
for d in cova covb; do
    on shard3 -d postgres -c "CREATE DATABASE $d" >/dev/null
    psql -X -q -v ON_ERROR_STOP=1 -h "$CL_TMP/shard3" -p "${PORT[shard3]}" -d $d >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
BEGIN; $support COMMIT;
SELECT tco_shard.set_id_ranges(CASE '$d' WHEN 'cova' THEN 11 ELSE 12 END, 1000000000000);
SELECT tco.create_product('cvm', 'hour');
SELECT tco.create_entity(1, 'E1', true);
-- tables and columns a later version could add (as 1.4 added tco.late_line,
-- tco.commitment_charge and tco.bill_line.corrects_line_id)
ALTER TABLE tco.bill_line ADD COLUMN superseded_line_id bigint;
CREATE TABLE tco.usage_adjustment (adjustment_id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                                   account_id bigint NOT NULL REFERENCES tco.account, line_id bigint, amount numeric NOT NULL);
CREATE TABLE tco.adjustment_fee (fee_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                 payer_account_id bigint NOT NULL, adjustment_id bigint, amount numeric NOT NULL);
SQL
done
CHECK_DB=cova check shard3 "added tables and columns are followed: account columns, *_line_id, ids of new tables" \
    "tco.adjustment_fee.adjustment_id>tco.usage_adjustment,tco.adjustment_fee.payer_account_id>tco.account,tco.bill_line.superseded_line_id>tco.bill_line,tco.usage_adjustment.account_id>tco.account,tco.usage_adjustment.line_id>tco.bill_line" \
    "SELECT string_agg(tbl || '.' || col || '>' || ref_tbl, ',' ORDER BY tbl::text, col) FROM tco_shard.move_refs() WHERE tbl::text IN ('tco.usage_adjustment', 'tco.adjustment_fee') OR col = 'superseded_line_id'"
psql -X -q -v ON_ERROR_STOP=1 -h "$CL_TMP/shard3" -p "${PORT[shard3]}" -d cova >/dev/null <<'SQL'
SELECT tco.create_account(5, 'late', 1, 10);
SELECT tco.insert_bill_lines(ARRAY[5, 5]::bigint[], ARRAY['cvm', 'cvm'], NULL, ARRAY['2023-08-01 00:00+00', '2023-08-02 00:00+00']::timestamptz[],
                             ARRAY['2023-08-01 01:00+00', '2023-08-02 01:00+00']::timestamptz[], ARRAY[1, 2]::numeric[], NULL, NULL);
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, superseded_line_id)
SELECT 5, 'cvm', '2023-08-03 00:00+00', '2023-08-03 01:00+00', 0.5, min(line_id) FROM tco.bill_line;
INSERT INTO tco.usage_adjustment (account_id, line_id, amount) SELECT 5, max(line_id), 3 FROM tco.bill_line;
INSERT INTO tco.adjustment_fee (payer_account_id, adjustment_id, amount) SELECT 5, adjustment_id, 4 FROM tco.usage_adjustment;
-- and 1.4's own: a late line and a correction, billed by the next cycle
SELECT tco.settle_cycle('2023-08');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
VALUES (5, 'cvm', '2023-08-04 00:00+00', '2023-08-04 01:00+00', 2.5);
SELECT tco.correct_bill_line(min(line_id), 0.25, 'repriced') FROM tco.bill_line WHERE account_id = 5;
SELECT tco.settle_cycle('2023-09');
SELECT tco.pay_statement(statement_id) FROM tco.statement WHERE payer_account_id = 5;
SQL
cov_q="SELECT (SELECT string_agg(key || '=' || jsonb_array_length(value), ',' ORDER BY key) FROM jsonb_each(c) WHERE jsonb_array_length(value) > 0)
                 || ' ' || (SELECT md5(string_agg(key || (e - E'\\ttid')::text, E'\\n' ORDER BY key || (e - E'\\ttid')::text))
                              FROM jsonb_each(c), jsonb_array_elements(value) e)
          FROM tco_shard.move_closure(5) c"
cov_before=$(psql -X -At -h "$CL_TMP/shard3" -p "${PORT[shard3]}" -d cova -c "$cov_q")
psql -X -At -v ON_ERROR_STOP=1 -h "$CL_TMP/shard3" -p "${PORT[shard3]}" -d cova -c "SELECT tco_shard.detach_account_rows(5)" >"$CL_TMP/cov.json"
# the target has settled the account's cycles too (as a cluster-wide settlement does)
on shard3 -d covb -c "SELECT tco.settle_cycle('2023-08'), tco.settle_cycle('2023-09')" >/dev/null
echo "SELECT tco_shard.import_account(:'data'::jsonb)" |
    psql -X -q -v ON_ERROR_STOP=1 -h "$CL_TMP/shard3" -p "${PORT[shard3]}" -d covb -v data="$(cat "$CL_TMP/cov.json")" >/dev/null
grep -q "tco.adjustment_fee=1.*tco.late_line=2.*tco.usage_adjustment=1" <<<"${cov_before% *}" \
    || { echo "FAIL: the new tables' rows are not the account's: $cov_before"; exit 1; }
CHECK_DB=covb check shard3 "an account moves with the rows of tables added later, ids unchanged ($(cut -d' ' -f1 <<<"$cov_before"))" "$cov_before" "$cov_q"

log "6. the router's catalog: pinned search_path, nothing for PUBLIC, a guarded install"
check router "every function of the router pins search_path (but the four I/O functions of tco.billing_cycle)" "4" \
    "SELECT count(*) FROM pg_proc WHERE pronamespace IN ('tco'::regnamespace, 'tco_cluster'::regnamespace)
       AND NOT coalesce(proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)"
check router "PUBLIC may execute only those four" "4" \
    "SELECT count(*) FROM pg_proc WHERE pronamespace IN ('tco'::regnamespace, 'tco_cluster'::regnamespace)
       AND has_function_privilege('cl_outsider', oid, 'EXECUTE')"
check router "the SECURITY DEFINER functions are add_shard, map_role, move_account, recover, recover_move, refresh_shards, billing_timezone" \
    "add_shard,billing_timezone,map_role,move_account,recover,recover_move,refresh_shards" \
    "SELECT string_agg(proname, ',' ORDER BY proname) FROM pg_proc WHERE prosecdef AND pronamespace IN ('tco'::regnamespace, 'tco_cluster'::regnamespace)"
on router -d postgres -c 'CREATE DATABASE guard' -c '\c guard' -c 'CREATE SCHEMA tco_cluster' \
    -c 'CREATE FUNCTION tco_cluster.planted() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$' >/dev/null
if out=$(psql -X -q -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -h "$CL_TMP/router" -p "${PORT[router]}" -d guard \
              -c 'CREATE EXTENSION tco_cluster CASCADE' 2>&1) || ! grep -q '42P06.*schema tco_cluster exists already' <<<"$out"; then
    echo "FAIL: CREATE EXTENSION installed into a prepared schema tco_cluster: $out"; exit 1
fi
checks=$((checks + 1)); echo "ok $checks - CREATE EXTENSION refuses a schema tco_cluster prepared beforehand"

log "7. upgrading the router: tco_cluster 1.0, 1.1 and 1.2 updated equal a fresh install, shards refreshed"
cur=$(sed -n "s/^default_version = '\(.*\)'/\1/p" tco_cluster.control)
on router -d postgres -c 'CREATE DATABASE cl_up_new' >/dev/null
on router -d cl_up_new -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION tco_cluster CASCADE' >/dev/null
on router -d cl_up_new -At -f scripts/cluster_catalog_digest.sql >"$CL_TMP/digest_new.txt"
[ "$(wc -l <"$CL_TMP/digest_new.txt")" -gt 300 ] || { echo "FAIL: the catalog digest is too short"; exit 1; }
for old in 1.0 1.1 1.2; do
    db=cl_up_${old/./_}
    on router -d postgres -c "CREATE DATABASE $db" >/dev/null
    on router -d "$db" -c 'SET client_min_messages = warning' -c "CREATE EXTENSION tco_cluster VERSION '$old' CASCADE" \
        -c 'ALTER EXTENSION tco_cluster UPDATE' >/dev/null
    on router -d "$db" -At -f scripts/cluster_catalog_digest.sql >"$CL_TMP/digest_$old.txt"
    if ! diff "$CL_TMP/digest_$old.txt" "$CL_TMP/digest_new.txt" >"$CL_TMP/digest.diff"; then
        echo "FAIL: tco_cluster $old updated to $cur differs from a fresh install:"; head -40 "$CL_TMP/digest.diff"; exit 1
    fi
    checks=$((checks + 1)); echo "ok $checks - tco_cluster $old updated to $cur: $(wc -l <"$CL_TMP/digest_new.txt") catalog facts equal to a fresh install"
done
ranges_q="SELECT string_agg(concat_ws(':', s.shard_id, x.v), ',' ORDER BY s.shard_id) FROM tco_cluster.shard_conf s,
    LATERAL (SELECT * FROM tco_cluster.dblink_values(s.fdw_server::text,
             'SELECT min(seqmin) || '':'' || max(seqmax) FROM pg_sequence q JOIN tco_shard.id_sequences() i ON i.seq = q.seqrelid') v) x(v)"
ranges_before=$(on router -d tco -At -c "$ranges_q")
check router "refresh_shards brings every shard up to date (after an update of the router)" "4" "SELECT tco_cluster.refresh_shards()"
check router "and leaves every shard's id range as it was" "$ranges_before" "$ranges_q"
check router "a second refresh_shards changes nothing either" "4|$ranges_before" "SELECT tco_cluster.refresh_shards() || '|' || ($ranges_q)"
fails router "refresh_shards is for operators" "42501" "SELECT tco_cluster.refresh_shards()" cl_reader
# a router installed with 1.0, with two shards and data, updated: its shards
# refreshed, an account with bill lines then moves to an organization of the
# other shard as on a router installed with 1.1
for n in shard1 shard2; do
    on "$n" -d postgres -c 'CREATE DATABASE up' >/dev/null
    on "$n" -d up -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION tco CASCADE' >/dev/null
done
on router -d postgres -c 'CREATE DATABASE cl_up_data' >/dev/null
on router -d cl_up_data >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION tco_cluster VERSION '1.0' CASCADE;
SELECT tco_cluster.add_shard('up1', 'host=$CL_TMP/shard1 port=${PORT[shard1]} dbname=up');
SELECT tco_cluster.add_shard('up2', 'host=$CL_TMP/shard2 port=${PORT[shard2]} dbname=up');
SELECT tco.create_entity(1, 'Upgrade Ltd', true);
SELECT tco.create_product('cvm', 'hour');
SELECT count(tco.create_account(a, 'up-' || a, 1, 10)) FROM generate_series(1, 4) a;
SELECT tco.create_organization(1, 'Org A'), tco.create_organization(2, 'Org B');
-- a coupon of account 4 and one of organization B's admin (account 2), each
-- drawing the first benefit id of its shard (no id ranges in 1.0)
SELECT tco.grant_coupon(a, 5, '2023-12-31 00:00+08') FROM generate_series(2, 4, 2) a;
SQL
mover=$(on router -d cl_up_data -At -c "SELECT min(a) FROM generate_series(3, 4) a
    WHERE EXISTS (SELECT 1 FROM tco_cluster.org_directory o WHERE o.shard_id <> tco_cluster.shard_of_account(a))")
up_org=$(on router -d cl_up_data -At -c "SELECT min(org_id) FROM tco_cluster.org_directory WHERE shard_id <> tco_cluster.shard_of_account($mover)")
on router -d cl_up_data -c "$(lines_of "$mover" 2023-04-01 3 1.5)" >/dev/null
on router -d cl_up_data -c 'SET client_min_messages = warning' -c 'ALTER EXTENSION tco_cluster UPDATE' >/dev/null
CHECK_DB=cl_up_data check router "a 1.0 router updated: refresh_shards brings its two shards up to date" "2" "SELECT tco_cluster.refresh_shards()"
[ -n "$mover" ] && [ -n "$up_org" ] || { echo "FAIL: no account of the 1.0 router lives apart from an organization"; exit 1; }
on router -d cl_up_data -c "SELECT tco.add_member($up_org, $mover)" >/dev/null
CHECK_DB=cl_up_data check router "and an account with bill lines then moves to an organization of the other shard (3 lines there, none left behind)" "true|3|0" \
    "SELECT (tco_cluster.shard_of_account($mover) = tco_cluster.shard_of_org($up_org))::text || '|'
            || tco_cluster.dblink_value((SELECT fdw_server::text FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_org($up_org)),
                                        'SELECT count(*)::text FROM tco.bill_line WHERE account_id = $mover') || '|'
            || tco_cluster.dblink_value((SELECT fdw_server::text FROM tco_cluster.shard_conf WHERE shard_id <> tco_cluster.shard_of_org($up_org)),
                                        'SELECT count(*)::text FROM tco.bill_line WHERE account_id = $mover')"

# ids drawn before the shards had ranges: account 4's coupon has the id of
# account 2's coupon on the other shard; its move is refused with TC030
# naming the shards, the table and the key, and nothing moves
b4=$(on router -d cl_up_data -At -c "SELECT concat_ws(' ', tco_cluster.shard_of_account(4), tco_cluster.shard_of_account(2), tco_cluster.shard_of_org(2))")
[ "$b4" = "1 2 2" ] || { echo "FAIL: accounts 4 and 2 of the 1.0 router are not on shards 1 and 2 (organization B on 2): $b4"; exit 1; }
up_fails() { local out
    if out=$(psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -h "$CL_TMP/router" -p "${PORT[router]}" -d cl_up_data -c "$3" 2>&1) \
       || ! grep -Eq -- "$2" <<<"$out"; then
        echo "FAIL: $1"; echo "$out" | sed 's/^/  /'; exit 1
    fi
    checks=$((checks + 1)); echo "ok $checks - $1"; echo "$out" | sed -n '1,3s/^/    /p'
}
up_fails "a move whose ids collide with rows of the target is refused with TC030, naming both shards" \
    'TC030.*account 4 cannot move from shard 1 "up1" to shard 2 "up2": its ids collide with rows of the target shard' \
    "SELECT tco.add_member(2, 4)"
CHECK_DB=cl_up_data check router "the refusal names the table and the key, and the move is recorded as aborted" \
    "aborted|true" "SELECT state || '|' || (error ~ 'its rows of tco.benefit collide with rows of this shard \\(benefit_pkey: Key \\(benefit_id\\)=\\(1\\) already exists') FROM tco_cluster.account_move ORDER BY move_id DESC LIMIT 1"
CHECK_DB=cl_up_data check router "nothing moved: account 4 and its coupon are on shard 1, none on shard 2, nothing prepared" "1|1|0|0|0" \
    "SELECT concat_ws('|', tco_cluster.shard_of_account(4),
                      tco_cluster.dblink_value('tco_shard_up1', 'SELECT count(*)::text FROM tco.benefit WHERE owner_account_id = 4'),
                      tco_cluster.dblink_value('tco_shard_up2', 'SELECT count(*)::text FROM tco.account WHERE account_id = 4'),
                      tco_cluster.dblink_value('tco_shard_up1', 'SELECT count(*)::text FROM pg_prepared_xacts'),
                      tco_cluster.dblink_value('tco_shard_up2', 'SELECT count(*)::text FROM pg_prepared_xacts'))"
# a new organization of account 4 goes to the shard with the fewest
# organizations (up2, once organization C is on up1): its admin cannot move
# there, so it is created on the admin's shard
on router -d cl_up_data -c "SELECT tco.create_account(5, 'up-5', 1, 10)" -c "SELECT tco.create_organization(5, 'Org C')" \
    -c "SELECT tco.create_organization(4, 'Org D')" >/dev/null
CHECK_DB=cl_up_data check router "a new organization whose admin's ids collide on the least loaded shard is created on the admin's shard" "4:1:1,5:1:1|2" \
    "SELECT string_agg(concat_ws(':', d.account_id, d.shard_id, tco_cluster.shard_of_org(d.org_id)), ',' ORDER BY d.account_id) || '|'
            || (SELECT count(*) FROM tco_cluster.account_move m WHERE m.account_id = 4 AND m.state = 'aborted' AND m.error ~ 'collide')
       FROM tco_cluster.account_directory d WHERE d.account_id IN (4, 5)"

log "$checks checks passed"
