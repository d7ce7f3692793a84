/*
 * freeslots.c: sidecar slots freed by VACUUM and reused by inserts.
 *
 * VACUUM's bulkdelete gives vidx_free_slots the postings it removed from the
 * current tree's chains (never those of a replaced chain in the graveyard,
 * which share their slots with the copies in the current chains); inserts
 * take a free slot (vidx_take_free_slot) before the metapage hands out a new
 * one. So under churn the sidecar stops growing.
 *
 * The free slots are a stack of free-slot pages (VIDX_PAGE_FREESLOTS) from
 * the metapage's free_slot_page, linked by next, each holding 1 to
 * VIDX_SLOTS_PER_PAGE slots up to its pd_lower; the metapage counts pages and
 * slots. A page emptied by an insert is unlinked and marked free in the
 * insert's record, then recorded in the free space map.
 *
 * Locking: the free-slot pages are only ever locked while the metapage is
 * locked exclusively, after it (then, for a push, a new page from
 * vidx_new_buffer). WAL: each push or take is one GenericXLog record holding
 * the metapage and the pages it changes.
 *
 * Why a reused record is safe (src/README.md, "Sidecar slots"): a slot is
 * pushed only after its posting's deletion is WAL-logged, and only if its
 * record is still valid for the posting (its vector hashes to the posting's). A push
 * stamps the page with the WAL insert position (flush_lsn, past those
 * deletions); an insert that takes a slot flushes WAL up to it before it
 * overwrites the record, so no crash can bring the posting back pointing at
 * the new record. (Not the page LSN: takes move it, and a bulk insert would
 * then flush WAL once per row.) A stale posting that reads the record anyway
 * (a replaced chain's copy) fails the record's check and reads the table.
 */
#include "vidx.h"

#include "access/xlog.h"
#include "storage/bufmgr.h"
#include "storage/indexfsm.h"
#include "utils/rel.h"

/* The top free-slot page, locked exclusively; an error if it is not one. */
static Buffer
lock_free_slot_page(Relation index, BlockNumber blkno)
{
	Buffer buf;
	Page page;

	if (blkno == VIDX_METAPAGE_BLKNO || blkno >= RelationGetNumberOfBlocks(index))
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": free-slot page %u is out of range",
		                       RelationGetRelationName(index), blkno),
		                errhint("REINDEX INDEX %s;", RelationGetRelationName(index))));
	buf = ReadBuffer(index, blkno);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	page = BufferGetPage(buf);
	if (!vidx_page_is(page, VIDX_PAGE_FREESLOTS) || VidxPageGetNSlots(page) < 1 ||
	    VidxPageGetNSlots(page) > (int) VIDX_SLOTS_PER_PAGE)
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": block %u is not a free-slot page",
		                       RelationGetRelationName(index), blkno),
		                errhint("REINDEX INDEX %s;", RelationGetRelationName(index))));
	return buf;
}

/* Pushes n slots onto the stack, one WAL record per page filled. */
static void
push_slots(Relation index, const uint32 *slots, int n)
{
	while (n > 0)
	{
		Buffer mbuf = ReadBuffer(index, VIDX_METAPAGE_BLKNO);
		Buffer fbuf = InvalidBuffer;
		GenericXLogState *state;
		VidxMetaPage meta;
		Page fpage;
		int have;
		int k;

		LockBuffer(mbuf, BUFFER_LOCK_EXCLUSIVE);
		state = GenericXLogStart(index);
		meta = VidxPageGetMeta(GenericXLogRegisterBuffer(state, mbuf, 0));
		if (BlockNumberIsValid(meta->free_slot_page))
		{
			fbuf = lock_free_slot_page(index, meta->free_slot_page);
			if (VidxPageGetNSlots(BufferGetPage(fbuf)) >= (int) VIDX_SLOTS_PER_PAGE)
			{
				UnlockReleaseBuffer(fbuf);
				fbuf = InvalidBuffer;
			}
		}
		if (BufferIsValid(fbuf))
			fpage = GenericXLogRegisterBuffer(state, fbuf, 0);
		else
		{
			/* a new top page */
			fbuf = vidx_new_buffer(index);
			fpage = GenericXLogRegisterBuffer(state, fbuf, GENERIC_XLOG_FULL_IMAGE);
			vidx_init_page(fpage, VIDX_PAGE_FREESLOTS);
			((PageHeader) fpage)->pd_lower += offsetof(VidxFreeSlots, slots);
			VidxPageGetOpaque(fpage)->next = meta->free_slot_page;
			meta->free_slot_page = BufferGetBlockNumber(fbuf);
			meta->free_slot_pages++;
		}
		have = VidxPageGetNSlots(fpage);
		k = Min(n, (int) VIDX_SLOTS_PER_PAGE - have);
		memcpy(VidxPageGetFreeSlots(fpage)->slots + have, slots, sizeof(uint32) * k);
		((PageHeader) fpage)->pd_lower += sizeof(uint32) * k;
		/* past the deletions of these slots' postings, all WAL-logged by now */
		VidxPageGetFreeSlots(fpage)->flush_lsn = GetXLogInsertRecPtr();
		meta->free_slots += k;
		GenericXLogFinish(state);
		UnlockReleaseBuffer(fbuf);
		UnlockReleaseBuffer(mbuf);
		slots += k;
		n -= k;
	}
}

/* Descending, so that the lowest slots of a batch are taken first (from the top). */
static int
cmp_slot_desc(const void *a, const void *b)
{
	uint32 x = *(const uint32 *) a, y = *(const uint32 *) b;

	return (x < y) - (x > y);
}

void
vidx_free_slots(Relation index, const VidxPosting *postings, int n)
{
	VidxMetaPageData meta;
	const VidxPosting **ptrs;
	bool *valid;
	uint32 *slots;
	int nslots = 0;
	int kept = 0;

	if (n == 0)
		return;
	vidx_read_meta(index, &meta);
	ptrs = palloc(sizeof(VidxPosting *) * n);
	valid = palloc(sizeof(bool) * n);
	slots = palloc(sizeof(uint32) * n);
	for (int i = 0; i < n; i++)
		ptrs[i] = &postings[i];
	/*
	 * Only a slot whose record is still the posting's: if a crash ever
	 * brought back a posting whose slot was freed and taken since, its slot
	 * is not freed twice. (A missing or unusable sidecar frees nothing.)
	 */
	vidx_sidecar_read_vectors(index, &meta, ptrs, n, NULL, valid);
	for (int i = 0; i < n; i++)
		if (valid[i] && postings[i].slot != VIDX_SLOT_NONE)
			slots[nslots++] = postings[i].slot;
	qsort(slots, nslots, sizeof(uint32), cmp_slot_desc);
	for (int i = 0; i < nslots; i++)
		if (kept == 0 || slots[kept - 1] != slots[i])
			slots[kept++] = slots[i];
	push_slots(index, slots, kept);
	pfree(slots);
	pfree(valid);
	pfree(ptrs);
}

uint32
vidx_take_free_slot(Relation index, GenericXLogState *state, VidxMetaPage meta, Buffer *fbuf,
                    XLogRecPtr *flush_lsn)
{
	Page fpage;
	int n;
	uint32 slot;

	Assert(meta->free_slots > 0);
	*fbuf = lock_free_slot_page(index, meta->free_slot_page);
	fpage = GenericXLogRegisterBuffer(state, *fbuf, 0);
	*flush_lsn = VidxPageGetFreeSlots(fpage)->flush_lsn;
	n = VidxPageGetNSlots(fpage);
	slot = VidxPageGetFreeSlots(fpage)->slots[n - 1];
	((PageHeader) fpage)->pd_lower -= sizeof(uint32);
	meta->free_slots--;
	if (n == 1)
	{
		/* emptied: unlinked and free in this record, in the free space map after it */
		meta->free_slot_page = VidxPageGetOpaque(fpage)->next;
		meta->free_slot_pages--;
		VidxPageGetOpaque(fpage)->page_type = VIDX_PAGE_FREE;
	}
	return slot;
}

void
vidx_take_free_slot_done(Relation index, Buffer fbuf)
{
	BlockNumber blkno = BufferGetBlockNumber(fbuf);
	bool emptied = vidx_page_is(BufferGetPage(fbuf), VIDX_PAGE_FREE);

	UnlockReleaseBuffer(fbuf);
	if (emptied)
		RecordFreeIndexPage(index, blkno);
}
