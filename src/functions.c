/*
 * functions.c: vidx_stats(regclass), vidx_verify(regclass, bool),
 * vidx_sweep_sidecars() and the event trigger's vidx_load().
 */
#include "vidx.h"

#include "access/relation.h"
#include "catalog/pg_am.h"
#include "catalog/pg_authid.h"
#include "commands/event_trigger.h"
#include "commands/defrem.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

/* Opens a relation and checks that it is a vidx index. */
static Relation
open_vidx_index(Oid relid, bool must_own)
{
	Relation index;
	Oid am = get_index_am_oid("vidx", false);

	if (must_own && !pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_INDEX, get_rel_name(relid));
	index = relation_open(relid, AccessShareLock);
	if (index->rd_rel->relkind != RELKIND_INDEX || index->rd_rel->relam != am)
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
		                errmsg("\"%s\" is not a vidx index", RelationGetRelationName(index))));
	return index;
}

static const char *
metric_name(uint32 metric)
{
	switch (metric)
	{
	case VIDX_METRIC_L2:
		return "l2";
	case VIDX_METRIC_IP:
		return "inner_product";
	case VIDX_METRIC_COSINE:
		return "cosine";
	}
	return "unknown";
}

typedef struct ChainStats
{
	int64 postings;
	int64 pages;
	int64 beyond;       /* postings whose sidecar slot is past the end of the file */
	int64 no_slot;      /* postings stored without a sidecar slot (VIDX_SLOT_NONE) */
	bool split_refused; /* the head is marked: a split could not part its rows */
} ChainStats;

/*
 * A walk over the chains, which inserts, VACUUM and scans change meanwhile
 * (src/README.md, "Checks under concurrent writes").
 */
typedef struct WalkState
{
	Relation index;
	const VidxMetaPageData *meta;
	bool verify;
	bool check_sidecar;
	BlockNumber nblocks; /* relation size as last read: inserts extend it */
	uint32 *owner;       /* per block below nblocks: 0 unseen, OWNER_TREE, or leaf_id + 1 */
	bool count_beyond;   /* vidx_stats, usable sidecar: count postings past its end */
	uint64 records;      /* ... against its records as last counted */
	uint64 slots_used;   /* 1 + the highest slot of a posting seen (0: none) */
	bool slot_none_seen; /* a posting without a sidecar slot was seen */
	/* verify: the free slots read before the walk (sorted), and the posting slots among them */
	uint32 *free_slots;
	int64 nfree_slots;
	uint32 *suspects;
	int64 nsuspects;
	int64 suspects_cap;
	/* verify: free-slot pages found outside every chain */
	BlockNumber *slot_pages;
	int nslot_pages;
} WalkState;

#define OWNER_TREE PG_UINT32_MAX
#define OWNER_GRAVE (PG_UINT32_MAX - 1)     /* a replaced chain or tree version */
#define OWNER_FREESLOTS (PG_UINT32_MAX - 2) /* a free-slot page */

static int
cmp_uint32(const void *a, const void *b)
{
	uint32 x = *(const uint32 *) a, y = *(const uint32 *) b;

	return (x > y) - (x < y);
}

/* Reads the relation's size again and grows ws->owner to it. */
static void
reread_nblocks(WalkState *ws)
{
	BlockNumber n = RelationGetNumberOfBlocks(ws->index);

	if (n > ws->nblocks)
	{
		ws->owner = repalloc(ws->owner, sizeof(uint32) * n);
		memset(ws->owner + ws->nblocks, 0, sizeof(uint32) * (n - ws->nblocks));
		ws->nblocks = n;
	}
}

/*
 * Raises an error unless blkno can be a chain page: not the metapage, and
 * below the relation's end. A block at or past the end known so far makes the
 * size be read again: an insert extends the relation before it links the new
 * page, so a link the walk finds points below the size read after it.
 */
static void
check_link(WalkState *ws, const VidxTreeNode *node, BlockNumber blkno)
{
	if (blkno >= ws->nblocks)
		reread_nblocks(ws);
	if (blkno == VIDX_METAPAGE_BLKNO || blkno >= ws->nblocks)
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": chain of leaf %u points at block %u, out of range",
		                       RelationGetRelationName(ws->index), node->leaf_id, blkno)));
}

/* Whether the page has a special space of vidx's size (so that its opaque data can be read). */
static bool
has_vidx_special(Page page)
{
	return !PageIsNew(page) &&
	       ((PageHeader) page)->pd_special == BLCKSZ - MAXALIGN(sizeof(VidxPageOpaqueData));
}

static void
check_special(WalkState *ws, const VidxTreeNode *node, BlockNumber blkno, Page page)
{
	if (!has_vidx_special(page))
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": block %u in the chain of leaf %u is not a "
		                       "posting page of that chain",
		                       RelationGetRelationName(ws->index), blkno, node->leaf_id)));
}

/* Checks and counts the postings of one share-locked chain page. */
static void
walk_page(WalkState *ws, const VidxTreeNode *node, BlockNumber blkno, Page page, ChainStats *cs)
{
	Size psize = VidxMetaPostingSize(ws->meta);
	const char *name = RelationGetRelationName(ws->index);
	VidxPageOpaque opaque = VidxPageGetOpaque(page);
	OffsetNumber maxoff;

	if (ws->verify && (opaque->page_id != VIDX_PAGE_ID || opaque->page_type != VIDX_PAGE_POSTING ||
	                   opaque->head != node->head_block || opaque->leaf_id != node->leaf_id))
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": block %u in the chain of leaf %u is not a "
		                       "posting page of that chain",
		                       name, blkno, node->leaf_id)));

	maxoff = PageGetMaxOffsetNumber(page);
	for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
	{
		ItemId iid = PageGetItemId(page, off);
		const VidxPosting *p;

		if (ws->verify && (!ItemIdIsNormal(iid) || ItemIdGetLength(iid) != psize))
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": posting (%u,%u) has length %u, expected %zu",
			                       name, blkno, off, ItemIdGetLength(iid), psize)));
		p = (const VidxPosting *) PageGetItem(page, iid);
		cs->postings++;
		if (p->slot == VIDX_SLOT_NONE)
		{
			/* Inserted after the slots ran out: scans read its vector from the table. */
			ws->slot_none_seen = true;
			cs->no_slot++;
			continue;
		}
		ws->slots_used = Max(ws->slots_used, (uint64) p->slot + 1);
		if (ws->nfree_slots > 0 &&
		    bsearch(&p->slot, ws->free_slots, ws->nfree_slots, sizeof(uint32), cmp_uint32) != NULL)
		{
			/* free before the walk: an insert may have taken it since, else corruption */
			if (ws->nsuspects == ws->suspects_cap)
			{
				ws->suspects_cap = Max(64, 2 * ws->suspects_cap);
				ws->suspects = ws->suspects == NULL
				                   ? palloc(sizeof(uint32) * ws->suspects_cap)
				                   : repalloc(ws->suspects, sizeof(uint32) * ws->suspects_cap);
			}
			ws->suspects[ws->nsuspects++] = p->slot;
		}
		if (ws->verify && ws->check_sidecar && !vidx_sidecar_check(ws->index, ws->meta, p))
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": the sidecar has no valid record for heap "
			                       "tuple (%u,%u) in slot %u",
			                       name, p->heap_block, p->heap_offset, p->slot),
			                errhint("REINDEX INDEX %s; rebuilds the sidecar.", name)));
		if (ws->count_beyond && p->slot >= ws->records)
		{
			/*
			 * A record is written before its posting is inserted: the posting
			 * of an insert made since the file was measured has its record now.
			 */
			(void) vidx_sidecar_state(ws->index, ws->meta, &ws->records);
			if (p->slot >= ws->records)
				cs->beyond++;
		}
	}
}

/*
 * Walks one leaf's chain and returns its last block. With resume_from valid,
 * the chain was walked before up to that block, and only the pages linked
 * after it since are walked: chains grow only at their end, and no page ever
 * leaves its chain. (Leaf splits would move pages between chains: then a
 * second walk must start at the head again, and a page may change owner.)
 *
 * The head page stays share-locked throughout. An insert locks the head first,
 * so the chain cannot grow, nor its "last" and "insert_hint" move, under the
 * walk; VACUUM may still remove postings from its pages, which changes no link.
 * With verify, raises an error at the first inconsistency. ws->owner catches
 * cycles and pages shared by two chains.
 */
static BlockNumber
walk_chain(WalkState *ws, const VidxTreeNode *node, BlockNumber resume_from, ChainStats *cs)
{
	BlockNumber head = node->head_block;
	uint32 me = node->leaf_id + 1;
	BlockNumber blkno = BlockNumberIsValid(resume_from) ? resume_from : head;
	BlockNumber end = InvalidBlockNumber;
	BlockNumber last;
	BlockNumber hint;
	Buffer hbuf;

	check_link(ws, node, head);
	hbuf = ReadBuffer(ws->index, head);
	LockBuffer(hbuf, BUFFER_LOCK_SHARE);
	check_special(ws, node, head, BufferGetPage(hbuf));
	last = VidxPageGetOpaque(BufferGetPage(hbuf))->last;
	hint = VidxPageGetOpaque(BufferGetPage(hbuf))->insert_hint;
	cs->split_refused = VidxPageGetOpaque(BufferGetPage(hbuf))->split_refused != 0;

	for (bool again = BlockNumberIsValid(resume_from); BlockNumberIsValid(blkno); again = false)
	{
		Buffer buf = hbuf;
		Page page;

		check_link(ws, node, blkno);
		if (!again)
		{
			if (ws->owner[blkno] != 0)
				ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
				                errmsg("index \"%s\": block %u is reached twice (cycle or shared "
				                       "page), in the chain of leaf %u",
				                       RelationGetRelationName(ws->index), blkno, node->leaf_id)));
			ws->owner[blkno] = me;
		}
		if (blkno != head)
		{
			buf = ReadBuffer(ws->index, blkno);
			LockBuffer(buf, BUFFER_LOCK_SHARE);
		}
		page = BufferGetPage(buf);
		check_special(ws, node, blkno, page);
		if (!again) /* (the block a resumed walk starts at was walked before) */
		{
			walk_page(ws, node, blkno, page, cs);
			cs->pages++;
		}
		end = blkno;
		blkno = VidxPageGetOpaque(page)->next;
		if (buf != hbuf)
			UnlockReleaseBuffer(buf);
	}
	if (ws->verify && end != last)
		ereport(ERROR,
		        (errcode(ERRCODE_INDEX_CORRUPTED),
		         errmsg("index \"%s\": chain of leaf %u ends at block %u, but its head says %u",
		                RelationGetRelationName(ws->index), node->leaf_id, end, last)));
	if (ws->verify && BlockNumberIsValid(hint) && (hint >= ws->nblocks || ws->owner[hint] != me))
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": insert hint %u of leaf %u is not in its chain",
		                       RelationGetRelationName(ws->index), hint, node->leaf_id)));
	UnlockReleaseBuffer(hbuf);
	return end;
}

static void
walk_init(WalkState *ws, Relation index, const VidxMetaPageData *meta, bool verify,
          bool check_sidecar)
{
	memset(ws, 0, sizeof(WalkState));
	ws->index = index;
	ws->meta = meta;
	ws->verify = verify;
	ws->check_sidecar = check_sidecar;
	ws->nblocks = RelationGetNumberOfBlocks(index);
	ws->owner = palloc0(sizeof(uint32) * Max(ws->nblocks, 1));
	ws->slot_pages = palloc(sizeof(BlockNumber) * 64);
}

/*
 * vidx_stats reveals sizes and the data directory layout: only the index's
 * owner and roles with the privileges of pg_read_all_stats or
 * pg_stat_scan_tables may call it (pgstattuple grants its functions to the
 * latter).
 */
static void
check_stats_privilege(Oid relid)
{
	Oid user = GetUserId();

	if (pg_class_ownercheck(relid, user) || has_privs_of_role(user, ROLE_PG_READ_ALL_STATS) ||
	    has_privs_of_role(user, ROLE_PG_STAT_SCAN_TABLES))
		return;
	ereport(ERROR,
	        (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
	         errmsg("permission denied for vidx_stats on index \"%s\"", get_rel_name(relid)),
	         errdetail("Only the owner of the index and roles with the privileges of "
	                   "pg_read_all_stats or pg_stat_scan_tables may read its statistics.")));
}

/*
 * The recall calibration (calibrate.c): when and on what it was measured, the
 * curve, and the probes vidx.target_recall gives now (null when off).
 */
static void
append_calibration(StringInfo buf, const VidxMetaPageData *meta)
{
	appendStringInfoString(buf, ", \"calibration\": ");
	if (meta->calib_npoints == 0)
	{
		appendStringInfoString(buf, "null");
		return;
	}
	appendStringInfo(buf, "{\"measured_at\": ");
	escape_json(buf, timestamptz_to_str((TimestampTz) meta->calib_time));
	appendStringInfo(buf,
	                 ", \"rows\": " UINT64_FORMAT ", \"queries\": %u, \"k\": %u, \"ms\": %u"
	                 ", \"tree_version\": %u, \"stale\": %s, \"probes\": [",
	                 meta->calib_rows, meta->calib_queries, meta->calib_k, meta->calib_ms,
	                 meta->calib_tree_version, vidx_calibration_stale(meta) ? "true" : "false");
	for (uint32 i = 0; i < Min(meta->calib_npoints, VIDX_CALIB_POINTS); i++)
		appendStringInfo(buf, "%s%u", i ? ", " : "", meta->calib_probes[i]);
	appendStringInfoString(buf, "], \"recall\": [");
	for (uint32 i = 0; i < Min(meta->calib_npoints, VIDX_CALIB_POINTS); i++)
		appendStringInfo(buf, "%s%.4f", i ? ", " : "", meta->calib_recall[i]);
	appendStringInfoString(buf, "], \"target_probes\": ");
	if (vidx_active_target_recall() > 0)
		appendStringInfo(buf, "%.2f}", vidx_scan_probes(meta));
	else
		appendStringInfoString(buf, "null}");
}

PG_FUNCTION_INFO_V1(vidx_stats);
static int
cmp_int64(const void *a, const void *b)
{
	int64 x = *(const int64 *) a, y = *(const int64 *) b;

	return x < y ? -1 : x > y;
}

Datum
vidx_stats(PG_FUNCTION_ARGS)
{
	Relation index;
	VidxMetaPageData meta;
	StringInfoData buf;
	WalkState ws;
	int64 total = 0;
	int64 min_leaf = -1;
	int64 max_leaf = 0;
	int64 posting_pages = 0;
	int64 empty_leaves = 0;
	int64 unsplittable = 0;
	int64 beyond = 0;
	int64 no_slot = 0;
	uint32 nnodes = 0;
	int64 *sizes = NULL; /* postings of each leaf, for the percentiles */
	int nsizes = 0;
	const char *sidecar = NULL;
	char *path;

	check_stats_privilege(PG_GETARG_OID(0));
	index = open_vidx_index(PG_GETARG_OID(0), false);
	vidx_read_meta(index, &meta);
	walk_init(&ws, index, &meta, false, false);
	if (meta.dims > 0)
	{
		VidxTreeCache *cache = vidx_get_tree(index, &meta);
		const VidxTreeHeader *h = (const VidxTreeHeader *) cache->tree;

		sidecar = vidx_sidecar_state(index, &meta, &ws.records);
		ws.count_beyond = (sidecar == NULL); /* an unusable file serves no posting */
		nnodes = h->nnodes;
		sizes = palloc(sizeof(int64) * Max(h->nnodes, 1));
		for (uint32 i = 0; i < h->nnodes; i++)
		{
			const VidxTreeNode *node = vidx_tree_node(cache->tree, i);
			ChainStats cs = {0, 0, 0, 0, false};

			if (node->nchildren != 0)
				continue;
			walk_chain(&ws, node, InvalidBlockNumber, &cs);
			total += cs.postings;
			beyond += cs.beyond;
			no_slot += cs.no_slot;
			posting_pages += cs.pages;
			if (cs.postings == 0)
				empty_leaves++;
			unsplittable += cs.split_refused;
			if (min_leaf < 0 || cs.postings < min_leaf)
				min_leaf = cs.postings;
			max_leaf = Max(max_leaf, cs.postings);
			sizes[nsizes++] = cs.postings;
			CHECK_FOR_INTERRUPTS();
		}
	}
	/* Read after the walk, like the chains: inserts go on meanwhile. */
	ws.nblocks = RelationGetNumberOfBlocks(index);

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"format_version\": %u, \"metric\": \"%s\", \"dims\": %u",
	                 meta.version, metric_name(meta.metric), meta.dims);
	appendStringInfo(&buf, ", \"levels\": %u, \"leaves\": %u, \"pages\": %u, \"tree_pages\": %u",
	                 meta.levels, meta.nleaves, ws.nblocks, meta.tree_pages);
	{
		uint32 graves = meta.graves;

		appendStringInfo(&buf,
		                 ", \"tree_version\": %u, \"splits\": " UINT64_FORMAT
		                 ", \"merges\": " UINT64_FORMAT ", \"target_leaf_size\": " INT64_FORMAT
		                 ", \"replaced_awaiting_free\": %u",
		                 meta.tree_version, meta.splits, meta.merges,
		                 meta.dims > 0 ? vidx_target_leaf_size(index, &meta) : (int64) 0, graves);
	}
	if (meta.dims > 0)
		appendStringInfo(&buf, ", \"tree_nodes\": %u", nnodes);
	appendStringInfo(&buf, ", \"postings\": " INT64_FORMAT ", \"posting_pages\": " INT64_FORMAT,
	                 total, posting_pages);
	appendStringInfo(&buf,
	                 ", \"leaf_size\": {\"min\": " INT64_FORMAT
	                 ", \"avg\": %.1f, \"max\": " INT64_FORMAT ", \"empty\": " INT64_FORMAT,
	                 Max(min_leaf, 0), meta.nleaves > 0 ? (double) total / meta.nleaves : 0.0,
	                 max_leaf, empty_leaves);
	if (nsizes > 0)
	{
		qsort(sizes, nsizes, sizeof(int64), cmp_int64);
		appendStringInfo(
		    &buf, ", \"p10\": " INT64_FORMAT ", \"p50\": " INT64_FORMAT ", \"p90\": " INT64_FORMAT,
		    sizes[(int64) nsizes * 10 / 100], sizes[nsizes / 2],
		    sizes[Min((int64) nsizes * 90 / 100, nsizes - 1)]);
	}
	appendStringInfoChar(&buf, '}');
	/* leaves whose split was refused: copies of one vector, see vidx_split_due */
	appendStringInfo(&buf, ", \"unsplittable_leaves\": " INT64_FORMAT, unsplittable);
	appendStringInfo(&buf, ", \"code_bytes\": %d, \"refine_bits\": %u, \"posting_bytes\": %zu",
	                 vidx_code_words(meta.dims) * 8, meta.refine_bits, VidxMetaPostingSize(&meta));

	/*
	 * The state tells the truth about what scans will find: a file with a good
	 * header but fewer records than the postings need is not "ok". Postings
	 * stored without a slot (the slots ran out) have no record by design.
	 */
	path = vidx_sidecar_path(index);
	if (meta.dims == 0)
		sidecar = "none yet";
	else if (sidecar != NULL)
		beyond = total - no_slot; /* an unusable file serves no posting */
	else if (beyond > 0)
		sidecar = "the sidecar file is shorter than the index";
	else
		sidecar = "ok";
	appendStringInfo(&buf, ", \"sidecar\": {\"state\": ");
	escape_json(&buf, sidecar);
	appendStringInfo(&buf, ", \"file\": ");
	/* Relative to the data directory: no absolute paths in output. */
	escape_json(&buf, path + strlen(DataDir) + 1);
	appendStringInfo(&buf,
	                 ", \"records\": " UINT64_FORMAT ", \"next_slot\": " UINT64_FORMAT
	                 ", \"free_slots\": " UINT64_FORMAT ", \"free_slot_pages\": %u"
	                 ", \"postings_without_record\": " INT64_FORMAT
	                 ", \"postings_without_slot\": " INT64_FORMAT "}}",
	                 ws.records, meta.next_slot, meta.free_slots, meta.free_slot_pages,
	                 beyond + no_slot, no_slot);
	buf.len--; /* (the closing brace) */
	append_calibration(&buf, &meta);
	appendStringInfoChar(&buf, '}');

	relation_close(index, AccessShareLock);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * Marks the pages of the graveyard's lists: chains and tree versions a split
 * replaced, kept for older scans. Each must be a chain or tree page no
 * current structure uses.
 */
static void
mark_graveyard(WalkState *ws)
{
	const char *name = RelationGetRelationName(ws->index);
	BlockNumber *heads;
	int n = vidx_graveyard_heads(ws->index, &heads);

	/* the graveyard pages themselves */
	for (BlockNumber gblk = ws->meta->graveyard; BlockNumberIsValid(gblk);)
	{
		Buffer buf;

		if (gblk == VIDX_METAPAGE_BLKNO || gblk >= ws->nblocks || ws->owner[gblk] != 0)
			ereport(ERROR,
			        (errcode(ERRCODE_INDEX_CORRUPTED),
			         errmsg("index \"%s\": graveyard page %u out of range or in use", name, gblk)));
		ws->owner[gblk] = OWNER_GRAVE;
		buf = ReadBuffer(ws->index, gblk);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		gblk = VidxPageGetOpaque(BufferGetPage(buf))->next; /* (checked by vidx_graveyard_heads) */
		UnlockReleaseBuffer(buf);
	}
	for (int i = 0; i < n; i++)
	{
		BlockNumber blkno = heads[i];

		while (BlockNumberIsValid(blkno))
		{
			Buffer buf;
			Page page;
			bool ok;

			if (blkno == VIDX_METAPAGE_BLKNO || blkno >= ws->nblocks || ws->owner[blkno] != 0)
				ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
				                errmsg("index \"%s\": a replaced chain reaches block %u, "
				                       "out of range or in use",
				                       name, blkno)));
			ws->owner[blkno] = OWNER_GRAVE;
			buf = ReadBuffer(ws->index, blkno);
			LockBuffer(buf, BUFFER_LOCK_SHARE);
			page = BufferGetPage(buf);
			ok = vidx_page_is(page, VIDX_PAGE_POSTING) && VidxPageGetOpaque(page)->head == heads[i];
			blkno = ok ? VidxPageGetOpaque(page)->next : InvalidBlockNumber;
			UnlockReleaseBuffer(buf);
			if (!ok)
				ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
				                errmsg("index \"%s\": a replaced chain holds a page that is not "
				                       "one of its posting pages",
				                       name)));
		}
	}
}

/* Marks the pages of the current tree version, checking that each is one of it. */
static void
mark_tree_pages(WalkState *ws)
{
	const char *name = RelationGetRelationName(ws->index);
	BlockNumber blkno = ws->meta->tree_start;

	for (uint32 i = 0; i < ws->meta->tree_pages; i++)
	{
		Buffer buf;
		bool ok;

		if (blkno == VIDX_METAPAGE_BLKNO || blkno >= ws->nblocks || ws->owner[blkno] != 0)
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": tree page %u of %u is block %u: out of range "
			                       "or reached twice",
			                       name, i + 1, ws->meta->tree_pages, blkno)));
		ws->owner[blkno] = OWNER_TREE;
		buf = ReadBuffer(ws->index, blkno);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		ok = vidx_page_is(BufferGetPage(buf), VIDX_PAGE_TREE) &&
		     VidxPageGetOpaque(BufferGetPage(buf))->leaf_id == ws->meta->tree_version;
		blkno = ok ? VidxPageGetOpaque(BufferGetPage(buf))->next : InvalidBlockNumber;
		UnlockReleaseBuffer(buf);
		if (!ok)
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": tree page %u is not a page of tree version %u",
			                       name, i + 1, ws->meta->tree_version)));
	}
	if (ws->meta->tree_pages > 0 && BlockNumberIsValid(blkno))
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": the tree goes on past its %u pages", name,
		                       ws->meta->tree_pages)));
}

/*
 * A page outside every chain walked so far that is not new: an insert may
 * have linked it to its chain after that chain was walked, which only grows
 * at its end. Walks the rest of the chain its page header names, from where
 * the first walk ended; the page must be in it then.
 */
static void
check_unowned_page(WalkState *ws, BlockNumber blkno, const VidxTreeNode **leaves, BlockNumber *ends)
{
	const char *name = RelationGetRelationName(ws->index);
	Buffer buf = ReadBuffer(ws->index, blkno);
	Page page;
	bool is_new;
	VidxPageOpaqueData opaque;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	is_new = PageIsNew(page) || vidx_page_is(page, VIDX_PAGE_FREE);
	if (has_vidx_special(page))
		opaque = *VidxPageGetOpaque(page);
	else
		memset(&opaque, 0, sizeof(opaque));
	UnlockReleaseBuffer(buf);
	if (is_new)
		return; /* free, or a crash between extending the relation and linking the page */
	if (opaque.page_id == VIDX_PAGE_ID && opaque.page_type == VIDX_PAGE_FREESLOTS)
	{
		/* must be in the free-slot list read after this loop (check_free_slot_pages) */
		if (ws->nslot_pages % 64 == 0)
			ws->slot_pages = repalloc(ws->slot_pages, sizeof(BlockNumber) * (ws->nslot_pages + 64));
		ws->slot_pages[ws->nslot_pages++] = blkno;
		return;
	}
	/*
	 * Unreachable, for VACUUM to free: what a split or merge cut short by a
	 * crash before it was published wrote (tree pages, whatever version they
	 * carry: a later split publishes the same version number; chains whose
	 * leaf ids were not handed out then, and may have been since), tree pages
	 * of an earlier version left by a crash before they were freed. The
	 * current version's tree pages were marked; a page of a current chain
	 * names its leaf's head.
	 */
	if (opaque.page_id == VIDX_PAGE_ID && opaque.page_type == VIDX_PAGE_TREE)
		return;
	if (opaque.page_id == VIDX_PAGE_ID && opaque.page_type == VIDX_PAGE_POSTING &&
	    (opaque.leaf_id >= ws->meta->next_leaf_id || leaves[opaque.leaf_id] == NULL ||
	     leaves[opaque.leaf_id]->head_block != opaque.head))
		return;

	if (opaque.page_id == VIDX_PAGE_ID && opaque.page_type == VIDX_PAGE_POSTING)
	{
		ChainStats cs = {0, 0, 0, 0, false};

		ends[opaque.leaf_id] = walk_chain(ws, leaves[opaque.leaf_id], ends[opaque.leaf_id], &cs);
	}
	if (ws->owner[blkno] == 0)
		ereport(ERROR,
		        (errcode(ERRCODE_INDEX_CORRUPTED),
		         errmsg("index \"%s\": block %u is in use but belongs to no chain", name, blkno)));
}

/*
 * Reads the free sidecar slots (sorted) under the metapage's share lock:
 * inserts take slots under its exclusive lock, and VACUUM, which frees them,
 * is excluded by the split lock. Checks each page (a free-slot page in
 * range, holding 1 to VIDX_SLOTS_PER_PAGE slots), each slot (below
 * next_slot, listed once) and the metapage's counts. With mark_pages, the
 * pages must be in no chain, tree or graveyard, and are marked as the list's.
 */
static uint32 *
read_free_slots(WalkState *ws, bool mark_pages, int64 *nslots)
{
	const char *name = RelationGetRelationName(ws->index);
	Buffer mbuf = ReadBuffer(ws->index, VIDX_METAPAGE_BLKNO);
	VidxMetaPageData meta;
	uint32 *slots;
	int64 n = 0;
	uint32 npages = 0;

	LockBuffer(mbuf, BUFFER_LOCK_SHARE);
	memcpy(&meta, VidxPageGetMeta(BufferGetPage(mbuf)), sizeof(VidxMetaPageData));
	if (meta.free_slots > (uint64) meta.free_slot_pages * VIDX_SLOTS_PER_PAGE)
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": the metapage counts " UINT64_FORMAT
		                       " free sidecar slots on %u pages",
		                       name, meta.free_slots, meta.free_slot_pages)));
	slots = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(uint32) * Max(meta.free_slots, 1));
	for (BlockNumber blkno = meta.free_slot_page; BlockNumberIsValid(blkno);)
	{
		Buffer buf;
		Page page;
		int k;

		if (blkno >= ws->nblocks)
			reread_nblocks(ws);
		if (npages == meta.free_slot_pages || blkno == VIDX_METAPAGE_BLKNO ||
		    blkno >= ws->nblocks || (mark_pages && ws->owner[blkno] != 0))
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": free-slot page %u is out of range, in use or "
			                       "past the %u pages the metapage counts",
			                       name, blkno, meta.free_slot_pages)));
		if (mark_pages)
			ws->owner[blkno] = OWNER_FREESLOTS;
		buf = ReadBuffer(ws->index, blkno);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		k = vidx_page_is(page, VIDX_PAGE_FREESLOTS) ? VidxPageGetNSlots(page) : 0;
		if (k < 1 || k > (int) VIDX_SLOTS_PER_PAGE || (uint64) (n + k) > meta.free_slots)
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": block %u of the free-slot list is not a "
			                       "free-slot page, or holds more slots than the metapage counts",
			                       name, blkno)));
		memcpy(slots + n, VidxPageGetFreeSlots(page)->slots, sizeof(uint32) * k);
		n += k;
		npages++;
		blkno = VidxPageGetOpaque(page)->next;
		UnlockReleaseBuffer(buf);
	}
	UnlockReleaseBuffer(mbuf);
	if ((uint64) n != meta.free_slots || npages != meta.free_slot_pages)
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": the free-slot list holds " INT64_FORMAT
		                       " slots on %u pages, the metapage counts " UINT64_FORMAT " on %u",
		                       name, n, npages, meta.free_slots, meta.free_slot_pages)));
	qsort(slots, n, sizeof(uint32), cmp_uint32);
	for (int64 i = 0; i < n; i++)
	{
		if (slots[i] >= meta.next_slot)
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": free sidecar slot %u was never handed out "
			                       "(next slot " UINT64_FORMAT ")",
			                       name, slots[i], meta.next_slot)));
		if (i > 0 && slots[i] == slots[i - 1])
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": sidecar slot %u is listed twice as free", name,
			                       slots[i])));
	}
	*nslots = n;
	return slots;
}

/*
 * After the walks: no posting of the current tree has a free slot, and every
 * free-slot page is in the list. A posting whose slot was free before the
 * walk may have been inserted since (an insert took the slot); if the slot
 * is still free now, it was free throughout (no slot is freed meanwhile).
 * Likewise a free-slot page seen outside the list may have been emptied and
 * freed since, but not added to the list.
 */
static void
check_free_slots(WalkState *ws)
{
	const char *name = RelationGetRelationName(ws->index);
	int64 n;
	uint32 *after = read_free_slots(ws, true, &n);

	for (int64 i = 0; i < ws->nsuspects; i++)
		if (bsearch(&ws->suspects[i], after, n, sizeof(uint32), cmp_uint32) != NULL)
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": sidecar slot %u is free, but a posting of the "
			                       "current tree has it",
			                       name, ws->suspects[i])));
	for (int i = 0; i < ws->nslot_pages; i++)
	{
		BlockNumber blkno = ws->slot_pages[i];
		Buffer buf;
		bool listed_page;

		if (ws->owner[blkno] != 0)
			continue;
		buf = ReadBuffer(ws->index, blkno);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		listed_page = vidx_page_is(BufferGetPage(buf), VIDX_PAGE_FREESLOTS);
		UnlockReleaseBuffer(buf);
		if (listed_page)
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": block %u is a free-slot page outside the "
			                       "free-slot list",
			                       name, blkno)));
	}
}

PG_FUNCTION_INFO_V1(vidx_verify);
Datum
vidx_verify(PG_FUNCTION_ARGS)
{
	Relation index = open_vidx_index(PG_GETARG_OID(0), true);
	bool check_sidecar = PG_GETARG_BOOL(1);
	VidxMetaPageData meta;
	VidxMetaPageData meta_after;
	WalkState ws;
	const char *name = RelationGetRelationName(index);
	VidxTreeCache *cache;
	const VidxTreeHeader *h;
	const VidxTreeNode **leaves;
	BlockNumber *ends;
	BlockNumber nblocks;

	/* No split (nor VACUUM) meanwhile: the version, its chains and the graveyard hold still. */
	LockPage(index, VIDX_METAPAGE_BLKNO, ExclusiveLock);
	vidx_read_meta(index, &meta);
	walk_init(&ws, index, &meta, true, check_sidecar);
	if (meta.metric != (uint32) vidx_index_metric(index))
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": metapage metric %s differs from its operator class",
		                       name, metric_name(meta.metric))));
	mark_tree_pages(&ws);
	mark_graveyard(&ws);

	if (meta.dims == 0)
	{
		UnlockPage(index, VIDX_METAPAGE_BLKNO, ExclusiveLock);
		relation_close(index, AccessShareLock);
		PG_RETURN_BOOL(true);
	}

	cache = vidx_get_tree(index, &meta); /* checks the tree blob */
	h = (const VidxTreeHeader *) cache->tree;
	if (h->nleaves != meta.nleaves)
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": tree has %u leaves, metapage says %u", name,
		                       h->nleaves, meta.nleaves)));

	if (check_sidecar)
		vidx_sidecar_refresh(index, &meta);
	ws.free_slots = read_free_slots(&ws, false, &ws.nfree_slots);
	/* by leaf id: ids are unique and below next_leaf_id */
	leaves = palloc0(sizeof(VidxTreeNode *) * meta.next_leaf_id);
	ends = palloc(sizeof(BlockNumber) * meta.next_leaf_id);
	for (uint32 i = 0; i < h->nnodes; i++)
	{
		const VidxTreeNode *node = vidx_tree_node(cache->tree, i);
		ChainStats cs = {0, 0, 0, 0, false};

		if (node->nchildren != 0)
			continue;
		if (node->leaf_id >= meta.next_leaf_id)
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": leaf id %u is not below the next leaf id %u",
			                       name, node->leaf_id, meta.next_leaf_id)));
		leaves[node->leaf_id] = node;
		ends[node->leaf_id] = walk_chain(&ws, node, InvalidBlockNumber, &cs);
		CHECK_FOR_INTERRUPTS();
	}

	/*
	 * Every other page must be unused (a crash can leave a new, empty page),
	 * up to the end of the relation now; later pages are younger than the check.
	 */
	nblocks = RelationGetNumberOfBlocks(index);
	reread_nblocks(&ws);
	for (BlockNumber blkno = 1; blkno < nblocks; blkno++)
	{
		if (ws.owner[blkno] == 0)
			check_unowned_page(&ws, blkno, leaves, ends);
		CHECK_FOR_INTERRUPTS();
	}
	check_free_slots(&ws);

	/*
	 * Slots: a posting's slot was taken from the metapage (WAL-logged) before
	 * the posting was inserted, and a posting has no slot only once they ran out.
	 */
	vidx_read_meta(index, &meta_after);
	if (ws.slots_used > meta_after.next_slot)
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": a posting has sidecar slot " UINT64_FORMAT
		                       ", but the metapage has handed out only " UINT64_FORMAT,
		                       name, ws.slots_used - 1, meta_after.next_slot)));
	if (ws.slot_none_seen && meta_after.next_slot < VIDX_SLOT_NONE)
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": a posting has no sidecar slot, but the metapage "
		                       "has slots left (next " UINT64_FORMAT ")",
		                       name, meta_after.next_slot)));

	UnlockPage(index, VIDX_METAPAGE_BLKNO, ExclusiveLock);
	relation_close(index, AccessShareLock);
	PG_RETURN_BOOL(true);
}

/*
 * Removes the sidecar files that no index uses any more: those of databases
 * that no longer exist, and those of this database whose index is gone or was
 * rebuilt under another relfilenode. Files of a database or index that another
 * transaction is creating, rebuilding or dropping right now are left for a
 * later sweep. Superuser only; returns the number of files removed.
 */
PG_FUNCTION_INFO_V1(vidx_sweep_sidecars);
Datum
vidx_sweep_sidecars(PG_FUNCTION_ARGS)
{
	if (!superuser())
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
		                errmsg("only superusers may run vidx_sweep_sidecars()")));
	PG_RETURN_INT32(vidx_sidecar_sweep_all());
}

/*
 * Called by the extension's event trigger before every command that can drop
 * a vidx index: calling it loads the library, whose drop hook then sees the
 * drop and removes the sidecar at commit. It does nothing else.
 */
PG_FUNCTION_INFO_V1(vidx_load);
Datum
vidx_load(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(true);
}
