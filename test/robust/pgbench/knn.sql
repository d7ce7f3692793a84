-- k-NN through the index (the client sets enable_seqscan = off)
SELECT id FROM t ORDER BY v <-> (SELECT array_agg((random() * 6 - 3)::real) FROM generate_series(1, 48)) LIMIT 10;
