/*
 * src/settle_price.c
 *
 * Settlement (settle.h): pricing one line, in settlement order.  Its payer
 * (R6, payer.c), its contract discount (R8, DESIGN section 4: the consumer's
 * own or its admin's, its manager's under a legacy trusteeship, its
 * entity's under a new one) as list * rate rounded half-up to a
 * micro-unit, the benefits (settle_benefit.c), and its sums on its
 * statement line and its per-line record (settle_write.c).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "settle.h"

void
settle_load_discounts(SettleRun *run, TimestampTz start, TimestampTz end)
{
	Datum		args[2] = {TimestampTzGetDatum(start), TimestampTzGetDatum(end)};
	SPITupleTable *tt;
	uint64		i;
	HASHCTL		ctl;

	ctl.keysize = sizeof(DiscountOwnerKey);
	ctl.entrysize = sizeof(DiscountOwner);
	ctl.hcxt = run->run_ctx;
	run->discounts = hash_create("tco settle discounts", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	settle_exec_plan(PLAN_DISCOUNTS, args, NULL, false, 0);
	tt = SPI_tuptable;
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = tt->vals[i];
		bool		isnull;
		bool		found;
		DiscountOwnerKey key;
		DiscountOwner *owner;
		DiscountRow *row;
		Datum		product;

		memset(&key, 0, sizeof(key));
		key.kind = settle_get_int8(tup, tt->tupdesc, 2, &isnull) == 0 ? OWNER_ACCOUNT : OWNER_ENTITY;
		key.id = settle_get_int8(tup, tt->tupdesc, 3, &isnull);
		owner = hash_search(run->discounts, &key, HASH_ENTER, &found);
		if (!found)
		{
			owner->n = 0;
			owner->cap = 4;
			owner->rows = MemoryContextAlloc(run->run_ctx, sizeof(DiscountRow) * owner->cap);
		}
		if (owner->n == owner->cap)
		{
			owner->cap *= 2;
			owner->rows = repalloc(owner->rows, sizeof(DiscountRow) * owner->cap);
		}
		row = &owner->rows[owner->n++];
		row->discount_id = settle_get_int8(tup, tt->tupdesc, 1, &isnull);
		product = settle_get_text(tup, tt->tupdesc, 4, &isnull);
		row->all_products = isnull;
		if (isnull)
			memset(row->product_code, 0, PRODUCT_CODE_LEN);
		else
			settle_text_to_code(product, row->product_code);
		row->rate_micro = settle_get_int8(tup, tt->tupdesc, 5, &isnull);
		row->valid_from = settle_get_tstz(tup, tt->tupdesc, 6, &isnull);
		row->valid_to = settle_get_tstz(tup, tt->tupdesc, 7, &isnull);
	}
	SPI_freetuptable(tt);
}

/*
 * The contract discount of an owner for a product at an instant: a
 * product-specific rate beats an all-products rate of the same owner.
 * [*from, *until) is narrowed to the instants around `at` where no row of
 * the owner for the product starts or ends: the answer holds over it.
 */
static const DiscountRow *
find_discount(SettleRun *run, int kind, int64 id, const char *product_code, TimestampTz at,
			  TimestampTz *from, TimestampTz *until)
{
	DiscountOwnerKey key;
	DiscountOwner *owner;
	const DiscountRow *all = NULL;
	const DiscountRow *found = NULL;
	int			i;

	if (id == 0)
		return NULL;
	/* lines come grouped by consumer: the same owners again and again */
	if (!owner_cache_get(&run->discount_cache, kind, id, (void **) &owner))
	{
		memset(&key, 0, sizeof(key));
		key.kind = kind;
		key.id = id;
		owner = hash_search(run->discounts, &key, HASH_FIND, NULL);
		owner_cache_put(&run->discount_cache, kind, id, owner);
	}
	if (owner == NULL)
		return NULL;
	for (i = 0; i < owner->n; i++)
	{
		const DiscountRow *row = &owner->rows[i];

		if (!row->all_products && strcmp(row->product_code, product_code) != 0)
			continue;
		if (row->valid_from > at)
			*until = Min(*until, row->valid_from);
		else
			*from = Max(*from, row->valid_from);
		if (row->valid_to > at)
			*until = Min(*until, row->valid_to);
		else
			*from = Max(*from, row->valid_to);
		if (at < row->valid_from || at >= row->valid_to)
			continue;
		/* the first product row, else the last all-products row, as always */
		if (!row->all_products)
		{
			if (found == NULL)
				found = row;
		}
		else
			all = row;
	}
	return found ? found : all;
}

/* ------------------------------------------------------------------------
 * Corrections (src/sql/41_late.sql, head comment): what a negative
 * correction line gives back
 */

typedef struct CorrectionHistory
{
	int64		corrects_line_id;	/* the original line */
	int64		due;			/* due left by the original and earlier corrections */
	int			nbenefits;
	int64	   *benefit_ids;	/* what each benefit paid net, in first-use order */
	int64	   *amounts;
} CorrectionHistory;

static int64 *
int8_array_elems(Datum d, int *n)
{
	ArrayType  *a = DatumGetArrayTypeP(d);
	Datum	   *elems;
	bool	   *nulls;
	int64	   *out;
	int			i;

	deconstruct_array(a, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, &nulls, n);
	out = palloc(sizeof(int64) * Max(*n, 1));
	for (i = 0; i < *n; i++)
		out[i] = nulls[i] ? 0 : DatumGetInt64(elems[i]);
	return out;
}

/*
 * A negative line must be a correction (the CHECK constraint of
 * tco.bill_line says so); read what its original and the earlier
 * corrections were priced at.  The batch is written first: the original or
 * an earlier correction may have been priced by this run.
 */
static void
correction_history(SettleRun *run, int64 line_id, int64 account_id, const char *product_code,
				   TimestampTz at, CorrectionHistory *h)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		isnull;
	SPITupleTable *tt;
	char		cycle_text[16];
	int			n2;

	memset(h, 0, sizeof(*h));
	if (run->late_schema)
	{
		args[0] = Int64GetDatum(line_id);
		args[1] = TimestampTzGetDatum(at);
		settle_exec_plan(PLAN_CORRECTS, args, NULL, true, 1);
		if (SPI_processed == 1)
			h->corrects_line_id = settle_get_int8(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		SPI_freetuptable(SPI_tuptable);
	}
	if (h->corrects_line_id == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("bill line " INT64_FORMAT " has a negative list amount and corrects no line", line_id),
				 errhint("tco.bill_line's CHECK constraint bill_line_amount_not_negative was dropped: restore it and correct the line.")));
	settle_batch_flush(run);
	snprintf(cycle_text, sizeof(cycle_text), "%04d-%02d", run->line_cycle / 12, run->line_cycle % 12 + 1);
	args[0] = Int64GetDatum(h->corrects_line_id);
	args[1] = Int64GetDatum(account_id);
	args[2] = CStringGetTextDatum(product_code);
	args[3] = CStringGetTextDatum(cycle_text);
	settle_exec_plan(PLAN_CORRECTION_HISTORY, args, nulls, false, 1);
	tt = SPI_tuptable;
	if (SPI_processed != 1)
		elog(ERROR, "no pricing history for correction " INT64_FORMAT, line_id);
	h->due = settle_get_int8(tt->vals[0], tt->tupdesc, 1, &isnull);
	h->benefit_ids = int8_array_elems(SPI_getbinval(tt->vals[0], tt->tupdesc, 2, &isnull), &h->nbenefits);
	h->amounts = int8_array_elems(SPI_getbinval(tt->vals[0], tt->tupdesc, 3, &isnull), &n2);
	if (n2 != h->nbenefits)
		elog(ERROR, "pricing history of correction " INT64_FORMAT " is inconsistent", line_id);
	SPI_freetuptable(tt);
}

/*
 * Give back what is left of a negative line after its (negative) discount:
 * first the due the original line and earlier corrections left (a negative
 * due), then what benefits paid for them, last use first, each back to its
 * balance or its payer (tco.return_benefit records where).  Whatever is
 * still left (none when the history adds up) is a negative due too.
 */
static void
give_back(SettleRun *run, int64 line_id, const CorrectionHistory *h, int64 statement_id, int64 payer,
		  int64 *remaining, int64 *benefit)
{
	int64		left = -*remaining;
	int64		due_back = Min(left, Max(h->due, 0));
	int			i;

	left -= due_back;
	for (i = h->nbenefits - 1; i >= 0 && left > 0; i--)
	{
		int64		r = Min(left, h->amounts[i]);
		Datum		args[7];

		if (r <= 0)
			continue;
		settle_record_use(run, h->benefit_ids[i], line_id, -r);
		args[0] = Int64GetDatum(line_id);
		args[1] = Int64GetDatum(h->corrects_line_id);
		args[2] = Int64GetDatum(statement_id);
		args[3] = Int64GetDatum(payer);
		args[4] = Int64GetDatum(h->benefit_ids[i]);
		args[5] = Int64GetDatum(r);
		args[6] = TimestampTzGetDatum(run->end);
		settle_exec_plan(PLAN_RETURN_BENEFIT, args, NULL, false, 0);
		*benefit -= r;
		left -= r;
	}
	*remaining = -(due_back + left);
}

/* ------------------------------------------------------------------------
 * Pricing one line
 */

/*
 * Discount sources as tco.settled_pack.discount_sources codes them
 * (src/sql/40_settlement.sql).
 */
#define SOURCE_NONE			0
#define SOURCE_OWN			1
#define SOURCE_ADMIN		2
#define SOURCE_MANAGER		3
#define SOURCE_ENTITY		4
#define SOURCE_OWN_NEW_TRUSTEESHIP 5

/*
 * list x rate (millionths) rounded half-up on the magnitude to micro-units:
 * in 64 bits when the product fits (a rate up to 1 and a line under about
 * 9.2 million), else in 128.
 */
static inline int64
discount_of(int64 list, int64 rate)
{
	uint64		magnitude = list >= 0 ? (uint64) list : -(uint64) list;
	int64		d;

	if (rate == 0)
		return 0;
	if (rate > 0 && rate <= MICRO && magnitude <= (uint64) ((PG_INT64_MAX - MICRO / 2) / MICRO))
		d = (int64) ((magnitude * (uint64) rate + MICRO / 2) / MICRO);
	else
		d = (int64) (((int128) magnitude * rate + MICRO / 2) / MICRO);
	return list >= 0 ? d : -d;
}

/*
 * The contract discount of a line (R8, DESIGN section 4) and its source;
 * [*from, *until) narrowed to where the answer holds for the same account,
 * product and payer span (find_discount).
 */
static void
price_discount(SettleRun *run, AccountInfo *consumer, int64 line_id, int64 account_id, int64 payer,
			   const char *product_code, TimestampTz at, const DiscountRow **discount_out,
			   int16 *source_out, TimestampTz *from, TimestampTz *until)
{
	const DiscountRow *discount;
	int16		source;

	if (payer == account_id)
	{
		discount = find_discount(run, OWNER_ACCOUNT, account_id, product_code, at, from, until);
		source = SOURCE_OWN;
		if (consumer->admin_account_id != 0 && consumer->admin_account_id != account_id &&
			consumer->verified && consumer->entity_id != 0)
		{
			AccountInfo *admin = settle_lookup_account(run, consumer->admin_account_id);

			if (admin->verified && admin->entity_id == consumer->entity_id)
			{
				const DiscountRow *inherited = find_discount(run, OWNER_ACCOUNT, admin->account_id,
															 product_code, at, from, until);

				if (inherited != NULL && (discount == NULL || inherited->rate_micro > discount->rate_micro))
				{
					discount = inherited;
					source = SOURCE_ADMIN;
				}
			}
		}
	}
	else
	{
		if (!run->payer_span.has_change)
			elog(ERROR, "payer " INT64_FORMAT " of bill line " INT64_FORMAT " comes from no trusteeship",
				 payer, line_id);
		if (run->payer_span.change_at < run->legacy_cutover)
		{
			discount = find_discount(run, OWNER_ACCOUNT, payer, product_code, at, from, until);
			source = SOURCE_MANAGER;
		}
		else
		{
			discount = find_discount(run, OWNER_ENTITY, consumer->entity_id, product_code, at, from, until);
			source = SOURCE_ENTITY;
			if (discount == NULL)
			{
				discount = find_discount(run, OWNER_ACCOUNT, account_id, product_code, at, from, until);
				source = SOURCE_OWN_NEW_TRUSTEESHIP;
			}
		}
	}
	*discount_out = discount;
	*source_out = discount == NULL ? SOURCE_NONE : source;
}

void
settle_line(SettleRun *run, int64 line_id, int64 account_id, const char *product_code,
			TimestampTz at, int64 list)
{
	int64		payer;
	AccountInfo *consumer;
	const DiscountRow *discount = NULL;
	int16		source = SOURCE_NONE;
	int64		rate = 0;
	int64		discount_amount;
	int64		remaining;
	int64		benefit = 0;
	int64		statement_id;
	StatementLineKey key;
	StatementLineSum *sum;
	bool		found;
	LineBatch  *batch = &run->batch;
	int			n;
	CorrectionHistory history;
	bool		same;

	if (list < 0)
		correction_history(run, line_id, account_id, product_code, at, &history);

	same = run->prev_valid && run->prev_account_id == account_id &&
		strcmp(run->prev_product_code, product_code) == 0;
	if (!same)
	{
		run->prev_valid = true;
		run->prev_account_id = account_id;
		strlcpy(run->prev_product_code, product_code, PRODUCT_CODE_LEN);
		run->prev_commitment = strncmp(product_code, COMMITMENT_PRODUCT_PREFIX,
									   strlen(COMMITMENT_PRODUCT_PREFIX)) == 0;
		run->ctx.valid = false;
	}

	/* the payer span is the previous line's: of this account and product if same */
	if (!(same && at >= run->payer_span.from && at < run->payer_span.until))
	{
		PayerDecision decision;

		tco_payer_decide(account_id, product_code, at, &decision);
		run->payer_span.from = at;
		run->payer_span.until = tco_payer_decision_until(&decision, at);
		run->payer_span.payer = decision.payer;
		run->payer_span.has_change = decision.change_index >= 0;
		if (decision.change_index >= 0)
			run->payer_span.change_at = decision.account[decision.change_index].at;
		run->ctx.valid = false;
	}
	payer = run->payer_span.payer;

	/*
	 * The consumer and its contract discount: the previous line's while the
	 * account, product and payer span are the same and no discount row of
	 * the owners consulted starts or ends (run->ctx).
	 */
	if (run->ctx.valid && at >= run->ctx.discount_from && at < run->ctx.discount_until)
	{
		consumer = run->ctx.consumer;
		discount = run->ctx.discount;
		source = run->ctx.source;
	}
	else
	{
		TimestampTz from = DT_NOBEGIN;
		TimestampTz until = DT_NOEND;

		/* a new account, product or payer span: the benefits are looked at again */
		if (!run->ctx.valid)
			run->ctx.benefits_spent = false;
		consumer = settle_lookup_account(run, account_id);
		price_discount(run, consumer, line_id, account_id, payer, product_code, at, &discount, &source,
					   &from, &until);
		run->ctx.valid = true;
		run->ctx.consumer = consumer;
		run->ctx.discount = discount;
		run->ctx.source = source;
		run->ctx.discount_from = from;
		run->ctx.discount_until = until;
	}
	if (discount != NULL)
		rate = discount->rate_micro;
	/* half-up on the magnitude: a correction's discount mirrors a line's */
	discount_amount = discount_of(list, rate);
	remaining = list - discount_amount;

	statement_id = settle_statement_for_payer(run, payer);
	settle_pack_for_line(run, same, statement_id, payer, account_id, product_code);

	if (list < 0)
	{
		give_back(run, line_id, &history, statement_id, payer, &remaining, &benefit);
		/* balances went back up */
		run->ctx.benefits_spent = false;
	}
	else if (!run->ctx.benefits_spent)
	{
		/*
		 * Benefits (R9, DESIGN section 5): resource packs, then savings
		 * plans, owned by or shared with the consumer (never on a
		 * commitment's own fee, 41_late.sql); the consumer's own coupons;
		 * the payer's vouchers with the pool vouchers shared with the
		 * consumer; the payer's stored-value cards.  When none of them
		 * had a balance left (settle_use_benefits says), the next lines of
		 * this account, product and payer span skip them.
		 */
		run->benefit_left = false;
		if (!run->prev_commitment)
		{
			settle_use_benefits(run, account_id, BENEFIT_PACK, account_id, BENEFIT_PACK,
								product_code, at, line_id, statement_id, &remaining, &benefit);
			settle_use_benefits(run, account_id, BENEFIT_PLAN, account_id, BENEFIT_PLAN,
								product_code, at, line_id, statement_id, &remaining, &benefit);
		}
		settle_use_benefits(run, account_id, BENEFIT_COUPON, 0, -1,
							product_code, at, line_id, statement_id, &remaining, &benefit);
		settle_use_benefits(run, payer, BENEFIT_VOUCHER, account_id, BENEFIT_POOL_VOUCHER,
							product_code, at, line_id, statement_id, &remaining, &benefit);
		settle_use_benefits(run, payer, BENEFIT_CARD, 0, -1,
							product_code, at, line_id, statement_id, &remaining, &benefit);
		run->ctx.benefits_spent = !run->benefit_left;
	}

	/* Statement line (the previous line's, mostly: lines come grouped) */
	sum = run->last_sum;
	if (sum == NULL || sum->key.payer_account_id != payer || sum->key.account_id != account_id ||
		(!same && strcmp(sum->key.product_code, product_code) != 0))
	{
		memset(&key, 0, sizeof(key));
		key.payer_account_id = payer;
		key.account_id = account_id;
		strlcpy(key.product_code, product_code, PRODUCT_CODE_LEN);
		sum = hash_search(run->statement_lines, &key, HASH_ENTER, &found);
		if (!found)
		{
			sum->statement_id = statement_id;
			sum->statement = run->last_payer;	/* set by settle_statement_for_payer */
			sum->list = sum->discount = sum->benefit = sum->due = 0;
			sum->lines = 0;
		}
		run->last_sum = sum;
	}
	settle_add_money(&sum->list, list);
	settle_add_money(&sum->discount, discount_amount);
	settle_add_money(&sum->benefit, benefit);
	settle_add_money(&sum->due, remaining);
	if (sum->lines == PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("more than %d bill lines for account " INT64_FORMAT " and product \"%s\" in one cycle",
						PG_INT32_MAX, account_id, product_code)));
	sum->lines++;

	/* Per-line record */
	n = batch->n++;
	batch->line_id[n] = Int64GetDatum(line_id);
	batch->list[n] = Int64GetDatum(list);
	batch->rate[n] = Int32GetDatum((int32) rate);
	batch->source[n] = Int16GetDatum(source);
	batch->discount_id[n] = Int64GetDatum(discount ? discount->discount_id : 0);
	batch->discount[n] = Int64GetDatum(discount_amount);
	batch->benefit[n] = Int64GetDatum(benefit);
}
