-- Access to the sharing tables (src/sql/45_sharing.sql), following
-- 50_access.sql: tco_admin sees and writes everything; a tco_reader sees the
-- voucher pool (and its ledger) of the organization it administers, the
-- shares with its visible accounts, with its unit or a unit above it, or of
-- the organization it administers, and the benefits of those shares.  A
-- share belongs to the organization of its pool (benefit_share.org_id): it
-- is visible only to readers in that organization now, so a member that
-- moves to another organization leaves its shares (and the pool vouchers
-- they show) behind, and the new organization's admin does not see them.

-- Units whose shares cover the invoking role's account: its unit and every
-- unit above it.
CREATE FUNCTION tco.shared_units_of_current_account() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 5 SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE up(unit_id) AS (
        SELECT m.unit_id FROM tco.member m WHERE m.account_id = tco.current_account_id()
        UNION
        SELECT u.parent_unit_id FROM up JOIN tco.org_unit u ON u.unit_id = up.unit_id
         WHERE u.parent_unit_id IS NOT NULL
    )
    SELECT unit_id FROM up
$$;
COMMENT ON FUNCTION tco.shared_units_of_current_account() IS 'The unit of the invoking role''s account and every unit above it: shares with these units cover the account.';

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
    USING (org_id IN (SELECT tco.visible_organizations())
           AND (account_id IN (SELECT tco.visible_accounts()) OR org_id IN (SELECT tco.administered_organizations())
                OR unit_id IN (SELECT tco.shared_units_of_current_account())));

-- A reader also sees the benefits shared with it (through the shares it may
-- see), besides those tco.benefit_reader_visible (51_access_settlement.sql)
-- shows it.
CREATE POLICY benefit_reader_shared ON tco.benefit FOR SELECT TO tco_reader
    USING (benefit_id IN (SELECT s.benefit_id FROM tco.benefit_share s));
