-- scripts/test_cluster.sh, faults: March 2023 settled, and what the BI views show of it.
\set ON_ERROR_STOP 1
\pset format unaligned
\pset footer off
SELECT * FROM tco.settle_cycle('2023-03');
SELECT cycle, payer_account_id, org_id, list_total, discount_total, benefit_total, due_total, lines
  FROM tco.settlement_by_payer WHERE cycle = '2023-03' ORDER BY 1, 2;
SELECT * FROM tco.settlement_by_unit WHERE cycle = '2023-03' ORDER BY 1, 2;
