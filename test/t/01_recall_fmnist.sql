-- 01_recall_fmnist: recall@10 of the vidx index on a Fashion-MNIST subset
-- (784 dims, L2), against exact search computed in SQL (and cross-checked
-- against numpy's ground truth from bench/fmnist.py).
--
-- Data: TSV files written by test/run_all.sh with
--   /usr/bin/python3 bench/fmnist.py export --rows 20000 --queries 100 --out build/testdata
-- in $VIDX_TESTDATA (default: build/testdata, relative to the directory pg_prove
-- runs in, the repo root).
\set schema vidx_t01
\ir ../pgtap_setup.sql

SELECT * FROM no_plan();

CREATE TABLE fmnist_train (id bigint PRIMARY KEY, label int NOT NULL, embedding real[] NOT NULL);
CREATE TABLE fmnist_query (id bigint PRIMARY KEY, label int NOT NULL, embedding real[] NOT NULL);
CREATE TABLE fmnist_gt (qid bigint, rank int, id bigint, dist float8, PRIMARY KEY (qid, rank));
\copy fmnist_train FROM PROGRAM 'cat "${VIDX_TESTDATA:-build/testdata}/fmnist_train.tsv"'
\copy fmnist_query FROM PROGRAM 'cat "${VIDX_TESTDATA:-build/testdata}/fmnist_query.tsv"'
\copy fmnist_gt FROM PROGRAM 'cat "${VIDX_TESTDATA:-build/testdata}/fmnist_gt.tsv"'
VACUUM ANALYZE fmnist_train;
ANALYZE fmnist_query;

SELECT cmp_ok((SELECT count(*) FROM fmnist_train), '>=', 10000::bigint, 'train subset loaded');
SELECT cmp_ok((SELECT count(*) FROM fmnist_query), '>=', 50::bigint, 'queries loaded');
SELECT is((SELECT min(cardinality(embedding)) || '/' || max(cardinality(embedding)) FROM fmnist_train),
	'784/784', 'all train vectors have 784 dimensions');

-- ---------------------------------------------------------------- exact top-10
-- Exact search in SQL: no index exists yet, and index scans are off anyway.
SET enable_indexscan = off;
SET enable_bitmapscan = off;
CREATE TABLE exact AS
SELECT q.id AS qid, r.rank, r.id, r.dist
FROM fmnist_query q,
	LATERAL (SELECT t.id, t.embedding <-> q.embedding AS dist,
			row_number() OVER (ORDER BY t.embedding <-> q.embedding, t.id)::int AS rank
		FROM fmnist_train t
		ORDER BY t.embedding <-> q.embedding, t.id
		LIMIT 10) r;
RESET enable_indexscan;
RESET enable_bitmapscan;

SELECT is((SELECT count(*) FROM exact), 10 * (SELECT count(*) FROM fmnist_query),
	'exact top-10 computed for every query');
-- The SQL distance operator agrees with numpy (rank by rank, so ties don't matter).
SELECT is((SELECT count(*) FROM exact e JOIN fmnist_gt g USING (qid, rank)
		WHERE abs(e.dist - g.dist) > 1e-4 * greatest(1, g.dist)),
	0::bigint, 'exact top-10 distances from <-> match numpy''s ground truth');
SELECT cmp_ok((SELECT count(*)::float8 FROM exact e JOIN fmnist_gt g USING (qid, rank) WHERE e.id = g.id)
		/ (SELECT count(*) FROM fmnist_gt), '>=', 0.99::float8,
	'exact top-10 ids from SQL match numpy''s (up to ties)');

-- ---------------------------------------------------------------- helpers

-- Recall@10 of index scans over all queries, with vidx.probes = p (NULL: the
-- default). A result counts when its exact distance is within the exact 10th
-- distance of its query (tie-aware, as in ann-benchmarks).
CREATE FUNCTION recall_at(p int) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
	r float8;
BEGIN
	IF p IS NULL THEN
		PERFORM set_config('vidx.probes', current_setting('vidx.probes'), true);
	ELSE
		PERFORM set_config('vidx.probes', p::text, true);
	END IF;
	PERFORM set_config('enable_seqscan', 'off', true);
	EXECUTE $q$
		SELECT count(*) FILTER (WHERE a.dist <= k.kth * (1 + 1e-9))::float8
			/ (10 * (SELECT count(*) FROM vidx_t01.fmnist_query))
		FROM vidx_t01.fmnist_query q
		CROSS JOIN LATERAL (
			SELECT t.id, t.embedding <-> q.embedding AS dist
			FROM vidx_t01.fmnist_train t
			ORDER BY t.embedding <-> q.embedding LIMIT 10) a
		JOIN (SELECT qid, max(dist) AS kth FROM vidx_t01.exact GROUP BY qid) k ON k.qid = q.id
	$q$ INTO r;
	PERFORM set_config('enable_seqscan', 'on', true);
	RETURN r;
END $$;


-- ---------------------------------------------------------------- the index
SELECT lives_ok($$ CREATE INDEX fmnist_train_vidx ON vidx_t01.fmnist_train USING vidx (embedding) $$,
	'CREATE INDEX with default settings');
SELECT is((SELECT amname::text FROM pg_class c JOIN pg_am a ON a.oid = c.relam
		WHERE c.oid = 'fmnist_train_vidx'::regclass), 'vidx', 'the index uses the vidx access method');
SELECT ok(vidx_verify('fmnist_train_vidx'), 'vidx_verify says the new index is healthy');
SELECT is((SELECT format('%s postings, sidecar %s', s->>'postings', s->'sidecar'->>'state')
		FROM vidx_stats('fmnist_train_vidx') s),
	format('%s postings, sidecar ok', (SELECT count(*) FROM fmnist_train)),
	'vidx_stats: a posting for every row, and the sidecar is ok');
SELECT diag('vidx_stats: ' || vidx_stats('fmnist_train_vidx')::text);

-- EXPLAIN with the default planner settings: the planner picks the index.
SELECT matches(plan_of(format('SELECT id FROM fmnist_train ORDER BY embedding <-> %L::real[] LIMIT 10',
		(SELECT embedding FROM fmnist_query WHERE id = 1))),
	'Index Scan using fmnist_train_vidx on fmnist_train',
	'EXPLAIN: ORDER BY <-> LIMIT 10 uses an Index Scan on the vidx index (default planner settings)');
SELECT matches(plan_of(format('SELECT id FROM fmnist_train ORDER BY embedding <-> %L::float8[] LIMIT 10',
		(SELECT embedding FROM fmnist_query WHERE id = 1))),
	'Index Scan using fmnist_train_vidx on fmnist_train',
	'EXPLAIN: a double precision[] query also uses the index');
SET enable_seqscan = off;
SELECT matches(plan_of($$ SELECT q.id, a.id FROM fmnist_query q CROSS JOIN LATERAL
		(SELECT t.id FROM fmnist_train t ORDER BY t.embedding <-> q.embedding LIMIT 10) a $$),
	'Index Scan using fmnist_train_vidx on fmnist_train',
	'EXPLAIN: the recall query (LATERAL) uses the vidx index');
RESET enable_seqscan;

-- ---------------------------------------------------------------- recall
CREATE TABLE recall_sweep (probes int PRIMARY KEY, recall float8);
INSERT INTO recall_sweep
SELECT p, recall_at(p)
FROM unnest(ARRAY[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1000000]) AS p;
SELECT diag('recall@10 by vidx.probes: ' ||
	string_agg(format('%s=%s', CASE WHEN probes = 1000000 THEN 'all' ELSE probes::text END,
		round(recall::numeric, 3)), ', ' ORDER BY probes))
FROM recall_sweep;

SELECT cmp_ok(recall_at(NULL), '>=', 0.95::float8, 'recall@10 >= 0.95 at the default settings');
SELECT is(current_setting('vidx.probes'), '10', 'vidx.probes default is 10');
SELECT is((SELECT count(*) FROM (SELECT probes, recall,
			lag(recall) OVER (ORDER BY probes) AS prev FROM recall_sweep) s
		WHERE recall < prev),
	0::bigint, 'recall@10 never decreases as vidx.probes grows');
SELECT cmp_ok((SELECT recall FROM recall_sweep WHERE probes = 1000000), '>',
	(SELECT recall FROM recall_sweep WHERE probes = 1),
	'recall@10 with all leaves probed is higher than with probes = 1');
SELECT cmp_ok((SELECT recall FROM recall_sweep WHERE probes = 1000000), '>=', 0.99::float8,
	'recall@10 >= 0.99 with all leaves probed');
SELECT cmp_ok(recall_at(1), '=', (SELECT recall FROM recall_sweep WHERE probes = 1),
	'recall is deterministic (probes = 1 twice)');

-- Order: each query's index results come in ascending exact distance.
SET enable_seqscan = off;
SELECT is((SELECT count(*) FROM (
		SELECT a.dist < lag(a.dist) OVER (PARTITION BY q.id ORDER BY a.ord) AS out_of_order
		FROM fmnist_query q CROSS JOIN LATERAL (
			SELECT t.embedding <-> q.embedding AS dist, row_number() OVER () AS ord
			FROM (SELECT embedding FROM fmnist_train t2
				ORDER BY t2.embedding <-> q.embedding LIMIT 10) t) a) s
		WHERE out_of_order),
	0::bigint, 'index scan returns rows in ascending distance');
RESET enable_seqscan;

-- A larger LIMIT than vidx.rerank still returns full, ordered results.
SET enable_seqscan = off;
SET vidx.rerank = 20;
SELECT is((SELECT count(*) FROM (SELECT id FROM fmnist_train
		ORDER BY embedding <-> (SELECT embedding FROM fmnist_query WHERE id = 1) LIMIT 200) s),
	200::bigint, 'LIMIT 200 with vidx.rerank = 20 returns 200 rows');
RESET vidx.rerank;
RESET enable_seqscan;

SELECT * FROM finish();
RESET search_path;
DROP SCHEMA vidx_t01 CASCADE;
