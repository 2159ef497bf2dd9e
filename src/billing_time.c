/*
 * src/billing_time.c
 *
 * Calendar arithmetic in a time zone: the billing cycle (calendar month) of
 * an instant, and the minute/hour/day/ISO-week/month boundaries that decide
 * when a payer switch takes effect (DESIGN.md section 3).
 *
 * A boundary of granularity g is an instant at which the local wall clock of
 * the zone starts a new minute, hour, day, ISO week (Monday) or month.  The
 * conversions use PostgreSQL's own machinery, as date_trunc() on timestamptz
 * does (timestamptz_trunc_internal in src/backend/utils/adt/timestamp.c):
 *
 * - minute and hour are truncated under the UTC offset in force at t and
 *   advanced by adding the unit in absolute time, so in a fall-back hour
 *   that repeats each repetition is its own hour (where an offset change is
 *   not a whole hour, as in Australia/Lord_Howe, the result is re-checked
 *   against the wall clock, see on_clock_boundary());
 * - day, week and month are found by calendar arithmetic on the local date
 *   and converted back to an instant with DetermineTimeZoneOffset().
 *
 * Local midnight is not always a single instant.  When a DST gap swallows it
 * (America/Sao_Paulo until 2018) the day starts at the end of the gap, which
 * is what DetermineTimeZoneOffset() yields.  When a fall-back repeats it
 * (America/Havana: 01:00 CDT -> 00:00 CST) DetermineTimeZoneOffset() yields
 * the later reading, which would put the start of a day after instants that
 * already belong to it; local_midnight() therefore also finds the earlier
 * reading, and the start of a day is the earliest one.  With that,
 * tco_trunc(t) <= t < tco_boundary_ceil(t) for every t not on a boundary.
 *
 * Infinite or out-of-range timestamps raise ERRCODE_DATETIME_VALUE_OUT_OF_RANGE.
 */
#include "postgres.h"

#include "common/int.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "tco.h"

static void
timestamp_out_of_range(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
			 errmsg("timestamp out of range")));
}

/* Local wall time of t in tz; *offset gets the UTC offset in force (seconds west). */
static void
local_time(TimestampTz t, pg_tz *tz, struct pg_tm *tm, fsec_t *fsec, int *offset)
{
	if (TIMESTAMP_NOT_FINITE(t))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range"),
				 errdetail("Billing time has no cycle or boundary at infinity.")));
	if (timestamp2tm(t, offset, tm, fsec, NULL, tz) != 0)
		timestamp_out_of_range();
}

/* The instant whose local wall time in the given offset is *tm (fields of seconds and up). */
static TimestampTz
instant_at(struct pg_tm *tm, int offset)
{
	TimestampTz result;

	if (tm2timestamp(tm, 0, &offset, &result) != 0 || !IS_VALID_TIMESTAMP(result))
		timestamp_out_of_range();
	return result;
}

/*
 * Local midnight starting date y-m-d in tz.  *earliest gets the first
 * instant at which the wall clock reads that midnight (or where the day
 * begins, if a gap skips it), *latest the last one; they differ only when a
 * fall-back makes midnight happen twice.
 */
static void
local_midnight(int y, int m, int d, pg_tz *tz, TimestampTz *earliest, TimestampTz *latest)
{
	struct pg_tm tm;
	int			offset;
	TimestampTz result;

	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y;
	tm.tm_mon = m;
	tm.tm_mday = d;
	offset = DetermineTimeZoneOffset(&tm, tz);
	result = instant_at(&tm, offset);

	/*
	 * In a DST gap that swallows midnight, DetermineTimeZoneOffset() resolves
	 * 00:00 under one of the two offsets, an instant at which the clock reads
	 * another time: under the offset before the gap it is after the gap's end
	 * (America/Toronto, 1919-03-30 23:30 EST -> 1919-03-31 00:30 EDT: "00:00
	 * EST" reads 01:00 EDT), under the one after it the day before.  The day
	 * then begins at the end of the gap: the first instant whose wall clock
	 * reads y-m-d or later, found by bisection on whole seconds
	 * (transitions are on whole seconds) within a day either side.
	 */
	{
		struct pg_tm now;
		fsec_t		fsec;
		int			now_offset;
		int			target = date2j(y, m, d);

		if (timestamp2tm(result, &now_offset, &now, &fsec, NULL, tz) == 0 &&
			!(date2j(now.tm_year, now.tm_mon, now.tm_mday) == target &&
			  now.tm_hour == 0 && now.tm_min == 0 && now.tm_sec == 0 && fsec == 0))
		{
			TimestampTz lo = result - USECS_PER_DAY;
			TimestampTz hi = result + USECS_PER_DAY;
			struct pg_tm lo_tm,
						hi_tm;

			if (IS_VALID_TIMESTAMP(lo) && IS_VALID_TIMESTAMP(hi) &&
				timestamp2tm(lo, &now_offset, &lo_tm, &fsec, NULL, tz) == 0 &&
				timestamp2tm(hi, &now_offset, &hi_tm, &fsec, NULL, tz) == 0 &&
				date2j(lo_tm.tm_year, lo_tm.tm_mon, lo_tm.tm_mday) < target &&
				date2j(hi_tm.tm_year, hi_tm.tm_mon, hi_tm.tm_mday) >= target)
			{
				/* lo and hi on whole seconds of result */
				while (hi - lo > USECS_PER_SEC)
				{
					TimestampTz mid = lo + ((hi - lo) / 2 / USECS_PER_SEC) * USECS_PER_SEC;

					if (timestamp2tm(mid, &now_offset, &now, &fsec, NULL, tz) != 0)
						break;
					if (date2j(now.tm_year, now.tm_mon, now.tm_mday) >= target)
						hi = mid;
					else
						lo = mid;
				}
				result = hi;
			}
		}
	}
	*earliest = *latest = result;

	/*
	 * DetermineTimeZoneOffset() resolves an ambiguous wall time to the later
	 * reading.  If the offset in force just before that instant differs,
	 * midnight under that offset may be an earlier reading of the same wall
	 * time: take it if the clock really showed y-m-d 00:00:00 then.
	 */
	if (result > MIN_TIMESTAMP)
	{
		struct pg_tm before;
		fsec_t		fsec;
		int			before_offset;

		if (timestamp2tm(result - 1, &before_offset, &before, &fsec, NULL, tz) == 0 &&
			before_offset != offset)
		{
			TimestampTz candidate;
			struct pg_tm check;
			int			check_offset;

			memset(&tm, 0, sizeof(tm));
			tm.tm_year = y;
			tm.tm_mon = m;
			tm.tm_mday = d;
			if (tm2timestamp(&tm, 0, &before_offset, &candidate) == 0 &&
				IS_VALID_TIMESTAMP(candidate) && candidate < result &&
				timestamp2tm(candidate, &check_offset, &check, &fsec, NULL, tz) == 0 &&
				check.tm_year == y && check.tm_mon == m && check.tm_mday == d &&
				check.tm_hour == 0 && check.tm_min == 0 && check.tm_sec == 0 && fsec == 0)
				*earliest = candidate;
		}
	}
}

/* Julian day of the Monday starting the ISO week that contains Julian day j. */
static int
iso_week_start(int j)
{
	/* j2day: 0 = Sunday ... 6 = Saturday */
	return j - (j2day(j) + 6) % 7;
}

/* Local date (Julian day) at which the period of granularity g containing local date j starts. */
static int
period_start_day(int j, TcoGranularity g)
{
	int			y,
				m,
				d;

	switch (g)
	{
		case TCO_GRAN_DAY:
			return j;
		case TCO_GRAN_WEEK:
			return iso_week_start(j);
		case TCO_GRAN_MONTH:
			j2date(j, &y, &m, &d);
			return date2j(y, m, 1);
		default:
			elog(ERROR, "granularity %d is not calendar based", (int) g);
	}
	return j;					/* keep compiler quiet */
}

/* Local date (Julian day) at which the period of granularity g after the one starting at j starts. */
static int
next_period_day(int j, TcoGranularity g)
{
	int			y,
				m,
				d;

	switch (g)
	{
		case TCO_GRAN_DAY:
			return j + 1;
		case TCO_GRAN_WEEK:
			return j + 7;
		case TCO_GRAN_MONTH:
			j2date(j, &y, &m, &d);
			return m == 12 ? date2j(y + 1, 1, 1) : date2j(y, m + 1, 1);
		default:
			elog(ERROR, "granularity %d is not calendar based", (int) g);
	}
	return j;					/* keep compiler quiet */
}

static int64
unit_usecs(TcoGranularity g)
{
	return g == TCO_GRAN_MINUTE ? USECS_PER_MINUTE : USECS_PER_HOUR;
}

/* The start of the minute or hour of wall time *tm, read under the given offset. */
static TimestampTz
clock_floor(struct pg_tm *tm, int offset, TcoGranularity g)
{
	if (g == TCO_GRAN_HOUR)
		tm->tm_min = 0;
	tm->tm_sec = 0;
	return instant_at(tm, offset);
}

/* Does the wall clock of tz read a whole minute (or hour) at instant t? */
static bool
on_clock_boundary(TimestampTz t, TcoGranularity g, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			offset;

	local_time(t, tz, &tm, &fsec, &offset);
	return fsec == 0 && tm.tm_sec == 0 && (g == TCO_GRAN_MINUTE || tm.tm_min == 0);
}

static void
check_granularity(TcoGranularity g)
{
	if ((int) g < (int) TCO_GRAN_MINUTE || (int) g > (int) TCO_GRAN_MONTH)
		elog(ERROR, "invalid granularity %d", (int) g);
}

BillingCycle
tco_cycle_of(TimestampTz t, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			offset;

	local_time(t, tz, &tm, &fsec, &offset);
	if (tm.tm_year < 1 || tm.tm_year > 9999)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range for type billing_cycle"),
				 errdetail("Billing cycles run from 0001-01 to 9999-12.")));
	return tm.tm_year * 12 + (tm.tm_mon - 1);
}

TimestampTz
tco_cycle_start(BillingCycle c, pg_tz *tz)
{
	TimestampTz earliest,
				latest;

	if (c < TCO_CYCLE_MIN || c > TCO_CYCLE_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("billing cycle out of range")));
	local_midnight(c / 12, c % 12 + 1, 1, tz, &earliest, &latest);
	return earliest;
}

/*
 * The start of the cycle after c: for 9999-12, the start of "10000-01",
 * outside the type but a valid instant (so a change in 9999-12 still has an
 * effective instant).
 */
TimestampTz
tco_next_cycle_start(BillingCycle c, pg_tz *tz)
{
	TimestampTz earliest,
				latest;

	if (c < TCO_CYCLE_MIN || c > TCO_CYCLE_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("billing cycle out of range")));
	if (c < TCO_CYCLE_MAX)
		return tco_cycle_start(c + 1, tz);
	local_midnight(10000, 1, 1, tz, &earliest, &latest);
	return earliest;
}

/*
 * [*start, *next): the cycle containing t.  False, without error, when t is
 * in no cycle (its local year is outside 1..9999).
 */
bool
tco_cycle_bounds(TimestampTz t, pg_tz *tz, TimestampTz *start, TimestampTz *next)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			offset;
	BillingCycle c;

	if (TIMESTAMP_NOT_FINITE(t) || timestamp2tm(t, &offset, &tm, &fsec, NULL, tz) != 0 ||
		tm.tm_year < 1 || tm.tm_year > 9999)
		return false;
	c = tm.tm_year * 12 + (tm.tm_mon - 1);
	*start = tco_cycle_start(c, tz);
	*next = tco_next_cycle_start(c, tz);
	return true;
}

TimestampTz
tco_trunc(TimestampTz t, TcoGranularity g, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			offset;
	int			i,
				j,
				y,
				m,
				d;
	TimestampTz earliest,
				latest;

	check_granularity(g);
	local_time(t, tz, &tm, &fsec, &offset);

	if (g == TCO_GRAN_MINUTE || g == TCO_GRAN_HOUR)
	{
		TimestampTz start = clock_floor(&tm, offset, g);

		/*
		 * Under a half-hour offset change (Australia/Lord_Howe) the floor
		 * under t's offset can fall where the clock read another time;
		 * floor again from the clock reading there.  Each step goes back, so
		 * the result stays <= t; two steps suffice for any real zone.
		 */
		for (i = 0; i < 4 && !on_clock_boundary(start, g, tz); i++)
		{
			local_time(start, tz, &tm, &fsec, &offset);
			start = clock_floor(&tm, offset, g);
		}
		return start;
	}

	j = period_start_day(date2j(tm.tm_year, tm.tm_mon, tm.tm_mday), g);
	j2date(j, &y, &m, &d);
	local_midnight(y, m, d, tz, &earliest, &latest);
	if (earliest > t)
	{
		/*
		 * Cannot happen with real zone data (t reads a time on or after that
		 * midnight); should a zone ever produce it, fall back to midnight
		 * under t's own offset, which is never after t.
		 */
		memset(&tm, 0, sizeof(tm));
		tm.tm_year = y;
		tm.tm_mon = m;
		tm.tm_mday = d;
		earliest = instant_at(&tm, offset);
	}
	return earliest;
}

TimestampTz
tco_boundary_ceil(TimestampTz t, TcoGranularity g, pg_tz *tz)
{
	TimestampTz start = tco_trunc(t, g, tz);
	struct pg_tm tm;
	fsec_t		fsec;
	int			offset;
	int			j,
				i;

	if (start == t)
		return t;

	if (g == TCO_GRAN_MINUTE || g == TCO_GRAN_HOUR)
	{
		TimestampTz next;

		/*
		 * The unit added in absolute time: after 01:00 EDT of a fall-back
		 * night comes 01:00 EST.  Where an offset change that is not a whole
		 * unit makes that instant read another time, step on from the floor
		 * of that reading.
		 */
		for (i = 0; i < 4; i++)
		{
			if (pg_add_s64_overflow(start, unit_usecs(g), &next) || !IS_VALID_TIMESTAMP(next))
				timestamp_out_of_range();
			if (on_clock_boundary(next, g, tz))
				return next;
			local_time(next, tz, &tm, &fsec, &offset);
			start = clock_floor(&tm, offset, g);
		}
		return next;
	}

	/*
	 * The next period starts at the first local midnight after t that begins
	 * it.  A fall-back across midnight can make the earlier reading of that
	 * midnight precede t; then the later reading is the boundary.  The loop
	 * is bounded; two steps suffice for any real zone.
	 */
	local_time(start, tz, &tm, &fsec, &offset);
	j = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday);
	for (i = 0; i < 4; i++)
	{
		int			y,
					m,
					d;
		TimestampTz earliest,
					latest;

		j = next_period_day(j, g);
		j2date(j, &y, &m, &d);
		local_midnight(y, m, d, tz, &earliest, &latest);
		if (earliest > t)
			return earliest;
		if (latest > t)
			return latest;
	}
	elog(ERROR, "could not find the %s boundary after a timestamp", tco_granularity_name(g));
	return t;					/* keep compiler quiet */
}

/*
 * The zone of a name given to tco (an explicit zone argument, or the billing
 * zone read from tco.config when billing is true).  Only region names are
 * accepted, such as 'Asia/Shanghai' or 'UTC': a name with a digit in it is
 * refused.  Such names are UTC offsets in POSIX notation, whose sign is the
 * opposite of ISO 8601 ('+08', 'UTC+8' and 'Etc/GMT+8' are all UTC-8), or
 * POSIX rules such as 'EST5EDT'; no region name of the time zone database
 * has a digit.  A name without digits that pg_tzset() accepts is a zone of
 * the database (a POSIX specification needs an offset).
 *
 * The billing zone read from tco.config is not held to the digit rule:
 * tco.config_check refuses such names since 1.2, but an installation of an
 * earlier version may have stored one of pg_timezone_names (Etc/GMT-8 means
 * what the time zone database says), its cycles were cut in it, and once a
 * cycle is settled the zone cannot change (R14).
 */
pg_tz *
tco_zone_by_name(const char *name, bool billing)
{
	const char *p;
	pg_tz	   *tz = NULL;
	bool		numeric = false;

	for (p = name; *p; p++)
		if (*p >= '0' && *p <= '9')
			numeric = true;
	if (!billing && (numeric || name[0] == '+' || name[0] == '-'))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%stime zone \"%s\" is an offset or a POSIX rule, not a region name",
						billing ? "billing " : "", name),
				 errdetail("Numeric and POSIX-style zone names count offsets west of Greenwich: '+08' means UTC-8."),
				 errhint("Use a region name of pg_timezone_names, such as 'Asia/Shanghai' or 'UTC'%s.",
						 billing ? ", with tco.set_billing_timezone()" : "")));
	if (strlen(name) <= TZ_STRLEN_MAX)
		tz = pg_tzset(name);
	if (tz == NULL || !pg_tz_acceptable(tz))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%stime zone \"%s\" is not recognized", billing ? "billing " : "", name),
				 errhint("Use a name from pg_timezone_names, such as 'UTC' or 'Asia/Shanghai'%s.",
						 billing ? ", with tco.set_billing_timezone()" : "")));
	return tz;
}
