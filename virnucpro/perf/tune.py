"""`virnucpro tune`: measure the fast engine's settings on the present GPU and keep the best.

    virnucpro tune --models DIR                      # ~4 minutes on an H100 with ESM-2 3B
    virnucpro tune --models DIR --gpu-memory-gib 24  # rehearse a 24 GiB card (RTX 4090) on a larger one

What is swept, in this order (coordinate descent: each step keeps the values the steps before it
chose, and the step's current value is measured again beside the others):

  1. ESM-2 token budget (tokens per packed batch): fractions 1/4 .. 3/2 of the budget the memory
     rule gives (``engines/fast/budget.py``), up to what that rule allows. ESM-2 is ~94% of the GPU
     time, so this step decides most and comes first.
  2. DNABERT-S batch budget (nucleotides per batch, batch size x longest): 64 Ki .. 512 Ki.
  3. Input-loader processes, then 4. their prefetch (batches each keeps ready). They matter only
     where the GPU waits for input (io_wait), which depends on the host's CPUs.
  5. Precision, among those listed with --precisions (default fp16, bf16, and fp8 on GPUs with FP8
     tensor cores). Precision changes labels (bf16 measured ~99.1% label agreement against fp16's
     >= 99.9%; fp8 is opt-in until its fidelity holds), so it is measured and reported, but chosen
     only with --allow-precision-change (or set with --precision): never switched silently.

How noise is handled:

  - The engine and its models are loaded once; one unmeasured run warms it (kernels, allocator).
  - Every point runs the same short workload (synthetic reads from real genomes) R times
    (--repeats), round-robin over the step's points, so that a slow minute hits every point alike;
    its figure is the median of ESM-2 tokens per second of wall time (the whole engine run:
    DNABERT-S, loader and classifier included), its spread (max - min) / median is shown.
  - A fixed reference point (the defaults: the memory rule's budget, 262,144 nt, 2 loader
    processes, prefetch 4, the default precision) is measured at the start and again at the end,
    alternating with the chosen point; every figure is also given as a ratio against the
    reference's median, and the drift between the start and the end is reported (a warning above
    3%: the GPU or the host was not steady, rerun on an idle machine).
  - A step keeps its current value unless another beats it by more than --min-gain (default 1%)
    and by more than the noise (even the other's slowest repeat is faster than the current value's
    median): a difference inside the noise is no reason to leave the default.
  - A point whose batches ran out of GPU memory (the engine re-packs them at half the budget) is
    reported as ``oom`` and never chosen.

The chosen values go into a tuned file for this GPU model and memory size (``virnucpro.engines.tuned``;
``--no-apply`` only reports), which ``virnucpro predict`` then uses by default (run.json records
which file and values; an option given on its command line still wins; ``--no-tuned`` ignores
it). The table, tune.json, tune.tsv and a plot (matplotlib, if installed) go into --outdir.

The whole command stays within --max-seconds: after loading and the warm run it estimates the
sweep's time from the warm run and prints it; when it would not fit, the workload per point is
shortened (not below --min-point-seconds), then the repeats, and a step that would still overrun
is skipped (and says so).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from virnucpro import __version__
from virnucpro.errors import InputError

log = logging.getLogger("virnucpro.tune")

DRIFT_WARN = 0.03
POINT_SLACK = 1.15   # a point's time in the estimates: the reference run's x this (smaller budgets run slower)
TOKEN_FRACTIONS = (0.25, 0.5, 0.75, 1.0, 1.5)
DNA_BUDGETS = (65536, 131072, 262144, 524288)
LOADER_WORKERS = (1, 2, 4)
LOADER_PREFETCH = (2, 4, 8)
# --quick: the smallest grid that still runs every step (the CPU tests; a first look on a GPU)
QUICK_TOKEN_FRACTIONS = (0.5, 1.0)
QUICK_DNA_BUDGETS = (131072, 262144)
QUICK_LOADER_WORKERS = (0, 2)
QUICK_LOADER_PREFETCH = (2, 4)
STEPS = ("token_budget", "dna_budget", "loader_workers", "loader_prefetch", "precision")


@dataclass(frozen=True)
class Point:
    """One setting of everything swept."""
    token_budget: int
    dna_budget: int
    loader_workers: int
    loader_prefetch: int
    precision: str

    def values(self) -> dict:
        return asdict(self)


@dataclass
class Measured:
    """A point's repeats in one step."""
    step: str
    point: Point
    runs: list[dict] = field(default_factory=list)   # per repeat: wall_s, tokens_per_s, esm_s, dna_s, ...
    chosen: bool = False
    note: str = ""

    @property
    def oom(self) -> bool:
        return any(r["oom_retries"] for r in self.runs)

    @property
    def median(self) -> float:
        return statistics.median(r["tokens_per_s"] for r in self.runs) if self.runs else 0.0

    @property
    def spread(self) -> float:
        v = [r["tokens_per_s"] for r in self.runs]
        return (max(v) - min(v)) / self.median if len(v) > 1 and self.median else 0.0

    def row(self, reference: float | None) -> dict:
        runs = self.runs
        return {"step": self.step, **self.point.values(), "repeats": len(runs),
                "tokens_per_s_median": round(self.median, 1), "spread": round(self.spread, 4),
                "vs_reference": round(self.median / reference, 4) if reference else None,
                "wall_s_median": round(statistics.median(r["wall_s"] for r in runs), 3) if runs else None,
                "io_wait_s_median": round(statistics.median(r["io_wait_s"] for r in runs), 3) if runs else None,
                "peak_gpu_mem_gib": max((r["peak_gpu_mem_gib"] or 0 for r in runs), default=None) or None,
                "status": "oom" if self.oom else "ok", "chosen": self.chosen, "note": self.note,
                "tokens_per_s": [round(r["tokens_per_s"], 1) for r in runs]}


class Workload:
    """The short workload: kept frames of synthetic reads, and their plans per (token, DNA) budget."""

    def __init__(self, frames: list, n_reads: int):
        self.all_frames, self.n_reads_all = frames, n_reads
        self.frames = frames
        self.n_reads = n_reads
        self._plans: dict = {}

    def shorten(self, fraction: float) -> None:
        """Keep the frames of the first ``fraction`` of the reads (frames come in read order)."""
        fraction = min(1.0, max(fraction, 0.0))
        n = max(1, int(len(self.all_frames) * fraction))
        self.frames = self.all_frames[:n]
        self.n_reads = max(1, round(self.n_reads_all * fraction))
        self._plans.clear()

    @property
    def esm_tokens(self) -> int:
        return sum(len(f[3]) + 2 for f in self.frames)

    def plan(self, token_budget: int, dna_budget: int):
        from virnucpro.plan.planner import PlanBuilder
        k = (token_budget, dna_budget)
        if k not in self._plans:
            self._plans[k] = PlanBuilder.of(self.frames, token_budget, 8, dna_budget).snapshot()
        return self._plans[k]


class Sweep:
    """The measurements of one ``tune`` call."""

    def __init__(self, device: str, models, classifier, workload: Workload, base_config):
        self.device, self.models, self.clf, self.work = device, models, classifier, workload
        self.base_config = base_config            # EngineConfig (precision resolved)
        self.engines: dict = {}                   # precision -> FastEngine
        self.max_token_budget = 0
        self.measured: list[Measured] = []
        self.load_s: dict = {}
        self.skipped: list[str] = []

    # -- engines ---------------------------------------------------------------------------------
    def engine(self, precision: str):
        if precision not in self.engines:
            from virnucpro.engines.fast import FastEngine
            t = time.perf_counter()
            cfg = self.base_config.replace(precision=precision)
            self.engines[precision] = FastEngine(self.models, self.device, cfg, token_budget=self.max_token_budget,
                                                 measure_peak=False)
            self.load_s[precision] = round(time.perf_counter() - t, 2)
        return self.engines[precision]

    def drop_engine(self, precision: str) -> None:
        if self.engines.pop(precision, None) is not None:
            import gc
            gc.collect()
            if self.device.startswith("cuda"):
                import torch
                torch.cuda.empty_cache()

    # -- one run ---------------------------------------------------------------------------------
    def run_once(self, p: Point) -> dict:
        """The workload once through the engine at ``p``: its wall time and figures."""
        import torch
        from virnucpro.core.telemetry import Telemetry
        eng = self.engine(p.precision)
        eng.loader_workers, eng.loader_prefetch = p.loader_workers, p.loader_prefetch
        prep = self.work.plan(p.token_budget, p.dna_budget)
        cuda = self.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats(eng.device)
        t = time.perf_counter()
        totals = eng.run(prep, self.clf, Telemetry(), iter(range(len(prep.plan.units))), lambda *a: None)
        wall = time.perf_counter() - t
        return {"wall_s": round(wall, 4), "esm_tokens": int(totals["esm_tokens"]),
                "tokens_per_s": totals["esm_tokens"] / wall if wall else 0.0,
                "esm_s": round(totals["esm_s"], 4), "dna_s": round(totals["dna_s"], 4),
                "io_wait_s": round(totals["io_wait_s"], 4), "oom_retries": int(totals.get("oom_retries", 0)),
                "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated(eng.device) / 2**30, 2) if cuda else None}

    def measure(self, step: str, points: list[Point], repeats: int) -> list[Measured]:
        """Each point ``repeats`` times, round-robin over the points."""
        ms = [Measured(step, p) for p in points]
        for _ in range(repeats):
            for m in ms:
                m.runs.append(self.run_once(m.point))
        self.measured.extend(ms)
        return ms


def _budget_grid(default: int, most: int, fractions) -> list[int]:
    """Token budgets: ``fractions`` of ``default``, multiples of 1,024, at most ``most``, >= 2,048."""
    out = sorted({max(2048, int(default * f) // 1024 * 1024) for f in fractions})
    return [b for b in out if b <= max(most, default)]


def _pick(ms: list[Measured], incumbent: Point, min_gain: float) -> tuple[Measured, str]:
    """The step's winner: the best median among points that did not run out of memory, if it beats
    the incumbent by more than ``min_gain`` and by more than the noise (even its slowest repeat is
    faster than the incumbent's median); else the incumbent. (winner, reason)."""
    inc = next(m for m in ms if m.point == incumbent)
    ok = [m for m in ms if not m.oom]
    if not ok:
        return inc, "every point ran out of memory: kept"
    best = max(ok, key=lambda m: m.median)
    if best is inc:
        return inc, "best"
    if inc.oom or not inc.median:
        return best, "best (the current value ran out of memory)"
    gain = best.median / inc.median - 1
    if gain <= min_gain:
        return inc, f"kept: the best ({gain:+.1%}) is within --min-gain {min_gain:.0%}"
    if min(r["tokens_per_s"] for r in best.runs) <= inc.median:
        return inc, f"kept: the best ({gain:+.1%}) is within the noise (its slowest repeat is not faster)"
    return best, f"{gain:+.1%} over the current value"


def _confirmed(defaults: Measured, chosen: Measured, min_gain: float) -> tuple[bool, str]:
    """Do the chosen values beat the defaults when the two alternate at the end (the same minutes, the
    same repeats)? Each step's choice was made against its own incumbent; their sum must still show
    as more than ``min_gain`` side by side, else the defaults are kept. (On an H100 posing as a 24 GiB
    card a token budget chosen at +1.3% in its step measured 1.005x at the end: noise.)"""
    if not defaults.median:
        return False, "the defaults measured nothing at the end: kept"
    ratio = chosen.median / defaults.median
    if ratio <= 1 + min_gain:
        return False, (f"the chosen values measured {ratio:.3f}x the defaults side by side at the end "
                       f"(not more than --min-gain {min_gain:.0%}): the defaults kept")
    return True, f"confirmed side by side: {ratio:.3f}x the defaults"


def run_tune(args) -> dict:
    """The whole command; returns what tune.json holds."""
    import torch
    from virnucpro.engines.config import EngineConfig
    from virnucpro.engines.fast.budget import default_token_budget, memory_token_budget
    from virnucpro.engines.tuned import device_key, write_tuned
    from virnucpro.io.records import Record
    from virnucpro.models import layout
    from virnucpro.models.classifier import load_classifier
    from virnucpro.options import resolve_device, tuned_dir
    from virnucpro.plan.planner import DNA_NT_BUDGET
    from virnucpro.prep.frames import chunk_and_translate
    from virnucpro.workloads.reads import simulate_reads

    t_start = time.perf_counter()
    say = (lambda line: print(line, flush=True))
    out = Path(args.outdir)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o/--outdir {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    from virnucpro.core.telemetry import setup_logging
    setup_logging(out / "tune.log")   # every run's batches as TELEMETRY lines; warnings to the terminal too
    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    if args.repeats < 1:
        raise InputError(f"--repeats must be >= 1, not {args.repeats}")
    if args.reads < 1:
        raise InputError(f"--reads must be >= 1, not {args.reads}")
    key = device_key(device, args.gpu_memory_gib)
    config: EngineConfig = getattr(args, "engine_config", None) or EngineConfig(precision=args.precision or "auto",
                                                                               gpu_memory_gib=args.gpu_memory_gib)
    config = config.resolved("cuda" if cuda else "cpu")
    default_precision = EngineConfig().resolved("cuda" if cuda else "cpu").precision
    base_precision = config.precision   # --precision P, else the device's default
    precisions = _precisions(args, device, base_precision)
    if args.allow_precision_change and len(precisions) < 2:
        raise InputError("--allow-precision-change needs --precisions with two or more precisions")
    models = layout.resolve(args.models, args.chunk_length, args.esm, args.dnabert, None, fingerprint=False)
    clf, _ = load_classifier(models.classifier, args.chunk_length, True)
    say(f"tune: {key.describe()} [{device}], models {models.esm}")

    # the workload: synthetic reads from real genomes, chunked and translated once
    records = [Record(i, s) for i, s in simulate_reads(args.reads, args.seed)]
    _, frames = chunk_and_translate(records, args.chunk_length, "original")
    if not frames:
        raise InputError(f"{args.reads} reads gave no kept frame: give more --reads")
    work = Workload(frames, len(records))

    # the grid
    quick = args.quick
    esm = layout.esm_weights_path(Path(models.esm))
    default_budget = default_token_budget(device, models.esm, precision=base_precision, gpu_memory_gib=args.gpu_memory_gib)
    most = memory_token_budget(device, models.esm, precision=base_precision, gpu_memory_gib=args.gpu_memory_gib)
    grid = {
        "token_budget": _budget_grid(default_budget, most, QUICK_TOKEN_FRACTIONS if quick else TOKEN_FRACTIONS),
        "dna_budget": list(QUICK_DNA_BUDGETS if quick else DNA_BUDGETS),
        "loader_workers": sorted({w for w in (QUICK_LOADER_WORKERS if quick else LOADER_WORKERS)
                                  if w <= max(1, (os.cpu_count() or 2) - 1)}),
        "loader_prefetch": list(QUICK_LOADER_PREFETCH if quick else LOADER_PREFETCH),
        "precision": precisions,
    }
    reference = Point(default_budget, DNA_NT_BUDGET, config.loader_workers, config.loader_prefetch, base_precision)
    sweep = Sweep(device, models, clf, work, config)
    sweep.max_token_budget = max(grid["token_budget"] + [default_budget])

    # load and warm (one unmeasured run of the reference point)
    say(f"loading the models ({base_precision}) and warming up on {work.n_reads:,} reads "
        f"({len(work.frames):,} kept frames, {work.esm_tokens:,} ESM-2 tokens) ...")
    sweep.engine(base_precision)
    warm = sweep.run_once(reference)
    t_point = warm["wall_s"]
    repeats = args.repeats

    # the plan and its estimate: measurements of the reference (start, and end beside the chosen point)
    def points_per_step(name: str) -> int:
        values = grid[name]
        return len(values) + (0 if getattr(reference, name) in values else 1)

    n_points = 1 + sum(points_per_step(s) for s in STEPS if s != "precision") + 2 + max(0, len(precisions) - 1)
    reloads = max(0, len(precisions) - 1) * sweep.load_s[base_precision]   # each other precision loads once

    def estimate(per_point: float, reps: int) -> float:
        return POINT_SLACK * n_points * reps * per_point + reloads

    left = args.max_seconds - (time.perf_counter() - t_start)
    fraction = 1.0
    if estimate(t_point, repeats) > left:
        fraction = max((left - reloads) / (POINT_SLACK * n_points * repeats * t_point), 0.0)
        if fraction * t_point < args.min_point_seconds:
            fraction = min(1.0, args.min_point_seconds / t_point)
            while repeats > 1 and estimate(fraction * t_point, repeats) > left:
                repeats -= 1
    per_point = t_point * fraction
    if fraction < 1.0:   # the shorter workload once more: its plans warmed, and a warm engine's time
        work.shorten(fraction)
        per_point = sweep.run_once(reference)["wall_s"]
    est = estimate(per_point, repeats)
    say(f"estimated sweep: {n_points} points x {repeats} repeat(s) x ~{per_point:.1f} s"
        f"{f' + ~{reloads:.0f} s loading other precisions' if reloads else ''} = ~{est:.0f} s "
        f"(--max-seconds {args.max_seconds:.0f}: {left:.0f} s left); workload {work.n_reads:,} reads, "
        f"{work.esm_tokens:,} ESM-2 tokens a point" + (" (shortened to fit)" if fraction < 1.0 else ""))
    if est > left:
        say("warning: the estimate exceeds --max-seconds; steps that would overrun it are skipped")

    # 0. the reference at the start
    start = sweep.measure("reference-start", [reference], repeats)[0]
    start.note = "the defaults, before the sweep"
    incumbent = reference
    step_notes: dict = {}
    end_reserve = 2 * repeats * per_point * POINT_SLACK

    # 1-4: one setting at a time, the current values kept for the others
    for name in STEPS:
        if name == "precision":
            break
        if name == "loader_prefetch" and incumbent.loader_workers == 0:
            step_notes[name] = "not measured: no loader processes, so no prefetch"
            say(f"  {name}: not measured (no loader processes)")
            continue
        values = sorted(set(grid[name]) | {getattr(incumbent, name)})
        pts = [replace(incumbent, **{name: v}) for v in values]
        need = POINT_SLACK * len(pts) * repeats * per_point
        if (time.perf_counter() - t_start) + need + end_reserve > args.max_seconds:
            step_notes[name] = "skipped: --max-seconds"
            sweep.skipped.append(name)
            say(f"  {name}: skipped (it would overrun --max-seconds)")
            continue
        ms = sweep.measure(name, pts, repeats)
        win, why = _pick(ms, incumbent, args.min_gain)
        win.chosen, win.note = True, why
        step_notes[name] = why
        incumbent = win.point
        say(f"  {name}: " + ", ".join(f"{getattr(m.point, name)}{'*' if m.chosen else ''} "
                                      f"{m.median:,.0f}{' oom' if m.oom else ''}" for m in ms) + f" tok/s -> {why}")

    # the end: the reference and the chosen point alternating (the drift, and chosen vs defaults
    # side by side in the same minutes)
    end_pts = [reference] if incumbent == reference else [reference, incumbent]
    end = sweep.measure("end", end_pts, repeats)
    end_ref = end[0]
    end_ref.note = "the defaults, after the sweep"
    if len(end) > 1:
        end[1].note = "the chosen values, alternating with the defaults"
        ok, why = _confirmed(end_ref, end[1], args.min_gain)
        step_notes["confirm"] = why
        say(f"  end: {why}")
        if not ok:
            end[1].note += f" ({why})"
            incumbent = reference

    ref_median = statistics.median([start.median, end_ref.median])   # every figure's ratio is to this

    # 5: precision (other precisions load their own engine; measured as a ratio to the reference)
    precision_rows: list[Measured] = []
    others = [p for p in precisions if p != incumbent.precision]
    if others:
        need = POINT_SLACK * len(others) * repeats * per_point + reloads
        if (time.perf_counter() - t_start) + need > args.max_seconds:
            step_notes["precision"] = "skipped: --max-seconds"
            sweep.skipped.append("precision")
            say("  precision: skipped (it would overrun --max-seconds)")
        else:
            same = next(m for m in end if m.point == incumbent)
            if not _fits_two(device, esm, args.gpu_memory_gib):   # (the end reference is measured already)
                sweep.drop_engine(incumbent.precision)
            for p in others:
                ms = sweep.measure("precision", [replace(incumbent, precision=p)], repeats)
                precision_rows.extend(ms)
                sweep.drop_engine(p)
            cands = [same] + precision_rows
            best = max((m for m in cands if not m.oom), key=lambda m: m.median, default=same)
            if args.allow_precision_change and best is not same and best.median > same.median * (1 + args.min_gain):
                best.chosen, best.note = True, f"{best.median / same.median - 1:+.1%}: chosen (--allow-precision-change)"
                incumbent = best.point
                step_notes["precision"] = best.note
            else:
                for m in precision_rows:
                    m.note = (f"{m.median / same.median - 1:+.1%} vs {same.point.precision}: reported, not chosen "
                              "(precision changes labels; --allow-precision-change)") if same.median else "reported"
                step_notes["precision"] = f"{incumbent.precision} kept"
            say("  precision: " + ", ".join(f"{m.point.precision} {m.median:,.0f} ({m.median / ref_median:.3f}x ref)"
                                            for m in cands) + f" -> {step_notes['precision']}")

    # figures
    drift = (end_ref.median - start.median) / start.median if start.median else 0.0
    if incumbent == reference:
        gain = 1.0
    elif len(end) > 1 and incumbent == end[1].point:   # side by side with the reference, at the end
        gain = end[1].median / end_ref.median if end_ref.median else 1.0
    else:   # another precision was chosen: its step's median against the reference's
        chosen_m = next(m for m in reversed(sweep.measured) if m.point == incumbent)
        gain = chosen_m.median / ref_median if ref_median else 1.0
    rows = [m.row(ref_median) for m in sweep.measured]
    chosen_values = {"token_budget": incumbent.token_budget, "dna_budget": incumbent.dna_budget,
                     "loader_workers": incumbent.loader_workers, "loader_prefetch": incumbent.loader_prefetch,
                     # a precision only where the user asked for one: else predict keeps its default
                     "precision": incumbent.precision if (args.precision or incumbent.precision != base_precision)
                     else None}
    result = {
        "device": device, "key": key.to_json(), "gpu_memory_gib": args.gpu_memory_gib,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(),
        "virnucpro_version": __version__, "torch_version": torch.__version__, "command": sys.argv,
        "models": {"esm": str(models.esm), "dnabert": str(models.dnabert), "synthetic": bool(models.synthetic)},
        "workload": {"reads": work.n_reads, "frames": len(work.frames), "esm_tokens": work.esm_tokens,
                     "seed": args.seed, "chunk_length": args.chunk_length, "shortened_from_reads": args.reads},
        "repeats": repeats, "min_gain": args.min_gain, "quick": quick, "grid": grid,
        "default_precision": default_precision, "reference": reference.values(), "chosen": incumbent.values(),
        "values": chosen_values, "steps": step_notes, "skipped": sweep.skipped,
        "reference_start_tokens_per_s": round(start.median, 1), "reference_end_tokens_per_s": round(end_ref.median, 1),
        "drift": round(drift, 4), "drift_warning": abs(drift) > DRIFT_WARN,
        "chosen_vs_reference": round(gain, 4), "load_s": sweep.load_s, "warm": warm,
        "estimate_s": round(est, 1), "elapsed_s": round(time.perf_counter() - t_start, 1),
        "max_seconds": args.max_seconds, "rows": rows,
    }
    max_drift = args.max_drift
    if args.apply and abs(drift) > max_drift:
        result["not_written"] = (f"the reference drifted {drift:+.1%} (more than --max-drift {max_drift:.0%}) during "
                                 "the sweep: its choices are not trusted; rerun on an idle machine")
    elif args.apply:
        body = {"figures": {k: result[k] for k in ("reference_start_tokens_per_s", "reference_end_tokens_per_s",
                                                   "drift", "drift_warning", "chosen_vs_reference", "repeats",
                                                   "workload", "steps", "skipped", "grid", "reference")},
                "table": [{k: r[k] for k in ("step", *Point.__dataclass_fields__, "tokens_per_s_median", "spread",
                                             "vs_reference", "status", "chosen")} for r in rows],
                "date": result["date"], "virnucpro_version": __version__, "torch_version": torch.__version__,
                "command": sys.argv, "tune_json": str((out / "tune.json").resolve())}
        result["tuned_file"] = str(write_tuned(tuned_dir(), key, chosen_values, body))
    result["plot"] = write_plot(out / "tune.png", result)
    from virnucpro.core.files import atomic_write
    with atomic_write(out / "tune.json") as fh:
        fh.write(json.dumps(result, indent=2) + "\n")
    write_tsv(out / "tune.tsv", rows)
    return result


def _precisions(args, device: str, base: str) -> list[str]:
    """The precisions measured: --precisions, else the device's default and (on a GPU) bf16, and
    fp8 where the GPU has FP8 tensor cores; the run's own precision first."""
    from virnucpro.engines.config import PRECISIONS
    from virnucpro.models.esm2_fp8 import refuse_unsupported, supported
    fp8_problem = supported(device)
    if args.precisions:
        listed = [p.strip() for p in args.precisions.split(",") if p.strip()]
        bad = [p for p in listed if p not in PRECISIONS]
        if bad or not listed:
            raise InputError(f"--precisions {args.precisions!r}: a comma-separated list of {', '.join(PRECISIONS)}")
        if "fp8" in listed + [base]:
            refuse_unsupported(device)
    else:
        listed = (["fp16", "bf16"] + ([] if fp8_problem else ["fp8"])) if device.startswith("cuda") else ["fp32"]
    return [base] + [p for p in dict.fromkeys(listed) if p != base]


def _fits_two(device: str, esm_path: Path, gpu_memory_gib: float | None) -> bool:
    """Can a second engine load beside the first (the precision step)? On a GPU when the memory
    (or --gpu-memory-gib) holds two sets of weights with room for the batches; always on a CPU."""
    if not device.startswith("cuda"):
        return True
    import torch
    total = torch.cuda.get_device_properties(torch.device(device)).total_memory
    if gpu_memory_gib is not None:
        total = min(total, gpu_memory_gib * 2**30)
    used = torch.cuda.memory_allocated(torch.device(device))
    return total - used > 2 * esm_path.stat().st_size + 8 * 2**30


# -- output ----------------------------------------------------------------------------------------

COLUMNS = ("step", "token_budget", "dna_budget", "loader_workers", "loader_prefetch", "precision", "repeats",
           "tokens_per_s_median", "spread", "vs_reference", "wall_s_median", "io_wait_s_median",
           "peak_gpu_mem_gib", "status", "chosen", "note")


def write_tsv(path: Path, rows: list[dict]) -> None:
    from virnucpro.core.files import atomic_write
    with atomic_write(path) as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(COLUMNS + ("tokens_per_s",))
        for r in rows:
            w.writerow([r[c] if r[c] is not None else "" for c in COLUMNS] + [",".join(map(str, r["tokens_per_s"]))])


def table_lines(result: dict) -> list[str]:
    head = (f"{'step':16s} {'tokens':>7s} {'dna nt':>7s} {'wrk':>3s} {'pf':>2s} {'prec':4s} "
            f"{'tok/s (median)':>14s} {'spread':>6s} {'vs ref':>6s} {'peak GiB':>8s}  status")
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        mark = " *" if r["chosen"] else ""
        vs = f"{r['vs_reference']:.3f}" if r["vs_reference"] is not None else "-"
        mem = f"{r['peak_gpu_mem_gib']:.1f}" if r["peak_gpu_mem_gib"] else "-"
        spread = f"{r['spread']:.1%}" if r["repeats"] > 1 else "-"
        lines.append(f"{r['step']:16s} {r['token_budget']:>7d} {r['dna_budget']:>7d} {r['loader_workers']:>3d} "
                     f"{r['loader_prefetch']:>2d} {r['precision']:4s} {r['tokens_per_s_median']:>14,.0f} "
                     f"{spread:>6s} {vs:>6s} {mem:>8s}  {r['status']}{mark}")
    return lines


def summary_lines(result: dict) -> list[str]:
    v = result["values"]
    c = result["chosen"]
    lines = [f"reference (defaults) {result['reference_start_tokens_per_s']:,.0f} tok/s at the start, "
             f"{result['reference_end_tokens_per_s']:,.0f} at the end: drift {result['drift']:+.1%}"]
    if result["drift_warning"]:
        lines.append(f"warning: the reference drifted more than {DRIFT_WARN:.0%} during the sweep: the GPU or the host "
                     "was not steady (another job, clocks, heat); rerun on an idle machine before trusting small gains")
    lines.append(f"chosen: token budget {c['token_budget']:,}, DNABERT-S budget {c['dna_budget']:,} nt, "
                 f"{c['loader_workers']} loader process(es), prefetch {c['loader_prefetch']}, precision {c['precision']}"
                 f"{'' if v['precision'] else ' (predict keeps its default)'}: {result['chosen_vs_reference']:.3f}x "
                 "the defaults' tokens/s")
    if result["skipped"]:
        lines.append(f"skipped for time (--max-seconds {result['max_seconds']:.0f}): {', '.join(result['skipped'])}")
    lines.append(f"elapsed {result['elapsed_s']:.0f} s (estimated {result['estimate_s']:.0f} s for the sweep)")
    return lines


def write_plot(path: Path, result: dict) -> str | None:
    """tokens/s per swept value, one panel per step (median, min-max bar, reference line, the chosen
    value marked); None (and a note) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed: no plot (pip install matplotlib)", flush=True)
        return None
    steps = [s for s in STEPS if any(r["step"] == s for r in result["rows"])]
    if not steps:
        return None
    ref = statistics.median([result["reference_start_tokens_per_s"], result["reference_end_tokens_per_s"]])
    fig, axes = plt.subplots(1, len(steps), figsize=(3.2 * len(steps), 3.2), squeeze=False)
    for ax, s in zip(axes[0], steps):
        rows = [r for r in result["rows"] if r["step"] == s]
        if s == "precision":   # beside the default precision's run at the same settings (measured at the end)
            same = {k: result["chosen"][k] for k in Point.__dataclass_fields__ if k != "precision"}
            rows = [r for r in result["rows"] if r["step"] == "end" and r["precision"] == result["reference"]["precision"]
                    and all(r[k] == v for k, v in same.items())][-1:] + rows
        xs = list(range(len(rows)))
        med = [r["tokens_per_s_median"] for r in rows]
        lo = [m - min(r["tokens_per_s"]) for m, r in zip(med, rows)]
        hi = [max(r["tokens_per_s"]) - m for m, r in zip(med, rows)]
        ax.errorbar(xs, med, yerr=[lo, hi], fmt="o-", capsize=3)
        for x, r in zip(xs, rows):
            if r["chosen"]:
                ax.plot([x], [r["tokens_per_s_median"]], "r*", markersize=14)
            if r["status"] == "oom":
                ax.annotate("oom", (x, r["tokens_per_s_median"]))
        ax.axhline(ref, color="grey", linestyle="--", linewidth=1, label="reference")
        ax.set_xticks(xs, [str(r[s]) for r in rows], rotation=30)
        ax.set_title(s.replace("_", " "))
        ax.set_ylabel("ESM-2 tokens/s (median)" if s == steps[0] else "")
    fig.suptitle(f"virnucpro tune: {result['key']['model']} ({result['key']['memory_gib']:g} GiB), "
                 f"drift {result['drift']:+.1%}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# -- the command -------------------------------------------------------------------------------------

def register(subparsers) -> None:
    p = subparsers.add_parser("tune", help="measure the fast engine's settings on this GPU and keep the best",
                              formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__)
    p.add_argument("--models", metavar="DIR", help="model directory, as predict's --models (real or synthetic "
                   "weights: the speed is the same)")
    p.add_argument("--esm", metavar="PT", help=argparse.SUPPRESS)
    p.add_argument("--dnabert", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("-c", "--chunk-length", type=int, choices=(300, 500), default=300,
                   help="chunk length of the workload (default: 300)")
    p.add_argument("--reads", type=int, default=None,
                   help="synthetic reads in the workload (default: 20000, 300 with --quick); shortened to fit "
                   "--max-seconds")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic reads (default: 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--gpu-memory-gib", type=float, default=None,
                   help="behave as a GPU with this much memory (e.g. 24: an RTX 4090 rehearsed on an H100): the "
                   "budgets are sized and allocations capped so, and the tuned file is keyed by this size")
    p.add_argument("--precision", choices=("fp16", "bf16", "fp32", "fp8"), default=None,
                   help="sweep at this precision and record it in the tuned file (default: the device's, fp16 on a "
                   "GPU; the tuned file then leaves predict's default alone)")
    p.add_argument("--precisions", default=None, metavar="LIST",
                   help="precisions measured in the last step (default: fp16,bf16 on a GPU, and fp8 where it has FP8 "
                   "tensor cores; fp32 on a CPU)")
    p.add_argument("--allow-precision-change", action="store_true",
                   help="let the last step choose another precision than the default (it changes labels: bf16 "
                   "measured ~99.1%% label agreement); without it the others are only reported")
    p.add_argument("--repeats", type=int, default=None, help="runs of each point; its figure is their median "
                   "(default: 3, 1 with --quick; fewer when --max-seconds needs it)")
    p.add_argument("--min-gain", type=float, default=0.01,
                   help="a step leaves its current value only for a median this much better (default: 0.01)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="the whole command's time budget (default: 240; 60 with --quick)")
    p.add_argument("--min-point-seconds", type=float, default=None,
                   help="a point's run is not shortened below this (default: 2.0 on a GPU, 0.2 on a CPU)")
    p.add_argument("--quick", action="store_true",
                   help="two values a step, one repeat, 300 reads: a first look, which writes no tuned file unless "
                        "--apply is given (on a GPU its short runs are dominated by start-up: on an H100 it picked "
                        "no loader processes at 1.49x, a choice a real run would regret)")
    p.add_argument("--max-drift", type=float, default=DRIFT_WARN, metavar="FRACTION",
                   help="the largest drift of the reference point between the sweep's start and end for which "
                        "the tuned file is written (default 0.03: beyond it the machine was not steady)")
    p.add_argument("-o", "--outdir", default="tune-out", metavar="DIR",
                   help="where tune.json, tune.tsv, tune.png and tune.log go (default: tune-out)")
    p.add_argument("--out", dest="outdir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)   # bench's old spelling
    g = p.add_mutually_exclusive_group()
    g.add_argument("--apply", dest="apply", action="store_true", default=None,
                   help="write the chosen values to this GPU's tuned file, which predict then uses (the default "
                        "without --quick); not written when the reference drifted more than --max-drift")
    g.add_argument("--no-apply", dest="apply", action="store_false", help="only measure and report")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    from virnucpro.options import resolve_device
    args.device = resolve_device(args.device)
    cuda_like = args.device.startswith("cuda")
    if args.apply is None:
        args.apply = not args.quick
    if args.reads is None:
        args.reads = 300 if args.quick else 20000
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.max_seconds is None:
        args.max_seconds = 60.0 if args.quick else 240.0
    if args.min_point_seconds is None:
        args.min_point_seconds = 2.0 if cuda_like else 0.2
    result = run_tune(args)
    print()
    for line in table_lines(result):
        print(line)
    print()
    for line in summary_lines(result):
        print(line)
    out = Path(args.outdir)
    print(f"details: {out / 'tune.json'}, {out / 'tune.tsv'}" + (f", {result['plot']}" if result.get("plot") else ""))
    if result.get("tuned_file"):
        print(f"tuned file: {result['tuned_file']} (predict on this device uses it; --no-tuned ignores it)")
    else:
        why = result.get("not_written") or ("--quick without --apply" if args.quick else "--no-apply")
        print(f"tuned file: not written ({why})")
    return 0
