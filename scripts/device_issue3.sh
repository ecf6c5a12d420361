#!/usr/bin/env bash
# Issue 3 on ONE GPU in one device call (~8 min on nvidia-h200; carry .whl):
#   1. the gate on the issue's 100,000-read workload (= READS=100000 bash scripts/device_signoff.sh:
#      MFU, utilisation, packing, the 1M-read projection, speedup and agreement with the reference engine)
#   2. DNABERT-S's attention backends side by side (scripts/dna_attention.py: cuDNN's per-shape plans);
#      with STUDY=1 (the default) the embedding cosine of the GPU path against fp32 (precision_study.py,
#      3,000 reads; ~1 min)
#   3. RUNS (default "default saveemb default") more runs of the same 100,000 reads: "default" as a user
#      runs it (utilisation run to run), "saveemb" with --save-embeddings (its cost beside the default
#      runs; ~1 GB of features), "halfres" with ESM-2's residual stream in fp16
#      (VIRNUCPRO_ESM_RESIDUAL=half; its labels compared with the first default run's), "profiled" with a
#      torch.profiler trace of batches 20-49 ($OUT/units.*.json.gz)
# The gate's files are copied to $OUT by device_signoff.sh (7 with one GPU); the rest goes to
# $OUT/issue3.log (at most 8 files come back: run this on nvidia-h200, "profiled" adds one more).
set -u
READS=100000 bash scripts/device_signoff.sh
rc=$?
source scripts/device_setup.sh > /dev/null || exit 1
O=${OUT:-/tmp/issue3-out}; mkdir -p "$O"
W=/root/.cache/virnucpro/gate/reads-respiratory-n100000-s1.fa
echo "== DNABERT-S attention backends (scripts/dna_attention.py):" | tee -a "$O/issue3.log"
python3 scripts/dna_attention.py --models /tmp/models 2>&1 | tail -4 | tee -a "$O/issue3.log"
if [ "${STUDY:-1}" = 1 ]; then   # embedding cosine of the GPU path (the "-fast" DNABERT-S rows) vs fp32, 3,000 reads
  echo "== precision study (scripts/precision_study.py, 3,000 reads):" | tee -a "$O/issue3.log"
  python3 -m virnucpro reads synth --n 3000 --seed 21 --length-profile respiratory -o /tmp/p3k.fa > /dev/null
  python3 scripts/precision_study.py --models /tmp/models --reads /tmp/p3k.fa --n-reads 3000 \
      --kernels triton --gelu-epilogue 2>&1 | tail -25 | tee -a "$O/issue3.log"
fi
summary() {
  grep -h '"event": "summary"' "$1/virnucpro.log" | sed 's/.*TELEMETRY //' | python3 -c "
import json,sys; s=json.loads(sys.stdin.read())
print('  wall', s['wall_s'], 'ESM tok/s', s['esm_tokens_per_s'], 'MFU', round(s['mfu_esm'], 4), 'util', round(s['gpu_util_mean'], 2),
      'stages', s['stages'])"
}
n=0
for run in ${RUNS:-default saveemb default}; do
  n=$((n + 1))
  args=""
  case $run in
    halfres)  env="VIRNUCPRO_ESM_RESIDUAL=half" ;;
    profiled) env="VIRNUCPRO_TORCH_PROFILE=$O/units.json:20:30" ;;
    saveemb)  env=""; args="--save-embeddings" ;;
    *)        env="" ;;
  esac
  t=$(date +%s%N)
  env $env python3 -m virnucpro predict $W -o /tmp/run$n-$run --models /tmp/models --no-progress $args > /tmp/run$n.out 2>&1
  echo "== run $n $run ($env$args): exit $? process wall $(( ($(date +%s%N) - t) / 1000000 )) ms" | tee -a "$O/issue3.log"
  [ -n "$args" ] && tail -4 /tmp/run$n.out | grep -i embeddings | tee -a "$O/issue3.log"
  summary /tmp/run$n-$run | tee -a "$O/issue3.log"
done
if [ -d /tmp/run1-default ] && ls -d /tmp/run*-halfres > /dev/null 2>&1; then
  echo "== labels, fp16 residual vs fp32 residual (run1-default):" | tee -a "$O/issue3.log"
  python3 -m virnucpro compare /tmp/run1-default /tmp/run*-halfres --min-agreement 0.999 2>&1 | grep -v '^  read' | tee -a "$O/issue3.log"
fi
ls -la "$O" | tee -a "$O/issue3.log"
exit $rc
