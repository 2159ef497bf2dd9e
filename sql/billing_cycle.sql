SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;

-- tco.billing_cycle: a calendar month in the billing time zone, written YYYY-MM.
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

-- The SQLSTATE a statement raises, or 'ok'.
CREATE FUNCTION pg_temp.sqlstate(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;

-- Operators live in schema tco: without it on the search path they need OPERATOR().
SELECT '2023-01'::tco.billing_cycle OPERATOR(tco.+) 1 AS next_month;
SET search_path = tco, public;

-- Text form: exactly YYYY-MM, surrounding whitespace ignored.
SELECT c::billing_cycle, c::billing_cycle::text AS as_text
FROM (VALUES ('2023-01'), ('0001-01'), ('9999-12'), ('  2024-02  '), (E'\t2023-10\n')) AS v(c);

-- Malformed syntax is 22P02; the right form with a month or year out of range is 22008.
SELECT input, pg_temp.sqlstate(format('SELECT %L::tco.billing_cycle', input)) AS sqlstate
FROM (VALUES ('2023-13'), ('2023-00'), ('0000-01'), ('2023-99'),
             ('2023-1'), ('23-01'), ('10000-01'), ('abcd'), (''), ('   '),
             ('2023-01x'), ('2023-01 x'), ('+2023-01'), ('-2023-01'), ('2023-+1'),
             ('2023/01'), ('2023-01-01'), ('2023 01'), ('２０２３-01')) AS v(input);
SELECT '2023-13'::billing_cycle;
SELECT 'abcd'::billing_cycle;
SELECT NULL::billing_cycle IS NULL AS null_stays_null;

-- Binary form: a version byte, then year * 12 + month - 1 as int4 (2023 * 12 = 24276 = 0x5ed4).
SELECT billing_cycle_send('2023-01'), billing_cycle_send('0001-01'), billing_cycle_send('9999-12');

-- Binary input (COPY ... FORMAT binary): field length 5, version byte 1, int4.  A wrong version,
-- a value out of range or a short field are refused.
CREATE TEMP TABLE received (cycle billing_cycle);
COPY received FROM PROGRAM 'printf ''PGCOPY\n\377\r\n\000\000\000\000\000\000\000\000\000\000\001\000\000\000\005\001\000\000\136\324\377\377''' (FORMAT binary);
COPY received FROM PROGRAM 'printf ''PGCOPY\n\377\r\n\000\000\000\000\000\000\000\000\000\000\001\000\000\000\005\002\000\000\136\324\377\377''' (FORMAT binary);
COPY received FROM PROGRAM 'printf ''PGCOPY\n\377\r\n\000\000\000\000\000\000\000\000\000\000\001\000\000\000\005\001\000\000\000\000\377\377''' (FORMAT binary);
COPY received FROM PROGRAM 'printf ''PGCOPY\n\377\r\n\000\000\000\000\000\000\000\000\000\000\001\000\000\000\005\001\200\000\000\000\377\377''' (FORMAT binary);
COPY received FROM PROGRAM 'printf ''PGCOPY\n\377\r\n\000\000\000\000\000\000\000\000\000\000\001\000\000\000\004\001\000\000\136\377\377''' (FORMAT binary);
SELECT cycle, billing_cycle_send(cycle) FROM received;

-- Order, btree index, hash join, GROUP BY, DISTINCT, primary key.
CREATE TEMP TABLE cycles (cycle billing_cycle PRIMARY KEY, n int);
INSERT INTO cycles SELECT '2020-01'::billing_cycle + i, i FROM generate_series(0, 59) i;
INSERT INTO cycles VALUES ('2020-01', 99);
SELECT cycle FROM cycles WHERE cycle BETWEEN '2022-11' AND '2023-02' ORDER BY cycle DESC;
SELECT count(*) FILTER (WHERE a.cycle < b.cycle) AS lt, count(*) FILTER (WHERE a.cycle <= b.cycle) AS le,
       count(*) FILTER (WHERE a.cycle = b.cycle) AS eq, count(*) FILTER (WHERE a.cycle <> b.cycle) AS ne,
       count(*) FILTER (WHERE a.cycle >= b.cycle) AS ge, count(*) FILTER (WHERE a.cycle > b.cycle) AS gt
FROM cycles a, cycles b;
ANALYZE cycles;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM cycles WHERE cycle = '2023-01';
SELECT * FROM cycles WHERE cycle = '2023-01';
RESET enable_seqscan;
SET enable_mergejoin = off;
SET enable_nestloop = off;
EXPLAIN (COSTS OFF) SELECT count(*) FROM cycles a JOIN cycles b ON a.cycle = b.cycle + 12;
SELECT count(*) FROM cycles a JOIN cycles b ON a.cycle = b.cycle + 12;
RESET enable_mergejoin;
RESET enable_nestloop;
SELECT billing_cycle(d::date) AS cycle, count(*) FROM generate_series('2023-01-30'::date, '2023-03-02', '1 day') d
GROUP BY 1 ORDER BY 1;
SELECT DISTINCT billing_cycle(d::date) FROM generate_series('2023-12-30'::date, '2024-01-02', '1 day') d ORDER BY 1;
SET enable_sort = off;
EXPLAIN (COSTS OFF) SELECT billing_cycle(d::date), count(*) FROM generate_series('2023-12-30'::date, '2024-01-02', '1 day') d GROUP BY 1;
SELECT billing_cycle(d::date), count(*) FROM generate_series('2023-12-30'::date, '2024-01-04', '1 day') d GROUP BY 1 ORDER BY 1;
RESET enable_sort;
CREATE INDEX ON cycles USING hash (cycle);

-- Arithmetic in months: year rollover, both directions, and the ends of the range.
SELECT '2023-12'::billing_cycle + 1 AS dec_plus_1, 1 + '2023-12'::billing_cycle AS one_plus_dec,
       '2023-01'::billing_cycle - 1 AS jan_minus_1, '2023-05'::billing_cycle + 0 AS plus_0,
       '2023-05'::billing_cycle + (-17) AS plus_minus_17, '2023-05'::billing_cycle - (-20) AS minus_minus_20,
       '0001-01'::billing_cycle + 119987 AS to_max, '9999-12'::billing_cycle - 119987 AS to_min;
SELECT '2024-03'::billing_cycle - '2023-01'::billing_cycle AS months,
       '2023-01'::billing_cycle - '2024-03'::billing_cycle AS negative,
       '9999-12'::billing_cycle - '0001-01'::billing_cycle AS widest;
SELECT expr, pg_temp.sqlstate('SELECT ' || expr) AS sqlstate
FROM (VALUES ('''9999-12''::tco.billing_cycle + 1'), ('''0001-01''::tco.billing_cycle - 1'),
             ('''0001-01''::tco.billing_cycle + (-1)'), ('1 + ''9999-12''::tco.billing_cycle'),
             ('''9999-12''::tco.billing_cycle + 2147483647'), ('2147483647 + ''9999-12''::tco.billing_cycle'),
             ('''0001-01''::tco.billing_cycle + (-2147483647 - 1)'),
             ('''0001-01''::tco.billing_cycle - 2147483647'),
             ('''9999-12''::tco.billing_cycle - (-2147483647 - 1)')) AS v(expr);
SELECT '9999-12'::billing_cycle + 1;

-- Casts with text and date.
SELECT '2023-07'::text::billing_cycle AS from_text, '2023-07'::billing_cycle::text AS to_text,
       '2024-02-29'::date::billing_cycle AS from_date, '2024-02'::billing_cycle::date AS to_date,
       cycle_start_date('2024-02'), cycle_end_date('2024-02') AS leap_end, cycle_end_date('2023-02') AS end_2023,
       cycle_end_date('2023-12') AS dec_end, cycle_end_date('9999-12') AS last_day;
CREATE TEMP TABLE assigned (cycle billing_cycle);
INSERT INTO assigned VALUES ('2023-04'::text);
SELECT * FROM assigned;
SELECT input, pg_temp.sqlstate(format('SELECT %L::date::tco.billing_cycle', input)) AS sqlstate
FROM (VALUES ('infinity'), ('-infinity'), ('0001-01-01 BC'), ('10000-01-01'), ('0001-01-01'), ('9999-12-31')) AS v(input);

-- Billing time in UTC (the default zone).
SELECT billing_timezone();
SELECT cycle_of('2023-01-31 23:59:59.999999+00') AS jan, cycle_of('2023-02-01 00:00:00+00') AS feb,
       cycle_range('2023-01'), cycle_range('2023-12') AS dec_to_jan,
       cycle_range('2024-02') AS leap_feb, cycle_range('2023-02') AS feb_2023;
SELECT cycle_range('0001-01'), cycle_range('9999-12');
SELECT g, granularity_trunc(g, '2023-01-01 13:45:30.5+00') AS trunc, granularity_ceil(g, '2023-01-01 13:45:30.5+00') AS ceil
FROM unnest(enum_range(NULL::granularity)) g;
-- ISO weeks start on Monday: the week containing Sunday 2023-01-01 starts Monday 2022-12-26.
SELECT granularity_trunc('week', '2023-01-01 00:00+00') AS week_start, granularity_ceil('week', '2023-01-01 00:00+00') AS next_week,
       granularity_trunc('week', '2023-01-02 00:00+00') AS monday, granularity_trunc('week', '2024-12-31 12:00+00') AS week_2025_w1;
-- A boundary is its own ceiling; one microsecond later the next boundary is.
SELECT g, granularity_ceil(g, b) = b AS exact, granularity_ceil(g, b + interval '1 microsecond') AS after
FROM (VALUES ('minute'::granularity, '2023-03-01 10:07+00'::timestamptz), ('hour', '2023-03-01 10:00+00'),
             ('day', '2023-03-01 00:00+00'), ('week', '2023-02-27 00:00+00'), ('month', '2023-03-01 00:00+00')) AS v(g, b);
SELECT NULL::timestamptz IS NULL, cycle_of(NULL) IS NULL AS cycle_of_null, cycle_range(NULL) IS NULL AS range_null,
       granularity_ceil(NULL, now()) IS NULL AS ceil_null, granularity_trunc('day', NULL) IS NULL AS trunc_null;

-- Infinite and out-of-range instants are errors (22008), never garbage.
SELECT expr, pg_temp.sqlstate('SELECT ' || expr) AS sqlstate
FROM (VALUES ('tco.cycle_of(''infinity'')'), ('tco.cycle_of(''-infinity'')'),
             ('tco.granularity_ceil(''day'', ''infinity'')'), ('tco.granularity_trunc(''week'', ''-infinity'')'),
             ('tco.cycle_of(''0001-01-01 00:00:00+00 BC'')'), ('tco.cycle_of(''10000-01-01 00:00+00'')'),
             ('tco.granularity_ceil(''hour'', ''294276-12-31 23:30:00+00'')'),
             ('tco.granularity_ceil(''month'', ''294276-12-02 00:00:00+00'')'),
             ('tco.granularity_trunc(''month'', ''4714-11-24 00:00:00+00 BC'')'),
             ('tco.granularity_ceil(''hour'', ''294276-12-31 23:00:00+00'')')) AS v(expr);
SELECT cycle_of('infinity');

-- An explicit zone: Asia/Shanghai is UTC+8, so 2023-01-31 16:00 UTC is already February.
SELECT cycle_of('2023-01-31 15:59:59+00', 'Asia/Shanghai') AS jan, cycle_of('2023-01-31 16:00:00+00', 'Asia/Shanghai') AS feb,
       cycle_range('2023-02', 'Asia/Shanghai'), cycle_range('2023-02', 'Asia/Kolkata') AS kolkata;
SELECT pg_temp.sqlstate('SELECT tco.cycle_of(now(), ''Mars/Olympus'')') AS unknown_zone,
       pg_temp.sqlstate('SELECT tco.cycle_range(''2023-01'', '''')') AS empty_zone,
       pg_temp.sqlstate(format('SELECT tco.cycle_range(''2023-01'', %L)', repeat('x', 10000))) AS long_zone;
SELECT cycle_of(now(), 'Mars/Olympus');

-- The billing time zone is configuration; tco.cycle_of follows a change at once.
SELECT cycle_of('2023-01-31 16:00:00+00') AS utc;
SELECT set_billing_timezone('Asia/Shanghai');
SELECT billing_timezone(), cycle_of('2023-01-31 16:00:00+00') AS shanghai, cycle_range('2023-02');
SELECT granularity_trunc('day', '2023-01-31 16:00:00+00') AS day_start, granularity_ceil('day', '2023-01-31 15:00:00+00') AS next_day,
       granularity_trunc('week', '2023-01-01 16:00:00+00') AS week_start;
SELECT set_billing_timezone('Asia/Kolkata');
SELECT g, granularity_trunc(g, '2023-06-15 10:10:10+00') AS trunc, granularity_ceil(g, '2023-06-15 10:10:10+00') AS ceil
FROM unnest(enum_range(NULL::granularity)) g;
SELECT pg_temp.sqlstate('SELECT tco.set_billing_timezone(''Mars/Olympus'')') AS unknown_zone,
       pg_temp.sqlstate('SELECT tco.set_billing_timezone(NULL)') AS null_zone;
SELECT set_billing_timezone('Mars/Olympus');
SELECT set_billing_timezone(NULL);
SELECT billing_timezone();

-- A DST zone: America/New_York springs forward 2023-03-12 02:00 EST -> 03:00 EDT (07:00 UTC)
-- and falls back 2023-11-05 02:00 EDT -> 01:00 EST (06:00 UTC).
SELECT set_billing_timezone('America/New_York');
SELECT cycle_range('2023-03') AS est_to_edt, cycle_range('2023-11') AS edt_to_est;
SELECT cycle_of('2023-04-01 03:59:59+00') AS march, cycle_of('2023-04-01 04:00:00+00') AS april;
-- The repeated hour 01:00-02:00 is two hours: 05:00-06:00 UTC (EDT) and 06:00-07:00 UTC (EST).
SELECT t, granularity_trunc('hour', t) AS hour_start, granularity_ceil('hour', t) AS hour_ceil,
       granularity_trunc('day', t) AS day_start, granularity_ceil('day', t) AS day_ceil
FROM unnest('{2023-11-05 04:30+00, 2023-11-05 05:30+00, 2023-11-05 06:00+00, 2023-11-05 06:30+00, 2023-11-05 07:30+00}'::timestamptz[]) t;
-- Spring forward: 02:00-03:00 local does not exist; the day of 2023-03-12 has 23 hours.
SELECT t, granularity_trunc('hour', t) AS hour_start, granularity_ceil('hour', t) AS hour_ceil,
       granularity_trunc('day', t) AS day_start, granularity_ceil('day', t) AS day_ceil
FROM unnest('{2023-03-12 06:30+00, 2023-03-12 07:00+00, 2023-03-12 07:30+00}'::timestamptz[]) t;
SELECT granularity_ceil('day', '2023-03-12 05:00:00.000001+00') - granularity_trunc('day', '2023-03-12 12:00+00') AS spring_day,
       granularity_ceil('day', '2023-11-05 04:00:00.000001+00') - granularity_trunc('day', '2023-11-05 12:00+00') AS fall_day,
       granularity_trunc('week', '2023-11-08 12:00+00') AS week_start;

-- Europe/Berlin: the month of March 2023 is one hour short.
SELECT set_billing_timezone('Europe/Berlin');
SELECT cycle_range('2023-03'), upper(cycle_range('2023-03')) - lower(cycle_range('2023-03')) AS length;

-- America/Havana falls back at 01:00 CDT -> 00:00 CST, so local midnight of 2023-11-05 happens
-- twice (04:00 and 05:00 UTC); the day starts at the first one, and no instant precedes its day.
SELECT set_billing_timezone('America/Havana');
SELECT t, granularity_trunc('day', t) AS day_start, granularity_ceil('day', t) AS day_ceil,
       granularity_trunc('hour', t) AS hour_start, granularity_ceil('hour', t) AS hour_ceil
FROM unnest('{2023-11-05 03:30+00, 2023-11-05 04:00+00, 2023-11-05 04:30+00, 2023-11-05 05:00+00, 2023-11-05 05:30+00}'::timestamptz[]) t;

-- Australia/Lord_Howe falls back half an hour (02:00 +11 -> 01:30 +10:30 at 15:00 UTC): the
-- wall-clock hour 01:00-02:00 lasts 90 minutes, from 14:00 to 15:30 UTC.
SELECT set_billing_timezone('Australia/Lord_Howe');
SELECT t, granularity_trunc('hour', t) AS hour_start, granularity_ceil('hour', t) AS hour_ceil
FROM unnest('{2023-04-01 14:00+00, 2023-04-01 14:45+00, 2023-04-01 15:00+00, 2023-04-01 15:15+00, 2023-04-01 15:30+00}'::timestamptz[]) t;

-- For instants sampled around the DST changes of 2018 and 2023, every granularity and several
-- zones: trunc <= t <= ceil, ceil = t exactly when trunc = t, and trunc and ceil are boundaries
-- (their own trunc and ceil).  day_start shows the zone was in force.
CREATE TEMP TABLE zones (zone text);
INSERT INTO zones VALUES ('UTC'), ('Asia/Shanghai'), ('Asia/Kolkata'), ('America/New_York'), ('Europe/Berlin'),
    ('America/Havana'), ('Asia/Beirut'), ('America/Sao_Paulo'), ('Australia/Lord_Howe');
CREATE FUNCTION pg_temp.violations(zone text, OUT day_start timestamptz, OUT violations bigint) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tco.set_billing_timezone(zone);
    day_start := tco.granularity_trunc('day', '2018-11-04 12:00+00');
    SELECT count(*) INTO violations
    FROM (SELECT generate_series('2018-10-27 00:00+00'::timestamptz, '2018-11-06 00:00+00', '17 min 13 s')
          UNION ALL
          SELECT generate_series('2023-03-31 00:00+00'::timestamptz, '2023-04-03 00:00+00', '7 min 1 s')) AS s(t),
         unnest(enum_range(NULL::tco.granularity)) g,
         LATERAL (SELECT tco.granularity_trunc(g, t) AS lo, tco.granularity_ceil(g, t) AS hi) b
    WHERE NOT (b.lo <= t AND t <= b.hi
               AND tco.granularity_trunc(g, b.lo) = b.lo AND tco.granularity_ceil(g, b.hi) = b.hi
               AND (b.hi = t) = (b.lo = t)
               AND tco.granularity_trunc(g, b.hi) = b.hi);
END $$;
SELECT zone, v.* FROM zones, pg_temp.violations(zone) v ORDER BY zone;

SELECT set_billing_timezone('UTC');
SELECT cycle_of('2023-01-31 16:00:00+00');
