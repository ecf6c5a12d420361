"""The output rows of a fast run, made while its units finish: spooled to disk a planning segment at
a time (``SpooledRows``, so that they do not grow the host's memory with the input), or kept in
memory (``MemoryRows``: with --save-embeddings, whose index needs every frame's id at the end; and
for the reference engine, ``MemoryRows.whole``).

A planning segment holds whole reads, so a read's chunks and kept frames are all in its segment, and
so is every row of the output files; only the consensus file's order (by chunk id) spans the whole
input. ``SpooledRows`` keeps in ``OUTDIR/.virnucpro-run/rows/``::

    seg_00003.meta     what the rows need of the segment: its reads (ids, sequences as read), its
                       chunks' ids and reads, each kept frame's chunk and tag (no translation);
                       written by the producer thread
    seg_00003.scores   (frame within the segment, score1, score2) records, appended as units finish
                       (a unit packs frames of any segment still being packed)
    seg_00003/         once every frame of the segment has its score (or its unit was given up on):
                       the output files of the segment alone, written by ``io.outputs.OutputRows``

and the write stage joins the segments' files (``JOIN``): their lines in segment order, the
consensus files merged by chunk id (``MERGE_FAN_IN`` at a time). Chunk ids are unique, so a chunk's
frames are grouped alike in a segment and in the whole input: the same bytes (tests/test_rows.py).
"""

from __future__ import annotations

import heapq
import pickle
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from virnucpro.core.files import atomic_write
from virnucpro.io import outputs, paths

SCORE_RECORD = np.dtype([("frame", "<i4"), ("s", "<f4", (2,))])   # a .scores file: 12 bytes per frame
MERGE_FAN_IN = 64                                                # sorted files merged at a time
# How a segment's file joins the run's: its header lines (kept once) and how its rows join.
JOIN = {paths.PREDICTIONS: (1, "append"), paths.READ_SUMMARY: (1, "append"), paths.SKIPPED_READS: (1, "append"),
        paths.VIRAL_READS: (0, "append"), paths.CONSENSUS: (1, "merge")}


class _Read(NamedTuple):
    id: str
    seq: str


class _Chunk(NamedTuple):
    id: str
    read_index: int                 # within the segment


@dataclass
class SegmentMeta:
    """What the output rows need of one planning segment (no translation)."""
    first_read: int                 # global index of its first read
    read_ids: list[str]
    read_seqs: list[str]
    chunk_ids: list[str]
    chunk_read: list[int]           # the chunk's read within the segment
    frame_chunk: list[int]          # the frame's chunk within the segment
    frame_tag: list[str]            # F1 .. R3: a frame's id is its chunk's id and its tag

    @classmethod
    def of(cls, first_read: int, first_chunk: int, records, chunks, frames) -> "SegmentMeta":
        """From a segment's records, chunks and kept frames as ``prep.frames`` makes them (global
        read and chunk indices)."""
        return cls(first_read, [r.id for r in records], [r.seq for r in records], [c.id for c in chunks],
                   [c.read_index - first_read for c in chunks], [f[1] - first_chunk for f in frames],
                   [f[0][-2:] for f in frames])

    def rows_input(self) -> tuple[list, list, list]:
        """(records, chunks, frames) of the segment alone, as ``OutputRows.write`` takes them."""
        records = [_Read(i, s) for i, s in zip(self.read_ids, self.read_seqs)]
        chunks = [_Chunk(i, r) for i, r in zip(self.chunk_ids, self.chunk_read)]
        ids = self.chunk_ids
        frames = [(ids[c] + t, c) for c, t in zip(self.frame_chunk, self.frame_tag)]
        return records, chunks, frames


@dataclass
class _Open:
    """A segment whose frames are not all scored yet."""
    n_frames: int
    first_frame: int
    filled: int = 0


@dataclass
class SpooledRows:
    """The output rows of a run, spooled to ``folder`` as its segments' frames get their scores
    from the units of ``plans`` checkpointed in ``rd``."""
    folder: Path
    rd: object                                      # run.rundir.RunDir
    plans: object                                   # plan.planner.PlanBuilder
    n_reads: int = 0                                # so far (the producer's)
    n_chunks: int = 0
    n_frames: int = 0
    made_ahead: int = 0                             # frames whose rows were made before the write stage
    firsts: list[int] = field(default_factory=list)     # segment -> its first frame (global)
    open: dict[int, _Open] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)     # units taken
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def fresh(cls, rd, plans) -> "SpooledRows":
        folder = rd.root / "rows"
        shutil.rmtree(folder, ignore_errors=True)   # a killed run's: this run's producer makes them again
        folder.mkdir(parents=True)
        return cls(folder, rd, plans)

    def path(self, k: int, kind: str) -> Path:
        return self.folder / f"seg_{k:05d}.{kind}"

    def _meta(self, k: int) -> SegmentMeta:
        with open(self.path(k, "meta"), "rb") as fh:
            return pickle.load(fh)   # our own file, written by this run

    # -- the producer's side --------------------------------------------------------------------
    def add_segment(self, first_read: int, first_chunk: int, records, chunks, frames) -> None:
        """A segment chunked and translated (before the plan sees its frames)."""
        meta = SegmentMeta.of(first_read, first_chunk, records, chunks, frames)
        k = len(self.firsts)
        with open(self.path(k, "meta"), "wb") as fh:
            pickle.dump(meta, fh, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self.firsts.append(self.n_frames)
            self.open[k] = _Open(len(frames), self.n_frames)
            self.n_reads, self.n_chunks = first_read + len(records), self.n_chunks + len(chunks)
            self.n_frames += len(frames)

    # -- as units finish ------------------------------------------------------------------------
    def catch_up(self) -> None:
        """Take every unit done since the last call (a resumed run's units as the plan reaches
        them) and make the rows of the segments they complete."""
        rd, plans = self.rd, self.plans
        skipped = rd.skipped_units()
        for u in sorted(rd.done_units() - self.seen):
            if u >= plans.n_units:
                continue
            unit_frames = plans.unit_frames(u)
            if u in skipped:
                frames, scores = unit_frames, np.full((len(unit_frames), 2), np.nan, dtype=np.float32)
            else:
                frames, scores = rd.load_unit(u, unit_frames)
            self.seen.add(u)
            self._take(frames, scores)
        self._finish_complete()

    def _take(self, frames: np.ndarray, scores: np.ndarray) -> None:
        """Append a unit's scores to the segments of its frames."""
        with self._lock:
            firsts = np.asarray(self.firsts, dtype=np.int64)
        seg = np.searchsorted(firsts, frames, side="right") - 1
        order = np.argsort(seg, kind="stable")
        seg, frames, scores = seg[order], frames[order], np.asarray(scores, dtype=np.float32)[order]
        for k, a, b in _runs(seg):
            rec = np.empty(b - a, dtype=SCORE_RECORD)
            rec["frame"] = frames[a:b] - firsts[k]
            rec["s"] = scores[a:b]
            with open(self.path(k, "scores"), "ab") as fh:
                rec.tofile(fh)
            with self._lock:
                self.open[k].filled += b - a

    def _finish_complete(self) -> None:
        with self._lock:
            ready = sorted((k, o) for k, o in self.open.items() if o.filled == o.n_frames)
        for k, o in ready:
            scores = np.full((o.n_frames, 2), np.nan, dtype=np.float32)
            path = self.path(k, "scores")
            if path.exists():
                rec = np.fromfile(path, dtype=SCORE_RECORD)
                scores[rec["frame"]] = rec["s"]
            meta = self._meta(k)
            folder = self.path(k, "rows")
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            counts = outputs.OutputRows().write(folder, *meta.rows_input(), scores, synthetic=False)
            counts["skipped_reads"] = [meta.first_read + r for r in counts["skipped_reads"]]
            (folder / "counts.pkl").write_bytes(pickle.dumps(counts))
            path.unlink(missing_ok=True)
            self.made_ahead += o.n_frames
            with self._lock:
                del self.open[k]

    def describe_unit(self, u: int, unit_frames: np.ndarray) -> str:
        """"N read(s): ids" of the reads whose frames unit ``u`` holds (a unit given up on)."""
        with self._lock:
            firsts = np.asarray(self.firsts, dtype=np.int64)
        seg = np.searchsorted(firsts, unit_frames, side="right") - 1
        ids: set[str] = set()
        for k in np.unique(seg).tolist():
            meta = self._meta(k)
            ids.update(meta.read_ids[meta.chunk_read[meta.frame_chunk[f]]] for f in (unit_frames[seg == k] - firsts[k]).tolist())
        return _describe(ids)

    # -- the write stage ------------------------------------------------------------------------
    def write(self, outdir: Path, records, synthetic: bool) -> dict:
        """The output files in ``outdir`` (the segments still open are made now), the segments'
        files joined (``JOIN``), with ``OutputRows.write``'s counts; then the spool goes.
        ``records``: unused (the segments hold what the files need of them)."""
        made_ahead = self.made_ahead
        self.catch_up()
        self.made_ahead = made_ahead
        if self.open:
            from virnucpro.errors import VirnucproError
            k, o = next(iter(self.open.items()))
            raise VirnucproError(f"{o.n_frames - o.filled} frames of segment {k} have no score after merging the "
                                 "units (a bug; please report)")
        folders = [self.path(k, "rows") for k in range(len(self.firsts))]
        if not folders:   # (no segment: an input without records is refused before)
            return outputs.OutputRows().write(outdir, [], [], [], np.zeros((0, 2), np.float32), synthetic)
        names = sorted({p.name for f in folders for p in f.iterdir()} - {"counts.pkl"})
        unknown = sorted(set(names) - set(JOIN))
        if unknown:
            raise NotImplementedError(f"run/rows.py does not know how to join the segments' {unknown}")
        for name in names:
            header, how = JOIN[name]
            parts = [f / name for f in folders if (f / name).exists()]
            with atomic_write(outdir / name) as fh:
                if name == paths.READ_SUMMARY and synthetic:
                    fh.write(f"# {outputs.SYNTHETIC_WARNING}\n")
                with open(parts[0], encoding="utf-8") as first:
                    fh.writelines(first.readline() for _ in range(header))
                if how == "merge":
                    merge_sorted(fh, parts, header, self.folder)
                else:
                    _concat(fh, parts, header)
        counts: dict = {}
        for f in folders:
            for key, v in pickle.loads((f / "counts.pkl").read_bytes()).items():
                counts[key] = counts.get(key, [] if isinstance(v, list) else 0) + v
        shutil.rmtree(self.folder, ignore_errors=True)
        return counts

    def embedding_index(self, outdir: Path) -> dict:
        raise NotImplementedError("--save-embeddings keeps its rows in memory (MemoryRows)")


@dataclass
class MemoryRows:
    """The output rows of a run in memory: every chunk and kept frame, the rows of each unit as it
    finishes (``io.outputs.OutputRows``), the scores once merged. ``rd``/``plans``/``records``:
    None for rows made whole at the end (``whole``)."""
    rd: object = None
    plans: object = None
    records: object = None                          # io.fasta.RecordStream
    chunks: list = field(default_factory=list)
    frames: list = field(default_factory=list)
    scores: np.ndarray | None = None                # [N, 2] once merged (NaN: a unit given up on)
    rows: outputs.OutputRows = field(default_factory=outputs.OutputRows)
    n_reads: int = 0
    seen: set[int] = field(default_factory=set)

    @classmethod
    def whole(cls, chunks: list, frames: list, scores: np.ndarray) -> "MemoryRows":
        return cls(chunks=chunks, frames=frames, scores=scores)

    @property
    def n_chunks(self) -> int:
        return len(self.chunks)

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def made_ahead(self) -> int:
        return len(self.rows.line)

    def add_segment(self, first_read: int, first_chunk: int, records, chunks, frames) -> None:
        self.chunks.extend(chunks)
        self.frames.extend(frames)
        self.n_reads = first_read + len(records)

    def catch_up(self) -> None:
        """The rows of every unit done since the last call; once the plan is complete (so the
        input is read and checked) the score-independent parts."""
        rd = self.rd
        for u in sorted(rd.done_units() - self.seen):
            self.seen.add(u)
            if rd.unit_path(u).exists():        # not a unit given up on
                self.rows.add(self.frames, *rd.load_unit(u))
        if self.plans.complete:
            self.rows.prepare(self.records.result(), self.chunks, self.frames)

    def describe_unit(self, u: int, unit_frames: np.ndarray) -> str:
        records = self.records.records
        return _describe(records[self.chunks[self.frames[i][1]].read_index].id for i in unit_frames.tolist())

    def write(self, outdir: Path, records, synthetic: bool) -> dict:
        return self.rows.write(outdir, records, self.chunks, self.frames, self.scores, synthetic)

    def embedding_index(self, outdir: Path) -> dict:
        scored = np.flatnonzero(~np.isnan(np.asarray(self.scores, dtype=np.float32)[:, 0]))
        return outputs.write_embedding_index(outdir, self.frames, scored)


@dataclass
class SegmentCount:
    """A torchrun rank other than 0 makes no rows (rank 0 writes the outputs): the counts only."""
    n_reads: int = 0
    n_chunks: int = 0
    n_frames: int = 0

    def add_segment(self, first_read: int, first_chunk: int, records, chunks, frames) -> None:
        self.n_reads, self.n_chunks, self.n_frames = (first_read + len(records), self.n_chunks + len(chunks),
                                                      self.n_frames + len(frames))


def _describe(read_ids) -> str:
    uniq = sorted(set(read_ids))
    return f"{len(uniq)} read(s): {', '.join(uniq[:10])}{', ...' if len(uniq) > 10 else ''}"


def _runs(keys: np.ndarray):
    """(key, start, end) of each run of equal values in a sorted array."""
    if not len(keys):
        return
    cut = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
    for a, b in zip(cut[:-1].tolist(), cut[1:].tolist()):
        yield int(keys[a]), a, b


def _concat(out, files: list[Path], skip: int) -> None:
    """The lines of ``files`` after their first ``skip`` (headers), in order."""
    for p in files:
        with open(p, encoding="utf-8") as fh:
            for _ in range(skip):
                fh.readline()
            shutil.copyfileobj(fh, out, 1 << 20)


def _key(line: str) -> str:
    return line.split("\t", 1)[0]


def merge_sorted(out, files: list[Path], skip: int, scratch: Path) -> None:
    """The lines of ``files`` (after their first ``skip``; each sorted by the text before its first
    tab) merged into one sorted sequence, at most ``MERGE_FAN_IN`` files open at a time (merged in
    rounds through ``scratch``)."""
    level = 0
    while len(files) > MERGE_FAN_IN:
        merged = []
        for j in range(0, len(files), MERGE_FAN_IN):
            dest = scratch / f"merge_{level}_{j // MERGE_FAN_IN:05d}"
            with open(dest, "w", encoding="utf-8") as fh:
                _merge_into(fh, files[j:j + MERGE_FAN_IN], skip)
            merged.append(dest)
        files, skip, level = merged, 0, level + 1
    _merge_into(out, files, skip)


def _merge_into(out, files: list[Path], skip: int) -> None:
    handles = [open(p, encoding="utf-8") for p in files]
    try:
        for fh in handles:
            for _ in range(skip):
                fh.readline()
        out.writelines(heapq.merge(*handles, key=_key))
    finally:
        for fh in handles:
            fh.close()
