-- A generated organization for the settlement benchmark (issue 5, issue 11):
-- :accounts accounts of two verified entities in one organization, 10% of
-- them (at most 250) managed by the admin (half legacy, half new-version
-- trusteeships), account and entity contract discounts, coupons, vouchers and
-- stored-value cards, 5 products of every granularity, and :lines bill lines
-- spread evenly over January-March 2023 (billing zone Asia/Shanghai), so about
-- a third of them (31%) start in cycle 2023-02.
-- :order is the physical order of the rows: 'time' (inserted by period
-- start) or 'shuffled' (inserted in random order: a fixed permutation of the
-- lines, each million of them in random order).  Lines are inserted a
-- million per statement, so the statement triggers' transition tables stay
-- small at 20M lines.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
SELECT tco.set_billing_timezone('Asia/Shanghai');
-- one partition of tco.bill_line per cycle, made ahead as the scheduled job
-- does (README "Storage"), so the cycle's lines are one partition
SELECT tco.prepare_cycles('2023-01', '2023-03');
SELECT setseed(0.5);
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme', true), (2, 'Beta', true);
INSERT INTO tco.account (account_id, entity_id, balance)
SELECT a, CASE WHEN a % 4 = 0 THEN 2 ELSE 1 END, 1000 FROM generate_series(1, :accounts) a;
SELECT tco.create_organization(1, 'Bench Org') AS org \gset
SELECT count(tco.add_member(:org, a)) FROM generate_series(2, :accounts) a;
INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
SELECT a, 1, CASE WHEN a % 2 = 0 THEN '2022-06-01 00:00+08'::timestamptz ELSE '2022-10-01 00:00+08' END
FROM generate_series(2, :accounts) a WHERE a % 10 = 1 AND a % 4 <> 0 LIMIT 250;
INSERT INTO tco.product (product_code, granularity) VALUES
    ('p_min', 'minute'), ('p_hour', 'hour'), ('p_day', 'day'), ('p_week', 'week'), ('p_month', 'month');
SELECT count(tco.set_contract_discount(a, NULL, 0.05 + (a % 20) / 100.0, CASE WHEN a % 3 = 0 THEN 'p_hour' END, '-infinity'))
FROM generate_series(1, :accounts) a WHERE a % 5 = 0 OR a = 1;
SELECT tco.set_contract_discount(NULL, 1, 0.12, NULL, '-infinity');
SELECT count(tco.grant_benefit((ARRAY['coupon','voucher','stored_value_card'])[1 + a % 3], a, 50 + a % 100,
                         '2022-12-01 00:00+08', '2023-06-01 00:00+08',
                         CASE WHEN a % 7 = 0 THEN 'p_day' END))
FROM generate_series(1, :accounts) a WHERE a % 3 = 0 OR a = 1;
-- line g (0 .. lines - 1) starts at g / lines of the 90 days; the i-th row
-- inserted is line i (time order) or line (i * 1000003) mod lines (a
-- permutation: 1000003 is a prime that divides no size used here).
SELECT format($$
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
SELECT 1 + (g::bigint * 7919) %% %2$s,
       (ARRAY['p_min','p_hour','p_day','p_week','p_month'])[1 + g %% 5],
       s, s + interval '1 hour', round((random() * 3)::numeric, 6), s + interval '2 hours'
FROM (SELECT g, '2023-01-01 00:00+08'::timestamptz + (g::float8 / %1$s) * interval '90 days' AS s
      FROM (SELECT i, CASE WHEN %4$L = 'shuffled' THEN (i * 1000003) %% %1$s ELSE i END AS g
            FROM generate_series(%3$s::bigint, least(%3$s::bigint + 999999, %1$s - 1)) i) p) x
ORDER BY CASE WHEN %4$L = 'shuffled' THEN random() END, g$$, :lines, :accounts, lo, :'order')
FROM generate_series(0, :lines - 1, 1000000) lo
\gexec
VACUUM ANALYZE;
-- write out the load now, not during the measured runs
CHECKPOINT;
