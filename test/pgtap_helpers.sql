-- Helpers shared by the pgTAP files in test/t (included by pgtap_setup.sql after
-- it has set the file's search_path, so they land in that file's schema).

-- The EXPLAIN (COSTS OFF) text of a query, for matches().
CREATE FUNCTION plan_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	line text;
	result text := '';
BEGIN
	FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || sql LOOP
		result := result || line || E'\n';
	END LOOP;
	RETURN result;
END $$;

-- Queries (rows of the file's table "queries": id, v) whose top-10 from the
-- index on tbl.v differs from the exact top-10 (ties by id), for operator op.
-- The caller sets the settings that make the index exact (every leaf read).
CREATE FUNCTION index_mismatches(tbl text, op text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE q record; got bigint[]; want bigint[]; bad bigint := 0;
BEGIN
	FOR q IN SELECT id, v FROM queries ORDER BY id LOOP
		SET LOCAL enable_seqscan = on;
		SET LOCAL enable_indexscan = off;
		EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM %I ORDER BY v %s $1, id LIMIT 10) s', tbl, op)
			INTO want USING q.v;
		SET LOCAL enable_seqscan = off;
		SET LOCAL enable_indexscan = on;
		EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM %I ORDER BY v %s $1 LIMIT 10) s', tbl, op)
			INTO got USING q.v;
		IF got IS DISTINCT FROM want THEN
			bad := bad + 1;
		END IF;
	END LOOP;
	RETURN bad;
END $$;
