-- Who pays a bill line (R6, DESIGN section 3): tco.trusteeship_effective_payer
-- and tco.explain_payer, on the example of seed 004.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET timezone = 'Asia/Shanghai';
\set SHOW_CONTEXT never

SELECT tco.set_billing_timezone('Asia/Shanghai');
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme Ltd', true);
INSERT INTO tco.account (account_id, name, entity_id, balance)
    VALUES (1, 'admin', 1, 1000), (2, 'member', 1, 100), (3, 'manager B', 1, 1000),
           (4, 'manager C', 1, 1000), (5, 'loner', 1, 50);
SELECT tco.create_organization(1, 'Acme');
SELECT tco.add_member(1, 2), tco.add_member(1, 3), tco.add_member(1, 4), tco.add_member(1, 5);
INSERT INTO tco.product (product_code, granularity) VALUES
    ('A', 'day'), ('B', 'day'), ('H', 'hour'), ('MIN', 'minute'), ('W', 'week'), ('M', 'month');

-- Product A has a bill issued before the change and still unpaid at it.
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    VALUES (2, 'A', '2023-01-01', '2023-01-02', 10, '2023-01-02 01:00');
-- Product B had one too, but it was paid before the change: not frozen.
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at, paid_at)
    VALUES (2, 'B', '2023-01-01', '2023-01-02', 10, '2023-01-02 01:00', '2023-01-02 02:00');

-- The change: trusteeship of account 2 to the admin at 2023-01-03 09:23 UTC+8.
SELECT tco.establish_trusteeship(2, 1, '2023-01-03 09:23+08') > 0 AS established;

-- Scenario 1: frozen product A stays on the member for all of January.
-- Scenario 2 and the granularity rule for the others.
SELECT product, starts, tco.trusteeship_effective_payer(2, product, starts::timestamptz) AS payer
FROM (VALUES ('A', '2023-01-03 12:00'), ('A', '2023-01-31 23:59'), ('A', '2023-02-01 00:00'),
             ('B', '2023-01-03 00:00'), ('B', '2023-01-04 00:00'),
             ('H', '2023-01-03 09:00'), ('H', '2023-01-03 10:00'),
             ('MIN', '2023-01-03 09:22'), ('MIN', '2023-01-03 09:23'),
             ('W', '2023-01-08 23:00'), ('W', '2023-01-09 00:00'),
             ('M', '2023-01-31 00:00'), ('M', '2023-02-01 00:00')) AS v(product, starts)
ORDER BY product, starts;

SELECT jsonb_pretty(tco.explain_payer(2, 'A', '2023-01-20'));
SELECT jsonb_pretty(tco.explain_payer(2, 'H', '2023-01-03 10:00'));
-- An account without any change pays for itself.
SELECT tco.explain_payer(5, 'A', '2023-01-20') ->> 'rule' AS rule,
       tco.trusteeship_effective_payer(5, 'A', '2023-01-20') AS payer;

-- Moves within one cycle: 2 -> 3 on Jan 10 14:00, -> 4 on Jan 20 00:00
-- (exactly on a day boundary: effective at once), then ended on Jan 25 08:00.
SELECT tco.move_trusteeship(2, 3, '2023-01-10 14:00+08') > 0 AS moved_to_3;
SELECT tco.move_trusteeship(2, 4, '2023-01-20 00:00+08') > 0 AS moved_to_4;
SELECT tco.end_trusteeship(2, '2023-01-25 08:00+08');
SELECT starts, tco.trusteeship_effective_payer(2, 'B', starts::timestamptz) AS daily_payer,
       tco.trusteeship_effective_payer(2, 'H', starts::timestamptz) AS hourly_payer,
       tco.trusteeship_effective_payer(2, 'A', starts::timestamptz) AS frozen_payer
FROM (VALUES ('2023-01-10 13:00'), ('2023-01-10 15:00'), ('2023-01-11 00:00'), ('2023-01-19 23:00'),
             ('2023-01-20 00:00'), ('2023-01-25 08:00'), ('2023-01-25 09:00'), ('2023-01-26 00:00'),
             ('2023-02-01 00:00')) AS v(starts)
ORDER BY starts;
SELECT tco.explain_payer(2, 'B', '2023-01-20 00:00') -> 'change' ->> 'kind' AS kind_at_boundary;
SELECT tco.explain_payer(2, 'A', '2023-02-01 00:00') -> 'change' ->> 'kind' AS frozen_then_ended;

-- The same instants read in UTC billing time: boundaries move with the zone.
SELECT tco.set_billing_timezone('UTC');
SELECT tco.trusteeship_effective_payer(2, 'B', '2023-01-11 07:59+08') AS before_utc_midnight,
       tco.trusteeship_effective_payer(2, 'B', '2023-01-11 08:00+08') AS at_utc_midnight;
SELECT tco.set_billing_timezone('Asia/Shanghai');

-- The cache follows changes in the same session at once: paying the A bill
-- (paid_at before the first change) unfreezes product A.
UPDATE tco.bill_line SET paid_at = '2023-01-02 03:00+08' WHERE account_id = 2 AND product_code = 'A';
SELECT tco.trusteeship_effective_payer(2, 'A', '2023-01-05 00:00') AS a_after_payment;
-- and a new product appears for the payer at once
INSERT INTO tco.product VALUES ('NEW', 'day');
SELECT tco.trusteeship_effective_payer(2, 'NEW', '2023-01-05 00:00') AS new_product;
-- a rolled-back change leaves no trace in the cache
BEGIN;
UPDATE tco.product SET granularity = 'month' WHERE product_code = 'NEW';
SELECT tco.trusteeship_effective_payer(2, 'NEW', '2023-01-05 00:00') AS monthly_inside;
ROLLBACK;
SELECT tco.trusteeship_effective_payer(2, 'NEW', '2023-01-05 00:00') AS daily_again;

-- Bad input: NULLs give NULL (STRICT), unknown ids a clean error,
-- infinite instants a defined answer.
SELECT tco.trusteeship_effective_payer(NULL, 'A', now()) IS NULL AS null_account,
       tco.trusteeship_effective_payer(2, NULL, now()) IS NULL AS null_product,
       tco.trusteeship_effective_payer(2, 'A', NULL) IS NULL AS null_at;
SELECT tco.trusteeship_effective_payer(999, 'A', '2023-01-05');
SELECT tco.trusteeship_effective_payer(2, 'NOPE', '2023-01-05');
SELECT tco.trusteeship_effective_payer(2, repeat('x', 100000), '2023-01-05');
SELECT tco.trusteeship_effective_payer(-9223372036854775808, 'A', '2023-01-05');
SELECT tco.trusteeship_effective_payer(2, 'A', '-infinity') AS minus_infinity,
       tco.trusteeship_effective_payer(2, 'A', 'infinity') AS plus_infinity;
SELECT tco.explain_payer(2, 'A', 'infinity') ->> 'rule' AS rule_at_infinity;
