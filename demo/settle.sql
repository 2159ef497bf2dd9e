-- Settlement of the sample: close January and February 2023, look at it through the BI
-- views, pay and invoice some statements, and watch the alerts (R11).
\pset footer off
SET timezone = 'Asia/Shanghai';
SET search_path = tco, public;           -- the billing_cycle operators
-- psql prints each alert as it arrives (at commit), on the admin channel,
-- whose name (random, secret) tco.alert_channels() gives; the payload is the id
SELECT channel AS admin_channel FROM tco.alert_channels() WHERE account_id IS NULL \gset
LISTEN :"admin_channel";

\echo
\echo '== Alert thresholds (R11): spending per cycle, managed members included; available credit'
SELECT tco.set_alert_threshold(1, 'cycle_spending', 200000.00) AS acme_admin_spending,
       tco.set_alert_threshold(6, 'cycle_spending', 10000.00) AS acme_manager_6_spending,
       tco.set_alert_threshold(2, 'cycle_spending', 500000.00) AS globex_admin_spending,
       tco.set_alert_threshold(1, 'available_credit', 300000.00) AS acme_admin_credit;

\echo '== Contract discounts and benefits (R8, R9): Acme entity-level 10%, Globex admin 5% on cvm,'
\echo '   a voucher of Acme''s admin (shared with its managed members), a coupon of a self-pay member'
SELECT tco.set_contract_discount(NULL, 1, 0.10, NULL, '-infinity') AS acme_entity_discount,
       tco.set_contract_discount(2, NULL, 0.05, 'cvm', '-infinity') AS globex_admin_cvm_discount,
       tco.grant_voucher(1, 5000.00, '2023-12-31 00:00+08') AS acme_voucher,
       tco.grant_coupon(4, 300.00, '2023-12-31 00:00+08') AS coupon_of_4;

\echo '== Settle January and February 2023 (everything).  January: most new trusteeships'
\echo '   (2023-01-03 09:23) leave their frozen products with the members (seed 004);'
\echo '   from February on the managers pay.'
\timing on
SELECT '2023-01' AS cycle, * FROM tco.settle_cycle('2023-01')
UNION ALL
SELECT '2023-02', * FROM tco.settle_cycle('2023-02');
\timing off

\echo '== tco.settlement_by_payer: the 8 largest statements of February'
SELECT p.cycle, p.payer_account_id AS payer, a.name, p.org_id AS org,
       (SELECT count(DISTINCT m.account_id) FROM tco.settlement_by_member m
         WHERE m.statement_id = p.statement_id AND m.account_id <> p.payer_account_id) AS members_on_it,
       p.lines, p.list_total, p.discount_total, p.benefit_total, p.due_total
FROM tco.settlement_by_payer p JOIN tco.account a ON a.account_id = p.payer_account_id
WHERE p.cycle = '2023-02'
ORDER BY p.due_total DESC, p.payer_account_id LIMIT 8;
\echo '   per cycle and organization:'
SELECT p.cycle, coalesce(o.name, '(no organization)') AS organization, count(*) AS statements,
       sum(p.lines) AS lines, sum(p.list_total) AS list, sum(p.discount_total) AS discount,
       sum(p.benefit_total) AS benefits, sum(p.due_total) AS due
FROM tco.settlement_by_payer p LEFT JOIN tco.organization o USING (org_id)
GROUP BY 1, 2 ORDER BY 1, 2;

\echo '== tco.settlement_by_member: February consumption of managed members on their manager''s statement (top 8)'
SELECT m.payer_account_id AS payer, m.account_id AS consumer, a.name, m.product_code AS product,
       m.lines, m.list_amount, m.due_amount
FROM tco.settlement_by_member m JOIN tco.account a ON a.account_id = m.account_id
WHERE m.account_id <> m.payer_account_id AND m.cycle = '2023-02'
ORDER BY m.due_amount DESC, m.account_id, m.product_code LIMIT 8;

\echo '== tco.settlement_by_unit: "Acme Cloud" departments in February (totals over each subtree)'
WITH RECURSIVE tree AS (
    SELECT unit_id, name, 0 AS depth, ARRAY[unit_id] AS path FROM tco.org_unit WHERE org_id = 1 AND parent_unit_id IS NULL
    UNION ALL
    SELECT u.unit_id, u.name, t.depth + 1, t.path || u.unit_id FROM tco.org_unit u JOIN tree t ON u.parent_unit_id = t.unit_id
)
SELECT repeat('    ', t.depth) || t.name AS unit, coalesce(s.lines, 0) AS lines,
       coalesce(round(s.list_total, 2), 0) AS list_total, coalesce(round(s.discount_total, 2), 0) AS discount,
       coalesce(round(s.benefit_total, 2), 0) AS benefits, coalesce(round(s.due_total, 2), 0) AS due_total
FROM tree t LEFT JOIN tco.settlement_by_unit s ON s.unit_id = t.unit_id AND s.cycle = '2023-02'
ORDER BY t.path;

\echo '== Pay and invoice'
SELECT statement_id AS acme_statement FROM tco.statement WHERE payer_account_id = 1 AND cycle = '2023-02' \gset
SELECT p.statement_id AS selfpay_statement, p.payer_account_id AS selfpay_payer
FROM tco.settlement_by_payer p JOIN tco.member m ON m.account_id = p.payer_account_id
WHERE p.cycle = '2023-02' AND p.org_id = 1 AND m.policy = 'self_pay' AND p.payer_account_id > 6 AND p.due_total > 0
ORDER BY p.payer_account_id LIMIT 1 \gset
SELECT tco.pay_statement(:acme_statement, '2023-03-05 10:00+08') AS acme_lines_newly_paid,
       tco.pay_statement(:selfpay_statement, '2023-03-06 10:00+08') AS selfpay_lines_newly_paid;
\echo '   the manager (account 1) issues its own invoice; as the organization''s admin it also'
\echo '   issues the invoice of self-pay member' :selfpay_payer
SELECT tco.issue_invoice(:acme_statement) AS acme_invoice, tco.issue_invoice(:selfpay_statement, 1) AS selfpay_invoice;
SELECT i.invoice_id, i.issuer_account_id AS issuer, i.recipient_account_id AS billed_to, i.cycle, i.amount,
       count(*) FILTER (WHERE NOT l.for_member) AS own_lines, count(*) FILTER (WHERE l.for_member) AS member_lines,
       count(DISTINCT l.account_id) FILTER (WHERE l.for_member) AS members
FROM tco.invoice i JOIN tco.invoice_line l USING (invoice_id)
GROUP BY 1, 2, 3, 4, 5 ORDER BY 1;
\echo '   refused: a second invoice, a managed member invoicing, an unpaid statement'
CREATE FUNCTION pg_temp.attempt(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE msg text; code text;
BEGIN
    EXECUTE sql;
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, code = RETURNED_SQLSTATE;
    RETURN code || ' ' || msg;
END $$;
SELECT managed FROM (SELECT min(member_account_id) AS managed FROM tco.trusteeship
                     WHERE management_account_id = 1 AND ended_at IS NULL) x \gset
SELECT min(statement_id) AS unpaid FROM tco.statement WHERE paid_at IS NULL AND due_total > 0 \gset
SELECT attempt, pg_temp.attempt(sql) AS outcome FROM (VALUES
    ('second invoice of the manager''s statement', format('SELECT tco.issue_invoice(%s)', :acme_statement)),
    ('managed member ' || :managed || ' invoicing its manager''s statement', format('SELECT tco.issue_invoice(%s, %s)', :acme_statement, :managed)),
    ('invoice of an unpaid statement', format('SELECT tco.issue_invoice(%s)', :unpaid))) v(attempt, sql);

\echo '== A withdrawal takes Acme''s admin below its credit threshold'
SELECT tco.withdraw(1, 200000.00) AS acme_admin_balance;
SELECT tco.available_credit(1) AS available_credit;

\echo '== Alerts fired (tco.alert; each id went out with NOTIFY on the payer''s and the admin channel)'
SELECT alert_id, kind, account_id, threshold, round(value, 2) AS value, cycle FROM tco.alert ORDER BY alert_id;

\echo
\echo '== FOCUS 1.2 export (tco.focus_cost_and_usage): the first rows of February as CSV'
\echo '   (the whole export: COPY (SELECT * FROM tco.focus_cost_and_usage WHERE "x_BillingCycle" = ...) TO ... CSV HEADER)'
COPY (SELECT "BillingAccountId", "SubAccountId", "ChargePeriodStart", "ChargeCategory", "ServiceName",
             "ListCost", "ContractedCost", "BilledCost", "EffectiveCost", "CommitmentDiscountId", "InvoiceId", "Tags"
        FROM tco.focus_cost_and_usage
       WHERE "x_BillingCycle" = '2023-02' AND "SubAccountId" <> "BillingAccountId"
       ORDER BY "x_LineId" LIMIT 5) TO STDOUT WITH (FORMAT csv, HEADER);
\echo '   FOCUS rule: BilledCost summed per InvoiceId is the invoice amount'
SELECT f."InvoiceId", round(sum(f."BilledCost"), 2) AS billed_cost, i.amount AS invoice_amount
FROM tco.focus_cost_and_usage f JOIN tco.invoice i ON i.invoice_id::text = f."InvoiceId"
GROUP BY 1, 3 ORDER BY 1;

\echo '== Showback by tag (tco.showback_by_tag): February by application'
SELECT tag_value AS app, lines, round(list_total, 2) AS list_total, round(due_total, 2) AS due_total
FROM tco.showback_by_tag WHERE cycle = '2023-02' AND tag_key = 'app' ORDER BY 1;

\echo '== Allocation: Acme splits the cost of its "billing" application 60/40 between Engineering and'
\echo '   Finance (a split charge: reporting only, the statements do not change)'
INSERT INTO tco.allocation_rule (org_id, name, source_tag_key, source_tag_value, method)
VALUES (1, 'billing app', 'app', 'billing', 'fixed') RETURNING rule_id AS billing_rule \gset
INSERT INTO tco.allocation_target (rule_id, target_unit_id, percent)
SELECT :billing_rule, unit_id, CASE name WHEN 'Engineering' THEN 60 ELSE 40 END
FROM tco.org_unit WHERE org_id = 1 AND name IN ('Engineering', 'Finance');
SELECT a.cycle, u.name AS unit, count(*) AS lines, sum(a.amount) AS allocated
FROM tco.allocated_cost a JOIN tco.org_unit u ON u.unit_id = a.target_unit_id
WHERE a.rule_id = :billing_rule GROUP BY 1, 2 ORDER BY 1, 2;
SELECT a.cycle, sum(a.amount) AS allocated, (SELECT sum(f."BilledCost") FROM tco.focus_cost_and_usage f
        WHERE f."x_BillingCycle" = a.cycle AND f."x_OrganizationId" = 1 AND f."Tags" ->> 'app' = 'billing') AS billing_app_cost
FROM tco.allocated_cost a WHERE a.rule_id = :billing_rule GROUP BY 1 ORDER BY 1;

\echo '== After the cycles close (README "After a cycle closes"): a partner feed delivers a January'
\echo '   line late, and a February line is re-rated; neither cycle is rewritten: March bills both'
\echo '   as corrections of their charge cycles, on the statement of each line''s payer then'
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, tags)
SELECT account_id, product_code, period_start, period_end, 12.34, '{"source": "partner feed"}'
FROM tco.bill_line WHERE period_start < '2023-02-01 00:00+08' AND product_code NOT LIKE 'tco:%'
ORDER BY line_id LIMIT 1
RETURNING line_id AS late_line \gset
SELECT line_id AS rerated FROM tco.bill_line
WHERE period_start >= '2023-02-01 00:00+08' AND period_start < '2023-03-01 00:00+08' AND list_amount > 1
ORDER BY line_id LIMIT 1 \gset
SELECT tco.correct_bill_line(:rerated, round((SELECT list_amount FROM tco.bill_line WHERE line_id = :rerated) / 2, 6),
                             'meter re-read: half the usage') AS correction \gset
SELECT line_id, charge_cycle, billing_cycle FROM tco.late_line ORDER BY line_id;
SELECT '2023-03' AS cycle, * FROM tco.settle_cycle('2023-03');
SELECT "x_LineId" AS line, "ChargeClass", "x_ChargeCycle" AS charge_cycle, "x_BillingCycle" AS billing_cycle,
       "BillingAccountId" AS payer, "x_CorrectsLineId" AS corrects, "ListCost", "BilledCost"
FROM tco.focus_cost_and_usage WHERE "ChargeClass" = 'Correction' ORDER BY 1;
SELECT tco.explain_line(:late_line) -> 'late' AS late_line_explained;
