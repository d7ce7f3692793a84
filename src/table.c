/*
 * table.c: reading a row's vector from the table, for the rows the sidecar
 * cannot vouch for (scans) and for the postings a leaf split re-encodes.
 */
#include "vidx.h"

#include "access/tableam.h"
#include "catalog/index.h"
#include "executor/executor.h"
#include "utils/memutils.h"

VidxTableReader *
vidx_table_reader_begin(Relation heap, Relation index)
{
	VidxTableReader *r = palloc0(sizeof(VidxTableReader));

	r->fetch = table_index_fetch_begin(heap);
	r->slot = table_slot_create(heap, NULL);
	r->index = index;
	r->indexInfo = BuildIndexInfo(index);
	r->estate = CreateExecutorState();
	GetPerTupleExprContext(r->estate)->ecxt_scantuple = r->slot;
	return r;
}

/*
 * The vector (palloc'd in the current context) of the version of the row at
 * tid that the snapshot sees, or NULL if it sees none, or the row has another
 * number of dimensions or a NULL vector.
 */
float *
vidx_table_reader_vector(VidxTableReader *r, ItemPointer tid, Snapshot snapshot, int dims)
{
	bool call_again = false;
	bool all_dead = false;
	Datum values[INDEX_MAX_KEYS];
	bool isnull[INDEX_MAX_KEYS];
	int got;
	int lbound;
	float *v;

	if (!table_index_fetch_tuple(r->fetch, tid, snapshot, r->slot, &call_again, &all_dead))
		return NULL;
	FormIndexDatum(r->indexInfo, r->slot, r->estate, values, isnull);
	if (isnull[0])
	{
		ResetPerTupleExprContext(r->estate);
		return NULL;
	}
	/* The column's type, read as inserts read it (the operator class's reader for non-arrays). */
	v = vidx_datum_to_vector(r->index, values[0], InvalidOid, &got, &lbound, "vector");
	ResetPerTupleExprContext(r->estate);
	if (got != dims)
		return NULL;
	return v;
}

void
vidx_table_reader_end(VidxTableReader *r)
{
	table_index_fetch_end(r->fetch);
	ExecDropSingleTupleTableSlot(r->slot);
	FreeExecutorState(r->estate);
	pfree(r);
}
