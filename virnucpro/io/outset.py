"""An output directory's output set: the files a run writes for its readers (``paths.SET_FILES``,
``embeddings/``'s parts and index, and ``run.json``), which appear all at once or not at all.

The writer (``predict``'s write stage, ``classify``) holds the directory's lock (``virnucpro.io.lock``)
and goes through these steps; each name is also a fault point (``FaultPlan.die_in_write`` /
``full_in_write``, tests/test_output_set.py)::

    stage     every file of the new set is written into OUTDIR/.virnucpro-staging/ (a fast run's
              embeddings parts are hard-linked there from the run directory: no copy)
    staged    ... and fsynced, files and folders; then the commit record, staging/run.json, is
              written last (fsynced): from here on the staging folder holds the whole new set
    unset     OUTDIR/run.json, the old set's commit record, is removed: the old set is incomplete
    clear     the old set's files that the new one lacks go (skipped_reads.tsv, embeddings parts, ...)
    move      each staged file is renamed into OUTDIR (os.replace; one file system: OUTDIR's)
    moving    (one file moved, the others not: the only state that mixes sets on disk)
    commit    staging/run.json is renamed to OUTDIR/run.json: the new set is complete
    cleanup   the staging folder goes

The commit record is ``run.json`` with an ``output_set`` field (each file of the set and its size),
rather than a file of its own: copying a directory's visible files keeps it, and no hidden file joins
the outputs. A kill before ``unset`` leaves the old set complete (the staging folder is removed by
the next run); a kill from ``unset`` to ``commit`` leaves the whole new set in the staging folder,
and the next run into OUTDIR (any run: it recovers under the lock before it writes anything) moves
it into place first (``recover``: roll forward). So OUTDIR holds the old set or the new one, never a
mix; until that next run, readers refuse it with one line (``require_complete``).

What readers accept (``status``): run.json with an ``output_set`` (complete); run.json without one
(an earlier virnucpro's outputs: read as before); no run.json and no trace of a virnucpro run (the
original VirNucPro's outputs, a baseline). They refuse a directory without run.json that holds a
virnucpro log, run directory or staging folder: a run stopped before its set was committed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from virnucpro.core.files import atomic_write
from virnucpro.errors import InputError
from virnucpro.io.paths import (EMBEDDING_INDEX, EMBEDDING_PART_GLOB, EMBEDDINGS, LOG_NAME, RUN_DIRNAME, RUN_JSON,
                                SET_FILES, STAGING_DIRNAME, Paths)

STEPS = ("stage", "staged", "unset", "clear", "move", "moving", "commit", "cleanup")
SET_FIELD = "output_set"


class OutputSet:
    """The output set of ``outdir``; ``on_step(name)`` is called at each step (a test's faults)."""

    def __init__(self, outdir: str | Path, on_step: Callable[[str], None] | None = None):
        self.outdir = Path(outdir)
        self.staging = Paths(outdir).staging
        self.on_step = on_step

    def step(self, name: str) -> None:
        if self.on_step is not None:
            self.on_step(name)

    # before a run writes ----------------------------------------------------------------------
    def recover(self) -> str | None:
        """What a killed writer left: a complete staged set is moved into place (``"rolled
        forward"``), an incomplete one removed (``"removed"``); None when there was nothing."""
        st = self.staging
        if st.is_symlink():
            st.unlink()
            return "removed"
        if not st.exists():
            return None
        if (st / RUN_JSON).is_file():
            self._swap(faults=False)
            return "rolled forward"
        shutil.rmtree(st)
        return "removed"

    # the write stage ----------------------------------------------------------------------------
    def begin(self) -> Path:
        """The staging folder the new set's files are written to (it may already hold a reference
        run's embeddings parts)."""
        self.staging.mkdir(exist_ok=True)
        self.step("stage")
        return self.staging

    def adopt_parts(self, folder: Path) -> int:
        """--save-embeddings: the embeddings parts a run keeps in ``folder`` (beside its
        checkpoints), hard-linked into the staging folder (copied where links are refused)."""
        dst = self.staging / EMBEDDINGS
        dst.mkdir(exist_ok=True)
        n = 0
        for p in sorted(Path(folder).glob(EMBEDDING_PART_GLOB)):
            try:
                os.link(p, dst / p.name)
            except FileExistsError:
                pass
            except OSError:   # a file system without hard links
                shutil.copyfile(p, dst / p.name)
            n += 1
        return n

    def abandon(self) -> None:
        """The write stage failed before the new set was whole in the staging folder: drop it (the
        old set is untouched). Once staged whole, it stays for the next run to move into place."""
        if self.staging.is_dir() and not (self.staging / RUN_JSON).is_file():
            shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self, manifest: dict, run_token: str | None = None) -> Path:
        """Write the commit record (``manifest`` + the set's files) into the staging folder last,
        then move the set into place. ``run_token``: the checkpoints the set was made from."""
        self.step("staged")
        files = self._staged_files()
        _fsync_tree(self.staging)
        record = {**manifest, SET_FIELD: {"files": files, "run_token": run_token}}
        with atomic_write(self.staging / RUN_JSON, fsync=True) as fh:
            json.dump(record, fh, indent=2, default=str)
            fh.write("\n")
        _fsync_dir(self.staging)
        self._swap(faults=True)
        return self.outdir / RUN_JSON

    def _staged_files(self) -> dict[str, int]:
        """Each staged file of the set (``embeddings/NAME`` for the folder's) and its size."""
        out = {}
        for name in SET_FILES:
            p = self.staging / name
            if p.is_file():
                out[name] = p.stat().st_size
        emb = self.staging / EMBEDDINGS
        if emb.is_dir():
            for p in sorted(emb.iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    out[f"{EMBEDDINGS}/{p.name}"] = p.stat().st_size
        return out

    def _swap(self, faults: bool) -> None:
        """Steps ``unset`` to ``cleanup``, from a complete staging folder. Idempotent: a roll
        forward after a kill at any of them finishes the job."""
        step = self.step if faults else (lambda name: None)
        out, st = self.outdir, self.staging
        record = json.loads((st / RUN_JSON).read_text(encoding="utf-8"))
        new = set(record[SET_FIELD]["files"])
        step("unset")
        (out / RUN_JSON).unlink(missing_ok=True)
        _fsync_dir(out)
        step("clear")
        for name in SET_FILES:
            if name not in new:
                (out / name).unlink(missing_ok=True)
        emb = out / EMBEDDINGS
        if emb.is_dir() and not emb.is_symlink():   # the set's parts and index; a user's own files stay
            for p in [*emb.glob(EMBEDDING_PART_GLOB), emb / EMBEDDING_INDEX]:
                if f"{EMBEDDINGS}/{p.name}" not in new:
                    p.unlink(missing_ok=True)
        step("move")
        moved = 0
        for name in sorted(new):
            src = st / name
            if not src.exists():     # moved before a kill
                continue
            dst = out / name
            dst.parent.mkdir(exist_ok=True)
            os.replace(src, dst)
            moved += 1
            if moved == 1:
                step("moving")
        _fsync_dir(out)
        if emb.is_dir():
            _fsync_dir(emb)
        step("commit")
        os.replace(st / RUN_JSON, out / RUN_JSON)
        _fsync_dir(out)
        step("cleanup")
        shutil.rmtree(st, ignore_errors=True)
        if emb.is_dir() and not emb.is_symlink() and not any(emb.iterdir()):
            emb.rmdir()


# readers ----------------------------------------------------------------------------------------

def status(outdir: str | Path) -> str:
    """``complete`` | ``legacy`` (an earlier virnucpro's run.json, no commit record) | ``foreign``
    (no trace of a virnucpro run: e.g. the original VirNucPro's outputs) | ``incomplete``."""
    outdir = Path(outdir)
    record = committed_record(outdir)
    if record is not None:
        return "complete"
    if (outdir / RUN_JSON).is_file():
        return "legacy"
    if any((outdir / n).exists() for n in (STAGING_DIRNAME, RUN_DIRNAME, LOG_NAME)):
        return "incomplete"
    return "foreign"


def committed_record(outdir: str | Path) -> dict | None:
    """OUTDIR's run.json when it is a commit record (has ``output_set``), else None."""
    try:
        data = json.loads((Path(outdir) / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get(SET_FIELD), dict) else None


def require_complete(outdir: str | Path) -> None:
    """InputError (one line) when ``outdir`` holds a virnucpro output set that was never committed."""
    outdir = Path(outdir)
    if status(outdir) != "incomplete":
        return
    staged = (outdir / STAGING_DIRNAME / RUN_JSON).is_file()
    how = ("a run was stopped while moving its outputs into place" if staged
           else "the run writing it has not finished, or was stopped")
    raise InputError(f"{outdir}: incomplete output set (no {RUN_JSON}: {how}); the next `virnucpro predict` "
                     "into it finishes or replaces it (add --resume to reuse a fast run's checkpoints)")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Every file and folder under ``root`` on disk (a file's dirty pages, whoever wrote them)."""
    for folder, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))
