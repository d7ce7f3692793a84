/*
 * batch.c: vidx_search(index, queries, k), many k-NN queries in one call.
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

/* The caller must be able to read the indexed column, and row security must not apply. */
static void
check_search_allowed(Relation heap, Relation index)
{
	Oid heapoid = RelationGetRelid(heap);
	AttrNumber attno = index->rd_index->indkey.values[0];

	if (pg_class_aclcheck(heapoid, GetUserId(), ACL_SELECT) != ACLCHECK_OK &&
	    (attno == 0 ||
	     pg_attribute_aclcheck(heapoid, attno, GetUserId(), ACL_SELECT) != ACLCHECK_OK))
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, RelationGetRelationName(heap));
	if (check_enable_rls(heapoid, InvalidOid, false) == RLS_ENABLED)
		ereport(
		    ERROR,
		    (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
		     errmsg("vidx_search cannot be used on table \"%s\": it has row-level security",
		            RelationGetRelationName(heap)),
		     errhint(
		         "Use SELECT ... ORDER BY ... LIMIT, which applies the row security policies.")));
}

/* A one-dimensional real[] of dims elements, for one query's scan key. */
static ArrayType *
new_query_array(int dims)
{
	Size nbytes = ARR_OVERHEAD_NONULLS(1) + sizeof(float4) * (Size) dims;
	ArrayType *a = palloc0(nbytes);

	SET_VARSIZE(a, nbytes);
	a->ndim = 1;
	a->dataoffset = 0;
	a->elemtype = FLOAT4OID;
	ARR_DIMS(a)[0] = dims;
	ARR_LBOUND(a)[0] = 1;
	return a;
}

Datum
vidx_search(PG_FUNCTION_ARGS)
{
	Oid indexoid = PG_GETARG_OID(0);
	ArrayType *queries = PG_GETARG_ARRAYTYPE_P(1);
	int32 k = PG_GETARG_INT32(2);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid am = get_index_am_oid("vidx", false);
	Oid heapoid;
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
	if (ARR_NDIM(queries) == 1)
	{
		nqueries = 1;
		dims = ARR_DIMS(queries)[0];
	}
	else if (ARR_NDIM(queries) == 2)
	{
		nqueries = ARR_DIMS(queries)[0];
		dims = ARR_DIMS(queries)[1];
	}
	else
		ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
		                errmsg("queries must be a one-dimensional (one query) or two-dimensional "
		                       "(one query per row) real[]")));
	if (ARR_HASNULL(queries))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
		                errmsg("queries must not contain NULL elements")));
	if (dims > VIDX_MAX_DIMS)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
		                errmsg("query vectors have %d dimensions, more than the maximum of %d",
		                       dims, VIDX_MAX_DIMS)));

	/* Lock the table before its index, as a query does. */
	heapoid = IndexGetRelation(indexoid, true);
	if (!OidIsValid(heapoid))
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
		                errmsg("\"%s\" is not an index",
		                       get_rel_name(indexoid) ? get_rel_name(indexoid) : "(unknown)")));
	heap = table_open(heapoid, AccessShareLock);
	index = index_open(indexoid, AccessShareLock);
	if (index->rd_rel->relam != am)
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
		                errmsg("\"%s\" is not a vidx index", RelationGetRelationName(index))));
	check_search_allowed(heap, index);

	InitMaterializedSRF(fcinfo, 0);
	elems = (const float4 *) ARR_DATA_PTR(queries);
	query = new_query_array(dims);

	/* One scan, restarted for every query: its scratch memory and the tree cache are reused. */
	scan = index_beginscan(heap, index, GetActiveSnapshot(), 0, 1);
	slot = table_slot_create(heap, NULL);
	for (int q = 0; q < nqueries; q++)
	{
		ScanKeyData key;
		int found = 0;

		memcpy(ARR_DATA_PTR(query), elems + (Size) q * dims, sizeof(float4) * (Size) dims);
		ScanKeyEntryInitialize(&key, 0, 1, InvalidStrategy, InvalidOid, InvalidOid, InvalidOid,
		                       PointerGetDatum(query));
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
