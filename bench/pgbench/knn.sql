-- read-only k-NN: a random query vector (from the queries table) per transaction.
-- Template: bench/pgbench_run.py fills in {tbl}, {qtbl}, {op}, {k}, {nq}, {cast} (::vector in pgvector mode), so that
-- only :qid is a variable and the statement can run with -M prepared.
-- The query vector comes from an InitPlan, which the index takes as its ORDER BY argument.
\set qid random(1, {nq})
SELECT id FROM {tbl} ORDER BY embedding {op} (SELECT embedding{cast} FROM {qtbl} WHERE id = :qid) LIMIT {k};
