#!/usr/bin/env bash
# Fifth-session probe (~5 min on nvidia-h200-x2; carry .whl): full synthetic models, then
#   1. scripts/gemm_bench.py: ESM-2's GEMM shapes (linear / pre-transposed / GELU epilogue / TunableOp)
#   2. scripts/device_timeline2.sh: 3,000-read warm-up on 2 GPUs, 100,000 reads on 2 GPUs and on 1
#      (start-up phases: staged weight copy, kernels compiled beside the copy)
#   3. the same 100,000 reads on 2 GPUs with VIRNUCPRO_WEIGHT_COPY=direct (the old copy), for the
#      side-by-side figure of the weight copy
set -u
source scripts/device_setup.sh > /dev/null || exit 1
O=${OUT:-/tmp/probe3-out}; mkdir -p "$O"
{
python3 -m virnucpro models synth --preset full --out /tmp/models --device cuda 2>&1 | tail -1
echo "== gemm_bench"
python3 scripts/gemm_bench.py --seconds 1.5
} 2>&1 | tee "$O/probe.log"
bash scripts/device_timeline2.sh
echo "== --gpus 2, VIRNUCPRO_WEIGHT_COPY=direct" | tee -a "$O/probe.log"
t=$(date +%s%N)
VIRNUCPRO_WEIGHT_COPY=direct python3 -m virnucpro predict /tmp/t.fa -o /tmp/t2d --models /tmp/models --gpus 2 --no-progress > /tmp/t2d.out 2>&1
echo "exit $? process wall $(( ($(date +%s%N) - t) / 1000000 )) ms" | tee -a "$O/probe.log"
grep -h '"event": "worker_start"' /tmp/t2d/virnucpro.log | sed 's/.*TELEMETRY //' | cut -c1-700 | tee -a "$O/probe.log"
cp /tmp/t2d/virnucpro.log "$O/timeline-g2-direct.log"
