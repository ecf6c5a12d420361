"""The performance gate's logic: hardware profiles, configurations, finished runs, the Check
record and the wall-time criterion (the other criteria: virnucpro.perf.criteria).

perf_tests/ runs the real pipeline and asserts on what these functions return; keeping the logic
here (no pytest, no GPU) lets tests/test_gate.py exercise every pass and fail path on crafted
inputs. Documented for users in docs/perf-gate.md.

- A *profile* (``baselines/profiles/<name>.toml``) holds every threshold a reviewer signs off:
  wall-time limits per million reads, GPU utilisation and packing floors, scaling and speedup
  ratios, correctness bounds. Unknown keys are an error, so a typo cannot switch a criterion off.
- A *run* is one finished ``virnucpro predict`` output directory: prediction files, run.json and
  the telemetry in virnucpro.log (see virnucpro.core.telemetry). ``load_run`` refuses a broken one.
- A *configuration* is a GPU count (or the CPU) and a precision; ``cannot_run`` says why this
  machine cannot judge one (too few GPUs, another GPU model than the profile's).
- A *check* is one criterion on one configuration: passed, failed or not measured, target and
  measurement as text (for the assertion message and the report) and the raw numbers.

A limit "per million reads" applies to a smaller workload through ``virnucpro.perf.projection``
(start-up and model loading once, the rest scaled by the read ratio).

One cohesive module (~540 lines): profiles, configurations, the run records the criteria read and
the report, which all change together when a criterion is added (the criteria themselves are in
``virnucpro.perf.criteria``).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virnucpro.core.files import atomic_write
from virnucpro.engines.config import PRECISIONS   # a precision sub-table's names
from virnucpro.io.paths import CONSENSUS, LOG_NAME, PREDICTIONS, RUN_JSON
from virnucpro.perf.compare import CompareResult, compare_dirs, fmt_pct
from virnucpro.perf.projection import MILLION, fixed_time_s, project_wall_s
from virnucpro.errors import VirnucproError
from virnucpro.core.telemetry import read_telemetry

CPU_CONFIG = "cpu"


class GateError(VirnucproError):
    """A run or a profile the gate cannot judge (broken output, missing telemetry, bad profile)."""


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------

# section -> allowed keys (top-level keys under ""); anything else in a profile is an error.
# A criterion's section is named as the criterion (and the report's row). Criterion sections may
# hold one sub-table per precision of [run] precisions, overriding keys for that configuration:
#   [correctness]  min_frame_agreement = 0.995     [correctness.fp32]  max_abs_diff = 1e-5
_SCHEMA: dict[str, set[str]] = {
    "": {"name", "description", "marker", "device", "gpu_name_patterns", "gpu_counts"},
    "run": {"engine", "precision", "precisions", "chunk_length", "extra_args", "timeout_factor",
            "warmup_reads", "cpu_threads"},
    "workload": {"reads", "seed", "length_profile"},
    "models": {"preset", "seed"},
    "reference": {"subsample_reads", "side_by_side", "device"},
    "wall_time": {"limit_s_per_million_reads"},
    "gpu_utilisation": {"min_pct", "tolerance_pct", "max_disagreement_pct"},
    "packing_efficiency": {"min_efficiency", "tolerance", "max_disagreement"},
    "scaling": {"min_efficiency"},
    "speedup_vs_reference": {"min_ratio", "basis", "note", "rounds"},
    "speedup_vs_v1": {"min_ratio", "v1_wall_s", "v1_gpus", "v1_reads", "note"},
    "correctness": {"min_frame_agreement", "min_consensus_agreement", "max_mean_abs_diff",
                    "min_share_within_001", "max_abs_diff", "borderline_distance",
                    "max_non_borderline_share"},
    "mfu_esm": {"min_esm"},
    "consistency": {"min_agreement", "max_abs_diff"},
}
_REQUIRED = {"": {"name", "marker", "device"}, "run": {"engine", "chunk_length"},
             "workload": {"reads", "seed", "length_profile"}, "models": {"preset", "seed"},
             "wall_time": {"limit_s_per_million_reads"}}
_NOT_CRITERIA = {"", "run", "workload", "models", "reference"}
# Criteria in report order: the name of each one's test (perf_tests/test_perf_gate.py), profile
# section and report row are the same word.
CRITERIA = ("wall_time", "gpu_utilisation", "packing_efficiency", "mfu_esm", "scaling",
            "speedup_vs_reference", "speedup_vs_v1", "correctness", "consistency")


@dataclass
class Profile:
    """A hardware profile: thresholds and how to run, read from a TOML file."""

    name: str
    path: Path
    data: dict[str, Any]

    def section(self, name: str, precision: str | None = None) -> dict[str, Any] | None:
        """A section's keys; with ``precision``, its ``[name.precision]`` sub-table overrides them."""
        sec = self.data.get(name)
        if sec is None:
            return None
        out = {k: v for k, v in sec.items() if not (k in PRECISIONS and isinstance(v, dict))}
        if precision and isinstance(sec.get(precision), dict):
            out.update(sec[precision])
        return out

    @property
    def precisions(self) -> list[str | None]:
        """The precisions the gate runs, one configuration each: [run] precisions, else
        [run] precision, else the engine's default (None)."""
        run = self.data["run"]
        if run.get("precisions"):
            return [str(p) for p in run["precisions"]]
        return [str(run["precision"])] if run.get("precision") else [None]

    @property
    def marker(self) -> str:
        return self.data["marker"]

    @property
    def device(self) -> str:
        return self.data["device"]

    @property
    def gpu_counts(self) -> list[int]:
        return list(self.data.get("gpu_counts", []))

    def wall_limit_per_million(self, config: str, n_gpus: int) -> float:
        """Wall-time limit (s) for 1M reads in this configuration.

        A GPU count the profile does not list gets the limit of the largest listed count below
        it, scaled ideally (limit x m / n); ``cpu`` must be listed.
        """
        table = {str(k): float(v) for k, v in self.data["wall_time"]["limit_s_per_million_reads"].items()}
        config = config if config in table else config.partition("-")[0]   # "cpu-fp16" -> "cpu"
        if config in table:
            return table[config]
        key = str(n_gpus)
        if key in table:
            return table[key]
        lower = [int(k) for k in table if k.isdigit() and int(k) < n_gpus]
        if n_gpus <= 0 or not lower:
            raise GateError(f"profile {self.name} ({self.path}) has no wall-time limit for {config}")
        m = max(lower)
        return table[str(m)] * m / n_gpus


def load_profile(path: str | Path) -> Profile:
    """Read and validate one profile file (GateError naming file and key on any problem)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GateError(f"hardware profile not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GateError(f"{path}: not valid TOML: {exc}") from None
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in _SCHEMA or key == "":
                raise GateError(f"{path}: unknown section [{key}] (known: "
                                f"{', '.join(sorted(k for k in _SCHEMA if k))})")
            subs = {k for k, v in value.items()
                    if isinstance(v, dict) and k not in _SCHEMA[key] and key not in _NOT_CRITERIA}
            unknown = (set(value) - subs) - _SCHEMA[key]
            unknown |= {f"{k} (a precision sub-table: {', '.join(PRECISIONS)})" for k in subs - set(PRECISIONS)}
            for k in subs & set(PRECISIONS):
                unknown |= {f"{k}.{x}" for x in set(value[k]) - _SCHEMA[key]}
            if unknown:
                raise GateError(f"{path}: unknown key(s) in [{key}]: {', '.join(sorted(unknown))}")
        elif key not in _SCHEMA[""]:
            raise GateError(f"{path}: unknown top-level key {key!r}")
    for sec, keys in _REQUIRED.items():
        have = data if sec == "" else data.get(sec, {})
        missing = keys - set(have)
        if missing:
            where = "top level" if sec == "" else f"[{sec}]"
            raise GateError(f"{path}: missing {', '.join(sorted(missing))} at {where}")
    if data["device"] not in ("cuda", "cpu"):
        raise GateError(f"{path}: device must be 'cuda' or 'cpu', not {data['device']!r}")
    sv = data.get("speedup_vs_v1")
    if sv is not None and not {"v1_wall_s", "v1_gpus", "v1_reads", "min_ratio"} <= set(sv):
        raise GateError(f"{path}: [speedup_vs_v1] needs v1_wall_s, v1_gpus, v1_reads and min_ratio "
                        "(the known v1.0 timing)")
    sr = data.get("speedup_vs_reference")
    if sr is not None:
        ref = data.get("reference", {})
        if not (ref.get("side_by_side") or ref.get("subsample_reads")):
            raise GateError(f"{path}: [speedup_vs_reference] needs [reference] side_by_side = true "
                            "or subsample_reads")
        if sr.get("basis", "wall") not in ("wall", "cpu"):
            raise GateError(f"{path}: [speedup_vs_reference] basis must be 'wall' or 'cpu'")
        rounds = sr.get("rounds", 1)
        if not isinstance(rounds, int) or rounds < 1 or (rounds > 1 and not ref.get("side_by_side")):
            raise GateError(f"{path}: [speedup_vs_reference] rounds must be a whole number >= 1, and above 1 "
                            "only with [reference] side_by_side = true")
    for p in data["run"].get("precisions", []):
        if p not in PRECISIONS:
            raise GateError(f"{path}: [run] precisions: {p!r} is not one of {', '.join(PRECISIONS)}")
    return Profile(name=data["name"], path=path, data=data)


def profiles_in(directory: str | Path) -> dict[str, Profile]:
    """All profiles of a directory, by name."""
    out = {}
    for p in sorted(Path(directory).glob("*.toml")):
        prof = load_profile(p)
        out[prof.name] = prof
    return out


def select_profile(profiles: dict[str, Profile], override: str | None = None,
                   markexpr: str = "", gpu_name: str | None = None) -> tuple[Profile, str]:
    """Pick the session's profile; returns (profile, why).

    Order: ``--hw-profile`` (a name or a .toml path) > the one profile marker selected by ``-m``
    (e.g. ``-m gpu4090``) > the detected GPU's name matched against each profile's
    gpu_name_patterns > the CPU profile when no GPU is present.
    """
    if override:
        if override in profiles:
            return profiles[override], f"--hw-profile {override}"
        if override.endswith(".toml") or Path(override).is_file():
            return load_profile(override), f"--hw-profile {override}"
        raise GateError(f"--hw-profile {override}: no such profile (known: {', '.join(profiles)})")
    chosen = [p for p in profiles.values() if _selects_marker(markexpr, p.marker)]
    if len(chosen) > 1:
        raise GateError(f"-m {markexpr!r} selects several hardware profiles "
                        f"({', '.join(p.name for p in chosen)}); select one, or pass --hw-profile")
    if chosen:
        return chosen[0], f"-m {markexpr}"
    if gpu_name:
        for p in profiles.values():
            if any(re.search(pat, gpu_name, re.IGNORECASE) for pat in p.data.get("gpu_name_patterns", [])):
                return p, f"detected GPU {gpu_name!r}"
        raise GateError(f"no hardware profile matches the detected GPU {gpu_name!r}; "
                        f"pass --hw-profile NAME (known: {', '.join(profiles)})")
    cpu = [p for p in profiles.values() if p.device == "cpu"]
    if not cpu:
        raise GateError("no GPU detected and no CPU profile; pass --hw-profile")
    return cpu[0], "no GPU detected"


def _selects_marker(markexpr: str, marker: str) -> bool:
    """True when ``marker`` occurs in the -m expression and is not negated by a preceding 'not'."""
    tokens = re.findall(r"[\w-]+", markexpr or "")
    return any(t == marker and (i == 0 or tokens[i - 1] != "not") for i, t in enumerate(tokens))


def gpu_configs(profile: Profile, detected: int) -> list[tuple[str, int]]:
    """The configurations of a session: ``[(id, n_gpus)]``.

    GPU profiles: the counts the profile's sign-off needs (``gpu_counts``) plus 1, 2, 4, ...
    and all of the detected GPUs; a count above ``detected`` stays in the list and its tests skip
    with a reason. CPU profile: one ``cpu`` configuration.
    """
    if profile.device == "cpu":
        return [(CPU_CONFIG, 0)]
    counts = set(profile.gpu_counts)
    k = 1
    while k <= detected:
        counts.add(k)
        k *= 2
    if detected:
        counts.add(detected)
    counts = counts or {1}
    return [(f"{n}gpu", n) for n in sorted(counts)]


@dataclass(frozen=True)
class Config:
    """One configuration of a session: ``cpu-fp32``, ``1gpu``, ``2gpu``, ..."""

    config: str
    n_gpus: int
    precision: str | None = None

    def __str__(self) -> str:
        return self.config


def configurations(profile: Profile, detected: int) -> list[Config]:
    """gpu_configs x the profile's precisions; the id names the precision only when there are
    several (``cpu-fp32``, ``cpu-fp16``; ``1gpu`` for a single-precision GPU profile)."""
    precs = profile.precisions
    return [Config(cid if len(precs) == 1 else f"{cid}-{p}", n, p)
            for cid, n in gpu_configs(profile, detected) for p in precs]


def cannot_run(profile: Profile, n_gpus: int, detected: int, gpu_name: str | None,
               chosen_explicitly: bool) -> str | None:
    """Why a configuration of ``n_gpus`` GPUs cannot be judged on this machine (None: it can).

    Too few GPUs (none at all included), or GPUs of another model than the profile's
    ``gpu_name_patterns`` unless the profile was chosen explicitly (--hw-profile): a sign-off of
    RTX 4090 thresholds measured on another GPU would certify nothing.
    """
    if profile.device == "cpu" or n_gpus == 0:
        return None
    if n_gpus > detected:
        have = f"{detected} detected" if detected else "none detected (torch.cuda.device_count() == 0)"
        return f"needs {n_gpus} GPU(s); {have}"
    patterns = profile.data.get("gpu_name_patterns", [])
    if patterns and gpu_name and not chosen_explicitly \
            and not any(re.search(p, gpu_name, re.IGNORECASE) for p in patterns):
        return (f"profile {profile.name} is for GPUs matching {', '.join(patterns)}; this machine has "
                f"{gpu_name!r} (pass --hw-profile {profile.name} to judge it here anyway)")
    return None


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------

if TYPE_CHECKING:   # annotations only
    from virnucpro.perf.sampler import Samples


@dataclass
class RunRecord:
    """One finished pipeline run, as the gate sees it."""

    config: str
    n_gpus: int
    outdir: Path
    wall_s: float                 # end-to-end, as a user waits for it (subprocess wall clock)
    summary: dict[str, Any]       # the telemetry ``summary`` event
    events: list[dict[str, Any]]  # every telemetry event, in order
    manifest: dict[str, Any]      # run.json
    harness: Samples | None = None     # what the harness sampled while the run lived (sampler.py)
    clock_offset: float | None = None  # epoch seconds = telemetry t + clock_offset (from the log)
    command: list[str] = field(default_factory=list)   # as launched, environment settings first

    @property
    def reads(self) -> int:
        return int(self.summary["reads"])

    @property
    def stages(self) -> dict[str, float]:
        return dict(self.summary.get("stages") or {})

    def stage_total(self, name: str, key: str) -> float | None:
        """Sum of ``key`` over this run's ``stage`` events named ``name`` (None if absent)."""
        vals = [e[key] for e in self.events
                if e.get("event") == "stage" and e.get("stage") == name and e.get(key) is not None]
        return float(sum(vals)) if vals else None

    @property
    def esm_tokens(self) -> float | None:
        return self.stage_total("embed_esm", "tokens")

    @property
    def fixed_s(self) -> float:
        """Start-up + model loading: the part of the wall time that does not grow with reads."""
        return fixed_time_s(self.wall_s, float(self.summary["wall_s"]), float(self.stages.get("load_models", 0.0)))

    def projected_wall_s(self, reads: float) -> float:
        """Wall time projected to ``reads`` reads (``virnucpro.perf.projection``)."""
        return project_wall_s(self.wall_s, self.fixed_s, self.reads, reads)

    def gpu_util_per_gpu(self) -> dict[int, float]:
        """Mean NVML utilisation per GPU over the embedding window (first to last ``batch``
        event, or the whole run when there are none)."""
        samples = [e for e in self.events if e.get("event") == "gpu_sample"]
        batches = [e for e in self.events if e.get("event") == "batch"]
        if batches:
            t0 = min(e["t"] - float(e.get("dt") or 0.0) for e in batches)
            t1 = max(e["t"] for e in batches)
            samples = [e for e in samples if t0 <= e["t"] <= t1] or samples
        per: dict[int, list[float]] = {}
        for e in samples:
            per.setdefault(int(e["gpu"]), []).append(float(e["util_pct"]))
        return {g: sum(v) / len(v) for g, v in sorted(per.items())}

    @property
    def precision(self) -> str | None:
        return self.summary.get("precision") or self.manifest.get("precision")


def log_clock_offset(log: Path) -> float | None:
    """Epoch seconds minus the run's clock, from the log lines that carry telemetry: each line's
    timestamp (``2026-11-29 16:55:00,123``, local time, written as the event is emitted) minus its
    ``t``; the median over the lines. None when no line can be read so."""
    import datetime
    diffs = []
    with open(log, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            i = line.find("TELEMETRY {")
            j = line.find('"t": ')
            if i < 0 or j < 0:
                continue
            try:
                when = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                t = float(line[j + 5:].split(",", 1)[0].split("}", 1)[0])
            except ValueError:
                continue
            diffs.append(when - t)
    if not diffs:
        return None
    diffs.sort()
    return diffs[len(diffs) // 2]


_SUMMARY_KEYS = ("wall_s", "reads", "chunks", "frames", "stages")


def load_run(outdir: str | Path, config: str = CPU_CONFIG, n_gpus: int = 0,
             wall_s: float | None = None, harness: Samples | None = None,
             command: list[str] | None = None) -> RunRecord:
    """Load a finished run; GateError with a specific message when anything the gate needs is
    missing or broken (prediction files, run.json, the log's telemetry and its summary)."""
    outdir = Path(outdir)
    if not outdir.is_dir():
        raise GateError(f"run output directory not found: {outdir}")
    for name in (PREDICTIONS, CONSENSUS):
        p = outdir / name
        if not p.is_file():
            raise GateError(f"{config}: the run wrote no {name} ({p})")
        if p.stat().st_size == 0:
            raise GateError(f"{config}: {p} is empty (not even a header)")
    log = outdir / LOG_NAME
    if not log.is_file():
        raise GateError(f"{config}: the run wrote no log file {log}, so there is no telemetry")
    try:
        events = read_telemetry(log)
    except ValueError as exc:  # json.JSONDecodeError
        raise GateError(f"{config}: {log} holds a malformed TELEMETRY line: {exc}") from None
    summaries = [e for e in events if e.get("event") == "summary"]
    if not summaries:
        raise GateError(f"{config}: {log} has no 'summary' telemetry event "
                        f"({len(events)} events read): the run did not finish or telemetry is broken")
    summary = summaries[-1]
    missing = [k for k in _SUMMARY_KEYS if summary.get(k) is None]
    if missing:
        raise GateError(f"{config}: the 'summary' telemetry event in {log} lacks {', '.join(missing)}")
    man_p = outdir / RUN_JSON
    if not man_p.is_file():
        # run.json is the output set's commit record, moved into place last (virnucpro.io.outset):
        # without it the files may be of two runs
        raise GateError(f"{config}: the run wrote no manifest {man_p}: its output set was never committed")
    try:
        manifest = json.loads(man_p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise GateError(f"{config}: {man_p} is not valid JSON: {exc}") from None
    wall = float(summary["wall_s"]) if wall_s is None else float(wall_s)
    return RunRecord(config=config, n_gpus=n_gpus, outdir=outdir, wall_s=wall, summary=summary,
                     events=events, manifest=manifest, harness=harness,
                     clock_offset=log_clock_offset(log), command=list(command or []))


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

@dataclass
class Check:
    """One criterion on one configuration."""

    criterion: str
    config: str
    passed: bool
    target: str
    measured: str
    details: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    not_measured: bool = False    # the measurement is absent (e.g. NVML on a CPU): neither pass nor fail

    @property
    def message(self) -> str:
        verdict = "NOT MEASURED" if self.not_measured else "PASS" if self.passed else "FAIL"
        extra = f" [{'; '.join(self.details)}]" if self.details else ""
        return f"{self.criterion} [{self.config}] {verdict}: target {self.target}, measured {self.measured}{extra}"


def _fmt_s(s: float) -> str:
    if s >= 3600:
        return f"{s:,.0f} s ({s / 3600:.2f} h)"
    if s >= 120:
        return f"{s:,.0f} s ({s / 60:.1f} min)"
    return f"{s:,.1f} s"


def _worker_trouble(run: RunRecord) -> list[str]:
    """Worker processes that died and were replaced: the run completed, slower (say why)."""
    lost = int(run.summary.get("workers_lost") or 0)
    return [f"{lost} worker process(es) died and were replaced; see {run.outdir / LOG_NAME}"] if lost else []


def check_wall_time(run: RunRecord, profile: Profile) -> Check:
    limit = profile.wall_limit_per_million(run.config, run.n_gpus)
    projected = run.projected_wall_s(MILLION)
    return Check(
        "wall_time", run.config, projected <= limit,
        target=f"<= {_fmt_s(limit)} per 1,000,000 reads",
        measured=f"{_fmt_s(projected)} projected to 1,000,000 reads from {_fmt_s(run.wall_s)} for "
                 f"{run.reads:,} reads",
        details=[f"fixed start-up + model loading {_fmt_s(run.fixed_s)} not scaled", *_worker_trouble(run)],
        values={"limit_s_per_million": limit, "projected_s_per_million": projected,
                "wall_s": run.wall_s, "reads": run.reads, "fixed_s": run.fixed_s})


# --------------------------------------------------------------------------------------------
# Restricting outputs to a sub-sample's reads (correctness against a sub-sample baseline)
# --------------------------------------------------------------------------------------------

def restrict_outputs(run_dir: Path, read_ids: set[str], out_dir: Path) -> Path:
    """Copy the run's two prediction files, keeping only rows of the given reads.

    Frame ids are ``{read}_chunk_{k}{F1..R3}`` and chunk ids ``{read}_chunk_{k}``, so the read is
    everything before the last ``_chunk_``.
    """
    import pandas as pd

    from virnucpro.perf.compare import read_consensus, read_frames

    out_dir.mkdir(parents=True, exist_ok=True)
    frames = read_frames(run_dir / PREDICTIONS)
    keep = frames["id"].str.rsplit("_chunk_", n=1).str[0].isin(read_ids)
    raw = pd.read_csv(run_dir / PREDICTIONS, sep="\t", dtype=str, na_filter=False, quoting=3)
    raw.loc[keep.to_numpy()].to_csv(out_dir / PREDICTIONS, sep="\t", index=False, quoting=3)
    cons = read_consensus(run_dir / CONSENSUS)
    keep_c = cons["id"].str.rsplit("_chunk_", n=1).str[0].isin(read_ids)
    rawc = pd.read_csv(run_dir / CONSENSUS, sep="\t", dtype=str, na_filter=False, quoting=3)
    rawc.loc[keep_c.to_numpy()].to_csv(out_dir / CONSENSUS, sep="\t", index=False, quoting=3)
    return out_dir


def head_fasta(src: Path, dst: Path, n: int) -> list[str]:
    """Write the first ``n`` records of ``src`` (plain or gzip) to ``dst``; return their ids."""
    from virnucpro.io.fasta import iter_fasta

    ids = []
    with atomic_write(dst) as fh:
        for rec in iter_fasta(src):
            if len(ids) >= n:
                break
            fh.write(f">{rec.id}\n{rec.seq}\n")
            ids.append(rec.id)
    return ids


def fasta_ids(path: Path) -> list[str]:
    from virnucpro.io.fasta import iter_fasta

    return [r.id for r in iter_fasta(path)]


__all__ = [
    "GateError", "Profile", "load_profile", "profiles_in", "select_profile", "gpu_configs",
    "Config", "configurations", "cannot_run", "RunRecord", "load_run", "log_clock_offset", "Check",
    "check_wall_time", "restrict_outputs", "head_fasta", "fasta_ids", "CRITERIA",
]
