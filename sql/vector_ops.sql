--
-- vector_ops: the distance operators <-> (L2), <#> (negative inner product)
-- and <=> (cosine distance) on real[], with real[], double precision[] and
-- numeric[] right operands, and every input error they raise.
-- Distances are rounded so that the output does not depend on the platform's
-- float rounding.
--
\set VERBOSITY default

-- L2 distance with each right-hand type; all 5.
SELECT round(('{1,2,3}'::real[] <-> '{4,6,3}'::real[])::numeric, 4) AS real_arr,
       round(('{1,2,3}'::real[] <-> ARRAY[4.0::float8, 6.0, 3.0])::numeric, 4) AS float8_array,
       round(('{1,2,3}'::real[] <-> '{4,6,3}'::float8[])::numeric, 4) AS float8_literal,
       round(('{1,2,3}'::real[] <-> ARRAY[4.0, 6.0, 3.0])::numeric, 4) AS numeric_array,
       round(('{1,2,3}'::real[] <-> '{4,6,3}')::numeric, 4) AS unknown_literal;

-- Negative inner product; 1*4 + 2*5 + 3*6 = 32.
SELECT round(('{1,2,3}'::real[] <#> '{4,5,6}'::real[])::numeric, 4) AS real_arr,
       round(('{1,2,3}'::real[] <#> ARRAY[4.0::float8, 5.0, 6.0])::numeric, 4) AS float8_array,
       round(('{1,2,3}'::real[] <#> '{4,5,6}'::float8[])::numeric, 4) AS float8_literal,
       round(('{1,2,3}'::real[] <#> ARRAY[4.0, 5.0, 6.0])::numeric, 4) AS numeric_array,
       round(('{1,2,3}'::real[] <#> '{4,5,6}')::numeric, 4) AS unknown_literal;

-- Cosine distance; cos((3,4), (4,3)) = 24/25, so 0.04.
SELECT round(('{3,4}'::real[] <=> '{4,3}'::real[])::numeric, 4) AS real_arr,
       round(('{3,4}'::real[] <=> ARRAY[4.0::float8, 3.0])::numeric, 4) AS float8_array,
       round(('{3,4}'::real[] <=> '{4,3}'::float8[])::numeric, 4) AS float8_literal,
       round(('{3,4}'::real[] <=> ARRAY[4.0, 3.0])::numeric, 4) AS numeric_array,
       round(('{3,4}'::real[] <=> '{4,3}')::numeric, 4) AS unknown_literal;

-- An unknown literal resolves to the real[] x real[] operator.
CREATE TEMP VIEW unknown_literal AS
  SELECT '{1,2}'::real[] <-> '{3,4}' AS l2, '{1,2}'::real[] <#> '{3,4}' AS ip,
         '{1,2}'::real[] <=> '{3,4}' AS cosine;
SELECT pg_get_viewdef('unknown_literal'::regclass);
DROP VIEW unknown_literal;

-- More values: fractions, negatives, orthogonal and opposite vectors.
SELECT round(('{0.5,1.5}'::real[] <-> ARRAY[1.5::float8, 0.5])::numeric, 4) AS sqrt2,
       round(('{-1,-2}'::real[] <-> '{2,2}'::real[])::numeric, 4) AS five,
       round(('{0.3,0.4}'::real[] <-> ARRAY[0.0, 0.0])::numeric, 4) AS half,
       round(('{0.1,0.2}'::real[] <-> ARRAY[0.1, 0.2])::numeric, 4) AS same_numeric,
       round(('{0.1,0.2}'::real[] <-> '{0.1,0.2}'::float8[])::numeric, 4) AS same_float8,
       round(('{-1,0.5}'::real[] <#> ARRAY[2.0, 4.0])::numeric, 4) AS ip_zero,
       round(('{-1,-2}'::real[] <#> '{3,4}'::real[])::numeric, 4) AS ip_positive;
SELECT round(('{1,0}'::real[] <=> '{0,1}'::real[])::numeric, 4) AS orthogonal,
       round(('{1,0}'::real[] <=> '{-2,0}'::real[])::numeric, 4) AS opposite,
       round(('{1,2}'::real[] <=> ARRAY[2.0, 4.0])::numeric, 4) AS parallel,
       round(('{1,2,3}'::real[] <=> '{1,2,3}'::float8[])::numeric, 4) AS same,
       ('{1,2,3}'::real[] <=> '{1,2,3}'::real[]) BETWEEN 0 AND 2 AS clamped;

-- Result type, and the functions behind the operators.
SELECT pg_typeof('{1}'::real[] <-> '{2}'::real[]) AS type,
       vidx_l2_distance('{0,0}', '{3,4}'::real[]) AS l2,
       vidx_negative_inner_product('{1,1}', ARRAY[2.5::float8, 0.5]) AS ip,
       vidx_cosine_distance('{1,0}', ARRAY[0.0, 3.0]) AS cosine;

-- Array lower bounds do not matter; 1 and 16000 dimensions are fine.
SELECT round(('[5:6]={3,4}'::real[] <-> '{0,0}'::real[])::numeric, 4) AS lbound,
       round(('{7}'::real[] <-> '{-2}'::real[])::numeric, 4) AS one_dim,
       round((array_fill(1::real, ARRAY[16000]) <-> array_fill(0::real, ARRAY[16000]))::numeric, 4)
         AS max_dims;

-- Elements whose squares overflow real still give a finite distance.
SELECT round((('{1e20,0}'::real[] <-> '{-1e20,0}'::real[]) / 1e20)::numeric, 4) AS l2_over_1e20,
       round((('{1e20}'::real[] <#> '{1e20}'::real[]) / 1e40)::numeric, 4) AS ip_over_1e40,
       round(('{3e20,4e20}'::real[] <=> '{4e20,3e20}'::real[])::numeric, 4) AS cosine;

-- Symmetry and the commutators of the real[] x real[] operators.
SELECT '{1,2}'::real[] <-> '{3,4}'::real[] = '{3,4}'::real[] <-> '{1,2}'::real[] AS l2,
       '{1,2}'::real[] <#> '{3,4}'::real[] = '{3,4}'::real[] <#> '{1,2}'::real[] AS ip,
       '{1,2}'::real[] <=> '{3,4}'::real[] = '{3,4}'::real[] <=> '{1,2}'::real[] AS cosine;
SELECT o.oid::regoperator AS operator, o.oprcom::regoperator AS commutator
FROM pg_operator o
WHERE o.oprname IN ('<->', '<#>', '<=>') AND o.oprleft = 'real[]'::regtype
ORDER BY o.oprname, o.oprright::regtype::text;

-- NULL operands give NULL (the functions are strict).
SELECT NULL::real[] <-> '{1,2}'::real[] AS l2_null_left,
       '{1,2}'::real[] <#> NULL::float8[] AS ip_null_right,
       '{1,2}'::real[] <=> NULL::numeric[] AS cosine_null_right,
       vidx_l2_distance(NULL, '{1}'::real[]) AS function_null;

-- On a table: nearest neighbours by a query of each type.
CREATE TEMP TABLE items (id int, v real[]);
INSERT INTO items VALUES (1, '{0,0}'), (2, '{1,1}'), (3, '{2,0}'), (4, '{-3,4}');
SELECT id, round((v <-> ARRAY[1.0::float8, 0.0])::numeric, 4) AS dist
FROM items ORDER BY v <-> ARRAY[1.0::float8, 0.0], id;
SELECT id, round((v <#> ARRAY[1.0, 1.0])::numeric, 4) AS dist
FROM items ORDER BY v <#> ARRAY[1.0, 1.0], id;
SELECT id, round((v <=> '{1,1}')::numeric, 4) AS dist
FROM items WHERE id <> 1 ORDER BY v <=> '{1,1}', id;
-- One call site, alternating queries (the converted query is cached per call site).
SELECT i.id AS item, q.id AS query, round((i.v <-> q.q)::numeric, 4) AS l2,
       round((i.v <#> q.q::float8[])::numeric, 4) AS ip
FROM items i CROSS JOIN (VALUES (1, ARRAY[1.0, 0.0]), (2, ARRAY[0.0, 2.0])) AS q(id, q)
ORDER BY i.id, q.id;
-- A TOASTed (compressed) stored vector.
INSERT INTO items VALUES (5, array_fill(0.5::real, ARRAY[3000]));
SELECT id, v <-> array_fill(0.5::float8, ARRAY[3000]) AS dist,
       round((v <=> array_fill(2::numeric, ARRAY[3000]))::numeric, 4) AS cosine
FROM items WHERE id = 5;
DROP TABLE items;

--
-- Errors, with their messages.
--

-- Multi-dimensional arrays.
SELECT '{{1,2},{3,4}}'::real[] <-> '{1,2}'::real[];
SELECT '{1,2}'::real[] <#> '{{1,2}}'::float8[];
SELECT '{1,2}'::real[] <=> ARRAY[ARRAY[1.0, 2.0]];

-- Empty arrays.
SELECT '{}'::real[] <-> '{1,2}'::real[];
SELECT '{1,2}'::real[] <-> '{}'::float8[];
SELECT '{1,2}'::real[] <=> ARRAY[]::numeric[];

-- Too many dimensions.
SELECT array_fill(1::real, ARRAY[16001]) <-> array_fill(1::real, ARRAY[16001]);
SELECT '{1,2}'::real[] <#> array_fill(1::float8, ARRAY[16001]);

-- NULL elements.
SELECT '{1,NULL}'::real[] <-> '{1,2}'::real[];
SELECT '{1,2}'::real[] <-> '{NULL,2}'::real[];
SELECT '{1,2}'::real[] <#> '{1,NULL}'::float8[];
SELECT '{1,2}'::real[] <=> ARRAY[1.0, NULL];
SELECT '[0:2]={1,2,NULL}'::real[] <-> '{1,2,3}'::real[];

-- NaN.
SELECT '{1,NaN}'::real[] <-> '{1,2}'::real[];
SELECT '{1,2}'::real[] <#> '{NaN,2}'::float8[];
SELECT '{1,2}'::real[] <=> ARRAY[1.0, 'NaN'];
SELECT '[0:1]={1,NaN}'::real[] <-> '{1,2}'::real[];

-- Infinity.
SELECT '{Infinity,2}'::real[] <-> '{1,2}'::real[];
SELECT '{1,2}'::real[] <-> '{1,-Infinity}'::real[];
SELECT '{1,2}'::real[] <#> '{1,-Infinity}'::float8[];
SELECT '{1,2}'::real[] <=> ARRAY['Infinity'::numeric, 2.0];
-- In the eight-lane pass (elements 1-16) and in its tail (17-19); -0 and the
-- largest finite real are finite.
SELECT array_fill(1, ARRAY[19])::real[] <-> (array_fill(1, ARRAY[5]) || 'NaN'::real || array_fill(1, ARRAY[13]))::real[];
SELECT array_fill(1, ARRAY[19])::real[] <-> (array_fill(1, ARRAY[15]) || '-Infinity'::real || array_fill(1, ARRAY[3]))::real[];
SELECT array_fill(1, ARRAY[19])::real[] <-> (array_fill(1, ARRAY[18]) || 'Infinity'::real)::real[];
SELECT array_fill(0, ARRAY[19])::real[] <-> (array_fill('-0'::real, ARRAY[17]) || ARRAY['3.4028235e38', '-3.4028235e38']::real[]);

-- Values out of the range of real.
SELECT '{1,2}'::real[] <-> '{1,1e39}'::float8[];
SELECT '{1,2}'::real[] <#> ARRAY[-1e39, 2.0];
SELECT '{1,2}'::real[] <=> ARRAY[1e400, 2.0];
-- ... but tiny values just round to zero.
SELECT round(('{1,2}'::real[] <-> ARRAY[1e-50::float8, 2.0])::numeric, 4) AS float8_tiny,
       round(('{1,2}'::real[] <-> ARRAY[1e-400, 2.0])::numeric, 4) AS numeric_tiny;

-- Different dimensions.
SELECT '{1,2}'::real[] <-> '{1,2,3}'::real[];
SELECT '{1,2,3}'::real[] <#> ARRAY[1.0::float8, 2.0];
SELECT '{1,2}'::real[] <=> ARRAY[1.0];

-- Cosine distance of a zero vector (-0 counts as zero).
SELECT '{0,0}'::real[] <=> '{1,2}'::real[];
SELECT '{1,2}'::real[] <=> ARRAY[0.0, 0.0];
SELECT '{1,2}'::real[] <=> '{-0,0}'::float8[];
-- ... is fine for the other metrics.
SELECT '{0,0}'::real[] <-> '{0,0}'::real[] AS l2, '{0,0}'::real[] <#> '{1,2}'::real[] AS ip;

--
-- The SQLSTATE of each kind of error.
--
\set VERBOSITY sqlstate
-- data_exception (22000)
SELECT '{{1,2},{3,4}}'::real[] <-> '{1,2}'::real[];
SELECT '{}'::real[] <-> '{1,2}'::real[];
SELECT '{1,NaN}'::real[] <-> '{1,2}'::real[];
SELECT '{1,2}'::real[] <-> '{1,Infinity}'::float8[];
SELECT '{1,2}'::real[] <-> '{1,2,3}'::real[];
SELECT '{0,0}'::real[] <=> '{1,2}'::real[];
-- program_limit_exceeded (54000)
SELECT '{1,2}'::real[] <-> array_fill(1::real, ARRAY[16001]);
-- null_value_not_allowed (22004)
SELECT '{1,NULL}'::real[] <-> '{1,2}'::real[];
-- numeric_value_out_of_range (22003)
SELECT '{1,2}'::real[] <-> '{1,1e39}'::float8[];
SELECT '{1,2}'::real[] <-> ARRAY[1e400, 2.0];
\set VERBOSITY default
