"""The maintainer tools under tools/ (docs/benchmarks.md says which figure each re-checks): each one's
--help works and says what it measures, every virnucpro name it uses still exists (the package moves
under them), and the two that run on a CPU compute what they print."""

from __future__ import annotations

import ast
import gzip
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ["dna_attention", "esm_microbench", "gemm_bench", "host_speed", "memory_curve", "memory_probe", "precision_study",
         "samples_bench", "trace_gaps"]


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "tools" / f"{name}.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", TOOLS)
def test_help_describes_the_tool(name):
    doc = ast.get_docstring(ast.parse((ROOT / "tools" / f"{name}.py").read_text()))
    assert doc, f"tools/{name}.py has no module docstring"
    r = run_tool(name, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage:")
    assert words(doc.splitlines()[0]) in words(r.stdout), f"--help of {name} lacks its description"
    assert "docs/benchmarks.md#" in doc, f"tools/{name}.py does not say which figure it re-checks"


def test_every_cited_benchmarks_section_exists():
    """Tools, docs and source comments point at sections of docs/benchmarks.md (not at run ids): each one
    cited, and every in-page link of benchmarks.md, must exist."""
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    ids = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', doc))
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "tools").glob("*.py"),
             *(ROOT / "virnucpro").rglob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "perf_tests").rglob("*.py")]
    missing = [f"{f.relative_to(ROOT)}: #{anchor}" for f in files
               for anchor in re.findall(r"benchmarks\.md#([\w-]+)", f.read_text())
               if anchor not in ids]
    missing += [f"docs/benchmarks.md: #{anchor}" for anchor in re.findall(r"\]\(#([^)]+)\)", doc)
                if anchor not in ids]
    assert not missing, f"links to sections docs/benchmarks.md does not have: {missing}"
    for name in TOOLS:
        assert re.search(r"docs/benchmarks\.md#[a-z0-9-]+", (ROOT / "tools" / f"{name}.py").read_text()), name


def virnucpro_uses(path: Path) -> list[tuple[str, str]]:
    """(dotted owner, attribute) for every name a tool takes from virnucpro: ``from virnucpro.x import
    y`` gives (virnucpro.x, y); a later ``y.z`` gives (virnucpro.x.y, z)."""
    tree = ast.parse(path.read_text())
    aliases: dict[str, str] = {}
    uses: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "virnucpro":
            for a in node.names:
                uses.append((node.module, a.name))
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            uses.append((aliases[node.value.id], node.attr))
    return uses


def resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("name", TOOLS)
def test_virnucpro_names_exist(name):
    uses = virnucpro_uses(ROOT / "tools" / f"{name}.py")
    missing = []
    for owner, attr in uses:
        try:
            obj = resolve(owner)
        except (ImportError, AttributeError):
            missing.append(owner)
            continue
        if not hasattr(obj, attr):
            try:
                importlib.import_module(f"{owner}.{attr}")
            except ImportError:
                missing.append(f"{owner}.{attr}")
    assert not missing, f"tools/{name}.py uses names the package no longer has: {missing}"


def test_virnucpro_uses_sees_aliases(tmp_path):
    tool = tmp_path / "t.py"
    tool.write_text("def f():\n    from virnucpro.models import dnabert as D\n    return D.PAD_ID, D.nothing\n")
    uses = virnucpro_uses(tool)
    assert ("virnucpro.models", "dnabert") in uses and ("virnucpro.models.dnabert", "nothing") in uses
    assert not hasattr(resolve("virnucpro.models.dnabert"), "nothing")


def test_host_speed_times_translation_and_reading(tmp_path):
    fasta = tmp_path / "r.fa"
    fasta.write_text(">a\nACGTACGTACGTAAATTTGGGCCC\n>b\nTTTTGGGGCCCCAAAA\n>c\nACGT\nACGT\n")
    r = run_tool("host_speed", "--reads", "300", "--fasta", str(fasta))
    assert r.returncode == 0, r.stderr
    assert "translate: 300 reads of 150 nt: best" in r.stdout
    assert "read_fasta: 3 reads: best" in r.stdout


def test_trace_gaps_finds_the_idle_time_and_what_the_host_did(tmp_path):
    def op(cat, name, ts, dur):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur}
    events = [op("kernel", "gemm", 0, 100), op("kernel", "gemm", 140, 110),        # 40 us gap
              op("gpu_memcpy", "Memcpy HtoD", 1250, 50),                          # 1,000 us gap
              op("cpu_op", "aten::linear", 0, 1300), op("cpu_op", "aten::_cudnn_attention_forward", 240, 1020)]
    trace = tmp_path / "t.json.gz"
    with gzip.open(trace, "wt") as f:
        json.dump({"traceEvents": events}, f)
    r = run_tool("trace_gaps", str(trace), "--top", "1")
    assert r.returncode == 0, r.stderr
    assert "3 GPU operations over 1.3 ms: busy 20.00%, idle 1.0 ms" in r.stdout
    assert "gaps >=  1000 us:     1,      1.0 ms" in r.stdout
    top = [line for line in r.stdout.splitlines() if "idle at" in line]
    assert len(top) == 1 and "1.00 ms idle at" in top[0]
    assert "host in aten::_cudnn_attention_forward" in top[0] and "next Memcpy HtoD" in top[0]
