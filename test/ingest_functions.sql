-- The INSERTs of DESIGN section 6 as functions (tco.create_entity,
-- tco.create_account, tco.create_product, tco.insert_bill_lines): the same
-- rows and the same rules as direct INSERTs.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SET timezone = 'UTC';
SELECT plan(16);

SELECT is(tco.create_entity(7, 'Acme', true), 7::bigint, 'create_entity returns the id given');
SELECT is((SELECT name || ' ' || verified FROM tco.entity WHERE entity_id = 7), 'Acme true', 'and inserts the row');
SELECT cmp_ok(tco.create_entity(NULL, 'Next'), '>', 7::bigint, 'a NULL id takes the next one, past explicit ids');
SELECT throws_ok($$SELECT tco.create_entity(8, '   ')$$, '23514', NULL, 'the entity rules apply (blank name)');
SELECT is(tco.create_account(101, 'admin', 7, 100), 101::bigint, 'create_account');
SELECT is(tco.create_account(9007199254740993, 'big', 7), 9007199254740993::bigint, 'an id above 2^53 intact');
SELECT is((SELECT balance::text || '/' || credit_limit FROM tco.account WHERE account_id = 101), '100.00/0.00', 'balance and credit limit defaults');
SELECT throws_ok($$SELECT tco.create_account(102, 'x', 999)$$, '23503', NULL, 'an unknown entity is refused');
SELECT is(tco.create_product('cvm', 'hour'), 'cvm', 'create_product');
SELECT throws_ok($$SELECT tco.create_product('cvm', 'day')$$, '23505', NULL, 'a product exists once');

SELECT is(tco.insert_bill_lines(ARRAY[101, 101, 9007199254740993], ARRAY['cvm', 'cvm', 'cvm'], NULL,
                                ARRAY['2024-01-01 00:00', '2024-01-01 01:00', '2024-01-01 00:00']::timestamptz[],
                                ARRAY['2024-01-01 01:00', '2024-01-01 02:00', '2024-01-01 01:00']::timestamptz[],
                                ARRAY[1.25, 2.000001, 3], NULL, NULL), 3::bigint, 'insert_bill_lines inserts three lines');
SELECT is((SELECT string_agg(account_id || ' ' || charge_type || ' ' || list_amount || ' ' || (paid_at IS NULL), ',' ORDER BY line_id)
             FROM tco.bill_line),
          '101 postpaid 1.250000 true,101 postpaid 2.000001 true,9007199254740993 postpaid 3.000000 true',
          'exact amounts, postpaid and unpaid by default');
SELECT is(tco.insert_bill_lines(ARRAY[101], ARRAY['cvm'], ARRAY['prepaid']::tco.charge_type[],
                                ARRAY['2024-02-01']::timestamptz[], ARRAY['2024-03-01']::timestamptz[], ARRAY[9.99],
                                ARRAY['2024-02-01']::timestamptz[], ARRAY[NULL]::timestamptz[]), 1::bigint, 'with every column given');
SELECT throws_ok($$SELECT tco.insert_bill_lines(ARRAY[101, 101], ARRAY['cvm'], NULL, ARRAY[now(), now()], ARRAY[now(), now()], ARRAY[1, 1], NULL, NULL)$$,
                 '22023', 'the arrays of tco.insert_bill_lines must have one length (account_id has 2)', 'arrays of different lengths are refused');
SELECT throws_ok($$SELECT tco.insert_bill_lines(ARRAY[101], ARRAY['cvm'], NULL, ARRAY['2024-01-01 02:00']::timestamptz[],
                                                ARRAY['2024-01-01 01:00']::timestamptz[], ARRAY[1], NULL, NULL)$$,
                 '23514', NULL, 'the bill-line rules apply (a period ending before it starts)');
SELECT throws_ok($$SELECT tco.insert_bill_lines(NULL, ARRAY['cvm'], NULL, NULL, NULL, NULL, NULL, NULL)$$, '22004', NULL,
                 'a NULL column array is refused');

SELECT * FROM finish();
ROLLBACK;
