-- 18: a build whose postings do not fit in maintenance_work_mem writes them to
-- a temporary file and reads them back while it writes the chains, so that
-- its memory does not grow with the table. The index it makes answers exactly
-- like the one built in memory (the build is deterministic): the same rows in
-- the same order at the defaults and at full probes, the same size.
-- 20,000 rows x 256 dims: 64-byte postings, 1.28 MB, over the 1 MB minimum.
\set schema vidx_t18
\ir ../pgtap_setup.sql

SELECT plan(7);

SELECT setseed(0.18);
CREATE TABLE t WITH (autovacuum_enabled = off) AS
  SELECT i AS id, ARRAY(SELECT (random() + (i % 20) * 0.05)::real FROM generate_series(1, 256) WHERE i > 0) AS v
  FROM generate_series(1, 20000) i;
CREATE TABLE queries AS SELECT id, v FROM t WHERE id % 1000 = 7;

-- The ids of the 10 nearest rows of every query, at the session's settings.
CREATE FUNCTION answers() RETURNS text LANGUAGE plpgsql AS $$
DECLARE q record; r text := ''; ids int[];
BEGIN
  SET LOCAL enable_seqscan = off;
  FOR q IN SELECT id, v FROM queries ORDER BY id LOOP
    SELECT array_agg(id) INTO ids FROM (SELECT id FROM t ORDER BY v <-> q.v LIMIT 10) s;
    r := r || q.id || ':' || ids::text || ' ';
  END LOOP;
  RETURN r;
END $$;

CREATE FUNCTION temp_files() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_stat_clear_snapshot();
  RETURN (SELECT temp_files FROM pg_stat_database WHERE datname = current_database());
END $$;

-- Built in memory.
SET maintenance_work_mem = '64MB';
SELECT pg_stat_force_next_flush();
CREATE TABLE before_mem AS SELECT temp_files() AS n;
CREATE INDEX t_v ON t USING vidx (v) WITH (lists = 40);
SELECT pg_stat_force_next_flush();
SELECT is(temp_files() - (SELECT n FROM before_mem), 0::bigint,
          'maintenance_work_mem 64MB: the postings stay in memory (no temporary file)');
CREATE TABLE in_memory AS SELECT answers() AS defaults, pg_relation_size('t_v') AS size;
SET vidx.probes = 40;
UPDATE in_memory SET defaults = defaults || '| full: ' || answers();
RESET vidx.probes;
DROP INDEX t_v;

-- Built with its postings in a temporary file.
SET maintenance_work_mem = '1MB';
SELECT pg_stat_force_next_flush();
CREATE TABLE before_spill AS SELECT temp_files() AS n;
CREATE INDEX t_v ON t USING vidx (v) WITH (lists = 40);
SELECT pg_stat_force_next_flush();
SELECT cmp_ok(temp_files() - (SELECT n FROM before_spill), '>=', 1::bigint,
              'maintenance_work_mem 1MB: the build wrote its postings to a temporary file');
RESET maintenance_work_mem;
SELECT is(pg_relation_size('t_v'), (SELECT size FROM in_memory), 'the same index size');
SELECT ok(vidx_verify('t_v', true), 'vidx_verify (with the sidecar records) passes');
SET vidx.probes = 40;
SELECT is(answers(), (SELECT split_part(defaults, '| full: ', 2) FROM in_memory),
          'at full probes: the same rows in the same order as the index built in memory');
RESET vidx.probes;
SELECT is(answers(), (SELECT split_part(defaults, '| full: ', 1) FROM in_memory),
          'at the defaults: the same rows in the same order');
SELECT is((vidx_stats('t_v')->>'postings')::bigint, 20000::bigint, 'every row has its posting');

SELECT * FROM finish();
DROP SCHEMA vidx_t18 CASCADE;
