"""vidx sharded over postgres_fdw: correctness checks (run by test/shard/run.sh).

Starts 3 shard clusters + 1 coordinator on 127.0.0.1, builds the layout of
docs/sharding.md (test/shard/shardlib.py), loads seeded data through the
coordinator and checks:

  a  EXPLAIN VERBOSE: ORDER BY <op> shipped (and LIMIT in the per-shard form),
     WHERE shipped, Async Foreign Scan in the async form; the shards run the
     remote query with their vidx index (EXPLAIN of the remote cursor, and
     pg_stat_user_indexes counters)
  b  sharded top-k == single-server exact top-k at full probes, L2 / inner
     product / cosine, with and without a WHERE filter, three query forms
  c  inserts through the coordinator land on the right shard and are found
  d  a stopped shard makes the query fail with a clear error
  e  how vidx.probes / vidx.rerank reach the shards (server option `options`,
     ALTER DATABASE on the shard, role-specific user mappings), and that a
     coordinator-side SET does not

Prints "ok N - ..." / "not ok N - ..." lines; writes "passed failed" to the
file named by --status.
"""

import argparse
import re
import sys
import time
import traceback

import numpy as np
import psycopg

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from shardlib import (OPERATOR, Cluster, drop_all, install_cleanup, log, make_data,  # noqa: E402
                      make_layout, range_bounds, vec_text)

ap = argparse.ArgumentParser()
ap.add_argument("--prefix", default="vidx_shardtest")
ap.add_argument("--port", type=int, default=5460)
ap.add_argument("--rows", type=int, default=12000)
ap.add_argument("--dims", type=int, default=48)  # < 64: strict bounds, exact order (see README)
ap.add_argument("--queries", type=int, default=40)
ap.add_argument("--seed", type=int, default=42)
ap.add_argument("--status", default=None)
args = ap.parse_args()

NSHARDS = 3
K = 10
ID_STEP = 2  # loaded ids are even; the insert test uses odd ids in every range
# "Full probes": every leaf. vidx.rerank enters the shard planner's cost of the
# index scan (scan_cost.c: rerank * cpu_operator_cost * dims/16, not capped by the
# row count), so 1,000,000 would make the shards pick Seq Scan + Sort. A budget
# of a shard's row count (4,000) makes the order exact by construction and
# still leaves the index scan cheapest (test 15 checks that it is used).
PROBES_FULL, RERANK_FULL = "1000000", "4000"
FULL = "-c vidx.probes=%s -c vidx.rerank=%s" % (PROBES_FULL, RERANK_FULL)
METRICS = ("l2", "ip", "cos")

passed = failed = 0
num = 0


def check(name, cond, detail=""):
    global passed, failed, num
    num += 1
    if cond:
        passed += 1
        print("ok %d - %s" % (num, name), flush=True)
    else:
        failed += 1
        print("not ok %d - %s" % (num, name), flush=True)
        if detail:
            for line in str(detail).splitlines()[:40]:
                print("#   " + line, flush=True)


def short(plan):
    return re.sub(r"'\{[^}]*\}'", "'{...}'", plan)


def explain(conn, sql, params=None, analyze=False):
    opts = "ANALYZE, VERBOSE, COSTS OFF, TIMING OFF" if analyze else "VERBOSE, COSTS OFF"
    return "\n".join(r[0] for r in conn.execute("EXPLAIN (%s) %s" % (opts, sql), params))


# The three query forms of docs/sharding.md. %(op)s is the operator, %(w)s a
# WHERE clause (or ""), the query vector is the parameter %(q)s.
def q_partitioned(op, where, k=K):
    return "SELECT id FROM items %s ORDER BY v %s %%(q)s LIMIT %d" % (where, op, k)


def q_per_shard(op, where, k=K, nshards=NSHARDS):
    parts = ["(SELECT id, v %s %%(q)s AS d FROM items_s%d %s ORDER BY v %s %%(q)s LIMIT %d)"
             % (op, i, where, op, k) for i in range(1, nshards + 1)]
    return "SELECT id FROM (%s) u ORDER BY d LIMIT %d" % (" UNION ALL ".join(parts), k)


def q_async(op, where, k=K, nshards=NSHARDS):
    parts = ["(SELECT id, v %s %%(q)s AS d FROM items_s%d %s ORDER BY v %s %%(q)s LIMIT %d)"
             % (op, i, where, op, k) for i in range(1, nshards + 1)]
    return "WITH u AS MATERIALIZED (%s) SELECT id FROM u ORDER BY d LIMIT %d" % (" UNION ALL ".join(parts), k)


FORMS = {"partitioned": q_partitioned, "per-shard LIMIT": q_per_shard, "async": q_async}


def exact(conn, op, where, qv, k=K):
    """Single-server exact top-k: the local copy, sequential scan + sort."""
    conn.execute("SET enable_indexscan = off")
    conn.execute("SET enable_bitmapscan = off")
    rows = conn.execute("SELECT id, v %s %%(q)s FROM items_local %s ORDER BY 2, 1 LIMIT %d" % (op, where, k),
                        {"q": qv}).fetchall()
    conn.execute("RESET enable_indexscan")
    conn.execute("RESET enable_bitmapscan")
    return rows


def same_topk(got_ids, ref):
    """ids equal, or differ only among rows tied at the same distance."""
    ref_ids = [r[0] for r in ref]
    if list(got_ids) == ref_ids:
        return True
    if len(got_ids) != len(ref_ids):
        return False
    kth = ref[-1][1]
    must = {r[0] for r in ref if r[1] < kth - 1e-9}
    return must <= set(got_ids)


def recall(conn, sql_fn, op, queries, refs, where=""):
    hit = 0
    for qv, ref in zip(queries, refs):
        got = [r[0] for r in conn.execute(sql_fn(op, where), {"q": qv}).fetchall()]
        hit += len(set(got) & {r[0] for r in ref})
    return hit / (len(queries) * K)


def main():
    t0 = time.time()
    install_cleanup()
    x, cat, qs = make_data(args.rows, args.dims, args.queries, args.seed)
    queries = [q.tolist() for q in qs]  # psycopg sends these as double precision[]
    log("layout: coordinator + %d shards, %d rows x %d dims, ports %d-%d"
        % (NSHARDS, args.rows, args.dims, args.port, args.port + NSHARDS))
    coord, shards = make_layout(args.prefix, args.port, NSHARDS, x, cat, metrics=METRICS,
                                fetch_size=K, remote_options=FULL, id_step=ID_STEP)
    log("layout ready in %.1f s" % (time.time() - t0))
    c = coord.connect()
    sc = [s.connect() for s in shards]
    bounds = range_bounds(NSHARDS, args.rows * ID_STEP)

    # ---------------------------------------------------------------- setup
    ver = [conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vidx'").fetchone() for conn in [c] + sc]
    check("vidx extension on coordinator and every shard", all(v is not None for v in ver), ver)
    counts = [conn.execute("SELECT count(*) FROM items").fetchone()[0] for conn in sc]
    check("rows loaded through the coordinator are spread over the shards by id range",
          sum(counts) == args.rows and min(counts) > 0
          and c.execute("SELECT count(*) FROM items").fetchone()[0] == args.rows, counts)
    wrong = 0
    for i, (conn, (lo, hi)) in enumerate(zip(sc, bounds)):
        cond = []
        if lo != "MINVALUE":
            cond.append("id < %s" % lo)
        if hi != "MAXVALUE":
            cond.append("id >= %s" % hi)
        if cond:
            wrong += conn.execute("SELECT count(*) FROM items WHERE %s" % " OR ".join(cond)).fetchone()[0]
    check("every shard holds only its own id range", wrong == 0, "%d rows out of range" % wrong)

    # ---------------------------------------------------------------- (a) EXPLAIN
    qv = queries[0]
    for m in METRICS:
        op = OPERATOR[m]
        plan = explain(c, q_partitioned(op, ""), {"q": qv})
        remote = re.findall(r"Remote SQL: (.*)", plan)
        okp = ("Merge Append" in plan and len(remote) == NSHARDS
               and all(("ORDER BY (v OPERATOR(public.%s) $1::double precision[])" % op) in r
                       or ("ORDER BY (v OPERATOR(public.%s)" % op) in r for r in remote))
        check("(a) %s: partitioned query is a Merge Append of Foreign Scans whose remote SQL carries ORDER BY v %s"
              % (m, op), okp, short(plan))
        # What the shard does with that remote SQL: postgres_fdw runs it as a cursor.
        if remote:
            rsql = re.sub(r"\$1::double precision\[\]", "'%s'::double precision[]" % vec_text(qv), remote[0])
            rsql = rsql.replace("$1", "'%s'::double precision[]" % vec_text(qv))
            sc[0].execute("BEGIN")
            rplan = "\n".join(r[0] for r in sc[0].execute("EXPLAIN DECLARE c1 CURSOR FOR " + rsql))
            sc[0].execute("ROLLBACK")
            check("(a) %s: on the shard the remote query is an Index Scan using items_v_%s" % (m, m),
                  ("Index Scan using items_v_%s" % m) in rplan, short(rplan))
        plan = explain(c, q_per_shard(op, ""), {"q": qv})
        remote = re.findall(r"Remote SQL: (.*)", plan)
        check("(a) %s: per-shard form ships ORDER BY ... LIMIT %d to every shard" % (m, K),
              len(remote) == NSHARDS and all("ORDER BY (v OPERATOR(public.%s)" % op in r
                                                and r.rstrip().endswith("LIMIT %d::bigint" % K) for r in remote),
              short(plan))
    plan = explain(c, q_async("<->", ""), {"q": qv}, analyze=True)
    check("(a) async form: Append of %d Async Foreign Scans, each with ORDER BY ... LIMIT" % NSHARDS,
          plan.count("Async Foreign Scan") == NSHARDS and "Merge Append" not in plan, short(plan))
    plan = explain(c, q_partitioned("<->", "WHERE cat = 2"), {"q": qv})
    check("(a) WHERE cat = 2 is shipped to the shards",
          len(re.findall(r"Remote SQL: .*WHERE \(\(cat = 2\)\) ORDER BY", plan)) == NSHARDS, short(plan))
    # The shards really run the remote query with their index: no sequential
    # scan of items on any shard while the coordinator runs 5 queries. (vidx
    # does not call pgstat_count_index_scan, so pg_stat_user_indexes.idx_scan
    # stays 0 for vidx indexes; the seq_scan counter is what we can watch.)
    # Counters are read from fresh sessions after every other session on the
    # shards has exited (backends flush their statistics at exit).
    for conn in sc:
        conn.close()
    c.execute("SELECT postgres_fdw_disconnect_all()")
    time.sleep(1.0)

    def counters():
        out = []
        for s in shards:
            with s.connect() as conn:
                out.append(conn.execute("SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables "
                                        "WHERE relname = 'items'").fetchone())
        time.sleep(0.3)
        return out

    before = counters()
    for qv in queries[:5]:
        c.execute(q_partitioned("<->", ""), {"q": qv}).fetchall()
    c.execute("SELECT postgres_fdw_disconnect_all()")  # remote backends exit and flush their stats
    time.sleep(1.0)
    after = counters()
    check("(a) no shard scanned items sequentially for 5 sharded k-NN queries (pg_stat_user_tables.seq_scan)",
          [a[0] for a in after] == [b[0] for b in before], "(seq_scan, idx_scan) before %s after %s" % (before, after))
    sc = [s.connect() for s in shards]

    # ---------------------------------------------------------------- (b) equality
    # The single-server vidx reference (items_local, all rows on one server):
    # full probes, a re-scoring budget of all rows, and the index forced.
    c.execute("SET vidx.probes = %s" % PROBES_FULL)
    c.execute("SET vidx.rerank = %d" % (args.rows + 100))
    refs_l2 = None
    for m in METRICS:
        op = OPERATOR[m]
        for where in ("", "WHERE cat = 2", "WHERE cat IN (0, 3) AND mod(id, 3) <> 0"):
            refs = [exact(c, op, where, qv) for qv in queries]
            if m == "l2" and where == "":
                refs_l2 = refs
            # single-server vidx at full probes
            c.execute("SET enable_seqscan = off")
            bad = [i for i, (qv, ref) in enumerate(zip(queries, refs))
                   if not same_topk([r[0] for r in c.execute(
                       "SELECT id FROM items_local %s ORDER BY v %s %%(q)s LIMIT %d" % (where, op, K),
                       {"q": qv}).fetchall()], ref)]
            c.execute("RESET enable_seqscan")
            check("(b) %s %s: single-server vidx at full probes == exact (%d queries)"
                  % (m, where or "no filter", len(queries)), not bad, "mismatching queries: %s" % bad)
            for fname, fn in FORMS.items():
                if m != "l2" and fname == "per-shard LIMIT":
                    continue
                bad = []
                for i, (qv, ref) in enumerate(zip(queries, refs)):
                    got = [r[0] for r in c.execute(fn(op, where), {"q": qv}).fetchall()]
                    if not same_topk(got, ref):
                        bad.append((i, got, [r[0] for r in ref]))
                check("(b) %s %s: sharded (%s) top-%d == single-server exact (%d queries)"
                      % (m, where or "no filter", fname, K, len(queries)), not bad, bad[:3])
    # k larger than fetch_size: Merge Append fetches more than one batch per shard.
    bad = []
    for i, qv in enumerate(queries[:10]):
        ref = exact(c, "<->", "", qv, k=35)
        got = [r[0] for r in c.execute(q_partitioned("<->", "", k=35), {"q": qv}).fetchall()]
        if not same_topk(got, ref):
            bad.append(i)
    check("(b) l2 top-35 (> fetch_size %d) through Merge Append == exact" % K, not bad, bad)
    # query vector as real[] and numeric[] literals
    qtxt = vec_text(queries[1])
    ref = [r[0] for r in exact(c, "<->", "", queries[1])]
    r1 = [r[0] for r in c.execute("SELECT id FROM items ORDER BY v <-> '%s'::real[] LIMIT %d" % (qtxt, K))]
    r2 = [r[0] for r in c.execute("SELECT id FROM items ORDER BY v <-> '%s'::numeric[] LIMIT %d" % (qtxt, K))]
    check("(b) query vector as real[] and numeric[] constants gives the same top-k", r1 == ref and r2 == ref,
          (r1, r2, ref))

    # ---------------------------------------------------------------- (c) inserts
    new = []
    for i, (lo, hi) in enumerate(bounds):
        nid = (int(hi) - 1) if hi != "MAXVALUE" else args.rows * ID_STEP + 1  # odd: not loaded
        qv = queries[2 + i]
        v = (np.array(qv, dtype=np.float32) + np.float32(1e-3)).tolist()
        new.append((i, nid, qv))
        c.execute("INSERT INTO items (id, cat, v) VALUES (%s, 4, %s::real[])", (nid, v))
        c.execute("INSERT INTO items_local (id, cat, v) VALUES (%s, 4, %s::real[])", (nid, v))
    placed = [[conn.execute("SELECT count(*) FROM items WHERE id = %s", (nid,)).fetchone()[0] for conn in sc]
              for (_, nid, _) in new]
    check("(c) rows inserted through the coordinator land on the shard of their id range",
          all(p == [1 if j == i else 0 for j in range(NSHARDS)] for (i, _, _), p in zip(new, placed)), placed)
    tops = [c.execute(q_partitioned("<->", ""), {"q": qv}).fetchone()[0] for (_, _, qv) in new]
    check("(c) each inserted row is the sharded top-1 of its query", tops == [nid for (_, nid, _) in new],
          (tops, [n for (_, n, _) in new]))
    bad = []
    for i, qv in enumerate(queries):
        ref = exact(c, "<->", "WHERE cat = 4", qv)
        for fn in FORMS.values():
            got = [r[0] for r in c.execute(fn("<->", "WHERE cat = 4"), {"q": qv}).fetchall()]
            if not same_topk(got, ref):
                bad.append(i)
    check("(c) after inserts, sharded top-k (cat = 4, all forms) == exact", not bad, bad)
    ver = []
    for conn in sc:
        ver.append(all(conn.execute("SELECT vidx_verify('items_v_%s')" % m).fetchone()[0] for m in METRICS))
    check("(c) vidx_verify on every shard index after the inserts", all(ver), ver)
    try:
        c.execute("INSERT INTO items (id, cat, v) VALUES (%s, 0, '{1,2,3}'::real[])", (3,))
        err = None
    except psycopg.Error as e:
        err = str(e)
    check("(c) a vector of the wrong dimension inserted through the coordinator fails with the shard's error",
          err is not None and "dimension" in err.lower(), err)

    # ---------------------------------------------------------------- (e) settings
    def remote_settings(i):
        return c.execute("SELECT probes, rerank FROM vidx_settings_s%d" % i).fetchone()

    check("(e) server option options '%s' reaches the remote sessions" % FULL,
          all(remote_settings(i) == (PROBES_FULL, RERANK_FULL) for i in range(1, NSHARDS + 1)),
          [remote_settings(i) for i in range(1, NSHARDS + 1)])
    refs_l2 = [exact(c, "<->", "", qv) for qv in queries]  # after the inserts
    sub = queries[:20]
    subref = refs_l2[:20]
    r_full = recall(c, q_partitioned, "<->", sub, subref)
    for i in range(1, NSHARDS + 1):
        c.execute("ALTER SERVER shard_%d OPTIONS (SET options '-c vidx.probes=1 -c vidx.rerank=1')" % i)
    r_low = recall(c, q_partitioned, "<->", sub, subref)
    check("(e) ALTER SERVER ... OPTIONS (SET options '-c vidx.probes=1 -c vidx.rerank=1') applies at once "
          "(new remote sessions): recall %.3f -> %.3f" % (r_full, r_low),
          r_full == 1.0 and r_low < 1.0 and remote_settings(1) == ("1", "1"), (r_full, r_low, remote_settings(1)))
    c.execute("SET vidx.probes = %s" % PROBES_FULL)
    c.execute("SET vidx.rerank = %s" % RERANK_FULL)
    r_set = recall(c, q_partitioned, "<->", sub, subref)
    check("(e) a coordinator-side SET vidx.probes does NOT reach the shards (recall stays %.3f, remote probes %s)"
          % (r_set, remote_settings(1)[0]), r_set == r_low and remote_settings(1) == ("1", "1"),
          (r_set, remote_settings(1)))
    c.execute("RESET vidx.probes")
    c.execute("RESET vidx.rerank")
    # ALTER DATABASE ... SET on every shard, once the server option is gone.
    for i, conn in enumerate(sc, 1):
        c.execute("ALTER SERVER shard_%d OPTIONS (DROP options)" % i)
        conn.execute("ALTER DATABASE app SET vidx.probes = %s" % PROBES_FULL)
        conn.execute("ALTER DATABASE app SET vidx.rerank = %s" % RERANK_FULL)
    c.execute("SELECT postgres_fdw_disconnect_all()")
    r_db = recall(c, q_partitioned, "<->", sub, subref)
    check("(e) ALTER DATABASE app SET vidx.probes/rerank on the shards + postgres_fdw_disconnect_all(): "
          "remote probes %s, recall %.3f" % (remote_settings(1)[0], r_db),
          remote_settings(1) == (PROBES_FULL, RERANK_FULL) and r_db == 1.0, (remote_settings(1), r_db))
    # Per-role tiers: a coordinator role whose user mapping logs in as a shard
    # role with its own ALTER ROLE ... SET; SET ROLE picks the tier per query.
    for conn in sc:
        conn.execute("CREATE ROLE vidx_fast LOGIN")
        conn.execute("ALTER ROLE vidx_fast SET vidx.probes = 1")
        conn.execute("ALTER ROLE vidx_fast SET vidx.rerank = 1")
        conn.execute("GRANT SELECT ON items, vidx_settings TO vidx_fast")
    c.execute("CREATE ROLE vidx_fast")
    c.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO vidx_fast")
    for i in range(1, NSHARDS + 1):
        c.execute("CREATE USER MAPPING FOR vidx_fast SERVER shard_%d OPTIONS (user 'vidx_fast', "
                  "password_required 'false')" % i)
    c.execute("SET ROLE vidx_fast")
    r_role = recall(c, q_partitioned, "<->", sub, subref)
    st_role = remote_settings(1)
    c.execute("RESET ROLE")
    r_back = recall(c, q_partitioned, "<->", sub, subref)
    check("(e) SET ROLE vidx_fast (user mapping -> shard role with ALTER ROLE SET vidx.probes = 1): "
          "recall %.3f, back to %.3f after RESET ROLE" % (r_role, r_back),
          st_role[0] == "1" and r_role < 1.0 and r_back == 1.0, (st_role, r_role, r_back))

    # ---------------------------------------------------------------- (d) shard down
    shards[1].stop()
    for fname, fn in FORMS.items():
        try:
            rows = c.execute(fn("<->", ""), {"q": queries[0]}).fetchall()
            err = None
        except psycopg.Error as e:
            err = str(e)
            rows = None
        check("(d) shard 2 stopped: %s query fails with an error naming shard_2 (not a partial answer)" % fname,
              rows is None and err is not None and "shard_2" in err, err if err else rows)
    lo2 = bounds[1][0]
    try:
        rows = c.execute("SELECT id FROM items WHERE id < %s ORDER BY v <-> %%(q)s LIMIT %d" % (lo2, K),
                         {"q": queries[0]}).fetchall()
        ref = exact(c, "<->", "WHERE id < %s" % lo2, queries[0])
        okd = same_topk([r[0] for r in rows], ref)
        det = rows
    except psycopg.Error as e:
        okd, det = False, str(e)
    check("(d) shard 2 stopped: a query pruned to shard 1 (WHERE id < %s) still answers correctly" % lo2, okd, det)
    shards[1].start()
    bad = []
    for i, qv in enumerate(queries[:10]):
        try:
            got = [r[0] for r in c.execute(q_partitioned("<->", ""), {"q": qv}).fetchall()]
        except psycopg.Error as e:
            got = str(e)
        if got != [r[0] for r in refs_l2[i]]:
            bad.append((i, got))
    check("(d) shard 2 restarted: the coordinator reconnects and answers exactly", not bad, bad[:2])

    c.close()
    for conn in sc:
        conn.close()
    log("checks done in %.1f s" % (time.time() - t0))


try:
    main()
except Exception:
    failed += 1
    print("not ok %d - unexpected exception" % (num + 1))
    for line in traceback.format_exc().splitlines():
        print("#   " + line)
finally:
    drop_all()
    if args.status:
        with open(args.status, "w") as f:
            f.write("%d %d\n" % (passed, failed))
sys.exit(1 if failed else 0)
