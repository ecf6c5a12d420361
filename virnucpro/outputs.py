"""Output files, in the original formats, written atomically (temp file in the same dir + rename).

- ``prediction_results.txt``: ``Sequence_ID  Prediction  score1  score2`` (tab-separated), one row
  per kept frame in input order, scores as numpy float32's ``str()`` (e.g. ``0.8789939``).
- ``prediction_results_highestscore.csv``: tab-separated despite its name, ``Modified_ID  Is_Virus``;
  Modified_ID = Sequence_ID minus its last two characters (so one row per CHUNK), Is_Virus =
  max(score2) >= max(score1) over the chunk's frames, ``True``/``False``, rows sorted by id.
- ``skipped_reads.tsv``: only after ``--skip-failing-units`` gave up on a work unit: the ids of the
  reads that got no (or only partial) predictions.
- ``read_summary.tsv`` (new): one row per input read: read_id, length, n_chunks, kept_frames,
  max_virus_score, label (``virus`` when any chunk's consensus is viral, ``others``,
  ``no_kept_frame``, or ``skipped``). Lines starting with ``#`` above the header are comments (synthetic-model
  warning); pandas reads it with ``comment="#"``.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Sequence

import numpy as np

from virnucpro.models.classifier import LABELS

PREDICTIONS = "prediction_results.txt"
CONSENSUS = "prediction_results_highestscore.csv"
READ_SUMMARY = "read_summary.tsv"
MANIFEST = "run.json"
SYNTHETIC_NOTE = "SYNTHETIC_MODELS.txt"
SKIPPED_READS = "skipped_reads.tsv"
SYNTHETIC_WARNING = ("produced with SYNTHETIC random-weight models: the labels are NOT biology, "
                     "only a test of the software")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Write to a temp file beside ``path`` and rename it into place only on success."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8", newline=None if "b" in mode else "\n") as fh:
            yield fh
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def f32(x: float) -> str:
    """numpy float32 str(), the original's score formatting."""
    return str(np.float32(x))


def chunk_groups(frame_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The consensus groups of the frames: (group keys in first-seen order, group index per frame).
    A frame's key is its id minus the last two characters (the original's ``id[:-2]``)."""
    index: dict[str, int] = {}
    g = np.fromiter((index.setdefault(fid[:-2], len(index)) for fid in frame_ids), dtype=np.int64,
                    count=len(frame_ids))
    return list(index), g


def group_max(g: np.ndarray, n_groups: int, scores: np.ndarray) -> np.ndarray:
    """[n_groups, 2]: the largest score1 and score2 of each group's frames."""
    best = np.full((n_groups, 2), -np.inf)
    np.maximum.at(best, g, np.asarray(scores, dtype=np.float64))
    return best


def consensus(frame_ids: Sequence[str], scores: np.ndarray) -> list[tuple[str, bool]]:
    """Per-chunk consensus: group frames by id[:-2]; viral when max score2 >= max score1. Sorted by id."""
    keys, g = chunk_groups(frame_ids)
    best = group_max(g, len(keys), scores)
    viral = (best[:, 1] >= best[:, 0]).tolist()
    return sorted(zip(keys, viral))


def write_predictions(outdir: Path, frame_ids: Sequence[str], scores: np.ndarray) -> Path:
    path = outdir / PREDICTIONS
    s = scores.astype(np.float32)
    with atomic_write(path) as fh:
        fh.write("Sequence_ID\tPrediction\tscore1\tscore2\n")
        for fid, a, b in zip(frame_ids, s[:, 0], s[:, 1]):  # a, b: np.float32 -> str() formatting
            fh.write(f"{fid}\t{LABELS[int(b > a)]}\t{a!s}\t{b!s}\n")
    return path


def write_consensus(outdir: Path, rows: list[tuple[str, bool]]) -> Path:
    path = outdir / CONSENSUS
    with atomic_write(path) as fh:
        fh.write("Modified_ID\tIs_Virus\n")
        fh.writelines(f"{cid}\t{v}\n" for cid, v in rows)
    return path


def write_read_summary(outdir: Path, rows: list[tuple], synthetic: bool) -> Path:
    """rows: (read_id, length, n_chunks, kept_frames, max_virus_score or None, label)."""
    path = outdir / READ_SUMMARY
    with atomic_write(path) as fh:
        if synthetic:
            fh.write(f"# {SYNTHETIC_WARNING}\n")
        fh.write("read_id\tlength\tn_chunks\tkept_frames\tmax_virus_score\tlabel\n")
        for rid, length, n_chunks, kept, best, label in rows:
            fh.write(f"{rid}\t{length}\t{n_chunks}\t{kept}\t{'' if best is None else f32(best)}\t{label}\n")
    return path


def write_manifest(outdir: Path, manifest: dict) -> Path:
    path = outdir / MANIFEST
    with atomic_write(path) as fh:
        json.dump(manifest, fh, indent=2, default=str)
        fh.write("\n")
    return path


def write_synthetic_note(outdir: Path, details: dict) -> Path:
    path = outdir / SYNTHETIC_NOTE
    with atomic_write(path) as fh:
        fh.write(f"WARNING: every file in this directory was {SYNTHETIC_WARNING}.\n")
        fh.write(json.dumps(details, indent=2, default=str) + "\n")
    return path


def write_skipped_reads(outdir: Path, read_ids: list[str]) -> Path:
    path = outdir / SKIPPED_READS
    with atomic_write(path) as fh:
        fh.write("read_id\treason\n")
        fh.writelines(f"{rid}\twork unit failed repeatedly (--skip-failing-units)\n" for rid in read_ids)
    return path
