-- Access to invoices and alerts (DESIGN section 8, same scheme as
-- 50_access.sql): tco_admin sees and writes every row; tco_reader reads an
-- invoice exactly when it may read its statement (51_access_settlement.sql:
-- its payer, and the admin of the organization it was settled in), and the
-- alerts and thresholds of its visible accounts.

SELECT tco.enable_reader_rls(tab, reader_qual) FROM (VALUES
    ('invoice',         'statement_id IN (SELECT s.statement_id FROM tco.statement s)'),
    ('credit_note',     'invoice_id IN (SELECT i.invoice_id FROM tco.invoice i)'),
    ('alert',           'account_id IN (SELECT tco.visible_accounts())'),
    ('alert_threshold', 'account_id IN (SELECT tco.visible_accounts())'),
    -- allocation rules (47_allocation.sql): those of the reader's organization
    ('allocation_rule',   'org_id IN (SELECT tco.visible_organizations())'),
    ('allocation_target', 'rule_id IN (SELECT r.rule_id FROM tco.allocation_rule r)')) AS v(tab, reader_qual);

-- The lines of each invoice.  Like every view a reader may select, it runs
-- with the caller's rights (security_invoker): the row-level security of
-- tco.invoice and tco.statement_line decides what a reader sees, and a
-- reader's own conditions (a leaky function, a failing cast) only ever see
-- rows those policies let through.  Until 1.2 the view ran with its owner's
-- rights and filtered in its own WHERE clause, which a reader's condition
-- could run before (README "Security").
CREATE VIEW tco.invoice_line WITH (security_invoker = true) AS
SELECT i.invoice_id, i.statement_id, i.cycle, i.recipient_account_id, sl.account_id, sl.product_code,
       sl.account_id <> i.recipient_account_id AS for_member,
       sl.list_amount, sl.discount_amount, sl.benefit_amount, sl.due_amount, sl.lines
FROM tco.invoice i
JOIN tco.statement_line sl ON sl.statement_id = i.statement_id;
COMMENT ON VIEW tco.invoice_line IS 'Lines of each invoice: its statement''s lines per consuming account and product (a manager''s invoice lists its managed members'' consumption). A tco_reader sees the lines of the invoices and statements row-level security lets it see.';
COMMENT ON COLUMN tco.invoice_line.recipient_account_id IS 'Account billed (the statement''s payer).';
COMMENT ON COLUMN tco.invoice_line.account_id IS 'Consuming account of the line.';
COMMENT ON COLUMN tco.invoice_line.for_member IS 'True when the consumption is another account''s (a managed member on its manager''s invoice).';
COMMENT ON COLUMN tco.invoice_line.list_amount IS 'List amount (exact).';
COMMENT ON COLUMN tco.invoice_line.discount_amount IS 'Contract discount (exact).';
COMMENT ON COLUMN tco.invoice_line.benefit_amount IS 'Paid by benefits (exact).';
COMMENT ON COLUMN tco.invoice_line.due_amount IS 'Due amount (exact); the invoice amount is the sum rounded half-up to 2 decimals.';
COMMENT ON COLUMN tco.invoice_line.lines IS 'Number of bill lines.';
