-- 07: with every leaf probed and an unlimited re-scoring budget, the index
-- returns exactly the rows of an exact search, in order, for each metric, on
-- clustered data of 128 dimensions with large norms (where a too-tight error
-- bound on the codes once let true neighbours slip).
\set schema vidx_t07
\ir ../pgtap_setup.sql

SELECT plan(6);

-- 64 centres (scale 2) plus unit Gaussian noise, seeded.
SELECT setseed(0.1234);
CREATE TABLE centres AS SELECT * FROM gaussian_centres(64, 128, 2);
CREATE TABLE items AS SELECT * FROM gaussian_rows('centres', 6000, 1);
CREATE TABLE queries AS SELECT * FROM gaussian_rows('centres', 30, 7);

CREATE INDEX items_l2 ON items USING vidx (v vidx_l2_ops);
CREATE INDEX items_ip ON items USING vidx (v vidx_ip_ops);
CREATE INDEX items_cos ON items USING vidx (v vidx_cosine_ops);

SET vidx.probes = 1000000;
SET vidx.rerank = 1000000;

SELECT is(index_mismatches('items', '<->'), 0::bigint, 'L2: index top-10 equals exact top-10 for 30 queries');
SELECT is(index_mismatches('items', '<#>'), 0::bigint, 'inner product: index top-10 equals exact top-10 for 30 queries');
SELECT is(index_mismatches('items', '<=>'), 0::bigint, 'cosine: index top-10 equals exact top-10 for 30 queries');
SELECT ok(vidx_verify('items_l2'), 'L2 index verifies');
SELECT ok(vidx_verify('items_ip'), 'inner-product index verifies');
SELECT ok(vidx_verify('items_cos'), 'cosine index verifies');

SELECT * FROM finish();
DROP SCHEMA vidx_t07 CASCADE;
