"""The performance gate: one test per criterion and configuration (docs/perf-gate.md).

Each test reads its thresholds from the session's hardware profile (baselines/profiles/*.toml),
judges the shared pipeline run of its configuration with a function of virnucpro.perf.criteria,
records the result for the report and asserts with a message that states target and measurement.
A criterion whose measurement is absent here (NVML on a CPU) is skipped with that reason: the
report shows it as "not measured", never as a pass.
"""

from __future__ import annotations

import pytest

from gate_harness import Case, GateSession, RunClock
from virnucpro.perf import criteria, gate
from virnucpro.perf.gate import Check, GateError, RunRecord


def _fail_on_gate_error(fn, *args):
    try:
        return fn(*args)
    except GateError as exc:
        pytest.fail(str(exc), pytrace=False)


def _judge(check: Check) -> None:
    if check.not_measured:
        pytest.skip(check.message)
    assert check.passed, check.message


def test_benchmark_wall_time(gate_session: GateSession, gate_case: Case, benchmark) -> None:
    """Record the configuration's end-to-end wall time with pytest-benchmark (history for the
    nightly job: --benchmark-autosave / --benchmark-compare). pedantic's setup makes the inputs and
    runs the session's warm-up; the figure recorded is the harness's wall clock of the run itself."""
    reason = gate_session.skip_reason(gate_case)
    if reason:
        pytest.skip(reason)

    def setup() -> None:
        _fail_on_gate_error(gate_session.workload)
        _fail_on_gate_error(gate_session.models)
        gate_session.warm_up()

    if not hasattr(benchmark, "_timer"):
        pytest.fail("this pytest-benchmark keeps its timer elsewhere; the gate cannot feed it the run's "
                    "wall time", pytrace=False)
    benchmark._timer = RunClock(gate_session, gate_case)
    benchmark.group = f"virnucpro predict ({gate_session.profile.name})"
    run = _fail_on_gate_error(lambda: benchmark.pedantic(gate_session.run, args=(gate_case,), setup=setup,
                                                         rounds=1, iterations=1))
    s = run.summary
    benchmark.extra_info.update({
        "profile": gate_session.profile.name, "config": gate_case.config, "n_gpus": gate_case.n_gpus,
        "gpu": gate_session.gpu_name, "wall_s": round(run.wall_s, 3), "run_wall_s": s.get("wall_s"),
        "reads": s.get("reads"), "chunks": s.get("chunks"), "frames": s.get("frames"),
        "engine": s.get("engine"), "precision": s.get("precision"), "synthetic": s.get("synthetic"),
        "stages": s.get("stages"), "packing_efficiency": s.get("packing_efficiency"),
        "gpu_util_mean": s.get("gpu_util_mean"), "mfu_esm": s.get("mfu_esm"),
        "esm_tokens_per_s": s.get("esm_tokens_per_s"),
        "projected_s_per_million_reads": round(run.projected_wall_s(gate.MILLION), 1),
        "workload": gate_session.workload_info,
    })
    assert run.reads > 0, f"{gate_case.config}: the run read no reads (summary reads = {run.reads})"


def test_wall_time(pipeline_run: RunRecord, hw_profile, record_check) -> None:
    _judge(record_check(_fail_on_gate_error(gate.check_wall_time, pipeline_run, hw_profile)))


def test_gpu_utilisation(pipeline_run: RunRecord, hw_profile, record_check) -> None:
    _judge(record_check(_fail_on_gate_error(criteria.check_gpu_util, pipeline_run, hw_profile)))


def test_packing_efficiency(pipeline_run: RunRecord, hw_profile, record_check) -> None:
    _judge(record_check(_fail_on_gate_error(criteria.check_packing, pipeline_run, hw_profile)))


def test_mfu_esm(pipeline_run: RunRecord, hw_profile, record_check) -> None:
    _judge(record_check(_fail_on_gate_error(criteria.check_mfu, pipeline_run, hw_profile)))


def _single_gpu_run(gate_session: GateSession, like: Case) -> RunRecord:
    one = next((c for c in gate_session.cases if c.n_gpus == 1 and c.precision == like.precision), None)
    if one is None:
        pytest.skip("no 1-GPU configuration in this session")
    reason = gate_session.skip_reason(one)
    if reason:
        pytest.skip(reason)
    return _fail_on_gate_error(gate_session.run, one)


def test_scaling(gate_session: GateSession, gate_case: Case, pipeline_run: RunRecord, hw_profile,
                 record_check) -> None:
    single = _single_gpu_run(gate_session, gate_case)
    _judge(record_check(_fail_on_gate_error(criteria.check_scaling, single, pipeline_run, hw_profile)))


def test_consistency(gate_session: GateSession, gate_case: Case, pipeline_run: RunRecord, hw_profile,
                     record_check) -> None:
    single = _single_gpu_run(gate_session, gate_case)
    _judge(record_check(_fail_on_gate_error(criteria.check_consistency, single, pipeline_run, hw_profile)))


def test_speedup_vs_reference(gate_session: GateSession, gate_case: Case, pipeline_run: RunRecord, hw_profile,
                              record_check) -> None:
    ref = _fail_on_gate_error(gate_session.reference_run)
    repeats = _fail_on_gate_error(gate_session.speedup_repeats, gate_case)
    _judge(record_check(criteria.check_speedup_vs_reference(ref, pipeline_run, hw_profile,
                                                            same_reads=gate_session.side_by_side, repeats=repeats)))


def test_speedup_vs_v1(pipeline_run: RunRecord, hw_profile, record_check) -> None:
    _judge(record_check(_fail_on_gate_error(criteria.check_speedup_vs_v1, pipeline_run, hw_profile)))


def test_correctness(gate_session: GateSession, pipeline_run: RunRecord, hw_profile, record_check) -> None:
    result, note, border = _fail_on_gate_error(gate_session.compare_against_baseline, pipeline_run)
    _judge(record_check(criteria.check_correctness(result, pipeline_run.config, hw_profile, note, border,
                                                   pipeline_run.precision)))
