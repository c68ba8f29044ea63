"""The bid decision: one pure function (algorithms/market/bid_decision.py) and its three callers.

The unit tests pin :func:`decide_bid` itself. The same-inputs tests drive the same plan, bid in force,
operator controls, battery and rules through the three callers — the real ``build_and_validate_bid``
activity (Temporal's ActivityEnvironment, a real archive in a temporary folder, a real PostgreSQL with the
bid in force seeded through ``models.bids``), the backtest engine's bid stage and the archive replay's
rebuild — and require identical decisions: the same bid bytes, the same submit / stand / safe outcome, the
same violations and the same rejected bids.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from temporalio.testing import ActivityEnvironment

from activities.cycle import CycleActivities
from activities.cycle_facts import BidBuilt, BuildBidInput
from algorithms.common import nem_time
from algorithms.common.battery import battery_spec_from_settings
from algorithms.market.bid_columns import ColumnarBid
from algorithms.market.bid_decision import (
    NO_VALID_BID,
    PAUSED,
    PLAN_BID_REJECTED,
    STANDS,
    SUBMIT,
    BidDecision,
    StandingBid,
    decide_bid,
)
from algorithms.market.bid_validation import validate_bid
from algorithms.market.daily_bid import DailyBidsInForce
from algorithms.market.operator_controls import EffectiveControls, battery_with_soc_floor
from archive import archive_key
from archive.store import LocalArchive
from backtest.archive_replay import rebuild_bid
from backtest.engine import BidBook, bid_stage
from models import bids as bid_store
from models.db import connect, migrate
from services.bid_service import bid_id_for, bid_key, bid_record
from settings import Settings, load_settings
from tests.conftest import temporary_database
from vpp.v1 import bid_pb2, common_pb2, worker_pb2

SETTINGS = load_settings(environ={})
BATTERY = battery_spec_from_settings(SETTINGS.battery)
FCAS = ("RAISE6SEC", "RAISE60SEC", "RAISE5MIN", "RAISEREG", "LOWER6SEC", "LOWER60SEC", "LOWER5MIN", "LOWERREG")
PRODUCTS = ("ENERGY", *FCAS)
FIVE = timedelta(minutes=5)
# A plan for the 12 intervals from 17:35 on 5 January 2021; the bids are offered after the daily close
# (REBIDs, so V4 holds them to the day's band prices).
FIRST = datetime(2021, 1, 5, 17, 35)
NEXT = FIRST + FIVE
HOURS = 5 / 60
INITIAL_SOC_MWH = 97.0  # 50 % of 194 MWh
GEN = common_pb2.DIRECTION_GEN


def offer_time(dispatch_interval: datetime) -> datetime:
    """The cycle's decision time for ``dispatch_interval``: 30 s into the interval before the one in progress."""
    return dispatch_interval - 2 * FIVE + timedelta(seconds=30)


def make_plan(gen: list[float], load: list[float], *, fcas: dict[str, list[float]] | None = None,
              status: worker_pb2.ResultStatus.ValueType = worker_pb2.RESULT_STATUS_OPTIMAL,
              energy_value: float = 60.0, first: datetime = FIRST) -> worker_pb2.OptimisationResult:
    """A plan from ``first`` (FIRST) whose SoC follows the reference battery from INITIAL_SOC_MWH, with duals (the value
    of stored energy ``energy_value`` $/MWh, no joint-capacity value), as the LP reports them."""
    count = len(gen)
    soc = INITIAL_SOC_MWH + np.cumsum(0.92 * np.asarray(load) * HOURS - np.asarray(gen) * HOURS / 0.92)
    return worker_pb2.OptimisationResult(
        status=status, first_interval=nem_time.to_timestamp(first), horizon_intervals=count, gen_mw=gen,
        load_mw=load, state_of_charge_mwh=soc.tolist(), objective_dollars=1234.5,
        algorithm=common_pb2.AlgorithmRef(name="lp-energy-fcas", version="1"),
        fcas=[worker_pb2.ProductSchedule(product=p, enablement_mw=mw) for p, mw in (fcas or {}).items()],
        energy_value_per_mwh=[energy_value] * count, raise_capacity_value_per_mw=[0.0] * count,
        lower_capacity_value_per_mw=[0.0] * count)


# Discharge through the evening peak with some regulation, then charge a little.
PLAN = make_plan(gen=[120.0, 100.0, 80.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                 load=[0.0, 0.0, 0.0, 0.0, 0.0, 50.0, 50.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                 fcas={"RAISEREG": [10.0] * 12, "LOWER6SEC": [20.0] * 12})


def decide(plan: worker_pb2.OptimisationResult | None, *, dispatch_interval: datetime = FIRST,
           standing: StandingBid | None = None, controls: EffectiveControls | None = None,
           settings: Settings = SETTINGS, initial_state_of_charge_mwh: float = INITIAL_SOC_MWH) -> BidDecision:
    """decide_bid with the reference battery, the default rules and the day's prices of ``standing``."""
    return decide_bid(
        plan, standing_bid=standing, controls=controls or EffectiveControls(), battery=BATTERY,
        bidding=settings.bidding, rules=settings.market, products=PRODUCTS,
        daily_band_prices=bid_store.band_prices_of(standing.bid) if standing is not None else None,
        dispatch_interval=dispatch_interval, offer_time=offer_time(dispatch_interval), version=1,
        initial_state_of_charge_mwh=initial_state_of_charge_mwh,
        plan_hash=archive_key(plan).removeprefix("sha256:") if plan is not None else "")


def in_force(bid: bid_pb2.Bid) -> StandingBid:
    """``bid`` as the market holds it once accepted (its id as the simulated market names it)."""
    key = bid_key(bid)
    return StandingBid(key.bid_id, bid)


def submitted(decision: BidDecision) -> bid_pb2.Bid:
    assert decision.outcome == SUBMIT and decision.bid is not None, decision
    return decision.bid


def gen_max_avail(bid: bid_pb2.Bid) -> list[float]:
    return [p.max_avail_mw for o in bid.offers if o.product == "ENERGY" and o.direction == GEN for p in o.periods]


# The standing bid of most cases: the plan's own bid for FIRST, accepted.
FIRST_BID = submitted(decide(PLAN))
STANDING = in_force(FIRST_BID)
# The ladder configured now differs from the day's band prices (set by the bid in force): after the daily
# close every candidate, plan or safe, would change the day's prices (V4).
NEW_LADDER = replace(SETTINGS, bidding=replace(SETTINGS.bidding, gen_band_prices=tuple(
    price - 1.0 if price > 0 else price for price in SETTINGS.bidding.gen_band_prices)))
# A parameter-file typo only the plan's bid uses: it cannot be built, the safe bid can.
TYPO = replace(SETTINGS, bidding=replace(SETTINGS.bidding, planned_pricing="energy-value"))


# --------------------------------------------------------------------------------------------------
# decide_bid itself
# --------------------------------------------------------------------------------------------------


def test_the_first_bid_of_the_intervals_is_the_plans_own_and_valid() -> None:
    decision = decide(PLAN)
    bid = submitted(decision)
    assert decision.candidate == "plan" and not decision.safe_fallback and decision.rebid
    assert decision.changes == ("no bid in force for these intervals",) and decision.rejected == ()
    assert validate_bid(bid, BATTERY, SETTINGS.market, products=PRODUCTS) == []
    assert bid.entry_type == bid_pb2.ENTRY_TYPE_REBID
    assert bid.rebid_explanation.endswith("Changes: no bid in force for these intervals")
    assert bid.plan_hash == archive_key(PLAN).removeprefix("sha256:")
    assert decision.summary.startswith("REBID v1 from plan: 12 intervals, first interval ENERGY/GEN 150 MW")


def test_without_material_change_the_bid_in_force_stands() -> None:
    decision = decide(PLAN, dispatch_interval=NEXT, standing=STANDING)
    assert decision.outcome == STANDS and decision.bid is None and not decision.rebid
    assert decision.candidate == "plan" and not decision.safe_fallback
    assert decision.standing_bid_id == STANDING.bid_id == "HPR1/2021-01-05/163/v1"
    assert decision.summary == f"no material change from bid {STANDING.bid_id}: it stands"


def test_a_manual_rebid_is_submitted_without_material_change_and_leads_the_explanation() -> None:
    decision = decide(PLAN, dispatch_interval=NEXT, standing=STANDING,
                      controls=EffectiveControls(manual_rebid_reason="storm front moved north"))
    bid = submitted(decision)
    assert decision.changes == () and decision.manual_rebid_reason == "storm front moved north"
    assert bid.rebid_explanation.startswith("Manual rebid: storm front moved north.")
    assert bid.rebid_explanation.endswith("No material change.")
    assert decision.summary.endswith("; manual rebid: storm front moved north")


def test_a_soc_hold_offers_no_discharge_below_the_floor_and_is_a_material_change() -> None:
    decision = decide(PLAN, dispatch_interval=NEXT, standing=STANDING,
                      controls=EffectiveControls(soc_floor_fraction=0.6))
    bid = submitted(decision)
    assert max(gen_max_avail(bid)) == pytest.approx(0.0, abs=1e-9)  # 97 MWh is below 60 % of 194 MWh
    assert max(gen_max_avail(FIRST_BID)) > 100
    assert any("ENERGY/GEN availability changes" in change for change in decision.changes)
    held = battery_with_soc_floor(BATTERY, 0.6)
    assert validate_bid(bid, held, SETTINGS.market, products=PRODUCTS,
                        daily_band_prices=bid_store.band_prices_of(FIRST_BID)) == []


def test_a_paused_unit_decides_nothing_and_the_bid_in_force_stands() -> None:
    decision = decide(PLAN, dispatch_interval=NEXT, standing=STANDING,
                      controls=EffectiveControls(paused=True, paused_reason="transformer maintenance",
                                                 manual_rebid_reason="storm"))
    assert decision.outcome == PAUSED and decision.bid is None and decision.candidate is None
    assert not decision.safe_fallback and decision.rejected == () and decision.manual_rebid_reason is None
    assert decision.summary == ("bidding paused by the operator (transformer maintenance): nothing submitted; "
                                f"bid {STANDING.bid_id} stands")
    # Pausing needs no plan at all.
    assert decide(None, controls=EffectiveControls(paused=True)).outcome == PAUSED


def test_an_unusable_plan_goes_straight_to_the_safe_bid() -> None:
    infeasible = make_plan([0.0] * 12, [0.0] * 12, status=worker_pb2.RESULT_STATUS_INFEASIBLE)
    decision = decide(infeasible)
    bid = submitted(decision)
    assert decision.candidate == "safe" and decision.safe_fallback and decision.rejected == ()
    assert "Safe fallback bid from 17:35: plan status RESULT_STATUS_INFEASIBLE" in bid.rebid_explanation
    assert "SAFE FALLBACK" in decision.summary
    no_plan = submitted(decide(None))
    assert "Safe fallback bid from 17:35: no plan" in no_plan.rebid_explanation and no_plan.plan_hash == ""


def test_a_plan_whose_bid_is_rejected_falls_back_to_the_safe_bid() -> None:
    decision = decide(PLAN, settings=TYPO)
    bid = submitted(decision)
    assert decision.candidate == "safe" and decision.safe_fallback
    assert decision.violations == ("plan bid: planned_pricing must be 'price_taking' or 'energy_value', "
                                   "got 'energy-value'",)
    assert decision.rejected[0].bid is None and PLAN_BID_REJECTED in bid.rebid_explanation
    # A safe bid that does not change the bid in force lets it stand, still a safe fallback.
    again = decide(PLAN, dispatch_interval=NEXT, standing=in_force(bid), settings=TYPO)
    assert again.outcome == STANDS and again.candidate == "safe" and again.safe_fallback


def test_when_no_candidate_passes_nothing_is_submitted_and_every_violation_is_named() -> None:
    decision = decide(PLAN, dispatch_interval=NEXT, standing=STANDING, settings=NEW_LADDER)
    assert decision.outcome == NO_VALID_BID and decision.bid is None and decision.candidate is None
    assert decision.safe_fallback and [r.candidate for r in decision.rejected] == ["plan", "safe"]
    assert all(r.bid is not None and r.violations for r in decision.rejected)
    assert any(v.startswith("plan bid V4") for v in decision.violations)
    assert any(v.startswith("safe bid V4") for v in decision.violations)
    assert decision.summary == "no bid passed validation"


def test_the_same_inputs_decide_the_same_bid_bit_for_bit() -> None:
    controls = EffectiveControls(soc_floor_fraction=0.3, manual_rebid_reason="check")
    first = decide(PLAN, dispatch_interval=NEXT, standing=STANDING, controls=controls)
    second = decide(PLAN, dispatch_interval=NEXT, standing=STANDING, controls=controls)
    assert first == second and submitted(first).SerializeToString(deterministic=True) == \
        submitted(second).SerializeToString(deterministic=True)


# --------------------------------------------------------------------------------------------------
# The same inputs through the three callers
# --------------------------------------------------------------------------------------------------


# A cycle at 12:00:30 on 5 January 2021, inside the hour before the daily bid close of the 6th: a plan of 288
# intervals from 12:10 reaches 12:05 on the 6th, so the DAILY bid for the 6th follows it to then.
BEFORE_CLOSE = datetime(2021, 1, 5, 12, 10)
DAILY_PLAN = make_plan([0.0] * 200 + [100.0] * 20 + [0.0] * 68, [0.0] * 20 + [80.0] * 20 + [0.0] * 248,
                       first=BEFORE_CLOSE)
# The DAILY bid of the 5th (decided at 12:00:30 on the 4th, no plan: the conservative default).
DAILY_OF_FIRST_DAY = cast(bid_pb2.Bid, decide_bid(
    None, standing_bid=None, controls=EffectiveControls(), battery=BATTERY, bidding=SETTINGS.bidding,
    rules=SETTINGS.market, products=PRODUCTS, daily_band_prices=None, dispatch_interval=datetime(2021, 1, 4, 12, 10),
    offer_time=offer_time(datetime(2021, 1, 4, 12, 10)), version=1, initial_state_of_charge_mwh=INITIAL_SOC_MWH,
    plan_hash="", daily_bids=DailyBidsInForce()).daily_bid)


@dataclass(frozen=True)
class Case:
    """The inputs of one bid decision, as every caller gets them."""

    plan: worker_pb2.OptimisationResult
    dispatch_interval: datetime = FIRST
    standing: bid_pb2.Bid | None = None
    controls: EffectiveControls = field(default_factory=EffectiveControls)
    settings: Settings = SETTINGS
    # The accepted DAILY bid of the dispatch interval's trading day (every caller knows it), if any.
    daily: bid_pb2.Bid | None = None


CASES = {
    "first bid": Case(PLAN),
    "no material change": Case(PLAN, NEXT, FIRST_BID),
    "manual rebid": Case(PLAN, NEXT, FIRST_BID, EffectiveControls(manual_rebid_reason="storm front moved north")),
    "SoC hold": Case(PLAN, NEXT, FIRST_BID, EffectiveControls(soc_floor_fraction=0.6)),
    "SoC hold and manual rebid": Case(PLAN, NEXT, FIRST_BID,
                                      EffectiveControls(soc_floor_fraction=0.6, manual_rebid_reason="storm watch")),
    "plan's bid rejected, safe bid used": Case(PLAN, NEXT, FIRST_BID, settings=TYPO),
    "unusable plan": Case(make_plan([0.0] * 12, [0.0] * 12, status=worker_pb2.RESULT_STATUS_INFEASIBLE), NEXT,
                          FIRST_BID),
    "no valid bid": Case(PLAN, NEXT, FIRST_BID, settings=NEW_LADDER),
    "DAILY bid due": Case(DAILY_PLAN, BEFORE_CLOSE),
    "rebid keeps the DAILY prices": Case(PLAN, settings=NEW_LADDER, daily=DAILY_OF_FIRST_DAY),
}


@dataclass(frozen=True)
class LiveDecision:
    """What the activity returned and archived."""

    built: BidBuilt
    bid: bid_pb2.Bid | None
    rejected: tuple[tuple[str, bid_pb2.Bid], ...]
    daily: bid_pb2.Bid | None = None


@pytest.fixture
def database(server_url: str) -> Iterator[str]:
    """A fresh migrated database per case: the unit's bids are only those the case seeds."""
    with temporary_database(server_url) as url:
        migrate(url)
        yield url


async def live_decision(case: Case, database_url: str, folder: Path) -> LiveDecision:
    """The ``build_and_validate_bid`` activity, with the bid in force seeded in PostgreSQL."""
    async with await connect(database_url) as conn:
        for seeded in (case.daily, case.standing):
            if seeded is not None:
                await bid_store.insert_bid(conn, bid_record(seeded, bid_key(seeded), ()))
        await conn.commit()
    archive = LocalArchive(folder / "archive")
    activities = CycleActivities(replace(case.settings, database_url=database_url), archive=archive,
                                 sqs=None, queues=None)  # type: ignore[arg-type]
    plan_key = archive.put(case.plan, cycle_id="cycle", label="optimisation-result/")
    request = BuildBidInput(cycle_id="cycle", unit_id=BATTERY.unit_id, plan_key=plan_key,
                            dispatch_interval=case.dispatch_interval.isoformat(),
                            offer_time=offer_time(case.dispatch_interval).isoformat(), version=1,
                            state_of_charge_mwh=INITIAL_SOC_MWH, products=PRODUCTS,
                            soc_floor_fraction=case.controls.soc_floor_fraction,
                            manual_rebid_reason=case.controls.manual_rebid_reason)
    built = await ActivityEnvironment().run(activities.build_and_validate_bid, request)
    bid = cast(bid_pb2.Bid, archive.get(built.bid_key)) if built.bid_key else None
    rejected = tuple((entry.label, cast(bid_pb2.Bid, archive.get(entry.key)))
                     for entry in archive.list_cycle("cycle") if entry.label.startswith("bid-rejected/"))
    daily = cast(bid_pb2.Bid, archive.get(built.daily_bid_key)) if built.daily_bid_key else None
    return LiveDecision(built, bid, rejected, daily)


def backtest_decision(case: Case) -> tuple[BidDecision, BidBook]:
    """The backtest engine's bid stage, with the bid in force in its market's book."""
    book = BidBook()
    if case.daily is not None:
        book.accept_daily(case.daily)
    if case.standing is not None:
        book.accept(case.standing, nem_time.from_timestamp(case.standing.dispatch_interval),
                    case.settings.market.band_count)
    decision = bid_stage(book, case.plan, case.settings, battery=BATTERY, products=PRODUCTS, controls=case.controls,
                         dispatch_interval=case.dispatch_interval, offer_time=offer_time(case.dispatch_interval),
                         version=1, initial_state_of_charge_mwh=INITIAL_SOC_MWH)
    return decision, book


def replay_decision(case: Case) -> BidDecision:
    """The archive replay's rebuild, on the battery as the optimisation request archived it (SoC hold
    applied), given the bid in force (the DAILY bid when no rebid covers the interval) and the day's band
    prices."""
    standing = case.standing if case.standing is not None else case.daily
    return rebuild_bid(
        case.plan, battery_with_soc_floor(BATTERY, case.controls.soc_floor_fraction), case.settings,
        dispatch_interval=case.dispatch_interval, offer_time=offer_time(case.dispatch_interval), version=1,
        products=PRODUCTS, initial_state_of_charge_mwh=INITIAL_SOC_MWH,
        standing_bid=StandingBid(bid_key(standing).bid_id, standing) if standing is not None else None,
        daily_band_prices=bid_store.band_prices_of(case.daily if case.daily is not None else standing)
        if standing is not None or case.daily is not None else None,
        controls=case.controls,
        daily_bids=DailyBidsInForce(
            day_prices=bid_store.band_prices_of(case.daily) if case.daily is not None else None,
            days_with_daily_bid=frozenset({date.fromisoformat(case.daily.trading_day)}) if case.daily else frozenset()))


def _bytes(bid: bid_pb2.Bid | None) -> bytes | None:
    return bid.SerializeToString(deterministic=True) if bid is not None else None


@pytest.mark.parametrize("name", list(CASES))
async def test_the_three_callers_decide_identically(name: str, database: str, tmp_path: Path) -> None:
    case = CASES[name]
    live = await live_decision(case, database, tmp_path)
    backtest, book = backtest_decision(case)
    replay = replay_decision(case)
    assert backtest == replay  # every field, bids included
    decision = backtest
    # The activity's fact and archive say the same.
    assert live.built.rebid == decision.rebid
    assert live.built.valid == (decision.outcome != NO_VALID_BID)
    assert live.built.safe_fallback == decision.safe_fallback
    assert live.built.violations == decision.violations
    assert live.built.summary == decision.summary
    assert live.built.manual_rebid_reason == decision.manual_rebid_reason
    assert live.built.standing_bid_id == (decision.standing_bid_id if decision.outcome == STANDS else None)
    assert _bytes(live.bid) == _bytes(decision.bid)
    assert [(label, _bytes(bid)) for label, bid in live.rejected] == [
        (f"bid-rejected/{r.candidate}", _bytes(r.bid)) for r in (*decision.rejected, *decision.daily_rejected)
        if r.bid is not None]
    # The same DAILY bid (or none) for the next trading day, and the backtest's market holds it.
    assert _bytes(live.daily) == _bytes(decision.daily_bid)
    assert live.built.daily_summary == decision.daily_summary
    if decision.daily_bid is not None:
        assert book.daily_bids[date.fromisoformat(decision.daily_bid.trading_day)].bid == decision.daily_bid
    # The backtest's market accepted exactly the bid submitted.
    if decision.bid is not None:
        assert book.newest is not None and book.newest.bid == decision.bid
        assert book.newest.bid_id == bid_id_for("HPR1", nem_time.trading_day(case.dispatch_interval),
                                                case.dispatch_interval, 1)
    expected = {
        "first bid": (SUBMIT, "plan", False),
        "no material change": (STANDS, "plan", False),
        "manual rebid": (SUBMIT, "plan", False),
        "SoC hold": (SUBMIT, "plan", False),
        "SoC hold and manual rebid": (SUBMIT, "plan", False),
        "plan's bid rejected, safe bid used": (SUBMIT, "safe", True),
        "unusable plan": (SUBMIT, "safe", True),
        "no valid bid": (NO_VALID_BID, None, True),
        "DAILY bid due": (SUBMIT, "plan", False),
        "rebid keeps the DAILY prices": (SUBMIT, "plan", False),
    }[name]
    if name == "DAILY bid due":
        assert decision.daily_bid is not None and decision.daily_bid.trading_day == "2021-01-06"
        assert decision.daily_bid.entry_type == bid_pb2.ENTRY_TYPE_DAILY and decision.daily_bid.version == 0
    else:
        assert decision.daily_bid is None and decision.daily_summary == ""
    if case.daily is not None:  # the configured ladder moved, the DAILY bid's prices are kept
        assert decision.bid is not None
        assert bid_store.band_prices_of(decision.bid) == bid_store.band_prices_of(case.daily)
    assert (decision.outcome, decision.candidate, decision.safe_fallback) == expected
    if case.controls.soc_floor_fraction is not None:
        assert decision.bid is not None and max(gen_max_avail(decision.bid)) == pytest.approx(0.0, abs=1e-9)
    if case.controls.manual_rebid_reason is not None:
        assert decision.bid is not None
        assert decision.bid.rebid_explanation.startswith(f"Manual rebid: {case.controls.manual_rebid_reason}.")


async def _build(activities: CycleActivities, archive: LocalArchive, plan: worker_pb2.OptimisationResult,
                 dispatch_interval: datetime, cycle_id: str, soc_floor_fraction: float | None = None) -> BidBuilt:
    request = BuildBidInput(cycle_id=cycle_id, unit_id=BATTERY.unit_id,
                            plan_key=archive.put(plan, cycle_id=cycle_id, label="optimisation-result/"),
                            dispatch_interval=dispatch_interval.isoformat(),
                            offer_time=offer_time(dispatch_interval).isoformat(), version=1,
                            state_of_charge_mwh=INITIAL_SOC_MWH, products=PRODUCTS,
                            soc_floor_fraction=soc_floor_fraction, manual_rebid_reason=None)
    return await ActivityEnvironment().run(activities.build_and_validate_bid, request)


@pytest.mark.parametrize("soc_floor_fraction", [None, 0.9])  # the bid in force stands / a material change
async def test_a_bid_this_worker_built_is_compared_from_its_own_columns_with_the_same_decision(
        soc_floor_fraction: float | None, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next cycle of a unit compares its bid with the bid in force from the columns its previous cycle built
    it with (no re-read of its period offers), and decides exactly as a worker that reads them."""
    archive = LocalArchive(tmp_path / "archive")
    settings = replace(SETTINGS, database_url=database)
    same = CycleActivities(settings, archive=archive, sqs=None, queues=None)  # type: ignore[arg-type]
    first = await _build(same, archive, PLAN, FIRST, "cycle-1")
    assert first.rebid and first.bid_key is not None
    bid = cast(bid_pb2.Bid, archive.get(first.bid_key))
    async with await connect(database) as conn:  # accepted by the market: the bid in force for NEXT
        await bid_store.insert_bid(conn, bid_record(bid, bid_key(bid), ()))
        await conn.commit()
    reads: list[int] = []
    read_columns = ColumnarBid.of

    def counted(bid: bid_pb2.Bid, band_count: int) -> ColumnarBid:
        reads.append(band_count)
        return read_columns(bid, band_count)

    monkeypatch.setattr(ColumnarBid, "of", counted)
    fresh = CycleActivities(settings, archive=archive, sqs=None, queues=None)  # type: ignore[arg-type]
    from_read = await _build(fresh, archive, PLAN, NEXT, "cycle-2", soc_floor_fraction)
    assert len(reads) == 1  # the fresh worker read the bid in force's period offers
    from_built = await _build(same, archive, PLAN, NEXT, "cycle-3", soc_floor_fraction)
    assert len(reads) == 1  # this one compared the columns it built
    assert from_built == replace(from_read, bid_key=from_built.bid_key)
    assert from_built.rebid == (soc_floor_fraction is not None)
    if from_built.bid_key is not None:
        assert archive.get(from_built.bid_key) == archive.get(from_read.bid_key or "")
