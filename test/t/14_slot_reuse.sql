-- 14: VACUUM frees the sidecar slots of the rows it removes and inserts take
-- them again, so the sidecar stops growing under churn. 20 rounds of: delete
-- half the rows, VACUUM, insert as many. The sidecar file stays within 1.2x
-- its size after the first round (it grew by the deleted rows every round
-- before), every row is found at full probes with the rows of an exact scan,
-- every posting has a valid sidecar record, vidx_verify is true. Slot 0 of an
-- index built empty is taken again without starting a new sidecar, and an
-- unlogged index reuses slots too.
\set schema vidx_t14
\ir ../pgtap_setup.sql

SELECT plan(16);

SELECT setseed(0.1414);
CREATE TABLE t (id int PRIMARY KEY, v real[]);
CREATE FUNCTION rand_vec() RETURNS real[] LANGUAGE sql VOLATILE AS
  $$ SELECT array_agg((random() * 6 - 3)::real) FROM generate_series(1, 32) $$;
INSERT INTO t SELECT i, rand_vec() FROM generate_series(1, 3000) i;
CREATE INDEX t_v ON t USING vidx (v);
CREATE TABLE queries AS SELECT q AS id, rand_vec() AS v FROM generate_series(1, 5) q;

-- one round of churn: delete about half the rows, VACUUM, insert as many new ones
CREATE FUNCTION churn_delete(r int) RETURNS void LANGUAGE sql AS $$
  DELETE FROM t WHERE (hashint4(id + 1000003 * r) & 1) = 0;
$$;
CREATE FUNCTION churn_insert() RETURNS void LANGUAGE sql AS $$
  INSERT INTO t SELECT m + i, rand_vec()
  FROM (SELECT max(id) AS m FROM t) x, generate_series(1, 3000 - (SELECT count(*) FROM t)::int) i;
$$;
CREATE FUNCTION sidecar_bytes(idx regclass) RETURNS bigint LANGUAGE sql AS $$
  SELECT (pg_stat_file(vidx_stats(idx)->'sidecar'->>'file')).size;
$$;

-- rows of an exhaustive index scan that an exact scan returns too, over the queries (k = 20),
-- and rows the exhaustive scan returns, and distinct ones, over one query
CREATE FUNCTION exact_rows(tbl text, OUT same bigint, OUT total bigint, OUT distinct_rows bigint)
LANGUAGE plpgsql AS $$
DECLARE q record; a int[]; b int[];
BEGIN
  same := 0;
  FOR q IN SELECT id, v FROM queries ORDER BY id LOOP
    SET LOCAL enable_seqscan = on;
    SET LOCAL enable_indexscan = off;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM %I ORDER BY v <-> $1 LIMIT 20) s', tbl)
      INTO b USING q.v;
    SET LOCAL enable_seqscan = off;
    SET LOCAL enable_indexscan = on;
    SET LOCAL vidx.probes = 1000000;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM %I ORDER BY v <-> $1 LIMIT 20) s', tbl)
      INTO a USING q.v;
    same := same + (SELECT count(*) FROM unnest(a) WITH ORDINALITY x(id, n)
                    JOIN unnest(b) WITH ORDINALITY y(id, n) USING (id, n));
  END LOOP;
  EXECUTE format('SELECT count(*), count(DISTINCT id) FROM (SELECT id FROM %I ORDER BY v <-> $1 LIMIT 1000000) s', tbl)
    INTO total, distinct_rows USING (SELECT v FROM queries WHERE id = 1);
END $$;

SELECT churn_delete(1);
VACUUM t;
SELECT churn_insert();
CREATE TABLE after_round1 AS
  SELECT sidecar_bytes('t_v') AS bytes, (vidx_stats('t_v')->'sidecar'->>'next_slot')::bigint AS next_slot;
SELECT is(next_slot, 3000::bigint, 'round 1: the inserts took the slots VACUUM freed (next slot 3000)')
  FROM after_round1;

SELECT format('SELECT churn_delete(%s)', r), 'VACUUM t', 'SELECT churn_insert()'
  FROM generate_series(2, 20) r \gexec

SELECT is((SELECT count(*) FROM t), 3000::bigint, '20 rounds: 3,000 rows');
SELECT cmp_ok(sidecar_bytes('t_v'), '<=', (1.2 * bytes)::bigint,
              format('the sidecar file stays within 1.2x its size after round 1 (%s bytes)', bytes))
  FROM after_round1;
SELECT cmp_ok((vidx_stats('t_v')->'sidecar'->>'next_slot')::bigint, '<=', (1.2 * next_slot)::bigint,
              'next slot within 1.2x of round 1''s')
  FROM after_round1;
SELECT is(vidx_stats('t_v')->'sidecar'->>'postings_without_record', '0',
          'every posting has its sidecar record');
SELECT is(e.*, ROW(100::bigint, 3000::bigint, 3000::bigint),
          'full probes: the rows of an exact scan, and every row once')
  FROM exact_rows('t') e;
SELECT ok(vidx_verify('t_v', true), 'vidx_verify(t_v, true) after 20 rounds');

-- the free slots, as vidx_stats shows them
SELECT churn_delete(21);
VACUUM t;
CREATE TABLE deleted AS SELECT 3000 - count(*) AS n FROM t;
SELECT is((vidx_stats('t_v')->'sidecar'->>'free_slots')::bigint, n,
          'after a delete and VACUUM: one free slot per deleted row')
  FROM deleted;
SELECT ok(vidx_verify('t_v', true), 'vidx_verify with free slots listed');
INSERT INTO t VALUES (1000000, rand_vec());
SELECT is((vidx_stats('t_v')->'sidecar'->>'free_slots')::bigint, n - 1, 'an insert took one of them')
  FROM deleted;
SELECT is(vidx_stats('t_v')->'sidecar'->>'next_slot', '3000', '... and no new slot');

-- slot 0 of an index built empty, taken again: the sidecar is not started afresh
CREATE TABLE e (id int PRIMARY KEY, v real[]);
CREATE INDEX e_v ON e USING vidx (v);
INSERT INTO e SELECT i, rand_vec() FROM generate_series(1, 200) i;
DELETE FROM e WHERE id <= 10;
VACUUM e;
INSERT INTO e SELECT i, rand_vec() FROM generate_series(201, 210) i;
SELECT is(vidx_stats('e_v')->'sidecar'->>'next_slot', '200', 'built empty: slots 0-9 taken again');
SELECT is(vidx_stats('e_v')->'sidecar'->>'postings_without_record', '0',
          '... every posting keeps its record (no new sidecar at slot 0)');
SELECT ok(vidx_verify('e_v', true), 'vidx_verify(e_v, true)');

-- an unlogged index
CREATE UNLOGGED TABLE u (id int PRIMARY KEY, v real[]);
INSERT INTO u SELECT i, rand_vec() FROM generate_series(1, 1000) i;
CREATE INDEX u_v ON u USING vidx (v);
SELECT format('DELETE FROM u WHERE (hashint4(id + 1000003 * %s) & 1) = 0', r), 'VACUUM u',
       format('INSERT INTO u SELECT m + i, rand_vec() FROM (SELECT max(id) AS m FROM u) x, generate_series(1, 1000 - (SELECT count(*) FROM u)::int) i')
  FROM generate_series(1, 5) r \gexec
SELECT cmp_ok((vidx_stats('u_v')->'sidecar'->>'next_slot')::bigint, '<=', 1200::bigint,
              'unlogged: 5 rounds of churn, next slot within 1.2x of the rows');
SELECT ok(vidx_verify('u_v', true), 'unlogged: vidx_verify(u_v, true)');

SELECT * FROM finish();
DROP SCHEMA vidx_t14 CASCADE;
