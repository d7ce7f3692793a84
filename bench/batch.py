#!/usr/bin/python3
"""Batch queries: vidx_search(index, queries, k) against the same queries sent one by one.

  PGHOST=/var/run/postgresql PGPORT=5498 PGUSER=postgres \\
      /usr/bin/python3 bench/batch.py --dataset fmnist --probes 4 --batch 10,100,1000

One client. "one by one" is the sweep's path (a prepared statement per query,
LIMIT k); a batch is one statement per --batch queries,

  SELECT s.query, t.id FROM vidx_search('<index>', $1::real[], k) s
  JOIN <table> t ON t.ctid = s.row_tid

so both return ids. Each mode runs --repeats times over the same queries,
interleaved (one-by-one, then every batch size, then again), and the medians
are reported. Every batch must return exactly the rows the one-by-one queries
returned (checked); recall@k is against exact ground truth.

Writes bench/results/batch_<dataset>_<metric>/ (results.json, results.md).
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402


def run_batches(conn, table, index, Q, k, batch, settings):
    rows = [None] * len(Q)
    lat = []
    with conn.cursor() as cur:
        cur.execute("RESET ALL")
        for name, value in settings.items():
            cur.execute(f"SET {name} = {value}")
        sql = (f"SELECT s.query, t.id FROM vidx_search('{index}', %b::real[], {int(k)}) s "
               f"JOIN {table} t ON t.ctid = s.row_tid")
        params = [bl.vec_param(Q[s:s + batch]) for s in range(0, len(Q), batch)]
        t_all = time.perf_counter()
        for bi, p in enumerate(params):
            t0 = time.perf_counter()
            cur.execute(sql, (p,), prepare=True)
            got = cur.fetchall()
            lat.append(time.perf_counter() - t0)
            base = bi * batch
            for i in range(len(p)):
                rows[base + i] = []
            for qno, rid in got:
                rows[base + qno - 1].append(rid - 1)
        wall = time.perf_counter() - t_all
        cur.execute("RESET ALL")
    return {"qps": len(Q) / wall, "batch_p50_ms": float(np.median(lat) * 1e3)}, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fmnist")
    ap.add_argument("--metric", default="l2", choices=bl.METRICS)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--rerank", type=int, default=100)
    ap.add_argument("--batch", default="10,100,1000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--storage", default="EXTERNAL", help="storage of the embedding column")
    bl.add_client_arg(ap)
    ap.add_argument("--dsn", default="")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    out = a.out or os.path.join(bl.RESULTS_DIR, f"batch_{a.dataset}_{a.metric}")

    if a.dataset == "fmnist":
        import datagen
        datagen.fmnist_dataset()
    base, Q, meta = bl.load_dataset(a.dataset, mmap=False)
    _, gt_d = bl.ensure_gt(a.dataset, a.metric)
    Q, gt_d = Q[:a.queries], gt_d[:a.queries]
    bl.set_client(a.client)
    conn = bl.connect(a.dsn)
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS vidx")
    table = a.dataset
    index = f"{table}_vidx"
    bl.ensure_tables(conn, table, base, Q, storage=a.storage)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NULL", (index,))
        missing = cur.fetchone()[0]
    if missing:
        bl.create_index(a.dsn, table, index, a.metric)
    settings = {"vidx.probes": a.probes, "vidx.rerank": a.rerank}
    batches = [int(x) for x in a.batch.split(",")]
    res = {"benchmark": "batch queries (bench/batch.py)", "argv": sys.argv[1:],
           "machine": bl.machine_info(conn), "dataset": meta, "metric": a.metric,
           "queries": len(Q), "k": a.k, "settings": settings, "storage": a.storage, "runs": []}
    bl.log(f"batch {a.dataset}, {len(Q)} queries, k {a.k}, probes {a.probes}, rerank {a.rerank}; "
           f"commit {res['machine']['commit']}")

    qps = {"one by one": []}
    qps.update({b: [] for b in batches})
    single_rows = None
    mismatched = {b: 0 for b in batches}
    recalls = {}
    for rep in range(a.repeats):
        r, rows = bl.run_queries(conn, table, Q, a.metric, a.k, settings)
        qps["one by one"].append(r["qps"])
        single_rows = rows
        recalls["one by one"] = float(np.mean([bl.recall(rows[i], gt_d[i], base, Q[i], a.metric, a.k)
                                               for i in range(len(Q))]))
        for b in batches:
            rb, brows = run_batches(conn, table, index, Q, a.k, b, settings)
            qps[b].append(rb["qps"])
            mismatched[b] += sum(1 for i in range(len(Q)) if brows[i] != single_rows[i])
            recalls[b] = float(np.mean([bl.recall(brows[i], gt_d[i], base, Q[i], a.metric, a.k)
                                        for i in range(len(Q))]))
        bl.log(f"  round {rep + 1}: one by one {qps['one by one'][-1]:.0f} QPS; " +
               ", ".join(f"batch {b}: {qps[b][-1]:.0f} QPS" for b in batches))

    med1 = float(np.median(qps["one by one"]))
    for mode, v in qps.items():
        m = float(np.median(v))
        res["runs"].append({"mode": mode if isinstance(mode, str) else f"batch {mode}",
                            "batch": None if isinstance(mode, str) else mode,
                            "qps_runs": v, "qps_median": m, "ratio": m / med1,
                            f"recall@{a.k}": recalls[mode],
                            "queries_with_other_rows": 0 if isinstance(mode, str) else mismatched[mode]})
    bl.write_json(os.path.join(out, "results.json"), res)
    m = res["machine"]
    lines = [f"# vidx batch queries: {a.dataset} ({len(base):,} x {base.shape[1]}, {a.metric})", "",
             f"Machine: {m['cpu_model']}, {m['cpus']} CPUs, {m['ram_gib']} GiB; {m.get('postgres', '')}; "
             f"commit {m['commit']}{' (+ uncommitted changes)' if m['tree_dirty'] else ''}; {m['date_utc']}; "
             f"load average at start {m['loadavg_at_start'][0]:.2f}.",
             f"Command: `/usr/bin/python3 bench/batch.py {' '.join(sys.argv[1:])}`", "",
             f"{len(Q)} queries, LIMIT {a.k}, vidx.probes {a.probes}, vidx.rerank {a.rerank}, "
             f"embedding storage {a.storage}; client encoding {a.client}; one client; {a.repeats} interleaved rounds, median QPS.", "",
             f"| mode | QPS (median) | vs one by one | recall@{a.k} | queries whose rows differ from one by one |",
             "|---|---|---|---|---|"]
    for r in res["runs"]:
        lines.append(f"| {r['mode']} | {r['qps_median']:.0f} | {r['ratio']:.2f}x | {r[f'recall@{a.k}']:.3f} | "
                     f"{r['queries_with_other_rows']} |")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    bad = sum(mismatched.values())
    if bad:
        bl.log(f"ERROR: {bad} batch query results differ from the one-by-one results")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
