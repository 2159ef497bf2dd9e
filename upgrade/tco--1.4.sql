-- tco 1.4 install script, frozen as released (generated from src/sql at commit e426167): do not edit
\echo Use "CREATE EXTENSION tco" to load this file. \quit

-- ==== src/sql/00_guard.sql
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

-- ==== src/sql/00_schema.sql
-- Schema tco: types shared by every part and the installation's configuration.

COMMENT ON SCHEMA tco IS 'tco: cloud organizations, financial trusteeship, payers and billing-cycle settlement';

CREATE TYPE tco.granularity AS ENUM ('minute', 'hour', 'day', 'week', 'month');
COMMENT ON TYPE tco.granularity IS 'Billing granularity of a product; boundaries are taken in the billing time zone, weeks are ISO weeks starting Monday 00:00.';

CREATE TYPE tco.settlement_policy AS ENUM ('self_pay', 'trusteeship');
COMMENT ON TYPE tco.settlement_policy IS 'self_pay: the member pays its own bills; trusteeship: its management account pays (financial trusteeship / unified payment).';

CREATE TYPE tco.charge_type AS ENUM ('prepaid', 'postpaid');
COMMENT ON TYPE tco.charge_type IS 'prepaid: an order paid ahead; postpaid: pay-as-you-go usage.';

-- Cache invalidation: a statement-level trigger on every table a C cache reads
-- (see src/cache.c for the rule).
CREATE FUNCTION tco.invalidate_cache() RETURNS trigger
    AS 'MODULE_PATHNAME', 'tco_invalidate_cache' LANGUAGE C;
COMMENT ON FUNCTION tco.invalidate_cache() IS 'Statement-level trigger: invalidates the per-backend caches built from the table, in this and every other session.';

-- Whether this statement restores stored data (src/guard.c, README "Backup
-- and restore"): row_security is off, as pg_dump and pg_restore set it, and
-- the session's role is a superuser or has BYPASSRLS.  tco's triggers then
-- take rows as stored history.
CREATE FUNCTION tco.restoring() RETURNS boolean
    AS 'MODULE_PATHNAME', 'tco_restoring' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION tco.restoring() IS 'True while stored data is being restored: row_security = off (as pg_dump and pg_restore set it) and the session''s role is a superuser or has BYPASSRLS. tco''s triggers then neither derive rows nor re-judge past actions.';

-- The installation's configuration: at most one row; no row means every default.
CREATE TABLE tco.config (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    billing_timezone text NOT NULL DEFAULT 'UTC',
    legacy_cutover   timestamptz NOT NULL DEFAULT '2022-08-01 12:00:00+08',
    billing_currency text NOT NULL DEFAULT 'USD' CONSTRAINT config_billing_currency CHECK (billing_currency ~ '^[A-Z]{3}$'),
    provider_name    text NOT NULL DEFAULT 'tco' CONSTRAINT config_provider_name CHECK (btrim(provider_name) <> '')
);
COMMENT ON TABLE tco.config IS 'Installation configuration (one row at most; absent means defaults).';
COMMENT ON COLUMN tco.config.billing_timezone IS 'Time zone in which every hour, day, week and month boundary is taken (default UTC).';
COMMENT ON COLUMN tco.config.billing_currency IS 'ISO 4217 code of the currency every amount is in (default USD): the BillingCurrency of the FOCUS export.';
COMMENT ON COLUMN tco.config.provider_name IS 'Name of the provider that bills (default tco): ProviderName, PublisherName and, for uninvoiced lines, InvoiceIssuerName of the FOCUS export.';
COMMENT ON COLUMN tco.config.legacy_cutover IS 'Trusteeships established before this instant are legacy: their members use the manager''s contract discount (R8).';
SELECT pg_catalog.pg_extension_config_dump('tco.config', '');

CREATE FUNCTION tco.config_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Region names only: a name with a digit is a POSIX offset or rule, whose
    -- sign is the opposite of ISO 8601 ('+08', 'UTC+8', 'Etc/GMT+8' are UTC-8).
    IF NEW.billing_timezone ~ '[0-9]' OR NEW.billing_timezone ~ '^[+-]' THEN
        RAISE EXCEPTION 'billing time zone "%" is an offset or a POSIX rule, not a region name', NEW.billing_timezone
            USING ERRCODE = '22023',
                  DETAIL = 'Numeric and POSIX-style zone names count offsets west of Greenwich: ''+08'' means UTC-8.',
                  HINT = 'Use a region name of pg_timezone_names, such as ''Asia/Shanghai'' or ''UTC''.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names WHERE name = NEW.billing_timezone) THEN
        RAISE EXCEPTION 'billing time zone "%" does not exist', NEW.billing_timezone
            USING ERRCODE = '22023',
                  HINT = 'Use a name from pg_timezone_names, such as ''UTC'' or ''Asia/Shanghai''.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER config_check BEFORE INSERT OR UPDATE ON tco.config
    FOR EACH ROW EXECUTE FUNCTION tco.config_check();
CREATE TRIGGER config_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tco.config
    FOR EACH STATEMENT EXECUTE FUNCTION tco.invalidate_cache();

CREATE FUNCTION tco.set_billing_timezone(zone text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF zone IS NULL THEN
        RAISE EXCEPTION 'billing time zone must not be NULL'
            USING ERRCODE = '22004', HINT = 'Pass a zone name such as ''UTC'' or ''Asia/Shanghai''.';
    END IF;
    INSERT INTO tco.config (billing_timezone) VALUES (zone)
        ON CONFLICT (singleton) DO UPDATE SET billing_timezone = EXCLUDED.billing_timezone;
    RETURN zone;
END $$;
COMMENT ON FUNCTION tco.set_billing_timezone(text) IS 'Sets the installation''s billing time zone (validated against pg_timezone_names).';

-- SECURITY DEFINER: whoever may call it (tco_reader may) reads the zone
-- without a privilege on tco.config, as the C functions do (src/config.c).
CREATE FUNCTION tco.billing_timezone() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT billing_timezone FROM tco.config), 'UTC')
$$;
COMMENT ON FUNCTION tco.billing_timezone() IS 'The installation''s billing time zone (default UTC).';

-- The billing currency and the provider's name (the FOCUS export reads them;
-- SECURITY DEFINER like tco.billing_timezone, so a reader granted the export
-- needs no privilege on tco.config).
CREATE FUNCTION tco.billing_currency() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT billing_currency FROM tco.config), 'USD')
$$;
COMMENT ON FUNCTION tco.billing_currency() IS 'The installation''s billing currency, ISO 4217 (tco.config.billing_currency; default USD).';
CREATE FUNCTION tco.provider_name() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT provider_name FROM tco.config), 'tco')
$$;
COMMENT ON FUNCTION tco.provider_name() IS 'The name of the provider that bills (tco.config.provider_name; default tco).';

-- ==== src/sql/10_cycle.sql
-- The billing cycle type (src/cycle.c) and billing time (src/billing_time.c):
-- calendar months, cycle ranges and granularity boundaries in the billing time zone.

CREATE TYPE tco.billing_cycle;

CREATE FUNCTION tco.billing_cycle_in(cstring) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_out(tco.billing_cycle) RETURNS cstring
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_recv(internal) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_send(tco.billing_cycle) RETURNS bytea
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE tco.billing_cycle (
    INPUT = tco.billing_cycle_in,
    OUTPUT = tco.billing_cycle_out,
    RECEIVE = tco.billing_cycle_recv,
    SEND = tco.billing_cycle_send,
    INTERNALLENGTH = 4,
    PASSEDBYVALUE,
    ALIGNMENT = int4,
    STORAGE = plain
);
COMMENT ON TYPE tco.billing_cycle IS 'A billing cycle: a calendar month in the billing time zone, written YYYY-MM (0001-01 to 9999-12); cycle + n adds n months, cycle - cycle counts months.';
COMMENT ON FUNCTION tco.billing_cycle_in(cstring) IS 'Input of tco.billing_cycle: exactly YYYY-MM, surrounding whitespace ignored.';
COMMENT ON FUNCTION tco.billing_cycle_out(tco.billing_cycle) IS 'Output of tco.billing_cycle as YYYY-MM.';
COMMENT ON FUNCTION tco.billing_cycle_recv(internal) IS 'Binary input of tco.billing_cycle: a version byte (1), then the month number as int4.';
COMMENT ON FUNCTION tco.billing_cycle_send(tco.billing_cycle) IS 'Binary output of tco.billing_cycle: a version byte (1), then year * 12 + month - 1 as int4.';

-- Comparison.
CREATE FUNCTION tco.billing_cycle_cmp(tco.billing_cycle, tco.billing_cycle) RETURNS int4
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_sortsupport(internal) RETURNS void
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_lt(tco.billing_cycle, tco.billing_cycle) RETURNS boolean
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tco.billing_cycle_le(tco.billing_cycle, tco.billing_cycle) RETURNS boolean
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tco.billing_cycle_eq(tco.billing_cycle, tco.billing_cycle) RETURNS boolean
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tco.billing_cycle_ne(tco.billing_cycle, tco.billing_cycle) RETURNS boolean
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tco.billing_cycle_ge(tco.billing_cycle, tco.billing_cycle) RETURNS boolean
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tco.billing_cycle_gt(tco.billing_cycle, tco.billing_cycle) RETURNS boolean
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tco.billing_cycle_hash(tco.billing_cycle) RETURNS int4
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_hash_extended(tco.billing_cycle, int8) RETURNS int8
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tco.billing_cycle_cmp(tco.billing_cycle, tco.billing_cycle) IS 'Btree comparison of billing cycles: -1, 0 or 1.';
COMMENT ON FUNCTION tco.billing_cycle_sortsupport(internal) IS 'Btree sort support for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_lt(tco.billing_cycle, tco.billing_cycle) IS 'Implementation of < for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_le(tco.billing_cycle, tco.billing_cycle) IS 'Implementation of <= for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_eq(tco.billing_cycle, tco.billing_cycle) IS 'Implementation of = for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_ne(tco.billing_cycle, tco.billing_cycle) IS 'Implementation of <> for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_ge(tco.billing_cycle, tco.billing_cycle) IS 'Implementation of >= for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_gt(tco.billing_cycle, tco.billing_cycle) IS 'Implementation of > for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_hash(tco.billing_cycle) IS 'Hash of a billing cycle (hash joins, hash aggregation, hash indexes).';
COMMENT ON FUNCTION tco.billing_cycle_hash_extended(tco.billing_cycle, int8) IS 'Seeded 64-bit hash of a billing cycle (hash partitioning).';

CREATE OPERATOR tco.< (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_lt,
    COMMUTATOR = OPERATOR(tco.>), NEGATOR = OPERATOR(tco.>=),
    RESTRICT = scalarltsel, JOIN = scalarltjoinsel
);
CREATE OPERATOR tco.<= (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_le,
    COMMUTATOR = OPERATOR(tco.>=), NEGATOR = OPERATOR(tco.>),
    RESTRICT = scalarlesel, JOIN = scalarlejoinsel
);
CREATE OPERATOR tco.= (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_eq,
    COMMUTATOR = OPERATOR(tco.=), NEGATOR = OPERATOR(tco.<>),
    RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES
);
CREATE OPERATOR tco.<> (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_ne,
    COMMUTATOR = OPERATOR(tco.<>), NEGATOR = OPERATOR(tco.=),
    RESTRICT = neqsel, JOIN = neqjoinsel
);
CREATE OPERATOR tco.>= (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_ge,
    COMMUTATOR = OPERATOR(tco.<=), NEGATOR = OPERATOR(tco.<),
    RESTRICT = scalargesel, JOIN = scalargejoinsel
);
CREATE OPERATOR tco.> (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_gt,
    COMMUTATOR = OPERATOR(tco.<), NEGATOR = OPERATOR(tco.<=),
    RESTRICT = scalargtsel, JOIN = scalargtjoinsel
);

CREATE OPERATOR CLASS tco.billing_cycle_ops
    DEFAULT FOR TYPE tco.billing_cycle USING btree AS
        OPERATOR 1 tco.<,
        OPERATOR 2 tco.<=,
        OPERATOR 3 tco.=,
        OPERATOR 4 tco.>=,
        OPERATOR 5 tco.>,
        FUNCTION 1 tco.billing_cycle_cmp(tco.billing_cycle, tco.billing_cycle),
        FUNCTION 2 tco.billing_cycle_sortsupport(internal),
        FUNCTION 4 pg_catalog.btequalimage(oid);
COMMENT ON OPERATOR CLASS tco.billing_cycle_ops USING btree IS 'Chronological order of billing cycles.';

CREATE OPERATOR CLASS tco.billing_cycle_ops
    DEFAULT FOR TYPE tco.billing_cycle USING hash AS
        OPERATOR 1 tco.=,
        FUNCTION 1 tco.billing_cycle_hash(tco.billing_cycle),
        FUNCTION 2 tco.billing_cycle_hash_extended(tco.billing_cycle, int8);
COMMENT ON OPERATOR CLASS tco.billing_cycle_ops USING hash IS 'Hashing of billing cycles.';

-- Arithmetic in months.
CREATE FUNCTION tco.billing_cycle_pl_int4(tco.billing_cycle, int4) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_int4_pl(int4, tco.billing_cycle) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_mi_int4(tco.billing_cycle, int4) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_mi(tco.billing_cycle, tco.billing_cycle) RETURNS int4
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tco.billing_cycle_pl_int4(tco.billing_cycle, int4) IS 'cycle + n: the cycle n months later (error 22008 outside 0001-01 to 9999-12).';
COMMENT ON FUNCTION tco.billing_cycle_int4_pl(int4, tco.billing_cycle) IS 'n + cycle: the cycle n months later (error 22008 outside 0001-01 to 9999-12).';
COMMENT ON FUNCTION tco.billing_cycle_mi_int4(tco.billing_cycle, int4) IS 'cycle - n: the cycle n months earlier (error 22008 outside 0001-01 to 9999-12).';
COMMENT ON FUNCTION tco.billing_cycle_mi(tco.billing_cycle, tco.billing_cycle) IS 'a - b: the number of months from cycle b to cycle a.';

CREATE OPERATOR tco.+ (
    LEFTARG = tco.billing_cycle, RIGHTARG = int4, FUNCTION = tco.billing_cycle_pl_int4,
    COMMUTATOR = OPERATOR(tco.+)
);
CREATE OPERATOR tco.+ (
    LEFTARG = int4, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_int4_pl,
    COMMUTATOR = OPERATOR(tco.+)
);
CREATE OPERATOR tco.- (
    LEFTARG = tco.billing_cycle, RIGHTARG = int4, FUNCTION = tco.billing_cycle_mi_int4
);
CREATE OPERATOR tco.- (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_mi
);

-- Conversions.
CREATE FUNCTION tco.billing_cycle(date) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME', 'billing_cycle_from_date' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.cycle_start_date(tco.billing_cycle) RETURNS date
    AS 'MODULE_PATHNAME', 'billing_cycle_start_date' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.cycle_end_date(tco.billing_cycle) RETURNS date
    AS 'MODULE_PATHNAME', 'billing_cycle_end_date' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tco.billing_cycle(date) IS 'The billing cycle (calendar month) containing a date; infinite dates are an error.';
COMMENT ON FUNCTION tco.cycle_start_date(tco.billing_cycle) IS 'The first day of a billing cycle.';
COMMENT ON FUNCTION tco.cycle_end_date(tco.billing_cycle) IS 'The last day of a billing cycle.';

CREATE CAST (text AS tco.billing_cycle) WITH INOUT AS ASSIGNMENT;
-- Implicit to text, so that what BI tools and drivers send works without tco
-- on the search_path (DESIGN section 6): `cycle = '2023-02'`, ranges, IN
-- lists and text parameters compare as text, and the text form YYYY-MM
-- orders exactly as the cycles do (years are four digits).  With tco on the
-- path, a literal still resolves to the type's own operators (an unknown
-- literal takes the other operand's type first).  README "BI tools".
CREATE CAST (tco.billing_cycle AS text) WITH INOUT AS IMPLICIT;
CREATE CAST (date AS tco.billing_cycle) WITH FUNCTION tco.billing_cycle(date);
CREATE CAST (tco.billing_cycle AS date) WITH FUNCTION tco.cycle_start_date(tco.billing_cycle);
COMMENT ON CAST (text AS tco.billing_cycle) IS 'Parses YYYY-MM.';
COMMENT ON CAST (tco.billing_cycle AS text) IS 'Formats as YYYY-MM; implicit, so a cycle compares with text literals and parameters under any search_path.';
COMMENT ON CAST (date AS tco.billing_cycle) IS 'The calendar month containing the date.';
COMMENT ON CAST (tco.billing_cycle AS date) IS 'The first day of the month.';

-- Billing time: cycles and boundaries of instants in the billing time zone
-- (tco.set_billing_timezone) or an explicit one.  STABLE: they read tco.config.
CREATE FUNCTION tco.cycle_of(timestamptz) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME', 'tco_cycle_of_billing_tz' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.cycle_of(timestamptz, zone text) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME', 'tco_cycle_of_zone' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.cycle_range(tco.billing_cycle) RETURNS tstzrange
    AS 'MODULE_PATHNAME', 'tco_cycle_range_billing_tz' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.cycle_range(tco.billing_cycle, zone text) RETURNS tstzrange
    AS 'MODULE_PATHNAME', 'tco_cycle_range_zone' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.granularity_trunc(tco.granularity, timestamptz) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'tco_granularity_trunc' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.granularity_ceil(tco.granularity, timestamptz) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'tco_granularity_ceil' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tco.cycle_of(timestamptz) IS 'The billing cycle containing an instant, in the billing time zone.';
COMMENT ON FUNCTION tco.cycle_of(timestamptz, text) IS 'The billing cycle containing an instant, in the given time zone (error 22023 if unknown).';
COMMENT ON FUNCTION tco.cycle_range(tco.billing_cycle) IS 'The instants of a billing cycle in the billing time zone: [local midnight of day 1, local midnight of day 1 of the next month).';
COMMENT ON FUNCTION tco.cycle_range(tco.billing_cycle, text) IS 'The instants of a billing cycle in the given time zone (error 22023 if unknown).';
COMMENT ON FUNCTION tco.granularity_trunc(tco.granularity, timestamptz) IS 'Start of the minute, hour, day, ISO week (Monday) or month containing an instant, in the billing time zone.';
COMMENT ON FUNCTION tco.granularity_ceil(tco.granularity, timestamptz) IS 'First minute, hour, day, ISO week or month boundary at or after an instant, in the billing time zone: where a payer switch takes effect (rule R6).';

-- ==== src/sql/20_org.sql
-- Organizations, units and members (DESIGN sections 1 and 6).
--
-- Every rule is enforced by constraints and triggers on the tables, so it holds
-- for direct INSERT/UPDATE/DELETE as well as through the functions, which are
-- thin conveniences with argument checks.  Errors: see README "Error codes".

CREATE TABLE tco.entity (
    entity_id  bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CHECK (btrim(name) <> ''),
    verified   boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tco.entity IS 'A legal (real-name) identity: an enterprise or a person.';
COMMENT ON COLUMN tco.entity.verified IS 'Real-name verification completed; trusteeship requires a verified common entity (R2).';

CREATE TABLE tco.account (
    account_id   bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name         text NOT NULL DEFAULT '',
    entity_id    bigint REFERENCES tco.entity ON DELETE RESTRICT,
    balance      numeric(20,2) NOT NULL DEFAULT 0,
    credit_limit numeric(20,2) NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT account_balance_within_credit CHECK (balance + credit_limit >= 0)
);
COMMENT ON TABLE tco.account IS 'A cloud account (UIN/UID) with a cash balance and a credit limit.';
COMMENT ON COLUMN tco.account.entity_id IS 'The entity the account is verified as (NULL: not verified).';
COMMENT ON COLUMN tco.account.balance IS 'Cash balance; may go negative down to -credit_limit.';

CREATE TABLE tco.organization (
    org_id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name             text NOT NULL CHECK (btrim(name) <> ''),
    admin_account_id bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT organization_one_per_admin UNIQUE (admin_account_id)
);
COMMENT ON TABLE tco.organization IS 'A group of accounts run by one admin (management) account; creating one creates its root unit and makes the admin a member.';

CREATE TABLE tco.org_unit (
    unit_id        bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    org_id         bigint NOT NULL REFERENCES tco.organization ON DELETE CASCADE,
    parent_unit_id bigint,
    name           text NOT NULL CHECK (btrim(name) <> ''),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT org_unit_id_org UNIQUE (unit_id, org_id),
    CONSTRAINT org_unit_parent_same_org FOREIGN KEY (parent_unit_id, org_id)
        REFERENCES tco.org_unit (unit_id, org_id),
    CONSTRAINT org_unit_not_own_parent CHECK (parent_unit_id <> unit_id)
);
CREATE UNIQUE INDEX org_unit_one_root ON tco.org_unit (org_id) WHERE parent_unit_id IS NULL;
CREATE INDEX org_unit_parent ON tco.org_unit (parent_unit_id);
COMMENT ON TABLE tco.org_unit IS 'An organizational unit (department); the units of an organization form one tree under its root unit.';
COMMENT ON COLUMN tco.org_unit.parent_unit_id IS 'Parent unit in the same organization; NULL only for the root unit.';

CREATE TABLE tco.member (
    account_id bigint PRIMARY KEY REFERENCES tco.account ON DELETE RESTRICT,
    org_id     bigint NOT NULL REFERENCES tco.organization ON DELETE CASCADE,
    unit_id    bigint NOT NULL,
    policy     tco.settlement_policy NOT NULL DEFAULT 'self_pay',
    joined_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT member_unit_same_org FOREIGN KEY (unit_id, org_id)
        REFERENCES tco.org_unit (unit_id, org_id)
);
CREATE INDEX member_org_unit ON tco.member (org_id, unit_id);
COMMENT ON TABLE tco.member IS 'Membership of an account in an organization (at most one at a time), placed in one unit. unit_id defaults to the root unit.';
COMMENT ON COLUMN tco.member.policy IS 'Settlement policy: self_pay, or trusteeship while a trusteeship to a management account is active.';

CREATE TABLE tco.member_history (
    event_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL,
    org_id     bigint NOT NULL,
    unit_id    bigint,
    policy     tco.settlement_policy,
    event      text NOT NULL CHECK (event IN ('joined', 'moved', 'policy_changed', 'left')),
    at         timestamptz NOT NULL DEFAULT now(),
    by_role    name NOT NULL DEFAULT current_user
);
CREATE INDEX member_history_account ON tco.member_history (account_id, at);
COMMENT ON TABLE tco.member_history IS 'Append-only history of memberships: joins, moves between units, policy changes, departures (R14).';

CREATE TABLE tco.invitation (
    invitation_id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    org_id        bigint NOT NULL REFERENCES tco.organization ON DELETE CASCADE,
    account_id    bigint NOT NULL REFERENCES tco.account ON DELETE CASCADE,
    unit_id       bigint,
    policy        tco.settlement_policy NOT NULL DEFAULT 'self_pay',
    invited_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL DEFAULT now() + interval '7 days',
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'accepted', 'declined', 'cancelled')),
    responded_at  timestamptz,
    CONSTRAINT invitation_unit_same_org FOREIGN KEY (unit_id, org_id)
        REFERENCES tco.org_unit (unit_id, org_id) ON DELETE SET NULL (unit_id),
    CONSTRAINT invitation_expiry_after_invite CHECK (expires_at > invited_at),
    CONSTRAINT invitation_responded CHECK ((status = 'pending') = (responded_at IS NULL))
);
CREATE UNIQUE INDEX invitation_one_pending ON tco.invitation (org_id, account_id) WHERE status = 'pending';
COMMENT ON TABLE tco.invitation IS 'Invitations of accounts to join an organization; a pending invitation past expires_at is expired and can no longer be accepted.';

SELECT pg_catalog.pg_extension_config_dump('tco.entity', '');
SELECT pg_catalog.pg_extension_config_dump('tco.account', '');
SELECT pg_catalog.pg_extension_config_dump('tco.organization', '');
SELECT pg_catalog.pg_extension_config_dump('tco.org_unit', '');
SELECT pg_catalog.pg_extension_config_dump('tco.member', '');
SELECT pg_catalog.pg_extension_config_dump('tco.member_history', '');
SELECT pg_catalog.pg_extension_config_dump('tco.invitation', '');

-- ---------------------------------------------------------------------------
-- Shared checks

-- Raise 22004 when a required argument is NULL.
CREATE FUNCTION tco.require_arg(value anyelement, arg_name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION 'argument "%" must not be NULL', arg_name
            USING ERRCODE = '22004', HINT = 'Pass a value for every required argument.';
    END IF;
END $$;

-- Raise 23503 when an id does not exist in its table.
CREATE FUNCTION tco.require_exists(present boolean, what text, id bigint) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT present THEN
        RAISE EXCEPTION '% % does not exist', what, id
            USING ERRCODE = '23503', HINT = format('Check the %s id: it must exist before it is referenced.', what);
    END IF;
END $$;

-- Raise 22023 on an empty or blank name.
CREATE FUNCTION tco.require_name(value text, arg_name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(value, arg_name);
    IF btrim(value) = '' THEN
        RAISE EXCEPTION 'argument "%" must not be empty', arg_name
            USING ERRCODE = '22023', HINT = 'Give a name with at least one visible character.';
    END IF;
END $$;

-- Unit tree changes of one organization are serialized on the organization's
-- row, so that two concurrent moves cannot build a cycle between them.
CREATE FUNCTION tco.lock_organization(p_org_id bigint) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT 1 FROM tco.organization WHERE org_id = p_org_id FOR NO KEY UPDATE;
$$;

-- ---------------------------------------------------------------------------
-- Triggers

-- A new organization gets its root unit (named after it) and its admin as a member.
CREATE FUNCTION tco.organization_created() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    root_id bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    INSERT INTO tco.org_unit (org_id, parent_unit_id, name)
        VALUES (NEW.org_id, NULL, NEW.name) RETURNING unit_id INTO root_id;
    INSERT INTO tco.member (account_id, org_id, unit_id, policy)
        VALUES (NEW.admin_account_id, NEW.org_id, root_id, 'self_pay');
    RETURN NULL;
END $$;
CREATE TRIGGER organization_created AFTER INSERT ON tco.organization
    FOR EACH ROW EXECUTE FUNCTION tco.organization_created();

-- The admin must be a member of its own organization.
CREATE FUNCTION tco.organization_admin_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.admin_account_id IS DISTINCT FROM OLD.admin_account_id
       AND NOT EXISTS (SELECT 1 FROM tco.member
                       WHERE account_id = NEW.admin_account_id AND org_id = NEW.org_id) THEN
        RAISE EXCEPTION 'account % cannot become admin of organization %: it is not a member of it',
                NEW.admin_account_id, NEW.org_id
            USING ERRCODE = 'TC014', HINT = 'Add the account to the organization first with tco.add_member().';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER organization_admin_check BEFORE UPDATE OF admin_account_id ON tco.organization
    FOR EACH ROW EXECUTE FUNCTION tco.organization_admin_check();

-- An organization can be deleted only once its only member is its admin.
CREATE FUNCTION tco.organization_delete_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    SELECT count(*) INTO n FROM tco.member
        WHERE org_id = OLD.org_id AND account_id <> OLD.admin_account_id;
    IF n > 0 THEN
        RAISE EXCEPTION 'organization % still has % member(s) besides its admin', OLD.org_id, n
            USING ERRCODE = '2BP01', HINT = 'Remove the members with tco.remove_member() first.';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER organization_delete_check BEFORE DELETE ON tco.organization
    FOR EACH ROW EXECUTE FUNCTION tco.organization_delete_check();

-- Unit tree: parent in the same organization, one root, no cycles.
CREATE FUNCTION tco.org_unit_tree_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parent_org bigint;
    cursor_id  bigint;
    depth      int := 0;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.org_id <> OLD.org_id THEN
        RAISE EXCEPTION 'unit % cannot move from organization % to organization %', OLD.unit_id, OLD.org_id, NEW.org_id
            USING ERRCODE = 'TC011', HINT = 'Create a unit in the other organization instead.';
    END IF;
    PERFORM tco.lock_organization(NEW.org_id);
    IF NEW.parent_unit_id IS NULL THEN
        IF TG_OP = 'UPDATE' AND OLD.parent_unit_id IS NULL THEN
            RETURN NEW;
        END IF;
        IF EXISTS (SELECT 1 FROM tco.org_unit WHERE org_id = NEW.org_id AND parent_unit_id IS NULL
                   AND unit_id <> NEW.unit_id) THEN
            RAISE EXCEPTION 'organization % already has a root unit; unit % needs a parent', NEW.org_id, NEW.unit_id
                USING ERRCODE = 'TC013', HINT = 'Give the unit a parent_unit_id in the same organization.';
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.parent_unit_id IS NULL THEN
        RAISE EXCEPTION 'root unit % of organization % cannot be moved under unit %', NEW.unit_id, NEW.org_id, NEW.parent_unit_id
            USING ERRCODE = 'TC013', HINT = 'The root unit stays the root; move its children instead.';
    END IF;
    SELECT org_id INTO parent_org FROM tco.org_unit WHERE unit_id = NEW.parent_unit_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'parent unit % of unit % does not exist', NEW.parent_unit_id, NEW.unit_id
            USING ERRCODE = '23503', HINT = 'Check the parent unit id.';
    ELSIF parent_org <> NEW.org_id THEN
        RAISE EXCEPTION 'parent unit % belongs to organization %, not to organization % of unit %',
                NEW.parent_unit_id, parent_org, NEW.org_id, NEW.unit_id
            USING ERRCODE = 'TC011', HINT = 'Choose a parent unit in the same organization.';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.parent_unit_id IS DISTINCT FROM OLD.parent_unit_id THEN
        cursor_id := NEW.parent_unit_id;
        WHILE cursor_id IS NOT NULL LOOP
            IF cursor_id = NEW.unit_id THEN
                RAISE EXCEPTION 'moving unit % under unit % would make a cycle in the unit tree', NEW.unit_id, NEW.parent_unit_id
                    USING ERRCODE = 'TC012', HINT = 'A unit cannot be moved below itself or one of its descendants.';
            END IF;
            SELECT parent_unit_id INTO cursor_id FROM tco.org_unit WHERE unit_id = cursor_id;
            depth := depth + 1;
            IF depth > 10000 THEN
                RAISE EXCEPTION 'unit tree of organization % is too deep', NEW.org_id USING ERRCODE = 'TC012';
            END IF;
        END LOOP;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER org_unit_tree_check BEFORE INSERT OR UPDATE ON tco.org_unit
    FOR EACH ROW EXECUTE FUNCTION tco.org_unit_tree_check();

-- A unit with members or child units, or the root unit, cannot be deleted
-- (except when its whole organization is being deleted).
CREATE FUNCTION tco.org_unit_delete_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tco.organization WHERE org_id = OLD.org_id) THEN
        RETURN OLD;
    END IF;
    IF OLD.parent_unit_id IS NULL THEN
        RAISE EXCEPTION 'root unit % of organization % cannot be deleted', OLD.unit_id, OLD.org_id
            USING ERRCODE = 'TC013', HINT = 'Delete the organization instead.';
    END IF;
    SELECT count(*) INTO n FROM tco.org_unit WHERE parent_unit_id = OLD.unit_id;
    IF n > 0 THEN
        RAISE EXCEPTION 'unit % still has % child unit(s)', OLD.unit_id, n
            USING ERRCODE = '2BP01', HINT = 'Move or delete the child units first.';
    END IF;
    SELECT count(*) INTO n FROM tco.member WHERE unit_id = OLD.unit_id;
    IF n > 0 THEN
        RAISE EXCEPTION 'unit % still has % member(s)', OLD.unit_id, n
            USING ERRCODE = '2BP01', HINT = 'Move the members to another unit with tco.move_member() first.';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER org_unit_delete_check BEFORE DELETE ON tco.org_unit
    FOR EACH ROW EXECUTE FUNCTION tco.org_unit_delete_check();

-- Membership: one organization per account, unit in that organization
-- (defaulting to the root unit), the admin stays in its organization.
CREATE FUNCTION tco.member_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    other_org bigint;
    unit_org  bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT org_id INTO other_org FROM tco.member WHERE account_id = NEW.account_id;
        IF FOUND THEN
            RAISE EXCEPTION 'account % is already a member of organization %', NEW.account_id, other_org
                USING ERRCODE = '23505', HINT = 'An account belongs to at most one organization: remove it from the other one first.';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM tco.account WHERE account_id = NEW.account_id) THEN
            PERFORM tco.require_exists(false, 'account', NEW.account_id);
        END IF;
    ELSIF NEW.org_id <> OLD.org_id OR NEW.account_id <> OLD.account_id THEN
        RAISE EXCEPTION 'membership of account % cannot be moved to another organization or account by UPDATE', OLD.account_id
            USING ERRCODE = '55000', HINT = 'Remove the member and add it to the other organization.';
    END IF;
    IF NEW.unit_id IS NULL THEN
        SELECT unit_id INTO NEW.unit_id FROM tco.org_unit WHERE org_id = NEW.org_id AND parent_unit_id IS NULL;
        PERFORM tco.require_exists(FOUND, 'organization', NEW.org_id);
    ELSE
        SELECT org_id INTO unit_org FROM tco.org_unit WHERE unit_id = NEW.unit_id;
        PERFORM tco.require_exists(FOUND, 'unit', NEW.unit_id);
        IF unit_org <> NEW.org_id THEN
            RAISE EXCEPTION 'unit % belongs to organization %, not to organization % of account %',
                    NEW.unit_id, unit_org, NEW.org_id, NEW.account_id
                USING ERRCODE = 'TC011', HINT = 'Place the member in a unit of its own organization.';
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER member_check BEFORE INSERT OR UPDATE ON tco.member
    FOR EACH ROW EXECUTE FUNCTION tco.member_check();

CREATE FUNCTION tco.member_delete_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF EXISTS (SELECT 1 FROM tco.organization WHERE org_id = OLD.org_id AND admin_account_id = OLD.account_id) THEN
        RAISE EXCEPTION 'account % is the admin of organization % and cannot leave it', OLD.account_id, OLD.org_id
            USING ERRCODE = 'TC014', HINT = 'Make another member the admin first, or delete the organization.';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER member_delete_check BEFORE DELETE ON tco.member
    FOR EACH ROW EXECUTE FUNCTION tco.member_delete_check();

CREATE FUNCTION tco.member_record_history() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tco.member_history (account_id, org_id, unit_id, policy, event)
            VALUES (NEW.account_id, NEW.org_id, NEW.unit_id, NEW.policy, 'joined');
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO tco.member_history (account_id, org_id, unit_id, policy, event)
            VALUES (OLD.account_id, OLD.org_id, OLD.unit_id, OLD.policy, 'left');
    ELSE
        IF NEW.unit_id <> OLD.unit_id THEN
            INSERT INTO tco.member_history (account_id, org_id, unit_id, policy, event)
                VALUES (NEW.account_id, NEW.org_id, NEW.unit_id, NEW.policy, 'moved');
        END IF;
        IF NEW.policy <> OLD.policy THEN
            INSERT INTO tco.member_history (account_id, org_id, unit_id, policy, event)
                VALUES (NEW.account_id, NEW.org_id, NEW.unit_id, NEW.policy, 'policy_changed');
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER member_record_history AFTER INSERT OR UPDATE OR DELETE ON tco.member
    FOR EACH ROW EXECUTE FUNCTION tco.member_record_history();

-- History tables are append-only (R14).  Shared by every history table.
CREATE FUNCTION tco.append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'table tco.% is append-only history: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'TC008', HINT = 'History is never rewritten (R14); record a new event instead.';
END $$;
CREATE TRIGGER member_history_append_only BEFORE UPDATE OR DELETE ON tco.member_history
    FOR EACH ROW EXECUTE FUNCTION tco.append_only();
CREATE TRIGGER member_history_no_truncate BEFORE TRUNCATE ON tco.member_history
    FOR EACH STATEMENT EXECUTE FUNCTION tco.append_only();

-- ---------------------------------------------------------------------------
-- Functions

CREATE FUNCTION tco.create_organization(admin_account_id bigint, name text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_org bigint;
BEGIN
    PERFORM tco.require_arg(admin_account_id, 'admin_account_id');
    PERFORM tco.require_name(name, 'name');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = create_organization.admin_account_id),
                               'account', admin_account_id);
    INSERT INTO tco.organization (name, admin_account_id)
        VALUES (create_organization.name, create_organization.admin_account_id)
        RETURNING org_id INTO new_org;
    RETURN new_org;
END $$;
COMMENT ON FUNCTION tco.create_organization(bigint, text) IS 'Creates an organization with its root unit; the admin account becomes its first member. Returns org_id.';

CREATE FUNCTION tco.create_unit(org_id bigint, name text, parent_unit_id bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parent bigint := parent_unit_id;
    new_unit bigint;
BEGIN
    PERFORM tco.require_arg(org_id, 'org_id');
    PERFORM tco.require_name(name, 'name');
    IF parent IS NULL THEN
        SELECT u.unit_id INTO parent FROM tco.org_unit u
            WHERE u.org_id = create_unit.org_id AND u.parent_unit_id IS NULL;
        PERFORM tco.require_exists(FOUND, 'organization', org_id);
    END IF;
    INSERT INTO tco.org_unit (org_id, parent_unit_id, name)
        VALUES (create_unit.org_id, parent, create_unit.name) RETURNING unit_id INTO new_unit;
    RETURN new_unit;
END $$;
COMMENT ON FUNCTION tco.create_unit(bigint, text, bigint) IS 'Creates a unit under parent_unit_id (default: the root unit). Returns unit_id.';

CREATE FUNCTION tco.move_unit(unit_id bigint, new_parent_unit_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(unit_id, 'unit_id');
    PERFORM tco.require_arg(new_parent_unit_id, 'new_parent_unit_id');
    UPDATE tco.org_unit u SET parent_unit_id = new_parent_unit_id WHERE u.unit_id = move_unit.unit_id;
    PERFORM tco.require_exists(FOUND, 'unit', unit_id);
END $$;
COMMENT ON FUNCTION tco.move_unit(bigint, bigint) IS 'Moves a unit (with its subtree) under another unit of the same organization; cycles are refused.';

CREATE FUNCTION tco.delete_unit(unit_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(unit_id, 'unit_id');
    DELETE FROM tco.org_unit u WHERE u.unit_id = delete_unit.unit_id;
    PERFORM tco.require_exists(FOUND, 'unit', unit_id);
END $$;
COMMENT ON FUNCTION tco.delete_unit(bigint) IS 'Deletes an empty, non-root unit.';

CREATE FUNCTION tco.add_member(org_id bigint, account_id bigint, unit_id bigint DEFAULT NULL,
                               policy tco.settlement_policy DEFAULT 'self_pay') RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(org_id, 'org_id');
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_arg(policy, 'policy');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.organization o WHERE o.org_id = add_member.org_id),
                               'organization', org_id);
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = add_member.account_id),
                               'account', account_id);
    BEGIN
        INSERT INTO tco.member (account_id, org_id, unit_id, policy)
            VALUES (add_member.account_id, add_member.org_id, add_member.unit_id, 'self_pay');
    EXCEPTION WHEN unique_violation THEN
        -- lost a race with another session adding the same account
        RAISE EXCEPTION 'account % is already a member of organization %', account_id,
                (SELECT m.org_id FROM tco.member m WHERE m.account_id = add_member.account_id)
            USING ERRCODE = '23505', HINT = 'An account belongs to at most one organization: remove it from the other one first.';
    END;
    IF policy = 'trusteeship' THEN
        PERFORM tco.add_member_trusteeship(add_member.org_id, add_member.account_id);
    END IF;
END $$;
COMMENT ON FUNCTION tco.add_member(bigint, bigint, bigint, tco.settlement_policy) IS 'Adds an account to an organization in a unit (default: root). With policy trusteeship the organization''s admin becomes its management account at once.';

CREATE FUNCTION tco.move_member(account_id bigint, unit_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_arg(unit_id, 'unit_id');
    UPDATE tco.member m SET unit_id = move_member.unit_id WHERE m.account_id = move_member.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % is not a member of any organization', account_id
            USING ERRCODE = '23503', HINT = 'Add it with tco.add_member() first.';
    END IF;
END $$;
COMMENT ON FUNCTION tco.move_member(bigint, bigint) IS 'Moves a member to another unit of its organization.';

CREATE FUNCTION tco.remove_member(account_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    DELETE FROM tco.member m WHERE m.account_id = remove_member.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % is not a member of any organization', account_id
            USING ERRCODE = '23503', HINT = 'Nothing to remove; check the account id.';
    END IF;
END $$;
COMMENT ON FUNCTION tco.remove_member(bigint) IS 'Removes an account from its organization (recorded in tco.member_history).';

CREATE FUNCTION tco.invite_account(org_id bigint, account_id bigint, unit_id bigint DEFAULT NULL,
                                   policy tco.settlement_policy DEFAULT 'self_pay',
                                   valid_for interval DEFAULT interval '7 days') RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
    current_org bigint;
BEGIN
    PERFORM tco.require_arg(org_id, 'org_id');
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_arg(policy, 'policy');
    PERFORM tco.require_arg(valid_for, 'valid_for');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.organization o WHERE o.org_id = invite_account.org_id),
                               'organization', org_id);
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = invite_account.account_id),
                               'account', account_id);
    IF valid_for <= interval '0' THEN
        RAISE EXCEPTION 'invitation validity must be positive, got %', valid_for
            USING ERRCODE = '22023', HINT = 'Pass an interval such as ''7 days''.';
    END IF;
    SELECT m.org_id INTO current_org FROM tco.member m WHERE m.account_id = invite_account.account_id;
    IF FOUND THEN
        RAISE EXCEPTION 'account % is already a member of organization %', account_id, current_org
            USING ERRCODE = '23505', HINT = 'An account belongs to at most one organization: it must leave the other one first.';
    END IF;
    -- close any expired pending invitation so a new one can be sent
    UPDATE tco.invitation i SET status = 'cancelled', responded_at = now()
        WHERE i.org_id = invite_account.org_id AND i.account_id = invite_account.account_id
          AND i.status = 'pending' AND i.expires_at <= now();
    BEGIN
        INSERT INTO tco.invitation (org_id, account_id, unit_id, policy, expires_at)
            VALUES (invite_account.org_id, invite_account.account_id, invite_account.unit_id,
                    invite_account.policy, now() + valid_for)
            RETURNING invitation_id INTO new_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'account % already has a pending invitation to organization %', account_id, org_id
            USING ERRCODE = '23505', HINT = 'Wait for an answer, or cancel it with tco.cancel_invitation().';
    END;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.invite_account(bigint, bigint, bigint, tco.settlement_policy, interval) IS 'Invites an account to join an organization; it joins when it accepts before expiry. Returns invitation_id.';

-- Lock a pending invitation, refusing answered or expired ones.
CREATE FUNCTION tco.pending_invitation(p_invitation_id bigint) RETURNS tco.invitation
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inv tco.invitation;
BEGIN
    PERFORM tco.require_arg(p_invitation_id, 'invitation_id');
    SELECT * INTO inv FROM tco.invitation WHERE invitation_id = p_invitation_id FOR UPDATE;
    PERFORM tco.require_exists(FOUND, 'invitation', p_invitation_id);
    IF inv.status <> 'pending' THEN
        RAISE EXCEPTION 'invitation % was already %', p_invitation_id, inv.status
            USING ERRCODE = 'TC015', HINT = 'Send a new invitation with tco.invite_account().';
    ELSIF inv.expires_at <= now() THEN
        RAISE EXCEPTION 'invitation % expired at %', p_invitation_id, inv.expires_at
            USING ERRCODE = 'TC015', HINT = 'Send a new invitation with tco.invite_account().';
    END IF;
    RETURN inv;
END $$;

CREATE FUNCTION tco.accept_invitation(invitation_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inv tco.invitation := tco.pending_invitation(invitation_id);
BEGIN
    UPDATE tco.invitation i SET status = 'accepted', responded_at = now()
        WHERE i.invitation_id = inv.invitation_id;
    PERFORM tco.add_member(inv.org_id, inv.account_id, inv.unit_id, inv.policy);
END $$;
COMMENT ON FUNCTION tco.accept_invitation(bigint) IS 'The invited account joins the organization.';

CREATE FUNCTION tco.decline_invitation(invitation_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inv tco.invitation := tco.pending_invitation(invitation_id);
BEGIN
    UPDATE tco.invitation i SET status = 'declined', responded_at = now()
        WHERE i.invitation_id = inv.invitation_id;
END $$;
COMMENT ON FUNCTION tco.decline_invitation(bigint) IS 'The invited account declines.';

CREATE FUNCTION tco.cancel_invitation(invitation_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inv tco.invitation := tco.pending_invitation(invitation_id);
BEGIN
    UPDATE tco.invitation i SET status = 'cancelled', responded_at = now()
        WHERE i.invitation_id = inv.invitation_id;
END $$;
COMMENT ON FUNCTION tco.cancel_invitation(bigint) IS 'The organization withdraws a pending invitation.';

-- ==== src/sql/30_trusteeship.sql
-- Financial trusteeship, products and bill lines: the data the payer (R6) is
-- computed from.  The rules on these tables are in 31_trusteeship_rules.sql;
-- the payer itself is C (src/payer.c, 35_payer.sql).

CREATE TABLE tco.trusteeship (
    trusteeship_id        bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    member_account_id     bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    management_account_id bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    established_at        timestamptz NOT NULL DEFAULT now(),
    ended_at              timestamptz,
    CONSTRAINT trusteeship_finite CHECK (isfinite(established_at) AND (ended_at IS NULL OR isfinite(ended_at))),
    CONSTRAINT trusteeship_ends_after_start CHECK (ended_at IS NULL OR ended_at > established_at),
    CONSTRAINT trusteeship_not_self CHECK (member_account_id <> management_account_id),
    CONSTRAINT trusteeship_one_at_a_time EXCLUDE USING gist
        (member_account_id WITH =, tstzrange(established_at, ended_at) WITH &&)
);
CREATE INDEX trusteeship_manager_active ON tco.trusteeship (management_account_id) WHERE ended_at IS NULL;
CREATE INDEX trusteeship_member ON tco.trusteeship (member_account_id, established_at);
COMMENT ON TABLE tco.trusteeship IS 'Dated financial trusteeships member -> management account. History is never overwritten: ending sets ended_at; a move ends one row and starts another at the same instant.';
COMMENT ON COLUMN tco.trusteeship.established_at IS 'Instant of the change that establishes the trusteeship (its payer switch follows DESIGN section 3).';
COMMENT ON COLUMN tco.trusteeship.ended_at IS 'Instant of the change that ends it (NULL while active).';

CREATE TABLE tco.product (
    product_code text PRIMARY KEY CHECK (product_code ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$'),
    granularity  tco.granularity NOT NULL,
    name         text NOT NULL DEFAULT ''
);
COMMENT ON TABLE tco.product IS 'Billable products and their billing granularity.';

-- Bill lines are partitioned by billing cycle (DESIGN section 9; README
-- "Storage: bill lines partitioned by cycle"): native range partitioning on
-- period_start, one partition per cycle in the billing time zone, created at
-- run time by tco.prepare_cycles (36_partition.sql), never by this script.
-- Lines of a cycle that has no partition yet land in tco.bill_line_default
-- until tco.prepare_cycles moves them.  The partitioned table has no index
-- of its own: each partition gets its indexes when tco creates it (a unique
-- line_id, and account, product, period start for the payer's probes), so
-- that pg_dump saves them with the partition and a restore attaches the
-- partition without building them twice.  A unique index of a partitioned
-- table would have to hold the partition key: tco.bill_line_id keeps line_id
-- unique across all partitions instead.
CREATE TABLE tco.bill_line (
    line_id      bigint GENERATED BY DEFAULT AS IDENTITY,
    account_id   bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    product_code text NOT NULL REFERENCES tco.product ON UPDATE CASCADE ON DELETE RESTRICT,
    charge_type  tco.charge_type NOT NULL DEFAULT 'postpaid',
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    list_amount  numeric(20,6) NOT NULL,
    issued_at    timestamptz NOT NULL DEFAULT now(),
    paid_at      timestamptz,
    tags         jsonb NOT NULL DEFAULT '{}',
    corrects_line_id  bigint,
    correction_reason text,
    CONSTRAINT bill_line_finite CHECK (isfinite(period_start) AND isfinite(period_end) AND isfinite(issued_at)),
    CONSTRAINT bill_line_period CHECK (period_end > period_start),
    CONSTRAINT bill_line_amount_not_negative CHECK (list_amount >= 0 OR corrects_line_id IS NOT NULL),
    CONSTRAINT bill_line_correction CHECK ((corrects_line_id IS NULL) = (correction_reason IS NULL)
                                           AND corrects_line_id IS DISTINCT FROM line_id),
    CONSTRAINT bill_line_tags CHECK (jsonb_typeof(tags) = 'object'
                                     AND NOT jsonb_path_exists(tags, '$.* ? (@.type() != "string")'))
) PARTITION BY RANGE (period_start);
-- The landing partition of lines whose cycle has no partition yet.  It is a
-- member of the extension, so pg_extension_config_dump makes pg_dump keep
-- its rows; the per-cycle partitions are not members and are dumped as
-- ordinary tables with their rows.
CREATE TABLE tco.bill_line_default PARTITION OF tco.bill_line DEFAULT;
CREATE UNIQUE INDEX bill_line_default_line_id ON tco.bill_line_default (line_id);
CREATE INDEX bill_line_default_account_product ON tco.bill_line_default (account_id, product_code, period_start);
CREATE INDEX bill_line_default_period_start ON tco.bill_line_default (period_start);
COMMENT ON TABLE tco.bill_line_default IS 'Bill lines of cycles that have no partition yet (plain INSERTs into a new cycle); tco.prepare_cycles moves them into their cycle''s partition.';
-- line_id is unique across partitions: every line's id is also the key of
-- this table (maintained by the statement triggers of tco.bill_line,
-- 48_bill_line_triggers.sql), so a duplicate id in another cycle is refused.
CREATE TABLE tco.bill_line_id (
    line_id      bigint PRIMARY KEY,
    period_start timestamptz NOT NULL
);
COMMENT ON TABLE tco.bill_line_id IS 'The id of every bill line with its period start: keeps line_id unique across the partitions of tco.bill_line, and finds a line''s partition.';
COMMENT ON TABLE tco.bill_line IS 'One priced unit of consumption. The whole line goes to one payer, chosen by its period_start (DESIGN section 3).';
COMMENT ON COLUMN tco.bill_line.list_amount IS 'List price before discounts and benefits (exact, up to 6 decimals).';
COMMENT ON COLUMN tco.bill_line.issued_at IS 'When the bill was issued; an unpaid line issued before a trusteeship change freezes its product for that cycle.';
COMMENT ON COLUMN tco.bill_line.paid_at IS 'When it was paid; NULL while unsettled.';
COMMENT ON COLUMN tco.bill_line.corrects_line_id IS 'Set on a correction line: the original line whose amount it corrects by its signed list amount (tco.correct_bill_line; README "After a cycle closes"). Only correction lines may be negative.';
COMMENT ON COLUMN tco.bill_line.correction_reason IS 'Why a correction line was made (required on correction lines).';
COMMENT ON COLUMN tco.bill_line.tags IS 'Resource tags, as cloud providers attach them: a JSON object of string values, e.g. {"team": "data", "env": "prod"} (default {}). Read by tco.showback_by_tag and the FOCUS export; never by settlement.';

SELECT pg_catalog.pg_extension_config_dump('tco.trusteeship', '');
SELECT pg_catalog.pg_extension_config_dump('tco.product', '');
SELECT pg_catalog.pg_extension_config_dump('tco.bill_line', '');
SELECT pg_catalog.pg_extension_config_dump('tco.bill_line_default', '');
SELECT pg_catalog.pg_extension_config_dump('tco.bill_line_id', '');
SELECT pg_catalog.pg_extension_config_dump('tco.bill_line_line_id_seq', '');

-- The payer cache (src/payer.c) is built from these tables.
CREATE TRIGGER trusteeship_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tco.trusteeship
    FOR EACH STATEMENT EXECUTE FUNCTION tco.invalidate_cache();
CREATE TRIGGER product_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tco.product
    FOR EACH STATEMENT EXECUTE FUNCTION tco.invalidate_cache();
-- tco.bill_line invalidates only when a change can alter a cached payer
-- (the frozen-product rule): see 48_bill_line_triggers.sql.
CREATE TRIGGER account_invalidate AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF account_id ON tco.account
    FOR EACH STATEMENT EXECUTE FUNCTION tco.invalidate_cache();

-- ==== src/sql/31_trusteeship_rules.sql
-- Trusteeship rules R1-R5 and R14 (DESIGN section 2), the member policy kept
-- in step with the trusteeship, and the functions that establish, move and
-- end trusteeships.
--
-- Every rule is a trigger on the tables, so direct INSERT/UPDATE/DELETE obey
-- it as well as the functions.  Concurrency: every change of a trusteeship
-- first locks the account rows involved (FOR NO KEY UPDATE, lowest id first
-- so two sessions never wait on each other in opposite orders).  In READ
-- COMMITTED each statement of a plpgsql function takes a fresh snapshot, so
-- the checks that follow the lock see every trusteeship committed by the
-- session that held it before: two sessions racing for the 300th place (R1)
-- or building a chain from both ends (R4) are serialized on a common account
-- row, and the second one sees the first one's row.
--
-- Error codes introduced here (class TC, see README "Error codes"):
--   TC001  R1: the management account already has 300 members in trusteeship
--   TC002  R2: member and manager are not the same verified entity / organization
--   TC003  R3: the entity of an account in trusteeship cannot change
--   TC004  R4: self-trusteeship or a chain (a member cannot manage, a manager cannot be managed)
--   TC005  R5: the member has no positive balance at association
--   TC006  a change dated before the member's latest trusteeship change
-- and the standard ones: 22004 NULL argument, 23503 unknown id, 55000 wrong
-- state (already / not in trusteeship).  TC008 (append-only history) is
-- raised by tco.append_only().

-- Trusteeship history is read by member and by manager over time.
CREATE INDEX trusteeship_manager ON tco.trusteeship (management_account_id, established_at);

-- R1: the cap lives in one place.
CREATE FUNCTION tco.max_managed_members() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 300
$$;
COMMENT ON FUNCTION tco.max_managed_members() IS 'R1: the largest number of members one management account may have in trusteeship at any instant (300).';

-- Lock account rows in ascending id order (the one lock order of tco, which
-- keeps concurrent trusteeship changes free of deadlocks).
CREATE FUNCTION tco.lock_accounts(account_ids bigint[]) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) FROM (SELECT 1 FROM tco.account
                          WHERE account_id = ANY (account_ids)
                          ORDER BY account_id FOR NO KEY UPDATE) locked;
$$;
COMMENT ON FUNCTION tco.lock_accounts(bigint[]) IS 'Locks the given account rows (FOR NO KEY UPDATE) in ascending id order; serializes trusteeship and money changes of those accounts.';

-- The instant of the member's latest trusteeship change (establish or end),
-- or NULL if it never had one.
CREATE FUNCTION tco.latest_trusteeship_change(p_account_id bigint) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT max(greatest(established_at, ended_at))
    FROM tco.trusteeship WHERE member_account_id = p_account_id;
$$;
COMMENT ON FUNCTION tco.latest_trusteeship_change(bigint) IS 'Instant of the latest trusteeship change (established_at or ended_at) of a member account; NULL if none. Earlier changes are refused (TC006).';

-- True while the account is, or is scheduled to remain, in a trusteeship as
-- member or manager: a row not ended, or ended only in the future.
CREATE FUNCTION tco.in_trusteeship(p_account_id bigint) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM tco.trusteeship
                   WHERE (member_account_id = p_account_id OR management_account_id = p_account_id)
                     AND (ended_at IS NULL OR ended_at > now()));
$$;
COMMENT ON FUNCTION tco.in_trusteeship(bigint) IS 'True while the account is in a trusteeship (as member or manager) that has not ended yet.';

-- The management account paying for the account at instant `at` (NULL: it pays itself).
CREATE FUNCTION tco.manager_at(p_account_id bigint, p_at timestamptz) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT management_account_id FROM tco.trusteeship
    WHERE member_account_id = p_account_id
      AND established_at <= p_at AND (ended_at IS NULL OR ended_at > p_at);
$$;
COMMENT ON FUNCTION tco.manager_at(bigint, timestamptz) IS 'The management account of an account''s trusteeship in force at an instant (NULL: none). This is the relationship, not the payer of a bill line: see tco.trusteeship_effective_payer() for the switch timing of R6.';

-- ---------------------------------------------------------------------------
-- One check per rule.  Each is called with the account rows already locked.

CREATE FUNCTION tco.r1_cap_check(p_manager bigint, p_member bigint, p_start timestamptz, p_end timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    peak bigint;
BEGIN
    -- "At no instant": the number of the manager's trusteeships in force is
    -- largest at the new range's start or at a start of another of its
    -- trusteeships inside the new range, so only those instants are counted.
    SELECT coalesce(max(n), 0) INTO peak FROM (
        SELECT (SELECT count(*) FROM tco.trusteeship t
                WHERE t.management_account_id = p_manager
                  AND t.established_at <= pts.p AND (t.ended_at IS NULL OR t.ended_at > pts.p)) AS n
        FROM (SELECT p_start AS p
              UNION
              SELECT t.established_at FROM tco.trusteeship t
              WHERE t.management_account_id = p_manager AND t.established_at > p_start
                AND (p_end IS NULL OR t.established_at < p_end)) pts) counts;
    IF peak >= tco.max_managed_members() THEN
        -- TC001: R1 cap reached
        RAISE EXCEPTION 'R1: management account % already has % members in trusteeship; account % cannot join',
                p_manager, peak, p_member
            USING ERRCODE = 'TC001',
                  HINT = format('A management account may manage at most %s members at any instant: end another trusteeship first, or choose another management account.',
                                tco.max_managed_members());
    END IF;
END $$;
COMMENT ON FUNCTION tco.r1_cap_check(bigint, bigint, timestamptz, timestamptz) IS 'R1: refuses a trusteeship [start, end) that would give the manager more than tco.max_managed_members() members at some instant (TC001).';

CREATE FUNCTION tco.r2_same_entity_check(p_member bigint, p_manager bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    member_entity  bigint;
    manager_entity bigint;
    entity_ok      boolean;
    member_org     bigint;
    manager_org    bigint;
BEGIN
    SELECT entity_id INTO member_entity FROM tco.account WHERE account_id = p_member;
    SELECT entity_id INTO manager_entity FROM tco.account WHERE account_id = p_manager;
    -- FOR SHARE: an un-verification of the entity (R3) waits for us, or we for it.
    SELECT verified INTO entity_ok FROM tco.entity WHERE entity_id = member_entity FOR SHARE;
    IF member_entity IS NULL OR manager_entity IS NULL OR member_entity <> manager_entity
       OR NOT coalesce(entity_ok, false) THEN
        -- TC002: R2 same verified entity / same organization
        RAISE EXCEPTION 'R2: account % (entity %) and management account % (entity %) are not verified as the same entity',
                p_member, coalesce(member_entity::text, 'none'), p_manager, coalesce(manager_entity::text, 'none')
            USING ERRCODE = 'TC002',
                  HINT = 'Financial trusteeship requires both accounts to be verified as one common entity (tco.account.entity_id, tco.entity.verified).';
    END IF;
    SELECT org_id INTO member_org FROM tco.member WHERE account_id = p_member;
    SELECT org_id INTO manager_org FROM tco.member WHERE account_id = p_manager;
    IF member_org IS NULL OR manager_org IS NULL OR member_org <> manager_org THEN
        RAISE EXCEPTION 'R2: account % (organization %) and management account % (organization %) are not in the same organization',
                p_member, coalesce(member_org::text, 'none'), p_manager, coalesce(manager_org::text, 'none')
            USING ERRCODE = 'TC002',
                  HINT = 'Add both accounts to one organization with tco.add_member() first.';
    END IF;
END $$;
COMMENT ON FUNCTION tco.r2_same_entity_check(bigint, bigint) IS 'R2: member and manager must be verified as the same entity and be members of the same organization (TC002).';

CREATE FUNCTION tco.r4_no_chain_check(p_member bigint, p_manager bigint, p_start timestamptz, p_end timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    other bigint;
BEGIN
    IF p_member = p_manager THEN
        -- TC004: R4 no self-trusteeship, no chains
        RAISE EXCEPTION 'R4: account % cannot be in trusteeship to itself', p_member
            USING ERRCODE = 'TC004', HINT = 'Choose another account of the same entity as management account.';
    END IF;
    SELECT member_account_id INTO other FROM tco.trusteeship
    WHERE management_account_id = p_member
      AND tstzrange(established_at, ended_at) && tstzrange(p_start, p_end)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'R4: account % manages account % and cannot become a managed member of account %',
                p_member, other, p_manager
            USING ERRCODE = 'TC004', HINT = 'A management account cannot be managed itself: end the trusteeships it manages first.';
    END IF;
    SELECT management_account_id INTO other FROM tco.trusteeship
    WHERE member_account_id = p_manager
      AND tstzrange(established_at, ended_at) && tstzrange(p_start, p_end)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'R4: account % is a managed member of account % and cannot become the management account of account %',
                p_manager, other, p_member
            USING ERRCODE = 'TC004', HINT = 'A managed member cannot manage others: end its own trusteeship first, or choose its management account instead.';
    END IF;
END $$;
COMMENT ON FUNCTION tco.r4_no_chain_check(bigint, bigint, timestamptz, timestamptz) IS 'R4: no self-trusteeship, and during [start, end) the member manages nobody and the manager is nobody''s member (TC004).';

CREATE FUNCTION tco.r5_balance_check(p_member bigint) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cash numeric;
BEGIN
    -- "Positive available balance" is read as a positive cash balance: the
    -- member still pays its own charges of the current cycle (R6), and a
    -- credit line is not a balance.
    SELECT balance INTO cash FROM tco.account WHERE account_id = p_member;
    IF NOT cash > 0 THEN
        -- TC005: R5 no positive available balance
        RAISE EXCEPTION 'R5: account % has no positive available balance (balance %)', p_member, cash
            USING ERRCODE = 'TC005', HINT = 'Top up the account (tco.deposit) before associating it with a management account.';
    END IF;
END $$;
COMMENT ON FUNCTION tco.r5_balance_check(bigint) IS 'R5: a member needs a positive cash balance when it is associated (TC005). Not checked for a move between managers.';

-- ---------------------------------------------------------------------------
-- Triggers on tco.trusteeship

CREATE FUNCTION tco.trusteeship_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    latest  timestamptz;
    existing tco.trusteeship;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        -- R14: only ending an active trusteeship is a change; history is never rewritten.
        IF NEW.trusteeship_id IS DISTINCT FROM OLD.trusteeship_id
           OR NEW.member_account_id IS DISTINCT FROM OLD.member_account_id
           OR NEW.management_account_id IS DISTINCT FROM OLD.management_account_id
           OR NEW.established_at IS DISTINCT FROM OLD.established_at
           OR (OLD.ended_at IS NOT NULL AND NEW.ended_at IS DISTINCT FROM OLD.ended_at) THEN
            RAISE EXCEPTION 'trusteeship % is history: only ended_at of an active trusteeship may be set', OLD.trusteeship_id
                USING ERRCODE = 'TC008',
                      HINT = 'History is never rewritten (R14): end the trusteeship with tco.end_trusteeship() and establish a new one.';
        END IF;
        IF NEW.ended_at IS NULL THEN
            RETURN NEW;
        END IF;
        PERFORM tco.lock_accounts(ARRAY[NEW.member_account_id]);
        latest := tco.latest_trusteeship_change(NEW.member_account_id);
        IF NEW.ended_at < latest THEN
            -- TC006: change dated before the member's latest change
            RAISE EXCEPTION 'trusteeship of account % cannot end at %: its latest trusteeship change was at %',
                    NEW.member_account_id, NEW.ended_at, latest
                USING ERRCODE = 'TC006', HINT = 'Trusteeship changes are recorded in time order: use an instant at or after the latest change.';
        END IF;
        RETURN NEW;
    END IF;

    -- INSERT.  Missing values are left to the NOT NULL constraints.
    IF NEW.member_account_id IS NULL OR NEW.management_account_id IS NULL OR NEW.established_at IS NULL THEN
        RETURN NEW;
    END IF;
    IF NEW.member_account_id = NEW.management_account_id THEN
        PERFORM tco.r4_no_chain_check(NEW.member_account_id, NEW.management_account_id, NEW.established_at, NEW.ended_at);
    END IF;
    PERFORM tco.lock_accounts(ARRAY[NEW.member_account_id, NEW.management_account_id]);
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account WHERE account_id = NEW.member_account_id),
                               'account', NEW.member_account_id);
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account WHERE account_id = NEW.management_account_id),
                               'account', NEW.management_account_id);

    latest := tco.latest_trusteeship_change(NEW.member_account_id);
    IF NEW.established_at < latest THEN
        RAISE EXCEPTION 'trusteeship of account % cannot start at %: its latest trusteeship change was at %',
                NEW.member_account_id, NEW.established_at, latest
            USING ERRCODE = 'TC006', HINT = 'Trusteeship changes are recorded in time order: use an instant at or after the latest change.';
    END IF;
    SELECT * INTO existing FROM tco.trusteeship
    WHERE member_account_id = NEW.member_account_id
      AND tstzrange(established_at, ended_at) && tstzrange(NEW.established_at, NEW.ended_at)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'account % is already in trusteeship to account % (trusteeship %)',
                NEW.member_account_id, existing.management_account_id, existing.trusteeship_id
            USING ERRCODE = '55000',
                  HINT = 'End it first, or move the member with tco.move_trusteeship().';
    END IF;

    PERFORM tco.r4_no_chain_check(NEW.member_account_id, NEW.management_account_id, NEW.established_at, NEW.ended_at);
    PERFORM tco.r2_same_entity_check(NEW.member_account_id, NEW.management_account_id);
    -- R5 applies to an association; a move (the previous trusteeship ends at
    -- this very instant) keeps the member in trusteeship throughout.
    IF NOT EXISTS (SELECT 1 FROM tco.trusteeship
                   WHERE member_account_id = NEW.member_account_id AND ended_at = NEW.established_at) THEN
        PERFORM tco.r5_balance_check(NEW.member_account_id);
    END IF;
    PERFORM tco.r1_cap_check(NEW.management_account_id, NEW.member_account_id, NEW.established_at, NEW.ended_at);
    RETURN NEW;
END $$;
COMMENT ON FUNCTION tco.trusteeship_check() IS 'BEFORE INSERT/UPDATE on tco.trusteeship: locks the accounts, then enforces time order (TC006), one trusteeship at a time (55000), R4, R2, R5, R1, and R14 (only ended_at of an active row may be set, TC008).';
CREATE TRIGGER trusteeship_check BEFORE INSERT OR UPDATE ON tco.trusteeship
    FOR EACH ROW EXECUTE FUNCTION tco.trusteeship_check();
CREATE TRIGGER trusteeship_append_only BEFORE DELETE ON tco.trusteeship
    FOR EACH ROW EXECUTE FUNCTION tco.append_only();
CREATE TRIGGER trusteeship_no_truncate BEFORE TRUNCATE ON tco.trusteeship
    FOR EACH STATEMENT EXECUTE FUNCTION tco.append_only();

-- A move made by tco.establish_trusteeship()/tco.move_trusteeship() ends one
-- row and inserts the next in the same transaction; this transaction-local
-- flag tells the AFTER triggers that the end is the first half of a move, so
-- the member does not flip to self_pay (and its prepaid resources do not flip
-- back) for an instant.  Set only by those functions, reset right after.
CREATE FUNCTION tco.trusteeship_move_in_progress() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(current_setting('tco_internal.trusteeship_move', true), '') = 'on'
$$;
COMMENT ON FUNCTION tco.trusteeship_move_in_progress() IS 'Internal: true between the two halves of a move made by tco.move_trusteeship().';

-- member.policy follows the trusteeship: trusteeship while one is active
-- (ended_at IS NULL), self_pay otherwise.
CREATE FUNCTION tco.trusteeship_sync_policy() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.ended_at IS NULL THEN
        UPDATE tco.member SET policy = 'trusteeship'
        WHERE account_id = NEW.member_account_id AND policy <> 'trusteeship';
    ELSIF TG_OP = 'UPDATE' AND OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
          AND NOT tco.trusteeship_move_in_progress()
          AND NOT EXISTS (SELECT 1 FROM tco.trusteeship
                          WHERE member_account_id = NEW.member_account_id AND ended_at IS NULL) THEN
        UPDATE tco.member SET policy = 'self_pay'
        WHERE account_id = NEW.member_account_id AND policy <> 'self_pay';
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION tco.trusteeship_sync_policy() IS 'AFTER trigger on tco.trusteeship: keeps tco.member.policy = trusteeship while the member has an active trusteeship, self_pay otherwise.';
CREATE TRIGGER trusteeship_sync_policy AFTER INSERT OR UPDATE ON tco.trusteeship
    FOR EACH ROW EXECUTE FUNCTION tco.trusteeship_sync_policy();

-- ---------------------------------------------------------------------------
-- Triggers on the organization model

-- Setting member.policy directly establishes or ends the trusteeship to the
-- organization's admin; nothing happens when the state already matches, which
-- also stops the recursion with tco.trusteeship_sync_policy().
CREATE FUNCTION tco.member_sync_trusteeship() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    active boolean;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.policy = OLD.policy THEN
        RETURN NULL;
    END IF;
    active := EXISTS (SELECT 1 FROM tco.trusteeship
                      WHERE member_account_id = NEW.account_id AND ended_at IS NULL);
    IF NEW.policy = 'trusteeship' AND NOT active THEN
        PERFORM tco.add_member_trusteeship(NEW.org_id, NEW.account_id);
    ELSIF NEW.policy = 'self_pay' AND active THEN
        PERFORM tco.end_trusteeship(NEW.account_id, now());
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION tco.member_sync_trusteeship() IS 'AFTER INSERT/UPDATE OF policy on tco.member: policy trusteeship establishes a trusteeship to the organization''s admin at now(); self_pay ends the active one at now().';
CREATE TRIGGER member_sync_trusteeship AFTER INSERT OR UPDATE OF policy ON tco.member
    FOR EACH ROW EXECUTE FUNCTION tco.member_sync_trusteeship();

-- Leaving the organization (or moving to another one, which is leave + join)
-- is refused while the account is in a trusteeship.
CREATE FUNCTION tco.member_leave_trusteeship_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF tco.in_trusteeship(OLD.account_id) THEN
        RAISE EXCEPTION 'account % is in a trusteeship and cannot leave organization %', OLD.account_id, OLD.org_id
            USING ERRCODE = '55000',
                  HINT = 'End the trusteeship first (tco.end_trusteeship), for the account and for any member it manages.';
    END IF;
    RETURN OLD;
END $$;
COMMENT ON FUNCTION tco.member_leave_trusteeship_check() IS 'BEFORE DELETE on tco.member: an account in a trusteeship (member or manager) cannot leave its organization (55000).';
CREATE TRIGGER member_leave_trusteeship_check BEFORE DELETE ON tco.member
    FOR EACH ROW EXECUTE FUNCTION tco.member_leave_trusteeship_check();

-- R3: the real-name verification of an account in trusteeship is locked.
CREATE FUNCTION tco.r3_realname_lock_account() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.entity_id IS DISTINCT FROM OLD.entity_id AND tco.in_trusteeship(OLD.account_id) THEN
        -- TC003: R3 real-name lock
        RAISE EXCEPTION 'R3: account % is in a trusteeship: its entity cannot change from % to %',
                OLD.account_id, coalesce(OLD.entity_id::text, 'none'), coalesce(NEW.entity_id::text, 'none')
            USING ERRCODE = 'TC003', HINT = 'End the trusteeship first, then change the real-name verification.';
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION tco.r3_realname_lock_account() IS 'R3: BEFORE UPDATE OF entity_id on tco.account: refused while the account is in a trusteeship (TC003).';
CREATE TRIGGER r3_realname_lock_account BEFORE UPDATE OF entity_id ON tco.account
    FOR EACH ROW EXECUTE FUNCTION tco.r3_realname_lock_account();

CREATE FUNCTION tco.r3_realname_lock_entity() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    locked_account bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF OLD.verified AND NOT NEW.verified THEN
        SELECT a.account_id INTO locked_account FROM tco.account a
        WHERE a.entity_id = OLD.entity_id AND tco.in_trusteeship(a.account_id)
        ORDER BY a.account_id LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'R3: entity % cannot lose its verification: its account % is in a trusteeship',
                    OLD.entity_id, locked_account
                USING ERRCODE = 'TC003', HINT = 'End the trusteeship first, then change the real-name verification.';
        END IF;
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION tco.r3_realname_lock_entity() IS 'R3: BEFORE UPDATE OF verified on tco.entity: an entity with an account in a trusteeship cannot be un-verified (TC003).';
CREATE TRIGGER r3_realname_lock_entity BEFORE UPDATE OF verified ON tco.entity
    FOR EACH ROW EXECUTE FUNCTION tco.r3_realname_lock_entity();

-- ---------------------------------------------------------------------------
-- Functions

CREATE FUNCTION tco.establish_trusteeship(member_account_id bigint, management_account_id bigint,
                                          at timestamptz DEFAULT now()) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    existing tco.trusteeship;
    new_id  bigint;
BEGIN
    PERFORM tco.require_arg(member_account_id, 'member_account_id');
    PERFORM tco.require_arg(management_account_id, 'management_account_id');
    PERFORM tco.require_arg(at, 'at');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = establish_trusteeship.member_account_id),
                               'account', member_account_id);
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = establish_trusteeship.management_account_id),
                               'account', management_account_id);
    IF NOT isfinite(at) THEN
        RAISE EXCEPTION 'trusteeship change instant must be finite, got %', at
            USING ERRCODE = '22023', HINT = 'Pass a real instant such as now().';
    END IF;
    -- Same lock order as the triggers; the member's current trusteeship is
    -- read after the lock, so it is the latest committed one.
    PERFORM tco.lock_accounts(ARRAY[member_account_id, management_account_id]);
    SELECT * INTO existing FROM tco.trusteeship t
    WHERE t.member_account_id = establish_trusteeship.member_account_id AND t.ended_at IS NULL;
    IF FOUND THEN
        IF existing.management_account_id = management_account_id THEN
            RAISE EXCEPTION 'account % is already in trusteeship to account % (trusteeship %)',
                    member_account_id, management_account_id, existing.trusteeship_id
                USING ERRCODE = '55000', HINT = 'Nothing to do; to change manager, pass another management account.';
        END IF;
        -- A move: end the current trusteeship and start the next at the same instant.
        PERFORM pg_catalog.set_config('tco_internal.trusteeship_move', 'on', true);
        UPDATE tco.trusteeship t SET ended_at = establish_trusteeship.at
            WHERE t.trusteeship_id = existing.trusteeship_id;
        PERFORM pg_catalog.set_config('tco_internal.trusteeship_move', '', true);
    END IF;
    INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
        VALUES (establish_trusteeship.member_account_id, establish_trusteeship.management_account_id, establish_trusteeship.at)
        RETURNING trusteeship_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.establish_trusteeship(bigint, bigint, timestamptz) IS 'Puts a member in trusteeship to a management account from instant at (default now()); if it is in trusteeship to another manager, this is a move (the old one ends at the same instant). Returns trusteeship_id. Rules R1-R5 and time order apply.';

CREATE FUNCTION tco.move_trusteeship(member_account_id bigint, new_management_account_id bigint,
                                     at timestamptz DEFAULT now()) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(member_account_id, 'member_account_id');
    PERFORM tco.require_arg(new_management_account_id, 'new_management_account_id');
    PERFORM tco.require_arg(at, 'at');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = move_trusteeship.member_account_id),
                               'account', member_account_id);
    PERFORM tco.lock_accounts(ARRAY[member_account_id]);
    IF NOT EXISTS (SELECT 1 FROM tco.trusteeship t
                   WHERE t.member_account_id = move_trusteeship.member_account_id AND t.ended_at IS NULL) THEN
        RAISE EXCEPTION 'account % is not in trusteeship: there is nothing to move', member_account_id
            USING ERRCODE = '55000', HINT = 'Use tco.establish_trusteeship() to associate it.';
    END IF;
    RETURN tco.establish_trusteeship(member_account_id, new_management_account_id, at);
END $$;
COMMENT ON FUNCTION tco.move_trusteeship(bigint, bigint, timestamptz) IS 'Moves a managed member to another management account at instant at: ends the current trusteeship and starts the new one at the same instant. Returns the new trusteeship_id.';

CREATE FUNCTION tco.end_trusteeship(member_account_id bigint, at timestamptz DEFAULT now()) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(member_account_id, 'member_account_id');
    PERFORM tco.require_arg(at, 'at');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = end_trusteeship.member_account_id),
                               'account', member_account_id);
    IF NOT isfinite(at) THEN
        RAISE EXCEPTION 'trusteeship change instant must be finite, got %', at
            USING ERRCODE = '22023', HINT = 'Pass a real instant such as now().';
    END IF;
    PERFORM tco.lock_accounts(ARRAY[member_account_id]);
    UPDATE tco.trusteeship t SET ended_at = end_trusteeship.at
        WHERE t.member_account_id = end_trusteeship.member_account_id AND t.ended_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % is not in trusteeship', member_account_id
            USING ERRCODE = '55000', HINT = 'Nothing to end; see tco.trusteeship for its history.';
    END IF;
END $$;
COMMENT ON FUNCTION tco.end_trusteeship(bigint, timestamptz) IS 'Ends the active trusteeship of a member at instant at (default now()); the member pays for itself again (switch timing: DESIGN section 3).';

CREATE FUNCTION tco.add_member_trusteeship(org_id bigint, account_id bigint) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    admin bigint;
BEGIN
    PERFORM tco.require_arg(org_id, 'org_id');
    PERFORM tco.require_arg(account_id, 'account_id');
    SELECT o.admin_account_id INTO admin FROM tco.organization o WHERE o.org_id = add_member_trusteeship.org_id;
    PERFORM tco.require_exists(FOUND, 'organization', org_id);
    RETURN tco.establish_trusteeship(account_id, admin, now());
END $$;
COMMENT ON FUNCTION tco.add_member_trusteeship(bigint, bigint) IS 'Puts a member in trusteeship to its organization''s admin account at now() (policy trusteeship of tco.add_member). Returns trusteeship_id.';

-- ==== src/sql/32_money.sql
-- Money: an append-only ledger of every balance movement, available credit
-- and service availability (R10), withdrawals, deposits and top-ups of the
-- admin by its members (R13).
--
-- Amounts are numeric(20,2), never floating point.  A movement is one ledger
-- row: its BEFORE INSERT trigger locks the account, checks the funds and
-- applies the amount to tco.account.balance, so an INSERT into the ledger,
-- direct or through the functions, is the one way money moves and every
-- movement leaves a row with the balance after it.  (A direct UPDATE of
-- tco.account.balance by an operator is not blocked, for corrections, but the
-- CHECK account_balance_within_credit still holds; prefer kind 'adjustment'.)
--
-- Error codes introduced here:
--   TC009  insufficient funds: the movement would take the balance below
--          -credit_limit, or (withdraw, top_up_out) below zero cash.
-- and 22004 NULL amount, 22023 amount not positive / more than 2 decimals /
-- too large, 23503 unknown account.

CREATE TABLE tco.ledger (
    entry_id                bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account_id              bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    amount                  numeric(20,2) NOT NULL,
    kind                    text NOT NULL,
    counterparty_account_id bigint REFERENCES tco.account ON DELETE RESTRICT,
    reference               text,
    balance_after           numeric(20,2),
    at                      timestamptz NOT NULL DEFAULT now(),
    by_role                 name NOT NULL DEFAULT current_user,
    CONSTRAINT ledger_kind CHECK (kind IN ('deposit', 'withdraw', 'top_up_in', 'top_up_out',
                                           'payment', 'refund', 'adjustment')),
    CONSTRAINT ledger_amount_sign CHECK (CASE
        WHEN kind IN ('deposit', 'top_up_in', 'refund') THEN amount > 0
        WHEN kind IN ('withdraw', 'top_up_out', 'payment') THEN amount < 0
        ELSE amount <> 0 END)
);
CREATE INDEX ledger_account ON tco.ledger (account_id, entry_id);
COMMENT ON TABLE tco.ledger IS 'Append-only ledger of money movements (R14): every change of an account''s balance is one row; inserting a row applies it to tco.account.balance.';
COMMENT ON COLUMN tco.ledger.amount IS 'Signed amount: positive credits the account (deposit, top_up_in, refund), negative debits it (withdraw, top_up_out, payment); adjustment either way.';
COMMENT ON COLUMN tco.ledger.kind IS 'deposit (external money in), withdraw (cash out), top_up_in/top_up_out (R13 transfer between accounts of one organization), payment, refund, adjustment.';
COMMENT ON COLUMN tco.ledger.counterparty_account_id IS 'The other account of a transfer (top-up), else NULL.';
COMMENT ON COLUMN tco.ledger.balance_after IS 'Balance of the account right after this movement (set by the ledger trigger).';
SELECT pg_catalog.pg_extension_config_dump('tco.ledger', '');

-- Validate an amount of money: not NULL (22004), a number, positive, at most
-- 2 decimals and within numeric(20,2) (22023).
CREATE FUNCTION tco.require_amount(amount numeric, arg_name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(amount, arg_name);
    IF amount = 'NaN'::numeric OR amount <= 0 OR amount >= 1e18 OR amount <> round(amount, 2) THEN
        RAISE EXCEPTION 'argument "%" must be a positive amount with at most 2 decimals below 10^18, got %', arg_name, amount
            USING ERRCODE = '22023', HINT = 'Pass an amount such as 10.50.';
    END IF;
END $$;
COMMENT ON FUNCTION tco.require_amount(numeric, text) IS 'Raises 22004 for a NULL amount and 22023 for one that is not positive, has more than 2 decimals or does not fit numeric(20,2).';

CREATE FUNCTION tco.ledger_apply() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acct  tco.account;
    new_balance numeric;
    lowest numeric;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.account_id IS NULL OR NEW.amount IS NULL THEN
        RETURN NEW;   -- the NOT NULL constraints report it
    END IF;
    SELECT * INTO acct FROM tco.account WHERE account_id = NEW.account_id FOR NO KEY UPDATE;
    PERFORM tco.require_exists(FOUND, 'account', NEW.account_id);
    new_balance := acct.balance + NEW.amount;
    -- Cash out (withdraw, transfer to another account) needs cash; other
    -- debits may use the credit line.
    lowest := CASE WHEN NEW.kind IN ('withdraw', 'top_up_out') THEN 0 ELSE -acct.credit_limit END;
    IF NEW.amount < 0 AND new_balance < lowest THEN
        -- TC009: insufficient funds
        RAISE EXCEPTION 'insufficient funds: % of % from account % would leave balance % below %',
                NEW.kind, -NEW.amount, NEW.account_id, new_balance, lowest
            USING ERRCODE = 'TC009',
                  HINT = CASE WHEN lowest = 0 THEN 'Only the cash balance can be withdrawn or transferred; lower the amount.'
                              ELSE 'Top up the account or raise its credit limit.' END;
    END IF;
    UPDATE tco.account SET balance = new_balance WHERE account_id = NEW.account_id;
    NEW.balance_after := new_balance;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION tco.ledger_apply() IS 'BEFORE INSERT on tco.ledger: locks the account, refuses a debit beyond its funds (TC009), applies the amount to its balance and records balance_after.';
CREATE TRIGGER ledger_apply BEFORE INSERT ON tco.ledger
    FOR EACH ROW EXECUTE FUNCTION tco.ledger_apply();
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON tco.ledger
    FOR EACH ROW EXECUTE FUNCTION tco.append_only();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON tco.ledger
    FOR EACH STATEMENT EXECUTE FUNCTION tco.append_only();

-- ---------------------------------------------------------------------------
-- Credit (R10)

CREATE FUNCTION tco.available_credit(account_id bigint) RETURNS numeric
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    payer  bigint;
    credit numeric;
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = available_credit.account_id),
                               'account', account_id);
    -- R10: a managed member's own balance does not count; its manager's does.
    payer := coalesce(tco.manager_at(account_id, now()), account_id);
    SELECT a.balance + a.credit_limit INTO credit FROM tco.account a WHERE a.account_id = payer;
    RETURN credit;
END $$;
COMMENT ON FUNCTION tco.available_credit(bigint) IS 'R10: balance + credit_limit of the account, or of its management account while it is in trusteeship (its own balance is then not used for payment).';

CREATE FUNCTION tco.service_available(account_id bigint) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.available_credit(account_id) > 0
$$;
COMMENT ON FUNCTION tco.service_available(bigint) IS 'R10: services of the account stay available while its available credit (its manager''s, when in trusteeship) is positive.';

-- ---------------------------------------------------------------------------
-- Movements

-- One movement of external money in or out of an account: deposit and
-- withdraw differ only in the kind (and so the sign) of the ledger row.
CREATE FUNCTION tco.ledger_move(account_id bigint, amount numeric, kind text) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_balance numeric;
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_amount(amount, 'amount');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = ledger_move.account_id),
                               'account', account_id);
    INSERT INTO tco.ledger (account_id, amount, kind)
        VALUES (ledger_move.account_id,
                CASE WHEN ledger_move.kind IN ('withdraw', 'top_up_out', 'payment') THEN -ledger_move.amount
                     ELSE ledger_move.amount END,
                ledger_move.kind)
        RETURNING balance_after INTO new_balance;
    RETURN new_balance;
END $$;
COMMENT ON FUNCTION tco.ledger_move(bigint, numeric, text) IS 'Internal: checks the account and a positive amount, books one ledger row of the kind (debit kinds negative) and returns the new balance. Used by tco.deposit and tco.withdraw.';

CREATE FUNCTION tco.deposit(account_id bigint, amount numeric) RETURNS numeric
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.ledger_move(account_id, amount, 'deposit')
$$;
COMMENT ON FUNCTION tco.deposit(bigint, numeric) IS 'Credits external money to an account. Returns the new balance.';

-- R10: withdraw is allowed for a managed member too; its balance is not used for payment.
CREATE FUNCTION tco.withdraw(account_id bigint, amount numeric) RETURNS numeric
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.ledger_move(account_id, amount, 'withdraw')
$$;
COMMENT ON FUNCTION tco.withdraw(bigint, numeric) IS 'Pays out part of the account''s own cash balance (never below zero, TC009). A managed member may withdraw its own balance (R10). Returns the new balance.';

CREATE FUNCTION tco.top_up(from_account_id bigint, to_account_id bigint, amount numeric) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    from_org bigint;
    to_org   bigint;
    admin    bigint;
    out_id   bigint;
    in_id    bigint;
BEGIN
    PERFORM tco.require_arg(from_account_id, 'from_account_id');
    PERFORM tco.require_arg(to_account_id, 'to_account_id');
    PERFORM tco.require_amount(amount, 'amount');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = top_up.from_account_id),
                               'account', from_account_id);
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = top_up.to_account_id),
                               'account', to_account_id);
    IF from_account_id = to_account_id THEN
        RAISE EXCEPTION 'R13: account % cannot top up itself', from_account_id
            USING ERRCODE = '22023', HINT = 'Use tco.deposit() for money from outside.';
    END IF;
    PERFORM tco.lock_accounts(ARRAY[from_account_id, to_account_id]);
    SELECT m.org_id INTO from_org FROM tco.member m WHERE m.account_id = top_up.from_account_id;
    SELECT m.org_id INTO to_org FROM tco.member m WHERE m.account_id = top_up.to_account_id;
    SELECT o.admin_account_id INTO admin FROM tco.organization o WHERE o.org_id = from_org;
    -- R13: a member funds its organization's admin, or its own management account.
    IF from_org IS NULL OR to_org IS DISTINCT FROM from_org
       OR (to_account_id <> admin AND to_account_id IS DISTINCT FROM tco.manager_at(from_account_id, now())) THEN
        RAISE EXCEPTION 'R13: account % cannot top up account %: the target must be the admin or the management account of the member''s organization (organizations % and %)',
                from_account_id, to_account_id, coalesce(from_org::text, 'none'), coalesce(to_org::text, 'none')
            USING ERRCODE = '55000',
                  HINT = 'A member tops up its organization''s admin account or its own management account.';
    END IF;
    INSERT INTO tco.ledger (account_id, amount, kind, counterparty_account_id, reference)
        VALUES (from_account_id, -amount, 'top_up_out', to_account_id, 'top_up')
        RETURNING entry_id INTO out_id;
    INSERT INTO tco.ledger (account_id, amount, kind, counterparty_account_id, reference)
        VALUES (to_account_id, amount, 'top_up_in', from_account_id, 'top_up of entry ' || out_id)
        RETURNING entry_id INTO in_id;
    RETURN in_id;
END $$;
COMMENT ON FUNCTION tco.top_up(bigint, bigint, numeric) IS 'R13: a member moves cash (never below zero, TC009) to its organization''s admin or its management account; two ledger rows. Returns the entry_id of the crediting row.';

-- ==== src/sql/33_prepaid.sql
-- Prepaid resources and R12: on association the remaining term of a member's
-- prepaid resources passes to its management account, on disassociation it
-- passes back (a move passes it on to the new manager).  While passed, the
-- remaining term has no financial value: refunds, downgrades, terminations
-- and price changes are refused; price adjustments of a managed member's
-- prepaid orders are refused altogether.
--
-- holder_account_id says who holds the remaining term; it is maintained only
-- by the trusteeship triggers below and every change is recorded in the
-- append-only tco.prepaid_transfer.
--
-- Error codes introduced here:
--   TC007  R12: refund / downgrade / termination / price adjustment of a
--          prepaid resource passed to a management account, or price
--          adjustment of a managed member's prepaid resource.
-- and 55000 for a resource that is no longer active or a holder set by hand.

CREATE TABLE tco.prepaid_resource (
    resource_id       bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    owner_account_id  bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    product_code      text NOT NULL REFERENCES tco.product ON UPDATE CASCADE ON DELETE RESTRICT,
    term_start        timestamptz NOT NULL,
    term_end          timestamptz NOT NULL,
    holder_account_id bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    price             numeric(20,2) NOT NULL,
    status            text NOT NULL DEFAULT 'active',
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT prepaid_resource_finite CHECK (isfinite(term_start) AND isfinite(term_end)),
    CONSTRAINT prepaid_resource_term CHECK (term_end > term_start),
    CONSTRAINT prepaid_resource_price CHECK (price >= 0),
    CONSTRAINT prepaid_resource_status CHECK (status IN ('active', 'refunded', 'terminated'))
);
CREATE INDEX prepaid_resource_owner ON tco.prepaid_resource (owner_account_id) WHERE status = 'active';
COMMENT ON TABLE tco.prepaid_resource IS 'Prepaid (subscription) resources of an account: a term, a price and who currently holds the remaining term (R12).';
COMMENT ON COLUMN tco.prepaid_resource.owner_account_id IS 'The account that ordered the resource.';
COMMENT ON COLUMN tco.prepaid_resource.holder_account_id IS 'Who holds the remaining term: the owner, or its management account while the owner is in trusteeship. Set by tco; defaults accordingly on INSERT.';
COMMENT ON COLUMN tco.prepaid_resource.price IS 'Price of the whole term; refunds are the unused share of it.';
COMMENT ON COLUMN tco.prepaid_resource.status IS 'active, refunded or terminated (the last two are final).';
SELECT pg_catalog.pg_extension_config_dump('tco.prepaid_resource', '');

CREATE TABLE tco.prepaid_transfer (
    transfer_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resource_id     bigint NOT NULL REFERENCES tco.prepaid_resource ON DELETE RESTRICT,
    from_account_id bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    to_account_id   bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    trusteeship_id  bigint REFERENCES tco.trusteeship ON DELETE RESTRICT,
    reason          text NOT NULL CHECK (reason IN ('purchase', 'association', 'move', 'disassociation')),
    at              timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX prepaid_transfer_resource ON tco.prepaid_transfer (resource_id, transfer_id);
COMMENT ON TABLE tco.prepaid_transfer IS 'Append-only history of who held the remaining term of each prepaid resource (R12, R14).';
COMMENT ON COLUMN tco.prepaid_transfer.reason IS 'purchase (bought while in trusteeship), association, move (to another manager), disassociation (back to the owner).';
COMMENT ON COLUMN tco.prepaid_transfer.at IS 'Instant of the trusteeship change that passed the term.';
SELECT pg_catalog.pg_extension_config_dump('tco.prepaid_transfer', '');
CREATE TRIGGER prepaid_transfer_append_only BEFORE UPDATE OR DELETE ON tco.prepaid_transfer
    FOR EACH ROW EXECUTE FUNCTION tco.append_only();
CREATE TRIGGER prepaid_transfer_no_truncate BEFORE TRUNCATE ON tco.prepaid_transfer
    FOR EACH STATEMENT EXECUTE FUNCTION tco.append_only();

-- ---------------------------------------------------------------------------
-- R12 checks

-- TC007 if the resource's remaining term is passed to a management account
-- or, for a price adjustment, if its owner is a managed member.
CREATE FUNCTION tco.r12_prepaid_check(resource tco.prepaid_resource, action text, price_adjustment boolean)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    manager bigint;
BEGIN
    IF resource.holder_account_id <> resource.owner_account_id THEN
        -- TC007: R12 prepaid resource passed to the manager
        RAISE EXCEPTION 'R12: % of prepaid resource % refused: its remaining term is passed to management account % and has no financial value',
                action, resource.resource_id, resource.holder_account_id
            USING ERRCODE = 'TC007',
                  HINT = format('End the trusteeship of account %s first; the remaining term then passes back to it.', resource.owner_account_id);
    END IF;
    IF price_adjustment THEN
        SELECT management_account_id INTO manager FROM tco.trusteeship
        WHERE member_account_id = resource.owner_account_id AND ended_at IS NULL;
        IF FOUND THEN
            RAISE EXCEPTION 'R12: % of prepaid resource % refused: account % is a managed member of account %',
                    action, resource.resource_id, resource.owner_account_id, manager
                USING ERRCODE = 'TC007',
                      HINT = 'Price adjustments of a managed member''s prepaid orders are not supported; contact the account manager.';
        END IF;
    END IF;
END $$;
COMMENT ON FUNCTION tco.r12_prepaid_check(tco.prepaid_resource, text, boolean) IS 'R12: raises TC007 when the prepaid resource is passed to a manager, or (price adjustment) when its owner is in trusteeship.';

-- On INSERT the holder follows the owner's trusteeship; on UPDATE the holder
-- changes only through the trusteeship triggers, and R12 guards status, price
-- and term changes, so direct DML obeys the rule too.
CREATE FUNCTION tco.prepaid_resource_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    active tco.trusteeship;
    derived_holder bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.owner_account_id IS NULL OR NEW.term_end IS NULL THEN
            RETURN NEW;
        END IF;
        SELECT * INTO active FROM tco.trusteeship
        WHERE member_account_id = NEW.owner_account_id AND ended_at IS NULL;
        derived_holder := CASE WHEN FOUND AND NEW.term_end > active.established_at
                               THEN active.management_account_id ELSE NEW.owner_account_id END;
        IF NEW.holder_account_id IS NOT NULL AND NEW.holder_account_id <> derived_holder THEN
            RAISE EXCEPTION 'R12: prepaid resource of account % must be held by account %, not %',
                    NEW.owner_account_id, derived_holder, NEW.holder_account_id
                USING ERRCODE = '55000', HINT = 'Leave holder_account_id out: it follows the owner''s trusteeship.';
        END IF;
        NEW.holder_account_id := derived_holder;
        RETURN NEW;
    END IF;

    IF NEW.resource_id <> OLD.resource_id OR NEW.owner_account_id <> OLD.owner_account_id
       OR NEW.product_code <> OLD.product_code OR NEW.term_start <> OLD.term_start
       OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'prepaid resource %: owner, product and term start cannot change', OLD.resource_id
            USING ERRCODE = '55000', HINT = 'Record a new prepaid resource instead.';
    END IF;
    -- Nested trigger calls (depth > 1) are the trusteeship triggers of this file.
    IF NEW.holder_account_id <> OLD.holder_account_id AND pg_catalog.pg_trigger_depth() <= 1 THEN
        RAISE EXCEPTION 'prepaid resource %: the holder cannot be set directly', OLD.resource_id
            USING ERRCODE = '55000', HINT = 'The holder follows the owner''s trusteeship (R12): establish or end the trusteeship instead.';
    END IF;
    IF NEW.status <> OLD.status OR NEW.price <> OLD.price OR NEW.term_end <> OLD.term_end THEN
        IF OLD.status <> 'active' THEN
            RAISE EXCEPTION 'prepaid resource % is already %', OLD.resource_id, OLD.status
                USING ERRCODE = '55000', HINT = 'Refunded and terminated resources are final.';
        END IF;
        PERFORM tco.r12_prepaid_check(OLD,
            CASE WHEN NEW.status = 'refunded' THEN 'refund'
                 WHEN NEW.status = 'terminated' THEN 'termination'
                 WHEN NEW.price < OLD.price THEN 'downgrade'
                 ELSE 'change' END,
            NEW.price <> OLD.price);
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION tco.prepaid_resource_check() IS 'BEFORE INSERT/UPDATE on tco.prepaid_resource: derives the holder, refuses holder changes by hand, and applies R12 to status, price and term changes (TC007).';
CREATE TRIGGER prepaid_resource_check BEFORE INSERT OR UPDATE ON tco.prepaid_resource
    FOR EACH ROW EXECUTE FUNCTION tco.prepaid_resource_check();

CREATE FUNCTION tco.prepaid_resource_record_purchase() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.holder_account_id <> NEW.owner_account_id THEN
        INSERT INTO tco.prepaid_transfer (resource_id, from_account_id, to_account_id, trusteeship_id, reason, at)
        SELECT NEW.resource_id, NEW.owner_account_id, NEW.holder_account_id, t.trusteeship_id, 'purchase', NEW.created_at
        FROM tco.trusteeship t
        WHERE t.member_account_id = NEW.owner_account_id AND t.ended_at IS NULL;
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION tco.prepaid_resource_record_purchase() IS 'AFTER INSERT on tco.prepaid_resource: records a resource bought while its owner is in trusteeship as passed to the manager.';
CREATE TRIGGER prepaid_resource_record_purchase AFTER INSERT ON tco.prepaid_resource
    FOR EACH ROW EXECUTE FUNCTION tco.prepaid_resource_record_purchase();

-- Trusteeship changes pass the remaining terms.
CREATE FUNCTION tco.trusteeship_pass_prepaid() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.ended_at IS NULL THEN
        -- Association: every active resource with term left at the instant
        -- passes to the manager; a move also takes over whatever the
        -- previous manager still holds.
        WITH passing AS (
            SELECT r.resource_id, r.holder_account_id AS old_holder, r.owner_account_id
            FROM tco.prepaid_resource r
            WHERE r.owner_account_id = NEW.member_account_id AND r.status = 'active'
              AND r.holder_account_id <> NEW.management_account_id
              AND (r.term_end > NEW.established_at OR r.holder_account_id <> r.owner_account_id)
            FOR UPDATE
        ), passed AS (
            UPDATE tco.prepaid_resource r SET holder_account_id = NEW.management_account_id
            FROM passing p WHERE r.resource_id = p.resource_id
            RETURNING p.resource_id, p.old_holder, p.owner_account_id
        )
        INSERT INTO tco.prepaid_transfer (resource_id, from_account_id, to_account_id, trusteeship_id, reason, at)
        SELECT resource_id, old_holder, NEW.management_account_id, NEW.trusteeship_id,
               CASE WHEN old_holder = owner_account_id THEN 'association' ELSE 'move' END,
               NEW.established_at
        FROM passed ORDER BY resource_id;
    ELSIF TG_OP = 'UPDATE' AND OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
          AND NOT tco.trusteeship_move_in_progress() THEN
        -- Disassociation: everything the manager holds goes back to the owner.
        WITH passed AS (
            UPDATE tco.prepaid_resource r SET holder_account_id = r.owner_account_id
            WHERE r.owner_account_id = NEW.member_account_id AND r.status = 'active'
              AND r.holder_account_id = NEW.management_account_id
            RETURNING r.resource_id
        )
        INSERT INTO tco.prepaid_transfer (resource_id, from_account_id, to_account_id, trusteeship_id, reason, at)
        SELECT resource_id, NEW.management_account_id, NEW.member_account_id, NEW.trusteeship_id,
               'disassociation', NEW.ended_at
        FROM passed ORDER BY resource_id;
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION tco.trusteeship_pass_prepaid() IS 'R12: AFTER INSERT/UPDATE on tco.trusteeship: passes the remaining term of the member''s active prepaid resources to the manager on association (or move), back to the member when the trusteeship ends; records each transfer.';
CREATE TRIGGER trusteeship_pass_prepaid AFTER INSERT OR UPDATE ON tco.trusteeship
    FOR EACH ROW EXECUTE FUNCTION tco.trusteeship_pass_prepaid();

-- ---------------------------------------------------------------------------
-- Functions

-- The unused share of a price at now(): price x remaining part of the term,
-- rounded half-up (away from zero) to 2 decimals.
CREATE FUNCTION tco.prepaid_unused_value(resource tco.prepaid_resource, of_price numeric) RETURNS numeric
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN now() >= resource.term_end THEN 0::numeric
        WHEN now() <= resource.term_start THEN round(of_price, 2)
        ELSE round(of_price * extract(epoch FROM resource.term_end - now())
                            / extract(epoch FROM resource.term_end - resource.term_start), 2)
    END
$$;
COMMENT ON FUNCTION tco.prepaid_unused_value(tco.prepaid_resource, numeric) IS 'Unused share of an amount paid for the resource''s term at now(), rounded half-up to 2 decimals.';

-- Lock a prepaid resource (after its owner's account, the trusteeship lock order).
CREATE FUNCTION tco.lock_prepaid_resource(p_resource_id bigint) RETURNS tco.prepaid_resource
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    resource tco.prepaid_resource;
BEGIN
    PERFORM tco.require_arg(p_resource_id, 'resource_id');
    SELECT * INTO resource FROM tco.prepaid_resource WHERE resource_id = p_resource_id;
    PERFORM tco.require_exists(FOUND, 'prepaid resource', p_resource_id);
    PERFORM tco.lock_accounts(ARRAY[resource.owner_account_id]);
    SELECT * INTO resource FROM tco.prepaid_resource WHERE resource_id = p_resource_id FOR UPDATE;
    IF resource.status <> 'active' THEN
        RAISE EXCEPTION 'prepaid resource % is already %', p_resource_id, resource.status
            USING ERRCODE = '55000', HINT = 'Refunded and terminated resources are final.';
    END IF;
    RETURN resource;
END $$;

-- Credit a refund to the owner (no ledger row for a zero refund).
CREATE FUNCTION tco.prepaid_credit_refund(resource tco.prepaid_resource, amount numeric, what text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF amount > 0 THEN
        INSERT INTO tco.ledger (account_id, amount, kind, reference)
            VALUES (resource.owner_account_id, amount, 'refund', format('%s of prepaid resource %s', what, resource.resource_id));
    END IF;
END $$;

-- Refund and termination end a resource the same way: the unused share of
-- its price goes back to the owner; only the final status differs.
CREATE FUNCTION tco.prepaid_close(resource_id bigint, what text, final_status text) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    resource tco.prepaid_resource := tco.lock_prepaid_resource(resource_id);
    refund   numeric;
BEGIN
    PERFORM tco.r12_prepaid_check(resource, what, false);
    refund := tco.prepaid_unused_value(resource, resource.price);
    UPDATE tco.prepaid_resource r SET status = final_status WHERE r.resource_id = resource.resource_id;
    PERFORM tco.prepaid_credit_refund(resource, refund, what);
    RETURN refund;
END $$;
COMMENT ON FUNCTION tco.prepaid_close(bigint, text, text) IS 'Internal: ends an active prepaid resource with final_status (refunded or terminated) after the R12 check for `what`, crediting the unused share of its price to the owner. Returns the amount refunded.';

CREATE FUNCTION tco.refund_prepaid(resource_id bigint) RETURNS numeric
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.prepaid_close(resource_id, 'refund', 'refunded')
$$;
COMMENT ON FUNCTION tco.refund_prepaid(bigint) IS 'Cancels a prepaid resource and credits the unused share of its price to the owner. R12: refused while passed to a manager (TC007). Returns the amount refunded.';

CREATE FUNCTION tco.terminate_prepaid(resource_id bigint) RETURNS numeric
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.prepaid_close(resource_id, 'termination', 'terminated')
$$;
COMMENT ON FUNCTION tco.terminate_prepaid(bigint) IS 'Terminates a prepaid resource early (released now) and credits the unused share of its price to the owner. R12: refused while passed to a manager (TC007). Returns the amount refunded.';

CREATE FUNCTION tco.downgrade_prepaid(resource_id bigint, new_price numeric) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    resource tco.prepaid_resource := tco.lock_prepaid_resource(resource_id);
    refund   numeric;
BEGIN
    PERFORM tco.require_arg(new_price, 'new_price');
    IF NOT (new_price >= 0 AND new_price < resource.price AND new_price = round(new_price, 2)) THEN
        RAISE EXCEPTION 'downgrade of prepaid resource % needs a price from 0 below %, with at most 2 decimals; got %',
                resource.resource_id, resource.price, new_price
            USING ERRCODE = '22023', HINT = 'A downgrade lowers the price; use tco.adjust_prepaid_price() otherwise.';
    END IF;
    PERFORM tco.r12_prepaid_check(resource, 'downgrade', false);
    refund := tco.prepaid_unused_value(resource, resource.price - new_price);
    UPDATE tco.prepaid_resource r SET price = new_price WHERE r.resource_id = resource.resource_id;
    PERFORM tco.prepaid_credit_refund(resource, refund, 'downgrade');
    RETURN refund;
END $$;
COMMENT ON FUNCTION tco.downgrade_prepaid(bigint, numeric) IS 'Lowers the price of a prepaid resource and credits the unused share of the difference to the owner. R12: refused while passed to a manager (TC007). Returns the amount refunded.';

CREATE FUNCTION tco.adjust_prepaid_price(resource_id bigint, new_price numeric) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    resource tco.prepaid_resource := tco.lock_prepaid_resource(resource_id);
BEGIN
    PERFORM tco.require_arg(new_price, 'new_price');
    IF NOT (new_price >= 0 AND new_price < 1e18 AND new_price = round(new_price, 2)) THEN
        RAISE EXCEPTION 'price of prepaid resource % must be a non-negative amount with at most 2 decimals, got %',
                resource.resource_id, new_price
            USING ERRCODE = '22023', HINT = 'Pass an amount such as 120.00.';
    END IF;
    PERFORM tco.r12_prepaid_check(resource, 'price adjustment', true);
    UPDATE tco.prepaid_resource r SET price = new_price WHERE r.resource_id = resource.resource_id;
END $$;
COMMENT ON FUNCTION tco.adjust_prepaid_price(bigint, numeric) IS 'Sets the price of a prepaid order (no money moves). R12: refused while passed to a manager or while the owner is a managed member (TC007).';
COMMENT ON FUNCTION tco.lock_prepaid_resource(bigint) IS 'Internal: locks an active prepaid resource after its owner''s account row (the trusteeship lock order); 23503 if unknown, 55000 if no longer active.';
COMMENT ON FUNCTION tco.prepaid_credit_refund(tco.prepaid_resource, numeric, text) IS 'Internal: credits a positive refund of a prepaid resource to its owner through the ledger.';

-- ==== src/sql/34_ingest.sql
-- The INSERTs of DESIGN section 6 as functions: tco.create_entity,
-- tco.create_account, tco.create_product and tco.insert_bill_lines (a router
-- can route a function call, not an INSERT; README "Functions").  Each is
-- exactly the INSERT it stands for, so every trigger and rule applies as
-- for direct DML; NULL for an id means "take the default".

CREATE FUNCTION tco.create_entity(entity_id bigint, name text, verified boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(name, 'name');
    INSERT INTO tco.entity (entity_id, name, verified)
    VALUES (coalesce(create_entity.entity_id, pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('tco.entity', 'entity_id')::regclass)),
            create_entity.name, coalesce(create_entity.verified, false))
    RETURNING tco.entity.entity_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.create_entity(bigint, text, boolean) IS 'INSERT INTO tco.entity as a function: creates an entity (entity_id NULL: the next id) and returns its id.';

CREATE FUNCTION tco.create_account(account_id bigint, name text, entity_id bigint DEFAULT NULL,
                                   balance numeric DEFAULT 0, credit_limit numeric DEFAULT 0) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO tco.account (account_id, name, entity_id, balance, credit_limit)
    VALUES (coalesce(create_account.account_id, pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('tco.account', 'account_id')::regclass)),
            coalesce(create_account.name, ''), create_account.entity_id,
            coalesce(create_account.balance, 0), coalesce(create_account.credit_limit, 0))
    RETURNING tco.account.account_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.create_account(bigint, text, bigint, numeric, numeric) IS 'INSERT INTO tco.account as a function: creates an account (account_id NULL: the next id) and returns its id.';

CREATE FUNCTION tco.create_product(product_code text, granularity tco.granularity) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(product_code, 'product_code');
    PERFORM tco.require_arg(granularity, 'granularity');
    INSERT INTO tco.product (product_code, granularity) VALUES (create_product.product_code, create_product.granularity);
    RETURN product_code;
END $$;
COMMENT ON FUNCTION tco.create_product(text, tco.granularity) IS 'INSERT INTO tco.product as a function: creates a product with its billing granularity and returns its code.';

-- Bill lines in one INSERT statement (so the statement-level rules run once
-- for the batch): the arrays are the columns, of one length; charge_type,
-- issued_at and paid_at may be NULL as a whole or per element (postpaid,
-- now(), unpaid).  Returns the number of lines inserted.
CREATE FUNCTION tco.insert_bill_lines(account_id bigint[], product_code text[], charge_type tco.charge_type[],
                                      period_start timestamptz[], period_end timestamptz[], list_amount numeric[],
                                      issued_at timestamptz[], paid_at timestamptz[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer := pg_catalog.cardinality(account_id);
    inserted bigint;
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_arg(product_code, 'product_code');
    PERFORM tco.require_arg(period_start, 'period_start');
    PERFORM tco.require_arg(period_end, 'period_end');
    PERFORM tco.require_arg(list_amount, 'list_amount');
    IF pg_catalog.array_ndims(account_id) > 1 OR pg_catalog.cardinality(product_code) <> n
       OR pg_catalog.cardinality(period_start) <> n OR pg_catalog.cardinality(period_end) <> n
       OR pg_catalog.cardinality(list_amount) <> n
       OR pg_catalog.cardinality(coalesce(charge_type, pg_catalog.array_fill(NULL::tco.charge_type, ARRAY[n]))) <> n
       OR pg_catalog.cardinality(coalesce(issued_at, pg_catalog.array_fill(NULL::timestamptz, ARRAY[n]))) <> n
       OR pg_catalog.cardinality(coalesce(paid_at, pg_catalog.array_fill(NULL::timestamptz, ARRAY[n]))) <> n THEN
        RAISE EXCEPTION 'the arrays of tco.insert_bill_lines must have one length (account_id has %)', n
            USING ERRCODE = '22023',
                  HINT = 'Pass one element per bill line in every array; charge_type, issued_at and paid_at may be NULL as a whole.';
    END IF;
    -- the partitions of new cycles first, so that the lines go straight into
    -- them (36_partition.sql)
    PERFORM tco.prepare_cycles_of(period_start);
    INSERT INTO tco.bill_line (account_id, product_code, charge_type, period_start, period_end, list_amount, issued_at, paid_at)
    SELECT u.a, u.p, coalesce(u.c, 'postpaid'), u.s, u.e, u.l, coalesce(u.i, pg_catalog.now()), u.d
      FROM unnest(account_id, product_code, coalesce(charge_type, pg_catalog.array_fill(NULL::tco.charge_type, ARRAY[n])),
                  period_start, period_end, list_amount,
                  coalesce(issued_at, pg_catalog.array_fill(NULL::timestamptz, ARRAY[n])),
                  coalesce(paid_at, pg_catalog.array_fill(NULL::timestamptz, ARRAY[n])))
           AS u(a, p, c, s, e, l, i, d);
    GET DIAGNOSTICS inserted = ROW_COUNT;
    RETURN inserted;
END $$;
COMMENT ON FUNCTION tco.insert_bill_lines(bigint[], text[], tco.charge_type[], timestamptz[], timestamptz[], numeric[], timestamptz[], timestamptz[]) IS
'Inserts bill lines given column-wise (arrays of one length; charge_type, issued_at, paid_at may be NULL: postpaid, now(), unpaid) in one INSERT statement, under every rule of tco.bill_line. Returns the number of lines inserted.';

-- ==== src/sql/35_payer.sql
-- The payer of a bill line (R6, DESIGN section 3), in C: src/payer.c.

CREATE FUNCTION tco.trusteeship_effective_payer(account_id bigint, product_code text, at timestamptz)
RETURNS bigint
AS 'MODULE_PATHNAME', 'tco_trusteeship_effective_payer'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION tco.trusteeship_effective_payer(bigint, text, timestamptz) IS
'The account that pays a bill line of account_id for product_code whose period starts at `at`: the target of the latest trusteeship change whose effective instant for the product is <= at (frozen product: next cycle; otherwise the first granularity boundary at or after the change), else the account itself.';

CREATE FUNCTION tco.explain_payer(account_id bigint, product_code text, at timestamptz)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'tco_explain_payer'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION tco.explain_payer(bigint, text, timestamptz) IS
'Why tco.trusteeship_effective_payer answers what it does: the change that applies (trusteeship, kind, instant, target), the rule that set its effective instant (frozen_product or granularity_boundary), and changes made but not yet effective at `at`.';

-- ==== src/sql/36_partition.sql
-- Partitions of tco.bill_line, one per billing cycle (DESIGN section 9;
-- README "Storage: bill lines partitioned by cycle").
--
-- tco.bill_line is range-partitioned on period_start (30_trusteeship.sql).
-- A cycle's partition is tco.bill_line_pYYYY_MM, bounded by the cycle's
-- instants in the billing time zone.  Partitions are created at run time,
-- never by this script: pg_dump does not save the rows of a table that a
-- extension script created, and saves those of tables created later.
--   * tco.insert_bill_lines creates the partitions of the cycles its lines
--     fall in before it inserts them;
--   * tco.prepare_cycles(from, to) creates them ahead (the scheduled job of
--     58_schedule.sql calls it), and moves into them the lines that a plain
--     INSERT put into tco.bill_line_default while they had no partition.
-- tco.bill_line_cycle records every partition with its bounds.  It is what
-- pg_dump --data-only restores first (its name sorts before the
-- partitions'): inserting a row of it creates the partition if it is
-- missing, so a data-only restore into a fresh CREATE EXTENSION finds the
-- tables it loads.  Old cycles can be detached for archiving and attached
-- again (tco.detach_cycle, tco.attach_cycle).
--
-- Partitions, the default partition, tco.bill_line_id and tco.bill_line_cycle
-- are written only by tco's own functions (running as the extension owner)
-- or by a restore: the rules of tco.bill_line are statement triggers of the
-- partitioned table, which a write naming a partition would not fire.

CREATE TABLE tco.bill_line_cycle (
    cycle       tco.billing_cycle PRIMARY KEY,
    relname     name NOT NULL UNIQUE,
    range_start timestamptz NOT NULL,
    range_end   timestamptz NOT NULL,
    detached    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bill_line_cycle_range CHECK (range_end > range_start)
);
COMMENT ON TABLE tco.bill_line_cycle IS 'The partitions of tco.bill_line: one per billing cycle, with its bounds (in the billing time zone when it was created) and whether it is detached (archived).';
COMMENT ON COLUMN tco.bill_line_cycle.relname IS 'The partition, a table of schema tco (bill_line_pYYYY_MM).';
COMMENT ON COLUMN tco.bill_line_cycle.detached IS 'Detached by tco.detach_cycle: the table exists but its lines are no longer part of tco.bill_line.';
SELECT pg_catalog.pg_extension_config_dump('tco.bill_line_cycle', '');

-- Writes to the tables behind tco.bill_line: only by the owner (tco's
-- SECURITY DEFINER functions), a superuser, or a restore (tco.restoring()).
CREATE FUNCTION tco.bill_line_storage_guard() RETURNS trigger
    AS 'MODULE_PATHNAME', 'tco_storage_guard' LANGUAGE C SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION tco.bill_line_storage_guard() IS 'BEFORE statement trigger on the partitions of tco.bill_line and its helper tables: refuses writes (42501) that do not come from tco itself, a superuser or a restore.';

CREATE TRIGGER bill_line_storage_guard BEFORE INSERT OR UPDATE OR DELETE ON tco.bill_line_default
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_storage_guard();
CREATE TRIGGER bill_line_storage_guard BEFORE INSERT OR UPDATE OR DELETE ON tco.bill_line_id
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_storage_guard();
CREATE TRIGGER bill_line_storage_guard BEFORE INSERT OR UPDATE OR DELETE ON tco.bill_line_cycle
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_storage_guard();
-- TRUNCATE of a helper table would lose ids or partitions' records.
CREATE TRIGGER bill_line_storage_no_truncate BEFORE TRUNCATE ON tco.bill_line_id
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_storage_guard();
CREATE TRIGGER bill_line_storage_no_truncate BEFORE TRUNCATE ON tco.bill_line_cycle
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_storage_guard();
-- who pays a line of a detached cycle may depend on lines that are gone (payer.c)
CREATE TRIGGER bill_line_cycle_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tco.bill_line_cycle
    FOR EACH STATEMENT EXECUTE FUNCTION tco.invalidate_cache();

-- A row of tco.bill_line_cycle makes its partition exist: created, with the
-- cycle's lines moved out of the default partition, and attached (or left
-- standalone when the row says detached, as a restore of an archived cycle
-- does).  A table that exists already (a full restore creates the partitions
-- before it loads this table's rows) is left as it is.  It acts in a restore
-- too: a data-only restore loads this table first, then the partitions.
CREATE FUNCTION tco.bill_line_cycle_create() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel text := pg_catalog.format('tco.%I', NEW.relname);
    moved bigint;
BEGIN
    IF pg_catalog.to_regclass(rel) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE pg_catalog.format('CREATE TABLE %s (LIKE tco.bill_line INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', rel);
    -- Created inside CREATE or ALTER EXTENSION (the upgrade from 1.2 creates
    -- the partitions of the lines it keeps): not a member of the extension,
    -- or pg_dump would not save its rows.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.objid = rel::pg_catalog.regclass AND d.deptype = 'e') THEN
        EXECUTE pg_catalog.format('ALTER EXTENSION tco DROP TABLE %s', rel);
    END IF;
    EXECUTE pg_catalog.format('CREATE TRIGGER bill_line_storage_guard BEFORE INSERT OR UPDATE OR DELETE ON %s '
                              'FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_storage_guard()', rel);
    EXECUTE pg_catalog.format('CREATE TRIGGER tco_writer_guard BEFORE INSERT OR UPDATE OR DELETE ON %s '
                              'FOR EACH STATEMENT EXECUTE FUNCTION tco.writer_guard()', rel);
    -- Readers reach lines through tco.bill_line and its policies only;
    -- tco_admin may read a partition and load it in a restore (pg_dump and
    -- pg_restore by a database owner that is not a superuser).
    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', rel);
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', rel);
    EXECUTE pg_catalog.format('GRANT SELECT, INSERT ON %s TO tco_admin', rel);
    IF NOT NEW.detached THEN
        EXECUTE pg_catalog.format(
            'WITH m AS (DELETE FROM tco.bill_line_default WHERE period_start >= $1 AND period_start < $2 RETURNING *) '
            'INSERT INTO %s SELECT * FROM m', rel)
            USING NEW.range_start, NEW.range_end;
        GET DIAGNOSTICS moved = ROW_COUNT;
    END IF;
    -- The partition's own indexes (30_trusteeship.sql says why the
    -- partitioned table has none), built after the moved lines are in.
    EXECUTE pg_catalog.format('CREATE UNIQUE INDEX %I ON %s (line_id)', NEW.relname || '_line_id', rel);
    EXECUTE pg_catalog.format('CREATE INDEX %I ON %s (account_id, product_code, period_start)',
                              NEW.relname || '_account_product', rel);
    IF NOT NEW.detached THEN
        EXECUTE pg_catalog.format('ALTER TABLE tco.bill_line ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                                  rel, NEW.range_start, NEW.range_end);
        IF moved > 0 THEN
            RAISE DEBUG 'tco: % bill lines of cycle % moved from tco.bill_line_default into %', moved, NEW.cycle, rel;
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER bill_line_cycle_create AFTER INSERT ON tco.bill_line_cycle
    FOR EACH ROW EXECUTE FUNCTION tco.bill_line_cycle_create();

-- The partition of each cycle from from_cycle to to_cycle, and of every cycle
-- with lines waiting in tco.bill_line_default.  Returns the number created.
CREATE FUNCTION tco.prepare_cycles(from_cycle tco.billing_cycle DEFAULT NULL, to_cycle tco.billing_cycle DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lo tco.billing_cycle := coalesce(from_cycle, tco.cycle_of(pg_catalog.now()));
    hi tco.billing_cycle := coalesce(to_cycle, coalesce(from_cycle, tco.cycle_of(pg_catalog.now())) OPERATOR(tco.+) 2);
    c tco.billing_cycle;
    created integer := 0;
    n integer;
BEGIN
    IF hi OPERATOR(tco.<) lo THEN
        RAISE EXCEPTION 'to_cycle % is before from_cycle %', hi, lo
            USING ERRCODE = '22023', HINT = 'Pass the first cycle, then the last one.';
    END IF;
    IF (hi OPERATOR(tco.-) lo) > 1200 THEN
        RAISE EXCEPTION 'tco.prepare_cycles creates at most 1201 partitions at once (asked for % to %)', lo, hi
            USING ERRCODE = '22023', HINT = 'Prepare a shorter range of cycles.';
    END IF;
    FOR c IN
        SELECT lo OPERATOR(tco.+) i FROM pg_catalog.generate_series(0, hi OPERATOR(tco.-) lo) i
        UNION
        SELECT DISTINCT tco.cycle_of(d.period_start) FROM tco.bill_line_default d
        ORDER BY 1
    LOOP
        -- ON CONFLICT: a session preparing the same cycle at the same time
        -- makes this one wait for it, then find the partition made.
        INSERT INTO tco.bill_line_cycle (cycle, relname, range_start, range_end)
        VALUES (c, 'bill_line_p' || pg_catalog.replace(c::text, '-', '_'),
                pg_catalog.lower(tco.cycle_range(c)), pg_catalog.upper(tco.cycle_range(c)))
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS n = ROW_COUNT;
        created := created + n;
    END LOOP;
    RETURN created;
END $$;
COMMENT ON FUNCTION tco.prepare_cycles(tco.billing_cycle, tco.billing_cycle) IS 'Creates the partitions of tco.bill_line for the cycles from from_cycle (default: the current one) to to_cycle (default: two after from_cycle), and for every cycle whose lines wait in tco.bill_line_default (moving them into it). Returns the number of partitions created.';

-- The partitions of the cycles of these instants that do not exist yet
-- (tco.insert_bill_lines: lines go straight into their cycle's partition).
CREATE FUNCTION tco.prepare_cycles_of(instants timestamptz[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tco.billing_cycle;
    created integer := 0;
BEGIN
    FOR c IN
        SELECT DISTINCT tco.cycle_of(t) FROM unnest(instants) t
         WHERE t IS NOT NULL AND pg_catalog.isfinite(t)
        EXCEPT
        SELECT r.cycle FROM tco.bill_line_cycle r
        ORDER BY 1
    LOOP
        created := created + tco.prepare_cycles(c, c);
    END LOOP;
    RETURN created;
END $$;
COMMENT ON FUNCTION tco.prepare_cycles_of(timestamptz[]) IS 'Creates the partitions of tco.bill_line of the cycles containing these instants that have none yet. Returns the number created.';

-- Detach a settled cycle's partition for archiving: its table stays in
-- schema tco (tco.bill_line_cycle.relname) and can be dumped, moved or
-- dropped by the operator, and attached again.
CREATE FUNCTION tco.detach_cycle(cycle tco.billing_cycle) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tco.bill_line_cycle;
BEGIN
    PERFORM tco.require_arg(cycle, 'cycle');
    SELECT * INTO r FROM tco.bill_line_cycle b WHERE b.cycle OPERATOR(tco.=) detach_cycle.cycle FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'billing cycle % has no partition of tco.bill_line', cycle
            USING ERRCODE = '42704', HINT = 'See tco.bill_line_cycle for the cycles that have one.';
    END IF;
    IF r.detached THEN
        RAISE EXCEPTION 'billing cycle % is detached already (table tco.%)', cycle, r.relname
            USING ERRCODE = '55000', HINT = 'Attach it again with tco.attach_cycle.';
    END IF;
    -- Only a cycle settled for everything: its lines are then needed by
    -- nothing but explain_line and the FOCUS export of that cycle.
    PERFORM tco.settlement_lock_shared(cycle);
    IF NOT EXISTS (SELECT 1 FROM tco.settled_cycle s WHERE s.cycle OPERATOR(tco.=) detach_cycle.cycle AND s.org_id IS NULL) THEN
        RAISE EXCEPTION 'billing cycle % is not settled for every organization: its bill lines are still needed', cycle
            USING ERRCODE = '55000', HINT = pg_catalog.format('Settle it first: SELECT * FROM tco.settle_cycle(%L);', cycle);
    END IF;
    -- the record first: the DDL guard (src/ddl_guard.c) lets through only
    -- what agrees with it
    UPDATE tco.bill_line_cycle b SET detached = true WHERE b.cycle OPERATOR(tco.=) detach_cycle.cycle;
    EXECUTE pg_catalog.format('ALTER TABLE tco.bill_line DETACH PARTITION tco.%I', r.relname);
    RETURN pg_catalog.format('tco.%I', r.relname);
END $$;
COMMENT ON FUNCTION tco.detach_cycle(tco.billing_cycle) IS 'Detaches the partition of a cycle settled for everything from tco.bill_line (archiving): its lines leave tco.bill_line and its views; the table stays. Returns its name.';

CREATE FUNCTION tco.attach_cycle(cycle tco.billing_cycle) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tco.bill_line_cycle;
BEGIN
    PERFORM tco.require_arg(cycle, 'cycle');
    SELECT * INTO r FROM tco.bill_line_cycle b WHERE b.cycle OPERATOR(tco.=) attach_cycle.cycle FOR UPDATE;
    IF NOT FOUND OR NOT r.detached THEN
        RAISE EXCEPTION 'billing cycle % has no detached partition', cycle
            USING ERRCODE = '55000', HINT = 'See tco.bill_line_cycle for the detached cycles.';
    END IF;
    IF pg_catalog.to_regclass(pg_catalog.format('tco.%I', r.relname)) IS NULL THEN
        RAISE EXCEPTION 'the table tco.% of detached cycle % does not exist', r.relname, cycle
            USING ERRCODE = '42P01', HINT = 'Restore the archived table into schema tco under that name first.';
    END IF;
    UPDATE tco.bill_line_cycle b SET detached = false WHERE b.cycle OPERATOR(tco.=) attach_cycle.cycle;
    EXECUTE pg_catalog.format('ALTER TABLE tco.bill_line ATTACH PARTITION tco.%I FOR VALUES FROM (%L) TO (%L)',
                              r.relname, r.range_start, r.range_end);
    RETURN pg_catalog.format('tco.%I', r.relname);
END $$;
COMMENT ON FUNCTION tco.attach_cycle(tco.billing_cycle) IS 'Attaches the detached partition of a cycle to tco.bill_line again (its rows are checked against the cycle''s bounds). Returns its name.';

-- The partitions' bounds are the cycles' instants in the billing time zone:
-- a new zone is refused while a partition holds lines or is detached; empty
-- partitions (prepared ahead) are dropped and made again in the new zone
-- when needed.
CREATE FUNCTION tco.config_zone_partitions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tco.bill_line_cycle;
    busy boolean;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN NEW;
    END IF;
    IF NEW.billing_timezone IS NOT DISTINCT FROM (CASE TG_OP WHEN 'UPDATE' THEN OLD.billing_timezone ELSE 'UTC' END) THEN
        RETURN NEW;
    END IF;
    FOR r IN SELECT * FROM tco.bill_line_cycle ORDER BY cycle LOOP
        IF r.detached THEN
            busy := true;
        ELSE
            EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM tco.%I)', r.relname) INTO busy;
        END IF;
        IF busy THEN
            RAISE EXCEPTION 'the billing time zone cannot change while bill lines are partitioned by cycles of the current zone (cycle % has lines)', r.cycle
                USING ERRCODE = '55000',
                      DETAIL = 'Each partition of tco.bill_line holds the instants of one cycle in the billing time zone.',
                      HINT = 'Set the billing time zone before the first bill lines arrive.';
        END IF;
        -- the record first: the DDL guard refuses to drop a recorded partition
        DELETE FROM tco.bill_line_cycle b WHERE b.cycle OPERATOR(tco.=) r.cycle;
        EXECUTE pg_catalog.format('DROP TABLE tco.%I', r.relname);
    END LOOP;
    RETURN NEW;
END $$;
CREATE TRIGGER config_zone_partitions BEFORE INSERT OR UPDATE OF billing_timezone ON tco.config
    FOR EACH ROW EXECUTE FUNCTION tco.config_zone_partitions();

-- ==== src/sql/40_settlement.sql
-- Settlement (DESIGN sections 4, 5 and 8; rules R7-R9, R14): contract
-- discounts, benefits, statements, the per-line settlement record, the R14
-- guards on settled cycles, tco.explain_line and the BI views.  The settlement
-- run itself is C (src/settle.c).
--
-- Error codes raised here and by tco.settle_cycle:
--   TC008  R14: a settled cycle cannot change (bill line, trusteeship,
--          discount or billing time zone change that would alter it), and
--          settlement history (benefit_use, settled_line) is append-only
--   22004  a required argument is NULL
--   22023  a bad value (rate out of [0, 1), non-positive amount, bad window,
--          unknown benefit kind)
--   22003  an amount too large for settlement (int64 micro-units)
--   23503  an unknown id (organization, account, product, statement, line)
--   55000  wrong state: the cycle has not ended yet; statement already paid
--
-- Money: bill lines carry 6 decimals and settlement works on them exactly
-- (int64 micro-units in C).  Per line: discount = list * rate rounded half-up
-- to 6 decimals; benefits and due are exact to 6 decimals, so
-- list = discount + benefit + due holds exactly on every line.  Statement
-- lines hold the exact sums of their lines.  Each statement total (list,
-- discount, benefit, due) is its exact sum over the statement's lines rounded
-- half-up to 2 decimals, independently; due_total is what the payer owes.
-- Because the four totals are rounded independently, list_total can differ
-- from discount_total + benefit_total + due_total by at most 0.02.

-- ---------------------------------------------------------------------------
-- Contract discounts (R8)

CREATE TABLE tco.contract_discount (
    discount_id  bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account_id   bigint REFERENCES tco.account ON DELETE RESTRICT,
    entity_id    bigint REFERENCES tco.entity ON DELETE RESTRICT,
    product_code text REFERENCES tco.product ON UPDATE CASCADE ON DELETE RESTRICT,
    rate         numeric(7,6) NOT NULL CONSTRAINT contract_discount_rate CHECK (rate >= 0 AND rate < 1),
    valid_from   timestamptz NOT NULL DEFAULT '-infinity',
    valid_to     timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contract_discount_one_owner CHECK ((account_id IS NULL) <> (entity_id IS NULL)),
    CONSTRAINT contract_discount_window CHECK (valid_to IS NULL OR valid_to > valid_from),
    CONSTRAINT contract_discount_no_overlap EXCLUDE USING gist (
        (coalesce(account_id, 0)) WITH =, (coalesce(entity_id, 0)) WITH =,
        (coalesce(product_code, '')) WITH =, tstzrange(valid_from, valid_to) WITH &&)
);
COMMENT ON TABLE tco.contract_discount IS 'Contract discounts (R8): a rate of the list amount for an account or an entity (exactly one), for one product or all (product_code NULL), valid in [valid_from, valid_to). Windows of the same owner and product do not overlap.';
COMMENT ON COLUMN tco.contract_discount.account_id IS 'Account-level discount: the account''s own discount.';
COMMENT ON COLUMN tco.contract_discount.entity_id IS 'Entity-level discount: used by members of new-version trusteeships of that entity.';
COMMENT ON COLUMN tco.contract_discount.product_code IS 'The product it applies to; NULL for all products. A product-specific rate beats an all-products rate of the same owner.';
COMMENT ON COLUMN tco.contract_discount.rate IS 'Fraction of the list amount taken off, in [0, 1).';
COMMENT ON COLUMN tco.contract_discount.valid_from IS 'Applies to lines whose period starts at or after this instant.';
COMMENT ON COLUMN tco.contract_discount.valid_to IS 'Applies to lines whose period starts before this instant (NULL: open-ended).';

-- ---------------------------------------------------------------------------
-- Benefits (R9)

CREATE TABLE tco.benefit (
    benefit_id       bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL CONSTRAINT benefit_kind CHECK (kind IN ('coupon', 'voucher', 'stored_value_card', 'resource_pack', 'savings_plan')),
    owner_account_id bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    product_code     text REFERENCES tco.product ON UPDATE CASCADE ON DELETE RESTRICT,
    initial_amount   numeric(20,2) NOT NULL CONSTRAINT benefit_initial_positive CHECK (initial_amount > 0),
    balance          numeric(20,6) NOT NULL CONSTRAINT benefit_balance_not_negative CHECK (balance >= 0),
    valid_from       timestamptz NOT NULL,
    valid_to         timestamptz NOT NULL,
    granted_at       timestamptz NOT NULL DEFAULT now(),
    pool_org_id      bigint REFERENCES tco.organization ON DELETE RESTRICT,
    plan_discount_rate numeric(7,6),
    price            numeric(20,2),
    CONSTRAINT benefit_window CHECK (valid_to > valid_from),
    CONSTRAINT benefit_balance_within_initial CHECK (balance <= initial_amount),
    CONSTRAINT benefit_pool_voucher CHECK (pool_org_id IS NULL OR kind = 'voucher'),
    CONSTRAINT benefit_pack_product CHECK (kind <> 'resource_pack' OR product_code IS NOT NULL),
    CONSTRAINT benefit_plan_rate CHECK ((kind = 'savings_plan') = (plan_discount_rate IS NOT NULL)
                                        AND (plan_discount_rate IS NULL OR (plan_discount_rate >= 0 AND plan_discount_rate < 1))),
    CONSTRAINT benefit_plan_balance CHECK (kind <> 'savings_plan' OR balance = initial_amount),
    CONSTRAINT benefit_pack_price CHECK (price IS NULL OR (kind = 'resource_pack' AND price >= 0))
);
CREATE INDEX benefit_owner ON tco.benefit (owner_account_id) WHERE balance > 0;
COMMENT ON TABLE tco.benefit IS 'Coupons, vouchers and stored-value cards (R9). Coupons pay only their owner''s own consumption; vouchers and cards pay lines whose payer is their owner (so a manager''s are shared with its managed members, and a managed member''s own are not used).';
COMMENT ON COLUMN tco.benefit.kind IS 'resource_pack, savings_plan, coupon, voucher or stored_value_card; settlement uses them in that order (DESIGN section 5, README "Sharing").';
COMMENT ON COLUMN tco.benefit.pool_org_id IS 'Set for a voucher of that organization''s voucher pool: it pays only the lines of accounts it is shared with (tco.benefit_share), never through its owner.';
COMMENT ON COLUMN tco.benefit.plan_discount_rate IS 'Savings plans only: the discount rate of the commitment (the hourly fee is initial_amount * (1 - rate)); initial_amount is the hourly commitment.';
COMMENT ON COLUMN tco.benefit.price IS 'Resource packs only: what the owner pays for the pack, billed by the settlement of the cycle its term starts in (NULL: not billed by tco).';
COMMENT ON COLUMN tco.benefit.product_code IS 'Product scope; NULL: any product.';
COMMENT ON COLUMN tco.benefit.initial_amount IS 'Amount granted.';
COMMENT ON COLUMN tco.benefit.balance IS 'Remaining amount, exact to 6 decimals like bill lines (a use covers a line''s remaining amount exactly, so a balance can keep sub-cent remainders).';
COMMENT ON COLUMN tco.benefit.valid_from IS 'Usable for lines whose period starts at or after this instant.';
COMMENT ON COLUMN tco.benefit.valid_to IS 'Expiry: usable for lines whose period starts before this instant. Among usable benefits the one expiring first is used first, then the lowest id.';

CREATE TABLE tco.settled_cycle (
    cycle      tco.billing_cycle NOT NULL,
    org_id     bigint REFERENCES tco.organization ON DELETE RESTRICT,
    settled_at timestamptz NOT NULL DEFAULT now(),
    settled_by name NOT NULL DEFAULT current_user
);
CREATE UNIQUE INDEX settled_cycle_once ON tco.settled_cycle (cycle, coalesce(org_id, 0));
COMMENT ON TABLE tco.settled_cycle IS 'Cycles closed by tco.settle_cycle, for one organization or (org_id NULL) for everything. Lines of a settled cycle cannot change (R14).';

CREATE TABLE tco.statement (
    statement_id     bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    payer_account_id bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    cycle            tco.billing_cycle NOT NULL,
    org_id           bigint REFERENCES tco.organization ON DELETE RESTRICT,
    list_total       numeric(20,2) NOT NULL DEFAULT 0,
    discount_total   numeric(20,2) NOT NULL DEFAULT 0,
    benefit_total    numeric(20,2) NOT NULL DEFAULT 0,
    due_total        numeric(20,2) NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    paid_at          timestamptz,
    CONSTRAINT statement_one_per_payer_cycle UNIQUE (payer_account_id, cycle)
);
CREATE INDEX statement_cycle ON tco.statement (cycle, org_id);
COMMENT ON TABLE tco.statement IS 'What one payer owes for one cycle (R7: managed members have none; their consumption is on their manager''s). Totals are the exact sums of the statement''s lines rounded half-up to 2 decimals, each independently.';
COMMENT ON COLUMN tco.statement.org_id IS 'Organization of the payer at settlement (NULL: not in an organization).';
COMMENT ON COLUMN tco.statement.list_total IS 'Sum of list amounts, rounded half-up to 2 decimals.';
COMMENT ON COLUMN tco.statement.discount_total IS 'Sum of contract discounts, rounded half-up to 2 decimals.';
COMMENT ON COLUMN tco.statement.benefit_total IS 'Sum paid by coupons, vouchers and stored-value cards, rounded half-up to 2 decimals.';
COMMENT ON COLUMN tco.statement.due_total IS 'Amount the payer owes: sum of due amounts, rounded half-up to 2 decimals.';
COMMENT ON COLUMN tco.statement.paid_at IS 'When tco.pay_statement paid it (NULL: unpaid).';

CREATE TABLE tco.statement_line (
    statement_id    bigint NOT NULL REFERENCES tco.statement ON DELETE RESTRICT,
    account_id      bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    product_code    text NOT NULL,
    list_amount     numeric(20,6) NOT NULL,
    discount_amount numeric(20,6) NOT NULL,
    benefit_amount  numeric(20,6) NOT NULL,
    due_amount      numeric(20,6) NOT NULL,
    lines           integer NOT NULL CHECK (lines > 0),
    PRIMARY KEY (statement_id, account_id, product_code),
    CONSTRAINT statement_line_adds_up CHECK (list_amount = discount_amount + benefit_amount + due_amount)
);
COMMENT ON TABLE tco.statement_line IS 'A statement per consuming account and product: exact sums (6 decimals) of the settled bill lines.';
COMMENT ON COLUMN tco.statement_line.account_id IS 'The consuming account (a managed member appears on its manager''s statement with its real amounts).';
COMMENT ON COLUMN tco.statement_line.lines IS 'Number of bill lines summed.';

-- How every settled bill line was priced, packed: one row per run of lines of
-- one consuming account and product on one statement (at most one batch of
-- lines), with per-line arrays in int8 micro-units, and every benefit use of
-- those lines in use order.  One row per bill line with its index entries made
-- tco.settle_cycle many times slower than the settlement itself (issue 5).
-- Written only by tco.settle_cycle, in bulk; no foreign keys on purpose (a
-- per-row RI check would dominate the settlement time), settle_cycle writes
-- only ids it has just read or created.  tco.settled_line and tco.benefit_use
-- are views over it with the columns of the 1.0 tables.
CREATE TABLE tco.settled_pack (
    pack_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    statement_id      bigint NOT NULL,
    payer_account_id  bigint NOT NULL,
    account_id        bigint NOT NULL,
    product_code      text NOT NULL,
    cycle             tco.billing_cycle NOT NULL,
    settled_at        timestamptz NOT NULL DEFAULT now(),
    line_ids          bigint[] NOT NULL,
    list_amounts      bigint[] NOT NULL,
    discount_rates    integer[] NOT NULL,
    discount_sources  smallint[] NOT NULL,
    discount_ids      bigint[] NOT NULL,
    discount_amounts  bigint[] NOT NULL,
    benefit_amounts   bigint[] NOT NULL,
    use_line_ids      bigint[] NOT NULL,
    use_benefit_ids   bigint[] NOT NULL,
    use_amounts       bigint[] NOT NULL,
    CONSTRAINT settled_pack_lines CHECK (
        cardinality(line_ids) > 0 AND array_ndims(line_ids) = 1
        AND cardinality(list_amounts) = cardinality(line_ids)
        AND cardinality(discount_rates) IN (1, cardinality(line_ids))
        AND cardinality(discount_sources) IN (1, cardinality(line_ids))
        AND cardinality(discount_ids) IN (1, cardinality(line_ids))
        AND cardinality(discount_amounts) IN (0, cardinality(line_ids))
        AND cardinality(benefit_amounts) IN (1, cardinality(line_ids))),
    CONSTRAINT settled_pack_uses CHECK (
        cardinality(use_benefit_ids) = cardinality(use_line_ids)
        AND cardinality(use_amounts) = cardinality(use_line_ids)
        AND cardinality(use_line_ids) < 65536)
) WITH (toast_tuple_target = 8160);
CREATE INDEX settled_pack_statement ON tco.settled_pack (statement_id);
CREATE INDEX settled_pack_account ON tco.settled_pack (account_id, product_code, cycle);
COMMENT ON TABLE tco.settled_pack IS 'How settled bill lines were priced, packed per run of lines of one consuming account and product on one statement: per-line arrays (amounts in int8 micro-units) and the benefit uses of those lines in use order. Read it through the views tco.settled_line and tco.benefit_use.';
COMMENT ON COLUMN tco.settled_pack.account_id IS 'The consuming account of every line of the pack.';
COMMENT ON COLUMN tco.settled_pack.product_code IS 'The product of every line of the pack.';
COMMENT ON COLUMN tco.settled_pack.cycle IS 'The settled cycle (the cycle of every line''s period start).';
COMMENT ON COLUMN tco.settled_pack.list_amounts IS 'Per line: list amount in micro-units (due = list - discount - benefit).';
COMMENT ON COLUMN tco.settled_pack.discount_rates IS 'Per line: contract discount rate in millionths; one element when it is the same for every line of the pack (packs written since 1.4).';
COMMENT ON COLUMN tco.settled_pack.discount_sources IS 'Per line: 0 none, 1 own, 2 admin, 3 manager, 4 entity, 5 own_new_trusteeship; one element when the same for every line.';
COMMENT ON COLUMN tco.settled_pack.discount_ids IS 'Per line: the tco.contract_discount row used, 0 for none; one element when the same for every line.';
COMMENT ON COLUMN tco.settled_pack.discount_amounts IS 'Per line: discount in micro-units (packs written before 1.4); empty since 1.4: list x rate rounded half-up on the magnitude, exactly as settlement computed it (the views recompute it).';
COMMENT ON COLUMN tco.settled_pack.benefit_amounts IS 'Per line: what benefits paid, in micro-units; one element when the same for every line (packs written since 1.4).';
COMMENT ON COLUMN tco.settled_pack.use_line_ids IS 'Benefit uses in use order: the line paid; use_benefit_ids and use_amounts (micro-units) run in parallel.';

CREATE VIEW tco.settled_line WITH (security_invoker = true) AS
SELECT u.line_id, p.statement_id, p.payer_account_id,
       (u.li * 0.000001)::numeric(20,6) AS list_amount,
       (d.rate * 0.000001)::numeric(7,6) AS discount_rate,
       ('{none,own,admin,manager,entity,own_new_trusteeship}'::text[])[d.src + 1] AS discount_source,
       nullif(d.did, 0) AS discount_id,
       (d.di * 0.000001)::numeric(20,6) AS discount_amount,
       (d.be * 0.000001)::numeric(20,6) AS benefit_amount,
       ((u.li - d.di - d.be) * 0.000001)::numeric(20,6) AS due_amount
FROM tco.settled_pack p
CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_rates, p.discount_sources, p.discount_ids,
                          p.discount_amounts, p.benefit_amounts) AS u(line_id, li, rate, src, did, di, be)
-- packs written since 1.4 (src/settle_write.c) have one rate, source,
-- discount id and benefit amount for all their lines when they are the same
-- (the shorter arrays unnest padded with NULLs) and no discount amounts: list
-- x rate rounded half-up on the magnitude, exactly as settlement computed it
CROSS JOIN LATERAL (SELECT coalesce(u.rate, p.discount_rates[1]) AS rate, coalesce(u.src, p.discount_sources[1]) AS src,
                           coalesce(u.did, p.discount_ids[1]) AS did, coalesce(u.be, p.benefit_amounts[1]) AS be) k
CROSS JOIN LATERAL (SELECT k.rate, k.src, k.did, k.be,
                           coalesce(u.di, round(u.li::numeric * k.rate * 0.000001)::bigint) AS di) d;
COMMENT ON VIEW tco.settled_line IS 'How each settled bill line was priced; each line is on exactly one statement. list_amount = discount_amount + benefit_amount + due_amount exactly. A view over tco.settled_pack.';
COMMENT ON COLUMN tco.settled_line.discount_source IS 'Where the rate came from (R8): own, admin (self-pay, same entity as the admin), manager (legacy trusteeship), entity (new trusteeship), own_new_trusteeship, or none.';
COMMENT ON COLUMN tco.settled_line.discount_id IS 'The tco.contract_discount row used (NULL: none).';

CREATE VIEW tco.benefit_use WITH (security_invoker = true) AS
SELECT p.pack_id * 65536 + u.n AS use_id, u.benefit_id, u.line_id, p.statement_id,
       (u.a * 0.000001)::numeric(20,6) AS amount, p.settled_at AS at
FROM tco.settled_pack p
CROSS JOIN LATERAL unnest(p.use_benefit_ids, p.use_line_ids, p.use_amounts) WITH ORDINALITY AS u(benefit_id, line_id, a, n);
COMMENT ON VIEW tco.benefit_use IS 'Append-only record of every benefit redemption (R14): which benefit paid how much of which line, on which statement. A view over tco.settled_pack; use_id orders the uses (a line''s uses in the order they were made).';

SELECT pg_catalog.pg_extension_config_dump('tco.contract_discount', '');
SELECT pg_catalog.pg_extension_config_dump('tco.benefit', '');
SELECT pg_catalog.pg_extension_config_dump('tco.settled_cycle', '');
SELECT pg_catalog.pg_extension_config_dump('tco.statement', '');
SELECT pg_catalog.pg_extension_config_dump('tco.statement_line', '');
SELECT pg_catalog.pg_extension_config_dump('tco.settled_pack', '');

-- ---------------------------------------------------------------------------
-- Functions to grant discounts and benefits

CREATE FUNCTION tco.set_contract_discount(account_id bigint, entity_id bigint, rate numeric,
                                          product_code text DEFAULT NULL,
                                          valid_from timestamptz DEFAULT now(),
                                          valid_to timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(rate, 'rate');
    PERFORM tco.require_arg(valid_from, 'valid_from');
    IF (account_id IS NULL) = (entity_id IS NULL) THEN
        RAISE EXCEPTION 'a contract discount needs exactly one of account_id and entity_id'
            USING ERRCODE = '22023', HINT = 'Pass an account id for an account-level discount or an entity id for an entity-level one.';
    END IF;
    IF rate < 0 OR rate >= 1 OR rate <> round(rate, 6) THEN
        RAISE EXCEPTION 'discount rate % is not in [0, 1) with at most 6 decimals', rate
            USING ERRCODE = '22023', HINT = 'A rate of 0.15 takes 15% off the list amount.';
    END IF;
    IF account_id IS NOT NULL THEN
        PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = set_contract_discount.account_id), 'account', account_id);
    ELSE
        PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.entity e WHERE e.entity_id = set_contract_discount.entity_id), 'entity', entity_id);
    END IF;
    IF product_code IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tco.product p WHERE p.product_code = set_contract_discount.product_code) THEN
        RAISE EXCEPTION 'product "%" does not exist', product_code
            USING ERRCODE = '23503', HINT = 'List products in tco.product.';
    END IF;
    INSERT INTO tco.contract_discount (account_id, entity_id, product_code, rate, valid_from, valid_to)
        VALUES (account_id, entity_id, product_code, rate, valid_from, valid_to)
        RETURNING discount_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.set_contract_discount(bigint, bigint, numeric, text, timestamptz, timestamptz) IS
'Sets a contract discount for an account (entity_id NULL) or an entity (account_id NULL), for one product or all (NULL), valid in [valid_from, valid_to). Returns its id.';

-- Validate the terms shared by every benefit grant (what names the benefit in
-- the messages: 'benefit', 'voucher', 'resource pack' or 'savings plan'): the
-- amount is positive, has at most 2 decimals and is below 1e12 (22023), the
-- validity [valid_from, valid_to) is not empty (22023), and the product, when
-- given, exists (23503).  The callers refuse NULL arguments first.  STABLE,
-- not IMMUTABLE like the other require_* helpers: it reads tco.product.
CREATE FUNCTION tco.require_benefit_terms(what text, amount numeric, valid_from timestamptz,
                                          valid_to timestamptz, product_code text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF amount <= 0 OR amount <> round(amount, 2) OR amount >= 1000000000000 THEN
        RAISE EXCEPTION '% % must be positive, below 1e12 and have at most 2 decimals',
                        CASE what WHEN 'savings plan' THEN 'hourly commitment' ELSE what || ' amount' END, amount
            USING ERRCODE = '22023',
                  HINT = CASE what WHEN 'voucher' THEN 'Issue an amount such as 100.00.'
                                   WHEN 'resource pack' THEN 'Grant an amount such as 500.00.'
                                   WHEN 'savings plan' THEN 'Commit an amount per hour such as 10.00.'
                                   ELSE 'Grant an amount such as 100.00.' END;
    END IF;
    IF valid_to <= valid_from THEN
        RAISE EXCEPTION '% validity [%, %) is empty', what, valid_from, valid_to
            USING ERRCODE = '22023',
                  HINT = CASE what WHEN 'savings plan' THEN 'valid_to (the end of the term) must be after valid_from.'
                                   ELSE 'valid_to (the expiry) must be after valid_from.' END;
    END IF;
    IF product_code IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM tco.product p WHERE p.product_code = require_benefit_terms.product_code) THEN
        RAISE EXCEPTION 'product "%" does not exist', product_code
            USING ERRCODE = '23503',
                  HINT = CASE what WHEN 'resource pack' THEN 'A resource pack is for one product listed in tco.product.'
                                   WHEN 'savings plan' THEN 'List products in tco.product, or pass NULL for all products.'
                                   ELSE 'List products in tco.product, or pass NULL for any product.' END;
    END IF;
END $$;
COMMENT ON FUNCTION tco.require_benefit_terms(text, numeric, timestamptz, timestamptz, text) IS
'Raises 22023 for a benefit amount that is not positive, has more than 2 decimals or is not below 1e12, 22023 for an empty validity [valid_from, valid_to), and 23503 for a product_code (when not NULL) missing from tco.product; what names the benefit in the messages.';

CREATE FUNCTION tco.grant_benefit(kind text, owner_account_id bigint, amount numeric,
                                  valid_from timestamptz, valid_to timestamptz,
                                  product_code text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(kind, 'kind');
    PERFORM tco.require_arg(owner_account_id, 'owner_account_id');
    PERFORM tco.require_arg(amount, 'amount');
    PERFORM tco.require_arg(valid_from, 'valid_from');
    PERFORM tco.require_arg(valid_to, 'valid_to');
    IF kind NOT IN ('coupon', 'voucher', 'stored_value_card') THEN
        RAISE EXCEPTION 'unknown benefit kind "%"', kind
            USING ERRCODE = '22023', HINT = 'Use coupon, voucher or stored_value_card.';
    END IF;
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = owner_account_id), 'account', owner_account_id);
    PERFORM tco.require_benefit_terms('benefit', amount, valid_from, valid_to, product_code);
    INSERT INTO tco.benefit (kind, owner_account_id, product_code, initial_amount, balance, valid_from, valid_to)
        VALUES (kind, owner_account_id, product_code, amount, amount, valid_from, valid_to)
        RETURNING benefit_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.grant_benefit(text, bigint, numeric, timestamptz, timestamptz, text) IS
'Grants a coupon, voucher or stored-value card of `amount` to an account, usable for lines starting in [valid_from, valid_to), for one product or any (NULL). Returns its id.';

CREATE FUNCTION tco.grant_coupon(owner_account_id bigint, amount numeric, valid_to timestamptz, product_code text DEFAULT NULL)
RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.grant_benefit('coupon', owner_account_id, amount, '-infinity', valid_to, product_code)
$$;
CREATE FUNCTION tco.grant_voucher(owner_account_id bigint, amount numeric, valid_to timestamptz, product_code text DEFAULT NULL)
RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.grant_benefit('voucher', owner_account_id, amount, '-infinity', valid_to, product_code)
$$;
CREATE FUNCTION tco.grant_stored_value_card(owner_account_id bigint, amount numeric, valid_to timestamptz, product_code text DEFAULT NULL)
RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.grant_benefit('stored_value_card', owner_account_id, amount, '-infinity', valid_to, product_code)
$$;
COMMENT ON FUNCTION tco.grant_coupon(bigint, numeric, timestamptz, text) IS 'Grants a coupon (pays only its owner''s own consumption), usable until valid_to.';
COMMENT ON FUNCTION tco.grant_voucher(bigint, numeric, timestamptz, text) IS 'Grants a voucher (pays lines its owner pays, including its managed members''), usable until valid_to.';
COMMENT ON FUNCTION tco.grant_stored_value_card(bigint, numeric, timestamptz, text) IS 'Grants a stored-value card (pays lines its owner pays, including its managed members''), usable until valid_to.';

-- ---------------------------------------------------------------------------
-- Settlement

CREATE FUNCTION tco.settle_cycle(cycle tco.billing_cycle, org_id bigint DEFAULT NULL,
                                 OUT statements bigint, OUT lines bigint,
                                 OUT list_total numeric, OUT due_total numeric)
AS 'MODULE_PATHNAME', 'tco_settle_cycle'
LANGUAGE C VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION tco.settle_cycle(tco.billing_cycle, bigint) IS
'Closes a billing cycle for one organization or (NULL) everything: prices every bill line starting in it (payer, contract discount, coupons, vouchers, stored-value cards) and writes statements. Idempotent: a second call changes nothing and returns the same row. Returns the statements of the scope with their line count, list total and due total.';

-- The settlement lock of a cycle, in share mode: taken by every change of
-- bill lines or trusteeships that touches the cycle, so that it waits for a
-- settlement of that cycle in progress and no settlement starts under it.
-- An object lock only tco's code can take (src/guard.c), not an advisory
-- lock any role could take to block settlement.  Internal: executable by
-- tco_admin, not by PUBLIC (its callers are tco's triggers).
CREATE FUNCTION tco.settlement_lock_shared(c tco.billing_cycle) RETURNS void
AS 'MODULE_PATHNAME', 'tco_settlement_lock_shared'
LANGUAGE C VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION tco.settlement_lock_shared(tco.billing_cycle) IS 'Takes the settlement lock of a cycle in share mode, to the end of the transaction (conflicts only with tco.settle_cycle of that cycle).';

-- The end of the latest settled cycle that covers an organization (NULL: none).
CREATE FUNCTION tco.settled_until(p_org_id bigint) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.upper(tco.cycle_range(s.cycle))
    FROM tco.settled_cycle s
    WHERE s.org_id IS NULL OR s.org_id = p_org_id
    ORDER BY s.cycle DESC LIMIT 1
$$;
COMMENT ON FUNCTION tco.settled_until(bigint) IS 'End of the latest settled cycle covering the organization (settled for it or for everything); NULL when nothing is settled.';

CREATE FUNCTION tco.r14_settled_error(c tco.billing_cycle, what text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'R14: billing cycle % is settled: %', c, what
        USING ERRCODE = 'TC008',
              HINT = 'A settled cycle is never rewritten: correct a settled line with tco.correct_bill_line (README "After a cycle closes").';
END $$;

-- R14 on bill lines (no insert into, update of or delete from a settled
-- cycle; paid_at may be set) is checked by the statement triggers of
-- tco.bill_line, 48_bill_line_triggers.sql.

-- R14 on trusteeships: a change (establish or end, new or old value) before
-- the end of the latest settled cycle of the member's organization would
-- change payers of settled lines.  A change at instant t can change payers of
-- lines starting at or after t, so it first takes the settlement lock shared
-- on every cycle from t's to the current one (the ones a settlement could be
-- closing now), ascending: a change waits for a settlement of those cycles in
-- progress and is then refused; a settlement waits for the change to commit
-- and then settles with it.
CREATE FUNCTION tco.r14_trusteeship_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acct   bigint;
    until  timestamptz;
    moment timestamptz;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    acct := CASE WHEN TG_OP = 'DELETE' THEN OLD.member_account_id ELSE NEW.member_account_id END;
    IF TG_OP = 'INSERT' THEN
        moment := least(NEW.established_at, NEW.ended_at);
    ELSIF TG_OP = 'DELETE' THEN
        moment := least(OLD.established_at, OLD.ended_at);
    ELSE
        IF NEW.established_at IS DISTINCT FROM OLD.established_at
           OR NEW.member_account_id <> OLD.member_account_id
           OR NEW.management_account_id <> OLD.management_account_id THEN
            moment := least(NEW.established_at, OLD.established_at);
        END IF;
        IF NEW.ended_at IS DISTINCT FROM OLD.ended_at THEN
            moment := least(moment, NEW.ended_at, OLD.ended_at);
        END IF;
    END IF;
    IF moment IS NULL OR NOT isfinite(moment) THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    -- (at most the last 120 cycles: older changes are refused by R14 or
    -- belong to cycles nobody is settling.)
    PERFORM tco.settlement_lock_shared(tco.cycle_of(pg_catalog.clock_timestamp()) OPERATOR(tco.-) g)
    FROM generate_series(least(119, tco.cycle_of(pg_catalog.clock_timestamp()) OPERATOR(tco.-)
                                    tco.cycle_of(greatest(moment, pg_catalog.clock_timestamp() - interval '11 years'))),
                         0, -1) g
    ORDER BY g DESC;
    until := tco.settled_until((SELECT m.org_id FROM tco.member m WHERE m.account_id = acct));
    IF until IS NULL THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF moment < until THEN
        RAISE EXCEPTION 'R14: trusteeship % of account % changes at %, before the end of settled billing cycle %',
                coalesce(NEW.trusteeship_id, OLD.trusteeship_id), acct, moment, tco.cycle_of(until - interval '1 microsecond')
            USING ERRCODE = 'TC008',
                  HINT = format('Cycles up to %s are settled: make the change at or after %s, and book any correction as an adjustment in the next open cycle.', tco.cycle_of(until - interval '1 microsecond'), until);
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER r14_trusteeship_check BEFORE INSERT OR UPDATE OR DELETE ON tco.trusteeship
    FOR EACH ROW EXECUTE FUNCTION tco.r14_trusteeship_check();

-- R14 on contract discounts: a window that reaches into settled time would
-- reprice settled lines.
CREATE FUNCTION tco.r14_contract_discount_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    until timestamptz := (SELECT pg_catalog.upper(tco.cycle_range(cycle)) FROM tco.settled_cycle
                          ORDER BY cycle DESC LIMIT 1);
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF until IS NOT NULL AND (
         (TG_OP IN ('INSERT', 'UPDATE') AND NEW.valid_from < until)
      OR (TG_OP IN ('UPDATE', 'DELETE') AND OLD.valid_from < until
          AND (TG_OP = 'DELETE' OR (NEW.*) IS DISTINCT FROM (OLD.*)))) THEN
        RAISE EXCEPTION 'R14: contract discount % reaches into settled billing cycles (settled until %)',
                coalesce(NEW.discount_id, OLD.discount_id), until
            USING ERRCODE = 'TC008',
                  HINT = format('Start new rates at or after %s (end an old rate by adding one that starts later).', until);
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER r14_contract_discount_check BEFORE INSERT OR UPDATE OR DELETE ON tco.contract_discount
    FOR EACH ROW EXECUTE FUNCTION tco.r14_contract_discount_check();

-- R14: every boundary of settled cycles depends on the billing time zone and
-- every legacy discount on the cut-over.
CREATE FUNCTION tco.r14_config_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_zone    text := 'UTC';
    old_cutover timestamptz := '2022-08-01 12:00:00+08';
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        old_zone := OLD.billing_timezone;
        old_cutover := OLD.legacy_cutover;
    END IF;
    IF (NEW.billing_timezone IS DISTINCT FROM old_zone OR NEW.legacy_cutover IS DISTINCT FROM old_cutover)
       AND EXISTS (SELECT 1 FROM tco.settled_cycle) THEN
        RAISE EXCEPTION 'R14: the billing time zone and legacy cut-over cannot change once a cycle is settled'
            USING ERRCODE = 'TC008',
                  HINT = 'Settled cycles were cut in the current zone; keep it.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER r14_config_check BEFORE INSERT OR UPDATE ON tco.config
    FOR EACH ROW EXECUTE FUNCTION tco.r14_config_check();

-- R14: settlement history is append-only.
CREATE FUNCTION tco.r14_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'R14: % is append-only', TG_TABLE_NAME
        USING ERRCODE = 'TC008', HINT = 'Settlement history is never rewritten; book an adjustment in the next open cycle.';
END $$;
CREATE TRIGGER r14_benefit_use_append_only INSTEAD OF UPDATE OR DELETE ON tco.benefit_use
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_settled_line_append_only INSTEAD OF UPDATE OR DELETE ON tco.settled_line
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_settled_pack_append_only BEFORE UPDATE OR DELETE ON tco.settled_pack
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_settled_cycle_append_only BEFORE UPDATE OR DELETE ON tco.settled_cycle
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_statement_line_append_only BEFORE DELETE ON tco.statement_line
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_statement_append_only BEFORE DELETE ON tco.statement
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
-- TRUNCATE skips row triggers: without these, a truncate followed by a new
-- settlement would rewrite a settled cycle.  (test/security_catalog.sql
-- checks that every table guarded against DELETE is guarded against
-- TRUNCATE too.)
CREATE TRIGGER r14_settled_pack_no_truncate BEFORE TRUNCATE ON tco.settled_pack
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_settled_cycle_no_truncate BEFORE TRUNCATE ON tco.settled_cycle
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_statement_line_no_truncate BEFORE TRUNCATE ON tco.statement_line
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_statement_no_truncate BEFORE TRUNCATE ON tco.statement
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_append_only();

-- Bill lines may be deleted while their cycle is open, so TRUNCATE is
-- refused only once some cycle is settled (its lines would go with it).
CREATE FUNCTION tco.r14_bill_line_truncate_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM tco.settled_cycle) THEN
        RAISE EXCEPTION 'R14: tco.bill_line cannot be truncated once a billing cycle is settled'
            USING ERRCODE = 'TC008',
                  HINT = 'Delete the lines of open cycles with DELETE; the lines of settled cycles are never removed.';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER r14_bill_line_no_truncate BEFORE TRUNCATE ON tco.bill_line
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_bill_line_truncate_check();

-- ---------------------------------------------------------------------------
-- Payment

CREATE FUNCTION tco.pay_statement(statement_id bigint, at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st tco.statement;
    n  bigint;
BEGIN
    PERFORM tco.require_arg(statement_id, 'statement_id');
    PERFORM tco.require_arg(at, 'at');
    SELECT * INTO st FROM tco.statement s WHERE s.statement_id = pay_statement.statement_id FOR UPDATE;
    PERFORM tco.require_exists(FOUND, 'statement', statement_id);
    IF st.paid_at IS NOT NULL THEN
        RAISE EXCEPTION 'statement % was already paid at %', statement_id, st.paid_at
            USING ERRCODE = '55000', HINT = 'A statement is paid once.';
    END IF;
    -- Bill-line side only: the money ledger (tco.ledger) is another part of
    -- tco and books the payment itself; paid_at here feeds the frozen-product
    -- rule of the payer (R6).
    UPDATE tco.bill_line b SET paid_at = at
    FROM tco.settled_line sl
    WHERE sl.statement_id = st.statement_id AND b.line_id = sl.line_id AND b.paid_at IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE tco.statement s SET paid_at = at WHERE s.statement_id = st.statement_id;
    RETURN n;
END $$;
COMMENT ON FUNCTION tco.pay_statement(bigint, timestamptz) IS
'Pays a statement: sets paid_at on its bill lines and on the statement. Returns the number of lines marked paid. Error 55000 if already paid.';

-- ---------------------------------------------------------------------------
-- Explain

CREATE FUNCTION tco.explain_line(line_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    detached_cycle tco.billing_cycle;
    bl tco.bill_line;
    sl tco.settled_line;
    st tco.statement;
    after_close jsonb;
BEGIN
    PERFORM tco.require_arg(line_id, 'line_id');
    -- the line's period start from tco.bill_line_id reads one partition
    -- (36_partition.sql); lines restored without it are found all the same
    SELECT * INTO bl FROM tco.bill_line b
     WHERE b.line_id = explain_line.line_id
       AND b.period_start = (SELECT k.period_start FROM tco.bill_line_id k WHERE k.line_id = explain_line.line_id);
    IF NOT FOUND THEN
        SELECT * INTO bl FROM tco.bill_line b WHERE b.line_id = explain_line.line_id;
    END IF;
    IF NOT FOUND THEN
        SELECT r.cycle INTO detached_cycle
          FROM tco.bill_line_id k
          JOIN tco.bill_line_cycle r ON r.detached AND k.period_start >= r.range_start AND k.period_start < r.range_end
         WHERE k.line_id = explain_line.line_id;
        IF FOUND THEN
            RAISE EXCEPTION 'bill line % is in billing cycle %, whose partition of tco.bill_line is detached', line_id, detached_cycle
                USING ERRCODE = '55000',
                      HINT = pg_catalog.format('Attach it again with SELECT tco.attach_cycle(%L);', detached_cycle);
        END IF;
    END IF;
    PERFORM tco.require_exists(FOUND, 'bill line', line_id);
    -- a late line or a correction (41_late.sql): its charge cycle, when it
    -- arrived, which statement billed it, what it corrects
    SELECT jsonb_build_object('charge_cycle', k.charge_cycle::text, 'arrived_at', k.arrived_at,
                              'billing_cycle', k.billing_cycle::text, 'billed_on_statement', k.statement_id,
                              'billed_at', k.billed_at,
                              'why', CASE WHEN k.statement_id IS NULL
                                          THEN 'it arrived after its cycle was settled; the next settlement of a later cycle bills it'
                                          ELSE 'it arrived after its cycle was settled and was billed on the statement of the first cycle settled after it arrived, priced as of its own period' END)
      INTO after_close FROM tco.late_line k WHERE k.line_id = bl.line_id;
    IF bl.corrects_line_id IS NOT NULL THEN
        after_close := coalesce(after_close, '{}'::jsonb)
                       || jsonb_build_object('corrects_line_id', bl.corrects_line_id, 'correction_reason', bl.correction_reason);
    END IF;
    after_close := CASE WHEN after_close IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('late', after_close) END;
    -- the pack of the line's account, product and cycle (tco.settled_line
    -- would unnest every pack)
    SELECT u.line_id, p.statement_id, p.payer_account_id,
           (u.li * 0.000001)::numeric(20,6),
           (d.rate * 0.000001)::numeric(7,6),
           ('{none,own,admin,manager,entity,own_new_trusteeship}'::text[])[d.src + 1],
           nullif(d.did, 0),
           (d.di * 0.000001)::numeric(20,6),
           (d.be * 0.000001)::numeric(20,6),
           ((u.li - d.di - d.be) * 0.000001)::numeric(20,6)
      INTO sl
      FROM tco.settled_pack p
      CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_rates, p.discount_sources, p.discount_ids,
                                p.discount_amounts, p.benefit_amounts) AS u(line_id, li, rate, src, did, di, be)
      -- a pack's compact arrays (tco.settled_line)
      CROSS JOIN LATERAL (SELECT coalesce(u.rate, p.discount_rates[1]) AS rate, coalesce(u.src, p.discount_sources[1]) AS src,
                                 coalesce(u.did, p.discount_ids[1]) AS did, coalesce(u.be, p.benefit_amounts[1]) AS be) k
      CROSS JOIN LATERAL (SELECT k.rate, k.src, k.did, k.be,
                                 coalesce(u.di, round(u.li::numeric * k.rate * 0.000001)::bigint) AS di) d
     WHERE p.account_id = bl.account_id AND p.product_code = bl.product_code
       AND p.cycle OPERATOR(tco.=) tco.cycle_of(bl.period_start) AND u.line_id = bl.line_id;
    IF NOT FOUND THEN
        RETURN jsonb_build_object(
            'line_id', bl.line_id, 'settled', false, 'cycle', tco.cycle_of(bl.period_start)::text,
            'list_amount', bl.list_amount,
            'payer', tco.explain_payer(bl.account_id, bl.product_code, bl.period_start)) || after_close;
    END IF;
    SELECT * INTO st FROM tco.statement s WHERE s.statement_id = sl.statement_id;
    RETURN jsonb_build_object(
        'line_id', bl.line_id,
        'settled', true,
        'cycle', st.cycle::text,
        'account_id', bl.account_id,
        'product_code', bl.product_code,
        'period_start', bl.period_start,
        'statement_id', sl.statement_id,
        'payer_account_id', sl.payer_account_id,
        'payer', tco.explain_payer(bl.account_id, bl.product_code, bl.period_start),
        'list_amount', sl.list_amount,
        'discount', jsonb_build_object('rate', sl.discount_rate, 'source', sl.discount_source,
                                       'discount_id', sl.discount_id, 'amount', sl.discount_amount),
        'benefits', coalesce((SELECT jsonb_agg(jsonb_build_object('benefit_id', u.benefit_id, 'kind', b.kind,
                                                                  'owner_account_id', b.owner_account_id,
                                                                  'amount', u.amount) ORDER BY u.use_id)
                              FROM (SELECT p.pack_id * 65536 + x.n AS use_id, x.benefit_id,
                                           (x.a * 0.000001)::numeric(20,6) AS amount
                                      FROM tco.settled_pack p
                                      CROSS JOIN LATERAL unnest(p.use_benefit_ids, p.use_line_ids, p.use_amounts)
                                                 WITH ORDINALITY AS x(benefit_id, line_id, a, n)
                                     WHERE p.account_id = bl.account_id AND p.product_code = bl.product_code
                                       AND p.cycle OPERATOR(tco.=) tco.cycle_of(bl.period_start)
                                       AND x.line_id = bl.line_id) u
                              JOIN tco.benefit b USING (benefit_id)), '[]'::jsonb),
        'benefit_amount', sl.benefit_amount,
        'due_amount', sl.due_amount) || after_close;
END $$;
COMMENT ON FUNCTION tco.explain_line(bigint) IS
'Why a bill line costs what it costs: its statement and payer (with tco.explain_payer), the discount rate and its source, every benefit used and how much, and the due amount. A late or correction line also has "late": its charge cycle, when it arrived, the billing cycle and statement that billed it, and what it corrects. cycle is the cycle of the statement. An unsettled line gives {"settled": false, ...} with its payer; an unknown line is error 23503.';

-- ---------------------------------------------------------------------------
-- Views for BI tools (DESIGN section 8).  Their columns have built-in types
-- only, so that a BI tool or driver needs nothing of tco on its search_path:
-- the cycle is text YYYY-MM, with its first and last day beside it as dates
-- for date pickers.

CREATE VIEW tco.settlement_by_payer WITH (security_invoker = true) AS
SELECT s.cycle::text AS cycle, s.payer_account_id, s.org_id, s.list_total, s.discount_total, s.benefit_total,
       s.due_total, coalesce(l.lines, 0) AS lines, s.statement_id, s.paid_at,
       tco.cycle_start_date(s.cycle) AS cycle_start, tco.cycle_end_date(s.cycle) AS cycle_end
FROM tco.statement s
LEFT JOIN (SELECT statement_id, sum(lines)::bigint AS lines FROM tco.statement_line GROUP BY 1) l
       USING (statement_id);
COMMENT ON VIEW tco.settlement_by_payer IS 'One row per statement: what each payer owes per cycle (totals rounded half-up to 2 decimals).';
COMMENT ON COLUMN tco.settlement_by_payer.cycle IS 'Billing cycle as text YYYY-MM (text orders it chronologically); compare it with text: cycle = ''2023-02''.';
COMMENT ON COLUMN tco.settlement_by_payer.payer_account_id IS 'The paying account (a manager pays for its managed members).';
COMMENT ON COLUMN tco.settlement_by_payer.org_id IS 'The payer''s organization at settlement.';
COMMENT ON COLUMN tco.settlement_by_payer.list_total IS 'List amount, rounded to 2 decimals.';
COMMENT ON COLUMN tco.settlement_by_payer.discount_total IS 'Contract discounts, rounded to 2 decimals.';
COMMENT ON COLUMN tco.settlement_by_payer.benefit_total IS 'Paid by coupons, vouchers and stored-value cards, rounded to 2 decimals.';
COMMENT ON COLUMN tco.settlement_by_payer.due_total IS 'Owed by the payer, rounded to 2 decimals.';
COMMENT ON COLUMN tco.settlement_by_payer.lines IS 'Number of bill lines on the statement.';
COMMENT ON COLUMN tco.settlement_by_payer.statement_id IS 'The statement.';
COMMENT ON COLUMN tco.settlement_by_payer.paid_at IS 'When the statement was paid (NULL: unpaid).';
COMMENT ON COLUMN tco.settlement_by_payer.cycle_start IS 'First day of the cycle.';
COMMENT ON COLUMN tco.settlement_by_payer.cycle_end IS 'Last day of the cycle.';

CREATE VIEW tco.settlement_by_member WITH (security_invoker = true) AS
SELECT s.cycle::text AS cycle, s.payer_account_id, sl.account_id, sl.product_code, s.org_id,
       sl.list_amount, sl.discount_amount, sl.benefit_amount, sl.due_amount, sl.lines, s.statement_id,
       tco.cycle_start_date(s.cycle) AS cycle_start, tco.cycle_end_date(s.cycle) AS cycle_end
FROM tco.statement_line sl JOIN tco.statement s USING (statement_id);
COMMENT ON VIEW tco.settlement_by_member IS 'Per cycle, payer, consuming account and product: exact amounts (6 decimals). A managed member''s consumption shows its real list and due amounts on its manager''s statement.';
COMMENT ON COLUMN tco.settlement_by_member.cycle IS 'Billing cycle as text YYYY-MM (text orders it chronologically); compare it with text: cycle = ''2023-02''.';
COMMENT ON COLUMN tco.settlement_by_member.payer_account_id IS 'The paying account.';
COMMENT ON COLUMN tco.settlement_by_member.account_id IS 'The consuming account.';
COMMENT ON COLUMN tco.settlement_by_member.product_code IS 'The product consumed.';
COMMENT ON COLUMN tco.settlement_by_member.org_id IS 'The payer''s organization at settlement.';
COMMENT ON COLUMN tco.settlement_by_member.list_amount IS 'List amount (exact).';
COMMENT ON COLUMN tco.settlement_by_member.discount_amount IS 'Contract discount (exact).';
COMMENT ON COLUMN tco.settlement_by_member.benefit_amount IS 'Paid by benefits (exact).';
COMMENT ON COLUMN tco.settlement_by_member.due_amount IS 'Owed by the payer for this consumption (exact).';
COMMENT ON COLUMN tco.settlement_by_member.lines IS 'Number of bill lines.';
COMMENT ON COLUMN tco.settlement_by_member.statement_id IS 'The statement the amounts are on.';
COMMENT ON COLUMN tco.settlement_by_member.cycle_start IS 'First day of the cycle.';
COMMENT ON COLUMN tco.settlement_by_member.cycle_end IS 'Last day of the cycle.';

CREATE VIEW tco.settlement_by_unit WITH (security_invoker = true) AS
WITH RECURSIVE subtree (unit_id, descendant_id) AS (
    SELECT u.unit_id, u.unit_id FROM tco.org_unit u
    UNION ALL
    SELECT t.unit_id, c.unit_id FROM subtree t JOIN tco.org_unit c ON c.parent_unit_id = t.descendant_id
)
SELECT s.cycle::text AS cycle, u.unit_id, u.org_id,
       sum(sl.list_amount) AS list_total, sum(sl.discount_amount) AS discount_total,
       sum(sl.benefit_amount) AS benefit_total, sum(sl.due_amount) AS due_total,
       sum(sl.lines)::bigint AS lines,
       tco.cycle_start_date(s.cycle) AS cycle_start, tco.cycle_end_date(s.cycle) AS cycle_end
FROM tco.org_unit u
JOIN subtree t ON t.unit_id = u.unit_id
JOIN tco.member m ON m.unit_id = t.descendant_id
JOIN tco.statement_line sl ON sl.account_id = m.account_id
JOIN tco.statement s ON s.statement_id = sl.statement_id
GROUP BY s.cycle, u.unit_id, u.org_id;
COMMENT ON VIEW tco.settlement_by_unit IS 'Per cycle and unit: consumption of the members currently placed in the unit or any unit below it (exact sums, 6 decimals), whoever paid it.';
COMMENT ON COLUMN tco.settlement_by_unit.cycle IS 'Billing cycle as text YYYY-MM (text orders it chronologically); compare it with text: cycle = ''2023-02''.';
COMMENT ON COLUMN tco.settlement_by_unit.unit_id IS 'The unit; its totals cover its whole subtree.';
COMMENT ON COLUMN tco.settlement_by_unit.org_id IS 'The unit''s organization.';
COMMENT ON COLUMN tco.settlement_by_unit.list_total IS 'List amount (exact).';
COMMENT ON COLUMN tco.settlement_by_unit.discount_total IS 'Contract discounts (exact).';
COMMENT ON COLUMN tco.settlement_by_unit.benefit_total IS 'Paid by benefits (exact).';
COMMENT ON COLUMN tco.settlement_by_unit.due_total IS 'Owed for this consumption (exact).';
COMMENT ON COLUMN tco.settlement_by_unit.lines IS 'Number of bill lines.';
COMMENT ON COLUMN tco.settlement_by_unit.cycle_start IS 'First day of the cycle.';
COMMENT ON COLUMN tco.settlement_by_unit.cycle_end IS 'Last day of the cycle.';

-- ==== src/sql/41_late.sql
-- After a cycle closes (DESIGN section 5, "Late lines and corrections" and
-- "Commitments are billed"; README "After a cycle closes"): late lines,
-- corrections, the benefits a correction gives back, and the commitment
-- fees settlement bills.
--
-- Late lines.  A bill line whose cycle is already settled for its scope (the
-- whole cycle, or the organization of its account) when it arrives is
-- accepted: it stays in its cycle's partition with its true period and is
-- queued in tco.late_line by the statement trigger of tco.bill_line
-- (src/ingest.c).  The first tco.settle_cycle of a later cycle whose scope
-- covers the line (the whole cycle, or the line's organization) bills it: on
-- that cycle's statement of the line's payer, priced as of its own period
-- (payer by R6 at its period start, the contract discount valid then, the
-- benefits valid then that still have a balance), and writes the statement
-- and the billing cycle on the queue row.  Its per-line record
-- (tco.settled_pack) has the line's *charge cycle* as its cycle, so per charge
-- cycle every line is on exactly one statement; the statement's lines
-- (tco.statement_line) sum every line billed on it, late ones included.  A
-- late line not billed yet may be updated or deleted like a line of an open
-- cycle; a billed one is settled history (R14).
--
-- Corrections.  A settled line is never rewritten: tco.correct_bill_line adds
-- a correction line, a bill line with the same account, product and period
-- whose list amount is the signed difference and which references the
-- original (corrects_line_id, always the original line, also for a
-- correction of a correction) with a reason.  It is billed like a late line.
-- Negative amounts exist only on correction lines, and the net amount of a
-- line with its corrections never goes below zero (trigger
-- bill_line_correction_check).  A negative correction gives back, in this
-- order: the contract discount at the rate of the line's period (a negative
-- discount), what the payer paid for the line and its earlier corrections
-- (a negative due amount), then what benefits paid for them, last use first
-- (negative benefit uses): to the benefit's balance when the benefit is
-- still valid after the billing cycle, else as a credit to the payer's
-- balance through the ledger (kind 'refund'); what a savings plan covered
-- goes back to no one (its fee is billed per hour of commitment, used or
-- not).  Every give-back is a row of tco.benefit_return.
--
-- Commitments billed.  Settlement of a cycle first makes, for each savings
-- plan of its scope valid in the cycle, a bill line of the plan's owner of
-- product 'tco:savings_plan_fee' (its fee for the hours of its term in the
-- cycle, tco.savings_plan_fee), and for each resource pack with a price whose
-- term starts in the cycle, a line of product 'tco:resource_pack_price';
-- charge type 'prepaid' (FOCUS ChargeCategory 'Purchase').  tco.commitment_charge
-- holds one row per benefit and cycle, so a fee is billed exactly once, also
-- when the cycle is settled per organization or settled again.  Resource
-- packs and savings plans never pay these lines; contract discounts,
-- coupons, vouchers and cards pay them as any line.
--
-- Error codes: 22023 bad argument (negative new amount, empty reason, a
-- correction that does not match its original), 23503 unknown line, 23514
-- a correction that would take the net amount below zero.

CREATE TABLE tco.late_line (
    line_id       bigint PRIMARY KEY,
    account_id    bigint NOT NULL,
    period_start  timestamptz NOT NULL,
    charge_cycle  tco.billing_cycle NOT NULL,
    arrived_at    timestamptz NOT NULL DEFAULT now(),
    billing_cycle tco.billing_cycle,
    statement_id  bigint REFERENCES tco.statement ON DELETE RESTRICT,
    billed_at     timestamptz,
    CONSTRAINT late_line_billed CHECK ((statement_id IS NULL) = (billing_cycle IS NULL)
                                       AND (statement_id IS NULL) = (billed_at IS NULL)),
    CONSTRAINT late_line_billed_later CHECK (billing_cycle IS NULL OR billing_cycle > charge_cycle)
);
CREATE INDEX late_line_pending ON tco.late_line (charge_cycle) WHERE statement_id IS NULL;
CREATE INDEX late_line_statement ON tco.late_line (statement_id);
CREATE INDEX late_line_account ON tco.late_line (account_id);
COMMENT ON TABLE tco.late_line IS 'Bill lines that arrived after their cycle was settled (and correction lines of settled lines): the charge cycle they belong to, and once billed the statement and billing cycle that carry them (README "After a cycle closes").';
COMMENT ON COLUMN tco.late_line.charge_cycle IS 'The cycle of the line''s period start (FOCUS: the charge period''s cycle).';
COMMENT ON COLUMN tco.late_line.arrived_at IS 'When the line was written.';
COMMENT ON COLUMN tco.late_line.billing_cycle IS 'The cycle whose settlement billed it (NULL: not billed yet).';
COMMENT ON COLUMN tco.late_line.statement_id IS 'The statement it is billed on (of billing_cycle, of the line''s payer).';
SELECT pg_catalog.pg_extension_config_dump('tco.late_line', '');

CREATE TABLE tco.commitment_charge (
    benefit_id bigint NOT NULL REFERENCES tco.benefit ON DELETE RESTRICT,
    cycle      tco.billing_cycle NOT NULL,
    line_id    bigint NOT NULL UNIQUE,
    amount     numeric(20,2) NOT NULL CHECK (amount > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (benefit_id, cycle)
);
COMMENT ON TABLE tco.commitment_charge IS 'Commitment fees billed by settlement: the bill line of a savings plan''s fee for a cycle, or of a resource pack''s price in the cycle its term starts; one per benefit and cycle.';
SELECT pg_catalog.pg_extension_config_dump('tco.commitment_charge', '');

CREATE TABLE tco.benefit_return (
    return_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    line_id          bigint NOT NULL,
    corrects_line_id bigint NOT NULL,
    statement_id     bigint NOT NULL,
    payer_account_id bigint NOT NULL,
    benefit_id       bigint NOT NULL REFERENCES tco.benefit ON DELETE RESTRICT,
    amount           numeric(20,6) NOT NULL CHECK (amount > 0),
    returned_to      text NOT NULL CHECK (returned_to IN ('benefit', 'payer_balance', 'commitment')),
    ledger_entry_id  bigint REFERENCES tco.ledger ON DELETE RESTRICT,
    returned_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX benefit_return_benefit ON tco.benefit_return (benefit_id);
COMMENT ON TABLE tco.benefit_return IS 'What negative correction lines gave back of what benefits had paid: to the benefit''s balance (still valid), to the payer''s balance through the ledger (expired; ledger_entry_id), or to no one (a savings plan''s hour). Written by settlement.';
SELECT pg_catalog.pg_extension_config_dump('tco.benefit_return', '');

-- ---------------------------------------------------------------------------
-- Corrections

-- The original line of a line (itself, or the line a correction corrects),
-- found through tco.bill_line_id (one partition).
CREATE FUNCTION tco.bill_line_by_id(line_id bigint) RETURNS tco.bill_line
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT b FROM tco.bill_line b
     WHERE b.line_id = $1
       AND b.period_start = (SELECT k.period_start FROM tco.bill_line_id k WHERE k.line_id = $1)
$$;
COMMENT ON FUNCTION tco.bill_line_by_id(bigint) IS 'The bill line with this id, read from its own partition (NULL if none).';

-- A settled line: on a statement (its pack, by account, product and cycle).
CREATE FUNCTION tco.bill_line_is_settled(b tco.bill_line) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM tco.settled_pack p
                    WHERE p.account_id = b.account_id AND p.product_code = b.product_code
                      AND p.cycle OPERATOR(tco.=) tco.cycle_of(b.period_start)
                      AND b.line_id = ANY (p.line_ids))
$$;
COMMENT ON FUNCTION tco.bill_line_is_settled(tco.bill_line) IS 'Whether the line is on a statement (settled in its cycle, or billed as a late line).';

-- Row trigger (only rows with corrects_line_id): a correction references an
-- original line (not a correction) of the same account, product, charge
-- type and period, and the original with all its corrections stays >= 0.
-- The original is locked, so corrections of one line are made one at a time.
CREATE FUNCTION tco.bill_line_correction_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    orig tco.bill_line;
    net  numeric;
BEGIN
    IF tco.restoring() THEN
        RETURN NEW;
    END IF;
    SELECT b.* INTO orig FROM tco.bill_line b
     WHERE b.line_id = NEW.corrects_line_id
       AND b.period_start = (SELECT k.period_start FROM tco.bill_line_id k WHERE k.line_id = NEW.corrects_line_id)
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'bill line % corrects bill line %, which does not exist', NEW.line_id, NEW.corrects_line_id
            USING ERRCODE = '23503', HINT = 'A correction references the line it corrects (tco.correct_bill_line makes them).';
    END IF;
    IF orig.corrects_line_id IS NOT NULL THEN
        RAISE EXCEPTION 'bill line % corrects bill line %, which is itself a correction of bill line %',
                        NEW.line_id, NEW.corrects_line_id, orig.corrects_line_id
            USING ERRCODE = '22023', HINT = 'A correction references the original line; tco.correct_bill_line does it for you.';
    END IF;
    IF (orig.account_id, orig.product_code, orig.charge_type, orig.period_start, orig.period_end)
       IS DISTINCT FROM (NEW.account_id, NEW.product_code, NEW.charge_type, NEW.period_start, NEW.period_end) THEN
        RAISE EXCEPTION 'correction % of bill line % has another account, product, charge type or period', NEW.line_id, orig.line_id
            USING ERRCODE = '22023', HINT = 'A correction changes the amount of the same usage: copy the original''s account, product, charge type and period.';
    END IF;
    SELECT orig.list_amount + coalesce(sum(b.list_amount), 0) + NEW.list_amount INTO net
      FROM tco.bill_line b
     WHERE b.account_id = orig.account_id AND b.product_code = orig.product_code
       AND b.period_start = orig.period_start AND b.corrects_line_id = orig.line_id
       AND b.line_id <> NEW.line_id;
    IF net < 0 THEN
        RAISE EXCEPTION 'correction % would take bill line % to a net amount of %', NEW.line_id, orig.line_id, net
            USING ERRCODE = '23514', HINT = 'A line with its corrections is never below zero: correct it to zero at most.';
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION tco.correct_bill_line(line_id bigint, new_list_amount numeric, reason text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l     tco.bill_line;
    orig  tco.bill_line;
    net   numeric;
    delta numeric;
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(line_id, 'line_id');
    PERFORM tco.require_arg(new_list_amount, 'new_list_amount');
    PERFORM tco.require_arg(reason, 'reason');
    IF new_list_amount = 'NaN'::numeric OR new_list_amount < 0 OR new_list_amount >= 1e14
       OR new_list_amount <> round(new_list_amount, 6) THEN
        RAISE EXCEPTION 'argument "new_list_amount" must be an amount >= 0 with at most 6 decimals below 10^14, got %', new_list_amount
            USING ERRCODE = '22023', HINT = 'Pass the amount the line should have had, e.g. 12.50 (0 cancels it).';
    END IF;
    IF btrim(reason) = '' THEN
        RAISE EXCEPTION 'argument "reason" must not be empty'
            USING ERRCODE = '22023', HINT = 'Say why the line is corrected (re-rated usage, meter fix ...).';
    END IF;
    l := tco.bill_line_by_id(line_id);
    PERFORM tco.require_exists(l.line_id IS NOT NULL, 'bill line', line_id);
    -- the original, locked: corrections of one line are made one at a time
    SELECT b.* INTO orig FROM tco.bill_line b
     WHERE b.line_id = coalesce(l.corrects_line_id, l.line_id)
       AND b.period_start = l.period_start
       FOR UPDATE;
    SELECT orig.list_amount + coalesce(sum(b.list_amount), 0) INTO net
      FROM tco.bill_line b
     WHERE b.account_id = orig.account_id AND b.product_code = orig.product_code
       AND b.period_start = orig.period_start AND b.corrects_line_id = orig.line_id;
    delta := new_list_amount - net;
    IF delta = 0 THEN
        RETURN NULL;
    END IF;
    -- an original that is on no statement and has no correction is simply
    -- updated (its cycle is open, or it is a late line not billed yet)
    IF net = orig.list_amount AND NOT tco.bill_line_is_settled(orig) THEN
        UPDATE tco.bill_line b SET list_amount = new_list_amount
         WHERE b.line_id = orig.line_id AND b.period_start = orig.period_start;
        RETURN orig.line_id;
    END IF;
    INSERT INTO tco.bill_line (account_id, product_code, charge_type, period_start, period_end, list_amount,
                               issued_at, tags, corrects_line_id, correction_reason)
    VALUES (orig.account_id, orig.product_code, orig.charge_type, orig.period_start, orig.period_end, delta,
            now(), orig.tags, orig.line_id, reason)
    RETURNING bill_line.line_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.correct_bill_line(bigint, numeric, text) IS
'Corrects the amount of a bill line to new_list_amount (the amount the usage should have had; 0 cancels it). A settled line is never rewritten: a correction line with the signed difference, referencing the original line and the reason, is added and billed by the next settlement (README "After a cycle closes"); a line on no statement and without corrections is updated in place. Returns the id of the line written (NULL when the amount is already right). line_id may be the original or one of its corrections.';

-- ---------------------------------------------------------------------------
-- What settlement calls (src/settle.c)

-- The fee lines of the commitments of a cycle's scope, made once per benefit
-- and cycle.  Returns the number of lines made.
CREATE FUNCTION tco.bill_commitments(cycle tco.billing_cycle, org_id bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r      tstzrange;
    b      record;
    amount numeric;
    span   tstzrange;
    new_id bigint;
    n      bigint := 0;
BEGIN
    PERFORM tco.require_arg(cycle, 'cycle');
    r := tco.cycle_range(cycle);
    FOR b IN
        SELECT x.benefit_id, x.kind, x.owner_account_id, x.valid_from, x.valid_to, x.price
          FROM tco.benefit x
         WHERE ((x.kind = 'savings_plan' AND x.valid_from < upper(r) AND x.valid_to > lower(r))
                OR (x.kind = 'resource_pack' AND x.price > 0 AND x.valid_from >= lower(r) AND x.valid_from < upper(r)))
           AND (bill_commitments.org_id IS NULL
                OR x.owner_account_id IN (SELECT m.account_id FROM tco.member m WHERE m.org_id = bill_commitments.org_id))
           AND NOT EXISTS (SELECT 1 FROM tco.commitment_charge c
                            WHERE c.benefit_id = x.benefit_id AND c.cycle OPERATOR(tco.=) bill_commitments.cycle)
         ORDER BY x.benefit_id
         FOR KEY SHARE OF x
    LOOP
        IF b.kind = 'savings_plan' THEN
            amount := tco.savings_plan_fee(b.benefit_id, cycle);
            span := r * tstzrange(tco.granularity_trunc('hour', b.valid_from), tco.granularity_ceil('hour', b.valid_to));
        ELSE
            amount := b.price;
            span := tstzrange(b.valid_from, least(upper(r), b.valid_to));
        END IF;
        CONTINUE WHEN amount <= 0 OR isempty(span);
        INSERT INTO tco.product (product_code, granularity, name)
        VALUES (CASE b.kind WHEN 'savings_plan' THEN 'tco:savings_plan_fee' ELSE 'tco:resource_pack_price' END, 'month',
                CASE b.kind WHEN 'savings_plan' THEN 'Savings plan fee (billed by tco)' ELSE 'Resource pack price (billed by tco)' END)
        ON CONFLICT DO NOTHING;
        INSERT INTO tco.bill_line (account_id, product_code, charge_type, period_start, period_end, list_amount, issued_at, tags)
        VALUES (b.owner_account_id,
                CASE b.kind WHEN 'savings_plan' THEN 'tco:savings_plan_fee' ELSE 'tco:resource_pack_price' END,
                'prepaid', lower(span), upper(span), amount, lower(span),
                jsonb_build_object('tco:benefit_id', b.benefit_id::text))
        RETURNING line_id INTO new_id;
        INSERT INTO tco.commitment_charge (benefit_id, cycle, line_id, amount) VALUES (b.benefit_id, cycle, new_id, amount);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION tco.bill_commitments(tco.billing_cycle, bigint) IS
'Called by tco.settle_cycle before it prices a cycle: a bill line of each savings plan''s fee for the cycle (tco.savings_plan_fee) and of each priced resource pack whose term starts in it, to its owner, once per benefit and cycle (tco.commitment_charge). Returns the number of lines made.';

-- What a negative correction gives back: the due its original line and
-- earlier corrections left (micro-units), and what each benefit paid for
-- them net of earlier give-backs, in first-use order.  Read from the packs of
-- the line's account, product and charge cycle.
CREATE FUNCTION tco.correction_history(corrects_line_id bigint, account_id bigint, product_code text,
                                       charge_cycle text, OUT due bigint, OUT benefit_ids bigint[],
                                       OUT amounts bigint[])
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH chain AS (
        SELECT $1 AS line_id
        UNION
        SELECT b.line_id FROM tco.bill_line b
         WHERE b.account_id = $2 AND b.product_code = $3 AND b.corrects_line_id = $1
           AND b.period_start = (SELECT k.period_start FROM tco.bill_line_id k WHERE k.line_id = $1)
    ), packs AS (
        SELECT p.* FROM tco.settled_pack p
         WHERE p.account_id = $2 AND p.product_code = $3 AND p.cycle OPERATOR(tco.=) $4::tco.billing_cycle
    ), uses AS (
        SELECT u.benefit_id, sum(u.a) AS a, min(p.pack_id * 65536 + u.n) AS first_use
          FROM packs p
          CROSS JOIN LATERAL unnest(p.use_benefit_ids, p.use_line_ids, p.use_amounts) WITH ORDINALITY AS u(benefit_id, line_id, a, n)
         WHERE u.line_id IN (SELECT line_id FROM chain)
         GROUP BY u.benefit_id
    )
    SELECT (SELECT coalesce(sum(u.li - d.di - d.be), 0)::bigint
              FROM packs p
              CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_rates, p.discount_sources, p.discount_ids,
                                        p.discount_amounts, p.benefit_amounts) AS u(line_id, li, rate, src, did, di, be)
              -- a pack's compact arrays (tco.settled_line)
              CROSS JOIN LATERAL (SELECT coalesce(u.rate, p.discount_rates[1]) AS rate, coalesce(u.src, p.discount_sources[1]) AS src,
                                         coalesce(u.did, p.discount_ids[1]) AS did, coalesce(u.be, p.benefit_amounts[1]) AS be) k
              CROSS JOIN LATERAL (SELECT k.rate, k.src, k.did, k.be,
                                         coalesce(u.di, round(u.li::numeric * k.rate * 0.000001)::bigint) AS di) d
             WHERE u.line_id IN (SELECT line_id FROM chain)),
           coalesce((SELECT array_agg(benefit_id ORDER BY first_use) FROM uses WHERE a > 0), '{}'),
           coalesce((SELECT array_agg(a::bigint ORDER BY first_use) FROM uses WHERE a > 0), '{}')
$$;

-- Gives back `amount` (micro-units) of what benefit_id paid, for correction
-- line line_id billed on statement_id of payer: to the benefit while it is
-- valid after `valid_after` (the end of the billing cycle), else to the
-- payer's balance (ledger 'refund', rounded half-up to the cent); a savings
-- plan's hour goes back to no one.  Recorded in tco.benefit_return.
CREATE FUNCTION tco.return_benefit(line_id bigint, corrects_line_id bigint, statement_id bigint, payer bigint,
                                   benefit_id bigint, amount bigint, valid_after timestamptz) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b     tco.benefit;
    line  tco.bill_line;
    money numeric := amount * 0.000001;
    entry bigint;
    dest  text;
BEGIN
    -- only for a negative correction line on no statement yet, and never
    -- more than its amount in all (settlement calls it while pricing the line)
    SELECT b0.* INTO line FROM tco.bill_line b0
     WHERE b0.line_id = return_benefit.line_id
       AND b0.period_start = (SELECT k.period_start FROM tco.bill_line_id k WHERE k.line_id = return_benefit.line_id);
    IF line.line_id IS NULL OR line.corrects_line_id IS DISTINCT FROM return_benefit.corrects_line_id
       OR line.list_amount >= 0 OR amount <= 0 OR tco.bill_line_is_settled(line)
       OR coalesce((SELECT sum(r.amount) FROM tco.benefit_return r WHERE r.line_id = return_benefit.line_id), 0) + money
          > -line.list_amount THEN
        RAISE EXCEPTION 'nothing of benefit % can be given back for bill line %', benefit_id, line_id
            USING ERRCODE = '55000', HINT = 'Settlement gives back what benefits paid when it prices a negative correction line.';
    END IF;
    SELECT * INTO b FROM tco.benefit x WHERE x.benefit_id = return_benefit.benefit_id FOR NO KEY UPDATE;
    PERFORM tco.require_exists(FOUND, 'benefit', benefit_id);
    IF b.kind = 'savings_plan' THEN
        dest := 'commitment';
    ELSIF b.valid_to > valid_after THEN
        dest := 'benefit';
        UPDATE tco.benefit x SET balance = least(x.balance + money, x.initial_amount)
         WHERE x.benefit_id = return_benefit.benefit_id;
    ELSE
        dest := 'payer_balance';
        IF round(money, 2) > 0 THEN
            INSERT INTO tco.ledger (account_id, amount, kind, reference)
            VALUES (payer, round(money, 2), 'refund',
                    format('correction bill line %s: benefit %s had paid it and has expired', line_id, benefit_id))
            RETURNING entry_id INTO entry;
        END IF;
    END IF;
    INSERT INTO tco.benefit_return (line_id, corrects_line_id, statement_id, payer_account_id, benefit_id, amount,
                                    returned_to, ledger_entry_id)
    VALUES (line_id, corrects_line_id, statement_id, payer, benefit_id, money, dest, entry);
END $$;

-- Per statement, consuming account, product and charge cycle: the part of
-- each statement line that each charge cycle contributes (late and
-- correction lines are billed on a later cycle's statement).
CREATE VIEW tco.statement_line_by_charge_cycle WITH (security_invoker = true) AS
SELECT p.statement_id, p.account_id, p.product_code, p.cycle::text AS charge_cycle, s.cycle::text AS billing_cycle,
       (sum(u.li) * 0.000001)::numeric(20,6) AS list_amount,
       (sum(d.di) * 0.000001)::numeric(20,6) AS discount_amount,
       (sum(d.be) * 0.000001)::numeric(20,6) AS benefit_amount,
       (sum(u.li - d.di - d.be) * 0.000001)::numeric(20,6) AS due_amount,
       count(*) AS lines,
       (p.cycle OPERATOR(tco.<>) s.cycle) AS correction
FROM tco.settled_pack p
JOIN tco.statement s ON s.statement_id = p.statement_id
CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_rates, p.discount_sources, p.discount_ids,
                          p.discount_amounts, p.benefit_amounts) AS u(line_id, li, rate, src, did, di, be)
-- a pack's compact arrays (tco.settled_line)
CROSS JOIN LATERAL (SELECT coalesce(u.rate, p.discount_rates[1]) AS rate, coalesce(u.src, p.discount_sources[1]) AS src,
                           coalesce(u.did, p.discount_ids[1]) AS did, coalesce(u.be, p.benefit_amounts[1]) AS be) k
CROSS JOIN LATERAL (SELECT k.rate, k.src, k.did, k.be,
                           coalesce(u.di, round(u.li::numeric * k.rate * 0.000001)::bigint) AS di) d
GROUP BY p.statement_id, p.account_id, p.product_code, p.cycle, s.cycle;
COMMENT ON VIEW tco.statement_line_by_charge_cycle IS 'Each statement line split by the charge cycle of its bill lines: lines of the statement''s own cycle, and late and correction lines of earlier cycles billed on it (correction = true).';

CREATE TRIGGER bill_line_correction_check BEFORE INSERT OR UPDATE ON tco.bill_line
    FOR EACH ROW WHEN (NEW.corrects_line_id IS NOT NULL) EXECUTE FUNCTION tco.bill_line_correction_check();

-- The queue is written by tco only (the bill line trigger, settlement): a
-- billed row is settled history (R14), a pending one goes when its line is
-- deleted or changed.  Give-backs and commitment charges are append-only.
CREATE FUNCTION tco.late_line_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF OLD.statement_id IS NOT NULL THEN
        RAISE EXCEPTION 'R14: late bill line % is billed on statement % and its record cannot change', OLD.line_id, OLD.statement_id
            USING ERRCODE = 'TC008', HINT = 'Correct the line with tco.correct_bill_line.';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER late_line_guard BEFORE UPDATE OR DELETE ON tco.late_line
    FOR EACH ROW EXECUTE FUNCTION tco.late_line_guard();
CREATE TRIGGER r14_commitment_charge_append_only BEFORE UPDATE OR DELETE ON tco.commitment_charge
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_benefit_return_append_only BEFORE UPDATE OR DELETE ON tco.benefit_return
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();

-- The cycle a late line of this account and charge cycle will most likely be
-- billed in: the cycle after the latest one settled for the account's scope,
-- and at least the one after its charge cycle.  Spending alerts count a late
-- line there until it is billed (then it is on that cycle's statement).
CREATE FUNCTION tco.late_billing_cycle(account_id bigint, charge_cycle tco.billing_cycle) RETURNS tco.billing_cycle
LANGUAGE sql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN s.cycle IS NULL OR s.cycle OPERATOR(tco.<=) $2 THEN $2 OPERATOR(tco.+) 1
                ELSE s.cycle OPERATOR(tco.+) 1 END
      FROM (SELECT (SELECT x.cycle FROM tco.settled_cycle x
                     WHERE x.org_id IS NULL
                        OR x.org_id = (SELECT m.org_id FROM tco.member m WHERE m.account_id = $1)
                     ORDER BY x.cycle USING OPERATOR(tco.>) LIMIT 1) AS cycle) s
$$;
COMMENT ON FUNCTION tco.late_billing_cycle(bigint, tco.billing_cycle) IS 'The cycle whose settlement will bill a late line of this account and charge cycle, if cycles are settled in order: the one after the latest cycle settled for the account''s scope, at least the one after the charge cycle (NULL for a NULL argument).';

-- ==== src/sql/42_invoice.sql
-- Invoices (R7, seeds 000 and 004): one invoice per statement at most.
--
-- Who may issue the invoice of a statement (the statement's payer is the
-- invoice's recipient, "billed to"):
--   * the payer itself: a trusteeship manager's invoice covers its managed
--     members, because its statement already holds their lines (R7); a
--     self-pay member may issue its own;
--   * the admin of the organization the statement belongs to (statement.org_id,
--     the payer's organization at settlement): "the organization admin account
--     can ... issue invoices to members" (seed 000, self-pay mode);
--   * nobody else (TC023).  A managed member has no statement of its own and
--     therefore no invoice; it cannot issue its manager's.
-- An invoice needs its statement PAID (55000 otherwise): cloud invoices are
-- issued for the amount actually paid, and a paid statement no longer changes,
-- so the invoice amount is final.  A statement with nothing due (due_total
-- 0.00, everything paid by discounts and benefits) gets no invoice (55000).
-- Invoices are never deleted nor rewritten (TC008).  After issue, two things
-- may happen to one (README "Invoices"):
--   * it is voided (tco.void_invoice): the document is cancelled, its row
--     stays with the reason, and its statement may be invoiced again.  An
--     invoice of tco is issued for a paid statement, so voiding moves no
--     money; what an invoice for an unpaid amount would be is void-only in
--     Stripe and Lago, and Kill Bill refuses to void an invoice with
--     payments: here an invoice with a credit note cannot be voided (the
--     money has moved), and a voided invoice takes no credit note;
--   * credit notes reduce it (tco.issue_credit_note): append-only, never
--     above what is left on it (concurrent notes serialize on the invoice
--     row: exactly one of two racing for the last amount wins), each refunds
--     its amount to the payer's balance through the ledger (kind refund), and
--     tco.invoice.credited_amount / net_amount show the result.
--
-- Error codes: 22004 NULL argument, 23503 unknown statement, account or
-- invoice, 23505 statement already invoiced, 55000 statement unpaid or
-- nothing due, invoice voided, credit note above what is left, invoice with
-- credit notes voided, TC023 issuer not allowed, TC008 delete of an invoice
-- or a credit note, or an update other than a void and the credited amount.

CREATE TABLE tco.invoice (
    invoice_id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    statement_id         bigint NOT NULL REFERENCES tco.statement ON DELETE RESTRICT,
    issuer_account_id    bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    recipient_account_id bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    cycle                tco.billing_cycle NOT NULL,
    amount               numeric(20,2) NOT NULL,
    issued_at            timestamptz NOT NULL DEFAULT now(),
    issued_by            name NOT NULL DEFAULT current_user,
    voided_at            timestamptz,
    void_reason          text,
    voided_by            name,
    credited_amount      numeric(20,2) NOT NULL DEFAULT 0,
    net_amount           numeric(20,2) GENERATED ALWAYS AS (amount - credited_amount) STORED,
    CONSTRAINT invoice_void CHECK ((voided_at IS NULL) = (void_reason IS NULL) AND (voided_at IS NULL) = (voided_by IS NULL)
                                   AND (void_reason IS NULL OR btrim(void_reason) <> '')),
    CONSTRAINT invoice_credited CHECK (credited_amount >= 0 AND credited_amount <= amount)
);
-- one invoice per statement at a time: a voided one no longer counts
CREATE UNIQUE INDEX invoice_one_per_statement ON tco.invoice (statement_id) WHERE voided_at IS NULL;
CREATE INDEX invoice_recipient ON tco.invoice (recipient_account_id, cycle);
COMMENT ON TABLE tco.invoice IS 'Invoices: at most one per statement (UNIQUE, also under concurrency). Issued by the statement''s payer or by the admin of its organization, for a paid statement with something due. Append-only.';
COMMENT ON COLUMN tco.invoice.statement_id IS 'The statement invoiced (its lines are the invoice lines, see tco.invoice_line).';
COMMENT ON COLUMN tco.invoice.issuer_account_id IS 'Account that issued it: the payer itself, or the admin of the statement''s organization.';
COMMENT ON COLUMN tco.invoice.recipient_account_id IS 'Account billed: the statement''s payer (a manager for its managed members'' consumption too).';
COMMENT ON COLUMN tco.invoice.cycle IS 'Billing cycle of the statement.';
COMMENT ON COLUMN tco.invoice.amount IS 'Invoiced amount: the statement''s due_total.';
COMMENT ON COLUMN tco.invoice.issued_by IS 'Database role that inserted it.';
COMMENT ON COLUMN tco.invoice.voided_at IS 'When tco.void_invoice cancelled it (NULL: valid); its statement may then be invoiced again.';
COMMENT ON COLUMN tco.invoice.void_reason IS 'Why it was voided.';
COMMENT ON COLUMN tco.invoice.credited_amount IS 'Sum of its credit notes (tco.credit_note), refunded to the payer.';
COMMENT ON COLUMN tco.invoice.net_amount IS 'amount - credited_amount: what the invoice finally charges.';
SELECT pg_catalog.pg_extension_config_dump('tco.invoice', '');

-- Who may issue the invoice of a statement: its payer, or the admin of its
-- organization.
CREATE FUNCTION tco.may_issue_invoice(st tco.statement, issuer bigint) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT issuer = st.payer_account_id
        OR EXISTS (SELECT 1 FROM tco.organization o
                    WHERE o.org_id = st.org_id AND o.admin_account_id = issuer)
$$;
COMMENT ON FUNCTION tco.may_issue_invoice(tco.statement, bigint) IS 'Whether an account may issue the invoice of a statement: the statement''s payer, or the admin of the statement''s organization.';

-- BEFORE INSERT: fills recipient, cycle and amount from the statement and
-- enforces every rule, so a direct INSERT is checked like tco.issue_invoice.
CREATE FUNCTION tco.invoice_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st tco.statement;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.statement_id IS NULL OR NEW.issuer_account_id IS NULL THEN
        RETURN NEW;   -- the NOT NULL constraints report it
    END IF;
    -- KEY SHARE would let pay_statement run; FOR SHARE waits for it and keeps
    -- paid_at stable until this transaction ends.
    SELECT * INTO st FROM tco.statement s WHERE s.statement_id = NEW.statement_id FOR SHARE;
    PERFORM tco.require_exists(FOUND, 'statement', NEW.statement_id);
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = NEW.issuer_account_id),
                               'account', NEW.issuer_account_id);
    IF NOT tco.may_issue_invoice(st, NEW.issuer_account_id) THEN
        RAISE EXCEPTION 'account % may not issue the invoice of statement % (payer %, organization %)',
                NEW.issuer_account_id, st.statement_id, st.payer_account_id, coalesce(st.org_id::text, 'none')
            USING ERRCODE = 'TC023',
                  HINT = CASE WHEN EXISTS (SELECT 1 FROM tco.trusteeship t
                                            WHERE t.member_account_id = NEW.issuer_account_id
                                              AND t.management_account_id = st.payer_account_id)
                              THEN format('R7: account %s is in trusteeship: its invoices are issued by its management account %s.',
                                          NEW.issuer_account_id, st.payer_account_id)
                              ELSE 'Only the statement''s payer or the admin of its organization issues its invoice.' END;
    END IF;
    IF NEW.recipient_account_id IS NOT NULL AND NEW.recipient_account_id <> st.payer_account_id THEN
        RAISE EXCEPTION 'invoice recipient % is not the payer % of statement %',
                NEW.recipient_account_id, st.payer_account_id, st.statement_id
            USING ERRCODE = '23514', HINT = 'Leave recipient_account_id NULL: it is the statement''s payer.';
    END IF;
    IF st.paid_at IS NULL THEN
        RAISE EXCEPTION 'statement % (payer %, cycle %) is not paid yet', st.statement_id, st.payer_account_id, st.cycle
            USING ERRCODE = '55000', HINT = format('Pay it first with tco.pay_statement(%s); invoices are issued for paid amounts.', st.statement_id);
    END IF;
    IF st.due_total = 0 THEN
        RAISE EXCEPTION 'statement % (payer %, cycle %) has nothing due: no invoice', st.statement_id, st.payer_account_id, st.cycle
            USING ERRCODE = '55000', HINT = 'Discounts and benefits paid the whole statement; there is no amount to invoice.';
    END IF;
    IF NEW.cycle IS NOT NULL AND NEW.cycle OPERATOR(tco.<>) st.cycle
       OR NEW.amount IS NOT NULL AND NEW.amount <> st.due_total THEN
        RAISE EXCEPTION 'invoice of statement % must have cycle % and amount %', st.statement_id, st.cycle, st.due_total
            USING ERRCODE = '23514', HINT = 'Leave cycle and amount NULL: they are taken from the statement.';
    END IF;
    NEW.recipient_account_id := st.payer_account_id;
    NEW.cycle := st.cycle;
    NEW.amount := st.due_total;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION tco.invoice_check() IS 'BEFORE INSERT on tco.invoice: the statement exists and is paid with something due (55000), the issuer is its payer or its organization''s admin (TC023); fills recipient, cycle and amount from the statement.';
CREATE TRIGGER invoice_check BEFORE INSERT ON tco.invoice
    FOR EACH ROW EXECUTE FUNCTION tco.invoice_check();
CREATE TRIGGER invoice_append_only BEFORE DELETE ON tco.invoice
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();

-- BEFORE UPDATE: an invoice changes only by being voided (once, while it has
-- no credit note) and by its credited amount following its credit notes.
CREATE FUNCTION tco.invoice_update_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF (NEW.invoice_id, NEW.statement_id, NEW.issuer_account_id, NEW.recipient_account_id, NEW.amount, NEW.issued_at, NEW.issued_by)
       IS DISTINCT FROM (OLD.invoice_id, OLD.statement_id, OLD.issuer_account_id, OLD.recipient_account_id, OLD.amount, OLD.issued_at, OLD.issued_by)
       OR NEW.cycle OPERATOR(tco.<>) OLD.cycle
       OR (OLD.voided_at IS NOT NULL AND (NEW.voided_at, NEW.void_reason, NEW.voided_by)
                                         IS DISTINCT FROM (OLD.voided_at, OLD.void_reason, OLD.voided_by)) THEN
        RAISE EXCEPTION 'R14: invoice % is issued: it is never rewritten', OLD.invoice_id
            USING ERRCODE = 'TC008', HINT = 'Void it with tco.void_invoice and issue a new one, or reduce it with tco.issue_credit_note.';
    END IF;
    IF NEW.credited_amount IS DISTINCT FROM
       (SELECT coalesce(sum(c.amount), 0) FROM tco.credit_note c WHERE c.invoice_id = NEW.invoice_id) THEN
        RAISE EXCEPTION 'credited amount % of invoice % is not the sum of its credit notes', NEW.credited_amount, NEW.invoice_id
            USING ERRCODE = '23514', HINT = 'Credit an invoice with tco.issue_credit_note(invoice_id, amount, reason).';
    END IF;
    IF NEW.voided_at IS NOT NULL AND OLD.voided_at IS NULL AND NEW.credited_amount > 0 THEN
        RAISE EXCEPTION 'invoice % has credit notes (% credited): it cannot be voided', NEW.invoice_id, NEW.credited_amount
            USING ERRCODE = '55000', HINT = 'Money has moved on it: credit what is left with tco.issue_credit_note instead.';
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION tco.invoice_update_check() IS 'BEFORE UPDATE on tco.invoice: only a void (once, without credit notes) and the credited amount (the sum of its credit notes) change.';
CREATE TRIGGER invoice_update_check BEFORE UPDATE ON tco.invoice
    FOR EACH ROW EXECUTE FUNCTION tco.invoice_update_check();
CREATE TRIGGER invoice_no_truncate BEFORE TRUNCATE ON tco.invoice
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_append_only();

CREATE FUNCTION tco.issue_invoice(statement_id bigint, issuer_account_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st       tco.statement;
    existing tco.invoice;
    issuer   bigint;
    new_id   bigint;
BEGIN
    PERFORM tco.require_arg(statement_id, 'statement_id');
    -- Serializes issuers of one statement: the second waits, then sees the
    -- first one's invoice and gets a clear 23505.
    SELECT * INTO st FROM tco.statement s WHERE s.statement_id = issue_invoice.statement_id FOR UPDATE;
    PERFORM tco.require_exists(FOUND, 'statement', statement_id);
    issuer := coalesce(issuer_account_id, tco.current_account_id(), st.payer_account_id);
    -- Who may issue is checked before anything is said about the statement's invoice.
    IF NOT tco.may_issue_invoice(st, issuer) THEN
        INSERT INTO tco.invoice (statement_id, issuer_account_id) VALUES (st.statement_id, issuer);  -- raises TC023
    END IF;
    SELECT * INTO existing FROM tco.invoice i WHERE i.statement_id = st.statement_id AND i.voided_at IS NULL;
    IF FOUND THEN
        RAISE EXCEPTION 'statement % already has invoice % (issued by account %)',
                st.statement_id, existing.invoice_id, existing.issuer_account_id
            USING ERRCODE = '23505', HINT = 'A statement has one valid invoice at a time: look it up in tco.invoice, or void it first (tco.void_invoice).';
    END IF;
    INSERT INTO tco.invoice (statement_id, issuer_account_id)
        VALUES (st.statement_id, issuer)
        RETURNING invoice_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.issue_invoice(bigint, bigint) IS
'Issues the invoice of a paid statement and returns its id. issuer_account_id defaults to the account of the invoking role (tco.account_login), else the statement''s payer. Errors: 23505 already invoiced (and not voided), 55000 unpaid or nothing due, TC023 issuer not allowed (only the payer or its organization''s admin; R7: a managed member issues none).';

CREATE FUNCTION tco.void_invoice(invoice_id bigint, reason text, at timestamptz DEFAULT now()) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inv tco.invoice;
BEGIN
    PERFORM tco.require_arg(invoice_id, 'invoice_id');
    PERFORM tco.require_name(reason, 'reason');
    PERFORM tco.require_arg(at, 'at');
    SELECT * INTO inv FROM tco.invoice i WHERE i.invoice_id = void_invoice.invoice_id FOR UPDATE;
    PERFORM tco.require_exists(FOUND, 'invoice', invoice_id);
    IF inv.voided_at IS NOT NULL THEN
        RAISE EXCEPTION 'invoice % was already voided (%)', invoice_id, inv.void_reason
            USING ERRCODE = '55000', HINT = 'A voided invoice stays voided; issue a new one for its statement with tco.issue_invoice.';
    END IF;
    UPDATE tco.invoice i SET voided_at = at, void_reason = reason, voided_by = current_user
     WHERE i.invoice_id = void_invoice.invoice_id;
END $$;
COMMENT ON FUNCTION tco.void_invoice(bigint, text, timestamptz) IS
'Voids an invoice (the row stays, with the reason); its statement may be invoiced again. Moves no money: the statement stays paid. Errors: 55000 already voided or with credit notes.';

-- Credit notes: append-only reductions of an invoice, each refunded to the
-- payer's balance through the ledger.
CREATE TABLE tco.credit_note (
    credit_note_id  bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    invoice_id      bigint NOT NULL REFERENCES tco.invoice ON DELETE RESTRICT,
    amount          numeric(20,2) NOT NULL CONSTRAINT credit_note_positive CHECK (amount > 0),
    reason          text NOT NULL CONSTRAINT credit_note_reason CHECK (btrim(reason) <> ''),
    issued_at       timestamptz NOT NULL DEFAULT now(),
    issued_by       name NOT NULL DEFAULT current_user,
    ledger_entry_id bigint REFERENCES tco.ledger ON DELETE RESTRICT
);
CREATE INDEX credit_note_invoice ON tco.credit_note (invoice_id);
COMMENT ON TABLE tco.credit_note IS 'Credit notes: append-only reductions of an issued invoice, never above what is left on it; each refunds its amount to the invoice''s recipient through tco.ledger (kind refund).';
COMMENT ON COLUMN tco.credit_note.ledger_entry_id IS 'The refund in tco.ledger (set by the trigger).';
SELECT pg_catalog.pg_extension_config_dump('tco.credit_note', '');

-- BEFORE INSERT: locks the invoice (concurrent notes serialize here), refuses
-- a voided invoice and an amount above what is left, and books the refund.
CREATE FUNCTION tco.credit_note_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inv tco.invoice;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.invoice_id IS NULL OR NEW.amount IS NULL THEN
        RETURN NEW;   -- the NOT NULL constraints report it
    END IF;
    SELECT * INTO inv FROM tco.invoice i WHERE i.invoice_id = NEW.invoice_id FOR UPDATE;
    PERFORM tco.require_exists(FOUND, 'invoice', NEW.invoice_id);
    IF inv.voided_at IS NOT NULL THEN
        RAISE EXCEPTION 'invoice % is voided: no credit note', inv.invoice_id
            USING ERRCODE = '55000', HINT = 'Credit the invoice that replaced it.';
    END IF;
    IF NEW.amount > inv.net_amount THEN
        RAISE EXCEPTION 'credit note of % exceeds what is left on invoice % (% of %)', NEW.amount, inv.invoice_id, inv.net_amount, inv.amount
            USING ERRCODE = '55000', HINT = pg_catalog.format('Credit at most %s.', inv.net_amount);
    END IF;
    IF NEW.ledger_entry_id IS NOT NULL THEN
        RAISE EXCEPTION 'the refund of a credit note is booked by tco'
            USING ERRCODE = '23514', HINT = 'Leave ledger_entry_id NULL.';
    END IF;
    INSERT INTO tco.ledger (account_id, amount, kind, reference)
    VALUES (inv.recipient_account_id, NEW.amount, 'refund', pg_catalog.format('credit note of invoice %s', inv.invoice_id))
    RETURNING entry_id INTO NEW.ledger_entry_id;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION tco.credit_note_check() IS 'BEFORE INSERT on tco.credit_note: locks the invoice, refuses a voided one and an amount above what is left (55000), books the refund in tco.ledger.';
CREATE TRIGGER credit_note_check BEFORE INSERT ON tco.credit_note
    FOR EACH ROW EXECUTE FUNCTION tco.credit_note_check();

-- AFTER INSERT: the invoice's credited amount follows its notes.
CREATE FUNCTION tco.credit_note_applied() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    UPDATE tco.invoice i
       SET credited_amount = (SELECT sum(c.amount) FROM tco.credit_note c WHERE c.invoice_id = NEW.invoice_id)
     WHERE i.invoice_id = NEW.invoice_id;
    RETURN NULL;
END $$;
CREATE TRIGGER credit_note_applied AFTER INSERT ON tco.credit_note
    FOR EACH ROW EXECUTE FUNCTION tco.credit_note_applied();
CREATE TRIGGER credit_note_append_only BEFORE UPDATE OR DELETE ON tco.credit_note
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();

CREATE FUNCTION tco.issue_credit_note(invoice_id bigint, amount numeric, reason text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(invoice_id, 'invoice_id');
    PERFORM tco.require_amount(amount, 'amount');
    PERFORM tco.require_name(reason, 'reason');
    INSERT INTO tco.credit_note (invoice_id, amount, reason)
    VALUES (issue_credit_note.invoice_id, issue_credit_note.amount, issue_credit_note.reason)
    RETURNING credit_note_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.issue_credit_note(bigint, numeric, text) IS
'Issues a credit note reducing an invoice by amount (at most what is left on it), refunds it to the payer''s balance (tco.ledger, kind refund) and returns its id. Errors: 22023 bad amount, 23503 unknown invoice, 55000 voided invoice or amount above what is left.';

-- tco.invoice_line (the lines of each invoice) is in 57_billing_access.sql:
-- it filters by tco.visible_accounts(), defined in 50_access.sql.

-- ==== src/sql/44_alert.sql
-- Alerts (R11): thresholds per payer on its available credit and on its
-- spending in a billing cycle (its own consumption plus its managed members').
--
-- Kinds:
--   available_credit  fires when tco.available_credit(account) < threshold;
--                     value = the available credit, cycle = the current cycle
--                     (tco.cycle_of(now())).
--   cycle_spending    fires when the payer's spending in a cycle >= threshold;
--                     value = tco.cycle_spending(account, cycle): the list
--                     amounts (before discounts and benefits) of the bill lines
--                     it pays in that cycle, its managed members' included;
--                     late and correction lines count in the cycle whose
--                     statement bills them (41_late.sql), not in their own.
--   cycle_forecast    fires when the projected spending of a cycle >= threshold
--                     (AWS Budgets' FORECASTED): value = tco.cycle_forecast(
--                     account, cycle), the spending so far at the run rate of
--                     the elapsed part of the cycle, projected over the whole
--                     cycle (no forecast in its first day; the actual spending
--                     once the cycle is over).
-- Alerts are addressed to payers: a threshold cannot be set on an account
-- that is a managed member now (55000; its manager's thresholds cover it), and
-- a threshold of an account that has become a managed member is skipped.
--
-- Once per cycle: a threshold fires at most once per billing cycle (UNIQUE
-- (threshold_id, cycle)); it is armed again in the next cycle.  A fired alert
-- is a row of tco.alert, announced with NOTIFY when the transaction commits
-- (nothing is sent for a rolled-back one) on two channels: its payer's and
-- the admin channel (see "Channels" below).
--
-- When thresholds are evaluated (all in the transaction that made the change):
--   * tco.account UPDATE that changes balance or credit_limit (every ledger
--     movement updates the balance): available_credit of those accounts;
--   * tco.bill_line INSERT or UPDATE (statement-level, transition table):
--     cycle_spending of the lines' accounts and of their managers, for the
--     cycles of the lines;
--   * tco.settled_cycle INSERT (the end of tco.settle_cycle): both kinds, for
--     every payer with a statement of that cycle (spending from statements);
--   * creating or re-enabling a threshold: that threshold at once;
--   * tco.check_alerts(account_id) on demand.

CREATE TABLE tco.alert_threshold (
    threshold_id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    kind         text NOT NULL CONSTRAINT alert_threshold_kind CHECK (kind IN ('available_credit', 'cycle_spending', 'cycle_forecast')),
    threshold    numeric(20,2) NOT NULL,
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_threshold_once UNIQUE (account_id, kind, threshold),
    CONSTRAINT alert_threshold_spending_positive CHECK (kind NOT IN ('cycle_spending', 'cycle_forecast') OR threshold > 0)
);
COMMENT ON TABLE tco.alert_threshold IS 'R11: alert thresholds of payers: available_credit (fires when the available credit falls below it) and cycle_spending (fires when the spending of a cycle, managed members included, reaches it). Each fires at most once per billing cycle.';
COMMENT ON COLUMN tco.alert_threshold.account_id IS 'The payer (not a managed member: its manager''s thresholds cover it).';
COMMENT ON COLUMN tco.alert_threshold.kind IS 'available_credit, cycle_spending or cycle_forecast.';
COMMENT ON COLUMN tco.alert_threshold.threshold IS 'available_credit: fires when the credit is below it; cycle_spending: fires when the spending reaches it (positive).';
COMMENT ON COLUMN tco.alert_threshold.enabled IS 'Disabled thresholds are not evaluated (thresholds with alerts cannot be deleted: disable them).';

CREATE TABLE tco.alert (
    alert_id     bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    threshold_id bigint NOT NULL REFERENCES tco.alert_threshold ON DELETE RESTRICT,
    account_id   bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    kind         text NOT NULL,
    threshold    numeric(20,2) NOT NULL,
    value        numeric NOT NULL,
    cycle        tco.billing_cycle NOT NULL,
    fired_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_once_per_cycle UNIQUE (threshold_id, cycle)
);
CREATE INDEX alert_account ON tco.alert (account_id, cycle);
COMMENT ON TABLE tco.alert IS 'R11: fired alerts, append-only; each insert is also announced with NOTIFY on its payer''s channel and the admin channel (payload: the alert id; see tco.alert_channels()). A threshold fires at most once per cycle.';
COMMENT ON COLUMN tco.alert.account_id IS 'The payer the alert is addressed to.';
COMMENT ON COLUMN tco.alert.value IS 'The available credit or the cycle spending that crossed the threshold.';
COMMENT ON COLUMN tco.alert.cycle IS 'available_credit: the cycle it fired in; cycle_spending: the cycle whose spending it measures.';
SELECT pg_catalog.pg_extension_config_dump('tco.alert_threshold', '');
-- Whether any spending threshold is enabled is cached by every backend for
-- the statement trigger of tco.bill_line (src/ingest.c).
CREATE TRIGGER alert_threshold_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tco.alert_threshold
    FOR EACH STATEMENT EXECUTE FUNCTION tco.invalidate_cache();
SELECT pg_catalog.pg_extension_config_dump('tco.alert', '');

-- Spending of a payer in a cycle: list amounts of the lines it pays, its
-- managed members' included.  A cycle settled for the payer's organization is
-- read from its statement; an open one from the bill lines and the payer
-- function (R6).  Managers whose trusteeship ended up to a month before the
-- cycle can still pay lines in it (switch at the next boundary), so they are
-- searched too.
CREATE FUNCTION tco.cycle_spending(account_id bigint, cycle tco.billing_cycle) RETURNS numeric
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tstzrange;
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_arg(cycle, 'cycle');
    IF EXISTS (SELECT 1 FROM tco.settled_cycle s
                WHERE s.cycle OPERATOR(tco.=) cycle_spending.cycle
                  AND (s.org_id IS NULL
                       OR s.org_id = (SELECT m.org_id FROM tco.member m WHERE m.account_id = cycle_spending.account_id))) THEN
        RETURN coalesce((SELECT sum(sl.list_amount) FROM tco.statement st
                         JOIN tco.statement_line sl ON sl.statement_id = st.statement_id
                         WHERE st.payer_account_id = cycle_spending.account_id
                           AND st.cycle OPERATOR(tco.=) cycle_spending.cycle), 0);
    END IF;
    r := tco.cycle_range(cycle);
    RETURN coalesce((
        SELECT sum(b.list_amount) FROM tco.bill_line b
        WHERE b.account_id IN (SELECT cycle_spending.account_id
                               UNION
                               SELECT t.member_account_id FROM tco.trusteeship t
                               WHERE t.management_account_id = cycle_spending.account_id
                                 AND tstzrange(t.established_at, t.ended_at)
                                     && tstzrange(lower(r) - interval '1 month', upper(r)))
          AND b.period_start >= lower(r) AND b.period_start < upper(r)
          AND NOT EXISTS (SELECT 1 FROM tco.late_line k WHERE k.line_id = b.line_id)
          AND tco.trusteeship_effective_payer(b.account_id, b.product_code, b.period_start) = cycle_spending.account_id), 0)
         -- late and correction lines not billed yet count in the cycle that will bill them
         + coalesce((
        SELECT sum(b.list_amount) FROM tco.late_line k
        JOIN tco.bill_line b ON b.line_id = k.line_id AND b.period_start = k.period_start
        WHERE k.statement_id IS NULL
          AND tco.late_billing_cycle(k.account_id, k.charge_cycle) OPERATOR(tco.=) cycle_spending.cycle
          AND tco.trusteeship_effective_payer(b.account_id, b.product_code, b.period_start) = cycle_spending.account_id), 0);
END $$;
COMMENT ON FUNCTION tco.cycle_spending(bigint, tco.billing_cycle) IS 'R11: spending of a payer in a cycle: list amounts (before discounts and benefits) of the bill lines it pays, its managed members'' included, late and correction lines counted in the cycle that bills them (tco.late_billing_cycle until billed). From its statement once the cycle is settled.';

-- Projected spending of a payer in a cycle, seen at instant `at`: the
-- spending so far times (length of the cycle / elapsed part), rounded
-- half-up to 2 decimals.  NULL before one day of the cycle has elapsed (too
-- little to project); the actual spending once the cycle is over.
CREATE FUNCTION tco.cycle_forecast(account_id bigint, cycle tco.billing_cycle, at timestamptz DEFAULT now()) RETURNS numeric
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tstzrange;
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_arg(cycle, 'cycle');
    PERFORM tco.require_arg(at, 'at');
    r := tco.cycle_range(cycle);
    IF at >= pg_catalog.upper(r) THEN
        RETURN tco.cycle_spending(account_id, cycle);
    ELSIF at < pg_catalog.lower(r) + interval '1 day' THEN
        RETURN NULL;
    END IF;
    RETURN pg_catalog.round(tco.cycle_spending(account_id, cycle)
                            * extract(epoch FROM pg_catalog.upper(r) - pg_catalog.lower(r))
                            / extract(epoch FROM at - pg_catalog.lower(r)), 2);
END $$;
COMMENT ON FUNCTION tco.cycle_forecast(bigint, tco.billing_cycle, timestamptz) IS 'R11: projected spending of a payer in a cycle at instant at: spending so far (tco.cycle_spending) at the run rate of the elapsed part, over the whole cycle, rounded to 2 decimals; NULL in the first day; the actual spending once the cycle is over.';

-- Evaluates the enabled thresholds of the given accounts and fires those
-- crossed and not yet fired in their cycle.  Returns the number fired.
CREATE FUNCTION tco.fire_alerts(account_ids bigint[], spending_cycle tco.billing_cycle,
                                credit boolean, spending boolean) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    th       record;
    now_cycle tco.billing_cycle := tco.cycle_of(now());
    c        tco.billing_cycle;
    val      numeric;
    last_key text;
    fired    integer := 0;
    n        integer;
BEGIN
    FOR th IN
        SELECT t.threshold_id, t.account_id, t.kind, t.threshold
        FROM tco.alert_threshold t
        WHERE t.enabled AND t.account_id = ANY (account_ids)
          AND ((t.kind = 'available_credit' AND credit) OR (t.kind IN ('cycle_spending', 'cycle_forecast') AND spending))
          AND NOT EXISTS (SELECT 1 FROM tco.alert a
                          WHERE a.threshold_id = t.threshold_id
                            AND a.cycle OPERATOR(tco.=) (CASE WHEN t.kind = 'available_credit' THEN now_cycle ELSE spending_cycle END))
          AND tco.manager_at(t.account_id, now()) IS NULL
        ORDER BY t.account_id, t.kind, t.threshold_id
    LOOP
        c := CASE WHEN th.kind = 'available_credit' THEN now_cycle ELSE spending_cycle END;
        IF last_key IS DISTINCT FROM th.account_id || '/' || th.kind THEN
            val := CASE th.kind WHEN 'available_credit' THEN tco.available_credit(th.account_id)
                                WHEN 'cycle_forecast' THEN tco.cycle_forecast(th.account_id, spending_cycle)
                                ELSE tco.cycle_spending(th.account_id, spending_cycle) END;
            last_key := th.account_id || '/' || th.kind;
        END IF;
        IF (th.kind = 'available_credit' AND val < th.threshold)
           OR (th.kind IN ('cycle_spending', 'cycle_forecast') AND val >= th.threshold) THEN
            INSERT INTO tco.alert (threshold_id, account_id, kind, threshold, value, cycle)
                VALUES (th.threshold_id, th.account_id, th.kind, th.threshold, val, c)
                ON CONFLICT ON CONSTRAINT alert_once_per_cycle DO NOTHING;
            GET DIAGNOSTICS n = ROW_COUNT;
            fired := fired + n;
        END IF;
    END LOOP;
    RETURN fired;
END $$;
COMMENT ON FUNCTION tco.fire_alerts(bigint[], tco.billing_cycle, boolean, boolean) IS 'Internal: evaluates the enabled thresholds of the accounts (available credit now; spending in spending_cycle) and fires each crossed one not yet fired in its cycle. Returns the number fired.';

CREATE FUNCTION tco.check_alerts(account_id bigint DEFAULT NULL, cycle tco.billing_cycle DEFAULT NULL)
RETURNS integer
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.fire_alerts(CASE WHEN check_alerts.account_id IS NULL
                                THEN ARRAY(SELECT DISTINCT t.account_id FROM tco.alert_threshold t WHERE t.enabled)
                                ELSE ARRAY[check_alerts.account_id] END,
                           coalesce(check_alerts.cycle, tco.cycle_of(now())), true, true)
$$;
COMMENT ON FUNCTION tco.check_alerts(bigint, tco.billing_cycle) IS 'R11: evaluates the alert thresholds of one account (NULL: all) now: available credit, and spending in the cycle (default: the current one). Returns the number of alerts fired.';

CREATE FUNCTION tco.set_alert_threshold(account_id bigint, kind text, threshold numeric) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_arg(kind, 'kind');
    PERFORM tco.require_arg(threshold, 'threshold');
    IF threshold = 'NaN'::numeric OR threshold <> round(threshold, 2) THEN
        RAISE EXCEPTION 'alert threshold % has more than 2 decimals', threshold
            USING ERRCODE = '22023', HINT = 'Use an amount such as 100.00.';
    END IF;
    INSERT INTO tco.alert_threshold (account_id, kind, threshold)
        VALUES (set_alert_threshold.account_id, set_alert_threshold.kind, set_alert_threshold.threshold)
        ON CONFLICT ON CONSTRAINT alert_threshold_once DO UPDATE SET enabled = true
        RETURNING threshold_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.set_alert_threshold(bigint, text, numeric) IS 'R11: sets (or re-enables) an alert threshold of a payer: kind available_credit, cycle_spending or cycle_forecast. Evaluated at once. Returns its id. 55000 for a managed member (set it on its manager).';

-- BEFORE INSERT OR UPDATE on tco.alert_threshold: valid kind and amount, the
-- account exists and is a payer now.
CREATE FUNCTION tco.alert_threshold_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mgr bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.kind IS NOT NULL AND NEW.kind NOT IN ('available_credit', 'cycle_spending', 'cycle_forecast') THEN
        RAISE EXCEPTION 'unknown alert kind "%"', NEW.kind
            USING ERRCODE = '22023', HINT = 'Use available_credit, cycle_spending or cycle_forecast.';
    END IF;
    IF NEW.threshold IS NOT NULL AND (NEW.threshold = 'NaN'::numeric OR NEW.threshold <> round(NEW.threshold, 2)
                                      OR abs(NEW.threshold) >= 1e18
                                      OR (NEW.kind IN ('cycle_spending', 'cycle_forecast') AND NEW.threshold <= 0)) THEN
        RAISE EXCEPTION 'alert threshold % is not valid for kind %', NEW.threshold, NEW.kind
            USING ERRCODE = '22023', HINT = 'Use an amount with at most 2 decimals; a cycle_spending or cycle_forecast threshold must be positive.';
    END IF;
    IF NEW.account_id IS NULL THEN
        RETURN NEW;
    END IF;
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = NEW.account_id),
                               'account', NEW.account_id);
    mgr := tco.manager_at(NEW.account_id, now());
    IF mgr IS NOT NULL AND NEW.enabled THEN
        RAISE EXCEPTION 'R11: account % is a managed member of account %: its alerts go to its manager', NEW.account_id, mgr
            USING ERRCODE = '55000',
                  HINT = format('Set the threshold on management account %s (its spending includes its managed members).', mgr);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER alert_threshold_check BEFORE INSERT OR UPDATE ON tco.alert_threshold
    FOR EACH ROW EXECUTE FUNCTION tco.alert_threshold_check();

-- A new or re-enabled threshold is evaluated at once.
CREATE FUNCTION tco.alert_threshold_evaluate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.enabled THEN
        PERFORM tco.fire_alerts(ARRAY[NEW.account_id], tco.cycle_of(now()),
                                NEW.kind = 'available_credit', NEW.kind IN ('cycle_spending', 'cycle_forecast'));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER alert_threshold_evaluate AFTER INSERT OR UPDATE ON tco.alert_threshold
    FOR EACH ROW EXECUTE FUNCTION tco.alert_threshold_evaluate();

-- The JSON form of an alert, for client code (no longer the NOTIFY payload:
-- see "Channels" below).
CREATE FUNCTION tco.alert_payload(a tco.alert) RETURNS json
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.json_build_object(
        'alert_id', a.alert_id, 'threshold_id', a.threshold_id, 'kind', a.kind,
        'account_id', a.account_id, 'threshold', a.threshold, 'value', a.value,
        'cycle', a.cycle::text)
$$;
COMMENT ON FUNCTION tco.alert_payload(tco.alert) IS 'R11: an alert as JSON: alert_id, threshold_id, kind, account_id, threshold, value, cycle.';

-- Channels (README "Alerts in client code").  PostgreSQL has no privileges
-- on LISTEN or NOTIFY: any role that can connect may listen on any channel
-- and send on any channel.  So tco
--   * never announces on a channel whose name others can guess: each payer
--     account has a channel named tco_alerts_<32 random hex digits> and
--     tco_admin one named tco_alerts_admin_<32 random hex digits>, stored
--     in tco.alert_channel, which only tco_admin reads; a reader learns the
--     channels of the accounts whose alerts it may read (the same rule as
--     tco.alert) from tco.alert_channels();
--   * puts nothing in the payload but the alert id: what the alert says is
--     read from tco.alert, under row-level security, so a listener learns
--     nothing it could not read, and a forged notification (anyone who knows
--     a channel's name can send on it) names an alert id that does not exist
--     or that the listener cannot read, or repeats a real one;
--   * changes an account's channel name when the account joins, leaves or
--     changes organization (a reader that saw it no longer hears it), and on
--     demand with tco.rotate_alert_channels().
CREATE TABLE tco.alert_channel (
    channel    text PRIMARY KEY CONSTRAINT alert_channel_name CHECK (channel ~ '^tco_alerts_(admin_)?[0-9a-f]{32}$'),
    account_id bigint UNIQUE REFERENCES tco.account ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX alert_channel_one_admin ON tco.alert_channel ((true)) WHERE account_id IS NULL;
COMMENT ON TABLE tco.alert_channel IS 'R11: the NOTIFY channel of each payer account (account_id) and of tco_admin (account_id NULL), with unguessable names. Readers get theirs from tco.alert_channels().';
COMMENT ON COLUMN tco.alert_channel.account_id IS 'The payer whose alerts are announced on the channel; NULL for the admin channel (every alert).';
SELECT pg_catalog.pg_extension_config_dump('tco.alert_channel', '');

-- The channel of an account (NULL: the admin channel), created on first use.
CREATE FUNCTION tco.alert_channel_of(account_id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ch text;
BEGIN
    SELECT c.channel INTO ch FROM tco.alert_channel c
     WHERE c.account_id = alert_channel_of.account_id
        OR (alert_channel_of.account_id IS NULL AND c.account_id IS NULL);
    IF ch IS NULL THEN
        INSERT INTO tco.alert_channel (channel, account_id)
        VALUES ('tco_alerts_' || CASE WHEN alert_channel_of.account_id IS NULL THEN 'admin_' ELSE '' END
                || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''),
                alert_channel_of.account_id)
        ON CONFLICT DO NOTHING
        RETURNING channel INTO ch;
    END IF;
    IF ch IS NULL THEN
        -- another session created it concurrently and has committed
        SELECT c.channel INTO ch FROM tco.alert_channel c
         WHERE c.account_id = alert_channel_of.account_id
            OR (alert_channel_of.account_id IS NULL AND c.account_id IS NULL);
    END IF;
    IF ch IS NULL THEN
        RAISE EXCEPTION 'could not create the alert channel of account %', alert_channel_of.account_id
            USING ERRCODE = '40001', HINT = 'Retry the transaction.';
    END IF;
    RETURN ch;
END $$;
COMMENT ON FUNCTION tco.alert_channel_of(bigint) IS 'Internal: the NOTIFY channel of a payer account (NULL: the admin channel), created on first use.';

-- The channels the invoking role may LISTEN on: the admin channel for a
-- member of tco_admin, and one per account whose alerts it may read in
-- tco.alert (tco.visible_accounts()).
CREATE FUNCTION tco.alert_channels() RETURNS TABLE (account_id bigint, channel text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.pg_has_role(tco.invoking_role(), 'tco_admin', 'USAGE') THEN
        account_id := NULL;
        channel := tco.alert_channel_of(NULL);
        RETURN NEXT;
    END IF;
    FOR account_id IN SELECT v FROM tco.visible_accounts() v ORDER BY 1 LOOP
        channel := tco.alert_channel_of(alert_channels.account_id);
        RETURN NEXT;
    END LOOP;
END $$;
COMMENT ON FUNCTION tco.alert_channels() IS 'R11: the channels to LISTEN on for alerts: the admin channel (account_id NULL, every alert) for tco_admin, and the channel of each account whose alerts the invoking role may read. Each notification''s payload is an alert id: read the alert from tco.alert (a forged or stale id reads nothing).';

-- A new channel name for an account (NULL: every channel, the admin one
-- included); listeners must read tco.alert_channels() again.
CREATE FUNCTION tco.rotate_alert_channels(account_id bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM tco.alert_channel c
     WHERE rotate_alert_channels.account_id IS NULL OR c.account_id = rotate_alert_channels.account_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
COMMENT ON FUNCTION tco.rotate_alert_channels(bigint) IS 'R11: forgets the channel of an account (NULL: every channel); a new, unguessable name is made on next use. Returns the number of channels forgotten.';

-- An account that joins, leaves or changes organization gets a new channel
-- name, so readers that could see it before no longer hear its alerts.
CREATE FUNCTION tco.alert_channel_member_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.org_id = OLD.org_id THEN
        RETURN NULL;
    END IF;
    DELETE FROM tco.alert_channel c
     WHERE c.account_id = CASE TG_OP WHEN 'DELETE' THEN OLD.account_id ELSE NEW.account_id END;
    RETURN NULL;
END $$;
CREATE TRIGGER alert_channel_member AFTER INSERT OR DELETE OR UPDATE OF org_id ON tco.member
    FOR EACH ROW EXECUTE FUNCTION tco.alert_channel_member_trigger();

-- Every fired alert is announced on its payer's channel and on the admin
-- channel (delivered at commit), with the alert id alone as payload.
CREATE FUNCTION tco.alert_notify() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    PERFORM pg_catalog.pg_notify(tco.alert_channel_of(NEW.account_id), NEW.alert_id::text);
    PERFORM pg_catalog.pg_notify(tco.alert_channel_of(NULL), NEW.alert_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER alert_notify AFTER INSERT ON tco.alert
    FOR EACH ROW EXECUTE FUNCTION tco.alert_notify();
CREATE TRIGGER alert_append_only BEFORE UPDATE OR DELETE ON tco.alert
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER alert_no_truncate BEFORE TRUNCATE ON tco.alert
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_append_only();

-- Available credit: after balance or credit-limit changes.
CREATE FUNCTION tco.alert_account_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tco.alert_threshold t WHERE t.enabled AND t.kind = 'available_credit') THEN
        RETURN NULL;
    END IF;
    ids := ARRAY(SELECT n.account_id FROM new_accounts n JOIN old_accounts o USING (account_id)
                 WHERE (n.balance, n.credit_limit) IS DISTINCT FROM (o.balance, o.credit_limit)
                 ORDER BY 1);
    IF ids <> '{}' THEN
        PERFORM tco.fire_alerts(ids, tco.cycle_of(now()), true, false);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER alert_account AFTER UPDATE ON tco.account
    REFERENCING OLD TABLE AS old_accounts NEW TABLE AS new_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION tco.alert_account_trigger();

-- Spending: after bill lines arrive or change, for their accounts and the
-- managers that may pay them, per cycle of the lines: step 4 of the
-- statement triggers of tco.bill_line (48_bill_line_triggers.sql).

-- After a settlement: every payer with a statement in the settled scope.
CREATE FUNCTION tco.alert_settled_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tco.alert_threshold t WHERE t.enabled) THEN
        RETURN NULL;
    END IF;
    ids := ARRAY(SELECT DISTINCT s.payer_account_id FROM tco.statement s
                 WHERE s.cycle OPERATOR(tco.=) NEW.cycle AND (NEW.org_id IS NULL OR s.org_id = NEW.org_id)
                 ORDER BY 1);
    PERFORM tco.fire_alerts(ids, NEW.cycle, true, true);
    RETURN NULL;
END $$;
CREATE TRIGGER alert_settled AFTER INSERT ON tco.settled_cycle
    FOR EACH ROW EXECUTE FUNCTION tco.alert_settled_trigger();

-- ==== src/sql/45_sharing.sql
-- Sharing (R9; DESIGN sections 2 and 5): voucher pools, resource packs and
-- savings plans, shared with chosen accounts or units.  Settlement applies
-- them in C (src/settle.c, src/share.c); README "Sharing" is the manual.
--
-- Model.
--   * A voucher pool belongs to one organization.  Money enters it (fund),
--     leaves it as pool vouchers (issue: a tco.benefit row of kind voucher
--     with pool_org_id set) and comes back when a voucher is reclaimed.  Its
--     balance is the sum of its ledger (tco.voucher_pool_entry) and never
--     goes below zero.
--   * A pool voucher pays nothing through its owner: only lines of the
--     accounts it is shared with, whoever pays them.
--   * A resource pack (an amount of one product) and a savings plan (an
--     hourly commitment, optionally for one product) pay lines consumed by
--     their owner and by the accounts they are shared with.
--   * A share (tco.benefit_share) names one account or one unit; a unit
--     share covers every member placed in that unit or any unit below it.
--     A share covers lines whose period starts in [shared_at, revoked_at).
--     Who is in the unit's subtree is resolved when the cycle is settled,
--     against the unit tree and memberships of that moment (units created
--     or moved in later count; an account share covers the account only
--     while it is a member of the share's organization).
--   * Revoking a share ends it.  Revoking the last active share of a pool
--     voucher reclaims its remaining balance to the pool at once (so lines
--     not yet settled, also those before the revoke, are not paid by it any
--     more); tco.reclaim_voucher revokes every share and reclaims.  Revoking
--     a share of a pack or plan reclaims nothing: the owner keeps it.
--
-- Error codes:
--   TC020  sharing rule: this benefit cannot be shared, or the target is not
--          in the sharing organization
--   TC021  the voucher pool has not enough balance
--   TC022  a share was already revoked; shares are history and only their
--          revocation may be recorded
--   TC008  R14: a share that starts or ends in a settled cycle; the pool
--          ledger and shares are append-only
--   22004, 22023, 23503 as elsewhere (NULL, bad value, unknown id)

CREATE TABLE tco.voucher_pool (
    org_id     bigint PRIMARY KEY REFERENCES tco.organization ON DELETE RESTRICT,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tco.voucher_pool IS 'The voucher pool of an organization (R9). Its balance is the sum of its ledger, tco.voucher_pool_entry (see view tco.voucher_pool_balance).';

CREATE TABLE tco.voucher_pool_entry (
    entry_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id     bigint NOT NULL REFERENCES tco.voucher_pool ON DELETE RESTRICT,
    event      text NOT NULL CONSTRAINT voucher_pool_entry_event CHECK (event IN ('fund', 'issue', 'reclaim')),
    amount     numeric(20,6) NOT NULL,
    benefit_id bigint REFERENCES tco.benefit ON DELETE RESTRICT,
    share_id   bigint,
    at         timestamptz NOT NULL DEFAULT now(),
    by_role    name NOT NULL DEFAULT current_user,
    CONSTRAINT voucher_pool_entry_sign CHECK (CASE event WHEN 'issue' THEN amount < 0 ELSE amount > 0 END),
    CONSTRAINT voucher_pool_entry_voucher CHECK ((event = 'fund') = (benefit_id IS NULL))
);
CREATE INDEX voucher_pool_entry_org ON tco.voucher_pool_entry (org_id);
CREATE INDEX voucher_pool_entry_benefit ON tco.voucher_pool_entry (benefit_id);
COMMENT ON TABLE tco.voucher_pool_entry IS 'Append-only ledger of a voucher pool: fund (+), issue of a pool voucher (-), reclaim of a voucher''s remaining balance (+). The sum per pool never goes below zero.';
COMMENT ON COLUMN tco.voucher_pool_entry.amount IS 'Signed: positive into the pool, negative out of it.';
COMMENT ON COLUMN tco.voucher_pool_entry.share_id IS 'For a reclaim: the revoked share that triggered it (NULL: tco.reclaim_voucher on an unshared voucher).';

CREATE TABLE tco.benefit_share (
    share_id         bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    benefit_id       bigint NOT NULL REFERENCES tco.benefit ON DELETE RESTRICT,
    org_id           bigint NOT NULL REFERENCES tco.organization ON DELETE RESTRICT,
    account_id       bigint REFERENCES tco.account ON DELETE RESTRICT,
    unit_id          bigint,
    shared_at        timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz,
    shared_by        name NOT NULL DEFAULT current_user,
    revoked_by       name,
    reclaimed_amount numeric(20,6),
    CONSTRAINT benefit_share_one_target CHECK ((account_id IS NULL) <> (unit_id IS NULL)),
    CONSTRAINT benefit_share_unit_same_org FOREIGN KEY (unit_id, org_id) REFERENCES tco.org_unit (unit_id, org_id),
    CONSTRAINT benefit_share_finite CHECK (isfinite(shared_at) AND (revoked_at IS NULL OR isfinite(revoked_at))),
    CONSTRAINT benefit_share_window CHECK (revoked_at IS NULL OR revoked_at >= shared_at),
    CONSTRAINT benefit_share_reclaim CHECK (reclaimed_amount IS NULL OR (revoked_at IS NOT NULL AND reclaimed_amount >= 0))
);
CREATE UNIQUE INDEX benefit_share_active ON tco.benefit_share (benefit_id, coalesce(account_id, 0), coalesce(unit_id, 0))
    WHERE revoked_at IS NULL;
CREATE INDEX benefit_share_account ON tco.benefit_share (account_id) WHERE account_id IS NOT NULL;
CREATE INDEX benefit_share_unit ON tco.benefit_share (unit_id) WHERE unit_id IS NOT NULL;
CREATE INDEX benefit_share_org ON tco.benefit_share (org_id);
COMMENT ON TABLE tco.benefit_share IS 'History of sharing (R9): a pool voucher, resource pack or savings plan shared with one account or one unit (and its whole subtree) of an organization, for lines starting in [shared_at, revoked_at). Rows are never deleted; revoking sets revoked_at.';
COMMENT ON COLUMN tco.benefit_share.org_id IS 'The sharing organization: the pool''s for a pool voucher, the owner''s for a pack or plan. Defaults to it.';
COMMENT ON COLUMN tco.benefit_share.account_id IS 'Shared with this account (while it is a member of org_id).';
COMMENT ON COLUMN tco.benefit_share.unit_id IS 'Shared with every member of this unit and of the units below it, as the tree stands when a cycle is settled.';
COMMENT ON COLUMN tco.benefit_share.revoked_at IS 'End of the share (NULL: active). Lines starting at or after it are not covered.';
COMMENT ON COLUMN tco.benefit_share.reclaimed_amount IS 'Remaining balance of the pool voucher returned to the pool when this share was revoked (NULL: nothing reclaimed).';

SELECT pg_catalog.pg_extension_config_dump('tco.voucher_pool', '');
SELECT pg_catalog.pg_extension_config_dump('tco.voucher_pool_entry', '');
SELECT pg_catalog.pg_extension_config_dump('tco.benefit_share', '');

CREATE VIEW tco.voucher_pool_balance WITH (security_invoker = true) AS
SELECT p.org_id,
       coalesce(sum(e.amount) FILTER (WHERE e.event = 'fund'), 0) AS funded,
       coalesce(-sum(e.amount) FILTER (WHERE e.event = 'issue'), 0) AS issued,
       coalesce(sum(e.amount) FILTER (WHERE e.event = 'reclaim'), 0) AS reclaimed,
       coalesce(sum(e.amount), 0) AS balance
FROM tco.voucher_pool p LEFT JOIN tco.voucher_pool_entry e USING (org_id)
GROUP BY p.org_id;
COMMENT ON VIEW tco.voucher_pool_balance IS 'Per voucher pool: money funded, issued as vouchers, reclaimed, and the balance available to issue (funded - issued + reclaimed). Runs with the caller''s rights: a reader sees the pool of the organization it administers.';
COMMENT ON COLUMN tco.voucher_pool_balance.balance IS 'Available to issue as new pool vouchers.';

-- ---------------------------------------------------------------------------
-- Rules (triggers: they hold for direct INSERT/UPDATE/DELETE too)

-- The pool balance never goes below zero.  The pool row is locked first, so
-- concurrent entries of one pool are checked one after the other.
CREATE FUNCTION tco.voucher_pool_entry_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    total numeric;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    PERFORM 1 FROM tco.voucher_pool p WHERE p.org_id = NEW.org_id FOR UPDATE;
    SELECT sum(e.amount) INTO total FROM tco.voucher_pool_entry e WHERE e.org_id = NEW.org_id;
    IF total < 0 THEN
        RAISE EXCEPTION 'voucher pool of organization % has not enough balance: % of % would leave %',
                NEW.org_id, NEW.event, -NEW.amount, total
            USING ERRCODE = 'TC021',
                  HINT = 'Fund the pool with tco.fund_voucher_pool() or reclaim unused vouchers with tco.reclaim_voucher().';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER voucher_pool_entry_check AFTER INSERT ON tco.voucher_pool_entry
    FOR EACH ROW EXECUTE FUNCTION tco.voucher_pool_entry_check();
CREATE TRIGGER voucher_pool_entry_append_only BEFORE UPDATE OR DELETE ON tco.voucher_pool_entry
    FOR EACH ROW EXECUTE FUNCTION tco.append_only();
CREATE TRIGGER voucher_pool_entry_no_truncate BEFORE TRUNCATE ON tco.voucher_pool_entry
    FOR EACH STATEMENT EXECUTE FUNCTION tco.append_only();

-- A pool voucher is money taken from the pool: inserting one books the issue
-- (and fails when the pool cannot pay it); its amount, pool, owner and kind
-- never change, its balance only goes down (settlement, reclaim), and it is
-- never deleted.
CREATE FUNCTION tco.pool_voucher_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.pool_org_id IS NOT NULL THEN
            IF NOT EXISTS (SELECT 1 FROM tco.voucher_pool p WHERE p.org_id = NEW.pool_org_id) THEN
                RAISE EXCEPTION 'organization % has no voucher pool', NEW.pool_org_id
                    USING ERRCODE = '23503', HINT = 'Create and fund it with tco.fund_voucher_pool().';
            END IF;
            IF NEW.balance <> NEW.initial_amount THEN
                RAISE EXCEPTION 'pool voucher % must start with its whole amount as balance', NEW.benefit_id
                    USING ERRCODE = '22023', HINT = 'Issue pool vouchers with tco.issue_pool_voucher().';
            END IF;
            INSERT INTO tco.voucher_pool_entry (org_id, event, amount, benefit_id)
                VALUES (NEW.pool_org_id, 'issue', -NEW.initial_amount, NEW.benefit_id);
        END IF;
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.pool_org_id IS NOT NULL THEN
            RAISE EXCEPTION 'pool voucher % cannot be deleted', OLD.benefit_id
                USING ERRCODE = 'TC008', HINT = 'Reclaim its remaining balance with tco.reclaim_voucher() instead.';
        END IF;
        RETURN OLD;
    END IF;
    IF (OLD.pool_org_id IS NOT NULL OR NEW.pool_org_id IS NOT NULL)
       AND (NEW.pool_org_id IS DISTINCT FROM OLD.pool_org_id OR NEW.kind <> OLD.kind
            OR NEW.initial_amount <> OLD.initial_amount OR NEW.balance > OLD.balance) THEN
        RAISE EXCEPTION 'pool voucher % cannot change its pool, kind or amount, and its balance only goes down', NEW.benefit_id
            USING ERRCODE = 'TC020', HINT = 'Issue a new pool voucher with tco.issue_pool_voucher() instead.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER pool_voucher_issue AFTER INSERT ON tco.benefit
    FOR EACH ROW EXECUTE FUNCTION tco.pool_voucher_check();
CREATE TRIGGER pool_voucher_check BEFORE UPDATE OR DELETE ON tco.benefit
    FOR EACH ROW EXECUTE FUNCTION tco.pool_voucher_check();

-- Whether an account is in the subtree of a unit now.
CREATE FUNCTION tco.unit_subtree(p_unit_id bigint) RETURNS SETOF bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE sub(unit_id) AS (
        SELECT p_unit_id
        UNION
        SELECT u.unit_id FROM sub JOIN tco.org_unit u ON u.parent_unit_id = sub.unit_id
    )
    SELECT unit_id FROM sub
$$;
COMMENT ON FUNCTION tco.unit_subtree(bigint) IS 'A unit and every unit below it, as the tree stands now.';

CREATE FUNCTION tco.benefit_share_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b       tco.benefit;
    owner_org bigint;
    until   timestamptz;
    others  boolean;
    amount  numeric;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'share % cannot be deleted: shares are history', OLD.share_id
            USING ERRCODE = 'TC008', HINT = 'Revoke it with tco.revoke_share() instead.';
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT * INTO b FROM tco.benefit x WHERE x.benefit_id = NEW.benefit_id;
        PERFORM tco.require_exists(FOUND, 'benefit', NEW.benefit_id);
        IF b.pool_org_id IS NOT NULL THEN
            owner_org := b.pool_org_id;
        ELSIF b.kind IN ('resource_pack', 'savings_plan') THEN
            owner_org := (SELECT m.org_id FROM tco.member m WHERE m.account_id = b.owner_account_id);
            IF owner_org IS NULL THEN
                RAISE EXCEPTION 'R9: % % of account % cannot be shared: its owner is in no organization',
                        b.kind, b.benefit_id, b.owner_account_id
                    USING ERRCODE = 'TC020', HINT = 'Resource packs and savings plans are shared inside their owner''s organization.';
            END IF;
        ELSE
            RAISE EXCEPTION 'R9: % % cannot be shared', b.kind, b.benefit_id
                USING ERRCODE = 'TC020',
                      HINT = 'Only pool vouchers, resource packs and savings plans are shared. A manager''s own vouchers and cards already pay its managed members'' lines; coupons are never shared.';
        END IF;
        IF NEW.org_id IS NULL THEN
            NEW.org_id := owner_org;
        ELSIF NEW.org_id <> owner_org THEN
            RAISE EXCEPTION 'R9: benefit % belongs to organization %, not %', b.benefit_id, owner_org, NEW.org_id
                USING ERRCODE = 'TC020', HINT = 'Share it inside its own organization (leave org_id to its default).';
        END IF;
        IF NEW.account_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM tco.member m WHERE m.account_id = NEW.account_id AND m.org_id = NEW.org_id) THEN
            RAISE EXCEPTION 'R9: benefit % cannot be shared with account %: not a member of organization %',
                    b.benefit_id, NEW.account_id, NEW.org_id
                USING ERRCODE = 'TC020', HINT = 'Share with members of the benefit''s organization, or with one of its units.';
        END IF;
        IF NEW.unit_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM tco.org_unit u WHERE u.unit_id = NEW.unit_id AND u.org_id = NEW.org_id) THEN
            RAISE EXCEPTION 'R9: benefit % cannot be shared with unit %: not a unit of organization %',
                    b.benefit_id, NEW.unit_id, NEW.org_id
                USING ERRCODE = 'TC020', HINT = 'List the organization''s units in tco.org_unit.';
        END IF;
        NEW.reclaimed_amount := NULL;
        until := tco.settled_until(NEW.org_id);
        IF until IS NOT NULL AND (NEW.shared_at < until OR NEW.revoked_at < until) THEN
            RAISE EXCEPTION 'R14: share of benefit % starts or ends at %, before the end of settled billing cycle %',
                    b.benefit_id, least(NEW.shared_at, NEW.revoked_at), tco.cycle_of(until - interval '1 microsecond')
                USING ERRCODE = 'TC008', HINT = format('Share from %s on.', until);
        END IF;
        RETURN NEW;
    END IF;

    -- UPDATE: only the revocation may be recorded, once.
    IF (NEW.share_id, NEW.benefit_id, NEW.org_id, NEW.account_id, NEW.unit_id, NEW.shared_at, NEW.shared_by)
       IS DISTINCT FROM (OLD.share_id, OLD.benefit_id, OLD.org_id, OLD.account_id, OLD.unit_id, OLD.shared_at, OLD.shared_by) THEN
        RAISE EXCEPTION 'share % cannot change: only its revocation is recorded', OLD.share_id
            USING ERRCODE = 'TC022', HINT = 'Revoke it with tco.revoke_share() and share again.';
    END IF;
    IF OLD.revoked_at IS NOT NULL THEN
        IF (NEW.revoked_at, NEW.revoked_by, NEW.reclaimed_amount) IS DISTINCT FROM (OLD.revoked_at, OLD.revoked_by, OLD.reclaimed_amount) THEN
            RAISE EXCEPTION 'share % was already revoked at %', OLD.share_id, OLD.revoked_at
                USING ERRCODE = 'TC022', HINT = 'A share is revoked once.';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.revoked_at IS NULL THEN
        IF (NEW.revoked_by, NEW.reclaimed_amount) IS DISTINCT FROM (OLD.revoked_by, OLD.reclaimed_amount) THEN
            RAISE EXCEPTION 'share % is active: nothing to record', OLD.share_id
                USING ERRCODE = 'TC022', HINT = 'Set revoked_at to revoke it.';
        END IF;
        RETURN NEW;
    END IF;
    until := tco.settled_until(OLD.org_id);
    IF until IS NOT NULL AND NEW.revoked_at < until THEN
        RAISE EXCEPTION 'R14: share % of benefit % cannot end at %, before the end of settled billing cycle %',
                OLD.share_id, OLD.benefit_id, NEW.revoked_at, tco.cycle_of(until - interval '1 microsecond')
            USING ERRCODE = 'TC008', HINT = format('Revoke at or after %s.', until);
    END IF;
    NEW.revoked_by := coalesce(NEW.revoked_by, current_user);
    NEW.reclaimed_amount := NULL;
    -- Reclaim: the benefit row is locked before looking at the other shares,
    -- so that of two concurrent revokes the later sees the earlier, and a
    -- settlement holding the row (it locks the benefits it loads) finishes
    -- first: a balance is either spent or reclaimed, never both.
    SELECT * INTO b FROM tco.benefit x WHERE x.benefit_id = OLD.benefit_id FOR UPDATE;
    IF b.pool_org_id IS NOT NULL THEN
        SELECT EXISTS (SELECT 1 FROM tco.benefit_share s
                        WHERE s.benefit_id = OLD.benefit_id AND s.share_id <> OLD.share_id AND s.revoked_at IS NULL)
          INTO others;
        IF NOT others THEN
            amount := b.balance;
            IF amount > 0 THEN
                UPDATE tco.benefit x SET balance = 0 WHERE x.benefit_id = b.benefit_id;
                INSERT INTO tco.voucher_pool_entry (org_id, event, amount, benefit_id, share_id)
                    VALUES (b.pool_org_id, 'reclaim', amount, b.benefit_id, OLD.share_id);
            END IF;
            NEW.reclaimed_amount := amount;
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER benefit_share_check BEFORE INSERT OR UPDATE OR DELETE ON tco.benefit_share
    FOR EACH ROW EXECUTE FUNCTION tco.benefit_share_check();
CREATE TRIGGER benefit_share_no_truncate BEFORE TRUNCATE ON tco.benefit_share
    FOR EACH STATEMENT EXECUTE FUNCTION tco.append_only();

-- ---------------------------------------------------------------------------
-- Functions

CREATE FUNCTION tco.fund_voucher_pool(org_id bigint, amount numeric) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(org_id, 'org_id');
    PERFORM tco.require_arg(amount, 'amount');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.organization o WHERE o.org_id = fund_voucher_pool.org_id),
                               'organization', org_id);
    IF amount <= 0 OR amount <> round(amount, 2) OR amount >= 1000000000000 THEN
        RAISE EXCEPTION 'pool funding % must be positive, below 1e12 and have at most 2 decimals', amount
            USING ERRCODE = '22023', HINT = 'Fund an amount such as 1000.00.';
    END IF;
    INSERT INTO tco.voucher_pool (org_id) VALUES (fund_voucher_pool.org_id) ON CONFLICT DO NOTHING;
    INSERT INTO tco.voucher_pool_entry (org_id, event, amount) VALUES (fund_voucher_pool.org_id, 'fund', amount);
    RETURN (SELECT b.balance FROM tco.voucher_pool_balance b WHERE b.org_id = fund_voucher_pool.org_id);
END $$;
COMMENT ON FUNCTION tco.fund_voucher_pool(bigint, numeric) IS
'Adds money to the voucher pool of an organization (creating the pool on first use). Returns the pool''s new balance.';

CREATE FUNCTION tco.issue_pool_voucher(org_id bigint, amount numeric, valid_from timestamptz, valid_to timestamptz,
                                       product_code text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    admin  bigint;
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(org_id, 'org_id');
    PERFORM tco.require_arg(amount, 'amount');
    PERFORM tco.require_arg(valid_from, 'valid_from');
    PERFORM tco.require_arg(valid_to, 'valid_to');
    SELECT o.admin_account_id INTO admin FROM tco.organization o WHERE o.org_id = issue_pool_voucher.org_id;
    PERFORM tco.require_exists(FOUND, 'organization', org_id);
    PERFORM tco.require_benefit_terms('voucher', amount, valid_from, valid_to, product_code);
    INSERT INTO tco.benefit (kind, owner_account_id, product_code, initial_amount, balance, valid_from, valid_to, pool_org_id)
        VALUES ('voucher', admin, product_code, amount, amount, valid_from, valid_to, issue_pool_voucher.org_id)
        RETURNING benefit_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.issue_pool_voucher(bigint, numeric, timestamptz, timestamptz, text) IS
'Issues a voucher of `amount` from the organization''s voucher pool (error TC021 if the pool has less), usable for lines starting in [valid_from, valid_to), for one product or any (NULL). It pays nothing until shared with tco.share_benefit(). Returns its benefit id.';

CREATE FUNCTION tco.grant_resource_pack(owner_account_id bigint, product_code text, amount numeric,
                                        valid_from timestamptz, valid_to timestamptz,
                                        price numeric DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(owner_account_id, 'owner_account_id');
    PERFORM tco.require_arg(product_code, 'product_code');
    PERFORM tco.require_arg(amount, 'amount');
    PERFORM tco.require_arg(valid_from, 'valid_from');
    PERFORM tco.require_arg(valid_to, 'valid_to');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = owner_account_id), 'account', owner_account_id);
    PERFORM tco.require_benefit_terms('resource pack', amount, valid_from, valid_to, product_code);
    IF price IS NOT NULL THEN
        PERFORM tco.require_amount(price, 'price');
    END IF;
    INSERT INTO tco.benefit (kind, owner_account_id, product_code, initial_amount, balance, valid_from, valid_to, price)
        VALUES ('resource_pack', owner_account_id, product_code, amount, amount, valid_from, valid_to, price)
        RETURNING benefit_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.grant_resource_pack(bigint, text, numeric, timestamptz, timestamptz, numeric) IS
'Grants a resource pack: `amount` of one product, paying lines of that product starting in [valid_from, valid_to) consumed by the owner or by accounts it is shared with, until its balance is spent. With a price, settlement of the cycle its term starts in bills the price to the owner (README "After a cycle closes"). Returns its benefit id.';

CREATE FUNCTION tco.grant_savings_plan(owner_account_id bigint, hourly_commitment numeric, discount_rate numeric,
                                       valid_from timestamptz, valid_to timestamptz,
                                       product_code text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(owner_account_id, 'owner_account_id');
    PERFORM tco.require_arg(hourly_commitment, 'hourly_commitment');
    PERFORM tco.require_arg(discount_rate, 'discount_rate');
    PERFORM tco.require_arg(valid_from, 'valid_from');
    PERFORM tco.require_arg(valid_to, 'valid_to');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = owner_account_id), 'account', owner_account_id);
    IF discount_rate < 0 OR discount_rate >= 1 OR discount_rate <> round(discount_rate, 6) THEN
        RAISE EXCEPTION 'savings plan rate % is not in [0, 1) with at most 6 decimals', discount_rate
            USING ERRCODE = '22023', HINT = 'A rate of 0.30 makes the hourly fee 70% of the commitment.';
    END IF;
    PERFORM tco.require_benefit_terms('savings plan', hourly_commitment, valid_from, valid_to, product_code);
    INSERT INTO tco.benefit (kind, owner_account_id, product_code, initial_amount, balance, valid_from, valid_to, plan_discount_rate)
        VALUES ('savings_plan', owner_account_id, product_code, hourly_commitment, hourly_commitment, valid_from, valid_to, discount_rate)
        RETURNING benefit_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.grant_savings_plan(bigint, numeric, numeric, timestamptz, timestamptz, text) IS
'Grants a savings plan: in every billing-zone hour of [valid_from, valid_to) it pays up to hourly_commitment of eligible lines (of product_code, or all products when NULL) starting in that hour, consumed by the owner or by accounts it is shared with. Its fee, billed to the owner by settlement for each cycle of its term (README "After a cycle closes"), is hourly_commitment * (1 - discount_rate) per hour (tco.savings_plan_fee). Returns its benefit id.';

CREATE FUNCTION tco.savings_plan_fee(benefit_id bigint, cycle tco.billing_cycle) RETURNS numeric
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b     tco.benefit;
    r     tstzrange;
    hours numeric;
BEGIN
    PERFORM tco.require_arg(benefit_id, 'benefit_id');
    PERFORM tco.require_arg(cycle, 'cycle');
    SELECT * INTO b FROM tco.benefit x WHERE x.benefit_id = savings_plan_fee.benefit_id AND x.kind = 'savings_plan';
    PERFORM tco.require_exists(FOUND, 'savings plan', benefit_id);
    r := tco.cycle_range(cycle) * tstzrange(tco.granularity_trunc('hour', b.valid_from),
                                            tco.granularity_ceil('hour', b.valid_to));
    IF isempty(r) THEN
        RETURN 0;
    END IF;
    hours := (SELECT count(*) FROM generate_series(lower(r), upper(r) - interval '1 microsecond', interval '1 hour'));
    RETURN round(hours * b.initial_amount * (1 - b.plan_discount_rate), 2);
END $$;
COMMENT ON FUNCTION tco.savings_plan_fee(bigint, tco.billing_cycle) IS
'The commitment fee of a savings plan for one cycle: the hours of its term in the cycle times hourly_commitment * (1 - discount_rate), rounded half-up to 2 decimals. Settlement bills it to the owner (tco.bill_commitments).';

CREATE FUNCTION tco.share_benefit(benefit_id bigint, account_id bigint DEFAULT NULL, unit_id bigint DEFAULT NULL,
                                  at timestamptz DEFAULT now()) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(benefit_id, 'benefit_id');
    PERFORM tco.require_arg(at, 'at');
    IF (account_id IS NULL) = (unit_id IS NULL) THEN
        RAISE EXCEPTION 'a share needs exactly one of account_id and unit_id'
            USING ERRCODE = '22023', HINT = 'Pass an account id to share with one account, or a unit id to share with a unit and its subtree.';
    END IF;
    IF account_id IS NOT NULL THEN
        PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = share_benefit.account_id), 'account', account_id);
    ELSE
        PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.org_unit u WHERE u.unit_id = share_benefit.unit_id), 'unit', unit_id);
    END IF;
    BEGIN
        INSERT INTO tco.benefit_share (benefit_id, account_id, unit_id, shared_at)
            VALUES (share_benefit.benefit_id, share_benefit.account_id, share_benefit.unit_id, at)
            RETURNING share_id INTO new_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'benefit % is already shared with % %', benefit_id,
                CASE WHEN account_id IS NOT NULL THEN 'account' ELSE 'unit' END, coalesce(account_id, unit_id)
            USING ERRCODE = '23505', HINT = 'A benefit has at most one active share per account or unit.';
    END;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.share_benefit(bigint, bigint, bigint, timestamptz) IS
'Shares a pool voucher, resource pack or savings plan with one account (account_id) or one unit and its whole subtree (unit_id), for lines starting at or after `at`. Returns the share id.';

CREATE FUNCTION tco.revoke_share(share_id bigint, at timestamptz DEFAULT now()) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tco.benefit_share;
BEGIN
    PERFORM tco.require_arg(share_id, 'share_id');
    PERFORM tco.require_arg(at, 'at');
    SELECT * INTO s FROM tco.benefit_share x WHERE x.share_id = revoke_share.share_id;
    PERFORM tco.require_exists(FOUND, 'share', share_id);
    IF s.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'share % was already revoked at %', share_id, s.revoked_at
            USING ERRCODE = 'TC022', HINT = 'A share is revoked once.';
    END IF;
    IF at < s.shared_at THEN
        RAISE EXCEPTION 'share % cannot be revoked at %, before it started at %', share_id, at, s.shared_at
            USING ERRCODE = '22023', HINT = 'Revoke at or after the share''s start.';
    END IF;
    -- The voucher first, then the share: the same lock order as
    -- tco.reclaim_voucher, so concurrent revokes and reclaims do not deadlock.
    PERFORM 1 FROM tco.benefit b WHERE b.benefit_id = s.benefit_id FOR UPDATE;
    UPDATE tco.benefit_share x SET revoked_at = at WHERE x.share_id = revoke_share.share_id AND x.revoked_at IS NULL
        RETURNING * INTO s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'share % was revoked concurrently', share_id
            USING ERRCODE = 'TC022', HINT = 'A share is revoked once.';
    END IF;
    RETURN coalesce(s.reclaimed_amount, 0);
END $$;
COMMENT ON FUNCTION tco.revoke_share(bigint, timestamptz) IS
'Ends a share at `at`: lines starting from then on are not covered by it. When it was the last active share of a pool voucher, the voucher''s remaining balance goes back to the pool. Returns the amount reclaimed (0 if none).';

CREATE FUNCTION tco.reclaim_voucher(benefit_id bigint, at timestamptz DEFAULT now()) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b      tco.benefit;
    total  numeric := 0;
    sid    bigint;
BEGIN
    PERFORM tco.require_arg(benefit_id, 'benefit_id');
    PERFORM tco.require_arg(at, 'at');
    -- Lock first: a settlement using this voucher finishes before we look.
    SELECT * INTO b FROM tco.benefit x WHERE x.benefit_id = reclaim_voucher.benefit_id FOR UPDATE;
    PERFORM tco.require_exists(FOUND, 'benefit', benefit_id);
    IF b.pool_org_id IS NULL THEN
        RAISE EXCEPTION 'benefit % is not a pool voucher', benefit_id
            USING ERRCODE = 'TC020', HINT = 'Only vouchers issued from a voucher pool can be reclaimed; revoke shares of packs and plans with tco.revoke_share().';
    END IF;
    FOR sid IN SELECT s.share_id FROM tco.benefit_share s
                WHERE s.benefit_id = reclaim_voucher.benefit_id AND s.revoked_at IS NULL ORDER BY s.share_id
    LOOP
        total := total + tco.revoke_share(sid, greatest(at, (SELECT s.shared_at FROM tco.benefit_share s WHERE s.share_id = sid)));
    END LOOP;
    SELECT * INTO b FROM tco.benefit x WHERE x.benefit_id = reclaim_voucher.benefit_id;
    IF b.balance > 0 THEN
        UPDATE tco.benefit x SET balance = 0 WHERE x.benefit_id = b.benefit_id;
        INSERT INTO tco.voucher_pool_entry (org_id, event, amount, benefit_id)
            VALUES (b.pool_org_id, 'reclaim', b.balance, b.benefit_id);
        total := total + b.balance;
    END IF;
    RETURN total;
END $$;
COMMENT ON FUNCTION tco.reclaim_voucher(bigint, timestamptz) IS
'Revokes every active share of a pool voucher at `at` and returns its remaining balance to the pool. Returns the amount reclaimed.';

-- The same coverage rule as settlement (src/share.c), for tests and users.
CREATE FUNCTION tco.benefit_covers(benefit_id bigint, account_id bigint, at timestamptz) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (b.kind IN ('resource_pack', 'savings_plan') AND b.owner_account_id = benefit_covers.account_id)
        OR EXISTS (
            SELECT 1 FROM tco.benefit_share s
            JOIN tco.member m ON m.account_id = benefit_covers.account_id AND m.org_id = s.org_id
            WHERE s.benefit_id = b.benefit_id
              AND s.shared_at <= benefit_covers.at
              AND (s.revoked_at IS NULL OR benefit_covers.at < s.revoked_at)
              AND (s.account_id = m.account_id
                   OR m.unit_id IN (SELECT tco.unit_subtree(s.unit_id) WHERE s.unit_id IS NOT NULL)))
    FROM tco.benefit b
    WHERE b.benefit_id = benefit_covers.benefit_id
      AND (b.pool_org_id IS NOT NULL OR b.kind IN ('resource_pack', 'savings_plan'))
$$;
COMMENT ON FUNCTION tco.benefit_covers(bigint, bigint, timestamptz) IS
'Whether a pool voucher, resource pack or savings plan may pay a line of account_id starting at `at`, judged on the current unit tree and memberships (as settlement does). NULL for other benefits.';

-- ==== src/sql/46_focus.sql
-- FOCUS export and tag showback (README "FOCUS", "Tags and showback").
--
-- tco.focus_cost_and_usage: one row per settled bill line, with the columns
-- of the FinOps Open Cost and Usage Specification (FOCUS) 1.2 that tco's
-- data can fill, named as the specification names them (quoted PascalCase),
-- and tco's own extras with the x_ prefix the specification reserves.
--   BillingAccount  = the payer of the line (whose statement carries it);
--   SubAccount      = the consuming account;
--   BillingPeriod   = the billing cycle [start, end) in the billing time zone;
--   ChargePeriod    = the line's period [period_start, period_end);
--   ChargeCategory  = 'Usage' for postpaid lines, 'Purchase' for prepaid
--                     orders and the commitment fees settlement bills
--                     (ChargeFrequency 'Usage-Based' / 'One-Time', 'Recurring'
--                     for a savings plan's fee; CommitmentDiscountId is the
--                     commitment, 41_late.sql);
--   ChargeClass     = 'Correction' for a late line (billed on a later cycle
--                     than its charge period: BillingPeriod is the billing
--                     cycle, ChargePeriod its own period) and a correction
--                     line, else NULL;
--   ListCost        = list amount;
--   ContractedCost  = list - contract discount;
--   BilledCost      = what the payer is invoiced for the line: list -
--                     discount - every benefit (coupons, vouchers,
--                     stored-value cards, resource packs, savings plans);
--   EffectiveCost   = BilledCost + what commitments (resource packs and
--                     savings plans) covered: the amortized cost of the line,
--                     since a commitment is paid for by its purchase, while
--                     coupons, vouchers and cards are credits;
--   CommitmentDiscount* = the resource pack or savings plan that covered
--                     most of the line (Category 'Usage' for a pack of a
--                     product amount, 'Spend' for a savings plan), NULL if none;
--   InvoiceId       = the valid invoice of the line's statement (NULL until
--                     issued; a voided one is not named);
--   Tags            = the line's tags (tco.bill_line.tags).
-- Money is exact (numeric, 6 decimals); BilledCost summed per InvoiceId and
-- rounded half-up to 2 decimals is the invoice amount.  Costs are in
-- BillingCurrency, tco.billing_currency() (tco.config; default USD).  The view runs
-- with the caller's rights: a reader exports what it may see.

CREATE VIEW tco.focus_cost_and_usage WITH (security_invoker = true) AS
WITH line AS (
    SELECT p.pack_id, p.statement_id, p.payer_account_id, p.account_id, p.product_code, p.cycle,
           s.cycle AS billing_cycle, tco.cycle_range(s.cycle) AS period, u.line_id, u.li, d.di, d.be, d.src, d.did
    FROM tco.settled_pack p
    JOIN tco.statement s ON s.statement_id = p.statement_id
    CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_rates, p.discount_sources, p.discount_ids,
                              p.discount_amounts, p.benefit_amounts) AS u(line_id, li, rate, src, did, di, be)
    -- a pack's compact arrays (tco.settled_line)
    CROSS JOIN LATERAL (SELECT coalesce(u.rate, p.discount_rates[1]) AS rate, coalesce(u.src, p.discount_sources[1]) AS src,
                               coalesce(u.did, p.discount_ids[1]) AS did, coalesce(u.be, p.benefit_amounts[1]) AS be) k
    CROSS JOIN LATERAL (SELECT k.rate, k.src, k.did, k.be,
                               coalesce(u.di, round(u.li::numeric * k.rate * 0.000001)::bigint) AS di) d
), commitment AS (
    -- per line: what resource packs and savings plans covered, and the one
    -- that covered most (lowest id on a tie)
    SELECT DISTINCT ON (u.line_id) u.line_id, b.benefit_id, b.kind,
           sum(u.a) OVER (PARTITION BY u.line_id) AS covered
    FROM tco.settled_pack p
    CROSS JOIN LATERAL unnest(p.use_benefit_ids, p.use_line_ids, p.use_amounts) AS u(benefit_id, line_id, a)
    JOIN tco.benefit b ON b.benefit_id = u.benefit_id AND b.kind IN ('resource_pack', 'savings_plan')
    ORDER BY u.line_id, u.a DESC, b.benefit_id
), cfg AS MATERIALIZED (
    SELECT tco.billing_currency() AS currency, tco.provider_name() AS provider
)
SELECT
    ((l.li - l.di - l.be) * 0.000001)::numeric(20,6)                        AS "BilledCost",
    ((l.li - l.di - l.be + coalesce(c.covered, 0)) * 0.000001)::numeric(20,6) AS "EffectiveCost",
    (l.li * 0.000001)::numeric(20,6)                                         AS "ListCost",
    ((l.li - l.di) * 0.000001)::numeric(20,6)                                AS "ContractedCost",
    l.payer_account_id::text                                                 AS "BillingAccountId",
    pa.name                                                                  AS "BillingAccountName",
    'Payer account'::text                                                    AS "BillingAccountType",
    l.account_id::text                                                       AS "SubAccountId",
    sa.name                                                                  AS "SubAccountName",
    'Member account'::text                                                   AS "SubAccountType",
    pg_catalog.lower(l.period)                                               AS "BillingPeriodStart",
    pg_catalog.upper(l.period)                                               AS "BillingPeriodEnd",
    bl.period_start                                                          AS "ChargePeriodStart",
    bl.period_end                                                            AS "ChargePeriodEnd",
    CASE bl.charge_type WHEN 'prepaid' THEN 'Purchase' ELSE 'Usage' END      AS "ChargeCategory",
    CASE WHEN l.cycle OPERATOR(tco.<>) l.billing_cycle OR bl.corrects_line_id IS NOT NULL
         THEN 'Correction' END                                               AS "ChargeClass",
    CASE l.product_code WHEN 'tco:savings_plan_fee' THEN 'Savings plan ' || cc.benefit_id || ' fee of account ' || l.account_id
                        WHEN 'tco:resource_pack_price' THEN 'Resource pack ' || cc.benefit_id || ' price of account ' || l.account_id
         ELSE l.product_code || CASE bl.charge_type WHEN 'prepaid' THEN ' prepaid order' ELSE ' usage' END
                             || ' of account ' || l.account_id END
      || CASE WHEN bl.corrects_line_id IS NOT NULL THEN ' (correction of bill line ' || bl.corrects_line_id || ': ' || bl.correction_reason || ')'
              WHEN l.cycle OPERATOR(tco.<>) l.billing_cycle THEN ' (late, of cycle ' || l.cycle::text || ')'
              ELSE '' END                                                    AS "ChargeDescription",
    CASE WHEN l.product_code = 'tco:savings_plan_fee' THEN 'Recurring'
         WHEN bl.charge_type = 'prepaid' THEN 'One-Time' ELSE 'Usage-Based' END AS "ChargeFrequency",
    l.product_code                                                           AS "ServiceName",
    'Other'::text                                                            AS "ServiceCategory",
    cf.currency                                                              AS "BillingCurrency",
    coalesce(ia.name, cf.provider)                                           AS "InvoiceIssuerName",
    cf.provider                                                              AS "ProviderName",
    cf.provider                                                              AS "PublisherName",
    NULL::numeric                                                            AS "PricingQuantity",
    NULL::text                                                               AS "PricingUnit",
    coalesce(c.benefit_id, cc.benefit_id)::text                              AS "CommitmentDiscountId",
    CASE coalesce(c.kind, cb.kind) WHEN 'resource_pack' THEN 'Usage' WHEN 'savings_plan' THEN 'Spend' END AS "CommitmentDiscountCategory",
    CASE WHEN c.kind IS NOT NULL THEN 'Used' END                             AS "CommitmentDiscountStatus",
    CASE coalesce(c.kind, cb.kind) WHEN 'resource_pack' THEN 'Resource Pack' WHEN 'savings_plan' THEN 'Savings Plan' END AS "CommitmentDiscountType",
    bl.tags                                                                  AS "Tags",
    i.invoice_id::text                                                       AS "InvoiceId",
    l.billing_cycle::text                                                    AS "x_BillingCycle",
    l.line_id                                                                AS "x_LineId",
    l.statement_id                                                           AS "x_StatementId",
    st.org_id                                                                AS "x_OrganizationId",
    (l.di * 0.000001)::numeric(20,6)                                         AS "x_DiscountAmount",
    ('{none,own,admin,manager,entity,own_new_trusteeship}'::text[])[l.src + 1] AS "x_DiscountSource",
    (l.be * 0.000001)::numeric(20,6)                                         AS "x_BenefitAmount",
    l.cycle::text                                                            AS "x_ChargeCycle",
    bl.corrects_line_id                                                      AS "x_CorrectsLineId"
FROM line l
JOIN tco.bill_line bl ON bl.line_id = l.line_id
JOIN tco.statement st ON st.statement_id = l.statement_id
LEFT JOIN tco.account pa ON pa.account_id = l.payer_account_id
LEFT JOIN tco.account sa ON sa.account_id = l.account_id
LEFT JOIN tco.invoice i ON i.statement_id = l.statement_id AND i.voided_at IS NULL
LEFT JOIN tco.account ia ON ia.account_id = i.issuer_account_id
LEFT JOIN commitment c ON c.line_id = l.line_id
LEFT JOIN tco.commitment_charge cc ON cc.line_id = l.line_id
LEFT JOIN tco.benefit cb ON cb.benefit_id = cc.benefit_id
CROSS JOIN cfg cf;
COMMENT ON VIEW tco.focus_cost_and_usage IS 'FOCUS 1.2 cost and usage rows, one per settled bill line (README "FOCUS"). Export with COPY (SELECT * FROM tco.focus_cost_and_usage WHERE "x_BillingCycle" = ''2023-02'') TO STDOUT WITH (FORMAT csv, HEADER). Runs with the caller''s rights.';
COMMENT ON COLUMN tco.focus_cost_and_usage."BilledCost" IS 'FOCUS: the amount invoiced for the line: list - contract discount - benefits (exact). Summed per InvoiceId and rounded to 2 decimals it is the invoice amount.';
COMMENT ON COLUMN tco.focus_cost_and_usage."EffectiveCost" IS 'FOCUS: amortized cost: BilledCost plus what resource packs and savings plans covered.';
COMMENT ON COLUMN tco.focus_cost_and_usage."ListCost" IS 'FOCUS: list amount of the line.';
COMMENT ON COLUMN tco.focus_cost_and_usage."ContractedCost" IS 'FOCUS: list amount less the contract discount (R8).';
COMMENT ON COLUMN tco.focus_cost_and_usage."BillingAccountId" IS 'FOCUS: the payer of the line (a manager for its managed members).';
COMMENT ON COLUMN tco.focus_cost_and_usage."SubAccountId" IS 'FOCUS: the consuming account.';
COMMENT ON COLUMN tco.focus_cost_and_usage."BillingPeriodStart" IS 'FOCUS: start of the billing cycle in the billing time zone (inclusive).';
COMMENT ON COLUMN tco.focus_cost_and_usage."BillingPeriodEnd" IS 'FOCUS: end of the billing cycle (exclusive).';
COMMENT ON COLUMN tco.focus_cost_and_usage."ChargePeriodStart" IS 'FOCUS: the line''s period start (inclusive).';
COMMENT ON COLUMN tco.focus_cost_and_usage."ChargePeriodEnd" IS 'FOCUS: the line''s period end (exclusive).';
COMMENT ON COLUMN tco.focus_cost_and_usage."ChargeCategory" IS 'FOCUS: Usage (postpaid lines) or Purchase (prepaid orders).';
COMMENT ON COLUMN tco.focus_cost_and_usage."ChargeClass" IS 'FOCUS: Correction for a late line (billed in a later cycle than its charge period''s) or a correction line; NULL otherwise.';
COMMENT ON COLUMN tco.focus_cost_and_usage."ServiceName" IS 'FOCUS: the product code.';
COMMENT ON COLUMN tco.focus_cost_and_usage."BillingCurrency" IS 'FOCUS: tco.config.billing_currency (ISO 4217; default USD).';
COMMENT ON COLUMN tco.focus_cost_and_usage."InvoiceIssuerName" IS 'FOCUS: the account that issued the invoice, else the provider name.';
COMMENT ON COLUMN tco.focus_cost_and_usage."ProviderName" IS 'FOCUS: tco.config.provider_name (default tco).';
COMMENT ON COLUMN tco.focus_cost_and_usage."PricingQuantity" IS 'FOCUS: NULL: bill lines carry no quantity.';
COMMENT ON COLUMN tco.focus_cost_and_usage."CommitmentDiscountId" IS 'FOCUS: the resource pack or savings plan (tco.benefit id) that covered most of the line; NULL if none.';
COMMENT ON COLUMN tco.focus_cost_and_usage."Tags" IS 'FOCUS: the line''s tags, a JSON object of strings.';
COMMENT ON COLUMN tco.focus_cost_and_usage."InvoiceId" IS 'FOCUS: the invoice of the line''s statement (NULL until tco.issue_invoice).';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_BillingCycle" IS 'tco: the billing cycle (YYYY-MM) of the statement that bills the line: filter exports on it.';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_ChargeCycle" IS 'tco: the cycle of the line''s period start (differs from x_BillingCycle for late and correction lines).';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_CorrectsLineId" IS 'tco: the original line a correction line corrects (NULL otherwise).';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_LineId" IS 'tco: the bill line.';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_StatementId" IS 'tco: the statement the line is on.';

-- Showback by tag: per cycle, tag key and value, the settled amounts of the
-- lines carrying that tag (a line with several tags counts under each of
-- its keys; lines without a key are in no row of that key).
CREATE VIEW tco.showback_by_tag WITH (security_invoker = true) AS
SELECT f."x_BillingCycle" AS cycle, t.key AS tag_key, t.value AS tag_value,
       sum(f."ListCost") AS list_total, sum(f."x_DiscountAmount") AS discount_total,
       sum(f."x_BenefitAmount") AS benefit_total, sum(f."BilledCost") AS due_total,
       count(*) AS lines
FROM tco.focus_cost_and_usage f
CROSS JOIN LATERAL pg_catalog.jsonb_each_text(f."Tags") AS t(key, value)
GROUP BY 1, 2, 3;
COMMENT ON VIEW tco.showback_by_tag IS 'Showback per cycle, tag key and tag value: settled amounts (exact) of the lines carrying the tag. Runs with the caller''s rights.';
COMMENT ON COLUMN tco.showback_by_tag.cycle IS 'Billing cycle as text YYYY-MM.';
COMMENT ON COLUMN tco.showback_by_tag.due_total IS 'What the payers owe for these lines (exact).';

-- ==== src/sql/47_allocation.sql
-- Cost allocation: split charges in the style of AWS Cost Categories (README
-- "Tags and showback").  A rule takes the settled cost of a source (one
-- account's lines, or the lines carrying a tag key = value) and splits it
-- over targets (accounts or units):
--   even          equal parts;
--   proportional  in proportion to each target's own settled cost in the
--                 same cycle (an account's lines, a unit's subtree's lines;
--                 equal parts when the targets have no cost at all);
--   fixed         by percentages given per target, which sum to exactly 100.
-- Allocation is reporting only: tco.allocated_cost is a view over the
-- settled lines, and never changes what payers owe.
--
-- Exact money: each line's BilledCost is split in micro-units (1e-6); every
-- target first gets floor(amount * weight / total weight), then the micro-units
-- left over go one each to the targets with the largest fractional part
-- (ties: the lowest target id), so the parts of a line sum exactly to it.
-- A line matched by several rules is allocated by the lowest rule id only.
-- A rule belongs to an organization and splits only the lines settled in it
-- (tco.statement.org_id); readers see the rules of their organization.

CREATE TABLE tco.allocation_rule (
    rule_id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    org_id            bigint NOT NULL REFERENCES tco.organization ON DELETE CASCADE,
    name              text NOT NULL CONSTRAINT allocation_rule_name CHECK (btrim(name) <> ''),
    source_account_id bigint REFERENCES tco.account ON DELETE RESTRICT,
    source_tag_key    text,
    source_tag_value  text,
    method            text NOT NULL CONSTRAINT allocation_rule_method CHECK (method IN ('even', 'proportional', 'fixed')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT allocation_rule_one_source CHECK ((source_account_id IS NULL) <> (source_tag_key IS NULL)),
    CONSTRAINT allocation_rule_tag CHECK ((source_tag_key IS NULL) = (source_tag_value IS NULL))
);
COMMENT ON TABLE tco.allocation_rule IS 'Split-charge rules (reporting only): the settled cost of a source account, or of the lines tagged source_tag_key = source_tag_value, split over the rule''s targets (tco.allocation_target) evenly, in proportion to their own cost, or by fixed percentages.';
COMMENT ON COLUMN tco.allocation_rule.org_id IS 'The organization the rule belongs to: it splits only lines settled in that organization, and only its readers see it.';
COMMENT ON COLUMN tco.allocation_rule.method IS 'even, proportional (to each target''s own settled cost in the cycle) or fixed (tco.allocation_target.percent, summing to 100).';

CREATE TABLE tco.allocation_target (
    target_id         bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    rule_id           bigint NOT NULL REFERENCES tco.allocation_rule ON DELETE CASCADE,
    target_account_id bigint REFERENCES tco.account ON DELETE RESTRICT,
    target_unit_id    bigint REFERENCES tco.org_unit ON DELETE RESTRICT,
    percent           numeric(9,6) CONSTRAINT allocation_target_percent CHECK (percent > 0 AND percent <= 100),
    CONSTRAINT allocation_target_one CHECK ((target_account_id IS NULL) <> (target_unit_id IS NULL))
);
CREATE UNIQUE INDEX allocation_target_once ON tco.allocation_target
    (rule_id, coalesce(target_account_id, 0), coalesce(target_unit_id, 0));
COMMENT ON TABLE tco.allocation_target IS 'The targets of an allocation rule: an account or a unit (its whole subtree), with a percentage for fixed rules.';
COMMENT ON COLUMN tco.allocation_target.percent IS 'Fixed rules only (NULL otherwise): the target''s share in percent; a rule''s shares sum to exactly 100.';
SELECT pg_catalog.pg_extension_config_dump('tco.allocation_rule', '');
SELECT pg_catalog.pg_extension_config_dump('tco.allocation_target', '');

-- A rule's targets are consistent with its method when the transaction
-- commits (deferred: targets are added one by one): fixed rules have a
-- percentage on every target and they sum to 100, other rules have none.
CREATE FUNCTION tco.allocation_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    FOR r IN
        SELECT a.rule_id, a.method, count(t.target_id) AS n, count(t.percent) AS with_percent, sum(t.percent) AS total
          FROM tco.allocation_rule a LEFT JOIN tco.allocation_target t ON t.rule_id = a.rule_id
         WHERE a.rule_id = CASE TG_TABLE_NAME WHEN 'allocation_rule' THEN NEW.rule_id
                                              ELSE coalesce(NEW.rule_id, OLD.rule_id) END
         GROUP BY a.rule_id, a.method
    LOOP
        IF r.method = 'fixed' AND r.n > 0 AND (r.with_percent <> r.n OR r.total <> 100) THEN
            RAISE EXCEPTION 'allocation rule %: fixed percentages sum to %, not 100', r.rule_id, coalesce(r.total, 0)
                USING ERRCODE = '23514', HINT = 'Give every target of a fixed rule a percent, summing to exactly 100.';
        ELSIF r.method <> 'fixed' AND r.with_percent > 0 THEN
            RAISE EXCEPTION 'allocation rule % is %: its targets take no percent', r.rule_id, r.method
                USING ERRCODE = '23514', HINT = 'Leave percent NULL, or make the rule fixed.';
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER allocation_target_check AFTER INSERT OR UPDATE OR DELETE ON tco.allocation_target
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tco.allocation_check();
CREATE CONSTRAINT TRIGGER allocation_rule_check AFTER INSERT OR UPDATE ON tco.allocation_rule
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tco.allocation_check();

-- The allocated parts: per settled line of a rule's source, one row per
-- target, the parts of a line summing exactly to its BilledCost.
CREATE VIEW tco.allocated_cost WITH (security_invoker = true) AS
WITH line AS (
    SELECT f."x_BillingCycle" AS cycle, f."x_LineId" AS line_id, f."SubAccountId"::bigint AS account_id,
           f."BilledCost" AS amount, f."Tags" AS tags, f."x_OrganizationId" AS org_id
    FROM tco.focus_cost_and_usage f
), source AS (
    -- each line goes to the lowest rule that matches it
    SELECT DISTINCT ON (l.line_id) l.cycle, l.line_id, l.account_id, l.amount, r.rule_id, r.method
    FROM line l
    JOIN tco.allocation_rule r
      ON r.org_id = l.org_id
     AND (r.source_account_id = l.account_id
          OR (r.source_tag_key IS NOT NULL AND l.tags ->> r.source_tag_key = r.source_tag_value))
    ORDER BY l.line_id, r.rule_id
), own AS (
    -- each target's own settled cost per cycle, for proportional rules
    SELECT t.target_id, l.cycle, sum(l.amount) AS cost
    FROM tco.allocation_target t
    JOIN tco.allocation_rule r ON r.rule_id = t.rule_id AND r.method = 'proportional'
    JOIN line l ON l.org_id = r.org_id
               AND (l.account_id = t.target_account_id
                    OR l.account_id IN (SELECT m.account_id FROM tco.member m
                                    WHERE m.unit_id IN (SELECT tco.unit_subtree(t.target_unit_id))))
    GROUP BY t.target_id, l.cycle
), weighted AS (
    SELECT s.cycle, s.rule_id, s.line_id, s.account_id AS source_account_id, s.amount,
           t.target_id, t.target_account_id, t.target_unit_id,
           CASE s.method WHEN 'fixed' THEN t.percent
                         WHEN 'proportional' THEN coalesce(o.cost, 0)
                         ELSE 1 END AS w
    FROM source s
    JOIN tco.allocation_target t ON t.rule_id = s.rule_id
    LEFT JOIN own o ON o.target_id = t.target_id AND o.cycle = s.cycle
), normalized AS (
    -- proportional targets without any cost: equal parts
    SELECT w.*, CASE WHEN sum(w.w) OVER (PARTITION BY w.line_id) = 0 THEN 1 ELSE w.w END AS weight
    FROM weighted w
), parts AS (
    SELECT n.*, (n.amount * 1000000)::bigint AS micro,
           sum(n.weight) OVER (PARTITION BY n.line_id) AS total_weight
    FROM normalized n
), floored AS (
    SELECT p.*, pg_catalog.floor(p.micro * p.weight / p.total_weight)::bigint AS base,
           p.micro * p.weight / p.total_weight - pg_catalog.floor(p.micro * p.weight / p.total_weight) AS frac
    FROM parts p
), ranked AS (
    SELECT f.*, f.micro - sum(f.base) OVER (PARTITION BY f.line_id) AS left_over,
           row_number() OVER (PARTITION BY f.line_id ORDER BY f.frac DESC, f.target_id) AS rank
    FROM floored f
)
SELECT r.cycle, r.rule_id, r.line_id, r.source_account_id, r.target_id, r.target_account_id, r.target_unit_id,
       ((r.base + CASE WHEN r.rank <= r.left_over THEN 1 ELSE 0 END) * 0.000001)::numeric(20,6) AS amount
FROM ranked r;
COMMENT ON VIEW tco.allocated_cost IS 'Split charges (reporting only): per settled line of an allocation rule''s source and per target, the part of the line''s BilledCost allocated to the target; the parts of a line sum exactly to it. Runs with the caller''s rights.';
COMMENT ON COLUMN tco.allocated_cost.amount IS 'The target''s part (exact, 6 decimals).';

-- Row-level security: 57_billing_access.sql (after the access helpers).

-- ==== src/sql/48_bill_line_triggers.sql
-- The rules of tco.bill_line, checked once per statement (README "Ingest").
--
-- One AFTER statement trigger per operation, with transition tables, runs
-- tco.bill_line_changed() (src/ingest.c), which does in this order what four
-- triggers did before 1.3 (each paid its own call and its own scan of the
-- statement's rows, and their order was the order of their names):
--   1. R14 (40_settlement.sql): no line enters, leaves or changes in a
--      settled cycle.  The settlement lock of a cycle (src/guard.c) is taken
--      shared, and the settled-cycle queries run, only for the cycles that
--      have ended: a cycle that has not ended cannot be being settled
--      (tco.settle_cycle refuses it), and a settlement waits for the
--      transactions writing bill lines when it begins (tco_settlement_lock),
--      so a line written just before its cycle ended is still read by it.
--   2. line_id unique across partitions (tco.bill_line_id, 30_trusteeship.sql)
--      and the identity sequence kept past explicit ids (98_dump.sql).
--   3. No invalidation: the payer cache (src/payer.c) keeps what the
--      frozen-product rule read of bill lines for one snapshot only, so a
--      statement of bill lines changes no cached answer and sends nothing to
--      other backends (1.2 sent a relcache invalidation for every statement,
--      and every backend dropped its caches and cached plans); this backend
--      notes its own write for its next payer call.
--   4. Spending alerts (44_alert.sql), after 3, so that they read payers
--      that know the statement's own lines.
-- What each costs per statement, for the single-line transactions of a
-- streaming ingest: the statement's rows are kept once in the transition
-- tables and read once in C; 1 is a cycle per row, compared with the clock
-- (the lock and the queries only for ended cycles); 2 is one INSERT of the
-- statement's ids and a read of the sequence; 4 is one query while no
-- spending threshold is enabled.
CREATE FUNCTION tco.bill_line_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'tco_bill_line_changed'
    LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION tco.bill_line_changed() IS 'Statement trigger of tco.bill_line (src/ingest.c): R14 for ended cycles, line_id uniqueness across partitions and the identity sequence, spending alerts.';

CREATE TRIGGER bill_line_inserted AFTER INSERT ON tco.bill_line
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_changed();
CREATE TRIGGER bill_line_updated AFTER UPDATE ON tco.bill_line
    REFERENCING OLD TABLE AS old_lines NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_changed();
CREATE TRIGGER bill_line_deleted AFTER DELETE ON tco.bill_line
    REFERENCING OLD TABLE AS old_lines
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_changed();

-- TRUNCATE (refused once a cycle is settled, 40_settlement.sql) empties the
-- ids with the lines; this backend's payer reads the change from its next
-- call (other backends with their next snapshot).
CREATE FUNCTION tco.bill_lines_written() RETURNS void
    AS 'MODULE_PATHNAME', 'tco_bill_lines_written' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION tco.bill_lines_written() IS 'Internal: this backend wrote bill lines outside the statement trigger of tco.bill_line (its payer reads them from its next call).';
CREATE FUNCTION tco.bill_line_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN NULL;
    END IF;
    TRUNCATE tco.bill_line_id;
    PERFORM tco.bill_lines_written();
    RETURN NULL;
END $$;
CREATE TRIGGER bill_line_truncated AFTER TRUNCATE ON tco.bill_line
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_truncated();

-- ==== src/sql/50_access.sql
-- Access control (DESIGN section 8): roles, the login -> account mapping and
-- row-level security ("multi-account bill viewing").
--
-- Roles.  tco_admin runs everything; tco_reader only reads, and through
-- row-level security sees only the accounts visible to the account its
-- database role is mapped to in tco.account_login.  Roles are cluster-wide:
-- they are created only when missing and survive DROP EXTENSION (they may own
-- or be granted objects in other databases, so the extension never drops them).
--
-- Who sees which account (tco.visible_accounts):
--   * every mapped account sees itself;
--   * the admin of an organization sees every current member of it;
--   * a management account sees every account it has (or had) in trusteeship,
--     since it paid for them then -- unless that account is now a member of an
--     organization other than the manager's own;
--   * nobody sees an account of another organization.
-- Visibility of these tables (accounts, memberships, trusteeships, bill
-- lines) is per account, decided by the current membership: an account that
-- changes organization takes its bill lines with it.  Settled history
-- (statements, settled lines, benefit uses, pool shares) is decided by the
-- organization it was settled or shared in instead (51_access_settlement.sql,
-- 51_sharing_access.sql).
--
-- Writes: only tco_admin has write policies (and write privileges); a mapped
-- reader can write nothing.  Superusers and the tables' owner bypass RLS.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tco_admin') THEN
        CREATE ROLE tco_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tco_reader') THEN
        CREATE ROLE tco_reader NOLOGIN;
    END IF;
END
$roles$;

CREATE TABLE tco.account_login (
    role_name  name PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES tco.account ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_login_account ON tco.account_login (account_id);
COMMENT ON TABLE tco.account_login IS 'Maps a database role (by name) to the account it acts as; row-level security shows that role the accounts visible to its account. Grant the role tco_reader as well.';
COMMENT ON COLUMN tco.account_login.role_name IS 'Database role name (matched against the role in effect: SET ROLE, else the session user). Renaming a role requires updating this row.';
SELECT pg_catalog.pg_extension_config_dump('tco.account_login', '');

-- The role a query runs for.  Inside a SECURITY DEFINER function current_user
-- is the function's owner, so use the role set by SET ROLE (which definer
-- functions do not change), or else the session user.
CREATE FUNCTION tco.invoking_role() RETURNS name
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN pg_catalog.current_setting('role') = 'none' THEN pg_catalog.session_user()
                ELSE pg_catalog.current_setting('role')::name END
$$;
COMMENT ON FUNCTION tco.invoking_role() IS 'The role queries run for: the role set by SET ROLE, else the session user (SECURITY DEFINER functions do not change it).';

CREATE FUNCTION tco.current_account_id() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT l.account_id FROM tco.account_login l WHERE l.role_name = tco.invoking_role()
$$;
COMMENT ON FUNCTION tco.current_account_id() IS 'The account mapped to the invoking role in tco.account_login; NULL if none.';

CREATE FUNCTION tco.visible_accounts() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 50 SET search_path = pg_catalog, pg_temp AS $$
    WITH me AS (SELECT tco.current_account_id() AS account_id),
         my_org AS (SELECT m.org_id FROM tco.member m JOIN me ON m.account_id = me.account_id)
    SELECT me.account_id FROM me WHERE me.account_id IS NOT NULL
    UNION
    SELECT m.account_id
      FROM tco.organization o JOIN me ON o.admin_account_id = me.account_id
      JOIN tco.member m ON m.org_id = o.org_id
    UNION
    SELECT t.member_account_id
      FROM tco.trusteeship t JOIN me ON t.management_account_id = me.account_id
     WHERE NOT EXISTS (SELECT 1 FROM tco.member m
                        WHERE m.account_id = t.member_account_id
                          AND m.org_id IS DISTINCT FROM (SELECT my_org.org_id FROM my_org))
$$;
COMMENT ON FUNCTION tco.visible_accounts() IS 'Accounts whose data the invoking role may read: its own account, every member of the organization it administers, and the accounts it manages or managed in trusteeship (unless now in another organization). Empty for an unmapped role.';

CREATE FUNCTION tco.can_see_account(account_id bigint) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT can_see_account.account_id IN (SELECT tco.visible_accounts())
$$;
COMMENT ON FUNCTION tco.can_see_account(bigint) IS 'Whether the invoking role may read the data of account_id (see tco.visible_accounts).';

CREATE FUNCTION tco.visible_organizations() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 1 SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.org_id FROM tco.member m WHERE m.account_id = tco.current_account_id()
$$;
COMMENT ON FUNCTION tco.visible_organizations() IS 'The organization of the invoking role''s account (empty if none): its organization row and unit tree are readable.';

CREATE FUNCTION tco.administered_organizations() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 1 SET search_path = pg_catalog, pg_temp AS $$
    SELECT o.org_id FROM tco.organization o WHERE o.admin_account_id = tco.current_account_id()
$$;
COMMENT ON FUNCTION tco.administered_organizations() IS 'The organization whose admin account the invoking role is mapped to (empty if none).';

-- Row-level security.  Policies are permissive: tco_admin sees and writes
-- everything; tco_reader only selects rows of visible accounts.  A role that
-- is neither sees nothing even if granted SELECT.
CREATE FUNCTION tco.enable_reader_rls(tab text, reader_qual text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE pg_catalog.format('ALTER TABLE tco.%I ENABLE ROW LEVEL SECURITY', tab);
    EXECUTE pg_catalog.format('CREATE POLICY %I ON tco.%I TO tco_admin USING (true) WITH CHECK (true)',
                              tab || '_admin_all', tab);
    EXECUTE pg_catalog.format('CREATE POLICY %I ON tco.%I FOR SELECT TO tco_reader USING (%s)',
                              tab || '_reader_visible', tab, reader_qual);
END $$;
COMMENT ON FUNCTION tco.enable_reader_rls(text, text) IS
'Turns on row-level security on table tco.<tab> with the two policies of DESIGN section 8: <tab>_admin_all (tco_admin reads and writes every row) and <tab>_reader_visible (tco_reader selects the rows where reader_qual holds). Used by the install script.';

SELECT tco.enable_reader_rls(tab, reader_qual) FROM (VALUES
    ('account',      'account_id IN (SELECT tco.visible_accounts())'),
    ('member',       'account_id IN (SELECT tco.visible_accounts())'),
    ('trusteeship',  'member_account_id IN (SELECT tco.visible_accounts())'),
    ('bill_line',    'account_id IN (SELECT tco.visible_accounts())'),
    ('organization', 'org_id IN (SELECT tco.visible_organizations())'),
    ('org_unit',     'org_id IN (SELECT tco.visible_organizations())'),
    ('account_login','role_name = tco.invoking_role()')) AS v(tab, reader_qual);

-- ==== src/sql/51_access_settlement.sql
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

-- ==== src/sql/51_sharing_access.sql
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

-- ==== src/sql/55_policy.sql
-- Service control policies (seed 002, DESIGN section 8).
--
-- A policy allows or denies a list of actions ("cvm:RunInstances"; "*" in an
-- action pattern matches any characters, case-insensitively: "cvm:*", "*").
-- Policies are attached to an organization, a unit or an account.  For an
-- account the path is: organization -> root unit -> ... -> the account's unit
-- -> the account.  tco.policy_allows decides:
--   1. an explicit deny matching the action, attached anywhere on the path, wins;
--   2. otherwise every level of the path that has at least one *allow* policy
--      attached must allow the action; a level with no allow policy attached
--      restricts nothing (like AWS's default FullAccess policy).  So a deny-only
--      level is a deny list, an allow level is an allow list;
--   3. an account that is not a member of any organization is not governed by
--      any policy: everything is allowed.
-- Units moved in the tree change the path at once: nothing is cached.

CREATE TABLE tco.service_policy (
    policy_id   bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    effect      text NOT NULL CHECK (effect IN ('allow', 'deny')),
    actions     text[] NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT service_policy_actions CHECK (
        pg_catalog.cardinality(actions) > 0 AND pg_catalog.array_ndims(actions) = 1
        AND pg_catalog.array_position(actions, NULL) IS NULL
        AND actions::text !~ '[[:space:]]' AND NOT ('' = ANY (actions)))
);
COMMENT ON TABLE tco.service_policy IS 'Service control policies: allow or deny a list of action patterns ("service:Action", "*" matches any characters, case-insensitive).';
COMMENT ON COLUMN tco.service_policy.actions IS 'Action patterns, e.g. {cvm:*,cos:GetObject}; "*" matches any characters, comparison ignores case.';

CREATE TABLE tco.policy_attachment (
    policy_id   bigint NOT NULL REFERENCES tco.service_policy ON DELETE CASCADE,
    target_type text NOT NULL CHECK (target_type IN ('organization', 'unit', 'account')),
    target_id   bigint NOT NULL,
    attached_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (policy_id, target_type, target_id)
);
CREATE INDEX policy_attachment_target ON tco.policy_attachment (target_type, target_id);
COMMENT ON TABLE tco.policy_attachment IS 'Which policy is attached to which organization, unit or account. Attachments go away with their target.';

SELECT pg_catalog.pg_extension_config_dump('tco.service_policy', '');
SELECT pg_catalog.pg_extension_config_dump('tco.policy_attachment', '');

-- A glob pattern as a LIKE pattern (escape character: backslash), lower-cased.
CREATE FUNCTION tco.glob_to_like(pattern text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
               pg_catalog.lower(pattern), '\', '\\'), '%', '\%'), '_', '\_'), '*', '%')
$$;

-- The target of an attachment must exist (a polymorphic reference: no FK).
CREATE FUNCTION tco.policy_attachment_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    PERFORM tco.require_exists(CASE NEW.target_type
            WHEN 'organization' THEN EXISTS (SELECT 1 FROM tco.organization WHERE org_id = NEW.target_id)
            WHEN 'unit'         THEN EXISTS (SELECT 1 FROM tco.org_unit WHERE unit_id = NEW.target_id)
            WHEN 'account'      THEN EXISTS (SELECT 1 FROM tco.account WHERE account_id = NEW.target_id)
        END, CASE NEW.target_type WHEN 'unit' THEN 'org unit' ELSE NEW.target_type END, NEW.target_id);
    RETURN NEW;
END $$;
CREATE TRIGGER policy_attachment_check BEFORE INSERT OR UPDATE ON tco.policy_attachment
    FOR EACH ROW EXECUTE FUNCTION tco.policy_attachment_check();

CREATE FUNCTION tco.policy_target_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    DELETE FROM tco.policy_attachment
     WHERE target_type = TG_ARGV[0]
       AND target_id = (pg_catalog.to_jsonb(OLD) ->> TG_ARGV[1])::bigint;
    RETURN NULL;
END $$;
CREATE TRIGGER organization_policy_detach AFTER DELETE ON tco.organization
    FOR EACH ROW EXECUTE FUNCTION tco.policy_target_deleted('organization', 'org_id');
CREATE TRIGGER org_unit_policy_detach AFTER DELETE ON tco.org_unit
    FOR EACH ROW EXECUTE FUNCTION tco.policy_target_deleted('unit', 'unit_id');
CREATE TRIGGER account_policy_detach AFTER DELETE ON tco.account
    FOR EACH ROW EXECUTE FUNCTION tco.policy_target_deleted('account', 'account_id');

CREATE FUNCTION tco.attach_policy(policy_id bigint, target_type text, target_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(policy_id, 'policy_id');
    PERFORM tco.require_arg(target_type, 'target_type');
    PERFORM tco.require_arg(target_id, 'target_id');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.service_policy p WHERE p.policy_id = attach_policy.policy_id),
                               'service policy', policy_id);
    IF target_type NOT IN ('organization', 'unit', 'account') THEN
        RAISE EXCEPTION 'unknown policy target type "%"', target_type
            USING ERRCODE = '22023', HINT = 'Use ''organization'', ''unit'' or ''account''.';
    END IF;
    INSERT INTO tco.policy_attachment (policy_id, target_type, target_id)
        VALUES (attach_policy.policy_id, attach_policy.target_type, attach_policy.target_id)
        ON CONFLICT DO NOTHING;
END $$;
COMMENT ON FUNCTION tco.attach_policy(bigint, text, bigint) IS 'Attaches a service control policy to an organization, unit or account (idempotent).';

CREATE FUNCTION tco.detach_policy(policy_id bigint, target_type text, target_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM tco.policy_attachment a
     WHERE a.policy_id = detach_policy.policy_id AND a.target_type = detach_policy.target_type
       AND a.target_id = detach_policy.target_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'service policy % is not attached to % %', policy_id, target_type, target_id
            USING ERRCODE = '23503', HINT = 'List attachments in tco.policy_attachment.';
    END IF;
END $$;
COMMENT ON FUNCTION tco.detach_policy(bigint, text, bigint) IS 'Detaches a service control policy from its target.';

-- Every policy attached on the account's path, with its level (0 =
-- organization, then units from the root down, the account last) and whether
-- one of its patterns matches the action.  One statement, planned once per
-- session by the plpgsql callers.
CREATE FUNCTION tco.policy_path(p_account_id bigint, p_action text)
RETURNS TABLE (level int, target_type text, target_id bigint, policy_id bigint,
               policy_name text, effect text, matches boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- plpgsql rather than sql: its plan is cached for the session.
    RETURN QUERY
    WITH RECURSIVE m AS (
        SELECT mb.org_id, mb.unit_id FROM tco.member mb WHERE mb.account_id = p_account_id
    ), up (unit_id, parent_unit_id, height) AS (
        SELECT u.unit_id, u.parent_unit_id, 0 FROM tco.org_unit u JOIN m ON u.unit_id = m.unit_id
        UNION ALL
        SELECT u.unit_id, u.parent_unit_id, up.height + 1
          FROM tco.org_unit u JOIN up ON u.unit_id = up.parent_unit_id
    ), path (level, target_type, target_id) AS (
        SELECT 0, 'organization'::text, m.org_id FROM m
        UNION ALL
        SELECT (SELECT max(height) FROM up) - up.height + 1, 'unit'::text, up.unit_id FROM up
        UNION ALL
        SELECT (SELECT max(height) FROM up) + 2, 'account'::text, p_account_id FROM m
    )
    SELECT path.level, path.target_type, path.target_id, sp.policy_id, sp.name, sp.effect,
           EXISTS (SELECT 1 FROM pg_catalog.unnest(sp.actions) AS pat
                    WHERE pg_catalog.lower(p_action) LIKE tco.glob_to_like(pat))
      FROM path
      JOIN tco.policy_attachment pa ON pa.target_type = path.target_type AND pa.target_id = path.target_id
      JOIN tco.service_policy sp ON sp.policy_id = pa.policy_id;
END $$;

CREATE FUNCTION tco.policy_check_args(account_id bigint, action text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_arg(action, 'action');
    IF btrim(action) = '' THEN
        RAISE EXCEPTION 'action must not be empty'
            USING ERRCODE = '22023', HINT = 'Pass an action such as ''cvm:RunInstances''.';
    END IF;
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = policy_check_args.account_id),
                               'account', account_id);
END $$;

-- C (src/policy.c): one kept plan for the path and its policies, matching
-- and the decision in C; the same rules as tco.policy_path above.  No SET
-- search_path: the query is schema-qualified to the operator, and a SET
-- clause would cost a GUC save and restore per call.
CREATE FUNCTION tco.policy_allows(account_id bigint, action text) RETURNS boolean
AS 'MODULE_PATHNAME', 'tco_policy_allows'
LANGUAGE C STABLE;
COMMENT ON FUNCTION tco.policy_allows(bigint, text) IS 'Whether service control policies let account_id perform action: a matching deny anywhere on the path organization -> units -> account wins; otherwise every level with an allow policy attached must allow it. Accounts outside any organization: allowed.';

CREATE FUNCTION tco.explain_policy(account_id bigint, action text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    in_org bigint;
    levels jsonb;
    deny jsonb;
    unallowed jsonb;
BEGIN
    PERFORM tco.policy_check_args(account_id, action);
    SELECT m.org_id INTO in_org FROM tco.member m WHERE m.account_id = explain_policy.account_id;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('account_id', account_id, 'action', action, 'allowed', true,
                                  'reason', 'no_organization',
                                  'detail', 'The account is not a member of any organization: no service control policy applies.');
    END IF;
    WITH hits AS (
        SELECT * FROM tco.policy_path(explain_policy.account_id, explain_policy.action)
    ), per_level AS (
        SELECT h.level, h.target_type, h.target_id,
               jsonb_agg(jsonb_build_object('policy_id', h.policy_id, 'name', h.policy_name,
                                            'effect', h.effect, 'matches', h.matches)
                         ORDER BY h.policy_id) AS policies,
               CASE WHEN bool_or(h.effect = 'deny' AND h.matches) THEN 'deny'
                    WHEN NOT bool_or(h.effect = 'allow') THEN 'no_allow_policy'
                    WHEN bool_or(h.effect = 'allow' AND h.matches) THEN 'allow'
                    ELSE 'not_allowed' END AS result
          FROM hits h GROUP BY h.level, h.target_type, h.target_id
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object('level', l.level, 'target_type', l.target_type,
                                                 'target_id', l.target_id, 'result', l.result,
                                                 'policies', l.policies) ORDER BY l.level), '[]'),
           (SELECT jsonb_build_object('target_type', h.target_type, 'target_id', h.target_id,
                                      'policy_id', h.policy_id, 'policy', h.policy_name)
              FROM hits h WHERE h.effect = 'deny' AND h.matches ORDER BY h.level, h.policy_id LIMIT 1),
           (SELECT jsonb_build_object('target_type', l2.target_type, 'target_id', l2.target_id)
              FROM per_level l2 WHERE l2.result = 'not_allowed' ORDER BY l2.level LIMIT 1)
      INTO levels, deny, unallowed
      FROM per_level l;
    RETURN jsonb_build_object('account_id', account_id, 'action', action, 'org_id', in_org,
        'allowed', deny IS NULL AND unallowed IS NULL,
        'reason', CASE WHEN deny IS NOT NULL THEN 'explicit_deny'
                       WHEN unallowed IS NOT NULL THEN 'not_allowed'
                       ELSE 'allowed' END,
        'decided_by', coalesce(deny, unallowed),
        'levels', levels);
END $$;
COMMENT ON FUNCTION tco.explain_policy(bigint, text) IS 'Why tco.policy_allows answers what it does: the decision, the explicit deny or the first level whose allow policies do not allow the action, and every level of the path with its attached policies and result.';

-- ==== src/sql/56_org_chart.sql
-- Org chart: an organization's unit tree, its members and the trusteeship
-- edges, as Graphviz DOT or a Mermaid flowchart.  Runs with the caller's
-- rights, so a reader's chart shows only what row-level security lets it see.

-- A string as the inside of a double-quoted DOT string / Mermaid label.
CREATE FUNCTION tco.dot_escape(s text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
               s, '\', '\\'), '"', '\"'), E'\r', ''), E'\n', '\n')
$$;

CREATE FUNCTION tco.mermaid_escape(s text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    -- Mermaid labels take HTML entity codes: #quot; for '"', #35; for '#'.
    SELECT pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
               s, '#', '#35;'), '"', '#quot;'), '<', '#lt;'), '>', '#gt;'), E'\n', ' ')
$$;

CREATE FUNCTION tco.org_chart(org_id bigint, format text DEFAULT 'dot') RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    org tco.organization;
    out text[] := '{}';
    r record;
    dot boolean;
BEGIN
    PERFORM tco.require_arg(org_id, 'org_id');
    PERFORM tco.require_arg(format, 'format');
    IF format NOT IN ('dot', 'mermaid') THEN
        RAISE EXCEPTION 'unknown org chart format "%"', format
            USING ERRCODE = '22023', HINT = 'Use ''dot'' (Graphviz) or ''mermaid''.';
    END IF;
    dot := format = 'dot';
    SELECT * INTO org FROM tco.organization o WHERE o.org_id = org_chart.org_id;
    PERFORM tco.require_exists(FOUND, 'organization', org_id);

    IF dot THEN
        out := out || format('digraph "org_%s" {', org.org_id)
                   || format('  label="%s (organization %s)";', tco.dot_escape(org.name), org.org_id)
                   || '  rankdir=TB;'::text
                   || '  node [fontname="Helvetica"];'::text;
    ELSE
        out := out || 'flowchart TD'::text;
    END IF;

    -- Units, then the unit tree edges, in id order.
    FOR r IN SELECT u.unit_id, u.parent_unit_id, u.name FROM tco.org_unit u
              WHERE u.org_id = org.org_id ORDER BY u.unit_id LOOP
        out := out || CASE WHEN dot
            THEN format('  "u%s" [shape=folder, label="%s\n(unit %s)"];', r.unit_id, tco.dot_escape(r.name), r.unit_id)
            ELSE format('  u%s[/"%s (unit %s)"/]', r.unit_id, tco.mermaid_escape(r.name), r.unit_id) END;
    END LOOP;
    FOR r IN SELECT u.unit_id, u.parent_unit_id FROM tco.org_unit u
              WHERE u.org_id = org.org_id AND u.parent_unit_id IS NOT NULL ORDER BY u.unit_id LOOP
        out := out || CASE WHEN dot THEN format('  "u%s" -> "u%s";', r.parent_unit_id, r.unit_id)
                           ELSE format('  u%s --> u%s', r.parent_unit_id, r.unit_id) END;
    END LOOP;

    -- Members under their unit; the admin is marked.
    FOR r IN SELECT m.account_id, m.unit_id, m.policy, a.name,
                    m.account_id = org.admin_account_id AS is_admin
               FROM tco.member m JOIN tco.account a ON a.account_id = m.account_id
              WHERE m.org_id = org.org_id ORDER BY m.account_id LOOP
        IF dot THEN
            out := out || format('  "a%s" [shape=box%s, label="%s: %s%s"];', r.account_id,
                                 CASE WHEN r.is_admin THEN ', style=bold' ELSE '' END,
                                 r.account_id, tco.dot_escape(r.name),
                                 CASE WHEN r.is_admin THEN '\n(admin)' ELSE '' END)
                       || format('  "u%s" -> "a%s";', r.unit_id, r.account_id);
        ELSE
            out := out || format('  a%s["%s: %s%s"]', r.account_id, r.account_id,
                                 tco.mermaid_escape(r.name), CASE WHEN r.is_admin THEN ' (admin)' ELSE '' END)
                       || format('  u%s --> a%s', r.unit_id, r.account_id);
        END IF;
    END LOOP;

    -- Active trusteeships: member -> management account, dashed.
    FOR r IN SELECT t.member_account_id, t.management_account_id
               FROM tco.trusteeship t JOIN tco.member m ON m.account_id = t.member_account_id
              WHERE m.org_id = org.org_id AND t.ended_at IS NULL
              ORDER BY t.member_account_id LOOP
        out := out || CASE WHEN dot
            THEN format('  "a%s" -> "a%s" [style=dashed, label="trusteeship"];', r.member_account_id, r.management_account_id)
            ELSE format('  a%s -.->|trusteeship| a%s', r.member_account_id, r.management_account_id) END;
    END LOOP;

    IF dot THEN
        out := out || '}'::text;
    END IF;
    RETURN array_to_string(out, E'\n') || E'\n';
END $$;
COMMENT ON FUNCTION tco.org_chart(bigint, text) IS 'The unit tree of an organization with its members (admin marked) and active trusteeship edges (member -> management account, dashed), as Graphviz DOT (format => ''dot'', default) or a Mermaid flowchart (format => ''mermaid'').';

-- ==== src/sql/57_billing_access.sql
-- Access to invoices and alerts (DESIGN section 8, same scheme as
-- 50_access.sql): tco_admin sees and writes every row; tco_reader reads an
-- invoice exactly when it may read its statement (51_access_settlement.sql:
-- its payer, and the admin of the organization it was settled in), and the
-- alerts and thresholds of its visible accounts.

SELECT tco.enable_reader_rls(tab, reader_qual) FROM (VALUES
    ('invoice',         'statement_id IN (SELECT s.statement_id FROM tco.statement s)'),
    ('credit_note',     'invoice_id IN (SELECT i.invoice_id FROM tco.invoice i)'),
    ('alert',           'account_id IN (SELECT tco.visible_accounts())'),
    ('alert_threshold', 'account_id IN (SELECT tco.visible_accounts())'),
    -- allocation rules (47_allocation.sql): those of the reader's organization
    ('allocation_rule',   'org_id IN (SELECT tco.visible_organizations())'),
    ('allocation_target', 'rule_id IN (SELECT r.rule_id FROM tco.allocation_rule r)')) AS v(tab, reader_qual);

-- The lines of each invoice.  Like every view a reader may select, it runs
-- with the caller's rights (security_invoker): the row-level security of
-- tco.invoice and tco.statement_line decides what a reader sees, and a
-- reader's own conditions (a leaky function, a failing cast) only ever see
-- rows those policies let through.  Until 1.2 the view ran with its owner's
-- rights and filtered in its own WHERE clause, which a reader's condition
-- could run before (README "Security").
CREATE VIEW tco.invoice_line WITH (security_invoker = true) AS
SELECT i.invoice_id, i.statement_id, i.cycle, i.recipient_account_id, sl.account_id, sl.product_code,
       sl.account_id <> i.recipient_account_id AS for_member,
       sl.list_amount, sl.discount_amount, sl.benefit_amount, sl.due_amount, sl.lines
FROM tco.invoice i
JOIN tco.statement_line sl ON sl.statement_id = i.statement_id;
COMMENT ON VIEW tco.invoice_line IS 'Lines of each invoice: its statement''s lines per consuming account and product (a manager''s invoice lists its managed members'' consumption). A tco_reader sees the lines of the invoices and statements row-level security lets it see.';
COMMENT ON COLUMN tco.invoice_line.recipient_account_id IS 'Account billed (the statement''s payer).';
COMMENT ON COLUMN tco.invoice_line.account_id IS 'Consuming account of the line.';
COMMENT ON COLUMN tco.invoice_line.for_member IS 'True when the consumption is another account''s (a managed member on its manager''s invoice).';
COMMENT ON COLUMN tco.invoice_line.list_amount IS 'List amount (exact).';
COMMENT ON COLUMN tco.invoice_line.discount_amount IS 'Contract discount (exact).';
COMMENT ON COLUMN tco.invoice_line.benefit_amount IS 'Paid by benefits (exact).';
COMMENT ON COLUMN tco.invoice_line.due_amount IS 'Due amount (exact); the invoice amount is the sum rounded half-up to 2 decimals.';
COMMENT ON COLUMN tco.invoice_line.lines IS 'Number of bill lines.';

-- ==== src/sql/58_schedule.sql
-- Scheduled settlement with pg_cron (issue 15).  tco does not depend on
-- pg_cron: tco.schedule_settlement calls cron.schedule dynamically, and only
-- when the extension pg_cron is installed in this database (its scheduler
-- runs a job in the database of cron.database_name, as the role that
-- scheduled it).  None of these functions is SECURITY DEFINER: a job runs as
-- its scheduler, so scheduling through a definer would run it as the
-- extension owner.

-- Prepares the partitions of tco.bill_line for the current cycle and the two
-- after it (36_partition.sql: tco.prepare_cycles, which also moves lines
-- waiting in the default partition into theirs), then settles the cycle
-- before the current one (in the billing time zone) for everything, as the
-- caller; the command of the scheduled job.
CREATE FUNCTION tco.settle_previous_cycle(OUT cycle tco.billing_cycle, OUT statements bigint, OUT lines bigint,
                                          OUT list_total numeric, OUT due_total numeric)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    cycle := tco.cycle_of(pg_catalog.now()) OPERATOR(tco.-) 1;
    PERFORM tco.prepare_cycles();
    SELECT s.statements, s.lines, s.list_total, s.due_total
      INTO settle_previous_cycle.statements, settle_previous_cycle.lines,
           settle_previous_cycle.list_total, settle_previous_cycle.due_total
      FROM tco.settle_cycle(settle_previous_cycle.cycle) s;
END $$;
COMMENT ON FUNCTION tco.settle_previous_cycle() IS
'Creates the partitions of tco.bill_line of the current cycle and the two after it (tco.prepare_cycles), then settles the billing cycle before the one containing now() (billing time zone), for everything, with the caller''s rights; returns the cycle and tco.settle_cycle''s result. Idempotent. The command of the job tco.schedule_settlement creates.';

-- The schema of pg_cron's functions (cron) in this database, or NULL when
-- the extension pg_cron is not installed.
CREATE FUNCTION tco.pg_cron_schema() RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    -- pg_cron creates its own schema (cron), a member of the extension
    SELECT n.nspname
      FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_depend d ON d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
                                 AND d.refobjid OPERATOR(pg_catalog.=) e.oid AND d.deptype OPERATOR(pg_catalog.=) 'e'
                                 AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
      JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) d.objid
     WHERE e.extname OPERATOR(pg_catalog.=) 'pg_cron'
     ORDER BY n.nspname OPERATOR(pg_catalog.<>) 'cron', n.nspname
     LIMIT 1
$$;
COMMENT ON FUNCTION tco.pg_cron_schema() IS 'Internal: the schema of the extension pg_cron in this database (NULL: not installed).';

-- The pg_cron function named by its signature, checked to be a member of the
-- extension pg_cron (not a look-alike planted in a schema named cron);
-- 55000 with a hint when pg_cron is not installed in this database, 42501
-- with a hint when the caller may not use its schema.
CREATE FUNCTION tco.pg_cron_function(signature text) RETURNS regprocedure
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nsp name := tco.pg_cron_schema();
    f regprocedure;
BEGIN
    IF nsp IS NULL THEN
        RAISE EXCEPTION 'scheduled settlement needs the extension pg_cron, which is not installed in database %',
                        pg_catalog.current_database()
            USING ERRCODE = '55000',
                  HINT = pg_catalog.format('install pg_cron: CREATE EXTENSION pg_cron; (the server needs shared_preload_libraries = ''pg_cron'' and cron.database_name = %L, then a restart)',
                                           pg_catalog.current_database());
    END IF;
    IF NOT pg_catalog.has_schema_privilege(nsp, 'USAGE') THEN
        RAISE EXCEPTION 'role % may not use pg_cron: no USAGE on schema %', CURRENT_USER, nsp
            USING ERRCODE = '42501',
                  HINT = pg_catalog.format('A superuser grants it: GRANT USAGE ON SCHEMA %I TO %I;', nsp, CURRENT_USER);
    END IF;
    f := pg_catalog.to_regprocedure(pg_catalog.format('%I.%s', nsp, signature));
    IF f IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                 WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
                                   AND d.objid OPERATOR(pg_catalog.=) f
                                   AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
                                   AND d.refobjid OPERATOR(pg_catalog.=) (SELECT e.oid FROM pg_catalog.pg_extension e
                                                                           WHERE e.extname OPERATOR(pg_catalog.=) 'pg_cron')
                                   AND d.deptype OPERATOR(pg_catalog.=) 'e') THEN
        RAISE EXCEPTION 'the installed pg_cron has no function %.%', nsp, signature
            USING ERRCODE = '55000', HINT = 'Update pg_cron to version 1.4 or later: ALTER EXTENSION pg_cron UPDATE;';
    END IF;
    RETURN f;
END $$;
COMMENT ON FUNCTION tco.pg_cron_function(text) IS 'Internal: a function of the extension pg_cron by its signature (55000 with a hint when pg_cron is not installed in this database, 42501 when the caller has no USAGE on its schema).';

-- Schedules tco.settle_previous_cycle() with pg_cron; returns the job id.
-- The job runs as the calling role, in this database.  pg_cron 1.4 reads
-- schedules in GMT; a job of the same name and role is replaced.
CREATE FUNCTION tco.schedule_settlement(schedule text DEFAULT '0 2 1 * *',
                                        job_name text DEFAULT 'tco_settle_previous_cycle')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f regprocedure;
    job bigint;
BEGIN
    PERFORM tco.require_arg(schedule, 'schedule');
    PERFORM tco.require_arg(job_name, 'job_name');
    IF pg_catalog.btrim(job_name) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'job_name must not be empty' USING ERRCODE = '22023', HINT = 'Name the job, for example ''tco_settle_previous_cycle''.';
    END IF;
    f := tco.pg_cron_function('schedule(text,text,text)');
    -- (pg_cron can only be installed in the database of cron.database_name)
    EXECUTE pg_catalog.format('SELECT %s($1, $2, $3)', f::pg_catalog.oid::pg_catalog.regproc)
       INTO job USING job_name, schedule, 'SELECT * FROM tco.settle_previous_cycle()'::text;
    RETURN job;
END $$;
COMMENT ON FUNCTION tco.schedule_settlement(text, text) IS
'Schedules the settlement of the previous cycle (SELECT * FROM tco.settle_previous_cycle()) with pg_cron as job job_name (default on the 1st of each month at 02:00 GMT, pg_cron''s time); the job runs as the calling role in this database. Returns the pg_cron job id; a job of the same name and role is replaced. 55000 with a hint when pg_cron is not installed in this database.';

-- Removes a job tco.schedule_settlement created (of the calling role);
-- false when there is none.
CREATE FUNCTION tco.unschedule_settlement(job_name text DEFAULT 'tco_settle_previous_cycle') RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f regprocedure;
    present boolean;
BEGIN
    PERFORM tco.require_arg(job_name, 'job_name');
    f := tco.pg_cron_function('unschedule(name)');
    EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM %I.job j WHERE j.jobname OPERATOR(pg_catalog.=) $1 '
                              'AND j.username OPERATOR(pg_catalog.=) CURRENT_USER)', tco.pg_cron_schema())
       INTO present USING job_name;
    IF NOT present THEN
        RETURN false;
    END IF;
    EXECUTE pg_catalog.format('SELECT %s($1)', f::pg_catalog.oid::pg_catalog.regproc) INTO present USING job_name::name;
    RETURN present;
END $$;
COMMENT ON FUNCTION tco.unschedule_settlement(text) IS 'Removes the pg_cron job job_name of the calling role (default tco_settle_previous_cycle); false when there is none. 55000 with a hint when pg_cron is not installed in this database.';

-- ==== src/sql/96_ddl_guard.sql
-- The DDL guard (src/ddl_guard.c): an event trigger that refuses the ALTER
-- TABLE forms tco's C code cannot follow on tco's own tables (column type
-- changes, dropped or renamed columns, renamed or moved tables, columns added
-- to the tables settlement writes in bulk, deferrable constraints), and
-- ATTACH/DETACH PARTITION on tco.bill_line or DROP TABLE of one of its
-- attached partitions that tco.bill_line_cycle does not record.  Inactive
-- while the extension's own install and upgrade scripts run.  README,
-- "Limits", lists the supported DDL.
CREATE FUNCTION tco.ddl_guard() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'tco_ddl_guard' LANGUAGE C;
COMMENT ON FUNCTION tco.ddl_guard() IS 'Event trigger: refuses ALTER TABLE forms on tco''s tables that its C code does not support (see README, Limits).';
CREATE EVENT TRIGGER tco_ddl_guard ON ddl_command_start
    WHEN TAG IN ('ALTER TABLE', 'DROP TABLE')
    EXECUTE FUNCTION tco.ddl_guard();
COMMENT ON EVENT TRIGGER tco_ddl_guard IS 'Refuses ALTER TABLE forms on tco''s tables that its C code does not support, and partition changes of tco.bill_line that tco.bill_line_cycle does not record (see README, Limits).';

-- ==== src/sql/98_dump.sql
-- Id columns: identity defaults that also accept explicit ids.
--
-- An explicit id does not advance the identity sequence, so a later default
-- id would collide with it.  A statement-level trigger on every table with a
-- GENERATED BY DEFAULT identity moves the sequence past the largest id after
-- each INSERT statement (one index probe per statement, not per row).
--
-- pg_dump keeps the data of every tco table (each file registers its tables
-- with pg_extension_config_dump); the identity sequences are registered here
-- too, so a restored database continues numbering after the restored ids.
CREATE FUNCTION tco.sync_identity() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    seq text := pg_catalog.pg_get_serial_sequence(format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), TG_ARGV[0]);
    top bigint;
    half bigint;
BEGIN
    -- Explicit ids in the upper half of the sequence's range do not move it:
    -- setval() is not undone by a rollback, and a sequence moved to (near) its
    -- maximum would refuse every later insert (2200H).
    SELECT s.seqmax OPERATOR(pg_catalog./) 2 INTO half FROM pg_catalog.pg_sequence s
     WHERE s.seqrelid OPERATOR(pg_catalog.=) seq::regclass;
    EXECUTE format('SELECT max(%I) FROM %I.%I WHERE %I <= $1', TG_ARGV[0], TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0])
        INTO top USING half;
    IF top IS NOT NULL AND top > coalesce(pg_catalog.pg_sequence_last_value(seq::regclass), 0) THEN
        PERFORM pg_catalog.setval(seq::regclass, top);
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION tco.sync_identity() IS 'Statement trigger: keeps an identity sequence ahead of explicitly inserted ids (those in the lower half of its range).';

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname, a.attname, a.attidentity,
               pg_catalog.pg_get_serial_sequence(format('tco.%I', c.relname), a.attname) AS seq
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
        WHERE n.nspname = 'tco' AND c.relkind = 'r' AND a.attidentity <> '' AND NOT a.attisdropped
    LOOP
        PERFORM pg_catalog.pg_extension_config_dump(r.seq::regclass, '');
        IF r.attidentity = 'd' THEN
            EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON tco.%I FOR EACH STATEMENT EXECUTE FUNCTION tco.sync_identity(%L)',
                           r.relname || '_sync_identity', r.relname, r.attname);
        END IF;
    END LOOP;
END $$;

-- ==== src/sql/99_grants.sql
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
