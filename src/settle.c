/*
 * src/settle.c
 *
 * Settlement of a billing cycle (DESIGN section 5; rules R7-R9, R14):
 * tco.settle_cycle(cycle, org_id).
 *
 * One pass over the cycle's bill lines in the fixed order (consumer, product,
 * period start, line id): read unsorted straight from the executor into
 * compact records and sorted in memory, within work_mem (settle_run).  For each
 * line: the payer (R6, payer.c), the contract discount (R8), then the
 * resource packs and savings plans owned by or shared with the consumer, the
 * consumer's coupons, the payer's vouchers together with pool vouchers
 * shared with the consumer, and the payer's stored-value cards (R9; sharing
 * is resolved by share.c), leaving the due amount.  Money is int64 micro-units (bill lines have
 * 6 decimals): exact, with overflow checks.  Per line, the discount is
 * list * rate rounded half-up to a micro-unit; benefits pay exact micro-units
 * of what remains; due is the rest, so list = discount + benefit + due holds
 * exactly.  Statement lines are exact sums; statement totals are those sums
 * rounded half-up to 2 decimals (in SQL, numeric round(), on non-negative
 * values), each total independently.
 *
 * What stays in memory is bounded by work_mem (the sort records) and by the
 * number of accounts, products, payers, discounts and benefits, not by the
 * number of lines: the per-line record (tco.settled_pack, one row per run of
 * lines of one statement, account and product, read through the views
 * tco.settled_line and tco.benefit_use) is written once per batch of lines
 * with one INSERT ... SELECT, and the batch memory is reset after it.
 * Benefit balances are kept in memory during the run and written once at the
 * end; a statement gets its id when its payer is first seen and all new
 * statements are inserted, with their totals, at the end.
 *
 * Version 1.0 (README, "Upgrades"): the library serves every installed
 * version of the extension, and 1.0's schema has no tco.settled_pack, no
 * sharing (tco.benefit_share) and only coupons, vouchers and stored-value
 * cards; its per-line record is the tables tco.settled_line and
 * tco.benefit_use (upgrade/tco--1.0.sql).  tco_settle_cycle checks once per
 * call whether tco.settled_pack exists; without it the run is in 1.0 mode:
 * the queries that touch what 1.0 lacks have 1.0 variants (the *_V10 plans)
 * or are skipped, each batch of lines is written as rows of tco.settled_line
 * with one INSERT ... SELECT FROM unnest(...), and the benefit uses, whose
 * foreign key references the statement, are kept until the statements are
 * written and then inserted into tco.benefit_use.  Pricing is the same.
 *
 * Concurrency: the settlement lock of the cycle (src/guard.c: an object
 * lock only tco's code can take, held to the end of the transaction)
 * serializes settlements of the same cycle; bill line triggers take the
 * same lock shared, so no line can slip into a cycle while it is being
 * settled.  After the lock, a cycle
 * already settled for the scope returns the existing totals and writes
 * nothing.  An error or a query cancel aborts the transaction: nothing is
 * half-written.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "common/int.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "nodes/params.h"
#include "portability/instr_time.h"
#include "tcop/dest.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "mb/pg_wchar.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplesort.h"
#include "utils/typcache.h"

#include "bulk.h"
#include "payer.h"
#include "share.h"
#include "tco.h"

#ifndef HAVE_INT128
#error "tco needs a 128-bit integer type for exact discount arithmetic"
#endif

#define MICRO				INT64CONST(1000000)
#define PRODUCT_CODE_LEN	64	/* tco.product's CHECK allows 63 characters */
#define FETCH_BATCH			10000
/*
 * A pack row stays under the table's toast_tuple_target (8160): neither
 * compressed nor moved out of line (pglz compression of packs was a quarter
 * of the settlement time).  Bytes a line and a use add to a pack.
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

/* GUC tco.progress_every: a NOTICE every N lines settled (0: none). */
static int	progress_every = 0;

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
	bool		is_new;			/* to be inserted by write_statements */
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

static const char *const phase_names[NUM_PHASES] = {
	"setup", "read", "sort", "price", "packs", "statements"
};

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

static void
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
	/* 1.0 mode: benefit uses of the run, written after the statements */
	Datum	   *v10_use_benefit;
	Datum	   *v10_use_line;
	Datum	   *v10_use_statement;
	Datum	   *v10_use_amount;
	Size		v10_nuse;
	Size		v10_use_cap;
	HTAB	   *statement_lines;
	StatementLineSum *last_sum; /* of the previous line: lines come grouped */
	AccountInfo *last_account;	/* last lookup_account */
	AccountInfo *prev_account;	/* the one before */
	/*
	 * Lines come grouped by consumer, so each line asks for the same few
	 * owners as the line before (its own account, its admin, its payer):
	 * the last lookups of discount owners and benefit owners are kept in
	 * small caches that spare a hash lookup per line and owner.
	 */
	OwnerCache	discount_cache; /* of DiscountOwner, by (kind, id) */
	OwnerCache	benefit_cache;	/* of BenefitOwner, by (0, account id) */
	struct PayerStatement *last_payer;	/* last statement_for_payer */
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
	bool		radix_sort;		/* in memory: order_lines used its radix sort */
	const char *sort_method;	/* spilled: the tuplesort's method, else NULL */
	int64		sort_space_kb;	/* and the space it used */
	bool		sort_on_disk;
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
	PLAN_SEQUENCES,
	PLAN_LOCK_ACCOUNTS,
	PLAN_LOCK_ORGS,
	PLAN_STATEMENTS_OF_CYCLE,
	PLAN_INSERT_STATEMENT_LINES,
	PLAN_STATEMENT_TOTALS,
	PLAN_BENEFIT_BALANCES,
	PLAN_MARK_SETTLED,
	PLAN_RESULT,
	/* 1.0 mode: variants of the queries above for the schema of 1.0 */
	PLAN_SETTLED_IDS_V10,
	PLAN_BENEFITS_V10,
	PLAN_BENEFITS_ORG_V10,
	PLAN_SEQUENCES_V10,
	PLAN_INSERT_LINES_V10,
	PLAN_INSERT_USES_V10,
	NUM_PLANS
} SettlePlan;

/*
 * The cycle's lines, unsorted (settle_run puts them in order: an SQL sort on
 * (account_id, product_code, period_start, line_id) cost three times the
 * whole aggregate of the benchmark).  A plain range on period_start, so that
 * it works on a table partitioned by period_start as well (the planner
 * prunes to the cycle's partition) and needs no particular index: it is
 * planned for each run with the run's bounds (CURSOR_OPT_CUSTOM_PLAN, see
 * get_plan), so a third of the table in the cycle is a sequential scan and a
 * small cycle of a large table an index scan, never a generic plan chosen
 * without knowing the cycle.
 */
#define LINES_SELECT \
	"SELECT line_id, account_id, product_code, period_start, list_amount " \
	"FROM tco.bill_line b WHERE period_start >= $1 AND period_start < $2"
#define LINES_IN_ORG " AND account_id IN (SELECT m.account_id FROM tco.member m WHERE m.org_id = $3)"
#define BENEFITS_SELECT \
	"SELECT benefit_id, CASE kind WHEN 'coupon' THEN 0 " \
	"WHEN 'voucher' THEN CASE WHEN pool_org_id IS NULL THEN 1 ELSE 5 END " \
	"WHEN 'stored_value_card' THEN 2 WHEN 'resource_pack' THEN 3 ELSE 4 END, " \
	"owner_account_id, product_code, (balance * 1000000)::int8, valid_from, valid_to " \
	"FROM tco.benefit WHERE balance > 0 "
#define BENEFITS_ORDER " ORDER BY owner_account_id, 2, valid_to, benefit_id FOR NO KEY UPDATE"
/* 1.0: coupons, vouchers and stored-value cards only, no pool vouchers (no pool_org_id) */
#define BENEFITS_SELECT_V10 \
	"SELECT benefit_id, CASE kind WHEN 'coupon' THEN 0 WHEN 'voucher' THEN 1 " \
	"WHEN 'stored_value_card' THEN 2 END, " \
	"owner_account_id, product_code, (balance * 1000000)::int8, valid_from, valid_to " \
	"FROM tco.benefit WHERE balance > 0 "

typedef struct PlanDef
{
	const char *sql;
	int			nargs;
	Oid			argtypes[20];
	int			cursor_options; /* CURSOR_OPT_CUSTOM_PLAN: planned for each call's values */
} PlanDef;

static const PlanDef plan_defs[NUM_PLANS] = {
	[PLAN_ORG_EXISTS] = {"SELECT 1 FROM tco.organization WHERE org_id = $1", 1, {INT8OID}},
	[PLAN_SETTLED] = {"SELECT 1 FROM tco.settled_cycle WHERE cycle OPERATOR(tco.=) $1::tco.billing_cycle "
		"AND (org_id IS NULL OR org_id = $2)", 2, {TEXTOID, INT8OID}},
	[PLAN_PARTLY_SETTLED] = {"SELECT 1 FROM tco.settled_cycle WHERE cycle OPERATOR(tco.=) $1::tco.billing_cycle LIMIT 1",
	1, {TEXTOID}},
	[PLAN_PRODUCTS] = {"SELECT product_code FROM tco.product ORDER BY product_code", 0, {0}},
	[PLAN_LINES] = {LINES_SELECT, 2, {TIMESTAMPTZOID, TIMESTAMPTZOID}, CURSOR_OPT_CUSTOM_PLAN},
	[PLAN_LINES_ORG] = {LINES_SELECT LINES_IN_ORG, 3, {TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID},
	CURSOR_OPT_CUSTOM_PLAN},
	[PLAN_SETTLED_IDS] = {"SELECT l FROM tco.settled_pack p, unnest(p.line_ids) l "
		"WHERE p.account_id = $1 AND p.product_code = $2 AND p.cycle OPERATOR(tco.=) $3::tco.billing_cycle "
		"ORDER BY l", 3, {INT8OID, TEXTOID, TEXTOID}},
	[PLAN_ACCOUNT] = {"SELECT a.entity_id, coalesce(e.verified, false), m.org_id, o.admin_account_id "
		"FROM tco.account a LEFT JOIN tco.entity e ON e.entity_id = a.entity_id "
		"LEFT JOIN tco.member m ON m.account_id = a.account_id "
		"LEFT JOIN tco.organization o ON o.org_id = m.org_id WHERE a.account_id = $1", 1, {INT8OID}},
	[PLAN_ACCOUNTS] = {"SELECT a.entity_id, coalesce(e.verified, false), m.org_id, o.admin_account_id, a.account_id "
		"FROM tco.account a LEFT JOIN tco.entity e ON e.entity_id = a.entity_id "
		"LEFT JOIN tco.member m ON m.account_id = a.account_id "
		"LEFT JOIN tco.organization o ON o.org_id = m.org_id WHERE a.account_id = ANY ($1)", 1, {INT8ARRAYOID}},
	[PLAN_DISCOUNTS] = {"SELECT discount_id, CASE WHEN account_id IS NOT NULL THEN 0 ELSE 1 END, "
		"coalesce(account_id, entity_id), product_code, (rate * 1000000)::int8, valid_from, "
		"coalesce(valid_to, 'infinity') FROM tco.contract_discount "
		"WHERE valid_from < $2 AND (valid_to IS NULL OR valid_to > $1)",
	2, {TIMESTAMPTZOID, TIMESTAMPTZOID}},
	[PLAN_BENEFITS] = {BENEFITS_SELECT "AND valid_from < $2 AND valid_to > $1" BENEFITS_ORDER, 3,
	{TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID}},
	[PLAN_BENEFITS_ORG] = {BENEFITS_SELECT "AND valid_from < $2 AND valid_to > $1 "
		"AND (owner_account_id IN (SELECT m.account_id FROM tco.member m WHERE m.org_id = $3) "
		"OR benefit_id IN (SELECT s.benefit_id FROM tco.benefit_share s WHERE s.org_id = $3))"
	BENEFITS_ORDER, 3, {TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID}},
	/* what savings plans already paid in this cycle (an earlier, narrower settlement) */
	[PLAN_PLAN_USES] = {"SELECT u.benefit_id, b.period_start, u.a "
		"FROM tco.settled_pack sp CROSS JOIN LATERAL unnest(sp.use_benefit_ids, sp.use_line_ids, sp.use_amounts) "
		"AS u(benefit_id, line_id, a) JOIN tco.benefit p ON p.benefit_id = u.benefit_id "
		"JOIN tco.bill_line b ON b.line_id = u.line_id "
		"WHERE sp.statement_id = ANY ($3::int8[]) "
		"AND p.kind = 'savings_plan' AND b.period_start >= $1 AND b.period_start < $2",
	3, {TIMESTAMPTZOID, TIMESTAMPTZOID, INT8ARRAYOID}},
	[PLAN_SEQUENCES] = {"SELECT pg_get_serial_sequence('tco.statement', 'statement_id')::regclass::oid, "
		"pg_get_serial_sequence('tco.settled_pack', 'pack_id')::regclass::oid",
	0, {0}},
	/*
	 * The references of the statements and statement lines written in bulk
	 * (bulk.c): as their foreign keys would, check that the rows exist and
	 * lock them against deletion until commit, in one query per table.
	 */
	[PLAN_LOCK_ACCOUNTS] = {"SELECT account_id FROM tco.account WHERE account_id = ANY ($1) FOR KEY SHARE",
	1, {INT8ARRAYOID}},
	[PLAN_LOCK_ORGS] = {"SELECT org_id FROM tco.organization WHERE org_id = ANY ($1) FOR KEY SHARE",
	1, {INT8ARRAYOID}},
	[PLAN_STATEMENTS_OF_CYCLE] = {"SELECT payer_account_id, statement_id FROM tco.statement "
		"WHERE cycle OPERATOR(tco.=) $1::tco.billing_cycle", 1, {TEXTOID}},
	[PLAN_INSERT_STATEMENT_LINES] = {"INSERT INTO tco.statement_line AS t (statement_id, account_id, product_code, "
		"list_amount, discount_amount, benefit_amount, due_amount, lines) "
		"SELECT s, a, p, li * 0.000001, di * 0.000001, be * 0.000001, du * 0.000001, n "
		"FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], "
		"$8::int4[]) AS u(s, a, p, li, di, be, du, n) "
		"ON CONFLICT (statement_id, account_id, product_code) DO UPDATE SET "
		"list_amount = t.list_amount + EXCLUDED.list_amount, "
		"discount_amount = t.discount_amount + EXCLUDED.discount_amount, "
		"benefit_amount = t.benefit_amount + EXCLUDED.benefit_amount, "
		"due_amount = t.due_amount + EXCLUDED.due_amount, lines = t.lines + EXCLUDED.lines",
	8, {INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID,
	INT8ARRAYOID, INT4ARRAYOID}},
	/* Rounding rule: each total is the exact sum of its lines rounded half-up. */
	[PLAN_STATEMENT_TOTALS] = {"UPDATE tco.statement st SET list_total = round(x.li, 2), "
		"discount_total = round(x.di, 2), benefit_total = round(x.be, 2), due_total = round(x.du, 2) "
		"FROM (SELECT statement_id, sum(list_amount) li, sum(discount_amount) di, "
		"sum(benefit_amount) be, sum(due_amount) du FROM tco.statement_line "
		"WHERE statement_id = ANY ($1::int8[]) GROUP BY statement_id) x "
		"WHERE st.statement_id = x.statement_id", 1, {INT8ARRAYOID}},
	[PLAN_BENEFIT_BALANCES] = {"UPDATE tco.benefit b SET balance = b.balance - u.a * 0.000001 "
		"FROM unnest($1::int8[], $2::int8[]) AS u(id, a) WHERE b.benefit_id = u.id",
	2, {INT8ARRAYOID, INT8ARRAYOID}},
	[PLAN_MARK_SETTLED] = {"INSERT INTO tco.settled_cycle (cycle, org_id) VALUES ($1::tco.billing_cycle, $2)",
	2, {TEXTOID, INT8OID}},
	[PLAN_RESULT] = {"SELECT count(*), coalesce(sum((SELECT sum(l.lines) FROM tco.statement_line l "
		"WHERE l.statement_id = s.statement_id)), 0)::int8, coalesce(sum(s.list_total), 0), "
		"coalesce(sum(s.due_total), 0) FROM tco.statement s "
		"WHERE s.cycle OPERATOR(tco.=) $1::tco.billing_cycle AND ($2::int8 IS NULL OR s.org_id = $2)",
	2, {TEXTOID, INT8OID}},
	/* 1.0 mode: one row per settled line in TABLE tco.settled_line */
	[PLAN_SETTLED_IDS_V10] = {"SELECT sl.line_id FROM tco.settled_line sl "
		"JOIN tco.bill_line b ON b.line_id = sl.line_id JOIN tco.statement s ON s.statement_id = sl.statement_id "
		"WHERE b.account_id = $1 AND b.product_code = $2 AND s.cycle OPERATOR(tco.=) $3::tco.billing_cycle "
		"ORDER BY 1", 3, {INT8OID, TEXTOID, TEXTOID}},
	[PLAN_BENEFITS_V10] = {BENEFITS_SELECT_V10 "AND valid_from < $2 AND valid_to > $1" BENEFITS_ORDER, 3,
	{TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID}},
	/* 1.0 has no sharing: the organization's members' own benefits */
	[PLAN_BENEFITS_ORG_V10] = {BENEFITS_SELECT_V10 "AND valid_from < $2 AND valid_to > $1 "
		"AND owner_account_id IN (SELECT m.account_id FROM tco.member m WHERE m.org_id = $3)"
	BENEFITS_ORDER, 3, {TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID}},
	[PLAN_SEQUENCES_V10] = {"SELECT pg_get_serial_sequence('tco.statement', 'statement_id')::regclass::oid",
	0, {0}},
	/* amounts in micro-units, rates in millionths, sources as in tco.settled_pack */
	[PLAN_INSERT_LINES_V10] = {"INSERT INTO tco.settled_line (line_id, statement_id, payer_account_id, "
		"list_amount, discount_rate, discount_source, discount_id, discount_amount, benefit_amount, due_amount) "
		"SELECT l, s, p, li * 0.000001, r * 0.000001, "
		"('{none,own,admin,manager,entity,own_new_trusteeship}'::text[])[src + 1], nullif(d, 0), "
		"di * 0.000001, be * 0.000001, (li - di - be) * 0.000001 "
		"FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int4[], $6::int2[], $7::int8[], "
		"$8::int8[], $9::int8[]) AS u(l, s, p, li, r, src, d, di, be)",
	9, {INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT4ARRAYOID, INT2ARRAYOID, INT8ARRAYOID,
	INT8ARRAYOID, INT8ARRAYOID}},
	[PLAN_INSERT_USES_V10] = {"INSERT INTO tco.benefit_use (benefit_id, line_id, statement_id, amount) "
		"SELECT b, l, s, a * 0.000001 FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[]) "
		"WITH ORDINALITY AS u(b, l, s, a, n) ORDER BY n",
	4, {INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID}},
};

static SPIPlanPtr plans[NUM_PLANS];

static Datum int8_array(Datum *elems, bool *nulls, int n);

void
tco_settle_init(void)
{
	DefineCustomIntVariable("tco.progress_every",
							"Report settlement progress with a NOTICE every this many bill lines.",
							"0 turns progress reports off.",
							&progress_every,
							0, 0, INT_MAX,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
}

static SPIPlanPtr
get_plan(SettlePlan which)
{
	if (plans[which] == NULL)
	{
		const PlanDef *def = &plan_defs[which];
		SPIPlanPtr	plan = SPI_prepare_cursor(def->sql, def->nargs, (Oid *) def->argtypes,
											  def->cursor_options);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for settlement query %d: %s",
				 (int) which, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		plans[which] = plan;
	}
	return plans[which];
}

static int
exec_plan(SettlePlan which, Datum *values, const char *nulls, bool read_only, long count)
{
	int			ret = SPI_execute_plan(get_plan(which), values, nulls, read_only, count);

	if (ret < 0)
		elog(ERROR, "settlement query %d failed: %s", (int) which, SPI_result_code_string(ret));
	return ret;
}

static void
column_type_error(TupleDesc desc, int col, const char *expected)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATATYPE_MISMATCH),
			 errmsg("settlement read column %d as %s, but it is %s", col, expected,
					format_type_be(SPI_gettypeid(desc, col))),
			 errhint("A column of a table of schema tco changed type, which tco does not support (see README, \"Limits\"): restore its original type.")));
}

/* An integer column (int2, int4 or int8) of an SPI result, as int64. */
static int64
get_int8(HeapTuple tuple, TupleDesc desc, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(tuple, desc, col, isnull);

	if (*isnull)
		return 0;
	switch (SPI_gettypeid(desc, col))
	{
		case INT8OID:
			return DatumGetInt64(d);
		case INT4OID:
			return DatumGetInt32(d);
		case INT2OID:
			return DatumGetInt16(d);
		default:
			column_type_error(desc, col, "an integer");
	}
	return 0;					/* keep compiler quiet */
}

static TimestampTz
get_tstz(HeapTuple tuple, TupleDesc desc, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(tuple, desc, col, isnull);

	if (SPI_gettypeid(desc, col) != TIMESTAMPTZOID)
		column_type_error(desc, col, "timestamp with time zone");
	return *isnull ? 0 : DatumGetTimestampTz(d);
}

static bool
get_bool(HeapTuple tuple, TupleDesc desc, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(tuple, desc, col, isnull);

	if (SPI_gettypeid(desc, col) != BOOLOID)
		column_type_error(desc, col, "boolean");
	return *isnull ? false : DatumGetBool(d);
}

/* A text column: its Datum (undefined when *isnull). */
static Datum
get_text(HeapTuple tuple, TupleDesc desc, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(tuple, desc, col, isnull);

	if (SPI_gettypeid(desc, col) != TEXTOID)
		column_type_error(desc, col, "text");
	return d;
}

static void
add_money(int64 *sum, int64 amount)
{
	if (pg_add_s64_overflow(*sum, amount, sum))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("settlement amount out of range"),
				 errdetail("A sum exceeds %lld in micro-units.", (long long) PG_INT64_MAX),
				 errhint("Check the list amounts of the cycle's bill lines.")));
}

static void
text_to_code(Datum d, char *buf)
{
	text	   *t = DatumGetTextPP(d);
	int			len = VARSIZE_ANY_EXHDR(t);

	if (len >= PRODUCT_CODE_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("product code \"%.*s...\" is longer than %d bytes",
						pg_mbcliplen(VARDATA_ANY(t), len, 40), VARDATA_ANY(t), PRODUCT_CODE_LEN - 1),
				 errdetail("Settlement handles product codes of at most %d bytes.", PRODUCT_CODE_LEN - 1),
				 errhint("Restore the CHECK constraint of tco.product.product_code and give the product a shorter code.")));
	memset(buf, 0, PRODUCT_CODE_LEN);
	memcpy(buf, VARDATA_ANY(t), len);
}

/* ------------------------------------------------------------------------
 * Loading what the run needs
 */

static AccountInfo *
lookup_account(SettleRun *run, int64 account_id)
{
	bool		found;
	AccountInfo *info;

	if (run->last_account != NULL && run->last_account->account_id == account_id)
		return run->last_account;
	if (run->prev_account != NULL && run->prev_account->account_id == account_id)
	{
		info = run->prev_account;
		run->prev_account = run->last_account;
		run->last_account = info;
		return info;
	}
	info = hash_search(run->accounts, &account_id, HASH_ENTER, &found);
	run->prev_account = run->last_account;
	run->last_account = info;
	if (!found)
	{
		Datum		arg = Int64GetDatum(account_id);
		SPITupleTable *tt;
		bool		isnull;

		info->entity_id = 0;
		info->verified = false;
		info->org_id = 0;
		info->admin_account_id = 0;
		exec_plan(PLAN_ACCOUNT, &arg, NULL, true, 1);
		tt = SPI_tuptable;
		if (SPI_processed == 1)
		{
			info->entity_id = get_int8(tt->vals[0], tt->tupdesc, 1, &isnull);
			info->verified = get_bool(tt->vals[0], tt->tupdesc, 2, &isnull);
			info->org_id = get_int8(tt->vals[0], tt->tupdesc, 3, &isnull);
			info->admin_account_id = get_int8(tt->vals[0], tt->tupdesc, 4, &isnull);
		}
		SPI_freetuptable(tt);
	}
	return info;
}

/*
 * What lookup_account would load, for many accounts with one query: the
 * distinct consumers of the lines about to be settled (sorted by account).
 */
static void
preload_accounts(SettleRun *run, const int64 *ids, Size n)
{
	Datum		arg;
	SPITupleTable *tt;
	uint64		i;

	if (n == 0)
		return;
	{
		Datum	   *elems = palloc(sizeof(Datum) * n);
		Size		k;

		for (k = 0; k < n; k++)
			elems[k] = Int64GetDatum(ids[k]);
		arg = PointerGetDatum(construct_array(elems, (int) n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		pfree(elems);
	}
	exec_plan(PLAN_ACCOUNTS, &arg, NULL, true, 0);
	tt = SPI_tuptable;
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		bool		found;
		int64		id = get_int8(tt->vals[i], tt->tupdesc, 5, &isnull);
		AccountInfo *info = hash_search(run->accounts, &id, HASH_ENTER, &found);

		info->entity_id = get_int8(tt->vals[i], tt->tupdesc, 1, &isnull);
		info->verified = get_bool(tt->vals[i], tt->tupdesc, 2, &isnull);
		info->org_id = get_int8(tt->vals[i], tt->tupdesc, 3, &isnull);
		info->admin_account_id = get_int8(tt->vals[i], tt->tupdesc, 4, &isnull);
	}
	SPI_freetuptable(tt);
	pfree(DatumGetPointer(arg));
}

static void
load_discounts(SettleRun *run, TimestampTz start, TimestampTz end)
{
	Datum		args[2] = {TimestampTzGetDatum(start), TimestampTzGetDatum(end)};
	SPITupleTable *tt;
	uint64		i;
	HASHCTL		ctl;

	ctl.keysize = sizeof(DiscountOwnerKey);
	ctl.entrysize = sizeof(DiscountOwner);
	ctl.hcxt = run->run_ctx;
	run->discounts = hash_create("tco settle discounts", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	exec_plan(PLAN_DISCOUNTS, args, NULL, false, 0);
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
		key.kind = get_int8(tup, tt->tupdesc, 2, &isnull) == 0 ? OWNER_ACCOUNT : OWNER_ENTITY;
		key.id = get_int8(tup, tt->tupdesc, 3, &isnull);
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
		row->discount_id = get_int8(tup, tt->tupdesc, 1, &isnull);
		product = get_text(tup, tt->tupdesc, 4, &isnull);
		row->all_products = isnull;
		if (isnull)
			memset(row->product_code, 0, PRODUCT_CODE_LEN);
		else
			text_to_code(product, row->product_code);
		row->rate_micro = get_int8(tup, tt->tupdesc, 5, &isnull);
		row->valid_from = get_tstz(tup, tt->tupdesc, 6, &isnull);
		row->valid_to = get_tstz(tup, tt->tupdesc, 7, &isnull);
	}
	SPI_freetuptable(tt);
}

/*
 * The contract discount of an owner for a product at an instant: a
 * product-specific rate beats an all-products rate of the same owner.
 */
static const DiscountRow *
find_discount(SettleRun *run, int kind, int64 id, const char *product_code, TimestampTz at)
{
	DiscountOwnerKey key;
	DiscountOwner *owner;
	const DiscountRow *all = NULL;
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

		if (at < row->valid_from || at >= row->valid_to)
			continue;
		if (!row->all_products && strcmp(row->product_code, product_code) == 0)
			return row;
		if (row->all_products)
			all = row;
	}
	return all;
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
	SPITupleTable *tt;
	HASHCTL		ctl;
	uint64		i;
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
	 * through them (packs, plans, pool vouchers), so use_benefits never asks
	 * for grants.
	 */
	run->shares = run->v10 ? NULL : tco_share_load(run->run_ctx, start, end, run->has_org, run->org_id);

	/*
	 * Uses recorded by earlier settlements of the cycle: in the packs of the
	 * cycle's existing statements (load_statements), found by index.
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
		args[2] = int8_array(ids, NULL, k);
		if (run->nkind[BENEFIT_PLAN] == 0 || k == 0)
		{
			pfree(ids);
			return;
		}
	}
	exec_plan(PLAN_PLAN_USES, args, NULL, false, 0);
	tt = SPI_tuptable;
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = tt->vals[i];
		bool		isnull;
		int64		benefit_id = get_int8(tup, tt->tupdesc, 1, &isnull);
		BenefitIndex *bi = hash_search(run->benefit_index, &benefit_id, HASH_FIND, NULL);
		PlanHourKey key;
		PlanHour   *ph;
		bool		found;

		if (bi == NULL)
			continue;
		memset(&key, 0, sizeof(key));
		key.benefit_index = bi->index;
		key.hour = tco_trunc(get_tstz(tup, tt->tupdesc, 2, &isnull),
							 TCO_GRAN_HOUR, run->tz);
		ph = hash_search(run->plan_hours, &key, HASH_ENTER, &found);
		if (!found)
			ph->used = 0;
		add_money(&ph->used, get_int8(tup, tt->tupdesc, 3, &isnull));
	}
	SPI_freetuptable(tt);
}

static void
load_benefits(SettleRun *run, TimestampTz start, TimestampTz end)
{
	Datum		args[3] = {TimestampTzGetDatum(start), TimestampTzGetDatum(end), Int64GetDatum(run->org_id)};
	SPITupleTable *tt;
	uint64		i;
	HASHCTL		ctl;

	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(BenefitOwner);
	ctl.hcxt = run->run_ctx;
	run->benefit_owners = hash_create("tco settle benefit owners", 64, &ctl,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	if (run->v10)
		exec_plan(run->has_org ? PLAN_BENEFITS_ORG_V10 : PLAN_BENEFITS_V10, args, NULL, false, 0);
	else
		exec_plan(run->has_org ? PLAN_BENEFITS_ORG : PLAN_BENEFITS, args, NULL, false, 0);
	tt = SPI_tuptable;
	run->nbenefits = (int) SPI_processed;
	run->benefits = MemoryContextAllocHuge(run->run_ctx, sizeof(Benefit) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = tt->vals[i];
		Benefit    *b = &run->benefits[i];
		bool		isnull;
		bool		found;
		int			kind = (int) get_int8(tup, tt->tupdesc, 2, &isnull);
		int64		owner_id;
		BenefitOwner *owner;
		Datum		product;

		if (isnull || kind < 0 || kind >= BENEFIT_KINDS)
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("benefit " INT64_FORMAT " has a kind settlement does not know",
							get_int8(tup, tt->tupdesc, 1, &isnull)),
					 errhint("tco.benefit's CHECK constraint benefit_kind was dropped or changed: restore it and correct the benefit.")));
		owner_id = get_int8(tup, tt->tupdesc, 3, &isnull);

		b->benefit_id = get_int8(tup, tt->tupdesc, 1, &isnull);
		b->kind = kind;
		run->nkind[kind]++;
		product = get_text(tup, tt->tupdesc, 4, &isnull);
		b->any_product = isnull;
		if (isnull)
			memset(b->product_code, 0, PRODUCT_CODE_LEN);
		else
			text_to_code(product, b->product_code);
		b->balance = get_int8(tup, tt->tupdesc, 5, &isnull);
		b->used = 0;
		b->valid_from = get_tstz(tup, tt->tupdesc, 6, &isnull);
		b->valid_to = get_tstz(tup, tt->tupdesc, 7, &isnull);

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

/* ------------------------------------------------------------------------
 * Pricing one line
 */

/*
 * The statement of a payer for the cycle: the existing one (loaded by
 * load_statements), else a new one whose id is taken from the statement
 * identity sequence now and which write_statements inserts with the others
 * (one INSERT for all, instead of one per payer).
 */
static int64
statement_for_payer(SettleRun *run, int64 payer)
{
	bool		found;
	PayerStatement *ps;

	if (run->last_payer != NULL && run->last_payer->payer_account_id == payer)
		return run->last_payer->statement_id;
	ps = hash_search(run->payers, &payer, HASH_ENTER, &found);
	run->last_payer = ps;
	if (!found)
	{
		AccountInfo *info = lookup_account(run, payer);

		ps->statement_id = nextval_internal(run->statement_seq, false);
		ps->is_new = true;
		ps->org_id = info->org_id;
		memset(ps->totals, 0, sizeof(ps->totals));
	}
	ps->used = true;
	return ps->statement_id;
}

/* Existing statements of the cycle (a scope settled before made some). */
static void
load_statements(SettleRun *run)
{
	Datum		arg = CStringGetTextDatum(run->cycle_text);
	SPITupleTable *tt;
	uint64		i;
	bool		isnull;

	exec_plan(run->v10 ? PLAN_SEQUENCES_V10 : PLAN_SEQUENCES, NULL, NULL, true, 1);
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

	exec_plan(PLAN_STATEMENTS_OF_CYCLE, &arg, NULL, false, 0);
	tt = SPI_tuptable;
	for (i = 0; i < SPI_processed; i++)
	{
		int64		payer = get_int8(tt->vals[i], tt->tupdesc, 1, &isnull);
		bool		found;
		PayerStatement *ps = hash_search(run->payers, &payer, HASH_ENTER, &found);

		ps->statement_id = get_int8(tt->vals[i], tt->tupdesc, 2, &isnull);
		ps->is_new = false;
		ps->used = false;
		ps->org_id = 0;
	}
	SPI_freetuptable(tt);
}

/*
 * The pack the current line goes to: the open one if it is for the same
 * statement, consuming account and product, else a new one.  Called once per
 * line before its benefits are used, so its uses fall in its pack.
 */
static void
pack_for_line(SettleRun *run, int64 statement_id, int64 payer, int64 account_id, const char *product_code)
{
	LineBatch  *b = &run->batch;
	int			k = b->npacks - 1;

	if (k >= 0 && DatumGetInt64(b->pack_statement[k]) == statement_id &&
		DatumGetInt64(b->pack_account[k]) == account_id &&
		strcmp(b->pack_code[k], product_code) == 0 &&
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
}

static int16
source_code(const char *source)
{
	static const char *const names[] = {"none", "own", "admin", "manager", "entity", "own_new_trusteeship"};
	int			i;

	for (i = 0; i < (int) lengthof(names); i++)
		if (strcmp(source, names[i]) == 0)
			return (int16) i;
	elog(ERROR, "unknown discount source \"%s\"", source);
	return 0;
}

/*
 * Record one benefit use (benefit, line, statement, amount): the only place
 * uses are recorded, so every kind of benefit goes through it.  It is
 * written with the line's pack (pack_for_line).
 */
static void
record_use(SettleRun *run, int64 benefit_id, int64 line_id, int64 statement_id, int64 amount)
{
	LineBatch  *batch = &run->batch;

	(void) statement_id;		/* the pack's (pack_for_line) */
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
	record_use(run, b->benefit_id, line_id, statement_id, amount);
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
static void
use_benefits(SettleRun *run, int64 owner_id, int owner_kind, int64 consumer_id, int shared_kind,
			 const char *product_code, TimestampTz at, int64 line_id, int64 statement_id,
			 int64 *remaining, int64 *benefit_total)
{
	BenefitOwner *owner = NULL;
	const ShareGrant *grants = NULL;
	int			ngrants = 0;
	int			n = 0;
	int			i;

	if (*remaining == 0)
		return;
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
			for (i = owner->first[owner_kind]; i < owner->first[owner_kind] + owner->count[owner_kind] && *remaining > 0; i++)
				apply_benefit(run, i, product_code, at, line_id, statement_id, remaining, benefit_total);
		return;
	}
	if (owner != NULL)
		for (i = owner->first[owner_kind]; i < owner->first[owner_kind] + owner->count[owner_kind]; i++)
			run->candidates[n++] = i;
	if (n > 1)
		qsort_arg(run->candidates, n, sizeof(int), compare_by_expiry, run->benefits);
	for (i = 0; i < n && *remaining > 0; i++)
	{
		if (i > 0 && run->candidates[i] == run->candidates[i - 1])
			continue;
		apply_benefit(run, run->candidates[i], product_code, at, line_id, statement_id, remaining, benefit_total);
	}
}

static void
settle_line(SettleRun *run, int64 line_id, int64 account_id, const char *product_code,
			TimestampTz at, int64 list)
{
	PayerDecision decision;
	int64		payer;
	AccountInfo *consumer;
	const DiscountRow *discount = NULL;
	const char *source = "none";
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

	if (list < 0)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("bill line " INT64_FORMAT " has a negative list amount", line_id),
				 errhint("tco.bill_line's CHECK constraint bill_line_amount_not_negative was dropped: restore it and correct the line.")));

	tco_payer_decide(account_id, product_code, at, &decision);
	payer = decision.payer;
	consumer = lookup_account(run, account_id);

	/* Contract discount (R8, DESIGN section 4) */
	if (payer == account_id)
	{
		discount = find_discount(run, OWNER_ACCOUNT, account_id, product_code, at);
		source = "own";
		if (consumer->admin_account_id != 0 && consumer->admin_account_id != account_id &&
			consumer->verified && consumer->entity_id != 0)
		{
			AccountInfo *admin = lookup_account(run, consumer->admin_account_id);

			if (admin->verified && admin->entity_id == consumer->entity_id)
			{
				const DiscountRow *inherited = find_discount(run, OWNER_ACCOUNT, admin->account_id,
															 product_code, at);

				if (inherited != NULL && (discount == NULL || inherited->rate_micro > discount->rate_micro))
				{
					discount = inherited;
					source = "admin";
				}
			}
		}
	}
	else
	{
		const PayerChange *change;

		if (decision.change_index < 0)
			elog(ERROR, "payer " INT64_FORMAT " of bill line " INT64_FORMAT " comes from no trusteeship",
				 payer, line_id);
		change = &decision.account[decision.change_index];
		if (change->at < run->legacy_cutover)
		{
			discount = find_discount(run, OWNER_ACCOUNT, payer, product_code, at);
			source = "manager";
		}
		else
		{
			discount = find_discount(run, OWNER_ENTITY, consumer->entity_id, product_code, at);
			source = "entity";
			if (discount == NULL)
			{
				discount = find_discount(run, OWNER_ACCOUNT, account_id, product_code, at);
				source = "own_new_trusteeship";
			}
		}
	}
	if (discount == NULL)
		source = "none";
	else
		rate = discount->rate_micro;
	discount_amount = (int64) (((int128) list * rate + MICRO / 2) / MICRO);
	remaining = list - discount_amount;

	statement_id = statement_for_payer(run, payer);
	pack_for_line(run, statement_id, payer, account_id, product_code);

	/*
	 * Benefits (R9, DESIGN section 5): resource packs, then savings plans,
	 * owned by or shared with the consumer; the consumer's own coupons; the
	 * payer's vouchers with the pool vouchers shared with the consumer; the
	 * payer's stored-value cards.
	 */
	use_benefits(run, account_id, BENEFIT_PACK, account_id, BENEFIT_PACK,
				 product_code, at, line_id, statement_id, &remaining, &benefit);
	use_benefits(run, account_id, BENEFIT_PLAN, account_id, BENEFIT_PLAN,
				 product_code, at, line_id, statement_id, &remaining, &benefit);
	use_benefits(run, account_id, BENEFIT_COUPON, 0, -1,
				 product_code, at, line_id, statement_id, &remaining, &benefit);
	use_benefits(run, payer, BENEFIT_VOUCHER, account_id, BENEFIT_POOL_VOUCHER,
				 product_code, at, line_id, statement_id, &remaining, &benefit);
	use_benefits(run, payer, BENEFIT_CARD, 0, -1,
				 product_code, at, line_id, statement_id, &remaining, &benefit);

	/* Statement line (the previous line's, mostly: lines come grouped) */
	sum = run->last_sum;
	if (sum == NULL || sum->key.payer_account_id != payer || sum->key.account_id != account_id ||
		strcmp(sum->key.product_code, product_code) != 0)
	{
		memset(&key, 0, sizeof(key));
		key.payer_account_id = payer;
		key.account_id = account_id;
		strlcpy(key.product_code, product_code, PRODUCT_CODE_LEN);
		sum = hash_search(run->statement_lines, &key, HASH_ENTER, &found);
		if (!found)
		{
			sum->statement_id = statement_id;
			sum->statement = run->last_payer;	/* set by statement_for_payer */
			sum->list = sum->discount = sum->benefit = sum->due = 0;
			sum->lines = 0;
		}
		run->last_sum = sum;
	}
	add_money(&sum->list, list);
	add_money(&sum->discount, discount_amount);
	add_money(&sum->benefit, benefit);
	add_money(&sum->due, remaining);
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
	batch->source[n] = Int16GetDatum(source_code(source));
	batch->discount_id[n] = Int64GetDatum(discount ? discount->discount_id : 0);
	batch->discount[n] = Int64GetDatum(discount_amount);
	batch->benefit[n] = Int64GetDatum(benefit);
}

/* ------------------------------------------------------------------------
 * Writing
 */

static Datum
int8_array(Datum *elems, bool *nulls, int n)
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
static void
batch_start(SettleRun *run)
{
	LineBatch  *b = &run->batch;

	memset(b, 0, sizeof(LineBatch));
	b->pack_statement = palloc(sizeof(Datum) * (FETCH_BATCH + 1));
	b->pack_payer = palloc(sizeof(Datum) * (FETCH_BATCH + 1));
	b->pack_account = palloc(sizeof(Datum) * (FETCH_BATCH + 1));
	b->pack_code = palloc(PRODUCT_CODE_LEN * (FETCH_BATCH + 1));
	b->pack_line_lo = palloc(sizeof(Datum) * (FETCH_BATCH + 1));
	b->pack_use_lo = palloc(sizeof(Datum) * (FETCH_BATCH + 1));
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

/* The columns of tco.settled_pack, in the order batch_flush gives them. */
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
 * 1.0 mode: write the batch's lines as rows of tco.settled_line (one INSERT,
 * each line with the statement and payer of its pack) and keep its benefit
 * uses, with the statement of their pack, for write_uses_v10.
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
	exec_plan(PLAN_INSERT_LINES_V10, args, NULL, false, 0);
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
 * the statements they reference exist (write_statements); a few INSERTs of
 * at most USES_V10_CHUNK uses each.
 */
#define USES_V10_CHUNK	65536

static void
write_uses_v10(SettleRun *run)
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
		exec_plan(PLAN_INSERT_USES_V10, args, NULL, false, 0);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextDelete(cxt);
	}
}

/*
 * Write the batch's packs (each a slice of the flat per-line and per-use
 * arrays) in bulk, and empty the batch.  The time since the last mark was
 * pricing; the time in here is writing packs.
 */
static void
batch_flush(SettleRun *run)
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
		v[5] = BillingCycleGetDatum(run->cycle);
		v[6] = TimestampTzGetDatum(now);
		v[7] = int_slice(b->line_id, l, nl, INT8OID, 8);
		v[8] = int_slice(b->list, l, nl, INT8OID, 8);
		v[9] = int_slice(b->rate, l, nl, INT4OID, 4);
		v[10] = int_slice(b->source, l, nl, INT2OID, 2);
		v[11] = int_slice(b->discount_id, l, nl, INT8OID, 8);
		v[12] = int_slice(b->discount, l, nl, INT8OID, 8);
		v[13] = int_slice(b->benefit, l, nl, INT8OID, 8);
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
	arg = int8_array(keys, NULL, (int) ndistinct);
	exec_plan(which, &arg, NULL, false, 0);
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
static void
write_statements(SettleRun *run)
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
		add_money(&ps->totals[0], sum->list);
		add_money(&ps->totals[1], sum->discount);
		add_money(&ps->totals[2], sum->benefit);
		add_money(&ps->totals[3], sum->due);
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

				if (micro < 0)
					elog(ERROR, "negative settlement total");
				/* half-up to cents without overflow, for totals up to the int8 maximum */
				cents = micro / 10000 + (micro % 10000 >= 5000 ? 1 : 0);
				v[4 + j] = NumericGetDatum(int64_div_fast_to_numeric(cents, 2));
			}
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
		args[0] = int8_array(sid, NULL, nold);
		args[1] = int8_array(acct, NULL, nold);
		args[2] = text_array(prod, nold);
		for (j = 0; j < 4; j++)
			args[3 + j] = int8_array(amounts[j], NULL, nold);
		args[7] = PointerGetDatum(construct_md_array(cnt, NULL, 1, dims, lbs, INT4OID, 4, true, TYPALIGN_INT));
		exec_plan(PLAN_INSERT_STATEMENT_LINES, args, NULL, false, 0);

		/* statements that existed before and got lines from this run */
		i = 0;
		hash_seq_init(&seq, run->payers);
		while ((ps = hash_seq_search(&seq)) != NULL)
			if (ps->used && !ps->is_new)
				statement_ids[i++] = Int64GetDatum(ps->statement_id);
		args[0] = int8_array(statement_ids, NULL, (int) i);
		exec_plan(PLAN_STATEMENT_TOTALS, args, NULL, false, 0);
	}

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
		args[0] = int8_array(bid, NULL, nused);
		args[1] = int8_array(bamount, NULL, nused);
		exec_plan(PLAN_BENEFIT_BALANCES, args, NULL, false, 0);
	}
}

/* ------------------------------------------------------------------------
 * The run
 */

static inline int
line_order(const LineRec *x, const LineRec *y)
{
	if (x->account_id != y->account_id)
		return x->account_id < y->account_id ? -1 : 1;
	if (x->product != y->product)
		return x->product < y->product ? -1 : 1;
	if (x->period_start != y->period_start)
		return x->period_start < y->period_start ? -1 : 1;
	if (x->line_id != y->line_id)
		return x->line_id < y->line_id ? -1 : 1;
	return 0;
}

/* sort_lines(LineRec *, size_t): qsort specialized for line_order */
#define ST_SORT sort_lines
#define ST_ELEMENT_TYPE LineRec
#define ST_COMPARE(a, b) line_order(a, b)
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

/*
 * Put the lines in settlement order (account, product, period start, line
 * id): a stable LSD radix sort of their positions by (account, product), 11
 * bits per pass (two passes for a few thousand accounts and products), one
 * in-place permutation of the records, then each (account, product) run is
 * checked and, if it is not in (period start, line id) order already, sorted.
 * Read through the index on period_start, the runs are in order, and this is
 * about twice as fast as one comparison sort of everything, which remains
 * for few lines and for accounts too far apart to make a key.  idx is
 * scratch room for 2 * n positions.  Returns whether the radix sort did it.
 */
#define RADIX_BITS	11
#define RADIX_MIN_LINES	256

static bool
order_lines(LineRec *recs, Size n, int nproducts, uint32 *idx)
{
	int64		min_account,
				max_account;
	int			pbits = 0;
	int			keybits;
	uint64		max_key;
	uint32	   *from = idx,
			   *to = idx + n;
	Size		i;
	int			shift;

	if (n < RADIX_MIN_LINES || n > PG_UINT32_MAX || idx == NULL)
	{
		sort_lines(recs, n);
		return false;
	}
	min_account = max_account = recs[0].account_id;
	for (i = 1; i < n; i++)
	{
		min_account = Min(min_account, recs[i].account_id);
		max_account = Max(max_account, recs[i].account_id);
	}
	while ((1 << pbits) < nproducts)
		pbits++;
	if ((uint64) max_account - (uint64) min_account >= (UINT64CONST(1) << (62 - pbits)))
	{
		sort_lines(recs, n);
		return false;
	}
#define LINE_KEY(r) ((((uint64) (r)->account_id - (uint64) min_account) << pbits) | (uint64) (r)->product)
	max_key = (((uint64) max_account - (uint64) min_account) << pbits) | (uint64) Max(nproducts - 1, 0);
	keybits = 1;
	while (keybits < 64 && (max_key >> keybits) != 0)
		keybits++;
	for (i = 0; i < n; i++)
		from[i] = (uint32) i;
	for (shift = 0; shift < keybits; shift += RADIX_BITS)
	{
		Size		count[1 << RADIX_BITS];
		Size		sum = 0;
		uint32	   *swap;
		int			d;

		memset(count, 0, sizeof(count));
		for (i = 0; i < n; i++)
			count[(LINE_KEY(&recs[from[i]]) >> shift) & ((1 << RADIX_BITS) - 1)]++;
		for (d = 0; d < (1 << RADIX_BITS); d++)
		{
			Size		c = count[d];

			count[d] = sum;
			sum += c;
		}
		for (i = 0; i < n; i++)
			to[count[(LINE_KEY(&recs[from[i]]) >> shift) & ((1 << RADIX_BITS) - 1)]++] = from[i];
		swap = from;
		from = to;
		to = swap;
		CHECK_FOR_INTERRUPTS();
	}
#undef LINE_KEY
	/* recs[i] = old recs[from[i]], in place: follow each cycle once */
	for (i = 0; i < n; i++)
	{
		LineRec		tmp;
		Size		j;

		if (from[i] == i)
			continue;
		tmp = recs[i];
		j = i;
		while (from[j] != i)
		{
			Size		k = from[j];

			recs[j] = recs[k];
			from[j] = (uint32) j;
			j = k;
		}
		recs[j] = tmp;
		from[j] = (uint32) j;
	}
	/* each (account, product) run in (period start, line id) order */
	for (i = 0; i < n;)
	{
		Size		end = i + 1;
		bool		sorted = true;

		while (end < n && recs[end].account_id == recs[i].account_id && recs[end].product == recs[i].product)
		{
			if (sorted && line_order(&recs[end - 1], &recs[end]) > 0)
				sorted = false;
			end++;
		}
		if (!sorted)
			sort_lines(recs + i, end - i);
		i = end;
	}
	return true;
}

/* Product codes in the collation order of ORDER BY product_code. */
static void
load_products(SettleRun *run)
{
	SPITupleTable *tt;
	HASHCTL		ctl;
	uint64		i;

	ctl.keysize = PRODUCT_CODE_LEN;
	ctl.entrysize = sizeof(ProductEntry);
	ctl.hcxt = run->run_ctx;
	run->product_ranks = hash_create("tco settle products", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	exec_plan(PLAN_PRODUCTS, NULL, NULL, true, 0);
	tt = SPI_tuptable;
	if (SPI_processed >= PG_INT32_MAX)
		elog(ERROR, "too many products");
	run->nproducts = (int) SPI_processed;
	run->products = MemoryContextAllocHuge(run->run_ctx, (Size) PRODUCT_CODE_LEN * Max(SPI_processed, 1));
	run->product_len = MemoryContextAllocHuge(run->run_ctx, sizeof(int) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		bool		found;
		ProductEntry *e;

		text_to_code(get_text(tt->vals[i], tt->tupdesc, 1, &isnull), run->products[i]);
		if (isnull)
			ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("tco.product has a NULL product code"),
				 errhint("The primary key of tco.product was dropped: restore it.")));
		run->product_len[i] = (int) strlen(run->products[i]);
		e = hash_search(run->product_ranks, run->products[i], HASH_ENTER, &found);
		e->rank = (int32) i;
	}
	SPI_freetuptable(tt);
}

/* Skip mode: the settled line ids of an account's product in the cycle, sorted. */
static void
load_settled_ids(SettleRun *run, int64 account_id, const char *product_code)
{
	Datum		args[3];
	SPITupleTable *tt;
	uint64		i;
	bool		isnull;

	if (run->settled_ids)
		pfree(run->settled_ids);
	run->settled_ids = NULL;
	run->nsettled_ids = 0;
	args[0] = Int64GetDatum(account_id);
	args[1] = CStringGetTextDatum(product_code);
	args[2] = CStringGetTextDatum(run->cycle_text);
	exec_plan(run->v10 ? PLAN_SETTLED_IDS_V10 : PLAN_SETTLED_IDS, args, NULL, false, 0);
	tt = SPI_tuptable;
	if (SPI_processed > 0)
	{
		run->settled_ids = MemoryContextAllocHuge(run->run_ctx, sizeof(int64) * SPI_processed);
		for (i = 0; i < SPI_processed; i++)
			run->settled_ids[i] = get_int8(tt->vals[i], tt->tupdesc, 1, &isnull);
		run->nsettled_ids = (int) SPI_processed;
	}
	SPI_freetuptable(tt);
}

static bool
is_settled_id(SettleRun *run, int64 line_id)
{
	int			lo = 0,
				hi = run->nsettled_ids;

	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (run->settled_ids[mid] < line_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < run->nsettled_ids && run->settled_ids[lo] == line_id;
}

/*
 * Receives the cycle's lines from the executor, in one pass, as LineRec:
 * into an array of at most cap records while they fit (about work_mem),
 * and once they do not, into a tuplesort (spill_to_sort), which keeps
 * work_mem in memory and spills the rest to temporary files as
 * PostgreSQL's own sorts do.  See settle_run.
 */
typedef struct LineCollector
{
	DestReceiver pub;
	SettleRun  *run;
	LineRec    *recs;
	Size		cap;
	Size		n;
	uint64		received;		/* rows received */
	Tuplesortstate *sort;		/* NULL while the records fit in recs */
	TupleTableSlot *sort_slot;	/* a virtual slot of the sort's tuple shape */
	const char *last_code;
	int32		last_rank;
} LineCollector;

/* The shape collect_line reads: line_id, account_id, product_code, period_start, list_amount. */
static void
collect_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	static const Oid types[5] = {INT8OID, INT8OID, TEXTOID, TIMESTAMPTZOID, NUMERICOID};

	tco_check_columns(typeinfo, 5, types, "the bill lines of the cycle (tco.bill_line)");
}

static void
collect_shutdown(DestReceiver *self)
{
}

/*
 * The tuple a line is sorted as when the cycle does not fit in work_mem:
 * a LineRec as a virtual tuple, sorted by its first four columns in
 * settlement order (consumer, product rank, period start, line id).
 */
#define SORT_NATTS		5
#define SORT_NKEYS		4

static TupleDesc
sort_tupdesc(void)
{
	TupleDesc	desc = CreateTemplateTupleDesc(SORT_NATTS);

	TupleDescInitEntry(desc, 1, "account_id", INT8OID, -1, 0);
	TupleDescInitEntry(desc, 2, "product", INT4OID, -1, 0);
	TupleDescInitEntry(desc, 3, "period_start", TIMESTAMPTZOID, -1, 0);
	TupleDescInitEntry(desc, 4, "line_id", INT8OID, -1, 0);
	TupleDescInitEntry(desc, 5, "list", INT8OID, -1, 0);
	return desc;
}

static void
sort_put(LineCollector *lc, const LineRec *r)
{
	TupleTableSlot *slot = lc->sort_slot;

	ExecClearTuple(slot);
	slot->tts_values[0] = Int64GetDatum(r->account_id);
	slot->tts_values[1] = Int32GetDatum(r->product);
	slot->tts_values[2] = TimestampTzGetDatum(r->period_start);
	slot->tts_values[3] = Int64GetDatum(r->line_id);
	slot->tts_values[4] = Int64GetDatum(r->list);
	memset(slot->tts_isnull, 0, sizeof(bool) * SORT_NATTS);
	ExecStoreVirtualTuple(slot);
	tuplesort_puttupleslot(lc->sort, slot);
}

static void
sort_get(TupleTableSlot *slot, LineRec *r)
{
	slot_getallattrs(slot);
	r->account_id = DatumGetInt64(slot->tts_values[0]);
	r->product = DatumGetInt32(slot->tts_values[1]);
	r->period_start = DatumGetTimestampTz(slot->tts_values[2]);
	r->line_id = DatumGetInt64(slot->tts_values[3]);
	r->list = DatumGetInt64(slot->tts_values[4]);
}

/*
 * The records no longer fit in work_mem: start a tuplesort with work_mem,
 * move the records read so far into it and free their array.  From now on
 * every line goes to the sort; it keeps at most work_mem in memory and
 * writes sorted runs to temporary files (released at its end, or by the
 * resource owner on error), so the cycle is still read once.
 */
static void
spill_to_sort(LineCollector *lc)
{
	SettleRun  *run = lc->run;
	MemoryContext oldcxt = MemoryContextSwitchTo(run->run_ctx);
	TupleDesc	desc = sort_tupdesc();
	AttrNumber	attnums[SORT_NKEYS] = {1, 2, 3, 4};
	Oid			operators[SORT_NKEYS];
	Oid			collations[SORT_NKEYS] = {InvalidOid, InvalidOid, InvalidOid, InvalidOid};
	bool		nulls_first[SORT_NKEYS] = {false, false, false, false};
	Size		i;

	/* each key column's "<" of its type's default btree opclass */
	for (i = 0; i < SORT_NKEYS; i++)
		operators[i] = lookup_type_cache(TupleDescAttr(desc, i)->atttypid, TYPECACHE_LT_OPR)->lt_opr;
	lc->sort = tuplesort_begin_heap(desc, SORT_NKEYS, attnums, operators, collations, nulls_first,
									work_mem, NULL, TUPLESORT_NONE);
	lc->sort_slot = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);
	MemoryContextSwitchTo(oldcxt);
	for (i = 0; i < lc->n; i++)
	{
		sort_put(lc, &lc->recs[i]);
		if ((i & 0x3FFF) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	pfree(lc->recs);
	lc->recs = NULL;
	lc->n = 0;
	lc->cap = 0;
}

/*
 * A numeric in micro-units (10^-6), exactly: what (x * 1000000)::int8 gives
 * for a value with at most 6 decimals, read straight from the numeric's
 * base-10000 digits (the on-disk format, stable since PostgreSQL 9.1: a
 * 16-bit header, short or long, then the digits).  For any other value
 * (more decimals, beyond int8, NaN or infinite, compressed) it falls back to
 * the SQL functions, which round or raise the usual error.  This is the
 * hottest conversion of the read: the functions cost a quarter of it.
 */
static int64
numeric_to_micro(Datum d)
{
	static const int64 pow10[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000,
		100000000, 1000000000, INT64CONST(10000000000), INT64CONST(100000000000),
		INT64CONST(1000000000000), INT64CONST(10000000000000), INT64CONST(100000000000000),
		INT64CONST(1000000000000000), INT64CONST(10000000000000000),
	INT64CONST(100000000000000000), INT64CONST(1000000000000000000)};
	struct varlena *v = (struct varlena *) DatumGetPointer(d);
	const char *p;
	Size		len;
	uint16		header;
	int			weight;
	bool		negative;
	int64		acc = 0;
	Size		i;

	if (VARATT_IS_EXTENDED(v) && !VARATT_IS_SHORT(v))
		goto fallback;
	p = VARDATA_ANY(v);
	len = VARSIZE_ANY_EXHDR(v);
	if (len < sizeof(uint16))
		goto fallback;
	memcpy(&header, p, sizeof(uint16));
	if ((header & 0xC000) == 0xC000)
		goto fallback;			/* NaN, infinity */
	if (header & 0x8000)
	{
		/* short: sign 0x2000, dscale 0x1F80, weight sign 0x0040, weight 0x003F */
		negative = (header & 0x2000) != 0;
		weight = (header & 0x0040) ? (int) (header & 0x003F) - 64 : (int) (header & 0x003F);
		p += sizeof(uint16);
		len -= sizeof(uint16);
	}
	else
	{
		int16		w;

		if (len < 2 * sizeof(uint16))
			goto fallback;
		negative = (header & 0xC000) == 0x4000;
		memcpy(&w, p + sizeof(uint16), sizeof(int16));
		weight = w;
		p += 2 * sizeof(uint16);
		len -= 2 * sizeof(uint16);
	}
	for (i = 0; i < len / sizeof(int16); i++)
	{
		int16		digit;
		int			exp = 4 * (weight - (int) i) + 6;	/* its power of ten, in micro-units */
		int64		term;

		memcpy(&digit, p + i * sizeof(int16), sizeof(int16));
		if (digit == 0)
			continue;
		if (exp == -2 && digit % 100 == 0)
			term = digit / 100;
		else if (exp < 0 || exp >= (int) lengthof(pow10) ||
				 pg_mul_s64_overflow(digit, pow10[exp], &term))
			goto fallback;
		if (pg_add_s64_overflow(acc, term, &acc))
			goto fallback;
	}
	return negative ? -acc : acc;

fallback:
	return DatumGetInt64(DirectFunctionCall1(numeric_int8,
											 DirectFunctionCall2(numeric_mul, d,
																 NumericGetDatum(int64_to_numeric(1000000)))));
}

static bool
collect_line(TupleTableSlot *slot, DestReceiver *self)
{
	LineCollector *lc = (LineCollector *) self;
	SettleRun  *run = lc->run;
	LineRec		rec;
	LineRec    *r;
	text	   *code;
	int			len;

	slot_getallattrs(slot);
	if (slot->tts_isnull[0] || slot->tts_isnull[1] || slot->tts_isnull[2] ||
		slot->tts_isnull[3] || slot->tts_isnull[4])
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("a bill line of the cycle has a NULL line_id, account_id, product_code, period_start or list_amount"),
				 errhint("A NOT NULL constraint of tco.bill_line was dropped: restore it and correct the line.")));
	lc->received++;
	if (lc->sort == NULL && lc->n == lc->cap)
		spill_to_sort(lc);
	r = lc->sort == NULL ? &lc->recs[lc->n++] : &rec;
	r->line_id = DatumGetInt64(slot->tts_values[0]);
	r->account_id = DatumGetInt64(slot->tts_values[1]);
	code = DatumGetTextPP(slot->tts_values[2]);
	len = VARSIZE_ANY_EXHDR(code);
	if (lc->last_code == NULL || strlen(lc->last_code) != (size_t) len ||
		memcmp(lc->last_code, VARDATA_ANY(code), len) != 0)
	{
		char		buf[PRODUCT_CODE_LEN];
		ProductEntry *e;
		int			k;

		/* a few products: a scan of their codes beats hashing the code */
		for (k = 0; k < run->nproducts && run->nproducts <= 16; k++)
			if (run->product_len[k] == len && memcmp(run->products[k], VARDATA_ANY(code), len) == 0)
				break;
		if (k < run->nproducts && run->nproducts <= 16)
			lc->last_rank = k;
		else
		{
			text_to_code(slot->tts_values[2], buf);
			e = hash_search(run->product_ranks, buf, HASH_FIND, NULL);
			if (e == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
						 errmsg("product \"%s\" of bill line " INT64_FORMAT " is not in tco.product",
								buf, r->line_id),
						 errhint("The foreign key of tco.bill_line.product_code was dropped: restore it and correct the line.")));
			lc->last_rank = e->rank;
		}
		lc->last_code = run->products[lc->last_rank];
	}
	r->product = lc->last_rank;
	r->period_start = DatumGetTimestampTz(slot->tts_values[3]);
	r->list = numeric_to_micro(slot->tts_values[4]);
	if (lc->sort != NULL)
		sort_put(lc, r);
	if ((lc->received & 0x3FFF) == 0)
		CHECK_FOR_INTERRUPTS();
	return true;
}

/*
 * Settle lines that come in settlement order, a slice of the run's lines:
 * first load, with one query, the consumers among them not loaded yet
 * (lookup_account would load each with a query of its own).
 */
static void
settle_lines(SettleRun *run, const LineRec *recs, Size n, bool skip_settled)
{
	int64	   *ids = palloc(sizeof(int64) * Max(n, 1));
	Size		nids = 0;
	Size		i;

	for (i = 0; i < n; i++)
	{
		if (i > 0 && recs[i].account_id == recs[i - 1].account_id)
			continue;
		if (hash_search(run->accounts, &recs[i].account_id, HASH_FIND, NULL) == NULL)
			ids[nids++] = recs[i].account_id;
	}
	preload_accounts(run, ids, nids);
	pfree(ids);

	for (i = 0; i < n; i++)
	{
		const LineRec *r = &recs[i];

		CHECK_FOR_INTERRUPTS();
		if (skip_settled)
		{
			if (r->account_id != run->group_account || r->product != run->group_product)
			{
				run->group_account = r->account_id;
				run->group_product = r->product;
				load_settled_ids(run, r->account_id, run->products[r->product]);
			}
			if (is_settled_id(run, r->line_id))
			{
				run->nskipped++;
				continue;
			}
		}
		settle_line(run, r->line_id, r->account_id, run->products[r->product], r->period_start, r->list);
		if (run->batch.n >= FETCH_BATCH)
			batch_flush(run);
		run->nlines++;
		if (progress_every > 0 && run->nlines % progress_every == 0)
			ereport(NOTICE,
					(errmsg("settling cycle %s: " UINT64_FORMAT " bill lines done",
							run->cycle_text, run->nlines)));
	}
}

/*
 * Read the cycle's lines once and settle them in the fixed order (consumer,
 * product, period start, line id).  The read query has no ORDER BY (an SQL
 * sort on the product code text cost three times the whole aggregate): the
 * lines arrive in physical order as compact records (LineRec, the product as
 * its rank in collation order).  While they fit in work_mem they are kept
 * in an array and put in order in memory (order_lines); once they do not,
 * all of them go to a tuplesort with work_mem (spill_to_sort), which
 * spills sorted runs to temporary files and merges them as the lines are
 * settled.  Either way the cycle is scanned once, and memory stays bounded
 * by work_mem plus what is bounded by accounts, products, payers and
 * benefits: the lines are settled in slices of FETCH_BATCH (settle_lines),
 * each slice's per-line records written and freed (batch_flush).
 */
static void
settle_run(SettleRun *run, TimestampTz start, TimestampTz end, bool skip_settled)
{
	HASHCTL		ctl;
	MemoryContext statements_ctx;
	Datum		args[3];
	SettlePlan	which = run->has_org ? PLAN_LINES_ORG : PLAN_LINES;
	LineCollector lc;
	SPIExecuteOptions options;
	ParamListInfo params;
	MemoryContext oldcxt;
	int			k;

	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(AccountInfo);
	ctl.hcxt = run->run_ctx;
	run->accounts = hash_create("tco settle accounts", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.entrysize = sizeof(PayerStatement);
	run->payers = hash_create("tco settle payers", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.keysize = sizeof(StatementLineKey);
	ctl.entrysize = sizeof(StatementLineSum);
	run->statement_lines = hash_create("tco settle statement lines", 1024, &ctl,
									   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	owner_cache_reset(&run->discount_cache);
	owner_cache_reset(&run->benefit_cache);
	run->group_account = 0;
	run->group_product = -1;
	INSTR_TIME_SET_CURRENT(run->phase_mark);
	load_statements(run);
	load_products(run);
	load_discounts(run, start, end);
	load_benefits(run, start, end);

	oldcxt = MemoryContextSwitchTo(run->run_ctx);
	batch_start(run);
	MemoryContextSwitchTo(oldcxt);

	memset(&lc, 0, sizeof(lc));
	lc.pub.receiveSlot = collect_line;
	lc.pub.rStartup = collect_startup;
	lc.pub.rShutdown = collect_shutdown;
	lc.pub.rDestroy = collect_shutdown;
	lc.pub.mydest = DestNone;
	lc.run = run;
	lc.last_rank = -1;
	/* records, and two positions each for order_lines */
	lc.cap = Max((Size) work_mem * 1024 / (sizeof(LineRec) + 2 * sizeof(uint32)), (Size) RADIX_MIN_LINES);
	lc.recs = MemoryContextAllocHuge(run->run_ctx, lc.cap * sizeof(LineRec));
	phase_done(run, PHASE_SETUP);

	args[0] = TimestampTzGetDatum(start);
	args[1] = TimestampTzGetDatum(end);
	args[2] = Int64GetDatum(run->org_id);
	params = makeParamList(run->has_org ? 3 : 2);
	for (k = 0; k < params->numParams; k++)
	{
		params->params[k].value = args[k];
		params->params[k].isnull = false;
		params->params[k].pflags = PARAM_FLAG_CONST;
		params->params[k].ptype = k < 2 ? TIMESTAMPTZOID : INT8OID;
	}
	memset(&options, 0, sizeof(options));
	options.params = params;
	/*
	 * read_only = false: a fresh snapshot, taken after the settlement lock,
	 * so lines committed by sessions we waited for are seen.  The rows go
	 * straight to collect_line, without being copied into a tuple table.
	 * The plan is made for these bounds (a custom plan, get_plan).
	 */
	options.read_only = false;
	options.dest = (DestReceiver *) &lc;
	{
		int			ret = SPI_execute_plan_extended(get_plan(which), &options);

		if (ret < 0)
			elog(ERROR, "reading the cycle's bill lines failed: %s", SPI_result_code_string(ret));
	}
	run->nreceived = lc.received;
	phase_done(run, PHASE_READ);

	if (lc.sort == NULL)
	{
		/* everything fit in work_mem: order the array, settle it by slices */
		Size		n = lc.n;
		Size		i;
		uint32	   *idx = n >= RADIX_MIN_LINES ?
			MemoryContextAllocHuge(run->run_ctx, sizeof(uint32) * 2 * n) : NULL;

		run->radix_sort = order_lines(lc.recs, n, run->nproducts, idx);
		if (idx)
			pfree(idx);
		phase_done(run, PHASE_SORT);
		for (i = 0; i < n; i += FETCH_BATCH)
			settle_lines(run, lc.recs + i, Min((Size) FETCH_BATCH, n - i), skip_settled);
		pfree(lc.recs);
	}
	else
	{
		/* the sort spilled: merge its runs, settle the lines as they come out */
		LineRec    *slice = MemoryContextAllocHuge(run->run_ctx, sizeof(LineRec) * FETCH_BATCH);
		TupleTableSlot *out = MakeSingleTupleTableSlot(lc.sort_slot->tts_tupleDescriptor,
													   &TTSOpsMinimalTuple);
		TuplesortInstrumentation stats;
		bool		more = true;

		tuplesort_performsort(lc.sort);
		phase_done(run, PHASE_SORT);
		while (more)
		{
			Size		n = 0;

			while (n < FETCH_BATCH && (more = tuplesort_gettupleslot(lc.sort, true, false, out, NULL)))
				sort_get(out, &slice[n++]);
			phase_done(run, PHASE_SORT);
			settle_lines(run, slice, n, skip_settled);
		}
		tuplesort_get_stats(lc.sort, &stats);
		run->sort_method = tuplesort_method_name(stats.sortMethod);
		run->sort_space_kb = stats.spaceUsed;
		run->sort_on_disk = stats.spaceType == SORT_SPACE_TYPE_DISK;
		ExecDropSingleTupleTableSlot(out);
		ExecDropSingleTupleTableSlot(lc.sort_slot);
		tuplesort_end(lc.sort);
		pfree(slice);
	}
	batch_flush(run);

	if (run->packs != NULL)
		tco_bulk_end(run->packs);
	run->packs = NULL;
	phase_done(run, PHASE_PACKS);
	statements_ctx = AllocSetContextCreate(run->run_ctx, "tco settle statements", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(statements_ctx);
	write_statements(run);
	if (run->v10)
		write_uses_v10(run);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(statements_ctx);
	phase_done(run, PHASE_STATEMENTS);
	{
		StringInfoData buf;
		int			p;

		initStringInfo(&buf);
		for (p = 0; p < NUM_PHASES; p++)
			appendStringInfo(&buf, "%s%s %.1f ms", p > 0 ? ", " : "", phase_names[p], run->phase_ms[p]);
		if (run->sort_method != NULL)
			elog(DEBUG1, "tco settle_cycle %s: " UINT64_FORMAT " lines; %s; one read, sorted by tuplesort (%s, %ld kB %s)",
				 run->cycle_text, run->nlines, buf.data, run->sort_method, (long) run->sort_space_kb,
				 run->sort_on_disk ? "on disk" : "in memory");
		else
			elog(DEBUG1, "tco settle_cycle %s: " UINT64_FORMAT " lines; %s; one read, sorted in memory (%s)",
				 run->cycle_text, run->nlines, buf.data, run->radix_sort ? "radix" : "comparison");
	}
}

/*
 * The invariant of a run, checked by counts before anything is committed:
 * every bill line of the cycle in the scope was settled by this run or found
 * settled by an earlier one.  The one read of the cycle's lines counts every
 * row the executor gives it (collect_line), before it is kept in memory or
 * sent to the sort; a line lost between the read and its settlement (by the
 * sort, or by a slice) raises here instead of closing the cycle without it.
 */
static void
check_all_settled(SettleRun *run)
{
	if (run->nreceived != run->nlines + run->nskipped)
		ereport(ERROR,
				(errcode(ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION),
				 errmsg("settlement of billing cycle %s would leave bill lines unsettled", run->cycle_text),
				 errdetail("The scope has " UINT64_FORMAT " bill lines; " UINT64_FORMAT " were settled and "
						   UINT64_FORMAT " were already settled.", run->nreceived, run->nlines, run->nskipped),
				 errhint("Nothing was written. This is a bug of tco: report it with the cycle's bill lines.")));
}

PG_FUNCTION_INFO_V1(tco_settle_slice);

/*
 * tco.settle_slice(a anyarray, lo integer, hi integer): a[lo:hi] of a
 * one-dimensional array of a fixed-length type without NULLs, by one
 * memcpy.  settle_cycle of version 1.1 wrote its packs with it; 1.2 writes
 * them in bulk and dropped the SQL function, but the install script of 1.1
 * still declares it, so the library keeps it.  lo > hi gives an empty array.
 */
Datum
tco_settle_slice(PG_FUNCTION_ARGS)
{
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P(0);
	int32		lo = PG_GETARG_INT32(1);
	int32		hi = PG_GETARG_INT32(2);
	Oid			elemtype = ARR_ELEMTYPE(a);
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			n;
	int			first;
	int			count;
	Size		bytes;
	ArrayType  *result;

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	if (ARR_NDIM(a) > 1 || ARR_HASNULL(a) || typlen <= 0 ||
		att_align_nominal(typlen, typalign) != (Size) typlen)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tco.settle_slice needs a one-dimensional array of a fixed-length type without NULLs")));
	n = ARR_NDIM(a) == 0 ? 0 : ARR_DIMS(a)[0];
	first = ARR_NDIM(a) == 0 ? 1 : ARR_LBOUND(a)[0];
	lo = Max(lo, first);
	hi = Min((int64) hi, (int64) first + n - 1);
	if (lo > hi)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(elemtype));
	count = hi - lo + 1;
	bytes = (Size) count * typlen;
	result = (ArrayType *) palloc0(ARR_OVERHEAD_NONULLS(1) + bytes);
	SET_VARSIZE(result, ARR_OVERHEAD_NONULLS(1) + bytes);
	result->ndim = 1;
	result->dataoffset = 0;
	result->elemtype = elemtype;
	ARR_DIMS(result)[0] = count;
	ARR_LBOUND(result)[0] = 1;
	/* without NULLs the data start right after the header (ARR_DATA_PTR) */
	memcpy((char *) result + ARR_OVERHEAD_NONULLS(1),
		   (char *) a + ARR_OVERHEAD_NONULLS(1) + (Size) (lo - first) * typlen, bytes);
	PG_RETURN_ARRAYTYPE_P(result);
}

PG_FUNCTION_INFO_V1(tco_settle_cycle);

/*
 * tco.settle_cycle(cycle tco.billing_cycle, org_id bigint DEFAULT NULL,
 *                  OUT statements bigint, OUT lines bigint,
 *                  OUT list_total numeric, OUT due_total numeric)
 */
Datum
tco_settle_cycle(PG_FUNCTION_ARGS)
{
	SettleRun	run;
	TupleDesc	tupdesc;
	MemoryContext caller_ctx = CurrentMemoryContext;
	pg_tz	   *tz;
	TimestampTz start,
				end;
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	Datum		result[4];
	bool		result_null[4] = {false, false, false, false};
	SPITupleTable *tt;
	int			i;
	int			nestlevel;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "tco.settle_cycle must return a composite");
	tupdesc = BlessTupleDesc(tupdesc);

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"cycle\" must not be NULL"),
				 errhint("Pass a billing cycle such as '2023-01'.")));

	memset(&run, 0, sizeof(run));
	run.cycle = PG_GETARG_BILLING_CYCLE(0);
	run.has_org = !PG_ARGISNULL(1);
	run.org_id = run.has_org ? PG_GETARG_INT64(1) : 0;
	if (run.cycle < TCO_CYCLE_MIN || run.cycle >= TCO_CYCLE_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("billing cycle out of range for settlement")));
	snprintf(run.cycle_text, sizeof(run.cycle_text), "%04d-%02d", run.cycle / 12, run.cycle % 12 + 1);

	/* every query of the run resolves pg_catalog's operators (cache.c) */
	nestlevel = tco_pin_search_path();
	tz = tco_billing_tz();
	start = tco_cycle_start(run.cycle, tz);
	end = tco_cycle_start(run.cycle + 1, tz);
	if (end > GetCurrentTransactionStartTimestamp())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("billing cycle %s has not ended yet", run.cycle_text),
				 errdetail("It ends at %s in billing time zone %s.",
						   timestamptz_to_str(end), tco_billing_tz_name()),
				 errhint("Settle a cycle once it is over.")));
	run.legacy_cutover = tco_legacy_cutover();
	/* 1.0 mode (see the head of this file): the installed schema has no packs */
	run.v10 = !OidIsValid(tco_relid("settled_pack"));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (run.has_org)
	{
		args[0] = Int64GetDatum(run.org_id);
		exec_plan(PLAN_ORG_EXISTS, args, NULL, true, 1);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
					 errmsg("organization " INT64_FORMAT " does not exist", run.org_id),
					 errhint("Check the organization id; list existing ones in tco.organization.")));
		SPI_freetuptable(SPI_tuptable);
	}

	/* Serialize settlements of this cycle, and bill line changes in it. */
	tco_settlement_lock(run.cycle, ExclusiveLock);
	/* Under REPEATABLE READ / SERIALIZABLE: 40001 if the snapshot is stale. */
	tco_settle_check_snapshot(run.cycle_text, start, end);
	/*
	 * READ COMMITTED: read-only queries (the payer cache) must also see what
	 * the sessions we waited for committed, not the statement's snapshot.
	 */
	PushActiveSnapshot(GetTransactionSnapshot());
	/*
	 * The payers of the run come from this snapshot, whatever this backend
	 * cached before (the cache may have been built by an older statement).
	 */
	tco_payer_reset();

	args[0] = CStringGetTextDatum(run.cycle_text);
	args[1] = Int64GetDatum(run.org_id);
	if (!run.has_org)
		nulls[1] = 'n';
	exec_plan(PLAN_SETTLED, args, nulls, false, 1);
	if (SPI_processed == 0)
	{
		bool		skip_settled;

		SPI_freetuptable(SPI_tuptable);
		/* settling everything after some organizations: skip their lines */
		exec_plan(PLAN_PARTLY_SETTLED, args, NULL, false, 1);
		skip_settled = SPI_processed > 0;
		SPI_freetuptable(SPI_tuptable);

		run.run_ctx = AllocSetContextCreate(caller_ctx, "tco settle", ALLOCSET_DEFAULT_SIZES);
		settle_run(&run, start, end, skip_settled);
		MemoryContextDelete(run.run_ctx);
		check_all_settled(&run);

		exec_plan(PLAN_MARK_SETTLED, args, nulls, false, 0);
	}
	else
		SPI_freetuptable(SPI_tuptable);

	exec_plan(PLAN_RESULT, args, nulls, false, 1);
	tt = SPI_tuptable;
	for (i = 0; i < 4; i++)
	{
		Datum		d = SPI_getbinval(tt->vals[0], tt->tupdesc, i + 1, &result_null[i]);
		MemoryContext old = MemoryContextSwitchTo(caller_ctx);

		result[i] = result_null[i] ? (Datum) 0 : datumCopy(d, i < 2, i < 2 ? 8 : -1);
		MemoryContextSwitchTo(old);
	}
	PopActiveSnapshot();
	SPI_finish();
	tco_restore_search_path(nestlevel);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, result_null)));
}
