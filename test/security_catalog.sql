-- The boundaries of README "Security", checked from the catalog so that every
-- future table, view and function is covered too, and attacked as a hostile
-- reader would: a leaky function and a failing cast in the WHERE clause of
-- every relation a reader may select, a trigger attached by tco_admin, a
-- TRUNCATE, the settlement lock taken by anyone.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SET timezone = 'UTC';
SELECT plan(33);

\ir fixtures/access.inc

-- Data in every reader-visible relation, all of it organization 1's or 2's:
-- bill lines, a settlement with discounts and benefits, a paid and invoiced
-- statement, alerts, a pool voucher shared with a unit, a service policy.
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    SELECT a, 'cvm', '2024-02-01 10:00', '2024-02-01 11:00', 414.76, '2024-02-01 11:00'
      FROM unnest(ARRAY[101, 102, 103, 104, 105, 201, 202]) a;
SELECT tco.set_contract_discount(105, NULL, 0.10, NULL, '2024-01-01');
SELECT tco.set_contract_discount(NULL, 1, 0.05, NULL, '2024-01-01');
SELECT tco.grant_coupon(102, 1, '2025-01-01'), tco.grant_voucher(102, 2, '2025-01-01'),
       tco.grant_voucher(201, 1, '2025-01-01'), tco.grant_coupon(202, 1, '2025-01-01');
SELECT tco.fund_voucher_pool(1, 100);
SELECT tco.share_benefit(tco.issue_pool_voucher(1, 4, '-infinity', '2025-01-01'), 105, NULL, '2024-01-15');
SELECT tco.set_alert_threshold(102, 'cycle_spending', 100), tco.set_alert_threshold(202, 'cycle_spending', 100);
SELECT tco.settle_cycle('2024-02');
SELECT tco.pay_statement(statement_id) FROM tco.statement;
SELECT tco.issue_invoice(statement_id) FROM tco.statement;
INSERT INTO tco.service_policy (policy_id, name, effect, actions) VALUES (1, 'no run', 'deny', '{cvm:Run*}');
SELECT tco.attach_policy(1, 'account', 105);

-- Every relation of schema tco a reader may select.
CREATE TEMP TABLE reader_rel AS
SELECT c.oid::regclass AS rel, c.relkind, c.relrowsecurity,
       coalesce('security_invoker=true' = ANY (c.reloptions) OR 'security_invoker=on' = ANY (c.reloptions), false) AS invoker
  FROM pg_class c
 WHERE c.relnamespace = 'tco'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND (has_table_privilege('tco_reader', c.oid, 'SELECT') OR has_table_privilege('public', c.oid, 'SELECT'));
SELECT cmp_ok((SELECT count(*) FROM reader_rel), '>=', 20::bigint, 'the catalog lists the reader-visible relations');

-- 1. Structure: each is a table under row-level security or a view that runs
-- with the caller's rights, so the policies apply before any condition of
-- the reader's.
SELECT is(array(SELECT rel::text FROM reader_rel WHERE relkind IN ('r', 'p') AND NOT relrowsecurity ORDER BY 1),
          '{tco.product}', 'every reader-visible table has row-level security, but the product catalogue (public to every reader)');
SELECT is(array(SELECT rel::text FROM reader_rel WHERE relkind NOT IN ('r', 'p') AND NOT invoker ORDER BY 1),
          '{}', 'every reader-visible view is security_invoker');
SELECT is(array(SELECT c.oid::regclass::text FROM pg_class c
                 WHERE c.relnamespace = 'tco'::regnamespace AND c.relkind = 'v'
                   AND NOT coalesce('security_invoker=true' = ANY (c.reloptions), false) ORDER BY 1),
          '{}', 'every view of tco is security_invoker, readable or not');
SELECT is(array(SELECT c.oid::regclass::text FROM pg_class c
                 WHERE c.relnamespace = 'tco'::regnamespace AND c.relkind IN ('r', 'p')
                   AND NOT c.relrowsecurity ORDER BY 1),
          '{tco.alert_channel,tco.bill_line_cycle,tco.bill_line_default,tco.bill_line_id,tco.config,tco.entity,tco.invitation,tco.ledger,tco.member_history,tco.policy_attachment,tco.prepaid_resource,tco.prepaid_transfer,tco.product,tco.service_policy}',
          'the tables without row-level security are exactly those no reader may select');
SELECT is(array(SELECT c.oid::regclass::text FROM pg_class c
                 WHERE c.relnamespace = 'tco'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
                   AND c.relname <> 'product'
                   AND (has_table_privilege('tco_reader', c.oid, 'SELECT') OR has_table_privilege('public', c.oid, 'SELECT'))),
          '{}', 'of those only the product catalogue is readable');

-- 2. Attack: a reader mapped to no account.  A condition that fails on any
-- row it is shown -- a cast of the whole row -- must never fail: no row of
-- any reader-visible relation reaches it.  (1.2's tco.invoice_line failed
-- with "invalid input syntax for type numeric: "414.760000#"".)
CREATE FUNCTION pg_temp.as_role(r name, q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE v text;
BEGIN
    EXECUTE format('SET ROLE %I', r);
    EXECUTE q INTO v;
    RESET ROLE;
    RETURN v;
EXCEPTION WHEN OTHERS THEN
    RESET ROLE;
    RETURN 'ERROR ' || SQLSTATE || ': ' || SQLERRM;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.as_role(name, text) TO PUBLIC;
SELECT is(array(SELECT rel::text || ' -> ' || v
                  FROM reader_rel,
                       LATERAL pg_temp.as_role('tco_t_unmapped',
                           format($q$SELECT count(*) FROM %s r WHERE ((r.*)::text || '#')::numeric IS NULL$q$, rel)) v
                 WHERE rel::text <> 'tco.product' AND v <> '0' ORDER BY 1),
          '{}', 'a cast error on any row of any relation never fires for an unmapped reader');

-- 3. Attack: a leaky function (it could RAISE NOTICE every row it sees)
-- called by organization 2's admin: it must be called exactly once per row
-- the reader may see, on every relation.
CREATE FUNCTION pg_temp.leak(t text) RETURNS boolean LANGUAGE plpgsql VOLATILE COST 0.0001 AS $$
BEGIN
    PERFORM set_config('tco_test.leaked', (current_setting('tco_test.leaked')::bigint + 1)::text, false);
    RETURN true;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.leak(text) TO PUBLIC;
SET tco_test.leaked = 0;
CREATE FUNCTION pg_temp.leak_report(r name, rel regclass) RETURNS text LANGUAGE plpgsql AS $$
DECLARE seen bigint; leaked bigint;
BEGIN
    PERFORM set_config('tco_test.leaked', '0', false);
    seen := pg_temp.as_role(r, format('SELECT count(*) FROM %s r WHERE pg_temp.leak((r.*)::text)', rel))::bigint;
    leaked := current_setting('tco_test.leaked')::bigint;
    RETURN CASE WHEN leaked <= seen THEN 'ok' ELSE format('%s rows seen, %s passed to the function', seen, leaked) END;
END $$;
SELECT is(array(SELECT rel::text || ': ' || pg_temp.leak_report('tco_t_admin2', rel)
                  FROM reader_rel WHERE pg_temp.leak_report('tco_t_admin2', rel) <> 'ok' ORDER BY 1),
          '{}', 'a leaky function sees only the rows organization 2''s admin may see, on every relation');
SELECT is(array(SELECT rel::text || ': ' || pg_temp.leak_report('tco_t_unmapped', rel)
                  FROM reader_rel WHERE pg_temp.leak_report('tco_t_unmapped', rel) <> 'ok' ORDER BY 1),
          '{}', 'and none for an unmapped reader');
-- the attack of the audit, verbatim
SELECT is(pg_temp.as_role('tco_t_unmapped', $q$SELECT count(*) FROM tco.invoice_line WHERE (list_amount::text || '#')::numeric IS NULL$q$),
          '0', 'tco.invoice_line: the cast attack finds no row');
SELECT is(pg_temp.as_role('tco_t_admin2', $q$SELECT count(*) FROM tco.invoice_line
                                              WHERE CASE WHEN recipient_account_id < 200 THEN (list_amount::text || '#')::numeric IS NULL END$q$),
          '0', 'tco.invoice_line: nor for another organization''s admin, on organization 1''s rows');

-- 4. Privileges: nobody but the owner holds TRIGGER, REFERENCES or TRUNCATE
-- on a table of tco (a trigger attached by a tco_admin member would run as
-- the superuser when a SECURITY DEFINER function writes the table).
SELECT is(array(SELECT c.oid::regclass::text || ' ' || a.privilege_type || ' to ' ||
                       CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
                  FROM pg_class c, aclexplode(c.relacl) a
                 WHERE c.relnamespace = 'tco'::regnamespace AND a.grantee <> c.relowner
                   AND a.privilege_type IN ('TRIGGER', 'REFERENCES', 'TRUNCATE') ORDER BY 1),
          '{}', 'no role but the owner has TRIGGER, REFERENCES or TRUNCATE on any table');
SELECT is(array(SELECT c.oid::regclass::text FROM pg_class c
                 WHERE c.relnamespace = 'tco'::regnamespace AND c.relkind IN ('r', 'p')
                   AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'tco_writer_guard'
                                      AND t.tgfoid = 'tco.writer_guard()'::regprocedure) ORDER BY 1),
          '{}', 'every table has the writer guard');
SELECT alike(pg_temp.as_role('tco_t_ops', 'CREATE TRIGGER evil AFTER INSERT ON tco.alert FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only()'),
            'ERROR 42501: permission denied for table alert', 'a tco_admin member cannot attach a trigger to tco.alert');
SELECT alike(pg_temp.as_role('tco_t_ops', 'TRUNCATE tco.statement_line'),
            'ERROR 42501: permission denied for table statement_line', 'a tco_admin member cannot truncate');
CREATE SCHEMA ops AUTHORIZATION tco_t_ops;
SELECT alike(pg_temp.as_role('tco_t_ops', 'CREATE TABLE ops.fk (a bigint REFERENCES tco.account)'),
            'ERROR 42501: permission denied for table account', 'nor reference tco''s tables from its own');

-- 5. TRUNCATE keeps history append-only even for the owner (R14): every
-- table whose deletes a row trigger checks refuses TRUNCATE.
SELECT is(array(SELECT c.oid::regclass::text FROM pg_class c
                 WHERE c.relnamespace = 'tco'::regnamespace AND c.relkind IN ('r', 'p')
                   AND EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal AND g.tgtype & 11 = 11)
                   AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal AND g.tgtype & 34 = 34)
                 ORDER BY 1),
          '{}', 'every table with a BEFORE DELETE row trigger has a BEFORE TRUNCATE trigger');
SELECT is(array(SELECT t || ' ' || pg_temp.as_role(current_user, format('TRUNCATE tco.%I CASCADE', t))
                  FROM unnest(ARRAY['settled_cycle', 'settled_pack', 'statement', 'statement_line', 'alert', 'bill_line']) t
                 ORDER BY 1),
          ARRAY['alert ERROR TC008: R14: alert is append-only',
                'bill_line ERROR TC008: R14: tco.bill_line cannot be truncated once a billing cycle is settled',
                'settled_cycle ERROR TC008: R14: settled_cycle is append-only',
                'settled_pack ERROR TC008: R14: settled_pack is append-only',
                'statement ERROR TC008: R14: statement is append-only',
                'statement_line ERROR TC008: R14: statement_line is append-only'],
          'the superuser cannot truncate settlement history either');
SELECT alike(pg_temp.as_role(current_user, 'TRUNCATE tco.member CASCADE'), 'ERROR 55000: TRUNCATE of tco.member is not allowed%',
            'nor the members, whose removal a trigger checks');

-- 6. Functions: every SQL and PL/pgSQL function of the extension runs with
-- search_path pinned to pg_catalog, pg_temp (so an unqualified name can only
-- be a built-in).  C functions are left out: the queries they run name
-- every object and operator with its schema instead (a SET clause would
-- cost every call of the per-row payer function), and the type-support
-- functions run no SQL.
SELECT is(array(SELECT p.oid::regprocedure::text FROM pg_proc p
                  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
                  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'tco'
                 WHERE NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
                   AND p.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'c')
                   AND NOT EXISTS (SELECT 1 FROM pg_type t WHERE p.oid IN (t.typinput, t.typoutput, t.typreceive, t.typsend))
                   AND NOT EXISTS (SELECT 1 FROM pg_operator o WHERE p.oid IN (o.oprcode, o.oprrest, o.oprjoin))
                   AND NOT EXISTS (SELECT 1 FROM pg_cast c WHERE c.castfunc = p.oid)
                   AND NOT EXISTS (SELECT 1 FROM pg_amproc a WHERE a.amproc = p.oid)
                 ORDER BY 1),
          '{}', 'every function pins search_path = pg_catalog, pg_temp');
SELECT is(array(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'tco'::regnamespace AND p.prosecdef
                   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false) ORDER BY 1),
          '{}', 'every SECURITY DEFINER function pins it');
SELECT is(array(SELECT p.oid::regprocedure::text FROM pg_proc p
                 WHERE p.pronamespace = 'tco'::regnamespace
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')),
          '{}', 'every function in schema tco belongs to the extension');
SELECT ok(NOT has_schema_privilege('tco_admin', 'tco', 'CREATE') AND NOT has_schema_privilege('tco_reader', 'tco', 'CREATE')
          AND NOT has_schema_privilege('public', 'tco', 'CREATE'), 'nobody but the owner may create objects in schema tco');

-- 7. What a reader is granted works for it: every tco function called by
-- the body of a function a reader may execute (and that runs with the
-- reader's rights) is executable by the reader too.  (1.2's tco.org_chart
-- failed for every reader: permission denied for function require_arg.)
SELECT is(array(SELECT DISTINCT f.oid::regprocedure::text || ' calls tco.' || m[1]
                  FROM pg_proc f, regexp_matches(f.prosrc, 'tco\.([a-z_0-9]+)\s*\(', 'g') m
                 WHERE f.pronamespace = 'tco'::regnamespace AND NOT f.prosecdef AND f.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'c')
                   AND has_function_privilege('tco_reader', f.oid, 'EXECUTE')
                   AND NOT has_function_privilege('public', f.oid, 'EXECUTE')
                   AND EXISTS (SELECT 1 FROM pg_proc g WHERE g.pronamespace = 'tco'::regnamespace AND g.proname = m[1])
                   AND NOT EXISTS (SELECT 1 FROM pg_proc g WHERE g.pronamespace = 'tco'::regnamespace AND g.proname = m[1]
                                      AND has_function_privilege('tco_reader', g.oid, 'EXECUTE'))
                 ORDER BY 1),
          '{}', 'every tco function a reader''s function calls is executable by the reader');
SELECT is(array(SELECT DISTINCT v.oid::regclass::text || ' calls ' || f.oid::regprocedure::text
                  FROM pg_class v
                  JOIN pg_rewrite r ON r.ev_class = v.oid
                  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_proc'::regclass
                  JOIN pg_proc f ON f.oid = d.refobjid
                 WHERE v.relnamespace = 'tco'::regnamespace AND v.relkind = 'v'
                   AND has_table_privilege('tco_reader', v.oid, 'SELECT')
                   AND NOT has_function_privilege('tco_reader', f.oid, 'EXECUTE')
                 ORDER BY 1),
          '{}', 'every function a reader-visible view calls is executable by the reader');
SELECT is(pg_temp.as_role('tco_t_admin1', $q$SELECT length(tco.org_chart(1)) > 0$q$), 'true', 'tco.org_chart works for a reader');

-- 7b. Restores (README "Backup and restore"): every PL/pgSQL trigger
-- function takes restored rows as stored history, but those that only guard
-- UPDATE, DELETE and TRUNCATE (a restore inserts), keep identity sequences
-- ahead, or check the shape of a value, and the one that creates the
-- partitions of tco.bill_line a data-only restore loads (36_partition.sql);
-- and restore mode needs a role that bypasses row-level security.
SELECT is(array(SELECT p.proname::text FROM pg_proc p
                 WHERE p.pronamespace = 'tco'::regnamespace AND p.prorettype = 'trigger'::regtype
                   AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')
                   AND p.prosrc !~ '^\s*(DECLARE.*?)?BEGIN\s+IF tco\.restoring\(\) THEN'
                 ORDER BY 1),
          '{append_only,bill_line_cycle_create,config_check,r14_append_only,r14_bill_line_truncate_check,refuse_truncate,sync_identity}',
          'every other trigger function starts by recognizing a restore');
SELECT is(pg_temp.as_role('tco_t_ops', $q$SELECT set_config('row_security', 'off', true) || tco.restoring()::text$q$), 'offfalse',
          'row_security off does not make a tco_admin member a restorer');
SELECT is((SELECT set_config('row_security', 'off', true) || tco.restoring()::text), 'offtrue', 'a superuser with row_security off restores');
SET row_security = on;

-- 8. The settlement lock cannot be taken by a role with no rights: an
-- advisory lock on 1.2's key no longer blocks settlement, and the share-mode
-- function is not PUBLIC.
SELECT ok(NOT has_function_privilege('public', 'tco.settlement_lock_shared(tco.billing_cycle)', 'EXECUTE'),
          'tco.settlement_lock_shared is not executable by PUBLIC');
SELECT alike(pg_temp.as_role('tco_t_unmapped', $q$SELECT tco.settlement_lock_shared('2024-05')$q$), 'ERROR 42501%',
            'a reader cannot take the settlement lock');

-- 9. Alerts: the payload of a notification is the alert id and nothing
-- else; channels have unguessable names, readable by tco_admin only.
SELECT is((SELECT count(*) FROM tco.alert_channel WHERE channel !~ '^tco_alerts_(admin_)?[0-9a-f]{32}$'), 0::bigint,
          'every alert channel has an unguessable name');
SELECT alike(pg_temp.as_role('tco_t_admin1', 'SELECT count(*) FROM tco.alert_channel'), 'ERROR 42501%',
            'readers cannot list the channels');

SELECT * FROM finish();
ROLLBACK;
