/*
 * vidx_typeio.h: the contract between the vidx access method and an operator
 * class's vector reader (support function 2), for column types other than
 * real[] (for example pgvector's vector and halfvec, in vidx_pgvector/).
 *
 * An operator class of the vidx access method for a type T declares
 *
 *   FUNCTION 1  metric(internal) RETURNS internal          -- as for real[]
 *   FUNCTION 2  reader(T, internal) RETURNS internal       -- this contract
 *
 * The access method calls the reader with a (possibly toasted) datum of T and
 * a VidxVectorRead whose "what" names the operand for messages; the reader
 * fills in values (a palloc'd float array in the current memory context, the
 * vector's elements converted exactly or rounded to float4), dims and lbound
 * (the subscript of the first element in messages), and returns the same
 * pointer. It raises a clear error (ereport) for a datum it cannot read. The
 * access method checks the rest as it does for real[]: 1 to VIDX_MAX_DIMS
 * dimensions, no NaN or infinity, the index's dimensions, no zero vector under
 * cosine, elements within VIDX_MAX_ELEMENT. Readers are plain C and run on
 * the backend's thread only.
 *
 * An operator class without support function 2 is one of real[] (the query
 * operand may also be double precision[] or numeric[]).
 */
#ifndef VIDX_TYPEIO_H
#define VIDX_TYPEIO_H

/* Support function number of the reader in a vidx operator class. */
#define VIDX_READER_PROC 2

/* Bumped if the struct below changes; the reader checks it. */
#define VIDX_VECTOR_READ_VERSION 1

typedef struct VidxVectorRead
{
	int version;      /* in: VIDX_VECTOR_READ_VERSION */
	const char *what; /* in: the operand, for messages ("vector", "query vector") */
	float *values;    /* out: palloc'd, dims elements */
	int dims;         /* out */
	int lbound;       /* out: subscript of values[0] in messages (1 for most types) */
} VidxVectorRead;

#endif /* VIDX_TYPEIO_H */
