"""Perfect foresight as physics allows: the MILP without simultaneous charge and discharge vs its LP relaxation.

``python -m bench.perfect_foresight [--region SA1] [--start 2021-01-15T04:05] [--intervals 288] [--fcas]
[--data PATH ...] [--mip-rel-gap 0.001]`` (or ``vpp bench perfect-foresight``) solves the perfect-foresight
benchmark of shared/NEM.md (:func:`algorithms.market.optimise.perfect_foresight`, the configured battery,
starting and ending at the configured initial SoC) over ``intervals`` dispatch intervals from ``start``
(interval-ending AEST) of the market data (the configured data folder, or the MMS files and folders of
``--data``: e.g. a DISPATCHPRICE zip of data/nemweb), twice: as the LP relaxation (charging and discharging at
once allowed) and physically (exact: binaries where the relaxation does it, branch and bound to within
``mip_rel_gap`` of the proven bound, the benchmark's 0.1 % unless given). Prints per case the relaxation's value
($), the intervals in which it charges and discharges at once, the physical value ($), its proven bound ($), the
MIP gap, the binaries of the final MILP, the status and both wall times (s). The dollar figures are
deterministic unless a solve hits the time limit; the times depend on the machine. No stack needed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from algorithms.common.battery import battery_from_spec, battery_spec_from_settings
from algorithms.common.nem_time import hours_per_interval
from algorithms.market.optimise import (
    PERFECT_FORESIGHT_MIP_REL_GAP,
    DispatchPlan,
    perfect_foresight,
    simultaneous_intervals,
)
from algorithms.market.prices import DispatchPrices
from backtest.engine import market_prices
from backtest.runs import load_inputs
from settings import Settings, load_settings

DEFAULT_START = datetime(2021, 1, 15, 4, 5)
DEFAULT_INTERVALS = 288


@dataclass(frozen=True)
class PerfectForesightComparison:
    """One case: the LP relaxation and the physical plan ($, s)."""

    label: str
    relaxation: DispatchPlan
    relaxation_s: float
    physical: DispatchPlan
    physical_s: float


def _timed(prices: dict[str, np.ndarray], settings: Settings, *, include_fcas: bool,
           physical: bool, mip_rel_gap: float) -> tuple[DispatchPlan, float]:
    battery = battery_from_spec(battery_spec_from_settings(settings.battery))
    started = time.perf_counter()
    plan = perfect_foresight(prices, battery, include_fcas=include_fcas, physical=physical,
                             interval_hours=hours_per_interval(settings.market.interval_minutes),
                             initial_soc_fraction=settings.battery.initial_soc_fraction, mip_rel_gap=mip_rel_gap)
    return plan, time.perf_counter() - started


def _dispatch(settings: Settings, data: Sequence[Path]) -> DispatchPrices:
    """DISPATCHPRICE of ``data`` (MMS files or folders), or of the configured data folder when none is given."""
    return load_inputs(list(data) or [settings.market_data.data_dir]).dispatch


def compare_perfect_foresight(settings: Settings, *, region: str, start: datetime, intervals: int,
                              fcas: bool, data: Sequence[Path] = (),
                              mip_rel_gap: float = PERFECT_FORESIGHT_MIP_REL_GAP) -> list[PerfectForesightComparison]:
    """Energy only (and energy + FCAS when ``fcas``) over ``intervals`` intervals from ``start`` (AEST) of
    ``data`` (MMS files or folders; default the configured data folder): relaxation and physical plan (to
    ``mip_rel_gap`` of its bound) with their wall times. Raises ValueError when the data does not cover the
    window or a price is missing."""
    market = market_prices(settings, _dispatch(settings, data))
    stamps = np.array(market.intervals)
    found = np.flatnonzero(stamps == np.datetime64(start))
    if not found.size:
        raise ValueError(f"the market data has no interval ending {start:%Y-%m-%d %H:%M}")
    first = int(found[0])
    if first + intervals > len(stamps):
        raise ValueError(f"the market data ends before {intervals} intervals from {start:%Y-%m-%d %H:%M}")
    window = market.price[market.region_index(region), first:first + intervals, :]
    if not np.isfinite(window).all():
        raise ValueError(f"{region} has missing prices between {start:%Y-%m-%d %H:%M} and {intervals} intervals on")
    prices = {product: np.array(window[:, k]) for k, product in enumerate(market.products)}
    cases = [("energy only", False)] + ([("energy + FCAS", True)] if fcas else [])
    comparisons = []
    for label, include_fcas in cases:
        relaxation, relaxation_s = _timed(prices, settings, include_fcas=include_fcas, physical=False,
                                          mip_rel_gap=mip_rel_gap)
        physical, physical_s = _timed(prices, settings, include_fcas=include_fcas, physical=True,
                                      mip_rel_gap=mip_rel_gap)
        comparisons.append(PerfectForesightComparison(label, relaxation, relaxation_s, physical, physical_s))
    return comparisons


def report(comparisons: Sequence[PerfectForesightComparison], *, region: str, start: datetime,
           intervals: int) -> str:
    """The comparison as text lines ($, s)."""
    lines = [f"Perfect foresight {region}, {intervals} intervals from {start:%Y-%m-%d %H:%M} AEST "
             "(LP relaxation vs physical MILP, HiGHS):"]
    for case in comparisons:
        lp, milp = case.relaxation, case.physical
        burning = simultaneous_intervals(lp.gen_mw, lp.load_mw).size if lp.gen_mw.size else 0
        both = simultaneous_intervals(milp.gen_mw, milp.load_mw).size if milp.gen_mw.size else 0
        lines += [
            f"  {case.label}:",
            f"    LP relaxation  ${lp.objective_dollars:,.2f}  ({lp.status}, {case.relaxation_s:.2f} s; charges "
            f"and discharges at once in {burning} intervals)",
            f"    physical MILP  ${milp.objective_dollars:,.2f}  ({milp.status}, {case.physical_s:.2f} s; "
            f"bound ${milp.objective_bound_dollars:,.2f}, gap {100 * milp.mip_gap:.4f} %, "
            f"{milp.exclusive_intervals} binaries, {both} intervals with gen and load > 0)",
            f"    physical / relaxation {100 * milp.objective_dollars / lp.objective_dollars:.2f} %"
            if lp.objective_dollars else "    physical / relaxation -",
        ]
    return "\n".join(lines)


def main(settings: Settings, *, region: str, start: datetime, intervals: int, fcas: bool,
         data: Sequence[Path] = (), mip_rel_gap: float | None = None) -> int:
    """Print the comparison (the physical MILP to ``mip_rel_gap``, None: the benchmark's
    :data:`~algorithms.market.optimise.PERFECT_FORESIGHT_MIP_REL_GAP`); 0 when every physical plan is OPTIMAL,
    1 otherwise."""
    gap = PERFECT_FORESIGHT_MIP_REL_GAP if mip_rel_gap is None else mip_rel_gap
    comparisons = compare_perfect_foresight(settings, region=region, start=start, intervals=intervals, fcas=fcas,
                                            data=data, mip_rel_gap=gap)
    print(report(comparisons, region=region, start=start, intervals=intervals))
    return 0 if all(c.physical.status == "OPTIMAL" for c in comparisons) else 1


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--region", default="SA1")
    parser.add_argument("--start", type=datetime.fromisoformat, default=DEFAULT_START,
                        help="first interval (interval-ending AEST), e.g. 2021-01-15T04:05")
    parser.add_argument("--intervals", type=int, default=DEFAULT_INTERVALS)
    parser.add_argument("--fcas", action="store_true", help="also energy + FCAS")
    parser.add_argument("--data", type=Path, action="append", default=[],
                        help="MMS data (DISPATCHPRICE files or folders; default the configured data folder)")
    parser.add_argument("--mip-rel-gap", type=float, default=PERFECT_FORESIGHT_MIP_REL_GAP,
                        help="relative gap the physical MILP is solved to (default the benchmark's)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = _arguments(None)
    if arguments.intervals < 1:
        raise SystemExit("--intervals must be at least 1")
    raise SystemExit(main(load_settings(), region=arguments.region, start=arguments.start,
                          intervals=arguments.intervals, fcas=arguments.fcas, data=arguments.data,
                          mip_rel_gap=arguments.mip_rel_gap))
