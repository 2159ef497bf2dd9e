-- Service control policies (seed 002, DESIGN section 8): evaluated down the
-- path organization -> root unit -> ... -> unit -> account.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SELECT plan(36);

-- Org 1 (admin 101): root unit, u1 under root, u2 under u1, u3 under root.
-- 102 in u2, 103 in u3, 105 in root; 104 is in no organization.
INSERT INTO tco.account (account_id, name) VALUES (101, 'admin'), (102, 'dev'), (103, 'ops'), (104, 'loner'), (105, 'root member');
INSERT INTO tco.organization (org_id, name, admin_account_id) VALUES (1, 'Org', 101);
INSERT INTO tco.org_unit (unit_id, org_id, parent_unit_id, name)
    SELECT 11, 1, unit_id, 'u1' FROM tco.org_unit WHERE org_id = 1 AND parent_unit_id IS NULL;
INSERT INTO tco.org_unit (unit_id, org_id, parent_unit_id, name) VALUES (12, 1, 11, 'u2');
INSERT INTO tco.org_unit (unit_id, org_id, parent_unit_id, name)
    SELECT 13, 1, unit_id, 'u3' FROM tco.org_unit WHERE org_id = 1 AND parent_unit_id IS NULL;
SELECT tco.add_member(1, 102, 12);
SELECT tco.add_member(1, 103, 13);
SELECT tco.add_member(1, 105);

INSERT INTO tco.service_policy (policy_id, name, effect, actions) VALUES
    (1, 'no terminate',     'deny',  '{cvm:TerminateInstances}'),
    (2, 'compute+storage',  'allow', '{cvm:*,cos:*}'),
    (3, 'compute only',     'allow', '{cvm:*}'),
    (4, 'no run',           'deny',  '{cvm:Run*}'),
    (5, 'everything',       'allow', '{*}'),
    (6, 'literal specials', 'allow', '{cam:Get_Role,cam:100%}');

-- no policy attached: everything allowed
SELECT ok(tco.policy_allows(102, 'cvm:TerminateInstances'), 'without policies every action is allowed');

-- explicit deny on a unit of the path
SELECT tco.attach_policy(1, 'unit', 11);
SELECT ok(NOT tco.policy_allows(102, 'cvm:TerminateInstances'), 'a deny on an ancestor unit applies');
SELECT ok(tco.policy_allows(102, 'cvm:RunInstances'), 'a deny-only level does not restrict other actions');
SELECT ok(tco.policy_allows(103, 'cvm:TerminateInstances'), 'a deny on a unit off the path does not apply');
SELECT ok(NOT tco.policy_allows(102, 'CVM:terminateinstances'), 'actions match case-insensitively');

-- allow required at every level that has an allow policy
SELECT tco.attach_policy(2, 'organization', 1);
SELECT ok(NOT tco.policy_allows(102, 'cdb:CreateInstance'), 'an action not allowed at the organization level is refused');
SELECT ok(tco.policy_allows(102, 'cos:GetObject'), 'cos:* at the organization allows cos:GetObject');
SELECT tco.attach_policy(3, 'unit', 12);
SELECT ok(NOT tco.policy_allows(102, 'cos:GetObject'), 'the unit allows only cvm:*: cos is refused although the organization allows it');
SELECT ok(tco.policy_allows(102, 'cvm:DescribeInstances'), 'cvm is allowed at both levels');
SELECT ok(tco.policy_allows(105, 'cos:GetObject'), 'a member higher in the tree is not restricted by the lower unit');
SELECT ok(NOT tco.policy_allows(102, 'cvm:TerminateInstances'), 'deny still wins over allows at every level');

-- deny on the account itself; deny beats allow at the same level
SELECT tco.attach_policy(4, 'account', 102);
SELECT ok(NOT tco.policy_allows(102, 'cvm:RunInstances'), 'a deny attached to the account applies (prefix wildcard)');
SELECT ok(tco.policy_allows(102, 'cvm:DescribeInstances'), 'the account deny matches only its pattern');
SELECT tco.attach_policy(5, 'account', 102);
SELECT ok(NOT tco.policy_allows(102, 'cvm:RunInstances'), 'deny wins over an allow * at the same level');
SELECT ok(NOT tco.policy_allows(103, 'cdb:CreateInstance'), 'organization allow list applies to every member');

-- "*" in a pattern is the only wildcard: LIKE specials are literal
SELECT tco.detach_policy(2, 'organization', 1);
SELECT tco.attach_policy(6, 'account', 105);
SELECT ok(tco.policy_allows(105, 'cam:Get_Role'), 'an underscore matches itself');
SELECT ok(NOT tco.policy_allows(105, 'cam:GetXRole'), 'an underscore is not a one-character wildcard');
SELECT ok(NOT tco.policy_allows(105, 'cam:100abc'), 'a percent sign is not a wildcard');
SELECT ok(tco.policy_allows(105, 'cam:100%'), 'a percent sign matches itself');

-- an account outside any organization is not governed by SCPs
SELECT ok(tco.policy_allows(104, 'cvm:TerminateInstances'), 'an account without organization is allowed everything');
SELECT is(tco.explain_policy(104, 'cvm:TerminateInstances')->>'reason', 'no_organization', 'explain says why');

-- moving a unit changes the path at once
SELECT ok(NOT tco.policy_allows(102, 'cvm:TerminateInstances'), 'before the move: u1 denies terminate');
SELECT tco.move_unit(12, 13);
SELECT ok(tco.policy_allows(102, 'cvm:TerminateInstances'), 'after moving u2 under u3 the deny of u1 no longer applies');
SELECT tco.attach_policy(1, 'unit', 13);
SELECT ok(NOT tco.policy_allows(102, 'cvm:TerminateInstances'), 'the new ancestor''s deny applies');
SELECT tco.move_member(102, 11);
SELECT ok(NOT tco.policy_allows(102, 'cvm:RunInstances'), 'moving the member keeps its account-level deny');
SELECT ok(tco.policy_allows(102, 'cos:GetObject'), 'moving the member out of u2 drops u2''s allow list');

-- explain_policy
SELECT is(tco.explain_policy(102, 'cvm:RunInstances') - 'levels',
          '{"account_id": 102, "action": "cvm:RunInstances", "org_id": 1, "allowed": false, "reason": "explicit_deny",
            "decided_by": {"target_type": "account", "target_id": 102, "policy_id": 4, "policy": "no run"}}'::jsonb,
          'explain_policy names the denying policy and where it is attached');
SELECT tco.move_member(102, 12);
SELECT is(tco.explain_policy(102, 'cos:GetObject') -> 'decided_by', '{"target_type": "unit", "target_id": 12}'::jsonb,
          'explain_policy names the level whose allow list lacks the action');
SELECT is(jsonb_path_query_array(tco.explain_policy(102, 'cos:GetObject'), '$.levels[*].result'),
          '["no_allow_policy", "not_allowed", "allow"]'::jsonb, 'explain_policy gives each level with policies its result (u3: deny-only, not matching)');
SELECT is(tco.explain_policy(102, 'cvm:DescribeInstances')->>'reason', 'allowed', 'explain_policy: allowed');

-- deleting a unit detaches its policies
SELECT tco.detach_policy(1, 'unit', 11);
SELECT tco.move_member(102, 13);
SELECT tco.delete_unit(11);
SELECT is((SELECT count(*) FROM tco.policy_attachment WHERE target_type = 'unit' AND target_id = 11), 0::bigint,
          'attachments of a deleted unit are gone');

-- bad input
SELECT throws_ok($$SELECT tco.policy_allows(102, NULL)$$, '22004', NULL, 'NULL action is refused');
SELECT throws_ok($$SELECT tco.policy_allows(999, 'cvm:X')$$, '23503', NULL, 'unknown account is refused');
SELECT throws_ok($$SELECT tco.attach_policy(1, 'unit', 999)$$, '23503', NULL, 'attaching to an unknown unit is refused');
SELECT throws_ok($$SELECT tco.attach_policy(1, 'team', 1)$$, '22023', NULL, 'unknown target type is refused');
SELECT throws_ok($$INSERT INTO tco.service_policy (name, effect, actions) VALUES ('empty', 'allow', '{}')$$, '23514', NULL, 'a policy needs actions');

SELECT * FROM finish();
ROLLBACK;
