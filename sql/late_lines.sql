-- After a cycle closes (README "After a cycle closes", DESIGN section 5):
-- late lines, corrections, what a correction gives back, commitment fees.
-- Every amount below is checked by hand in the comments.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
\set SHOW_CONTEXT never

SELECT tco.set_billing_timezone('UTC');
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme', true);
-- 1 and 3 managers, 2 their member, 4 self-pay
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES
    (1, 'manager one', 1, 1000), (2, 'member', 1, 50), (3, 'manager three', 1, 1000), (4, 'self-pay', 1, 100);
SELECT tco.create_organization(1, 'Acme Org') AS org \gset
SELECT tco.add_member(:org, 2), tco.add_member(:org, 3), tco.add_member(:org, 4);
SELECT tco.establish_trusteeship(2, 1, '2023-01-01 00:00+00');
SELECT tco.create_product('cvm', 'hour');
-- account 2's own discount: 10% in January only
SELECT tco.set_contract_discount(2, NULL, 0.1, NULL, '-infinity', '2023-02-01 00:00+00');
-- manager 1's voucher, expires with January; account 2's coupon, January only
SELECT tco.grant_voucher(1, 30, '2023-02-01 00:00+00') AS voucher \gset
SELECT tco.grant_coupon(2, 8, '2023-02-01 00:00+00') AS coupon \gset

INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount) VALUES
    (101, 2, 'cvm', '2023-01-10 00:00+00', '2023-01-10 01:00+00', 100),
    (401, 4, 'cvm', '2023-01-10 00:00+00', '2023-01-10 01:00+00', 20);
-- 101: 100 - 10 (10%) = 90, coupon 8, voucher 30 -> due 52; 401: due 20
SELECT * FROM tco.settle_cycle('2023-01');

-- 1. A line of January arrives after January was settled: accepted, queued.
-- Manager 1's spending alert at 40 counts it in February, the cycle that
-- will bill it.
SELECT tco.set_alert_threshold(1, 'cycle_spending', 40) > 0 AS threshold_set;
INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount)
VALUES (102, 2, 'cvm', '2023-01-20 00:00+00', '2023-01-20 01:00+00', 50);
SELECT line_id, charge_cycle, billing_cycle, statement_id FROM tco.late_line;
SELECT account_id, kind, cycle, value FROM tco.alert;
-- settling January again changes nothing: the late line is not in it
SELECT * FROM tco.settle_cycle('2023-01');
SELECT tco.explain_line(102)->'settled' AS settled, tco.explain_line(102)->'late'->>'why' AS why;
-- the spending alert's view: it counts in February, the cycle that will bill it
SELECT tco.cycle_spending(1, '2023-01') AS jan, tco.cycle_spending(1, '2023-02') AS feb;

-- member 2 moves from manager 1 to manager 3 in February
SELECT tco.end_trusteeship(2, '2023-02-15 00:00+00');
SELECT tco.establish_trusteeship(2, 3, '2023-02-15 00:00+00');
INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount) VALUES
    (201, 2, 'cvm', '2023-02-20 00:00+00', '2023-02-20 01:00+00', 10);
-- February bills the late line on manager 1's statement (its payer on
-- 2023-01-20, not 3), priced as of January: 50 - 5 (the January 10%) = 45;
-- the voucher and coupon are spent (8 and 30 were used by 101), due 45.
-- 201 is manager 3's: no discount in February, due 10.
SELECT * FROM tco.settle_cycle('2023-02');
SELECT statement_id, payer_account_id, cycle, list_total, discount_total, benefit_total, due_total
FROM tco.statement ORDER BY statement_id;
SELECT statement_id, account_id, charge_cycle, billing_cycle, list_amount, due_amount, lines, correction
FROM tco.statement_line_by_charge_cycle ORDER BY statement_id, charge_cycle;
SELECT line_id, charge_cycle, billing_cycle, statement_id FROM tco.late_line;
SELECT tco.explain_line(102)->>'payer_account_id' AS payer, tco.explain_line(102)->'late'->>'charge_cycle' AS charge_cycle,
       tco.explain_line(102)->'late'->>'billing_cycle' AS billing_cycle, tco.explain_line(102)->>'due_amount' AS due;
-- never billed twice (Kill Bill #762): February again, then March
SELECT * FROM tco.settle_cycle('2023-02');
SELECT * FROM tco.settle_cycle('2023-03');
SELECT count(*) AS packs_with_102 FROM tco.settled_pack WHERE 102 = ANY (line_ids);
-- a billed late line is settled history
UPDATE tco.bill_line SET list_amount = 1 WHERE line_id = 102;
DELETE FROM tco.bill_line WHERE line_id = 102;

-- 2. A late line not billed yet may be changed or deleted.
INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount) VALUES
    (103, 4, 'cvm', '2023-01-25 00:00+00', '2023-01-25 01:00+00', 7),
    (104, 4, 'cvm', '2023-01-26 00:00+00', '2023-01-26 01:00+00', 9);
UPDATE tco.bill_line SET list_amount = 7.5 WHERE line_id = 103;
DELETE FROM tco.bill_line WHERE line_id = 104;
SELECT line_id, charge_cycle, statement_id FROM tco.late_line WHERE line_id IN (103, 104);
-- an unsettled line is simply updated by correct_bill_line
SELECT tco.correct_bill_line(103, 6, 'meter fix') AS corrected;
SELECT list_amount FROM tco.bill_line WHERE line_id = 103;

-- 3. Corrections of settled lines.  101 (list 100, discount 10, coupon 8,
-- voucher 30, due 52) is re-rated to 80, then cancelled.
SELECT tco.correct_bill_line(101, 80, 're-rated usage') AS c1 \gset
SELECT line_id, list_amount, corrects_line_id, correction_reason FROM tco.bill_line WHERE line_id = :c1;
-- a correction of the correction refers to the original: 80 -> 0
SELECT tco.correct_bill_line(:c1, 0, 'usage cancelled') AS c2 \gset
SELECT line_id, list_amount, corrects_line_id FROM tco.bill_line WHERE line_id = :c2;
-- nothing to correct: NULL
SELECT tco.correct_bill_line(101, 0, 'again') IS NULL AS unchanged;
-- bad corrections, through the function or by hand
SELECT tco.correct_bill_line(101, -1, 'negative');
SELECT tco.correct_bill_line(101, 1, ' ');
SELECT tco.correct_bill_line(999, 1, 'unknown');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
VALUES (2, 'cvm', '2023-01-10 00:00+00', '2023-01-10 01:00+00', -1, '2023-01-11 00:00+00');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, corrects_line_id, correction_reason)
VALUES (4, 'cvm', '2023-01-10 00:00+00', '2023-01-10 01:00+00', -1, 101, 'other account');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, corrects_line_id, correction_reason)
VALUES (2, 'cvm', '2023-01-10 00:00+00', '2023-01-10 01:00+00', -1, 101, 'below zero');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, corrects_line_id, correction_reason)
VALUES (2, 'cvm', '2023-01-10 00:00+00', '2023-01-10 01:00+00', 1, 999, 'no original');
-- April bills both on manager 1's statement (payer of 101 in January):
-- c1 = -20: discount -2 (10% of January), -18 back to due (52 was due);
-- c2 = -80: discount -8, -72 back: 34 of due (52 - 18), then 38 of benefits,
-- last use first: the voucher's 30 (expired: to manager 1's balance as a
-- refund) and the coupon's 8 (expired: to the payer's balance too).
-- Statement: list -100, discount -10, benefit -38, due -52: 101 nets to 0.
SELECT * FROM tco.settle_cycle('2023-04');
SELECT statement_id, payer_account_id, cycle, list_total, discount_total, benefit_total, due_total
FROM tco.statement WHERE cycle = '2023-04' ORDER BY statement_id;
SELECT line_id, list_amount, discount_amount, benefit_amount, due_amount FROM tco.settled_line
WHERE line_id IN (101, :c1, :c2) ORDER BY line_id;
SELECT benefit_id, line_id, amount FROM tco.benefit_use WHERE line_id IN (101, :c1, :c2) ORDER BY use_id;
SELECT line_id, corrects_line_id, benefit_id, amount, returned_to, ledger_entry_id IS NOT NULL AS in_ledger
FROM tco.benefit_return ORDER BY return_id;
SELECT account_id, amount, kind FROM tco.ledger WHERE kind = 'refund' ORDER BY entry_id;
SELECT "x_LineId", "ChargeClass", "x_BillingCycle", "x_ChargeCycle", "BilledCost", "x_CorrectsLineId"
FROM tco.focus_cost_and_usage WHERE "x_BillingCycle" = '2023-04' ORDER BY 1;

-- 4. A correction of a line whose payer, manager 5, has since left the
-- organization: still billed to manager 5 (its payer in May), on its own
-- statement (in the organization whose settlement billed it).
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES (5, 'manager five', 1, 100), (6, 'member six', 1, 10);
SELECT tco.add_member(:org, 5), tco.add_member(:org, 6);
SELECT tco.establish_trusteeship(6, 5, '2023-05-01 00:00+00') > 0 AS established;
INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount)
VALUES (601, 6, 'cvm', '2023-05-15 00:00+00', '2023-05-15 01:00+00', 40);
SELECT * FROM tco.settle_cycle('2023-05', :org);
SELECT tco.end_trusteeship(6, '2023-06-01 00:00+00');
SELECT tco.remove_member(5);
SELECT count(*) AS five_in_org FROM tco.member WHERE account_id = 5;
SELECT tco.correct_bill_line(601, 25, 'partner feed re-rated') AS c3 \gset
-- June, settled for the organization: the correction (-15) is account 6's,
-- who is in it; its payer is manager 5 (in May): a statement of 5 for June,
-- of the organization that billed it.  -15 gives back 15 of the 40 due.
SELECT * FROM tco.settle_cycle('2023-06', :org);
SELECT s.payer_account_id, s.cycle, s.org_id, s.list_total, s.due_total, l.line_id, l.list_amount
FROM tco.statement s JOIN tco.settled_line l USING (statement_id)
WHERE l.line_id IN (601, :c3) ORDER BY l.line_id;

-- 5. Commitment fees.  A savings plan of manager 3 (2.00 an hour at 25% off:
-- fee 1.50 an hour) from 2023-07-01 00:00 to 2023-07-01 10:00, used by
-- nobody; a resource pack of account 4 priced 12.00, from 2023-07-05.
SELECT tco.grant_savings_plan(3, 2, 0.25, '2023-07-01 00:00+00', '2023-07-01 10:00+00') AS plan \gset
SELECT tco.grant_resource_pack(4, 'cvm', 5, '2023-07-05 00:00+00', '2023-09-01 00:00+00', 12) AS pack \gset
-- July for the organization: the fee 10 hours x 1.50 = 15.00 on manager 3's
-- statement, the pack's 12.00 on account 4's; packs and plans never pay
-- them.  Then July for everything and again: no fee twice.
SELECT * FROM tco.settle_cycle('2023-07', :org);
SELECT * FROM tco.settle_cycle('2023-07');
SELECT * FROM tco.settle_cycle('2023-07', :org);
SELECT benefit_id = :plan AS is_plan, cycle, amount FROM tco.commitment_charge ORDER BY benefit_id;
SELECT b.account_id, b.product_code, b.charge_type, b.period_start, b.period_end, b.list_amount, sl.due_amount
FROM tco.bill_line b JOIN tco.settled_line sl USING (line_id)
WHERE b.product_code LIKE 'tco:%' ORDER BY b.line_id;
SELECT "ChargeCategory", "ChargeFrequency", "CommitmentDiscountId" IN (:'plan', :'pack') AS commitment, "BilledCost"
FROM tco.focus_cost_and_usage WHERE "ServiceName" LIKE 'tco:%' ORDER BY "x_LineId";
-- August: the pack's price is billed once (the cycle its term starts in)
SELECT * FROM tco.settle_cycle('2023-08');
SELECT count(*) AS pack_charges FROM tco.commitment_charge WHERE benefit_id = :pack;
-- history of the charges is append-only
DELETE FROM tco.commitment_charge;
DELETE FROM tco.benefit_return;
