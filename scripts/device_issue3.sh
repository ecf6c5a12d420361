#!/usr/bin/env bash
# Issue 3's sign-off on ONE GPU in one device call (~6 min on nvidia-h200; carry .whl):
#   1. the gate on the issue's 100,000-read workload (= READS=100000 bash scripts/device_signoff.sh:
#      MFU, utilisation, packing, the 1M-read projection, speedup and agreement with the reference engine)
#   2. the per-sequence embedding cosine of the fast engine's default GPU path (Triton kernels, GELU
#      epilogue) against the fp32 reference forward: scripts/precision_study.py on 3,000 reads
# The gate's files are copied to $OUT by device_signoff.sh; the study's output goes to $OUT/precision.log.
set -u
READS=100000 bash scripts/device_signoff.sh
rc=$?
source scripts/device_setup.sh > /dev/null || exit 1
O=${OUT:-/tmp/issue3-out}; mkdir -p "$O"
python3 -m virnucpro reads synth --n 3000 --seed 21 --length-profile respiratory -o /tmp/p3k.fa > /dev/null
python3 scripts/precision_study.py --models /tmp/models --reads /tmp/p3k.fa --n-reads 3000 \
    --kernels triton --gelu-epilogue 2>&1 | tee "$O/precision.log" | tail -25
exit $rc
