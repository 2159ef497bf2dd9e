-- What a billing engineer wants to see of the sample.
\pset footer off
SET timezone = 'Asia/Shanghai';          -- show instants in the billing time zone
SET search_path = tco, public;           -- the billing_cycle operators
\echo
\echo '== Organizations, their admins and member counts'
SELECT o.org_id, o.name, a.name AS admin, count(m.*) AS members,
       count(*) FILTER (WHERE m.policy = 'trusteeship') AS in_trusteeship
FROM tco.organization o JOIN tco.account a ON a.account_id = o.admin_account_id
JOIN tco.member m ON m.org_id = o.org_id GROUP BY 1, 2, 3 ORDER BY 1;

\echo '== Unit tree of "Acme Cloud" with members per unit (subtree totals)'
WITH RECURSIVE tree AS (
    SELECT unit_id, name, 0 AS depth, ARRAY[unit_id] AS path FROM tco.org_unit WHERE org_id = 1 AND parent_unit_id IS NULL
    UNION ALL
    SELECT u.unit_id, u.name, t.depth + 1, t.path || u.unit_id FROM tco.org_unit u JOIN tree t ON u.parent_unit_id = t.unit_id
)
SELECT repeat('    ', depth) || name AS unit,
       (SELECT count(*) FROM tco.member m WHERE m.unit_id = t.unit_id) AS members,
       (SELECT count(*) FROM tco.member m JOIN tree s ON s.unit_id = m.unit_id WHERE t.unit_id = ANY (s.path)) AS subtree_members
FROM tree t ORDER BY path;

\echo '== Management accounts and their managed members (cap: 300 each)'
SELECT management_account_id AS manager, count(*) FILTER (WHERE ended_at IS NULL) AS active,
       count(*) AS trusteeships_ever FROM tco.trusteeship GROUP BY 1 ORDER BY 1;

-- a member still with its first manager, whose cos bill of Jan 2 (issued
-- Jan 3 01:00) was still unpaid at the change, while its cvm bills were paid
SELECT min(member_account_id) AS demo_member FROM tco.trusteeship
WHERE management_account_id = 1 AND ended_at IS NULL \gset
\echo '== Who pays? Member' :demo_member 'placed in trusteeship at 2023-01-03 09:23 (UTC+8), seed 004'
SELECT product_code AS product, p.granularity, s.starts,
       tco.trusteeship_effective_payer(:demo_member, product_code, s.starts) AS payer,
       tco.explain_payer(:demo_member, product_code, s.starts) ->> 'rule' AS rule
FROM tco.product p,
     (VALUES (timestamptz '2023-01-03 09:00+08'), ('2023-01-03 10:00+08'), ('2023-01-04 00:00+08'), ('2023-02-01 00:00+08')) s(starts)
WHERE product_code IN ('cos', 'cvm') ORDER BY 1, 3;
\echo '   cos had an unpaid bill at the change (frozen: the member pays all January, the manager'
\echo '   from February); cvm had none (the manager pays from the next hour, 10:00).  Why cos:'
SELECT jsonb_pretty(tco.explain_payer(:demo_member, 'cos', '2023-01-20 00:00+08') -> 'not_yet_effective' -> 0);
\echo '   and why cvm from 10:00:'
SELECT tco.explain_payer(:demo_member, 'cvm', '2023-01-03 10:00+08') ->> 'reason' AS reason;

\echo '== Bill lines of January 2023 by payer kind'
SELECT CASE WHEN payer = account_id THEN 'self' ELSE 'manager' END AS paid_by,
       count(*) AS lines, sum(list_amount) AS list_amount
FROM (SELECT account_id, list_amount, tco.trusteeship_effective_payer(account_id, product_code, period_start) AS payer
      FROM tco.bill_line WHERE tco.cycle_of(period_start) = tco.billing_cycle('2023-01-01'::date)) x
GROUP BY 1 ORDER BY 1;
