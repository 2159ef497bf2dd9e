#!/usr/bin/env bash
# Benchmark of tco.policy_allows (service control policies): N calls (default
# 10000) for members of an organization with a unit tree four levels deep and
# policies attached at every level, against a baseline: the same number of
# calls of tco.current_account_id() (a SQL function with one primary-key
# lookup, the cheapest per-request function of the extension).
# Two shapes: all calls in one statement, and one statement per call (pgbench,
# one client), which is what an application checking each request does.
# Starts its own throwaway server.  BENCH_CALLS=n to change the count.
source "$(dirname "$0")/common.sh"
trap pg_stop EXIT
CALLS=${BENCH_CALLS:-10000}

build_install >/dev/null
pg_start
psql -qX -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION tco CASCADE;
INSERT INTO tco.account (account_id, name) SELECT g, 'acct ' || g FROM generate_series(1, 1001) g;
INSERT INTO tco.organization (org_id, name, admin_account_id) VALUES (1, 'Bench', 1);
-- root -> 10 departments -> 10 teams each -> 1 squad each: members sit 4 levels deep
SELECT tco.create_unit(1, 'dept ' || d) FROM generate_series(1, 10) d;
SELECT tco.create_unit(1, 'team ' || t, u.unit_id)
  FROM tco.org_unit u, generate_series(1, 10) t WHERE u.name LIKE 'dept %';
SELECT tco.create_unit(1, 'squad of ' || u.name, u.unit_id) FROM tco.org_unit u WHERE u.name LIKE 'team %';
SELECT tco.add_member(1, g, (SELECT unit_id FROM tco.org_unit WHERE name LIKE 'squad of %' ORDER BY unit_id
                              OFFSET (g % 100) LIMIT 1))
  FROM generate_series(2, 1001) g;
INSERT INTO tco.service_policy (policy_id, name, effect, actions) VALUES
    (1, 'org allow', 'allow', '{cvm:*,cos:*,cdb:*}'), (2, 'no delete', 'deny', '{*:Delete*}'),
    (3, 'team allow', 'allow', '{cvm:*,cos:*}'), (4, 'squad allow', 'allow', '{cvm:*}'),
    (5, 'no terminate', 'deny', '{cvm:Terminate*}');
SELECT tco.attach_policy(1, 'organization', 1);
SELECT tco.attach_policy(2, 'unit', unit_id) FROM tco.org_unit WHERE name LIKE 'dept %';
SELECT tco.attach_policy(3, 'unit', unit_id) FROM tco.org_unit WHERE name LIKE 'team %';
SELECT tco.attach_policy(4, 'unit', unit_id) FROM tco.org_unit WHERE name LIKE 'squad of %';
SELECT tco.attach_policy(5, 'account', g) FROM generate_series(2, 1001, 7) g;
INSERT INTO tco.account_login VALUES ('bench', 1);
ANALYZE;
SQL

in_one_statement() {  # calls/second of "expr" (with g = 1..CALLS) in one statement
    psql -qXAt -v ON_ERROR_STOP=1 <<SQL | tail -n 1
CREATE TEMP TABLE t0 AS SELECT clock_timestamp() AS s;
SELECT count(*) FROM generate_series(1, $CALLS) g WHERE ($1) IS NOT NULL;
SELECT round($CALLS / extract(epoch FROM clock_timestamp() - s)) FROM t0;
SQL
}
per_statement() {  # transactions/second of one statement per call, pgbench, one client
    printf '%s\n' '\set a random(2, 1001)' "SELECT $1;" > "$PG_TMP/bench.sql"
    pgbench -n -f "$PG_TMP/bench.sql" -t "$CALLS" -c 1 2>/dev/null \
        | sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | cut -d. -f1
}

log "policy_allows: $CALLS calls"
allows_one=$(in_one_statement "tco.policy_allows(2 + g % 1000, 'cvm:RunInstances')")
base_one=$(in_one_statement "tco.current_account_id() IS NULL OR g > 0")
allows_each=$(per_statement "tco.policy_allows(:a, 'cvm:RunInstances')")
base_each=$(per_statement "tco.current_account_id()")
explain_each=$(per_statement "tco.explain_policy(:a, 'cos:GetObject')")
printf '%-44s %12s %12s %8s\n' "shape" "calls/s" "baseline/s" "ratio"
printf '%-44s %12s %12s %8s\n' "policy_allows, $CALLS calls in one statement" "$allows_one" "$base_one" \
    "$(awk -v a="$allows_one" -v b="$base_one" 'BEGIN { printf "%.1fx", b / a }')"
printf '%-44s %12s %12s %8s\n' "policy_allows, one statement per call" "$allows_each" "$base_each" \
    "$(awk -v a="$allows_each" -v b="$base_each" 'BEGIN { printf "%.1fx", b / a }')"
printf '%-44s %12s %12s %8s\n' "explain_policy, one statement per call" "$explain_each" "$base_each" \
    "$(awk -v a="$explain_each" -v b="$base_each" 'BEGIN { printf "%.1fx", b / a }')"
echo "(baseline: tco.current_account_id(), one primary-key lookup in a SQL function; ratio = baseline / policy_allows)"
