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
-- They run with the caller's rights (tco_admin on the shard) and are
-- executable by tco_admin only.  tco itself is unchanged.
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

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tco_shard FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tco_shard TO tco_admin;
$sql$ $support$;
COMMENT ON FUNCTION tco_cluster.shard_support_sql() IS 'The SQL that installs (or updates) schema tco_shard on a shard: the functions the router calls there.';

-- dblink_exec of the dblink extension, wherever CREATE EXTENSION ... CASCADE
-- put it.
CREATE FUNCTION tco_cluster.dblink_exec(conn text, command text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r text;
BEGIN
    EXECUTE pg_catalog.format('SELECT %I.dblink_exec($1, $2)',
                              (SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                                WHERE e.extname = 'dblink'))
       INTO r USING conn, command;
    RETURN r;
END $$;

-- Install the shard functions on a shard, through its postgres_fdw server and
-- the calling role's user mapping (dblink).
CREATE FUNCTION tco_cluster.install_shard_support(p_server name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco_cluster.dblink_exec(p_server::text, 'BEGIN; ' || tco_cluster.shard_support_sql() || ' COMMIT;');
END $$;
