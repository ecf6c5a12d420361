#!/usr/bin/env bash
# Issue 3's agreement targets on a larger sample than the gate's, side by side in one device call
# (~6 min): the reference engine (fp32) vs fast-engine variants, same synthetic models, READS (10,000)
# fresh reads (seed 7). RUNS picks the variants (default "f16 f32"):
#   f16        --precision fp16 (the default)          f32       --precision fp32
#   f16gelu    fp16, fc1 GEMM with the GELU epilogue (VIRNUCPRO_ESM_GELU=tanh-epilogue)
#   f16exact   fp16, exact GELU (VIRNUCPRO_ESM_GELU=exact)
#   f16dna     fp16, DNABERT-S compiled (VIRNUCPRO_DNABERT_COMPILE=1)
# QUICK2=1 first runs scripts/device_quick2.sh (2 GPUs, tiny models).
#     RUNS="f16 f16gelu" bash scripts/device_agreement.sh      # carry .whl
set -u
O=${OUT:-/tmp/agreement-out}; mkdir -p "$O"
[ "${QUICK2:-0}" = 1 ] && bash scripts/device_quick2.sh 2>&1 | tee "$O/quick2.log"
source scripts/device_setup.sh || exit 1
{
python3 -m virnucpro models synth --preset full --out /tmp/models --device cuda 2>&1 | tail -1
python3 -m virnucpro reads synth --n "${READS:-10000}" --seed 7 --length-profile respiratory -o /tmp/reads.fa
run() {   # name, env assignments..., -- predict options...
  local name=$1; shift; local envs=(); while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  local t=$(date +%s%N)
  env "${envs[@]}" python3 -m virnucpro predict /tmp/reads.fa -o /tmp/a_$name --models /tmp/models --gpus 1 \
      --no-progress "$@" > /tmp/a_$name.out 2>&1
  echo "== $name (${envs[*]} $*): exit $? wall $(( ($(date +%s%N) - t) / 1000000 )) ms"
  tail -2 /tmp/a_$name.out
  grep -h '"event": "summary"' /tmp/a_$name/virnucpro.log | sed 's/.*TELEMETRY //' | cut -c1-600 | tail -1
}
run ref X=1 -- --engine reference
for name in ${RUNS:-f16 f32}; do
  case $name in
    f16) run f16 X=1 -- --engine fast --precision fp16 ;;
    f32) run f32 X=1 -- --engine fast --precision fp32 ;;
    f16gelu) run f16gelu VIRNUCPRO_ESM_GELU=tanh-epilogue -- --engine fast --precision fp16 ;;
    f16exact) run f16exact VIRNUCPRO_ESM_GELU=exact -- --engine fast --precision fp16 ;;
    f16dna) run f16dna VIRNUCPRO_DNABERT_COMPILE=1 -- --engine fast --precision fp16 ;;
    *) echo "unknown run $name"; exit 2 ;;
  esac
done
for name in ${RUNS:-f16 f32}; do
  echo "== reference vs fast $name"
  python3 -m virnucpro compare /tmp/a_ref /tmp/a_$name --min-agreement 0.999 --json "$O/compare-$name.json" --top 5
  echo "exit $?"
done
} 2>&1 | tee "$O/agreement.log"
