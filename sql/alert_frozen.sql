-- A spending alert reads the payers that the statement's own lines make
-- (README "Ingest", 48_bill_line_triggers.sql): an unpaid line issued before
-- a trusteeship change freezes its product for the change's cycle (DESIGN
-- section 3), so the member keeps paying all of that cycle.  With the payer
-- cache warmed before the INSERT, the alert must not count the member's
-- lines for the new manager.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
\set SHOW_CONTEXT never

SELECT tco.set_billing_timezone('Asia/Shanghai');
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme', true);
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES (1, 'manager', 1, 100), (2, 'member', 1, 100);
SELECT tco.create_organization(1, 'Acme Org') AS org \gset
SELECT tco.add_member(:org, 2);
INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour');
-- member 2 passes to manager 1 on March 15, 10:30
SELECT tco.establish_trusteeship(2, 1, '2023-03-15 10:30+08') > 0 AS established;
SELECT tco.set_alert_threshold(1, 'cycle_spending', 50) > 0 AS manager_threshold;
-- warm the payer cache: with no unpaid bill, cvm switches at 11:00
SELECT tco.trusteeship_effective_payer(2, 'cvm', '2023-03-16 00:00+08') AS payer_before;
-- one statement: a line issued on March 10 and unpaid (it freezes cvm for
-- March: 2 pays all of March) and a 60.00 line
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at) VALUES
    (2, 'cvm', '2023-03-16 00:00+08', '2023-03-16 01:00+08', 10, '2023-03-10 09:00+08'),
    (2, 'cvm', '2023-03-20 00:00+08', '2023-03-20 01:00+08', 60, '2023-03-20 02:00+08');
SELECT tco.trusteeship_effective_payer(2, 'cvm', '2023-03-16 00:00+08') AS payer_after;
-- the manager owes nothing of March: no alert (1.2 fired one with value 70)
SELECT account_id, kind, threshold, value, cycle FROM tco.alert ORDER BY alert_id;
SELECT tco.cycle_spending(1, '2023-03') AS spending_1, tco.cycle_spending(2, '2023-03') AS spending_2;
-- in April 1 pays: a 55.00 line fires its alert
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at) VALUES
    (2, 'cvm', '2023-04-02 00:00+08', '2023-04-02 01:00+08', 55, '2023-04-02 02:00+08');
SELECT account_id, kind, value, cycle FROM tco.alert ORDER BY alert_id;
SELECT tco.trusteeship_effective_payer(2, 'cvm', '2023-04-02 00:00+08') AS april_payer;
