#!/usr/bin/env bash
# Smallest 2-GPU check (~1 min on nvidia-h200-x2): tiny synthetic models, 3,000 reads, --gpus 2;
# prints the workers' start events and any lost/restarted worker. Carry .whl.
set -u
source scripts/device_setup.sh || exit 1
python3 -m virnucpro models synth --preset tiny --out /tmp/tm --device cuda 2>&1 | tail -1
python3 -m virnucpro reads synth --n 3000 --seed 1 -o /tmp/r.fa > /dev/null
python3 -m virnucpro predict /tmp/r.fa -o /tmp/o2 --models /tmp/tm --gpus 2 --no-progress > /tmp/o2.out 2>&1
echo "predict --gpus 2: exit $?"
grep -h '"event": "\(worker_start\|worker_restart\|worker_lost\|workers_spawned\)"' /tmp/o2/virnucpro.log | sed 's/.*TELEMETRY //' | cut -c1-400
grep -h "Traceback\|Error" /tmp/o2/virnucpro.log /tmp/o2.out | head -5
