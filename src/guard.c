/*
 * src/guard.c
 *
 * Three boundaries that SQL alone cannot draw (README "Security", "Backup
 * and restore"): the settlement lock, the writer guard, and restore mode
 * (tco.restoring(), at the end of this file).
 *
 * The settlement lock.  Settlements of a cycle serialize on a lock per cycle,
 * and every write of bill lines (or trusteeships) of that cycle takes the
 * same lock in share mode.  Releases up to 1.2 used an advisory lock, which
 * any role that can connect may take as well (pg_advisory_lock has no
 * privileges), and so block a cycle's settlement and its bill-line writes.
 * The lock here is a database-object lock whose class is tco.settled_cycle's
 * relation oid and whose object is the cycle: PostgreSQL itself only takes
 * object locks on catalog classes, and no SQL command lets a role name an
 * arbitrary one, so only tco's own code (and whoever may run it) can take it.
 * It is held to the end of the transaction and shows in pg_locks as an
 * "object" lock with classid = 'tco.settled_cycle'::regclass.
 *
 * The writer guard.  Only tco_admin writes tco's tables (README "Roles and
 * what each sees").  A role granted a write by mistake is refused by
 * row-level security, but only after BEFORE ROW triggers ran, and their
 * messages name the ids and amounts of other rows (another organization's
 * line, an account's organization).  A BEFORE statement trigger on every
 * table refuses such a role before any row trigger runs.
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "tco.h"

PG_FUNCTION_INFO_V1(tco_settlement_lock_shared);
PG_FUNCTION_INFO_V1(tco_writer_guard);

/* Take the settlement lock of a cycle in the given mode, to end of transaction. */
/*
 * The statement trigger's table, once checked that it is called as one;
 * *trusted: the current user is a superuser or owns the table.
 */
static Relation
guarded_table(FunctionCallInfo fcinfo, const char *fname, bool *trusted)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Oid			user = GetUserId();
	Oid			relid;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s must be called as a statement-level trigger", fname)));
	relid = RelationGetRelid(trigdata->tg_relation);
#if PG_VERSION_NUM >= 160000
	*trusted = superuser_arg(user) || object_ownercheck(RelationRelationId, relid, user);
#else
	*trusted = superuser_arg(user) || pg_class_ownercheck(relid, user);
#endif
	return trigdata->tg_relation;
}

void
tco_settlement_lock(BillingCycle cycle, LOCKMODE mode)
{
	Oid			classid = tco_relid("settled_cycle");

	if (!OidIsValid(classid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"tco.settled_cycle\" does not exist"),
				 errhint("Reinstall the extension: DROP EXTENSION tco; CREATE EXTENSION tco CASCADE.")));
	if (cycle < TCO_CYCLE_MIN || cycle > TCO_CYCLE_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("billing cycle out of range")));
	LockDatabaseObject(classid, (Oid) (cycle - TCO_CYCLE_MIN), 0, mode);

	/*
	 * A settlement also waits for every transaction that is writing bill
	 * lines right now.  Writers take the shared lock above only for cycles
	 * that have ended (48_bill_line_triggers.sql: a cycle that has not ended
	 * cannot be being settled, and the lock would be one more shared lock
	 * per ingest statement); a line of a cycle written just before it ended,
	 * by a transaction still open when its settlement begins, is thus waited
	 * for here and read by the settlement's snapshot, taken after this.
	 * Writers that come later find the cycle ended and take the lock.
	 */
	if (mode == ExclusiveLock)
	{
		Oid			lines = tco_relid("bill_line");

		if (OidIsValid(lines))
		{
			LOCKTAG		tag;

			/* ShareLock conflicts with the RowExclusiveLock of every writer */
			SET_LOCKTAG_RELATION(tag, MyDatabaseId, lines);
			WaitForLockers(tag, ShareLock, false);
		}
	}
}

/*
 * tco.settlement_lock_shared(cycle): the share mode taken by writes of bill
 * lines and trusteeships of a cycle; conflicts only with settle_cycle.
 */
Datum
tco_settlement_lock_shared(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cycle must not be NULL"),
				 errhint("Pass a billing cycle such as '2023-02'.")));
	tco_settlement_lock(PG_GETARG_BILLING_CYCLE(0), ShareLock);
	PG_RETURN_VOID();
}

/*
 * BEFORE INSERT OR UPDATE OR DELETE statement trigger on every table of
 * schema tco (created by 99_grants.sql).  Lets through superusers, the
 * table's owner and members of tco_admin; anyone else gets 42501 naming only
 * the table.  Writes made inside tco's SECURITY DEFINER functions run as the
 * extension owner and pass.
 */
Datum
tco_writer_guard(PG_FUNCTION_ARGS)
{
	Oid			user = GetUserId();
	Oid			admin;
	bool		trusted;
	Relation	rel = guarded_table(fcinfo, "tco.writer_guard()", &trusted);

	if (trusted)
		return PointerGetDatum(NULL);
	admin = get_role_oid("tco_admin", true);
	if (OidIsValid(admin) && has_privs_of_role(user, admin))
		return PointerGetDatum(NULL);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to write table tco.%s", RelationGetRelationName(rel)),
			 errdetail("Only members of tco_admin (and superusers) write tco's tables; role \"%s\" is not one.",
					   GetUserNameFromId(user, false)),
			 errhint("Call tco's functions as a member of tco_admin, or GRANT tco_admin to the role.")));
	return PointerGetDatum(NULL);	/* not reached */
}

/*
 * tco.restoring(): whether this statement is a restore of stored data
 * (README "Backup and restore").  pg_dump's output and pg_restore set
 * row_security = off, under which PostgreSQL refuses every query that
 * row-level security would filter, unless the role bypasses it: so only a
 * superuser or a role with BYPASSRLS can write tco's tables with it off.  For
 * such a role (the role of the session, after SET ROLE: not the owner of a
 * SECURITY DEFINER trigger), tco's triggers take rows as stored history:
 * they neither derive rows again (root units, history, alerts, ledger
 * balances) nor judge past actions against today's state (R5's balance at
 * association, an instant before the latest change, R14 on settled cycles).
 * Constraints, foreign keys and unique indexes still apply.
 */
/*
 * Whether rows are being restored as stored history (README "Backup and
 * restore"): row_security off, which pg_dump and pg_restore set, by a role
 * that bypasses row-level security.
 */
bool
tco_is_restoring(void)
{
	const char *rs = GetConfigOption("row_security", true, false);
	Oid			outer = GetOuterUserId();

	if (rs == NULL || strcmp(rs, "off") != 0)
		return false;
	return superuser_arg(outer) || has_bypassrls_privilege(outer);
}

PG_FUNCTION_INFO_V1(tco_restoring);

Datum
tco_restoring(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(tco_is_restoring());
}

PG_FUNCTION_INFO_V1(tco_storage_guard);

/*
 * BEFORE statement trigger on the partitions of tco.bill_line and its helper
 * tables (src/sql/36_partition.sql): writes come from tco's own functions
 * (the extension owner), a superuser or a restore; anyone else writes
 * through tco.bill_line, whose statement triggers check the rules a write
 * naming a partition would skip.
 */
Datum
tco_storage_guard(PG_FUNCTION_ARGS)
{
	bool		trusted;
	Relation	rel = guarded_table(fcinfo, "tco.bill_line_storage_guard()", &trusted);

	if (trusted || tco_is_restoring())
		return PointerGetDatum(NULL);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("tco.%s is written by tco only", RelationGetRelationName(rel)),
			 errdetail("The rules of bill lines are checked by the statement triggers of tco.bill_line, which a write naming a partition or a helper table would skip."),
			 errhint("Insert, update and delete bill lines through tco.bill_line (or tco.insert_bill_lines).")));
	return PointerGetDatum(NULL);	/* not reached */
}
