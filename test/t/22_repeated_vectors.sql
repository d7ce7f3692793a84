-- 22: copies of one vector in an index that grows by splits. k-means cannot
-- part copies (nor, under cosine, multiples of one vector), so a leaf of
-- them stays over twice its target size whatever a split does. The split is
-- refused (nothing published) and the chain marked; inserts try again only
-- once it has doubled, and other leaves' splits leave it out. Without that,
-- every insert into the leaf split it: 5,000 copies made thousands of splits
-- and pages. Each table here is grown from an index created empty; the index
-- must stay small, answer exactly at full probes and pass vidx_verify.
\set schema vidx_t22
\ir ../pgtap_setup.sql

SELECT plan(25);

SELECT setseed(0.2222);
CREATE TABLE base AS
  SELECT array_agg((random() * 2 - 1)::real ORDER BY j) AS v FROM generate_series(1, 16) j;
-- 8 Gaussian clusters of 16 dimensions, the first centred on the copied vector
CREATE TABLE centres AS
  SELECT 0 AS c, v FROM base
  UNION ALL
  SELECT c, array_agg((3 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))::real ORDER BY j)
  FROM generate_series(1, 7) c, generate_series(1, 16) j GROUP BY c;
CREATE FUNCTION cluster_row(i int) RETURNS real[] LANGUAGE sql AS $$
  SELECT array_agg(c.v[j] + (0.3 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))::real ORDER BY j)
  FROM centres c, generate_series(1, 16) j WHERE c.c = i % 8 $$;
CREATE TABLE queries AS
  SELECT q AS id, cluster_row(q) AS v FROM generate_series(1, 15) q
  UNION ALL SELECT 16, v FROM base;

CREATE FUNCTION stat(idx text, key text) RETURNS bigint LANGUAGE sql AS $$
  SELECT (vidx_stats(idx::regclass)->>key)::bigint $$;
CREATE FUNCTION shape(idx text) RETURNS text LANGUAGE sql AS $$
  SELECT format('%s: %s splits, %s leaves, %s pages, %s unsplittable', idx, s->>'splits', s->>'leaves',
                s->>'pages', s->>'unsplittable_leaves')
  FROM vidx_stats(idx::regclass) s $$;

-- Every leaf read in the checks of exact answers.
SET vidx.probes = 100000;

-- A. 5,000 copies of one vector, one insert at a time
CREATE TABLE a (id int PRIMARY KEY, v real[]) WITH (autovacuum_enabled = off);
CREATE INDEX a_v ON a USING vidx (v);
INSERT INTO a SELECT i, (SELECT v FROM base) FROM generate_series(1, 5000) i;
SELECT diag(shape('a_v'));
SELECT is(stat('a_v', 'splits'), 0::bigint, 'A: 5,000 copies of one vector: no split published');
SELECT cmp_ok(stat('a_v', 'pages'), '<=', 60::bigint, 'A: ... the index stays small (pages)');
SELECT is(stat('a_v', 'unsplittable_leaves'), 1::bigint, 'A: ... its leaf is marked unsplittable');
SELECT is((SELECT count(DISTINCT id) FROM (SELECT id FROM a ORDER BY v <-> (SELECT v FROM base) LIMIT 6000) s),
          5000::bigint, 'A: ... a scan over every leaf finds every copy once');
SELECT ok(vidx_verify('a_v'), 'A: vidx_verify');

-- B. 2,000 copies among 4,000 rows: the other rows are split off the copies
CREATE TABLE b (id int PRIMARY KEY, v real[]) WITH (autovacuum_enabled = off);
CREATE INDEX b_v ON b USING vidx (v);
INSERT INTO b SELECT i, CASE WHEN i % 2 = 0 THEN (SELECT v FROM base) ELSE cluster_row(i) END
  FROM generate_series(1, 4000) i;
SELECT diag(shape('b_v'));
SELECT cmp_ok(stat('b_v', 'splits'), '<=', 60::bigint, 'B: 2,000 copies among 4,000 rows: few splits');
SELECT cmp_ok(stat('b_v', 'pages'), '<=', 400::bigint, 'B: ... and pages');
SELECT cmp_ok(stat('b_v', 'leaves'), '>=', 4::bigint, 'B: ... the other rows have leaves of their own');
SELECT cmp_ok(stat('b_v', 'unsplittable_leaves'), '>=', 1::bigint, 'B: ... the copies'' leaf is marked');
SELECT is(index_mismatches('b', '<->', true), 0::bigint, 'B: every leaf read: the exact answer');
SELECT ok(vidx_verify('b_v'), 'B: vidx_verify');

-- C. cosine: 3,000 multiples of one vector (equal after normalization)
CREATE TABLE c (id int PRIMARY KEY, v real[]) WITH (autovacuum_enabled = off);
CREATE INDEX c_v ON c USING vidx (v vidx_cosine_ops);
INSERT INTO c SELECT i, (SELECT array_agg(x * (1 + i / 100.0)::real) FROM unnest((SELECT v FROM base)) x)
  FROM generate_series(1, 3000) i;
SELECT diag(shape('c_v'));
SELECT cmp_ok(stat('c_v', 'splits'), '<=', 20::bigint, 'C: 3,000 multiples of one vector under cosine: few splits');
SELECT cmp_ok(stat('c_v', 'pages'), '<=', 80::bigint, 'C: ... and pages');
SELECT is((SELECT count(DISTINCT id) FROM (SELECT id FROM c ORDER BY v <=> (SELECT v FROM base) LIMIT 4000) s),
          3000::bigint, 'C: ... a scan over every leaf finds every row once');
SELECT ok(vidx_verify('c_v'), 'C: vidx_verify');

-- D. VACUUM takes the mark off a chain that shrank below its size when
-- marked; then rows that can be parted split the leaf again
DELETE FROM a WHERE id > 100;
VACUUM a;
SELECT is(stat('a_v', 'unsplittable_leaves'), 0::bigint, 'D: VACUUM after deleting most copies: no leaf marked');
INSERT INTO a SELECT 10000 + i, cluster_row(i) FROM generate_series(1, 3000) i;
SELECT diag(shape('a_v'));
SELECT cmp_ok(stat('a_v', 'splits'), '>', 0::bigint, 'D: ... 3,000 clustered rows split it again');
SELECT cmp_ok(stat('a_v', 'leaves'), '>=', 8::bigint, 'D: ... into leaves of their own');
SELECT is(index_mismatches('a', '<->', true), 0::bigint, 'D: every leaf read: the exact answer');

-- E. a marked leaf beside a growing cluster: the cluster's splits leave it
-- out of their re-clustering, so its chain is not written again each time
CREATE TABLE e (id int PRIMARY KEY, v real[]) WITH (autovacuum_enabled = off);
CREATE INDEX e_v ON e USING vidx (v);
INSERT INTO e SELECT i, cluster_row(i) FROM generate_series(1, 800) i;
INSERT INTO e SELECT 10000 + i, (SELECT v FROM base) FROM generate_series(1, 5000) i;
SELECT diag(shape('e_v'));
SELECT is(stat('e_v', 'unsplittable_leaves'), 1::bigint, 'E: 5,000 copies beside 800 clustered rows: one leaf marked');
CREATE TABLE e_before AS SELECT stat('e_v', 'pages') AS pages, stat('e_v', 'splits') AS splits;
INSERT INTO e SELECT 20000 + i, cluster_row(i * 8 + 1) FROM generate_series(1, 2000) i;
SELECT diag(shape('e_v'));
SELECT cmp_ok(stat('e_v', 'splits'), '>', (SELECT splits FROM e_before), 'E: ... 2,000 rows of the next cluster split their leaves');
SELECT cmp_ok(stat('e_v', 'pages') - (SELECT pages FROM e_before), '<=', 120::bigint,
              'E: ... and add few pages (the copies'' chain is not rewritten)');
SELECT is(stat('e_v', 'unsplittable_leaves'), 1::bigint, 'E: ... the copies'' leaf is still marked');
SELECT is(index_mismatches('e', '<->', true), 0::bigint, 'E: every leaf read: the exact answer');
SELECT ok(vidx_verify('e_v'), 'E: vidx_verify');

SELECT * FROM finish();
DROP SCHEMA :"schema" CASCADE;
