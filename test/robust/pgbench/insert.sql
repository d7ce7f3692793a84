-- one row with a random 48-dimension vector
INSERT INTO t (v) SELECT array_agg((random() * 6 - 3)::real) FROM generate_series(1, 48);
