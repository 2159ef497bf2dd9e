/*
 * src/bulk.h
 *
 * Bulk writes of settlement results into tco's own tables (bulk.c): rows go
 * straight to the heap and its indexes, with the table's NOT NULL and CHECK
 * constraints checked per row, like COPY does, but without row triggers.
 */
#ifndef TCO_BULK_H
#define TCO_BULK_H

#include "postgres.h"

typedef struct BulkWriter BulkWriter;

/* A column written in bulk: its name, the type of its values (InvalidOid: tco.billing_cycle), its typmod (-1: any). */
typedef struct BulkColumn
{
	const char *name;
	Oid			type;
	int32		typmod;
} BulkColumn;

#define BULK_NUMERIC_TYPMOD(p, s)	((int32) ((((p) << 16) | (s)) + VARHDRSZ))

extern BulkWriter *tco_bulk_begin(const char *relname, int ncolumns, const BulkColumn *columns);
extern void tco_bulk_insert(BulkWriter *w, const Datum *values, const bool *isnull);
extern MemoryContext tco_bulk_row_context(BulkWriter *w);
extern void tco_bulk_end(BulkWriter *w);

#endif							/* TCO_BULK_H */
