"""What ``virnucpro predict`` is asked (``PredictOptions``) and what it decides from that before it
reads any input: the device, the engine and its precision, the GPUs, CPU threads, whether the run may
embed while the input is still read, and whether the output directory may be used at all.
``virnucpro.pipeline`` runs the data flow with these answers."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from virnucpro.engines.config import AUTO, EngineConfig
from virnucpro.errors import InputError
from virnucpro.io import paths
from virnucpro.io.paths import Paths
from virnucpro.run.devices import Rank
from virnucpro.run.faults import FaultPlan

log = logging.getLogger("virnucpro.pipeline")


@dataclass
class PredictOptions:
    input: Path
    outdir: Path
    chunk_length: int = 300
    models: str | None = None
    esm: str | None = None
    dnabert: str | None = None
    classifier: str | None = None
    engine: str = "auto"            # auto = the fast engine (fp16 on a GPU, fp32 on a CPU)
    device: str = "auto"            # auto = cuda if available else cpu
    chunking: str = "original"
    duplicate_ids: str = "error"
    block_frames: int = 20000
    allow_classifier_mismatch: bool = False
    progress: bool = True
    verbose: bool = False
    engine_config: EngineConfig = field(default_factory=EngineConfig)   # fast engine only
    token_budget: int | None = None  # fast engine: ESM-2 tokens per batch (default: from free GPU memory)
    dna_budget: int | None = None    # fast engine: nucleotides per DNABERT-S batch (default planner.DNA_NT_BUDGET)
    use_tuned: bool = True           # fast engine: this device's tuned file fills what was not given (--no-tuned)
    tuned: dict | None = None        # what the tuned file gave (``apply_tuned``; run.json's "tuned")
    segment_reads: int | None = None  # fast engine: reads per planning segment (default planner.SEGMENT_READS)
    gpus: str | None = None         # fast engine: all | N | 0,2,... (default: all visible on CUDA)
    workers: int | None = None      # worker processes in all (default one per GPU; 1 on a CPU)
    resume: bool = False            # continue from OUTDIR/.virnucpro-run checkpoints
    skip_failing_units: bool = False  # give up on a unit that kills its worker 3 times (reported)
    batches_per_unit: int | None = None
    stale_s: float = 120.0          # torchrun: a claim without heartbeat for this long is taken over
    save_embeddings: bool = False   # also write each kept frame's features to OUTDIR/embeddings/
    faults: FaultPlan | None = None # faults a test injects (virnucpro.run.faults); None in a real run
    force: bool = False             # replace an earlier run's results, checkpoints and embeddings in OUTDIR
    threads: int | None = None      # -t/--threads: torch's CPU threads (None: torch's default)

    @property
    def precision(self) -> str:
        """The fast engine's precision (the reference engine is fp32)."""
        return self.engine_config.precision


# The fast engine on a CPU with a large ESM-2 (the real 3B): one packed batch per work unit (the
# progress bar and --resume advance a unit at a time). A 16,384-token batch of ESM-2 3B is ~1e14 FLOPs,
# minutes on a laptop CPU; the GPU default of 8 batches per unit would leave the bar still for most of
# an hour. A small ESM-2 (the test models, a t6/t12) keeps the default: there a unit takes well under a
# second, and one batch per unit made the CPU gate's fast run slower than the reference engine (per-unit
# claim, checkpoint and merge work; 0.94x against >= 1.24x with the default, cpu-smoke on cpu-dev).
CPU_BATCHES_PER_UNIT = 1
CPU_SMALL_UNIT_BYTES = 1 << 30   # ESM-2 weights below this (t33 650M fp16 is ~1.3 GB) keep the default



def resolve_device(device: str) -> str:
    """``auto`` -> cuda when a GPU is visible, else cpu. GPUs are counted through NVML where it
    answers (``torch.cuda.device_count``), without initialising CUDA in this process: on a
    multi-GPU run the coordinator never needs CUDA, and ``cudaGetDeviceCount`` cost ~0.5 s
    before the workers could start."""
    import torch
    visible = torch.cuda.device_count() > 0
    if device == "auto":
        return "cuda" if visible else "cpu"
    if device.startswith("cuda") and not visible:
        raise InputError(f"--device {device}: no CUDA GPU is visible to PyTorch on this machine")
    return device


def check_gpus(gpus: str | None, device: str) -> None:
    """--gpus names GPUs (a count or indices) for a run that has none: an error, as --device cuda
    is on a machine without one (``all`` means whatever GPUs there are, none included)."""
    if gpus is None or gpus.strip().lower() == "all" or device.startswith("cuda"):
        return
    if device == "cpu" and resolve_device("auto") == "cuda":
        raise InputError(f"--gpus {gpus} with --device cpu: a CPU run uses no GPU (drop one of them)")
    raise InputError(f"--gpus {gpus}: no CUDA GPU is visible to PyTorch on this machine")


def choose_engine(opts: PredictOptions, device: str, esm_bytes: int | None = None) -> tuple[str, PredictOptions]:
    """The engine (``auto`` is the fast one) and the options with the engine's settings resolved
    (precision, loader; under -t N at most N-1 loader processes) and, for the fast engine on a CPU,
    the batches per unit settled (they are part of a checkpoint's identity)."""
    engine_name = "fast" if opts.engine == "auto" else opts.engine
    if engine_name not in ("fast", "reference"):
        raise InputError(f"unknown engine {opts.engine!r}; choose auto, fast or reference")
    cuda = device.startswith("cuda")
    if engine_name == "fast" and opts.engine_config.precision == "fp8" and not cuda:
        from virnucpro.models.esm2_fp8 import refuse_unsupported
        refuse_unsupported("cpu")
    config = opts.engine_config.resolved("cuda" if cuda else "cpu")
    if opts.threads is not None:   # -t N: at most N-1 input-loader processes
        if opts.threads < 1:
            raise InputError(f"-t/--threads must be >= 1, not {opts.threads}")
        config = config.replace(loader_workers=min(config.loader_workers, opts.threads - 1))
    changes: dict[str, Any] = {"engine_config": config}
    small = esm_bytes is not None and esm_bytes < CPU_SMALL_UNIT_BYTES
    if engine_name == "fast" and not cuda and opts.batches_per_unit is None and not small:
        changes["batches_per_unit"] = CPU_BATCHES_PER_UNIT
    return engine_name, replace(opts, **changes)


def refuse_earlier_run(opts: PredictOptions) -> None:
    """A fresh run into an OUTDIR that holds an earlier run's results, saved embeddings or
    checkpoints is refused (InputError, nothing changed) unless --force (replace them) or --resume
    (continue that run)."""
    if opts.force or opts.resume:
        return
    p = Paths(opts.outdir)
    if not p.outdir.is_dir():
        return
    from virnucpro.run.rundir import RunDir
    rd = RunDir(opts.outdir)
    units = len(rd.done_units()) if rd.units.is_dir() else 0
    checkpoints = units > 0 or rd.manifest_path.exists()
    found = [f.name for f in (p.predictions, p.consensus, p.read_summary, p.viral_reads, p.run_json) if f.exists()]
    parts = p.embeddings.is_dir() and any(p.embeddings.glob(paths.EMBEDDING_PART_GLOB))
    if p.embedding_index.exists() or (parts and not checkpoints):   # (else the parts of an unfinished run)
        found.append(f"{paths.EMBEDDINGS}/")
    if found:
        resume = ", --resume to continue that run from its checkpoints" if checkpoints else ""
        raise InputError(f"-o/--outdir {opts.outdir} holds an earlier run's results ({', '.join(found)}); nothing "
                         f"was changed: add --force to replace them{resume}, or choose another directory")
    if checkpoints:
        raise InputError(f"-o/--outdir {opts.outdir} holds the checkpoints of an unfinished run ({units} work "
                         f"unit(s) done); nothing was changed: add --resume to continue it, or --force to start again")


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads bounded to ``n`` (intra-op and inter-op pools) for the block; the intra-op
    count is put back after it (a second run in the same process, e.g. a test, starts from torch's
    own). torch sets the inter-op pool only once per process, before its first inter-op work."""
    if n is None:
        yield
        return
    if n < 1:
        raise InputError(f"-t/--threads must be >= 1, not {n}")
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:   # already set, or inter-op work has run in this process
        log.debug("inter-op threads stay %d", torch.get_num_interop_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def streams_input(opts: PredictOptions, engine_name: str, rank: Rank | None) -> bool:
    """Whether the run may embed before the whole input is read: a fresh fast-engine run (not a
    torchrun rank) into a new or empty output directory, so that a bad input found later leaves
    nothing behind once the run removes what it wrote (``_remove_written``)."""
    out = Path(opts.outdir)
    return (engine_name == "fast" and rank is None and not opts.resume
            and (not out.exists() or (out.is_dir() and not any(out.iterdir()))))


# -- tuned files (virnucpro tune) ---------------------------------------------------------------------

def tuned_dir(environ=None) -> Path:
    """Where tuned files live: ``$XDG_CONFIG_HOME/virnucpro/tuned``, else ``~/.config/virnucpro/tuned``
    (the XDG base-directory rule: a relative XDG_CONFIG_HOME is ignored)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "virnucpro" / "tuned"


def apply_tuned(opts: PredictOptions, device: str, engine_name: str, rank: Rank | None = None) -> PredictOptions:
    """The options with what the present device's tuned file (``virnucpro.engines.tuned``) holds
    filled into what the command line left open, and ``opts.tuned`` saying what happened (run.json).

    An option given always wins (``explicit``). A tuned file for another GPU model or memory size is
    never read (its name differs) nor used (its ``key`` is checked); a damaged one is warned about in
    one line and the defaults are used. The budgets are left to the checkpoints on ``--resume`` and
    to rank 0 on other torchrun ranks (they are part of the plan every worker must share), and the
    token budget to the free-memory rule when workers share a GPU (the file's was measured for one).
    The fast engine only: the reference engine has no such settings."""
    if engine_name != "fast":
        return replace(opts, tuned=None)
    if not opts.use_tuned:
        return replace(opts, tuned={"used": False, "reason": "--no-tuned"})
    from virnucpro.engines.tuned import VALUE_FIELDS, device_key, find_tuned, tuned_path
    key = device_key(device, opts.engine_config.gpu_memory_gib)
    directory = tuned_dir()
    path = tuned_path(directory, key)
    found, problem = find_tuned(directory, key)
    if problem is not None:
        log.warning("tuned file %s ignored: %s; the defaults are used (rerun `virnucpro tune`, or remove the file)",
                    path, problem)
        return replace(opts, tuned={"used": False, "path": str(path), "reason": problem})
    if found is None:
        return replace(opts, tuned={"used": False, "path": str(path), "reason": f"no tuned file for {key.describe()}"})
    cfg = opts.engine_config
    given = {"token_budget": opts.token_budget, "dna_budget": opts.dna_budget, "loader_workers": cfg.loader_workers,
             "loader_prefetch": cfg.loader_prefetch, "precision": None if cfg.precision == AUTO else cfg.precision}
    applied: dict = {}
    explicit: dict = {}
    skipped: dict = {}
    for name in VALUE_FIELDS:
        value = found.values[name]
        if value is None:   # precision the sweep was not allowed to choose: the device's default stays
            continue
        if given[name] is not None:
            explicit[name] = given[name]
        elif name in ("token_budget", "dna_budget") and opts.resume:
            skipped[name] = "--resume: the checkpoints' budget"
        elif name in ("token_budget", "dna_budget") and rank is not None and rank.rank != 0:
            skipped[name] = "a torchrun rank takes rank 0's budget"
        elif name == "token_budget" and _sharing(opts, device) > 1:
            skipped[name] = "workers share a GPU: sized from its free memory"
        else:
            applied[name] = value
    engine_fields = {k: applied[k] for k in ("loader_workers", "loader_prefetch", "precision") if k in applied}
    out = replace(opts, token_budget=applied.get("token_budget", opts.token_budget),
                  dna_budget=applied.get("dna_budget", opts.dna_budget),
                  engine_config=cfg.replace(**engine_fields) if engine_fields else cfg)
    log.info("tuned file %s (sha256 %s): %s%s", path, found.sha256[:16],
             ", ".join(f"{k} {v}" for k, v in applied.items()) or "nothing applied",
             f"; given on the command line: {', '.join(explicit)}" if explicit else "")
    return replace(out, tuned={"used": True, "path": str(path), "sha256": found.sha256, "key": key.to_json(),
                               "values": found.values, "applied": applied, "explicit": explicit, "skipped": skipped,
                               "date": found.data.get("date")})


def _sharing(opts: PredictOptions, device: str) -> int:
    """Workers per GPU of this run (1 on a CPU or for a bad --gpus, which is refused later)."""
    if not device.startswith("cuda"):
        return 1
    from virnucpro.run.devices import parse_devices
    try:
        devices = parse_devices(opts.gpus, opts.workers, device)
    except InputError:
        return 1
    return max(devices.count(d) for d in devices)
