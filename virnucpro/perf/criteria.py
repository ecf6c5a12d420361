"""The performance gate's criteria: one check per criterion and configuration, each returning a
:class:`virnucpro.perf.gate.Check` (passed or not, or not measured; target and measurement as
text for the assertion message and the report; the raw numbers). perf_tests/ asserts on them;
tests/test_gate.py exercises every pass and fail path on crafted runs. docs/perf-gate.md says
what each criterion means for a user.

The gate grades the pipeline with figures it takes itself where it can: GPU utilisation from its
own NVML sampler (virnucpro.perf.sampler) over the embedding window read from the run's
telemetry timestamps; packing from the per-batch telemetry events, OOM retries included; CPU
time of the run's process tree. The pipeline's own figures are shown beside, and a disagreement
beyond a stated tolerance is reported (and fails the criterion when large).

One cohesive module (~490 lines): each criterion and the harness figures it reads, side by side.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from virnucpro.io.paths import CONSENSUS, PREDICTIONS
from virnucpro.perf.compare import CompareResult, compare_dirs, fmt_pct
from virnucpro.perf.gate import MILLION, Check, GateError, Profile, RunRecord, _fmt_s, _worker_trouble
from virnucpro.perf.sampler import Samples


# --------------------------------------------------------------------------------------------
# The harness's own figures of a run (telemetry timestamps + what the harness sampled)
# --------------------------------------------------------------------------------------------


def embedding_window(run: RunRecord) -> tuple[float, float] | None:
    """(start, end) on the run's clock: first batch's start to last batch's end (None when
    the run emitted no ``batch`` events, as the reference engine)."""
    batches = [e for e in run.events if e.get("event") == "batch"]
    if not batches:
        return None
    return (min(float(e["t"]) - float(e.get("dt") or 0.0) for e in batches),
            max(float(e["t"]) for e in batches))


def processing_window(run: RunRecord) -> tuple[float, float]:
    """(start, end) on the run's clock of the part that grows with the reads: from the moment
    the models were loaded (the last ``load_models`` stage or ``worker_start`` event) to the
    ``summary`` event, i.e. embedding, classifying and writing; process start-up, imports and
    model loading are left out alike for every engine."""
    ready = [float(e["t"]) for e in run.events
             if (e.get("event") == "stage" and e.get("stage") == "load_models")
             or e.get("event") == "worker_start"]
    end = float(run.summary.get("t", run.summary["wall_s"]))
    return (min(max(ready), end) if ready else 0.0), end


def _placed_samples(run: RunRecord, kind: str) -> tuple[Samples | None, str]:
    """The harness's samples of ``run`` when its ``kind`` ("cpu" or "gpu") samples can be placed on
    the run's clock: (Samples, "") or (None, why not measured)."""
    h = run.harness
    if h is None:
        return None, "the harness sampled nothing for this run"
    note, points = (h.cpu_note, h.cpu) if kind == "cpu" else (h.gpu_note, h.gpu)
    if note or not points:
        return None, note or ("no CPU samples" if kind == "cpu" else "no NVML samples")
    if run.clock_offset is None:
        return None, "the log's timestamps could not be read, so the window cannot be placed"
    return h, ""


def processing_cpu_s(run: RunRecord) -> tuple[float | None, str]:
    """CPU seconds of the whole process tree within the processing window, from the harness's
    samples: (seconds, "") or (None, why not measured)."""
    h, why = _placed_samples(run, "cpu")
    if h is None:
        return None, why
    t0, t1 = processing_window(run)
    c0, c1 = h.cpu_at(t0 + run.clock_offset), h.cpu_at(t1 + run.clock_offset)
    return (c1 - c0 if c0 is not None and c1 is not None else None), ""


def harness_gpu_util(run: RunRecord) -> tuple[dict[int, float] | None, str]:
    """Mean NVML utilisation per GPU as the harness sampled it over the embedding window
    (the processing window when there are no batch events): (per GPU, "") or (None, why)."""
    h, why = _placed_samples(run, "gpu")
    if h is None:
        return None, why
    t0, t1 = embedding_window(run) or processing_window(run)
    lo, hi = t0 + run.clock_offset, t1 + run.clock_offset
    per: dict[int, list[float]] = {}
    for t, g, u in h.gpu:
        if lo <= t <= hi:
            per.setdefault(g, []).append(u)
    if not per:
        return None, f"no NVML sample fell inside the {t1 - t0:.2f} s embedding window"
    return {g: sum(v) / len(v) for g, v in sorted(per.items())}, ""


def harness_packing(run: RunRecord, model: str = "esm2") -> tuple[float | None, dict[str, int]]:
    """Packing efficiency from the per-batch telemetry: sum of real tokens / sum of token
    budgets over ``model``'s batches, where each out-of-memory attempt (``oom`` event) adds its
    budget to the sum and no tokens (the work it did was thrown away and redone smaller).
    Returns (efficiency or None without batch events, the sums)."""
    batches = [e for e in run.events if e.get("event") == "batch" and e.get("model") == model]
    ooms = [e for e in run.events if e.get("event") == "oom" and e.get("model") == model]
    tokens = int(sum(int(e.get("tokens") or 0) for e in batches))
    budget = int(sum(int(e.get("budget") or 0) for e in batches))
    wasted = int(sum(int(e.get("budget") or 0) for e in ooms))
    sums = {"batches": len(batches), "tokens": tokens, "budget": budget, "oom_retries": len(ooms),
            "oom_budget": wasted}
    if not batches or budget + wasted <= 0:
        return None, sums
    return tokens / (budget + wasted), sums


# --------------------------------------------------------------------------------------------
# Criteria
# --------------------------------------------------------------------------------------------


def _sec(profile: Profile, name: str, precision: str | None) -> dict[str, Any]:
    return profile.section(name, precision) or {}


def _want(sec: dict[str, Any], profile: Profile, name: str, key: str) -> Any:
    if key not in sec:
        raise GateError(f"profile {profile.name} sets no [{name}] {key}")
    return sec[key]


def _disagreement(what: str, ours: float, theirs: float | None, tol: float, worst: float,
                  unit: str) -> tuple[list[str], list[str]]:
    """(problems, notes) from comparing the harness's figure with the pipeline's own."""
    if theirs is None:
        return [], [f"the pipeline reports no {what} of its own"]
    d = abs(ours - theirs)
    line = (f"the pipeline's own {what} {theirs:.4g}{unit} vs the harness's {ours:.4g}{unit}: "
            f"{d:.3g}{unit} apart")
    if d > worst:
        return [f"{line} > {worst:g}{unit} (one of the two measurements is wrong)"], []
    if d > tol:
        return [], [f"{line} > tolerance {tol:g}{unit}"]
    return [], [f"{line} (within {tol:g}{unit})"]


def check_gpu_util(run: RunRecord, profile: Profile) -> Check:
    """NVML utilisation as the harness sampled it (its own thread, outside the pipeline) over the
    embedding window read from the run's batch timestamps; every GPU above the floor. The
    pipeline's own figure (its sampler, inside the process under test) is shown beside; they must
    agree within max_disagreement_pct. Without NVML (a CPU run) the criterion is not measured."""
    name = "gpu_utilisation"
    sec = _sec(profile, name, run.precision)
    floor = float(_want(sec, profile, name, "min_pct"))
    tol, worst = float(sec.get("tolerance_pct", 5.0)), float(sec.get("max_disagreement_pct", 15.0))
    own = run.summary.get("gpu_util_mean")
    own_per = run.gpu_util_per_gpu()
    own_txt = "n/a" if own is None else f"{float(own):.1f}%"
    target = f"> {floor:g}% on every GPU (NVML sampled by the harness over the embedding window)"
    per, why = harness_gpu_util(run)
    if per is None:
        return Check(name, run.config, False, target,
                     f"not measured: {why}; the pipeline's own figure: {own_txt}", not_measured=True,
                     values={"pipeline_mean": own, "pipeline_per_gpu": own_per})
    mean = sum(per.values()) / len(per)
    problems: list[str] = []
    if any(not 0.0 <= v <= 100.0 for v in per.values()):
        problems.append("a utilisation outside 0..100% (broken measurement)")
    low = {g: u for g, u in per.items() if u <= floor}
    if low:
        problems.append("GPU " + ", ".join(f"{g}: {u:.1f}%" for g, u in low.items()))
    if run.n_gpus and len(per) < run.n_gpus:
        problems.append(f"samples from {len(per)} of {run.n_gpus} GPUs")
    if own is not None and not 0.0 <= float(own) <= 100.0:
        problems.append(f"the pipeline's own figure {float(own):.1f}% is outside 0..100% (broken)")
    bad, notes = _disagreement("mean utilisation", mean, None if own is None else float(own), tol, worst, " pts")
    win = embedding_window(run) or processing_window(run)
    measured = (f"harness mean {mean:.1f}% ({', '.join(f'GPU {g} {u:.1f}%' for g, u in per.items())}) over "
                f"{win[1] - win[0]:.1f} s; pipeline's own {own_txt}")
    return Check(name, run.config, not problems and not bad, target, measured,
                 details=problems + bad + notes,
                 values={"harness_mean": mean, "harness_per_gpu": per, "pipeline_mean": own,
                         "pipeline_per_gpu": own_per, "window_s": win[1] - win[0]})


def check_packing(run: RunRecord, profile: Profile) -> Check:
    """ESM-2 packing efficiency from the per-batch telemetry events, summed by the harness (OOM
    retries count their budget, no tokens); the pipeline's own figure (the plan's arithmetic) beside."""
    name = "packing_efficiency"
    sec = _sec(profile, name, run.precision)
    floor = float(_want(sec, profile, name, "min_efficiency"))
    tol, worst = float(sec.get("tolerance", 0.01)), float(sec.get("max_disagreement", 0.05))
    target = f"> {100 * floor:g}% (sum of ESM-2 batch tokens / sum of budgets, OOM retries included)"
    own = run.summary.get("packing_efficiency")
    eff, sums = harness_packing(run)
    if own is not None and not 0.0 <= float(own) <= 1.0:
        return Check(name, run.config, False, target,
                     f"the pipeline reports {100 * float(own):.1f}%, outside 0..100%: the measurement is broken",
                     values={"pipeline": float(own), "harness": eff, **sums})
    if eff is None:
        return Check(name, run.config, False, target,
                     "not measured: the run emitted no ESM-2 batch events "
                     f"(the pipeline's own figure: {'n/a' if own is None else f'{100 * float(own):.2f}%'})",
                     not_measured=True, values={"pipeline": own, **sums})
    problems = [] if eff > floor else [f"{100 * eff:.2f}% <= {100 * floor:g}%"]
    if not 0.0 <= eff <= 1.0:
        problems.append("tokens exceed budgets: broken batch telemetry")
    bad, notes = _disagreement("packing efficiency", eff, None if own is None else float(own), tol, worst, "")
    dna, dsums = harness_packing(run, "dnabert")
    info = [f"{sums['tokens']:,} tokens in {sums['batches']} batches of {sums['budget']:,} budget tokens"
            + (f", {sums['oom_retries']} OOM retries ({sums['oom_budget']:,} tokens of budget lost)"
               if sums["oom_retries"] else ", no OOM retry")]
    if dna is not None:
        info.append(f"DNABERT-S batches (information): {100 * dna:.1f}% of their padded size")
    own_txt = "n/a" if own is None else f"{100 * float(own):.2f}%"
    return Check(name, run.config, not problems and not bad, target,
                 f"harness {100 * eff:.2f}%; pipeline's own {own_txt}", details=problems + bad + notes + info,
                 values={"harness": eff, "pipeline": own, **sums})


def check_mfu(run: RunRecord, profile: Profile) -> Check:
    name = "mfu_esm"
    floor = float(_want(_sec(profile, name, run.precision), profile, name, "min_esm"))
    mfu = run.summary.get("mfu_esm")
    target = f">= {100 * floor:g}% of the measured bf16 matmul peak (ESM-2 stage)"
    if mfu is None:
        return Check(name, run.config, False, target, "no mfu_esm in the telemetry summary (null)")
    mfu = float(mfu)
    ok = 0.0 <= mfu <= 1.0 and mfu >= floor
    note = [] if 0.0 <= mfu <= 1.0 else ["outside 0..100%: broken measurement"]
    return Check(name, run.config, ok, target, f"{100 * mfu:.1f}%", details=note,
                 values={"mfu_esm": mfu})


def check_scaling(single: RunRecord, multi: RunRecord, profile: Profile) -> Check:
    eff = float(_want(_sec(profile, "scaling", multi.precision), profile, "scaling", "min_efficiency"))
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
    sp = profile.section("speedup_vs_v1") or {}
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


def check_speedup_vs_v1(run: RunRecord, profile: Profile) -> Check:
    """Our wall time projected to the v1.0 workload against the known v1.0 timing (the seed's
    3.5 h for 1M reads on 2x RTX 4090): a number from outside this package."""
    name = "speedup_vs_v1"
    sp = _sec(profile, name, run.precision)
    need = float(_want(sp, profile, name, "min_ratio"))
    v1 = v1_from_known(profile, run.n_gpus)
    reads = float(sp.get("v1_reads", MILLION))
    ours = run.projected_wall_s(reads)
    ratio = v1.wall_s / ours if ours > 0 else math.inf
    return Check(name, run.config, ratio >= need, target=f">= {need:g}x the known v1.0 timing",
                 measured=f"{ratio:.2f}x = {_fmt_s(v1.wall_s)} (v1.0) / {_fmt_s(ours)} (ours, projected "
                          f"to {int(reads):,} reads)",
                 details=[v1.how] + ([str(sp["note"])] if sp.get("note") else []),
                 values={"ratio": ratio, "v1_wall_s": v1.wall_s, "ours_s": ours})


def check_speedup_vs_reference(reference: RunRecord, run: RunRecord, profile: Profile,
                               same_reads: bool, repeats: Sequence[tuple[RunRecord, RunRecord]] = ()) -> Check:
    """This package's reference engine against the gated engine.

    Side by side (``same_reads``: both ran on the same input file in this session): the ratio of
    their processing windows (models loaded -> outputs written, RunRecord.processing_window), in
    CPU seconds of the process tree sampled by the harness (``basis = "cpu"``: robust on a shared
    machine, where waiting for a core inflates wall time) or in wall seconds (``basis = "wall"``).
    ``repeats``: the (reference, gated) pairs of the later rounds the harness ran interleaved
    (profile ``rounds``); the ratio judged is the median of the rounds' ratios, each round's two runs
    having shared the machine's load of their moment.
    On a sub-sample instead: the reference's wall time scaled by ESM-2 tokens (v1_from_reference)
    against our measured wall time.
    """
    name = "speedup_vs_reference"
    sec = _sec(profile, name, run.precision)
    need = float(_want(sec, profile, name, "min_ratio"))
    basis = str(sec.get("basis", "wall"))
    target = f">= {need:g}x the reference engine's speed"
    notes = [str(sec["note"])] if sec.get("note") else []
    if not same_reads:
        v1 = v1_from_reference(reference, run)
        ratio = v1.wall_s / run.wall_s if run.wall_s > 0 else math.inf
        return Check(name, run.config, ratio >= need, target,
                     f"{ratio:.2f}x = {_fmt_s(v1.wall_s)} (reference, scaled) / {_fmt_s(run.wall_s)} "
                     f"(ours, {run.reads:,} reads)", details=[v1.how] + notes,
                     values={"ratio": ratio, "basis": "wall-scaled", "reference_s": v1.wall_s,
                             "ours_s": run.wall_s})
    rounds = [_side_by_side(r, o) for r, o in [(reference, run), *repeats]]
    first = rounds[0]
    med = {k: _median([r[k] for r in rounds if r[k] is not None]) for k in first if k != "why"}
    many = len(rounds) > 1
    how = f"median of {len(rounds)} interleaved rounds" if many else "one round"
    details = [f"processing window (models loaded -> outputs written) in wall seconds ({how}): reference "
               f"{med['wall_ref']:.2f} s, ours {med['wall_run']:.2f} s ({med['wall_ratio']:.2f}x)"]
    if first["cpu_ratio"] is not None:
        details.append(f"in CPU seconds of the process tree (harness, {how}): reference {med['cpu_ref']:.2f} s, "
                       f"ours {med['cpu_run']:.2f} s ({med['cpu_ratio']:.2f}x)")
    if many:
        details.append("rounds, CPU seconds reference / ours = ratio (wall seconds of the windows): " + "; ".join(
            f"{_num(r['cpu_ref'])} / {_num(r['cpu_run'])} = {_num(r['cpu_ratio'])}x "
            f"({r['wall_ref']:.2f} / {r['wall_run']:.2f} s)" for r in rounds))
    details.append(f"whole runs, harness wall clock: reference {_fmt_s(reference.wall_s)}, "
                   f"ours {_fmt_s(run.wall_s)} (start-up and model loading included; round 1)")
    values = {"wall_ratio": med["wall_ratio"], "cpu_ratio": med["cpu_ratio"], "basis": basis,
              "reference_wall_s": med["wall_ref"], "ours_wall_s": med["wall_run"],
              "reference_cpu_s": med["cpu_ref"], "ours_cpu_s": med["cpu_run"], "rounds": rounds}
    if basis == "cpu":
        if first["cpu_ratio"] is None:
            return Check(name, run.config, False, target,
                         f"not measured: CPU time unavailable ({first['why'] or 'zero CPU time'})",
                         details=details + notes, not_measured=True, values=values)
        ratio = med["cpu_ratio"]
    else:
        ratio = med["wall_ratio"]
    values["ratio"] = ratio
    return Check(name, run.config, ratio >= need, target,
                 f"{ratio:.2f}x ({basis} seconds of the processing window, same {run.reads:,} reads, "
                 f"side by side{', ' + how if many else ''})", details=details + notes, values=values)


def _side_by_side(reference: RunRecord, run: RunRecord) -> dict[str, Any]:
    """One round of the side-by-side comparison: the two processing windows in wall and CPU seconds."""
    r0, r1 = processing_window(reference)
    o0, o1 = processing_window(run)
    wall_ref, wall_run = r1 - r0, o1 - o0
    cpu_ref, why_ref = processing_cpu_s(reference)
    cpu_run, why_run = processing_cpu_s(run)
    return {"wall_ref": wall_ref, "wall_run": wall_run,
            "wall_ratio": wall_ref / wall_run if wall_run > 0 else math.inf,
            "cpu_ref": cpu_ref, "cpu_run": cpu_run,
            "cpu_ratio": cpu_ref / cpu_run if cpu_ref is not None and cpu_run else None,
            "why": why_ref or why_run}


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


@dataclass
class Borderline:
    """Label disagreements split by how close both scores sit to the 0.5 decision boundary."""

    distance: float
    frames: int = 0                # frames whose labels differ
    frames_borderline: int = 0     # ... with both score2 within ``distance`` of 0.5
    chunks: int = 0                # chunks whose consensus differs
    chunks_borderline: int = 0     # ... with both chunk scores (best frame) within ``distance``
    examples: list[str] = field(default_factory=list)   # a few non-borderline ones


def borderline_counts(base: Path, run: Path, distance: float, examples: int = 5) -> Borderline:
    """Count the borderline disagreements between two output directories (frame ids matched
    exactly; a chunk's score is its best frame's score2, as its consensus is decided)."""
    from virnucpro.perf.compare import chunk_scores, read_consensus, read_frames

    out = Borderline(distance)
    f1, f2 = read_frames(Path(base) / PREDICTIONS), read_frames(Path(run) / PREDICTIONS)
    m = f1.drop_duplicates("id").merge(f2.drop_duplicates("id"), on="id", suffixes=("_1", "_2"))
    diff = m[m["virus_1"] != m["virus_2"]]
    near = ((diff["score2_1"] - 0.5).abs() <= distance) & ((diff["score2_2"] - 0.5).abs() <= distance)
    out.frames, out.frames_borderline = len(diff), int(near.sum())
    out.examples += [f"frame {r.id}: score2 {r.score2_1:.6g} -> {r.score2_2:.6g}"
                     for r in diff[~near.to_numpy()].head(examples).itertuples()]
    c1, c2 = read_consensus(Path(base) / CONSENSUS), read_consensus(Path(run) / CONSENSUS)
    cm = c1.drop_duplicates("id").merge(c2.drop_duplicates("id"), on="id", suffixes=("_1", "_2"))
    cdiff = cm[cm["virus_1"] != cm["virus_2"]]
    s1 = chunk_scores(f1).reindex(cdiff["id"]).to_numpy()
    s2 = chunk_scores(f2).reindex(cdiff["id"]).to_numpy()
    cnear = (abs(s1 - 0.5) <= distance) & (abs(s2 - 0.5) <= distance)   # NaN (no frame) -> False
    out.chunks, out.chunks_borderline = len(cdiff), int(cnear.sum())
    out.examples += [f"chunk {i}: best score2 {a:.6g} -> {b:.6g}"
                     for i, a, b, n in zip(cdiff["id"], s1, s2, cnear) if not n][:examples]
    return out


def check_correctness(result: CompareResult, config: str, profile: Profile,
                      baseline_note: str = "", borderline: Borderline | None = None,
                      precision: str | None = None) -> Check:
    """Frame and consensus agreement with the baseline outputs, bounded score deviations, and
    how many disagreements are borderline (both scores near 0.5): the non-borderline ones may not
    exceed max_non_borderline_share of the compared rows."""
    c = _sec(profile, "correctness", precision)
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
    values: dict[str, Any] = {"compare": result.to_dict()}
    if frame is not None:
        values["frame_agreement"] = frame.agreement
    if borderline is not None:
        allow = float(c.get("max_non_borderline_share", 0.0))
        targets.append(f"disagreements not borderline (a score beyond {borderline.distance:g} of 0.5) "
                       f"<= {100 * allow:g}% of rows")
        for mode, n, near in (("frame", borderline.frames, borderline.frames_borderline),
                              ("consensus", borderline.chunks, borderline.chunks_borderline)):
            m = result.modes.get(mode)
            rows = m.n_both if m is not None else 0
            parts.append(f"{mode} disagreements borderline: {near:,} of {n:,}")
            if n - near > allow * rows:
                problems.append(f"{mode}: {n - near:,} disagreement(s) not borderline (> {100 * allow:g}% "
                                f"of {rows:,})")
        problems += [f"not borderline: {e}" for e in borderline.examples]
        values["borderline"] = asdict(borderline)
    return Check("correctness", config, not problems, target="; ".join(targets),
                 measured="; ".join(parts) or "nothing compared",
                 details=problems + ([baseline_note] if baseline_note else []), values=values)


def check_consistency(single: RunRecord, multi: RunRecord, profile: Profile) -> Check:
    """N-GPU outputs against the 1-GPU outputs of the same workload (should be identical)."""
    c = _sec(profile, "consistency", multi.precision)
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
                 values={"compare": res.to_dict(), "max_abs_diff": worst})
