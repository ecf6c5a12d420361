#!/usr/bin/env bash
# Nightly performance gate on a GPU runner (see docs/perf-gate.md).
#
#   perf_tests/nightly.sh                      # rtx4090 profile, synthetic workload and models
#   GATE_MARKER=gpuh200 perf_tests/nightly.sh  # H200 profile
#
# Environment (all optional):
#   GATE_MARKER                gpu4090 (default) or gpuh200: selects the profile's tests
#   VIRNUCPRO_GATE_WORKLOAD    real input FASTA (default: the profile's synthetic workload)
#   VIRNUCPRO_GATE_MODELS      real model directory (default: synthetic full-size models)
#   VIRNUCPRO_GATE_BASELINE    real v1.0 output directory for the correctness criterion
#   VIRNUCPRO_GATE_READS       synthetic workload size (default: the profile's)
#   VIRNUCPRO_GATE_CACHE       cache for synthetic models/workloads (default ~/.cache/virnucpro/gate)
#   GATE_BENCH_STORAGE         pytest-benchmark history (default ~/.cache/virnucpro/bench-history)
#   GATE_REGRESSION            allowed wall-time regression vs the last saved night (default mean:10%)
#   GATE_MAX_REGRESSION        allowed move of any criterion's figure vs the last good night's
#                              results.json, in percent (default 10)
#   GATE_LAST_RESULTS          where that results.json is kept (default ~/.cache/virnucpro/gate-last-good-results.json)
#
# Exit status: 0 when every criterion passed, every configuration ran, and neither the wall time
# nor any criterion's figure regressed; non-zero otherwise (pytest's status). The report is in
# $OUT/report.md whatever happens; it says which criterion moved since the last night.
set -euo pipefail
cd "$(dirname "$0")/.."

marker="${GATE_MARKER:-gpu4090}"
storage="${GATE_BENCH_STORAGE:-$HOME/.cache/virnucpro/bench-history}"
regression="${GATE_REGRESSION:-mean:10%}"
max_regression="${GATE_MAX_REGRESSION:-10}"
last="${GATE_LAST_RESULTS:-$HOME/.cache/virnucpro/gate-last-good-results.json}"
out="${GATE_OUT:-gate-out/nightly-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$storage" "$out"
export NCCL_NVLS_ENABLE=0   # keep NVLink multicast off on multi-GPU hosts

args=(perf_tests -m "$marker" --gate-out "$out"
      --benchmark-storage "file://$storage" --benchmark-autosave
      --benchmark-json "$out/benchmark.json")
# The last good night's results.json: the report says which criterion moved, and a figure that moved
# the wrong way by more than $max_regression percent fails the session.
if [ -f "$last" ]; then
    args+=(--gate-previous "$last" --gate-max-regression "$max_regression")
fi
# Compare with the last saved night once there is one; a wall-time regression beyond
# $regression fails the session (pytest-benchmark marks the benchmark test failed).
if find "$storage" -name '*.json' -print -quit | grep -q .; then
    args+=(--benchmark-compare --benchmark-compare-fail "$regression")
fi

status=0
python -m pytest "${args[@]}" "$@" || status=$?
# only a good night becomes the reference, so that a regression cannot ratchet it
if [ "$status" -eq 0 ] && [ -f "$out/results.json" ]; then cp "$out/results.json" "$last"; fi
echo "performance gate report: $out/report.md (exit $status)"
exit "$status"
