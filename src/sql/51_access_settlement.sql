-- Access control for settlement data (DESIGN section 8, R7): row-level
-- security on statements, statement lines, settled cycles, benefits and
-- contract discounts, and the packed per-line settlement record
-- (tco.settled_pack, read through the security_invoker views tco.settled_line
-- and tco.benefit_use).  The BI views tco.settlement_by_* are
-- security_invoker views (40_settlement.sql), so these policies apply to a
-- reader querying them.
--
-- Settled history belongs to the organization it was settled in, not to
-- wherever its accounts are now (README "Roles and what each sees"): a
-- statement records the organization of its payer at settlement
-- (tco.statement.org_id), and that decides who sees it.
--
-- Who sees which statement:
--   * a mapped account sees the statements it pays, whatever organization it
--     is in now: a manager's statements carry its managed members' lines
--     (R7), so it sees those lines too;
--   * the admin of an organization sees the statements settled in that
--     organization (statement.org_id), and no other: an account that moves
--     to another organization does not take its old statements to the new
--     organization's admin, and the old admin keeps seeing them;
--   * a managed member has no statement (R7) and does not see its manager's:
--     it sees its consumption as bill lines only.  Its lines on the manager's
--     statement (tco.statement_line, tco.settlement_by_member) stay hidden,
--     because they show the manager's discount and benefit use; statements it
--     paid itself before or after the trusteeship stay visible to it;
--   * an unmapped role sees none.
-- A statement line, a settled pack (so a settled line and a benefit use) and
-- an invoice are visible exactly when their statement is: their policies
-- ask tco.statement, whose own policy then applies.
--
-- Benefits: those an account owns, those owned by accounts it sees (an admin
-- its members', a manager its managed members'), and the vouchers and
-- stored-value cards of its current manager, which pay for it (R9); a pool
-- voucher only to readers in the pool's organization (51_sharing_access.sql).
-- Contract discounts: those of visible accounts and of their entities.
-- Settled cycles: those of the reader's organization, and the global ones
-- (org_id NULL) for any mapped role.
--
-- Writes: as for the other tables, only tco_admin has write policies.

CREATE FUNCTION tco.visible_payers() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 50 SET search_path = pg_catalog, pg_temp AS $$
    WITH me AS (SELECT tco.current_account_id() AS account_id)
    SELECT me.account_id FROM me WHERE me.account_id IS NOT NULL
    UNION
    SELECT m.account_id
      FROM tco.organization o JOIN me ON o.admin_account_id = me.account_id
      JOIN tco.member m ON m.org_id = o.org_id
$$;
COMMENT ON FUNCTION tco.visible_payers() IS 'The invoking role''s own account and every current member of the organization it administers (empty for an unmapped role). Statements are no longer filtered by it: a statement is visible to its payer and to the admin of the organization it was settled in.';

CREATE FUNCTION tco.paying_managers() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 1 SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.management_account_id
      FROM tco.trusteeship t
     WHERE t.member_account_id = tco.current_account_id()
       AND t.established_at <= pg_catalog.now()
       AND (t.ended_at IS NULL OR t.ended_at > pg_catalog.now())
$$;
COMMENT ON FUNCTION tco.paying_managers() IS 'The management account of the invoking role''s account in its current trusteeship (empty if none): its vouchers and stored-value cards pay for the account.';

CREATE FUNCTION tco.visible_entities() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 5 SET search_path = pg_catalog, pg_temp AS $$
    SELECT DISTINCT a.entity_id FROM tco.account a
     WHERE a.account_id IN (SELECT tco.visible_accounts()) AND a.entity_id IS NOT NULL
$$;
COMMENT ON FUNCTION tco.visible_entities() IS 'Entities of the accounts the invoking role may read: their entity-level contract discounts are readable.';

ALTER TABLE tco.statement ENABLE ROW LEVEL SECURITY;
CREATE POLICY statement_admin_all ON tco.statement TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY statement_reader_visible ON tco.statement FOR SELECT TO tco_reader
    USING (payer_account_id = tco.current_account_id()
           OR org_id IN (SELECT tco.administered_organizations()));

ALTER TABLE tco.statement_line ENABLE ROW LEVEL SECURITY;
CREATE POLICY statement_line_admin_all ON tco.statement_line TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY statement_line_reader_visible ON tco.statement_line FOR SELECT TO tco_reader
    USING (statement_id IN (SELECT s.statement_id FROM tco.statement s));

ALTER TABLE tco.settled_cycle ENABLE ROW LEVEL SECURITY;
CREATE POLICY settled_cycle_admin_all ON tco.settled_cycle TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY settled_cycle_reader_visible ON tco.settled_cycle FOR SELECT TO tco_reader
    USING ((org_id IS NULL AND tco.current_account_id() IS NOT NULL)
           OR org_id IN (SELECT tco.visible_organizations()));

ALTER TABLE tco.benefit ENABLE ROW LEVEL SECURITY;
CREATE POLICY benefit_admin_all ON tco.benefit TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY benefit_reader_visible ON tco.benefit FOR SELECT TO tco_reader
    USING ((owner_account_id IN (SELECT tco.visible_accounts())
            AND (pool_org_id IS NULL OR pool_org_id IN (SELECT tco.visible_organizations())))
           OR (kind IN ('voucher', 'stored_value_card') AND pool_org_id IS NULL
               AND owner_account_id IN (SELECT tco.paying_managers())));

ALTER TABLE tco.contract_discount ENABLE ROW LEVEL SECURITY;
CREATE POLICY contract_discount_admin_all ON tco.contract_discount TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY contract_discount_reader_visible ON tco.contract_discount FOR SELECT TO tco_reader
    USING (account_id IN (SELECT tco.visible_accounts()) OR entity_id IN (SELECT tco.visible_entities()));

-- The packed per-line record: a pack is visible exactly when its statement
-- is (the same rule as tco.statement_line), so tco.settled_line and
-- tco.benefit_use show a reader the lines and uses of the statements it sees
-- (a benefit use of another organization's benefit is on that
-- organization's statement).
ALTER TABLE tco.settled_pack ENABLE ROW LEVEL SECURITY;
CREATE POLICY settled_pack_admin_all ON tco.settled_pack TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY settled_pack_reader_visible ON tco.settled_pack FOR SELECT TO tco_reader
    USING (statement_id IN (SELECT s.statement_id FROM tco.statement s));

-- After a cycle closes (41_late.sql): a late line is visible with the
-- accounts a reader may read, or with the statement that bills it; a
-- give-back with its statement; a commitment charge with its benefit.
ALTER TABLE tco.late_line ENABLE ROW LEVEL SECURITY;
CREATE POLICY late_line_admin_all ON tco.late_line TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY late_line_reader_visible ON tco.late_line FOR SELECT TO tco_reader
    USING (account_id IN (SELECT tco.visible_accounts())
           OR statement_id IN (SELECT s.statement_id FROM tco.statement s));
ALTER TABLE tco.benefit_return ENABLE ROW LEVEL SECURITY;
CREATE POLICY benefit_return_admin_all ON tco.benefit_return TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY benefit_return_reader_visible ON tco.benefit_return FOR SELECT TO tco_reader
    USING (statement_id IN (SELECT s.statement_id FROM tco.statement s));
ALTER TABLE tco.commitment_charge ENABLE ROW LEVEL SECURITY;
CREATE POLICY commitment_charge_admin_all ON tco.commitment_charge TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY commitment_charge_reader_visible ON tco.commitment_charge FOR SELECT TO tco_reader
    USING (benefit_id IN (SELECT b.benefit_id FROM tco.benefit b));
