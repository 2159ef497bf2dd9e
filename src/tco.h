/*
 * src/tco.h
 *
 * Shared declarations of the tco extension: billing time (the billing_cycle
 * type and granularity boundaries in the billing time zone), the cached
 * installation configuration, and the per-backend caches.
 */
#ifndef TCO_H
#define TCO_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "storage/lock.h"
#include "datatype/timestamp.h"
#include "pgtime.h"
#include "storage/lockdefs.h"

/*
 * A billing cycle is a calendar month in the billing time zone, stored as the
 * number of months since year 0: year * 12 + (month - 1).  Years 1..9999.
 */
typedef int32 BillingCycle;

/*
 * Room for a product code and its terminating NUL in the C code's fixed-size
 * keys (payer.c, settlement): tco.product's CHECK allows 63 characters.
 */
#define PRODUCT_CODE_LEN	64

#define TCO_CYCLE_MIN	(1 * 12)
#define TCO_CYCLE_MAX	(9999 * 12 + 11)

#define DatumGetBillingCycle(X)		DatumGetInt32(X)
#define BillingCycleGetDatum(X)		Int32GetDatum(X)
#define PG_GETARG_BILLING_CYCLE(n)	DatumGetBillingCycle(PG_GETARG_DATUM(n))
#define PG_RETURN_BILLING_CYCLE(x)	return BillingCycleGetDatum(x)

/* Billing granularity of a product, in the order of the SQL enum tco.granularity. */
typedef enum TcoGranularity
{
	TCO_GRAN_MINUTE,
	TCO_GRAN_HOUR,
	TCO_GRAN_DAY,
	TCO_GRAN_WEEK,				/* ISO week, starting Monday 00:00 */
	TCO_GRAN_MONTH
} TcoGranularity;

/* config.c: the installation's configuration (table tco.config), cached. */
extern void tco_config_init(void);
extern pg_tz *tco_billing_tz(void);
extern const char *tco_billing_tz_name(void);
extern TimestampTz tco_legacy_cutover(void);

/* cache.c: shared helpers for per-backend caches. */
extern Oid	tco_relid(const char *relname);
extern TcoGranularity tco_granularity_from_name(const char *name);
extern const char *tco_granularity_name(TcoGranularity g);
/* For how long a cache built under tco_push_cache_snapshot()'s snapshot is valid. */
typedef enum TcoCacheScope
{
	TCO_CACHE_UNTIL_INVALIDATED,	/* until an invalidation of its tables */
	TCO_CACHE_XACT,				/* and within its transaction only */
	TCO_CACHE_SNAPSHOT			/* and for its snapshot only (parallel mode) */
} TcoCacheScope;

extern void tco_accept_invalidations(void);
extern uint64 tco_snapshot_epoch(void);
extern TcoCacheScope tco_push_cache_snapshot(void);
extern bool tco_cache_scope_valid(TcoCacheScope scope, LocalTransactionId lxid, uint64 epoch);
extern int	tco_pin_search_path(void);
extern void tco_restore_search_path(int nestlevel);
extern void tco_check_columns(TupleDesc desc, int n, const Oid *types, const char *what);

/* billing_time.c: calendar arithmetic in a time zone. */
extern BillingCycle tco_cycle_of(TimestampTz t, pg_tz *tz);
extern TimestampTz tco_cycle_start(BillingCycle c, pg_tz *tz);
extern TimestampTz tco_trunc(TimestampTz t, TcoGranularity g, pg_tz *tz);
extern TimestampTz tco_boundary_ceil(TimestampTz t, TcoGranularity g, pg_tz *tz);
extern bool tco_cycle_bounds(TimestampTz t, pg_tz *tz, TimestampTz *start, TimestampTz *next);
extern TimestampTz tco_next_cycle_start(BillingCycle c, pg_tz *tz);
extern pg_tz *tco_zone_by_name(const char *name, bool billing);

/* settle.c: settlement of billing cycles. */
extern void tco_settle_init(void);

/* guard.c: the settlement lock of a cycle (README "Security"). */
extern void tco_settlement_lock(BillingCycle cycle, LOCKMODE mode);
extern bool tco_is_restoring(void);

/* ingest.c: the statement trigger of tco.bill_line. */
extern void tco_ingest_init(void);

/* settle_snapshot.c: settle_cycle under REPEATABLE READ / SERIALIZABLE. */
extern void tco_settle_check_snapshot(const char *cycle_text, TimestampTz start, TimestampTz end);

#endif							/* TCO_H */
