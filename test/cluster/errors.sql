-- scripts/test_cluster.sh, errors: calls of the interface (DESIGN section 6)
-- that a shard refuses, run on one server and through the router after the
-- workload (test/cluster/workload.sql); each error's SQLSTATE, message,
-- detail and hint must be identical (README "Running on several servers",
-- Failures: the router raises a shard's error again without PL/Proxy's
-- prefixes).  Run without ON_ERROR_STOP, context hidden; the script compares
-- the outputs without the fields PL/Proxy does not carry (LOCATION, SCHEMA,
-- TABLE, COLUMN, CONSTRAINT NAME).  Nothing here names an id the servers draw
-- (a unit id drawn by a call that fails leaves a gap on the router only).
\set ON_ERROR_STOP 0
\set VERBOSITY verbose
\set SHOW_CONTEXT never
\pset format unaligned
\pset footer off
SET client_min_messages = warning;
-- corrections: a line no shard has, then the arguments checked first
SELECT tco.correct_bill_line(999999, 1, 'unknown');
SELECT tco.correct_bill_line(NULL, 1, 'unknown');
SELECT tco.correct_bill_line(999999, -1, 'unknown');
-- money and benefits on the account's shard
SELECT tco.deposit(101, -5);
SELECT tco.deposit(101, 0.0000001);
SELECT tco.grant_coupon(101, -1, '2023-12-31 00:00+08');
SELECT tco.grant_voucher(101, 10, '2023-12-31 00:00+08', 'no-such-product');
SELECT tco.set_contract_discount(101, NULL, 1.5);
-- trusteeship rules (R1-R5, R14) on the member's shard
SELECT tco.establish_trusteeship(101, 101, '2023-03-01 00:00+08');
SELECT tco.establish_trusteeship(101, 200, '2023-03-01 00:00+08');   -- another entity, another organization (shard)
SELECT tco.establish_trusteeship(101, 102, '2023-03-01 00:00+08');   -- already in a trusteeship
SELECT tco.move_trusteeship(101, 300, '2023-03-01 00:00+08');        -- another entity, another organization
SELECT tco.end_trusteeship(103, '2023-03-01 00:00+08');
SELECT tco.move_trusteeship(103, 100, '2023-03-01 00:00+08');
-- organizations and units on the organization's shard
SELECT tco.create_unit(1, NULL);
SELECT tco.add_member(1, 101);
SELECT tco.remove_member(100);
-- payer questions
SELECT tco.trusteeship_effective_payer(101, 'no-such-product', '2023-02-01 00:00+08');
SELECT tco.explain_payer(101, 'no-such-product', '2023-02-01 00:00+08');
-- bill lines: a product no shard knows
SELECT tco.insert_bill_lines(ARRAY[101]::bigint[], ARRAY['no-such-product'], NULL, ARRAY['2023-03-05 00:00+08']::timestamptz[],
                             ARRAY['2023-03-05 01:00+08']::timestamptz[], ARRAY[1]::numeric[], NULL, NULL);
-- settlement of a cycle that has not ended, of an organization
SELECT * FROM tco.settle_cycle('2999-01', 1);
-- global data, validated by every shard
SELECT tco.set_billing_timezone('+08:00');
SELECT tco.billing_timezone();
