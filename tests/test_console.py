"""algorithms/market/console.py: what the trading desk reads in the Temporal UI and the terminal."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from algorithms.common.nem_time import to_timestamp
from algorithms.market.console import (
    BidBand,
    ControlsText,
    CycleOutcomeView,
    CycleView,
    UnitPnl,
    bid_bands,
    bid_table_markdown,
    cycle_details_markdown,
    cycle_line,
    cycle_summary,
    interval_text,
    market_time_iso,
    market_time_text,
    operator_details_markdown,
    plan_intent,
    pnl_of,
    wall_clock_text,
)
from vpp.v1 import bid_pb2, common_pb2, worker_pb2

INTERVAL = datetime(2021, 1, 15, 16, 10)
FIVE = timedelta(minutes=5)


def _shown(markdown: str) -> str:
    """The markdown as it reads once rendered: escaped dollars and cell gaps as plain text."""
    return markdown.replace("\\$", "$").replace("\u2003", "")


def _bid() -> bid_pb2.Bid:
    bid = bid_pb2.Bid(unit_id="HPR1", version=1)
    energy_gen = bid.offers.add(product="ENERGY", direction=common_pb2.DIRECTION_GEN,
                                band_price=[-1000.0, 0.0, 85.5, 300.0, 15000.0])
    for offset, bands in ((0, [0.0, 0.0, 40.0, 110.0, 0.0]), (1, [0.0, 5.0, 0.0, 0.0, 0.0])):
        energy_gen.periods.add(dispatch_interval=to_timestamp(INTERVAL + offset * FIVE), band_avail_mw=bands)
    energy_load = bid.offers.add(product="ENERGY", direction=common_pb2.DIRECTION_LOAD,
                                 band_price=[-500.0, -50.0, 20.0])
    energy_load.periods.add(dispatch_interval=to_timestamp(INTERVAL), band_avail_mw=[25.0, 0.0, 0.0])
    raise6 = bid.offers.add(product="RAISE6SEC", band_price=[0.5, 9.0])
    raise6.periods.add(dispatch_interval=to_timestamp(INTERVAL), band_avail_mw=[20.0, 0.0])
    later_only = bid.offers.add(product="LOWERREG", band_price=[1.0])
    later_only.periods.add(dispatch_interval=to_timestamp(INTERVAL + FIVE), band_avail_mw=[10.0])
    return bid


def test_the_bid_table_lists_the_intervals_bands_with_mw_per_product_and_direction() -> None:
    bands = bid_bands(_bid(), INTERVAL)
    assert bands == (BidBand("ENERGY", "GEN", 3, 85.5, 40.0), BidBand("ENERGY", "GEN", 4, 300.0, 110.0),
                     BidBand("ENERGY", "LOAD", 1, -500.0, 25.0), BidBand("RAISE6SEC", "", 1, 0.5, 20.0))
    assert bid_bands(_bid(), INTERVAL + FIVE) == (BidBand("ENERGY", "GEN", 2, 0.0, 5.0),
                                                  BidBand("LOWERREG", "", 1, 1.0, 10.0))
    assert bid_bands(_bid(), INTERVAL + 2 * FIVE) == ()
    table = _shown(bid_table_markdown(bands))
    assert table.splitlines()[:2] == ["| product | band | price | MW |", "| --- | ---: | ---: | ---: |"]
    assert "\\$300.00 \\$/MWh" in bid_table_markdown(bands)  # not read as mathematics by the UI
    assert "| ENERGY GEN | 4 | $300.00 $/MWh | 110.0 |" in table
    assert "| ENERGY LOAD | 1 | -$500.00 $/MWh | 25.0 |" in table
    assert "| RAISE6SEC | 1 | $0.50 $/MW/h | 20.0 |" in table
    assert bid_table_markdown(()) == "_No MW offered in this interval._"


def test_times_carry_their_zone_market_time_aest_and_wall_clock_utc() -> None:
    assert market_time_text(INTERVAL) == "2021-01-15 16:10 AEST"
    assert interval_text(INTERVAL) == "2021-01-15 16:05–16:10 AEST"
    assert market_time_iso(INTERVAL) == "2021-01-15T16:10:00+10:00"
    assert wall_clock_text(datetime(2026, 12, 6, 14, 0, 5, tzinfo=UTC)) == "2026-12-06 14:00:05 UTC"
    with pytest.raises(ValueError, match="naive AEST"):
        market_time_text(INTERVAL.replace(tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        wall_clock_text(INTERVAL)


def _plan() -> worker_pb2.OptimisationResult:
    plan = worker_pb2.OptimisationResult(first_interval=to_timestamp(INTERVAL), gen_mw=[45.0, 0.0, 0.0],
                                         load_mw=[0.0, 30.0, 0.0], state_of_charge_mwh=[96.25, 98.5, 98.5],
                                         energy_value_per_mwh=[85.2, 85.2, 80.0])
    plan.fcas.add(product="RAISE6SEC", enablement_mw=[20.0, 0.0, 0.0])
    plan.fcas.add(product="LOWER6SEC", enablement_mw=[0.0, 0.0, 0.0])
    return plan


def test_the_plans_intent_is_one_sentence_about_its_first_interval_and_horizon() -> None:
    assert plan_intent(_plan()) == (
        "The plan is to discharge 45.0 MW in the interval ending 2021-01-15 16:10 AEST (SoC 96.2 MWh after it), "
        "with RAISE6SEC 20 MW enabled, and over the next 0.25 h to discharge 4 MWh and charge 2 MWh; stored "
        "energy is worth $85.20/MWh.")
    charging = worker_pb2.OptimisationResult(first_interval=to_timestamp(INTERVAL), gen_mw=[0.0], load_mw=[12.5])
    assert plan_intent(charging).startswith("The plan is to charge 12.5 MW in the interval ending")
    assert plan_intent(worker_pb2.OptimisationResult(status_reason="infeasible")) == \
        "The optimiser gave no plan: infeasible."


def _view(**changes: object) -> CycleView:
    view = CycleView(unit_id="HPR1", region="SA1", dispatch_interval=INTERVAL, status="SUBMITTED",
                     started_wall_clock=datetime(2026, 12, 6, 6, 10, 30, tzinfo=UTC),
                     decision_market_time=datetime(2021, 1, 15, 16, 0, 30), bid_id="HPR1/2021-01-15/146/v1",
                     bid_bands=bid_bands(_bid(), INTERVAL), plan_intent=plan_intent(_plan()),
                     outcome=CycleOutcomeView(gen_mw=40.0, load_mw=0.0, price=120.0, energy_revenue_dollars=400.0,
                                              fcas_revenue_dollars=12.5, state_of_charge_mwh=96.0))
    return CycleView(**{**view.__dict__, **changes})  # type: ignore[arg-type]


def test_a_cycles_page_shows_unit_interval_intent_bid_and_outcome() -> None:
    page = _shown(cycle_details_markdown(_view()))
    assert page.startswith("**HPR1** (SA1) · interval 2021-01-15 16:05–16:10 AEST (interval-ending 2021-01-15 "
                           "16:10 AEST, market time AEST (UTC+10)) · **SUBMITTED**")
    assert "Decided at 2021-01-15 16:00 AEST market time; started 2026-12-06 06:10:30 UTC (wall clock)." in page
    assert "**Intent:** The plan is to discharge 45.0 MW" in page
    assert "**Bid submitted** HPR1/2021-01-15/146/v1 for 2021-01-15 16:05–16:10 AEST:" in page
    assert "| ENERGY GEN | 3 | $85.50 $/MWh | 40.0 |" in page
    assert ("**Outcome:** Dispatched +40.0 MW at $120.00/MWh: revenue $412.50 (energy $400.00, FCAS $12.50); "
            "SoC 96.0 MWh after it.") in page
    assert "Not submitted" not in page and "already counted" not in page
    assert cycle_summary(_view()) == "HPR1 2021-01-15 16:10 AEST: SUBMITTED, +40.0 MW at $120.00/MWh, $412.50"
    assert cycle_line(_view()) == (
        "cycle HPR1 2021-01-15 16:05–16:10 AEST SUBMITTED; bid HPR1/2021-01-15/146/v1 [ENERGY GEN 150 MW, "
        "ENERGY LOAD 25 MW, RAISE6SEC 20 MW]; dispatched +40.0 MW at $120.00/MWh, revenue $412.50")


def test_a_cycle_that_submitted_nothing_says_why_and_a_repeated_interval_is_not_counted_again() -> None:
    paused = _view(status="PAUSED", outcome=None, plan_intent="",
                   not_submitted_reason="bidding paused by the operator (storm watch)")
    page = _shown(cycle_details_markdown(paused))
    assert "**Not submitted:** bidding paused by the operator (storm watch)" in page
    assert "**Bid in force** HPR1/2021-01-15/146/v1" in page and "Intent" not in page
    assert cycle_line(paused).endswith("bidding paused by the operator (storm watch)")
    repeated = _view(status="NO_REBID", outcome=CycleOutcomeView(
        gen_mw=0.0, load_mw=25.0, price=-40.0, energy_revenue_dollars=83.33, fcas_revenue_dollars=0.0,
        state_of_charge_mwh=120.0, revenue_counted=False, counted_by_cycle="autobidder-HPR1-a"))
    page = _shown(cycle_details_markdown(repeated))
    assert "Dispatched -25.0 MW at -$40.00/MWh" in page
    assert "This interval's revenue was already counted by autobidder-HPR1-a; it is not counted again." in page
    assert cycle_summary(repeated).endswith("$83.33 (already counted)")


def test_the_pnl_counts_each_interval_of_the_trading_day_once() -> None:
    day_start = datetime(2021, 1, 15, 4, 5)
    rows = [(day_start - FIVE, 1000.0, 1000.0),  # 04:00 ends the previous trading day
            (day_start, 10.0, 1.0), (day_start + FIVE, -4.0, 2.5), (INTERVAL, 100.0, 0.0)]
    pnl = pnl_of("HPR1", rows, cycles=5)
    assert pnl == UnitPnl("HPR1", date(2021, 1, 15), 106.0, 3.5, intervals=3, cycles=5, latest_interval=INTERVAL)
    assert pnl.total_dollars == 109.5
    assert pnl_of("HPR1", rows, date(2021, 1, 14)).energy_revenue_dollars == 1000.0
    assert pnl_of("HPR1", []).trading_day is None
    with pytest.raises(ValueError, match="counted twice"):
        pnl_of("HPR1", [*rows, (INTERVAL, 1.0, 1.0)])


def test_the_operator_page_shows_todays_pnl_the_bid_in_force_and_the_controls() -> None:
    pnl = UnitPnl("HPR1", date(2021, 1, 15), 1234.5, -10.0, intervals=144, cycles=150, latest_interval=INTERVAL)
    controls = ControlsText(paused=True, paused_reason="storm watch", soc_floor_fraction=0.6,
                            soc_floor_until=datetime(2026, 12, 6, 8, 0, tzinfo=UTC))
    page = _shown(operator_details_markdown("HPR1", pnl, controls, "HPR1/2021-01-15/146/v1",
                                            bid_bands(_bid(), INTERVAL), INTERVAL))
    assert "Trading day 2021-01-15 (04:00–04:00 AEST): 144 intervals counted once each" in page
    assert "| $1,234.50 | -$10.00 | $1,224.50 |" in page
    assert "**Bid in force** HPR1/2021-01-15/146/v1 for 2021-01-15 16:05–16:10 AEST:" in page
    assert "| ENERGY LOAD | 1 | -$500.00 $/MWh | 25.0 |" in page
    assert "- Bidding: **PAUSED** (storm watch)" in page
    assert "- SoC hold: no discharge below 60% of capacity until 2026-12-06 08:00:00 UTC (wall clock)" in page
    assert "`pause`, `resume`, `hold_soc`, `release_soc`, `manual_rebid`" in page
    empty = operator_details_markdown("HPR1", UnitPnl("HPR1", None), ControlsText(), None, (), None)
    assert "_No interval recorded yet._" in empty and "- Bidding: active" in empty
