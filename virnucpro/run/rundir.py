"""The run directory ``OUTDIR/.virnucpro-run/``: what a run's checkpoints were made from, the
finished units, the claims on units in progress, the segments worker processes plan from::

    manifest.json            what the checkpoints were made from (input sha256, model fingerprints,
                             engine, precision, chunking, token budget, units); written before any unit
    plan/unit_000012.pkl     the work plan as it is made (``plan.planner.UnitStore``): each unit's
                             batches and sequences, written before the unit is published, read back by
                             the loaders; plan/index_00003.pkl: what planning segment 3 added, from
                             which worker processes follow the coordinator's plan; removed at the end
                             (a torchrun rank other than 0 keeps its own plan in plan-r<rank>/)
    units/unit_00012.npz     a finished unit: its frame indices and scores (temp file + os.replace)
    claims/unit_00012        a unit being worked on, created with O_CREAT|O_EXCL; holds the owner;
                             its mtime is the owner's heartbeat
    workers/<owner>.json     a worker's totals when it stops (for the summary)

A unit is done iff its ``.npz`` (or, given up on with --skip-failing-units, its ``.skipped``) exists.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from virnucpro.core.files import atomic_bytes
from virnucpro.errors import InputError, VirnucproError
from virnucpro.io.paths import RUN_DIRNAME

# Manifest keys that must match for --resume, with the words used when they do not.
IDENTITY = {"input": "input file (size, sha256)", "models": "models (fingerprints)", "engine": "engine",
            "precision": "precision", "chunk_length": "chunk length", "chunking": "chunking mode",
            "duplicate_ids": "duplicate-id handling", "token_budget": "token budget",
            "batches_per_unit": "batches per unit", "dna_batches": "DNABERT-S batches cut by",
            "dna_budget": "DNABERT-S batch budget",
            "segment_reads": "reads per planning segment", "plan_version": "work-plan version (virnucpro release)",
            "save_embeddings": "--save-embeddings",
            "engine_config": "engine configuration (precision, ESM-2 kernels, GELU, DNABERT-S compile)"}


def input_fingerprint(records, wait: bool = True) -> dict | None:
    """Size and sha256 of the input's bytes (its content, not its name), as its reader hashed them
    while parsing them (``records``: an ``io.fasta.RecordStream``; the file is never opened again by
    name: a standard input or a pipe cannot be, and a file deleted mid-run was an internal error).
    Waits for the whole input to be read, or with ``wait=False`` gives None until it is. Raises
    the input's error."""
    if not wait and not records.done:
        return None
    records.result()
    return dict(records.identity)



@dataclass
class Claim:
    owner: str
    heartbeat: float            # the claim file's mtime


@dataclass
class Released:
    """The claims of a dead worker, released: its unfinished units, and those of them it had started
    and not computed (only these count as attempts that may have killed it)."""
    lost: list[int]
    started: list[int]


class RunDir:
    """``OUTDIR/.virnucpro-run``: every file a run's workers share (the module docstring lists them)."""

    def __init__(self, outdir: str | Path):
        self.outdir = Path(outdir)
        self.root = Path(outdir) / RUN_DIRNAME
        self.units, self.claims, self.workers = self.root / "units", self.root / "claims", self.root / "workers"
        self.plan = self.root / "plan"
        self.manifest_path = self.root / "manifest.json"

    # manifest ---------------------------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            raise InputError(f"{self.manifest_path} is damaged; rerun with --force instead of --resume to start over") from None

    def write_manifest(self, manifest: dict) -> None:
        atomic_bytes(self.manifest_path, (json.dumps(manifest, indent=2, default=str) + "\n").encode())

    def wait_for_manifest(self, token: str | None, timeout: float = 3600.0, poll: float = 0.05,
                          give_up: Callable[[], bool] = lambda: False) -> dict | None:
        """The manifest of the run that carries ``token`` (one left in OUTDIR by an earlier run does
        not), once its writer has written it; None after ``timeout`` or once ``give_up()``."""
        t0 = time.time()
        while time.time() - t0 < timeout and not give_up():
            if self.manifest_path.exists():
                try:
                    m = self.read_manifest()
                except InputError:   # being replaced
                    m = None
                if m is not None and m.get("run_token") == token:
                    return m
            time.sleep(poll)
        return None

    def check(self, manifest: dict | None, expected: dict, keys=IDENTITY) -> None:
        """Refuse to resume from checkpoints made from anything else: InputError naming the differences."""
        if manifest is None:
            raise InputError(f"--resume: no checkpoint to resume from in {self.root} (run without --resume)")
        # A key the manifest lacks was not recorded by the virnucpro that made it (engine_config before
        # EngineConfig existed, plan_version before work plans were versioned): what the checkpoints were
        # computed with is unknowable, so they are refused as such, never as "a different" setting.
        unrecorded = [words for k, words in keys.items() if k in expected and k not in manifest]
        if unrecorded:
            raise InputError(f"--resume refused: the checkpoints in {self.root} were made by an older virnucpro "
                             f"({manifest.get('virnucpro_version') or 'version unknown'}) that did not record its "
                             f"{', '.join(unrecorded)}, so they cannot be matched to this run's settings. "
                             "Rerun with --force instead of --resume to start over.")
        diffs = [f"{words} (checkpoint: {_short(manifest.get(k))}; now: {_short(expected.get(k))})"
                 for k, words in keys.items() if k in expected and manifest.get(k) != expected[k]]
        if diffs:
            raise InputError(f"--resume refused: the checkpoints in {self.root} were made with a different "
                             + "; ".join(diffs) + ". Rerun with --force instead of --resume to start over.")

    def reset(self) -> None:
        """A fresh run: drop every checkpoint of an earlier run in this output directory."""
        import shutil
        self.refuse_link()
        if self.root.exists():
            shutil.rmtree(self.root)
        self.make_dirs()

    def refuse_link(self) -> None:
        """A symbolic link planted in place of the run directory is refused, never followed."""
        if self.root.is_symlink():
            raise InputError(f"{self.root} is a symbolic link: refusing to keep checkpoints through it (remove it)")

    def has_checkpoints(self) -> bool:
        """A run left finished work units here for --resume."""
        try:
            return self.manifest_path.is_file() and bool(self.done_units())
        except OSError:
            return False

    def make_dirs(self) -> None:
        self.refuse_link()
        for d in (self.units, self.claims, self.workers):
            d.mkdir(parents=True, exist_ok=True)

    def clear_claims(self) -> None:
        """On --resume on one host: claims, plans and temp files left by the killed run are void."""
        self.remove_plans()
        for d in (self.claims, self.units, self.workers):
            for p in d.iterdir():
                if d is not self.units or p.name.startswith("."):
                    p.unlink(missing_ok=True)

    # plans -------------------------------------------------------------------------------------
    def plan_dir(self, owner: str | None = None) -> Path:
        """The plan's unit store: the run's (written by the coordinator, followed by its worker
        processes), or a torchrun rank's own (``owner``: ranks other than 0 plan for themselves)."""
        return self.plan if owner is None else self.root / f"plan-{owner}"

    def remove_plans(self) -> None:
        import shutil
        if self.root.is_dir():
            for p in self.root.glob("plan*"):
                shutil.rmtree(p, ignore_errors=True)

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
        atomic_bytes(self.skipped_path(u), (why + "\n").encode())

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

    def claimed(self) -> dict[int, Claim]:
        """unit -> its claim, for every current claim."""
        out = {}
        for p in self.claims.iterdir():
            if not p.name.startswith("unit_") or "." in p.name:
                continue
            try:
                out[int(p.name[5:])] = Claim(p.read_text().split("\n")[0], p.stat().st_mtime)
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

    def release_owner(self, owner: str) -> Released:
        """Release every claim of ``owner`` (a dead worker)."""
        lost, started = [], []
        for u, claim in self.claimed().items():
            if claim.owner != owner:
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
        return Released(sorted(lost), sorted(started))

    def save_unit(self, u: int, frames: np.ndarray, scores: np.ndarray) -> None:
        """Checkpoint a finished unit (frame indices [n], scores [n, 2]) atomically."""
        import io
        buf = io.BytesIO()
        np.savez(buf, frames=np.asarray(frames, dtype=np.int64), scores=np.asarray(scores, dtype=np.float32))
        atomic_bytes(self.unit_path(u), buf.getvalue())

    def load_unit(self, u: int, expect: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Unit ``u``'s checkpoint: frames [n] and scores [n, 2]. With ``expect`` (the frames the plan
        gives the unit) a checkpoint of other frames is refused."""
        with np.load(self.unit_path(u)) as z:
            frames, scores = z["frames"], z["scores"]
        if expect is not None and not np.array_equal(frames, expect):
            raise VirnucproError(f"checkpoint {self.unit_path(u)} does not hold the frames of unit {u}; "
                                 f"delete {self.root} and rerun")
        return frames, scores

    def unit_whole(self, u: int) -> bool:
        """The checkpoint of unit ``u`` reads back whole: the zip's directory (its arrays' sizes) is
        there and each array matches the CRC-32 recorded with it, frames [n] beside scores [n, 2].
        False for an empty, truncated or altered file (the bytes are read; ~16 per frame)."""
        import zipfile
        try:
            frames, scores = self.load_unit(u)
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
            return False
        return frames.ndim == 1 and scores.shape == (len(frames), 2)

    def load_scores(self, prep, n_frames: int) -> np.ndarray:
        """Merge: the scores [N, 2] of every frame from the unit files, checking each unit holds
        exactly the frames the plan (``plan.planner.Prepared``) gives it."""
        scores = np.full((n_frames, 2), np.nan, dtype=np.float32)
        skipped = self.skipped_units()
        for unit in prep.plan.units:
            if unit.index in skipped:   # left NaN: the pipeline reports these frames instead
                continue
            frames, s = self.load_unit(unit.index, prep.unit(unit.index).frames)
            scores[frames] = s
        missing = int(np.isnan(scores[:, 0]).sum()) - sum(int(prep.unit_frames[u]) for u in skipped)
        if missing:
            raise VirnucproError(f"{missing} frames have no score after merging the units (a bug; please report)")
        return scores


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


