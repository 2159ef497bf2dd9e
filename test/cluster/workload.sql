-- The differential workload of scripts/test_cluster.sh (README "Running on
-- several servers"): run unchanged against one tco database and against the
-- router of three shards; the outputs must be identical.  Only functions of
-- the interface (DESIGN section 6) and the BI views; ids drawn by the server
-- (statement, trusteeship, benefit and line ids) are left out of the output,
-- since each shard draws its own.
\set ON_ERROR_STOP 1
\pset format unaligned
\pset footer off
SET client_min_messages = warning;

SELECT tco.set_billing_timezone('Asia/Shanghai');
SELECT tco.create_product(p, g::tco.granularity)
  FROM (VALUES ('cvm', 'hour'), ('cos', 'day'), ('cdn', 'week'), ('db', 'month'), ('sms', 'minute')) AS v(p, g);

-- six organizations, one entity each: an admin (account 100*o) and five members
SELECT tco.create_entity(o, 'Entity ' || o, true) FROM generate_series(1, 6) o;
SELECT tco.create_account(100 * o + m, 'acct-' || o || '-' || m, o, CASE WHEN m = 0 THEN 5000 ELSE 100 + m END,
                          CASE WHEN m = 0 THEN 1000 ELSE 0 END)
  FROM generate_series(1, 6) o, generate_series(0, 5) m ORDER BY o, m;
SELECT tco.create_organization(100 * o, 'Org ' || o) AS org FROM generate_series(1, 6) o;
SELECT o, tco.create_unit(o, 'Eng ' || o) AS eng, tco.create_unit(o, 'Ops ' || o) AS ops FROM generate_series(1, 6) o;
-- units: root of org o is unit o, Eng 5 + 2*o, Ops 6 + 2*o, Backend (under Eng) 18 + o
SELECT tco.create_unit(o, 'Backend ' || o, 5 + 2 * o) AS backend FROM generate_series(1, 6) o;
-- members 1, 2: managed since December; 3: self-pay in Backend; 4, 5: self-pay in Ops, 4 managed from mid-January
SELECT tco.add_member(o, 100 * o + m, CASE WHEN m = 3 THEN 18 + o WHEN m >= 4 THEN 6 + 2 * o ELSE NULL END)
  FROM generate_series(1, 6) o, generate_series(1, 5) m ORDER BY o, m;
SELECT tco.establish_trusteeship(100 * o + m, 100 * o, '2022-12-01 00:00+08') IS NOT NULL AS managed
  FROM generate_series(1, 6) o, generate_series(1, 2) m ORDER BY o, m;

-- an unpaid cos bill issued before the change freezes cos for January (R6 rule 1)
SELECT tco.insert_bill_lines(array_agg(100 * o + 4), array_agg('cos'::text), NULL,
                             array_agg('2023-01-01 00:00+08'::timestamptz), array_agg('2023-01-02 00:00+08'::timestamptz),
                             array_agg(12.5 + o), array_agg('2023-01-02 01:00+08'::timestamptz), NULL)
  FROM generate_series(1, 6) o;
SELECT tco.establish_trusteeship(100 * o + 4, 100 * o, '2023-01-14 09:23+08') IS NOT NULL AS established FROM generate_series(1, 6) o;
SELECT tco.end_trusteeship(100 * o + 2, '2023-02-10 15:45+08') FROM generate_series(1, 6) o WHERE o % 2 = 0;
SELECT tco.remove_member(605);

-- discounts and benefits
SELECT tco.set_contract_discount(NULL, 2, 0.1) IS NOT NULL AS entity_discount;
SELECT tco.set_contract_discount(100 * o, NULL, 0.05, 'cvm', '2022-01-01 00:00+08') IS NOT NULL AS admin_discount FROM generate_series(1, 6) o;
SELECT tco.set_contract_discount(303, NULL, 0.2, NULL, '2022-01-01 00:00+08') IS NOT NULL AS member_discount;
SELECT tco.grant_voucher(100 * o, 40 + o, '2023-12-31 00:00+08') IS NOT NULL AS voucher FROM generate_series(1, 6) o;
SELECT tco.grant_coupon(100 * o + 3, 15, '2023-12-31 00:00+08', 'cvm') IS NOT NULL AS coupon FROM generate_series(1, 6) o;
SELECT tco.grant_stored_value_card(100 * o + 5, 25, '2023-03-31 00:00+08') IS NOT NULL AS card FROM generate_series(1, 6) o WHERE o <= 3;

-- bill lines of two cycles, every account, every product, in one call (split by shard on the router)
CREATE TEMP TABLE lines AS
SELECT 100 * o + m AS account_id, p.code AS product_code,
       '2023-01-01 00:00+08'::timestamptz + (d * interval '1 day') + (h * interval '7 hours') AS period_start,
       round((((o * 37 + m * 11 + d * 7 + h * 3 + p.k) % 97) + 1) * 0.731, 6) AS list_amount
  FROM generate_series(1, 6) o, generate_series(0, 5) m, generate_series(0, 57, 3) d, generate_series(0, 2) h,
       (VALUES ('cvm', 1), ('cos', 2), ('cdn', 3), ('db', 4), ('sms', 5)) AS p(code, k);
SELECT tco.insert_bill_lines(array_agg(account_id ORDER BY account_id, product_code, period_start),
                             array_agg(product_code ORDER BY account_id, product_code, period_start),
                             array_agg(CASE WHEN product_code = 'db' THEN 'prepaid' ELSE 'postpaid' END::tco.charge_type
                                       ORDER BY account_id, product_code, period_start),
                             array_agg(period_start ORDER BY account_id, product_code, period_start),
                             array_agg(period_start + interval '1 hour' ORDER BY account_id, product_code, period_start),
                             array_agg(list_amount ORDER BY account_id, product_code, period_start),
                             array_agg(period_start + interval '2 hours' ORDER BY account_id, product_code, period_start),
                             NULL) AS inserted
  FROM lines;

-- the payer of every line, and why for a sample
SELECT account_id, product_code, period_start, tco.trusteeship_effective_payer(account_id, product_code, period_start) AS payer
  FROM lines ORDER BY 1, 2, 3;
SELECT tco.explain_payer(104, 'cos', '2023-01-20 00:00+08') ->> 'payer' AS frozen_payer,
       tco.explain_payer(104, 'cvm', '2023-01-20 00:00+08') ->> 'payer' AS switched_payer;
SELECT o, tco.available_credit(100 * o + 1) AS managed_credit, tco.service_available(100 * o + 3) AS self_pay_service
  FROM generate_series(1, 6) o;

-- settlement: per organization, then everything (the rest), then again (idempotent)
SELECT * FROM tco.settle_cycle('2023-01', 1);
SELECT * FROM tco.settle_cycle('2023-01');
SELECT * FROM tco.settle_cycle('2023-01');
SELECT * FROM tco.settle_cycle('2023-02');
SELECT tco.cycle_of('2023-01-31 16:30+00'), tco.cycle_range('2023-02');

-- the BI views, without the shards' statement ids
SELECT cycle, payer_account_id, org_id, list_total, discount_total, benefit_total, due_total, lines, paid_at, cycle_start, cycle_end
  FROM tco.settlement_by_payer ORDER BY 1, 2, 3;
SELECT cycle, payer_account_id, account_id, product_code, org_id, list_amount, discount_amount, benefit_amount, due_amount, lines
  FROM tco.settlement_by_member ORDER BY 1, 2, 3, 4;
SELECT * FROM tco.settlement_by_unit ORDER BY 1, 2;
SELECT cycle, sum(due_total) AS due, count(*) AS payers FROM tco.settlement_by_payer WHERE cycle IN ('2023-01', '2023-02') GROUP BY 1 ORDER BY 1;
SELECT org_id, sum(list_total) FROM tco.settlement_by_payer WHERE cycle = '2023-02' AND org_id BETWEEN 2 AND 4 GROUP BY 1 ORDER BY 1;
