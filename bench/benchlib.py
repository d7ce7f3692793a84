"""Shared helpers of the vidx benchmark suite (bench/*.py).

Datasets on disk, exact ground truth with FAISS, loading into PostgreSQL with
binary COPY, timing one-client queries through a prepared statement, backend
memory, sidecar size, machine description. Run everything with Debian's
/usr/bin/python3 (numpy, psycopg 3, faiss, matplotlib).

A dataset lives in bench/data/<name>/ (gitignored):

  base.npy        float32 (N, D), written in chunks (np.lib.format.open_memmap)
  queries.npy     float32 (NQ, D), same distribution, not from the base
  gt_<metric>_k100_ids.npy / _dist.npy   exact top-100 (0-based row numbers,
                  distances in the SQL operator's sense: L2 distance, negative
                  inner product, cosine distance), ordered by (distance, row)
  meta.json       how it was made (generator, seed, sizes)

In PostgreSQL, row i of base.npy has id i + 1 in table <name> and query j has
id j + 1 in table <name>_q.
"""

import json
import os
import platform
import re
import struct
import subprocess
import sys
import time

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
DATA_DIR = os.environ.get("VIDX_BENCH_DATA", os.path.join(BENCH_DIR, "data"))
RESULTS_DIR = os.path.join(BENCH_DIR, "results")

METRICS = ("l2", "ip", "cos")
OPERATOR = {"l2": "<->", "ip": "<#>", "cos": "<=>"}
OPCLASS = {"l2": "vidx_l2_ops", "ip": "vidx_ip_ops", "cos": "vidx_cosine_ops"}
# pgvector mode: the operator classes of vidx_pgvector (USING vidx) and of
# pgvector's own hnsw and ivfflat have the same names.
PGV_OPCLASS = {"l2": "vector_l2_ops", "ip": "vector_ip_ops", "cos": "vector_cosine_ops"}


def fast_blas():
    """Re-executes this script with a private OpenBLAS (multi-threaded) for FAISS/numpy.

    Debian's numpy and faiss link the reference BLAS (libblas.so.3 alternative),
    about 10x slower than OpenBLAS for the ground truth's matrix products. Rather
    than switching the machine's alternative, this extracts libopenblas0-pthread
    (apt-get download + dpkg-deb -x) into bench/data/openblas/ once and puts it
    first on LD_LIBRARY_PATH. Set VIDX_BENCH_BLAS=system to skip.
    """
    import sys
    if os.environ.get("VIDX_BENCH_BLAS"):
        return
    root = os.path.join(DATA_DIR, "openblas")
    libdir = os.path.join(root, "usr/lib/x86_64-linux-gnu/openblas-pthread")
    if not os.path.exists(os.path.join(libdir, "libblas.so.3")):
        os.makedirs(root, exist_ok=True)
        try:
            subprocess.run(["apt-get", "download", "libopenblas0-pthread"], cwd=root, check=True,
                           capture_output=True)
            deb = [f for f in os.listdir(root) if f.endswith(".deb")][0]
            subprocess.run(["dpkg-deb", "-x", os.path.join(root, deb), root], check=True)
        except Exception as e:  # fall back to the system BLAS
            print(f"fast_blas: could not fetch OpenBLAS ({e}); using the system BLAS", flush=True)
            os.environ["VIDX_BENCH_BLAS"] = "system"
            return
    env = dict(os.environ)
    env["VIDX_BENCH_BLAS"] = libdir
    env["LD_LIBRARY_PATH"] = libdir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def log(*a):
    print(time.strftime("[%H:%M:%S]"), *a, flush=True)


# ------------------------------------------------------------- machine


def _cmd(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""


def machine_info(conn=None):
    """Machine, software and commit description recorded in every result file."""
    cpu = ""
    for line in _cmd(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    info = {
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "ram_gib": round(mem_kb / 1048576, 1),
        "kernel": platform.release(),
        "os": _cmd(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "commit": _cmd(["git", "-C", REPO_DIR, "rev-parse", "--short", "HEAD"]),
        "tree_dirty": bool(_cmd(["git", "-C", REPO_DIR, "status", "--porcelain", "--untracked-files=no"])),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_at_start": os.getloadavg(),
    }
    try:
        import faiss
        info["faiss"] = faiss.__version__
    except Exception:
        pass
    if conn is not None:
        with conn.cursor() as cur:
            cur.execute("SELECT version()")
            info["postgres"] = cur.fetchone()[0]
            cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vidx'")
            r = cur.fetchone()
            info["vidx_extversion"] = r[0] if r else None
            s = {}
            for name in ("shared_buffers", "work_mem", "effective_cache_size", "jit", "wal_level",
                         "max_wal_size", "synchronous_commit", "vidx.probes", "vidx.rerank"):
                try:
                    cur.execute(f"SHOW {name}")
                    s[name] = cur.fetchone()[0]
                except Exception:
                    conn.rollback() if not conn.autocommit else None
            info["pg_settings"] = s
    return info


# ------------------------------------------------------------- datasets


def dataset_dir(name):
    return os.path.join(DATA_DIR, name)


def machine_line(m):
    """The "Machine: ..." line of a results.md, from machine_info()."""
    return (f"Machine: {m['cpu_model']}, {m['cpus']} CPUs, {m['ram_gib']} GiB RAM, {m['os']}; "
            f"{m.get('postgres', '').split(' on ')[0]}; FAISS {m.get('faiss')}; commit {m['commit']}"
            f"{' (+ uncommitted changes in the tree)' if m.get('tree_dirty') else ''}; {m['date_utc']}; "
            f"load average at start {', '.join(f'{x:.1f}' for x in m['loadavg_at_start'])}.")


def load_dataset(name, mmap=True):
    """(base, queries, meta): base is a read-only memmap unless mmap=False."""
    d = dataset_dir(name)
    queries = np.load(os.path.join(d, "queries.npy"))
    meta = {}
    if os.path.exists(os.path.join(d, "meta.json")):
        with open(os.path.join(d, "meta.json")) as f:
            meta = json.load(f)
    if meta.get("virtual"):
        import datagen
        base = datagen.VirtualBase(datagen.generator_of(meta), meta["rows"], meta["chunk"])
    else:
        base = np.load(os.path.join(d, "base.npy"), mmap_mode="r" if mmap else None)
    return base, queries, meta


class RowSubset:
    """Some rows of a base, fetched in one call (a VirtualBase generates each
    chunk once per call, not once per query): indexing by row numbers among
    them returns their vectors."""

    def __init__(self, base, rows):
        self.rows = np.unique(np.asarray(rows, dtype=np.int64).ravel())
        self.vectors = base[self.rows]

    def __getitem__(self, rows):
        return self.vectors[np.searchsorted(self.rows, np.asarray(rows, dtype=np.int64))]


def rows_of(base, rows):
    """base itself when it is an array (memmap), else a RowSubset of rows."""
    return base if isinstance(base, np.ndarray) else RowSubset(base, rows)


def gt_paths(name, metric, k=100):
    d = dataset_dir(name)
    return (os.path.join(d, f"gt_{metric}_k{k}_ids.npy"), os.path.join(d, f"gt_{metric}_k{k}_dist.npy"))


def exact_distances(X, q, metric):
    """float64 distances (SQL operator sense) of rows X to query q."""
    X = np.asarray(X, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if metric == "l2":
        diff = X - q[None, :]
        return np.sqrt((diff * diff).sum(axis=1))
    if metric == "ip":
        return -(X @ q)
    if metric == "cos":
        xn = np.sqrt((X * X).sum(axis=1))
        return 1.0 - (X @ q) / (xn * np.sqrt(q @ q))
    raise ValueError(metric)


def compute_gt(base, queries, metric, k=100, block=200_000, slack=16, threads=None, verbose=True):
    """Exact top-k by FAISS brute force over base blocks, re-scored in float64.

    The base is read block by block (a memmap is fine), each block is searched
    by all queries with faiss.knn (multi-threaded BLAS/OpenMP), and the running
    top-(k + slack) is merged. The candidates are then re-scored in float64 and
    ordered by (distance, row), so float32 rounding never changes the result.
    """
    import faiss
    if threads:
        faiss.omp_set_num_threads(threads)
    n, d = base.shape
    Q = np.ascontiguousarray(queries, dtype=np.float32)
    if metric == "cos":
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    kk = min(n, k + slack)
    fmetric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    best_d = None
    best_i = None
    t0 = time.perf_counter()
    for s in range(0, n, block):
        xb = np.ascontiguousarray(base[s:s + block], dtype=np.float32)
        if metric == "cos":
            xb = xb / np.linalg.norm(xb, axis=1, keepdims=True)
        dd, ii = faiss.knn(Q, xb, min(kk, len(xb)), metric=fmetric)
        if fmetric == faiss.METRIC_INNER_PRODUCT:
            dd = -dd  # smaller is better from here on
        ii = ii.astype(np.int64) + s
        if best_d is None:
            best_d, best_i = dd, ii
        else:
            cd = np.concatenate([best_d, dd], axis=1)
            ci = np.concatenate([best_i, ii], axis=1)
            part = np.argpartition(cd, kk - 1, axis=1)[:, :kk]
            best_d = np.take_along_axis(cd, part, axis=1)
            best_i = np.take_along_axis(ci, part, axis=1)
        if verbose:
            log(f"  ground truth {metric}: {min(s + block, n):,}/{n:,} rows "
                f"({time.perf_counter() - t0:.0f} s)")
    ids = np.empty((len(Q), k), dtype=np.int64)
    dist = np.empty((len(Q), k), dtype=np.float64)
    cand = rows_of(base, best_i)
    for qi in range(len(Q)):
        c = np.sort(best_i[qi])
        ex = exact_distances(cand[c], queries[qi], metric)
        order = np.lexsort((c, ex))[:k]
        ids[qi] = c[order]
        dist[qi] = ex[order]
    return ids, dist


def ensure_gt(name, metric, k=100, verbose=True):
    ip, dp = gt_paths(name, metric, k)
    if os.path.exists(ip) and os.path.exists(dp):
        return np.load(ip), np.load(dp)
    base, queries, _ = load_dataset(name)
    t0 = time.perf_counter()
    ids, dist = compute_gt(base, queries, metric, k, verbose=verbose)
    np.save(ip, ids)
    np.save(dp, dist)
    mp = os.path.join(dataset_dir(name), "meta.json")
    if os.path.exists(mp):
        with open(mp) as f:
            meta = json.load(f)
        meta[f"gt_{metric}_s"] = round(time.perf_counter() - t0, 1)
        with open(mp, "w") as f:
            json.dump(meta, f, indent=1)
    if verbose:
        log(f"ground truth {name} {metric}: top-{k} of {len(queries)} queries over "
            f"{len(base):,} rows in {time.perf_counter() - t0:.1f} s (cached in {ip})")
    return ids, dist


def recall(result_rows, gt_dist_row, base, q, metric, k, eps=1e-5):
    """Tie-aware recall@k of one query.

    result_rows are 0-based rows of base; a returned row counts if its exact
    distance is within the exact k-th distance (ties at the boundary are not
    penalized, as in ann-benchmarks).
    """
    r = np.asarray(result_rows[:k], dtype=np.int64)
    if len(r) == 0:
        return 0.0
    dd = exact_distances(base[np.sort(r)], q, metric)
    kth = gt_dist_row[k - 1]
    return float(np.count_nonzero(dd <= kth + eps * (abs(kth) + 1.0))) / k


# ------------------------------------------------------------- PostgreSQL


def _float4_array_dumper():
    """psycopg binary dumper: a float32 numpy array (1-D: one vector, 2-D: one
    per row) as a real[] parameter, encoded with numpy (no per-element Python
    work), as a client library for vectors would send it."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class Float4ArrayDumper(Dumper):
        format = Format.BINARY
        oid = 1021  # real[]

        def dump(self, obj):
            a = np.asarray(obj, dtype=np.float32)
            hdr = struct.pack(f">iii{2 * a.ndim}i", a.ndim, 0, 700,
                              *[x for n in a.shape for x in (n, 1)])
            body = np.empty(a.size, dtype=[("len", ">i4"), ("v", ">f4")])
            body["len"] = 4
            body["v"] = a.ravel()
            return hdr + body.tobytes()

    return Float4ArrayDumper


def parse_settings(items):
    """NAME=VALUE strings (the scripts' repeatable --set) as a dict of settings."""
    out = {}
    for x in items:
        name, sep, value = x.partition("=")
        if not sep or not name.strip():
            sys.exit(f"--set wants NAME=VALUE, not {x!r}")
        out[name.strip()] = value.strip()
    return out


def connect(dsn="", autocommit=True):
    import psycopg
    conn = psycopg.connect(dsn, autocommit=autocommit)
    conn.adapters.register_dumper(np.ndarray, _float4_array_dumper())
    return conn


_PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_PGCOPY_TRAILER = struct.pack(">h", -1)


def copy_binary_rows(X, start_id):
    """Binary COPY rows (id bigint, embedding real[]) for a block of vectors."""
    n, d = X.shape
    dt = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("id", ">i8"), ("l2", ">i4"),
                   ("ndim", ">i4"), ("hasnull", ">i4"), ("oid", ">i4"), ("dim", ">i4"),
                   ("lb", ">i4"), ("el", [("len", ">i4"), ("v", ">f4")], (d,))])
    a = np.empty(n, dtype=dt)
    a["nf"] = 2
    a["l1"] = 8
    a["id"] = np.arange(start_id, start_id + n)
    a["l2"] = 20 + 8 * d
    a["ndim"] = 1
    a["hasnull"] = 0
    a["oid"] = 700  # float4
    a["dim"] = d
    a["lb"] = 1
    a["el"]["len"] = 4
    a["el"]["v"] = X
    return a.tobytes()


def table_rows(conn, table):
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        if not cur.fetchone()[0]:
            return None
        cur.execute(f"SELECT count(*) FROM {table}")
        return cur.fetchone()[0]


def _drain(conn):
    """Flushes libpq's output buffer (psycopg 3.1.7's COPY never does: the buffer
    grows to the whole stream and every partial send memmoves all of it)."""
    import select
    pg = conn.pgconn
    while pg.flush() == 1:
        select.select([], [pg.socket], [], 1.0)


def load_table(conn, table, X, chunk=20_000, verbose=True, storage="EXTERNAL", single_tx=True):
    """(Re)creates table (id bigint, embedding real[]) and binary-COPYs X into it.

    X may be a memmap: it is read chunk by chunk. With wal_level = minimal and
    single_tx, the table is created in the COPY's transaction so the heap is
    not WAL-logged. Returns the load time in seconds.
    """
    n = len(X)
    t0 = time.perf_counter()
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(f"CREATE TABLE {table} (id bigint, embedding real[])")
            cur.execute(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE {storage}")
            if not single_tx:
                conn.commit()
            last = t0
            with cur.copy(f"COPY {table} (id, embedding) FROM STDIN (FORMAT binary)") as cp:
                cp.write(_PGCOPY_HEADER)
                for s in range(0, n, chunk):
                    xb = np.asarray(X[s:s + chunk], dtype=np.float32)
                    buf = memoryview(copy_binary_rows(xb, s + 1))
                    # small writes: libpq memmoves its whole output buffer after
                    # every partial send, quadratic for a write of tens of MB
                    for o in range(0, len(buf), 1 << 20):
                        cp.write(buf[o:o + (1 << 20)])
                        _drain(conn)
                    now = time.perf_counter()
                    if verbose and (now - last > 10 or s + chunk >= n):
                        done = min(s + chunk, n)
                        log(f"  COPY {table}: {done:,}/{n:,} rows ({100 * done / n:.0f}%), "
                            f"{now - t0:.0f} s, {done / (now - t0):,.0f} rows/s")
                        last = now
                cp.write(_PGCOPY_TRAILER)
        conn.commit()
    finally:
        conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - t0


STORAGE_CODES = {"plain": "p", "external": "e", "main": "m", "extended": "x"}


def column_storage(conn, table, column="embedding"):
    with conn.cursor() as cur:
        cur.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                    "AND attname = %s", (table, column))
        row = cur.fetchone()
    return row[0] if row else None


def ensure_tables(conn, name, base, queries, verbose=True, storage="EXTERNAL"):
    """Loads <name> and <name>_q unless they already hold the right row counts
    (and the embedding column of <name> has the requested storage)."""
    t = None
    if (table_rows(conn, name) != len(base)
            or column_storage(conn, name) != STORAGE_CODES[storage.lower()]):
        if verbose:
            log(f"loading {len(base):,} x {base.shape[1]} vectors into table {name}")
        t = load_table(conn, name, base, verbose=verbose, storage=storage)
        if verbose:
            log(f"  loaded in {t:.1f} s")
    if table_rows(conn, name + "_q") != len(queries):
        load_table(conn, name + "_q", queries, verbose=False)
        with conn.cursor() as cur:
            cur.execute(f"ALTER TABLE {name}_q ADD PRIMARY KEY (id)")
    return t


def ensure_pgvector_table(conn, name, dim, verbose=True, vtype="vector", storage=None):
    """pgvector mode: <name>_pgv (id bigint, vec vector(dim)) made from <name>'s
    real[] column (the same rows and values), unless it holds as many rows
    (vtype "halfvec": <name>_pgh with a halfvec(dim) column, values rounded to
    half precision). storage: the vector column's storage (None: the type's
    default). Creates the extensions vector and vidx_pgvector. Returns the
    table name."""
    t = name + ("_pgv" if vtype == "vector" else "_pgh")
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        cur.execute("CREATE EXTENSION IF NOT EXISTS vidx_pgvector")
    if (table_rows(conn, t) != table_rows(conn, name)
            or (storage and column_storage(conn, t, "vec") != STORAGE_CODES[storage.lower()])):
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {t}")
            cur.execute(f"CREATE TABLE {t} (id bigint, vec {vtype}({int(dim)}))")
            if storage:
                cur.execute(f"ALTER TABLE {t} ALTER COLUMN vec SET STORAGE {storage.upper()}")
            cur.execute(f"INSERT INTO {t} SELECT id, embedding::{vtype}({int(dim)}) FROM {name} ORDER BY id")
            cur.execute(f"VACUUM ANALYZE {t}")
        if verbose:
            log(f"  {t}: the vectors of {name} as pgvector {vtype}({dim}) in {time.perf_counter() - t0:.1f} s")
    return t


def backend_pid(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def proc_status(pid):
    """VmHWM / VmRSS / RssAnon / RssFile / RssShmem of a process in MiB (we are root)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":")[0]
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key + "_mib"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def data_directory(conn):
    with conn.cursor() as cur:
        cur.execute("SHOW data_directory")
        return cur.fetchone()[0]


def index_info(conn, index, vidx=True):
    """Index size, vidx_stats and sidecar file size (vidx=False: the size only)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_relation_size(%s::regclass)", (index,))
        size = cur.fetchone()[0]
        if not vidx:
            return {"index_bytes": size, "sidecar_bytes": 0, "stats": {}}
        cur.execute("SELECT vidx_stats(%s::regclass)", (index,))
        stats = cur.fetchone()[0]
    sc = stats.get("sidecar", {}) if isinstance(stats, dict) else {}
    sc_size = None
    if sc.get("file"):
        try:
            sc_size = os.path.getsize(os.path.join(data_directory(conn), sc["file"]))
        except OSError:
            sc_size = None
    return {"index_bytes": size, "sidecar_bytes": sc_size, "stats": stats}


def create_index(dsn, table, index, metric="l2", options=None, verbose=True, poll=2.0,
                 column="embedding", using="vidx", opclass=None, settings=None):
    """CREATE INDEX in a fresh backend (so its VmHWM is the build's), with progress.

    column/using/opclass: another column or access method (pgvector mode:
    the vector column, USING hnsw or ivfflat); settings: SET before the build.
    Returns dict(build_s, backend_peak_rss ...).
    """
    import threading
    conn = connect(dsn)
    with conn.cursor() as cur:
        cur.execute(f"DROP INDEX IF EXISTS {index}")
        # every core, as the FAISS builds use (the default follows max_parallel_maintenance_workers)
        cur.execute(f"SET vidx.build_threads = {os.cpu_count()}")
        for name, value in (settings or {}).items():
            cur.execute(f"SET {name} = {value}")
    pid = backend_pid(conn)
    w = ""
    if options:
        w = " WITH (" + ", ".join(f"{k} = {v}" for k, v in options.items()) + ")"
    if using != "vidx" and (settings or {}).get("max_parallel_maintenance_workers"):
        # PostgreSQL plans build workers from the heap's size, which TOASTed
        # vectors leave small: ask for them explicitly, as a pgvector user would
        with conn.cursor() as cur:
            cur.execute(f"ALTER TABLE {table} SET (parallel_workers = "
                        f"{int(settings['max_parallel_maintenance_workers'])})")
    sql = f"CREATE INDEX {index} ON {table} USING {using} ({column} {opclass or OPCLASS[metric]}){w}"
    if verbose:
        log(sql)
    err = []
    done = threading.Event()

    def run():
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        except Exception as e:
            err.append(e)
        finally:
            done.set()

    t0 = time.perf_counter()
    th = threading.Thread(target=run)
    th.start()
    mon = connect(dsn)
    last = None
    last_t = 0.0
    peak = {}
    with mon.cursor() as cur:
        while not done.wait(poll):
            st = proc_status(pid)
            if st.get("VmHWM_mib", 0) >= peak.get("VmHWM_mib", 0):
                peak = st
            if not verbose:
                continue
            cur.execute("SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index "
                        "WHERE pid = %s", (pid,))
            row = cur.fetchone()
            if row is None:
                continue
            phase, td, tt = row
            line = f"  build: {phase}" + (f", tuples {td:,}/{tt:,}" if tt else (f", tuples {td:,}" if td else ""))
            now = time.perf_counter()
            if line != last or now - last_t >= 30:
                log(f"{line} ({now - t0:.0f} s, backend RSS {st.get('VmRSS_mib', 0):,.0f} MiB)")
                last, last_t = line, now
    mon.close()
    th.join()
    build_s = time.perf_counter() - t0
    final = proc_status(pid)
    conn.close()
    if err:
        raise err[0]
    if verbose:
        log(f"  index {index} built in {build_s:.1f} s; build backend VmHWM "
            f"{final.get('VmHWM_mib', peak.get('VmHWM_mib'))} MiB")
    return {"build_s": build_s, "build_backend": final or peak}


# How query vectors travel: "numpy" (binary real[] encoded by numpy, see
# connect) or "list" (a Python list of floats, psycopg's binary float8[]:
# about 0.3 ms of client work per 784-dim query on these machines, the path of
# the pgvector reference figures in issue 4).
CLIENT_ENCODINGS = ("numpy", "list")
client_encoding = "numpy"


def add_client_arg(ap):
    ap.add_argument("--client", choices=CLIENT_ENCODINGS, default="numpy",
                    help="query vector encoding: numpy (binary real[]) or list (Python floats)")


def set_client(name):
    global client_encoding
    client_encoding = name


def vec_param(q):
    """A query vector (or a 2-D block of them) as a parameter, per client_encoding."""
    if client_encoding == "list":
        return np.asarray(q, dtype=np.float64).tolist()
    return np.ascontiguousarray(q, dtype=np.float32)


def trivial_query(conn, queries, n=2000):
    """QPS and p50 of a statement that only carries the vector: the client path's own cost."""
    params = [vec_param(q) for q in queries[:n]]
    lat = np.empty(len(params))
    with conn.cursor() as cur:
        t_all = time.perf_counter()
        for i, p in enumerate(params):
            t0 = time.perf_counter()
            cur.execute("SELECT 1 WHERE %b::real[] IS NOT NULL", (p,), prepare=True)
            cur.fetchall()
            lat[i] = time.perf_counter() - t0
        wall = time.perf_counter() - t_all
    return {"client": client_encoding, "qps": len(params) / wall,
            "p50_ms": float(np.percentile(lat, 50) * 1e3)}


def run_queries(conn, table, queries, metric, k, settings=None, exact=False, base=None,
                gt_dist=None, ks=(1, 10), warmup=1, column="embedding", qtype=None,
                latencies=False):
    """Queries one at a time through a prepared statement (binary real[] param).

    column/qtype: pgvector mode queries the vector column with the same
    binary real[] parameter cast to vector in SQL (qtype "vector"), so vidx
    and pgvector's indexes run on the same client path.
    Returns latency percentiles, QPS, recall@k for k in ks (<= LIMIT k) and the
    rows returned (latencies=True: also each query's latency in ms, "latencies_ms").
    """
    op = OPERATOR[metric]
    with conn.cursor() as cur:
        cur.execute("RESET ALL")
        for name, value in (settings or {}).items():
            cur.execute(f"SET {name} = {value}")
        if exact:
            cur.execute("SET enable_indexscan = off")
            cur.execute("SET enable_bitmapscan = off")
        # A prepared statement keeps its cached (generic) plan across SET
        # enable_indexscan = off, so the exact run gets its own statement text.
        cast = f"::{qtype}" if qtype else ""
        sql = (f"SELECT id FROM {table} ORDER BY {column} {op} %b::real[]{cast} LIMIT {int(k)}"
               + (" /* exact */" if exact else ""))
        params = [vec_param(q) for q in queries]
        for i in range(warmup):
            cur.execute(sql, (params[i % len(params)],), prepare=True)
            cur.fetchall()
        cur.execute("EXPLAIN (COSTS OFF) " + sql, (params[0],))
        plan = re.sub(r"'\{[^}]*\}'|'\[[^\]]*\]'", "$1", " / ".join(r[0].strip() for r in cur.fetchall()))
        lat = np.empty(len(params))
        rows = []
        t_all = time.perf_counter()
        for i, p in enumerate(params):
            t0 = time.perf_counter()
            cur.execute(sql, (p,), prepare=True)
            r = cur.fetchall()
            lat[i] = time.perf_counter() - t0
            rows.append([x[0] - 1 for x in r])
        wall = time.perf_counter() - t_all
        cur.execute("RESET ALL")
    res = {
        "queries": len(params),
        "k": k,
        "qps": len(params) / wall,
        "mean_ms": float(lat.mean() * 1e3),
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p95_ms": float(np.percentile(lat, 95) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "plan": plan,
    }
    if latencies:
        res["latencies_ms"] = (lat * 1e3).tolist()
    if base is not None and gt_dist is not None:
        got = rows_of(base, [r for rr in rows for r in rr[:max(ks)]])
        for kk in ks:
            res[f"recall@{kk}"] = float(np.mean([
                recall(rows[i], gt_dist[i], got, queries[i], metric, kk) for i in range(len(rows))]))
    return res, rows


SERVER_LOOP_FN = """
CREATE OR REPLACE FUNCTION pg_temp.bench_server_loop(sql text, qtable text, n int, warm int)
RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE q record; t0 timestamptz; r bigint[]; done int := 0;
BEGIN
  FOR q IN EXECUTE format('SELECT embedding FROM %s ORDER BY id LIMIT %s', qtable, warm) LOOP
    EXECUTE sql INTO r USING q.embedding;
  END LOOP;
  t0 := clock_timestamp();
  FOR q IN EXECUTE format('SELECT embedding FROM %s ORDER BY id LIMIT %s', qtable, n) LOOP
    EXECUTE sql INTO r USING q.embedding;
    done := done + 1;
  END LOOP;
  RETURN extract(epoch FROM clock_timestamp() - t0) * 1000 / greatest(done, 1);
END $$"""


def server_side_ms(conn, table, metric, settings=None, n=1000, rounds=3, warm=100, k=10,
                   column="embedding", qtype=None):
    """Time per query measured inside the server (issue 13): a plpgsql loop runs
    the first n queries of <table>_q through EXECUTE ... USING, so neither the
    client's formatting nor the round trip counts (planning each EXECUTE does,
    for every index alike). After warm queries, `rounds` timed loops; returns
    their median and all of them, in ms per query."""
    op = OPERATOR[metric]
    cast = f"::{qtype}" if qtype else ""
    sql = f"SELECT array_agg(id) FROM (SELECT id FROM {table} ORDER BY {column} {op} $1{cast} LIMIT {int(k)}) s"
    qtable = table.replace("_pgv", "").replace("_pgh", "") + "_q"
    with conn.cursor() as cur:
        cur.execute("RESET ALL")
        cur.execute(SERVER_LOOP_FN)
        for name, value in (settings or {}).items():
            cur.execute(f"SET {name} = {value}")
        ms = []
        for i in range(rounds):
            cur.execute("SELECT pg_temp.bench_server_loop(%s, %s, %s, %s)",
                        (sql, qtable, int(n), int(warm) if i == 0 else 0))
            ms.append(cur.fetchone()[0])
        cur.execute("RESET ALL")
    return {"server_ms": float(np.median(ms)), "server_ms_rounds": [float(x) for x in ms],
            "server_queries": int(n)}


def buffers_sample(conn, table, queries, metric, k=10, settings=None, n=20):
    """Mean shared-buffer hits / reads per query from EXPLAIN (ANALYZE, BUFFERS)."""
    op = OPERATOR[metric]
    hits, reads = [], []
    with conn.cursor() as cur:
        cur.execute("RESET ALL")
        for name, value in (settings or {}).items():
            cur.execute(f"SET {name} = {value}")
        for q in queries[:n]:
            cur.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT id FROM {table} "
                        f"ORDER BY embedding {op} %b::real[] LIMIT {int(k)}", (vec_param(q),))
            plan = cur.fetchone()[0][0]["Plan"]
            hits.append(plan.get("Shared Hit Blocks", 0))
            reads.append(plan.get("Shared Read Blocks", 0))
        cur.execute("RESET ALL")
    return {"shared_hit_per_query": float(np.mean(hits)), "shared_read_per_query": float(np.mean(reads)),
            "sampled_queries": len(hits)}


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
        f.write("\n")
