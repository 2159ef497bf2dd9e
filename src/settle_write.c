/*
 * src/settle_write.c
 *
 * Settlement (settle.h): what a run writes.  The statement of each payer
 * (existing ones loaded, new ones numbered from the statement sequence
 * when their payer is first seen), the per-line records of each batch of
 * lines as packs (tco.settled_pack, one row per run of lines of one
 * statement, account and product), and at the end statements, statement
 * lines and benefit balances.  Packs, new statements and their lines are
 * written in bulk (bulk.c), their references checked and locked first;
 * in 1.0 mode (head comment of settle.c) lines and benefit uses are
 * INSERTed into the tables of 1.0.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "settle.h"

/*
 * The statement of a payer for the cycle: the existing one (loaded by
 * settle_load_statements), else a new one whose id is taken from the statement
 * identity sequence now and which settle_write_statements inserts with the others
 * (one INSERT for all, instead of one per payer).
 */
int64
settle_statement_for_payer(SettleRun *run, int64 payer)
{
	bool		found;
	PayerStatement *ps;

	if (run->last_payer != NULL && run->last_payer->payer_account_id == payer)
		return run->last_payer->statement_id;
	ps = hash_search(run->payers, &payer, HASH_ENTER, &found);
	run->last_payer = ps;
	if (!found)
	{
		AccountInfo *info = settle_lookup_account(run, payer);

		ps->statement_id = nextval_internal(run->statement_seq, false);
		ps->is_new = true;
		ps->org_id = info->org_id;
		/*
		 * A payer outside any organization in a settlement of one: a
		 * manager that has left it since the period of a late or
		 * correction line of its former member (README "After a cycle
		 * closes").  The statement is the organization's, whose
		 * settlement billed it.
		 */
		if (ps->org_id == 0 && run->has_org)
			ps->org_id = run->org_id;
		memset(ps->totals, 0, sizeof(ps->totals));
	}
	ps->used = true;
	return ps->statement_id;
}

/* Existing statements of the cycle (a scope settled before made some). */
void
settle_load_statements(SettleRun *run)
{
	Datum		arg = CStringGetTextDatum(run->cycle_text);
	SPITupleTable *tt;
	uint64		i;
	bool		isnull;

	settle_exec_plan(run->v10 ? PLAN_SEQUENCES_V10 : PLAN_SEQUENCES, NULL, NULL, true, 1);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s has no identity sequence", "tco.statement"),
				 errhint("Its identity was dropped, which tco does not support (README, \"Limits\"): restore it.")));
	run->statement_seq = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s has no identity sequence", "tco.statement"),
				 errhint("Its identity was dropped, which tco does not support (README, \"Limits\"): restore it.")));
	/* 1.0 mode writes no packs */
	run->pack_seq = run->v10 ? InvalidOid :
		DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (!run->v10 && isnull)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s has no identity sequence", "tco.settled_pack"),
				 errhint("Its identity was dropped, which tco does not support (README, \"Limits\"): restore it.")));
	SPI_freetuptable(SPI_tuptable);

	settle_exec_plan(PLAN_STATEMENTS_OF_CYCLE, &arg, NULL, false, 0);
	tt = SPI_tuptable;
	for (i = 0; i < SPI_processed; i++)
	{
		int64		payer = settle_get_int8(tt->vals[i], tt->tupdesc, 1, &isnull);
		bool		found;
		PayerStatement *ps = hash_search(run->payers, &payer, HASH_ENTER, &found);

		ps->statement_id = settle_get_int8(tt->vals[i], tt->tupdesc, 2, &isnull);
		ps->is_new = false;
		ps->used = false;
		ps->org_id = 0;
	}
	/* without statements before, the run's are all of its scope (result_known) */
	run->had_statements = SPI_processed > 0;
	SPI_freetuptable(tt);
}

/*
 * The pack the current line goes to: the open one if it is for the same
 * statement, consuming account, product and charge cycle (run->line_cycle:
 * a late line's pack has its own cycle, 41_late.sql), else a new one.  Called once per
 * line before its benefits are used, so its uses fall in its pack; the last
 * pack is the previous line's, and same_product says that line had this
 * product.
 */
void
settle_pack_for_line(SettleRun *run, bool same_product, int64 statement_id, int64 payer, int64 account_id,
					 const char *product_code)
{
	LineBatch  *b = &run->batch;
	int			k = b->npacks - 1;

	if (k >= 0 && DatumGetInt64(b->pack_statement[k]) == statement_id &&
		DatumGetInt64(b->pack_account[k]) == account_id &&
		DatumGetInt32(b->pack_cycle[k]) == run->line_cycle &&
		(same_product || strcmp(b->pack_code[k], product_code) == 0) &&
		(b->n - (DatumGetInt32(b->pack_line_lo[k]) - 1)) * PACK_LINE_BYTES +
		(b->nuse - (DatumGetInt32(b->pack_use_lo[k]) - 1)) * PACK_USE_BYTES < PACK_MAX_BYTES)
		return;
	k = b->npacks++;
	b->pack_statement[k] = Int64GetDatum(statement_id);
	b->pack_payer[k] = Int64GetDatum(payer);
	b->pack_account[k] = Int64GetDatum(account_id);
	strlcpy(b->pack_code[k], product_code, PRODUCT_CODE_LEN);
	b->pack_line_lo[k] = Int32GetDatum(b->n + 1);
	b->pack_use_lo[k] = Int32GetDatum(b->nuse + 1);
	b->pack_cycle[k] = Int32GetDatum(run->line_cycle);
}

/* ------------------------------------------------------------------------
 * Writing
 */

Datum
settle_int8_array(Datum *elems, bool *nulls, int n)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};

	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, INT8OID, 8, FLOAT8PASSBYVAL,
											  TYPALIGN_DOUBLE));
}

static Datum
text_array(Datum *elems, int n)
{
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* Allocated once per run (run_ctx); emptied by each flush. */
void
settle_batch_start(SettleRun *run)
{
	LineBatch  *b = &run->batch;

	memset(b, 0, sizeof(LineBatch));
	b->pack_statement = palloc(sizeof(Datum) * (FETCH_BATCH + 1));
	b->pack_payer = palloc(sizeof(Datum) * (FETCH_BATCH + 1));
	b->pack_account = palloc(sizeof(Datum) * (FETCH_BATCH + 1));
	b->pack_code = palloc(PRODUCT_CODE_LEN * (FETCH_BATCH + 1));
	b->pack_line_lo = palloc(sizeof(Datum) * (FETCH_BATCH + 1));
	b->pack_use_lo = palloc(sizeof(Datum) * (FETCH_BATCH + 1));
	b->pack_cycle = palloc(sizeof(Datum) * (FETCH_BATCH + 1));
	b->line_id = palloc(sizeof(Datum) * FETCH_BATCH);
	b->list = palloc(sizeof(Datum) * FETCH_BATCH);
	b->rate = palloc(sizeof(Datum) * FETCH_BATCH);
	b->source = palloc(sizeof(Datum) * FETCH_BATCH);
	b->discount_id = palloc(sizeof(Datum) * FETCH_BATCH);
	b->discount = palloc(sizeof(Datum) * FETCH_BATCH);
	b->benefit = palloc(sizeof(Datum) * FETCH_BATCH);
	b->use_cap = 1024;
	b->use_benefit = palloc(sizeof(Datum) * b->use_cap);
	b->use_line = palloc(sizeof(Datum) * b->use_cap);
	b->use_amount = palloc(sizeof(Datum) * b->use_cap);
}

/* The columns of tco.settled_pack, in the order settle_batch_flush gives them. */
static const BulkColumn pack_columns[] = {
	{"pack_id", INT8OID, -1}, {"statement_id", INT8OID, -1}, {"payer_account_id", INT8OID, -1},
	{"account_id", INT8OID, -1}, {"product_code", TEXTOID, -1}, {"cycle", InvalidOid, -1},
	{"settled_at", TIMESTAMPTZOID, -1}, {"line_ids", INT8ARRAYOID, -1}, {"list_amounts", INT8ARRAYOID, -1},
	{"discount_rates", INT4ARRAYOID, -1}, {"discount_sources", INT2ARRAYOID, -1},
	{"discount_ids", INT8ARRAYOID, -1}, {"discount_amounts", INT8ARRAYOID, -1},
	{"benefit_amounts", INT8ARRAYOID, -1}, {"use_line_ids", INT8ARRAYOID, -1},
	{"use_benefit_ids", INT8ARRAYOID, -1}, {"use_amounts", INT8ARRAYOID, -1}
};

/*
 * elems[lo .. lo + n - 1] as a one-dimensional array of an integer type of
 * len bytes (no NULLs), built in place.
 */
static Datum
int_slice(const Datum *elems, int lo, int n, Oid type, int len)
{
	ArrayType  *a;
	char	   *p;
	int			i;

	if (n == 0)
		return PointerGetDatum(construct_empty_array(type));
	a = (ArrayType *) palloc(ARR_OVERHEAD_NONULLS(1) + (Size) n * len);
	SET_VARSIZE(a, ARR_OVERHEAD_NONULLS(1) + (Size) n * len);
	a->ndim = 1;
	a->dataoffset = 0;
	a->elemtype = type;
	ARR_DIMS(a)[0] = n;
	ARR_LBOUND(a)[0] = 1;
	p = (char *) a + ARR_OVERHEAD_NONULLS(1);	/* no NULLs: data right after the header */
	for (i = 0; i < n; i++)
	{
		switch (len)
		{
			case 8:
				((int64 *) p)[i] = DatumGetInt64(elems[lo + i]);
				break;
			case 4:
				((int32 *) p)[i] = DatumGetInt32(elems[lo + i]);
				break;
			default:
				((int16 *) p)[i] = DatumGetInt16(elems[lo + i]);
				break;
		}
	}
	return PointerGetDatum(a);
}

/*
 * The per-line values elems[lo .. lo + n - 1] of a pack in the compact form
 * of 1.4 (src/sql/40_settlement.sql, tco.settled_pack): one element when
 * every line of the pack has the same value, else one per line.
 */
static Datum
int_slice_compact(const Datum *elems, int lo, int n, Oid type, int len)
{
	int			i;

	for (i = 1; i < n; i++)
		if (elems[lo + i] != elems[lo])
			return int_slice(elems, lo, n, type, len);
	return int_slice(elems, lo, Min(n, 1), type, len);
}

/*
 * 1.0 mode: write the batch's lines as rows of tco.settled_line (one INSERT,
 * each line with the statement and payer of its pack) and keep its benefit
 * uses, with the statement of their pack, for settle_write_uses_v10.
 */
static void
batch_flush_v10(SettleRun *run)
{
	LineBatch  *b = &run->batch;
	MemoryContext cxt = AllocSetContextCreate(run->run_ctx, "tco settle 1.0 lines", ALLOCSET_DEFAULT_SIZES);
	MemoryContext oldcxt;
	Datum	   *statement;
	Datum	   *payer;
	Datum		args[9];
	int			k;
	int			i;

	b->pack_line_lo[b->npacks] = Int32GetDatum(b->n + 1);
	b->pack_use_lo[b->npacks] = Int32GetDatum(b->nuse + 1);
	if (run->v10_nuse + b->nuse > run->v10_use_cap)
	{
		Size		cap = Max(run->v10_use_cap * 2, run->v10_nuse + b->nuse);

		if (run->v10_use_cap == 0)
		{
			run->v10_use_benefit = MemoryContextAllocHuge(run->run_ctx, sizeof(Datum) * cap);
			run->v10_use_line = MemoryContextAllocHuge(run->run_ctx, sizeof(Datum) * cap);
			run->v10_use_statement = MemoryContextAllocHuge(run->run_ctx, sizeof(Datum) * cap);
			run->v10_use_amount = MemoryContextAllocHuge(run->run_ctx, sizeof(Datum) * cap);
		}
		else
		{
			run->v10_use_benefit = repalloc_huge(run->v10_use_benefit, sizeof(Datum) * cap);
			run->v10_use_line = repalloc_huge(run->v10_use_line, sizeof(Datum) * cap);
			run->v10_use_statement = repalloc_huge(run->v10_use_statement, sizeof(Datum) * cap);
			run->v10_use_amount = repalloc_huge(run->v10_use_amount, sizeof(Datum) * cap);
		}
		run->v10_use_cap = cap;
	}
	oldcxt = MemoryContextSwitchTo(cxt);
	statement = palloc(sizeof(Datum) * Max(b->n, 1));
	payer = palloc(sizeof(Datum) * Max(b->n, 1));
	for (k = 0; k < b->npacks; k++)
	{
		for (i = DatumGetInt32(b->pack_line_lo[k]) - 1; i < DatumGetInt32(b->pack_line_lo[k + 1]) - 1; i++)
		{
			statement[i] = b->pack_statement[k];
			payer[i] = b->pack_payer[k];
		}
		for (i = DatumGetInt32(b->pack_use_lo[k]) - 1; i < DatumGetInt32(b->pack_use_lo[k + 1]) - 1; i++)
		{
			Size		u = run->v10_nuse++;

			run->v10_use_benefit[u] = b->use_benefit[i];
			run->v10_use_line[u] = b->use_line[i];
			run->v10_use_statement[u] = b->pack_statement[k];
			run->v10_use_amount[u] = b->use_amount[i];
		}
	}
	args[0] = int_slice(b->line_id, 0, b->n, INT8OID, 8);
	args[1] = int_slice(statement, 0, b->n, INT8OID, 8);
	args[2] = int_slice(payer, 0, b->n, INT8OID, 8);
	args[3] = int_slice(b->list, 0, b->n, INT8OID, 8);
	args[4] = int_slice(b->rate, 0, b->n, INT4OID, 4);
	args[5] = int_slice(b->source, 0, b->n, INT2OID, 2);
	args[6] = int_slice(b->discount_id, 0, b->n, INT8OID, 8);
	args[7] = int_slice(b->discount, 0, b->n, INT8OID, 8);
	args[8] = int_slice(b->benefit, 0, b->n, INT8OID, 8);
	settle_exec_plan(PLAN_INSERT_LINES_V10, args, NULL, false, 0);
	if (SPI_processed != (uint64) b->n)
		elog(ERROR, "settlement wrote " UINT64_FORMAT " rows of tco.settled_line for %d lines",
			 SPI_processed, b->n);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
	b->npacks = 0;
	b->n = 0;
	b->nuse = 0;
}

/*
 * 1.0 mode: the run's benefit uses into tco.benefit_use, in use order, once
 * the statements they reference exist (settle_write_statements); a few INSERTs of
 * at most USES_V10_CHUNK uses each.
 */
#define USES_V10_CHUNK	65536

void
settle_write_uses_v10(SettleRun *run)
{
	Size		lo;

	for (lo = 0; lo < run->v10_nuse; lo += USES_V10_CHUNK)
	{
		MemoryContext cxt = AllocSetContextCreate(run->run_ctx, "tco settle 1.0 uses", ALLOCSET_DEFAULT_SIZES);
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
		int			n = (int) Min(run->v10_nuse - lo, (Size) USES_V10_CHUNK);
		Datum		args[4];

		args[0] = int_slice(run->v10_use_benefit + lo, 0, n, INT8OID, 8);
		args[1] = int_slice(run->v10_use_line + lo, 0, n, INT8OID, 8);
		args[2] = int_slice(run->v10_use_statement + lo, 0, n, INT8OID, 8);
		args[3] = int_slice(run->v10_use_amount + lo, 0, n, INT8OID, 8);
		settle_exec_plan(PLAN_INSERT_USES_V10, args, NULL, false, 0);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextDelete(cxt);
	}
}

/*
 * Write the batch's packs (each a slice of the flat per-line and per-use
 * arrays) in bulk, and empty the batch.  The time since the last mark was
 * pricing; the time in here is writing packs.
 */
void
settle_batch_flush(SettleRun *run)
{
	LineBatch  *b = &run->batch;
	MemoryContext rowcxt;
	Datum		v[lengthof(pack_columns)];
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	int			k;

	phase_done(run, PHASE_PRICE);
	if (b->npacks == 0)
		return;
	if (run->v10)
	{
		batch_flush_v10(run);
		phase_done(run, PHASE_PACKS);
		return;
	}
	if (run->packs == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(run->run_ctx);

		run->packs = tco_bulk_begin("settled_pack", lengthof(pack_columns), pack_columns);
		MemoryContextSwitchTo(oldcxt);
	}
	rowcxt = tco_bulk_row_context(run->packs);
	b->pack_line_lo[b->npacks] = Int32GetDatum(b->n + 1);
	b->pack_use_lo[b->npacks] = Int32GetDatum(b->nuse + 1);
	for (k = 0; k < b->npacks; k++)
	{
		int			l = DatumGetInt32(b->pack_line_lo[k]) - 1;
		int			nl = DatumGetInt32(b->pack_line_lo[k + 1]) - 1 - l;
		int			u = DatumGetInt32(b->pack_use_lo[k]) - 1;
		int			nu = DatumGetInt32(b->pack_use_lo[k + 1]) - 1 - u;
		MemoryContext oldcxt = MemoryContextSwitchTo(rowcxt);

		v[0] = Int64GetDatum(nextval_internal(run->pack_seq, false));
		v[1] = b->pack_statement[k];
		v[2] = b->pack_payer[k];
		v[3] = b->pack_account[k];
		v[4] = CStringGetTextDatum(b->pack_code[k]);
		v[5] = BillingCycleGetDatum((BillingCycle) DatumGetInt32(b->pack_cycle[k]));
		v[6] = TimestampTzGetDatum(now);
		v[7] = int_slice(b->line_id, l, nl, INT8OID, 8);
		v[8] = int_slice(b->list, l, nl, INT8OID, 8);
		if (run->late_schema)
		{
			/*
			 * 1.4 on: rates, sources and discount ids once per pack when
			 * they are the same for all its lines (they mostly are: one
			 * account and product), as are benefit amounts (below; mostly
			 * all zero), and no discount amounts, which the views
			 * recompute exactly from list and rate as settle_line computed
			 * them (README "Settlement speed").
			 */
			v[9] = int_slice_compact(b->rate, l, nl, INT4OID, 4);
			v[10] = int_slice_compact(b->source, l, nl, INT2OID, 2);
			v[11] = int_slice_compact(b->discount_id, l, nl, INT8OID, 8);
			v[12] = int_slice(b->discount, l, 0, INT8OID, 8);
		}
		else
		{
			/* 1.1 to 1.3: every array has one element per line */
			v[9] = int_slice(b->rate, l, nl, INT4OID, 4);
			v[10] = int_slice(b->source, l, nl, INT2OID, 2);
			v[11] = int_slice(b->discount_id, l, nl, INT8OID, 8);
			v[12] = int_slice(b->discount, l, nl, INT8OID, 8);
		}
		v[13] = run->late_schema ? int_slice_compact(b->benefit, l, nl, INT8OID, 8) :
			int_slice(b->benefit, l, nl, INT8OID, 8);
		v[14] = int_slice(b->use_line, u, nu, INT8OID, 8);
		v[15] = int_slice(b->use_benefit, u, nu, INT8OID, 8);
		v[16] = int_slice(b->use_amount, u, nu, INT8OID, 8);
		MemoryContextSwitchTo(oldcxt);
		tco_bulk_insert(run->packs, v, NULL);
	}
	b->npacks = 0;
	b->n = 0;
	b->nuse = 0;
	phase_done(run, PHASE_PACKS);
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * Check that the rows with these keys (n of them, duplicates allowed) exist
 * and lock them FOR KEY SHARE, as the foreign keys of rows written in bulk
 * would: one query for all.
 */
static void
lock_references(SettlePlan which, const char *what, int64 *ids, long n)
{
	Datum	   *keys;
	long		ndistinct = 0;
	long		i;
	Datum		arg;

	if (n == 0)
		return;
	qsort(ids, n, sizeof(int64), cmp_int64);
	keys = palloc(sizeof(Datum) * n);
	for (i = 0; i < n; i++)
		if (i == 0 || ids[i] != ids[i - 1])
			keys[ndistinct++] = Int64GetDatum(ids[i]);
	arg = settle_int8_array(keys, NULL, (int) ndistinct);
	settle_exec_plan(which, &arg, NULL, false, 0);
	if (SPI_processed != (uint64) ndistinct)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("%s referenced by the settlement no longer exists", what),
				 errdetail("%ld referenced, " UINT64_FORMAT " found.", ndistinct, SPI_processed)));
	SPI_freetuptable(SPI_tuptable);
	pfree(keys);
}

/* The columns of tco.statement and tco.statement_line, in the order written. */
static const BulkColumn statement_columns[] = {
	{"statement_id", INT8OID, -1}, {"payer_account_id", INT8OID, -1}, {"cycle", InvalidOid, -1},
	{"org_id", INT8OID, -1}, {"list_total", NUMERICOID, BULK_NUMERIC_TYPMOD(20, 2)},
	{"discount_total", NUMERICOID, BULK_NUMERIC_TYPMOD(20, 2)},
	{"benefit_total", NUMERICOID, BULK_NUMERIC_TYPMOD(20, 2)},
	{"due_total", NUMERICOID, BULK_NUMERIC_TYPMOD(20, 2)},
	{"created_at", TIMESTAMPTZOID, -1}, {"paid_at", TIMESTAMPTZOID, -1}
};
static const BulkColumn statement_line_columns[] = {
	{"statement_id", INT8OID, -1}, {"account_id", INT8OID, -1}, {"product_code", TEXTOID, -1},
	{"list_amount", NUMERICOID, BULK_NUMERIC_TYPMOD(20, 6)},
	{"discount_amount", NUMERICOID, BULK_NUMERIC_TYPMOD(20, 6)},
	{"benefit_amount", NUMERICOID, BULK_NUMERIC_TYPMOD(20, 6)},
	{"due_amount", NUMERICOID, BULK_NUMERIC_TYPMOD(20, 6)}, {"lines", INT4OID, -1}
};

/*
 * Statements and statement lines of the run, then the benefit balances.
 * New statements and their lines are written in bulk; lines for statements
 * that existed before (an earlier settlement of a narrower scope) are added
 * to them with INSERT ... ON CONFLICT, and those statements' totals are
 * recomputed from their lines.
 */
void
settle_write_statements(SettleRun *run)
{
	long		n = hash_get_num_entries(run->statement_lines);
	long		npayers = hash_get_num_entries(run->payers);
	HASH_SEQ_STATUS seq;
	StatementLineSum *sum;
	PayerStatement *ps;
	Datum		args[8];
	Datum	   *bid,
			   *bamount;
	int64	   *accounts = palloc(sizeof(int64) * (n + npayers + 1));
	int64	   *orgs = palloc(sizeof(int64) * (npayers + 1));
	long		naccounts = 0,
				norgs = 0,
				nold = 0;
	int			j,
				nused = 0;

	/*
	 * Totals of the new statements: every line of theirs is from this run.
	 * Rounding rule: the exact sum rounded half-up to 2 decimals (amounts are
	 * not negative), as round(sum, 2) does in SQL.
	 */
	run->result_statements = run->result_lines = 0;
	run->result_list_cents = run->result_due_cents = 0;
	hash_seq_init(&seq, run->statement_lines);
	while ((sum = hash_seq_search(&seq)) != NULL)
	{
		ps = sum->statement;
		accounts[naccounts++] = sum->key.account_id;
		if (!ps->is_new)
		{
			nold++;
			continue;
		}
		if (!run->has_org || ps->org_id == run->org_id)
			run->result_lines += sum->lines;
		settle_add_money(&ps->totals[0], sum->list);
		settle_add_money(&ps->totals[1], sum->discount);
		settle_add_money(&ps->totals[2], sum->benefit);
		settle_add_money(&ps->totals[3], sum->due);
	}
	hash_seq_init(&seq, run->payers);
	while ((ps = hash_seq_search(&seq)) != NULL)
	{
		if (!ps->is_new)
			continue;
		accounts[naccounts++] = ps->payer_account_id;
		if (ps->org_id != 0)
			orgs[norgs++] = ps->org_id;
	}
	lock_references(PLAN_LOCK_ACCOUNTS, "an account", accounts, naccounts);
	lock_references(PLAN_LOCK_ORGS, "an organization", orgs, norgs);

	if (npayers > 0)
	{
		BulkWriter *w = tco_bulk_begin("statement", lengthof(statement_columns), statement_columns);
		MemoryContext rowcxt = tco_bulk_row_context(w);
		Datum		v[lengthof(statement_columns)];
		bool		isnull[lengthof(statement_columns)] = {false};

		hash_seq_init(&seq, run->payers);
		while ((ps = hash_seq_search(&seq)) != NULL)
		{
			MemoryContext oldcxt;

			if (!ps->is_new)
				continue;
			oldcxt = MemoryContextSwitchTo(rowcxt);
			v[0] = Int64GetDatum(ps->statement_id);
			v[1] = Int64GetDatum(ps->payer_account_id);
			v[2] = BillingCycleGetDatum(run->cycle);
			v[3] = Int64GetDatum(ps->org_id);
			isnull[3] = ps->org_id == 0;
			for (j = 0; j < 4; j++)
			{
				int64		micro = ps->totals[j];
				int64		cents;

				/*
				 * half-up on the magnitude to cents (as numeric round(): a
				 * total made negative by corrections rounds as its
				 * opposite would), without overflow
				 */
				if (micro >= 0)
					cents = micro / 10000 + (micro % 10000 >= 5000 ? 1 : 0);
				else if (micro == PG_INT64_MIN)
					elog(ERROR, "settlement total out of range");
				else
					cents = -((-micro) / 10000 + ((-micro) % 10000 >= 5000 ? 1 : 0));
				v[4 + j] = NumericGetDatum(int64_div_fast_to_numeric(cents, 2));
				if (j == 0 && (!run->has_org || ps->org_id == run->org_id))
					run->result_list_cents += cents;
				else if (j == 3 && (!run->has_org || ps->org_id == run->org_id))
					run->result_due_cents += cents;
			}
			if (!run->has_org || ps->org_id == run->org_id)
				run->result_statements++;
			v[8] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
			v[9] = (Datum) 0;
			isnull[9] = true;
			MemoryContextSwitchTo(oldcxt);
			tco_bulk_insert(w, v, isnull);
		}
		tco_bulk_end(w);
	}

	if (n > nold)
	{
		BulkWriter *w = tco_bulk_begin("statement_line", lengthof(statement_line_columns),
									   statement_line_columns);
		MemoryContext rowcxt = tco_bulk_row_context(w);
		Datum		v[lengthof(statement_line_columns)];

		hash_seq_init(&seq, run->statement_lines);
		while ((sum = hash_seq_search(&seq)) != NULL)
		{
			MemoryContext oldcxt;

			if (!sum->statement->is_new)
				continue;
			oldcxt = MemoryContextSwitchTo(rowcxt);
			v[0] = Int64GetDatum(sum->statement_id);
			v[1] = Int64GetDatum(sum->key.account_id);
			v[2] = CStringGetTextDatum(sum->key.product_code);
			v[3] = NumericGetDatum(int64_div_fast_to_numeric(sum->list, 6));
			v[4] = NumericGetDatum(int64_div_fast_to_numeric(sum->discount, 6));
			v[5] = NumericGetDatum(int64_div_fast_to_numeric(sum->benefit, 6));
			v[6] = NumericGetDatum(int64_div_fast_to_numeric(sum->due, 6));
			v[7] = Int32GetDatum(sum->lines);
			MemoryContextSwitchTo(oldcxt);
			tco_bulk_insert(w, v, NULL);
		}
		tco_bulk_end(w);
	}

	if (nold > 0)
	{
		Datum	   *sid = palloc(sizeof(Datum) * nold);
		Datum	   *acct = palloc(sizeof(Datum) * nold);
		Datum	   *prod = palloc(sizeof(Datum) * nold);
		Datum	   *amounts[4];
		Datum	   *cnt = palloc(sizeof(Datum) * nold);
		Datum	   *statement_ids = palloc(sizeof(Datum) * npayers);
		int			dims[1] = {(int) nold};
		int			lbs[1] = {1};
		long		i = 0;

		for (j = 0; j < 4; j++)
			amounts[j] = palloc(sizeof(Datum) * nold);
		hash_seq_init(&seq, run->statement_lines);
		while ((sum = hash_seq_search(&seq)) != NULL)
		{
			if (sum->statement->is_new)
				continue;
			sid[i] = Int64GetDatum(sum->statement_id);
			acct[i] = Int64GetDatum(sum->key.account_id);
			prod[i] = CStringGetTextDatum(sum->key.product_code);
			amounts[0][i] = Int64GetDatum(sum->list);
			amounts[1][i] = Int64GetDatum(sum->discount);
			amounts[2][i] = Int64GetDatum(sum->benefit);
			amounts[3][i] = Int64GetDatum(sum->due);
			cnt[i] = Int32GetDatum(sum->lines);
			i++;
		}
		args[0] = settle_int8_array(sid, NULL, nold);
		args[1] = settle_int8_array(acct, NULL, nold);
		args[2] = text_array(prod, nold);
		for (j = 0; j < 4; j++)
			args[3 + j] = settle_int8_array(amounts[j], NULL, nold);
		args[7] = PointerGetDatum(construct_md_array(cnt, NULL, 1, dims, lbs, INT4OID, 4, true, TYPALIGN_INT));
		settle_exec_plan(PLAN_INSERT_STATEMENT_LINES, args, NULL, false, 0);

		/* statements that existed before and got lines from this run */
		i = 0;
		hash_seq_init(&seq, run->payers);
		while ((ps = hash_seq_search(&seq)) != NULL)
			if (ps->used && !ps->is_new)
				statement_ids[i++] = Int64GetDatum(ps->statement_id);
		args[0] = settle_int8_array(statement_ids, NULL, (int) i);
		settle_exec_plan(PLAN_STATEMENT_TOTALS, args, NULL, false, 0);
	}

	/*
	 * What settle_cycle returns, as PLAN_RESULT would read it back: known
	 * when the cycle had no statement before the run (so every statement of
	 * the scope is one just written) and the run wrote some.
	 */
	run->result_known = !run->had_statements && !run->v10 && run->result_statements > 0;

	bid = palloc(sizeof(Datum) * Max(run->nbenefits, 1));
	bamount = palloc(sizeof(Datum) * Max(run->nbenefits, 1));
	for (j = 0; j < run->nbenefits; j++)
	{
		if (run->benefits[j].used > 0)
		{
			bid[nused] = Int64GetDatum(run->benefits[j].benefit_id);
			bamount[nused] = Int64GetDatum(run->benefits[j].used);
			nused++;
		}
	}
	if (nused > 0)
	{
		args[0] = settle_int8_array(bid, NULL, nused);
		args[1] = settle_int8_array(bamount, NULL, nused);
		settle_exec_plan(PLAN_BENEFIT_BALANCES, args, NULL, false, 0);
	}
}
