/*
 * src/config.c
 *
 * The installation's configuration, table tco.config (at most one row; no row
 * means every default), cached per backend under the rule of cache.c.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/timestamp.h"

#include "tco.h"

#define DEFAULT_TZ "UTC"

typedef struct TcoConfig
{
	bool		valid;
	Oid			relid;			/* tco.config when loaded */
	char		tzname[TZ_STRLEN_MAX + 1];
	pg_tz	   *tz;
	TimestampTz legacy_cutover;
} TcoConfig;

static TcoConfig config;
static uint64 config_generation = 0;

static void
config_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == config.relid)
	{
		config.valid = false;
		config_generation++;
	}
}

void
tco_config_init(void)
{
	CacheRegisterRelcacheCallback(config_invalidate, (Datum) 0);
}

/* 2022-08-01 12:00 UTC+8: the new-version cut-over of seed 004. */
static TimestampTz
default_cutover(void)
{
	return DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
												   CStringGetDatum("2022-08-01 12:00:00+08"),
												   ObjectIdGetDatum(InvalidOid),
												   Int32GetDatum(-1)));
}

static void
config_load(void)
{
	for (;;)
	{
		uint64		generation = config_generation;
		Oid			relid = tco_relid("config");
		char		tzname[TZ_STRLEN_MAX + 1];
		TimestampTz cutover = default_cutover();
		pg_tz	   *tz;

		strlcpy(tzname, DEFAULT_TZ, sizeof(tzname));
		if (OidIsValid(relid))
		{
			int			ret;

			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
			ret = SPI_execute("SELECT billing_timezone, legacy_cutover FROM tco.config LIMIT 1",
							  true, 1);
			if (ret != SPI_OK_SELECT)
				elog(ERROR, "could not read tco.config: %s", SPI_result_code_string(ret));
			if (SPI_processed == 1)
			{
				bool		isnull;
				char	   *name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
				Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

				if (name != NULL)
					strlcpy(tzname, name, sizeof(tzname));
				if (!isnull)
					cutover = DatumGetTimestampTz(d);
			}
			SPI_finish();
		}
		tz = pg_tzset(tzname);
		if (tz == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("billing time zone \"%s\" is not a known time zone", tzname),
					 errhint("Set a valid zone with tco.set_billing_timezone(), e.g. 'UTC' or 'Asia/Shanghai'.")));
		/* Only keep the result if no invalidation arrived while reading it. */
		if (generation == config_generation)
		{
			config.relid = relid;
			strlcpy(config.tzname, tzname, sizeof(config.tzname));
			config.tz = tz;
			config.legacy_cutover = cutover;
			config.valid = true;
			return;
		}
	}
}

pg_tz *
tco_billing_tz(void)
{
	if (!config.valid)
		config_load();
	return config.tz;
}

const char *
tco_billing_tz_name(void)
{
	if (!config.valid)
		config_load();
	return config.tzname;
}

TimestampTz
tco_legacy_cutover(void)
{
	if (!config.valid)
		config_load();
	return config.legacy_cutover;
}
