-- Moving an account between shards (README "Running on several servers",
-- "Accounts that change shard"): tco.add_member of an
-- account whose shard is not its new organization's moves it there first,
-- atomically, with two-phase commit:
--
--   1. the move is recorded on the router (state 'preparing'), committed at
--      once through a loopback connection, whatever becomes of the caller;
--   2. on the source shard tco_shard.detach_account (the account's rows,
--      read from the catalog, checked, kept in tables of the move and
--      deleted), on the target tco_shard.import_begin, then the same rows,
--      with their ids (every shard draws ids from its own range), read
--      through a cursor on the source and written chunk by chunk
--      (tco_cluster.copy_moved_rows), then tco_shard.import_finish; each side
--      in a transaction, both PREPAREd (gids
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

-- Copy the rows an account's detach_account took on the source (connection
-- src, in the move's transaction) to the target (connection dst, after
-- tco_shard.import_begin there), table by table in the manifest's order
-- (parents first), through a cursor on the source, at most p_chunk rows per
-- call on the target: no value ever holds all of an account's rows.
-- Returns the number of rows copied; each table's count is checked against
-- the manifest.
CREATE FUNCTION tco_cluster.copy_moved_rows(src text, dst text, manifest jsonb, p_chunk integer DEFAULT 5000) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dbl name := tco_cluster.dblink_schema();
    tb jsonb;
    chunk text;
    n bigint;
    copied bigint;
    total bigint := 0;
BEGIN
    FOR tb IN SELECT e FROM pg_catalog.jsonb_array_elements(coalesce(manifest -> 'tables', '[]')) e LOOP
        IF tb ->> 'source' !~ '^tco_shard\.(move_[0-9-]+_[0-9]+|"move_[0-9-]+_[0-9]+")$' THEN
            RAISE EXCEPTION 'unexpected table of moved rows: %', tb ->> 'source' USING ERRCODE = 'XX000';
        END IF;
        EXECUTE pg_catalog.format('SELECT %I.dblink_open($1, $2, $3)', dbl)
          USING src, 'tco_move_rows',
                pg_catalog.format('SELECT (pg_catalog.to_jsonb(x) OPERATOR(pg_catalog.-) %L OPERATOR(pg_catalog.-) %L)::text FROM %s x',
                                  E'\trel', E'\ttid', tb ->> 'source');
        copied := 0;
        LOOP
            EXECUTE pg_catalog.format('SELECT %L || pg_catalog.string_agg(v, %L) || %L, count(*) FROM %I.dblink_fetch($1, $2, $3) AS t(v text)',
                                      '[', ',', ']', dbl)
               INTO chunk, n USING src, 'tco_move_rows', p_chunk;
            EXIT WHEN n = 0;
            copied := copied + tco_cluster.dblink_value(dst, pg_catalog.format('SELECT tco_shard.import_rows(%s, %L, %L::jsonb)::text',
                                                                                manifest ->> 'account_id', tb ->> 'table', chunk))::bigint;
        END LOOP;
        EXECUTE pg_catalog.format('SELECT %I.dblink_close($1, $2)', dbl) USING src, 'tco_move_rows';
        IF copied <> (tb ->> 'rows')::bigint THEN
            RAISE EXCEPTION 'the move of account % copied % rows of % instead of %', manifest ->> 'account_id', copied, tb ->> 'table', tb ->> 'rows'
                USING ERRCODE = 'XX000';
        END IF;
        total := total + copied;
    END LOOP;
    RETURN total;
END $$;

-- Rows per chunk of a move: the setting tco_cluster.move_chunk_rows (SET
-- tco_cluster.move_chunk_rows = 20000, in the session or for a role), 5,000
-- by default.
CREATE FUNCTION tco_cluster.move_chunk_rows() RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v text := pg_catalog.current_setting('tco_cluster.move_chunk_rows', true);
BEGIN
    IF coalesce(v, '') = '' THEN
        RETURN 5000;
    END IF;
    IF v !~ '^\s*[0-9]{1,9}\s*$' OR v::integer < 1 THEN
        RAISE EXCEPTION 'invalid value for tco_cluster.move_chunk_rows: "%"', v
            USING ERRCODE = '22023', HINT = 'A number of rows from 1 to 999999999.';
    END IF;
    RETURN v::integer;
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
    manifest jsonb;
    chunk integer := tco_cluster.move_chunk_rows();
    decided boolean := false;
    msg text;
    det text;
    hnt text;
BEGIN
    IF to_shard_id IS NULL THEN
        RAISE EXCEPTION 'argument "to_shard_id" must not be NULL' USING ERRCODE = '22004', HINT = 'List the shards in tco_cluster.shard.';
    END IF;
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
    manifest := tco_cluster.dblink_value('tco_move_src', pg_catalog.format('SELECT tco_shard.detach_account(%s)::text', account_id))::jsonb;
    PERFORM tco_cluster.dblink_exec('tco_move_dst', 'BEGIN');
    PERFORM tco_cluster.dblink_value('tco_move_dst', pg_catalog.format('SELECT tco_shard.import_begin(%L::jsonb)::text', manifest));
    PERFORM tco_cluster.copy_moved_rows('tco_move_src', 'tco_move_dst', manifest, chunk);
    PERFORM tco_cluster.dblink_value('tco_move_dst', pg_catalog.format('SELECT tco_shard.import_finish(%s)::text', account_id));
    PERFORM tco_cluster.dblink_value('tco_move_src', pg_catalog.format('SELECT tco_shard.move_drop(%s)::text', account_id));
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
EXCEPTION WHEN query_canceled THEN
    -- a cancel or statement_timeout: end the shards' open transactions now
    -- (else they would hold the account and its cycles until this session
    -- ends); what was prepared, and the move's record, wait for
    -- tco_cluster.recover()
    BEGIN
        PERFORM tco_cluster.dblink_disconnect_all();
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    RAISE;
WHEN OTHERS THEN
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
'Moves an account with all its rows (account, ledger, bill lines of every cycle, statements, packs, invoices, benefits, alerts, history, discounts, logins: every row of schema tco that references it, found from the catalog) to another shard atomically, ids unchanged: two-phase commit on both shards, decision recorded on the router; the rows travel in chunks of tco_cluster.move_chunk_rows() rows (no limit on the account''s size). Refused (55000) for an account in an organization or an active trusteeship, with unpaid statements, or with rows shared with accounts or organizations that stay; 55P03 while a settlement of its cycles runs; TC030 when ids of its rows exist on the target (drawn before the shards had id ranges).';

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
-- progress in other sessions are left alone and reported as skipped.  Safe
-- to run any time.
CREATE FUNCTION tco_cluster.recover()
RETURNS TABLE (move_id bigint, account_id bigint, action text, transactions integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m tco_cluster.account_move;
    s tco_cluster.shard_conf;
    g text;
    old_timeout text;
    locked boolean;
BEGIN
    FOR m IN SELECT * FROM tco_cluster.account_move a WHERE a.state IN ('preparing', 'committing') ORDER BY a.move_id LOOP
        move_id := m.move_id; account_id := m.account_id;
        -- the account's move lock: held by a move in progress (for as long
        -- as it runs), or shared for a moment by a correction of one of its
        -- lines (tco.correct_bill_line); wait for the latter, up to 5 s
        IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('tco_cluster.move_account'), pg_catalog.hashint8(m.account_id)) THEN
            old_timeout := pg_catalog.current_setting('lock_timeout');
            PERFORM pg_catalog.set_config('lock_timeout', '5s', true);
            BEGIN
                PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('tco_cluster.move_account'), pg_catalog.hashint8(m.account_id));
                locked := true;
            EXCEPTION WHEN lock_not_available THEN
                locked := false;
            END;
            PERFORM pg_catalog.set_config('lock_timeout', old_timeout, true);
            IF NOT locked THEN
                action := 'skipped: in progress in another session'; transactions := 0;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
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
'Resolves the moves of accounts left unfinished by a crash, from the router''s record (tco_cluster.account_move): commits decided ones, rolls back the others, on both shards. Moves in progress in another session are skipped and reported so (a correction of one of the account''s lines holding the move lock for a moment is waited for, up to 5 s). Safe to run any time; returns what it did.';
