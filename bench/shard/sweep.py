"""Recall/latency sweep of vidx sharded over postgres_fdw: 1, 2 and 4 shards.

  /usr/bin/python3 bench/shard/sweep.py [--rows 20000 --dims 64 --queries 200]

As root. For each shard count it makes a coordinator and N shard clusters on
127.0.0.1 (ports --port .. --port+N, default 5470; test/shard/shardlib.py),
loads the same seeded data through the coordinator (ids split by range), builds
one vidx index per shard and one on a local copy (the single-server baseline),
and times one client sending one query at a time (psycopg, query vector as a
parameter) for:

  single        items_local on the coordinator (no postgres_fdw)
  merge         SELECT id FROM items ORDER BY v <-> $1 LIMIT 10 (Merge Append
                of Foreign Scans, serial; ORDER BY shipped, no LIMIT, each
                shard returns fetch_size rows)
  async         per-shard ORDER BY ... LIMIT 10 under a MATERIALIZED CTE:
                Append of Async Foreign Scans (async_capable 'true')
  async-off     the same query with async_capable 'false' (serial Append)

at vidx.probes 1, 4, 10, 20 (set per shard with the foreign server option
`options`), plus fetch_size 100 vs 10 for merge and a cold-connection case.
Reports recall@10 against exact (numpy), p50/p99 latency and QPS; writes
bench/shard/results/sweep-<date>.md and .json with machine and git commit.
Every cluster is dropped at exit.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "test", "shard"))
from shardlib import drop_all, install_cleanup, log, make_data, make_layout  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, default=20000)
ap.add_argument("--dims", type=int, default=64)
ap.add_argument("--queries", type=int, default=200)
ap.add_argument("--seed", type=int, default=7)
ap.add_argument("--shards", default="1,2,4")
ap.add_argument("--probes", default="1,4,10,20")
ap.add_argument("--port", type=int, default=5470)
ap.add_argument("--out", default=os.path.join(HERE, "results"))
args = ap.parse_args()
K = 10


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""


def machine():
    cpu = sh("lscpu | sed -n 's/^Model name: *//p'")
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "postgres": sh("pg_config --version"),
        "commit": sh("git -C %s rev-parse --short HEAD" % REPO),
        "dirty": bool(sh("git -C %s status --porcelain --untracked-files=no" % REPO)),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def q_merge(n):
    return "SELECT id FROM items ORDER BY v <-> %(q)s LIMIT 10"


def q_async(n):
    parts = ["(SELECT id, v <-> %%(q)s AS d FROM items_s%d ORDER BY v <-> %%(q)s LIMIT %d)" % (i, K)
             for i in range(1, n + 1)]
    return "WITH u AS MATERIALIZED (%s) SELECT id FROM u ORDER BY d LIMIT %d" % (" UNION ALL ".join(parts), K)


def q_single(n):
    return "SELECT id FROM items_local ORDER BY v <-> %(q)s LIMIT 10"


def run(conn, sql, queries, gt, warm=5):
    for q in queries[:warm]:
        conn.execute(sql, {"q": q}).fetchall()
    lat, hit = [], 0
    t_all = time.perf_counter()
    for q, g in zip(queries, gt):
        t0 = time.perf_counter()
        ids = [r[0] for r in conn.execute(sql, {"q": q}).fetchall()]
        lat.append(time.perf_counter() - t0)
        hit += len(set(ids) & set(g))
    wall = time.perf_counter() - t_all
    lat = np.array(lat) * 1000
    return {"recall": hit / (len(queries) * K), "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)), "qps": len(queries) / wall}


def set_servers(conn, n, **opts):
    for i in range(1, n + 1):
        for k, v in opts.items():
            conn.execute("ALTER SERVER shard_%d OPTIONS (SET %s '%s')" % (i, k, v))


def main():
    install_cleanup()
    info = machine()
    x, cat, qs = make_data(args.rows, args.dims, args.queries, args.seed)
    queries = [q.tolist() for q in qs]
    d = ((qs[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    gt = [list(np.argsort(r, kind="stable")[:K]) for r in d]  # ids == row numbers
    probes = [int(p) for p in args.probes.split(",")]
    results = []
    for n in [int(s) for s in args.shards.split(",")]:
        t0 = time.time()
        coord, shards = make_layout("vidx_shardbench", args.port, n, x, cat, metrics=("l2",),
                                    fetch_size=K, remote_options="-c vidx.probes=10")
        log("%d shard(s): layout in %.1f s" % (n, time.time() - t0))
        c = coord.connect()
        for p in probes:
            c.execute("SET vidx.probes = %d" % p)
            set_servers(c, n, options="-c vidx.probes=%d" % p, async_capable="true", fetch_size=str(K))
            for name, fn, opts in (("single", q_single, {}), ("merge", q_merge, {}), ("async", q_async, {}),
                                   ("async-off", q_async, {"async_capable": "false"})):
                if name == "single" and n != 1 and p != 10:
                    continue
                if opts:
                    set_servers(c, n, **opts)
                r = run(c, fn(n), queries, gt)
                r.update({"shards": n, "probes": p, "mode": name, "fetch_size": K})
                results.append(r)
                log("%d shards probes %2d %-9s recall %.3f p50 %.2f p99 %.2f qps %.0f"
                    % (n, p, name, r["recall"], r["p50"], r["p99"], r["qps"]))
                if opts:
                    set_servers(c, n, async_capable="true")
        # fetch_size: the Merge Append form fetches fetch_size rows per shard
        set_servers(c, n, options="-c vidx.probes=10")
        for fs in (100,):
            set_servers(c, n, fetch_size=str(fs))
            r = run(c, q_merge(n), queries, gt)
            r.update({"shards": n, "probes": 10, "mode": "merge", "fetch_size": fs})
            results.append(r)
            log("%d shards probes 10 merge fetch_size %d: p50 %.2f qps %.0f" % (n, fs, r["p50"], r["qps"]))
        set_servers(c, n, fetch_size=str(K))
        # cold connections: postgres_fdw_disconnect_all() before every query
        lat = []
        for q in queries[:30]:
            c.execute("SELECT postgres_fdw_disconnect_all()")
            t1 = time.perf_counter()
            c.execute(q_merge(n), {"q": q}).fetchall()
            lat.append((time.perf_counter() - t1) * 1000)
        results.append({"shards": n, "probes": 10, "mode": "merge-cold", "fetch_size": K,
                        "p50": float(np.median(lat)), "p99": float(np.percentile(lat, 99)), "recall": None,
                        "qps": None})
        log("%d shards cold connection merge p50 %.2f" % (n, np.median(lat)))
        c.close()
        drop_all()
    write(info, results)


def write(info, results):
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "sweep-%s" % datetime.date.today().isoformat())
    with open(stem + ".json", "w") as f:
        json.dump({"machine": info, "args": vars(args), "results": results}, f, indent=1)
    lines = ["# vidx sharded over postgres_fdw: recall/latency sweep", "",
             "Command: `/usr/bin/python3 bench/shard/sweep.py --rows %d --dims %d --queries %d --shards %s "
             "--probes %s`" % (args.rows, args.dims, args.queries, args.shards, args.probes), "",
             "Machine: %s, %s cores, %s GiB, %s; commit %s%s; %s. All clusters on this one machine "
             "(loopback), one client, one query at a time, k = 10, L2, recall@10 vs exact."
             % (info["cpu"], info["cores"], info["mem_gib"], info["postgres"], info["commit"],
                " (+ uncommitted changes)" if info["dirty"] else "", info["date"]), "",
             "| shards | vidx.probes | mode | fetch_size | recall@10 | p50 ms | p99 ms | QPS |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append("| %d | %d | %s | %d | %s | %.2f | %.2f | %s |" % (
            r["shards"], r["probes"], r["mode"], r["fetch_size"],
            "-" if r["recall"] is None else "%.3f" % r["recall"], r["p50"], r["p99"],
            "-" if r["qps"] is None else "%.0f" % r["qps"]))
    lines += ["", "Modes: single = items_local on the coordinator (one server, no postgres_fdw); "
              "merge = partitioned table, Merge Append of Foreign Scans (serial); async = per-shard "
              "ORDER BY ... LIMIT under a MATERIALIZED CTE, Append of Async Foreign Scans; async-off = "
              "the same with async_capable 'false'; merge-cold = merge after postgres_fdw_disconnect_all() "
              "(new remote sessions: connect + load vidx + read the tree)."]
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    log("wrote %s.md and .json" % stem)


try:
    main()
finally:
    drop_all()
