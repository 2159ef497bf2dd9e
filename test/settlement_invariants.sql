-- Settlement invariants (DESIGN section 5) on a randomly generated
-- organization: every line on exactly one statement, exact sums, per-line
-- decomposition, benefit balances and uses, R9 benefit ownership,
-- idempotence, settling an older cycle after a newer one, and statement
-- totals against a plain-SQL recomputation per payer.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SELECT plan(27);

SELECT setseed(0.4242);
SELECT tco.set_billing_timezone('Asia/Shanghai');

INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme', true), (2, 'Beta', true), (3, 'Gamma', false);
-- 1001 admin; 1002..1030 members (most of entity 1); 1031..1040 outside any organization.
INSERT INTO tco.account (account_id, entity_id, balance)
SELECT a, CASE WHEN a <= 1020 THEN 1 WHEN a % 3 = 0 THEN 2 WHEN a % 3 = 1 THEN 3 END, 100
FROM generate_series(1001, 1040) a;
SELECT tco.create_organization(1001, 'Random Org') AS org \gset
SELECT tco.create_unit(:org, 'A') AS unit_a \gset
SELECT tco.add_member(:org, a, CASE WHEN a % 2 = 0 THEN :unit_a END) FROM generate_series(1002, 1030) a;

-- Trusteeships to 1001 (same verified entity, same organization): legacy
-- ones before the cut-over, new ones after, one established and one ended
-- inside January.
INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at, ended_at)
SELECT a, 1001,
       CASE WHEN a <= 1006 THEN '2022-05-01 08:00+08'::timestamptz + (a - 1002) * interval '3 days'
            WHEN a <= 1010 THEN '2022-10-01 08:00+08'::timestamptz + (a - 1007) * interval '5 days 7 hours'
            WHEN a = 1011 THEN '2023-01-15 13:27+08'
            ELSE '2022-11-02 09:00+08' END,
       CASE WHEN a = 1012 THEN '2023-01-20 17:45+08'::timestamptz END
FROM generate_series(1002, 1012) a;

INSERT INTO tco.product (product_code, granularity) VALUES
    ('p_min', 'minute'), ('p_hour', 'hour'), ('p_day', 'day'), ('p_week', 'week'), ('p_month', 'month');

-- Contract discounts: some accounts (all products or one), entities 1 and 2.
SELECT tco.set_contract_discount(a, NULL, round((random() * 0.4)::numeric, 4),
                                 CASE WHEN random() < 0.5 THEN (ARRAY['p_min','p_hour','p_day','p_week','p_month'])[1 + (a % 5)] END,
                                 '-infinity')
FROM generate_series(1001, 1040) a WHERE random() < 0.5;
SELECT tco.set_contract_discount(1001, NULL, 0.333333, 'p_week', '-infinity')
WHERE NOT EXISTS (SELECT 1 FROM tco.contract_discount WHERE account_id = 1001 AND product_code = 'p_week');
SELECT tco.set_contract_discount(NULL, 1, 0.12, NULL, '-infinity');
SELECT tco.set_contract_discount(NULL, 2, 0.07, 'p_day', '-infinity');

-- Benefits of random kinds, owners, scopes, amounts and expiries.
SELECT tco.grant_benefit((ARRAY['coupon','voucher','stored_value_card'])[1 + floor(random() * 3)::int],
                         1001 + floor(random() * 40)::int,
                         round((1 + random() * 30)::numeric, 2),
                         '2022-11-15 00:00+08'::timestamptz + floor(random() * 60) * interval '1 day',
                         '2023-01-01 00:00+08'::timestamptz + floor(random() * 60) * interval '1 day',
                         CASE WHEN random() < 0.3 THEN (ARRAY['p_min','p_hour','p_day','p_week','p_month'])[1 + floor(random() * 5)::int] END)
FROM generate_series(1, 60);
UPDATE tco.benefit SET valid_to = valid_from + interval '1 day' WHERE valid_to <= valid_from;

-- 600 bill lines over December 2022 .. February 2023, with 6-decimal amounts.
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
SELECT account_id, product_code, s, s + interval '1 hour', list, s + interval '2 hours'
FROM (SELECT 1001 + floor(random() * 40)::int AS account_id,
             (ARRAY['p_min','p_hour','p_day','p_week','p_month'])[1 + floor(random() * 5)::int] AS product_code,
             '2022-12-01 00:00+08'::timestamptz + random() * interval '89 days' AS s,
             round((random() * random() * 50)::numeric, 6) AS list
      FROM generate_series(1, 600)) g;

CREATE TEMP TABLE cycle_lines AS
SELECT b.*, tco.cycle_of(b.period_start)::text AS cycle FROM tco.bill_line b;

-- The invariants, as queries that return 0 rows / true when they hold.
CREATE FUNCTION pg_temp.check_cycle(c text) RETURNS TABLE (what text, bad bigint) LANGUAGE sql AS $$
    SELECT 'lines of the cycle not on a statement',
           count(*) FROM pg_temp.cycle_lines l WHERE l.cycle = c
           AND NOT EXISTS (SELECT 1 FROM tco.settled_line s JOIN tco.statement st USING (statement_id)
                           WHERE s.line_id = l.line_id AND st.cycle::text = c)
    UNION ALL
    SELECT 'settled lines on a statement of another cycle',
           count(*) FROM tco.settled_line s JOIN tco.statement st USING (statement_id)
           JOIN pg_temp.cycle_lines l USING (line_id) WHERE st.cycle::text <> l.cycle
    UNION ALL
    SELECT 'lines whose amounts do not add up',
           count(*) FROM tco.settled_line s JOIN pg_temp.cycle_lines l USING (line_id)
           WHERE s.list_amount <> l.list_amount
              OR s.list_amount <> s.discount_amount + s.benefit_amount + s.due_amount
              OR s.discount_amount < 0 OR s.benefit_amount < 0 OR s.due_amount < 0
    UNION ALL
    SELECT 'statement lines that are not the sum of their lines', count(*)
    FROM tco.statement_line sl JOIN tco.statement st USING (statement_id)
    FULL JOIN (SELECT s.statement_id, l.account_id, l.product_code, sum(s.list_amount) li,
                      sum(s.discount_amount) di, sum(s.benefit_amount) be, sum(s.due_amount) du, count(*) n
               FROM tco.settled_line s JOIN pg_temp.cycle_lines l USING (line_id)
               WHERE l.cycle = c GROUP BY 1, 2, 3) x USING (statement_id, account_id, product_code)
    WHERE coalesce(st.cycle::text, c) = c
      AND (sl.list_amount, sl.discount_amount, sl.benefit_amount, sl.due_amount, sl.lines)
          IS DISTINCT FROM (x.li, x.di, x.be, x.du, x.n::int)
    UNION ALL
    SELECT 'statement totals not the rounded sums of their lines', count(*)
    FROM tco.statement st JOIN (SELECT statement_id, sum(list_amount) li, sum(discount_amount) di,
                                       sum(benefit_amount) be, sum(due_amount) du
                                FROM tco.statement_line GROUP BY 1) x USING (statement_id)
    WHERE st.cycle::text = c
      AND (st.list_total, st.discount_total, st.benefit_total, st.due_total)
          IS DISTINCT FROM (round(x.li, 2), round(x.di, 2), round(x.be, 2), round(x.du, 2))
$$;

SELECT * FROM tco.settle_cycle('2023-01');

SELECT is((SELECT count(*) FROM pg_temp.cycle_lines WHERE cycle = '2023-01') > 100, true,
          'the random organization has more than 100 lines in 2023-01');
SELECT is((SELECT count(*) FROM tco.settled_line), (SELECT count(*) FROM pg_temp.cycle_lines WHERE cycle = '2023-01'),
          'settling 2023-01 settles exactly the lines of 2023-01');
SELECT results_eq($$SELECT what, bad FROM pg_temp.check_cycle('2023-01') ORDER BY what$$,
                  $$SELECT what, 0::bigint FROM pg_temp.check_cycle('2023-01') ORDER BY what$$,
                  'every invariant of the cycle holds after settling 2023-01');
SELECT is((SELECT count(*) FROM tco.settled_pack p
           WHERE cardinality(p.discount_amounts) <> 0
              OR (cardinality(p.discount_rates) > 1 AND (SELECT count(DISTINCT x) FROM unnest(p.discount_rates) x) = 1
                  AND (SELECT count(DISTINCT x) FROM unnest(p.discount_ids) x) = 1)
              OR (cardinality(p.benefit_amounts) > 1 AND (SELECT count(DISTINCT x) FROM unnest(p.benefit_amounts) x) = 1)),
          0::bigint,
          'packs are compact (README "Settlement speed"): no discount amounts, one rate, discount id and benefit amount when all lines share them');
SELECT is((SELECT sum(list_amount) FROM tco.statement_line),
          (SELECT sum(list_amount) FROM pg_temp.cycle_lines WHERE cycle = '2023-01'),
          'sum of list amounts on statements = sum over the cycle''s bill lines (exact)');
SELECT is((SELECT sum(list_total) FROM tco.statement),
          (SELECT sum(r) FROM (SELECT round(sum(list_amount), 2) r FROM tco.statement_line GROUP BY statement_id) x),
          'sum of statement list totals = sum of per-statement rounded sums');
SELECT is((SELECT count(*) FROM tco.benefit WHERE balance < 0), 0::bigint, 'no benefit balance below zero');
SELECT is((SELECT coalesce(sum(amount), 0) FROM tco.benefit_use),
          (SELECT sum(initial_amount - balance) FROM tco.benefit),
          'benefit uses add up to the decrease of benefit balances');
SELECT is((SELECT count(*) > 0 FROM tco.benefit_use), true, 'some benefits were used');
SELECT is((SELECT count(*) FROM tco.benefit_use u JOIN tco.benefit b USING (benefit_id)
           JOIN tco.bill_line l USING (line_id) WHERE b.kind = 'coupon' AND b.owner_account_id <> l.account_id),
          0::bigint, 'R9: a coupon pays only its owner''s own consumption');
SELECT is((SELECT count(*) FROM tco.benefit_use u JOIN tco.benefit b USING (benefit_id)
           JOIN tco.settled_line s USING (line_id) WHERE b.kind <> 'coupon' AND b.owner_account_id <> s.payer_account_id),
          0::bigint, 'R9: vouchers and cards pay only lines their owner pays (a managed member''s own are never used)');
SELECT is((SELECT count(*) FROM tco.benefit_use u JOIN tco.benefit b USING (benefit_id) JOIN tco.bill_line l USING (line_id)
           WHERE l.period_start < b.valid_from OR l.period_start >= b.valid_to
              OR (b.product_code IS NOT NULL AND b.product_code <> l.product_code)),
          0::bigint, 'benefits are used only within their validity and product scope');
SELECT is((SELECT count(*) FROM tco.statement st JOIN tco.trusteeship t ON t.member_account_id = st.payer_account_id
           WHERE st.cycle::text = '2023-01' AND tstzrange(t.established_at, t.ended_at) @> '2023-01-01 00:00+08'::timestamptz
             AND t.ended_at IS NULL AND t.member_account_id NOT IN (1011, 1012)),
          0::bigint, 'R7: a member managed all month long has no statement of its own');

-- Property: list totals per payer recomputed in plain SQL.
SELECT results_eq(
    $$SELECT tco.trusteeship_effective_payer(account_id, product_code, period_start) AS payer, round(sum(list_amount), 2)
      FROM pg_temp.cycle_lines WHERE cycle = '2023-01' GROUP BY 1 ORDER BY 1$$,
    $$SELECT payer_account_id, list_total FROM tco.statement WHERE cycle::text = '2023-01' ORDER BY 1$$,
    'statement list totals = plain-SQL recomputation per payer');
SELECT results_eq(
    $$SELECT line_id, tco.trusteeship_effective_payer(account_id, product_code, period_start)
      FROM pg_temp.cycle_lines WHERE cycle = '2023-01' ORDER BY 1$$,
    $$SELECT line_id, payer_account_id FROM tco.settled_line ORDER BY 1$$,
    'each line is on the statement of its payer');
-- Discount property for lines paid by their consumer outside any organization: own rate, product first.
SELECT is((SELECT count(*) FROM tco.settled_line s JOIN pg_temp.cycle_lines l USING (line_id)
           WHERE l.account_id > 1030 AND s.discount_rate IS DISTINCT FROM coalesce(
               (SELECT rate FROM tco.contract_discount d WHERE d.account_id = l.account_id AND d.product_code = l.product_code),
               (SELECT rate FROM tco.contract_discount d WHERE d.account_id = l.account_id AND d.product_code IS NULL), 0)),
          0::bigint, 'R8: a self-pay account outside an organization gets its own rate, product-specific first');
SELECT is((SELECT count(*) FROM tco.settled_line s JOIN pg_temp.cycle_lines l USING (line_id)
           WHERE s.discount_amount <> round(l.list_amount * s.discount_rate, 6)),
          0::bigint, 'discount = list * rate rounded half-up to 6 decimals');

-- Idempotence: a second call changes nothing.
CREATE TEMP TABLE checksum_before AS
SELECT md5(string_agg(format('%s|%s|%s|%s|%s|%s', statement_id, payer_account_id, list_total, discount_total, benefit_total, due_total), ',' ORDER BY statement_id)) AS statements,
       (SELECT md5(string_agg(format('%s|%s', benefit_id, balance), ',' ORDER BY benefit_id)) FROM tco.benefit) AS benefits,
       (SELECT count(*) FROM tco.benefit_use) AS uses, (SELECT count(*) FROM tco.settled_line) AS lines
FROM tco.statement;
CREATE TEMP TABLE first_result AS SELECT * FROM tco.settle_cycle('2023-01');
SELECT results_eq($$SELECT * FROM tco.settle_cycle('2023-01')$$, $$SELECT * FROM first_result$$,
                  'a second call returns the same row');
SELECT results_eq(
    $$SELECT md5(string_agg(format('%s|%s|%s|%s|%s|%s', statement_id, payer_account_id, list_total, discount_total, benefit_total, due_total), ',' ORDER BY statement_id)),
             (SELECT md5(string_agg(format('%s|%s', benefit_id, balance), ',' ORDER BY benefit_id)) FROM tco.benefit),
             (SELECT count(*) FROM tco.benefit_use), (SELECT count(*) FROM tco.settled_line) FROM tco.statement$$,
    $$SELECT * FROM checksum_before$$,
    'a second call changes no statement, benefit, use or settled line');

-- An older cycle after a newer one.
SELECT * FROM tco.settle_cycle('2022-12');
SELECT results_eq($$SELECT what, bad FROM pg_temp.check_cycle('2022-12') ORDER BY what$$,
                  $$SELECT what, 0::bigint FROM pg_temp.check_cycle('2022-12') ORDER BY what$$,
                  'every invariant holds for 2022-12 settled after 2023-01');
SELECT results_eq($$SELECT what, bad FROM pg_temp.check_cycle('2023-01') ORDER BY what$$,
                  $$SELECT what, 0::bigint FROM pg_temp.check_cycle('2023-01') ORDER BY what$$,
                  '2023-01 is untouched by settling 2022-12');
SELECT is((SELECT count(*) FROM tco.settled_line),
          (SELECT count(*) FROM pg_temp.cycle_lines WHERE cycle IN ('2022-12', '2023-01')),
          'every line of both cycles is on exactly one statement');
SELECT is((SELECT count(*) FROM tco.benefit WHERE balance < 0), 0::bigint, 'still no negative balance');
SELECT is((SELECT coalesce(sum(amount), 0) FROM tco.benefit_use),
          (SELECT sum(initial_amount - balance) FROM tco.benefit),
          'uses still add up to the decrease of balances');
SELECT lives_ok($$INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
                  VALUES (1002, 'p_day', '2022-12-20 00:00+08', '2022-12-21 00:00+08', 1)$$,
                'a line for a settled cycle is accepted (a late line, README "After a cycle closes")');
SELECT is((SELECT count(*) FROM tco.late_line WHERE charge_cycle = '2022-12' AND statement_id IS NULL), 1::bigint,
          'it is queued for the next settlement, the settled cycle is not changed');
SELECT results_eq($$SELECT what, bad FROM pg_temp.check_cycle('2022-12') ORDER BY what$$,
                  $$SELECT what, 0::bigint FROM pg_temp.check_cycle('2022-12') ORDER BY what$$,
                  '2022-12 still adds up without its late line');

SELECT * FROM finish();
ROLLBACK;
