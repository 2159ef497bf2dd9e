-- Issue 16 (fuzzing findings): each case below crashed, answered wrongly or
-- failed with an unclear error before the fix.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never
\set VERBOSITY default

-- The SQLSTATE a statement raises, or 'ok'.
CREATE FUNCTION pg_temp.sqlstate(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;

INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme Ltd', true);
INSERT INTO tco.account (account_id, name, entity_id, balance)
    VALUES (100, 'admin', 1, 1000), (101, 'member', 1, 100), (1003, 'member 2', 1, 100),
           (9223372036854775807, 'the largest id', 1, 100);
SELECT tco.create_organization(100, 'Acme') AS org \gset
SELECT tco.add_member(:org, 101), tco.add_member(:org, 1003);
INSERT INTO tco.product (product_code, granularity) VALUES ('D', 'day'), ('H', 'hour');

-- 1. DDL that tco's C code cannot follow is refused by the event trigger,
-- with a hint; other DDL is allowed.
ALTER TABLE tco.bill_line ALTER COLUMN list_amount TYPE float8;
ALTER TABLE tco.bill_line ALTER COLUMN list_amount TYPE bigint;
ALTER TABLE tco.statement_line ADD CONSTRAINT u UNIQUE (account_id, product_code) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE tco.bill_line ADD COLUMN note text UNIQUE DEFERRABLE;
ALTER TABLE tco.bill_line DROP COLUMN paid_at;
ALTER TABLE tco.bill_line RENAME COLUMN list_amount TO amount;
ALTER TABLE tco.bill_line ALTER COLUMN list_amount DROP NOT NULL;
ALTER TABLE tco.statement ALTER COLUMN statement_id DROP IDENTITY;
ALTER TABLE tco.account RENAME TO customer;
ALTER TABLE tco.account SET SCHEMA public;
SELECT pg_temp.sqlstate('ALTER TABLE tco.bill_line ALTER COLUMN list_amount TYPE float8') AS alter_type,
       pg_temp.sqlstate('ALTER TABLE tco.statement_line ADD CONSTRAINT u UNIQUE (account_id, product_code) DEFERRABLE') AS deferrable;
-- allowed: a column on a table that is not written in bulk, an index, an
-- immediate constraint
ALTER TABLE tco.bill_line ADD COLUMN note text;
CREATE INDEX bill_line_note ON tco.bill_line (note);
ALTER TABLE tco.bill_line ADD CONSTRAINT bill_line_note_short CHECK (length(note) < 100);
ALTER TABLE tco.bill_line DROP CONSTRAINT bill_line_note_short;

-- The C code checks what it reads and writes anyway (the guard can be
-- disabled): a changed column type is a clear 42804, no crash.
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    VALUES (101, 'D', '2023-01-05', '2023-01-06', 2.5, '2023-01-06');
BEGIN;
ALTER EVENT TRIGGER tco_ddl_guard DISABLE;
ALTER TABLE tco.bill_line ALTER COLUMN list_amount TYPE float8;
SELECT * FROM tco.settle_cycle('2023-01');
ROLLBACK;
BEGIN;
ALTER EVENT TRIGGER tco_ddl_guard DISABLE;
ALTER TABLE tco.bill_line ALTER COLUMN list_amount TYPE integer;
SELECT * FROM tco.settle_cycle('2023-01');
ROLLBACK;
BEGIN;
ALTER EVENT TRIGGER tco_ddl_guard DISABLE;
ALTER TABLE tco.statement_line ADD CONSTRAINT u UNIQUE (account_id, product_code) DEFERRABLE INITIALLY DEFERRED;
SELECT * FROM tco.settle_cycle('2023-01');
ROLLBACK;
-- Columns added to the tables settlement writes in bulk (src/bulk.c), as
-- COPY fills them: the default on every row (a volatile one, an identity,
-- once per row), NULL without one, a stored generated column computed; a
-- NOT NULL column without a default is the usual 23502 naming it.
BEGIN;
ALTER TABLE tco.statement ADD COLUMN note text DEFAULT 'x';
ALTER TABLE tco.statement ADD COLUMN remark text;
ALTER TABLE tco.statement_line ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE tco.statement_line ADD COLUMN due_cents numeric GENERATED ALWAYS AS (due_amount * 100) STORED;
ALTER TABLE tco.settled_pack ADD COLUMN written_at timestamptz DEFAULT clock_timestamp();
SELECT * FROM tco.settle_cycle('2023-01');
SELECT payer_account_id, note, remark FROM tco.statement ORDER BY payer_account_id;
SELECT account_id, seq > 0 AS has_seq, due_cents = due_amount * 100 AS generated FROM tco.statement_line ORDER BY account_id;
SELECT count(*) AS packs, count(written_at) AS with_default FROM tco.settled_pack;
ROLLBACK;
BEGIN;
ALTER TABLE tco.statement ADD COLUMN must text NOT NULL;
\set VERBOSITY terse
SELECT * FROM tco.settle_cycle('2023-01');
\set VERBOSITY default
ROLLBACK;
-- A product code longer than 63 bytes once the CHECK is dropped: a clear
-- 0A000 from the payer and from settlement, not "does not exist" or XX000.
BEGIN;
ALTER TABLE tco.product DROP CONSTRAINT product_product_code_check;
INSERT INTO tco.product VALUES (repeat('x', 70), 'day');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    VALUES (101, repeat('x', 70), '2023-01-05', '2023-01-06', 1, '2023-01-06');
SAVEPOINT s;
SELECT tco.trusteeship_effective_payer(101, repeat('x', 70), '2023-01-05');
ROLLBACK TO s;
SELECT * FROM tco.settle_cycle('2023-01');
ROLLBACK;
-- A missing long multibyte code is cut on a character boundary in the message.
SELECT tco.trusteeship_effective_payer(101, repeat('é', 41), '2023-01-05');
SELECT tco.trusteeship_effective_payer(101, repeat('é', 70), '2023-01-05');

-- 3. Every id the tables accept settles, and the largest amount the reader
-- accepts rounds without overflow.
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    VALUES (9223372036854775807, 'D', '2023-01-05', '2023-01-06', 3, '2023-01-06'),
           (1003, 'H', '2023-01-05', '2023-01-05 01:00', 9223372036854.775807, '2023-01-06');
SELECT * FROM tco.settle_cycle('2023-01');
SELECT payer_account_id, list_total, due_total FROM tco.statement ORDER BY payer_account_id;
SELECT account_id, product_code, list_amount, lines FROM tco.statement_line ORDER BY account_id;

-- 4. The caller's search_path cannot change what the C functions answer:
-- operators of another schema first on the path, each one false.
CREATE SCHEMA evil;
DO $$
DECLARE
    t text;
    op text;
BEGIN
    FOREACH t IN ARRAY ARRAY['bigint', 'integer', 'text', 'timestamptz', 'numeric', 'boolean'] LOOP
        EXECUTE format('CREATE FUNCTION evil.no(%s, %s) RETURNS boolean LANGUAGE sql IMMUTABLE AS ''SELECT false''', t, t);
        FOREACH op IN ARRAY ARRAY['=', '<>', '<', '<=', '>', '>='] LOOP
            EXECUTE format('CREATE OPERATOR evil.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = evil.no)', op, t, t);
        END LOOP;
    END LOOP;
END $$;
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    VALUES (101, 'D', '2023-02-05', '2023-02-06', 4, '2023-02-06');
SELECT tco.establish_trusteeship(101, 100, '2023-02-10 09:00+00') > 0 AS established;
SET search_path = evil, pg_catalog;
SELECT tco.trusteeship_effective_payer(101, 'D', '2023-02-11') AS payer_101,
       tco.trusteeship_effective_payer(101, 'H', '2023-02-11') AS hourly_101,
       tco.trusteeship_effective_payer(1003, 'H', '2023-02-11') AS payer_1003,
       tco.explain_payer(101, 'D', '2023-02-11') ->> 'rule' AS rule,
       tco.policy_allows(101, 'cvm:RunInstances') AS allowed,
       tco.cycle_of('2023-02-11 00:00+00') AS cycle,
       tco.cycle_of('2023-02-28 20:00+00', 'Asia/Shanghai') AS cycle_shanghai,
       tco.cycle_range('2023-02') AS range,
       tco.cycle_range('2023-02', 'America/New_York') AS range_new_york,
       tco.granularity_trunc('day', '2023-02-11 10:00+00') AS trunc,
       tco.granularity_ceil('hour', '2023-02-11 10:30+00') AS ceil;
SELECT * FROM tco.settle_cycle('2023-02');
RESET search_path;
SELECT payer_account_id, list_total FROM tco.statement WHERE cycle OPERATOR(tco.=) '2023-02';
DROP SCHEMA evil CASCADE;

-- 5. Offsets and POSIX rules are not zone names: '+08' would be UTC-8.
SELECT pg_temp.sqlstate($$SELECT tco.cycle_of('2023-01-31 20:00+00', '+08')$$) AS plus_08,
       pg_temp.sqlstate($$SELECT tco.cycle_of('2023-01-31 20:00+00', '8')$$) AS eight,
       pg_temp.sqlstate($$SELECT tco.cycle_of('2023-01-31 20:00+00', '-3.5')$$) AS minus_3_5,
       pg_temp.sqlstate($$SELECT tco.cycle_of('2023-01-31 20:00+00', 'UTC+8')$$) AS utc_plus_8,
       pg_temp.sqlstate($$SELECT tco.cycle_of('2023-01-31 20:00+00', 'EST5EDT')$$) AS est5edt,
       pg_temp.sqlstate($$SELECT tco.cycle_range('2023-01', 'Etc/GMT-8')$$) AS etc_gmt,
       pg_temp.sqlstate($$SELECT tco.cycle_of('2023-01-31 20:00+00', '')$$) AS empty;
SELECT tco.cycle_of('2023-01-31 20:00+00', '+08');
SELECT tco.cycle_of('2023-01-31 20:00+00', 'Asia/Shanghai') AS shanghai;
SELECT tco.set_billing_timezone('UTC+8');
SELECT tco.set_billing_timezone('+08');

-- 6. A trusteeship change in 9999-12 has an effective instant (the start of
-- "10000-01" when frozen): payer calls and settlement keep working.
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    VALUES (1003, 'D', '9999-12-01', '9999-12-02', 1, '9999-12-02');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    VALUES (1003, 'D', '2023-03-01', '2023-03-02', 1, '2023-03-02');
SELECT tco.establish_trusteeship(1003, 100, '9999-12-15 00:00+00') > 0 AS established;
SELECT tco.trusteeship_effective_payer(1003, 'D', '9999-12-20') AS frozen_payer,
       tco.trusteeship_effective_payer(1003, 'H', '9999-12-20') AS hourly_payer,
       tco.explain_payer(1003, 'D', '9999-12-20') -> 'not_yet_effective' -> 0 ->> 'effective_at' AS effective_at;
SELECT statements, lines FROM tco.settle_cycle('2023-03');

-- 7. A reader granted tco.cycle_of, tco.cycle_range and tco.billing_timezone
-- reads the billing zone in a fresh session, without a privilege on tco.config.
SELECT current_user AS owner, current_database() AS db \gset
SET client_min_messages = warning;
DROP ROLE IF EXISTS tco_rob_reader;
RESET client_min_messages;
CREATE ROLE tco_rob_reader LOGIN IN ROLE tco_reader;
\c - tco_rob_reader
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SELECT tco.cycle_of('2023-01-31 20:00+00') AS cycle, tco.cycle_range('2023-01') AS range,
       tco.billing_timezone() AS zone;
SELECT count(*) FROM tco.config;
\c - :owner
DROP ROLE tco_rob_reader;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

-- 8. Day boundaries where a DST gap swallows midnight: America/Toronto went
-- from 1919-03-30 23:30 EST to 1919-03-31 00:30 EDT (04:30 UTC), where the
-- day began.
SET client_min_messages = warning;
DROP DATABASE IF EXISTS tco_rob_dst;
RESET client_min_messages;
CREATE DATABASE tco_rob_dst;
\c tco_rob_dst
SET datestyle = 'ISO, YMD';
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
SELECT tco.set_billing_timezone('America/Toronto');
SELECT t, tco.granularity_trunc('day', t) AS day_start, tco.granularity_ceil('day', t) AS next_day,
       tco.granularity_trunc('week', t) AS week_start
FROM (VALUES ('1919-03-31 04:15+00'::timestamptz), ('1919-03-31 04:30+00'), ('1919-03-31 04:45+00'),
             ('1919-03-31 12:00+00')) AS v(t);
-- 5. A billing zone with a digit stored by an earlier version (config_check
-- refuses it now) keeps working: its cycles were cut in it.
ALTER TABLE tco.config DISABLE TRIGGER USER;
UPDATE tco.config SET billing_timezone = 'Etc/GMT-8';
ALTER TABLE tco.config ENABLE TRIGGER USER;
SELECT tco.billing_timezone(), tco.cycle_of('2023-01-31 20:00+00') AS cycle_utc_plus_8;
SELECT tco.set_billing_timezone('Etc/GMT-8');
\c :db :owner
DROP DATABASE tco_rob_dst;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

-- 8. An explicit id at the int8 maximum, even rolled back, does not move the
-- identity sequence to its end: later inserts still get ids.
BEGIN;
INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount, issued_at)
    VALUES (9223372036854775807, 101, 'D', '2023-04-05', '2023-04-06', 1, '2023-04-06');
ROLLBACK;
INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount, issued_at)
    VALUES (9223372036854775806, 101, 'D', '2023-04-05', '2023-04-06', 1, '2023-04-06');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    VALUES (101, 'D', '2023-04-06', '2023-04-07', 1, '2023-04-07') RETURNING line_id < 1000 AS small_id;
-- ids in the lower half still move it
INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount, issued_at)
    VALUES (5000, 101, 'D', '2023-04-07', '2023-04-08', 1, '2023-04-08');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    VALUES (101, 'D', '2023-04-08', '2023-04-09', 1, '2023-04-09') RETURNING line_id;

-- 2. Caches (re)built in parallel mode, where no new snapshot may be taken
-- (the leader of a parallel query, a worker), use the active snapshot.
SET force_parallel_mode = on;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
UPDATE tco.product SET name = name;
SELECT count(tco.trusteeship_effective_payer(account_id, product_code, period_start)) AS payers,
       count(tco.cycle_of(period_start)) AS cycles
FROM tco.bill_line;
SELECT tco.cycle_of('2023-01-31 20:00+00') AS cycle_in_a_worker;
RESET force_parallel_mode;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
