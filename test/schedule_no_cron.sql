-- Scheduled settlement without pg_cron (README "Scheduling"): this database
-- has no pg_cron, so tco.schedule_settlement and tco.unschedule_settlement
-- refuse with 55000 and a hint saying how to install it, even when a schema
-- named cron with look-alike functions exists; tco.settle_previous_cycle
-- works without it.  test/cron/schedule.sql (scripts/test_schedule.sh) tests
-- the functions with pg_cron.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SET timezone = 'UTC';
SELECT plan(8);

CREATE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; hint text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, hint = PG_EXCEPTION_HINT;
    RETURN st || ' ' || hint;
END $$;

SELECT is((SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'), 0::bigint, 'pg_cron is not installed here');
SELECT throws_ok($$SELECT tco.schedule_settlement()$$, '55000',
                 format('scheduled settlement needs the extension pg_cron, which is not installed in database %s', current_database()),
                 'schedule_settlement without pg_cron: 55000');
SELECT matches(pg_temp.error_of('SELECT tco.schedule_settlement()'),
               '^55000 install pg_cron: CREATE EXTENSION pg_cron; .*shared_preload_libraries = ''pg_cron''.*cron.database_name',
               'its hint says how to install pg_cron');
SELECT throws_ok($$SELECT tco.unschedule_settlement()$$, '55000', NULL, 'unschedule_settlement without pg_cron: 55000');

-- a schema cron with look-alikes, not pg_cron's: never called
CREATE SCHEMA cron;
CREATE TABLE cron.called (f text);
CREATE FUNCTION cron.schedule(job_name text, schedule text, command text) RETURNS bigint
    LANGUAGE sql AS $$ INSERT INTO cron.called VALUES ('schedule') RETURNING 1::bigint $$;
CREATE FUNCTION cron.unschedule(job_name name) RETURNS boolean
    LANGUAGE sql AS $$ INSERT INTO cron.called VALUES ('unschedule') RETURNING true $$;
SELECT throws_ok($$SELECT tco.schedule_settlement()$$, '55000', NULL, 'a planted schema cron is not pg_cron: 55000');
SELECT throws_ok($$SELECT tco.unschedule_settlement()$$, '55000', NULL, 'nor for unschedule_settlement');
SELECT is((SELECT count(*) FROM cron.called), 0::bigint, 'the look-alikes were never called');

-- settling the previous cycle needs no pg_cron
SELECT results_eq($$SELECT cycle::text, statements FROM tco.settle_previous_cycle()$$,
                  $$SELECT (tco.cycle_of(now()) OPERATOR(tco.-) 1)::text, 0::bigint$$,
                  'settle_previous_cycle() settles the previous cycle without pg_cron');

SELECT * FROM finish();
ROLLBACK;
