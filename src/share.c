/*
 * src/share.c
 *
 * Sharing resolution for settlement (R9, README "Sharing"): for the cycle
 * being settled, which accounts may use which pool vouchers, resource packs
 * and savings plans through tco.benefit_share, and for which line starts.
 *
 * A share names one account or one unit.  A unit share covers every member
 * placed in the unit or in any unit below it.  Both are resolved once per
 * settlement run against the unit tree and the memberships as they are when
 * the cycle is settled (so units created or moved in later count, and an
 * account share covers its account only while it is a member of the share's
 * organization); the share's own window [shared_at, revoked_at) is compared
 * with each line's period start by the caller.  The owner of a pack or plan
 * needs no share: settle.c finds owned ones through the owner index.
 *
 * The result lives in the caller's memory context (the settlement run) and
 * is bounded by shares x members they cover, not by the number of lines.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "share.h"
#include "tco.h"

typedef struct AccountGrants
{
	int64		account_id;		/* hash key */
	int			first;
	int			count;
} AccountGrants;

struct ShareMap
{
	HTAB	   *accounts;
	ShareGrant *grants;
	int			ngrants;
};

#define SHARE_GRANTS_SQL \
	"WITH RECURSIVE s AS (" \
	"  SELECT share_id, benefit_id, org_id, account_id, unit_id, shared_at, " \
	"         coalesce(revoked_at, 'infinity'::timestamptz) AS until " \
	"  FROM tco.benefit_share " \
	"  WHERE shared_at < $2 AND (revoked_at IS NULL OR revoked_at > $1) " \
	"    AND ($3::int8 IS NULL OR org_id = $3)), " \
	"sub (share_id, unit_id) AS (" \
	"  SELECT share_id, unit_id FROM s WHERE unit_id IS NOT NULL " \
	"  UNION " \
	"  SELECT sub.share_id, u.unit_id FROM sub JOIN tco.org_unit u ON u.parent_unit_id = sub.unit_id) " \
	"SELECT m.account_id, s.benefit_id, s.shared_at, s.until " \
	"FROM s JOIN tco.member m ON m.account_id = s.account_id AND m.org_id = s.org_id " \
	"UNION ALL " \
	"SELECT m.account_id, s.benefit_id, s.shared_at, s.until " \
	"FROM sub JOIN s USING (share_id) JOIN tco.member m ON m.unit_id = sub.unit_id AND m.org_id = s.org_id " \
	"ORDER BY 1, 2, 3"

/* Kept for the life of the backend; re-analyzed by the plan cache when needed. */
static SPIPlanPtr share_plan = NULL;

ShareMap *
tco_share_load(MemoryContext cxt, TimestampTz start, TimestampTz end, bool has_org, int64 org_id)
{
	Oid			argtypes[3] = {TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID};
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	ShareMap   *map;
	HASHCTL		ctl;
	SPITupleTable *tt;
	uint64		i;
	int			ret;

	if (share_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(SHARE_GRANTS_SQL, 3, argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for the share query: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		share_plan = plan;
	}
	args[0] = TimestampTzGetDatum(start);
	args[1] = TimestampTzGetDatum(end);
	args[2] = Int64GetDatum(org_id);
	if (!has_org)
		nulls[2] = 'n';
	/* read_only = false: a fresh snapshot, after the benefits were locked */
	ret = SPI_execute_plan(share_plan, args, nulls, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "share query failed: %s", SPI_result_code_string(ret));

	map = MemoryContextAllocZero(cxt, sizeof(ShareMap));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(AccountGrants);
	ctl.hcxt = cxt;
	map->accounts = hash_create("tco settle shares", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	tt = SPI_tuptable;
	{
		static const Oid types[4] = {INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID};

		tco_check_columns(tt->tupdesc, 4, types, "the benefit shares (tco.benefit_share)");
	}
	if (SPI_processed > (uint64) (MaxAllocHugeSize / sizeof(ShareGrant)) || SPI_processed > (uint64) INT_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many benefit shares to settle: " UINT64_FORMAT, SPI_processed)));
	map->ngrants = (int) SPI_processed;
	map->grants = MemoryContextAllocHuge(cxt, sizeof(ShareGrant) * Max(map->ngrants, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = tt->vals[i];
		ShareGrant *g = &map->grants[i];
		bool		isnull;
		bool		found;
		AccountGrants *ag;

		g->account_id = DatumGetInt64(SPI_getbinval(tup, tt->tupdesc, 1, &isnull));
		g->benefit_id = DatumGetInt64(SPI_getbinval(tup, tt->tupdesc, 2, &isnull));
		g->from = DatumGetTimestampTz(SPI_getbinval(tup, tt->tupdesc, 3, &isnull));
		g->until = DatumGetTimestampTz(SPI_getbinval(tup, tt->tupdesc, 4, &isnull));

		/* rows come sorted by account: each account's grants are one run */
		ag = hash_search(map->accounts, &g->account_id, HASH_ENTER, &found);
		if (!found)
		{
			ag->first = (int) i;
			ag->count = 0;
		}
		ag->count++;
	}
	SPI_freetuptable(tt);
	return map;
}

const ShareGrant *
tco_share_grants(const ShareMap *map, int64 account_id, int *count)
{
	AccountGrants *ag;

	*count = 0;
	if (map == NULL)
		return NULL;
	ag = hash_search(map->accounts, &account_id, HASH_FIND, NULL);
	if (ag == NULL)
		return NULL;
	*count = ag->count;
	return &map->grants[ag->first];
}
