"""What a run of an engine hands to the output stage, and the figures of a multi-worker summary."""

from __future__ import annotations

from dataclasses import dataclass, field

from virnucpro.run.rows import MemoryRows, SpooledRows


@dataclass
class Scored:
    """What an engine path hands to the output stage: the output rows (``virnucpro.run.rows``: the
    fast engine's, made as its units finished; the reference engine's ``MemoryRows.whole`` of its
    chunks, kept frames and scores), and the figures of the summary."""
    rows: "SpooledRows | MemoryRows"
    totals: dict
    embed_wall: float
    precision: str
    n_gpus: int
    gpu_util_mean: float | None
    packing_efficiency: float | None = None
    mfu_esm: float | None = None
    peak_gpu_mem_gib: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_chunks(self) -> int:
        return self.rows.n_chunks

    @property
    def n_frames(self) -> int:
        return self.rows.n_frames


def summarize_workers(stats: list[dict], embed_wall: float) -> dict:
    """Per-worker units and busy time, load imbalance (slowest / fastest busy time among workers
    that did any work) and total throughput over the embedding wall time."""
    busy = {s["worker"]: float(s.get("busy_s", 0.0)) for s in stats}
    working = [b for s, b in zip(stats, busy.values()) if s.get("units")]
    tokens = sum(s.get("esm_tokens", 0) for s in stats)
    return {
        "n_workers": len(stats),
        "units_per_worker": {s["worker"]: s.get("units", 0) for s in stats},
        "busy_s_per_worker": {k: round(v, 3) for k, v in busy.items()},
        "load_imbalance": round(max(working) / min(working), 3) if working and min(working) > 0 else None,
        "esm_tokens_per_s_total": round(tokens / embed_wall, 1) if embed_wall > 0 else None,
    }


def scaling_line(summary: dict) -> str:
    per = summary.get("esm_tokens_per_s")
    tot = summary.get("esm_tokens_per_s_total")
    n = summary.get("n_workers", 1)
    eff = (tot / (per * n)) if per and tot and n else None
    return (f"scaling: {n} worker(s) on {summary.get('n_gpus', 0)} GPU(s): {tot or 0:,.0f} ESM tok/s in total, "
            f"{per or 0:,.0f} per worker while busy; parallel efficiency "
            f"{'n/a' if eff is None else f'{eff:.0%}'}; load imbalance {summary.get('load_imbalance')}; "
            f"units {summary.get('units_computed')} computed, {summary.get('units_skipped')} resumed")
