-- R10 Credit: service availability of a managed member depends only on its
-- manager's available credit.  A managed member's own remaining balance is
-- not used for payment and can be withdrawn.  Money moves through the
-- append-only ledger; no balance goes below -credit_limit (cash out: below 0).
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS tco CASCADE;
SELECT plan(31);
\ir fixtures/trust.inc

-- Self-pay: own balance + credit limit.
SELECT is(tco.available_credit(1), 1500.00, 'admin: 1000.00 balance + 500.00 credit');
SELECT is(tco.available_credit(2), 100.00, 'self-pay member: its own balance');
SELECT ok(tco.service_available(2), 'self-pay member with money: available');
SELECT ok(NOT tco.service_available(4), 'self-pay member with nothing: not available');

-- Managed: the manager's credit.
SELECT tco.establish_trusteeship(2, 1, '2024-01-01');
SELECT is(tco.available_credit(2), 1500.00, 'managed member: its manager''s available credit');
SELECT is(tco.withdraw(2, 100), 0.00, 'the managed member withdraws its whole balance');
SELECT is(tco.available_credit(2), 1500.00, 'its own balance did not matter');
SELECT ok(tco.service_available(2), 'still available');
INSERT INTO tco.ledger (account_id, amount, kind) VALUES (1, -1500, 'payment');
SELECT is(tco.available_credit(1), 0.00, 'the manager used all its credit');
SELECT ok(NOT tco.service_available(2), 'the managed member is no longer available');
SELECT ok(NOT tco.service_available(1), 'nor is the manager');
SELECT tco.end_trusteeship(2, now());
SELECT ok(NOT tco.service_available(2), 'ended: the member is back on its own (empty) balance');
SELECT is(tco.deposit(2, 0.10), 0.10, 'deposit returns the new balance');
SELECT ok(tco.service_available(2), 'and a cent or so makes it available again');

-- Withdraw: own cash only, exact amounts, bad input.
SELECT throws_ok($$SELECT tco.withdraw(3, 100.01)$$, 'TC009', NULL, 'no withdrawal beyond the cash balance');
SELECT throws_ok($$SELECT tco.withdraw(1, 0.01)$$, 'TC009', NULL, 'no withdrawal on credit (admin is at -500.00)');
SELECT is(tco.withdraw(3, 0.1), 99.90, 'numeric, exact to the cent');
SELECT throws_ok($$SELECT tco.withdraw(3, NULL)$$, '22004', NULL, 'NULL amount');
SELECT throws_ok($$SELECT tco.withdraw(NULL, 1)$$, '22004', NULL, 'NULL account');
SELECT throws_ok($$SELECT tco.withdraw(3, 0)$$, '22023', NULL, 'zero amount');
SELECT throws_ok($$SELECT tco.withdraw(3, -5)$$, '22023', NULL, 'negative amount');
SELECT throws_ok($$SELECT tco.withdraw(3, 1.001)$$, '22023', NULL, 'more than 2 decimals');
SELECT throws_ok($$SELECT tco.withdraw(3, 'NaN')$$, '22023', NULL, 'NaN');
SELECT throws_ok($$SELECT tco.withdraw(999999, 1)$$, '23503', NULL, 'unknown account');
SELECT throws_ok($$SELECT tco.available_credit(NULL)$$, '22004', NULL, 'available_credit: NULL account');
SELECT throws_ok($$SELECT tco.available_credit(999999)$$, '23503', NULL, 'available_credit: unknown account');

-- Direct DML on the ledger obeys the same rules.
SELECT throws_ok($$INSERT INTO tco.ledger (account_id, amount, kind) VALUES (3, -99.91, 'withdraw')$$,
    'TC009', NULL, 'direct INSERT: no withdrawal beyond the cash balance');
SELECT throws_ok($$INSERT INTO tco.ledger (account_id, amount, kind) VALUES (1, -0.01, 'payment')$$,
    'TC009', NULL, 'direct INSERT: no payment beyond the credit limit');
SELECT throws_ok($$UPDATE tco.ledger SET amount = 1$$, 'TC008', NULL, 'the ledger is append-only (UPDATE)');
SELECT throws_ok($$DELETE FROM tco.ledger$$, 'TC008', NULL, 'the ledger is append-only (DELETE)');
SELECT is((SELECT count(*) FROM tco.account a
           WHERE a.balance <> coalesce((SELECT l.balance_after FROM tco.ledger l WHERE l.account_id = a.account_id
                                        ORDER BY l.entry_id DESC LIMIT 1), a.balance)),
    0::bigint, 'every balance equals the balance after its latest ledger entry');

SELECT * FROM finish();
ROLLBACK;
