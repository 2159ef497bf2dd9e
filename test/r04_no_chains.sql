-- R4 No self-trusteeship and no chains: an account in trusteeship as a member
-- cannot be a manager at the same time, and vice versa.
-- (Concurrency: specs/r04_chain_race.spec.)
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS tco CASCADE;
SELECT plan(14);
\ir fixtures/trust.inc

SELECT throws_ok($$SELECT tco.establish_trusteeship(3, 3)$$, 'TC004', NULL, 'no self-trusteeship (function)');
SELECT throws_ok($$INSERT INTO tco.trusteeship (member_account_id, management_account_id) VALUES (3, 3)$$,
    'TC004', NULL, 'no self-trusteeship (direct INSERT)');

SELECT tco.establish_trusteeship(2, 1, '2024-01-01');
SELECT throws_ok($$SELECT tco.establish_trusteeship(9, 2, '2024-01-02')$$, 'TC004', NULL,
    'a managed member cannot become a manager (function)');
SELECT throws_like($$SELECT tco.establish_trusteeship(9, 2, '2024-01-02')$$,
    'R4: account 2 is a managed member of account 1 and cannot become the management account of account 9',
    'the error names the rule and the three accounts');
SELECT throws_ok($$INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
                   VALUES (9, 2, '2024-01-02')$$, 'TC004', NULL,
    'a managed member cannot become a manager (direct INSERT)');
SELECT throws_ok($$SELECT tco.establish_trusteeship(1, 9, '2024-01-02')$$, 'TC004', NULL,
    'a manager cannot become a managed member (function)');
SELECT throws_ok($$INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
                   VALUES (1, 9, '2024-01-02')$$, 'TC004', NULL,
    'a manager cannot become a managed member (direct INSERT)');
SELECT throws_ok($$SELECT tco.move_trusteeship(2, 2, '2024-01-02')$$, 'TC004', NULL,
    'a move to itself is refused');

-- Once the relationships end, the roles may change, from that instant on.
SELECT tco.end_trusteeship(2, '2024-02-01');
SELECT lives_ok($$SELECT tco.establish_trusteeship(9, 2, '2024-02-01')$$,
    'the former member may manage from the instant its trusteeship ended');
SELECT throws_ok($$SELECT tco.establish_trusteeship(2, 1, '2024-03-01')$$, 'TC004', NULL,
    'now it cannot be managed again while it manages 9');
SELECT throws_ok($$SELECT tco.establish_trusteeship(3, 9, '2024-03-01')$$, 'TC004', NULL,
    'and its member 9 cannot manage');
SELECT lives_ok($$SELECT tco.establish_trusteeship(3, 2, '2024-03-01')$$,
    'while 2 may manage more members');

-- A dated trusteeship in the past cannot be slipped under an existing one either.
SELECT throws_ok($$INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at, ended_at)
                   VALUES (1, 2, '2024-01-10', '2024-01-20')$$, 'TC004', NULL,
    'a closed past range overlapping the manager''s management is refused');
SELECT is((SELECT count(*) FROM tco.trusteeship WHERE ended_at IS NULL), 2::bigint,
    'two active trusteeships, both under account 2');

SELECT * FROM finish();
ROLLBACK;
