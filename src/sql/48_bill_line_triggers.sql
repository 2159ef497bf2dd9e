-- The rules of tco.bill_line, checked once per statement (README "Ingest").
--
-- One AFTER statement trigger per operation, with transition tables, does
-- in this order what separate triggers did before 1.3 (each of them paid
-- its own call and its own scan of the statement's rows, and their order
-- was the order of their names):
--   1. R14 (40_settlement.sql): no line enters, leaves or changes in a
--      settled cycle.  The settlement lock of a cycle (src/guard.c) is taken
--      shared only for the cycles that have ended: a cycle that has not
--      ended cannot be being settled (tco.settle_cycle refuses it), and a
--      settlement waits for the transactions writing bill lines when it
--      begins (tco_settlement_lock), so a line written just before its cycle
--      ended is still read by it.
--   2. line_id unique across partitions (tco.bill_line_id, 30_trusteeship.sql)
--      and the identity sequence kept past explicit ids (98_dump.sql).
--   3. The payer cache of every backend (src/payer.c) is invalidated only
--      when a changed line can change a cached payer: the frozen-product
--      rule of DESIGN section 3 reads the lines of account A in the cycle of
--      one of A's trusteeship changes at t, issued before t and unpaid at t;
--      a line that is no such line for any change of its account changes no
--      answer.  Ordinary ingest (lines issued after the changes of their
--      cycle, or of accounts without changes) sends no invalidation, so no
--      backend drops its caches or cached plans because of it.
--   4. Spending alerts (44_alert.sql), after 3, so that they read payers
--      that know the statement's own lines.
-- What each costs per statement, for the single-line transactions of a
-- streaming ingest: the statement's rows are kept once in the transition
-- tables; 1 is one cycle_of() per row and a comparison with the clock (the
-- lock and the settled-cycle query only for ended cycles); 2 is one index
-- insert per row and an aggregate; 3 is one probe of tco.trusteeship's
-- member index per account; 4 is one query when no spending threshold is
-- enabled, else the thresholds' queries.
CREATE FUNCTION tco.bill_line_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad record;
    c tco.billing_cycle;
    cycles tco.billing_cycle[];
    ended boolean := false;
    stale boolean := false;
    moved boolean := false;
    n bigint;
    keys bigint;
    top bigint;
    r record;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN NULL;
    END IF;

    -- 1. R14 (a transition table exists only for the operations that have it)
    IF TG_OP = 'INSERT' THEN
        cycles := ARRAY(SELECT DISTINCT tco.cycle_of(l.period_start) FROM new_lines l);
    ELSIF TG_OP = 'UPDATE' THEN
        cycles := ARRAY(SELECT tco.cycle_of(l.period_start) FROM new_lines l
                        UNION SELECT tco.cycle_of(o.period_start) FROM old_lines o);
    ELSE
        cycles := ARRAY(SELECT DISTINCT tco.cycle_of(o.period_start) FROM old_lines o);
    END IF;
    FOR c IN
        SELECT x.c FROM unnest(cycles) x(c)
         WHERE pg_catalog.upper(tco.cycle_range(x.c)) <= pg_catalog.clock_timestamp()
         ORDER BY 1
    LOOP
        PERFORM tco.settlement_lock_shared(c);
        ended := true;
    END LOOP;
    IF ended AND TG_OP = 'INSERT' THEN
        SELECT l.line_id, s.cycle INTO bad
        FROM new_lines l
        LEFT JOIN tco.member m ON m.account_id = l.account_id
        JOIN tco.settled_cycle s ON s.cycle OPERATOR(tco.=) tco.cycle_of(l.period_start)
                                AND (s.org_id IS NULL OR s.org_id = m.org_id)
        ORDER BY l.line_id LIMIT 1;
        IF FOUND THEN
            PERFORM tco.r14_settled_error(bad.cycle, pg_catalog.format('bill line %s cannot be added to it', bad.line_id));
        END IF;
    ELSIF ended AND TG_OP = 'UPDATE' THEN
        -- Lines already on a statement: only paid_at may change.
        SELECT o.line_id, tco.cycle_of(o.period_start) AS cycle INTO bad
        FROM old_lines o JOIN new_lines l USING (line_id)
        JOIN tco.settled_pack sp ON sp.account_id = o.account_id AND sp.product_code = o.product_code
                                AND sp.cycle OPERATOR(tco.=) tco.cycle_of(o.period_start)
                                AND o.line_id = ANY (sp.line_ids)
        WHERE (o.account_id, o.product_code, o.charge_type, o.period_start, o.period_end, o.list_amount, o.issued_at)
              IS DISTINCT FROM
              (l.account_id, l.product_code, l.charge_type, l.period_start, l.period_end, l.list_amount, l.issued_at)
        ORDER BY o.line_id LIMIT 1;
        IF FOUND THEN
            PERFORM tco.r14_settled_error(bad.cycle, pg_catalog.format('bill line %s is settled and only its paid_at can be set', bad.line_id));
        END IF;
        -- A line may not move into a settled cycle either.
        SELECT l.line_id, s.cycle INTO bad
        FROM new_lines l JOIN old_lines o USING (line_id)
        LEFT JOIN tco.member m ON m.account_id = l.account_id
        JOIN tco.settled_cycle s ON s.cycle OPERATOR(tco.=) tco.cycle_of(l.period_start)
                                AND (s.org_id IS NULL OR s.org_id = m.org_id)
        WHERE (o.account_id, o.product_code, o.period_start, o.list_amount)
              IS DISTINCT FROM (l.account_id, l.product_code, l.period_start, l.list_amount)
        ORDER BY l.line_id LIMIT 1;
        IF FOUND THEN
            PERFORM tco.r14_settled_error(bad.cycle, pg_catalog.format('bill line %s cannot be moved into it', bad.line_id));
        END IF;
    ELSIF ended AND TG_OP = 'DELETE' THEN
        SELECT o.line_id, tco.cycle_of(o.period_start) AS cycle INTO bad
        FROM old_lines o
        LEFT JOIN tco.member m ON m.account_id = o.account_id
        WHERE EXISTS (SELECT 1 FROM tco.settled_pack sp
                      WHERE sp.account_id = o.account_id AND sp.product_code = o.product_code
                        AND sp.cycle OPERATOR(tco.=) tco.cycle_of(o.period_start) AND o.line_id = ANY (sp.line_ids))
           OR EXISTS (SELECT 1 FROM tco.settled_cycle s WHERE s.cycle OPERATOR(tco.=) tco.cycle_of(o.period_start)
                      AND (s.org_id IS NULL OR s.org_id = m.org_id))
        ORDER BY o.line_id LIMIT 1;
        IF FOUND THEN
            PERFORM tco.r14_settled_error(bad.cycle, pg_catalog.format('bill line %s cannot be deleted', bad.line_id));
        END IF;
    END IF;

    -- 2. line_id unique across partitions; the identity sequence past
    -- explicit ids (those in the lower half of its range: see 98_dump.sql)
    IF TG_OP = 'UPDATE' THEN
        moved := EXISTS (SELECT o.line_id, o.period_start FROM old_lines o
                         EXCEPT SELECT l.line_id, l.period_start FROM new_lines l);
    END IF;
    IF TG_OP = 'DELETE' OR moved THEN
        DELETE FROM tco.bill_line_id k USING old_lines o
         WHERE k.line_id = o.line_id AND k.period_start = o.period_start;
    END IF;
    IF TG_OP = 'INSERT' OR moved THEN
        INSERT INTO tco.bill_line_id (line_id, period_start)
        SELECT l.line_id, l.period_start FROM new_lines l
        ON CONFLICT (line_id) DO NOTHING;
        GET DIAGNOSTICS keys = ROW_COUNT;
        SELECT count(*), max(l.line_id) FILTER (WHERE l.line_id <= 4611686018427387903) INTO n, top FROM new_lines l;
        IF (keys < n AND TG_OP = 'INSERT') OR TG_OP = 'UPDATE' THEN
            SELECT l.line_id, l.period_start, k.period_start AS other INTO bad
            FROM new_lines l JOIN tco.bill_line_id k USING (line_id)
            WHERE k.period_start <> l.period_start
            ORDER BY 1 LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'bill line id % is already used by the line starting at %', bad.line_id, bad.other
                    USING ERRCODE = '23505',
                          DETAIL = 'line_id is unique across all billing cycles (tco.bill_line_id).',
                          HINT = 'Omit line_id to let tco number the line, or choose an id that is not in use.';
            END IF;
        END IF;
        IF top > coalesce(pg_catalog.pg_sequence_last_value('tco.bill_line_line_id_seq'::pg_catalog.regclass), 0) THEN
            PERFORM pg_catalog.setval('tco.bill_line_line_id_seq'::pg_catalog.regclass, top);
        END IF;
    END IF;

    -- 3. the payer caches, only when the frozen-product rule may see a change
    IF TG_OP <> 'DELETE' THEN
        stale := EXISTS (
            SELECT 1 FROM new_lines l
            JOIN tco.trusteeship t ON t.member_account_id = l.account_id
            CROSS JOIN LATERAL (VALUES (t.established_at), (t.ended_at)) ch(at)
            WHERE ch.at IS NOT NULL AND l.issued_at < ch.at AND (l.paid_at IS NULL OR l.paid_at > ch.at)
              AND ch.at OPERATOR(pg_catalog.<@) tco.cycle_range(tco.cycle_of(l.period_start)));
    END IF;
    IF TG_OP <> 'INSERT' AND NOT stale THEN
        stale := EXISTS (
            SELECT 1 FROM old_lines l
            JOIN tco.trusteeship t ON t.member_account_id = l.account_id
            CROSS JOIN LATERAL (VALUES (t.established_at), (t.ended_at)) ch(at)
            WHERE ch.at IS NOT NULL AND l.issued_at < ch.at AND (l.paid_at IS NULL OR l.paid_at > ch.at)
              AND ch.at OPERATOR(pg_catalog.<@) tco.cycle_range(tco.cycle_of(l.period_start)));
    END IF;
    IF stale THEN
        PERFORM tco.invalidate_bill_line_cache();
    END IF;

    -- 4. spending alerts of the lines' accounts and of the managers that may
    -- pay them, per cycle of the lines
    IF TG_OP <> 'DELETE'
       AND EXISTS (SELECT 1 FROM tco.alert_threshold t WHERE t.enabled AND t.kind IN ('cycle_spending', 'cycle_forecast')) THEN
        FOR r IN
            WITH c AS (SELECT DISTINCT l.account_id, tco.cycle_of(l.period_start) AS cycle FROM new_lines l),
                 p AS (SELECT c.cycle, c.account_id AS payer FROM c
                       UNION
                       SELECT c.cycle, t.management_account_id FROM c
                       JOIN tco.trusteeship t ON t.member_account_id = c.account_id
                        AND tstzrange(t.established_at, t.ended_at)
                            && tstzrange(pg_catalog.lower(tco.cycle_range(c.cycle)) - interval '1 month', pg_catalog.upper(tco.cycle_range(c.cycle))))
            SELECT p.cycle, array_agg(DISTINCT p.payer) AS payers
            FROM p
            WHERE EXISTS (SELECT 1 FROM tco.alert_threshold t
                          WHERE t.account_id = p.payer AND t.enabled AND t.kind IN ('cycle_spending', 'cycle_forecast'))
            GROUP BY p.cycle ORDER BY p.cycle
        LOOP
            PERFORM tco.fire_alerts(r.payers, r.cycle, false, true);
        END LOOP;
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION tco.bill_line_changed() IS 'Statement trigger of tco.bill_line: R14, line_id uniqueness across partitions, payer cache invalidation when the frozen-product rule may see the change, spending alerts (48_bill_line_triggers.sql).';

CREATE TRIGGER bill_line_inserted AFTER INSERT ON tco.bill_line
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_changed();
CREATE TRIGGER bill_line_updated AFTER UPDATE ON tco.bill_line
    REFERENCING OLD TABLE AS old_lines NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_changed();
CREATE TRIGGER bill_line_deleted AFTER DELETE ON tco.bill_line
    REFERENCING OLD TABLE AS old_lines
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_changed();

-- TRUNCATE (refused once a cycle is settled, 40_settlement.sql) empties the
-- ids with the lines and invalidates the payer caches.
CREATE FUNCTION tco.bill_line_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN NULL;
    END IF;
    TRUNCATE tco.bill_line_id;
    PERFORM tco.invalidate_bill_line_cache();
    RETURN NULL;
END $$;
CREATE TRIGGER bill_line_truncated AFTER TRUNCATE ON tco.bill_line
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_truncated();

CREATE FUNCTION tco.invalidate_bill_line_cache() RETURNS void
    AS 'MODULE_PATHNAME', 'tco_invalidate_bill_line_cache' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION tco.invalidate_bill_line_cache() IS 'Internal: tells every backend that caches built from tco.bill_line are stale (and drops this backend''s payer cache at once).';
