/*
 * src/bulk.c
 *
 * Bulk writes of settlement results into tco's own tables.
 *
 * settle_cycle writes thousands of statements, statement lines and packs per
 * run.  Through INSERT, every row fires the foreign-key triggers of its table
 * (one query per row and key: a third of the statement writing time) and
 * pays the executor's per-statement costs.  The rows written here are built
 * by settle_cycle from rows it has read under its lock, and their references
 * are checked and locked in bulk by the caller (one query per referenced
 * table, see settle.c), so they go straight to the heap, with a bulk-insert
 * buffer strategy, and to every index of the table, as COPY does.  NOT NULL
 * and CHECK constraints are still checked row by row, and unique indexes
 * still refuse duplicates.  Row triggers do not fire: the tables written
 * here have none on INSERT, and README says so for anyone adding one.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "executor/executor.h"
#include "nodes/execnodes.h"
#include "utils/memutils.h"
#include "utils/rel.h"

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
};

/*
 * Open tco.<relname> for bulk writing.  columns names every column of the
 * table, in the order tco_bulk_insert's values come in: a column added to
 * the table later must be added here too, so none is left NULL by mistake.
 */
BulkWriter *
tco_bulk_begin(const char *relname, int ncolumns, const char *const *columns)
{
	BulkWriter *w = palloc0(sizeof(BulkWriter));
	Oid			relid = tco_relid(relname);
	TupleDesc	desc;
	int			nlive = 0;
	int			i;

	if (!OidIsValid(relid))
		elog(ERROR, "table tco.%s does not exist", relname);
	w->rel = table_open(relid, RowExclusiveLock);
	desc = RelationGetDescr(w->rel);
	for (i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped)
			nlive++;
	if (nlive != ncolumns)
		elog(ERROR, "tco.%s has %d columns, settlement writes %d", relname, nlive, ncolumns);
	w->ncolumns = ncolumns;
	w->attnums = palloc(sizeof(AttrNumber) * ncolumns);
	for (i = 0; i < ncolumns; i++)
	{
		int			a;

		for (a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);

			if (!att->attisdropped && strcmp(NameStr(att->attname), columns[i]) == 0)
				break;
		}
		if (a == desc->natts)
			elog(ERROR, "column \"%s\" of tco.%s does not exist", columns[i], relname);
		w->attnums[i] = a + 1;
	}

	w->estate = CreateExecutorState();
	w->rri = makeNode(ResultRelInfo);
	/* range table index 0: no range table, constraint errors still name the row */
	InitResultRelInfo(w->rri, w->rel, 0, NULL, 0);
	ExecOpenIndices(w->rri, false);
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
	ExecStoreVirtualTuple(slot);

	oldcxt = MemoryContextSwitchTo(GetPerTupleMemoryContext(w->estate));
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
		/* only deferrable unique indexes ask for a recheck; tco has none */
		if (recheck != NIL)
			elog(ERROR, "tco.%s has a deferred unique index", RelationGetRelationName(w->rel));
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
	pfree(w);
}
