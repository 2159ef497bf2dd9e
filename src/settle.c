/*
 * src/settle.c
 *
 * Settlement of a billing cycle (DESIGN section 5; rules R7-R9, R14):
 * tco.settle_cycle(cycle, org_id).  This file is the driver (the entry
 * points, the run and its phases, its queries, consumer accounts); settle.h
 * lists the other files of settlement and what each does.
 *
 * One pass over the cycle's bill lines in the fixed order (consumer, product,
 * period start, line id): read unsorted straight from the executor into
 * compact records, sorted in memory while they fit in work_mem, else
 * spilled to temporary files as sorted runs and merged (settle_read.c).  For each
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
 * What stays in memory is bounded by work_mem (the sort) and by the
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
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "mb/pg_wchar.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "settle.h"

/* GUC tco.progress_every: a NOTICE every N lines settled (0: none). */
static int	progress_every = 0;

static const char *const phase_names[NUM_PHASES] = {
	"setup", "read", "sort", "price", "packs", "statements"
};

/*
 * The cycle's lines, unsorted (settle_run puts them in order: an SQL sort on
 * (account_id, product_code, period_start, line_id) cost three times the
 * whole aggregate of the benchmark).  A plain range on period_start, so that
 * it works on a table partitioned by period_start as well (the planner
 * prunes to the cycle's partition) and needs no particular index: it is
 * planned for each run with the run's bounds (CURSOR_OPT_CUSTOM_PLAN, see
 * settle_get_plan), so a third of the table in the cycle is a sequential scan and a
 * small cycle of a large table an index scan, never a generic plan chosen
 * without knowing the cycle.
 */
#define LINES_SELECT \
	"SELECT line_id, account_id, product_code, period_start, list_amount " \
	"FROM tco.bill_line b WHERE period_start >= $1 AND period_start < $2"
#define LINES_IN_ORG " AND account_id IN (SELECT m.account_id FROM tco.member m WHERE m.org_id = $3)"
/* lines of the cycle queued as late lines are billed by a later cycle (41_late.sql) */
#define LINES_NOT_LATE " AND NOT EXISTS (SELECT 1 FROM tco.late_line k WHERE k.line_id = b.line_id)"
/*
 * The late lines a run bills: queued, of an earlier cycle, not of an
 * organization that already settled this cycle (its statements are
 * closed: the next cycle bills them), in the scope.
 */
#define LATE_COND \
	" WHERE k.statement_id IS NULL " \
	"AND k.charge_cycle OPERATOR(tco.<) $1::tco.billing_cycle " \
	"AND NOT EXISTS (SELECT 1 FROM tco.settled_cycle s WHERE s.cycle OPERATOR(tco.=) $1::tco.billing_cycle " \
	"AND s.org_id = (SELECT m.org_id FROM tco.member m WHERE m.account_id = k.account_id))"
#define LATE_IN_ORG " AND k.account_id IN (SELECT m.account_id FROM tco.member m WHERE m.org_id = $2)"
#define LATE_BOUNDS "SELECT min(k.period_start), count(*) FROM tco.late_line k" LATE_COND
/* the same queue rows with their lines, in settlement order, locked */
#define LATE_SELECT \
	"SELECT k.line_id, b.account_id, b.product_code, b.period_start, (b.list_amount * 1000000)::int8 " \
	"FROM tco.late_line k JOIN tco.bill_line b ON b.line_id = k.line_id AND b.period_start = k.period_start" \
	LATE_COND
#define LATE_ORDER " ORDER BY b.account_id, b.product_code, b.period_start, k.line_id FOR UPDATE OF k"
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
	/* what savings plans paid in the hours of late lines, in the packs of their cycles */
	[PLAN_PLAN_USES_LATE] = {"SELECT u.benefit_id, b.period_start, u.a "
		"FROM tco.settled_pack sp CROSS JOIN LATERAL unnest(sp.use_benefit_ids, sp.use_line_ids, sp.use_amounts) "
		"AS u(benefit_id, line_id, a) JOIN tco.benefit p ON p.benefit_id = u.benefit_id "
		"JOIN tco.bill_line b ON b.line_id = u.line_id "
		"WHERE sp.cycle OPERATOR(tco.>=) tco.cycle_of($1) AND sp.cycle OPERATOR(tco.<) $3::tco.billing_cycle "
		"AND p.kind = 'savings_plan' AND b.period_start >= $1 AND b.period_start < $2",
	3, {TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID}},
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
	/* 1.4 on (src/sql/41_late.sql) */
	[PLAN_BILL_COMMITMENTS] = {"SELECT tco.bill_commitments($1::tco.billing_cycle, $2)", 2, {TEXTOID, INT8OID}},
	[PLAN_LATE_EXISTS] = {"SELECT 1 FROM tco.late_line WHERE charge_cycle OPERATOR(tco.=) $1::tco.billing_cycle LIMIT 1",
	1, {TEXTOID}},
	[PLAN_LINES_NOLATE] = {LINES_SELECT LINES_NOT_LATE, 2, {TIMESTAMPTZOID, TIMESTAMPTZOID}, CURSOR_OPT_CUSTOM_PLAN},
	[PLAN_LINES_ORG_NOLATE] = {LINES_SELECT LINES_IN_ORG LINES_NOT_LATE, 3, {TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID},
	CURSOR_OPT_CUSTOM_PLAN},
	[PLAN_LATE_BOUNDS] = {LATE_BOUNDS, 1, {TEXTOID}},
	[PLAN_LATE_BOUNDS_ORG] = {LATE_BOUNDS LATE_IN_ORG, 2, {TEXTOID, INT8OID}},
	[PLAN_LATE_LINES] = {LATE_SELECT LATE_ORDER, 1, {TEXTOID}},
	[PLAN_LATE_LINES_ORG] = {LATE_SELECT LATE_IN_ORG LATE_ORDER, 2, {TEXTOID, INT8OID}},
	[PLAN_MARK_LATE] = {"UPDATE tco.late_line k SET statement_id = u.s, billing_cycle = $3::tco.billing_cycle, "
		"billed_at = now() FROM unnest($1::int8[], $2::int8[]) AS u(l, s) WHERE k.line_id = u.l",
	3, {INT8ARRAYOID, INT8ARRAYOID, TEXTOID}},
	[PLAN_CORRECTS] = {"SELECT b.corrects_line_id FROM tco.bill_line b WHERE b.line_id = $1 AND b.period_start = $2",
	2, {INT8OID, TIMESTAMPTZOID}},
	[PLAN_CORRECTION_HISTORY] = {"SELECT due, benefit_ids, amounts FROM tco.correction_history($1, $2, $3, $4)",
	4, {INT8OID, INT8OID, TEXTOID, TEXTOID}},
	[PLAN_RETURN_BENEFIT] = {"SELECT tco.return_benefit($1, $2, $3, $4, $5, $6, $7)",
	7, {INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID}},
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

SPIPlanPtr
settle_get_plan(SettlePlan which)
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

int
settle_exec_plan(SettlePlan which, Datum *values, const char *nulls, bool read_only, long count)
{
	int			ret = SPI_execute_plan(settle_get_plan(which), values, nulls, read_only, count);

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
int64
settle_get_int8(HeapTuple tuple, TupleDesc desc, int col, bool *isnull)
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

TimestampTz
settle_get_tstz(HeapTuple tuple, TupleDesc desc, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(tuple, desc, col, isnull);

	if (SPI_gettypeid(desc, col) != TIMESTAMPTZOID)
		column_type_error(desc, col, "timestamp with time zone");
	return *isnull ? 0 : DatumGetTimestampTz(d);
}

bool
settle_get_bool(HeapTuple tuple, TupleDesc desc, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(tuple, desc, col, isnull);

	if (SPI_gettypeid(desc, col) != BOOLOID)
		column_type_error(desc, col, "boolean");
	return *isnull ? false : DatumGetBool(d);
}

/* A text column: its Datum (undefined when *isnull). */
Datum
settle_get_text(HeapTuple tuple, TupleDesc desc, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(tuple, desc, col, isnull);

	if (SPI_gettypeid(desc, col) != TEXTOID)
		column_type_error(desc, col, "text");
	return d;
}

void
settle_add_money(int64 *sum, int64 amount)
{
	if (pg_add_s64_overflow(*sum, amount, sum))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("settlement amount out of range"),
				 errdetail("A sum exceeds %lld in micro-units.", (long long) PG_INT64_MAX),
				 errhint("Check the list amounts of the cycle's bill lines.")));
}

void
settle_text_to_code(Datum d, char *buf)
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
 * Consumer accounts, and the run
 */

AccountInfo *
settle_lookup_account(SettleRun *run, int64 account_id)
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
		settle_exec_plan(PLAN_ACCOUNT, &arg, NULL, true, 1);
		tt = SPI_tuptable;
		if (SPI_processed == 1)
		{
			info->entity_id = settle_get_int8(tt->vals[0], tt->tupdesc, 1, &isnull);
			info->verified = settle_get_bool(tt->vals[0], tt->tupdesc, 2, &isnull);
			info->org_id = settle_get_int8(tt->vals[0], tt->tupdesc, 3, &isnull);
			info->admin_account_id = settle_get_int8(tt->vals[0], tt->tupdesc, 4, &isnull);
		}
		SPI_freetuptable(tt);
	}
	return info;
}

/*
 * What settle_lookup_account would load, for many accounts with one query
 * per ACCOUNTS_PER_QUERY of them: the distinct consumers of the cycle, noted
 * while its lines were put in order (settle_read.c), or of a slice of lines
 * about to be settled.  Accounts loaded already are skipped.
 */
#define ACCOUNTS_PER_QUERY 10000

static void preload_accounts(SettleRun *run, const int64 *ids, Size n);

void
settle_preload_accounts(SettleRun *run, const int64 *ids, Size n)
{
	int64	   *todo = palloc(sizeof(int64) * Max(n, 1));
	Size		ntodo = 0;
	Size		i;

	for (i = 0; i < n; i++)
		if (hash_search(run->accounts, &ids[i], HASH_FIND, NULL) == NULL)
			todo[ntodo++] = ids[i];
	for (i = 0; i < ntodo; i += ACCOUNTS_PER_QUERY)
		preload_accounts(run, todo + i, Min((Size) ACCOUNTS_PER_QUERY, ntodo - i));
	pfree(todo);
}

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
	settle_exec_plan(PLAN_ACCOUNTS, &arg, NULL, true, 0);
	tt = SPI_tuptable;
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		bool		found;
		int64		id = settle_get_int8(tt->vals[i], tt->tupdesc, 5, &isnull);
		AccountInfo *info = hash_search(run->accounts, &id, HASH_ENTER, &found);

		info->entity_id = settle_get_int8(tt->vals[i], tt->tupdesc, 1, &isnull);
		info->verified = settle_get_bool(tt->vals[i], tt->tupdesc, 2, &isnull);
		info->org_id = settle_get_int8(tt->vals[i], tt->tupdesc, 3, &isnull);
		info->admin_account_id = settle_get_int8(tt->vals[i], tt->tupdesc, 4, &isnull);
	}
	SPI_freetuptable(tt);
	pfree(DatumGetPointer(arg));
}

/*
 * Settle lines that come in settlement order, a slice of the run's lines:
 * first load, with one query, the consumers among them not loaded yet
 * (settle_lookup_account would load each with a query of its own).
 */
void
settle_lines(SettleRun *run, const LineRec *recs, Size n, bool skip_settled)
{
	int64	   *ids = palloc(sizeof(int64) * Max(n, 1));
	Size		nids = 0;
	Size		i;

	for (i = 0; i < n; i++)
		if (i == 0 || recs[i].account_id != recs[i - 1].account_id)
			ids[nids++] = recs[i].account_id;
	settle_preload_accounts(run, ids, nids);
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
				settle_load_settled_ids(run, r->account_id, run->products[r->product]);
			}
			if (settle_is_settled_id(run, r->line_id))
			{
				run->nskipped++;
				continue;
			}
		}
		settle_line(run, r->line_id, r->account_id, run->products[r->product], r->period_start, r->list);
		if (run->batch.n >= FETCH_BATCH)
			settle_batch_flush(run);
		run->nlines++;
		if (progress_every > 0 && run->nlines % progress_every == 0)
			ereport(NOTICE,
					(errmsg("settling cycle %s: " UINT64_FORMAT " bill lines done",
							run->cycle_text, run->nlines)));
	}
}

/*
 * A run: what pricing needs (statements, products, discounts, benefits),
 * the cycle's lines read once and settled in order (settle_read_lines),
 * then the statements, statement lines and benefit balances.
 */
static void
settle_run(SettleRun *run, TimestampTz start, TimestampTz end, bool skip_settled)
{
	HASHCTL		ctl;
	MemoryContext statements_ctx;
	MemoryContext oldcxt;

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
	run->prev_valid = false;
	run->ctx.valid = false;
	run->last_sum = NULL;		/* the hashes they point into are new */
	run->last_payer = NULL;
	INSTR_TIME_SET_CURRENT(run->phase_mark);
	settle_load_statements(run);
	settle_load_products(run);
	/* late lines to bill: discounts and benefits from their periods on */
	settle_late_bounds(run);
	settle_load_discounts(run, run->load_start, end);
	settle_load_benefits(run, start, end);

	oldcxt = MemoryContextSwitchTo(run->run_ctx);
	settle_batch_start(run);
	MemoryContextSwitchTo(oldcxt);

	phase_done(run, PHASE_SETUP);

	/* late lines of earlier cycles first, then the cycle's own (settle_late.c) */
	settle_late_lines(run);
	run->line_cycle = run->cycle;
	if (run->late_schema)
	{
		Datum		arg = CStringGetTextDatum(run->cycle_text);

		settle_exec_plan(PLAN_LATE_EXISTS, &arg, NULL, false, 1);
		run->exclude_late = SPI_processed > 0;
		SPI_freetuptable(SPI_tuptable);
	}
	settle_read_lines(run, start, end, skip_settled);
	settle_batch_flush(run);

	if (run->packs != NULL)
		tco_bulk_end(run->packs);
	run->packs = NULL;
	phase_done(run, PHASE_PACKS);
	statements_ctx = AllocSetContextCreate(run->run_ctx, "tco settle statements", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(statements_ctx);
	settle_write_statements(run);
	if (run->v10)
		settle_write_uses_v10(run);
	settle_mark_late_lines(run);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(statements_ctx);
	phase_done(run, PHASE_STATEMENTS);
	{
		StringInfoData buf;
		int			p;

		initStringInfo(&buf);
		for (p = 0; p < NUM_PHASES; p++)
			appendStringInfo(&buf, "%s%s %.1f ms", p > 0 ? ", " : "", phase_names[p], run->phase_ms[p]);
		if (run->read_workers > 0)
			appendStringInfo(&buf, "; one read shared with %d parallel workers", run->read_workers);
		else
			appendStringInfoString(&buf, "; one read");
		if (run->spilled_runs > 0)
			elog(DEBUG1, "tco settle_cycle %s: " UINT64_FORMAT " lines; %s, %d sorted runs spilled to temporary files (" INT64_FORMAT " kB, %d intermediate merges), merged",
				 run->cycle_text, run->nlines, buf.data, run->spilled_runs, run->spilled_kb,
				 run->intermediate_merges);
		else
			elog(DEBUG1, "tco settle_cycle %s: " UINT64_FORMAT " lines; %s, sorted in memory (%s)",
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
	if (run->nreceived + run->nlate_read != run->nlines + run->nskipped)
		ereport(ERROR,
				(errcode(ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION),
				 errmsg("settlement of billing cycle %s would leave bill lines unsettled", run->cycle_text),
				 errdetail("The scope has " UINT64_FORMAT " bill lines and " UINT64_FORMAT " late lines; " UINT64_FORMAT " were settled and "
						   UINT64_FORMAT " were already settled.", run->nreceived, run->nlate_read, run->nlines, run->nskipped),
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
	run.start = start;
	run.end = end;
	run.line_cycle = run.cycle;
	/* 1.0 mode (see the head of this file): the installed schema has no packs */
	run.v10 = !OidIsValid(tco_relid("settled_pack"));
	/* late lines, corrections and commitment fees: from 1.4 on (41_late.sql) */
	run.late_schema = !run.v10 && OidIsValid(tco_relid("late_line"));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (run.has_org)
	{
		args[0] = Int64GetDatum(run.org_id);
		settle_exec_plan(PLAN_ORG_EXISTS, args, NULL, true, 1);
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
	settle_exec_plan(PLAN_SETTLED, args, nulls, false, 1);
	if (SPI_processed == 0)
	{
		bool		skip_settled;

		SPI_freetuptable(SPI_tuptable);
		/* settling everything after some organizations: skip their lines */
		settle_exec_plan(PLAN_PARTLY_SETTLED, args, NULL, false, 1);
		skip_settled = SPI_processed > 0;
		SPI_freetuptable(SPI_tuptable);

		/* the commitment fees of the scope, once per benefit and cycle */
		if (run.late_schema)
		{
			settle_exec_plan(PLAN_BILL_COMMITMENTS, args, nulls, false, 0);
			SPI_freetuptable(SPI_tuptable);
			/* read-only queries of the run see the lines (and products) just made */
			CommandCounterIncrement();
			UpdateActiveSnapshotCommandId();
		}

		run.run_ctx = AllocSetContextCreate(caller_ctx, "tco settle", ALLOCSET_DEFAULT_SIZES);
		settle_run(&run, start, end, skip_settled);
		MemoryContextDelete(run.run_ctx);
		check_all_settled(&run);

		settle_exec_plan(PLAN_MARK_SETTLED, args, nulls, false, 0);
	}
	else
		SPI_freetuptable(SPI_tuptable);

	if (run.result_known)
	{
		/* what PLAN_RESULT would read back: every statement of the scope is the run's */
		MemoryContext old = MemoryContextSwitchTo(caller_ctx);

		result[0] = Int64GetDatum(run.result_statements);
		result[1] = Int64GetDatum(run.result_lines);
		result[2] = NumericGetDatum(int64_div_fast_to_numeric(run.result_list_cents, 2));
		result[3] = NumericGetDatum(int64_div_fast_to_numeric(run.result_due_cents, 2));
		MemoryContextSwitchTo(old);
	}
	else
	{
		settle_exec_plan(PLAN_RESULT, args, nulls, false, 1);
		tt = SPI_tuptable;
		for (i = 0; i < 4; i++)
		{
			Datum		d = SPI_getbinval(tt->vals[0], tt->tupdesc, i + 1, &result_null[i]);
			MemoryContext old = MemoryContextSwitchTo(caller_ctx);

			result[i] = result_null[i] ? (Datum) 0 : datumCopy(d, i < 2, i < 2 ? 8 : -1);
			MemoryContextSwitchTo(old);
		}
	}
	PopActiveSnapshot();
	SPI_finish();
	tco_restore_search_path(nestlevel);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, result_null)));
}
