-- R13 Unified payment: members may top up the admin account (or their own
-- management account); both must be in the same organization.  A top-up moves
-- cash only (never below zero) and is two ledger rows.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS tco CASCADE;
SELECT plan(26);
\ir fixtures/trust.inc

SELECT ok(tco.top_up(2, 1, 10.00) > 0, 'a member tops up its admin');
SELECT is((SELECT balance FROM tco.account WHERE account_id = 2), 90.00, 'the member paid 10.00');
SELECT is((SELECT balance FROM tco.account WHERE account_id = 1), 1010.00, 'the admin received 10.00');
SELECT results_eq($$SELECT account_id, amount, kind, counterparty_account_id, balance_after FROM tco.ledger ORDER BY entry_id$$,
    $$VALUES (2::bigint, -10.00::numeric, 'top_up_out'::text, 1::bigint, 90.00::numeric),
             (1, 10.00, 'top_up_in', 2, 1010.00)$$,
    'two ledger rows, each naming the other account');

-- Exact money: three dimes are thirty cents.
SELECT tco.top_up(3, 1, 0.10) FROM generate_series(1, 3);
SELECT is((SELECT balance FROM tco.account WHERE account_id = 3), 99.70, 'three top-ups of 0.10 cost exactly 0.30');

-- A managed member may top up its own management account, which is not the admin.
SELECT tco.establish_trusteeship(3, 9, '2024-01-01');
SELECT lives_ok($$SELECT tco.top_up(3, 9, 5)$$, 'a managed member tops up its management account');
SELECT is((SELECT balance FROM tco.account WHERE account_id = 9), 105.00, 'which received 5.00');
SELECT throws_ok($$SELECT tco.top_up(2, 9, 5)$$, '55000', NULL, 'but not another member''s management account');
SELECT throws_like($$SELECT tco.top_up(2, 9, 5)$$, 'R13: account 2 cannot top up account 9%', 'the error names the rule and accounts');
SELECT throws_ok($$SELECT tco.top_up(1, 2, 5)$$, '55000', NULL, 'the admin does not allocate funds to members');
SELECT throws_ok($$SELECT tco.top_up(8, 1, 5)$$, '55000', NULL, 'an account outside the organization cannot');
SELECT throws_ok($$SELECT tco.top_up(2, 8, 5)$$, '55000', NULL, 'nor can a member top up an outsider');
SELECT throws_ok($$SELECT tco.top_up(1, 1, 5)$$, '22023', NULL, 'no top-up of oneself');

-- Cash only.
SELECT throws_ok($$SELECT tco.top_up(2, 1, 90.01)$$, 'TC009', NULL, 'not more than the cash balance');
SELECT lives_ok($$SELECT tco.top_up(2, 1, 90.00)$$, 'the whole cash balance is fine');
SELECT is((SELECT balance FROM tco.account WHERE account_id = 2), 0.00, 'the member is at zero');

-- Bad input.
SELECT throws_ok($$SELECT tco.top_up(5, 1, NULL)$$, '22004', NULL, 'NULL amount');
SELECT throws_ok($$SELECT tco.top_up(NULL, 1, 1)$$, '22004', NULL, 'NULL from-account');
SELECT throws_ok($$SELECT tco.top_up(5, NULL, 1)$$, '22004', NULL, 'NULL to-account');
SELECT throws_ok($$SELECT tco.top_up(5, 1, 0)$$, '22023', NULL, 'zero amount');
SELECT throws_ok($$SELECT tco.top_up(5, 1, -1)$$, '22023', NULL, 'negative amount');
SELECT throws_ok($$SELECT tco.top_up(5, 1, 0.005)$$, '22023', NULL, 'a fraction of a cent');
SELECT throws_ok($$SELECT tco.top_up(5, 1, 1e30)$$, '22023', NULL, 'a huge amount');
SELECT throws_ok($$SELECT tco.top_up(5, 999999, 1)$$, '23503', NULL, 'unknown to-account');
SELECT throws_ok($$SELECT tco.deposit(5, -1)$$, '22023', NULL, 'deposit: negative amount');
SELECT is((SELECT balance FROM tco.account WHERE account_id = 5), 100.00, 'refused moves changed nothing');

SELECT * FROM finish();
ROLLBACK;
