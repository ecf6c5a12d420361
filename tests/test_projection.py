"""The 1M-read projection (virnucpro.perf.projection), one formula for the gate and for bench."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnucpro.perf import bench
from virnucpro.perf.gate import RunRecord
from virnucpro.perf.projection import MILLION, fixed_time_s, project_wall_s


def test_fixed_part_once_the_rest_scaled() -> None:
    # 100 s for 100,000 reads, 10 s of it fixed: 10 + 90 x 10
    assert project_wall_s(100.0, 10.0, 100_000) == pytest.approx(910.0)
    assert project_wall_s(100.0, 10.0, 100_000, target_reads=100_000) == pytest.approx(100.0), \
        "projecting to its own size must give its wall"
    assert project_wall_s(100.0, 0.0, 1000, target_reads=2000) == pytest.approx(200.0)


def test_fixed_part_is_bounded_by_the_wall_and_reads_by_one() -> None:
    assert project_wall_s(5.0, 8.0, 1000) == pytest.approx(5.0), "fixed beyond the wall counts as the wall"
    assert project_wall_s(5.0, -1.0, 1000, target_reads=2000) == pytest.approx(10.0), "a negative fixed part is 0"
    assert project_wall_s(5.0, 1.0, 0) == pytest.approx(1.0 + 4.0 * MILLION), "no reads: no division by zero"


def test_fixed_time_is_startup_outside_the_run_plus_loading() -> None:
    assert fixed_time_s(100.0, 95.0, 10.0) == pytest.approx(15.0)
    assert fixed_time_s(94.0, 95.0, 10.0) == pytest.approx(10.0), "a process wall below the run's: no negative start-up"


@pytest.mark.parametrize("wall, load, reads", [(48.4, 5.2, 100_000), (3.0, 3.5, 1000), (120.0, 0.0, 600_000)])
def test_bench_and_gate_give_the_same_projection_for_an_in_process_run(wall, load, reads) -> None:
    summary = {"wall_s": wall, "reads": reads, "stages": {"load_models": load}}
    run = RunRecord(config="1", n_gpus=1, outdir=Path("."), wall_s=wall, summary=summary, events=[], manifest={})
    assert bench.projection_1m_s(summary) == round(run.projected_wall_s(MILLION), 1)
