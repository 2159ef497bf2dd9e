-- The terms every benefit grant checks (tco.require_benefit_terms): amount,
-- validity and product, through each of tco.grant_benefit (and its coupon /
-- voucher / stored-value-card wrappers), tco.issue_pool_voucher,
-- tco.grant_resource_pack and tco.grant_savings_plan.  SQLSTATE, message and
-- hint are compared exactly: they are the texts each function raised before
-- the checks were shared.  The helper itself is internal (not executable by
-- PUBLIC or tco_reader).
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET LOCAL timezone = 'UTC';
SELECT plan(43);

INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Terms', true);
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES (201, 'admin', 1, 100);
SELECT tco.create_organization(201, 'Terms Org') AS org \gset
INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour');
SELECT tco.fund_voucher_pool(:org, 100000.00);

-- 'ok', or the error as SQLSTATE | message | hint
CREATE FUNCTION pg_temp.outcome(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; hint text;
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ' | ' || msg || ' | ' || hint;
END $$;

CREATE TEMP TABLE cases (n serial, stmt text, expected text) ON COMMIT DROP;
INSERT INTO cases (stmt, expected) VALUES
-- grant_benefit
($$SELECT tco.grant_benefit('voucher', 201, 0, '-infinity', 'infinity')$$,
 '22023 | benefit amount 0 must be positive, below 1e12 and have at most 2 decimals | Grant an amount such as 100.00.'),
($$SELECT tco.grant_benefit('coupon', 201, 'NaN', '-infinity', 'infinity')$$,
 '22023 | benefit amount NaN must be positive, below 1e12 and have at most 2 decimals | Grant an amount such as 100.00.'),
($$SELECT tco.grant_benefit('coupon', 201, 1e12, '-infinity', 'infinity')$$,
 '22023 | benefit amount 1000000000000 must be positive, below 1e12 and have at most 2 decimals | Grant an amount such as 100.00.'),
($$SELECT tco.grant_voucher(201, 1.001, '2024-01-01')$$,
 '22023 | benefit amount 1.001 must be positive, below 1e12 and have at most 2 decimals | Grant an amount such as 100.00.'),
($$SELECT tco.grant_benefit('voucher', 201, 1, '2024-01-01', '2024-01-01')$$,
 '22023 | benefit validity [2024-01-01 00:00:00+00, 2024-01-01 00:00:00+00) is empty | valid_to (the expiry) must be after valid_from.'),
($$SELECT tco.grant_coupon(201, 1, '-infinity')$$,
 '22023 | benefit validity [-infinity, -infinity) is empty | valid_to (the expiry) must be after valid_from.'),
($$SELECT tco.grant_stored_value_card(201, 1, 'infinity', 'nope')$$,
 '23503 | product "nope" does not exist | List products in tco.product, or pass NULL for any product.'),
($$SELECT tco.grant_benefit('voucher', 201, NULL, '-infinity', 'infinity')$$,
 '22004 | argument "amount" must not be NULL | Pass a value for every required argument.'),
($$SELECT tco.grant_benefit('gift', 201, 0, '-infinity', 'infinity')$$,
 '22023 | unknown benefit kind "gift" | Use coupon, voucher or stored_value_card.'),
($$SELECT tco.grant_benefit('voucher', 999, 1, '-infinity', 'infinity', 'nope')$$,
 '23503 | account 999 does not exist | Check the account id: it must exist before it is referenced.'),
($$SELECT tco.grant_benefit('voucher', 201, 999999999999.99, '-infinity', 'infinity', 'cvm')$$, 'ok'),
-- issue_pool_voucher
($$SELECT tco.issue_pool_voucher($$ || :org || $$, 0, '-infinity', 'infinity')$$,
 '22023 | voucher amount 0 must be positive, below 1e12 and have at most 2 decimals | Issue an amount such as 100.00.'),
($$SELECT tco.issue_pool_voucher($$ || :org || $$, 0.001, '-infinity', 'infinity')$$,
 '22023 | voucher amount 0.001 must be positive, below 1e12 and have at most 2 decimals | Issue an amount such as 100.00.'),
($$SELECT tco.issue_pool_voucher($$ || :org || $$, 1, 'infinity', '-infinity')$$,
 '22023 | voucher validity [infinity, -infinity) is empty | valid_to (the expiry) must be after valid_from.'),
($$SELECT tco.issue_pool_voucher($$ || :org || $$, 1, '-infinity', 'infinity', 'nope')$$,
 '23503 | product "nope" does not exist | List products in tco.product, or pass NULL for any product.'),
($$SELECT tco.issue_pool_voucher(999, 0, '-infinity', 'infinity')$$,
 '23503 | organization 999 does not exist | Check the organization id: it must exist before it is referenced.'),
($$SELECT tco.issue_pool_voucher($$ || :org || $$, 1.50, '-infinity', 'infinity', 'cvm')$$, 'ok'),
-- grant_resource_pack
($$SELECT tco.grant_resource_pack(201, 'cvm', -5, '-infinity', 'infinity')$$,
 '22023 | resource pack amount -5 must be positive, below 1e12 and have at most 2 decimals | Grant an amount such as 500.00.'),
($$SELECT tco.grant_resource_pack(201, 'cvm', 2e12, '-infinity', 'infinity')$$,
 '22023 | resource pack amount 2000000000000 must be positive, below 1e12 and have at most 2 decimals | Grant an amount such as 500.00.'),
($$SELECT tco.grant_resource_pack(201, 'cvm', 1, '2024-02-01', '2024-01-01')$$,
 '22023 | resource pack validity [2024-02-01 00:00:00+00, 2024-01-01 00:00:00+00) is empty | valid_to (the expiry) must be after valid_from.'),
($$SELECT tco.grant_resource_pack(201, 'nope', 1, '-infinity', 'infinity')$$,
 '23503 | product "nope" does not exist | A resource pack is for one product listed in tco.product.'),
($$SELECT tco.grant_resource_pack(201, NULL, 1, '-infinity', 'infinity')$$,
 '22004 | argument "product_code" must not be NULL | Pass a value for every required argument.'),
($$SELECT tco.grant_resource_pack(999, 'nope', 0, '-infinity', 'infinity')$$,
 '23503 | account 999 does not exist | Check the account id: it must exist before it is referenced.'),
($$SELECT tco.grant_resource_pack(201, 'cvm', 0.01, '-infinity', 'infinity')$$, 'ok'),
-- grant_savings_plan
($$SELECT tco.grant_savings_plan(201, 0, 0.1, '-infinity', 'infinity')$$,
 '22023 | hourly commitment 0 must be positive, below 1e12 and have at most 2 decimals | Commit an amount per hour such as 10.00.'),
($$SELECT tco.grant_savings_plan(201, 1.005, 0.1, '-infinity', 'infinity')$$,
 '22023 | hourly commitment 1.005 must be positive, below 1e12 and have at most 2 decimals | Commit an amount per hour such as 10.00.'),
($$SELECT tco.grant_savings_plan(201, 1, 0.1, 'infinity', '-infinity')$$,
 '22023 | savings plan validity [infinity, -infinity) is empty | valid_to (the end of the term) must be after valid_from.'),
($$SELECT tco.grant_savings_plan(201, 1, 0.1, '-infinity', 'infinity', 'nope')$$,
 '23503 | product "nope" does not exist | List products in tco.product, or pass NULL for all products.'),
($$SELECT tco.grant_savings_plan(201, 1, 1.0, '-infinity', 'infinity')$$,
 '22023 | savings plan rate 1.0 is not in [0, 1) with at most 6 decimals | A rate of 0.30 makes the hourly fee 70% of the commitment.'),
($$SELECT tco.grant_savings_plan(201, NULL, 0.1, '-infinity', 'infinity')$$,
 '22004 | argument "hourly_commitment" must not be NULL | Pass a value for every required argument.'),
($$SELECT tco.grant_savings_plan(999, 0, 0.1, '-infinity', 'infinity')$$,
 '23503 | account 999 does not exist | Check the account id: it must exist before it is referenced.'),
($$SELECT tco.grant_savings_plan(201, 1.50, 0.3, '2023-01-01', '2024-01-01', 'cvm')$$, 'ok');

SELECT is(pg_temp.outcome(stmt), expected, n || ': ' || stmt) FROM cases ORDER BY n;

-- what the successful calls wrote
SELECT results_eq(
    $$SELECT kind, owner_account_id, product_code, initial_amount, balance, pool_org_id, plan_discount_rate
        FROM tco.benefit ORDER BY benefit_id$$,
    $$VALUES ('voucher'::text, 201::bigint, 'cvm'::text, 999999999999.99::numeric, 999999999999.99::numeric, NULL::bigint, NULL::numeric),
             ('voucher', 201, 'cvm', 1.50, 1.50, $$ || :org || $$, NULL),
             ('resource_pack', 201, 'cvm', 0.01, 0.01, NULL, NULL),
             ('savings_plan', 201, 'cvm', 1.50, 1.50, NULL, 0.3)$$,
    'the valid grants are written with their terms');

-- the helper: internal, STABLE (reads tco.product), search_path pinned
SELECT is((SELECT provolatile FROM pg_proc WHERE oid = 'tco.require_benefit_terms(text, numeric, timestamptz, timestamptz, text)'::regprocedure),
          's'::"char", 'require_benefit_terms is STABLE');
SELECT is((SELECT prosecdef FROM pg_proc WHERE oid = 'tco.require_benefit_terms(text, numeric, timestamptz, timestamptz, text)'::regprocedure),
          false, 'require_benefit_terms is SECURITY INVOKER');
SELECT ok((SELECT proconfig @> ARRAY['search_path=pg_catalog, pg_temp'] FROM pg_proc
           WHERE oid = 'tco.require_benefit_terms(text, numeric, timestamptz, timestamptz, text)'::regprocedure),
          'require_benefit_terms pins search_path');
SELECT ok(NOT has_function_privilege('public', 'tco.require_benefit_terms(text, numeric, timestamptz, timestamptz, text)', 'EXECUTE'),
          'PUBLIC may not execute require_benefit_terms');
SELECT ok(NOT has_function_privilege('tco_reader', 'tco.require_benefit_terms(text, numeric, timestamptz, timestamptz, text)', 'EXECUTE'),
          'tco_reader may not execute require_benefit_terms');
SELECT ok(has_function_privilege('tco_admin', 'tco.require_benefit_terms(text, numeric, timestamptz, timestamptz, text)', 'EXECUTE'),
          'tco_admin may execute require_benefit_terms');
SELECT is((SELECT proacl FROM pg_proc WHERE oid = 'tco.require_benefit_terms(text, numeric, timestamptz, timestamptz, text)'::regprocedure)::text,
          (SELECT proacl FROM pg_proc WHERE oid = 'tco.require_amount(numeric, text)'::regprocedure)::text,
          'require_benefit_terms has the privileges of require_amount');
SELECT isnt(obj_description('tco.require_benefit_terms(text, numeric, timestamptz, timestamptz, text)'::regprocedure, 'pg_proc'),
            NULL, 'require_benefit_terms has a comment');
SELECT lives_ok($$SELECT tco.require_benefit_terms('benefit', 0.01, '-infinity', 'infinity', NULL)$$,
                'the helper accepts the smallest amount, an unbounded window and any product');
SELECT throws_ok($$SELECT tco.require_benefit_terms('benefit', 1, now(), now(), NULL)$$,
                 '22023', NULL, 'the helper refuses an empty window');

SELECT * FROM finish();
ROLLBACK;
