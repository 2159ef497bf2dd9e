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
