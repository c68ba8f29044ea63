"""DAILY bids: when the next trading day's daily bid is due, what it contains, and the prices rebids keep.

AEMO takes a DAILY bid for trading day D until the daily bid close (``[market] daily_bid_close``, 12:30
market time on D−1); from then on every change for D is a REBID, and a rebid may change quantities but never
the band prices (rule V4). The platform therefore:

1. **Decides when a DAILY bid is due** (:func:`daily_bid_due`): from ``[bidding] daily_bid_lead_minutes``
   before the close up to the close, for the trading day whose close that is, unless that day already has
   a DAILY bid (accepted or rejected: the DAILY bid is version :data:`DAILY_BID_VERSION` of the day's first
   interval, idempotent per unit and day, so it is submitted once). A lead of 0 disables DAILY bids.
2. **Builds it** (:func:`daily_bid_candidates`): the day's band prices are the configured ladders pulled
   within that day's price limits (:func:`algorithms.market.bid_builder.bidding_for_trading_day`); it covers
   every interval of the day (``[market] intervals_per_trading_day``, 04:05 to 04:00 interval-ending AEST).
   Availabilities follow the plan where the plan covers the day (the same strategy as every bid,
   :func:`algorithms.market.bid_builder.build_bid`, from the SoC the plan expects there); intervals the plan
   does not reach — and the whole day when there is no usable plan — are offered at the *conservative
   default*: 0 MW in every ENERGY band (MAXAVAIL 0) and 0 MW of FCAS, with PASA availability, ramp rates
   and trapezia as registered. Nothing is offered where the platform does not know the state of charge; the
   cycles of day D rebid the quantities from their own plans.
3. **Keeps its prices** (:func:`bidding_in_force`): every bid for D after the close is a REBID whose band
   prices are the DAILY bid's; without a DAILY bid for D the configured ladder is used, and the validator
   holds rebids to the prices of the day's first accepted bid.

:func:`algorithms.market.bid_decision.decide_bid` calls these for the live cycle, the backtest engine and the
archive replay alike; callers only fetch :class:`DailyBidsInForce`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from algorithms.common import nem_time
from algorithms.common.battery import battery_from_spec
from algorithms.common.products import ENERGY
from algorithms.market.bid_builder import (
    bidding_for_trading_day,
    build_bid,
    build_safe_bid,
    unusable_plan_reason,
)
from settings import BiddingSettings, MarketRules
from vpp.v1 import bid_pb2, common_pb2, worker_pb2

# The version a DAILY bid carries (rebids carry the cycle's version, >= 1): with the day's first interval it
# makes the DAILY bid's idempotency key, so a trading day gets one DAILY bid per unit.
DAILY_BID_VERSION = 0
# The candidates of a DAILY bid, in the order they are tried.
DAILY_PLAN_CANDIDATE = "daily-plan"
DAILY_DEFAULT_CANDIDATE = "daily-default"

BandPrices = Mapping[tuple[str, int], Sequence[float]]


@dataclass(frozen=True)
class DailyBidsInForce:
    """What the bid decision needs to know about DAILY bids, as every caller fetches it.

    ``day_prices``: (product, direction) → band prices ($/MWh, FCAS $/MW/h) of the accepted DAILY bid of the
    dispatch interval's trading day, None when that day has none. ``days_with_daily_bid``: trading days
    for which a DAILY bid was already submitted (accepted or rejected), so none is due again.
    """

    day_prices: BandPrices | None = None
    days_with_daily_bid: frozenset[date] = frozenset()


def daily_bid_due(offer_time: datetime, rules: MarketRules, bidding: BiddingSettings,
                  days_with_daily_bid: frozenset[date] = frozenset()) -> date | None:
    """The trading day whose DAILY bid is due at ``offer_time`` (market time, AEST), or None.

    Due from ``bidding.daily_bid_lead_minutes`` before the daily bid close of trading day D
    (``rules.daily_bid_close`` on D−1) up to and including the close, unless D is in
    ``days_with_daily_bid``. A lead of 0 minutes: never due. Raises ValueError for a negative lead.
    """
    lead_minutes = bidding.daily_bid_lead_minutes
    if lead_minutes < 0:
        raise ValueError(f"daily_bid_lead_minutes must be >= 0, got {lead_minutes}")
    if lead_minutes == 0:
        return None
    day = offer_time.date() + timedelta(days=1)
    deadline = nem_time.daily_bid_deadline(day, rules.daily_bid_close)
    if not deadline - timedelta(minutes=lead_minutes) <= offer_time <= deadline or day in days_with_daily_bid:
        return None
    return day


def first_interval_of(day: date, rules: MarketRules) -> datetime:
    """The first interval of trading day ``day`` (interval-ending AEST: 04:05)."""
    return datetime.combine(day, nem_time.TRADING_DAY_START) + timedelta(minutes=rules.interval_minutes)


def bidding_in_force(bidding: BiddingSettings, day_prices: BandPrices | None) -> BiddingSettings:
    """The ladders a bid for the day must carry: the DAILY bid's band prices when ``day_prices`` (the day's
    accepted DAILY bid) is given, else the configured ``bidding`` unchanged.

    ENERGY GEN and LOAD take the DAILY bid's ENERGY ladders; the FCAS ladder is the DAILY bid's when all its
    FCAS offers share one (as the platform's own bids do) — otherwise the configured one stays and the
    validator (V4) refuses a rebid that would change the day's prices.
    """
    if not day_prices:
        return bidding
    gen = day_prices.get((ENERGY, int(common_pb2.DIRECTION_GEN)))
    load = day_prices.get((ENERGY, int(common_pb2.DIRECTION_LOAD)))
    fcas_ladders = {tuple(prices) for (product, _), prices in day_prices.items() if product != ENERGY}
    return replace(
        bidding,
        gen_band_prices=tuple(gen) if gen else bidding.gen_band_prices,
        load_band_prices=tuple(load) if load else bidding.load_band_prices,
        fcas_band_prices=next(iter(fcas_ladders)) if len(fcas_ladders) == 1 else bidding.fcas_band_prices)


def _with_zero_energy(bid: bid_pb2.Bid, band_count: int) -> bid_pb2.Bid:
    """A copy of ``bid`` offering 0 MW in every ENERGY band (MAXAVAIL 0), with no explanation (a DAILY entry
    carries none)."""
    copy = bid_pb2.Bid()
    copy.CopyFrom(bid)
    copy.rebid_explanation = ""
    zeros = [0.0] * band_count
    for offer in copy.offers:
        if offer.product != ENERGY:
            continue
        for period in offer.periods:
            period.max_avail_mw = 0.0
            del period.band_avail_mw[:]
            period.band_avail_mw.extend(zeros)
    return copy


def _overlay(default: bid_pb2.Bid, planned: bid_pb2.Bid) -> bid_pb2.Bid:
    """``default`` with each offer's leading periods replaced by ``planned``'s offer of the same product and
    direction (``planned`` covers a prefix of the day)."""
    merged = bid_pb2.Bid()
    merged.CopyFrom(default)
    merged.plan_hash = planned.plan_hash
    planned_offers = {(offer.product, offer.direction): offer for offer in planned.offers}
    for offer in merged.offers:
        source = planned_offers.get((offer.product, offer.direction))
        if source is None:
            continue
        rest = list(offer.periods[len(source.periods):])
        del offer.periods[:]
        offer.periods.extend(source.periods)
        offer.periods.extend(rest)
    return merged


def daily_bid_candidates(plan: worker_pb2.OptimisationResult | None, battery: common_pb2.BatterySpec,
                         bidding: BiddingSettings, rules: MarketRules, *, trading_day: date, offer_time: datetime,
                         fcas_products: Sequence[str], initial_state_of_charge_mwh: float, plan_hash: str,
                         ) -> list[tuple[str, Callable[[], bid_pb2.Bid]]]:
    """The DAILY bid candidates for ``trading_day``, in the order to try them (see the module docstring):
    the plan's availabilities where the plan covers the day with the default after it (only when the plan
    can be bid for the day's first interval), then the conservative default for the whole day.

    ``offer_time`` (AEST) must be at or before the day's daily bid close (else the builders make a REBID
    and the validator refuses it, V4). ``initial_state_of_charge_mwh`` is the stored energy (MWh) at the start
    of the plan's first interval. Each candidate raises ValueError when no bid can be built from its inputs.
    """
    first = first_interval_of(trading_day, rules)
    whole_day = replace(bidding, bid_horizon_intervals=rules.intervals_per_trading_day)
    placed: dict[str, Any] = dict(dispatch_interval=first, offer_time=offer_time, version=DAILY_BID_VERSION,
                  fcas_products=fcas_products, initial_state_of_charge_mwh=initial_state_of_charge_mwh,
                  plan_hash=plan_hash)

    def default() -> bid_pb2.Bid:
        day_bidding = bidding_for_trading_day(whole_day, rules, battery_from_spec(battery), trading_day)
        skeleton = build_safe_bid(battery, day_bidding, rules, reason="daily bid default", **placed)
        return _with_zero_energy(skeleton, rules.band_count)

    candidates: list[tuple[str, Callable[[], bid_pb2.Bid]]] = []
    if plan is not None and unusable_plan_reason(plan, first, rules, fcas_products) is None:
        usable = plan

        def from_plan() -> bid_pb2.Bid:
            return _overlay(default(), build_bid(usable, battery, whole_day, rules, **placed))

        candidates.append((DAILY_PLAN_CANDIDATE, from_plan))
    candidates.append((DAILY_DEFAULT_CANDIDATE, default))
    return candidates


def daily_bid_summary(bid: bid_pb2.Bid) -> str:
    """One line for operators: the DAILY bid's trading day, how many intervals offer energy (MAXAVAIL > 0 on
    either ENERGY side) out of those it covers, and its ENERGY GEN band prices ($/MWh)."""
    energy = [offer for offer in bid.offers if offer.product == ENERGY]
    covered = max((len(offer.periods) for offer in energy), default=0)
    offered = {index for offer in energy for index, period in enumerate(offer.periods) if period.max_avail_mw > 0}
    gen = next((list(offer.band_price) for offer in energy if offer.direction == common_pb2.DIRECTION_GEN), [])
    return (f"DAILY bid for trading day {bid.trading_day}: energy offered in {len(offered)} of {covered} "
            f"intervals (the plan's), 0 MW after; GEN band prices {', '.join(f'{p:g}' for p in gen)} $/MWh")
