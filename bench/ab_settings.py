#!/usr/bin/python3
"""Two sets of settings against each other on one index, query by query (issue 13).

  /usr/bin/python3 bench/ab_settings.py --dataset hard_d1024_n1000000_s42 \\
      --a vidx.probes=26,vidx.scan_threads=1 --b vidx.probes=26,vidx.scan_threads=2

On a shared machine, runs minutes apart measure the neighbours as much as the
settings. Here one session runs 2 x --pairs passes over the queries: in pass
p, query i runs with A if i + p is even, else B (a SET before each query), so
every query meets both settings, the two alternate all along, and no query
runs twice in a row (a query right after itself finds its postings and records
in the CPU cache: up to 1.7x faster). One untimed pass warms first. Reports,
per setting, p50/p90/p99 over each query's fastest run and over each pass,
and the ratio A/B. Client-side times (prepared statement, binary real[]).

Writes results.md and results.json into --out (default: printed only).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--metric", default="l2")
    ap.add_argument("--a", required=True, help="settings A: NAME=VALUE,NAME=VALUE")
    ap.add_argument("--b", required=True, help="settings B")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=2, help="runs of each query with each setting")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--dsn", default="")
    ap.add_argument("--out")
    a = ap.parse_args()

    _, Q, meta = bl.load_dataset(a.dataset, mmap=True)
    Q = Q[:a.queries]
    sets = [bl.parse_settings(x.split(",")) for x in (a.a, a.b)]
    conn = bl.connect(a.dsn)
    params = [bl.vec_param(q) for q in Q]
    sql = f"SELECT id FROM {a.dataset} ORDER BY embedding {bl.OPERATOR[a.metric]} %b::real[] LIMIT {a.k}"
    lat = np.full((2, a.pairs, len(Q)), np.nan)
    res = {"benchmark": "two settings, query by query (bench/ab_settings.py)", "argv": sys.argv[1:],
           "machine": bl.machine_info(conn), "dataset": meta, "settings": sets}
    with conn.cursor() as cur:
        def run(i, s):
            for name, value in sets[s].items():
                cur.execute(f"SET {name} = {value}")
            t = time.perf_counter()
            cur.execute(sql, (params[i],), prepare=True)
            cur.fetchall()
            return (time.perf_counter() - t) * 1e3

        for i in range(len(Q)):
            run(i, i % 2)
        for p in range(2 * a.pairs):
            for i in range(len(Q)):
                s = (i + p) % 2
                lat[s, p // 2, i] = run(i, s)
            bl.log(f"pass {p + 1} of {2 * a.pairs}")

    def stats(x):
        return {"p50_ms": float(np.median(x)), "p90_ms": float(np.percentile(x, 90)),
                "p99_ms": float(np.percentile(x, 99))}

    fastest = lat.min(axis=1)
    res["fastest"] = [stats(fastest[s]) for s in (0, 1)]
    res["per_pass"] = [[stats(lat[s, p]) for p in range(a.pairs)] for s in (0, 1)]
    res["ratio_a_over_b"] = {k: res["fastest"][0][k] / res["fastest"][1][k] for k in ("p50_ms", "p90_ms", "p99_ms")}
    res["per_query_median_ratio"] = float(np.median(fastest[0] / fastest[1]))
    res["latency_ms"] = lat.round(4).tolist()
    label = [a.a, a.b]
    md = [f"# {a.dataset}: {a.a} (A) against {a.b} (B)", "", bl.machine_line(res["machine"]),
          f"Command: `/usr/bin/python3 bench/ab_settings.py {' '.join(sys.argv[1:])}`", "",
          f"{len(Q)} queries, each run {a.pairs} times with each setting, alternating (see the script); "
          "client side, prepared statement.", "",
          "| | settings | fastest run: p50 / p90 / p99 ms | each pass: p50 ms | each pass: p99 ms |",
          "|---|---|---|---|---|"]
    for s in (0, 1):
        f = res["fastest"][s]
        md.append(f"| {'AB'[s]} | `{label[s]}` | {f['p50_ms']:.2f} / {f['p90_ms']:.2f} / {f['p99_ms']:.2f} | "
                  + ", ".join(f"{x['p50_ms']:.2f}" for x in res["per_pass"][s]) + " | "
                  + ", ".join(f"{x['p99_ms']:.2f}" for x in res["per_pass"][s]) + " |")
    r = res["ratio_a_over_b"]
    md += ["", f"A/B over the fastest runs: p50 {r['p50_ms']:.3f}, p90 {r['p90_ms']:.3f}, p99 {r['p99_ms']:.3f}; "
           f"median of the per-query ratios {res['per_query_median_ratio']:.3f} (above 1: B faster)."]
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        bl.write_json(os.path.join(a.out, "results.json"), res)
        with open(os.path.join(a.out, "results.md"), "w") as f:
            f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
