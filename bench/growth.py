#!/usr/bin/python3
"""Growth benchmark: does an index's history change its recall and speed at the defaults?

  PGHOST=/tmp PGPORT=5481 PGUSER=postgres \\
      /usr/bin/python3 bench/growth.py [--dim 1024] [--rows 100000] [--queries 1000]
          [--scenarios empty,growth10,growth100,churn] [--server-log PATH]

Every scenario gives a table one history, then measures the index it ended
with and, right after, a REINDEX of the very same table (same rows, same
queries, back to back so both see the same machine load), at the default
settings (no vidx.* set):

  empty      CREATE INDEX on an empty table, then all N rows inserted;
  growth10   CREATE INDEX on the first N/10 rows, then the other rows inserted;
  growth100  the same from N/100 rows;
  churn      CREATE INDEX on N rows; DELETE a seeded half, VACUUM; insert N/2
             rows from a shifted distribution (new cluster centres, see
             --shift); VACUUM. The queries follow the final mixture: half from
             the original distribution, half from the shifted one.

Inserts go through the index's aminsert: binary COPY in chunks of --chunk rows
(one transaction each; rows/s per chunk against the rows already in the table),
then the last --insert-sample rows as single-row INSERTs from one client (the
statement and the commit timed apart: the commit is the WAL flush, the
statement holds the index's insert). The same number of single-row INSERTs
goes into the REINDEXed index after its queries, as the reference.

Measured for the history index and for its REINDEX: recall@1/@10 (tie-aware,
against the exact top-k of the final rows), QPS, p50/p99 from one client over
--repeats runs of the queries (medians), shared-buffer hits per query, the
index's vidx_stats (leaves, leaf sizes min/avg/max/empty), index and sidecar
size, build/REINDEX time. The goal of issue 11 is printed next to each table:
recall@10 at most 0.01 below the REINDEX, QPS at least 0.8x.

Writes --out (default bench/results/growth_d<D>_n<N>/): results.json
(everything: per-chunk COPY rates, insert latency histograms), results.md,
growth.png (COPY rows/s against table size; single-row INSERT latency).
"""

import argparse
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import datagen  # noqa: E402

SCENARIOS = ("empty", "growth10", "growth100", "churn")
GOAL_RECALL_DROP = 0.01
GOAL_QPS_RATIO = 0.8
TABLE = "growth_items"
INDEX = "growth_items_vidx"
# Single-row INSERT latency histogram: log-spaced bin edges in ms.
HIST_EDGES_MS = np.geomspace(0.01, 10_000, 61)

# Seed streams of datagen.Generator.chunk used here (1 = base, 2 = queries there).
STREAM_EXTRA = 5  # rows inserted into the REINDEXed index for its insert latency


# ----------------------------------------------------------------- rows


class Universe:
    """The base rows (a memmap) followed by extra rows as one array: row r is id r + 1.

    Supports what benchlib's ground truth and recall read: shape, a slice, and a
    sorted array of row numbers.
    """

    def __init__(self, base, extra=None):
        self.base = base
        self.extra = extra
        self.nb = len(base)
        self.shape = (self.nb + (len(extra) if extra is not None else 0), base.shape[1])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        idx = np.arange(*key.indices(self.shape[0])) if isinstance(key, slice) else np.asarray(key)
        out = np.empty((len(idx), self.shape[1]), dtype=np.float32)
        m = idx < self.nb
        if m.any():
            out[m] = self.base[idx[m]]
        if not m.all():
            out[~m] = self.extra[idx[~m] - self.nb]
        return out


class Live:
    """The live rows of a Universe (sorted row numbers), indexed 0..len-1 for compute_gt."""

    def __init__(self, universe, rows):
        self.u = universe
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), universe.shape[1])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        return self.u[self.rows[key]]


class Shifted(datagen.Generator):
    """datagen's generator with its cluster centres moved (the embedding model's
    spectrum, spread and normalization unchanged):

      centre'_c = sqrt(1 - s^2) * centre_c + s * fresh_c,

    fresh_c drawn like the original centres (Gaussian with the same per-coordinate
    spectrum, default_rng([seed, 3])), cluster weights re-drawn from the same
    log-normal. s = 1: entirely new clusters ("new topics"); s = 0: the original
    distribution. The norm of a centre is kept in expectation.
    """

    def __init__(self, dim, rows, seed, shift, spread=0.7):
        super().__init__(dim, rows, seed, spread)
        rng = np.random.default_rng([seed, 3])
        fresh = rng.standard_normal((self.nclusters, dim), dtype=np.float32) * self.sigma
        self.centres = (np.float32(np.sqrt(1.0 - shift * shift)) * self.centres
                        + np.float32(shift) * fresh)
        w = rng.lognormal(0.0, 1.0, self.nclusters)
        self.weights = w / w.sum()


def shifted_rows(name, a, n):
    """n rows of the shifted distribution, cached as a memmap in the data set's directory."""
    path = os.path.join(bl.dataset_dir(name), f"shifted_s{a.shift:g}_n{n}.npy")
    if os.path.exists(path):
        return np.load(path, mmap_mode="r")
    g = Shifted(a.dim, a.rows, a.seed, a.shift)
    tmp = path + ".tmp.npy"
    X = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, a.dim))
    for ci, s in enumerate(range(0, n, 50_000)):
        X[s:s + 50_000] = g.chunk(1, ci, min(50_000, n - s))
    X.flush()
    del X
    os.rename(tmp, path)
    return np.load(path, mmap_mode="r")


# ----------------------------------------------------------------- loading


def sql(conn, q, params=None):
    with conn.cursor() as cur:
        cur.execute(q, params)
        return cur.fetchall() if cur.description else None


def create_table(conn):
    sql(conn, f"DROP TABLE IF EXISTS {TABLE}")
    sql(conn, f"CREATE TABLE {TABLE} (id bigint, embedding real[])")
    sql(conn, f"ALTER TABLE {TABLE} ALTER COLUMN embedding SET STORAGE EXTERNAL")
    # The history is what the script does, nothing else: VACUUM runs where it says.
    sql(conn, f"ALTER TABLE {TABLE} SET (autovacuum_enabled = off)")


def copy_chunks(conn, X, start_id, rows_before, chunk, label):
    """Binary COPY of X into the table, one COPY (one transaction) per chunk.

    Returns [rows in the table after the chunk, rows, seconds] per chunk; the
    time is the server's (the COPY data is encoded before the clock starts).
    """
    out = []
    n = len(X)
    t_all = time.perf_counter()
    last = t_all
    for s in range(0, n, chunk):
        xb = np.asarray(X[s:s + chunk], dtype=np.float32)
        buf = memoryview(bl.copy_binary_rows(xb, start_id + s))
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy(f"COPY {TABLE} (id, embedding) FROM STDIN (FORMAT binary)") as cp:
                cp.write(bl._PGCOPY_HEADER)
                for o in range(0, len(buf), 1 << 20):
                    cp.write(buf[o:o + (1 << 20)])
                    bl._drain(conn)
                cp.write(bl._PGCOPY_TRAILER)
        dt = time.perf_counter() - t0
        out.append([rows_before + s + len(xb), len(xb), dt])
        now = time.perf_counter()
        if now - last > 15 or s + chunk >= n:
            done = s + len(xb)
            tot = sum(c[2] for c in out)
            bl.log(f"  {label}: COPY {done:,}/{n:,} rows, {done / tot:,.0f} rows/s "
                   f"(last chunk {len(xb) / dt:,.0f} rows/s at {rows_before + done:,} rows)")
            last = now
    return out


def copy_summary(chunks):
    if not chunks:
        return None
    rows = sum(c[1] for c in chunks)
    secs = sum(c[2] for c in chunks)
    rates = [c[1] / c[2] for c in chunks]
    return {"rows": rows, "seconds": secs, "rows_per_s": rows / secs,
            "first_chunk_rows_per_s": rates[0], "last_chunk_rows_per_s": rates[-1],
            "slowest_chunk_rows_per_s": min(rates), "chunks": chunks}


def latency_summary(ms):
    ms = np.asarray(ms, dtype=np.float64)
    pct = {f"p{p:g}_ms": float(np.percentile(ms, p)) for p in (50, 90, 99, 99.9)}
    counts, _ = np.histogram(np.clip(ms, HIST_EDGES_MS[0], HIST_EDGES_MS[-1]), HIST_EDGES_MS)
    return {"n": len(ms), **pct, "max_ms": float(ms.max()), "mean_ms": float(ms.mean()),
            "histogram": {"edges_ms": [round(float(e), 4) for e in HIST_EDGES_MS],
                          "counts": counts.tolist()}}


def single_inserts(dsn, X, start_id, label):
    """Single-row INSERTs from one client, each its own transaction; the
    statement (heap + index insert) and the commit (WAL flush) timed apart."""
    conn = bl.connect(dsn, autocommit=False)
    stmt = np.empty(len(X))
    commit = np.empty(len(X))
    q = f"INSERT INTO {TABLE} (id, embedding) VALUES (%s, %b::real[])"
    t_all = time.perf_counter()
    with conn.cursor() as cur:
        for i in range(len(X)):
            p = bl.vec_param(X[i])
            t0 = time.perf_counter()
            cur.execute(q, (start_id + i, p), prepare=True)
            t1 = time.perf_counter()
            conn.commit()
            t2 = time.perf_counter()
            stmt[i], commit[i] = (t1 - t0) * 1e3, (t2 - t1) * 1e3
    wall = time.perf_counter() - t_all
    conn.close()
    st, cm = latency_summary(stmt), latency_summary(commit)
    tot = latency_summary(stmt + commit)
    bl.log(f"  {label}: {len(X):,} single-row INSERTs, {len(X) / wall:,.0f}/s; statement p50 "
           f"{st['p50_ms']:.2f} p99 {st['p99_ms']:.2f} p99.9 {st['p99.9_ms']:.2f} max "
           f"{st['max_ms']:.1f} ms; commit p50 {cm['p50_ms']:.2f} p99 {cm['p99_ms']:.2f} ms")
    return {"rows": len(X), "inserts_per_s": len(X) / wall, "statement": st, "commit": cm, "total": tot}


# ----------------------------------------------------------------- measuring


def index_state(conn):
    ii = bl.index_info(conn, INDEX)
    st = ii["stats"]
    return {"index_bytes": ii["index_bytes"], "sidecar_bytes": ii["sidecar_bytes"],
            "leaves": st.get("leaves"), "levels": st.get("levels"), "postings": st.get("postings"),
            "leaf_size": st.get("leaf_size"), "pages": st.get("pages"),
            "posting_pages": st.get("posting_pages"), "sidecar_state": st.get("sidecar", {}).get("state"),
            "records": st.get("sidecar", {}).get("records"), "vidx_stats": st}


def explain(conn, queries, metric, settings=None):
    """The plan (with costs) of the benchmark's statement for the first query."""
    with conn.cursor() as cur:
        cur.execute("RESET ALL")
        for k, v in (settings or {}).items():
            cur.execute(f"SET {k} = {v}")
        cur.execute(f"EXPLAIN SELECT id FROM {TABLE} ORDER BY embedding {bl.OPERATOR[metric]} %b::real[] "
                    "LIMIT 10", (bl.vec_param(queries[0]),))
        lines = [re.sub(r"'\{[^}]*\}'", "$1", r[0].strip()) for r in cur.fetchall()]
        cur.execute("RESET ALL")
    return " / ".join(x for x in lines if not x.startswith("Sort Key") and not x.startswith("Order By"))


def backend_cpu_s(pid):
    """User + system CPU seconds of a backend so far (/proc/<pid>/stat: the
    server runs on this machine and we may read it); NaN where we cannot."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def executed_plan(conn, q, settings):
    """The plan the benchmark's prepared statement runs now (its cached generic
    plan once PostgreSQL chose one), by EXPLAIN EXECUTE with the vector as a literal."""
    with conn.cursor() as cur:
        for k, v in (settings or {}).items():
            cur.execute(f"SET {k} = {v}")
        cur.execute("SELECT name, generic_plans, custom_plans FROM pg_prepared_statements "
                    "WHERE statement LIKE %s", (f"SELECT id FROM {TABLE} ORDER BY %LIMIT 10",))
        rows = cur.fetchall()
        if len(rows) != 1:
            raise RuntimeError(f"expected one prepared statement, found {rows}")
        lit = "{" + ",".join(repr(float(x)) for x in q) + "}"
        cur.execute(f"EXPLAIN (COSTS OFF) EXECUTE {rows[0][0]}('{lit}')")
        plan = " / ".join(r[0].strip() for r in cur.fetchall() if "Order By" not in r[0] and "Sort Key" not in r[0])
        cur.execute("RESET ALL")
    return f"{plan} (generic plans {rows[0][1]}, custom plans {rows[0][2]})"


def measure(dsn, queries, metric, universe, gt_d, a, label):
    """Queries at the default settings from a fresh backend (index prewarmed),
    --repeats runs; medians of QPS, p50 and p99; recall of the first run.

    When the planner does not choose the index at the defaults, that plan is
    timed on --default-plan-sample queries and the index is measured with
    enable_seqscan = off (a planner setting; vidx's own stay at their defaults).
    """
    load = os.getloadavg()
    # Its own backend: a prepared statement keeps its cached generic plan across
    # a SET, so the measured runs must not share a session with this sample.
    conn = bl.connect(dsn)
    out = {"default_plan": explain(conn, queries, metric)}
    settings = None
    out["default_plan_uses_index"] = f"Index Scan using {INDEX}" in out["default_plan"]
    if not out["default_plan_uses_index"]:
        n = min(a.default_plan_sample, len(queries))
        dp, _ = bl.run_queries(conn, TABLE, queries[:n], metric, 10, None, base=universe, gt_dist=gt_d[:n],
                               warmup=1)
        out["default_plan_sample"] = {k: dp[k] for k in ("queries", "qps", "p50_ms", "p99_ms", "recall@10")}
        settings = {"enable_seqscan": "off"}
        bl.log(f"  {label}: WARNING: the planner does not choose the index at the defaults "
               f"({out['default_plan']}): {dp['qps']:.2f} QPS on {n} queries; the index is measured "
               "with enable_seqscan = off")
    conn.close()
    conn = bl.connect(dsn)
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM vidx_prewarm(%s)", (INDEX,))
        pages, sbytes = cur.fetchone()
    prewarm_s = time.perf_counter() - t0
    out["settings"] = settings or {}
    out["index_plan"] = explain(conn, queries, metric, settings)
    pid = bl.backend_pid(conn)
    runs = []
    for r in range(a.repeats):
        if r == 0:  # an untimed pass: the first after the prewarm is still slower than the next
            bl.run_queries(conn, TABLE, queries, metric, 10, settings, warmup=0)
        cpu0 = backend_cpu_s(pid)
        res, _ = bl.run_queries(conn, TABLE, queries, metric, 10, settings, base=universe, gt_dist=gt_d,
                                warmup=0)
        res["backend_cpu_ms_per_query"] = (backend_cpu_s(pid) - cpu0) * 1e3 / len(queries)
        res["executed_plan"] = executed_plan(conn, queries[0], settings)
        if f"Index Scan using {INDEX}" not in res["executed_plan"]:
            raise RuntimeError(f"{label}: the prepared statement does not use the index: {res['executed_plan']}")
        runs.append(res)
        wall = res["queries"] / res["qps"]
        bl.log(f"  {label} run {r + 1}/{a.repeats}: recall@10 {res['recall@10']:.4f}  QPS {res['qps']:.1f}  "
               f"p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms  backend CPU "
               f"{res['backend_cpu_ms_per_query']:.2f} ms/query  ({wall:.0f} s)")
        if wall > a.max_run_seconds:
            bl.log(f"  {label}: a run took more than --max-run-seconds {a.max_run_seconds}: no more runs")
            break
    buf = bl.buffers_sample(conn, TABLE, queries, metric, 10, settings)
    state = index_state(conn)
    conn.close()
    med = {k: float(np.median([x[k] for x in runs]))
           for k in ("qps", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "backend_cpu_ms_per_query")}
    recalls = {(x["recall@1"], x["recall@10"]) for x in runs}
    out.update({"recall@1": runs[0]["recall@1"], "recall@10": runs[0]["recall@10"],
                "recall_same_every_run": len(recalls) == 1, **med,
                "runs": [{k: x[k] for k in ("qps", "p50_ms", "p95_ms", "p99_ms", "recall@10",
                                            "backend_cpu_ms_per_query")} for x in runs],
                "plan": runs[0]["plan"], "executed_plan": runs[-1]["executed_plan"], "buffers": buf,
                "prewarm": {"seconds": prewarm_s, "pages": pages, "sidecar_bytes": sbytes},
                "loadavg_before": load, "loadavg_after": os.getloadavg(), **state})
    return out


def reindex(dsn):
    conn = bl.connect(dsn)
    bl.log(f"  REINDEX INDEX {INDEX}")
    t0 = time.perf_counter()
    sql(conn, f"REINDEX INDEX {INDEX}")
    dt = time.perf_counter() - t0
    conn.close()
    bl.log(f"  REINDEX in {dt:.1f} s")
    return dt


def vacuum(conn, label):
    t0 = time.perf_counter()
    sql(conn, f"VACUUM (ANALYZE) {TABLE}")
    dt = time.perf_counter() - t0
    bl.log(f"  {label}: VACUUM (ANALYZE) in {dt:.1f} s")
    return dt


# ----------------------------------------------------------------- scenarios


def run_scenario(sc, a, dsn, conn, name, base, Q, gt_full):
    """One scenario: history, measure, REINDEX, measure, insert sample into the REINDEXed index."""
    N = a.rows
    res = {"scenario": sc, "loadavg_at_start": os.getloadavg()}
    t_sc = time.perf_counter()
    g = datagen.Generator(a.dim, a.rows, a.seed)
    universe = Universe(base)
    queries, gt_d = Q, gt_full
    if sc == "empty" or sc.startswith("growth"):
        n0 = 0 if sc == "empty" else N // int(sc[len("growth"):])
        create_table(conn)
        if n0:  # a table created and loaded in one transaction, as bench/ loads its tables
            res["initial_load_s"] = bl.load_table(conn, TABLE, base[:n0], verbose=False)
            sql(conn, f"ALTER TABLE {TABLE} SET (autovacuum_enabled = off)")
        res["build_rows"] = n0
        res["build"] = bl.create_index(dsn, TABLE, INDEX, a.metric, verbose=False)
        res["build_state"] = index_state(conn)
        bl.log(f"  {sc}: index built on {n0:,} rows in {res['build']['build_s']:.1f} s, "
               f"{res['build_state']['leaves']} leaves")
        S = min(a.insert_sample, N - n0)
        res["copy"] = copy_summary(copy_chunks(conn, base[n0:N - S], n0 + 1, n0, a.chunk, sc))
        res["single_inserts"] = single_inserts(dsn, base[N - S:N], N - S + 1, sc)
        extra_gen = g
        next_id = N + 1
    elif sc == "churn":
        half = N // 2
        bl.load_table(conn, TABLE, base, verbose=False)
        sql(conn, f"ALTER TABLE {TABLE} SET (autovacuum_enabled = off)")
        res["build_rows"] = N
        res["build"] = bl.create_index(dsn, TABLE, INDEX, a.metric, verbose=False)
        res["build_state"] = index_state(conn)
        bl.log(f"  churn: index built on {N:,} rows in {res['build']['build_s']:.1f} s, "
               f"{res['build_state']['leaves']} leaves")
        deleted = np.sort(np.random.default_rng([a.seed, 4]).choice(N, half, replace=False))
        t0 = time.perf_counter()
        for s in range(0, half, 50_000):
            sql(conn, f"DELETE FROM {TABLE} WHERE id = ANY(%s::bigint[])",
                ((deleted[s:s + 50_000] + 1).tolist(),))
        res["delete_s"] = time.perf_counter() - t0
        res["vacuum_after_delete_s"] = vacuum(conn, "churn after DELETE")
        res["after_delete_state"] = index_state(conn)
        bl.log(f"  churn: deleted {half:,} rows in {res['delete_s']:.1f} s; index now "
               f"{res['after_delete_state']['postings']:,} postings")
        X = shifted_rows(name, a, half)
        S = min(a.insert_sample, half)
        res["copy"] = copy_summary(copy_chunks(conn, X[:half - S], N + 1, N - half, a.chunk, sc))
        res["single_inserts"] = single_inserts(dsn, X[half - S:], N + half - S + 1, sc)
        universe = Universe(base, X)
        live = np.concatenate([np.setdiff1d(np.arange(N), deleted), N + np.arange(half)])
        # the queries follow the final mixture of rows
        n_orig = int(round(len(Q) * (N - half) / len(live)))
        Qs = Shifted(a.dim, a.rows, a.seed, a.shift).chunk(2, 0, len(Q) - n_orig)
        queries = np.concatenate([Q[:n_orig], Qs])
        t0 = time.perf_counter()
        _, gt_d = bl.compute_gt(Live(universe, live), queries, a.metric, k=10, verbose=False)
        res["ground_truth_s"] = time.perf_counter() - t0
        res["queries_original"], res["queries_shifted"] = n_orig, len(Q) - n_orig
        extra_gen = Shifted(a.dim, a.rows, a.seed, a.shift)
        next_id = N + half + 1
    else:
        raise ValueError(sc)
    res["vacuum_before_queries_s"] = vacuum(conn, sc)
    res["final_rows"] = sql(conn, f"SELECT count(*) FROM {TABLE}")[0][0]
    t0 = time.perf_counter()
    res["verify"] = sql(conn, "SELECT vidx_verify(%s)", (INDEX,))[0][0]
    res["verify_s"] = time.perf_counter() - t0
    if a.exact_check:  # the ground truth belongs to the table's rows: an exact scan finds it
        econn = bl.connect(dsn)
        ex, _ = bl.run_queries(econn, TABLE, queries[:a.exact_check], a.metric, 10, exact=True, base=universe,
                               gt_dist=gt_d[:a.exact_check], warmup=0)
        econn.close()
        res["exact_check"] = {k: ex[k] for k in ("queries", "recall@10", "p50_ms", "plan")}
        if ex["recall@10"] < 1.0:
            raise RuntimeError(f"{sc}: an exact scan has recall@10 {ex['recall@10']} against the ground truth")
    res["history"] = measure(dsn, queries, a.metric, universe, gt_d, a, f"{sc} history")
    res["reindex_s"] = reindex(dsn)
    res["reindex"] = measure(dsn, queries, a.metric, universe, gt_d, a, f"{sc} REINDEX")
    S = res["single_inserts"]["rows"]
    res["reindex_single_inserts"] = single_inserts(dsn, extra_gen.chunk(STREAM_EXTRA, 0, S), next_id,
                                                   f"{sc} REINDEXed")
    h, r = res["history"], res["reindex"]
    res["recall10_diff"] = h["recall@10"] - r["recall@10"]
    res["qps_ratio"] = h["qps"] / r["qps"]
    # the goal is what a user gets at the defaults: the planner has to choose the index too
    res["goal_met"] = bool(res["recall10_diff"] >= -GOAL_RECALL_DROP and res["qps_ratio"] >= GOAL_QPS_RATIO
                           and h["default_plan_uses_index"] and r["default_plan_uses_index"])
    res["seconds"] = time.perf_counter() - t_sc
    sql(conn, f"DROP TABLE {TABLE}")
    bl.log(f"== {sc}: recall@10 {h['recall@10']:.4f} vs {r['recall@10']:.4f} (diff {res['recall10_diff']:+.4f}), "
           f"QPS {h['qps']:.1f} vs {r['qps']:.1f} (x{res['qps_ratio']:.2f}); goal "
           f"{'met' if res['goal_met'] else 'NOT met'}; {res['seconds']:.0f} s")
    return res


def heap_only_copy_rate(conn, base, chunk):
    """COPY rows/s into a table without an index, same chunking: what the index adds."""
    n = min(len(base), max(chunk, 10_000))
    create_table(conn)
    # a first chunk into the fresh table, as in the scenarios; then the measured chunks
    copy_chunks(conn, base[:chunk], 1, 0, chunk, "warm-up")
    r = copy_summary(copy_chunks(conn, base[chunk:chunk + n], chunk + 1, chunk, chunk, "heap only"))
    sql(conn, f"DROP TABLE {TABLE}")
    return r


# ----------------------------------------------------------------- output


def write_md(out, res):
    m = res["machine"]
    a = res["args"]
    L = [f"# vidx growth benchmark: {a['rows']:,} x {a['dim']} (clustered, unit-normalized, {a['metric']})", "",
         f"Machine: {m['cpu_model']}, {m['cpus']} CPUs, {m['ram_gib']} GiB RAM, {m['os']}; "
         f"{m.get('postgres', '').split(' on ')[0]}; commit {m['commit']}"
         f"{' (+ uncommitted changes in the tree)' if m.get('tree_dirty') else ''}; {m['date_utc']}; "
         f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}.",
         f"Settings: {', '.join(f'{k}={v}' for k, v in m.get('pg_settings', {}).items())}; no vidx.* "
         f"set (the defaults); autovacuum off for the table (VACUUM only where the scenario says).",
         "Command: `/usr/bin/python3 bench/growth.py " + " ".join(res.get("argv", [])) + "`", "",
         f"Goal (issue 11): at the defaults, an index's history costs at most {GOAL_RECALL_DROP} of recall@10 "
         f"against a REINDEX of the same table, and its QPS is at least {GOAL_QPS_RATIO}x the REINDEX's.",
         f"Queries: {a['queries']} one at a time from one client, prepared, after `vidx_prewarm` and an untimed "
         f"pass, {a['repeats']} timed runs per index (median QPS, p50, p99); recall is tie-aware against the "
         "exact top-10 of the final rows; "
         "backend CPU ms/query is the query backend's user + system CPU time over a run (from /proc) divided "
         "by the queries, less sensitive than QPS to the other jobs on a shared machine. Inserts: binary "
         f"COPY in chunks of {a['chunk']:,} rows (a transaction each), then {a['insert_sample']:,} "
         "single-row INSERTs (statement timed apart from the commit's WAL flush); the REINDEX column's "
         "INSERT figures are the same number of single-row INSERTs into the REINDEXed index after its queries.",
         ""]
    if res.get("heap_only_copy"):
        L.append(f"Reference: COPY into the table without an index, same chunks: "
                 f"{res['heap_only_copy']['rows_per_s']:,.0f} rows/s.")
        L.append("")
    L += ["| scenario | recall@10 history / REINDEX | diff | QPS history / REINDEX | ratio | "
          "backend CPU ms/query history / REINDEX | "
          "planner picks the index at the defaults | goal | load avg (1 min) at the queries |",
          "|---|---|---|---|---|---|---|---|---|"]
    for sc in res["scenarios"]:
        h, r = sc["history"], sc["reindex"]
        L.append(f"| {sc['scenario']} | {h['recall@10']:.4f} / {r['recall@10']:.4f} | {sc['recall10_diff']:+.4f} | "
                 f"{h['qps']:.1f}{star(h)} / {r['qps']:.1f}{star(r)} | {sc['qps_ratio']:.2f} | "
                 f"{h['backend_cpu_ms_per_query']:.2f} / {r['backend_cpu_ms_per_query']:.2f} | "
                 f"{picks(h)} / {picks(r)} | {'met' if sc['goal_met'] else 'not met'} | "
                 f"{h['loadavg_before'][0]:.1f} / {r['loadavg_before'][0]:.1f} |")
    if any(s.get(k, {}).get("settings") for s in res["scenarios"] for k in ("history", "reindex")):
        L += ["", "\\* The planner chose another plan at the defaults (the figures of that plan, on a sample "
              "of the queries, are in the scenario's table); the index's figures are with `enable_seqscan = off` "
              "(a planner setting; vidx's settings at their defaults). The goal counts as met only if the "
              "planner picks the index at the defaults."]
    for sc in res["scenarios"]:
        h, r = sc["history"], sc["reindex"]
        hi, ri = sc["single_inserts"], sc["reindex_single_inserts"]

        def leaves(x):
            ls = x["leaf_size"] or {}
            return (f"{x['leaves']:,} ({x['levels']} levels); {ls.get('min', 0):,} / {ls.get('avg', 0):,.0f} / "
                    f"{ls.get('max', 0):,}" + (f", {ls['empty']} empty" if ls.get("empty") else ""))

        def ins(x):
            s = x["statement"]
            return (f"{s['p50_ms']:.2f} / {s['p90_ms']:.2f} / {s['p99_ms']:.2f} / {s['p99.9_ms']:.2f} / "
                    f"{s['max_ms']:.1f}")

        cp = sc["copy"]
        L += ["", f"## {sc['scenario']}", "", describe(sc, a), "",
              "| | history | REINDEX | history vs REINDEX |", "|---|---|---|---|",
              f"| plan at the defaults | {plan_cell(h)} | {plan_cell(r)} | |",
              f"| recall@10 | {h['recall@10']:.4f} | {r['recall@10']:.4f} | {sc['recall10_diff']:+.4f} |",
              f"| recall@1 | {h['recall@1']:.4f} | {r['recall@1']:.4f} | {h['recall@1'] - r['recall@1']:+.4f} |",
              f"| QPS (median of {len(h['runs'])}) | {h['qps']:.1f} | {r['qps']:.1f} | x{sc['qps_ratio']:.2f} |",
              f"| backend CPU ms per query (median) | {h['backend_cpu_ms_per_query']:.2f} | "
              f"{r['backend_cpu_ms_per_query']:.2f} | "
              f"x{h['backend_cpu_ms_per_query'] / max(r['backend_cpu_ms_per_query'], 1e-9):.2f} |",
              f"| p50 / p99 ms | {h['p50_ms']:.2f} / {h['p99_ms']:.2f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | "
              f"x{h['p50_ms'] / r['p50_ms']:.2f} / x{h['p99_ms'] / r['p99_ms']:.2f} |",
              f"| shared buffer hits per query | {h['buffers']['shared_hit_per_query']:,.0f} | "
              f"{r['buffers']['shared_hit_per_query']:,.0f} | |",
              f"| leaves (levels); leaf size min / avg / max | {leaves(h)} | {leaves(r)} | |",
              f"| postings | {h['postings']:,} | {r['postings']:,} | |",
              f"| index MB / sidecar MB | {h['index_bytes'] / 2**20:.1f} / {(h['sidecar_bytes'] or 0) / 2**20:.1f} | "
              f"{r['index_bytes'] / 2**20:.1f} / {(r['sidecar_bytes'] or 0) / 2**20:.1f} | |",
              f"| build | CREATE INDEX on {sc['build_rows']:,} rows: {sc['build']['build_s']:.1f} s, "
              f"{sc['build_state']['leaves']} leaves | REINDEX: {sc['reindex_s']:.1f} s | |",
              f"| insert rows/s (COPY, {cp['rows']:,} rows) | {cp['rows_per_s']:,.0f} (first chunk "
              f"{cp['first_chunk_rows_per_s']:,.0f}, last {cp['last_chunk_rows_per_s']:,.0f}, slowest "
              f"{cp['slowest_chunk_rows_per_s']:,.0f}) | | |",
              f"| single-row INSERT statement ms p50 / p90 / p99 / p99.9 / max | {ins(hi)} | {ins(ri)} | |",
              f"| commit (WAL flush) ms p50 / p99 | {hi['commit']['p50_ms']:.2f} / {hi['commit']['p99_ms']:.2f} | "
              f"{ri['commit']['p50_ms']:.2f} / {ri['commit']['p99_ms']:.2f} | |",
              f"| load average before the queries | {fmt_load(h['loadavg_before'])} | {fmt_load(r['loadavg_before'])} | |",
              f"| vidx_verify after the history | {sc['verify']} | | |",
              "", f"Goal: recall@10 diff {sc['recall10_diff']:+.4f} (>= -{GOAL_RECALL_DROP}: "
              f"{'yes' if sc['recall10_diff'] >= -GOAL_RECALL_DROP else 'no'}), QPS x{sc['qps_ratio']:.2f} "
              f"(>= {GOAL_QPS_RATIO}: {'yes' if sc['qps_ratio'] >= GOAL_QPS_RATIO else 'no'}). "
              f"Scenario time {sc['seconds']:.0f} s."]
    if res.get("server_log"):
        sl = res["server_log"]
        L += ["", f"Server log during the run: {sl['lines']} lines, {len(sl['problems'])} with "
              "WARNING/ERROR/FATAL/PANIC" + (":" if sl["problems"] else "."), ""]
        L += [f"    {x}" for x in sl["problems"][:20]]
    L += ["", "`growth.png`: COPY rows/s per chunk against the rows in the table; single-row INSERT "
          "statement latency distribution (history and REINDEXed index). `results.json` holds every figure "
          "(per-chunk COPY times, latency histograms, vidx_stats)."]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(L) + "\n")


def star(m):
    return "\\*" if m.get("settings") else ""


def picks(m):
    return "yes" if m["default_plan_uses_index"] else "**no**"


def plan_cell(m):
    """The default plan; for another plan than the index, its figures on the sample."""
    if m["default_plan_uses_index"]:
        return "Index Scan"
    d = m["default_plan_sample"]
    node = re.search(r"->\s+(\w[\w ]*?) (?:using \S+ )?on ", m["default_plan"])
    cost = [re.search(r"cost=([\d.]+)\.\.", p) for p in (m["default_plan"], m["index_plan"])]
    return (f"**{node.group(1) if node else m['default_plan']}** (cost {cost[0].group(1) if cost[0] else '?'} against "
            f"{cost[1].group(1) if cost[1] else '?'} for the index scan): {d['qps']:.2f} QPS, p50 "
            f"{d['p50_ms']:.0f} ms, recall@10 {d['recall@10']:.4f} ({d['queries']} queries); "
            "figures below with enable_seqscan = off")


def fmt_load(x):
    return ", ".join(f"{v:.2f}" for v in x)


def describe(sc, a):
    N = a["rows"]
    s = sc["scenario"]
    if s == "empty":
        return (f"CREATE INDEX on an empty table, then {N:,} rows inserted "
                f"({sc['copy']['rows']:,} by COPY, {sc['single_inserts']['rows']:,} single-row INSERTs).")
    if s.startswith("growth"):
        return (f"CREATE INDEX on {sc['build_rows']:,} rows ({s[6:]}x growth), then {N - sc['build_rows']:,} "
                f"rows inserted ({sc['copy']['rows']:,} by COPY, {sc['single_inserts']['rows']:,} single-row INSERTs)."
                + (" The build sees few rows (its lists = sqrt(rows))." if sc["build_rows"] < 5000 else ""))
    return (f"CREATE INDEX on {N:,} rows; DELETE {N // 2:,} (seeded), VACUUM; insert {N // 2:,} rows from the "
            f"shifted distribution (centres moved with s = {a['shift']}, see bench/README.md) "
            f"({sc['copy']['rows']:,} by COPY, {sc['single_inserts']['rows']:,} single-row INSERTs); VACUUM. "
            f"Queries: {sc['queries_original']} from the original distribution, {sc['queries_shifted']} from "
            f"the shifted one (the final mixture); exact top-10 over the {sc['final_rows']:,} live rows "
            f"({sc['ground_truth_s']:.1f} s).")


def plot(out, res):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for sc in res["scenarios"]:
        c = np.array(sc["copy"]["chunks"], dtype=float)
        ax1.plot(c[:, 0], c[:, 1] / c[:, 2], marker=".", label=sc["scenario"])
        e = np.array(sc["single_inserts"]["statement"]["histogram"]["edges_ms"])
        mid = np.sqrt(e[:-1] * e[1:])
        for key, ls in (("single_inserts", "-"), ("reindex_single_inserts", ":")):
            cnt = np.array(sc[key]["statement"]["histogram"]["counts"], dtype=float)
            ax2.plot(mid, np.cumsum(cnt) / cnt.sum(), ls,
                     label=f"{sc['scenario']} {'history' if key == 'single_inserts' else 'REINDEXed'}")
    if res.get("heap_only_copy"):
        ax1.axhline(res["heap_only_copy"]["rows_per_s"], color="grey", ls="--", label="no index")
    ax1.set_xlabel("rows in the table after the chunk")
    ax1.set_ylabel("COPY rows/s (chunk)")
    ax1.set_yscale("log")
    ax1.legend()
    ax1.grid(alpha=0.3)
    used = [i for sc in res["scenarios"] for key in ("single_inserts", "reindex_single_inserts")
            for i, c in enumerate(sc[key]["statement"]["histogram"]["counts"]) if c]
    if used:
        ax2.set_xlim(HIST_EDGES_MS[min(used)], HIST_EDGES_MS[max(used) + 1])
    ax2.set_xscale("log")
    ax2.set_xlabel("single-row INSERT statement latency, ms")
    ax2.set_ylabel("fraction of inserts (CDF)")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    a = res["args"]
    fig.suptitle(f"vidx growth: {a['rows']:,} x {a['dim']}, commit {res['machine']['commit']}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "growth.png"), dpi=90)


def server_log_problems(path, offset):
    with open(path, errors="replace") as f:
        f.seek(offset)
        lines = f.read().splitlines()
    bad = [x for x in lines if any(w in x for w in ("WARNING:", "ERROR:", "FATAL:", "PANIC:"))]
    return {"path": path, "lines": len(lines), "problems": bad[:200]}


def main(argv=None):
    bl.fast_blas()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=1024, choices=[128, 768, 1024, 1536])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--metric", default="l2", choices=bl.METRICS)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of " + ", ".join(SCENARIOS))
    ap.add_argument("--chunk", type=int, default=5000, help="rows per COPY (and transaction) while inserting")
    ap.add_argument("--insert-sample", type=int, default=2000, help="single-row INSERTs at the end of the inserts")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed runs of the queries per index, after an untimed one (medians)")
    ap.add_argument("--max-run-seconds", type=float, default=120,
                    help="no further runs of the queries on an index once one took longer")
    ap.add_argument("--default-plan-sample", type=int, default=20,
                    help="queries timed at the defaults when the planner does not choose the index")
    ap.add_argument("--exact-check", type=int, default=3,
                    help="queries run as an exact scan, which must find the ground truth (0: none)")
    ap.add_argument("--shift", type=float, default=1.0,
                    help="churn: how far the inserted rows' cluster centres move (0 = not, 1 = new clusters)")
    ap.add_argument("--server-log", help="server log file: its WARNING/ERROR lines during the run are recorded")
    ap.add_argument("--dsn", default="")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    scenarios = [s for s in a.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s}")
    if a.rows < 1000 or a.insert_sample < 1 or a.chunk < 1:
        ap.error("--rows must be at least 1,000; --insert-sample and --chunk at least 1")

    out = a.out or os.path.join(bl.RESULTS_DIR, f"growth_d{a.dim}_n{a.rows}")
    os.makedirs(out, exist_ok=True)
    log_off = os.path.getsize(a.server_log) if a.server_log else 0
    conn = bl.connect(a.dsn)
    sql(conn, "CREATE EXTENSION IF NOT EXISTS vidx")
    sql(conn, "SELECT vidx_load()")  # so that machine_info can SHOW the vidx.* defaults
    res = {"benchmark": "growth (bench/growth.py)", "argv": sys.argv[1:], "args": vars(a),
           "goal": {"recall10_max_drop": GOAL_RECALL_DROP, "qps_min_ratio": GOAL_QPS_RATIO}}
    res["machine"] = bl.machine_info(conn)
    bl.log(f"machine: {res['machine']['cpu_model']}, {res['machine']['cpus']} CPUs; commit "
           f"{res['machine']['commit']}; load average {fmt_load(res['machine']['loadavg_at_start'])}")
    t_total = time.perf_counter()

    name = datagen.gen_name(a.dim, a.rows, a.seed)
    datagen.cmd_gen(argparse.Namespace(name=None, dim=a.dim, rows=a.rows, queries=a.queries, seed=a.seed,
                                       spread=0.7, chunk=50_000, metrics=a.metric))
    base, Q, meta = bl.load_dataset(name)
    _, gt_full = bl.ensure_gt(name, a.metric)
    res["dataset"] = meta

    def save():
        res["total_s"] = time.perf_counter() - t_total
        if a.server_log:
            res["server_log"] = server_log_problems(a.server_log, log_off)
        bl.write_json(os.path.join(out, "results.json"), res)
        if res["scenarios"]:
            write_md(out, res)
            plot(out, res)

    bl.log("== reference: COPY into the table without an index")
    res["heap_only_copy"] = heap_only_copy_rate(conn, base, a.chunk)
    res["scenarios"] = []
    for sc in scenarios:
        bl.log(f"== scenario {sc}")
        res["scenarios"].append(run_scenario(sc, a, a.dsn, conn, name, base, Q, gt_full))
        save()
    save()
    bl.log(f"== done in {res['total_s']:.0f} s; results in {out}/ (results.json, results.md, growth.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
