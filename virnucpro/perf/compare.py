"""Compare two VirNucPro output sets (e.g. stored v1.0 outputs against a new run).

Two views of one run are compared:

- ``frame``: ``prediction_results.txt`` (``Sequence_ID  Prediction  score1  score2``), one row per
  kept frame; labels ``virus``/``others``; score = score2 (P(virus)).
- ``consensus``: ``prediction_results_highestscore.csv`` (tab-separated, ``Modified_ID  Is_Virus``),
  one row per chunk; labels ``True``/``False``. Its score, for the score statistics, is the chunk's
  highest frame score2, derived from the frame file of the same side when that file is present.

Rows are matched by id with an outer join, so ids present on one side only are counted, never
silently dropped. A repeated id (paired reads can share one) is matched by occurrence: the k-th
``X`` of one side pairs with the k-th ``X`` of the other.

The performance gate (perf_tests/) uses :func:`compare_dirs` for its correctness criterion, and
``virnucpro compare`` exposes the same code on the command line (exit 0 pass, 1 fail, 2 bad input).

One cohesive module (~530 lines): reading the two files strictly, joining them, the statistics and
their rendering are one comparison, and the gate and the command must not drift apart.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from virnucpro.errors import InputError
from virnucpro.io.outset import require_complete
from virnucpro.io.paths import CONSENSUS, PREDICTIONS

if TYPE_CHECKING:   # imported where it is used: every `virnucpro` command builds this module's parser
    import pandas as pd

FRAME_HEADER = ["Sequence_ID", "Prediction", "score1", "score2"]
CONSENSUS_HEADER = ["Modified_ID", "Is_Virus"]
MODES = ("frame", "consensus")

# A score difference counts as "within 0.01" up to this slack: scores are decimal prints of float32
# values, so e.g. 0.51 - 0.50 is 0.010000000000000009 in float64.
_WITHIN = 0.01
_EPS = 1e-9
_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


# --------------------------------------------------------------------------------------------
# Reading and validating the output files
# --------------------------------------------------------------------------------------------

def _read_table(path: Path, header: list[str]) -> pd.DataFrame:
    """Read a tab-separated file with exactly ``header`` as all-string columns.

    Adds ``line`` (1-based line number in the file) and drops blank lines. Any deviation
    (missing file, wrong header, wrong field count, bad encoding) raises InputError naming the
    file and line.
    """
    import pandas as pd
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        first = raw[: raw.find(b"\n") if b"\n" in raw else len(raw)].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: line 1: not UTF-8 text ({exc.reason})") from None
    if not first.strip():
        raise InputError(f"{path}: line 1: empty file, expected header {_tabbed(header)}")
    got = first.rstrip("\r").split("\t")
    if got != header:
        raise InputError(f"{path}: line 1: expected header {_tabbed(header)}, got {_tabbed(got)}")
    _check_field_counts(path, raw, len(header))
    try:
        df = pd.read_csv(io.BytesIO(raw), sep="\t", dtype=str, na_filter=False,
                         skip_blank_lines=False, quoting=csv.QUOTE_NONE, engine="c",
                         encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1 if isinstance(exc.object, bytes) else "?"
        raise InputError(f"{path}: line {line}: not UTF-8 text ({exc.reason})") from None
    df["line"] = np.arange(2, len(df) + 2)
    blank = (df[header[0]] == "").to_numpy().copy()
    if blank.any():  # drop blank lines, which read_csv keeps so that line numbers stay right
        blank[blank] = (df.loc[blank, header] == "").all(axis=1).to_numpy()
        df = df.loc[~blank].reset_index(drop=True)
    return df


def _check_field_counts(path: Path, raw: bytes, n_fields: int) -> None:
    """Every non-blank line must have exactly ``n_fields`` tab-separated fields.

    Counted on the raw bytes with numpy (tens of milliseconds for 800k lines) because read_csv
    silently turns an extra field on the first data row into an index and pads short rows.
    """
    buf = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))               # [lines] offset of each line's \n
    if len(buf) and buf[-1] != ord("\n"):
        ends = np.append(ends, len(buf))                   # last line without a newline
    tabs = np.bincount(np.searchsorted(ends, np.flatnonzero(buf == ord("\t"))),
                       minlength=len(ends))[: len(ends)]   # [lines] tabs per line
    starts = np.concatenate(([0], ends[:-1] + 1))
    length = ends - starts
    has_cr = (length > 0) & (buf[np.maximum(ends - 1, 0)] == ord("\r"))
    blank = (length - has_cr) == 0
    bad = (tabs != n_fields - 1) & ~blank
    if bad.any():
        k = int(np.argmax(bad))
        raise InputError(f"{path}: line {k + 1}: expected {n_fields} tab-separated fields, "
                         f"saw {tabs[k] + 1}")


def _tabbed(fields: list[str]) -> str:
    return repr("\t".join(fields))


def _fail_at(path: Path, df: pd.DataFrame, bad: pd.Series | np.ndarray, what: str) -> None:
    """Raise InputError for the first row flagged in ``bad``, if any."""
    bad = np.asarray(bad)
    if bad.any():
        i = int(np.argmax(bad))
        row = "\t".join(str(df.iloc[i][c]) for c in df.columns if c != "line")
        raise InputError(f"{path}: line {df['line'].iloc[i]}: {what}: {row!r}")


def _parse_scores(path: Path, df: pd.DataFrame, col: str) -> np.ndarray:
    import pandas as pd
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)  # [rows]
    _fail_at(path, df, ~np.isfinite(values), f"{col} is not a number")
    _fail_at(path, df, (values < 0.0) | (values > 1.0), f"{col} outside [0, 1]")
    return values


def read_frames(path: str | Path) -> pd.DataFrame:
    """Read ``prediction_results.txt``: columns id, virus (bool), score1, score2, line."""
    import pandas as pd
    path = Path(path)
    df = _read_table(path, FRAME_HEADER)
    _fail_at(path, df, df["Sequence_ID"] == "", "empty Sequence_ID")
    pred = df["Prediction"]
    _fail_at(path, df, ~pred.isin(["virus", "others"]), "Prediction must be 'virus' or 'others'")
    return pd.DataFrame({
        "id": df["Sequence_ID"],
        "virus": (pred == "virus").to_numpy(),
        "score1": _parse_scores(path, df, "score1"),
        "score2": _parse_scores(path, df, "score2"),
        "line": df["line"],
    })


def read_consensus(path: str | Path) -> pd.DataFrame:
    """Read ``prediction_results_highestscore.csv`` (tab-separated): columns id, virus, line."""
    import pandas as pd
    path = Path(path)
    df = _read_table(path, CONSENSUS_HEADER)
    _fail_at(path, df, df["Modified_ID"] == "", "empty Modified_ID")
    flag = df["Is_Virus"].str.strip().str.lower()
    _fail_at(path, df, ~flag.isin(["true", "false"]), "Is_Virus must be True or False")
    return pd.DataFrame({"id": df["Modified_ID"], "virus": (flag == "true").to_numpy(),
                         "line": df["line"]})


def chunk_scores(frames: pd.DataFrame) -> pd.Series:
    """Per-chunk highest score2 over its frames, indexed by chunk id (= frame id minus its
    two-character frame tag, as the original derives Modified_ID)."""
    return frames["score2"].groupby(frames["id"].str.slice(0, -2).to_numpy(), sort=False).max()


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass
class ScoreStats:
    """Statistics of d = score(v2) - score(v1) over ids present on both sides."""

    n: int
    mean_abs: float
    max_abs: float
    mean_signed: float
    share_within_001: float          # share of |d| <= 0.01
    percentiles_abs: dict[str, float]  # "p50", "p90", "p99", "p99.9" of |d|

    @classmethod
    def of(cls, d: np.ndarray) -> "ScoreStats | None":
        if d.size == 0:
            return None
        a = np.abs(d)
        return cls(n=int(d.size), mean_abs=float(a.mean()), max_abs=float(a.max()),
                   mean_signed=float(d.mean()),
                   share_within_001=float(np.mean(a <= _WITHIN + _EPS)),
                   percentiles_abs={f"p{p:g}": float(v)
                                    for p, v in zip(_PERCENTILES, np.percentile(a, _PERCENTILES))})


@dataclass
class Disagreement:
    id: str
    v1_label: str
    v2_label: str
    v1_score: float | None
    v2_score: float | None
    abs_diff: float | None


@dataclass
class ModeComparison:
    """One mode's comparison (frame or consensus)."""

    mode: str
    n_v1: int
    n_v2: int
    n_both: int
    only_v1: int
    only_v2: int
    agree: int
    confusion: dict[str, dict[str, int]]   # confusion[v1 label][v2 label] = count
    scores: ScoreStats | None
    worst: list[Disagreement]
    missing_examples: dict[str, list[str]]  # "only_v1"/"only_v2" -> a few ids
    repeated_ids: dict[str, int] = field(default_factory=dict)  # side -> rows with a repeated id

    @property
    def agreement(self) -> float | None:
        """Label agreement over ids present on both sides (None when there are none)."""
        return self.agree / self.n_both if self.n_both else None

    @property
    def agreement_counting_missing(self) -> float | None:
        """Label agreement where an id present on one side only counts as a disagreement."""
        union = self.n_both + self.only_v1 + self.only_v2
        return self.agree / union if union else None

    @property
    def n_mismatch(self) -> int:
        return self.n_both - self.agree

    def failures(self, min_agreement: float) -> list[str]:
        """Reasons this mode fails the threshold (empty list = pass)."""
        out = []
        if self.n_both == 0:
            out.append(f"{self.mode}: no id present on both sides (v1 {self.n_v1} rows, "
                       f"v2 {self.n_v2} rows), nothing to compare")
        elif self.agreement < min_agreement:
            out.append(f"{self.mode}: label agreement {fmt_pct(self.agreement)} < target "
                       f"{fmt_pct(min_agreement)} ({self.n_mismatch} of {self.n_both} differ)")
        if self.only_v1 or self.only_v2:
            out.append(f"{self.mode}: ids missing: {self.only_v1} only in v1, "
                       f"{self.only_v2} only in v2")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["agreement"] = self.agreement
        d["agreement_counting_missing"] = self.agreement_counting_missing
        d["n_mismatch"] = self.n_mismatch
        return d


@dataclass
class CompareResult:
    v1: str
    v2: str
    modes: dict[str, ModeComparison]

    def failures(self, min_agreement: float = 0.99) -> list[str]:
        return [f for m in self.modes.values() for f in m.failures(min_agreement)]

    def passes(self, min_agreement: float = 0.99) -> bool:
        """True when every compared mode agrees >= min_agreement and no id is missing."""
        return not self.failures(min_agreement)

    def to_dict(self) -> dict[str, Any]:
        return {"v1": self.v1, "v2": self.v2,
                "modes": {k: m.to_dict() for k, m in self.modes.items()}}

    def render(self, min_agreement: float | None = None) -> str:
        """Human-readable report; with ``min_agreement`` it ends in a PASS/FAIL verdict."""
        lines = [f"v1: {self.v1}", f"v2: {self.v2}"]
        for m in self.modes.values():
            lines += [""] + _render_mode(m)
        if min_agreement is not None:
            fails = self.failures(min_agreement)
            lines.append("")
            lines.append(f"PASS (agreement >= {fmt_pct(min_agreement)}, no missing ids)" if not fails
                         else "FAIL: " + "; ".join(fails))
        return "\n".join(lines)


def fmt_pct(x: float | None) -> str:
    """A share as a percentage with three decimals ('n/a' for None)."""
    return "n/a" if x is None else f"{100 * x:.3f}%"


def _render_mode(m: ModeComparison) -> list[str]:
    title = ("per-frame (prediction_results.txt)" if m.mode == "frame"
             else "per-chunk consensus (prediction_results_highestscore.csv)")
    out = [f"== {title} ==",
           f"rows: v1 {m.n_v1}, v2 {m.n_v2}; on both {m.n_both}; "
           f"only in v1 {m.only_v1}; only in v2 {m.only_v2}",
           f"label agreement: {fmt_pct(m.agreement)} ({m.agree}/{m.n_both}); "
           f"counting missing as disagreement: {fmt_pct(m.agreement_counting_missing)}"]
    for side, n in m.repeated_ids.items():
        if n:
            out.append(f"note: {n} rows of {side} share an id with another row (matched by order)")
    corner = "v1 \\ v2"
    out.append(f"{corner:<8}  {'virus':>10}  {'others':>10}")
    for a in ("virus", "others"):
        out.append(f"{a:<8}  {m.confusion[a]['virus']:>10}  {m.confusion[a]['others']:>10}")
    s = m.scores
    if s is None:
        out.append("score differences: n/a (no score2 on both sides)")
    else:
        pct = ", ".join(f"{k} {v:.3g}" for k, v in s.percentiles_abs.items())
        out.append(f"score2 difference (v2 - v1) over {s.n}: mean |d| {s.mean_abs:.3g}, "
                   f"max |d| {s.max_abs:.3g}, mean d {s.mean_signed:+.3g}, "
                   f"|d| <= 0.01: {fmt_pct(s.share_within_001)}; |d| {pct}")
    for side in ("only_v1", "only_v2"):
        if m.missing_examples[side]:
            out.append(f"e.g. {side.replace('_', ' in ')}: " + ", ".join(m.missing_examples[side]))
    if m.worst:
        out.append("worst disagreements (label mismatches first, then largest |d|):")
        for d in m.worst:
            mark = "!=" if d.v1_label != d.v2_label else "=="
            sc = ("" if d.abs_diff is None else
                  f"  score2 {d.v1_score:.6g} -> {d.v2_score:.6g} (|d| {d.abs_diff:.3g})")
            out.append(f"  {d.id}: {d.v1_label} {mark} {d.v2_label}{sc}")
    return out


# --------------------------------------------------------------------------------------------
# Comparing
# --------------------------------------------------------------------------------------------

def _join_keys(ids: pd.Series) -> tuple[pd.Index, int]:
    """Unique join keys for one side's ids, and the number of rows whose id repeats.

    A repeated id gets its occurrence number appended (``X``, ``X\x1f1``, ``X\x1f2``, ...), so
    the k-th ``X`` of one side pairs with the k-th ``X`` of the other.
    """
    import pandas as pd
    keys = pd.Index(ids)
    if keys.is_unique:
        return keys, 0
    repeated = int(ids.duplicated(keep=False).sum())
    occ = ids.groupby(ids, sort=False).cumcount().to_numpy()
    tagged = [i if k == 0 else f"{i}\x1f{k}" for i, k in zip(ids.tolist(), occ.tolist())]
    return pd.Index(tagged), repeated


def compare_tables(mode: str, v1: pd.DataFrame, v2: pd.DataFrame, top: int = 10) -> ModeComparison:
    """Compare two tables with columns id, virus (bool) and optionally score (float)."""
    k1, rep1 = _join_keys(v1["id"])
    k2, rep2 = _join_keys(v2["id"])
    pos = k2.get_indexer(k1)            # [len(v1)] row of v2 holding the same key, -1 if none
    i1 = np.flatnonzero(pos >= 0)       # [n_both] rows of v1 present on both sides
    i2 = pos[i1]                        # [n_both] the matching rows of v2
    hit2 = np.zeros(len(v2), dtype=bool)
    hit2[i2] = True
    only1 = v1["id"].to_numpy()[pos < 0]
    only2 = v2["id"].to_numpy()[~hit2]
    l1 = v1["virus"].to_numpy(dtype=bool)[i1]  # [n_both]
    l2 = v2["virus"].to_numpy(dtype=bool)[i2]  # [n_both]
    names = {True: "virus", False: "others"}
    confusion = {names[x]: {names[y]: int(np.sum((l1 == x) & (l2 == y))) for y in (True, False)}
                 for x in (True, False)}
    s1 = s2 = d = None
    if "score" in v1.columns and "score" in v2.columns:
        s1 = v1["score"].to_numpy(dtype=float)[i1]
        s2 = v2["score"].to_numpy(dtype=float)[i2]
        d = s2 - s1  # [n_both]; NaN where a side has no score for that id
    return ModeComparison(
        mode=mode, n_v1=len(v1), n_v2=len(v2), n_both=len(i1),
        only_v1=len(only1), only_v2=len(only2), agree=int(np.sum(l1 == l2)),
        confusion=confusion, scores=None if d is None else ScoreStats.of(d[~np.isnan(d)]),
        worst=_worst(v1["id"].to_numpy()[i1], l1, l2, s1, s2, top),
        missing_examples={"only_v1": [str(x) for x in only1[:top]],
                          "only_v2": [str(x) for x in only2[:top]]},
        repeated_ids={"v1": rep1, "v2": rep2},
    )


def _worst(ids: np.ndarray, l1: np.ndarray, l2: np.ndarray, s1: np.ndarray | None,
           s2: np.ndarray | None, top: int) -> list[Disagreement]:
    """The ``top`` rows ranked by (label mismatch, |d|), both descending; ties keep file order.

    Rows whose labels agree and whose scores are equal are not disagreements and never listed.
    """
    if top <= 0 or len(ids) == 0:
        return []
    mismatch = l1 != l2
    absd = np.zeros(len(ids)) if s1 is None else np.nan_to_num(np.abs(s2 - s1), nan=-1.0)
    order = np.lexsort((-absd, ~mismatch))[:top]  # last key is primary: mismatches first
    names = {True: "virus", False: "others"}
    out = []
    for i in order:
        if not mismatch[i] and absd[i] <= 0.0:
            break
        known = s1 is not None and absd[i] >= 0.0
        out.append(Disagreement(
            id=str(ids[i]), v1_label=names[bool(l1[i])], v2_label=names[bool(l2[i])],
            v1_score=float(s1[i]) if known else None, v2_score=float(s2[i]) if known else None,
            abs_diff=float(absd[i]) if known else None))
    return out


@dataclass
class _Side:
    """What one side (a directory or a single file) provides."""

    frame: Path | None = None
    consensus: Path | None = None


def _resolve(arg: str | Path) -> _Side:
    """What ``arg`` provides; an output set a virnucpro run never committed is refused (a killed
    run's files may be of two runs: virnucpro.io.outset)."""
    p = Path(arg)
    if p.is_dir():
        require_complete(p)
        f, c = p / PREDICTIONS, p / CONSENSUS
        return _Side(frame=f if f.is_file() else None, consensus=c if c.is_file() else None)
    if not p.is_file():
        raise InputError(f"{p}: no such file or directory")
    if p.name in (PREDICTIONS, CONSENSUS):
        require_complete(p.parent)
    try:
        with open(p, encoding="utf-8") as fh:
            head = fh.readline().rstrip("\r\n").split("\t")
    except (UnicodeDecodeError, OSError):
        raise InputError(f"{p}: line 1: cannot read a header (not a UTF-8 text file)") from None
    if head == FRAME_HEADER:
        return _Side(frame=p)
    if head == CONSENSUS_HEADER:
        return _Side(consensus=p)
    raise InputError(f"{p}: line 1: not a VirNucPro output: expected header "
                     f"{_tabbed(FRAME_HEADER)} or {_tabbed(CONSENSUS_HEADER)}, got {_tabbed(head)}")


def _modes_for(mode: str, s1: _Side, s2: _Side, v1: str, v2: str) -> list[str]:
    if mode not in (*MODES, "both"):
        raise InputError(f"unknown mode {mode!r}: use frame, consensus or both")
    wanted = list(MODES) if mode == "both" else [mode]
    files = {"frame": PREDICTIONS, "consensus": CONSENSUS}
    for m in wanted:
        for side, arg in ((s1, v1), (s2, v2)):
            if getattr(side, m) is None:
                raise InputError(f"{arg}: has no {files[m]} (needed for mode {m!r}); "
                                 f"pass --mode {'consensus' if m == 'frame' else 'frame'} "
                                 f"to compare the other file only")
    return wanted


def compare_dirs(v1: str | Path, v2: str | Path, mode: str = "both", top: int = 10) -> CompareResult:
    """Compare the outputs in ``v1`` (reference, e.g. stored v1.0) and ``v2`` (candidate).

    ``v1``/``v2`` are output directories or single output files (kind told by the header).
    ``mode`` is "frame", "consensus" or "both". Raises InputError for unreadable/malformed input.
    """
    s1, s2 = _resolve(v1), _resolve(v2)
    if mode == "both" and not (Path(v1).is_dir() and Path(v2).is_dir()):
        # single files: compare the one kind both sides have
        common = [m for m in MODES if getattr(s1, m) and getattr(s2, m)]
        if not common:
            raise InputError(f"{v1} and {v2} are different kinds of output file; nothing to compare")
        mode = common[0] if len(common) == 1 else "both"
    modes = _modes_for(mode, s1, s2, str(v1), str(v2))
    frames = {k: read_frames(s.frame) for k, s in (("v1", s1), ("v2", s2)) if s.frame is not None}
    result: dict[str, ModeComparison] = {}
    if "frame" in modes:
        t1, t2 = (frames[k][["id", "virus", "score2"]].rename(columns={"score2": "score"})
                  for k in ("v1", "v2"))
        result["frame"] = compare_tables("frame", t1, t2, top)
    if "consensus" in modes:
        tables = []
        for key, side in (("v1", s1), ("v2", s2)):
            t = read_consensus(side.consensus)[["id", "virus"]]
            if "v1" in frames and "v2" in frames:  # score stats only when both sides have them
                t = t.assign(score=chunk_scores(frames[key]).reindex(t["id"]).to_numpy())
            tables.append(t)
        result["consensus"] = compare_tables("consensus", tables[0], tables[1], top)
    return CompareResult(v1=str(v1), v2=str(v2), modes=result)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``virnucpro compare`` to the CLI's sub-parsers."""
    p = subparsers.add_parser(
        "compare",
        help="compare two VirNucPro output sets (label agreement, score differences)",
        description=(
            "Compare the predictions of two VirNucPro runs, e.g. stored v1.0 outputs (V1) and a "
            "new run (V2). Each argument is an output directory (holding prediction_results.txt "
            "and prediction_results_highestscore.csv) or one of those files. Ids are matched with "
            "an outer join; missing ids are counted. Exit status: 0 when every compared mode "
            "agrees >= --min-agreement and no id is missing, 1 otherwise, 2 for unreadable or "
            "malformed input."),
    )
    p.add_argument("v1", metavar="V1_DIR", help="reference outputs (directory or file)")
    p.add_argument("v2", metavar="V2_DIR", help="outputs to check (directory or file)")
    p.add_argument("--mode", choices=["frame", "consensus", "both"], default="both",
                   help="per-frame, per-chunk consensus, or both (default: both)")
    p.add_argument("--min-agreement", type=float, default=0.99, metavar="FRACTION",
                   help="label agreement needed to pass, 0..1 (default: 0.99)")
    p.add_argument("--json", type=Path, metavar="FILE",
                   help="also write the full comparison as JSON to FILE")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="how many worst disagreements to list (default: 10)")
    p.set_defaults(func=run_compare)
    return p


def run_compare(args: argparse.Namespace) -> int:
    if not 0.0 <= args.min_agreement <= 1.0:
        raise InputError(f"--min-agreement must be between 0 and 1, got {args.min_agreement}")
    if args.top < 0:
        raise InputError(f"--top must be >= 0, got {args.top}")
    res = compare_dirs(args.v1, args.v2, mode=args.mode, top=args.top)
    print(res.render(min_agreement=args.min_agreement))
    if args.json is not None:
        doc = res.to_dict() | {"min_agreement": args.min_agreement,
                               "passed": res.passes(args.min_agreement),
                               "failures": res.failures(args.min_agreement)}
        try:
            args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{args.json}: cannot write: {exc.strerror}") from None
    return 0 if res.passes(args.min_agreement) else 1
