/*
 * src/settle_late.c
 *
 * Settlement (settle.h): the late lines a run bills (src/sql/41_late.sql,
 * README "After a cycle closes").  Lines queued in tco.late_line, of an
 * earlier cycle, in the run's scope and not of an organization that has
 * already settled this cycle, are priced before the cycle's own lines, in
 * the fixed order (consumer, product, period start, line id), each as of
 * its own period: settle_line prices by the line's period start (payer,
 * discount, benefit validity), and the run loaded discounts, benefits,
 * shares and savings-plan hours from the earliest late period on
 * (run->load_start).  Each goes on this cycle's statement of its payer, in
 * a pack whose cycle is the line's charge cycle; its queue row is marked
 * with the statement once the statements exist (settle_mark_late_lines).
 * The queue rows are locked (FOR UPDATE), so a session changing a late line
 * waits for the settlement and then finds it billed.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "settle.h"

/*
 * The earliest period start of the late lines the run will bill (sets
 * run->load_start; the cycle's start when there are none).
 */
void
settle_late_bounds(SettleRun *run)
{
	Datum		args[2];
	bool		isnull;
	int64		count;
	TimestampTz first;

	run->load_start = run->start;
	if (!run->late_schema)
		return;
	args[0] = CStringGetTextDatum(run->cycle_text);
	args[1] = Int64GetDatum(run->org_id);
	settle_exec_plan(run->has_org ? PLAN_LATE_BOUNDS_ORG : PLAN_LATE_BOUNDS, args, NULL, false, 1);
	first = settle_get_tstz(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	count = settle_get_int8(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	SPI_freetuptable(SPI_tuptable);
	if (count > 0 && first < run->load_start)
		run->load_start = first;
}

static void
remember_late(SettleRun *run, int64 line_id, int64 statement_id)
{
	if (run->nlate == run->late_cap)
	{
		run->late_cap = Max(run->late_cap * 2, 1024);
		if (run->late_ids == NULL)
		{
			run->late_ids = MemoryContextAllocHuge(run->run_ctx, sizeof(Datum) * run->late_cap);
			run->late_statements = MemoryContextAllocHuge(run->run_ctx, sizeof(Datum) * run->late_cap);
		}
		else
		{
			run->late_ids = repalloc_huge(run->late_ids, sizeof(Datum) * run->late_cap);
			run->late_statements = repalloc_huge(run->late_statements, sizeof(Datum) * run->late_cap);
		}
	}
	run->late_ids[run->nlate] = Int64GetDatum(line_id);
	run->late_statements[run->nlate] = Int64GetDatum(statement_id);
	run->nlate++;
}

/* Price the late lines of the run (a cursor: any number of them). */
void
settle_late_lines(SettleRun *run)
{
	Datum		args[2];
	Portal		portal;

	if (!run->late_schema || run->load_start >= run->start)
		return;
	args[0] = CStringGetTextDatum(run->cycle_text);
	args[1] = Int64GetDatum(run->org_id);
	portal = SPI_cursor_open(NULL, settle_get_plan(run->has_org ? PLAN_LATE_LINES_ORG : PLAN_LATE_LINES),
							 args, NULL, false);
	for (;;)
	{
		SPITupleTable *tt;
		uint64		n;
		uint64		i;

		SPI_cursor_fetch(portal, true, FETCH_BATCH);
		/* kept while its lines are priced (pricing runs queries of its own) */
		tt = SPI_tuptable;
		n = SPI_processed;
		if (n == 0)
		{
			SPI_freetuptable(tt);
			break;
		}
		for (i = 0; i < n; i++)
		{
			HeapTuple	tup = tt->vals[i];
			bool		isnull;
			char		code[PRODUCT_CODE_LEN];
			int64		line_id = settle_get_int8(tup, tt->tupdesc, 1, &isnull);
			int64		account_id = settle_get_int8(tup, tt->tupdesc, 2, &isnull);
			TimestampTz at = settle_get_tstz(tup, tt->tupdesc, 4, &isnull);
			int64		list = settle_get_int8(tup, tt->tupdesc, 5, &isnull);

			CHECK_FOR_INTERRUPTS();
			settle_text_to_code(settle_get_text(tup, tt->tupdesc, 3, &isnull), code);
			run->nlate_read++;
			run->line_cycle = tco_cycle_of(at, run->tz);
			settle_line(run, line_id, account_id, code, at, list);
			remember_late(run, line_id, run->last_payer->statement_id);
			run->nlines++;
			if (run->batch.n >= FETCH_BATCH)
				settle_batch_flush(run);
		}
		SPI_freetuptable(tt);
	}
	SPI_cursor_close(portal);
	settle_batch_flush(run);
	run->line_cycle = run->cycle;
}

/* The billed late lines' queue rows get their statement and billing cycle. */
void
settle_mark_late_lines(SettleRun *run)
{
	Datum		args[3];

	if (run->nlate == 0)
		return;
	args[0] = settle_int8_array(run->late_ids, NULL, run->nlate);
	args[1] = settle_int8_array(run->late_statements, NULL, run->nlate);
	args[2] = CStringGetTextDatum(run->cycle_text);
	settle_exec_plan(PLAN_MARK_LATE, args, NULL, false, 0);
	if (SPI_processed != (uint64) run->nlate)
		ereport(ERROR,
				(errcode(ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION),
				 errmsg("settlement of billing cycle %s billed %d late bill lines but marked " UINT64_FORMAT,
						run->cycle_text, run->nlate, SPI_processed),
				 errhint("Nothing was written. This is a bug of tco: report it with the late lines (tco.late_line).")));
}
