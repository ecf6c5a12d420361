"""Root conftest: the performance gate's command-line options (perf_tests/, docs/perf-gate.md).

Registered here, not in perf_tests/conftest.py, so that `pytest tests perf_tests ...` and
`pytest perf_tests ...` both know them. Each option also reads an environment variable, for CI.
"""

from __future__ import annotations

import os


def pytest_addoption(parser) -> None:
    g = parser.getgroup("virnucpro performance gate (perf_tests/)")
    g.addoption("--workload", metavar="FASTA", default=os.environ.get("VIRNUCPRO_GATE_WORKLOAD"),
                help="input FASTA for the gate runs, e.g. a real 1M-read sample "
                     "(env VIRNUCPRO_GATE_WORKLOAD; default: the profile's synthetic workload, "
                     "made with `virnucpro reads synth` and cached)")
    g.addoption("--models", metavar="DIR", default=os.environ.get("VIRNUCPRO_GATE_MODELS"),
                help="model directory with real weights (env VIRNUCPRO_GATE_MODELS; default: "
                     "synthetic models of the profile's preset and seed, cached, recorded as SYNTHETIC)")
    g.addoption("--hw-profile", metavar="NAME|TOML", default=os.environ.get("VIRNUCPRO_GATE_PROFILE"),
                help="hardware profile (baselines/profiles/NAME.toml or a path); default: the profile "
                     "whose marker -m selects, else the one matching the detected GPU, else cpu-smoke")
    g.addoption("--gate-out", metavar="DIR", default=os.environ.get("VIRNUCPRO_GATE_OUT", "gate-out"),
                help="where runs, report.md, results.json and plots go (default: ./gate-out)")
    g.addoption("--gate-reads", metavar="N", type=int,
                default=int(os.environ["VIRNUCPRO_GATE_READS"]) if os.environ.get("VIRNUCPRO_GATE_READS") else None,
                help="size of the synthetic workload (env VIRNUCPRO_GATE_READS; default: the profile's)")
    g.addoption("--gate-cache", metavar="DIR",
                default=os.environ.get("VIRNUCPRO_GATE_CACHE",
                                       os.path.join(os.path.expanduser("~"), ".cache", "virnucpro", "gate")),
                help="cache for synthetic models and workloads (env VIRNUCPRO_GATE_CACHE)")
    g.addoption("--baseline", metavar="DIR", default=os.environ.get("VIRNUCPRO_GATE_BASELINE"),
                help="v1.0 outputs to check correctness against: a baseline made by `virnucpro "
                     "baseline import` (real v1.0 outputs) or `baseline make`, or your own v1.0 output "
                     "directory (env VIRNUCPRO_GATE_BASELINE; default: a stored baselines/*/ that fits, "
                     "else the reference engine run in the session)")
    g.addoption("--gate-allow-missing", action="store_true",
                default=os.environ.get("VIRNUCPRO_GATE_ALLOW_MISSING", "") not in ("", "0"),
                help="accept a partial sign-off: configurations this machine cannot run (too few GPUs, "
                     "another GPU model) are reported as missing instead of failing the session "
                     "(env VIRNUCPRO_GATE_ALLOW_MISSING=1); the verdict line says so")
    g.addoption("--gate-previous", metavar="RESULTS_JSON", default=os.environ.get("VIRNUCPRO_GATE_PREVIOUS"),
                help="an earlier session's results.json: the report says which criterion moved "
                     "(env VIRNUCPRO_GATE_PREVIOUS)")
    g.addoption("--gate-max-regression", metavar="PCT", type=float,
                default=float(os.environ["VIRNUCPRO_GATE_MAX_REGRESSION"])
                if os.environ.get("VIRNUCPRO_GATE_MAX_REGRESSION") else None,
                help="with --gate-previous: fail the session when a criterion's figure moved the wrong "
                     "way by more than PCT percent (env VIRNUCPRO_GATE_MAX_REGRESSION; default: report only)")
