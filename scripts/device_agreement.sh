#!/usr/bin/env bash
# Issue 3's agreement targets on a larger sample than the gate's 2,000 reads, side by side in one
# device call (nvidia-h200, ~6 min): the reference engine (fp32) vs the fast engine in fp16 (the
# default) and in fp32, same synthetic models, READS (10,000) fresh reads (seed 7).
#     bash scripts/device_agreement.sh      # carry .whl
set -u
source scripts/device_setup.sh || exit 1
O=${OUT:-/tmp/agreement-out}; mkdir -p "$O"
{
python3 -m virnucpro models synth --preset full --out /tmp/models --device cuda 2>&1 | tail -1
python3 -m virnucpro reads synth --n "${READS:-10000}" --seed 7 --length-profile respiratory -o /tmp/reads.fa
for run in "ref --engine reference" "f16 --engine fast --precision fp16" "f32 --engine fast --precision fp32"; do
  set -- $run; name=$1; shift
  t=$(date +%s%N)
  python3 -m virnucpro predict /tmp/reads.fa -o /tmp/a_$name --models /tmp/models --gpus 1 --no-progress "$@" > /tmp/a_$name.out 2>&1
  echo "== $name ($*): exit $? wall $(( ($(date +%s%N) - t) / 1000000 )) ms"
  tail -2 /tmp/a_$name.out
done
for name in f16 f32; do
  echo "== reference vs fast $name"
  python3 -m virnucpro compare /tmp/a_ref /tmp/a_$name --min-agreement 0.999 --json "$O/compare-$name.json" --top 5
  echo "exit $?"
done
cp /tmp/a_ref/prediction_results.txt "$O/ref-prediction_results.txt"
} 2>&1 | tee "$O/agreement.log"
