/*
 * vacuum.c: ambulkdelete and amvacuumcleanup.
 *
 * Dead postings are removed from their page (the page is compacted), and the
 * insert hint of the chain's head goes back to the head, so inserts into that
 * leaf fill the freed space before they extend the chain. Pages never leave
 * their chain, so none leaks. Sidecar slots of removed postings are not
 * reused; REINDEX compacts the sidecar.
 */
#include "vidx.h"

#include "commands/vacuum.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/rel.h"

static void
reset_insert_hint(Relation index, BlockNumber head, BufferAccessStrategy strategy)
{
	Buffer buf = ReadBufferExtended(index, MAIN_FORKNUM, head, RBM_NORMAL, strategy);
	VidxPageOpaque opaque;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	opaque = VidxPageGetOpaque(BufferGetPage(buf));
	if (opaque->page_type == VIDX_PAGE_POSTING && opaque->head == head &&
	    opaque->insert_hint != head)
	{
		GenericXLogState *state = GenericXLogStart(index);
		Page page = GenericXLogRegisterBuffer(state, buf, 0);

		VidxPageGetOpaque(page)->insert_hint = head;
		GenericXLogFinish(state);
	}
	UnlockReleaseBuffer(buf);
}

IndexBulkDeleteResult *
vidx_bulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
                IndexBulkDeleteCallback callback, void *callback_state)
{
	Relation index = info->index;
	BlockNumber nblocks = RelationGetNumberOfBlocks(index);
	BlockNumber *heads = palloc(sizeof(BlockNumber) * Max(nblocks, 1));
	int nheads = 0;

	if (stats == NULL)
		stats = palloc0(sizeof(IndexBulkDeleteResult));

	for (BlockNumber blkno = 1; blkno < nblocks; blkno++)
	{
		Buffer buf;
		Page page;
		OffsetNumber deletable[MaxOffsetNumber];
		int ndeletable = 0;
		OffsetNumber maxoff;

		vacuum_delay_point();
		buf = ReadBufferExtended(index, MAIN_FORKNUM, blkno, RBM_NORMAL, info->strategy);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		page = BufferGetPage(buf);
		if (PageIsNew(page) || VidxPageGetOpaque(page)->page_type != VIDX_PAGE_POSTING)
		{
			UnlockReleaseBuffer(buf);
			continue;
		}

		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			const VidxPosting *p =
			    (const VidxPosting *) PageGetItem(page, PageGetItemId(page, off));
			ItemPointerData tid;

			ItemPointerSet(&tid, p->heap_block, p->heap_offset);
			if (callback(&tid, callback_state))
				deletable[ndeletable++] = off;
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
			heads[nheads++] = VidxPageGetOpaque(page)->head;
		}
		UnlockReleaseBuffer(buf);
	}

	/* Point inserts back at the start of every chain that has room again. */
	for (int i = 0; i < nheads; i++)
		if (i == 0 || heads[i] != heads[i - 1])
			reset_insert_hint(index, heads[i], info->strategy);

	stats->num_pages = nblocks;
	pfree(heads);
	return stats;
}

IndexBulkDeleteResult *
vidx_vacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats)
{
	Relation index = info->index;
	BlockNumber nblocks;

	if (info->analyze_only)
		return stats;

	nblocks = RelationGetNumberOfBlocks(index);
	if (stats == NULL)
	{
		/* No bulkdelete pass ran: count the postings for the statistics. */
		stats = palloc0(sizeof(IndexBulkDeleteResult));
		for (BlockNumber blkno = 1; blkno < nblocks; blkno++)
		{
			Buffer buf;
			Page page;

			vacuum_delay_point();
			buf = ReadBufferExtended(index, MAIN_FORKNUM, blkno, RBM_NORMAL, info->strategy);
			LockBuffer(buf, BUFFER_LOCK_SHARE);
			page = BufferGetPage(buf);
			if (!PageIsNew(page) && VidxPageGetOpaque(page)->page_type == VIDX_PAGE_POSTING)
				stats->num_index_tuples += PageGetMaxOffsetNumber(page);
			UnlockReleaseBuffer(buf);
		}
	}
	stats->num_pages = nblocks;
	return stats;
}
