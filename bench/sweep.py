#!/usr/bin/python3
"""Recall/latency sweep of vidx against exact search and FAISS, on one data set.

  PGHOST=/var/run/postgresql PGPORT=5498 PGUSER=postgres \\
      /usr/bin/python3 bench/sweep.py --dataset fmnist
  ... --dataset clustered_d128_n100000_s42 --metric cos   (made by bench/datagen.py gen)

For each index option set (--index-options, e.g. "default;lists=500") the
index is built in a fresh backend (build time, its peak RSS, index and sidecar
size), then every (vidx.probes, vidx.rerank) pair runs the queries one at a
time from one client through a prepared statement: LIMIT 10 for recall@1,
recall@10, QPS and p50/p95/p99 latency, and LIMIT 100 over --k100-queries
queries for recall@100. In the same run on the same data:

  * exact search in PostgreSQL (sequential scan, index scans off),
  * FAISS IndexFlat (exact, brute force), IVFFlat (nlist = sqrt(N), nprobe
    sweep) and HNSW (M = 16, efConstruction = 64, efSearch sweep), searching
    with one thread, one query at a time from Python (builds use all cores,
    like vidx's build).

With --pgvector (pgvector 0.8.6 and vidx_pgvector installed), in the same run
on the same data and client path: the vectors go once into <dataset>_pgv
(id, vec vector(D)), or <dataset>_pgh with --pgv-type halfvec; vidx on that column (vidx_pgvector, the same
probes x rerank sweep), then pgvector's HNSW (m = --hnsw-m, ef_construction
= --hnsw-efc; hnsw.ef_search sweep --pgv-ef-search) and IVFFlat (lists =
rows / 1000, at least 10, as pgvector's README advises up to 1M rows;
ivfflat.probes sweep --ivf-probes), one index on the column at a time, each
built in a fresh backend with max_parallel_maintenance_workers = CPUs - 1
and maintenance_work_mem = --pgv-maintenance-work-mem. Queries send the
same binary real[] cast to vector in SQL. --skip-real leaves out vidx on the
real[] column.

Writes into --out (default bench/results/<dataset>_<metric>/):
  results.json  everything (machine, settings, commit, every measurement)
  results.csv   one row per method and setting
  results.md    markdown tables
  recall_qps.png  recall@10 (x) vs QPS (y, log), one line per method
Recall is tie-aware: a returned row counts if its exact distance is within
the exact k-th distance.

Target-recall mode (--target-recall 0.9,0.95,0.99, issue 14): after the
(probes, rerank) grid, each target runs the same queries with only
vidx.target_recall set, and the results say which probes it chose, its
recall@10 and QPS, the best fixed vidx.probes of the grid that reaches the
target (the fewest; its QPS, run again side by side with the target), and what vidx_recall() (the same queries as
query_vectors) estimates, with its interval. The build records how long the
recall calibration took (vidx_stats: calibration.ms) against the build.
  ... --target-recall 0.9,0.95,0.99 --rerank 0 --probes 1,2,...,64 --no-faiss
"defaults" among the targets runs the queries with nothing set: the default
vidx.target_recall, compared with the fewest fixed probes reaching 0.95.

Server-side mode (--server-side N, issue 13): each setting (vidx and, with
--pgvector, pgvector's) is also timed inside the server, a plpgsql loop of
the first N queries through EXECUTE ... USING (bench/benchlib.py
server_side_ms): the client's formatting and the round trip do not count,
planning does (for every index alike). Median of 3 rounds, in ms per query,
in the "server ms/q" column. With --storage PLAIN both the real[] table and
the pgvector table keep their vectors in the row (no TOAST fetch when the
executor computes the ORDER BY expression of each row returned).
  ... --dataset fmnist --storage PLAIN --server-side 1000 --pgvector
"""

import argparse
import csv
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402


def parse_opts(s):
    out = []
    for part in s.split(";"):
        part = part.strip()
        if not part or part == "default":
            out.append({})
        else:
            out.append(dict(kv.split("=", 1) for kv in part.split(",")))
    return out


def warmup_of(a, Q):
    """Untimed queries before a setting's timed pass: all of them with --warm-pass, else one."""
    return len(Q) if a.warm_pass else 1


def opts_label(o):
    return ",".join(f"{k}={v}" for k, v in o.items()) or "defaults"


# ----------------------------------------------------------------- FAISS


def faiss_search(index, Q, k):
    lat = np.empty(len(Q))
    rows = []
    t0 = time.perf_counter()
    for i, q in enumerate(Q):
        t1 = time.perf_counter()
        _, I = index.search(q[None, :], k)
        lat[i] = time.perf_counter() - t1
        rows.append(I[0])
    wall = time.perf_counter() - t0
    return {"queries": len(Q), "qps": len(Q) / wall, "mean_ms": float(lat.mean() * 1e3),
            "p50_ms": float(np.percentile(lat, 50) * 1e3), "p95_ms": float(np.percentile(lat, 95) * 1e3),
            "p99_ms": float(np.percentile(lat, 99) * 1e3)}, rows


def faiss_refs(base, Q, metric, gt_d, a, results):
    import faiss
    n, d = base.shape
    X = np.ascontiguousarray(base, dtype=np.float32)
    Qf = np.ascontiguousarray(Q, dtype=np.float32)
    if metric == "cos":
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        Qf = Qf / np.linalg.norm(Qf, axis=1, keepdims=True)
    fm = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    threads = os.cpu_count()

    def measure(method, index, param, build_s, nq=None):
        q10 = Qf[:nq] if nq else Qf
        r, rows = faiss_search(index, q10, 10)
        for kk in (1, 10):
            r[f"recall@{kk}"] = float(np.mean([bl.recall(rows[i], gt_d[i], base, Q[i], metric, kk)
                                               for i in range(len(rows))]))
        nq100 = min(a.k100_queries, len(q10))
        if nq100:
            r100, rows100 = faiss_search(index, q10[:nq100], 100)
            r["recall@100"] = float(np.mean([bl.recall(rows100[i], gt_d[i], base, Q[i], metric, 100)
                                             for i in range(nq100)]))
            r["k100_qps"] = r100["qps"]
        r.update(method=method, params=param, build_s=build_s)
        results.append(r)
        bl.log(f"  {method:<14} {param:<22} recall@10 {r['recall@10']:.3f}  QPS {r['qps']:8.1f}  "
               f"p99 {r['p99_ms']:.2f} ms")

    faiss.omp_set_num_threads(1)
    flat = faiss.IndexFlat(d, fm)
    flat.add(X)
    measure("faiss-flat", flat, "exact", 0.0, nq=min(len(Qf), a.exact_faiss_queries))
    del flat

    nlist = a.nlist or max(1, int(round(np.sqrt(n))))
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    quant = faiss.IndexFlat(d, fm)
    ivf = faiss.IndexIVFFlat(quant, d, nlist, fm)
    ivf.train(X)
    ivf.add(X)
    b = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    for npb in [int(x) for x in a.nprobe.split(",")]:
        if npb > nlist:
            continue
        ivf.nprobe = npb
        measure("faiss-ivfflat", ivf, f"nlist={nlist} nprobe={npb}", b)
    del ivf

    if a.ef_search in ("", "none"):
        return  # no HNSW reference (its build takes hours at 1M x 1024 on 2 cores)
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(d, a.hnsw_m, fm)
    hnsw.hnsw.efConstruction = a.hnsw_efc
    hnsw.add(X)
    b = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    for ef in [int(x) for x in a.ef_search.split(",")]:
        hnsw.hnsw.efSearch = ef
        measure("faiss-hnsw", hnsw, f"M={a.hnsw_m} efC={a.hnsw_efc} ef={ef}", b)
    del hnsw


# ----------------------------------------------------------------- pgvector mode


def pgvector_sweep(a, conn, table, base, Q, gt_d, res):
    """vidx (vidx_pgvector), pgvector HNSW and IVFFlat on one vector column."""
    n, d = base.shape
    vt = a.pgv_type
    ptable = bl.ensure_pgvector_table(conn, table, d, vtype=vt, storage=a.storage)
    opclass = bl.PGV_OPCLASS[a.metric].replace("vector_", vt + "_")
    nq100 = res["k100_queries"]
    cpus = os.cpu_count()
    build_settings = {"max_parallel_maintenance_workers": max(0, cpus - 1),
                      "maintenance_work_mem": f"'{a.pgv_maintenance_work_mem}'"}
    ivf_lists = a.ivf_lists or max(10, n // 1000)
    methods = [("vidx-vector", "vidx", {}, [{"vidx.probes": p, "vidx.rerank": rr, **extra_settings(a)}
                                            for rr in a.rerank.split(",") for p in a.probes.split(",")]),
               ("pgvector-hnsw", "hnsw", {"m": a.hnsw_m, "ef_construction": a.hnsw_efc},
                [{"hnsw.ef_search": ef} for ef in a.pgv_ef_search.split(",")]),
               ("pgvector-ivfflat", "ivfflat", {"lists": ivf_lists},
                [{"ivfflat.probes": p} for p in a.ivf_probes.split(",") if int(p) <= ivf_lists])]
    for method, using, opts, settings_list in methods:
        if a.pgv_methods and method not in a.pgv_methods.split(","):
            continue
        index = f"{ptable}_idx"
        b = bl.create_index(a.dsn, ptable, index, a.metric, opts, column="vec", using=using,
                            opclass=opclass, settings=build_settings)
        info = bl.index_info(conn, index, vidx=(using == "vidx"))
        res["builds"].append({"method": method, "column": f"{vt}({d})", "options": opts,
                              "loadavg_before_queries": list(os.getloadavg()), "build_s": b["build_s"],
                              "build_backend": b["build_backend"], **info})
        qconn = bl.connect(a.dsn)
        for s in settings_list:
            r, _ = bl.run_queries(qconn, ptable, Q, a.metric, 10, s, base=base, gt_dist=gt_d,
                                  column="vec", qtype=vt, warmup=warmup_of(a, Q))
            if f"Index Scan using {index}" not in r["plan"]:
                bl.log(f"  WARNING: plan without the index: {r['plan']}")
            r100, _ = bl.run_queries(qconn, ptable, Q[:nq100], a.metric, 100, s, base=base,
                                     gt_dist=gt_d[:nq100], ks=(100,), column="vec", qtype=vt)
            if a.server_side:
                r.update(bl.server_side_ms(qconn, ptable, a.metric, s, n=min(a.server_side, len(Q)),
                                           column="vec", qtype=vt))
            r.update({"column": f"{vt}({d})", "method": (method if vt == "vector" else method.replace("-vector", "-halfvec")
                                                          if "-vector" in method else method + "-halfvec"),
                      "params": " ".join(f"{k.split('.')[-1]}={v}" for k, v in s.items()),
                      "index_options": opts_label(opts), "recall@100": r100["recall@100"],
                      "k100_qps": r100["qps"], "build_s": b["build_s"], "index_bytes": info["index_bytes"],
                      "sidecar_bytes": info["sidecar_bytes"],
                      "build_backend_hwm_mib": b["build_backend"].get("VmHWM_mib")})
            if using == "vidx":
                r.update(probes=s["vidx.probes"], rerank=s["vidx.rerank"])
            res["results"].append(r)
            bl.log(f"  {method:<17} {r['params']:<22} recall@10 {r['recall@10']:.3f} "
                   f"recall@100 {r['recall@100']:.3f}  QPS {r['qps']:7.1f}  p50 {r['p50_ms']:.2f} "
                   f"p99 {r['p99_ms']:.2f} ms")
        qconn.close()
        with conn.cursor() as cur:
            cur.execute(f"DROP INDEX {index}")
        bl.write_json(os.path.join(a.out_dir, "results.json"), res)


# ----------------------------------------------------------------- output


CSV_FIELDS = ["method", "params", "index_options", "probes", "rerank", "recall@1", "recall@10", "recall@100",
              "qps", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "k100_qps", "queries", "build_s",
              "index_bytes", "sidecar_bytes", "build_backend_hwm_mib", "query_backend_hwm_mib"]


def write_outputs(out, res):
    bl.write_json(os.path.join(out, "results.json"), res)
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in res["results"]:
            w.writerow({k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()})
    m = res["machine"]
    ds = res["dataset"]
    L = [f"# vidx sweep: {ds.get('name')} ({ds.get('rows'):,} x {ds.get('dim')}, {res['metric']})", "",
         bl.machine_line(m),
         f"Server settings: {', '.join(f'{k}={v}' for k, v in m.get('pg_settings', {}).items())}.",
         f"Queries: {res['queries']} (LIMIT 10; recall@100 from LIMIT 100 over the first "
         f"{res['k100_queries']}), one client, prepared statement, one at a time; embedding storage "
         f"{res.get('storage', 'EXTERNAL')}; query vectors sent as "
         f"{'a Python float list (float8[])' if res.get('trivial_query', {}).get('client') == 'list' else 'binary real[] from numpy'}"
         + (f"; on this path a trivial query carrying the vector runs at {res['trivial_query']['qps']:.0f} QPS "
            f"(p50 {res['trivial_query']['p50_ms']:.3f} ms)" if res.get("trivial_query") else "")
         + ("; each setting's queries ran once, untimed, before its timed pass (--warm-pass)"
            if "--warm-pass" in res.get("argv", []) else "") + ".",
         "Command: `/usr/bin/python3 bench/sweep.py " + " ".join(res.get("argv", [])) + "`", ""]
    for b in res["builds"]:
        if b.get("method", "vidx") != "vidx" and b["method"] != "vidx-vector":
            L.append(f"- {b['method']} ({opts_label(b['options'])}): build {b['build_s']:.1f} s, index "
                     f"{b['index_bytes'] / 2**20:.1f} MiB ({b['index_bytes'] / ds['rows']:.0f} bytes/row), "
                     f"build backend peak RSS {b['build_backend'].get('VmHWM_mib')} MiB"
                     + (f"; load average before its queries {', '.join(f'{x:.1f}' for x in b['loadavg_before_queries'])}"
                        if b.get("loadavg_before_queries") else ""))
            continue
        L.append(f"- {b.get('method', 'vidx')} index ({opts_label(b['options'])}): build {b['build_s']:.1f} s, index "
                 f"{b['index_bytes'] / 2**20:.1f} MiB ({b['index_bytes'] / ds['rows']:.0f} bytes/row), sidecar "
                 f"{(b['sidecar_bytes'] or 0) / 2**20:.0f} MiB, {b['stats'].get('leaves')} leaves, "
                 f"build backend peak RSS {b['build_backend'].get('VmHWM_mib')} MiB, query backend peak RSS "
                 f"{b.get('query_backend', {}).get('VmHWM_mib')} MiB")
    fb = {}
    for r in res["results"]:
        if r["method"].startswith("faiss") and r["method"] not in fb:
            fb[r["method"]] = r["build_s"]
    for k, v in fb.items():
        if k != "faiss-flat":
            L.append(f"- {k}: build {v:.1f} s ({m['cpus']} threads)")
    server = any("server_ms" in r for r in res["results"])
    if server:
        L += ["", "Server ms/q: time per query inside the server (a plpgsql loop of the first "
              f"{max(r.get('server_queries', 0) for r in res['results'])} queries through EXECUTE ... USING, "
              "planning included; median of 3 rounds, the rounds in results.json), beside the client-side "
              "figures."]
    L += ["", "| method | setting | recall@1 | recall@10 | recall@100 | QPS | p50 ms | p95 ms | p99 ms |"
          + (" server ms/q |" if server else ""),
          "|---|---|---|---|---|---|---|---|---|" + ("---|" if server else "")]
    for r in res["results"]:
        r100 = r.get("recall@100")
        L.append(f"| {r['method']} | {r['params']} | {r['recall@1']:.3f} | {r['recall@10']:.3f} | "
                 f"{'' if r100 is None else f'{r100:.3f}'} | {r['qps']:.1f} | {r['p50_ms']:.2f} | "
                 f"{r['p95_ms']:.2f} | {r['p99_ms']:.2f} |"
                 + ((f" {r['server_ms']:.3f} |" if "server_ms" in r else " |") if server else ""))
    if res.get("targets"):
        L += ["", "## vidx.target_recall", "",
              "Only `vidx.target_recall` set; the best fixed setting is the fewest `vidx.probes` of the "
              "grid above (same re-scoring) whose recall@10 reaches the target. The QPS ratio compares the "
              "target's mean QPS over two runs with the best fixed setting run between them (the machine is "
              "shared: the grid's own QPS drift). `vidx_recall` ran the same queries as `query_vectors`.", "",
              "| target | probes chosen | recall@10 | QPS | p99 ms | best fixed probes | its recall@10 | its QPS "
              "| QPS ratio side by side | vidx_recall (95% interval) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for t in res["targets"]:
            bf = t.get("best_fixed") or {}
            vr = t.get("vidx_recall") or {}
            pr = t.get("paired") or {}
            ratio = (f"{pr['ratio']:.2f} ({pr['target_qps']:.0f} / {pr['fixed_qps']:.0f})" if pr else "")
            L.append(f"| {t['target']} | {t['probes_used']} | {t['recall@10']:.3f} | {t['qps']:.1f} | "
                     f"{t['p99_ms']:.2f} | {bf.get('probes', 'none reaches it')} | "
                     f"{bf['recall@10']:.3f} | {bf['qps']:.1f} | {ratio} | " if bf else
                     f"| {t['target']} | {t['probes_used']} | {t['recall@10']:.3f} | {t['qps']:.1f} | "
                     f"{t['p99_ms']:.2f} | none reaches it | | | | ")
            L[-1] += (f"{vr['recall']:.3f} [{vr['recall_low']:.3f}, {vr['recall_high']:.3f}] |" if vr else " |")
        for b in res["builds"]:
            c = b.get("calibration") or {}
            if c:
                L.append("")
                L.append(f"Calibration ({opts_label(b['options'])}): {c.get('queries')} queries over "
                         f"{c.get('rows')} rows, {c.get('ms')} ms of the {b['build_s']:.1f} s build "
                         f"({100 * c.get('ms', 0) / 1000 / b['build_s']:.1f}%); curve: " +
                         ", ".join(f"{p}: {r}" for p, r in zip(c.get("probes", []), c.get("recall", []))))
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    plot(out, res)


def plot(out, res):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series = {}
    for r in res["results"]:
        if r["method"] == "vidx":
            key = f"vidx rerank={r['rerank']}" + ("" if r["index_options"] == "defaults" else f" [{r['index_options']}]")
        else:
            key = r["method"]
        series.setdefault(key, []).append(r)
    fig, ax = plt.subplots(figsize=(8, 6), dpi=110)
    markers = "o^sDv<>ph*"
    for i, (key, rs) in enumerate(sorted(series.items())):
        xs = [r["recall@10"] for r in rs]
        ys = [r["qps"] for r in rs]
        if len(rs) == 1:
            ax.plot(xs, ys, markers[i % len(markers)], label=key, markersize=8)
        else:
            ax.plot(xs, ys, "-" + markers[i % len(markers)], label=key, markersize=5)
    ds = res["dataset"]
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries per second (1 client, log scale)")
    ax.set_title(f"{ds.get('name')} ({ds.get('rows'):,} x {ds.get('dim')}, {res['metric']}): "
                 f"recall vs QPS\n{res['machine']['cpu_model']}, {res['machine']['cpus']} CPUs, "
                 f"commit {res['machine']['commit']}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    lo = min(r["recall@10"] for r in res["results"])
    ax.set_xlim(max(0.0, lo - 0.05), 1.005)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "recall_qps.png"))
    plt.close(fig)


# ----------------------------------------------------------------- main


def extra_settings(a):
    """--set NAME=VALUE settings, for every vidx run."""
    return bl.parse_settings(a.set)


def main(argv=None):
    bl.fast_blas()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fmnist", help="fmnist or a bench/datagen.py gen name")
    ap.add_argument("--metric", default="l2", choices=bl.METRICS)
    ap.add_argument("--queries", type=int, default=None, help="first N queries (default all)")
    ap.add_argument("--k100-queries", type=int, default=1000)
    ap.add_argument("--probes", default="1,2,3,4,6,10,16,32")
    ap.add_argument("--rerank", default="10,40,100")
    ap.add_argument("--index-options", default="default",
                    help="';'-separated option sets, e.g. 'default;lists=500,kmeans_iterations=20'")
    ap.add_argument("--exact-queries", type=int, default=20, help="PostgreSQL exact-scan queries")
    ap.add_argument("--exact-faiss-queries", type=int, default=1000)
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--nlist", type=int, default=0)
    ap.add_argument("--nprobe", default="1,2,4,8,16,32,64")
    ap.add_argument("--hnsw-m", type=int, default=16)
    ap.add_argument("--hnsw-efc", type=int, default=64)
    ap.add_argument("--ef-search", default="10,16,32,64,128,256",
                    help="FAISS HNSW efSearch sweep; 'none': no FAISS HNSW reference")
    ap.add_argument("--pgvector", action="store_true",
                    help="also vidx on a pgvector vector column, pgvector HNSW and IVFFlat (see above)")
    ap.add_argument("--skip-real", action="store_true", help="no vidx index on the real[] column")
    ap.add_argument("--pgv-methods", default="", help="only these of vidx-vector,pgvector-hnsw,pgvector-ivfflat")
    ap.add_argument("--pgv-type", default="vector", choices=("vector", "halfvec"),
                    help="pgvector mode: the column type (halfvec: values rounded to half precision)")
    ap.add_argument("--pgv-ef-search", default="10,20,40,80,160,320")
    ap.add_argument("--ivf-lists", type=int, default=0, help="IVFFlat lists (default rows / 1000, >= 10)")
    ap.add_argument("--ivf-probes", default="1,2,4,8,16,32")
    ap.add_argument("--pgv-maintenance-work-mem", default="4GB")
    ap.add_argument("--target-recall", default="",
                    help="comma-separated vidx.target_recall values to run after the grid (e.g. 0.9,0.95,0.99); "
                         "'defaults' runs with nothing set (the best fixed setting is then the fewest probes "
                         "reaching 0.95)")
    ap.add_argument("--server-side", type=int, default=0, metavar="N",
                    help="also time each setting inside the server: a plpgsql loop of the first N "
                         "queries through EXECUTE ... USING, median of 3 rounds (ms per query)")
    ap.add_argument("--warm-pass", action="store_true",
                    help="run every query of a setting once, untimed, before its timed pass (steady "
                         "state of a long-lived connection: a session's first read of each sidecar "
                         "page is a page fault; without it, one warm-up query)")
    ap.add_argument("--replot", action="store_true", help="only redraw outputs from results.json")
    bl.add_client_arg(ap)
    ap.add_argument("--storage", default="EXTERNAL",
                    help="storage of the embedding column: EXTERNAL (out of line, TOAST) or MAIN "
                         "(in the row when it fits; no TOAST lookup per returned row)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting for every vidx run besides probes and rerank (repeatable), "
                         "e.g. --set vidx.scan_threads=2")
    ap.add_argument("--dsn", default="")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    out = a.out or os.path.join(bl.RESULTS_DIR, f"{a.dataset}_{a.metric}" + (
        ("_pgvector" if a.pgv_type == "vector" else "_pgvector_halfvec") if a.pgvector else ""))
    a.out_dir = out
    if a.replot:
        import json
        with open(os.path.join(out, "results.json")) as f:
            write_outputs(out, json.load(f))
        return 0

    if a.dataset == "fmnist":
        import datagen
        datagen.fmnist_dataset()
    base, Q, meta = bl.load_dataset(a.dataset, mmap=False)
    _, gt_d = bl.ensure_gt(a.dataset, a.metric)
    if a.queries:
        Q, gt_d = Q[:a.queries], gt_d[:a.queries]
    conn = bl.connect(a.dsn)
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS vidx")
    res = {"benchmark": "recall/latency sweep (bench/sweep.py)", "argv": sys.argv[1:],
           "machine": bl.machine_info(conn), "dataset": meta, "metric": a.metric,
           "queries": len(Q), "k100_queries": min(a.k100_queries, len(Q)), "builds": [], "results": []}
    bl.log(f"sweep {a.dataset} ({len(base):,} x {base.shape[1]}, {a.metric}), {len(Q)} queries; "
           f"commit {res['machine']['commit']}")
    table = a.dataset
    lt = bl.ensure_tables(conn, table, base, Q, storage=a.storage)
    res["storage"] = a.storage
    bl.set_client(a.client)
    res["trivial_query"] = bl.trivial_query(conn, Q)
    bl.log(f"client path ({a.client}): a trivial query carrying the vector: "
           f"{res['trivial_query']['qps']:.0f} QPS, p50 {res['trivial_query']['p50_ms']:.3f} ms")
    if lt:
        res["copy_s"] = lt

    probes = [int(x) for x in a.probes.split(",")]
    reranks = [int(x) for x in a.rerank.split(",")]
    nq100 = res["k100_queries"]
    for oi, opts in enumerate([] if a.skip_real else parse_opts(a.index_options)):
        index = f"{table}_vidx"
        b = bl.create_index(a.dsn, table, index, a.metric, opts)
        info = bl.index_info(conn, index)
        build = {"options": opts, "build_s": b["build_s"], "build_backend": b["build_backend"], **info}
        res["builds"].append(build)
        qconn = bl.connect(a.dsn)
        qpid = bl.backend_pid(qconn)
        for rr in reranks:
            for p in probes:
                s = {"vidx.probes": p, "vidx.rerank": rr, **extra_settings(a)}
                r, _ = bl.run_queries(qconn, table, Q, a.metric, 10, s, base=base, gt_dist=gt_d,
                                      warmup=warmup_of(a, Q))
                if "Index Scan" not in r["plan"]:
                    bl.log(f"  WARNING: plan without the index: {r['plan']}")
                r100, _ = bl.run_queries(qconn, table, Q[:nq100], a.metric, 100, s, base=base,
                                         gt_dist=gt_d[:nq100], ks=(100,))
                if a.server_side:
                    r.update(bl.server_side_ms(qconn, table, a.metric, s, n=min(a.server_side, len(Q))))
                r.update({"method": "vidx", "params": f"probes={p} rerank={rr}" +
                          "".join(f" {k}={v}" for k, v in extra_settings(a).items()) +
                          ("" if not opts else f" [{opts_label(opts)}]"),
                          "index_options": opts_label(opts), "probes": p, "rerank": rr,
                          "recall@100": r100["recall@100"], "k100_qps": r100["qps"],
                          "build_s": b["build_s"], "index_bytes": info["index_bytes"],
                          "sidecar_bytes": info["sidecar_bytes"],
                          "build_backend_hwm_mib": b["build_backend"].get("VmHWM_mib")})
                res["results"].append(r)
                bl.log(f"  vidx {r['params']:<30} recall@1 {r['recall@1']:.3f} recall@10 {r['recall@10']:.3f} "
                       f"recall@100 {r['recall@100']:.3f}  QPS {r['qps']:7.1f}  p50 {r['p50_ms']:.2f} "
                       f"p99 {r['p99_ms']:.2f} ms")
        with qconn.cursor() as cur:
            cur.execute("SELECT vidx_stats(%s)->'calibration'", (index,))
            build["calibration"] = cur.fetchone()[0]
        for tv in [x.strip() for x in a.target_recall.split(",") if x.strip()]:
            # "defaults": nothing set (the default target, issue 13's goal of recall@10 >= 0.95)
            t = "defaults" if tv == "defaults" else float(tv)
            s = {**extra_settings(a), **({} if t == "defaults" else {"vidx.target_recall": t})}
            goal = 0.95 if t == "defaults" else t
            r, _ = bl.run_queries(qconn, table, Q, a.metric, 10, s, base=base, gt_dist=gt_d,
                                  warmup=warmup_of(a, Q))
            fixed = [x for x in res["results"] if x["method"] == "vidx" and x["index_options"] == opts_label(opts)
                     and x["rerank"] == 0 and x["recall@10"] >= goal]
            # the fewest probes that reach the target: the grid's own QPS are too noisy to pick by
            best = min(fixed, key=lambda x: x["probes"]) if fixed else None
            # the machine is shared and noisy: the best fixed setting runs again right after,
            # and the target once more after it, so the QPS ratio compares runs side by side
            paired = None
            if best is not None:
                rb, _ = bl.run_queries(qconn, table, Q, a.metric, 10, {"vidx.probes": best["probes"], **extra_settings(a)},
                                       base=base, gt_dist=gt_d, warmup=warmup_of(a, Q))
                rt, _ = bl.run_queries(qconn, table, Q, a.metric, 10, s, base=base, gt_dist=gt_d,
                                       warmup=warmup_of(a, Q))
                paired = {"fixed_qps": rb["qps"], "target_qps": (r["qps"] + rt["qps"]) / 2,
                          "ratio": (r["qps"] + rt["qps"]) / 2 / rb["qps"]}
            # vidx_recall last: its sequential scans of the table can push the sidecar out of the
            # page cache, which would slow the runs after it
            with qconn.cursor() as cur:
                cur.execute("RESET ALL")
                for name, value in s.items():
                    cur.execute(f"SET {name} = {value}")
                cur.execute("SELECT (vidx_stats(%s)->'calibration'->>'target_probes')::float8", (index,))
                used = cur.fetchone()[0]
                cur.execute("SELECT recall, recall_low, recall_high, mean_ms, exact_ms, settings "
                            "FROM vidx_recall(%s, 0, 10, %s::real[])", (index, Q.astype(np.float32).tolist()))
                vr = dict(zip(("recall", "recall_low", "recall_high", "mean_ms", "exact_ms", "settings"),
                              cur.fetchone()))
                cur.execute("RESET ALL")
            tr = {"target": t, "index_options": opts_label(opts), "probes_used": used,
                  "recall@10": r["recall@10"], "recall@1": r["recall@1"], "qps": r["qps"],
                  "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "plan": r["plan"], "vidx_recall": vr,
                  "best_fixed": None if best is None else {"probes": best["probes"], "recall@10": best["recall@10"],
                                                           "qps": best["qps"]},
                  "paired": paired}
            res.setdefault("targets", []).append(tr)
            bl.log(f"  target_recall {t}: probes {used}, recall@10 {r['recall@10']:.3f}, QPS {r['qps']:.1f}; "
                   f"vidx_recall {vr['recall']:.3f} [{vr['recall_low']:.3f}, {vr['recall_high']:.3f}]; best fixed "
                   + (f"probes {best['probes']} recall@10 {best['recall@10']:.3f} QPS {best['qps']:.1f}" if best
                      else "none reaches it")
                   + (f"; side by side: target {paired['target_qps']:.1f} QPS, fixed {paired['fixed_qps']:.1f} "
                      f"(ratio {paired['ratio']:.2f})" if paired else ""))
        build["query_backend"] = bl.proc_status(qpid)
        for r in res["results"]:
            if r["method"] == "vidx" and r["index_options"] == opts_label(opts):
                r["query_backend_hwm_mib"] = build["query_backend"].get("VmHWM_mib")
        qconn.close()
        bl.write_json(os.path.join(out, "results.json"), res)

    if a.pgvector:
        pgvector_sweep(a, conn, table, base, Q, gt_d, res)
    if a.exact_queries:
        ne = min(a.exact_queries, len(Q))
        econn = bl.connect(a.dsn)
        r, _ = bl.run_queries(econn, table, Q[:ne], a.metric, 10, exact=True, base=base, gt_dist=gt_d[:ne],
                              warmup=1)
        econn.close()
        r.update(method="postgres-exact", params=f"seq scan ({ne} queries)", build_s=0.0)
        res["results"].append(r)
        bl.log(f"  exact scan: recall@10 {r['recall@10']:.3f}  QPS {r['qps']:.2f}  p50 {r['p50_ms']:.1f} ms "
               f"({r['plan']})")
    if not a.no_faiss:
        faiss_refs(base, Q, a.metric, gt_d, a, res["results"])
    os.makedirs(out, exist_ok=True)
    write_outputs(out, res)
    bl.log(f"results in {out}/ (results.json, results.csv, results.md, recall_qps.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
