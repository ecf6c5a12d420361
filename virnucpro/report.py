"""The summary block printed at the end of a run (rich table on a terminal, plain text otherwise)."""

from __future__ import annotations

import sys
from typing import Any

from virnucpro.io.outputs import SYNTHETIC_WARNING
from virnucpro.io.paths import CONSENSUS, EMBEDDING_INDEX, EMBEDDINGS, PREDICTIONS, READ_SUMMARY, VIRAL_READS


def _fmt(v: Any, unit: str = "", pct: bool = False) -> str:
    if v is None:
        return "n/a"
    if pct:
        return f"{v * 100:.1f}%" if v <= 1.0 else f"{v:.1f}%"
    if isinstance(v, float):
        return f"{v:,.2f}{unit}"
    if isinstance(v, int):
        return f"{v:,}{unit}"
    return f"{v}{unit}"


def summary_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("wall time", _fmt(s["wall_s"], " s")),
        ("engine / precision / device", f"{s['engine']} / {s['precision']} / {s['device']}"),
        ("reads -> chunks -> kept frames", f"{s['reads']:,} -> {s['chunks']:,} -> {s['frames']:,}"),
        ("viral chunks", f"{s['viral_chunks']:,} of {s['chunks_with_frames']:,} chunks with a kept frame"),
        ("viral reads", f"{s['viral_reads']:,} of {s['reads']:,}"),
        ("reads without a kept frame", no_kept_frame_line(s)),
        ("throughput", f"{_fmt(s['reads_per_s'])} reads/s end to end; {_fmt(s['frames_per_s'])} frames/s embedding"),
        ("ESM-2 tokens/s", _fmt(s.get("esm_tokens_per_s"))),
        ("packing efficiency", _fmt(s.get("packing_efficiency"), pct=True)),
        ("GPU utilisation (NVML, mean)", _fmt(s.get("gpu_util_mean"), pct=True) if s.get("gpu_util_mean") is not None else "n/a"),
        ("ESM-2 MFU", _fmt(s.get("mfu_esm"), pct=True)),
        ("peak GPU memory", _fmt(s.get("peak_gpu_mem_gib"), " GiB")),
    ]
    return rows


def no_kept_frame_line(s: dict[str, Any]) -> str:
    """How many reads had no frame to classify (a stop codon in all six frames of every chunk, or
    shorter than a codon): labelled no_kept_frame, neither virus nor others."""
    n, reads = s.get("no_kept_frame_reads"), s["reads"]
    if n is None:
        return "n/a"
    share = f" ({n / reads:.0%})" if reads else ""
    return f"{n:,} of {reads:,}{share}: a stop codon in every frame; label no_kept_frame"


def print_summary(s: dict[str, Any], file=None) -> None:
    file = file or sys.stdout
    from rich.console import Console
    from rich.table import Table
    console = Console(file=file, highlight=False, soft_wrap=True)
    t = Table(title="virnucpro summary", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in summary_rows(s):
        t.add_row(k, v)
    console.print(t)
    st = Table(title="stages", title_justify="left")
    st.add_column("stage")
    st.add_column("wall s", justify="right")
    st.add_column("share", justify="right")
    overlapped = set(s.get("overlapped_stages") or ())   # ran beside the others: no share of the total
    total = sum(v for k, v in s["stages"].items() if k not in overlapped) or 1.0
    for name, sec in s["stages"].items():
        if name in overlapped:
            st.add_row(f"{name} (overlapped)", f"{sec:.2f}", "-")
        else:
            st.add_row(name, f"{sec:.2f}", f"{sec / total:.0%}")
    console.print(st)
    out = s["outdir"]
    console.print(f"outputs: {out}/{PREDICTIONS}, {out}/{CONSENSUS}, {out}/{READ_SUMMARY}, {out}/{VIRAL_READS}")
    if s.get("embeddings"):
        e = s["embeddings"]
        console.print(f"embeddings: {out}/{EMBEDDINGS}/ ({e['frames']:,} frames in {e['parts']:,} parts, "
                      f"{e['bytes'] / 2**30:.2f} GiB; {EMBEDDING_INDEX})")
    if s.get("synthetic"):
        console.print(f"[bold red]WARNING: {SYNTHETIC_WARNING}[/]")


def print_samples(rows: list[dict[str, Any]], summary_path, file=None) -> None:
    """The multi-sample table (the rows of samples_summary.tsv), then where the file is."""
    file = file or sys.stdout
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text
    console = Console(file=file, highlight=False, soft_wrap=True)
    t = Table(title="virnucpro samples", title_justify="left")
    for name, right in (("sample", False), ("status", False), ("reads", True), ("chunks", True),
                        ("kept frames", True), ("viral reads", True), ("seconds", True)):
        t.add_column(name, justify="right" if right else "left")
    for r in rows:
        cells = [_fmt(r.get(k)) if r.get(k) is not None else "" for k in ("reads", "chunks", "kept_frames", "viral_reads")]
        status = Text(r["status"], style="" if r["status"] == "ok" else "bold red")
        t.add_row(Text(r["sample"]), status, *cells, r.get("seconds") or "")
    console.print(t)
    for r in rows:   # the reasons below the table, one line each (a narrow table column would break them up)
        if r["status"] != "ok" or r.get("message"):
            console.print(Text(f"{r['sample']}: {r['status']}: {r.get('message') or ''}"))
    bad = sum(1 for r in rows if r["status"] != "ok")
    console.print(Text(f"{len(rows) - bad} of {len(rows)} samples ok" + (f", {bad} not" if bad else "") +
                       f"; each sample's outputs in its own folder beside {summary_path}"))
