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
    got=$(psql -X -q -At -v ON_ERROR_STOP=1 -h "$CL_TMP/$node" -p "${PORT[$node]}" -d tco -c "$4" 2>&1) || true
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

log "3. faults: a shard down during a cluster-wide settlement"
on single -d tco -f test/cluster/march_lines.sql >/dev/null
on router -d tco -f test/cluster/march_lines.sql >/dev/null
on single -d tco -f test/cluster/march_settle.sql >"$CL_TMP/single_march.out"
# statements SHARD [MAX_ID]: the statements of a shard (ids, payers, cycles,
# totals) up to an id, as one digest, after the largest id
statements() { psql -X -At -h "$CL_TMP/$1" -p "${PORT[$1]}" -d tco -c \
    "SELECT max(statement_id) || ' ' || md5(coalesce(string_agg(concat_ws('|', statement_id, payer_account_id, cycle, list_total, due_total), ',' ORDER BY statement_id), ''))
       FROM tco.statement WHERE statement_id <= ${2:-9223372036854775807}"; }
as_pg "$PG_BIN/pg_ctl" -D "$CL_TMP/shard2/data" -m fast -w stop >/dev/null
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

log "5. accounts that change shard: two-phase commit, crashes, tco_cluster.recover()"
# accounts 900-902 of a new entity get a home shard (one of the first three:
# entity 7's accounts fill shard 4 first); organization $org lives on another one
on router -d tco -c "SELECT count(tco.create_account(a, 'acct-7-' || a, 7)) FROM generate_series(710, 729) a" \
    -c "SELECT tco.create_entity(9, 'Entity 9', true)" \
    -c "SELECT tco.create_account(a, 'mover-' || a, 9, 30) FROM generate_series(900, 902) a" >/dev/null
acct_0=900; acct_1=901
org=$(on router -d tco -At -c "SELECT min(org_id) FROM tco_cluster.org_directory WHERE shard_id <> tco_cluster.shard_of_account(900) AND shard_id <= 3")
admin=$(on router -d tco -At -c "SELECT 100 * $org")
on router -d tco >/dev/null <<SQL
SELECT tco.deposit($acct_0, 20);
SELECT tco.insert_bill_lines(array_fill($acct_0::bigint, ARRAY[5]), array_fill('cvm'::text, ARRAY[5]), NULL,
       ARRAY(SELECT '2023-04-01 00:00+08'::timestamptz + g * interval '1 hour' FROM generate_series(0, 4) g),
       ARRAY(SELECT '2023-04-01 01:00+08'::timestamptz + g * interval '1 hour' FROM generate_series(0, 4) g),
       array_fill(2.5, ARRAY[5]), NULL, NULL);
SELECT tco.set_contract_discount($acct_0, NULL, 0.1);
SQL
src=$(on router -d tco -At -c "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account($acct_0)")
dst=$(on router -d tco -At -c "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_org($org)")
state_q="SELECT concat_ws('|', (SELECT balance FROM tco.account WHERE account_id = $acct_0), (SELECT count(*) FROM tco.ledger WHERE account_id = $acct_0),
                  (SELECT count(*) || ':' || sum(list_amount) FROM tco.bill_line WHERE account_id = $acct_0),
                  (SELECT count(*) FROM tco.contract_discount WHERE account_id = $acct_0))"
before=$(on "$src" -d tco -At -c "$state_q")
echo "    account $acct_0 on $src: $before; organization $org on $dst"
prepared() { on "$1" -d tco -At -c "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'tco_move_%'"; }

# a. the router's session dies between PREPARE and the decision: recover() rolls back
if on router -d tco -c "SET tco_cluster.fail_move_at = 'prepared'" -c "SELECT tco.add_member($org, $acct_0)" >"$CL_TMP/crash_a.log" 2>&1; then
    echo "FAIL: the session did not die"; exit 1
fi
check "$src" "after a crash between prepare and decision, the source shard holds a prepared transaction" "1" \
    "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'tco_move_%'"
check "$dst" "and so does the target shard" "1" "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'tco_move_%'"
check router "recover() rolls the undecided move back on both shards" "rolled back|2" \
    "SELECT action || '|' || transactions FROM tco_cluster.recover()"
check "$src" "the account is whole on its shard again" "$before" "$state_q"
check "$dst" "and absent from the target" "0|0" "$state_q"
check router "the directory still points at the source shard, the move is recorded as aborted" "$src|aborted" \
    "SELECT (SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account($acct_0)) || '|' || state FROM tco_cluster.account_move ORDER BY move_id DESC LIMIT 1"

# b. the router's session dies after the decision: recover() commits
if on router -d tco -c "SET tco_cluster.fail_move_at = 'decided'" -c "SELECT tco.add_member($org, $acct_0)" >"$CL_TMP/crash_b.log" 2>&1; then
    echo "FAIL: the session did not die"; exit 1
fi
check router "after a crash after the decision, the directory already points at the target" "$dst" \
    "SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account($acct_0)"
# the target shard crashes too, with the transaction prepared: it survives the restart
as_pg "$PG_BIN/pg_ctl" -D "$CL_TMP/$dst/data" -m immediate -w stop >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$CL_TMP/$dst/data" -l "$CL_TMP/$dst/server.log" -w -t 60 start >/dev/null
check "$dst" "the prepared transaction survived the target shard's crash" "1" "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'tco_move_%'"
check router "recover() commits the decided move on both shards" "committed|2" \
    "SELECT action || '|' || transactions FROM tco_cluster.recover()"
check "$dst" "the account arrived whole: balance, ledger, bill lines, discount" "$before" "$state_q"
check "$src" "and left the source shard" "0|0" "$state_q"
for n in "$src" "$dst"; do
    check "$n" "tco.bill_line_id of $n lists exactly the lines there" "0|0" \
        "SELECT (SELECT count(*) FROM tco.bill_line_id k WHERE NOT EXISTS (SELECT 1 FROM tco.bill_line b WHERE b.line_id = k.line_id)) || '|' ||
                (SELECT count(*) FROM tco.bill_line b WHERE NOT EXISTS (SELECT 1 FROM tco.bill_line_id k WHERE k.line_id = b.line_id))"
done
check router "recover() again finds nothing to do" "0" "SELECT count(*) FROM tco_cluster.recover()"
on router -d tco -c "SELECT tco.add_member($org, $acct_0)" >/dev/null
check router "the moved account joins organization $org on its shard" "$org|$acct_0" \
    "SELECT concat((SELECT org_id FROM tco_cluster.account_directory WHERE account_id = $acct_0), '|', tco.trusteeship_effective_payer($acct_0, 'cvm', '2023-04-01 00:00+08'))"

# c. an ordinary move, in the add_member call itself
on router -d tco -c "SELECT tco.add_member($org, $acct_1)" >/dev/null
check router "add_member of an account of another shard moves it there first" "$dst|done" \
    "SELECT (SELECT name FROM tco_cluster.shard_conf WHERE shard_id = tco_cluster.shard_of_account($acct_1)) || '|' || state FROM tco_cluster.account_move ORDER BY move_id DESC LIMIT 1"
check "$dst" "the moved account is a member of organization $org on the target shard" "$org" "SELECT org_id FROM tco.member WHERE account_id = $acct_1"
check "$src" "no transaction is left prepared" "0" "SELECT count(*) FROM pg_prepared_xacts"
# d. refused moves
fails router "an account with statements is not moved" "55000.*account 605 cannot move to another shard: it has settled statements" \
    "SELECT tco_cluster.move_account(605, (SELECT shard_id FROM tco_cluster.shard_conf WHERE shard_id <> tco_cluster.shard_of_account(605) LIMIT 1))"
fails router "an account in an organization, in trusteeship, is not moved" "55000.*account 101 cannot move to another shard: it is a member of organization 1; it has trusteeship history" \
    "SELECT tco_cluster.move_account(101, (SELECT shard_id FROM tco_cluster.shard_conf WHERE shard_id <> tco_cluster.shard_of_account(101) LIMIT 1))"
check router "refused moves leave nothing prepared and are recorded as aborted" "0|aborted" \
    "SELECT concat((SELECT count(*) FROM tco_cluster.recover()), '|', (SELECT state FROM tco_cluster.account_move ORDER BY move_id DESC LIMIT 1))"
# e. a new organization goes to the shard with the fewest organizations (shard 4), its admin moved there
on router -d tco -c "SELECT tco.create_entity(11, 'Entity 11', true)" -c "SELECT tco.create_account(1100, 'admin-11', 11, 10)" >/dev/null
check router "the new admin account's home is one of the first three shards" "t" "SELECT tco_cluster.shard_of_account(1100) <= 3"
on router -d tco -c "SELECT tco.create_organization(1100, 'Org 11')" -c "SELECT tco.create_organization(605, 'Org 605')" >/dev/null
check router "its organization goes to the shard with the fewest organizations, the admin moved there first" "4|4|done" \
    "SELECT concat(tco_cluster.shard_of_org(d.org_id), '|', d.shard_id, '|', (SELECT state FROM tco_cluster.account_move WHERE account_id = 1100))
       FROM tco_cluster.account_directory d WHERE d.account_id = 1100"
check router "an admin with history stays: its organization is created on its shard" "t" \
    "SELECT tco_cluster.shard_of_org(d.org_id) = d.shard_id FROM tco_cluster.account_directory d WHERE d.account_id = 605"

log "6. the router's catalog: pinned search_path, nothing for PUBLIC, a guarded install"
check router "every function of the router pins search_path (but the four I/O functions of tco.billing_cycle)" "4" \
    "SELECT count(*) FROM pg_proc WHERE pronamespace IN ('tco'::regnamespace, 'tco_cluster'::regnamespace)
       AND NOT coalesce(proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)"
check router "PUBLIC may execute only those four" "4" \
    "SELECT count(*) FROM pg_proc WHERE pronamespace IN ('tco'::regnamespace, 'tco_cluster'::regnamespace)
       AND has_function_privilege('cl_outsider', oid, 'EXECUTE')"
check router "the SECURITY DEFINER functions are add_shard, map_role, move_account, recover, recover_move, billing_timezone" \
    "add_shard,billing_timezone,map_role,move_account,recover,recover_move" \
    "SELECT string_agg(proname, ',' ORDER BY proname) FROM pg_proc WHERE prosecdef AND pronamespace IN ('tco'::regnamespace, 'tco_cluster'::regnamespace)"
on router -d postgres -c 'CREATE DATABASE guard' -c '\c guard' -c 'CREATE SCHEMA tco_cluster' \
    -c 'CREATE FUNCTION tco_cluster.planted() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$' >/dev/null
if out=$(psql -X -q -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -h "$CL_TMP/router" -p "${PORT[router]}" -d guard \
              -c 'CREATE EXTENSION tco_cluster CASCADE' 2>&1) || ! grep -q '42P06.*schema tco_cluster exists already' <<<"$out"; then
    echo "FAIL: CREATE EXTENSION installed into a prepared schema tco_cluster: $out"; exit 1
fi
checks=$((checks + 1)); echo "ok $checks - CREATE EXTENSION refuses a schema tco_cluster prepared beforehand"

log "$checks checks passed"
