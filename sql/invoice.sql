-- Invoices (R7): one per statement at most; a manager's invoice covers its
-- managed members; a self-pay organization's admin may issue its members';
-- nobody else; only paid statements with something due.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
\set SHOW_CONTEXT never

SELECT tco.set_billing_timezone('Asia/Shanghai');
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme', true), (2, 'Beta', true);
-- 101 admin; 102 self-pay; 103 managed by 101; 104 self-pay (other entity);
-- 106 no organization; 201 admin of another organization.
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES
    (101, 'admin', 1, 100), (102, 'self-pay', 1, 100), (103, 'managed', 1, 100),
    (104, 'self-pay beta', 2, 100), (106, 'loner', NULL, 100), (201, 'other admin', 2, 100);
SELECT tco.create_organization(101, 'Acme Org') AS org \gset
SELECT tco.create_organization(201, 'Other Org') AS org2 \gset
SELECT tco.add_member(:org, 102);
SELECT tco.add_member(:org, 103);
SELECT tco.add_member(:org, 104);
INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
    VALUES (103, 101, '2022-12-15 10:00+08');
INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour'), ('cos', 'day');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at) VALUES
    (101, 'cvm', '2023-01-05 10:00+08', '2023-01-05 11:00+08', 12.5, '2023-01-05 12:00+08'),
    (102, 'cvm', '2023-01-07 10:00+08', '2023-01-07 11:00+08', 10, '2023-01-07 12:00+08'),
    (103, 'cos', '2023-01-10 00:00+08', '2023-01-11 00:00+08', 20, '2023-01-11 01:00+08'),
    (103, 'cvm', '2023-01-11 10:00+08', '2023-01-11 11:00+08', 1.005, '2023-01-11 12:00+08'),
    (104, 'cvm', '2023-01-09 10:00+08', '2023-01-09 11:00+08', 2, '2023-01-09 12:00+08'),
    (106, 'cvm', '2023-01-09 10:00+08', '2023-01-09 11:00+08', 3, '2023-01-09 12:00+08');
-- 104's consumption is paid entirely by a voucher: nothing due.
SELECT tco.grant_voucher(104, 5.00, '2023-06-01 00:00+08') AS voucher_104;
SELECT * FROM tco.settle_cycle('2023-01');
SELECT statement_id, payer_account_id, org_id, list_total, due_total FROM tco.statement ORDER BY payer_account_id;
SELECT statement_id AS st_101 FROM tco.statement WHERE payer_account_id = 101 \gset
SELECT statement_id AS st_102 FROM tco.statement WHERE payer_account_id = 102 \gset
SELECT statement_id AS st_104 FROM tco.statement WHERE payer_account_id = 104 \gset
SELECT statement_id AS st_106 FROM tco.statement WHERE payer_account_id = 106 \gset

-- R7: the managed member 103 has no statement, hence no invoice.
SELECT count(*) AS statements_of_103 FROM tco.statement WHERE payer_account_id = 103;

-- Unpaid: refused.
SELECT tco.issue_invoice(:st_101);
SELECT tco.pay_statement(:st_101, '2023-02-03 10:00+08');
SELECT tco.pay_statement(:st_102, '2023-02-03 10:00+08');
SELECT tco.pay_statement(:st_104, '2023-02-03 10:00+08');
SELECT tco.pay_statement(:st_106, '2023-02-03 10:00+08');

-- Nobody else may issue: the managed member (R7 hint), a self-pay member for
-- another's statement, another organization's admin.
SELECT tco.issue_invoice(:st_101, 103);
SELECT tco.issue_invoice(:st_101, 102);
SELECT tco.issue_invoice(:st_102, 201);
SELECT tco.issue_invoice(:st_106, 101);
-- Bad input.
SELECT tco.issue_invoice(NULL);
SELECT tco.issue_invoice(999999);
SELECT tco.issue_invoice(:st_101, 999999);
-- Nothing due on 104's statement.
SELECT tco.issue_invoice(:st_104, 101);

-- The manager issues its own invoice: it covers its managed member 103.
SELECT tco.issue_invoice(:st_101) AS inv_101 \gset
SELECT invoice_id = :inv_101 AS ok, statement_id = :st_101 AS statement_ok, issuer_account_id, recipient_account_id,
       cycle, amount FROM tco.invoice WHERE invoice_id = :inv_101;
SELECT account_id, product_code, for_member, list_amount, due_amount, lines
FROM tco.invoice_line WHERE invoice_id = :inv_101 ORDER BY account_id, product_code;
-- The invoice amount is the statement's due total; the lines add up to it.
SELECT i.amount, round(sum(l.due_amount), 2) AS lines_total
FROM tco.invoice i JOIN tco.invoice_line l USING (invoice_id) WHERE i.invoice_id = :inv_101 GROUP BY i.amount;

-- The self-pay organization's admin issues its self-pay member's invoice.
SELECT tco.issue_invoice(:st_102, 101) AS inv_102 \gset
SELECT issuer_account_id, recipient_account_id, amount FROM tco.invoice WHERE invoice_id = :inv_102;
-- The loner issues its own.
SELECT tco.issue_invoice(:st_106) IS NOT NULL AS issued_106;

-- One invoice per statement: the function says so ...
SELECT tco.issue_invoice(:st_102, 102);
-- ... and so does the table, under direct DML.
INSERT INTO tco.invoice (statement_id, issuer_account_id) VALUES (:st_102, 102);
-- Direct DML follows the same rules.
INSERT INTO tco.invoice (statement_id, issuer_account_id) VALUES (:st_104, 104);
INSERT INTO tco.invoice (statement_id, issuer_account_id, recipient_account_id) VALUES (:st_101, 101, 103);
-- Invoices are append-only.
UPDATE tco.invoice SET amount = 0 WHERE invoice_id = :inv_101;
DELETE FROM tco.invoice WHERE invoice_id = :inv_101;
SELECT count(*) AS invoices FROM tco.invoice;

-- Access: a reader mapped to 102 sees its own invoice only; mapped to 101
-- (admin) it sees its organization's; tco_reader cannot issue.
SET client_min_messages = warning;
DROP ROLE IF EXISTS tco_inv_102;
DROP ROLE IF EXISTS tco_inv_101;
RESET client_min_messages;
CREATE ROLE tco_inv_102 IN ROLE tco_reader;
CREATE ROLE tco_inv_101 IN ROLE tco_reader;
INSERT INTO tco.account_login (role_name, account_id) VALUES ('tco_inv_102', 102), ('tco_inv_101', 101);
SET ROLE tco_inv_102;
SELECT recipient_account_id, amount FROM tco.invoice ORDER BY 1;
SELECT DISTINCT invoice_id = :inv_102 AS own_invoice FROM tco.invoice_line;
SELECT tco.issue_invoice(:st_102);
RESET ROLE;
SET ROLE tco_inv_101;
SELECT recipient_account_id, amount FROM tco.invoice ORDER BY 1;
SELECT count(*) AS lines_seen FROM tco.invoice_line;
RESET ROLE;
DELETE FROM tco.account_login WHERE role_name IN ('tco_inv_102', 'tco_inv_101');
DROP ROLE tco_inv_102;
DROP ROLE tco_inv_101;

-- After issue: credit notes and voids (README "Invoices").
SELECT amount AS inv_101_amount FROM tco.invoice WHERE invoice_id = :inv_101 \gset
SELECT balance AS balance_101_before FROM tco.account WHERE account_id = 101 \gset
-- A credit note of 2.50 on 101's invoice refunds 2.50 to 101 through the ledger.
SELECT tco.issue_credit_note(:inv_101, 2.50, 'price correction on cvm') > 0 AS credited;
SELECT amount, credited_amount, net_amount, net_amount = amount - 2.50 AS net_ok FROM tco.invoice WHERE invoice_id = :inv_101;
SELECT balance - :balance_101_before AS balance_101_change FROM tco.account WHERE account_id = 101;
SELECT l.kind, l.amount, l.reference, c.ledger_entry_id = l.entry_id AS linked
FROM tco.credit_note c JOIN tco.ledger l ON l.entry_id = c.ledger_entry_id WHERE c.invoice_id = :inv_101;
-- never above what is left; never on bad amounts; append-only
SELECT tco.issue_credit_note(:inv_101, :inv_101_amount, 'everything');
SELECT tco.issue_credit_note(:inv_101, 0, 'nothing');
SELECT tco.issue_credit_note(:inv_101, 1.005, 'sub-cent');
SELECT tco.issue_credit_note(:inv_101, 1, '  ');
UPDATE tco.credit_note SET amount = 1;
DELETE FROM tco.credit_note;
-- the credited amount only follows the notes
UPDATE tco.invoice SET credited_amount = 0 WHERE invoice_id = :inv_101;
-- the rest can be credited, to zero
SELECT tco.issue_credit_note(:inv_101, net_amount, 'the rest') > 0 AS credited_rest FROM tco.invoice WHERE invoice_id = :inv_101;
SELECT credited_amount = amount AS fully_credited, net_amount FROM tco.invoice WHERE invoice_id = :inv_101;
SELECT balance - :balance_101_before = :inv_101_amount AS refunded_in_full FROM tco.account WHERE account_id = 101;
-- an invoice with credit notes cannot be voided
SELECT tco.void_invoice(:inv_101, 'wrong address');
-- Voids: 102's invoice is voided (the row stays, with its reason), no money
-- moves, its statement can be invoiced again, and takes no credit note.
SELECT balance AS balance_102_before FROM tco.account WHERE account_id = 102 \gset
SELECT tco.void_invoice(:inv_102, 'wrong billing address');
SELECT invoice_id = :inv_102 AS same_row, voided_at IS NOT NULL AS voided, void_reason, net_amount FROM tco.invoice WHERE invoice_id = :inv_102;
SELECT balance = :balance_102_before AS no_money_moved FROM tco.account WHERE account_id = 102;
SELECT tco.void_invoice(:inv_102, 'again');
SELECT tco.issue_credit_note(:inv_102, 1, 'on a voided invoice');
SELECT tco.issue_invoice(:st_102) AS inv_102_again \gset
SELECT count(*) AS invoices_of_102, count(*) FILTER (WHERE voided_at IS NULL) AS valid
FROM tco.invoice WHERE statement_id = :st_102;
SELECT tco.issue_invoice(:st_102);
UPDATE tco.invoice SET void_reason = 'changed my mind' WHERE invoice_id = :inv_102;
SELECT tco.void_invoice(NULL, 'x');
SELECT tco.void_invoice(999999, 'x');
SELECT tco.void_invoice(:inv_102_again, NULL);
