-- Index options: validation, multi-level trees, tiny tables.
SET client_min_messages = warning;
CREATE TABLE opt (id int, v real[]);
INSERT INTO opt SELECT i, ARRAY[sin(i), cos(i), sin(i * 0.37)]::real[] FROM generate_series(1, 3000) i;

-- Out-of-range options are rejected and leave nothing behind.
CREATE INDEX opt_bad ON opt USING vidx (v) WITH (lists = -1);
CREATE INDEX opt_bad ON opt USING vidx (v) WITH (lists = 2000000);
CREATE INDEX opt_bad ON opt USING vidx (v) WITH (fanout = 1);
CREATE INDEX opt_bad ON opt USING vidx (v) WITH (kmeans_iterations = 0);
CREATE INDEX opt_bad ON opt USING vidx (v) WITH (sample_rows = -5);
CREATE INDEX opt_bad ON opt USING vidx (v) WITH (nonsense = 3);
SELECT count(*) FROM pg_class WHERE relname = 'opt_bad';

-- A bad vector in the table fails the build with a clear error.
CREATE TABLE opt_nan (v real[]);
INSERT INTO opt_nan VALUES ('{1,2}'), ('{NaN,1}');
CREATE INDEX ON opt_nan USING vidx (v);
DROP TABLE opt_nan;

-- A small fanout makes a tree of several levels; with all leaves probed it is exact.
CREATE INDEX opt_tree ON opt USING vidx (v) WITH (lists = 100, fanout = 4, sample_rows = 2000, kmeans_iterations = 5);
SELECT (s->>'levels')::int > 1 AS multi_level, s->>'leaves' AS leaves, s->>'postings' AS postings
FROM vidx_stats('opt_tree') s;
SET enable_seqscan = off;
SET vidx.probes = 100;
SET vidx.rerank = 3000;
SELECT (SELECT array_agg(id) FROM (SELECT id FROM opt ORDER BY v <-> '{0.3,-0.2,0.5}' LIMIT 10) a)
     = (SELECT array_agg(id) FROM (SELECT id FROM opt ORDER BY (v <-> '{0.3,-0.2,0.5}') + 0, id LIMIT 10) b) AS exact;
SELECT vidx_verify('opt_tree');

-- More lists than rows: one leaf per row at most.
CREATE TABLE tiny (id int, v real[]);
INSERT INTO tiny VALUES (1, '{1,1}'), (2, '{2,2}'), (3, '{3,3}');
CREATE INDEX tiny_idx ON tiny USING vidx (v) WITH (lists = 50);
SELECT s->>'leaves' AS leaves FROM vidx_stats('tiny_idx') s;
SELECT id FROM tiny ORDER BY v <-> '{2.1,2.1}' LIMIT 3;

-- A leaf big enough to be estimated on several threads gives the same rows, in the same order.
DROP INDEX opt_tree;
CREATE INDEX opt_one ON opt USING vidx (v) WITH (lists = 1);
SELECT s->>'leaves' AS leaves, s->>'postings' AS postings FROM vidx_stats('opt_one') s;
CREATE TABLE opt_q AS SELECT j, ARRAY[sin(j * 1.3), cos(j * 0.7), sin(j)]::real[] AS q
FROM generate_series(1, 20) j;
SET vidx.rerank = 10;
CREATE TABLE opt_r1 AS SELECT j, (SELECT array_agg(id) FROM (SELECT id FROM opt ORDER BY v <-> q LIMIT 10) a) AS ids FROM opt_q;
SET vidx.scan_threads = 2;
SELECT count(*) AS queries, count(*) FILTER (WHERE r.ids = (SELECT array_agg(id) FROM (SELECT id FROM opt ORDER BY v <-> q.q LIMIT 10) a)) AS same
FROM opt_q q JOIN opt_r1 r USING (j);
RESET vidx.scan_threads;
-- The smallest tree cache (1 MB) with two indexes in one query: results stay the same.
SET vidx.tree_cache_mb = 1;
SELECT count(*) AS queries, count(*) FILTER (WHERE r.ids = (SELECT array_agg(id) FROM (SELECT id FROM opt ORDER BY v <-> q.q LIMIT 10) a)
                                            AND (SELECT id FROM tiny ORDER BY v <-> q.q[1:2] LIMIT 1) IS NOT NULL) AS same
FROM opt_q q JOIN opt_r1 r USING (j);
RESET vidx.tree_cache_mb;
DROP TABLE opt_q, opt_r1;
DROP INDEX opt_one;

-- Refinement codes: only 0, 4 and 8 bits; exact at full probes; inserts encode them too.
CREATE INDEX opt_bad ON opt USING vidx (v) WITH (refine_bits = 3);
CREATE INDEX opt_bad ON opt USING vidx (v) WITH (refine_bits = 9);
CREATE INDEX opt_r4 ON opt USING vidx (v) WITH (lists = 20, refine_bits = 4);
SELECT s->>'refine_bits' AS refine_bits, (s->>'posting_bytes')::int > (s->>'code_bytes')::int + 32 AS bigger
FROM vidx_stats('opt_r4') s;
INSERT INTO opt SELECT i, ARRAY[sin(i), cos(i), sin(i * 0.37)]::real[] FROM generate_series(3001, 3100) i;
SET vidx.probes = 20;
SET vidx.rerank = 5000;
SELECT count(*) AS queries, count(*) FILTER (WHERE (SELECT array_agg(id) FROM (SELECT id FROM opt ORDER BY v <-> q LIMIT 10) a)
                                            = (SELECT array_agg(id) FROM (SELECT id FROM opt ORDER BY (v <-> q) + 0, id LIMIT 10) b)) AS exact
FROM (SELECT ARRAY[sin(j * 1.3), cos(j * 0.7), sin(j)]::real[] AS q FROM generate_series(1, 20) j) qs;
SELECT vidx_verify('opt_r4');
DROP INDEX opt_r4;
CREATE INDEX opt_r8 ON opt USING vidx (v vidx_ip_ops) WITH (lists = 20, refine_bits = 8);
SELECT count(*) AS queries, count(*) FILTER (WHERE (SELECT array_agg(id) FROM (SELECT id FROM opt ORDER BY v <#> q LIMIT 10) a)
                                            = (SELECT array_agg(id) FROM (SELECT id FROM opt ORDER BY (v <#> q) + 0, id LIMIT 10) b)) AS exact
FROM (SELECT ARRAY[sin(j * 1.3), cos(j * 0.7), sin(j)]::real[] AS q FROM generate_series(1, 20) j) qs;
DROP INDEX opt_r8;
RESET vidx.probes;
RESET vidx.rerank;
-- 8-bit refinement codes of 8,000 dimensions do not fit a page: refused; 4-bit ones fit.
CREATE TABLE opt_wide (v real[]);
INSERT INTO opt_wide SELECT array_fill(0.5::real, ARRAY[8000]);
CREATE INDEX opt_wide_idx ON opt_wide USING vidx (v) WITH (refine_bits = 8);
CREATE INDEX opt_wide_idx ON opt_wide USING vidx (v) WITH (refine_bits = 4);
SELECT count(*) FROM pg_class WHERE relname = 'opt_wide_idx';
DROP TABLE opt_wide;

-- Settings are range-checked.
SET vidx.probes = 0;
SET vidx.rerank = -1;
SET vidx.scan_threads = 0;
SET vidx.scan_threads = 65;
SET vidx.build_threads = -1;
SET vidx.build_threads = 257;
SET vidx.max_scan_threads = 2;  -- server-wide: postgresql.conf and reload only
SET vidx.tree_cache_mb = -1;
RESET vidx.probes;
RESET vidx.rerank;
RESET enable_seqscan;
DROP TABLE opt, tiny;
