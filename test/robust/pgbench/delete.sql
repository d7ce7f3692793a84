\set id random(1, 30000)
DELETE FROM t WHERE id = :id;
