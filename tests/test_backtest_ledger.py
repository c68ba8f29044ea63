"""The backtest ledger: perfect foresight per interval, forecast skill by lead, where money was won or lost."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from aemo.mms import load_market_data
from backtest.compare import RunView, comparison_tables, dollars, percent
from backtest.engine import BacktestError, market_prices, perfect_foresight_revenue
from backtest.ledger import (
    actual_prices,
    attribution,
    forecast_column,
    forecast_skill_by_lead,
    median_of,
    perfect_foresight_ledger,
    price_band,
    price_band_labels,
    spike_events,
)
from settings import load_settings

FIRST = datetime(2021, 1, 15, 4, 5)
STEP = timedelta(minutes=5)


def synthetic_ledger(rrp: list[float], realised: list[float], pf: list[float], first: datetime = FIRST) -> pd.DataFrame:
    count = len(rrp)
    return pd.DataFrame({
        "dispatch_interval": np.array([first + STEP * k for k in range(count)], dtype="datetime64[ns]"),
        "rrp": np.array(rrp, dtype=np.float64),
        "total_revenue_dollars": np.array(realised, dtype=np.float64),
        "pf_total_revenue_dollars": np.array(pf, dtype=np.float64),
    })


def test_perfect_foresight_ledger_adds_up_to_the_engine_benchmark() -> None:
    settings = load_settings(environ={})
    dispatch, _ = load_market_data(settings.market_data.data_dir)
    market = market_prices(settings, dispatch)
    first = datetime(2021, 1, 15, 16, 5)
    ledger = perfect_foresight_ledger(settings, market, "SA1", first, 48)
    energy, fcas = perfect_foresight_revenue(settings, market, "SA1", first, 48, include_fcas=True)
    assert len(ledger) == 48
    assert ledger["pf_energy_revenue_dollars"].sum() == pytest.approx(energy, abs=1e-3)
    assert ledger["pf_fcas_revenue_dollars"].sum() == pytest.approx(fcas, abs=1e-3)
    fcas_columns = [c for c in ledger.columns if c.startswith("pf_fcas_revenue_dollars_")]
    assert len(fcas_columns) == len(dispatch.products) - 1
    assert np.allclose(ledger[fcas_columns].sum(axis=1), ledger["pf_fcas_revenue_dollars"])
    battery = settings.battery
    soc = ledger["pf_state_of_charge_mwh"].to_numpy()
    assert soc.min() >= battery.energy_mwh * battery.soc_min_fraction - 1e-6
    assert soc[-1] >= battery.initial_state_of_charge_mwh - 1e-6
    with pytest.raises(BacktestError, match="does not cover"):
        perfect_foresight_ledger(settings, market, "SA1", datetime(2021, 1, 31, 23, 0), 48)


def test_attribution_sums_to_the_totals_and_groups_as_labelled() -> None:
    # 04:05 .. 05:00 on 15 Jan (trading day 15 Jan), then a second trading day from 04:05 on 16 Jan.
    first = synthetic_ledger([-10.0, 20.0, 80.0, 350.0, 400.0, 30.0], [1, 2, 3, 4, 5, 6], [2, 2, 2, 10, 10, 2])
    second = synthetic_ledger([6000.0, 40.0], [7, 8], [9, 1], first=datetime(2021, 1, 16, 4, 5))
    ledger = pd.concat([first, second], ignore_index=True)
    tables = attribution(ledger)
    for name in ("day", "hour", "price_band", "spike"):
        table = tables[name]
        assert table["realised_dollars"].sum() == pytest.approx(ledger["total_revenue_dollars"].sum())
        assert table["pf_dollars"].sum() == pytest.approx(ledger["pf_total_revenue_dollars"].sum())
        assert table["intervals"].sum() == len(ledger)
    day = tables["day"].set_index("day")
    assert day.loc["2021-01-15", "vs_pf_dollars"] == pytest.approx(21 - 28)
    assert day.loc["2021-01-16", "vs_pf_dollars"] == pytest.approx(15 - 10)
    hour = tables["hour"].set_index("hour")
    assert hour.loc[4, "intervals"] == 8
    bands = tables["price_band"]
    assert bands["price_band"].tolist() == ["< 0", "0–50", "50–100", "300–1000", "≥ 5000"]
    events = tables["spike_events"]
    assert events["intervals"].tolist() == [2, 1]
    assert events["max_rrp"].tolist() == [400.0, 6000.0]
    assert events["vs_pf_dollars"].tolist() == [9 - 20, 7 - 9]


def test_spike_events_break_at_gaps_in_the_intervals() -> None:
    ledger = synthetic_ledger([500.0, 500.0], [1, 1], [2, 2])
    ledger.loc[1, "dispatch_interval"] = ledger.loc[1, "dispatch_interval"] + pd.Timedelta(minutes=30)
    assert len(spike_events(ledger)) == 2
    assert spike_events(synthetic_ledger([10.0], [1], [1])).empty


def test_price_bands() -> None:
    assert price_band_labels((0.0, 100.0)) == ["< 0", "0–100", "≥ 100"]
    assert price_band(np.array([-5.0, 0.0, 99.0, 100.0, np.nan]), (0.0, 100.0)) == [
        "< 0", "0–100", "0–100", "≥ 100", "no price"]


def test_forecast_skill_by_lead_scores_each_lead_against_its_target_interval() -> None:
    levels = (0.1, 0.5, 0.9)
    intervals = np.array([FIRST + STEP * k for k in range(6)], dtype="datetime64[s]")
    rrp = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    ledger = pd.DataFrame({"dispatch_interval": intervals[:3].astype("datetime64[ns]")})
    # Lead 1 forecasts exactly; lead 3 is 5 $/MWh high at every level; lead 12 targets beyond the data.
    for lead, shift in ((1, 0), (3, 2)):
        for level in levels:
            ledger[forecast_column(lead, level)] = rrp[shift:shift + 3] + (0.0 if lead == 1 else 5.0)
    for level in levels:
        ledger[forecast_column(12, level)] = 1.0
    skills = forecast_skill_by_lead(ledger, (1, 3, 12, 24), levels, intervals, rrp)
    assert [(s.lead, s.n) for s in skills] == [(1, 3), (3, 3), (12, 0), (24, 0)]
    assert skills[0].mae == 0.0 and skills[0].pinball == 0.0
    assert skills[1].mae == pytest.approx(5.0)
    # Over-forecast by 5 at levels 0.1, 0.5, 0.9: (0.9 + 0.5 + 0.1) * 5 / 3.
    assert skills[1].pinball == pytest.approx(2.5)
    assert np.isnan(skills[2].mae) and skills[3].minutes == 120


def test_median_and_actual_lookup() -> None:
    forecast = np.array([[0.0, 10.0, 20.0], [1.0, 3.0, 5.0]])
    assert median_of(forecast, (0.1, 0.5, 0.9)).tolist() == [10.0, 3.0]
    assert median_of(forecast[:, [0, 2]], (0.1, 0.9)).tolist() == [10.0, 3.0]
    series = np.array([FIRST, FIRST + STEP], dtype="datetime64[s]")
    targets = np.array([FIRST + STEP, FIRST + 2 * STEP], dtype="datetime64[s]")
    found = actual_prices(series, np.array([1.0, 2.0]), targets)
    assert found[0] == 2.0 and np.isnan(found[1])


def test_comparison_tables_of_one_run() -> None:
    ledger = synthetic_ledger([10.0, 400.0], [5.0, 50.0], [6.0, 100.0])
    summary = {
        "run_id": "SA1-x", "region": "SA1", "code_version": "git abc",
        "period": {"first_interval": "2021-01-15T04:05:00", "last_interval": "2021-01-15T04:10:00"},
        "strategy": {"forecaster": "f@1", "optimiser": "o@1", "bid_builder": "schedule@1", "parameters": {}},
        "forecast_skill": {"quantiles": [0.5], "leads": [{"lead": 1, "minutes": 5, "n": 2, "mae": 3.0,
                                                           "pinball": 1.5}]},
        "results": {"decisions": 2, "energy_revenue_dollars": 40.0, "fcas_revenue_dollars": 15.0,
                    "fcas_revenue_by_product_dollars": {"RAISEREG": 15.0}, "total_revenue_dollars": 55.0,
                    "perfect_foresight": {"energy_only_dollars": 80.0, "energy_fcas_dollars": 106.0},
                    "capture_total": 55.0 / 106.0, "capture_energy": 0.5, "cycles": 0.1, "throughput_mwh": 20.0,
                    "initial_state_of_charge_mwh": 97.0, "final_state_of_charge_mwh": 90.0, "rebids": 1,
                    "safe_fallbacks": 0, "validation_rejections": 0, "failed_decisions": 0},
    }
    informed = {"results": {"total_revenue_dollars": 80.0}}
    tables = {t.title: t for t in comparison_tables([RunView("A", summary, ledger, informed)])}
    benchmark = {row[0]: row[1] for row in tables["Against perfect foresight, $"].rows}
    assert benchmark["capture total"] == "51.9%"
    assert benchmark["value of perfect information"] == "25"
    revenue = {row[0].strip(): row[1] for row in tables["Realised revenue, $"].rows}
    assert revenue == {"energy": "40", "RAISEREG": "15", "FCAS": "15", "total": "55",
                       "FCAS depth-limited": "price-taker only", "total depth-limited": "price-taker only",
                       "end-of-run SoC charge": "0"}
    assert benchmark["capture total depth-limited"] == "price-taker only"
    depth = {"fcas_revenue_dollars": 6.0, "total_revenue_dollars": 46.0, "perfect_foresight_energy_fcas_dollars": 92.0,
             "capture_total": 0.5}
    deep = {**summary, "results": {**summary["results"], "depth_limited": depth}}
    tables = {t.title: t for t in comparison_tables([RunView("A", deep, ledger, informed)])}
    benchmark = {row[0]: row[1] for row in tables["Against perfect foresight, $"].rows}
    revenue = {row[0].strip(): row[1] for row in tables["Realised revenue, $"].rows}
    assert (revenue["total"], revenue["total depth-limited"]) == ("55", "46")
    assert (benchmark["PF energy + FCAS depth-limited"], benchmark["capture total depth-limited"]) == ("92", "50.0%")
    spikes = tables["Spike events, $"].rows
    assert len(spikes) == 1 and spikes[0][-1] == "-50"
    assert dollars(-0.4) == "0" and dollars(None) == "-" and percent(float("nan")) == "-"
