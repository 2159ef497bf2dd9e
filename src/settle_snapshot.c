/*
 * src/settle_snapshot.c
 *
 * tco.settle_cycle under REPEATABLE READ or SERIALIZABLE.
 *
 * Settlement serializes on an advisory lock per cycle (settle.c), and bill
 * line and trusteeship writers take that lock shared.  In READ COMMITTED
 * every query of the settlement takes a fresh snapshot after the lock, so it
 * sees whatever the sessions it waited for committed.  Under REPEATABLE READ
 * and SERIALIZABLE the transaction snapshot was taken before the lock (at
 * the latest at the start of the SELECT calling settle_cycle), so it can miss
 * a settlement of the same cycle, or bill lines of the cycle, committed in
 * between.  Settling on that stale snapshot would fail on a unique index with
 * an unclear error, or close the cycle without some of its lines.
 *
 * So after taking the lock, tco_settle_check_snapshot compares what the
 * transaction snapshot sees with what a fresh snapshot sees: the settled-cycle
 * rows of the cycle, and the bill lines of the cycle (a line visible now whose
 * inserting transaction the snapshot does not see, or a different count).
 * Any difference raises 40001 serialization_failure, PostgreSQL's normal
 * answer under these isolation levels: the caller retries the transaction,
 * and the retry sees the committed settlement and returns its result.
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "tco.h"

static int64
count_rows(const char *sql, int nargs, Oid *types, Datum *args, Snapshot snap)
{
	int			rc;
	bool		isnull;
	int64		n;

	if (snap != InvalidSnapshot)
		rc = SPI_execute_snapshot(SPI_prepare(sql, nargs, types), args, NULL, snap,
								  InvalidSnapshot, true, false, 1);
	else
		rc = SPI_execute_with_args(sql, nargs, types, args, NULL, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "tco: snapshot check query failed: %s", SPI_result_code_string(rc));
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return n;
}

static void
stale_snapshot_error(const char *cycle_text, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("could not serialize settlement of billing cycle %s", cycle_text),
			 errdetail("A concurrent transaction %s after this transaction's snapshot was taken (%s).",
					   what, IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
			 errhint("Retry the transaction: the retry sees the committed work and returns the existing result. "
					 "In READ COMMITTED, tco.settle_cycle waits for a concurrent settlement instead.")));
}

/*
 * Whether the rows selected by `count_sql` / `xmin_sql` (same filter) differ
 * between the transaction snapshot and a fresh one: a row visible now whose
 * inserting transaction the snapshot does not see, or a different count.
 * (Every row visible now then being visible to the snapshot, equal counts
 * mean equal sets.)
 */
static bool
rows_changed(const char *xmin_sql, const char *count_sql, int nargs, Oid *types, Datum *args)
{
	Snapshot	xact_snap = GetTransactionSnapshot();
	SPIPlanPtr	plan;
	Portal		portal;
	int64		seen_now = 0;
	bool		changed = false;

	plan = SPI_prepare(xmin_sql, nargs, types);
	if (plan == NULL)
		elog(ERROR, "tco: snapshot check query failed: %s", SPI_result_code_string(SPI_result));
	PushActiveSnapshot(GetLatestSnapshot());
	portal = SPI_cursor_open(NULL, plan, args, NULL, true);
	while (!changed)
	{
		uint64		i;

		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			TransactionId xmin = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[i],
																	 SPI_tuptable->tupdesc, 1, &isnull));

			if (!TransactionIdIsCurrentTransactionId(xmin) && XidInMVCCSnapshot(xmin, xact_snap))
			{
				changed = true;
				break;
			}
		}
		seen_now += SPI_processed;
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	PopActiveSnapshot();
	return changed || seen_now != count_rows(count_sql, nargs, types, args, InvalidSnapshot);
}

/*
 * Called by tco.settle_cycle, connected to SPI, right after it took the
 * settlement lock of the cycle [start, end).  No-op in READ COMMITTED.
 */
void
tco_settle_check_snapshot(const char *cycle_text, TimestampTz start, TimestampTz end)
{
	Oid			types[2];
	Datum		args[2];

	if (!IsolationUsesXactSnapshot())
		return;

	/* 1. A settlement of this cycle (any scope) committed since the snapshot. */
	types[0] = TEXTOID;
	args[0] = CStringGetTextDatum(cycle_text);
	if (rows_changed("SELECT xmin FROM tco.settled_cycle WHERE cycle OPERATOR(tco.=) $1::tco.billing_cycle",
					 "SELECT count(*) FROM tco.settled_cycle WHERE cycle OPERATOR(tco.=) $1::tco.billing_cycle",
					 1, types, args))
		stale_snapshot_error(cycle_text, "settled this billing cycle");

	/* 2. Bill lines of the cycle inserted, changed or deleted since then. */
	types[0] = TIMESTAMPTZOID;
	types[1] = TIMESTAMPTZOID;
	args[0] = TimestampTzGetDatum(start);
	args[1] = TimestampTzGetDatum(end);
	if (rows_changed("SELECT xmin FROM tco.bill_line WHERE period_start >= $1 AND period_start < $2",
					 "SELECT count(*) FROM tco.bill_line WHERE period_start >= $1 AND period_start < $2",
					 2, types, args))
		stale_snapshot_error(cycle_text, "changed bill lines of this billing cycle");

	/* 3. Trusteeship changes before the end of the cycle (they move payers). */
	if (rows_changed("SELECT xmin FROM tco.trusteeship WHERE established_at < $2 OR ended_at < $2",
					 "SELECT count(*) FROM tco.trusteeship WHERE established_at < $2 OR ended_at < $2",
					 2, types, args))
		stale_snapshot_error(cycle_text, "changed trusteeships that decide payers in this billing cycle");
}
