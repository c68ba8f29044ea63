"""``vpp bench perfect-foresight`` on any MMS data: a month of data/nemweb with days of negative prices."""

from __future__ import annotations

from datetime import datetime

import pytest

from algorithms.market.lp_matrix import highspy_available
from bench.perfect_foresight import compare_perfect_foresight, main
from settings import load_settings
from tests.aemo_fixtures import archive_zip

pytestmark = pytest.mark.skipif(not highspy_available(), reason="the MILP is solved by highspy")


def test_the_bench_reads_the_files_it_is_given_and_reports_a_physical_plan_within_the_gap(
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(environ={})
    september = [archive_zip("2024_09", "DISPATCHPRICE")]
    code = main(settings, region="SA1", start=datetime(2024, 9, 29, 0, 5), intervals=576, fcas=False,
                data=september)
    printed = capsys.readouterr().out
    assert code == 0
    assert "Perfect foresight SA1, 576 intervals from 2024-09-29 00:05 AEST" in printed
    assert "charges and discharges at once in 164 intervals" in printed
    assert "302 binaries, 0 intervals with gen and load > 0" in printed
    [case] = compare_perfect_foresight(settings, region="SA1", start=datetime(2024, 9, 29, 0, 5), intervals=576,
                                       fcas=False, data=september, mip_rel_gap=0.002)
    assert case.physical.status == "OPTIMAL"
    assert case.physical.mip_gap <= 0.002
    assert case.physical.objective_dollars < case.relaxation.objective_dollars
    # Not the configured January 2021 folder: its window does not exist in September 2024's file.
    with pytest.raises(ValueError, match="no interval ending 2021-01-15 04:05"):
        compare_perfect_foresight(settings, region="SA1", start=datetime(2021, 1, 15, 4, 5), intervals=12,
                                  fcas=False, data=september)
