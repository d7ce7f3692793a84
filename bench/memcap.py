"""Larger than memory (issue 12): vidx with PostgreSQL confined to a memory cgroup.

Runs its own PostgreSQL cluster (initdb once into --pgdata) and, for each
configuration in turn (uncapped first, then each --caps size), starts the
postmaster inside a cgroup v1 memory group (/sys/fs/cgroup/memory/vidx_bench,
memory.limit_in_bytes = the cap, or unlimited for "uncapped"; the page cache
the server's processes read is charged to it), and measures:

  build   DROP INDEX + CREATE INDEX (defaults) inside the configuration: time,
          the group's peak usage (memory.max_usage_in_bytes), failcnt, OOM kills.
  cold    server stopped, the page cache of the whole data directory evicted
          (posix_fadvise POSIX_FADV_DONTNEED on every file: drop_caches is not
          allowed here), server started: the first --cold-queries queries.
  steady  for each setting (capped): server restarted, the page cache of its
          files evicted (uncapped, the all-cached reference: the table read
          into the page cache once), vidx_prewarm, --warmup queries of base
          rows (not the measured queries, so the cache holds what other
          traffic left, not the answers); then the first --server-sample
          held-out queries under EXPLAIN (ANALYZE, BUFFERS) (server-side
          p50/p99, shared buffers read per query) and the others one at a
          time from the client: recall@10 against exact ground truth, client
          p50/p99/QPS, major faults and bytes the backend read from disk per
          query (memory.stat pgmajfault, /proc/PID/io read_bytes).

Each setting's session starts with vidx_prewarm (index pages into shared
buffers, then as much of the sidecar as the memory left allows) unless
--no-prewarm.

  /usr/bin/python3 bench/memcap.py --dim 1024 --rows 1000000 --caps 2G,1G \\
      --bindir /usr/lib/postgresql/15/bin

Must run as root (cgroups, runuser). The table is loaded once (uncapped) and
kept in --pgdata between runs; --fresh re-creates the cluster.
Output: bench/results/memcap_d<D>_n<N>[_plain]/result.{json,md}.
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import datagen  # noqa: E402

CGROUP = "/sys/fs/cgroup/memory/vidx_bench"


def parse_size(s):
    s = s.strip().upper()
    mult = {"K": 2**10, "M": 2**20, "G": 2**30}
    if s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def human(b):
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


# ------------------------------------------------------------- cgroup


def cg_write(name, value, group=CGROUP):
    with open(os.path.join(group, name), "w") as f:
        f.write(str(value))


def cg_read(name, group=CGROUP):
    with open(os.path.join(group, name)) as f:
        return f.read()


def cg_stat():
    """pgmajfault, cache, rss, usage, peak, failcnt and OOM kills of the group."""
    st = {}
    for line in cg_read("memory.stat").splitlines():
        k, v = line.split()
        st[k] = int(v)
    oom = 0
    for line in cg_read("memory.oom_control").splitlines():
        if line.startswith("oom_kill "):
            oom = int(line.split()[1])
    return {"majfault": st.get("total_pgmajfault", st.get("pgmajfault", 0)),
            "cache": st.get("total_cache", 0), "rss": st.get("total_rss", 0),
            "oom_kill": oom,
            "usage": int(cg_read("memory.usage_in_bytes")),
            "max_usage": int(cg_read("memory.max_usage_in_bytes")),
            "failcnt": int(cg_read("memory.failcnt"))}


def cg_setup(limit):
    os.makedirs(CGROUP, exist_ok=True)
    # a stopped server's last processes may take a moment to leave the group
    for _ in range(50):
        procs = cg_read("cgroup.procs").split()
        if not procs:
            break
        time.sleep(0.2)
    if procs:
        raise SystemExit(f"{CGROUP} still has processes {procs}: stop the server first")
    # the cap; -1 = unlimited. Lowering below current usage reclaims first.
    cg_write("memory.limit_in_bytes", limit if limit else -1)
    cg_write("memory.max_usage_in_bytes", 0)
    cg_write("memory.failcnt", 0)


def cg_reset_peak():
    cg_write("memory.max_usage_in_bytes", 0)
    cg_write("memory.failcnt", 0)


# ------------------------------------------------------------- the cluster


class Cluster:
    def __init__(self, a):
        self.bindir = a.bindir
        self.pgdata = a.pgdata
        self.port = a.port
        self.log = os.path.join(os.path.dirname(a.pgdata), "memcap_server.log")
        self.dsn = f"host=/tmp port={a.port} user=postgres dbname=postgres"
        self.a = a

    def pg(self, *args, check=True):
        return subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(self.bindir, args[0]),
                               *args[1:]], check=check, capture_output=True, text=True)

    def init(self, fresh):
        if fresh and os.path.exists(self.pgdata):
            self.stop()
            subprocess.run(["rm", "-rf", self.pgdata], check=True)
        if os.path.exists(os.path.join(self.pgdata, "PG_VERSION")):
            return
        os.makedirs(os.path.dirname(self.pgdata), exist_ok=True)
        subprocess.run(["chown", "postgres:postgres", os.path.dirname(self.pgdata)], check=True)
        self.pg("initdb", "-D", self.pgdata, "-A", "trust", "-U", "postgres", "--no-sync")
        with open(os.path.join(self.pgdata, "postgresql.conf"), "a") as f:
            f.write(f"""
# bench/memcap.py
port = {self.port}
unix_socket_directories = '/tmp'
listen_addresses = ''
shared_buffers = {self.a.shared_buffers}
maintenance_work_mem = {self.a.maintenance_work_mem}
work_mem = 64MB
effective_cache_size = {self.a.shared_buffers}
wal_level = minimal
max_wal_senders = 0
max_wal_size = 16GB
checkpoint_timeout = 30min
jit = off
autovacuum = off
""")

    def stop(self):
        if os.path.exists(os.path.join(self.pgdata, "postmaster.pid")):
            self.pg("pg_ctl", "-D", self.pgdata, "-m", "fast", "-w", "-t", "600", "stop", check=False)

    def start(self, in_cgroup):
        # the sizes of this run, not those the cluster was created with
        opts = (f"-c shared_buffers={self.a.shared_buffers} -c effective_cache_size={self.a.shared_buffers} "
                f"-c maintenance_work_mem={self.a.maintenance_work_mem}")
        cmd = (f"exec runuser -u postgres -- {self.bindir}/pg_ctl -D {self.pgdata} -l {self.log} "
               f"-o '{opts}' -w -t 600 start")
        if in_cgroup:
            cmd = f"echo $$ > {CGROUP}/cgroup.procs && " + cmd
        subprocess.run(["sh", "-c", cmd], check=True, capture_output=True)

    def evict(self, only=None):
        """Drops the page cache of the data directory's files (or of the files in `only`)."""
        n = 0
        paths = only or [os.path.join(r, f) for r, _, fs in os.walk(self.pgdata) for f in fs]
        for p in paths:
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                n += 1
            except OSError:
                pass
            finally:
                os.close(fd)
        return n

    def sidecars(self):
        out = []
        for r, _, fs in os.walk(self.pgdata):
            out += [os.path.join(r, f) for f in fs if f.endswith(".vsc")]
        return out


def resident(paths):
    """Bytes of these files in the page cache (util-linux fincore)."""
    if not paths:
        return 0
    r = subprocess.run(["fincore", "-b", "-n", "-o", "RES", *paths], capture_output=True, text=True)
    return sum(int(x) for x in r.stdout.split() if x.isdigit())


# ------------------------------------------------------------- measuring


def proc_io(pid):
    """Bytes this process caused to be read from storage (/proc/PID/io read_bytes)."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def memory_breakdown(conn, index, pid):
    """Where the group's memory is, against the design's formula: the tree and
    the codes (the index) resident in shared buffers, the sidecar cache in the
    page cache, and the backend's working memory (private anonymous pages)."""
    st = {}
    for line in cg_read("memory.stat").splitlines():
        k, v = line.split()
        st[k] = int(v)
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_buffercache")
        cur.execute("SELECT pg_relation_size(%s), current_setting('shared_buffers'), "
                    "count(*) FILTER (WHERE b.relfilenode = pg_relation_filenode(%s) "
                    "AND b.reldatabase = (SELECT oid FROM pg_database WHERE datname = current_database())), "
                    "count(*) FILTER (WHERE b.relfilenode IS NOT NULL) "
                    "FROM pg_buffercache b", (index, index))
        index_bytes, sb, index_buffers, used_buffers = cur.fetchone()
    rss_anon = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                rss_anon = int(line.split()[1]) * 1024
    return {"index_bytes": index_bytes, "shared_buffers": sb,
            "index_in_shared_buffers": index_buffers * 8192, "shared_buffers_used": used_buffers * 8192,
            "backend_rss_anon": rss_anon,
            "group_usage": int(cg_read("memory.usage_in_bytes")),
            "group_rss": st.get("total_rss", 0), "group_cache": st.get("total_cache", 0),
            "group_shmem": st.get("total_shmem", 0), "group_mapped_file": st.get("total_mapped_file", 0)}


def server_side(conn, table, queries, settings, k=10):
    """EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) per query: execution time p50/p99 ms on the
    server, and shared buffers read (not hit) per query: the index's pages, and the
    table's heap and TOAST pages of the rows returned (the executor computes each
    returned row's distance from its stored vector)."""
    t, reads = [], []
    with conn.cursor() as cur:
        for name, value in settings.items():
            cur.execute(f"SET {name} = {value}")
        for q in queries:
            cur.execute(f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) SELECT id FROM {table} "
                        f"ORDER BY embedding <-> %b::real[] LIMIT {k}", (bl.vec_param(q),))
            plan = cur.fetchone()[0][0]
            t.append(plan["Execution Time"])
            reads.append(plan["Plan"].get("Shared Read Blocks", 0))
        cur.execute("RESET ALL")
    return {"server_p50_ms": float(np.percentile(t, 50)), "server_p99_ms": float(np.percentile(t, 99)),
            "server_queries": len(t), "shared_read_per_query": float(np.mean(reads))}


def run_setting(cl, table, index, base, Q, gt_d, settings, a, prewarm, warm_q, capped):
    # capped: every setting from the same start, the server restarted (shared
    # buffers empty) and the page cache of all its files evicted. Uncapped is
    # the all-cached reference: the table was read into the page cache once.
    if capped:
        cl.stop()
        cl.evict()
        cl.start(in_cgroup=True)
    conn = bl.connect(cl.dsn)
    warmed = None
    with conn.cursor() as cur:
        if prewarm:
            cur.execute("SELECT sidecar_bytes FROM vidx_prewarm(%s)", (index,))
            warmed = cur.fetchone()[0]
        for name, value in settings.items():
            cur.execute(f"SET {name} = {value}")
        for q in warm_q:
            cur.execute(f"SELECT id FROM {table} ORDER BY embedding <-> %b::real[] LIMIT 10",
                        (bl.vec_param(q),))
            cur.fetchall()
        cur.execute("RESET ALL")
    # server-side times and buffers on the first queries, the client-side run on
    # the others: no measured query finds its own records cached by an earlier pass
    ns = a.server_sample
    r = server_side(conn, table, Q[:ns], settings)
    pid = bl.backend_pid(conn)
    s0, io0 = cg_stat(), proc_io(pid)
    rc, _ = bl.run_queries(conn, table, Q[ns:], "l2", 10, settings=settings, base=base, gt_dist=gt_d[ns:])
    s1, io1 = cg_stat(), proc_io(pid)
    r.update(rc)
    r["majfault_per_query"] = (s1["majfault"] - s0["majfault"]) / len(Q[ns:])
    r["read_kib_per_query"] = (io1 - io0) / len(Q[ns:]) / 1024
    r["sidecar_resident"] = resident(cl.sidecars())
    r["prewarmed_sidecar_bytes"] = warmed
    r["memory"] = memory_breakdown(conn, index, pid)
    if not settings:  # the probes the default target gives
        with conn.cursor() as cur:
            cur.execute("SELECT (vidx_stats(%s)->'calibration'->>'target_probes')::float8", (index,))
            r["target_probes"] = cur.fetchone()[0]
    conn.close()
    return r


def main(argv=None):
    bl.fast_blas()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--caps", default="2G,1G", help="cgroup sizes, after an uncapped run")
    ap.add_argument("--no-uncapped", action="store_true")
    ap.add_argument("--shared-buffers", default="512MB")
    ap.add_argument("--maintenance-work-mem", default="256MB")
    ap.add_argument("--probes-list", default="1,2,3,4,6",
                    help="vidx.probes values; 'defaults' runs with nothing set (the default target recall)")
    ap.add_argument("--rerank", default="", help="also these vidx.rerank values at the --probes-list")
    ap.add_argument("--warmup", type=int, default=500, help="base-row queries before each setting")
    ap.add_argument("--cold-queries", type=int, default=100)
    ap.add_argument("--cold-probes", type=int, default=2, help="vidx.probes of the cold-start queries")
    ap.add_argument("--server-sample", type=int, default=200)
    ap.add_argument("--no-prewarm", action="store_true",
                    help="no vidx_prewarm at the start of each setting's session (it warms what fits)")
    ap.add_argument("--no-build", action="store_true", help="keep the index (build only if missing)")
    ap.add_argument("--bindir", default="/usr/lib/postgresql/15/bin")
    ap.add_argument("--pgdata", default=os.path.join(bl.DATA_DIR, "memcap", "pgdata"))
    ap.add_argument("--port", type=int, default=5497)
    ap.add_argument("--fresh", action="store_true", help="re-create the cluster")
    ap.add_argument("--storage", default="external", choices=["external", "plain"],
                    help="storage of the vector column: external (TOAST, uncompressed: each row returned "
                         "costs a heap, a TOAST index and a TOAST page) or plain (in the heap row)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("memcap.py: run as root (cgroups, runuser)")

    name = datagen.gen_name(a.dim, a.rows, a.seed)
    # the set always has 1,000 queries (so runs with fewer share its files); --queries takes the first
    # a set larger than 8 GiB is not written out: its rows are generated again
    # whenever read (the table and the sidecar hold it twice already)
    virtual = a.rows * a.dim * 4 > 8 << 30
    datagen.cmd_gen(argparse.Namespace(name=None, dim=a.dim, rows=a.rows, queries=max(1000, a.queries), seed=a.seed,
                                       spread=0.7, chunk=50_000, metrics="l2", virtual=virtual))
    base, Q, meta = bl.load_dataset(name)
    _, gt_d = bl.ensure_gt(name, "l2")
    Q = Q[:a.queries]
    gt_d = gt_d[:a.queries]
    warm_q = base[np.sort(np.random.default_rng(a.seed).choice(len(base), a.warmup, replace=False))]

    out = a.out or os.path.join(bl.RESULTS_DIR, f"memcap_d{a.dim}_n{a.rows}" + ("_plain" if a.storage == "plain" else ""))
    res = {"command": "bench/memcap.py " + " ".join(argv or sys.argv[1:]), "dataset": meta, "configs": []}

    cl = Cluster(a)
    cl.stop()
    cl.init(a.fresh)
    table = f"memcap_d{a.dim}_n{a.rows}" + ("_plain" if a.storage == "plain" else "")
    index = table + "_vidx"

    # load once, uncapped (the load is not what is measured)
    cg_setup(0)
    cl.start(in_cgroup=False)
    conn = bl.connect(cl.dsn)
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS vidx")
    res["machine"] = bl.machine_info(conn)
    if bl.table_rows(conn, table) != a.rows:
        res["copy_s"] = round(bl.load_table(conn, table, base, chunk=10_000, storage=a.storage.upper()), 1)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_table_size(%s)", (table,))
        res["table_bytes"] = cur.fetchone()[0]
    conn.close()
    cl.stop()

    configs = ([] if a.no_uncapped else [0]) + [parse_size(c) for c in a.caps.split(",") if c]
    # "defaults": nothing set (the default vidx.target_recall)
    probes = [p if p == "defaults" else int(p) for p in a.probes_list.split(",")]
    settings_list = [{} if p == "defaults" else {"vidx.probes": p} for p in probes]
    settings_list += [{"vidx.probes": p, "vidx.rerank": r} for r in a.rerank.split(",") if r for p in probes
                      if p != "defaults"]
    for cap in configs:
        label = "uncapped" if cap == 0 else f"cap {human(cap)}"
        bl.log(f"== {label}")
        c = {"cap_bytes": cap, "label": label}
        cl.evict()
        cg_setup(cap)
        cl.start(in_cgroup=True)
        conn = bl.connect(cl.dsn)
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (index,))
            exists = cur.fetchone()[0]
        conn.close()
        if not (a.no_build and exists):
            cg_reset_peak()
            s0 = cg_stat()
            b = bl.create_index(cl.dsn, table, index, "l2")
            s1 = cg_stat()
            c["build"] = {"build_s": round(b["build_s"], 1), "backend": b["build_backend"],
                          "peak_usage": s1["max_usage"], "failcnt": s1["failcnt"],
                          "oom_kill": s1["oom_kill"] - s0["oom_kill"],
                          "majfault": s1["majfault"] - s0["majfault"]}
            bl.log(f"  build {c['build']['build_s']} s, group peak {human(s1['max_usage'])}, "
                   f"failcnt {s1['failcnt']}, oom kills {c['build']['oom_kill']}")
        conn = bl.connect(cl.dsn)
        c["index"] = bl.index_info(conn, index)
        conn.close()

        # cold: server restarted with nothing of its files cached
        cl.stop()
        cl.evict()
        cg_setup(cap)
        cl.start(in_cgroup=True)
        conn = bl.connect(cl.dsn)
        pid = bl.backend_pid(conn)
        s0, io0 = cg_stat(), proc_io(pid)
        cold_settings = {"vidx.probes": a.cold_probes}
        r, _ = bl.run_queries(conn, table, Q[:a.cold_queries], "l2", 10, settings=cold_settings,
                              base=base, gt_dist=gt_d[:a.cold_queries], warmup=0)
        s1, io1 = cg_stat(), proc_io(pid)
        r["majfault_per_query"] = (s1["majfault"] - s0["majfault"]) / a.cold_queries
        r["read_kib_per_query"] = (io1 - io0) / a.cold_queries / 1024
        r["settings"] = cold_settings
        c["cold"] = r
        conn.close()
        bl.log(f"  cold ({r['settings']}): first {a.cold_queries} queries p50 {r['p50_ms']:.2f} "
               f"p99 {r['p99_ms']:.2f} ms, {r['majfault_per_query']:.1f} major faults, "
               f"{r['read_kib_per_query']:.0f} KiB read per query")

        cg_reset_peak()
        c["steady"] = []
        if cap == 0:
            conn = bl.connect(cl.dsn)
            with conn.cursor() as cur:
                cur.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
                # the heap, its TOAST table and the TOAST index (out-of-line vectors)
                cur.execute("SELECT sum(pg_prewarm(c, 'read')) FROM (SELECT %s::regclass AS c UNION ALL "
                            "SELECT reltoastrelid::regclass FROM pg_class WHERE oid = %s::regclass "
                            "AND reltoastrelid <> 0 UNION ALL SELECT i.indexrelid::regclass FROM pg_class t "
                            "JOIN pg_index i ON i.indrelid = t.reltoastrelid WHERE t.oid = %s::regclass) r",
                            (table, table, table))
                bl.log(f"  uncapped: the table read into the page cache ({cur.fetchone()[0]:,} blocks)")
            conn.close()
        for st in settings_list:
            r = run_setting(cl, table, index, base, Q, gt_d, st, a, prewarm=not a.no_prewarm,
                            warm_q=warm_q, capped=cap != 0)
            r["settings"] = st
            c["steady"].append(r)
            if r.get("prewarmed_sidecar_bytes") is not None:
                bl.log(f"  vidx_prewarm: {human(r['prewarmed_sidecar_bytes'])} of the sidecar")
            bl.log(f"  {st}: recall@10 {r['recall@10']:.3f}, p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms "
                   f"(server {r['server_p50_ms']:.2f}/{r['server_p99_ms']:.2f}), QPS {r['qps']:.0f}, "
                   f"{r['majfault_per_query']:.1f} majflt/q, {r['read_kib_per_query']:.0f} KiB read/q, "
                   f"{r['shared_read_per_query']:.1f} shared reads/q")
        s = cg_stat()
        c["query_peak_usage"] = s["max_usage"]
        c["query_failcnt"] = s["failcnt"]
        c["oom_kill_total"] = s["oom_kill"]
        res["configs"].append(c)
        cl.stop()
        bl.write_json(os.path.join(out, "result.json"), res)
    cg_setup(0)
    write_md(out, res, a)
    bl.log(f"wrote {out}/result.md")


def write_md(out, res, a):
    m = res["machine"]
    L = [f"# vidx larger than memory: {a.rows:,} x {a.dim} (clustered, unit-normalized, L2)", "",
         f"Machine: {m['cpu_model']}, {m['cpus']} CPUs, {m['ram_gib']} GiB RAM; {m.get('postgres', '')}; "
         f"commit {m['commit']}{' (dirty)' if m['tree_dirty'] else ''}; {m['date_utc']}.",
         f"Server: shared_buffers {m.get('pg_settings', {}).get('shared_buffers', a.shared_buffers)}, "
         f"maintenance_work_mem {a.maintenance_work_mem}; vector column storage "
         f"{a.storage.upper()} (table {human(res['table_bytes'])}); "
         f"the postmaster runs in a cgroup v1 memory group of the given size (page cache charged).",
         f"Command: `{res['command']}`", "",
         "Steady state: capped, per setting the server restarted and the page cache of its files evicted "
         "(uncapped, all cached: the table read into the page cache once), "
         f"{'' if a.no_prewarm else 'vidx_prewarm, '}{a.warmup} base-row queries; then the first {a.server_sample} held-out queries under EXPLAIN (ANALYZE, BUFFERS) "
         f"(server p50/p99, shared reads/q) and the other {a.queries - a.server_sample} one at a time from the client "
         "(recall, p50/p99, QPS, major faults and KiB the backend read from disk per query, /proc/PID/io).", ""]
    L += ["| config | build s | build peak | failcnt | index | cold start: first queries p50/p99 ms (majflt/q) |",
          "|---|---|---|---|---|---|"]
    for c in res["configs"]:
        b = c.get("build", {})
        cold = c["cold"]
        L.append(f"| {c['label']} | {b.get('build_s', 'kept')} | {human(b['peak_usage']) if b else ''} | "
                 f"{b.get('failcnt', '')} | {human(c['index'].get('index_bytes', 0)) if c.get('index') else ''} | "
                 f"{cold['p50_ms']:.1f} / {cold['p99_ms']:.1f} ({cold['majfault_per_query']:.0f}), recall@10 {cold['recall@10']:.3f} |")
    L += ["", "| config | setting | recall@10 | p50 ms | p99 ms | server p50/p99 ms | QPS | majflt/q | KiB read/q | shared reads/q |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["configs"]:
        for r in c["steady"]:
            st = (", ".join(f"{k.split('.')[1]} {v}" for k, v in r["settings"].items())
                  or f"defaults (probes {r.get('target_probes')})")
            L.append(f"| {c['label']} | {st} | {r['recall@10']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['server_p50_ms']:.2f} / {r['server_p99_ms']:.2f} | {r['qps']:.0f} | "
                     f"{r['majfault_per_query']:.1f} | {r['read_kib_per_query']:.0f} | {r['shared_read_per_query']:.1f} |")
    L += ["", "Memory after each setting's queries, against the formula (tree + codes: the index, resident in "
          "shared buffers; the sidecar cache: page cache; working memory: the query backend's private pages). "
          "The group's usage is its RSS (private pages of all its processes) plus its page cache, which "
          "includes shared buffers (shmem).", "",
          "| config | setting | index (tree + codes) | of it in shared buffers | shared buffers used / size "
          "| sidecar in page cache | backend private | group usage = rss + cache (shmem) |",
          "|---|---|---|---|---|---|---|---|"]
    for c in res["configs"]:
        for r in c["steady"]:
            mb = r.get("memory")
            if not mb:
                continue
            st = ", ".join(f"{k.split('.')[1]} {v}" for k, v in r["settings"].items()) or "defaults"
            L.append(f"| {c['label']} | {st} | {human(mb['index_bytes'])} | {human(mb['index_in_shared_buffers'])} | "
                     f"{human(mb['shared_buffers_used'])} / {mb['shared_buffers']} | {human(r['sidecar_resident'])} | "
                     f"{human(mb['backend_rss_anon'])} | {human(mb['group_usage'])} = {human(mb['group_rss'])} + "
                     f"{human(mb['group_cache'])} ({human(mb['group_shmem'])}) |")
    L += ["", "| config | query peak usage | failcnt | OOM kills |", "|---|---|---|---|"]
    for c in res["configs"]:
        L.append(f"| {c['label']} | {human(c['query_peak_usage'])} | {c['query_failcnt']} | {c['oom_kill_total']} |")
    with open(os.path.join(out, "result.md"), "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
