-- Scheduled settlement with pg_cron (README "Scheduling"): run by
-- scripts/test_schedule.sh in the database of cron.database_name, where the
-- script installed pg_cron and pgTAP.  Everything here is rolled back; the
-- script then lets the scheduler itself run a job.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SET timezone = 'UTC';
SELECT plan(26);

SELECT tco.set_billing_timezone('Asia/Shanghai');
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Cron Ltd', true);
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES (1, 'admin', 1, 100), (2, 'member', 1, 100);
SELECT tco.create_organization(1, 'Cron Org');
SELECT tco.add_member(1, 2);
SELECT tco.establish_trusteeship(2, 1, lower(tco.cycle_range(tco.cycle_of(now()) OPERATOR(tco.-) 2)));
INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour');
-- three lines in the previous cycle (billing time zone), paid by the admin
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
SELECT 2, 'cvm', lower(r) + g * interval '1 hour', lower(r) + (g + 1) * interval '1 hour', 1.25
  FROM tco.cycle_range(tco.cycle_of(now()) OPERATOR(tco.-) 1) r, generate_series(0, 2) g;

SELECT is((tco.cycle_of(now()) OPERATOR(tco.-) 1)::text,
          to_char(date_trunc('month', now() AT TIME ZONE 'Asia/Shanghai') - interval '1 month', 'YYYY-MM'),
          'the previous cycle is the month before now in the billing time zone');

-- scheduling
SELECT ok(tco.schedule_settlement() > 0, 'schedule_settlement() returns the pg_cron job id');
SELECT is((SELECT format('%s|%s|%s|%s|%s', schedule, command, database, username, active) FROM cron.job
            WHERE jobname = 'tco_settle_previous_cycle'),
          format('0 2 1 * *|SELECT * FROM tco.settle_previous_cycle()|%s|%s|t', current_database(), current_user),
          'cron.job: the default schedule (1st of the month, 02:00), the command, this database, the calling role');
SELECT is(tco.schedule_settlement('30 3 1 * *'), (SELECT jobid FROM cron.job WHERE jobname = 'tco_settle_previous_cycle'),
          'scheduling the same job name again replaces the job (same id)');
SELECT results_eq($$SELECT count(*), min(schedule) FROM cron.job WHERE jobname = 'tco_settle_previous_cycle'$$,
                  $$VALUES (1::bigint, '30 3 1 * *'::text)$$, 'one job, with the new schedule');
SELECT ok(tco.schedule_settlement('0 4 2 * *', 'tco_other') <> (SELECT jobid FROM cron.job WHERE jobname = 'tco_settle_previous_cycle'),
          'another job name is another job');
SELECT throws_ok($$SELECT tco.schedule_settlement('not a schedule')$$, NULL, 'an invalid schedule is refused by pg_cron');
SELECT throws_ok($$SELECT tco.schedule_settlement(NULL)$$, '22004', NULL, 'a NULL schedule: 22004');
SELECT throws_ok($$SELECT tco.schedule_settlement('0 2 1 * *', ' ')$$, '22023', NULL, 'an empty job name: 22023');

-- the job's command, run as pg_cron runs it
SELECT is((SELECT count(*) FROM tco.settled_cycle), 0::bigint, 'nothing settled yet');
SELECT lives_ok((SELECT command FROM cron.job WHERE jobname = 'tco_settle_previous_cycle'), 'the job''s command runs');
SELECT is((SELECT format('%s|%s|%s', cycle, org_id, settled_by) FROM tco.settled_cycle),
          format('%s||%s', tco.cycle_of(now()) OPERATOR(tco.-) 1, current_user),
          'it settled the previous cycle, for everything, as the calling role');
SELECT results_eq(
    $$SELECT payer_account_id, list_total, lines FROM tco.settlement_by_payer$$,
    $$VALUES (1::bigint, 3.75::numeric, 3::bigint)$$, 'the statement: the admin pays its member''s three lines');
SELECT results_eq(
    $$SELECT cycle::text, statements, lines, list_total, due_total FROM tco.settle_previous_cycle()$$,
    $$SELECT (tco.cycle_of(now()) OPERATOR(tco.-) 1)::text, 1::bigint, 3::bigint, 3.75::numeric, 3.75::numeric$$,
    'settle_previous_cycle() again returns the same row and writes nothing');
SELECT is((SELECT string_agg(cycle::text, ',' ORDER BY cycle) FROM tco.bill_line_cycle),
          (SELECT string_agg((tco.cycle_of(now()) OPERATOR(tco.+) i)::text, ',' ORDER BY i) FROM generate_series(-1, 2) i),
          'the job made the partitions of the current cycle and the two after it (and moved the previous cycle''s lines into theirs)');
SELECT is((SELECT count(*) FROM tco.bill_line_default), 0::bigint, 'no line is left in the default partition');
SELECT is((SELECT count(*) FROM tco.settled_cycle), 1::bigint, 'one settled cycle');
SELECT is((SELECT count(*) FROM tco.settled_cycle WHERE cycle = tco.cycle_of(now())), 0::bigint,
          'the current cycle stays open');

-- unscheduling
SELECT is(tco.unschedule_settlement(), true, 'unschedule_settlement() removes the job');
SELECT is((SELECT count(*) FROM cron.job WHERE jobname = 'tco_settle_previous_cycle'), 0::bigint, 'cron.job no longer has it');
SELECT is(tco.unschedule_settlement(), false, 'unscheduling again: false');
SELECT is(tco.unschedule_settlement('tco_other'), true, 'the other job too');

-- privileges: not for PUBLIC nor readers; tco_admin may
SELECT is(array(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.oid IN ('tco.schedule_settlement(text,text)'::regprocedure, 'tco.unschedule_settlement(text)'::regprocedure,
                                 'tco.settle_previous_cycle()'::regprocedure)
                   AND (has_function_privilege('tco_reader', p.oid, 'EXECUTE') OR has_function_privilege('public', p.oid, 'EXECUTE'))),
          '{}', 'no reader and no PUBLIC may schedule, unschedule or settle');
-- a tco_admin member without USAGE on schema cron: 42501 with a hint
CREATE ROLE tco_t_cronless IN ROLE tco_admin;
SET ROLE tco_t_cronless;
SELECT throws_ok($$SELECT tco.schedule_settlement()$$, '42501',
                 'role tco_t_cronless may not use pg_cron: no USAGE on schema cron',
                 'a tco_admin role without USAGE on schema cron: 42501');
CREATE FUNCTION pg_temp.hint_of(q text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE hint text;
BEGIN
    EXECUTE q;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    RETURN hint;
END $f$;
SELECT is(pg_temp.hint_of('SELECT tco.unschedule_settlement()'),
          'A superuser grants it: GRANT USAGE ON SCHEMA cron TO tco_t_cronless;', 'its hint names the grant');
RESET ROLE;
SELECT ok(has_function_privilege('tco_admin', 'tco.schedule_settlement(text,text)', 'EXECUTE')
          AND has_function_privilege('tco_admin', 'tco.settle_previous_cycle()', 'EXECUTE'), 'tco_admin may');

SELECT * FROM finish();
ROLLBACK;
