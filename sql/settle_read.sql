-- Settlement reads its cycle once (DESIGN section 9; README "Settlement
-- speed"): the read of the cycle's lines is planned for the cycle's bounds,
-- so with 40% of the table in the cycle it is a sequential scan however many
-- times the backend settled before (no generic plan), and a cycle that
-- does not fit in work_mem is sorted as runs spilled to temporary files and
-- merged, with the same result as the in-memory sort.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
\set SHOW_CONTEXT never

SELECT tco.set_billing_timezone('Asia/Shanghai');
SELECT setseed(0.25);
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme', true);
INSERT INTO tco.account (account_id, entity_id, balance) SELECT a, 1, 100 FROM generate_series(1, 40) a;
SELECT tco.create_organization(1, 'Acme Org') AS org \gset
SELECT count(tco.add_member(:org, a)) FROM generate_series(2, 40) a;
INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
SELECT a, 1, '2022-10-01 00:00+08' FROM generate_series(2, 40) a WHERE a % 7 = 0;
INSERT INTO tco.product (product_code, granularity) VALUES ('a', 'hour'), ('b', 'day'), ('c', 'minute');
SELECT count(tco.set_contract_discount(a, NULL, 0.05 + (a % 5) / 100.0, NULL, '-infinity'))
FROM generate_series(1, 40) a WHERE a % 3 = 0;
-- benefits that run out during the cycle: the result depends on the order
SELECT count(tco.grant_benefit((ARRAY['coupon', 'voucher', 'stored_value_card'])[1 + a % 3], a, 20 + a % 7,
                               '2022-12-01 00:00+08', '2023-06-01 00:00+08', CASE WHEN a % 4 = 0 THEN 'b' END))
FROM generate_series(1, 40) a;
-- 30,000 lines: 12,000 in 2023-02 (40% of the table: the cycle settled
-- below), 9,000 in each of 2023-01 and 2023-03, inserted in random order, so
-- the table's physical order is neither by time nor by account
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
SELECT 1 + g % 40, (ARRAY['a', 'b', 'c'])[1 + g % 3], s, s + interval '1 hour',
       round((random() * 2)::numeric, 6), s + interval '2 hours'
FROM (SELECT g, lower(tco.cycle_range(c)) + (k / n::numeric) * interval '28 days' AS s
      FROM (SELECT g, CASE WHEN g < 9000 THEN '2023-01' WHEN g < 21000 THEN '2023-02' ELSE '2023-03' END::tco.billing_cycle AS c,
                   CASE WHEN g < 9000 THEN g WHEN g < 21000 THEN g - 9000 ELSE g - 21000 END AS k,
                   CASE WHEN g BETWEEN 9000 AND 20999 THEN 12000 ELSE 9000 END AS n
            FROM generate_series(0, 29999) g) y) x
ORDER BY random();
ANALYZE tco.bill_line;
SELECT count(*) FILTER (WHERE period_start >= lower(tco.cycle_range('2023-02'))
                          AND period_start < upper(tco.cycle_range('2023-02'))) AS in_cycle,
       count(*) AS in_table
FROM tco.bill_line;

-- Scans in this transaction of tco.bill_line (and of its partitions, if it
-- is partitioned): sequential scans of the tables, and scans of any index
-- whose first column is period_start.
CREATE FUNCTION pg_temp.line_scans(OUT seq bigint, OUT period_index bigint) LANGUAGE sql AS $$
    WITH t AS (SELECT relid FROM pg_partition_tree('tco.bill_line') WHERE isleaf
               UNION SELECT oid FROM pg_class WHERE oid = 'tco.bill_line'::regclass AND relkind = 'r')
    SELECT (SELECT sum(pg_stat_get_xact_numscans(relid)) FROM t)::bigint,
           coalesce((SELECT sum(pg_stat_get_xact_numscans(i.indexrelid))
                     FROM pg_index i JOIN t ON t.relid = i.indrelid
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                     WHERE a.attname = 'period_start'), 0)::bigint
$$;

-- 1. Eight settlements in this backend, each rolled back.  The plan cache
-- switches a prepared query to a generic plan, made without knowing the
-- cycle, after five custom plans (the generic plan of this read is an index
-- scan on period_start, for the 0.5% of the table it guesses); the read of
-- 40% of the table planned with the cycle's bounds is a sequential scan,
-- every time: one sequential scan per settlement, no index on period_start.
BEGIN;
CREATE TEMP TABLE scans AS SELECT 0 AS run, * FROM pg_temp.line_scans();
DO $$
BEGIN
    FOR i IN 1..8 LOOP
        BEGIN
            PERFORM tco.settle_cycle('2023-02');
            RAISE EXCEPTION USING ERRCODE = 'P0004';
        EXCEPTION WHEN assert_failure THEN NULL;
        END;
        INSERT INTO scans SELECT i, * FROM pg_temp.line_scans();
    END LOOP;
END $$;
SELECT s.run, s.seq - p.seq AS seq_scans, s.period_index - p.period_index AS period_start_index_scans
FROM scans s JOIN scans p ON p.run = s.run - 1 ORDER BY s.run;
ROLLBACK;

-- 2. The same settlement with work_mem 64kB (the cycle's 12,000 lines do not
-- fit: 8 sorted runs written to temporary files, merged four at most at a
-- time, with the last one kept in memory) and with 64MB (sorted in memory):
-- the same statements, the same per-line records, the same benefit balances.
CREATE TEMP TABLE results (work_mem text, what text, digest text);
CREATE FUNCTION pg_temp.record_settlement(wm text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    got results[];
BEGIN
    BEGIN
        PERFORM set_config('work_mem', wm, true);
        PERFORM tco.settle_cycle('2023-02');
        SELECT array_agg(r) INTO got FROM (
        SELECT wm, 'statements', md5(string_agg(format('%s %s %s %s %s %s', payer_account_id, org_id, list_total,
                                                       discount_total, benefit_total, due_total), ',' ORDER BY payer_account_id))
        FROM tco.statement
        UNION ALL
        SELECT wm, 'statement lines', md5(string_agg(format('%s %s %s %s %s %s %s', s.payer_account_id, l.account_id,
                                                            l.product_code, l.list_amount, l.discount_amount,
                                                            l.benefit_amount, l.lines), ',' ORDER BY s.payer_account_id,
                                                            l.account_id, l.product_code))
        FROM tco.statement_line l JOIN tco.statement s USING (statement_id)
        UNION ALL
        SELECT wm, 'settled lines', md5(string_agg(format('%s %s %s %s %s', line_id, payer_account_id, discount_amount,
                                                          benefit_amount, due_amount), ',' ORDER BY line_id))
        FROM tco.settled_line
        UNION ALL
        SELECT wm, 'benefit uses', md5(string_agg(format('%s %s %s', benefit_id, line_id, amount), ','
                                                  ORDER BY line_id, benefit_id))
        FROM tco.benefit_use
        UNION ALL
        SELECT wm, 'balances', md5(string_agg(format('%s %s', benefit_id, balance), ',' ORDER BY benefit_id))
        FROM tco.benefit) r;
        RAISE EXCEPTION USING ERRCODE = 'P0004';
    EXCEPTION WHEN assert_failure THEN NULL;
    END;
    INSERT INTO results SELECT * FROM unnest(got);
END $$;
SELECT pg_temp.record_settlement('64kB');
SELECT pg_temp.record_settlement('64MB');
-- 3. The same settlement read by parallel workers with the backend (a cycle
-- this small is read in parallel only when told that any table is large
-- enough): each participant sorts its share, its runs go to shared
-- temporary files, the backend merges them: the same results again, with
-- runs spilled (64kB) and without.
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SELECT pg_temp.record_settlement('64kB');
SELECT pg_temp.record_settlement('64MB');
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
SELECT what, count(DISTINCT digest) AS different_results, count(*) AS runs
FROM results GROUP BY what ORDER BY what;
-- and the spilled settlement is the plain GROUP BY of the cycle's lines
BEGIN;
SET LOCAL work_mem = '64kB';
SELECT statements, lines FROM tco.settle_cycle('2023-02');
SELECT count(*) AS mismatches
FROM (SELECT account_id, product_code, sum(list_amount) AS list, count(*)::int AS n FROM tco.bill_line
      WHERE period_start >= lower(tco.cycle_range('2023-02')) AND period_start < upper(tco.cycle_range('2023-02'))
      GROUP BY 1, 2) e
FULL JOIN (SELECT account_id, product_code, sum(list_amount) AS list, sum(lines)::int AS n,
                  sum(discount_amount + benefit_amount + due_amount) AS parts
           FROM tco.statement_line GROUP BY 1, 2) g USING (account_id, product_code)
WHERE e.list IS DISTINCT FROM g.list OR e.n IS DISTINCT FROM g.n OR g.parts IS DISTINCT FROM g.list;
ROLLBACK;
