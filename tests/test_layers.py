"""The package's layers (docs/architecture.md): every import, module-level or inside a function,
points down the stack or stays inside its own package, and no two modules import each other,
directly or around a circle.

Layers, bottom first. A module may import modules of its own layer's packages and of every layer
below; never one above. ``virnucpro`` itself (``__version__``) counts as the bottom layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "virnucpro"

LAYERS: list[tuple[str, ...]] = [
    ("virnucpro", "virnucpro.errors", "virnucpro.core"),   # errors, threads, files, telemetry, NVML
    ("virnucpro.io",),                                     # FASTA in, output files out, output paths
    ("virnucpro.prep",),                                   # chunking, six frames, kept frames
    ("virnucpro.workloads",),                              # simulated reads from real genomes
    ("virnucpro.models",),                                 # ESM-2, DNABERT-S, classifier, weights
    ("virnucpro.plan",),                                   # work units and batches
    ("virnucpro.engines",),                                # reference and fast engines
    ("virnucpro.run",),                                    # run directory, workers, executors
    ("virnucpro.pipeline", "virnucpro.options", "virnucpro.reclassify", "virnucpro.report",
     "virnucpro.samples"),                                 # the data flow of a command
    ("virnucpro.perf",),                                   # gate, baseline, bench, compare
    ("virnucpro.cli", "virnucpro.__main__"),               # argument parsing only
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and len(n) > best:
                best, rank = len(n), i
    if rank is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md")
    return rank


def imports_of(path: Path) -> set[str]:
    """Every virnucpro module this file imports, wherever the import statement stands."""
    mod = module_name(path)
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "virnucpro")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "virnucpro":
                continue
            for a in node.names:   # `from virnucpro.io import outputs` imports the module io.outputs
                sub = f"{target}.{a.name}"
                out.add(sub if _exists(sub) else target)
    out.discard(mod)
    return out


def _exists(module: str) -> bool:
    p = PKG.parent.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PKG.rglob("*.py"))}


def test_every_module_has_a_layer():
    for mod in graph():
        layer_of(mod)


def test_imports_point_down():
    upward = []
    for mod, deps in graph().items():
        for dep in sorted(deps):
            if layer_of(dep) > layer_of(mod):
                upward.append(f"{mod} (layer {layer_of(mod)}) imports {dep} (layer {layer_of(dep)})")
    assert not upward, "imports pointing up the layers:\n  " + "\n  ".join(upward)


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_circular_imports():
    # a package's __init__ importing its own modules is not a circle of design
    g = {m: {d for d in deps if not (m.startswith(d + ".") and _exists(d) and (PKG.parent.joinpath(*d.split(".")) / "__init__.py").is_file())}
         for m, deps in graph().items()}
    cycles = find_cycles(g)
    assert not cycles, "circular imports:\n  " + "\n  ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("g, expect", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_cycle_finder_sees_circles(g, expect):
    assert find_cycles(g) == expect


def test_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: a planted io module that imports the pipeline is caught."""
    fake = tmp_path / "virnucpro"
    (fake / "io").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "io" / "__init__.py").write_text("")
    (fake / "pipeline.py").write_text("")
    (fake / "io" / "bad.py").write_text("def f():\n    from virnucpro.pipeline import predict\n")
    monkeypatch.setattr(__import__(__name__), "PKG", fake)
    with pytest.raises(AssertionError, match="virnucpro.io.bad .layer 1. imports virnucpro.pipeline"):
        test_imports_point_down()
