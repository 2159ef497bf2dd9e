#!/usr/bin/env bash
# Scheduled settlement with pg_cron (README "Scheduling").  Uses the suite's
# server (PGHOST/PGPORT), which preloads pg_cron with cron.database_name =
# tco_cron (scripts/common.sh, pg_start).  1. test/cron/schedule.sql (pgTAP,
# rolled back): schedule, cron.job, the job's command run by hand, unschedule.
# 2. The scheduler itself: a tco_admin role that is not a superuser schedules
# a job every minute; pg_cron runs it as that role, and the previous cycle is
# settled by it.  The error without pg_cron is test/schedule_no_cron.sql.
set -euo pipefail
cd "$(dirname "$0")/.."
DB=tco_cron
OP=tco_cron_operator
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -d "$DB")
[ "$(psql -XAtq -d "$DB" -c "SHOW cron.database_name")" = "$DB" ] || { echo "the server does not run pg_cron on $DB"; exit 1; }

"${PSQL[@]}" <<SQL
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION IF NOT EXISTS pg_cron;
CREATE EXTENSION IF NOT EXISTS pgtap;
SQL
pg_prove -d "$DB" --ext .sql test/cron/schedule.sql

# 2. pg_cron runs the job as the role that scheduled it
cleanup() {
    psql -X -q -d "$DB" >/dev/null 2>&1 <<SQL || true
SELECT cron.unschedule(jobid) FROM cron.job WHERE username = '$OP';
DROP EXTENSION IF EXISTS tco CASCADE;
DROP OWNED BY $OP;
DROP ROLE IF EXISTS $OP;
SQL
}
trap cleanup EXIT
"${PSQL[@]}" >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
DROP ROLE IF EXISTS $OP;
CREATE ROLE $OP LOGIN IN ROLE tco_admin;
GRANT USAGE ON SCHEMA cron TO $OP;   -- what a non-superuser needs to schedule (README)
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Cron Ltd', true);
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES (1, 'admin', 1, 100), (2, 'member', 1, 100);
SELECT tco.create_organization(1, 'Cron Org');
SELECT tco.add_member(1, 2);
SELECT tco.establish_trusteeship(2, 1, lower(tco.cycle_range(tco.cycle_of(now()) OPERATOR(tco.-) 2)));
INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
SELECT 2, 'cvm', lower(r) + g * interval '1 hour', lower(r) + (g + 1) * interval '1 hour', 2.5
  FROM tco.cycle_range(tco.cycle_of(now()) OPERATOR(tco.-) 1) r, generate_series(0, 3) g;
SQL
job=$(psql -XAtq -v ON_ERROR_STOP=1 -d "$DB" -U "$OP" -c "SELECT tco.schedule_settlement('* * * * *', 'tco_test_every_minute')")
echo "scheduled job $job (every minute) as $OP; waiting for pg_cron to run it"
status=""
for _ in $(seq 1 90); do
    status=$(psql -XAtq -d "$DB" -c "SELECT status || ': ' || coalesce(return_message, '') FROM cron.job_run_details
                                      WHERE jobid = $job AND status IN ('succeeded', 'failed') ORDER BY runid LIMIT 1")
    [ -n "$status" ] && break
    sleep 1
done
echo "run: ${status:-none within 90 s}"
case "$status" in succeeded*) ;; *) echo "FAIL: pg_cron did not run the job successfully"; exit 1;; esac
settled=$(psql -XAtq -d "$DB" -c "SELECT cycle::text || ' by ' || settled_by FROM tco.settled_cycle")
expected=$(psql -XAtq -d "$DB" -c "SELECT (tco.cycle_of(now()) OPERATOR(tco.-) 1)::text || ' by $OP'")
totals=$(psql -XAtq -d "$DB" -c "SELECT payer_account_id || ' ' || list_total || ' ' || lines FROM tco.settlement_by_payer")
echo "settled: $settled; statement: $totals"
[ "$settled" = "$expected" ] || { echo "FAIL: expected $expected"; exit 1; }
[ "$totals" = "1 10.00 4" ] || { echo "FAIL: expected statement '1 10.00 4'"; exit 1; }
[ "$(psql -XAtq -d "$DB" -U "$OP" -c "SELECT tco.unschedule_settlement('tco_test_every_minute')")" = t ] \
    || { echo "FAIL: unschedule"; exit 1; }
echo "ok: pg_cron settled the previous cycle as $OP; job unscheduled"
