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
-- With by_distance, the two top-10s are compared by their distances (to 5
-- significant digits) instead of their ids: for tables with copies of one
-- vector, whose ties the index may return in any order.
-- The caller sets the settings that make the index exact (every leaf read).
CREATE FUNCTION index_mismatches(tbl text, op text, by_distance boolean DEFAULT false)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE q record; got text[]; want text[]; bad bigint := 0; col text;
BEGIN
	col := CASE WHEN by_distance THEN format('to_char(v %s $1, ''9.9999EEEE'')', op) ELSE 'id::text' END;
	FOR q IN SELECT id, v FROM queries ORDER BY id LOOP
		SET LOCAL enable_seqscan = on;
		SET LOCAL enable_indexscan = off;
		EXECUTE format('SELECT array_agg(d) FROM (SELECT %s AS d FROM %I ORDER BY v %s $1, id LIMIT 10) s', col, tbl, op)
			INTO want USING q.v;
		SET LOCAL enable_seqscan = off;
		SET LOCAL enable_indexscan = on;
		EXECUTE format('SELECT array_agg(d) FROM (SELECT %s AS d FROM %I ORDER BY v %s $1 LIMIT 10) s', col, tbl, op)
			INTO got USING q.v;
		IF got IS DISTINCT FROM want THEN
			bad := bad + 1;
		END IF;
	END LOOP;
	RETURN bad;
END $$;
