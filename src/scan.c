/*
 * scan.c: index scans (ORDER BY col <op> query LIMIT k) and planner costs.
 *
 * A scan walks the tree best-first, so leaves come in order of their
 * centroid's distance to the query. The first round reads vidx.probes leaves
 * and estimates every posting's score, with a lower bound, from its binary
 * code; the candidates of every round read so far form one pool. Candidates
 * are re-scored exactly (full vector from the sidecar, or from the table when
 * the sidecar cannot vouch for it) lowest lower bound first, and a row is
 * returned as soon as its exact score is at or below the lower bound of every
 * candidate of the pool not re-scored yet (or, under a re-scoring budget,
 * vidx.rerank > 0, once the budget is spent and it is at or below their
 * estimates). When the executor has taken a quarter as many rows as the
 * candidates read (a WHERE clause rejects rows, or a large LIMIT), the next
 * round, twice as many leaves as the last, joins the pool before the next row
 * is returned.
 *
 * Order is an invariant, not an accident of the bounds: a row is never
 * returned after a row with a larger distance. A re-scored row that is closer
 * than one already returned (it came from a later round, or the budget
 * returned rows before the bounds had settled, or a probabilistic bound
 * failed) is skipped: approximation may miss a row, never reorder rows. Only
 * vidx.iterative_scan = relaxed_order, an opt-in, returns such rows anyway.
 */
#include "vidx.h"

#include <float.h>
#include <math.h>

#include "access/relscan.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "optimizer/optimizer.h"
#include "pgstat.h"
#include "utils/float.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/selfuncs.h"
#include "utils/snapmgr.h"

/* A posting seen by the scan, kept after its page lock is released. */
typedef struct Candidate
{
	float est;   /* estimated score */
	float lower; /* lower bound of its score */
	uint32 heap_block;
	uint16 heap_offset;
	bool rescored;
	uint32 slot;  /* sidecar slot */
	uint32 vhash; /* hash of the full vector */
} Candidate;

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
	int64 *by_est;
	int64 *by_lower;
	int64 capacity;
} ScanScratch;

static ScanScratch scratch;

/* Above this many candidates a scan gives its arrays back when it ends. */
#define VIDX_SCRATCH_KEEP (1024 * 1024)

/*
 * Re-scoring reads each candidate's full vector from a different place of the
 * sidecar: a cache and TLB miss per record. The next few candidates (in
 * lower-bound order) are taken from the heap together and their records
 * prefetched, so the misses overlap instead of coming one after another.
 */
#define VIDX_LOOKAHEAD 8

/* A re-scored row waiting to be returned. */
typedef struct ScanResult
{
	double score;    /* exact, in estimator score space (heap key) */
	double distance; /* exact, as the operator returns it */
	ItemPointerData tid;
} ScanResult;

typedef struct VidxScanOpaqueData
{
	MemoryContext cxt;      /* reset at every rescan */
	MemoryContext scan_cxt; /* lives as long as the scan */
	bool owns_scratch;      /* cands, by_est, by_lower are the backend's scratch */
	bool started;
	bool empty;        /* the index has no dimensions yet */
	bool null_query;   /* no query vector: every row, unordered */
	bool exact_mode;   /* the query is beyond what codes represent: score every row exactly */
	bool exact_bounds; /* the first round reads every leaf: bounds that always hold */
	bool leaves_done;
	int32 next_leaf; /* exact and null-query modes read leaves in node order from here */
	VidxMetaPageData meta;
	VidxTreeCache *tree; /* the tree version the scan works on (pinned), from its first round */
	float *query;        /* as given (for exact distances) */
	float *qrot;         /* in index space */
	void *search;        /* tree search state */
	void *prep;          /* per-leaf query preparation */

	/*
	 * The pool: candidates of every round read so far (the array is kept
	 * across rescans), and min-heaps of the indexes of those not re-scored
	 * yet (re-scored ones are shed lazily): by lower bound, the order they
	 * are re-scored in and what any of them could still score; by estimate,
	 * only under a re-scoring budget (vidx.rerank > 0), for what they are
	 * expected to score.
	 */
	Candidate *cands;
	int64 ncands;
	int64 cands_capacity;
	int64 *by_lower;
	int64 nby_lower;
	int64 *by_est;
	int64 nby_est;
	/* the next candidates by lower bound, popped early so their vectors can be prefetched */
	int64 ahead[VIDX_LOOKAHEAD];
	int nahead;
	int ahead_pos;

	/* min-heap of re-scored rows by exact score (kept across rescans) */
	ScanResult *results;
	int64 nresults;
	int64 results_capacity;

	int rerank;  /* vidx.rerank when the scan began: 0 = no budget */
	bool strict; /* vidx.iterative_scan = strict_order when the scan began */
	int64 rescored;
	int64 returned;
	int64 round_rescored; /* re-scored and returned when this round began: */
	int64 round_returned; /* under a budget, every round has one of its own */
	int64 pool;           /* candidates read so far, all rounds */
	int64 out_of_order;   /* re-scored rows closer than a row already returned: skipped
	                       * (strict_order) or returned anyway (relaxed_order) */
	int rounds;           /* rounds of leaves read */
	double last_distance; /* distance of the last row returned; rows never go back */

	/*
	 * With refinement codes: the bound_cap smallest upper bounds of the
	 * scores seen so far (a max-heap, in cxt). A posting is refined only if
	 * its lower bound is below the largest of them: anything else would need
	 * that many better rows to be returned first.
	 */
	float *uppers;
	int nuppers;
	int uppers_cap;

	/* leaves of the current round (in cxt) */
	int32 *round;
	int round_capacity;

	/* fallback to the table, set up on first use */
	VidxTableReader *table;
} VidxScanOpaqueData;

typedef VidxScanOpaqueData *VidxScanOpaque;

/* ---------- two small binary heaps ---------- */

static inline float
cand_key(const VidxScanOpaque so, int64 id, bool by_lower)
{
	return by_lower ? so->cands[id].lower : so->cands[id].est;
}

static void
id_sift_down(VidxScanOpaque so, int64 *h, int64 n, int64 i, bool by_lower)
{
	int64 x = h[i];
	float kx = cand_key(so, x, by_lower);

	for (;;)
	{
		int64 c = 2 * i + 1;

		if (c >= n)
			break;
		if (c + 1 < n && cand_key(so, h[c + 1], by_lower) < cand_key(so, h[c], by_lower))
			c++;
		if (!(cand_key(so, h[c], by_lower) < kx))
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = x;
}

static int64
id_pop(VidxScanOpaque so, int64 *h, int64 *n, bool by_lower)
{
	int64 top = h[0];

	h[0] = h[--*n];
	if (*n > 0)
		id_sift_down(so, h, *n, 0, by_lower);
	return top;
}

/* The top of a heap of candidate ids after shedding re-scored ones, or -1. */
static int64
heap_top(VidxScanOpaque so, int64 *h, int64 *n, bool by_lower)
{
	while (*n > 0 && so->cands[h[0]].rescored)
		(void) id_pop(so, h, n, by_lower);
	return *n > 0 ? h[0] : -1;
}

static void
result_push(VidxScanOpaque so, double score, double distance, ItemPointer tid)
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

static ScanResult
result_pop(VidxScanOpaque so)
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

/* ---------- scan callbacks ---------- */

IndexScanDesc
vidx_beginscan(Relation index, int nkeys, int norderbys)
{
	IndexScanDesc scan = RelationGetIndexScan(index, nkeys, norderbys);
	VidxScanOpaque so = palloc0(sizeof(VidxScanOpaqueData));

	so->cxt = AllocSetContextCreate(CurrentMemoryContext, "vidx scan", ALLOCSET_DEFAULT_SIZES);
	so->scan_cxt = CurrentMemoryContext;
	if (!scratch.in_use)
	{
		scratch.in_use = true;
		so->owns_scratch = true;
		so->cands = scratch.cands;
		so->by_est = scratch.by_est;
		so->by_lower = scratch.by_lower;
		so->cands_capacity = scratch.capacity;
	}
	if (norderbys > 0)
	{
		scan->xs_orderbyvals = palloc0(sizeof(Datum) * norderbys);
		scan->xs_orderbynulls = palloc(sizeof(bool) * norderbys);
		memset(scan->xs_orderbynulls, true, sizeof(bool) * norderbys);
	}
	scan->opaque = so;
	return scan;
}

/*
 * Queries the codes' float arithmetic cannot score are answered by scoring
 * every row exactly (in double precision where float overflows): an element
 * beyond what an index holds (its square would overflow), or, under inner
 * product, a query so short that its products with the rows underflow (the
 * scores are then below float's resolution, and so would the bounds be).
 */
#define VIDX_MIN_IP_QUERY_ELEMENT 1e-15f

static bool
query_needs_exact_mode(const float *q, int dims, VidxMetric metric)
{
	float largest = 0;

	if (vidx_vector_check_indexable(q, dims, NULL) != VIDX_OK)
		return true;
	for (int i = 0; i < dims; i++)
		largest = Max(largest, fabsf(q[i]));
	return metric == VIDX_METRIC_IP && largest < VIDX_MIN_IP_QUERY_ELEMENT;
}

void
vidx_rescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	MemoryContext old;
	int dims;

	if (orderbys && scan->numberOfOrderBys > 0)
		memmove(scan->orderByData, orderbys, scan->numberOfOrderBys * sizeof(ScanKeyData));

	MemoryContextReset(so->cxt);
	if (so->tree != NULL)
		vidx_tree_unpin(so->tree);
	so->tree = NULL;
	so->started = false;
	so->empty = false;
	so->null_query = false;
	so->leaves_done = false;
	so->ncands = so->nby_est = so->nby_lower = 0;
	so->nahead = so->ahead_pos = 0;
	so->nresults = 0;
	so->rescored = 0;
	so->returned = 0;
	so->rerank = vidx_rerank;
	so->strict = (vidx_iterative_scan == VIDX_ITERATIVE_STRICT);
	so->pool = 0;
	so->round_rescored = so->round_returned = 0;
	so->out_of_order = 0;
	so->rounds = 0;
	so->last_distance = -get_float8_infinity();
	so->exact_mode = false;
	so->exact_bounds = false;
	so->next_leaf = 0;
	so->round = NULL; /* was in cxt */
	so->round_capacity = 0;
	so->uppers = NULL; /* was in cxt */
	so->nuppers = 0;

	vidx_read_meta(scan->indexRelation, &so->meta);
	if (so->meta.dims == 0)
	{
		so->empty = true; /* nothing was ever inserted */
		return;
	}
	if (scan->numberOfOrderBys == 0 || (scan->orderByData[0].sk_flags & SK_ISNULL))
	{
		so->null_query = true;
		return;
	}

	old = MemoryContextSwitchTo(so->cxt);
	so->query = vidx_array_to_vector(DatumGetArrayTypeP(scan->orderByData[0].sk_argument), &dims,
	                                 "query vector");
	vidx_check_dims(dims, so->meta.dims, scan->indexRelation);
	if (so->meta.metric == VIDX_METRIC_COSINE)
		vidx_check_nonzero(so->query, dims);
	so->exact_mode = query_needs_exact_mode(so->query, dims, (VidxMetric) so->meta.metric);

	MemoryContextSwitchTo(old);
}

/*
 * Vector of a heap tuple, for rows the sidecar cannot vouch for: the version
 * the scan's snapshot sees, as the executor will fetch it (a row it cannot see
 * is not returned anyway, and a dead version may have lost its TOASTed vector
 * to VACUUM already). NULL if it sees none.
 */
static float *
table_vector(IndexScanDesc scan, ItemPointer tid)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;

	if (so->table == NULL)
	{
		/* Kept across rescans, so not in so->cxt. */
		MemoryContext old = MemoryContextSwitchTo(so->scan_cxt);

		so->table = vidx_table_reader_begin(scan->heapRelation, scan->indexRelation);
		MemoryContextSwitchTo(old);
	}
	return vidx_table_reader_vector(so->table, tid, scan->xs_snapshot, so->meta.dims);
}

/* Room for n more candidates; the arrays grow by doubling and never shrink during a scan. */
static void
reserve_candidates(VidxScanOpaque so, int64 n)
{
	MemoryContext cxt = so->owns_scratch ? TopMemoryContext : so->scan_cxt;
	int64 capacity;

	if (so->ncands + n <= so->cands_capacity)
		return;
	capacity = Max(so->cands_capacity * 2, so->ncands + n + 1024);
	if (so->cands == NULL)
	{
		so->cands = MemoryContextAllocHuge(cxt, sizeof(Candidate) * capacity);
		so->by_est = MemoryContextAllocHuge(cxt, sizeof(int64) * capacity);
		so->by_lower = MemoryContextAllocHuge(cxt, sizeof(int64) * capacity);
	}
	else
	{
		so->cands = repalloc_huge(so->cands, sizeof(Candidate) * capacity);
		so->by_est = repalloc_huge(so->by_est, sizeof(int64) * capacity);
		so->by_lower = repalloc_huge(so->by_lower, sizeof(int64) * capacity);
	}
	so->cands_capacity = capacity;
	if (so->owns_scratch)
	{
		scratch.cands = so->cands;
		scratch.by_est = so->by_est;
		scratch.by_lower = so->by_lower;
		scratch.capacity = capacity;
	}
}

static void
scratch_release(VidxScanOpaque so)
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
		pfree(so->by_est);
		pfree(so->by_lower);
	}
	so->cands = NULL;
	so->by_est = so->by_lower = NULL;
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
vidx_scan_init(void)
{
	RegisterXactCallback(scratch_xact_callback, NULL);
}

/*
 * A chain is read in groups of up to VIDX_GROUP_PAGES pages that stay pinned
 * and share-locked together while their postings are estimated (on
 * vidx.scan_threads threads when the group is large enough to pay for them),
 * then copied into the candidates and released. A group never spans two
 * chains: an insert holds its chain's head while it locks further pages of
 * that chain, so a scan holding pages of one chain while waiting for another
 * chain's page could close a cycle with two inserts and another scan.
 */
#define VIDX_GROUP_PAGES 32
/* Fewer postings than this are estimated in the calling thread. */
#define VIDX_PARALLEL_MIN_POSTINGS 2048

typedef struct PageGroup
{
	Buffer bufs[VIDX_GROUP_PAGES];
	VidxEstimateTask tasks[VIDX_GROUP_PAGES];
	int npages;
	int ntasks;
	int nptrs;
	/* VIDX_GROUP_PAGES * MaxIndexTuplesPerPage each, allocated once per backend */
	const VidxPosting **ptrs;
	float *est;
	float *lower;
} PageGroup;

static PageGroup group;

/*
 * Rows a scan is expected to re-score, for the refinement cut and the
 * planner: the budget if there is one; else a typical ORDER BY ... LIMIT.
 */
#define VIDX_TYPICAL_RESCORED 100

static int
expected_rescored(VidxScanOpaque so)
{
	return so->rerank > 0 ? so->rerank : VIDX_TYPICAL_RESCORED;
}

/* Keeps the uppers_cap smallest upper bounds; returns the largest kept (+inf until full). */
static float
note_upper(VidxScanOpaque so, float upper)
{
	float *h = so->uppers;

	if (so->nuppers < so->uppers_cap)
	{
		int i = so->nuppers++;

		while (i > 0 && h[(i - 1) / 2] < upper)
		{
			h[i] = h[(i - 1) / 2];
			i = (i - 1) / 2;
		}
		h[i] = upper;
	}
	else if (upper < h[0])
	{
		int i = 0, n = so->nuppers;

		for (;;)
		{
			int c = 2 * i + 1;

			if (c >= n)
				break;
			if (c + 1 < n && h[c + 1] > h[c])
				c++;
			if (!(h[c] > upper))
				break;
			h[i] = h[c];
			i = c;
		}
		h[i] = upper;
	}
	return so->nuppers < so->uppers_cap ? get_float4_infinity() : h[0];
}

/*
 * Refines the group's postings that can still matter (lower bound below the
 * cut), while their pages are locked: the refinement codes live there.
 */
static void
refine_group(VidxScanOpaque so, const void *prep)
{
	float cut;

	if (so->uppers == NULL)
	{
		so->uppers_cap = Min(expected_rescored(so) + 16, 100000);
		so->uppers = MemoryContextAlloc(so->cxt, sizeof(float) * so->uppers_cap);
		so->nuppers = 0;
	}
	cut = so->nuppers < so->uppers_cap ? get_float4_infinity() : so->uppers[0];
	for (int i = 0; i < group.nptrs; i++)
	{
		float est = group.est[i];
		float lower = group.lower[i];

		if (lower <= cut)
		{
			vidx_rabitq_refine(prep, group.ptrs[i], &est, &lower);
			group.est[i] = est;
			group.lower[i] = lower;
		}
		/* the bounds are about symmetric around the estimate */
		cut = note_upper(so, 2 * est - lower);
	}
}

static void
flush_group(VidxScanOpaque so, const void *prep)
{
	bool estimated = !so->null_query && !so->exact_mode;

	if (group.nptrs > 0 && estimated)
	{
		vidx_rabitq_estimate_tasks(
		    group.tasks, group.ntasks,
		    group.nptrs >= VIDX_PARALLEL_MIN_POSTINGS ? vidx_scan_thread_count() : 1);
		if (so->meta.refine_bits > 0)
			refine_group(so, prep);
	}
	reserve_candidates(so, group.nptrs);
	for (int i = 0; i < group.nptrs; i++)
	{
		Candidate *c = &so->cands[so->ncands++];
		const VidxPosting *p = group.ptrs[i];

		/* Unestimated candidates: no bound, so none is returned before all are scored. */
		c->lower = estimated ? group.lower[i] : -get_float4_infinity();
		c->est = estimated ? group.est[i] : 0;
		c->heap_block = p->heap_block;
		c->heap_offset = p->heap_offset;
		c->rescored = false;
		c->slot = p->slot;
		c->vhash = p->vhash;
	}
	for (int i = 0; i < group.npages; i++)
		UnlockReleaseBuffer(group.bufs[i]);
	group.npages = group.ntasks = group.nptrs = 0;
}

/* Reads one leaf's chain and estimates every live posting. */
static void
scan_leaf(IndexScanDesc scan, const VidxTreeNode *node, const void *prep)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	Relation index = scan->indexRelation;
	BlockNumber blkno = node->head_block;

	if (group.ptrs == NULL)
	{
		Size n = (Size) VIDX_GROUP_PAGES * MaxIndexTuplesPerPage;

		group.ptrs = MemoryContextAlloc(TopMemoryContext, sizeof(VidxPosting *) * n);
		group.est = MemoryContextAlloc(TopMemoryContext, sizeof(float) * n);
		group.lower = MemoryContextAlloc(TopMemoryContext, sizeof(float) * n);
	}
	/* A scan that failed inside a group left it set; the abort released its buffers. */
	group.npages = group.ntasks = group.nptrs = 0;
	while (BlockNumberIsValid(blkno))
	{
		Buffer buf = ReadBuffer(index, blkno);
		Page page;
		VidxPageOpaque opaque;
		OffsetNumber maxoff;
		int first = group.nptrs;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		group.bufs[group.npages++] = buf;
		page = BufferGetPage(buf);
		opaque = VidxPageGetOpaque(page);
		/* a page of this leaf's chain, else one recycled since the scan's tree version */
		if (!vidx_page_is(page, VIDX_PAGE_POSTING) || opaque->head != node->head_block ||
		    opaque->leaf_id != node->leaf_id)
			vidx_version_gone(index, blkno, "posting");
		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			ItemId iid = PageGetItemId(page, off);

			if (ItemIdIsUsed(iid))
				group.ptrs[group.nptrs++] = (const VidxPosting *) PageGetItem(page, iid);
		}
		if (group.nptrs > first)
		{
			VidxEstimateTask *t = &group.tasks[group.ntasks++];

			t->prep = prep;
			t->postings = &group.ptrs[first];
			t->n = group.nptrs - first;
			t->est = &group.est[first];
			t->lower = &group.lower[first];
		}
		blkno = opaque->next;
		if (group.npages == VIDX_GROUP_PAGES || !BlockNumberIsValid(blkno))
			flush_group(so, prep);
	}
}

/* The next leaf node in node order (exact and null-query modes), or -1. */
static int32
next_leaf_in_order(VidxScanOpaque so, const void *tree)
{
	const VidxTreeHeader *h = (const VidxTreeHeader *) tree;

	while ((uint32) so->next_leaf < h->nnodes)
	{
		int32 i = so->next_leaf++;

		if (vidx_tree_node(tree, i)->nchildren == 0)
			return i;
	}
	return -1;
}

/*
 * Drops the re-scored candidates from the pool (their rows are in the results
 * heap or were returned), so that a deep scan holds only what it has not
 * scored yet. build_heaps follows; the look-ahead goes back into the heaps.
 */
static void
compact_pool(VidxScanOpaque so)
{
	int64 m = 0;

	for (int64 i = 0; i < so->ncands; i++)
		if (!so->cands[i].rescored)
			so->cands[m++] = so->cands[i];
	so->ncands = m;
	so->nby_lower = so->nby_est = 0;
	so->nahead = so->ahead_pos = 0;
}

/*
 * Builds the heaps over the whole pool (every candidate in it is not
 * re-scored yet): Floyd's construction, linear in the pool.
 */
static void
build_heaps(VidxScanOpaque so)
{
	for (int64 i = 0; i < so->ncands; i++)
		so->by_lower[i] = i;
	so->nby_lower = so->ncands;
	for (int64 i = so->nby_lower / 2 - 1; i >= 0; i--)
		id_sift_down(so, so->by_lower, so->nby_lower, i, true);
	if (so->rerank > 0)
	{
		memcpy(so->by_est, so->by_lower, sizeof(int64) * so->ncands);
		so->nby_est = so->ncands;
		for (int64 i = so->nby_est / 2 - 1; i >= 0; i--)
			id_sift_down(so, so->by_est, so->nby_est, i, false);
	}
}

/*
 * Reads the next vidx.probes leaves (every leaf for a NULL query or in exact
 * mode) into the pool of candidates.
 */
static void
next_round(IndexScanDesc scan)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	VidxTreeCache *cache;
	bool in_node_order = so->null_query || so->exact_mode;
	bool estimated = !in_node_order;
	/* Round r reads vidx.probes * 2^r leaves: a deep scan reads ahead of the rows it returns. */
	int probes =
	    in_node_order ? INT_MAX : (int) Min((int64) vidx_probes << Min(so->rounds, 20), INT_MAX);
	Size prep_size = vidx_query_prep_size(so->meta.dims);
	int64 first;
	int nleaves = 0;

	if (!so->null_query && so->started)
		compact_pool(so);
	first = so->ncands;

	if (!so->started)
	{
		MemoryContext old;

		/*
		 * The version the scan works on to its end: read after its snapshot
		 * was taken, so a row inserted into a chain of a later version is not
		 * one it may return (docs/growth.md).
		 */
		so->tree = vidx_get_tree(scan->indexRelation, &so->meta);
		vidx_tree_pin(so->tree);
		/*
		 * vidx.probes covering every leaf asks for an exhaustive search: with
		 * bounds that always hold (not the probabilistic ones), rows come out
		 * in exact order and none is skipped.
		 */
		so->exact_bounds = (uint32) vidx_probes >= so->meta.nleaves;
		old = MemoryContextSwitchTo(so->cxt);

		if (estimated)
		{
			so->search = palloc(vidx_tree_search_size(so->tree->tree));
			so->qrot = palloc0(sizeof(float) * so->meta.dims);
			vidx_to_index_space(so->tree, so->query, so->qrot);
			so->prep = palloc(prep_size);
			vidx_tree_search_begin(so->search, so->tree->tree, (VidxMetric) so->meta.metric,
			                       so->qrot);
		}
		vidx_sidecar_refresh(scan->indexRelation, &so->meta);
		MemoryContextSwitchTo(old);
		so->started = true;
		pgstat_count_index_scan(scan->indexRelation);
	}
	cache = so->tree;

	/* The round's leaves, nearest first; their head pages are prefetched (a no-op when cached). */
	if (so->round_capacity == 0)
	{
		so->round_capacity = in_node_order ? 64 : Min(probes, 1024);
		so->round = MemoryContextAlloc(so->cxt, sizeof(int32) * so->round_capacity);
	}
	while (nleaves < probes)
	{
		float key;
		int32 leaf = in_node_order ? next_leaf_in_order(so, cache->tree)
		                           : vidx_tree_search_next(so->search, cache->tree, &key);

		if (leaf < 0)
		{
			so->leaves_done = true;
			break;
		}
		if (nleaves == so->round_capacity)
		{
			so->round_capacity *= 2;
			so->round = repalloc(so->round, sizeof(int32) * so->round_capacity);
		}
		so->round[nleaves++] = leaf;
		PrefetchBuffer(scan->indexRelation, MAIN_FORKNUM,
		               vidx_tree_node(cache->tree, leaf)->head_block);
	}
	for (int i = 0; i < nleaves; i++)
	{
		const VidxTreeNode *node = vidx_tree_node(cache->tree, so->round[i]);

		if (estimated)
		{
			vidx_query_prep_refined(so->prep, (VidxMetric) so->meta.metric, so->qrot,
			                        vidx_tree_centroid(node), so->meta.dims,
			                        (int) so->meta.refine_bits);
			if (so->exact_bounds)
				vidx_query_prep_exact_bounds(so->prep);
		}
		scan_leaf(scan, node, so->prep);
		CHECK_FOR_INTERRUPTS();
	}
	so->pool += so->ncands - first;
	so->rounds++;
	so->round_rescored = so->rescored;
	so->round_returned = so->returned;
	if (!so->null_query)
		build_heaps(so);
}

/* An exact distance (operator value) in the estimator's score space. */
static double
distance_to_score(VidxMetric metric, double distance)
{
	switch (metric)
	{
	case VIDX_METRIC_L2:
		return distance * distance;
	case VIDX_METRIC_COSINE:
		return 2.0 * distance; /* |a/|a| - b/|b||^2 = 2 (1 - cos) */
	default:
		return distance;
	}
}

/* Re-scores a candidate exactly and queues it, unless its row is gone. */
static void
rescore(IndexScanDesc scan, Candidate *c)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	VidxMetric metric = (VidxMetric) so->meta.metric;
	ItemPointerData tid;
	double distance;

	ItemPointerSet(&tid, c->heap_block, c->heap_offset);
	c->rescored = true;
	if (!vidx_sidecar_distance(scan->indexRelation, &so->meta, &tid, c->slot, c->vhash, so->query,
	                           &distance))
	{
		MemoryContext old = MemoryContextSwitchTo(so->cxt);
		float *v = table_vector(scan, &tid);

		MemoryContextSwitchTo(old);
		/*
		 * The scan cannot see the row, so the executor would not return it.
		 * It does not count against the budget, so that the rows returned do
		 * not depend on whether an invisible row's vector came from the
		 * sidecar (and was returned, then skipped by the executor) or from the
		 * table.
		 */
		if (v == NULL)
			return;
		distance = vidx_distance(metric, v, so->query, so->meta.dims);
	}
	so->rescored++;
	result_push(so, distance_to_score(metric, distance), distance, &tid);
}

/* Lowest lower bound of the candidates not re-scored yet, or +inf. */
static float
min_lower_left(VidxScanOpaque so)
{
	int64 top = heap_top(so, so->by_lower, &so->nby_lower, true);
	float m = top >= 0 ? so->cands[top].lower : get_float4_infinity();

	for (int i = so->ahead_pos; i < so->nahead; i++)
		m = Min(m, so->cands[so->ahead[i]].lower);
	return m;
}

/* Lowest estimate of the candidates not re-scored yet (under a budget only), or +inf. */
static float
min_estimate_left(VidxScanOpaque so)
{
	int64 top = heap_top(so, so->by_est, &so->nby_est, false);
	float m = top >= 0 ? so->cands[top].est : get_float4_infinity();

	for (int i = so->ahead_pos; i < so->nahead; i++)
		m = Min(m, so->cands[so->ahead[i]].est);
	return m;
}

/* Candidates not re-scored yet? */
static inline bool
more_to_rescore(VidxScanOpaque so)
{
	return so->ahead_pos < so->nahead || heap_top(so, so->by_lower, &so->nby_lower, true) >= 0;
}

/*
 * The next candidate to re-score: the lowest lower bound first, which settles
 * each row with the fewest exact distances (every candidate whose bound is
 * below a row must be re-scored before it anyway). Refills the look-ahead and
 * prefetches its records.
 */
static Candidate *
next_to_rescore(IndexScanDesc scan)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;

	if (so->ahead_pos == so->nahead)
	{
		so->nahead = so->ahead_pos = 0;
		while (so->nahead < VIDX_LOOKAHEAD && heap_top(so, so->by_lower, &so->nby_lower, true) >= 0)
		{
			Candidate *c = &so->cands[id_pop(so, so->by_lower, &so->nby_lower, true)];

			so->ahead[so->nahead++] = c - so->cands;
			vidx_sidecar_prefetch(scan->indexRelation, &so->meta, c->slot);
		}
	}
	return &so->cands[so->ahead[so->ahead_pos++]];
}

/*
 * The next round joins the pool before another row is returned once the
 * executor has taken this share of the pool's candidates (a WHERE clause
 * rejects rows, or a large LIMIT): the rows of the next leaves begin at about
 * the distances the scan has reached by then, and a row of theirs closer than
 * a row already returned would be lost (dropped, to keep the order). Measured
 * on 20,000 clustered rows of 64 and 768 dimensions: with 0.25 and rounds
 * that double, LIMIT 1,000 / 5,000 and filters down to 0.1% keep recall
 * >= 0.98; with 0.5 and rounds of vidx.probes leaves, 0.93-0.95.
 */
#define VIDX_POOL_SHARE 0.25

static inline bool
want_next_round(VidxScanOpaque so)
{
	return !so->leaves_done && (double) so->returned >= VIDX_POOL_SHARE * (double) so->pool;
}

/*
 * Whether the best re-scored row can be returned now: when no candidate left
 * can beat it by its lower bound; or, once the round's re-scoring budget
 * (vidx.rerank > 0) is spent, when no candidate left is expected to beat it
 * by its estimate.
 */
static bool
best_row_settled(VidxScanOpaque so)
{
	double best = so->results[0].score;

	if (!more_to_rescore(so) || best <= min_lower_left(so))
		return true;
	return so->rerank > 0 &&
	       so->rescored - so->round_rescored >= so->returned - so->round_returned + so->rerank &&
	       best <= min_estimate_left(so);
}

bool
vidx_gettuple(IndexScanDesc scan, ScanDirection dir)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;

	if (dir != ForwardScanDirection)
		elog(ERROR, "vidx only supports forward scans");
	if (so->empty)
		return false;
	if (!so->started)
		next_round(scan);

	if (so->null_query)
	{
		Candidate *c;

		if (so->ncands == 0)
			return false;
		c = &so->cands[--so->ncands];
		ItemPointerSet(&scan->xs_heaptid, c->heap_block, c->heap_offset);
		if (scan->numberOfOrderBys > 0)
			scan->xs_orderbynulls[0] = true;
		scan->xs_recheck = false;
		scan->xs_recheckorderby = false;
		so->returned++;
		return true;
	}

	for (;;)
	{
		/* A row closer than one already returned would break the order: it is missed. */
		while (so->strict && so->nresults > 0 && so->results[0].distance < so->last_distance)
		{
			(void) result_pop(so);
			so->out_of_order++;
		}
		if (want_next_round(so))
		{
			next_round(scan);
			continue;
		}
		if (so->nresults > 0 && best_row_settled(so))
		{
			ScanResult r = result_pop(so);

			scan->xs_heaptid = r.tid;
			/* Exact: the executor need not recheck, vidx_search reports it. */
			scan->xs_orderbyvals[0] = Float8GetDatum(r.distance);
			scan->xs_orderbynulls[0] = false;
			if (r.distance < so->last_distance)
				so->out_of_order++; /* relaxed_order */
			else
				so->last_distance = r.distance;
			break;
		}
		if (more_to_rescore(so))
		{
			rescore(scan, next_to_rescore(scan));
			continue;
		}
		if (so->leaves_done)
			return false;
		next_round(scan);
	}

	so->returned++;
	scan->xs_recheck = false;
	scan->xs_recheckorderby = false;
	return true;
}

void
vidx_endscan(IndexScanDesc scan)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;

	if (so->table != NULL)
		vidx_table_reader_end(so->table);
	if (so->tree != NULL)
		vidx_tree_unpin(so->tree);
	elog(DEBUG2,
	     "vidx scan of \"%s\": %d rounds, %ld candidates, %ld re-scored, %ld returned, "
	     "%ld out of order (%s)",
	     RelationGetRelationName(scan->indexRelation), so->rounds, (long) so->pool,
	     (long) so->rescored, (long) so->returned, (long) so->out_of_order,
	     so->strict ? "skipped" : "returned");
	MemoryContextDelete(so->cxt);
	scratch_release(so);
	if (so->results)
		pfree(so->results);
	pfree(so);
	scan->opaque = NULL;
}

/* ---------- planner costs ---------- */

void
vidx_costestimate(PlannerInfo *root, IndexPath *path, double loop_count, Cost *indexStartupCost,
                  Cost *indexTotalCost, Selectivity *indexSelectivity, double *indexCorrelation,
                  double *indexPages)
{
	GenericCosts costs;
	IndexOptInfo *index = path->indexinfo;
	double ratio = 1.0;
	int nleaves = 1;
	Relation rel;
	VidxMetaPageData meta;

	/* The index only serves ORDER BY distance: never a plain or filtered scan. */
	if (path->indexorderbys == NIL)
	{
		*indexStartupCost = get_float8_infinity();
		*indexTotalCost = get_float8_infinity();
		*indexSelectivity = 0;
		*indexCorrelation = 0;
		*indexPages = 0;
		return;
	}

	/*
	 * Planning must not fail on an index that scans cannot read (another
	 * format version, a bad metapage): then cost it as reading every page, so
	 * that another plan wins; a scan of it still raises the error.
	 */
	rel = index_open(index->indexoid, NoLock);
	if (!vidx_try_read_meta(rel, &meta))
		meta.nleaves = 1;
	index_close(rel, NoLock);
	if (meta.nleaves > 0)
		nleaves = meta.nleaves;
	ratio = Min(1.0, (double) vidx_probes / nleaves);

	MemSet(&costs, 0, sizeof(costs));
	costs.numIndexTuples = Max(1.0, index->tuples * ratio);
	genericcostestimate(root, path, loop_count, &costs);

	/* Every probed page is read before the first row comes out. */
	costs.numIndexPages = Max(1.0, index->pages * ratio);
	/* Exact re-scoring: at most the budget, and never more rows than there are. */
	*indexStartupCost =
	    costs.indexTotalCost + Min((double) (vidx_rerank > 0 ? vidx_rerank : VIDX_TYPICAL_RESCORED),
	                               costs.numIndexTuples) *
	                               cpu_operator_cost * Max(1, meta.dims / 16);
	*indexTotalCost = *indexStartupCost;
	*indexSelectivity = costs.indexSelectivity;
	*indexCorrelation = 0;
	*indexPages = costs.numIndexPages;
}
