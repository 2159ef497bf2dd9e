/*
 * src/settle.h
 *
 * Settlement of a billing cycle, tco.settle_cycle (DESIGN section 5; the
 * rules, the order and the invariants are in the head comment of
 * settle.c), split into files by concept around this header:
 *
 *   settle.c          the driver: SQL entry points, the run and its phases,
 *                     its queries (prepared plans), consumer accounts
 *   settle_read.c     the cycle's lines read once and put in settlement
 *                     order: in memory within work_mem, else sorted runs
 *                     spilled to temporary files and merged
 *   settle_price.c    pricing one line: payer, contract discount (R8),
 *                     statement-line sums, its per-line record
 *   settle_benefit.c  benefits (R9): resource packs, savings plans,
 *                     coupons, vouchers with pool vouchers, stored-value
 *                     cards, and what sharing makes usable
 *   settle_write.c    statements, packs (per-line records) and benefit
 *                     balances: bulk writes (bulk.c) and 1.0-mode writes
 */
#ifndef TCO_SETTLE_H
#define TCO_SETTLE_H

#include "postgres.h"

#include "executor/spi.h"
#include "portability/instr_time.h"
#include "utils/hsearch.h"

#include "bulk.h"
#include "payer.h"
#include "share.h"
#include "tco.h"

#ifndef HAVE_INT128
#error "tco needs a 128-bit integer type for exact discount arithmetic"
#endif

#define MICRO				INT64CONST(1000000)
/* Products of the commitment fees settlement bills (src/sql/41_late.sql) */
#define COMMITMENT_PRODUCT_PREFIX "tco:"
#define FETCH_BATCH			10000
/*
 * A pack row stays under the table's toast_tuple_target (8160): neither
 * compressed nor moved out of line (pglz compression of packs was a quarter
 * of the settlement time).  Bytes a line and a use add to a pack with one
 * element per line in every array (1.1 to 1.3); the compact packs of 1.4
 * (settle_write.c) are cut at the same lines, so that they hold the same
 * lines and uses, with the same ids, in either form.
 */
#define PACK_LINE_BYTES		46
#define PACK_USE_BYTES		24
#define PACK_MAX_BYTES		7500

/*
 * Benefit kinds (settlement order: packs, plans, coupons, vouchers with pool
 * vouchers, cards).  Pool vouchers are a kind of their own here because they
 * are reached only through shares, never through their owner.
 */
#define BENEFIT_COUPON		0
#define BENEFIT_VOUCHER		1
#define BENEFIT_CARD		2
#define BENEFIT_PACK		3
#define BENEFIT_PLAN		4
#define BENEFIT_POOL_VOUCHER 5
#define BENEFIT_KINDS		6

#define OWNER_ACCOUNT		0
#define OWNER_ENTITY		1

typedef struct AccountInfo
{
	int64		account_id;		/* hash key */
	int64		entity_id;		/* 0: none */
	bool		verified;
	int64		org_id;			/* 0: not a member */
	int64		admin_account_id;	/* admin of its organization, 0: none */
} AccountInfo;

typedef struct DiscountRow
{
	int64		discount_id;
	bool		all_products;
	char		product_code[PRODUCT_CODE_LEN];
	int64		rate_micro;
	TimestampTz valid_from;
	TimestampTz valid_to;		/* DT_NOEND when open-ended */
} DiscountRow;

typedef struct DiscountOwnerKey
{
	int64		kind;
	int64		id;
} DiscountOwnerKey;

typedef struct DiscountOwner
{
	DiscountOwnerKey key;
	int			n;
	int			cap;
	DiscountRow *rows;
} DiscountOwner;

typedef struct Benefit
{
	int64		benefit_id;
	int			kind;			/* BENEFIT_* */
	bool		any_product;
	char		product_code[PRODUCT_CODE_LEN];
	int64		balance;		/* micro-units, kept current during the run;
								 * a savings plan's is its hourly commitment */
	int64		used;			/* micro-units used by this run (not for plans) */
	TimestampTz valid_from;
	TimestampTz valid_to;
} Benefit;

/* An owner's benefits: for each kind a run of the sorted benefit array. */
typedef struct BenefitOwner
{
	int64		owner_account_id;	/* hash key */
	int			first[BENEFIT_KINDS];
	int			count[BENEFIT_KINDS];
} BenefitOwner;

/* benefit_id -> index in SettleRun.benefits */
typedef struct BenefitIndex
{
	int64		benefit_id;		/* hash key */
	int			index;
} BenefitIndex;

/* What a savings plan has paid in one billing-zone hour. */
typedef struct PlanHourKey
{
	int64		benefit_index;
	TimestampTz hour;
} PlanHourKey;

typedef struct PlanHour
{
	PlanHourKey key;
	int64		used;
} PlanHour;

typedef struct PayerStatement
{
	int64		payer_account_id;	/* hash key */
	int64		statement_id;
	bool		is_new;			/* to be inserted by settle_write_statements */
	bool		used;			/* has lines of this run */
	int64		totals[4];		/* of a new one: list, discount, benefit, due (micro-units) */
	int64		org_id;			/* of a new one, 0: none */
} PayerStatement;

typedef struct StatementLineKey
{
	int64		payer_account_id;
	int64		account_id;
	char		product_code[PRODUCT_CODE_LEN];
} StatementLineKey;

typedef struct StatementLineSum
{
	StatementLineKey key;
	int64		statement_id;
	struct PayerStatement *statement;	/* its entry in SettleRun.payers */
	int64		list;
	int64		discount;
	int64		benefit;
	int64		due;
	int32		lines;
} StatementLineSum;

/*
 * Per-line records of one batch, written with one INSERT: packs (runs of
 * lines of one statement, consuming account and product), the per-line
 * arrays they slice, and the benefit uses in use order.
 */
typedef struct LineBatch
{
	/* packs */
	int			npacks;
	Datum	   *pack_statement;
	Datum	   *pack_payer;
	Datum	   *pack_account;
	Datum	   *pack_line_lo;	/* int4, 1-based index of its first line */
	Datum	   *pack_use_lo;	/* int4, 1-based index of its first use */
	Datum	   *pack_cycle;		/* the charge cycle of its lines */
	char		(*pack_code)[PRODUCT_CODE_LEN];
	/* lines */
	int			n;
	Datum	   *line_id;
	Datum	   *list;
	Datum	   *rate;			/* int4 millionths */
	Datum	   *source;			/* int2 code */
	Datum	   *discount_id;	/* 0: none */
	Datum	   *discount;
	Datum	   *benefit;
	/* benefit uses */
	int			nuse;
	int			use_cap;
	Datum	   *use_benefit;
	Datum	   *use_line;
	Datum	   *use_amount;
} LineBatch;

/* A bill line of the cycle as read, before it is put in settlement order. */
typedef struct LineRec
{
	int64		account_id;
	int32		product;		/* rank of the product code in collation order */
	int32		zero;			/* always 0: no uninitialized padding, as
								 * records are written to temporary files */
	TimestampTz period_start;
	int64		line_id;
	int64		list;
} LineRec;

typedef struct ProductEntry
{
	char		code[PRODUCT_CODE_LEN]; /* hash key */
	int32		rank;
} ProductEntry;

/* Phases of a run, timed for the DEBUG1 report at its end. */
typedef enum SettlePhase
{
	PHASE_SETUP,				/* statements, products, discounts, benefits */
	PHASE_READ,					/* the cycle's bill lines */
	PHASE_SORT,
	PHASE_PRICE,				/* payer, discount, benefits per line */
	PHASE_PACKS,				/* writing tco.settled_pack */
	PHASE_STATEMENTS,			/* statements, statement lines, balances */
	NUM_PHASES
} SettlePhase;

#define OWNER_CACHE_SIZE	4

/* The last few lookups of owners by (kind, id), NULL results included. */
typedef struct OwnerCache
{
	struct
	{
		int			kind;		/* -1: empty slot */
		int64		id;
		void	   *owner;
	}			slot[OWNER_CACHE_SIZE];
	int			next;			/* slot to replace next */
} OwnerCache;

static inline void
owner_cache_reset(OwnerCache *c)
{
	int			i;

	for (i = 0; i < OWNER_CACHE_SIZE; i++)
		c->slot[i].kind = -1;
	c->next = 0;
}

static inline bool
owner_cache_get(const OwnerCache *c, int kind, int64 id, void **owner)
{
	int			i;

	for (i = 0; i < OWNER_CACHE_SIZE; i++)
		if (c->slot[i].kind == kind && c->slot[i].id == id)
		{
			*owner = c->slot[i].owner;
			return true;
		}
	return false;
}

static inline void
owner_cache_put(OwnerCache *c, int kind, int64 id, void *owner)
{
	int			i = c->next;

	c->next = (i + 1) % OWNER_CACHE_SIZE;
	c->slot[i].kind = kind;
	c->slot[i].id = id;
	c->slot[i].owner = owner;
}

typedef struct SettleRun
{
	BillingCycle cycle;
	char		cycle_text[16];
	bool		has_org;
	int64		org_id;
	TimestampTz legacy_cutover;
	MemoryContext run_ctx;
	HTAB	   *accounts;
	HTAB	   *discounts;
	HTAB	   *benefit_owners;
	Benefit    *benefits;
	int			nbenefits;
	HTAB	   *benefit_index;
	ShareMap   *shares;
	HTAB	   *plan_hours;
	int			nkind[BENEFIT_KINDS];	/* benefits loaded per kind */
	int64		grants_account; /* the consumer whose shares are cached ... */
	bool		grants_valid;
	const ShareGrant *grants;	/* ... and its shares (lines come by consumer) */
	int			ngrants;
	int		   *candidates;		/* scratch: benefits usable by one line */
	int			ncandidates_cap;
	pg_tz	   *tz;
	HTAB	   *payers;
	Oid			statement_seq;
	Oid			pack_seq;
	BulkWriter *packs;			/* open from the first flush to the end */
	bool		v10;			/* 1.0 mode: the schema of version 1.0 */
	bool		late_schema;	/* 1.4 on: late lines, corrections, commitment fees */
	bool		exclude_late;	/* the cycle has queued late lines: not read with its own */
	BillingCycle line_cycle;	/* charge cycle of the line being priced */
	TimestampTz start;			/* the cycle's bounds */
	TimestampTz end;
	TimestampTz load_start;		/* earliest period start priced: a late line's, else start */
	/* late lines billed by the run, with their statements (marked at the end) */
	Datum	   *late_ids;
	Datum	   *late_statements;
	int			nlate;
	int			late_cap;
	uint64		nlate_read;		/* late lines read (counted by check_all_settled) */
	/* 1.0 mode: benefit uses of the run, written after the statements */
	Datum	   *v10_use_benefit;
	Datum	   *v10_use_line;
	Datum	   *v10_use_statement;
	Datum	   *v10_use_amount;
	Size		v10_nuse;
	Size		v10_use_cap;
	HTAB	   *statement_lines;
	StatementLineSum *last_sum; /* of the previous line: lines come grouped */
	AccountInfo *last_account;	/* last settle_lookup_account */
	AccountInfo *prev_account;	/* the one before */
	/*
	 * Lines come grouped by consumer, so each line asks for the same few
	 * owners as the line before (its own account, its admin, its payer):
	 * the last lookups of discount owners and benefit owners are kept in
	 * small caches that spare a hash lookup per line and owner.
	 */
	OwnerCache	discount_cache; /* of DiscountOwner, by (kind, id) */
	OwnerCache	benefit_cache;	/* of BenefitOwner, by (0, account id) */
	struct PayerStatement *last_payer;	/* last settle_statement_for_payer */
	/*
	 * The payer of the last line's account and product over the span of
	 * instants where it cannot change (tco_payer_decision_until): the next
	 * lines of the run, in period order, mostly fall in it.
	 */
	struct
	{
		TimestampTz from;		/* of prev_account_id and prev_product_code */
		TimestampTz until;
		int64		payer;
		bool		has_change;
		TimestampTz change_at;	/* the trusteeship change that applies */
	}			payer_span;
	/*
	 * The account and product of the previous line priced: the next line
	 * mostly has the same, and one comparison then stands for those of the
	 * payer span, the statement line and the pack.
	 */
	bool		prev_valid;
	int64		prev_account_id;
	char		prev_product_code[PRODUCT_CODE_LEN];
	bool		prev_commitment;	/* a commitment's fee (no packs, plans) */
	/*
	 * What the previous line's pricing found that holds for the next lines
	 * of the same account and product within the same payer span
	 * (settle_line): its consumer, its contract discount while no discount
	 * row of the owners consulted starts or ends ([discount_from,
	 * discount_until)), and whether no benefit it could reach had a balance
	 * left (balances only go down while lines are priced; a negative
	 * correction, which gives some back, clears it).
	 */
	struct
	{
		bool		valid;
		struct AccountInfo *consumer;
		const struct DiscountRow *discount;
		int16		source;
		TimestampTz discount_from;
		TimestampTz discount_until;
		bool		benefits_spent;
	}			ctx;
	bool		benefit_left;	/* set by settle_use_benefits: a candidate has a balance */
	/* the result of the run (settle_write_statements), when result_known */
	bool		had_statements; /* the cycle had statements before the run */
	bool		result_known;
	int64		result_statements;
	int64		result_lines;
	int64		result_list_cents;
	int64		result_due_cents;
	LineBatch	batch;
	uint64		nlines;
	uint64		nskipped;		/* lines found already settled (skip mode) */
	uint64		nreceived;		/* lines the first pass read: all of the scope */
	/* read path */
	int			nproducts;
	char	  (*products)[PRODUCT_CODE_LEN];	/* in collation order */
	int		   *product_len;	/* strlen of each */
	HTAB	   *product_ranks;
	int64	   *settled_ids;	/* skip mode: settled lines of the current group ... */
	int			nsettled_ids;
	int64		group_account;	/* ... of this account ... */
	int32		group_product;	/* ... and product (-1: none yet) */
	/* where the time went, reported at DEBUG1 */
	instr_time	phase_mark;
	double		phase_ms[NUM_PHASES];
	bool		radix_sort;		/* order_lines used its radix sort */
	int			spilled_runs;	/* sorted runs written to temporary files */
	int64		spilled_kb;		/* and their size */
	int			intermediate_merges;	/* merges of runs into one before the last */
	int			read_workers;	/* parallel workers that read with this backend */
} SettleRun;

/* Charge the time since the last mark to phase p. */
static inline void
phase_done(SettleRun *run, SettlePhase p)
{
	instr_time	now;

	INSTR_TIME_SET_CURRENT(now);
	run->phase_ms[p] += INSTR_TIME_GET_MILLISEC(now) - INSTR_TIME_GET_MILLISEC(run->phase_mark);
	run->phase_mark = now;
}

/*
 * Plans kept for the life of the backend.  Parameters are base types only
 * (cycles go as text), so a plan survives the extension being dropped and
 * created again: the plan cache re-analyzes the query text.  The plan
 * cache may switch a query to a generic plan after five calls; the read of
 * the cycle's lines is kept on custom plans (PlanDef.cursor_options).
 */
typedef enum SettlePlan
{
	PLAN_ORG_EXISTS,
	PLAN_SETTLED,
	PLAN_PARTLY_SETTLED,
	PLAN_PRODUCTS,
	PLAN_LINES,
	PLAN_LINES_ORG,
	PLAN_SETTLED_IDS,
	PLAN_ACCOUNT,
	PLAN_ACCOUNTS,
	PLAN_DISCOUNTS,
	PLAN_BENEFITS,
	PLAN_BENEFITS_ORG,
	PLAN_PLAN_USES,
	PLAN_PLAN_USES_LATE,
	PLAN_SEQUENCES,
	PLAN_LOCK_ACCOUNTS,
	PLAN_LOCK_ORGS,
	PLAN_STATEMENTS_OF_CYCLE,
	PLAN_INSERT_STATEMENT_LINES,
	PLAN_STATEMENT_TOTALS,
	PLAN_BENEFIT_BALANCES,
	PLAN_MARK_SETTLED,
	PLAN_RESULT,
	/* 1.4 on: late lines, corrections, commitment fees (src/sql/41_late.sql) */
	PLAN_BILL_COMMITMENTS,
	PLAN_LATE_EXISTS,
	PLAN_LINES_NOLATE,
	PLAN_LINES_ORG_NOLATE,
	PLAN_LATE_BOUNDS,
	PLAN_LATE_BOUNDS_ORG,
	PLAN_LATE_LINES,
	PLAN_LATE_LINES_ORG,
	PLAN_MARK_LATE,
	PLAN_CORRECTS,
	PLAN_CORRECTION_HISTORY,
	PLAN_RETURN_BENEFIT,
	/* 1.0 mode: variants of the queries above for the schema of 1.0 */
	PLAN_SETTLED_IDS_V10,
	PLAN_BENEFITS_V10,
	PLAN_BENEFITS_ORG_V10,
	PLAN_SEQUENCES_V10,
	PLAN_INSERT_LINES_V10,
	PLAN_INSERT_USES_V10,
	NUM_PLANS
} SettlePlan;

/* settle.c: the driver, its queries, accounts */
extern SPIPlanPtr settle_get_plan(SettlePlan which);
extern int	settle_exec_plan(SettlePlan which, Datum *values, const char *nulls, bool read_only, long count);
extern int64 settle_get_int8(HeapTuple tuple, TupleDesc desc, int col, bool *isnull);
extern TimestampTz settle_get_tstz(HeapTuple tuple, TupleDesc desc, int col, bool *isnull);
extern bool settle_get_bool(HeapTuple tuple, TupleDesc desc, int col, bool *isnull);
extern Datum settle_get_text(HeapTuple tuple, TupleDesc desc, int col, bool *isnull);
extern void settle_add_money(int64 *sum, int64 amount);
extern void settle_text_to_code(Datum d, char *buf);
extern AccountInfo *settle_lookup_account(SettleRun *run, int64 account_id);
extern void settle_preload_accounts(SettleRun *run, const int64 *ids, Size n);
extern void settle_lines(SettleRun *run, const LineRec *recs, Size n, bool skip_settled);

/* settle_read.c: reading the cycle's lines once, in settlement order */
extern void settle_load_products(SettleRun *run);
extern void settle_load_settled_ids(SettleRun *run, int64 account_id, const char *product_code);
extern bool settle_is_settled_id(SettleRun *run, int64 line_id);
extern void settle_read_lines(SettleRun *run, TimestampTz start, TimestampTz end, bool skip_settled);

/* settle_price.c: pricing one line */
extern void settle_load_discounts(SettleRun *run, TimestampTz start, TimestampTz end);
extern void settle_line(SettleRun *run, int64 line_id, int64 account_id, const char *product_code,
						TimestampTz at, int64 list);

/* settle_late.c: late lines (src/sql/41_late.sql) */
extern void settle_late_bounds(SettleRun *run);
extern void settle_late_lines(SettleRun *run);
extern void settle_mark_late_lines(SettleRun *run);

/* settle_benefit.c: benefits and sharing */
extern void settle_load_benefits(SettleRun *run, TimestampTz start, TimestampTz end);
extern void settle_record_use(SettleRun *run, int64 benefit_id, int64 line_id, int64 amount);
extern void settle_use_benefits(SettleRun *run, int64 owner_id, int owner_kind, int64 consumer_id, int shared_kind,
								const char *product_code, TimestampTz at, int64 line_id, int64 statement_id,
								int64 *remaining, int64 *benefit_total);

/* settle_write.c: statements, packs, bulk and 1.0-mode writes */
extern int64 settle_statement_for_payer(SettleRun *run, int64 payer);
extern void settle_load_statements(SettleRun *run);
extern void settle_pack_for_line(SettleRun *run, bool same_product, int64 statement_id, int64 payer, int64 account_id,
								 const char *product_code);
extern Datum settle_int8_array(Datum *elems, bool *nulls, int n);
extern void settle_batch_start(SettleRun *run);
extern void settle_batch_flush(SettleRun *run);
extern void settle_write_statements(SettleRun *run);
extern void settle_write_uses_v10(SettleRun *run);

#endif							/* TCO_SETTLE_H */
