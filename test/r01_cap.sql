-- R1 Cap: at no instant may a management account have more than 300 members
-- in trusteeship.  (Concurrency: specs/r01_cap_race.spec, scripts/stress_r1.sh.)
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS tco CASCADE;
SELECT plan(17);
\ir fixtures/trust.inc

-- 301 candidate members 101..401, same entity, in the organization, with money.
INSERT INTO tco.account (account_id, name, entity_id, balance)
    SELECT a, 'candidate ' || a, 1, 10 FROM generate_series(101, 401) a;
SELECT tco.add_member(:org, a) FROM generate_series(101, 401) a;

SELECT is(tco.max_managed_members(), 300, 'the cap is 300, defined in one place');

SELECT lives_ok($$SELECT tco.establish_trusteeship(a, 1, '2024-01-01') FROM generate_series(101, 400) a$$,
    '300 members can be put in trusteeship to one management account');
SELECT is((SELECT count(*) FROM tco.trusteeship WHERE management_account_id = 1 AND ended_at IS NULL),
    300::bigint, 'the manager has 300 active members');

SELECT throws_ok($$SELECT tco.establish_trusteeship(401, 1, '2024-01-02')$$,
    'TC001', NULL, 'the 301st member is refused (function)');
SELECT throws_like($$SELECT tco.establish_trusteeship(401, 1, '2024-01-02')$$,
    'R1: management account 1 already has 300 members%account 401%', 'the error names the rule and the accounts');
SELECT throws_ok($$INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
                   VALUES (401, 1, '2024-01-02')$$,
    'TC001', NULL, 'the 301st member is refused (direct INSERT)');
SELECT is((SELECT count(*) FROM tco.trusteeship WHERE member_account_id = 401), 0::bigint,
    'nothing was recorded for the refused member');

SELECT lives_ok($$SELECT tco.end_trusteeship(101, '2024-01-03')$$, 'ending one trusteeship');
SELECT lives_ok($$SELECT tco.establish_trusteeship(401, 1, '2024-01-03')$$, 'frees a place for another member');
SELECT throws_ok($$SELECT tco.establish_trusteeship(101, 1, '2024-01-04')$$,
    'TC001', NULL, 'and the cap is reached again');

-- "At any instant": a trusteeship that ends in the future still counts until then.
SELECT lives_ok($$SELECT tco.end_trusteeship(102, '2024-06-01')$$, 'a trusteeship scheduled to end on 2024-06-01');
SELECT throws_ok($$SELECT tco.establish_trusteeship(101, 1, '2024-05-31')$$,
    'TC001', NULL, 'no place before it has ended');
SELECT lives_ok($$SELECT tco.establish_trusteeship(101, 1, '2024-06-01')$$, 'a place from the instant it ends');

-- Bad input.
SELECT throws_ok($$SELECT tco.establish_trusteeship(NULL, 1)$$, '22004', NULL, 'NULL member is refused');
SELECT throws_ok($$SELECT tco.establish_trusteeship(401, 999999)$$, '23503', NULL, 'unknown manager is refused');
SELECT throws_ok($$INSERT INTO tco.trusteeship (member_account_id, management_account_id) VALUES (NULL, 1)$$,
    '23502', NULL, 'direct INSERT without member is refused');
SELECT is((SELECT max(n) FROM (SELECT count(*) AS n FROM tco.trusteeship
                               WHERE ended_at IS NULL GROUP BY member_account_id) c),
    1::bigint, 'no member has two active trusteeships');

SELECT * FROM finish();
ROLLBACK;
