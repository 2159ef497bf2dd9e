-- Cost allocation (split charges, README "Tags and showback"): even,
-- proportional and fixed rules over accounts and units; the parts of every
-- line sum exactly to it, remainders go to the largest fractional parts;
-- what payers owe is unchanged; rules are checked at commit; readers see
-- their organization's rules and parts only.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SET timezone = 'UTC';
SELECT plan(18);

\ir fixtures/access.inc
SELECT tco.create_unit(1, 'Platform') AS platform \gset
SELECT tco.create_unit(1, 'Data', :platform) AS data \gset
SELECT tco.move_member(104, :data);
-- shared costs: 101's lines (e.g. a shared network) and lines tagged team=shared;
-- own costs of 102 (20.00) and 105 (10.00); amounts that do not split evenly
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at, tags) VALUES
    (101, 'cvm', '2024-02-01 00:00', '2024-02-01 01:00', 10.000001, '2024-02-01 01:00', '{}'),
    (101, 'cvm', '2024-02-01 01:00', '2024-02-01 02:00', 0.000002, '2024-02-01 02:00', '{}'),
    (105, 'cvm', '2024-02-01 02:00', '2024-02-01 03:00', 7.777777, '2024-02-01 03:00', '{"team": "shared"}'),
    (102, 'cvm', '2024-02-01 00:00', '2024-02-01 01:00', 20, '2024-02-01 01:00', '{}'),
    (105, 'cvm', '2024-02-01 00:00', '2024-02-01 01:00', 10, '2024-02-01 01:00', '{}'),
    (201, 'cvm', '2024-02-01 00:00', '2024-02-01 01:00', 5, '2024-02-01 01:00', '{"team": "shared"}');
SELECT tco.settle_cycle('2024-02');
CREATE TEMP TABLE owed AS SELECT payer_account_id, due_total FROM tco.statement;

-- even: 101's lines split over 102, 105 and the Platform unit
INSERT INTO tco.allocation_rule (rule_id, org_id, name, source_account_id, method) VALUES (1, 1, 'network', 101, 'even');
INSERT INTO tco.allocation_target (rule_id, target_account_id) VALUES (1, 102), (1, 105);
INSERT INTO tco.allocation_target (rule_id, target_unit_id) VALUES (1, :platform);
-- fixed: tag team=shared 50 / 30 / 20
INSERT INTO tco.allocation_rule (rule_id, org_id, name, source_tag_key, source_tag_value, method) VALUES (2, 1, 'shared', 'team', 'shared', 'fixed');
INSERT INTO tco.allocation_target (rule_id, target_account_id, percent) VALUES (2, 102, 50), (2, 105, 30), (2, 103, 20);
SET CONSTRAINTS ALL IMMEDIATE;
SET CONSTRAINTS ALL DEFERRED;

SELECT is(array(SELECT line_id || ': ' || sum(amount) || ' <> ' || b.list_amount
                  FROM tco.allocated_cost a JOIN tco.bill_line b USING (line_id)
                 GROUP BY line_id, b.list_amount HAVING sum(amount) <> b.list_amount),
          '{}', 'the parts of every allocated line sum exactly to it');
SELECT is(array(SELECT coalesce(target_account_id::text, '') || '/' || coalesce(target_unit_id::text, '-') || ' ' || amount
                  FROM tco.allocated_cost a JOIN tco.bill_line b USING (line_id)
                 WHERE b.list_amount = 10.000001 ORDER BY target_id),
          ARRAY['102/- 3.333334', '105/- 3.333334', '/' || :platform || ' 3.333333'],
          'even: 10.000001 = 3.333334 + 3.333334 + 3.333333 (equal fractions: the lowest targets get the left-over micro-units)');
SELECT is(array(SELECT coalesce(target_account_id::text, 'unit') || ' ' || amount
                  FROM tco.allocated_cost a JOIN tco.bill_line b USING (line_id)
                 WHERE b.list_amount = 0.000002 ORDER BY target_id),
          '{"102 0.000001","105 0.000001","unit 0.000000"}', 'two micro-units over three targets');
SELECT is(array(SELECT target_account_id || ' ' || amount FROM tco.allocated_cost
                 WHERE rule_id = 2 ORDER BY target_id),
          '{"102 3.888889","105 2.333333","103 1.555555"}',
          'fixed 50/30/20 of 7.777777: 3.8888885, 2.3333331, 1.5555554 floored, the left-over micro-unit to the largest fraction');
SELECT is((SELECT count(*) FROM tco.allocated_cost WHERE source_account_id = 201), 0::bigint,
          'a rule of organization 1 does not split organization 2''s tagged line');
SELECT is((SELECT count(DISTINCT line_id) FROM tco.allocated_cost), 3::bigint, 'three lines are allocated');

-- proportional: to the targets' own cost (102: 20, 105: 10 + 7.777777)
UPDATE tco.allocation_rule SET method = 'proportional' WHERE rule_id = 1;
DELETE FROM tco.allocation_target WHERE rule_id = 1 AND target_unit_id IS NOT NULL;
SET CONSTRAINTS ALL IMMEDIATE;
SET CONSTRAINTS ALL DEFERRED;
SELECT is(array(SELECT target_account_id || ' ' || amount
                  FROM tco.allocated_cost a JOIN tco.bill_line b USING (line_id)
                 WHERE rule_id = 1 AND b.list_amount = 10.000001 ORDER BY target_id),
          '{"102 5.294118","105 4.705883"}',
          'proportional to own cost 20 : 17.777777: 5.2941182... and 4.7058827..., the left-over micro-unit to the larger fraction');
SELECT is((SELECT sum(amount) FROM tco.allocated_cost WHERE rule_id = 1),
          (SELECT sum(list_amount) FROM tco.bill_line WHERE account_id = 101), 'and still exact over the rule');
-- a unit target's own cost is its subtree's
INSERT INTO tco.allocation_rule (rule_id, org_id, name, source_account_id, method) VALUES (3, 2, 'org two', 201, 'proportional');
INSERT INTO tco.allocation_target (rule_id, target_account_id) VALUES (3, 202);
SET CONSTRAINTS ALL IMMEDIATE;
SET CONSTRAINTS ALL DEFERRED;
SELECT is((SELECT array_agg(target_account_id || ' ' || amount) FROM tco.allocated_cost WHERE rule_id = 3),
          '{"202 5.000000"}', 'proportional targets with no cost of their own: equal parts');

-- reporting only: what payers owe is unchanged
SELECT is((SELECT count(*) FROM tco.statement s JOIN owed o USING (payer_account_id) WHERE s.due_total <> o.due_total), 0::bigint,
          'statements are unchanged by allocation');

-- the rules are checked when the transaction commits (here: SET CONSTRAINTS)
SAVEPOINT bad;
INSERT INTO tco.allocation_target (rule_id, target_account_id, percent) VALUES (2, 104, 5);
SELECT throws_ok('SET CONSTRAINTS ALL IMMEDIATE', '23514', 'allocation rule 2: fixed percentages sum to 105.000000, not 100',
                 'fixed percentages must sum to 100');
ROLLBACK TO SAVEPOINT bad;
SAVEPOINT bad2;
INSERT INTO tco.allocation_target (rule_id, target_account_id, percent) VALUES (1, 103, 10);
SELECT throws_ok('SET CONSTRAINTS ALL IMMEDIATE', '23514', NULL, 'a proportional rule''s targets take no percent');
ROLLBACK TO SAVEPOINT bad2;
SELECT throws_ok($$INSERT INTO tco.allocation_rule (org_id, name, method) VALUES (1, 'nothing', 'even')$$, '23514', NULL,
                 'a rule needs a source');
SELECT throws_ok($$INSERT INTO tco.allocation_rule (org_id, name, source_account_id, method) VALUES (1, 'x', 101, 'random')$$, '23514', NULL,
                 'and a known method');

-- readers: their organization's rules and parts
SELECT is(pg_temp.n_as('tco_t_admin1', 'SELECT count(*) FROM tco.allocation_rule'), 2::bigint, 'organization 1''s admin sees its two rules');
SELECT is(pg_temp.n_as('tco_t_admin2', 'SELECT count(*) FROM tco.allocation_rule'), 1::bigint, 'organization 2''s admin its one');
SELECT is(pg_temp.n_as('tco_t_admin2', 'SELECT count(*) FROM tco.allocated_cost WHERE rule_id IN (1, 2)'), 0::bigint,
          'and none of organization 1''s parts');
SELECT is(pg_temp.n_as('tco_t_unmapped', 'SELECT count(*) FROM tco.allocation_target'), 0::bigint, 'an unmapped reader sees no target');

SELECT * FROM finish();
ROLLBACK;
