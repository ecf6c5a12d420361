"""The gate's result as a benchmark result: what ran on what (system, workload, models, every
command with its start and end), each criterion's verdict and figures, in ``results.json`` with a
schema version; and the comparison of two such files (the nightly job: which criterion moved).

Schema (``schema_version`` 2; a reader refuses other versions):

    {"schema_version": 2, "verdict": {...}, "started": epoch, "ended": epoch,
     "system": {...}, "workload": {...}, "models": {...}, "baseline": {...},
     "profile": name, "profile_data": {...}, "selected_by": "...", "notes": [...],
     "runs": {key: {"command": [...], "start": epoch, "end": epoch, "wall_s": s, "summary": {...}}},
     "results": [{"criterion", "config", "outcome", "target", "measured", "values", ...}],
     "previous": {"file": path, "moves": [...]} | null}
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2

# criterion -> (key of Check.values holding its headline figure, True when higher is better)
PRIMARY: dict[str, tuple[str, bool]] = {
    "wall_time": ("projected_s_per_million", False),
    "gpu_utilisation": ("harness_mean", True),
    "packing_efficiency": ("harness", True),
    "mfu_esm": ("mfu_esm", True),
    "scaling": ("ratio", True),
    "speedup_vs_reference": ("ratio", True),
    "speedup_vs_v1": ("ratio", True),
    "correctness": ("frame_agreement", True),
    "consistency": ("max_abs_diff", False),
}


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def system_info(root: Path, gpus: int, gpu_name: str | None) -> dict[str, Any]:
    """The machine and software a result was measured with (missing parts are None)."""
    import virnucpro

    info: dict[str, Any] = {"gpu_model": gpu_name, "gpu_count": gpus, "driver": None, "cuda": None,
                            "torch": None, "python": platform.python_version(),
                            "platform": platform.platform(), "host": platform.node(),
                            "cpu_model": None, "cpu_count": os.cpu_count(),
                            "virnucpro_version": virnucpro.__version__,
                            "git_commit": _run(["git", "rev-parse", "HEAD"], root),
                            "git_dirty": None, "argv": list(sys.argv),
                            "env": {k: v for k, v in os.environ.items()
                                    if k.startswith(("VIRNUCPRO_", "CUDA_VISIBLE", "NCCL_", "OMP_NUM"))}}
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], root)
    info["git_dirty"] = None if status is None else bool(status)
    try:
        import torch
        info["torch"], info["cuda"] = torch.__version__, torch.version.cuda
    except Exception:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if gpus:
        info["driver"] = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        if info["driver"]:
            info["driver"] = info["driver"].splitlines()[0]
    return info


@dataclass
class Move:
    """One criterion of one configuration, now against the previous result."""

    criterion: str
    config: str
    before: str            # previous outcome
    after: str             # this outcome
    value_before: float | None
    value_after: float | None
    change_pct: float | None   # signed: + means the figure went up
    regressed: bool            # moved the wrong way beyond the allowed regression (or pass -> fail)
    note: str

    def line(self) -> str:
        return f"{self.criterion} [{self.config}]: {self.note}"


def load_results(path: str | Path) -> dict[str, Any]:
    """A results.json of this schema version; ValueError naming the problem otherwise."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: results schema_version {doc.get('schema_version')!r}, this gate reads "
                         f"{SCHEMA_VERSION}")
    return doc


def _primary(row: dict[str, Any]) -> float | None:
    key = PRIMARY.get(row.get("criterion", ""), (None, True))[0]
    v = (row.get("values") or {}).get(key) if key else None
    return float(v) if isinstance(v, (int, float)) else None


def compare_results(previous: dict[str, Any], now: dict[str, Any],
                    max_regression_pct: float | None = None, still_pct: float = 1.0) -> list[Move]:
    """Which criterion moved between two results: outcome changes, and headline figures that
    changed by more than ``still_pct`` percent. ``regressed`` marks a pass that became a failure,
    and (with ``max_regression_pct``) a figure that moved the wrong way by more than that."""
    before = {(r["criterion"], r["config"]): r for r in previous.get("results", [])}
    moves = []
    for r in now.get("results", []):
        key = (r["criterion"], r["config"])
        p = before.pop(key, None)
        if p is None:
            moves.append(Move(*key, "absent", r["outcome"], None, _primary(r), None, False, "new in this run"))
            continue
        a, b = _primary(p), _primary(r)
        pct = None if a in (None, 0) or b is None else 100.0 * (b - a) / abs(a)
        higher_better = PRIMARY.get(r["criterion"], ("", True))[1]
        worse = pct is not None and (pct < 0 if higher_better else pct > 0)
        regressed = (p["outcome"] == "passed" and r["outcome"] in ("failed", "error")) or (
            max_regression_pct is not None and worse and abs(pct) > max_regression_pct)
        if p["outcome"] == r["outcome"] and (pct is None or abs(pct) <= still_pct):
            continue
        parts = []
        if p["outcome"] != r["outcome"]:
            parts.append(f"{p['outcome']} -> {r['outcome']}")
        if pct is not None and abs(pct) > still_pct:
            parts.append(f"{a:.4g} -> {b:.4g} ({pct:+.1f}%, {'worse' if worse else 'better'})")
        moves.append(Move(*key, p["outcome"], r["outcome"], a, b, pct, regressed, "; ".join(parts)))
    for key, p in before.items():
        moves.append(Move(*key, p["outcome"], "absent", _primary(p), None, None, False, "not in this run"))
    return moves


def moves_to_dicts(moves: list[Move]) -> list[dict[str, Any]]:
    return [asdict(m) for m in moves]
