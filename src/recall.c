/*
 * recall.c: vidx_recall(index, queries, k, query_vectors), the recall@k of
 * an index at the session's current settings, measured against exact search.
 *
 * The queries are a seeded sample of the table's rows (reservoir sampling
 * over a sequential scan without synchronized start, so the same table gives
 * the same sample), each excluded from its own answer, or the rows of the
 * caller's query_vectors. A second sequential scan gives every query's exact
 * k nearest rows (core: vidx_knn_update, on the build's threads); then each
 * query runs through the index as ORDER BY ... LIMIT k does, timed. A row the
 * index returns counts as found if its distance is at most the k-th exact
 * distance (ties count; within the float kernels' rounding). Cost: two sequential scans of the
 * table and queries x rows exact distances, then queries index scans; a NOTICE reports progress
 * every 10 seconds.
 */
#include "scan.h"

#include <math.h>

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/index.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "portability/instr_time.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#define VIDX_RECALL_SEED UINT64CONST(0x726563616c6c) /* "recall" */
#define VIDX_RECALL_MAX_QUERIES 10000
#define VIDX_RECALL_MAX_K 1000
#define VIDX_RECALL_BATCH 4096
#define VIDX_RECALL_NOTICE_MS 10000

typedef struct RowReader
{
	TableScanDesc scan;
	TupleTableSlot *slot;
	IndexInfo *indexInfo;
	EState *estate;
	int dims;
	VidxMetric metric;
	Relation index;
} RowReader;

static void
rows_begin(RowReader *r, Relation heap, Relation index, int dims, VidxMetric metric)
{
	/* no synchronized scan: the sample must not depend on where another scan is */
	r->scan = table_beginscan_strat(heap, GetActiveSnapshot(), 0, NULL, true, false);
	r->slot = table_slot_create(heap, NULL);
	r->indexInfo = BuildIndexInfo(index);
	r->estate = CreateExecutorState();
	GetPerTupleExprContext(r->estate)->ecxt_scantuple = r->slot;
	r->dims = dims;
	r->metric = metric;
	r->index = index;
}

/*
 * The next row with an indexed vector: its vector into v (dims floats) and its
 * TID. Rows the index does not hold (NULL) are skipped; a row the index could
 * not hold raises the error an insert would.
 */
static bool
rows_next(RowReader *r, float *v, ItemPointer tid)
{
	while (table_scan_getnextslot(r->scan, ForwardScanDirection, r->slot))
	{
		Datum values[INDEX_MAX_KEYS];
		bool isnull[INDEX_MAX_KEYS];
		float *x;
		int got;
		int lbound;

		FormIndexDatum(r->indexInfo, r->slot, r->estate, values, isnull);
		if (isnull[0])
		{
			ResetPerTupleExprContext(r->estate);
			continue;
		}
		/* the column's type, read as inserts read it (the operator class's reader for non-arrays)
		 */
		x = vidx_datum_to_vector(r->index, values[0], InvalidOid, &got, &lbound, "vector");
		vidx_check_dims(got, r->dims, r->index);
		memcpy(v, x, sizeof(float) * r->dims);
		pfree(x);
		ResetPerTupleExprContext(r->estate);
		*tid = r->slot->tts_tid;
		return true;
	}
	return false;
}

static void
rows_end(RowReader *r)
{
	table_endscan(r->scan);
	ExecDropSingleTupleTableSlot(r->slot);
	FreeExecutorState(r->estate);
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *) a, y = *(const double *) b;

	return (x > y) - (x < y);
}

/* A NOTICE every VIDX_RECALL_NOTICE_MS of a long run (total <= 0: not known yet). */
static void
progress(TimestampTz *last, const char *what, int64 done, int64 total)
{
	TimestampTz now = GetCurrentTimestamp();

	if (TimestampDifferenceExceeds(*last, now, VIDX_RECALL_NOTICE_MS))
	{
		if (total > 0)
			ereport(NOTICE, (errmsg("vidx_recall: %s " INT64_FORMAT " of " INT64_FORMAT, what, done,
			                        total)));
		else
			ereport(NOTICE, (errmsg("vidx_recall: %s " INT64_FORMAT, what, done)));
		*last = now;
	}
}

PG_FUNCTION_INFO_V1(vidx_recall);
Datum
vidx_recall(PG_FUNCTION_ARGS)
{
	int32 nq;
	int32 k;
	bool own_queries = !PG_ARGISNULL(3);
	TupleDesc tupdesc;
	Relation heap;
	Relation index;
	VidxMetaPageData meta;
	int dims;
	VidxMetric metric;
	float *queries;
	ItemPointerData *qtid = NULL;
	int64 *qrow = NULL;
	int64 nrows = 0;
	double *top_dist;
	int64 *top_id;
	double *lat;
	double *per_query;
	int64 probes_sum = 0;
	double exact_ms;
	int keff;
	int threads = vidx_build_thread_count();
	TimestampTz last = GetCurrentTimestamp();
	instr_time t0, t1;
	Datum values[9];
	bool isnull[9] = {false};

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
		                errmsg("queries and k must not be NULL")));
	nq = PG_GETARG_INT32(1);
	k = PG_GETARG_INT32(2);
	if (k < 1 || k > VIDX_RECALL_MAX_K)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("k must be between 1 and %d", VIDX_RECALL_MAX_K)));
	if (!own_queries && (nq < 1 || nq > VIDX_RECALL_MAX_QUERIES))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("queries must be between 1 and %d", VIDX_RECALL_MAX_QUERIES)));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "vidx_recall: return type must be a row type");

	vidx_open_for_read(PG_GETARG_OID(0), "vidx_recall", &heap, &index);
	vidx_read_meta(index, &meta);
	dims = (int) meta.dims;
	metric = (VidxMetric) meta.metric;
	if (dims == 0)
		ereport(ERROR,
		        (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		         errmsg("index \"%s\" holds no vector yet", RelationGetRelationName(index))));

	/* The queries. */
	INSTR_TIME_SET_CURRENT(t0);
	if (own_queries)
	{
		ArrayType *a = PG_GETARG_ARRAYTYPE_P(3);
		int qdims;

		vidx_query_matrix_shape(a, "query_vectors", &nq, &qdims);
		if (nq < 1 || nq > VIDX_RECALL_MAX_QUERIES)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			                errmsg("query_vectors must hold between 1 and %d queries",
			                       VIDX_RECALL_MAX_QUERIES)));
		vidx_check_dims(qdims, dims, index);
		queries = palloc(sizeof(float) * dims * nq);
		memcpy(queries, ARR_DATA_PTR(a), sizeof(float) * dims * nq);
		for (int i = 0; i < nq; i++)
		{
			if (vidx_vector_check_indexable(queries + (Size) i * dims, dims, NULL) != VIDX_OK)
				ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
				                errmsg("query vector %d holds NaN, infinity or an element too "
				                       "large to index",
				                       i + 1)));
			if (metric == VIDX_METRIC_COSINE)
				vidx_check_nonzero(queries + (Size) i * dims, dims);
		}
	}
	else
	{
		/* A seeded reservoir sample of the rows (Algorithm R). */
		RowReader r;
		float *v = palloc(sizeof(float) * dims);
		ItemPointerData tid;
		pg_prng_state rng;

		pg_prng_seed(&rng, VIDX_RECALL_SEED);
		queries = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(float) * dims * nq);
		qtid = palloc(sizeof(ItemPointerData) * nq);
		qrow = palloc(sizeof(int64) * nq);
		rows_begin(&r, heap, index, dims, metric);
		while (rows_next(&r, v, &tid))
		{
			int64 slot = nrows < nq ? nrows : (int64) pg_prng_uint64_range(&rng, 0, nrows);

			if (slot < nq)
			{
				memcpy(queries + (Size) slot * dims, v, sizeof(float) * dims);
				qtid[slot] = tid;
				qrow[slot] = nrows;
			}
			nrows++;
			if (nrows % 65536 == 0)
			{
				CHECK_FOR_INTERRUPTS();
				progress(&last, "sampling: rows read", nrows, 0);
			}
		}
		rows_end(&r);
		pfree(v);
		nq = (int32) Min((int64) nq, nrows);
		if (nrows < 2)
			ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			                errmsg("table \"%s\" has fewer than 2 rows with a vector: no row "
			                       "can be a query",
			                       RelationGetRelationName(heap))));
	}

	/* Their exact k nearest rows: one sequential scan. */
	top_dist = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(double) * nq * k);
	top_id = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int64) * nq * k);
	for (int64 i = 0; i < (int64) nq * k; i++)
	{
		top_dist[i] = get_float8_infinity();
		top_id[i] = -1;
	}
	{
		RowReader r;
		float *vecs =
		    MemoryContextAllocHuge(CurrentMemoryContext, sizeof(float) * dims * VIDX_RECALL_BATCH);
		int64 *ids = palloc(sizeof(int64) * VIDX_RECALL_BATCH);
		int64 row = 0;
		bool more = true;

		rows_begin(&r, heap, index, dims, metric);
		while (more)
		{
			int n = 0;
			ItemPointerData tid;

			while (n < VIDX_RECALL_BATCH && (more = rows_next(&r, vecs + (Size) n * dims, &tid)))
				ids[n++] = row++;
			vidx_knn_update(metric, queries, nq, qrow, vecs, ids, n, dims, k, top_dist, top_id,
			                threads);
			CHECK_FOR_INTERRUPTS();
			progress(&last, "exact search: rows done", row, own_queries ? 0 : nrows);
		}
		rows_end(&r);
		nrows = row;
		pfree(vecs);
		pfree(ids);
	}
	INSTR_TIME_SET_CURRENT(t1);
	INSTR_TIME_SUBTRACT(t1, t0);
	exact_ms = INSTR_TIME_GET_MILLISEC(t1);
	keff = (int) Min((int64) k, own_queries ? nrows : nrows - 1);
	if (keff < 1)
		ereport(ERROR,
		        (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		         errmsg("table \"%s\" has no row with a vector", RelationGetRelationName(heap))));

	/* The index scans, as ORDER BY ... LIMIT k runs them (k + 1: the query's own row). */
	lat = palloc(sizeof(double) * nq);
	per_query = palloc(sizeof(double) * nq);
	{
		IndexScanDesc scan = index_beginscan(heap, index, GetActiveSnapshot(), 0, 1);
		TupleTableSlot *slot = table_slot_create(heap, NULL);
		ArrayType *qa = vidx_new_query_array(dims);

		for (int q = 0; q < nq; q++)
		{
			ScanKeyData key;
			int got = 0;
			int hits = 0;
			double kth = top_dist[(Size) q * k + keff - 1];
			/* (the exact search's float kernels: vidx_knn_update) */
			double tol = metric == VIDX_METRIC_COSINE ? 1e-6 : 1e-5 * fabs(kth);

			memcpy(ARR_DATA_PTR(qa), queries + (Size) q * dims, sizeof(float) * dims);
			vidx_query_scankey(&key, qa);
			INSTR_TIME_SET_CURRENT(t0);
			index_rescan(scan, NULL, 0, &key, 1);
			while (got < keff && index_getnext_slot(scan, ForwardScanDirection, slot))
			{
				if (qtid != NULL && ItemPointerEquals(&slot->tts_tid, &qtid[q]))
					continue; /* the query's own row */
				got++;
				if (!scan->xs_orderbynulls[0] &&
				    DatumGetFloat8(scan->xs_orderbyvals[0]) <= kth + tol)
					hits++;
			}
			INSTR_TIME_SET_CURRENT(t1);
			INSTR_TIME_SUBTRACT(t1, t0);
			lat[q] = INSTR_TIME_GET_MILLISEC(t1);
			per_query[q] = (double) hits / keff;
			probes_sum += ((VidxScanOpaque) scan->opaque)->probes;
			CHECK_FOR_INTERRUPTS();
			progress(&last, "index scans done", q + 1, nq);
		}
		ExecDropSingleTupleTableSlot(slot);
		index_endscan(scan);
	}

	/* Recall and its 95% interval: the wider of a normal interval over the queries and Wilson's. */
	{
		double mean = 0, var = 0, lat_mean = 0, half, lo, hi;
		double z = 1.959964;
		double nk = (double) nq * keff;
		double wc, wh;
		StringInfoData js;

		for (int q = 0; q < nq; q++)
		{
			mean += per_query[q];
			lat_mean += lat[q];
		}
		mean /= nq;
		lat_mean /= nq;
		for (int q = 0; q < nq; q++)
			var += (per_query[q] - mean) * (per_query[q] - mean);
		var = nq > 1 ? var / (nq - 1) : 0;
		half = z * sqrt(var / nq);
		lo = mean - half;
		hi = mean + half;
		/* Wilson over the nq * keff neighbours (tight when every query scores alike) */
		wc = (mean + z * z / (2 * nk)) / (1 + z * z / nk);
		wh = z * sqrt(mean * (1 - mean) / nk + z * z / (4 * nk * nk)) / (1 + z * z / nk);
		lo = Max(0.0, Min(lo, wc - wh));
		hi = Min(1.0, Max(hi, wc + wh));
		qsort(lat, nq, sizeof(double), cmp_double);

		initStringInfo(&js);
		appendStringInfo(&js,
		                 "{\"vidx.probes\": %d, \"vidx.target_recall\": %g, \"vidx.rerank\": %d, "
		                 "\"vidx.iterative_scan\": \"%s\", \"vidx.scan_threads\": %d, "
		                 "\"probes_used\": %.1f, \"queries_from\": \"%s\", \"rows\": " INT64_FORMAT
		                 ", \"exact_distances\": " INT64_FORMAT "}",
		                 vidx_probes, vidx_active_target_recall(), vidx_rerank,
		                 vidx_iterative_scan == VIDX_ITERATIVE_STRICT ? "strict_order"
		                                                              : "relaxed_order",
		                 vidx_scan_threads, (double) probes_sum / nq,
		                 own_queries ? "query_vectors" : "table sample", nrows, (int64) nq * nrows);
		values[0] = Float8GetDatum(mean);
		values[1] = Float8GetDatum(lo);
		values[2] = Float8GetDatum(hi);
		values[3] = Int32GetDatum(nq);
		values[4] = Int32GetDatum(keff);
		values[5] = Float8GetDatum(lat_mean);
		values[6] = Float8GetDatum(lat[Min(nq - 1, (int) ceil(0.99 * nq) - 1)]);
		values[7] = Float8GetDatum(exact_ms);
		values[8] = DirectFunctionCall1(jsonb_in, CStringGetDatum(js.data));
	}
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, isnull)));
}
