-- R5: association needs a positive available balance on the member at the
-- time of association.  tco reads "available balance" as the cash balance
-- (a credit line is not a balance); a move between managers is not an
-- association and is not checked.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS tco CASCADE;
SELECT plan(13);
\ir fixtures/trust.inc

SELECT throws_ok($$SELECT tco.establish_trusteeship(4, 1)$$, 'TC005', NULL, 'a zero balance is refused (function)');
SELECT throws_like($$SELECT tco.establish_trusteeship(4, 1)$$,
    'R5: account 4 has no positive available balance (balance 0.00)', 'the error names the rule, account and balance');
SELECT throws_ok($$INSERT INTO tco.trusteeship (member_account_id, management_account_id) VALUES (4, 1)$$,
    'TC005', NULL, 'a zero balance is refused (direct INSERT)');
SELECT throws_ok($$UPDATE tco.member SET policy = 'trusteeship' WHERE account_id = 4$$,
    'TC005', NULL, 'a zero balance is refused (policy set on the member)');
SELECT is((SELECT policy FROM tco.member WHERE account_id = 4), 'self_pay'::tco.settlement_policy,
    'the member stays self_pay');

-- A negative balance covered by a credit line is not a positive balance.
UPDATE tco.account SET credit_limit = 100 WHERE account_id = 3;
INSERT INTO tco.ledger (account_id, amount, kind) VALUES (3, -110, 'payment');
SELECT is((SELECT balance FROM tco.account WHERE account_id = 3), -10.00, 'account 3 is at -10.00 on credit');
SELECT throws_ok($$SELECT tco.establish_trusteeship(3, 1)$$, 'TC005', NULL, 'credit does not count as balance');

SELECT tco.deposit(4, 0.01);
SELECT lives_ok($$SELECT tco.establish_trusteeship(4, 1, '2024-01-01')$$, 'one cent is enough');

-- Once managed, the member may withdraw everything (R10) and may still be moved.
SELECT is(tco.withdraw(4, 0.01), 0.00, 'the managed member withdraws its balance');
SELECT lives_ok($$SELECT tco.move_trusteeship(4, 9, '2024-02-01')$$, 'a move is not an association');
SELECT tco.end_trusteeship(4, '2024-03-01');
SELECT throws_ok($$SELECT tco.establish_trusteeship(4, 1, '2024-04-01')$$, 'TC005', NULL,
    'a new association after the end is checked again');
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES (10, 'a10', 1, 0);
SELECT throws_ok($$SELECT tco.add_member((SELECT org_id FROM tco.organization), 10, NULL, 'trusteeship')$$,
    'TC005', NULL, 'joining with policy trusteeship needs a positive balance too');
SELECT ok(NOT EXISTS (SELECT 1 FROM tco.member WHERE account_id = 10), 'and the account did not join');

SELECT * FROM finish();
ROLLBACK;
