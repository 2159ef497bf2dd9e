-- Invariants after a cycle closes (README "After a cycle closes", DESIGN
-- section 5), on a random world with late lines, corrections (to zero,
-- corrections of corrections, of lines paid by benefits), commitment fees,
-- settlements per organization and for everything, reruns, invoices and
-- credit notes:
--   per charge cycle, every line (original, late, correction) is on exactly
--   one statement and the list amounts on statements equal the lines';
--   per billing cycle, statements are the sums of their lines;
--   a line with its corrections never nets below zero in any column, and a
--   benefit never gets back more than it paid;
--   no benefit balance goes below zero, and each benefit's balance is its
--   initial amount less its net uses less what went to the payer instead;
--   what went to payers is in the ledger; credit notes move exactly their
--   amounts; every balance is its ledger;
--   a rerun of any settled cycle changes nothing.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SELECT plan(16);

SELECT tco.set_billing_timezone('Asia/Shanghai');
SELECT setseed(0.4242);
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'E1', true), (2, 'E2', true);
INSERT INTO tco.account (account_id, name, entity_id, balance)
SELECT i, 'acct ' || i, CASE WHEN i <= 20 THEN 1 ELSE 2 END, 500 FROM generate_series(1, 30) i;
SELECT tco.create_organization(1, 'A') AS org_a \gset
SELECT tco.create_organization(21, 'B') AS org_b \gset
SELECT count(tco.add_member(:org_a, i)) FROM generate_series(2, 20) i;
SELECT count(tco.add_member(:org_b, i)) FROM generate_series(22, 28) i;
-- 29, 30 outside any organization
INSERT INTO tco.product (product_code, granularity) VALUES ('p_hour', 'hour'), ('p_day', 'day'), ('p_min', 'minute');
SELECT count(tco.establish_trusteeship(i, CASE WHEN i % 2 = 0 THEN 1 ELSE 2 END, '2022-10-01 00:00+08'))
FROM generate_series(3, 12) i;
SELECT tco.establish_trusteeship(23, 21, '2022-10-01 00:00+08') > 0;
-- member 4 moves from 1 to 2 in January (late lines of December stay 1's)
SELECT tco.move_trusteeship(4, 2, '2023-01-15 10:30+08') > 0;
INSERT INTO tco.contract_discount (account_id, rate, valid_from, valid_to)
SELECT i, round((random() * 0.3)::numeric, 4), '-infinity', CASE WHEN i % 3 = 0 THEN '2023-01-10 00:00+08'::timestamptz END
FROM generate_series(1, 30) i WHERE random() < 0.7;
INSERT INTO tco.contract_discount (entity_id, rate) VALUES (1, 0.05);
-- benefits that run out, some expiring in January
SELECT count(tco.grant_benefit(k, owner, amt, '-infinity', vt, NULL))
FROM (SELECT (ARRAY['coupon','voucher','stored_value_card'])[1 + floor(random() * 3)::int] AS k,
             1 + floor(random() * 30)::int AS owner, round((1 + random() * 40)::numeric, 2) AS amt,
             CASE WHEN random() < 0.4 THEN '2023-01-20 00:00+08'::timestamptz ELSE '2024-01-01 00:00+08' END AS vt
      FROM generate_series(1, 40)) g;
SELECT tco.grant_savings_plan(1, 0.5, 0.2, '2022-12-01 00:00+08', '2023-02-01 00:00+08', 'p_hour') > 0;
SELECT tco.grant_resource_pack(22, 'p_day', 30, '2022-12-05 00:00+08', '2023-03-01 00:00+08', 9.99) > 0;

CREATE FUNCTION pg_temp.lines(n int, t0 timestamptz, span interval) RETURNS bigint LANGUAGE sql AS $$
    WITH ins AS (
        INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
        SELECT a, p, s, s + interval '1 minute', round((random() * random() * 30)::numeric, 6), s + interval '2 hours'
        FROM (SELECT 1 + floor(random() * 30)::int AS a, (ARRAY['p_hour','p_day','p_min'])[1 + floor(random() * 3)::int] AS p,
                     date_trunc('minute', t0 + random() * span) AS s
              FROM generate_series(1, n)) x
        RETURNING 1)
    SELECT count(*) FROM ins
$$;
-- random corrections of settled originals: to zero, down, up, and of a
-- correction (through its id)
CREATE FUNCTION pg_temp.corrections(n int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    r record;
    made bigint := 0;
BEGIN
    FOR r IN SELECT b.line_id, b.list_amount FROM tco.bill_line b
              WHERE b.corrects_line_id IS NULL AND b.product_code NOT LIKE 'tco:%' AND tco.bill_line_is_settled(b)
              ORDER BY random() LIMIT n LOOP
        PERFORM tco.correct_bill_line(r.line_id,
                    CASE WHEN random() < 0.3 THEN 0 ELSE round((r.list_amount * random() * 1.5)::numeric, 6) END, 'random');
        made := made + 1;
        IF random() < 0.3 THEN
            PERFORM tco.correct_bill_line(coalesce((SELECT max(c.line_id) FROM tco.bill_line c WHERE c.corrects_line_id = r.line_id), r.line_id),
                        round((r.list_amount * random())::numeric, 6), 'again');
        END IF;
    END LOOP;
    RETURN made;
END $$;

SELECT pg_temp.lines(600, '2022-12-01 00:00+08', interval '30 days');
SELECT pg_temp.lines(600, '2023-01-01 00:00+08', interval '30 days');
SELECT tco.prepare_cycles('2022-12', '2023-04');
SELECT tco.settle_cycle('2022-12', :org_a);
SELECT tco.settle_cycle('2022-12');
-- late lines of December, before and after January is settled for B
SELECT pg_temp.lines(60, '2022-12-01 00:00+08', interval '30 days');
SELECT tco.settle_cycle('2023-01', :org_b);
SELECT pg_temp.corrections(40);
SELECT pg_temp.lines(40, '2022-12-01 00:00+08', interval '60 days');
SELECT tco.settle_cycle('2023-01');
SELECT pg_temp.lines(500, '2023-02-01 00:00+08', interval '28 days');
SELECT pg_temp.lines(50, '2022-12-01 00:00+08', interval '61 days');
SELECT pg_temp.corrections(60);
SELECT tco.settle_cycle('2023-02', :org_a);
SELECT tco.settle_cycle('2023-02');
SELECT pg_temp.corrections(30);
SELECT tco.settle_cycle('2023-03');

SELECT ok((SELECT count(*) FROM tco.late_line) > 150
          AND (SELECT count(*) FROM tco.bill_line WHERE corrects_line_id IS NOT NULL AND list_amount < 0) > 30
          AND (SELECT count(*) FROM tco.bill_line WHERE corrects_line_id IS NOT NULL AND list_amount > 0) > 5
          AND (SELECT count(*) FROM tco.benefit_return) > 0
          AND (SELECT count(*) FROM tco.commitment_charge) = 3,
          'the world has late lines, negative and positive corrections, give-backs and commitment fees');
SELECT is((SELECT count(*) FROM tco.late_line WHERE statement_id IS NULL), 0::bigint,
          'every late line is billed');

-- Per charge cycle.
SELECT is_empty($$SELECT b.line_id FROM tco.bill_line b
                  WHERE b.period_start < '2023-03-01 00:00+08'
                    AND (SELECT count(*) FROM tco.settled_line s WHERE s.line_id = b.line_id) <> 1$$,
                'every line of the settled charge cycles, original, late or correction, is on exactly one statement');
SELECT is_empty($$SELECT p.cycle FROM tco.settled_pack p
                  WHERE EXISTS (SELECT 1 FROM unnest(p.line_ids) l JOIN tco.bill_line b ON b.line_id = l
                                WHERE tco.cycle_of(b.period_start) OPERATOR(tco.<>) p.cycle)$$,
                'every per-line record carries its line''s charge cycle');
SELECT results_eq($$SELECT charge_cycle, sum(list_amount) FROM tco.statement_line_by_charge_cycle GROUP BY 1 ORDER BY 1$$,
                  $$SELECT tco.cycle_of(period_start)::text, sum(list_amount) FROM tco.bill_line
                    WHERE period_start < '2023-04-01 00:00+08' GROUP BY 1 ORDER BY 1$$,
                  'per charge cycle, list amounts on statements = the cycle''s bill lines, late and corrections included');
SELECT is_empty($$SELECT k.line_id FROM tco.late_line k JOIN tco.statement s ON s.statement_id = k.statement_id
                  WHERE s.cycle OPERATOR(tco.<=) k.charge_cycle OR s.cycle OPERATOR(tco.<>) k.billing_cycle$$,
                'a late line is billed on a statement of a later cycle, its billing cycle');

-- Per billing cycle.
SELECT is_empty($$SELECT sl.statement_id FROM tco.statement_line sl
                  FULL JOIN (SELECT statement_id, account_id, product_code, sum(list_amount) li, sum(discount_amount) di,
                                    sum(benefit_amount) be, sum(due_amount) du, sum(lines) n
                             FROM tco.statement_line_by_charge_cycle GROUP BY 1, 2, 3) x
                         USING (statement_id, account_id, product_code)
                  WHERE (sl.list_amount, sl.discount_amount, sl.benefit_amount, sl.due_amount, sl.lines)
                        IS DISTINCT FROM (x.li, x.di, x.be, x.du, x.n::int)$$,
                'every statement line is the sum of the lines billed on it, whatever their charge cycle');
SELECT is_empty($$SELECT st.statement_id FROM tco.statement st
                  JOIN (SELECT statement_id, sum(list_amount) li, sum(discount_amount) di, sum(benefit_amount) be,
                               sum(due_amount) du FROM tco.statement_line GROUP BY 1) x USING (statement_id)
                  WHERE (st.list_total, st.discount_total, st.benefit_total, st.due_total)
                        IS DISTINCT FROM (round(x.li, 2), round(x.di, 2), round(x.be, 2), round(x.du, 2))$$,
                'every statement total is its exact sum rounded half-up (negative ones included)');

-- Chains: an original with its corrections.
SELECT is_empty($$SELECT coalesce(b.corrects_line_id, b.line_id) FROM tco.bill_line b JOIN tco.settled_line s USING (line_id)
                  GROUP BY 1
                  HAVING sum(s.list_amount) < 0 OR sum(s.discount_amount) < 0 OR sum(s.benefit_amount) < 0
                      OR sum(s.due_amount) < 0$$,
                'a line with its corrections never nets below zero: list, discount, benefits, due');
SELECT is_empty($$SELECT coalesce(b.corrects_line_id, b.line_id), u.benefit_id
                  FROM tco.benefit_use u JOIN tco.bill_line b USING (line_id)
                  GROUP BY 1, 2 HAVING sum(u.amount) < 0$$,
                'no benefit gets back more than it paid for a line and its corrections');

-- Benefits and money.
SELECT is((SELECT count(*) FROM tco.benefit WHERE balance < 0), 0::bigint, 'no benefit balance below zero');
SELECT is_empty($$SELECT b.benefit_id FROM tco.benefit b
                  WHERE b.kind <> 'savings_plan'
                    AND b.initial_amount - b.balance IS DISTINCT FROM
                        coalesce((SELECT sum(u.amount) FROM tco.benefit_use u WHERE u.benefit_id = b.benefit_id), 0)
                        + coalesce((SELECT sum(r.amount) FROM tco.benefit_return r
                                    WHERE r.benefit_id = b.benefit_id AND r.returned_to = 'payer_balance'), 0)$$,
                'each benefit''s balance = initial - net uses - what went to the payer instead');
SELECT is_empty($$SELECT r.return_id FROM tco.benefit_return r
                  WHERE (r.returned_to = 'payer_balance' AND round(r.amount, 2) > 0) <> (r.ledger_entry_id IS NOT NULL)
                     OR (r.ledger_entry_id IS NOT NULL AND (SELECT l.amount FROM tco.ledger l WHERE l.entry_id = r.ledger_entry_id)
                                                           <> round(r.amount, 2))$$,
                'what went to a payer''s balance is a ledger refund of that amount, rounded to the cent');

-- Invoices and credit notes on the statements with something due.
SELECT count(tco.pay_statement(statement_id)) FROM tco.statement WHERE due_total > 0;
SELECT count(tco.issue_invoice(statement_id)) FROM tco.statement WHERE due_total > 0;
SELECT count(tco.issue_credit_note(invoice_id, round(amount / 3, 2), 'goodwill')) FROM tco.invoice WHERE amount >= 0.03;
SELECT count(tco.issue_credit_note(invoice_id, net_amount, 'the rest')) FROM tco.invoice
WHERE invoice_id % 2 = 0 AND net_amount > 0;
SELECT is_empty($$SELECT i.invoice_id FROM tco.invoice i
                  WHERE i.net_amount < 0 OR i.credited_amount <> coalesce((SELECT sum(c.amount) FROM tco.credit_note c
                                                                           WHERE c.invoice_id = i.invoice_id), 0)
                     OR (SELECT sum(l.amount) FROM tco.credit_note c JOIN tco.ledger l ON l.entry_id = c.ledger_entry_id
                         WHERE c.invoice_id = i.invoice_id) IS DISTINCT FROM nullif(i.credited_amount, 0)$$,
                'credit notes never exceed their invoice, and each moved exactly its amount through the ledger');
SELECT is_empty($$SELECT a.account_id FROM tco.account a
                  WHERE a.balance <> 500 + coalesce((SELECT sum(l.amount) FROM tco.ledger l WHERE l.account_id = a.account_id), 0)$$,
                'every balance is its starting amount plus its ledger: no money appears or goes missing');

-- A rerun of any settled cycle changes nothing.
CREATE TEMP TABLE before_rerun AS
SELECT (SELECT md5(string_agg(s::text, ',' ORDER BY statement_id)) FROM tco.statement s) AS statements,
       (SELECT md5(string_agg(p.pack_id::text || p.line_ids::text, ',' ORDER BY pack_id)) FROM tco.settled_pack p) AS packs,
       (SELECT md5(string_agg(b.benefit_id || ':' || b.balance, ',' ORDER BY benefit_id)) FROM tco.benefit b) AS benefits,
       (SELECT count(*) FROM tco.bill_line) AS lines;
SELECT tco.settle_cycle(c) FROM unnest(ARRAY['2022-12', '2023-01', '2023-02', '2023-03']::tco.billing_cycle[]) c;
SELECT tco.settle_cycle(c, :org_a) FROM unnest(ARRAY['2022-12', '2023-01', '2023-02', '2023-03']::tco.billing_cycle[]) c;
SELECT is((SELECT md5(string_agg(s::text, ',' ORDER BY statement_id)) FROM tco.statement s)
          || (SELECT md5(string_agg(p.pack_id::text || p.line_ids::text, ',' ORDER BY pack_id)) FROM tco.settled_pack p)
          || (SELECT md5(string_agg(b.benefit_id || ':' || b.balance, ',' ORDER BY benefit_id)) FROM tco.benefit b)
          || (SELECT count(*) FROM tco.bill_line),
          (SELECT statements || packs || benefits || lines FROM before_rerun),
          'settling every settled cycle again, whole and per organization, changes nothing');

SELECT * FROM finish();
ROLLBACK;
