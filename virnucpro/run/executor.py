"""Where a run's work units are computed: one ``Executor`` interface, three places.

- ``InProcess``     one worker, in the ``predict`` process itself (no extra process)
- ``LocalWorkers``  worker processes on this host, one per device string, watched by a ``Coordinator``
                    (several GPUs or workers, or --skip-failing-units, which needs a worker to lose)
- ``TorchrunRank``  this process is one rank of a torchrun / Slurm launch: one worker; the ranks
                    share the work only through the run directory, rank 0 writes the outputs

Life of an executor (``virnucpro.run.fast.score_fast`` drives it)::

    ex = choose_executor(opts, models, devices, rank, shared)
    ex.start_early(run_epoch)     # a fresh run: models load / workers spawn while the input is read
    ex.start(budget, tel)         # (if not started early) once the token budget is known
    ex.wait_ready(tel)            # in this process: the models are loaded
    stats = ex.execute(job)       # every unit of the growing plan done -> each worker's stats
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from virnucpro.core.background import Background
from virnucpro.core.telemetry import Telemetry
from virnucpro.errors import VirnucproError
from virnucpro.io.paths import LOG_NAME
from virnucpro.run.coordinator import Coordinator
from virnucpro.run.devices import Rank
from virnucpro.run.rundir import RunDir
from virnucpro.run.spawn import prestart_workers
from virnucpro.run.worker import WorkerTelemetry, finish_worker, load_fast_engine, work
from virnucpro.run.worker_process import WorkerSpec


@dataclass
class RunSettings:
    """The fast run's settings from ``PredictOptions``: engine options, batches per unit, reads per
    planning segment, and the token budget if --token-budget gave one."""
    engine_opts: dict
    batches_per_unit: int
    segment_reads: int
    given_budget: int | None

    @classmethod
    def of(cls, opts) -> "RunSettings":
        from virnucpro.plan.planner import SEGMENT_READS
        eo: dict = {"config": opts.engine_config}   # make_engine's arguments besides the budget
        if opts.save_embeddings:
            eo["keep_features"] = True
        return cls(eo, opts.batches_per_unit or 8, int(opts.segment_reads or SEGMENT_READS), opts.token_budget)

    def engine_opts_for(self, budget: int) -> dict:
        """What every worker's engine is made with: the options plus the run's budget."""
        return {**self.engine_opts, "token_budget": budget, "batches_per_unit": self.batches_per_unit}


@dataclass
class Budget:
    """The token budget of a fresh run: its tokens, whether --token-budget gave it, how long deciding took."""
    tokens: int
    given: bool
    decided_s: float


def decide_budget(opts, models, devices: list[str], settings: RunSettings) -> Budget:
    """--token-budget, else sized from the first GPU's free memory (shared by the workers on it)."""
    t = time.perf_counter()
    if settings.given_budget:
        return Budget(settings.given_budget, True, time.perf_counter() - t)
    from virnucpro.engines.fast import default_token_budget
    tokens = default_token_budget(devices[0], models.esm, precision=opts.precision,
                                  gpu_memory_gib=opts.engine_config.gpu_memory_gib,
                                  sharing=max(devices.count(d) for d in devices))
    return Budget(tokens, False, time.perf_counter() - t)


@dataclass
class Job:
    """What ``execute`` works through: the growing plan, where its units are checkpointed, and how
    to report (``progress.computed(frames, esm_tokens)`` in this process, ``progress.units(done)``
    from a coordinator)."""
    plans: Any                                  # plan.planner.PlanBuilder, possibly still growing
    rd: RunDir
    clf: Any                                    # the classifier
    tel: Telemetry
    stop: threading.Event
    progress: Any
    describe_unit: Callable[[int], str]         # unit -> "N read(s): ids" for a unit given up on


class SharedModels:
    """What the runs of one command keep loaded from one run to the next (a multi-sample
    ``predict``: ``virnucpro.samples``): the engine with its models on its device, and what was
    decided before loading it (the token budget, the models' fingerprints). One engine at a time: a
    run that needs another one (other settings, e.g. a --resume whose checkpoints have another token
    budget) drops the held one before loading its own, so that two never share the GPU memory.

    Only an engine in the command's own process is kept (``InProcess``: one GPU, or a CPU; the
    reference engine). Worker processes (``LocalWorkers``: several GPUs or workers,
    --skip-failing-units) belong to one run's output directory and token, and load their models
    again for every sample: keeping them alive across samples would need a worker that takes a
    next run's directory and token (docs/benchmarks.md#samples says what that costs per sample)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: Any = None
        self.loads = 0                   # engines loaded so far (tests/test_samples.py checks it)
        self.memo: dict[tuple, Any] = {}

    def get(self, key: tuple, load: Callable[[], tuple[Any, float]]) -> tuple[Any, float]:
        """(value, seconds it took to load: 0.0 when held already) of ``load()`` for ``key``."""
        if self.key == key:
            return self.value, 0.0
        self.key, self.value = None, None   # the old engine goes before the new one loads
        _release_gpu_cache()
        value, seconds = load()
        self.key, self.value = key, value
        self.loads += 1
        return value, seconds

    def once(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()`` the first time ``key`` is asked, the same value after."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def close(self) -> None:
        self.key, self.value = None, None
        self.memo.clear()
        _release_gpu_cache()


def _release_gpu_cache() -> None:
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class Executor:
    leads = True          # writes the manifest, the rows and the outputs (not a torchrun rank > 0)
    publishes = False     # worker processes plan from the segments this process publishes
    in_process = True     # the engine runs in this process
    world = 1             # hosts' processes of the launch (torchrun)

    def __init__(self, opts, models, devices: list[str], shared: SharedModels | None = None):
        self.opts, self.models, self.devices = opts, models, devices
        self.faults = getattr(opts, "faults", None)
        self.settings = RunSettings.of(opts)
        self.token = new_token()
        self.budget: Budget | None = None       # decided by start_early
        self.started = False
        self.shared = shared                    # engines kept from one run to the next (None: this run's only)

    def start_early(self, run_epoch: float) -> None:
        """What can start before the input is read. A fresh run: decide the budget and start."""
        if not self.opts.resume:
            self.budget = self.decide_budget()
            self.start(self.budget.tokens, run_epoch)

    def decide_budget(self) -> Budget:
        """The token budget of a fresh run (``decide_budget``). With shared models, the first run's
        for every run of the command: decided before any model was loaded, as a run of its own
        decides it (after the loading, less GPU memory is free), so each sample is planned and
        computed exactly as a separate ``predict`` of it would be."""
        def decide() -> Budget:
            return decide_budget(self.opts, self.models, self.devices, self.settings)
        if self.shared is None:
            return decide()
        o = self.opts
        key = ("budget", tuple(self.devices), str(self.models.esm), o.precision, o.engine_config.gpu_memory_gib,
               self.settings.given_budget)
        earlier = key in self.shared.memo
        budget = self.shared.once(key, decide)
        return Budget(budget.tokens, budget.given, 0.0) if earlier else budget   # (no time spent deciding now)

    def start(self, budget: int, run_epoch: float, tel: Telemetry | None = None) -> None:
        raise NotImplementedError

    def wait_ready(self, tel: Telemetry) -> None:
        """Before the embedding: what this process must have (the models, in this process)."""

    def models_loading(self) -> Callable[[], bool] | None:
        """True while this process loads the models (the input's reader pauses meanwhile)."""
        return None

    def execute(self, job: Job) -> list[dict] | None:
        raise NotImplementedError

    def abort(self) -> None:
        """The run ends before its units: no worker may outlive it."""


class InProcess(Executor):
    owner = "w0"
    stale_s: float | None = None

    def __init__(self, opts, models, devices: list[str], shared: SharedModels | None = None):
        super().__init__(opts, models, devices, shared)
        self.loading: Background | None = None
        self.loaded = threading.Event()      # the host's chunking pauses after one segment until then
        self.engine = None

    def start(self, budget: int, run_epoch: float, tel: Telemetry | None = None) -> None:
        if not self.started:
            self.started = True
            args = (self.models, self.devices[0], self.settings.engine_opts_for(budget), self.faults)
            if self.shared is None:
                self.loading = Background(load_fast_engine, *args, name="load-models")
            else:   # the engine an earlier run of the command loaded, if it has these very settings
                key = ("fast", str(self.models.esm), str(self.models.dnabert), *map(repr, args[1:]))
                self.loading = Background(self.shared.get, key, lambda: load_fast_engine(*args), name="load-models")

    def models_loading(self) -> Callable[[], bool] | None:
        loading = self.loading
        return None if loading is None else (lambda: not loading.done())

    def wait_ready(self, tel: Telemetry) -> None:
        with tel.stage("load_models") as st:
            try:
                self.engine, load_s = self.loading.result()
            finally:
                self.loaded.set()
            st.update(load_total_s=round(load_s, 3), phases=getattr(self.engine, "startup", None))

    def execute(self, job: Job) -> list[dict] | None:
        device = self.devices[0]
        wtel = WorkerTelemetry(self.owner)
        wtel.t0 = job.tel.t0
        wtel.emit("worker_start", device=device, pid=os.getpid())
        if device.startswith("cuda"):
            import torch
            torch.cuda.reset_peak_memory_stats(torch.device(device))
        totals = work(self.engine, job.plans, job.clf, wtel, job.rd, self.owner, job.stop, stale_s=self.stale_s,
                      on_progress=job.progress.computed, faults=self.faults)
        return [finish_worker(job.rd, self.owner, device, self.engine, totals, wtel)]


class TorchrunRank(InProcess):
    """One rank of a launch: a worker in this process that takes over claims whose heartbeat stopped
    for ``--stale-s`` (no process watches the others); rank 0 gathers the ranks' stats."""

    def __init__(self, opts, models, devices: list[str], rank: Rank):
        super().__init__(opts, models, devices)
        self.rank = rank
        self.owner, self.leads, self.world = f"r{rank.rank}", rank.rank == 0, rank.world
        self.stale_s = opts.stale_s
        self.token = launch_token()

    def start_early(self, run_epoch: float) -> None:
        """Nothing: the budget may be rank 0's, read from its manifest."""

    def execute(self, job: Job) -> list[dict] | None:
        stats = super().execute(job)
        if not self.leads:
            return None
        return gather_rank_stats(job.rd, self.world, stats)


class LocalWorkers(Executor):
    publishes = True
    in_process = False

    def __init__(self, opts, models, devices: list[str], shared: SharedModels | None = None):
        super().__init__(opts, models, devices, shared)
        self.coordinator: Coordinator | None = None
        self.early = False

    def start_early(self, run_epoch: float) -> None:
        if self.opts.resume:   # the budget is the checkpoints': the fork server imports torch meanwhile
            prestart_workers()
            return
        super().start_early(run_epoch)
        self.early = True

    def start(self, budget: int, run_epoch: float, tel: Telemetry | None = None) -> None:
        """Workers that start at once (they load their models while this process reads, chunks and
        plans); they claim units only once the manifest with this run's token exists, planning from
        the segments this process publishes."""
        if not self.started:
            self.started = True
            opts, devices = self.opts, self.devices
            base = WorkerSpec(
                owner="", device="", chunk_length=opts.chunk_length, models=self.models,
                allow_classifier_mismatch=opts.allow_classifier_mismatch,
                engine_opts=self.settings.engine_opts_for(budget), outdir=Path(opts.outdir),
                log_file=Path(opts.outdir) / LOG_NAME, run_epoch=run_epoch,
                threads=worker_threads(getattr(opts, "threads", None), devices),
                run_token=self.token, faults=self.faults)
            self.coordinator = Coordinator(base, devices, RunDir(opts.outdir), tel, describe_unit=lambda u: f"unit {u}",
                                           skip_failing_units=opts.skip_failing_units)
            self.coordinator.start()
        if tel is not None:
            self.coordinator.tel = tel
            tel.emit("workers_spawned", devices=list(self.devices), before_input=self.early)

    def execute(self, job: Job) -> list[dict] | None:
        self.coordinator.describe_unit = job.describe_unit
        self.coordinator.on_poll = job.progress.units
        return self.coordinator.run(job.stop, job.plans)

    def abort(self) -> None:
        if self.coordinator is not None:
            self.coordinator.kill_all()


def worker_threads(threads: int | None, devices: list[str]) -> int | None:
    """torch threads per worker process: -t/--threads (else the CPU's cores, for CPU workers) shared
    evenly by the workers; None (torch's default) for GPU workers without -t."""
    if threads is None and devices[0] != "cpu":
        return None
    return max(1, (threads or os.cpu_count() or 1) // len(devices))


def choose_executor(opts, models, devices: list[str], rank: Rank | None,
                    shared: SharedModels | None = None) -> Executor:
    """``shared``: models kept loaded across the runs of a multi-sample command (in-process engines only)."""
    if rank is not None:
        return TorchrunRank(opts, models, devices, rank)
    if len(devices) > 1 or opts.skip_failing_units:   # skipping a unit needs a worker process to lose
        return LocalWorkers(opts, models, devices, shared)
    return InProcess(opts, models, devices, shared)


def new_token() -> str:
    """A fresh run's token (its workers wait for the manifest that carries it)."""
    import uuid
    return uuid.uuid4().hex


def launch_token() -> str:
    """The same string on every rank of one torchrun/Slurm launch (not of an earlier one)."""
    for k in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"):
        if os.environ.get(k):
            return f"{k}={os.environ[k]}"
    return f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"


def wait_for_rank0_manifest(rd: RunDir, token: str, timeout: float = 3600.0) -> dict:
    m = rd.wait_for_manifest(token, timeout, poll=0.5)
    if m is None:
        raise VirnucproError(f"rank 0 wrote no manifest for this launch in {rd.root} within {timeout:.0f} s")
    return m


def gather_rank_stats(rd: RunDir, world: int, mine: list[dict], timeout: float = 30.0) -> list[dict]:
    """Rank 0: the other ranks' totals (they write them as soon as all units are done)."""
    t0 = time.time()
    while True:
        stats = [json.loads(p.read_text()) for p in sorted(rd.workers.glob("r*.json"))]
        if len(stats) >= world or time.time() - t0 > timeout:
            return stats or mine
        time.sleep(0.5)
