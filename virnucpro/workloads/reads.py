"""Synthetic short-read workloads sampled from real genomes (benchmarks, demos, tests).

Each read is drawn from one of three components, in proportions set by ``viral_fraction`` and
``host_fraction`` (bacteria get the rest):

* ``virus``    — SARS-CoV-2 isolates and two phages (see ``genomes.py``);
* ``bacteria`` — four bacterial genomes/contigs (see ``genomes.py``);
* ``host``     — a *synthetic* human-like background: a 4 Mb first-order Markov chain with
  approximate human-genome dinucleotide frequencies (GC ~41 %, CpG ~1 %, TpA depleted). It stands
  in for the human reads that depletion leaves in a respiratory sample: mostly non-coding DNA in
  which stop codons close most frames. It is fixed (its own constant seed), not drawn per run.

Within a component a read starts uniformly along the N-free stretches of its genomes (so longer
genomes give proportionally more reads), is reverse-complemented half the time, then gets
substitution errors (``error_rate`` per base, default 0.1 %) and occasional ``N`` calls (``n_rate``
per base, default 0.01 %). Exact duplicates occur, as PCR duplicates do in real samples, because
the genomes are small compared with a million reads (about 11 % of a default 1 M-read
workload are exact copies of another read, mostly SARS-CoV-2).

Length profiles (``length_profile``, a string):

* ``respiratory`` — like a human-depleted respiratory Illumina 2x151 sample after trimming:
  80 % full-length reads (40 % 150 nt, 40 % 151 nt); 15 % adapter/quality-trimmed reads of
  50-149 nt, skewed to long ones (length = 149 - X, X exponential with mean 30 truncated below
  100); 5 % merged read pairs of 200-300 nt (triangular, mode 250).
* ``fixed:N`` — every read is N nt (1 <= N <= 20000).
* ``uniform:A-B`` — lengths uniform on the integers A..B (1 <= A <= B <= 20000).

Determinism: reads are produced in batches; batch k uses ``numpy.random.default_rng([seed, k])``
and always draws a full batch, so a given seed gives byte-identical FASTA (for a given numpy), and
the first m reads of an n-read workload are the same for every n >= m.

FASTA records: ``>read000000123 src=NC_045512.2 kind=virus strand=- start=1234 edits=0``; the
record id (up to the first space) is plain so that chunk/frame suffixes stay parseable; ``start``
is the 0-based forward-strand position in the genome and ``edits`` counts injected errors.

Kept frames (spec §3: a frame is kept when its translation of the chunk has no stop codon),
measured with ``virnucpro.prep.translate`` (``reads synth --stats``), respiratory profile:

    defaults (viral 0.60, host 0.35, bacteria 0.05), 200,000 reads, seeds 11 and 12, chunk 300:
        0.82 kept frames per read; 59.3 % of reads have >= 1 (chunk 500 gives the same: no read
        of this profile is longer than 300 nt)
    one component alone, 100,000 reads: virus 1.02 / 74.9 %; bacteria 1.70 / 88.7 %;
        host 0.34 / 28.2 %
    a more lifelike mix (viral 0.05, host 0.70, bacteria 0.25): 0.72 / 45.8 %

The default mixture is tuned to the kept-frame load of a real 1 M-read human-depleted respiratory
sample (about 0.8 kept frames per read, about 60 % of reads with at least one), not to its
taxonomic make-up: the shipped bacteria (C. diphtheriae, 53 % GC, dominates by length) leave their
off-frames open and give ~1.9 kept frames per positive read against ~1.33 in the real sample, so
matching both figures needs a virus-heavy mix. Set the fractions for other purposes.

One cohesive module (~470 lines): the simulator (profiles, genome pools, error model, batches) and
its FASTA writer; statistics live in ``frame_stats`` and the command in ``workloads.cli``.
"""

from __future__ import annotations

import functools
import gzip
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from virnucpro.core.files import atomic_write
from virnucpro.errors import InputError
from virnucpro.workloads.frame_stats import KeptFrameStats
from virnucpro.workloads.genomes import load_genomes

DEFAULT_VIRAL_FRACTION = 0.60
DEFAULT_HOST_FRACTION = 0.35
DEFAULT_ERROR_RATE = 0.001
DEFAULT_N_RATE = 0.0001
MAX_READ_LENGTH = 20_000
COMPONENTS = ("virus", "bacteria", "host")
HOST_NAME = "host_like"
HOST_LENGTH = 4 * 1024 * 1024
_HOST_SEED = 20240531

# Approximate human-genome dinucleotide frequencies (% of all dinucleotides); row = first base,
# column = second, order A C G T. Strand-symmetric; CpG ~1 %, TpA ~0.75x expected, GC ~41 %.
_HUMAN_DINUCLEOTIDES = np.array([
    [9.8, 5.0, 7.0, 7.6],
    [7.3, 5.2, 1.0, 7.0],
    [5.9, 4.3, 5.2, 5.0],
    [6.5, 5.9, 7.3, 9.8],
])

_ACGT = np.frombuffer(b"ACGT", dtype=np.uint8)
_CODE = np.zeros(256, dtype=np.uint8)  # ASCII -> 0..3 (only ACGT reach it)
_CODE[_ACGT] = np.arange(4, dtype=np.uint8)
_COMPLEMENT = np.arange(256, dtype=np.uint8)
_COMPLEMENT[_ACGT] = np.frombuffer(b"TGCA", dtype=np.uint8)
_N = ord("N")


# --------------------------------------------------------------------------- length profiles


@dataclass(frozen=True)
class LengthProfile:
    """A parsed length-profile string: ``sample(rng, n)`` gives n read lengths (int64)."""

    spec: str
    min_length: int
    max_length: int
    sample: Callable[[np.random.Generator, int], np.ndarray] = field(compare=False, repr=False)


def _respiratory_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    u = rng.random(n)  # picks the class
    full = np.where(rng.random(n) < 0.5, 150, 151)
    # trimmed: 149 - X, X ~ Exp(mean 30) truncated to [0, 100) by inverse CDF -> 50..149
    x = -30.0 * np.log1p(-rng.random(n) * (1.0 - np.exp(-100.0 / 30.0)))
    trimmed = 149 - np.minimum(np.floor(x), 99)
    merged = np.rint(rng.triangular(200.0, 250.0, 300.0, n))
    lengths = np.where(u < 0.80, full, np.where(u < 0.95, trimmed, merged))
    return lengths.astype(np.int64)


def parse_length_profile(spec: str) -> LengthProfile:
    """Parse ``respiratory``, ``fixed:N`` or ``uniform:A-B``; InputError for anything else."""
    text = spec.strip().lower()
    if text == "respiratory":
        return LengthProfile("respiratory", 50, 300, _respiratory_lengths)
    m = re.fullmatch(r"fixed:(\d+)", text)
    if m:
        n_len = _check_length(int(m.group(1)), spec)
        return LengthProfile(f"fixed:{n_len}", n_len, n_len,
                             lambda rng, n: np.full(n, n_len, dtype=np.int64))
    m = re.fullmatch(r"uniform:(\d+)-(\d+)", text)
    if m:
        lo, hi = _check_length(int(m.group(1)), spec), _check_length(int(m.group(2)), spec)
        if lo > hi:
            raise InputError(f"length profile {spec!r}: the lower bound {lo} exceeds the upper {hi}")
        return LengthProfile(f"uniform:{lo}-{hi}", lo, hi,
                             lambda rng, n: rng.integers(lo, hi + 1, n, dtype=np.int64))
    raise InputError(
        f"unknown length profile {spec!r}; use 'respiratory', 'fixed:N' or 'uniform:A-B' "
        f"(lengths 1..{MAX_READ_LENGTH})")


def _check_length(value: int, spec: str) -> int:
    if not 1 <= value <= MAX_READ_LENGTH:
        raise InputError(
            f"length profile {spec!r}: read length {value} is outside 1..{MAX_READ_LENGTH}")
    return value


# --------------------------------------------------------------------------- sequence pool


@functools.lru_cache(maxsize=1)
def host_genome() -> bytes:
    """The fixed synthetic host: 2048 Markov chains of 2048 nt laid end to end (4 Mb)."""
    rng = np.random.default_rng(_HOST_SEED)
    freq = _HUMAN_DINUCLEOTIDES / _HUMAN_DINUCLEOTIDES.sum()
    start_p = freq.sum(axis=1)
    cum = np.cumsum(freq / freq.sum(axis=1, keepdims=True), axis=1)  # [4, 4] transition CDFs
    chains, steps = 2048, HOST_LENGTH // 2048
    states = np.empty((steps, chains), dtype=np.uint8)
    state = rng.choice(4, size=chains, p=start_p)
    for t in range(steps):
        states[t] = state
        u = rng.random(chains)
        state = (u[:, None] >= cum[state]).sum(axis=1).clip(max=3)
    return _ACGT[states.T.ravel()].tobytes()


@dataclass(frozen=True)
class _Pool:
    """Every N-free segment of every genome, laid end to end in one byte array.

    names[g] / kinds[g] describe genome g; segment s covers bases[seg_start[s] : seg_start[s] +
    seg_len[s]] and starts at seg_offset[s] in genome seg_genome[s]."""

    bases: np.ndarray  # uint8 [total]
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    seg_start: np.ndarray  # int64 [segments]
    seg_len: np.ndarray
    seg_genome: np.ndarray
    seg_offset: np.ndarray


@functools.lru_cache(maxsize=1)
def _pool() -> _Pool:
    genomes: list[tuple[str, str, bytes]] = [(g.name, g.kind, g.sequence) for g in load_genomes()]
    genomes.append((HOST_NAME, "host", host_genome()))
    pieces, starts, lens, owners, offsets = [], [], [], [], []
    total = 0
    for gi, (_, _, seq) in enumerate(genomes):
        for m in re.finditer(rb"[ACGT]+", seq):
            a, b = m.span()
            pieces.append(seq[a:b])
            starts.append(total)
            lens.append(b - a)
            owners.append(gi)
            offsets.append(a)
            total += b - a
    return _Pool(
        bases=np.frombuffer(b"".join(pieces), dtype=np.uint8),
        names=tuple(g[0] for g in genomes),
        kinds=tuple(g[1] for g in genomes),
        seg_start=np.array(starts, dtype=np.int64),
        seg_len=np.array(lens, dtype=np.int64),
        seg_genome=np.array(owners, dtype=np.int64),
        seg_offset=np.array(offsets, dtype=np.int64),
    )


@dataclass(frozen=True)
class _Component:
    segments: np.ndarray  # int64 [k] segment indices long enough for every read length
    cum_len: np.ndarray  # int64 [k] cumulative lengths (for length-weighted choice)


def _components(pool: _Pool, max_length: int, fractions: dict[str, float]) -> list[_Component]:
    comps = []
    kinds = np.array(pool.kinds)[pool.seg_genome]
    for kind in COMPONENTS:
        segs = np.flatnonzero((kinds == kind) & (pool.seg_len >= max_length))
        if fractions[kind] > 0 and len(segs) == 0:
            raise InputError(f"no {kind} genome stretch is {max_length} nt long; use shorter reads")
        comps.append(_Component(segs, np.cumsum(pool.seg_len[segs])))
    return comps


# --------------------------------------------------------------------------- simulation


@dataclass(frozen=True)
class ReadBatch:
    """Consecutive simulated reads. Read i is ``text[offsets[i]:offsets[i+1]]``."""

    first_index: int  # number of the first read (ids are id_prefix + 9-digit number)
    id_prefix: str
    text: str  # all bases, end to end
    offsets: np.ndarray  # int64 [m+1]
    genome: np.ndarray  # int64 [m] index into names/kinds
    minus: np.ndarray  # bool [m] reverse-complemented
    start: np.ndarray  # int64 [m] 0-based forward-strand start in the genome
    edits: np.ndarray  # int64 [m] injected substitutions + Ns that changed a base
    names: tuple[str, ...]
    kinds: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def ids(self) -> list[str]:
        p, f = self.id_prefix, self.first_index
        return [f"{p}{f + i:09d}" for i in range(len(self))]

    def sequences(self) -> list[str]:
        o = self.offsets.tolist()
        return [self.text[o[i]:o[i + 1]] for i in range(len(self))]

    def descriptions(self) -> list[str]:
        names, kinds = self.names, self.kinds
        return [f"src={names[g]} kind={kinds[g]} strand={'-' if mi else '+'} start={s} edits={e}"
                for g, mi, s, e in zip(self.genome.tolist(), self.minus.tolist(),
                                       self.start.tolist(), self.edits.tolist())]

    def fasta(self) -> str:
        return "".join(f">{i} {d}\n{s}\n"
                       for i, d, s in zip(self.ids(), self.descriptions(), self.sequences()))


def _check_rates(viral_fraction: float, host_fraction: float, error_rate: float,
                 n_rate: float) -> dict[str, float]:
    for name, value in (("viral fraction", viral_fraction), ("host fraction", host_fraction)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{name} must be within 0..1, not {value}")
    if viral_fraction + host_fraction > 1.0 + 1e-9:
        raise InputError(
            f"viral fraction {viral_fraction} + host fraction {host_fraction} exceed 1 "
            f"(bacteria get the rest); lower one of them")
    for name, value in (("error rate", error_rate), ("N rate", n_rate)):
        if not 0.0 <= value <= 0.5:
            raise InputError(f"{name} must be within 0..0.5 per base, not {value}")
    return {"virus": viral_fraction, "host": host_fraction,
            "bacteria": max(0.0, 1.0 - viral_fraction - host_fraction)}


def _batch_size(max_length: int) -> int:
    """Reads per batch: about 8 M bases of workspace, 64..32768 reads (fixed per profile)."""
    return max(64, min(32768, 8_000_000 // max_length))


def _simulate_batch(rng: np.random.Generator, size: int, keep: int, profile: LengthProfile,
                    pool: _Pool, comps: list[_Component], cum_fraction: np.ndarray,
                    error_rate: float, n_rate: float) -> tuple[np.ndarray, ...]:
    """Draw ``size`` reads (always, for prefix stability) and return the first ``keep``.

    Returns (bases uint8 [total], offsets [keep+1], genome, minus, start, edits)."""
    lengths = profile.sample(rng, size)  # [size]
    comp = np.searchsorted(cum_fraction, rng.random(size), side="right").clip(max=2)
    u_seg, u_pos = rng.random(size), rng.random(size)
    minus = rng.random(size) < 0.5
    seg = np.zeros(size, dtype=np.int64)
    for c, component in enumerate(comps):
        sel = comp == c
        if sel.any():
            k = np.searchsorted(component.cum_len, u_seg[sel] * component.cum_len[-1], side="right")
            seg[sel] = component.segments[k.clip(max=len(component.segments) - 1)]
    within = np.floor(u_pos * (pool.seg_len[seg] - lengths + 1)).astype(np.int64)
    origin = pool.seg_start[seg] + within  # [size] first base in pool.bases

    full_total = int(lengths.sum())  # bases of the whole drawn batch
    lengths, origin, minus, seg, within = (a[:keep] for a in (lengths, origin, minus, seg, within))
    offsets = np.zeros(keep + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])  # the kept reads are a prefix of the batch, so of its bases too
    rel = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], lengths)  # position in read
    rev = np.repeat(minus, lengths)
    idx = np.repeat(origin, lengths) + np.where(rev, np.repeat(lengths - 1, lengths) - rel, rel)
    clean = pool.bases[idx]
    clean = np.where(rev, _COMPLEMENT[clean], clean)

    # errors are drawn over the whole batch's bases (so the stream does not depend on keep),
    # then those falling in the kept prefix are applied
    n_err = rng.binomial(full_total, error_rate)
    err_pos, err_shift = rng.integers(0, full_total, n_err), rng.integers(1, 4, n_err)
    n_pos = rng.integers(0, full_total, rng.binomial(full_total, n_rate))
    err_in, n_in = err_pos < total, n_pos < total
    err_pos, err_shift, n_pos = err_pos[err_in], err_shift[err_in], n_pos[n_in]
    bases = clean.copy()
    bases[err_pos] = _ACGT[(_CODE[clean[err_pos]] + err_shift) % 4]
    bases[n_pos] = _N
    changed = (bases != clean).astype(np.int64)
    edits = np.add.reduceat(changed, offsets[:-1])  # [keep]; every read has >= 1 base

    genome = pool.seg_genome[seg]
    start = pool.seg_offset[seg] + within
    return bases, offsets, genome, minus, start, edits


def iter_read_batches(n: int, seed: int, length_profile: str = "respiratory",
                      viral_fraction: float = DEFAULT_VIRAL_FRACTION,
                      host_fraction: float = DEFAULT_HOST_FRACTION,
                      error_rate: float = DEFAULT_ERROR_RATE, n_rate: float = DEFAULT_N_RATE,
                      id_prefix: str = "read", first_index: int = 0) -> Iterator[ReadBatch]:
    """Simulate ``n`` reads as ReadBatch objects (the fast path for writers)."""
    if n < 0:
        raise InputError(f"number of reads must be >= 0, not {n}")
    if seed < 0:
        raise InputError(f"seed must be >= 0, not {seed}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]*", id_prefix):
        raise InputError(f"read id prefix {id_prefix!r} may only hold letters, digits, '_', '.', '-'")
    profile = parse_length_profile(length_profile)
    fractions = _check_rates(viral_fraction, host_fraction, error_rate, n_rate)
    if n == 0:
        return
    pool = _pool()
    comps = _components(pool, profile.max_length, fractions)
    cum_fraction = np.cumsum([fractions[k] for k in COMPONENTS])
    size = _batch_size(profile.max_length)
    for k, done in enumerate(range(0, n, size)):
        rng = np.random.default_rng([seed, k])
        keep = min(size, n - done)
        bases, offsets, genome, minus, start, edits = _simulate_batch(
            rng, size, keep, profile, pool, comps, cum_fraction, error_rate, n_rate)
        yield ReadBatch(first_index + done, id_prefix, bases.tobytes().decode("ascii"), offsets,
                        genome, minus, start, edits, pool.names, pool.kinds)


def simulate_reads(n: int, seed: int, length_profile: str = "respiratory",
                   viral_fraction: float = DEFAULT_VIRAL_FRACTION,
                   host_fraction: float = DEFAULT_HOST_FRACTION,
                   error_rate: float = DEFAULT_ERROR_RATE, n_rate: float = DEFAULT_N_RATE,
                   id_prefix: str = "read", first_index: int = 0) -> Iterator[tuple[str, str]]:
    """Yield ``n`` simulated reads as (id, sequence); see the module docstring for the model."""
    for batch in iter_read_batches(n, seed, length_profile, viral_fraction, host_fraction,
                                   error_rate, n_rate, id_prefix, first_index):
        yield from zip(batch.ids(), batch.sequences())


# --------------------------------------------------------------------------- writing


@dataclass
class WorkloadSummary:
    """What a write produced: counts by genome and by kind, and optionally kept-frame stats."""

    path: Path
    reads: int = 0
    bases: int = 0
    by_genome: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    kept: KeptFrameStats | None = None

    @property
    def mean_length(self) -> float:
        return self.bases / self.reads if self.reads else 0.0

    def line(self) -> str:
        parts = ", ".join(f"{k} {100 * self.by_kind[k] / max(self.reads, 1):.1f}%"
                          for k in COMPONENTS if self.by_kind[k])
        return (f"wrote {self.reads:,} reads ({self.bases:,} nt, mean {self.mean_length:.1f} nt) "
                f"to {self.path}: {parts or 'empty'}")


def write_reads_fasta(path: str | Path, n: int, seed: int, length_profile: str = "respiratory",
                      viral_fraction: float = DEFAULT_VIRAL_FRACTION,
                      host_fraction: float = DEFAULT_HOST_FRACTION,
                      error_rate: float = DEFAULT_ERROR_RATE, n_rate: float = DEFAULT_N_RATE,
                      id_prefix: str = "read", first_index: int = 0,
                      stats_chunk_length: int | None = None) -> WorkloadSummary:
    """Write ``n`` simulated reads to ``path`` (gzip when it ends with .gz), atomically.

    The file appears complete or not at all (``core.files.atomic_write``). gzip output carries no
    name or time stamp, so it too is byte-identical for a seed. With ``stats_chunk_length`` the
    summary also holds the kept-frame statistics at that chunk length."""
    path = Path(path)
    batches = iter_read_batches(n, seed, length_profile, viral_fraction, host_fraction,
                                error_rate, n_rate, id_prefix, first_index)
    summary = WorkloadSummary(path)
    if stats_chunk_length is not None:
        summary.kept = KeptFrameStats(stats_chunk_length)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory does not exist: {parent}")
    if path.is_dir():
        raise InputError(f"output path is a directory: {path}")
    with atomic_write(path, "wb") as raw:
        out = (gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0)
               if path.name.endswith(".gz") else raw)
        try:
            for batch in batches:
                out.write(batch.fasta().encode("ascii"))
                _tally(summary, batch)
        finally:
            if out is not raw:
                out.close()
    return summary


def _tally(summary: WorkloadSummary, batch: ReadBatch) -> None:
    counts = np.bincount(batch.genome, minlength=len(batch.names))
    for g in np.flatnonzero(counts).tolist():
        summary.by_genome[batch.names[g]] += int(counts[g])
        summary.by_kind[batch.kinds[g]] += int(counts[g])
    summary.reads += len(batch)
    summary.bases += int(batch.offsets[-1])
    if summary.kept is not None:
        summary.kept.add(batch.sequences())


# --------------------------------------------------------------------------- built-in sample

SAMPLE_SEED = 7
SAMPLE_SHORT_READS = 192
SAMPLE_LONG_READS = 8


def sample_fasta_text() -> str:
    """The built-in demo sample: 192 respiratory-profile reads plus 8 reads of 400-1300 nt (so
    that chunking at 300 and 500 is exercised); ids read000000000..read000000199."""
    short = iter_read_batches(SAMPLE_SHORT_READS, SAMPLE_SEED, "respiratory")
    long = iter_read_batches(SAMPLE_LONG_READS, SAMPLE_SEED + 1, "uniform:400-1300",
                             first_index=SAMPLE_SHORT_READS)
    return "".join(batch.fasta() for batch in (*short, *long))


def write_sample_fasta(path: str | Path) -> None:
    """(Re)write the demo sample (``virnucpro/data/sample.fa``) atomically."""
    with atomic_write(path) as fh:
        fh.write(sample_fasta_text())
