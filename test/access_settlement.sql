-- Who sees which settlement data (DESIGN section 8, R7) after a real
-- tco.settle_cycle: statements, statement lines, settled cycles, benefits,
-- contract discounts and the BI views (security_invoker), as each kind of
-- role; and that readers cannot write or settle.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SET timezone = 'UTC';
SELECT plan(79);

\ir fixtures/access.inc
-- one line of 10.00 per account in 2024-02, and one for 202 in 2024-03
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    SELECT a, 'cvm', '2024-02-01 10:00', '2024-02-01 11:00', 10, '2024-02-01 11:00'
      FROM unnest(ARRAY[101, 102, 103, 104, 105, 201, 202]) a;
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    VALUES (202, 'cvm', '2024-03-01 10:00', '2024-03-01 11:00', 10, '2024-03-01 11:00');
-- contract discounts: account 105, entity 1, account 202, entity 2
SELECT tco.set_contract_discount(105, NULL, 0.10, NULL, '2024-01-01');
SELECT tco.set_contract_discount(NULL, 1, 0.05, NULL, '2024-01-01');
SELECT tco.set_contract_discount(202, NULL, 0.20, NULL, '2024-01-01');
SELECT tco.set_contract_discount(NULL, 2, 0.30, NULL, '2024-01-01');
-- benefits: the manager's coupon and voucher, a managed member's coupon, the
-- self-pay member's card, org 2's voucher and coupon
SELECT tco.grant_coupon(102, 1, '2025-01-01'), tco.grant_voucher(102, 2, '2025-01-01'),
       tco.grant_coupon(103, 1, '2025-01-01'), tco.grant_stored_value_card(105, 1, '2025-01-01'),
       tco.grant_voucher(201, 1, '2025-01-01'), tco.grant_coupon(202, 1, '2025-01-01');

-- Run a query as a role.  On an error the subtransaction of throws_ok rolls
-- the SET ROLE back.
CREATE FUNCTION pg_temp.text_as(r name, q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SET ROLE %I', r);
    RETURN QUERY EXECUTE q;
    RESET ROLE;
END $$;
-- The sorted rows a role sees of `expr` over `rel`.
CREATE FUNCTION pg_temp.rows(r name, rel text, expr text) RETURNS text[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(x ORDER BY x), '{}')
      FROM pg_temp.text_as(r, format('SELECT (%s)::text FROM tco.%I', expr, rel)) x
$$;

-- Settle 2024-02 for everything and, as tco_admin under row-level security,
-- 2024-03 for organization 2.
SELECT is((SELECT statements FROM tco.settle_cycle('2024-02')), 5::bigint, 'settling 2024-02 writes 5 statements');
SELECT is(array(SELECT pg_temp.text_as('tco_t_ops', $q$SELECT statements::text FROM tco.settle_cycle('2024-03', 2)$q$)),
          '{1}', 'tco_admin settles 2024-03 of organization 2 under row-level security');
SELECT is((SELECT array_agg(payer_account_id || ' ' || cycle::text ORDER BY payer_account_id, cycle) FROM tco.statement),
          '{"101 2024-02","102 2024-02","105 2024-02","201 2024-02","202 2024-02","202 2024-03"}',
          'statements: managed members 103 and 104 have none (R7)');

-- statements
SELECT is(pg_temp.rows('tco_t_admin1', 'statement', $$payer_account_id || ' ' || cycle::text$$),
          '{"101 2024-02","102 2024-02","105 2024-02"}', 'org admin sees the statements of every member of its organization');
SELECT is(pg_temp.rows('tco_t_manager', 'statement', $$payer_account_id || ' ' || cycle::text$$),
          '{"102 2024-02"}', 'manager sees its own statement');
SELECT is(pg_temp.rows('tco_t_managed', 'statement', $$payer_account_id || ' ' || cycle::text$$),
          '{}', 'managed member has no statement and does not see its manager''s (R7)');
SELECT is(pg_temp.rows('tco_t_selfpay', 'statement', $$payer_account_id || ' ' || cycle::text$$),
          '{"105 2024-02"}', 'self-pay member sees its own statement only');
SELECT is(pg_temp.rows('tco_t_admin2', 'statement', $$payer_account_id || ' ' || cycle::text$$),
          '{"201 2024-02","202 2024-02","202 2024-03"}', 'admin of org 2 sees org 2''s statements only');
SELECT is(pg_temp.rows('tco_t_unmapped', 'statement', 'payer_account_id'), '{}', 'unmapped reader sees no statement');
SELECT is(pg_temp.rows('tco_t_ops', 'statement', 'payer_account_id'), '{101,102,105,201,202,202}', 'tco_admin sees every statement');

-- statement lines (per consuming account)
SELECT is(pg_temp.rows('tco_t_admin1', 'statement_line', 'account_id'), '{101,102,103,104,105}',
          'org admin sees every line of its members'' statements, managed members'' included');
SELECT is(pg_temp.rows('tco_t_manager', 'statement_line', 'account_id'), '{102,103,104}',
          'manager sees its managed members'' lines on its statement');
SELECT is(pg_temp.rows('tco_t_managed', 'statement_line', 'account_id'), '{}',
          'managed member does not see its own line on its manager''s statement');
SELECT is(pg_temp.rows('tco_t_selfpay', 'statement_line', 'account_id'), '{105}', 'self-pay member sees its own lines');
SELECT is(pg_temp.rows('tco_t_admin2', 'statement_line', 'account_id'), '{201,202,202}', 'admin of org 2 sees org 2''s lines only');
SELECT is(pg_temp.rows('tco_t_unmapped', 'statement_line', 'account_id'), '{}', 'unmapped reader sees no statement line');

-- the managed member still sees its consumption
SELECT is(pg_temp.rows('tco_t_managed', 'bill_line', 'account_id'), '{103}', 'managed member sees its own bill lines');
SELECT is(pg_temp.rows('tco_t_manager', 'bill_line', 'account_id'), '{102,103,104}', 'manager sees its managed members'' bill lines');

-- view: settlement_by_payer
SELECT is(pg_temp.rows('tco_t_admin1', 'settlement_by_payer', $$payer_account_id || ' ' || lines || ' ' || list_total$$),
          '{"101 1 10.00","102 3 30.00","105 1 10.00"}', 'settlement_by_payer as org admin');
SELECT is(pg_temp.rows('tco_t_manager', 'settlement_by_payer', $$payer_account_id || ' ' || lines || ' ' || list_total$$),
          '{"102 3 30.00"}', 'settlement_by_payer as manager: its statement with its managed members'' 3 lines');
SELECT is(pg_temp.rows('tco_t_managed', 'settlement_by_payer', 'payer_account_id'), '{}', 'settlement_by_payer as managed member: nothing');
SELECT is(pg_temp.rows('tco_t_selfpay', 'settlement_by_payer', $$payer_account_id || ' ' || lines || ' ' || due_total$$),
          '{"105 1 8.00"}', 'settlement_by_payer as self-pay member: its own, 10.00 less its 10% discount and its 1.00 card');
SELECT is(pg_temp.rows('tco_t_admin2', 'settlement_by_payer', $$payer_account_id || ' ' || cycle::text$$),
          '{"201 2024-02","202 2024-02","202 2024-03"}', 'settlement_by_payer as admin of org 2');
SELECT is(pg_temp.rows('tco_t_unmapped', 'settlement_by_payer', 'payer_account_id'), '{}', 'settlement_by_payer as unmapped reader: nothing');
SELECT is(pg_temp.rows('tco_t_ops', 'settlement_by_payer', 'payer_account_id'), '{101,102,105,201,202,202}', 'settlement_by_payer as tco_admin: everything');

-- view: settlement_by_member
SELECT is(pg_temp.rows('tco_t_admin1', 'settlement_by_member', $$account_id || '@' || payer_account_id$$),
          '{101@101,102@102,103@102,104@102,105@105}', 'settlement_by_member as org admin');
SELECT is(pg_temp.rows('tco_t_manager', 'settlement_by_member', $$account_id || '@' || payer_account_id$$),
          '{102@102,103@102,104@102}', 'settlement_by_member as manager');
SELECT is(pg_temp.rows('tco_t_managed', 'settlement_by_member', 'account_id'), '{}', 'settlement_by_member as managed member: nothing');
SELECT is(pg_temp.rows('tco_t_selfpay', 'settlement_by_member', $$account_id || '@' || payer_account_id$$),
          '{105@105}', 'settlement_by_member as self-pay member');
SELECT is(pg_temp.rows('tco_t_admin2', 'settlement_by_member', $$account_id || '@' || payer_account_id || ' ' || cycle::text$$),
          '{"201@201 2024-02","202@202 2024-02","202@202 2024-03"}', 'settlement_by_member as admin of org 2');
SELECT is(pg_temp.rows('tco_t_unmapped', 'settlement_by_member', 'account_id'), '{}', 'settlement_by_member as unmapped reader: nothing');

-- view: settlement_by_unit (root units only here: org 1's root is unit of org 1)
SELECT is(pg_temp.rows('tco_t_admin1', 'settlement_by_unit', $$org_id || ' ' || cycle::text || ' ' || lines || ' ' || list_total$$),
          '{"1 2024-02 5 50.000000"}', 'settlement_by_unit as org admin: the whole organization');
SELECT is(pg_temp.rows('tco_t_manager', 'settlement_by_unit', $$org_id || ' ' || cycle::text || ' ' || lines || ' ' || list_total$$),
          '{"1 2024-02 3 30.000000"}', 'settlement_by_unit as manager: its statement''s lines only');
SELECT is(pg_temp.rows('tco_t_managed', 'settlement_by_unit', 'unit_id'), '{}', 'settlement_by_unit as managed member: nothing');
SELECT is(pg_temp.rows('tco_t_selfpay', 'settlement_by_unit', $$org_id || ' ' || lines || ' ' || list_total$$),
          '{"1 1 10.000000"}', 'settlement_by_unit as self-pay member: its own lines');
SELECT is(pg_temp.rows('tco_t_admin2', 'settlement_by_unit', $$org_id || ' ' || cycle::text || ' ' || lines$$),
          '{"2 2024-02 2","2 2024-03 1"}', 'settlement_by_unit as admin of org 2');
SELECT is(pg_temp.rows('tco_t_unmapped', 'settlement_by_unit', 'unit_id'), '{}', 'settlement_by_unit as unmapped reader: nothing');
SELECT is(pg_temp.rows('tco_t_ops', 'settlement_by_unit', $$org_id || ' ' || cycle::text || ' ' || lines$$),
          '{"1 2024-02 5","2 2024-02 2","2 2024-03 1"}', 'settlement_by_unit as tco_admin: everything');
SELECT ok((SELECT bool_and('security_invoker=true' = ANY (c.reloptions)) FROM pg_class c
            WHERE c.relnamespace = 'tco'::regnamespace AND c.relname LIKE 'settlement_by_%' AND c.relkind = 'v'),
          'the three BI views are security_invoker');

-- settled cycles
SELECT is(pg_temp.rows('tco_t_admin1', 'settled_cycle', $$cycle::text || ' ' || coalesce(org_id::text, 'all')$$),
          '{"2024-02 all"}', 'org admin sees the global settlement, not org 2''s');
SELECT is(pg_temp.rows('tco_t_managed', 'settled_cycle', $$cycle::text || ' ' || coalesce(org_id::text, 'all')$$),
          '{"2024-02 all"}', 'managed member sees which cycles are settled');
SELECT is(pg_temp.rows('tco_t_admin2', 'settled_cycle', $$cycle::text || ' ' || coalesce(org_id::text, 'all')$$),
          '{"2024-02 all","2024-03 2"}', 'admin of org 2 sees its organization''s settlement too');
SELECT is(pg_temp.rows('tco_t_unmapped', 'settled_cycle', 'cycle'), '{}', 'unmapped reader sees no settled cycle');

-- benefits: owned, owned by a visible account, or paying for the account
SELECT is(pg_temp.rows('tco_t_admin1', 'benefit', $$owner_account_id || ' ' || kind$$),
          '{"102 coupon","102 voucher","103 coupon","105 stored_value_card"}', 'org admin sees its members'' benefits');
SELECT is(pg_temp.rows('tco_t_manager', 'benefit', $$owner_account_id || ' ' || kind$$),
          '{"102 coupon","102 voucher","103 coupon"}', 'manager sees its own and its managed members'' benefits');
SELECT is(pg_temp.rows('tco_t_managed', 'benefit', $$owner_account_id || ' ' || kind$$),
          '{"102 voucher","103 coupon"}', 'managed member sees its coupon and its manager''s voucher that pays for it, not the manager''s coupon');
SELECT is(pg_temp.rows('tco_t_selfpay', 'benefit', $$owner_account_id || ' ' || kind$$),
          '{"105 stored_value_card"}', 'self-pay member sees its own benefit');
SELECT is(pg_temp.rows('tco_t_admin2', 'benefit', $$owner_account_id || ' ' || kind$$),
          '{"201 voucher","202 coupon"}', 'admin of org 2 sees org 2''s benefits only');
SELECT is(pg_temp.rows('tco_t_unmapped', 'benefit', 'owner_account_id'), '{}', 'unmapped reader sees no benefit');

-- contract discounts: of visible accounts and of their entities
SELECT is(pg_temp.rows('tco_t_admin1', 'contract_discount', $$coalesce('a' || account_id, 'e' || entity_id)$$),
          '{a105,e1}', 'org admin sees its members'' and its entity''s discounts');
SELECT is(pg_temp.rows('tco_t_manager', 'contract_discount', $$coalesce('a' || account_id, 'e' || entity_id)$$),
          '{e1}', 'manager sees its entity''s discount');
SELECT is(pg_temp.rows('tco_t_selfpay', 'contract_discount', $$coalesce('a' || account_id, 'e' || entity_id)$$),
          '{a105,e1}', 'self-pay member sees its own and its entity''s discount');
SELECT is(pg_temp.rows('tco_t_admin2', 'contract_discount', $$coalesce('a' || account_id, 'e' || entity_id)$$),
          '{a202,e2}', 'admin of org 2 sees org 2''s discounts only');
SELECT is(pg_temp.rows('tco_t_unmapped', 'contract_discount', 'discount_id'), '{}', 'unmapped reader sees no discount');

-- readers cannot write settlement data, settle, pay or grant
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_admin1', 'INSERT INTO tco.statement (payer_account_id, cycle) VALUES (101, ''2024-05'')')$$,
                 '42501', NULL, 'reader cannot INSERT statements');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_admin1', 'UPDATE tco.statement SET paid_at = now()')$$,
                 '42501', NULL, 'reader cannot UPDATE statements (mark them paid)');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'DELETE FROM tco.statement')$$, '42501', NULL, 'reader cannot DELETE statements');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'UPDATE tco.statement_line SET due_amount = 0, list_amount = discount_amount + benefit_amount')$$,
                 '42501', NULL, 'reader cannot UPDATE statement lines');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'DELETE FROM tco.statement_line')$$, '42501', NULL, 'reader cannot DELETE statement lines');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_admin1', 'INSERT INTO tco.settled_cycle (cycle) VALUES (''2024-05'')')$$,
                 '42501', NULL, 'reader cannot INSERT settled cycles');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'UPDATE tco.benefit SET balance = initial_amount')$$, '42501', NULL, 'reader cannot refill benefits');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_selfpay', 'UPDATE tco.contract_discount SET rate = 0.9')$$, '42501', NULL, 'reader cannot change discounts');
SELECT ok(NOT has_table_privilege('tco_reader', 'tco.settlement_by_member', 'INSERT, UPDATE, DELETE'), 'tco_reader has no write privilege on the views');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'SELECT tco.pay_statement(statement_id) FROM tco.statement')$$,
                 '42501', NULL, 'reader cannot pay_statement');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_admin1', 'SELECT tco.settle_cycle(''2024-04'')')$$, '42501', NULL, 'reader cannot settle_cycle');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'SELECT tco.grant_voucher(102, 100, ''2025-01-01'')')$$, '42501', NULL, 'reader cannot grant_voucher');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'SELECT tco.grant_coupon(102, 100, ''2025-01-01'')')$$, '42501', NULL, 'reader cannot grant_coupon');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'SELECT tco.grant_stored_value_card(102, 100, ''2025-01-01'')')$$, '42501', NULL, 'reader cannot grant_stored_value_card');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'SELECT tco.grant_benefit(''voucher'', 102, 100, ''-infinity'', ''2025-01-01'')')$$, '42501', NULL, 'reader cannot grant_benefit');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_admin1', 'SELECT tco.set_contract_discount(101, NULL, 0.5, NULL, ''2025-01-01'')')$$, '42501', NULL, 'reader cannot set_contract_discount');

-- even with table privileges granted by mistake, a reader writes nothing:
-- the writer guard refuses it before any trigger runs (no trigger message
-- can name another organization's rows), and RLS has no write policy
GRANT UPDATE, DELETE ON tco.statement, tco.benefit TO tco_t_manager;
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'UPDATE tco.statement SET paid_at = now()')$$,
                 '42501', 'permission denied to write table tco.statement', 'UPDATE privilege alone marks no statement paid');
SELECT throws_ok($$SELECT pg_temp.do_as('tco_t_manager', 'UPDATE tco.benefit SET balance = initial_amount')$$,
                 '42501', 'permission denied to write table tco.benefit', 'UPDATE privilege alone refills no benefit');
SELECT is((SELECT count(*) FROM tco.statement WHERE paid_at IS NOT NULL), 0::bigint, 'no statement was marked paid');

-- tco_admin pays under row-level security
SELECT is(pg_temp.do_as('tco_t_ops', 'SELECT tco.pay_statement(statement_id) FROM tco.statement WHERE payer_account_id = 102'),
          1::bigint, 'tco_admin pays a statement');
SELECT is((SELECT count(*) FROM tco.bill_line WHERE paid_at IS NOT NULL), 3::bigint, 'the manager''s statement paid its 3 lines');

-- an ended trusteeship: the former managed member no longer sees the former
-- manager's voucher; still no statement of its own for 2024-02
UPDATE tco.trusteeship SET ended_at = now() - interval '1 second' WHERE member_account_id = 103;
SELECT is(pg_temp.rows('tco_t_managed', 'benefit', $$owner_account_id || ' ' || kind$$),
          '{"103 coupon"}', 'a former managed member no longer sees its former manager''s voucher');

-- an account that changes organization leaves its settled history behind:
-- its statements were settled in organization 1, and stay organization 1's
UPDATE tco.trusteeship SET ended_at = now() - interval '1 second' WHERE member_account_id = 104;
SELECT tco.remove_member(105);
SELECT tco.add_member(2, 105);
SELECT is(pg_temp.rows('tco_t_admin1', 'statement', 'payer_account_id'), '{101,102,105}', 'the old organization''s admin keeps seeing the statements settled in it');
SELECT is(pg_temp.rows('tco_t_admin2', 'statement', 'payer_account_id'), '{201,202,202}', 'the new organization''s admin does not see a newcomer''s old statements');
SELECT is(pg_temp.rows('tco_t_selfpay', 'statement', 'payer_account_id'), '{105}', 'the payer itself still sees its own statements');

SELECT * FROM finish();
ROLLBACK;
