-- Bill lines partitioned by billing cycle (README "Storage: bill lines
-- partitioned by cycle"; src/sql/36_partition.sql): partitions made at run
-- time and moved into, line_id unique across them, writes only through
-- tco.bill_line, detach and attach, the billing time zone.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SET timezone = 'UTC';
SELECT plan(48);

SELECT tco.set_billing_timezone('Asia/Shanghai');
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'One', true);
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES (1, 'admin', 1, 100), (2, 'member', 1, 100), (3, 'other', 1, 100);
SELECT tco.create_organization(1, 'Org');
SELECT tco.add_member(1, 2);
INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour');
CREATE ROLE tco_t_ops;
GRANT tco_admin TO tco_t_ops;
CREATE FUNCTION pg_temp.parts() RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(p || '=' || n, ' ' ORDER BY p), '')
    FROM (SELECT b.tableoid::regclass::text AS p, count(*) AS n FROM tco.bill_line b GROUP BY 1) x
$$;
-- ids and lines are the same set (tco.bill_line_id is kept by the triggers)
CREATE FUNCTION pg_temp.ids_match() RETURNS boolean LANGUAGE sql AS $$
    SELECT NOT EXISTS ((SELECT line_id, period_start FROM tco.bill_line EXCEPT SELECT line_id, period_start FROM tco.bill_line_id)
                       UNION ALL
                       (SELECT line_id, period_start FROM tco.bill_line_id EXCEPT SELECT line_id, period_start FROM tco.bill_line))
$$;

-- 1. The install creates the partitioned table and its default partition only.
SELECT is((SELECT relkind::text FROM pg_class WHERE oid = 'tco.bill_line'::regclass), 'p', 'tco.bill_line is partitioned');
SELECT is((SELECT pg_get_partkeydef('tco.bill_line'::regclass)), 'RANGE (period_start)', 'by range of period_start');
SELECT is((SELECT string_agg(inhrelid::regclass::text, ',') FROM pg_inherits WHERE inhparent = 'tco.bill_line'::regclass),
          'tco.bill_line_default', 'a fresh install has the default partition only');

-- The billing time zone: partitions prepared ahead and still empty are
-- dropped when it changes (they are made again in the new zone).
SELECT is(tco.prepare_cycles('2030-01', '2030-01'), 1, 'an empty partition prepared ahead');
SELECT tco.set_billing_timezone('UTC');
SELECT is((SELECT count(*) FROM tco.bill_line_cycle) || ' ' || (to_regclass('tco.bill_line_p2030_01') IS NULL), '0 true',
          'a new billing time zone drops the empty partitions');
SELECT tco.set_billing_timezone('Asia/Shanghai');

-- 2. A plain INSERT into a cycle without partition lands in the default
-- partition; tco.prepare_cycles makes the partitions and moves it.
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount) VALUES
    (2, 'cvm', '2023-01-31 23:00+08', '2023-02-01 00:00+08', 1),
    (2, 'cvm', '2023-02-01 00:00+08', '2023-02-01 01:00+08', 2);
SELECT is(pg_temp.parts(), 'tco.bill_line_default=2', 'lines of cycles without partition wait in the default partition');
SELECT is(tco.prepare_cycles('2023-02', '2023-03'), 3, 'prepare_cycles makes 2023-02, 2023-03 and 2023-01 (lines waiting)');
SELECT is(pg_temp.parts(), 'tco.bill_line_p2023_01=1 tco.bill_line_p2023_02=1', 'each line moved into its cycle (billing time zone bounds)');
SELECT is((SELECT string_agg(cycle::text || ' ' || range_start || ' ' || detached, ', ' ORDER BY cycle) FROM tco.bill_line_cycle),
          '2023-01 2022-12-31 16:00:00+00 false, 2023-02 2023-01-31 16:00:00+00 false, 2023-03 2023-02-28 16:00:00+00 false',
          'tco.bill_line_cycle records each partition with its bounds');
SELECT is(tco.prepare_cycles('2023-02', '2023-03'), 0, 'prepare_cycles again makes nothing');
SELECT throws_ok($$SELECT tco.set_billing_timezone('UTC')$$, '55000', NULL,
                 'the billing time zone cannot change while partitions of its cycles hold lines');
SELECT is((SELECT count(*) FROM pg_depend d JOIN tco.bill_line_cycle r ON d.objid = format('tco.%I', r.relname)::regclass
            WHERE d.deptype = 'e'), 0::bigint, 'partitions are not members of the extension (pg_dump saves their rows)');
SELECT is((SELECT string_agg(DISTINCT c.relrowsecurity::text, ',') FROM tco.bill_line_cycle r JOIN pg_class c ON c.oid = format('tco.%I', r.relname)::regclass),
          'true', 'partitions have row-level security on');
SELECT is((SELECT count(*) FROM tco.bill_line_cycle r
            WHERE has_table_privilege('tco_reader', format('tco.%I', r.relname), 'SELECT')
               OR has_table_privilege('public', format('tco.%I', r.relname), 'SELECT')), 0::bigint,
          'readers reach lines through tco.bill_line only');
SELECT is((SELECT string_agg(i.indexrelid::regclass::text || ' ' || i.indisunique, ', ' ORDER BY i.indexrelid::regclass::text)
             FROM pg_index i WHERE i.indrelid = 'tco.bill_line_p2023_02'::regclass),
          'tco.bill_line_p2023_02_account_product false, tco.bill_line_p2023_02_line_id true', 'a partition''s own indexes');
SELECT throws_ok($$SELECT tco.prepare_cycles('2023-03', '2023-02')$$, '22023', NULL, 'a reversed range is refused');
SELECT throws_ok($$SELECT tco.prepare_cycles('2000-01', '2200-01')$$, '22023', NULL, 'more than 1201 partitions at once is refused');

-- 3. tco.insert_bill_lines makes the partition of a new cycle first.
SELECT is(tco.insert_bill_lines(ARRAY[2, 3]::bigint[], ARRAY['cvm', 'cvm'], NULL,
                                ARRAY['2023-05-03 00:00+08', '2023-02-03 00:00+08']::timestamptz[],
                                ARRAY['2023-05-03 01:00+08', '2023-02-03 01:00+08']::timestamptz[], ARRAY[5, 7], NULL, NULL),
          2::bigint, 'insert_bill_lines into a new cycle');
SELECT is(pg_temp.parts(), 'tco.bill_line_p2023_01=1 tco.bill_line_p2023_02=2 tco.bill_line_p2023_05=1',
          'its lines went straight into their partitions');

-- 4. line_id is unique across partitions, explicit ids included.
INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount) VALUES
    (1000, 2, 'cvm', '2023-03-03 00:00+08', '2023-03-03 01:00+08', 3);
SELECT throws_ok($$INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount)
                   VALUES (1000, 3, 'cvm', '2023-05-04 00:00+08', '2023-05-04 01:00+08', 3)$$,
                 '23505', NULL, 'an explicit id used in another cycle is refused');
SELECT throws_ok($$INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount)
                   VALUES (1000, 3, 'cvm', '2023-03-04 00:00+08', '2023-03-04 01:00+08', 3)$$,
                 '23505', NULL, 'and in the same cycle');
SELECT throws_ok($$INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount)
                   VALUES (2000, 3, 'cvm', '2023-03-04 00:00+08', '2023-03-04 01:00+08', 3),
                          (2000, 3, 'cvm', '2023-05-04 00:00+08', '2023-05-04 01:00+08', 3)$$,
                 '23505', NULL, 'and twice in one statement, in two cycles');
SELECT cmp_ok((SELECT line_id FROM tco.bill_line b WHERE b.line_id <> 1000 ORDER BY line_id DESC LIMIT 1), '<', 1000::bigint,
              'no other line has an id above 1000 yet');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount) VALUES
    (3, 'cvm', '2023-05-05 00:00+08', '2023-05-05 01:00+08', 4);
SELECT is((SELECT max(line_id) FROM tco.bill_line), 1001::bigint, 'the next default id follows the explicit one');
SELECT throws_ok($$UPDATE tco.bill_line SET line_id = 1000 WHERE line_id = 1001$$, '23505', NULL,
                 'an update to an id in use in another cycle is refused');
UPDATE tco.bill_line SET period_start = '2023-02-10 00:00+08', period_end = '2023-02-10 01:00+08' WHERE line_id = 1001;
SELECT is((SELECT tableoid::regclass::text FROM tco.bill_line WHERE line_id = 1001), 'tco.bill_line_p2023_02',
          'an update of period_start moves the line to its new cycle');
DELETE FROM tco.bill_line WHERE line_id = 1000;
SELECT ok(pg_temp.ids_match(), 'tco.bill_line_id holds exactly the ids and period starts of the lines');

-- 5. Writes name tco.bill_line: the partitions and helper tables refuse them.
SET ROLE tco_t_ops;
SELECT throws_ok($$INSERT INTO tco.bill_line_p2023_02 (line_id, account_id, product_code, period_start, period_end, list_amount)
                   VALUES (5000, 2, 'cvm', '2023-02-03 00:00+08', '2023-02-03 01:00+08', 3)$$,
                 '42501', NULL, 'tco_admin may not write a partition (it would skip the rules)');
SELECT throws_ok($$INSERT INTO tco.bill_line_default (line_id, account_id, product_code, period_start, period_end, list_amount)
                   VALUES (5000, 2, 'cvm', '2023-09-03 00:00+08', '2023-09-03 01:00+08', 3)$$,
                 '42501', NULL, 'nor the default partition');
SELECT throws_ok($$DELETE FROM tco.bill_line_id$$, '42501', NULL, 'nor tco.bill_line_id');
SELECT throws_ok($$UPDATE tco.bill_line_cycle SET detached = true$$, '42501', NULL, 'nor tco.bill_line_cycle');
SELECT lives_ok($$INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
                  VALUES (3, 'cvm', '2023-02-04 00:00+08', '2023-02-04 01:00+08', 1)$$, 'tco_admin writes through tco.bill_line');
RESET ROLE;

-- 6. Detach and attach.  Only a cycle settled for everything can be detached.
INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at) VALUES (2, 1, '2023-02-15 10:30+08');
SELECT throws_ok($$SELECT tco.detach_cycle('2023-02')$$, '55000', NULL, 'an unsettled cycle is not detached');
SELECT throws_ok($$SELECT tco.detach_cycle('2023-08')$$, '42704', NULL, 'a cycle without partition is not detached');
SELECT is((SELECT lines FROM tco.settle_cycle('2023-02')), 4::bigint, 'settle 2023-02');
SELECT is(tco.detach_cycle('2023-02'), 'tco.bill_line_p2023_02', 'detach_cycle returns the table');
SELECT is((SELECT count(*) FROM tco.bill_line WHERE period_start >= '2023-01-31 16:00+00' AND period_start < '2023-02-28 16:00+00'),
          0::bigint, 'its lines leave tco.bill_line');
SELECT is((SELECT count(*) FROM tco.bill_line_p2023_02), 4::bigint, 'and stay in its table');
SELECT is((SELECT lines FROM tco.settle_cycle('2023-02')), 4::bigint, 'settle_cycle of the detached cycle returns what was settled');
SELECT throws_ok($$SELECT tco.trusteeship_effective_payer(2, 'cvm', '2023-02-20 00:00+08')$$, '55000', NULL,
                 'a payer that needs the detached lines (a change in that cycle) is refused');
SELECT is(tco.trusteeship_effective_payer(3, 'cvm', '2023-02-20 00:00+08'), 3::bigint,
          'a payer that does not need them is answered');
SELECT is(tco.trusteeship_effective_payer(2, 'cvm', '2023-03-20 00:00+08'), 1::bigint, 'and so is one of another cycle');
SELECT throws_ok(format('SELECT tco.explain_line(%s)', (SELECT min(line_id) FROM tco.bill_line_p2023_02)), '55000', NULL,
                 'explain_line of a detached line says so');
SELECT throws_ok($$ALTER TABLE tco.bill_line ATTACH PARTITION tco.bill_line_p2023_02
                   FOR VALUES FROM ('2023-01-31 16:00+00') TO ('2023-02-28 16:00+00')$$, '0A000', NULL,
                 'a plain ATTACH PARTITION behind tco.bill_line_cycle is refused (the DDL guard)');
SELECT is(tco.attach_cycle('2023-02'), 'tco.bill_line_p2023_02', 'attach_cycle');
SELECT throws_ok($$ALTER TABLE tco.bill_line DETACH PARTITION tco.bill_line_p2023_03$$, '0A000', NULL,
                 'and so is a plain DETACH PARTITION');
SELECT throws_ok($$DROP TABLE tco.bill_line_p2023_03$$, '0A000', NULL,
                 'and a DROP TABLE of an attached partition (its lines would go)');
SELECT is((SELECT count(*) FROM tco.bill_line WHERE period_start >= '2023-01-31 16:00+00' AND period_start < '2023-02-28 16:00+00'),
          4::bigint, 'the lines are back');

SELECT * FROM finish();
ROLLBACK;
