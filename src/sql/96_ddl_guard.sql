-- The DDL guard (src/ddl_guard.c): an event trigger that refuses the ALTER
-- TABLE forms tco's C code cannot follow on tco's own tables (column type
-- changes, dropped or renamed columns, renamed or moved tables, columns added
-- to the tables settlement writes in bulk, deferrable constraints), and
-- ATTACH/DETACH PARTITION on tco.bill_line or DROP TABLE of one of its
-- attached partitions that tco.bill_line_cycle does not record.  Inactive
-- while the extension's own install and upgrade scripts run.  README,
-- "Limits", lists the supported DDL.
CREATE FUNCTION tco.ddl_guard() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'tco_ddl_guard' LANGUAGE C;
COMMENT ON FUNCTION tco.ddl_guard() IS 'Event trigger: refuses ALTER TABLE forms on tco''s tables that its C code does not support (see README, Limits).';
CREATE EVENT TRIGGER tco_ddl_guard ON ddl_command_start
    WHEN TAG IN ('ALTER TABLE', 'DROP TABLE')
    EXECUTE FUNCTION tco.ddl_guard();
COMMENT ON EVENT TRIGGER tco_ddl_guard IS 'Refuses ALTER TABLE forms on tco''s tables that its C code does not support, and partition changes of tco.bill_line that tco.bill_line_cycle does not record (see README, Limits).';
