-- Trusteeship history (R14): dated rows, never rewritten; a move ends one row
-- and starts another at the same instant; changes are in time order (TC006);
-- member.policy follows the trusteeship, and setting it drives the trusteeship.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS tco CASCADE;
SELECT plan(38);
\ir fixtures/trust.inc

SELECT ok(tco.establish_trusteeship(2, 1, '2024-01-01 09:00+00') > 0, 'establish returns the trusteeship id');
SELECT is((SELECT policy FROM tco.member WHERE account_id = 2), 'trusteeship'::tco.settlement_policy,
    'the member''s policy follows: trusteeship');
SELECT throws_ok($$SELECT tco.establish_trusteeship(2, 1, '2024-01-05')$$, '55000', NULL,
    'the same manager again is refused');

SELECT tco.establish_trusteeship(2, 9, '2024-02-01 00:00+00');
SELECT results_eq($$SELECT management_account_id, established_at, ended_at FROM tco.trusteeship
                    WHERE member_account_id = 2 ORDER BY established_at$$,
    $$VALUES (1::bigint, '2024-01-01 09:00+00'::timestamptz, '2024-02-01 00:00+00'::timestamptz),
             (9, '2024-02-01 00:00+00', NULL)$$,
    'establishing to another manager is a move: one row ends, the next starts at the same instant');
SELECT is((SELECT count(*) FROM tco.member_history WHERE account_id = 2 AND event = 'policy_changed'), 1::bigint,
    'a move does not flip the policy');

-- Time order.
SELECT throws_ok($$SELECT tco.end_trusteeship(2, '2024-01-15')$$, 'TC006', NULL,
    'an end before the latest change is refused');
SELECT throws_ok($$SELECT tco.move_trusteeship(2, 1, '2024-01-31')$$, 'TC006', NULL,
    'a move before the latest change is refused');
SELECT throws_ok($$UPDATE tco.trusteeship SET ended_at = '2024-01-31' WHERE member_account_id = 2 AND ended_at IS NULL$$,
    'TC006', NULL, 'direct UPDATE: an end before the latest change is refused');
SELECT throws_ok($$UPDATE tco.trusteeship SET ended_at = '2024-02-01' WHERE member_account_id = 2 AND ended_at IS NULL$$,
    '23514', NULL, 'direct UPDATE: an empty trusteeship (end = start) is refused by the CHECK');
SELECT lives_ok($$SELECT tco.move_trusteeship(2, 1, '2024-03-01')$$, 'move back to the admin');
SELECT throws_ok($$SELECT tco.move_trusteeship(2, 1, '2024-03-02')$$, '55000', NULL,
    'a move to the current manager is refused');
SELECT lives_ok($$SELECT tco.end_trusteeship(2, '2024-04-01')$$, 'end');
SELECT is((SELECT policy FROM tco.member WHERE account_id = 2), 'self_pay'::tco.settlement_policy,
    'the member''s policy follows: self_pay');
SELECT throws_ok($$SELECT tco.end_trusteeship(2, '2024-04-02')$$, '55000', NULL, 'ending twice is refused');
SELECT throws_ok($$SELECT tco.move_trusteeship(2, 9, '2024-04-02')$$, '55000', NULL, 'a member not in trusteeship cannot move');
SELECT throws_ok($$INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
                   VALUES (2, 9, '2024-03-15')$$, 'TC006', NULL, 'direct INSERT before the latest change is refused');
SELECT is((SELECT count(*) FROM tco.trusteeship WHERE member_account_id = 2), 3::bigint, 'three rows of history');

-- History is never rewritten.
SELECT throws_ok($$UPDATE tco.trusteeship SET ended_at = '2024-05-01' WHERE member_account_id = 2 AND ended_at = '2024-04-01'$$,
    'TC008', NULL, 'an end cannot be changed');
SELECT throws_ok($$UPDATE tco.trusteeship SET established_at = '2024-01-02' WHERE member_account_id = 2$$,
    'TC008', NULL, 'a start cannot be changed');
SELECT throws_ok($$UPDATE tco.trusteeship SET management_account_id = 9 WHERE member_account_id = 2$$,
    'TC008', NULL, 'a manager cannot be changed');
SELECT throws_ok($$DELETE FROM tco.trusteeship$$, 'TC008', NULL, 'rows cannot be deleted');
SELECT throws_ok($$TRUNCATE tco.trusteeship CASCADE$$, 'TC008', NULL, 'nor truncated');

-- Direct DML: one active trusteeship at a time; ending by UPDATE.
INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at) VALUES (3, 1, '2024-01-01');
SELECT is((SELECT policy FROM tco.member WHERE account_id = 3), 'trusteeship'::tco.settlement_policy,
    'direct INSERT: the policy follows');
SELECT throws_ok($$INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
                   VALUES (3, 9, '2024-02-01')$$, '55000', NULL, 'a second active trusteeship is refused');
UPDATE tco.trusteeship SET ended_at = '2024-02-01' WHERE member_account_id = 3 AND ended_at IS NULL;
SELECT is((SELECT policy FROM tco.member WHERE account_id = 3), 'self_pay'::tco.settlement_policy,
    'direct UPDATE of ended_at: the policy follows');

-- The policy drives the trusteeship.
UPDATE tco.member SET policy = 'trusteeship' WHERE account_id = 3;
SELECT is((SELECT management_account_id FROM tco.trusteeship WHERE member_account_id = 3 AND ended_at IS NULL),
    1::bigint, 'policy trusteeship: a trusteeship to the admin');
SELECT is((SELECT established_at FROM tco.trusteeship WHERE member_account_id = 3 AND ended_at IS NULL),
    now(), 'established now');
UPDATE tco.member SET policy = 'self_pay' WHERE account_id = 2;
SELECT is((SELECT count(*) FROM tco.trusteeship WHERE member_account_id = 2), 3::bigint,
    'policy self_pay on a self-pay member: nothing happens');
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES (11, 'a11', 1, 1);
SELECT tco.add_member((SELECT org_id FROM tco.organization), 11);
INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at) VALUES (11, 1, '2024-01-01');
UPDATE tco.member SET policy = 'self_pay' WHERE account_id = 11;
SELECT is((SELECT ended_at FROM tco.trusteeship WHERE member_account_id = 11), now(), 'policy self_pay: ended now');
SELECT throws_ok($$UPDATE tco.member SET policy = 'trusteeship' WHERE account_id = 1$$, 'TC004', NULL,
    'the admin cannot be put in trusteeship to itself');

-- tco.add_member with policy trusteeship.
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES (10, 'a10', 1, 1);
SELECT tco.add_member((SELECT org_id FROM tco.organization), 10, NULL, 'trusteeship');
SELECT is((SELECT management_account_id FROM tco.trusteeship WHERE member_account_id = 10 AND ended_at IS NULL),
    1::bigint, 'add_member with policy trusteeship: managed by the admin');

-- Leaving the organization needs the trusteeship ended first.
SELECT throws_ok($$SELECT tco.remove_member(10)$$, '55000', NULL, 'a managed member cannot leave');
SELECT is(pg_temp.hint_of($$DELETE FROM tco.member WHERE account_id = 10$$),
    'End the trusteeship first (tco.end_trusteeship), for the account and for any member it manages.',
    'direct DELETE: the hint says to end the trusteeship first');
SELECT tco.establish_trusteeship(4, 9) FROM tco.deposit(4, 1);
SELECT throws_ok($$SELECT tco.remove_member(9)$$, '55000', NULL, 'a manager cannot leave');
SELECT lives_ok($$SELECT tco.remove_member(2)$$, 'a member whose trusteeship ended can leave');

-- Bad input.
SELECT throws_ok($$SELECT tco.end_trusteeship(NULL)$$, '22004', NULL, 'end: NULL member');
SELECT throws_ok($$SELECT tco.establish_trusteeship(3, 1, NULL)$$, '22004', NULL, 'establish: NULL instant');
SELECT throws_ok($$SELECT tco.establish_trusteeship(5, 1, 'infinity')$$, '22023', NULL, 'establish: infinite instant');

SELECT * FROM finish();
ROLLBACK;
