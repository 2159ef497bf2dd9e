-- Privileges.  This file sorts last so that it covers every table and function
-- the other parts of the install script created.
--
-- Default: nothing in schema tco is usable by PUBLIC.  tco_admin may use
-- everything (row-level security then lets it see every row); tco_reader may
-- read the tables that carry a reader policy, plus the product catalogue, and
-- call the functions listed below.  Functions that only support a data type
-- (input/output, operators, casts, index support) stay executable by PUBLIC:
-- without them a role granted a table could not compare its column values.
--
-- tco_admin gets SELECT, INSERT, UPDATE and DELETE on the tables, never
-- TRIGGER, REFERENCES or TRUNCATE: tco's SECURITY DEFINER functions write
-- its tables with the extension owner's (a superuser's) rights, and a
-- trigger a tco_admin member attached to such a table would run with them;
-- a foreign key from a table of its own could block or observe deletes;
-- TRUNCATE skips the row triggers that keep history append-only (R14).
-- test/security_catalog.sql checks this for every table, now and future.

-- The trigger functions of the two loops at the end of this file (created
-- here, before the privileges are reset and granted).
CREATE FUNCTION tco.refuse_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'TRUNCATE of tco.% is not allowed: it would skip the rules that DELETE enforces', TG_TABLE_NAME
        USING ERRCODE = '55000', HINT = 'Delete the rows with DELETE, which checks each of them.';
END $$;
COMMENT ON FUNCTION tco.refuse_truncate() IS 'BEFORE TRUNCATE trigger on every table of tco whose deletes are checked by a row trigger: refuses TRUNCATE (55000).';
CREATE FUNCTION tco.writer_guard() RETURNS trigger
    AS 'MODULE_PATHNAME', 'tco_writer_guard' LANGUAGE C SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION tco.writer_guard() IS 'BEFORE statement trigger on every table of tco: refuses writes (42501) by roles that are neither superuser, the table owner nor a member of tco_admin.';

-- Start from nothing: default privileges the installing role may have set
-- (ALTER DEFAULT PRIVILEGES ... GRANT ... TO someone) are revoked from every
-- table, sequence, view and function of the extension, and what a schema
-- tco left behind by an earlier DROP EXTENSION still grants is revoked.
DO $reset$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT pg_catalog.format('%s %s', CASE WHEN c.relkind OPERATOR(pg_catalog.=) 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                                 c.oid::pg_catalog.regclass) AS obj, a.grantee
          FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'tco'::pg_catalog.regnamespace
           AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
        UNION
        SELECT 'SCHEMA tco', a.grantee
          FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
         WHERE n.nspname OPERATOR(pg_catalog.=) 'tco' AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner
        UNION
        SELECT pg_catalog.format('FUNCTION %s', p.oid::pg_catalog.regprocedure), a.grantee
          FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'tco'::pg_catalog.regnamespace
           AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM %s', r.obj,
                                  CASE WHEN r.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                                       ELSE r.grantee::pg_catalog.regrole::text END);
    END LOOP;
END
$reset$;

REVOKE ALL ON SCHEMA tco FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA tco FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA tco FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA tco FROM PUBLIC;

GRANT USAGE ON SCHEMA tco TO tco_admin, tco_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tco TO tco_admin;
GRANT ALL ON ALL SEQUENCES IN SCHEMA tco TO tco_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tco TO tco_admin;

-- Two guards on every table.  TRUNCATE fires no row trigger: every table
-- whose rows are guarded by a BEFORE DELETE row trigger (history kept
-- append-only, a member that may not leave while in trusteeship, a used
-- benefit) and that has no TRUNCATE rule of its own refuses TRUNCATE, for
-- every role, the owner included.  And the writer guard (src/guard.c), on
-- every table before any row trigger: a write by a role that is not a
-- superuser, the owner or a member of tco_admin is refused with 42501
-- naming the table only, so that a write granted by mistake never reaches a
-- trigger whose message names other organizations' rows.
DO $table_guards$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.oid::pg_catalog.regclass AS rel,
               EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g   -- a BEFORE DELETE FOR EACH ROW trigger
                        WHERE g.tgrelid OPERATOR(pg_catalog.=) c.oid AND NOT g.tgisinternal
                          AND (g.tgtype::integer OPERATOR(pg_catalog.&) 11) OPERATOR(pg_catalog.=) 11)
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g  -- and no BEFORE TRUNCATE one
                                WHERE g.tgrelid OPERATOR(pg_catalog.=) c.oid AND NOT g.tgisinternal
                                  AND (g.tgtype::integer OPERATOR(pg_catalog.&) 34) OPERATOR(pg_catalog.=) 34)
               AS refuse_truncate
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'tco'::pg_catalog.regnamespace AND c.relkind IN ('r', 'p')
         ORDER BY c.relname
    LOOP
        IF t.refuse_truncate THEN
            EXECUTE pg_catalog.format('CREATE TRIGGER tco_no_truncate BEFORE TRUNCATE ON %s '
                                      'FOR EACH STATEMENT EXECUTE FUNCTION tco.refuse_truncate()', t.rel);
        END IF;
        EXECUTE pg_catalog.format('CREATE TRIGGER tco_writer_guard BEFORE INSERT OR UPDATE OR DELETE ON %s '
                                  'FOR EACH STATEMENT EXECUTE FUNCTION tco.writer_guard()', t.rel);
    END LOOP;
END
$table_guards$;

GRANT SELECT ON tco.account, tco.member, tco.trusteeship, tco.bill_line,
                tco.organization, tco.org_unit, tco.account_login, tco.product
    TO tco_reader;
-- Invoices and alerts (42_invoice.sql, 44_alert.sql; rows filtered by RLS).
GRANT SELECT ON tco.invoice, tco.invoice_line, tco.credit_note, tco.alert, tco.alert_threshold TO tco_reader;
-- The packed settlement record and its views (rows filtered by RLS on the pack).
GRANT SELECT ON tco.settled_pack, tco.settled_line, tco.benefit_use TO tco_reader;
-- Late lines, give-backs and commitment charges (41_late.sql; rows filtered by RLS).
GRANT SELECT ON tco.late_line, tco.benefit_return, tco.commitment_charge, tco.statement_line_by_charge_cycle TO tco_reader;
GRANT EXECUTE ON FUNCTION tco.invoking_role(), tco.current_account_id(), tco.visible_accounts(),
                          tco.can_see_account(bigint), tco.visible_organizations(),
                          tco.billing_timezone(), tco.cycle_of(timestamptz), tco.cycle_range(tco.billing_cycle),
                          tco.cycle_end_date(tco.billing_cycle),  -- cycle_start_date is PUBLIC (a cast)
                          tco.org_chart(bigint, text),
                          -- what org_chart calls (it runs with the caller's rights)
                          tco.require_arg(anyelement, text), tco.require_exists(boolean, text, bigint),
                          tco.dot_escape(text), tco.mermaid_escape(text),
                          tco.alert_channels()
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

-- The statement triggers of tco.bill_line (48_bill_line_triggers.sql) read
-- the settlement tables, which writers other than tco_admin may not read:
-- they are SECURITY DEFINER (search_path pinned), so a refused write is
-- refused by RLS or the rule, never by a missing privilege on a helper.

-- Sharing (45_sharing.sql, 51_sharing_access.sql): readers see what
-- row-level security lets them of the pools and shares.
GRANT SELECT ON tco.voucher_pool, tco.voucher_pool_entry, tco.voucher_pool_balance, tco.benefit_share TO tco_reader;
-- FOCUS export and tag showback (46_focus.sql): security_invoker views.
GRANT SELECT ON tco.focus_cost_and_usage, tco.showback_by_tag TO tco_reader;
-- Allocation (47_allocation.sql): rules of the reader's organization.
GRANT SELECT ON tco.allocation_rule, tco.allocation_target, tco.allocated_cost TO tco_reader;
GRANT EXECUTE ON FUNCTION tco.unit_subtree(bigint) TO tco_reader;
GRANT EXECUTE ON FUNCTION tco.billing_currency(), tco.provider_name() TO tco_reader;
GRANT EXECUTE ON FUNCTION tco.administered_organizations(), tco.shared_units_of_current_account() TO tco_reader;
