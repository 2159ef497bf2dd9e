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
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Oid			user = GetUserId();
	Oid			admin;
	Oid			relid;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("tco.writer_guard() must be called as a statement-level trigger")));
	relid = RelationGetRelid(trigdata->tg_relation);
	if (superuser_arg(user))
		return PointerGetDatum(NULL);
#if PG_VERSION_NUM >= 160000
	if (object_ownercheck(RelationRelationId, relid, user))
		return PointerGetDatum(NULL);
#else
	if (pg_class_ownercheck(relid, user))
		return PointerGetDatum(NULL);
#endif
	admin = get_role_oid("tco_admin", true);
	if (OidIsValid(admin) && has_privs_of_role(user, admin))
		return PointerGetDatum(NULL);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to write table tco.%s",
					RelationGetRelationName(trigdata->tg_relation)),
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
PG_FUNCTION_INFO_V1(tco_restoring);

Datum
tco_restoring(PG_FUNCTION_ARGS)
{
	const char *rs = GetConfigOption("row_security", true, false);
	Oid			outer = GetOuterUserId();

	if (rs == NULL || strcmp(rs, "off") != 0)
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(superuser_arg(outer) || has_bypassrls_privilege(outer));
}
