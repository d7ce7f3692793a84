#!/usr/bin/python3
"""Client-side drivers for vidx's robustness tests (test/robust/*.sh).

Subcommands:
  writer   inserts/updates/deletes from several connections; appends every
           operation to a journal, "P" before COMMIT is sent and "C" once COMMIT
           returned, so that what was certainly committed is known even when the
           server is killed under it.
  check    exact-recall check of a table against its vidx index: with every leaf
           probed and every candidate re-scored, an index scan must return every
           row of the table exactly once; every committed row of the journal is
           there (and every committed delete is not); sampled rows find
           themselves first; vidx_verify is true.
  verify-loop  calls vidx_verify(index, true) and vidx_stats(index) in turn for
           a while (as writers run): counts errors, stats that do not say the
           sidecar is "ok" with every posting's record, and calls during which
           the sidecar grew (an insert ran meanwhile).
  sync     waits until a standby has replayed the primary's current WAL position.
  compare  runs the same k-NN queries on two servers and compares the rows.
  pages    reads an index's pages (pageinspect) and prints what is in them: page
           types, tree version, and the pages no version reaches that VACUUM
           must free (a split cut short before its publication, or after it
           but before the old tree was freed).
  scan-check  runs k-NN scans in a loop (as splits happen), some paused
           between their first rows and the rest: each must return each row
           at most once, in non-decreasing distance unless relaxed; those
           without a LIMIT (all leaves, or probes 1 in relaxed order),
           exactly the rows a sequential scan of the same snapshot sees.

Vectors are a deterministic function of (id, version, dims), so any client can
recompute what a committed row must hold.
"""
import argparse
import json
import os
import random
import struct
import sys
import threading
import time

import psycopg

SOCK = "/var/run/postgresql"


def connect(port, db="postgres", autocommit=True, **kw):
    return psycopg.connect(host=SOCK, port=port, user="postgres", dbname=db,
                           autocommit=autocommit, connect_timeout=30, **kw)


def vec(i, ver, dims):
    """Deterministic clustered vector of row i, version ver."""
    r = random.Random(i * 1000003 + ver * 7919 + dims)
    c = random.Random((i % 37) * 31 + dims)
    return [round(c.uniform(-3, 3) + r.gauss(0, 0.7), 4) for _ in range(dims)]


def qvec(k, dims):
    r = random.Random(424242 + k * 17 + dims)
    return [round(r.uniform(-3, 3), 4) for _ in range(dims)]


# ----------------------------------------------------------------- writer

class Journal:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def write(self, line):
        with self.lock:
            self.f.write(line + "\n")
            self.f.flush()


def writer_thread(a, k, journal, stats, stop):
    rnd = random.Random(a.seed * 1000 + k)
    base = a.id_base + k * 10_000_000
    live = {}          # id -> version, as committed
    next_id = base
    try:
        conn = connect(a.port, a.db, autocommit=False)
    except Exception as e:  # server already gone
        stats["connect_errors"] += 1
        return
    ops = 0
    deadline = time.time() + a.seconds
    weights = [a.insert_weight, a.update_weight, a.delete_weight]
    while ops < a.max_ops and time.time() < deadline and not stop.is_set():
        kind = rnd.choices("IUD", weights)[0] if live else "I"
        n = rnd.randint(1, a.batch)
        batch = []
        try:
            with conn.cursor() as cur:
                for _ in range(n):
                    if kind == "I":
                        i = next_id
                        next_id += 1
                        cur.execute(f"INSERT INTO {a.table} (id, v) VALUES (%s, %s::real[])",
                                    (i, vec(i, 0, a.dims)))
                        batch.append(("I", i, 0))
                    elif kind == "U" and live:
                        i = rnd.choice(list(live))
                        if any(b[1] == i for b in batch):
                            continue
                        ver = live[i] + 1
                        cur.execute(f"UPDATE {a.table} SET v = %s::real[] WHERE id = %s",
                                    (vec(i, ver, a.dims), i))
                        batch.append(("U", i, ver))
                    elif kind == "D" and live:
                        i = rnd.choice(list(live))
                        if any(b[1] == i for b in batch):
                            continue
                        cur.execute(f"DELETE FROM {a.table} WHERE id = %s", (i,))
                        batch.append(("D", i, 0))
            for op, i, ver in batch:
                journal.write(f"P {op} {i} {ver}")
            conn.commit()
            for op, i, ver in batch:
                journal.write(f"C {op} {i} {ver}")
                if op == "D":
                    live.pop(i, None)
                else:
                    live[i] = ver
            stats["committed_tx"] += 1
            stats["committed_ops"] += len(batch)
            ops += len(batch)
        except psycopg.OperationalError as e:
            stats["connection_lost"] += 1
            if a.stop_on_loss:
                break
            time.sleep(0.5)
            try:
                conn = connect(a.port, a.db, autocommit=False)
            except Exception:
                break
        except psycopg.Error as e:
            stats["sql_errors"] += 1
            stats["last_error"] = str(e).strip().splitlines()[0]
            try:
                conn.rollback()
            except Exception:
                break
        if a.pause:
            time.sleep(a.pause)
    try:
        conn.close()
    except Exception:
        pass


def cmd_writer(a):
    journal = Journal(a.journal)
    stats = {"committed_tx": 0, "committed_ops": 0, "connection_lost": 0,
             "sql_errors": 0, "connect_errors": 0, "last_error": ""}
    stop = threading.Event()
    threads = [threading.Thread(target=writer_thread, args=(a, k, journal, stats, stop))
               for k in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(stats))
    sys.stdout.flush()
    # SQL errors are failures; lost connections are what a crash test expects
    return 1 if stats["sql_errors"] else 0


def read_journal(path):
    """-> (expected: id -> version for committed live rows,
           deleted: ids whose last committed op is a delete,
           doubtful: ids with an operation whose COMMIT outcome is unknown)"""
    last = {}
    pending = {}
    if not path or not os.path.exists(path):
        return {}, set(), set()
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) != 4:
                continue  # torn last line
            st, op, i, ver = p[0], p[1], int(p[2]), int(p[3])
            if st == "P":
                pending[i] = (op, ver)
            else:
                last[i] = (op, ver)
                if pending.get(i) == (op, ver):
                    del pending[i]
    expected = {i: v for i, (op, v) in last.items() if op != "D" and i not in pending}
    deleted = {i for i, (op, v) in last.items() if op == "D" and i not in pending}
    return expected, deleted, set(pending)


# ----------------------------------------------------------------- check

def cmd_check(a):
    failures = []

    def ok(cond, desc):
        print(("ok - " if cond else "not ok - ") + desc)
        if not cond:
            failures.append(desc)

    conn = connect(a.port, a.db)
    cur = conn.cursor()
    cur.execute("SET vidx.probes = 1000000")
    cur.execute("SET vidx.rerank = 1000000")
    cur.execute("SET enable_seqscan = off")
    cur.execute("SET enable_bitmapscan = off")
    cur.execute("SET client_min_messages = error")
    cur.execute(f"SELECT id, v FROM {a.table} WHERE v IS NOT NULL")
    rows = {i: v for i, v in cur.fetchall()}
    table_ids = set(rows)
    dims = a.dims
    # every query vector must see every row, once, through the index
    seen_total = 0
    for k in range(a.queries):
        q = qvec(k, dims)
        sql = f"SELECT id FROM {a.table} ORDER BY v <-> %s::real[] LIMIT 100000000"
        cur.execute("EXPLAIN (COSTS OFF) " + sql, (q,))
        plan = " ".join(r[0] for r in cur.fetchall())
        ok(a.index in plan, f"query {k}: plan uses {a.index}")
        cur.execute(sql, (q,))
        ids = [r[0] for r in cur.fetchall()]
        seen_total += len(ids)
        dup = len(ids) - len(set(ids))
        ok(dup == 0, f"query {k}: no row returned twice (duplicates: {dup})")
        missing = table_ids - set(ids)
        extra = set(ids) - table_ids
        ok(not missing and not extra,
           f"query {k}: index returns every row of the table ({len(ids)} of {len(table_ids)};"
           f" missing {len(missing)} e.g. {sorted(missing)[:5]}, extra {len(extra)})")
    # sampled rows find themselves first
    rnd = random.Random(7)
    sample = rnd.sample(sorted(table_ids), min(a.sample, len(table_ids)))
    self_found = 0
    for i in sample:
        cur.execute(f"SELECT id FROM {a.table} ORDER BY v <-> %s::real[] LIMIT 1", (rows[i],))
        r = cur.fetchone()
        if r and r[0] == i:
            self_found += 1
        else:
            cur.execute(f"SELECT count(*) FROM {a.table} WHERE v = %s::real[]", (rows[i],))
            if cur.fetchone()[0] > 1:   # an exact duplicate vector: either is fine
                self_found += 1
    ok(self_found == len(sample), f"{self_found} of {len(sample)} sampled rows find themselves first")
    # the journal: committed rows present with their committed vector, deletes gone
    expected, deleted, doubtful = read_journal(a.journal)
    if a.journal:
        missing = [i for i in expected if i not in table_ids]
        ok(not missing, f"journal: all {len(expected)} committed rows are in the table"
           f" (missing {len(missing)} e.g. {missing[:5]}; {len(doubtful)} in doubt not counted)")
        wrong = [i for i, ver in expected.items()
                 if i in rows and [round(x, 4) for x in rows[i]] != [round(float(x), 4) for x in vec(i, ver, dims)]]
        ok(not wrong, f"journal: committed rows hold their last committed vector (wrong: {len(wrong)} e.g. {wrong[:5]})")
        back = [i for i in deleted if i in table_ids]
        ok(not back, f"journal: all {len(deleted)} committed deletes stay deleted (back: {len(back)})")
    # the index is healthy
    try:
        cur.execute("SELECT vidx_verify(%s::regclass, %s)", (a.index, not a.no_sidecar))
        v = cur.fetchone()[0]
        ok(v is True, f"vidx_verify({a.index}, check_sidecar => {not a.no_sidecar}) is true")
    except psycopg.Error as e:
        ok(False, f"vidx_verify({a.index}) raised: {str(e).strip()}")
    print("COUNTS " + json.dumps({"table_rows": len(table_ids), "index_rows_seen": seen_total,
                                  "queries": a.queries, "journal_committed": len(expected),
                                  "journal_deleted": len(deleted), "journal_doubtful": len(doubtful),
                                  "sampled": len(sample), "failures": len(failures)}))
    return 1 if failures else 0


# ----------------------------------------------------------------- verify-loop

def cmd_verify_loop(a):
    conn = connect(a.port, a.db)
    cur = conn.cursor()
    cur.execute("SET client_min_messages = error")
    cur.execute("SELECT current_setting('data_directory') || '/' || (vidx_stats(%s::regclass)->'sidecar'->>'file')",
                (a.index,))
    path = cur.fetchone()[0]
    r = {"verify_calls": 0, "verify_errors": 0, "verify_during_inserts": 0,
         "stats_calls": 0, "stats_errors": 0, "stats_not_ok": 0, "stats_during_inserts": 0,
         "errors": []}

    def size():
        return os.stat(path).st_size

    deadline = time.time() + a.seconds
    while time.time() < deadline:
        for fn in ("verify", "stats"):
            before = size()
            try:
                if fn == "verify":
                    cur.execute("SELECT vidx_verify(%s::regclass, true)", (a.index,))
                    if cur.fetchone()[0] is not True:
                        raise RuntimeError("vidx_verify returned false")
                else:
                    cur.execute("SELECT vidx_stats(%s::regclass)->'sidecar'", (a.index,))
                    sc = cur.fetchone()[0]
                    if sc["state"] != "ok" or sc["postings_without_record"] != 0:
                        r["stats_not_ok"] += 1
                        if len(r["errors"]) < 5:
                            r["errors"].append(f"stats: {json.dumps(sc)}")
            except (psycopg.Error, RuntimeError) as e:
                r[fn + "_errors"] += 1
                if len(r["errors"]) < 5:
                    r["errors"].append(f"{fn}: {str(e).strip()}")
            r[fn + "_calls"] += 1
            if size() > before:
                r[fn + "_during_inserts"] += 1
    print(json.dumps(r))
    return 1 if r["verify_errors"] or r["stats_errors"] or r["stats_not_ok"] else 0


# ----------------------------------------------------------------- replicas

def current_lsn(port, db):
    with connect(port, db) as c:
        return c.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def cmd_sync(a):
    lsn = current_lsn(a.primary, a.db)
    deadline = time.time() + a.timeout
    with connect(a.standby, a.db) as c:
        while time.time() < deadline:
            done = c.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]
            if done:
                return 0
            time.sleep(0.1)
    print(f"standby on port {a.standby} did not replay {lsn} within {a.timeout}s", file=sys.stderr)
    return 1


def knn_results(port, db, table, dims, nq, k, probes, exact, rerank=None):
    notices = []
    conn = connect(port, db)
    conn.add_notice_handler(lambda d: notices.append(
        f"{d.severity}: {d.message_primary}" + (f" HINT: {d.message_hint}" if d.message_hint else "")))
    cur = conn.cursor()
    cur.execute("SET enable_seqscan = off")
    cur.execute("SET enable_bitmapscan = off")
    cur.execute(f"SET vidx.probes = {probes}")
    if exact:
        cur.execute("SET vidx.rerank = 1000000")
    elif rerank:
        cur.execute(f"SET vidx.rerank = {rerank}")
    out = []
    for j in range(nq):
        cur.execute(f"SELECT id FROM {table} ORDER BY v <-> %s::real[] LIMIT {k}", (qvec(1000 + j, dims),))
        out.append([r[0] for r in cur.fetchall()])
    conn.close()
    return out, notices


def cmd_compare(a):
    r1, n1 = knn_results(a.port1, a.db, a.table, a.dims, a.queries, a.k, a.probes, a.exact, a.rerank)
    r2, n2 = knn_results(a.port2, a.db, a.table, a.dims, a.queries, a.k, a.probes, a.exact, a.rerank)
    same = sum(1 for x, y in zip(r1, r2) if x == y)
    rows = sum(len(x) for x in r1)
    print(json.dumps({"queries": a.queries, "identical": same, "rows": rows,
                      "notices1": n1, "notices2": n2}))
    return 0 if same == a.queries and len(r1) == len(r2) else 1


# ----------------------------------------------------------------- pages

# VidxMetaPageData (src/vidx.h) after the page header; VidxPageOpaqueData at pd_special
META = struct.Struct("<4I2Q6I2Q2I3Q2I")
META_FIELDS = ("magic", "version", "dims", "metric", "build_id", "rotation_seed", "tree_start",
               "tree_pages", "tree_bytes", "tree_version", "nleaves", "levels", "next_slot",
               "built_tuples", "refine_bits", "next_leaf_id", "npostings", "splits", "merges",
               "graveyard", "graves")
OPAQUE = struct.Struct("<6I4H")
PAGE_TYPES = {1: "meta", 2: "tree", 3: "posting", 4: "free", 5: "graveyard"}


def cmd_pages(a):
    conn = connect(a.port, a.db)
    cur = conn.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    cur.execute("SELECT pg_relation_size(%s::regclass) / 8192", (a.index,))
    nblocks = cur.fetchone()[0]
    pages = []
    for blk in range(nblocks):
        cur.execute("SELECT get_raw_page(%s, %s)", (a.index, blk))
        pages.append(bytes(cur.fetchone()[0]))
    meta = dict(zip(META_FIELDS, META.unpack_from(pages[0], 24)))
    r = {"blocks": nblocks, "tree_version": meta["tree_version"], "next_leaf_id": meta["next_leaf_id"],
         "splits": meta["splits"], "types": {}, "new_chain_pages": 0, "new_tree_pages": 0,
         "old_tree_pages": 0}
    for page in pages:
        if not any(page):
            r["types"]["new"] = r["types"].get("new", 0) + 1
            continue
        special = struct.unpack_from("<H", page, 16)[0]
        o = OPAQUE.unpack_from(page, special)
        kind = PAGE_TYPES.get(o[7], "other")
        r["types"][kind] = r["types"].get(kind, 0) + 1
        if kind == "posting" and o[4] >= meta["next_leaf_id"]:
            r["new_chain_pages"] += 1      # a chain of a split not published
        elif kind == "tree" and o[4] > meta["tree_version"]:
            r["new_tree_pages"] += 1       # the tree of a split not published
        elif kind == "tree" and o[4] < meta["tree_version"]:
            r["old_tree_pages"] += 1       # an earlier version not freed
    print(json.dumps(r))
    return 0


# ----------------------------------------------------------------- scan-check

def cmd_scan_check(a):
    """Scans while others write and split leaves, in three kinds by turn:
    all leaves, strict order, every row; probes 1, relaxed order, every row,
    paused after the first rows (later rounds read leaves after splits and
    VACUUMs); probes 1-10, strict order, a LIMIT, paused. Each returns a row
    at most once; strict ones in non-decreasing distance; "every row" ones
    exactly the rows a sequential scan of the same snapshot sees."""
    conn = connect(a.port, a.db, autocommit=False)
    rnd = random.Random(a.seed)
    r = {"scans": 0, "complete_scans": 0, "rows": 0, "duplicates": 0, "out_of_order": 0,
         "missing": 0, "extra": 0, "errors": 0, "examples": []}
    deadline = time.time() + a.seconds
    n = 0
    while time.time() < deadline:
        kind = n % 3
        n += 1
        q = [round(rnd.uniform(-3, 3), 4) for _ in range(a.dims)]
        probes = {0: 1000000, 1: 1}.get(kind, rnd.choice([1, 2, 10]))
        limit = "" if kind < 2 else f"LIMIT {rnd.choice([10, 100, 1000])}"
        try:
            cur = conn.cursor()
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SET LOCAL enable_seqscan = off")
            cur.execute("SET LOCAL enable_bitmapscan = off")
            cur.execute(f"SET LOCAL vidx.probes = {probes}")
            cur.execute("SET LOCAL vidx.iterative_scan = "
                        + ("relaxed_order" if kind == 1 else "strict_order"))
            sc = conn.cursor(name="scan")
            sc.execute(f"SELECT id, v <-> %s::real[] FROM {a.table} ORDER BY v <-> %s::real[] {limit}", (q, q))
            got = sc.fetchmany(10)
            if kind > 0:
                time.sleep(a.pause)
            got += sc.fetchall()
            sc.close()
            ids = [i for i, _ in got]
            dup = len(ids) - len(set(ids))
            bad = 0 if kind == 1 else sum(1 for x, y in zip(got, got[1:]) if y[1] < x[1])
            r["duplicates"] += dup
            r["out_of_order"] += bad
            if (dup or bad) and len(r["examples"]) < 5:
                r["examples"].append(f"scan {n} (probes {probes} {limit}): {dup} duplicates, {bad} out of order")
            if kind < 2:
                cur.execute("SET LOCAL enable_seqscan = on")
                cur.execute("SET LOCAL enable_indexscan = off")
                cur.execute(f"SELECT id FROM {a.table} WHERE v IS NOT NULL")
                table_ids = {i for (i,) in cur.fetchall()}
                miss = len(table_ids - set(ids))
                extra = len(set(ids) - table_ids)
                r["missing"] += miss
                r["extra"] += extra
                r["complete_scans"] += 1
                if (miss or extra) and len(r["examples"]) < 5:
                    r["examples"].append(f"scan {n} (probes {probes}): {miss} missing, {extra} extra of {len(table_ids)}")
            conn.commit()
            r["scans"] += 1
            r["rows"] += len(got)
        except psycopg.Error as e:
            r["errors"] += 1
            if len(r["examples"]) < 5:
                r["examples"].append(f"scan {n}: {str(e).strip()}")
            conn.rollback()
    print(json.dumps(r))
    bad = r["duplicates"] or r["out_of_order"] or r["missing"] or r["extra"] or r["errors"]
    return 1 if bad or r["complete_scans"] == 0 else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("writer")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--db", default="postgres")
    w.add_argument("--table", default="t")
    w.add_argument("--dims", type=int, required=True)
    w.add_argument("--journal", required=True)
    w.add_argument("--clients", type=int, default=4)
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--id-base", type=int, default=100_000_000)
    w.add_argument("--max-ops", type=int, default=10**9)
    w.add_argument("--seconds", type=float, default=600)
    w.add_argument("--batch", type=int, default=5)
    w.add_argument("--insert-weight", type=float, default=1)
    w.add_argument("--update-weight", type=float, default=0)
    w.add_argument("--delete-weight", type=float, default=0)
    w.add_argument("--pause", type=float, default=0)
    w.add_argument("--stop-on-loss", action="store_true")
    c = sub.add_parser("check")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--db", default="postgres")
    c.add_argument("--table", default="t")
    c.add_argument("--index", required=True)
    c.add_argument("--dims", type=int, required=True)
    c.add_argument("--journal", default="")
    c.add_argument("--queries", type=int, default=3)
    c.add_argument("--sample", type=int, default=200)
    c.add_argument("--no-sidecar", action="store_true", help="vidx_verify without the sidecar check")
    v = sub.add_parser("verify-loop")
    v.add_argument("--port", type=int, required=True)
    v.add_argument("--db", default="postgres")
    v.add_argument("--index", required=True)
    v.add_argument("--seconds", type=float, default=60)
    s = sub.add_parser("sync")
    s.add_argument("--primary", type=int, required=True)
    s.add_argument("--standby", type=int, required=True)
    s.add_argument("--db", default="postgres")
    s.add_argument("--timeout", type=float, default=300)
    m = sub.add_parser("compare")
    m.add_argument("--port1", type=int, required=True)
    m.add_argument("--port2", type=int, required=True)
    m.add_argument("--db", default="postgres")
    m.add_argument("--table", default="t")
    m.add_argument("--dims", type=int, required=True)
    m.add_argument("--queries", type=int, default=20)
    m.add_argument("--k", type=int, default=10)
    m.add_argument("--probes", type=int, default=10)
    m.add_argument("--exact", action="store_true")
    m.add_argument("--rerank", type=int, default=0)
    g = sub.add_parser("pages")
    g.add_argument("--port", type=int, required=True)
    g.add_argument("--db", default="postgres")
    g.add_argument("--index", required=True)
    k = sub.add_parser("scan-check")
    k.add_argument("--port", type=int, required=True)
    k.add_argument("--db", default="postgres")
    k.add_argument("--table", default="t")
    k.add_argument("--dims", type=int, required=True)
    k.add_argument("--seconds", type=float, default=60)
    k.add_argument("--pause", type=float, default=0.3, help="seconds between a scan's first rows and the rest")
    k.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if a.cmd == "check":
        # a check that cannot finish (the index raised an error) is a failed check,
        # never one that printed no "not ok" line
        try:
            return cmd_check(a)
        except (psycopg.Error, OSError) as e:
            print(f"not ok - the check raised: {str(e).strip()}")
            return 1
    return {"writer": cmd_writer, "check": cmd_check, "verify-loop": cmd_verify_loop,
            "sync": cmd_sync, "compare": cmd_compare, "pages": cmd_pages,
            "scan-check": cmd_scan_check}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
