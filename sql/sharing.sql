-- Sharing (R9, README "Sharing"): voucher pools, resource packs and savings
-- plans shared with accounts or units; their order in settlement (DESIGN
-- section 5); revoke and reclaim mid-cycle; units moved in the tree; errors.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
\set SHOW_CONTEXT never

SELECT tco.set_billing_timezone('Asia/Shanghai');

INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme', true);
-- 201 admin; 202 in Dev; 203 in Team (under Dev); 204 in Ops; 205 managed by 201, in Ops;
-- 206 in another organization (admin 207).
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES
    (201, 'admin', 1, 100), (202, 'dev', 1, 100), (203, 'team', 1, 100), (204, 'ops', 1, 100),
    (205, 'managed', 1, 100), (206, 'other member', NULL, 100), (207, 'other admin', NULL, 100);
SELECT tco.create_organization(201, 'Acme Org') AS org \gset
SELECT tco.create_organization(207, 'Other Org') AS other_org \gset
SELECT tco.create_unit(:org, 'Dev') AS dev \gset
SELECT tco.create_unit(:org, 'Team', :dev) AS team \gset
SELECT tco.create_unit(:org, 'Ops') AS ops \gset
SELECT tco.add_member(:org, 202, :dev), tco.add_member(:org, 203, :team), tco.add_member(:org, 204, :ops),
       tco.add_member(:org, 205, :ops), tco.add_member(:other_org, 206);
INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
    VALUES (205, 201, '2022-12-01 00:00+08');
INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour'), ('cos', 'day');

-- ---------------------------------------------------------------------------
-- Voucher pool
SELECT tco.fund_voucher_pool(:org, 100.00);
-- shared with unit Dev
SELECT tco.issue_pool_voucher(:org, 40.00, '-infinity', '2024-01-01 00:00+08') AS v1 \gset
-- shared with 204, revoked mid-January
SELECT tco.issue_pool_voucher(:org, 50.00, '-infinity', '2024-01-01 00:00+08') AS v2 \gset
-- shared with managed 205
SELECT tco.issue_pool_voucher(:org, 10.00, '-infinity', '2023-06-01 00:00+08') AS v3 \gset
SELECT * FROM tco.voucher_pool_balance;
-- The pool cannot pay more than it holds (nothing left).
SELECT tco.issue_pool_voucher(:org, 0.01, '-infinity', '2024-01-01');
-- Nor by a direct INSERT.
INSERT INTO tco.benefit (kind, owner_account_id, initial_amount, balance, valid_from, valid_to, pool_org_id)
VALUES ('voucher', 201, 20, 20, '-infinity', '2024-01-01', :org);

SELECT tco.share_benefit(:v1, unit_id => :dev, at => '2023-01-01 00:00+08') AS s1 \gset
SELECT tco.share_benefit(:v2, account_id => 204, at => '2023-01-01 00:00+08') AS s2 \gset
SELECT tco.share_benefit(:v2, account_id => 202, at => '2023-01-01 00:00+08') AS s2b \gset
SELECT tco.share_benefit(:v3, account_id => 205, at => '2023-01-01 00:00+08') AS s3 \gset

-- Sharing errors.
SELECT tco.share_benefit(:v1, unit_id => :dev);                                  -- already shared
SELECT tco.share_benefit(:v1, account_id => 206);                                -- other organization
SELECT tco.share_benefit(:v1, account_id => 202, unit_id => :dev);               -- two targets
SELECT tco.share_benefit(:v1);                                                   -- no target
SELECT tco.share_benefit(999, account_id => 202);                                -- unknown benefit
SELECT tco.share_benefit(tco.grant_coupon(202, 5, '2024-01-01'), account_id => 203);  -- coupons are never shared
SELECT tco.share_benefit(NULL, account_id => 202);
SELECT tco.revoke_share(999);
SELECT tco.reclaim_voucher(tco.grant_voucher(201, 5, '2024-01-01'));            -- not a pool voucher
DELETE FROM tco.benefit_share WHERE share_id = :s1;
UPDATE tco.benefit_share SET account_id = 203 WHERE share_id = :s2;
DELETE FROM tco.benefit WHERE benefit_id = :v1;
UPDATE tco.benefit SET balance = balance + 1 WHERE benefit_id = :v1;
UPDATE tco.voucher_pool_entry SET amount = 1000;

-- ---------------------------------------------------------------------------
-- Resource pack and savings plan of the admin, shared with unit Ops
SELECT tco.grant_resource_pack(201, 'cos', 8.00, '-infinity', '2024-01-01 00:00+08') AS pack \gset
SELECT tco.grant_savings_plan(201, 1.50, 0.30, '2023-01-01 00:00+08', '2024-01-01 00:00+08', 'cvm') AS plan \gset
SELECT tco.share_benefit(:pack, unit_id => :ops, at => '2023-01-01 00:00+08') AS s_pack \gset
SELECT tco.share_benefit(:plan, unit_id => :ops, at => '2023-01-01 00:00+08') AS s_plan \gset
SELECT tco.grant_resource_pack(201, NULL, 1, '-infinity', 'infinity');
SELECT tco.grant_resource_pack(201, 'cos', 0, '-infinity', 'infinity');
SELECT tco.grant_savings_plan(201, 1, 1.0, '-infinity', 'infinity');
SELECT tco.grant_savings_plan(201, 1, 0.1, 'infinity', '-infinity');
SELECT tco.savings_plan_fee(:plan, '2023-01');   -- 744 hours * 1.50 * 0.70 = 781.20

-- 204's coupon: used after the pack and plan.
SELECT tco.grant_coupon(204, 3.00, '2024-01-01 00:00+08') AS coupon204 \gset

-- ---------------------------------------------------------------------------
-- January 2023 lines (billing zone UTC+8)
INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount) VALUES
    -- 202 (Dev): v1 (unit Dev, expires 2024) and v2 (account share) both expire
    -- 2024-01-01: lower id v1 first.
    (1, 202, 'cos', '2023-01-05 00:00+08', '2023-01-06 00:00+08', 25.00),
    (2, 202, 'cos', '2023-01-06 00:00+08', '2023-01-07 00:00+08', 10.00),
    -- 203 (Team, below Dev, moved below to Team2 before settlement): v1 covers it
    (3, 203, 'cvm', '2023-01-07 00:00+08', '2023-01-07 01:00+08', 4.00),
    -- 204 (Ops): pack (cos), plan (cvm, 1.50 per hour), coupon, v2 until the revoke
    (4, 204, 'cos', '2023-01-08 00:00+08', '2023-01-09 00:00+08', 5.00),
    (5, 204, 'cvm', '2023-01-08 10:00+08', '2023-01-08 11:00+08', 1.00),
    (6, 204, 'cvm', '2023-01-08 10:00+08', '2023-01-08 11:00+08', 2.00),
    (7, 204, 'cvm', '2023-01-20 10:00+08', '2023-01-20 11:00+08', 9.00),
    (12, 204, 'cvm', '2023-01-12 10:00+08', '2023-01-12 11:00+08', 5.00),
    -- 205 (Ops, managed by 201): pack, plan, its pool voucher v3
    (8, 205, 'cos', '2023-01-09 00:00+08', '2023-01-10 00:00+08', 6.00),
    (9, 205, 'cvm', '2023-01-08 10:00+08', '2023-01-08 11:00+08', 0.40),
    -- 201 (admin, root unit): owns pack and plan; not covered by any voucher share
    (10, 201, 'cvm', '2023-01-08 11:00+08', '2023-01-08 12:00+08', 2.00),
    -- 206 (other organization): nothing
    (11, 206, 'cvm', '2023-01-08 10:00+08', '2023-01-08 11:00+08', 1.00);

-- Revoke 204's share of v2 on 2023-01-15: 202 still shares it, so nothing is
-- reclaimed; 204's lines from then on are not covered (line 7).
SELECT tco.revoke_share(:s2, '2023-01-15 00:00+08');
SELECT tco.revoke_share(:s2);   -- twice
-- A unit created and a member moved after the share: Team2 under Dev, 203 moves there.
SELECT tco.create_unit(:org, 'Team2', :dev) AS team2 \gset
SELECT tco.move_member(203, :team2);

SELECT * FROM tco.settle_cycle('2023-01', :org);

-- Hand-checked (no contract discounts):
--  line 1 (202 cos 25.00): v1 40.00 -> pays 25.00 (v1 left 15.00)
--  line 2 (202 cos 10.00): v1 10.00 (v1 left 5.00); v2 (same expiry, higher id) not needed
--  line 3 (203 cvm 4.00, now in Team2, created under Dev after the share): v1 4.00 (left 1.00)
--  line 4 (204 cos 5.00): pack 5.00 (pack left 3.00)
--  line 5 (204 cvm 1.00, hour 10:00 of 01-08): plan 1.00 (hour used 1.00)
--  line 6 (204 cvm 2.00, same hour): plan 0.50 (hour used 1.50), coupon 1.50 (coupon left 1.50)
--  line 12 (204 cvm 5.00, 01-12, before the revoke): plan 1.50, coupon 1.50 (spent), v2 2.00 (left 48.00)
--  line 7 (204 cvm 9.00, 01-20 10:00, after the revoke): plan 1.50, v2 no longer: due 7.50
--  line 8 (205 cos 6.00): pack 3.00 (spent), v3 3.00 (v3 left 7.00)
--  line 9 (205 cvm 0.40, hour 10:00 of 01-08: plan's hour is used up): v3 0.40 (v3 left 6.60)
--  line 10 (201 cvm 2.00, hour 11:00): plan 1.50 (owner), due 0.50
--  line 11 (206): due 1.00
--  line 13 (201): the savings plan's January fee, made by settlement (README "After a
--    cycle closes"): 744 hours x 1.50 x (1 - 0.30) = 781.20, all due
SELECT u.line_id, u.benefit_id, b.kind, u.amount
FROM tco.benefit_use u JOIN tco.benefit b USING (benefit_id) ORDER BY u.line_id, u.use_id;
SELECT line_id, payer_account_id, list_amount, benefit_amount, due_amount FROM tco.settled_line ORDER BY line_id;
SELECT benefit_id, kind, initial_amount, balance FROM tco.benefit ORDER BY benefit_id;

-- Reclaim v2 (shared with 202 only now): its 48.00 go back to the pool.
SELECT tco.reclaim_voucher(:v2, '2023-02-10 00:00+08');
-- Revoking v3's only share reclaims its 6.60.
SELECT tco.revoke_share(:s3, '2023-02-10 00:00+08');
SELECT * FROM tco.voucher_pool_balance;
SELECT share_id, benefit_id, account_id, unit_id IS NOT NULL AS unit_share, shared_at, revoked_at, reclaimed_amount
FROM tco.benefit_share ORDER BY share_id;
SELECT event, amount, benefit_id, share_id FROM tco.voucher_pool_entry ORDER BY entry_id;

-- R14: a share reaching into settled January is refused.
SELECT tco.share_benefit(:pack, account_id => 202, at => '2023-01-20 00:00+08');
SELECT tco.revoke_share(:s_pack, '2023-01-31 00:00+08');
-- Revoking a pack's share reclaims nothing: the owner keeps it.
SELECT tco.revoke_share(:s_pack, '2023-02-01 00:00+08');

-- explain_line shows every use.
SELECT tco.explain_line(6) -> 'benefits';

-- A second call changes nothing.
SELECT * FROM tco.settle_cycle('2023-01', :org);
SELECT count(*) FROM tco.benefit_use;

-- Revoking by a direct UPDATE reclaims the same way (v1's last share: 1.00 left).
UPDATE tco.benefit_share SET revoked_at = '2023-02-10 00:00+08' WHERE share_id = :s1
RETURNING share_id, revoked_at, reclaimed_amount;
SELECT balance FROM tco.voucher_pool_balance;

-- Row-level security: a reader mapped to 204 sees only the shares covering 204;
-- one mapped to the admin sees the pool, its ledger and every share.
SET client_min_messages = warning;
DROP ROLE IF EXISTS tco_sharing_member;
DROP ROLE IF EXISTS tco_sharing_admin;
RESET client_min_messages;
CREATE ROLE tco_sharing_member IN ROLE tco_reader;
CREATE ROLE tco_sharing_admin IN ROLE tco_reader;
INSERT INTO tco.account_login (role_name, account_id) VALUES ('tco_sharing_member', 204), ('tco_sharing_admin', 201);
SET ROLE tco_sharing_member;
-- its account share of v2, and the unit shares of Ops (its unit) with the pack and plan
SELECT share_id, benefit_id, account_id, unit_id = :ops AS ops FROM tco.benefit_share ORDER BY share_id;
-- and so v2, the pack and the plan, besides its own coupon
SELECT benefit_id, kind FROM tco.benefit ORDER BY benefit_id;
SELECT count(*) AS pools, (SELECT count(*) FROM tco.voucher_pool_entry) AS entries FROM tco.voucher_pool;
INSERT INTO tco.benefit_share (benefit_id, account_id) VALUES (:v1, 204);
RESET ROLE;
SET ROLE tco_sharing_admin;
SELECT count(*) AS shares FROM tco.benefit_share;
SELECT count(*) AS pools, (SELECT count(*) FROM tco.voucher_pool_entry) AS entries FROM tco.voucher_pool;
RESET ROLE;
DELETE FROM tco.account_login WHERE role_name IN ('tco_sharing_member', 'tco_sharing_admin');
DROP ROLE tco_sharing_member;
DROP ROLE tco_sharing_admin;
