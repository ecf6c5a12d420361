"""Scale and survive: several workers (one per GPU, or several per GPU, or CPU processes) claim
work units dynamically through files, checkpoint each finished unit atomically, and a run that was
killed resumes where it stopped.

Run directory ``OUTDIR/.virnucpro-run/``::

    manifest.json            what the checkpoints were made from (input sha256, model fingerprints,
                             engine, precision, chunking, token budget, units); written before any unit
    segments/seg_00003.pkl   the coordinator's chunked and translated input, segment by segment (the
                             frames' nucleotide and protein sequences): worker processes plan from
                             these instead of reading the input themselves; removed at the end
    units/unit_00012.npz     a finished unit: its frame indices and scores (temp file + os.replace)
    claims/unit_00012        a unit being worked on, created with O_CREAT|O_EXCL; holds the owner;
                             its mtime is the owner's heartbeat
    workers/<owner>.json     a worker's totals when it stops (for the summary)

A unit is done iff its ``.npz`` exists. A worker claims the next unit that is neither done nor
claimed, from its DataLoader's sampler, i.e. a few batches before its GPU needs it, so claiming
never stalls the GPU. When nothing is left to claim but units claimed by others are unfinished,
the worker waits; if such a claim is released (its owner died) it claims it: survivors take over.

On one host the coordinator (the ``predict`` process) spawns the workers, watches them, releases
the claims of a dead one, starts a replacement (bounded), and gives up on a unit that killed its
workers ``max_unit_retries`` times, naming it and its reads. Under torchrun (several hosts sharing
a filesystem) every rank is a worker and no process watches the others: a claim whose heartbeat is
older than ``stale_s`` is taken over instead. Rank 0 writes the manifest and the outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from virnucpro.errors import InputError, VirnucproError
from virnucpro.core.telemetry import Telemetry, cuda_visible_devices, peak_gpu_mem_gib

log = logging.getLogger(__name__)

RUN_DIRNAME = ".virnucpro-run"
STOPPED_EXIT = 3            # a worker that stopped on SIGTERM/SIGINT, leaving a resumable state
BAD_FORK_EXIT = 4           # a worker forked from a process that had initialised CUDA: restart it with spawn
STORAGE_EXIT = 5            # a worker's write was refused (disk full, read-only, no permission): not retried
MAX_PENDING_WRITES = 3      # checkpoints (with --save-embeddings: ~70 MB of pinned features each) queued
                            # for the writer thread; beyond that the GPU loop waits for the oldest
HEARTBEAT_S = 2.0
# Manifest keys that must match for --resume, with the words used when they do not.
IDENTITY = {"input": "input file (size, sha256)", "models": "models (fingerprints)", "engine": "engine",
            "precision": "precision", "chunk_length": "chunk length", "chunking": "chunking mode",
            "duplicate_ids": "duplicate-id handling", "token_budget": "token budget",
            "batches_per_unit": "batches per unit", "dna_batches": "DNABERT-S batches cut by",
            "dna_budget": "DNABERT-S batch budget",
            "segment_reads": "reads per planning segment", "plan_version": "work-plan version (virnucpro release)",
            "save_embeddings": "--save-embeddings"}


def input_fingerprint(records, wait: bool = True) -> dict | None:
    """Size and sha256 of the input's bytes (its content, not its name), as its reader hashed them
    while parsing them (``records``: a ``fasta.RecordStream``; the file is never opened again by
    name: a standard input or a pipe cannot be, and a file deleted mid-run was an internal error).
    Waits for the whole input to be read, or with ``wait=False`` gives None until it is. Raises
    the input's error."""
    if not wait and not records.done:
        return None
    records.result()
    return dict(records.identity)


def parse_devices(gpus: str | None, workers: int | None, device: str) -> list[str]:
    """One device string per worker. ``gpus``: ``all`` | ``N`` (the first N) | ``0,2,...`` (CUDA
    only; default: all visible, or the one of ``--device cuda:K``). ``workers``: total worker
    processes, spread round-robin over the GPUs (default one per GPU; on a CPU, one)."""
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, not {workers}")
    if not device.startswith("cuda"):
        return ["cpu"] * (workers or 1)
    import torch
    visible = torch.cuda.device_count()
    if gpus is None:
        ids = [int(device.split(":")[1])] if ":" in device else list(range(visible))
    elif gpus.strip().lower() == "all":
        ids = list(range(visible))
    elif "," not in gpus and gpus.strip().isdigit():
        n = int(gpus)
        if not 1 <= n <= visible:
            raise InputError(f"--gpus {gpus}: {visible} CUDA GPU(s) are visible")
        ids = list(range(n))
    else:
        try:
            ids = [int(x) for x in gpus.split(",") if x.strip()]
        except ValueError:
            raise InputError(f"--gpus {gpus!r}: give all, a count, or GPU indices like 0,2") from None
        bad = [i for i in ids if not 0 <= i < visible]
        if bad or not ids or len(set(ids)) != len(ids):
            raise InputError(f"--gpus {gpus}: indices must be distinct and in 0..{visible - 1}")
    if not ids:
        raise InputError("no CUDA GPU is visible")
    n = workers or len(ids)
    return [f"cuda:{ids[k % len(ids)]}" for k in range(n)]


def rank_env() -> tuple[int, int, int] | None:
    """(RANK, WORLD_SIZE, LOCAL_RANK) under torchrun / torch.distributed elastic with >1 process."""
    if os.environ.get("VIRNUCPRO_WORKER") or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    try:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise InputError("WORLD_SIZE > 1 but RANK/LOCAL_RANK are not set as torchrun sets them") from None


# ------------------------------------------------------------------------------ the run directory

class RunDir:
    def __init__(self, outdir: str | Path):
        self.outdir = Path(outdir)
        self.root = Path(outdir) / RUN_DIRNAME
        self.units, self.claims, self.workers = self.root / "units", self.root / "claims", self.root / "workers"
        self.segments = self.root / "segments"
        self.manifest_path = self.root / "manifest.json"

    # manifest ---------------------------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            raise InputError(f"{self.manifest_path} is damaged; rerun without --resume to start over") from None

    def write_manifest(self, manifest: dict) -> None:
        _atomic_bytes(self.manifest_path, (json.dumps(manifest, indent=2, default=str) + "\n").encode())

    def check(self, manifest: dict | None, expected: dict, keys=IDENTITY) -> None:
        """Refuse to resume from checkpoints made from anything else: InputError naming the differences."""
        if manifest is None:
            raise InputError(f"--resume: no checkpoint to resume from in {self.root} (run without --resume)")
        diffs = [f"{words} (checkpoint: {_short(manifest.get(k))}; now: {_short(expected.get(k))})"
                 for k, words in keys.items() if k in expected and manifest.get(k) != expected[k]]
        if diffs:
            raise InputError(f"--resume refused: the checkpoints in {self.root} were made with a different "
                             + "; ".join(diffs) + ". Rerun without --resume to start over.")

    def reset(self) -> None:
        """A fresh run: drop every checkpoint of an earlier run in this output directory."""
        import shutil
        if self.root.exists():
            shutil.rmtree(self.root)
        self.make_dirs()

    def make_dirs(self) -> None:
        for d in (self.units, self.claims, self.workers, self.segments):
            d.mkdir(parents=True, exist_ok=True)

    def clear_claims(self) -> None:
        """On --resume on one host: claims, segments and temp files left by the killed run are void."""
        for d in (self.claims, self.units, self.workers, self.segments):
            for p in d.iterdir():
                if d is not self.units or p.name.startswith("."):
                    p.unlink(missing_ok=True)

    # segments ----------------------------------------------------------------------------------
    def segment_path(self, k: int) -> Path:
        return self.segments / f"seg_{k:05d}.pkl"

    def save_segment(self, k: int, nuc: list[str], prot: list[str], last: bool, dna_len=None) -> None:
        """Segment ``k``: its frames' sequences and DNABERT-S token counts (computed once, here)."""
        import pickle
        _atomic_bytes(self.segment_path(k), pickle.dumps((nuc, prot, last, dna_len),
                                                         protocol=pickle.HIGHEST_PROTOCOL), sync=False)

    def follow_segments(self, plans, stop: threading.Event) -> None:
        """Build ``plans`` from the segments the coordinator publishes, in order, until the last
        (a worker's planning thread). Errors go to ``plans.fail``."""
        import pickle
        k = 0
        try:
            while not stop.is_set():
                path = self.segment_path(k)
                if not path.exists():
                    time.sleep(0.02)
                    continue
                with open(path, "rb") as fh:
                    nuc, prot, last, dna_len = pickle.load(fh)   # our own file, written by this run's coordinator
                plans.add_seqs(nuc, prot, last, dna_len)
                if last:
                    return
                k += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which re-raises it
            plans.fail(exc)

    def remove_segments(self) -> None:
        import shutil
        shutil.rmtree(self.segments, ignore_errors=True)

    # units and claims ---------------------------------------------------------------------------
    def unit_path(self, u: int) -> Path:
        return self.units / f"unit_{u:06d}.npz"

    def claim_path(self, u: int) -> Path:
        return self.claims / f"unit_{u:06d}"

    def is_done(self, u: int) -> bool:
        """Finished: scored, or given up on with --skip-failing-units."""
        return self.unit_path(u).exists() or self.skipped_path(u).exists()

    def done_units(self) -> set[int]:
        return {int(p.name[5:11]) for p in self.units.iterdir()
                if p.name.startswith("unit_") and p.suffix in (".npz", ".skipped")}

    def skipped_path(self, u: int) -> Path:
        return self.units / f"unit_{u:06d}.skipped"

    def skip_unit(self, u: int, why: str) -> None:
        """Give up on a unit (only with --skip-failing-units): its frames get no score."""
        _atomic_bytes(self.skipped_path(u), (why + "\n").encode())

    def skipped_units(self) -> set[int]:
        return {int(p.name[5:11]) for p in self.units.glob("unit_*.skipped")}

    def claim(self, u: int, owner: str) -> bool:
        try:
            fd = os.open(self.claim_path(u), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(owner)
        return True

    def claimed(self) -> dict[int, tuple[str, float]]:
        """unit -> (owner, heartbeat mtime) of every current claim."""
        out = {}
        for p in self.claims.iterdir():
            if not p.name.startswith("unit_") or "." in p.name:
                continue
            try:
                out[int(p.name[5:])] = (p.read_text().split("\n")[0], p.stat().st_mtime)
            except (FileNotFoundError, ValueError):
                continue
        return out

    def release(self, u: int) -> None:
        self.claim_path(u).unlink(missing_ok=True)

    def mark_started(self, u: int) -> None:
        """The owner's GPU loop has begun the unit (claims made ahead are not yet started)."""
        self._mark(u, "started")

    def mark_computed(self, u: int) -> None:
        """The unit's scores exist (its checkpoint is being written): should its owner die now, the
        unit is redone by another, but it did not kill its worker."""
        self._mark(u, "computed")

    def _mark(self, u: int, what: str) -> None:
        try:
            with open(self.claim_path(u), "a") as fh:
                fh.write("\n" + what)
        except FileNotFoundError:
            pass

    def release_owner(self, owner: str) -> tuple[list[int], list[int]]:
        """Release every claim of ``owner`` (a dead worker): (unfinished units it held, those of
        them it had started and not computed; only these count as attempts that may have killed it)."""
        lost, started = [], []
        for u, (who, _) in self.claimed().items():
            if who != owner:
                continue
            try:
                marks = self.claim_path(u).read_text().split("\n")[1:]
            except FileNotFoundError:
                marks = []
            began = "started" in marks and "computed" not in marks
            self.release(u)
            if not self.is_done(u):
                lost.append(u)
                if began:
                    started.append(u)
        return sorted(lost), sorted(started)

    def save_unit(self, u: int, frames: np.ndarray, scores: np.ndarray) -> None:
        """Checkpoint a finished unit (frame indices [n], scores [n, 2]) atomically."""
        import io
        buf = io.BytesIO()
        np.savez(buf, frames=np.asarray(frames, dtype=np.int64), scores=np.asarray(scores, dtype=np.float32))
        _atomic_bytes(self.unit_path(u), buf.getvalue())

    def load_scores(self, plan, n_frames: int) -> np.ndarray:
        """Merge: the scores [N, 2] of every frame from the unit files, checking each unit holds
        exactly the frames the plan gives it."""
        scores = np.full((n_frames, 2), np.nan, dtype=np.float32)
        skipped = self.skipped_units()
        for unit in plan.units:
            if unit.index in skipped:   # left NaN: the pipeline reports these frames instead
                continue
            with np.load(self.unit_path(unit.index)) as z:
                frames, s = z["frames"], z["scores"]
            if not np.array_equal(frames, unit.frames):
                raise VirnucproError(f"checkpoint {self.unit_path(unit.index)} does not hold the frames of unit "
                                     f"{unit.index}; delete {self.root} and rerun")
            scores[frames] = s
        missing = int(np.isnan(scores[:, 0]).sum()) - sum(len(plan.units[u].frames) for u in skipped)
        if missing:
            raise VirnucproError(f"{missing} frames have no score after merging the units (a bug; please report)")
        return scores


def _atomic_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


# ------------------------------------------------------------------------------ claiming units

class ClaimSource:
    """The units for one pass of the engine's loop: every unit that is neither done nor claimed,
    claimed as the loader reaches it. Never blocks (the loader calls it from the GPU loop's thread)."""

    def __init__(self, rd: RunDir, owner: str, n_units: int, stop: threading.Event):
        self.rd, self.owner, self.n_units, self.stop = rd, owner, n_units, stop
        self.mine: set[int] = set()        # claimed, not yet finished
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[int]:
        done = self.rd.done_units()
        for u in range(self.n_units):
            if self.stop.is_set():
                return
            if u in done or not self.rd.claim(u, self.owner):
                continue
            if self.rd.is_done(u):        # finished by someone between the listing and the claim
                self.rd.release(u)
                continue
            with self._lock:
                self.mine.add(u)
            yield u

    def holds(self, u: int) -> bool:
        with self._lock:
            return u in self.mine

    def finished(self, u: int) -> None:
        with self._lock:
            self.mine.discard(u)
        self.rd.release(u)

    def release_all(self) -> None:
        with self._lock:
            held, self.mine = sorted(self.mine), set()
        for u in held:
            self.rd.release(u)

    def touch(self) -> None:
        with self._lock:
            held = list(self.mine)
        for u in held:
            try:
                os.utime(self.rd.claim_path(u))
            except FileNotFoundError:
                pass


class WorkerTelemetry(Telemetry):
    """Telemetry whose every event names the worker; its clock is the run's (wall-clock aligned)."""

    def __init__(self, worker: str, run_epoch: float | None = None):
        super().__init__()
        self.worker = worker
        if run_epoch is not None:
            self.t0 = time.perf_counter() - (time.time() - run_epoch)

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("worker", self.worker)
        return super().emit(event, **fields)


@dataclass
class Hooks:
    """Test hooks from the environment: VIRNUCPRO_TEST_DIE=OWNER:K makes that worker os._exit(17)
    after its K-th unit; VIRNUCPRO_TEST_UNIT_DELAY=S sleeps S seconds after every unit;
    VIRNUCPRO_TEST_POISON_UNIT=U makes any worker that starts unit U os._exit(17);
    VIRNUCPRO_TEST_DISK_FULL=OWNER makes that worker's checkpoint writes fail as on a full disk."""
    die_owner: str | None = None
    disk_full_owner: str | None = None
    die_after: int = 0
    unit_delay: float = 0.0
    poison_unit: int | None = None

    @classmethod
    def from_env(cls) -> "Hooks":
        h = cls(unit_delay=float(os.environ.get("VIRNUCPRO_TEST_UNIT_DELAY", "0") or 0))
        if os.environ.get("VIRNUCPRO_TEST_POISON_UNIT"):
            h.poison_unit = int(os.environ["VIRNUCPRO_TEST_POISON_UNIT"])
        h.disk_full_owner = os.environ.get("VIRNUCPRO_TEST_DISK_FULL") or None
        die = os.environ.get("VIRNUCPRO_TEST_DIE")
        if die:
            h.die_owner, k = die.rsplit(":", 1)
            h.die_after = int(k)
        return h


def work(engine, plans, classifier, tel: Telemetry, rd: RunDir, owner: str, stop: threading.Event,
         stale_s: float | None = None, on_progress: Callable[[int, int], None] | None = None,
         parent_pid: int | None = None) -> dict:
    """A worker's whole job: passes of the engine's loop over claimed units until every unit is done
    (or ``stop``). ``plans``: a PlanBuilder (the plan may still be growing: a pass runs the units known
    when it starts, and goes on with the units planned meanwhile without pausing the GPU). Between
    passes, waits for new units or units held by others; takes over released claims, and with
    ``stale_s``, claims whose heartbeat stopped. Returns the summed totals."""
    hooks = Hooks.from_env()
    totals: dict[str, Any] = {}
    done_here: list[int] = []
    beat_stop = threading.Event()
    sources: list[ClaimSource] = []

    def heartbeat() -> None:
        while not beat_stop.wait(HEARTBEAT_S):
            for s in sources:
                s.touch()
            if parent_pid is not None and os.getppid() != parent_pid:   # the coordinator is gone
                log.warning("worker %s: the coordinating process died; stopping", owner)
                stop.set()

    beat = threading.Thread(target=heartbeat, name="claim-heartbeat", daemon=True)
    beat.start()
    t_start = tel.now()
    from concurrent.futures import ThreadPoolExecutor
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
    pending: list = []
    try:
        while not stop.is_set():
            while not plans.wait(0, 0.5) and not stop.is_set():   # the first units (or an empty plan)
                pass
            prep = plans.snapshot()
            n_units = len(prep.plan.units)
            sources[:] = [ClaimSource(rd, owner, n_units, stop)]

            def more() -> tuple | None:
                """The units planned since the pass (or its last extension) began, if any."""
                nonlocal n_units
                if stop.is_set() or plans.error is not None or plans.n_units <= n_units:
                    return None
                grown = plans.snapshot()
                n_units = len(grown.plan.units)
                sources.append(ClaimSource(rd, owner, n_units, stop))
                return grown, sources[-1]

            def save(u: int, frames: np.ndarray, scores: np.ndarray, features: np.ndarray | None) -> None:
                if hooks.disk_full_owner == owner:
                    import errno
                    raise OSError(errno.ENOSPC, "No space left on device", str(rd.unit_path(u)))
                if features is not None:   # --save-embeddings: the part before the unit (its commit point)
                    from virnucpro.io.outputs import save_embedding_part
                    save_embedding_part(rd.outdir, u, frames, features)
                rd.save_unit(u, frames, scores)
                for s in list(sources):
                    if s.holds(u):
                        s.finished(u)
                done_here.append(u)
                if hooks.die_owner == owner and len(done_here) >= hooks.die_after:
                    os._exit(17)

            def on_unit(u: int, frames: np.ndarray, scores: np.ndarray, info: dict) -> None:
                for f in [f for f in pending if f.done()]:   # a failed write stops the run now
                    pending.remove(f)
                    f.result()
                rd.mark_computed(u)
                pending.append(writer.submit(save, u, frames, scores, info.get("features")))   # off the GPU loop
                while len(pending) > MAX_PENDING_WRITES:   # storage slower than the GPUs: wait, do not pile up
                    pending.pop(0).result()
                if hooks.unit_delay:
                    time.sleep(hooks.unit_delay)

            def on_unit_start(u: int) -> None:
                rd.mark_started(u)
                if hooks.poison_unit == u:
                    os._exit(17)

            t = engine.run(prep, classifier, tel, sources[0], on_unit, on_progress, stop, on_unit_start, more)
            for f in pending:
                f.result()
            pending.clear()
            for s in sources:
                s.release_all()                    # units dropped by a stop go back to the pool
            _add(totals, t)
            if t.get("stopped") or not _wait_for_claimable(rd, plans, n_units, stop, stale_s):
                break
    finally:
        writer.shutdown(wait=True)
        beat_stop.set()
        for s in sources:
            s.release_all()
    totals["units"] = len(done_here)
    totals["unit_list"] = done_here
    totals["t_start"], totals["t_end"] = round(t_start, 4), round(tel.now(), 4)   # on the run's clock
    totals["stopped"] = stop.is_set() and not all_done(rd, plans)
    return totals


def all_done(rd: RunDir, plans) -> bool:
    """The plan is complete and every one of its units is done."""
    if not plans.complete:
        return False
    done = rd.done_units()
    return all(u in done for u in range(plans.n_units))


def _wait_for_claimable(rd: RunDir, plans, n_seen: int, stop: threading.Event, stale_s: float | None) -> bool:
    """Wait until the plan has grown past ``n_seen`` units or some unfinished unit is unclaimed
    (True), or all are done / stop (False)."""
    while not stop.is_set():
        n_units = plans.n_units
        if n_units > n_seen:
            return True
        done = rd.done_units()
        if plans.complete and all(u in done for u in range(n_units)):
            return False
        plans.check()
        claims = rd.claimed()
        now = time.time()
        if stale_s is not None:
            for u, (who, mtime) in claims.items():
                if now - mtime > stale_s and u not in done:
                    log.warning("unit %d: the claim of %s has had no heartbeat for %.0f s; taking it over",
                                u, who, now - mtime)
                    rd.release(u)
        if any(u not in done and u not in claims for u in range(n_units)):
            return True
        time.sleep(0.2)
    return False


def _add(acc: dict, t: dict) -> None:
    for k, v in t.items():
        if k in ("t_start", "t_end"):
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            acc[k] = acc.get(k, 0) + v


def install_stop_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT set ``stop`` (finish the current batch, leave a resumable state); a second
    SIGINT interrupts at once. Returns a function restoring the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("signal %d: stopping after the current batch (rerun with --resume to continue)", signum)
        stop.set()

    for s in old:
        signal.signal(s, handler)
    return lambda: [signal.signal(s, h) for s, h in old.items()]


# ------------------------------------------------------------------------------ worker processes

@dataclass
class WorkerSpec:
    """What a spawned worker needs (picklable): it loads its models, then plans with the run's budget
    from the segments the coordinator publishes in the run directory (the input's frames)."""
    owner: str
    device: str
    chunk_length: int                   # (which classifier)
    models: Any                         # layout.ModelSet
    allow_classifier_mismatch: bool
    precision: str
    engine_opts: dict
    outdir: Path
    log_file: Path
    run_epoch: float
    threads: int | None = None
    stale_s: float | None = None
    env: dict | None = None             # the coordinator's environment and working directory when it
    cwd: str | None = None              # started the worker (a fork server's may be older)
    run_token: str | None = None        # the manifest of this run carries it (an older one in OUTDIR does not)


# Workers start from a fork server that imported torch and the engine while the coordinator read
# its input: ~3 s less start-up per worker than a fresh interpreter (spawn). The server itself never
# runs torch ops, so forking it is safe (forking a process that ran OpenMP work is not).
# VIRNUCPRO_START_METHOD=spawn is the fallback.
# Not torch._inductor: importing it initialised CUDA in the fork server on an H200 (H200-15), and a
# child forked after that cannot use CUDA; a worker that finds itself so exits BAD_FORK_EXIT and the
# coordinator starts its replacement with spawn.
PRELOAD = ["virnucpro.run.parallel", "virnucpro.engines.fast", "virnucpro.models.classifier", "esm"]


def start_method() -> str:
    import multiprocessing as mp
    wanted = os.environ.get("VIRNUCPRO_START_METHOD", "forkserver")
    return wanted if wanted in mp.get_all_start_methods() else "spawn"


def _in_bad_fork() -> bool:
    """This process was forked from one that had initialised CUDA (it cannot use CUDA itself).
    VIRNUCPRO_TEST_BAD_FORK=1 pretends so in workers started by a fork server (CPU tests)."""
    if os.environ.get("VIRNUCPRO_TEST_BAD_FORK") == "1" and os.environ.get("VIRNUCPRO_START") == "forkserver":
        return True
    try:
        import torch
        return bool(torch.cuda._is_in_bad_fork())
    except Exception:   # private API: absent in another torch
        return False


def worker_context(method: str | None = None):
    """The multiprocessing context that starts workers."""
    import multiprocessing as mp
    method = method or start_method()
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


def prestart_workers() -> None:
    """Start the fork server now, so that it imports torch while this process reads the input."""
    if start_method() == "forkserver":
        worker_context()
        from multiprocessing import forkserver
        forkserver.ensure_running()


def visible_gpu_count() -> int:
    """CUDA GPUs this process would see, told without importing torch (CUDA_VISIBLE_DEVICES, else
    NVML); 0 when that cannot be told."""
    visible = cuda_visible_devices()
    if visible is not None:
        return len(visible)
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML, no driver: no GPU to count
        return 0


def likely_worker_processes(engine: str, device: str, gpus: str | None, workers: int | None,
                            skip_failing_units: bool) -> bool:
    """Will ``predict`` with these options start worker processes? Decided before torch is imported,
    so that the fork server can start first (a wrong guess costs an idle server)."""
    if engine == "reference" or rank_env() is not None:
        return False
    n_gpus = visible_gpu_count() if device == "auto" or (device.startswith("cuda") and gpus in (None, "all")) else 0
    if engine == "auto" and (device == "cpu" or (device == "auto" and n_gpus == 0)):
        return False                                  # the reference engine
    if (workers or 1) > 1 or skip_failing_units:
        return True
    if device == "cpu" or (device.startswith("cuda:") and gpus is None):
        return False
    if gpus is None or gpus.strip().lower() == "all":
        return n_gpus > 1
    g = gpus.strip()
    return len([x for x in g.split(",") if x.strip()]) > 1 if "," in g else (g.isdigit() and int(g) > 1)


def worker_main(spec: WorkerSpec) -> None:
    """Entry point of a spawned worker process; exits 0 (all done), STOPPED_EXIT, or 1 (error)."""
    if spec.env is not None:
        os.environ.clear()
        os.environ.update(spec.env)
    if spec.cwd is not None:
        os.chdir(spec.cwd)
    os.environ["VIRNUCPRO_WORKER"] = spec.owner
    if _in_bad_fork():   # the coordinator says so (once) and restarts it with spawn
        os._exit(BAD_FORK_EXIT)
    import multiprocessing as mp
    from multiprocessing import process
    # a fork-server child inherits the coordinator's multiprocessing temp dir (sockets through which
    # loader workers pass tensors are made there); it is removed when the coordinator exits, while this
    # worker's children may still clean up: a directory of its own
    process.current_process()._config.pop("tempdir", None)
    if "fork" in mp.get_all_start_methods():   # a spawned child defaults to spawn: loader workers
        mp.set_start_method("fork", force=True)  # would re-import torch (seconds) on every pass
    from virnucpro.core.background import GIL_SWITCH_S
    sys.setswitchinterval(GIL_SWITCH_S)      # the GPU loop gets the interpreter lock back at once
    log_ready = DeferredLog(spec.log_file)   # until the coordinator has checked the input and made OUTDIR
    stop = threading.Event()
    install_stop_handlers(stop)
    parent = os.getppid()
    try:
        totals = run_worker(spec, stop, parent, log_ready)
    except BaseException as exc:  # noqa: BLE001 - the coordinator needs an exit code; the log the traceback
        from virnucpro.errors import is_environment_error
        if is_environment_error(exc):   # retrying cannot help: the coordinator stops the run with one line
            try:   # the traceback to the log file only (INFO): the terminal gets the coordinator's line
                log.info("worker %s: a write was refused", spec.owner, exc_info=True)
                logging.shutdown()
            except OSError:   # the log's disk is the full one
                pass
            os._exit(STORAGE_EXIT)
        log.exception("worker %s failed", spec.owner)
        # the traceback reaches the run's log once its manifest exists (for a bad input the
        # coordinator writes none and stops this worker instead)
        if not log_ready.done and _wait_for_file_manifest(RunDir(spec.outdir), threading.Event(),
                                                          spec.run_token) is not None:
            log_ready.open()
        logging.shutdown()
        os._exit(1)
    logging.shutdown()
    os._exit(STOPPED_EXIT if totals.get("stopped") else 0)


class DeferredLog:
    """A worker starts before the coordinator has read the input (and made OUTDIR): its log records
    wait in memory until the run's manifest exists, then go to the run's log file in order."""

    def __init__(self, log_file: Path):
        import logging.handlers
        self.log_file, self.done = log_file, False
        self.buffer = logging.handlers.MemoryHandler(capacity=1 << 30, flushLevel=logging.CRITICAL + 1)
        root = logging.getLogger("virnucpro")
        for h in list(root.handlers):
            root.removeHandler(h)
        root.setLevel(logging.INFO)
        root.addHandler(self.buffer)
        root.propagate = False

    def open(self) -> None:
        """The log file may be written now: set it up and hand it the records kept so far."""
        from virnucpro.core.telemetry import setup_logging
        kept, self.buffer.buffer = list(self.buffer.buffer), []
        setup_logging(self.log_file, False)
        root = logging.getLogger("virnucpro")
        for record in kept:
            root.handle(record)
        self.done = True


def run_worker(spec: WorkerSpec, stop: threading.Event, parent_pid: int | None = None,
               log_ready: DeferredLog | None = None) -> dict:
    import torch
    from virnucpro.engines import make_engine
    from virnucpro.models.classifier import load_classifier
    from virnucpro.plan.planner import PlanBuilder
    if spec.threads:
        torch.set_num_threads(spec.threads)
    tel = WorkerTelemetry(spec.owner, spec.run_epoch)
    t0, entered = time.perf_counter(), tel.now()   # entered: seconds after the run's start (spawn + imports)
    eo = spec.engine_opts
    # the models load with this process to themselves (the interpreter lock too): the coordinator
    # reads, chunks and translates the input and publishes it segment by segment
    engine = make_engine("fast", spec.models, spec.device, spec.precision, **spec.engine_opts)
    engine_s = time.perf_counter() - t0
    clf, _ = load_classifier(spec.models.classifier, spec.chunk_length, spec.allow_classifier_mismatch)
    rd = RunDir(spec.outdir)
    manifest = _wait_for_file_manifest(rd, stop, spec.run_token)
    if manifest is None:
        return finish_worker(rd, spec.owner, spec.device, engine, {"stopped": True}, tel)
    if log_ready is not None:
        log_ready.open()
    # the coordinator's DNABERT-S batching: its budget in the manifest, the token counts (when it
    # cuts by tokens) with each segment
    plans = PlanBuilder(eo["token_budget"], eo.get("batches_per_unit", 8), manifest["dna_budget"])
    threading.Thread(target=rd.follow_segments, args=(plans, stop), name="segment-follower", daemon=True).start()
    tel.emit("worker_start", device=spec.device, pid=os.getpid(), startup_s=round(time.perf_counter() - t0, 3),
             entered_t=round(entered, 3), engine_s=round(engine_s, 3), phases=getattr(engine, "startup", None))
    from virnucpro.core.background import gc_paused
    with gc_paused():   # the segments' sequences are many small objects: no collector passes over them
        totals = work(engine, plans, clf, tel, rd, spec.owner, stop, spec.stale_s, parent_pid=parent_pid)
    return finish_worker(rd, spec.owner, spec.device, engine, totals, tel)


def _wait_for_file_manifest(rd: RunDir, stop: threading.Event, token: str | None = None,
                            timeout: float = 3600.0) -> dict | None:
    """The coordinator writes the manifest (identity and token budget) before planning; this run's
    carries ``token`` (a manifest left in OUTDIR by an earlier run does not). None: stop, timeout,
    or the coordinator is gone."""
    t0, parent = time.time(), os.getppid()
    while not stop.is_set() and time.time() - t0 < timeout and os.getppid() == parent:
        if rd.manifest_path.exists():
            try:
                m = rd.read_manifest()
            except InputError:   # being replaced
                m = None
            if m is not None and m.get("run_token") == token:
                return m
        time.sleep(0.05)
    return None


def finish_worker(rd: RunDir, owner: str, device: str, engine, totals: dict, tel: Telemetry) -> dict:
    """Write the worker's totals for the coordinator and emit its ``worker_summary``."""
    stats = {"worker": owner, "device": device, **totals, "mfu_esm": getattr(engine, "mfu_esm", None),
             "peak_tflops": getattr(engine, "peak_tflops", None),
             "peak_gpu_mem_gib": peak_gpu_mem_gib(device)}
    busy = totals.get("busy_s", 0.0)
    tel.emit("worker_summary", busy_s=round(busy, 4), units=totals.get("units", 0),
             tokens_per_s=round(totals.get("esm_tokens", 0) / busy, 1) if busy else None,
             esm_tokens=totals.get("esm_tokens", 0), device=device)
    _atomic_bytes(rd.workers / f"{owner}.json", json.dumps(stats, default=str).encode())
    return stats


@dataclass
class Coordinator:
    """Spawns one process per device string, watches them, re-queues the units of dead ones."""
    base: WorkerSpec
    devices: list[str]
    rd: RunDir
    tel: Telemetry
    describe_unit: Callable[[int], str]
    max_unit_retries: int = 3
    skip_failing_units: bool = False
    max_restarts: int | None = None
    on_poll: Callable[[set[int]], None] | None = None
    procs: dict[str, Any] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    start_method: str | None = None     # None: start_method(); "spawn" after a worker came from a bad fork

    def _spawn(self, owner: str, device: str) -> None:
        import dataclasses
        method = self.start_method or start_method()
        ctx = worker_context(method)
        env = {**os.environ, "VIRNUCPRO_START": method}
        spec = dataclasses.replace(self.base, owner=owner, device=device, env=env, cwd=os.getcwd())
        p = ctx.Process(target=worker_main, args=(spec,), name=f"virnucpro-{owner}", daemon=False)
        p.start()
        self.procs[owner] = (p, device)
        self.started.append(owner)

    def start(self) -> None:
        """Spawn the workers; they claim units once the manifest with their run token exists."""
        for k, dev in enumerate(self.devices):
            self._spawn(f"w{k}", dev)

    def kill_all(self) -> None:
        for p, _ in self.procs.values():
            if p.is_alive():
                p.kill()
        for p, _ in self.procs.values():
            p.join(timeout=10)

    def run(self, stop: threading.Event, plans) -> list[dict]:
        """Watch the workers until every unit of ``plans`` (a PlanBuilder, possibly still growing)
        is done (or ``stop`` and they stopped); their stats."""
        restarts, max_restarts = 0, self.max_restarts if self.max_restarts is not None else 2 * len(self.devices)
        retries: dict[int, int] = {}
        generation: dict[str, int] = {}
        forwarded = False
        all_done_at = None
        try:
            while True:
                time.sleep(0.05 if all_done_at is None else 0.02)   # the run's end is seen within 50 ms
                done = self.rd.done_units()
                if self.on_poll:
                    self.on_poll(done)
                if stop.is_set() and not forwarded:
                    for p, _ in self.procs.values():
                        if p.is_alive():
                            os.kill(p.pid, signal.SIGTERM)
                    forwarded = True
                for owner, (p, dev) in list(self.procs.items()):
                    if p.is_alive():
                        continue
                    p.join()
                    del self.procs[owner]
                    code = p.exitcode
                    if code in (0, STOPPED_EXIT):
                        continue
                    if code == STORAGE_EXIT:
                        from virnucpro.errors import STORAGE_ADVICE
                        raise VirnucproError(f"worker {owner} ({dev}) could not write its results: the disk is full "
                                             f"or the output directory is not writable (see virnucpro.log; "
                                             f"{STORAGE_ADVICE})")
                    if code == BAD_FORK_EXIT:   # (a spawned worker never is in a bad fork: no loop)
                        if self.start_method != "spawn":
                            log.warning("worker %s could not use CUDA (forked after CUDA was initialised); "
                                        "starting workers with spawn from now on", owner)
                        self.tel.emit("worker_restart", worker=owner, device=dev, why="bad fork", start_method="spawn")
                        self.start_method = "spawn"
                        self.rd.release_owner(owner)
                        self._spawn(owner + "s", dev)
                        continue
                    lost, started = self.rd.release_owner(owner)
                    self.tel.emit("worker_lost", worker=owner, device=dev, exitcode=code, released_units=lost,
                                  started_units=started)
                    log.warning("worker %s (%s) died (exit code %s); its units %s go back to the queue",
                                owner, dev, code, lost)
                    for u in started:
                        retries[u] = retries.get(u, 0) + 1
                        if retries[u] >= self.max_unit_retries and self.skip_failing_units:
                            why = f"unit {u} was lost with its worker {retries[u]} times; skipped ({self.describe_unit(u)})"
                            self.rd.skip_unit(u, why)
                            self.tel.emit("unit_skipped", unit=u, attempts=retries[u])
                            max_restarts += self.max_unit_retries   # those deaths were this unit's
                            log.error("%s: its frames get no prediction (--skip-failing-units)", why)
                        elif retries[u] >= self.max_unit_retries:
                            raise VirnucproError(
                                f"unit {u} was lost with its worker {retries[u]} times; giving up. "
                                f"It holds {self.describe_unit(u)}. See the log; finished units are kept "
                                f"(rerun with --resume)")
                    remaining = plans.n_units - len(self.rd.done_units()) + (0 if plans.complete else 1)
                    if stop.is_set() or remaining <= 0:
                        continue
                    if restarts >= max_restarts:
                        if not self.procs:
                            raise VirnucproError(f"workers died {restarts + 1} times; giving up (see the log). "
                                                 "Finished units are kept: rerun with --resume")
                        continue
                    if not self.procs or remaining > len(self.procs):
                        base = owner.split(".")[0]
                        generation[base] = generation.get(base, 0) + 1
                        restarts += 1
                        self._spawn(f"{base}.{generation[base]}", dev)
                plans.check()
                if all_done_at is None and all_done(self.rd, plans):
                    all_done_at = time.time()
                if not self.procs:
                    break
                if all_done_at is not None and all((self.rd.workers / f"{o}.json").exists() for o in self.procs):
                    break   # every live worker has written its totals; what is left of them is exiting
                if all_done_at is not None and time.time() - all_done_at > 10:
                    for owner, (p, _) in self.procs.items():   # e.g. a replacement still loading
                        p.kill()
        except BaseException:
            self.kill_all()
            raise
        return [s for s in (self._stats(o) for o in self.started) if s is not None]

    def _stats(self, owner: str) -> dict | None:
        try:
            return json.loads((self.rd.workers / f"{owner}.json").read_text())
        except (FileNotFoundError, ValueError):
            return None


# ------------------------------------------------------------------------------ summary

def summarize_workers(stats: list[dict], embed_wall: float) -> dict:
    """Per-worker units and busy time, load imbalance (slowest / fastest busy time among workers
    that did any work) and total throughput over the embedding wall time."""
    busy = {s["worker"]: float(s.get("busy_s", 0.0)) for s in stats}
    working = [b for s, b in zip(stats, busy.values()) if s.get("units")]
    tokens = sum(s.get("esm_tokens", 0) for s in stats)
    return {
        "n_workers": len(stats),
        "units_per_worker": {s["worker"]: s.get("units", 0) for s in stats},
        "busy_s_per_worker": {k: round(v, 3) for k, v in busy.items()},
        "load_imbalance": round(max(working) / min(working), 3) if working and min(working) > 0 else None,
        "esm_tokens_per_s_total": round(tokens / embed_wall, 1) if embed_wall > 0 else None,
    }


def scaling_line(summary: dict) -> str:
    per = summary.get("esm_tokens_per_s")
    tot = summary.get("esm_tokens_per_s_total")
    n = summary.get("n_workers", 1)
    eff = (tot / (per * n)) if per and tot and n else None
    return (f"scaling: {n} worker(s) on {summary.get('n_gpus', 0)} GPU(s): {tot or 0:,.0f} ESM tok/s in total, "
            f"{per or 0:,.0f} per worker while busy; parallel efficiency "
            f"{'n/a' if eff is None else f'{eff:.0%}'}; load imbalance {summary.get('load_imbalance')}; "
            f"units {summary.get('units_computed')} computed, {summary.get('units_skipped')} resumed")
