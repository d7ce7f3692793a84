/*
 * pages.c: page helpers (new, extended and initialized pages, type checks)
 * and reading the metapage. The tree cache is in tree_cache.c.
 */
#include "vidx.h"

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
	opaque->split_refused = 0;
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
void
vidx_bad_meta(Relation index, const VidxMetaPageData *meta)
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
		vidx_bad_meta(index, meta);
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
