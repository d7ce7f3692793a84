#!/usr/bin/python3
"""What spilling would buy a partition index on a data set (issue 13): recall
against postings read, simulated outside the server.

  /usr/bin/python3 bench/spill_sim.py --dataset hard_d1024_n100000_s42 --lists 316

Spilling stores a row in a second leaf as well as its nearest one, so that a
query near a leaf boundary finds it in either; a known trick of partition
indexes (ScaNN's SOAR picks the second leaf so that its residual is nearly
orthogonal to the first: loss ||x - c||^2 + lambda <r, x - c>^2 / ||r||^2,
r = x - c1; lambda 0 is the plain second-nearest centroid). It doubles the
postings of the rows it spills, so it pays only if it cuts the leaves a
query must read for a given recall by more than the postings it adds.

This measures it with no index at all: FAISS k-means (seeded, --lists
centroids from a sample of 64 x lists rows), each row in its nearest leaf,
plus a second leaf for all rows or the fraction with the smallest distance
ratio to it (--fractions); a query reads its --probes nearest leaves and finds
a neighbour if any of its leaves is among them: the recall of exact
re-scoring of every posting read, the ceiling vidx's bounds approach. For
each variant, the postings read (mean and p99 over queries) at recall@10
0.95/0.96/0.97, interpolated over the probes grid. Also (--spread-betas),
without spilling: leaves read in another order, by d(q, c)^2 minus beta
times the leaf's mean squared residual (wide leaves earlier).

Writes results.md and results.json into --out (default
bench/results/spill_sim_<dataset>/).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--lists", type=int, default=0, help="leaves (default sqrt(rows), as vidx)")
    ap.add_argument("--lambdas", default="0,1", help="SOAR lambdas (0: second-nearest centroid)")
    ap.add_argument("--fractions", default="1,0.5,0.25", help="fractions of rows spilled")
    ap.add_argument("--spread-betas", default="0.5,1",
                    help="also: no spill, leaves ordered by d^2 - beta x their mean squared residual")
    ap.add_argument("--probes", default="2,4,6,8,10,12,14,16,18,20,22,24,26,28,30,32,36,40,48,64,96")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out")
    a = ap.parse_args()
    import faiss

    base, Q, meta = bl.load_dataset(a.dataset, mmap=True)
    gt_ids, _ = bl.ensure_gt(a.dataset, "l2")
    gt = gt_ids[:, :10]
    Q = np.ascontiguousarray(Q, dtype=np.float32)
    n, d = base.shape
    nlist = a.lists or int(round(np.sqrt(n)))
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                f"spill_sim_{a.dataset}")
    os.makedirs(out, exist_ok=True)
    lambdas = [float(x) for x in a.lambdas.split(",")]
    fractions = [float(x) for x in a.fractions.split(",")]
    probes = [int(x) for x in a.probes.split(",") if int(x) <= nlist]

    rng = np.random.default_rng(a.seed)
    sample = np.sort(rng.choice(n, min(n, 64 * nlist), replace=False))
    t0 = time.perf_counter()
    km = faiss.Kmeans(d, nlist, niter=20, seed=a.seed)
    km.train(np.ascontiguousarray(base[sample], dtype=np.float32))
    C = km.centroids
    bl.log(f"k-means: {nlist} centroids in {time.perf_counter() - t0:.0f} s")

    cn = (C * C).sum(1)
    primary = np.empty(n, np.int64)
    primary_r2 = np.empty(n, np.float64)
    second = {lam: np.empty(n, np.int64) for lam in lambdas}
    ratio = {lam: np.empty(n, np.float32) for lam in lambdas}
    for s in range(0, n, 50_000):
        X = np.ascontiguousarray(base[s:s + 50_000], dtype=np.float32)
        rows = np.arange(len(X))
        dist = cn[None, :] - 2 * X @ C.T + (X * X).sum(1)[:, None]
        p = dist.argmin(1)
        primary[s:s + len(X)] = p
        primary_r2[s:s + len(X)] = dist[rows, p]
        R = X - C[p]
        rn = np.maximum((R * R).sum(1), 1e-20)
        proj = (R * X).sum(1)[:, None] - R @ C.T  # <r, x - c>
        d1 = np.maximum(dist[rows, p], 1e-20)
        for lam in lambdas:
            loss = dist + lam * proj * proj / rn[:, None]
            loss[rows, p] = np.inf
            q = loss.argmin(1)
            second[lam][s:s + len(X)] = q
            ratio[lam][s:s + len(X)] = dist[rows, q] / d1
    bl.log(f"assignments in {time.perf_counter() - t0:.0f} s")

    qdist = cn[None, :] - 2 * Q @ C.T + (Q * Q).sum(1)[:, None]
    qi = np.arange(len(Q))[:, None]

    def curve(leaf_sets, sizes, key=qdist):
        order = np.argsort(key, 1)
        rank = np.empty_like(order)
        rank[qi, order] = np.arange(nlist)[None, :]
        pts = []
        for pr in probes:
            found = np.zeros(gt.shape, bool)
            for leaves in leaf_sets:
                found |= rank[qi, leaves[gt]] < pr
            read = sizes[order[:, :pr]].sum(1)
            pts.append({"probes": pr, "recall@10": float(found.mean()),
                        "postings_mean": float(read.mean()), "postings_p99": float(np.percentile(read, 99))})
        return pts

    sizes = np.bincount(primary, minlength=nlist)
    variants = [{"variant": "no spill", "extra_postings": 0.0, "curve": curve([primary], sizes)}]
    for lam in lambdas:
        for f in fractions:
            spilled = ratio[lam] <= (np.quantile(ratio[lam], f) if f < 1 else np.inf)
            other = np.where(spilled, second[lam], primary)
            variants.append({"variant": f"spill lambda={lam:g} fraction={f:g}",
                             "extra_postings": float(spilled.mean()),
                             "curve": curve([primary, other],
                                            sizes + np.bincount(second[lam][spilled], minlength=nlist))})

    # No spill, leaves ordered by d(q, c)^2 - beta * (the leaf's mean squared residual):
    # do wide leaves deserve to be read earlier than their centroid's distance says?
    spread = np.bincount(primary, weights=primary_r2, minlength=nlist) / np.maximum(sizes, 1)
    for beta in [float(x) for x in a.spread_betas.split(",") if x]:
        variants.append({"variant": f"no spill, order by d^2 - {beta:g} x leaf spread", "extra_postings": 0.0,
                         "curve": curve([primary], sizes, qdist - beta * spread[None, :])})

    targets = (0.95, 0.96, 0.97)
    for v in variants:
        r = np.array([p["recall@10"] for p in v["curve"]])
        for key in ("postings_mean", "postings_p99"):
            c = np.array([p[key] for p in v["curve"]])
            v[f"{key}_at"] = {str(t): (float(np.interp(t, r, c)) if r.max() >= t else None) for t in targets}
    ref = variants[0]["postings_mean_at"]
    mi = bl.machine_info(None)
    lines = [f"# Spilling, simulated: {a.dataset} ({n:,} x {d}), {nlist} leaves", "",
             f"Command: `/usr/bin/python3 bench/spill_sim.py {' '.join(sys.argv[1:])}`; "
             f"commit {mi['commit']}, FAISS {mi.get('faiss', '?')}, {mi['date_utc']}.", "",
             "Recall@10 of exact re-scoring of every posting read (the bound vidx's scan approaches), "
             f"{len(Q)} queries; postings read per query at equal recall, interpolated over probes "
             f"{','.join(map(str, probes))}; ratio to no spill (above 1: more postings read).", "",
             "| variant | rows spilled | postings at 0.95 (p99) | at 0.96 (p99) | at 0.97 (p99) | ratio at 0.95 / 0.96 / 0.97 |",
             "|---|---|---|---|---|---|"]
    for v in variants:
        cells = []
        for t in targets:
            m, p99 = v["postings_mean_at"][str(t)], v["postings_p99_at"][str(t)]
            cells.append("-" if m is None else f"{m:,.0f} ({p99:,.0f})")
        ratios = " / ".join("-" if v["postings_mean_at"][str(t)] is None or ref[str(t)] is None
                            else f"{v['postings_mean_at'][str(t)] / ref[str(t)]:.2f}" for t in targets)
        lines.append(f"| {v['variant']} | {v['extra_postings']:.0%} | {' | '.join(cells)} | {ratios} |")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"argv": sys.argv[1:], "machine": mi, "dataset": meta, "lists": nlist, "variants": variants}, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
