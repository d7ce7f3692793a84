-- 05_metrics: every operator class (L2 <->, inner product <#>, cosine <=>)
-- gives the recall of exact search by its own operator, on a Fashion-MNIST
-- subset (10000 rows, 50 queries), at the default settings and with every
-- leaf probed.
\set schema vidx_t05
\ir ../pgtap_setup.sql

SELECT * FROM no_plan();

CREATE TABLE items (id bigint PRIMARY KEY, label int NOT NULL, embedding real[]);
CREATE TABLE queries (id bigint PRIMARY KEY, label int NOT NULL, embedding real[]);
\copy items FROM PROGRAM 'head -n 10000 "${VIDX_TESTDATA:-build/testdata}/fmnist_train.tsv"'
\copy queries FROM PROGRAM 'head -n 50 "${VIDX_TESTDATA:-build/testdata}/fmnist_query.tsv"'
VACUUM ANALYZE items;
ANALYZE queries;

-- Exact top-10 by an operator (seq scan), as (qid, kth distance).
CREATE TABLE exact (op text, qid bigint, kth float8, PRIMARY KEY (op, qid));
CREATE FUNCTION fill_exact(op text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	PERFORM set_config('enable_indexscan', 'off', true);
	PERFORM set_config('enable_bitmapscan', 'off', true);
	EXECUTE format($q$
		INSERT INTO vidx_t05.exact
		SELECT %1$L, q.id, (SELECT max(d) FROM (SELECT t.embedding %1$s q.embedding AS d
			FROM vidx_t05.items t ORDER BY 1 LIMIT 10) s)
		FROM vidx_t05.queries q $q$, op);
	PERFORM set_config('enable_indexscan', 'on', true);
	PERFORM set_config('enable_bitmapscan', 'on', true);
END $$;

-- Tie-aware recall@10 of index scans by an operator with vidx.probes = p (NULL: default).
CREATE FUNCTION recall(op text, p int) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
	r float8;
BEGIN
	IF p IS NOT NULL THEN
		PERFORM set_config('vidx.probes', p::text, true);
	END IF;
	PERFORM set_config('enable_seqscan', 'off', true);
	EXECUTE format($q$
		SELECT count(*) FILTER (WHERE a.d <= e.kth + 1e-6 * greatest(1, abs(e.kth)))::float8
			/ (10 * (SELECT count(*) FROM vidx_t05.queries))
		FROM vidx_t05.queries q
		CROSS JOIN LATERAL (SELECT t.embedding %1$s q.embedding AS d FROM vidx_t05.items t
			ORDER BY t.embedding %1$s q.embedding LIMIT 10) a
		JOIN vidx_t05.exact e ON e.op = %1$L AND e.qid = q.id $q$, op) INTO r;
	PERFORM set_config('enable_seqscan', 'on', true);
	RETURN r;
END $$;


SELECT fill_exact(op) FROM unnest(ARRAY['<->', '<#>', '<=>']) op;
SELECT is((SELECT count(*) FROM exact), 150::bigint, 'exact top-10 for 3 operators x 50 queries');

-- ------------------------------------------------------------------ L2
CREATE INDEX items_l2 ON items USING vidx (embedding vidx_l2_ops);
SELECT is(vidx_stats('items_l2')->>'metric', 'l2', 'vidx_l2_ops: metric l2');
SELECT diag('L2: recall@10 default ' || round(recall('<->', NULL)::numeric, 3) ||
	', all leaves ' || round(recall('<->', 1000000)::numeric, 3));
SELECT cmp_ok(recall('<->', NULL), '>=', 0.95::float8, 'L2: recall@10 >= 0.95 at default settings');
SELECT cmp_ok(recall('<->', 1000000), '>=', 0.99::float8, 'L2: recall@10 >= 0.99 with all leaves');
DROP INDEX items_l2;

-- ------------------------------------------------------------------ inner product
CREATE INDEX items_ip ON items USING vidx (embedding vidx_ip_ops);
SELECT is(vidx_stats('items_ip')->>'metric', 'inner_product', 'vidx_ip_ops: metric inner_product');
SELECT matches(plan_of(format('SELECT id FROM items ORDER BY embedding <#> %L::real[] LIMIT 10',
		(SELECT embedding FROM queries WHERE id = 1))),
	'Index Scan using items_ip', 'inner product: ORDER BY <#> uses the index');
SELECT is(plan_of(format('SELECT id FROM items ORDER BY embedding <-> %L::real[] LIMIT 10',
		(SELECT embedding FROM queries WHERE id = 1))) ~ 'items_ip', false,
	'inner product index: ORDER BY <-> does not use it');
SELECT diag('IP: recall@10 default ' || round(recall('<#>', NULL)::numeric, 3) ||
	', all leaves ' || round(recall('<#>', 1000000)::numeric, 3));
SELECT cmp_ok(recall('<#>', NULL), '>=', 0.90::float8, 'inner product: recall@10 >= 0.90 at default settings');
SELECT cmp_ok(recall('<#>', 1000000), '>=', 0.99::float8, 'inner product: recall@10 >= 0.99 with all leaves');
DROP INDEX items_ip;

-- ------------------------------------------------------------------ cosine
CREATE INDEX items_cos ON items USING vidx (embedding vidx_cosine_ops);
SELECT is(vidx_stats('items_cos')->>'metric', 'cosine', 'vidx_cosine_ops: metric cosine');
SELECT matches(plan_of(format('SELECT id FROM items ORDER BY embedding <=> %L::real[] LIMIT 10',
		(SELECT embedding FROM queries WHERE id = 1))),
	'Index Scan using items_cos', 'cosine: ORDER BY <=> uses the index');
SELECT diag('cosine: recall@10 default ' || round(recall('<=>', NULL)::numeric, 3) ||
	', all leaves ' || round(recall('<=>', 1000000)::numeric, 3));
SELECT cmp_ok(recall('<=>', NULL), '>=', 0.95::float8, 'cosine: recall@10 >= 0.95 at default settings');
SELECT cmp_ok(recall('<=>', 1000000), '>=', 0.99::float8, 'cosine: recall@10 >= 0.99 with all leaves');
DROP INDEX items_cos;

-- ------------------------------------------------------------------ inserts after the build
-- Build on half the rows, insert the rest: recall holds (L2).
CREATE TABLE half (id bigint PRIMARY KEY, embedding real[]);
INSERT INTO half SELECT id, embedding FROM items WHERE id <= 5000;
CREATE INDEX half_l2 ON half USING vidx (embedding);
INSERT INTO half SELECT id, embedding FROM items WHERE id > 5000;
VACUUM ANALYZE half;
SELECT ok(vidx_verify('half_l2'), 'inserts: vidx_verify is true after 5000 inserts');
SET enable_seqscan = off;
SET vidx.probes = 1000000;
SELECT cmp_ok((SELECT count(*) FILTER (WHERE a.d <= e.kth + 1e-6 * greatest(1, e.kth))::float8 / 500
		FROM queries q
		CROSS JOIN LATERAL (SELECT t.embedding <-> q.embedding AS d FROM half t
			ORDER BY t.embedding <-> q.embedding LIMIT 10) a
		JOIN exact e ON e.op = '<->' AND e.qid = q.id), '>=', 0.99::float8,
	'inserts: recall@10 >= 0.99 with all leaves after inserting half the rows');
RESET vidx.probes;
RESET enable_seqscan;

SELECT * FROM finish();
RESET search_path;
DROP SCHEMA vidx_t05 CASCADE;
