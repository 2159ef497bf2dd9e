/*
 * src/cache.c
 *
 * What every per-backend cache of tco shares.
 *
 * The rule for caches in tco: a cache is built from tables of schema tco and
 * is valid only until any of those tables changes.  Row changes do not send
 * invalidations by themselves, so each such table carries a statement-level
 * trigger calling tco.invalidate_cache(), which queues a relcache
 * invalidation for the table.  PostgreSQL delivers it to this backend at the
 * next command (and replays it on abort) and to every other backend when the
 * writing transaction commits.  Each cache registers a relcache callback
 * that drops what it holds when one of its tables (or everything, InvalidOid)
 * is invalidated, and rebuilds lazily on next use.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "tco.h"

static const char *const granularity_names[] = {"minute", "hour", "day", "week", "month"};

/* Oid of relation tco.<relname>, or InvalidOid if it does not exist. */
Oid
tco_relid(const char *relname)
{
	Oid			nsp = get_namespace_oid("tco", true);

	if (!OidIsValid(nsp))
		return InvalidOid;
	return get_relname_relid(relname, nsp);
}

TcoGranularity
tco_granularity_from_name(const char *name)
{
	int			i;

	for (i = 0; i < (int) lengthof(granularity_names); i++)
		if (strcmp(name, granularity_names[i]) == 0)
			return (TcoGranularity) i;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown granularity \"%s\"", name)));
	return TCO_GRAN_MONTH;		/* keep compiler quiet */
}

const char *
tco_granularity_name(TcoGranularity g)
{
	if ((int) g < 0 || (int) g >= (int) lengthof(granularity_names))
		elog(ERROR, "invalid granularity %d", (int) g);
	return granularity_names[g];
}

PG_FUNCTION_INFO_V1(tco_invalidate_cache);

/*
 * Statement-level trigger: tell every backend that caches built from this
 * table are stale.
 */
Datum
tco_invalidate_cache(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tco.invalidate_cache() must be called as a trigger")));
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);
}
