/*
 * scan.c: index scans (ORDER BY col <op> query LIMIT k) and planner costs.
 *
 * A scan walks the tree best-first, so leaves come in order of their
 * centroid's distance to the query. It reads vidx.probes leaves, estimates
 * every posting's score from its binary code, and re-scores the best
 * vidx.rerank candidates exactly, with the full vector from the sidecar (or
 * from the table when the sidecar cannot vouch for it). Those rows are returned
 * in exact distance order. When the executor asks for more (a WHERE clause
 * rejected rows), the next vidx.rerank candidates follow, then the next
 * vidx.probes leaves, until every leaf was read.
 */
#include "vidx.h"

#include <float.h>
#include <math.h>

#include "access/relscan.h"
#include "access/tableam.h"
#include "catalog/index.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "optimizer/optimizer.h"
#include "utils/float.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/selfuncs.h"
#include "utils/snapmgr.h"

/* What the scan keeps of a posting after its page lock is released. */
typedef struct PostingRef
{
	VidxPosting posting;		/* header only: TID, slot, hash */
} PostingRef;

typedef struct ScanResult
{
	ItemPointerData tid;
	double		distance;
} ScanResult;

typedef struct VidxScanOpaqueData
{
	MemoryContext cxt;			/* reset at every rescan */
	MemoryContext scan_cxt;		/* lives as long as the scan */
	bool		started;
	bool		empty;			/* index has no dims yet, or the query is NULL */
	bool		null_query;
	VidxMetaPageData meta;
	float	   *query;			/* as given (for exact distances) */
	float	   *qrot;			/* in index space */
	void	   *search;			/* tree search state */
	void	   *prep;			/* per-leaf query preparation */
	bool		leaves_done;

	/* candidates of the current round, sorted by estimate */
	VidxCandidate *cands;
	PostingRef *refs;
	int64		ncands;
	int64		capacity;
	int64		next_cand;

	/* results of the current batch, in distance order */
	ScanResult *results;
	int64		results_capacity;
	int64		nresults;
	int64		next_result;

	/* scratch for estimates */
	const VidxPosting **ptrs;
	float	   *est;
	float	   *lower;

	/* fallback to the table, set up on first use */
	IndexFetchTableData *fetch;
	TupleTableSlot *slot;
	EState	   *estate;
	IndexInfo  *indexInfo;
} VidxScanOpaqueData;

typedef VidxScanOpaqueData *VidxScanOpaque;

IndexScanDesc
vidx_beginscan(Relation index, int nkeys, int norderbys)
{
	IndexScanDesc scan = RelationGetIndexScan(index, nkeys, norderbys);
	VidxScanOpaque so = palloc0(sizeof(VidxScanOpaqueData));

	so->cxt = AllocSetContextCreate(CurrentMemoryContext, "vidx scan", ALLOCSET_DEFAULT_SIZES);
	so->scan_cxt = CurrentMemoryContext;
	scan->opaque = so;
	return scan;
}

void
vidx_rescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	MemoryContext old;
	int			dims;

	if (orderbys && scan->numberOfOrderBys > 0)
		memmove(scan->orderByData, orderbys, scan->numberOfOrderBys * sizeof(ScanKeyData));

	MemoryContextReset(so->cxt);
	so->started = false;
	so->empty = false;
	so->null_query = false;
	so->leaves_done = false;
	so->cands = NULL;
	so->refs = NULL;
	so->ncands = so->capacity = so->next_cand = 0;
	so->results = NULL;
	so->results_capacity = so->nresults = so->next_result = 0;

	vidx_read_meta(scan->indexRelation, &so->meta);
	if (so->meta.dims == 0)
	{
		so->empty = true;		/* nothing was ever inserted */
		return;
	}
	if (scan->numberOfOrderBys == 0 || (scan->orderByData[0].sk_flags & SK_ISNULL))
	{
		/* No query vector: every row, in no particular order. */
		so->null_query = true;
		return;
	}

	old = MemoryContextSwitchTo(so->cxt);
	so->query = vidx_array_to_vector(DatumGetArrayTypeP(scan->orderByData[0].sk_argument), &dims,
									 "query vector");
	vidx_check_dims(dims, so->meta.dims, scan->indexRelation);
	if (so->meta.metric == VIDX_METRIC_COSINE)
		vidx_check_nonzero(so->query, dims);
	MemoryContextSwitchTo(old);
}

/* Vector of a heap tuple, for rows the sidecar cannot vouch for. NULL if the tuple is gone. */
static float *
table_vector(IndexScanDesc scan, ItemPointer tid)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	bool		call_again = false;
	bool		all_dead = false;
	Datum		values[INDEX_MAX_KEYS];
	bool		isnull[INDEX_MAX_KEYS];
	int			dims;
	float	   *v;

	if (so->fetch == NULL)
	{
		/* Kept across rescans, so not in so->cxt. */
		MemoryContext old = MemoryContextSwitchTo(so->scan_cxt);

		so->fetch = table_index_fetch_begin(scan->heapRelation);
		so->slot = table_slot_create(scan->heapRelation, NULL);
		so->indexInfo = BuildIndexInfo(scan->indexRelation);
		so->estate = CreateExecutorState();
		GetPerTupleExprContext(so->estate)->ecxt_scantuple = so->slot;
		MemoryContextSwitchTo(old);
	}

	/* Any version will do: the TID names one tuple version, whose vector never changes. */
	if (!table_index_fetch_tuple(so->fetch, tid, SnapshotAny, so->slot, &call_again, &all_dead))
		return NULL;
	FormIndexDatum(so->indexInfo, so->slot, so->estate, values, isnull);
	if (isnull[0])
		return NULL;
	v = vidx_array_to_vector(DatumGetArrayTypeP(values[0]), &dims, "vector");
	ResetPerTupleExprContext(so->estate);
	if (dims != (int) so->meta.dims)
		return NULL;
	return v;
}

static void
add_candidates(VidxScanOpaque so, int n, const float *est, const float *lower)
{
	if (so->ncands + n > so->capacity)
	{
		int64		cap = Max(so->capacity * 2, so->ncands + n + 256);

		if (so->cands == NULL)
		{
			so->cands = MemoryContextAllocHuge(so->cxt, sizeof(VidxCandidate) * cap);
			so->refs = MemoryContextAllocHuge(so->cxt, sizeof(PostingRef) * cap);
		}
		else
		{
			so->cands = repalloc_huge(so->cands, sizeof(VidxCandidate) * cap);
			so->refs = repalloc_huge(so->refs, sizeof(PostingRef) * cap);
		}
		so->capacity = cap;
	}
	for (int i = 0; i < n; i++)
	{
		VidxCandidate *c = &so->cands[so->ncands];

		c->score = est ? est[i] : 0;
		c->lower = lower ? lower[i] : 0;
		c->payload = so->ncands;
		so->refs[so->ncands].posting = *so->ptrs[i];
		so->ncands++;
	}
}

/* Reads one leaf's chain and estimates every live posting. */
static void
scan_leaf(IndexScanDesc scan, const VidxTreeCache *cache, const VidxTreeNode *node)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	Relation	index = scan->indexRelation;
	BlockNumber blkno = node->head_block;

	if (!so->null_query)
		vidx_query_prep(so->prep, (VidxMetric) so->meta.metric, so->qrot,
						vidx_tree_centroid(node), so->meta.dims);

	while (BlockNumberIsValid(blkno))
	{
		Buffer		buf = ReadBuffer(index, blkno);
		Page		page;
		VidxPageOpaque opaque;
		OffsetNumber maxoff;
		int			n = 0;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		opaque = VidxPageGetOpaque(page);
		if (opaque->page_type != VIDX_PAGE_POSTING || opaque->head != node->head_block)
		{
			UnlockReleaseBuffer(buf);
			ereport(ERROR,
					(errcode(ERRCODE_INDEX_CORRUPTED),
					 errmsg("index \"%s\": block %u is not in the posting chain of block %u",
							RelationGetRelationName(index), blkno, node->head_block)));
		}
		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			ItemId		iid = PageGetItemId(page, off);
			const VidxPosting *p;

			if (!ItemIdIsUsed(iid))
				continue;
			p = (const VidxPosting *) PageGetItem(page, iid);
			if (p->flags & VIDX_POSTING_DEAD)
				continue;
			so->ptrs[n++] = p;
		}
		if (n > 0)
		{
			if (!so->null_query)
				vidx_rabitq_estimate(so->prep, so->ptrs, n, so->est, so->lower);
			add_candidates(so, n, so->null_query ? NULL : so->est,
						   so->null_query ? NULL : so->lower);
		}
		blkno = opaque->next;
		UnlockReleaseBuffer(buf);
	}
}

/* Reads the next vidx.probes leaves into a new round of candidates. */
static void
next_round(IndexScanDesc scan)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	VidxTreeCache *cache = vidx_get_tree(scan->indexRelation, &so->meta);
	MemoryContext old = MemoryContextSwitchTo(so->cxt);
	int			probes = so->null_query ? INT_MAX : vidx_probes;

	if (!so->started)
	{
		int			per_page = BLCKSZ / sizeof(ItemIdData);

		so->ptrs = palloc(sizeof(VidxPosting *) * per_page);
		so->est = palloc(sizeof(float) * per_page);
		so->lower = palloc(sizeof(float) * per_page);
		so->search = palloc(vidx_tree_search_size(cache->tree));
		if (!so->null_query)
		{
			so->qrot = palloc(sizeof(float) * so->meta.dims);
			vidx_to_index_space(cache, so->query, so->qrot);
			so->prep = palloc(vidx_query_prep_size(so->meta.dims));
			vidx_tree_search_begin(so->search, cache->tree, (VidxMetric) so->meta.metric,
								   so->qrot);
		}
		else
		{
			float	   *zero = palloc0(sizeof(float) * so->meta.dims);

			vidx_tree_search_begin(so->search, cache->tree, VIDX_METRIC_L2, zero);
		}
		vidx_sidecar_refresh(scan->indexRelation, &so->meta);
		so->started = true;
	}

	so->ncands = 0;
	so->next_cand = 0;
	for (int i = 0; i < probes; i++)
	{
		float		key;
		int32		leaf = vidx_tree_search_next(so->search, cache->tree, &key);

		if (leaf < 0)
		{
			so->leaves_done = true;
			break;
		}
		scan_leaf(scan, cache, vidx_tree_node(cache->tree, leaf));
		CHECK_FOR_INTERRUPTS();
	}
	if (!so->null_query)
		vidx_candidates_sort(so->cands, so->ncands);
	MemoryContextSwitchTo(old);
}

static int
compare_results(const void *a, const void *b)
{
	const ScanResult *ra = (const ScanResult *) a;
	const ScanResult *rb = (const ScanResult *) b;

	if (ra->distance < rb->distance)
		return -1;
	if (ra->distance > rb->distance)
		return 1;
	return ItemPointerCompare((ItemPointer) &ra->tid, (ItemPointer) &rb->tid);
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
			return 2.0 * distance;	/* |a/|a| - b/|b||^2 = 2 (1 - cos) */
		default:
			return distance;
	}
}

static void
ensure_results(VidxScanOpaque so, int64 n)
{
	if (so->results == NULL || n > so->results_capacity)
	{
		if (so->results != NULL)
			pfree(so->results);
		so->results_capacity = Max(n, 16);
		so->results = MemoryContextAllocHuge(so->cxt, sizeof(ScanResult) * so->results_capacity);
	}
}

/* Appends a candidate to the batch with its exact distance; false if its row is gone. */
static bool
rescore(IndexScanDesc scan, const VidxCandidate *c)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	const VidxPosting *p = &so->refs[c->payload].posting;
	ScanResult *r = &so->results[so->nresults];
	const float *v;

	ItemPointerSet(&r->tid, p->heap_block, p->heap_offset);
	if (so->null_query)
		r->distance = 0;
	else
	{
		v = vidx_sidecar_vector(scan->indexRelation, &so->meta, p);
		if (v == NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(so->cxt);

			v = table_vector(scan, &r->tid);
			MemoryContextSwitchTo(old);
			if (v == NULL)
				return false;	/* the row is gone: nobody can see it */
		}
		r->distance = vidx_distance((VidxMetric) so->meta.metric, v, so->query, so->meta.dims);
	}
	so->nresults++;
	return true;
}

/*
 * Re-scores the next vidx.rerank candidates (by estimate) exactly, then every
 * other candidate whose lower bound says it could still beat the worst of
 * them, and orders the batch by exact distance.
 */
static void
next_batch(IndexScanDesc scan)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	int64		remaining = so->ncands - so->next_cand;
	int64		n = so->null_query ? remaining : Min((int64) vidx_rerank, remaining);
	double		threshold = -get_float8_infinity();
	int64		kept;

	so->nresults = 0;
	so->next_result = 0;
	ensure_results(so, remaining);

	for (int64 i = 0; i < n; i++)
		if (rescore(scan, &so->cands[so->next_cand + i]))
			threshold = Max(threshold, so->results[so->nresults - 1].distance);
	so->next_cand += n;
	if (so->null_query)
		return;

	/* The bound clears most of the rest; keep the others in estimate order. */
	threshold = distance_to_score((VidxMetric) so->meta.metric, threshold);
	kept = so->next_cand;
	for (int64 i = so->next_cand; i < so->ncands; i++)
	{
		if (so->cands[i].lower < threshold)
			rescore(scan, &so->cands[i]);
		else
			so->cands[kept++] = so->cands[i];
	}
	so->ncands = kept;
	qsort(so->results, so->nresults, sizeof(ScanResult), compare_results);
}

bool
vidx_gettuple(IndexScanDesc scan, ScanDirection dir)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;

	if (dir != ForwardScanDirection)
		elog(ERROR, "vidx only supports forward scans");
	if (so->empty)
		return false;

	while (so->next_result >= so->nresults)
	{
		if (so->started && so->next_cand < so->ncands)
			next_batch(scan);
		else if (!so->started || !so->leaves_done)
			next_round(scan);
		else
			return false;
	}

	scan->xs_heaptid = so->results[so->next_result].tid;
	scan->xs_recheck = false;
	scan->xs_recheckorderby = false;
	so->next_result++;
	return true;
}

void
vidx_endscan(IndexScanDesc scan)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;

	if (so->fetch != NULL)
	{
		table_index_fetch_end(so->fetch);
		ExecDropSingleTupleTableSlot(so->slot);
		FreeExecutorState(so->estate);
	}
	MemoryContextDelete(so->cxt);
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
	double		ratio = 1.0;
	int			nleaves = 1;
	Relation	rel;
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

	rel = index_open(index->indexoid, NoLock);
	vidx_read_meta(rel, &meta);
	index_close(rel, NoLock);
	if (meta.nleaves > 0)
		nleaves = meta.nleaves;
	ratio = Min(1.0, (double) vidx_probes / nleaves);

	MemSet(&costs, 0, sizeof(costs));
	costs.numIndexTuples = Max(1.0, index->tuples * ratio);
	genericcostestimate(root, path, loop_count, &costs);

	/* Every probed page is read before the first row comes out. */
	costs.numIndexPages = Max(1.0, index->pages * ratio);
	*indexStartupCost = costs.indexTotalCost +
		vidx_rerank * cpu_operator_cost * Max(1, meta.dims / 16);
	*indexTotalCost = *indexStartupCost;
	*indexSelectivity = costs.indexSelectivity;
	*indexCorrelation = 0;
	*indexPages = costs.numIndexPages;
}
