import sys, time, numpy as np
sys.path.insert(0, '/work/main/bench')
import benchlib as bl
ds = sys.argv[1]; sets = [kv.split('=') for kv in sys.argv[2].split(',') if kv]; reps = int(sys.argv[3])
base, Q, meta = bl.load_dataset(ds, mmap=True)
conn = bl.connect('')
params = [bl.vec_param(q) for q in Q]
sql = f"SELECT id FROM {ds} ORDER BY embedding <-> %b::real[] LIMIT 10"
with conn.cursor() as cur:
    for k, v in sets: cur.execute(f"SET {k} = {v}")
    cur.execute("select pg_backend_pid()"); print(cur.fetchone()[0], flush=True)
    for p in params: cur.execute(sql, (p,), prepare=True); cur.fetchall()
    open('/tmp/runq.ready', 'w').close()
    t = time.perf_counter()
    for r in range(reps):
        for p in params: cur.execute(sql, (p,), prepare=True); cur.fetchall()
    print("ms/q", (time.perf_counter() - t) * 1e3 / reps / len(params))
