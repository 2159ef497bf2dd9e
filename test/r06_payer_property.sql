-- R6 property test: tco.trusteeship_effective_payer (C, cached) agrees with a
-- plain-SQL statement of DESIGN section 3 on a few thousand random lines, in
-- three billing time zones (UTC, UTC+8, and one with DST).
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SELECT plan(9);

-- The rule, as plain SQL over the tables (no tco C code but cycle-free date_trunc):
-- e(P) = next cycle start if frozen, else the first P-boundary at or after t;
-- payer = target of the latest change (by t; an end before a start at the same t)
-- with e(P) <= s, else the account itself.
CREATE FUNCTION pg_temp.ref_payer(a bigint, p text, s timestamptz) RETURNS bigint
LANGUAGE sql STABLE AS $$
    WITH tz AS (SELECT tco.billing_timezone() AS z),
    changes AS (
        SELECT t.established_at AS t, 1 AS ord, t.management_account_id AS target
        FROM tco.trusteeship t WHERE t.member_account_id = a
        UNION ALL
        SELECT t.ended_at, 0, a FROM tco.trusteeship t
        WHERE t.member_account_id = a AND t.ended_at IS NOT NULL
    ),
    eff AS (
        SELECT c.t, c.ord, c.target,
               CASE WHEN EXISTS (
                        SELECT 1 FROM tco.bill_line b
                        WHERE b.account_id = a AND b.product_code = p
                          AND date_trunc('month', b.period_start, tz.z) = date_trunc('month', c.t, tz.z)
                          AND b.issued_at < c.t AND (b.paid_at IS NULL OR b.paid_at > c.t))
                    THEN ((date_trunc('month', c.t, tz.z) AT TIME ZONE tz.z) + interval '1 month') AT TIME ZONE tz.z
                    WHEN date_trunc(g.unit, c.t, tz.z) = c.t THEN c.t
                    WHEN g.unit IN ('minute', 'hour') THEN date_trunc(g.unit, c.t, tz.z) + ('1 ' || g.unit)::interval
                    ELSE ((date_trunc(g.unit, c.t, tz.z) AT TIME ZONE tz.z) + ('1 ' || g.unit)::interval) AT TIME ZONE tz.z
               END AS e
        FROM changes c, tz,
             LATERAL (SELECT granularity::text AS unit FROM tco.product WHERE product_code = p) g
    )
    SELECT coalesce((SELECT target FROM eff WHERE e <= s ORDER BY t DESC, ord DESC LIMIT 1), a)
$$;

-- A random organization: 5 managers, 60 members of the same verified entity,
-- each with 0..5 chronological changes (establish, move, end) in Jan-Mar 2023.
SELECT setseed(0.42);
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Prop Ltd', true);
INSERT INTO tco.account (account_id, name, entity_id, balance)
    SELECT g, 'acct ' || g, 1, 1000 FROM generate_series(1, 65) g;
SELECT tco.create_organization(1, 'Prop') AS org \gset
SELECT tco.add_member(:org, g) FROM generate_series(2, 65) g;
INSERT INTO tco.product (product_code, granularity) VALUES
    ('p_min', 'minute'), ('p_hour', 'hour'), ('p_day', 'day'), ('p_week', 'week'), ('p_month', 'month'), ('p_day2', 'day');

DO $$
DECLARE
    m bigint; k int; t timestamptz; mgr bigint; cur bigint;
BEGIN
    FOR m IN 6..65 LOOP
        t := timestamptz '2023-01-01 00:00+00' + random() * interval '20 days';
        cur := NULL;
        FOR k IN 1..floor(random() * 6)::int LOOP
            -- half of the instants fall exactly on an hour or day boundary
            IF random() < 0.25 THEN t := date_trunc('hour', t) + interval '1 hour';
            ELSIF random() < 0.25 THEN t := date_trunc('day', t) + interval '1 day'; END IF;
            IF cur IS NULL THEN
                mgr := 1 + floor(random() * 5)::int;
                INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
                    VALUES (m, mgr, t);
                cur := mgr;
            ELSIF random() < 0.4 THEN
                UPDATE tco.trusteeship SET ended_at = t WHERE member_account_id = m AND ended_at IS NULL;
                cur := NULL;
            ELSE
                mgr := 1 + (cur + floor(random() * 4)::int) % 5;   -- a different manager
                UPDATE tco.trusteeship SET ended_at = t WHERE member_account_id = m AND ended_at IS NULL;
                INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
                    VALUES (m, mgr, t);
                cur := mgr;
            END IF;
            t := t + random() * interval '15 days' + interval '1 minute';
        END LOOP;
    END LOOP;
END $$;

-- 4000 lines, issued on random days, a third of them still unpaid; periods
-- starting on random instants (some exactly on boundaries) in Dec 2022 - Apr 2023.
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at, paid_at)
SELECT acct, prod, s, s + interval '1 hour', round((random() * 100)::numeric, 6),
       s + random() * interval '3 days',
       CASE WHEN random() < 0.33 THEN NULL ELSE s + interval '3 days' + random() * interval '20 days' END
FROM (SELECT 6 + floor(random() * 60)::int AS acct,
             (ARRAY['p_min','p_hour','p_day','p_week','p_month','p_day2'])[1 + floor(random() * 6)::int] AS prod,
             CASE WHEN random() < 0.3
                  THEN date_trunc('day', timestamptz '2022-12-15 00:00+00' + random() * interval '120 days')
                  ELSE timestamptz '2022-12-15 00:00+00' + random() * interval '120 days' END AS s
      FROM generate_series(1, 4000)) x;

SELECT ok((SELECT count(*) FROM tco.trusteeship) > 100, 'the random organization has more than 100 trusteeship rows');
SELECT ok((SELECT count(DISTINCT tco.trusteeship_effective_payer(account_id, product_code, period_start)) FROM tco.bill_line) >= 6,
          'lines go to several different payers');

SELECT tco.set_billing_timezone('UTC');
SELECT is((SELECT count(*) FROM tco.bill_line
           WHERE tco.trusteeship_effective_payer(account_id, product_code, period_start)
                 <> pg_temp.ref_payer(account_id, product_code, period_start)),
          0::bigint, 'C payer = SQL rule on every line, billing zone UTC');
SELECT is((SELECT count(*) FROM tco.bill_line
           WHERE tco.trusteeship_effective_payer(account_id, product_code, period_start + interval '17 minutes')
                 <> pg_temp.ref_payer(account_id, product_code, period_start + interval '17 minutes')),
          0::bigint, 'C payer = SQL rule off boundaries, billing zone UTC');

SELECT tco.set_billing_timezone('Asia/Shanghai');
SELECT is((SELECT count(*) FROM tco.bill_line
           WHERE tco.trusteeship_effective_payer(account_id, product_code, period_start)
                 <> pg_temp.ref_payer(account_id, product_code, period_start)),
          0::bigint, 'C payer = SQL rule on every line, billing zone Asia/Shanghai');

SELECT tco.set_billing_timezone('America/New_York');
SELECT is((SELECT count(*) FROM tco.bill_line
           WHERE tco.trusteeship_effective_payer(account_id, product_code, period_start)
                 <> pg_temp.ref_payer(account_id, product_code, period_start)),
          0::bigint, 'C payer = SQL rule on every line, billing zone America/New_York');

SELECT ok((SELECT count(*) FROM tco.bill_line
            WHERE tco.explain_payer(account_id, product_code, period_start) ->> 'rule' = 'frozen_product') > 20,
          'the frozen-product rule decides a good number of lines');

-- Change the data under the cache: every line paid the instant it was issued,
-- so no line is ever unpaid at a change; compare again.
UPDATE tco.bill_line SET paid_at = issued_at;
SELECT is((SELECT count(*) FROM tco.bill_line
           WHERE tco.trusteeship_effective_payer(account_id, product_code, period_start)
                 <> pg_temp.ref_payer(account_id, product_code, period_start)),
          0::bigint, 'C payer = SQL rule after every line was paid on issue (cache invalidated)');
SELECT is((SELECT count(*) FROM tco.bill_line b
           WHERE tco.explain_payer(account_id, product_code, period_start) ->> 'rule' = 'frozen_product'),
          0::bigint, 'no frozen product once every bill was paid on issue');

SELECT * FROM finish();
ROLLBACK;
