#!/usr/bin/env bash
# Where the start-up of a run goes (issue 6): the fixed cost F that keeps 2 GPUs from 2x. One device
# call on nvidia-h200-x2, ~4 min:
#     bash scripts/device_startup.sh        # carry .whl
# Runs READS (20,000) reads on 2 GPUs (cold compile caches, then warm; fork server, then spawn) and
# on 1 GPU, and prints each run's start-up events (token budget, workers spawned, per-worker phases).
set -u
source scripts/device_setup.sh || exit 1
O=${OUT:-/tmp/startup-out}; mkdir -p "$O"
{
python3 -m virnucpro models synth --preset full --out /tmp/models --device cuda 2>&1 | tail -1
python3 -m virnucpro reads synth --n "${READS:-20000}" --seed 1 -o /tmp/reads.fa
python3 - <<'PY'
import time; t = time.perf_counter()
import torch; t1 = time.perf_counter()
torch.cuda.mem_get_info(0); t2 = time.perf_counter()
import pynvml; pynvml.nvmlInit(); pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)); t3 = time.perf_counter()
print(f"import torch {t1-t:.2f} s; first mem_get_info (CUDA context) {t2-t1:.2f} s; NVML free memory {t3-t2:.3f} s")
PY
run() {  # name, start method, gpus
  t=$(date +%s%N)
  VIRNUCPRO_START_METHOD=$2 python3 -m virnucpro predict /tmp/reads.fa -o /tmp/s_$1 --models /tmp/models --gpus $3 --no-progress > /tmp/s_$1.out 2>&1
  echo "== $1 ($2, $3 GPU): exit $? wall $(( ($(date +%s%N) - t) / 1000000 )) ms"
  grep -h '"event": "\(run_start\|token_budget\|workers_spawned\|worker_start\|units\|worker_summary\)"\|"stage": "load_models"' /tmp/s_$1/virnucpro.log \
    | sed 's/.*TELEMETRY //' | python3 -c "
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    keep = {k: e[k] for k in ('event','t','worker','tokens','decided_s','startup_s','entered_t','engine_s','phases','wall_s','load_total_s','busy_s') if k in e}
    print(' ', keep)"
  grep -h '"summary"' /tmp/s_$1/virnucpro.log | sed 's/.*TELEMETRY //' | python3 -c "
import json,sys; s=json.loads(sys.stdin.read())
print('  summary', {k: s.get(k) for k in ('wall_s','embed_wall_s','esm_tokens_per_s','mfu_esm','gpu_util_mean','load_imbalance','workers_lost')})"
  grep -h "Traceback\|Error\|died" /tmp/s_$1/virnucpro.log /tmp/s_$1.out | head -5
  cp /tmp/s_$1/virnucpro.log "$O/$1.log"
}
run g2cold forkserver 2
run g2warm forkserver 2
run g2spawn spawn 2
run g1warm forkserver 1
run g2warm2 forkserver 2
for f in prediction_results.txt prediction_results_highestscore.csv read_summary.tsv; do
  cmp -s /tmp/s_g1warm/$f /tmp/s_g2warm/$f && echo "$f: 2 GPUs identical to 1 GPU" || echo "$f: DIFFERS"
done
} 2>&1 | tee "$O/startup.log"
