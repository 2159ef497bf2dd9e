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

extern BulkWriter *tco_bulk_begin(const char *relname, int ncolumns, const char *const *columns);
extern void tco_bulk_insert(BulkWriter *w, const Datum *values, const bool *isnull);
extern MemoryContext tco_bulk_row_context(BulkWriter *w);
extern void tco_bulk_end(BulkWriter *w);

#endif							/* TCO_BULK_H */
