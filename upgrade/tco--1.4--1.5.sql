-- tco 1.4 -> 1.5: the pool voucher check fires for pool vouchers only
-- (README "Upgrades").  Every change made to src/sql after 1.4 is repeated
-- here, so that ALTER EXTENSION tco UPDATE gives the same extension as a
-- fresh 1.5 install (scripts/test_upgrade.sh compares the two catalogs fact
-- by fact).
\echo Use "ALTER EXTENSION tco UPDATE TO '1.5'" to load this file. \quit

-- Names resolve in pg_catalog only while this script runs (src/sql/00_guard.sql
-- says why); every tco object below is schema-qualified.
SET LOCAL search_path = pg_catalog, pg_temp;

-- ==== 45_sharing.sql: tco.pool_voucher_check() on UPDATE and DELETE of pool
-- vouchers only (the function is unchanged: for any other benefit it let
-- every change through)
DROP TRIGGER pool_voucher_check ON tco.benefit;
CREATE TRIGGER pool_voucher_check BEFORE UPDATE ON tco.benefit
    FOR EACH ROW WHEN (OLD.pool_org_id IS NOT NULL OR NEW.pool_org_id IS NOT NULL)
    EXECUTE FUNCTION tco.pool_voucher_check();
CREATE TRIGGER pool_voucher_delete BEFORE DELETE ON tco.benefit
    FOR EACH ROW WHEN (OLD.pool_org_id IS NOT NULL)
    EXECUTE FUNCTION tco.pool_voucher_check();
