"""The gate's report: ``<gate-out>/report.md`` with a pass/fail table per criterion and
configuration, what was run on what, and PNG plots (throughput and GPU utilisation over time,
per-stage time, scaling against ideal). A plot whose data are absent is skipped and the report
says why. ``results.json`` beside it holds every number.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from gate_harness import REFERENCE, GateSession
from virnucpro.perf.gate import RunRecord

ICON = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "skip"}


def write_report(gs: GateSession) -> Path:
    gs.out.mkdir(parents=True, exist_ok=True)
    runs = {k: o.record for k, o in gs.runs.items() if o.record is not None}
    plots, missing = _plots(gs, runs)
    lines = _header(gs, runs) + _table(gs) + _details(gs) + _runs_table(gs, runs)
    lines += ["", "## Plots", ""]
    lines += [f"![{title}]({name})\n" for name, title in plots]
    lines += [f"- {title}: not drawn — {why}" for title, why in missing]
    path = gs.out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (gs.out / "results.json").write_text(json.dumps(_results_doc(gs, runs), indent=2, default=str) + "\n")
    return path


def _verdict(gs: GateSession) -> str:
    outcomes = [r["outcome"] for r in gs.results if r["test"] != "test_benchmark_wall_time"]
    if any(o in ("failed", "error") for o in outcomes):
        return "FAIL"
    if not any(o == "passed" for o in outcomes):
        return "NOT RUN (every criterion skipped)"
    return "PASS" if all(o == "passed" for o in outcomes) else "PASS (with skipped criteria)"


def _header(gs: GateSession, runs: dict[str, RunRecord]) -> list[str]:
    w = gs._workload_info or {}
    models = gs._models or gs.options.get("models") or "(not resolved)"
    synthetic = next((r.manifest.get("synthetic") for r in runs.values()), None)
    fps = next(((r.manifest.get("models") or {}).get("fingerprints") for r in runs.values()), None)
    gpus = f"{gs.detected} x {gs.gpu_name}" if gs.detected else "no CUDA GPU"
    lines = [
        f"# Performance gate report — {_verdict(gs)}", "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %z')}; host {platform.node()} ({platform.platform()})",
        f"- profile: **{gs.profile.name}** ({gs.profile.path.name}, selected by {gs.why}) — "
        f"{gs.profile.data.get('description', '')}",
        f"- hardware: {gpus}; configurations: {', '.join(c.config for c in gs.cases)}",
        f"- workload: {w.get('path', '(not resolved)')} ({w.get('source', '?')}"
        + (f", {w.get('reads'):,} reads, seed {w.get('seed')}, {w.get('length_profile')} lengths" if w.get("reads") else "")
        + ")",
        f"- models: {models}" + (" — **SYNTHETIC random weights** (labels are not biology)" if synthetic else "")
        + (f"; fingerprints {fps}" if fps else ""),
        f"- engine {gs.profile.data['run']['engine']}, chunk length {gs.chunk_length}",
    ]
    lines += [f"- note: {n}" for n in dict.fromkeys(gs.notes)]
    return lines


def _criteria_rows(gs: GateSession) -> list[dict[str, Any]]:
    """Results of criterion tests; the benchmark recorder shows only when it failed."""
    return [r for r in gs.results
            if r["test"] != "test_benchmark_wall_time" or r["outcome"] in ("failed", "error")]


def _table(gs: GateSession) -> list[str]:
    configs = [c.config for c in gs.cases]
    rows = _criteria_rows(gs)
    crits = list(dict.fromkeys(r["criterion"] for r in rows))
    cell: dict[tuple[str, str], dict[str, Any]] = {(r["criterion"], r["config"]): r for r in rows}
    out = ["", "## Criteria", "", "| criterion | " + " | ".join(configs) + " |",
           "|---|" + "---|" * len(configs)]
    for c in crits:
        row = []
        for cfg in configs:
            r = cell.get((c, cfg))
            if r is None:
                row.append("—")
            else:
                row.append(f"**{ICON.get(r['outcome'], r['outcome'])}** "
                           + _esc(r.get("measured") or r.get("reason") or ""))
        out.append(f"| {c} | " + " | ".join(row) + " |")
    return out


def _details(gs: GateSession) -> list[str]:
    out = ["", "## Details", ""]
    for r in _criteria_rows(gs):
        head = f"- **{r['criterion']} [{r['config']}] {ICON.get(r['outcome'], r['outcome'])}**"
        if r.get("target"):
            head += f": target {r['target']}; measured {r['measured']}"
        elif r.get("reason"):
            head += f": {r['reason']}"
        out.append(_esc(head))
        out += [f"  - {_esc(d)}" for d in r.get("details") or []]
    return out


def _runs_table(gs: GateSession, runs: dict[str, RunRecord]) -> list[str]:
    out = ["", "## Runs", "",
           "| run | wall s | reads | chunks | frames | ESM-2 tok/s | packing | GPU util | MFU | stages (s) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in runs.items():
        s = r.summary
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r.stages.items())
        out.append(f"| {key} | {r.wall_s:.1f} | {s.get('reads')} | {s.get('chunks')} | {s.get('frames')} | "
                   f"{_num(s.get('esm_tokens_per_s'))} | {_pct(s.get('packing_efficiency'))} | "
                   f"{_num(s.get('gpu_util_mean'), '%')} | {_pct(s.get('mfu_esm'))} | {stages} |")
    for key, o in gs.runs.items():
        if o.record is None:
            out.append(f"| {key} | failed: {_esc(o.error or '')} | | | | | | | | |")
    cmds = [(k, o.command) for k, o in gs.runs.items() if o.command]
    if cmds:
        out += ["", "Commands (as a user runs them):", ""]
        out += [f"- {k}: `{' '.join(c)}`" for k, c in cmds]
    return out


def _results_doc(gs: GateSession, runs: dict[str, RunRecord]) -> dict[str, Any]:
    return {"verdict": _verdict(gs), "profile": gs.profile.name, "profile_data": gs.profile.data,
            "selected_by": gs.why, "gpus": {"count": gs.detected, "name": gs.gpu_name},
            "workload": gs._workload_info, "notes": gs.notes, "results": gs.results,
            "runs": {k: {"wall_s": r.wall_s, "summary": r.summary, "outdir": str(r.outdir)}
                     for k, r in runs.items()}}


def _esc(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _num(v: Any, unit: str = "") -> str:
    return "n/a" if v is None else f"{float(v):,.1f}{unit}"


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f}%"


# ------------------------------------------------------------------------------------ plots

def _plots(gs: GateSession, runs: dict[str, RunRecord]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Draw what the data allow; returns ([(file, title)], [(title, why not drawn)])."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], [("all plots", "matplotlib is not installed (pip install 'virnucpro[test]')")]
    gated = {k: r for k, r in runs.items() if k != REFERENCE}
    drawn, missing = [], []
    for fn, name, title in ((_plot_throughput, "throughput.png", "Throughput over time"),
                            (_plot_gpu_util, "gpu_util.png", "GPU utilisation over time"),
                            (_plot_stages, "stages.png", "Time per stage"),
                            (_plot_scaling, "scaling.png", "Scaling vs ideal")):
        why = fn(plt, gs, gated, gs.out / name, title)
        if why is None:
            drawn.append((name, title))
        else:
            missing.append((title, why))
        plt.close("all")
    return drawn, missing


def _plot_throughput(plt, gs, runs, path: Path, title: str) -> str | None:
    series = {}
    for key, r in runs.items():
        batches = [e for e in r.events if e.get("event") == "batch" and e.get("tokens")]
        for model in sorted({str(e.get("model", "?")) for e in batches}):
            spans = [(float(e["t"]) - float(e.get("dt") or 0.0), float(e["t"]), float(e["tokens"]))
                     for e in batches if str(e.get("model", "?")) == model]
            series[f"{key} {model}"] = _binned_rate(spans)
    if not series:
        return "no per-batch telemetry ('batch' events carry tokens; the reference engine emits none)"
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label)
    ax.set(xlabel="time since start (s)", ylabel="tokens / s", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None


def _binned_rate(spans: list[tuple[float, float, float]], n_bins: int = 60) -> tuple[list[float], list[float]]:
    """Tokens per second in equal time bins: each batch's tokens are spread evenly over its
    [start, end] (a batch without dt counts at its end). Concurrent workers add up."""
    if not spans:
        return [], []
    t0, t1 = min(a for a, _, _ in spans), max(b for _, b, _ in spans)
    width = max((t1 - t0) / n_bins, 1e-3)
    sums = [0.0] * n_bins
    for a, b, tok in spans:
        if b - a <= 0:
            sums[min(int((b - t0) / width), n_bins - 1)] += tok
            continue
        first, last = int((a - t0) / width), min(int((b - t0) / width), n_bins - 1)
        for i in range(first, last + 1):
            lo, hi = max(a, t0 + i * width), min(b, t0 + (i + 1) * width)
            if hi > lo:
                sums[i] += tok * (hi - lo) / (b - a)
    return [t0 + (i + 0.5) * width for i in range(n_bins)], [v / width for v in sums]


def _plot_gpu_util(plt, gs, runs, path: Path, title: str) -> str | None:
    lines = {}
    for key, r in runs.items():
        samples = [e for e in r.events if e.get("event") == "gpu_sample"]
        for g in sorted({int(e["gpu"]) for e in samples}):
            pts = [(float(e["t"]), float(e["util_pct"])) for e in samples if int(e["gpu"]) == g]
            lines[f"{key} GPU {g}"] = pts
    if not lines:
        return "no 'gpu_sample' telemetry (a CPU run, or NVML unavailable)"
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, pts in lines.items():
        ax.plot([t for t, _ in pts], [u for _, u in pts], label=label, lw=1)
    floor = (gs.profile.section("gpu_util") or {}).get("min_pct")
    if floor is not None:
        ax.axhline(float(floor), color="red", ls="--", lw=1, label=f"floor {floor}%")
    ax.set(xlabel="time since start (s)", ylabel="NVML utilisation (%)", ylim=(0, 105), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None


def _plot_stages(plt, gs, runs, path: Path, title: str) -> str | None:
    data = {k: r.stages for k, r in runs.items() if r.stages}
    if not data:
        return "no per-stage times in the telemetry summary"
    names = list(dict.fromkeys(s for st in data.values() for s in st))
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * len(data)))
    labels = list(data)
    left = [0.0] * len(labels)
    for s in names:
        vals = [data[k].get(s, 0.0) for k in labels]
        ax.barh(labels, vals, left=left, label=s)
        left = [a + b for a, b in zip(left, vals)]
    ax.set(xlabel="wall time (s)", title=title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return None


def _plot_scaling(plt, gs, runs, path: Path, title: str) -> str | None:
    gpu_runs = sorted((r.n_gpus, r.wall_s) for r in runs.values() if r.n_gpus >= 1)
    one = [w for n, w in gpu_runs if n == 1]
    if not one or len(gpu_runs) < 2:
        return "needs a 1-GPU run and at least one multi-GPU run"
    ns = [n for n, _ in gpu_runs]
    speed = [one[0] / w for _, w in gpu_runs]
    eff = float((gs.profile.section("scaling") or {}).get("min_efficiency", 1.0))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(ns, ns, "k--", label="ideal")
    ax.plot(ns, [eff * n for n in ns], "r:", label=f"floor {eff:g} x N")
    ax.plot(ns, speed, "o-", label="measured (1-GPU wall / N-GPU wall)")
    ax.set(xlabel="GPUs", ylabel="speed-up over 1 GPU", title=title, xticks=ns)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None
