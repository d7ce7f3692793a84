// vidx_pgvector from a pgvector user's Node.js application: the npm packages
// pg (node-postgres) and pgvector, used exactly as pgvector's README shows,
// against a vector column indexed by vidx instead of HNSW. Connects with the
// libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE), which
// pg_virtualenv sets; run by test/node/run.sh (from test/run_all.sh).
//
// Checks: the query plan uses the vidx index; with every leaf probed the top
// 10 equal an exact search computed here in JavaScript (cosine on vector, L2
// on halfvec); at default settings recall@10 >= 0.9; rows inserted after the
// build are found; vectors come back as the arrays that were inserted.
import assert from 'node:assert/strict';
import pg from 'pg';
import pgvector from 'pgvector/pg';

const DIMS = 48;
const ROWS = 3000;
const QUERIES = 20;
let failures = 0;
let n = 0;

function check(name, fn) {
	n++;
	try {
		fn();
		console.log(`ok ${n} - ${name}`);
	} catch (e) {
		failures++;
		console.log(`not ok ${n} - ${name}\n# ${String(e.message).split('\n').join('\n# ')}`);
	}
}

// Seeded generator (mulberry32): the same data on every run.
function rng(seed) {
	return () => {
		seed = (seed + 0x6d2b79f5) | 0;
		let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
		t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	};
}
const rand = rng(20260315);
const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
const centres = Array.from({ length: 30 }, () => Array.from({ length: DIMS }, () => 3 * gauss()));
const point = (i) => centres[i % centres.length].map((c) => Math.fround(c + gauss()));
const items = Array.from({ length: ROWS }, (_, i) => point(i));
const queries = Array.from({ length: QUERIES }, (_, i) => point(i * 7));

const dot = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);
const cosine = (a, b) => 1 - dot(a, b) / Math.sqrt(dot(a, a) * dot(b, b));
const l2 = (a, b) => Math.sqrt(a.reduce((s, x, i) => s + (x - b[i]) ** 2, 0));
const exactTop = (rows, q, dist, k) =>
	rows.map((v, i) => [dist(v, q), i + 1]).sort((x, y) => x[0] - y[0] || x[1] - y[1]).slice(0, k).map((x) => x[1]);

const client = new pg.Client();
await client.connect();
try {
	await client.query('CREATE EXTENSION IF NOT EXISTS vector');
	await client.query('CREATE EXTENSION IF NOT EXISTS vidx');
	await client.query('CREATE EXTENSION IF NOT EXISTS vidx_pgvector');
	await pgvector.registerTypes(client);

	await client.query('DROP TABLE IF EXISTS node_items');
	await client.query(`CREATE TABLE node_items (id int PRIMARY KEY, embedding vector(${DIMS}), half halfvec(${DIMS}))`);
	for (let start = 0; start < ROWS; start += 500) {
		const values = [];
		const params = [];
		for (let i = start; i < Math.min(ROWS, start + 500); i++) {
			params.push(i + 1, pgvector.toSql(items[i]), pgvector.toSql(items[i]));
			values.push(`($${params.length - 2}, $${params.length - 1}, $${params.length})`);
		}
		await client.query(`INSERT INTO node_items (id, embedding, half) VALUES ${values.join(', ')}`, params);
	}
	await client.query('CREATE INDEX node_items_cos ON node_items USING vidx (embedding vector_cosine_ops)');
	await client.query('CREATE INDEX node_items_half ON node_items USING vidx (half halfvec_l2_ops)');
	await client.query('ANALYZE node_items');

	const sql = 'SELECT id, embedding FROM node_items ORDER BY embedding <=> $1 LIMIT 10';
	const plan = await client.query(`EXPLAIN (COSTS OFF) ${sql}`, [pgvector.toSql(queries[0])]);
	check('the pgvector query plan uses the vidx index', () =>
		assert.match(plan.rows.map((r) => r['QUERY PLAN']).join('\n'), /Index Scan using node_items_cos/));

	// Every leaf probed: exact.
	await client.query('SET vidx.probes = 1000000');
	await client.query('SET vidx.rerank = 1000000');
	let exactMisses = 0;
	for (const q of queries) {
		const { rows } = await client.query(sql, [pgvector.toSql(q)]);
		if (JSON.stringify(rows.map((r) => r.id)) !== JSON.stringify(exactTop(items, q, cosine, 10))) exactMisses++;
	}
	check('<=> on vector at full probes: top-10 equal an exact search in JavaScript (20 queries)', () =>
		assert.equal(exactMisses, 0));

	// halfvec: the exact search runs on the half-precision values the column holds.
	const halves = (await client.query('SELECT id, half FROM node_items ORDER BY id')).rows.map((r) => r.half);
	let halfMisses = 0;
	for (const q of queries) {
		const qh = (await client.query('SELECT $1::halfvec AS h', [pgvector.toSql(q)])).rows[0].h;
		const { rows } = await client.query('SELECT id FROM node_items ORDER BY half <-> $1 LIMIT 10', [pgvector.toSql(qh)]);
		if (JSON.stringify(rows.map((r) => r.id)) !== JSON.stringify(exactTop(halves, qh, l2, 10))) halfMisses++;
	}
	check('<-> on halfvec at full probes: top-10 equal an exact search in JavaScript', () => assert.equal(halfMisses, 0));

	const { rows: back } = await client.query('SELECT embedding FROM node_items WHERE id = 17');
	// (pgvector prints the shortest decimal that reads back as the same float32)
	check('vectors come back as the arrays inserted (pgvector type parser)', () =>
		assert.deepEqual(back[0].embedding.map(Math.fround), items[16]));

	// Default settings: approximate, high recall.
	await client.query('RESET vidx.probes');
	await client.query('RESET vidx.rerank');
	let hits = 0;
	for (const q of queries) {
		const { rows } = await client.query(sql, [pgvector.toSql(q)]);
		const want = new Set(exactTop(items, q, cosine, 10));
		hits += rows.filter((r) => want.has(r.id)).length;
	}
	const recall = hits / (10 * QUERIES);
	check(`default settings: recall@10 ${recall.toFixed(3)} >= 0.9`, () => assert.ok(recall >= 0.9));

	// Inserts after the build, through the same client path.
	const fresh = Array.from({ length: DIMS }, (_, j) => Math.fround(Math.sin(j) * 9));
	await client.query('INSERT INTO node_items (id, embedding, half) VALUES ($1, $2, $3)', [
		ROWS + 1, pgvector.toSql(fresh), pgvector.toSql(fresh)]);
	const { rows: near } = await client.query(sql, [pgvector.toSql(fresh)]);
	check('a row inserted after the build is its own nearest neighbour', () => assert.equal(near[0].id, ROWS + 1));

	let err = null;
	try {
		await client.query(sql, [pgvector.toSql([1, 2, 3])]);
	} catch (e) {
		err = e;
	}
	check('a query of other dimensions gets a clear error', () => assert.match(String(err?.message), /dimensions/));

	await client.query('DROP TABLE node_items');
} finally {
	await client.end();
}
console.log(`1..${n}`);
if (failures > 0) {
	console.log(`# ${failures} of ${n} checks failed`);
	process.exit(1);
}
console.log(`# all ${n} checks passed`);
