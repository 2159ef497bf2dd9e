/*
 * src/settle_benefit.c
 *
 * Settlement (settle.h): benefits (R9, DESIGN sections 5 and 8), loaded and
 * locked at the start of a run with their balances, used in the settlement
 * order of each line: resource packs, then savings plans (owned by or
 * shared with the consumer), the consumer's coupons, the payer's vouchers
 * with pool vouchers shared with the consumer, the payer's stored-value
 * cards; among usable ones the one that expires first, then the lowest id.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "settle.h"

/* Rows (benefit id, line period start, amount) of uses by savings plans. */
static void
add_plan_uses(SettleRun *run, SPITupleTable *tt, uint64 n)
{
	uint64		i;

	for (i = 0; i < n; i++)
	{
		HeapTuple	tup = tt->vals[i];
		bool		isnull;
		int64		benefit_id = settle_get_int8(tup, tt->tupdesc, 1, &isnull);
		BenefitIndex *bi = hash_search(run->benefit_index, &benefit_id, HASH_FIND, NULL);
		PlanHourKey key;
		PlanHour   *ph;
		bool		found;

		if (bi == NULL)
			continue;
		memset(&key, 0, sizeof(key));
		key.benefit_index = bi->index;
		key.hour = tco_trunc(settle_get_tstz(tup, tt->tupdesc, 2, &isnull),
							 TCO_GRAN_HOUR, run->tz);
		ph = hash_search(run->plan_hours, &key, HASH_ENTER, &found);
		if (!found)
			ph->used = 0;
		settle_add_money(&ph->used, settle_get_int8(tup, tt->tupdesc, 3, &isnull));
	}
	SPI_freetuptable(tt);
}

/*
 * What sharing needs, after the benefits were loaded (and locked): an index
 * by benefit id, the shares resolved against the current unit tree
 * (share.c), and what savings plans already paid per hour of the cycle.
 */
static void
load_sharing(SettleRun *run, TimestampTz start, TimestampTz end)
{
	Datum		args[3] = {TimestampTzGetDatum(start), TimestampTzGetDatum(end), (Datum) 0};
	HASHCTL		ctl;
	int			j;

	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(BenefitIndex);
	ctl.hcxt = run->run_ctx;
	run->benefit_index = hash_create("tco settle benefit index", Max(run->nbenefits, 64), &ctl,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (j = 0; j < run->nbenefits; j++)
	{
		BenefitIndex *bi = hash_search(run->benefit_index, &run->benefits[j].benefit_id, HASH_ENTER, NULL);

		bi->index = j;
	}
	ctl.keysize = sizeof(PlanHourKey);
	ctl.entrysize = sizeof(PlanHour);
	run->plan_hours = hash_create("tco settle savings plan hours", 256, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	run->ncandidates_cap = 64;
	run->candidates = MemoryContextAlloc(run->run_ctx, sizeof(int) * run->ncandidates_cap);
	run->tz = tco_billing_tz();

	/*
	 * 1.0 has no sharing: no shares, and no benefit of the kinds reached
	 * through them (packs, plans, pool vouchers), so settle_use_benefits never asks
	 * for grants.
	 */
	run->shares = run->v10 ? NULL : tco_share_load(run->run_ctx, run->load_start, end, run->has_org, run->org_id);

	/*
	 * Uses recorded by earlier settlements of the cycle: in the packs of the
	 * cycle's existing statements (settle_load_statements), found by index.
	 */
	{
		long		nstatements = hash_get_num_entries(run->payers);
		Datum	   *ids = palloc(sizeof(Datum) * Max(nstatements, 1));
		HASH_SEQ_STATUS seq;
		PayerStatement *ps;
		int			k = 0;

		hash_seq_init(&seq, run->payers);
		while ((ps = hash_seq_search(&seq)) != NULL)
			ids[k++] = Int64GetDatum(ps->statement_id);
		args[2] = settle_int8_array(ids, NULL, k);
		if (run->nkind[BENEFIT_PLAN] == 0)
			return;
	}
	if (hash_get_num_entries(run->payers) > 0)
	{
		settle_exec_plan(PLAN_PLAN_USES, args, NULL, false, 0);
		add_plan_uses(run, SPI_tuptable, SPI_processed);
	}
	/*
	 * Late lines of earlier cycles: what plans paid in their hours, on the
	 * statements of any cycle (the packs of those charge cycles).
	 */
	if (run->load_start < start)
	{
		Datum		late_args[3];

		late_args[0] = TimestampTzGetDatum(run->load_start);
		late_args[1] = TimestampTzGetDatum(start);
		late_args[2] = CStringGetTextDatum(run->cycle_text);
		settle_exec_plan(PLAN_PLAN_USES_LATE, late_args, NULL, false, 0);
		add_plan_uses(run, SPI_tuptable, SPI_processed);
	}
}

void
settle_load_benefits(SettleRun *run, TimestampTz start, TimestampTz end)
{
	/* valid over the cycle or the period of a late line priced by the run */
	Datum		args[3] = {TimestampTzGetDatum(run->load_start), TimestampTzGetDatum(end), Int64GetDatum(run->org_id)};
	SPITupleTable *tt;
	uint64		i;
	HASHCTL		ctl;

	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(BenefitOwner);
	ctl.hcxt = run->run_ctx;
	run->benefit_owners = hash_create("tco settle benefit owners", 64, &ctl,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	if (run->v10)
		settle_exec_plan(run->has_org ? PLAN_BENEFITS_ORG_V10 : PLAN_BENEFITS_V10, args, NULL, false, 0);
	else
		settle_exec_plan(run->has_org ? PLAN_BENEFITS_ORG : PLAN_BENEFITS, args, NULL, false, 0);
	tt = SPI_tuptable;
	run->nbenefits = (int) SPI_processed;
	run->benefits = MemoryContextAllocHuge(run->run_ctx, sizeof(Benefit) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = tt->vals[i];
		Benefit    *b = &run->benefits[i];
		bool		isnull;
		bool		found;
		int			kind = (int) settle_get_int8(tup, tt->tupdesc, 2, &isnull);
		int64		owner_id;
		BenefitOwner *owner;
		Datum		product;

		if (isnull || kind < 0 || kind >= BENEFIT_KINDS)
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("benefit " INT64_FORMAT " has a kind settlement does not know",
							settle_get_int8(tup, tt->tupdesc, 1, &isnull)),
					 errhint("tco.benefit's CHECK constraint benefit_kind was dropped or changed: restore it and correct the benefit.")));
		owner_id = settle_get_int8(tup, tt->tupdesc, 3, &isnull);

		b->benefit_id = settle_get_int8(tup, tt->tupdesc, 1, &isnull);
		b->kind = kind;
		run->nkind[kind]++;
		product = settle_get_text(tup, tt->tupdesc, 4, &isnull);
		b->any_product = isnull;
		if (isnull)
			memset(b->product_code, 0, PRODUCT_CODE_LEN);
		else
			settle_text_to_code(product, b->product_code);
		b->balance = settle_get_int8(tup, tt->tupdesc, 5, &isnull);
		b->used = 0;
		b->valid_from = settle_get_tstz(tup, tt->tupdesc, 6, &isnull);
		b->valid_to = settle_get_tstz(tup, tt->tupdesc, 7, &isnull);

		owner = hash_search(run->benefit_owners, &owner_id, HASH_ENTER, &found);
		if (!found)
		{
			memset(owner->first, 0, sizeof(owner->first));
			memset(owner->count, 0, sizeof(owner->count));
		}
		/* rows come sorted by owner, kind, expiry, id: each kind is one run */
		if (owner->count[kind] == 0)
			owner->first[kind] = (int) i;
		owner->count[kind]++;
	}
	SPI_freetuptable(tt);

	load_sharing(run, start, end);
}

/*
 * Record one benefit use (benefit, line, amount; negative: what a correction
 * gave back): the only place uses are recorded, so every kind of benefit
 * goes through it.  It is written with the line's pack, whose statement it
 * is on (settle_pack_for_line).
 */
void
settle_record_use(SettleRun *run, int64 benefit_id, int64 line_id, int64 amount)
{
	LineBatch  *batch = &run->batch;

	if (batch->nuse == batch->use_cap)
	{
		batch->use_cap *= 2;
		batch->use_benefit = repalloc(batch->use_benefit, sizeof(Datum) * batch->use_cap);
		batch->use_line = repalloc(batch->use_line, sizeof(Datum) * batch->use_cap);
		batch->use_amount = repalloc(batch->use_amount, sizeof(Datum) * batch->use_cap);
	}
	batch->use_benefit[batch->nuse] = Int64GetDatum(benefit_id);
	batch->use_line[batch->nuse] = Int64GetDatum(line_id);
	batch->use_amount[batch->nuse] = Int64GetDatum(amount);
	batch->nuse++;
}

/*
 * Pay what remains of a line from one benefit, if it applies to the line
 * (validity window and product scope on the line's period start).  A
 * savings plan pays at most its hourly commitment per billing-zone hour
 * over all the lines starting in that hour; any other benefit pays at most
 * its balance.
 */
static void
apply_benefit(SettleRun *run, int index, const char *product_code, TimestampTz at,
			  int64 line_id, int64 statement_id, int64 *remaining, int64 *benefit_total)
{
	Benefit    *b = &run->benefits[index];
	int64		amount;

	if (*remaining == 0 || at < b->valid_from || at >= b->valid_to)
		return;
	if (!b->any_product && strcmp(b->product_code, product_code) != 0)
		return;
	if (b->kind == BENEFIT_PLAN)
	{
		PlanHourKey key;
		PlanHour   *ph;
		bool		found;

		memset(&key, 0, sizeof(key));
		key.benefit_index = index;
		key.hour = tco_trunc(at, TCO_GRAN_HOUR, run->tz);
		ph = hash_search(run->plan_hours, &key, HASH_ENTER, &found);
		if (!found)
			ph->used = 0;
		amount = Min(b->balance - ph->used, *remaining);
		if (amount <= 0)
			return;
		ph->used += amount;
	}
	else
	{
		if (b->balance == 0)
			return;
		amount = Min(b->balance, *remaining);
		b->balance -= amount;
		b->used += amount;
	}
	*remaining -= amount;
	*benefit_total += amount;
	settle_record_use(run, b->benefit_id, line_id, amount);
}

/*
 * Whether a benefit may still pay a line: a balance left, or a savings
 * plan (its balance is per hour).
 */
static inline bool
benefit_left(const Benefit *b)
{
	return b->kind == BENEFIT_PLAN || b->balance > 0;
}

static int
compare_by_expiry(const void *a, const void *b, void *arg)
{
	const Benefit *benefits = (const Benefit *) arg;
	const Benefit *x = &benefits[*(const int *) a];
	const Benefit *y = &benefits[*(const int *) b];

	if (x->valid_to != y->valid_to)
		return x->valid_to < y->valid_to ? -1 : 1;
	if (x->benefit_id != y->benefit_id)
		return x->benefit_id < y->benefit_id ? -1 : 1;
	return 0;
}

/*
 * Use the benefits of one step of the settlement order on what remains of a
 * line: those of kind owner_kind owned by owner_id (0: none), together with
 * those of kind shared_kind shared with consumer_id (0: none) by a share
 * whose window holds the line start.  All of them in one order: the one
 * that expires first, then the lowest id.  A benefit reachable twice (owned
 * and shared, or through two shares) is used once.
 */
void
settle_use_benefits(SettleRun *run, int64 owner_id, int owner_kind, int64 consumer_id, int shared_kind,
			 const char *product_code, TimestampTz at, int64 line_id, int64 statement_id,
			 int64 *remaining, int64 *benefit_total)
{
	BenefitOwner *owner = NULL;
	const ShareGrant *grants = NULL;
	int			ngrants = 0;
	int			n = 0;
	int			i;

	if (*remaining == 0)
	{
		/* nothing looked at: some may have a balance (settle_line's ctx) */
		run->benefit_left = true;
		return;
	}
	/* fast path: no benefit of these kinds in this run */
	if (run->nkind[owner_kind] == 0 && (shared_kind < 0 || run->nkind[shared_kind] == 0))
		return;
	if (owner_id != 0 && run->nkind[owner_kind] > 0 &&
		!owner_cache_get(&run->benefit_cache, 0, owner_id, (void **) &owner))
	{
		owner = hash_search(run->benefit_owners, &owner_id, HASH_FIND, NULL);
		owner_cache_put(&run->benefit_cache, 0, owner_id, owner);
	}
	if (consumer_id != 0 && shared_kind >= 0 && run->nkind[shared_kind] > 0)
	{
		if (!run->grants_valid || run->grants_account != consumer_id)
		{
			run->grants = tco_share_grants(run->shares, consumer_id, &run->ngrants);
			run->grants_account = consumer_id;
			run->grants_valid = true;
		}
		grants = run->grants;
		ngrants = run->ngrants;
		/* a share may start later: not spent */
		if (ngrants > 0)
			run->benefit_left = true;
	}

	if (ngrants + (owner ? owner->count[owner_kind] : 0) > run->ncandidates_cap)
	{
		run->ncandidates_cap = ngrants + (owner ? owner->count[owner_kind] : 0);
		run->candidates = repalloc(run->candidates, sizeof(int) * run->ncandidates_cap);
	}
	for (i = 0; i < ngrants; i++)
	{
		BenefitIndex *bi;

		if (at < grants[i].from || at >= grants[i].until)
			continue;
		bi = hash_search(run->benefit_index, &grants[i].benefit_id, HASH_FIND, NULL);
		if (bi != NULL && run->benefits[bi->index].kind == shared_kind)
			run->candidates[n++] = bi->index;
	}

	if (n == 0)
	{
		/* nothing shared: the owner's run is already in expiry order */
		if (owner != NULL)
			for (i = owner->first[owner_kind]; i < owner->first[owner_kind] + owner->count[owner_kind]; i++)
			{
				if (*remaining > 0)
					apply_benefit(run, i, product_code, at, line_id, statement_id, remaining, benefit_total);
				if (benefit_left(&run->benefits[i]))
					run->benefit_left = true;
			}
		return;
	}
	if (owner != NULL)
		for (i = owner->first[owner_kind]; i < owner->first[owner_kind] + owner->count[owner_kind]; i++)
			run->candidates[n++] = i;
	if (n > 1)
		qsort_arg(run->candidates, n, sizeof(int), compare_by_expiry, run->benefits);
	for (i = 0; i < n; i++)
	{
		if (i > 0 && run->candidates[i] == run->candidates[i - 1])
			continue;
		if (*remaining > 0)
			apply_benefit(run, run->candidates[i], product_code, at, line_id, statement_id, remaining, benefit_total);
		if (benefit_left(&run->benefits[run->candidates[i]]))
			run->benefit_left = true;
	}
}
