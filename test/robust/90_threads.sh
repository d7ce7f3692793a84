#!/usr/bin/env bash
# 90_threads: the threads a backend's vidx core starts.
#   - every thread of a backend other than its main one blocks every signal
#     (SigBlk in /proc/<pid>/task/<tid>/status has at least fffffffe7ffbfeff: all of
#     signals 1-64 but SIGKILL and SIGSTOP, which cannot be blocked, and
#     glibc's internal 32 and 33, which pthread_sigmask refuses to block), so
#     PostgreSQL's handlers only ever run on the main thread;
#   - kill -USR1 / -HUP to the backend are handled: the session keeps working;
#   - thread counts follow the settings: a build uses vidx.build_threads, or
#     max_parallel_maintenance_workers + 1, never more than the CPUs; a scan
#     uses min(vidx.scan_threads, vidx.max_scan_threads) (a server-wide bound,
#     changed by a reload). Threads persist in the backend, so its thread count
#     is 1 + the most workers any call asked for so far.
source "$(dirname "$(readlink -f "$0")")/lib.sh"
NAME=rbst_threads
PORT=5452
cluster_create $NAME $PORT "vidx.max_scan_threads = 2" || exit 1
q $PORT "CREATE EXTENSION vidx; CREATE TABLE t (id int PRIMARY KEY, v real[]);
INSERT INTO t SELECT i, ARRAY(SELECT sin(i * 0.37 + j * 1.1)::real FROM generate_series(1, 32) j)
FROM generate_series(1, 6000) i" || exit 1

# One leaf of 6,000 postings: a scan estimates groups of 32 pages (about 5,900
# postings, over 2,048), so it uses its threads.
while IFS= read -r line; do
	case $line in
	"ok - "*) ok "${line#ok - }" ;;
	"not ok - "*) not_ok "${line#not ok - }" ;;
	*) echo "$line" ;;
	esac
done < <("$PY" - "$PORT" "$SOCKDIR" <<'PY'
import os, signal, sys, time
import psycopg

port, host = sys.argv[1], sys.argv[2]
BLOCKED = "fffffffe7ffbfeff"
CPUS = os.cpu_count()
QUERY = ("SELECT string_agg(id::text, ',') FROM (SELECT id FROM t "
         "ORDER BY v <-> (SELECT v FROM t WHERE id = 17) LIMIT 10) s")


def check(desc, cond):
    print(("ok - " if cond else "not ok - ") + desc, flush=True)


def connect():
    c = psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True)
    return c, c.execute("SELECT pg_backend_pid()").fetchone()[0]


def run(c, sql):
    return c.execute(sql).fetchone()


def threads(pid):
    """{tid: SigBlk} of every thread of the process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("SigBlk:"):
                        out[int(tid)] = line.split()[1]
        except FileNotFoundError:
            pass
    return out


def check_count(desc, pid, want):
    got = len(threads(pid))
    check(f"{desc}: {got} threads, want {want}", got == want)


def check_blocked(desc, pid):
    others = {t: m for t, m in threads(pid).items() if t != pid}
    # At least BLOCKED: a thread glibc has created but not yet run blocks every
    # signal (fffffffffffbfeff, glibc's 32 and 33 included) until it starts and
    # takes its creator's mask, and a scan does not wait for a new worker that
    # finds no work left, so one may be caught in that state.
    want = int(BLOCKED, 16)
    bad = sorted((t, m) for t, m in others.items() if int(m, 16) & want != want)
    check(f"{desc}: {len(others)} threads besides the main one, all blocking at least SigBlk {BLOCKED}"
          + (f" (not {len(bad)} of them, e.g. {bad[:3]})" if bad else ""), not bad)


def main():
    a, apid = connect()
    a.execute("SET enable_seqscan = off")
    check_count("a fresh backend", apid, 1)
    a.execute("SET max_parallel_maintenance_workers = 0")
    a.execute("CREATE INDEX t_v ON t USING vidx (v) WITH (lists = 1)")
    check_count("CREATE INDEX with max_parallel_maintenance_workers = 0 (build_threads 0 = that + 1)",
                apid, 1)
    a.execute("SET vidx.build_threads = 3")
    a.execute("REINDEX INDEX t_v")
    build = min(3, CPUS)
    check_count(f"REINDEX with vidx.build_threads = 3 on {CPUS} CPUs", apid, build)
    want = run(a, QUERY)[0]
    a.execute("SET vidx.scan_threads = 64")
    got = run(a, QUERY)[0]
    check("a scan on 64 asked threads (vidx.max_scan_threads = 2) returns the same rows", got == want)
    check_count("then (2 scan threads at most)", apid, max(build, 2))
    check_blocked("after the build and the scan", apid)

    for sig in (signal.SIGUSR1, signal.SIGHUP, signal.SIGUSR1):
        os.kill(apid, sig)
        time.sleep(0.1)  # not a check: only lets the signal arrive while the session is idle
        check(f"after kill -{sig.name[3:]} the session answers the same rows", run(a, QUERY)[0] == want)
    check("the backend is the same process", run(a, "SELECT pg_backend_pid()")[0] == apid)

    b, bpid = connect()
    b.execute("SET enable_seqscan = off")
    b.execute("SET vidx.scan_threads = 64")
    check("a new backend's scan on 64 asked threads returns the same rows", run(b, QUERY)[0] == want)
    check_count("that backend (vidx.max_scan_threads = 2)", bpid, 2)
    check_blocked("that backend", bpid)
    a.execute("ALTER SYSTEM SET vidx.max_scan_threads = 3")
    run(a, "SELECT pg_reload_conf()")
    deadline = time.time() + 30
    while run(b, "SHOW vidx.max_scan_threads")[0] != "3" and time.time() < deadline:
        time.sleep(0.2)
    check("the reload reaches the backend", run(b, "SHOW vidx.max_scan_threads")[0] == "3")
    check("its next scan returns the same rows", run(b, QUERY)[0] == want)
    check_count("and uses 3 threads (vidx.max_scan_threads = 3 after the reload)", bpid, 3)
    check_blocked("that backend", bpid)
    try:
        b.execute("SET vidx.max_scan_threads = 64")
        check("SET vidx.max_scan_threads is refused in a session", False)
    except psycopg.errors.CantChangeRuntimeParam:
        check("SET vidx.max_scan_threads is refused in a session (55P02)", True)
    a.execute("ALTER SYSTEM RESET vidx.max_scan_threads")


try:
    main()
except Exception as e:  # a check that could not run is a failed check
    check(f"the session driver ran to the end ({e!r})", False)
PY
)
check "no backend died of a signal" log_clean $NAME
finish
