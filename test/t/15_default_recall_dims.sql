-- 15: at the default settings, recall@10 >= 0.95 for every metric on clustered
-- data at the two ends of the range vidx is tuned for, 64 and 1,536 dimensions
-- (test/t/12 covers 128, test/t/05 784), and the re-scoring budget the error
-- bounds choose loses nothing against an unlimited one. The data is bench/'s
-- clustered generator (unit-normalized, decaying spectrum) with a wider spread
-- than bench/'s sets (1.0, not 0.7), so that the defaults are not trivially
-- exact; test/run_all.sh exports it with
--   /usr/bin/python3 bench/datagen.py export --dim D --rows N --spread 1.0 --out build/testdata
\set schema vidx_t15
\ir ../pgtap_setup.sql

SELECT plan(12);

CREATE TABLE items (dim int, id int, v real[]);
CREATE TABLE queries (dim int, id int, v real[]);
CREATE TEMP TABLE load (id int, v real[]);
\copy load FROM PROGRAM 'cat "${VIDX_TESTDATA:-build/testdata}/clustered_d64_base.tsv"'
INSERT INTO items SELECT 64, id, v FROM load; TRUNCATE load;
\copy load FROM PROGRAM 'cat "${VIDX_TESTDATA:-build/testdata}/clustered_d64_query.tsv"'
INSERT INTO queries SELECT 64, id, v FROM load; TRUNCATE load;
\copy load FROM PROGRAM 'cat "${VIDX_TESTDATA:-build/testdata}/clustered_d1536_base.tsv"'
INSERT INTO items SELECT 1536, id, v FROM load; TRUNCATE load;
\copy load FROM PROGRAM 'cat "${VIDX_TESTDATA:-build/testdata}/clustered_d1536_query.tsv"'
INSERT INTO queries SELECT 1536, id, v FROM load; TRUNCATE load;
-- One table per dimension, so each index sees one dimension.
CREATE TABLE items64 AS SELECT id, v FROM items WHERE dim = 64;
CREATE TABLE items1536 AS SELECT id, v FROM items WHERE dim = 1536;
ANALYZE items64, items1536;

-- recall@10 of the index on tbl against an exact scan, over the queries of its dimension.
CREATE FUNCTION recall10(tbl text, d int, op text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE q record; a int[]; b int[]; hit int := 0; n int := 0;
BEGIN
  FOR q IN SELECT id, v FROM queries WHERE dim = d ORDER BY id LOOP
    SET LOCAL enable_seqscan = on;
    SET LOCAL enable_indexscan = off;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM %I ORDER BY v %s $1 LIMIT 10) s', tbl, op) INTO b USING q.v;
    SET LOCAL enable_seqscan = off;
    SET LOCAL enable_indexscan = on;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM %I ORDER BY v %s $1 LIMIT 10) s', tbl, op) INTO a USING q.v;
    hit := hit + (SELECT count(*) FROM unnest(a) x WHERE x = ANY (b));
    n := n + 1;
  END LOOP;
  RETURN hit / (10.0 * n);
END $$;

-- For each dimension and operator class: build, then recall at the defaults and
-- with an unlimited re-scoring budget.
CREATE TABLE results (dim int, op text, defaults float8, unlimited float8);
CREATE FUNCTION measure(d int, opclass text, op text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE tbl text := 'items' || d; r_defaults float8; r_unlimited float8;
BEGIN
  EXECUTE format('CREATE INDEX ix ON %I USING vidx (v %s)', tbl, opclass);
  r_defaults := recall10(tbl, d, op);
  SET LOCAL vidx.rerank = 1000000;
  r_unlimited := recall10(tbl, d, op);
  INSERT INTO results VALUES (d, op, r_defaults, r_unlimited);
  EXECUTE 'DROP INDEX ix';
END $$;

SELECT measure(d, opclass, op)
FROM (VALUES (64), (1536)) dims(d),
     (VALUES ('vidx_l2_ops', '<->'), ('vidx_ip_ops', '<#>'), ('vidx_cosine_ops', '<=>')) ops(opclass, op);

SELECT diag(format('%s dims, %s: recall@10 %s at the defaults, %s with rerank unlimited',
                   dim, op, round(defaults::numeric, 3), round(unlimited::numeric, 3)))
FROM results ORDER BY dim, op;

SELECT cmp_ok(defaults, '>=', 0.95::float8, format('%s dims, %s: recall@10 >= 0.95 at the defaults', dim, op))
FROM results ORDER BY dim, op;
SELECT cmp_ok(defaults, '>=', unlimited - 0.005,
              format('%s dims, %s: the defaults lose nothing to the re-scoring budget', dim, op))
FROM results ORDER BY dim, op;

SELECT * FROM finish();
DROP SCHEMA vidx_t15 CASCADE;
