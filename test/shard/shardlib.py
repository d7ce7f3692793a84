"""Helpers for the sharded vidx layout (test/shard/run.sh, bench/shard/sweep.py).

Makes throw-away PostgreSQL 15 clusters on loopback (pg_createcluster, trust
auth), and builds the layout of docs/sharding.md on them:

  shard i:      database "app", table items(id bigint, cat int, v real[]) with
                its rows and its own vidx indexes (one per metric asked for)
  coordinator:  database "app", extensions vidx + postgres_fdw, one foreign
                server per shard (extensions 'vidx', fetch_size, async_capable,
                use_remote_estimate), items partitioned by id range whose
                partitions are foreign tables items_s1..items_sN, and a local
                copy items_local (the single-server reference).

Every cluster made here is dropped by drop_all() (called from finally/atexit
and signal handlers by the users of this module).
"""

import atexit
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psycopg

PGVER = "15"
OPERATOR = {"l2": "<->", "ip": "<#>", "cos": "<=>"}
OPCLASS = {"l2": "vidx_l2_ops", "ip": "vidx_ip_ops", "cos": "vidx_cosine_ops"}

_made = []  # clusters created by this process, dropped at exit


def log(*a):
    print(time.strftime("[%H:%M:%S]"), *a, flush=True)


def _run(args, check=True):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(args), r.returncode, r.stdout.strip()))
    return r


def cluster_exists(name):
    return os.path.isdir("/etc/postgresql/%s/%s" % (PGVER, name))


class Cluster:
    def __init__(self, name, port):
        self.name = name
        self.port = port

    def create(self, settings=None):
        if cluster_exists(self.name):  # left over by a killed run: ours by name
            _run(["pg_dropcluster", "--stop", PGVER, self.name], check=False)
        opts = {
            "listen_addresses": "'127.0.0.1'",
            "shared_buffers": "256MB",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
            "log_min_messages": "warning",
        }
        opts.update(settings or {})
        _made.append(self.name)
        _run(["pg_createcluster", PGVER, self.name, "-p", str(self.port), "--", "-A", "trust"])
        with open("/etc/postgresql/%s/%s/conf.d/vidx_shard.conf" % (PGVER, self.name), "w") as f:
            for k, v in opts.items():
                f.write("%s = %s\n" % (k, v))
        return self

    def start(self):
        _run(["pg_ctlcluster", PGVER, self.name, "start"])
        return self

    def stop(self):
        _run(["pg_ctlcluster", PGVER, self.name, "stop", "-m", "fast"])
        return self

    def drop(self):
        _run(["pg_dropcluster", "--stop", PGVER, self.name], check=False)
        if self.name in _made:
            _made.remove(self.name)

    def conninfo(self, db="app"):
        return "host=127.0.0.1 port=%d user=postgres dbname=%s" % (self.port, db)

    def connect(self, db="app"):
        return psycopg.connect(self.conninfo(db), autocommit=True)

    def log_tail(self, n=30):
        path = "/var/log/postgresql/postgresql-%s-%s.log" % (PGVER, self.name)
        try:
            with open(path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


def drop_all():
    for name in list(_made):
        _run(["pg_dropcluster", "--stop", PGVER, name], check=False)
        _made.remove(name)


def install_cleanup():
    """Drop our clusters at exit and on SIGINT/SIGTERM/SIGHUP."""
    atexit.register(drop_all)

    def handler(signum, frame):
        drop_all()
        sys.exit(128 + signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)


# ------------------------------------------------------------- data


def make_data(rows, dims, nq, seed, ncat=5):
    """Clustered Gaussian data (seeded): vectors, categories, queries."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(64, dims)).astype(np.float32) * 2.0
    lab = rng.integers(0, len(centers), size=rows)
    x = centers[lab] + rng.normal(size=(rows, dims)).astype(np.float32)
    cat = rng.integers(0, ncat, size=rows).astype(np.int32)
    ql = rng.integers(0, len(centers), size=nq)
    q = centers[ql] + rng.normal(size=(nq, dims)).astype(np.float32)
    return x.astype(np.float32), cat, q.astype(np.float32)


def vec_text(v):
    return "{" + ",".join(repr(float(a)) for a in v) + "}"


# ------------------------------------------------------------- layout


def range_bounds(nshards, id_end):
    """Partition i (1-based) holds ids [lo, hi); first is MINVALUE, last MAXVALUE."""
    step = id_end // nshards
    out = []
    for i in range(nshards):
        lo = "MINVALUE" if i == 0 else str(i * step)
        hi = "MAXVALUE" if i == nshards - 1 else str((i + 1) * step)
        out.append((lo, hi))
    return out


def setup_shard(shard, metrics=("l2",)):
    with shard.connect("postgres") as c:
        c.execute("DROP DATABASE IF EXISTS app")
        c.execute("CREATE DATABASE app")
    with shard.connect() as c:
        c.execute("CREATE EXTENSION vidx")
        c.execute("CREATE TABLE items (id bigint PRIMARY KEY, cat int NOT NULL, v real[] NOT NULL)")
        # What the remote sessions of the coordinator use (see docs/sharding.md).
        c.execute(
            "CREATE VIEW vidx_settings AS SELECT "
            "current_setting('vidx.probes', true) AS probes, "
            "current_setting('vidx.rerank', true) AS rerank, pg_backend_pid() AS pid"
        )


def setup_coordinator(coord, shards, id_end, fetch_size=10, async_capable=True,
                      remote_options=None, local_copy=True, remote_estimate=False):
    """Foreign servers + partitioned table on the coordinator."""
    with coord.connect("postgres") as c:
        c.execute("DROP DATABASE IF EXISTS app")
        c.execute("CREATE DATABASE app")
    with coord.connect() as c:
        c.execute("CREATE EXTENSION vidx")
        c.execute("CREATE EXTENSION postgres_fdw")
        c.execute("CREATE TABLE items (id bigint NOT NULL, cat int NOT NULL, v real[] NOT NULL) "
                  "PARTITION BY RANGE (id)")
        for i, (sh, (lo, hi)) in enumerate(zip(shards, range_bounds(len(shards), id_end)), 1):
            opts = [
                ("host", "127.0.0.1"),
                ("port", str(sh.port)),
                ("dbname", "app"),
                ("extensions", "vidx"),
                ("fetch_size", str(fetch_size)),
                ("use_remote_estimate", "true" if remote_estimate else "false"),
                ("async_capable", "true" if async_capable else "false"),
            ]
            if remote_options:
                opts.append(("options", remote_options))
            c.execute("CREATE SERVER shard_%d FOREIGN DATA WRAPPER postgres_fdw OPTIONS (%s)"
                      % (i, ", ".join("%s %s" % (k, _lit(v)) for k, v in opts)))
            c.execute("CREATE USER MAPPING FOR PUBLIC SERVER shard_%d OPTIONS (user 'postgres')" % i)
            c.execute("CREATE FOREIGN TABLE items_s%d PARTITION OF items FOR VALUES FROM (%s) TO (%s) "
                      "SERVER shard_%d OPTIONS (schema_name 'public', table_name 'items', batch_size '1000')"
                      % (i, lo, hi, i))
            c.execute("CREATE FOREIGN TABLE vidx_settings_s%d (probes text, rerank text, pid int) "
                      "SERVER shard_%d OPTIONS (schema_name 'public', table_name 'vidx_settings')" % (i, i))
        if local_copy:
            c.execute("CREATE TABLE items_local (id bigint PRIMARY KEY, cat int NOT NULL, v real[] NOT NULL)")


def _lit(s):
    return "'" + str(s).replace("'", "''") + "'"


def copy_rows(conn, table, x, cat, id_step=1):
    with conn.cursor() as cur:
        with cur.copy("COPY %s (id, cat, v) FROM STDIN" % table) as cp:
            for i in range(len(x)):
                cp.write_row((i * id_step, int(cat[i]), vec_text(x[i])))


def load(coord, x, cat, id_step=1, local_copy=True):
    """Rows go through the coordinator's partitioned table: COPY into
    items_local, then INSERT ... SELECT into items (postgres_fdw sends them in
    batches of batch_size). Without local_copy, a temporary staging table."""
    with coord.connect() as c:
        if local_copy:
            copy_rows(c, "items_local", x, cat, id_step)
            c.execute("INSERT INTO items SELECT id, cat, v FROM items_local")
        else:
            c.execute("CREATE TEMP TABLE stage (id bigint, cat int, v real[])")
            copy_rows(c, "stage", x, cat, id_step)
            c.execute("INSERT INTO items SELECT id, cat, v FROM stage")


def build_indexes(servers_tables, metrics=("l2",)):
    """servers_tables: list of (cluster, table)."""
    for cl, table in servers_tables:
        with cl.connect() as c:
            for m in metrics:
                c.execute("CREATE INDEX %s_v_%s ON %s USING vidx (v %s)" % (table, m, table, OPCLASS[m]))
            c.execute("ANALYZE %s" % table)


def make_layout(prefix, port0, nshards, x, cat, metrics=("l2",), fetch_size=10,
                async_capable=True, remote_options=None, local_copy=True, id_step=1,
                remote_estimate=False):
    """Create, start and fill coordinator + nshards shards. Returns (coord, shards)."""
    coord = Cluster("%s_coord" % prefix, port0).create().start()
    shards = [Cluster("%s_s%d" % (prefix, i), port0 + i).create().start() for i in range(1, nshards + 1)]
    for sh in shards:
        setup_shard(sh, metrics)
    setup_coordinator(coord, shards, len(x) * id_step, fetch_size, async_capable, remote_options,
                      local_copy, remote_estimate)
    load(coord, x, cat, id_step, local_copy)
    tabs = [(sh, "items") for sh in shards]
    if local_copy:
        tabs.append((coord, "items_local"))
    build_indexes(tabs, metrics)
    with coord.connect() as c:
        c.execute("ANALYZE items")
    return coord, shards
