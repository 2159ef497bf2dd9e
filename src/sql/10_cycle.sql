-- The billing cycle type (src/cycle.c) and billing time (src/billing_time.c):
-- calendar months, cycle ranges and granularity boundaries in the billing time zone.

CREATE TYPE tco.billing_cycle;

CREATE FUNCTION tco.billing_cycle_in(cstring) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_out(tco.billing_cycle) RETURNS cstring
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_recv(internal) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_send(tco.billing_cycle) RETURNS bytea
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE tco.billing_cycle (
    INPUT = tco.billing_cycle_in,
    OUTPUT = tco.billing_cycle_out,
    RECEIVE = tco.billing_cycle_recv,
    SEND = tco.billing_cycle_send,
    INTERNALLENGTH = 4,
    PASSEDBYVALUE,
    ALIGNMENT = int4,
    STORAGE = plain
);
COMMENT ON TYPE tco.billing_cycle IS 'A billing cycle: a calendar month in the billing time zone, written YYYY-MM (0001-01 to 9999-12); cycle + n adds n months, cycle - cycle counts months.';
COMMENT ON FUNCTION tco.billing_cycle_in(cstring) IS 'Input of tco.billing_cycle: exactly YYYY-MM, surrounding whitespace ignored.';
COMMENT ON FUNCTION tco.billing_cycle_out(tco.billing_cycle) IS 'Output of tco.billing_cycle as YYYY-MM.';
COMMENT ON FUNCTION tco.billing_cycle_recv(internal) IS 'Binary input of tco.billing_cycle: a version byte (1), then the month number as int4.';
COMMENT ON FUNCTION tco.billing_cycle_send(tco.billing_cycle) IS 'Binary output of tco.billing_cycle: a version byte (1), then year * 12 + month - 1 as int4.';

-- Comparison.
CREATE FUNCTION tco.billing_cycle_cmp(tco.billing_cycle, tco.billing_cycle) RETURNS int4
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_sortsupport(internal) RETURNS void
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_lt(tco.billing_cycle, tco.billing_cycle) RETURNS boolean
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tco.billing_cycle_le(tco.billing_cycle, tco.billing_cycle) RETURNS boolean
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tco.billing_cycle_eq(tco.billing_cycle, tco.billing_cycle) RETURNS boolean
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tco.billing_cycle_ne(tco.billing_cycle, tco.billing_cycle) RETURNS boolean
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tco.billing_cycle_ge(tco.billing_cycle, tco.billing_cycle) RETURNS boolean
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tco.billing_cycle_gt(tco.billing_cycle, tco.billing_cycle) RETURNS boolean
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tco.billing_cycle_hash(tco.billing_cycle) RETURNS int4
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_hash_extended(tco.billing_cycle, int8) RETURNS int8
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tco.billing_cycle_cmp(tco.billing_cycle, tco.billing_cycle) IS 'Btree comparison of billing cycles: -1, 0 or 1.';
COMMENT ON FUNCTION tco.billing_cycle_sortsupport(internal) IS 'Btree sort support for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_lt(tco.billing_cycle, tco.billing_cycle) IS 'Implementation of < for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_le(tco.billing_cycle, tco.billing_cycle) IS 'Implementation of <= for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_eq(tco.billing_cycle, tco.billing_cycle) IS 'Implementation of = for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_ne(tco.billing_cycle, tco.billing_cycle) IS 'Implementation of <> for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_ge(tco.billing_cycle, tco.billing_cycle) IS 'Implementation of >= for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_gt(tco.billing_cycle, tco.billing_cycle) IS 'Implementation of > for tco.billing_cycle.';
COMMENT ON FUNCTION tco.billing_cycle_hash(tco.billing_cycle) IS 'Hash of a billing cycle (hash joins, hash aggregation, hash indexes).';
COMMENT ON FUNCTION tco.billing_cycle_hash_extended(tco.billing_cycle, int8) IS 'Seeded 64-bit hash of a billing cycle (hash partitioning).';

CREATE OPERATOR tco.< (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_lt,
    COMMUTATOR = OPERATOR(tco.>), NEGATOR = OPERATOR(tco.>=),
    RESTRICT = scalarltsel, JOIN = scalarltjoinsel
);
CREATE OPERATOR tco.<= (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_le,
    COMMUTATOR = OPERATOR(tco.>=), NEGATOR = OPERATOR(tco.>),
    RESTRICT = scalarlesel, JOIN = scalarlejoinsel
);
CREATE OPERATOR tco.= (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_eq,
    COMMUTATOR = OPERATOR(tco.=), NEGATOR = OPERATOR(tco.<>),
    RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES
);
CREATE OPERATOR tco.<> (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_ne,
    COMMUTATOR = OPERATOR(tco.<>), NEGATOR = OPERATOR(tco.=),
    RESTRICT = neqsel, JOIN = neqjoinsel
);
CREATE OPERATOR tco.>= (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_ge,
    COMMUTATOR = OPERATOR(tco.<=), NEGATOR = OPERATOR(tco.<),
    RESTRICT = scalargesel, JOIN = scalargejoinsel
);
CREATE OPERATOR tco.> (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_gt,
    COMMUTATOR = OPERATOR(tco.<), NEGATOR = OPERATOR(tco.<=),
    RESTRICT = scalargtsel, JOIN = scalargtjoinsel
);

CREATE OPERATOR CLASS tco.billing_cycle_ops
    DEFAULT FOR TYPE tco.billing_cycle USING btree AS
        OPERATOR 1 tco.<,
        OPERATOR 2 tco.<=,
        OPERATOR 3 tco.=,
        OPERATOR 4 tco.>=,
        OPERATOR 5 tco.>,
        FUNCTION 1 tco.billing_cycle_cmp(tco.billing_cycle, tco.billing_cycle),
        FUNCTION 2 tco.billing_cycle_sortsupport(internal),
        FUNCTION 4 pg_catalog.btequalimage(oid);
COMMENT ON OPERATOR CLASS tco.billing_cycle_ops USING btree IS 'Chronological order of billing cycles.';

CREATE OPERATOR CLASS tco.billing_cycle_ops
    DEFAULT FOR TYPE tco.billing_cycle USING hash AS
        OPERATOR 1 tco.=,
        FUNCTION 1 tco.billing_cycle_hash(tco.billing_cycle),
        FUNCTION 2 tco.billing_cycle_hash_extended(tco.billing_cycle, int8);
COMMENT ON OPERATOR CLASS tco.billing_cycle_ops USING hash IS 'Hashing of billing cycles.';

-- Arithmetic in months.
CREATE FUNCTION tco.billing_cycle_pl_int4(tco.billing_cycle, int4) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_int4_pl(int4, tco.billing_cycle) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_mi_int4(tco.billing_cycle, int4) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.billing_cycle_mi(tco.billing_cycle, tco.billing_cycle) RETURNS int4
    AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tco.billing_cycle_pl_int4(tco.billing_cycle, int4) IS 'cycle + n: the cycle n months later (error 22008 outside 0001-01 to 9999-12).';
COMMENT ON FUNCTION tco.billing_cycle_int4_pl(int4, tco.billing_cycle) IS 'n + cycle: the cycle n months later (error 22008 outside 0001-01 to 9999-12).';
COMMENT ON FUNCTION tco.billing_cycle_mi_int4(tco.billing_cycle, int4) IS 'cycle - n: the cycle n months earlier (error 22008 outside 0001-01 to 9999-12).';
COMMENT ON FUNCTION tco.billing_cycle_mi(tco.billing_cycle, tco.billing_cycle) IS 'a - b: the number of months from cycle b to cycle a.';

CREATE OPERATOR tco.+ (
    LEFTARG = tco.billing_cycle, RIGHTARG = int4, FUNCTION = tco.billing_cycle_pl_int4,
    COMMUTATOR = OPERATOR(tco.+)
);
CREATE OPERATOR tco.+ (
    LEFTARG = int4, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_int4_pl,
    COMMUTATOR = OPERATOR(tco.+)
);
CREATE OPERATOR tco.- (
    LEFTARG = tco.billing_cycle, RIGHTARG = int4, FUNCTION = tco.billing_cycle_mi_int4
);
CREATE OPERATOR tco.- (
    LEFTARG = tco.billing_cycle, RIGHTARG = tco.billing_cycle, FUNCTION = tco.billing_cycle_mi
);

-- Conversions.
CREATE FUNCTION tco.billing_cycle(date) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME', 'billing_cycle_from_date' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.cycle_start_date(tco.billing_cycle) RETURNS date
    AS 'MODULE_PATHNAME', 'billing_cycle_start_date' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.cycle_end_date(tco.billing_cycle) RETURNS date
    AS 'MODULE_PATHNAME', 'billing_cycle_end_date' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tco.billing_cycle(date) IS 'The billing cycle (calendar month) containing a date; infinite dates are an error.';
COMMENT ON FUNCTION tco.cycle_start_date(tco.billing_cycle) IS 'The first day of a billing cycle.';
COMMENT ON FUNCTION tco.cycle_end_date(tco.billing_cycle) IS 'The last day of a billing cycle.';

CREATE CAST (text AS tco.billing_cycle) WITH INOUT AS ASSIGNMENT;
-- Implicit to text, so that what BI tools and drivers send works without tco
-- on the search_path (DESIGN section 6): `cycle = '2023-02'`, ranges, IN
-- lists and text parameters compare as text, and the text form YYYY-MM
-- orders exactly as the cycles do (years are four digits).  With tco on the
-- path, a literal still resolves to the type's own operators (an unknown
-- literal takes the other operand's type first).  README "BI tools".
CREATE CAST (tco.billing_cycle AS text) WITH INOUT AS IMPLICIT;
CREATE CAST (date AS tco.billing_cycle) WITH FUNCTION tco.billing_cycle(date);
CREATE CAST (tco.billing_cycle AS date) WITH FUNCTION tco.cycle_start_date(tco.billing_cycle);
COMMENT ON CAST (text AS tco.billing_cycle) IS 'Parses YYYY-MM.';
COMMENT ON CAST (tco.billing_cycle AS text) IS 'Formats as YYYY-MM; implicit, so a cycle compares with text literals and parameters under any search_path.';
COMMENT ON CAST (date AS tco.billing_cycle) IS 'The calendar month containing the date.';
COMMENT ON CAST (tco.billing_cycle AS date) IS 'The first day of the month.';

-- Billing time: cycles and boundaries of instants in the billing time zone
-- (tco.set_billing_timezone) or an explicit one.  STABLE: they read tco.config.
CREATE FUNCTION tco.cycle_of(timestamptz) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME', 'tco_cycle_of_billing_tz' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.cycle_of(timestamptz, zone text) RETURNS tco.billing_cycle
    AS 'MODULE_PATHNAME', 'tco_cycle_of_zone' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.cycle_range(tco.billing_cycle) RETURNS tstzrange
    AS 'MODULE_PATHNAME', 'tco_cycle_range_billing_tz' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.cycle_range(tco.billing_cycle, zone text) RETURNS tstzrange
    AS 'MODULE_PATHNAME', 'tco_cycle_range_zone' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.granularity_trunc(tco.granularity, timestamptz) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'tco_granularity_trunc' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tco.granularity_ceil(tco.granularity, timestamptz) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'tco_granularity_ceil' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tco.cycle_of(timestamptz) IS 'The billing cycle containing an instant, in the billing time zone.';
COMMENT ON FUNCTION tco.cycle_of(timestamptz, text) IS 'The billing cycle containing an instant, in the given time zone (error 22023 if unknown).';
COMMENT ON FUNCTION tco.cycle_range(tco.billing_cycle) IS 'The instants of a billing cycle in the billing time zone: [local midnight of day 1, local midnight of day 1 of the next month).';
COMMENT ON FUNCTION tco.cycle_range(tco.billing_cycle, text) IS 'The instants of a billing cycle in the given time zone (error 22023 if unknown).';
COMMENT ON FUNCTION tco.granularity_trunc(tco.granularity, timestamptz) IS 'Start of the minute, hour, day, ISO week (Monday) or month containing an instant, in the billing time zone.';
COMMENT ON FUNCTION tco.granularity_ceil(tco.granularity, timestamptz) IS 'First minute, hour, day, ISO week or month boundary at or after an instant, in the billing time zone: where a payer switch takes effect (rule R6).';
