#!/usr/bin/env bash
# One device call (nvidia-h200): ESM-2 kernel-grouping variants side by side (with VARIANTS=a,b,...,
# e.g. base,v_view,chain+v_view,chain+v_view+halfres), then the issue-4 GPU
# checks (one worker, two workers sharing the GPU, --gpus all, forced out-of-memory back-off).
# Results under $OUT (study.log, checks.log, the logs of the runs).
set -u
source scripts/device_setup.sh || exit 1
O=${OUT:-/tmp/study-out}; mkdir -p "$O"
python3 -m virnucpro models synth --preset full --out /tmp/models --device cuda 2>&1 | tail -1
[ -n "${VARIANTS:-}" ] && python3 scripts/esm_microbench.py --models /tmp/models --dtype fp16 --compile \
    --budgets 65536 --profile --variants "$VARIANTS" 2>&1 | tee "$O/study.log" | grep variant
{
python3 -m virnucpro reads synth --n 20000 --seed 3 -o /tmp/r20k.fa
P="python3 -m virnucpro predict --models /tmp/models --no-progress"
timed() { local n=$1; shift; local t=$(date +%s%N); "$@"; echo "$n wall $(( ($(date +%s%N) - t) / 1000000 )) ms"; }
for cfg in "g1:--gpus 1" "w2:--workers 2" "gall:--gpus all"; do
  name=${cfg%%:*}; args=${cfg#*:}
  timed $name $P /tmp/r20k.fa -o /tmp/$name $args 2>&1 | grep -E "wall|scaling|rror|units"
  grep -h '"worker_summary"' /tmp/$name/virnucpro.log | sed 's/.*TELEMETRY //' | cut -c1-220
done
for name in w2 gall; do
  for f in prediction_results.txt prediction_results_highestscore.csv; do
    cmp -s /tmp/g1/$f /tmp/$name/$f && echo "$name $f identical to g1" || echo "$name $f DIFFERS from g1"
  done
done
python3 -m virnucpro reads synth --n 3000 --seed 4 -o /tmp/r3k.fa
timed oom $P /tmp/r3k.fa -o /tmp/oom --token-budget 262144 --gpu-memory-gib 24 2>&1 | grep -vi "^ *$" | tail -8
grep -h '"oom"\|peak_gpu_mem' /tmp/oom/virnucpro.log | sed 's/.*TELEMETRY //' | cut -c1-200 | head -8
$P /tmp/r3k.fa -o /tmp/oomref --gpus 1 >/dev/null 2>&1
python3 -m virnucpro compare /tmp/oomref /tmp/oom 2>&1 | head -12
cp /tmp/g1/virnucpro.log "$O/g1.log"; cp /tmp/w2/virnucpro.log "$O/w2.log"; cp /tmp/oom/virnucpro.log "$O/oom.log"
} 2>&1 | tee "$O/checks.log"
