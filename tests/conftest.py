"""Shared fixtures for the end-to-end and CLI tests.

- ``tiny_models``: one tiny synthetic model set per test session (a few seconds to write), shared by
  every test that runs the pipeline.
- ``reads_600`` and ``one_worker_run``: the reads and the uninterrupted one-worker fast run that the
  worker, signal, resume and lock tests (test_parallel, test_lifecycle, test_lock) compare against.
- ``run_cli``: runs ``virnucpro.cli.main([...])`` in this process and returns exit code, stdout and
  stderr; fast, and lets tests monkeypatch the pipeline.
- ``run_module``: runs ``python -m virnucpro ...`` as a real subprocess, for the few tests that must
  prove the installed command itself behaves (exit codes, what a user sees on stderr).
- Faults (a worker that dies, a full disk, ...) are injected with a ``FaultPlan``: ``run_cli(...,
  faults=FaultPlan(...))`` in this process, ``tests/fault_launcher.py`` in a subprocess.

Logging of the ``virnucpro`` logger is reset after every test: a run installs handlers bound to the
streams of the moment (pytest's capture objects), which must not leak into the next test.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Without a GPU the Triton kernels (virnucpro/models/esm2_triton.py) are tested through Triton's
# interpreter, which must be chosen before triton is first imported.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def interpret():
    """Skip unless the Triton kernels run through Triton's interpreter here (a CPU machine with Triton)."""
    pytest.importorskip("triton", reason="Triton is not installed (pip install triton): kernel tests need its interpreter")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("TRITON_INTERPRET=1 was not set before triton was imported (tests/conftest.py sets it without a GPU)")


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def __str__(self) -> str:  # shown in assertion messages
        return f"exit {self.code}\n--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"


def reset_virnucpro_logging() -> None:
    """Undo what a run's ``setup_logging`` did to the ``virnucpro`` logger."""
    root = logging.getLogger("virnucpro")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.propagate = True
    root.setLevel(logging.NOTSET)


@pytest.fixture(autouse=True)
def _reset_virnucpro_logging():
    yield
    reset_virnucpro_logging()


@pytest.fixture(autouse=True)
def _no_user_tuned_files(tmp_path_factory, monkeypatch):
    """predict takes defaults from the tuned files `virnucpro tune` writes into the user's config
    directory: tests see an empty one (a test that wants tuned files sets XDG_CONFIG_HOME itself)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "empty-xdg-config"))


@pytest.fixture(scope="session")
def synthetic_reads(tmp_path_factory) -> Callable[[int, int], Path]:
    """``synthetic_reads(n, seed)``: a FASTA of n simulated reads (real genomes), written once per session."""
    from virnucpro.workloads.reads import write_reads_fasta
    made: dict[tuple[int, int], Path] = {}

    def make(n: int, seed: int) -> Path:
        if (n, seed) not in made:
            made[n, seed] = tmp_path_factory.mktemp(f"reads_n{n}_s{seed}") / "reads.fa"
            write_reads_fasta(made[n, seed], n, seed=seed)
        return made[n, seed]
    return make


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A tiny synthetic model set (ESM-2, DNABERT-S, 300/500 classifiers as .pth and .safetensors)."""
    from virnucpro.models.synth import synth
    out = tmp_path_factory.mktemp("tiny_models")
    synth(out, "tiny", seed=0, device="cpu")
    return out


@pytest.fixture(scope="session")
def reads_600(synthetic_reads) -> Path:
    """600 simulated reads (seed 3): ~460 kept frames, ~14 work units under run_helpers.FAST. The input
    of the tests that run the fast engine in workers, stop it and resume it (test_parallel,
    test_lifecycle, test_lock)."""
    return synthetic_reads(600, 3)


@pytest.fixture(scope="session")
def one_worker_run(reads_600, tiny_models, tmp_path_factory, run_cli) -> Path:
    """The output directory of an uninterrupted one-worker run of ``reads_600`` (in this process, with
    run_helpers.FAST): what every parallel, stopped, resumed or locked-out run must reproduce byte for
    byte. Made once per session and shared: read it, or copy it before changing anything."""
    from run_helpers import FAST
    out = tmp_path_factory.mktemp("one_worker_run") / "one"
    res = run_cli("predict", reads_600, "-o", out, "--models", tiny_models, *FAST)
    assert res.code == 0, str(res)
    return out


def invoke_cli(*args: str | os.PathLike, faults=None) -> CliResult:
    """``virnucpro.cli.main(args)`` with stdout/stderr captured; SystemExit (``--help``) gives its code.
    Log handlers the run installs bind to the captured stderr, so warnings show up in ``err``.
    ``faults``: a ``virnucpro.run.faults.FaultPlan`` handed to ``predict``."""
    from virnucpro.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args], faults)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            reset_virnucpro_logging()  # its handlers hold the StringIO and the log file: drop them
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., CliResult]:
    """Run the CLI in this process: ``run_cli("predict", path, "-o", out, faults=None) -> CliResult``."""
    return invoke_cli


@pytest.fixture
def run_module() -> Callable[..., CliResult]:
    """Run ``python -m virnucpro ARGS`` in a subprocess (the package as installed or from the repo)."""

    def run(*args: str | os.PathLike, timeout: float = 120, env: dict | None = None) -> CliResult:
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
        full_env.pop("VIRNUCPRO_DEBUG", None)
        proc = subprocess.run([sys.executable, "-m", "virnucpro", *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, env=full_env)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run
