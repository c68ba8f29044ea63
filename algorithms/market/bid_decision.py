"""The bid decision: from a plan to what is submitted — one pure function for every caller.

The live cycle (the ``build_and_validate_bid`` activity), the backtest engine and the replay of the live
archive all decide a bid with :func:`decide_bid`; each only fetches the inputs (the plan, the bid in
force, the trading day's band prices, the operator's controls) and stores what it decided.

For the interval ending ``dispatch_interval`` (AEST), offered at ``offer_time`` (AEST):

1. **Paused.** A unit the operator paused decides ``PAUSED``: nothing is built or submitted and the bid in
   force stands. (The live cycle never gets this far when paused — its fetch stage already stops, reading
   no market data — so it records ``PAUSED`` before any plan exists; the backtest replays a pause through
   this branch.)
2. **SoC hold.** An operator's SoC floor raises the battery's minimum SoC
   (:func:`algorithms.market.operator_controls.battery_with_soc_floor`) for every bid built and validated,
   so no discharge is offered below it (charging up to it is not forced).
3. **Candidates.** The plan's bid (:func:`algorithms.market.bid_builder.build_bid`), then the safe bid
   (:func:`algorithms.market.bid_builder.build_safe_bid`). A plan that cannot be bid at all (no plan,
   status not OPTIMAL, arrays short or not finite, not covering the interval:
   :func:`algorithms.market.bid_builder.unusable_plan_reason`) goes straight to the safe bid, with that
   reason in its explanation.
4. **Materiality.** A candidate that does not differ materially from the bid in force
   (:func:`algorithms.market.rebid.material_changes`, ``[bidding] rebid_materiality_mw``) is not
   resubmitted: the decision is ``STANDS`` — unless the operator asked for a manual rebid, which is
   submitted even without material change.
5. **Explanation.** A rebid's explanation lists the material changes
   (:func:`algorithms.market.rebid.with_rebid_reason`); a manual rebid's starts with the operator's reason
   (:func:`algorithms.market.operator_controls.with_operator_rebid_reason`).
6. **Validation.** The candidate must pass V1–V8 (:func:`algorithms.market.bid_validation.validate_bid`)
   with the trading day's band prices in force (V4); a rejected candidate is kept (with its violations)
   and the next one is tried. The first that passes is ``SUBMIT``; none passing is ``NO_VALID_BID``.

**Columns.** Candidates are built with the columns of their period offers
(:mod:`algorithms.market.bid_columns`), and the materiality check and validation read those columns (and
the bid in force's, when the caller keeps them: ``StandingBid.columns``) instead of each period offer of
the protobuf; the verdicts are the same as on the protobuf alone. The decision carries the protobuf
(``bid``, what is archived and submitted) and its columns (``columns``).

**Safe fallback** — one definition for every caller: ``safe_fallback`` is True when the decision fell
back to the safe bid, i.e. the plan's bid was not used because the plan was unusable (step 3) or its bid
could not be built or failed validation — whether the safe bid was then submitted, stood as no material
change, or was itself rejected (``NO_VALID_BID``). It is False when the plan's own bid was used and when
the unit is paused (no bid was decided at all).

**DAILY bids** (:mod:`algorithms.market.daily_bid`) — decided here too, so every caller behaves the same.
When ``daily_bids`` is given: (a) the candidates carry the band prices of the trading day's accepted DAILY
bid when it has one (:func:`~algorithms.market.daily_bid.bidding_in_force`; else the configured ladder), so
a rebid after 12:30 D−1 keeps them; (b) when the next trading day's DAILY bid is due at ``offer_time``
(:func:`~algorithms.market.daily_bid.daily_bid_due`) and the unit is not paused, ``daily_bid`` is the first
DAILY candidate that passes V0–V8 (the plan's availabilities where it covers the day, else the conservative
default), with rejected DAILY candidates in ``daily_rejected``. It is decided whatever the interval's own
outcome (SUBMIT, STANDS or NO_VALID_BID) and submitted after it. ``daily_bids`` None (a replay that does not
know the DAILY bids) decides no DAILY bid and uses the configured ladder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Literal, cast

from algorithms.common.content_hash import sha256_hex
from algorithms.common.products import ENERGY, fcas_products_of
from algorithms.market.bid_builder import build_bid_columns, build_safe_bid_columns, unusable_plan_reason
from algorithms.market.bid_columns import ColumnarBid
from algorithms.market.bid_validation import validate_bid
from algorithms.market.daily_bid import (
    DailyBidsInForce,
    bidding_in_force,
    daily_bid_candidates,
    daily_bid_due,
    daily_bid_summary,
)
from algorithms.market.operator_controls import (
    EffectiveControls,
    battery_with_soc_floor,
    with_operator_rebid_reason,
)
from algorithms.market.rebid import material_changes, with_rebid_reason_columns
from settings import BiddingSettings, MarketRules
from vpp.v1 import bid_pb2, common_pb2, worker_pb2

DecisionOutcome = Literal["SUBMIT", "STANDS", "PAUSED", "NO_VALID_BID"]
SUBMIT: DecisionOutcome = "SUBMIT"
STANDS: DecisionOutcome = "STANDS"
PAUSED: DecisionOutcome = "PAUSED"
NO_VALID_BID: DecisionOutcome = "NO_VALID_BID"

# The candidates, in the order they are tried.
PLAN_CANDIDATE = "plan"
SAFE_CANDIDATE = "safe"
# The safe bid's reason when the plan was usable but its bid was not.
PLAN_BID_REJECTED = "the plan's bid failed validation"
# The safe bid's reason when there is no plan at all.
NO_PLAN = "no plan"


@dataclass(frozen=True)
class StandingBid:
    """The newest accepted bid covering the dispatch interval, with the market's id for it; ``columns``: the
    bid with the columns of its period offers when the caller has them (the backtest's bid book), so the
    rebid check compares columns (None: read from ``bid``)."""

    bid_id: str
    bid: bid_pb2.Bid
    columns: ColumnarBid | None = field(default=None, compare=False)


@dataclass(frozen=True)
class RejectedBid:
    """A candidate that was not submitted: ``build_error`` when it could not be built (``bid`` None), else
    the bid as validated and the rules it violates (``"V2: ..."``)."""

    candidate: str
    bid: bid_pb2.Bid | None
    violations: tuple[str, ...] = ()
    build_error: str | None = None

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why it was rejected, each prefixed with the candidate: ``"plan bid V2: ..."`` or
        ``"safe bid: <build error>"``."""
        if self.build_error is not None:
            return (f"{self.candidate} bid: {self.build_error}",)
        return tuple(f"{self.candidate} bid {violation}" for violation in self.violations)


@dataclass(frozen=True)
class BidDecision:
    """What the bid stage decided (see the module docstring).

    ``outcome``: ``SUBMIT`` (``bid`` is the validated bid to submit: a rebid, or the first bid covering
    these intervals), ``STANDS`` (no material change: the bid in force ``standing_bid_id`` stands),
    ``PAUSED`` (the operator paused bidding; nothing submitted) or ``NO_VALID_BID`` (every candidate was
    rejected). ``candidate`` is the candidate the decision rests on (``"plan"`` or ``"safe"``; None when
    paused or none was valid). ``rejected`` are the candidates not submitted, in order, with their bids
    where one was built (callers archive them). ``changes`` are the material changes from the bid in
    force of the candidate decided on. ``manual_rebid_reason`` is the operator's reason when the bid
    submitted is a manual rebid; ``paused_reason`` the pause's reason. ``columns`` is ``bid`` with the
    columns of its period offers (:mod:`algorithms.market.bid_columns`) when one is submitted.
    """

    outcome: DecisionOutcome
    bid: bid_pb2.Bid | None
    candidate: str | None
    safe_fallback: bool
    standing_bid_id: str | None
    rejected: tuple[RejectedBid, ...] = ()
    changes: tuple[str, ...] = ()
    manual_rebid_reason: str | None = None
    paused_reason: str | None = None
    columns: ColumnarBid | None = field(default=None, compare=False)
    daily_bid: bid_pb2.Bid | None = None
    daily_trading_day: date | None = None
    daily_rejected: tuple[RejectedBid, ...] = ()

    @property
    def daily_summary(self) -> str:
        """One line on the next trading day's DAILY bid: what it offers, or why none passed; "" when none
        was due."""
        if self.daily_bid is not None:
            return daily_bid_summary(self.daily_bid)
        if self.daily_trading_day is not None:
            reasons = "; ".join(reason for rejected in self.daily_rejected for reason in rejected.reasons)
            return f"no DAILY bid for trading day {self.daily_trading_day} passed validation: {reasons}"
        return ""

    @property
    def rebid(self) -> bool:
        """True when a new bid is to be submitted (``SUBMIT``)."""
        return self.outcome == SUBMIT

    @property
    def violations(self) -> tuple[str, ...]:
        """Every rejected candidate's reasons, in order (``"plan bid V6: ..."``, ``"safe bid: ..."``)."""
        return tuple(reason for rejected in self.rejected for reason in rejected.reasons)

    @property
    def summary(self) -> str:
        """One line for operators: what is submitted (entry type, version, source, intervals, first-interval
        ENERGY MAXAVAIL per side, bid hash), or that the bid in force stands, or why nothing is."""
        if self.outcome == PAUSED:
            return (f"bidding paused by the operator ({self.paused_reason or 'no reason'}): nothing submitted; "
                    + (f"bid {self.standing_bid_id} stands" if self.standing_bid_id else "no bid in force"))
        if self.outcome == STANDS:
            return f"no material change from bid {self.standing_bid_id}: it stands"
        if self.outcome == NO_VALID_BID or self.bid is None:
            return "no bid passed validation"
        manual = f"; manual rebid: {self.manual_rebid_reason}" if self.manual_rebid_reason else ""
        return bid_summary(self.bid, self.safe_fallback) + manual


def bid_summary(bid: bid_pb2.Bid, safe_fallback: bool) -> str:
    """One line for operators: entry type, version, source, periods, first-interval MAXAVAIL per ENERGY
    side (MW) and the first 12 characters of the bid's content hash."""
    first: dict[str, float] = {}
    periods = 0
    for offer in bid.offers:
        if offer.periods:
            periods = max(periods, len(offer.periods))
            side = common_pb2.Direction.Name(cast(Any, offer.direction)).removeprefix("DIRECTION_")
            label = offer.product if side == "UNSPECIFIED" else f"{offer.product}/{side}"
            first[label] = offer.periods[0].max_avail_mw
    entry = bid_pb2.EntryType.Name(cast(Any, bid.entry_type)).removeprefix("ENTRY_TYPE_")
    energy = ", ".join(f"{label} {mw:.0f} MW" for label, mw in first.items() if label.startswith(ENERGY))
    source = "SAFE FALLBACK" if safe_fallback else "from plan"
    return (f"{entry} v{bid.version} {source}: {periods} intervals, first interval {energy}; "
            f"bid hash {sha256_hex(bid.SerializeToString(deterministic=True))[:12]}")


def _candidates(plan: worker_pb2.OptimisationResult | None, battery: common_pb2.BatterySpec,
                bidding: BiddingSettings, rules: MarketRules, placed: Mapping[str, Any],
                ) -> list[tuple[str, Callable[[], ColumnarBid]]]:
    """The candidates to try, in order: the plan's bid when the plan can be bid, then the safe bid (whose
    explanation says why the plan's bid was not used). ``placed``: where and when the bid goes."""
    fcas_products = placed["fcas_products"]
    unusable = NO_PLAN if plan is None else unusable_plan_reason(plan, placed["dispatch_interval"], rules,
                                                                 fcas_products)
    candidates: list[tuple[str, Callable[[], ColumnarBid]]] = []
    if plan is not None and unusable is None:
        usable = plan
        candidates.append((PLAN_CANDIDATE, lambda: build_bid_columns(usable, battery, bidding, rules, **placed)))
    safe_reason = unusable if unusable is not None else PLAN_BID_REJECTED
    candidates.append((SAFE_CANDIDATE, lambda: build_safe_bid_columns(battery, bidding, rules, reason=safe_reason,
                                                                      **placed)))
    return candidates


def decide_bid(plan: worker_pb2.OptimisationResult | None, *, standing_bid: StandingBid | None,
               controls: EffectiveControls, battery: common_pb2.BatterySpec, bidding: BiddingSettings,
               rules: MarketRules, products: Sequence[str],
               daily_band_prices: Mapping[tuple[str, int], Sequence[float]] | None,
               dispatch_interval: datetime, offer_time: datetime, version: int,
               initial_state_of_charge_mwh: float, plan_hash: str,
               daily_bids: DailyBidsInForce | None = None) -> BidDecision:
    """Decide the bid for the interval ending ``dispatch_interval`` (steps in the module docstring).

    ``plan``: the optimiser's plan (None: no plan, the safe bid is built). ``standing_bid``: the bid in
    force for the interval (None: none). ``controls``: the operator's controls in force (pause, SoC floor
    as a fraction of capacity, a pending manual rebid's reason). ``battery``: the unit as registered (the
    floor is applied here). ``products``: the products tradable in the data (ENERGY and the FCAS names).
    ``daily_band_prices``: (product, direction) → the band prices in force for the trading day ($/MWh,
    FCAS $/MW/h; None: no accepted bid that day, V4 checks the entry type only). ``offer_time`` (AEST)
    decides DAILY or REBID; ``version`` is the bid version; ``initial_state_of_charge_mwh`` the stored
    energy (MWh) at the start of the plan's first interval; ``plan_hash`` names the plan in the bid
    (content hash hex). ``daily_bids``: the DAILY bids in force and submitted (module docstring; the next
    day's DAILY bid takes the configured ladder within that day's limits). Never raises for a bad plan or a
    bid that cannot be built: those are rejected candidates.
    """
    standing_id = standing_bid.bid_id if standing_bid is not None else None
    if controls.paused:
        return BidDecision(outcome=PAUSED, bid=None, candidate=None, safe_fallback=False,
                           standing_bid_id=standing_id, paused_reason=controls.paused_reason)
    held = battery_with_soc_floor(battery, controls.soc_floor_fraction)
    in_force = bidding_in_force(bidding, daily_bids.day_prices) if daily_bids is not None else bidding
    decision = _decide_interval(plan, standing_bid=standing_bid, controls=controls, held=held, bidding=in_force,
                                rules=rules, products=products, daily_band_prices=daily_band_prices,
                                dispatch_interval=dispatch_interval, offer_time=offer_time, version=version,
                                initial_state_of_charge_mwh=initial_state_of_charge_mwh, plan_hash=plan_hash)
    due = (daily_bid_due(offer_time, rules, bidding, daily_bids.days_with_daily_bid)
           if daily_bids is not None else None)
    if due is None:
        return decision
    daily_bid, daily_rejected = _decide_daily(plan, held=held, bidding=bidding, rules=rules, products=products,
                                              trading_day=due, offer_time=offer_time,
                                              initial_state_of_charge_mwh=initial_state_of_charge_mwh,
                                              plan_hash=plan_hash)
    return replace(decision, daily_bid=daily_bid, daily_trading_day=due, daily_rejected=daily_rejected)


def _decide_daily(plan: worker_pb2.OptimisationResult | None, *, held: common_pb2.BatterySpec,
                  bidding: BiddingSettings, rules: MarketRules, products: Sequence[str], trading_day: date,
                  offer_time: datetime, initial_state_of_charge_mwh: float, plan_hash: str,
                  ) -> tuple[bid_pb2.Bid | None, tuple[RejectedBid, ...]]:
    """The first DAILY candidate for ``trading_day`` that passes V0–V8, and the candidates rejected before it."""
    rejected: list[RejectedBid] = []
    for candidate, make in daily_bid_candidates(plan, held, bidding, rules, trading_day=trading_day,
                                                offer_time=offer_time, fcas_products=fcas_products_of(products),
                                                initial_state_of_charge_mwh=initial_state_of_charge_mwh,
                                                plan_hash=plan_hash):
        try:
            bid = make()
        except ValueError as error:
            rejected.append(RejectedBid(candidate, None, build_error=str(error)))
            continue
        violations = validate_bid(bid, held, rules, products=products, daily_band_prices=None)
        if violations:
            rejected.append(RejectedBid(candidate, bid, violations=tuple(str(v) for v in violations)))
            continue
        return bid, tuple(rejected)
    return None, tuple(rejected)


def _decide_interval(plan: worker_pb2.OptimisationResult | None, *, standing_bid: StandingBid | None,
                     controls: EffectiveControls, held: common_pb2.BatterySpec, bidding: BiddingSettings,
                     rules: MarketRules, products: Sequence[str],
                     daily_band_prices: Mapping[tuple[str, int], Sequence[float]] | None,
                     dispatch_interval: datetime, offer_time: datetime, version: int,
                     initial_state_of_charge_mwh: float, plan_hash: str) -> BidDecision:
    """Steps 3–6 of the module docstring for the interval's own bid (``held``: the battery with any SoC hold)."""
    standing_id = standing_bid.bid_id if standing_bid is not None else None
    placed = dict(dispatch_interval=dispatch_interval, offer_time=offer_time, version=version,
                  fcas_products=fcas_products_of(products), initial_state_of_charge_mwh=initial_state_of_charge_mwh,
                  plan_hash=plan_hash)
    manual = controls.manual_rebid_reason
    in_force: bid_pb2.Bid | ColumnarBid | None = None
    if standing_bid is not None:
        in_force = standing_bid.columns if standing_bid.columns is not None else standing_bid.bid
    rejected: list[RejectedBid] = []
    for candidate, make in _candidates(plan, held, bidding, rules, placed):
        safe = candidate == SAFE_CANDIDATE
        try:
            built = make()
        except ValueError as error:
            rejected.append(RejectedBid(candidate, None, build_error=str(error)))
            continue
        changes = tuple(material_changes(built, in_force, bidding.rebid_materiality_mw))
        if not changes and standing_bid is not None and not manual:
            return BidDecision(outcome=STANDS, bid=None, candidate=candidate, safe_fallback=safe,
                               standing_bid_id=standing_id, rejected=tuple(rejected))
        explained = (built.with_bid(with_operator_rebid_reason(built.bid, manual, changes,
                                                               rules.rebid_explanation_max_chars)) if manual
                     else with_rebid_reason_columns(built, changes, rules.rebid_explanation_max_chars))
        violations = validate_bid(explained, held, rules, products=products, daily_band_prices=daily_band_prices)
        if violations:
            rejected.append(RejectedBid(candidate, explained.bid, violations=tuple(str(v) for v in violations)))
            continue
        return BidDecision(outcome=SUBMIT, bid=explained.bid, candidate=candidate, safe_fallback=safe,
                           standing_bid_id=standing_id, rejected=tuple(rejected), changes=changes,
                           manual_rebid_reason=manual, columns=explained)
    return BidDecision(outcome=NO_VALID_BID, bid=None, candidate=None, safe_fallback=True,
                       standing_bid_id=standing_id, rejected=tuple(rejected))
