-- Fuzz test of tco's C functions and their SQL wrappers (issue 16), generated
-- from the catalog: every function of schema tco in language C or SQL (but
-- triggers, event triggers and functions taking internal) is called with
-- random and extreme arguments of its argument types, each call in a
-- subtransaction that is rolled back.  No call may raise an error of class
-- XX (internal error, crash-like conditions), and the server must be alive
-- after each batch (a crash ends the session: the plan is not met).
-- Then two differential checks: tco.trusteeship_effective_payer against a
-- plain-SQL statement of the payer rule (README, "Who pays a bill line") on
-- random trusteeship histories, and tco.cycle_of / tco.granularity_trunc
-- against date_trunc with AT TIME ZONE, on random instants in several zones.
--
-- Calls per function: fuzz.n (default 25), in parallel mode fuzz.parallel_n
-- (default 25: each call there starts a worker); seed: fuzz.seed (default 0.16).
-- scripts/fuzz.sh runs this file with a larger fuzz.n.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
SET timezone = 'UTC';

SELECT plan((SELECT count(*)::int FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
              WHERE p.pronamespace = 'tco'::regnamespace AND l.lanname IN ('c', 'sql')
                AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
                AND NOT ('internal'::regtype = ANY (p.proargtypes)))
            + (SELECT count(*)::int FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
                WHERE p.pronamespace = 'tco'::regnamespace AND l.lanname = 'c'
                  AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
                  AND NOT ('internal'::regtype = ANY (p.proargtypes))) + 3 + 4);

-- A small world: one organization, two managers, eight members, five
-- products, random trusteeship histories and bill lines.
SELECT setseed(coalesce(nullif(current_setting('fuzz.seed', true), ''), '0.16')::float8) IS NULL AS seeded \gset
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Fuzz Ltd', true);
INSERT INTO tco.account (account_id, name, entity_id, balance, credit_limit)
SELECT i, 'account ' || i, 1, 100, 10 FROM unnest(ARRAY[1, 2, 11, 12, 13, 14, 15, 16, 17, 18]) i;
DO $$
BEGIN
    PERFORM tco.create_organization(1, 'Fuzz');
    PERFORM tco.add_member(1, i) FROM unnest(ARRAY[2, 11, 12, 13, 14, 15, 16, 17, 18]) i;
END $$;
INSERT INTO tco.product (product_code, granularity)
    VALUES ('M', 'minute'), ('H', 'hour'), ('D', 'day'), ('W', 'week'), ('MO', 'month');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at, paid_at)
SELECT a, p, s, s + interval '1 hour', round((random() * 100)::numeric, 6), s + (random() * interval '3 days'),
       CASE WHEN random() < 0.5 THEN NULL ELSE s + (random() * interval '20 days') END
FROM (SELECT 11 + (random() * 7)::int AS a, (ARRAY['M', 'H', 'D', 'W', 'MO'])[1 + (random() * 4)::int] AS p,
             timestamptz '2022-12-01 00:00+00' + random() * interval '120 days' AS s
      FROM generate_series(1, 200)) g;
DO $$
DECLARE
    m int;
    k int;
    t timestamptz;
    r float8;
BEGIN
    FOR m IN 11..18 LOOP
        t := timestamptz '2022-12-01 00:00+00';
        FOR k IN 1..6 LOOP
            t := t + random() * interval '20 days';
            r := random();
            BEGIN
                IF r < 0.4 THEN
                    PERFORM tco.establish_trusteeship(m, 1 + (random() < 0.5)::int, t);
                ELSIF r < 0.7 THEN
                    PERFORM tco.move_trusteeship(m, 1 + (random() < 0.5)::int, t);
                ELSE
                    PERFORM tco.end_trusteeship(m, t);
                END IF;
            EXCEPTION WHEN OTHERS THEN
                NULL;   -- refused by a rule: the history stays valid
            END;
        END LOOP;
    END LOOP;
END $$;

-- Values per argument type, as SQL literals: NULL, extremes, edges, odd text.
CREATE FUNCTION pg_temp.fuzz_values(typ regtype) RETURNS text[] LANGUAGE sql AS $$
SELECT CASE typ
    WHEN 'bigint'::regtype THEN ARRAY['NULL', '0', '-1', '1', '11', '12', '1', '2', '999999',
        '-9223372036854775808', '9223372036854775807']
    WHEN 'integer'::regtype THEN ARRAY['NULL', '0', '-1', '1', '12', '2147483647', '-2147483648', '120000']
    WHEN 'numeric'::regtype THEN ARRAY['NULL', '0', '-1', '0.000001', '0.0000001', '1.5', '''NaN''',
        '''Infinity''', '''-Infinity''', '99999999999999.999999', '1e30', '-1e30']
    WHEN 'text'::regtype THEN ARRAY['NULL', '''''', '''D''', '''H''', '''MO''', '''x''', 'repeat(''x'', 70)',
        'repeat(''é'', 50)', '''Asia/Shanghai''', '''America/Toronto''', '''UTC''', '''+08''', '''UTC+8''',
        '''EST5EDT''', '''Etc/GMT-8''', '''Mars/Olympus''', '''8''', '''-3.5''', '''<+08>-8''', '''*''',
        '''cvm:*''', '''cvm:RunInstances''', '''dot''', '''mermaid''', '''%_\''', 'repeat(''a'', 300)',
        '''a"b\c<d>''', '''日本/東京''']
    WHEN 'timestamp with time zone'::regtype THEN ARRAY['NULL', '''infinity''', '''-infinity''',
        '''4714-11-24 00:00:00+00 BC''', '''294276-12-31 23:59:59.999999+00''', '''0001-01-01 00:00+00''',
        '''0001-01-01 00:00+14''', '''9999-12-31 23:59:59.999999+00''', '''9999-12-31 20:00-12''',
        '''10000-01-01 00:00+00''', '''1919-03-31 04:45+00''', '''2023-01-31 16:00+00''',
        '''2023-03-12 07:00+00''', '''2023-11-05 06:00+00''', '''epoch''',
        'timestamptz ''2022-12-01 00:00+00'' + random() * interval ''120 days''']
    WHEN 'date'::regtype THEN ARRAY['NULL', '''infinity''', '''-infinity''', '''0001-01-01''', '''9999-12-31''',
        '''4714-11-24 BC''', '''5874897-12-31''', '''2023-02-28''']
    WHEN 'tco.billing_cycle'::regtype THEN ARRAY['NULL', '''0001-01''', '''9999-12''', '''2023-01''',
        '''2023-02''', '''2022-12''', '''2099-12''']
    WHEN 'tco.granularity'::regtype THEN ARRAY['NULL', '''minute''', '''hour''', '''day''', '''week''', '''month''']
    WHEN 'cstring'::regtype THEN ARRAY['NULL', '''2023-01''', '''''', '''2023-13''', '''0000-01''',
        '''10000-01''', '''-2023-01''', '''2023-1''', '''abcd''', '''2023-01 ''', 'repeat(''9'', 100)']
    WHEN 'bigint[]'::regtype THEN ARRAY['NULL', '''{}''', '''{1,2,11}''', '''{NULL}''',
        '''{-9223372036854775808,9223372036854775807}''']
    ELSE ARRAY['NULL']
END
$$;

-- One random call of function f: its SQL text.
CREATE FUNCTION pg_temp.fuzz_call(f regprocedure) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    args text[] := '{}';
    t regtype;
    vals text[];
    v text;
BEGIN
    FOREACH t IN ARRAY (SELECT proargtypes::regtype[] FROM pg_proc WHERE oid = f) LOOP
        IF t IN ('tco.statement'::regtype, 'tco.prepaid_resource'::regtype, 'tco.alert'::regtype) THEN
            vals := ARRAY['NULL', format('(SELECT x FROM %s x LIMIT 1)', t)];
        ELSE
            vals := pg_temp.fuzz_values(t);
        END IF;
        v := vals[1 + floor(random() * array_length(vals, 1))::int];
        args := args || format('(%s)::%s', v, t);
    END LOOP;
    RETURN format('SELECT * FROM %s.%s(%s)', (SELECT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = f),
                  quote_ident((SELECT proname FROM pg_proc WHERE oid = f)), array_to_string(args, ', '));
END $$;

-- n random calls of f, each in a subtransaction rolled back: '' when none
-- raised an error of class XX, else the first such call and its error.
CREATE FUNCTION pg_temp.fuzz(f regprocedure, n int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    q text;
    bad text := '';
    i int;
BEGIN
    FOR i IN 1..n LOOP
        q := pg_temp.fuzz_call(f);
        BEGIN
            EXECUTE q;
            RAISE EXCEPTION 'fuzz: roll back' USING ERRCODE = 'TCFZZ';
        EXCEPTION WHEN OTHERS THEN
            IF SQLSTATE LIKE 'XX%' AND bad = '' THEN
                bad := q || ' -> ' || SQLSTATE || ' ' || SQLERRM;
            END IF;
        END;
    END LOOP;
    RETURN bad;
END $$;

CREATE TEMP TABLE fuzz_targets AS
SELECT p.oid::regprocedure AS f, l.lanname AS lang
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = 'tco'::regnamespace AND l.lanname IN ('c', 'sql')
  AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
  AND NOT ('internal'::regtype = ANY (p.proargtypes));

-- Batch 1: the C functions.
SELECT is(pg_temp.fuzz(f, coalesce(nullif(current_setting('fuzz.n', true), ''), '25')::int), '',
          format('C function %s: no error of class XX', f))
FROM fuzz_targets WHERE lang = 'c' ORDER BY f::text;
SELECT ok(pg_backend_pid() > 0, 'the server is alive after the C batch');

-- Batch 2: the SQL wrappers.
SELECT is(pg_temp.fuzz(f, coalesce(nullif(current_setting('fuzz.n', true), ''), '25')::int), '',
          format('SQL function %s: no error of class XX', f))
FROM fuzz_targets WHERE lang = 'sql' ORDER BY f::text;
SELECT ok(pg_backend_pid() > 0, 'the server is alive after the SQL batch');

-- Batch 3: the C functions again, in parallel mode where the planner allows
-- (caches built in a worker or in a parallel query's leader).
SET force_parallel_mode = on;
SELECT is(pg_temp.fuzz(f, coalesce(nullif(current_setting('fuzz.parallel_n', true), ''), '25')::int), '',
          format('C function %s in parallel mode: no error of class XX', f))
FROM fuzz_targets WHERE lang = 'c' ORDER BY f::text;
RESET force_parallel_mode;
SELECT ok(pg_backend_pid() > 0, 'the server is alive after the parallel-mode batch');

-- Differential 1: the payer against the rule in plain SQL, in three zones.
CREATE FUNCTION pg_temp.sql_payer(acct bigint, prod text, at timestamptz) RETURNS bigint LANGUAGE sql STABLE AS $$
WITH changes AS (
    SELECT established_at AS t, management_account_id AS target, 1 AS ord, trusteeship_id
    FROM tco.trusteeship WHERE member_account_id = acct
    UNION ALL
    SELECT ended_at, acct, 0, trusteeship_id
    FROM tco.trusteeship WHERE member_account_id = acct AND ended_at IS NOT NULL
), effective AS (
    SELECT c.*, CASE WHEN EXISTS (
               SELECT 1 FROM tco.bill_line b
               WHERE b.account_id = acct AND b.product_code = prod
                 AND b.period_start >= lower(tco.cycle_range(tco.cycle_of(c.t)))
                 AND b.period_start < upper(tco.cycle_range(tco.cycle_of(c.t)))
                 AND b.issued_at < c.t AND (b.paid_at IS NULL OR b.paid_at > c.t))
           THEN upper(tco.cycle_range(tco.cycle_of(c.t)))
           ELSE tco.granularity_ceil((SELECT granularity FROM tco.product WHERE product_code = prod), c.t) END AS e
    FROM changes c
)
SELECT coalesce((SELECT target FROM effective WHERE e <= at ORDER BY t DESC, ord DESC, trusteeship_id DESC LIMIT 1), acct)
$$;
CREATE FUNCTION pg_temp.payer_mismatches(zone text, n int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    bad text := '';
    a bigint;
    p text;
    t timestamptz;
    c bigint;
    s bigint;
    i int;
BEGIN
    PERFORM tco.set_billing_timezone(zone);
    FOR i IN 1..n LOOP
        a := 11 + floor(random() * 8)::int;
        p := (ARRAY['M', 'H', 'D', 'W', 'MO'])[1 + floor(random() * 5)::int];
        t := timestamptz '2022-12-01 00:00+00' + random() * interval '150 days';
        c := tco.trusteeship_effective_payer(a, p, t);
        s := pg_temp.sql_payer(a, p, t);
        IF c IS DISTINCT FROM s AND bad = '' THEN
            bad := format('%s: account %s, product %s, at %s: C says %s, SQL says %s', zone, a, p, t, c, s);
        END IF;
    END LOOP;
    RETURN bad;
END $$;
SELECT ok((SELECT count(*) FROM tco.trusteeship) > 5, 'the random world has trusteeship changes');
SELECT is(pg_temp.payer_mismatches('Asia/Shanghai', 300) || pg_temp.payer_mismatches('America/New_York', 300)
          || pg_temp.payer_mismatches('UTC', 300), '',
          'trusteeship_effective_payer agrees with the payer rule in plain SQL (900 random lines, 3 zones)');

-- Differential 2: cycle_of and granularity_trunc against date_trunc in the
-- zone, on random instants of 1900-2100.  Instants whose truncation spans an
-- offset change are left out (date_trunc resolves a wall time in a DST gap or
-- a repeated hour its own way; the regression tests cover those).
CREATE FUNCTION pg_temp.trunc_mismatches(zone text, n int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    bad text := '';
    t timestamptz;
    g text;
    r timestamptz;
    i int;
    off_t interval;
BEGIN
    PERFORM tco.set_billing_timezone(zone);
    FOR i IN 1..n LOOP
        t := timestamptz '1900-01-01 00:00+00' + random() * interval '73000 days';
        IF to_char(t AT TIME ZONE zone, 'YYYY-MM') <> tco.cycle_of(t)::text AND bad = '' THEN
            bad := format('%s: cycle_of(%s) = %s, SQL says %s', zone, t, tco.cycle_of(t), to_char(t AT TIME ZONE zone, 'YYYY-MM'));
        END IF;
        g := (ARRAY['minute', 'hour', 'day', 'week', 'month'])[1 + floor(random() * 5)::int];
        r := date_trunc(g, t, zone);
        off_t := (t AT TIME ZONE zone) - (t AT TIME ZONE 'UTC');
        CONTINUE WHEN (r AT TIME ZONE zone) - (r AT TIME ZONE 'UTC') <> off_t
                   OR ((r - interval '2 hours') AT TIME ZONE zone) - ((r - interval '2 hours') AT TIME ZONE 'UTC') <> off_t;
        IF tco.granularity_trunc(g::tco.granularity, t) <> r AND bad = '' THEN
            bad := format('%s: granularity_trunc(%s, %s) = %s, date_trunc says %s', zone, g, t,
                          tco.granularity_trunc(g::tco.granularity, t), r);
        END IF;
    END LOOP;
    RETURN bad;
END $$;
SELECT is(pg_temp.trunc_mismatches('UTC', 200) || pg_temp.trunc_mismatches('Asia/Shanghai', 200)
          || pg_temp.trunc_mismatches('America/New_York', 200) || pg_temp.trunc_mismatches('Europe/London', 200)
          || pg_temp.trunc_mismatches('America/Sao_Paulo', 200) || pg_temp.trunc_mismatches('Australia/Lord_Howe', 200)
          || pg_temp.trunc_mismatches('Asia/Kolkata', 200), '',
          'cycle_of and granularity_trunc agree with date_trunc AT TIME ZONE (1400 random instants, 7 zones)');
SELECT ok(pg_backend_pid() > 0, 'the server is alive after the differential checks');

SELECT * FROM finish();
ROLLBACK;
