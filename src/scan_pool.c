/*
 * scan_pool.c: a scan's pool of candidates and the order it takes them in.
 *
 * The candidates of every round read so far, with two min-heaps (two tiers:
 * a heap of the smallest keys, the rest unordered until it empties) of the
 * indexes of those not re-scored yet (by lower bound; by estimate, under a
 * re-scoring budget), the look-ahead popped from the first so that their
 * sidecar records can be prefetched, and the min-heap of re-scored rows by
 * exact score. The arrays live in a per-backend scratch area between scans.
 */
#include "scan.h"

#include "access/xact.h"
#include "utils/float.h"
#include "utils/memutils.h"

/*
 * Candidate arrays outlive the scan in a per-backend scratch area: freeing
 * them at every query would hand the memory back to the kernel (glibc trims
 * the heap) and fault it in again at the next one, which cost more than the
 * scan itself. One scan at a time owns it; a nested scan allocates its own.
 * A scan that ends with an error never calls endscan, so transaction end
 * frees the area for the next scan.
 */
typedef struct ScanScratch
{
	bool in_use;
	Candidate *cands;
	PoolEntry *by_est;
	PoolEntry *by_lower;
	int64 capacity;
} ScanScratch;

static ScanScratch scratch;

/* Above this many candidates a scan gives its arrays back when it ends. */
#define VIDX_SCRATCH_KEEP (1024 * 1024)

void
vidx_pool_take_scratch(VidxScanOpaque so)
{
	if (!scratch.in_use)
	{
		scratch.in_use = true;
		so->owns_scratch = true;
		so->cands = scratch.cands;
		so->by_est.e = scratch.by_est;
		so->by_lower.e = scratch.by_lower;
		so->cands_capacity = scratch.capacity;
	}
}

/* ---------- two heaps of candidates, in two tiers ---------- */

/* Entries a tier's front aims at: about what a LIMIT 10 scan pops, with room. */
#define VIDX_HEAP_FRONT 1024
/* Keys sampled to place the cut. */
#define VIDX_HEAP_SAMPLE 256

static inline float
cand_key(const VidxScanOpaque so, int64 id, bool by_lower)
{
	return by_lower ? so->cands[id].lower : so->cands[id].est;
}

static void
id_sift_down(PoolEntry *h, int64 n, int64 i)
{
	PoolEntry x = h[i];

	for (;;)
	{
		int64 c = 2 * i + 1;

		if (c >= n)
			break;
		if (c + 1 < n && h[c + 1].key < h[c].key)
			c++;
		if (!(h[c].key < x.key))
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = x;
}

/*
 * The k-th smallest of a[0 .. n-1] (quickselect, Hoare's partition; a is
 * reordered): refill needs one order statistic of its sample, not the sample
 * sorted (a qsort of it was 6% of a Fashion-MNIST query). A NaN compares
 * false both ways, which only stops the scans earlier.
 */
static float
select_kth(float *a, int n, int k)
{
	int lo = 0, hi = n - 1;

	while (lo < hi)
	{
		float pivot = a[lo + (hi - lo) / 2];
		int i = lo, j = hi;

		while (i <= j)
		{
			while (a[i] < pivot)
				i++;
			while (pivot < a[j])
				j--;
			if (i <= j)
			{
				float t = a[i];

				a[i++] = a[j];
				a[j--] = t;
			}
		}
		if (k <= j)
			hi = j;
		else if (k >= i)
			lo = i;
		else
			break; /* j < k < i: a[k] equals the pivot */
	}
	return a[k];
}

/*
 * Makes the back's entries with the smallest keys (about VIDX_HEAP_FRONT, by a
 * cut placed from an evenly spaced sample of their keys) the new front heap,
 * once the front is empty: a partition of the back in place, then a heapify
 * of its first part. Every key left behind is above the cut; when the cut
 * takes none of them (keys that do not compare, NaN) it takes them all.
 */
static void
refill(PoolHeap *h)
{
	PoolEntry *back = h->e + h->back;
	int64 nback = h->nback;
	int64 m = 0;

	Assert(h->nfront == 0 && nback > 0);
	if (nback <= VIDX_HEAP_FRONT)
		h->cut = get_float4_infinity();
	else
	{
		float sample[VIDX_HEAP_SAMPLE];
		int ns = VIDX_HEAP_SAMPLE;
		int rank;

		for (int i = 0; i < ns; i++)
			sample[i] = back[(int64) i * nback / ns].key;
		rank = (int) Min((double) ns - 1, (double) ns * VIDX_HEAP_FRONT / (double) nback);
		h->cut = select_kth(sample, ns, rank);
	}
	for (int64 i = 0; i < nback; i++)
	{
		if (back[i].key <= h->cut)
		{
			PoolEntry x = back[i];

			back[i] = back[m];
			back[m++] = x;
		}
	}
	if (m == 0)
		m = nback; /* nothing compared at or below the cut: take them all */
	h->front = h->back;
	h->nfront = m;
	h->back += m;
	h->nback -= m;
	for (int64 i = m / 2 - 1; i >= 0; i--)
		id_sift_down(h->e + h->front, m, i);
}

/* Fills a heap with the keys of candidates 0 .. n-1 (all in the back, then a refill). */
static void
heap_build(VidxScanOpaque so, PoolHeap *h, bool by_lower)
{
	h->front = h->nfront = h->back = 0;
	h->nback = so->ncands;
	for (int64 i = 0; i < so->ncands; i++)
	{
		h->e[i].key = cand_key(so, i, by_lower);
		h->e[i].id = i;
	}
	if (h->nback > 0)
		refill(h);
}

static int64
id_pop(PoolHeap *h)
{
	PoolEntry *f = h->e + h->front;
	int64 top = f[0].id;

	f[0] = f[--h->nfront];
	if (h->nfront > 0)
		id_sift_down(f, h->nfront, 0);
	else if (h->nback > 0)
		refill(h);
	return top;
}

/* The smallest candidate after shedding re-scored ones, or -1. */
static int64
heap_top(VidxScanOpaque so, PoolHeap *h)
{
	while (h->nfront > 0 && so->cands[h->e[h->front].id].rescored)
		(void) id_pop(h);
	return h->nfront > 0 ? h->e[h->front].id : -1;
}

void
vidx_result_push(VidxScanOpaque so, double score, double distance, ItemPointer tid)
{
	int64 i;

	if (so->nresults == so->results_capacity)
	{
		so->results_capacity = Max(64, so->results_capacity * 2);
		so->results =
		    so->results == NULL
		        ? MemoryContextAlloc(so->scan_cxt, sizeof(ScanResult) * so->results_capacity)
		        : repalloc(so->results, sizeof(ScanResult) * so->results_capacity);
	}
	i = so->nresults++;
	while (i > 0 && score < so->results[(i - 1) / 2].score)
	{
		so->results[i] = so->results[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	so->results[i].score = score;
	so->results[i].distance = distance;
	so->results[i].tid = *tid;
}

ScanResult
vidx_result_pop(VidxScanOpaque so)
{
	ScanResult top = so->results[0];
	ScanResult x = so->results[--so->nresults];
	int64 n = so->nresults;
	int64 i = 0;

	for (;;)
	{
		int64 c = 2 * i + 1;

		if (c >= n)
			break;
		if (c + 1 < n && so->results[c + 1].score < so->results[c].score)
			c++;
		if (!(so->results[c].score < x.score))
			break;
		so->results[i] = so->results[c];
		i = c;
	}
	if (n > 0)
		so->results[i] = x;
	return top;
}

/* Room for n more candidates; the arrays grow by doubling and never shrink during a scan. */
void
vidx_pool_reserve(VidxScanOpaque so, int64 n)
{
	MemoryContext cxt = so->owns_scratch ? TopMemoryContext : so->scan_cxt;
	int64 capacity;

	if (so->ncands + n <= so->cands_capacity)
		return;
	capacity = Max(so->cands_capacity * 2, so->ncands + n + 1024);
	if (so->cands == NULL)
	{
		so->cands = MemoryContextAllocHuge(cxt, sizeof(Candidate) * capacity);
		so->by_est.e = MemoryContextAllocHuge(cxt, sizeof(PoolEntry) * capacity);
		so->by_lower.e = MemoryContextAllocHuge(cxt, sizeof(PoolEntry) * capacity);
	}
	else
	{
		so->cands = repalloc_huge(so->cands, sizeof(Candidate) * capacity);
		so->by_est.e = repalloc_huge(so->by_est.e, sizeof(PoolEntry) * capacity);
		so->by_lower.e = repalloc_huge(so->by_lower.e, sizeof(PoolEntry) * capacity);
	}
	so->cands_capacity = capacity;
	if (so->owns_scratch)
	{
		scratch.cands = so->cands;
		scratch.by_est = so->by_est.e;
		scratch.by_lower = so->by_lower.e;
		scratch.capacity = capacity;
	}
}

void
vidx_pool_release(VidxScanOpaque so)
{
	if (so->owns_scratch)
	{
		if (scratch.capacity > VIDX_SCRATCH_KEEP)
		{
			pfree(scratch.cands);
			pfree(scratch.by_est);
			pfree(scratch.by_lower);
			scratch.cands = NULL;
			scratch.by_est = scratch.by_lower = NULL;
			scratch.capacity = 0;
		}
		scratch.in_use = false;
		so->owns_scratch = false;
	}
	else if (so->cands != NULL)
	{
		pfree(so->cands);
		pfree(so->by_est.e);
		pfree(so->by_lower.e);
	}
	so->cands = NULL;
	so->by_est.e = so->by_lower.e = NULL;
	so->cands_capacity = 0;
}

static void
scratch_xact_callback(XactEvent event, void *arg)
{
	/*
	 * No scan outlives its transaction (a holdable cursor is run to the end
	 * before commit), so whoever owned the scratch is gone; a scan that failed,
	 * also inside a subtransaction, never released it.
	 */
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
	    event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		scratch.in_use = false;
		vidx_tree_unpin_all();
	}
}

void
vidx_pool_init(void)
{
	RegisterXactCallback(scratch_xact_callback, NULL);
}

/*
 * Drops the re-scored candidates from the pool (their rows are in the results
 * heap or were returned), so that a deep scan holds only what it has not
 * scored yet. vidx_pool_build_heaps follows; the look-ahead goes back into the heaps.
 */
void
vidx_pool_compact(VidxScanOpaque so)
{
	int64 m = 0;

	for (int64 i = 0; i < so->ncands; i++)
		if (!so->cands[i].rescored)
			so->cands[m++] = so->cands[i];
	so->ncands = m;
	so->by_lower.nfront = so->by_lower.nback = so->by_est.nfront = so->by_est.nback = 0;
	so->nahead = so->ahead_pos = 0;
}

/*
 * Builds the heaps over the whole pool (every candidate in it is not
 * re-scored yet): Floyd's construction, linear in the pool.
 */
void
vidx_pool_build_heaps(VidxScanOpaque so)
{
	heap_build(so, &so->by_lower, true);
	if (so->rerank > 0)
		heap_build(so, &so->by_est, false);
}

/*
 * Lowest lower bound (by_lower) or estimate (under a budget only) of the
 * candidates not re-scored yet, or +inf.
 */
float
vidx_pool_min_left(VidxScanOpaque so, bool by_lower)
{
	int64 top = heap_top(so, by_lower ? &so->by_lower : &so->by_est);
	float m = top >= 0 ? cand_key(so, top, by_lower) : get_float4_infinity();

	for (int i = so->ahead_pos; i < so->nahead; i++)
		m = Min(m, cand_key(so, so->ahead[i], by_lower));
	return m;
}

/* Candidates not re-scored yet? */
bool
vidx_pool_more_to_rescore(VidxScanOpaque so)
{
	return so->ahead_pos < so->nahead || heap_top(so, &so->by_lower) >= 0;
}

/*
 * The next candidate to re-score: the lowest lower bound first, which settles
 * each row with the fewest exact distances (every candidate whose bound is
 * below a row must be re-scored before it anyway). Tops up the look-ahead and
 * prefetches its records (from disk, once one was found not cached).
 */
Candidate *
vidx_pool_next_to_rescore(IndexScanDesc scan)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	Relation index = scan->indexRelation;

	/* a sliding window: the look-ahead is topped up at each step */
	if (so->ahead_pos > 0)
	{
		memmove(so->ahead, so->ahead + so->ahead_pos, sizeof(int64) * (so->nahead - so->ahead_pos));
		so->nahead -= so->ahead_pos;
		so->ahead_pos = 0;
	}
	while (so->nahead < (so->sidecar_io ? VIDX_IO_LOOKAHEAD : VIDX_LOOKAHEAD) &&
	       heap_top(so, &so->by_lower) >= 0)
	{
		Candidate *c = &so->cands[id_pop(&so->by_lower)];

		so->ahead[so->nahead++] = c - so->cands;
		/*
		 * Ask the page cache (a mincore call) about the first records and then
		 * one in VIDX_RESIDENCY_SAMPLE: a scan over a cached sidecar re-scores
		 * hundreds, and a sidecar that does not fit shows within a few.
		 */
		if (!so->sidecar_io &&
		    (so->residency_asked++ < VIDX_RESIDENCY_FIRST ||
		     so->residency_asked % VIDX_RESIDENCY_SAMPLE == 0) &&
		    !vidx_sidecar_resident(index, &so->meta, c->slot))
		{
			/* from now on, start the reads of the whole look-ahead */
			so->sidecar_io = true;
			for (int i = 0; i < so->nahead - 1; i++)
				vidx_sidecar_willneed(index, &so->meta, so->cands[so->ahead[i]].slot);
		}
		if (so->sidecar_io)
			vidx_sidecar_willneed(index, &so->meta, c->slot);
		else
			vidx_sidecar_prefetch(index, &so->meta, c->slot);
	}
	return &so->cands[so->ahead[so->ahead_pos++]];
}
