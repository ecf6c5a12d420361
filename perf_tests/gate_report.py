"""The gate's report: ``<gate-out>/report.md`` with the verdict line, what was run on what (system,
workload, models, baseline, every command with its start and end), a pass/fail table per
criterion and configuration, the comparison with a previous result (--gate-previous), and PNG
plots (throughput and GPU utilisation over time, per-stage time, scaling against ideal). A plot
whose data are absent is skipped and the report says why. ``results.json`` beside it holds every
number (schema: virnucpro.perf.results).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gate_harness import REFERENCE, WARMUP, GateSession
from virnucpro.perf import results as res
from virnucpro.perf.gate import RunRecord

ICON = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "skip",
        "not measured": "not measured"}


@dataclass
class Verdict:
    word: str    # PASS, FAIL, NOT RUN, INCOMPLETE
    line: str    # the verdict with its reasons and the baseline's origin
    ok: bool     # the session may exit 0


def verdict(gs: GateSession, moves: list[res.Move]) -> Verdict:
    """PASS only when something ran, nothing failed, every selected configuration ran (or
    --gate-allow-missing accepts their absence) and no figure regressed beyond the allowance."""
    rows = _criteria_rows(gs)
    outcomes = [r["outcome"] for r in rows]
    missing = gs.unrunnable()
    allow = bool(gs.options.get("gate_allow_missing"))
    regressed = [m for m in moves if m.regressed]
    miss_txt = "; ".join(f"{c}: {why.removeprefix(c + ' ')}" for c, why in missing)
    unmeasured = sorted({f"{r['criterion']} [{r['config']}]" for r in rows if r["outcome"] == "not measured"})
    skipped = sorted({f"{r['criterion']} [{r['config']}]" for r in rows if r["outcome"] == "skipped"})
    extra = []
    if not gs.criteria_selected and not rows:
        return Verdict("NO CRITERIA", "NO CRITERIA — no criterion test was selected (-m/-k): nothing was judged",
                       True)
    if any(o in ("failed", "error") for o in outcomes):
        word, ok = "FAIL", False
        bad = sorted({f"{r['criterion']} [{r['config']}]" for r in rows if r["outcome"] in ("failed", "error")})
        extra.append("failed: " + ", ".join(bad))
        if missing:
            extra.append(f"not run: {miss_txt}")
    elif "passed" not in outcomes:
        word, ok = "NOT RUN", False
        extra.append(f"nothing was measured: {miss_txt}" if missing else "every criterion was skipped")
    elif missing and not allow:
        word, ok = "INCOMPLETE", False
        extra.append(f"not run: {miss_txt} (pass --gate-allow-missing to accept a partial sign-off)")
    elif regressed:
        word, ok = "FAIL", False
        extra.append("regressed against the previous result: " + ", ".join(m.line() for m in regressed))
    else:
        word, ok = "PASS", True
        if missing:
            extra.append(f"PARTIAL, accepted by --gate-allow-missing: not run: {miss_txt}")
    if regressed and not any("regressed" in e for e in extra):
        extra.append("regressed against the previous result: " + ", ".join(m.line() for m in regressed))
    if unmeasured:
        extra.append("not measured: " + ", ".join(unmeasured))
    if skipped and word != "NOT RUN":
        extra.append("skipped: " + ", ".join(skipped))
    origin = gs.baseline_origin
    if origin:
        extra.append(f"correctness against {origin}")
    return Verdict(word, word + (" — " + "; ".join(extra) if extra else ""), ok)


def write_report(gs: GateSession) -> Path:
    gs.out.mkdir(parents=True, exist_ok=True)
    ended = time.time()
    runs = {k: o.record for k, o in gs.runs.items() if o.record is not None}
    system = res.system_info(gs.root, gs.detected, gs.gpu_name)
    doc = _results_doc(gs, runs, system, ended)
    moves: list[res.Move] = []
    prev_note = None
    if gs.options.get("gate_previous"):
        try:
            prev = res.load_results(gs.options["gate_previous"])
            moves = res.compare_results(prev, doc, gs.options.get("gate_max_regression"))
            doc["previous"] = {"file": str(gs.options["gate_previous"]), "started": prev.get("started"),
                               "moves": res.moves_to_dicts(moves)}
        except (OSError, ValueError) as exc:
            prev_note = f"--gate-previous {gs.options['gate_previous']}: not compared ({exc})"
            gs.notes.append(prev_note)
    gs.verdict = verdict(gs, moves)
    doc["verdict"] = {"word": gs.verdict.word, "line": gs.verdict.line, "ok": gs.verdict.ok}
    doc["notes"] = list(dict.fromkeys(gs.notes))
    plots, missing = _plots(gs, runs)
    lines = _header(gs, runs, system, ended) + _table(gs) + _previous(gs, moves) + _details(gs)
    lines += _runs_table(gs, runs)
    lines += ["", "## Plots", ""]
    lines += [f"![{title}]({name})\n" for name, title in plots]
    lines += [f"- {title}: not drawn — {why}" for title, why in missing]
    path = gs.out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (gs.out / "results.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


def _when(t: float | None) -> str:
    return "?" if t is None else time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(t))


def _models_identity(gs: GateSession, runs: dict[str, RunRecord]) -> dict[str, Any]:
    gated = [r for k, r in runs.items() if k not in (REFERENCE, WARMUP)] or list(runs.values())
    man = gated[0].manifest if gated else {}
    synth = man.get("synthetic")
    return {"dir": str(gs._models or gs.options.get("models") or "(not resolved)"),
            "synthetic": synth if isinstance(synth, dict) else bool(synth) if gated else None,
            "fingerprints": (man.get("models") or {}).get("fingerprints")}


def _header(gs: GateSession, runs: dict[str, RunRecord], system: dict[str, Any], ended: float) -> list[str]:
    w = gs._workload_info or {}
    m = _models_identity(gs, runs)
    gpus = f"{system['gpu_count']} x {system['gpu_model']}" if system["gpu_count"] else "no CUDA GPU"
    commit = system["git_commit"] or "unknown commit"
    if system["git_dirty"]:
        commit += " (with uncommitted changes)"
    b = gs._baseline
    lines = [
        f"# Performance gate report — {gs.verdict.line}", "",
        f"- session: {_when(gs.started)} to {_when(ended)}; host {system['host']}",
        f"- profile: **{gs.profile.name}** ({gs.profile.path.name}, selected by {gs.why}) — "
        f"{gs.profile.data.get('description', '')}",
        f"- system: {gpus}; driver {system['driver'] or 'n/a'}; CUDA {system['cuda'] or 'n/a'}; torch "
        f"{system['torch'] or 'n/a'}; Python {system['python']}; CPU {system['cpu_model'] or '?'} x "
        f"{system['cpu_count']}; {system['platform']}",
        f"- software: virnucpro {system['virnucpro_version']} at {commit}",
        f"- flags: `{' '.join(system['argv'])}`" + (f"; environment {system['env']}" if system["env"] else ""),
        f"- configurations: {', '.join(c.config for c in gs.cases)} (selected: "
        f"{', '.join(c.config for c in gs.selected) or 'none'})",
        f"- workload: {w.get('path', '(not resolved)')} ({w.get('source', '?')}"
        + (f", {w.get('reads'):,} reads, seed {w.get('seed')}, {w.get('length_profile')} lengths" if w.get("reads") else "")
        + f"); sha256 {gs._workload_sha or '(not computed)'}",
        f"- models: {m['dir']} — " + ("**SYNTHETIC random weights** (labels are not biology)" if m["synthetic"]
                                      else "real weights" if m["synthetic"] is False else "(no run)")
        + (f"; fingerprints {m['fingerprints']}" if m["fingerprints"] else ""),
        f"- engine {gs.profile.data['run']['engine']}, precisions "
        f"{', '.join(p or 'default' for p in gs.profile.precisions)}, chunk length {gs.chunk_length}",
        f"- correctness baseline: " + (f"**{b.origin}** — {b.note}" if b else "(not used)"),
    ]
    lines += [f"- note: {n}" for n in dict.fromkeys(gs.notes)]
    return lines


def _criteria_rows(gs: GateSession) -> list[dict[str, Any]]:
    """Results of criterion tests; the benchmark recorder shows only when it failed."""
    return [r for r in gs.results
            if r["criterion"] != "benchmark" or r["outcome"] in ("failed", "error")]


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
                text = str(r.get("measured") or r.get("reason") or "").removeprefix("not measured: ")
                row.append(f"**{ICON.get(r['outcome'], r['outcome'])}** " + _esc(text))
        out.append(f"| {c} | " + " | ".join(row) + " |")
    return out


def _previous(gs: GateSession, moves: list[res.Move]) -> list[str]:
    if not gs.options.get("gate_previous"):
        return []
    out = ["", f"## Compared with {gs.options['gate_previous']}", ""]
    if not moves:
        return out + ["No criterion moved (outcomes equal, headline figures within 1%)."]
    out += ["| criterion | config | change | regressed |", "|---|---|---|---|"]
    out += [f"| {m.criterion} | {m.config} | {_esc(m.note)} | {'**yes**' if m.regressed else 'no'} |"
            for m in moves]
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
    from virnucpro.perf.criteria import harness_gpu_util, harness_packing

    out = ["", "## Runs", "",
           "| run | start | end | wall s | reads | chunks | frames | ESM-2 tok/s | packing (harness / own) "
           "| GPU util (harness / own) | MFU | stages (s) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in runs.items():
        s, o = r.summary, gs.runs[key]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r.stages.items())
        hp, _ = harness_packing(r)
        hu, _ = harness_gpu_util(r)
        hu_mean = sum(hu.values()) / len(hu) if hu else None
        out.append(f"| {key} | {_hms(o.start)} | {_hms(o.end)} | {r.wall_s:.1f} | {s.get('reads')} | "
                   f"{s.get('chunks')} | {s.get('frames')} | {_num(s.get('esm_tokens_per_s'))} | "
                   f"{_pct(hp)} / {_pct(s.get('packing_efficiency'))} | "
                   f"{_num(hu_mean, '%')} / {_num(s.get('gpu_util_mean'), '%')} | {_pct(s.get('mfu_esm'))} | {stages} |")
    for key, o in gs.runs.items():
        if o.record is None:
            out.append(f"| {key} | {_hms(o.start)} | {_hms(o.end)} | failed: {_esc(o.error or '')} | | | | | | | | |")
    cmds = [(k, o) for k, o in gs.runs.items() if o.command]
    if cmds:
        out += ["", "Commands, as run (environment first), with start and end:", ""]
        out += [f"- {k} ({_when(o.start)} to {_when(o.end)}): `{gs.command_line(k)}`" for k, o in cmds]
    return out


def _results_doc(gs: GateSession, runs: dict[str, RunRecord], system: dict[str, Any],
                 ended: float) -> dict[str, Any]:
    b = gs._baseline
    return {"schema_version": res.SCHEMA_VERSION, "verdict": None, "started": gs.started, "ended": ended,
            "system": system, "profile": gs.profile.name, "profile_data": gs.profile.data,
            "selected_by": gs.why, "configurations": [c.config for c in gs.cases],
            "selected": [c.config for c in gs.selected], "missing": dict(gs.unrunnable()),
            "allow_missing": bool(gs.options.get("gate_allow_missing")),
            "workload": {**(gs._workload_info or {}), "sha256": gs._workload_sha},
            "models": _models_identity(gs, runs),
            "baseline": {"origin": b.origin, "path": str(b.path), "note": b.note} if b else None,
            "notes": gs.notes, "results": gs.results,
            "runs": {k: {"command": o.command, "start": o.start, "end": o.end, "error": o.error,
                         **({"wall_s": o.record.wall_s, "summary": o.record.summary, "outdir": str(o.record.outdir),
                             "harness": o.record.harness.to_dict() if o.record.harness else None}
                            if o.record is not None else {})}
                     for k, o in gs.runs.items()},
            "previous": None}


def _hms(t: float | None) -> str:
    return "" if t is None else time.strftime("%H:%M:%S", time.localtime(t))


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
    gated = {k: r for k, r in runs.items() if k not in (REFERENCE, WARMUP)}
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
        h = r.harness
        if h is not None and h.gpu and r.clock_offset is not None:   # the harness's own samples
            for g in sorted({g for _, g, _ in h.gpu}):
                lines[f"{key} GPU {g} (harness)"] = ([(t - r.clock_offset, u) for t, gg, u in h.gpu if gg == g], "-")
        samples = [e for e in r.events if e.get("event") == "gpu_sample"]
        for g in sorted({int(e["gpu"]) for e in samples}):
            pts = [(float(e["t"]), float(e["util_pct"])) for e in samples if int(e["gpu"]) == g]
            lines[f"{key} GPU {g} (pipeline's own)"] = (pts, ":")
    if not lines:
        return "no NVML samples, neither the harness's nor the pipeline's (a CPU run, or NVML unavailable)"
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, (pts, style) in lines.items():
        ax.plot([t for t, _ in pts], [u for _, u in pts], style, label=label, lw=1)
    floor = (gs.profile.section("gpu_utilisation") or {}).get("min_pct")
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
