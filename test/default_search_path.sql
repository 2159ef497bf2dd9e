-- What a BI tool or driver sends works under the server's default
-- search_path, without tco on it (DESIGN sections 6 and 8, README "BI
-- tools"): the BI views have built-in column types only, and a cycle compares
-- with text literals, ranges, IN lists and text parameters, in the views and
-- in the tables.  With tco on the path the type's own operators still apply.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SET timezone = 'UTC';
SELECT plan(21);

\ir fixtures/access.inc
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    SELECT a, 'cvm', c + interval '10 hours', c + interval '11 hours', 10, c + interval '11 hours'
      FROM unnest(ARRAY[101, 102, 105, 201]) a,
           unnest(ARRAY[timestamptz '2024-01-05', '2024-02-05', '2024-03-05']) c;
SELECT tco.settle_cycle(c::tco.billing_cycle) FROM unnest(ARRAY['2024-01', '2024-02', '2024-03']) c;

-- the server's default search_path, as a BI connection has it
SET search_path = "$user", public;
SELECT is(current_setting('search_path'), '"$user", public', 'the default search_path, without tco');

SELECT is(array(SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                  JOIN pg_type t ON t.oid = a.atttypid
                 WHERE c.relnamespace = 'tco'::regnamespace AND c.relname LIKE 'settlement_by_%'
                   AND t.typnamespace <> 'pg_catalog'::regnamespace ORDER BY 1),
          '{}', 'the BI views have built-in column types only');
SELECT is((SELECT format_type(atttypid, atttypmod) FROM pg_attribute
            WHERE attrelid = 'tco.settlement_by_payer'::regclass AND attname = 'cycle'), 'text', 'the cycle is text');

SELECT is((SELECT count(*) FROM tco.settlement_by_payer WHERE cycle = '2024-02'), 4::bigint,
          'settlement_by_payer WHERE cycle = ''2024-02''');
SELECT is((SELECT count(*) FROM tco.settlement_by_payer WHERE cycle BETWEEN '2024-01' AND '2024-02'), 8::bigint,
          'a range of cycles');
SELECT is((SELECT count(*) FROM tco.settlement_by_payer WHERE cycle IN ('2024-01', '2024-03')), 8::bigint,
          'an IN list');
SELECT is((SELECT count(*) FROM tco.settlement_by_member WHERE cycle >= '2024-02'), 8::bigint,
          'settlement_by_member with >=');
SELECT is((SELECT count(DISTINCT cycle) FROM tco.settlement_by_unit WHERE cycle < '2024-03'), 2::bigint,
          'settlement_by_unit with <');
SELECT is((SELECT array_agg(DISTINCT cycle_start || '..' || cycle_end) FROM tco.settlement_by_payer WHERE cycle = '2024-02'),
          '{2024-02-01..2024-02-29}', 'date bounds beside the cycle for date pickers');
SELECT is((SELECT count(*) FROM tco.settlement_by_payer WHERE DATE '2024-02-14' BETWEEN cycle_start AND cycle_end), 4::bigint,
          'a date picker''s date finds its cycle');

PREPARE by_cycle(text) AS SELECT count(*) FROM tco.settlement_by_payer WHERE cycle = $1;
SELECT is((SELECT count FROM (SELECT 1) x, LATERAL (SELECT count(*) FROM tco.settlement_by_payer WHERE cycle = '2024-03') y), 4::bigint,
          'the same count for 2024-03');
CREATE TEMP TABLE prepared_result AS EXECUTE by_cycle('2024-03');
SELECT is((SELECT count FROM prepared_result), 4::bigint, 'a text parameter (PREPARE p(text) ... WHERE cycle = $1)');

-- the tables too: tco.statement, tco.invoice, tco.alert keep tco.billing_cycle
SELECT is((SELECT count(*) FROM tco.statement WHERE cycle = '2024-01'), 4::bigint, 'tco.statement WHERE cycle = ''2024-01''');
SELECT is((SELECT count(*) FROM tco.statement WHERE cycle IN ('2024-01', '2024-02')), 8::bigint, 'tco.statement with an IN list');
SELECT is((SELECT count(*) FROM tco.statement WHERE cycle > '2024-01' AND cycle <= '2024-03'), 8::bigint, 'tco.statement with a range');
PREPARE st_by_cycle(text) AS SELECT count(*) FROM tco.statement WHERE cycle = $1;
CREATE TEMP TABLE prepared_st AS EXECUTE st_by_cycle('2024-02');
SELECT is((SELECT count FROM prepared_st), 4::bigint, 'tco.statement with a text parameter');
SELECT is((SELECT string_agg(DISTINCT cycle::text, ',' ORDER BY cycle::text) FROM tco.statement WHERE cycle LIKE '2024-%'),
          '2024-01,2024-02,2024-03', 'LIKE on a cycle');

-- text order is cycle order, across years and for the extreme years
SELECT is((SELECT array_agg(c ORDER BY c::text) = array_agg(c ORDER BY c)
             FROM unnest(ARRAY['0001-01', '0999-12', '1000-01', '2023-12', '2024-01', '9999-12']::tco.billing_cycle[]) c),
          true, 'ordering as text is ordering as cycles');

-- as a reader, under the default path
SELECT is(pg_temp.n_as('tco_t_admin1', $q$SELECT count(*) FROM tco.settlement_by_payer WHERE cycle = '2024-02'$q$), 3::bigint,
          'a reader''s BI query under the default path sees its organization''s statements');

-- with tco on the path, the type's operators: no ambiguity, same answers,
-- and a malformed literal is still refused as a cycle
SET search_path = tco, public;
SELECT is((SELECT count(*) FROM tco.statement WHERE cycle = '2024-01'), 4::bigint, 'with tco on the path, the same');
SELECT throws_ok($$SELECT count(*) FROM tco.statement WHERE cycle = '2024-13'$$, '22008', NULL,
                 'with tco on the path a literal is a cycle (and a bad month an error)');
RESET search_path;

SELECT * FROM finish();
ROLLBACK;
