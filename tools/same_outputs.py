#!/usr/bin/env python3
"""Do two source trees of virnucpro write the same prediction files? A byte-by-byte before/after check.

Runs ``python -m virnucpro predict`` once with each tree on the same inputs and compares every output
file both runs write, byte by byte. Made for refactorings that must not change behaviour (issue 15:
outputs byte-identical to the pre-redesign main on the built-in sample and on a 5,000-read synthetic
workload, with the reference engine and with the fast engine at fp32).

How it works:
- Each run is a subprocess with ``PYTHONPATH=SRC`` and the working directory SRC, so two versions of
  the package are compared on one machine (an editable install elsewhere does not get in the way: the
  tool checks which ``virnucpro`` each tree's interpreter imports before it runs anything).
- Shared inputs are made once with the --after tree: tiny synthetic models (``virnucpro models synth
  --preset tiny --seed 1``, unless --models names a model directory) and simulated reads (``virnucpro
  reads synth --n N --seed S``), or the built-in sample (``predict --sample``) with --sample.
- Compared: every file under each output directory except ``virnucpro.log`` (times), ``run.json``
  (times, paths, the command line) and ``.virnucpro-run/`` (the fast engine's checkpoints and worker
  records, which hold times). run.json is also compared after dropping its times, rates, date and
  command line and writing its output directory and source tree as <OUTDIR> / <SRC>: differing keys
  are listed, and count towards the exit status only with --strict-manifest (a redesign may add
  fields to the manifest on purpose).

Exit status: 0 if every compared file is identical, 1 if any differs or is written by one tree only
(the first differing line is printed), 2 on bad usage or a failed run.

Only the standard library is imported here: the tool never imports either tree's package itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Not compared byte by byte: they hold times and paths (run.json is compared normalised, below).
SKIPPED_FILES = {"virnucpro.log", "run.json"}
SKIPPED_DIRS = {".virnucpro-run"}
MANIFEST = "run.json"

# run.json keys (at any depth) that hold times, rates, dates or the command line: dropped before
# comparing manifests.
VOLATILE_KEYS = {
    "command", "date", "created", "seconds", "wall_s", "embed_wall_s", "io_wait_s", "stages",
    "reads_per_s", "frames_per_s", "esm_tokens_per_s", "esm_tokens_per_s_total", "busy_s_per_worker",
    "load_imbalance", "gpu_util_mean", "mfu_esm", "peak_gpu_mem_gib", "peak_tflops",
}

DEFAULT_ENGINES = "reference,fast-fp32"
PRECISIONS = ("fp16", "bf16", "fp32")


class UsageError(Exception):
    """Bad arguments or a run that failed: one line, exit 2."""


@dataclass
class FileRow:
    """One compared file: its sha256 in each directory (None: absent) and, if they differ, where."""
    name: str
    sha_before: str | None
    sha_after: str | None
    identical: bool
    detail: str = ""
    counts: bool = True  # False: informational (run.json without --strict-manifest)


@dataclass
class Comparison:
    """One workload x engine: the two output directories, the run times and the compared files."""
    title: str
    before_dir: Path
    after_dir: Path
    rows: list[FileRow] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # "before"/"after" -> wall s of predict

    @property
    def identical(self) -> bool:
        return all(r.identical for r in self.rows if r.counts)


# ---- engines ---------------------------------------------------------------------------------

def engine_args(spec: str) -> list[str]:
    """'reference' -> --engine reference; 'fast-fp32' -> --engine fast --precision fp32."""
    if spec == "reference":
        return ["--engine", "reference"]
    kind, _, precision = spec.partition("-")
    if kind == "fast" and precision in PRECISIONS:
        return ["--engine", "fast", "--precision", precision]
    raise UsageError(f"unknown engine setting {spec!r}: use reference or fast-{{{','.join(PRECISIONS)}}}")


# ---- comparing files -------------------------------------------------------------------------

def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def output_files(outdir: Path) -> set[str]:
    """Relative paths of the files to compare byte by byte."""
    found = set()
    for path in outdir.rglob("*"):
        rel = path.relative_to(outdir)
        if path.is_file() and not SKIPPED_DIRS & set(rel.parts[:-1]) and str(rel) not in SKIPPED_FILES:
            found.add(rel.as_posix())
    return found


def _clip(line: bytes, width: int = 100) -> str:
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    return text if len(text) <= width else text[:width] + "..."


def first_difference(a: bytes, b: bytes) -> str:
    """Where two different byte strings first part: a line for text, a byte offset for binary."""
    if b"\0" in a or b"\0" in b:
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return f"first difference at byte {n} (sizes {len(a)} / {len(b)})"
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    for i, (x, y) in enumerate(zip(la, lb), start=1):
        if x != y:
            return f"line {i}: before {_clip(x)!r} | after {_clip(y)!r}"
    who, lines = ("before", la) if len(la) > len(lb) else ("after", lb)
    n = min(len(la), len(lb)) + 1
    return f"line {n}: only {who} has it: {_clip(lines[n - 1])!r}"


def compare_file(name: str, before: Path, after: Path) -> FileRow:
    pa, pb = before / name, after / name
    sa = sha256(pa) if pa.exists() else None
    sb = sha256(pb) if pb.exists() else None
    if sa is None or sb is None:
        return FileRow(name, sa, sb, False, f"written by the {'after' if sa is None else 'before'} tree only")
    if sa == sb:
        return FileRow(name, sa, sb, True)
    return FileRow(name, sa, sb, False, first_difference(pa.read_bytes(), pb.read_bytes()))


# ---- comparing manifests ---------------------------------------------------------------------

def _flatten(value, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole values."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            if k not in VOLATILE_KEYS:
                out.update(_flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: value}


def _replace_strings(value, subs: list[tuple[str, str]]):
    if isinstance(value, str):
        for old, new in subs:  # whole paths or their prefixes only: a relative "out" is no substring
            if value == old or value.startswith(old.rstrip("/") + "/"):
                return new + value[len(old):]
        return value
    if isinstance(value, dict):
        return {k: _replace_strings(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, subs) for v in value]
    return value


def normalised_manifest(path: Path) -> dict[str, object]:
    """run.json without its volatile keys, its output directory and source tree as placeholders."""
    data = json.loads(path.read_text())
    subs = []
    for outdir in {str(data.get("options", {}).get("outdir") or ""), str(path.parent),
                   str(path.parent.resolve())}:
        if outdir:
            subs.append((outdir, "<OUTDIR>"))
    command = data.get("command") or [""]
    main = Path(str(command[0]))
    if main.name == "__main__.py" and main.parent.name == "virnucpro":
        subs.append((str(main.parent.parent), "<SRC>"))
    subs.sort(key=lambda s: -len(s[0]))  # longest first: /a/out before /a
    return _flatten(_replace_strings(data, subs))


def compare_manifests(before: Path, after: Path, strict: bool) -> FileRow | None:
    pa, pb = before / MANIFEST, after / MANIFEST
    if not pa.exists() and not pb.exists():
        return None
    name = f"{MANIFEST} (normalised)"

    def digest(path: Path) -> str | None:
        if not path.exists():
            return None
        return hashlib.sha256(json.dumps(normalised_manifest(path), sort_keys=True).encode()).hexdigest()

    if not pa.exists() or not pb.exists():
        return FileRow(name, digest(pa), digest(pb), False, "written by one tree only", counts=strict)
    ma, mb = normalised_manifest(pa), normalised_manifest(pb)

    removed = sorted(set(ma) - set(mb))
    added = sorted(set(mb) - set(ma))
    changed = sorted(k for k in set(ma) & set(mb) if ma[k] != mb[k])
    parts = [f"{label}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
             for label, keys in (("removed", removed), ("added", added), ("changed", changed)) if keys]
    if changed:
        k = changed[0]
        parts.append(f"{k}: before {json.dumps(ma[k])[:80]} | after {json.dumps(mb[k])[:80]}")
    return FileRow(name, digest(pa), digest(pb), not parts, "; ".join(parts), counts=strict)


def compare_dirs(title: str, before: Path, after: Path, strict_manifest: bool = False) -> Comparison:
    cmp = Comparison(title, before, after)
    for name in sorted(output_files(before) | output_files(after)):
        cmp.rows.append(compare_file(name, before, after))
    manifest = compare_manifests(before, after, strict_manifest)
    if manifest is not None:
        cmp.rows.append(manifest)
    return cmp


# ---- reporting -------------------------------------------------------------------------------

def print_comparison(cmp: Comparison, sha_width: int = 16) -> None:
    times = "  ".join(f"{k} {v:.1f} s" for k, v in cmp.seconds.items())
    print(f"\n== {cmp.title}" + (f"  (predict wall time: {times})" if times else ""))
    print(f"   before: {cmp.before_dir}\n   after:  {cmp.after_dir}")
    width = max([len("file")] + [len(r.name) for r in cmp.rows])
    print(f"   {'file':<{width}}  {'sha256 before':<{sha_width}}  {'sha256 after':<{sha_width}}  identical")
    for r in cmp.rows:
        verdict = "yes" if r.identical else ("NO" if r.counts else "no (info)")
        sa = (r.sha_before or "(absent)")[:sha_width]
        sb = (r.sha_after or "(absent)")[:sha_width]
        print(f"   {r.name:<{width}}  {sa:<{sha_width}}  {sb:<{sha_width}}  {verdict}")
    for r in cmp.rows:
        if not r.identical:
            print(f"   {r.name}: {r.detail}")
    if not cmp.rows:
        print("   (no output files)")


def write_json(path: Path, comparisons: list[Comparison]) -> None:
    report = [{"title": c.title, "before": str(c.before_dir), "after": str(c.after_dir),
               "identical": c.identical, "predict_seconds": c.seconds,
               "files": [vars(r) for r in c.rows]} for c in comparisons]
    path.write_text(json.dumps(report, indent=2) + "\n")


# ---- running the trees -----------------------------------------------------------------------

@dataclass
class Tree:
    """A source tree holding a virnucpro/ package, run as ``python -m virnucpro`` from itself."""
    label: str
    src: Path

    def env(self) -> dict[str, str]:
        """The tree first on the path; an existing PYTHONPATH (packages installed with --target, as on
        a machine without a writable site-packages) stays behind it."""
        rest = os.environ.get("PYTHONPATH")
        return {**os.environ, "PYTHONPATH": str(self.src) + (os.pathsep + rest if rest else "")}

    def check(self) -> None:
        """Fail unless this tree's interpreter imports virnucpro from this tree."""
        if not (self.src / "virnucpro" / "__main__.py").is_file():
            raise UsageError(f"--{self.label} {self.src}: no virnucpro/__main__.py there")
        proc = subprocess.run([sys.executable, "-c", "import virnucpro; print(virnucpro.__file__)"],
                              cwd=self.src, env=self.env(), capture_output=True, text=True)
        where = Path(proc.stdout.strip()).resolve().parent.parent if proc.returncode == 0 else None
        if where != self.src.resolve():
            raise UsageError(f"--{self.label} {self.src}: python imports virnucpro from "
                             f"{where or proc.stderr.strip()[-200:]}, not from this tree")

    def virnucpro(self, args: list[str], log: Path) -> float:
        """Run ``python -m virnucpro ARGS``, its output into LOG; return the wall seconds."""
        t0 = time.perf_counter()
        with open(log, "w") as fh:
            fh.write(f"# PYTHONPATH={self.src} {sys.executable} -m virnucpro {shlex.join(args)}\n")
            fh.flush()
            proc = subprocess.run([sys.executable, "-m", "virnucpro", *args], cwd=self.src, env=self.env(),
                                  stdout=fh, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = log.read_text().strip().splitlines()[-5:]
            raise UsageError(f"{self.label} tree: `virnucpro {shlex.join(args[:3])} ...` exited "
                             f"{proc.returncode} (log {log}):\n  " + "\n  ".join(tail))
        return seconds


def make_inputs(args, after: Tree, work: Path) -> tuple[Path, list[str], str]:
    """Models (made once, reused from WORK) and the predict input arguments; returns a title too."""
    if args.models:
        models = Path(args.models).resolve()
    else:
        models = work / "models-tiny-seed1"
        if not (models / "300_model.pth").exists():
            tmp = work / "models-tiny-seed1.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"making tiny synthetic models in {models} ...", flush=True)
            after.virnucpro(["models", "synth", "--preset", "tiny", "--seed", "1", "--out", str(tmp)],
                            work / "models-synth.log")
            tmp.rename(models)
    if args.sample:
        return models, ["--sample"], "built-in sample"
    reads = work / f"reads-n{args.reads}-seed{args.seed}.fa"
    if not reads.exists():
        print(f"making {args.reads:,} simulated reads in {reads} ...", flush=True)
        partial = reads.with_suffix(".partial.fa")
        after.virnucpro(["reads", "synth", "--n", str(args.reads), "--seed", str(args.seed),
                         "-o", str(partial)], work / "reads-synth.log")
        partial.rename(reads)
    return models, [str(reads)], f"{args.reads:,} synthetic reads (seed {args.seed})"


def run_trees(args) -> list[Comparison]:
    before, after = Tree("before", Path(args.before).resolve()), Tree("after", Path(args.after).resolve())
    for tree in (before, after):
        tree.check()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        engine_args(e)  # validate all before spending time
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    models, input_args, workload = make_inputs(args, after, work)
    extra = shlex.split(args.predict_args or "")
    comparisons = []
    for engine in engines:
        tag = "sample" if args.sample else f"n{args.reads}-seed{args.seed}"
        base = work / "out" / tag / engine
        cmp = Comparison(f"{workload}, {engine} (--device {args.device})", base / "before", base / "after")
        for tree, outdir in ((before, cmp.before_dir), (after, cmp.after_dir)):
            shutil.rmtree(outdir, ignore_errors=True)  # a fresh run into a new directory, as a user's
            outdir.parent.mkdir(parents=True, exist_ok=True)
            print(f"{engine}: {tree.label} tree ({tree.src}) ...", end=" ", flush=True)
            cmp.seconds[tree.label] = tree.virnucpro(
                ["predict", *input_args, "-o", str(outdir), "--models", str(models), *engine_args(engine),
                 "--device", args.device, "--no-progress", *extra], base / f"{tree.label}.log")
            print(f"{cmp.seconds[tree.label]:.1f} s", flush=True)
        done = compare_dirs(cmp.title, cmp.before_dir, cmp.after_dir, args.strict_manifest)
        done.seconds = cmp.seconds
        comparisons.append(done)
    return comparisons


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="same_outputs.py",
        description="Run `virnucpro predict` with two source trees (each holding a virnucpro/ package) on "
                    "the same inputs and compare their output files byte by byte: a table of file, "
                    "sha256 before, sha256 after, identical. Exit 0 if all are identical, 1 if any "
                    "differs (its first differing line is printed), 2 on bad usage or a failed run. "
                    "prediction_results.txt, prediction_results_highestscore.csv, read_summary.tsv, "
                    "SYNTHETIC_MODELS.txt and anything else a run writes are compared; virnucpro.log "
                    "and .virnucpro-run/ are not (times); run.json is compared without its times, "
                    "rates, date, command line and paths, for information unless --strict-manifest.",
        epilog="examples:\n"
               "  python tools/same_outputs.py --before /work/orig --after . --sample\n"
               "  python tools/same_outputs.py --before /work/orig --after . --reads 5000\n"
               "  python tools/same_outputs.py --before OLD --after . --engines fast-fp16 --device cuda\n"
               "  python tools/same_outputs.py --compare-dirs out-v1 out-v2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", metavar="SRC_A", help="source tree of the old version (holds virnucpro/)")
    p.add_argument("--after", metavar="SRC_B", help="source tree of the new version; also makes the "
                   "shared inputs (models, reads)")
    p.add_argument("--reads", type=int, default=5000, metavar="N",
                   help="simulated reads (virnucpro reads synth --n N; default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated reads (default 0)")
    p.add_argument("--sample", action="store_true",
                   help="use the built-in sample reads (predict --sample) instead of simulated reads")
    p.add_argument("--engines", default=DEFAULT_ENGINES,
                   help="comma-separated engine settings: reference, fast-fp32, fast-fp16, fast-bf16 "
                        f"(default {DEFAULT_ENGINES})")
    p.add_argument("--device", default="cpu", help="predict --device for every run (default cpu; "
                   "e.g. cuda with --engines fast-fp16)")
    p.add_argument("--predict-args", metavar="ARGS",
                   help="more predict options for both trees, one string, e.g. \"--chunk-length 500\"")
    p.add_argument("--models", metavar="DIR", help="model directory (default: tiny synthetic models, "
                   "`models synth --preset tiny --seed 1`, made once in the work directory)")
    p.add_argument("--work", metavar="DIR", help="where models, reads, outputs and logs go; reused if "
                   "given again (default: a new temporary directory, removed if all is identical)")
    p.add_argument("--strict-manifest", action="store_true",
                   help="a normalised run.json difference counts as a difference (exit 1)")
    p.add_argument("--json", metavar="FILE", help="also write the comparison (full sha256s) as JSON")
    p.add_argument("--compare-dirs", nargs=2, metavar=("DIR_A", "DIR_B"),
                   help="run nothing: compare two existing predict output directories")
    args = p.parse_args(argv)
    if args.compare_dirs is None and not (args.before and args.after):
        p.error("give --before and --after (or --compare-dirs DIR_A DIR_B)")
    if args.reads < 1:
        p.error("--reads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    temp_work = None
    try:
        t0 = time.perf_counter()
        if args.compare_dirs:
            a, b = (Path(d).resolve() for d in args.compare_dirs)
            for d in (a, b):
                if not d.is_dir():
                    raise UsageError(f"{d}: not a directory")
            comparisons = [compare_dirs("output directories", a, b, args.strict_manifest)]
        else:
            if args.work is None:
                args.work = temp_work = tempfile.mkdtemp(prefix="same-outputs-")
            comparisons = run_trees(args)
    except UsageError as exc:
        print(f"same_outputs: {exc}", file=sys.stderr)
        if temp_work:
            print(f"same_outputs: inputs and logs kept in {temp_work}", file=sys.stderr)
        return 2
    for cmp in comparisons:
        print_comparison(cmp)
    if args.json:
        write_json(Path(args.json), comparisons)
    same = all(c.identical for c in comparisons)
    print(f"\n{'ALL IDENTICAL' if same else 'DIFFERENT'} "
          f"({sum(c.identical for c in comparisons)} of {len(comparisons)} comparisons identical; "
          f"{time.perf_counter() - t0:.1f} s)")
    if temp_work:
        if same:
            shutil.rmtree(temp_work, ignore_errors=True)
        else:
            print(f"outputs kept in {temp_work}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
