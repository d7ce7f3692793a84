#!/usr/bin/python3
"""Seeded random bad (and good) input through vidx's SQL surface.

Sends random values -- real[], float8[], numeric[] and text literals with NULLs,
NaN, infinities, huge values (beyond real, and beyond the 1e15 an index
accepts: 22003), denormals, empty and nested arrays, wrong and excessive
dimensions -- through INSERT/UPDATE into indexed tables (L2, inner product,
cosine), through the distance operators and through index scans, plus random
index options and settings. Every statement either succeeds or fails with an
expected SQLSTATE; the connection never breaks (no backend crash). Prints
counts as JSON; exit 1 on an unexpected outcome.
usage: badinput.py PORT SEED N
"""
import json
import random
import sys

import psycopg

EXPECTED = {"22004", "22000", "22003", "22023", "54000", "22P02", "2202E", "42804", "42883",
            "22P01", "42601", "22008", "23502", "42P17"}

port, seed, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
DIMS = 8


def elem():
    r = rnd.random()
    if r < 0.05:
        return "NULL"
    if r < 0.08:
        return rnd.choice(["NaN", "Infinity", "-Infinity", "1e39", "-1e39", "1e300", "1e-50", "-0"])
    if r < 0.10:
        return rnd.choice(["3.4e38", "-3.4e38", "1.5e-45", "0"])
    if r < 0.12:  # around the index's element limit, 1e15 (accepted), and tiny values
        return rnd.choice(["1e15", "-1e15", "1.0000001e15", "1e16", "-2e15", "1e19", "-3e38",
                           "1e-40", "-1e-30"])
    return repr(round(rnd.uniform(-5, 5), 3))


def array_literal():
    r = rnd.random()
    if r < 0.55:
        d = DIMS
    elif r < 0.65:
        d = 0
    elif r < 0.8:
        d = rnd.randint(1, 20)
    elif r < 0.85:
        d = rnd.choice([16000, 16001, 20000])
    else:
        d = DIMS
    els = [elem() if d < 100 else repr(rnd.random()) for _ in range(d)]
    if rnd.random() < 0.06 and d >= 2:   # nested / multi-dimensional
        h = d // 2
        return "{{" + ",".join(els[:h]) + "},{" + ",".join(els[h:2 * h]) + "}}"
    if rnd.random() < 0.03:              # garbage text
        return rnd.choice(["{1,2", "abc", "{a,b}", "{{1},{2,3}}", "[1:2]={1,2}", "{,}", ""])
    if rnd.random() < 0.04 and d >= 1:   # non-default lower bound
        return f"[0:{d - 1}]=" + "{" + ",".join(els) + "}"
    return "{" + ",".join(els) + "}"


def value_sql():
    lit = array_literal().replace("'", "''")
    t = rnd.choice(["real[]", "real[]", "float8[]", "numeric[]", "text"])
    if rnd.random() < 0.04:
        return "NULL::real[]"
    if t == "text":
        return f"'{lit}'"
    return f"'{lit}'::{t}"


def statement():
    r = rnd.random()
    tbl = rnd.choice(["t_l2", "t_ip", "t_cos"])
    op = {"t_l2": "<->", "t_ip": "<#>", "t_cos": "<=>"}[tbl]
    if r < 0.35:
        return f"INSERT INTO {tbl} (v) VALUES ({value_sql()})"
    if r < 0.45:
        return f"UPDATE {tbl} SET v = {value_sql()} WHERE id = {rnd.randint(1, 300)}"
    if r < 0.75:
        return f"SELECT id FROM {tbl} ORDER BY v {op} {value_sql()} LIMIT {rnd.randint(1, 20)}"
    if r < 0.85:
        return f"SELECT {value_sql()}::real[] {rnd.choice(['<->', '<#>', '<=>'])} {value_sql()}"
    if r < 0.92:
        opt = rnd.choice(["lists", "fanout", "sample_rows", "kmeans_iterations", "bogus"])
        val = rnd.choice(["-1", "0", "1", "2", "4097", "1000001", "100000001", "1001", "'x'", "1.5", "99999999999"])
        return f"CREATE INDEX ON {tbl} USING vidx (v) WITH ({opt} = {val})"
    name = rnd.choice(["vidx.probes", "vidx.rerank"])
    val = rnd.choice(["0", "-1", "1", "1000000", "1000001", "'abc'", "1.5", "99999999999", "''"])
    return f"SET {name} = {val}"


conn = psycopg.connect(host="/var/run/postgresql", port=port, user="postgres", dbname="postgres", autocommit=True)
cur = conn.cursor()
cur.execute("SET enable_seqscan = off")
stats = {"statements": 0, "ok": 0, "errors": 0, "by_sqlstate": {}, "unexpected": []}
for i in range(n):
    sql = statement()
    stats["statements"] += 1
    try:
        cur.execute(sql)
        stats["ok"] += 1
    except psycopg.Error as e:
        if conn.broken or e.sqlstate is None:
            stats["unexpected"].append(f"connection lost on: {sql[:200]}: {e}")
            break
        st = e.sqlstate or "?"
        stats["errors"] += 1
        stats["by_sqlstate"][st] = stats["by_sqlstate"].get(st, 0) + 1
        if st not in EXPECTED:
            stats["unexpected"].append(f"{st} on: {sql[:200]}: {str(e).strip()[:200]}")
    if sql.startswith("CREATE INDEX"):
        # drop the indexes that valid random options made (keep the original ones)
        cur.execute("""SELECT string_agg(c.oid::regclass::text, ',') FROM pg_class c JOIN pg_am a ON a.oid = c.relam
                       WHERE a.amname = 'vidx' AND c.relname NOT IN ('t_l2_v', 't_ip_v', 't_cos_v')""")
        extra = cur.fetchone()[0]
        if extra:
            cur.execute(f"DROP INDEX {extra}")
print(json.dumps(stats))
sys.exit(1 if stats["unexpected"] else 0)
