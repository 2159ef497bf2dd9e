-- A generated organization for the payer benchmark: 400 accounts of one
-- verified entity, 10 managers, 300 members with trusteeship changes in the
-- middle of cycles (establish in January, a third moved and a third ended in
-- February), 20 products of every granularity, and :lines bill lines over
-- January-March 2023, half of them unpaid.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
SELECT setseed(0.5);
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Bench Group', true);
INSERT INTO tco.account (account_id, name, entity_id, balance)
    SELECT g, 'acct-' || g, 1, 10000 FROM generate_series(1, 400) g;
SELECT tco.create_organization(1, 'Bench Org');
SELECT count(tco.add_member(1, g)) FROM generate_series(2, 400) g;
INSERT INTO tco.product (product_code, granularity)
    SELECT 'prod-' || g, (ARRAY['minute','hour','day','week','month'])[1 + g % 5]::tco.granularity
    FROM generate_series(1, 20) g;
SELECT count(tco.establish_trusteeship(m, 2 + m % 10, timestamptz '2023-01-01 00:00+00' + (m % 28) * interval '1 day' + (m % 24) * interval '1 hour' + interval '7 minutes'))
    FROM generate_series(101, 400) m;
SELECT count(tco.move_trusteeship(m, 2 + (m + 1) % 10, timestamptz '2023-02-10 13:17+00' + (m % 7) * interval '1 day'))
    FROM generate_series(101, 400) m WHERE m % 3 = 0;
SELECT count(tco.end_trusteeship(m, timestamptz '2023-02-15 09:41+00' + (m % 5) * interval '1 day'))
    FROM generate_series(101, 400) m WHERE m % 3 = 1;
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at, paid_at)
SELECT a, 'prod-' || (1 + (g::bigint * 7) % 20), s, s + interval '1 hour', ((g % 10000) / 100.0)::numeric(20,6),
       s + interval '1 hour', CASE WHEN g % 2 = 0 THEN s + interval '5 days' END
FROM (SELECT g, 2 + (g::bigint * 31) % 399 AS a,
             timestamptz '2023-01-01 00:00+00' + ((g::bigint * 7919) % (90 * 24 * 60)) * interval '1 minute' AS s
      FROM generate_series(1, :lines) g) x;
ANALYZE tco.bill_line;
