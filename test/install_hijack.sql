-- The install script cannot be hijacked by objects a user created beforehand
-- (DESIGN section 8): a prepared schema tco is refused, and functions,
-- operators and tables planted in public do not change what tco does.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION btree_gist;
SELECT plan(12);

-- 1. a schema tco owned by an ordinary role, with a planted table
CREATE ROLE tco_t_mallory;
CREATE SCHEMA tco AUTHORIZATION tco_t_mallory;
CREATE TABLE tco.account (account_id bigint, name text);
ALTER TABLE tco.account OWNER TO tco_t_mallory;
SELECT throws_ok('CREATE EXTENSION tco', '42P06',
                 'schema tco already exists and is owned by role tco_t_mallory, which is not a superuser',
                 'a schema tco owned by an ordinary role is refused');

-- 2. a superuser's schema tco that already holds objects
DROP SCHEMA tco CASCADE;
CREATE SCHEMA tco;
CREATE FUNCTION tco.lower(text) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;
SELECT throws_ok('CREATE EXTENSION tco', '42P06',
                 'schema tco already holds 1 object(s) that do not belong to extension tco',
                 'a schema tco that already holds objects is refused');
DROP SCHEMA tco CASCADE;

-- 3. look-alikes in public, searched before pg_catalog
CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql AS $$ SELECT 'pwned' $$;
CREATE FUNCTION public.btrim(text) RETURNS text LANGUAGE sql AS $$ SELECT 'pwned' $$;
CREATE FUNCTION public.replace(text, text, text) RETURNS text LANGUAGE sql AS $$ SELECT 'pwned' $$;
CREATE FUNCTION public.always_true(bigint, bigint) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.always_true);
CREATE FUNCTION public.text_always_true(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.text_always_true);
CREATE TABLE public.member (account_id bigint, org_id bigint, unit_id bigint, policy text);
CREATE TABLE public.organization (org_id bigint, name text, admin_account_id bigint);
-- Everything below runs with the look-alikes first on the search path; results
-- are recorded and checked afterwards with the normal search path, since
-- pgTAP's own functions are not protected against them.
CREATE TEMP TABLE r (k text PRIMARY KEY, v text);
CREATE FUNCTION pg_temp.sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
SET search_path = public, pg_catalog;
INSERT INTO pg_temp.r VALUES ('install', pg_temp.sqlstate_of('CREATE EXTENSION tco'));
INSERT INTO tco.account (account_id, name) VALUES (1, 'admin'), (2, 'dev'), (3, 'other');
INSERT INTO pg_temp.r VALUES ('create_organization', pg_temp.sqlstate_of($$SELECT tco.create_organization(1, 'Org')$$));
INSERT INTO pg_temp.r VALUES ('add_member', pg_temp.sqlstate_of($$SELECT tco.add_member((SELECT org_id FROM tco.organization), 2)$$));
INSERT INTO pg_temp.r VALUES ('blank entity', pg_temp.sqlstate_of($$INSERT INTO tco.entity (name) VALUES ('   ')$$));
INSERT INTO pg_temp.r VALUES ('unknown org', pg_temp.sqlstate_of($$SELECT tco.add_member(999, 3)$$));
INSERT INTO tco.service_policy (policy_id, name, effect, actions) VALUES (1, 'no run', 'deny', '{CVM:Run*}');
SELECT tco.attach_policy(1, 'account', 2);
INSERT INTO pg_temp.r VALUES ('deny run', tco.policy_allows(2, 'cvm:runinstances')::text);
INSERT INTO pg_temp.r VALUES ('allow cos', tco.policy_allows(2, 'cos:GetObject')::text);
INSERT INTO pg_temp.r VALUES ('outside', tco.policy_allows(3, 'cvm:RunInstances')::text);
RESET search_path;

SELECT is((SELECT v FROM pg_temp.r WHERE k = 'install'), 'ok', 'CREATE EXTENSION succeeds next to the look-alikes');
SELECT is((SELECT v FROM pg_temp.r WHERE k = 'create_organization'), 'ok', 'create_organization works');
SELECT is((SELECT v FROM pg_temp.r WHERE k = 'add_member'), 'ok', 'add_member works');
SELECT is((SELECT count(*) FROM public.member), 0::bigint, 'public.member was not written');
SELECT is((SELECT array_agg(account_id ORDER BY account_id) FROM tco.member), '{1,2}'::bigint[], 'tco.member holds the members');
SELECT is((SELECT v FROM pg_temp.r WHERE k = 'blank entity'), '23514', 'the btrim CHECK still uses pg_catalog.btrim');
SELECT is((SELECT v FROM pg_temp.r WHERE k = 'unknown org'), '23503', 'an unknown organization is still refused (no always-true =)');
SELECT is((SELECT v FROM pg_temp.r WHERE k = 'deny run'), 'false', 'policy matching still lower-cases with pg_catalog.lower');
SELECT is((SELECT v FROM pg_temp.r WHERE k = 'allow cos'), 'true', 'and = on text is not the always-true look-alike');
SELECT is((SELECT v FROM pg_temp.r WHERE k = 'outside'), 'true', 'an account outside the organization is not hit by = on bigint');

SELECT * FROM finish();
ROLLBACK;
