-- scripts/test_cluster.sh, faults: bill lines of March 2023 for every account
-- of organizations 1 to 6 (all shards), written through the router or to one server.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SELECT tco.insert_bill_lines(array_agg(100 * o + m ORDER BY o, m, d), array_agg('cvm'::text ORDER BY o, m, d), NULL,
                             array_agg('2023-03-01 00:00+08'::timestamptz + d * interval '1 day' ORDER BY o, m, d),
                             array_agg('2023-03-01 01:00+08'::timestamptz + d * interval '1 day' ORDER BY o, m, d),
                             array_agg(round(1.5 + o * 0.37 + m * 0.11 + d * 0.013, 6) ORDER BY o, m, d),
                             array_agg('2023-03-01 02:00+08'::timestamptz + d * interval '1 day' ORDER BY o, m, d), NULL) AS inserted
  FROM generate_series(1, 6) o, generate_series(0, 5) m, generate_series(0, 30) d;
