"""The run layer: the fast engine's work units, checkpointed, shared by workers, resumed.

    fast.py            score_fast: a run top to bottom (budget, run directory, planning beside the
                       embedding, merge), driving one executor
    executor.py        Executor: InProcess | LocalWorkers | TorchrunRank; the run's settings and budget
    coordinator.py     Coordinator: spawns worker processes, watches, restarts, gives up
    worker.py          work: a worker's loop over claimed units (any executor); stop handlers
    worker_process.py  a worker process: WorkerSpec, worker_main, its exit codes
    spawn.py           how worker processes start (fork server, spawn)
    forkserver_init.py imported by the fork server only: it dies with its coordinator, ignores SIGTERM
    devices.py         one device per worker; the torchrun rank; worker processes foreseen before torch
    claims.py          ClaimSource, heartbeats, stale claims
    rundir.py          RunDir: manifest, identity, segments, unit checkpoints, claim files
    faults.py          FaultPlan: faults a test injects, handed down explicitly
    result.py          Scored (what the output stage gets), the workers' summary
    rows.py            the output rows, spooled per planning segment (or in memory), made as units finish

Imports point down this list (fast -> executor -> coordinator -> worker_process -> worker -> ...).
"""
