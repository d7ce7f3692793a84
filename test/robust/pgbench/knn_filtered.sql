-- filtered k-NN: the scan goes on past the probed leaves when needed
\set m random(2, 50)
SELECT id FROM t WHERE id % :m = 0 ORDER BY v <-> (SELECT array_agg((random() * 6 - 3)::real) FROM generate_series(1, 48)) LIMIT 10;
