-- Access to the sharing tables (src/sql/45_sharing.sql), following
-- 50_access.sql: tco_admin sees and writes everything; a tco_reader sees the
-- voucher pool (and its ledger) of the organization it administers, and the
-- shares with its visible accounts or of the organization it administers.

CREATE FUNCTION tco.administered_organizations() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 1 SET search_path = pg_catalog, pg_temp AS $$
    SELECT o.org_id FROM tco.organization o WHERE o.admin_account_id = tco.current_account_id()
$$;
COMMENT ON FUNCTION tco.administered_organizations() IS 'The organization whose admin account the invoking role is mapped to (empty if none).';

ALTER TABLE tco.voucher_pool ENABLE ROW LEVEL SECURITY;
CREATE POLICY voucher_pool_admin_all ON tco.voucher_pool TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY voucher_pool_reader_visible ON tco.voucher_pool FOR SELECT TO tco_reader
    USING (org_id IN (SELECT tco.administered_organizations()));
ALTER TABLE tco.voucher_pool_entry ENABLE ROW LEVEL SECURITY;
CREATE POLICY voucher_pool_entry_admin_all ON tco.voucher_pool_entry TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY voucher_pool_entry_reader_visible ON tco.voucher_pool_entry FOR SELECT TO tco_reader
    USING (org_id IN (SELECT tco.administered_organizations()));
ALTER TABLE tco.benefit_share ENABLE ROW LEVEL SECURITY;
CREATE POLICY benefit_share_admin_all ON tco.benefit_share TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY benefit_share_reader_visible ON tco.benefit_share FOR SELECT TO tco_reader
    USING (account_id IN (SELECT tco.visible_accounts()) OR org_id IN (SELECT tco.administered_organizations()));
