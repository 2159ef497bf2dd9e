/*
 * src/payer.c
 *
 * Who pays a bill line (rule R6, DESIGN section 3).
 *
 * A trusteeship change for account A at instant t (establish, move, end)
 * switches the payer of A's product P at an effective instant e(P):
 *   - frozen product: if at t, A has a bill line for P whose period starts in
 *     the cycle containing t, issued before t and unpaid at t, then e(P) is
 *     the start of the next cycle;
 *   - otherwise e(P) is the first boundary of P's granularity at or after t.
 * The payer of a line (A, P, period start s) is the target of the latest
 * change (by t) among A's changes with e(P) <= s, or A itself if none.
 *
 * This is called once per bill line over millions of lines, so everything it
 * needs is cached per backend: the products and their granularity, every
 * account's list of changes, and per (account, product) the effective
 * instants of the changes (computed lazily: the frozen test needs one index
 * probe of tco.bill_line per change).  The cache follows the rule of cache.c:
 * tco.trusteeship, tco.product, tco.account, tco.config and
 * tco.bill_line_cycle carry statement triggers that send relcache
 * invalidations, and the callback below only marks the cache stale; it is
 * rebuilt at the start of the next call, never in the middle of one, so no
 * pointer is ever freed under a caller's feet.  Bill lines send none (README
 * "Ingest": every backend would drop its caches and plans for each statement
 * of a stream): what the frozen test read of them is kept for one view of
 * the data only (LinesView: the same snapshot data, no bill line written by
 * this backend since), and read again under the next.
 *
 * Snapshots: a cache built under a transaction snapshot (REPEATABLE READ and
 * above) may miss changes that later snapshots see; it is therefore dropped
 * at the next transaction.  Within a READ COMMITTED transaction each new
 * snapshot makes us accept pending invalidations once (cache.c), and the
 * cache and its lazy probes read under a snapshot taken then, not under the
 * calling statement's (which may predate the change whose invalidation made
 * us rebuild): a change committed by another session is seen by the next
 * statement at the latest.  settle_cycle rebuilds the cache from its own
 * snapshot (tco_payer_reset).  The queries run with search_path pinned to
 * pg_catalog, pg_temp (cache.c).
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "payer.h"


typedef struct ProductEntry
{
	char		product_code[PRODUCT_CODE_LEN]; /* hash key */
	TcoGranularity granularity;
	int			index;			/* 0 .. cache.nproducts - 1 */
} ProductEntry;

/*
 * What the frozen-product rule read is valid for: the bill lines it probed
 * as seen by one snapshot (no transaction completed since, and this backend
 * wrote no bill line since).  Bill-line writes send no invalidation (README
 * "Ingest"): the frozen flags are not kept beyond the view they were read
 * in, while the changes and products (invalidated by their tables) are.
 */
typedef struct LinesView
{
	LocalTransactionId lxid;
	TransactionId xmin;
	TransactionId xmax;
	uint32		xcnt;			/* transactions in progress below xmax */
	int32		subxcnt;
	bool		suboverflowed;
	uint64		writes;			/* bill-line statements of this backend */
} LinesView;

/*
 * The effective instant of each change of one account, for one product.
 * A change takes effect at its granularity boundary (ceil) or, when frozen,
 * at the start of the next cycle (next); which of the two depends on bill
 * lines, and it matters only for instants between the two.  The frozen
 * flags are read only when asked about such an instant (or by explain):
 * until then (known false) effective holds the earlier of the two, which
 * gives the right answer for every other instant and a safe end for a
 * settlement's payer span (tco_payer_decision_until), and depends on no
 * bill line.  A settlement whose changes all lie in earlier cycles reads no
 * bill line for the frozen-product rule at all.
 */
typedef struct ProductEffective
{
	ProductEntry *product;
	TimestampTz *effective;		/* one per change */
	bool	   *frozen;			/* one per change */
	TimestampTz *ceil;			/* one per change: not frozen */
	TimestampTz *next_start;	/* one per change: frozen */
	bool		known;			/* frozen (and effective) read from bill lines */
	LinesView	view;			/* what frozen was read under, when known */
} ProductEffective;

typedef struct AccountEntry
{
	int64		account_id;		/* hash key */
	bool		exists;			/* in tco.account */
	int			nchanges;
	PayerChange *changes;		/* sorted by instant, an end before a start */
	ProductEffective **products;	/* by product index, made on first use */
} AccountEntry;

typedef struct PayerCache
{
	bool		valid;
	uint64		generation;		/* bumped by every relevant invalidation */
	MemoryContext context;
	HTAB	   *products;
	HTAB	   *accounts;
	pg_tz	   *tz;
	Oid			relids[6];
	/* cycles whose partition is detached (archived): their lines are not here */
	int			ndetached;
	BillingCycle *detached;
	TimestampTz *detached_start;	/* [start, end) of each, in the billing zone */
	TimestampTz *detached_end;
	/* how long what was read stays valid (cache.c) */
	TcoCacheScope scope;
	LocalTransactionId built_lxid;
	uint64		built_epoch;
	List	   *long_codes;		/* products whose code has PRODUCT_CODE_LEN bytes or more */
	int			nproducts;		/* entries of products */
	/* the last (account, product) answered: bill lines come grouped */
	AccountEntry *last_account;
	ProductEntry *last_product;
	ProductEffective *last_effective;	/* NULL when the account has no change */
	SPIPlanPtr	frozen_plan;
	SPIPlanPtr	account_plan;
} PayerCache;

static PayerCache cache;

static const char *const cache_tables[] = {"trusteeship", "bill_line", "product", "account", "config",
"bill_line_cycle"};

static void
payer_cache_invalidate(Datum arg, Oid relid)
{
	int			i;

	if (relid != InvalidOid)
	{
		for (i = 0; i < (int) lengthof(cache.relids); i++)
			if (cache.relids[i] == relid)
				break;
		if (i == (int) lengthof(cache.relids))
			return;
	}
	cache.valid = false;
	cache.generation++;
	cache.last_account = NULL;
	cache.last_product = NULL;
	cache.last_effective = NULL;
}

/* Bill-line statements of this backend (tco_payer_lines_written). */
static uint64 lines_written = 0;

/*
 * Called by the statement triggers of tco.bill_line (src/ingest.c): this
 * backend's own new, changed or deleted lines are seen by the frozen-product
 * rule from its next call on.  Other backends see them with their next
 * snapshot taken after the commit, as they see any data: nothing is sent.
 */
void
tco_payer_lines_written(void)
{
	lines_written++;
}

/*
 * The view of bill lines of the active snapshot; false when there is none
 * (then nothing read about lines is reused).  Two snapshots of one
 * transaction with the same xmin and xmax see the same other transactions
 * when they list as many in progress: every transaction id below xmax was
 * assigned before the first, so the list can only have shrunk.  The command
 * id does not matter: this backend's own bill-line writes are counted
 * (tco_payer_lines_written), and a settlement, whose snapshot's command id
 * moves with each batch it writes, keeps what it read.
 */
static bool
lines_view_now(LinesView *v)
{
	Snapshot	snap;

	if (!ActiveSnapshotSet())
		return false;
	snap = GetActiveSnapshot();
	if (snap->snapshot_type != SNAPSHOT_MVCC)
		return false;
	memset(v, 0, sizeof(*v));
	v->lxid = MyProc->lxid;
	v->xmin = snap->xmin;
	v->xmax = snap->xmax;
	v->xcnt = snap->xcnt;
	v->subxcnt = snap->subxcnt;
	v->suboverflowed = snap->suboverflowed;
	v->writes = lines_written;
	return true;
}

static inline bool
lines_view_equal(const LinesView *a, const LinesView *b)
{
	return a->lxid == b->lxid && a->xmin == b->xmin && a->xmax == b->xmax &&
		a->xcnt == b->xcnt && a->subxcnt == b->subxcnt &&
		a->suboverflowed == b->suboverflowed && a->writes == b->writes;
}

void
tco_payer_init(void)
{
	CacheRegisterRelcacheCallback(payer_cache_invalidate, (Datum) 0);
}

static int
change_cmp(const void *a, const void *b)
{
	const PayerChange *x = (const PayerChange *) a;
	const PayerChange *y = (const PayerChange *) b;

	if (x->at != y->at)
		return x->at < y->at ? -1 : 1;
	/* at the same instant an end comes before the start it makes room for */
	if (x->kind != y->kind)
		return x->kind == PAYER_CHANGE_END ? -1 : (y->kind == PAYER_CHANGE_END ? 1 : 0);
	return x->trusteeship_id < y->trusteeship_id ? -1 : (x->trusteeship_id > y->trusteeship_id ? 1 : 0);
}

static const Oid product_types[2] = {TEXTOID, TEXTOID};
static const Oid change_types[5] = {INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID};

static void
load_products(void)
{
	MemoryContext oldcxt;
	HASHCTL		ctl;
	uint64		i;
	int			ret;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = PRODUCT_CODE_LEN;
	ctl.entrysize = sizeof(ProductEntry);
	ctl.hcxt = cache.context;
	cache.products = hash_create("tco payer products", 64, &ctl,
								 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	cache.long_codes = NIL;
	cache.nproducts = 0;
	ret = SPI_execute("SELECT product_code, granularity::pg_catalog.text FROM tco.product", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read tco.product: %s", SPI_result_code_string(ret));
	tco_check_columns(SPI_tuptable->tupdesc, 2, product_types, "tco.product");
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *code = SPI_getvalue(tup, desc, 1);
		char	   *gran = SPI_getvalue(tup, desc, 2);
		ProductEntry *entry;
		bool		found;

		if (code == NULL || gran == NULL)
			continue;
		if (strlen(code) >= PRODUCT_CODE_LEN)
		{
			/* remembered to say "too long", not "does not exist" */
			oldcxt = MemoryContextSwitchTo(cache.context);
			cache.long_codes = lappend(cache.long_codes, pstrdup(code));
			MemoryContextSwitchTo(oldcxt);
			continue;
		}
		entry = hash_search(cache.products, code, HASH_ENTER, &found);
		entry->granularity = tco_granularity_from_name(gran);
		if (!found)
			entry->index = cache.nproducts++;
	}
}

static void
load_changes(void)
{
	HASHCTL		ctl;
	uint64		i;
	int			ret;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(AccountEntry);
	ctl.hcxt = cache.context;
	cache.accounts = hash_create("tco payer accounts", 1024, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	ret = SPI_execute("SELECT member_account_id, management_account_id, trusteeship_id, "
					  "established_at, ended_at FROM tco.trusteeship "
					  "ORDER BY member_account_id, established_at, trusteeship_id",
					  true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read tco.trusteeship: %s", SPI_result_code_string(ret));
	tco_check_columns(SPI_tuptable->tupdesc, 5, change_types, "tco.trusteeship");

	for (i = 0; i < SPI_processed;)
	{
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		member = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], desc, 1, &isnull));
		uint64		j;
		int			n = 0;
		AccountEntry *entry;
		bool		found;

		/* the rows of one member are consecutive */
		for (j = i; j < SPI_processed; j++)
			if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[j], desc, 1, &isnull)) != member)
				break;

		entry = hash_search(cache.accounts, &member, HASH_ENTER, &found);
		entry->exists = true;
		entry->products = NULL;
		entry->changes = MemoryContextAlloc(cache.context, sizeof(PayerChange) * 2 * (j - i));
		for (; i < j; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			int64		manager = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
			int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
			TimestampTz established = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
			TimestampTz ended = DatumGetTimestampTz(SPI_getbinval(tup, desc, 5, &isnull));
			PayerChange *start = &entry->changes[n++];

			start->at = established;
			start->target = manager;
			start->trusteeship_id = id;
			start->kind = PAYER_CHANGE_ESTABLISH;
			if (!isnull)
			{
				PayerChange *end = &entry->changes[n++];

				end->at = ended;
				end->target = member;
				end->trusteeship_id = id;
				end->kind = PAYER_CHANGE_END;
			}
		}
		qsort(entry->changes, n, sizeof(PayerChange), change_cmp);
		/* a start at the instant another trusteeship ends is a move */
		for (j = 1; j < (uint64) n; j++)
			if (entry->changes[j].kind == PAYER_CHANGE_ESTABLISH &&
				entry->changes[j - 1].kind == PAYER_CHANGE_END &&
				entry->changes[j - 1].at == entry->changes[j].at)
				entry->changes[j].kind = PAYER_CHANGE_MOVE;
		entry->nchanges = n;
	}
}

/*
 * The cycles whose partition of tco.bill_line is detached (README "Storage:
 * bill lines partitioned by cycle"); none before version 1.3, which has no
 * tco.bill_line_cycle.
 */
static void
load_detached(void)
{
	uint64		i;
	int			ret;

	cache.ndetached = 0;
	cache.detached = NULL;
	if (!OidIsValid(tco_relid("bill_line_cycle")))
		return;
	ret = SPI_execute("SELECT cycle::pg_catalog.text FROM tco.bill_line_cycle WHERE detached ORDER BY 1", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read tco.bill_line_cycle: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return;
	cache.detached = MemoryContextAlloc(cache.context, sizeof(BillingCycle) * SPI_processed);
	cache.detached_start = MemoryContextAlloc(cache.context, sizeof(TimestampTz) * SPI_processed);
	cache.detached_end = MemoryContextAlloc(cache.context, sizeof(TimestampTz) * SPI_processed);
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *text = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		int			y,
					m;

		if (text == NULL || sscanf(text, "%d-%d", &y, &m) != 2)
			elog(ERROR, "malformed cycle in tco.bill_line_cycle");
		cache.detached[cache.ndetached] = (BillingCycle) (y * 12 + m - 1);
		cache.detached_start[cache.ndetached] = tco_cycle_start(cache.detached[cache.ndetached], cache.tz);
		cache.detached_end[cache.ndetached] = tco_next_cycle_start(cache.detached[cache.ndetached], cache.tz);
		cache.ndetached++;
	}
}

static void
ensure_cache(void)
{
	uint64		generation;
	int			i;
	int			nestlevel;
	TcoCacheScope scope;

	tco_accept_invalidations();

	if (cache.valid && !tco_cache_scope_valid(cache.scope, cache.built_lxid, cache.built_epoch))
		cache.valid = false;
	if (cache.valid)
		return;

	if (cache.context == NULL)
		cache.context = AllocSetContextCreate(CacheMemoryContext, "tco payer cache",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(cache.context);
	cache.products = NULL;
	cache.accounts = NULL;
	cache.long_codes = NIL;
	cache.last_account = NULL;
	cache.last_product = NULL;
	cache.last_effective = NULL;

	generation = cache.generation;
	for (i = 0; i < (int) lengthof(cache_tables); i++)
		cache.relids[i] = tco_relid(cache_tables[i]);
	cache.tz = tco_billing_tz();

	/*
	 * Built under a snapshot taken after the invalidations were accepted
	 * (cache.c, tco_push_cache_snapshot), not the calling statement's, which
	 * can predate the change that made us rebuild.
	 */
	nestlevel = tco_pin_search_path();
	scope = tco_push_cache_snapshot();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	load_products();
	load_changes();
	load_detached();
	SPI_finish();
	PopActiveSnapshot();
	tco_restore_search_path(nestlevel);

	/*
	 * An invalidation that arrived while loading leaves the cache marked
	 * invalid: what was loaded serves this call only and is reloaded on the
	 * next one.
	 */
	cache.scope = scope;
	cache.built_lxid = MyProc->lxid;
	cache.built_epoch = tco_snapshot_epoch();
	cache.valid = (generation == cache.generation);
}

/*
 * Force the next call to rebuild the cache: settle_cycle builds its payers
 * from its own snapshot, whatever this backend cached before.
 */
void
tco_payer_reset(void)
{
	cache.valid = false;
	cache.generation++;
	cache.last_account = NULL;
	cache.last_product = NULL;
	cache.last_effective = NULL;
}

/*
 * What a lazy probe reads goes into the cache: if it was read under a
 * snapshot of narrower scope than the cache's (parallel mode), the whole
 * cache gets that scope.
 */
static void
probe_scope(TcoCacheScope scope)
{
	if (scope > cache.scope)
	{
		cache.scope = scope;
		cache.built_lxid = MyProc->lxid;
		cache.built_epoch = tco_snapshot_epoch();
	}
}

static AccountEntry *
lookup_account(int64 account_id)
{
	AccountEntry *entry;
	bool		exists;

	entry = hash_search(cache.accounts, &account_id, HASH_FIND, NULL);
	if (entry == NULL)
	{
		Datum		arg = Int64GetDatum(account_id);
		Oid			argtype = INT8OID;
		int			ret;

		int			nestlevel;

		/* ask first, enter after: an error in between must leave no entry */
		nestlevel = tco_pin_search_path();
		probe_scope(tco_push_cache_snapshot());
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (cache.account_plan == NULL)
		{
			SPIPlanPtr	plan = SPI_prepare("SELECT 1 FROM tco.account WHERE account_id OPERATOR(pg_catalog.=) $1",
										   1, &argtype);

			if (plan == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
			SPI_keepplan(plan);
			cache.account_plan = plan;
		}
		ret = SPI_execute_plan(cache.account_plan, &arg, NULL, true, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "could not read tco.account: %s", SPI_result_code_string(ret));
		exists = (SPI_processed == 1);
		SPI_finish();
		PopActiveSnapshot();
		tco_restore_search_path(nestlevel);

		entry = hash_search(cache.accounts, &account_id, HASH_ENTER, NULL);
		entry->nchanges = 0;
		entry->changes = NULL;
		entry->products = NULL;
		entry->exists = exists;
	}
	if (!entry->exists)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("account " INT64_FORMAT " does not exist", account_id),
				 errhint("The payer is defined for accounts of tco.account only.")));
	return entry;
}

/* The first bytes of a code that fit in a message, cut on a character boundary. */
static int
code_clip(const char *code, int len)
{
	return pg_mbcliplen(code, len, Min(len, 40));
}

static ProductEntry *
lookup_product(const char *product_code)
{
	ProductEntry *entry = NULL;
	int			len = (int) strlen(product_code);

	if (len < PRODUCT_CODE_LEN)
		entry = hash_search(cache.products, product_code, HASH_FIND, NULL);
	else
	{
		ListCell   *lc;

		foreach(lc, cache.long_codes)
			if (strcmp((const char *) lfirst(lc), product_code) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("product code \"%.*s...\" is longer than %d bytes",
								code_clip(product_code, len), product_code, PRODUCT_CODE_LEN - 1),
						 errdetail("The product exists in tco.product, but tco handles product codes of at most %d bytes.",
								   PRODUCT_CODE_LEN - 1),
						 errhint("Restore the CHECK constraint of tco.product.product_code and give the product a shorter code.")));
	}
	if (entry == NULL)
	{
		if (len >= PRODUCT_CODE_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
					 errmsg("product \"%.*s...\" does not exist", code_clip(product_code, len), product_code),
					 errhint("Product codes have at most %d characters.", PRODUCT_CODE_LEN - 1)));
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("product \"%s\" does not exist", product_code),
				 errhint("Products and their billing granularity are listed in tco.product.")));
	}
	return entry;
}

/*
 * The frozen test of every change of one account for one product, in one
 * query: which changes had an unpaid line of the product, issued before the
 * change, in the cycle containing the change.
 */
static void
compute_frozen(AccountEntry *account, ProductEntry *product, bool *frozen)
{
	int			n = account->nchanges;
	Datum	   *instants = palloc(sizeof(Datum) * n);
	Datum	   *cycle_starts = palloc(sizeof(Datum) * n);
	Datum	   *cycle_ends = palloc(sizeof(Datum) * n);
	Datum		args[5];
	Oid			argtypes[5] = {INT8OID, TEXTOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
	int			i;
	int			ret;
	uint64		r;
	int			nestlevel;

	for (i = 0; i < n; i++)
	{
		TimestampTz t = account->changes[i].at;
		TimestampTz cs,
					ce;

		/* a change in no billing cycle (local year beyond 9999) freezes nothing */
		if (!tco_cycle_bounds(t, cache.tz, &cs, &ce))
			cs = ce = t;
		instants[i] = TimestampTzGetDatum(t);
		cycle_starts[i] = TimestampTzGetDatum(cs);
		cycle_ends[i] = TimestampTzGetDatum(ce);
		frozen[i] = false;
	}
	args[0] = Int64GetDatum(account->account_id);
	args[1] = CStringGetTextDatum(product->product_code);
	args[2] = PointerGetDatum(construct_array(instants, n, TIMESTAMPTZOID, sizeof(TimestampTz), true, TYPALIGN_DOUBLE));
	args[3] = PointerGetDatum(construct_array(cycle_starts, n, TIMESTAMPTZOID, sizeof(TimestampTz), true, TYPALIGN_DOUBLE));
	args[4] = PointerGetDatum(construct_array(cycle_ends, n, TIMESTAMPTZOID, sizeof(TimestampTz), true, TYPALIGN_DOUBLE));

	/*
	 * unnest() of several arrays is the parser's ROWS FROM form only when
	 * unqualified: the pinned search_path makes it pg_catalog's.
	 */
	nestlevel = tco_pin_search_path();
	probe_scope(tco_push_cache_snapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (cache.frozen_plan == NULL)
	{
		/*
		 * One generic plan, kept: custom plans look cheaper to the plan
		 * cache, so it planned this query again for every (account,
		 * product) of a settlement, and planning it over the partitions of
		 * tco.bill_line cost several times its execution (README
		 * "Settlement speed").  The test is a correlated subquery with
		 * LIMIT 1 rather than EXISTS, which the planner would turn into a
		 * semi-join reading every line of the account and product in every
		 * cycle: as a subplan, each change's lines are found through the
		 * (account_id, product_code, period_start) index of its cycle's
		 * partition alone, the others pruned at run time.
		 */
		SPIPlanPtr	plan = SPI_prepare_cursor(
									   "SELECT c.i::pg_catalog.int4 FROM unnest($3, $4, $5) WITH ORDINALITY AS c(t, cs, ce, i) "
									   "WHERE (SELECT true FROM tco.bill_line b "
									   "  WHERE b.account_id OPERATOR(pg_catalog.=) $1 AND b.product_code OPERATOR(pg_catalog.=) $2 "
									   "    AND b.period_start OPERATOR(pg_catalog.>=) c.cs AND b.period_start OPERATOR(pg_catalog.<) c.ce "
									   "    AND b.issued_at OPERATOR(pg_catalog.<) c.t "
									   "    AND (b.paid_at IS NULL OR b.paid_at OPERATOR(pg_catalog.>) c.t) LIMIT 1)",
									   5, argtypes, CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		cache.frozen_plan = plan;
	}
	ret = SPI_execute_plan(cache.frozen_plan, args, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read tco.bill_line: %s", SPI_result_code_string(ret));
	for (r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int32		idx = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));

		if (!isnull && idx >= 1 && idx <= n)
			frozen[idx - 1] = true;
	}
	SPI_finish();
	PopActiveSnapshot();
	tco_restore_search_path(nestlevel);
}

/*
 * The memo of an account's changes for a product: with the frozen flags not
 * read yet (known false) if there is none or if they were read under
 * another view of the bill lines.
 */
static ProductEffective *
product_effective(AccountEntry *account, ProductEntry *product, const LinesView *view, bool have_view)
{
	ProductEffective *pe;
	int			i;

	/* one slot per product: a settlement or a query asks per line */
	if (account->products == NULL)
		account->products = MemoryContextAllocZero(cache.context,
												   sizeof(ProductEffective *) * Max(cache.nproducts, 1));
	pe = account->products[product->index];
	if (pe != NULL && (!pe->known || (have_view && lines_view_equal(&pe->view, view))))
		return pe;
	if (pe == NULL)
	{
		int			n = account->nchanges;

		pe = MemoryContextAlloc(cache.context, sizeof(ProductEffective));
		pe->product = product;
		pe->effective = MemoryContextAlloc(cache.context, sizeof(TimestampTz) * n);
		pe->frozen = MemoryContextAlloc(cache.context, sizeof(bool) * n);
		pe->ceil = MemoryContextAlloc(cache.context, sizeof(TimestampTz) * n);
		pe->next_start = MemoryContextAlloc(cache.context, sizeof(TimestampTz) * n);
		for (i = 0; i < n; i++)
		{
			TimestampTz t = account->changes[i].at;
			TimestampTz cs;

			pe->ceil[i] = tco_boundary_ceil(t, product->granularity, cache.tz);
			/* a change in no billing cycle (local year beyond 9999) freezes nothing */
			if (!tco_cycle_bounds(t, cache.tz, &cs, &pe->next_start[i]))
				pe->next_start[i] = pe->ceil[i];
		}
		account->products[product->index] = pe;
	}
	pe->known = false;
	memset(&pe->view, 0, sizeof(pe->view));
	for (i = 0; i < account->nchanges; i++)
	{
		pe->frozen[i] = false;
		pe->effective[i] = Min(pe->ceil[i], pe->next_start[i]);
	}
	return pe;
}

/* Whether the frozen flag of some change decides the answer at `at`. */
static bool
frozen_matters(const AccountEntry *account, const ProductEffective *pe, TimestampTz at)
{
	int			i;

	for (i = 0; i < account->nchanges; i++)
		if (at >= Min(pe->ceil[i], pe->next_start[i]) && at < Max(pe->ceil[i], pe->next_start[i]))
			return true;
	return false;
}

/* Read the frozen flags of the memo and set the effective instants they give. */
static void
product_effective_read(AccountEntry *account, ProductEntry *product, ProductEffective *pe,
					   const LinesView *view, bool have_view)
{
	bool	   *frozen = palloc(sizeof(bool) * account->nchanges);
	int			i;

	compute_frozen(account, product, frozen);
	for (i = 0; i < account->nchanges; i++)
	{
		pe->frozen[i] = frozen[i];
		pe->effective[i] = frozen[i] ? pe->next_start[i] : pe->ceil[i];
	}
	/* without a snapshot, what was read serves this call only */
	pe->known = true;
	if (have_view)
		pe->view = *view;
	else
		memset(&pe->view, 0, sizeof(pe->view));
	pfree(frozen);
}

/*
 * The payer decision (tco_payer_decide); with explain, every change's
 * frozen flag and effective instant read, as tco.explain_payer shows them.
 */
static void
payer_decide(int64 account_id, const char *product_code, TimestampTz at,
			 PayerDecision *decision, bool explain)
{
	AccountEntry *account;
	ProductEntry *product;
	ProductEffective *pe;
	int			i;
	LinesView	view;
	bool		have_view;

	ensure_cache();

	memset(decision, 0, sizeof(PayerDecision));
	decision->account_id = account_id;
	decision->payer = account_id;
	decision->change_index = -1;

	have_view = lines_view_now(&view);
	if (cache.last_account != NULL && cache.last_account->account_id == account_id &&
		strcmp(cache.last_product->product_code, product_code) == 0 &&
		(cache.last_effective == NULL || !cache.last_effective->known ||
		 (have_view && lines_view_equal(&cache.last_effective->view, &view))))
	{
		account = cache.last_account;
		product = cache.last_product;
		pe = cache.last_effective;
	}
	else
	{
		uint64		generation = cache.generation;

		product = lookup_product(product_code);
		account = lookup_account(account_id);
		pe = account->nchanges > 0 ? product_effective(account, product, &view, have_view) : NULL;
		/* an invalidation while computing: the memo must not outlive it */
		if (generation == cache.generation)
		{
			cache.last_account = account;
			cache.last_product = product;
			cache.last_effective = pe;
		}
	}
	/* the frozen flags, read only when they decide the answer (or to explain it) */
	if (pe != NULL && !pe->known && (explain || frozen_matters(account, pe, at)))
		product_effective_read(account, product, pe, &view, have_view);
	decision->granularity = product->granularity;
	decision->account = account->nchanges > 0 ? account->changes : NULL;
	decision->nchanges = account->nchanges;
	decision->effective = pe ? pe->effective : NULL;
	decision->frozen = pe ? pe->frozen : NULL;

	/*
	 * A line starting in a cycle whose partition is detached: when a change
	 * of the account falls in that cycle, its effective instant depends on
	 * the frozen-product rule, that is on lines that are not here.  Refuse
	 * rather than answer from missing data (payers of other cycles do not
	 * depend on it: a change of the detached cycle is in effect by the start
	 * of the next cycle either way).
	 */
	if (cache.ndetached > 0 && account->nchanges > 0)
	{
		int			k;

		for (k = 0; k < cache.ndetached; k++)
			if (at >= cache.detached_start[k] && at < cache.detached_end[k])
				break;
		if (k < cache.ndetached)
			for (i = 0; i < account->nchanges; i++)
				if (account->changes[i].at >= cache.detached_start[k] &&
					account->changes[i].at < cache.detached_end[k])
					ereport(ERROR,
							(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							 errmsg("billing cycle %04d-%02d of tco.bill_line is detached",
									cache.detached[k] / 12, cache.detached[k] % 12 + 1),
							 errdetail("Account " INT64_FORMAT " has a trusteeship change in that cycle, and who pays a line of it depends on the cycle's bill lines (frozen-product rule).",
									   account_id),
							 errhint("Reattach the cycle with tco.attach_cycle('%04d-%02d').",
									 cache.detached[k] / 12, cache.detached[k] % 12 + 1)));
	}

	/* the latest change (by instant) whose effective instant is <= at */
	for (i = account->nchanges - 1; i >= 0; i--)
	{
		if (pe->effective[i] <= at)
		{
			decision->change_index = i;
			decision->payer = account->changes[i].target;
			break;
		}
	}

	decision->in_detached = cache.ndetached > 0 && account->nchanges > 0;
}

/*
 * Decide the payer of a line of account_id for product_code starting at
 * `at`.  Fills *decision; the pointers in it are valid until the next call.
 * The frozen flags and effective instants of changes that do not decide
 * this answer may be provisional (ProductEffective): settlement uses them
 * only through tco_payer_decision_until.
 */
void
tco_payer_decide(int64 account_id, const char *product_code, TimestampTz at,
				 PayerDecision *decision)
{
	payer_decide(account_id, product_code, at, decision, false);
}

/*
 * The same decision (payer and change) holds for every instant from `at`
 * (the instant it was made for) up to, not including, the instant returned:
 * until a later change takes effect (the later changes' effective instants
 * are all after `at`).  Settlement prices a run of lines of one account and
 * product in period order with one decision per such span.  An account with
 * a change in a detached cycle gets no span: its answer may be an error
 * depending on the instant.
 */
TimestampTz
tco_payer_decision_until(const PayerDecision *decision, TimestampTz at)
{
	TimestampTz until = DT_NOEND;
	int			i;

	if (decision->in_detached)
		return at;
	for (i = decision->change_index + 1; i < decision->nchanges; i++)
		until = Min(until, decision->effective[i]);
	return until;
}

int64
tco_effective_payer(int64 account_id, const char *product_code, TimestampTz at)
{
	PayerDecision decision;

	tco_payer_decide(account_id, product_code, at, &decision);
	return decision.payer;
}

PG_FUNCTION_INFO_V1(tco_trusteeship_effective_payer);

Datum
tco_trusteeship_effective_payer(PG_FUNCTION_ARGS)
{
	int64		account_id = PG_GETARG_INT64(0);
	text	   *product = PG_GETARG_TEXT_PP(1);
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(2);
	char		buf[PRODUCT_CODE_LEN];
	char	   *code = buf;
	int			len = VARSIZE_ANY_EXHDR(product);

	/* the hot path: no allocation for codes that fit */
	if (len >= PRODUCT_CODE_LEN)
		code = text_to_cstring(product);
	else
	{
		memcpy(buf, VARDATA_ANY(product), len);
		buf[len] = '\0';
	}
	PG_RETURN_INT64(tco_effective_payer(account_id, code, at));
}

static const char *
change_kind_name(PayerChangeKind kind)
{
	switch (kind)
	{
		case PAYER_CHANGE_ESTABLISH:
			return "establish";
		case PAYER_CHANGE_MOVE:
			return "move";
		case PAYER_CHANGE_END:
			return "end";
	}
	return "unknown";
}

static void
append_json_timestamptz(StringInfo buf, TimestampTz t)
{
	char		tbuf[MAXDATELEN + 1];

	appendStringInfoChar(buf, '"');
	appendStringInfoString(buf, JsonEncodeDateTime(tbuf, TimestampTzGetDatum(t), TIMESTAMPTZOID, NULL));
	appendStringInfoChar(buf, '"');
}

static void
append_json_change(StringInfo buf, const PayerDecision *d, int i)
{
	const PayerChange *c = &d->account[i];

	appendStringInfo(buf, "{\"trusteeship_id\": " INT64_FORMAT ", \"kind\": \"%s\", \"at\": ",
					 c->trusteeship_id, change_kind_name(c->kind));
	append_json_timestamptz(buf, c->at);
	appendStringInfo(buf, ", \"target\": " INT64_FORMAT ", \"frozen\": %s, \"effective_at\": ",
					 c->target, d->frozen[i] ? "true" : "false");
	append_json_timestamptz(buf, d->effective[i]);
	appendStringInfo(buf, ", \"rule\": \"%s\"}",
					 d->frozen[i] ? "frozen_product" : "granularity_boundary");
}

PG_FUNCTION_INFO_V1(tco_explain_payer);

/*
 * jsonb saying why: the change that applies (or none), the rule that set its
 * effective instant, and the changes made but not yet effective at `at`.
 */
Datum
tco_explain_payer(PG_FUNCTION_ARGS)
{
	int64		account_id = PG_GETARG_INT64(0);
	char	   *product_code = text_to_cstring(PG_GETARG_TEXT_PP(1));
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(2);
	PayerDecision d;
	StringInfoData buf;
	int			i;
	bool		first = true;

	payer_decide(account_id, product_code, at, &d, true);

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"account_id\": " INT64_FORMAT ", \"product_code\": ", account_id);
	escape_json(&buf, product_code);
	appendStringInfoString(&buf, ", \"at\": ");
	append_json_timestamptz(&buf, at);
	appendStringInfo(&buf, ", \"payer\": " INT64_FORMAT ", \"granularity\": \"%s\", \"billing_timezone\": ",
					 d.payer, tco_granularity_name(d.granularity));
	escape_json(&buf, tco_billing_tz_name());
	if (d.change_index < 0)
	{
		appendStringInfo(&buf, ", \"rule\": \"no_change\", \"reason\": ");
		escape_json(&buf, d.nchanges == 0
					? "the account has no trusteeship change: it pays for itself"
					: "no trusteeship change is effective yet for this product at this instant: the account pays for itself");
		appendStringInfoString(&buf, ", \"change\": null");
	}
	else
	{
		const PayerChange *c = &d.account[d.change_index];
		char	   *reason;

		if (d.frozen[d.change_index])
			reason = psprintf("the product had an unpaid bill issued before the %s at the change's instant, so the payer switches at the start of the next cycle",
							  change_kind_name(c->kind));
		else
			reason = psprintf("the %s takes effect at the first %s boundary at or after its instant",
							  change_kind_name(c->kind), tco_granularity_name(d.granularity));
		appendStringInfo(&buf, ", \"rule\": \"%s\", \"reason\": ",
						 d.frozen[d.change_index] ? "frozen_product" : "granularity_boundary");
		escape_json(&buf, reason);
		appendStringInfoString(&buf, ", \"change\": ");
		append_json_change(&buf, &d, d.change_index);
	}
	appendStringInfoString(&buf, ", \"not_yet_effective\": [");
	for (i = 0; i < d.nchanges; i++)
	{
		if (d.effective[i] > at && d.account[i].at <= at)
		{
			if (!first)
				appendStringInfoString(&buf, ", ");
			append_json_change(&buf, &d, i);
			first = false;
		}
	}
	appendStringInfoString(&buf, "]}");

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
