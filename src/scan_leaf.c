/*
 * scan_leaf.c: reading a leaf's chain for a scan.
 *
 * The chain's pages are share-locked in groups; their postings are estimated
 * from their codes in place (on several threads for large groups), refined
 * where refinement codes exist and can still matter, and copied into the
 * scan's pool of candidates before the group is released.
 */
#include "scan.h"

#include "pgstat.h"
#include "storage/buf_internals.h"
#include "utils/float.h"
#include "utils/memutils.h"

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
/*
 * Fewer postings than this are estimated in the calling thread. A worker
 * still spinning from the last group joins in about a microsecond, and 256
 * postings take about 5 µs at 1,024 dimensions: at 1M x 1024 (leaves of
 * about 20 pages) two threads made queries 1.08-1.18x faster at p50 with
 * this threshold, where 2,048 (more than 32 pages hold there) never engaged.
 */
#define VIDX_PARALLEL_MIN_POSTINGS 256

typedef struct PageGroup
{
	Buffer bufs[VIDX_GROUP_PAGES];
	VidxEstimateTask tasks[VIDX_GROUP_PAGES];
	int npages;
	int ntasks;
	int nptrs;
	/* VIDX_GROUP_PAGES * MaxIndexTuplesPerPage, allocated once per backend */
	const VidxPosting **ptrs;
} PageGroup;

static PageGroup group;

/*
 * One chain page in RECENT_REFRESH is pinned the usual way (a different one
 * each scan), so that the clock sweep keeps seeing the index's pages used:
 * a pin through ReadRecentBuffer does not raise a buffer's usage count.
 */
#define RECENT_REFRESH 8

static uint32 recent_tick = 0;

/*
 * Pins a chain page: in the buffer it was last found in, when that buffer
 * still holds it (ReadRecentBuffer checks the buffer's tag under its header
 * lock), else through the buffer table. On 1M x 1024 the buffer-table
 * lookups of the ~560 chain pages a query at 26 probes reads were 12% of it.
 */
static Buffer
read_chain_page(Relation index, VidxTreeCache *cache, BlockNumber blkno)
{
	Buffer buf;

	if (blkno >= cache->recent_nblocks)
		return ReadBuffer(index, blkno);
	buf = cache->recent[blkno];
	if (BufferIsValid(buf) && (blkno + recent_tick) % RECENT_REFRESH != 0 &&
	    ReadRecentBuffer(index->rd_node, MAIN_FORKNUM, blkno, buf))
	{
		/* what ReadBuffer counts for a hit (pg_statio_*_indexes) */
		pgstat_count_buffer_read(index);
		pgstat_count_buffer_hit(index);
		return buf;
	}
	buf = ReadBuffer(index, blkno);
	cache->recent[blkno] = buf;
	return buf;
}

/*
 * Prefetches into the CPU cache what reading a leaf's chain touches first on
 * each page, by the buffers and links this backend saw last time: the buffer
 * header (pinned and locked), the page header and line pointers, and the
 * special space (the next link). Following the links one page at a time,
 * each of those is a cache miss that waits for the one before. A stale hint
 * costs a wasted prefetch: reading the chain checks every page as before.
 */
void
vidx_scan_leaf_prefetch(IndexScanDesc scan, const VidxTreeNode *node)
{
	VidxTreeCache *cache = ((VidxScanOpaque) scan->opaque)->tree;
	BlockNumber blkno = node->head_block;

	if (cache->recent_next == NULL)
		return;
	for (int i = 0; i < VIDX_GROUP_PAGES && blkno != 0 && blkno < cache->recent_nblocks; i++)
	{
		Buffer buf = cache->recent[blkno];
		const char *page;

		if (!BufferIsValid(buf) || buf < 1 || buf > NBuffers)
			break;
		page = (const char *) BufferGetBlock(buf);
		__builtin_prefetch(GetBufferDescriptor(buf - 1), 1);
		for (int line = 0; line < 4; line++)
			__builtin_prefetch(page + 64 * line);
		__builtin_prefetch(page + BLCKSZ - 64);
		blkno = cache->recent_next[blkno];
	}
}

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
 * Refines the group's candidates that can still matter (lower bound below the
 * cut), while their pages are locked: the refinement codes live there.
 */
static void
refine_group(VidxScanOpaque so, const void *prep, Candidate *cands)
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
		Candidate *c = &cands[i];

		if (c->lower <= cut)
			vidx_rabitq_refine(prep, group.ptrs[i], &c->est, &c->lower);
		/* the bounds are about symmetric around the estimate */
		cut = note_upper(so, 2 * c->est - c->lower);
	}
}

/* Makes the group's postings candidates (estimated, unless the scan has no estimates), releases it.
 */
static void
flush_group(VidxScanOpaque so, const void *prep)
{
	Candidate *cands;

	vidx_pool_reserve(so, group.nptrs);
	cands = &so->cands[so->ncands];
	if (so->null_query || so->exact_mode)
	{
		/* No bound: none is returned before all are scored. */
		for (int i = 0; i < group.nptrs; i++)
			vidx_candidate_set(&cands[i], group.ptrs[i], 0, -get_float4_infinity());
	}
	else if (group.nptrs > 0)
	{
		Candidate *out = cands;

		for (int t = 0; t < group.ntasks; t++)
		{
			group.tasks[t].out = out;
			out += group.tasks[t].n;
		}
		vidx_rabitq_estimate_tasks(
		    group.tasks, group.ntasks,
		    group.nptrs >= VIDX_PARALLEL_MIN_POSTINGS ? vidx_scan_thread_count() : 1);
		if (so->meta.refine_bits > 0)
			refine_group(so, prep, cands);
	}
	so->ncands += group.nptrs;
	for (int i = 0; i < group.npages; i++)
		UnlockReleaseBuffer(group.bufs[i]);
	group.npages = group.ntasks = group.nptrs = 0;
}

/* Reads one leaf's chain and estimates every live posting. */
void
vidx_scan_leaf(IndexScanDesc scan, const VidxTreeNode *node, const void *prep)
{
	VidxScanOpaque so = (VidxScanOpaque) scan->opaque;
	Relation index = scan->indexRelation;
	BlockNumber blkno = node->head_block;

	if (group.ptrs == NULL)
	{
		Size n = (Size) VIDX_GROUP_PAGES * MaxIndexTuplesPerPage;

		group.ptrs = MemoryContextAlloc(TopMemoryContext, sizeof(VidxPosting *) * n);
	}
	/* A scan that failed inside a group left it set; the abort released its buffers. */
	group.npages = group.ntasks = group.nptrs = 0;
	recent_tick++;
	while (BlockNumberIsValid(blkno))
	{
		Buffer buf = read_chain_page(index, so->tree, blkno);
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
			t->out = NULL; /* set by flush_group */
		}
		if (so->tree->recent_next != NULL && blkno < so->tree->recent_nblocks)
			so->tree->recent_next[blkno] = opaque->next;
		blkno = opaque->next;
		if (group.npages == VIDX_GROUP_PAGES || !BlockNumberIsValid(blkno))
			flush_group(so, prep);
	}
}
