-- Sharing invariants (R9, DESIGN section 5, README "Sharing") on a randomly
-- generated organization with a unit tree, pool vouchers, resource packs and
-- savings plans shared with accounts and units, shares revoked mid-cycle and
-- units and members moved before settlement.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SELECT plan(22);

SELECT setseed(0.2718);
SELECT tco.set_billing_timezone('Asia/Shanghai');

INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme', true);
-- 3001 admin; 3002..3040 members; 3041..3045 in another organization (admin
-- 3041); 3046..3049 members for the fixed cases (no random benefit reaches them).
INSERT INTO tco.account (account_id, entity_id, balance) SELECT a, 1, 100 FROM generate_series(3001, 3049) a;
SELECT tco.create_organization(3001, 'Shared Org') AS org \gset
SELECT tco.create_organization(3041, 'Other Org') AS other \gset
-- Ten units in a random tree (each under the root or an earlier unit).
CREATE TEMP TABLE units (n int, unit_id bigint);
DO $$
DECLARE
    i int;
    parent bigint;
BEGIN
    FOR i IN 1..10 LOOP
        parent := (SELECT unit_id FROM units ORDER BY random() LIMIT 1);
        IF random() < 0.3 THEN parent := NULL; END IF;
        INSERT INTO units VALUES (i, tco.create_unit(1, 'unit ' || i, parent));
    END LOOP;
END $$;
SELECT tco.add_member(:org, a, (SELECT unit_id FROM units ORDER BY random() LIMIT 1)) FROM generate_series(3002, 3040) a;
SELECT tco.add_member(:other, a) FROM generate_series(3042, 3045) a;
SELECT tco.add_member(:org, a) FROM generate_series(3046, 3049) a;
-- Some members managed by the admin: their own vouchers are unusable (R9).
INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
SELECT a, 3001, '2022-11-01 00:00+08' FROM generate_series(3002, 3010) a;
INSERT INTO tco.product (product_code, granularity) VALUES ('p_hour', 'hour'), ('p_day', 'day'), ('p_min', 'minute');

-- Pool vouchers shared with random accounts or units at random instants of
-- January; packs and plans of random members shared the same way.
SELECT tco.fund_voucher_pool(:org, 2000);
SELECT tco.issue_pool_voucher(:org, round((5 + random() * 60)::numeric, 2), '-infinity',
                              '2023-01-10 00:00+08'::timestamptz + floor(random() * 60) * interval '1 day',
                              CASE WHEN random() < 0.3 THEN (ARRAY['p_hour','p_day','p_min'])[1 + floor(random() * 3)::int] END)
FROM generate_series(1, 15);
SELECT tco.grant_resource_pack(3001 + floor(random() * 40)::int, (ARRAY['p_hour','p_day','p_min'])[1 + floor(random() * 3)::int],
                               round((5 + random() * 40)::numeric, 2), '-infinity', '2023-03-01 00:00+08')
FROM generate_series(1, 8);
SELECT tco.grant_savings_plan(3001 + floor(random() * 40)::int, round((0.2 + random() * 2)::numeric, 2), 0.25,
                              '2023-01-03 00:00+08', '2023-02-01 00:00+08',
                              CASE WHEN random() < 0.5 THEN (ARRAY['p_hour','p_day','p_min'])[1 + floor(random() * 3)::int] END)
FROM generate_series(1, 5);
-- Ordinary benefits of random members: coupons, vouchers, cards.
SELECT tco.grant_benefit((ARRAY['coupon','voucher','stored_value_card'])[1 + floor(random() * 3)::int],
                         3001 + floor(random() * 40)::int, round((1 + random() * 20)::numeric, 2),
                         '-infinity', '2023-03-01 00:00+08')
FROM generate_series(1, 20);

INSERT INTO tco.benefit_share (benefit_id, account_id, unit_id, shared_at)
SELECT DISTINCT ON (b.benefit_id, t.account_id, t.unit_id) b.benefit_id, t.account_id, t.unit_id, t.at
FROM tco.benefit b
CROSS JOIN LATERAL (
    SELECT CASE WHEN random() < 0.5 THEN 3002 + floor(random() * 39)::int + 0 * b.benefit_id END AS account_id,
           NULL::bigint AS unit_id,
           '2023-01-01 00:00+08'::timestamptz + floor(random() * 15) * interval '1 day' AS at
    FROM generate_series(1, 3)) t0
CROSS JOIN LATERAL (
    SELECT t0.account_id,
           CASE WHEN t0.account_id IS NULL THEN (SELECT u.unit_id FROM units u ORDER BY random() + 0 * b.benefit_id LIMIT 1) END AS unit_id,
           t0.at) t
WHERE b.pool_org_id IS NOT NULL OR (b.kind IN ('resource_pack', 'savings_plan')
                                    AND b.owner_account_id IN (SELECT account_id FROM tco.member WHERE org_id = 1));

-- Revoke about a third of the shares in mid-January (pool vouchers whose
-- last share goes are reclaimed at once).
SELECT tco.revoke_share(share_id, '2023-01-16 00:00+08')
FROM tco.benefit_share WHERE share_id % 3 = 0 ORDER BY share_id;

-- Fixed cases on top: voucher V shared with unit U (under the root, outside
-- every random share) from January 1; account 3046 moves into U after the
-- share, account 3047 leaves U before settlement.
SELECT tco.create_unit(:org, 'U') AS unit_u \gset
SELECT tco.move_member(3047, :unit_u);
SELECT tco.issue_pool_voucher(:org, 100, '-infinity', '2023-06-01 00:00+08') AS v \gset
SELECT tco.share_benefit(:v, unit_id => :unit_u, at => '2023-01-01 00:00+08') AS v_share \gset
-- And voucher W shared with account 3048 until January 20 and with 3049 for good.
SELECT tco.issue_pool_voucher(:org, 100, '-infinity', '2023-06-01 00:00+08') AS w \gset
SELECT tco.share_benefit(:w, account_id => 3048, at => '2023-01-01 00:00+08') AS w_share \gset
SELECT tco.share_benefit(:w, account_id => 3049, at => '2023-01-01 00:00+08');
SELECT tco.revoke_share(:w_share, '2023-01-20 00:00+08');

-- 900 lines over January, with 6-decimal amounts; the fixed cases' lines.
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
SELECT account_id, product_code, s, s + interval '1 hour', list
FROM (SELECT 3001 + floor(random() * 45)::int AS account_id,
             (ARRAY['p_hour','p_day','p_min'])[1 + floor(random() * 3)::int] AS product_code,
             '2023-01-01 00:00+08'::timestamptz + floor(random() * 31 * 24 * 4) * interval '15 minutes' AS s,
             round((random() * random() * 12)::numeric, 6) AS list
      FROM generate_series(1, 900)) g;
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount) VALUES
    (3046, 'p_day', '2023-01-25 00:00+08', '2023-01-26 00:00+08', 1.25),
    (3047, 'p_day', '2023-01-25 00:00+08', '2023-01-26 00:00+08', 1.25),
    (3048, 'p_day', '2023-01-19 00:00+08', '2023-01-20 00:00+08', 2.50),
    (3048, 'p_day', '2023-01-21 00:00+08', '2023-01-22 00:00+08', 2.50);

-- Moves before settlement: 3046 into U, 3047 back to the root unit; units
-- under other units (never into their own subtree); random members to random units.
SELECT tco.move_member(3046, :unit_u);
SELECT tco.move_member(3047, (SELECT unit_id FROM tco.org_unit WHERE org_id = 1 AND parent_unit_id IS NULL));
DO $$
DECLARE
    m record;
    moved int := 0;
BEGIN
    FOR m IN SELECT u.unit_id, p.unit_id AS parent FROM units u, units p
             WHERE u.n IN (5, 7, 9) AND p.n IN (2, 3, 4) ORDER BY u.n, p.n
    LOOP
        IF moved < 2 AND m.parent NOT IN (SELECT tco.unit_subtree(m.unit_id)) THEN
            PERFORM tco.move_unit(m.unit_id, m.parent);
            moved := moved + 1;
        END IF;
    END LOOP;
END $$;
SELECT tco.move_member(a, (SELECT unit_id FROM units ORDER BY random() + 0 * a LIMIT 1))
FROM generate_series(3030, 3036) a;

CREATE TEMP TABLE pool_before AS SELECT balance FROM tco.voucher_pool_balance WHERE org_id = 1;
SELECT * FROM tco.settle_cycle('2023-01');

CREATE TEMP VIEW uses AS
SELECT u.use_id, u.benefit_id, u.line_id, u.amount, b.kind, b.pool_org_id, b.owner_account_id, b.product_code AS scope,
       b.valid_from, b.valid_to, l.account_id, l.product_code, l.period_start, s.payer_account_id,
       CASE WHEN b.kind = 'resource_pack' THEN 0 WHEN b.kind = 'savings_plan' THEN 1 WHEN b.kind = 'coupon' THEN 2
            WHEN b.kind = 'voucher' THEN 3 ELSE 4 END AS step
FROM tco.benefit_use u JOIN tco.benefit b USING (benefit_id) JOIN tco.bill_line l USING (line_id)
JOIN tco.settled_line s USING (line_id);

SELECT is((SELECT count(*) > 0 FROM uses WHERE pool_org_id IS NOT NULL), true, 'pool vouchers were used');
SELECT is((SELECT count(*) > 0 FROM uses WHERE kind = 'resource_pack'), true, 'resource packs were used');
SELECT is((SELECT count(*) > 0 FROM uses WHERE kind = 'savings_plan'), true, 'savings plans were used');
SELECT is((SELECT count(*) FROM tco.benefit WHERE balance < 0), 0::bigint, 'no benefit balance below zero');
SELECT is((SELECT count(*) FROM tco.benefit b
           WHERE b.kind <> 'savings_plan'
             AND b.initial_amount - b.balance <>
                 coalesce((SELECT sum(amount) FROM tco.benefit_use u WHERE u.benefit_id = b.benefit_id), 0)
               + coalesce((SELECT sum(amount) FROM tco.voucher_pool_entry e WHERE e.benefit_id = b.benefit_id AND e.event = 'reclaim'), 0)),
          0::bigint, 'for every benefit but plans: initial - balance = uses + reclaimed');
SELECT is((SELECT count(*) FROM uses WHERE (pool_org_id IS NOT NULL OR kind IN ('resource_pack', 'savings_plan'))
           AND NOT tco.benefit_covers(benefit_id, account_id, period_start)),
          0::bigint, 'R9: a shared benefit pays only accounts it is shared with (current tree, share window) or its owner');
SELECT is((SELECT count(*) FROM uses WHERE kind IN ('voucher', 'stored_value_card') AND pool_org_id IS NULL
           AND owner_account_id <> payer_account_id),
          0::bigint, 'R9: own vouchers and cards pay only lines their owner pays');
SELECT is((SELECT count(*) FROM uses WHERE kind = 'coupon' AND owner_account_id <> account_id),
          0::bigint, 'R9: coupons pay only their owner''s consumption');
SELECT is((SELECT count(*) FROM uses WHERE period_start < valid_from OR period_start >= valid_to
           OR (scope IS NOT NULL AND scope <> product_code)),
          0::bigint, 'benefits are used only within their validity and product scope');
SELECT is((SELECT count(*) FROM (SELECT 1 FROM tco.benefit_use GROUP BY line_id, benefit_id HAVING count(*) > 1) x),
          0::bigint, 'no benefit is used twice on one line');
SELECT is((SELECT count(*) FROM uses a JOIN uses b ON a.line_id = b.line_id AND a.use_id < b.use_id AND a.step > b.step),
          0::bigint, 'per line: packs, then plans, then coupons, then vouchers, then cards');
SELECT is((SELECT count(*) FROM (
               SELECT u.benefit_id, tco.granularity_trunc('hour', u.period_start), sum(u.amount)
               FROM uses u JOIN tco.benefit b USING (benefit_id) WHERE u.kind = 'savings_plan'
               GROUP BY 1, 2, b.initial_amount HAVING sum(u.amount) > b.initial_amount) x),
          0::bigint, 'a savings plan pays at most its commitment in each billing-zone hour');
SELECT is((SELECT count(*) FROM tco.settled_line s JOIN tco.bill_line l USING (line_id)
           JOIN tco.benefit b ON b.balance > 0 AND (b.pool_org_id IS NOT NULL OR b.kind = 'resource_pack')
           WHERE s.due_amount > 0 AND l.period_start >= b.valid_from AND l.period_start < b.valid_to
             AND (b.product_code IS NULL OR b.product_code = l.product_code)
             AND tco.benefit_covers(b.benefit_id, l.account_id, l.period_start)),
          0::bigint, 'no line is left with a due amount while a covering pool voucher or pack still has balance');
SELECT is((SELECT count(*) FROM uses WHERE account_id IN (3041, 3042, 3043, 3044, 3045)
           AND (pool_org_id IS NOT NULL OR kind IN ('resource_pack', 'savings_plan'))),
          0::bigint, 'nothing shared in one organization pays another organization''s lines');

-- The fixed cases.
SELECT results_eq($$SELECT l.account_id, u.amount FROM tco.benefit_use u JOIN tco.bill_line l USING (line_id)
                    WHERE u.benefit_id = $$ || :v || $$ ORDER BY 1$$,
                  $$VALUES (3046::bigint, 1.25::numeric)$$,
                  'unit share: a member moved into the unit after the share uses it, one moved out does not');
SELECT results_eq($$SELECT l.account_id, l.period_start, u.amount FROM tco.benefit_use u JOIN tco.bill_line l USING (line_id)
                    WHERE u.benefit_id = $$ || :w || $$ ORDER BY 2$$,
                  $$VALUES (3048::bigint, '2023-01-19 00:00+08'::timestamptz, 2.50::numeric)$$,
                  'revoked mid-cycle: the line before the revoke uses it, the line after does not');

-- Reclaim everything: the pool gets back exactly what was not spent.
SELECT tco.reclaim_voucher(benefit_id, '2023-02-05 00:00+08') FROM tco.benefit WHERE pool_org_id IS NOT NULL ORDER BY benefit_id;
SELECT is((SELECT count(*) FROM tco.benefit WHERE pool_org_id IS NOT NULL AND balance <> 0), 0::bigint,
          'reclaimed pool vouchers have no balance left');
SELECT is((SELECT balance FROM tco.voucher_pool_balance WHERE org_id = 1),
          2000 - (SELECT sum(u.amount) FROM tco.benefit_use u JOIN tco.benefit b USING (benefit_id) WHERE b.pool_org_id = 1),
          'after reclaiming every voucher the pool holds its funding minus what vouchers paid');
SELECT is((SELECT count(*) FROM tco.benefit_share WHERE revoked_at IS NULL
           AND benefit_id IN (SELECT benefit_id FROM tco.benefit WHERE pool_org_id IS NOT NULL)),
          0::bigint, 'reclaiming revokes every share');

-- Rules under direct DML.
SELECT throws_ok($$INSERT INTO tco.benefit_share (benefit_id, account_id) VALUES ($$ || :w || $$, 3042)$$,
                 'TC020', NULL, 'a share with an account of another organization is refused');
SELECT throws_ok($$DELETE FROM tco.benefit_share$$, 'TC008', NULL, 'shares are never deleted');
SELECT throws_ok($$INSERT INTO tco.voucher_pool_entry (org_id, event, amount) VALUES (1, 'fund', -1)$$,
                 '23514', NULL, 'a pool entry with the wrong sign is refused');

SELECT * FROM finish();
ROLLBACK;
