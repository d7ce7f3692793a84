-- vidx_pgvector: vidx operator classes for pgvector's vector and halfvec.
-- (pg_regress loads vector, vidx and vidx_pgvector; see the Makefile.)
SET client_min_messages = warning;

-- The operator classes, their operators and support functions.
SELECT c.opcname, c.opcdefault, t.typname,
       (SELECT string_agg(o.amopopr::regoperator::text, ', ') FROM pg_amop o WHERE o.amopfamily = c.opcfamily) AS operators,
       (SELECT string_agg(p.amprocnum || ': ' || p.amproc::regproc::text, ', ' ORDER BY p.amprocnum)
        FROM pg_amproc p WHERE p.amprocfamily = c.opcfamily) AS support
FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod JOIN pg_type t ON t.oid = c.opcintype
WHERE a.amname = 'vidx' AND t.typname IN ('vector', 'halfvec')
ORDER BY c.opcname;

-- Small exact checks: 2-d points on a grid, every metric, both types.
CREATE TABLE pts (id int PRIMARY KEY, v vector(2), h halfvec(2));
INSERT INTO pts SELECT i, ARRAY[i % 10 + 1, i / 10 + 1]::real[]::vector,
                       ARRAY[i % 10 + 1, i / 10 + 1]::real[]::halfvec
FROM generate_series(0, 99) i;
CREATE INDEX pts_v_l2 ON pts USING vidx (v);
CREATE INDEX pts_h_cos ON pts USING vidx (h halfvec_cosine_ops);
CREATE INDEX pts_v_ip ON pts USING vidx (v vector_ip_ops);
SET enable_seqscan = off;
SET vidx.probes = 1000;

EXPLAIN (COSTS OFF) SELECT id FROM pts ORDER BY v <-> '[3.2,4.1]' LIMIT 3;
SELECT id, v, round((v <-> '[3.2,4.1]')::numeric, 6) AS dist FROM pts ORDER BY v <-> '[3.2,4.1]' LIMIT 3;

EXPLAIN (COSTS OFF) SELECT id FROM pts ORDER BY h <=> '[1,3]' LIMIT 3;
SELECT id, h, round((h <=> '[1,3]')::numeric, 6) AS dist FROM pts ORDER BY h <=> '[1,3]', id LIMIT 3;

EXPLAIN (COSTS OFF) SELECT id FROM pts ORDER BY v <#> '[1,2.1]' LIMIT 3;
SELECT id, v, v <#> '[1,2.1]' AS dist FROM pts ORDER BY v <#> '[1,2.1]' LIMIT 3;

-- A query written for pgvector with a parameter, as client libraries send it.
PREPARE knn(vector) AS SELECT id FROM pts ORDER BY v <-> $1 LIMIT 2;
EXECUTE knn('[10,10]');

-- Bad input.
SELECT id FROM pts ORDER BY v <-> '[1,2,3]' LIMIT 1;
SELECT id FROM pts ORDER BY h <=> '[0,0]' LIMIT 1;
INSERT INTO pts VALUES (1000, '[1,1]', '[0,0]');
INSERT INTO pts VALUES (1000, '[1,NaN]', '[1,1]');

SELECT vidx_verify('pts_v_l2'), vidx_verify('pts_h_cos'), vidx_verify('pts_v_ip');
RESET enable_seqscan;
DROP TABLE pts;
