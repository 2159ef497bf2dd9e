/*
 * src/cycle.c
 *
 * The base type tco.billing_cycle: a calendar month in the billing time zone,
 * the unit of settlement.  Stored as int32 year * 12 + (month - 1), years
 * 0001..9999, so comparison is integer comparison and `cycle + n` adds months.
 *
 * Text form: exactly YYYY-MM.  Leading and trailing whitespace is ignored,
 * as int4in and date_in do.  Errors:
 *   22P02 invalid_text_representation  anything not of the form DDDD-DD
 *                                      (empty, signs, 5-digit years, junk)
 *   22008 datetime_field_overflow      the right form, but month 00 or 13..99
 *                                      or year 0000
 *   22008 datetime_value_out_of_range  arithmetic or conversions that leave
 *                                      0001-01..9999-12, infinite dates and
 *                                      timestamps
 *   22P03 invalid_binary_representation  bad version byte or value on recv
 *   22023 invalid_parameter_value      unknown time zone name
 *
 * Binary form: a version byte (1), then the int32, as ltree does.
 *
 * Also here: the SQL face of billing time (cycle_of, cycle_range and the
 * granularity boundaries of billing_time.c) in the billing time zone of
 * config.c or an explicit one.
 */
#include "postgres.h"

#include <ctype.h>

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "fmgr.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/rangetypes.h"
#include "utils/sortsupport.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "tco.h"

#define BILLING_CYCLE_BINARY_VERSION 1

static void
cycle_out_of_range(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
			 errmsg("billing cycle out of range"),
			 errdetail("Billing cycles run from 0001-01 to 9999-12.")));
}

static BillingCycle
checked_cycle(int64 c)
{
	if (c < TCO_CYCLE_MIN || c > TCO_CYCLE_MAX)
		cycle_out_of_range();
	return (BillingCycle) c;
}

/* Text form into buf (at least 8 bytes). */
static void
cycle_to_cstring(BillingCycle c, char *buf, size_t len)
{
	snprintf(buf, len, "%04d-%02d", c / 12, c % 12 + 1);
}

/* Time zone by name, as SET timezone accepts it; unknown names raise 22023. */
static pg_tz *
zone_by_name(text *zone)
{
	return tco_zone_by_name(text_to_cstring(zone), false);
}

/* The granularity named by a tco.granularity enum value. */
static TcoGranularity
granularity_of_enum(Datum enumval)
{
	return tco_granularity_from_name(DatumGetCString(DirectFunctionCall1(enum_out, enumval)));
}

/* [start of cycle c, start of cycle c + 1) in tz. */
static RangeType *
cycle_range(BillingCycle c, pg_tz *tz)
{
	TypeCacheEntry *typcache = lookup_type_cache(TSTZRANGEOID, TYPECACHE_RANGE_INFO);
	RangeBound	lower,
				upper;
	TimestampTz start = tco_cycle_start(c, tz);

	lower.val = TimestampTzGetDatum(start);
	lower.infinite = false;
	lower.inclusive = true;
	lower.lower = true;
	/* The end of 9999-12 is the start of "10000-01", outside the type but a valid instant. */
	upper.val = TimestampTzGetDatum(c == TCO_CYCLE_MAX
									? tco_boundary_ceil(start + 1, TCO_GRAN_MONTH, tz)
									: tco_cycle_start(c + 1, tz));
	upper.infinite = false;
	upper.inclusive = false;
	upper.lower = false;
	return make_range(typcache, &lower, &upper, false);
}

/* ---- I/O ---- */

PG_FUNCTION_INFO_V1(billing_cycle_in);
Datum
billing_cycle_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);
	const char *p = str;
	const char *end;
	int			year,
				month;

	while (*p && isspace((unsigned char) *p))
		p++;
	end = p + strlen(p);
	while (end > p && isspace((unsigned char) end[-1]))
		end--;

	if (end - p != 7 ||
		!isdigit((unsigned char) p[0]) || !isdigit((unsigned char) p[1]) ||
		!isdigit((unsigned char) p[2]) || !isdigit((unsigned char) p[3]) ||
		p[4] != '-' ||
		!isdigit((unsigned char) p[5]) || !isdigit((unsigned char) p[6]))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type billing_cycle: \"%s\"", str),
				 errdetail("A billing cycle is written YYYY-MM, e.g. \"2023-01\".")));

	year = (p[0] - '0') * 1000 + (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
	month = (p[5] - '0') * 10 + (p[6] - '0');
	if (year < 1 || month < 1 || month > 12)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_FIELD_OVERFLOW),
				 errmsg("billing cycle field value out of range: \"%s\"", str),
				 errdetail("The year must be 0001 to 9999 and the month 01 to 12.")));

	PG_RETURN_BILLING_CYCLE(year * 12 + (month - 1));
}

PG_FUNCTION_INFO_V1(billing_cycle_out);
Datum
billing_cycle_out(PG_FUNCTION_ARGS)
{
	BillingCycle c = PG_GETARG_BILLING_CYCLE(0);
	char		buf[32];

	cycle_to_cstring(c, buf, sizeof(buf));
	PG_RETURN_CSTRING(pstrdup(buf));
}

PG_FUNCTION_INFO_V1(billing_cycle_recv);
Datum
billing_cycle_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int			version = pq_getmsgbyte(buf);
	int32		c;

	if (version != BILLING_CYCLE_BINARY_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("unsupported billing_cycle binary version number %d", version)));
	c = pq_getmsgint(buf, 4);
	if (c < TCO_CYCLE_MIN || c > TCO_CYCLE_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("billing_cycle value %d out of range in binary input", c),
				 errdetail("Billing cycles run from 0001-01 to 9999-12.")));
	PG_RETURN_BILLING_CYCLE(c);
}

PG_FUNCTION_INFO_V1(billing_cycle_send);
Datum
billing_cycle_send(PG_FUNCTION_ARGS)
{
	BillingCycle c = PG_GETARG_BILLING_CYCLE(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendbyte(&buf, BILLING_CYCLE_BINARY_VERSION);
	pq_sendint32(&buf, c);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* ---- comparison and hashing ---- */

PG_FUNCTION_INFO_V1(billing_cycle_cmp);
Datum
billing_cycle_cmp(PG_FUNCTION_ARGS)
{
	BillingCycle a = PG_GETARG_BILLING_CYCLE(0);
	BillingCycle b = PG_GETARG_BILLING_CYCLE(1);

	PG_RETURN_INT32(a < b ? -1 : (a > b ? 1 : 0));
}

PG_FUNCTION_INFO_V1(billing_cycle_sortsupport);
Datum
billing_cycle_sortsupport(PG_FUNCTION_ARGS)
{
	SortSupport ssup = (SortSupport) PG_GETARG_POINTER(0);

	ssup->comparator = ssup_datum_int32_cmp;
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(billing_cycle_lt);
Datum
billing_cycle_lt(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(PG_GETARG_BILLING_CYCLE(0) < PG_GETARG_BILLING_CYCLE(1));
}

PG_FUNCTION_INFO_V1(billing_cycle_le);
Datum
billing_cycle_le(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(PG_GETARG_BILLING_CYCLE(0) <= PG_GETARG_BILLING_CYCLE(1));
}

PG_FUNCTION_INFO_V1(billing_cycle_eq);
Datum
billing_cycle_eq(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(PG_GETARG_BILLING_CYCLE(0) == PG_GETARG_BILLING_CYCLE(1));
}

PG_FUNCTION_INFO_V1(billing_cycle_ne);
Datum
billing_cycle_ne(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(PG_GETARG_BILLING_CYCLE(0) != PG_GETARG_BILLING_CYCLE(1));
}

PG_FUNCTION_INFO_V1(billing_cycle_ge);
Datum
billing_cycle_ge(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(PG_GETARG_BILLING_CYCLE(0) >= PG_GETARG_BILLING_CYCLE(1));
}

PG_FUNCTION_INFO_V1(billing_cycle_gt);
Datum
billing_cycle_gt(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(PG_GETARG_BILLING_CYCLE(0) > PG_GETARG_BILLING_CYCLE(1));
}

PG_FUNCTION_INFO_V1(billing_cycle_hash);
Datum
billing_cycle_hash(PG_FUNCTION_ARGS)
{
	return hash_uint32((uint32) PG_GETARG_BILLING_CYCLE(0));
}

PG_FUNCTION_INFO_V1(billing_cycle_hash_extended);
Datum
billing_cycle_hash_extended(PG_FUNCTION_ARGS)
{
	return hash_uint32_extended((uint32) PG_GETARG_BILLING_CYCLE(0), PG_GETARG_INT64(1));
}

/* ---- arithmetic (months) ---- */

static BillingCycle
cycle_add_months(BillingCycle c, int32 months)
{
	int32		result;

	if (pg_add_s32_overflow(c, months, &result))
		cycle_out_of_range();
	return checked_cycle(result);
}

PG_FUNCTION_INFO_V1(billing_cycle_pl_int4);
Datum
billing_cycle_pl_int4(PG_FUNCTION_ARGS)
{
	PG_RETURN_BILLING_CYCLE(cycle_add_months(PG_GETARG_BILLING_CYCLE(0), PG_GETARG_INT32(1)));
}

PG_FUNCTION_INFO_V1(billing_cycle_int4_pl);
Datum
billing_cycle_int4_pl(PG_FUNCTION_ARGS)
{
	PG_RETURN_BILLING_CYCLE(cycle_add_months(PG_GETARG_BILLING_CYCLE(1), PG_GETARG_INT32(0)));
}

PG_FUNCTION_INFO_V1(billing_cycle_mi_int4);
Datum
billing_cycle_mi_int4(PG_FUNCTION_ARGS)
{
	BillingCycle c = PG_GETARG_BILLING_CYCLE(0);
	int32		months = PG_GETARG_INT32(1);
	int32		result;

	if (pg_sub_s32_overflow(c, months, &result))
		cycle_out_of_range();
	PG_RETURN_BILLING_CYCLE(checked_cycle(result));
}

/* Months from b to a; both are in range, so the difference fits easily. */
PG_FUNCTION_INFO_V1(billing_cycle_mi);
Datum
billing_cycle_mi(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(PG_GETARG_BILLING_CYCLE(0) - PG_GETARG_BILLING_CYCLE(1));
}

/* ---- conversions with date ---- */

PG_FUNCTION_INFO_V1(billing_cycle_from_date);
Datum
billing_cycle_from_date(PG_FUNCTION_ARGS)
{
	DateADT		date = PG_GETARG_DATEADT(0);
	int			y,
				m,
				d;

	if (DATE_NOT_FINITE(date))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("cannot convert infinite date to billing_cycle")));
	j2date(date + POSTGRES_EPOCH_JDATE, &y, &m, &d);
	if (y < 1 || y > 9999)
		cycle_out_of_range();
	PG_RETURN_BILLING_CYCLE(y * 12 + (m - 1));
}

PG_FUNCTION_INFO_V1(billing_cycle_start_date);
Datum
billing_cycle_start_date(PG_FUNCTION_ARGS)
{
	BillingCycle c = PG_GETARG_BILLING_CYCLE(0);

	PG_RETURN_DATEADT(date2j(c / 12, c % 12 + 1, 1) - POSTGRES_EPOCH_JDATE);
}

PG_FUNCTION_INFO_V1(billing_cycle_end_date);
Datum
billing_cycle_end_date(PG_FUNCTION_ARGS)
{
	BillingCycle c = PG_GETARG_BILLING_CYCLE(0) + 1;

	/* The day before the first day of the next month (10000-01 is still a valid date). */
	PG_RETURN_DATEADT(date2j(c / 12, c % 12 + 1, 1) - 1 - POSTGRES_EPOCH_JDATE);
}

/* ---- billing time ---- */

PG_FUNCTION_INFO_V1(tco_cycle_of_billing_tz);
Datum
tco_cycle_of_billing_tz(PG_FUNCTION_ARGS)
{
	PG_RETURN_BILLING_CYCLE(tco_cycle_of(PG_GETARG_TIMESTAMPTZ(0), tco_billing_tz()));
}

PG_FUNCTION_INFO_V1(tco_cycle_of_zone);
Datum
tco_cycle_of_zone(PG_FUNCTION_ARGS)
{
	PG_RETURN_BILLING_CYCLE(tco_cycle_of(PG_GETARG_TIMESTAMPTZ(0), zone_by_name(PG_GETARG_TEXT_PP(1))));
}

PG_FUNCTION_INFO_V1(tco_cycle_range_billing_tz);
Datum
tco_cycle_range_billing_tz(PG_FUNCTION_ARGS)
{
	PG_RETURN_RANGE_P(cycle_range(PG_GETARG_BILLING_CYCLE(0), tco_billing_tz()));
}

PG_FUNCTION_INFO_V1(tco_cycle_range_zone);
Datum
tco_cycle_range_zone(PG_FUNCTION_ARGS)
{
	PG_RETURN_RANGE_P(cycle_range(PG_GETARG_BILLING_CYCLE(0), zone_by_name(PG_GETARG_TEXT_PP(1))));
}

PG_FUNCTION_INFO_V1(tco_granularity_trunc);
Datum
tco_granularity_trunc(PG_FUNCTION_ARGS)
{
	TcoGranularity g = granularity_of_enum(PG_GETARG_DATUM(0));

	PG_RETURN_TIMESTAMPTZ(tco_trunc(PG_GETARG_TIMESTAMPTZ(1), g, tco_billing_tz()));
}

PG_FUNCTION_INFO_V1(tco_granularity_ceil);
Datum
tco_granularity_ceil(PG_FUNCTION_ARGS)
{
	TcoGranularity g = granularity_of_enum(PG_GETARG_DATUM(0));

	PG_RETURN_TIMESTAMPTZ(tco_boundary_ceil(PG_GETARG_TIMESTAMPTZ(1), g, tco_billing_tz()));
}
