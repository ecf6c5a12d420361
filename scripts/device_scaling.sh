#!/usr/bin/env bash
# 1 GPU vs 2 GPUs side by side in one device call (nvidia-h200-x2), without the gate's reference
# run: the same synthetic workload and models, an untimed warm-up on 2 GPUs (compile caches of both
# GPUs, as the gate does), then the outputs compared byte for byte.
#     READS=250000 bash scripts/device_scaling.sh        # carry .whl
set -u
source scripts/device_setup.sh || exit 1
O=${OUT:-/tmp/scaling-out}; mkdir -p "$O"
{
python3 -m virnucpro models synth --preset full --out /tmp/models --device cuda 2>&1 | tail -1
python3 -m virnucpro reads synth --n "${READS:-250000}" --seed 1 -o /tmp/reads.fa
head -4000 /tmp/reads.fa > /tmp/warm.fa
t=$(date +%s%N)
python3 -m virnucpro predict /tmp/warm.fa -o /tmp/warm --models /tmp/models --gpus 2 --no-progress > /tmp/warm.out 2>&1
echo "warm-up (2 GPUs, 2,000 reads): exit $? wall $(( ($(date +%s%N) - t) / 1000000 )) ms"
for g in 1 2; do
  t=$(date +%s%N)
  python3 -m virnucpro predict /tmp/reads.fa -o /tmp/g$g --models /tmp/models --gpus $g --no-progress > /tmp/g$g.out 2>&1
  echo "gpus $g: exit $? wall $(( ($(date +%s%N) - t) / 1000000 )) ms"
  grep -h '"summary"' /tmp/g$g/virnucpro.log | sed 's/.*TELEMETRY //' | python3 -c "
import json,sys; s=json.loads(sys.stdin.read())
print({k: s.get(k) for k in ('wall_s','embed_wall_s','esm_tokens_per_s','mfu_esm','gpu_util_mean','packing_efficiency','n_workers','units_per_worker','busy_s_per_worker','load_imbalance','workers_lost','peak_gpu_mem_gib')})
print('stages', s.get('stages'))"
  grep -h '"event": "\(token_budget\|workers_spawned\|worker_start\)"\|"stage": "load_models"' /tmp/g$g/virnucpro.log | sed 's/.*TELEMETRY //' | cut -c1-520
  grep -h "Traceback\|Error\|died" /tmp/g$g/virnucpro.log | head -5
  cp /tmp/g$g/virnucpro.log "$O/g$g.log"
done
for f in prediction_results.txt prediction_results_highestscore.csv read_summary.tsv; do
  cmp -s /tmp/g1/$f /tmp/g2/$f && echo "$f: 2 GPUs identical to 1 GPU" || echo "$f: DIFFERS"
done
} 2>&1 | tee "$O/scaling.log"
