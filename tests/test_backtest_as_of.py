"""As-of correctness of the backtest, property-tested: no data published after a decision reaches it.

For a random decision time, every dispatch price of an interval ending after the last decision and every
pre-dispatch run that became known after it is replaced by something else (scaled, shifted, or NaN). The
decisions must not notice: their records — forecasts per lead, plan status, bids as cleared — are equal
to those made on the untouched data. The market still clears at the untouched prices, so any difference
can only come from future data reaching a decision.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from functools import cache

import numpy as np
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from aemo.mms import load_market_data
from algorithms.market.prices import DispatchPrices, PredispatchPrices
from backtest.engine import BacktestConfig, market_prices, run_backtest
from settings import Settings, load_settings

DECISIONS = 2
STEP = timedelta(minutes=5)
OFFSET = timedelta(seconds=30)


@cache
def _inputs() -> tuple[Settings, DispatchPrices, PredispatchPrices]:
    settings = load_settings(environ={})
    dispatch, predispatch = load_market_data(settings.market_data.data_dir)
    return settings, dispatch, predispatch


def _tamper(values: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    """``values`` with the rows of ``mask`` replaced: scaled by -3, shifted by +5,000, or NaN."""
    changed = np.array(values, dtype=np.float64, copy=True)
    if how == "scale":
        changed[mask] = changed[mask] * -3.0
    elif how == "shift":
        changed[mask] = changed[mask] + 5000.0
    else:
        changed[mask] = np.nan
    return changed


def _future_tampered(dispatch: DispatchPrices, predispatch: PredispatchPrices, known_by: datetime,
                     how: str) -> tuple[DispatchPrices, PredispatchPrices]:
    """The tables with everything not yet known at ``known_by`` (naive AEST) tampered with."""
    moment = np.datetime64(known_by, "s")
    future_intervals = dispatch.intervals > moment
    tampered_dispatch = replace(dispatch, price=_tamper(dispatch.price, np.s_[:, future_intervals, :], how))
    future_rows = np.zeros(len(predispatch.row_period), dtype=bool)
    late_runs = np.flatnonzero(predispatch.known_at > moment)
    for region in range(len(predispatch.regions)):
        for run in late_runs:
            future_rows[predispatch.row_start[region, run]:predispatch.row_stop[region, run]] = True
    tampered_predispatch = replace(predispatch, row_price=_tamper(predispatch.row_price, future_rows, how))
    return tampered_dispatch, tampered_predispatch


@hyp_settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(region=st.sampled_from(["SA1", "NSW1", "VIC1"]),
       five_minute_steps=st.integers(0, 24 * 12 * 26),
       how=st.sampled_from(["scale", "shift", "nan"]))
def test_no_future_data_reaches_a_decision(region: str, five_minute_steps: int, how: str) -> None:
    settings, dispatch, predispatch = _inputs()
    first_decision = datetime(2021, 1, 3, 0, 0) + STEP * five_minute_steps + OFFSET
    config = BacktestConfig(region=region, first_decision=first_decision, decisions=DECISIONS,
                            horizon_intervals=48, history_intervals=576)
    market = market_prices(settings, dispatch)
    last_decision = first_decision + STEP * (DECISIONS - 1)
    tampered = _future_tampered(dispatch, predispatch, last_decision, how)
    honest = run_backtest(settings, dispatch, predispatch, config, market=market, workers=1)
    blind = run_backtest(settings, *tampered, config, market=market, workers=1)
    assert blind.records == honest.records
    assert any(record.energy_forecast_by_lead for record in honest.records)


def test_tampering_with_the_past_does_change_decisions() -> None:
    """The property above can fail: the same tampering one interval earlier (data the decision knows)
    changes what the decision sees."""
    settings, dispatch, predispatch = _inputs()
    first_decision = datetime(2021, 1, 15, 17, 0, 30)
    config = BacktestConfig(region="SA1", first_decision=first_decision, decisions=1,
                            horizon_intervals=48, history_intervals=576)
    market = market_prices(settings, dispatch)
    tampered = _future_tampered(dispatch, predispatch, first_decision - STEP, "shift")
    honest = run_backtest(settings, dispatch, predispatch, config, market=market, workers=1)
    fooled = run_backtest(settings, *tampered, config, market=market, workers=1)
    assert fooled.records != honest.records
