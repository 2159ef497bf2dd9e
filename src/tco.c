/*
 * src/tco.c
 *
 * Module entry point of the tco extension.  Each per-backend cache registers
 * its invalidation callbacks here, once per backend.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "payer.h"
#include "tco.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	tco_config_init();
	tco_payer_init();
	tco_settle_init();
	tco_ingest_init();
	MarkGUCPrefixReserved("tco");
}
