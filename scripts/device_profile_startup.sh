#!/usr/bin/env bash
# py-spy over the start-up of warm runs (issue 6): where do a worker's ~14 s before its first batch go?
#     bash scripts/device_profile_startup.sh      # carry .whl (incl. py-spy); ~3 min on nvidia-h200-x2
#     PYSPY_GIL=1 bash scripts/device_profile_startup.sh   # only samples of the thread holding the interpreter
#                                                           # lock: which start-up thread keeps the others waiting
set -u
source scripts/device_setup.sh || exit 1
O=${OUT:-/tmp/profile-out}; mkdir -p "$O"
{
python3 -m virnucpro models synth --preset full --out /tmp/models --device cuda 2>&1 | tail -1
python3 -m virnucpro reads synth --n "${READS:-20000}" --seed 1 -o /tmp/reads.fa
python3 -m virnucpro predict /tmp/reads.fa -o /tmp/warm --models /tmp/models --gpus 2 --no-progress > /dev/null 2>&1
echo "warm-up run: exit $?"
for g in 1 2; do
  /tmp/site/bin/py-spy record ${PYSPY_GIL:+--gil} --idle --threads --subprocesses --format raw -r 40 -o "$O/g$g.collapsed" -- \
    python3 -m virnucpro predict /tmp/reads.fa -o /tmp/p$g --models /tmp/models --gpus $g --no-progress > /tmp/p$g.out 2>&1
  echo "== py-spy g$g: exit $?"
  grep -h '"event": "\(worker_start\|workers_spawned\|summary\)"\|"stage": "load_models"' /tmp/p$g/virnucpro.log | sed 's/.*TELEMETRY //' | cut -c1-600
  tail -3 /tmp/p$g.out
done
ls -la "$O"
} 2>&1 | tee "$O/profile.log"
