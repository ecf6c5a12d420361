"""The fast engine's run: work units checkpointed in OUTDIR/.virnucpro-run, embedded in this process
(one worker), in spawned worker processes (several GPUs or workers), or as one torchrun rank.

``pipeline.predict`` calls ``score_fast`` between chunk/translate and the output stage; the claiming,
checkpoint and worker machinery it drives lives in ``virnucpro.run.parallel``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any


import numpy as np

from virnucpro import __version__
from virnucpro.io import outputs
from virnucpro.run import parallel
from virnucpro.core.background import Background, gc_paused
from virnucpro.errors import InputError, VirnucproError
from virnucpro.io.fasta import RecordStream
from virnucpro.plan.planner import SEGMENT_READS, PlanBuilder, emit_plan, produce
from virnucpro.core.progress import progress_bar
from virnucpro.core.telemetry import GpuSampler, gpu_indices
from virnucpro.io.paths import LOG_NAME
from virnucpro.run.result import Scored

log = logging.getLogger("virnucpro.pipeline")


def _split_opts(opts) -> tuple[dict, int, int, int | None]:
    """(engine options, batches per unit, segment reads, --token-budget or None)."""
    eo = dict(opts.engine_opts)
    if opts.save_embeddings:
        eo["keep_features"] = True
    bpu = opts.batches_per_unit or eo.pop("batches_per_unit", None) or 8
    eo.pop("batches_per_unit", None)
    segment_reads = int(eo.pop("segment_reads", None) or SEGMENT_READS)
    return eo, bpu, segment_reads, eo.pop("token_budget", None)


def _redo_units_without_parts(rd: "parallel.RunDir") -> None:
    """--resume --save-embeddings: a finished unit whose features part is missing or unreadable
    (deleted, or lost with a machine crash) is computed again instead of failing at the end."""
    for u in sorted(rd.done_units() - rd.skipped_units()):
        if not outputs.embedding_part_readable(rd.outdir, u):
            log.warning("unit %d is checkpointed but its embeddings part is missing or damaged: computing it again", u)
            rd.unit_path(u).unlink(missing_ok=True)


def _decide_budget(opts, models, devices: list[str], eo: dict) -> int:
    from virnucpro.engines.fast import default_token_budget
    return default_token_budget(devices[0], models.esm, precision=opts.precision,
                                gpu_memory_gib=eo.get("gpu_memory_gib"),
                                sharing=max(devices.count(d) for d in devices))


class _EarlyStart:
    """What a fresh run starts before its input is read, with the token budget ``score_fast`` would
    decide: ``budget``, ``given`` (by --token-budget), ``decided_s``, and the engine options."""

    def __init__(self, opts, models, devices: list[str]):
        eo, bpu, _, given = _split_opts(opts)
        t = time.perf_counter()
        self.given = bool(given)
        self.budget = given or _decide_budget(opts, models, devices, eo)
        self.decided_s = time.perf_counter() - t
        self.engine_opts = {**eo, "token_budget": self.budget, "batches_per_unit": bpu}


class EarlyLoad(_EarlyStart):
    """The models of a fresh one-worker run, loading in a daemon thread from the start of ``predict``
    (while the input is read). A daemon thread: a bad input ends the command at once, not after the
    loading."""

    def __init__(self, opts, models, device: str):
        super().__init__(opts, models, [device])
        self.loading = Background(_load_fast, models, device, opts.precision, self.engine_opts, name="load-models")

    def result(self):
        return self.loading.result()


def wants_early_load(opts, devices: list[str], dist) -> bool:
    """One worker in this process, a fresh run: its models can load while the input is read."""
    return dist is None and not opts.resume and len(devices) == 1 and not opts.skip_failing_units


class EarlyWorkers(_EarlyStart):
    """The worker processes of a fresh run on several workers, started from the start of ``predict``
    (they load their models while this process reads the input). They wait for the manifest
    carrying ``token``, which ``score_fast`` writes before planning, then plan from the
    segments it publishes; ``abort`` stops them when the run ends before."""

    def __init__(self, opts, models, devices: list[str], run_epoch: float):
        super().__init__(opts, models, devices)
        self.token = _new_token()
        self.coordinator = _start_coordinator(opts, models, devices, self.engine_opts, parallel.RunDir(opts.outdir),
                                              None, run_epoch, self.token)

    def abort(self) -> None:
        self.coordinator.kill_all()


def wants_early_workers(opts, devices: list[str], dist) -> bool:
    """Worker processes of a fresh run: they can start before the input is read."""
    return dist is None and not opts.resume and (len(devices) > 1 or opts.skip_failing_units)


def score_fast(opts, records: RecordStream, models, clf, devices: list[str], tel, dist,
               early: EarlyLoad | EarlyWorkers | None = None) -> tuple[list, list, Scored] | None:
    """The fast engine over work units checkpointed in OUTDIR/.virnucpro-run: in this process for one
    worker (models load while the host reads, chunks and translates; ``early`` started that before
    the input was read), else in worker processes (``early`` started them before the input was read;
    they load their models while this process reads, chunks and translates, and plan from the
    segments it publishes), or as one torchrun rank (which reads and plans by itself).
    ``records``: the input, possibly still being read (segments are planned as they are read; the
    plan completes once the whole input is read and checked)."""
    rank = dist[0] if dist else 0
    rd = parallel.RunDir(opts.outdir)
    eo, bpu, segment_reads, given_budget = _split_opts(opts)
    from virnucpro.plan.planner import PLAN_VERSION, dna_batching
    dna_batches, dna_budget = dna_batching()
    identity = {"input": None, "models": models.fingerprints, "engine": "fast",
                "precision": opts.precision, "chunk_length": opts.chunk_length, "chunking": opts.chunking,
                "duplicate_ids": opts.duplicate_ids, "batches_per_unit": bpu, "dna_batches": dna_batches, "dna_budget": dna_budget,
                "segment_reads": segment_reads, "plan_version": PLAN_VERSION,
                "save_embeddings": opts.save_embeddings}
    token = _run_token() if dist else early.token if isinstance(early, EarlyWorkers) else _new_token()
    if rank != 0:
        manifest = _wait_for_manifest(rd, token)
    elif opts.resume:
        manifest = rd.read_manifest()
    else:
        manifest = None
    if manifest is not None or opts.resume:
        identity["input"] = parallel.input_fingerprint(records)   # the input is read whole before a resume
        if manifest is not None and manifest.get("input", {}) is None:   # see publish() below
            raise InputError(f"--resume refused: the run in {rd.root} was stopped before its input was read to "
                             "the end, so its checkpoints cannot be matched to an input. Rerun without --resume "
                             "to start over.")
        rd.check(manifest, identity)
        budget = given_budget or manifest["token_budget"]
        rd.check(manifest, {"token_budget": budget})
    else:
        if early is not None:
            budget, given, decided_s = early.budget, early.given, early.decided_s
        else:
            t_budget = time.perf_counter()
            budget, given = given_budget or _decide_budget(opts, models, devices, eo), bool(given_budget)
            decided_s = time.perf_counter() - t_budget
        tel.emit("token_budget", tokens=budget, given=given, decided_s=round(decided_s, 3))
    identity["token_budget"] = budget
    if rank == 0:
        if opts.resume:
            rd.make_dirs()
            rd.clear_claims()
            outputs.clear_embeddings(opts.outdir, resume=True)
            if opts.save_embeddings:
                _redo_units_without_parts(rd)
        else:
            rd.reset()
            outputs.clear_embeddings(opts.outdir)   # an earlier run's parts: not this run's frames
    engine_opts = {**eo, "token_budget": budget, "batches_per_unit": bpu}

    in_process = len(devices) == 1 and not (opts.skip_failing_units and dist is None)  # skipping needs a worker process
    def write_manifest(**planned) -> None:
        rd.write_manifest({**identity, "run_token": token, **planned, "virnucpro_version": __version__,
                           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    if rank == 0:   # before planning (workers wait for it); again with the unit count at the end
        identity["input"] = parallel.input_fingerprint(records, wait=False)   # None while still being read
        write_manifest()
    # the host chunks, translates and plans segment by segment while the GPUs embed the first units
    from virnucpro.models.dnabert import token_counter
    plans = PlanBuilder(budget, bpu, dna_budget, token_counter(models.dnabert) if dna_batches == "tokens" else None)
    chunks: list = []
    frames: list = []
    stop = threading.Event()
    loaded = threading.Event() if in_process else None   # the producer waits for it after one segment
    coordinator = None
    try:
        if in_process:
            loading = early if early is not None else \
                Background(_load_fast, models, devices[0], opts.precision, engine_opts, name="load-models")
        else:
            if isinstance(early, EarlyWorkers):   # started before the input was read
                coordinator = early.coordinator
            else:
                coordinator = _start_coordinator(opts, models, devices, engine_opts, rd, tel, time.time() - tel.now(),
                                                 token)
            coordinator.tel = tel
            tel.emit("workers_spawned", devices=list(devices), before_input=isinstance(early, EarlyWorkers))

        def publish(k, nuc, prot, last, dna_len) -> None:
            """Before each segment is planned: worker processes plan from what is published; once the
            input is read (its last segment), the manifest gets the input's identity (size, sha256 of
            the bytes read: known only now for a streamed input), so that a killed run resumes."""
            if last and rank == 0 and identity["input"] is None:
                identity["input"] = parallel.input_fingerprint(records)
                write_manifest()
            if coordinator is not None:
                rd.save_segment(k, nuc, prot, last, dna_len)
        producer = threading.Thread(target=_produce_timed, name="plan-producer", daemon=True,
                                    args=(records, opts, plans, chunks, frames, segment_reads, stop, tel, loaded,
                                          publish))
        producer.start()
        if in_process:
            with tel.stage("load_models") as st:
                try:
                    engine, load_s = loading.result()
                finally:
                    loaded.set()
                st.update(load_total_s=round(load_s, 3), phases=getattr(engine, "startup", None))
    except BaseException:
        stop.set()
        if coordinator is not None:
            coordinator.kill_all()
        raise
    done_before = rd.done_units()
    if rank == 0:
        tel.emit("units", already_done=len(done_before), resume=opts.resume)
    rows, rows_done = outputs.OutputRows(), threading.Event()   # the output rows, made as units finish
    row_maker = threading.Thread(target=_make_rows, name="output-rows", daemon=True,
                                 args=(rows, rd, plans, records, chunks, frames, rows_done))
    if rank == 0:
        row_maker.start()

    restore = parallel.install_stop_handlers(stop)
    sampler = GpuSampler(tel, gpu_indices(devices)).start()

    def expected_frames() -> int:
        """All frames once planned; before, the frames so far scaled to all reads (for the ETA)."""
        if plans.complete or not chunks:
            return len(frames)
        return int(len(frames) * records.expected_reads() / max(1, chunks[-1].read_index + 1))

    def frames_of(units) -> int:
        units_now = plans.prep.plan.units
        return sum(len(units_now[u].frames) for u in units if u < len(units_now))

    try:
        with progress_bar(opts.progress and rank == 0) as prog, gc_paused():
            task = prog.add_task("embedding frames", total=expected_frames(), completed=frames_of(done_before),
                                 rate="")
            t_embed, t_from = time.perf_counter(), tel.now()
            if in_process:
                def on_progress(done: int, esm_tokens: int) -> None:
                    dt = time.perf_counter() - t_embed
                    prog.update(task, completed=frames_of(done_before) + done, total=expected_frames(),
                                rate=f"{esm_tokens / dt:,.0f} ESM tok/s" if dt else "")

                owner = f"r{rank}" if dist else "w0"
                wtel = parallel.WorkerTelemetry(owner)
                wtel.t0 = tel.t0
                wtel.emit("worker_start", device=devices[0], pid=os.getpid())
                if devices[0].startswith("cuda"):
                    import torch
                    torch.cuda.reset_peak_memory_stats(torch.device(devices[0]))
                totals = parallel.work(engine, plans, clf, wtel, rd, owner, stop,
                                       stale_s=opts.stale_s if dist else None, on_progress=on_progress)
                stats = [parallel.finish_worker(rd, owner, devices[0], engine, totals, wtel)]
                if dist and rank != 0:
                    return None
                if dist:
                    stats = _gather_rank_stats(rd, dist[1], stats)
            else:
                def on_poll(done: set[int]) -> None:
                    prog.update(task, completed=frames_of(done), total=expected_frames())

                coordinator.describe_unit = lambda u: _describe_unit(u, plans.prep, frames, chunks, records.records)
                coordinator.on_poll = on_poll
                stats = coordinator.run(stop, plans)
            t_to = tel.now()
    finally:
        stop.set()            # ends the producer if the run stops early
        restore()
        sampler.stop()
        rows_done.set()
    producer.join()
    if row_maker.is_alive():
        row_maker.join()
    plans.check()
    prep = plans.prep
    n_units = len(prep.plan.units)
    if rank == 0:
        write_manifest(n_units=n_units, n_frames=len(frames))
    left = n_units - len(rd.done_units()) if plans.complete else 1
    if left:
        log.warning("stopped with %d of %d work units unfinished; rerun the same command with --resume", left, n_units)
        raise KeyboardInterrupt
    scores = rd.load_scores(prep.plan, len(frames))
    if rank == 0:
        rd.remove_segments()
    totals: dict[str, Any] = {}
    for s in stats:
        parallel._add(totals, s)
    for k in ("dna_s", "esm_s", "cls_s", "io_wait_s", "esm_tokens", "dna_tokens", "frames"):
        totals.setdefault(k, 0)
    if stats and all("t_start" in s for s in stats):   # the window in which workers embedded
        t_planned = t_from
        t_from, t_to = min(s["t_start"] for s in stats), max(s["t_end"] for s in stats)
        if not in_process:   # as in one process: the wait for the models left after planning
            tel.emit("stage", stage="load_models", wall_s=round(max(0.0, t_from - t_planned), 4), workers=len(stats))
    embed_wall = t_to - t_from
    extra = parallel.summarize_workers(stats, embed_wall)
    extra.update(units_total=n_units, units_skipped=len(done_before), units_computed=n_units - len(done_before),
                 oom_retries=int(totals.get("oom_retries", 0)),
                 workers_lost=sum(1 for e in tel.events if e["event"] == "worker_lost"),
                 peak_tflops=max((s["peak_tflops"] for s in stats if s.get("peak_tflops")), default=None))
    mfus = [s["mfu_esm"] for s in stats if s.get("mfu_esm")]
    mems = [s["peak_gpu_mem_gib"] for s in stats if s.get("peak_gpu_mem_gib") is not None]
    return chunks, frames, Scored(scores, totals, embed_wall, opts.precision,
                                  len({d for d in devices if d.startswith("cuda")}) * (dist[1] if dist else 1),
                                  sampler.mean_util(t_from, t_to), prep.plan.packing_efficiency,
                                  sum(mfus) / len(mfus) if mfus else None, max(mems) if mems else None, extra,
                                  rows)


def _make_rows(rows, rd, plans, records, chunks, frames, finished: threading.Event) -> None:
    """A thread beside the embedding: the output rows of every unit as it finishes, and once the
    plan is complete the score-independent parts, so that the write stage at the end only puts
    them together. Gives up quietly on an error: the write stage makes what is missing itself."""
    seen: set[int] = set()
    try:
        while True:
            last = finished.is_set()
            for u in sorted(rd.done_units() - seen):
                seen.add(u)
                if rd.unit_path(u).exists():        # not a unit given up on
                    with np.load(rd.unit_path(u)) as z:
                        rows.add(frames, z["frames"], z["scores"])
            if plans.complete:   # so the input is read and checked
                rows.prepare(records.result(), chunks, frames)
            if last:
                return
            finished.wait(0.5)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.debug("output rows made ahead stopped: %s", exc)


def _produce_timed(records, opts, plans, chunks, frames, segment_reads, stop, tel, hold=None, publish=None) -> None:
    """The producer thread: chunk, translate and plan; its stage and plan events at the end."""
    t0 = time.perf_counter()
    produce(records, opts.chunk_length, opts.chunking, plans, chunks, frames, segment_reads, stop, hold, publish)
    if plans.error is not None:   # e.g. the rest of the input was refused: the GPUs stop now, not after their units
        stop.set()
    if plans.complete:
        tel.emit("stage", stage="chunk_translate", wall_s=round(time.perf_counter() - t0, 4), items=len(records.records),
                 chunks=len(chunks), frames=len(frames), overlapped=True)
        log.info("%d reads -> %d chunks -> %d kept frames", len(records.records), len(chunks), len(frames))
        emit_plan(tel, plans.prep, len(frames))


def _load_fast(models, device: str, precision: str, engine_opts: dict):
    from virnucpro.engines import make_engine
    t = time.perf_counter()
    return make_engine("fast", models, device, precision=precision, **engine_opts), time.perf_counter() - t


def _start_coordinator(opts, models, devices, engine_opts, rd, tel, run_epoch: float, token: str) -> "parallel.Coordinator":
    """A coordinator whose workers start at once (they load their models while this process reads,
    chunks and plans); they claim units only once the manifest with ``token`` exists, planning from
    the segments this process publishes."""
    base = parallel.WorkerSpec(
        owner="", device="", chunk_length=opts.chunk_length, models=models,
        allow_classifier_mismatch=opts.allow_classifier_mismatch, precision=opts.precision,
        engine_opts=engine_opts, outdir=Path(opts.outdir), log_file=Path(opts.outdir) / LOG_NAME,
        run_epoch=run_epoch, threads=max(1, (os.cpu_count() or 1) // len(devices)) if devices[0] == "cpu" else None,
        run_token=token)
    coordinator = parallel.Coordinator(base, devices, rd, tel, describe_unit=lambda u: f"unit {u}",
                                       skip_failing_units=opts.skip_failing_units)
    coordinator.start()
    return coordinator


def _describe_unit(u: int, prep, frames, chunks, records) -> str:
    ids = []
    for i in prep.plan.units[u].frames.tolist():
        rid = records[chunks[frames[i][1]].read_index].id
        if not ids or ids[-1] != rid:
            ids.append(rid)
    uniq = sorted(set(ids))
    return f"{len(uniq)} read(s): {', '.join(uniq[:10])}{', ...' if len(uniq) > 10 else ''}"


def _new_token() -> str:
    """A fresh run's token (its workers wait for the manifest that carries it)."""
    import uuid
    return uuid.uuid4().hex


def _run_token() -> str:
    """The same string on every rank of one torchrun/Slurm launch (not of an earlier one)."""
    for k in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"):
        if os.environ.get(k):
            return f"{k}={os.environ[k]}"
    return f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"


def _wait_for_manifest(rd, token: str | None, timeout: float = 3600.0) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        m = rd.read_manifest() if rd.manifest_path.exists() else None
        if m is not None and m.get("run_token") == token:
            return m
        time.sleep(0.5)
    raise VirnucproError(f"rank 0 wrote no manifest for this launch in {rd.root} within {timeout:.0f} s")


def _gather_rank_stats(rd, world: int, mine: list[dict], timeout: float = 30.0) -> list[dict]:
    """Rank 0: the other ranks' totals (they write them as soon as all units are done)."""
    t0 = time.time()
    while True:
        stats = [json.loads(p.read_text()) for p in sorted(rd.workers.glob("r*.json"))]
        if len(stats) >= world or time.time() - t0 > timeout:
            return stats or mine
        time.sleep(0.5)
