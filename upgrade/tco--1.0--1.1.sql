-- tco 1.0 -> 1.1.  Every change made to src/sql after 1.0 is repeated here,
-- so that ALTER EXTENSION tco UPDATE gives the same extension as a fresh 1.1
-- install (scripts/test_upgrade.sh compares the two catalogs fact by fact).
\echo Use "ALTER EXTENSION tco UPDATE TO '1.1'" to load this file. \quit
