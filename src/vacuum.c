/*
 * vacuum.c: ambulkdelete and amvacuumcleanup.
 *
 * Both run with the split lock (a heavyweight lock on the metapage's block
 * number, split.c): no leaf is split meanwhile, so no posting VACUUM is
 * removing can be copied to a chain it has already passed.
 *
 * Dead postings are removed from their page (the page is compacted); the
 * chain's head gets its posting count lowered and its insert hint back to the
 * head, so inserts into that leaf fill the freed space before they extend the
 * chain. Chains a split replaced (in the graveyard) are skipped: no current
 * scan or insert uses them, and they are freed whole. The cleanup frees the
 * graveyard entries no snapshot can still read and sets the metapage's
 * posting count exactly. The sidecar slots of the postings removed from the
 * current tree's chains are freed for inserts to reuse (freeslots.c).
 */
#include "vidx.h"

#include "access/table.h"
#include "catalog/index.h"
#include "commands/vacuum.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/indexfsm.h"
#include "storage/lmgr.h"
#include "utils/rel.h"

/* Postings removed from one chain, by its head. */
typedef struct HeadTally
{
	BlockNumber head;
	uint32 removed;
} HeadTally;

static int
cmp_tally(const void *a, const void *b)
{
	BlockNumber x = ((const HeadTally *) a)->head, y = ((const HeadTally *) b)->head;

	return (x > y) - (x < y);
}

/* Lowers a head's posting count and points its insert hint back at it. */
static void
update_head(Relation index, BlockNumber head, uint32 removed, BufferAccessStrategy strategy)
{
	Buffer buf = ReadBufferExtended(index, MAIN_FORKNUM, head, RBM_NORMAL, strategy);
	VidxPageOpaque opaque;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	opaque = VidxPageGetOpaque(BufferGetPage(buf));
	if (vidx_page_is(BufferGetPage(buf), VIDX_PAGE_POSTING) && opaque->head == head)
	{
		GenericXLogState *state = GenericXLogStart(index);
		VidxPageOpaque w = VidxPageGetOpaque(GenericXLogRegisterBuffer(state, buf, 0));

		w->insert_hint = head;
		w->npostings -= Min(removed, w->npostings);
		w->split_refused = vidx_split_refused_after_vacuum(w->split_refused, w->npostings);
		GenericXLogFinish(state);
	}
	UnlockReleaseBuffer(buf);
}

/* A leaf of the current tree version, by its head. */
typedef struct CurrentLeaf
{
	BlockNumber head;
	uint32 leaf_id;
} CurrentLeaf;

static int
cmp_leaf(const void *a, const void *b)
{
	BlockNumber x = ((const CurrentLeaf *) a)->head, y = ((const CurrentLeaf *) b)->head;

	return (x > y) - (x < y);
}

/* The current tree's leaves, sorted by head (under the split lock: the version holds still). */
static int
current_leaves(Relation index, CurrentLeaf **leaves)
{
	VidxMetaPageData meta;
	const VidxTreeHeader *h;
	VidxTreeCache *cache;
	int n = 0;

	vidx_read_meta(index, &meta);
	if (meta.dims == 0)
	{
		*leaves = palloc(sizeof(CurrentLeaf));
		return 0;
	}
	cache = vidx_get_tree(index, &meta);
	h = (const VidxTreeHeader *) cache->tree;
	*leaves = palloc(sizeof(CurrentLeaf) * Max(h->nleaves, 1));
	for (uint32 i = 0; i < h->nnodes; i++)
	{
		const VidxTreeNode *node = vidx_tree_node(cache->tree, i);

		if (node->nchildren == 0 && n < (int) h->nleaves)
		{
			(*leaves)[n].head = node->head_block;
			(*leaves)[n].leaf_id = node->leaf_id;
			n++;
		}
	}
	qsort(*leaves, n, sizeof(CurrentLeaf), cmp_leaf);
	return n;
}

/*
 * Whether a posting page is one of the current tree's chains, whose postings
 * alone own their slots: a replaced chain shares them with its copies, and so
 * does an unpublished split's chain (left by a crash) before VACUUM frees it.
 */
static bool
in_current_tree(Page page, const CurrentLeaf *leaves, int nleaves)
{
	CurrentLeaf key;
	const CurrentLeaf *hit;

	key.head = VidxPageGetOpaque(page)->head;
	hit = bsearch(&key, leaves, nleaves, sizeof(CurrentLeaf), cmp_leaf);
	return hit != NULL && hit->leaf_id == VidxPageGetOpaque(page)->leaf_id;
}

/* Removed postings whose slots bulkdelete frees at a time (their headers are copied). */
#define FREE_SLOTS_BATCH 4096

/* Whether a posting page belongs to a chain of the current tree version. */
static bool
current_chain(Page page, const BlockNumber *graves, int ngraves)
{
	BlockNumber head = VidxPageGetOpaque(page)->head;

	/* (few entries: the graveyard is freed at every VACUUM and split) */
	for (int i = 0; i < ngraves; i++)
		if (graves[i] == head)
			return false;
	return true;
}

IndexBulkDeleteResult *
vidx_bulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
                IndexBulkDeleteCallback callback, void *callback_state)
{
	Relation index = info->index;
	BlockNumber nblocks;
	HeadTally *tally;
	int ntally = 0;
	BlockNumber *graves;
	int ngraves;
	CurrentLeaf *leaves;
	int nleaves;
	VidxPosting *freed = palloc(sizeof(VidxPosting) * (FREE_SLOTS_BATCH + MaxOffsetNumber));
	int nfreed = 0;

	if (stats == NULL)
		stats = palloc0(sizeof(IndexBulkDeleteResult));
	LockPage(index, VIDX_METAPAGE_BLKNO, ExclusiveLock);
	nblocks = RelationGetNumberOfBlocks(index);
	tally = palloc(sizeof(HeadTally) * Max(nblocks, 1));
	ngraves = vidx_graveyard_heads(index, &graves);
	nleaves = current_leaves(index, &leaves);

	for (BlockNumber blkno = 1; blkno < nblocks; blkno++)
	{
		Buffer buf;
		Page page;
		OffsetNumber deletable[MaxOffsetNumber];
		int ndeletable = 0;
		OffsetNumber maxoff;
		bool owns_slots;

		vacuum_delay_point();
		buf = ReadBufferExtended(index, MAIN_FORKNUM, blkno, RBM_NORMAL, info->strategy);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		page = BufferGetPage(buf);
		if (!vidx_page_is(page, VIDX_PAGE_POSTING) || !current_chain(page, graves, ngraves))
		{
			UnlockReleaseBuffer(buf);
			continue;
		}

		owns_slots = in_current_tree(page, leaves, nleaves);
		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			const VidxPosting *p =
			    (const VidxPosting *) PageGetItem(page, PageGetItemId(page, off));
			ItemPointerData tid;

			ItemPointerSet(&tid, p->heap_block, p->heap_offset);
			if (callback(&tid, callback_state))
			{
				deletable[ndeletable++] = off;
				if (owns_slots && p->slot != VIDX_SLOT_NONE)
					freed[nfreed++] = *p;
			}
			else
				stats->num_index_tuples++;
		}

		if (ndeletable > 0)
		{
			GenericXLogState *state = GenericXLogStart(index);
			Page wpage = GenericXLogRegisterBuffer(state, buf, 0);

			PageIndexMultiDelete(wpage, deletable, ndeletable);
			GenericXLogFinish(state);
			stats->tuples_removed += ndeletable;
			tally[ntally].head = VidxPageGetOpaque(page)->head;
			tally[ntally].removed = ndeletable;
			ntally++;
		}
		UnlockReleaseBuffer(buf);
		/* (after their deletions are WAL-logged: a crash can leak slots, never free one twice) */
		if (nfreed >= FREE_SLOTS_BATCH)
		{
			vidx_free_slots(index, freed, nfreed);
			nfreed = 0;
		}
	}
	vidx_free_slots(index, freed, nfreed);

	/* Every chain that lost postings: its count, and inserts back at its start. */
	qsort(tally, ntally, sizeof(HeadTally), cmp_tally);
	for (int i = 0; i < ntally;)
	{
		uint32 removed = 0;
		int j = i;

		while (j < ntally && tally[j].head == tally[i].head)
			removed += tally[j++].removed;
		update_head(index, tally[i].head, removed, info->strategy);
		i = j;
	}

	stats->num_pages = nblocks;
	pfree(tally);
	UnlockPage(index, VIDX_METAPAGE_BLKNO, ExclusiveLock);
	return stats;
}

/* Sets the metapage's count of postings in current chains. */
static void
set_npostings(Relation index, uint64 n)
{
	Buffer buf = ReadBuffer(index, VIDX_METAPAGE_BLKNO);
	GenericXLogState *state;
	VidxMetaPage meta;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	meta = VidxPageGetMeta(GenericXLogRegisterBuffer(state, buf, 0));
	meta->npostings = n;
	GenericXLogFinish(state);
	UnlockReleaseBuffer(buf);
}

/*
 * Frees what no version reaches: chains of a split or merge that a crash cut
 * short before it was published (posting pages that belong neither to a leaf
 * of the current tree nor to the graveyard: their leaf ids may have been
 * handed out again since, by a later split), tree pages outside the current
 * version's list (one never published, whose version number a later split
 * may have taken since; earlier ones a crash kept from being freed); and records every free or new
 * page in the free space map, which crashes may have lost. Runs with the split lock, after the
 * merges: the tree and the graveyard hold still, and inserts only add pages to current chains.
 */
static void
reclaim_pages(Relation index, BufferAccessStrategy strategy)
{
	VidxMetaPageData meta;
	BlockNumber nblocks = RelationGetNumberOfBlocks(index);
	CurrentLeaf *leaves;
	int nleaves = current_leaves(index, &leaves);
	BlockNumber *graves;
	int ngraves = vidx_graveyard_heads(index, &graves);
	bool *current_tree = palloc0(sizeof(bool) * Max(nblocks, 1));

	vidx_read_meta(index, &meta);
	/* the current version's tree pages (a cut-short split's may carry its version number) */
	for (BlockNumber blkno = meta.tree_start;
	     BlockNumberIsValid(blkno) && blkno < nblocks && !current_tree[blkno];)
	{
		Buffer buf = ReadBufferExtended(index, MAIN_FORKNUM, blkno, RBM_NORMAL, strategy);

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		current_tree[blkno] = vidx_page_is(BufferGetPage(buf), VIDX_PAGE_TREE);
		blkno =
		    current_tree[blkno] ? VidxPageGetOpaque(BufferGetPage(buf))->next : InvalidBlockNumber;
		UnlockReleaseBuffer(buf);
	}
	for (BlockNumber blkno = 1; blkno < nblocks; blkno++)
	{
		Buffer buf;
		Page page;
		VidxPageOpaque o;
		bool orphan_chain;

		vacuum_delay_point();
		buf = ReadBufferExtended(index, MAIN_FORKNUM, blkno, RBM_NORMAL, strategy);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		page = BufferGetPage(buf);
		o = VidxPageGetOpaque(page);
		/* (not in the graveyard: current_chain) */
		orphan_chain = vidx_page_is(page, VIDX_PAGE_POSTING) &&
		               (meta.dims == 0 ? o->leaf_id >= meta.next_leaf_id
		                               : !in_current_tree(page, leaves, nleaves) &&
		                                     current_chain(page, graves, ngraves));
		if (PageIsNew(page) || vidx_page_is(page, VIDX_PAGE_FREE))
			RecordFreeIndexPage(index, blkno);
		else if ((vidx_page_is(page, VIDX_PAGE_TREE) && !current_tree[blkno]) || orphan_chain)
			vidx_free_page(index, buf);
		UnlockReleaseBuffer(buf);
	}
}

IndexBulkDeleteResult *
vidx_vacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats)
{
	Relation index = info->index;
	BlockNumber nblocks;

	if (info->analyze_only)
		return stats;

	LockPage(index, VIDX_METAPAGE_BLKNO, ExclusiveLock);
	vidx_debug_split_point(VIDX_DEBUG_WAIT_IN_VACUUM);
	nblocks = RelationGetNumberOfBlocks(index);
	if (stats == NULL)
	{
		/* No bulkdelete pass ran: count the postings of the current chains. */
		BlockNumber *graves;
		int ngraves = vidx_graveyard_heads(index, &graves);

		stats = palloc0(sizeof(IndexBulkDeleteResult));
		for (BlockNumber blkno = 1; blkno < nblocks; blkno++)
		{
			Buffer buf;
			Page page;

			vacuum_delay_point();
			buf = ReadBufferExtended(index, MAIN_FORKNUM, blkno, RBM_NORMAL, info->strategy);
			LockBuffer(buf, BUFFER_LOCK_SHARE);
			page = BufferGetPage(buf);
			if (vidx_page_is(page, VIDX_PAGE_POSTING) && current_chain(page, graves, ngraves))
				stats->num_index_tuples += PageGetMaxOffsetNumber(page);
			UnlockReleaseBuffer(buf);
		}
	}
	/* (inserts may add postings meanwhile: the count is as exact as the statistics) */
	set_npostings(index, (uint64) stats->num_index_tuples);
	{
		/* (PostgreSQL 15's IndexVacuumInfo has no heap relation; VACUUM holds its lock) */
		Relation heap =
		    table_open(IndexGetRelation(RelationGetRelid(index), false), AccessShareLock);

		(void) vidx_merge_small_leaves(index, heap);
		/* The recall curve, measured again once the index has doubled (calibrate.c). */
		{
			VidxMetaPageData meta;

			vidx_read_meta(index, &meta);
			if (vidx_calibration_stale(&meta))
				vidx_calibrate_index(index, heap, 0, 0);
		}
		table_close(heap, AccessShareLock);
	}
	(void) vidx_recycle_graveyard(index);
	reclaim_pages(index, info->strategy);
	IndexFreeSpaceMapVacuum(index);
	stats->num_pages = nblocks;
	UnlockPage(index, VIDX_METAPAGE_BLKNO, ExclusiveLock);
	return stats;
}
