-- vidx_pgvector 0.1.0: operator classes of the vidx access method for
-- pgvector's vector and halfvec types, with pgvector's own operators, so that
-- queries written for pgvector (ORDER BY embedding <-> $1 LIMIT k) use a vidx
-- index unchanged:
--
--   CREATE INDEX ON items USING vidx (embedding);                    -- L2 (<->)
--   CREATE INDEX ON items USING vidx (embedding vector_ip_ops);      -- <#>
--   CREATE INDEX ON items USING vidx (embedding vector_cosine_ops);  -- <=>
--   (halfvec columns: halfvec_l2_ops, halfvec_ip_ops, halfvec_cosine_ops)
\echo Use "CREATE EXTENSION vidx_pgvector" to load this file. \quit

-- Support function 2 of each operator class: reads a datum of the type into
-- floats for the access method (src/vidx_typeio.h). Not callable from SQL in
-- any useful way (the second argument is internal).
--
-- pgvector's and vidx's objects live in the schemas of their extensions, which
-- PostgreSQL 15 scripts cannot name statically (@extschema:name@ is 16+): they
-- are looked up here and every reference is schema-qualified, so nothing a role
-- could create in another schema, or in pg_temp, is picked up.
DO $script$
DECLARE
	vs text; -- pgvector's schema
	xs text; -- vidx's schema
	t text;
	m record;
BEGIN
	SELECT n.nspname INTO STRICT vs FROM pg_catalog.pg_extension e
		JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector';
	SELECT n.nspname INTO STRICT xs FROM pg_catalog.pg_extension e
		JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vidx';

	FOREACH t IN ARRAY ARRAY['vector', 'halfvec'] LOOP
		EXECUTE pg_catalog.format(
			'CREATE FUNCTION @extschema@.vidx_pgvector_%1$s_read(%2$I.%1$I, pg_catalog.internal) '
			'RETURNS pg_catalog.internal AS %3$L, %4$L LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE',
			t, vs, 'MODULE_PATHNAME', 'vidx_pgvector_' || t || '_read');
		EXECUTE pg_catalog.format(
			'COMMENT ON FUNCTION @extschema@.vidx_pgvector_%1$s_read(%2$I.%1$I, pg_catalog.internal) '
			'IS %3$L', t, vs,
			'vidx operator class support: reads a ' || t || ' for the vidx access method');

		FOR m IN SELECT * FROM (VALUES
				('l2', '<->', 'vidx_l2_support', ' DEFAULT'),
				('ip', '<#>', 'vidx_ip_support', ''),
				('cosine', '<=>', 'vidx_cosine_support', '')) AS v(metric, op, support, dflt) LOOP
			EXECUTE pg_catalog.format(
				'CREATE OPERATOR CLASS @extschema@.%1$s_%2$s_ops%3$s FOR TYPE %4$I.%1$I USING vidx AS '
				'OPERATOR 1 %4$I.%5$s (%4$I.%1$I, %4$I.%1$I) FOR ORDER BY pg_catalog.float_ops, '
				'FUNCTION 1 %6$I.%7$I(pg_catalog.internal), '
				'FUNCTION 2 @extschema@.vidx_pgvector_%1$s_read(%4$I.%1$I, pg_catalog.internal)',
				t, m.metric, m.dflt, vs, m.op, xs, m.support);
		END LOOP;
	END LOOP;
END
$script$;
