#!/usr/bin/python3
"""Scale demo: 1M x 1024 end to end (generate, COPY, build, query), with progress.

  PGHOST=/var/run/postgresql PGPORT=5498 PGUSER=postgres \\
      /usr/bin/python3 bench/scale.py [--rows 1000000] [--dim 1024] [--queries 1000]

Needs a running server with the vidx extension installable (bench/README.md
shows the cluster settings used: shared_buffers = 4GB, wal_level = minimal).
Steps, each printed as it goes and saved to bench/results/scale_<N>x<D>/:

 1. generate the clustered unit-normalized set in chunks (bench/datagen.py)
    and its exact L2 top-100 (FAISS, blocked, cached);
 2. binary COPY into a table (storage EXTERNAL: no compression attempt);
 3. CREATE INDEX ... USING vidx with the default options, with the build's
    progress, time and backend peak RSS;
 4. queries one at a time (prepared statement): recall@1/@10, p50/p95/p99,
    QPS at the default settings, then a vidx.probes sweep up to the first
    setting that reaches recall@10 >= 0.95 (raising vidx.rerank if needed);
 5. shared-buffer hits and reads per query (EXPLAIN (ANALYZE, BUFFERS)),
    backend RSS, disk used (table, index, sidecar, data file, WAL);
 6. references on the same data: exact sequential scan (a few queries) and,
    with --faiss, FAISS IVFFlat (nlist = sqrt(N), one search thread);
 7. with --pgvector (pgvector 0.8.6 and vidx_pgvector installed), on the same
    rows copied once into scale_items_pgv (id, vec vector(D)), one index at a
    time, each queried on the same client path (binary real[] cast to
    vector): vidx (vidx_pgvector), pgvector HNSW (m 16, ef_construction 64,
    hnsw.ef_search up from 40 until recall@10 >= --target) and IVFFlat
    (lists = rows / 1000, ivfflat.probes up until the target): build time,
    index size, recall, QPS, p50/p99.

Re-running skips the steps whose output exists (data, table); --rebuild drops
the index first (it always rebuilds unless --keep-index).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import datagen  # noqa: E402


def du(path):
    try:
        return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True).stdout.split()[0])
    except Exception:
        return None


def gib(b):
    return None if b is None else round(b / 2**30, 2)


def main(argv=None):
    bl.fast_blas()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--exact-queries", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--probes-list", default="1,2,4,6,8,10,16,24,32,48,64,96,128")
    ap.add_argument("--keep-index", action="store_true", help="reuse an existing index")
    ap.add_argument("--no-prewarm", action="store_true",
                    help="measure a cold session: skip SELECT vidx_prewarm(index) in the query session")
    ap.add_argument("--faiss", action="store_true", help="also FAISS IVFFlat on the same data")
    ap.add_argument("--nprobe", default="1,2,4,8", help="FAISS IVFFlat nprobe values")
    ap.add_argument("--pgvector", action="store_true",
                    help="step 7: vidx, pgvector HNSW and IVFFlat on a vector column of the same rows")
    ap.add_argument("--pgv-methods", default="vidx,hnsw,ivfflat")
    ap.add_argument("--dsn", default="")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)

    out = a.out or os.path.join(bl.RESULTS_DIR, f"scale_{a.rows // 1000}k_x_{a.dim}")
    os.makedirs(out, exist_ok=True)
    res = {"benchmark": "scale demo (bench/scale.py)", "argv": sys.argv[1:]}
    path = os.path.join(out, "result.json")

    prev = {}
    if os.path.exists(path):
        with open(path) as f:
            prev = json.load(f)

    def carry(keys):
        """Figures of steps skipped in this run come from the previous result file."""
        for k in keys:
            if k not in res and k in prev:
                res[k] = prev[k]
                res.setdefault("carried_over", {})[k] = prev.get("machine", {}).get("date_utc")

    def save():
        bl.write_json(path, res)

    t_total = time.perf_counter()
    conn = bl.connect(a.dsn)
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS vidx")
    res["machine"] = bl.machine_info(conn)
    bl.log(f"machine: {res['machine']['cpu_model']}, {res['machine']['cpus']} CPUs, "
           f"{res['machine']['ram_gib']} GiB; commit {res['machine']['commit']}; "
           f"shared_buffers {res['machine']['pg_settings'].get('shared_buffers')}")

    # 1. data
    bl.log(f"== 1. data: {a.rows:,} x {a.dim} clustered unit-normalized, {a.queries} queries")
    t0 = time.perf_counter()
    name = datagen.gen_name(a.dim, a.rows, a.seed)
    datagen.cmd_gen(argparse.Namespace(name=None, dim=a.dim, rows=a.rows, queries=a.queries,
                                       seed=a.seed, spread=0.7, chunk=50_000, metrics="l2"))
    base, Q, meta = bl.load_dataset(name)
    _, gt_d = bl.ensure_gt(name, "l2")
    res["dataset"] = meta
    res["data_s"] = round(time.perf_counter() - t0, 1)
    res["data_file_bytes"] = os.path.getsize(os.path.join(bl.dataset_dir(name), "base.npy"))
    save()

    # 2. COPY
    table = "scale_items"
    bl.log(f"== 2. COPY into {table}")
    if bl.table_rows(conn, table) != a.rows:
        res["copy_s"] = round(bl.load_table(conn, table, base, chunk=10_000), 1)
        bl.log(f"  COPY + VACUUM ANALYZE: {res['copy_s']} s")
    else:
        bl.log("  table already loaded; skipping (the load time comes from the previous result file)")
        carry(["copy_s"])
    if bl.table_rows(conn, table + "_q") != len(Q):
        bl.load_table(conn, table + "_q", Q, verbose=False)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_table_size(%s), pg_relation_size(%s)", (table, table))
        res["table_bytes"], res["table_heap_bytes"] = cur.fetchone()
    bl.log(f"  table {gib(res['table_bytes'])} GiB (heap {gib(res['table_heap_bytes'])} GiB, rest TOAST)")
    save()

    # 3. build
    index = table + "_vidx"
    bl.log("== 3. CREATE INDEX (default options)")
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (index,))
        exists = cur.fetchone()[0]
    if not (a.keep_index and exists):
        b = bl.create_index(a.dsn, table, index, "l2")
        res["build_s"] = round(b["build_s"], 1)
        res["build_backend"] = b["build_backend"]
    else:
        bl.log("  index kept (--keep-index); build figures come from the previous result file")
        carry(["build_s", "build_backend"])
    ii = bl.index_info(conn, index)
    res["index_bytes"] = ii["index_bytes"]
    res["sidecar_bytes"] = ii["sidecar_bytes"]
    res["vidx_stats"] = ii["stats"]
    bl.log(f"  index {ii['index_bytes'] / 2**20:.0f} MiB ({ii['index_bytes'] / a.rows:.0f} B/row), "
           f"sidecar {gib(ii['sidecar_bytes'])} GiB, leaves {ii['stats'].get('leaves')}, "
           f"levels {ii['stats'].get('levels')}")
    save()

    # 4. queries
    bl.log(f"== 4. queries, one at a time, k=10 ({len(Q)} queries per setting)")
    qconn = bl.connect(a.dsn)
    qpid = bl.backend_pid(qconn)
    sweep = []
    if not a.no_prewarm:
        t0 = time.perf_counter()
        with qconn.cursor() as cur:
            cur.execute("SELECT * FROM vidx_prewarm(%s)", (index,))
            pages, sbytes = cur.fetchone()
        res["prewarm"] = {"seconds": time.perf_counter() - t0, "index_pages": pages,
                          "sidecar_bytes": sbytes}
        bl.log(f"  vidx_prewarm in the query session: {pages:,} index pages, "
               f"{sbytes / 2**30:.2f} GiB of sidecar, {res['prewarm']['seconds']:.1f} s")

    def run(settings, label):
        r, _ = bl.run_queries(qconn, table, Q, "l2", 10, settings, base=base, gt_dist=gt_d)
        r.update(label=label, settings=settings)
        r.pop("plan_rows", None)
        bl.log(f"  {label:<28} recall@1 {r['recall@1']:.3f}  recall@10 {r['recall@10']:.3f}  "
               f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  QPS {r['qps']:.1f}")
        sweep.append(r)
        res["sweep"] = sweep
        save()
        return r

    with qconn.cursor() as cur:
        cur.execute("SELECT current_setting('vidx.probes', true), current_setting('vidx.rerank', true)")
        dprobes, drerank = cur.fetchone()
    default = run({}, f"default (probes {dprobes or 10}, rerank {drerank or 100})")
    if "Index Scan" not in default["plan"]:
        bl.log(f"  WARNING: the plan does not use the index: {default['plan']}")
    res["default"] = default
    # the cheapest probes setting (ascending) that reaches the target recall,
    # raising vidx.rerank only if no probes value gets there
    reached = None
    for rerank in (None, 100, 200):
        if reached:
            break
        for p in [int(x) for x in a.probes_list.split(",")]:
            s = {"vidx.probes": p}
            if rerank:
                s["vidx.rerank"] = rerank
            if p == 10 and rerank is None:
                r = default
            else:
                r = run(s, f"probes {p}" + (f", rerank {rerank}" if rerank else ""))
            if r["recall@10"] >= a.target:
                reached = r
                break
    res["target_recall"] = a.target
    res["at_target"] = reached
    res["query_backend"] = bl.proc_status(qpid)

    # 5. buffers, memory, disk
    bl.log("== 5. shared buffers, memory, disk")
    res["buffers_default"] = bl.buffers_sample(qconn, table, Q, "l2", 10, {})
    if reached:
        res["buffers_at_target"] = bl.buffers_sample(qconn, table, Q, "l2", 10, reached["settings"])
    bl.log(f"  shared buffers per query (default): {res['buffers_default']}")
    if reached:
        bl.log(f"  shared buffers per query (recall {a.target}): {res['buffers_at_target']}")
    bl.log(f"  query backend memory: {res['query_backend']}")
    ddir = bl.data_directory(conn)
    res["disk"] = {
        "data_file_gib": gib(res["data_file_bytes"]),
        "table_gib": gib(res["table_bytes"]),
        "index_gib": gib(res["index_bytes"]),
        "sidecar_gib": gib(res["sidecar_bytes"]),
        "pg_wal_gib": gib(du(os.path.join(ddir, "pg_wal"))),
        "pgdata_gib": gib(du(ddir)),
    }
    bl.log(f"  disk: {res['disk']}")
    save()

    # 6. references
    if a.exact_queries:
        bl.log(f"== 6. exact sequential scan, {a.exact_queries} queries")
        econn = bl.connect(a.dsn)
        ex, _ = bl.run_queries(econn, table, Q[:a.exact_queries], "l2", 10, exact=True, base=base,
                               gt_dist=gt_d[:a.exact_queries], warmup=0)
        econn.close()
        res["exact_scan"] = ex
        bl.log(f"  exact scan: recall@10 {ex['recall@10']:.3f}  p50 {ex['p50_ms']:.0f} ms  "
               f"QPS {ex['qps']:.3f}  ({ex['plan']})")
        save()
    if a.faiss:
        import faiss
        bl.log("== 6b. FAISS IVFFlat (nlist sqrt(N), trained on 64 x nlist rows)")
        nlist = int(np.sqrt(a.rows))
        faiss.omp_set_num_threads(os.cpu_count())
        t0 = time.perf_counter()
        quant = faiss.IndexFlatL2(a.dim)
        ivf = faiss.IndexIVFFlat(quant, a.dim, nlist)
        rng = np.random.default_rng(1)
        samp = np.sort(rng.choice(a.rows, size=min(a.rows, 64 * nlist), replace=False))
        ivf.train(np.ascontiguousarray(base[samp]))
        for s in range(0, a.rows, 100_000):
            ivf.add(np.ascontiguousarray(base[s:s + 100_000]))
        fb = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)
        fres = []
        for npb in [int(x) for x in a.nprobe.split(",")]:
            ivf.nprobe = npb
            lat = []
            rows = []
            t0 = time.perf_counter()
            for q in Q:
                t1 = time.perf_counter()
                _, I = ivf.search(q[None, :], 10)
                lat.append(time.perf_counter() - t1)
                rows.append(I[0])
            wall = time.perf_counter() - t0
            rc = float(np.mean([bl.recall(rows[i], gt_d[i], base, Q[i], "l2", 10) for i in range(len(Q))]))
            fres.append({"nprobe": npb, "recall@10": rc, "qps": len(Q) / wall,
                         "p50_ms": float(np.percentile(lat, 50) * 1e3),
                         "p99_ms": float(np.percentile(lat, 99) * 1e3)})
            bl.log(f"  IVFFlat nprobe {npb}: recall@10 {rc:.3f}  QPS {len(Q) / wall:.1f}  "
                   f"p99 {fres[-1]['p99_ms']:.2f} ms")
        res["faiss_ivfflat"] = {"nlist": nlist, "build_s": round(fb, 1), "build_threads": os.cpu_count(),
                                "search_threads": 1, "sweep": fres}
        del ivf
        save()

    else:
        carry(["faiss_ivfflat"])
    if a.pgvector:
        pgvector_step(a, conn, table, base, Q, gt_d, res, save)
    else:
        carry(["pgvector"])
    res["total_s"] = round(time.perf_counter() - t_total, 1)
    save()
    write_md(out, res)
    bl.log(f"== done in {res['total_s']:.0f} s; results in {out}/result.json and result.md")
    return 0


def pgvector_step(a, conn, table, base, Q, gt_d, res, save):
    """Step 7: vidx, pgvector HNSW and IVFFlat on one vector column, same client path."""
    bl.log("== 7. pgvector: vidx (vidx_pgvector), HNSW and IVFFlat on a vector column")
    ptable = bl.ensure_pgvector_table(conn, table, a.dim)
    out = res.setdefault("pgvector", {})
    settings = {"max_parallel_maintenance_workers": max(0, os.cpu_count() - 1),
                "maintenance_work_mem": "'8GB'"}
    lists = max(10, a.rows // 1000)
    plans = {"vidx": ("vidx", {}, [{"vidx.probes": p} for p in a.probes_list.split(",")]),
             "hnsw": ("hnsw", {"m": 16, "ef_construction": 64},
                      [{"hnsw.ef_search": ef} for ef in (40, 64, 100, 160, 250, 400)]),
             "ivfflat": ("ivfflat", {"lists": lists},
                         [{"ivfflat.probes": p} for p in (1, 2, 4, 8, 16, 32, 64) if p <= lists])}
    for m in a.pgv_methods.split(","):
        using, opts, sweep = plans[m]
        index = f"{ptable}_idx"
        b = bl.create_index(a.dsn, ptable, index, "l2", opts, column="vec", using=using,
                            opclass="vector_l2_ops", settings=settings)
        info = bl.index_info(conn, index, vidx=(using == "vidx"))
        entry = {"build_s": round(b["build_s"], 1), "build_backend": b["build_backend"], "options": opts,
                 "index_bytes": info["index_bytes"], "sidecar_bytes": info["sidecar_bytes"], "sweep": []}
        out[m] = entry
        bl.log(f"  {m}: build {entry['build_s']} s, index {info['index_bytes'] / 2**20:.0f} MiB")
        qconn = bl.connect(a.dsn)
        if using == "vidx":
            with qconn.cursor() as cur:
                cur.execute("SELECT * FROM vidx_prewarm(%s)", (index,))
        for st in sweep:
            r, _ = bl.run_queries(qconn, ptable, Q, "l2", 10, st, base=base, gt_dist=gt_d,
                                  column="vec", qtype="vector")
            r.update(settings=st)
            entry["sweep"].append(r)
            bl.log(f"  {m} {st}: recall@10 {r['recall@10']:.3f}  p50 {r['p50_ms']:.2f} ms  "
                   f"p99 {r['p99_ms']:.2f} ms  QPS {r['qps']:.1f}  ({r['plan']})")
            save()
            if r["recall@10"] >= a.target:
                entry["at_target"] = r
                break
        qconn.close()
        with conn.cursor() as cur:
            cur.execute(f"DROP INDEX {index}")
        save()


def write_md(out, res):
    m = res["machine"]
    d = res["dataset"]
    L = [f"# vidx scale demo: {d['rows']:,} x {d['dim']} (clustered, unit-normalized, L2)", "",
         f"Machine: {m['cpu_model']}, {m['cpus']} CPUs, {m['ram_gib']} GiB RAM, {m['os']}; "
         f"{m.get('postgres', '').split(' on ')[0]}; commit {m['commit']}"
         f"{' (+ uncommitted changes in the tree)' if m.get('tree_dirty') else ''}; {m['date_utc']}.",
         f"Settings: {', '.join(f'{k}={v}' for k, v in m.get('pg_settings', {}).items())}.",
         "Command: `/usr/bin/python3 bench/scale.py " + " ".join(res.get("argv", [])) + "`"
         + (f"; figures of skipped steps ({', '.join(res['carried_over'])}) are from the run of "
            f"{sorted(set(res['carried_over'].values()))[0]}" if res.get("carried_over") else ""), "",
         "| step | figure |", "|---|---|",
         f"| generate (chunks of 50,000 rows) | {d.get('generate_s')} s (data file {res['disk']['data_file_gib']} GiB) |",
         f"| exact top-100 ground truth (FAISS + OpenBLAS, 2 threads) | {d.get('gt_l2_s', 'see run log')} s |",
         f"| COPY (binary) + VACUUM ANALYZE | {res.get('copy_s', 'n/a')} s (table {res['disk']['table_gib']} GiB) |",
         f"| CREATE INDEX (defaults) | {res.get('build_s', 'n/a')} s, build backend peak RSS "
         f"{res.get('build_backend', {}).get('VmHWM_mib', 'n/a')} MiB |",
         f"| index | {res['index_bytes'] / 2**20:.0f} MiB ({res['index_bytes'] / d['rows']:.0f} bytes/row), "
         f"{res['vidx_stats'].get('leaves')} leaves, {res['vidx_stats'].get('levels')} levels |",
         f"| sidecar | {res['disk']['sidecar_gib']} GiB |",
         f"| PGDATA total / pg_wal | {res['disk']['pgdata_gib']} GiB / {res['disk']['pg_wal_gib']} GiB |",
         f"| query backend peak RSS (VmHWM) | {res['query_backend'].get('VmHWM_mib')} MiB "
         f"(anon {res['query_backend'].get('RssAnon_mib')}, file {res['query_backend'].get('RssFile_mib')}, "
         f"shmem {res['query_backend'].get('RssShmem_mib')}) |",
         (f"| vidx_prewarm in the query session before the queries | {res['prewarm']['seconds']:.1f} s "
          f"({res['prewarm']['index_pages']:,} pages, {res['prewarm']['sidecar_bytes'] / 2**30:.2f} GiB) |"
          if res.get("prewarm") else "| query session | cold (no vidx_prewarm) |"), "",
         "| setting | recall@1 | recall@10 | p50 ms | p95 ms | p99 ms | QPS | shared hit/query | shared read/query |",
         "|---|---|---|---|---|---|---|---|---|"]
    tgt = res.get("at_target") or {}
    for r in res["sweep"]:
        b = ""
        if r is res["sweep"][0]:
            b = res["buffers_default"]
        elif tgt and r["label"] == tgt.get("label"):
            b = res.get("buffers_at_target", "")
        bh = f"{b['shared_hit_per_query']:.0f} | {b['shared_read_per_query']:.0f}" if b else " | "
        L.append(f"| {r['label']} | {r['recall@1']:.3f} | {r['recall@10']:.3f} | {r['p50_ms']:.2f} | "
                 f"{r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['qps']:.1f} | {bh} |")
    ex = res.get("exact_scan")
    if ex:
        L.append(f"| exact seq scan ({ex['queries']} queries) | {ex['recall@1']:.3f} | {ex['recall@10']:.3f} | "
                 f"{ex['p50_ms']:.0f} | {ex['p95_ms']:.0f} | {ex['p99_ms']:.0f} | {ex['qps']:.3f} | | |")
    L.append("")
    if tgt:
        L.append(f"First setting reaching recall@10 >= {res['target_recall']}: **{tgt['label']}** "
                 f"(recall@10 {tgt['recall@10']:.3f}, p99 {tgt['p99_ms']:.2f} ms, QPS {tgt['qps']:.1f}).")
    else:
        L.append(f"No setting in the sweep reached recall@10 >= {res['target_recall']}.")
    fi = res.get("faiss_ivfflat")
    if fi:
        L += ["", f"FAISS IVFFlat reference (nlist {fi['nlist']}, build {fi['build_s']} s with "
              f"{fi['build_threads']} threads, search 1 thread, one query at a time from Python):", "",
              "| nprobe | recall@10 | p50 ms | p99 ms | QPS |", "|---|---|---|---|---|"]
        for r in fi["sweep"]:
            L.append(f"| {r['nprobe']} | {r['recall@10']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['qps']:.1f} |")
    pv = res.get("pgvector")
    if pv:
        L += ["", "On a pgvector `vector` copy of the table (step 7, `--pgvector`), one index at a time, "
              "the same client path:", "",
              "| index | build s | index MiB | sidecar MiB | setting | recall@10 | p50 ms | p99 ms | QPS |",
              "|---|---|---|---|---|---|---|---|---|"]
        for m, e in pv.items():
            for r in e["sweep"]:
                L.append(f"| {m} | {e['build_s']} | {e['index_bytes'] / 2**20:.1f} | "
                         f"{(e.get('sidecar_bytes') or 0) / 2**20:.0f} | "
                         f"{', '.join(f'{k}={v}' for k, v in r['settings'].items())} | {r['recall@10']:.3f} | "
                         f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['qps']:.1f} |")
    with open(os.path.join(out, "result.md"), "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    sys.exit(main())
