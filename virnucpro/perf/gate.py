"""The performance gate's logic: hardware profiles, finished runs, and one check per criterion.

perf_tests/ runs the real pipeline and asserts on what these functions return; keeping the logic
here (no pytest, no GPU) lets tests/test_gate.py exercise every pass and fail path on crafted
inputs. Documented for users in docs/perf-gate.md.

- A *profile* (``baselines/profiles/<name>.toml``) holds every threshold a reviewer signs off:
  wall-time limits per million reads, GPU utilisation and packing floors, scaling and speedup
  ratios, correctness bounds. Unknown keys are an error, so a typo cannot switch a criterion off.
- A *run* is one finished ``virnucpro predict`` output directory: prediction files, run.json and
  the telemetry in virnucpro.log (see virnucpro.core.telemetry). ``load_run`` refuses a broken one.
- A *check* is one criterion on one configuration: passed or not, target and measurement as text
  (for the assertion message and the report) and the raw numbers.

A limit "per million reads" applies to a smaller workload through ``virnucpro.perf.projection``
(start-up and model loading once, the rest scaled by the read ratio).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virnucpro.core.files import atomic_write
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
_SCHEMA: dict[str, set[str]] = {
    "": {"name", "description", "marker", "device", "gpu_name_patterns", "gpu_counts"},
    "run": {"engine", "precision", "chunk_length", "extra_args", "timeout_factor", "warmup_reads"},
    "workload": {"reads", "seed", "length_profile"},
    "models": {"preset", "seed"},
    "reference": {"subsample_reads", "device"},
    "wall_time": {"limit_s_per_million_reads"},
    "gpu_util": {"min_pct"},
    "packing": {"min_efficiency"},
    "scaling": {"min_efficiency"},
    "speedup": {"source", "min_ratio", "v1_wall_s", "v1_gpus", "v1_reads", "note"},
    "correctness": {"min_frame_agreement", "min_consensus_agreement", "max_mean_abs_diff",
                    "min_share_within_001", "max_abs_diff"},
    "mfu": {"min_esm"},
    "consistency": {"min_agreement", "max_abs_diff"},
}
_REQUIRED = {"": {"name", "marker", "device"}, "run": {"engine", "chunk_length"},
             "workload": {"reads", "seed", "length_profile"}, "models": {"preset", "seed"},
             "wall_time": {"limit_s_per_million_reads"}}


@dataclass
class Profile:
    """A hardware profile: thresholds and how to run, read from a TOML file."""

    name: str
    path: Path
    data: dict[str, Any]

    def section(self, name: str) -> dict[str, Any] | None:
        return self.data.get(name)

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
            unknown = set(value) - _SCHEMA[key]
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
    sp = data.get("speedup")
    if sp is not None:
        if sp.get("source") not in ("known", "measured"):
            raise GateError(f"{path}: [speedup] source must be 'known' or 'measured'")
        if sp["source"] == "known" and not {"v1_wall_s", "v1_gpus", "v1_reads"} <= set(sp):
            raise GateError(f"{path}: [speedup] source 'known' needs v1_wall_s, v1_gpus, v1_reads")
        if sp["source"] == "measured" and "subsample_reads" not in data.get("reference", {}):
            raise GateError(f"{path}: [speedup] source 'measured' needs [reference] subsample_reads")
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


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------

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


_SUMMARY_KEYS = ("wall_s", "reads", "chunks", "frames", "stages")


def load_run(outdir: str | Path, config: str = CPU_CONFIG, n_gpus: int = 0,
             wall_s: float | None = None) -> RunRecord:
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
                     events=events, manifest=manifest)


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

    @property
    def message(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        extra = f" [{'; '.join(self.details)}]" if self.details else ""
        return f"{self.criterion} [{self.config}] {verdict}: target {self.target}, measured {self.measured}{extra}"


def _fmt_s(s: float) -> str:
    if s >= 3600:
        return f"{s:,.0f} s ({s / 3600:.2f} h)"
    if s >= 120:
        return f"{s:,.0f} s ({s / 60:.1f} min)"
    return f"{s:,.1f} s"


def _need(profile: Profile, section: str, key: str) -> Any:
    sec = profile.section(section)
    if sec is None or key not in sec:
        raise GateError(f"profile {profile.name} sets no [{section}] {key}")
    return sec[key]


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


def check_gpu_util(run: RunRecord, profile: Profile) -> Check:
    floor = float(_need(profile, "gpu_util", "min_pct"))
    mean = run.summary.get("gpu_util_mean")
    per = run.gpu_util_per_gpu()
    target = f"> {floor:g}% (NVML, embedding stages, every GPU)"
    if mean is None and not per:
        return Check("gpu_util", run.config, False, target,
                     "no GPU utilisation in the telemetry (summary gpu_util_mean is null and there "
                     "are no gpu_sample events)")
    problems = []
    vals = ([float(mean)] if mean is not None else []) + list(per.values())
    if any(not 0.0 <= v <= 100.0 for v in vals):
        problems.append("a utilisation outside 0..100% (broken measurement)")
    low = {g: u for g, u in per.items() if u <= floor}
    if mean is not None and float(mean) <= floor:
        problems.append(f"mean {float(mean):.1f}%")
    if low:
        problems.append("GPU " + ", ".join(f"{g}: {u:.1f}%" for g, u in low.items()))
    if per and run.n_gpus and len(per) < run.n_gpus:
        problems.append(f"samples from {len(per)} of {run.n_gpus} GPUs")
    per_txt = ", ".join(f"GPU {g} {u:.1f}%" for g, u in per.items()) or "no per-GPU samples"
    measured = (f"mean {float(mean):.1f}%" if mean is not None else "mean n/a") + f" ({per_txt})"
    return Check("gpu_util", run.config, not problems, target, measured, details=problems,
                 values={"gpu_util_mean": mean, "per_gpu": per})


def check_packing(run: RunRecord, profile: Profile) -> Check:
    floor = float(_need(profile, "packing", "min_efficiency"))
    eff = run.summary.get("packing_efficiency")
    target = f"> {100 * floor:g}% (real tokens / (batches x token budget))"
    if eff is None:
        return Check("packing", run.config, False, target,
                     "no packing efficiency in the telemetry summary (null)")
    eff = float(eff)
    if not 0.0 <= eff <= 1.0:
        return Check("packing", run.config, False, target,
                     f"{100 * eff:.1f}%, outside 0..100%: the measurement is broken",
                     values={"packing_efficiency": eff})
    return Check("packing", run.config, eff > floor, target, f"{100 * eff:.2f}%",
                 values={"packing_efficiency": eff})


def check_mfu(run: RunRecord, profile: Profile) -> Check:
    floor = float(_need(profile, "mfu", "min_esm"))
    mfu = run.summary.get("mfu_esm")
    target = f">= {100 * floor:g}% of the measured bf16 matmul peak (ESM-2 stage)"
    if mfu is None:
        return Check("mfu_esm", run.config, False, target, "no mfu_esm in the telemetry summary (null)")
    mfu = float(mfu)
    ok = 0.0 <= mfu <= 1.0 and mfu >= floor
    note = [] if 0.0 <= mfu <= 1.0 else ["outside 0..100%: broken measurement"]
    return Check("mfu_esm", run.config, ok, target, f"{100 * mfu:.1f}%", details=note,
                 values={"mfu_esm": mfu})


def check_scaling(single: RunRecord, multi: RunRecord, profile: Profile) -> Check:
    eff = float(_need(profile, "scaling", "min_efficiency"))
    n = multi.n_gpus
    need = eff * n
    ratio = single.wall_s / multi.wall_s if multi.wall_s > 0 else math.inf
    problems = []
    if single.reads != multi.reads:
        problems.append(f"the runs processed different workloads ({single.reads} vs {multi.reads} reads)")
    problems += _worker_trouble(multi)
    passed = ratio >= need and not problems
    values = {"ratio": ratio, "target": need, "n_gpus": n}
    details = list(problems)
    b1, bn = _busiest_worker_s(single), _busiest_worker_s(multi)
    if b1 and bn:   # where a shortfall comes from: the GPU work, or what does not divide by N
        values.update(work_ratio=b1 / bn, rest_single_s=single.wall_s - b1, rest_multi_s=multi.wall_s - bn)
        details.append(f"GPU work (busiest worker) {b1:.1f} s -> {bn:.1f} s ({b1 / bn:.2f}x); the rest of the "
                        f"wall time (process start, model loading, reading, writing, tail) "
                        f"{single.wall_s - b1:.1f} s -> {multi.wall_s - bn:.1f} s")
    return Check("scaling", multi.config, passed,
                 target=f"1-GPU / {n}-GPU wall time >= {need:.2f}x ({eff:g} x {n})",
                 measured=f"{ratio:.2f}x ({_fmt_s(single.wall_s)} / {_fmt_s(multi.wall_s)})",
                 details=details, values=values)


def _busiest_worker_s(run: RunRecord) -> float | None:
    busy = run.summary.get("busy_s_per_worker") or {}
    vals = [float(v) for v in busy.values() if v is not None]
    return max(vals) if vals else None


@dataclass
class V1Timing:
    """The v1.0 (or reference-engine) wall time this configuration is held against."""

    wall_s: float     # v1 time for the compared workload at this GPU count
    compare_to: str   # "projected" (our projection to v1_reads) or "actual" (our measured wall)
    how: str          # one line: where the figure comes from


def v1_from_known(profile: Profile, n_gpus: int) -> V1Timing:
    """A known v1.0 timing (e.g. 3.5 h on 2 GPUs for 1M reads), for ``n_gpus`` GPUs.

    Held against v1 at its best: on more GPUs than it was timed on, v1 is assumed to scale
    perfectly; on fewer, to be no slower than its timed figure. Either way the bar is higher for
    us, never lower.
    """
    sp = profile.section("speedup") or {}
    wall, gpus, reads = float(sp["v1_wall_s"]), int(sp["v1_gpus"]), int(sp["v1_reads"])
    at_n = wall * min(1.0, gpus / max(n_gpus, 1))
    how = f"known v1.0 timing {_fmt_s(wall)} on {gpus} GPU(s) for {reads:,} reads"
    if at_n != wall:
        how += f", assumed perfectly scaled to {n_gpus} GPUs"
    return V1Timing(at_n, "projected", how)


def v1_from_reference(reference: RunRecord, run: RunRecord) -> V1Timing:
    """The reference engine's wall time measured on a sub-sample, scaled to ``run``'s workload.

    scaled = fixed + (wall - fixed) x (run's ESM-2 tokens / sub-sample's tokens), where fixed
    is the reference run's start-up + model loading (not scaled); reads replace tokens when the
    telemetry lacks token counts. The reference ran on one GPU (or the CPU); for N GPUs it is
    assumed to scale perfectly (divided by N) — again the bar is never lowered.
    """
    t_ref, t_run = reference.esm_tokens, run.esm_tokens
    if t_ref and t_run:
        factor, unit = t_run / t_ref, f"ESM-2 tokens ({t_run:,.0f} / {t_ref:,.0f})"
    else:
        factor, unit = run.reads / max(reference.reads, 1), f"reads ({run.reads:,} / {reference.reads:,})"
    fixed = min(reference.fixed_s, reference.wall_s)
    scaled = fixed + (reference.wall_s - fixed) * factor
    n = max(run.n_gpus, 1)
    how = (f"reference engine measured {_fmt_s(reference.wall_s)} on {reference.reads:,} reads, "
           f"scaled by {unit} to {_fmt_s(scaled)}")
    if n > 1:
        how += f", / {n} GPUs"
    return V1Timing(scaled / n, "actual", how)


def check_speedup(run: RunRecord, v1: V1Timing, profile: Profile) -> Check:
    need = float(_need(profile, "speedup", "min_ratio"))
    if v1.compare_to == "projected":
        sp = profile.section("speedup") or {}
        ours = run.projected_wall_s(float(sp.get("v1_reads", MILLION)))
        ours_txt = f"{_fmt_s(ours)} (ours, projected to {int(sp.get('v1_reads', MILLION)):,} reads)"
    else:
        ours = run.wall_s
        ours_txt = f"{_fmt_s(ours)} (ours, {run.reads:,} reads)"
    ratio = v1.wall_s / ours if ours > 0 else math.inf
    return Check("speedup", run.config, ratio >= need, target=f">= {need:g}x over v1.0",
                 measured=f"{ratio:.2f}x = {_fmt_s(v1.wall_s)} (v1) / {ours_txt}",
                 details=[v1.how], values={"ratio": ratio, "v1_wall_s": v1.wall_s, "ours_s": ours})


def check_correctness(result: CompareResult, config: str, profile: Profile,
                      baseline_note: str = "") -> Check:
    """Frame and consensus agreement with the v1.0 outputs, plus bounded score deviations."""
    c = profile.section("correctness") or {}
    problems: list[str] = []
    parts: list[str] = []
    targets: list[str] = []
    for mode, key in (("frame", "min_frame_agreement"), ("consensus", "min_consensus_agreement")):
        floor = float(c.get(key, 0.99))
        targets.append(f"{mode} agreement >= {100 * floor:g}%")
        m = result.modes.get(mode)
        if m is None:
            problems.append(f"no {mode} comparison")
            continue
        problems += m.failures(floor)
        parts.append(f"{mode} {fmt_pct(m.agreement)} ({m.n_mismatch:,} of {m.n_both:,} differ, "
                     f"{m.only_v1:,} only in v1, {m.only_v2:,} only in v2)")
    frame = result.modes.get("frame")
    stats = frame.scores if frame is not None else None
    bounds = {"max_mean_abs_diff": ("mean |d|", "mean_abs", "<="),
              "max_abs_diff": ("max |d|", "max_abs", "<="),
              "min_share_within_001": ("share |d| <= 0.01", "share_within_001", ">=")}
    for key, (label, attr, op) in bounds.items():
        if key not in c:
            continue
        bound = float(c[key])
        targets.append(f"{label} {op} {bound:g}")
        if stats is None:
            problems.append(f"no score statistics for {label}")
            continue
        v = getattr(stats, attr)
        if (op == "<=" and v > bound) or (op == ">=" and v < bound):
            problems.append(f"{label} {v:.4g} violates {op} {bound:g}")
    if stats is not None:
        parts.append(f"score2 mean |d| {stats.mean_abs:.3g}, max |d| {stats.max_abs:.3g}, "
                     f"{100 * stats.share_within_001:.2f}% within 0.01")
    return Check("correctness", config, not problems, target="; ".join(targets),
                 measured="; ".join(parts) or "nothing compared",
                 details=problems + ([baseline_note] if baseline_note else []),
                 values={"compare": result.to_dict()})


def check_consistency(single: RunRecord, multi: RunRecord, profile: Profile) -> Check:
    """N-GPU outputs against the 1-GPU outputs of the same workload (should be identical)."""
    c = profile.section("consistency") or {}
    floor = float(c.get("min_agreement", 1.0))
    tol = float(c.get("max_abs_diff", 0.0))
    res = compare_dirs(single.outdir, multi.outdir)
    problems = res.failures(floor)
    worst = max((m.scores.max_abs for m in res.modes.values() if m.scores is not None), default=0.0)
    if worst > tol:
        problems.append(f"max |score2 difference| {worst:.3g} > {tol:g}")
    agree = ", ".join(f"{k} {fmt_pct(m.agreement)}" for k, m in res.modes.items())
    return Check("consistency", multi.config, not problems,
                 target=f"{multi.n_gpus}-GPU outputs = 1-GPU outputs (agreement >= {100 * floor:g}%, "
                        f"max |d| <= {tol:g})",
                 measured=f"{agree}; max |d| {worst:.3g}", details=problems,
                 values={"compare": res.to_dict()})


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
    "GateError", "Profile", "load_profile", "profiles_in", "select_profile",
    "gpu_configs", "RunRecord", "load_run", "Check", "check_wall_time", "check_gpu_util",
    "check_packing", "check_mfu", "check_scaling", "V1Timing", "v1_from_known",
    "v1_from_reference", "check_speedup", "check_correctness", "check_consistency",
    "restrict_outputs", "head_fasta", "fasta_ids",
]
