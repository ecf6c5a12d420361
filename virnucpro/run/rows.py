"""The output rows of a fast run, made while its units finish: spooled to disk a planning segment at
a time (``SpooledRows``, so that they do not grow the host's memory with the input), or kept in
memory (``MemoryRows``: with --save-embeddings, whose index needs every frame's id at the end; and
for the reference engine, ``MemoryRows.whole``).

A planning segment holds whole reads, so a read's chunks and kept frames are all in its segment,
and so is every row of the output files but for the consensus file's order (by chunk id over the
whole input). ``SpooledRows`` keeps in ``OUTDIR/.virnucpro-run/rows/``::

    seg_00003.meta     what the rows need of the segment: read ids and lengths, chunk ids, each kept
                       frame's chunk and tag (no sequence); written by the producer thread
    seg_00003.scores   (frame within the segment, score1, score2) records, appended as units finish
                       (a unit packs frames of any segment still being packed)
    seg_00003.pred     once every frame of the segment has its score (or its unit was given up on):
    seg_00003.sum        its lines of prediction_results.txt and of read_summary.tsv,
    seg_00003.cons       its chunks' consensus lines, sorted by chunk id,
    seg_00003.json       its counts and its reads left without a full prediction

and the write stage puts them together: the .pred and .sum files in segment order, the .cons files
merged (``MERGE_FAN_IN`` at a time). The bytes are ``io.outputs.OutputRows``'s (tests/test_rows.py):
chunk ids are unique, so grouping frames by chunk is the original's grouping by ``id[:-2]``.
"""

from __future__ import annotations

import heapq
import json
import pickle
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from virnucpro.core.files import atomic_write
from virnucpro.io import outputs
from virnucpro.io.paths import Paths

SCORE_RECORD = np.dtype([("frame", "<i4"), ("s", "<f4", (2,))])   # a .scores file: 12 bytes per frame
MERGE_FAN_IN = 64                                                # sorted files merged at a time
HEADERS = {"pred": "Sequence_ID\tPrediction\tscore1\tscore2\n",
           "cons": "Modified_ID\tIs_Virus\n",
           "sum": "read_id\tlength\tn_chunks\tkept_frames\tmax_virus_score\tlabel\n"}


@dataclass
class SegmentMeta:
    """What the output rows need of one planning segment (~100 bytes per read, no sequence)."""
    first_read: int                 # global index of its first read
    first_frame: int                # global index of its first kept frame
    read_ids: list[str]
    read_len: np.ndarray            # [R] int64
    chunk_ids: list[str]
    chunk_read: np.ndarray          # [C] int64: the chunk's read within the segment
    frame_chunk: np.ndarray         # [F] int64: the frame's chunk within the segment
    frame_tag: list[str]            # [F] F1 .. R3: a frame's id is its chunk's id and its tag

    @classmethod
    def of(cls, first_read: int, first_chunk: int, first_frame: int, records, chunks, frames) -> "SegmentMeta":
        """From a segment's records, its chunks and kept frames as ``prep.frames`` makes them
        (global read and chunk indices)."""
        return cls(first_read, first_frame, [r.id for r in records],
                   np.fromiter((len(r.seq) for r in records), np.int64, len(records)), [c.id for c in chunks],
                   np.fromiter((c.read_index - first_read for c in chunks), np.int64, len(chunks)),
                   np.fromiter((f[1] - first_chunk for f in frames), np.int64, len(frames)),
                   [f[0][-2:] for f in frames])

    def frame_ids(self) -> list[str]:
        ids = self.chunk_ids
        return [ids[c] + t for c, t in zip(self.frame_chunk.tolist(), self.frame_tag)]


@dataclass
class SegmentRows:
    """One segment's rows (``segment_rows``)."""
    pred: str
    summary: str
    consensus: list[str]            # sorted by chunk id
    counts: dict
    skipped_reads: list[int]        # global read indices


def segment_rows(meta: SegmentMeta, scores: np.ndarray) -> SegmentRows:
    """The rows of a segment whose frames have ``scores`` [F, 2] (NaN: its unit was given up on), as
    ``OutputRows.write`` makes them for the whole input."""
    s = np.asarray(scores, dtype=np.float32)
    n_reads, n_chunks = len(meta.read_ids), len(meta.chunk_ids)
    skipped = np.isnan(s[:, 0])
    keep = np.flatnonzero(~skipped)
    fids = meta.frame_ids()
    labels_of = outputs.LABELS
    pred = "".join([f"{fids[i]}\t{labels_of[int(b > a)]}\t{a!s}\t{b!s}\n"    # a, b: np.float32 -> str()
                    for i, a, b in zip(keep.tolist(), s[keep, 0], s[keep, 1])])
    g = meta.frame_chunk[keep]                       # chunk of each scored frame
    best = outputs.group_max(g, n_chunks, s[keep])
    present = np.bincount(g, minlength=n_chunks) > 0
    viral = best[:, 1] >= best[:, 0]
    vir = viral.tolist()
    consensus = sorted(meta.chunk_ids[c] + ("\tTrue\n" if vir[c] else "\tFalse\n")
                       for c in np.flatnonzero(present).tolist())
    frame_read = meta.chunk_read[meta.frame_chunk]
    ri = frame_read[keep]
    kept = np.bincount(ri, minlength=n_reads)
    by = np.lexsort((s[keep, 1], ri))                # per read, its frames by score2; the last is the best
    last = np.flatnonzero(np.r_[ri[by][1:] != ri[by][:-1], True]) if len(by) else by
    best_frame = np.full(n_reads, -1, dtype=np.int64)
    best_frame[ri[by][last]] = keep[by][last]
    read_viral = np.bincount(ri, weights=viral[g], minlength=n_reads) > 0
    skipped_local = np.unique(frame_read[skipped]).tolist() if skipped.any() else []
    is_skipped = np.zeros(n_reads, dtype=bool)
    is_skipped[skipped_local] = True
    labels = np.where(is_skipped, "skipped", np.where(kept == 0, "no_kept_frame",
                                                      np.where(read_viral, "virus", "others"))).tolist()
    n_chunks_of = np.bincount(meta.chunk_read, minlength=n_reads).tolist()
    s2 = s[:, 1]
    summary = "".join([f"{rid}\t{ln}\t{nc}\t{k}\t{str(s2[b]) if k else ''}\t{lab}\n" for rid, ln, nc, k, b, lab in
                       zip(meta.read_ids, meta.read_len.tolist(), n_chunks_of, kept.tolist(), best_frame.tolist(),
                           labels)])
    counts = {"viral_chunks": int((viral & present).sum()), "chunks_with_frames": int(present.sum()),
              "viral_reads": labels.count("virus"), "skipped_frames": int(skipped.sum()), "frames": len(keep)}
    return SegmentRows(pred, summary, consensus, counts, [meta.first_read + r for r in skipped_local])


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
        meta = SegmentMeta.of(first_read, first_chunk, self.n_frames, records, chunks, frames)
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
            unit_frames = plans.prep.plan.units[u].frames
            if u in skipped:
                frames, scores = unit_frames, np.full((len(unit_frames), 2), np.nan, dtype=np.float32)
            else:
                with np.load(rd.unit_path(u)) as z:
                    frames, scores = z["frames"], z["scores"]
                if not np.array_equal(frames, unit_frames):
                    from virnucpro.errors import VirnucproError
                    raise VirnucproError(f"checkpoint {rd.unit_path(u)} does not hold the frames of unit {u}; "
                                         f"delete {rd.root} and rerun")
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
            rows = segment_rows(self._meta(k), scores)
            for kind, text in (("pred", rows.pred), ("sum", rows.summary), ("cons", "".join(rows.consensus))):
                self.path(k, kind).write_text(text, encoding="utf-8")
            self.path(k, "json").write_text(json.dumps({"counts": rows.counts, "skipped_reads": rows.skipped_reads}))
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
            local = unit_frames[seg == k] - firsts[k]
            ids.update(meta.read_ids[r] for r in meta.chunk_read[meta.frame_chunk[local]].tolist())
        return _describe(ids)

    # -- the write stage ------------------------------------------------------------------------
    def write(self, outdir: Path, records, synthetic: bool) -> dict:
        """The output files in ``outdir`` (the segments still open are made now), as
        ``OutputRows.write`` makes them and with its counts; then the spool goes. ``records``:
        unused (the segments hold what the files need of them)."""
        made_ahead = self.made_ahead
        self.catch_up()
        self.made_ahead = made_ahead
        if self.open:
            from virnucpro.errors import VirnucproError
            k, o = next(iter(self.open.items()))
            raise VirnucproError(f"{o.n_frames - o.filled} frames of segment {k} have no score after merging the "
                                 "units (a bug; please report)")
        paths = Paths(outdir)
        segs = range(len(self.firsts))
        with atomic_write(paths.predictions) as fh:
            fh.write(HEADERS["pred"])
            _concat(fh, [self.path(k, "pred") for k in segs])
        with atomic_write(paths.consensus) as fh:
            fh.write(HEADERS["cons"])
            merge_sorted(fh, [self.path(k, "cons") for k in segs], self.folder)
        with atomic_write(paths.read_summary) as fh:
            if synthetic:
                fh.write(f"# {outputs.SYNTHETIC_WARNING}\n")
            fh.write(HEADERS["sum"])
            _concat(fh, [self.path(k, "sum") for k in segs])
        counts = {"viral_chunks": 0, "chunks_with_frames": 0, "viral_reads": 0, "skipped_frames": 0, "frames": 0}
        skipped: list[int] = []
        skipped_ids: list[str] = []
        for k in segs:
            seg = json.loads(self.path(k, "json").read_text())
            for key, v in seg["counts"].items():
                counts[key] += v
            if seg["skipped_reads"]:
                meta = self._meta(k)
                skipped += seg["skipped_reads"]
                skipped_ids += [meta.read_ids[i - meta.first_read] for i in seg["skipped_reads"]]
        if skipped:
            outputs.write_skipped_reads(outdir, skipped_ids)
        shutil.rmtree(self.folder, ignore_errors=True)
        return {**counts, "skipped_reads": skipped}

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
                with np.load(rd.unit_path(u)) as z:
                    self.rows.add(self.frames, z["frames"], z["scores"])
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


def _concat(out, paths: list[Path]) -> None:
    for p in paths:
        with open(p, encoding="utf-8") as fh:
            shutil.copyfileobj(fh, out, 1 << 20)


def _key(line: str) -> str:
    return line.split("\t", 1)[0]


def merge_sorted(out, paths: list[Path], scratch: Path) -> None:
    """Write the lines of ``paths`` (each sorted by the text before its first tab) merged into one
    sorted sequence, at most ``MERGE_FAN_IN`` files open at a time (merged in rounds through
    ``scratch``)."""
    level = 0
    while len(paths) > MERGE_FAN_IN:
        merged = []
        for j in range(0, len(paths), MERGE_FAN_IN):
            dest = scratch / f"merge_{level}_{j // MERGE_FAN_IN:05d}.cons"
            with open(dest, "w", encoding="utf-8") as fh:
                _merge_into(fh, paths[j:j + MERGE_FAN_IN])
            merged.append(dest)
        paths, level = merged, level + 1
    _merge_into(out, paths)


def _merge_into(out, paths: list[Path]) -> None:
    files = [open(p, encoding="utf-8") for p in paths]
    try:
        out.writelines(heapq.merge(*files, key=_key))
    finally:
        for fh in files:
            fh.close()
