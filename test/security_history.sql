-- Settled history stays with the organization it was settled in (README
-- "Roles and what each sees", issue: "an account that changes organization
-- carries the old organization's data with it").  A manager and a managed
-- member of organization 1, with an organization-1 pool voucher shared with
-- the member, settle a cycle; then both move to organization 2.  Organization
-- 2's admin must see none of organization 1's statements, statement lines,
-- settled lines, benefit uses, invoices, pool vouchers or shares; organization
-- 1's admin keeps seeing them; the payer keeps seeing its own statements.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SET timezone = 'UTC';
SELECT plan(26);

\ir fixtures/access.inc
CREATE ROLE tco_t_managed_b;
GRANT tco_reader TO tco_t_managed_b;
INSERT INTO tco.account_login (role_name, account_id) VALUES ('tco_t_managed_b', 104);

-- 2024-02: one line of 10.00 for the manager and each managed member
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    SELECT a, 'cvm', '2024-02-01 10:00', '2024-02-01 11:00', 10, '2024-02-01 11:00'
      FROM unnest(ARRAY[102, 103, 104, 201]) a;
-- the manager's own voucher, and an organization-1 pool voucher shared with 104
SELECT tco.grant_voucher(102, 3, '2025-01-01');
SELECT tco.fund_voucher_pool(1, 100);
SELECT tco.share_benefit(tco.issue_pool_voucher(1, 4, '-infinity', '2025-01-01'), 104, NULL, '2024-01-15');
SELECT is((SELECT statements FROM tco.settle_cycle('2024-02')), 2::bigint, 'two statements: the manager''s and 201''s');
SELECT tco.pay_statement(statement_id) FROM tco.statement WHERE payer_account_id = 102;
SELECT tco.issue_invoice(statement_id) FROM tco.statement WHERE payer_account_id = 102;

CREATE TEMP TABLE rel (name text, q text);
INSERT INTO rel VALUES
    ('statement',      'SELECT count(*) FROM tco.statement WHERE payer_account_id = 102'),
    ('statement_line', 'SELECT count(*) FROM tco.statement_line sl WHERE sl.account_id IN (102, 103, 104)'),
    ('settled_line',   'SELECT count(*) FROM tco.settled_line WHERE payer_account_id = 102'),
    ('benefit_use',    'SELECT count(*) FROM tco.benefit_use'),
    ('invoice',        'SELECT count(*) FROM tco.invoice'),
    ('invoice_line',   'SELECT count(*) FROM tco.invoice_line'),
    ('pool voucher',   'SELECT count(*) FROM tco.benefit WHERE pool_org_id = 1'),
    ('benefit_share',  'SELECT count(*) FROM tco.benefit_share');
CREATE FUNCTION pg_temp.seen(r name) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(name || '=' || pg_temp.n_as(r, q), ' ' ORDER BY name) FROM pg_temp.rel
$$;

SELECT is(pg_temp.seen('tco_t_admin1'),
          'benefit_share=1 benefit_use=2 invoice=1 invoice_line=3 pool voucher=1 settled_line=3 statement=1 statement_line=3',
          'before the move, organization 1''s admin sees its settled history');
SELECT is(pg_temp.seen('tco_t_admin2'),
          'benefit_share=0 benefit_use=0 invoice=0 invoice_line=0 pool voucher=0 settled_line=0 statement=0 statement_line=0',
          'before the move, organization 2''s admin sees none of it');
SELECT is(pg_temp.n_as('tco_t_managed_b', 'SELECT count(*) FROM tco.benefit_share'), 1::bigint,
          'the member sees the share made to it');

-- the trusteeships end; the manager and a managed member move to organization 2
UPDATE tco.trusteeship SET ended_at = now() - interval '1 second';
SELECT tco.remove_member(a) FROM unnest(ARRAY[102, 104]) a;
SELECT tco.add_member(2, a) FROM unnest(ARRAY[102, 104]) a;

SELECT is(pg_temp.seen('tco_t_admin2'),
          'benefit_share=0 benefit_use=0 invoice=0 invoice_line=0 pool voucher=0 settled_line=0 statement=0 statement_line=0',
          'after the move, organization 2''s admin still sees none of organization 1''s history');
SELECT is(pg_temp.seen('tco_t_admin1'),
          'benefit_share=1 benefit_use=2 invoice=1 invoice_line=3 pool voucher=1 settled_line=3 statement=1 statement_line=3',
          'organization 1''s admin keeps its settled history');
SELECT is(pg_temp.n_as('tco_t_manager', 'SELECT count(*) FROM tco.statement'), 1::bigint,
          'the payer still sees its own statement');
SELECT is(pg_temp.n_as('tco_t_manager', 'SELECT count(*) FROM tco.statement_line'), 3::bigint,
          'with its lines');
SELECT is(pg_temp.n_as('tco_t_managed_b', 'SELECT count(*) FROM tco.benefit_share'), 0::bigint,
          'the member that left no longer sees organization 1''s share');
SELECT is(pg_temp.n_as('tco_t_managed_b', 'SELECT count(*) FROM tco.benefit WHERE pool_org_id = 1'), 0::bigint,
          'nor its pool voucher');

-- The same through every other door a reader has: the BI views and the
-- settled_cycle rows of organization 1.
SELECT is(pg_temp.n_as('tco_t_admin2', 'SELECT count(*) FROM tco.settlement_by_payer WHERE payer_account_id = 102'), 0::bigint,
          'settlement_by_payer: nothing of organization 1 for organization 2''s admin');
SELECT is(pg_temp.n_as('tco_t_admin2', 'SELECT count(*) FROM tco.settlement_by_member WHERE account_id IN (102, 103, 104)'), 0::bigint,
          'settlement_by_member: nothing of organization 1');
SELECT is(pg_temp.n_as('tco_t_admin1', 'SELECT count(*) FROM tco.settlement_by_member WHERE account_id IN (102, 103, 104)'), 3::bigint,
          'settlement_by_member: organization 1''s admin still sees the three members'' lines');

-- Consumption of the movers settled after the move is organization 2's
-- (the trusteeship ended only now, so 102 still pays 104's line of 2024-04).
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    SELECT a, 'cvm', '2024-04-01 10:00', '2024-04-01 11:00', 10, '2024-04-01 11:00' FROM unnest(ARRAY[102, 104]) a;
SELECT is((SELECT statements FROM tco.settle_cycle('2024-04')), 1::bigint, 'one statement in 2024-04: the manager''s');
SELECT is(pg_temp.n_as('tco_t_admin2', 'SELECT count(*) FROM tco.statement WHERE cycle::text = ''2024-04'''), 1::bigint,
          'organization 2''s admin sees what was settled in organization 2');
SELECT is(pg_temp.n_as('tco_t_admin1', 'SELECT count(*) FROM tco.statement WHERE cycle::text = ''2024-04'''), 0::bigint,
          'organization 1''s admin does not');
SELECT is(pg_temp.n_as('tco_t_admin2', 'SELECT count(*) FROM tco.statement_line sl JOIN tco.statement s USING (statement_id) WHERE s.cycle::text = ''2024-04'''), 2::bigint,
          'and their lines');

-- A statement whose organization is gone from the reader's reach is not
-- reachable through a join on a visible table either.
SELECT is(pg_temp.n_as('tco_t_admin2', $$SELECT count(*) FROM tco.account a JOIN tco.statement s ON s.payer_account_id = a.account_id WHERE s.cycle::text = '2024-02'$$), 1::bigint,
          'joining visible accounts to statements shows only organization 2''s 2024-02 statement (201)');
SELECT is(pg_temp.n_as('tco_t_admin2', $$SELECT count(*) FROM tco.account a WHERE a.account_id IN (102, 104)$$), 2::bigint,
          'the movers'' account rows are organization 2''s now');

-- invoices follow their statements
SELECT is(pg_temp.n_as('tco_t_manager', 'SELECT count(*) FROM tco.invoice'), 1::bigint, 'the payer sees its invoice');
SELECT is(pg_temp.n_as('tco_t_admin2', 'SELECT count(*) FROM tco.invoice_line'), 0::bigint, 'organization 2''s admin sees no invoice line of organization 1');

-- alerts: a reader learns channel names only for the accounts whose alerts
-- it may read, and a mover gets a new channel name
SELECT is(pg_temp.n_as('tco_t_admin2', 'SELECT count(*) FROM tco.alert_channels() WHERE account_id IN (102, 104)'), 2::bigint,
          'organization 2''s admin may listen for its new members'' alerts');
SELECT is(pg_temp.n_as('tco_t_admin1', 'SELECT count(*) FROM tco.alert_channels() WHERE account_id IN (102, 104)'), 0::bigint,
          'organization 1''s admin no longer learns their channels');
CREATE TEMP TABLE ch AS SELECT channel FROM tco.alert_channel WHERE account_id = 104;
SELECT tco.remove_member(104);
SELECT tco.add_member(1, 104);
SELECT is((SELECT count(*) FROM tco.alert_channel c JOIN pg_temp.ch USING (channel)), 0::bigint,
          'a member that changes organization gets a new channel name');
SELECT is(pg_temp.n_as('tco_t_admin2', 'SELECT count(*) FROM tco.alert_channels() WHERE account_id = 104'), 0::bigint,
          'and the organization it left no longer learns it');
SELECT is(pg_temp.n_as('tco_t_unmapped', 'SELECT count(*) FROM tco.alert_channels()'), 0::bigint,
          'an unmapped reader learns no channel');

SELECT * FROM finish();
ROLLBACK;
