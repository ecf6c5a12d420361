"""Fixtures and hooks of the performance gate (docs/perf-gate.md).

- One hardware profile per session (virnucpro.perf.gate.select_profile): --hw-profile, else the
  profile whose marker -m selects, else the detected GPU's, else cpu-smoke.
- Every criterion test is parametrized over the session's configurations (``gate_case``:
  ``cpu-fp32``, ``cpu-fp16`` or ``1gpu``, ``2gpu``, ...; virnucpro.perf.gate.configurations) and
  carries the profile's marker, plus ``gpu``/``slow`` and ``multigpu`` where they apply; a
  criterion the profile does not set is not generated.
- ``pipeline_run`` launches each configuration once per session (shared by all tests) and skips
  with a reason when the machine cannot run it (too few GPUs, another GPU model).
- After the session, ``<gate-out>/report.md`` (+ results.json and PNG plots) is written, and the
  session fails when the verdict is not a pass: a configuration the profile requires could not
  run (unless --gate-allow-missing), nothing ran, a criterion failed, or a figure regressed beyond
  --gate-max-regression against --gate-previous.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

from gate_harness import CRITERIA, Case, GateSession, detect_gpus
from virnucpro.perf import gate
from virnucpro.perf.gate import Check, GateError, RunRecord

GATE = pytest.StashKey[GateSession]()
ROOT = Path(__file__).resolve().parent.parent

def pytest_configure(config: pytest.Config) -> None:
    opts = {k: config.getoption(k) for k in ("workload", "models", "hw_profile", "gate_out",
                                             "gate_reads", "gate_cache", "baseline", "gate_allow_missing",
                                             "gate_previous", "gate_max_regression")}
    detected, gpu_name = detect_gpus()
    try:
        profiles = gate.profiles_in(ROOT / "baselines" / "profiles")
        profile, why = gate.select_profile(profiles, opts["hw_profile"],
                                           config.getoption("markexpr") or "", gpu_name)
    except GateError as exc:
        raise pytest.UsageError(f"performance gate: {exc}") from None
    explicit = bool(opts["hw_profile"])
    gs = GateSession(profile, why, opts, ROOT, detected, gpu_name, explicit=explicit)
    if explicit and gpu_name and profile.device == "cuda" and \
            gate.cannot_run(profile, 1, detected, gpu_name, False) is not None:
        gs.notes.append(f"profile {profile.name} is meant for {', '.join(profile.data.get('gpu_name_patterns', []))} "
                        f"GPUs; this machine has {gpu_name!r} (chosen explicitly by {why})")
    config.stash[GATE] = gs


def pytest_report_header(config: pytest.Config) -> list[str]:
    gs = config.stash.get(GATE, None)
    if gs is None:
        return []
    gpus = f"{gs.detected} x {gs.gpu_name}" if gs.detected else "no CUDA GPU"
    return [f"performance gate: profile {gs.profile.name} ({gs.why}); {gpus}; configurations "
            f"{', '.join(c.config for c in gs.cases)}; output {gs.out}"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gate_case" not in metafunc.fixturenames:
        return
    gs: GateSession = metafunc.config.stash[GATE]
    section, multi = CRITERIA[metafunc.function.__name__]
    params = []
    for case in gs.cases:
        if section != "benchmark" and gs.profile.section(section) is None:
            continue
        if multi and case.n_gpus < 2:
            continue
        marks = [getattr(pytest.mark, gs.profile.marker)]
        if case.n_gpus:
            marks += [pytest.mark.gpu, pytest.mark.slow]
        if case.n_gpus >= 2:
            marks.append(pytest.mark.multigpu)
        params.append(pytest.param(case, id=case.config, marks=marks))
    metafunc.parametrize("gate_case", params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop criterion tests the profile does not define (their parameter set is empty)."""
    keep, drop = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        if "gate_case" in getattr(item, "fixturenames", ()) and not (
                spec and isinstance(spec.params.get("gate_case"), Case)):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_collection_finish(session: pytest.Session) -> None:
    """Which configurations this session's selection (after -m and -k) judges."""
    gs = session.config.stash.get(GATE, None)
    if gs is None:
        return
    chosen = {}
    for item in session.items:
        spec = getattr(item, "callspec", None)
        case = spec.params.get("gate_case") if spec else None
        if isinstance(case, Case):
            chosen[case.config] = case
            gs.criteria_selected |= CRITERIA[item.originalname][0] != "benchmark"
    gs.selected = [c for c in gs.cases if c.config in chosen]


# ------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="session")
def gate_session(request: pytest.FixtureRequest) -> GateSession:
    return request.config.stash[GATE]


@pytest.fixture(scope="session")
def hw_profile(gate_session: GateSession) -> gate.Profile:
    return gate_session.profile


@pytest.fixture(scope="session")
def workload(gate_session: GateSession) -> Path:
    """The session's input FASTA (--workload / VIRNUCPRO_GATE_WORKLOAD, else synthetic)."""
    try:
        return gate_session.workload()
    except GateError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def models(gate_session: GateSession) -> Path:
    """The model directory (--models / VIRNUCPRO_GATE_MODELS, else synthetic)."""
    try:
        return gate_session.models()
    except GateError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def pipeline_run(gate_session: GateSession, gate_case: Case) -> RunRecord:
    """This configuration's run (launched once per session): wall time, telemetry, outputs."""
    reason = gate_session.skip_reason(gate_case)
    if reason:
        pytest.skip(reason)
    try:
        return gate_session.run(gate_case)
    except GateError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def record_check(request: pytest.FixtureRequest) -> Callable[[Check], Check]:
    """Attach a Check to the current test so the report shows its target and measurement."""

    def record(check: Check) -> Check:
        request.node.stash[_CHECK] = check
        return check

    return record


_CHECK = pytest.StashKey[Check]()


# ------------------------------------------------------------------------------------ report

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    rep = yield
    spec = getattr(item, "callspec", None)
    case = spec.params.get("gate_case") if spec else None
    gs = item.config.stash.get(GATE, None)
    if gs is None or not isinstance(case, Case):
        return rep
    final = rep.when == "call" or (rep.when == "setup" and not rep.passed)
    if not final:
        return rep
    check = item.stash.get(_CHECK, None)
    name = item.originalname or item.name
    outcome = rep.outcome if rep.when == "call" else ("skipped" if rep.skipped else "error")
    if outcome == "skipped" and check is not None and check.not_measured:
        outcome = "not measured"
    row: dict[str, Any] = {"test": name, "config": case.config, "criterion": CRITERIA[name][0],
                           "outcome": outcome}
    if check is not None:
        row.update(target=check.target, measured=check.measured, details=check.details,
                   passed=check.passed, values=check.values)
    if rep.skipped and isinstance(rep.longrepr, tuple) and check is None:
        row["reason"] = str(rep.longrepr[2]).removeprefix("Skipped: ")
    elif rep.failed and check is None:
        row["reason"] = _one_line(rep)
    gs.results.append(row)
    return rep


def _one_line(rep: pytest.TestReport) -> str:
    crash = getattr(rep.longrepr, "reprcrash", None)
    msg = crash.message if crash is not None else str(rep.longrepr)
    return " ".join(msg.split())[:500]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the report; a verdict other than a pass fails the session even when every test
    passed or skipped (a sign-off must not be green when its configurations did not run)."""
    gs = session.config.stash.get(GATE, None)
    if gs is None or os.environ.get("PYTEST_XDIST_WORKER") or session.config.option.collectonly \
            or not (gs.selected or gs.results):
        return
    from gate_report import write_report

    gs.report_path = write_report(gs)
    if not gs.verdict.ok and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    gs = config.stash.get(GATE, None)
    path = getattr(gs, "report_path", None) if gs else None
    if path:
        terminalreporter.write_sep("=", f"performance gate: {gs.verdict.line}", red=not gs.verdict.ok,
                                   green=gs.verdict.ok)
        terminalreporter.write_line(f"report: {path}")
