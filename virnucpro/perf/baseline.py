"""Stored v1.0 baselines: the reference engine's outputs for a known workload and model set.

A baseline directory (``baselines/<name>/``) holds

    prediction_results.txt                  per kept frame   (as the original writes it)
    prediction_results_highestscore.csv     per chunk        (tab-separated despite its name)
    manifest.json                           what made them: workload (seed, size, length
                                            profile, sha256), model fingerprints, engine, chunk
                                            length, date, machine, wall time

``virnucpro baseline make`` (re)generates one by running ``virnucpro predict --engine reference``
exactly as a user would. The performance gate compares a run with a baseline only when the
manifest says both used the same models (fingerprints), the same chunk length and the same
input (sha256) — comparing a 500-nt run against 300-nt outputs is a mistake that once cost a
week. Such a baseline shares chunking, translation and output code with the engine it judges.

``virnucpro baseline import V1_DIR --input READS.fa`` stores real v1.0 outputs (of the original or
the previous pipeline) instead: their format checked, their sha256s, the input's sha256 and the
chunk length (told from, or checked against, the chunk ids: a read of length L has ceil(L/C)
chunks) in the manifest, whose ``origin`` says which of the two a baseline is. A user's own
directory without manifest is still accepted by the gate, marked unverifiable.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virnucpro.core.files import sha256_file
from virnucpro.errors import InputError
from virnucpro.io.paths import CONSENSUS, PREDICTIONS, RUN_JSON

MANIFEST = "manifest.json"
FORMAT = "virnucpro-baseline/1"
ORIGIN_REFERENCE = "reference-engine"   # `baseline make`: this package's reference engine
ORIGIN_IMPORTED = "imported-v1"         # `baseline import`: real v1.0 output files


@dataclass
class Baseline:
    path: Path
    manifest: dict[str, Any] | None   # None: a user's own v1.0 outputs, provenance unknown

    @property
    def name(self) -> str:
        return self.path.name


def load_baseline(path: str | Path) -> Baseline:
    """Open a baseline (or a plain v1.0 output directory); InputError if the outputs are absent."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"baseline directory not found: {path}")
    for name in (PREDICTIONS, CONSENSUS):
        if not (path / name).is_file():
            raise InputError(f"baseline {path} has no {name}")
    man = path / MANIFEST
    if not man.is_file():
        return Baseline(path, None)
    try:
        manifest = json.loads(man.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{man}: not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise InputError(f"{man}: not a virnucpro baseline manifest (format {manifest.get('format')!r})")
    return Baseline(path, manifest)


def origin(baseline: Baseline) -> str | None:
    """Where a baseline's outputs come from: ORIGIN_IMPORTED, ORIGIN_REFERENCE, or None (no
    manifest: a user's own directory, unverifiable)."""
    if baseline.manifest is None:
        return None
    return baseline.manifest.get("origin", ORIGIN_REFERENCE)


def run_fingerprints(run_manifest: dict[str, Any]) -> dict[str, str]:
    return dict((run_manifest.get("models") or {}).get("fingerprints") or {})


def incompatibilities(baseline: Baseline, run_manifest: dict[str, Any],
                      workload_sha256: str | None = None) -> list[str]:
    """Why ``baseline`` must not be compared with a run (empty list: compatible).

    Checks chunk length, chunking mode, every model fingerprint and, when known on both sides,
    the input's sha256. A baseline without manifest cannot be checked: that is the caller's call.
    """
    if baseline.manifest is None:
        return []
    b = baseline.manifest
    out = []
    if b.get("chunk_length") != run_manifest.get("chunk_length"):
        out.append(f"chunk length differs: baseline {b.get('chunk_length')}, "
                   f"run {run_manifest.get('chunk_length')}")
    if b.get("chunking", "original") != run_manifest.get("chunking", "original"):
        out.append(f"chunking differs: baseline {b.get('chunking')}, run {run_manifest.get('chunking')}")
    fb = (b.get("models") or {}).get("fingerprints") or {}
    fr = run_fingerprints(run_manifest)
    if origin(baseline) == ORIGIN_IMPORTED:
        fb = fr = {}   # real v1.0 outputs carry no fingerprints: the user vouches for the models
    elif not fb or not fr:
        out.append("model fingerprints missing on one side")
    for k in sorted(set(fb) | set(fr)):
        if fb.get(k) != fr.get(k):
            out.append(f"{k} model differs: baseline {fb.get(k)}, run {fr.get(k)}")
    wb = (b.get("workload") or {}).get("sha256")
    if workload_sha256 and wb and wb != workload_sha256:
        out.append(f"input differs: baseline sha256 {wb[:12]}..., run {workload_sha256[:12]}...")
    return out


def check_compatible(baseline: Baseline, run_manifest: dict[str, Any],
                     workload_sha256: str | None = None) -> None:
    """Raise InputError (one line, every reason) when the baseline does not fit the run."""
    reasons = incompatibilities(baseline, run_manifest, workload_sha256)
    if reasons:
        raise InputError(f"refusing to compare with baseline {baseline.path}: " + "; ".join(reasons)
                         + " (make a matching one with `virnucpro baseline make`)")


def find_compatible(root: str | Path, run_manifest: dict[str, Any],
                    workload_sha256: str | None) -> Baseline | None:
    """The first stored baseline under ``root`` that fits the run and was made from the same
    input (sha256 required here: a stored baseline is never matched on models alone)."""
    root = Path(root)
    if not root.is_dir() or not workload_sha256:
        return None
    for man in sorted(root.glob(f"*/{MANIFEST}")):
        try:
            b = load_baseline(man.parent)
        except InputError:
            continue
        if b.manifest and (b.manifest.get("workload") or {}).get("sha256") == workload_sha256 \
                and not incompatibilities(b, run_manifest, workload_sha256):
            return b
    return None


# --------------------------------------------------------------------------------------------
# Making a baseline
# --------------------------------------------------------------------------------------------

def _virnucpro(*args: str) -> list[str]:
    return [sys.executable, "-m", "virnucpro", *args]


def _run(cmd: list[str], what: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise InputError(f"{what} failed (exit {proc.returncode}): {tail[0]}")
    return wall


def ensure_synthetic_models(directory: Path, preset: str, seed: int, device: str = "auto") -> Path:
    """Write a synthetic model set unless ``directory`` already holds the same preset and seed."""
    marker = directory / "SYNTHETIC.json"
    if marker.is_file():
        m = json.loads(marker.read_text())
        if (m.get("preset"), m.get("seed")) != (preset, seed):
            raise InputError(f"{directory} holds synthetic models preset {m.get('preset')} seed "
                             f"{m.get('seed')}, not {preset} seed {seed}")
        return directory
    _run(_virnucpro("models", "synth", "--preset", preset, "--seed", str(seed), "--out",
                    str(directory), "--device", device), f"virnucpro models synth into {directory}")
    return directory


def ensure_workload(path: Path, reads: int, seed: int, length_profile: str) -> Path:
    """Write the synthetic workload unless ``path`` exists (same name = same parameters)."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        _run(_virnucpro("reads", "synth", "--n", str(reads), "--seed", str(seed),
                        "--length-profile", length_profile, "-o", str(path)),
             f"virnucpro reads synth -o {path}")
    return path


def machine_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"host": socket.gethostname(), "platform": platform.platform(),
                            "processor": platform.processor() or platform.machine(),
                            "python": platform.python_version(), "device": device}
    if device.startswith("cuda"):
        try:
            import torch
            info["gpu"] = torch.cuda.get_device_name(0)
        except Exception:  # informational only
            info["gpu"] = None
    return info


def make_baseline(out: Path, workload: Path, models: Path, chunk_length: int, device: str,
                  workload_info: dict[str, Any], extra_args: list[str] | None = None,
                  force: bool = False) -> Baseline:
    """Run the reference engine on ``workload`` and store its outputs + manifest in ``out``."""
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"{out} exists and is not empty (pass --force to replace it)")
    work = out.with_name(f".{out.name}.run")
    shutil.rmtree(work, ignore_errors=True)
    cmd = _virnucpro("predict", str(workload), "-o", str(work), "--chunk-length", str(chunk_length),
                     "--models", str(models), "--engine", "reference", "--device", device,
                     "--no-progress", *(extra_args or []))
    wall = _run(cmd, "the reference run")
    run_manifest = json.loads((work / RUN_JSON).read_text())
    out.mkdir(parents=True, exist_ok=True)
    for name in (PREDICTIONS, CONSENSUS):
        shutil.copyfile(work / name, out / name)
    models_info = dict(run_manifest.get("models") or {})
    synth = run_manifest.get("synthetic")
    manifest = {
        "format": FORMAT,
        "origin": ORIGIN_REFERENCE,
        "name": out.name,
        "engine": run_manifest.get("engine", "reference"),
        "chunk_length": run_manifest.get("chunk_length", chunk_length),
        "chunking": run_manifest.get("chunking", "original"),
        "models": {"fingerprints": models_info.get("fingerprints", {}),
                   "synthetic": synth if isinstance(synth, dict) else bool(synth),
                   "dir": str(models)},
        "workload": {**workload_info, "sha256": sha256_file(workload),
                     "reads": (run_manifest.get("summary") or {}).get("reads", workload_info.get("reads"))},
        "outputs": {"frames": (run_manifest.get("summary") or {}).get("frames"),
                    "chunks": (run_manifest.get("summary") or {}).get("chunks")},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(device),
        "wall_s": round(wall, 3),
        "run_wall_s": run_manifest.get("wall_s"),
        "virnucpro_version": run_manifest.get("virnucpro_version"),
        "command": ["virnucpro", *cmd[3:]],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    return Baseline(out, manifest)


# --------------------------------------------------------------------------------------------
# Importing real v1.0 outputs
# --------------------------------------------------------------------------------------------

CHUNK_LENGTHS = (300, 500)
_MIN_EVIDENCE = 10   # reads with 2+ chunks needed before "none shows a 2nd chunk" is telling


def _read_of(chunk_id: str) -> tuple[str, int]:
    """``{read}_chunk_{k}`` -> (read, k); InputError for anything else."""
    read, sep, k = chunk_id.rpartition("_chunk_")
    if not sep or not read or not k.isdigit() or int(k) < 1:
        raise InputError(f"chunk id {chunk_id!r} is not READ_chunk_K (K >= 1): not VirNucPro's output")
    return read, int(k)


def chunk_evidence(lengths: dict[str, int], chunk_ids: list[str]) -> dict[str, Any]:
    """What the chunk ids of a set of outputs say about their chunk length.

    The original cuts a read of length L into ceil(L/C) chunks numbered 1..ceil(L/C); the outputs
    list the chunks that kept a frame. A chunk number above ceil(L/C) rules C out. A longer C
    leaves no trace this way, so: among the reads that have 2+ chunks under C, if at least
    _MIN_EVIDENCE are present and none shows a chunk beyond the first, C is ruled out too (with
    C = 300 most chunks keep a frame; the 300-vs-500 mix-up of the previous rewrite looked so).
    """
    top: dict[str, int] = {}
    for cid in chunk_ids:
        read, k = _read_of(cid)
        if read not in lengths:
            raise InputError(f"the outputs name read {read!r} (chunk {cid}), which is not in the input")
        top[read] = max(top.get(read, 0), k)
    out: dict[str, Any] = {"reads_in_outputs": len(top), "reads_in_input": len(lengths),
                           "max_chunk_index": max(top.values(), default=0), "per_length": {}}
    for c in CHUNK_LENGTHS:
        over = [r for r, k in top.items() if k > -(-lengths[r] // c)]
        multi = [r for r in top if -(-lengths[r] // c) >= 2]
        seen = sum(1 for r in multi if top[r] >= 2)
        why = None
        if over:
            why = (f"{len(over)} read(s) have more chunks than ceil(L/{c}) allows, e.g. {over[0]} "
                   f"(length {lengths[over[0]]}, chunk {top[over[0]]})")
        elif len(multi) >= _MIN_EVIDENCE and seen == 0:
            why = (f"none of the {len(multi)} reads that have 2+ chunks at {c} nt shows a chunk beyond "
                   f"the first")
        out["per_length"][str(c)] = {"consistent": why is None, "why_not": why,
                                     "reads_with_several_chunks": len(multi), "of_them_seen": seen}
    out["consistent"] = [c for c in CHUNK_LENGTHS if out["per_length"][str(c)]["consistent"]]
    return out


def import_v1(v1_dir: Path, reads: Path, out: Path, chunk_length: int | None = None,
              force: bool = False) -> Baseline:
    """Check a real v1.0 output directory against its input and store it as a baseline in ``out``
    (the two output files, copied, and a manifest with their sha256s, the input's sha256 and read
    count, the chunk length and the evidence for it). InputError names any problem."""
    from virnucpro.io.fasta import iter_fasta
    from virnucpro.perf.compare import chunk_scores, read_consensus, read_frames

    v1_dir = Path(v1_dir)
    if not v1_dir.is_dir():
        raise InputError(f"v1.0 output directory not found: {v1_dir}")
    if not Path(reads).is_file():
        raise InputError(f"--input {reads}: no such file")
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"{out} exists and is not empty (pass --force to replace it)")
    frames = read_frames(v1_dir / PREDICTIONS)           # header, fields, labels, scores checked
    cons = read_consensus(v1_dir / CONSENSUS)
    bad = frames["id"][~frames["id"].str.contains(r"_chunk_\d+[FR][123]$", regex=True)]
    if len(bad):
        raise InputError(f"{v1_dir / PREDICTIONS}: frame id {bad.iloc[0]!r} is not READ_chunk_K + F1..R3")
    have = set(chunk_scores(frames).index)
    missing = sorted(set(cons["id"]) ^ have)
    if missing:
        raise InputError(f"{v1_dir}: the two files disagree: {len(missing)} chunk id(s) are in one only, "
                         f"e.g. {missing[0]!r} (the consensus file has one row per chunk with frames)")
    lengths = {r.id: len(r.seq) for r in iter_fasta(reads)}
    ev = chunk_evidence(lengths, list(cons["id"]))
    if chunk_length is None:
        if len(ev["consistent"]) != 1:
            raise InputError(f"cannot tell the chunk length from the outputs (consistent with "
                             f"{ev['consistent'] or 'none of 300, 500'}): pass --chunk-length")
        chunk_length = ev["consistent"][0]
    if chunk_length not in ev["consistent"]:
        raise InputError(f"refusing {v1_dir}: its chunk ids imply another chunk length than "
                         f"{chunk_length}: {ev['per_length'][str(chunk_length)]['why_not']}")
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in (PREDICTIONS, CONSENSUS):
        shutil.copyfile(v1_dir / name, out / name)
        files[name] = {"sha256": sha256_file(v1_dir / name), "bytes": (v1_dir / name).stat().st_size}
    manifest = {
        "format": FORMAT, "origin": ORIGIN_IMPORTED, "name": out.name,
        "chunk_length": chunk_length, "chunking": "original",
        "source": {"dir": str(v1_dir.resolve()), "files": files},
        "workload": {"source": "file", "path": str(Path(reads).resolve()), "sha256": sha256_file(reads),
                     "reads": len(lengths)},
        "chunk_evidence": ev,
        "models": {"fingerprints": {}, "note": "v1.0 outputs carry no model fingerprints: the gate "
                   "compares them with a run of the models you name (--models)"},
        "outputs": {"frames": len(frames), "chunks": len(cons)},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info("cpu"),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    return Baseline(out, manifest)


def run_import(args: argparse.Namespace) -> int:
    if getattr(args, "outdir", None) is None:
        raise InputError("baseline import: -o/--outdir DIR is required (where the baseline is written)")
    b = import_v1(args.v1_dir, args.input, args.outdir, args.chunk_length, args.force)
    m = b.manifest
    ev = m["chunk_evidence"]["per_length"][str(m["chunk_length"])]
    print(f"baseline {b.path}: imported v1.0 outputs of {args.v1_dir} ({m['outputs']['frames']} frames, "
          f"{m['outputs']['chunks']} chunks of {m['workload']['reads']} reads), chunk length "
          f"{m['chunk_length']} ({ev['reads_with_several_chunks']} reads with 2+ chunks, "
          f"{ev['of_them_seen']} showing one)")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``virnucpro baseline make`` and ``virnucpro baseline import`` to the CLI."""
    p = subparsers.add_parser(
        "baseline", help="make or import stored v1.0 baselines for the performance gate",
        description="Stored v1.0 baselines: the reference engine's outputs for a known workload "
                    "and model set, with a manifest the performance gate checks before comparing.")
    sub = p.add_subparsers(dest="baseline_command", metavar="COMMAND", required=True)
    m = sub.add_parser(
        "make", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="run the reference engine and store its outputs as baselines/NAME",
        description="Run `virnucpro predict --engine reference` on a workload (a FASTA file, or a "
                    "synthetic one made with `virnucpro reads synth`) and store "
                    "prediction_results.txt, prediction_results_highestscore.csv and manifest.json "
                    "(workload, model fingerprints, engine, chunk length, date, machine, wall time) "
                    "in DIR/NAME (-o/--outdir DIR).")
    m.add_argument("name", metavar="NAME", help="baseline name, e.g. smoke-tiny-c300")
    m.add_argument("-o", "--outdir", type=Path, default=Path("baselines"), metavar="DIR",
                   help="where baselines live (the baseline is written to DIR/NAME)")
    m.add_argument("--out-root", dest="outdir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old spelling
    m.add_argument("--models", type=Path, required=True,
                   help="model directory (with --synth-preset: created there if absent)")
    m.add_argument("--synth-preset", choices=("tiny", "full"),
                   help="use synthetic models of this preset (written into --models if absent)")
    m.add_argument("--models-seed", type=int, default=0, help="seed of the synthetic models")
    src = m.add_mutually_exclusive_group(required=True)
    src.add_argument("--workload", type=Path, help="input FASTA")
    src.add_argument("--reads", type=int, help="synthesise a workload of this many reads")
    m.add_argument("--reads-seed", type=int, default=1, help="seed of the synthetic workload")
    m.add_argument("--length-profile", default="respiratory", help="synthetic read lengths")
    m.add_argument("--workload-cache", type=Path, default=Path.home() / ".cache" / "virnucpro" / "gate",
                   help="where a synthetic workload is written")
    m.add_argument("-c", "--chunk-length", type=int, choices=(300, 500), default=300)
    m.add_argument("--device", default="cpu", help="device for the reference run (cpu, cuda)")
    m.add_argument("--force", action="store_true", help="replace an existing baseline")
    m.set_defaults(func=run_make)
    i = sub.add_parser(
        "import", help="check real v1.0 outputs against their input and store them as a baseline",
        description="Take a real v1.0 output directory (prediction_results.txt and "
                    "prediction_results_highestscore.csv of the original or the previous pipeline), "
                    "validate its format against the input reads, and store it in OUT with a manifest "
                    "(sha256 of each file and of the input, read count, chunk length). Refused when "
                    "its chunk ids imply another chunk length: a read of length L has ceil(L/C) chunks.")
    i.add_argument("v1_dir", metavar="V1_DIR", type=Path, help="the v1.0 output directory")
    i.add_argument("--input", type=Path, required=True, metavar="READS.fa",
                   help="the reads V1_DIR was made from (FASTA, plain or gzip)")
    i.add_argument("-c", "--chunk-length", type=int, choices=CHUNK_LENGTHS,
                   help="the chunk length of the v1.0 run (default: told from the chunk ids)")
    i.add_argument("-o", "--outdir", type=Path, metavar="DIR", help="the baseline directory to write (required)")
    i.add_argument("--out", dest="outdir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old spelling
    i.add_argument("--force", action="store_true", help="replace an existing baseline")
    i.set_defaults(func=run_import)
    return p


def run_make(args: argparse.Namespace) -> int:
    if args.synth_preset:
        ensure_synthetic_models(args.models, args.synth_preset, args.models_seed, args.device)
    if args.workload is not None:
        workload = args.workload
        if not workload.is_file():
            raise InputError(f"workload not found: {workload}")
        info: dict[str, Any] = {"source": "file", "path": str(workload)}
    else:
        if args.reads <= 0:
            raise InputError(f"--reads must be positive, got {args.reads}")
        workload = args.workload_cache / f"reads-{args.length_profile.replace(':', '_')}-n{args.reads}-s{args.reads_seed}.fa"
        ensure_workload(workload, args.reads, args.reads_seed, args.length_profile)
        info = {"source": "synthetic", "reads": args.reads, "seed": args.reads_seed,
                "length_profile": args.length_profile,
                "command": f"virnucpro reads synth --n {args.reads} --seed {args.reads_seed} "
                           f"--length-profile {args.length_profile}"}
    b = make_baseline(args.outdir / args.name, workload, args.models, args.chunk_length,
                      args.device, info, force=args.force)
    print(f"baseline {b.path}: {b.manifest['outputs']['frames']} frames, "
          f"{b.manifest['outputs']['chunks']} chunks, reference engine {b.manifest['wall_s']:.1f} s "
          f"on {b.manifest['machine']['device']}")
    return 0
