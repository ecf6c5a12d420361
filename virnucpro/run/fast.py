"""The fast engine's run: work units checkpointed in OUTDIR/.virnucpro-run, computed by an executor
(``virnucpro.run.executor``: in this process, in worker processes, or as one torchrun rank).

``pipeline.predict`` calls ``score_fast`` between reading the input and the output stage. While the
executor's workers embed the first units, this process chunks, translates and plans the rest of the
input segment by segment (worker processes follow the plan it publishes), and makes
the output rows of every unit as it finishes; the scores are merged from the unit files at the end,
so --resume continues a killed run and every layout gives byte-identical outputs.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from typing import Any


from virnucpro import __version__
from virnucpro.core.background import gc_paused
from virnucpro.core.progress import progress_bar
from virnucpro.core.telemetry import GpuSampler, gpu_indices
from virnucpro.errors import InputError
from virnucpro.io import outputs
from virnucpro.io.fasta import RecordStream
from virnucpro.plan.planner import PlanBuilder, UnitStore, emit_plan, produce
from virnucpro.run.executor import Executor, Job, wait_for_rank0_manifest
from virnucpro.run.result import Scored, summarize_workers
from virnucpro.run.rows import MemoryRows, SegmentCount, SpooledRows
from virnucpro.run.rundir import RunDir, input_fingerprint
from virnucpro.run.worker import Stop, add_totals, install_stop_handlers

log = logging.getLogger("virnucpro.pipeline")


def score_fast(opts, records: RecordStream, models, clf, devices: list[str], tel,
               executor: Executor) -> Scored | None:
    """Every kept frame of ``records`` (the input, possibly still being read: segments are planned as
    they are read; the plan completes once the whole input is read and checked) embedded and
    classified by ``executor``. None on a torchrun rank > 0 (its units are checkpointed; rank 0
    writes the outputs)."""
    rd = RunDir(opts.outdir)
    settings = executor.settings
    from virnucpro.plan.planner import DNA_NT_BUDGET, PLAN_VERSION
    # DNABERT-S batches: --dna-budget (or a tuned file's), else on --resume the checkpoints', else the default
    dna_batches, dna_budget = "nucleotides", opts.dna_budget or DNA_NT_BUDGET
    identity = {"input": None, "models": models.fingerprints, "engine": "fast",
                "precision": opts.precision, "chunk_length": opts.chunk_length, "chunking": opts.chunking,
                "duplicate_ids": opts.duplicate_ids, "batches_per_unit": settings.batches_per_unit,
                "dna_batches": dna_batches, "dna_budget": dna_budget, "segment_reads": settings.segment_reads,
                "plan_version": PLAN_VERSION, "save_embeddings": opts.save_embeddings,
                "engine_config": opts.engine_config.identity()}

    # 1. The token budget: the checkpoints' (--resume, or rank 0's manifest), else decided now.
    if not executor.leads:
        manifest = wait_for_rank0_manifest(rd, executor.token)
    else:
        manifest = rd.read_manifest() if opts.resume else None
    resuming = manifest is not None
    if resuming and not opts.dna_budget and manifest.get("dna_budget"):
        identity["dna_budget"] = dna_budget = manifest["dna_budget"]
    if opts.resume and manifest is None and executor.leads:
        log.warning("--resume: %s holds no checkpoint (the earlier run stopped before recording one); "
                    "starting afresh", opts.outdir)
    if resuming:
        identity["input"] = input_fingerprint(records)   # the input is read whole before a resume
        if manifest.get("input", {}) is None:   # see publish() below
            raise InputError(f"--resume refused: the run in {rd.root} was stopped before its input was read to "
                             "the end, so its checkpoints cannot be matched to an input. Rerun without --resume "
                             "to start over.")
        rd.check(manifest, identity)
        budget = settings.given_budget or manifest["token_budget"]
        rd.check(manifest, {"token_budget": budget})
    else:
        chosen = executor.budget or executor.decide_budget()
        budget = chosen.tokens
        tel.emit("token_budget", tokens=budget, given=chosen.given, decided_s=round(chosen.decided_s, 3))
    identity["token_budget"] = budget

    # 2. The run directory, and the manifest before planning (workers wait for it).
    def write_manifest(**planned) -> None:
        rd.write_manifest({**identity, "run_token": executor.token, **planned, "virnucpro_version": __version__,
                           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    if executor.leads:
        _prepare_run_dir(rd, opts, resuming)
        identity["input"] = input_fingerprint(records, wait=False)   # None while still being read
        write_manifest()

    def publish(k, last) -> None:
        """Before each segment is planned: once the input is read (its last segment), the manifest
        gets the input's identity (size, sha256 of the bytes read: known only now for a streamed
        input), so that a killed run resumes."""
        if last and executor.leads and identity["input"] is None:
            identity["input"] = input_fingerprint(records)
            write_manifest()

    # 3. The executor starts (if it did not before the input was read); the host chunks, translates
    # and plans segment by segment while the GPUs embed the first units. Each unit goes to disk as it
    # is planned (worker processes follow this plan), so memory does not grow with the input.
    plan_dir = rd.plan_dir(None if executor.leads else getattr(executor, "owner", None))
    plans = PlanBuilder(budget, settings.batches_per_unit, dna_budget, UnitStore(plan_dir), executor.publishes)
    rows = _rows_for(opts, executor, rd, plans, records)   # each segment's reads, chunks and frames go there
    stop = Stop()
    # The producer writes planned units into OUTDIR: every way out of this function waits for it (after
    # ``stop``: at most the segment in hand), so that no unit is written after a failed run's clean-up
    # removed what it wrote (a model error on a loaded machine left .virnucpro-run/plan/unit_*.pkl).
    producer = threading.Thread(
        target=_produce_timed, name="plan-producer", daemon=True,
        args=(records, opts, plans, rows, settings.segment_reads, stop, tel,
              getattr(executor, "loaded", None), publish))
    try:
        executor.start(budget, time.time() - tel.now(), tel)
        producer.start()
        executor.wait_ready(tel)
    except BaseException:
        stop.set()
        executor.abort()
        if producer.is_alive():
            producer.join()
        raise
    done_before = rd.done_units()
    if executor.leads:
        tel.emit("units", already_done=len(done_before), resume=resuming)
    rows_done = threading.Event()   # the output rows, made as units finish
    row_maker = threading.Thread(target=_make_rows, name="output-rows", daemon=True, args=(rows, rows_done))
    if executor.leads:
        row_maker.start()

    # 4. The embedding: every unit of the growing plan, by the executor's workers.
    restore = install_stop_handlers(stop)
    sampler = GpuSampler(tel, gpu_indices(devices)).start()
    try:
        with progress_bar(opts.progress and executor.leads) as bar, gc_paused():
            progress = _Progress(bar, plans, records, rows, done_before)
            t_from = tel.now()
            stats = executor.execute(Job(plans, rd, clf, tel, stop, progress,
                                         lambda u: rows.describe_unit(u, plans.unit_frames(u))))
            if stats is None:
                return None
            t_to = tel.now()
    finally:
        stop.set()            # ends the producer if the run stops early
        restore()
        sampler.stop()
        rows_done.set()
        producer.join()       # (also on an error: see above)
        if row_maker.is_alive():
            row_maker.join()

    # 5. The merge: every unit's scores, or a stop that leaves a resumable state.
    plans.check()
    prep = plans.prep
    n_units = len(prep.plan.units)
    if executor.leads:
        write_manifest(n_units=n_units, n_frames=rows.n_frames)
    left = n_units - len(rd.done_units()) if plans.complete else 1
    if left:
        raise KeyboardInterrupt(stopped_line(stop, left if plans.complete else None, n_units))
    if isinstance(rows, MemoryRows):   # (the spooled rows take the units' scores segment by segment)
        rows.scores = rd.load_scores(prep, rows.n_frames)
    if executor.leads:
        rd.remove_plans()
    else:
        shutil.rmtree(plan_dir, ignore_errors=True)
    return _scored(opts, executor, devices, tel, stats, (t_from, t_to), sampler, prep, rows, n_units,
                   len(done_before))


def _rows_for(opts, executor: Executor, rd: RunDir, plans: PlanBuilder, records: RecordStream):
    """Where the output rows are made: spooled to the run directory segment by segment, so that they
    do not grow with the input (docs/benchmarks.md#memory); in memory with --save-embeddings
    (its index needs every frame's id); only counted on a torchrun rank other than 0."""
    if not executor.leads:
        return SegmentCount()
    if opts.save_embeddings:
        return MemoryRows(rd, plans, records)
    return SpooledRows.fresh(rd, plans)


def stopped_line(stop: Stop, left: int | None, n_units: int) -> str:
    """The one line a stopped run ends with (the command prints it, exit 130), also in the log."""
    by = f" by {signal.Signals(stop.signum).name}" if stop.signum else ""
    what = (f"{left} of {n_units} work units unfinished" if left is not None
            else "before the whole input was planned")
    line = (f"stopped{by} with {what}; the finished units are kept: rerun the same command with --resume "
            "to continue")
    log.info(line)
    return line


def _prepare_run_dir(rd: RunDir, opts, resuming: bool) -> None:
    """A fresh run: an earlier run's checkpoints and embeddings parts go (not this run's frames; the
    parts of the output set in OUTDIR stay until this run's set replaces it). Resuming: the killed
    run's claims and segments are void; a checkpoint that does not read back whole (empty,
    truncated, altered: a disk or a copy gone wrong) is computed again; with --save-embeddings a
    finished unit's part is the one beside the checkpoints, else the committed output set's when
    that set was made from these very checkpoints (same run token), else (deleted, lost with a
    machine crash) the unit is computed again instead of failing at the end."""
    if not resuming:
        rd.reset()
        return
    rd.make_dirs()
    rd.clear_claims()
    outputs.clear_embeddings(rd.root, resume=True)
    finished = sorted(rd.done_units() - rd.skipped_units())
    damaged = [u for u in finished if not rd.unit_whole(u)]
    if damaged:
        log.warning("--resume: %d checkpoint(s) damaged (empty, truncated or altered): computing unit(s) %s again",
                    len(damaged), ", ".join(map(str, damaged[:10])) + (", ..." if len(damaged) > 10 else ""))
        for u in damaged:
            rd.unit_path(u).unlink(missing_ok=True)
    if opts.save_embeddings:
        from virnucpro.io.outset import committed_record
        record = committed_record(rd.outdir) or {}
        token = (rd.read_manifest() or {}).get("run_token")
        ours = token is not None and (record.get("output_set") or {}).get("run_token") == token
        for u in sorted(set(finished) - set(damaged)):
            if outputs.embedding_part_readable(rd.root, u):
                continue
            if ours and outputs.embedding_part_readable(rd.outdir, u):
                outputs.link_embedding_part(rd.outdir, rd.root, u)
                continue
            log.warning("unit %d is checkpointed but its embeddings part is missing or damaged: "
                        "computing it again", u)
            rd.unit_path(u).unlink(missing_ok=True)


def _scored(opts, executor: Executor, devices: list[str], tel, stats: list[dict], window: tuple[float, float],
            sampler: GpuSampler, prep, rows, n_units: int, n_done_before: int) -> Scored:
    """The run's totals and summary figures from its workers' stats."""
    t_from, t_to = window
    totals: dict[str, Any] = {}
    for s in stats:
        add_totals(totals, s)
    for k in ("dna_s", "esm_s", "cls_s", "io_wait_s", "esm_tokens", "dna_tokens", "frames"):
        totals.setdefault(k, 0)
    if stats and all("t_start" in s for s in stats):   # the window in which workers embedded
        t_planned = t_from
        t_from, t_to = min(s["t_start"] for s in stats), max(s["t_end"] for s in stats)
        if not executor.in_process:   # as in one process: the wait for the models left after planning
            tel.emit("stage", stage="load_models", wall_s=round(max(0.0, t_from - t_planned), 4), workers=len(stats))
    embed_wall = t_to - t_from
    extra = summarize_workers(stats, embed_wall)
    extra.update(units_total=n_units, units_skipped=n_done_before, units_computed=n_units - n_done_before,
                 oom_retries=int(totals.get("oom_retries", 0)),
                 workers_lost=sum(1 for e in tel.events if e["event"] == "worker_lost"),
                 peak_tflops=max((s["peak_tflops"] for s in stats if s.get("peak_tflops")), default=None))
    mfus = [s["mfu_esm"] for s in stats if s.get("mfu_esm")]
    mems = [s["peak_gpu_mem_gib"] for s in stats if s.get("peak_gpu_mem_gib") is not None]
    return Scored(rows, totals, embed_wall, opts.precision,
                  len({d for d in devices if d.startswith("cuda")}) * executor.world,
                  sampler.mean_util(t_from, t_to), prep.plan.packing_efficiency,
                  sum(mfus) / len(mfus) if mfus else None, max(mems) if mems else None, extra)


class _Progress:
    """The progress bar's task: frames embedded of the frames expected (all once planned; before,
    the frames so far scaled to all reads, for the ETA)."""

    def __init__(self, bar, plans, records, rows, done_before: set[int]):
        self.bar, self.plans, self.records, self.rows = bar, plans, records, rows   # rows: the counts so far
        self.done_before = done_before     # units a resumed run found done (counted as they are planned)
        self.task = bar.add_task("embedding frames", total=self.expected(), completed=self.frames_of(done_before),
                                 rate="")
        self.t0 = time.perf_counter()

    def expected(self) -> int:
        rows = self.rows
        if self.plans.complete or not rows.n_reads:
            return rows.n_frames
        return int(rows.n_frames * self.records.expected_reads() / rows.n_reads)

    def frames_of(self, units) -> int:
        per_unit = self.plans.prep.unit_frames
        return sum(int(per_unit[u]) for u in units if u < len(per_unit))

    def computed(self, done: int, esm_tokens: int) -> None:
        """In this process: ``done`` frames embedded so far, ``esm_tokens`` ESM-2 tokens."""
        dt = time.perf_counter() - self.t0
        self.bar.update(self.task, completed=self.frames_of(self.done_before) + done, total=self.expected(),
                        rate=f"{esm_tokens / dt:,.0f} ESM tok/s" if dt else "")

    def units(self, done: set[int]) -> None:
        """From a coordinator: the units done so far."""
        self.bar.update(self.task, completed=self.frames_of(done), total=self.expected())


def _make_rows(rows, finished: threading.Event) -> None:
    """A thread beside the embedding: the output rows of every unit as it finishes (``rows.catch_up``),
    so that the write stage at the end only puts them together. Gives up quietly on an error: the
    write stage makes what is missing itself."""
    try:
        while True:
            last = finished.is_set()
            rows.catch_up()
            if last:
                return
            finished.wait(0.5)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.debug("output rows made ahead stopped: %s", exc)


def _produce_timed(records, opts, plans, rows, segment_reads, stop, tel, hold=None, publish=None) -> None:
    """The producer thread: chunk, translate and plan (each segment's reads, chunks and frames to
    ``rows``); its stage and plan events at the end."""
    t0 = time.perf_counter()
    produce(records, opts.chunk_length, opts.chunking, plans, None, None, segment_reads, stop, hold, publish,
            on_segment=rows.add_segment)
    if plans.error is not None:   # e.g. the rest of the input was refused: the GPUs stop now, not after their units
        stop.set()
    if plans.complete:
        tel.emit("stage", stage="chunk_translate", wall_s=round(time.perf_counter() - t0, 4), items=rows.n_reads,
                 chunks=rows.n_chunks, frames=rows.n_frames, overlapped=True)
        log.info("%d reads -> %d chunks -> %d kept frames", rows.n_reads, rows.n_chunks, rows.n_frames)
        emit_plan(tel, plans.prep, rows.n_frames)
