"""What AEMO dispatched, settled at the dispatch price and checked against the bid in force.

In live mode the record stage reads AEMO's dispatch of the unit (DISPATCHLOAD: the energy target TOTALCLEARED
and the FCAS enablement of each service, MW) and the region's DISPATCHPRICE. :func:`check_dispatch` settles it
and says which parts the bid in force cannot explain, for one dispatch interval (interval-ending AEST):

**Settlement** (shared/NEM.md, as the simulated market's :func:`algorithms.market.clearing.clear_interval`):
``gen = max(target, 0)``, ``load = max(-target, 0)`` (a bidirectional unit's negative target is charging);
energy $ = RRP × (MLF_gen × gen − MLF_load × load) × h; FCAS $ = Σ enabled MW × service price ($/MW/h) × h, with
``h`` the interval in hours.

**Flags** — a target the bid in force cannot explain, each a sentence naming the product, side, MW and price:

* *no bid*: energy or FCAS dispatched while no bid is in force, or no offer of that product and side covers
  the interval;
* *above availability*: GEN (or LOAD) target above the side's MAXAVAIL, FCAS enablement above the offer's
  MAXAVAIL;
* *band priced beyond the cleared price*: more GEN than the bands priced (÷ MLF) at or below RRP offer, more LOAD
  than the bands priced (÷ MLF) at or above RRP offer, more FCAS than the bands priced at or below the service
  price offer.

What the bid can still explain beyond its price bands (so it is not flagged): a fixed load (FIXEDLOAD) for
its MW; ramping — AEMO moves a unit at most its ramp rate (MW/min) × the interval's minutes from INITIALMW,
so a unit coming down may stay above the price-explained MW by that much; a committed fast-start unit held at
its minimum load (``fast_start_profile.minimum_load_mw``). Tolerances: ``tolerance_mw`` (default 0.1 MW) on
every MW comparison and ``price_tolerance`` ($0.01) on band prices. Not checked (they explain *less* than
offered, never more): network constraints, semi-scheduled caps (UIGF), FCAS trapezia and joint capacity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from algorithms.common import nem_time
from algorithms.common.products import ENERGY
from vpp.v1 import bid_pb2, common_pb2

_GEN_SIDES = (common_pb2.DIRECTION_GEN, common_pb2.DIRECTION_UNSPECIFIED, common_pb2.DIRECTION_BIDIRECTIONAL)
_LOAD_SIDES = (common_pb2.DIRECTION_LOAD,)


@dataclass(frozen=True)
class UnitDispatch:
    """AEMO's dispatch of one unit in one interval (a DISPATCHLOAD row).

    ``initial_mw``: INITIALMW, the unit's output at the start of the interval (MW, negative when charging);
    ``target_mw``: TOTALCLEARED, the target at its end (MW, negative = LOAD); ``enablement_mw``: FCAS service →
    MW enabled (RAISE6SEC ... as DISPATCHLOAD names its columns); ``intervention``: 1 for the physical run of an
    intervention, else 0; ``energy_storage_mwh``: ENERGY_STORAGE, the stored energy at the interval's end (MWh)
    where AEMO publishes it (bidirectional units since June 2024), else None.
    """

    unit_id: str
    dispatch_interval: datetime
    initial_mw: float
    target_mw: float
    enablement_mw: Mapping[str, float] = field(default_factory=dict)
    intervention: int = 0
    energy_storage_mwh: float | None = None


@dataclass(frozen=True)
class DispatchCheck:
    """The settled interval and what the bid in force cannot explain (see the module docstring).

    MW: ``gen_mw``, ``load_mw``, ``fcas_enabled_mw``; $: ``energy_revenue_dollars``, ``fcas_revenue_dollars``;
    ``rrp`` $/MWh (NaN when the price data has none); ``flags``: one sentence per unexplained part, empty when
    the bid explains the whole dispatch.
    """

    dispatch_interval: datetime
    gen_mw: float
    load_mw: float
    fcas_enabled_mw: Mapping[str, float]
    rrp: float
    energy_revenue_dollars: float
    fcas_revenue_dollars: float
    flags: tuple[str, ...]

    @property
    def explained(self) -> bool:
        """True when the bid in force explains every MW AEMO dispatched."""
        return not self.flags


def _period(offer: bid_pb2.ProductOffer, utc_seconds: int) -> bid_pb2.PeriodOffer | None:
    """The offer's period for the interval (the last one should it repeat), None when it does not cover it."""
    seconds = np.fromiter((p.dispatch_interval.seconds for p in offer.periods), dtype=np.int64,
                          count=len(offer.periods))
    matches = np.flatnonzero(seconds == utc_seconds)
    return offer.periods[int(matches[-1])] if len(matches) else None


def _offers(bid: bid_pb2.Bid | None, product: str, sides: Sequence[int], utc_seconds: int,
            ) -> list[tuple[bid_pb2.ProductOffer, bid_pb2.PeriodOffer]]:
    """The offers of ``product`` on ``sides`` that cover the interval, with their period."""
    if bid is None:
        return []
    found: list[tuple[bid_pb2.ProductOffer, bid_pb2.PeriodOffer]] = []
    for offer in bid.offers:
        if offer.product == product and offer.direction in sides:
            period = _period(offer, utc_seconds)
            if period is not None:
                found.append((offer, period))
    return found


def _priced_mw(offer: bid_pb2.ProductOffer, period: bid_pb2.PeriodOffer, within: np.ndarray) -> float:
    """MW of the period's bands selected by ``within`` (a mask over the bands), capped at MAXAVAIL."""
    bands = np.asarray(period.band_avail_mw, dtype=np.float64)
    count = min(len(bands), len(within))
    return float(min(bands[:count][within[:count]].sum(), period.max_avail_mw))


def _energy_flags(side: str, dispatched_mw: float, initial_side_mw: float, rrp: float, mlf: float,
                  offers: list[tuple[bid_pb2.ProductOffer, bid_pb2.PeriodOffer]], minutes: float,
                  tolerance_mw: float, price_tolerance: float) -> list[str]:
    """Flags of one ENERGY side: ``dispatched_mw`` (>= 0) against the side's offer at ``rrp`` ($/MWh)."""
    if dispatched_mw <= tolerance_mw:
        return []
    if not offers:
        return [f"ENERGY {side} dispatched {dispatched_mw:.1f} MW with no {side} offer in force"]
    offer, period = offers[0]
    if dispatched_mw > period.max_avail_mw + tolerance_mw:
        return [f"ENERGY {side} dispatched {dispatched_mw:.1f} MW above the offered availability "
                f"(MAXAVAIL {period.max_avail_mw:.1f} MW)"]
    if not math.isfinite(rrp):
        return []
    effective = np.asarray(offer.band_price, dtype=np.float64) / mlf
    within = effective <= rrp + price_tolerance if side == "GEN" else effective >= rrp - price_tolerance
    explained = _priced_mw(offer, period, within)
    explained = max(explained, period.fixed_load_mw)
    ramp = period.ramp_down_rate_mw_per_min if side == "GEN" else period.ramp_up_rate_mw_per_min
    if ramp > 0:  # coming down from INITIALMW at most ramp x minutes
        explained = max(explained, initial_side_mw - ramp * minutes)
    if offer.HasField("fast_start_profile") and initial_side_mw > tolerance_mw:
        explained = max(explained, offer.fast_start_profile.minimum_load_mw)
    if dispatched_mw > explained + tolerance_mw:
        relation = "at or below" if side == "GEN" else "at or above"
        return [f"ENERGY {side} dispatched {dispatched_mw:.1f} MW in bands priced beyond the cleared price "
                f"${rrp:,.2f}/MWh: only {explained:.1f} MW offered {relation} it (ramp and fixed load included)"]
    return []


def _fcas_flags(product: str, enabled_mw: float, price: float, bid: bid_pb2.Bid | None, utc_seconds: int,
                tolerance_mw: float, price_tolerance: float) -> list[str]:
    """Flags of one FCAS service enabled at ``enabled_mw`` (MW) with the service price ($/MW/h)."""
    if enabled_mw <= tolerance_mw:
        return []
    offers = _offers(bid, product, tuple(common_pb2.Direction.values()), utc_seconds)
    if not offers:
        return [f"{product} enabled {enabled_mw:.1f} MW with no {product} offer in force"]
    max_avail = max(period.max_avail_mw for _, period in offers)
    if enabled_mw > max_avail + tolerance_mw:
        return [f"{product} enabled {enabled_mw:.1f} MW above the offered availability (MAXAVAIL {max_avail:.1f} MW)"]
    if not math.isfinite(price):
        return []
    explained = max(_priced_mw(offer, period, np.asarray(offer.band_price, dtype=np.float64) <= price + price_tolerance)
                    for offer, period in offers)
    if enabled_mw > explained + tolerance_mw:
        return [f"{product} enabled {enabled_mw:.1f} MW in bands priced above the service price "
                f"${price:,.2f}/MW/h: only {explained:.1f} MW offered at or below it"]
    return []


def check_dispatch(bid: bid_pb2.Bid | None, dispatched: UnitDispatch, prices: Mapping[str, float], *,
                   mlf_gen: float = 1.0, mlf_load: float = 1.0, interval_minutes: int = 5,
                   tolerance_mw: float = 0.1, price_tolerance: float = 0.01) -> DispatchCheck:
    """Settle AEMO's dispatch of the unit at ``prices`` and flag what ``bid`` (the bid in force for the interval,
    None: none) cannot explain (module docstring).

    ``prices``: product → DISPATCHPRICE of the unit's region for the interval (ENERGY $/MWh, FCAS $/MW/h; a
    missing product is NaN: settled at $0 and its price bands not checked). ``mlf_gen`` / ``mlf_load``: the
    unit's marginal loss factors. Raises ValueError for a non-finite target or enablement, or a loss factor
    that is not positive.
    """
    values = [dispatched.target_mw, dispatched.initial_mw, *dispatched.enablement_mw.values()]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"dispatch of {dispatched.unit_id} at {dispatched.dispatch_interval:%Y-%m-%d %H:%M} has "
                         f"non-finite MW: {values}")
    if mlf_gen <= 0 or mlf_load <= 0:
        raise ValueError(f"loss factors must be positive, got GEN {mlf_gen}, LOAD {mlf_load}")
    hours = interval_minutes / 60.0
    rrp = float(prices.get(ENERGY, math.nan))
    gen_mw, load_mw = max(dispatched.target_mw, 0.0), max(-dispatched.target_mw, 0.0)
    seconds = nem_time.to_timestamp(dispatched.dispatch_interval).seconds
    flags = _energy_flags("GEN", gen_mw, max(dispatched.initial_mw, 0.0), rrp, mlf_gen,
                          _offers(bid, ENERGY, _GEN_SIDES, seconds), interval_minutes, tolerance_mw, price_tolerance)
    flags += _energy_flags("LOAD", load_mw, max(-dispatched.initial_mw, 0.0), rrp, mlf_load,
                           _offers(bid, ENERGY, _LOAD_SIDES, seconds), interval_minutes, tolerance_mw,
                           price_tolerance)
    fcas_revenue = 0.0
    for product, enabled_mw in dispatched.enablement_mw.items():
        price = float(prices.get(product, math.nan))
        flags += _fcas_flags(product, enabled_mw, price, bid, seconds, tolerance_mw, price_tolerance)
        fcas_revenue += enabled_mw * price * hours if math.isfinite(price) else 0.0
    energy_revenue = rrp * (mlf_gen * gen_mw - mlf_load * load_mw) * hours if math.isfinite(rrp) else 0.0
    return DispatchCheck(dispatch_interval=dispatched.dispatch_interval, gen_mw=gen_mw, load_mw=load_mw,
                         fcas_enabled_mw=dict(dispatched.enablement_mw), rrp=rrp,
                         energy_revenue_dollars=energy_revenue, fcas_revenue_dollars=fcas_revenue,
                         flags=tuple(flags))
