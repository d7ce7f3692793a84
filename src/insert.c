/*
 * insert.c: aminsert. Route the vector down the tree to its nearest leaf,
 * encode it against that leaf's centroid, take a sidecar slot (one VACUUM
 * freed, else a new one from the metapage), write the sidecar record, then
 * append the posting to the leaf's chain.
 *
 * Locking: at most one metapage lock, never together with another lock but
 * the free-slot page a slot is taken from (freeslots.c); on a chain, the
 * head page first, then chain pages in chain order, then a new page. Every
 * page change goes through GenericXLog.
 */
#include "vidx.h"

#include "access/xlog.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "storage/bufmgr.h"
#include "utils/memutils.h"
#include "utils/rel.h"

/*
 * Takes a sidecar slot: one VACUUM freed, else a new one, else VIDX_SLOT_NONE
 * once all are used (until REINDEX); on an index that has no dimensions yet,
 * the first vector fixes them. Returns the metapage as updated.
 */
static uint64
take_slot(Relation index, int dims, VidxMetaPageData *meta_out)
{
	Buffer buf = ReadBuffer(index, VIDX_METAPAGE_BLKNO);
	Buffer fbuf = InvalidBuffer;
	XLogRecPtr flush_lsn = InvalidXLogRecPtr;
	GenericXLogState *state;
	VidxMetaPage meta;
	uint64 slot = VIDX_SLOT_NONE;
	bool fresh = false;
	const char *why = NULL;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	meta = VidxPageGetMeta(GenericXLogRegisterBuffer(state, buf, 0));
	if (meta->dims == 0)
		meta->dims = dims; /* (the tree cache is keyed by dims too) */
	else if (meta->dims != (uint32) dims)
	{
		int have = meta->dims;

		GenericXLogAbort(state);
		UnlockReleaseBuffer(buf);
		vidx_check_dims(dims, have, index);
	}
	if (meta->free_slots > 0)
		slot = vidx_take_free_slot(index, state, meta, &fbuf, &flush_lsn);
	else if (meta->next_slot < VIDX_SLOT_NONE)
	{
		slot = meta->next_slot++;
		fresh = true;
	}
	/* An estimate between VACUUMs (an insert may fail after this), which set it exactly. */
	meta->npostings++;
	memcpy(meta_out, meta, sizeof(VidxMetaPageData));
	GenericXLogFinish(state);
	if (BufferIsValid(fbuf))
		vidx_take_free_slot_done(index, fbuf);

	/*
	 * Slot 0, new, goes to the first insert into an index that has no record:
	 * built on an empty table, or an unlogged index reset by crash recovery,
	 * whose file (if any) is of an earlier build. Start a new one before any
	 * later slot is handed out. (Slot 0 freed by VACUUM and taken again is not
	 * a new start.)
	 */
	if (slot == 0 && fresh)
		why = vidx_sidecar_start(index, meta_out);
	UnlockReleaseBuffer(buf);
	if (why != NULL)
		vidx_sidecar_warn(index, why);

	/*
	 * WAL before data: the record of a freed slot is overwritten only once the
	 * deletion of its posting is on disk (flush_lsn of its free-slot page is
	 * past it; usually flushed already), so that no crash can bring the
	 * posting back pointing at another row's record.
	 */
	if (!XLogRecPtrIsInvalid(flush_lsn) && RelationNeedsWAL(index))
		XLogFlush(flush_lsn);
	return slot;
}

/*
 * Appends one posting to the chain of leaf_id that starts at head and returns
 * the chain's postings after it, and the head's split_refused mark; -1 if a
 * split replaced the chain since the caller's tree version (the caller routes
 * again in the current one).
 */
static int64
append_to_chain(Relation index, BlockNumber head, uint32 leaf_id, const VidxPosting *p, Size psize,
                uint16 *split_refused)
{
	int64 npostings;
	Buffer hbuf = ReadBuffer(index, head);
	Buffer cbuf;
	BlockNumber target;
	GenericXLogState *state;
	Page hpage;
	Page cpage;
	VidxPageOpaque hopaque;

	LockBuffer(hbuf, BUFFER_LOCK_EXCLUSIVE);
	hopaque = VidxPageGetOpaque(BufferGetPage(hbuf));
	if (!vidx_page_is(BufferGetPage(hbuf), VIDX_PAGE_POSTING) || hopaque->head != head ||
	    hopaque->leaf_id != leaf_id || (hopaque->flags & VIDX_CHAIN_REPLACED))
	{
		/*
		 * Replaced by a split (the head is marked, or already recycled: that
		 * happens only after the split's WAL record, so the metapage tells).
		 */
		UnlockReleaseBuffer(hbuf);
		return -1;
	}
	target = BlockNumberIsValid(hopaque->insert_hint) ? hopaque->insert_hint : head;

	/* Walk from the hint to the first page with room. */
	cbuf = (target == head) ? hbuf : ReadBuffer(index, target);
	if (cbuf != hbuf)
		LockBuffer(cbuf, BUFFER_LOCK_EXCLUSIVE);
	for (;;)
	{
		BlockNumber next;

		if (PageGetFreeSpace(BufferGetPage(cbuf)) >= MAXALIGN(psize))
			break;
		next = VidxPageGetOpaque(BufferGetPage(cbuf))->next;
		if (!BlockNumberIsValid(next))
			break;
		if (cbuf != hbuf)
			UnlockReleaseBuffer(cbuf);
		cbuf = ReadBuffer(index, next);
		LockBuffer(cbuf, BUFFER_LOCK_EXCLUSIVE);
	}

	state = GenericXLogStart(index);
	hpage = GenericXLogRegisterBuffer(state, hbuf, 0);
	cpage = (cbuf == hbuf) ? hpage : GenericXLogRegisterBuffer(state, cbuf, 0);
	hopaque = VidxPageGetOpaque(hpage);
	npostings = ++hopaque->npostings;
	*split_refused = hopaque->split_refused;

	if (PageGetFreeSpace(cpage) >= MAXALIGN(psize))
	{
		if (PageAddItem(cpage, (Item) p, psize, InvalidOffsetNumber, false, false) ==
		    InvalidOffsetNumber)
			elog(ERROR, "vidx: failed to add posting to block %u", BufferGetBlockNumber(cbuf));
		hopaque->insert_hint = BufferGetBlockNumber(cbuf);
	}
	else
	{
		/* The chain is full: link a new page after its last one. */
		Buffer nbuf = vidx_new_buffer(index);
		Page npage = GenericXLogRegisterBuffer(state, nbuf, GENERIC_XLOG_FULL_IMAGE);
		VidxPageOpaque nopaque;

		vidx_init_page(npage, VIDX_PAGE_POSTING);
		nopaque = VidxPageGetOpaque(npage);
		nopaque->head = head;
		nopaque->leaf_id = hopaque->leaf_id;
		if (PageAddItem(npage, (Item) p, psize, InvalidOffsetNumber, false, false) ==
		    InvalidOffsetNumber)
			elog(ERROR, "vidx: failed to add posting to a new page");
		VidxPageGetOpaque(cpage)->next = BufferGetBlockNumber(nbuf);
		hopaque->last = BufferGetBlockNumber(nbuf);
		hopaque->insert_hint = BufferGetBlockNumber(nbuf);
		GenericXLogFinish(state);
		UnlockReleaseBuffer(nbuf);
		if (cbuf != hbuf)
			UnlockReleaseBuffer(cbuf);
		UnlockReleaseBuffer(hbuf);
		return npostings;
	}
	GenericXLogFinish(state);
	if (cbuf != hbuf)
		UnlockReleaseBuffer(cbuf);
	UnlockReleaseBuffer(hbuf);
	return npostings;
}

bool
vidx_insert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid, Relation heap,
            IndexUniqueCheck checkUnique, bool indexUnchanged, IndexInfo *indexInfo)
{
	MemoryContext cxt;
	MemoryContext old;
	VidxMetaPageData meta;
	VidxTreeCache *cache;
	int lbound;
	float *v;
	float *x;
	int dims;
	uint64 slot;
	void *search;
	int32 leaf;
	float key;
	Size psize;
	VidxPosting *p;
	const VidxTreeNode *node;
	BlockNumber head;
	int64 npostings;
	uint16 split_refused = 0;
	uint32 routed_version;

	/* A NULL vector is simply not indexed. */
	if (isnull[0])
		return false;

	cxt = AllocSetContextCreate(CurrentMemoryContext, "vidx insert", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);

	v = vidx_datum_to_vector(index, values[0], InvalidOid, &dims, &lbound, "vector");
	vidx_check_indexable(v, dims, lbound, index);
	vidx_read_meta(index, &meta);
	if (meta.metric == VIDX_METRIC_COSINE)
		vidx_check_nonzero(v, dims);
	if (meta.dims != 0)
		vidx_check_dims(dims, meta.dims, index);
	else
		vidx_check_posting_fits(index, dims, meta.refine_bits);

	slot = take_slot(index, dims, &meta);

	/* The record is in the sidecar before any posting points at it. */
	if (slot != VIDX_SLOT_NONE)
		vidx_sidecar_append(index, &meta, slot, v);
	else
		vidx_sidecar_warn_full(index);

	x = NULL;
	psize = vidx_posting_size_refined(dims, meta.refine_bits);
	p = palloc(psize);
	for (;;)
	{
		cache = vidx_get_tree(index, &meta);
		if (x == NULL)
		{
			x = palloc(sizeof(float) * dims);
			vidx_to_index_space(cache, v, x); /* (the rotation never changes) */
		}
		search = palloc(vidx_tree_search_size(cache->tree));
		vidx_tree_search_begin(
		    search, cache->tree,
		    meta.metric == VIDX_METRIC_IP ? VIDX_METRIC_L2 : (VidxMetric) meta.metric, x);
		leaf = vidx_tree_search_next(search, cache->tree, &key);
		if (leaf < 0)
			elog(ERROR, "vidx: index \"%s\" has no leaf", RelationGetRelationName(index));
		node = vidx_tree_node(cache->tree, leaf);
		head = node->head_block;

		memset(p, 0, psize);
		vidx_rabitq_encode_refined(x, vidx_tree_centroid(node), dims, meta.refine_bits, p);
		p->heap_block = ItemPointerGetBlockNumber(heap_tid);
		p->heap_offset = ItemPointerGetOffsetNumber(heap_tid);
		p->slot = (uint32) slot;
		p->vhash = vidx_vector_hash(v, dims);

		vidx_debug_split_point(VIDX_DEBUG_WAIT_AFTER_ROUTE);
		npostings = append_to_chain(index, head, node->leaf_id, p, psize, &split_refused);
		if (npostings >= 0)
			break;
		/*
		 * A split replaced the leaf: route again in the current tree. The
		 * publication that marks a head replaced changes the tree version in
		 * the same WAL record; if it has not, the head is damaged (routing
		 * again would find it again, forever).
		 */
		pfree(search);
		routed_version = meta.tree_version;
		vidx_read_meta(index, &meta);
		if (meta.tree_version == routed_version)
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": block %u is not the head of the chain of leaf %u",
			                       RelationGetRelationName(index), head, node->leaf_id),
			                errhint("REINDEX INDEX %s;", RelationGetRelationName(index))));
	}

	/*
	 * The leaf passed twice its target size: split it (if no split or VACUUM
	 * runs), unless a split was refused at about this size (vidx_split_due).
	 */
	if (vidx_split_due(index, &meta, (uint32) npostings, split_refused))
		vidx_maybe_split(index, heap, head);

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return false;
}
