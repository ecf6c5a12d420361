"""The performance gate: one test per criterion and configuration (docs/perf-gate.md).

Each test reads its thresholds from the session's hardware profile (baselines/profiles/*.toml),
judges the shared pipeline run of its configuration with a function of virnucpro.perf.gate, records
the result for the report and asserts with a message that states target and measurement.
"""

from __future__ import annotations

import pytest

from gate_harness import Case, GateSession
from virnucpro.perf import gate
from virnucpro.perf.gate import GateError, RunRecord


def _fail_on_gate_error(fn, *args):
    try:
        return fn(*args)
    except GateError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_benchmark_wall_time(gate_session: GateSession, gate_case: Case, benchmark) -> None:
    """Record the configuration's end-to-end wall time with pytest-benchmark (history for the
    nightly job: --benchmark-autosave / --benchmark-compare). Runs first, so it launches the run;
    inputs (workload, models) are made before the clock starts."""
    reason = gate_session.skip_reason(gate_case)
    if reason:
        pytest.skip(reason)
    _fail_on_gate_error(gate_session.workload)
    _fail_on_gate_error(gate_session.models)
    if gate_case.config in gate_session.runs:
        pytest.skip(f"{gate_case.config} was launched by an earlier test; its time is in the report, "
                    "not in the benchmark history")
    benchmark.group = f"virnucpro predict ({gate_session.profile.name})"
    run = _fail_on_gate_error(lambda: benchmark.pedantic(gate_session.run, args=(gate_case,),
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
    check = record_check(_fail_on_gate_error(gate.check_wall_time, pipeline_run, hw_profile))
    assert check.passed, check.message


def test_gpu_utilisation(pipeline_run: RunRecord, hw_profile, record_check) -> None:
    check = record_check(_fail_on_gate_error(gate.check_gpu_util, pipeline_run, hw_profile))
    assert check.passed, check.message


def test_packing_efficiency(pipeline_run: RunRecord, hw_profile, record_check) -> None:
    check = record_check(_fail_on_gate_error(gate.check_packing, pipeline_run, hw_profile))
    assert check.passed, check.message


def test_mfu_esm(pipeline_run: RunRecord, hw_profile, record_check) -> None:
    check = record_check(_fail_on_gate_error(gate.check_mfu, pipeline_run, hw_profile))
    assert check.passed, check.message


def _single_gpu_run(gate_session: GateSession) -> RunRecord:
    one = next((c for c in gate_session.cases if c.n_gpus == 1), None)
    if one is None:
        pytest.skip("no 1-GPU configuration in this session")
    return _fail_on_gate_error(gate_session.run, one)


def test_scaling(gate_session: GateSession, pipeline_run: RunRecord, hw_profile, record_check) -> None:
    single = _single_gpu_run(gate_session)
    check = record_check(_fail_on_gate_error(gate.check_scaling, single, pipeline_run, hw_profile))
    assert check.passed, check.message


def test_consistency_across_gpus(gate_session: GateSession, pipeline_run: RunRecord, hw_profile,
                                 record_check) -> None:
    single = _single_gpu_run(gate_session)
    check = record_check(_fail_on_gate_error(gate.check_consistency, single, pipeline_run, hw_profile))
    assert check.passed, check.message


def test_speedup_over_v1(gate_session: GateSession, pipeline_run: RunRecord, hw_profile,
                         record_check) -> None:
    source = hw_profile.data["speedup"]["source"]
    if source == "known":
        v1 = gate.v1_from_known(hw_profile, pipeline_run.n_gpus)
    else:
        v1 = gate.v1_from_reference(_fail_on_gate_error(gate_session.reference_run), pipeline_run)
    check = record_check(gate.check_speedup(pipeline_run, v1, hw_profile))
    assert check.passed, check.message


def test_correctness(gate_session: GateSession, pipeline_run: RunRecord, hw_profile, record_check) -> None:
    result, note = _fail_on_gate_error(gate_session.compare_against_baseline, pipeline_run)
    check = record_check(gate.check_correctness(result, pipeline_run.config, hw_profile, note))
    assert check.passed, check.message
