-- Partitions of tco.bill_line, one per billing cycle (DESIGN section 9;
-- README "Storage: bill lines partitioned by cycle").
--
-- tco.bill_line is range-partitioned on period_start (30_trusteeship.sql).
-- A cycle's partition is tco.bill_line_pYYYY_MM, bounded by the cycle's
-- instants in the billing time zone.  Partitions are created at run time,
-- never by this script: pg_dump does not save the rows of a table that a
-- extension script created, and saves those of tables created later.
--   * tco.insert_bill_lines creates the partitions of the cycles its lines
--     fall in before it inserts them;
--   * tco.prepare_cycles(from, to) creates them ahead (the scheduled job of
--     58_schedule.sql calls it), and moves into them the lines that a plain
--     INSERT put into tco.bill_line_default while they had no partition.
-- tco.bill_line_cycle records every partition with its bounds.  It is what
-- pg_dump --data-only restores first (its name sorts before the
-- partitions'): inserting a row of it creates the partition if it is
-- missing, so a data-only restore into a fresh CREATE EXTENSION finds the
-- tables it loads.  Old cycles can be detached for archiving and attached
-- again (tco.detach_cycle, tco.attach_cycle).
--
-- Partitions, the default partition, tco.bill_line_id and tco.bill_line_cycle
-- are written only by tco's own functions (running as the extension owner)
-- or by a restore: the rules of tco.bill_line are statement triggers of the
-- partitioned table, which a write naming a partition would not fire.

CREATE TABLE tco.bill_line_cycle (
    cycle       tco.billing_cycle PRIMARY KEY,
    relname     name NOT NULL UNIQUE,
    range_start timestamptz NOT NULL,
    range_end   timestamptz NOT NULL,
    detached    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bill_line_cycle_range CHECK (range_end > range_start)
);
COMMENT ON TABLE tco.bill_line_cycle IS 'The partitions of tco.bill_line: one per billing cycle, with its bounds (in the billing time zone when it was created) and whether it is detached (archived).';
COMMENT ON COLUMN tco.bill_line_cycle.relname IS 'The partition, a table of schema tco (bill_line_pYYYY_MM).';
COMMENT ON COLUMN tco.bill_line_cycle.detached IS 'Detached by tco.detach_cycle: the table exists but its lines are no longer part of tco.bill_line.';
SELECT pg_catalog.pg_extension_config_dump('tco.bill_line_cycle', '');

-- Writes to the tables behind tco.bill_line: only by the owner (tco's
-- SECURITY DEFINER functions), a superuser, or a restore (tco.restoring()).
CREATE FUNCTION tco.bill_line_storage_guard() RETURNS trigger
    AS 'MODULE_PATHNAME', 'tco_storage_guard' LANGUAGE C SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION tco.bill_line_storage_guard() IS 'BEFORE statement trigger on the partitions of tco.bill_line and its helper tables: refuses writes (42501) that do not come from tco itself, a superuser or a restore.';

CREATE TRIGGER bill_line_storage_guard BEFORE INSERT OR UPDATE OR DELETE ON tco.bill_line_default
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_storage_guard();
CREATE TRIGGER bill_line_storage_guard BEFORE INSERT OR UPDATE OR DELETE ON tco.bill_line_id
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_storage_guard();
CREATE TRIGGER bill_line_storage_guard BEFORE INSERT OR UPDATE OR DELETE ON tco.bill_line_cycle
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_storage_guard();
-- TRUNCATE of a helper table would lose ids or partitions' records.
CREATE TRIGGER bill_line_storage_no_truncate BEFORE TRUNCATE ON tco.bill_line_id
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_storage_guard();
CREATE TRIGGER bill_line_storage_no_truncate BEFORE TRUNCATE ON tco.bill_line_cycle
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_storage_guard();
-- who pays a line of a detached cycle may depend on lines that are gone (payer.c)
CREATE TRIGGER bill_line_cycle_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tco.bill_line_cycle
    FOR EACH STATEMENT EXECUTE FUNCTION tco.invalidate_cache();

-- A row of tco.bill_line_cycle makes its partition exist: created, with the
-- cycle's lines moved out of the default partition, and attached (or left
-- standalone when the row says detached, as a restore of an archived cycle
-- does).  A table that exists already (a full restore creates the partitions
-- before it loads this table's rows) is left as it is.  It acts in a restore
-- too: a data-only restore loads this table first, then the partitions.
CREATE FUNCTION tco.bill_line_cycle_create() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel text := pg_catalog.format('tco.%I', NEW.relname);
    moved bigint;
BEGIN
    IF pg_catalog.to_regclass(rel) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE pg_catalog.format('CREATE TABLE %s (LIKE tco.bill_line INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', rel);
    -- Created inside CREATE or ALTER EXTENSION (the upgrade from 1.2 creates
    -- the partitions of the lines it keeps): not a member of the extension,
    -- or pg_dump would not save its rows.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.objid = rel::pg_catalog.regclass AND d.deptype = 'e') THEN
        EXECUTE pg_catalog.format('ALTER EXTENSION tco DROP TABLE %s', rel);
    END IF;
    EXECUTE pg_catalog.format('CREATE TRIGGER bill_line_storage_guard BEFORE INSERT OR UPDATE OR DELETE ON %s '
                              'FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_storage_guard()', rel);
    EXECUTE pg_catalog.format('CREATE TRIGGER tco_writer_guard BEFORE INSERT OR UPDATE OR DELETE ON %s '
                              'FOR EACH STATEMENT EXECUTE FUNCTION tco.writer_guard()', rel);
    -- Readers reach lines through tco.bill_line and its policies only;
    -- tco_admin may read a partition and load it in a restore (pg_dump and
    -- pg_restore by a database owner that is not a superuser).
    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', rel);
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', rel);
    EXECUTE pg_catalog.format('GRANT SELECT, INSERT ON %s TO tco_admin', rel);
    IF NOT NEW.detached THEN
        EXECUTE pg_catalog.format(
            'WITH m AS (DELETE FROM tco.bill_line_default WHERE period_start >= $1 AND period_start < $2 RETURNING *) '
            'INSERT INTO %s SELECT * FROM m', rel)
            USING NEW.range_start, NEW.range_end;
        GET DIAGNOSTICS moved = ROW_COUNT;
    END IF;
    -- The partition's own indexes (30_trusteeship.sql says why the
    -- partitioned table has none), built after the moved lines are in.
    EXECUTE pg_catalog.format('CREATE UNIQUE INDEX %I ON %s (line_id)', NEW.relname || '_line_id', rel);
    EXECUTE pg_catalog.format('CREATE INDEX %I ON %s (account_id, product_code, period_start)',
                              NEW.relname || '_account_product', rel);
    IF NOT NEW.detached THEN
        EXECUTE pg_catalog.format('ALTER TABLE tco.bill_line ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                                  rel, NEW.range_start, NEW.range_end);
        IF moved > 0 THEN
            RAISE DEBUG 'tco: % bill lines of cycle % moved from tco.bill_line_default into %', moved, NEW.cycle, rel;
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER bill_line_cycle_create AFTER INSERT ON tco.bill_line_cycle
    FOR EACH ROW EXECUTE FUNCTION tco.bill_line_cycle_create();

-- The partition of each cycle from from_cycle to to_cycle, and of every cycle
-- with lines waiting in tco.bill_line_default.  Returns the number created.
CREATE FUNCTION tco.prepare_cycles(from_cycle tco.billing_cycle DEFAULT NULL, to_cycle tco.billing_cycle DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lo tco.billing_cycle := coalesce(from_cycle, tco.cycle_of(pg_catalog.now()));
    hi tco.billing_cycle := coalesce(to_cycle, coalesce(from_cycle, tco.cycle_of(pg_catalog.now())) OPERATOR(tco.+) 2);
    c tco.billing_cycle;
    created integer := 0;
    n integer;
BEGIN
    IF hi OPERATOR(tco.<) lo THEN
        RAISE EXCEPTION 'to_cycle % is before from_cycle %', hi, lo
            USING ERRCODE = '22023', HINT = 'Pass the first cycle, then the last one.';
    END IF;
    IF (hi OPERATOR(tco.-) lo) > 1200 THEN
        RAISE EXCEPTION 'tco.prepare_cycles creates at most 1201 partitions at once (asked for % to %)', lo, hi
            USING ERRCODE = '22023', HINT = 'Prepare a shorter range of cycles.';
    END IF;
    FOR c IN
        SELECT lo OPERATOR(tco.+) i FROM pg_catalog.generate_series(0, hi OPERATOR(tco.-) lo) i
        UNION
        SELECT DISTINCT tco.cycle_of(d.period_start) FROM tco.bill_line_default d
        ORDER BY 1
    LOOP
        -- ON CONFLICT: a session preparing the same cycle at the same time
        -- makes this one wait for it, then find the partition made.
        INSERT INTO tco.bill_line_cycle (cycle, relname, range_start, range_end)
        VALUES (c, 'bill_line_p' || pg_catalog.replace(c::text, '-', '_'),
                pg_catalog.lower(tco.cycle_range(c)), pg_catalog.upper(tco.cycle_range(c)))
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS n = ROW_COUNT;
        created := created + n;
    END LOOP;
    RETURN created;
END $$;
COMMENT ON FUNCTION tco.prepare_cycles(tco.billing_cycle, tco.billing_cycle) IS 'Creates the partitions of tco.bill_line for the cycles from from_cycle (default: the current one) to to_cycle (default: two after from_cycle), and for every cycle whose lines wait in tco.bill_line_default (moving them into it). Returns the number of partitions created.';

-- The partitions of the cycles of these instants that do not exist yet
-- (tco.insert_bill_lines: lines go straight into their cycle's partition).
CREATE FUNCTION tco.prepare_cycles_of(instants timestamptz[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c tco.billing_cycle;
    created integer := 0;
BEGIN
    FOR c IN
        SELECT DISTINCT tco.cycle_of(t) FROM unnest(instants) t
         WHERE t IS NOT NULL AND pg_catalog.isfinite(t)
        EXCEPT
        SELECT r.cycle FROM tco.bill_line_cycle r
        ORDER BY 1
    LOOP
        created := created + tco.prepare_cycles(c, c);
    END LOOP;
    RETURN created;
END $$;
COMMENT ON FUNCTION tco.prepare_cycles_of(timestamptz[]) IS 'Creates the partitions of tco.bill_line of the cycles containing these instants that have none yet. Returns the number created.';

-- Detach a settled cycle's partition for archiving: its table stays in
-- schema tco (tco.bill_line_cycle.relname) and can be dumped, moved or
-- dropped by the operator, and attached again.
CREATE FUNCTION tco.detach_cycle(cycle tco.billing_cycle) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tco.bill_line_cycle;
BEGIN
    PERFORM tco.require_arg(cycle, 'cycle');
    SELECT * INTO r FROM tco.bill_line_cycle b WHERE b.cycle OPERATOR(tco.=) detach_cycle.cycle FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'billing cycle % has no partition of tco.bill_line', cycle
            USING ERRCODE = '42704', HINT = 'See tco.bill_line_cycle for the cycles that have one.';
    END IF;
    IF r.detached THEN
        RAISE EXCEPTION 'billing cycle % is detached already (table tco.%)', cycle, r.relname
            USING ERRCODE = '55000', HINT = 'Attach it again with tco.attach_cycle.';
    END IF;
    -- Only a cycle settled for everything: its lines are then needed by
    -- nothing but explain_line and the FOCUS export of that cycle.
    PERFORM tco.settlement_lock_shared(cycle);
    IF NOT EXISTS (SELECT 1 FROM tco.settled_cycle s WHERE s.cycle OPERATOR(tco.=) detach_cycle.cycle AND s.org_id IS NULL) THEN
        RAISE EXCEPTION 'billing cycle % is not settled for every organization: its bill lines are still needed', cycle
            USING ERRCODE = '55000', HINT = pg_catalog.format('Settle it first: SELECT * FROM tco.settle_cycle(%L);', cycle);
    END IF;
    -- the record first: the DDL guard (src/ddl_guard.c) lets through only
    -- what agrees with it
    UPDATE tco.bill_line_cycle b SET detached = true WHERE b.cycle OPERATOR(tco.=) detach_cycle.cycle;
    EXECUTE pg_catalog.format('ALTER TABLE tco.bill_line DETACH PARTITION tco.%I', r.relname);
    RETURN pg_catalog.format('tco.%I', r.relname);
END $$;
COMMENT ON FUNCTION tco.detach_cycle(tco.billing_cycle) IS 'Detaches the partition of a cycle settled for everything from tco.bill_line (archiving): its lines leave tco.bill_line and its views; the table stays. Returns its name.';

CREATE FUNCTION tco.attach_cycle(cycle tco.billing_cycle) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tco.bill_line_cycle;
BEGIN
    PERFORM tco.require_arg(cycle, 'cycle');
    SELECT * INTO r FROM tco.bill_line_cycle b WHERE b.cycle OPERATOR(tco.=) attach_cycle.cycle FOR UPDATE;
    IF NOT FOUND OR NOT r.detached THEN
        RAISE EXCEPTION 'billing cycle % has no detached partition', cycle
            USING ERRCODE = '55000', HINT = 'See tco.bill_line_cycle for the detached cycles.';
    END IF;
    IF pg_catalog.to_regclass(pg_catalog.format('tco.%I', r.relname)) IS NULL THEN
        RAISE EXCEPTION 'the table tco.% of detached cycle % does not exist', r.relname, cycle
            USING ERRCODE = '42P01', HINT = 'Restore the archived table into schema tco under that name first.';
    END IF;
    UPDATE tco.bill_line_cycle b SET detached = false WHERE b.cycle OPERATOR(tco.=) attach_cycle.cycle;
    EXECUTE pg_catalog.format('ALTER TABLE tco.bill_line ATTACH PARTITION tco.%I FOR VALUES FROM (%L) TO (%L)',
                              r.relname, r.range_start, r.range_end);
    RETURN pg_catalog.format('tco.%I', r.relname);
END $$;
COMMENT ON FUNCTION tco.attach_cycle(tco.billing_cycle) IS 'Attaches the detached partition of a cycle to tco.bill_line again (its rows are checked against the cycle''s bounds). Returns its name.';

-- The partitions' bounds are the cycles' instants in the billing time zone:
-- a new zone is refused while a partition holds lines or is detached; empty
-- partitions (prepared ahead) are dropped and made again in the new zone
-- when needed.
CREATE FUNCTION tco.config_zone_partitions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tco.bill_line_cycle;
    busy boolean;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN NEW;
    END IF;
    IF NEW.billing_timezone IS NOT DISTINCT FROM (CASE TG_OP WHEN 'UPDATE' THEN OLD.billing_timezone ELSE 'UTC' END) THEN
        RETURN NEW;
    END IF;
    FOR r IN SELECT * FROM tco.bill_line_cycle ORDER BY cycle LOOP
        IF r.detached THEN
            busy := true;
        ELSE
            EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM tco.%I)', r.relname) INTO busy;
        END IF;
        IF busy THEN
            RAISE EXCEPTION 'the billing time zone cannot change while bill lines are partitioned by cycles of the current zone (cycle % has lines)', r.cycle
                USING ERRCODE = '55000',
                      DETAIL = 'Each partition of tco.bill_line holds the instants of one cycle in the billing time zone.',
                      HINT = 'Set the billing time zone before the first bill lines arrive.';
        END IF;
        -- the record first: the DDL guard refuses to drop a recorded partition
        DELETE FROM tco.bill_line_cycle b WHERE b.cycle OPERATOR(tco.=) r.cycle;
        EXECUTE pg_catalog.format('DROP TABLE tco.%I', r.relname);
    END LOOP;
    RETURN NEW;
END $$;
CREATE TRIGGER config_zone_partitions BEFORE INSERT OR UPDATE OF billing_timezone ON tco.config
    FOR EACH ROW EXECUTE FUNCTION tco.config_zone_partitions();
