"""The gate's session state: which profile, which workload and models, the pipeline runs (each
configuration once per session), the baseline, and the results the report is written from.

The pipeline is always launched as a user launches it: ``python -m virnucpro predict ...`` in a
subprocess, timed with a wall clock; while it runs, a thread of this process samples NVML and the
process tree's CPU time (virnucpro.perf.sampler). What it did is read back from its output
directory (virnucpro.perf.gate.load_run), never from inside the process.
"""

from __future__ import annotations

import os
import shlex
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
from virnucpro.perf.criteria import Borderline, borderline_counts
from virnucpro.perf.gate import Config, GateError, Profile, RunRecord
from virnucpro.perf.sampler import HarnessSampler

REFERENCE = "reference"
WARMUP = "warmup"
Case = Config   # one configuration of the session: ``cpu-fp32``, ``1gpu``, ``2gpu``, ...

# test function -> (criterion = profile section = report row; needs >= 2 GPUs)
CRITERIA: dict[str, tuple[str, bool]] = {
    "test_benchmark_wall_time": ("benchmark", False),
    "test_wall_time": ("wall_time", False),
    "test_gpu_utilisation": ("gpu_utilisation", False),
    "test_packing_efficiency": ("packing_efficiency", False),
    "test_mfu_esm": ("mfu_esm", False),
    "test_scaling": ("scaling", True),
    "test_speedup_vs_reference": ("speedup_vs_reference", False),
    "test_speedup_vs_v1": ("speedup_vs_v1", False),
    "test_correctness": ("correctness", False),
    "test_consistency": ("consistency", True),
}

ORIGIN_IMPORTED = "imported v1.0 outputs"
ORIGIN_REFERENCE = "reference engine of this package"
ORIGIN_UNKNOWN = "user-supplied outputs without manifest (origin not verifiable)"


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
    command: list[str] = field(default_factory=list)   # as run: environment settings first
    start: float | None = None                         # epoch seconds
    end: float | None = None


@dataclass
class BaselineChoice:
    path: Path
    restrict: set[str] | None   # read ids to restrict the run's outputs to, or None
    note: str                   # one line: which baseline and why it fits
    origin: str                 # ORIGIN_*


class GateSession:
    def __init__(self, profile: Profile, why: str, options: dict[str, Any], root: Path,
                 detected: int, gpu_name: str | None, explicit: bool = False):
        self.profile = profile
        self.why = why
        self.explicit = explicit      # --hw-profile named it: another GPU model is accepted, noted
        self.options = options
        self.root = root
        self.detected = detected
        self.gpu_name = gpu_name
        self.out = Path(options["gate_out"]).resolve()
        self.cache = Path(options["gate_cache"]).expanduser().resolve()
        self.cases = gate.configurations(profile, detected)
        self.selected: list[Case] = []   # configurations with gate tests in this session
        self.criteria_selected = False   # any criterion test (not only the benchmark recorder) selected
        self.runs: dict[str, RunOutcome] = {}
        self.results: list[dict[str, Any]] = []     # one per gate test: criterion, config, outcome...
        self.notes: list[str] = []
        self.started = time.time()
        self._workload: Path | None = None
        self._workload_info: dict[str, Any] | None = None
        self._workload_sha: str | None = None
        self._models: Path | None = None
        self._baseline: BaselineChoice | None = None
        self._baseline_error: str | None = None
        self._reference_ids: set[str] = set()
        self._warmed = False
        self.repeats: dict[str, list[RunOutcome]] = {}   # the later speedup rounds, by configuration
        self.report_path: Path | None = None
        self.verdict: str | None = None

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
                                       "length_profile": prof, "path": str(p),
                                       "command": f"virnucpro reads synth --n {n} --seed {w['seed']} "
                                                  f"--length-profile {prof}"}
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
    def run_env(self) -> dict[str, str]:
        """Environment settings of every launched command (shown in front of it in the report).
        [run] cpu_threads pins PyTorch's CPU threads: on a shared machine, two threads of a small
        model spin-waiting for a core slowed the reference engine up to 15x (docs/perf-gate.md)."""
        k = self.profile.data["run"].get("cpu_threads")
        return {"OMP_NUM_THREADS": str(int(k)), "MKL_NUM_THREADS": str(int(k))} if k else {}

    def predict_command(self, workload: Path, outdir: Path, engine: str, device: str,
                        n_gpus: int, precision: str | None = None) -> list[str]:
        run = self.profile.data["run"]
        cmd = [sys.executable, "-m", "virnucpro", "predict", str(workload), "-o", str(outdir),
               "--chunk-length", str(self.chunk_length), "--models", str(self.models()),
               "--engine", engine, "--device", device, "--no-progress"]
        if device.startswith("cuda"):
            cmd += ["--gpus", str(max(n_gpus, 1))]
        if engine != "reference" and precision:
            cmd += ["--precision", precision]
        if engine != "reference":
            cmd += [str(a) for a in run.get("extra_args", [])]
        return cmd

    def _timeout(self, reads: int, case: Case) -> float:
        limit = self.profile.wall_limit_per_million(case.config, case.n_gpus)
        factor = float(self.profile.data["run"].get("timeout_factor", 3.0))
        return factor * limit * reads / gate.MILLION + 600.0

    def launch(self, case: Case, cmd: list[str], outdir: Path, timeout: float) -> RunOutcome:
        """Run ``cmd`` (writing into ``outdir``) with the harness's sampler beside it; load the run.
        Public for the self-tests, which launch deliberately broken variants."""
        key = case.config
        shutil.rmtree(outdir, ignore_errors=True)  # never judge a stale output
        outdir.parent.mkdir(parents=True, exist_ok=True)
        env = self.run_env()
        outcome = RunOutcome(command=[f"{k}={v}" for k, v in env.items()] + cmd)
        stdout = open(outdir.parent / f"{outdir.name}.stdout.txt", "w")
        stderr_path = outdir.parent / f"{outdir.name}.stderr.txt"
        stderr = open(stderr_path, "w")
        outcome.start = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env={**os.environ, **env})
        sampler = HarnessSampler(proc.pid, list(range(case.n_gpus))).start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            sampler.stop()
            outcome.error = f"{key}: the run exceeded {timeout:.0f} s and was killed"
            return outcome
        finally:
            stdout.close()
            stderr.close()
        wall = time.perf_counter() - t0
        samples = sampler.stop()
        outcome.end = time.time()
        if rc != 0:
            last = [ln for ln in stderr_path.read_text(errors="replace").strip().splitlines() if ln.strip()]
            outcome.error = f"{key}: `virnucpro predict` exited {rc}: {last[-1] if last else '(no message)'}"
            return outcome
        try:
            outcome.record = gate.load_run(outdir, case.config, case.n_gpus, wall_s=wall, harness=samples,
                                           command=outcome.command)
        except GateError as exc:
            outcome.error = str(exc)
        return outcome

    def warm_up(self) -> None:
        """Once, before the first timed run: the profile's [run] warmup_reads reads through the
        same command on as many GPUs as the largest configuration uses, so that the one-time costs of
        a fresh machine (compile caches, kept per GPU index, the matmul-peak measurement, the page
        cache of the weights and of the Python packages) land here and not in whichever
        configuration happens to run first. Its wall time goes into the report's notes."""
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
            case = Case(WARMUP, self.warmup_gpus(), self.cases[0].precision)
            cmd = self.predict_command(sub, self.out / "runs" / WARMUP, str(self.profile.data["run"]["engine"]),
                                       device, case.n_gpus, case.precision)
            outcome = self.launch(case, cmd, self.out / "runs" / WARMUP, self._timeout(n * 50, self.cases[0]))
        except GateError as exc:
            outcome = RunOutcome(error=str(exc))
        self.runs[WARMUP] = outcome
        if outcome.record is not None:
            where = f"{case.n_gpus} GPU(s)" if case.n_gpus else "the CPU"
            self.notes.append(f"warm-up before the timed runs: {n:,} reads on {where} in "
                              f"{outcome.record.wall_s:.1f} s (caches are then warm for every configuration "
                              f"alike; not timed)")
        else:
            self.notes.append(f"warm-up run failed ({outcome.error}); the first timed configuration "
                              "pays the one-time start-up costs")

    def warmup_gpus(self) -> int:
        """GPUs of the warm-up run: those of the largest configuration that will run (0 on a CPU)."""
        if self.profile.device != "cuda":
            return 0
        return max([c.n_gpus for c in self.cases if self.skip_reason(c) is None] + [1])

    def run(self, case: Case) -> RunRecord:
        """The pipeline run of this configuration: launched on first request (after the
        session's warm-up), then shared. A failed run raises GateError for every test that asks."""
        if case.config not in self.runs:
            self.warm_up()
            self.launch_timed(case)
        outcome = self.runs[case.config]
        if outcome.record is None:
            raise GateError(outcome.error or f"{case.config}: no run")
        return outcome.record

    def launch_timed(self, case: Case) -> RunOutcome:
        """Launch this configuration's run now (no warm-up here: the benchmark test's setup does it)."""
        try:
            outdir = self.out / "runs" / case.config
            self.runs[case.config] = self.launch(case, *self._case_command(case, outdir))
        except GateError as exc:
            self.runs[case.config] = RunOutcome(error=str(exc))
        return self.runs[case.config]

    def _case_command(self, case: Case, outdir: Path) -> tuple[list[str], Path, float]:
        """(command, outdir, timeout) of ``case``'s gated run on the workload: its first run and the
        speedup's repeats alike."""
        engine = str(self.profile.data["run"]["engine"])
        device = "cpu" if case.n_gpus == 0 else "cuda"
        workload = self.workload()
        reads = int(self.workload_info.get("reads") or 0) or _count_records(workload)
        cmd = self.predict_command(workload, outdir, engine, device, case.n_gpus, case.precision)
        return cmd, outdir, self._timeout(reads, case)

    def _reference_case(self, name: str) -> tuple[Case, str]:
        """The reference engine's run as a Case, and its device ([reference] device, else the profile's)."""
        ref = self.profile.section("reference") or {}
        device = str(ref.get("device") or ("cuda" if self.profile.device == "cuda" else "cpu"))
        return Case(name, 1 if device.startswith("cuda") else 0), device

    def _reference_command(self, inp: Path, n_reads: int, outdir: Path, device: str, n_gpus: int
                           ) -> tuple[list[str], Path, float]:
        """(command, outdir, timeout) of a reference-engine run on ``inp`` (``n_reads`` reads); the
        reference engine is far slower than the gated one: 50x its per-read budget."""
        cmd = self.predict_command(inp, outdir, "reference", device, n_gpus)
        return cmd, outdir, self._timeout(n_reads * 50, self.cases[0])

    def skip_reason(self, case: Case) -> str | None:
        why = gate.cannot_run(self.profile, case.n_gpus, self.detected, self.gpu_name, self.explicit)
        return f"{case.config} {why}" if why else None

    def unrunnable(self) -> list[tuple[str, str]]:
        """(configuration, reason) for each selected configuration this machine cannot run."""
        return [(c.config, r) for c in self.selected if (r := self.skip_reason(c))]

    # ---------------------------------------------------------------- reference run
    @property
    def side_by_side(self) -> bool:
        """The reference engine runs on the very input of the gated runs ([reference] side_by_side)."""
        return bool((self.profile.section("reference") or {}).get("side_by_side"))

    def reference_reads(self) -> int:
        ref = self.profile.section("reference") or {}
        return int(ref.get("subsample_reads", 0))

    def reference_run(self) -> RunRecord:
        """The reference engine, once: on the same input as the gated runs (side by side), or on
        the first [reference] subsample_reads reads."""
        if REFERENCE not in self.runs:
            try:
                case, device = self._reference_case(REFERENCE)
                if self.side_by_side:
                    sub, n = self.workload(), int(self.workload_info.get("reads") or 0) or _count_records(self.workload())
                    self._reference_ids = set()
                else:
                    k = self.reference_reads()
                    if k <= 0:
                        raise GateError(f"profile {self.profile.name} sets no [reference] subsample_reads")
                    sub = self.out / "reference-input.fa"
                    self.out.mkdir(parents=True, exist_ok=True)
                    ids = gate.head_fasta(self.workload(), sub, k)
                    self._reference_ids, n = set(ids), len(ids)
                self.warm_up()
                self.runs[REFERENCE] = self.launch(case, *self._reference_command(
                    sub, n, self.out / "runs" / REFERENCE, device, case.n_gpus))
            except GateError as exc:
                self.runs[REFERENCE] = RunOutcome(error=str(exc))
        outcome = self.runs[REFERENCE]
        if outcome.record is None:
            raise GateError(f"reference run failed: {outcome.error}")
        return outcome.record

    def speedup_repeats(self, case: Case) -> list[tuple[RunRecord, RunRecord]]:
        """The (reference, ``case``) run pairs of the side-by-side speedup's later rounds ([speedup_vs_reference]
        rounds; none when 1 or on a sub-sample). On first request, after round 1 (the configurations'
        runs and the reference run), rounds 2..N run the reference and every selected configuration
        once each, interleaved in alternating order (round 2 backwards, round 3 forwards, ...), so that
        the two runs of each round share the machine's load of their moment and a neighbour's job
        lands in one round, not in one engine's every figure. A failed repeat raises GateError."""
        n = int((self.profile.section("speedup_vs_reference") or {}).get("rounds", 1))
        if n <= 1 or not self.side_by_side:
            return []
        if REFERENCE not in self.repeats:
            configs = [c for c in (self.selected or self.cases) if self.skip_reason(c) is None]
            for c in configs:
                self.run(c)
            self.reference_run()
            reads = int(self.workload_info.get("reads") or 0) or _count_records(self.workload())
            order = [*configs, None]   # None: the reference engine
            t0 = time.time()
            for k in range(2, n + 1):
                for c in (reversed(order) if k % 2 == 0 else order):
                    key = REFERENCE if c is None else c.config
                    outdir = self.out / "runs" / f"{key}-round{k}"
                    if c is None:   # as reference_run launches it (side by side: on the workload)
                        run_case, device = self._reference_case(f"{key}-round{k}")
                        how = self._reference_command(self.workload(), reads, outdir, device, run_case.n_gpus)
                    else:           # as launch_timed launches it
                        run_case = Case(f"{key}-round{k}", c.n_gpus, c.precision)
                        how = self._case_command(c, outdir)
                    self.repeats.setdefault(key, []).append(self.launch(run_case, *how))
            self.notes.append(f"speedup_vs_reference: rounds 2-{n} of the reference engine and "
                              f"{', '.join(c.config for c in configs)} ran interleaved after round 1 in "
                              f"{time.time() - t0:.0f} s (outputs in runs/*-round*)")
        failed = [o.error for key in (REFERENCE, case.config) for o in self.repeats.get(key, []) if o.record is None]
        if failed:
            raise GateError(f"a repeated speedup run failed: {failed[0]}")
        return [(r.record, o.record) for r, o in zip(self.repeats[REFERENCE], self.repeats.get(case.config, []))]

    # ---------------------------------------------------------------- baseline
    def baseline_for(self, run: RunRecord) -> BaselineChoice:
        """The correctness baseline (resolved once per session)."""
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

    def _resolve_baseline(self, run: RunRecord) -> BaselineChoice:
        given = self.options.get("baseline")
        if given:
            b = bl.load_baseline(Path(given).expanduser())
            if b.manifest is None:
                note = (f"baseline {b.path}: user-supplied v1.0 outputs without manifest; models and "
                        f"chunk length not verifiable (they must match: chunk length {self.chunk_length}); "
                        f"make it verifiable with `virnucpro baseline import`")
                self.notes.append(note)
                return BaselineChoice(b.path, None, note, ORIGIN_UNKNOWN)
            bl.check_compatible(b, run.manifest, self.workload_sha256())
            if bl.origin(b) == bl.ORIGIN_IMPORTED:
                src = (b.manifest.get("source") or {}).get("dir", "?")
                note = (f"baseline {b.path}: imported v1.0 outputs of {src} (chunk length "
                        f"{b.manifest.get('chunk_length')} and input sha256 match the run)")
                return BaselineChoice(b.path, None, note, ORIGIN_IMPORTED)
            note = f"baseline {b.path} (--baseline; manifest matches models, chunk length, input)"
            return BaselineChoice(b.path, None, note, ORIGIN_REFERENCE)
        stored = bl.find_compatible(self.root / "baselines", run.manifest, self.workload_sha256())
        if stored is not None:
            origin = ORIGIN_IMPORTED if bl.origin(stored) == bl.ORIGIN_IMPORTED else ORIGIN_REFERENCE
            return BaselineChoice(stored.path, None, f"stored baseline {stored.path.relative_to(self.root)} "
                                  "(manifest matches)", origin)
        ref = self.reference_run()
        restrict = None if ref.reads >= run.reads else set(self._reference_ids)
        scope = "the same reads, side by side" if restrict is None else f"the first {ref.reads:,} reads"
        note = (f"no stored baseline fits (models/chunk length/input): the reference engine's run in "
                f"this session on {scope} is the baseline")
        self.notes.append(note)
        return BaselineChoice(ref.outdir, restrict, note, ORIGIN_REFERENCE)

    def compare_against_baseline(self, run: RunRecord):
        """(CompareResult, note, Borderline) of the run's outputs against the baseline."""
        from virnucpro.perf.compare import compare_dirs

        choice = self.baseline_for(run)
        target = run.outdir
        if choice.restrict is not None:
            target = gate.restrict_outputs(run.outdir, choice.restrict,
                                           self.out / "runs" / f"{run.config}-restricted")
        c = self.profile.section("correctness", run.precision) or {}
        border = borderline_counts(choice.path, target, float(c.get("borderline_distance", 0.02)))
        return compare_dirs(choice.path, target, top=10), choice.note, border

    @property
    def baseline_origin(self) -> str | None:
        return self._baseline.origin if self._baseline is not None else None

    def command_line(self, key: str) -> str:
        o = self.runs[key]
        return " ".join(shlex.quote(a) for a in o.command)


class RunClock:
    """pytest-benchmark's timer for one pedantic round of the benchmark test: 0 before the target,
    then the wall time the harness measured for the configuration's run. So the history holds the
    run alone — whichever test happened to launch it (the run is shared), and never the warm-up."""

    __name__ = "gate-harness-wall-clock"   # as pytest-benchmark names a timer in its history

    def __init__(self, gs: GateSession, case: Case):
        self.gs, self.case, self.calls = gs, case, 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls % 2:
            return 0.0
        o = self.gs.runs.get(self.case.config)
        return float(o.record.wall_s) if o is not None and o.record is not None else float("nan")


def _count_records(path: Path) -> int:
    return len(gate.fasta_ids(path))


__all__ = ["GateSession", "Case", "CRITERIA", "RunClock", "RunOutcome", "BaselineChoice", "Borderline", "detect_gpus",
           "REFERENCE", "WARMUP", "ORIGIN_IMPORTED", "ORIGIN_REFERENCE", "ORIGIN_UNKNOWN"]
