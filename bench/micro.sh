#!/usr/bin/env bash
# Micro-benchmarks of the vidx core (Google Benchmark, bench/micro/core_bench.cpp):
#
#   bench/micro.sh [--report-only] [--tree] [extra Google Benchmark flags, e.g. --benchmark_filter=BM_estimate]
#
# Builds the committed HEAD (git archive into a temporary directory, so other
# people's uncommitted changes do not leak into the figures; --tree builds the
# working tree instead) with CMake in Release, runs core_bench with 3
# repetitions (medians reported), and writes bench/results/micro/core_bench.json
# (Google Benchmark's JSON, with its context: CPU, caches, load) plus
# results.md: per benchmark the median time, items/s and bytes/s, and for the
# code scan its bytes/s as a fraction of BM_memread (one core's read bandwidth).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
REPO=$PWD
OUT=$REPO/bench/results/micro
mkdir -p "$OUT"
SRC=$REPO
REPORT_ONLY=0
if [ "${1:-}" = "--report-only" ]; then # redo results.md from core_bench.json
	REPORT_ONLY=1
	shift
fi
if [ "${1:-}" = "--tree" ]; then
	shift
	REV="$(git rev-parse --short HEAD)+tree"
else
	REV=$(git rev-parse --short HEAD)
	if [ $REPORT_ONLY = 0 ]; then
		SRC=$(mktemp -d /tmp/vidx-micro-src.XXXXXX)
		git archive HEAD | tar -x -C "$SRC"
	fi
fi
if [ $REPORT_ONLY = 0 ]; then
BUILD=${VIDX_MICRO_BUILD:-/tmp/vidx-micro-build}
rm -rf "$BUILD"
echo "== building core_bench from $SRC ($REV) in $BUILD"
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DVIDX_SANITIZE=OFF >"$BUILD.cmake.log" 2>&1 ||
	{ tail -30 "$BUILD.cmake.log"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" --target core_bench >"$BUILD.build.log" 2>&1 ||
	{ tail -30 "$BUILD.build.log"; exit 1; }
echo "== running core_bench (3 repetitions; a few minutes)"
"$BUILD/core_bench" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
	--benchmark_out="$OUT/core_bench.json" --benchmark_out_format=json \
	--benchmark_context=commit="$REV" \
	--benchmark_context=cpu_model="$(lscpu | sed -n 's/^Model name: *//p')" \
	--benchmark_context=ram="$(free -g | awk '/Mem:/{print $2}') GiB" \
	--benchmark_context=threads="${VIDX_THREADS:-$(nproc)}" "$@"
fi
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
j = json.load(open(os.path.join(out, "core_bench.json")))
ctx = j["context"]
med = [b for b in j["benchmarks"] if b.get("aggregate_name") == "median"]
bw = next((b["bytes_per_second"] * b["cpu_time"] / b["real_time"] for b in med
           if b["run_name"].startswith("BM_memread")), None)
L = ["# vidx core micro-benchmarks (Google Benchmark, medians of 3)", "",
     f"Machine: {ctx.get('cpu_model')}, {ctx.get('num_cpus')} CPUs at {ctx.get('mhz_per_cpu')} MHz, "
     f"RAM {ctx.get('ram')}; caches: " + ", ".join(f"L{c['level']} {c['type'][0]} {c['size'] // 1024} KiB"
                                                for c in ctx.get("caches", [])) +
     f"; load average {', '.join(f'{x:.1f}' for x in ctx.get('load_avg', []))}; commit {ctx.get('commit')}; "
     f"{ctx.get('date')}; threads {ctx.get('threads', ctx.get('omp_threads'))}.",
     "Command: `bench/micro.sh`.", "",
     "| benchmark | wall time | items/s (wall) | bytes/s (wall) | vs memread |", "|---|---|---|---|---|"]
def fmt(x, unit=""):
    if x is None: return ""
    for s, d in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= d: return f"{x / d:.2f} {s}{unit}"
    return f"{x:.1f} {unit}"
for b in med:
    t = f"{b['real_time']:.3g} {b['time_unit']}"
    # Google Benchmark's rates are per CPU second of the main thread: wrong for
    # the multi-threaded k-means/assignment. Rates here are per wall-clock second.
    scale = b["cpu_time"] / b["real_time"] if b.get("real_time") else 1.0
    ips = b.get("items_per_second")
    bps = b.get("bytes_per_second")
    ips = ips * scale if ips else ips
    bps = bps * scale if bps else bps
    rel = f"{bps / bw:.2f}x" if (bw and bps and b["run_name"].startswith("BM_estimate")) else ""
    L.append(f"| {b['run_name']} | {t} | {fmt(ips)} | {fmt(bps, 'B/s')} | {rel} |")
L += ["", "BM_estimate/D/N: N codes of D dims scanned per iteration (items = codes, bytes = "
      "postings incl. the 32-byte header); BM_memread/256: one core summing 256 MiB; "
      "BM_kmeans/D/K/N: 5 Lloyd iterations (items = N x K x 5 distance evaluations); "
      "BM_assign/D/K/N: nearest of K centroids for N points (items = N x K)."]
open(os.path.join(out, "results.md"), "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
echo "== results in bench/results/micro/ (core_bench.json, results.md)"
