-- pgbench script of scripts/stress_r1.sh: one transaction = one attempt to
-- put a random candidate (1001..1400) in trusteeship to management account 1.
-- Refusals the race is expected to produce (TC001 cap reached, 55000 already
-- in trusteeship) are caught and logged by tco_stress.try_establish(); any
-- other error aborts the client and fails the run.
\set member random(1001, 1400)
SELECT tco_stress.try_establish(:member);
