/*
 * scan.h: what the files of an index scan share (not for other glue files).
 *
 *   scan.c       the AM scan callbacks: rounds of leaves, exact re-scoring,
 *                the order invariant
 *   scan_pool.c  the candidate pool: the per-backend scratch area, the heaps by
 *                lower bound and by estimate, the heap of re-scored rows
 *   scan_leaf.c  reading a leaf's chain in groups of locked pages, estimating
 *                and refining its postings
 *   scan_cost.c  amcostestimate
 */
#ifndef VIDX_SCAN_H
#define VIDX_SCAN_H

#include "vidx.h"

#include "access/relscan.h"

/* A posting seen by the scan, kept after its page lock is released. */
typedef VidxCandidate Candidate;

/*
 * An entry of the pool's heaps: a candidate and its key (lower bound or
 * estimate) side by side, so that sifting reads one array, not the candidates.
 */
typedef struct PoolEntry
{
	float key;
	int64 id; /* index into cands */
} PoolEntry;

/*
 * A min-heap of candidates in two tiers (scan_pool.c): a binary heap of the
 * entries whose keys are at most cut, and after it the others, unordered (all
 * above cut). A scan pops a few hundred of tens of thousands of candidates:
 * heapifying them all cost more than estimating them.
 */
typedef struct PoolHeap
{
	PoolEntry *e; /* the pool's capacity */
	int64 front;  /* the heap: e[front .. front + nfront) */
	int64 nfront;
	int64 back; /* the rest: e[back .. back + nback) */
	int64 nback;
	float cut;
} PoolHeap;

/*
 * Re-scoring reads each candidate's full vector from a different place of the
 * sidecar: a cache and TLB miss per record. The next few candidates (in
 * lower-bound order) are taken from the heap together and their records
 * prefetched, so the misses overlap instead of coming one after another.
 */
#define VIDX_LOOKAHEAD 8
/*
 * When the sidecar does not fit in memory, a record not in the page cache
 * costs a disk read (about 0.1 ms): the next this many candidates have their
 * reads started (vidx_sidecar_willneed), so that they run in parallel.
 */
#define VIDX_IO_LOOKAHEAD 32
/*
 * Records whose page-cache residency a scan asks first, then one in
 * VIDX_RESIDENCY_SAMPLE: each ask is a mincore call (about a microsecond;
 * asking 8 first and one in 8 was 4% of a cached Fashion-MNIST query).
 */
#define VIDX_RESIDENCY_FIRST 2
#define VIDX_RESIDENCY_SAMPLE 16
/*
 * In the same case the table is likely not cached either, and the executor
 * reads each row returned (it computes the ORDER BY distance from the stored
 * vector): a re-scored row among the best this many so far has its heap page
 * prefetched, so those reads overlap too.
 */
#define VIDX_HEAP_PREFETCH 10

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
	PoolHeap by_lower;
	PoolHeap by_est;
	/* the next candidates by lower bound, popped early so their vectors can be prefetched */
	int64 ahead[VIDX_IO_LOOKAHEAD];
	int nahead;
	int ahead_pos;
	bool sidecar_io;        /* a record was not in the page cache: read ahead from disk */
	uint32 residency_asked; /* records taken into the look-ahead while not in sidecar_io mode */
	/* best scores re-scored so far, ascending (in sidecar_io mode): their heap pages are prefetched
	 */
	double near_top[VIDX_HEAP_PREFETCH];
	int nnear_top;

	/* min-heap of re-scored rows by exact score (kept across rescans) */
	ScanResult *results;
	int64 nresults;
	int64 results_capacity;

	int probes;  /* leaves of the first round (vidx_scan_probes, vidx_probes_for_query) */
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

/*
 * Rows a scan is expected to re-score, for the refinement cut and the
 * planner: the budget if there is one; else a typical ORDER BY ... LIMIT.
 */
#define VIDX_TYPICAL_RESCORED 100

/* ---------- the candidate pool (scan_pool.c) ---------- */

/* Registers the transaction callback that frees the scratch area after a failed scan. */
extern void vidx_pool_init(void);
/* Gives the scan the backend's scratch arrays if no other scan holds them. */
extern void vidx_pool_take_scratch(VidxScanOpaque so);
/* Room for n more candidates. */
extern void vidx_pool_reserve(VidxScanOpaque so, int64 n);
/* Gives the candidate arrays back (to the scratch area, or frees them). */
extern void vidx_pool_release(VidxScanOpaque so);
extern void vidx_pool_compact(VidxScanOpaque so);
extern void vidx_pool_build_heaps(VidxScanOpaque so);
extern float vidx_pool_min_left(VidxScanOpaque so, bool by_lower);
extern bool vidx_pool_more_to_rescore(VidxScanOpaque so);
extern Candidate *vidx_pool_next_to_rescore(IndexScanDesc scan);
/* The heap of re-scored rows, by exact score. */
extern void vidx_result_push(VidxScanOpaque so, double score, double distance, ItemPointer tid);
extern ScanResult vidx_result_pop(VidxScanOpaque so);

/* ---------- reading leaves (scan_leaf.c) ---------- */

/* Reads one leaf's chain and estimates every live posting into the pool. */
extern void vidx_scan_leaf(IndexScanDesc scan, const VidxTreeNode *node, const void *prep);
extern void vidx_scan_leaf_prefetch(IndexScanDesc scan, const VidxTreeNode *node);

#endif /* VIDX_SCAN_H */
