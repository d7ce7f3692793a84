/*
 * scan.c: index scans (ORDER BY col <op> query LIMIT k) and planner costs.
 *
 * A scan walks the tree best-first, so leaves come in order of their
 * centroid's distance to the query. A round reads vidx.probes leaves and
 * estimates every posting's score, with a lower bound, from its binary code.
 * Candidates are then re-scored exactly (full vector from the sidecar, or from
 * the table when the sidecar cannot vouch for it) best estimate first, and a
 * row is returned as soon as its exact score is below the lower bound of every
 * candidate not re-scored yet: rows come out in exact order, and only the
 * candidates that could still win are re-scored. vidx.rerank caps the work: once
 * rerank + (rows returned) candidates were re-scored, the best re-scored row
 * is returned without waiting for the bound. When the executor asks for more
 * rows than the round holds (a WHERE clause rejected rows), the next
 * vidx.probes leaves follow, until every leaf was read.
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
	bool rescored;
	VidxPosting posting; /* header only: TID, slot, hash */
} Candidate;

/* A re-scored row waiting to be returned. */
typedef struct ScanResult
{
	double score; /* exact, in estimator score space (heap key) */
	ItemPointerData tid;
} ScanResult;

typedef struct VidxScanOpaqueData
{
	MemoryContext cxt;      /* reset at every rescan */
	MemoryContext scan_cxt; /* lives as long as the scan */
	bool started;
	bool empty;      /* the index has no dimensions yet */
	bool null_query; /* no query vector: every row, unordered */
	bool leaves_done;
	VidxMetaPageData meta;
	float *query; /* as given (for exact distances) */
	float *qrot;  /* in index space */
	void *search; /* tree search state */
	void *prep;   /* per-leaf query preparation */

	/*
	 * Candidates of the current round (kept across rescans), and two min-heaps
	 * of their indexes: by estimate (the order they are re-scored in) and by
	 * lower bound (what any candidate not yet re-scored could still score).
	 */
	Candidate *cands;
	int64 ncands;
	int64 cands_capacity;
	int64 *by_est;
	int64 nby_est;
	int64 *by_lower;
	int64 nby_lower;

	/* min-heap of re-scored rows by exact score (kept across rescans) */
	ScanResult *results;
	int64 nresults;
	int64 results_capacity;

	int64 rescored;
	int64 returned;

	/* scratch for a page's estimates */
	const VidxPosting **ptrs;
	float *est;
	float *lower;

	/* fallback to the table, set up on first use */
	IndexFetchTableData *fetch;
	TupleTableSlot *slot;
	EState *estate;
	IndexInfo *indexInfo;
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

/* Lowest lower bound of the candidates not re-scored yet, or +inf. */
static float
min_lower_left(VidxScanOpaque so)
{
	while (so->nby_lower > 0 && so->cands[so->by_lower[0]].rescored)
		(void) id_pop(so, so->by_lower, &so->nby_lower, true);
	return so->nby_lower > 0 ? so->cands[so->by_lower[0]].lower : get_float4_infinity();
}

static void
result_push(VidxScanOpaque so, double score, ItemPointer tid)
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
	so->ptrs = palloc(sizeof(VidxPosting *) * MaxIndexTuplesPerPage);
	so->est = palloc(sizeof(float) * MaxIndexTuplesPerPage);
	so->lower = palloc(sizeof(float) * MaxIndexTuplesPerPage);
	scan->opaque = so;
	return scan;
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
	so->started = false;
	so->empty = false;
	so->null_query = false;
	so->leaves_done = false;
	so->ncands = so->nby_est = so->nby_lower = 0;
	so->nresults = 0;
	so->rescored = 0;
	so->returned = 0;

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
	MemoryContextSwitchTo(old);
}

/* Vector of a heap tuple, for rows the sidecar cannot vouch for. NULL if the tuple is gone. */
static float *
table_vector(IndexScanDesc scan, ItemPointer tid)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	bool call_again = false;
	bool all_dead = false;
	Datum values[INDEX_MAX_KEYS];
	bool isnull[INDEX_MAX_KEYS];
	int dims;
	float *v;

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
add_candidates(VidxScanOpaque so, int n)
{
	if (so->ncands + n > so->cands_capacity)
	{
		so->cands_capacity = Max(so->cands_capacity * 2, so->ncands + n + 1024);
		if (so->cands == NULL)
		{
			so->cands =
			    MemoryContextAllocHuge(so->scan_cxt, sizeof(Candidate) * so->cands_capacity);
			so->by_est = MemoryContextAllocHuge(so->scan_cxt, sizeof(int64) * so->cands_capacity);
			so->by_lower = MemoryContextAllocHuge(so->scan_cxt, sizeof(int64) * so->cands_capacity);
		}
		else
		{
			so->cands = repalloc_huge(so->cands, sizeof(Candidate) * so->cands_capacity);
			so->by_est = repalloc_huge(so->by_est, sizeof(int64) * so->cands_capacity);
			so->by_lower = repalloc_huge(so->by_lower, sizeof(int64) * so->cands_capacity);
		}
	}
	for (int i = 0; i < n; i++)
	{
		Candidate *c = &so->cands[so->ncands++];

		c->lower = so->null_query ? 0 : so->lower[i];
		c->est = so->null_query ? 0 : so->est[i];
		c->rescored = false;
		c->posting = *so->ptrs[i];
	}
}

/* Reads one leaf's chain and estimates every live posting. */
static void
scan_leaf(IndexScanDesc scan, const VidxTreeNode *node)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	Relation index = scan->indexRelation;
	BlockNumber blkno = node->head_block;

	if (!so->null_query)
		vidx_query_prep(so->prep, (VidxMetric) so->meta.metric, so->qrot, vidx_tree_centroid(node),
		                so->meta.dims);

	while (BlockNumberIsValid(blkno))
	{
		Buffer buf = ReadBuffer(index, blkno);
		Page page;
		VidxPageOpaque opaque;
		OffsetNumber maxoff;
		int n = 0;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		opaque = VidxPageGetOpaque(page);
		if (opaque->page_type != VIDX_PAGE_POSTING || opaque->head != node->head_block)
		{
			UnlockReleaseBuffer(buf);
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": block %u is not in the posting chain of block %u",
			                       RelationGetRelationName(index), blkno, node->head_block)));
		}
		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			ItemId iid = PageGetItemId(page, off);
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
			add_candidates(so, n);
		}
		blkno = opaque->next;
		UnlockReleaseBuffer(buf);
	}
}

/* Reads the next vidx.probes leaves (every leaf for a NULL query) into the candidates. */
static void
next_round(IndexScanDesc scan)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	VidxTreeCache *cache = vidx_get_tree(scan->indexRelation, &so->meta);
	int probes = so->null_query ? INT_MAX : vidx_probes;

	if (!so->started)
	{
		MemoryContext old = MemoryContextSwitchTo(so->cxt);

		so->search = palloc(vidx_tree_search_size(cache->tree));
		so->qrot = palloc0(sizeof(float) * so->meta.dims);
		if (!so->null_query)
		{
			vidx_to_index_space(cache, so->query, so->qrot);
			so->prep = palloc(vidx_query_prep_size(so->meta.dims));
		}
		vidx_tree_search_begin(so->search, cache->tree, (VidxMetric) so->meta.metric, so->qrot);
		vidx_sidecar_refresh(scan->indexRelation, &so->meta);
		MemoryContextSwitchTo(old);
		so->started = true;
		pgstat_count_index_scan(scan->indexRelation);
	}

	Assert(so->ncands == 0);
	for (int i = 0; i < probes; i++)
	{
		float key;
		int32 leaf = vidx_tree_search_next(so->search, cache->tree, &key);

		if (leaf < 0)
		{
			so->leaves_done = true;
			break;
		}
		scan_leaf(scan, vidx_tree_node(cache->tree, leaf));
		CHECK_FOR_INTERRUPTS();
	}
	if (!so->null_query)
	{
		for (int64 i = 0; i < so->ncands; i++)
			so->by_est[i] = so->by_lower[i] = i;
		so->nby_est = so->nby_lower = so->ncands;
		for (int64 i = so->ncands / 2 - 1; i >= 0; i--)
		{
			id_sift_down(so, so->by_est, so->ncands, i, false);
			id_sift_down(so, so->by_lower, so->ncands, i, true);
		}
	}
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

	ItemPointerSet(&tid, c->posting.heap_block, c->posting.heap_offset);
	c->rescored = true;
	if (!vidx_sidecar_distance(scan->indexRelation, &so->meta, &c->posting, so->query, &distance))
	{
		MemoryContext old = MemoryContextSwitchTo(so->cxt);
		float *v = table_vector(scan, &tid);

		MemoryContextSwitchTo(old);
		/*
		 * The row is gone: nobody can see it. It does not count against the
		 * budget, so that the rows returned do not depend on whether a dead
		 * row's vector came from the sidecar (and was returned, then filtered
		 * out by the executor) or could not be read from the table.
		 */
		if (v == NULL)
			return;
		distance = vidx_distance(metric, v, so->query, so->meta.dims);
	}
	so->rescored++;
	result_push(so, distance_to_score(metric, distance), &tid);
}

bool
vidx_gettuple(IndexScanDesc scan, ScanDirection dir)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;

	if (dir != ForwardScanDirection)
		elog(ERROR, "vidx only supports forward scans");
	if (so->empty)
		return false;

	for (;;)
	{
		bool budget_left = so->rescored < so->returned + vidx_rerank;

		if (so->null_query && so->ncands > 0)
		{
			Candidate *c = &so->cands[--so->ncands];

			ItemPointerSet(&scan->xs_heaptid, c->posting.heap_block, c->posting.heap_offset);
			break;
		}
		if (so->nresults > 0 &&
		    (so->nby_est == 0 || !budget_left || so->results[0].score <= min_lower_left(so)))
		{
			ScanResult r = result_pop(so);

			scan->xs_heaptid = r.tid;
			break;
		}
		if (so->nby_est > 0)
		{
			rescore(scan, &so->cands[id_pop(so, so->by_est, &so->nby_est, false)]);
			continue;
		}
		if (so->started && so->leaves_done)
			return false;
		so->ncands = 0;
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

	if (so->fetch != NULL)
	{
		table_index_fetch_end(so->fetch);
		ExecDropSingleTupleTableSlot(so->slot);
		FreeExecutorState(so->estate);
	}
	MemoryContextDelete(so->cxt);
	if (so->cands)
	{
		pfree(so->cands);
		pfree(so->by_est);
		pfree(so->by_lower);
	}
	if (so->results)
		pfree(so->results);
	pfree(so->ptrs);
	pfree(so->est);
	pfree(so->lower);
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
	*indexStartupCost = costs.indexTotalCost + Min((double) vidx_rerank, costs.numIndexTuples) *
	                                               cpu_operator_cost * Max(1, meta.dims / 16);
	*indexTotalCost = *indexStartupCost;
	*indexSelectivity = costs.indexSelectivity;
	*indexCorrelation = 0;
	*indexPages = costs.numIndexPages;
}
