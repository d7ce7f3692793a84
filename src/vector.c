/*
 * vector.c: vectors as SQL arrays, and the SQL distance operators.
 *
 * A vector is a one-dimensional real[] without NULLs, NaN or infinity. Queries
 * may also come as double precision[] or numeric[] (what client libraries send
 * for a list of floats); they are converted to float4 with a range check.
 *
 * vidx_array_to_vector runs on every insert and every query, so the common
 * case, a float4[] without a null bitmap, is a single pass over the data.
 */
#include "vidx.h"

#include <math.h>
#include <string.h>

#include "access/genam.h"
#include "access/skey.h"
#include "catalog/pg_type.h"
#include "common/shortest_dec.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/numeric.h"
#include "utils/rel.h"

#include "vidx_typeio.h"

PG_FUNCTION_INFO_V1(vidx_l2_distance);
PG_FUNCTION_INFO_V1(vidx_negative_inner_product);
PG_FUNCTION_INFO_V1(vidx_cosine_distance);

/* Bits of a float32 exponent; all set means NaN or infinity. */
#define FLOAT4_EXP_MASK 0x7f800000U

/* Raises the error for a non-finite element (NaN or +-Infinity) at subscript. */
static void
report_nonfinite(bool is_nan, int subscript, const char *what)
{
	if (is_nan)
		ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION), errmsg("%s must not contain NaN", what),
		                errdetail("The element at subscript %d is NaN.", subscript)));
	ereport(ERROR,
	        (errcode(ERRCODE_DATA_EXCEPTION), errmsg("%s must not contain infinite values", what),
	         errdetail("The element at subscript %d is infinite.", subscript)));
}

/*
 * Checks that n floats are finite. The common case is one branch-free pass:
 * a float is finite when its bits without the sign are below the infinity's,
 * so the largest of them, kept in eight independent lanes (-O2 does not
 * vectorize a loop of unknown length; one lane was 6% of a query, run on
 * each ORDER BY distance the executor computes), says it for all. Only on
 * failure is the culprit located.
 */
static void
check_finite_float4(const float *v, int n, int lbound, const char *what)
{
	uint32 lane[8] = {0};
	uint32 bad;
	int i = 0;

	for (; i + 8 <= n; i += 8)
	{
		uint32 bits[8];

		memcpy(bits, &v[i], sizeof(bits));
		for (int j = 0; j < 8; j++)
			lane[j] = Max(lane[j], bits[j] & 0x7fffffffU);
	}
	for (; i < n; i++)
	{
		uint32 bits;

		memcpy(&bits, &v[i], sizeof(bits));
		lane[0] = Max(lane[0], bits & 0x7fffffffU);
	}
	bad = 0;
	for (int j = 0; j < 8; j++)
		bad |= lane[j] >= FLOAT4_EXP_MASK;
	if (likely(bad == 0))
		return;

	for (i = 0; i < n; i++)
	{
		if (!isfinite(v[i]))
			report_nonfinite(isnan(v[i]), lbound + i, what);
	}
}

/*
 * Converts one finite-or-not double to float4, raising the proper error for
 * NaN, infinity or a finite value out of the range of real.
 */
static inline float
double_to_float4(double d, int subscript, const char *what)
{
	float f;

	if (unlikely(!isfinite(d)))
		report_nonfinite(isnan(d), subscript, what);
	f = (float) d;
	if (unlikely(isinf(f)))
		ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
		                errmsg("%s contains a value out of range for type real", what),
		                errdetail("The element at subscript %d is %g.", subscript, d)));
	return f;
}

/*
 * Validates the array's shape and element type; returns the element count.
 * Everything here is checked before anything is allocated.
 */
static int
check_array_shape(ArrayType *array, const char *what)
{
	Oid elemtype = ARR_ELEMTYPE(array);
	int ndim = ARR_NDIM(array);
	int n;

	if (elemtype != FLOAT4OID && elemtype != FLOAT8OID && elemtype != NUMERICOID)
		ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
		                errmsg("%s must be an array of real, double precision or numeric, not %s",
		                       what, format_type_be(elemtype))));
	if (ndim > 1)
		ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
		                errmsg("%s must be a one-dimensional array", what),
		                errdetail("The array has %d dimensions.", ndim)));

	n = (ndim == 0) ? 0 : ARR_DIMS(array)[0];
	if (n <= 0)
		ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
		                errmsg("%s must have at least 1 dimension", what)));
	if (n > VIDX_MAX_DIMS)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
		                errmsg("%s cannot have more than %d dimensions", what, VIDX_MAX_DIMS),
		                errdetail("The array has %d elements.", n)));
	return n;
}

/* Raises the error for the first NULL element of an array known to have one. */
static void
report_null_element(ArrayType *array, int n, const char *what)
{
	bits8 *bitmap = ARR_NULLBITMAP(array);
	int i;

	for (i = 0; i < n; i++)
	{
		if (bitmap != NULL && !(bitmap[i / 8] & (1 << (i % 8))))
			break;
	}
	ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
	                errmsg("%s must not contain NULL elements", what),
	                errdetail("The element at subscript %d is NULL.", ARR_LBOUND(array)[0] + i)));
}

/*
 * The vector of an array: for a float4[] without NULLs, a pointer into the
 * array's own data when copy is false (or a palloc'd copy when it is true);
 * for other element types always a palloc'd float array.
 */
static float *
array_to_vector_internal(ArrayType *array, int *dims, const char *what, bool copy)
{
	int n = check_array_shape(array, what);
	int lbound = ARR_LBOUND(array)[0];
	Oid elemtype = ARR_ELEMTYPE(array);
	float *result;
	int i;

	if (ARR_HASNULL(array) && array_contains_nulls(array))
		report_null_element(array, n, what);

	if (elemtype == FLOAT4OID)
	{
		/* No NULLs, so the data is n contiguous, int-aligned floats. */
		const float *data = (const float *) ARR_DATA_PTR(array);

		check_finite_float4(data, n, lbound, what);
		if (copy)
		{
			result = (float *) palloc(sizeof(float) * n);
			memcpy(result, data, sizeof(float) * n);
		}
		else
			result = (float *) data;
	}
	else if (elemtype == FLOAT8OID)
	{
		/* No NULLs, so the data is n contiguous, double-aligned float8s. */
		const float8 *data = (const float8 *) ARR_DATA_PTR(array);

		result = (float *) palloc(sizeof(float) * n);
		for (i = 0; i < n; i++)
			result[i] = double_to_float4(data[i], lbound + i, what);
	}
	else
	{
		Datum *elems;
		int nelems;

		deconstruct_array(array, NUMERICOID, -1, false, TYPALIGN_INT, &elems, NULL, &nelems);
		Assert(nelems == n);
		result = (float *) palloc(sizeof(float) * n);
		for (i = 0; i < n; i++)
		{
			Numeric num = DatumGetNumeric(elems[i]);
			double d;

			/* Tell NaN and Infinity apart from values too large for float8. */
			if (numeric_is_nan(num))
				report_nonfinite(true, lbound + i, what);
			if (numeric_is_inf(num))
				report_nonfinite(false, lbound + i, what);
			d = DatumGetFloat8(
			    DirectFunctionCall1(numeric_float8_no_overflow, NumericGetDatum(num)));
			if (isinf(d))
				ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				                errmsg("%s contains a value out of range for type real", what),
				                errdetail("The element at subscript %d is %s.", lbound + i,
				                          numeric_out_sci(num, 6))));
			result[i] = double_to_float4(d, lbound + i, what);
		}
		pfree(elems);
	}

	*dims = n;
	return result;
}

float *
vidx_array_to_vector(ArrayType *array, int *dims, const char *what)
{
	return array_to_vector_internal(array, dims, what, true);
}

/*
 * The vector of a datum that an index stores or is queried with: a column
 * value (typid InvalidOid: the index's column type) or an ORDER BY operand of
 * type typid. Arrays (real[], and double precision[] or numeric[] queries)
 * are read here; any other type by the operator class's reader (support
 * function 2, vidx_typeio.h), whose result gets the same checks. *lbound is
 * the subscript of the first element, for messages.
 */
float *
vidx_datum_to_vector(Relation index, Datum datum, Oid typid, int *dims, int *lbound,
                     const char *what)
{
	bool is_array =
	    (typid == FLOAT4ARRAYOID || typid == FLOAT8ARRAYOID || typid == NUMERICARRAYOID);

	if (!is_array && OidIsValid(index_getprocid(index, 1, VIDX_READER_PROC)))
	{
		FmgrInfo *proc = index_getprocinfo(index, 1, VIDX_READER_PROC);
		VidxVectorRead out;

		memset(&out, 0, sizeof(out));
		out.version = VIDX_VECTOR_READ_VERSION;
		out.what = what;
		out.lbound = 1;
		(void) FunctionCall2Coll(proc, InvalidOid, datum, PointerGetDatum(&out));
		if (out.values == NULL)
			elog(ERROR, "vidx: the vector reader of index \"%s\" returned no vector",
			     RelationGetRelationName(index));
		if (out.dims <= 0)
			ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
			                errmsg("%s must have at least 1 dimension", what)));
		if (out.dims > VIDX_MAX_DIMS)
			ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			                errmsg("%s cannot have more than %d dimensions", what, VIDX_MAX_DIMS),
			                errdetail("The vector has %d dimensions.", out.dims)));
		check_finite_float4(out.values, out.dims, out.lbound, what);
		*dims = out.dims;
		*lbound = out.lbound;
		return out.values;
	}
	else
	{
		ArrayType *array = DatumGetArrayTypeP(datum);
		float *v = array_to_vector_internal(array, dims, what, true);

		*lbound = ARR_LBOUND(array)[0];
		if ((Pointer) array != DatumGetPointer(datum))
			pfree(array); /* a detoasted copy: scans read many rows in one context */
		return v;
	}
}

void
vidx_check_dims(int dims, int expected, Relation index)
{
	if (dims == expected)
		return;
	if (index != NULL)
		ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
		                errmsg("vector has %d dimensions, but index \"%s\" has %d", dims,
		                       RelationGetRelationName(index), expected)));
	ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
	                errmsg("different vector dimensions %d and %d", dims, expected)));
}

void
vidx_check_nonzero(const float *v, int dims)
{
	for (int i = 0; i < dims; i++)
		if (v[i] != 0.0f)
			return;
	ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
	                errmsg("cosine distance is undefined for a zero vector")));
}

void
vidx_check_indexable(const float *v, int dims, int lbound, Relation index)
{
	int bad = 0;
	char value[32];
	char limit[32];

	if (likely(vidx_vector_check_indexable(v, dims, &bad) == VIDX_OK))
		return;
	float_to_shortest_decimal_buf(v[bad], value);
	float_to_shortest_decimal_buf(VIDX_MAX_ELEMENT, limit);
	ereport(ERROR,
	        (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
	         errmsg("vector contains a value out of range for index \"%s\"",
	                RelationGetRelationName(index)),
	         errdetail("The element at subscript %d is %s; vidx indexes vectors whose elements "
	                   "are at most %s in absolute value.",
	                   lbound + bad, value, limit)));
}

/*
 * The last converted double precision[] or numeric[] right operand of one
 * call site, in fn_mcxt: a scan compares every row with the same query, and
 * comparing its bytes is much cheaper than converting it again (numeric
 * especially). real[] operands need no conversion and are not cached.
 */
typedef struct QueryCache
{
	Size len;  /* VARSIZE of raw; 0 while invalid */
	char *raw; /* copy of the detoasted array */
	float *vec;
	int dims;
} QueryCache;

static const float *
query_vector(FunctionCallInfo fcinfo, ArrayType *array, int *dims)
{
	FmgrInfo *flinfo = fcinfo->flinfo;
	QueryCache *cache;
	Size len = VARSIZE(array);
	float *v;
	MemoryContext oldcxt;

	if (ARR_ELEMTYPE(array) == FLOAT4OID || flinfo == NULL)
		return array_to_vector_internal(array, dims, "query vector", false);

	cache = (QueryCache *) flinfo->fn_extra;
	if (cache != NULL && cache->len == len && memcmp(cache->raw, array, len) == 0)
	{
		*dims = cache->dims;
		return cache->vec;
	}

	v = array_to_vector_internal(array, dims, "query vector", false);

	oldcxt = MemoryContextSwitchTo(flinfo->fn_mcxt);
	if (cache == NULL)
	{
		cache = (QueryCache *) palloc0(sizeof(QueryCache));
		flinfo->fn_extra = cache;
	}
	else if (cache->len != 0)
	{
		cache->len = 0;
		pfree(cache->raw);
		pfree(cache->vec);
	}
	cache->raw = (char *) palloc(len);
	memcpy(cache->raw, array, len);
	cache->vec = (float *) palloc(sizeof(float) * *dims);
	memcpy(cache->vec, v, sizeof(float) * *dims);
	cache->dims = *dims;
	cache->len = len;
	MemoryContextSwitchTo(oldcxt);

	return v;
}

/* Common body of the three SQL functions. */
static Datum
distance_common(FunctionCallInfo fcinfo, VidxMetric metric)
{
	ArrayType *left = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType *right = PG_GETARG_ARRAYTYPE_P(1);
	const float *a;
	const float *b;
	int adims;
	int bdims;
	double result;

	a = array_to_vector_internal(left, &adims, "vector", false);
	b = query_vector(fcinfo, right, &bdims);
	vidx_check_dims(adims, bdims, NULL);

	if (metric == VIDX_METRIC_COSINE)
	{
		vidx_check_nonzero(a, adims);
		vidx_check_nonzero(b, bdims);
	}

	/* The core falls back to double precision where float sums overflow. */
	result = vidx_distance(metric, a, b, adims);
	if (result == 0.0)
		result = 0.0; /* no -0 from <#> of orthogonal vectors */
	else if (metric == VIDX_METRIC_COSINE)
	{
		/* Rounding can push 1 - cos just outside [0, 2]. */
		if (result < 0.0)
			result = 0.0;
		else if (result > 2.0)
			result = 2.0;
	}

	PG_RETURN_FLOAT8(result);
}

Datum
vidx_l2_distance(PG_FUNCTION_ARGS)
{
	return distance_common(fcinfo, VIDX_METRIC_L2);
}

Datum
vidx_negative_inner_product(PG_FUNCTION_ARGS)
{
	return distance_common(fcinfo, VIDX_METRIC_IP);
}

Datum
vidx_cosine_distance(PG_FUNCTION_ARGS)
{
	return distance_common(fcinfo, VIDX_METRIC_COSINE);
}

/* ---------- real[] queries of vidx_search and vidx_recall ---------- */

/*
 * The number of queries and their dimensions in a real[] of query vectors:
 * one-dimensional (one query) or two-dimensional (one query per row), without
 * NULL elements. "what" names the argument in messages.
 */
void
vidx_query_matrix_shape(ArrayType *a, const char *what, int *nqueries, int *dims)
{
	if (ARR_NDIM(a) == 1)
	{
		*nqueries = 1;
		*dims = ARR_DIMS(a)[0];
	}
	else if (ARR_NDIM(a) == 2)
	{
		*nqueries = ARR_DIMS(a)[0];
		*dims = ARR_DIMS(a)[1];
	}
	else
		ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
		                errmsg("%s must be a one-dimensional (one query) or two-dimensional "
		                       "(one query per row) real[]",
		                       what)));
	if (ARR_HASNULL(a))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
		                errmsg("%s must not contain NULL elements", what)));
}

/* A one-dimensional real[] of dims elements (zeros), to hold one query of a scan key. */
ArrayType *
vidx_new_query_array(int dims)
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

/*
 * The ORDER BY key of an index scan by a real[] query, whatever the column's
 * type: sk_subtype tells the scan how to read the query (vidx_datum_to_vector).
 */
void
vidx_query_scankey(ScanKey key, ArrayType *query)
{
	ScanKeyEntryInitialize(key, SK_ORDER_BY, 1, InvalidStrategy, FLOAT4ARRAYOID, InvalidOid,
	                       InvalidOid, PointerGetDatum(query));
}
