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

/* Product codes in the collation order of ORDER BY product_code. */
void
settle_load_products(SettleRun *run)
{
	SPITupleTable *tt;
	HASHCTL		ctl;
	uint64		i;

	ctl.keysize = PRODUCT_CODE_LEN;
	ctl.entrysize = sizeof(ProductEntry);
	ctl.hcxt = run->run_ctx;
	run->product_ranks = hash_create("tco settle products", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	settle_exec_plan(PLAN_PRODUCTS, NULL, NULL, true, 0);
	tt = SPI_tuptable;
	if (SPI_processed >= PG_INT32_MAX)
		elog(ERROR, "too many products");
	run->nproducts = (int) SPI_processed;
	run->products = MemoryContextAllocHuge(run->run_ctx, (Size) PRODUCT_CODE_LEN * Max(SPI_processed, 1));
	run->product_len = MemoryContextAllocHuge(run->run_ctx, sizeof(int) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		bool		found;
		ProductEntry *e;

		settle_text_to_code(settle_get_text(tt->vals[i], tt->tupdesc, 1, &isnull), run->products[i]);
		if (isnull)
			ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("tco.product has a NULL product code"),
				 errhint("The primary key of tco.product was dropped: restore it.")));
		run->product_len[i] = (int) strlen(run->products[i]);
		e = hash_search(run->product_ranks, run->products[i], HASH_ENTER, &found);
		e->rank = (int32) i;
	}
	SPI_freetuptable(tt);
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
	int		   *levels;			/* ... and how many merges made each */
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

/* The shape collect_line reads: line_id, account_id, product_code, period_start, list_amount. */
static void
collect_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	static const Oid types[5] = {INT8OID, INT8OID, TEXTOID, TIMESTAMPTZOID, NUMERICOID};

	tco_check_columns(typeinfo, 5, types, "the bill lines of the cycle (tco.bill_line)");
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
note_consumers(LineCollector *lc, const LineRec *recs, Size n)
{
	Size		i;

	if (lc->consumers == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(int64);
		ctl.hcxt = lc->run->run_ctx;
		lc->consumers = hash_create("tco settle consumers", 1024, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	for (i = 0; i < n; i++)
	{
		bool		found;

		if (i > 0 && recs[i].account_id == recs[i - 1].account_id)
			continue;
		(void) hash_search(lc->consumers, &recs[i].account_id, HASH_ENTER, &found);
		if (found)
			continue;
		if (lc->nconsumers == lc->consumers_cap)
		{
			lc->consumers_cap = Max(lc->consumers_cap * 2, 1024);
			lc->consumer_ids = lc->consumer_ids ?
				repalloc_huge(lc->consumer_ids, sizeof(int64) * lc->consumers_cap) :
				MemoryContextAllocHuge(lc->run->run_ctx, sizeof(int64) * lc->consumers_cap);
		}
		lc->consumer_ids[lc->nconsumers++] = recs[i].account_id;
	}
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
		/* temporary files of this transaction, closed by the resource owner on error */
		BufFile    *file = BufFileCreateTemp(false);

		BufFileWrite(file, lc->recs + lo, sizeof(LineRec) * n);
		if (lc->nruns == lc->runs_cap)
		{
			lc->runs_cap = Max(lc->runs_cap * 2, lc->fan_in + 1);
			lc->runs = lc->runs ? repalloc(lc->runs, sizeof(BufFile *) * lc->runs_cap) :
				palloc(sizeof(BufFile *) * lc->runs_cap);
			lc->levels = lc->levels ? repalloc(lc->levels, sizeof(int) * lc->runs_cap) :
				palloc(sizeof(int) * lc->runs_cap);
		}
		lc->runs[lc->nruns] = file;
		lc->levels[lc->nruns++] = 0;
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
		{
			int			first = lc->nruns - lc->fan_in;
			BufFile    *merged = BufFileCreateTemp(false);
			int			i;

			merge_runs(run, lc->runs + first, lc->fan_in, NULL, 0, lc->seg, sink_to_file, merged);
			for (i = first; i < lc->nruns; i++)
				BufFileClose(lc->runs[i]);
			lc->runs[first] = merged;
			lc->levels[first]++;
			lc->nruns = first + 1;
			run->intermediate_merges++;
		}
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

static bool
collect_line(TupleTableSlot *slot, DestReceiver *self)
{
	LineCollector *lc = (LineCollector *) self;
	SettleRun  *run = lc->run;
	LineRec    *r;
	text	   *code;
	int			len;

	slot_getallattrs(slot);
	if (slot->tts_isnull[0] || slot->tts_isnull[1] || slot->tts_isnull[2] ||
		slot->tts_isnull[3] || slot->tts_isnull[4])
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("a bill line of the cycle has a NULL line_id, account_id, product_code, period_start or list_amount"),
				 errhint("A NOT NULL constraint of tco.bill_line was dropped: restore it and correct the line.")));
	lc->received++;
	if (lc->n == lc->cap)
		spill_run(lc);
	r = &lc->recs[lc->n++];
	r->line_id = DatumGetInt64(slot->tts_values[0]);
	r->account_id = DatumGetInt64(slot->tts_values[1]);
	code = DatumGetTextPP(slot->tts_values[2]);
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
			settle_text_to_code(slot->tts_values[2], buf);
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
	r->period_start = DatumGetTimestampTz(slot->tts_values[3]);
	r->list = numeric_to_micro(slot->tts_values[4]);
	if ((lc->received & 0x3FFF) == 0)
		CHECK_FOR_INTERRUPTS();
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
 */
void
settle_read_lines(SettleRun *run, TimestampTz start, TimestampTz end, bool skip_settled)
{
	Datum		args[3];
	SettlePlan	which = run->exclude_late ? (run->has_org ? PLAN_LINES_ORG_NOLATE : PLAN_LINES_NOLATE) :
		(run->has_org ? PLAN_LINES_ORG : PLAN_LINES);
	LineCollector lc;
	SPIExecuteOptions options;
	ParamListInfo params;
	int			k;

	memset(&lc, 0, sizeof(lc));
	lc.pub.receiveSlot = collect_line;
	lc.pub.rStartup = collect_startup;
	lc.pub.rShutdown = collect_shutdown;
	lc.pub.rDestroy = collect_shutdown;
	lc.pub.mydest = DestNone;
	lc.run = run;
	lc.last_rank = -1;
	/* records, and two words each for order_lines */
	lc.cap = Max((Size) work_mem * 1024 / (sizeof(LineRec) + 2 * sizeof(uint64)), (Size) RADIX_MIN_LINES);
	lc.recs = MemoryContextAllocHuge(run->run_ctx, lc.cap * sizeof(LineRec));
	lc.seg = lc.cap <= 2 * SEGMENT_LINES ? lc.cap : SEGMENT_LINES;
	/*
	 * A merge keeps two blocks (BLCKSZ) of each of its runs in memory: the
	 * temporary file's buffer and the merge's own (merge_runs).  At most
	 * half of work_mem goes to them.
	 */
	lc.fan_in = Max((int) Min((Size) work_mem * 1024 / (4 * BLCKSZ), (Size) 2048), 4);
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
	memset(&options, 0, sizeof(options));
	options.params = params;
	/*
	 * read_only = false: a fresh snapshot, taken after the settlement lock,
	 * so lines committed by sessions we waited for are seen.  The rows go
	 * straight to collect_line, without being copied into a tuple table.
	 * The plan is made for these bounds (a custom plan, settle_get_plan).
	 */
	options.read_only = false;
	options.dest = (DestReceiver *) &lc;
	{
		int			ret = SPI_execute_plan_extended(settle_get_plan(which), &options);

		if (ret < 0)
			elog(ERROR, "reading the cycle's bill lines failed: %s", SPI_result_code_string(ret));
	}
	run->nreceived = lc.received;
	phase_done(run, PHASE_READ);

	sort_segments(&lc);
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
			BufFileClose(lc.runs[i]);
		if (lc.runs)
		{
			pfree(lc.runs);
			pfree(lc.levels);
		}
	}
	if (lc.idx)
		pfree(lc.idx);
	pfree(lc.recs);
}
