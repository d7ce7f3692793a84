#!/usr/bin/env bash
# 70_fuzz: libFuzzer over the core's decoders and parsers (test/fuzz/run.sh),
# VIDX_FUZZ_SECONDS (default 45) per target: no crash, no sanitizer report, no hang.
source "$(dirname "$(readlink -f "$0")")/lib.sh"
out=$("$ROOT/test/fuzz/run.sh" "${VIDX_FUZZ_SECONDS:-45}" 2>&1)
rc=$?
echo "$out"
[ $rc = 0 ] && ok "all fuzz targets ran clean" || not_ok "fuzzing found a problem (exit $rc)"
finish
