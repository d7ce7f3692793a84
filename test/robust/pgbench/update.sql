-- a new vector for a random row (new tuple version, new index entry)
\set id random(1, 30000)
UPDATE t SET v = (SELECT array_agg((random() * 6 - 3)::real) FROM generate_series(1, 48)) WHERE id = :id;
