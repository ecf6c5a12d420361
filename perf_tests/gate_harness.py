"""The gate's session state: which profile, which workload and models, the pipeline runs (each
configuration once per session), the baseline, and the results the report is written from.

The pipeline is always launched as a user launches it: ``python -m virnucpro predict ...`` in a
subprocess, timed with a wall clock; what it did is read back from its output directory
(virnucpro.perf.gate.load_run), never from inside the process.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virnucpro.core.files import sha256_file
from virnucpro.perf import baseline as bl
from virnucpro.perf import gate
from virnucpro.perf.gate import GateError, Profile, RunRecord

REFERENCE = "reference"
WARMUP = "warmup"


@dataclass(frozen=True)
class Case:
    """One configuration of the session: ``cpu``, ``1gpu``, ``2gpu``, ..."""

    config: str
    n_gpus: int

    def __str__(self) -> str:
        return self.config


def detect_gpus() -> tuple[int, str | None]:
    """(number of CUDA GPUs visible to PyTorch, name of the first), without a CUDA context."""
    try:
        import torch
        n = torch.cuda.device_count()
        return n, (torch.cuda.get_device_name(0) if n else None)
    except Exception:  # no torch build with CUDA: a CPU machine as far as the gate is concerned
        return 0, None


@dataclass
class RunOutcome:
    record: RunRecord | None = None
    error: str | None = None
    command: list[str] = field(default_factory=list)


class GateSession:
    def __init__(self, profile: Profile, why: str, options: dict[str, Any], root: Path,
                 detected: int, gpu_name: str | None):
        self.profile = profile
        self.why = why
        self.options = options
        self.root = root
        self.detected = detected
        self.gpu_name = gpu_name
        self.out = Path(options["gate_out"]).resolve()
        self.cache = Path(options["gate_cache"]).expanduser().resolve()
        self.cases = [Case(c, n) for c, n in gate.gpu_configs(profile, detected)]
        self.runs: dict[str, RunOutcome] = {}
        self.results: list[dict[str, Any]] = []     # one per gate test: criterion, config, outcome...
        self.notes: list[str] = []
        self._workload: Path | None = None
        self._workload_info: dict[str, Any] | None = None
        self._workload_sha: str | None = None
        self._models: Path | None = None
        self._baseline: tuple[Path, set[str] | None, str] | None = None
        self._baseline_error: str | None = None
        self._reference_ids: set[str] = set()
        self._warmed = False
        self.report_path: Path | None = None

    # ---------------------------------------------------------------- inputs
    @property
    def chunk_length(self) -> int:
        return int(self.profile.data["run"]["chunk_length"])

    def workload(self) -> Path:
        """The input FASTA: --workload, else the profile's synthetic workload (cached)."""
        if self._workload is None:
            given = self.options.get("workload")
            if given:
                p = Path(given).expanduser().resolve()
                if not p.is_file():
                    raise GateError(f"--workload {given}: no such file")
                self._workload, self._workload_info = p, {"source": "file", "path": str(p)}
            else:
                w = self.profile.data["workload"]
                n = int(self.options.get("gate_reads") or w["reads"])
                prof = str(w["length_profile"])
                p = self.cache / f"reads-{prof.replace(':', '_')}-n{n}-s{w['seed']}.fa"
                bl.ensure_workload(p, n, int(w["seed"]), prof)
                self._workload = p
                self._workload_info = {"source": "synthetic", "reads": n, "seed": int(w["seed"]),
                                       "length_profile": prof, "path": str(p)}
        return self._workload

    @property
    def workload_info(self) -> dict[str, Any]:
        self.workload()
        return dict(self._workload_info or {})

    def workload_sha256(self) -> str:
        if self._workload_sha is None:
            self._workload_sha = sha256_file(self.workload())
        return self._workload_sha

    def models(self) -> Path:
        """--models DIR (real weights), else synthetic models of the profile's preset (cached)."""
        if self._models is None:
            given = self.options.get("models")
            if given:
                p = Path(given).expanduser().resolve()
                if not p.is_dir():
                    raise GateError(f"--models {given}: no such directory")
                self._models = p
            else:
                m = self.profile.data["models"]
                p = self.cache / f"models-{m['preset']}-s{m['seed']}"
                device = "cpu" if self.profile.device == "cpu" else "auto"
                bl.ensure_synthetic_models(p, str(m["preset"]), int(m["seed"]), device)
                self._models = p
        return self._models

    # ---------------------------------------------------------------- runs
    def predict_command(self, workload: Path, outdir: Path, engine: str, device: str,
                        n_gpus: int) -> list[str]:
        run = self.profile.data["run"]
        cmd = [sys.executable, "-m", "virnucpro", "predict", str(workload), "-o", str(outdir),
               "--chunk-length", str(self.chunk_length), "--models", str(self.models()),
               "--engine", engine, "--device", device, "--no-progress"]
        if device.startswith("cuda"):
            cmd += ["--gpus", str(max(n_gpus, 1))]
        if engine != "reference" and run.get("precision"):
            cmd += ["--precision", str(run["precision"])]
        if engine != "reference":
            cmd += [str(a) for a in run.get("extra_args", [])]
        return cmd

    def _timeout(self, reads: int, case: Case) -> float:
        limit = self.profile.wall_limit_per_million(case.config, case.n_gpus)
        factor = float(self.profile.data["run"].get("timeout_factor", 3.0))
        return factor * limit * reads / gate.MILLION + 600.0

    def _launch(self, case: Case, cmd: list[str], outdir: Path, timeout: float) -> RunOutcome:
        key = case.config
        shutil.rmtree(outdir, ignore_errors=True)  # never judge a stale output
        outdir.parent.mkdir(parents=True, exist_ok=True)
        outcome = RunOutcome(command=cmd)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            outcome.error = f"{key}: the run exceeded {exc.timeout:.0f} s and was killed"
            return outcome
        wall = time.perf_counter() - t0
        (outdir.parent / f"{outdir.name}.stdout.txt").write_text(proc.stdout or "")
        (outdir.parent / f"{outdir.name}.stderr.txt").write_text(proc.stderr or "")
        if proc.returncode != 0:
            last = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            outcome.error = (f"{key}: `virnucpro predict` exited {proc.returncode}: "
                             f"{last[-1] if last else '(no message)'}")
            return outcome
        try:
            outcome.record = gate.load_run(outdir, case.config, case.n_gpus, wall_s=wall)
        except GateError as exc:
            outcome.error = str(exc)
        return outcome

    def warm_up(self) -> None:
        """Once, before the first timed run: the profile's [run] warmup_reads reads through the
        same command on as many GPUs as the largest configuration uses, so that the one-time costs of
        a fresh machine (torch.compile's kernel cache, which is kept per GPU index, the matmul-peak
        measurement, the page cache of the weights) land here and not in whichever configuration
        happens to run first. Its wall time goes into the report's notes."""
        if self._warmed:
            return
        self._warmed = True
        k = int(self.profile.data["run"].get("warmup_reads", 0) or 0)
        if k <= 0:
            return
        try:
            sub = self.out / "warmup-input.fa"
            self.out.mkdir(parents=True, exist_ok=True)
            n = len(gate.head_fasta(self.workload(), sub, k))
            device = "cuda" if self.profile.device == "cuda" else "cpu"
            case = Case(WARMUP, self.warmup_gpus())
            cmd = self.predict_command(sub, self.out / "runs" / WARMUP, str(self.profile.data["run"]["engine"]),
                                       device, case.n_gpus)
            outcome = self._launch(case, cmd, self.out / "runs" / WARMUP, self._timeout(n * 50, self.cases[0]))
        except GateError as exc:
            outcome = RunOutcome(error=str(exc))
        if outcome.record is not None:
            where = f"{case.n_gpus} GPU(s)" if case.n_gpus else "the CPU"
            self.notes.append(f"warm-up before the timed runs: {n:,} reads on {where} in "
                              f"{outcome.record.wall_s:.1f} s (compile caches and the matmul peak are "
                              f"then warm for every configuration alike)")
        else:
            self.notes.append(f"warm-up run failed ({outcome.error}); the first timed configuration "
                              "pays the one-time start-up costs")

    def warmup_gpus(self) -> int:
        """GPUs of the warm-up run: those of the largest configuration that will run (0 on a CPU)."""
        if self.profile.device != "cuda":
            return 0
        return max([c.n_gpus for c in self.cases if self.skip_reason(c) is None] + [1])

    def run(self, case: Case) -> RunRecord:
        """The pipeline run of this configuration: launched on first request, then shared.
        A failed run raises GateError (with its reason) for every test that asks for it."""
        if case.config not in self.runs:
            self.warm_up()
            try:
                engine = str(self.profile.data["run"]["engine"])
                device = "cpu" if case.n_gpus == 0 else "cuda"
                workload = self.workload()
                outdir = self.out / "runs" / case.config
                cmd = self.predict_command(workload, outdir, engine, device, case.n_gpus)
                reads = int(self.workload_info.get("reads") or 0) or _count_records(workload)
                self.runs[case.config] = self._launch(case, cmd, outdir, self._timeout(reads, case))
            except GateError as exc:
                self.runs[case.config] = RunOutcome(error=str(exc))
        outcome = self.runs[case.config]
        if outcome.record is None:
            raise GateError(outcome.error or f"{case.config}: no run")
        return outcome.record

    def skip_reason(self, case: Case) -> str | None:
        if case.n_gpus > self.detected:
            have = f"{self.detected} detected" if self.detected else "none detected (torch.cuda.device_count() == 0)"
            return f"{case.config} needs {case.n_gpus} GPU(s); {have}"
        return None

    # ---------------------------------------------------------------- reference run
    def reference_reads(self) -> int:
        ref = self.profile.section("reference") or {}
        return int(ref.get("subsample_reads", 0))

    def reference_run(self) -> RunRecord:
        """The reference engine on the first [reference] subsample_reads reads (once)."""
        if REFERENCE not in self.runs:
            try:
                k = self.reference_reads()
                if k <= 0:
                    raise GateError(f"profile {self.profile.name} sets no [reference] subsample_reads")
                sub = self.out / "reference-input.fa"
                self.out.mkdir(parents=True, exist_ok=True)
                ids = gate.head_fasta(self.workload(), sub, k)
                ref = self.profile.section("reference") or {}
                device = str(ref.get("device") or ("cuda" if self.profile.device == "cuda" else "cpu"))
                case = Case(REFERENCE, 1 if device.startswith("cuda") else 0)
                cmd = self.predict_command(sub, self.out / "runs" / REFERENCE, "reference", device, case.n_gpus)
                self._reference_ids = set(ids)
                # the reference engine is far slower than the gated one: 50x its per-read budget
                timeout = self._timeout(len(ids) * 50, self.cases[0])
                self.runs[REFERENCE] = self._launch(case, cmd, self.out / "runs" / REFERENCE, timeout)
            except GateError as exc:
                self.runs[REFERENCE] = RunOutcome(error=str(exc))
        outcome = self.runs[REFERENCE]
        if outcome.record is None:
            raise GateError(f"reference run failed: {outcome.error}")
        return outcome.record

    # ---------------------------------------------------------------- baseline
    def baseline_for(self, run: RunRecord) -> tuple[Path, set[str] | None, str]:
        """(baseline dir, read ids to restrict the run's outputs to or None, provenance note)."""
        if self._baseline is not None:
            return self._baseline
        if self._baseline_error is not None:
            raise GateError(self._baseline_error)
        try:
            self._baseline = self._resolve_baseline(run)
        except (GateError, bl.InputError) as exc:
            self._baseline_error = str(exc)
            raise GateError(self._baseline_error) from None
        return self._baseline

    def _resolve_baseline(self, run: RunRecord) -> tuple[Path, set[str] | None, str]:
        given = self.options.get("baseline")
        if given:
            b = bl.load_baseline(Path(given).expanduser())
            if b.manifest is None:
                note = (f"baseline {b.path}: user-supplied v1.0 outputs without manifest; models and "
                        f"chunk length not verifiable (they must match: chunk length {self.chunk_length})")
                self.notes.append(note)
                return b.path, None, note
            bl.check_compatible(b, run.manifest, self.workload_sha256())
            note = f"baseline {b.path} (--baseline; manifest matches models, chunk length, input)"
            return b.path, None, note
        stored = bl.find_compatible(self.root / "baselines", run.manifest, self.workload_sha256())
        if stored is not None:
            return stored.path, None, f"stored baseline {stored.path.relative_to(self.root)} (manifest matches)"
        ref = self.reference_run()
        restrict = None if ref.reads >= run.reads else set(self._reference_ids)
        scope = "all reads" if restrict is None else f"the first {ref.reads:,} reads"
        note = (f"no stored baseline fits (models/chunk length/input); reference engine run in this "
                f"session on {scope} is the baseline")
        self.notes.append(note)
        return ref.outdir, restrict, note

    def compare_against_baseline(self, run: RunRecord):
        from virnucpro.perf.compare import compare_dirs

        base, restrict, note = self.baseline_for(run)
        target = run.outdir
        if restrict is not None:
            target = gate.restrict_outputs(run.outdir, restrict,
                                           self.out / "runs" / f"{run.config}-restricted")
        return compare_dirs(base, target, top=10), note


def _count_records(path: Path) -> int:
    return len(gate.fasta_ids(path))
