/*
 * src/ingest.c
 *
 * The statement trigger of tco.bill_line, tco.bill_line_changed() (README
 * "Ingest"; src/sql/48_bill_line_triggers.sql creates it for INSERT, UPDATE
 * and DELETE, with transition tables new_lines and old_lines).
 *
 * A stream of bill lines is many small statements from many sessions, so
 * this runs once per statement and does only what the statement's rows can
 * need, in C where a query is not needed:
 *   1. R14: the cycles of the rows are computed here; only those that have
 *      ended can be being settled, or settled: for them the settlement lock
 *      is taken shared (src/guard.c, ascending) and the settled-cycle queries
 *      run: a line written into a cycle settled for its scope is queued as
 *      a late line (tco.late_line, src/sql/41_late.sql), a line on a
 *      statement cannot change (only paid_at and tags), a queued late line
 *      may be changed or deleted (a schema before 1.4 refuses all three,
 *      TC008).  Lines of the current cycle take no lock and run no query.
 *   2. line_id unique across partitions: the statement's ids go into
 *      tco.bill_line_id through its unique index (a duplicate, or an id
 *      moved onto one in use, is 23505), deleted ids leave it; and the
 *      identity sequence is moved past explicit ids (98_dump.sql's rule).
 *   3. The payer of this backend sees its own new lines from its next call
 *      (tco_payer_lines_written); nothing is sent to other backends: the
 *      frozen-product flags of the payer cache are kept for one snapshot only
 *      (src/payer.c), so no cache and no cached plan anywhere is invalidated.
 *   4. Spending alerts, when a spending threshold is enabled (known from a
 *      per-backend cache, invalidated by tco.alert_threshold), after 3.
 * It runs with the extension owner's rights (SECURITY DEFINER, search_path
 * pinned): the helper table and the settlement tables are written or read
 * by tco, not by the writer.  A restore (tco.restoring()) takes rows as
 * stored history: nothing is checked or derived.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "storage/proc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "bulk.h"
#include "payer.h"
#include "tco.h"

/* Explicit ids above this do not move the identity sequence (98_dump.sql). */
#define ID_SYNC_MAX		INT64CONST(4611686018427387903)
#define MAX_CYCLES		64

typedef enum IngestPlan
{
	PLAN_KEYS_DELETE,
	PLAN_R14_INSERT,
	PLAN_R14_UPDATE_SETTLED,
	PLAN_R14_UPDATE_MOVED,
	PLAN_R14_DELETE,
	PLAN_ALERTS_ENABLED,
	PLAN_ALERTS,
	/* with late lines (1.4 on: tco.late_line exists) */
	PLAN_LATE_INSERT,
	PLAN_LATE_LOCK,
	PLAN_LATE_UPDATE_SETTLED,
	PLAN_LATE_UPDATE,
	PLAN_LATE_DELETE_CHECK,
	PLAN_LATE_DELETE,
	PLAN_LATE_ALERTS,
	NUM_INGEST_PLANS
} IngestPlan;

/* A line's cycle is settled for its scope: the whole cycle, or its organization. */
#define SETTLED_FOR_SCOPE(l) \
	"EXISTS (SELECT 1 FROM tco.settled_cycle s WHERE s.cycle OPERATOR(tco.=) tco.cycle_of(" l ".period_start) " \
	"AND (s.org_id IS NULL OR s.org_id OPERATOR(pg_catalog.=) " \
	"(SELECT m.org_id FROM tco.member m WHERE m.account_id OPERATOR(pg_catalog.=) " l ".account_id)))"
#define ON_A_STATEMENT(o) \
	"EXISTS (SELECT 1 FROM tco.settled_pack sp WHERE sp.account_id OPERATOR(pg_catalog.=) " o ".account_id " \
	"AND sp.product_code OPERATOR(pg_catalog.=) " o ".product_code " \
	"AND sp.cycle OPERATOR(tco.=) tco.cycle_of(" o ".period_start) " \
	"AND " o ".line_id OPERATOR(pg_catalog.=) ANY (sp.line_ids))"
/* The spending alerts of the lines' payers; c gives (account_id, cycle, pcycle). */
#define ALERTS_FROM(c_cte) \
	"WITH c AS (" c_cte "), " \
	"     p AS (SELECT c.cycle, c.account_id AS payer FROM c " \
	"           UNION " \
	"           SELECT c.cycle, t.management_account_id FROM c " \
	"           JOIN tco.trusteeship t ON t.member_account_id OPERATOR(pg_catalog.=) c.account_id " \
	"            AND pg_catalog.tstzrange(t.established_at, t.ended_at) OPERATOR(pg_catalog.&&) " \
	"                pg_catalog.tstzrange(pg_catalog.lower(tco.cycle_range(c.pcycle)) OPERATOR(pg_catalog.-) interval '1 month', " \
	"                                     pg_catalog.upper(tco.cycle_range(c.pcycle)))), " \
	"     q AS (SELECT p.cycle, pg_catalog.array_agg(DISTINCT p.payer) AS payers FROM p " \
	"           WHERE EXISTS (SELECT 1 FROM tco.alert_threshold t " \
	"                         WHERE t.account_id OPERATOR(pg_catalog.=) p.payer AND t.enabled " \
	"                           AND t.kind OPERATOR(pg_catalog.=) ANY ('{cycle_spending,cycle_forecast}'::pg_catalog.text[])) " \
	"           GROUP BY p.cycle) " \
	"SELECT tco.fire_alerts(q.payers, q.cycle, false, true) FROM q ORDER BY q.cycle"


/*
 * The queries, on the transition tables.  R14's raise tco.r14_settled_error
 * (40_settlement.sql) for the first offending line.
 */
static const char *const ingest_sql[NUM_INGEST_PLANS] = {
	[PLAN_KEYS_DELETE] =
	"DELETE FROM tco.bill_line_id k USING old_lines o "
	"WHERE k.line_id OPERATOR(pg_catalog.=) o.line_id AND k.period_start OPERATOR(pg_catalog.=) o.period_start",
	[PLAN_R14_INSERT] =
	"SELECT tco.r14_settled_error(x.cycle, pg_catalog.format('bill line %s cannot be added to it', x.line_id)) "
	"FROM (SELECT l.line_id, s.cycle FROM new_lines l "
	"      LEFT JOIN tco.member m ON m.account_id OPERATOR(pg_catalog.=) l.account_id "
	"      JOIN tco.settled_cycle s ON s.cycle OPERATOR(tco.=) tco.cycle_of(l.period_start) "
	"                              AND (s.org_id IS NULL OR s.org_id OPERATOR(pg_catalog.=) m.org_id) "
	"      ORDER BY l.line_id LIMIT 1) x",
	/* lines already on a statement: only paid_at may change */
	[PLAN_R14_UPDATE_SETTLED] =
	"SELECT tco.r14_settled_error(x.cycle, pg_catalog.format('bill line %s is settled and only its paid_at can be set', x.line_id)) "
	"FROM (SELECT o.line_id, tco.cycle_of(o.period_start) AS cycle "
	"      FROM old_lines o JOIN new_lines l USING (line_id) "
	"      JOIN tco.settled_pack sp ON sp.account_id OPERATOR(pg_catalog.=) o.account_id "
	"                              AND sp.product_code OPERATOR(pg_catalog.=) o.product_code "
	"                              AND sp.cycle OPERATOR(tco.=) tco.cycle_of(o.period_start) "
	"                              AND o.line_id OPERATOR(pg_catalog.=) ANY (sp.line_ids) "
	"      WHERE (o.account_id, o.product_code, o.charge_type, o.period_start, o.period_end, o.list_amount, o.issued_at) "
	"            IS DISTINCT FROM "
	"            (l.account_id, l.product_code, l.charge_type, l.period_start, l.period_end, l.list_amount, l.issued_at) "
	"      ORDER BY o.line_id LIMIT 1) x",
	/* nor move into a settled cycle */
	[PLAN_R14_UPDATE_MOVED] =
	"SELECT tco.r14_settled_error(x.cycle, pg_catalog.format('bill line %s cannot be moved into it', x.line_id)) "
	"FROM (SELECT l.line_id, s.cycle FROM new_lines l JOIN old_lines o USING (line_id) "
	"      LEFT JOIN tco.member m ON m.account_id OPERATOR(pg_catalog.=) l.account_id "
	"      JOIN tco.settled_cycle s ON s.cycle OPERATOR(tco.=) tco.cycle_of(l.period_start) "
	"                              AND (s.org_id IS NULL OR s.org_id OPERATOR(pg_catalog.=) m.org_id) "
	"      WHERE (o.account_id, o.product_code, o.period_start, o.list_amount) "
	"            IS DISTINCT FROM (l.account_id, l.product_code, l.period_start, l.list_amount) "
	"      ORDER BY l.line_id LIMIT 1) x",
	[PLAN_R14_DELETE] =
	"SELECT tco.r14_settled_error(x.cycle, pg_catalog.format('bill line %s cannot be deleted', x.line_id)) "
	"FROM (SELECT o.line_id, tco.cycle_of(o.period_start) AS cycle FROM old_lines o "
	"      LEFT JOIN tco.member m ON m.account_id OPERATOR(pg_catalog.=) o.account_id "
	"      WHERE EXISTS (SELECT 1 FROM tco.settled_pack sp "
	"                    WHERE sp.account_id OPERATOR(pg_catalog.=) o.account_id "
	"                      AND sp.product_code OPERATOR(pg_catalog.=) o.product_code "
	"                      AND sp.cycle OPERATOR(tco.=) tco.cycle_of(o.period_start) "
	"                      AND o.line_id OPERATOR(pg_catalog.=) ANY (sp.line_ids)) "
	"         OR EXISTS (SELECT 1 FROM tco.settled_cycle s WHERE s.cycle OPERATOR(tco.=) tco.cycle_of(o.period_start) "
	"                    AND (s.org_id IS NULL OR s.org_id OPERATOR(pg_catalog.=) m.org_id)) "
	"      ORDER BY o.line_id LIMIT 1) x",
	[PLAN_ALERTS_ENABLED] =
	"SELECT 1 FROM tco.alert_threshold t "
	"WHERE t.enabled AND t.kind OPERATOR(pg_catalog.=) ANY ('{cycle_spending,cycle_forecast}'::pg_catalog.text[]) LIMIT 1",
	/* the lines' accounts and the managers that may pay them, per cycle */
	[PLAN_ALERTS] = ALERTS_FROM("SELECT DISTINCT l.account_id, tco.cycle_of(l.period_start) AS cycle, "
								"tco.cycle_of(l.period_start) AS pcycle FROM new_lines l"),

	/*
	 * Late lines (src/sql/41_late.sql): a line written into a cycle settled
	 * for its scope is queued, not refused.
	 */
	[PLAN_LATE_INSERT] =
	"INSERT INTO tco.late_line (line_id, account_id, period_start, charge_cycle) "
	"SELECT l.line_id, l.account_id, l.period_start, tco.cycle_of(l.period_start) FROM new_lines l "
	"WHERE " SETTLED_FOR_SCOPE("l"),
	/*
	 * The queue rows of the changed lines, locked: a settlement billing them
	 * (it locks them too) is waited for, and what it billed is then seen
	 * settled by the checks that follow.
	 */
	[PLAN_LATE_LOCK] =
	"SELECT 1 FROM tco.late_line k WHERE k.line_id OPERATOR(pg_catalog.=) ANY "
	"(SELECT o.line_id FROM old_lines o) FOR UPDATE OF k",
	/* lines on a statement (settled or billed late): only paid_at and tags may change */
	[PLAN_LATE_UPDATE_SETTLED] =
	"SELECT tco.r14_settled_error(x.cycle, pg_catalog.format('bill line %s is settled and only its paid_at can be set', x.line_id)) "
	"FROM (SELECT o.line_id, tco.cycle_of(o.period_start) AS cycle "
	"      FROM old_lines o JOIN new_lines l USING (line_id) "
	"      WHERE (o.account_id, o.product_code, o.charge_type, o.period_start, o.period_end, o.list_amount, o.issued_at, "
	"             o.corrects_line_id, o.correction_reason) "
	"            IS DISTINCT FROM "
	"            (l.account_id, l.product_code, l.charge_type, l.period_start, l.period_end, l.list_amount, l.issued_at, "
	"             l.corrects_line_id, l.correction_reason) "
	"        AND " ON_A_STATEMENT("o")
	"      ORDER BY o.line_id LIMIT 1) x",
	/*
	 * A changed line that was queued, or that moved into a settled cycle,
	 * is queued (again) with its new period; one that left a settled cycle
	 * leaves the queue.
	 */
	[PLAN_LATE_UPDATE] =
	"WITH d AS (DELETE FROM tco.late_line k USING old_lines o "
	"           WHERE k.line_id OPERATOR(pg_catalog.=) o.line_id AND k.statement_id IS NULL RETURNING k.line_id) "
	"INSERT INTO tco.late_line (line_id, account_id, period_start, charge_cycle) "
	"SELECT l.line_id, l.account_id, l.period_start, tco.cycle_of(l.period_start) "
	"FROM new_lines l JOIN old_lines o USING (line_id) "
	"WHERE " SETTLED_FOR_SCOPE("l")
	"  AND (l.line_id OPERATOR(pg_catalog.=) ANY (SELECT d.line_id FROM d) "
	"       OR (o.account_id, o.product_code, o.period_start) IS DISTINCT FROM (l.account_id, l.product_code, l.period_start))",
	/* a line on a statement, or of a settled cycle and not a queued late line */
	[PLAN_LATE_DELETE_CHECK] =
	"SELECT tco.r14_settled_error(x.cycle, pg_catalog.format('bill line %s cannot be deleted', x.line_id)) "
	"FROM (SELECT o.line_id, tco.cycle_of(o.period_start) AS cycle FROM old_lines o "
	"      WHERE " ON_A_STATEMENT("o")
	"         OR (" SETTLED_FOR_SCOPE("o")
	"             AND NOT EXISTS (SELECT 1 FROM tco.late_line k WHERE k.line_id OPERATOR(pg_catalog.=) o.line_id "
	"                             AND k.statement_id IS NULL)) "
	"      ORDER BY o.line_id LIMIT 1) x",
	[PLAN_LATE_DELETE] =
	"DELETE FROM tco.late_line k USING old_lines o "
	"WHERE k.line_id OPERATOR(pg_catalog.=) o.line_id AND k.statement_id IS NULL",
	/* a late line counts in the cycle that will bill it (tco.late_billing_cycle) */
	[PLAN_LATE_ALERTS] = ALERTS_FROM("SELECT DISTINCT l.account_id, "
									 "CASE WHEN EXISTS (SELECT 1 FROM tco.late_line k WHERE k.line_id OPERATOR(pg_catalog.=) l.line_id) "
									 "THEN tco.late_billing_cycle(l.account_id, tco.cycle_of(l.period_start)) "
									 "ELSE tco.cycle_of(l.period_start) END AS cycle, "
									 "tco.cycle_of(l.period_start) AS pcycle FROM new_lines l"),
};

/*
 * Plans kept across calls, as PL/pgSQL keeps those of a trigger function:
 * they name the transition tables, which each call registers anew
 * (SPI_register_trigger_data); the plan cache re-plans them when a table
 * they read changes.
 */
static SPIPlanPtr ingest_plans[NUM_INGEST_PLANS];

static void
run_plan(IngestPlan which, bool read_only)
{
	int			ret;

	if (ingest_plans[which] == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(ingest_sql[which], 0, NULL);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for the bill-line trigger: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		ingest_plans[which] = plan;
	}
	ret = SPI_execute_plan(ingest_plans[which], NULL, NULL, read_only, 0);
	if (ret < 0)
		elog(ERROR, "the bill-line trigger's query failed: %s", SPI_result_code_string(ret));
}

/*
 * Whether any spending threshold is enabled: asked by every statement of
 * bill lines, so cached as cache.c says (tco.alert_threshold carries the
 * statement trigger that invalidates it).
 */
typedef struct AlertsCache
{
	bool		valid;
	bool		enabled;
	uint64		generation;
	Oid			relid;
	TcoCacheScope scope;
	LocalTransactionId lxid;
	uint64		epoch;
} AlertsCache;

static AlertsCache alerts_cache;

static void
alerts_cache_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == alerts_cache.relid)
	{
		alerts_cache.valid = false;
		alerts_cache.generation++;
	}
}

void
tco_ingest_init(void)
{
	CacheRegisterRelcacheCallback(alerts_cache_invalidate, (Datum) 0);
}

static bool
spending_alerts_enabled(void)
{
	uint64		generation;
	TcoCacheScope scope;

	tco_accept_invalidations();
	if (alerts_cache.valid &&
		tco_cache_scope_valid(alerts_cache.scope, alerts_cache.lxid, alerts_cache.epoch))
		return alerts_cache.enabled;
	generation = alerts_cache.generation;
	alerts_cache.relid = tco_relid("alert_threshold");
	scope = tco_push_cache_snapshot();
	run_plan(PLAN_ALERTS_ENABLED, true);
	PopActiveSnapshot();
	alerts_cache.enabled = SPI_processed > 0;
	alerts_cache.scope = scope;
	alerts_cache.lxid = MyProc->lxid;
	alerts_cache.epoch = tco_snapshot_epoch();
	/* an invalidation while reading: what was read serves this call only */
	alerts_cache.valid = (generation == alerts_cache.generation);
	return alerts_cache.enabled;
}

/* Where the trigger reads the rows of the transition tables. */
typedef struct LineColumns
{
	AttrNumber	line_id;
	AttrNumber	period_start;
} LineColumns;

static AttrNumber
line_column(TupleDesc desc, const char *name, Oid type)
{
	int			n = SPI_fnumber(desc, name);

	if (n <= 0 || TupleDescAttr(desc, n - 1)->atttypid != type)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("tco.bill_line has no column %s of type %s", name, format_type_be(type)),
				 errhint("Reinstall the extension: tco's table was altered (README \"Limits\").")));
	return (AttrNumber) n;
}

/* A (line_id, period_start) pair: the key of tco.bill_line_id. */
typedef struct LineKey
{
	int64		line_id;
	TimestampTz period_start;
} LineKey;

/* What one transition table holds, as far as the trigger needs it. */
typedef struct LinesSeen
{
	uint64		n;
	int64		max_id;			/* largest id <= ID_SYNC_MAX, or 0 */
	int			ncycles;
	BillingCycle cycles[MAX_CYCLES];	/* distinct, in the order met */
	TimestampTz cycle_end[MAX_CYCLES];
	bool		many_cycles;	/* more than MAX_CYCLES: all taken as ended */
	HTAB	   *keys;			/* the (line_id, period_start) pairs, if asked */
} LinesSeen;

static void
scan_lines(Tuplestorestate *ts, TupleDesc desc, const LineColumns *cols, pg_tz *tz,
		   LinesSeen *seen, bool want_keys, HTAB *absent_from, bool *absent)
{
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	TimestampTz cs = 0,
				ce = 0;
	int			ptr;

	memset(seen, 0, sizeof(*seen));
	if (want_keys)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(LineKey);
		ctl.entrysize = sizeof(LineKey);
		ctl.hcxt = CurrentMemoryContext;
		seen->keys = hash_create("tco bill line keys", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	/* a read pointer of our own: the queries below read the table too */
	ptr = tuplestore_alloc_read_pointer(ts, EXEC_FLAG_REWIND);
	tuplestore_select_read_pointer(ts, ptr);
	tuplestore_rescan(ts);
	while (tuplestore_gettupleslot(ts, true, false, slot))
	{
		bool		isnull;
		int64		id = DatumGetInt64(slot_getattr(slot, cols->line_id, &isnull));
		TimestampTz start = DatumGetTimestampTz(slot_getattr(slot, cols->period_start, &isnull));

		seen->n++;
		if (id <= ID_SYNC_MAX && id > seen->max_id)
			seen->max_id = id;
		if (seen->n == 1 || start < cs || start >= ce)
		{
			TimestampTz s = 0,
						e = 0;
			int			k;

			/* period_start is finite (a CHECK): outside years 1-9999, no cycle */
			if (!tco_cycle_bounds(start, tz, &s, &e))
				(void) tco_cycle_of(start, tz);	/* raises the out-of-range error */
			cs = s;
			ce = e;
			for (k = 0; k < seen->ncycles; k++)
				if (seen->cycle_end[k] == e)
					break;
			if (k == seen->ncycles)
			{
				if (seen->ncycles < MAX_CYCLES)
				{
					seen->cycles[seen->ncycles] = tco_cycle_of(start, tz);
					seen->cycle_end[seen->ncycles++] = e;
				}
				else
					seen->many_cycles = true;
			}
		}
		if (want_keys || absent_from != NULL)
		{
			LineKey		key;

			key.line_id = id;
			key.period_start = start;
			if (want_keys)
				(void) hash_search(seen->keys, &key, HASH_ENTER, NULL);
			if (absent_from != NULL && !*absent &&
				hash_search(absent_from, &key, HASH_FIND, NULL) == NULL)
				*absent = true;
		}
		if ((seen->n & 0xFFF) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	tuplestore_select_read_pointer(ts, 0);
	ExecDropSingleTupleTableSlot(slot);
}

static int
cycle_cmp(const void *a, const void *b)
{
	BillingCycle x = *(const BillingCycle *) a;
	BillingCycle y = *(const BillingCycle *) b;

	return (x > y) - (x < y);
}

/*
 * Take the settlement lock shared on the cycles that have ended, ascending;
 * true if there was one (then the settled-cycle checks must run).
 */
static bool
lock_ended_cycles(const LinesSeen *a, const LinesSeen *b)
{
	BillingCycle ended[2 * MAX_CYCLES];
	int			n = 0;
	int			i;
	TimestampTz now = GetCurrentTimestamp();
	const LinesSeen *sets[2] = {a, b};
	bool		many = false;
	int			s;

	for (s = 0; s < 2; s++)
	{
		if (sets[s] == NULL)
			continue;
		/* more cycles than kept: locked from the lines (lock_all_ended_cycles) */
		if (sets[s]->many_cycles)
			many = true;
		for (i = 0; i < sets[s]->ncycles; i++)
			if (sets[s]->cycle_end[i] <= now)
				ended[n++] = sets[s]->cycles[i];
	}
	qsort(ended, n, sizeof(BillingCycle), cycle_cmp);
	for (i = 0; i < n; i++)
		if (i == 0 || ended[i] != ended[i - 1])
			tco_settlement_lock(ended[i], ShareLock);
	return n > 0 || many;
}

/*
 * With more than MAX_CYCLES cycles in one statement, every cycle of its
 * lines that has ended is locked, from the lines themselves (a bulk load of
 * history: rare, and then one query more is nothing).
 */
static void
lock_all_ended_cycles(const char *table)
{
	char		sql[256];
	uint64		i;

	snprintf(sql, sizeof(sql),
			 "SELECT DISTINCT tco.cycle_of(l.period_start)::pg_catalog.text FROM %s l "
			 "WHERE l.period_start OPERATOR(pg_catalog.<) pg_catalog.clock_timestamp() ORDER BY 1", table);
	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the cycles of the bill lines");
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *text = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		int			y,
					m;

		if (text != NULL && sscanf(text, "%d-%d", &y, &m) == 2)
		{
			BillingCycle c = (BillingCycle) (y * 12 + m - 1);

			if (tco_next_cycle_start(c, tco_billing_tz()) <= GetCurrentTimestamp())
				tco_settlement_lock(c, ShareLock);
		}
	}
}

/*
 * The statement's ids into tco.bill_line_id, straight to its heap and its
 * unique index (src/bulk.c, as COPY writes): an id in use, by a line of any
 * cycle or twice in the statement, raises 23505 there, and an insert of the
 * same id by a concurrent transaction waits for it, as a unique index does.
 */
static void
insert_keys(Tuplestorestate *ts, TupleDesc desc, const LineColumns *cols)
{
	static const BulkColumn key_columns[] = {
		{"line_id", INT8OID, -1},
		{"period_start", TIMESTAMPTZOID, -1},
	};
	BulkWriter *w = tco_bulk_begin("bill_line_id", lengthof(key_columns), key_columns);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	int			ptr = tuplestore_alloc_read_pointer(ts, EXEC_FLAG_REWIND);

	tuplestore_select_read_pointer(ts, ptr);
	tuplestore_rescan(ts);
	while (tuplestore_gettupleslot(ts, true, false, slot))
	{
		Datum		values[2];
		bool		isnull;

		values[0] = slot_getattr(slot, cols->line_id, &isnull);
		values[1] = slot_getattr(slot, cols->period_start, &isnull);
		tco_bulk_insert(w, values, NULL);
	}
	tuplestore_select_read_pointer(ts, 0);
	ExecDropSingleTupleTableSlot(slot);
	tco_bulk_end(w);
}

/* Move the identity sequence of tco.bill_line past an explicit id. */
static void
sync_identity(int64 top)
{
	Oid			seq;
	int64		last = 0;

	if (top <= 0)
		return;
	seq = tco_relid("bill_line_line_id_seq");
	if (!OidIsValid(seq))
		return;
	{
		LOCAL_FCINFO(call, 1);
		Datum		result;

		InitFunctionCallInfoData(*call, NULL, 1, InvalidOid, NULL, NULL);
		call->args[0].value = ObjectIdGetDatum(seq);
		call->args[0].isnull = false;
		result = pg_sequence_last_value(call);
		if (!call->isnull)
			last = DatumGetInt64(result);
	}
	if (top > last)
		DirectFunctionCall2(setval_oid, ObjectIdGetDatum(seq), Int64GetDatum(top));
}

/*
 * Late lines (src/sql/41_late.sql) exist from version 1.4 of the schema on;
 * asked only where the answer is used (lines of ended cycles, alerts), not
 * for every statement of the current cycle.
 */
static bool
schema_has_late_lines(void)
{
	return OidIsValid(tco_relid("late_line"));
}

PG_FUNCTION_INFO_V1(tco_bill_line_changed);

Datum
tco_bill_line_changed(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	LineColumns cols;
	pg_tz	   *tz;
	LinesSeen	newseen,
				oldseen;
	bool		is_insert,
				is_update,
				is_delete;
	bool		moved = false;
	bool		late;
	int			nestlevel;


	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) ||
		!TRIGGER_FIRED_AFTER(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tco.bill_line_changed() must be called as an AFTER statement trigger")));
	is_insert = TRIGGER_FIRED_BY_INSERT(td->tg_event);
	is_update = TRIGGER_FIRED_BY_UPDATE(td->tg_event);
	is_delete = TRIGGER_FIRED_BY_DELETE(td->tg_event);
	if ((is_insert || is_update) && td->tg_newtable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tco.bill_line_changed() needs the transition table NEW TABLE AS new_lines")));
	if ((is_update || is_delete) && td->tg_oldtable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tco.bill_line_changed() needs the transition table OLD TABLE AS old_lines")));

	/* stored history being restored (README "Backup and restore") */
	if (tco_is_restoring())
		return PointerGetDatum(NULL);

	/* 3. this backend's payer reads its own lines from its next call */
	tco_payer_lines_written();

	desc = RelationGetDescr(td->tg_relation);
	cols.line_id = line_column(desc, "line_id", INT8OID);
	cols.period_start = line_column(desc, "period_start", TIMESTAMPTZOID);
	tz = tco_billing_tz();

	memset(&newseen, 0, sizeof(newseen));
	memset(&oldseen, 0, sizeof(oldseen));
	if (is_update)
	{
		/* ids moved (line_id or period_start changed): keys to rewrite */
		scan_lines(td->tg_oldtable, desc, &cols, tz, &oldseen, true, NULL, NULL);
		scan_lines(td->tg_newtable, desc, &cols, tz, &newseen, false, oldseen.keys, &moved);
	}
	else if (is_insert)
		scan_lines(td->tg_newtable, desc, &cols, tz, &newseen, false, NULL, NULL);
	else
		scan_lines(td->tg_oldtable, desc, &cols, tz, &oldseen, false, NULL, NULL);
	if (newseen.n == 0 && oldseen.n == 0)
		return PointerGetDatum(NULL);

	nestlevel = tco_pin_search_path();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_register_trigger_data(td) != SPI_OK_TD_REGISTER)
		elog(ERROR, "SPI_register_trigger_data failed");

	/* 1. R14, for the cycles that have ended */
	if (lock_ended_cycles(is_delete ? NULL : &newseen, is_insert ? NULL : &oldseen))
	{
		late = schema_has_late_lines();
		if (newseen.many_cycles)
			lock_all_ended_cycles("new_lines");
		if (oldseen.many_cycles)
			lock_all_ended_cycles("old_lines");
		if (!late)
		{
			/* a schema before 1.4: lines of a settled cycle are refused */
			if (is_insert)
				run_plan(PLAN_R14_INSERT, false);
			else if (is_update)
			{
				run_plan(PLAN_R14_UPDATE_SETTLED, false);
				run_plan(PLAN_R14_UPDATE_MOVED, false);
			}
			else
				run_plan(PLAN_R14_DELETE, false);
		}
		else if (is_insert)
			run_plan(PLAN_LATE_INSERT, false);
		else if (is_update)
		{
			run_plan(PLAN_LATE_LOCK, false);
			run_plan(PLAN_LATE_UPDATE_SETTLED, false);
			run_plan(PLAN_LATE_UPDATE, false);
		}
		else
		{
			run_plan(PLAN_LATE_LOCK, false);
			run_plan(PLAN_LATE_DELETE_CHECK, false);
			run_plan(PLAN_LATE_DELETE, false);
		}
	}

	/* 2. ids unique across partitions; the identity sequence */
	if (is_delete || moved)
		run_plan(PLAN_KEYS_DELETE, false);
	if (is_insert || moved)
	{
		insert_keys(td->tg_newtable, desc, &cols);
		sync_identity(newseen.max_id);
	}

	/* 4. spending alerts */
	if (!is_delete)
	{
		if (spending_alerts_enabled())
			run_plan(schema_has_late_lines() ? PLAN_LATE_ALERTS : PLAN_ALERTS, false);
	}

	SPI_finish();
	tco_restore_search_path(nestlevel);
	return PointerGetDatum(NULL);
}
