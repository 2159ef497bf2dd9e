-- Install guard: refuse to install into a schema tco that someone else prepared.
--
-- First of all, the install script resolves names in pg_catalog only.
-- CREATE EXTENSION runs it with search_path = tco, <schemas of the required
-- extensions> (btree_gist's schema may belong to anyone with CREATE on the
-- database), and PostgreSQL picks a better-matching overload from any schema
-- on the path: a planted public.format(text, name) would beat
-- pg_catalog.format(text, VARIADIC "any") and run as the installing
-- superuser.  Every object the script creates or uses from tco is
-- schema-qualified, so nothing needs more than pg_catalog; the setting ends
-- with the script: SET LOCAL inside CREATE EXTENSION lasts until the script
-- ends (a plain SET would outlive it).
-- README "Security" lists what this and the checks below protect against.
--
-- tco.control names `schema = tco`.  PostgreSQL 15 creates that schema when it
-- does not exist, but when it already exists it silently installs into it,
-- whoever owns it and whatever it holds.  A schema owner may drop or rename any
-- object in its schema, and objects planted there beforehand (tables, functions,
-- operators) could shadow or capture the extension's own.  So the install
-- refuses unless the schema is empty and owned by a superuser.  This file sorts
-- before every other part of the install script on purpose.
SET LOCAL search_path = pg_catalog, pg_temp;

DO $guard$
DECLARE
    owner_name name;
    owner_super boolean;
    owner_oid oid;
    acl aclitem[];
    foreign_grants text;
    planted bigint;
BEGIN
    SELECT r.rolname, r.rolsuper, r.oid, n.nspacl INTO owner_name, owner_super, owner_oid, acl
      FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
     WHERE n.nspname = 'tco';
    IF NOT owner_super THEN
        RAISE EXCEPTION 'schema tco already exists and is owned by role %, which is not a superuser', owner_name
            USING ERRCODE = '42P06',
                  HINT = 'Drop or rename the existing schema tco (after checking what it holds), then run CREATE EXTENSION tco again.';
    END IF;
    -- A superuser's empty schema is still refused when it grants CREATE to
    -- another role: that role could plant a better-matching overload of a
    -- tco function (say tco.require_arg(bigint, text) beside the polymorphic
    -- original) that the extension's own functions then call with their
    -- owner's rights.  (USAGE grants are harmless and are reset by
    -- 99_grants.sql: a schema left behind by DROP EXTENSION keeps those of
    -- tco_admin and tco_reader.)  Default privileges set up for the schema
    -- would hand the extension's future objects to another role the same way.
    SELECT pg_catalog.string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(g.rolname) END
                                 OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) a.privilege_type, ', ')
      INTO foreign_grants
      FROM pg_catalog.aclexplode(acl) a LEFT JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.grantee
     WHERE a.grantee OPERATOR(pg_catalog.<>) owner_oid AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE';
    IF foreign_grants IS NOT NULL THEN
        RAISE EXCEPTION 'schema tco already exists and grants CREATE to other roles (%)', foreign_grants
            USING ERRCODE = '42P06',
                  HINT = 'Drop the existing schema tco (or REVOKE CREATE ON SCHEMA tco FROM every role but its superuser owner), then run CREATE EXTENSION tco again.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_default_acl d
                WHERE d.defaclnamespace OPERATOR(pg_catalog.=) 'tco'::pg_catalog.regnamespace) THEN
        RAISE EXCEPTION 'schema tco already exists and has default privileges set for objects created in it'
            USING ERRCODE = '42P06',
                  HINT = 'Drop the existing schema tco (or remove its ALTER DEFAULT PRIVILEGES ... IN SCHEMA tco entries), then run CREATE EXTENSION tco again.';
    END IF;
    SELECT (SELECT count(*) FROM pg_catalog.pg_class   WHERE relnamespace = 'tco'::pg_catalog.regnamespace)
         + (SELECT count(*) FROM pg_catalog.pg_proc    WHERE pronamespace = 'tco'::pg_catalog.regnamespace)
         + (SELECT count(*) FROM pg_catalog.pg_type    WHERE typnamespace = 'tco'::pg_catalog.regnamespace)
         + (SELECT count(*) FROM pg_catalog.pg_operator WHERE oprnamespace = 'tco'::pg_catalog.regnamespace)
      INTO planted;
    IF planted > 0 THEN
        RAISE EXCEPTION 'schema tco already holds % object(s) that do not belong to extension tco', planted
            USING ERRCODE = '42P06',
                  HINT = 'Drop or rename the existing schema tco (after checking what it holds), then run CREATE EXTENSION tco again.';
    END IF;
END
$guard$;
