-- tco_cluster 1.1 -> 1.2 (README "Running on several servers"): tco.correct_bill_line
-- is routed to the shard of the line's account (tco_cluster.account_of_line,
-- tco_cluster.shard_of_line).  Every change made to cluster/sql after 1.1 is
-- repeated here, so that ALTER EXTENSION tco_cluster UPDATE gives the same
-- extension as a fresh 1.2 install (scripts/test_cluster.sh compares the two).
\echo Use "ALTER EXTENSION tco_cluster UPDATE TO '1.2'" to load this file. \quit

-- Names resolve in pg_catalog only while this script runs; every object
-- below is schema-qualified.
SET LOCAL search_path = pg_catalog, pg_temp;
-- ==== 30_routed.sql: the new PL/Proxy calls, the routed tco.correct_bill_line
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
