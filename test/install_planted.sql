-- Objects planted before CREATE EXTENSION never run (README "Security").
-- For every built-in function name that tco's functions call, and for the
-- names its install-time DO blocks call, better-matching look-alikes are
-- planted (a) in public and (b) in the schema of a btree_gist installed by
-- an ordinary role, plus look-alike operators; each records its call.  The
-- extension is installed next to them and used (settlement, payer, alerts,
-- org chart, invoices), and the record must stay empty.  (c) A prepared,
-- empty schema tco that grants CREATE to another role is refused.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS btree_gist;
SELECT plan(10);

-- The names to plant: built-ins called in tco's function bodies (read from
-- a first install), and those of the install script's DO blocks.
CREATE EXTENSION tco;
CREATE TEMP TABLE planted_names AS
SELECT DISTINCT m[1] AS name
  FROM pg_proc f, regexp_matches(f.prosrc, '([a-z_][a-z0-9_]*)\s*\(', 'g') m
 WHERE f.pronamespace = 'tco'::regnamespace
   AND EXISTS (SELECT 1 FROM pg_proc b WHERE b.pronamespace = 'pg_catalog'::regnamespace AND b.proname = m[1])
UNION
SELECT unnest(ARRAY['format', 'pg_get_serial_sequence', 'pg_extension_config_dump', 'quote_ident',
                    'string_agg', 'aclexplode', 'count', 'replace', 'lower', 'btrim', 'gen_random_uuid']);
DROP EXTENSION tco;
DROP SCHEMA tco;
DROP EXTENSION btree_gist;
SELECT cmp_ok((SELECT count(*) FROM planted_names), '>', 40::bigint, 'dozens of built-in names to plant look-alikes for');

CREATE TABLE public.hijack_log (what text);
GRANT INSERT ON public.hijack_log TO PUBLIC;
CREATE ROLE tco_t_mallory;
CREATE SCHEMA evil AUTHORIZATION tco_t_mallory;
CREATE EXTENSION btree_gist SCHEMA evil;   -- as if mallory had installed it (trusted)
-- look-alikes: for each name, overloads more specific than the built-ins
-- that take "any", anyelement or a castable type
DO $plant$
DECLARE
    n text;
    sig text;
    s text;
BEGIN
    FOR n IN SELECT name FROM pg_temp.planted_names LOOP
        FOREACH sig IN ARRAY ARRAY['text', 'name', 'text, name', 'name, text', 'text, text', 'text, text, text',
                                   'text, regclass', 'regclass, text', 'bigint', 'bigint, bigint', 'numeric',
                                   'text, bigint', 'bigint, text', 'timestamptz', 'oid', 'regclass', 'text, name, name',
                                   'unknown', 'text, unknown', 'aclitem[]', 'bigint, text, bigint'] LOOP
            FOREACH s IN ARRAY ARRAY['public', 'evil'] LOOP
                BEGIN
                    EXECUTE format($f$CREATE FUNCTION %I.%I(%s) RETURNS text LANGUAGE plpgsql AS $b$
                                      BEGIN INSERT INTO public.hijack_log VALUES (%L); RETURN NULL; END $b$$f$,
                                   s, n, sig, s || '.' || n || '(' || sig || ')');
                EXCEPTION WHEN OTHERS THEN NULL;  -- a signature a name cannot take
                END;
            END LOOP;
        END LOOP;
    END LOOP;
END
$plant$;
CREATE FUNCTION public.hijack_eq(anyelement, anyelement) RETURNS boolean LANGUAGE plpgsql AS $b$
    BEGIN INSERT INTO public.hijack_log VALUES ('operator'); RETURN false; END $b$;
CREATE FUNCTION public.hijack_eq2(name, text) RETURNS boolean LANGUAGE plpgsql AS $b$
    BEGIN INSERT INTO public.hijack_log VALUES ('operator name = text'); RETURN false; END $b$;
CREATE FUNCTION public.hijack_eq3(bigint, numeric) RETURNS boolean LANGUAGE plpgsql AS $b$
    BEGIN INSERT INTO public.hijack_log VALUES ('operator bigint = numeric'); RETURN false; END $b$;
CREATE FUNCTION public.hijack_cat(text, name) RETURNS text LANGUAGE plpgsql AS $b$
    BEGIN INSERT INTO public.hijack_log VALUES ('operator text || name'); RETURN NULL; END $b$;
CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = text, FUNCTION = public.hijack_eq2);
CREATE OPERATOR evil.= (LEFTARG = name, RIGHTARG = text, FUNCTION = public.hijack_eq2);
CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = numeric, FUNCTION = public.hijack_eq3);
CREATE OPERATOR evil.<> (LEFTARG = bigint, RIGHTARG = numeric, FUNCTION = public.hijack_eq3);
CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = name, FUNCTION = public.hijack_cat);
CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = name, FUNCTION = public.hijack_cat);
GRANT USAGE ON SCHEMA evil TO PUBLIC;
-- While the look-alikes exist, nothing of pgTAP runs (its own functions are
-- not protected against them): outcomes are kept in a temporary table with
-- schema-qualified calls only, and checked once the look-alikes are gone.
CREATE TEMP TABLE outcome (k text PRIMARY KEY, v text);
INSERT INTO pg_temp.outcome SELECT 'planted', pg_catalog.count(*)::text FROM pg_catalog.pg_proc
 WHERE pronamespace OPERATOR(pg_catalog.=) ANY (ARRAY['public'::pg_catalog.regnamespace, 'evil'::pg_catalog.regnamespace]::oid[])
   AND prosrc OPERATOR(pg_catalog.~~) '%hijack_log%';
CREATE FUNCTION pg_temp.attempt(k text, q text) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE q;
    INSERT INTO pg_temp.outcome VALUES (k, 'ok');
EXCEPTION WHEN OTHERS THEN
    INSERT INTO pg_temp.outcome VALUES (k, SQLSTATE OPERATOR(pg_catalog.||) ': ' OPERATOR(pg_catalog.||) SQLERRM);
END $$;

-- (c) a superuser's empty schema tco that grants CREATE to mallory
CREATE SCHEMA tco;
GRANT CREATE ON SCHEMA tco TO tco_t_mallory;
SELECT pg_temp.attempt('foreign create', 'CREATE EXTENSION tco');
REVOKE CREATE ON SCHEMA tco FROM tco_t_mallory;
ALTER DEFAULT PRIVILEGES IN SCHEMA tco GRANT ALL ON TABLES TO tco_t_mallory;
SELECT pg_temp.attempt('default privileges', 'CREATE EXTENSION tco');
ALTER DEFAULT PRIVILEGES IN SCHEMA tco REVOKE ALL ON TABLES FROM tco_t_mallory;
DROP SCHEMA tco;
-- the installing role's own default privileges do not reach tco's tables
ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO tco_t_mallory;
ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO tco_t_mallory;

-- (a) and (b): install with public and evil (btree_gist's schema) both on
-- the path of the install script, then use tco under a path with them first.
SET search_path = evil, public;
CREATE EXTENSION tco;
SET search_path = public, evil, pg_catalog;
SELECT tco.set_billing_timezone('Asia/Shanghai');
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme', true);
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES (1, 'admin', 1, 100), (2, 'member', 1, 100), (3, 'self', 1, 10);
SELECT tco.create_organization(1, 'Org');
SELECT tco.add_member(1, 2), tco.add_member(1, 3);
SELECT tco.establish_trusteeship(2, 1, '2023-01-01 00:00+08');
INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour');
SELECT tco.set_alert_threshold(1, 'cycle_spending', 5);
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
SELECT 2 + g % 2, 'cvm', timestamptz '2023-02-01 00:00+08' + g * interval '1 hour',
       timestamptz '2023-02-01 01:00+08' + g * interval '1 hour', 1.25
  FROM generate_series(0, 9) g;
SELECT tco.grant_coupon(3, 1, '2024-01-01');
SELECT tco.settle_cycle('2023-02');
SELECT tco.trusteeship_effective_payer(2, 'cvm', '2023-02-03 00:00+08'), tco.explain_payer(2, 'cvm', '2023-02-03 00:00+08');
SELECT tco.pay_statement(s.statement_id), tco.issue_invoice(s.statement_id) FROM tco.statement s;
SELECT tco.org_chart(1), tco.org_chart(1, 'mermaid');
SELECT * FROM tco.alert_channels();
SELECT count(*) FROM tco.settlement_by_payer;
-- what the look-alikes recorded; then they go, so that pgTAP's own calls
-- below are not captured by them
SET search_path = pg_catalog;
CREATE TEMP TABLE hijacked AS SELECT what FROM public.hijack_log;
DO $unplant$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p WHERE p.pronamespace IN ('public'::regnamespace, 'evil'::regnamespace)
                                          AND p.prosrc LIKE '%hijack_log%' LOOP
        EXECUTE format('DROP FUNCTION %s CASCADE', f);
    END LOOP;
END
$unplant$;
RESET search_path;
SHOW search_path \gset
SELECT cmp_ok((SELECT v::bigint FROM pg_temp.outcome WHERE k = 'planted'), '>', 500::bigint, 'hundreds of look-alikes were planted');
SELECT is((SELECT v FROM pg_temp.outcome WHERE k = 'foreign create'),
          '42P06: schema tco already exists and grants CREATE to other roles (tco_t_mallory CREATE)',
          'a prepared schema tco granting CREATE to another role is refused');
SELECT is((SELECT v FROM pg_temp.outcome WHERE k = 'default privileges'),
          '42P06: schema tco already exists and has default privileges set for objects created in it',
          'a prepared schema tco with default privileges for another role is refused');
SELECT is((SELECT count(*) FROM tco.statement), 2::bigint, 'tco works next to the look-alikes: two statements');
SELECT is((SELECT count(*) FROM tco.alert), 1::bigint, 'and an alert fired');
SELECT is((SELECT array_agg(DISTINCT what) FROM pg_temp.hijacked), NULL, 'no planted function or operator ever ran');
SELECT is(array(SELECT c.oid::regclass::text || ' ' || a.privilege_type
                  FROM pg_class c, aclexplode(c.relacl) a
                 WHERE c.relnamespace = 'tco'::regnamespace AND a.grantee = 'tco_t_mallory'::regrole),
          '{}', 'the installer''s default privileges granted mallory nothing on tco''s tables');
SELECT is(array(SELECT p.oid::regprocedure::text
                  FROM pg_proc p, aclexplode(p.proacl) a
                 WHERE p.pronamespace = 'tco'::regnamespace AND a.grantee = 'tco_t_mallory'::regrole),
          '{}', 'nor on its functions');
SELECT is(:'search_path'::text, '"$user", public', 'the install script''s search_path ended with it');

SELECT * FROM finish();
ROLLBACK;
