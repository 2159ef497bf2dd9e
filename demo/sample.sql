-- A realistic sample: three organizations of different enterprises, nested
-- departments, 3000 accounts of five entities, financial trusteeships set at
-- different instants (one at 2023-01-03 09:23 UTC+8, the seed's example),
-- five products of every granularity and two months of bill lines.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
SELECT tco.set_billing_timezone('Asia/Shanghai');
SET timezone = 'Asia/Shanghai';   -- day numbers below are those of the billing zone
SELECT setseed(0.2023);

INSERT INTO tco.entity (entity_id, name, verified) VALUES
    (1, 'Acme Group Ltd', true), (2, 'Globex Corporation', true), (3, 'Initech Inc', true),
    (4, 'Umbrella Partners', false), (5, 'Hooli Holdings', true);
-- accounts 1..3: the three admins; account g (4..2403) joins organization
-- 1 + g % 3 and is named after it; it mostly belongs to that organization's
-- entity, every fifth to another one.  Accounts 2404..3000 stay independent.
INSERT INTO tco.account (account_id, name, entity_id, balance, credit_limit)
SELECT g,
       CASE g WHEN 1 THEN 'acme-admin' WHEN 2 THEN 'globex-admin' WHEN 3 THEN 'initech-admin'
              ELSE format('%s-%s', CASE WHEN g <= 2403 THEN (ARRAY['acme','globex','initech'])[1 + g % 3]
                                        ELSE 'independent' END, g) END,
       CASE WHEN g <= 3 THEN g WHEN g % 5 = 0 THEN 4 + g % 2 ELSE 1 + g % 3 END,
       CASE WHEN g <= 3 THEN 250000 ELSE 100 + (g % 17) * 50 END,
       CASE WHEN g <= 3 THEN 100000 ELSE 0 END
FROM generate_series(1, 3000) g;

SELECT tco.create_organization(1, 'Acme Cloud'), tco.create_organization(2, 'Globex Platform'),
       tco.create_organization(3, 'Initech IT');
DO $$
DECLARE o bigint; eng bigint; ops bigint;
BEGIN
    FOR o IN 1..3 LOOP
        eng := tco.create_unit(o, 'Engineering');
        PERFORM tco.create_unit(o, 'Backend', eng);
        PERFORM tco.create_unit(o, 'Frontend', eng);
        PERFORM tco.create_unit(o, 'Data', tco.create_unit(o, 'Platform', eng));
        PERFORM tco.create_unit(o, 'Finance');
        ops := tco.create_unit(o, 'Operations');
        PERFORM tco.create_unit(o, 'SRE', ops);
    END LOOP;
END $$;
-- 2,400 members spread over the nine units of each organization (root
-- included); the rest stay outside any organization.
SELECT count(tco.add_member(org, g,
        (SELECT unit_id FROM tco.org_unit u WHERE u.org_id = org ORDER BY unit_id OFFSET (g / 3) % 9 LIMIT 1)))
FROM (SELECT g, 1 + g % 3 AS org FROM generate_series(4, 2403) g) x;

-- Financial trusteeship: Acme's admin manages 250 Acme-entity members; a
-- second Acme manager (account 6) takes 40 more; some change during January.
SELECT count(tco.establish_trusteeship(account_id, 1, timestamptz '2023-01-03 09:23+08'))
FROM (SELECT m.account_id FROM tco.member m JOIN tco.account a USING (account_id)
      WHERE m.org_id = 1 AND a.entity_id = 1 AND m.account_id > 6 ORDER BY m.account_id LIMIT 250) x;
SELECT count(tco.establish_trusteeship(account_id, 6, timestamptz '2023-01-15 14:00+08'))
FROM (SELECT m.account_id FROM tco.member m JOIN tco.account a USING (account_id)
      WHERE m.org_id = 1 AND a.entity_id = 1 AND m.policy = 'self_pay' AND m.account_id > 6
      ORDER BY m.account_id LIMIT 40) x;
SELECT count(tco.move_trusteeship(account_id, 6, timestamptz '2023-01-20 10:30+08'))
FROM (SELECT member_account_id AS account_id FROM tco.trusteeship
      WHERE management_account_id = 1 AND ended_at IS NULL ORDER BY 1 LIMIT 10) x;
-- Globex: its admin manages 100 Globex-entity members from 2023-01-10.
SELECT count(tco.establish_trusteeship(account_id, 2, timestamptz '2023-01-10 00:00+08'))
FROM (SELECT m.account_id FROM tco.member m JOIN tco.account a USING (account_id)
      WHERE m.org_id = 2 AND a.entity_id = 2 AND m.account_id > 3 ORDER BY m.account_id LIMIT 100) x;

INSERT INTO tco.product (product_code, granularity, name) VALUES
    ('cvm', 'hour', 'Cloud Virtual Machine'), ('cos', 'day', 'Cloud Object Storage'),
    ('cdn', 'minute', 'Content Delivery Network'), ('cbs', 'month', 'Cloud Block Storage'),
    ('clb', 'week', 'Cloud Load Balancer');

-- Two months of daily bill lines for 600 members on two days out of three,
-- tagged by application and environment.  In January, cvm (hourly) lines are
-- paid as soon as they are issued, the others two days later (Jan 1's not at
-- all): at a change on Jan 3 09:23, a member's cos, cdn and clb have an unpaid
-- bill (Jan 2's, issued Jan 3 01:00) and are frozen for January, while cvm
-- switches at the next hour, 10:00 (seed 004's two scenarios).  February's
-- lines are paid with their statements (tco.pay_statement).
-- Bill lines are stored one partition per cycle (README "Storage: bill lines
-- partitioned by cycle"): the two cycles' partitions first, so that the lines
-- go straight into them (tco.insert_bill_lines does this by itself).
SELECT tco.prepare_cycles('2023-01', '2023-02');
INSERT INTO tco.bill_line (account_id, product_code, charge_type, period_start, period_end, list_amount, issued_at, paid_at, tags)
SELECT m, p, CASE WHEN p = 'cbs' THEN 'prepaid' ELSE 'postpaid' END::tco.charge_type,
       d, d + interval '1 day', round((1 + random() * 40)::numeric, 2),
       d + interval '1 day 1 hour',
       CASE WHEN d >= timestamptz '2023-02-01 00:00+08' THEN NULL
            WHEN p = 'cvm' THEN d + interval '1 day 1 hour'
            WHEN d < timestamptz '2023-01-02 00:00+08' THEN NULL
            ELSE d + interval '2 days' END,
       jsonb_build_object('app', (ARRAY['shop', 'search', 'billing'])[1 + (m / 3) % 3],
                          'env', CASE WHEN m % 4 = 0 THEN 'dev' ELSE 'prod' END)
FROM generate_series(4, 603) m,
     unnest(ARRAY['cvm', 'cos', 'cdn', 'clb']) p,
     generate_series(timestamptz '2023-01-01 00:00+08', timestamptz '2023-02-28 00:00+08', interval '1 day') d
WHERE (m + extract(day FROM d)::int) % 3 <> 1;

-- Sharing (R9): Acme's voucher pool, vouchers shared with Engineering (and its
-- subtree) and with one account; a resource pack and a savings plan of the
-- admin shared with Operations; one share revoked mid-January.
SELECT tco.fund_voucher_pool(1, 5000);
SELECT tco.share_benefit(tco.issue_pool_voucher(1, 2000, '-infinity', '2023-07-01 00:00+08'),
                         unit_id => (SELECT unit_id FROM tco.org_unit WHERE org_id = 1 AND name = 'Engineering'),
                         at => '2023-01-01 00:00+08');
SELECT tco.revoke_share(tco.share_benefit(tco.issue_pool_voucher(1, 500, '-infinity', '2023-07-01 00:00+08', 'cos'),
                                          account_id => (SELECT min(account_id) FROM tco.member WHERE org_id = 1 AND account_id > 6),
                                          at => '2023-01-01 00:00+08'),
                        '2023-01-16 00:00+08');
SELECT tco.share_benefit(tco.grant_resource_pack(1, 'cdn', 800, '2023-01-01 00:00+08', '2023-04-01 00:00+08'),
                         unit_id => (SELECT unit_id FROM tco.org_unit WHERE org_id = 1 AND name = 'Operations'),
                         at => '2023-01-01 00:00+08');
SELECT tco.share_benefit(tco.grant_savings_plan(1, 20, 0.3, '2023-01-01 00:00+08', '2024-01-01 00:00+08', 'cvm'),
                         unit_id => (SELECT unit_id FROM tco.org_unit WHERE org_id = 1 AND name = 'Operations'),
                         at => '2023-01-01 00:00+08');
ANALYZE;
