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

-- An error a shard raised reaches the router as PL/Proxy reports it,
-- "<function>(<arguments>): [<database>] REMOTE ERROR: <message>": raise it
-- again with the shard's own message, SQLSTATE, detail and hint, so that the
-- router's errors read as one server's (README "Running on several
-- servers", Failures; PL/Proxy also prefixes detail and hint).  Returns
-- when the message is not a shard's (the
-- caller then re-raises it unchanged).
CREATE FUNCTION tco_cluster.raise_remote_error(p_state text, p_message text, p_detail text, p_hint text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- the severity is the shard's, translated by its lc_messages
    m text := pg_catalog.regexp_replace(p_message, '^\S+\(\d+\): \[[^]]*\] REMOTE [^:]+: ', '');
BEGIN
    -- a connection error or a shutdown is the shard's, not the router's: it
    -- keeps the prefix that names the shard's database
    IF m IS NULL OR m = p_message OR p_state LIKE '08%' OR p_state LIKE '57P%' THEN
        RETURN;
    END IF;
    -- and "Remote detail: ", "Remote hint: "
    p_detail := pg_catalog.regexp_replace(p_detail, '^Remote detail: ', '');
    p_hint := pg_catalog.regexp_replace(p_hint, '^Remote hint: ', '');
    IF coalesce(p_detail, '') = '' AND coalesce(p_hint, '') = '' THEN
        RAISE EXCEPTION USING MESSAGE = m, ERRCODE = p_state;
    ELSIF coalesce(p_hint, '') = '' THEN
        RAISE EXCEPTION USING MESSAGE = m, ERRCODE = p_state, DETAIL = p_detail;
    ELSIF coalesce(p_detail, '') = '' THEN
        RAISE EXCEPTION USING MESSAGE = m, ERRCODE = p_state, HINT = p_hint;
    ELSE
        RAISE EXCEPTION USING MESSAGE = m, ERRCODE = p_state, DETAIL = p_detail, HINT = p_hint;
    END IF;
END $$;
COMMENT ON FUNCTION tco_cluster.raise_remote_error(text, text, text, text) IS 'Raises again an error a shard raised, without PL/Proxy''s prefixes (function, database; of the detail and hint): the same SQLSTATE, message, detail and hint as on one server. Returns when the message has no such prefix, and for connection errors and shutdowns (classes 08, 57P), which keep the prefix naming the shard''s database.';

-- The error handler of every routed function: a PL/Proxy failure (XX000)
-- that is a shard not answering is raised as 08006 naming the shard
-- (p_shard_id) or, for a call on every shard, the shards that do not answer
-- (p_what: what failed); a shard's error is raised again as one server
-- raises it (raise_remote_error).  Returns when the error is the router's
-- own: the caller re-raises it unchanged.
CREATE FUNCTION tco_cluster.reraise(p_shard_id integer, p_what text, p_state text, p_message text,
                                    p_detail text, p_hint text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_state = 'XX000' THEN
        IF p_shard_id IS NOT NULL THEN
            PERFORM tco_cluster.raise_if_unreachable(p_shard_id, p_message);
        ELSIF p_what IS NOT NULL THEN
            PERFORM tco_cluster.raise_unreachable_shards(p_what, p_message);
        END IF;
    END IF;
    PERFORM tco_cluster.raise_remote_error(p_state, p_message, p_detail, p_hint);
END $$;
COMMENT ON FUNCTION tco_cluster.reraise(integer, text, text, text, text, text) IS 'The error handler of the routed functions: 08006 naming the shard(s) that do not answer, or a shard''s error without PL/Proxy''s prefixes; returns for the router''s own errors.';

-- Push global rows to one shard (p_shard_id) or to every shard (NULL).
CREATE FUNCTION tco_cluster.push_globals(p_shard_id integer, e_id bigint[], e_name text[], e_ver boolean[],
                                         p_code text[], p_gran tco.granularity[], tz text, cut timestamptz) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    n bigint;
BEGIN
    IF p_shard_id IS NOT NULL THEN
        BEGIN
            RETURN tco_cluster.px_sync_globals(p_shard_id - 1, e_id, e_name, e_ver, p_code, p_gran, tz, cut);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
            PERFORM tco_cluster.reraise(p_shard_id, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
            RAISE;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tco_cluster.shard_conf) THEN
        RETURN 0;
    END IF;
    BEGIN
        SELECT sum(x) INTO n FROM tco_cluster.px_sync_globals_all(e_id, e_name, e_ver, p_code, p_gran, tz, cut) x;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
        PERFORM tco_cluster.reraise(NULL, 'copying entities, products and configuration to every shard', SQLSTATE, SQLERRM, e_detail, e_hint);
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
