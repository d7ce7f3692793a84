#!/usr/bin/python3
"""Two builds of vidx.so against each other, time per query inside the server.

  /usr/bin/python3 bench/ab_server.py --a /tmp/vidx_old.so --b ./vidx.so \\
      --dataset hard_d1024_n1000000_s42 --probes 26 --pairs 6

On a shared machine a before/after comparison made minutes apart measures
the neighbours as much as the change. This runs them in interleaved pairs
(A then B, then B then A, ...): before each run it installs that build as
$(pg_config --pkglibdir)/vidx.so (copied beside it and renamed over it, so a
backend that has the old file mapped keeps its copy) and opens a new
session, which loads it; the run is bench/sweep.py's --server-side loop over
the first --queries held-out queries of <dataset>_q (medians of 3 rounds).
Needs write access to the pkglibdir (root) and an index on <dataset> (the
tables as bench/sweep.py loads them). Reports each pair, the medians and
their ratio; the build installed last is --b, whatever the order.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402


def install(so, libdir):
    tmp = os.path.join(libdir, "vidx.so.ab_tmp")
    shutil.copy(so, tmp)
    os.rename(tmp, os.path.join(libdir, "vidx.so"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="vidx.so of build A (the reference)")
    ap.add_argument("--b", required=True, help="vidx.so of build B")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--metric", default="l2")
    ap.add_argument("--probes", type=int, required=True)
    ap.add_argument("--rerank", type=int, default=0)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--dsn", default="")
    a = ap.parse_args()
    libdir = subprocess.check_output(["pg_config", "--pkglibdir"], text=True).strip()
    builds = {"A": os.path.abspath(a.a), "B": os.path.abspath(a.b)}
    ms = {"A": [], "B": []}
    settings = {"vidx.probes": a.probes, "vidx.rerank": a.rerank}
    for p in range(a.pairs):
        for name in ("A", "B") if p % 2 == 0 else ("B", "A"):
            install(builds[name], libdir)
            conn = bl.connect(a.dsn)
            r = bl.server_side_ms(conn, a.dataset, a.metric, settings, n=a.queries)
            conn.close()
            ms[name].append(r["server_ms"])
        bl.log(f"pair {p + 1}: A {ms['A'][-1]:.3f} ms/q, B {ms['B'][-1]:.3f} ms/q")
    install(builds["B"], libdir)
    ma, mb = statistics.median(ms["A"]), statistics.median(ms["B"])
    faster = sum(1 for x, y in zip(ms["A"], ms["B"]) if y < x)
    print(f"{a.dataset}, probes {a.probes}, {a.queries} queries in the server loop, {a.pairs} pairs: "
          f"A median {ma:.3f} ms/q, B median {mb:.3f} ms/q, A/B {ma / mb:.3f}; B faster in {faster} of {a.pairs} pairs")


if __name__ == "__main__":
    main()
