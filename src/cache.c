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
 * is invalidated, and rebuilds lazily on next use: invalidations are accepted
 * once per snapshot (tco_accept_invalidations) and a cache is rebuilt under
 * a snapshot taken after that (tco_push_cache_snapshot), with search_path
 * pinned (tco_pin_search_path).
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "storage/proc.h"
#include "utils/snapmgr.h"

#include "payer.h"
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

PG_FUNCTION_INFO_V1(tco_bill_lines_written);

/*
 * tco.bill_lines_written(): this backend wrote bill lines outside the
 * statement trigger of tco.bill_line (TRUNCATE): its payer reads them from
 * its next call (src/payer.c keeps what it read of bill lines for one
 * snapshot only, so other backends need no message).
 */
Datum
tco_bill_lines_written(PG_FUNCTION_ARGS)
{
	tco_payer_lines_written();
	PG_RETURN_VOID();
}

static uint64 snapshot_epoch = 0;

/*
 * Accept pending invalidations once per snapshot, so that a statement of a
 * READ COMMITTED transaction sees what other sessions committed since the
 * previous one (every cache shares this: the first cache to ask for a new
 * snapshot delivers the messages to all the callbacks).
 */
void
tco_accept_invalidations(void)
{
	static Snapshot seen_snapshot = NULL;
	static TransactionId seen_xmin = InvalidTransactionId;
	static TransactionId seen_xmax = InvalidTransactionId;
	static CommandId seen_curcid = InvalidCommandId;
	Snapshot	snap = ActiveSnapshotSet() ? GetActiveSnapshot() : NULL;

	if (snap == NULL)
	{
		AcceptInvalidationMessages();
		snapshot_epoch++;
		seen_snapshot = NULL;
		return;
	}
	if (snap != seen_snapshot || snap->xmin != seen_xmin ||
		snap->xmax != seen_xmax || snap->curcid != seen_curcid)
	{
		AcceptInvalidationMessages();
		snapshot_epoch++;
		seen_snapshot = snap;
		seen_xmin = snap->xmin;
		seen_xmax = snap->xmax;
		seen_curcid = snap->curcid;
	}
}

/* Bumped each time tco_accept_invalidations sees a new snapshot. */
uint64
tco_snapshot_epoch(void)
{
	return snapshot_epoch;
}

/*
 * Push the snapshot a cache is (re)built from; returns for how long the
 * result is valid.
 *
 * Under READ COMMITTED it is a snapshot taken now, after the invalidations
 * that made the rebuild necessary were accepted: a transaction sends its
 * invalidations after it became visible to new snapshots, so whatever change
 * an accepted invalidation announced is seen by this snapshot.  The active
 * snapshot of the calling statement would not do: it can be older than the
 * invalidation (a statement that waited, or slept, before its first call),
 * and the cache built from it would then stay stale for every later
 * statement, since the invalidation is consumed.  The cache may thus see
 * commits newer than the calling statement's snapshot, never older ones.
 * TCO_CACHE_UNTIL_INVALIDATED.
 *
 * Under REPEATABLE READ and SERIALIZABLE it is the transaction snapshot:
 * the answers stay those of the transaction, and the cache is dropped at the
 * next one.  TCO_CACHE_XACT.
 *
 * In parallel mode (a parallel worker, or the leader while workers run) no
 * new snapshot may be taken: the active one is used, and what is built from
 * it serves the current snapshot only.  TCO_CACHE_SNAPSHOT.
 */
TcoCacheScope
tco_push_cache_snapshot(void)
{
	if (IsInParallelMode())
	{
		if (!ActiveSnapshotSet())
			elog(ERROR, "tco: no active snapshot in parallel mode");
		PushActiveSnapshot(GetActiveSnapshot());
		return IsolationUsesXactSnapshot() ? TCO_CACHE_XACT : TCO_CACHE_SNAPSHOT;
	}
	if (IsolationUsesXactSnapshot())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		return TCO_CACHE_XACT;
	}
	PushActiveSnapshot(GetLatestSnapshot());
	return TCO_CACHE_UNTIL_INVALIDATED;
}

/*
 * Whether a cache built with this scope in transaction lxid at snapshot
 * epoch epoch may still be used.
 */
bool
tco_cache_scope_valid(TcoCacheScope scope, LocalTransactionId lxid, uint64 epoch)
{
	switch (scope)
	{
		case TCO_CACHE_UNTIL_INVALIDATED:
			return true;
		case TCO_CACHE_XACT:
			return lxid == MyProc->lxid;
		case TCO_CACHE_SNAPSHOT:
			return lxid == MyProc->lxid && epoch == snapshot_epoch;
	}
	return false;
}

/*
 * Run tco's own queries under search_path = pg_catalog, pg_temp, whatever
 * the caller set: an operator, function or type of another schema placed
 * first on the caller's path must not change what they mean (kept plans are
 * re-planned under the current path).  The queries also name every tco
 * object with its schema.  Returns the GUC nest level for
 * tco_restore_search_path (-1 when the path was already pinned); an error
 * unwinds it with the (sub)transaction.  (GUC_ACTION_SAVE is allowed in
 * parallel mode.)
 */
#define TCO_SEARCH_PATH "pg_catalog, pg_temp"

int
tco_pin_search_path(void)
{
	int			nestlevel;

	/* already pinned (settle_cycle's own SET, or an outer call): nothing to do */
	if (namespace_search_path != NULL && strcmp(namespace_search_path, TCO_SEARCH_PATH) == 0)
		return -1;
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", TCO_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

void
tco_restore_search_path(int nestlevel)
{
	if (nestlevel >= 0)
		AtEOXact_GUC(true, nestlevel);
}

/*
 * Check the shape of a result tco's C code reads: n columns of these types.
 * The tables are tco's own, but a DBA may have altered them (README,
 * "Limits", says which DDL is supported); reading a Datum as another type
 * than it is would crash the backend, so refuse clearly instead.
 */
void
tco_check_columns(TupleDesc desc, int n, const Oid *types, const char *what)
{
	int			i;

	if (desc == NULL || desc->natts != n)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("unexpected shape of %s: %d columns, expected %d",
						what, desc ? desc->natts : 0, n),
				 errhint("A table of schema tco was altered in a way tco does not support (see README, \"Limits\"): restore its definition.")));
	for (i = 0; i < n; i++)
	{
		Oid			t = TupleDescAttr(desc, i)->atttypid;

		if (t != types[i])
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("unexpected type of column %d of %s: %s, expected %s",
							i + 1, what, format_type_be(t), format_type_be(types[i])),
					 errhint("A column of a table of schema tco changed type, which tco does not support (see README, \"Limits\"): restore its original type.")));
	}
}
