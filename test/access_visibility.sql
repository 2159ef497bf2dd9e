-- Multi-account bill viewing (DESIGN section 8): who sees which rows through
-- row-level security, and that readers cannot write.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SELECT plan(50);

\ir fixtures/access.inc
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    SELECT a, 'cvm', '2024-02-01 10:00', '2024-02-01 11:00', 1, '2024-02-01 11:00'
      FROM unnest(ARRAY[101, 102, 103, 104, 105, 201, 202]) a;

-- Run a query as a role (SET ROLE ... RESET ROLE).  On an error the
-- subtransaction of throws_ok rolls the SET ROLE back.
CREATE FUNCTION pg_temp.ids_as(r name, q text) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SET ROLE %I', r);
    RETURN QUERY EXECUTE q;
    RESET ROLE;
END $$;
CREATE FUNCTION pg_temp.ids(r name, tab text, col text) RETURNS bigint[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM pg_temp.ids_as(r, format('SELECT %I FROM tco.%I', col, tab)) x
$$;

-- who am I
SELECT is(array(SELECT pg_temp.ids_as(r, 'SELECT tco.current_account_id()')), ARRAY[a]::bigint[],
          format('%s is mapped to account %s', r, a))
  FROM (VALUES ('tco_t_admin1'::name, 101), ('tco_t_manager', 102), ('tco_t_managed', 103),
               ('tco_t_selfpay', 105), ('tco_t_admin2', 201)) v(r, a);
SELECT is(array(SELECT pg_temp.ids_as('tco_t_unmapped', 'SELECT tco.current_account_id()')), ARRAY[NULL]::bigint[],
          'an unmapped role has no account');

-- organization admin: every member of its organization, nothing of the other
SELECT is(pg_temp.ids('tco_t_admin1', 'account', 'account_id'), '{101,102,103,104,105}', 'admin of org 1 sees the accounts of org 1');
SELECT is(pg_temp.ids('tco_t_admin1', 'member', 'account_id'), '{101,102,103,104,105}', 'admin of org 1 sees the members of org 1');
SELECT is(pg_temp.ids('tco_t_admin1', 'bill_line', 'account_id'), '{101,102,103,104,105}', 'admin of org 1 sees the consumption of every member');
SELECT is(pg_temp.ids('tco_t_admin1', 'trusteeship', 'member_account_id'), '{103,104}', 'admin of org 1 sees the trusteeships of org 1');
SELECT is(pg_temp.ids('tco_t_admin1', 'organization', 'org_id'), '{1}', 'admin of org 1 sees organization 1 only');
SELECT is((SELECT count(*) FROM pg_temp.ids_as('tco_t_admin1', 'SELECT unit_id FROM tco.org_unit')), 1::bigint, 'admin of org 1 sees its root unit only');

-- manager: itself and its managed members
SELECT is(pg_temp.ids('tco_t_manager', 'account', 'account_id'), '{102,103,104}', 'manager sees itself and its managed members');
SELECT is(pg_temp.ids('tco_t_manager', 'member', 'account_id'), '{102,103,104}', 'manager sees the memberships of its managed members');
SELECT is(pg_temp.ids('tco_t_manager', 'bill_line', 'account_id'), '{102,103,104}', 'manager sees its managed members'' consumption');
SELECT is(pg_temp.ids('tco_t_manager', 'trusteeship', 'member_account_id'), '{103,104}', 'manager sees its trusteeships');

-- managed member: only itself
SELECT is(pg_temp.ids('tco_t_managed', 'account', 'account_id'), '{103}', 'managed member sees only its account');
SELECT is(pg_temp.ids('tco_t_managed', 'bill_line', 'account_id'), '{103}', 'managed member sees its own consumption');
SELECT is(pg_temp.ids('tco_t_managed', 'trusteeship', 'management_account_id'), '{102}', 'managed member sees its own trusteeship');
SELECT is(pg_temp.ids('tco_t_managed', 'member', 'account_id'), '{103}', 'managed member sees its own membership');

-- self-pay member: only itself
SELECT is(pg_temp.ids('tco_t_selfpay', 'account', 'account_id'), '{105}', 'self-pay member sees only its account');
SELECT is(pg_temp.ids('tco_t_selfpay', 'bill_line', 'account_id'), '{105}', 'self-pay member sees only its consumption');
SELECT is(pg_temp.ids('tco_t_selfpay', 'trusteeship', 'member_account_id'), '{}', 'self-pay member sees no trusteeship');

-- admin of the other organization
SELECT is(pg_temp.ids('tco_t_admin2', 'account', 'account_id'), '{201,202}', 'admin of org 2 sees org 2 only');
SELECT is(pg_temp.ids('tco_t_admin2', 'bill_line', 'account_id'), '{201,202}', 'admin of org 2 sees org 2 consumption only');
SELECT is(pg_temp.ids('tco_t_admin2', 'organization', 'org_id'), '{2}', 'admin of org 2 sees organization 2 only');
SELECT is(pg_temp.ids('tco_t_admin2', 'trusteeship', 'member_account_id'), '{}', 'admin of org 2 sees no trusteeship of org 1');

-- a reader role without a mapping sees nothing; tco_admin sees everything
SELECT is(pg_temp.ids('tco_t_unmapped', 'bill_line', 'account_id'), '{}', 'unmapped reader sees no consumption');
SELECT is(pg_temp.ids('tco_t_unmapped', 'account', 'account_id'), '{}', 'unmapped reader sees no account');
SELECT is(pg_temp.ids('tco_t_ops', 'bill_line', 'account_id'), '{101,102,103,104,105,201,202}', 'tco_admin sees all consumption');
SELECT is(pg_temp.ids('tco_t_manager', 'account_login', 'account_id'), '{102}', 'a reader sees only its own login mapping');

-- can_see_account answers the same question
SELECT is(array(SELECT pg_temp.ids_as('tco_t_manager', 'SELECT a FROM unnest(ARRAY[101,102,103,104,105,201,202]::bigint[]) a WHERE tco.can_see_account(a)')),
          '{102,103,104}'::bigint[], 'can_see_account agrees with the visible rows');

-- readers cannot write
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount) VALUES (102, ''cvm'', ''2024-02-02'', ''2024-02-02 01:00'', 1)')$$,
                 '42501', NULL, 'reader cannot INSERT bill lines');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'UPDATE tco.bill_line SET list_amount = 0')$$, '42501', NULL, 'reader cannot UPDATE bill lines');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_admin1', 'DELETE FROM tco.bill_line')$$, '42501', NULL, 'reader cannot DELETE bill lines');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_admin1', 'UPDATE tco.account SET balance = 1e6 WHERE account_id = 101')$$, '42501', NULL, 'reader cannot UPDATE accounts');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_managed', 'DELETE FROM tco.trusteeship')$$, '42501', NULL, 'reader cannot DELETE trusteeships');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_managed', 'INSERT INTO tco.account_login VALUES (''tco_t_managed'', 101)')$$, '42501', NULL, 'reader cannot remap itself');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_selfpay', 'SELECT * FROM tco.member_history')$$, '42501', NULL, 'reader cannot read tables without a reader policy');

-- even with a table privilege granted by mistake, RLS has no write policy for readers
GRANT INSERT, DELETE ON tco.bill_line TO tco_t_manager;
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount) VALUES (102, ''cvm'', ''2024-02-02'', ''2024-02-02 01:00'', 1)')$$,
                 '42501', 'permission denied to write table tco.bill_line', 'INSERT privilege alone does not let a reader write');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'DELETE FROM tco.bill_line')$$,
                 '42501', 'permission denied to write table tco.bill_line', 'DELETE privilege alone deletes nothing');
SELECT is((SELECT count(*) FROM tco.bill_line), 7::bigint, 'all bill lines are still there');

-- tco_admin writes
SELECT is(pg_temp.do_as('tco_t_ops', 'UPDATE tco.bill_line SET list_amount = 2 WHERE account_id = 105'), 1::bigint, 'tco_admin can write');

-- history: a trusteeship that ended stays visible to its manager while the
-- member is in the manager's organization; not once it joined another one
UPDATE tco.trusteeship SET ended_at = '2024-03-01' WHERE member_account_id = 104;
SELECT is(pg_temp.ids('tco_t_manager', 'bill_line', 'account_id'), '{102,103,104}', 'manager still sees a former managed member of its organization');
SELECT tco.remove_member(104);
SELECT tco.add_member(2, 104);
SELECT is(pg_temp.ids('tco_t_manager', 'bill_line', 'account_id'), '{102,103}', 'manager no longer sees a former member now in another organization');
SELECT is(pg_temp.ids('tco_t_admin2', 'bill_line', 'account_id'), '{104,201,202}', 'the new organization''s admin sees it');
SELECT is(pg_temp.ids('tco_t_admin1', 'bill_line', 'account_id'), '{101,102,103,105}', 'the old organization''s admin no longer does');

-- functions are not executable by PUBLIC
SELECT ok(NOT has_function_privilege('public', 'tco.create_organization(bigint, text)', 'EXECUTE'), 'PUBLIC cannot execute tco.create_organization');
SELECT ok(NOT has_function_privilege('tco_reader', 'tco.add_member(bigint, bigint, bigint, tco.settlement_policy)', 'EXECUTE'), 'tco_reader cannot execute tco.add_member');
SELECT ok(has_function_privilege('tco_admin', 'tco.add_member(bigint, bigint, bigint, tco.settlement_policy)', 'EXECUTE'), 'tco_admin can execute tco.add_member');

SELECT * FROM finish();
ROLLBACK;
