#!/usr/bin/python3
"""pgbench workloads on a vidx index: read-only k-NN and k-NN mixed with inserts.

  PGHOST=/var/run/postgresql PGPORT=5498 PGUSER=postgres \\
      /usr/bin/python3 bench/pgbench_run.py [--dataset fmnist] [--clients 1,2,8] [--duration 30]

Copies the data set's table into pgb_<dataset> (so the inserts never touch
the sweep's table), builds a vidx index with the default options, checks with
EXPLAIN that the pgbench statement uses it, then runs for each workload and
client count `pgbench -n -M prepared -c C -j min(C, 2) -T D --log`:

  knn    bench/pgbench/knn.sql: one random query vector (from <dataset>_q,
         chosen by \\set qid random(...)) per transaction, LIMIT 10
  mixed  knn.sql weight 9 + bench/pgbench/insert.sql weight 1: inserts of new
         vectors (a query vector plus noise) into the indexed table
  insert insert.sql alone

With --initial-rows N the table starts with the data set's first N rows only
(0: the index is created on an empty table), so the inserts grow the index and
its leaves split while pgbench runs: each run reports the splits and merges it
saw (vidx_stats before and after), beside the insert latency percentiles.

With --pgvector vidx,hnsw,ivfflat (pgvector 0.8.6 and vidx_pgvector
installed), the same workloads run, in one run, once per index on a
pgvector vector(D) column instead: the copy is made afresh for each
(pgb_<dataset>_pgv: id, embedding vector(D)), the index is vidx
(vidx_pgvector), pgvector's HNSW (m 16, ef_construction 64; hnsw.ef_search
from --ef-search) or IVFFlat (lists = rows / 1000, at least 10;
ivfflat.probes from --ivf-probes), and the statements cast the query and
the inserted vectors to vector. Results go to pgbench_<dataset>_pgvector/.

TPS and latency percentiles (p50/p95/p99, per script) come from pgbench's
per-transaction logs. Results: bench/results/pgbench_<dataset>/results.json
and results.md (plus pgbench's own summaries).
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

PGB_DIR = os.path.join(bl.BENCH_DIR, "pgbench")


def fill(template, **kw):
    with open(os.path.join(PGB_DIR, template)) as f:
        text = f.read()
    for k, v in kw.items():
        text = text.replace("{" + k + "}", str(v))
    return text


def parse_logs(prefix):
    """(script_no, latency_us, epoch_s) of every transaction in pgbench's logs."""
    rows = []
    for path in glob.glob(prefix + "*"):
        with open(path) as f:
            for line in f:
                p = line.split()
                # client_id transaction_no time script_no time_epoch time_us [lag]
                if len(p) >= 6 and p[2] != "skipped":
                    rows.append((int(p[3]), int(p[2]), int(p[4]) + int(p[5]) / 1e6))
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def summarize(rows, duration):
    out = {}
    if len(rows) == 0:
        return out
    t0 = rows[:, 2].min()
    span = max(rows[:, 2].max() - t0, 1e-9)
    out["transactions"] = int(len(rows))
    out["tps"] = len(rows) / duration
    out["tps_log_span"] = len(rows) / span
    lat = rows[:, 1] / 1000.0
    for q in (50, 95, 99):
        out[f"p{q}_ms"] = float(np.percentile(lat, q))
    out["mean_ms"] = float(lat.mean())
    per = {}
    for s in np.unique(rows[:, 0]).astype(int):
        l2 = lat[rows[:, 0] == s]
        per[int(s)] = {"transactions": int(len(l2)), "tps": len(l2) / duration,
                       "p50_ms": float(np.percentile(l2, 50)), "p95_ms": float(np.percentile(l2, 95)),
                       "p99_ms": float(np.percentile(l2, 99)), "p999_ms": float(np.percentile(l2, 99.9)),
                       "max_ms": float(l2.max())}
    out["per_script"] = per
    return out


def run_index(a, conn, base, Q, res, out, index, pgv):
    """Copies the data set, builds one index, runs the workloads; appends to res["runs"]."""
    tbl, qtbl = f"pgb_{a.dataset}" + ("_pgv" if pgv else ""), f"{a.dataset}_q"
    dim = base.shape[1]
    coltype = f"vector({dim})" if pgv else "real[]"
    cast = "::vector" if pgv else ""
    iname = f"{tbl}_{index}"
    bl.log(f"copying {a.dataset} into {tbl} and building its {index} index")
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {tbl}")
        cur.execute(f"DROP SEQUENCE IF EXISTS {tbl}_ins")
        cur.execute(f"CREATE TABLE {tbl} (id bigint, embedding {coltype})")
        cur.execute(f"ALTER TABLE {tbl} ALTER COLUMN embedding SET STORAGE EXTERNAL")
        initial = len(base) if a.initial_rows is None else min(a.initial_rows, len(base))
        cur.execute(f"INSERT INTO {tbl} SELECT id, embedding{cast} FROM {a.dataset} ORDER BY id LIMIT {initial}")
        cur.execute(f"CREATE SEQUENCE {tbl}_ins START {len(base) + 1}")
        cur.execute(f"VACUUM ANALYZE {tbl}")
    if index == "vidx":
        b = bl.create_index(a.dsn, tbl, iname, a.metric, verbose=True,
                            opclass=bl.PGV_OPCLASS[a.metric] if pgv else None)
    else:
        opts = ({"m": 16, "ef_construction": 64} if index == "hnsw"
                else {"lists": max(10, len(base) // 1000)})
        b = bl.create_index(a.dsn, tbl, iname, a.metric, opts, verbose=True, using=index,
                            opclass=bl.PGV_OPCLASS[a.metric],
                            settings={"max_parallel_maintenance_workers": max(0, os.cpu_count() - 1),
                                      "maintenance_work_mem": "'4GB'"})
    info = bl.index_info(conn, iname, vidx=(index == "vidx"))
    res["builds"].append({"index": index, "column": coltype, "build_s": b["build_s"],
                          "index_bytes": info["index_bytes"], "sidecar_bytes": info["sidecar_bytes"]})
    res.setdefault("build_s", b["build_s"])
    noise = a.noise if a.noise is not None else 0.05 * float(np.ptp(Q))
    kw = dict(tbl=tbl, qtbl=qtbl, op=bl.OPERATOR[a.metric], k=a.k, nq=len(Q), noise=f"{noise:g}", cast=cast)
    tmp = tempfile.mkdtemp(prefix="vidx-pgbench-")
    scripts = {}
    for name in ("knn.sql", "insert.sql"):
        scripts[name] = os.path.join(tmp, name)
        with open(scripts[name], "w") as f:
            f.write(fill(name, **kw))
    with conn.cursor() as cur:
        stmt = fill("knn.sql", **kw).strip().splitlines()[-1].replace(":qid", "1")
        cur.execute("EXPLAIN (COSTS OFF) " + stmt)
        plan = [r[0] for r in cur.fetchall()]
    res.setdefault("plans", {})[index] = plan
    bl.log("plan of the k-NN statement:\n    " + "\n    ".join(plan))
    if not any("Index Scan using" in p for p in plan):
        bl.log(f"WARNING: the k-NN statement does not use the {index} index")

    env = dict(os.environ)
    if index == "vidx" and a.probes:
        env["PGOPTIONS"] = f"-c vidx.probes={a.probes}"
    elif index == "hnsw":
        env["PGOPTIONS"] = f"-c hnsw.ef_search={a.ef_search}"
    elif index == "ivfflat":
        env["PGOPTIONS"] = f"-c ivfflat.probes={a.ivf_probes}"
    for wl in a.workloads.split(","):
        if wl == "knn":
            files = ["-f", scripts["knn.sql"] + "@1"]
            names = {0: "knn"}
        elif wl == "insert":
            files = ["-f", scripts["insert.sql"] + "@1"]
            names = {0: "insert"}
        else:
            files = ["-f", scripts["knn.sql"] + "@9", "-f", scripts["insert.sql"] + f"@{a.insert_weight}"]
            names = {0: "knn", 1: "insert"}
        for c in [int(x) for x in a.clients.split(",")]:
            prefix = os.path.join(tmp, f"log_{wl}_c{c}")
            def tree_counts():
                with conn.cursor() as cur:
                    if index != "vidx":
                        cur.execute(f"SELECT count(*) FROM {tbl}")
                        return cur.fetchone()[0], 0, 0, 0
                    cur.execute(f"SELECT count(*), vidx_stats('{iname}')::jsonb FROM {tbl}")
                    n, st = cur.fetchone()
                return n, int(st.get("splits", 0)), int(st.get("merges", 0)), int(st.get("leaves", 0))
            rows_before, splits_before, merges_before, leaves_before = tree_counts()
            cmd = ["pgbench", "-n", "-M", "prepared", "-c", str(c), "-j", str(min(c, 2)),
                   "-T", str(a.duration), "--log", f"--log-prefix={prefix}", "-P", "10"] + files
            if a.dsn:
                cmd.append(a.dsn)
            bl.log(f"pgbench {wl}, {c} client(s), {a.duration} s")
            t0 = time.time()
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
            if p.returncode != 0:
                bl.log(f"pgbench failed:\n{p.stdout}\n{p.stderr}")
                return 1
            s = summarize(parse_logs(prefix), a.duration)
            s["per_script"] = {names.get(k, str(k)): v for k, v in s.get("per_script", {}).items()}
            rows_after, splits_after, merges_after, leaves_after = tree_counts()
            s.update(index=index, column=coltype, workload=wl, clients=c, threads=min(c, 2), duration=a.duration,
                     rows_before=rows_before, rows_after=rows_after,
                     splits=splits_after - splits_before, merges=merges_after - merges_before,
                     leaves_before=leaves_before, leaves_after=leaves_after, started=t0,
                     pgbench_summary=[ln for ln in p.stdout.splitlines() if ln.startswith(("tps", "latency",
                                                                                           "number of"))])
            res["runs"].append(s)
            ks = s["per_script"].get("knn", {})
            bl.log(f"  rows {rows_before:,} -> {rows_after:,}, leaves {leaves_before} -> {leaves_after}, "
                   f"{s['splits']} splits, {s['merges']} merges")
            bl.log(f"  TPS {s['tps']:.1f}; k-NN p50 {ks.get('p50_ms', 0):.2f} p95 {ks.get('p95_ms', 0):.2f} "
                   f"p99 {ks.get('p99_ms', 0):.2f} ms" + (
                       f"; insert p50 {s['per_script']['insert']['p50_ms']:.2f} p99 "
                       f"{s['per_script']['insert']['p99_ms']:.2f} ms" if "insert" in s["per_script"] else ""))
            bl.write_json(os.path.join(out, "results.json"), res)
    if index == "vidx":
        with conn.cursor() as cur:
            cur.execute(f"SELECT vidx_verify('{iname}')")
            res.setdefault("vidx_verify_after", cur.fetchone()[0])
    bl.write_json(os.path.join(out, "results.json"), res)
    return 0


def main(argv=None):
    bl.fast_blas()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fmnist")
    ap.add_argument("--metric", default="l2", choices=bl.METRICS)
    ap.add_argument("--clients", default="1,2,8")
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--workloads", default="knn,mixed")
    ap.add_argument("--insert-weight", type=int, default=1, help="mixed: insert.sql weight (k-NN is 9)")
    ap.add_argument("--noise", type=float, default=None, help="insert noise width (default: 5%% of the "
                    "data's value range)")
    ap.add_argument("--probes", type=int, default=None, help="vidx.probes for the pgbench sessions")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--initial-rows", type=int, default=None,
                    help="rows of the data set in the table when the index is built (default: all)")
    ap.add_argument("--pgvector", default="",
                    help="indexes on a vector column instead, in turn: any of vidx,hnsw,ivfflat")
    ap.add_argument("--ef-search", type=int, default=40, help="pgvector mode: hnsw.ef_search")
    ap.add_argument("--ivf-probes", type=int, default=4, help="pgvector mode: ivfflat.probes")
    ap.add_argument("--dsn", default="")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    out = a.out or os.path.join(bl.RESULTS_DIR, f"pgbench_{a.dataset}" + ("_pgvector" if a.pgvector else ""))
    os.makedirs(out, exist_ok=True)

    if a.dataset == "fmnist":
        import datagen
        datagen.fmnist_dataset()
    base, Q, meta = bl.load_dataset(a.dataset)
    conn = bl.connect(a.dsn)
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS vidx")
    bl.ensure_tables(conn, a.dataset, base, Q)
    res = {"benchmark": "pgbench workloads (bench/pgbench_run.py)", "argv": sys.argv[1:],
           "machine": bl.machine_info(conn), "dataset": meta, "metric": a.metric, "runs": [], "builds": []}
    if a.pgvector:
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
            cur.execute("CREATE EXTENSION IF NOT EXISTS vidx_pgvector")
    for index in (a.pgvector.split(",") if a.pgvector else ["vidx"]):
        if run_index(a, conn, base, Q, res, out, index, pgv=bool(a.pgvector)) != 0:
            return 1
    bl.write_json(os.path.join(out, "results.json"), res)
    write_md(out, res)
    bl.log(f"results in {out}/results.json and results.md")
    return 0


def write_md(out, res):
    m = res["machine"]
    ds = res["dataset"]
    L = [f"# pgbench on vidx: {ds.get('name')} ({ds.get('rows'):,} x {ds.get('dim')}, {res['metric']})", "",
         f"Machine: {m['cpu_model']}, {m['cpus']} CPUs, {m['ram_gib']} GiB RAM; "
         f"{m.get('postgres', '').split(' on ')[0]}; commit {m['commit']}"
         f"{' (+ uncommitted changes in the tree)' if m.get('tree_dirty') else ''}; {m['date_utc']}; "
         f"load average at start {', '.join(f'{x:.1f}' for x in m['loadavg_at_start'])}.",
         f"Server settings: {', '.join(f'{k}={v}' for k, v in m.get('pg_settings', {}).items())}.",
         "Command: `/usr/bin/python3 bench/pgbench_run.py " + " ".join(res.get("argv", [])) + "`; "
         "`pgbench -n -M prepared -c C -j min(C,2) -T D --log`; percentiles from the per-transaction logs.",
         "Index builds on the copy: " + "; ".join(
             f"{b['index']} on {b['column']} {b['build_s']:.1f} s, {b['index_bytes'] / 2**20:.1f} MiB"
             + (f" + sidecar {b['sidecar_bytes'] / 2**20:.0f} MiB" if b.get("sidecar_bytes") else "")
             for b in res.get("builds", [])) + f". vidx_verify after the runs: {res.get('vidx_verify_after')}.", "",
         "| index | workload | clients | TPS | k-NN p50 ms | k-NN p95 ms | k-NN p99 ms | insert TPS | insert p50 ms | "
         "insert p99 ms | insert max ms | rows before -> after | leaves before -> after | splits | merges |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        k = r["per_script"].get("knn", {})
        i = r["per_script"].get("insert")
        L.append(f"| {r.get('index', 'vidx')} on {r.get('column', 'real[]')} | {r['workload']} | {r['clients']} | {r['tps']:.1f} | {k.get('p50_ms', 0):.2f} | "
                 f"{k.get('p95_ms', 0):.2f} | {k.get('p99_ms', 0):.2f} | "
                 + (f"{i['tps']:.1f} | {i['p50_ms']:.2f} | {i['p99_ms']:.2f} | {i.get('max_ms', 0):.1f} |"
                    if i else " | | | |")
                 + f" {r.get('rows_before', 0):,} -> {r.get('rows_after', 0):,} | {r.get('leaves_before', '')} -> "
                   f"{r.get('leaves_after', '')} | {r.get('splits', '')} | {r.get('merges', '')} |")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    sys.exit(main())
