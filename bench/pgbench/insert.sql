-- insert one new vector: a random query vector plus uniform noise ({noise} wide),
-- so it follows the data's distribution but is not a copy of any row.
-- Template filled in by bench/pgbench_run.py ({tbl}, {qtbl}, {nq}, {noise}, {cast}: ::vector in pgvector mode).
\set qid random(1, {nq})
INSERT INTO {tbl} (id, embedding)
SELECT nextval('{tbl}_ins'), array_agg(e + (random()::real - 0.5::real) * {noise}::real ORDER BY o){cast}
FROM unnest((SELECT embedding FROM {qtbl} WHERE id = :qid)) WITH ORDINALITY AS t(e, o);
