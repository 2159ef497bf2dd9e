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

-- what earlier installs of these functions had (a move that refused
-- accounts with history; a move of all rows in one jsonb value, 1.2)
DROP FUNCTION IF EXISTS tco_shard.export_account(bigint), tco_shard.forget_account(bigint),
                        tco_shard.moved_tables(), tco_shard.move_blockers(bigint),
                        tco_shard.move_blockers(bigint, jsonb), tco_shard.move_collect(bigint),
                        tco_shard.move_refusals(bigint, jsonb);

-- The functions of the moves and of the id ranges write history as a
-- restore does: superusers only (the router connects as one).
CREATE OR REPLACE FUNCTION tco_shard.require_superuser(p_function text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles su WHERE su.rolname = current_user AND su.rolsuper) THEN
        RAISE EXCEPTION '% is for the router''s moves and id ranges: superusers only', p_function
            USING ERRCODE = '42501', HINT = 'Move accounts with tco_cluster.move_account on the router.';
    END IF;
END $$;

-- The tables of account data of a move catalog (tco_shard.move_catalog),
-- parents first.
CREATE OR REPLACE FUNCTION tco_shard.catalog_order(cat jsonb) RETURNS regclass[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY(SELECT o.t::regclass FROM pg_catalog.jsonb_array_elements_text(cat -> 'order') WITH ORDINALITY o(t, i) ORDER BY o.i)
$$;

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
    PERFORM tco_shard.require_superuser('tco_shard.set_id_ranges');
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
-- runs tco_shard.detach_account on the source and tco_shard.import_begin,
-- import_rows (chunk by chunk) and import_finish on the target, each side
-- in a transaction it prepares and commits with
-- two-phase commit, as a superuser (README "Running on several servers",
-- "Accounts that change shard").  What moves is read from the catalog, so
-- that tables added to tco later move too:
--   * tco_shard.move_tables(): every table of schema tco (partitions aside)
--     is global (the same on every shard: entities, products, configuration),
--     of the organizations (organizations, units, memberships, settled
--     cycles, partitions, policies, voucher pools: these never move), an
--     archive (the table of a detached cycle of bill lines: an account with
--     lines there does not move until the cycle is attached again), or else
--     account data;
--   * tco_shard.move_refs(): the columns that reference a row of another
--     table: foreign keys; bigint columns named account_id or *_account_id
--     (the account); bigint columns named after the single-column primary
--     key of exactly one table, or ending in _<that name> (statement_id,
--     benefit_id, *_line_id: the bill line, ...); the target of a policy
--     attachment;
--   * the account's rows (tco_shard.move_collect): its tco.account row, then,
--     until nothing is added, every row of account data that references a
--     row already taken (bill lines, ledger, statements and their lines,
--     packs, invoices and credit notes, benefits, alerts, history, ...).
-- A row taken that references a row that stays (another account, an
-- organization: through a foreign key or a reference to account data), or a
-- row that stays and references a row taken, would break on one of the two
-- shards: the move is refused and names it (tco_shard.move_refusals), as
-- are the moves the rules forbid (membership, an active trusteeship, unpaid
-- statements, a settlement running).
CREATE OR REPLACE FUNCTION tco_shard.move_tables() RETURNS TABLE (tbl regclass, kind text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT c.oid::regclass,
           CASE WHEN c.relname IN ('entity', 'product', 'config') THEN 'global'
                WHEN c.relname IN ('organization', 'org_unit', 'member', 'voucher_pool', 'settled_cycle',
                                   'bill_line_cycle', 'service_policy') THEN 'organization'
                -- a detached (archived) cycle of bill lines: stays, a move is refused
                WHEN EXISTS (SELECT 1 FROM tco.bill_line_cycle b WHERE b.relname = c.relname) THEN 'archive'
                ELSE 'account' END
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace = 'tco'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
     ORDER BY c.relname;
END $$;

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

-- What a move reads of the catalog, once per move: every reference
-- (move_refs) with the kinds of its two tables (move_tables) and whether an
-- index leads with its column, sorted by table and column, and the tables of
-- account data, parents first (by their references): {"refs": [...],
-- "order": [...]}.
CREATE OR REPLACE FUNCTION tco_shard.move_catalog() RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    refs jsonb;
    todo regclass[];
    done regclass[] := '{}';
    t regclass;
    progress boolean;
    e_tbl regclass[];
    e_ref regclass[];
BEGIN
    WITH mt AS (SELECT * FROM tco_shard.move_tables())
    SELECT (SELECT pg_catalog.array_agg(mt.tbl ORDER BY mt.tbl::text) FROM mt WHERE mt.kind = 'account'),
           (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('tbl', rf.tbl, 'col', rf.col, 'ref_tbl', rf.ref_tbl, 'ref_col', rf.ref_col,
                                                                      'enforced', rf.enforced, 'cond', rf.cond, 'tbl_kind', k.kind, 'ref_kind', kr.kind,
                                                                      'indexed', EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a
                                                                                           ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                                                                                          WHERE i.indrelid = rf.tbl AND a.attname = rf.col))
                                        ORDER BY rf.tbl::text, rf.col, rf.ref_tbl::text)
              FROM tco_shard.move_refs() rf JOIN mt k ON k.tbl = rf.tbl JOIN mt kr ON kr.tbl = rf.ref_tbl)
      INTO todo, refs;
    SELECT pg_catalog.array_agg(r.tbl), pg_catalog.array_agg(r.ref_tbl) INTO e_tbl, e_ref
      FROM pg_catalog.jsonb_to_recordset(refs) AS r(tbl regclass, ref_tbl regclass, ref_kind text)
     WHERE r.ref_tbl <> r.tbl AND r.ref_kind = 'account';
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
    done := done || ARRAY(SELECT u FROM pg_catalog.unnest(todo) u WHERE NOT u = ANY (done));
    RETURN pg_catalog.jsonb_build_object('refs', coalesce(refs, '[]'), 'order', pg_catalog.to_jsonb(done::text[]));
END $$;

-- The tables of account data, parents first (by their references).
CREATE OR REPLACE FUNCTION tco_shard.move_order() RETURNS regclass[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco_shard.catalog_order(tco_shard.move_catalog())
$$;

-- The account's rows are gathered in tables of their own, one per table of
-- account data (tco_shard.move_table: schema tco_shard, created and dropped
-- in the move's transaction; temporary tables cannot be used, a transaction
-- that touched one cannot be PREPAREd), each holding the rows with their
-- position (columns "\trel" = tableoid and "\ttid" = ctid, for
-- detach_account's deletes).  The router reads them in chunks (README
-- "Running on several servers", "Accounts that change shard"): no value
-- holds all of an account's rows, so accounts of any size move.
CREATE OR REPLACE FUNCTION tco_shard.move_table(p_account_id bigint, p_table regclass) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'tco_shard.' || pg_catalog.quote_ident(pg_catalog.format('move_%s_%s', p_account_id, p_table::oid))
$$;

-- Gather the account's rows (move_table): its tco.account row, then, until
-- nothing is added, every row of account data that references a row
-- gathered.  Each row is locked as it is gathered (FOR UPDATE: the source
-- runs in READ COMMITTED, and a row changed after it was gathered would be
-- copied stale and missed by the delete at its position; a row that would
-- reference it waits, then finds it gone).  Each reference is followed by a
-- statement of its own (so that it can use its column's index), and again
-- only when the table it references has grown since; a table's move table
-- is made by the first statement that finds rows for it (through an index,
-- a reference is looked up before a table is made).  Returns the number of
-- rows per table of account data.
CREATE OR REPLACE FUNCTION tco_shard.move_collect(p_account_id bigint, cat jsonb DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    order_ regclass[];
    refs jsonb;
    r record;
    n bigint;
    counts jsonb := '{}';
    made jsonb := '{}';
    followed jsonb := '{}';
    k text;
    cond text;
    grew boolean;
    found_any boolean;
BEGIN
    PERFORM tco_shard.require_superuser('tco_shard.move_collect');
    cat := coalesce(cat, tco_shard.move_catalog());
    order_ := tco_shard.catalog_order(cat);
    -- the references between tables of account data, parents' tables first
    SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(rf) ORDER BY o.i, rf.col, rf.ref_tbl::text)
      INTO refs
      FROM pg_catalog.jsonb_to_recordset(cat -> 'refs') AS rf(tbl regclass, col name, ref_tbl regclass, ref_col name, cond text,
                                                             tbl_kind text, ref_kind text, indexed boolean)
      JOIN pg_catalog.unnest(order_) WITH ORDINALITY o(t, i) ON o.t = rf.tbl
     WHERE rf.tbl_kind = 'account' AND rf.ref_kind = 'account' AND rf.tbl <> 'tco.account'::regclass;
    SELECT pg_catalog.jsonb_object_agg(o.t::text, 0) INTO counts FROM pg_catalog.unnest(order_) o(t);
    EXECUTE pg_catalog.format('CREATE UNLOGGED TABLE %s AS SELECT x.tableoid AS %I, x.ctid AS %I, x.* FROM tco.account x WHERE x.account_id = $1 FOR UPDATE OF x',
                              tco_shard.move_table(p_account_id, 'tco.account'), E'\trel', E'\ttid')
      USING p_account_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    counts := counts || pg_catalog.jsonb_build_object('tco.account', n);
    LOOP
        grew := false;
        FOR r IN SELECT * FROM pg_catalog.jsonb_to_recordset(coalesce(refs, '[]'))
                                 AS x(tbl regclass, col name, ref_tbl regclass, ref_col name, cond text, indexed boolean) LOOP
            k := pg_catalog.concat_ws(' ', r.tbl, r.col, r.ref_tbl, r.ref_col, r.cond);
            CONTINUE WHEN (counts ->> r.ref_tbl::text)::bigint = 0
                       OR (followed ->> k)::bigint = (counts ->> r.ref_tbl::text)::bigint;
            followed := followed || pg_catalog.jsonb_build_object(k, counts -> r.ref_tbl::text);
            cond := coalesce(r.cond || ' AND ', '')
                    || CASE WHEN r.ref_tbl = 'tco.account'::regclass
                            THEN pg_catalog.format('x.%I = $1', r.col)
                            ELSE pg_catalog.format('x.%I IN (SELECT y.%I FROM %s y)', r.col, r.ref_col,
                                                   tco_shard.move_table(p_account_id, r.ref_tbl)) END;
            IF made ? r.tbl::text THEN
                EXECUTE pg_catalog.format('INSERT INTO %1$s SELECT x.tableoid, x.ctid, x.* FROM %2$s x WHERE %3$s '
                                          'AND NOT EXISTS (SELECT 1 FROM %1$s m WHERE m.%4$I = x.tableoid AND m.%5$I = x.ctid) FOR UPDATE OF x',
                                          tco_shard.move_table(p_account_id, r.tbl), r.tbl, cond, E'\trel', E'\ttid')
                  USING p_account_id;
            ELSE
                -- no table yet: where an index makes it cheap, look first
                -- (most tables have no row of the account)
                IF r.indexed THEN
                    EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM %s x WHERE %s)', r.tbl, cond) INTO found_any USING p_account_id;
                    CONTINUE WHEN NOT found_any;
                END IF;
                EXECUTE pg_catalog.format('CREATE UNLOGGED TABLE %s AS SELECT x.tableoid AS %I, x.ctid AS %I, x.* FROM %s x WHERE %s FOR UPDATE OF x',
                                          tco_shard.move_table(p_account_id, r.tbl), E'\trel', E'\ttid', r.tbl, cond)
                  USING p_account_id;
                made := made || pg_catalog.jsonb_build_object(r.tbl::text, true);
            END IF;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n > 0 THEN
                counts := counts || pg_catalog.jsonb_build_object(r.tbl::text, (counts ->> r.tbl::text)::bigint + n);
                grew := true;
                -- the next statements join this table: give the planner its
                -- size (a few rows: its estimate without statistics will do)
                IF n >= 1000 THEN
                    EXECUTE 'ANALYZE ' || tco_shard.move_table(p_account_id, r.tbl);
                END IF;
            END IF;
        END LOOP;
        EXIT WHEN NOT grew;
    END LOOP;
    RETURN counts;
END $$;

-- The gathered rows as one value, table -> array of rows (for inspection
-- and tests, and for small accounts: tco_shard.move_closure).
CREATE OR REPLACE FUNCTION tco_shard.move_rows(p_account_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regclass;
    rows jsonb;
    res jsonb := '{}';
BEGIN
    FOREACH t IN ARRAY tco_shard.move_order() LOOP
        CONTINUE WHEN pg_catalog.to_regclass(tco_shard.move_table(p_account_id, t)) IS NULL;
        EXECUTE pg_catalog.format('SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(x) OPERATOR(pg_catalog.-) %L OPERATOR(pg_catalog.-) %L) FROM %s x',
                                  E'\trel', E'\ttid', tco_shard.move_table(p_account_id, t))
           INTO rows;
        IF rows IS NOT NULL THEN
            res := res || pg_catalog.jsonb_build_object(t::text, rows);
        END IF;
    END LOOP;
    RETURN res;
END $$;

-- Drop the tables of move_collect (before the transaction is PREPAREd).
CREATE OR REPLACE FUNCTION tco_shard.move_drop(p_account_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT c.oid::regclass FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'tco_shard'::regnamespace AND c.relkind = 'r'
                AND c.relname ~ ('^move_' || p_account_id || '_[0-9]+$') LOOP
        EXECUTE 'DROP TABLE ' || t::text;
    END LOOP;
END $$;

-- The account's rows, table -> array of rows, as tco_shard.move_collect
-- finds them (nothing is kept: for inspection and tests).
CREATE OR REPLACE FUNCTION tco_shard.move_closure(p_account_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    res jsonb;
BEGIN
    PERFORM tco_shard.move_collect(p_account_id);
    res := tco_shard.move_rows(p_account_id);
    PERFORM tco_shard.move_drop(p_account_id);
    RETURN res;
END $$;

-- Why the account cannot move (empty: it can): the rules first, then the
-- references that would break (rows gathered by move_collect, whose counts
-- are given).
CREATE OR REPLACE FUNCTION tco_shard.move_refusals(p_account_id bigint, counts jsonb, cat jsonb DEFAULT NULL) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b text[];
    theirs text[] := '{}';
    r record;
    vals text;
    found_any boolean;
BEGIN
    PERFORM tco_shard.require_superuser('tco_shard.move_refusals');
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
    -- bill lines in detached (archived) cycles
    FOR r IN SELECT b.cycle::text AS cycle, b.relname FROM tco.bill_line_cycle b
              WHERE b.detached AND pg_catalog.to_regclass(pg_catalog.format('tco.%I', b.relname)) IS NOT NULL
              ORDER BY b.cycle LOOP
        EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM tco.%I x WHERE x.account_id = $1)', r.relname) INTO found_any USING p_account_id;
        IF found_any THEN
            b := b || pg_catalog.format('it has bill lines in detached billing cycle %s (table tco.%s): attach it again first (tco.attach_cycle(%L))',
                                        r.cycle, r.relname, r.cycle);
        END IF;
    END LOOP;
    FOR r IN SELECT * FROM pg_catalog.jsonb_to_recordset(coalesce(cat, tco_shard.move_catalog()) -> 'refs')
                      AS x(tbl regclass, col name, ref_tbl regclass, ref_col name, enforced boolean, cond text,
                           tbl_kind text, ref_kind text) LOOP
        IF r.tbl_kind = 'account' AND r.ref_kind <> 'global' AND (r.enforced OR r.ref_kind = 'account')
           AND (counts ->> r.tbl::text)::bigint > 0 THEN
            -- rows gathered that reference rows that stay
            EXECUTE pg_catalog.format('SELECT pg_catalog.string_agg(v, %L) FROM (SELECT DISTINCT x.%I::text AS v FROM %s x '
                                      'WHERE x.%I IS NOT NULL AND %s AND %s ORDER BY 1 LIMIT 5) s',
                                      ', ', r.col, tco_shard.move_table(p_account_id, r.tbl), r.col, coalesce(r.cond, 'true'),
                                      CASE WHEN r.ref_kind = 'account' AND (counts ->> r.ref_tbl::text)::bigint > 0
                                           THEN pg_catalog.format('NOT EXISTS (SELECT 1 FROM %s y WHERE y.%I = x.%I)',
                                                                  tco_shard.move_table(p_account_id, r.ref_tbl), r.ref_col, r.col)
                                           ELSE 'true' END)
               INTO vals;
            IF vals IS NOT NULL THEN
                b := b || pg_catalog.format('its %s rows reference %s %s %s, which stays on this shard', r.tbl, r.ref_tbl, r.ref_col, vals);
            END IF;
        ELSIF r.tbl_kind NOT IN ('account', 'archive') AND r.ref_kind = 'account' AND (counts ->> r.ref_tbl::text)::bigint > 0
              AND r.tbl <> 'tco.member'::regclass AND (r.tbl, r.col) <> ('tco.organization'::regclass, 'admin_account_id') THEN
            -- rows of the organizations that reference rows gathered
            EXECUTE pg_catalog.format('SELECT pg_catalog.string_agg(x.%I::text, %L) FROM (SELECT x.%I FROM %s x WHERE %s AND x.%I IN '
                                      '(SELECT y.%I FROM %s y) LIMIT 5) x',
                                      r.col, ', ', r.col, r.tbl, coalesce(r.cond, 'true'), r.col,
                                      r.ref_col, tco_shard.move_table(p_account_id, r.ref_tbl))
               INTO vals;
            IF vals IS NOT NULL THEN
                theirs := theirs || pg_catalog.format('%s.%s references it (%s)', r.tbl, r.col, vals);
            END IF;
        END IF;
    END LOOP;
    RETURN b || theirs;
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
-- cycles, gather its rows (tco_shard.move_collect), refuse what cannot move
-- (tco_shard.move_refusals), delete its rows (raw deletes, history included,
-- with triggers off: session_replication_role = replica, superuser only; the
-- rows are not gone, they move) and return what was taken: per table, the
-- number of rows and the table that holds them until the router has read
-- them and calls tco_shard.move_drop; the cycles the account was settled in
-- or not, and an instant of each cycle of its lines, for import_begin.
CREATE OR REPLACE FUNCTION tco_shard.detach_account(p_account_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    counts jsonb;
    blockers text[];
    cycles text[];
    settled text[];
    cat jsonb := tco_shard.move_catalog();
    order_ regclass[] := tco_shard.catalog_order(cat);
    t regclass;
    grp record;
    instants jsonb;
    n bigint;
    deleted bigint;
BEGIN
    PERFORM tco_shard.require_superuser('tco_shard.detach_account');
    PERFORM 1 FROM tco.account a WHERE a.account_id = p_account_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist on this shard', p_account_id
            USING ERRCODE = '23503', HINT = 'Check tco_cluster.account_directory on the router (tco_cluster.recover() resolves interrupted moves).';
    END IF;
    cycles := ARRAY(SELECT DISTINCT tco.cycle_of(b.period_start)::text FROM tco.bill_line b WHERE b.account_id = p_account_id
                    UNION SELECT s.cycle::text FROM tco.statement s WHERE s.payer_account_id = p_account_id ORDER BY 1);
    PERFORM tco_shard.lock_cycles(cycles);
    counts := tco_shard.move_collect(p_account_id, cat);
    blockers := tco_shard.move_refusals(p_account_id, counts, cat);
    IF pg_catalog.cardinality(blockers) > 0 THEN
        RAISE EXCEPTION 'account % cannot move to another shard: %', p_account_id, pg_catalog.array_to_string(blockers, '; ')
            USING ERRCODE = '55000',
                  HINT = 'An account moves with all its rows; rows it shares with accounts or organizations that stay (its past payers and organizations) keep it here, where its late lines and corrections are billed (README "Running on several servers": Accounts that change shard).';
    END IF;
    -- settled: the cycles of its statements, and those settled for everything here
    settled := ARRAY(SELECT s.cycle::text FROM tco.statement s WHERE s.payer_account_id = p_account_id
                     UNION SELECT c FROM pg_catalog.unnest(cycles) c
                            WHERE EXISTS (SELECT 1 FROM tco.settled_cycle z WHERE z.cycle::text = c AND z.org_id IS NULL) ORDER BY 1);
    -- an instant of each cycle of its lines (the partitions import_begin makes)
    IF (counts ->> 'tco.bill_line')::bigint > 0 THEN
        EXECUTE pg_catalog.format('SELECT pg_catalog.jsonb_agg(s.i ORDER BY s.i) FROM (SELECT min(x.period_start) AS i FROM %s x GROUP BY tco.cycle_of(x.period_start)) s',
                                  tco_shard.move_table(p_account_id, 'tco.bill_line'))
           INTO instants;
    END IF;
    PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);
    FOR i IN REVERSE pg_catalog.cardinality(order_) .. 1 LOOP
        t := order_[i];
        CONTINUE WHEN (counts ->> t::text)::bigint = 0;
        deleted := 0;
        FOR grp IN EXECUTE pg_catalog.format('SELECT x.%I AS rel, pg_catalog.array_agg(x.%I) AS tids FROM %s x GROUP BY 1',
                                             E'\trel', E'\ttid', tco_shard.move_table(p_account_id, t)) LOOP
            EXECUTE pg_catalog.format('DELETE FROM %s WHERE ctid = ANY ($1)', grp.rel::regclass) USING grp.tids;
            GET DIAGNOSTICS n = ROW_COUNT;
            deleted := deleted + n;
        END LOOP;
        -- every row gathered is deleted where it was gathered (they are
        -- locked: anything else is a bug, and nothing moves)
        IF deleted <> (counts ->> t::text)::bigint THEN
            RAISE EXCEPTION 'account % cannot move now: % of its % rows of % were deleted', p_account_id, deleted, counts ->> t::text, t
                USING ERRCODE = '40001', HINT = 'Nothing moved; run the move again.';
        END IF;
    END LOOP;
    PERFORM pg_catalog.set_config('session_replication_role', 'origin', true);
    RETURN pg_catalog.jsonb_build_object(
        'account_id', p_account_id,
        'tables', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('table', o.t::text, 'rows', (counts ->> o.t::text)::bigint,
                                                                             'source', tco_shard.move_table(p_account_id, o.t)) ORDER BY o.i)
                     FROM pg_catalog.unnest(order_) WITH ORDINALITY o(t, i) WHERE (counts ->> o.t::text)::bigint > 0),
        'settled_cycles', pg_catalog.to_jsonb(settled),
        'open_cycles', pg_catalog.to_jsonb(ARRAY(SELECT c FROM pg_catalog.unnest(cycles) c WHERE NOT c = ANY (settled))),
        'line_instants', coalesce(instants, '[]'));
END $$;

-- The account in one value: what detach_account returns, with its rows
-- ("rows": table -> array of rows), the move tables dropped; for
-- import_account.  For tests and small accounts: the router moves rows in
-- chunks instead (a value holds at most 255 MB of jsonb).
CREATE OR REPLACE FUNCTION tco_shard.detach_account_rows(p_account_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    res jsonb := tco_shard.detach_account(p_account_id);
BEGIN
    res := res || pg_catalog.jsonb_build_object('rows', tco_shard.move_rows(p_account_id));
    PERFORM tco_shard.move_drop(p_account_id);
    RETURN res;
END $$;

-- The target's side: import_begin(what detach_account returned), then
-- import_rows for each table in the order given (parents first), in chunks,
-- then import_finish; all in one transaction.  Rows are inserted as a
-- restore does (row_security off, superuser: tco.restoring() is true, so
-- triggers neither derive rows nor re-judge past actions, README "Backup and
-- restore": the ledger is not applied to the balance twice, settled lines
-- enter their settled cycle), with their ids (every shard draws its own
-- range, set_id_ranges).  A cycle the account was settled in must be settled
-- here too (then a later settlement here skips its lines), and one it was
-- not settled in must not be settled here for everything (its lines would
-- never be).
CREATE OR REPLACE FUNCTION tco_shard.import_begin(data jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    account_data regclass[] := ARRAY(SELECT m.tbl FROM tco_shard.move_tables() m WHERE m.kind = 'account');
    k text;
    c text;
BEGIN
    PERFORM tco_shard.require_superuser('tco_shard.import_begin');
    FOR k IN SELECT e ->> 'table' FROM pg_catalog.jsonb_array_elements(coalesce(data -> 'tables', '[]')) e LOOP
        IF pg_catalog.to_regclass(k) IS NULL OR NOT pg_catalog.to_regclass(k) = ANY (account_data) THEN
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
    PERFORM tco.prepare_cycles_of(ARRAY(SELECT (i #>> '{}')::timestamptz
                                          FROM pg_catalog.jsonb_array_elements(coalesce(data -> 'line_instants', '[]')) i));
END $$;

-- Insert a chunk of the account's rows of one table.  Returns the number
-- of rows inserted.
CREATE OR REPLACE FUNCTION tco_shard.import_rows(p_account_id bigint, p_table text, p_rows jsonb) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regclass := pg_catalog.to_regclass(p_table);
    cols text;
    n bigint;
    c text;
    k text;
BEGIN
    PERFORM tco_shard.require_superuser('tco_shard.import_rows');
    IF t IS NULL OR NOT EXISTS (SELECT 1 FROM tco_shard.move_tables() m WHERE m.tbl = t AND m.kind = 'account') THEN
        RAISE EXCEPTION 'the account''s rows of % have no table of account data on this shard', p_table
            USING ERRCODE = '55000', HINT = 'Run the same version of tco on every shard.';
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = t AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
    PERFORM pg_catalog.set_config('row_security', 'off', true);
    BEGIN
        EXECUTE pg_catalog.format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM pg_catalog.jsonb_populate_recordset(NULL::%s, $1)',
                                  t, cols, cols, t)
          USING p_rows;
        GET DIAGNOSTICS n = ROW_COUNT;
    EXCEPTION WHEN unique_violation THEN
        -- a row of the account has the key of a row of this shard: ids
        -- drawn before the shards had their id ranges (README "Running on
        -- several servers", Ids) keep their low values on every shard
        GET STACKED DIAGNOSTICS c = CONSTRAINT_NAME, k = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION 'account % cannot move here (database %): its rows of % collide with rows of this shard (%: %)',
                        p_account_id, pg_catalog.current_database(), t, c, k
            USING ERRCODE = 'TC030',
                  DETAIL = 'Ids drawn on a shard before it had its own id range keep their low values; this shard has a row with the same key.',
                  HINT = 'Leave the account on its shard (add it to an organization there, or create its organization there), or move it to a shard without that id; nothing was moved.';
    END;
    PERFORM pg_catalog.set_config('row_security', 'on', true);
    RETURN n;
END $$;

CREATE OR REPLACE FUNCTION tco_shard.import_finish(p_account_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco_shard.require_superuser('tco_shard.import_finish');
    PERFORM tco.bill_lines_written();
END $$;

-- All of it in one call, from what detach_account_rows returned.  Returns
-- the number of rows inserted.
CREATE OR REPLACE FUNCTION tco_shard.import_account(data jsonb) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e jsonb;
    total bigint := 0;
BEGIN
    PERFORM tco_shard.import_begin(data);
    FOR e IN SELECT x FROM pg_catalog.jsonb_array_elements(coalesce(data -> 'tables', '[]')) x LOOP
        total := total + tco_shard.import_rows((data ->> 'account_id')::bigint, e ->> 'table', coalesce(data -> 'rows' -> (e ->> 'table'), '[]'));
    END LOOP;
    PERFORM tco_shard.import_finish((data ->> 'account_id')::bigint);
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
