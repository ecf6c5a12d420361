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
week. A user's own real v1.0 output directory (no manifest) can be given to the gate instead.
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
    if not fb or not fr:
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


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``virnucpro baseline make`` to the CLI."""
    p = subparsers.add_parser(
        "baseline", help="make stored v1.0 baselines for the performance gate",
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
