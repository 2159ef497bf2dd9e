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
	bool		in_detached;	/* the account has a change in a detached cycle */
} PayerDecision;

extern void tco_payer_init(void);
extern void tco_payer_reset(void);
extern void tco_payer_lines_written(void);
extern void tco_payer_decide(int64 account_id, const char *product_code,
							 TimestampTz at, PayerDecision *decision);
extern TimestampTz tco_payer_decision_until(const PayerDecision *decision, TimestampTz at);
extern int64 tco_effective_payer(int64 account_id, const char *product_code,
								 TimestampTz at);

#endif							/* TCO_PAYER_H */
