#!/usr/bin/env bash
# One device call (nvidia-h200-x2, ~6 min; carry .whl): (1) the smallest 2-GPU check (do workers
# start?), (2) the pipeline on 100,000 reads three times on one GPU: as is, with DNABERT-S compiled
# (VIRNUCPRO_DNABERT_COMPILE=1), with the fc1 GEMM's GELU epilogue (VIRNUCPRO_ESM_GELU=tanh-epilogue),
# and how far each one's outputs are from the first. Logs under $OUT.
set -u
O=${OUT:-/tmp/probe-out}; mkdir -p "$O"
bash scripts/device_quick2.sh 2>&1 | tee "$O/quick2.log"
source scripts/device_setup.sh > /dev/null || exit 1
python3 -m virnucpro models synth --preset full --out /tmp/models --device cuda 2>&1 | tail -1
python3 -m virnucpro reads synth --n 100000 --seed 11 -o /tmp/r100k.fa > /dev/null
P="python3 -m virnucpro predict /tmp/r100k.fa --models /tmp/models --gpus 1 --no-progress"
{
for cfg in "base:" "dnacompile:VIRNUCPRO_DNABERT_COMPILE=1" "geluep:VIRNUCPRO_ESM_GELU=tanh-epilogue"; do
  name=${cfg%%:*}; envs=${cfg#*:}
  t=$(date +%s%N); env $envs $P -o /tmp/p_$name > /tmp/p_$name.out 2>&1; rc=$?
  echo "== $name ($envs) exit $rc, process wall $(( ($(date +%s%N) - t) / 1000000 )) ms"
  grep -h '"event": "summary"' /tmp/p_$name/virnucpro.log | sed 's/.*TELEMETRY //' | python3 -c "
import json,sys; s=json.loads(sys.stdin.read()); st=s['stages']
print('  wall %.1f s, esm %.0f tok/s, mfu %.4f, util %.1f, dnabert %.2f s, esm %.2f s, load %.2f s, write %.2f s' % (
  s['wall_s'], s['esm_tokens_per_s'], s['mfu_esm'], s['gpu_util_mean'], st['embed_dnabert'], st['embed_esm'], st.get('load_models', 0), st['write']))"
  grep -h "Traceback\|Error" /tmp/p_$name.out | head -3
done
for name in dnacompile geluep; do echo "== compare base vs $name"; python3 -m virnucpro compare /tmp/p_base /tmp/p_$name 2>&1 | head -14; done
cp /tmp/p_geluep/virnucpro.log "$O/geluep.log"; cp /tmp/p_base/virnucpro.log "$O/base.log"
} 2>&1 | tee "$O/probe.log"
