-- R2 Same entity: a trusteeship requires member and management account to be
-- verified as the same entity, and to be in the same organization.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS tco CASCADE;
SELECT plan(13);
\ir fixtures/trust.inc

SELECT throws_ok($$SELECT tco.establish_trusteeship(5, 1)$$, 'TC002', NULL, 'another entity is refused');
SELECT throws_like($$SELECT tco.establish_trusteeship(5, 1)$$,
    'R2: account 5 (entity 2) and management account 1 (entity 1) are not verified as the same entity',
    'the error names the rule, the accounts and the entities');
SELECT throws_ok($$SELECT tco.establish_trusteeship(6, 1)$$, 'TC002', NULL, 'an unverified entity is refused');
SELECT throws_ok($$SELECT tco.establish_trusteeship(7, 1)$$, 'TC002', NULL, 'an account without entity is refused');
SELECT throws_ok($$SELECT tco.establish_trusteeship(8, 1)$$, 'TC002', NULL, 'an account outside the organization is refused');
SELECT throws_like($$SELECT tco.establish_trusteeship(8, 1)$$, '%not in the same organization%',
    'the error says the organizations differ');
SELECT throws_ok($$INSERT INTO tco.trusteeship (member_account_id, management_account_id) VALUES (5, 1)$$,
    'TC002', NULL, 'direct INSERT: another entity is refused');
SELECT throws_ok($$INSERT INTO tco.trusteeship (member_account_id, management_account_id) VALUES (8, 1)$$,
    'TC002', NULL, 'direct INSERT: another organization is refused');

-- The same entity, but not verified (any more): refused.
UPDATE tco.entity SET verified = false WHERE entity_id = 1;
SELECT throws_ok($$SELECT tco.establish_trusteeship(2, 1)$$, 'TC002', NULL, 'the common entity must be verified');
UPDATE tco.entity SET verified = true WHERE entity_id = 1;

SELECT lives_ok($$SELECT tco.establish_trusteeship(2, 1)$$, 'same verified entity, same organization: accepted');
SELECT lives_ok($$INSERT INTO tco.trusteeship (member_account_id, management_account_id) VALUES (3, 1)$$,
    'direct INSERT: accepted');
SELECT is((SELECT count(*) FROM tco.trusteeship WHERE management_account_id = 1 AND ended_at IS NULL),
    2::bigint, 'two trusteeships recorded');
SELECT throws_ok($$SELECT tco.establish_trusteeship(2, 999999)$$, '23503', NULL, 'unknown management account');

SELECT * FROM finish();
ROLLBACK;
