#!/usr/bin/env bash
# R1 under load: 16 pgbench clients race to put 400 candidate members in
# trusteeship to one management account.  Passes when exactly 300 are in
# trusteeship, every logged success is among them, and no member has two
# active trusteeships.  Uses the server in PGHOST/PGPORT if set (as
# scripts/test.sh does), else builds tco and starts a throwaway server.
#   bash scripts/stress_r1.sh
source "$(dirname "$0")/common.sh"

CLIENTS=${STRESS_CLIENTS:-16}
TRANSACTIONS=${STRESS_TRANSACTIONS:-100}   # per client
DB=tco_stress

if [ -z "${PGHOST:-}" ]; then
    trap pg_stop EXIT
    ensure_deps
    build_install
    pg_start
fi
cd "$TCO_ROOT"

log "R1 stress: $CLIENTS clients x $TRANSACTIONS transactions, 400 candidates, cap 300"
psql -qX -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
psql -qX -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Stress Inc', true);
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES (1, 'manager', 1, 1000);
INSERT INTO tco.account (account_id, name, entity_id, balance)
    SELECT a, 'candidate ' || a, 1, 10 FROM generate_series(1001, 1400) a;
SELECT tco.create_organization(1, 'Stress Inc');
SELECT tco.add_member((SELECT org_id FROM tco.organization), a) FROM generate_series(1001, 1400) a;

CREATE SCHEMA tco_stress;
CREATE TABLE tco_stress.outcome (member bigint NOT NULL, sqlstate text NOT NULL);
CREATE FUNCTION tco_stress.try_establish(member bigint) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tco.establish_trusteeship(member, 1);
    INSERT INTO tco_stress.outcome VALUES (member, '00000');
    RETURN '00000';
EXCEPTION WHEN SQLSTATE 'TC001' OR SQLSTATE '55000' THEN
    INSERT INTO tco_stress.outcome VALUES (member, SQLSTATE);
    RETURN SQLSTATE;
END $$;
SQL

start=$(date +%s)
rc=0
pgbench -n -c "$CLIENTS" -j 2 -t "$TRANSACTIONS" -f bench/stress_r1.sql "$DB" >/tmp/tco-stress-r1.log 2>&1 || rc=$?
grep -E 'number of (transactions actually processed|failed)|tps' /tmp/tco-stress-r1.log || true
if [ $rc -ne 0 ]; then
    grep -E 'error|ERROR' /tmp/tco-stress-r1.log | head -5
    echo "FAIL: pgbench exited with $rc (an unexpected error in some client)"
    exit 1
fi

result=$(psql -qXAt -d "$DB" <<'SQL'
SELECT concat_ws(' ',
    (SELECT count(*) FROM tco.trusteeship WHERE management_account_id = 1 AND ended_at IS NULL),
    (SELECT count(*) FROM (SELECT 1 FROM tco.trusteeship WHERE ended_at IS NULL
                           GROUP BY member_account_id HAVING count(*) > 1) dup),
    (SELECT count(*) FROM tco_stress.outcome WHERE sqlstate = '00000'),
    (SELECT count(*) FROM tco_stress.outcome WHERE sqlstate = 'TC001'),
    (SELECT count(*) FROM tco_stress.outcome WHERE sqlstate = '55000'),
    (SELECT count(*) FROM tco_stress.outcome o WHERE sqlstate = '00000' AND NOT EXISTS
        (SELECT 1 FROM tco.trusteeship t WHERE t.member_account_id = o.member AND t.ended_at IS NULL)));
SQL
)
read -r active duplicates successes capped already lost <<<"$result"
echo "active trusteeships: $active; members with two active: $duplicates;" \
     "attempts: $successes succeeded, $capped refused by R1 (TC001), $already already managed (55000);" \
     "successes not recorded: $lost; $(( $(date +%s) - start ))s"
psql -qX -c "DROP DATABASE $DB" >/dev/null
if [ "$active" = 300 ] && [ "$duplicates" = 0 ] && [ "$successes" = 300 ] && [ "$lost" = 0 ] && [ "$capped" -gt 0 ]; then
    echo "PASS: exactly 300 members in trusteeship, no duplicate"
else
    echo "FAIL: R1 does not hold under concurrency"
    exit 1
fi
