-- 02_filtered: filtered queries (WHERE ... ORDER BY embedding <-> q LIMIT 10)
-- return a full LIMIT whenever at least 10 rows match: the scan goes on to
-- further leaves until the executor has its rows. In strict order (the
-- default) a matching row found after a farther one was returned is skipped,
-- which at vidx.probes = 1 costs a few scans a row; relaxed_order returns it
-- (out of order) and so always fills the LIMIT.
--
-- Filters on the Fashion-MNIST subset (labels are 10 classes of ~10% each,
-- correlated with the vectors, so a filter on another class than the query's
-- is the hard case):
--   ~10%:   label = c
--   ~1%:    label = c AND id % 10 = c
--   10 rows exactly: id % (rows / 10) = c
\set schema vidx_t02
\ir ../pgtap_setup.sql

SELECT * FROM no_plan();

CREATE TABLE items (id bigint PRIMARY KEY, label int NOT NULL, embedding real[]);
CREATE TABLE queries (id bigint PRIMARY KEY, label int NOT NULL, embedding real[]);
\copy items FROM PROGRAM 'head -n 10000 "${VIDX_TESTDATA:-build/testdata}/fmnist_train.tsv"'
\copy queries FROM PROGRAM 'head -n 20 "${VIDX_TESTDATA:-build/testdata}/fmnist_query.tsv"'
VACUUM ANALYZE items;
ANALYZE queries;
SELECT is((SELECT count(*) FROM items), 10000::bigint, '10000 train rows loaded');

CREATE INDEX items_vidx ON items USING vidx (embedding vidx_l2_ops);
SELECT ok(vidx_verify('items_vidx'), 'index built and healthy');

-- Number of (query, filter value) pairs whose filtered index scan returned fewer
-- than min(10, matching rows) rows. filter is a boolean expression on t.* with
-- %1$s standing for the filter value c (0..9).
CREATE FUNCTION short_results(filter text, probes int DEFAULT 10, mode text DEFAULT 'strict_order')
RETURNS TABLE (short bigint, pairs bigint, min_rows bigint)
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM set_config('enable_seqscan', 'off', true);
	PERFORM set_config('enable_bitmapscan', 'off', true);
	PERFORM set_config('vidx.probes', probes::text, true);
	PERFORM set_config('vidx.iterative_scan', mode, true);
	RETURN QUERY EXECUTE format($q$
		SELECT count(*) FILTER (WHERE got < least(10, matching)),
			count(*), min(got)
		FROM vidx_t02.queries q
		CROSS JOIN generate_series(0, 9) AS c
		CROSS JOIN LATERAL (
			SELECT count(*) AS got FROM (
				SELECT t.id FROM vidx_t02.items t
				WHERE %1$s
				ORDER BY t.embedding <-> q.embedding LIMIT 10) s) g
		CROSS JOIN LATERAL (
			SELECT count(*) AS matching FROM vidx_t02.items t WHERE %1$s) m
	$q$, replace(filter, '%c', 'c'));
END $$;


SET enable_seqscan = off;
SELECT matches(plan_of($$ SELECT t.id FROM items t WHERE t.label = 3
		ORDER BY t.embedding <-> (SELECT embedding FROM queries WHERE id = 1) LIMIT 10 $$),
	'Index Scan using items_vidx on items',
	'EXPLAIN: the filtered query uses the vidx index');
RESET enable_seqscan;

SELECT is((SELECT count(*) FROM items WHERE label = 0) BETWEEN 800 AND 1200, true,
	'label = c matches about 10% of the rows');
SELECT is((SELECT count(*) FROM items WHERE label = 3 AND id % 10 = 3) BETWEEN 50 AND 200, true,
	'label = c AND id % 10 = c matches about 1% of the rows');

-- Defaults (vidx.probes = 10, strict order).
SELECT is(short, 0::bigint, format('~10%% filter (label = c): all %s scans return 10 rows (min %s)',
		pairs, min_rows))
FROM short_results('t.label = %c');
SELECT is(short, 0::bigint, format('~1%% filter (label = c AND id %% 10 = c): all %s scans return 10 rows (min %s)',
		pairs, min_rows))
FROM short_results('t.label = %c AND t.id % 10 = %c');
SELECT is(short, 0::bigint, format('0.1%% filter (exactly 10 matching rows): all %s scans return 10 rows (min %s)',
		pairs, min_rows))
FROM short_results('t.id % 1000 = %c');
SELECT is(short, 0::bigint, format('filter matching 5 rows: all %s scans return all 5 rows (min %s)',
		pairs, min_rows))
FROM short_results('t.id % 2000 = %c');

-- vidx.probes = 1, relaxed order: no row found is ever skipped.
SELECT is(short, 0::bigint, format('~10%% filter, probes = 1, relaxed_order: all %s scans return 10 rows (min %s)',
		pairs, min_rows))
FROM short_results('t.label = %c', 1, 'relaxed_order');
SELECT is(short, 0::bigint, format('0.1%% filter, probes = 1, relaxed_order: all %s scans return 10 rows (min %s)',
		pairs, min_rows))
FROM short_results('t.id % 1000 = %c', 1, 'relaxed_order');
SELECT is(short, 0::bigint, format('5 matching rows, probes = 1, relaxed_order: all %s scans return all 5 (min %s)',
		pairs, min_rows))
FROM short_results('t.id % 2000 = %c', 1, 'relaxed_order');

-- vidx.probes = 1, strict order: most scans still fill the LIMIT.
SELECT is(short, 0::bigint, format('~1%% filter, probes = 1: all %s scans return 10 rows (min %s)',
		pairs, min_rows))
FROM short_results('t.label = %c AND t.id % 10 = %c', 1);
SELECT cmp_ok(short, '<=', pairs / 8, format('0.1%% filter, probes = 1: at most 1 in 8 of %s scans is short (%s are)',
		pairs, short))
FROM short_results('t.id % 1000 = %c', 1);
SELECT cmp_ok(short, '<=', pairs / 8, format('5 matching rows, probes = 1: at most 1 in 8 of %s scans is short (%s are)',
		pairs, short))
FROM short_results('t.id % 2000 = %c', 1);

-- The filtered results are the right ones: with all leaves probed they equal
-- exact search (for a few queries and classes).
SET enable_seqscan = off;
SET vidx.probes = 1000000;
CREATE TABLE idx_res AS
SELECT q.id AS qid, c, array_agg(a.id ORDER BY a.ord) AS ids
FROM queries q CROSS JOIN generate_series(0, 9, 3) c CROSS JOIN LATERAL (
	SELECT t.id, row_number() OVER () AS ord FROM (
		SELECT t.id FROM items t WHERE t.label = c
		ORDER BY t.embedding <-> q.embedding LIMIT 10) t) a
WHERE q.id <= 5
GROUP BY q.id, c;
RESET vidx.probes;
RESET enable_seqscan;
SET enable_indexscan = off;
SET enable_bitmapscan = off;
CREATE TABLE exact_res AS
SELECT q.id AS qid, c, array_agg(a.id ORDER BY a.ord) AS ids
FROM queries q CROSS JOIN generate_series(0, 9, 3) c CROSS JOIN LATERAL (
	SELECT t.id, row_number() OVER () AS ord FROM (
		SELECT t.id FROM items t WHERE t.label = c
		ORDER BY t.embedding <-> q.embedding, t.id LIMIT 10) t) a
WHERE q.id <= 5
GROUP BY q.id, c;
RESET enable_indexscan;
RESET enable_bitmapscan;
SELECT cmp_ok((SELECT sum(h.hits)::float8 / (10 * count(*))
		FROM idx_res i JOIN exact_res e USING (qid, c),
			LATERAL (SELECT count(*) AS hits FROM unnest(i.ids) x WHERE x = ANY (e.ids)) h),
	'>=', 0.95::float8, 'filtered recall@10 with all leaves probed >= 0.95');

SELECT * FROM finish();
RESET search_path;
DROP SCHEMA vidx_t02 CASCADE;
