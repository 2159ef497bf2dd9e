-- tco 1.1 -> 1.2.  Every change made to src/sql after 1.1 is repeated here,
-- so that ALTER EXTENSION tco UPDATE gives the same extension as a fresh 1.2
-- install (scripts/test_upgrade.sh compares the two catalogs fact by fact).
\echo Use "ALTER EXTENSION tco UPDATE TO '1.2'" to load this file. \quit

-- ==== settle_cycle writes its packs in bulk from C (src/bulk.c): the
-- slicing helper its INSERT used is gone.  (The library keeps the C symbol
-- for the 1.1 install script.)
DROP FUNCTION tco.settle_slice(anyarray, integer, integer);
