#!/usr/bin/env bash
# Issue 3's sign-off on ONE GPU in one device call (~6 min on nvidia-h200; carry .whl):
#   1. the gate on the issue's 100,000-read workload (= READS=100000 bash scripts/device_signoff.sh:
#      MFU, utilisation, packing, the 1M-read projection, speedup and agreement with the reference engine)
#   2. the per-sequence embedding cosine of the fast engine's default GPU path (Triton kernels, GELU
#      epilogue) against the fp32 reference forward: scripts/precision_study.py on 3,000 reads
#   3. DNABERT-S batches by token count (the default) and by nucleotide length side by side: the gate's
#      100,000 reads twice more, VIRNUCPRO_DNA_BATCHES=tokens then nucleotides (wall, DNABERT-S, util)
# The gate's files are copied to $OUT by device_signoff.sh; the study's output goes to $OUT/precision.log.
set -u
READS=100000 bash scripts/device_signoff.sh
rc=$?
source scripts/device_setup.sh > /dev/null || exit 1
O=${OUT:-/tmp/issue3-out}; mkdir -p "$O"
python3 -m virnucpro reads synth --n 3000 --seed 21 --length-profile respiratory -o /tmp/p3k.fa > /dev/null
python3 scripts/precision_study.py --models /tmp/models --reads /tmp/p3k.fa --n-reads 3000 \
    --kernels triton --gelu-epilogue 2>&1 | tee "$O/precision.log" | tail -25
for mode in tokens nucleotides; do
  t=$(date +%s%N)
  VIRNUCPRO_DNA_BATCHES=$mode python3 -m virnucpro predict /root/.cache/virnucpro/gate/reads-respiratory-n100000-s1.fa \
      -o /tmp/dna-$mode --models /tmp/models --no-progress > /tmp/dna-$mode.out 2>&1
  echo "== DNABERT-S batches by $mode: exit $? process wall $(( ($(date +%s%N) - t) / 1000000 )) ms" | tee -a "$O/precision.log"
  grep -h '"event": "summary"' /tmp/dna-$mode/virnucpro.log | sed 's/.*TELEMETRY //' | python3 -c "
import json,sys; s=json.loads(sys.stdin.read()); print('  stages', s['stages'], 'util', s.get('gpu_util_mean'), 'mfu', s.get('mfu_esm'))" | tee -a "$O/precision.log"
done
exit $rc
