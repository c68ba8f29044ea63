"""The per-interval ledger of a backtest, its perfect-foresight twin, forecast skill and where money went.

Pure functions over a :class:`backtest.engine.BacktestResult` and pandas frames; no I/O.

* :func:`contiguous_runs` — the stretches of consecutive intervals of a backtest with gaps in its data.
* :func:`perfect_foresight_ledger` — the benchmark of shared/NEM.md (:func:`algorithms.market.optimise.
  perfect_foresight`, energy + FCAS, starting at the configured SoC and ending with at least as much) over
  the backtest's intervals, per interval: MW, MWh and $ at the prices the simulated market clears at.
* :func:`backtest_ledger` — one row per decision: the decision and its dispatch interval (naive AEST,
  interval-ending), what cleared (MW, MWh, $ by product), the ENERGY forecast at every reported lead and
  level ($/MWh), and the perfect-foresight row of the same interval; ``vs_pf_dollars`` = realised − PF.
* :func:`forecast_skill_by_lead` — MAE of the median and mean pinball loss of the ENERGY forecast by lead
  against the historical dispatch price ($/MWh).
* :func:`attribution` — realised, PF and realised − PF summed by trading day, hour of day, price band and
  over price-spike events.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from algorithms.common.battery import battery_from_spec, battery_spec_from_settings
from algorithms.common.nem_time import hours_per_interval
from algorithms.common.products import ENERGY, fcas_products_of
from algorithms.market.forecast import pinball_loss
from algorithms.market.optimise import perfect_foresight
from algorithms.market.prices import DispatchPrices
from backtest.engine import BacktestError, BacktestResult, BenchmarkSolve, DecisionRecord, benchmark_solve_of
from settings import Settings

FloatArray = npt.NDArray[np.float64]

INTERVAL = timedelta(minutes=5)
# A spike interval: dispatch price at or above this ($/MWh), the lowest spike band of the bid ladders.
SPIKE_THRESHOLD_PER_MWH = 300.0
# Upper edges of the price bands ($/MWh); the last band is open-ended.
PRICE_BAND_EDGES = (0.0, 50.0, 100.0, 300.0, 1000.0, 5000.0)
MEDIAN_LEVEL = 0.5
PF_PREFIX = "pf_"


def result_leads(result: BacktestResult) -> tuple[int, ...]:
    """The leads (5-minute intervals; 1 = the dispatch interval) of the result's ENERGY forecasts
    (``DecisionRecord.energy_forecast_by_lead``)."""
    return tuple(int(lead) for lead in result.forecast_leads)


def result_quantiles(result: BacktestResult, settings: Settings) -> tuple[float, ...]:
    """The forecast levels of a backtest (``result.forecast_quantiles``, else its configuration's or the
    cycle's)."""
    levels = result.forecast_quantiles or result.config.forecast_quantiles or settings.cycle.forecast_quantiles
    return tuple(float(q) for q in levels)


# --------------------------------------------------------------------------------------------------
# Perfect foresight per interval
# --------------------------------------------------------------------------------------------------


def contiguous_runs(intervals: Sequence[datetime]) -> list[tuple[datetime, int]]:
    """(first interval, count) of each run of consecutive 5-minute intervals among sorted ``intervals``
    (interval-ending AEST): the stretches of a period the data covers without a gap."""
    if not intervals:
        return []
    moments = np.asarray(intervals, dtype="datetime64[s]")
    breaks = np.flatnonzero(np.diff(moments) != np.timedelta64(int(INTERVAL.total_seconds()), "s")) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [len(moments)]))
    return [(intervals[int(a)], int(b - a)) for a, b in zip(starts, stops, strict=True)]



def _price_window(market: DispatchPrices, region: str, first_interval: datetime, count: int) -> dict[str, FloatArray]:
    """Every product's prices ($/MWh, $/MW/h) of ``count`` intervals from ``first_interval`` (AEST)."""
    start = market.interval_index(first_interval)
    if start is None or start + count > len(market.intervals):
        raise BacktestError(f"the market data does not cover {count} intervals from "
                            f"{first_interval:%Y-%m-%d %H:%M}")
    window = np.asarray(market.price[market.region_index(region), start:start + count], dtype=np.float64)
    last = market.intervals[start + count - 1].astype("datetime64[s]").item()
    if last != first_interval + INTERVAL * (count - 1):
        raise BacktestError(f"the market data has gaps between {first_interval:%Y-%m-%d %H:%M} and "
                            f"{first_interval + INTERVAL * (count - 1):%Y-%m-%d %H:%M}")
    not_finite = ~np.isfinite(window)
    if bool(not_finite.any()):
        row, column = np.argwhere(not_finite)[0]
        raise BacktestError(f"{region} {market.products[column]} has no price for the interval ending "
                            f"{first_interval + INTERVAL * int(row):%Y-%m-%d %H:%M}; perfect foresight needs "
                            "every price")
    return {product: np.array(window[:, index]) for index, product in enumerate(market.products)}


def perfect_foresight_ledger(settings: Settings, market: DispatchPrices, region: str, first_interval: datetime,
                             count: int, *, include_fcas: bool = True,
                             enablement_cap_mw: Mapping[str, np.ndarray] | None = None,
                             solves: list[BenchmarkSolve] | None = None) -> pd.DataFrame:
    """The perfect-foresight dispatch of ``count`` intervals from ``first_interval`` (interval-ending
    AEST), one row per interval: ``dispatch_interval``, ``pf_gen_mw``, ``pf_load_mw``,
    ``pf_state_of_charge_mwh`` (end of interval), ``pf_energy_revenue_dollars``, per FCAS product
    ``pf_fcas_enabled_mw_<P>`` and ``pf_fcas_revenue_dollars_<P>``, ``pf_fcas_revenue_dollars`` and
    ``pf_total_revenue_dollars``, at ``market``'s prices ($/MWh, $/MW/h) for the configured battery.
    ``enablement_cap_mw`` (market depth): per FCAS product, the most MW it may be enabled for in each of
    the ``count`` intervals (``inf`` = no cap). The plan never charges and discharges in the same interval;
    ``solves``, when given, receives its :class:`backtest.engine.BenchmarkSolve` (relaxation, bound, gap).

    Raises BacktestError when a price is missing or the solver finds no plan (a MILP stopped by the time
    limit with a plan counts, with its gap).
    """
    prices = _price_window(market, region, first_interval, count)
    battery = battery_from_spec(battery_spec_from_settings(replace(settings.battery, region=region)))
    hours = hours_per_interval(settings.market.interval_minutes)
    plan = perfect_foresight(prices, battery, include_fcas=include_fcas, interval_hours=hours,
                             initial_soc_fraction=settings.battery.initial_soc_fraction,
                             enablement_cap_mw=enablement_cap_mw)
    if plan.status not in ("OPTIMAL", "TIME_LIMIT") or not plan.gen_mw.size:
        raise BacktestError(f"perfect foresight for {region} from {first_interval:%Y-%m-%d %H:%M} ({count} "
                            f"intervals) ended {plan.status}: {plan.status_reason}")
    if solves is not None:
        solves.append(benchmark_solve_of(plan))
    columns: dict[str, Any] = {
        "dispatch_interval": np.array([first_interval + INTERVAL * k for k in range(count)],
                                      dtype="datetime64[ns]"),
        "pf_gen_mw": plan.gen_mw,
        "pf_load_mw": plan.load_mw,
        "pf_state_of_charge_mwh": plan.state_of_charge_mwh,
        "pf_energy_revenue_dollars": hours * prices[ENERGY] * (battery.mlf_gen * plan.gen_mw
                                                                - battery.mlf_load * plan.load_mw),
    }
    fcas_total = np.zeros(count)
    for product in fcas_products_of(market.products):
        enabled = plan.fcas.get(product, np.zeros(count))
        revenue = hours * prices[product] * enabled
        columns[f"pf_fcas_enabled_mw_{product}"] = enabled
        columns[f"pf_fcas_revenue_dollars_{product}"] = revenue
        fcas_total = fcas_total + revenue
    columns["pf_fcas_revenue_dollars"] = fcas_total
    columns["pf_total_revenue_dollars"] = columns["pf_energy_revenue_dollars"] + fcas_total
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------------------------------
# The backtest's ledger
# --------------------------------------------------------------------------------------------------


def forecast_column(lead: int, level: float) -> str:
    """Ledger column of the ENERGY forecast at ``lead`` (5-minute intervals) and ``level``."""
    return f"energy_forecast_lead{lead}_q{level:g}"


def forecast_by_lead(record: DecisionRecord, leads: Sequence[int], levels: int) -> FloatArray:
    """The decision's ENERGY forecast ($/MWh), shape (len(leads), levels): row k is lead ``leads[k]``;
    NaN where the record has none (no usable forecast: ``energy_forecast_by_lead`` is empty); ``leads``
    are the result's (``BacktestResult.forecast_leads``), which ``energy_forecast_by_lead`` follows."""
    matrix = np.full((len(leads), levels), np.nan)
    for k, row in enumerate(record.energy_forecast_by_lead[:len(leads)]):
        values = np.asarray(row, dtype=np.float64).reshape(-1)
        if values.size == levels:
            matrix[k] = values
    return matrix


def _records_frame(result: BacktestResult, leads: Sequence[int], levels: Sequence[float]) -> pd.DataFrame:
    records = result.records
    columns: dict[str, Any] = {
        "decision_time": np.array([r.decision_time for r in records], dtype="datetime64[ns]"),
        "dispatch_interval": np.array([r.dispatch_interval for r in records], dtype="datetime64[ns]"),
        "as_of": np.array([r.as_of for r in records], dtype="datetime64[ns]"),
        "data_known_at": pd.to_datetime(pd.Series([r.data_known_at for r in records], dtype="object")),
        "latest_quality": [r.latest_quality for r in records],
        "plan_status": [r.plan_status for r in records],
        "safe_fallback": np.array([r.safe_fallback for r in records], dtype=bool),
        "rebid": np.array([r.rebid for r in records], dtype=bool),
        "bid_in_force": np.array([r.bid_in_force for r in records], dtype=bool),
        "violations": ["; ".join(r.violations) for r in records],
        "failure": [r.failure or "" for r in records],
        "rrp": np.array([r.rrp for r in records], dtype=np.float64),
        "gen_mw": np.array([r.gen_mw for r in records], dtype=np.float64),
        "load_mw": np.array([r.load_mw for r in records], dtype=np.float64),
        "net_mw": np.array([r.net_mw for r in records], dtype=np.float64),
        "state_of_charge_mwh": np.array([r.state_of_charge_mwh for r in records], dtype=np.float64),
        "energy_revenue_dollars": np.array([r.energy_revenue_dollars for r in records], dtype=np.float64),
        "fcas_revenue_dollars": np.array([r.fcas_revenue_dollars for r in records], dtype=np.float64),
        "total_revenue_dollars": np.array([r.total_revenue_dollars for r in records], dtype=np.float64),
    }
    for product in result.fcas_products:
        columns[f"fcas_enabled_mw_{product}"] = np.array(
            [r.fcas_enabled_by_product_mw.get(product, 0.0) for r in records], dtype=np.float64)
        columns[f"fcas_revenue_dollars_{product}"] = np.array(
            [r.fcas_revenue_by_product_dollars.get(product, 0.0) for r in records], dtype=np.float64)
    columns["forecast_energy_p50"] = np.array(
        [math.nan if r.forecast_energy_p50 is None else r.forecast_energy_p50 for r in records], dtype=np.float64)
    if leads:
        forecasts = np.stack([forecast_by_lead(r, leads, len(levels)) for r in records])
        for k, lead in enumerate(leads):
            for j, level in enumerate(levels):
                columns[forecast_column(lead, level)] = forecasts[:, k, j]
    return pd.DataFrame(columns)


def backtest_ledger(result: BacktestResult, pf: pd.DataFrame, *, leads: Sequence[int],
                    levels: Sequence[float]) -> pd.DataFrame:
    """One row per decision of ``result`` joined with the perfect-foresight row of its dispatch interval
    (``pf`` from :func:`perfect_foresight_ledger` over the same intervals), plus ``vs_pf_dollars`` =
    realised total − PF total ($). ``leads`` / ``levels``: the ENERGY forecast columns to include.
    Raises BacktestError when ``pf`` does not cover the same intervals in the same order."""
    frame = _records_frame(result, leads, levels)
    if len(pf) != len(frame) or not bool((pf["dispatch_interval"].to_numpy()
                                          == frame["dispatch_interval"].to_numpy()).all()):
        raise BacktestError("the perfect-foresight ledger does not cover the backtest's intervals")
    joined = pd.concat([frame, pf.drop(columns=["dispatch_interval"])], axis=1)
    joined["vs_pf_dollars"] = joined["total_revenue_dollars"] - joined["pf_total_revenue_dollars"]
    return joined


# --------------------------------------------------------------------------------------------------
# Forecast skill by lead
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeadSkill:
    """ENERGY forecast skill at one lead ($/MWh): ``n`` scored decisions, MAE of the median, mean
    pinball loss over the levels (NaN when ``n`` is 0)."""

    lead: int
    n: int
    mae: float
    pinball: float

    @property
    def minutes(self) -> int:
        """Lead in minutes (lead 1 = the dispatch interval, ending 5 minutes after it starts)."""
        return 5 * self.lead


def median_of(forecast: FloatArray, levels: Sequence[float]) -> FloatArray:
    """The 0.5 quantile of forecasts of shape (..., len(levels)), linear between levels and held flat
    beyond the outermost ones."""
    grid = np.asarray(levels, dtype=np.float64)
    if grid.size == 1:
        return np.asarray(forecast[..., 0], dtype=np.float64)
    upper = int(np.clip(np.searchsorted(grid, MEDIAN_LEVEL), 1, grid.size - 1))
    lower = upper - 1
    fraction = float(np.clip((MEDIAN_LEVEL - grid[lower]) / (grid[upper] - grid[lower]), 0.0, 1.0))
    return np.asarray((1 - fraction) * forecast[..., lower] + fraction * forecast[..., upper], dtype=np.float64)


def actual_prices(intervals: np.ndarray, prices: np.ndarray, targets: np.ndarray) -> FloatArray:
    """The price ($/MWh) of each ``targets`` interval (datetime64) in the series (``intervals`` sorted
    datetime64, ``prices``), NaN where the series has none."""
    wanted = targets.astype("datetime64[s]")
    series = intervals.astype("datetime64[s]")
    if series.size == 0:
        return np.full(wanted.shape, np.nan)
    position = np.clip(np.searchsorted(series, wanted), 0, series.size - 1)
    found = series[position] == wanted
    return np.where(found, np.asarray(prices, dtype=np.float64)[position], np.nan)


def forecast_skill_by_lead(ledger: pd.DataFrame, leads: Sequence[int], levels: Sequence[float],
                           intervals: np.ndarray, rrp: np.ndarray) -> list[LeadSkill]:
    """Skill of the ledger's ENERGY forecasts at each lead against the price series (``intervals``:
    interval-ending datetime64, ``rrp``: $/MWh). Lead L of a decision targets its dispatch interval
    + (L − 1) × 5 min; decisions whose target has no price or whose forecast is missing are left out."""
    dispatch = ledger["dispatch_interval"].to_numpy(dtype="datetime64[s]")
    skills: list[LeadSkill] = []
    for lead in leads:
        names = [forecast_column(lead, level) for level in levels]
        if not all(name in ledger.columns for name in names):
            skills.append(LeadSkill(lead, 0, math.nan, math.nan))
            continue
        forecast = ledger[names].to_numpy(dtype=np.float64)
        actual = actual_prices(intervals, rrp, dispatch + np.timedelta64(300 * (lead - 1), "s"))
        valid = np.isfinite(actual) & np.all(np.isfinite(forecast), axis=1)
        n = int(valid.sum())
        if n == 0:
            skills.append(LeadSkill(lead, 0, math.nan, math.nan))
            continue
        mae = float(np.mean(np.abs(actual[valid] - median_of(forecast[valid], levels))))
        skills.append(LeadSkill(lead, n, mae, pinball_loss(actual[valid], forecast[valid], levels)))
    return skills


# --------------------------------------------------------------------------------------------------
# Where money was won or lost
# --------------------------------------------------------------------------------------------------


def price_band_labels(edges: Sequence[float] = PRICE_BAND_EDGES) -> list[str]:
    """Labels of the price bands cut at ``edges`` ($/MWh): ``< 0``, ``0–50``, …, ``≥ 5000``."""
    labels = [f"< {edges[0]:g}"]
    labels += [f"{low:g}–{high:g}" for low, high in pairwise(edges)]
    labels.append(f"≥ {edges[-1]:g}")
    return labels


def price_band(rrp: np.ndarray, edges: Sequence[float] = PRICE_BAND_EDGES) -> list[str]:
    """The price band label of each price ($/MWh; NaN prices get ``"no price"``)."""
    labels = price_band_labels(edges)
    positions = np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(rrp, dtype=np.float64),
                                side="right")
    return [labels[int(p)] if math.isfinite(float(r)) else "no price" for p, r in zip(positions, rrp, strict=True)]


def _sums(frame: pd.DataFrame, key: pd.Series | list[Any], name: str) -> pd.DataFrame:
    grouped = frame.assign(**{name: key}).groupby(name, sort=True)
    table = pd.DataFrame({
        "intervals": grouped.size(),
        "realised_dollars": grouped["total_revenue_dollars"].sum(),
        "pf_dollars": grouped["pf_total_revenue_dollars"].sum(),
    })
    table["vs_pf_dollars"] = table["realised_dollars"] - table["pf_dollars"]
    return table.reset_index()


def trading_days(dispatch_interval: pd.Series) -> pd.Series:
    """Trading day (intervals ending 04:05 .. 04:00 next day) of each interval-ending time, as text."""
    shifted = pd.to_datetime(dispatch_interval) - pd.Timedelta(hours=4, minutes=5)
    return shifted.dt.strftime("%Y-%m-%d")


def spike_events(ledger: pd.DataFrame, threshold: float = SPIKE_THRESHOLD_PER_MWH) -> pd.DataFrame:
    """Every run of consecutive intervals with a dispatch price at or above ``threshold`` ($/MWh): first
    and last interval (ending AEST), intervals, highest price, realised, PF and realised − PF ($)."""
    spike = (ledger["rrp"].to_numpy(dtype=np.float64) >= threshold)
    columns = ["first_interval", "last_interval", "intervals", "max_rrp", "realised_dollars", "pf_dollars",
               "vs_pf_dollars"]
    if not bool(spike.any()):
        return pd.DataFrame({c: [] for c in columns})
    intervals = ledger["dispatch_interval"].to_numpy(dtype="datetime64[s]")
    gap = np.diff(intervals).astype(np.int64) != 300 if len(intervals) > 1 else np.array([], dtype=bool)
    starts = spike & np.concatenate([[True], ~spike[:-1] | gap])
    event = np.cumsum(starts) - 1
    frame = ledger.loc[spike].assign(event=event[spike])
    grouped = frame.groupby("event", sort=True)
    table = pd.DataFrame({
        "first_interval": grouped["dispatch_interval"].min(),
        "last_interval": grouped["dispatch_interval"].max(),
        "intervals": grouped.size(),
        "max_rrp": grouped["rrp"].max(),
        "realised_dollars": grouped["total_revenue_dollars"].sum(),
        "pf_dollars": grouped["pf_total_revenue_dollars"].sum(),
    })
    table["vs_pf_dollars"] = table["realised_dollars"] - table["pf_dollars"]
    return table.reset_index(drop=True)[columns]


def attribution(ledger: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Realised, perfect-foresight and realised − PF revenue ($, energy + FCAS) and interval counts by
    ``day`` (trading day), ``hour`` (hour of day the interval starts, AEST), ``price_band`` (dispatch
    price, $/MWh) and ``spike`` (inside a spike event or not), and the table of ``spike_events``."""
    starts = pd.to_datetime(ledger["dispatch_interval"]) - pd.Timedelta(minutes=5)
    bands = price_band(ledger["rrp"].to_numpy(dtype=np.float64))
    order = {label: k for k, label in enumerate([*price_band_labels(), "no price"])}
    by_band = _sums(ledger, bands, "price_band")
    by_band = by_band.iloc[np.argsort([order[b] for b in by_band["price_band"]], kind="stable")]
    spike = np.where(ledger["rrp"].to_numpy(dtype=np.float64) >= SPIKE_THRESHOLD_PER_MWH,
                     f"spike (≥ {SPIKE_THRESHOLD_PER_MWH:g})", "no spike")
    return {
        "day": _sums(ledger, trading_days(ledger["dispatch_interval"]), "day"),
        "hour": _sums(ledger, starts.dt.hour, "hour"),
        "price_band": by_band.reset_index(drop=True),
        "spike": _sums(ledger, list(spike), "spike"),
        "spike_events": spike_events(ledger),
    }


def cumulative_revenue(ledger: pd.DataFrame) -> pd.DataFrame:
    """Cumulative realised and perfect-foresight revenue ($) by dispatch interval."""
    return pd.DataFrame({
        "dispatch_interval": pd.to_datetime(ledger["dispatch_interval"]),
        "realised_dollars": ledger["total_revenue_dollars"].cumsum(),
        "pf_dollars": ledger["pf_total_revenue_dollars"].cumsum(),
    })
