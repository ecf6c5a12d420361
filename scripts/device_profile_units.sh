#!/usr/bin/env bash
# Where the GPU waits at 100,000 reads (docs/benchmarks.md H200-28: NVML utilisation dips to 20-40% at
# unit ends), in ONE device call on nvidia-h200 (~3 min; carry .whl):
#   1. the gate's 100,000 reads once plainly (its utilisation samples under 95%, its unit completions),
#   2. the same with VIRNUCPRO_TORCH_PROFILE: a torch.profiler trace of batches 20-49 (two or three
#      unit boundaries; Chrome trace format, gzipped) to $OUT -- open it in chrome://tracing or Perfetto.
set -u
source scripts/device_setup.sh > /dev/null || exit 1
O=${OUT:-/tmp/profile-out}; mkdir -p "$O"
python3 -m virnucpro models synth --preset full --out /tmp/models --device cuda 2>&1 | tail -1
W=/tmp/reads100k.fa
python3 -m virnucpro reads synth --n 100000 --seed 1 --length-profile respiratory -o $W > /dev/null
python3 -m virnucpro predict $W -o /tmp/warm --models /tmp/models --no-progress > /dev/null 2>&1   # caches
for run in plain profiled; do
  env=""; [ $run = profiled ] && env="VIRNUCPRO_TORCH_PROFILE=$O/units.json:${FIRST:-20}:${COUNT:-30}"
  env $env python3 -m virnucpro predict $W -o /tmp/$run --models /tmp/models --no-progress > /tmp/$run.out 2>&1
  echo "== $run: exit $?"
  cp /tmp/$run/virnucpro.log "$O/$run.log"
  python3 - /tmp/$run/virnucpro.log <<'PY'
import json, sys
ev = [json.loads(l.split("TELEMETRY ", 1)[1]) for l in open(sys.argv[1]) if "TELEMETRY {" in l]
s = next(e for e in ev if e["event"] == "summary")
print("  wall", s["wall_s"], "util", round(s["gpu_util_mean"] or 0, 1), "stages", s["stages"])
print("  samples < 95%:", [(round(e["t"], 2), e["util_pct"]) for e in ev if e["event"] == "gpu_sample" and e["util_pct"] < 95])
print("  units done:", [(round(e["t"], 2), e["unit"]) for e in ev if e["event"] == "unit_done"][:10])
PY
done
ls -la "$O"
