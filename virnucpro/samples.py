"""Many samples in one ``virnucpro predict``: ``predict a.fq.gz b.fq.gz ... -o OUTROOT`` or
``predict --samples sheet.tsv -o OUTROOT``.

Each sample is an ordinary run of ``pipeline.predict`` into ``OUTROOT/<sample>/`` (the same files,
run.json commit record, lock and resume checkpoints as a one-sample run, byte-identical prediction
files), one after the other in this process, with what can be shared kept from one to the next
(``run.executor.SharedModels``): the engine with its models on the GPU, the token budget decided
before the first loading, the models' fingerprints. ``OUTROOT/samples_summary.tsv`` lists every
sample (written atomically at the end, also after a stop), and a table is printed.

How the GPU is kept busy across samples, and why so far and no further: the GPU's idle time between
two samples of one command is the host's work from the last unit of one sample to the first unit of
the next: the write and commit of the outputs, the next input's first segment read, chunked,
translated and planned. Loading the models (seconds for ESM-2 3B, plus the process's start, the
imports and CUDA's initialisation: what 20 separate commands pay 20 times) is what the sharing
removes; docs/benchmarks.md#samples has the measured difference. Running the next sample's host
work beside the current sample's embedding would need two runs in flight in one process, whose
logs, locks, signal handlers and telemetry are each the process's one run's today; the gap it
would close is the host time of one segment, measured in the same section, and is left as it is.

Failures: a sample whose input, or whose output folder, is refused (an InputError: not FASTA/FASTQ,
unreadable, a folder holding an earlier run, ...) or that fails inside (an internal error, its
traceback in that sample's log) is named on stderr and in the summary with its one-line reason; the
others run. The command then exits ``SAMPLES_FAILED_EXIT`` (4). A machine problem (full disk, no
permission: exit 3) or Ctrl-C (130) stops the command: the samples not run are listed as such.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from virnucpro.core.files import sha256_file
from virnucpro.core.progress import shared_display
from virnucpro.errors import InputError, VirnucproError, is_environment_error
from virnucpro.io import paths
from virnucpro.io.lock import OutdirLock
from virnucpro.io.outputs import write_samples_summary
from virnucpro.io.outset import SET_FIELD, committed_record
from virnucpro.io.samplesheet import Sample
from virnucpro.options import PredictOptions, refuse_earlier_run
from virnucpro.pipeline import decide, model_fingerprints, predict
from virnucpro.run.devices import rank_env
from virnucpro.run.executor import SharedModels

log = logging.getLogger("virnucpro.pipeline")

SAMPLES_FAILED_EXIT = 4     # the command ran to its end but at least one sample failed (the others are done)


@dataclass
class SampleResult:
    sample: Sample
    status: str                      # ok | failed | not_run
    summary: dict | None = None      # the run's summary (ok), from its run.json when skipped on --resume
    seconds: float | None = None     # this command's time on it (the earlier run's for a skipped one)
    message: str = ""                # failed: the one-line reason; ok: a note (skipped on --resume)

    def row(self) -> dict[str, Any]:
        s = self.summary or {}
        return {"sample": self.sample.id, "input": str(self.sample.path), "status": self.status,
                "reads": s.get("reads"), "chunks": s.get("chunks"), "kept_frames": s.get("frames"),
                "viral_reads": s.get("viral_reads"),
                "seconds": None if self.seconds is None else f"{self.seconds:.2f}", "message": self.message}


def sample_outdir(outroot: Path, sample: Sample) -> Path:
    return Path(outroot) / sample.id


def predict_samples(opts: PredictOptions, samples: list[Sample]) -> list[SampleResult]:
    """Every sample of ``samples`` into ``opts.outdir``/<id>/ (``opts.input`` is ignored); the
    results in order. Options, models and (without --force/--resume) every sample's folder are
    checked before any work: InputError/ModelError (exit 2)."""
    outroot = Path(opts.outdir)
    if outroot.exists() and not outroot.is_dir():
        raise InputError(f"-o/--outdir {outroot}: exists and is not a directory")
    if rank_env() is not None:
        raise InputError("several samples under torchrun/Slurm ranks are not supported: launch one run per sample")
    per_sample = [replace(opts, input=s.path, outdir=sample_outdir(outroot, s)) for s in samples]
    decided = decide(per_sample[0])   # options and models once: the same for every sample
    for o in per_sample:
        if o.outdir.exists() and not o.outdir.is_dir():
            raise InputError(f"{o.outdir}: exists and is not a directory (a sample's output folder)")
        refuse_earlier_run(o)         # a fresh run is refused before any work, naming the sample's folder
    lock = OutdirLock.acquire(outroot)   # one multi-sample command per OUTROOT (each sample's folder has its own)
    shared = SharedModels()
    results: list[SampleResult] = []
    try:
        with shared_display(opts.progress) as bar:
            task = bar.add_task("samples", total=len(samples), rate="")
            for s, o in zip(samples, per_sample):
                bar.update(task, description=f"samples ({s.id})")
                try:
                    results.append(_run_sample(s, o, decided.models, shared))
                except BaseException as exc:   # a stop or the machine's problem ends the command here
                    why = "stopped while it ran (rerun with --resume to continue)" \
                        if isinstance(exc, KeyboardInterrupt) else f"the command stopped here: {exc}"
                    results.append(SampleResult(s, "not_run", message=why))
                    raise
                bar.advance(task)
                if results[-1].status == "failed":
                    print(f"virnucpro: sample {s.id} failed: {results[-1].message}", file=sys.stderr)
            bar.update(task, description="samples")
    finally:
        shared.close()
        results += [SampleResult(s, "not_run", message="the command stopped before this sample")
                    for s in samples[len(results):]]
        write_samples_summary(Path(outroot) / paths.SAMPLES_SUMMARY, [r.row() for r in results])
        lock.release()
    return results


def _run_sample(sample: Sample, opts: PredictOptions, models, shared: SharedModels) -> SampleResult:
    """One sample: skipped when --resume finds it finished, else ``predict``; a sample's failure is
    its result (a stop or a machine problem is the command's: raised)."""
    t = time.perf_counter()
    if opts.resume:
        done = finished_earlier(opts, models, shared)
        if done is not None:
            return SampleResult(sample, "ok", done, done.get("wall_s"),
                                "finished by an earlier run: skipped (--resume)")
        if not opts.outdir.is_dir() or not any(opts.outdir.iterdir()):
            opts = replace(opts, resume=False)   # a sample the earlier command never reached: a fresh run
    try:
        summary = predict(opts, shared)
    except KeyboardInterrupt:
        raise
    except VirnucproError as exc:
        if exc.exit_code == 3:            # the machine's (full disk, permissions): the next sample would fail too
            raise
        return SampleResult(sample, "failed", seconds=time.perf_counter() - t, message=str(exc))
    except Exception as exc:  # noqa: BLE001 - one sample's bug must not lose the others' results
        if is_environment_error(exc):
            raise
        _traceback_to_log()
        return SampleResult(sample, "failed", seconds=time.perf_counter() - t,
                            message=f"internal error: {type(exc).__name__}: {exc} (traceback in "
                                    f"{Path(opts.outdir) / paths.LOG_NAME})")
    return SampleResult(sample, "ok", summary, time.perf_counter() - t)


def finished_earlier(opts: PredictOptions, models, shared: SharedModels) -> dict | None:
    """--resume: the summary of the committed run in the sample's folder when its output set is
    still whole (every file of the commit record there, of its size), it was made from this very
    input (size and sha256 of its bytes, as run.json records them), chunk length, chunking and
    models, and no later run's checkpoints wait there; else None (the sample is run, resuming)."""
    record = committed_record(opts.outdir)
    if record is None:
        return None
    for name, size in ((record.get(SET_FIELD) or {}).get("files") or {}).items():   # the set is still whole
        p = Path(opts.outdir) / name
        if not p.is_file() or p.stat().st_size != size:
            return None
    from virnucpro.run.rundir import RunDir
    token = (RunDir(opts.outdir).read_manifest() or {}).get("run_token")
    if token is not None and token != (record.get(SET_FIELD) or {}).get("run_token"):
        return None                       # a later run was stopped there: --resume continues it
    given = record.get("input") or {}
    try:
        same_file = Path(given.get("path", "")).resolve() == Path(opts.input).resolve() and \
            given.get("size") == Path(opts.input).stat().st_size
    except OSError:
        return None
    if not same_file or record.get("chunk_length") != opts.chunk_length or record.get("chunking") != opts.chunking:
        return None
    prints = model_fingerprints(models, shared)
    if (record.get("models") or {}).get("fingerprints") != prints or given.get("sha256") != sha256_file(opts.input):
        return None
    return record.get("summary") or {}


def _traceback_to_log() -> None:
    """The current exception's traceback into the run's log file (the terminal gets the one line)."""
    text = traceback.format_exc()
    for h in logging.getLogger("virnucpro").handlers:
        if isinstance(h, logging.FileHandler):
            try:
                h.stream.write(f"internal error:\n{text}\n")
                h.flush()
            except (OSError, ValueError):
                pass


def any_failed(results: list[SampleResult]) -> bool:
    return any(r.status != "ok" for r in results)
