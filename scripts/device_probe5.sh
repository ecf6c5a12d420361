#!/usr/bin/env bash
# Fifth-session probe 3 (~3.5 min on nvidia-h200-x2; carry .whl): full synthetic models, then
# scripts/device_timeline2.sh (3,000-read warm-up on 2 GPUs; 100,000 reads on 2 GPUs and on 1) with
# DNABERT-S loading and warming in a thread beside ESM-2's weight copy, the unit-boundary and
# garbage-collector changes: start-up phases, utilisation, process walls against H200-21.
set -u
source scripts/device_setup.sh > /dev/null || exit 1
O=${OUT:-/tmp/probe5-out}; mkdir -p "$O"
python3 -m virnucpro models synth --preset full --out /tmp/models --device cuda 2>&1 | tail -1 | tee "$O/probe.log"
bash scripts/device_timeline2.sh
for g in 1 2; do
  grep -h '"event": "summary"' /tmp/t$g/virnucpro.log | sed 's/.*TELEMETRY //' | python3 -c "
import json,sys; s=json.loads(sys.stdin.read()); print('gpus $g: util', s.get('gpu_util_mean'), 'mfu', s.get('mfu_esm'))" | tee -a "$O/probe.log"
done
