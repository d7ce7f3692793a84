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

-- Seeded Gaussian test data (the caller calls setseed first). The queries are
-- built as text with the numbers in them, so each plans (and draws its
-- random() values in the same order) as the SQL the files wrote out before.
-- n centres c = 0 .. n-1 of dims coordinates, each scale x N(0, 1) (Box-Muller).
CREATE FUNCTION gaussian_centres(n int, dims int, scale float8 DEFAULT 1)
RETURNS TABLE (c int, v real[]) LANGUAGE plpgsql AS $$
BEGIN
	RETURN QUERY EXECUTE format(
		'SELECT c, array_agg((%s * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))::real ORDER BY j) AS v '
		'FROM generate_series(0, %s) c, generate_series(1, %s) j GROUP BY c', scale, n - 1, dims);
END $$;

-- Rows id = 1 .. n around the centres of the table centres (c, v): row i is
-- centre (i x stride) mod (number of centres), plus noise x N(0, 1) in each
-- coordinate.
CREATE FUNCTION gaussian_rows(centres regclass, n int, stride int, noise float8 DEFAULT 1)
RETURNS TABLE (id int, v real[]) LANGUAGE plpgsql AS $$
DECLARE ncentres int; dims int;
BEGIN
	EXECUTE format('SELECT count(*), max(array_length(v, 1)) FROM %s', centres) INTO ncentres, dims;
	RETURN QUERY EXECUTE format(
		'SELECT i AS id, array_agg(c.v[j] + (%s * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))::real ORDER BY j) AS v '
		'FROM generate_series(1, %s) i JOIN %s c ON c.c = (i * %s) %% %s, generate_series(1, %s) j GROUP BY i',
		noise, n, centres, stride, ncentres, dims);
END $$;
