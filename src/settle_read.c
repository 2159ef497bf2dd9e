/*
 * src/settle_read.c
 *
 * Settlement (settle.h): the cycle's bill lines read once, in physical
 * order, as compact records, and put in settlement order (consumer,
 * product, period start, line id): by a radix sort in memory while they
 * fit in work_mem, else as sorted runs in temporary files, merged.
 * Also the products (ranks in collation order) and, in skip mode, the
 * lines an earlier settlement of the cycle already settled.
 */
#include "postgres.h"

#include "storage/buffile.h"

#include "access/parallel.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "executor/executor.h"
#include "nodes/plannodes.h"
#include "optimizer/cost.h"
#include "optimizer/paths.h"
#include "parser/parsetree.h"
#include "storage/bufmgr.h"
#include "storage/dsm.h"
#include "storage/sharedfileset.h"
#include "storage/shm_toc.h"
#include "storage/spin.h"
#include "utils/plancache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "nodes/params.h"
#include "tcop/dest.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "settle.h"

/* ------------------------------------------------------------------------
 * Settlement order
 */

static inline int
line_order(const LineRec *x, const LineRec *y)
{
	if (x->account_id != y->account_id)
		return x->account_id < y->account_id ? -1 : 1;
	if (x->product != y->product)
		return x->product < y->product ? -1 : 1;
	if (x->period_start != y->period_start)
		return x->period_start < y->period_start ? -1 : 1;
	if (x->line_id != y->line_id)
		return x->line_id < y->line_id ? -1 : 1;
	return 0;
}

/* sort_lines(LineRec *, size_t): qsort specialized for line_order */
#define ST_SORT sort_lines
#define ST_ELEMENT_TYPE LineRec
#define ST_COMPARE(a, b) line_order(a, b)
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

/* Within one account and product: whether x comes after y. */
static inline bool
period_after(const LineRec *x, const LineRec *y)
{
	return x->period_start > y->period_start ||
		(x->period_start == y->period_start && x->line_id > y->line_id);
}

/*
 * Sort one (account, product) run by (period start, line id).  Lines read
 * in random physical order make many short runs in each sorted segment (a
 * few lines of each account and product): an insertion sort on the two
 * keys that differ beats the general sort for them.
 */
#define INSERTION_SORT_MAX 24

/* sort_run_lines(LineRec *, size_t): qsort of one run, on the keys that differ */
#define ST_SORT sort_run_lines
#define ST_ELEMENT_TYPE LineRec
#define ST_COMPARE(a, b) (period_after(a, b) ? 1 : (period_after(b, a) ? -1 : 0))
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

static void
sort_run(LineRec *recs, Size n)
{
	Size		i;

	if (n > INSERTION_SORT_MAX)
	{
		sort_run_lines(recs, n);
		return;
	}
	for (i = 1; i < n; i++)
	{
		LineRec		r = recs[i];
		Size		j = i;

		while (j > 0 && period_after(&recs[j - 1], &r))
		{
			recs[j] = recs[j - 1];
			j--;
		}
		recs[j] = r;
	}
}

/*
 * Put the lines in settlement order (account, product, period start, line
 * id): a stable LSD radix sort of words made of the (account, product) key
 * and the record's position, 11 bits of key per pass (two passes for a few
 * thousand accounts and products), one in-place permutation of the
 * records, then each (account, product) run is checked and, if it is not
 * in (period start, line id) order already, sorted.  Lines read in time
 * order make runs in order, and this is about twice as fast as one
 * comparison sort of everything, which remains for few lines and for
 * accounts too far apart to make a key.  idx is scratch room for 2 * n
 * words.  Returns whether the radix sort did it.
 */
#define RADIX_BITS	11
#define RADIX_MIN_LINES	256

/*
 * Records sorted in one piece at most (2.5 MB with the radix sort's scratch,
 * within the processor's caches); see sort_segments.
 */
#define SEGMENT_LINES	65536

static bool
order_lines(LineRec *recs, Size n, int nproducts, uint64 *idx)
{
	int64		min_account,
				max_account;
	int			pbits = 0;
	int			keybits;
	int			ibits;
	uint64		max_key;
	uint64	   *from = idx,
			   *to = idx + n;
	uint32	   *pos;
	Size		i;
	int			shift;

	if (n < RADIX_MIN_LINES || n > PG_UINT32_MAX || idx == NULL)
	{
		sort_lines(recs, n);
		return false;
	}
	min_account = max_account = recs[0].account_id;
	for (i = 1; i < n; i++)
	{
		min_account = Min(min_account, recs[i].account_id);
		max_account = Max(max_account, recs[i].account_id);
	}
	while ((1 << pbits) < nproducts)
		pbits++;
	ibits = 1;
	while (ibits < 32 && ((Size) 1 << ibits) < n)
		ibits++;
	if ((uint64) max_account - (uint64) min_account >= (UINT64CONST(1) << (62 - pbits)))
	{
		sort_lines(recs, n);
		return false;
	}
#define LINE_KEY(r) ((((uint64) (r)->account_id - (uint64) min_account) << pbits) | (uint64) (r)->product)
	max_key = (((uint64) max_account - (uint64) min_account) << pbits) | (uint64) Max(nproducts - 1, 0);
	keybits = 1;
	while (keybits < 64 && (max_key >> keybits) != 0)
		keybits++;
	if (keybits + ibits > 64)
	{
		sort_lines(recs, n);
		return false;
	}

	/*
	 * Each record's key and position in one word, read from the records
	 * once, in order; the passes then move words, not look at records.
	 */
	for (i = 0; i < n; i++)
		from[i] = (LINE_KEY(&recs[i]) << ibits) | (uint64) i;
#undef LINE_KEY
	for (shift = ibits; shift < ibits + keybits; shift += RADIX_BITS)
	{
		Size		count[1 << RADIX_BITS];
		Size		sum = 0;
		uint64	   *swap;
		int			d;

		memset(count, 0, sizeof(count));
		for (i = 0; i < n; i++)
			count[(from[i] >> shift) & ((1 << RADIX_BITS) - 1)]++;
		for (d = 0; d < (1 << RADIX_BITS); d++)
		{
			Size		c = count[d];

			count[d] = sum;
			sum += c;
		}
		for (i = 0; i < n; i++)
			to[count[(from[i] >> shift) & ((1 << RADIX_BITS) - 1)]++] = from[i];
		swap = from;
		from = to;
		to = swap;
		CHECK_FOR_INTERRUPTS();
	}
	/* the positions, in the other half of the scratch */
	pos = (uint32 *) to;
	for (i = 0; i < n; i++)
		pos[i] = (uint32) (from[i] & ((UINT64CONST(1) << ibits) - 1));
	/* recs[i] = old recs[pos[i]], in place: follow each cycle once */
	for (i = 0; i < n; i++)
	{
		LineRec		tmp;
		Size		j;

		if (pos[i] == i)
			continue;
		tmp = recs[i];
		j = i;
		while (pos[j] != i)
		{
			Size		k = pos[j];

			recs[j] = recs[k];
			pos[j] = (uint32) j;
			j = k;
		}
		recs[j] = tmp;
		pos[j] = (uint32) j;
	}
	/* each (account, product) run in (period start, line id) order */
	for (i = 0; i < n;)
	{
		Size		end = i + 1;
		bool		sorted = true;

		while (end < n && recs[end].account_id == recs[i].account_id && recs[end].product == recs[i].product)
		{
			if (sorted && period_after(&recs[end - 1], &recs[end]))
				sorted = false;
			end++;
		}
		if (!sorted)
			sort_run(recs + i, end - i);
		i = end;
	}
	return true;
}

static void index_products(SettleRun *run);

/* Product codes in the collation order of ORDER BY product_code. */
void
settle_load_products(SettleRun *run)
{
	SPITupleTable *tt;
	uint64		i;

	settle_exec_plan(PLAN_PRODUCTS, NULL, NULL, true, 0);
	tt = SPI_tuptable;
	if (SPI_processed >= PG_INT32_MAX)
		elog(ERROR, "too many products");
	run->nproducts = (int) SPI_processed;
	run->products = MemoryContextAllocHuge(run->run_ctx, (Size) PRODUCT_CODE_LEN * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		settle_text_to_code(settle_get_text(tt->vals[i], tt->tupdesc, 1, &isnull), run->products[i]);
		if (isnull)
			ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("tco.product has a NULL product code"),
				 errhint("The primary key of tco.product was dropped: restore it.")));
	}
	SPI_freetuptable(tt);
	index_products(run);
}

/* The length and the rank by code of each of run->products. */
static void
index_products(SettleRun *run)
{
	HASHCTL		ctl;
	int			i;

	ctl.keysize = PRODUCT_CODE_LEN;
	ctl.entrysize = sizeof(ProductEntry);
	ctl.hcxt = run->run_ctx;
	run->product_ranks = hash_create("tco settle products", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	run->product_len = MemoryContextAllocHuge(run->run_ctx, sizeof(int) * Max(run->nproducts, 1));
	for (i = 0; i < run->nproducts; i++)
	{
		ProductEntry *e;
		bool		found;

		run->product_len[i] = (int) strlen(run->products[i]);
		e = hash_search(run->product_ranks, run->products[i], HASH_ENTER, &found);
		e->rank = (int32) i;
	}
}

/* Skip mode: the settled line ids of an account's product in the cycle, sorted. */
void
settle_load_settled_ids(SettleRun *run, int64 account_id, const char *product_code)
{
	Datum		args[3];
	SPITupleTable *tt;
	uint64		i;
	bool		isnull;

	if (run->settled_ids)
		pfree(run->settled_ids);
	run->settled_ids = NULL;
	run->nsettled_ids = 0;
	args[0] = Int64GetDatum(account_id);
	args[1] = CStringGetTextDatum(product_code);
	args[2] = CStringGetTextDatum(run->cycle_text);
	settle_exec_plan(run->v10 ? PLAN_SETTLED_IDS_V10 : PLAN_SETTLED_IDS, args, NULL, false, 0);
	tt = SPI_tuptable;
	if (SPI_processed > 0)
	{
		run->settled_ids = MemoryContextAllocHuge(run->run_ctx, sizeof(int64) * SPI_processed);
		for (i = 0; i < SPI_processed; i++)
			run->settled_ids[i] = settle_get_int8(tt->vals[i], tt->tupdesc, 1, &isnull);
		run->nsettled_ids = (int) SPI_processed;
	}
	SPI_freetuptable(tt);
}

bool
settle_is_settled_id(SettleRun *run, int64 line_id)
{
	int			lo = 0,
				hi = run->nsettled_ids;

	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (run->settled_ids[mid] < line_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < run->nsettled_ids && run->settled_ids[lo] == line_id;
}

/*
 * Receives the cycle's lines from the executor, in one pass, as LineRec,
 * into an array of cap records (about work_mem with the radix sort's
 * scratch).  When the array is full, it is put in order and written to
 * temporary files as sorted runs, one per sorted segment (spill_run), and
 * the array is reused; settle_read_lines then merges the runs.
 */
typedef struct LineCollector
{
	DestReceiver pub;
	SettleRun  *run;
	LineRec    *recs;
	Size		cap;
	Size		n;
	Size		seg;			/* records are sorted in segments of this many */
	uint64	   *idx;			/* order_lines' scratch for a segment */
	uint64		received;		/* rows received */
	BufFile   **runs;			/* sorted runs written so far ... */
	int		   *levels;			/* ... how many merges made each ... */
	char	  **names;			/* ... and their names in fileset (or NULL) */
	FileSet    *fileset;		/* parallel read: runs go to this shared file set */
	int			participant;	/* ... under names of this participant */
	int			next_file;
	int			nruns;
	int			runs_cap;
	int			fan_in;			/* runs merged at a time */
	const char *last_code;
	int32		last_rank;
	/* the distinct consumers seen, loaded before settling (few queries) */
	HTAB	   *consumers;
	int64	   *consumer_ids;
	Size		nconsumers;
	Size		consumers_cap;
} LineCollector;

/*
 * The shape collect_values reads, from the read query (collect_startup) or
 * straight from the relation (read_parallel).
 */
static const char *const read_columns[5] = {"line_id", "account_id", "product_code", "period_start", "list_amount"};
static const Oid read_types[5] = {INT8OID, INT8OID, TEXTOID, TIMESTAMPTZOID, NUMERICOID};

static void
collect_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	tco_check_columns(typeinfo, 5, read_types, "the bill lines of the cycle (tco.bill_line)");
}

static void
collect_shutdown(DestReceiver *self)
{
}

/*
 * Merging sorted runs: each source is a run in a temporary file or a sorted
 * segment of the array in memory; a binary heap of sources, ordered by
 * their next line, gives the next line in settlement order.  A file is read
 * a block of records at a time into its source's buffer (BLCKSZ each: the
 * room fan_in was computed for), so taking a line is a copy from memory.
 * The merged lines go to a sink in slices of FETCH_BATCH: settle_lines, or
 * another temporary file.
 */
#define MERGE_BUFFER_RECS	(BLCKSZ / sizeof(LineRec))

typedef struct MergeSource
{
	BufFile    *file;			/* NULL: a segment of the array */
	const LineRec *mem;			/* the segment, or the file's buffer */
	Size		mem_n;
	Size		mem_pos;
	LineRec    *buffer;			/* a file's: MERGE_BUFFER_RECS records */
} MergeSource;

typedef void (*MergeSink) (SettleRun *run, void *arg, const LineRec *recs, Size n);

/* The source's next line, or NULL when it has none left. */
static inline const LineRec *
source_head(MergeSource *src)
{
	if (src->mem_pos < src->mem_n)
		return &src->mem[src->mem_pos];
	if (src->file == NULL)
		return NULL;
	{
		size_t		got = BufFileRead(src->file, src->buffer, sizeof(LineRec) * MERGE_BUFFER_RECS);

		if (got % sizeof(LineRec) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read a sorted run of bill lines from a temporary file: read %zu bytes, not a multiple of %zu",
							got, sizeof(LineRec))));
		src->mem = src->buffer;
		src->mem_n = got / sizeof(LineRec);
		src->mem_pos = 0;
	}
	return src->mem_n > 0 ? &src->mem[0] : NULL;
}

/* heap[] holds source numbers; heads[k] is the next line of heap[k]'s source */
static inline void
heap_sift_down(int *heap, const LineRec **heads, int n, int k)
{
	int			src = heap[k];
	const LineRec *head = heads[k];

	for (;;)
	{
		int			c = 2 * k + 1;

		if (c >= n)
			break;
		if (c + 1 < n && line_order(heads[c + 1], heads[c]) < 0)
			c++;
		if (line_order(head, heads[c]) <= 0)
			break;
		heap[k] = heap[c];
		heads[k] = heads[c];
		k = c;
	}
	heap[k] = src;
	heads[k] = head;
}

/*
 * Merge the sorted runs in files and the records of mem (nmem of them,
 * sorted in segments of seg records each) into the sink, in settlement
 * order.
 */
static void
merge_runs(SettleRun *run, BufFile **files, int nfiles, const LineRec *mem, Size nmem, Size seg,
		   MergeSink sink, void *arg)
{
	int			nmemsrc = (int) ((nmem + seg - 1) / seg);
	int			nsources = nfiles + nmemsrc;
	MergeSource *sources = palloc0(sizeof(MergeSource) * Max(nsources, 1));
	int		   *heap = palloc(sizeof(int) * Max(nsources, 1));
	const LineRec **heads = palloc(sizeof(LineRec *) * Max(nsources, 1));
	LineRec    *out = palloc(sizeof(LineRec) * FETCH_BATCH);
	Size		nout = 0;
	int			n = 0;
	int			i;

	for (i = 0; i < nsources; i++)
	{
		const LineRec *head;

		if (i < nfiles)
		{
			sources[i].file = files[i];
			sources[i].buffer = palloc(sizeof(LineRec) * MERGE_BUFFER_RECS);
			if (BufFileSeek(files[i], 0, 0, SEEK_SET) != 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not rewind a temporary file of sorted bill lines")));
		}
		else
		{
			Size		lo = (Size) (i - nfiles) * seg;

			sources[i].mem = mem + lo;
			sources[i].mem_n = Min(seg, nmem - lo);
		}
		head = source_head(&sources[i]);
		if (head != NULL)
		{
			heap[n] = i;
			heads[n] = head;
			n++;
		}
	}
	for (i = n / 2 - 1; i >= 0; i--)
		heap_sift_down(heap, heads, n, i);
	while (n > 0)
	{
		MergeSource *src = &sources[heap[0]];

		out[nout++] = *heads[0];
		if (nout == FETCH_BATCH)
		{
			sink(run, arg, out, nout);
			nout = 0;
		}
		src->mem_pos++;
		heads[0] = source_head(src);
		if (heads[0] == NULL)
		{
			/* the source is done: the last one takes its place */
			n--;
			heap[0] = heap[n];
			heads[0] = heads[n];
		}
		if (n > 1)
			heap_sift_down(heap, heads, n, 0);
	}
	if (nout > 0)
		sink(run, arg, out, nout);
	for (i = 0; i < nfiles; i++)
		pfree(sources[i].buffer);
	pfree(sources);
	pfree(heap);
	pfree(heads);
	pfree(out);
}

static void
sink_to_file(SettleRun *run, void *arg, const LineRec *recs, Size n)
{
	BufFileWrite((BufFile *) arg, (void *) recs, sizeof(LineRec) * n);
	CHECK_FOR_INTERRUPTS();
}

static void
sink_to_settle(SettleRun *run, void *arg, const LineRec *recs, Size n)
{
	phase_done(run, PHASE_SORT);
	settle_lines(run, recs, n, *(bool *) arg);
}

/*
 * Note the accounts of a sorted segment not seen before: one hash probe per
 * account of the segment, not per line.
 */
static void
note_consumer(LineCollector *lc, int64 account_id)
{
	bool		found;

	if (lc->consumers == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(int64);
		ctl.hcxt = lc->run->run_ctx;
		lc->consumers = hash_create("tco settle consumers", 1024, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	(void) hash_search(lc->consumers, &account_id, HASH_ENTER, &found);
	if (found)
		return;
	if (lc->nconsumers == lc->consumers_cap)
	{
		lc->consumers_cap = Max(lc->consumers_cap * 2, 1024);
		lc->consumer_ids = lc->consumer_ids ?
			repalloc_huge(lc->consumer_ids, sizeof(int64) * lc->consumers_cap) :
			MemoryContextAllocHuge(lc->run->run_ctx, sizeof(int64) * lc->consumers_cap);
	}
	lc->consumer_ids[lc->nconsumers++] = account_id;
}

static void
note_consumers(LineCollector *lc, const LineRec *recs, Size n)
{
	Size		i;

	for (i = 0; i < n; i++)
		if (i == 0 || recs[i].account_id != recs[i - 1].account_id)
			note_consumer(lc, recs[i].account_id);
}

/*
 * Put the collected records in order, segment by segment (lc->seg records
 * each): a larger array is not sorted in one piece because the radix sort
 * reads the records in random order, a cache miss per record and pass once
 * the array outgrows the processor's caches (in one benchmark run, sorting
 * 1.4M records in one piece at work_mem 64MB made the read of a 5M-line
 * table twice as slow as at 4MB).
 */
static void
sort_segments(LineCollector *lc)
{
	SettleRun  *run = lc->run;
	Size		lo;

	if (lc->idx == NULL && lc->n >= RADIX_MIN_LINES)
		lc->idx = MemoryContextAllocHuge(run->run_ctx, sizeof(uint64) * 2 * lc->seg);
	for (lo = 0; lo < lc->n; lo += lc->seg)
	{
		Size		n = Min(lc->seg, lc->n - lo);

		if (order_lines(lc->recs + lo, n, run->nproducts, lc->idx))
			run->radix_sort = true;
		note_consumers(lc, lc->recs + lo, n);
	}
}

/*
 * A new file for a sorted run: a temporary file of this backend, or, in a
 * parallel read (read_participant), a named file of the read's shared file
 * set that the leader opens after the worker is done.  Either kind is
 * removed on error (resource owner, file set detach).
 */
static BufFile *
run_file_create(LineCollector *lc, char **name)
{
	if (lc->fileset == NULL)
	{
		*name = NULL;
		return BufFileCreateTemp(false);
	}
	*name = psprintf("tco.read.%d.%d", lc->participant, lc->next_file++);
	return BufFileCreateFileSet(lc->fileset, *name);
}

static void
run_file_close(LineCollector *lc, BufFile *file, const char *name)
{
	BufFileClose(file);
	if (name != NULL)
		BufFileDeleteFileSet(lc->fileset, name, false);
}

/* One more sorted run, of the given merge level. */
static void
add_run(LineCollector *lc, BufFile *file, char *name, int level)
{
	if (lc->nruns == lc->runs_cap)
	{
		lc->runs_cap = Max(lc->runs_cap * 2, lc->fan_in + 1);
		lc->runs = lc->runs ? repalloc(lc->runs, sizeof(BufFile *) * lc->runs_cap) :
			palloc(sizeof(BufFile *) * lc->runs_cap);
		lc->levels = lc->levels ? repalloc(lc->levels, sizeof(int) * lc->runs_cap) :
			palloc(sizeof(int) * lc->runs_cap);
		lc->names = lc->names ? repalloc(lc->names, sizeof(char *) * lc->runs_cap) :
			palloc(sizeof(char *) * lc->runs_cap);
	}
	lc->runs[lc->nruns] = file;
	lc->names[lc->nruns] = name;
	lc->levels[lc->nruns++] = level;
}

/* Merge the runs first .. first + count - 1 into one run of the given level. */
static void
merge_into_one(LineCollector *lc, int first, int count, int level)
{
	char	   *name;
	BufFile    *merged = run_file_create(lc, &name);
	int			i;

	merge_runs(lc->run, lc->runs + first, count, NULL, 0, lc->seg, sink_to_file, merged);
	for (i = first; i < first + count; i++)
		run_file_close(lc, lc->runs[i], lc->names[i]);
	for (i = first + count; i < lc->nruns; i++)
	{
		lc->runs[i - count + 1] = lc->runs[i];
		lc->names[i - count + 1] = lc->names[i];
		lc->levels[i - count + 1] = lc->levels[i];
	}
	lc->runs[first] = merged;
	lc->names[first] = name;
	lc->levels[first] = level;
	lc->nruns -= count - 1;
	lc->run->intermediate_merges++;
}

/*
 * The array is full: put it in order and write each of its sorted segments
 * to a temporary file as one more sorted run.
 */
static void
spill_run(LineCollector *lc)
{
	SettleRun  *run = lc->run;
	/* the runs outlive the read's executor memory (the current context) */
	MemoryContext oldcxt = MemoryContextSwitchTo(run->run_ctx);
	Size		lo;

	sort_segments(lc);
	for (lo = 0; lo < lc->n; lo += lc->seg)
	{
		Size		n = Min(lc->seg, lc->n - lo);
		char	   *name;
		BufFile    *file = run_file_create(lc, &name);

		BufFileWrite(file, lc->recs + lo, sizeof(LineRec) * n);
		add_run(lc, file, name, 0);
		run->spilled_runs++;
		run->spilled_kb += sizeof(LineRec) * n / 1024;

		/*
		 * Tiered merging: fan_in runs of one level (the last ones written)
		 * are merged into one run of the next level, so each line is
		 * rewritten once per level (logarithmic in the cycle's size) and
		 * fewer than fan_in runs of each level stay open.
		 */
		while (lc->nruns >= lc->fan_in &&
			   lc->levels[lc->nruns - lc->fan_in] == lc->levels[lc->nruns - 1])
			merge_into_one(lc, lc->nruns - lc->fan_in, lc->fan_in, lc->levels[lc->nruns - 1] + 1);
	}
	lc->n = 0;
	MemoryContextSwitchTo(oldcxt);
}

/*
 * A numeric in micro-units (10^-6), exactly: what (x * 1000000)::int8 gives
 * for a value with at most 6 decimals, read straight from the numeric's
 * base-10000 digits (the on-disk format, stable since PostgreSQL 9.1: a
 * 16-bit header, short or long, then the digits).  For any other value
 * (more decimals, beyond int8, NaN or infinite, compressed) it falls back to
 * the SQL functions, which round or raise the usual error.  This is the
 * hottest conversion of the read: the functions cost a quarter of it.
 */
static int64
numeric_to_micro(Datum d)
{
	static const int64 pow10[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000,
		100000000, 1000000000, INT64CONST(10000000000), INT64CONST(100000000000),
		INT64CONST(1000000000000), INT64CONST(10000000000000), INT64CONST(100000000000000),
		INT64CONST(1000000000000000), INT64CONST(10000000000000000),
	INT64CONST(100000000000000000), INT64CONST(1000000000000000000)};
	struct varlena *v = (struct varlena *) DatumGetPointer(d);
	const char *p;
	Size		len;
	uint16		header;
	int			weight;
	bool		negative;
	int64		acc = 0;
	Size		i;

	if (VARATT_IS_EXTENDED(v) && !VARATT_IS_SHORT(v))
		goto fallback;
	p = VARDATA_ANY(v);
	len = VARSIZE_ANY_EXHDR(v);
	if (len < sizeof(uint16))
		goto fallback;
	memcpy(&header, p, sizeof(uint16));
	if ((header & 0xC000) == 0xC000)
		goto fallback;			/* NaN, infinity */
	if (header & 0x8000)
	{
		/* short: sign 0x2000, dscale 0x1F80, weight sign 0x0040, weight 0x003F */
		negative = (header & 0x2000) != 0;
		weight = (header & 0x0040) ? (int) (header & 0x003F) - 64 : (int) (header & 0x003F);
		p += sizeof(uint16);
		len -= sizeof(uint16);
	}
	else
	{
		int16		w;

		if (len < 2 * sizeof(uint16))
			goto fallback;
		negative = (header & 0xC000) == 0x4000;
		memcpy(&w, p + sizeof(uint16), sizeof(int16));
		weight = w;
		p += 2 * sizeof(uint16);
		len -= 2 * sizeof(uint16);
	}
	for (i = 0; i < len / sizeof(int16); i++)
	{
		int16		digit;
		int			exp = 4 * (weight - (int) i) + 6;	/* its power of ten, in micro-units */
		int64		term;

		memcpy(&digit, p + i * sizeof(int16), sizeof(int16));
		if (digit == 0)
			continue;
		if (exp == -2 && digit % 100 == 0)
			term = digit / 100;
		else if (exp < 0 || exp >= (int) lengthof(pow10) ||
				 pg_mul_s64_overflow(digit, pow10[exp], &term))
			goto fallback;
		if (pg_add_s64_overflow(acc, term, &acc))
			goto fallback;
	}
	return negative ? -acc : acc;

fallback:
	return DatumGetInt64(DirectFunctionCall1(numeric_int8,
											 DirectFunctionCall2(numeric_mul, d,
																 NumericGetDatum(int64_to_numeric(1000000)))));
}

/*
 * One line of the cycle: line_id, account_id, product_code, period_start,
 * list_amount, as a record of the array.
 */
static void
collect_values(LineCollector *lc, const Datum *values, const bool *isnull)
{
	SettleRun  *run = lc->run;
	LineRec    *r;
	text	   *code;
	int			len;

	if (isnull[0] || isnull[1] || isnull[2] || isnull[3] || isnull[4])
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("a bill line of the cycle has a NULL line_id, account_id, product_code, period_start or list_amount"),
				 errhint("A NOT NULL constraint of tco.bill_line was dropped: restore it and correct the line.")));
	lc->received++;
	if (lc->n == lc->cap)
		spill_run(lc);
	r = &lc->recs[lc->n++];
	r->line_id = DatumGetInt64(values[0]);
	r->account_id = DatumGetInt64(values[1]);
	code = DatumGetTextPP(values[2]);
	len = VARSIZE_ANY_EXHDR(code);
	if (lc->last_code == NULL || strlen(lc->last_code) != (size_t) len ||
		memcmp(lc->last_code, VARDATA_ANY(code), len) != 0)
	{
		char		buf[PRODUCT_CODE_LEN];
		ProductEntry *e;
		int			k;

		/* a few products: a scan of their codes beats hashing the code */
		for (k = 0; k < run->nproducts && run->nproducts <= 16; k++)
			if (run->product_len[k] == len && memcmp(run->products[k], VARDATA_ANY(code), len) == 0)
				break;
		if (k < run->nproducts && run->nproducts <= 16)
			lc->last_rank = k;
		else
		{
			settle_text_to_code(values[2], buf);
			e = hash_search(run->product_ranks, buf, HASH_FIND, NULL);
			if (e == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
						 errmsg("product \"%s\" of bill line " INT64_FORMAT " is not in tco.product",
								buf, r->line_id),
						 errhint("The foreign key of tco.bill_line.product_code was dropped: restore it and correct the line.")));
			lc->last_rank = e->rank;
		}
		lc->last_code = run->products[lc->last_rank];
	}
	r->product = lc->last_rank;
	r->zero = 0;
	r->period_start = DatumGetTimestampTz(values[3]);
	r->list = numeric_to_micro(values[4]);
	if ((lc->received & 0x3FFF) == 0)
		CHECK_FOR_INTERRUPTS();
}

static bool
collect_line(TupleTableSlot *slot, DestReceiver *self)
{
	slot_getallattrs(slot);
	collect_values((LineCollector *) self, slot->tts_values, slot->tts_isnull);
	return true;
}

static void
collector_init(LineCollector *lc, SettleRun *run, Size cap, int fan_in)
{
	memset(lc, 0, sizeof(*lc));
	lc->pub.receiveSlot = collect_line;
	lc->pub.rStartup = collect_startup;
	lc->pub.rShutdown = collect_shutdown;
	lc->pub.rDestroy = collect_shutdown;
	lc->pub.mydest = DestNone;
	lc->run = run;
	lc->last_rank = -1;
	lc->cap = cap;
	lc->recs = MemoryContextAllocHuge(run->run_ctx, cap * sizeof(LineRec));
	lc->seg = cap <= 2 * SEGMENT_LINES ? cap : SEGMENT_LINES;
	lc->fan_in = fan_in;
}

/* ------------------------------------------------------------------------
 * Parallel read (README "Settlement speed"): when the plan of the read is a
 * sequential scan of one relation (the cycle's partition) large enough for
 * PostgreSQL to scan it in parallel, the scan is shared by parallel workers
 * and the leader, as a parallel sequential scan is, and each participant
 * makes its own records, sorts them and writes its sorted runs (the
 * read's work but the merge).  The workers' runs are named files of a
 * shared file set, which the leader opens once they are done; it merges
 * them with its own runs and its last array, and settles the lines as they
 * come out, after it has left parallel mode (pricing writes).  Each
 * participant has work_mem for its array, as each process of a parallel
 * sort in PostgreSQL has.  The result does not depend on it: the merge
 * gives the same order, the same lines.
 */
#define READ_KEY_SHARED		UINT64CONST(0x7C0A5E7700000001)
#define READ_KEY_SCAN		UINT64CONST(0x7C0A5E7700000002)
#define READ_KEY_PRODUCTS	UINT64CONST(0x7C0A5E7700000003)
#define READ_NAME_LEN		64

typedef struct ReadShared
{
	Oid			relid;			/* the relation to scan */
	AttrNumber	attnums[5];		/* line_id, account_id, product_code, period_start, list_amount */
	TimestampTz start;			/* the cycle: [start, end) */
	TimestampTz end;
	Size		cap;			/* records per participant's array */
	int			fan_in;
	int			nproducts;		/* codes in READ_KEY_PRODUCTS, in rank order */
	dsm_handle	files;			/* the segment holding the shared file set */
	/* what the workers did, added up */
	slock_t		mutex;
	uint64		received;
	int			spilled_runs;
	int64		spilled_kb;
	int			intermediate_merges;
	bool		radix_sort;
} ReadShared;


PGDLLEXPORT void tco_settle_read_worker(dsm_segment *seg, shm_toc *toc);

/*
 * The relation the read's plan scans sequentially, or InvalidOid if the
 * plan is anything else (an index scan for a small cycle, several
 * partitions, row-level security quals, an organization's scope).
 */
static Oid
read_scan_relation(SPIPlanPtr plan, ParamListInfo params)
{
	List	   *sources = SPI_plan_get_plan_sources(plan);
	CachedPlan *cplan;
	Oid			relid = InvalidOid;

	if (list_length(sources) != 1)
		return InvalidOid;
	cplan = GetCachedPlan(linitial(sources), params, CurrentResourceOwner, NULL);
	if (list_length(cplan->stmt_list) == 1)
	{
		PlannedStmt *stmt = linitial_node(PlannedStmt, cplan->stmt_list);
		Plan	   *top = stmt->planTree;

		/* the two conditions on period_start, nothing else */
		if (IsA(top, SeqScan) && top->lefttree == NULL && stmt->subplans == NIL &&
			list_length(top->qual) == 2)
		{
			RangeTblEntry *rte = rt_fetch(((Scan *) top)->scanrelid, stmt->rtable);

			if (rte->rtekind == RTE_RELATION && rte->relkind == RELKIND_RELATION)
				relid = rte->relid;
		}
	}
	ReleaseCachedPlan(cplan, CurrentResourceOwner);
	return relid;
}

/* How many workers PostgreSQL would give a parallel scan of rel (0: none). */
static int
read_workers(Relation rel)
{
	BlockNumber pages = RelationGetNumberOfBlocks(rel);
	int			workers = RelationGetParallelWorkers(rel, -1);

	if (workers < 0)
	{
		/* as the planner does: one worker, one more each time the size triples */
		double		threshold = Max(min_parallel_table_scan_size, 1);

		if (pages < threshold)
			return 0;
		workers = 1;
		while (pages >= threshold * 3 && workers < 64)
		{
			workers++;
			threshold *= 3;
		}
	}
	return Min(workers, max_parallel_workers_per_gather);
}

/* Scan this participant's share of the relation into its records. */
static void
read_participant(LineCollector *lc, const ReadShared *sh, ParallelTableScanDesc pscan)
{
	Relation	rel = table_open(sh->relid, AccessShareLock);
	TableScanDesc scan = table_beginscan_parallel(rel, pscan);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext, "tco settle read rows",
												 ALLOCSET_DEFAULT_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(rowcxt);
	AttrNumber	natts = 0;
	Datum		values[5];
	bool		isnull[5];
	int			k;

	for (k = 0; k < 5; k++)
		natts = Max(natts, sh->attnums[k]);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		slot_getsomeattrs(slot, natts);
		for (k = 0; k < 5; k++)
		{
			values[k] = slot->tts_values[sh->attnums[k] - 1];
			isnull[k] = slot->tts_isnull[sh->attnums[k] - 1];
		}
		/* the read query's own condition (the partition's bounds, normally) */
		if (!isnull[3] && (DatumGetTimestampTz(values[3]) < sh->start ||
						   DatumGetTimestampTz(values[3]) >= sh->end))
			continue;
		collect_values(lc, values, isnull);
		/* what a rare detoasting or numeric fallback allocated */
		if ((lc->received & 0xFFF) == 0)
			MemoryContextReset(rowcxt);
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(rowcxt);
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	table_close(rel, AccessShareLock);
}

static char *
read_file_name(int participant, const char *what)
{
	return psprintf("tco.read.%d.%s", participant, what);
}

/*
 * Worker entry point (CreateParallelContext): read a share of the
 * relation, write every record as sorted runs, then the list of the runs
 * and the consumers seen as two more files of the set for the leader.
 */
void
tco_settle_read_worker(dsm_segment *seg, shm_toc *toc)
{
	ReadShared *sh = shm_toc_lookup(toc, READ_KEY_SHARED, false);
	ParallelTableScanDesc pscan = shm_toc_lookup(toc, READ_KEY_SCAN, false);
	const char *codes = shm_toc_lookup(toc, READ_KEY_PRODUCTS, false);
	dsm_segment *fseg = dsm_attach(sh->files);
	SharedFileSet *fs;
	SettleRun  *run = palloc0(sizeof(SettleRun));
	LineCollector lc;
	BufFile    *list;
	int32		n;
	int			i;

	if (fseg == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("could not attach to the shared temporary files of a settlement")));
	fs = dsm_segment_address(fseg);
	SharedFileSetAttach(fs, fseg);

	run->run_ctx = CurrentMemoryContext;
	run->nproducts = sh->nproducts;
	run->products = palloc((Size) PRODUCT_CODE_LEN * Max(sh->nproducts, 1));
	memcpy(run->products, codes, (Size) PRODUCT_CODE_LEN * sh->nproducts);
	index_products(run);

	collector_init(&lc, run, sh->cap, sh->fan_in);
	lc.fileset = &fs->fs;
	lc.participant = ParallelWorkerNumber;
	read_participant(&lc, sh, pscan);
	if (lc.n > 0)
		spill_run(&lc);

	list = BufFileCreateFileSet(&fs->fs, read_file_name(lc.participant, "runs"));
	n = lc.nruns;
	BufFileWrite(list, &n, sizeof(n));
	for (i = 0; i < lc.nruns; i++)
	{
		char		name[READ_NAME_LEN];

		memset(name, 0, sizeof(name));
		strlcpy(name, lc.names[i], sizeof(name));
		BufFileWrite(list, name, sizeof(name));
		BufFileClose(lc.runs[i]);
	}
	BufFileClose(list);
	list = BufFileCreateFileSet(&fs->fs, read_file_name(lc.participant, "consumers"));
	if (lc.nconsumers > 0)
		BufFileWrite(list, lc.consumer_ids, sizeof(int64) * lc.nconsumers);
	BufFileClose(list);

	SpinLockAcquire(&sh->mutex);
	sh->received += lc.received;
	sh->spilled_runs += run->spilled_runs;
	sh->spilled_kb += run->spilled_kb;
	sh->intermediate_merges += run->intermediate_merges;
	sh->radix_sort |= run->radix_sort;
	SpinLockRelease(&sh->mutex);
	dsm_detach(fseg);
}

/* Read all of a file of the set (fixed-size items), or fail clearly. */
static void
read_exactly(BufFile *file, void *ptr, size_t size)
{
	size_t		got = BufFileRead(file, ptr, size);

	if (got != size)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read a temporary file of a parallel settlement read: read %zu of %zu bytes",
						got, size)));
}

/*
 * The parallel read, when the plan allows it: returns false (nothing read)
 * to let the caller run the read query.  On success lc holds the leader's
 * last array and every participant's runs, and *fseg the segment of their
 * file set, to detach when the runs are merged.
 */
static bool
read_parallel(SettleRun *run, LineCollector *lc, SPIPlanPtr plan, ParamListInfo params,
			  TimestampTz start, TimestampTz end, dsm_segment **fseg)
{
	Oid			relid;
	Relation	rel;
	int			nworkers;
	AttrNumber	attnums[5];
	ParallelContext *pcxt;
	Snapshot	snapshot;
	Size		scan_size;
	ReadShared *sh;
	ParallelTableScanDesc pscan;
	char	   *codes;
	SharedFileSet *fs;
	int			k;
	int			p;

	*fseg = NULL;
	if (!IsUnderPostmaster || IsInParallelMode() || max_parallel_workers_per_gather <= 0 ||
		max_parallel_workers <= 0)
		return false;
	relid = read_scan_relation(plan, params);
	if (!OidIsValid(relid))
		return false;
	for (k = 0; k < 5; k++)
	{
		attnums[k] = get_attnum(relid, read_columns[k]);
		if (attnums[k] == InvalidAttrNumber || get_atttype(relid, attnums[k]) != read_types[k])
			return false;		/* the read query reports what is wrong */
	}
	rel = table_open(relid, AccessShareLock);
	nworkers = read_workers(rel);
	if (nworkers <= 0)
	{
		table_close(rel, AccessShareLock);
		return false;
	}

	/*
	 * What the read query would see (SPI with read_only false): this
	 * transaction's writes so far and, in READ COMMITTED, a fresh snapshot,
	 * taken after the settlement lock.  The workers get it with the scan.
	 */
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	snapshot = GetActiveSnapshot();

	EnterParallelMode();
	pcxt = CreateParallelContext("tco", "tco_settle_read_worker", nworkers);
	scan_size = table_parallelscan_estimate(rel, snapshot);
	shm_toc_estimate_chunk(&pcxt->estimator, sizeof(ReadShared));
	shm_toc_estimate_chunk(&pcxt->estimator, scan_size);
	shm_toc_estimate_chunk(&pcxt->estimator, (Size) PRODUCT_CODE_LEN * Max(run->nproducts, 1));
	shm_toc_estimate_keys(&pcxt->estimator, 3);
	InitializeParallelDSM(pcxt);
	if (pcxt->seg == NULL)
	{
		/* no dynamic shared memory to be had: read without workers */
		DestroyParallelContext(pcxt);
		ExitParallelMode();
		PopActiveSnapshot();
		table_close(rel, AccessShareLock);
		return false;
	}
	*fseg = dsm_create(sizeof(SharedFileSet), 0);
	fs = dsm_segment_address(*fseg);
	SharedFileSetInit(fs, *fseg);

	sh = shm_toc_allocate(pcxt->toc, sizeof(ReadShared));
	memset(sh, 0, sizeof(*sh));
	sh->relid = relid;
	memcpy(sh->attnums, attnums, sizeof(attnums));
	sh->start = start;
	sh->end = end;
	sh->cap = lc->cap;
	sh->fan_in = lc->fan_in;
	sh->nproducts = run->nproducts;
	sh->files = dsm_segment_handle(*fseg);
	SpinLockInit(&sh->mutex);
	pscan = shm_toc_allocate(pcxt->toc, scan_size);
	table_parallelscan_initialize(rel, pscan, snapshot);
	codes = shm_toc_allocate(pcxt->toc, (Size) PRODUCT_CODE_LEN * Max(run->nproducts, 1));
	memcpy(codes, run->products, (Size) PRODUCT_CODE_LEN * run->nproducts);
	shm_toc_insert(pcxt->toc, READ_KEY_SHARED, sh);
	shm_toc_insert(pcxt->toc, READ_KEY_SCAN, pscan);
	shm_toc_insert(pcxt->toc, READ_KEY_PRODUCTS, codes);

	LaunchParallelWorkers(pcxt);
	/* the leader reads too, keeping its last array in memory */
	lc->fileset = &fs->fs;
	lc->participant = -1;
	read_participant(lc, sh, pscan);
	WaitForParallelWorkersToFinish(pcxt);

	/* the workers' runs and consumers */
	for (p = 0; p < pcxt->nworkers_launched; p++)
	{
		BufFile    *list = BufFileOpenFileSet(&fs->fs, read_file_name(p, "runs"), O_RDONLY, false);
		int32		n;
		int			i;
		int64		ids[1024];
		size_t		got;

		read_exactly(list, &n, sizeof(n));
		for (i = 0; i < n; i++)
		{
			char		name[READ_NAME_LEN];

			read_exactly(list, name, sizeof(name));
			name[READ_NAME_LEN - 1] = '\0';
			add_run(lc, BufFileOpenFileSet(&fs->fs, name, O_RDONLY, false),
					MemoryContextStrdup(run->run_ctx, name), 0);
		}
		BufFileClose(list);
		list = BufFileOpenFileSet(&fs->fs, read_file_name(p, "consumers"), O_RDONLY, false);
		while ((got = BufFileRead(list, ids, sizeof(ids))) > 0)
		{
			if (got % sizeof(int64) != 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not read a temporary file of a parallel settlement read")));
			for (i = 0; i < (int) (got / sizeof(int64)); i++)
				note_consumer(lc, ids[i]);
		}
		BufFileClose(list);
	}
	lc->received += sh->received;
	run->spilled_runs += sh->spilled_runs;
	run->spilled_kb += sh->spilled_kb;
	run->intermediate_merges += sh->intermediate_merges;
	run->radix_sort |= sh->radix_sort;
	run->read_workers = pcxt->nworkers_launched;

	DestroyParallelContext(pcxt);
	ExitParallelMode();
	PopActiveSnapshot();
	table_close(rel, AccessShareLock);
	return true;
}

/*
 * Read the cycle's lines once and settle them in the fixed order (consumer,
 * product, period start, line id).  The read query has no ORDER BY (an SQL
 * sort on the product code text cost three times the whole aggregate): the
 * lines arrive in physical order as compact records (LineRec, 40 bytes, the
 * product as its rank in collation order) into an array of about work_mem.
 * If they all fit, the array is put in order in memory (sort_segments) and
 * settled.  If not, each time the array fills it is put in order and
 * written to temporary files as sorted runs (spill_run: an external merge
 * sort, as PostgreSQL's own sorts spill, with the radix sort for the runs),
 * and at the end the runs and the last array are merged, the lines settled
 * as they come out of the merge.  Runs are merged fan_in at a time as they
 * accumulate (tiered, see spill_run), fan_in being how many read buffers of
 * BLCKSZ work_mem has room for.  Either way the cycle is scanned once, never again, and memory stays
 * bounded by work_mem plus what is bounded by accounts, products, payers and
 * benefits: the lines are settled in slices of FETCH_BATCH (settle_lines),
 * each slice's per-line records written and freed (settle_batch_flush).
 * A large cycle is read by parallel workers with the leader (read_parallel).
 */
void
settle_read_lines(SettleRun *run, TimestampTz start, TimestampTz end, bool skip_settled)
{
	Datum		args[3];
	SettlePlan	which = run->exclude_late ? (run->has_org ? PLAN_LINES_ORG_NOLATE : PLAN_LINES_NOLATE) :
		(run->has_org ? PLAN_LINES_ORG : PLAN_LINES);
	LineCollector lc;
	ParamListInfo params;
	dsm_segment *fseg = NULL;
	int			nmemsegs;
	int			k;

	/*
	 * Records, and two words each for order_lines.  A merge keeps two
	 * blocks (BLCKSZ) of each of its runs in memory: the temporary file's
	 * buffer and the merge's own (merge_runs).  At most half of work_mem
	 * goes to them.
	 */
	collector_init(&lc, run,
				   Max((Size) work_mem * 1024 / (sizeof(LineRec) + 2 * sizeof(uint64)), (Size) RADIX_MIN_LINES),
				   Max((int) Min((Size) work_mem * 1024 / (4 * BLCKSZ), (Size) 2048), 4));
	args[0] = TimestampTzGetDatum(start);
	args[1] = TimestampTzGetDatum(end);
	args[2] = Int64GetDatum(run->org_id);
	params = makeParamList(run->has_org ? 3 : 2);
	for (k = 0; k < params->numParams; k++)
	{
		params->params[k].value = args[k];
		params->params[k].isnull = false;
		params->params[k].pflags = PARAM_FLAG_CONST;
		params->params[k].ptype = k < 2 ? TIMESTAMPTZOID : INT8OID;
	}
	if (which != PLAN_LINES ||
		!read_parallel(run, &lc, settle_get_plan(which), params, start, end, &fseg))
	{
		SPIExecuteOptions options;
		int			ret;

		memset(&options, 0, sizeof(options));
		options.params = params;
		/*
		 * read_only = false: a fresh snapshot, taken after the settlement
		 * lock, so lines committed by sessions we waited for are seen.  The
		 * rows go straight to collect_line, without being copied into a
		 * tuple table.  The plan is made for these bounds (a custom plan,
		 * settle_get_plan).
		 */
		options.read_only = false;
		options.dest = (DestReceiver *) &lc;
		ret = SPI_execute_plan_extended(settle_get_plan(which), &options);
		if (ret < 0)
			elog(ERROR, "reading the cycle's bill lines failed: %s", SPI_result_code_string(ret));
	}
	run->nreceived = lc.received;
	phase_done(run, PHASE_READ);

	sort_segments(&lc);
	/* the last merge reads fan_in sources at most (runs and sorted segments) */
	nmemsegs = (int) ((lc.n + lc.seg - 1) / lc.seg);
	while (lc.nruns > 1 && lc.nruns + nmemsegs > lc.fan_in)
	{
		int			count = Min(lc.nruns, Max(lc.fan_in - nmemsegs, 2));

		merge_into_one(&lc, 0, count, 1);
	}
	phase_done(run, PHASE_SORT);
	/* the consumers' accounts, with a query per ACCOUNTS_PER_QUERY of them */
	settle_preload_accounts(run, lc.consumer_ids, lc.nconsumers);
	if (lc.consumers)
	{
		hash_destroy(lc.consumers);
		pfree(lc.consumer_ids);
	}
	if (lc.nruns == 0 && lc.n <= lc.seg)
	{
		/* everything fit in work_mem, in one segment: settle it by slices */
		Size		i;

		for (i = 0; i < lc.n; i += FETCH_BATCH)
			settle_lines(run, lc.recs + i, Min((Size) FETCH_BATCH, lc.n - i), skip_settled);
	}
	else
	{
		/* merge the runs on disk and the segments in memory, settle as they come */
		int			i;

		merge_runs(run, lc.runs, lc.nruns, lc.recs, lc.n, lc.seg, sink_to_settle, &skip_settled);
		for (i = 0; i < lc.nruns; i++)
			run_file_close(&lc, lc.runs[i], lc.names[i]);
		if (lc.runs)
		{
			pfree(lc.runs);
			pfree(lc.levels);
			pfree(lc.names);
		}
	}
	/* the shared file set goes with its segment */
	if (fseg != NULL)
		dsm_detach(fseg);
	if (lc.idx)
		pfree(lc.idx);
	pfree(lc.recs);
}
