/*
 * batch.c: vidx_search(index, queries, k), many k-NN queries in one call, and
 * vidx_prewarm(index), which loads an index and its sidecar into memory.
 *
 * Each query runs the index's own scan (the same code and settings as
 * ORDER BY ... LIMIT k), through the regular index-scan interface, so rows
 * are checked against the caller's snapshot exactly as in a query. What a
 * batch saves is the per-statement work around the scan: the client round
 * trip, parse/bind, executor start-up, and the heap projection that
 * recomputes the distance of every returned row.
 */
#include "vidx.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/index.h"
#include "catalog/pg_am.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(vidx_search);

/* Most rows a batch may ask for per query (ORDER BY ... LIMIT has no such cap, but a batch is
 * materialized). */
#define VIDX_SEARCH_MAX_K 100000

/*
 * Opens a vidx index and its table for a function that reads the table
 * through it (vidx_search, vidx_prewarm): the caller must be able to read the
 * indexed column, and row security must not apply. The table is locked before
 * its index, as a query does.
 */
void
vidx_open_for_read(Oid indexoid, const char *what, Relation *heap_out, Relation *index_out)
{
	Oid am = get_index_am_oid("vidx", false);
	Oid heapoid = IndexGetRelation(indexoid, true);
	Relation heap;
	Relation index;
	AttrNumber attno;

	if (!OidIsValid(heapoid))
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
		                errmsg("\"%s\" is not an index",
		                       get_rel_name(indexoid) ? get_rel_name(indexoid) : "(unknown)")));
	heap = table_open(heapoid, AccessShareLock);
	index = index_open(indexoid, AccessShareLock);
	if (index->rd_rel->relam != am)
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
		                errmsg("\"%s\" is not a vidx index", RelationGetRelationName(index))));
	attno = index->rd_index->indkey.values[0];
	if (pg_class_aclcheck(heapoid, GetUserId(), ACL_SELECT) != ACLCHECK_OK &&
	    (attno == 0 ||
	     pg_attribute_aclcheck(heapoid, attno, GetUserId(), ACL_SELECT) != ACLCHECK_OK))
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, RelationGetRelationName(heap));
	if (check_enable_rls(heapoid, InvalidOid, false) == RLS_ENABLED)
		ereport(
		    ERROR,
		    (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
		     errmsg("%s cannot be used on table \"%s\": it has row-level security", what,
		            RelationGetRelationName(heap)),
		     errhint(
		         "Use SELECT ... ORDER BY ... LIMIT, which applies the row security policies.")));
	*heap_out = heap;
	*index_out = index;
}

Datum
vidx_search(PG_FUNCTION_ARGS)
{
	ArrayType *queries = PG_GETARG_ARRAYTYPE_P(1);
	int32 k = PG_GETARG_INT32(2);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Relation heap;
	Relation index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ArrayType *query;
	const float4 *elems;
	int nqueries;
	int dims;

	if (k < 1 || k > VIDX_SEARCH_MAX_K)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("k must be between 1 and %d", VIDX_SEARCH_MAX_K)));
	vidx_query_matrix_shape(queries, "queries", &nqueries, &dims);
	if (dims > VIDX_MAX_DIMS)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
		                errmsg("query vectors have %d dimensions, more than the maximum of %d",
		                       dims, VIDX_MAX_DIMS)));

	vidx_open_for_read(PG_GETARG_OID(0), "vidx_search", &heap, &index);

	InitMaterializedSRF(fcinfo, 0);
	elems = (const float4 *) ARR_DATA_PTR(queries);
	query = vidx_new_query_array(dims);

	/* One scan, restarted for every query: its scratch memory and the tree cache are reused. */
	scan = index_beginscan(heap, index, GetActiveSnapshot(), 0, 1);
	slot = table_slot_create(heap, NULL);
	for (int q = 0; q < nqueries; q++)
	{
		ScanKeyData key;
		int found = 0;

		memcpy(ARR_DATA_PTR(query), elems + (Size) q * dims, sizeof(float4) * (Size) dims);
		vidx_query_scankey(&key, query);
		index_rescan(scan, NULL, 0, &key, 1);
		while (found < k && index_getnext_slot(scan, ForwardScanDirection, slot))
		{
			Datum values[3];
			bool isnull[3] = {false, false, false};

			values[0] = Int32GetDatum(q + 1);
			values[1] = PointerGetDatum(&slot->tts_tid);
			values[2] = scan->xs_orderbyvals[0];
			isnull[2] = scan->xs_orderbynulls[0];
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, isnull);
			found++;
		}
		CHECK_FOR_INTERRUPTS();
	}
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	pfree(query);
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(vidx_prewarm);

/*
 * Reads every index page into shared buffers, the tree into this backend's
 * cache and the sidecar file into the kernel's page cache, and maps the
 * sidecar into this backend with its page table filled in, so that the first
 * queries after a restart (or of a new session) run at full speed. Returns
 * the pages and bytes read.
 */
Datum
vidx_prewarm(PG_FUNCTION_ARGS)
{
	TupleDesc tupdesc;
	Relation heap;
	Relation index;
	BlockNumber nblocks;
	VidxMetaPageData meta;
	int64 sidecar_bytes;
	Datum values[2];
	bool isnull[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "vidx_prewarm: return type must be a row type");
	vidx_open_for_read(PG_GETARG_OID(0), "vidx_prewarm", &heap, &index);

	nblocks = RelationGetNumberOfBlocks(index);
	for (BlockNumber blkno = 0; blkno < nblocks; blkno++)
	{
		/* Keep some reads in flight ahead of the one we wait for. */
		if (blkno % 32 == 0)
			for (BlockNumber b = blkno + 32; b < Min(nblocks, blkno + 64); b++)
				PrefetchBuffer(index, MAIN_FORKNUM, b);
		ReleaseBuffer(ReadBufferExtended(index, MAIN_FORKNUM, blkno, RBM_NORMAL, NULL));
		CHECK_FOR_INTERRUPTS();
	}
	vidx_read_meta(index, &meta);
	if (meta.dims > 0)
		(void) vidx_get_tree(index, &meta);
	sidecar_bytes = meta.dims > 0 ? vidx_sidecar_prewarm(index, &meta) : 0;

	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	values[0] = Int64GetDatum((int64) nblocks);
	values[1] = Int64GetDatum(sidecar_bytes);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, isnull)));
}
