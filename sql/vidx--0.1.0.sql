-- vidx 0.1.0: distance operators on real[] and the vidx index access method.
\echo Use "CREATE EXTENSION vidx" to load this file. \quit

-- Every reference below is schema-qualified (@extschema@ for the extension's
-- own objects, pg_catalog for built-in types and operator families), so that
-- nothing that a role could create in another schema, or in pg_temp, is picked
-- up while the script runs. (real, double precision, numeric and boolean are
-- keywords that always mean the pg_catalog types.)

-- Distance functions. The left operand is the stored vector (real[]); the right
-- one, the query, may also be double precision[] or numeric[] (what client
-- libraries send for a list of floats). Every function rejects NULL elements,
-- NaN and infinity, empty and multi-dimensional arrays, more than 16000
-- dimensions and mismatched dimensions; cosine distance rejects zero vectors.
CREATE FUNCTION @extschema@.vidx_l2_distance(real[], real[]) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'vidx_l2_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.vidx_l2_distance(real[], double precision[]) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'vidx_l2_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.vidx_l2_distance(real[], numeric[]) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'vidx_l2_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@.vidx_negative_inner_product(real[], real[]) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'vidx_negative_inner_product' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.vidx_negative_inner_product(real[], double precision[]) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'vidx_negative_inner_product' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.vidx_negative_inner_product(real[], numeric[]) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'vidx_negative_inner_product' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION @extschema@.vidx_cosine_distance(real[], real[]) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'vidx_cosine_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.vidx_cosine_distance(real[], double precision[]) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'vidx_cosine_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.vidx_cosine_distance(real[], numeric[]) RETURNS pg_catalog.float8
	AS 'MODULE_PATHNAME', 'vidx_cosine_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR @extschema@.<-> (LEFTARG = real[], RIGHTARG = real[],
	FUNCTION = @extschema@.vidx_l2_distance, COMMUTATOR = OPERATOR(@extschema@.<->));
CREATE OPERATOR @extschema@.<-> (LEFTARG = real[], RIGHTARG = double precision[],
	FUNCTION = @extschema@.vidx_l2_distance);
CREATE OPERATOR @extschema@.<-> (LEFTARG = real[], RIGHTARG = numeric[],
	FUNCTION = @extschema@.vidx_l2_distance);

CREATE OPERATOR @extschema@.<#> (LEFTARG = real[], RIGHTARG = real[],
	FUNCTION = @extschema@.vidx_negative_inner_product, COMMUTATOR = OPERATOR(@extschema@.<#>));
CREATE OPERATOR @extschema@.<#> (LEFTARG = real[], RIGHTARG = double precision[],
	FUNCTION = @extschema@.vidx_negative_inner_product);
CREATE OPERATOR @extschema@.<#> (LEFTARG = real[], RIGHTARG = numeric[],
	FUNCTION = @extschema@.vidx_negative_inner_product);

CREATE OPERATOR @extschema@.<=> (LEFTARG = real[], RIGHTARG = real[],
	FUNCTION = @extschema@.vidx_cosine_distance, COMMUTATOR = OPERATOR(@extschema@.<=>));
CREATE OPERATOR @extschema@.<=> (LEFTARG = real[], RIGHTARG = double precision[],
	FUNCTION = @extschema@.vidx_cosine_distance);
CREATE OPERATOR @extschema@.<=> (LEFTARG = real[], RIGHTARG = numeric[],
	FUNCTION = @extschema@.vidx_cosine_distance);

-- The access method.
CREATE FUNCTION @extschema@.vidx_handler(pg_catalog.internal) RETURNS pg_catalog.index_am_handler
	AS 'MODULE_PATHNAME' LANGUAGE C;
CREATE ACCESS METHOD vidx TYPE INDEX HANDLER @extschema@.vidx_handler;
COMMENT ON ACCESS METHOD vidx IS 'vidx: hierarchical k-means tree with RaBitQ codes for approximate nearest-neighbour search';

-- Support function 1 of each operator class tells the index its metric.
CREATE FUNCTION @extschema@.vidx_l2_support(pg_catalog.internal) RETURNS pg_catalog.internal
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.vidx_ip_support(pg_catalog.internal) RETURNS pg_catalog.internal
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.vidx_cosine_support(pg_catalog.internal) RETURNS pg_catalog.internal
	AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR CLASS @extschema@.vidx_l2_ops DEFAULT FOR TYPE real[] USING vidx AS
	OPERATOR 1 @extschema@.<-> (real[], real[]) FOR ORDER BY pg_catalog.float_ops,
	OPERATOR 1 @extschema@.<-> (real[], double precision[]) FOR ORDER BY pg_catalog.float_ops,
	OPERATOR 1 @extschema@.<-> (real[], numeric[]) FOR ORDER BY pg_catalog.float_ops,
	FUNCTION 1 @extschema@.vidx_l2_support(pg_catalog.internal);

CREATE OPERATOR CLASS @extschema@.vidx_ip_ops FOR TYPE real[] USING vidx AS
	OPERATOR 1 @extschema@.<#> (real[], real[]) FOR ORDER BY pg_catalog.float_ops,
	OPERATOR 1 @extschema@.<#> (real[], double precision[]) FOR ORDER BY pg_catalog.float_ops,
	OPERATOR 1 @extschema@.<#> (real[], numeric[]) FOR ORDER BY pg_catalog.float_ops,
	FUNCTION 1 @extschema@.vidx_ip_support(pg_catalog.internal);

CREATE OPERATOR CLASS @extschema@.vidx_cosine_ops FOR TYPE real[] USING vidx AS
	OPERATOR 1 @extschema@.<=> (real[], real[]) FOR ORDER BY pg_catalog.float_ops,
	OPERATOR 1 @extschema@.<=> (real[], double precision[]) FOR ORDER BY pg_catalog.float_ops,
	OPERATOR 1 @extschema@.<=> (real[], numeric[]) FOR ORDER BY pg_catalog.float_ops,
	FUNCTION 1 @extschema@.vidx_cosine_support(pg_catalog.internal);

-- Maintenance and introspection.
CREATE FUNCTION @extschema@.vidx_stats(index pg_catalog.regclass) RETURNS pg_catalog.jsonb
	AS 'MODULE_PATHNAME' LANGUAGE C STRICT;
COMMENT ON FUNCTION @extschema@.vidx_stats(pg_catalog.regclass) IS 'tree shape, leaf sizes, code bytes and sidecar state of a vidx index (its owner, pg_read_all_stats or pg_stat_scan_tables)';

CREATE FUNCTION @extschema@.vidx_verify(index pg_catalog.regclass, check_sidecar boolean DEFAULT true) RETURNS boolean
	AS 'MODULE_PATHNAME' LANGUAGE C STRICT;
COMMENT ON FUNCTION @extschema@.vidx_verify(pg_catalog.regclass, boolean) IS 'checks a vidx index (and its sidecar); raises an error describing the first inconsistency, else returns true';

-- Sidecar files ($PGDATA/vidx/) that no index uses any more are removed at the
-- commit of the DROP, REINDEX, TRUNCATE or VACUUM FULL that made them unused,
-- and otherwise by a sweep: at every vidx build, at the first use of vidx in a
-- backend, or by this function (files of dropped databases, and of indexes of
-- this database dropped or rebuilt without vidx loaded or cut short by a crash).
CREATE FUNCTION @extschema@.vidx_sweep_sidecars() RETURNS integer
	AS 'MODULE_PATHNAME' LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION @extschema@.vidx_sweep_sidecars() FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.vidx_sweep_sidecars() IS 'removes vidx sidecar files that no index uses any more (dropped databases, dropped or rebuilt indexes); returns how many; superuser only';

-- A DROP removes an index's sidecar at commit through a hook of the vidx
-- library, which a session loads only when it first uses vidx. This event
-- trigger loads it before every command that can drop a vidx index, so that
-- the hook sees the drop. If the library cannot be loaded (the package was
-- removed before DROP EXTENSION, no USAGE on the extension's schema), the
-- command still runs, and the sweep removes the file later.
CREATE FUNCTION @extschema@.vidx_load() RETURNS boolean
	AS 'MODULE_PATHNAME' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@.vidx_load() IS 'does nothing but load the vidx library (for the vidx_drop_cleanup event trigger)';

CREATE FUNCTION @extschema@.vidx_drop_cleanup() RETURNS pg_catalog.event_trigger
	LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM @extschema@.vidx_load();
EXCEPTION WHEN OTHERS THEN -- never let a failure to load vidx stop a DROP (the sweep is the backstop)
	NULL;
END
$$;
COMMENT ON FUNCTION @extschema@.vidx_drop_cleanup() IS 'event trigger: loads vidx before a command that can drop a vidx index, so that its sidecar is removed at commit';

CREATE EVENT TRIGGER vidx_drop_cleanup ON ddl_command_start
	WHEN TAG IN ('DROP INDEX', 'DROP TABLE', 'DROP MATERIALIZED VIEW', 'DROP SCHEMA',
		'DROP OWNED', 'DROP EXTENSION', 'DROP ACCESS METHOD', 'DROP OPERATOR CLASS',
		'DROP OPERATOR FAMILY', 'DROP OPERATOR', 'DROP FUNCTION', 'DROP TYPE', 'DROP DOMAIN',
		'ALTER TABLE')
	EXECUTE FUNCTION @extschema@.vidx_drop_cleanup();
-- ... also under session_replication_role = replica (logical replication apply, restores).
ALTER EVENT TRIGGER vidx_drop_cleanup ENABLE ALWAYS;

-- Batch search: many queries in one call.
CREATE FUNCTION @extschema@.vidx_search(index pg_catalog.regclass, queries pg_catalog.float4[],
                                        k pg_catalog.int4 DEFAULT 10,
                                        OUT query pg_catalog.int4, OUT row_tid pg_catalog.tid,
                                        OUT distance pg_catalog.float8)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME' LANGUAGE C STRICT VOLATILE ROWS 100;
COMMENT ON FUNCTION @extschema@.vidx_search(pg_catalog.regclass, pg_catalog.float4[], pg_catalog.int4) IS 'k nearest rows of each query (one per row of a 2-D real[]) through a vidx index: query number (from 1), heap TID (join on ctid), distance; same settings and visibility as ORDER BY ... LIMIT k';

CREATE FUNCTION @extschema@.vidx_prewarm(index pg_catalog.regclass, OUT index_pages pg_catalog.int8,
                                         OUT sidecar_bytes pg_catalog.int8)
	AS 'MODULE_PATHNAME' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION @extschema@.vidx_prewarm(pg_catalog.regclass) IS 'reads a vidx index into shared buffers, its sidecar file into the page cache and maps it into this session; returns the pages and bytes read';

-- Recall: measured on demand, and the calibration behind vidx.target_recall.
CREATE FUNCTION @extschema@.vidx_recall(index pg_catalog.regclass, queries pg_catalog.int4 DEFAULT 100,
                                        k pg_catalog.int4 DEFAULT 10,
                                        query_vectors pg_catalog.float4[] DEFAULT NULL,
                                        OUT recall pg_catalog.float8, OUT recall_low pg_catalog.float8,
                                        OUT recall_high pg_catalog.float8, OUT nqueries pg_catalog.int4,
                                        OUT nk pg_catalog.int4, OUT mean_ms pg_catalog.float8,
                                        OUT p99_ms pg_catalog.float8, OUT exact_ms pg_catalog.float8,
                                        OUT settings pg_catalog.jsonb)
	AS 'MODULE_PATHNAME' LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.vidx_recall(pg_catalog.regclass, pg_catalog.int4, pg_catalog.int4, pg_catalog.float4[]) IS 'recall@k of a vidx index at the current settings: a seeded sample of queries rows (each excluded from its answer), or the rows of query_vectors, searched exactly (two sequential scans, queries x rows distances) and through the index; recall with its 95% interval, index scan latency, settings';

CREATE FUNCTION @extschema@.vidx_calibrate(index pg_catalog.regclass, queries pg_catalog.int4 DEFAULT NULL) RETURNS pg_catalog.int4
	AS 'MODULE_PATHNAME' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.vidx_calibrate(pg_catalog.regclass, pg_catalog.int4) IS 'measures the recall curve of a vidx index again, on queries sampled rows (10 to 2000; NULL: 200, fewer for big indexes) searched exactly (queries x rows distances); vidx.target_recall uses it; the build and VACUUM of an index that doubled measure it too; returns its points; owner only';
