#!/usr/bin/env bash
# Issue 3 on ONE GPU in one device call (~8 min on nvidia-h200; carry .whl):
#   1. the gate on the issue's 100,000-read workload (= READS=100000 bash scripts/device_signoff.sh:
#      MFU, utilisation, packing, the 1M-read projection, speedup and agreement with the reference engine)
#   2. the same 100,000 reads with ESM-2's residual stream in fp16 (VIRNUCPRO_ESM_RESIDUAL=half) beside
#      a default run: ESM-2 tok/s, MFU, utilisation, and the labels of the two compared
#   3. a torch.profiler trace of batches 20-49 of the default run (where the GPU waits at unit ends)
# The gate's files are copied to $OUT by device_signoff.sh; the rest goes to $OUT/issue3.log and
# $OUT/units.*.json.gz (at most 8 files come back in all: the gate's 7 + 2 here may exceed that with 2
# GPUs, so run this on nvidia-h200).
set -u
READS=100000 bash scripts/device_signoff.sh
rc=$?
source scripts/device_setup.sh > /dev/null || exit 1
O=${OUT:-/tmp/issue3-out}; mkdir -p "$O"
W=/root/.cache/virnucpro/gate/reads-respiratory-n100000-s1.fa
summary() {
  grep -h '"event": "summary"' "$1/virnucpro.log" | sed 's/.*TELEMETRY //' | python3 -c "
import json,sys; s=json.loads(sys.stdin.read())
print('  wall', s['wall_s'], 'ESM tok/s', s['esm_tokens_per_s'], 'MFU', round(s['mfu_esm'], 4), 'util', round(s['gpu_util_mean'], 2),
      'stages', s['stages'])"
}
for run in fp32res halfres profiled; do
  case $run in
    halfres)  env="VIRNUCPRO_ESM_RESIDUAL=half" ;;
    profiled) env="VIRNUCPRO_TORCH_PROFILE=$O/units.json:20:30" ;;
    *)        env="" ;;
  esac
  t=$(date +%s%N)
  env $env python3 -m virnucpro predict $W -o /tmp/$run --models /tmp/models --no-progress > /tmp/$run.out 2>&1
  echo "== $run ($env): exit $? process wall $(( ($(date +%s%N) - t) / 1000000 )) ms" | tee -a "$O/issue3.log"
  summary /tmp/$run | tee -a "$O/issue3.log"
done
echo "== labels, fp16 residual vs fp32 residual:" | tee -a "$O/issue3.log"
python3 -m virnucpro compare /tmp/fp32res /tmp/halfres --min-agreement 0.999 2>&1 | tail -8 | tee -a "$O/issue3.log"
ls -la "$O" | tee -a "$O/issue3.log"
exit $rc
