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
