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
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

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
	int64 beyond; /* postings whose sidecar slot is past the end of the file */
} ChainStats;

/*
 * Walks one leaf's chain. With verify, raises an error at the first
 * inconsistency; seen marks visited blocks (to catch cycles and pages shared
 * by two chains). Counts the postings whose slot is not below records.
 */
static ChainStats
walk_chain(Relation index, const VidxMetaPageData *meta, const VidxTreeNode *node,
           BlockNumber nblocks, bool *seen, bool verify, bool check_sidecar, uint64 records)
{
	ChainStats cs = {0, 0, 0};
	BlockNumber head = node->head_block;
	BlockNumber blkno = head;
	BlockNumber last = InvalidBlockNumber;
	BlockNumber hint = InvalidBlockNumber;
	bool hint_found = false;
	Size psize = VidxMetaPostingSize(meta);
	const char *name = RelationGetRelationName(index);

	while (BlockNumberIsValid(blkno))
	{
		Buffer buf;
		Page page;
		VidxPageOpaque opaque;
		OffsetNumber maxoff;
		BlockNumber next;

		if (blkno >= nblocks || blkno == VIDX_METAPAGE_BLKNO)
			ereport(ERROR,
			        (errcode(ERRCODE_INDEX_CORRUPTED),
			         errmsg("index \"%s\": chain of leaf %u points at block %u, out of range", name,
			                node->leaf_id, blkno)));
		if (seen[blkno])
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": block %u is reached twice (cycle or shared "
			                       "page), in the chain of leaf %u",
			                       name, blkno, node->leaf_id)));
		seen[blkno] = true;

		buf = ReadBuffer(index, blkno);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		opaque = VidxPageGetOpaque(page);
		if (verify && (PageIsNew(page) || opaque->page_id != VIDX_PAGE_ID ||
		               opaque->page_type != VIDX_PAGE_POSTING || opaque->head != head ||
		               opaque->leaf_id != node->leaf_id))
		{
			UnlockReleaseBuffer(buf);
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": block %u in the chain of leaf %u is not a "
			                       "posting page of that chain",
			                       name, blkno, node->leaf_id)));
		}
		if (blkno == head)
		{
			last = opaque->last;
			hint = opaque->insert_hint;
		}
		if (blkno == hint)
			hint_found = true;

		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			ItemId iid = PageGetItemId(page, off);
			const VidxPosting *p;

			if (verify && (!ItemIdIsNormal(iid) || ItemIdGetLength(iid) != psize))
			{
				UnlockReleaseBuffer(buf);
				ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
				                errmsg("index \"%s\": posting (%u,%u) has length %u, expected %zu",
				                       name, blkno, off, ItemIdGetLength(iid), psize)));
			}
			p = (const VidxPosting *) PageGetItem(page, iid);
			if (verify && check_sidecar && !vidx_sidecar_check(index, meta, p))
			{
				uint32 hb = p->heap_block;
				uint32 ho = p->heap_offset;
				uint32 slot = p->slot;

				UnlockReleaseBuffer(buf);
				ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
				                errmsg("index \"%s\": the sidecar has no valid record for heap "
				                       "tuple (%u,%u) in slot %u",
				                       name, hb, ho, slot),
				                errhint("REINDEX INDEX %s; rebuilds the sidecar.", name)));
			}
			if (p->slot >= records)
				cs.beyond++;
			cs.postings++;
		}
		cs.pages++;
		next = opaque->next;
		if (!BlockNumberIsValid(next) && verify && blkno != last)
		{
			UnlockReleaseBuffer(buf);
			ereport(ERROR,
			        (errcode(ERRCODE_INDEX_CORRUPTED),
			         errmsg("index \"%s\": chain of leaf %u ends at block %u, but its head says %u",
			                name, node->leaf_id, blkno, last)));
		}
		UnlockReleaseBuffer(buf);
		blkno = next;
	}
	if (verify && BlockNumberIsValid(hint) && !hint_found)
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": insert hint %u of leaf %u is not in its chain", name,
		                       hint, node->leaf_id)));
	return cs;
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

PG_FUNCTION_INFO_V1(vidx_stats);
Datum
vidx_stats(PG_FUNCTION_ARGS)
{
	Relation index;
	VidxMetaPageData meta;
	StringInfoData buf;
	BlockNumber nblocks;
	bool *seen;
	int64 total = 0;
	int64 min_leaf = -1;
	int64 max_leaf = 0;
	int64 posting_pages = 0;
	int64 empty_leaves = 0;
	int64 beyond = 0;
	uint64 records = 0;
	const char *sidecar = NULL;
	char *path;

	check_stats_privilege(PG_GETARG_OID(0));
	index = open_vidx_index(PG_GETARG_OID(0), false);
	nblocks = RelationGetNumberOfBlocks(index);
	seen = palloc0(sizeof(bool) * Max(nblocks, 1));
	vidx_read_meta(index, &meta);
	if (meta.dims > 0)
		sidecar = vidx_sidecar_state(index, &meta, &records);
	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"format_version\": %u, \"metric\": \"%s\", \"dims\": %u",
	                 meta.version, metric_name(meta.metric), meta.dims);
	appendStringInfo(&buf, ", \"levels\": %u, \"leaves\": %u, \"pages\": %u, \"tree_pages\": %u",
	                 meta.levels, meta.nleaves, nblocks, meta.tree_pages);

	if (meta.dims > 0)
	{
		VidxTreeCache *cache = vidx_get_tree(index, &meta);
		const VidxTreeHeader *h = (const VidxTreeHeader *) cache->tree;

		for (uint32 i = 0; i < h->nnodes; i++)
		{
			const VidxTreeNode *node = vidx_tree_node(cache->tree, i);
			ChainStats cs;

			if (node->nchildren != 0)
				continue;
			cs = walk_chain(index, &meta, node, nblocks, seen, false, false, records);
			total += cs.postings;
			beyond += cs.beyond;
			posting_pages += cs.pages;
			if (cs.postings == 0)
				empty_leaves++;
			if (min_leaf < 0 || cs.postings < min_leaf)
				min_leaf = cs.postings;
			max_leaf = Max(max_leaf, cs.postings);
		}
		appendStringInfo(&buf, ", \"tree_nodes\": %u", h->nnodes);
	}
	appendStringInfo(&buf, ", \"postings\": " INT64_FORMAT ", \"posting_pages\": " INT64_FORMAT,
	                 total, posting_pages);
	appendStringInfo(&buf,
	                 ", \"leaf_size\": {\"min\": " INT64_FORMAT
	                 ", \"avg\": %.1f, \"max\": " INT64_FORMAT ", \"empty\": " INT64_FORMAT "}",
	                 Max(min_leaf, 0), meta.nleaves > 0 ? (double) total / meta.nleaves : 0.0,
	                 max_leaf, empty_leaves);
	appendStringInfo(&buf, ", \"code_bytes\": %d, \"refine_bits\": %u, \"posting_bytes\": %zu",
	                 vidx_code_words(meta.dims) * 8, meta.refine_bits, VidxMetaPostingSize(&meta));

	/*
	 * The state tells the truth about what scans will find: a file with a good
	 * header but fewer records than the postings need is not "ok".
	 */
	path = vidx_sidecar_path(index);
	if (meta.dims == 0)
		sidecar = "none yet";
	else if (sidecar != NULL)
		beyond = total; /* an unusable file serves no posting */
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
	                 ", \"postings_without_record\": " INT64_FORMAT "}}",
	                 records, meta.next_slot, beyond);

	relation_close(index, AccessShareLock);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

PG_FUNCTION_INFO_V1(vidx_verify);
Datum
vidx_verify(PG_FUNCTION_ARGS)
{
	Relation index = open_vidx_index(PG_GETARG_OID(0), true);
	bool check_sidecar = PG_GETARG_BOOL(1);
	VidxMetaPageData meta;
	BlockNumber nblocks = RelationGetNumberOfBlocks(index);
	bool *seen = palloc0(sizeof(bool) * Max(nblocks, 1));
	const char *name = RelationGetRelationName(index);
	VidxTreeCache *cache;
	const VidxTreeHeader *h;
	uint32 leaves = 0;

	vidx_read_meta(index, &meta);
	if (meta.metric != (uint32) vidx_index_metric(index))
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": metapage metric %s differs from its operator class",
		                       name, metric_name(meta.metric))));
	if (meta.tree_start != 1 || meta.tree_start + meta.tree_pages > nblocks)
		ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
		                errmsg("index \"%s\": tree pages %u..%u out of range", name,
		                       meta.tree_start, meta.tree_start + meta.tree_pages)));
	for (uint32 i = 0; i < meta.tree_pages; i++)
		seen[meta.tree_start + i] = true;

	if (meta.dims == 0)
	{
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
	for (uint32 i = 0; i < h->nnodes; i++)
	{
		const VidxTreeNode *node = vidx_tree_node(cache->tree, i);

		if (node->nchildren != 0)
			continue;
		walk_chain(index, &meta, node, nblocks, seen, true, check_sidecar, UINT64_MAX);
		leaves++;
		CHECK_FOR_INTERRUPTS();
	}

	/* Every other page must be unused (a crash can leave a new, empty page). */
	for (BlockNumber blkno = 1; blkno < nblocks; blkno++)
	{
		Buffer buf;
		bool is_new;

		if (seen[blkno])
			continue;
		buf = ReadBuffer(index, blkno);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		is_new = PageIsNew(BufferGetPage(buf));
		UnlockReleaseBuffer(buf);
		if (!is_new)
			ereport(ERROR, (errcode(ERRCODE_INDEX_CORRUPTED),
			                errmsg("index \"%s\": block %u is in use but belongs to no chain", name,
			                       blkno)));
	}

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
