-- R3 Real-name lock: while an account is in a trusteeship (as member or
-- manager), its entity cannot change; the error says to end the trusteeship first.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS tco CASCADE;
SELECT plan(13);
\ir fixtures/trust.inc

SELECT tco.establish_trusteeship(2, 1, '2024-01-01');

SELECT throws_ok($$UPDATE tco.account SET entity_id = 2 WHERE account_id = 2$$,
    'TC003', NULL, 'the member''s entity cannot change');
SELECT throws_ok($$UPDATE tco.account SET entity_id = NULL WHERE account_id = 2$$,
    'TC003', NULL, 'the member''s verification cannot be removed');
SELECT throws_ok($$UPDATE tco.account SET entity_id = 2 WHERE account_id = 1$$,
    'TC003', NULL, 'the manager''s entity cannot change');
SELECT throws_like($$UPDATE tco.account SET entity_id = 2 WHERE account_id = 1$$,
    'R3: account 1 is in a trusteeship%', 'the error names the rule and the account');
SELECT is(pg_temp.hint_of($$UPDATE tco.account SET entity_id = 2 WHERE account_id = 2$$),
    'End the trusteeship first, then change the real-name verification.', 'the hint says to end the trusteeship first');
SELECT throws_ok($$UPDATE tco.entity SET verified = false WHERE entity_id = 1$$,
    'TC003', NULL, 'the common entity cannot lose its verification');
SELECT lives_ok($$UPDATE tco.account SET name = 'renamed', balance = balance WHERE account_id = 2$$,
    'other columns of the account may change');
SELECT lives_ok($$UPDATE tco.account SET entity_id = 2 WHERE account_id = 3$$,
    'an account not in trusteeship may change its entity');
SELECT lives_ok($$UPDATE tco.entity SET verified = false WHERE entity_id = 2$$,
    'an entity with no account in trusteeship may lose its verification');

-- A trusteeship that ends in the future still locks.
SELECT tco.end_trusteeship(2, now() + interval '1 day');
SELECT throws_ok($$UPDATE tco.account SET entity_id = 2 WHERE account_id = 2$$,
    'TC003', NULL, 'locked until the trusteeship has ended');

-- Ended: unlocked.
SELECT tco.establish_trusteeship(9, 1, '2024-01-01');
SELECT tco.end_trusteeship(9, '2024-02-01');
SELECT lives_ok($$UPDATE tco.account SET entity_id = 2 WHERE account_id = 9$$,
    'after the trusteeship ended the entity may change');
SELECT is((SELECT entity_id FROM tco.account WHERE account_id = 9), 2::bigint, 'and it changed');
SELECT is((SELECT entity_id FROM tco.account WHERE account_id = 2), 1::bigint, 'the locked account kept its entity');

SELECT * FROM finish();
ROLLBACK;
