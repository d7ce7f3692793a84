/*
 * scan.c: index scans (ORDER BY col <op> query LIMIT k): the AM scan callbacks.
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
#include "scan.h"

#include <float.h>
#include <math.h>

#include "access/tableam.h"
#include "catalog/index.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/* ---------- settings ---------- */

int vidx_probes = 10;
int vidx_rerank = 0;
int vidx_scan_threads = 1;
int vidx_iterative_scan = VIDX_ITERATIVE_STRICT;
static double vidx_target_recall = VIDX_DEFAULT_TARGET_RECALL;

/*
 * Whether vidx.probes and vidx.target_recall were set (SET, ALTER ... SET,
 * postgresql.conf, ...) rather than left at their built-in defaults: an
 * explicit vidx.probes overrides the default target, not an explicit one.
 * Kept in each value's GUC "extra", so RESET, SET LOCAL and rollbacks restore
 * the flag with the value.
 */
static bool vidx_probes_explicit = false;
static bool vidx_target_recall_explicit = false;

static int vidx_max_scan_threads = 4;

static const struct config_enum_entry iterative_scan_options[] = {
    {"strict_order", VIDX_ITERATIVE_STRICT, false},
    {"relaxed_order", VIDX_ITERATIVE_RELAXED, false},
    {NULL, 0, false},
};

/* A check hook's extra: whether the value comes from anywhere but the default. */
static bool
note_explicit(void **extra, GucSource source)
{
	bool *is_explicit = malloc(sizeof(bool)); /* GUC extras are malloc'd (guc.c frees them) */

	if (is_explicit == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		GUC_check_errmsg("out of memory");
		return false;
	}
	*is_explicit = source > PGC_S_DEFAULT;
	*extra = is_explicit;
	return true;
}

static bool
check_probes(int *newval, void **extra, GucSource source)
{
	return note_explicit(extra, source);
}

static void
assign_probes(int newval, void *extra)
{
	vidx_probes_explicit = *(bool *) extra;
}

/* vidx.target_recall: 0 (off) or 0.5 to 0.999. */
static bool
check_target_recall(double *newval, void **extra, GucSource source)
{
	if (*newval != 0 && *newval < 0.5)
	{
		GUC_check_errdetail("vidx.target_recall must be 0 (off) or between 0.5 and 0.999.");
		return false;
	}
	return note_explicit(extra, source);
}

static void
assign_target_recall(double newval, void *extra)
{
	vidx_target_recall_explicit = *(bool *) extra;
}

/*
 * The recall target scans aim for, 0 when vidx.probes decides: the default
 * target gives way to a vidx.probes that was set, a target that was set does
 * not.
 */
double
vidx_active_target_recall(void)
{
	if (vidx_probes_explicit && !vidx_target_recall_explicit)
		return 0;
	return vidx_target_recall;
}

void
vidx_scan_init(void)
{
	DefineCustomIntVariable(
	    "vidx.probes", "Number of leaves a vidx scan reads before it returns rows",
	    "More probes: higher recall, slower queries. Setting it overrides "
	    "the default vidx.target_recall (not one that was set).",
	    &vidx_probes, 10, 1, 1000000, PGC_USERSET, 0, check_probes, assign_probes, NULL);
	DefineCustomRealVariable(
	    "vidx.target_recall", "Recall@10 a vidx scan aims for (0 = off: vidx.probes decides)",
	    "A scan reads as many leaves as the index's calibration curve (measured at build time "
	    "on its own rows, see vidx_stats and vidx_calibrate) says this recall needs. The "
	    "default gives way to vidx.probes when that is set; an index without a curve uses "
	    "vidx.probes.",
	    &vidx_target_recall, VIDX_DEFAULT_TARGET_RECALL, 0, 0.999, PGC_USERSET, 0,
	    check_target_recall, assign_target_recall, NULL);
	DefineCustomIntVariable(
	    "vidx.rerank", "Re-scoring budget of a vidx scan, beyond the rows it returned (0 = none)",
	    "Candidates are re-scored with their full vectors, lowest lower bound first; a row "
	    "is returned once no candidate left can beat it by its error bound. With a budget, "
	    "once this many more candidates than rows returned were re-scored, a row is "
	    "returned once no candidate left is expected to beat it by its estimate.",
	    &vidx_rerank, 0, 0, 1000000, PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable(
	    "vidx.iterative_scan", "Order of the rows a vidx scan returns past its first leaves",
	    "strict_order (the default): rows always come in order of distance; a row found "
	    "later that is closer than one already returned is skipped. relaxed_order: no row "
	    "found is skipped, but such rows come out of order (re-sort them in the query).",
	    &vidx_iterative_scan, VIDX_ITERATIVE_STRICT, iterative_scan_options, PGC_USERSET, 0, NULL,
	    NULL, NULL);
	DefineCustomIntVariable(
	    "vidx.scan_threads", "Threads a vidx scan may use to estimate a large group of postings",
	    "Each backend starts its own threads: with many concurrent queries, keep the product "
	    "of clients and threads at or below the number of cores.",
	    &vidx_scan_threads, 1, 1, 64, PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("vidx.max_scan_threads",
	                        "Most threads any vidx scan uses, whatever vidx.scan_threads says",
	                        "A scan uses min(vidx.scan_threads, vidx.max_scan_threads) threads.",
	                        &vidx_max_scan_threads, 4, 1, 64, PGC_SIGHUP, 0, NULL, NULL, NULL);
	vidx_pool_init();
}

int
vidx_scan_thread_count(void)
{
	return Min(vidx_scan_threads, vidx_max_scan_threads);
}

/* ---------- scan callbacks ---------- */

IndexScanDesc
vidx_beginscan(Relation index, int nkeys, int norderbys)
{
	IndexScanDesc scan = RelationGetIndexScan(index, nkeys, norderbys);
	VidxScanOpaque so = palloc0(sizeof(VidxScanOpaqueData));

	so->cxt = AllocSetContextCreate(CurrentMemoryContext, "vidx scan", ALLOCSET_DEFAULT_SIZES);
	so->scan_cxt = CurrentMemoryContext;
	vidx_pool_take_scratch(so);
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
	int lbound;

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
	so->ncands = 0;
	so->by_est.nfront = so->by_est.nback = so->by_lower.nfront = so->by_lower.nback = 0;
	so->nahead = so->ahead_pos = 0;
	so->sidecar_io = false;
	so->residency_asked = 0;
	so->nnear_top = 0;
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
	so->probes = (int) ceil(vidx_scan_probes(&so->meta));
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
	/* sk_subtype: the operator's right operand type (real[] for vidx_search) */
	so->query =
	    vidx_datum_to_vector(scan->indexRelation, scan->orderByData[0].sk_argument,
	                         scan->orderByData[0].sk_subtype, &dims, &lbound, "query vector");
	vidx_check_dims(dims, so->meta.dims, scan->indexRelation);
	if (so->meta.metric == VIDX_METRIC_COSINE)
		vidx_check_nonzero(so->query, dims);
	so->exact_mode = query_needs_exact_mode(so->query, dims, (VidxMetric) so->meta.metric);
	so->probes = vidx_probes_for_query(vidx_scan_probes(&so->meta), so->query, dims);

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
	/*
	 * Round r reads probes * 2^r leaves (vidx.probes, or what vidx.target_recall
	 * needs): a deep scan reads ahead of the rows it returns.
	 */
	int probes =
	    in_node_order ? INT_MAX : (int) Min((int64) so->probes << Min(so->rounds, 20), INT_MAX);
	Size prep_size = vidx_query_prep_size(so->meta.dims);
	int64 first;
	int nleaves = 0;

	if (!so->null_query && so->started)
		vidx_pool_compact(so);
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
		 * Probes covering every leaf ask for an exhaustive search: with
		 * bounds that always hold (not the probabilistic ones), rows come out
		 * in exact order and none is skipped.
		 */
		so->exact_bounds = (uint32) so->probes >= so->meta.nleaves;
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
	if (nleaves > 0)
		vidx_scan_leaf_prefetch(scan, vidx_tree_node(cache->tree, so->round[0]));
	for (int i = 0; i < nleaves; i++)
	{
		const VidxTreeNode *node = vidx_tree_node(cache->tree, so->round[i]);

		/* the next leaf's chain while this one is read */
		if (i + 1 < nleaves)
			vidx_scan_leaf_prefetch(scan, vidx_tree_node(cache->tree, so->round[i + 1]));

		if (estimated)
		{
			vidx_query_prep_refined(so->prep, (VidxMetric) so->meta.metric, so->qrot,
			                        vidx_tree_centroid(node), so->meta.dims,
			                        (int) so->meta.refine_bits);
			if (so->exact_bounds)
				vidx_query_prep_exact_bounds(so->prep);
		}
		vidx_scan_leaf(scan, node, so->prep);
		CHECK_FOR_INTERRUPTS();
	}
	so->pool += so->ncands - first;
	so->rounds++;
	so->round_rescored = so->rescored;
	so->round_returned = so->returned;
	if (!so->null_query)
		vidx_pool_build_heaps(so);
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

/*
 * Prefetches the heap page of a re-scored row if it is among the best
 * VIDX_HEAP_PREFETCH of the scan so far: it will likely be returned, and the
 * executor will read it.
 */
static void
prefetch_if_near_top(IndexScanDesc scan, double score, BlockNumber heap_block)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	int i;

	if (scan->heapRelation == NULL ||
	    (so->nnear_top == VIDX_HEAP_PREFETCH && score >= so->near_top[VIDX_HEAP_PREFETCH - 1]))
		return;
	i = Min(so->nnear_top, VIDX_HEAP_PREFETCH - 1);
	so->nnear_top = Min(so->nnear_top + 1, VIDX_HEAP_PREFETCH);
	for (; i > 0 && so->near_top[i - 1] > score; i--)
		so->near_top[i] = so->near_top[i - 1];
	so->near_top[i] = score;
	PrefetchBuffer(scan->heapRelation, MAIN_FORKNUM, heap_block);
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
	if (!vidx_sidecar_distance(scan->indexRelation, &so->meta, c->slot, c->vhash, so->query,
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
	if (so->sidecar_io)
		prefetch_if_near_top(scan, distance_to_score(metric, distance), c->heap_block);
	vidx_result_push(so, distance_to_score(metric, distance), distance, &tid);
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

	if (!vidx_pool_more_to_rescore(so) || best <= vidx_pool_min_left(so, true))
		return true;
	return so->rerank > 0 &&
	       so->rescored - so->round_rescored >= so->returned - so->round_returned + so->rerank &&
	       best <= vidx_pool_min_left(so, false);
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
			(void) vidx_result_pop(so);
			so->out_of_order++;
		}
		if (want_next_round(so))
		{
			next_round(scan);
			continue;
		}
		if (so->nresults > 0 && best_row_settled(so))
		{
			ScanResult r = vidx_result_pop(so);

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
		if (vidx_pool_more_to_rescore(so))
		{
			rescore(scan, vidx_pool_next_to_rescore(scan));
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
	elog(vidx_active_target_recall() > 0 ? DEBUG1 : DEBUG2,
	     "vidx scan of \"%s\": probes %d%s, %d rounds, %ld candidates, %ld re-scored, "
	     "%ld returned, %ld out of order (%s)",
	     RelationGetRelationName(scan->indexRelation), so->probes,
	     vidx_active_target_recall() > 0
	         ? (so->meta.calib_npoints > 0 ? " (vidx.target_recall)"
	                                       : " (not calibrated: vidx.probes)")
	         : "",
	     so->rounds, (long) so->pool, (long) so->rescored, (long) so->returned,
	     (long) so->out_of_order, so->strict ? "skipped" : "returned");
	MemoryContextDelete(so->cxt);
	vidx_pool_release(so);
	if (so->results)
		pfree(so->results);
	pfree(so);
	scan->opaque = NULL;
}
