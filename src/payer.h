/*
 * src/payer.h
 *
 * The payer of a bill line (R6): interface used by settlement.
 */
#ifndef TCO_PAYER_H
#define TCO_PAYER_H

#include "tco.h"

typedef enum PayerChangeKind
{
	PAYER_CHANGE_ESTABLISH,
	PAYER_CHANGE_MOVE,			/* an establish at the instant another ended */
	PAYER_CHANGE_END
} PayerChangeKind;

/* One trusteeship change of an account: from `at` on, `target` pays. */
typedef struct PayerChange
{
	TimestampTz at;
	int64		target;			/* the manager, or the account itself on end */
	int64		trusteeship_id;
	PayerChangeKind kind;
} PayerChange;

typedef struct PayerDecision
{
	int64		account_id;
	int64		payer;
	TcoGranularity granularity;
	int			change_index;	/* the change that applies, -1 if none */
	int			nchanges;
	const PayerChange *account; /* the account's changes (nchanges) */
	const TimestampTz *effective;	/* their effective instants for the product */
	const bool *frozen;			/* whether each was frozen */
	/*
	 * The same decision (payer and change) holds for every instant from the
	 * one asked up to, not including, valid_until: the next effective instant
	 * of a later change.  Settlement prices a run of lines of one account and
	 * product in period order with one decision per such span.
	 */
	TimestampTz valid_until;
} PayerDecision;

extern void tco_payer_init(void);
extern void tco_payer_reset(void);
extern void tco_payer_lines_written(void);
extern void tco_payer_decide(int64 account_id, const char *product_code,
							 TimestampTz at, PayerDecision *decision);
extern int64 tco_effective_payer(int64 account_id, const char *product_code,
								 TimestampTz at);

#endif							/* TCO_PAYER_H */
