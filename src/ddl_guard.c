/*
 * src/ddl_guard.c
 *
 * tco.ddl_guard(): the event trigger (ddl_command_start, ALTER TABLE) that
 * refuses the DDL on tco's own tables that the C code cannot follow.
 *
 * The C code reads and writes tco's tables with fixed column types
 * (settle.c reads bill_line.list_amount as numeric, bulk.c writes statements,
 * statement lines and packs straight to the heap), so a column that changes
 * type, disappears, is renamed, loses its NOT NULL or its identity, a table
 * that is renamed or moved, and a deferrable constraint (rows written in
 * bulk are not queued for its deferred check) are refused here, with a
 * hint.  Everything else (indexes, triggers, policies, ADD COLUMN, also on
 * the tables written in bulk, which give a new column its default, immediate
 * constraints, storage parameters...) is allowed; README ("Limits") lists
 * it.  The C code checks the shapes it reads and writes anyway (defence in
 * depth: the guard can be disabled by a superuser).
 *
 * The extension's own install and upgrade scripts alter its tables: while
 * CREATE/ALTER EXTENSION runs (creating_extension) the guard does nothing.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "utils/lsyscache.h"

#include "tco.h"

static void
refuse(Oid relid, const char *what, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("tco does not support %s on its table tco.%s", what, get_rel_name(relid)),
			 errdetail("tco's C code reads and writes this table with its installed definition."),
			 errhint("%s See README, \"Limits\", for the DDL tco supports.", hint)));
}

/* The relation named by rv if it is a table of schema tco, else InvalidOid. */
static Oid
tco_table(RangeVar *rv)
{
	Oid			nsp = get_namespace_oid("tco", true);
	Oid			relid;

	if (rv == NULL || !OidIsValid(nsp))
		return InvalidOid;
	relid = RangeVarGetRelid(rv, NoLock, true);
	if (!OidIsValid(relid) || get_rel_namespace(relid) != nsp)
		return InvalidOid;
	return relid;
}

/*
 * A DEFERRABLE table constraint has the flag set; in a column definition the
 * raw parse tree has it as a constraint attribute node of its own.
 */
static bool
deferrable_constraint(Node *def)
{
	Constraint *c;

	if (def == NULL || !IsA(def, Constraint))
		return false;
	c = (Constraint *) def;
	return c->deferrable || c->contype == CONSTR_ATTR_DEFERRABLE;
}

/*
 * ATTACH or DETACH PARTITION on tco.bill_line (README "Storage: bill lines
 * partitioned by cycle").  tco.bill_line_cycle is the truth about the
 * partitions: tco's own functions record the new state there first, then
 * attach or detach.  A partition detached, or a table attached, behind its
 * back would make settlement and every reader silently miss lines or read
 * them twice, so the DDL must agree with the record (a restore, which
 * attaches the partitions before it loads the record, is let through).
 */
/*
 * What tco.bill_line_cycle records of tco.<relname>: -1 nothing, 0 an
 * attached partition, 1 a detached one.
 */
static int
recorded_partition(const char *relname)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	int			result = -1;
	int			ret;

	args[0] = CStringGetTextDatum(relname);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute_with_args("SELECT detached FROM tco.bill_line_cycle "
								"WHERE relname OPERATOR(pg_catalog.=) $1::pg_catalog.name",
								1, argtypes, args, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read tco.bill_line_cycle: %s", SPI_result_code_string(ret));
	if (SPI_processed > 0)
	{
		bool		isnull;
		bool		detached = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

		result = (!isnull && detached) ? 1 : 0;
	}
	SPI_finish();
	return result;
}

/*
 * DROP TABLE of an attached partition of tco.bill_line would delete a
 * cycle's lines, settled ones included, behind R14 and the record; a
 * detached (archived) one may be dropped, and tco.attach_cycle then says it
 * is missing.
 */
static void
check_drop_table(DropStmt *stmt)
{
	ListCell   *lc;

	if (stmt->removeType != OBJECT_TABLE || tco_is_restoring() ||
		!OidIsValid(tco_relid("bill_line_cycle")))
		return;
	foreach(lc, stmt->objects)
	{
		RangeVar   *rv = makeRangeVarFromNameList((List *) lfirst(lc));
		Oid			relid = tco_table(rv);

		if (OidIsValid(relid) && recorded_partition(get_rel_name(relid)) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("tco does not support DROP TABLE of tco.%s, an attached partition of tco.bill_line",
							get_rel_name(relid)),
					 errdetail("It holds the bill lines of a cycle; dropping it would delete them behind R14 and tco.bill_line_cycle."),
					 errhint("Detach the cycle first with tco.detach_cycle (a settled cycle), then archive or drop its table.")));
	}
}

static void
check_partition_cmd(Oid relid, AlterTableCmd *cmd)
{
	PartitionCmd *pc = (PartitionCmd *) cmd->def;
	bool		attach = (cmd->subtype == AT_AttachPartition);
	bool		agrees;

	if (relid != tco_relid("bill_line") || pc == NULL || !IsA(pc, PartitionCmd) || pc->name == NULL)
		return;
	if (tco_is_restoring() || !OidIsValid(tco_relid("bill_line_cycle")))
		return;
	/* only a table of schema tco named in the record can be a partition */
	if (pc->name->schemaname == NULL || strcmp(pc->name->schemaname, "tco") != 0)
		agrees = false;
	else
	{
		int			recorded = recorded_partition(pc->name->relname);

		agrees = attach ? (recorded == 0) : (recorded == 1);
	}
	if (!agrees)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("tco does not support %s on its table tco.bill_line outside tco.%s",
						attach ? "ATTACH PARTITION" : "DETACH PARTITION",
						attach ? "attach_cycle" : "detach_cycle"),
				 errdetail("tco.bill_line_cycle records the partitions of tco.bill_line; a partition attached or detached behind it would make settlement miss lines or read them twice."),
				 errhint("Use tco.prepare_cycles, tco.detach_cycle and tco.attach_cycle (README, \"Storage: bill lines partitioned by cycle\").")));
}

static void
check_alter_table(AlterTableStmt *stmt)
{
	Oid			relid = tco_table(stmt->relation);
	ListCell   *lc;

	if (!OidIsValid(relid))
		return;
	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		switch (cmd->subtype)
		{
			case AT_AlterColumnType:
				refuse(relid, "ALTER COLUMN ... TYPE",
					   "Keep the column's type; add a new column or a view for another representation.");
				break;
			case AT_DropColumn:
			case AT_DropColumnRecurse:
				refuse(relid, "DROP COLUMN", "Keep the column.");
				break;
			case AT_DropNotNull:
				refuse(relid, "ALTER COLUMN ... DROP NOT NULL",
					   "Keep the column NOT NULL: tco's code reads it as never NULL.");
				break;
			case AT_DropIdentity:
				refuse(relid, "ALTER COLUMN ... DROP IDENTITY",
					   "Keep the identity: tco numbers its rows with its sequence.");
				break;
			case AT_AddColumn:
			case AT_AddColumnRecurse:
				/* allowed on every table: bulk.c gives a new column its default */
				if (cmd->def != NULL && IsA(cmd->def, ColumnDef))
				{
					ListCell   *c;

					foreach(c, ((ColumnDef *) cmd->def)->constraints)
						if (deferrable_constraint(lfirst(c)))
							refuse(relid, "a DEFERRABLE constraint",
								   "Declare the constraint NOT DEFERRABLE.");
				}
				break;
			case AT_AddConstraint:
			case AT_AddConstraintRecurse:
			case AT_AlterConstraint:
				if (deferrable_constraint(cmd->def))
					refuse(relid, "a DEFERRABLE constraint", "Declare the constraint NOT DEFERRABLE.");
				break;
			case AT_AttachPartition:
			case AT_DetachPartition:
				check_partition_cmd(relid, cmd);
				break;
			default:
				break;
		}
	}
}

PG_FUNCTION_INFO_V1(tco_ddl_guard);

Datum
tco_ddl_guard(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;
	Node	   *parsetree;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tco.ddl_guard() must be called as an event trigger")));
	if (creating_extension)
		PG_RETURN_VOID();
	trigdata = (EventTriggerData *) fcinfo->context;
	parsetree = trigdata->parsetree;
	if (parsetree == NULL)
		PG_RETURN_VOID();

	switch (nodeTag(parsetree))
	{
		case T_AlterTableStmt:
			check_alter_table((AlterTableStmt *) parsetree);
			break;
		case T_DropStmt:
			check_drop_table((DropStmt *) parsetree);
			break;
		case T_RenameStmt:
			{
				RenameStmt *stmt = (RenameStmt *) parsetree;
				Oid			relid = tco_table(stmt->relation);

				if (!OidIsValid(relid))
					break;
				if (stmt->renameType == OBJECT_COLUMN)
					refuse(relid, "RENAME COLUMN", "Keep the column's name; a view can show it under another one.");
				else if (stmt->renameType == OBJECT_TABLE)
					refuse(relid, "RENAME", "Keep the table's name; a view can show it under another one.");
				break;
			}
		case T_AlterObjectSchemaStmt:
			{
				AlterObjectSchemaStmt *stmt = (AlterObjectSchemaStmt *) parsetree;
				Oid			relid = tco_table(stmt->relation);

				if (OidIsValid(relid) && stmt->objectType == OBJECT_TABLE)
					refuse(relid, "SET SCHEMA", "Keep the table in schema tco.");
				break;
			}
		default:
			break;
	}
	PG_RETURN_VOID();
}
