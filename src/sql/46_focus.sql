-- FOCUS export and tag showback (README "FOCUS", "Tags and showback").
--
-- tco.focus_cost_and_usage: one row per settled bill line, with the columns
-- of the FinOps Open Cost and Usage Specification (FOCUS) 1.2 that tco's
-- data can fill, named as the specification names them (quoted PascalCase),
-- and tco's own extras with the x_ prefix the specification reserves.
--   BillingAccount  = the payer of the line (whose statement carries it);
--   SubAccount      = the consuming account;
--   BillingPeriod   = the billing cycle [start, end) in the billing time zone;
--   ChargePeriod    = the line's period [period_start, period_end);
--   ChargeCategory  = 'Usage' for postpaid lines, 'Purchase' for prepaid
--                     orders and the commitment fees settlement bills
--                     (ChargeFrequency 'Usage-Based' / 'One-Time', 'Recurring'
--                     for a savings plan's fee; CommitmentDiscountId is the
--                     commitment, 41_late.sql);
--   ChargeClass     = 'Correction' for a late line (billed on a later cycle
--                     than its charge period: BillingPeriod is the billing
--                     cycle, ChargePeriod its own period) and a correction
--                     line, else NULL;
--   ListCost        = list amount;
--   ContractedCost  = list - contract discount;
--   BilledCost      = what the payer is invoiced for the line: list -
--                     discount - every benefit (coupons, vouchers,
--                     stored-value cards, resource packs, savings plans);
--   EffectiveCost   = BilledCost + what commitments (resource packs and
--                     savings plans) covered: the amortized cost of the line,
--                     since a commitment is paid for by its purchase, while
--                     coupons, vouchers and cards are credits;
--   CommitmentDiscount* = the resource pack or savings plan that covered
--                     most of the line (Category 'Usage' for a pack of a
--                     product amount, 'Spend' for a savings plan), NULL if none;
--   InvoiceId       = the valid invoice of the line's statement (NULL until
--                     issued; a voided one is not named);
--   Tags            = the line's tags (tco.bill_line.tags).
-- Money is exact (numeric, 6 decimals); BilledCost summed per InvoiceId and
-- rounded half-up to 2 decimals is the invoice amount.  Costs are in
-- BillingCurrency, tco.billing_currency() (tco.config; default USD).  The view runs
-- with the caller's rights: a reader exports what it may see.

CREATE VIEW tco.focus_cost_and_usage WITH (security_invoker = true) AS
WITH line AS (
    SELECT p.pack_id, p.statement_id, p.payer_account_id, p.account_id, p.product_code, p.cycle,
           s.cycle AS billing_cycle, tco.cycle_range(s.cycle) AS period, u.line_id, u.li, d.di, d.be, d.src, d.did
    FROM tco.settled_pack p
    JOIN tco.statement s ON s.statement_id = p.statement_id
    CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_rates, p.discount_sources, p.discount_ids,
                              p.discount_amounts, p.benefit_amounts) AS u(line_id, li, rate, src, did, di, be)
    -- a pack's compact arrays (tco.settled_line)
    CROSS JOIN LATERAL (SELECT coalesce(u.rate, p.discount_rates[1]) AS rate, coalesce(u.src, p.discount_sources[1]) AS src,
                               coalesce(u.did, p.discount_ids[1]) AS did, coalesce(u.be, p.benefit_amounts[1]) AS be) k
    CROSS JOIN LATERAL (SELECT k.rate, k.src, k.did, k.be,
                               coalesce(u.di, round(u.li::numeric * k.rate * 0.000001)::bigint) AS di) d
), commitment AS (
    -- per line: what resource packs and savings plans covered, and the one
    -- that covered most (lowest id on a tie)
    SELECT DISTINCT ON (u.line_id) u.line_id, b.benefit_id, b.kind,
           sum(u.a) OVER (PARTITION BY u.line_id) AS covered
    FROM tco.settled_pack p
    CROSS JOIN LATERAL unnest(p.use_benefit_ids, p.use_line_ids, p.use_amounts) AS u(benefit_id, line_id, a)
    JOIN tco.benefit b ON b.benefit_id = u.benefit_id AND b.kind IN ('resource_pack', 'savings_plan')
    ORDER BY u.line_id, u.a DESC, b.benefit_id
), cfg AS MATERIALIZED (
    SELECT tco.billing_currency() AS currency, tco.provider_name() AS provider
)
SELECT
    ((l.li - l.di - l.be) * 0.000001)::numeric(20,6)                        AS "BilledCost",
    ((l.li - l.di - l.be + coalesce(c.covered, 0)) * 0.000001)::numeric(20,6) AS "EffectiveCost",
    (l.li * 0.000001)::numeric(20,6)                                         AS "ListCost",
    ((l.li - l.di) * 0.000001)::numeric(20,6)                                AS "ContractedCost",
    l.payer_account_id::text                                                 AS "BillingAccountId",
    pa.name                                                                  AS "BillingAccountName",
    'Payer account'::text                                                    AS "BillingAccountType",
    l.account_id::text                                                       AS "SubAccountId",
    sa.name                                                                  AS "SubAccountName",
    'Member account'::text                                                   AS "SubAccountType",
    pg_catalog.lower(l.period)                                               AS "BillingPeriodStart",
    pg_catalog.upper(l.period)                                               AS "BillingPeriodEnd",
    bl.period_start                                                          AS "ChargePeriodStart",
    bl.period_end                                                            AS "ChargePeriodEnd",
    CASE bl.charge_type WHEN 'prepaid' THEN 'Purchase' ELSE 'Usage' END      AS "ChargeCategory",
    CASE WHEN l.cycle OPERATOR(tco.<>) l.billing_cycle OR bl.corrects_line_id IS NOT NULL
         THEN 'Correction' END                                               AS "ChargeClass",
    CASE l.product_code WHEN 'tco:savings_plan_fee' THEN 'Savings plan ' || cc.benefit_id || ' fee of account ' || l.account_id
                        WHEN 'tco:resource_pack_price' THEN 'Resource pack ' || cc.benefit_id || ' price of account ' || l.account_id
         ELSE l.product_code || CASE bl.charge_type WHEN 'prepaid' THEN ' prepaid order' ELSE ' usage' END
                             || ' of account ' || l.account_id END
      || CASE WHEN bl.corrects_line_id IS NOT NULL THEN ' (correction of bill line ' || bl.corrects_line_id || ': ' || bl.correction_reason || ')'
              WHEN l.cycle OPERATOR(tco.<>) l.billing_cycle THEN ' (late, of cycle ' || l.cycle::text || ')'
              ELSE '' END                                                    AS "ChargeDescription",
    CASE WHEN l.product_code = 'tco:savings_plan_fee' THEN 'Recurring'
         WHEN bl.charge_type = 'prepaid' THEN 'One-Time' ELSE 'Usage-Based' END AS "ChargeFrequency",
    l.product_code                                                           AS "ServiceName",
    'Other'::text                                                            AS "ServiceCategory",
    cf.currency                                                              AS "BillingCurrency",
    coalesce(ia.name, cf.provider)                                           AS "InvoiceIssuerName",
    cf.provider                                                              AS "ProviderName",
    cf.provider                                                              AS "PublisherName",
    NULL::numeric                                                            AS "PricingQuantity",
    NULL::text                                                               AS "PricingUnit",
    coalesce(c.benefit_id, cc.benefit_id)::text                              AS "CommitmentDiscountId",
    CASE coalesce(c.kind, cb.kind) WHEN 'resource_pack' THEN 'Usage' WHEN 'savings_plan' THEN 'Spend' END AS "CommitmentDiscountCategory",
    CASE WHEN c.kind IS NOT NULL THEN 'Used' END                             AS "CommitmentDiscountStatus",
    CASE coalesce(c.kind, cb.kind) WHEN 'resource_pack' THEN 'Resource Pack' WHEN 'savings_plan' THEN 'Savings Plan' END AS "CommitmentDiscountType",
    bl.tags                                                                  AS "Tags",
    i.invoice_id::text                                                       AS "InvoiceId",
    l.billing_cycle::text                                                    AS "x_BillingCycle",
    l.line_id                                                                AS "x_LineId",
    l.statement_id                                                           AS "x_StatementId",
    st.org_id                                                                AS "x_OrganizationId",
    (l.di * 0.000001)::numeric(20,6)                                         AS "x_DiscountAmount",
    ('{none,own,admin,manager,entity,own_new_trusteeship}'::text[])[l.src + 1] AS "x_DiscountSource",
    (l.be * 0.000001)::numeric(20,6)                                         AS "x_BenefitAmount",
    l.cycle::text                                                            AS "x_ChargeCycle",
    bl.corrects_line_id                                                      AS "x_CorrectsLineId"
FROM line l
JOIN tco.bill_line bl ON bl.line_id = l.line_id
JOIN tco.statement st ON st.statement_id = l.statement_id
LEFT JOIN tco.account pa ON pa.account_id = l.payer_account_id
LEFT JOIN tco.account sa ON sa.account_id = l.account_id
LEFT JOIN tco.invoice i ON i.statement_id = l.statement_id AND i.voided_at IS NULL
LEFT JOIN tco.account ia ON ia.account_id = i.issuer_account_id
LEFT JOIN commitment c ON c.line_id = l.line_id
LEFT JOIN tco.commitment_charge cc ON cc.line_id = l.line_id
LEFT JOIN tco.benefit cb ON cb.benefit_id = cc.benefit_id
CROSS JOIN cfg cf;
COMMENT ON VIEW tco.focus_cost_and_usage IS 'FOCUS 1.2 cost and usage rows, one per settled bill line (README "FOCUS"). Export with COPY (SELECT * FROM tco.focus_cost_and_usage WHERE "x_BillingCycle" = ''2023-02'') TO STDOUT WITH (FORMAT csv, HEADER). Runs with the caller''s rights.';
COMMENT ON COLUMN tco.focus_cost_and_usage."BilledCost" IS 'FOCUS: the amount invoiced for the line: list - contract discount - benefits (exact). Summed per InvoiceId and rounded to 2 decimals it is the invoice amount.';
COMMENT ON COLUMN tco.focus_cost_and_usage."EffectiveCost" IS 'FOCUS: amortized cost: BilledCost plus what resource packs and savings plans covered.';
COMMENT ON COLUMN tco.focus_cost_and_usage."ListCost" IS 'FOCUS: list amount of the line.';
COMMENT ON COLUMN tco.focus_cost_and_usage."ContractedCost" IS 'FOCUS: list amount less the contract discount (R8).';
COMMENT ON COLUMN tco.focus_cost_and_usage."BillingAccountId" IS 'FOCUS: the payer of the line (a manager for its managed members).';
COMMENT ON COLUMN tco.focus_cost_and_usage."SubAccountId" IS 'FOCUS: the consuming account.';
COMMENT ON COLUMN tco.focus_cost_and_usage."BillingPeriodStart" IS 'FOCUS: start of the billing cycle in the billing time zone (inclusive).';
COMMENT ON COLUMN tco.focus_cost_and_usage."BillingPeriodEnd" IS 'FOCUS: end of the billing cycle (exclusive).';
COMMENT ON COLUMN tco.focus_cost_and_usage."ChargePeriodStart" IS 'FOCUS: the line''s period start (inclusive).';
COMMENT ON COLUMN tco.focus_cost_and_usage."ChargePeriodEnd" IS 'FOCUS: the line''s period end (exclusive).';
COMMENT ON COLUMN tco.focus_cost_and_usage."ChargeCategory" IS 'FOCUS: Usage (postpaid lines) or Purchase (prepaid orders).';
COMMENT ON COLUMN tco.focus_cost_and_usage."ChargeClass" IS 'FOCUS: Correction for a late line (billed in a later cycle than its charge period''s) or a correction line; NULL otherwise.';
COMMENT ON COLUMN tco.focus_cost_and_usage."ServiceName" IS 'FOCUS: the product code.';
COMMENT ON COLUMN tco.focus_cost_and_usage."BillingCurrency" IS 'FOCUS: tco.config.billing_currency (ISO 4217; default USD).';
COMMENT ON COLUMN tco.focus_cost_and_usage."InvoiceIssuerName" IS 'FOCUS: the account that issued the invoice, else the provider name.';
COMMENT ON COLUMN tco.focus_cost_and_usage."ProviderName" IS 'FOCUS: tco.config.provider_name (default tco).';
COMMENT ON COLUMN tco.focus_cost_and_usage."PricingQuantity" IS 'FOCUS: NULL: bill lines carry no quantity.';
COMMENT ON COLUMN tco.focus_cost_and_usage."CommitmentDiscountId" IS 'FOCUS: the resource pack or savings plan (tco.benefit id) that covered most of the line; NULL if none.';
COMMENT ON COLUMN tco.focus_cost_and_usage."Tags" IS 'FOCUS: the line''s tags, a JSON object of strings.';
COMMENT ON COLUMN tco.focus_cost_and_usage."InvoiceId" IS 'FOCUS: the invoice of the line''s statement (NULL until tco.issue_invoice).';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_BillingCycle" IS 'tco: the billing cycle (YYYY-MM) of the statement that bills the line: filter exports on it.';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_ChargeCycle" IS 'tco: the cycle of the line''s period start (differs from x_BillingCycle for late and correction lines).';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_CorrectsLineId" IS 'tco: the original line a correction line corrects (NULL otherwise).';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_LineId" IS 'tco: the bill line.';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_StatementId" IS 'tco: the statement the line is on.';

-- Showback by tag: per cycle, tag key and value, the settled amounts of the
-- lines carrying that tag (a line with several tags counts under each of
-- its keys; lines without a key are in no row of that key).
CREATE VIEW tco.showback_by_tag WITH (security_invoker = true) AS
SELECT f."x_BillingCycle" AS cycle, t.key AS tag_key, t.value AS tag_value,
       sum(f."ListCost") AS list_total, sum(f."x_DiscountAmount") AS discount_total,
       sum(f."x_BenefitAmount") AS benefit_total, sum(f."BilledCost") AS due_total,
       count(*) AS lines
FROM tco.focus_cost_and_usage f
CROSS JOIN LATERAL pg_catalog.jsonb_each_text(f."Tags") AS t(key, value)
GROUP BY 1, 2, 3;
COMMENT ON VIEW tco.showback_by_tag IS 'Showback per cycle, tag key and tag value: settled amounts (exact) of the lines carrying the tag. Runs with the caller''s rights.';
COMMENT ON COLUMN tco.showback_by_tag.cycle IS 'Billing cycle as text YYYY-MM.';
COMMENT ON COLUMN tco.showback_by_tag.due_total IS 'What the payers owe for these lines (exact).';
