/*
 * vidx_pgvector.c: the vector readers (support function 2 of a vidx operator
 * class, src/vidx_typeio.h) for pgvector's vector and halfvec types.
 *
 * Each reader turns one datum of its type into a float array for the vidx
 * access method: vector's float4 elements as they are, halfvec's float16
 * elements converted exactly (every half is a float). The layouts below are
 * pgvector's on-disk formats (src/vector.h, src/halfvec.h of pgvector 0.8.x:
 * a varlena header, int16 dim, int16 unused, then the elements); pgvector's
 * headers are not needed to build this file, and the vidx library does not
 * depend on pgvector at all.
 */
#include "postgres.h"

#include <string.h>

#include "fmgr.h"

#include "vidx_typeio.h"

PG_MODULE_MAGIC;

typedef struct PgvectorVector
{
	int32 vl_len_; /* varlena header */
	int16 dim;
	int16 unused;
	float x[FLEXIBLE_ARRAY_MEMBER];
} PgvectorVector;

typedef struct PgvectorHalfvec
{
	int32 vl_len_; /* varlena header */
	int16 dim;
	int16 unused;
	uint16 x[FLEXIBLE_ARRAY_MEMBER]; /* IEEE 754 binary16 */
} PgvectorHalfvec;

/* The VidxVectorRead the access method passed, checked. */
static VidxVectorRead *
reader_out(FunctionCallInfo fcinfo)
{
	VidxVectorRead *out = (VidxVectorRead *) PG_GETARG_POINTER(1);

	if (out == NULL || out->version != VIDX_VECTOR_READ_VERSION)
		elog(ERROR, "vidx_pgvector: called with an unknown vidx reader protocol (version %d)",
		     out ? out->version : -1);
	return out;
}

/* Checks that a datum of a pgvector type holds the dim elements its header says. */
static void
check_size(const char *type, Size size, Size header, Size elem, int dim, const char *what)
{
	if (dim < 1)
		ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
		                errmsg("%s must have at least 1 dimension", what)));
	if (size < header + elem * (Size) dim)
		ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
		                errmsg("%s value is shorter than its %d dimensions", type, dim)));
}

/* binary16 to float, exactly (every binary16 value is a float). */
static inline float
half_to_float(uint16 h)
{
	uint32 sign = (uint32) (h & 0x8000) << 16;
	uint32 exponent = (h >> 10) & 0x1f;
	uint32 mantissa = h & 0x3ff;
	uint32 bits;
	float f;

	if (exponent == 0)
	{
		/* zero or subnormal: mantissa * 2^-24, exact in float */
		f = (float) mantissa * 5.9604644775390625e-08f;
		return sign ? -f : f;
	}
	if (exponent == 31)
		bits = sign | 0x7f800000 | (mantissa << 13); /* infinity or NaN (rejected later) */
	else
		bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
	memcpy(&f, &bits, sizeof(f));
	return f;
}

PG_FUNCTION_INFO_V1(vidx_pgvector_vector_read);

/* vidx_pgvector_vector_read(vector, internal) RETURNS internal */
Datum
vidx_pgvector_vector_read(PG_FUNCTION_ARGS)
{
	struct varlena *raw = PG_DETOAST_DATUM(PG_GETARG_DATUM(0));
	const PgvectorVector *v = (const PgvectorVector *) raw;
	VidxVectorRead *out = reader_out(fcinfo);

	check_size("vector", VARSIZE(raw), offsetof(PgvectorVector, x), sizeof(float), v->dim,
	           out->what);
	out->values = (float *) palloc(sizeof(float) * v->dim);
	memcpy(out->values, v->x, sizeof(float) * v->dim);
	out->dims = v->dim;
	out->lbound = 1;
	PG_FREE_IF_COPY(raw, 0); /* a detoasted copy: scans read many rows in one context */
	PG_RETURN_POINTER(out);
}

PG_FUNCTION_INFO_V1(vidx_pgvector_halfvec_read);

/* vidx_pgvector_halfvec_read(halfvec, internal) RETURNS internal */
Datum
vidx_pgvector_halfvec_read(PG_FUNCTION_ARGS)
{
	struct varlena *raw = PG_DETOAST_DATUM(PG_GETARG_DATUM(0));
	const PgvectorHalfvec *v = (const PgvectorHalfvec *) raw;
	VidxVectorRead *out = reader_out(fcinfo);

	check_size("halfvec", VARSIZE(raw), offsetof(PgvectorHalfvec, x), sizeof(uint16), v->dim,
	           out->what);
	out->values = (float *) palloc(sizeof(float) * v->dim);
	for (int i = 0; i < v->dim; i++)
		out->values[i] = half_to_float(v->x[i]);
	out->dims = v->dim;
	out->lbound = 1;
	PG_FREE_IF_COPY(raw, 0); /* a detoasted copy: scans read many rows in one context */
	PG_RETURN_POINTER(out);
}
