-- The FOCUS export (README "FOCUS"): tco.focus_cost_and_usage has the FOCUS
-- 1.2 columns tco can fill, named and typed as the specification says, one
-- row per settled line, and the specification's own rules hold on real
-- settlement data (discounts, coupons, vouchers, a resource pack, a savings
-- plan, a managed member, prepaid orders, invoices, tags).  Also: tags are
-- validated, and tco.showback_by_tag sums exactly.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SET timezone = 'UTC';
SELECT plan(30);

\ir fixtures/access.inc
INSERT INTO tco.product (product_code, granularity) VALUES ('cos', 'day');
-- 2024-02: lines of every account, some prepaid, some tagged
INSERT INTO tco.bill_line (account_id, product_code, charge_type, period_start, period_end, list_amount, issued_at, tags)
SELECT a, p, CASE WHEN g % 5 = 0 THEN 'prepaid' ELSE 'postpaid' END::tco.charge_type,
       timestamptz '2024-02-01 00:00' + g * interval '1 hour', timestamptz '2024-02-01 01:00' + g * interval '1 hour',
       round((1 + (a * 7 + g * 13) % 17) * 0.333333, 6), timestamptz '2024-02-01 01:00' + g * interval '1 hour',
       CASE g % 3 WHEN 0 THEN '{"team": "data", "env": "prod"}' WHEN 1 THEN '{"team": "web"}' ELSE '{}' END::jsonb
  FROM unnest(ARRAY[101, 102, 103, 104, 105, 201, 202]) a, unnest(ARRAY['cvm', 'cos']) p, generate_series(0, 9) g;
SELECT tco.set_contract_discount(105, NULL, 0.10, NULL, '2024-01-01');
SELECT tco.set_contract_discount(NULL, 2, 0.07, NULL, '2024-01-01');
SELECT tco.grant_coupon(102, 1.5, '2025-01-01'), tco.grant_voucher(201, 2, '2025-01-01');
SELECT tco.grant_resource_pack(105, 'cos', 3.00, '-infinity', '2025-01-01') AS pack \gset
SELECT tco.grant_savings_plan(202, 0.20, 0.25, '2024-01-01', '2025-01-01', 'cvm') AS plan \gset
SELECT tco.settle_cycle('2024-02');
SELECT tco.pay_statement(statement_id) FROM tco.statement;
SELECT tco.issue_invoice(statement_id) FROM tco.statement WHERE due_total > 0;

-- columns, named and typed as FOCUS 1.2 says
SELECT is(array(SELECT c || ' ' || coalesce(format_type(a.atttypid, NULL), 'MISSING')
                  FROM unnest(ARRAY['BilledCost', 'EffectiveCost', 'ListCost', 'ContractedCost']) c
                  LEFT JOIN pg_attribute a ON a.attrelid = 'tco.focus_cost_and_usage'::regclass AND a.attname = c
                 WHERE a.atttypid IS DISTINCT FROM 'numeric'::regtype),
          '{}', 'the four cost columns are numeric (exact)');
SELECT is(array(SELECT c || ' ' || coalesce(format_type(a.atttypid, NULL), 'MISSING')
                  FROM unnest(ARRAY['BillingPeriodStart', 'BillingPeriodEnd', 'ChargePeriodStart', 'ChargePeriodEnd']) c
                  LEFT JOIN pg_attribute a ON a.attrelid = 'tco.focus_cost_and_usage'::regclass AND a.attname = c
                 WHERE a.atttypid IS DISTINCT FROM 'timestamptz'::regtype),
          '{}', 'the four period columns are date-times');
SELECT is(array(SELECT c || ' ' || coalesce(format_type(a.atttypid, NULL), 'MISSING')
                  FROM unnest(ARRAY['BillingAccountId', 'BillingAccountName', 'BillingAccountType', 'SubAccountId',
                                    'SubAccountName', 'SubAccountType', 'ChargeCategory', 'ChargeClass',
                                    'ChargeDescription', 'ChargeFrequency', 'ServiceName', 'ServiceCategory',
                                    'BillingCurrency', 'InvoiceIssuerName', 'ProviderName', 'PublisherName',
                                    'PricingUnit', 'CommitmentDiscountId', 'CommitmentDiscountCategory',
                                    'CommitmentDiscountStatus', 'CommitmentDiscountType', 'InvoiceId']) c
                  LEFT JOIN pg_attribute a ON a.attrelid = 'tco.focus_cost_and_usage'::regclass AND a.attname = c
                 WHERE a.atttypid IS DISTINCT FROM 'text'::regtype),
          '{}', 'the string columns are text');
SELECT is((SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = 'tco.focus_cost_and_usage'::regclass AND attname = 'Tags'),
          'jsonb', 'Tags is JSON');
SELECT is(array(SELECT attname::text FROM pg_attribute
                 WHERE attrelid = 'tco.focus_cost_and_usage'::regclass AND attnum > 0
                   AND attname !~ '^x_[A-Z]' AND attname !~ '^[A-Z][A-Za-z]+$'),
          '{}', 'every column is a FOCUS name or an x_ extra');

CREATE TEMP TABLE f AS SELECT * FROM tco.focus_cost_and_usage;
-- one row per settled line
SELECT is((SELECT count(*) FROM f), (SELECT count(*) FROM tco.bill_line), 'one row per settled bill line');
SELECT is((SELECT count(DISTINCT "x_LineId") FROM f), (SELECT count(*) FROM f), 'no line twice');
-- the specification's rules
SELECT is((SELECT count(*) FROM f WHERE NOT ("ChargePeriodStart" < "ChargePeriodEnd")), 0::bigint, 'ChargePeriodStart < ChargePeriodEnd');
SELECT is((SELECT count(*) FROM f WHERE NOT ("BillingPeriodStart" < "BillingPeriodEnd")), 0::bigint, 'BillingPeriodStart < BillingPeriodEnd');
SELECT is((SELECT count(*) FROM f WHERE NOT ("ChargePeriodStart" >= "BillingPeriodStart" AND "ChargePeriodStart" < "BillingPeriodEnd")),
          0::bigint, 'every charge starts in its billing period');
SELECT is((SELECT count(*) FROM f WHERE "BilledCost" IS NULL OR "EffectiveCost" IS NULL OR "ListCost" IS NULL OR "ContractedCost" IS NULL
                                   OR "BillingAccountId" IS NULL OR "SubAccountId" IS NULL OR "ChargeCategory" IS NULL
                                   OR "BillingCurrency" IS NULL OR "ProviderName" IS NULL OR "InvoiceIssuerName" IS NULL
                                   OR "ServiceName" IS NULL OR "ChargeDescription" IS NULL),
          0::bigint, 'the mandatory columns are never NULL');
SELECT is(array(SELECT i.invoice_id || ': ' || round(sum(f."BilledCost"), 2) || ' <> ' || i.amount
                  FROM tco.invoice i JOIN f ON f."InvoiceId" = i.invoice_id::text
                 GROUP BY i.invoice_id, i.amount HAVING round(sum(f."BilledCost"), 2) <> i.amount),
          '{}', 'BilledCost summed per InvoiceId is the invoice amount');
SELECT cmp_ok((SELECT count(*) FROM tco.invoice), '>', 3::bigint, 'several invoices were checked');
SELECT is(array(SELECT s.statement_id FROM tco.statement s JOIN f ON f."x_StatementId" = s.statement_id
                 GROUP BY s.statement_id, s.due_total, s.list_total
                HAVING round(sum(f."BilledCost"), 2) <> s.due_total OR round(sum(f."ListCost"), 2) <> s.list_total),
          '{}', 'per statement, BilledCost and ListCost sum to its totals');
SELECT is((SELECT count(*) FROM f WHERE "ListCost" <> "ContractedCost" + "x_DiscountAmount"
                                     OR "ContractedCost" <> "BilledCost" + "x_BenefitAmount"),
          0::bigint, 'ListCost = ContractedCost + discount, ContractedCost = BilledCost + benefits, exactly');
SELECT is((SELECT count(*) FROM f WHERE "EffectiveCost" < "BilledCost" OR "EffectiveCost" > "ContractedCost"), 0::bigint,
          'BilledCost <= EffectiveCost <= ContractedCost');
SELECT is((SELECT count(*) FROM f WHERE "ChargeCategory" = 'Usage'
                                     AND ("CommitmentDiscountId" IS NULL) <> ("EffectiveCost" = "BilledCost")), 0::bigint,
          'EffectiveCost differs from BilledCost exactly where a commitment covered the line');
SELECT is(array(SELECT DISTINCT "CommitmentDiscountId" || ' ' || "CommitmentDiscountCategory" || ' ' || "CommitmentDiscountType" || ' ' || "CommitmentDiscountStatus"
                  FROM f WHERE "CommitmentDiscountId" IS NOT NULL AND "ChargeCategory" = 'Usage' ORDER BY 1),
          ARRAY[:'pack' || ' Usage Resource Pack Used', :'plan' || ' Spend Savings Plan Used'],
          'the resource pack and the savings plan appear as commitment discounts');
-- the savings plan's fee, billed by settlement (README "After a cycle closes")
SELECT is(array(SELECT "CommitmentDiscountId" || ' ' || "ChargeCategory" || ' ' || "ChargeFrequency" || ' ' || "CommitmentDiscountType"
                  || ' ' || coalesce("CommitmentDiscountStatus", '-') || ' ' || ("EffectiveCost" = "BilledCost")
                  FROM f WHERE "ServiceName" LIKE 'tco:%' ORDER BY 1),
          ARRAY[:'plan' || ' Purchase Recurring Savings Plan - true'],
          'the savings plan''s fee is a Purchase of the plan, once');
SELECT is((SELECT sum("EffectiveCost" - "BilledCost") FROM f),
          (SELECT sum(amount) FROM tco.benefit_use u JOIN tco.benefit b USING (benefit_id) WHERE b.kind IN ('resource_pack', 'savings_plan')),
          'what commitments covered is exactly EffectiveCost - BilledCost');
SELECT is((SELECT array_agg(DISTINCT "ChargeCategory" || '/' || "ChargeFrequency" ORDER BY "ChargeCategory" || '/' || "ChargeFrequency") FROM f),
          '{Purchase/One-Time,Purchase/Recurring,Usage/Usage-Based}', 'Usage for postpaid lines, Purchase for prepaid orders and commitment fees');
SELECT is((SELECT count(*) FROM f JOIN tco.bill_line b ON b.line_id = f."x_LineId"
            WHERE ("ChargeCategory" = 'Purchase') <> (b.charge_type = 'prepaid')), 0::bigint, 'and exactly those');
SELECT is((SELECT array_agg(DISTINCT "BillingAccountId" ORDER BY "BillingAccountId") FROM f WHERE "SubAccountId" IN ('103', '104')),
          '{102}', 'a managed member''s lines are billed to its manager (BillingAccount = payer, SubAccount = consumer)');
SELECT is((SELECT array_agg(DISTINCT "BillingCurrency") FROM f), '{USD}', 'BillingCurrency defaults to USD');
INSERT INTO tco.config (billing_currency, provider_name) VALUES ('EUR', 'Example Cloud')
    ON CONFLICT (singleton) DO UPDATE SET billing_currency = EXCLUDED.billing_currency, provider_name = EXCLUDED.provider_name;
SELECT is((SELECT array_agg(DISTINCT "BillingCurrency" || ' ' || "ProviderName") FROM tco.focus_cost_and_usage),
          '{"EUR Example Cloud"}', 'and follows tco.config');

-- tags: validated as an object of strings, summed exactly by showback_by_tag
SELECT throws_ok($$INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, tags)
                   VALUES (101, 'cvm', '2024-04-01', '2024-04-01 01:00', 1, '["team"]')$$, '23514', NULL, 'tags must be an object');
SELECT throws_ok($$INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, tags)
                   VALUES (101, 'cvm', '2024-04-01', '2024-04-01 01:00', 1, '{"cost_center": 42}')$$, '23514', NULL, 'tag values must be strings');
SELECT is(array(SELECT tag_key || '=' || tag_value || ' ' || due_total FROM tco.showback_by_tag WHERE cycle = '2024-02' ORDER BY 1),
          array(SELECT t.key || '=' || t.value || ' ' || sum(f."BilledCost") FROM f, jsonb_each_text(f."Tags") t GROUP BY t.key, t.value ORDER BY 1),
          'showback by tag: the exact sums of the tagged lines');
SELECT is((SELECT sum(due_total) FROM tco.showback_by_tag WHERE cycle = '2024-02' AND tag_key = 'team'),
          (SELECT sum("BilledCost") FROM f WHERE "Tags" ? 'team'), 'a key''s values add up to its lines');

-- a reader exports only what it may see
CREATE FUNCTION pg_temp.payers_as(r name) RETURNS text LANGUAGE plpgsql AS $$
DECLARE v text;
BEGIN
    EXECUTE format('SET ROLE %I', r);
    SELECT string_agg(DISTINCT "BillingAccountId", ',' ORDER BY "BillingAccountId") INTO v FROM tco.focus_cost_and_usage;
    RESET ROLE;
    RETURN v;
END $$;
SELECT is(pg_temp.payers_as('tco_t_admin2'), '201,202', 'organization 2''s admin exports organization 2''s lines only');

SELECT * FROM finish();
ROLLBACK;
