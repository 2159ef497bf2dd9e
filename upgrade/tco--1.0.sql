-- tco 1.0 install script, frozen as released (generated from src/sql at commit ceb5dfd): do not edit
\echo Use "CREATE EXTENSION tco" to load this file. \quit

-- ==== src/sql/00_guard.sql
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

-- The installation's configuration: at most one row; no row means every default.
CREATE TABLE tco.config (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    billing_timezone text NOT NULL DEFAULT 'UTC',
    legacy_cutover   timestamptz NOT NULL DEFAULT '2022-08-01 12:00:00+08'
);
COMMENT ON TABLE tco.config IS 'Installation configuration (one row at most; absent means defaults).';
COMMENT ON COLUMN tco.config.billing_timezone IS 'Time zone in which every hour, day, week and month boundary is taken (default UTC).';
COMMENT ON COLUMN tco.config.legacy_cutover IS 'Trusteeships established before this instant are legacy: their members use the manager''s contract discount (R8).';
SELECT pg_catalog.pg_extension_config_dump('tco.config', '');

CREATE FUNCTION tco.config_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
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

CREATE FUNCTION tco.billing_timezone() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT billing_timezone FROM tco.config), 'UTC')
$$;
COMMENT ON FUNCTION tco.billing_timezone() IS 'The installation''s billing time zone (default UTC).';

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
CREATE CAST (tco.billing_cycle AS text) WITH INOUT AS ASSIGNMENT;
CREATE CAST (date AS tco.billing_cycle) WITH FUNCTION tco.billing_cycle(date);
CREATE CAST (tco.billing_cycle AS date) WITH FUNCTION tco.cycle_start_date(tco.billing_cycle);
COMMENT ON CAST (text AS tco.billing_cycle) IS 'Parses YYYY-MM.';
COMMENT ON CAST (tco.billing_cycle AS text) IS 'Formats as YYYY-MM.';
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

CREATE TABLE tco.bill_line (
    line_id      bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    product_code text NOT NULL REFERENCES tco.product ON UPDATE CASCADE ON DELETE RESTRICT,
    charge_type  tco.charge_type NOT NULL DEFAULT 'postpaid',
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    list_amount  numeric(20,6) NOT NULL,
    issued_at    timestamptz NOT NULL DEFAULT now(),
    paid_at      timestamptz,
    CONSTRAINT bill_line_finite CHECK (isfinite(period_start) AND isfinite(period_end) AND isfinite(issued_at)),
    CONSTRAINT bill_line_period CHECK (period_end > period_start),
    CONSTRAINT bill_line_amount_not_negative CHECK (list_amount >= 0)
);
CREATE INDEX bill_line_account_product ON tco.bill_line (account_id, product_code, period_start);
CREATE INDEX bill_line_period_start ON tco.bill_line (period_start);
COMMENT ON TABLE tco.bill_line IS 'One priced unit of consumption. The whole line goes to one payer, chosen by its period_start (DESIGN section 3).';
COMMENT ON COLUMN tco.bill_line.list_amount IS 'List price before discounts and benefits (exact, up to 6 decimals).';
COMMENT ON COLUMN tco.bill_line.issued_at IS 'When the bill was issued; an unpaid line issued before a trusteeship change freezes its product for that cycle.';
COMMENT ON COLUMN tco.bill_line.paid_at IS 'When it was paid; NULL while unsettled.';

SELECT pg_catalog.pg_extension_config_dump('tco.trusteeship', '');
SELECT pg_catalog.pg_extension_config_dump('tco.product', '');
SELECT pg_catalog.pg_extension_config_dump('tco.bill_line', '');

-- The payer cache (src/payer.c) is built from these tables.
CREATE TRIGGER trusteeship_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tco.trusteeship
    FOR EACH STATEMENT EXECUTE FUNCTION tco.invalidate_cache();
CREATE TRIGGER product_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tco.product
    FOR EACH STATEMENT EXECUTE FUNCTION tco.invalidate_cache();
CREATE TRIGGER bill_line_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tco.bill_line
    FOR EACH STATEMENT EXECUTE FUNCTION tco.invalidate_cache();
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

CREATE FUNCTION tco.deposit(account_id bigint, amount numeric) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_balance numeric;
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_amount(amount, 'amount');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = deposit.account_id),
                               'account', account_id);
    INSERT INTO tco.ledger (account_id, amount, kind)
        VALUES (deposit.account_id, deposit.amount, 'deposit')
        RETURNING balance_after INTO new_balance;
    RETURN new_balance;
END $$;
COMMENT ON FUNCTION tco.deposit(bigint, numeric) IS 'Credits external money to an account. Returns the new balance.';

CREATE FUNCTION tco.withdraw(account_id bigint, amount numeric) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_balance numeric;
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_amount(amount, 'amount');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = withdraw.account_id),
                               'account', account_id);
    -- R10: allowed for a managed member too; its balance is not used for payment.
    INSERT INTO tco.ledger (account_id, amount, kind)
        VALUES (withdraw.account_id, -withdraw.amount, 'withdraw')
        RETURNING balance_after INTO new_balance;
    RETURN new_balance;
END $$;
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

CREATE FUNCTION tco.refund_prepaid(resource_id bigint) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    resource tco.prepaid_resource := tco.lock_prepaid_resource(resource_id);
    refund   numeric;
BEGIN
    PERFORM tco.r12_prepaid_check(resource, 'refund', false);
    refund := tco.prepaid_unused_value(resource, resource.price);
    UPDATE tco.prepaid_resource r SET status = 'refunded' WHERE r.resource_id = resource.resource_id;
    PERFORM tco.prepaid_credit_refund(resource, refund, 'refund');
    RETURN refund;
END $$;
COMMENT ON FUNCTION tco.refund_prepaid(bigint) IS 'Cancels a prepaid resource and credits the unused share of its price to the owner. R12: refused while passed to a manager (TC007). Returns the amount refunded.';

CREATE FUNCTION tco.terminate_prepaid(resource_id bigint) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    resource tco.prepaid_resource := tco.lock_prepaid_resource(resource_id);
    refund   numeric;
BEGIN
    PERFORM tco.r12_prepaid_check(resource, 'termination', false);
    refund := tco.prepaid_unused_value(resource, resource.price);
    UPDATE tco.prepaid_resource r SET status = 'terminated' WHERE r.resource_id = resource.resource_id;
    PERFORM tco.prepaid_credit_refund(resource, refund, 'termination');
    RETURN refund;
END $$;
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
    kind             text NOT NULL CONSTRAINT benefit_kind CHECK (kind IN ('coupon', 'voucher', 'stored_value_card')),
    owner_account_id bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    product_code     text REFERENCES tco.product ON UPDATE CASCADE ON DELETE RESTRICT,
    initial_amount   numeric(20,2) NOT NULL CONSTRAINT benefit_initial_positive CHECK (initial_amount > 0),
    balance          numeric(20,6) NOT NULL CONSTRAINT benefit_balance_not_negative CHECK (balance >= 0),
    valid_from       timestamptz NOT NULL,
    valid_to         timestamptz NOT NULL,
    granted_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT benefit_window CHECK (valid_to > valid_from),
    CONSTRAINT benefit_balance_within_initial CHECK (balance <= initial_amount)
);
CREATE INDEX benefit_owner ON tco.benefit (owner_account_id) WHERE balance > 0;
COMMENT ON TABLE tco.benefit IS 'Coupons, vouchers and stored-value cards (R9). Coupons pay only their owner''s own consumption; vouchers and cards pay lines whose payer is their owner (so a manager''s are shared with its managed members, and a managed member''s own are not used).';
COMMENT ON COLUMN tco.benefit.kind IS 'coupon, voucher or stored_value_card; settlement uses them in that order.';
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

-- One row per settled bill line: which statement it is on and how its due
-- amount was reached.  Written only by tco.settle_cycle, in bulk; it has no
-- foreign keys on purpose (a per-row RI check would dominate the settlement
-- time), settle_cycle writes only ids it has just read or created.
CREATE TABLE tco.settled_line (
    line_id          bigint PRIMARY KEY,
    statement_id     bigint NOT NULL,
    payer_account_id bigint NOT NULL,
    list_amount      numeric(20,6) NOT NULL,
    discount_rate    numeric(7,6) NOT NULL,
    discount_source  text NOT NULL,
    discount_id      bigint,
    discount_amount  numeric(20,6) NOT NULL,
    benefit_amount   numeric(20,6) NOT NULL,
    due_amount       numeric(20,6) NOT NULL
);
CREATE INDEX settled_line_statement ON tco.settled_line (statement_id);
COMMENT ON TABLE tco.settled_line IS 'How each settled bill line was priced; each line is on exactly one statement. list_amount = discount_amount + benefit_amount + due_amount exactly.';
COMMENT ON COLUMN tco.settled_line.discount_source IS 'Where the rate came from (R8): own, admin (self-pay, same entity as the admin), manager (legacy trusteeship), entity (new trusteeship), own_new_trusteeship, or none.';
COMMENT ON COLUMN tco.settled_line.discount_id IS 'The tco.contract_discount row used (NULL: none).';

CREATE TABLE tco.benefit_use (
    use_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    benefit_id   bigint NOT NULL REFERENCES tco.benefit ON DELETE RESTRICT,
    line_id      bigint NOT NULL,
    statement_id bigint NOT NULL REFERENCES tco.statement ON DELETE RESTRICT,
    amount       numeric(20,6) NOT NULL CONSTRAINT benefit_use_positive CHECK (amount > 0),
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX benefit_use_line ON tco.benefit_use (line_id);
CREATE INDEX benefit_use_benefit ON tco.benefit_use (benefit_id);
COMMENT ON TABLE tco.benefit_use IS 'Append-only record of every benefit redemption (R14): which benefit paid how much of which line, on which statement.';

SELECT pg_catalog.pg_extension_config_dump('tco.contract_discount', '');
SELECT pg_catalog.pg_extension_config_dump('tco.benefit', '');
SELECT pg_catalog.pg_extension_config_dump('tco.settled_cycle', '');
SELECT pg_catalog.pg_extension_config_dump('tco.statement', '');
SELECT pg_catalog.pg_extension_config_dump('tco.statement_line', '');
SELECT pg_catalog.pg_extension_config_dump('tco.settled_line', '');
SELECT pg_catalog.pg_extension_config_dump('tco.benefit_use', '');

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
    IF amount <= 0 OR amount <> round(amount, 2) OR amount >= 1000000000000 THEN
        RAISE EXCEPTION 'benefit amount % must be positive, below 1e12 and have at most 2 decimals', amount
            USING ERRCODE = '22023', HINT = 'Grant an amount such as 100.00.';
    END IF;
    IF valid_to <= valid_from THEN
        RAISE EXCEPTION 'benefit validity [%, %) is empty', valid_from, valid_to
            USING ERRCODE = '22023', HINT = 'valid_to (the expiry) must be after valid_from.';
    END IF;
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = owner_account_id), 'account', owner_account_id);
    IF product_code IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tco.product p WHERE p.product_code = grant_benefit.product_code) THEN
        RAISE EXCEPTION 'product "%" does not exist', product_code
            USING ERRCODE = '23503', HINT = 'List products in tco.product, or pass NULL for any product.';
    END IF;
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

-- The key of the advisory lock that serializes settlement of a cycle against
-- other settlements and against bill line changes in that cycle (same values
-- as settle.c: class 746371, key cycle - ''0001-01'').
CREATE FUNCTION tco.settlement_lock_shared(c tco.billing_cycle) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.pg_advisory_xact_lock_shared(746371, c OPERATOR(tco.-) '0001-01'::tco.billing_cycle)
$$;

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
              HINT = 'A settled cycle is never rewritten: book an adjustment as a bill line in the next open cycle.';
END $$;

-- R14 on bill lines: no insert into, update of or delete from a settled cycle
-- (of the line's organization or of everything).  paid_at may be set.
-- Statement-level with transition tables, so bulk loads pay one query.
CREATE FUNCTION tco.r14_bill_line_insert_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad record;
BEGIN
    PERFORM tco.settlement_lock_shared(c)
        FROM (SELECT DISTINCT tco.cycle_of(period_start) AS c FROM new_lines) x ORDER BY c;
    SELECT n.line_id, s.cycle INTO bad
    FROM new_lines n
    LEFT JOIN tco.member m ON m.account_id = n.account_id
    JOIN tco.settled_cycle s ON s.cycle OPERATOR(tco.=) tco.cycle_of(n.period_start)
                            AND (s.org_id IS NULL OR s.org_id = m.org_id)
    ORDER BY n.line_id LIMIT 1;
    IF FOUND THEN
        PERFORM tco.r14_settled_error(bad.cycle, format('bill line %s cannot be added to it', bad.line_id));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER r14_bill_line_insert AFTER INSERT ON tco.bill_line
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_bill_line_insert_check();

CREATE FUNCTION tco.r14_bill_line_update_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad record;
BEGIN
    -- Lines already on a statement: only paid_at may change.
    SELECT o.line_id, tco.cycle_of(o.period_start) AS cycle INTO bad
    FROM old_lines o JOIN new_lines n USING (line_id)
    JOIN tco.settled_line sl ON sl.line_id = o.line_id
    WHERE (o.account_id, o.product_code, o.charge_type, o.period_start, o.period_end, o.list_amount, o.issued_at)
          IS DISTINCT FROM
          (n.account_id, n.product_code, n.charge_type, n.period_start, n.period_end, n.list_amount, n.issued_at)
    ORDER BY o.line_id LIMIT 1;
    IF FOUND THEN
        PERFORM tco.r14_settled_error(bad.cycle, format('bill line %s is settled and only its paid_at can be set', bad.line_id));
    END IF;
    -- A line may not move into a settled cycle either.
    PERFORM tco.settlement_lock_shared(c)
        FROM (SELECT DISTINCT tco.cycle_of(period_start) AS c FROM new_lines) x ORDER BY c;
    SELECT n.line_id, s.cycle INTO bad
    FROM new_lines n JOIN old_lines o USING (line_id)
    LEFT JOIN tco.member m ON m.account_id = n.account_id
    JOIN tco.settled_cycle s ON s.cycle OPERATOR(tco.=) tco.cycle_of(n.period_start)
                            AND (s.org_id IS NULL OR s.org_id = m.org_id)
    WHERE (o.account_id, o.product_code, o.period_start, o.list_amount)
          IS DISTINCT FROM (n.account_id, n.product_code, n.period_start, n.list_amount)
    ORDER BY n.line_id LIMIT 1;
    IF FOUND THEN
        PERFORM tco.r14_settled_error(bad.cycle, format('bill line %s cannot be moved into it', bad.line_id));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER r14_bill_line_update AFTER UPDATE ON tco.bill_line
    REFERENCING OLD TABLE AS old_lines NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_bill_line_update_check();

CREATE FUNCTION tco.r14_bill_line_delete_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad record;
BEGIN
    PERFORM tco.settlement_lock_shared(c)
        FROM (SELECT DISTINCT tco.cycle_of(period_start) AS c FROM old_lines) x ORDER BY c;
    SELECT o.line_id, tco.cycle_of(o.period_start) AS cycle INTO bad
    FROM old_lines o
    LEFT JOIN tco.member m ON m.account_id = o.account_id
    WHERE EXISTS (SELECT 1 FROM tco.settled_line sl WHERE sl.line_id = o.line_id)
       OR EXISTS (SELECT 1 FROM tco.settled_cycle s WHERE s.cycle OPERATOR(tco.=) tco.cycle_of(o.period_start)
                  AND (s.org_id IS NULL OR s.org_id = m.org_id))
    ORDER BY o.line_id LIMIT 1;
    IF FOUND THEN
        PERFORM tco.r14_settled_error(bad.cycle, format('bill line %s cannot be deleted', bad.line_id));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER r14_bill_line_delete AFTER DELETE ON tco.bill_line
    REFERENCING OLD TABLE AS old_lines
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_bill_line_delete_check();

-- R14 on trusteeships: a change (establish or end, new or old value) before
-- the end of the latest settled cycle of the member's organization would
-- change payers of settled lines.
CREATE FUNCTION tco.r14_trusteeship_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acct   bigint;
    until  timestamptz;
    moment timestamptz;
BEGIN
    acct := CASE WHEN TG_OP = 'DELETE' THEN OLD.member_account_id ELSE NEW.member_account_id END;
    until := tco.settled_until((SELECT m.org_id FROM tco.member m WHERE m.account_id = acct));
    IF until IS NULL THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
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
CREATE TRIGGER r14_benefit_use_append_only BEFORE UPDATE OR DELETE ON tco.benefit_use
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_settled_line_append_only BEFORE UPDATE OR DELETE ON tco.settled_line
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_settled_cycle_append_only BEFORE UPDATE OR DELETE ON tco.settled_cycle
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_statement_line_append_only BEFORE DELETE ON tco.statement_line
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_statement_append_only BEFORE DELETE ON tco.statement
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();

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
    bl tco.bill_line;
    sl tco.settled_line;
    st tco.statement;
BEGIN
    PERFORM tco.require_arg(line_id, 'line_id');
    SELECT * INTO bl FROM tco.bill_line b WHERE b.line_id = explain_line.line_id;
    PERFORM tco.require_exists(FOUND, 'bill line', line_id);
    SELECT * INTO sl FROM tco.settled_line s WHERE s.line_id = explain_line.line_id;
    IF NOT FOUND THEN
        RETURN jsonb_build_object(
            'line_id', bl.line_id, 'settled', false, 'cycle', tco.cycle_of(bl.period_start)::text,
            'list_amount', bl.list_amount,
            'payer', tco.explain_payer(bl.account_id, bl.product_code, bl.period_start));
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
                              FROM tco.benefit_use u JOIN tco.benefit b USING (benefit_id)
                              WHERE u.line_id = bl.line_id), '[]'::jsonb),
        'benefit_amount', sl.benefit_amount,
        'due_amount', sl.due_amount);
END $$;
COMMENT ON FUNCTION tco.explain_line(bigint) IS
'Why a bill line costs what it costs: its statement and payer (with tco.explain_payer), the discount rate and its source, every benefit used and how much, and the due amount. An unsettled line gives {"settled": false, ...} with its payer; an unknown line is error 23503.';

-- ---------------------------------------------------------------------------
-- Views for BI tools (DESIGN section 8)

CREATE VIEW tco.settlement_by_payer AS
SELECT s.cycle, s.payer_account_id, s.org_id, s.list_total, s.discount_total, s.benefit_total,
       s.due_total, coalesce(l.lines, 0) AS lines, s.statement_id, s.paid_at
FROM tco.statement s
LEFT JOIN (SELECT statement_id, sum(lines)::bigint AS lines FROM tco.statement_line GROUP BY 1) l
       USING (statement_id);
COMMENT ON VIEW tco.settlement_by_payer IS 'One row per statement: what each payer owes per cycle (totals rounded half-up to 2 decimals).';
COMMENT ON COLUMN tco.settlement_by_payer.cycle IS 'Billing cycle (YYYY-MM).';
COMMENT ON COLUMN tco.settlement_by_payer.payer_account_id IS 'The paying account (a manager pays for its managed members).';
COMMENT ON COLUMN tco.settlement_by_payer.org_id IS 'The payer''s organization at settlement.';
COMMENT ON COLUMN tco.settlement_by_payer.list_total IS 'List amount, rounded to 2 decimals.';
COMMENT ON COLUMN tco.settlement_by_payer.discount_total IS 'Contract discounts, rounded to 2 decimals.';
COMMENT ON COLUMN tco.settlement_by_payer.benefit_total IS 'Paid by coupons, vouchers and stored-value cards, rounded to 2 decimals.';
COMMENT ON COLUMN tco.settlement_by_payer.due_total IS 'Owed by the payer, rounded to 2 decimals.';
COMMENT ON COLUMN tco.settlement_by_payer.lines IS 'Number of bill lines on the statement.';
COMMENT ON COLUMN tco.settlement_by_payer.statement_id IS 'The statement.';
COMMENT ON COLUMN tco.settlement_by_payer.paid_at IS 'When the statement was paid (NULL: unpaid).';

CREATE VIEW tco.settlement_by_member AS
SELECT s.cycle, s.payer_account_id, sl.account_id, sl.product_code, s.org_id,
       sl.list_amount, sl.discount_amount, sl.benefit_amount, sl.due_amount, sl.lines, s.statement_id
FROM tco.statement_line sl JOIN tco.statement s USING (statement_id);
COMMENT ON VIEW tco.settlement_by_member IS 'Per cycle, payer, consuming account and product: exact amounts (6 decimals). A managed member''s consumption shows its real list and due amounts on its manager''s statement.';
COMMENT ON COLUMN tco.settlement_by_member.cycle IS 'Billing cycle (YYYY-MM).';
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

CREATE VIEW tco.settlement_by_unit AS
WITH RECURSIVE subtree (unit_id, descendant_id) AS (
    SELECT u.unit_id, u.unit_id FROM tco.org_unit u
    UNION ALL
    SELECT t.unit_id, c.unit_id FROM subtree t JOIN tco.org_unit c ON c.parent_unit_id = t.descendant_id
)
SELECT s.cycle, u.unit_id, u.org_id,
       sum(sl.list_amount) AS list_total, sum(sl.discount_amount) AS discount_total,
       sum(sl.benefit_amount) AS benefit_total, sum(sl.due_amount) AS due_total,
       sum(sl.lines)::bigint AS lines
FROM tco.org_unit u
JOIN subtree t ON t.unit_id = u.unit_id
JOIN tco.member m ON m.unit_id = t.descendant_id
JOIN tco.statement_line sl ON sl.account_id = m.account_id
JOIN tco.statement s ON s.statement_id = sl.statement_id
GROUP BY s.cycle, u.unit_id, u.org_id;
COMMENT ON VIEW tco.settlement_by_unit IS 'Per cycle and unit: consumption of the members currently placed in the unit or any unit below it (exact sums, 6 decimals), whoever paid it.';
COMMENT ON COLUMN tco.settlement_by_unit.cycle IS 'Billing cycle (YYYY-MM).';
COMMENT ON COLUMN tco.settlement_by_unit.unit_id IS 'The unit; its totals cover its whole subtree.';
COMMENT ON COLUMN tco.settlement_by_unit.org_id IS 'The unit''s organization.';
COMMENT ON COLUMN tco.settlement_by_unit.list_total IS 'List amount (exact).';
COMMENT ON COLUMN tco.settlement_by_unit.discount_total IS 'Contract discounts (exact).';
COMMENT ON COLUMN tco.settlement_by_unit.benefit_total IS 'Paid by benefits (exact).';
COMMENT ON COLUMN tco.settlement_by_unit.due_total IS 'Owed for this consumption (exact).';
COMMENT ON COLUMN tco.settlement_by_unit.lines IS 'Number of bill lines.';

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
-- Visibility is per account, decided by the current membership: an account
-- that changes organization takes its whole history of bill lines with it.
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

-- Row-level security.  Policies are permissive: tco_admin sees and writes
-- everything; tco_reader only selects rows of visible accounts.  A role that
-- is neither sees nothing even if granted SELECT.
DO $rls$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
            ('account',      'account_id IN (SELECT tco.visible_accounts())'),
            ('member',       'account_id IN (SELECT tco.visible_accounts())'),
            ('trusteeship',  'member_account_id IN (SELECT tco.visible_accounts())'),
            ('bill_line',    'account_id IN (SELECT tco.visible_accounts())'),
            ('organization', 'org_id IN (SELECT tco.visible_organizations())'),
            ('org_unit',     'org_id IN (SELECT tco.visible_organizations())'),
            ('account_login','role_name = tco.invoking_role()')) AS v(tab, reader_qual)
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE tco.%I ENABLE ROW LEVEL SECURITY', t.tab);
        EXECUTE pg_catalog.format('CREATE POLICY %I ON tco.%I TO tco_admin USING (true) WITH CHECK (true)',
                                  t.tab || '_admin_all', t.tab);
        EXECUTE pg_catalog.format('CREATE POLICY %I ON tco.%I FOR SELECT TO tco_reader USING (%s)',
                                  t.tab || '_reader_visible', t.tab, t.reader_qual);
    END LOOP;
END
$rls$;

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

CREATE FUNCTION tco.policy_allows(account_id bigint, action text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    denied boolean;
    unallowed_levels bigint;
BEGIN
    PERFORM tco.policy_check_args(account_id, action);
    SELECT coalesce(bool_or(h.effect = 'deny' AND h.matches), false),
           count(DISTINCT h.level) FILTER (WHERE h.effect = 'allow')
             - count(DISTINCT h.level) FILTER (WHERE h.effect = 'allow' AND h.matches)
      INTO denied, unallowed_levels
      FROM tco.policy_path(policy_allows.account_id, policy_allows.action) h;
    RETURN NOT denied AND unallowed_levels = 0;
END $$;
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
BEGIN
    EXECUTE format('SELECT max(%I) FROM %I.%I', TG_ARGV[0], TG_TABLE_SCHEMA, TG_TABLE_NAME) INTO top;
    IF top IS NOT NULL AND top > coalesce(pg_catalog.pg_sequence_last_value(seq::regclass), 0) THEN
        PERFORM pg_catalog.setval(seq::regclass, top);
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION tco.sync_identity() IS 'Statement trigger: keeps an identity sequence ahead of explicitly inserted ids.';

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
GRANT EXECUTE ON FUNCTION tco.invoking_role(), tco.current_account_id(), tco.visible_accounts(),
                          tco.can_see_account(bigint), tco.visible_organizations(),
                          tco.billing_timezone(), tco.cycle_of(timestamptz), tco.cycle_range(tco.billing_cycle),
                          tco.org_chart(bigint, text)
    TO tco_reader;

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
