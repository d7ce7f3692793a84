"""vidx_calibrate(index, 500) on the 1M x 1024 set, then vidx.target_recall 0.9/0.95/0.99 on 1,000 held-out queries (issue 14)."""
import os
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import benchlib as bl
import numpy as np
base, Q, meta = bl.load_dataset("clustered_d1024_n1000000_s42", mmap=True)
_, gt_d = bl.ensure_gt("clustered_d1024_n1000000_s42", "l2")
Q, gt_d = Q[:1000], gt_d[:1000]
conn = bl.connect("")
cur = conn.cursor()
cur.execute("CREATE EXTENSION IF NOT EXISTS vidx")
t0 = time.time()
cur.execute("SET maintenance_work_mem = '2GB'")
cur.execute("CREATE INDEX IF NOT EXISTS c1m_vidx ON clustered_d1024_n1000000_s42 USING vidx (embedding vidx_l2_ops)")
print("build", round(time.time() - t0, 1), flush=True)
cur.execute("SELECT vidx_stats('c1m_vidx')->'calibration'->>'queries', vidx_stats('c1m_vidx')->'calibration'->>'ms'")
print("build calibration", cur.fetchone(), flush=True)
t0 = time.time()
cur.execute("SELECT vidx_calibrate('c1m_vidx', 500)")
print("vidx_calibrate(500)", round(time.time() - t0, 1), "s", flush=True)
cur.execute("SELECT vidx_stats('c1m_vidx')->'calibration'")
c = cur.fetchone()[0]
print("curve", list(zip(c["probes"], c["recall"]))[:12], flush=True)
for t in (0.9, 0.95, 0.99):
    r, _ = bl.run_queries(conn, "clustered_d1024_n1000000_s42", Q, "l2", 10, {"vidx.target_recall": t}, base=base, gt_dist=gt_d)
    cur.execute(f"SET vidx.target_recall = {t}")
    cur.execute("SELECT vidx_stats('c1m_vidx')->'calibration'->>'target_probes'")
    print("target", t, "probes", cur.fetchone()[0], "recall@10", round(r["recall@10"], 4), "qps", round(r["qps"], 1), flush=True)
    cur.execute("RESET ALL")
