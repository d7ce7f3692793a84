-- 06: the sidecar truncated while a scan is reading it (SIGBUS on the mapping)
-- costs speed, not the backend: the scan goes on from the table, returns the
-- same rows as an exact search, and says so once in a WARNING.
\set schema vidx_t06
\ir ../pgtap_setup.sql
SET client_min_messages = error;

SELECT plan(5);

CREATE TABLE items (id int PRIMARY KEY, v real[]);
INSERT INTO items
  SELECT i, array_agg(sin(i * 0.37 + j * 1.1)::real ORDER BY j)
  FROM generate_series(1, 3000) i, generate_series(1, 96) j GROUP BY i;
CREATE INDEX items_vidx ON items USING vidx (v) WITH (lists = 20);

CREATE TABLE expected AS
  SELECT row_number() OVER () AS n, id FROM (
    SELECT id FROM items ORDER BY (v <-> (SELECT v FROM items WHERE id = 7)) + 0, id LIMIT 400) s;

SET enable_seqscan = off;
SET vidx.probes = 20;
SET vidx.rerank = 100000;
SELECT current_setting('data_directory') || '/' || (vidx_stats('items_vidx')->'sidecar'->>'file') AS path \gset
-- A backend that died of the SIGBUS would take the server down with it; psql
-- would then stop short of the plan, or a new backend would answer below.
SELECT pg_backend_pid() AS pid_before \gset

BEGIN;
DECLARE c CURSOR FOR SELECT id FROM items ORDER BY v <-> (SELECT v FROM items WHERE id = 7);
CREATE TEMP TABLE got (n serial, id int);
-- The first FETCH maps the sidecar; then the file shrinks under the mapping.
CREATE FUNCTION fetch_into_got(k int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r record; cur refcursor := 'c';
BEGIN
  FOR i IN 1 .. k LOOP
    FETCH cur INTO r;
    EXIT WHEN NOT FOUND;
    INSERT INTO got (id) VALUES (r.id);
  END LOOP;
END $$;
SELECT fetch_into_got(5);
SELECT format('COPY (SELECT 1) TO PROGRAM %L', 'truncate -s 8192 ' || :'path') \gexec
SET client_min_messages = warning;
SELECT fetch_into_got(395);
COMMIT;

SELECT is((SELECT count(*) FROM got), 400::bigint, 'the scan returned every row after the truncation');
SELECT is((SELECT array_agg(id ORDER BY n) FROM got), (SELECT array_agg(id ORDER BY n) FROM expected),
          'rows are those of an exact search, in order');
SELECT is((SELECT size FROM pg_stat_file(:'path')), 8192::bigint, 'the sidecar was truncated under the scan');
SELECT is(pg_backend_pid(), :pid_before, 'the backend that read the truncated mapping still serves this session');
REINDEX INDEX items_vidx;
SELECT is(vidx_verify('items_vidx'), true, 'REINDEX repairs the sidecar');

SELECT * FROM finish();
DROP SCHEMA vidx_t06 CASCADE;
