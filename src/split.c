/*
 * split.c: the tree grows with its table. A leaf that passes twice the target
 * leaf size (which follows the row count) is split: its rows and those of its
 * nearest leaves are clustered again by k-means into more leaves; the tree
 * gets a new version with the new leaves in the old ones' places
 * (core/tree_edit.cpp: a parent past fanout splits in turn, the root gains a
 * level). The design, and why it is safe, is in docs/growth.md; in short:
 *
 *  - one split at a time per index, never during VACUUM: a heavyweight lock
 *    on the metapage's block number, taken conditionally here (a busy index
 *    splits at a later insert) and unconditionally by VACUUM;
 *  - chains are replaced, never edited: the new leaves go to new chains
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
#include "commands/vacuum.h"
#include "miscadmin.h"
#include "portability/instr_time.h"
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
/* The nearest leaves whose rows a split clusters again with the leaf's. */
#define VIDX_SPLIT_NEIGHBOURS 16
/* Lloyd iterations of that re-clustering (before and after clusters are added). */
#define VIDX_RECLUSTER_ITERATIONS 5
/* It makes about one leaf per this share (%) of the target leaf size. */
#define VIDX_SPLIT_TARGET_PCT 130

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

/*
 * A chain no split can bring under twice the target size: its rows are
 * copies of one vector (or, under cosine, multiples of one), which k-means
 * cannot part. Without a mark every insert into it would split it again, or
 * try to: 5,000 copies of one vector made 4,872 splits and 70,361 pages.
 * The head's split_refused is then the bit length of the postings the chain
 * held (1 + floor(log2 n)), and inserts try a split again only once it holds
 * 2^split_refused postings, more than before and at most twice: a chain
 * growing to N postings is tried O(log N) times.
 */
static uint16
refusal_mark(int64 npostings)
{
	uint16 bits = 0;

	for (uint64 n = (uint64) Max(npostings, 1); n > 0; n >>= 1)
		bits++;
	return bits;
}

bool
vidx_split_due(Relation index, const VidxMetaPageData *meta, uint32 npostings, uint16 split_refused)
{
	if (!vidx_leaf_needs_split(index, meta, npostings))
		return false;
	return split_refused == 0 || split_refused >= 64 ||
	       (uint64) npostings >= (UINT64CONST(1) << split_refused);
}

/*
 * The mark a VACUUM leaves on a chain it brought down to npostings: none once
 * the chain holds fewer postings than when it was marked (to within a factor
 * of 2), since the rows that could not be parted may be gone.
 */
uint16
vidx_split_refused_after_vacuum(uint16 split_refused, uint32 npostings)
{
	if (split_refused == 0 || split_refused >= 64)
		return split_refused;
	return (uint64) npostings < (UINT64CONST(1) << (split_refused - 1)) ? 0 : split_refused;
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
write_chain(Relation index, char *const *postings, int n, Size psize, int per_page, uint32 leaf_id,
            uint16 split_refused)
{
	int npages = vidx_chain_pages(n, per_page);
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
			opaque->split_refused = split_refused;
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
	uint32 npages = vidx_tree_pages(size);
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

/* A graveyard page with need free entries, or InvalidBlockNumber (under the split lock). */
static BlockNumber
graveyard_page_with_room(Relation index, const VidxMetaPageData *meta, int need)
{
	for (BlockNumber gblk = meta->graveyard; BlockNumberIsValid(gblk);)
	{
		Buffer buf = ReadBuffer(index, gblk);
		BlockNumber next;
		int room = 0;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		for (int i = 0; i < (int) VIDX_GRAVES_PER_PAGE && room < need; i++)
			room += !BlockNumberIsValid(VidxPageGetGraves(BufferGetPage(buf))[i].first);
		next = VidxPageGetOpaque(BufferGetPage(buf))->next;
		UnlockReleaseBuffer(buf);
		if (room >= need)
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

static const struct config_enum_entry debug_split_options[] = {
    {"off", VIDX_DEBUG_SPLIT_OFF, false},
    {"crash_after_chains", VIDX_DEBUG_CRASH_AFTER_CHAINS, false},
    {"crash_after_tree", VIDX_DEBUG_CRASH_AFTER_TREE, false},
    {"crash_after_publish", VIDX_DEBUG_CRASH_AFTER_PUBLISH, false},
    {"wait_before_publish", VIDX_DEBUG_WAIT_BEFORE_PUBLISH, false},
    {"wait_in_vacuum", VIDX_DEBUG_WAIT_IN_VACUUM, false},
    {"wait_after_route", VIDX_DEBUG_WAIT_AFTER_ROUTE, false},
    {NULL, 0, false},
};

void
vidx_split_init(void)
{
	DefineCustomEnumVariable(
	    "vidx.debug_split", "Fault injection for vidx's tests: do not use",
	    "crash_after_chains, crash_after_tree, crash_after_publish: the next split of this "
	    "session kills its backend (SIGKILL, after flushing the WAL) at that point, so the server "
	    "goes through crash recovery. wait_before_publish: a split waits for "
	    "pg_advisory_lock(1986618488) before its publication, holding the leaf; "
	    "wait_in_vacuum: VACUUM waits for it holding the split lock; wait_after_route: an "
	    "insert waits for it after choosing its leaf.",
	    &vidx_debug_split, VIDX_DEBUG_SPLIT_OFF, debug_split_options, PGC_SUSET, GUC_NOT_IN_SAMPLE,
	    NULL, NULL, NULL);
}

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

/* ---------- how a leaf divides ---------- */

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

/*
 * Lloyd iterations from the k centroids in cent: each assigns every vector of
 * x (n x dims) to its nearest centroid, then moves each centroid to the mean
 * of its vectors (a cluster left empty keeps its centroid). On return,
 * assign and size are those of the last assignment and cent their means.
 */
static void
lloyd(const float *x, int n, int dims, float *cent, int k, int32 *assign, int64 *size,
      int iterations)
{
	double *sum = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(double) * dims * (Size) k);

	for (int it = 0; it < iterations; it++)
	{
		vidx_assign(x, n, dims, cent, k, assign, 1);
		memset(sum, 0, sizeof(double) * dims * (Size) k);
		memset(size, 0, sizeof(int64) * k);
		for (int i = 0; i < n; i++)
		{
			const float *v = x + (Size) i * dims;
			double *s = sum + (Size) assign[i] * dims;

			size[assign[i]]++;
			for (int u = 0; u < dims; u++)
				s[u] += v[u];
		}
		for (int c = 0; c < k; c++)
			if (size[c] > 0)
				for (int u = 0; u < dims; u++)
					cent[(Size) c * dims + u] =
					    (float) (sum[(Size) c * dims + u] / (double) size[c]);
	}
	pfree(sum);
}

/*
 * A split's re-clustering of its neighbourhood, x (n x dims): Lloyd from the
 * k0 centroids in cent; then, while fewer than kwant clusters, the largest
 * cluster whose leaf (owner) has not two clusters yet is divided by 2-means
 * (seeded, on at most VIDX_SPLIT_SAMPLE of its vectors), the new cluster
 * taking the same owner; then Lloyd again. cent has room for kwant
 * centroids, owner for kwant entries. Returns the number of clusters;
 * assign and size as lloyd's.
 */
static int
recluster(const float *x, int n, int dims, float *cent, int32 *owner, int k0, int kwant,
          int32 *assign, int64 *size)
{
	int nowned[2 * (1 + VIDX_SPLIT_NEIGHBOURS)] = {0};
	int k = k0;

	lloyd(x, n, dims, cent, k, assign, size, VIDX_RECLUSTER_ITERATIONS);
	for (int c = 0; c < k; c++)
		nowned[owner[c]]++;
	while (k < kwant)
	{
		int best = -1;
		int m = 0;
		int nsample;
		float *sample;
		float *pair = palloc(sizeof(float) * 2 * dims);
		char err[256];

		for (int c = 0; c < k; c++)
			if (nowned[owner[c]] < 2 && size[c] >= 2 * VIDX_MIN_LEAF_SIZE &&
			    (best < 0 || size[c] > size[best]))
				best = c;
		if (best < 0)
			break;
		nsample = (int) Min(size[best], VIDX_SPLIT_SAMPLE);
		sample =
		    MemoryContextAllocHuge(CurrentMemoryContext, sizeof(float) * dims * (Size) nsample);
		/* every (size / nsample)-th of its vectors */
		for (int i = 0, seen = 0; i < n && m < nsample; i++)
			if (assign[i] == best)
			{
				if ((int64) seen * nsample / size[best] == m)
					memcpy(sample + (Size) m++ * dims, x + (Size) i * dims, sizeof(float) * dims);
				seen++;
			}
		vidx_core_check(vidx_kmeans(sample, m, dims, 2, VIDX_SPLIT_ITERATIONS, VIDX_SPLIT_SEED,
		                            pair, 1, NULL, NULL, err, sizeof(err)),
		                "leaf split", err);
		memcpy(cent + (Size) best * dims, pair, sizeof(float) * dims);
		memcpy(cent + (Size) k * dims, pair + dims, sizeof(float) * dims);
		pfree(pair);
		pfree(sample);
		owner[k] = owner[best];
		nowned[owner[best]]++;
		/* its vectors between the two, so that the next choice sees the sizes */
		size[k] = 0;
		for (int i = 0; i < n; i++)
			if (assign[i] == best &&
			    vidx_l2sq(x + (Size) i * dims, cent + (Size) k * dims, dims) <
			        vidx_l2sq(x + (Size) i * dims, cent + (Size) best * dims, dims))
			{
				assign[i] = k;
				size[k]++;
				size[best]--;
			}
		k++;
	}
	if (k > k0)
		lloyd(x, n, dims, cent, k, assign, size, VIDX_RECLUSTER_ITERATIONS);
	return k;
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

/* ---------- pieces shared by splits and merges ---------- */

/*
 * Copies the postings of the chain whose head the caller holds exclusively
 * (no insert adds to it, and VACUUM, which alone deletes, is excluded by the
 * split lock or is the caller). Appends to *postings (capacity *cap).
 */
static int
copy_chain(Relation index, Buffer hbuf, Size psize, char ***postings, int n, int *cap)
{
	BlockNumber head = BufferGetBlockNumber(hbuf);

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
			if (n == *cap)
			{
				*cap *= 2;
				*postings = repalloc(*postings, sizeof(char *) * *cap);
			}
			(*postings)[n] = palloc(psize);
			memcpy((*postings)[n], PageGetItem(page, iid), psize);
			n++;
		}
		blkno = VidxPageGetOpaque(page)->next;
		if (buf != hbuf)
			UnlockReleaseBuffer(buf);
	}
	return n;
}

/*
 * The vectors of postings[0..n) in index space, into x (n x dims): from the
 * sidecar, else from the table. A row no snapshot can see any more (VACUUM
 * would remove its posting) is dropped, and its TOASTed vector may be gone
 * already: postings is compacted and the count kept is returned.
 */
static int
load_vectors(Relation index, Relation heap, const VidxTreeCache *cache,
             const VidxMetaPageData *meta, char **postings, int n, float *x)
{
	int dims = (int) meta->dims;
	float *raw =
	    MemoryContextAllocHuge(CurrentMemoryContext, sizeof(float) * dims * (Size) Max(n, 1));
	bool *found = palloc(sizeof(bool) * Max(n, 1));
	VidxTableReader *table = NULL;
	SnapshotData nonvacuumable;
	int kept = 0;

	vidx_sidecar_read_vectors(index, meta, (const VidxPosting *const *) postings, n, raw, found);
	InitNonVacuumableSnapshot(nonvacuumable, GlobalVisTestFor(heap));
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
				continue;
		}
		vidx_to_index_space(cache, v, x + (Size) kept * dims);
		postings[kept++] = postings[i];
	}
	if (table != NULL)
		vidx_table_reader_end(table);
	pfree(raw);
	pfree(found);
	return kept;
}

/* A copy of posting p with its code computed again for x (index space) against centroid. */
static char *
reencode(const char *p, const float *x, const float *centroid, const VidxMetaPageData *meta)
{
	const VidxPosting *old = (const VidxPosting *) p;
	VidxPosting *q = palloc0(VidxMetaPostingSize(meta));

	vidx_rabitq_encode_refined(x, centroid, (int) meta->dims, (int) meta->refine_bits, q);
	q->heap_block = old->heap_block;
	q->heap_offset = old->heap_offset;
	q->flags = old->flags;
	q->slot = old->slot;
	q->vhash = old->vhash;
	return (char *) q;
}

/* The mean of n vectors (index space) in double, into centroid. */
static void
mean_vector(const float *x, int n, int dims, float *centroid)
{
	double *sum = palloc0(sizeof(double) * dims);

	for (int i = 0; i < n; i++)
		for (int u = 0; u < dims; u++)
			sum[u] += x[(Size) i * dims + u];
	for (int u = 0; u < dims; u++)
		centroid[u] = (float) (sum[u] / (double) n);
	pfree(sum);
}

static int
tree_fanout(Relation index)
{
	int fanout = vidx_index_options(index)->fanout;

	return fanout > 0 ? fanout : VIDX_DEFAULT_FANOUT;
}

/* A chain a split or merge replaces: its head, held exclusively until published. */
typedef struct RetiredChain
{
	Buffer hbuf;
	uint32 leaf_id;
} RetiredChain;

/*
 * Publishes the tree version in blob (already written from tree_start),
 * which uses new_ids leaf ids from meta->next_leaf_id on, and retires the
 * chains in old[]: into the graveyard (readable for older scans until no
 * snapshot is older than now) and marked replaced (an insert waiting for the
 * head routes again). One WAL record holds the metapage, the graveyard page
 * and the first two heads; the heads after those (merges retire up to
 * 2 * VIDX_MERGE_BATCH) are marked in records that follow, still held: a
 * crash between them leaves heads that no version reaches unmarked, which
 * nothing reads (routing starts from the current version after a restart).
 * Then frees the previous tree version's pages.
 */
static void
publish(Relation index, const VidxMetaPageData *meta, const char *blob, size_t blob_size,
        BlockNumber tree_start, uint32 tree_pages, RetiredChain *old, int nold, uint32 new_ids,
        int64 dropped, bool merge)
{
	const VidxTreeHeader *th = (const VidxTreeHeader *) blob;
	BlockNumber gblk = graveyard_page_with_room(index, meta, nold);
	Buffer gbuf = BlockNumberIsValid(gblk) ? ReadBuffer(index, gblk) : vidx_new_buffer(index);
	uint64 safe_xid = U64FromFullTransactionId(ReadNextFullTransactionId());
	Buffer mbuf = ReadBuffer(index, VIDX_METAPAGE_BLKNO);
	GenericXLogState *state;
	VidxMetaPage m;
	Page gpage;
	BlockNumber old_tree;
	int marked = 0;

	if (BlockNumberIsValid(gblk))
		LockBuffer(gbuf, BUFFER_LOCK_EXCLUSIVE);
	LockBuffer(mbuf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	m = VidxPageGetMeta(GenericXLogRegisterBuffer(state, mbuf, 0));
	if (BlockNumberIsValid(gblk))
		gpage = GenericXLogRegisterBuffer(state, gbuf, 0);
	else
	{
		/* a new graveyard page, first in the list */
		gpage = GenericXLogRegisterBuffer(state, gbuf, GENERIC_XLOG_FULL_IMAGE);
		init_graveyard_page(gpage, m->graveyard);
		m->graveyard = BufferGetBlockNumber(gbuf);
	}
	for (int i = 0; i < nold; i++)
		graveyard_add(gpage, BufferGetBlockNumber(old[i].hbuf), old[i].leaf_id, safe_xid);
	m->graves += nold;
	old_tree = m->tree_start;
	m->tree_start = tree_start;
	m->tree_pages = tree_pages;
	m->tree_bytes = (uint32) blob_size;
	m->tree_version++;
	m->nleaves = th->nleaves;
	m->levels = th->levels;
	m->next_leaf_id += new_ids;
	if (merge)
		m->merges += nold / 2;
	else
		m->splits++;
	m->npostings -= Min((uint64) dropped, m->npostings);
	for (; marked < Min(nold, 2); marked++)
		VidxPageGetOpaque(GenericXLogRegisterBuffer(state, old[marked].hbuf, 0))->flags |=
		    VIDX_CHAIN_REPLACED;
	GenericXLogFinish(state);
	UnlockReleaseBuffer(mbuf);
	UnlockReleaseBuffer(gbuf);
	while (marked < nold)
	{
		state = GenericXLogStart(index);
		for (int k = 0; k < MAX_GENERIC_XLOG_PAGES && marked < nold; k++, marked++)
			VidxPageGetOpaque(GenericXLogRegisterBuffer(state, old[marked].hbuf, 0))->flags |=
			    VIDX_CHAIN_REPLACED;
		GenericXLogFinish(state);
	}

	vidx_debug_split_point(VIDX_DEBUG_CRASH_AFTER_PUBLISH);

	/*
	 * The old tree's pages are free at once: readers read tree pages under
	 * the metapage's share lock (vidx_get_tree), so none reads that version
	 * any more, and scans work on their own copy.
	 */
	free_list(index, old_tree, InvalidBlockNumber, meta->tree_version, VIDX_PAGE_TREE);
}

/* ---------- the split ---------- */

/*
 * Whether a split's re-clustering parts nothing: the leaf's rows (from 0) are
 * all in one cluster, or no more clusters are non-empty than the nin leaves
 * that went in.
 */
static bool
split_refused(int nall, const int *from, const int32 *assign, int k, const int64 *size, int nin)
{
	int32 leaf_cluster = -1;
	bool together = true;
	int nonempty = 0;

	for (int a = 0; a < nall && together; a++)
		if (from[a] == 0)
		{
			if (leaf_cluster < 0)
				leaf_cluster = assign[a];
			else if (assign[a] != leaf_cluster)
				together = false;
		}
	for (int c = 0; c < k; c++)
		nonempty += size[c] > 0;
	return together || nonempty <= nin;
}

/* Marks the head (held exclusively) of a chain whose split was refused. */
static void
mark_split_refused(Relation index, Buffer hbuf)
{
	GenericXLogState *state = GenericXLogStart(index);
	VidxPageOpaque w = VidxPageGetOpaque(GenericXLogRegisterBuffer(state, hbuf, 0));

	w->split_refused = refusal_mark(w->npostings);
	GenericXLogFinish(state);
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
	int per_page;
	char **postings;
	float *x;
	int n;
	int cap;
	int dropped;
	bool freed_pages;
	instr_time t[6]; /* start, leaf read, neighbours read, chains, tree, published */

	if (!ConditionalLockPage(index, VIDX_METAPAGE_BLKNO, ExclusiveLock))
		return;
	INSTR_TIME_SET_CURRENT(t[0]);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "vidx split", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);

	freed_pages = vidx_recycle_graveyard(index) > 0;
	cache = vidx_get_tree(index, &meta);
	leaf = leaf_of_head(cache->tree, head);
	if (leaf < 0)
		goto done; /* replaced meanwhile */
	node = vidx_tree_node(cache->tree, leaf);
	dims = (int) meta.dims;
	per_page = vidx_postings_per_page(dims, (int) meta.refine_bits);

	/* The head, exclusively: no insert adds to the chain until it is replaced. */
	hbuf = ReadBuffer(index, head);
	LockBuffer(hbuf, BUFFER_LOCK_EXCLUSIVE);
	hopaque = VidxPageGetOpaque(BufferGetPage(hbuf));
	if (!vidx_page_is(BufferGetPage(hbuf), VIDX_PAGE_POSTING) || hopaque->head != head ||
	    hopaque->leaf_id != node->leaf_id || (hopaque->flags & VIDX_CHAIN_REPLACED) ||
	    !vidx_split_due(index, &meta, hopaque->npostings, hopaque->split_refused))
	{
		UnlockReleaseBuffer(hbuf);
		goto done;
	}

	cap = Max((int) hopaque->npostings, 16);
	postings = palloc(sizeof(char *) * cap);
	n = copy_chain(index, hbuf, VidxMetaPostingSize(&meta), &postings, 0, &cap);
	x = MemoryContextAllocHuge(cxt, sizeof(float) * dims * (Size) Max(n, 1));
	dropped = n;
	n = load_vectors(index, heap, cache, &meta, postings, n, x);
	dropped -= n;
	INSTR_TIME_SET_CURRENT(t[1]);
	if (n < VIDX_MIN_LEAF_SIZE)
	{
		/* mostly rows no one can see: VACUUM will empty the leaf instead */
		UnlockReleaseBuffer(hbuf);
		goto done;
	}

	{
		float *centroids = palloc(sizeof(float) * (2 + VIDX_SPLIT_NEIGHBOURS) * dims);
		int32 *side = palloc(sizeof(int32) * Max(n, 1));
		int64 count[2] = {0, 0};
		char err[256];
		int nsample = Min(n, VIDX_SPLIT_SAMPLE);
		float *sample = x;
		/* the split leaf, then the neighbours whose rows were read */
		RetiredChain retired[1 + VIDX_SPLIT_NEIGHBOURS];
		int nnb = 0;
		int range[VIDX_SPLIT_NEIGHBOURS + 1]; /* neighbour j's rows: range[j] .. range[j+1] - 1 */
		int total = n;
		int *vrow =
		    palloc(sizeof(int) * Max(n, 1)); /* a neighbour's row: its vector in xn, or -1 (dead) */
		int xn_cap = 1024;
		int nx = 0;
		float *xn = MemoryContextAllocHuge(cxt, sizeof(float) * dims * (Size) xn_cap);
		BlockNumber nb_head[VIDX_SPLIT_NEIGHBOURS];
		int nb_dropped[VIDX_SPLIT_NEIGHBOURS];
		bool keep_nb[VIDX_SPLIT_NEIGHBOURS];
		VidxNewLeaf nl[2 * (1 + VIDX_SPLIT_NEIGHBOURS)];
		BlockNumber replaces[2 * (1 + VIDX_SPLIT_NEIGHBOURS)]; /* the head each new leaf replaces */
		int nnew = 0;
		int nretired = 1;
		int moved = 0;
		char *blob;
		size_t blob_size;
		BlockNumber tree_start;
		uint32 tree_pages;

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
		}
		/* each half's centroid is the mean of its vectors */
		for (int s = 0; s < 2; s++)
		{
			float *xs = MemoryContextAllocHuge(cxt, sizeof(float) * dims * (Size) Max(n, 1));
			int k = 0;

			for (int i = 0; i < n; i++)
				if (side[i] == s)
					memcpy(xs + (Size) k++ * dims, x + (Size) i * dims, sizeof(float) * dims);
			if (k > 0)
				mean_vector(xs, k, dims, centroids + (Size) s * dims);
			pfree(xs);
		}

		/*
		 * The nearest leaves (SPFresh's neighbourhood): their rows are
		 * clustered again with the leaf's below. Without it, rows that
		 * reached a region before it had a leaf of its own (a new cluster
		 * routed to whatever leaf was least far) stay scattered over the
		 * leaves they landed in, and leaves made by repeated 2-way splits
		 * are cut worse than a build's k-means. Neighbours' heads are held
		 * like the leaf's (only a split-lock holder takes two heads: no
		 * deadlock with inserts) until the publication retires them.
		 */
		{
			void *search = palloc(vidx_tree_search_size(cache->tree));
			float key;

			vidx_tree_search_begin(search, cache->tree, VIDX_METRIC_L2, vidx_tree_centroid(node));
			range[0] = n;
			for (int c = 0; c < VIDX_SPLIT_NEIGHBOURS + 1 && nnb < VIDX_SPLIT_NEIGHBOURS; c++)
			{
				int32 b = vidx_tree_search_next(search, cache->tree, &key);
				const VidxTreeNode *bn;
				Buffer nbuf;
				VidxPageOpaque no;
				int got;
				int kept;

				if (b < 0)
					break;
				if (b == leaf)
					continue;
				bn = vidx_tree_node(cache->tree, b);
				nbuf = ReadBuffer(index, bn->head_block);
				LockBuffer(nbuf, BUFFER_LOCK_EXCLUSIVE);
				no = VidxPageGetOpaque(BufferGetPage(nbuf));
				/*
				 * (A chain no split can part is left out: its rows would go
				 * back to one cluster, and reading them costs the most.)
				 */
				if (!vidx_page_is(BufferGetPage(nbuf), VIDX_PAGE_POSTING) ||
				    no->head != bn->head_block || no->leaf_id != bn->leaf_id ||
				    (no->flags & VIDX_CHAIN_REPLACED) || no->split_refused != 0)
				{
					UnlockReleaseBuffer(nbuf);
					continue;
				}
				got = copy_chain(index, nbuf, VidxMetaPostingSize(&meta), &postings, total, &cap);
				vrow = repalloc(vrow, sizeof(int) * Max(got, 1));
				if (nx + (got - total) > xn_cap)
				{
					xn_cap = Max(2 * xn_cap, nx + (got - total));
					xn = repalloc_huge(xn, sizeof(float) * dims * (Size) xn_cap);
				}
				{
					/* load_vectors compacts its array, keeping the order: survivors by pointer */
					char **cand = palloc(sizeof(char *) * Max(got - total, 1));
					int k = 0;

					memcpy(cand, postings + total, sizeof(char *) * (got - total));
					kept = load_vectors(index, heap, cache, &meta, cand, got - total,
					                    xn + (Size) nx * dims);
					for (int i = total; i < got; i++)
						vrow[i] = k < kept && cand[k] == postings[i] ? nx + k++ : -1;
					pfree(cand);
				}
				nx += kept;
				nb_dropped[nnb] = got - total - kept;
				nb_head[nnb] = bn->head_block;
				retired[1 + nnb].hbuf = nbuf;
				retired[1 + nnb].leaf_id = bn->leaf_id;
				memcpy(centroids + (Size) (2 + nnb) * dims, vidx_tree_centroid(bn),
				       sizeof(float) * dims);
				total = got;
				nnb++;
				range[nnb] = total;
			}
			pfree(search);
		}
		INSTR_TIME_SET_CURRENT(t[2]);

		/*
		 * Re-clustering of the neighbourhood: the leaf's rows and its
		 * neighbours' are divided again by k-means (Lloyd, from the two
		 * halves and the neighbours' centroids), into about one leaf per
		 * VIDX_SPLIT_TARGET_PCT % of the target size, at least one more than
		 * the leaves in and at most two for each. A changed neighbour is
		 * replaced (its centroid moves to the mean of its new rows); each
		 * new leaf takes the place in the tree of the leaf its cluster
		 * started from.
		 */
		{
			int nin = 1 + nnb;
			int kmax = 2 * nin;
			float *xa = MemoryContextAllocHuge(cxt, sizeof(float) * dims * (Size) Max(total, 1));
			int *row_of = palloc(sizeof(int) * Max(total, 1)); /* a vector's posting */
			int *from = palloc(sizeof(int) * Max(total, 1));   /* its leaf: 0, or 1 + neighbour */
			float *cent = palloc(sizeof(float) * dims * (Size) kmax);
			int32 owner[2 * (1 + VIDX_SPLIT_NEIGHBOURS)]; /* the leaf a cluster replaces */
			int32 *assign;
			int64 *size;
			int nall = 0;
			int k;
			int kwant;
			const char *cur;
			size_t cur_size;
			int first = 0;
			char *bufs[2] = {NULL, NULL}; /* the tree edits go back and forth */
			size_t caps[2] = {0, 0};
			int w = 0;

			for (int i = 0; i < n; i++)
			{
				memcpy(xa + (Size) nall * dims, x + (Size) i * dims, sizeof(float) * dims);
				row_of[nall] = i;
				from[nall++] = 0;
			}
			for (int j = 0; j < nnb; j++)
			{
				for (int i = range[j]; i < range[j + 1]; i++)
					if (vrow[i] >= 0)
					{
						memcpy(xa + (Size) nall * dims, xn + (Size) vrow[i] * dims,
						       sizeof(float) * dims);
						row_of[nall] = i;
						from[nall++] = 1 + j;
					}
			}
			pfree(x);
			pfree(xn);
			memcpy(cent, centroids, sizeof(float) * dims * (Size) (2 + nnb));
			owner[0] = owner[1] = 0;
			for (int j = 0; j < nnb; j++)
				owner[2 + j] = 1 + j;
			kwant =
			    (int) ceil((double) nall * 100.0 /
			               ((double) vidx_target_leaf_size(index, &meta) * VIDX_SPLIT_TARGET_PCT));
			kwant = Max(Min(kwant, kmax), nin + 1);
			assign = palloc(sizeof(int32) * Max(nall, 1));
			size = palloc(sizeof(int64) * kmax);
			k = recluster(xa, nall, dims, cent, owner, 2 + nnb, kwant, assign, size);

			/*
			 * k-means kept the leaf's rows together, or the neighbourhood
			 * would come out with no more leaves than it had: copies of one
			 * vector (multiples of one, under cosine). Nothing is published;
			 * the head is marked so that inserts try again only once the
			 * chain has doubled.
			 */
			if (split_refused(nall, from, assign, k, size, nin))
			{
				for (int j = 0; j < nnb; j++)
					UnlockReleaseBuffer(retired[1 + j].hbuf);
				mark_split_refused(index, hbuf);
				elog(DEBUG1,
				     "vidx: split of leaf %u of \"%s\" (%d postings) refused: k-means does not "
				     "part its rows",
				     node->leaf_id, RelationGetRelationName(index), n + dropped);
				goto refused;
			}

			/*
			 * A neighbour left with exactly its own rows, in one cluster,
			 * keeps its chain, codes and centroid (the cluster's mean moved a
			 * little, not its rows): fewer pages written and retired per
			 * split. The others are replaced; their rows no one can see any
			 * more are dropped.
			 */
			for (int j = 0; j < nnb; j++)
				keep_nb[j] = true;
			for (int c = 0; c < k; c++)
				if (owner[c] > 0 && (size[c] == 0 || c >= 2 + nnb))
					keep_nb[owner[c] - 1] = false; /* emptied or divided */
			for (int a = 0; a < nall; a++)
			{
				int o = owner[assign[a]];

				if (o != from[a])
				{
					if (o > 0)
						keep_nb[o - 1] = false;
					if (from[a] > 0)
						keep_nb[from[a] - 1] = false;
				}
			}
			for (int j = 0; j < nnb; j++)
				if (keep_nb[j])
					UnlockReleaseBuffer(retired[1 + j].hbuf);
				else
				{
					dropped += nb_dropped[j]; /* (a kept chain keeps its unseen rows) */
					retired[nretired++] = retired[1 + j];
				}

			/* the new chains (codes against the new centroids), unreachable until published */
			for (int o = 0; o < nin; o++)
				for (int c = 0; c < k; c++)
				{
					char **fresh;
					int kk = 0;

					if (owner[c] != o || size[c] == 0 || (o > 0 && keep_nb[o - 1]))
						continue;
					fresh = palloc(sizeof(char *) * size[c]);
					for (int a = 0; a < nall; a++)
						if (assign[a] == c)
						{
							fresh[kk++] = reencode(postings[row_of[a]], xa + (Size) a * dims,
							                       cent + (Size) c * dims, &meta);
							if (from[a] != o)
								moved++;
						}
					nl[nnew].leaf_id = meta.next_leaf_id + nnew;
					/* a cluster over the limit already: the rows k-means could not part */
					nl[nnew].head_block = write_chain(
					    index, fresh, kk, VidxMetaPostingSize(&meta), per_page, nl[nnew].leaf_id,
					    vidx_leaf_needs_split(index, &meta, (uint32) kk) ? refusal_mark(kk) : 0);
					nl[nnew].centroid = cent + (Size) c * dims;
					nl[nnew].count = kk;
					replaces[nnew] = o == 0 ? head : nb_head[o - 1];
					nnew++;
					for (int i = 0; i < kk; i++)
						pfree(fresh[i]);
					pfree(fresh);
				}
			INSTR_TIME_SET_CURRENT(t[3]);
			vidx_debug_split_point(VIDX_DEBUG_CRASH_AFTER_CHAINS);

			/* the new tree: each leaf in by its new leaves (0, 1 or 2) */
			cur = cache->tree;
			cur_size = cache->tree_size;
			for (int o = 0; o < nin; o++)
			{
				BlockNumber ohead = o == 0 ? head : nb_head[o - 1];
				int cnt = 0;
				size_t need;

				if (o > 0 && keep_nb[o - 1])
					continue;
				need = vidx_tree_replace_bound(cur);
				while (first + cnt < nnew && replaces[first + cnt] == ohead)
					cnt++;
				if (need > caps[w])
				{
					bufs[w] = bufs[w] == NULL ? MemoryContextAllocHuge(cxt, need)
					                          : repalloc_huge(bufs[w], need);
					caps[w] = need;
				}
				vidx_core_check(vidx_tree_replace_leaf(cur, cur_size, leaf_of_head(cur, ohead),
				                                       cnt > 0 ? &nl[first] : NULL, cnt,
				                                       tree_fanout(index), bufs[w], caps[w],
				                                       &blob_size, err, sizeof(err)),
				                "leaf split", err);
				first += cnt;
				cur = bufs[w];
				cur_size = blob_size;
				w = 1 - w;
			}
			blob = bufs[1 - w];
		}
		tree_start = write_tree(index, blob, blob_size, meta.tree_version + 1, &tree_pages);
		INSTR_TIME_SET_CURRENT(t[4]);
		vidx_debug_split_point(VIDX_DEBUG_CRASH_AFTER_TREE);
		vidx_debug_split_point(VIDX_DEBUG_WAIT_BEFORE_PUBLISH);

		retired[0].hbuf = hbuf;
		retired[0].leaf_id = node->leaf_id;
		publish(index, &meta, blob, blob_size, tree_start, tree_pages, retired, nretired,
		        (uint32) nnew, dropped, false);
		freed_pages = true;
		for (int r = 1; r < nretired; r++)
			UnlockReleaseBuffer(retired[r].hbuf);
		INSTR_TIME_SET_CURRENT(t[5]);
		for (int i = 5; i > 0; i--)
			INSTR_TIME_SUBTRACT(t[i], t[i - 1]);
		elog(DEBUG1,
		     "vidx: split leaf %u of \"%s\" (%d postings, %d dropped) with %d neighbours into %d "
		     "leaves, %d rows moved; tree version %u, %u leaves; "
		     "ms: leaf %.1f, neighbours %.1f, chains %.1f, tree %.1f (%u pages), publish %.1f",
		     retired[0].leaf_id, RelationGetRelationName(index), n + dropped, dropped, nnb, nnew,
		     moved, meta.tree_version + 1, ((const VidxTreeHeader *) blob)->nleaves,
		     INSTR_TIME_GET_MILLISEC(t[1]), INSTR_TIME_GET_MILLISEC(t[2]),
		     INSTR_TIME_GET_MILLISEC(t[3]), INSTR_TIME_GET_MILLISEC(t[4]), tree_pages,
		     INSTR_TIME_GET_MILLISEC(t[5]));
	}
refused:
	UnlockReleaseBuffer(hbuf);

done:
	/*
	 * RecordFreeIndexPage updates only the free space map's leaf page; the
	 * next split finds the pages freed here only once the upper levels know.
	 */
	if (freed_pages)
		IndexFreeSpaceMapVacuum(index);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	UnlockPage(index, VIDX_METAPAGE_BLKNO, ExclusiveLock);
}

/* ---------- merges ---------- */

/* A leaf under 1/VIDX_MERGE_BELOW of the target size merges into its nearest sibling... */
#define VIDX_MERGE_BELOW 2
/* ... if the two hold at most VIDX_MERGE_UPTO_PCT % of the target size. */
#define VIDX_MERGE_UPTO_PCT 150
/* Pairs merged into one tree version (their heads are held until it is published). */
#define VIDX_MERGE_BATCH 8
/* The nearest leaves considered as a small leaf's partner. */
#define VIDX_MERGE_CANDIDATES 8

typedef struct LeafSize
{
	int32 node;
	int64 npostings;
} LeafSize;

static int
cmp_leaf_size(const void *a, const void *b)
{
	const LeafSize *x = a, *y = b;

	if (x->npostings != y->npostings)
		return x->npostings < y->npostings ? -1 : 1;
	return x->node - y->node;
}

/* The live postings of every leaf of the tree (from its head page), by node. */
static int64 *
leaf_sizes(Relation index, const void *tree)
{
	const VidxTreeHeader *h = (const VidxTreeHeader *) tree;
	int64 *size = palloc(sizeof(int64) * Max(h->nnodes, 1));

	for (uint32 i = 0; i < h->nnodes; i++)
	{
		const VidxTreeNode *n = vidx_tree_node(tree, i);
		Buffer buf;

		size[i] = -1;
		if (n->nchildren != 0)
			continue;
		buf = ReadBuffer(index, n->head_block);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		if (vidx_page_is(BufferGetPage(buf), VIDX_PAGE_POSTING) &&
		    VidxPageGetOpaque(BufferGetPage(buf))->leaf_id == n->leaf_id)
			size[i] = VidxPageGetOpaque(BufferGetPage(buf))->npostings;
		UnlockReleaseBuffer(buf);
	}
	return size;
}

/*
 * Chooses up to VIDX_MERGE_BATCH pairs (small leaf, nearest partner), each
 * leaf in one pair at most; returns the number of pairs.
 */
static int
choose_pairs(const VidxTreeCache *cache, const int64 *size, int64 target, int32 (*pairs)[2])
{
	const VidxTreeHeader *h = (const VidxTreeHeader *) cache->tree;
	LeafSize *small = palloc(sizeof(LeafSize) * Max(h->nnodes, 1));
	bool *taken = palloc0(sizeof(bool) * Max(h->nnodes, 1));
	void *search = palloc(vidx_tree_search_size(cache->tree));
	int nsmall = 0;
	int npairs = 0;
	int nleaves = (int) h->nleaves;

	for (uint32 i = 0; i < h->nnodes; i++)
		if (size[i] >= 0 && size[i] < target / VIDX_MERGE_BELOW)
			small[nsmall++] = (LeafSize){(int32) i, size[i]};
	qsort(small, nsmall, sizeof(LeafSize), cmp_leaf_size);
	for (int k = 0; k < nsmall && npairs < VIDX_MERGE_BATCH && nleaves > 1; k++)
	{
		int32 a = small[k].node;
		float key;

		if (taken[a])
			continue;
		vidx_tree_search_begin(search, cache->tree, VIDX_METRIC_L2,
		                       vidx_tree_centroid(vidx_tree_node(cache->tree, a)));
		for (int c = 0; c < VIDX_MERGE_CANDIDATES + 1; c++)
		{
			int32 b = vidx_tree_search_next(search, cache->tree, &key);

			if (b < 0)
				break;
			if (b == a || taken[b] || size[b] < 0 ||
			    size[a] + size[b] > target * VIDX_MERGE_UPTO_PCT / 100)
				continue;
			taken[a] = taken[b] = true;
			pairs[npairs][0] = a;
			pairs[npairs][1] = b;
			npairs++;
			nleaves--;
			break;
		}
	}
	pfree(small);
	pfree(taken);
	pfree(search);
	return npairs;
}

/*
 * Merges the chosen pairs into one new tree version: each pair's postings
 * (rows no snapshot can see are dropped) go to one new chain whose centroid
 * is their mean, the partner's leaf takes it and the small leaf is removed.
 * Returns the pairs merged.
 */
static int
merge_pairs(Relation index, Relation heap, VidxTreeCache *cache, const VidxMetaPageData *meta,
            int32 (*pairs)[2], int npairs)
{
	int dims = (int) meta->dims;
	Size psize = VidxMetaPostingSize(meta);
	int per_page = vidx_postings_per_page(dims, (int) meta->refine_bits);
	RetiredChain *retired = palloc(sizeof(RetiredChain) * 2 * npairs);
	int nretired = 0;
	/* (each edit's output may need a little more room than its input) */
	size_t blob_cap = Max(cache->tree_size, vidx_tree_replace_bound(cache->tree));
	size_t next_cap = blob_cap;
	char *blob = MemoryContextAllocHuge(CurrentMemoryContext, blob_cap);
	char *next_blob = MemoryContextAllocHuge(CurrentMemoryContext, next_cap);
	size_t blob_size = cache->tree_size;
	int merged = 0;
	int64 dropped = 0;
	float *centroid = palloc(sizeof(float) * dims);
	char err[256];

	memcpy(blob, cache->tree, cache->tree_size);
	for (int k = 0; k < npairs; k++)
	{
		const VidxTreeNode *node[2];
		Buffer hbuf[2];
		bool ok = true;
		char **postings;
		int cap = 64;
		int n = 0;
		int kept;
		float *x;
		char **fresh;
		VidxNewLeaf nl;
		int32 at;

		/* (no one else holds two heads: inserts and splits take one; VACUUM is us) */
		for (int s = 0; s < 2; s++)
		{
			node[s] = vidx_tree_node(cache->tree, pairs[k][s]);
			hbuf[s] = ReadBuffer(index, node[s]->head_block);
			LockBuffer(hbuf[s], BUFFER_LOCK_EXCLUSIVE);
			ok = ok && vidx_page_is(BufferGetPage(hbuf[s]), VIDX_PAGE_POSTING) &&
			     VidxPageGetOpaque(BufferGetPage(hbuf[s]))->head == node[s]->head_block &&
			     VidxPageGetOpaque(BufferGetPage(hbuf[s]))->leaf_id == node[s]->leaf_id &&
			     !(VidxPageGetOpaque(BufferGetPage(hbuf[s]))->flags & VIDX_CHAIN_REPLACED);
		}
		if (!ok)
		{
			UnlockReleaseBuffer(hbuf[0]);
			UnlockReleaseBuffer(hbuf[1]);
			continue;
		}
		postings = palloc(sizeof(char *) * cap);
		for (int s = 0; s < 2; s++)
			n = copy_chain(index, hbuf[s], psize, &postings, n, &cap);
		x = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(float) * dims * (Size) Max(n, 1));
		kept = load_vectors(index, heap, cache, meta, postings, n, x);
		dropped += n - kept;
		if (kept > 0)
			mean_vector(x, kept, dims, centroid);
		else
			memcpy(centroid, vidx_tree_centroid(node[1]), sizeof(float) * dims);
		fresh = palloc(sizeof(char *) * Max(kept, 1));
		for (int i = 0; i < kept; i++)
			fresh[i] = reencode(postings[i], x + (Size) i * dims, centroid, meta);

		nl.leaf_id = meta->next_leaf_id + merged;
		nl.head_block = write_chain(index, fresh, kept, psize, per_page, nl.leaf_id, 0);
		nl.centroid = centroid;
		nl.count = kept;

		/* the partner's leaf becomes the merged one, then the small leaf goes */
		for (int step = 0; step < 2; step++)
		{
			char *tmp;

			size_t tmp_cap;

			if (vidx_tree_replace_bound(blob) > next_cap)
			{
				next_cap = vidx_tree_replace_bound(blob);
				next_blob = repalloc_huge(next_blob, next_cap);
			}
			at = leaf_of_head(blob, node[1 - step]->head_block);
			vidx_core_check(vidx_tree_replace_leaf(blob, blob_size, at, step == 0 ? &nl : NULL,
			                                       step == 0 ? 1 : 0, tree_fanout(index), next_blob,
			                                       next_cap, &blob_size, err, sizeof(err)),
			                "leaf merge", err);
			tmp = blob;
			blob = next_blob;
			next_blob = tmp;
			tmp_cap = blob_cap;
			blob_cap = next_cap;
			next_cap = tmp_cap;
		}
		for (int s = 0; s < 2; s++)
		{
			retired[nretired].hbuf = hbuf[s];
			retired[nretired].leaf_id = node[s]->leaf_id;
			nretired++;
		}
		merged++;
		for (int i = 0; i < n; i++)
			pfree(postings[i]);
		for (int i = 0; i < kept; i++)
			pfree(fresh[i]);
		pfree(postings);
		pfree(fresh);
		pfree(x);
	}
	if (merged > 0)
	{
		uint32 tree_pages;
		BlockNumber tree_start =
		    write_tree(index, blob, blob_size, meta->tree_version + 1, &tree_pages);

		publish(index, meta, blob, blob_size, tree_start, tree_pages, retired, nretired,
		        (uint32) merged, dropped, true);
	}
	for (int i = 0; i < nretired; i++)
		UnlockReleaseBuffer(retired[i].hbuf);
	return merged;
}

/*
 * Merges leaves that deletes left under half the target leaf size into their
 * nearest leaf (while the two hold at most 1.5x the target), so that an index
 * whose table shrank or moved answers like a fresh build: with fewer, fuller
 * leaves, vidx.probes reads as many rows as after a build. VACUUM's cleanup,
 * with the split lock. Returns the leaves merged.
 */
int
vidx_merge_small_leaves(Relation index, Relation heap)
{
	MemoryContext cxt =
	    AllocSetContextCreate(CurrentMemoryContext, "vidx merge", ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	int total = 0;

	for (;;)
	{
		VidxMetaPageData meta;
		VidxTreeCache *cache = vidx_get_tree(index, &meta);
		int32(*pairs)[2];
		int npairs;
		int64 *size;
		int merged;

		if (meta.dims == 0 || meta.nleaves <= 1)
			break;
		vacuum_delay_point();
		size = leaf_sizes(index, cache->tree);
		pairs = palloc(sizeof(int32[2]) * VIDX_MERGE_BATCH);
		npairs = choose_pairs(cache, size, vidx_target_leaf_size(index, &meta), pairs);
		if (npairs == 0)
			break;
		vidx_tree_pin(cache);
		merged = merge_pairs(index, heap, cache, &meta, pairs, npairs);
		vidx_tree_unpin(cache);
		if (merged == 0)
			break;
		total += merged;
		IndexFreeSpaceMapVacuum(index);
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return total;
}
