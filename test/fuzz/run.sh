#!/usr/bin/env bash
# test/fuzz/run.sh: builds the libFuzzer targets over the core's decoders and
# parsers (clang++-14, AddressSanitizer + UndefinedBehaviorSanitizer), writes
# seed corpora with seedgen, and runs each target for a bounded time.
#
#   test/fuzz/run.sh [SECONDS_PER_TARGET]     (default $VIDX_FUZZ_SECONDS or 45)
#
# Output in build/fuzz/; a crash leaves build/fuzz/crash-<target>-* and makes
# the script exit non-zero. Targets:
#   fuzz_tree     vidx_tree_check on arbitrary blobs, then tree search if accepted
#   fuzz_sidecar  vidx_sidecar_header_check, vidx_sidecar_record_vector
#   fuzz_rabitq   vidx_query_prep_refined + vidx_rabitq_estimate on arbitrary postings
set -uo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
SECS=${1:-${VIDX_FUZZ_SECONDS:-45}}
OUT=build/fuzz
CXX=${CXX_FUZZ:-clang++-14}
mkdir -p "$OUT/obj"
FLAGS="-std=c++17 -O1 -g -pthread -fsanitize=address,undefined -fno-sanitize-recover=undefined -Wno-unknown-pragmas"
for src in src/core/*.cpp; do
	o=$OUT/obj/$(basename "$src" .cpp).o
	if [ ! -f "$o" ] || [ "$src" -nt "$o" ] || [ src/core/vidx_core.h -nt "$o" ]; then
		$CXX $FLAGS -fsanitize=fuzzer-no-link -c "$src" -o "$o" || exit 2
	fi
done
$CXX $FLAGS test/fuzz/seedgen.cpp "$OUT"/obj/*.o -o "$OUT/seedgen" || exit 2
rc=0
for t in fuzz_tree fuzz_sidecar fuzz_rabitq; do
	$CXX $FLAGS -fsanitize=fuzzer "test/fuzz/$t.cpp" "$OUT"/obj/*.o -o "$OUT/$t" || exit 2
done
for d in tree sidecar rabitq; do mkdir -p "$OUT/corpus/$d"; done
"$OUT/seedgen" "$OUT/corpus" >/dev/null || exit 2
for t in fuzz_tree fuzz_sidecar fuzz_rabitq; do
	c=$OUT/corpus/${t#fuzz_}
	start=$(date +%s)
	# -seed fixed: the same inputs every run (deterministic); -timeout: a hang is a failure
	if timeout $((SECS + 120)) "$OUT/$t" "$c" -seed=1 -max_total_time="$SECS" -timeout=20 \
		-rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -artifact_prefix="$OUT/crash-$t-" \
		>"$OUT/$t.log" 2>&1; then
		runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/$t.log")
		echo "ok - $t: no crash, no hang in ${SECS}s ($runs inputs, corpus $(ls "$c" | wc -l))"
	else
		rc=1
		echo "not ok - $t: failure after $(($(date +%s) - start))s; log $OUT/$t.log"
		grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$OUT/$t.log" | head -8 | sed 's/^/#   /'
	fi
done
exit $rc
