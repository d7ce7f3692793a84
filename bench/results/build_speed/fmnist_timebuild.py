#!/usr/bin/python3
"""fmnist_timebuild.py RUNS [SET-statement ...]: CREATE INDEX ... USING vidx on the fmnist table
(bench/sweep.py --dataset fmnist loads it), RUNS times, vidx.build_threads = 2, on the server of the
libpq environment (PGHOST, PGPORT, ...); run on the server's machine (it reads /proc/PID/stat).
Per run: the statement's wall time (as psql's \\timing), the build backend's CPU time (utime +
stime of all its threads), the calibration's query count, the build's DEBUG1 phase timings."""
import os, statistics, sys, time
import psycopg
runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
extra = sys.argv[2:]
tck = os.sysconf("SC_CLK_TCK")
walls, cpus = [], []
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000.0 / tck
for r in range(runs):
    conn = psycopg.connect("", autocommit=True)
    notes = []
    conn.add_notice_handler(lambda d: notes.append(d.message_primary))
    cur = conn.cursor()
    cur.execute("SET vidx.build_threads = 2")
    for s in extra:
        cur.execute(s)
    cur.execute("DROP INDEX IF EXISTS fmnist_tb")
    pid = conn.info.backend_pid
    cur.execute("SET client_min_messages = debug1")
    c0 = cpu(pid); t0 = time.perf_counter()
    cur.execute("CREATE INDEX fmnist_tb ON fmnist USING vidx (embedding vidx_l2_ops)")
    t1 = time.perf_counter(); c1 = cpu(pid)
    cur.execute("RESET client_min_messages")
    cur.execute("SELECT (vidx_stats('fmnist_tb')->'calibration'->>'queries')")
    cq = cur.fetchone()[0]
    cur.execute("DROP INDEX fmnist_tb")
    conn.close()
    ph = [n.replace("vidx build: ", "") for n in notes if n.startswith("vidx build: load")]
    walls.append((t1 - t0) * 1000); cpus.append(c1 - c0)
    print(f"wall {walls[-1]:7.0f} ms  cpu {cpus[-1]:6.0f} ms  calib_queries {cq}  {ph[0] if ph else ''}", flush=True)
print(f"median of {runs}: wall {statistics.median(walls):.0f} ms, cpu {statistics.median(cpus):.0f} ms; loadavg {open('/proc/loadavg').read().split()[:3]}")
