#!/usr/bin/env bash
# Where a 2-GPU run's time goes (after scripts/device_agreement.sh made /tmp/models): a 3,000-read
# warm-up on both GPUs (compile caches are per GPU), then READS (100,000) reads on 2 GPUs and on 1;
# prints each run's process wall, start-up events and stage table. Logs under $OUT. Carry .whl.
set -u
source scripts/device_setup.sh > /dev/null || exit 1
O=${OUT:-/tmp/timeline-out}; mkdir -p "$O"
{
python3 -m virnucpro reads synth --n 3000 --seed 5 -o /tmp/w3k.fa > /dev/null
python3 -m virnucpro reads synth --n "${READS:-100000}" --seed 12 --length-profile respiratory -o /tmp/t.fa > /dev/null
python3 -m virnucpro predict /tmp/w3k.fa -o /tmp/tw --models /tmp/models --gpus 2 --no-progress > /dev/null 2>&1
echo "warm-up exit $?"
for g in 2 1; do
  t=$(date +%s%N)
  python3 -m virnucpro predict /tmp/t.fa -o /tmp/t$g --models /tmp/models --gpus $g --no-progress > /tmp/t$g.out 2>&1
  echo "== --gpus $g: exit $? process wall $(( ($(date +%s%N) - t) / 1000000 )) ms"
  grep -h '"event": "\(workers_spawned\|worker_start\|token_budget\|units\|worker_restart\|worker_lost\)"\|"stage": "\(load_models\|write\)"' \
      /tmp/t$g/virnucpro.log | sed 's/.*TELEMETRY //' | cut -c1-700
  grep -h '"event": "summary"' /tmp/t$g/virnucpro.log | sed 's/.*TELEMETRY //' | python3 -c "
import json,sys; s=json.loads(sys.stdin.read()); print('  wall', s['wall_s'], 'embed', s['embed_wall_s'], 'busy', s.get('busy_s_per_worker'), 'stages', s['stages'])"
  grep -h '"event": "run_start"' /tmp/t$g/virnucpro.log | sed 's/.*TELEMETRY //' | python3 -c "
import json,sys; s=json.loads(sys.stdin.read()); print('  run_start t', s['t'], 'setup_t', s.get('setup_t'))"
  grep -h '"event": "unit_done"' /tmp/t$g/virnucpro.log | sed 's/.*TELEMETRY //' | head -1 | cut -c1-200
  cp /tmp/t$g/virnucpro.log "$O/timeline-g$g.log"
done
cmp /tmp/t1/prediction_results.txt /tmp/t2/prediction_results.txt && echo "1 and 2 GPUs: prediction_results.txt identical"
} 2>&1 | tee "$O/timeline.log"
