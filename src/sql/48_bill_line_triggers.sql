-- The rules of tco.bill_line, checked once per statement (README "Ingest").
--
-- One AFTER statement trigger per operation, with transition tables, runs
-- tco.bill_line_changed() (src/ingest.c), which does in this order what four
-- triggers did before 1.3 (each paid its own call and its own scan of the
-- statement's rows, and their order was the order of their names):
--   1. R14 (40_settlement.sql): no line enters, leaves or changes in a
--      settled cycle.  The settlement lock of a cycle (src/guard.c) is taken
--      shared, and the settled-cycle queries run, only for the cycles that
--      have ended: a cycle that has not ended cannot be being settled
--      (tco.settle_cycle refuses it), and a settlement waits for the
--      transactions writing bill lines when it begins (tco_settlement_lock),
--      so a line written just before its cycle ended is still read by it.
--   2. line_id unique across partitions (tco.bill_line_id, 30_trusteeship.sql)
--      and the identity sequence kept past explicit ids (98_dump.sql).
--   3. No invalidation: the payer cache (src/payer.c) keeps what the
--      frozen-product rule read of bill lines for one snapshot only, so a
--      statement of bill lines changes no cached answer and sends nothing to
--      other backends (1.2 sent a relcache invalidation for every statement,
--      and every backend dropped its caches and cached plans); this backend
--      notes its own write for its next payer call.
--   4. Spending alerts (44_alert.sql), after 3, so that they read payers
--      that know the statement's own lines.
-- What each costs per statement, for the single-line transactions of a
-- streaming ingest: the statement's rows are kept once in the transition
-- tables and read once in C; 1 is a cycle per row, compared with the clock
-- (the lock and the queries only for ended cycles); 2 is one INSERT of the
-- statement's ids and a read of the sequence; 4 is one query while no
-- spending threshold is enabled.
CREATE FUNCTION tco.bill_line_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'tco_bill_line_changed'
    LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION tco.bill_line_changed() IS 'Statement trigger of tco.bill_line (src/ingest.c): R14 for ended cycles, line_id uniqueness across partitions and the identity sequence, spending alerts.';

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
-- ids with the lines; this backend's payer reads the change from its next
-- call (other backends with their next snapshot).
CREATE FUNCTION tco.bill_lines_written() RETURNS void
    AS 'MODULE_PATHNAME', 'tco_bill_lines_written' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION tco.bill_lines_written() IS 'Internal: this backend wrote bill lines outside the statement trigger of tco.bill_line (its payer reads them from its next call).';
CREATE FUNCTION tco.bill_line_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN NULL;
    END IF;
    TRUNCATE tco.bill_line_id;
    PERFORM tco.bill_lines_written();
    RETURN NULL;
END $$;
CREATE TRIGGER bill_line_truncated AFTER TRUNCATE ON tco.bill_line
    FOR EACH STATEMENT EXECUTE FUNCTION tco.bill_line_truncated();
