-- Install guard: refuse to install into a schema tco that someone else prepared.
--
-- tco.control names `schema = tco`.  PostgreSQL 15 creates that schema when it
-- does not exist, but when it already exists it silently installs into it,
-- whoever owns it and whatever it holds.  A schema owner may drop or rename any
-- object in its schema, and objects planted there beforehand (tables, functions,
-- operators) could shadow or capture the extension's own.  So the install
-- refuses unless the schema is empty and owned by a superuser.  This file sorts
-- before every other part of the install script on purpose.
DO $guard$
DECLARE
    owner_name name;
    owner_super boolean;
    planted bigint;
BEGIN
    SELECT r.rolname, r.rolsuper INTO owner_name, owner_super
      FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
     WHERE n.nspname = 'tco';
    IF NOT owner_super THEN
        RAISE EXCEPTION 'schema tco already exists and is owned by role %, which is not a superuser', owner_name
            USING ERRCODE = '42P06',
                  HINT = 'Drop or rename the existing schema tco (after checking what it holds), then run CREATE EXTENSION tco again.';
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
