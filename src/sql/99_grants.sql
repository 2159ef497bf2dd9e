-- Privileges.  This file sorts last so that it covers every table and function
-- the other parts of the install script created.
--
-- Default: nothing in schema tco is usable by PUBLIC.  tco_admin may use
-- everything (row-level security then lets it see every row); tco_reader may
-- read the tables that carry a reader policy, plus the product catalogue, and
-- call the functions listed below.  Functions that only support a data type
-- (input/output, operators, casts, index support) stay executable by PUBLIC:
-- without them a role granted a table could not compare its column values.

REVOKE ALL ON SCHEMA tco FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA tco FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA tco FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA tco FROM PUBLIC;

GRANT USAGE ON SCHEMA tco TO tco_admin, tco_reader;
GRANT ALL ON ALL TABLES IN SCHEMA tco TO tco_admin;
GRANT ALL ON ALL SEQUENCES IN SCHEMA tco TO tco_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tco TO tco_admin;

GRANT SELECT ON tco.account, tco.member, tco.trusteeship, tco.bill_line,
                tco.organization, tco.org_unit, tco.account_login, tco.product
    TO tco_reader;
-- Invoices and alerts (42_invoice.sql, 44_alert.sql; rows filtered by RLS).
GRANT SELECT ON tco.invoice, tco.invoice_line, tco.alert, tco.alert_threshold TO tco_reader;
-- The packed settlement record and its views (rows filtered by RLS on the pack).
GRANT SELECT ON tco.settled_pack, tco.settled_line, tco.benefit_use TO tco_reader;
GRANT EXECUTE ON FUNCTION tco.invoking_role(), tco.current_account_id(), tco.visible_accounts(),
                          tco.can_see_account(bigint), tco.visible_organizations(),
                          tco.billing_timezone(), tco.cycle_of(timestamptz), tco.cycle_range(tco.billing_cycle),
                          tco.org_chart(bigint, text)
    TO tco_reader;
-- Settlement data, filtered by row-level security (51_access_settlement.sql);
-- the BI views are security_invoker, so the reader's policies apply.
GRANT SELECT ON tco.statement, tco.statement_line, tco.settled_cycle, tco.benefit, tco.contract_discount,
                tco.settlement_by_payer, tco.settlement_by_member, tco.settlement_by_unit
    TO tco_reader;
GRANT EXECUTE ON FUNCTION tco.visible_payers(), tco.paying_managers(), tco.visible_entities() TO tco_reader;

DO $type_support$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT DISTINCT p.oid::regprocedure
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'tco'::pg_catalog.regnamespace
           AND (EXISTS (SELECT 1 FROM pg_catalog.pg_type t
                         WHERE p.oid IN (t.typinput, t.typoutput, t.typreceive, t.typsend,
                                         t.typmodin, t.typmodout, t.typanalyze, t.typsubscript))
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_operator o
                            WHERE p.oid IN (o.oprcode, o.oprrest, o.oprjoin))
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_cast c WHERE c.castfunc = p.oid)
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_amproc a WHERE a.amproc = p.oid))
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f);
    END LOOP;
END
$type_support$;

-- The settled-cycle guards (R14) on tco.bill_line read the settlement tables,
-- which writers other than tco_admin may not read: they run with the
-- extension owner's rights (search_path pinned), so a refused write is refused
-- by RLS or the rule, never by a missing privilege on a helper.
ALTER FUNCTION tco.r14_bill_line_insert_check() SECURITY DEFINER;
ALTER FUNCTION tco.r14_bill_line_update_check() SECURITY DEFINER;
ALTER FUNCTION tco.r14_bill_line_delete_check() SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION tco.settlement_lock_shared(tco.billing_cycle) TO PUBLIC;

-- Sharing (45_sharing.sql, 51_sharing_access.sql): readers see what
-- row-level security lets them of the pools and shares.
GRANT SELECT ON tco.voucher_pool, tco.voucher_pool_entry, tco.benefit_share TO tco_reader;
GRANT EXECUTE ON FUNCTION tco.administered_organizations(), tco.shared_units_of_current_account() TO tco_reader;
