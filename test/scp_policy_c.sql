-- tco.policy_allows is C (src/policy.c): it must give the answer of the rules
-- applied to tco.policy_path (the SQL definition of the path and of pattern
-- matching), for every account and action of a grid with tricky patterns,
-- also after the tables change under its kept plan.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS tco CASCADE;
SELECT plan(14);

-- The rules over tco.policy_path, as the SQL version of policy_allows had them.
CREATE FUNCTION pg_temp.ref_allows(a bigint, act text) RETURNS boolean LANGUAGE sql AS $$
    SELECT NOT coalesce(bool_or(h.effect = 'deny' AND h.matches), false)
       AND count(DISTINCT h.level) FILTER (WHERE h.effect = 'allow')
         = count(DISTINCT h.level) FILTER (WHERE h.effect = 'allow' AND h.matches)
      FROM tco.policy_path(a, act) h
$$;

-- Org 1 (admin 1): root -> a -> a1 -> a11, root -> b; accounts 2..9 spread
-- over the units, 10 in no organization.
INSERT INTO tco.account (account_id, name) SELECT g, 'acct ' || g FROM generate_series(1, 10) g;
INSERT INTO tco.organization (org_id, name, admin_account_id) VALUES (1, 'Org', 1);
SELECT tco.create_unit(1, 'a') AS a \gset
SELECT tco.create_unit(1, 'a1', :a) AS a1 \gset
SELECT tco.create_unit(1, 'a11', :a1) AS a11 \gset
SELECT tco.create_unit(1, 'b') AS b \gset
SELECT tco.add_member(1, 2, :a), tco.add_member(1, 3, :a1), tco.add_member(1, 4, :a11),
       tco.add_member(1, 5, :b), tco.add_member(1, 6), tco.add_member(1, 7, :a11),
       tco.add_member(1, 8, :a1), tco.add_member(1, 9, :b);
INSERT INTO tco.service_policy (policy_id, name, effect, actions) VALUES
    (1, 'org allow', 'allow', '{cvm:*,cos:*,cam:*,*%*,Äbc:*,a\b,*a*a*b}'),
    (2, 'no delete', 'deny', '{*:Delete*}'),
    (3, 'a allow', 'allow', '{cvm:*,cam:Get_Role,*x*}'),
    (4, 'a1 allow', 'allow', '{cvm:Run*,cvm:Describe*,cam:*,*%*}'),
    (5, 'a11 deny', 'deny', '{cvm:RunInstances}'),
    (6, 'b allow all', 'allow', '{*}'),
    (7, 'b deny cos', 'deny', '{cos:*Object}'),
    (8, 'account allow', 'allow', '{cvm:*Instances,äBC:*}'),
    (9, 'account deny', 'deny', '{*a*a*b}');
SELECT tco.attach_policy(1, 'organization', 1), tco.attach_policy(2, 'unit', :a),
       tco.attach_policy(3, 'unit', :a), tco.attach_policy(4, 'unit', :a1),
       tco.attach_policy(5, 'unit', :a11), tco.attach_policy(6, 'unit', :b),
       tco.attach_policy(7, 'unit', :b), tco.attach_policy(8, 'account', 7),
       tco.attach_policy(9, 'account', 8);

CREATE TEMP TABLE actions (action text);
INSERT INTO actions VALUES ('cvm:RunInstances'), ('CVM:runinstances'), ('cvm:DescribeInstances'),
    ('cvm:DeleteInstances'), ('cvm:Terminate'), ('cos:GetObject'), ('cos:PutObject'), ('cos:List'),
    ('cam:Get_Role'), ('cam:GetXRole'), ('cam:DeleteRole'), ('cdb:Create'), ('100%'), ('50%off'),
    ('a\b'), ('ab'), ('aab'), ('xaxab'), ('aaab'), ('abab'), ('äbc:run'), ('ÄBC:Run'), ('x'),
    ('*'), ('%'), ('_'), (' cvm:RunInstances'), ('cvm:RunInstances '), ('cvm:'), ('cvm:*');

CREATE TEMP TABLE grid AS
SELECT a AS account_id, x.action, tco.policy_allows(a, x.action) AS c, pg_temp.ref_allows(a, x.action) AS ref
  FROM generate_series(1, 10) a, actions x;
SELECT is((SELECT count(*) FROM grid), 300::bigint, 'the grid has 300 cases');
SELECT is((SELECT count(*) FROM grid WHERE c IS DISTINCT FROM ref), 0::bigint, 'C and the SQL rules agree on every case');
SELECT ok((SELECT count(*) FILTER (WHERE c) > 20 AND count(*) FILTER (WHERE NOT c) > 20 FROM grid),
          'the grid has many allowed and many refused cases');
SELECT ok(NOT tco.policy_allows(4, 'cvm:RunInstances'), 'a deny on the member''s own unit wins');
SELECT ok(tco.policy_allows(3, 'cvm:RunInstances'), 'allowed at every level of a, a1');
SELECT ok(NOT tco.policy_allows(8, 'xaxab'), 'account deny *a*a*b matches xaxab (backtracking)');
SELECT ok(tco.policy_allows(10, 'cdb:Anything'), 'an account outside any organization is allowed everything');

-- the kept plan follows the tables: a unit moved, a policy detached, a column added
SELECT tco.move_unit(:a11, :b);
SELECT ok(tco.policy_allows(4, 'cos:List'), 'after moving a11 under b, b''s allow-all applies instead of a''s list');
SELECT tco.detach_policy(6, 'unit', :b);
ALTER TABLE tco.service_policy ADD COLUMN scratch int;
SELECT is((SELECT count(*) FROM generate_series(1, 10) a, actions x
            WHERE tco.policy_allows(a, x.action) IS DISTINCT FROM pg_temp.ref_allows(a, x.action)),
          0::bigint, 'C and the SQL rules still agree after a move, a detach and DDL');

-- arguments
SELECT throws_ok($$SELECT tco.policy_allows(NULL, 'cvm:X')$$, '22004', 'argument "account_id" must not be NULL', 'NULL account is refused');
SELECT throws_ok($$SELECT tco.policy_allows(2, NULL)$$, '22004', 'argument "action" must not be NULL', 'NULL action is refused');
SELECT throws_ok($$SELECT tco.policy_allows(2, '   ')$$, '22023', 'action must not be empty', 'blank action is refused');
SELECT throws_ok($$SELECT tco.policy_allows(999, 'cvm:X')$$, '23503', 'account 999 does not exist', 'unknown account is refused');
SELECT throws_ok($$SELECT tco.policy_allows(-9223372036854775808, 'cvm:X')$$, '23503', NULL, 'extreme account id is an unknown account');

SELECT * FROM finish();
ROLLBACK;
