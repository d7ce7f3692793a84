/*
 * pages.c: page helpers, the metapage, and the per-backend tree cache.
 */
#include "vidx.h"

#include <math.h>
#include <unistd.h>

#include "access/xlog.h"
#include "miscadmin.h"
#include "storage/indexfsm.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"
#include "utils/rel.h"

/* Number of postings that fit a page. */
int
vidx_postings_per_page(int dims, int refine_bits)
{
	Size item = MAXALIGN(vidx_posting_size_refined(dims, refine_bits));
	Size space = VIDX_PAGE_CONTENT_SIZE;

	return (int) (space / (item + sizeof(ItemIdData)));
}

/*
 * A page for new contents, locked exclusively: a free page from the free
 * space map (recycled from a replaced chain or tree version), else a new one
 * at the end of the relation. The caller writes it whole (full-page WAL).
 */
Buffer
vidx_new_buffer(Relation index)
{
	for (;;)
	{
		BlockNumber blkno = GetFreeIndexPage(index);
		Buffer buf;

		if (!BlockNumberIsValid(blkno))
			break;
		buf = ReadBuffer(index, blkno);
		/* conditional: never wait on a page lock here (the caller may hold others) */
		if (ConditionalLockBuffer(buf))
		{
			Page page = BufferGetPage(buf);

			if (PageIsNew(page) || vidx_page_is(page, VIDX_PAGE_FREE))
				return buf;
			LockBuffer(buf, BUFFER_LOCK_UNLOCK);
		}
		ReleaseBuffer(buf);
	}
	return vidx_extend_buffer(index);
}

/* A new page at the end of the relation, locked exclusively. */
Buffer
vidx_extend_buffer(Relation index)
{
	Buffer buf;
	bool needLock = !RELATION_IS_LOCAL(index);

	if (needLock)
		LockRelationForExtension(index, ExclusiveLock);
	buf = ReadBufferExtended(index, MAIN_FORKNUM, P_NEW, RBM_NORMAL, NULL);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	if (needLock)
		UnlockRelationForExtension(index, ExclusiveLock);
	return buf;
}

void
vidx_init_page(Page page, uint16 page_type)
{
	VidxPageOpaque opaque;

	PageInit(page, BLCKSZ, sizeof(VidxPageOpaqueData));
	opaque = VidxPageGetOpaque(page);
	opaque->next = InvalidBlockNumber;
	opaque->head = InvalidBlockNumber;
	opaque->last = InvalidBlockNumber;
	opaque->insert_hint = InvalidBlockNumber;
	opaque->leaf_id = 0;
	opaque->npostings = 0;
	opaque->flags = 0;
	opaque->reserved = 0;
	opaque->page_type = page_type;
	opaque->page_id = VIDX_PAGE_ID;
}

/* Copies the metapage; false if it is not a vidx metapage of this format version. */
static bool
copy_meta(Relation index, VidxMetaPageData *meta)
{
	Buffer buf = ReadBuffer(index, VIDX_METAPAGE_BLKNO);
	Page page;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	memcpy(meta, VidxPageGetMeta(page), sizeof(VidxMetaPageData));
	UnlockReleaseBuffer(buf);
	return meta->magic == VIDX_MAGIC && meta->version == VIDX_FORMAT_VERSION;
}

/* Raises the error for a metapage copy that is not of this format (copy_meta was false). */
static void
bad_meta(Relation index, const VidxMetaPageData *meta)
{
	if (meta->magic != VIDX_MAGIC)
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\" is not a valid vidx index (bad metapage magic)",
		                       RelationGetRelationName(index)),
		                errhint("REINDEX INDEX %s;", RelationGetRelationName(index))));
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
	                errmsg("index \"%s\" has vidx format version %u, this build reads version %u",
	                       RelationGetRelationName(index), meta->version, VIDX_FORMAT_VERSION),
	                errhint("REINDEX INDEX %s;", RelationGetRelationName(index))));
}

void
vidx_read_meta(Relation index, VidxMetaPageData *meta)
{
	if (!copy_meta(index, meta))
		bad_meta(index, meta);
}

bool
vidx_try_read_meta(Relation index, VidxMetaPageData *meta)
{
	if (RelationGetNumberOfBlocks(index) == 0 || !copy_meta(index, meta))
	{
		memset(meta, 0, sizeof(VidxMetaPageData));
		return false;
	}
	return true;
}

/* Whether a page is an initialized vidx page of this type. */
bool
vidx_page_is(Page page, uint16 page_type)
{
	return !PageIsNew(page) &&
	       ((PageHeader) page)->pd_special == BLCKSZ - MAXALIGN(sizeof(VidxPageOpaqueData)) &&
	       VidxPageGetOpaque(page)->page_id == VIDX_PAGE_ID &&
	       VidxPageGetOpaque(page)->page_type == page_type;
}

/*
 * A page of the version a reader works with is not what that version left
 * there. On a standby, the primary freed it (past its own oldest snapshot,
 * which does not know the standby's): the query conflicts with recovery, as
 * with any VACUUM on the primary (hot_standby_feedback prevents it). On a
 * primary, freed pages wait for every older snapshot, so it is corruption.
 */
void
vidx_version_gone(Relation index, BlockNumber blkno, const char *what)
{
	if (RecoveryInProgress())
		ereport(ERROR, (errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
		                errmsg("canceling statement due to conflict with recovery"),
		                errdetail("The primary reused block %u of index \"%s\", a %s page this "
		                          "query still needed.",
		                          blkno, RelationGetRelationName(index), what)));
	ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
	                errmsg("index \"%s\": block %u is not the %s page it should be",
	                       RelationGetRelationName(index), blkno, what),
	                errhint("REINDEX INDEX %s;", RelationGetRelationName(index))));
}

/* A posting must fit a page: refinement codes of many dimensions may not. */
void
vidx_check_posting_fits(Relation index, int dims, int refine_bits)
{
	Size item = MAXALIGN(vidx_posting_size_refined(dims, refine_bits));
	Size space = VIDX_PAGE_CONTENT_SIZE - sizeof(ItemIdData);

	if (item > space)
		ereport(
		    ERROR,
		    (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
		     errmsg("index \"%s\": an index entry of %d dimensions with refine_bits = %d "
		            "takes %zu bytes, more than the %zu that fit a page",
		            RelationGetRelationName(index), dims, refine_bits, item, space),
		     errhint("Use a smaller refine_bits (0 allows up to %d dimensions).", VIDX_MAX_DIMS)));
}

/* ---------- tree cache ---------- */

#define VIDX_TREE_CACHE_SLOTS 8

typedef struct TreeCacheSlot
{
	bool valid;
	int pins; /* scans working on this version: it is neither evicted nor reused */
	uint64 last_used;
	MemoryContext cxt;
	VidxTreeCache cache;
} TreeCacheSlot;

static TreeCacheSlot tree_slots[VIDX_TREE_CACHE_SLOTS];
static uint64 tree_clock = 0;

/*
 * Bytes of trees a backend keeps (vidx.tree_cache_mb; 0 = derived from the
 * machine: a quarter of the RAM shared by max_connections backends, between
 * 64 MB and 1 GB). The tree a scan needs is always loaded; others are evicted,
 * least recently used first, to stay within the budget.
 */
static Size
tree_cache_budget(void)
{
	long pages = sysconf(_SC_PHYS_PAGES);
	long page_size = sysconf(_SC_PAGESIZE);
	double ram =
	    (pages > 0 && page_size > 0) ? (double) pages * page_size : 4.0 * 1024 * 1024 * 1024;
	double mb;

	if (vidx_tree_cache_mb > 0)
		return (Size) vidx_tree_cache_mb * 1024 * 1024;
	mb = ram / 4 / Max(MaxConnections, 1) / (1024 * 1024);
	return (Size) Min(Max(mb, 64.0), 1024.0) * 1024 * 1024;
}

static void
evict_trees(const TreeCacheSlot *keep)
{
	Size budget = tree_cache_budget();

	for (;;)
	{
		Size total = 0;
		TreeCacheSlot *victim = NULL;

		for (int i = 0; i < VIDX_TREE_CACHE_SLOTS; i++)
		{
			TreeCacheSlot *s = &tree_slots[i];

			if (!s->valid)
				continue;
			total += MemoryContextMemAllocated(s->cxt, true);
			if (s != keep && s->pins == 0 && (victim == NULL || s->last_used < victim->last_used))
				victim = s;
		}
		if (total <= budget || victim == NULL)
			return;
		victim->valid = false;
		MemoryContextReset(victim->cxt);
	}
}

/* Reads the tree blob spread over the tree pages into cxt. */
static void *
read_tree_blob(Relation index, const VidxMetaPageData *meta, MemoryContext cxt)
{
	char *blob = MemoryContextAllocHuge(cxt, Max(meta->tree_bytes, 1));
	size_t done = 0;
	char err[256];
	BlockNumber blkno = meta->tree_start;

	for (uint32 i = 0; i < meta->tree_pages; i++)
	{
		Buffer buf;
		Page page;
		VidxPageOpaque opaque;
		size_t n = Min((size_t) VIDX_TREE_PAGE_CAPACITY, meta->tree_bytes - done);

		if (!BlockNumberIsValid(blkno) || blkno == VIDX_METAPAGE_BLKNO)
			vidx_version_gone(index, blkno, "tree");
		buf = ReadBuffer(index, blkno);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		opaque = VidxPageGetOpaque(page);
		/* a page of this tree version, else one recycled since */
		if (!vidx_page_is(page, VIDX_PAGE_TREE) || opaque->leaf_id != meta->tree_version)
		{
			UnlockReleaseBuffer(buf);
			vidx_version_gone(index, blkno, "tree");
		}
		memcpy(blob + done, PageGetContents(page), n);
		blkno = opaque->next;
		UnlockReleaseBuffer(buf);
		done += n;
	}
	if (done != meta->tree_bytes ||
	    vidx_tree_check(blob, meta->tree_bytes, err, sizeof(err)) != VIDX_OK)
		ereport(ERROR,
		        (errcode(ERRCODE_INDEX_CORRUPTED),
		         errmsg("index \"%s\" has a corrupted tree: %s", RelationGetRelationName(index),
		                done != meta->tree_bytes ? "short tree pages" : err),
		         errhint("REINDEX INDEX %s;", RelationGetRelationName(index))));
	return blob;
}

/*
 * An index built on an empty table has a one-leaf tree without centroid
 * dimensions; once the first vector fixes dims, its leaf centroid is the zero
 * vector of that many dimensions.
 */
static void *
widen_empty_tree(const void *blob, int dims, MemoryContext cxt, size_t *size)
{
	const VidxTreeHeader *h = (const VidxTreeHeader *) blob;
	size_t node_size = MAXALIGN(sizeof(VidxTreeNode) + sizeof(float) * dims);
	size_t total = sizeof(VidxTreeHeader) + node_size * h->nnodes;
	char *out = MemoryContextAllocZero(cxt, total);
	VidxTreeHeader *oh = (VidxTreeHeader *) out;

	*oh = *h;
	oh->dims = dims;
	oh->node_size = node_size;
	for (uint32 i = 0; i < h->nnodes; i++)
		memcpy(out + sizeof(VidxTreeHeader) + node_size * i, vidx_tree_node(blob, i),
		       sizeof(VidxTreeNode));
	*size = total;
	return out;
}

/*
 * The current tree version of the index, with a copy of the metapage it goes
 * with in *meta. The tree pages are read under the metapage's share lock: a
 * split publishes a new version under its exclusive lock and then frees the
 * old version's pages at once, so no reader can be between the two. A scan
 * pins the version it works on (vidx_tree_pin) for its whole run.
 */
VidxTreeCache *
vidx_get_tree(Relation index, VidxMetaPageData *meta)
{
	Buffer mbuf = ReadBuffer(index, VIDX_METAPAGE_BLKNO);
	TreeCacheSlot *slot = NULL;
	VidxTreeCache *c;
	void *blob;

	LockBuffer(mbuf, BUFFER_LOCK_SHARE);
	memcpy(meta, VidxPageGetMeta(BufferGetPage(mbuf)), sizeof(VidxMetaPageData));
	if (meta->magic != VIDX_MAGIC || meta->version != VIDX_FORMAT_VERSION)
	{
		UnlockReleaseBuffer(mbuf);
		bad_meta(index, meta);
	}
	if (meta->dims == 0)
		elog(ERROR, "vidx: index \"%s\" has no dimensions yet", RelationGetRelationName(index));

	for (int i = 0; i < VIDX_TREE_CACHE_SLOTS; i++)
	{
		TreeCacheSlot *s = &tree_slots[i];

		if (s->valid && s->cache.index_oid == RelationGetRelid(index) &&
		    RelFileNodeEquals(s->cache.node, index->rd_node) &&
		    s->cache.build_id == meta->build_id && s->cache.tree_version == meta->tree_version &&
		    s->cache.dims == (int) meta->dims)
		{
			UnlockReleaseBuffer(mbuf);
			s->last_used = ++tree_clock;
			return &s->cache;
		}
	}

	/* Miss: take an empty slot or the least recently used one no scan pins. */
	for (int i = 0; i < VIDX_TREE_CACHE_SLOTS; i++)
	{
		TreeCacheSlot *s = &tree_slots[i];

		if (s->valid && s->pins > 0)
			continue;
		if (slot == NULL || !s->valid || s->last_used < slot->last_used)
		{
			slot = s;
			if (!s->valid)
				break;
		}
	}
	if (slot == NULL)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
		                errmsg("vidx: more than %d index scans at once in one session",
		                       VIDX_TREE_CACHE_SLOTS)));
	slot->valid = false;
	if (slot->cxt == NULL)
		slot->cxt =
		    AllocSetContextCreate(TopMemoryContext, "vidx tree cache", ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(slot->cxt);

	c = &slot->cache;
	c->index_oid = RelationGetRelid(index);
	c->node = index->rd_node;
	c->build_id = meta->build_id;
	c->tree_version = meta->tree_version;
	c->dims = meta->dims;
	c->metric = (VidxMetric) meta->metric;

	blob = read_tree_blob(index, meta, slot->cxt);
	UnlockReleaseBuffer(mbuf);
	if (((VidxTreeHeader *) blob)->dims == 0)
		blob = widen_empty_tree(blob, meta->dims, slot->cxt, &c->tree_size);
	else if (((VidxTreeHeader *) blob)->dims != meta->dims)
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": tree dims %u differ from metapage dims %u",
		                       RelationGetRelationName(index), ((VidxTreeHeader *) blob)->dims,
		                       meta->dims)));
	else
		c->tree_size = meta->tree_bytes;
	c->tree = blob;

	c->rotation = MemoryContextAlloc(slot->cxt, vidx_rotation_size(meta->dims));
	vidx_rotation_init(c->rotation, meta->dims, meta->rotation_seed);

	slot->last_used = ++tree_clock;
	slot->valid = true;
	evict_trees(slot);
	return c;
}

static TreeCacheSlot *
slot_of(VidxTreeCache *c)
{
	return (TreeCacheSlot *) ((char *) c - offsetof(TreeCacheSlot, cache));
}

void
vidx_tree_pin(VidxTreeCache *c)
{
	slot_of(c)->pins++;
}

void
vidx_tree_unpin(VidxTreeCache *c)
{
	if (slot_of(c)->pins > 0)
		slot_of(c)->pins--;
}

/* At the end of a transaction no scan is left (one that failed never unpinned). */
void
vidx_tree_unpin_all(void)
{
	for (int i = 0; i < VIDX_TREE_CACHE_SLOTS; i++)
		tree_slots[i].pins = 0;
}

void
vidx_to_index_space(const VidxTreeCache *cache, const float *v, float *out)
{
	if (cache->metric == VIDX_METRIC_COSINE)
	{
		vidx_normalize(v, out, cache->dims);
		vidx_rotation_apply(cache->rotation, out, out);
	}
	else
		vidx_rotation_apply(cache->rotation, v, out);
}
