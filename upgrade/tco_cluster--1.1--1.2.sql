-- tco_cluster 1.1 -> 1.2 (README "Running on several servers"): tco.correct_bill_line
-- is routed to the shard of the line's account (tco_cluster.account_of_line,
-- tco_cluster.shard_of_line); a move whose rows collide with rows of the target
-- shard (ids drawn before the shards had id ranges) is refused with TC030
-- naming what collided, and tco.create_organization then keeps the organization
-- on its admin's shard; a move reads the catalog once per step instead of
-- once per table and pass (tco_shard.move_order, tco_shard.move_closure).
-- Every change made to cluster/sql after 1.1 is repeated here, so that ALTER
-- EXTENSION tco_cluster UPDATE gives the same extension as a fresh 1.2
-- install (scripts/test_cluster.sh compares the two).  Run
-- tco_cluster.refresh_shards() afterwards: it installs the new shard
-- functions on every shard.
\echo Use "ALTER EXTENSION tco_cluster UPDATE TO '1.2'" to load this file. \quit

-- Names resolve in pg_catalog only while this script runs; every object
-- below is schema-qualified.
SET LOCAL search_path = pg_catalog, pg_temp;
-- ==== 15_shard_support.sql: tco_shard.import_account refuses colliding ids with TC030;
-- move_order and move_closure read the catalog once per call
CREATE OR REPLACE FUNCTION tco_cluster.shard_support_sql() RETURNS text
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

-- ==== 30_routed.sql: the new PL/Proxy calls, the routed tco.correct_bill_line, tco.create_organization
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

CREATE OR REPLACE FUNCTION tco.create_organization(admin_account_id bigint, name text) RETURNS bigint
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

-- ==== 40_move.sql: move_account reports colliding ids (TC030) with the shards' names
CREATE OR REPLACE FUNCTION tco_cluster.move_account(account_id bigint, to_shard_id integer) RETURNS void
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

-- ==== 90_grants.sql: the new functions, for tco_admin (as every function of
-- schemas tco and tco_cluster)
REVOKE EXECUTE ON FUNCTION tco_cluster.px_line_account(integer, bigint), tco_cluster.px_line_account_all(bigint),
                           tco_cluster.px_correct_bill_line(integer, bigint, numeric, text),
                           tco_cluster.account_of_line(bigint), tco_cluster.shard_of_line(bigint),
                           tco.correct_bill_line(bigint, numeric, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco_cluster.px_line_account(integer, bigint), tco_cluster.px_line_account_all(bigint),
                          tco_cluster.px_correct_bill_line(integer, bigint, numeric, text),
                          tco_cluster.account_of_line(bigint), tco_cluster.shard_of_line(bigint),
                          tco.correct_bill_line(bigint, numeric, text) TO tco_admin;
