#!/usr/bin/python3
"""Where a vidx setting's p99 comes from (issue 13): per-query latency against
the scan's own counters.

  /usr/bin/python3 bench/tail.py --dataset hard_d1024_n1000000_s42 --probes 26

The table <dataset> (and <dataset>_q) must exist (bench/sweep.py loads them);
an index <dataset>_tail_vidx is built with the defaults unless it exists.
Each query runs `--passes` times, timed on the client as bench/sweep.py times
it (prepared statement, binary real[]); then once more with
client_min_messages = debug2 to read the scan's counters from its end-of-scan
message (rounds, candidates estimated, candidates re-scored). A query that is
slow in every pass is slow for a reason of its own; one slow in a single pass
met the machine. The report compares the slowest 1% and 5% of queries (by
their fastest pass) with the median query, and gives the rank correlation of
latency with each counter.
"""
import argparse
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

SCAN_MESSAGE = re.compile(r"probes (\d+).*?, (\d+) rounds, (\d+) candidates, (\d+) re-scored, "
                          r"(\d+) returned")


def spearman(x, y):
    rx = np.argsort(np.argsort(x)).astype(float)
    ry = np.argsort(np.argsort(y)).astype(float)
    return float(np.corrcoef(rx, ry)[0, 1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--metric", default="l2")
    ap.add_argument("--probes", type=int, default=0, help="vidx.probes (0: the defaults)")
    ap.add_argument("--rerank", type=int, default=0)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="another setting for the queries (repeatable), e.g. --set vidx.scan_threads=2")
    ap.add_argument("--dsn", default="")
    ap.add_argument("--out", default=None, help="output directory (default bench/results/tail_<dataset>_p<probes>)")
    a = ap.parse_args()
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                f"tail_{a.dataset}_p{a.probes}")
    os.makedirs(out, exist_ok=True)

    base, Q, meta = bl.load_dataset(a.dataset, mmap=True)
    _, gt_d = bl.ensure_gt(a.dataset, a.metric)
    Q, gt_d = Q[:a.queries], gt_d[:a.queries]
    conn = bl.connect(a.dsn)
    table, index = a.dataset, f"{a.dataset}_tail_vidx"
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (index,))
        if not cur.fetchone()[0]:
            bl.log(f"building {index}")
            t0 = time.perf_counter()
            cur.execute(f"CREATE INDEX {index} ON {table} USING vidx (embedding {bl.OPCLASS[a.metric]})")
            bl.log(f"  built in {time.perf_counter() - t0:.1f} s")
    settings = {"vidx.rerank": a.rerank, **bl.parse_settings(a.set)}
    if a.probes:
        settings["vidx.probes"] = a.probes
    res = {"benchmark": "per-query latency against scan counters (bench/tail.py)", "argv": sys.argv[1:],
           "machine": bl.machine_info(conn), "dataset": meta, "settings": settings}

    lat = []
    for p in range(a.passes):
        r, rows = bl.run_queries(conn, table, Q, a.metric, a.k, settings, base=base, gt_dist=gt_d,
                                  latencies=True)
        lat.append(np.asarray(r["latencies_ms"]))
        bl.log(f"pass {p + 1}: recall@10 {r['recall@10']:.3f} p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms")
        res.setdefault("passes", []).append({k: r[k] for k in ("recall@10", "p50_ms", "p99_ms", "qps")})
    lat = np.vstack(lat)
    fastest = lat.min(axis=0)

    counters = []
    messages = []
    conn.add_notice_handler(lambda d: messages.append(d.message_primary))
    op = bl.OPERATOR[a.metric]
    with conn.cursor() as cur:
        for name, value in settings.items():
            cur.execute(f"SET {name} = {value}")
        cur.execute("SET client_min_messages = debug2")
        for q in Q:
            messages.clear()
            cur.execute(f"SELECT id FROM {table} ORDER BY embedding {op} %b::real[] LIMIT {a.k}",
                        (bl.vec_param(q),))
            cur.fetchall()
            m = [SCAN_MESSAGE.search(x) for x in messages]
            m = [x for x in m if x]
            if not m:
                sys.exit(f"no scan message among {messages}")
            counters.append([int(v) for v in m[-1].groups()])
        cur.execute("RESET ALL")
    c = np.asarray(counters)
    names = ["probes", "rounds", "candidates", "rescored", "returned"]

    order = np.argsort(fastest)
    n = len(order)
    groups = {"median 10% (45th-55th pct)": order[int(0.45 * n):int(0.55 * n)],
              "slowest 5%": order[int(0.95 * n):], "slowest 1%": order[int(0.99 * n):]}
    rows = []
    for g, idx in groups.items():
        rows.append({"group": g, "queries": int(len(idx)), "fastest_pass_ms": float(fastest[idx].mean()),
                     **{f"mean_{nm}": float(c[idx, j].mean()) for j, nm in enumerate(names)}})
    # How many of a pass's slowest 1% are also in another pass's slowest 1%.
    top = [set(np.argsort(l)[int(0.99 * n):]) for l in lat]
    overlap = [len(top[i] & top[j]) / max(1, len(top[i])) for i in range(len(top)) for j in range(i + 1, len(top))]
    res.update({
        "groups": rows,
        "spearman_fastest_vs": {nm: spearman(fastest, c[:, j]) for j, nm in enumerate(names)
                                if np.ptp(c[:, j]) > 0},
        "p50_fastest_ms": float(np.percentile(fastest, 50)),
        "p99_fastest_ms": float(np.percentile(fastest, 99)),
        "p99_per_pass_ms": [float(np.percentile(l, 99)) for l in lat],
        "slowest1_overlap_between_passes": float(np.mean(overlap)) if overlap else None,
        "per_query": {"latency_ms": lat.round(4).tolist(), "counters": c.tolist(), "counter_names": names},
    })
    bl.write_json(os.path.join(out, "results.json"), res)

    md = [f"# Where the tail comes from: {a.dataset}, {', '.join(f'{k}={v}' for k, v in settings.items())}", "",
          bl.machine_line(res["machine"]),
          f"Command: `/usr/bin/python3 bench/tail.py {' '.join(sys.argv[1:])}`", "",
          f"{n} queries, {a.passes} timed passes each (client side, prepared statement); per pass p99: "
          + ", ".join(f"{x:.2f}" for x in res["p99_per_pass_ms"])
          + f" ms; per query fastest pass: p50 {res['p50_fastest_ms']:.2f}, p99 {res['p99_fastest_ms']:.2f} ms. "
          f"Of one pass's slowest 1%, {100 * (res['slowest1_overlap_between_passes'] or 0):.0f}% are among "
          "another pass's slowest 1% (100%: the tail is the queries'; 0%: it is the machine's).", "",
          "| queries | n | ms (fastest pass) | rounds | candidates estimated | re-scored |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['group']} | {r['queries']} | {r['fastest_pass_ms']:.2f} | {r['mean_rounds']:.1f} | "
                  f"{r['mean_candidates']:.0f} | {r['mean_rescored']:.0f} |")
    md += ["", "Rank correlation (Spearman) of a query's fastest time with: "
           + ", ".join(f"{k} {v:.2f}" for k, v in res["spearman_fastest_vs"].items()) + "."]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
