-- 04_bad_input: every bad input gets its error (checked by SQLSTATE) and
-- changes nothing; a NULL vector is accepted and simply not indexed.
--
-- SQLSTATEs: 22004 null_value_not_allowed (NULL element), 22000 data_exception
-- (NaN, infinity, empty, multi-dimensional, dimension mismatch, zero vector for
-- cosine), 22003 numeric_value_out_of_range (beyond real), 54000
-- program_limit_exceeded (> 16000 dims), 22023 invalid_parameter_value (index
-- options and settings).
\set schema vidx_t04
\ir ../pgtap_setup.sql

SELECT * FROM no_plan();

CREATE TABLE items (id bigint PRIMARY KEY, embedding real[]);
INSERT INTO items
SELECT i, ARRAY[sin(i)::real, cos(i)::real, sin(2 * i)::real]
FROM generate_series(1, 300) AS i;
INSERT INTO items VALUES (1000, NULL);    -- a NULL vector, before the build
CREATE INDEX items_l2 ON items USING vidx (embedding vidx_l2_ops) WITH (lists = 4);

-- ------------------------------------------------------------ operators
SELECT throws_ok($$ SELECT '{1,NULL,3}'::real[] <-> '{1,2,3}'::real[] $$, '22004', NULL,
	'operator: NULL element in the stored vector');
SELECT throws_ok($$ SELECT '{1,2,3}'::real[] <-> '{1,2,NULL}'::real[] $$, '22004', NULL,
	'operator: NULL element in the query vector');
SELECT throws_ok($$ SELECT '{1,NaN,3}'::real[] <-> '{1,2,3}'::real[] $$, '22000', NULL,
	'operator: NaN element');
SELECT throws_ok($$ SELECT '{1,2,3}'::real[] <#> '{1,Infinity,3}'::real[] $$, '22000', NULL,
	'operator: Infinity element');
SELECT throws_ok($$ SELECT '{1,2,3}'::real[] <=> '{1,-Infinity,3}'::float8[] $$, '22000', NULL,
	'operator: -Infinity element in a double precision[] query');
SELECT throws_ok($$ SELECT '{1,2,3}'::real[] <-> ARRAY[1, 'NaN', 3]::numeric[] $$, '22000', NULL,
	'operator: NaN element in a numeric[] query');
SELECT throws_ok($$ SELECT '{1,2,3}'::real[] <-> '{1,1e300,3}'::float8[] $$, '22003', NULL,
	'operator: double precision element beyond the range of real');
SELECT throws_ok($$ SELECT '{}'::real[] <-> '{}'::real[] $$, '22000', NULL,
	'operator: empty arrays');
SELECT throws_ok($$ SELECT '{1,2,3}'::real[] <-> '{}'::real[] $$, '22000', NULL,
	'operator: empty query array');
SELECT throws_ok($$ SELECT '{{1,2},{3,4}}'::real[] <-> '{1,2,3,4}'::real[] $$, '22000', NULL,
	'operator: two-dimensional array');
SELECT throws_ok($$ SELECT '{1,2,3}'::real[] <-> '{1,2}'::real[] $$, '22000', NULL,
	'operator: dimension mismatch');
SELECT throws_ok($$ SELECT array_fill(1::real, ARRAY[16001]) <-> array_fill(1::real, ARRAY[16001]) $$,
	'54000', NULL, 'operator: more than 16000 dimensions');
SELECT lives_ok($$ SELECT array_fill(1::real, ARRAY[16000]) <-> array_fill(1::real, ARRAY[16000]) $$,
	'operator: exactly 16000 dimensions is fine');
SELECT throws_ok($$ SELECT '{0,0,0}'::real[] <=> '{1,2,3}'::real[] $$, '22000', NULL,
	'cosine: zero stored vector');
SELECT throws_ok($$ SELECT '{1,2,3}'::real[] <=> '{0,0,0}'::real[] $$, '22000', NULL,
	'cosine: zero query vector');
SELECT is('{1,2,3}'::real[] <-> '{1,2,3}'::numeric[], 0::float8,
	'operator: numeric[] query works');
SELECT is('{0,0,0}'::real[] <-> '{3,4,0}'::float8[], 5::float8,
	'operator: double precision[] query works (L2 = 5)');
SELECT is('{1,2,3}'::real[] <-> NULL::real[], NULL::float8, 'operator: NULL vector gives NULL (STRICT)');

-- ------------------------------------------------------- INSERT into the index
SELECT throws_ok($$ INSERT INTO items VALUES (2001, '{1,NULL,3}') $$, '22004', NULL,
	'insert: NULL element');
SELECT throws_ok($$ INSERT INTO items VALUES (2002, '{1,NaN,3}') $$, '22000', NULL,
	'insert: NaN');
SELECT throws_ok($$ INSERT INTO items VALUES (2003, '{1,Infinity,3}') $$, '22000', NULL,
	'insert: Infinity');
SELECT throws_ok($$ INSERT INTO items VALUES (2004, '{}') $$, '22000', NULL,
	'insert: empty array');
SELECT throws_ok($$ INSERT INTO items VALUES (2005, '{{1,2,3},{4,5,6}}') $$, '22000', NULL,
	'insert: two-dimensional array');
SELECT throws_ok($$ INSERT INTO items VALUES (2006, '{1,2}') $$, '22000', NULL,
	'insert: 2 dimensions into a 3-dimensional index');
SELECT throws_ok($$ INSERT INTO items VALUES (2007, '{1,2,3,4}') $$, '22000', NULL,
	'insert: 4 dimensions into a 3-dimensional index');
SELECT throws_ok($$ INSERT INTO items VALUES (2008, array_fill(1::real, ARRAY[16001])) $$, '54000', NULL,
	'insert: more than 16000 dimensions');
SELECT throws_ok($$ UPDATE items SET embedding = '{1,2}' WHERE id = 1 $$, '22000', NULL,
	'update: dimension mismatch');
SELECT lives_ok($$ INSERT INTO items VALUES (1001, NULL) $$, 'insert: a NULL vector is accepted');
SELECT lives_ok($$ INSERT INTO items VALUES (1002, '{0.5,0.5,0.5}') $$, 'insert: a good vector is accepted');
SELECT is((SELECT count(*) FROM items), 303::bigint, 'failed inserts changed nothing');

-- ------------------------------------------------------------ queries on the index
SET enable_seqscan = off;
SELECT throws_ok($$ SELECT id FROM items ORDER BY embedding <-> '{1,2}'::real[] LIMIT 5 $$, '22000', NULL,
	'index scan: query with fewer dimensions than the index');
SELECT throws_ok($$ SELECT id FROM items ORDER BY embedding <-> '{1,2,3,4}'::float8[] LIMIT 5 $$, '22000', NULL,
	'index scan: query with more dimensions than the index');
SELECT throws_ok($$ SELECT id FROM items ORDER BY embedding <-> '{1,NaN,3}'::real[] LIMIT 5 $$, '22000', NULL,
	'index scan: NaN in the query');
SELECT throws_ok($$ SELECT id FROM items ORDER BY embedding <-> '{1,NULL,3}'::real[] LIMIT 5 $$, '22004', NULL,
	'index scan: NULL element in the query');
SELECT throws_ok($$ SELECT id FROM items ORDER BY embedding <-> '{}'::real[] LIMIT 5 $$, '22000', NULL,
	'index scan: empty query');

SET vidx.probes = 1000;
SELECT is((SELECT count(*) FROM (SELECT id FROM items ORDER BY embedding <-> '{0,0,0}'::real[] LIMIT 1000) s),
	301::bigint, 'index scan returns every non-NULL vector (301) and no NULL one');
SELECT is((SELECT count(*) FROM (SELECT id FROM items ORDER BY embedding <-> '{0,0,0}'::real[] LIMIT 1000) s
	WHERE id IN (1000, 1001)), 0::bigint, 'NULL vectors are not returned by the index scan');
SELECT lives_ok($$ SELECT id FROM items ORDER BY embedding <-> NULL::real[] LIMIT 1 $$,
	'a NULL query vector is not an error');
RESET vidx.probes;
RESET enable_seqscan;

-- ------------------------------------------------------------ builds on bad data
CREATE TABLE bad_nan (id int, embedding real[]);
INSERT INTO bad_nan VALUES (1, '{1,2,3}'), (2, '{1,NaN,3}');
SELECT throws_ok($$ CREATE INDEX ON bad_nan USING vidx (embedding) $$, '22000', NULL,
	'build: a NaN row fails the build');
CREATE TABLE bad_dims (id int, embedding real[]);
INSERT INTO bad_dims VALUES (1, '{1,2,3}'), (2, '{1,2,3}'), (3, '{1,2}');
SELECT throws_ok($$ CREATE INDEX ON bad_dims USING vidx (embedding) $$, '22000', NULL,
	'build: mixed dimensions fail the build');
CREATE TABLE bad_null (id int, embedding real[]);
INSERT INTO bad_null VALUES (1, '{1,2,3}'), (2, '{1,NULL,3}');
SELECT throws_ok($$ CREATE INDEX ON bad_null USING vidx (embedding) $$, '22004', NULL,
	'build: a NULL element fails the build');
CREATE TABLE zero_cos (id int, embedding real[]);
INSERT INTO zero_cos VALUES (1, '{1,2,3}'), (2, '{0,0,0}');
SELECT throws_ok($$ CREATE INDEX ON zero_cos USING vidx (embedding vidx_cosine_ops) $$, '22000', NULL,
	'build: a zero vector fails a cosine build');
SELECT is((SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
	WHERE c.relname IN ('bad_nan', 'bad_dims', 'bad_null', 'zero_cos')
	  AND c.relnamespace = 'vidx_t04'::regnamespace), 0::bigint, 'failed builds left no index');

-- cosine index: zero vectors are rejected on insert and as queries
CREATE TABLE cos_items (id int, embedding real[]);
INSERT INTO cos_items SELECT i, ARRAY[1 + i, 2, 3]::real[] FROM generate_series(1, 50) i;
CREATE INDEX cos_idx ON cos_items USING vidx (embedding vidx_cosine_ops) WITH (lists = 2);
SELECT throws_ok($$ INSERT INTO cos_items VALUES (99, '{0,0,0}') $$, '22000', NULL,
	'cosine index: inserting a zero vector fails');
SET enable_seqscan = off;
SELECT throws_ok($$ SELECT id FROM cos_items ORDER BY embedding <=> '{0,0,0}'::real[] LIMIT 3 $$, '22000', NULL,
	'cosine index: a zero query vector fails');
RESET enable_seqscan;

-- ------------------------------------------------------------ index options
SELECT throws_ok($$ CREATE INDEX ON items USING vidx (embedding) WITH (lists = -1) $$, '22023', NULL,
	'option: lists = -1');
SELECT throws_ok($$ CREATE INDEX ON items USING vidx (embedding) WITH (lists = 10000000) $$, '22023', NULL,
	'option: lists = 10000000');
SELECT throws_ok($$ CREATE INDEX ON items USING vidx (embedding) WITH (fanout = 1) $$, '22023', NULL,
	'option: fanout = 1');
SELECT throws_ok($$ CREATE INDEX ON items USING vidx (embedding) WITH (fanout = 100000) $$, '22023', NULL,
	'option: fanout = 100000');
SELECT throws_ok($$ CREATE INDEX ON items USING vidx (embedding) WITH (sample_rows = -5) $$, '22023', NULL,
	'option: sample_rows = -5');
SELECT throws_ok($$ CREATE INDEX ON items USING vidx (embedding) WITH (kmeans_iterations = 0) $$, '22023', NULL,
	'option: kmeans_iterations = 0');
SELECT throws_ok($$ CREATE INDEX ON items USING vidx (embedding) WITH (lists = 'many') $$, '22023', NULL,
	'option: lists = ''many''');
SELECT throws_ok($$ CREATE INDEX ON items USING vidx (embedding) WITH (no_such_option = 1) $$, '22023', NULL,
	'option: unknown option');
SELECT throws_ok($$ ALTER INDEX items_l2 SET (lists = -1) $$, '22023', NULL,
	'option: ALTER INDEX SET (lists = -1)');
SELECT throws_ok($$ CREATE INDEX ON items USING vidx (id) $$, '42704', NULL,
	'a vidx index on a bigint column has no operator class');
SELECT is((SELECT count(*) FROM pg_indexes WHERE schemaname = 'vidx_t04' AND tablename = 'items'),
	2::bigint, 'only the primary key and items_l2 exist on items');

-- ------------------------------------------------------------ settings
SELECT throws_ok($$ SET vidx.probes = 0 $$, '22023', NULL, 'setting: vidx.probes = 0');
SELECT throws_ok($$ SET vidx.probes = -1 $$, '22023', NULL, 'setting: vidx.probes = -1');
SELECT throws_ok($$ SET vidx.probes = 'x' $$, '22023', NULL, 'setting: vidx.probes = ''x''');
SELECT throws_ok($$ SET vidx.rerank = -1 $$, '22023', NULL, 'setting: vidx.rerank = -1');
SELECT throws_ok($$ SET vidx.no_such_setting = 1 $$, '42602', NULL,
	'setting: unknown vidx.* setting (prefix reserved)');
SELECT is(current_setting('vidx.probes'), '10', 'vidx.probes still has its default');

-- ------------------------------------------------------------ health
SELECT ok(vidx_verify('items_l2'), 'vidx_verify: the index is healthy after all of this');
SELECT ok(vidx_verify('cos_idx'), 'vidx_verify: the cosine index is healthy');
SELECT throws_ok($$ SELECT vidx_verify('items_pkey') $$, NULL, NULL,
	'vidx_verify on a btree index raises an error');

SELECT * FROM finish();
RESET search_path;
DROP SCHEMA vidx_t04 CASCADE;
