-- vidx 0.1.0: distance operators on real[] and the vidx index access method.
\echo Use "CREATE EXTENSION vidx" to load this file. \quit

-- Distance functions. The left operand is the stored vector (real[]); the right
-- one, the query, may also be double precision[] or numeric[] (what client
-- libraries send for a list of floats). Every function rejects NULL elements,
-- NaN and infinity, empty and multi-dimensional arrays, more than 16000
-- dimensions and mismatched dimensions; cosine distance rejects zero vectors.
CREATE FUNCTION vidx_l2_distance(real[], real[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'vidx_l2_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION vidx_l2_distance(real[], double precision[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'vidx_l2_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION vidx_l2_distance(real[], numeric[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'vidx_l2_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vidx_negative_inner_product(real[], real[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'vidx_negative_inner_product' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION vidx_negative_inner_product(real[], double precision[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'vidx_negative_inner_product' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION vidx_negative_inner_product(real[], numeric[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'vidx_negative_inner_product' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION vidx_cosine_distance(real[], real[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'vidx_cosine_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION vidx_cosine_distance(real[], double precision[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'vidx_cosine_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION vidx_cosine_distance(real[], numeric[]) RETURNS float8
	AS 'MODULE_PATHNAME', 'vidx_cosine_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR <-> (LEFTARG = real[], RIGHTARG = real[], FUNCTION = vidx_l2_distance, COMMUTATOR = '<->');
CREATE OPERATOR <-> (LEFTARG = real[], RIGHTARG = double precision[], FUNCTION = vidx_l2_distance);
CREATE OPERATOR <-> (LEFTARG = real[], RIGHTARG = numeric[], FUNCTION = vidx_l2_distance);

CREATE OPERATOR <#> (LEFTARG = real[], RIGHTARG = real[], FUNCTION = vidx_negative_inner_product, COMMUTATOR = '<#>');
CREATE OPERATOR <#> (LEFTARG = real[], RIGHTARG = double precision[], FUNCTION = vidx_negative_inner_product);
CREATE OPERATOR <#> (LEFTARG = real[], RIGHTARG = numeric[], FUNCTION = vidx_negative_inner_product);

CREATE OPERATOR <=> (LEFTARG = real[], RIGHTARG = real[], FUNCTION = vidx_cosine_distance, COMMUTATOR = '<=>');
CREATE OPERATOR <=> (LEFTARG = real[], RIGHTARG = double precision[], FUNCTION = vidx_cosine_distance);
CREATE OPERATOR <=> (LEFTARG = real[], RIGHTARG = numeric[], FUNCTION = vidx_cosine_distance);

-- The access method.
CREATE FUNCTION vidx_handler(internal) RETURNS index_am_handler
	AS 'MODULE_PATHNAME' LANGUAGE C;
CREATE ACCESS METHOD vidx TYPE INDEX HANDLER vidx_handler;
COMMENT ON ACCESS METHOD vidx IS 'vidx: hierarchical k-means tree with RaBitQ codes for approximate nearest-neighbour search';

-- Support function 1 of each operator class tells the index its metric.
CREATE FUNCTION vidx_l2_support(internal) RETURNS internal
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION vidx_ip_support(internal) RETURNS internal
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION vidx_cosine_support(internal) RETURNS internal
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR CLASS vidx_l2_ops DEFAULT FOR TYPE real[] USING vidx AS
	OPERATOR 1 <-> (real[], real[]) FOR ORDER BY float_ops,
	OPERATOR 1 <-> (real[], double precision[]) FOR ORDER BY float_ops,
	OPERATOR 1 <-> (real[], numeric[]) FOR ORDER BY float_ops,
	FUNCTION 1 vidx_l2_support(internal);

CREATE OPERATOR CLASS vidx_ip_ops FOR TYPE real[] USING vidx AS
	OPERATOR 1 <#> (real[], real[]) FOR ORDER BY float_ops,
	OPERATOR 1 <#> (real[], double precision[]) FOR ORDER BY float_ops,
	OPERATOR 1 <#> (real[], numeric[]) FOR ORDER BY float_ops,
	FUNCTION 1 vidx_ip_support(internal);

CREATE OPERATOR CLASS vidx_cosine_ops FOR TYPE real[] USING vidx AS
	OPERATOR 1 <=> (real[], real[]) FOR ORDER BY float_ops,
	OPERATOR 1 <=> (real[], double precision[]) FOR ORDER BY float_ops,
	OPERATOR 1 <=> (real[], numeric[]) FOR ORDER BY float_ops,
	FUNCTION 1 vidx_cosine_support(internal);

-- Maintenance and introspection.
CREATE FUNCTION vidx_stats(index regclass) RETURNS jsonb
	AS 'MODULE_PATHNAME' LANGUAGE C STRICT;
COMMENT ON FUNCTION vidx_stats(regclass) IS 'tree shape, leaf sizes, code bytes and sidecar state of a vidx index';

CREATE FUNCTION vidx_verify(index regclass, check_sidecar boolean DEFAULT true) RETURNS boolean
	AS 'MODULE_PATHNAME' LANGUAGE C STRICT;
COMMENT ON FUNCTION vidx_verify(regclass, boolean) IS 'checks a vidx index (and its sidecar); raises an error describing the first inconsistency, else returns true';

-- Batch search: many queries in one call.
CREATE FUNCTION vidx_search(index regclass, queries real[], k integer DEFAULT 10,
                            OUT query integer, OUT row_tid tid, OUT distance double precision)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME' LANGUAGE C STRICT VOLATILE ROWS 100;
COMMENT ON FUNCTION vidx_search(regclass, real[], integer) IS 'k nearest rows of each query (one per row of a 2-D real[]) through a vidx index: query number (from 1), heap TID (join on ctid), distance; same settings and visibility as ORDER BY ... LIMIT k';

CREATE FUNCTION vidx_prewarm(index regclass, OUT index_pages bigint, OUT sidecar_bytes bigint)
	AS 'MODULE_PATHNAME' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION vidx_prewarm(regclass) IS 'reads a vidx index into shared buffers and its sidecar file into the page cache; returns the pages and bytes read';
