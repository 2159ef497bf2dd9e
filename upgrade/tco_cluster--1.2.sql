-- tco_cluster 1.2 install script, frozen as released (generated from cluster/sql at commit cc59009): do not edit
\echo Use "CREATE EXTENSION tco_cluster" to load this file. \quit

-- ==== cluster/sql/00_schema.sql
-- tco_cluster: the router database of one tco installation over several
-- PostgreSQL servers (DESIGN section 10, README "Running on several servers").
--
-- Shards are ordinary tco databases holding whole organizations.  The router
-- holds no bill line: it keeps the topology (tco_cluster.shard_conf), the
-- directory (which shard holds which organization and account), the global
-- data written through it (entities, products, configuration, copied to every
-- shard), and schema tco with the functions of DESIGN section 6 routed by
-- PL/Proxy and the BI views over postgres_fdw foreign tables of every shard.
--
-- Names resolve in pg_catalog only while this script runs (as in tco's own
-- install script, src/sql/00_guard.sql): every object is schema-qualified.
SET LOCAL search_path = pg_catalog, pg_temp;

-- tco_cluster.control names `schema = tco_cluster`: PostgreSQL installs into
-- that schema when it exists already, whoever owns it and whatever it holds.
-- Refuse unless it is empty and owned by a superuser (as tco does for its
-- schema, src/sql/00_guard.sql).
DO $guard$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
                WHERE n.nspname = 'tco_cluster' AND NOT r.rolsuper)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.relnamespace = 'tco_cluster'::regnamespace)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'tco_cluster'::regnamespace)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_type t WHERE t.typnamespace = 'tco_cluster'::regnamespace)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_operator o WHERE o.oprnamespace = 'tco_cluster'::regnamespace) THEN
        RAISE EXCEPTION 'schema tco_cluster exists already and is not empty or not owned by a superuser'
            USING ERRCODE = '42P06', HINT = 'Drop it (or rename it) before CREATE EXTENSION tco_cluster.';
    END IF;
END
$guard$;

-- Schema tco of the router: created here, so the install fails if one exists
-- (objects planted in it beforehand could shadow the routed functions).
CREATE SCHEMA tco;
COMMENT ON SCHEMA tco IS 'tco_cluster router: the functions of the tco interface (DESIGN section 6) routed to the shards, and the BI views over all shards.';

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

-- The types of the interface, so that the routed functions have the same
-- signatures as on a shard.  PL/Proxy passes them to the shards as text, where
-- the shard's types of the same names parse them.  tco.billing_cycle uses the
-- input and output functions of tco's library (src/cycle.c), which need
-- nothing else of tco.
CREATE TYPE tco.granularity AS ENUM ('minute', 'hour', 'day', 'week', 'month');
CREATE TYPE tco.settlement_policy AS ENUM ('self_pay', 'trusteeship');
CREATE TYPE tco.charge_type AS ENUM ('prepaid', 'postpaid');

CREATE TYPE tco.billing_cycle;
CREATE FUNCTION tco.billing_cycle_in(cstring) RETURNS tco.billing_cycle
    AS '$libdir/tco', 'billing_cycle_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_out(tco.billing_cycle) RETURNS cstring
    AS '$libdir/tco', 'billing_cycle_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_recv(internal) RETURNS tco.billing_cycle
    AS '$libdir/tco', 'billing_cycle_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_send(tco.billing_cycle) RETURNS bytea
    AS '$libdir/tco', 'billing_cycle_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE TYPE tco.billing_cycle (
    INPUT = tco.billing_cycle_in, OUTPUT = tco.billing_cycle_out,
    RECEIVE = tco.billing_cycle_recv, SEND = tco.billing_cycle_send,
    INTERNALLENGTH = 4, PASSEDBYVALUE, ALIGNMENT = int4, STORAGE = plain
);
COMMENT ON TYPE tco.billing_cycle IS 'A billing cycle YYYY-MM (the type of tco, same library); on the router it is passed to and from the shards.';
CREATE CAST (text AS tco.billing_cycle) WITH INOUT AS ASSIGNMENT;
CREATE CAST (tco.billing_cycle AS text) WITH INOUT AS IMPLICIT;

-- ==== cluster/sql/10_topology.sql
-- Topology and directory (DESIGN section 10): the shards, which shard holds
-- which organization and account, and the PL/Proxy cluster and postgres_fdw
-- servers that reach them.

CREATE TABLE tco_cluster.shard_conf (
    shard_id   integer PRIMARY KEY CHECK (shard_id > 0),
    name       text NOT NULL UNIQUE CONSTRAINT shard_conf_name CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    conninfo   text NOT NULL,
    fdw_server name NOT NULL UNIQUE,
    added_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE tco_cluster.shard_conf IS 'The shards: ordinary tco databases. conninfo is a libpq string without user or password (credentials live in user mappings, see tco_cluster.map_role). Readable by superusers only: others read tco_cluster.shard.';
SELECT pg_catalog.pg_extension_config_dump('tco_cluster.shard_conf', '');

CREATE TABLE tco_cluster.org_directory (
    org_id   bigint PRIMARY KEY,
    shard_id integer NOT NULL REFERENCES tco_cluster.shard_conf
);
CREATE INDEX org_directory_shard ON tco_cluster.org_directory (shard_id);
COMMENT ON TABLE tco_cluster.org_directory IS 'Which shard holds each organization (with all its member accounts).';
SELECT pg_catalog.pg_extension_config_dump('tco_cluster.org_directory', '');

CREATE TABLE tco_cluster.account_directory (
    account_id bigint PRIMARY KEY,
    shard_id   integer NOT NULL REFERENCES tco_cluster.shard_conf,
    org_id     bigint REFERENCES tco_cluster.org_directory
);
CREATE INDEX account_directory_shard ON tco_cluster.account_directory (shard_id);
COMMENT ON TABLE tco_cluster.account_directory IS 'Which shard holds each account: its organization''s, or the home shard chosen when it was created (the least loaded). org_id: the organization it joined through the router.';
SELECT pg_catalog.pg_extension_config_dump('tco_cluster.account_directory', '');

-- The entity an account was created with, for placing accounts of one
-- entity on one shard (tco.create_account).
CREATE TABLE tco_cluster.account_entity (
    account_id bigint PRIMARY KEY REFERENCES tco_cluster.account_directory ON DELETE CASCADE,
    entity_id  bigint NOT NULL
);
CREATE INDEX account_entity_entity ON tco_cluster.account_entity (entity_id);
COMMENT ON TABLE tco_cluster.account_entity IS 'The entity each account was created with through the router: new accounts of an entity go to the shard holding most of its accounts.';
SELECT pg_catalog.pg_extension_config_dump('tco_cluster.account_entity', '');

-- Ids a single server draws from its sequences, drawn here for the whole
-- installation (the same workload gives the same ids on one server or many).
CREATE SEQUENCE tco_cluster.org_id_seq;
CREATE SEQUENCE tco_cluster.unit_id_seq;
CREATE SEQUENCE tco_cluster.account_id_seq;
CREATE SEQUENCE tco_cluster.entity_id_seq;
SELECT pg_catalog.pg_extension_config_dump('tco_cluster.org_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('tco_cluster.unit_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('tco_cluster.account_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('tco_cluster.entity_id_seq', '');

-- Global data: the master copy, written through the router, copied to every
-- shard (and to a shard added later) by tco_shard.sync_globals.
CREATE TABLE tco_cluster.entity (
    entity_id bigint PRIMARY KEY,
    name      text NOT NULL,
    verified  boolean NOT NULL DEFAULT false
);
CREATE TABLE tco_cluster.product (
    product_code text PRIMARY KEY,
    granularity  tco.granularity NOT NULL
);
CREATE TABLE tco_cluster.config (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    billing_timezone text,
    legacy_cutover   timestamptz
);
COMMENT ON TABLE tco_cluster.entity IS 'Entities of the installation (global): copied to every shard.';
COMMENT ON TABLE tco_cluster.product IS 'Products of the installation (global): copied to every shard.';
COMMENT ON TABLE tco_cluster.config IS 'Configuration of the installation (global; NULL: the default): copied to every shard.';
SELECT pg_catalog.pg_extension_config_dump('tco_cluster.entity', '');
SELECT pg_catalog.pg_extension_config_dump('tco_cluster.product', '');
SELECT pg_catalog.pg_extension_config_dump('tco_cluster.config', '');

-- The PL/Proxy cluster: one partition per shard, p<shard_id - 1>, with
-- modular mapping (any number of partitions, partition = hash mod count), so
-- RUN ON ALL reaches every shard exactly once.  The PUBLIC user mapping
-- connects as the calling role; tco_cluster.map_role gives a role other
-- credentials.  PL/Proxy refuses a cluster without partitions, so the
-- server is created with the first shard (tco_cluster.add_shard).

CREATE VIEW tco_cluster.shard AS
SELECT c.shard_id, c.name,
       CASE WHEN pg_catalog.pg_has_role('tco_admin', 'MEMBER') THEN c.conninfo END AS conninfo,
       (SELECT count(*) FROM tco_cluster.org_directory o WHERE o.shard_id = c.shard_id) AS organizations,
       (SELECT count(*) FROM tco_cluster.account_directory a WHERE a.shard_id = c.shard_id) AS accounts
  FROM tco_cluster.shard_conf c;
COMMENT ON VIEW tco_cluster.shard IS 'The shards with their organization and account counts; conninfo is shown to members of tco_admin only (NULL for others).';

CREATE FUNCTION tco_cluster.redact(conninfo text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.regexp_replace(conninfo, 'password\s*=\s*(''([^''\\]|\\.)*''|\S+)', 'password=***', 'gi')
$$;
COMMENT ON FUNCTION tco_cluster.redact(text) IS 'A connection string or message with any password replaced by ***.';

-- The directory.
CREATE FUNCTION tco_cluster.shard_of_org(org_id bigint) RETURNS integer
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT d.shard_id FROM tco_cluster.org_directory d WHERE d.org_id = shard_of_org.org_id
$$;
COMMENT ON FUNCTION tco_cluster.shard_of_org(bigint) IS 'The shard holding an organization (NULL: unknown organization).';

CREATE FUNCTION tco_cluster.shard_of_account(account_id bigint) RETURNS integer
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT d.shard_id FROM tco_cluster.account_directory d WHERE d.account_id = shard_of_account.account_id
$$;
COMMENT ON FUNCTION tco_cluster.shard_of_account(bigint) IS 'The shard holding an account (NULL: unknown account): its organization''s, or its home shard.';

-- The same, refusing unknown ids as a single server does (23503).
CREATE FUNCTION tco_cluster.org_shard(p_org_id bigint) RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer;
BEGIN
    IF p_org_id IS NULL THEN
        RAISE EXCEPTION 'org_id must not be NULL' USING ERRCODE = '22004', HINT = 'Pass an organization id.';
    END IF;
    SELECT d.shard_id INTO s FROM tco_cluster.org_directory d WHERE d.org_id = p_org_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'organization % does not exist', p_org_id
            USING ERRCODE = '23503', HINT = 'Check the organization id (tco_cluster.org_directory lists every organization).';
    END IF;
    RETURN s;
END $$;

CREATE FUNCTION tco_cluster.account_shard(p_account_id bigint) RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer;
BEGIN
    IF p_account_id IS NULL THEN
        RAISE EXCEPTION 'account_id must not be NULL' USING ERRCODE = '22004', HINT = 'Pass an account id.';
    END IF;
    SELECT d.shard_id INTO s FROM tco_cluster.account_directory d WHERE d.account_id = p_account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_account_id
            USING ERRCODE = '23503', HINT = 'Create it with tco.create_account() through the router first.';
    END IF;
    RETURN s;
END $$;

-- The least loaded shard: fewest accounts (for a new account's home shard) or
-- fewest organizations; ties go to the lowest shard id.
CREATE FUNCTION tco_cluster.least_loaded_shard(by_accounts boolean) RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer;
BEGIN
    SELECT c.shard_id INTO s FROM tco_cluster.shard_conf c
     ORDER BY CASE WHEN by_accounts THEN (SELECT count(*) FROM tco_cluster.account_directory a WHERE a.shard_id = c.shard_id)
                   ELSE (SELECT count(*) FROM tco_cluster.org_directory o WHERE o.shard_id = c.shard_id) END,
              c.shard_id
     LIMIT 1;
    IF s IS NULL THEN
        RAISE EXCEPTION 'the cluster has no shard'
            USING ERRCODE = '55000', HINT = 'Add one with tco_cluster.add_shard(name, conninfo).';
    END IF;
    RETURN s;
END $$;

-- A failed call on a shard: when the failure is the connection (PL/Proxy
-- reports libpq failures as internal errors), raise an error naming the shard
-- and, to members of tco_admin, its connection string (never a password) and
-- the libpq message; otherwise return, and the caller re-raises the original
-- error.  Reads tco_cluster.shard, which shows conninfo to admins only.
CREATE FUNCTION tco_cluster.is_connection_failure(message text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT message ~* '(PQconnectPoll|PQconnectStart|connect timeout|PQconsumeInput|PQflush|PQsendQuery|server closed the connection|could not connect|connection to server)'
$$;

CREATE FUNCTION tco_cluster.describe_shard(p_shard_id integer) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.format('shard %s "%s"', s.shard_id, s.name)
           || coalesce(' (' || tco_cluster.redact(s.conninfo) || ')', '')
      FROM tco_cluster.shard s WHERE s.shard_id = p_shard_id
$$;

CREATE FUNCTION tco_cluster.raise_if_unreachable(p_shard_id integer, p_message text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT tco_cluster.is_connection_failure(p_message) THEN
        RETURN;
    END IF;
    RAISE EXCEPTION '% is unreachable', tco_cluster.describe_shard(p_shard_id)
        USING ERRCODE = '08006',
              DETAIL = CASE WHEN pg_catalog.pg_has_role('tco_admin', 'MEMBER') THEN tco_cluster.redact(p_message) ELSE '' END,
              HINT = 'Start the shard or repair its connection, then run the call again; calls for organizations on other shards are not affected.';
END $$;
COMMENT ON FUNCTION tco_cluster.raise_if_unreachable(integer, text) IS 'Raises 08006 naming the shard (and, for tco_admin, its connection string with any password redacted) when a PL/Proxy failure message is a connection failure; returns otherwise.';

-- Calls on one shard (partition = shard_id - 1) or on all of them.
CREATE FUNCTION tco_cluster.px_ping(p_part integer) RETURNS integer
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster';
    RUN ON p_part;
    SELECT 1;
$$;

CREATE FUNCTION tco_cluster.px_sync_globals(p_part integer, p_entity_id bigint[], p_entity_name text[], p_entity_verified boolean[],
                                            p_product_code text[], p_product_granularity tco.granularity[],
                                            p_billing_timezone text, p_legacy_cutover timestamptz) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster';
    RUN ON p_part;
    SELECT tco_shard.sync_globals(p_entity_id, p_entity_name, p_entity_verified, p_product_code,
                                    p_product_granularity, p_billing_timezone, p_legacy_cutover);
$$;

CREATE FUNCTION tco_cluster.px_sync_globals_all(p_entity_id bigint[], p_entity_name text[], p_entity_verified boolean[],
                                                p_product_code text[], p_product_granularity tco.granularity[],
                                                p_billing_timezone text, p_legacy_cutover timestamptz) RETURNS SETOF bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster';
    RUN ON ALL;
    SELECT tco_shard.sync_globals(p_entity_id, p_entity_name, p_entity_verified, p_product_code,
                                    p_product_granularity, p_billing_timezone, p_legacy_cutover);
$$;

-- A call on every shard failed: name the shards that are unreachable (each
-- probed on its own), or return when all answer (the caller re-raises).
CREATE FUNCTION tco_cluster.raise_unreachable_shards(p_what text, p_message text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s record;
    down text[] := '{}';
BEGIN
    IF NOT tco_cluster.is_connection_failure(p_message) THEN
        RETURN;
    END IF;
    FOR s IN SELECT sh.shard_id FROM tco_cluster.shard sh ORDER BY sh.shard_id LOOP
        BEGIN
            PERFORM tco_cluster.px_ping(s.shard_id - 1);
        EXCEPTION WHEN OTHERS THEN
            down := down || tco_cluster.describe_shard(s.shard_id);
        END;
    END LOOP;
    IF pg_catalog.cardinality(down) = 0 THEN
        RETURN;
    END IF;
    RAISE EXCEPTION '% failed: % unreachable', p_what, pg_catalog.array_to_string(down, ', ')
        USING ERRCODE = '08006',
              DETAIL = CASE WHEN pg_catalog.pg_has_role('tco_admin', 'MEMBER') THEN tco_cluster.redact(p_message) ELSE '' END,
              HINT = 'Start the shard or repair its connection, then run the call again: the shards that answered are unchanged by a rerun.';
END $$;
COMMENT ON FUNCTION tco_cluster.raise_unreachable_shards(text, text) IS 'After a failed call on every shard: raises 08006 naming each unreachable shard (password redacted), or returns when every shard answers.';

-- Push global rows to one shard (p_shard_id) or to every shard (NULL).
CREATE FUNCTION tco_cluster.push_globals(p_shard_id integer, e_id bigint[], e_name text[], e_ver boolean[],
                                         p_code text[], p_gran tco.granularity[], tz text, cut timestamptz) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    IF p_shard_id IS NOT NULL THEN
        BEGIN
            RETURN tco_cluster.px_sync_globals(p_shard_id - 1, e_id, e_name, e_ver, p_code, p_gran, tz, cut);
        EXCEPTION WHEN internal_error THEN
            PERFORM tco_cluster.raise_if_unreachable(p_shard_id, SQLERRM);
            RAISE;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tco_cluster.shard_conf) THEN
        RETURN 0;
    END IF;
    BEGIN
        SELECT sum(x) INTO n FROM tco_cluster.px_sync_globals_all(e_id, e_name, e_ver, p_code, p_gran, tz, cut) x;
    EXCEPTION WHEN internal_error THEN
        PERFORM tco_cluster.raise_unreachable_shards('copying entities, products and configuration to every shard', SQLERRM);
        RAISE;
    END;
    RETURN n;
END $$;
COMMENT ON FUNCTION tco_cluster.push_globals(integer, bigint[], text[], boolean[], text[], tco.granularity[], text, timestamptz) IS
'Copies the given entities, products and configuration (NULL: unchanged) to one shard or (NULL) every shard, with tco_shard.sync_globals. Returns the rows inserted or changed.';

-- Copy all the global data to one shard or to all (NULL).
CREATE FUNCTION tco_cluster.sync_globals(p_shard_id integer DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_id bigint[]; e_name text[]; e_ver boolean[];
    p_code text[]; p_gran tco.granularity[];
    tz text; cut timestamptz;
BEGIN
    SELECT coalesce(array_agg(e.entity_id ORDER BY e.entity_id), '{}'), coalesce(array_agg(e.name ORDER BY e.entity_id), '{}'),
           coalesce(array_agg(e.verified ORDER BY e.entity_id), '{}')
      INTO e_id, e_name, e_ver FROM tco_cluster.entity e;
    SELECT coalesce(array_agg(p.product_code ORDER BY p.product_code), '{}'),
           coalesce(array_agg(p.granularity ORDER BY p.product_code), '{}')
      INTO p_code, p_gran FROM tco_cluster.product p;
    SELECT c.billing_timezone, c.legacy_cutover INTO tz, cut FROM tco_cluster.config c;
    RETURN tco_cluster.push_globals(p_shard_id, e_id, e_name, e_ver, p_code, p_gran, tz, cut);
END $$;
COMMENT ON FUNCTION tco_cluster.sync_globals(integer) IS 'Copies all the global data (entities, products, configuration) to one shard or (NULL) every shard; idempotent, so it can be rerun after a shard outage. Returns the rows inserted or changed on the shards.';

-- ==== cluster/sql/15_shard_support.sql
-- Shard side of tco_cluster.  A shard is an ordinary tco database (CREATE
-- EXTENSION tco); tco_cluster.add_shard installs these functions on it, in a
-- schema tco_shard of its own (through dblink, as the router's superuser), and
-- the router calls them through PL/Proxy:
--
--   * ids a single server draws from its own sequences (organizations,
--     units) are drawn by the router for the whole installation, so that the
--     same workload gives the same ids on one server and on several;
--   * global data (entities, products, configuration) is copied to every
--     shard idempotently: a copy interrupted by a shard outage is run again.
--
--   * the shard's own range of ids, and the moves of accounts (below).
--
-- They run with the caller's rights (tco_admin on the shard) and are
-- executable by tco_admin only; set_id_ranges, detach_account and
-- import_account refuse all but superusers (they write history as a restore
-- does).  tco itself is unchanged.
CREATE FUNCTION tco_cluster.shard_support_sql() RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $support$ SELECT $sql$
SET LOCAL search_path = pg_catalog, pg_temp;
DO $guard$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
                WHERE n.nspname = 'tco_shard' AND NOT r.rolsuper) THEN
        RAISE EXCEPTION 'schema tco_shard exists on this shard and is not owned by a superuser'
            USING ERRCODE = '42501', HINT = 'Drop or rename it: tco_cluster installs its shard functions there.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'tco') THEN
        RAISE EXCEPTION 'database % is not a tco database', pg_catalog.current_database()
            USING ERRCODE = '55000', HINT = 'Run CREATE EXTENSION tco CASCADE in the shard database first.';
    END IF;
END $guard$;
CREATE SCHEMA IF NOT EXISTS tco_shard;
REVOKE ALL ON SCHEMA tco_shard FROM PUBLIC;
GRANT USAGE ON SCHEMA tco_shard TO tco_admin;

-- tco.create_organization with the router's organization id and root unit id.
CREATE OR REPLACE FUNCTION tco_shard.create_organization(org_id bigint, root_unit_id bigint,
                                                admin_account_id bigint, name text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    root bigint;
BEGIN
    PERFORM tco.require_arg(org_id, 'org_id');
    PERFORM tco.require_arg(root_unit_id, 'root_unit_id');
    PERFORM tco.require_arg(admin_account_id, 'admin_account_id');
    PERFORM tco.require_name(name, 'name');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a
                                        WHERE a.account_id = create_organization.admin_account_id),
                               'account', admin_account_id);
    -- The root unit is created by the insert trigger of tco.organization from
    -- the unit sequence: point the sequence at the router's id, with unit
    -- creation on this shard locked out until commit.
    LOCK TABLE tco.org_unit IN SHARE ROW EXCLUSIVE MODE;
    PERFORM pg_catalog.setval(pg_catalog.pg_get_serial_sequence('tco.org_unit', 'unit_id')::regclass,
                              root_unit_id, false);
    INSERT INTO tco.organization (org_id, name, admin_account_id)
        VALUES (create_organization.org_id, create_organization.name,
                create_organization.admin_account_id);
    SELECT u.unit_id INTO root FROM tco.org_unit u
     WHERE u.org_id = create_organization.org_id AND u.parent_unit_id IS NULL;
    IF root IS DISTINCT FROM root_unit_id THEN
        RAISE EXCEPTION 'organization % got root unit % instead of unit % chosen by the router', org_id, root, root_unit_id
            USING ERRCODE = '55000', HINT = 'A unit with that id exists on this shard already: check the router''s unit sequence.';
    END IF;
    RETURN org_id;
END $$;
COMMENT ON FUNCTION tco_shard.create_organization(bigint, bigint, bigint, text) IS
'tco_cluster (router) support: tco.create_organization with the organization id and root unit id chosen by the router. Returns org_id.';

-- tco.create_unit with the router's unit id.
CREATE OR REPLACE FUNCTION tco_shard.create_unit(unit_id bigint, org_id bigint, name text, parent_unit_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parent bigint := parent_unit_id;
BEGIN
    PERFORM tco.require_arg(unit_id, 'unit_id');
    PERFORM tco.require_arg(org_id, 'org_id');
    PERFORM tco.require_name(name, 'name');
    IF parent IS NULL THEN
        SELECT u.unit_id INTO parent FROM tco.org_unit u
            WHERE u.org_id = create_unit.org_id AND u.parent_unit_id IS NULL;
        PERFORM tco.require_exists(FOUND, 'organization', org_id);
    END IF;
    INSERT INTO tco.org_unit (unit_id, org_id, parent_unit_id, name)
        VALUES (create_unit.unit_id, create_unit.org_id, parent, create_unit.name);
    RETURN unit_id;
END $$;
COMMENT ON FUNCTION tco_shard.create_unit(bigint, bigint, text, bigint) IS
'tco_cluster (router) support: tco.create_unit with the unit id chosen by the router. Returns unit_id.';

-- Global data, copied from the router: entities and products are inserted or
-- brought up to date, the configuration set when given (NULL: unchanged).
-- Idempotent.  Returns the number of rows inserted or changed.
CREATE OR REPLACE FUNCTION tco_shard.sync_globals(entity_id bigint[], entity_name text[], entity_verified boolean[],
                                         product_code text[], product_granularity tco.granularity[],
                                         billing_timezone text DEFAULT NULL, legacy_cutover timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
    changed bigint := 0;
BEGIN
    IF pg_catalog.cardinality(entity_id) > 0 THEN
        INSERT INTO tco.entity AS e (entity_id, name, verified)
        SELECT u.i, u.n, coalesce(u.v, false) FROM unnest(entity_id, entity_name, entity_verified) AS u(i, n, v)
        ON CONFLICT ON CONSTRAINT entity_pkey DO UPDATE SET name = excluded.name, verified = excluded.verified
         WHERE (e.name, e.verified) IS DISTINCT FROM (excluded.name, excluded.verified);
        GET DIAGNOSTICS n = ROW_COUNT;
        changed := changed + n;
    END IF;
    IF pg_catalog.cardinality(product_code) > 0 THEN
        INSERT INTO tco.product AS p (product_code, granularity)
        SELECT u.c, u.g FROM unnest(product_code, product_granularity) AS u(c, g)
        ON CONFLICT ON CONSTRAINT product_pkey DO UPDATE SET granularity = excluded.granularity
         WHERE p.granularity IS DISTINCT FROM excluded.granularity;
        GET DIAGNOSTICS n = ROW_COUNT;
        changed := changed + n;
    END IF;
    IF billing_timezone IS NOT NULL AND billing_timezone IS DISTINCT FROM tco.billing_timezone() THEN
        PERFORM tco.set_billing_timezone(billing_timezone);
        changed := changed + 1;
    END IF;
    IF legacy_cutover IS NOT NULL
       AND legacy_cutover IS DISTINCT FROM coalesce((SELECT c.legacy_cutover FROM tco.config c),
                                                     '2022-08-01 12:00:00+08'::timestamptz) THEN
        INSERT INTO tco.config AS c (singleton, legacy_cutover) VALUES (true, sync_globals.legacy_cutover)
        ON CONFLICT (singleton) DO UPDATE SET legacy_cutover = excluded.legacy_cutover;
        changed := changed + 1;
    END IF;
    RETURN changed;
END $$;
COMMENT ON FUNCTION tco_shard.sync_globals(bigint[], text[], boolean[], text[], tco.granularity[], text, timestamptz) IS
'tco_cluster (router) support: copies global data from the router (entities, products, billing time zone, legacy cut-over; NULL configuration: unchanged). Idempotent; returns the rows inserted or changed.';

-- what an earlier install of these functions had (a move that refused
-- accounts with history)
DROP FUNCTION IF EXISTS tco_shard.export_account(bigint), tco_shard.forget_account(bigint),
                        tco_shard.moved_tables(), tco_shard.move_blockers(bigint);

-- Ids.  Every sequence of a column of schema tco but those of the ids the
-- router draws (accounts, entities, organizations, units) draws on shard k
-- from its own range [k * size, (k + 1) * size - 1] (README "Running on
-- several servers", "Ids"), so that rows moved between shards keep their
-- ids.  The sequence is left "called" at the range's first value: tco's
-- sync_identity triggers (98_dump.sql) then never pull it back below its
-- range when a move inserts the lower ids of another shard.  Idempotent;
-- returns the number of sequences set.
CREATE OR REPLACE FUNCTION tco_shard.set_id_ranges(p_shard_id integer, p_size bigint) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    lo bigint := p_shard_id::bigint * p_size;
    hi bigint := (p_shard_id::bigint + 1) * p_size - 1;
    top bigint;
    n integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles su WHERE su.rolname = current_user AND su.rolsuper) THEN
        RAISE EXCEPTION '% is for the router''s moves and id ranges: superusers only', 'tco_shard.set_id_ranges'
            USING ERRCODE = '42501', HINT = 'Move accounts with tco_cluster.move_account on the router.';
    END IF;
    IF p_shard_id IS NULL OR p_shard_id < 1 OR p_size IS NULL OR p_size < 2 THEN
        RAISE EXCEPTION 'invalid id range: shard %, size %', p_shard_id, p_size USING ERRCODE = '22023';
    END IF;
    FOR r IN SELECT * FROM tco_shard.id_sequences() LOOP
        EXECUTE pg_catalog.format('SELECT max(%I) FROM %s WHERE %I BETWEEN $1 AND $2', r.col, r.tbl, r.col) INTO top USING lo, hi;
        EXECUTE pg_catalog.format('ALTER SEQUENCE %s MINVALUE %s MAXVALUE %s START WITH %s RESTART WITH %s',
                                  r.seq, lo, hi, lo + 1, coalesce(top, lo) + 1);
        PERFORM pg_catalog.setval(r.seq, coalesce(top, lo), true);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- The sequences set_id_ranges gives a range: every sequence owned by a
-- column of a table of schema tco (identity or serial), but the router's ids.
CREATE OR REPLACE FUNCTION tco_shard.id_sequences() RETURNS TABLE (seq regclass, tbl regclass, col name)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT d.objid::regclass, c.oid::regclass, a.attname
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
      JOIN pg_catalog.pg_class c ON c.oid = d.refobjid AND c.relnamespace = 'tco'::regnamespace AND NOT c.relispartition
      JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
       AND d.deptype IN ('a', 'i')
       AND (c.relname, a.attname) NOT IN (('account', 'account_id'), ('entity', 'entity_id'),
                                          ('organization', 'org_id'), ('org_unit', 'unit_id'))
     ORDER BY 2, 3
$$;

-- Moving an account off this shard or onto it: tco_cluster.move_account
-- runs tco_shard.detach_account on the source and tco_shard.import_account
-- on the target, each in a transaction it prepares and commits with
-- two-phase commit, as a superuser (README "Running on several servers",
-- "Accounts that change shard").  What moves is read from the catalog, so
-- that tables added to tco later move too:
--   * tco_shard.move_tables(): every table of schema tco (partitions aside)
--     is global (the same on every shard: entities, products, configuration),
--     of the organizations (organizations, units, memberships, settled
--     cycles, partitions, policies, voucher pools: these never move), or else
--     account data;
--   * tco_shard.move_refs(): the columns that reference a row of another
--     table: foreign keys; bigint columns named account_id or *_account_id
--     (the account); bigint columns named after the single-column primary
--     key of exactly one table, or ending in _<that name> (statement_id,
--     benefit_id, *_line_id: the bill line, ...); the target of a policy
--     attachment;
--   * the account's rows (tco_shard.move_closure): its tco.account row, then,
--     until nothing is added, every row of account data that references a
--     row already taken (bill lines, ledger, statements and their lines,
--     packs, invoices and credit notes, benefits, alerts, history, ...).
-- A row taken that references a row that stays (another account, an
-- organization: through a foreign key or a reference to account data), or a
-- row that stays and references a row taken, would break on one of the two
-- shards: the move is refused and names it (tco_shard.move_blockers), as
-- are the moves the rules forbid (membership, an active trusteeship, unpaid
-- statements, a settlement running).
CREATE OR REPLACE FUNCTION tco_shard.move_tables() RETURNS TABLE (tbl regclass, kind text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.oid::regclass,
           CASE WHEN c.relname IN ('entity', 'product', 'config') THEN 'global'
                WHEN c.relname IN ('organization', 'org_unit', 'member', 'voucher_pool', 'settled_cycle',
                                   'bill_line_cycle', 'service_policy') THEN 'organization'
                ELSE 'account' END
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace = 'tco'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
     ORDER BY c.relname
$$;

CREATE OR REPLACE FUNCTION tco_shard.move_refs()
RETURNS TABLE (tbl regclass, col name, ref_tbl regclass, ref_col name, enforced boolean, cond text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
WITH tabs AS (
    SELECT t.tbl FROM tco_shard.move_tables() t
), fk AS (
    SELECT k.conrelid::regclass AS tbl, a.attname AS col, k.confrelid::regclass AS ref_tbl, r.attname AS ref_col
      FROM pg_catalog.pg_constraint k
     CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(k.conkey), pg_catalog.unnest(k.confkey)) AS u(c, rc)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.c
      JOIN pg_catalog.pg_attribute r ON r.attrelid = k.confrelid AND r.attnum = u.rc
     WHERE k.contype = 'f' AND k.conrelid IN (SELECT tabs.tbl FROM tabs) AND k.confrelid IN (SELECT tabs.tbl FROM tabs)
), pk AS (
    -- single-column bigint primary keys named *_id, and the bill line's id
    -- (tables keyed by a bill line's id, tco.bill_line_id and tco.late_line,
    -- reference the line: they are not what a line_id names)
    SELECT a.attname AS name, k.conrelid::regclass AS ref_tbl
      FROM pg_catalog.pg_constraint k
      JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
     WHERE k.contype = 'p' AND pg_catalog.cardinality(k.conkey) = 1 AND k.conrelid IN (SELECT tabs.tbl FROM tabs)
       AND a.atttypid = 'pg_catalog.int8'::pg_catalog.regtype AND a.attname LIKE '%\_id'
       AND a.attname <> 'line_id'
    UNION ALL
    SELECT 'line_id', 'tco.bill_line'::regclass
), pk1 AS (
    SELECT pk.name, (pg_catalog.array_agg(pk.ref_tbl))[1] AS ref_tbl FROM pk GROUP BY pk.name HAVING count(*) = 1
), named AS (
    SELECT c.oid::regclass AS tbl, a.attname AS col,
           CASE WHEN a.attname = 'account_id' OR a.attname LIKE '%\_account_id' THEN 'account_id'
                ELSE (SELECT p.name FROM pk1 p
                       WHERE a.attname = p.name OR pg_catalog.right(a.attname, pg_catalog.length(p.name) + 1) = '_' || p.name
                       ORDER BY pg_catalog.length(p.name) DESC LIMIT 1) END AS ref_col
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE c.oid IN (SELECT tabs.tbl FROM tabs) AND a.atttypid = 'pg_catalog.int8'::pg_catalog.regtype
       AND (c.relname, a.attname) <> ('policy_attachment', 'target_id')
)
SELECT fk.tbl, fk.col, fk.ref_tbl, fk.ref_col, true, NULL::text FROM fk
UNION ALL
SELECT n.tbl, n.col, CASE n.ref_col WHEN 'account_id' THEN 'tco.account'::regclass ELSE p.ref_tbl END, n.ref_col, false, NULL
  FROM named n LEFT JOIN pk1 p ON p.name = n.ref_col
 WHERE n.ref_col IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM fk WHERE fk.tbl = n.tbl AND fk.col = n.col)
   AND NOT (n.col = n.ref_col AND n.tbl = CASE n.ref_col WHEN 'account_id' THEN 'tco.account'::regclass ELSE p.ref_tbl END)
UNION ALL
SELECT 'tco.policy_attachment'::regclass, 'target_id', v.t::regclass, v.c, false, pg_catalog.format('x.target_type = %L', v.k)
  FROM (VALUES ('account', 'tco.account', 'account_id'), ('unit', 'tco.org_unit', 'unit_id'),
               ('organization', 'tco.organization', 'org_id')) v(k, t, c)
 WHERE pg_catalog.to_regclass('tco.policy_attachment') IS NOT NULL
$$;

-- The tables of account data, parents first (by their references).
CREATE OR REPLACE FUNCTION tco_shard.move_order() RETURNS regclass[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    todo regclass[] := ARRAY(SELECT t.tbl FROM tco_shard.move_tables() t WHERE t.kind = 'account' ORDER BY t.tbl::text);
    done regclass[] := '{}';
    t regclass;
    progress boolean;
    -- the references between tables of account data, read from the catalog once
    e_tbl regclass[];
    e_ref regclass[];
BEGIN
    SELECT pg_catalog.array_agg(r.tbl), pg_catalog.array_agg(r.ref_tbl) INTO e_tbl, e_ref
      FROM tco_shard.move_refs() r WHERE r.ref_tbl <> r.tbl AND r.ref_tbl = ANY (todo);
    LOOP
        progress := false;
        FOREACH t IN ARRAY todo LOOP
            IF NOT t = ANY (done) AND NOT EXISTS (
                   SELECT 1 FROM ROWS FROM (pg_catalog.unnest(e_tbl), pg_catalog.unnest(e_ref)) e(tbl, ref_tbl)
                    WHERE e.tbl = t AND NOT e.ref_tbl = ANY (done)) THEN
                done := done || t;
                progress := true;
            END IF;
        END LOOP;
        EXIT WHEN NOT progress;
    END LOOP;
    -- tables in a cycle of references (none in tco today) come last
    RETURN done || ARRAY(SELECT u FROM pg_catalog.unnest(todo) u WHERE NOT u = ANY (done));
END $$;

-- The account's rows: table -> array of rows (to_jsonb, with their position
-- "\ttid" = tableoid:ctid, for detach_account's deletes).
CREATE OR REPLACE FUNCTION tco_shard.move_closure(p_account_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    taken jsonb;
    refs jsonb;
    t regclass;
    conds text;
    rows jsonb;
    changed boolean;
    tid_expr text := '(x.tableoid::text || '':'' || x.ctid::text)';
    order_ regclass[] := tco_shard.move_order();
    conds_of jsonb;
BEGIN
    EXECUTE pg_catalog.format('SELECT pg_catalog.jsonb_build_object(%L, coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(x) || pg_catalog.jsonb_build_object(%L, %s)), %L)) FROM tco.account x WHERE x.account_id = $1',
                              'tco.account', E'\ttid', tid_expr, '[]')
       INTO taken USING p_account_id;
    -- each table's condition: a reference to a row taken (read from the
    -- catalog once; the account itself as a constant: an index scan of the
    -- big tables)
    SELECT pg_catalog.jsonb_object_agg(c.tbl, c.conds) INTO conds_of
      FROM (SELECT r.tbl::text AS tbl,
                   pg_catalog.string_agg(CASE WHEN r.ref_tbl = 'tco.account'::regclass
                                              THEN pg_catalog.format('(%s x.%I = %s)', coalesce(r.cond || ' AND', ''), r.col, p_account_id)
                                              ELSE pg_catalog.format('(%s x.%I IN (SELECT (e ->> %L)::%s FROM pg_catalog.jsonb_array_elements($1 -> %L) e))',
                                                                     coalesce(r.cond || ' AND', ''), r.col, r.ref_col,
                                                                     pg_catalog.format_type(a.atttypid, a.atttypmod), r.ref_tbl::text) END, ' OR ') AS conds
              FROM tco_shard.move_refs() r
              JOIN tco_shard.move_tables() m ON m.tbl = r.ref_tbl AND m.kind = 'account'
              JOIN pg_catalog.pg_attribute a ON a.attrelid = r.tbl AND a.attname = r.col
             GROUP BY r.tbl) c;
    LOOP
        changed := false;
        FOREACH t IN ARRAY order_ LOOP
            CONTINUE WHEN t = 'tco.account'::regclass;
            conds := conds_of ->> t::text;
            CONTINUE WHEN conds IS NULL;
            EXECUTE pg_catalog.format('SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(x) || pg_catalog.jsonb_build_object(%L, %s)), %L) FROM %s x WHERE %s',
                                      E'\ttid', tid_expr, '[]', t, conds)
               INTO rows USING taken;
            IF pg_catalog.jsonb_array_length(rows) <> coalesce(pg_catalog.jsonb_array_length(taken -> t::text), 0) THEN
                taken := taken || pg_catalog.jsonb_build_object(t::text, rows);
                changed := true;
            END IF;
        END LOOP;
        EXIT WHEN NOT changed;
    END LOOP;
    RETURN taken;
END $$;

-- Why the account cannot move (empty: it can): the rules first, then the
-- references that would break.
CREATE OR REPLACE FUNCTION tco_shard.move_blockers(p_account_id bigint, taken jsonb) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b text[];
    r record;
    vals text;
BEGIN
    b := pg_catalog.array_remove(ARRAY[
        (SELECT 'it is a member of organization ' || m.org_id FROM tco.member m WHERE m.account_id = p_account_id),
        (SELECT 'it is the admin of organization ' || min(o.org_id) FROM tco.organization o WHERE o.admin_account_id = p_account_id HAVING count(*) > 0),
        (SELECT 'it is in an active trusteeship (' || pg_catalog.string_agg(t.trusteeship_id::text, ', ' ORDER BY t.trusteeship_id) || ')'
           FROM tco.trusteeship t WHERE p_account_id IN (t.member_account_id, t.management_account_id)
            AND (t.ended_at IS NULL OR t.ended_at > pg_catalog.now()) HAVING count(*) > 0),
        (SELECT 'it has unpaid statements (cycles ' || pg_catalog.string_agg(s.cycle::text, ', ' ORDER BY s.cycle::text) || ')'
           FROM tco.statement s WHERE s.payer_account_id = p_account_id AND s.paid_at IS NULL HAVING count(*) > 0),
        (SELECT 'it has a pending invitation to organization ' || min(i.org_id) FROM tco.invitation i
          WHERE i.account_id = p_account_id AND i.status = 'pending' HAVING count(*) > 0)
    ], NULL);
    -- rows taken that reference rows that stay
    FOR r IN SELECT rf.*, pg_catalog.format_type(a.atttypid, a.atttypmod) AS typ
               FROM tco_shard.move_refs() rf
               JOIN tco_shard.move_tables() mt ON mt.tbl = rf.tbl AND mt.kind = 'account'
               JOIN tco_shard.move_tables() mr ON mr.tbl = rf.ref_tbl AND mr.kind <> 'global'
               JOIN pg_catalog.pg_attribute a ON a.attrelid = rf.tbl AND a.attname = rf.col
              WHERE taken ? rf.tbl::text AND (rf.enforced OR mr.kind = 'account')
              ORDER BY rf.tbl::text, rf.col LOOP
        EXECUTE pg_catalog.format('SELECT pg_catalog.string_agg(v, %L) FROM (SELECT DISTINCT x.%I::text AS v FROM pg_catalog.jsonb_populate_recordset(NULL::%s, $1 -> %L) x '
                                  'WHERE x.%I IS NOT NULL AND %s AND x.%I NOT IN (SELECT (e ->> %L)::%s FROM pg_catalog.jsonb_array_elements(coalesce($1 -> %L, %L)) e) '
                                  'ORDER BY 1 LIMIT 5) s',
                                  ', ', r.col, r.tbl, r.tbl::text, r.col, coalesce(r.cond, 'true'), r.col, r.ref_col, r.typ, r.ref_tbl::text, '[]')
           INTO vals USING taken;
        IF vals IS NOT NULL THEN
            b := b || pg_catalog.format('its %s rows reference %s %s %s, which stays on this shard', r.tbl, r.ref_tbl, r.ref_col, vals);
        END IF;
    END LOOP;
    -- rows of the organizations that reference rows taken
    FOR r IN SELECT rf.*
               FROM tco_shard.move_refs() rf
               JOIN tco_shard.move_tables() mt ON mt.tbl = rf.tbl AND mt.kind <> 'account'
              WHERE taken ? rf.ref_tbl::text AND rf.tbl <> 'tco.member'::regclass
              ORDER BY rf.tbl::text, rf.col LOOP
        EXECUTE pg_catalog.format('SELECT pg_catalog.string_agg(x.%I::text, %L) FROM (SELECT * FROM %s x WHERE %s AND x.%I::text IN '
                                  '(SELECT e ->> %L FROM pg_catalog.jsonb_array_elements($1 -> %L) e) LIMIT 5) x',
                                  r.col, ', ', r.tbl, coalesce(r.cond, 'true'), r.col, r.ref_col, r.ref_tbl::text)
           INTO vals USING taken;
        IF vals IS NOT NULL AND NOT (r.tbl = 'tco.organization'::regclass AND r.col = 'admin_account_id') THEN
            b := b || pg_catalog.format('%s.%s references it (%s)', r.tbl, r.col, vals);
        END IF;
    END LOOP;
    RETURN b;
END $$;

-- The settlement lock of cycles, shared, without waiting long for a
-- settlement in progress.
CREATE OR REPLACE FUNCTION tco_shard.lock_cycles(cycles text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c text;
    old text := pg_catalog.current_setting('lock_timeout');
BEGIN
    PERFORM pg_catalog.set_config('lock_timeout', '5s', true);
    FOREACH c IN ARRAY coalesce((SELECT pg_catalog.array_agg(DISTINCT u ORDER BY u) FROM pg_catalog.unnest(cycles) u), ARRAY[]::text[]) LOOP
        BEGIN
            PERFORM tco.settlement_lock_shared(c::tco.billing_cycle);
        EXCEPTION WHEN lock_not_available THEN
            RAISE EXCEPTION 'billing cycle % is being settled on database %', c, pg_catalog.current_database()
                USING ERRCODE = '55P03', HINT = 'Move the account when the settlement has finished.';
        END;
    END LOOP;
    PERFORM pg_catalog.set_config('lock_timeout', old, true);
END $$;

-- Take the account off this shard: lock it and the settlement of its
-- cycles, refuse what cannot move (tco_shard.move_blockers), delete its rows
-- (raw deletes, history included, with triggers off: session_replication_role
-- = replica, superuser only; the rows are not gone, they move) and return
-- them with the cycles they were settled in or not, for import_account.
CREATE OR REPLACE FUNCTION tco_shard.detach_account(p_account_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    taken jsonb;
    blockers text[];
    cycles text[];
    settled text[];
    order_ regclass[] := tco_shard.move_order();
    t regclass;
    grp record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles su WHERE su.rolname = current_user AND su.rolsuper) THEN
        RAISE EXCEPTION '% is for the router''s moves and id ranges: superusers only', 'tco_shard.detach_account'
            USING ERRCODE = '42501', HINT = 'Move accounts with tco_cluster.move_account on the router.';
    END IF;
    PERFORM 1 FROM tco.account a WHERE a.account_id = p_account_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist on this shard', p_account_id
            USING ERRCODE = '23503', HINT = 'Check tco_cluster.account_directory on the router (tco_cluster.recover() resolves interrupted moves).';
    END IF;
    cycles := ARRAY(SELECT DISTINCT tco.cycle_of(b.period_start)::text FROM tco.bill_line b WHERE b.account_id = p_account_id
                    UNION SELECT s.cycle::text FROM tco.statement s WHERE s.payer_account_id = p_account_id ORDER BY 1);
    PERFORM tco_shard.lock_cycles(cycles);
    taken := tco_shard.move_closure(p_account_id);
    blockers := tco_shard.move_blockers(p_account_id, taken);
    IF pg_catalog.cardinality(blockers) > 0 THEN
        RAISE EXCEPTION 'account % cannot move to another shard: %', p_account_id, pg_catalog.array_to_string(blockers, '; ')
            USING ERRCODE = '55000',
                  HINT = 'An account moves with all its rows; what it shares with accounts or organizations that stay cannot move (README "Running on several servers": Accounts that change shard).';
    END IF;
    -- settled: the cycles of its statements, and those settled for everything here
    settled := ARRAY(SELECT s.cycle::text FROM tco.statement s WHERE s.payer_account_id = p_account_id
                     UNION SELECT c FROM pg_catalog.unnest(cycles) c
                            WHERE EXISTS (SELECT 1 FROM tco.settled_cycle z WHERE z.cycle::text = c AND z.org_id IS NULL) ORDER BY 1);
    PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);
    FOR i IN REVERSE pg_catalog.cardinality(order_) .. 1 LOOP
        t := order_[i];
        CONTINUE WHEN NOT taken ? t::text;
        FOR grp IN SELECT pg_catalog.split_part(e ->> E'\ttid', ':', 1)::oid AS rel,
                          pg_catalog.array_agg(pg_catalog.split_part(e ->> E'\ttid', ':', 2)::tid) AS tids
                     FROM pg_catalog.jsonb_array_elements(taken -> t::text) e GROUP BY 1 LOOP
            EXECUTE pg_catalog.format('DELETE FROM %s WHERE ctid = ANY ($1)', grp.rel::regclass) USING grp.tids;
        END LOOP;
    END LOOP;
    PERFORM pg_catalog.set_config('session_replication_role', 'origin', true);
    RETURN pg_catalog.jsonb_build_object('account_id', p_account_id, 'rows', taken,
                                         'settled_cycles', pg_catalog.to_jsonb(settled),
                                         'open_cycles', pg_catalog.to_jsonb(ARRAY(SELECT c FROM pg_catalog.unnest(cycles) c WHERE NOT c = ANY (settled))));
END $$;

-- Insert the rows of detach_account: as a restore does (row_security off,
-- superuser: tco.restoring() is true, so triggers neither derive rows nor
-- re-judge past actions, README "Backup and restore": the ledger is not
-- applied to the balance twice, settled lines enter their settled cycle),
-- with their ids (every shard draws its own range, set_id_ranges).  A cycle
-- the account was settled in must be settled here too (then a later
-- settlement here skips its lines), and one it was not settled in must not
-- be settled here for everything (its lines would never be).
CREATE OR REPLACE FUNCTION tco_shard.import_account(data jsonb) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    order_ regclass[] := tco_shard.move_order();
    t regclass;
    k text;
    c text;
    cols text;
    n bigint;
    total bigint := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles su WHERE su.rolname = current_user AND su.rolsuper) THEN
        RAISE EXCEPTION '% is for the router''s moves and id ranges: superusers only', 'tco_shard.import_account'
            USING ERRCODE = '42501', HINT = 'Move accounts with tco_cluster.move_account on the router.';
    END IF;
    FOR k IN SELECT pg_catalog.jsonb_object_keys(data -> 'rows') LOOP
        IF pg_catalog.to_regclass(k) IS NULL OR NOT pg_catalog.to_regclass(k) = ANY (order_) THEN
            RAISE EXCEPTION 'the account''s rows of % have no table of account data on this shard', k
                USING ERRCODE = '55000', HINT = 'Run the same version of tco on every shard.';
        END IF;
    END LOOP;
    PERFORM tco_shard.lock_cycles(ARRAY(SELECT pg_catalog.jsonb_array_elements_text(data -> 'settled_cycles')
                                        UNION SELECT pg_catalog.jsonb_array_elements_text(data -> 'open_cycles')));
    FOR c IN SELECT pg_catalog.jsonb_array_elements_text(data -> 'settled_cycles') LOOP
        IF NOT EXISTS (SELECT 1 FROM tco.settled_cycle z WHERE z.cycle::text = c) THEN
            RAISE EXCEPTION 'account % was settled in billing cycle %, which is not settled on this shard (database %)', data ->> 'account_id', c, pg_catalog.current_database()
                USING ERRCODE = '55000', HINT = pg_catalog.format('Settle it on every shard first: SELECT * FROM tco.settle_cycle(%L) on the router.', c);
        END IF;
    END LOOP;
    FOR c IN SELECT pg_catalog.jsonb_array_elements_text(data -> 'open_cycles') LOOP
        IF EXISTS (SELECT 1 FROM tco.settled_cycle z WHERE z.cycle::text = c AND z.org_id IS NULL) THEN
            RAISE EXCEPTION 'account % has bill lines of billing cycle % not settled yet, and the cycle is settled on this shard (database %)', data ->> 'account_id', c, pg_catalog.current_database()
                USING ERRCODE = '55000', HINT = pg_catalog.format('Settle it on every shard first: SELECT * FROM tco.settle_cycle(%L) on the router.', c);
        END IF;
    END LOOP;
    -- the partitions of its lines' cycles (as tco.insert_bill_lines makes them)
    PERFORM tco.prepare_cycles_of(ARRAY(SELECT (e ->> 'period_start')::timestamptz
                                          FROM pg_catalog.jsonb_array_elements(coalesce(data -> 'rows' -> 'tco.bill_line', '[]')) e));
    PERFORM pg_catalog.set_config('row_security', 'off', true);
    FOREACH t IN ARRAY order_ LOOP
        CONTINUE WHEN coalesce(pg_catalog.jsonb_array_length(data -> 'rows' -> t::text), 0) = 0;
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = t AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
        BEGIN
            EXECUTE pg_catalog.format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM pg_catalog.jsonb_populate_recordset(NULL::%s, $1)',
                                      t, cols, cols, t)
              USING data -> 'rows' -> t::text;
            GET DIAGNOSTICS n = ROW_COUNT;
        EXCEPTION WHEN unique_violation THEN
            -- a row of the account has the key of a row of this shard: ids
            -- drawn before the shards had their id ranges (README "Running on
            -- several servers", Ids) keep their low values on every shard
            GET STACKED DIAGNOSTICS c = CONSTRAINT_NAME, k = PG_EXCEPTION_DETAIL;
            RAISE EXCEPTION 'account % cannot move here (database %): its rows of % collide with rows of this shard (%: %)',
                            data ->> 'account_id', pg_catalog.current_database(), t, c, k
                USING ERRCODE = 'TC030',
                      DETAIL = 'Ids drawn on a shard before it had its own id range keep their low values; this shard has a row with the same key.',
                      HINT = 'Leave the account on its shard (add it to an organization there, or create its organization there), or move it to a shard without that id; nothing was moved.';
        END;
        total := total + n;
    END LOOP;
    PERFORM pg_catalog.set_config('row_security', 'on', true);
    PERFORM tco.bill_lines_written();
    RETURN total;
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tco_shard FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tco_shard TO tco_admin;
$sql$ $support$;
COMMENT ON FUNCTION tco_cluster.shard_support_sql() IS 'The SQL that installs (or updates) schema tco_shard on a shard: the functions the router calls there.';

-- The schema of the dblink extension, wherever CREATE EXTENSION ... CASCADE
-- put it, and its dblink_exec.
CREATE FUNCTION tco_cluster.dblink_schema() RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'dblink'
$$;
CREATE FUNCTION tco_cluster.dblink_exec(conn text, command text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r text;
BEGIN
    EXECUTE pg_catalog.format('SELECT %I.dblink_exec($1, $2)', tco_cluster.dblink_schema()) INTO r USING conn, command;
    RETURN r;
END $$;

-- Install the shard functions on a shard, through its postgres_fdw server and
-- the calling role's user mapping (dblink).
CREATE FUNCTION tco_cluster.install_shard_support(p_server name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco_cluster.dblink_exec(p_server::text, 'BEGIN; ' || tco_cluster.shard_support_sql() || ' COMMIT;');
END $$;

-- ==== cluster/sql/20_add_shard.sql
-- Adding a shard, mapping roles, and the BI views over every shard.

-- The size of each shard's range of ids: shard k draws the ids of every
-- sequence of schema tco (but accounts, entities, organizations and units,
-- drawn by the router) from [k * size, (k + 1) * size - 1]
-- (tco_shard.set_id_ranges, 15_shard_support.sql).
CREATE FUNCTION tco_cluster.id_range_size() RETURNS bigint
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$ SELECT 1000000000000::bigint $$;
COMMENT ON FUNCTION tco_cluster.id_range_size() IS 'Size of the range of ids each shard draws from (shard k: k * size to (k + 1) * size - 1), for every sequence of schema tco but the router''s ids.';

-- The key=value pairs of a libpq connection string (values may be quoted).
CREATE FUNCTION tco_cluster.conninfo_options(conninfo text) RETURNS TABLE (key text, value text)
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT m[1], CASE WHEN m[2] LIKE '''%' THEN pg_catalog.replace(pg_catalog.replace(pg_catalog.substr(m[2], 2, pg_catalog.length(m[2]) - 2), '\''', ''''), '\\', '\')
                      ELSE m[2] END
      FROM pg_catalog.regexp_matches(conninfo, '([A-Za-z_]+)\s*=\s*(''(?:[^''\\]|\\.)*''|[^\s'']+)', 'g') AS m
$$;

-- The BI views of the router: UNION ALL of the foreign tables over every
-- shard's views (security_invoker: each reader reads the shards through its
-- own user mapping, so the shards' row-level security applies to it).
-- Rebuilt whenever a shard is added; without shards they are empty.
CREATE FUNCTION tco_cluster.view_columns(view_name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE view_name
        WHEN 'settlement_by_payer' THEN 'cycle text, payer_account_id bigint, org_id bigint, list_total numeric, discount_total numeric, benefit_total numeric, due_total numeric, lines bigint, statement_id bigint, paid_at timestamptz, cycle_start date, cycle_end date'
        WHEN 'settlement_by_member' THEN 'cycle text, payer_account_id bigint, account_id bigint, product_code text, org_id bigint, list_amount numeric, discount_amount numeric, benefit_amount numeric, due_amount numeric, lines bigint, statement_id bigint, cycle_start date, cycle_end date'
        WHEN 'settlement_by_unit' THEN 'cycle text, unit_id bigint, org_id bigint, list_total numeric, discount_total numeric, benefit_total numeric, due_total numeric, lines bigint, cycle_start date, cycle_end date'
    END
$$;

CREATE FUNCTION tco_cluster.rebuild_views() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v text;
    cols text;
    names text;
    body text;
BEGIN
    FOREACH v IN ARRAY ARRAY['settlement_by_payer', 'settlement_by_member', 'settlement_by_unit'] LOOP
        cols := tco_cluster.view_columns(v);
        SELECT pg_catalog.string_agg(pg_catalog.split_part(pg_catalog.btrim(c), ' ', 1), ', ' ORDER BY o)
          INTO names FROM pg_catalog.unnest(pg_catalog.string_to_array(cols, ',')) WITH ORDINALITY AS u(c, o);
        SELECT pg_catalog.string_agg(pg_catalog.format('SELECT %s FROM tco_cluster.%I', names, 's' || s.shard_id || '_' || v),
                                     ' UNION ALL ' ORDER BY s.shard_id)
          INTO body FROM tco_cluster.shard_conf s;
        IF body IS NULL THEN
            SELECT 'SELECT ' || pg_catalog.string_agg(pg_catalog.format('NULL::%s AS %I', pg_catalog.split_part(pg_catalog.btrim(c), ' ', 2),
                                                                         pg_catalog.split_part(pg_catalog.btrim(c), ' ', 1)), ', ' ORDER BY o)
                   || ' WHERE false'
              INTO body FROM pg_catalog.unnest(pg_catalog.string_to_array(cols, ',')) WITH ORDINALITY AS u(c, o);
        END IF;
        EXECUTE pg_catalog.format('CREATE OR REPLACE VIEW tco.%I WITH (security_invoker = true) AS %s', v, body);
    END LOOP;
END $$;
COMMENT ON FUNCTION tco_cluster.rebuild_views() IS 'Defines the router''s BI views as UNION ALL of the foreign tables of every shard.';

SELECT tco_cluster.rebuild_views();
COMMENT ON VIEW tco.settlement_by_payer IS 'Per cycle and payer, over every shard (postgres_fdw, shards read concurrently): the view tco.settlement_by_payer of each shard. statement_id is unique across shards (each shard draws ids from its own range, tco_cluster.id_range_size()).';
COMMENT ON VIEW tco.settlement_by_member IS 'Per cycle, payer, consuming account and product, over every shard: the view tco.settlement_by_member of each shard.';
COMMENT ON VIEW tco.settlement_by_unit IS 'Per cycle and unit (whole subtree), over every shard: the view tco.settlement_by_unit of each shard.';

-- User mappings of one role (or PUBLIC) on one shard's foreign data server.
CREATE FUNCTION tco_cluster.create_fdw_mapping(p_server name, p_role text, p_options text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE pg_catalog.format('CREATE USER MAPPING IF NOT EXISTS FOR %s SERVER %I%s', p_role, p_server,
                              CASE WHEN p_options IS NULL OR p_options = '' THEN '' ELSE ' OPTIONS (' || p_options || ')' END);
END $$;

-- Add a shard: a tco database reachable with `conninfo` (libpq key=value,
-- without user or password: those belong in user mappings).  Creates the
-- PL/Proxy partition, the postgres_fdw server tco_shard_<name> (async, so the
-- views read the shards concurrently), its user mappings (the PUBLIC one, and
-- copies of every role's mapping on the first shard), the foreign tables of
-- its BI views, and copies the global data to it.  New organizations and
-- accounts then go to the least loaded shard, which is the new one.
CREATE FUNCTION tco_cluster.add_shard(name text, conninfo text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id integer;
    srv name;
    opts text;
    v text;
    um record;
BEGIN
    IF name IS NULL OR conninfo IS NULL THEN
        RAISE EXCEPTION 'tco_cluster.add_shard needs a name and a conninfo' USING ERRCODE = '22004',
            HINT = 'Call tco_cluster.add_shard(''shard1'', ''host=... port=... dbname=...'').';
    END IF;
    IF name !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'shard name "%" is not a lower-case identifier', name USING ERRCODE = '22023',
            HINT = 'Use letters, digits and underscores, starting with a letter (at most 40 characters).';
    END IF;
    IF EXISTS (SELECT 1 FROM tco_cluster.conninfo_options(conninfo) o WHERE o.key IN ('password', 'user')) THEN
        RAISE EXCEPTION 'the conninfo of shard "%" names a user or a password', name USING ERRCODE = '22023',
            HINT = 'Give host, port and dbname only; credentials belong in user mappings (tco_cluster.map_role).';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tco_cluster.conninfo_options(conninfo)) THEN
        RAISE EXCEPTION 'the conninfo of shard "%" is empty or not key=value pairs', name USING ERRCODE = '22023',
            HINT = 'Give host, port and dbname as key=value pairs.';
    END IF;
    LOCK TABLE tco_cluster.shard_conf IN EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM tco_cluster.shard_conf s WHERE s.name = add_shard.name) THEN
        RAISE EXCEPTION 'shard "%" already exists', name USING ERRCODE = '23505', HINT = 'Choose another name.';
    END IF;
    SELECT coalesce(max(s.shard_id), 0) + 1 INTO new_id FROM tco_cluster.shard_conf s;
    srv := 'tco_shard_' || name;
    INSERT INTO tco_cluster.shard_conf (shard_id, name, conninfo, fdw_server) VALUES (new_id, name, conninfo, srv);

    IF new_id = 1 THEN
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_foreign_server f WHERE f.srvname = 'tco_cluster') THEN
            RAISE EXCEPTION 'a foreign server tco_cluster exists already' USING ERRCODE = '42710',
                HINT = 'tco_cluster names its PL/Proxy cluster tco_cluster: drop or rename the other server.';
        END IF;
        EXECUTE pg_catalog.format('CREATE SERVER tco_cluster FOREIGN DATA WRAPPER plproxy OPTIONS (modular_mapping %L, p0 %L)',
                                  '1', conninfo);
        CREATE USER MAPPING FOR PUBLIC SERVER tco_cluster;
        GRANT USAGE ON FOREIGN SERVER tco_cluster TO tco_admin, tco_reader;
    ELSE
        EXECUTE pg_catalog.format('ALTER SERVER tco_cluster OPTIONS (ADD %I %L)', 'p' || (new_id - 1), conninfo);
    END IF;

    SELECT pg_catalog.string_agg(pg_catalog.format('%I %L', o.key, o.value), ', ') INTO opts
      FROM tco_cluster.conninfo_options(conninfo) o;
    EXECUTE pg_catalog.format('CREATE SERVER %I FOREIGN DATA WRAPPER postgres_fdw OPTIONS (%s, async_capable %L, fetch_size %L)',
                              srv, opts, 'true', '10000');
    PERFORM tco_cluster.create_fdw_mapping(srv, 'PUBLIC', NULL);
    -- the roles mapped so far (their mappings on the first shard's server)
    FOR um IN
        SELECT m.umuser, (SELECT pg_catalog.string_agg(pg_catalog.format('%I %L', pg_catalog.split_part(x, '=', 1),
                                                                       pg_catalog.substr(x, pg_catalog.strpos(x, '=') + 1)), ', ')
                            FROM pg_catalog.unnest(m.umoptions) x) AS options
          FROM pg_catalog.pg_user_mapping m JOIN pg_catalog.pg_foreign_server f ON f.oid = m.umserver
         WHERE f.srvname = (SELECT s.fdw_server FROM tco_cluster.shard_conf s ORDER BY s.shard_id LIMIT 1)
           AND m.umuser <> 0 AND f.srvname <> srv
    LOOP
        PERFORM tco_cluster.create_fdw_mapping(srv, pg_catalog.quote_ident(um.umuser::regrole::text), um.options);
    END LOOP;
    EXECUTE pg_catalog.format('GRANT USAGE ON FOREIGN SERVER %I TO tco_admin, tco_reader', srv);

    FOREACH v IN ARRAY ARRAY['settlement_by_payer', 'settlement_by_member', 'settlement_by_unit'] LOOP
        EXECUTE pg_catalog.format('CREATE FOREIGN TABLE tco_cluster.%I (%s) SERVER %I OPTIONS (schema_name %L, table_name %L)',
                                  's' || new_id || '_' || v, tco_cluster.view_columns(v), srv, 'tco', v);
        EXECUTE pg_catalog.format('GRANT SELECT ON tco_cluster.%I TO tco_admin, tco_reader', 's' || new_id || '_' || v);
    END LOOP;
    PERFORM tco_cluster.rebuild_views();

    PERFORM tco_cluster.install_shard_support(srv);
    -- ids the shard draws come from its own range (README "Running on
    -- several servers", Ids): rows that move between shards keep their ids
    PERFORM tco_cluster.dblink_value(srv::text, pg_catalog.format('SELECT tco_shard.set_id_ranges(%s, %s)::text', new_id, tco_cluster.id_range_size()));
    PERFORM tco_cluster.sync_globals(new_id);
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco_cluster.add_shard(text, text) IS
'Adds a shard (a database with CREATE EXTENSION tco) reachable with conninfo (host, port, dbname; no user or password). Returns its shard_id. Copies entities, products and configuration to it; new organizations and accounts go to the least loaded shard.';

-- Bring every shard's schema tco_shard up to this version of tco_cluster and
-- give each its range of ids: after ALTER EXTENSION tco_cluster UPDATE
-- (README "Running on several servers", "Upgrading the router"), and safe to
-- run any time.  A shard that is down fails the call, naming it; the shards
-- done before it stay done (each is one transaction of its own), and the
-- call can be run again.  Returns the number of shards brought up to date.
CREATE FUNCTION tco_cluster.refresh_shards() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tco_cluster.shard_conf;
    n integer := 0;
    msg text;
BEGIN
    FOR s IN SELECT * FROM tco_cluster.shard_conf ORDER BY shard_id LOOP
        BEGIN
            PERFORM tco_cluster.install_shard_support(s.fdw_server);
            PERFORM tco_cluster.dblink_value(s.fdw_server::text, pg_catalog.format('SELECT tco_shard.set_id_ranges(%s, %s)::text',
                                                                                   s.shard_id, tco_cluster.id_range_size()));
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
            PERFORM tco_cluster.raise_if_unreachable(s.shard_id, msg);
            RAISE;
        END;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION tco_cluster.refresh_shards() IS
'Installs this version''s shard functions (schema tco_shard) on every shard and sets each shard''s range of ids (tco_cluster.id_range_size()); run it after ALTER EXTENSION tco_cluster UPDATE. Idempotent.';

-- Credentials of a role for every shard: user mappings on the PL/Proxy
-- cluster and on each shard's postgres_fdw server (and on shards added
-- later, which copy the first shard's mappings).  remote_user defaults to
-- the role's name; without a password the mapping is password_required
-- false (peer or trust authentication on the shards' private sockets).
CREATE FUNCTION tco_cluster.map_role(role_name name, remote_user text DEFAULT NULL, password text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tco_cluster.shard_conf;
    opts text;
    n integer := 0;
BEGIN
    IF role_name IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = map_role.role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', role_name USING ERRCODE = '42704', HINT = 'Create the role on the router (and on every shard) first.';
    END IF;
    opts := pg_catalog.format('user %L', coalesce(remote_user, role_name::text))
            || CASE WHEN password IS NULL THEN ', password_required ''false''' ELSE pg_catalog.format(', password %L', password) END;
    SET LOCAL client_min_messages = warning;
    EXECUTE pg_catalog.format('DROP USER MAPPING IF EXISTS FOR %I SERVER tco_cluster', role_name);
    EXECUTE pg_catalog.format('CREATE USER MAPPING FOR %I SERVER tco_cluster OPTIONS (user %L%s)', role_name,
                              coalesce(remote_user, role_name::text),
                              CASE WHEN password IS NULL THEN '' ELSE pg_catalog.format(', password %L', password) END);
    FOR s IN SELECT * FROM tco_cluster.shard_conf ORDER BY shard_id LOOP
        EXECUTE pg_catalog.format('DROP USER MAPPING IF EXISTS FOR %I SERVER %I', role_name, s.fdw_server);
        PERFORM tco_cluster.create_fdw_mapping(s.fdw_server, pg_catalog.quote_ident(role_name), opts);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION tco_cluster.map_role(name, text, text) IS
'Gives a router role its credentials on every shard (user mappings of the PL/Proxy cluster and of each postgres_fdw server; copied to shards added later). Returns the number of shards mapped.';

-- ==== cluster/sql/30_routed.sql
-- Schema tco of the router: the functions of DESIGN section 6 with the same
-- names, arguments and results, routed by PL/Proxy to the shard holding the
-- organization or account (RUN ON its partition, shard_id - 1), split by
-- shard (SPLIT) for bill lines, and run on every shard in parallel (RUN ON
-- ALL) for cluster-wide calls.  Each px_* function is the PL/Proxy call; the
-- tco.* function around it finds the shard in the directory (unknown ids are
-- 23503 as on one server), and turns a connection failure into an error
-- naming the shard (tco_cluster.raise_if_unreachable).  Errors raised on a
-- shard keep their SQLSTATE, message and hint (PL/Proxy passes them on).

-- Keep a router sequence ahead of an explicit id, as tco keeps its identity
-- sequences (src/sql/98_dump.sql): ids in the lower half of the range only.
CREATE FUNCTION tco_cluster.advance_seq(seq regclass, id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF id IS NOT NULL AND id > 0 AND id <= 4611686018427387903
       AND id > coalesce(pg_catalog.pg_sequence_last_value(seq), 0) THEN
        PERFORM pg_catalog.setval(seq, id);
    END IF;
END $$;

-- ---------------------------------------------------------------------------
-- PL/Proxy calls on one shard: p_part is its partition (shard_id - 1).

CREATE FUNCTION tco_cluster.px_create_account(p_part integer, p_account_id bigint, p_name text, p_entity_id bigint,
                                              p_balance numeric, p_credit_limit numeric) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.create_account(p_account_id, p_name, p_entity_id, p_balance, p_credit_limit);
$$;
CREATE FUNCTION tco_cluster.px_create_organization(p_part integer, p_org_id bigint, p_root_unit_id bigint,
                                                   p_admin bigint, p_name text) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco_shard.create_organization(p_org_id, p_root_unit_id, p_admin, p_name);
$$;
CREATE FUNCTION tco_cluster.px_create_unit(p_part integer, p_unit_id bigint, p_org_id bigint, p_name text,
                                           p_parent bigint) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco_shard.create_unit(p_unit_id, p_org_id, p_name, p_parent);
$$;
CREATE FUNCTION tco_cluster.px_add_member(p_part integer, p_org_id bigint, p_account_id bigint, p_unit_id bigint,
                                          p_policy tco.settlement_policy) RETURNS void
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.add_member(p_org_id, p_account_id, p_unit_id, p_policy);
$$;
CREATE FUNCTION tco_cluster.px_remove_member(p_part integer, p_account_id bigint) RETURNS void
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.remove_member(p_account_id);
$$;
CREATE FUNCTION tco_cluster.px_establish_trusteeship(p_part integer, p_member bigint, p_manager bigint, p_at timestamptz) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.establish_trusteeship(p_member, p_manager, p_at);
$$;
CREATE FUNCTION tco_cluster.px_move_trusteeship(p_part integer, p_member bigint, p_manager bigint, p_at timestamptz) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.move_trusteeship(p_member, p_manager, p_at);
$$;
CREATE FUNCTION tco_cluster.px_end_trusteeship(p_part integer, p_member bigint, p_at timestamptz) RETURNS void
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.end_trusteeship(p_member, p_at);
$$;
CREATE FUNCTION tco_cluster.px_trusteeship_effective_payer(p_part integer, p_account_id bigint, p_product_code text,
                                                           p_at timestamptz) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.trusteeship_effective_payer(p_account_id, p_product_code, p_at);
$$;
CREATE FUNCTION tco_cluster.px_explain_payer(p_part integer, p_account_id bigint, p_product_code text,
                                             p_at timestamptz) RETURNS jsonb
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.explain_payer(p_account_id, p_product_code, p_at);
$$;
CREATE FUNCTION tco_cluster.px_available_credit(p_part integer, p_account_id bigint) RETURNS numeric
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.available_credit(p_account_id);
$$;
CREATE FUNCTION tco_cluster.px_service_available(p_part integer, p_account_id bigint) RETURNS boolean
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.service_available(p_account_id);
$$;
CREATE FUNCTION tco_cluster.px_deposit(p_part integer, p_account_id bigint, p_amount numeric) RETURNS numeric
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.deposit(p_account_id, p_amount);
$$;
CREATE FUNCTION tco_cluster.px_grant_benefit(p_part integer, p_kind text, p_owner bigint, p_amount numeric,
                                             p_valid_to timestamptz, p_product_code text) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT CASE p_kind WHEN 'coupon' THEN tco.grant_coupon(p_owner, p_amount, p_valid_to, p_product_code)
                       WHEN 'voucher' THEN tco.grant_voucher(p_owner, p_amount, p_valid_to, p_product_code)
                       ELSE tco.grant_stored_value_card(p_owner, p_amount, p_valid_to, p_product_code) END;
$$;
CREATE FUNCTION tco_cluster.px_set_contract_discount(p_part integer, p_account_id bigint, p_entity_id bigint, p_rate numeric,
                                                     p_product_code text, p_valid_from timestamptz,
                                                     p_valid_to timestamptz) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.set_contract_discount(p_account_id, p_entity_id, p_rate, p_product_code, p_valid_from, p_valid_to);
$$;
CREATE FUNCTION tco_cluster.px_set_contract_discount_all(p_entity_id bigint, p_rate numeric, p_product_code text,
                                                         p_valid_from timestamptz, p_valid_to timestamptz) RETURNS SETOF bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON ALL;
    SELECT tco.set_contract_discount(NULL::bigint, p_entity_id, p_rate, p_product_code, p_valid_from, p_valid_to);
$$;
CREATE FUNCTION tco_cluster.px_settle_cycle(p_part integer, p_cycle tco.billing_cycle, p_org_id bigint,
                                            OUT statements bigint, OUT lines bigint,
                                            OUT list_total numeric, OUT due_total numeric)
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT s.statements, s.lines, s.list_total, s.due_total FROM tco.settle_cycle(p_cycle, p_org_id) s;
$$;
-- Cluster-wide: every shard in parallel, one row each.
CREATE FUNCTION tco_cluster.px_settle_cycle_all(p_cycle tco.billing_cycle,
                                                OUT statements bigint, OUT lines bigint,
                                                OUT list_total numeric, OUT due_total numeric) RETURNS SETOF record
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON ALL;
    SELECT s.statements, s.lines, s.list_total, s.due_total FROM tco.settle_cycle(p_cycle) s;
$$;
CREATE FUNCTION tco_cluster.px_cycle_of(p_at timestamptz) RETURNS tco.billing_cycle
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON ANY;
    SELECT tco.cycle_of(p_at);
$$;
CREATE FUNCTION tco_cluster.px_cycle_range(p_cycle tco.billing_cycle) RETURNS tstzrange
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON ANY;
    SELECT tco.cycle_range(p_cycle);
$$;
CREATE FUNCTION tco_cluster.px_set_billing_timezone_all(p_zone text) RETURNS SETOF text
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON ALL;
    SELECT tco.set_billing_timezone(p_zone);
$$;
-- A bill line's account on one shard (NULL: not there) or on every shard
-- (one row per shard), and its correction (tco.correct_bill_line).
CREATE FUNCTION tco_cluster.px_line_account(p_part integer, p_line_id bigint) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT (tco.bill_line_by_id(p_line_id)).account_id;
$$;
CREATE FUNCTION tco_cluster.px_line_account_all(p_line_id bigint) RETURNS SETOF bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON ALL;
    SELECT (tco.bill_line_by_id(p_line_id)).account_id;
$$;
CREATE FUNCTION tco_cluster.px_correct_bill_line(p_part integer, p_line_id bigint, p_new_list_amount numeric,
                                                 p_reason text) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.correct_bill_line(p_line_id, p_new_list_amount, p_reason);
$$;
-- Bill lines: the arrays are split by shard (p_part holds each line's
-- partition), so each shard gets one call with its own lines.
CREATE FUNCTION tco_cluster.px_insert_bill_lines(p_part integer[], p_account_id bigint[], p_product_code text[],
                                                 p_charge_type tco.charge_type[], p_period_start timestamptz[],
                                                 p_period_end timestamptz[], p_list_amount numeric[],
                                                 p_issued_at timestamptz[], p_paid_at timestamptz[]) RETURNS SETOF bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster';
    SPLIT ALL;
    RUN ON p_part;
    SELECT tco.insert_bill_lines(p_account_id, p_product_code, p_charge_type, p_period_start, p_period_end,
                                 p_list_amount, p_issued_at, p_paid_at);
$$;

-- ---------------------------------------------------------------------------
-- Global data: written on the router, copied to every shard.

CREATE FUNCTION tco.create_entity(entity_id bigint, name text, verified boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'argument "name" must not be NULL' USING ERRCODE = '22004', HINT = 'Pass a value for every required argument.';
    END IF;
    new_id := coalesce(entity_id, pg_catalog.nextval('tco_cluster.entity_id_seq'));
    INSERT INTO tco_cluster.entity (entity_id, name, verified) VALUES (new_id, name, coalesce(verified, false));
    PERFORM tco_cluster.advance_seq('tco_cluster.entity_id_seq', new_id);
    PERFORM tco_cluster.push_globals(NULL, ARRAY[new_id], ARRAY[name], ARRAY[coalesce(verified, false)],
                                     '{}', '{}', NULL, NULL);
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.create_entity(bigint, text, boolean) IS 'Router: creates an entity (global: copied to every shard). Returns its id.';

CREATE FUNCTION tco.create_product(product_code text, granularity tco.granularity) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF product_code IS NULL OR granularity IS NULL THEN
        RAISE EXCEPTION 'argument "%" must not be NULL', CASE WHEN product_code IS NULL THEN 'product_code' ELSE 'granularity' END
            USING ERRCODE = '22004', HINT = 'Pass a value for every required argument.';
    END IF;
    INSERT INTO tco_cluster.product (product_code, granularity) VALUES (product_code, granularity);
    PERFORM tco_cluster.push_globals(NULL, '{}', '{}', '{}', ARRAY[product_code], ARRAY[granularity], NULL, NULL);
    RETURN product_code;
END $$;
COMMENT ON FUNCTION tco.create_product(text, tco.granularity) IS 'Router: creates a product (global: copied to every shard). Returns its code.';

CREATE FUNCTION tco.set_billing_timezone(zone text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF zone IS NULL THEN
        RAISE EXCEPTION 'billing time zone must not be NULL'
            USING ERRCODE = '22004', HINT = 'Pass a zone name such as ''UTC'' or ''Asia/Shanghai''.';
    END IF;
    INSERT INTO tco_cluster.config (billing_timezone) VALUES (zone)
        ON CONFLICT (singleton) DO UPDATE SET billing_timezone = excluded.billing_timezone;
    -- each shard validates the zone (22023 for an offset or an unknown name)
    PERFORM tco_cluster.push_globals(NULL, '{}', '{}', '{}', '{}', '{}', zone, NULL);
    RETURN zone;
END $$;
COMMENT ON FUNCTION tco.set_billing_timezone(text) IS 'Router: sets the billing time zone of the installation (global: copied to every shard, which validates it).';

CREATE FUNCTION tco.billing_timezone() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT c.billing_timezone FROM tco_cluster.config c), 'UTC')
$$;
COMMENT ON FUNCTION tco.billing_timezone() IS 'Router: the billing time zone of the installation (default UTC).';

CREATE FUNCTION tco_cluster.set_legacy_cutover(at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF at IS NULL THEN
        RAISE EXCEPTION 'legacy cut-over must not be NULL' USING ERRCODE = '22004', HINT = 'Pass an instant.';
    END IF;
    INSERT INTO tco_cluster.config (legacy_cutover) VALUES (at)
        ON CONFLICT (singleton) DO UPDATE SET legacy_cutover = excluded.legacy_cutover;
    PERFORM tco_cluster.push_globals(NULL, '{}', '{}', '{}', '{}', '{}', NULL, at);
    RETURN at;
END $$;
COMMENT ON FUNCTION tco_cluster.set_legacy_cutover(timestamptz) IS 'Sets tco.config.legacy_cutover on every shard (the new-version cut-over of DESIGN section 4).';

CREATE FUNCTION tco.cycle_of(timestamptz) RETURNS tco.billing_cycle
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN tco_cluster.px_cycle_of($1);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_unreachable_shards('tco.cycle_of', SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.cycle_of(timestamptz) IS 'Router: the billing cycle containing an instant (computed by a shard).';

CREATE FUNCTION tco.cycle_range(tco.billing_cycle) RETURNS tstzrange
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN tco_cluster.px_cycle_range($1);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_unreachable_shards('tco.cycle_range', SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.cycle_range(tco.billing_cycle) IS 'Router: [start, next start) of a billing cycle (computed by a shard).';

-- ---------------------------------------------------------------------------
-- Accounts and organizations.

CREATE FUNCTION tco.create_account(account_id bigint, name text, entity_id bigint DEFAULT NULL,
                                   balance numeric DEFAULT 0, credit_limit numeric DEFAULT 0) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint := coalesce(account_id, pg_catalog.nextval('tco_cluster.account_id_seq'));
    s integer;
BEGIN
    -- Home shard: where the entity's accounts already are (a trusteeship or
    -- a pooled organization needs them together), else the least loaded.
    SELECT d.shard_id INTO s FROM tco_cluster.account_directory d
      JOIN tco_cluster.account_entity e ON e.account_id = d.account_id
     WHERE e.entity_id = create_account.entity_id
     GROUP BY d.shard_id ORDER BY count(*) DESC, d.shard_id LIMIT 1;
    s := coalesce(s, tco_cluster.least_loaded_shard(true));
    IF EXISTS (SELECT 1 FROM tco_cluster.account_directory d WHERE d.account_id = new_id) THEN
        RAISE EXCEPTION 'account % already exists', new_id
            USING ERRCODE = '23505', HINT = 'Choose another account id, or pass NULL for the next one.';
    END IF;
    INSERT INTO tco_cluster.account_directory (account_id, shard_id) VALUES (new_id, s);
    IF entity_id IS NOT NULL THEN
        INSERT INTO tco_cluster.account_entity (account_id, entity_id) VALUES (new_id, entity_id);
    END IF;
    PERFORM tco_cluster.advance_seq('tco_cluster.account_id_seq', new_id);
    RETURN tco_cluster.px_create_account(s - 1, new_id, name, entity_id, balance, credit_limit);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.create_account(bigint, text, bigint, numeric, numeric) IS 'Router: creates an account on its home shard: the shard holding most accounts of its entity, else the one with the fewest accounts. Returns its id.';

CREATE FUNCTION tco.create_organization(admin_account_id bigint, name text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer := tco_cluster.account_shard(admin_account_id);
    target integer;
    new_org bigint;
    root bigint;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'argument "name" must not be NULL' USING ERRCODE = '22004', HINT = 'Pass a value for every required argument.';
    END IF;
    -- A new organization goes to the shard with the fewest organizations: its
    -- admin moves there first when it can (an account with no settled or
    -- shared history, tco_cluster.move_account); otherwise the organization
    -- stays on the admin's shard.
    target := tco_cluster.least_loaded_shard(false);
    IF target <> s THEN
        BEGIN
            PERFORM tco_cluster.move_account(admin_account_id, target);
            s := target;
        EXCEPTION WHEN object_not_in_prerequisite_state OR SQLSTATE 'TC030' THEN
            NULL;   -- refused (55000), or its ids collide with the target's (TC030)
        END;
    END IF;
    new_org := pg_catalog.nextval('tco_cluster.org_id_seq');
    root := pg_catalog.nextval('tco_cluster.unit_id_seq');
    INSERT INTO tco_cluster.org_directory (org_id, shard_id) VALUES (new_org, s);
    UPDATE tco_cluster.account_directory d SET org_id = new_org WHERE d.account_id = admin_account_id;
    RETURN tco_cluster.px_create_organization(s - 1, new_org, root, admin_account_id, name);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.create_organization(bigint, text) IS 'Router: creates an organization on the shard with the fewest organizations, moving its admin account there first when it can (else on the admin''s shard). Returns org_id.';

CREATE FUNCTION tco.create_unit(org_id bigint, name text, parent_unit_id bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer := tco_cluster.org_shard(org_id);
BEGIN
    RETURN tco_cluster.px_create_unit(s - 1, pg_catalog.nextval('tco_cluster.unit_id_seq'), org_id, name, parent_unit_id);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.create_unit(bigint, text, bigint) IS 'Router: creates a unit on its organization''s shard. Returns unit_id.';

CREATE FUNCTION tco.add_member(org_id bigint, account_id bigint, unit_id bigint DEFAULT NULL,
                               policy tco.settlement_policy DEFAULT 'self_pay') RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer := tco_cluster.org_shard(org_id);
    a integer := tco_cluster.account_shard(account_id);
BEGIN
    IF a <> s THEN
        -- the account moves to the organization's shard first (two-phase commit)
        PERFORM tco_cluster.move_account(account_id, s);
    END IF;
    PERFORM tco_cluster.px_add_member(s - 1, org_id, account_id, unit_id, policy);
    UPDATE tco_cluster.account_directory d SET org_id = add_member.org_id WHERE d.account_id = add_member.account_id;
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.add_member(bigint, bigint, bigint, tco.settlement_policy) IS 'Router: adds an account to an organization on the organization''s shard, moving the account there first when it lives on another shard.';

CREATE FUNCTION tco.remove_member(account_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer := tco_cluster.account_shard(account_id);
BEGIN
    PERFORM tco_cluster.px_remove_member(s - 1, account_id);
    UPDATE tco_cluster.account_directory d SET org_id = NULL WHERE d.account_id = remove_member.account_id;
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.remove_member(bigint) IS 'Router: removes an account from its organization (the account stays on that shard, its new home).';

-- ---------------------------------------------------------------------------
-- Trusteeship, payer, money: on the member's (account's) shard.

CREATE FUNCTION tco.establish_trusteeship(member_account_id bigint, management_account_id bigint,
                                          at timestamptz DEFAULT now()) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer := tco_cluster.account_shard(member_account_id);
BEGIN
    RETURN tco_cluster.px_establish_trusteeship(s - 1, member_account_id, management_account_id, at);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.establish_trusteeship(bigint, bigint, timestamptz) IS 'Router: tco.establish_trusteeship on the member''s shard (its manager is in the same organization, so on the same shard).';

CREATE FUNCTION tco.move_trusteeship(member_account_id bigint, new_management_account_id bigint,
                                     at timestamptz DEFAULT now()) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer := tco_cluster.account_shard(member_account_id);
BEGIN
    RETURN tco_cluster.px_move_trusteeship(s - 1, member_account_id, new_management_account_id, at);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.move_trusteeship(bigint, bigint, timestamptz) IS 'Router: tco.move_trusteeship on the member''s shard.';

CREATE FUNCTION tco.end_trusteeship(member_account_id bigint, at timestamptz DEFAULT now()) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer := tco_cluster.account_shard(member_account_id);
BEGIN
    PERFORM tco_cluster.px_end_trusteeship(s - 1, member_account_id, at);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.end_trusteeship(bigint, timestamptz) IS 'Router: tco.end_trusteeship on the member''s shard.';

CREATE FUNCTION tco.trusteeship_effective_payer(account_id bigint, product_code text, at timestamptz) RETURNS bigint
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer := tco_cluster.account_shard(account_id);
BEGIN
    RETURN tco_cluster.px_trusteeship_effective_payer(s - 1, account_id, product_code, at);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.trusteeship_effective_payer(bigint, text, timestamptz) IS 'Router: the payer of a line of the account for the product starting at the instant (R6), answered by the account''s shard.';

CREATE FUNCTION tco.explain_payer(account_id bigint, product_code text, at timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer := tco_cluster.account_shard(account_id);
BEGIN
    RETURN tco_cluster.px_explain_payer(s - 1, account_id, product_code, at);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.explain_payer(bigint, text, timestamptz) IS 'Router: tco.explain_payer on the account''s shard.';

CREATE FUNCTION tco.available_credit(account_id bigint) RETURNS numeric
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer := tco_cluster.account_shard(account_id);
BEGIN
    RETURN tco_cluster.px_available_credit(s - 1, account_id);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.available_credit(bigint) IS 'Router: tco.available_credit on the account''s shard (a managed member''s is its manager''s, on the same shard).';

CREATE FUNCTION tco.service_available(account_id bigint) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer := tco_cluster.account_shard(account_id);
BEGIN
    RETURN tco_cluster.px_service_available(s - 1, account_id);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.service_available(bigint) IS 'Router: tco.service_available on the account''s shard.';

CREATE FUNCTION tco.deposit(account_id bigint, amount numeric) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer := tco_cluster.account_shard(account_id);
BEGIN
    RETURN tco_cluster.px_deposit(s - 1, account_id, amount);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.deposit(bigint, numeric) IS 'Router: tco.deposit on the account''s shard.';

CREATE FUNCTION tco_cluster.grant_benefit(p_kind text, p_owner bigint, p_amount numeric, p_valid_to timestamptz,
                                          p_product_code text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer := tco_cluster.account_shard(p_owner);
BEGIN
    RETURN tco_cluster.px_grant_benefit(s - 1, p_kind, p_owner, p_amount, p_valid_to, p_product_code);
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    RAISE;
END $$;
CREATE FUNCTION tco.grant_coupon(owner_account_id bigint, amount numeric, valid_to timestamptz, product_code text DEFAULT NULL)
RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco_cluster.grant_benefit('coupon', owner_account_id, amount, valid_to, product_code)
$$;
CREATE FUNCTION tco.grant_voucher(owner_account_id bigint, amount numeric, valid_to timestamptz, product_code text DEFAULT NULL)
RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco_cluster.grant_benefit('voucher', owner_account_id, amount, valid_to, product_code)
$$;
CREATE FUNCTION tco.grant_stored_value_card(owner_account_id bigint, amount numeric, valid_to timestamptz, product_code text DEFAULT NULL)
RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco_cluster.grant_benefit('stored_value_card', owner_account_id, amount, valid_to, product_code)
$$;
COMMENT ON FUNCTION tco.grant_coupon(bigint, numeric, timestamptz, text) IS 'Router: tco.grant_coupon on the owner''s shard (benefit ids are the shard''s).';
COMMENT ON FUNCTION tco.grant_voucher(bigint, numeric, timestamptz, text) IS 'Router: tco.grant_voucher on the owner''s shard (benefit ids are the shard''s).';
COMMENT ON FUNCTION tco.grant_stored_value_card(bigint, numeric, timestamptz, text) IS 'Router: tco.grant_stored_value_card on the owner''s shard (benefit ids are the shard''s).';

CREATE FUNCTION tco.set_contract_discount(account_id bigint, entity_id bigint, rate numeric,
                                          product_code text DEFAULT NULL, valid_from timestamptz DEFAULT now(),
                                          valid_to timestamptz DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer;
    id bigint;
BEGIN
    IF account_id IS NOT NULL THEN
        s := tco_cluster.account_shard(account_id);
        RETURN tco_cluster.px_set_contract_discount(s - 1, account_id, entity_id, rate, product_code, valid_from, valid_to);
    END IF;
    -- an entity-level discount applies to the entity's accounts on every shard
    SELECT min(x) INTO id FROM tco_cluster.px_set_contract_discount_all(entity_id, rate, product_code, valid_from, valid_to) x;
    RETURN id;
EXCEPTION WHEN internal_error THEN
    IF s IS NOT NULL THEN
        PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    ELSE
        PERFORM tco_cluster.raise_unreachable_shards('tco.set_contract_discount', SQLERRM);
    END IF;
    RAISE;
END $$;
COMMENT ON FUNCTION tco.set_contract_discount(bigint, bigint, numeric, text, timestamptz, timestamptz) IS 'Router: an account''s discount on its shard; an entity''s discount on every shard. Returns the discount id (per shard).';

-- ---------------------------------------------------------------------------
-- Bill lines and settlement.

CREATE FUNCTION tco.insert_bill_lines(account_id bigint[], product_code text[], charge_type tco.charge_type[],
                                      period_start timestamptz[], period_end timestamptz[], list_amount numeric[],
                                      issued_at timestamptz[], paid_at timestamptz[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer := pg_catalog.cardinality(account_id);
    parts integer[];
    missing bigint;
    inserted bigint;
BEGIN
    IF account_id IS NULL OR product_code IS NULL OR period_start IS NULL OR period_end IS NULL OR list_amount IS NULL THEN
        RAISE EXCEPTION 'argument "%" must not be NULL',
                CASE WHEN account_id IS NULL THEN 'account_id' WHEN product_code IS NULL THEN 'product_code'
                     WHEN period_start IS NULL THEN 'period_start' WHEN period_end IS NULL THEN 'period_end'
                     ELSE 'list_amount' END
            USING ERRCODE = '22004', HINT = 'Pass a value for every required argument.';
    END IF;
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
    IF n = 0 THEN
        RETURN 0;
    END IF;
    SELECT pg_catalog.array_agg(d.shard_id - 1 ORDER BY u.i), min(u.a) FILTER (WHERE d.shard_id IS NULL)
      INTO parts, missing
      FROM pg_catalog.unnest(account_id) WITH ORDINALITY AS u(a, i)
      LEFT JOIN tco_cluster.account_directory d ON d.account_id = u.a;
    IF missing IS NOT NULL OR pg_catalog.array_position(account_id, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'bill line of account % that does not exist', coalesce(missing::text, 'NULL')
            USING ERRCODE = CASE WHEN missing IS NULL THEN '23502' ELSE '23503' END,
                  HINT = 'Create the account with tco.create_account() through the router first.';
    END IF;
    SELECT sum(x) INTO inserted
      FROM tco_cluster.px_insert_bill_lines(parts, account_id, product_code,
                                            coalesce(charge_type, pg_catalog.array_fill(NULL::tco.charge_type, ARRAY[n])),
                                            period_start, period_end, list_amount,
                                            coalesce(issued_at, pg_catalog.array_fill(NULL::timestamptz, ARRAY[n])),
                                            coalesce(paid_at, pg_catalog.array_fill(NULL::timestamptz, ARRAY[n]))) x;
    RETURN inserted;
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_unreachable_shards('tco.insert_bill_lines', SQLERRM);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.insert_bill_lines(bigint[], text[], tco.charge_type[], timestamptz[], timestamptz[], numeric[], timestamptz[], timestamptz[]) IS
'Router: the lines are split by the shard of their account (PL/Proxy SPLIT) and each shard inserts its own in one statement. Returns the number of lines inserted.';

-- A bill line's account.  The router keeps no directory of lines: a line
-- id drawn on a shard is in that shard's range (README "Running on several
-- servers", Ids), so that shard is asked first; a line that moved with its
-- account, or that was drawn before its shard had a range, is looked for on
-- every shard (RUN ON ALL).  NULL: the line is on no shard.
CREATE FUNCTION tco_cluster.account_of_line(line_id bigint) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    guess integer;
    a bigint;
BEGIN
    IF line_id IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT s.shard_id INTO guess FROM tco_cluster.shard_conf s WHERE s.shard_id = account_of_line.line_id / tco_cluster.id_range_size();
    IF guess IS NOT NULL THEN
        BEGIN
            a := tco_cluster.px_line_account(guess - 1, line_id);
        EXCEPTION WHEN internal_error THEN
            PERFORM tco_cluster.raise_if_unreachable(guess, SQLERRM);
            RAISE;
        END;
        IF a IS NOT NULL THEN
            RETURN a;
        END IF;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tco_cluster.shard_conf) THEN
        RETURN NULL;
    END IF;
    BEGIN
        SELECT min(x) INTO a FROM tco_cluster.px_line_account_all(line_id) x;
    EXCEPTION WHEN internal_error THEN
        PERFORM tco_cluster.raise_unreachable_shards(pg_catalog.format('looking for bill line %s on every shard', line_id), SQLERRM);
        RAISE;
    END;
    RETURN a;
END $$;
COMMENT ON FUNCTION tco_cluster.account_of_line(bigint) IS 'The account of a bill line (NULL: on no shard), asked of the shard whose id range holds the line id, else of every shard.';

CREATE FUNCTION tco_cluster.shard_of_line(line_id bigint) RETURNS integer
LANGUAGE sql STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco_cluster.shard_of_account(tco_cluster.account_of_line(line_id))
$$;
COMMENT ON FUNCTION tco_cluster.shard_of_line(bigint) IS 'The shard holding a bill line (NULL: on no shard): its account''s.';

CREATE FUNCTION tco.correct_bill_line(line_id bigint, new_list_amount numeric, reason text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a bigint := tco_cluster.account_of_line(line_id);
    s integer;
BEGIN
    IF a IS NOT NULL THEN
        -- not while the account moves (tco_cluster.move_account holds this
        -- lock): the directory read after it names the shard the line is on
        PERFORM pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('tco_cluster.move_account'), pg_catalog.hashint8(a));
        s := tco_cluster.account_shard(a);
    ELSE
        -- on no shard: a shard refuses it as one server does (the arguments
        -- first, then 23503 for the line)
        SELECT sc.shard_id INTO s FROM tco_cluster.shard_conf sc WHERE sc.shard_id = correct_bill_line.line_id / tco_cluster.id_range_size();
        s := coalesce(s, tco_cluster.least_loaded_shard(true));
    END IF;
    RETURN tco_cluster.px_correct_bill_line(s - 1, line_id, new_list_amount, reason);
EXCEPTION WHEN internal_error THEN
    IF s IS NOT NULL THEN
        PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    END IF;
    RAISE;
END $$;
COMMENT ON FUNCTION tco.correct_bill_line(bigint, numeric, text) IS
'Router: tco.correct_bill_line on the shard of the line''s account (found with tco_cluster.account_of_line). Returns the id of the line written there (the shard''s id), NULL when the amount is already right; 23503 for a line on no shard, as on one server.';

CREATE FUNCTION tco.settle_cycle(cycle tco.billing_cycle, org_id bigint DEFAULT NULL,
                                 OUT statements bigint, OUT lines bigint, OUT list_total numeric, OUT due_total numeric)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer;
BEGIN
    IF cycle IS NULL THEN
        RAISE EXCEPTION 'argument "cycle" must not be NULL' USING ERRCODE = '22004', HINT = 'Pass a cycle such as ''2023-02''.';
    END IF;
    IF org_id IS NOT NULL THEN
        s := tco_cluster.org_shard(org_id);
        SELECT r.statements, r.lines, r.list_total, r.due_total INTO statements, lines, list_total, due_total
          FROM tco_cluster.px_settle_cycle(s - 1, cycle, org_id) r;
        RETURN;
    END IF;
    statements := 0; lines := 0; list_total := 0; due_total := 0;
    IF EXISTS (SELECT 1 FROM tco_cluster.shard_conf) THEN
        SELECT coalesce(sum(r.statements), 0), coalesce(sum(r.lines), 0), coalesce(sum(r.list_total), 0), coalesce(sum(r.due_total), 0)
          INTO statements, lines, list_total, due_total
          FROM tco_cluster.px_settle_cycle_all(cycle) r;
    END IF;
EXCEPTION WHEN internal_error THEN
    IF s IS NOT NULL THEN
        PERFORM tco_cluster.raise_if_unreachable(s, SQLERRM);
    ELSE
        PERFORM tco_cluster.raise_unreachable_shards(pg_catalog.format('settlement of cycle %s on every shard', cycle), SQLERRM);
    END IF;
    RAISE;
END $$;
COMMENT ON FUNCTION tco.settle_cycle(tco.billing_cycle, bigint) IS
'Router: settles one organization on its shard, or (org_id NULL) every shard in parallel (PL/Proxy RUN ON ALL) and returns the summed row. Idempotent per shard: after a shard outage, rerun it to complete what was missing.';

-- ==== cluster/sql/40_move.sql
-- Moving an account between shards (README "Running on several servers",
-- "Accounts that change shard"): tco.add_member of an
-- account whose shard is not its new organization's moves it there first,
-- atomically, with two-phase commit:
--
--   1. the move is recorded on the router (state 'preparing'), committed at
--      once through a loopback connection, whatever becomes of the caller;
--   2. on the source shard tco_shard.detach_account (the account's rows,
--      read from the catalog, checked and deleted), on the target
--      tco_shard.import_account (the same rows, with their ids: every shard
--      draws ids from its own range), each in a transaction, both PREPAREd (gids
--      tco_move_<id>_<shard_id>: two shards may share a server, and gids are
--      per server);
--   3. the decision: state 'committing' and the directory's new shard,
--      committed together on the router (loopback);
--   4. COMMIT PREPARED on both shards; state 'done'.
--
-- A crash before 3 leaves both shards' transactions prepared with a move in
-- state 'preparing': tco_cluster.recover() rolls them back.  A crash after 3
-- leaves a move in state 'committing': recover() commits them.  Either way
-- nothing is half-moved.  The shard connections (dblink, through each
-- shard's postgres_fdw server and user mapping) and the loopback run as the
-- extension's owner, a superuser (the shard functions need it: see
-- tco_shard.detach_account in 15_shard_support.sql).

CREATE TABLE tco_cluster.account_move (
    move_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint NOT NULL,
    from_shard  integer NOT NULL REFERENCES tco_cluster.shard_conf,
    to_shard    integer NOT NULL REFERENCES tco_cluster.shard_conf,
    state       text NOT NULL CHECK (state IN ('preparing', 'committing', 'done', 'aborted')),
    started_at  timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at timestamptz,
    error       text
);
CREATE INDEX account_move_open ON tco_cluster.account_move (state) WHERE state IN ('preparing', 'committing');
COMMENT ON TABLE tco_cluster.account_move IS 'The router''s record of every move of an account between shards (two-phase commit, gids tco_move_<move_id>_<shard_id>): the decision tco_cluster.recover() follows.';
SELECT pg_catalog.pg_extension_config_dump('tco_cluster.account_move', '');

-- dblink, wherever CREATE EXTENSION ... CASCADE put it.
CREATE FUNCTION tco_cluster.dblink_connect(name text, conn text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r text;
BEGIN
    EXECUTE pg_catalog.format('SELECT %I.dblink_connect($1, $2)', tco_cluster.dblink_schema()) INTO r USING name, conn;
    RETURN r;
END $$;
CREATE FUNCTION tco_cluster.dblink_disconnect_all() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c text;
BEGIN
    FOR c IN EXECUTE pg_catalog.format('SELECT unnest(%I.dblink_get_connections())', tco_cluster.dblink_schema()) LOOP
        IF c LIKE 'tco_move_%' THEN
            EXECUTE pg_catalog.format('SELECT %I.dblink_disconnect($1)', tco_cluster.dblink_schema()) USING c;
        END IF;
    END LOOP;
END $$;
CREATE FUNCTION tco_cluster.dblink_value(conn text, query text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r text;
BEGIN
    EXECUTE pg_catalog.format('SELECT v FROM %I.dblink($1, $2) AS t(v text)', tco_cluster.dblink_schema()) INTO r USING conn, query;
    RETURN r;
END $$;
CREATE FUNCTION tco_cluster.dblink_values(conn text, query text) RETURNS SETOF text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE pg_catalog.format('SELECT v FROM %I.dblink($1, $2) AS t(v text)', tco_cluster.dblink_schema()) USING conn, query;
END $$;

-- The router itself, for the move's record (autonomous commits).
CREATE FUNCTION tco_cluster.loopback_conninfo() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.format('host=%s port=%s dbname=%s user=%s',
                             coalesce(nullif(pg_catalog.btrim(pg_catalog.split_part(pg_catalog.current_setting('unix_socket_directories'), ',', 1)), ''), 'localhost'),
                             pg_catalog.current_setting('port'), pg_catalog.quote_ident(pg_catalog.current_database()),
                             pg_catalog.quote_ident(current_user::text))
$$;

-- Move an account to another shard (see above).  Called by tco.add_member;
-- tco_admin may call it directly to rebalance.
CREATE FUNCTION tco_cluster.move_account(account_id bigint, to_shard_id integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    src integer := tco_cluster.account_shard(account_id);
    s_src tco_cluster.shard_conf;
    s_dst tco_cluster.shard_conf;
    lb text := tco_cluster.loopback_conninfo();
    mid bigint;
    gid_src text;
    gid_dst text;
    data text;
    decided boolean := false;
    msg text;
    det text;
    hnt text;
BEGIN
    SELECT * INTO s_dst FROM tco_cluster.shard_conf s WHERE s.shard_id = to_shard_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'shard % does not exist', to_shard_id USING ERRCODE = '23503', HINT = 'List the shards in tco_cluster.shard.';
    END IF;
    IF src = to_shard_id THEN
        RETURN;
    END IF;
    SELECT * INTO s_src FROM tco_cluster.shard_conf s WHERE s.shard_id = src;
    IF EXISTS (SELECT 1 FROM tco_cluster.account_directory d
                WHERE d.account_id = move_account.account_id AND pg_catalog.age(d.xmin) = 0) THEN
        RAISE EXCEPTION 'account % was created or changed in this transaction and cannot move to shard % in it', account_id, to_shard_id
            USING ERRCODE = '55000', HINT = 'Commit the account''s creation first, then add it to the organization.';
    END IF;
    -- one move of an account at a time; recover() skips moves in progress
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('tco_cluster.move_account'), pg_catalog.hashint8(account_id));
    PERFORM tco_cluster.dblink_disconnect_all();
    mid := tco_cluster.dblink_value(lb, pg_catalog.format(
        'INSERT INTO tco_cluster.account_move (account_id, from_shard, to_shard, state) VALUES (%s, %s, %s, %L) RETURNING move_id',
        account_id, src, to_shard_id, 'preparing'))::bigint;
    gid_src := pg_catalog.format('tco_move_%s_%s', mid, src);
    gid_dst := pg_catalog.format('tco_move_%s_%s', mid, to_shard_id);
    PERFORM tco_cluster.dblink_connect('tco_move_src', s_src.fdw_server);
    PERFORM tco_cluster.dblink_connect('tco_move_dst', s_dst.fdw_server);
    PERFORM tco_cluster.dblink_exec('tco_move_src', 'BEGIN');
    data := tco_cluster.dblink_value('tco_move_src', pg_catalog.format('SELECT tco_shard.detach_account(%s)::text', account_id));
    PERFORM tco_cluster.dblink_exec('tco_move_dst', 'BEGIN');
    PERFORM tco_cluster.dblink_value('tco_move_dst', pg_catalog.format('SELECT tco_shard.import_account(%L::jsonb)::text', data));
    PERFORM tco_cluster.dblink_exec('tco_move_dst', pg_catalog.format('PREPARE TRANSACTION %L', gid_dst));
    PERFORM tco_cluster.dblink_exec('tco_move_src', pg_catalog.format('PREPARE TRANSACTION %L', gid_src));
    -- the decision, with the directory's new shard, committed on the router
    -- (scripts/test_cluster.sh makes the router's session or a shard die
    -- around here: it holds a lock on the directory that this waits for)
    PERFORM tco_cluster.dblink_exec(lb, pg_catalog.format(
        'BEGIN; UPDATE tco_cluster.account_move SET state = %L WHERE move_id = %s; '
        'UPDATE tco_cluster.account_directory SET shard_id = %s, org_id = NULL WHERE account_id = %s; COMMIT',
        'committing', mid, to_shard_id, account_id));
    decided := true;
    PERFORM tco_cluster.dblink_exec('tco_move_dst', pg_catalog.format('COMMIT PREPARED %L', gid_dst));
    PERFORM tco_cluster.dblink_exec('tco_move_src', pg_catalog.format('COMMIT PREPARED %L', gid_src));
    PERFORM tco_cluster.dblink_exec(lb, pg_catalog.format(
        'UPDATE tco_cluster.account_move SET state = %L, finished_at = pg_catalog.clock_timestamp() WHERE move_id = %s', 'done', mid));
    PERFORM tco_cluster.dblink_disconnect_all();
EXCEPTION WHEN OTHERS THEN
    IF decided THEN
        RAISE EXCEPTION 'the move % of account % to shard % is decided but not finished: %', mid, account_id, to_shard_id, SQLERRM
            USING ERRCODE = '55000', HINT = 'Run tco_cluster.recover() when both shards answer: it commits the move.';
    END IF;
    -- not decided: undo what was prepared or is open, record the abort
    BEGIN
        PERFORM tco_cluster.dblink_disconnect_all();
        IF mid IS NOT NULL THEN
            PERFORM tco_cluster.recover_move(mid, false, SQLERRM);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        NULL;   -- a shard that does not answer: tco_cluster.recover() finishes the rollback
    END;
    IF SQLSTATE = 'TC030' THEN
        -- ids of the account that the target has too (tco_shard.import_account)
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
        RAISE EXCEPTION 'account % cannot move from shard % "%" to shard % "%": its ids collide with rows of the target shard',
                        account_id, src, s_src.name, to_shard_id, s_dst.name
            USING ERRCODE = 'TC030', DETAIL = msg || coalesce('. ' || nullif(det, ''), ''), HINT = coalesce(hnt, '');
    END IF;
    RAISE;
END $$;
COMMENT ON FUNCTION tco_cluster.move_account(bigint, integer) IS
'Moves an account with all its rows (account, ledger, bill lines of every cycle, statements, packs, invoices, benefits, alerts, history, discounts, logins: every row of schema tco that references it, found from the catalog) to another shard atomically, ids unchanged: two-phase commit on both shards, decision recorded on the router. Refused (55000) for an account in an organization or an active trusteeship, with unpaid statements, or with rows shared with accounts or organizations that stay; 55P03 while a settlement of its cycles runs; TC030 when ids of its rows exist on the target (drawn before the shards had id ranges).';

-- Resolve the prepared transactions of one move on both shards: commit
-- (decided) or roll back.  Returns the number of transactions resolved.
CREATE FUNCTION tco_cluster.recover_move(p_move_id bigint, p_commit boolean, p_error text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m tco_cluster.account_move;
    s tco_cluster.shard_conf;
    gid text;
    n integer := 0;
BEGIN
    SELECT * INTO m FROM tco_cluster.account_move WHERE move_id = p_move_id;
    FOR s IN SELECT * FROM tco_cluster.shard_conf c WHERE c.shard_id IN (m.from_shard, m.to_shard) LOOP
        gid := pg_catalog.format('tco_move_%s_%s', p_move_id, s.shard_id);
        IF EXISTS (SELECT 1 FROM tco_cluster.dblink_values(s.fdw_server::text,
                       pg_catalog.format('SELECT gid FROM pg_catalog.pg_prepared_xacts WHERE gid = %L', gid))) THEN
            PERFORM tco_cluster.dblink_exec(s.fdw_server::text,
                pg_catalog.format('%s PREPARED %L', CASE WHEN p_commit THEN 'COMMIT' ELSE 'ROLLBACK' END, gid));
            n := n + 1;
        END IF;
    END LOOP;
    PERFORM tco_cluster.dblink_exec(tco_cluster.loopback_conninfo(), pg_catalog.format(
        'UPDATE tco_cluster.account_move SET state = %L, finished_at = pg_catalog.clock_timestamp(), error = coalesce(%L, error) WHERE move_id = %s',
        CASE WHEN p_commit THEN 'done' ELSE 'aborted' END, p_error, p_move_id));
    RETURN n;
END $$;

-- Resolve every move left unfinished by a crash (of the router's session, of
-- the router or of a shard): the prepared transactions of a decided move
-- ('committing') are committed, those of an undecided one ('preparing', or a
-- tco_move_ transaction the router has no record of) rolled back.  Moves in
-- progress in other sessions are left alone.  Safe to run any time.
CREATE FUNCTION tco_cluster.recover()
RETURNS TABLE (move_id bigint, account_id bigint, action text, transactions integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m tco_cluster.account_move;
    s tco_cluster.shard_conf;
    g text;
BEGIN
    FOR m IN SELECT * FROM tco_cluster.account_move a WHERE a.state IN ('preparing', 'committing') ORDER BY a.move_id LOOP
        IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('tco_cluster.move_account'), pg_catalog.hashint8(m.account_id)) THEN
            CONTINUE;   -- in progress in another session
        END IF;
        move_id := m.move_id; account_id := m.account_id;
        action := CASE m.state WHEN 'committing' THEN 'committed' ELSE 'rolled back' END;
        transactions := tco_cluster.recover_move(m.move_id, m.state = 'committing', 'interrupted; resolved by tco_cluster.recover()');
        RETURN NEXT;
    END LOOP;
    -- prepared transactions of moves the router never recorded (none should exist)
    FOR s IN SELECT * FROM tco_cluster.shard_conf ORDER BY shard_id LOOP
        FOR g IN SELECT v FROM tco_cluster.dblink_values(s.fdw_server::text,
                     'SELECT gid FROM pg_catalog.pg_prepared_xacts WHERE gid LIKE ''tco\_move\_%'' AND database = pg_catalog.current_database()') v LOOP
            IF NOT EXISTS (SELECT 1 FROM tco_cluster.account_move a
                            WHERE g IN (pg_catalog.format('tco_move_%s_%s', a.move_id, a.from_shard),
                                        pg_catalog.format('tco_move_%s_%s', a.move_id, a.to_shard))
                              AND a.state IN ('preparing', 'committing')) THEN
                PERFORM tco_cluster.dblink_exec(s.fdw_server::text, pg_catalog.format('ROLLBACK PREPARED %L', g));
                move_id := NULL; account_id := NULL; action := 'rolled back (unknown to the router)'; transactions := 1;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
END $$;
COMMENT ON FUNCTION tco_cluster.recover() IS
'Resolves the moves of accounts left unfinished by a crash, from the router''s record (tco_cluster.account_move): commits decided ones, rolls back the others, on both shards. Moves in progress elsewhere are skipped. Safe to run any time; returns what it did.';

-- ==== cluster/sql/90_grants.sql
-- Privileges of the router.  Nothing is usable by PUBLIC except the
-- functions supporting tco.billing_cycle.  tco_admin runs the routed
-- functions, reads the directory and the shard list with conninfo, and adds
-- shards (tco_cluster.add_shard, SECURITY DEFINER); only superusers map
-- roles to credentials (tco_cluster.map_role).  tco_reader reads the BI views (through its
-- own user mappings: the shards' row-level security applies), the directory
-- and the shard list without conninfo, and calls the read-only functions.
REVOKE ALL ON SCHEMA tco, tco_cluster FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA tco, tco_cluster FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA tco_cluster FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA tco, tco_cluster FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.billing_cycle_in(cstring), tco.billing_cycle_out(tco.billing_cycle),
                          tco.billing_cycle_recv(internal), tco.billing_cycle_send(tco.billing_cycle) TO PUBLIC;

GRANT USAGE ON SCHEMA tco, tco_cluster TO tco_admin, tco_reader;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tco TO tco_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tco_cluster TO tco_admin;
-- map_role stays with superusers: a mapping without a password
-- (password_required false) lets its role connect to the shards without one.
-- The moves' internals run inside tco_cluster.move_account and recover():
-- deciding a move's outcome by hand could half-move an account.
REVOKE EXECUTE ON FUNCTION tco_cluster.map_role(name, text, text),
                           tco_cluster.create_fdw_mapping(name, text, text), tco_cluster.rebuild_views(),
                           tco_cluster.install_shard_support(name), tco_cluster.recover_move(bigint, boolean, text),
                           tco_cluster.dblink_exec(text, text), tco_cluster.dblink_connect(text, text),
                           tco_cluster.dblink_disconnect_all(), tco_cluster.dblink_value(text, text),
                           tco_cluster.dblink_values(text, text) FROM tco_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON tco_cluster.org_directory, tco_cluster.account_directory, tco_cluster.account_entity,
                                        tco_cluster.entity, tco_cluster.product, tco_cluster.config TO tco_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA tco_cluster TO tco_admin;
GRANT UPDATE ON ALL SEQUENCES IN SCHEMA tco_cluster TO tco_admin;
GRANT SELECT ON tco_cluster.shard, tco_cluster.org_directory, tco_cluster.account_directory,
                tco_cluster.entity, tco_cluster.product TO tco_admin, tco_reader;
GRANT SELECT ON tco.settlement_by_payer, tco.settlement_by_member, tco.settlement_by_unit TO tco_admin, tco_reader;
GRANT EXECUTE ON FUNCTION tco.billing_timezone(), tco.cycle_of(timestamptz), tco.cycle_range(tco.billing_cycle),
                          tco.trusteeship_effective_payer(bigint, text, timestamptz),
                          tco.explain_payer(bigint, text, timestamptz),
                          tco.available_credit(bigint), tco.service_available(bigint),
                          tco_cluster.shard_of_org(bigint), tco_cluster.shard_of_account(bigint),
                          tco_cluster.org_shard(bigint), tco_cluster.account_shard(bigint),
                          tco_cluster.raise_if_unreachable(integer, text), tco_cluster.raise_unreachable_shards(text, text),
                          tco_cluster.is_connection_failure(text), tco_cluster.describe_shard(integer),
                          tco_cluster.redact(text), tco_cluster.px_ping(integer),
                          tco_cluster.px_cycle_of(timestamptz), tco_cluster.px_cycle_range(tco.billing_cycle),
                          tco_cluster.px_trusteeship_effective_payer(integer, bigint, text, timestamptz),
                          tco_cluster.px_explain_payer(integer, bigint, text, timestamptz),
                          tco_cluster.px_available_credit(integer, bigint), tco_cluster.px_service_available(integer, bigint)
    TO tco_reader;
