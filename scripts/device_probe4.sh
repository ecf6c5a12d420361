#!/usr/bin/env bash
# Fifth-session probe 2 (~6 min on nvidia-h200-x2; carry .whl): full synthetic models, then
#   1. scripts/esm_microbench.py --kernels: torch.compile vs the Triton kernels (padded, unpadded), fp16,
#      GELU epilogue, one process, same batches; profile of one batch each
#   2. scripts/device_timeline2.sh: 3,000-read warm-up on 2 GPUs, 100,000 reads on 2 GPUs and on 1
#      (the new default: Triton kernels, unpadded batches, staged weight copy)
#   3. the same 100,000 reads on 2 GPUs with VIRNUCPRO_WEIGHT_COPY=direct (the weight copy side by side)
set -u
source scripts/device_setup.sh > /dev/null || exit 1
O=${OUT:-/tmp/probe4-out}; mkdir -p "$O"
{
python3 -c "import triton; print('triton', triton.__version__)"
python3 -m virnucpro models synth --preset full --out /tmp/models --device cuda 2>&1 | tail -1
echo "== esm_microbench --kernels"
python3 scripts/esm_microbench.py --models /tmp/models --dtype fp16 --budgets 65536 --kernels compile,triton,triton-nopad --profile
} 2>&1 | tee "$O/probe.log"
bash scripts/device_timeline2.sh
echo "== --gpus 2, VIRNUCPRO_WEIGHT_COPY=direct" | tee -a "$O/probe.log"
t=$(date +%s%N)
VIRNUCPRO_WEIGHT_COPY=direct python3 -m virnucpro predict /tmp/t.fa -o /tmp/t2d --models /tmp/models --gpus 2 --no-progress > /tmp/t2d.out 2>&1
echo "exit $? process wall $(( ($(date +%s%N) - t) / 1000000 )) ms" | tee -a "$O/probe.log"
grep -h '"event": "worker_start"' /tmp/t2d/virnucpro.log | sed 's/.*TELEMETRY //' | cut -c1-700 | tee -a "$O/probe.log"
cmp /tmp/t2/prediction_results.txt /tmp/t2d/prediction_results.txt && echo "direct copy: prediction_results.txt identical" | tee -a "$O/probe.log"
cp /tmp/t2d/virnucpro.log "$O/timeline-g2-direct.log"
