/*
 * tree_cache.c: the per-backend cache of tree versions.
 *
 * A scan or insert reads the current tree version (the blob in the tree pages
 * the metapage names) once and keeps it, widened for an empty index and with
 * its rotation, in a slot of this cache, keyed by index, build and tree
 * version. Scans pin the version they work on; unpinned versions are evicted,
 * least recently used first, to stay within vidx.tree_cache_mb.
 */
#include "vidx.h"

#include <unistd.h>

#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/rel.h"

int vidx_tree_cache_mb = 0;

void
vidx_tree_cache_init(void)
{
	DefineCustomIntVariable(
	    "vidx.tree_cache_mb", "Memory for the vidx trees (centroids) a backend keeps cached",
	    "0 derives it from the machine: a quarter of the RAM divided by max_connections, "
	    "between 64 MB and 1 GB. The tree a query needs is always loaded.",
	    &vidx_tree_cache_mb, 0, 0, INT_MAX / 2, PGC_USERSET, GUC_UNIT_MB, NULL, NULL, NULL);
}

#define VIDX_TREE_CACHE_SLOTS 8
/* Blocks whose recent buffer and link a cached version remembers (16 MB: an index of 16 GB). */
#define VIDX_RECENT_MAX_BLOCKS (1 << 21)

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
		vidx_bad_meta(index, meta);
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

	/* Blocks added later (inserts into this version) are read the usual way. */
	c->recent = NULL;
	c->recent_next = NULL;
	c->recent_nblocks = 0;
	if (!RelationUsesLocalBuffers(index))
	{
		c->recent_nblocks =
		    Min(RelationGetNumberOfBlocks(index), (BlockNumber) VIDX_RECENT_MAX_BLOCKS);
		c->recent = MemoryContextAllocZero(slot->cxt, sizeof(Buffer) * Max(c->recent_nblocks, 1));
		c->recent_next =
		    MemoryContextAllocZero(slot->cxt, sizeof(BlockNumber) * Max(c->recent_nblocks, 1));
	}

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
