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
