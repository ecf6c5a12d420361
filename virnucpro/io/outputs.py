"""Output files, in the original formats, written atomically (temp file in the same dir + rename).

- ``prediction_results.txt``: ``Sequence_ID  Prediction  score1  score2`` (tab-separated), one row
  per kept frame in input order, scores as numpy float32's ``str()`` (e.g. ``0.8789939``).
- ``prediction_results_highestscore.csv``: tab-separated despite its name, ``Modified_ID  Is_Virus``;
  Modified_ID = Sequence_ID minus its last two characters (so one row per CHUNK), Is_Virus =
  max(score2) >= max(score1) over the chunk's frames, ``True``/``False``, rows sorted by id.
- ``skipped_reads.tsv``: only after ``--skip-failing-units`` gave up on a work unit: the ids of the
  reads that got no (or only partial) predictions.
- ``read_summary.tsv`` (new): one row per input read: read_id, length, n_chunks, kept_frames,
  max_virus_score, max_others_score (the best score2 and the best score1 over the read's kept
  frames, as written in prediction_results.txt), label (``virus`` when any chunk's consensus is
  viral, ``others``, ``no_kept_frame``, or ``skipped``). Lines starting with ``#`` above the header
  are comments (synthetic-model warning); pandas reads it with ``comment="#"``.
- ``viral_reads.fa`` (new): the reads labelled ``virus``, in input order, as read (one sequence
  line each), headers ``>{read_id} max_virus_score={score}`` (as geNomad's virus.fna lists the
  sequences it calls viral).
- ``embeddings/`` (only with ``--save-embeddings``): each kept frame's classifier input, as the run
  computed it: ``part-NNNNN.npz`` files (a work unit or a block of frames each) holding ``frame``
  (int64 [n]: the frame's index among the run's kept frames in input order, which is its row in
  ``prediction_results.txt`` unless a unit was skipped) and ``features`` (float32 [n, 768 + 2560] with
  the real models: DNABERT-S's mean, then ESM-2's), written while the GPUs work; ``index.tsv``:
  ``Sequence_ID  part  row`` per frame in ``prediction_results.txt`` order. ``load_embeddings(outdir)``
  gives (ids, features) in that order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from virnucpro.core.files import atomic_write
from virnucpro.io.paths import EMBEDDING_INDEX, EMBEDDING_PART_GLOB, EMBEDDINGS, Paths

LABELS = ("others", "virus")     # the classifier's outputs: index 0 is score1, index 1 score2

SYNTHETIC_WARNING = ("produced with SYNTHETIC random-weight models: the labels are NOT biology, "
                     "only a test of the software")


def embedding_part_path(outdir: str | Path, k: int) -> Path:
    return Paths(outdir).embedding_part(k)


def save_embedding_part(outdir: str | Path, k: int, frames: np.ndarray, features: np.ndarray) -> Path:
    """Write part ``k``: frame indices [n] and their features [n, F] (float32), atomically and on
    disk (fsync) before the caller checkpoints the unit, so a checkpointed unit has its part."""
    path = embedding_part_path(outdir, k)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb", fsync=True) as fh:
        np.savez(fh, frame=np.asarray(frames, dtype=np.int64), features=np.asarray(features, dtype=np.float32))
    return path


def embedding_part_readable(outdir: str | Path, k: int) -> bool:
    """Part ``k`` exists and is whole: a zip whose directory lists both arrays (a truncated file
    has no directory; the data are not re-read here)."""
    import zipfile
    path = embedding_part_path(outdir, k)
    try:
        with zipfile.ZipFile(path) as z:
            return {"frame.npy", "features.npy"} <= set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def link_embedding_part(src: str | Path, dst: str | Path, k: int) -> Path:
    """Part ``k`` of ``src``'s embeddings also under ``dst`` (a hard link; a copy where the file
    system has none)."""
    import os
    import shutil
    a, b = embedding_part_path(src, k), embedding_part_path(dst, k)
    b.parent.mkdir(parents=True, exist_ok=True)
    b.unlink(missing_ok=True)
    try:
        os.link(a, b)
    except OSError:
        shutil.copyfile(a, b)
    return b


def clear_embeddings(outdir: str | Path, resume: bool = False) -> None:
    """A fresh run: remove the parts and index an earlier run left in ``outdir/embeddings`` (they
    would not match the new predictions); the folder too when nothing else is in it. On ``resume``
    only the temp files of parts a killed run was writing."""
    folder = Paths(outdir).embeddings
    if not folder.is_dir():
        return
    for p in folder.glob(f".{EMBEDDING_PART_GLOB}.*.tmp"):   # atomic_write's temp names
        p.unlink(missing_ok=True)
    if resume:
        return
    for p in [*folder.glob(EMBEDDING_PART_GLOB), folder / EMBEDDING_INDEX]:
        p.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:   # the user keeps other files there
        pass


def write_embedding_index(outdir: str | Path, frames: Sequence[tuple], keep: np.ndarray) -> dict:
    """``index.tsv`` for the frames ``keep`` (prediction order): where each one's features are.
    Every kept frame must be in exactly one part (else an error naming the first one missing)."""
    folder = Paths(outdir).embeddings
    part_of = np.full(len(frames), -1, dtype=np.int64)
    row_of = np.zeros(len(frames), dtype=np.int64)
    n_bytes = 0
    parts = sorted(folder.glob(EMBEDDING_PART_GLOB))
    for p in parts:
        with np.load(p) as z:
            f = z["frame"]
        part_of[f] = int(p.stem.split("-")[1])
        row_of[f] = np.arange(len(f))
        n_bytes += p.stat().st_size
    keep = np.asarray(keep, dtype=np.int64)
    lost = keep[part_of[keep] < 0]
    if len(lost):
        from virnucpro.errors import VirnucproError
        raise VirnucproError(f"--save-embeddings: {len(lost)} frames have no features in {folder} "
                             f"(the first: {frames[int(lost[0])][0]})")
    with atomic_write(folder / EMBEDDING_INDEX) as fh:
        fh.write("Sequence_ID\tpart\trow\n")
        fh.write("".join(f"{frames[i][0]}\tpart-{p:05d}.npz\t{r}\n"
                         for i, p, r in zip(keep.tolist(), part_of[keep].tolist(), row_of[keep].tolist())))
    return {"parts": len(parts), "bytes": n_bytes, "frames": len(keep)}


def read_embedding_index(outdir: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """(frame ids, part file per frame, row per frame) of ``outdir/embeddings/index.tsv``; InputError
    when there is none or it is not ours."""
    from virnucpro.errors import InputError
    index = Paths(outdir).embedding_index
    if not index.is_file():
        raise InputError(f"{outdir} has no {EMBEDDINGS}/{EMBEDDING_INDEX}: run `virnucpro predict ... "
                         "--save-embeddings` first (only such a run keeps the features)")
    ids, parts, rows = [], [], []
    with open(index, encoding="utf-8") as fh:
        header = next(fh, "").rstrip("\n")
        if header != "Sequence_ID\tpart\trow":
            raise InputError(f"{index}: not a virnucpro embeddings index (header {header[:60]!r})")
        for n, line in enumerate(fh, start=2):
            cols = line.rstrip("\n").split("\t")
            if len(cols) != 3 or not cols[2].isdigit():
                raise InputError(f"{index}, line {n}: expected Sequence_ID, part, row")
            ids.append(cols[0])
            parts.append(cols[1])
            rows.append(int(cols[2]))
    return ids, parts, np.asarray(rows, dtype=np.int64)


def embedding_features(outdir: str | Path, parts: Sequence[str], rows: np.ndarray) -> Iterator[tuple[list[int], np.ndarray]]:
    """Part by part (one in memory at a time): the index positions it holds and their features
    [len(positions), F], for ``read_embedding_index``'s ``parts`` and ``rows``."""
    from virnucpro.errors import InputError
    where: dict[str, list[int]] = {}
    for k, name in enumerate(parts):
        where.setdefault(name, []).append(k)
    for name, ks in where.items():
        path = Paths(outdir).embeddings / name
        try:
            with np.load(path) as z:
                feats = z["features"]
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"cannot read {path} ({type(exc).__name__}: {exc})") from None
        yield ks, feats[rows[ks]]


def load_embeddings(outdir: str | Path) -> tuple[list[str], np.ndarray]:
    """(frame ids, features [n, 768 + 2560] float32) of a run made with ``--save-embeddings``, in
    ``prediction_results.txt`` order (all in memory: ~13 KB per frame)."""
    ids, parts, rows = read_embedding_index(outdir)
    out: np.ndarray | None = None
    for ks, feats in embedding_features(outdir, parts, rows):
        if out is None:   # the feature width comes with the first part
            out = np.empty((len(ids), feats.shape[1]), dtype=np.float32)
        out[ks] = feats
    return ids, out if out is not None else np.zeros((0, 0), dtype=np.float32)


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


class OutputRows:
    """The rows of the three output files, made while the GPUs still work, so that the write stage
    at the end of a run only puts them together: each finished unit's prediction lines and score
    strings (``add``, as units finish) and the parts of the consensus and the per-read summary that
    do not depend on scores (``prepare``, once every frame is known). ``write`` makes what is still
    missing and writes the files; with nothing prepared it does all the work itself."""

    def __init__(self) -> None:
        self.line: dict[int, str] = {}     # frame index -> its prediction_results.txt line
        self.s1: dict[int, str] = {}       # frame index -> its score1 as written (numpy float32 str)
        self.s2: dict[int, str] = {}       # frame index -> its score2 as written
        self.static: dict | None = None

    def add(self, frames: Sequence[tuple], idx: np.ndarray, scores: np.ndarray) -> None:
        """Format frames ``idx`` (global indices into ``frames``) with their scores [n, 2]."""
        s = np.asarray(scores, dtype=np.float32)
        line, s1, s2 = self.line, self.s1, self.s2
        for i, a, b in zip(np.asarray(idx).tolist(), s[:, 0], s[:, 1]):  # a, b: np.float32 -> str()
            as_, bs = str(a), str(b)
            line[i] = f"{frames[i][0]}\t{LABELS[int(b > a)]}\t{as_}\t{bs}\n"
            s1[i], s2[i] = as_, bs

    def prepare(self, records: Sequence, chunks: Sequence, frames: Sequence[tuple]) -> None:
        """The score-independent parts: chunk groups and their sorted order, each frame's read,
        each read's chunk count, the fixed columns of every row."""
        if self.static is not None:
            return
        keys, group = chunk_groups([f[0] for f in frames])
        chunk_read = np.fromiter((c.read_index for c in chunks), dtype=np.int64, count=len(chunks))
        frame_read = chunk_read[np.fromiter((f[1] for f in frames), dtype=np.int64, count=len(frames))]
        n_chunks = np.bincount(chunk_read, minlength=len(records)).tolist()
        self.static = {
            "group": group, "n_groups": len(keys), "frame_read": frame_read,
            "order": sorted(range(len(keys)), key=keys.__getitem__),          # rows sorted by chunk id
            "chunk_head": [f"{k}\t" for k in keys],
            "read_head": [f"{r.id}\t{len(r.seq)}\t{nc}\t" for r, nc in zip(records, n_chunks)],
        }

    def write(self, outdir: Path, records: Sequence, chunks: Sequence, frames: Sequence[tuple], scores: np.ndarray,
              synthetic: bool) -> dict:
        """Write prediction_results.txt, prediction_results_highestscore.csv, read_summary.tsv,
        viral_reads.fa (and skipped_reads.tsv when frames have no score: NaN, units given up on).
        Returns the counts of the summary and the indices of the reads with skipped frames."""
        scores = np.asarray(scores, dtype=np.float32)
        skipped = np.isnan(scores[:, 0])
        keep = np.flatnonzero(~skipped)
        missing = np.asarray([i for i in keep.tolist() if i not in self.line], dtype=np.int64)
        if len(missing):
            self.add(frames, missing, scores[missing])
        self.prepare(records, chunks, frames)
        st = self.static
        with atomic_write(Paths(outdir).predictions) as fh:
            fh.write("Sequence_ID\tPrediction\tscore1\tscore2\n")
            fh.write("".join([self.line[i] for i in keep.tolist()]))
        g = st["group"][keep]
        present, viral = write_consensus(outdir, g, st["n_groups"], scores[keep], st["chunk_head"], st["order"])
        # one row per read: kept frames, best score2 and best score1 (the strings of those frames), label
        n = len(records)
        ri = st["frame_read"][keep]
        kept = np.bincount(ri, minlength=n)
        best_frame = _best_frame_per_read(ri, keep, scores[keep, 1], n)
        best_others = _best_frame_per_read(ri, keep, scores[keep, 0], n)
        read_viral = np.bincount(ri, weights=viral[g], minlength=n) > 0
        # (np.unique's first call imports numpy.ma, ~0.01 s on cpu-dev: not for the usual run without skips)
        skipped_reads = np.unique(st["frame_read"][skipped]).tolist() if skipped.any() else []
        is_skipped = np.zeros(n, dtype=bool)
        is_skipped[skipped_reads] = True
        labels = np.where(is_skipped, "skipped", np.where(kept == 0, "no_kept_frame",
                                                          np.where(read_viral, "virus", "others"))).tolist()
        s1, s2 = self.s1, self.s2
        with atomic_write(Paths(outdir).read_summary) as fh:
            if synthetic:
                fh.write(f"# {SYNTHETIC_WARNING}\n")
            fh.write(READ_SUMMARY_HEADER)
            fh.write("".join([f"{h}{k}\t{s2[b] if k else ''}\t{s1[o] if k else ''}\t{lab}\n" for h, k, b, o, lab in
                              zip(st["read_head"], kept.tolist(), best_frame.tolist(), best_others.tolist(), labels)]))
        write_viral_reads(outdir, records, labels, best_frame.tolist(), s2)
        if skipped_reads:
            write_skipped_reads(outdir, [records[i].id for i in skipped_reads])
        return {"viral_chunks": int((viral & present).sum()), "chunks_with_frames": int(present.sum()),
                "viral_reads": labels.count("virus"), "no_kept_frame_reads": labels.count("no_kept_frame"),
                "skipped_reads": skipped_reads, "skipped_frames": int(skipped.sum()), "frames": len(keep)}


READ_SUMMARY_HEADER = "read_id\tlength\tn_chunks\tkept_frames\tmax_virus_score\tmax_others_score\tlabel\n"


def _best_frame_per_read(ri: np.ndarray, keep: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """[n]: per read, the frame (index into the run's frames) with its highest ``score`` (of equal
    ones the last); -1 for a read without one. ``ri``: the read of each frame ``keep``; ``score``:
    theirs. Two passes of ufunc.at, no sort: 0.37 s for 3M frames of 1M reads where a lexsort took
    2.2 s (measured on the 2-core development machine; the write stage runs it twice, for score2
    and score1)."""
    top = np.full(n, -np.inf)
    np.maximum.at(top, ri, score)
    at_top = score == top[ri]
    best = np.full(n, -1, dtype=np.int64)
    np.maximum.at(best, ri[at_top], keep[at_top])
    return best


def write_viral_reads(outdir: Path, records: Sequence, labels: list[str], best_frame: list[int],
                      s2: dict[int, str]) -> Path:
    """viral_reads.fa: the reads labelled ``virus``, headers ``>{id} max_virus_score={score}``."""
    path = Paths(outdir).viral_reads
    with atomic_write(path) as fh:
        fh.writelines(f">{r.id} max_virus_score={s2[b]}\n{r.seq}\n"
                      for r, lab, b in zip(records, labels, best_frame) if lab == "virus")
    return path


def write_consensus(outdir: Path, g: np.ndarray, n_groups: int, scores: np.ndarray, head: list[str],
                    order: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """prediction_results_highestscore.csv from scored frames (chunk group ``g``, ``scores`` [n, 2]):
    a chunk is viral when its best score2 >= its best score1. ``head``: per group ``"{key}\t"``;
    ``order``: the groups sorted by key. Returns (group has a scored frame, group is viral)."""
    best = group_max(g, n_groups, scores)
    present = np.bincount(g, minlength=n_groups) > 0
    viral = best[:, 1] >= best[:, 0]
    pres, vir = present.tolist(), viral.tolist()
    with atomic_write(Paths(outdir).consensus) as fh:
        fh.write("Modified_ID\tIs_Virus\n")
        fh.write("".join([head[k] + ("True\n" if vir[k] else "False\n") for k in order if pres[k]]))
    return present, viral


def write_predictions(outdir: Path, ids: Sequence[str], scores: np.ndarray) -> dict:
    """The original's two files from frame ids (in output order) and their scores [n, 2] alone
    (``virnucpro classify``): prediction_results.txt and the per-chunk consensus."""
    scores = np.asarray(scores, dtype=np.float32)
    with atomic_write(Paths(outdir).predictions) as fh:
        fh.write("Sequence_ID\tPrediction\tscore1\tscore2\n")
        fh.write("".join([f"{i}\t{LABELS[int(b > a)]}\t{a!s}\t{b!s}\n" for i, a, b in zip(ids, scores[:, 0], scores[:, 1])]))
    keys, g = chunk_groups(ids)
    present, viral = write_consensus(outdir, g, len(keys), scores, [f"{k}\t" for k in keys],
                                     sorted(range(len(keys)), key=keys.__getitem__))
    return {"frames": len(ids), "viral_frames": int((scores[:, 1] > scores[:, 0]).sum()),
            "chunks_with_frames": int(present.sum()), "viral_chunks": int((viral & present).sum())}


def write_manifest(outdir: Path, manifest: dict) -> Path:
    path = Paths(outdir).run_json
    with atomic_write(path) as fh:
        json.dump(manifest, fh, indent=2, default=str)
        fh.write("\n")
    return path


def write_synthetic_note(outdir: Path, details: dict) -> Path:
    path = Paths(outdir).synthetic_note
    with atomic_write(path) as fh:
        fh.write(f"WARNING: every file in this directory was {SYNTHETIC_WARNING}.\n")
        fh.write(json.dumps(details, indent=2, default=str) + "\n")
    return path


def write_skipped_reads(outdir: Path, read_ids: list[str]) -> Path:
    path = Paths(outdir).skipped_reads
    with atomic_write(path) as fh:
        fh.write("read_id\treason\n")
        fh.writelines(f"{rid}\twork unit failed repeatedly (--skip-failing-units)\n" for rid in read_ids)
    return path


# samples_summary.tsv (multi-sample predict, in OUTROOT): one row per sample, in the order given.
# status: ok (its output set is committed in OUTROOT/<sample>/), failed (message: the one-line reason),
# not_run (the command stopped before it: Ctrl-C or a machine problem). The counts are empty unless ok.
SAMPLES_COLUMNS = ("sample", "input", "status", "reads", "chunks", "kept_frames", "viral_reads", "seconds", "message")


def write_samples_summary(path: Path, rows: Sequence[dict]) -> Path:
    """``rows``: dicts keyed by SAMPLES_COLUMNS (a missing or None field is written empty); the file
    is replaced atomically, so a reader never sees half a table."""
    def cell(v) -> str:
        return "" if v is None else " ".join(str(v).split())   # one line, no tabs
    with atomic_write(path, fsync=True) as fh:
        fh.write("\t".join(SAMPLES_COLUMNS) + "\n")
        fh.writelines("\t".join(cell(r.get(c)) for c in SAMPLES_COLUMNS) + "\n" for r in rows)
    return Path(path)
