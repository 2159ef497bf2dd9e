-- List amounts at the edges of what settle_cycle reads from the numeric
-- digits (src/settle.c, numeric_to_micro): one micro-unit, digits that
-- straddle the base-10000 groups, the largest amounts that fit in int8
-- micro-units, and one that does not.  Every line settles to exactly its
-- list amount, and the sums are exact.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SELECT plan(6);

SELECT tco.set_billing_timezone('Asia/Shanghai');
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Edge', true);
INSERT INTO tco.account (account_id, entity_id, balance) VALUES (1, 1, 0), (2, 1, 0), (3, 1, 0);
INSERT INTO tco.product (product_code, granularity) VALUES ('p', 'hour'), ('q', 'hour');

CREATE TEMP TABLE amounts (amount numeric) ON COMMIT DROP;
INSERT INTO amounts VALUES
    (0), (0.000001), (0.000009), (0.00001), (0.00005), (0.0001), (0.000100), (0.001), (0.01),
    (0.1), (0.9999), (0.99999), (0.999999), (1), (1.5), (9999.9999), (10000), (10000.000001),
    (12345678.123456), (99999999.999999), (100000000), (123456789012.345678), (2.5e-5),
    (4000000000000.000001), (9000000000000);
-- spread over accounts 1 and 2 and both products, hour by hour in 2023-01
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
SELECT 1 + n % 2, CASE WHEN n % 3 = 0 THEN 'p' ELSE 'q' END,
       timestamptz '2023-01-02 00:00+08' + n * interval '1 hour',
       timestamptz '2023-01-02 01:00+08' + n * interval '1 hour', amount
FROM (SELECT amount, row_number() OVER (ORDER BY amount) AS n FROM amounts) a;
-- many small lines, so the settlement sorts enough of them to use its radix sort
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
SELECT 3, 'p', timestamptz '2023-01-05 00:00+08' + g * interval '1 minute',
       timestamptz '2023-01-05 00:01+08' + g * interval '1 minute', g / 1000000.0
FROM generate_series(1, 600) g;

SELECT lives_ok($$SELECT tco.settle_cycle('2023-01')$$, 'settle 2023-01');
SELECT is((SELECT count(*) FROM tco.settled_line s JOIN tco.bill_line b USING (line_id)
           WHERE s.list_amount IS DISTINCT FROM b.list_amount OR s.due_amount <> b.list_amount),
          0::bigint, 'every line settles to exactly its list amount (no discount, no benefit)');
SELECT is((SELECT count(*) FROM tco.settled_line), (SELECT count(*) FROM tco.bill_line),
          'every line is settled');
SELECT results_eq(
    $$SELECT account_id, product_code, list_amount, lines FROM tco.statement_line ORDER BY 1, 2$$,
    $$SELECT account_id, product_code, sum(list_amount)::numeric(20,6), count(*)::int FROM tco.bill_line
      GROUP BY 1, 2 ORDER BY 1, 2$$,
    'statement lines are the exact sums of the list amounts');
SELECT results_eq(
    $$SELECT payer_account_id, list_total FROM tco.statement ORDER BY 1$$,
    $$SELECT account_id, round(sum(list_amount), 2) FROM tco.bill_line GROUP BY 1 ORDER BY 1$$,
    'statement totals are the exact sums rounded half-up');

-- 9,300,000,000,000 is 9.3e18 micro-units: beyond int8, a clean error
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
VALUES (1, 'p', '2023-02-02 00:00+08', '2023-02-02 01:00+08', 9300000000000);
SELECT throws_ok($$SELECT tco.settle_cycle('2023-02')$$, '22003', 'bigint out of range',
                 'an amount beyond int8 micro-units is refused with a clean error');

SELECT * FROM finish();
ROLLBACK;
