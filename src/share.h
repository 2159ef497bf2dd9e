/*
 * src/share.h
 *
 * Sharing resolution for settlement (R9): which accounts a pool voucher,
 * resource pack or savings plan is shared with, per line start (share.c).
 */
#ifndef TCO_SHARE_H
#define TCO_SHARE_H

#include "postgres.h"

#include "datatype/timestamp.h"

/* Account account_id may use benefit benefit_id for lines starting in [from, until). */
typedef struct ShareGrant
{
	int64		account_id;
	int64		benefit_id;
	TimestampTz from;
	TimestampTz until;			/* DT_NOEND while the share is active */
} ShareGrant;

typedef struct ShareMap ShareMap;

extern ShareMap *tco_share_load(MemoryContext cxt, TimestampTz start, TimestampTz end,
								bool has_org, int64 org_id);
extern const ShareGrant *tco_share_grants(const ShareMap *map, int64 account_id, int *count);

#endif							/* TCO_SHARE_H */
