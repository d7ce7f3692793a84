#!/usr/bin/python3
"""recall@10 and backend CPU/query at several probes: grown-from-empty index vs REINDEX."""
import os, sys, time, argparse
sys.path.insert(0, "/work/wt-growth/bench")
import numpy as np
import benchlib as bl
import growth as g

ap = argparse.ArgumentParser()
ap.add_argument("--name", default="clustered_d1024_n100000_s42")
ap.add_argument("--queries", type=int, default=500)
ap.add_argument("--probes", default="5,10,15,20")
ap.add_argument("--label", default="")
a = ap.parse_args()
base, Q, meta = bl.load_dataset(a.name)
gt_ids, gt_d = [np.load(p) for p in bl.gt_paths(a.name, "l2")] if False else (None, None)
ip, dp = bl.gt_paths(a.name, "l2")
gt_d = np.load(dp)
Q = np.asarray(Q[:a.queries]); gt_d = gt_d[:a.queries]
conn = bl.connect("")
g.sql(conn, "CREATE EXTENSION IF NOT EXISTS vidx")
g.create_table(conn)
g.sql(conn, f"CREATE INDEX items_vidx ON {g.TABLE} USING vidx (embedding vidx_l2_ops)")
t0 = time.time()
g.copy_chunks(conn, base, 1, 0, 5000, "empty")
tins = time.time() - t0
g.sql(conn, f"VACUUM (ANALYZE) {g.TABLE}")

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def curve(label):
    st = g.sql(conn, "SELECT * FROM vidx_stats('items_vidx')")
    c2 = bl.connect("")
    g.sql(c2, "SET enable_seqscan = off")
    pid = bl.backend_pid(c2)
    out = []
    for p in [int(x) for x in a.probes.split(",")]:
        bl.run_queries(c2, g.TABLE, Q[:50], "l2", 10, settings={"vidx.probes": p, "enable_seqscan": "off"})
        c0 = cpu(pid)
        r, _ = bl.run_queries(c2, g.TABLE, Q, "l2", 10, settings={"vidx.probes": p, "enable_seqscan": "off"}, base=base, gt_dist=gt_d)
        c1 = cpu(pid)
        out.append((p, r["recall@10"], (c1 - c0) * 1e3 / len(Q)))
    c2.close()
    print(f"{a.label} {label}: stats {st}")
    for p, rc, c in out:
        print(f"{a.label} {label} probes {p:3d}: recall@10 {rc:.4f}  cpu ms/q {c:.3f}")
    sys.stdout.flush()

print(f"{a.label} insert {len(base)/tins:.0f} rows/s ({tins:.0f} s)")
curve("history")
g.sql(conn, f"REINDEX INDEX items_vidx")
curve("reindex")
