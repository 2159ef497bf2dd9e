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

-- Moving an account off this shard or onto it (tco_cluster.move_account,
-- which runs these in two transactions it prepares and commits with
-- two-phase commit, as a superuser).  What a move carries: the account row,
-- its ledger, its bill lines (not yet settled), its membership history,
-- account-level discounts, alert thresholds and channels, login mappings.
-- What ties an account to its shard otherwise refuses the move.
CREATE OR REPLACE FUNCTION tco_shard.move_blockers(p_account_id bigint) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.array_remove(ARRAY[
        (SELECT 'it is a member of organization ' || m.org_id FROM tco.member m WHERE m.account_id = p_account_id),
        (SELECT 'it is the admin of organization ' || min(o.org_id) FROM tco.organization o WHERE o.admin_account_id = p_account_id HAVING count(*) > 0),
        CASE WHEN EXISTS (SELECT 1 FROM tco.trusteeship t WHERE p_account_id IN (t.member_account_id, t.management_account_id))
             THEN 'it has trusteeship history (as member or manager)' END,
        CASE WHEN EXISTS (SELECT 1 FROM tco.statement s WHERE s.payer_account_id = p_account_id)
               OR EXISTS (SELECT 1 FROM tco.statement_line l WHERE l.account_id = p_account_id)
               OR EXISTS (SELECT 1 FROM tco.settled_pack k WHERE p_account_id IN (k.payer_account_id, k.account_id))
             THEN 'it has settled statements (paid or unpaid)' END,
        CASE WHEN EXISTS (SELECT 1 FROM tco.invoice i WHERE p_account_id IN (i.issuer_account_id, i.recipient_account_id))
             THEN 'it has invoices' END,
        CASE WHEN EXISTS (SELECT 1 FROM tco.benefit b WHERE b.owner_account_id = p_account_id)
               OR EXISTS (SELECT 1 FROM tco.benefit_share b WHERE b.account_id = p_account_id)
             THEN 'it owns or shares benefits' END,
        CASE WHEN EXISTS (SELECT 1 FROM tco.prepaid_resource r WHERE p_account_id IN (r.owner_account_id, r.holder_account_id))
               OR EXISTS (SELECT 1 FROM tco.prepaid_transfer t WHERE p_account_id IN (t.from_account_id, t.to_account_id))
             THEN 'it has prepaid resources' END,
        CASE WHEN EXISTS (SELECT 1 FROM tco.ledger g WHERE g.counterparty_account_id = p_account_id
                                                        OR g.account_id = p_account_id AND g.counterparty_account_id IS NOT NULL)
             THEN 'it has top-ups with other accounts' END,
        CASE WHEN EXISTS (SELECT 1 FROM tco.alert a WHERE a.account_id = p_account_id) THEN 'it has fired alerts' END,
        CASE WHEN EXISTS (SELECT 1 FROM tco.invitation i WHERE i.account_id = p_account_id AND i.status = 'pending')
             THEN 'it has a pending invitation' END,
        CASE WHEN EXISTS (SELECT 1 FROM tco.allocation_rule r WHERE r.source_account_id = p_account_id)
               OR EXISTS (SELECT 1 FROM tco.allocation_target t WHERE t.target_account_id = p_account_id)
             THEN 'it is in cost allocation rules' END
    ], NULL)
$$;

-- The tables a move carries, parents first.
CREATE OR REPLACE FUNCTION tco_shard.moved_tables() RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY['account', 'ledger', 'bill_line', 'member_history', 'contract_discount', 'alert_threshold',
                 'alert_channel', 'account_login']
$$;

-- The account's rows, for the shard it moves to; locks the account and the
-- settlement of the cycles of its lines (no settlement runs under a move).
CREATE OR REPLACE FUNCTION tco_shard.export_account(p_account_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    blockers text[] := tco_shard.move_blockers(p_account_id);
    t text;
    rows jsonb;
    result jsonb := '{}';
BEGIN
    IF pg_catalog.cardinality(blockers) > 0 THEN
        RAISE EXCEPTION 'account % cannot move to another shard: %', p_account_id, pg_catalog.array_to_string(blockers, '; ')
            USING ERRCODE = '55000',
                  HINT = 'An account moves to its new organization''s shard only while it carries no settled or shared history: create the account through the router after its organization, or keep it on its shard.';
    END IF;
    PERFORM 1 FROM tco.account a WHERE a.account_id = p_account_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist on this shard', p_account_id
            USING ERRCODE = '23503', HINT = 'Check tco_cluster.account_directory on the router (tco_cluster.recover() resolves interrupted moves).';
    END IF;
    PERFORM tco.settlement_lock_shared(c.cycle)
       FROM (SELECT DISTINCT tco.cycle_of(b.period_start) AS cycle FROM tco.bill_line b WHERE b.account_id = p_account_id) c;
    FOREACH t IN ARRAY tco_shard.moved_tables() LOOP
        EXECUTE pg_catalog.format('SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(x)), ''[]'') FROM tco.%I x WHERE x.account_id = $1', t)
           INTO rows USING p_account_id;
        result := result || pg_catalog.jsonb_build_object(t, rows);
    END LOOP;
    RETURN result;
END $$;

-- Remove the account's rows (after export_account in the same
-- transaction): raw deletes, history included, with triggers off
-- (session_replication_role = replica, superuser only): the rows are not
-- gone, they move.
CREATE OR REPLACE FUNCTION tco_shard.forget_account(p_account_id bigint) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
    n bigint;
    total bigint := 0;
BEGIN
    PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);
    -- the line ids of tco.bill_line_id (kept by the bill line triggers, off here)
    IF pg_catalog.to_regclass('tco.bill_line_id') IS NOT NULL THEN
        EXECUTE 'DELETE FROM tco.bill_line_id k USING tco.bill_line b WHERE b.account_id = $1 AND k.line_id = b.line_id'
          USING p_account_id;
    END IF;
    FOR t IN SELECT u.t FROM pg_catalog.unnest(tco_shard.moved_tables()) WITH ORDINALITY AS u(t, o) ORDER BY u.o DESC LOOP
        EXECUTE pg_catalog.format('DELETE FROM tco.%I x WHERE x.account_id = $1', t) USING p_account_id;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    PERFORM pg_catalog.set_config('session_replication_role', 'origin', true);
    RETURN total;
END $$;

-- Insert the rows of export_account: as a restore does (row_security off,
-- superuser: tco.restoring() is true, so triggers neither derive rows nor
-- re-judge past actions: the ledger is not applied to the balance twice),
-- with this shard's own ids for every row but the account.  Bill lines are
-- written last as new lines are (R14, partitions, line ids of this shard).
CREATE OR REPLACE FUNCTION tco_shard.import_account(data jsonb) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
    cols text;
    n bigint;
    total bigint := 0;
BEGIN
    PERFORM pg_catalog.set_config('row_security', 'off', true);
    FOREACH t IN ARRAY pg_catalog.array_append(pg_catalog.array_remove(tco_shard.moved_tables(), 'bill_line'), 'bill_line') LOOP
        IF t = 'bill_line' THEN
            PERFORM pg_catalog.set_config('row_security', 'on', true);
        END IF;
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = pg_catalog.format('tco.%I', t)::regclass AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attgenerated = '' AND (a.attidentity = '' OR t = 'account');
        EXECUTE pg_catalog.format('INSERT INTO tco.%I (%s) SELECT %s FROM pg_catalog.jsonb_populate_recordset(NULL::tco.%I, $1)',
                                  t, cols, cols, t)
          USING data -> t;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
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
