#!/usr/bin/python3
"""Fashion-MNIST helpers for vidx tests and benchmarks.

Reads the gzipped IDX files of Debian's ``dataset-fashion-mnist`` package
(60,000 train and 10,000 test images of 28x28 = 784 uint8 pixels), loads them
into PostgreSQL tables, computes exact top-k ground truth with numpy (cached
under bench/data/), and measures recall@k, latency and throughput of
``ORDER BY embedding <-> q LIMIT k`` queries.

Run with Debian's /usr/bin/python3 (numpy + psycopg 3). Connection settings
come from the usual libpq environment (PGHOST, PGPORT, ...), e.g. inside
``pg_virtualenv``.

Subcommands (``/usr/bin/python3 bench/fmnist.py SUBCOMMAND --help``):

  export   write TSV files for COPY (train, queries, ground truth) for the tests
  load     load train rows (and queries) into tables
  gt       compute / cache exact ground truth
  index    CREATE INDEX with progress from pg_stat_progress_create_index
  bench    run queries one at a time, print recall@k, p50/p99 latency, QPS
  demo     everything above, plus an exact-scan baseline and the speedup
"""

import argparse
import gzip
import os
import struct
import sys
import threading
import time

import numpy as np

DATASET_DIR = os.environ.get("FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
CACHE_DIR = os.path.join(BENCH_DIR, "data")

# Text of 0..255 for fast array literals of uint8 data.
_LUT = np.array([str(i) for i in range(256)], dtype=object)

# ---------------------------------------------------------------- dataset


def _read_idx(path, n=None):
    """Reads an IDX file (gzipped or not); returns a numpy array (first n items)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        magic = f.read(4)
        if len(magic) != 4 or magic[0] != 0 or magic[1] != 0:
            raise ValueError(f"{path}: not an IDX file")
        dtype_code, ndim = magic[2], magic[3]
        if dtype_code != 0x08:
            raise ValueError(f"{path}: only uint8 IDX files are supported")
        shape = list(struct.unpack(">" + "I" * ndim, f.read(4 * ndim)))
        total = shape[0]
        count = total if n is None else min(int(n), total)
        item = int(np.prod(shape[1:])) if ndim > 1 else 1
        buf = f.read(count * item)
        if len(buf) != count * item:
            raise ValueError(f"{path}: truncated")
        arr = np.frombuffer(buf, dtype=np.uint8)
        return arr.reshape(count, item) if ndim > 1 else arr


def train_images(n=None):
    """(n, 784) uint8: the train images (first n rows)."""
    return _read_idx(os.path.join(DATASET_DIR, "train-images-idx3-ubyte.gz"), n)


def train_labels(n=None):
    return _read_idx(os.path.join(DATASET_DIR, "train-labels-idx1-ubyte.gz"), n)


def test_images(n=None):
    """(n, 784) uint8: the test images (first n rows), used as queries."""
    return _read_idx(os.path.join(DATASET_DIR, "t10k-images-idx3-ubyte.gz"), n)


def test_labels(n=None):
    return _read_idx(os.path.join(DATASET_DIR, "t10k-labels-idx1-ubyte.gz"), n)


def select_queries(nq, seed=None, total=10000):
    """Indices of nq test images: the first nq, or a seeded random subset."""
    nq = min(int(nq), total)
    if seed is None:
        return np.arange(nq)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=nq, replace=False))


def array_literal(row):
    """PostgreSQL array text of one vector ('{1,2,3}')."""
    if row.dtype == np.uint8:
        return "{" + ",".join(_LUT[row]) + "}"
    return "{" + ",".join(repr(float(x)) for x in row) + "}"


# ---------------------------------------------------------- ground truth


def exact_knn(X, Q, k, block=256):
    """Exact L2 top-k of each row of Q among the rows of X.

    Returns (ids, dists): int64 row numbers into X (0-based) and float64
    Euclidean distances, ordered by (distance, row number) so that ties are
    deterministic. Candidates come from a blocked float32 matmul and are then
    re-scored in float64, so the result is exact for any practical data.
    """
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    Q32 = np.ascontiguousarray(Q, dtype=np.float32)
    X64 = np.asarray(X, dtype=np.float64)
    xn = (X64 * X64).sum(axis=1).astype(np.float32)
    k = min(k, X.shape[0])
    # generous slack absorbs float32 rounding of the squared norms
    cand = min(X.shape[0], max(2 * k, k + 64))
    ids_out = np.empty((Q.shape[0], k), dtype=np.int64)
    d_out = np.empty((Q.shape[0], k), dtype=np.float64)
    for s in range(0, Q.shape[0], block):
        q32 = Q32[s:s + block]
        d2 = xn[None, :] - 2.0 * (q32 @ X32.T)  # + |q|^2 is constant per row
        part = np.argpartition(d2, cand - 1, axis=1)[:, :cand]
        for i in range(q32.shape[0]):
            c = part[i]
            diff = X64[c] - np.asarray(Q[s + i], dtype=np.float64)[None, :]
            dd = np.sqrt((diff * diff).sum(axis=1))
            order = np.lexsort((c, dd))[:k]
            ids_out[s + i] = c[order]
            d_out[s + i] = dd[order]
    return ids_out, d_out


def ground_truth(n_train, query_idx, k, cache=True, X=None, Q=None, verbose=True):
    """Cached exact top-k for the first n_train train rows and the given test rows."""
    key = f"gt_n{n_train}_q{len(query_idx)}_h{_hash_idx(query_idx)}_k{k}"
    ids_path = os.path.join(CACHE_DIR, key + "_ids.npy")
    d_path = os.path.join(CACHE_DIR, key + "_dist.npy")
    if cache and os.path.exists(ids_path) and os.path.exists(d_path):
        return np.load(ids_path), np.load(d_path)
    if X is None:
        X = train_images(n_train)
    if Q is None:
        Q = test_images()[query_idx]
    t0 = time.perf_counter()
    ids, d = exact_knn(X, Q, k)
    if verbose:
        print(f"ground truth: exact top-{k} of {len(Q)} queries over {len(X)} rows "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
    if cache:
        os.makedirs(CACHE_DIR, exist_ok=True)
        np.save(ids_path, ids)
        np.save(d_path, d)
    return ids, d


def _hash_idx(idx):
    import hashlib
    return hashlib.sha1(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()[:10]


def recall_at_k(result_ids, gt_dist, X, q, k, eps=1e-4):
    """Tie-aware recall of one query: results within the exact k-th distance.

    result_ids are row numbers into X; a result counts if its exact distance is
    at most the k-th exact distance (so ties at the boundary are not penalized).
    """
    if len(result_ids) == 0:
        return 0.0
    r = np.asarray(result_ids[:k], dtype=np.int64)
    diff = np.asarray(X[r], dtype=np.float64) - np.asarray(q, dtype=np.float64)[None, :]
    dd = np.sqrt((diff * diff).sum(axis=1))
    kth = gt_dist[k - 1]
    return float(np.count_nonzero(dd <= kth * (1 + eps) + eps)) / k


# ------------------------------------------------------------- database


def connect(dsn="", autocommit=True):
    import psycopg
    return psycopg.connect(dsn, autocommit=autocommit)


def create_table(conn, table, with_label=True, drop=True):
    with conn.cursor() as cur:
        if drop:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        cols = "id bigint PRIMARY KEY, " + ("label int, " if with_label else "") + "embedding real[]"
        cur.execute(f"CREATE TABLE {table} ({cols})")


def copy_vectors(conn, table, X, labels=None, start_id=1, batch=2000):
    """COPY rows (id, [label,] embedding) into table; ids start at start_id.

    Row i of X gets id start_id + i. Uses text COPY through psycopg's copy().
    """
    cols = "(id, label, embedding)" if labels is not None else "(id, embedding)"
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} {cols} FROM STDIN") as cp:
            for s in range(0, len(X), batch):
                lines = []
                for i in range(s, min(s + batch, len(X))):
                    if labels is not None:
                        lines.append(f"{start_id + i}\t{int(labels[i])}\t{array_literal(X[i])}\n")
                    else:
                        lines.append(f"{start_id + i}\t{array_literal(X[i])}\n")
                cp.write("".join(lines))


def load_train(conn, table="fmnist_train", rows=None, analyze=True, verbose=True):
    X = train_images(rows)
    y = train_labels(rows)
    t0 = time.perf_counter()
    create_table(conn, table)
    copy_vectors(conn, table, X, y, start_id=1)
    if analyze:
        with conn.cursor() as cur:
            cur.execute(f"VACUUM ANALYZE {table}")
    if verbose:
        print(f"loaded {len(X)} rows into {table} in {time.perf_counter() - t0:.1f} s", flush=True)
    return X


def load_queries(conn, query_idx, table="fmnist_query", verbose=True):
    Q = test_images()[query_idx]
    y = test_labels()[query_idx]
    create_table(conn, table)
    copy_vectors(conn, table, Q, y, start_id=1)
    if verbose:
        print(f"loaded {len(Q)} query vectors into {table}", flush=True)
    return Q


def relation_size(conn, rel):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_relation_size(%s::regclass), pg_size_pretty(pg_relation_size(%s::regclass))",
                    (rel, rel))
        return cur.fetchone()


def create_index(conn, table, index_name, opclass="vidx_l2_ops", options=None,
                 dsn="", poll=1.0, show_progress=True):
    """CREATE INDEX in this connection while a second connection prints progress.

    Returns the build time in seconds.
    """
    with_clause = ""
    if options:
        with_clause = " WITH (" + ", ".join(f"{k} = {v}" for k, v in options.items()) + ")"
    sql = (f"CREATE INDEX {index_name} ON {table} USING vidx (embedding {opclass})"
           f"{with_clause}")
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        cur.execute(f"DROP INDEX IF EXISTS {index_name}")

    done = threading.Event()
    err = []

    def build():
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        except Exception as e:  # reported by the caller's thread
            err.append(e)
        finally:
            done.set()

    print(sql, flush=True)
    t0 = time.perf_counter()
    th = threading.Thread(target=build)
    th.start()
    last = None
    if show_progress:
        mon = connect(dsn)
        try:
            with mon.cursor() as cur:
                while not done.wait(poll):
                    cur.execute(
                        "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total "
                        "FROM pg_stat_progress_create_index WHERE pid = %s", (pid,))
                    row = cur.fetchone()
                    if row is None:
                        continue
                    phase, bd, bt, td, tt = row
                    line = f"  [{time.perf_counter() - t0:6.1f} s] {phase}"
                    if bt:
                        line += f"  blocks {bd}/{bt} ({100.0 * bd / bt:.0f}%)"
                    if tt:
                        line += f"  tuples {td}/{tt} ({100.0 * td / tt:.0f}%)"
                    elif td:
                        line += f"  tuples {td}"
                    if line.split("]", 1)[1] != last:
                        print(line, flush=True)
                        last = line.split("]", 1)[1]
        finally:
            mon.close()
    th.join()
    elapsed = time.perf_counter() - t0
    if err:
        raise err[0]
    print(f"  index built in {elapsed:.1f} s", flush=True)
    return elapsed


def run_queries(conn, table, Q, k=10, gt_dist=None, X=None, settings=None,
                exact=False, label=""):
    """Runs the queries one at a time through a prepared statement.

    Q: query vectors; X: the table's vectors (row i has id i + 1) to score
    recall against gt_dist. settings: dict of SET name -> value. exact=True
    disables index scans (exact baseline). Returns a dict of metrics.
    """
    with conn.cursor() as cur:
        cur.execute("RESET ALL")
        for name, value in (settings or {}).items():
            cur.execute(f"SET {name} = {value}")
        if exact:
            cur.execute("SET enable_indexscan = off")
            cur.execute("SET enable_bitmapscan = off")
        # %b: the query vector goes as a binary double precision[] parameter
        # (what a client sends for a list of floats), cast to real[] server-side.
        sql = f"SELECT id FROM {table} ORDER BY embedding <-> %b::real[] LIMIT %s"
        params = [[float(v) for v in q] for q in Q]
        # warm up and make sure the prepared plan is used for every query
        cur.execute(sql, (params[0], k), prepare=True)
        cur.fetchall()
        lat = np.empty(len(Q))
        recalls = []
        t_all = time.perf_counter()
        for i, p in enumerate(params):
            t0 = time.perf_counter()
            cur.execute(sql, (p, k), prepare=True)
            rows = cur.fetchall()
            lat[i] = time.perf_counter() - t0
            if gt_dist is not None and X is not None:
                recalls.append(recall_at_k([r[0] - 1 for r in rows], gt_dist[i], X, Q[i], k))
        wall = time.perf_counter() - t_all
        cur.execute("EXPLAIN (COSTS OFF) " + sql.replace("%b::real[]", "'{0}'::real[]")
                    .replace("%s", str(k)))
        plan = " / ".join(r[0].strip() for r in cur.fetchall())
        cur.execute("RESET ALL")
    res = {
        "label": label,
        "queries": len(Q),
        "recall": float(np.mean(recalls)) if recalls else float("nan"),
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
        "mean_ms": float(lat.mean() * 1000),
        "qps": len(Q) / wall,
        "plan": plan,
    }
    return res


def format_result(r, k=10):
    return (f"{r['label']:<28} queries={r['queries']:<6} recall@{k}={r['recall']:.4f}  "
            f"p50={r['p50_ms']:.2f} ms  p99={r['p99_ms']:.2f} ms  QPS={r['qps']:.1f}")


# ------------------------------------------------------------------ CLI


def cmd_export(a):
    """Writes TSV files (text COPY format) for the pgTAP tests."""
    os.makedirs(a.out, exist_ok=True)
    X = train_images(a.rows)
    y = train_labels(a.rows)
    qidx = select_queries(a.queries, a.seed)
    Q = test_images()[qidx]
    yq = test_labels()[qidx]
    with open(os.path.join(a.out, "fmnist_train.tsv"), "w") as f:
        for i in range(len(X)):
            f.write(f"{i + 1}\t{int(y[i])}\t{array_literal(X[i])}\n")
    with open(os.path.join(a.out, "fmnist_query.tsv"), "w") as f:
        for i in range(len(Q)):
            f.write(f"{i + 1}\t{int(yq[i])}\t{array_literal(Q[i])}\n")
    ids, d = ground_truth(len(X), qidx, a.k, cache=not a.no_cache, X=X, Q=Q, verbose=True)
    with open(os.path.join(a.out, "fmnist_gt.tsv"), "w") as f:
        for qi in range(len(Q)):
            for r in range(ids.shape[1]):
                f.write(f"{qi + 1}\t{r + 1}\t{ids[qi, r] + 1}\t{d[qi, r]:.6f}\n")
    print(f"exported {len(X)} train rows, {len(Q)} queries and top-{a.k} ground truth to {a.out}")


def cmd_load(a):
    conn = connect(a.dsn)
    load_train(conn, a.table, a.rows)
    if a.queries:
        load_queries(conn, select_queries(a.queries, a.seed), a.query_table)
    conn.close()


def cmd_gt(a):
    n = a.rows or 60000
    ids, d = ground_truth(n, select_queries(a.queries, a.seed), a.k, cache=not a.no_cache)
    print(f"ground truth shape {ids.shape}; first query: {list(ids[0] + 1)}")


def cmd_index(a):
    conn = connect(a.dsn)
    opts = dict(kv.split("=", 1) for kv in a.with_opt) if a.with_opt else None
    create_index(conn, a.table, a.index, a.opclass, opts, dsn=a.dsn)
    print("index size: %s" % relation_size(conn, a.index)[1])
    conn.close()


def _settings(a):
    s = {}
    if a.probes is not None:
        s["vidx.probes"] = a.probes
    if a.rerank is not None:
        s["vidx.rerank"] = a.rerank
    return s


def cmd_bench(a):
    conn = connect(a.dsn)
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {a.table}")
        n = cur.fetchone()[0]
    qidx = select_queries(a.queries, a.seed)
    X = train_images(n)
    Q = test_images()[qidx]
    _, gd = ground_truth(n, qidx, a.k, X=X, Q=Q, cache=not a.no_cache)
    r = run_queries(conn, a.table, Q, a.k, gd, X, _settings(a), exact=a.exact,
                    label="exact scan" if a.exact else "vidx index")
    print(format_result(r, a.k))
    print(f"  plan: {r['plan']}")
    conn.close()
    if a.min_recall is not None and r["recall"] < a.min_recall:
        print(f"FAIL: recall {r['recall']:.4f} < {a.min_recall}")
        return 1
    return 0


def cmd_demo(a):
    print("== vidx demo: Fashion-MNIST (784 dims, L2) ==", flush=True)
    conn = connect(a.dsn)
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS vidx")
        cur.execute("SELECT version()")
        print(cur.fetchone()[0])
        cur.execute("SHOW shared_buffers")
        print("shared_buffers =", cur.fetchone()[0], flush=True)

    print(f"\n-- loading {a.rows} train vectors", flush=True)
    X = load_train(conn, "fmnist_train", a.rows)
    qidx = select_queries(a.queries, a.seed)
    Q = test_images()[qidx]

    print(f"\n-- exact ground truth (numpy) for {len(Q)} queries", flush=True)
    _, gd = ground_truth(len(X), qidx, a.k, X=X, Q=Q, cache=not a.no_cache)

    print("\n-- building the vidx index", flush=True)
    opts = dict(kv.split("=", 1) for kv in a.with_opt) if a.with_opt else None
    build_s = create_index(conn, "fmnist_train", "fmnist_train_vidx", "vidx_l2_ops", opts,
                           dsn=a.dsn)
    isize, isize_pretty = relation_size(conn, "fmnist_train_vidx")
    tsize = relation_size(conn, "fmnist_train")[1]
    sidecar = None
    with conn.cursor() as cur:
        try:
            cur.execute("SELECT vidx_stats('fmnist_train_vidx')")
            stats = cur.fetchone()[0]
            print(f"  vidx_stats: {stats}")
        except Exception as e:  # keep the demo going; report it
            print(f"  vidx_stats failed: {e}")

    print(f"\n-- {len(Q)} queries, one at a time (prepared statement, k={a.k})", flush=True)
    results = []
    probes_list = [None if p.strip() in ("", "default") else int(p)
                   for p in (a.probes_list or "default").split(",")]
    if None in probes_list:  # the default-settings run first: it is the headline
        probes_list.remove(None)
        probes_list.insert(0, None)
    for p in probes_list:
        s = {} if p is None else {"vidx.probes": p}
        label = "vidx (default probes)" if p is None else f"vidx probes={p}"
        r = run_queries(conn, "fmnist_train", Q, a.k, gd, X, s, label=label)
        print(format_result(r, a.k), flush=True)
        results.append(r)
    if "Index Scan" not in results[0]["plan"]:
        print(f"  WARNING: plan does not use the index: {results[0]['plan']}")

    ne = min(a.exact_queries, len(Q))
    print(f"\n-- exact baseline: {ne} queries with enable_indexscan = off", flush=True)
    ex = run_queries(conn, "fmnist_train", Q[:ne], a.k, gd[:ne], X, {}, exact=True,
                     label="exact scan")
    print(format_result(ex, a.k), flush=True)

    best = results[0]
    print("\n== summary ==")
    print(f"rows                 {len(X)} x {X.shape[1]} dims (table {tsize})")
    print(f"index build time     {build_s:.1f} s")
    print(f"index size           {isize_pretty} ({isize / len(X):.0f} bytes/row)")
    print(f"recall@{a.k}            {best['recall']:.4f}  ({best['queries']} queries)")
    print(f"latency p50 / p99    {best['p50_ms']:.2f} ms / {best['p99_ms']:.2f} ms")
    print(f"QPS (1 client)       {best['qps']:.1f}")
    print(f"exact scan           p50 {ex['p50_ms']:.1f} ms, QPS {ex['qps']:.2f}, "
          f"recall@{a.k} {ex['recall']:.4f}")
    print(f"speedup vs exact     {ex['p50_ms'] / best['p50_ms']:.1f}x (p50 latency), "
          f"{best['qps'] / ex['qps']:.1f}x (QPS)")
    conn.close()
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, rows_default=None, queries_default=100):
        p.add_argument("--rows", type=int, default=rows_default, help="first N train rows (default all)")
        p.add_argument("--queries", type=int, default=queries_default, help="number of test queries")
        p.add_argument("--seed", type=int, default=None,
                       help="pick queries at random with this seed (default: the first N)")
        p.add_argument("-k", type=int, default=10)
        p.add_argument("--no-cache", action="store_true", help="do not read/write bench/data/*.npy")
        p.add_argument("--dsn", default="", help="libpq connection string (default: environment)")

    p = sub.add_parser("export", help="write TSV test data")
    common(p, 20000)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("load", help="load train (and query) vectors into tables")
    common(p, None, 0)
    p.add_argument("--table", default="fmnist_train")
    p.add_argument("--query-table", default="fmnist_query")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("gt", help="compute and cache exact ground truth")
    common(p)
    p.set_defaults(func=cmd_gt)

    p = sub.add_parser("index", help="create a vidx index, showing build progress")
    p.add_argument("--table", default="fmnist_train")
    p.add_argument("--index", default="fmnist_train_vidx")
    p.add_argument("--opclass", default="vidx_l2_ops")
    p.add_argument("--with", dest="with_opt", action="append", help="index option name=value")
    p.add_argument("--dsn", default="")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("bench", help="run queries; print recall, p50/p99, QPS")
    common(p, None, 1000)
    p.add_argument("--table", default="fmnist_train")
    p.add_argument("--probes", type=int)
    p.add_argument("--rerank", type=int)
    p.add_argument("--exact", action="store_true", help="exact scan (index scans off)")
    p.add_argument("--min-recall", type=float, help="exit 1 if recall is lower")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="load, index, query, compare with exact scan")
    common(p, 60000, 1000)
    p.add_argument("--exact-queries", type=int, default=100)
    p.add_argument("--probes-list", default="default,1,4,20,50",
                   help="comma-separated vidx.probes values to run ('default' = the default setting)")
    p.add_argument("--with", dest="with_opt", action="append", help="index option name=value")
    p.set_defaults(func=cmd_demo)

    a = ap.parse_args(argv)
    return a.func(a) or 0


if __name__ == "__main__":
    sys.exit(main())
