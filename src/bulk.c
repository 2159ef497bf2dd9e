/*
 * src/bulk.c
 *
 * Bulk writes of settlement results into tco's own tables: tco.statement,
 * tco.statement_line and tco.settled_pack (README "Settlement speed", "Bulk
 * writes", and "Limits").
 *
 * settle_cycle writes thousands of statements, statement lines and packs per
 * run.  Through INSERT, every row fires the foreign-key triggers of its table
 * (one query per row and key: a third of the statement writing time) and
 * pays the executor's per-statement costs.  The rows written here are built
 * by settle_cycle from rows it has read under its lock, and their references
 * are checked and locked in bulk by the caller (one query per referenced
 * table, see settle_write.c), so they go straight to the heap, as COPY FROM
 * does.  Compared with COPY FROM, exactly:
 *
 * - Done as COPY does: heap insert with a bulk-insert buffer strategy
 *   (WAL-logged as usual); every index of the table is updated, partial and
 *   expression indexes included; unique indexes refuse duplicates and
 *   exclusion constraints are checked (ExecInsertIndexTuples); NOT NULL and
 *   CHECK constraints are checked per row (ExecConstraints); a column the
 *   caller does not write (one a DBA added) gets its default, evaluated per
 *   row (a volatile default such as nextval() or clock_timestamp() once per
 *   row), or NULL without one, and a stored generated column is computed.
 * - Skipped, unlike COPY: foreign keys (their triggers do not fire: the
 *   caller checks and locks the referenced rows FOR KEY SHARE, as they
 *   would); row and statement triggers on INSERT (tco has none on these
 *   tables but its writer guard, a statement trigger settle_cycle passes
 *   anyway; a row trigger a DBA adds does not fire for these rows);
 *   row-level security (COPY FROM refuses a table with RLS enabled; here the
 *   policies are not applied, as for the table owner settle_cycle writes
 *   as); privileges (COPY checks INSERT privilege on the table; here the
 *   caller's right to settle is its EXECUTE privilege on tco.settle_cycle);
 *   partition routing (these tables are not partitioned: refused).
 * - Refused with a clear error (0A000, naming the table and what is wrong,
 *   with a hint), never written wrong: a column settlement writes that is
 *   missing, renamed or of another type, a partitioned table, and a
 *   deferrable unique or exclusion constraint (rows written here are not
 *   queued for its deferred check).  A column added without a default but
 *   NOT NULL fails on its first row with the usual 23502.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "catalog/pg_class.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "nodes/execnodes.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "bulk.h"
#include "tco.h"

struct BulkWriter
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	BulkInsertState bistate;
	int			ncolumns;
	AttrNumber *attnums;		/* value i goes to attribute attnums[i] */
	/* the other columns (added by a DBA): their defaults, NULL for none */
	int			nextra;
	AttrNumber *extra_attnums;
	ExprState **extra_defaults;
	bool		has_generated;	/* stored generated columns to compute */
};

static void
unsupported_shape(const char *relname, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("tco.%s was altered in a way settlement does not support", relname),
			 errdetail("%s", detail),
			 errhint("tco.settle_cycle writes tco.statement, tco.statement_line and tco.settled_pack in bulk: "
					 "restore their definitions (README, \"Limits\", lists the supported DDL).")));
}

/*
 * Open tco.<relname> for bulk writing.  columns names the columns settlement
 * writes, in the order tco_bulk_insert's values come in, with the type each
 * value has (InvalidOid: tco.billing_cycle) and the typmod the column must
 * have (-1: any).  Rows are formed from these values as they are, so a
 * column of another type would be read back as garbage, or crash: the shape
 * is checked first.  Any other column of the table (one added after the
 * install) gets its default on every row, as INSERT and COPY give it, or
 * NULL if it has none; a stored generated column is computed.
 */
BulkWriter *
tco_bulk_begin(const char *relname, int ncolumns, const BulkColumn *columns)
{
	BulkWriter *w = palloc0(sizeof(BulkWriter));
	Oid			relid = tco_relid(relname);
	TupleDesc	desc;
	int			i;
	Oid			cycle_type = InvalidOid;

	if (!OidIsValid(relid))
		elog(ERROR, "table tco.%s does not exist", relname);
	w->rel = table_open(relid, RowExclusiveLock);
	desc = RelationGetDescr(w->rel);
	if (w->rel->rd_rel->relkind != RELKIND_RELATION)
		unsupported_shape(relname, "It is not a plain table (a partitioned table, say); settlement writes its rows straight into the table's heap.");
	w->ncolumns = ncolumns;
	w->attnums = palloc(sizeof(AttrNumber) * ncolumns);
	for (i = 0; i < ncolumns; i++)
	{
		int			a;
		Form_pg_attribute att = NULL;
		Oid			type = columns[i].type;

		for (a = 0; a < desc->natts; a++)
		{
			att = TupleDescAttr(desc, a);
			if (!att->attisdropped && strcmp(NameStr(att->attname), columns[i].name) == 0)
				break;
		}
		if (a == desc->natts)
			unsupported_shape(relname, psprintf("Its column \"%s\" does not exist.", columns[i].name));
		if (!OidIsValid(type))
		{
			if (!OidIsValid(cycle_type))
				cycle_type = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
											 CStringGetDatum("billing_cycle"),
											 ObjectIdGetDatum(RelationGetNamespace(w->rel)));
			type = cycle_type;
		}
		if (att->atttypid != type || (columns[i].typmod != -1 && att->atttypmod != columns[i].typmod))
			unsupported_shape(relname, psprintf("Its column \"%s\" is %s; settlement writes %s.",
												columns[i].name,
												format_type_with_typemod(att->atttypid, att->atttypmod),
												format_type_with_typemod(type, columns[i].typmod)));
		if (att->attgenerated)
			unsupported_shape(relname, psprintf("Its column \"%s\" is a generated column; settlement writes it.",
												columns[i].name));
		w->attnums[i] = a + 1;
	}

	w->estate = CreateExecutorState();
	w->rri = makeNode(ResultRelInfo);
	/* range table index 0: no range table, constraint errors still name the row */
	InitResultRelInfo(w->rri, w->rel, 0, NULL, 0);

	/* the columns settlement does not write: their defaults, as COPY FROM does */
	w->extra_attnums = palloc(sizeof(AttrNumber) * desc->natts);
	w->extra_defaults = palloc(sizeof(ExprState *) * desc->natts);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		written = false;
		int			c;

		if (att->attisdropped)
			continue;
		for (c = 0; c < ncolumns && !written; c++)
			written = w->attnums[c] == i + 1;
		if (written)
			continue;
		if (att->attgenerated == ATTRIBUTE_GENERATED_STORED)
		{
			w->has_generated = true;
			continue;
		}
		{
			Expr	   *def = (Expr *) build_column_default(w->rel, i + 1);

			w->extra_attnums[w->nextra] = i + 1;
			w->extra_defaults[w->nextra] = def != NULL ? ExecPrepareExpr(def, w->estate) : NULL;
			w->nextra++;
		}
	}
	ExecOpenIndices(w->rri, false);
	for (i = 0; i < w->rri->ri_NumIndices; i++)
	{
		Relation	index = w->rri->ri_IndexRelationDescs[i];

		if (index != NULL && !index->rd_index->indimmediate)
			unsupported_shape(relname, psprintf("Its index \"%s\" is a deferrable unique or exclusion constraint.",
												RelationGetRelationName(index)));
	}
	w->slot = table_slot_create(w->rel, NULL);
	w->bistate = GetBulkInsertState();
	return w;
}

/* Memory for building one row's values: reset by each tco_bulk_insert. */
MemoryContext
tco_bulk_row_context(BulkWriter *w)
{
	return GetPerTupleMemoryContext(w->estate);
}

void
tco_bulk_insert(BulkWriter *w, const Datum *values, const bool *isnull)
{
	TupleTableSlot *slot = w->slot;
	MemoryContext oldcxt;
	List	   *recheck;
	int			i;

	ExecClearTuple(slot);
	for (i = 0; i < slot->tts_tupleDescriptor->natts; i++)
	{
		slot->tts_values[i] = (Datum) 0;
		slot->tts_isnull[i] = true;
	}
	for (i = 0; i < w->ncolumns; i++)
	{
		slot->tts_values[w->attnums[i] - 1] = values[i];
		slot->tts_isnull[w->attnums[i] - 1] = isnull != NULL && isnull[i];
	}

	oldcxt = MemoryContextSwitchTo(GetPerTupleMemoryContext(w->estate));
	for (i = 0; i < w->nextra; i++)
	{
		AttrNumber	a = w->extra_attnums[i];

		if (w->extra_defaults[i] != NULL)
			slot->tts_values[a - 1] = ExecEvalExpr(w->extra_defaults[i], GetPerTupleExprContext(w->estate),
												   &slot->tts_isnull[a - 1]);
	}
	ExecStoreVirtualTuple(slot);
	if (w->has_generated)
		ExecComputeStoredGenerated(w->rri, w->estate, slot, CMD_INSERT);
	if (w->rel->rd_att->constr)
		ExecConstraints(w->rri, slot, w->estate);
	table_tuple_insert(w->rel, slot, GetCurrentCommandId(true), 0, w->bistate);
	if (w->rri->ri_NumIndices > 0)
	{
#if PG_VERSION_NUM >= 160000
		recheck = ExecInsertIndexTuples(w->rri, slot, w->estate, false, false, NULL, NIL, false);
#else
		recheck = ExecInsertIndexTuples(w->rri, slot, w->estate, false, false, NULL, NIL);
#endif
		/* only deferrable unique indexes ask for a recheck: refused by tco_bulk_begin */
		if (recheck != NIL)
			unsupported_shape(RelationGetRelationName(w->rel), "It has a deferrable unique index.");
	}
	MemoryContextSwitchTo(oldcxt);
	ExecClearTuple(slot);
	ResetPerTupleExprContext(w->estate);
}

void
tco_bulk_end(BulkWriter *w)
{
	FreeBulkInsertState(w->bistate);
	table_finish_bulk_insert(w->rel, 0);
	ExecDropSingleTupleTableSlot(w->slot);
	ExecCloseIndices(w->rri);
	FreeExecutorState(w->estate);
	table_close(w->rel, NoLock);
	pfree(w->attnums);
	pfree(w->extra_attnums);
	pfree(w->extra_defaults);
	pfree(w);
}
