-- Settlement (DESIGN sections 4, 5, 8; R7-R9, R14): discounts, benefits,
-- statements, explain_line, the BI views, idempotence and the R14 refusals.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
\set SHOW_CONTEXT never

SELECT tco.set_billing_timezone('Asia/Shanghai');

-- Entities: Acme (1) and Beta (2), both verified.
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme', true), (2, 'Beta', true);
-- 101 admin (Acme); 102 self-pay, Acme; 103 managed (new trusteeship), Acme;
-- 104 self-pay, Beta; 105 managed (legacy trusteeship), Acme; 106 no organization.
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES
    (101, 'admin', 1, 100), (102, 'self-pay same entity', 1, 100), (103, 'managed new', 1, 100),
    (104, 'self-pay other entity', 2, 100), (105, 'managed legacy', 1, 100), (106, 'loner', NULL, 100);
SELECT tco.create_organization(101, 'Acme Org') AS org \gset
SELECT tco.create_unit(:org, 'Dev') AS dev \gset
SELECT tco.create_unit(:org, 'Team', :dev) AS team \gset
SELECT tco.add_member(:org, 102);
SELECT tco.add_member(:org, 103, :dev);
SELECT tco.add_member(:org, 104, :team);
SELECT tco.add_member(:org, 105, :dev);
-- 105 -> 101 before the cut-over (2022-08-01 12:00+08): legacy; 103 -> 101 after: new.
INSERT INTO tco.trusteeship (trusteeship_id, member_account_id, management_account_id, established_at) VALUES
    (1, 105, 101, '2022-06-01 10:00+08'),
    (2, 103, 101, '2022-12-15 10:00+08');

INSERT INTO tco.product (product_code, granularity) VALUES ('cos', 'day'), ('cvm', 'hour');

-- Contract discounts (R8).
SELECT tco.set_contract_discount(101, NULL, 0.20, NULL, '-infinity');   -- 1 admin, all products
SELECT tco.set_contract_discount(101, NULL, 0.25, 'cos', '-infinity');  -- 2 admin, cos
SELECT tco.set_contract_discount(102, NULL, 0.10, NULL, '-infinity');   -- 3 102 own, all
SELECT tco.set_contract_discount(102, NULL, 0.30, 'cvm', '-infinity');  -- 4 102 own, cvm
SELECT tco.set_contract_discount(NULL, 1, 0.15, NULL, '-infinity');     -- 5 entity Acme, all
SELECT tco.set_contract_discount(103, NULL, 0.05, NULL, '-infinity');   -- 6 103 own (entity rate wins)
SELECT tco.set_contract_discount(NULL, 2, 0.50, NULL, '-infinity');     -- 7 entity Beta (not for self-pay)
-- Bad discounts.
SELECT tco.set_contract_discount(101, NULL, 1.0);
SELECT tco.set_contract_discount(101, 1, 0.1);
SELECT tco.set_contract_discount(999, NULL, 0.1);
SELECT tco.set_contract_discount(101, NULL, NULL);

-- Benefits (R9).
SELECT tco.grant_coupon(102, 6.00, '2023-06-01 00:00+08');               -- 1 coupon A of 102
SELECT tco.grant_coupon(102, 1.00, '2023-02-01 00:00+08');               -- 2 coupon B of 102: expires first
SELECT tco.grant_coupon(103, 2.00, '2023-06-01 00:00+08', 'cos');        -- 3 managed member's own coupon, cos
SELECT tco.grant_voucher(101, 4.00, '2023-03-01 00:00+08');              -- 4 manager's voucher
SELECT tco.grant_stored_value_card(101, 20.00, '2024-01-01 00:00+08');   -- 5 manager's card
SELECT tco.grant_voucher(103, 20.00, '2024-01-01 00:00+08');             -- 6 managed member's own voucher: unusable
SELECT tco.grant_voucher(104, 3.00, '2023-01-10 00:00+08');              -- 7 104's voucher, expires 01-10
-- Bad grants.
SELECT tco.grant_benefit('gift', 101, 1, '-infinity', 'infinity');
SELECT tco.grant_voucher(101, -1, '2024-01-01');
SELECT tco.grant_voucher(101, 1.001, '2024-01-01');
SELECT tco.grant_voucher(999, 1, '2024-01-01');
SELECT tco.grant_voucher(101, 1, '2024-01-01', 'nope');

-- Bill lines (periods in UTC+8).  Line 12 starts at 2023-01-01 00:00+08
-- (2022-12-31 16:00 UTC): January.  Line 11 starts at 2023-02-01 00:30+08
-- (still January in UTC): February.
INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount, issued_at) VALUES
    (1, 101, 'cvm', '2023-01-05 10:00+08', '2023-01-05 11:00+08', 12.5, '2023-01-05 12:00+08'),
    (2, 101, 'cos', '2023-01-06 00:00+08', '2023-01-07 00:00+08', 8, '2023-01-07 01:00+08'),
    (3, 102, 'cvm', '2023-01-07 10:00+08', '2023-01-07 11:00+08', 10, '2023-01-07 12:00+08'),
    (4, 102, 'cos', '2023-01-08 00:00+08', '2023-01-09 00:00+08', 3.333333, '2023-01-09 01:00+08'),
    (5, 102, 'cos', '2023-01-09 00:00+08', '2023-01-10 00:00+08', 0.000005, '2023-01-10 01:00+08'),
    (6, 103, 'cos', '2023-01-10 00:00+08', '2023-01-11 00:00+08', 20, '2023-01-11 01:00+08'),
    (7, 103, 'cvm', '2023-01-11 10:00+08', '2023-01-11 11:00+08', 1, '2023-01-11 12:00+08'),
    (8, 104, 'cvm', '2023-01-09 10:00+08', '2023-01-09 11:00+08', 2, '2023-01-09 12:00+08'),
    (9, 104, 'cvm', '2023-01-20 10:00+08', '2023-01-20 11:00+08', 2, '2023-01-20 12:00+08'),
    (10, 105, 'cvm', '2023-01-12 10:00+08', '2023-01-12 11:00+08', 5, '2023-01-12 12:00+08'),
    (11, 105, 'cos', '2023-02-01 00:30+08', '2023-02-02 00:00+08', 4, '2023-02-02 01:00+08'),
    (12, 101, 'cvm', '2023-01-01 00:00+08', '2023-01-01 01:00+08', 1, '2023-01-01 02:00+08'),
    (13, 101, 'cvm', '2023-02-10 10:00+08', '2023-02-10 11:00+08', 7, '2023-02-10 12:00+08'),
    (14, 106, 'cvm', '2023-02-10 10:00+08', '2023-02-10 11:00+08', 1, '2023-02-10 12:00+08');
SELECT setval(pg_get_serial_sequence('tco.bill_line', 'line_id'), 100) AS next_line_ids_above,
       setval(pg_get_serial_sequence('tco.trusteeship', 'trusteeship_id'), 100) AS next_trusteeship_ids_above;

-- Bad calls.
SELECT * FROM tco.settle_cycle(NULL);
SELECT * FROM tco.settle_cycle('2023-01', 999);
SELECT * FROM tco.settle_cycle('2999-01');

-- Settle January for everything: 3 statements (101 pays for 103 and 105; 102;
-- 104), 11 lines, list 47.50 + 13.33 + 4.00, due 12.65 + 2.50 + 2.00.
SELECT * FROM tco.settle_cycle('2023-01');

SELECT statement_id, payer_account_id, cycle, org_id = :org AS in_org, list_total, discount_total, benefit_total, due_total
FROM tco.statement ORDER BY payer_account_id;
SELECT s.payer_account_id, l.account_id, l.product_code, l.list_amount, l.discount_amount,
       l.benefit_amount, l.due_amount, l.lines
FROM tco.statement_line l JOIN tco.statement s USING (statement_id)
ORDER BY s.payer_account_id, l.account_id, l.product_code;
SELECT line_id, payer_account_id, list_amount, discount_rate, discount_source, discount_id,
       discount_amount, benefit_amount, due_amount
FROM tco.settled_line ORDER BY line_id;
SELECT u.benefit_id, b.kind, b.owner_account_id, u.line_id, u.amount
FROM tco.benefit_use u JOIN tco.benefit b USING (benefit_id) ORDER BY u.use_id;
SELECT benefit_id, kind, owner_account_id, initial_amount, balance FROM tco.benefit ORDER BY benefit_id;
-- Every line is on exactly one statement; per line the amounts add up.
SELECT count(*) AS lines, count(DISTINCT line_id) AS distinct_lines,
       bool_and(list_amount = discount_amount + benefit_amount + due_amount) AS adds_up
FROM tco.settled_line;

-- Why line 6 costs what it costs: payer 101 by trusteeship 2 (new), entity
-- discount, the member's own coupon and the manager's card (not its own voucher).
SELECT jsonb_pretty(tco.explain_line(6) - 'payer') AS line_6;
SELECT tco.explain_line(6) #>> '{payer,payer}' AS payer_6, tco.explain_line(6) #>> '{payer,change,trusteeship_id}' AS trusteeship_6;
SELECT tco.explain_line(10) #> '{discount}' AS line_10_discount;
SELECT tco.explain_line(4) #> '{benefits}' AS line_4_benefits;
SELECT tco.explain_line(11) - 'payer' AS line_11_unsettled;
SELECT tco.explain_line(999);

-- BI views.  The managed member 103 shows its real list and due amounts.
SELECT cycle, payer_account_id, org_id = :org AS in_org, list_total, discount_total, benefit_total, due_total, lines
FROM tco.settlement_by_payer ORDER BY payer_account_id;
SELECT cycle, payer_account_id, account_id, product_code, list_amount, discount_amount, benefit_amount, due_amount, lines
FROM tco.settlement_by_member WHERE account_id = 103 ORDER BY product_code;
SELECT cycle, unit_id = :org AS is_root, unit_id = :dev AS is_dev, unit_id = :team AS is_team,
       list_total, discount_total, benefit_total, due_total, lines
FROM tco.settlement_by_unit ORDER BY list_total DESC;
SELECT count(*) AS undocumented_view_columns
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = 'tco'::regnamespace AND c.relname LIKE 'settlement_by_%'
  AND a.attnum > 0 AND col_description(c.oid, a.attnum) IS NULL;

-- A second call changes nothing and returns the same row.
CREATE TEMP TABLE before AS
SELECT (SELECT string_agg(format('%s %s %s %s', statement_id, list_total, due_total, paid_at), ',' ORDER BY statement_id) FROM tco.statement) AS statements,
       (SELECT string_agg(format('%s %s', benefit_id, balance), ',' ORDER BY benefit_id) FROM tco.benefit) AS benefits,
       (SELECT count(*) FROM tco.benefit_use) AS uses, (SELECT count(*) FROM tco.settled_line) AS lines;
SELECT * FROM tco.settle_cycle('2023-01');
SELECT * FROM tco.settle_cycle('2023-01', :org);
SELECT b = row(
       (SELECT string_agg(format('%s %s %s %s', statement_id, list_total, due_total, paid_at), ',' ORDER BY statement_id) FROM tco.statement),
       (SELECT string_agg(format('%s %s', benefit_id, balance), ',' ORDER BY benefit_id) FROM tco.benefit),
       (SELECT count(*) FROM tco.benefit_use), (SELECT count(*) FROM tco.settled_line))::before AS unchanged
FROM before b;

-- R14: a settled cycle cannot change.  A new line of it is accepted as a
-- late line (sql/late_lines.sql), billed by the settlement of February below
-- (line 101: on 102's statement, with its discount); a line moved into it
-- (13) is a late line too.
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
    VALUES (102, 'cvm', '2023-01-31 23:00+08', '2023-02-01 00:00+08', 1);
UPDATE tco.bill_line SET list_amount = 11 WHERE line_id = 3;
UPDATE tco.bill_line SET period_start = '2023-02-07 10:00+08', period_end = '2023-02-07 11:00+08' WHERE line_id = 3;
UPDATE tco.bill_line SET period_start = '2023-01-28 10:00+08', period_end = '2023-01-28 11:00+08' WHERE line_id = 13;
DELETE FROM tco.bill_line WHERE line_id = 3;
INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
    VALUES (102, 101, '2023-01-20 10:00+08');
UPDATE tco.trusteeship SET ended_at = '2023-01-25 10:00+08' WHERE trusteeship_id = 2;
DELETE FROM tco.trusteeship WHERE trusteeship_id = 2;
SELECT tco.set_contract_discount(104, NULL, 0.1, NULL, '2023-01-15 00:00+08');
SELECT tco.set_billing_timezone('UTC');
UPDATE tco.benefit_use SET amount = 1;
DELETE FROM tco.settled_line;
-- Allowed: a line and a trusteeship change in the open cycle, a discount from February on.
BEGIN;
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
    VALUES (102, 'cvm', '2023-02-01 00:00+08', '2023-02-01 01:00+08', 1);
UPDATE tco.trusteeship SET ended_at = '2023-02-15 10:00+08' WHERE trusteeship_id = 2;
SELECT tco.set_contract_discount(104, NULL, 0.1, NULL, '2023-02-01 00:00+08') > 0 AS discount_set;
ROLLBACK;

-- Payment: sets paid_at on the statement's lines (allowed on settled lines).
SELECT tco.pay_statement(statement_id, '2023-02-05 10:00+08') AS lines_paid
FROM tco.statement WHERE payer_account_id = 102;
SELECT line_id, paid_at FROM tco.bill_line WHERE account_id = 102 ORDER BY line_id;
SELECT tco.pay_statement(statement_id) FROM tco.statement WHERE payer_account_id = 102;
SELECT tco.pay_statement(999);

-- February: first the organization (101 pays lines 11 and 13), then
-- everything, which adds only the loner's line 14 (no double settlement).
SELECT * FROM tco.settle_cycle('2023-02', :org);
SELECT * FROM tco.settle_cycle('2023-02');
SELECT * FROM tco.settle_cycle('2023-02', :org);
SELECT s.cycle, s.payer_account_id, s.list_total, s.due_total, count(*) AS lines
FROM tco.statement s JOIN tco.settled_line l USING (statement_id)
WHERE s.cycle::text = '2023-02' GROUP BY 1, 2, 3, 4 ORDER BY 2;
SELECT line_id, payer_account_id, discount_source, discount_amount, due_amount
FROM tco.settled_line WHERE line_id IN (11, 13, 14) ORDER BY line_id;
SELECT cycle, org_id = :org AS for_org FROM tco.settled_cycle ORDER BY cycle, org_id NULLS LAST;

-- Progress reports every N lines when tco.progress_every is set.
BEGIN;
SET LOCAL tco.progress_every = 1;
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
    VALUES (106, 'cvm', '2022-12-10 10:00+08', '2022-12-10 11:00+08', 1),
           (106, 'cvm', '2022-12-11 10:00+08', '2022-12-11 11:00+08', 1);
SELECT * FROM tco.settle_cycle('2022-12');
ROLLBACK;
