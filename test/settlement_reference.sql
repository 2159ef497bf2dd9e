-- Settlement against an independent plain-SQL reference (issue 5): random
-- organizations (three seeds, one world each, disjoint ids), settled by
-- tco.settle_cycle for 2022-12 then 2023-01, and recomputed here line by line
-- from the rules alone (DESIGN R6-R9 and section 5, README "Settlement"):
--   payer       tco.trusteeship_effective_payer (R6 is proven elsewhere);
--   rate (R8)   payer = consumer (self-pay): best of its own rate and, when it is
--               verified as the same entity as its organization's admin, the
--               admin's; trusteeship established before tco.config.legacy_cutover:
--               the manager's; established at or after it: the consumer's
--               entity-level rate if one applies, else its own.  For every owner a
--               product-specific rate beats an all-products one; a rate applies to
--               lines whose period starts in [valid_from, valid_to);
--   discount    list * rate rounded half-up to 6 decimals;
--   benefits    the consumer's coupons, then the payer's vouchers, then the
--               payer's stored-value cards (R9), each kind by earliest expiry then
--               lowest id, only within validity (on the period start) and product
--               scope, each paying min(balance, what remains);
--   due         the rest; statements: per payer and cycle, the exact sums rounded
--               half-up to 2 decimals.
-- No sharing features (pool vouchers, packs, plans) are used here.
-- Then, after a cycle closes (README "After a cycle closes"): random late
-- lines of both settled cycles and random corrections (down, up, to zero,
-- corrections of corrections), billed by 2023-02 and 2023-03, recomputed
-- here too:
--   a late line  priced as above, as of its own period start, on the
--               billing cycle's statement, before that cycle's own lines;
--   a negative correction: discount = list * rate rounded half-up on the
--               magnitude; what remains goes back first to the due its
--               original and earlier corrections left, then to the benefits
--               that paid them, last use first, each up to what it paid net:
--               to its balance (usable from the next settlement) when it is
--               valid after the billing cycle, else to the payer.
-- The code below does not call any settlement code of tco: only the payer
-- function and the tables.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SELECT plan(29);

SELECT tco.set_billing_timezone('Asia/Shanghai');
-- A non-default cut-over: trusteeships of 2022-08-10 are legacy here but
-- would not be with the default (2022-08-01 12:00+08).
UPDATE tco.config SET legacy_cutover = '2022-09-15 00:00+08';

INSERT INTO tco.product (product_code, granularity) VALUES
    ('amin', 'minute'), ('bhour', 'hour'), ('cday', 'day'), ('dweek', 'week'), ('emonth', 'month'), ('fhour', 'hour');

-- ---------------------------------------------------------------------------
-- The random world w (ids w*1000 + 1 .. w*1000 + 40).
--   +1 admin of organization A (entity +1), +2 second manager (entity +1),
--   +3..+20 members of A of entity +1 with trusteeships (legacy, legacy only
--   under the configured cut-over, new, established / ended / moved mid-January,
--   established in December), +21..+25 self-pay members of A (entities +1, +2,
--   +3 unverified), +26 admin of organization B (entity +2), +27..+33 its
--   members, +34..+40 outside any organization.
CREATE FUNCTION pg_temp.gen_world(w int, seed float8, nlines int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    b constant bigint := w * 1000;
    org_a bigint; org_b bigint; unit_x bigint;
    prods constant text[] := ARRAY['amin','bhour','cday','dweek','emonth','fhour'];
    jan constant timestamptz := '2023-01-01 00:00+08';
    a bigint;
BEGIN
    PERFORM setseed(seed);
    INSERT INTO tco.entity (entity_id, name, verified) VALUES
        (b + 1, 'E1-' || w, true), (b + 2, 'E2-' || w, true), (b + 3, 'E3-' || w, false);
    INSERT INTO tco.account (account_id, name, entity_id, balance)
    SELECT b + i, 'acct ' || (b + i),
           CASE WHEN i <= 20 OR i IN (21, 22, 32) THEN b + 1
                WHEN i IN (23, 24) OR i BETWEEN 26 AND 31 OR i = 33 THEN b + 2
                WHEN i IN (25, 34, 35) THEN b + 3
                WHEN i % 2 = 0 THEN b + 1 END, 100
    FROM generate_series(1, 40) i;
    org_a := tco.create_organization(b + 1, 'A' || w);
    unit_x := tco.create_unit(org_a, 'X');
    PERFORM tco.add_member(org_a, b + i, CASE WHEN i % 3 = 0 THEN unit_x END) FROM generate_series(2, 25) i;
    org_b := tco.create_organization(b + 26, 'B' || w);
    PERFORM tco.add_member(org_b, b + i) FROM generate_series(27, 33) i;

    -- Trusteeships (times partly random, always in each member's order).
    FOR a IN 3 .. 6 LOOP   -- legacy under both cut-overs
        PERFORM tco.establish_trusteeship(b + a, b + 1, '2022-05-01 08:00+08'::timestamptz + random() * interval '60 days');
    END LOOP;
    PERFORM tco.establish_trusteeship(b + 7, b + 1, '2022-08-10 10:00+08');   -- legacy only under the configured cut-over
    PERFORM tco.establish_trusteeship(b + 8, b + 2, '2022-08-10 10:00+08');
    PERFORM tco.establish_trusteeship(b + 9, b + 1, '2022-09-15 00:00+08');   -- exactly at the cut-over: new
    FOR a IN 10 .. 13 LOOP -- new
        PERFORM tco.establish_trusteeship(b + a, b + 1, '2022-10-01 08:00+08'::timestamptz + random() * interval '50 days');
    END LOOP;
    PERFORM tco.establish_trusteeship(b + 14, b + 2, '2022-11-03 09:00+08');   -- new, second manager
    PERFORM tco.establish_trusteeship(b + 15, b + 2, '2022-06-03 09:00+08');   -- legacy, second manager
    PERFORM tco.establish_trusteeship(b + 16, b + 1, jan + random() * interval '30 days');   -- new, mid-January
    PERFORM tco.establish_trusteeship(b + 17, b + 1, '2022-04-01 00:00+08');   -- legacy, ended mid-January
    PERFORM tco.end_trusteeship(b + 17, jan + random() * interval '30 days');
    PERFORM tco.establish_trusteeship(b + 18, b + 1, '2022-07-01 00:00+08');   -- legacy, moved mid-January (the move is new)
    PERFORM tco.move_trusteeship(b + 18, b + 2, jan + random() * interval '30 days');
    PERFORM tco.establish_trusteeship(b + 19, b + 1, '2022-12-01 00:00+08'::timestamptz + random() * interval '30 days');   -- new, in December
    PERFORM tco.establish_trusteeship(b + 20, b + 1, '2023-01-09 00:00+08');   -- on a week, day and hour boundary
    PERFORM tco.establish_trusteeship(b + 31, b + 26, '2022-10-20 12:00+08');   -- organization B, new
    PERFORM tco.establish_trusteeship(b + 33, b + 26, '2022-03-20 12:00+08');   -- organization B, legacy

    -- Contract discounts: accounts (all products, some split by a window
    -- inside the cycles; product-specific ones, some windowed), entities.
    INSERT INTO tco.contract_discount (account_id, rate, valid_from, valid_to)
    SELECT b + i, r, '-infinity', CASE WHEN split THEN cut END
    FROM (SELECT i, round((random() * 0.4)::numeric, (3 + floor(random() * 4))::int) r, random() < 0.3 AS split,
                 '2022-12-10 00:00+08'::timestamptz + random() * interval '45 days' AS cut
          FROM generate_series(1, 40) i) x WHERE random() < 0.6;
    INSERT INTO tco.contract_discount (account_id, rate, valid_from)
    SELECT d.account_id, round((random() * 0.5)::numeric, 6), d.valid_to + random() * interval '5 days'
    FROM tco.contract_discount d WHERE d.account_id BETWEEN b + 1 AND b + 40 AND d.valid_to IS NOT NULL;
    INSERT INTO tco.contract_discount (account_id, product_code, rate, valid_from, valid_to)
    SELECT b + i, prods[1 + floor(random() * 6)::int], round((random() * 0.6)::numeric, 6),
           CASE WHEN random() < 0.5 THEN '-infinity' ELSE '2022-12-01 00:00+08'::timestamptz + random() * interval '40 days' END,
           CASE WHEN random() < 0.5 THEN NULL ELSE '2023-01-11 00:00+08'::timestamptz + random() * interval '30 days' END
    FROM generate_series(1, 40) i WHERE random() < 0.5;
    -- Admins and the second manager always have something; one account has
    -- 0.5 on everything (half-up cases at the 7th decimal).
    INSERT INTO tco.contract_discount (account_id, product_code, rate)
    SELECT b + i, 'bhour', 0.333333 FROM generate_series(1, 2) i
    WHERE NOT EXISTS (SELECT 1 FROM tco.contract_discount d WHERE d.account_id = b + i AND d.product_code = 'bhour');
    INSERT INTO tco.contract_discount (account_id, rate) VALUES (b + 26, 0.18)
    ON CONFLICT DO NOTHING;
    DELETE FROM tco.contract_discount WHERE account_id = b + 22;
    INSERT INTO tco.contract_discount (account_id, rate) VALUES (b + 22, 0.5);
    INSERT INTO tco.contract_discount (entity_id, rate, valid_from) VALUES (b + 1, 0.12, '-infinity');
    INSERT INTO tco.contract_discount (entity_id, product_code, rate, valid_from, valid_to) VALUES
        (b + 1, 'cday', 0.2, '2022-12-20 00:00+08', '2023-01-20 00:00+08'),
        (b + 2, 'bhour', 0.07, '-infinity', NULL);

    -- Benefits: coupons, vouchers and cards of random owners (managers more
    -- often), amounts that run out, windows, product scopes.
    PERFORM tco.grant_benefit(k, owner, amt, vf, greatest(vt, vf + interval '1 day'), prod)
    FROM (SELECT (ARRAY['coupon','voucher','stored_value_card'])[1 + floor(random() * 3)::int] AS k,
                 CASE WHEN random() < 0.35 THEN (ARRAY[b + 1, b + 2, b + 26])[1 + floor(random() * 3)::int]
                      ELSE b + 1 + floor(random() * 40)::int END AS owner,
                 round((0.5 + random() * random() * 120)::numeric, 2) AS amt,
                 CASE WHEN random() < 0.4 THEN '-infinity' ELSE '2022-11-20 00:00+08'::timestamptz + random() * interval '60 days' END AS vf,
                 '2022-12-15 00:00+08'::timestamptz + random() * interval '60 days' AS vt,
                 CASE WHEN random() < 0.3 THEN prods[1 + floor(random() * 6)::int] END AS prod
          FROM generate_series(1, 70)) g;
    -- Same expiry on purpose: the lower id goes first.
    PERFORM tco.grant_voucher(b + 1, 5.00, '2023-01-25 00:00+08');
    PERFORM tco.grant_voucher(b + 1, 7.00, '2023-01-25 00:00+08');
    PERFORM tco.grant_stored_value_card(b + 2, 3.00, '2023-01-25 00:00+08', 'bhour');
    PERFORM tco.grant_coupon(b + 16, 4.00, '2023-02-01 00:00+08');
    -- valid long after the cycles: what corrections give back returns to them
    PERFORM tco.grant_voucher(b + 1, 80.00, '2024-01-01 00:00+08');
    PERFORM tco.grant_voucher(b + 2, 40.00, '2024-01-01 00:00+08');
    PERFORM tco.grant_stored_value_card(b + 26, 30.00, '2024-01-01 00:00+08');

    -- Window edges on account +25 (self-pay, unverified entity, no admin
    -- inheritance): a discount changing at 2023-01-10 00:00, a coupon valid in
    -- [2023-01-05, 2023-01-10), lines starting on and around both edges.
    DELETE FROM tco.contract_discount WHERE account_id = b + 25;
    INSERT INTO tco.contract_discount (account_id, rate, valid_from, valid_to) VALUES
        (b + 25, 0.1, '-infinity', '2023-01-10 00:00+08'), (b + 25, 0.3, '2023-01-10 00:00+08', NULL);
    PERFORM tco.grant_benefit('coupon', b + 25, 50.00, '2023-01-05 00:00+08', '2023-01-10 00:00+08', 'cday');
    INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
    SELECT b + 25, 'cday', d, d + interval '1 day', 3.000001, d + interval '25 hours'
    FROM unnest(ARRAY['2023-01-04 00:00+08', '2023-01-05 00:00+08', '2023-01-09 00:00+08', '2023-01-10 00:00+08']::timestamptz[]) d;

    -- Bill lines over November 2022 .. February 2023, aligned on their
    -- product's granularity in the billing zone; some paid, most not.
    INSERT INTO tco.bill_line (account_id, product_code, charge_type, period_start, period_end, list_amount, issued_at, paid_at)
    SELECT acct, p, CASE WHEN random() < 0.2 THEN 'prepaid' ELSE 'postpaid' END::tco.charge_type,
           s, e, list, e + interval '1 hour',
           CASE WHEN random() < 0.3 THEN e + interval '1 hour' + random() * interval '3 days' END
    FROM (SELECT acct, p, s,
                 (((s AT TIME ZONE 'Asia/Shanghai') + CASE gran WHEN 'minute' THEN interval '1 minute' WHEN 'hour' THEN interval '1 hour'
                         WHEN 'day' THEN interval '1 day' WHEN 'week' THEN interval '7 days' ELSE interval '1 month' END)
                   AT TIME ZONE 'Asia/Shanghai') AS e, list
          FROM (SELECT acct, p, gran,
                       date_trunc(gran, t AT TIME ZONE 'Asia/Shanghai') AT TIME ZONE 'Asia/Shanghai' AS s, list
                FROM (SELECT b + 1 + floor(random() * 40)::int AS acct, p.product_code AS p, p.granularity::text AS gran,
                             '2022-11-25 00:00+08'::timestamptz + random() * interval '75 days' AS t,
                             round((random() * random() * 40)::numeric, 6) AS list
                      FROM generate_series(1, nlines) g
                      JOIN tco.product p ON p.product_code = prods[1 + (g * 7 + w) % 6]) r) q) z;
END $$;

SELECT pg_temp.gen_world(1, 0.11, 2400);
SELECT pg_temp.gen_world(2, 0.57, 2000);
SELECT pg_temp.gen_world(3, -0.83, 1600);

-- ---------------------------------------------------------------------------
-- The reference.  Benefits are copied before settlement; the reference
-- spends its own copy.

CREATE TEMP TABLE ref_benefit AS
SELECT benefit_id, kind, owner_account_id, product_code, balance, valid_from, valid_to, 0::numeric AS pending FROM tco.benefit;
CREATE TEMP TABLE ref_line (line_id bigint PRIMARY KEY, cycle text, account_id bigint, product_code text,
                            payer bigint, rate numeric, source text, list numeric, discount numeric, benefit numeric, due numeric);
CREATE TEMP TABLE ref_use (n bigserial, benefit_id bigint, line_id bigint, amount numeric);
CREATE TEMP TABLE ref_return (line_id bigint, benefit_id bigint, amount numeric, returned_to text);

-- The rate of one owner (an account or an entity) for a product at s, or NULL.
CREATE FUNCTION pg_temp.ref_rate(p_account bigint, p_entity bigint, p_product text, s timestamptz)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT d.rate FROM tco.contract_discount d
    WHERE (CASE WHEN p_account IS NOT NULL THEN d.account_id = p_account ELSE d.entity_id = p_entity END)
      AND (d.product_code = p_product OR d.product_code IS NULL)
      AND d.valid_from <= s AND (d.valid_to IS NULL OR s < d.valid_to)
    ORDER BY d.product_code IS NULL   -- product-specific first
    LIMIT 1
$$;

-- Prices one line (l: line_id, account_id, product_code, s, list, corrects)
-- onto the statement of billing cycle cyc, which ends at c_end.
CREATE FUNCTION pg_temp.ref_price(l record, cyc text, c_end timestamptz) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    cutover constant timestamptz := coalesce((SELECT legacy_cutover FROM tco.config), '2022-08-01 12:00+08');
    bf record;
    payer bigint; adm bigint; est timestamptz;
    rate numeric; r2 numeric; src text; disc numeric; rest numeric; used numeric; amt numeric;
    k text; prior_due numeric; due_back numeric; back numeric;
BEGIN
    payer := tco.trusteeship_effective_payer(l.account_id, l.product_code, l.s);
    IF payer = l.account_id THEN
        rate := pg_temp.ref_rate(l.account_id, NULL, l.product_code, l.s);
        src := 'own';
        SELECT o.admin_account_id INTO adm
        FROM tco.member m JOIN tco.organization o ON o.org_id = m.org_id
        JOIN tco.account ac ON ac.account_id = m.account_id
        JOIN tco.account aa ON aa.account_id = o.admin_account_id
        JOIN tco.entity e ON e.entity_id = ac.entity_id
        WHERE m.account_id = l.account_id AND aa.entity_id = ac.entity_id AND e.verified
          AND o.admin_account_id <> l.account_id;
        IF FOUND THEN
            r2 := pg_temp.ref_rate(adm, NULL, l.product_code, l.s);
            IF r2 IS NOT NULL AND (rate IS NULL OR r2 > rate) THEN rate := r2; src := 'admin'; END IF;
        END IF;
    ELSE
        SELECT t.established_at INTO est FROM tco.trusteeship t
        WHERE t.member_account_id = l.account_id AND t.management_account_id = payer AND t.established_at <= l.s
        ORDER BY t.established_at DESC LIMIT 1;
        IF est IS NULL THEN
            RAISE EXCEPTION 'reference: line % has payer % but no trusteeship', l.line_id, payer;
        END IF;
        IF est < cutover THEN
            rate := pg_temp.ref_rate(payer, NULL, l.product_code, l.s);
            src := 'manager';
        ELSE
            rate := pg_temp.ref_rate(NULL, (SELECT entity_id FROM tco.account WHERE account_id = l.account_id),
                                     l.product_code, l.s);
            src := 'entity';
            IF rate IS NULL THEN
                rate := pg_temp.ref_rate(l.account_id, NULL, l.product_code, l.s);
                src := 'own_new_trusteeship';
            END IF;
        END IF;
    END IF;
    IF rate IS NULL THEN src := 'none'; END IF;
    rate := coalesce(rate, 0);
    disc := round(l.list * rate, 6);   -- numeric round(): half-up on the magnitude
    rest := l.list - disc;
    used := 0;
    IF l.list >= 0 THEN
        FOREACH k IN ARRAY ARRAY['coupon', 'voucher', 'stored_value_card'] LOOP
            EXIT WHEN rest = 0;
            FOR bf IN SELECT * FROM ref_benefit r
                      WHERE r.kind = k AND r.owner_account_id = CASE k WHEN 'coupon' THEN l.account_id ELSE payer END
                        AND r.balance > 0 AND (r.product_code IS NULL OR r.product_code = l.product_code)
                        AND r.valid_from <= l.s AND l.s < r.valid_to
                      ORDER BY r.valid_to, r.benefit_id LOOP
                EXIT WHEN rest = 0;
                amt := least(bf.balance, rest);
                UPDATE ref_benefit SET balance = balance - amt WHERE benefit_id = bf.benefit_id;
                INSERT INTO ref_use (benefit_id, line_id, amount) VALUES (bf.benefit_id, l.line_id, amt);
                rest := rest - amt;
                used := used + amt;
            END LOOP;
        END LOOP;
    ELSE
        -- a negative correction: back to the due its chain left, then to its benefits
        SELECT coalesce(sum(r.due), 0) INTO prior_due FROM ref_line r
        WHERE r.line_id = l.corrects
           OR r.line_id IN (SELECT c.line_id FROM tco.bill_line c WHERE c.corrects_line_id = l.corrects);
        due_back := least(-rest, greatest(prior_due, 0));
        back := -rest - due_back;
        FOR bf IN SELECT u.benefit_id, sum(u.amount) AS net, min(u.n) AS first_use FROM ref_use u
                  WHERE u.line_id = l.corrects
                     OR u.line_id IN (SELECT c.line_id FROM tco.bill_line c WHERE c.corrects_line_id = l.corrects)
                  GROUP BY u.benefit_id HAVING sum(u.amount) > 0 ORDER BY min(u.n) DESC LOOP
            EXIT WHEN back = 0;
            amt := least(back, bf.net);
            INSERT INTO ref_use (benefit_id, line_id, amount) VALUES (bf.benefit_id, l.line_id, -amt);
            IF (SELECT r.valid_to FROM ref_benefit r WHERE r.benefit_id = bf.benefit_id) > c_end THEN
                UPDATE ref_benefit SET pending = pending + amt WHERE benefit_id = bf.benefit_id;
                INSERT INTO ref_return VALUES (l.line_id, bf.benefit_id, amt, 'benefit');
            ELSE
                INSERT INTO ref_return VALUES (l.line_id, bf.benefit_id, amt, 'payer_balance');
            END IF;
            back := back - amt;
            used := used - amt;
        END LOOP;
        rest := -(due_back + back);
    END IF;
    INSERT INTO ref_line VALUES (l.line_id, cyc, l.account_id, l.product_code, payer, rate, src, l.list, disc, used, rest);
END $$;

-- The lines of cycle cyc, in the settlement order.
CREATE FUNCTION pg_temp.ref_settle(cyc text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c_start constant timestamptz := (cyc || '-01')::timestamp AT TIME ZONE 'Asia/Shanghai';
    c_end   constant timestamptz := ((cyc || '-01')::timestamp + interval '1 month') AT TIME ZONE 'Asia/Shanghai';
    l record;
BEGIN
    FOR l IN SELECT b.line_id, b.account_id, b.product_code, b.period_start AS s, b.list_amount AS list,
                    b.corrects_line_id AS corrects
             FROM tco.bill_line b WHERE b.period_start >= c_start AND b.period_start < c_end
             ORDER BY b.account_id, b.product_code COLLATE "C", b.period_start, b.line_id LOOP
        PERFORM pg_temp.ref_price(l, cyc, c_end);
    END LOOP;
    -- what went back to benefits is usable from the next settlement on
    UPDATE ref_benefit SET balance = balance + pending, pending = 0 WHERE pending <> 0;
END $$;

-- The late lines a settlement of cyc bills (queued, of earlier cycles), in
-- the settlement order, before the cycle's own lines.
CREATE FUNCTION pg_temp.ref_settle_late(cyc text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c_end constant timestamptz := ((cyc || '-01')::timestamp + interval '1 month') AT TIME ZONE 'Asia/Shanghai';
    l record;
BEGIN
    FOR l IN SELECT b.line_id, b.account_id, b.product_code, b.period_start AS s, b.list_amount AS list,
                    b.corrects_line_id AS corrects
             FROM tco.late_line k JOIN tco.bill_line b ON b.line_id = k.line_id
             WHERE k.statement_id IS NULL AND k.charge_cycle::text < cyc
             ORDER BY b.account_id, b.product_code COLLATE "C", b.period_start, b.line_id LOOP
        PERFORM pg_temp.ref_price(l, cyc, c_end);
    END LOOP;
END $$;

SELECT pg_temp.ref_settle('2022-12');
SELECT pg_temp.ref_settle('2023-01');

CREATE TEMP VIEW ref_statement AS
SELECT payer, cycle, round(sum(list), 2) AS list_total, round(sum(discount), 2) AS discount_total,
       round(sum(benefit), 2) AS benefit_total, round(sum(due), 2) AS due_total
FROM ref_line GROUP BY payer, cycle;

-- What tco wrote and what the reference computed, in the same shape (per
-- line, per statement, per statement line), compared after each phase.
CREATE TEMP VIEW tco_lines AS
SELECT s.line_id, b.account_id, b.product_code, s.payer_account_id AS payer, s.discount_rate::numeric AS rate,
       s.discount_amount::numeric AS discount, s.benefit_amount::numeric AS benefit, s.due_amount::numeric AS due
FROM tco.settled_line s JOIN tco.bill_line b USING (line_id);
CREATE TEMP VIEW ref_lines AS
SELECT line_id, account_id, product_code, payer, rate, discount, benefit, due FROM ref_line;
CREATE TEMP VIEW tco_statements AS
SELECT payer_account_id AS payer, cycle::text AS cycle, list_total::numeric AS list_total, discount_total::numeric AS discount_total,
       benefit_total::numeric AS benefit_total, due_total::numeric AS due_total
FROM tco.statement;
CREATE TEMP VIEW tco_statement_lines AS
SELECT st.payer_account_id AS payer, st.cycle::text AS cycle, sl.account_id, sl.product_code,
       sl.list_amount::numeric AS list, sl.discount_amount::numeric AS discount, sl.benefit_amount::numeric AS benefit,
       sl.due_amount::numeric AS due, sl.lines::bigint AS lines
FROM tco.statement_line sl JOIN tco.statement st USING (statement_id);
CREATE TEMP VIEW ref_statement_lines AS
SELECT payer, cycle, account_id, product_code, sum(list) AS list, sum(discount) AS discount, sum(benefit) AS benefit,
       sum(due) AS due, count(*) AS lines
FROM ref_line GROUP BY 1, 2, 3, 4;

-- ---------------------------------------------------------------------------
-- Settle with tco, December first, then January.

SELECT lives_ok($$SELECT tco.settle_cycle('2022-12')$$, 'settle 2022-12');
SELECT lives_ok($$SELECT tco.settle_cycle('2023-01')$$, 'settle 2023-01');

-- The data is rich enough to mean something.
SELECT ok((SELECT count(*) FROM ref_line WHERE cycle = '2023-01') > 2000
          AND (SELECT count(DISTINCT payer) FROM ref_line) > 60
          AND (SELECT count(*) FROM ref_line WHERE payer <> account_id) > 500
          AND (SELECT count(*) FROM ref_line WHERE rate > 0) > 1000
          AND (SELECT count(*) FROM ref_line WHERE rate = 0.5 AND (list * 1000000) % 2 = 1) > 10
          AND (SELECT count(*) FROM ref_line WHERE benefit > 0 AND due > 0) > 20,
          'the random worlds have > 2000 January lines, > 60 payers, > 500 managed lines, discounts, half-up cases, partly paid lines');
SELECT ok((SELECT count(DISTINCT kind) FROM ref_benefit WHERE balance = 0) = 3
          AND (SELECT count(DISTINCT r.kind) FROM ref_benefit r JOIN tco.benefit b USING (benefit_id)
               WHERE r.balance > 0 AND r.balance < b.initial_amount) >= 2,
          'coupons, vouchers and cards run out (and some are partly used)');

-- Per line: payer, rate, discount, benefit, due.  The first differing row names the line.
SELECT results_eq($$SELECT * FROM tco_lines ORDER BY line_id$$, $$SELECT * FROM ref_lines ORDER BY line_id$$,
    'every settled line (line_id, consumer, product, payer, rate, discount, benefit, due) = reference');
-- Where the rate came from (settled_line.discount_source, documented values:
-- own, admin, manager, entity, own_new_trusteeship, none).
SELECT results_eq(
    $$SELECT line_id, discount_source FROM tco.settled_line ORDER BY line_id$$,
    $$SELECT line_id, source FROM ref_line ORDER BY line_id$$,
    'discount_source of every line (own, admin, manager, entity, own_new_trusteeship, none) = reference');
SELECT is((SELECT count(*) FROM tco.settled_line), (SELECT count(*) FROM ref_line),
          'exactly the lines of 2022-12 and 2023-01 are settled');
SELECT is_empty(
    $$SELECT b.line_id FROM tco.bill_line b JOIN tco.settled_line s USING (line_id)
      WHERE b.period_start < '2022-12-01 00:00+08' OR b.period_start >= '2023-02-01 00:00+08'$$,
    'no line of November or February is settled');
SELECT results_eq(
    $$SELECT s.line_id, s.payer_account_id, st.cycle::text FROM tco.settled_line s
      JOIN tco.statement st USING (statement_id) ORDER BY s.line_id$$,
    $$SELECT line_id, payer, cycle FROM ref_line ORDER BY line_id$$,
    'every line is on its payer''s statement of its cycle');

-- Per statement.
SELECT results_eq($$SELECT * FROM tco_statements ORDER BY cycle, payer$$, $$SELECT * FROM ref_statement ORDER BY cycle, payer$$,
    'every statement (payer, cycle, list, discount, benefit, due totals) = reference');
SELECT results_eq($$SELECT * FROM tco_statement_lines ORDER BY cycle, payer, account_id, product_code COLLATE "C"$$,
                  $$SELECT * FROM ref_statement_lines ORDER BY cycle, payer, account_id, product_code COLLATE "C"$$,
    'every statement line (payer, cycle, consumer, product, exact sums, line count) = reference');
SELECT is_empty(
    $$SELECT st.payer_account_id FROM tco.statement st
      WHERE EXISTS (SELECT 1 FROM tco.trusteeship t WHERE t.member_account_id = st.payer_account_id
                    AND t.established_at < '2022-11-01 00:00+08' AND t.ended_at IS NULL)$$,
    'R7: members managed since before November have no statement of their own');

-- Per benefit: remaining balance; every use.
SELECT results_eq(
    $$SELECT benefit_id, balance::numeric FROM tco.benefit ORDER BY benefit_id$$,
    $$SELECT benefit_id, balance FROM ref_benefit ORDER BY benefit_id$$,
    'every benefit''s remaining balance = reference');
SELECT results_eq(
    $$SELECT line_id, benefit_id, amount::numeric FROM tco.benefit_use ORDER BY line_id, benefit_id$$,
    $$SELECT line_id, benefit_id, amount FROM ref_use ORDER BY line_id, benefit_id$$,
    'every benefit use (line, benefit, amount) = reference');
SELECT is_empty(
    $$SELECT u.line_id FROM tco.benefit_use u JOIN tco.settled_line s USING (line_id)
      JOIN tco.statement st ON st.statement_id = s.statement_id
      WHERE u.statement_id <> s.statement_id$$,
    'every benefit use is recorded on its line''s statement');

-- A second call changes nothing.
CREATE TEMP TABLE before_again AS SELECT * FROM tco.statement;
SELECT lives_ok($$SELECT tco.settle_cycle('2023-01')$$, 'settle 2023-01 again');
SELECT set_eq($$SELECT * FROM tco.statement$$, $$SELECT * FROM before_again$$,
              'a second settlement of 2023-01 changes no statement');


-- ---------------------------------------------------------------------------
-- After the cycles close: late lines and corrections, billed by 2023-02 and
-- 2023-03.

-- Random late lines of December and January, aligned on their granularity.
CREATE FUNCTION pg_temp.late_lines(w int, n int) RETURNS bigint LANGUAGE sql AS $$
    WITH ins AS (
        INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
        SELECT acct, p, s, s + interval '1 minute', list, s + interval '2 hours'
        FROM (SELECT w * 1000 + 1 + floor(random() * 40)::int AS acct, p.product_code AS p,
                     date_trunc('hour', '2022-12-01 00:00+08'::timestamptz + random() * interval '61 days') AS s,
                     round((random() * random() * 40)::numeric, 6) AS list
              FROM generate_series(1, n) g JOIN tco.product p ON p.product_code = 'amin') x
        RETURNING 1)
    SELECT count(*) FROM ins
$$;
-- Random corrections of settled lines: to zero, down, up; some corrected again.
CREATE FUNCTION pg_temp.corrections(n int, paid_by_benefits boolean) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    r record;
    made bigint := 0;
BEGIN
    FOR r IN SELECT b.line_id, b.list_amount FROM tco.bill_line b
              WHERE b.corrects_line_id IS NULL AND tco.bill_line_is_settled(b)
                AND (NOT paid_by_benefits OR EXISTS (SELECT 1 FROM ref_use u WHERE u.line_id = b.line_id AND u.amount > 0))
              ORDER BY random() LIMIT n LOOP
        PERFORM tco.correct_bill_line(r.line_id,
                    CASE WHEN random() < 0.3 THEN 0 ELSE round((r.list_amount * random() * 1.4)::numeric, 6) END, 'reference');
        made := made + 1;
        IF random() < 0.25 THEN
            PERFORM tco.correct_bill_line(r.line_id, round((r.list_amount * random())::numeric, 6), 'again');
        END IF;
    END LOOP;
    RETURN made;
END $$;

SELECT setseed(0.31);
SELECT pg_temp.late_lines(w, 60) FROM generate_series(1, 3) w;
SELECT pg_temp.corrections(100, false), pg_temp.corrections(60, true);
SELECT pg_temp.ref_settle_late('2023-02');
SELECT pg_temp.ref_settle('2023-02');
SELECT lives_ok($$SELECT tco.settle_cycle('2023-02')$$, 'settle 2023-02 with late lines and corrections');
SELECT pg_temp.late_lines(w, 30) FROM generate_series(1, 3) w;
SELECT pg_temp.corrections(80, false), pg_temp.corrections(50, true);
SELECT pg_temp.ref_settle_late('2023-03');
SELECT pg_temp.ref_settle('2023-03');
SELECT lives_ok($$SELECT tco.settle_cycle('2023-03')$$, 'settle 2023-03 with more, corrections of corrections among them');

SELECT ok((SELECT count(*) FROM tco.late_line WHERE (SELECT b.corrects_line_id FROM tco.bill_line b
                                                      WHERE b.line_id = late_line.line_id) IS NULL) > 200
          AND (SELECT count(*) FROM ref_line WHERE list < 0) > 100
          AND (SELECT count(*) FROM ref_line WHERE list > 0 AND line_id IN (SELECT line_id FROM tco.bill_line WHERE corrects_line_id IS NOT NULL)) > 30
          AND (SELECT count(*) FROM ref_return WHERE returned_to = 'benefit') > 5
          AND (SELECT count(DISTINCT benefit_id) FROM ref_return) > 20
          AND (SELECT count(*) FROM ref_return WHERE returned_to = 'payer_balance') > 5
          AND (SELECT count(*) FROM (SELECT corrects_line_id FROM tco.bill_line WHERE corrects_line_id IS NOT NULL
                                     GROUP BY 1 HAVING count(*) > 1) x) > 20,
          'late lines, negative and positive corrections, corrections of corrections, give-backs to benefits and to payers');
SELECT results_eq($$SELECT * FROM tco_lines ORDER BY line_id$$, $$SELECT * FROM ref_lines ORDER BY line_id$$,
    'every line, late and corrections included (payer, rate, discount, benefit, due) = reference');
SELECT results_eq(
    $$SELECT s.line_id, st.cycle::text FROM tco.settled_line s JOIN tco.statement st USING (statement_id) ORDER BY s.line_id$$,
    $$SELECT line_id, cycle FROM ref_line ORDER BY line_id$$,
    'every late and correction line is on the statement of the cycle that billed it');
SELECT results_eq($$SELECT * FROM tco_statements ORDER BY cycle, payer$$, $$SELECT * FROM ref_statement ORDER BY cycle, payer$$,
    'every statement, negative ones included = reference');
SELECT results_eq($$SELECT * FROM tco_statement_lines ORDER BY cycle, payer, account_id, product_code COLLATE "C"$$,
                  $$SELECT * FROM ref_statement_lines ORDER BY cycle, payer, account_id, product_code COLLATE "C"$$,
    'every statement line = reference');
SELECT results_eq(
    $$SELECT benefit_id, balance::numeric FROM tco.benefit ORDER BY benefit_id$$,
    $$SELECT benefit_id, balance + pending FROM ref_benefit ORDER BY benefit_id$$,
    'every benefit''s balance after give-backs = reference');
SELECT results_eq(
    $$SELECT line_id, benefit_id, amount::numeric FROM tco.benefit_use ORDER BY line_id, amount, benefit_id$$,
    $$SELECT line_id, benefit_id, amount FROM ref_use ORDER BY line_id, amount, benefit_id$$,
    'every benefit use and give-back (line, benefit, signed amount) = reference');
SELECT results_eq(
    $$SELECT line_id, benefit_id, amount::numeric, returned_to FROM tco.benefit_return ORDER BY line_id, benefit_id$$,
    $$SELECT line_id, benefit_id, amount, returned_to FROM ref_return ORDER BY line_id, benefit_id$$,
    'every give-back and where it went (the benefit or the payer) = reference');
CREATE TEMP TABLE before_again2 AS SELECT * FROM tco.statement;
SELECT lives_ok($$SELECT tco.settle_cycle(c) FROM unnest('{2022-12,2023-01,2023-02,2023-03}'::tco.billing_cycle[]) c$$,
                'settle every cycle again');
SELECT set_eq($$SELECT * FROM tco.statement$$, $$SELECT * FROM before_again2$$,
              'settling every cycle again changes nothing');

SELECT * FROM finish();
ROLLBACK;
