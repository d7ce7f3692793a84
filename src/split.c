/*
 * split.c: the tree grows with its table. A leaf that passes twice the target
 * leaf size (which follows the row count) is split in two by 2-means over its
 * own vectors; the tree gets a new version with the two leaves in its place
 * (core/tree_edit.cpp: a parent past fanout splits in turn, the root gains a
 * level). The design, and why it is safe, is in docs/growth.md; in short:
 *
 *  - one split at a time per index, never during VACUUM: a heavyweight lock
 *    on the metapage's block number, taken conditionally here (a busy index
 *    splits at a later insert) and unconditionally by VACUUM;
 *  - the chain is replaced, never edited: the two halves go to new chains
 *    and the tree to new pages, all unreachable until one WAL record switches
 *    the metapage to the new version and marks the old head replaced;
 *  - the old chain and tree stay readable for the scans that started before
 *    (a scan works on the version it read at its start) and go to the
 *    graveyard, freed once no snapshot can be older than the split.
 */
#include "vidx.h"

#include <math.h>
#include <signal.h>

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "storage/indexfsm.h"
#include "storage/lmgr.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

/* Leaves are never targeted below this many postings. */
#define VIDX_MIN_LEAF_SIZE 64
/* 2-means of a split runs on at most this many of the leaf's vectors (seeded). */
#define VIDX_SPLIT_SAMPLE 4096
#define VIDX_SPLIT_ITERATIONS 10
#define VIDX_SPLIT_SEED UINT64CONST(0x73706c6974) /* "split" */

int64
vidx_target_leaf_size(Relation index, const VidxMetaPageData *meta)
{
	VidxOptions *opts = vidx_index_options(index);
	double n = (double) meta->npostings;
	double t = opts->lists > 0 ? n / opts->lists : sqrt(n);

	return (int64) Max(t, (double) VIDX_MIN_LEAF_SIZE);
}

bool
vidx_leaf_needs_split(Relation index, const VidxMetaPageData *meta, uint32 npostings)
{
	return meta->dims > 0 && (int64) npostings > 2 * vidx_target_leaf_size(index, meta);
}

/* ---------- writing new chains and tree versions ---------- */

/* Writes one page, whole, to WAL (it is new, or free and unreachable). */
static void
log_full_page(Relation index, Buffer buf, Page image)
{
	GenericXLogState *state = GenericXLogStart(index);
	Page page = GenericXLogRegisterBuffer(state, buf, GENERIC_XLOG_FULL_IMAGE);

	memcpy(page, image, BLCKSZ);
	GenericXLogFinish(state);
}

/*
 * Writes n postings of psize bytes as a new chain of leaf_id and returns its
 * head. The head is taken first (every page records it) and written last;
 * the other pages are written from the end, each linking to the one after.
 */
static BlockNumber
write_chain(Relation index, char *const *postings, int n, Size psize, int per_page, uint32 leaf_id)
{
	int npages = Max(1, (n + per_page - 1) / per_page);
	Buffer hbuf = vidx_new_buffer(index);
	BlockNumber head = BufferGetBlockNumber(hbuf);
	BlockNumber next = InvalidBlockNumber;
	BlockNumber last = head;
	PGAlignedBlock image;

	for (int pg = npages - 1; pg >= 0; pg--)
	{
		Buffer buf = pg == 0 ? hbuf : vidx_new_buffer(index);
		VidxPageOpaque opaque;

		vidx_init_page(image.data, VIDX_PAGE_POSTING);
		opaque = VidxPageGetOpaque(image.data);
		opaque->head = head;
		opaque->leaf_id = leaf_id;
		opaque->next = next;
		for (int i = pg * per_page; i < Min(n, (pg + 1) * per_page); i++)
			if (PageAddItem(image.data, (Item) postings[i], psize, InvalidOffsetNumber, false,
			                false) == InvalidOffsetNumber)
				elog(ERROR, "vidx: failed to add a posting to a new page");
		if (pg == npages - 1)
			last = BufferGetBlockNumber(buf);
		if (pg == 0)
		{
			opaque->last = last;
			opaque->insert_hint = last;
			opaque->npostings = n;
		}
		log_full_page(index, buf, image.data);
		next = BufferGetBlockNumber(buf);
		UnlockReleaseBuffer(buf);
	}
	return head;
}

/* Writes a tree blob to new pages stamped with its version; returns the first. */
static BlockNumber
write_tree(Relation index, const char *blob, size_t size, uint32 version, uint32 *npages_out)
{
	uint32 npages = (uint32) ((size + VIDX_TREE_PAGE_CAPACITY - 1) / VIDX_TREE_PAGE_CAPACITY);
	BlockNumber next = InvalidBlockNumber;
	PGAlignedBlock image;

	for (int64 pg = (int64) npages - 1; pg >= 0; pg--)
	{
		Buffer buf = vidx_new_buffer(index);
		size_t off = (size_t) pg * VIDX_TREE_PAGE_CAPACITY;
		size_t n = Min((size_t) VIDX_TREE_PAGE_CAPACITY, size - off);

		vidx_init_page(image.data, VIDX_PAGE_TREE);
		VidxPageGetOpaque(image.data)->next = next;
		VidxPageGetOpaque(image.data)->leaf_id = version;
		memcpy(PageGetContents(image.data), blob + off, n);
		((PageHeader) image.data)->pd_lower = (PageGetContents(image.data) + n) - image.data;
		log_full_page(index, buf, image.data);
		next = BufferGetBlockNumber(buf);
		UnlockReleaseBuffer(buf);
	}
	*npages_out = npages;
	return next;
}

/* ---------- the graveyard ---------- */

/*
 * Marks a page free (WAL), keeping its links and labels (next, head, leaf id,
 * tree version), and records it in the free space map. The page is locked
 * exclusively by the caller.
 */
void
vidx_free_page(Relation index, Buffer buf)
{
	GenericXLogState *state = GenericXLogStart(index);
	Page page = GenericXLogRegisterBuffer(state, buf, 0);

	VidxPageGetOpaque(page)->page_type = VIDX_PAGE_FREE;
	GenericXLogFinish(state);
	RecordFreeIndexPage(index, BufferGetBlockNumber(buf));
}

/*
 * Frees the pages of a replaced chain (head, leaf_id) or tree version (first
 * page, version in leaf_id), following next. A page is freed again if a crash
 * came before its list was forgotten; the walk stops at a page that has been
 * reused since (another type, head or label).
 */
static void
free_list(Relation index, BlockNumber blkno, BlockNumber head, uint32 leaf_id, uint16 type)
{
	while (BlockNumberIsValid(blkno) && blkno != VIDX_METAPAGE_BLKNO &&
	       blkno < RelationGetNumberOfBlocks(index))
	{
		Buffer buf = ReadBuffer(index, blkno);
		Page page;
		VidxPageOpaque o;
		BlockNumber next = InvalidBlockNumber;

		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		page = BufferGetPage(buf);
		o = VidxPageGetOpaque(page);
		if ((vidx_page_is(page, type) || vidx_page_is(page, VIDX_PAGE_FREE)) &&
		    o->leaf_id == leaf_id && (type != VIDX_PAGE_POSTING || o->head == head))
		{
			next = o->next;
			if (o->page_type == type)
				vidx_free_page(index, buf);
		}
		UnlockReleaseBuffer(buf);
		blkno = next;
	}
}

/*
 * Frees the replaced chains no snapshot can still read: the chains of the
 * entries whose safe_xid is visible to everyone are marked free (WAL) and
 * recorded in the free space map, then the entries are removed from their
 * graveyard page (WAL, with the metapage's count). Called with the split
 * lock; returns the entries freed.
 */
int
vidx_recycle_graveyard(Relation index)
{
	VidxMetaPageData meta;
	BlockNumber gblk;
	int freed = 0;

	vidx_read_meta(index, &meta);
	for (gblk = meta.graveyard; BlockNumberIsValid(gblk);)
	{
		Buffer gbuf = ReadBuffer(index, gblk);
		VidxGraveEntry lists[VIDX_GRAVES_PER_PAGE];
		int nlists = 0;
		BlockNumber next;

		LockBuffer(gbuf, BUFFER_LOCK_EXCLUSIVE);
		if (!vidx_page_is(BufferGetPage(gbuf), VIDX_PAGE_GRAVEYARD))
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": block %u is not a graveyard page",
			                       RelationGetRelationName(index), gblk)));
		next = VidxPageGetOpaque(BufferGetPage(gbuf))->next;
		for (int i = 0; i < (int) VIDX_GRAVES_PER_PAGE; i++)
		{
			VidxGraveEntry *e = &VidxPageGetGraves(BufferGetPage(gbuf))[i];

			if (BlockNumberIsValid(e->first) &&
			    GlobalVisCheckRemovableFullXid(NULL, FullTransactionIdFromU64(e->safe_xid)))
				lists[nlists++] = *e;
		}
		/* Free the chains first: if a crash comes before their entries go, they are freed again. */
		LockBuffer(gbuf, BUFFER_LOCK_UNLOCK);
		for (int k = 0; k < nlists; k++)
			free_list(index, lists[k].first, lists[k].first, lists[k].leaf_id, VIDX_PAGE_POSTING);
		LockBuffer(gbuf, BUFFER_LOCK_EXCLUSIVE);
		if (nlists > 0)
		{
			Buffer mbuf = ReadBuffer(index, VIDX_METAPAGE_BLKNO);
			GenericXLogState *state;
			VidxGraveEntry *graves;
			VidxMetaPage m;

			LockBuffer(mbuf, BUFFER_LOCK_EXCLUSIVE);
			state = GenericXLogStart(index);
			graves = VidxPageGetGraves(GenericXLogRegisterBuffer(state, gbuf, 0));
			m = VidxPageGetMeta(GenericXLogRegisterBuffer(state, mbuf, 0));
			for (int i = 0; i < (int) VIDX_GRAVES_PER_PAGE; i++)
				for (int k = 0; k < nlists; k++)
					if (graves[i].first == lists[k].first && graves[i].leaf_id == lists[k].leaf_id)
						graves[i].first = InvalidBlockNumber;
			m->graves -= Min((uint32) nlists, m->graves);
			GenericXLogFinish(state);
			UnlockReleaseBuffer(mbuf);
		}
		UnlockReleaseBuffer(gbuf);
		freed += nlists;
		gblk = next;
	}
	return freed;
}

/* The heads of the replaced chains in the graveyard (palloc'd; under the split lock). */
int
vidx_graveyard_heads(Relation index, BlockNumber **heads)
{
	VidxMetaPageData meta;
	int n = 0;
	int cap = 16;

	vidx_read_meta(index, &meta);
	*heads = palloc(sizeof(BlockNumber) * cap);
	for (BlockNumber gblk = meta.graveyard; BlockNumberIsValid(gblk);)
	{
		Buffer buf = ReadBuffer(index, gblk);
		Page page;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!vidx_page_is(page, VIDX_PAGE_GRAVEYARD))
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": block %u is not a graveyard page",
			                       RelationGetRelationName(index), gblk)));
		for (int i = 0; i < (int) VIDX_GRAVES_PER_PAGE; i++)
		{
			BlockNumber first = VidxPageGetGraves(page)[i].first;

			if (!BlockNumberIsValid(first))
				continue;
			if (n == cap)
			{
				cap *= 2;
				*heads = repalloc(*heads, sizeof(BlockNumber) * cap);
			}
			(*heads)[n++] = first;
		}
		gblk = VidxPageGetOpaque(page)->next;
		UnlockReleaseBuffer(buf);
	}
	return n;
}

/* A graveyard page with a free entry, or InvalidBlockNumber (under the split lock). */
static BlockNumber
graveyard_page_with_room(Relation index, const VidxMetaPageData *meta)
{
	for (BlockNumber gblk = meta->graveyard; BlockNumberIsValid(gblk);)
	{
		Buffer buf = ReadBuffer(index, gblk);
		BlockNumber next;
		bool room = false;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		for (int i = 0; i < (int) VIDX_GRAVES_PER_PAGE && !room; i++)
			room = !BlockNumberIsValid(VidxPageGetGraves(BufferGetPage(buf))[i].first);
		next = VidxPageGetOpaque(BufferGetPage(buf))->next;
		UnlockReleaseBuffer(buf);
		if (room)
			return gblk;
		gblk = next;
	}
	return InvalidBlockNumber;
}

/* Initializes a graveyard page: every entry free. */
static void
init_graveyard_page(Page page, BlockNumber next)
{
	VidxGraveEntry *graves;

	vidx_init_page(page, VIDX_PAGE_GRAVEYARD);
	VidxPageGetOpaque(page)->next = next;
	graves = VidxPageGetGraves(page);
	for (int i = 0; i < (int) VIDX_GRAVES_PER_PAGE; i++)
	{
		graves[i].first = InvalidBlockNumber;
		graves[i].leaf_id = 0;
		graves[i].safe_xid = 0;
	}
	((PageHeader) page)->pd_lower = (char *) (graves + VIDX_GRAVES_PER_PAGE) - (char *) page;
}

static void
graveyard_add(Page gpage, BlockNumber first, uint32 leaf_id, uint64 safe_xid)
{
	VidxGraveEntry *graves = VidxPageGetGraves(gpage);

	for (int i = 0; i < (int) VIDX_GRAVES_PER_PAGE; i++)
		if (!BlockNumberIsValid(graves[i].first))
		{
			graves[i].first = first;
			graves[i].leaf_id = leaf_id;
			graves[i].safe_xid = safe_xid;
			return;
		}
	elog(ERROR, "vidx: graveyard page is full"); /* chosen for its room, under the split lock */
}

/* ---------- fault injection (vidx.debug_split, for the tests) ---------- */

int vidx_debug_split = VIDX_DEBUG_SPLIT_OFF;

/*
 * At the point vidx.debug_split names: a crash point flushes the WAL written
 * so far (so recovery starts exactly there) and kills this backend with
 * SIGKILL, as kill -9 would; the postmaster then restarts the server through
 * crash recovery. A wait point waits until no one holds advisory lock
 * VIDX_DEBUG_LOCK_KEY (a heavyweight lock: the isolation tester sees it).
 */
void
vidx_debug_split_point(VidxDebugSplit point)
{
	LOCKTAG tag;

	if (vidx_debug_split != (int) point)
		return;
	if (point == VIDX_DEBUG_WAIT_BEFORE_PUBLISH || point == VIDX_DEBUG_WAIT_IN_VACUUM ||
	    point == VIDX_DEBUG_WAIT_AFTER_ROUTE)
	{
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (VIDX_DEBUG_LOCK_KEY >> 32),
		                     (uint32) VIDX_DEBUG_LOCK_KEY, 1);
		(void) LockAcquire(&tag, ExclusiveLock, true, false);
		LockRelease(&tag, ExclusiveLock, true);
		return;
	}
	XLogFlush(GetXLogInsertRecPtr());
	elog(LOG, "vidx: vidx.debug_split = %s: killing this backend",
	     GetConfigOption("vidx.debug_split", false, false));
	kill(MyProcPid, SIGKILL);
	elog(PANIC, "vidx: vidx.debug_split: SIGKILL did not end the backend");
}

/* ---------- the split ---------- */

/* A split leaves at least 1/VIDX_SPLIT_MIN_SHARE of the postings on each side. */
#define VIDX_SPLIT_MIN_SHARE 8

typedef struct Projection
{
	double p;
	int i;
} Projection;

static int
cmp_projection(const void *a, const void *b)
{
	const Projection *x = a, *y = b;

	if (x->p != y->p)
		return x->p < y->p ? -1 : 1;
	return x->i - y->i;
}

/* The lower half of the vectors by their projection on c1 - c0 to side 0, the rest to side 1. */
static void
balanced_halves(const float *x, int n, int dims, const float *centroids, int32 *side)
{
	Projection *proj = palloc(sizeof(Projection) * n);

	for (int i = 0; i < n; i++)
	{
		double p = 0;

		for (int u = 0; u < dims; u++)
			p += (double) x[(Size) i * dims + u] * ((double) centroids[dims + u] - centroids[u]);
		proj[i].p = p;
		proj[i].i = i;
	}
	qsort(proj, n, sizeof(Projection), cmp_projection);
	for (int k = 0; k < n; k++)
		side[proj[k].i] = k >= n / 2;
	pfree(proj);
}

/* The leaf node of the tree whose chain starts at head, or -1. */
static int32
leaf_of_head(const void *tree, BlockNumber head)
{
	const VidxTreeHeader *h = (const VidxTreeHeader *) tree;

	for (uint32 i = 0; i < h->nnodes; i++)
	{
		const VidxTreeNode *n = vidx_tree_node(tree, i);

		if (n->nchildren == 0 && n->head_block == head)
			return (int32) i;
	}
	return -1;
}

/*
 * Splits the leaf whose chain starts at head if it is still over the limit and
 * no other split or VACUUM runs. Called by an insert after it added to that
 * chain, holding no buffer lock.
 */
void
vidx_maybe_split(Relation index, Relation heap, BlockNumber head)
{
	MemoryContext cxt;
	MemoryContext old;
	VidxMetaPageData meta;
	VidxTreeCache *cache;
	int32 leaf;
	const VidxTreeNode *node;
	Buffer hbuf;
	VidxPageOpaque hopaque;
	int dims;
	Size psize;
	int per_page;
	char **postings;
	float *x;
	int n = 0;
	int cap;
	int dropped = 0;
	VidxTableReader *table = NULL;
	SnapshotData nonvacuumable;
	float *raw;
	bool *found;

	if (!ConditionalLockPage(index, VIDX_METAPAGE_BLKNO, ExclusiveLock))
		return;
	cxt = AllocSetContextCreate(CurrentMemoryContext, "vidx split", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);

	(void) vidx_recycle_graveyard(index);
	cache = vidx_get_tree(index, &meta);
	leaf = leaf_of_head(cache->tree, head);
	if (leaf < 0)
		goto done; /* replaced meanwhile */
	node = vidx_tree_node(cache->tree, leaf);
	dims = (int) meta.dims;
	psize = VidxMetaPostingSize(&meta);
	per_page = vidx_postings_per_page(dims, (int) meta.refine_bits);

	/* The head, exclusively: no insert adds to the chain until it is replaced. */
	hbuf = ReadBuffer(index, head);
	LockBuffer(hbuf, BUFFER_LOCK_EXCLUSIVE);
	hopaque = VidxPageGetOpaque(BufferGetPage(hbuf));
	if (!vidx_page_is(BufferGetPage(hbuf), VIDX_PAGE_POSTING) || hopaque->head != head ||
	    hopaque->leaf_id != node->leaf_id || (hopaque->flags & VIDX_CHAIN_REPLACED) ||
	    !vidx_leaf_needs_split(index, &meta, hopaque->npostings))
	{
		UnlockReleaseBuffer(hbuf);
		goto done;
	}

	/* Copy every posting; the pages cannot change (head held, VACUUM excluded). */
	cap = Max((int) hopaque->npostings, 16);
	postings = palloc(sizeof(char *) * cap);
	for (BlockNumber blkno = head; BlockNumberIsValid(blkno);)
	{
		Buffer buf = blkno == head ? hbuf : ReadBuffer(index, blkno);
		Page page;
		OffsetNumber maxoff;

		if (buf != hbuf)
			LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!vidx_page_is(page, VIDX_PAGE_POSTING) || VidxPageGetOpaque(page)->head != head)
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": block %u is not in the posting chain of block %u",
			                       RelationGetRelationName(index), blkno, head)));
		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			ItemId iid = PageGetItemId(page, off);

			if (!ItemIdIsUsed(iid))
				continue;
			if (n == cap)
			{
				cap *= 2;
				postings = repalloc(postings, sizeof(char *) * cap);
			}
			postings[n] = palloc(psize);
			memcpy(postings[n], PageGetItem(page, iid), psize);
			n++;
		}
		blkno = VidxPageGetOpaque(page)->next;
		if (buf != hbuf)
			UnlockReleaseBuffer(buf);
	}

	/*
	 * The vectors, in index space: from the sidecar, else from the table. A
	 * row no snapshot can see any more (VACUUM would remove its posting) is
	 * dropped; its TOASTed vector may be gone already.
	 */
	x = MemoryContextAllocHuge(cxt, sizeof(float) * dims * (Size) Max(n, 1));
	raw = MemoryContextAllocHuge(cxt, sizeof(float) * dims * (Size) Max(n, 1));
	found = palloc(sizeof(bool) * Max(n, 1));
	vidx_sidecar_read_vectors(index, &meta, (const VidxPosting *const *) postings, n, raw, found);
	InitNonVacuumableSnapshot(nonvacuumable, GlobalVisTestFor(heap));
	{
		int kept = 0;

		for (int i = 0; i < n; i++)
		{
			VidxPosting *p = (VidxPosting *) postings[i];
			const float *v = raw + (Size) i * dims;

			if (!found[i])
			{
				ItemPointerData tid;

				if (table == NULL)
					table = vidx_table_reader_begin(heap, index);
				ItemPointerSet(&tid, p->heap_block, p->heap_offset);
				v = vidx_table_reader_vector(table, &tid, &nonvacuumable, dims);
				if (v == NULL)
				{
					dropped++;
					continue;
				}
			}
			vidx_to_index_space(cache, v, x + (Size) kept * dims);
			postings[kept++] = postings[i];
		}
		n = kept;
	}
	if (table != NULL)
		vidx_table_reader_end(table);
	if (n < VIDX_MIN_LEAF_SIZE)
	{
		/* mostly rows no one can see: VACUUM will empty the leaf instead */
		UnlockReleaseBuffer(hbuf);
		goto done;
	}

	{
		float *centroids = palloc(sizeof(float) * 2 * dims);
		int32 *side = palloc(sizeof(int32) * Max(n, 1));
		int64 count[2] = {0, 0};
		double *sum = palloc0(sizeof(double) * 2 * dims);
		char err[256];
		int nsample = Min(n, VIDX_SPLIT_SAMPLE);
		float *sample = x;
		char **fresh[2];
		int nfresh[2] = {0, 0};
		uint32 ids[2];
		BlockNumber heads[2];
		VidxNewLeaf nl[2];
		char *blob;
		size_t blob_size;
		BlockNumber tree_start;
		uint32 tree_pages;
		uint64 safe_xid;
		int fanout;
		BlockNumber gblk;
		Buffer gbuf;
		BlockNumber old_tree;

		/* 2-means on a seeded sample (every k-th vector), then every vector to its nearer centroid
		 */
		if (nsample < n)
		{
			sample = palloc(sizeof(float) * dims * (Size) nsample);
			for (int i = 0; i < nsample; i++)
				memcpy(sample + (Size) i * dims, x + (Size) ((int64) i * n / nsample) * dims,
				       sizeof(float) * dims);
		}
		vidx_core_check(vidx_kmeans(sample, nsample, dims, 2, VIDX_SPLIT_ITERATIONS,
		                            VIDX_SPLIT_SEED, centroids, 1, NULL, NULL, err, sizeof(err)),
		                "leaf split", err);
		vidx_assign(x, n, dims, centroids, 2, side, 1);
		for (int i = 0; i < n; i++)
			count[side[i]]++;
		if (Min(count[0], count[1]) < n / VIDX_SPLIT_MIN_SHARE)
		{
			/*
			 * A lopsided split (a few outliers on one side) would leave a leaf
			 * about as big as before: halves by the projection on the axis
			 * between the two centroids instead (by position if they coincide).
			 */
			balanced_halves(x, n, dims, centroids, side);
			count[0] = n / 2;
			count[1] = n - n / 2;
		}
		/* each leaf's centroid: the mean of its vectors */
		for (int i = 0; i < n; i++)
			for (int u = 0; u < dims; u++)
				sum[(Size) side[i] * dims + u] += x[(Size) i * dims + u];
		for (int s = 0; s < 2; s++)
			for (int u = 0; u < dims; u++)
				centroids[(Size) s * dims + u] =
				    count[s] > 0 ? (float) (sum[(Size) s * dims + u] / (double) count[s]) : 0.0f;

		/* re-encode against the new centroids */
		for (int s = 0; s < 2; s++)
			fresh[s] = palloc(sizeof(char *) * Max(count[s], 1));
		for (int i = 0; i < n; i++)
		{
			VidxPosting *p = (VidxPosting *) postings[i];
			VidxPosting *q = palloc0(psize);

			vidx_rabitq_encode_refined(x + (Size) i * dims, centroids + (Size) side[i] * dims, dims,
			                           (int) meta.refine_bits, q);
			q->heap_block = p->heap_block;
			q->heap_offset = p->heap_offset;
			q->flags = p->flags;
			q->slot = p->slot;
			q->vhash = p->vhash;
			fresh[side[i]][nfresh[side[i]]++] = (char *) q;
		}

		/* the new chains, then the new tree, all unreachable until published */
		for (int s = 0; s < 2; s++)
		{
			ids[s] = meta.next_leaf_id + s;
			heads[s] = write_chain(index, fresh[s], nfresh[s], psize, per_page, ids[s]);
			nl[s].centroid = centroids + (Size) s * dims;
			nl[s].count = nfresh[s];
			nl[s].head_block = heads[s];
			nl[s].leaf_id = ids[s];
		}
		vidx_debug_split_point(VIDX_DEBUG_CRASH_AFTER_CHAINS);
		fanout = vidx_index_options(index)->fanout > 0 ? vidx_index_options(index)->fanout
		                                               : VIDX_DEFAULT_FANOUT;
		blob = MemoryContextAllocHuge(cxt, vidx_tree_replace_bound(cache->tree));
		vidx_core_check(vidx_tree_replace_leaf(cache->tree, cache->tree_size, leaf, nl, 2, fanout,
		                                       blob, vidx_tree_replace_bound(cache->tree),
		                                       &blob_size, err, sizeof(err)),
		                "leaf split", err);
		tree_start = write_tree(index, blob, blob_size, meta.tree_version + 1, &tree_pages);
		vidx_debug_split_point(VIDX_DEBUG_CRASH_AFTER_TREE);
		vidx_debug_split_point(VIDX_DEBUG_WAIT_BEFORE_PUBLISH);

		/*
		 * Publication: one WAL record switches the version, retires the old
		 * chain to the graveyard and marks its head replaced.
		 */
		gblk = graveyard_page_with_room(index, &meta);
		gbuf = BlockNumberIsValid(gblk) ? ReadBuffer(index, gblk) : vidx_new_buffer(index);
		if (BlockNumberIsValid(gblk))
			LockBuffer(gbuf, BUFFER_LOCK_EXCLUSIVE);
		safe_xid = U64FromFullTransactionId(ReadNextFullTransactionId());
		{
			Buffer mbuf = ReadBuffer(index, VIDX_METAPAGE_BLKNO);
			GenericXLogState *state;
			VidxMetaPage m;
			VidxPageOpaque ho;
			Page gpage;
			const VidxTreeHeader *th = (const VidxTreeHeader *) blob;

			LockBuffer(mbuf, BUFFER_LOCK_EXCLUSIVE);
			state = GenericXLogStart(index);
			m = VidxPageGetMeta(GenericXLogRegisterBuffer(state, mbuf, 0));
			ho = VidxPageGetOpaque(GenericXLogRegisterBuffer(state, hbuf, 0));
			if (BlockNumberIsValid(gblk))
				gpage = GenericXLogRegisterBuffer(state, gbuf, 0);
			else
			{
				/* a new graveyard page, first in the list */
				gpage = GenericXLogRegisterBuffer(state, gbuf, GENERIC_XLOG_FULL_IMAGE);
				init_graveyard_page(gpage, m->graveyard);
				m->graveyard = BufferGetBlockNumber(gbuf);
			}
			graveyard_add(gpage, head, node->leaf_id, safe_xid);
			m->graves++;
			old_tree = m->tree_start;
			m->tree_start = tree_start;
			m->tree_pages = tree_pages;
			m->tree_bytes = (uint32) blob_size;
			m->tree_version++;
			m->nleaves = th->nleaves;
			m->levels = th->levels;
			m->next_leaf_id += 2;
			m->splits++;
			m->npostings -= Min((uint64) dropped, m->npostings);
			ho->flags |= VIDX_CHAIN_REPLACED;
			GenericXLogFinish(state);
			UnlockReleaseBuffer(mbuf);
			UnlockReleaseBuffer(gbuf);
		}
		vidx_debug_split_point(VIDX_DEBUG_CRASH_AFTER_PUBLISH);
		/*
		 * The old tree's pages are free at once: readers read tree pages under
		 * the metapage's share lock (vidx_get_tree), so none reads this
		 * version any more, and scans work on their own copy.
		 */
		free_list(index, old_tree, InvalidBlockNumber, meta.tree_version, VIDX_PAGE_TREE);
		elog(DEBUG1,
		     "vidx: split leaf %u of \"%s\" (%d postings, %d dropped) into leaves %u (%d) and %u "
		     "(%d); tree version %u, %u leaves",
		     node->leaf_id, RelationGetRelationName(index), n + dropped, dropped, ids[0], nfresh[0],
		     ids[1], nfresh[1], meta.tree_version + 1, ((const VidxTreeHeader *) blob)->nleaves);
	}
	UnlockReleaseBuffer(hbuf);

done:
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	UnlockPage(index, VIDX_METAPAGE_BLKNO, ExclusiveLock);
}
