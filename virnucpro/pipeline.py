"""`virnucpro predict`: FASTA in, VirNucPro's prediction files out.

    read (fasta) -> chunk (chunking) -> translate (six frames, keep stop-free) ->
    embed (engine: DNABERT-S, ESM-2) -> classify (MLP) -> consensus -> write (outputs)

Input and models are checked before anything is written. (A fresh fast-engine run into a new or
empty output directory starts embedding the first reads while the rest of the input is read; if the
rest turns out bad, the run stops and removes everything it wrote.) Frames are embedded and classified in
blocks, so memory stays bounded whatever the input size: only two scores per frame are kept.

The output directory is locked for the whole run (``virnucpro.io.lock``: a second run into it is
refused at once), and the output files appear all at once or not at all (``virnucpro.io.outset``:
written into a staging folder, then moved into place with run.json, the commit record, last). A run
that created the directory and stops on a bad input or model (exit 2) removes it again.

The fast engine works through checkpointed work units (``virnucpro.run.fast.score_fast`` with an
executor of ``virnucpro.run.executor``; docs/multi-gpu.md): in this process for one worker, in spawned
worker processes for several GPUs/workers, or as one rank under torchrun; the outputs are merged from
the unit files, so ``--resume`` continues a killed run and every layout gives byte-identical outputs.
"""

from __future__ import annotations

import logging
import platform
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from virnucpro import __version__
from virnucpro.io import outputs, paths
from virnucpro.core.background import GIL_SWITCH_S
from virnucpro.errors import InputError, VirnucproError
from virnucpro.io.fasta import RecordStream
from virnucpro.io.lock import OutdirLock
from virnucpro.io.outset import OutputSet
from virnucpro.io.source import is_stream
from virnucpro.models import layout
from virnucpro.models.classifier import load_classifier
from virnucpro.core.progress import progress_bar
from virnucpro.core.telemetry import GpuSampler, Telemetry, gpu_indices, peak_gpu_mem_gib, setup_logging
from virnucpro.io.paths import Paths
from virnucpro.run.devices import Rank, parse_devices, rank_env
from virnucpro.run.result import Scored, scaling_line
from virnucpro.run.rows import MemoryRows
from virnucpro.prep.frames import chunk_and_translate
from virnucpro.options import (PredictOptions, apply_tuned, check_gpus, choose_engine, cpu_threads,
                               refuse_earlier_run, resolve_device, streams_input)

log = logging.getLogger(__name__)


@dataclass
class _Setup:
    """What ``predict`` decided before reading the input."""
    t_start: float
    models: Any
    clf: Any
    clf_info: dict
    device: str
    engine_name: str
    synthetic: Any
    rank: Rank | None                            # this process's rank under torchrun
    devices: list[str]
    executor: Any                                # the fast engine's (virnucpro.run.executor), else None
    records: RecordStream                        # the input, being read since the early start
    streaming: bool                              # embedding may start before the input is all read
    times: dict = field(default_factory=dict)   # run clock when the early start began, when checks ended
    created: bool = False                        # this run made the output directory
    shared: Any = None                           # run.executor.SharedModels of a multi-sample command, else None


def predict(opts: PredictOptions, shared=None) -> dict[str, Any]:
    """Run the whole pipeline; returns the summary dict (also logged as the `summary` event).
    ``shared``: a ``virnucpro.run.executor.SharedModels`` that keeps the loaded engine for the next
    run of the same command (a multi-sample predict, ``virnucpro.samples``); None: this run's only."""
    with cpu_threads(opts.threads):
        return _predict_all(opts, shared)


@dataclass
class Decided:
    """What ``decide`` settled from the options alone, before any input is read or folder made."""
    opts: PredictOptions                         # with the engine's precision and batches per unit settled
    models: Any                                  # models.layout.ModelSet (paths; fingerprints not yet)
    device: str
    engine_name: str
    rank: Rank | None                            # this process's rank under torchrun
    devices: list[str]                           # one device string per worker


def decide(opts: PredictOptions) -> Decided:
    """Everything about the options a user can get wrong that needs no input and no output
    directory: chunk length, models (their files found), device, GPUs, engine. InputError or
    ModelError (exit 2) before anything is written; a multi-sample run asks once, before its first
    sample."""
    if opts.chunk_length not in (300, 500):
        raise InputError(f"--chunk-length must be 300 or 500 (the published classifiers), not {opts.chunk_length}")
    # the paths first: the models' loading (or the workers) can start before the rest is checked
    models = layout.resolve(opts.models, opts.chunk_length, opts.esm, opts.dnabert, opts.classifier,
                            fingerprint=False)
    device = resolve_device(opts.device)
    check_gpus(opts.gpus, device)
    rank = rank_env()
    opts = apply_tuned(opts, device, "fast" if opts.engine in ("auto", "fast") else opts.engine, rank)
    engine_name, opts = choose_engine(opts, device, layout.esm_weights_path(models.esm).stat().st_size)
    if rank is not None and is_stream(opts.input):   # every rank reads the input by itself
        raise InputError(f"input {opts.input}: under torchrun every rank reads the input, so it must be a "
                         "file, not standard input, a pipe or a FIFO")
    if engine_name == "fast" and opts.precision == "fp8":
        log.warning("--precision fp8 is experimental: its labels agreed with the reference engine's on only "
                    "89.0%% of frames (synthetic ESM-2 3B, H100) for 1.19x the fp16 path's ESM-2 speed "
                    "(docs/benchmarks.md#fp8); use fp16 (the default) for results")
    if engine_name == "fast":
        devices = parse_devices(opts.gpus, opts.workers, device) if rank is None else \
            [f"cuda:{rank.local}" if device.startswith("cuda") else "cpu"]
    else:
        if opts.resume or rank is not None:
            raise InputError("--resume and multi-process runs need the fast engine (--engine fast)")
        devices = [device]
    return Decided(opts, models, device, engine_name, rank, devices)


def _predict_all(opts: PredictOptions, shared=None) -> dict[str, Any]:
    t_start = time.perf_counter()
    # 1. Everything a user can get wrong is checked before anything is written.
    outdir = Path(opts.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"-o/--outdir {opts.outdir}: exists and is not a directory")
    d = decide(opts)
    opts, models, device, engine_name, rank, devices = d.opts, d.models, d.device, d.engine_name, d.rank, d.devices
    if engine_name != "fast" and ((opts.workers or 1) > 1 or opts.gpus not in (None, "1")):
        log.warning("the reference engine runs in one process on %s (--gpus/--workers ignored)", device)
    streaming = streams_input(opts, engine_name, rank)   # decided before early workers may write there
    created = not outdir.exists()
    from virnucpro.core.mptemp import use_run_tempdir
    use_run_tempdir()                                    # (a no-op where the command line did it)
    lock = claim_outdir(opts, rank)                      # before anything is written, models loaded included
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, GIL_SWITCH_S))   # virnucpro.core.background: why
    executor = None
    try:
        if engine_name == "fast":   # a fresh run's models load (or its workers start) while the input is read
            from virnucpro.run.executor import choose_executor
            executor = choose_executor(opts, models, devices, rank, shared)
            executor.start_early(time.time() - (time.perf_counter() - t_start))
        early_t = time.perf_counter() - t_start
        # read in a thread from now on; a fast run takes the reads segment by segment and keeps none
        # (what it reads ahead of its planning waits in an unnamed file in OUTDIR), so that its memory
        # does not grow with the input; the reference engine and --save-embeddings keep every record
        keep = engine_name != "fast" or opts.save_embeddings
        from virnucpro.plan.planner import SEGMENT_READS
        records = RecordStream(opts.input, opts.duplicate_ids, keep=keep,
                               window=int(opts.segment_reads or SEGMENT_READS),
                               spool_dir=outdir if outdir.is_dir() else None,
                               **(_reading_pause(executor) if streaming else {}))
        models.fingerprints = model_fingerprints(models, shared)
        clf, clf_info = load_classifier(models.classifier, opts.chunk_length, opts.allow_classifier_mismatch)
        setup = _Setup(t_start, models, clf, clf_info, device, engine_name,
                       models.synthetic or clf_info.get("synthetic"), rank, devices, executor, records, streaming,
                       {"early_start_t": round(early_t, 4), "checked_t": round(time.perf_counter() - t_start, 4)},
                       created, shared)
        return _predict(opts, setup)
    except BaseException as exc:
        if executor is not None:   # early workers (e.g. of a bad input) must not outlive the run
            executor.abort()
            if not executor.in_process:   # killed workers' DataLoader children may still use the run's
                from virnucpro.core.mptemp import keep_for_sweep   # temp folder: the next run sweeps it
                keep_for_sweep()
        if created and lock is not None and isinstance(exc, VirnucproError) and exc.exit_code == 2:
            _remove_written(outdir, created=True)   # a bad input or model leaves no directory behind
        raise
    finally:
        if lock is not None:
            lock.release()
        sys.setswitchinterval(switch)


def claim_outdir(opts: PredictOptions, rank: Rank | None) -> OutdirLock | None:
    """Lock the output directory for this run (creating it; a live run's lock refuses this one at
    once), then, under the lock: refuse planted symbolic links and an earlier run's results without
    --force / --resume (``refuse_earlier_run``), and finish or drop what a run killed while writing
    its outputs left (``OutputSet.recover``). None on a torchrun rank other than 0: its rank 0 holds
    the lock for the launch (and writes there first)."""
    if rank is not None and rank.rank != 0:
        return None
    outdir = Path(opts.outdir)
    for name in (paths.LOG_NAME, paths.RUN_DIRNAME, paths.EMBEDDINGS):
        if (outdir / name).is_symlink():
            raise InputError(f"{outdir / name} is a symbolic link: refusing to write through it (remove it)")
    lock = OutdirLock.acquire(outdir)
    try:
        refuse_earlier_run(opts)
        done = OutputSet(outdir).recover()
    except BaseException:
        lock.release()
        raise
    if done == "rolled forward":
        log.warning("%s: a run killed while moving its outputs into place left them whole in %s: moved into "
                    "place", outdir, paths.STAGING_DIRNAME)
    return lock


def _reading_pause(executor) -> dict:
    """While this process loads the models (one worker), the input's reader stops after two
    planning segments: the GPU cannot start before the models anyway, and reading on would take
    the interpreter lock from the weight copy (measured on an H200: ESM-2's weights took 5.7 s beside
    the reading of 660,000 reads, ~4.2 s beside the first segments; docs/benchmarks.md, start-up)."""
    loading = executor.models_loading() if executor is not None else None
    if loading is None:
        return {}
    from virnucpro.plan.planner import SEGMENT_READS
    return {"pause_while": loading, "pause_after": 2 * SEGMENT_READS}


def _remove_written(outdir: Path, created: bool) -> None:
    """What a refused streaming run wrote: the output directory if the run created it, else its
    contents (it was empty). The log file's handler is closed first."""
    import shutil
    root = logging.getLogger("virnucpro")
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == outdir.resolve():
            root.removeHandler(h)
            h.close()
    if created:
        shutil.rmtree(outdir, ignore_errors=True)
        return
    for p in outdir.iterdir():
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def _predict(opts: PredictOptions, setup: _Setup) -> dict[str, Any]:
    outdir = Path(opts.outdir)
    stream, streaming = setup.records, setup.streaming
    if not streaming:
        stream.result()   # the whole input checked before anything is written
    else:   # refused before anything is written: a file that is not FASTA, or a bad one read in one block
        stream.wait(0)
        if stream.failed or stream.fraction >= 1.0:
            stream.result()
    try:
        return _predict_into(opts, setup, stream, streaming)
    except BaseException:
        if streaming and stream.failed:   # the input was refused after the run began writing
            if setup.executor is not None:
                setup.executor.abort()    # no worker may write after the clean-up
            _remove_written(outdir, setup.created)
        raise


def _predict_into(opts: PredictOptions, setup: _Setup, stream: RecordStream, streaming: bool) -> dict[str, Any]:
    t_start, models, clf, clf_info, device = setup.t_start, setup.models, setup.clf, setup.clf_info, setup.device
    engine_name, synthetic, devices = setup.engine_name, setup.synthetic, setup.devices
    outdir = Path(opts.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rank = setup.rank.rank if setup.rank else 0
    setup_logging(Paths(outdir).rank_log(rank), opts.verbose)
    tel = Telemetry()
    tel.t0 -= time.perf_counter() - t_start  # the run's clock starts at the command's start
    if synthetic:
        log.warning("models are SYNTHETIC (random weights, preset %s, seed %s): outputs are NOT biology",
                    synthetic.get("preset"), synthetic.get("seed"))
    n_gpus = len({d for d in devices if d.startswith("cuda")})
    tel.emit("run_start", version=__version__, engine=engine_name, precision=opts.precision if engine_name == "fast" else "fp32",
             chunk_length=opts.chunk_length, chunking=opts.chunking, device=device, n_gpus=n_gpus,
             n_workers=len(devices), devices=devices, resume=opts.resume,
             rank=[setup.rank.rank, setup.rank.world, setup.rank.local] if setup.rank else None,
             synthetic=bool(synthetic), models=models.describe(), input=str(opts.input), setup_t=setup.times,
             streaming_input=streaming, host=socket.gethostname(), python=sys.version.split()[0],
             tuned=opts.tuned)

    if engine_name == "fast":   # (it clears an earlier run's embeddings parts with its checkpoints)
        from virnucpro.run.fast import score_fast
        scored = score_fast(opts, stream, models, clf, devices, tel, setup.executor)
        if scored is None:    # a torchrun rank other than 0: its units are checkpointed, rank 0 writes
            return {"rank": rank, "outdir": str(outdir)}
    else:   # (an earlier run's embeddings stay until this run's output set replaces them)
        scored = _score_reference(opts, stream.result(), models, clf, device, tel, setup.shared)
    n_frames = scored.n_frames
    records = stream.result()   # None for a fast run: its reads are in the spooled rows
    n_reads = stream.n_read
    stream.close()
    tel.emit("stage", stage="read_input", wall_s=round(stream.read_s or 0.0, 4), items=n_reads, overlapped=True)
    tot = scored.totals
    tel.emit("stage", stage="embed_dnabert", wall_s=round(tot["dna_s"], 4), items=tot.get("frames", n_frames),
             tokens=tot.get("dna_tokens"))
    tel.emit("stage", stage="embed_esm", wall_s=round(tot["esm_s"], 4), items=tot.get("frames", n_frames),
             tokens=tot["esm_tokens"])
    tel.emit("stage", stage="classify", wall_s=round(tot["cls_s"], 4), items=tot.get("frames", n_frames))
    if tot.get("io_wait_s") is not None:
        tel.emit("stage", stage="io_wait", wall_s=round(tot["io_wait_s"], 4), items=tot.get("frames", n_frames))
    embed_wall = scored.embed_wall
    oset = OutputSet(outdir, opts.faults.in_write if opts.faults else None)
    with tel.stage("write") as st:   # into the staging folder; moved into place by the commit below
        try:
            stage = oset.begin()
            rows = scored.rows   # the fast engine made most of them during embedding (virnucpro.run.rows)
            ahead = rows.made_ahead
            counts = rows.write(stage, records, bool(synthetic))
            if counts["skipped_reads"]:
                log.error("%d frames of %d reads got no prediction (work units skipped with --skip-failing-units); "
                          "see %s", counts["skipped_frames"], len(counts["skipped_reads"]), paths.SKIPPED_READS)
            if synthetic:
                outputs.write_synthetic_note(stage, {"models": models.describe(), "synthetic": synthetic})
            st.update(items=counts["frames"], rows_made_ahead=ahead)
            embeddings = None
            if opts.save_embeddings:
                if engine_name == "fast":   # its parts wait beside its checkpoints
                    oset.adopt_parts(Paths(outdir).run_embeddings)
                embeddings = rows.embedding_index(stage)
                st.update(embeddings=embeddings)
        except BaseException:
            oset.abandon()
            raise

    wall = time.perf_counter() - t_start
    summary = {
        "wall_s": round(wall, 3), "reads": n_reads, "chunks": scored.n_chunks, "frames": counts["frames"],
        "skipped_frames": counts["skipped_frames"], "skipped_reads": len(counts["skipped_reads"]),
        "viral_chunks": counts["viral_chunks"], "chunks_with_frames": counts["chunks_with_frames"],
        "viral_reads": counts["viral_reads"], "no_kept_frame_reads": counts["no_kept_frame_reads"],
        "reads_with_x": stream.flags.reads,   # accepted, their codons dropped as the original does (io.records)
        "engine": engine_name, "precision": scored.precision, "device": device,
        "n_gpus": scored.n_gpus, "chunk_length": opts.chunk_length, "synthetic": bool(synthetic),
        "reads_per_s": round(n_reads / wall, 2) if wall else None,
        "frames_per_s": round(tot.get("frames", n_frames) / embed_wall, 2) if embed_wall else None,
        "esm_tokens_per_s": round(tot["esm_tokens"] / tot["esm_s"], 1) if tot["esm_s"] else None,
        "embed_wall_s": round(embed_wall, 3),
        "packing_efficiency": scored.packing_efficiency,
        "gpu_util_mean": scored.gpu_util_mean,  # during the embedding stages, mean over the GPUs
        "io_wait_s": round(tot["io_wait_s"], 3) if tot.get("io_wait_s") is not None else None,
        "mfu_esm": scored.mfu_esm,
        "peak_gpu_mem_gib": scored.peak_gpu_mem_gib,
        **scored.extra,
        "stages": {k: round(v, 4) for k, v in tel.stage_times().items()},
        "overlapped_stages": sorted({e["stage"] for e in tel.events if e["event"] == "stage" and e.get("overlapped")}),
        "outdir": str(outdir),
        "embeddings": embeddings,   # --save-embeddings: parts, bytes, frames
    }
    tel.emit("summary", **summary)
    if engine_name == "fast":
        log.info(scaling_line(summary))
    manifest = {"virnucpro_version": __version__, "command": sys.argv, "options": _options(opts),
                "engine": engine_name, "precision": summary["precision"],
                "engine_config": opts.engine_config.to_json() if engine_name == "fast" else None,
                "tuned": opts.tuned,   # the tuned file that filled settings, or why none did
                "chunk_length": opts.chunk_length,
                "chunking": opts.chunking, "models": models.describe(), "synthetic": synthetic,
                "classifier": {**clf_info, "chunk_length_mismatch": clf_info.get("chunk_length") not in
                               (None, opts.chunk_length)},
                "input": {"path": str(opts.input), **stream.identity},   # of the bytes parsed (io.source)
                "machine": {"host": socket.gethostname(), "platform": platform.platform(), "device": device,
                            "devices": devices, "gpu": _gpu_name(device), **_torch_threads()},
                "wall_s": summary["wall_s"], "summary": summary,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _commit(oset, manifest, tel, engine_name == "fast", opts.save_embeddings)
    return summary


def _commit(oset: OutputSet, manifest: dict, tel, fast: bool, embeddings: bool) -> None:
    """run.json, the commit record, then the staged set moved into place (``virnucpro.io.outset``).
    A fast run's embeddings parts then leave the run directory: the committed set holds them (a
    --resume takes them back from there while they are this run's)."""
    t = time.perf_counter()
    token = None
    if fast:
        from virnucpro.run.rundir import RunDir
        token = (RunDir(oset.outdir).read_manifest() or {}).get("run_token")
    try:
        oset.commit(manifest, token)
    except BaseException:
        oset.abandon()   # (a set staged whole stays, for the next run to move into place)
        raise
    if fast and embeddings:
        import shutil
        shutil.rmtree(Paths(oset.outdir).run_embeddings, ignore_errors=True)
    tel.emit("commit", wall_s=round(time.perf_counter() - t, 4))


def _score_reference(opts, records, models, clf, device, tel, shared=None) -> Scored:
    """The reference engine, in this process: models load while the host chunks and translates
    (or come from ``shared``, loaded by an earlier sample of the command)."""
    from virnucpro.core.background import Background
    from virnucpro.engines import make_engine

    def load():
        t = time.perf_counter()
        return make_engine("reference", models, device), time.perf_counter() - t

    if shared is None:
        loading = Background(load, name="load-models")
    else:
        loading = Background(shared.get, ("reference", str(models.esm), str(models.dnabert), device), load,
                             name="load-models")
    chunks, frames = _chunk_translate_stage(records, opts, tel)
    with tel.stage("load_models") as st:  # wall_s: the wait left after chunk_translate
        engine, load_s = loading.result()
        st.update(load_total_s=round(load_s, 3))
    if device.startswith("cuda"):
        import torch
        torch.cuda.reset_peak_memory_stats(torch.device(device))
    sampler = GpuSampler(tel, gpu_indices([device])).start()
    with progress_bar(opts.progress) as prog:
        task = prog.add_task("embedding frames", total=len(frames), rate="")
        t_embed = time.perf_counter()

        def on_progress(done: int, esm_tokens: int) -> None:
            dt = time.perf_counter() - t_embed
            prog.update(task, completed=done, rate=f"{esm_tokens / dt:,.0f} ESM tok/s" if dt and esm_tokens else "")

        t_from = tel.now()
        keep = None
        if opts.save_embeddings:
            def keep(k: int, idx: np.ndarray, features: np.ndarray) -> None:   # staged until the commit
                outputs.save_embedding_part(Paths(opts.outdir).staging, k, idx, features)
        scores = engine.score(frames, clf, tel, on_progress, block=opts.block_frames, keep_features=keep)
        t_to = tel.now()
    sampler.stop()
    return Scored(MemoryRows.whole(chunks, frames, scores), engine.totals, t_to - t_from, "fp32", _n_gpus(device),
                  sampler.mean_util(t_from, t_to), peak_gpu_mem_gib=peak_gpu_mem_gib(device))


def model_fingerprints(models, shared=None) -> dict:
    """``layout.fingerprints(models)``, or the value an earlier run of a multi-sample command
    computed for the same model files."""
    if shared is None:
        return layout.fingerprints(models)
    return shared.once(("fingerprints", str(models.esm), str(models.dnabert), str(models.classifier)),
                       lambda: layout.fingerprints(models))


def _chunk_translate_stage(records, opts, tel):
    with tel.stage("chunk_translate") as st:
        chunks, frames = chunk_and_translate(records, opts.chunk_length, opts.chunking)
        st.update(items=len(records), chunks=len(chunks), frames=len(frames))
    log.info("%d reads -> %d chunks -> %d kept frames", len(records), len(chunks), len(frames))
    return chunks, frames


def _options(opts: PredictOptions) -> dict:
    """The options for run.json (``faults`` only where a test injected some)."""
    d = asdict(opts)
    if d["faults"] is None:
        del d["faults"]
    del d["tuned"]   # run.json's own "tuned"
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def _torch_threads() -> dict:
    """torch's CPU thread pools in this process (bounded by -t/--threads), for run.json."""
    import torch
    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}


def _n_gpus(device: str) -> int:
    return 1 if device.startswith("cuda") else 0


def _gpu_name(device: str) -> str | None:
    """The GPU's name for the manifest. Through NVML where this process has not initialised CUDA
    (a coordinator of worker processes): initialising it only to read a name cost the end of the
    run a few tenths of a second."""
    if not device.startswith("cuda"):
        return None
    import torch
    if not torch.cuda.is_initialized():
        from virnucpro.core.nvml import gpu_name
        name = gpu_name(torch.device(device).index or 0)
        if name is not None:
            return name
    return torch.cuda.get_device_name(torch.device(device))   # no NVML: ask CUDA
