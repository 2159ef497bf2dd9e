/*
 * src/config.c
 *
 * The installation's configuration, table tco.config (at most one row; no row
 * means every default), cached per backend under the rule of cache.c.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
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
	/* how long what was read stays valid (cache.c) */
	TcoCacheScope scope;
	LocalTransactionId built_lxid;
	uint64		built_epoch;
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

/* The owner of tco.config: the configuration is read with its rights. */
static Oid
config_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Read tco.config.  Anyone allowed to call a function that needs the billing
 * zone (tco_reader may call tco.cycle_of) must get it, whether or not it may
 * read the table: the row is read with the rights of the table's owner (the
 * extension's owner), as a SECURITY DEFINER function would, with search_path
 * pinned (cache.c) and under a snapshot taken after the invalidations were
 * accepted (tco_push_cache_snapshot).
 */
static void
config_read(Oid relid, char *tzname, TimestampTz *cutover, TcoCacheScope *scope)
{
	Oid			save_userid;
	int			save_sec_context;
	int			nestlevel;
	static const Oid types[2] = {TEXTOID, TIMESTAMPTZOID};

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(config_owner(relid),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		int			ret;

		nestlevel = tco_pin_search_path();
		*scope = tco_push_cache_snapshot();
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		ret = SPI_execute("SELECT billing_timezone, legacy_cutover FROM tco.config LIMIT 1",
						  true, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "could not read tco.config: %s", SPI_result_code_string(ret));
		tco_check_columns(SPI_tuptable->tupdesc, 2, types, "tco.config");
		if (SPI_processed == 1)
		{
			bool		isnull;
			char	   *name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

			if (name != NULL)
				strlcpy(tzname, name, TZ_STRLEN_MAX + 1);
			if (!isnull)
				*cutover = DatumGetTimestampTz(d);
		}
		SPI_finish();
		PopActiveSnapshot();
		tco_restore_search_path(nestlevel);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	PG_END_TRY();
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
		TcoCacheScope scope = TCO_CACHE_UNTIL_INVALIDATED;
		uint64		epoch = tco_snapshot_epoch();
		pg_tz	   *tz;

		strlcpy(tzname, DEFAULT_TZ, sizeof(tzname));
		if (OidIsValid(relid))
			config_read(relid, tzname, &cutover, &scope);
		tz = tco_zone_by_name(tzname, true);
		/* Only keep the result if no invalidation arrived while reading it. */
		if (generation == config_generation)
		{
			config.relid = relid;
			strlcpy(config.tzname, tzname, sizeof(config.tzname));
			config.tz = tz;
			config.legacy_cutover = cutover;
			config.scope = scope;
			config.built_lxid = MyProc->lxid;
			config.built_epoch = epoch;
			config.valid = true;
			return;
		}
	}
}

static void
config_ensure(void)
{
	tco_accept_invalidations();
	if (config.valid && !tco_cache_scope_valid(config.scope, config.built_lxid, config.built_epoch))
		config.valid = false;
	if (!config.valid)
		config_load();
}

pg_tz *
tco_billing_tz(void)
{
	config_ensure();
	return config.tz;
}

const char *
tco_billing_tz_name(void)
{
	config_ensure();
	return config.tzname;
}

TimestampTz
tco_legacy_cutover(void)
{
	config_ensure();
	return config.legacy_cutover;
}
