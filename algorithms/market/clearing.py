"""The simulated NEM market model: a price taker facing the historical regional price, and settlement.

Follows shared/NEM.md ("Clearing", "Joint capacity"). For one unit and one dispatch interval
(interval-ending AEST), given the regional prices (ENERGY RRP in $/MWh, FCAS in $/MW/h):

1. **Energy bands.** GEN band k is dispatched in full when price_k / MLF_gen ≤ RRP (strictly below, or
   equal: the operator's choice, taken as full), not at all when above; the sum is capped at the GEN
   MAXAVAIL. LOAD band k is consumed in full when price_k / MLF_load > RRP (strictly); the sum is
   capped at the LOAD MAXAVAIL.
2. **Target** = GEN − LOAD (a non-convex bid clearing both sides is netted, with a note).
3. **Ramp.** The net output may rise by at most ``min(GEN ramp up, LOAD ramp down)`` and fall by at
   most ``min(GEN ramp down, LOAD ramp up)`` MW/min over the interval from ``previous_net_mw``
   (a simplification for a bidirectional unit: the slower of the two sides' rates applies).
4. **State of charge.** Discharge is capped at ``(SoC − SoC_min)·η_d / h`` and charge at
   ``(SoC_max − SoC)/(η_c·h)``; capping the cleared MW is the same as trimming the most expensive GEN
   band (cheapest LOAD band) first. SoC' = SoC + η_c·load·h − gen·h/η_d. SoC is physical, so it wins
   over the ramp limit.
5. **FCAS.** A band is enabled when its price ≤ the service price; the sum is capped at MAXAVAIL, at
   the registered power (per-service cap) and by the trapezium evaluated at the final net energy
   dispatch p (on net output, :mod:`algorithms.market.trapezium`: a LOAD offer's corners are mirrored).
   Where a service is offered in both directions (a bidirectional unit's regulation), the offer of the side
   p is on enables the service: each offer's trapezium lies on its own side, and the larger of the two
   enablements counts (at p = 0 both sides may allow it; they never add up). **Market depth**: where the
   caller gives ``enablement_cap_mw`` (a share of the MW the region actually enabled of the service,
   :mod:`algorithms.market.depth`), the enablement is capped there too, before joint capacity. Energy has no
   such cap: it is price-taking.
6. **Joint capacity** with registered power P: p + r_RAISEREG ≤ P and, for each contingency raise
   service s, p + r_s + r_RAISEREG ≤ P; −p + l_LOWERREG ≤ P and −p + l_s + l_LOWERREG ≤ P for each
   contingency lower service. Contingency services stack (each is limited on its own). Regulation is
   trimmed last: it keeps its enablement up to the headroom, contingency services get what is left.
7. **Settlement.** Energy $ = RRP × (MLF_gen·gen − MLF_load·load) × h; FCAS $ = Σ enabled × price × h.

Services are told apart by :mod:`algorithms.common.products` (raise / lower, regulation / contingency).
If the bid has no ENERGY period for the interval the unit is not dispatched at all (0 MW, no FCAS).

Not modelled: our own effect on prices, network constraints, causer-pays, and the requirement that a
raise enablement be deliverable from stored energy for the service's duration.

:func:`apply_administered_pricing` applies the cumulative price threshold to a price series.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

from algorithms.common import nem_time
from algorithms.common.battery import BatteryParams, battery_from_spec
from algorithms.common.products import ENERGY, LOWER_PREFIX, RAISE_PREFIX, is_fcas, is_lower, is_raise, is_regulation
from algorithms.market.prices import DispatchPrices
from algorithms.market.trapezium import net_output_corners
from settings import MarketRules
from vpp.v1 import bid_pb2, common_pb2

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class IntervalClearing:
    """What the market model did with one unit in one dispatch interval (MW, MWh, $, $/MWh, $/MW/h)."""

    dispatch_interval: datetime
    gen_mw: float
    load_mw: float
    fcas_enabled_mw: dict[str, float]
    # Prices used, by product name (ENERGY: RRP $/MWh; FCAS: $/MW/h).
    prices: dict[str, float]
    # Stored energy after the interval (MWh).
    state_of_charge_mwh: float
    energy_revenue_dollars: float
    fcas_revenue_dollars: float
    notes: tuple[str, ...]
    fcas_revenue_by_product_dollars: dict[str, float] = field(default_factory=dict)

    @property
    def net_mw(self) -> float:
        """Net output (MW): gen − load."""
        return self.gen_mw - self.load_mw


def outcome_price(outcome: bid_pb2.MarketOutcome, product: str) -> float | None:
    """The regional price of ``product`` in a MarketOutcome ($/MWh or $/MW/h); None when it has none."""
    return next((p.price for p in outcome.products if p.product == product), None)


def dispatched_mw(outcome: bid_pb2.MarketOutcome) -> float:
    """The unit's energy dispatch instruction in a MarketOutcome (MW, + generation / − load)."""
    return float(outcome.gen_mw - outcome.load_mw)


def to_market_outcome(clearing: IntervalClearing) -> bid_pb2.MarketOutcome:
    """The wire MarketOutcome of a clearing: ENERGY (net MW, RRP, $) then each FCAS product."""
    outcome = bid_pb2.MarketOutcome(
        dispatch_interval=nem_time.to_timestamp(clearing.dispatch_interval),
        gen_mw=clearing.gen_mw,
        load_mw=clearing.load_mw,
        energy_revenue_dollars=clearing.energy_revenue_dollars,
        fcas_revenue_dollars=clearing.fcas_revenue_dollars,
        state_of_charge_mwh=clearing.state_of_charge_mwh,
        notes=list(clearing.notes),
    )
    outcome.products.add(product=ENERGY, cleared_mw=clearing.net_mw, price=clearing.prices.get(ENERGY, 0.0),
                         revenue_dollars=clearing.energy_revenue_dollars)
    for product, enabled_mw in clearing.fcas_enabled_mw.items():
        outcome.products.add(product=product, cleared_mw=enabled_mw, price=clearing.prices.get(product, 0.0),
                             revenue_dollars=clearing.fcas_revenue_by_product_dollars.get(product, 0.0))
    return outcome


def _find_period(offer: bid_pb2.ProductOffer, utc_seconds: int,
                 interval_s: int) -> bid_pb2.PeriodOffer | None:
    """The period offer for the interval ending at ``utc_seconds``; periods are usually consecutive."""
    periods = offer.periods
    if len(periods) == 0:
        return None
    guess = (utc_seconds - periods[0].dispatch_interval.seconds) // interval_s
    if 0 <= guess < len(periods) and periods[guess].dispatch_interval.seconds == utc_seconds:
        return periods[guess]
    for period in periods:
        if period.dispatch_interval.seconds == utc_seconds and period.HasField("dispatch_interval"):
            return period
    return None


def _check_band_shapes(offer: bid_pb2.ProductOffer, period: bid_pb2.PeriodOffer) -> None:
    if len(offer.band_price) != len(period.band_avail_mw):
        raise ValueError(f"{offer.product} offer has {len(offer.band_price)} band prices but "
                         f"{len(period.band_avail_mw)} band availabilities; validate bids before clearing")


def energy_cleared_mw(offer: bid_pb2.ProductOffer, period: bid_pb2.PeriodOffer, rrp: float,
                      mlf: float) -> float:
    """MW a GEN or LOAD offer clears at regional price ``rrp`` ($/MWh), before ramp and SoC limits.

    GEN: bands with price / MLF ≤ RRP; LOAD: bands with price / MLF > RRP; capped at MAXAVAIL (MW).
    """
    _check_band_shapes(offer, period)
    prices = np.asarray(offer.band_price, dtype=np.float64) / mlf
    bands = np.asarray(period.band_avail_mw, dtype=np.float64)
    cleared = prices <= rrp if offer.direction == common_pb2.DIRECTION_GEN else prices > rrp
    return float(min(bands[cleared].sum(), period.max_avail_mw))


def trapezium_limit_mw(energy_mw: float, period: bid_pb2.PeriodOffer,
                       direction: int = common_pb2.DIRECTION_UNSPECIFIED) -> float:
    """FCAS MW the trapezium of ``period`` (of an offer in ``direction``) allows at net energy dispatch
    ``energy_mw`` (MW).

    0 outside the enablement limits; MAXAVAIL between the breakpoints; linear in between (the corners read
    on net output, :func:`algorithms.market.trapezium.net_output_corners`).
    """
    corners = net_output_corners(direction, np.array([period.enablement_min_mw]),
                                 np.array([period.low_breakpoint_mw]), np.array([period.high_breakpoint_mw]),
                                 np.array([period.enablement_max_mw]))[0]
    e_min, low, high, e_max = (float(corner) for corner in corners)
    max_avail = period.max_avail_mw
    if energy_mw < e_min or energy_mw > e_max:
        return 0.0
    limit = max_avail
    if energy_mw < low and low > e_min:
        limit = min(limit, max_avail * (energy_mw - e_min) / (low - e_min))
    if energy_mw > high and e_max > high:
        limit = min(limit, max_avail * (e_max - energy_mw) / (e_max - high))
    return max(limit, 0.0)


def _ramp_limits(periods: list[bid_pb2.PeriodOffer | None], directions: list[int],
                 ) -> tuple[float, float]:
    """Ramp up / down rates (MW/min) of the net output: the slower side's rate (module docstring)."""
    up: list[float] = []
    down: list[float] = []
    for period, direction in zip(periods, directions, strict=True):
        if period is None:
            continue
        if direction == common_pb2.DIRECTION_GEN:
            up.append(period.ramp_up_rate_mw_per_min)
            down.append(period.ramp_down_rate_mw_per_min)
        else:
            up.append(period.ramp_down_rate_mw_per_min)
            down.append(period.ramp_up_rate_mw_per_min)
    return min(up), min(down)


def apply_joint_capacity(enabled_mw: Mapping[str, float], net_mw: float, power_mw: float,
                         ) -> tuple[dict[str, float], list[str]]:
    """FCAS enablements (MW) after the joint-capacity rule at net output ``net_mw`` and power P (MW).

    Regulation keeps its MW up to the headroom (P − p for raise, P + p for lower); each contingency
    service of the same side is then limited to the headroom left. Returns the limited MW and notes.
    """
    limited = dict(enabled_mw)
    notes: list[str] = []
    for on_side, headroom in ((is_raise, power_mw - net_mw), (is_lower, power_mw + net_mw)):
        headroom = max(headroom, 0.0)
        regulation = [p for p in limited if on_side(p) and is_regulation(p)]
        regulation_mw = 0.0
        for product in regulation:
            allowed = min(limited[product], headroom)
            regulation_mw = max(regulation_mw, allowed)
            if allowed < limited[product]:
                notes.append(f"joint capacity: {product} {limited[product]:.3f} MW trimmed to "
                             f"{allowed:.3f} MW")
            limited[product] = allowed
        left = max(headroom - regulation_mw, 0.0)
        for product in (p for p in limited if on_side(p) and not is_regulation(p)):
            if limited[product] > left:
                notes.append(f"joint capacity: {product} {limited[product]:.3f} MW trimmed to {left:.3f} MW")
                limited[product] = left
    return limited, notes


def _check_inputs(prices: Mapping[str, float], state_of_charge_mwh: float, previous_net_mw: float,
                  battery: BatteryParams, bid: bid_pb2.Bid) -> float:
    if ENERGY not in prices:
        raise ValueError(f"no {ENERGY} price (RRP) given; prices have {sorted(prices)}")
    rrp = float(prices[ENERGY])
    if not math.isfinite(rrp):
        raise ValueError(f"{ENERGY} price (RRP) must be finite, got {rrp}")
    if not (math.isfinite(state_of_charge_mwh) and math.isfinite(previous_net_mw)):
        raise ValueError(f"state of charge ({state_of_charge_mwh} MWh) and previous net output "
                         f"({previous_net_mw} MW) must be finite")
    if not (battery.power_mw > 0 and 0 < battery.charge_efficiency <= 1
            and 0 < battery.discharge_efficiency <= 1 and battery.mlf_gen > 0 and battery.mlf_load > 0):
        raise ValueError(f"battery {battery.unit_id!r} has unusable power, efficiencies or loss factors")
    if battery.unit_id and bid.unit_id != battery.unit_id:
        raise ValueError(f"bid for unit {bid.unit_id!r} cleared against battery {battery.unit_id!r}")
    return rrp


def clear_interval(bid: bid_pb2.Bid, dispatch_interval: datetime, prices: Mapping[str, float], *,
                   state_of_charge_mwh: float, previous_net_mw: float, battery: common_pb2.BatterySpec,
                   interval_minutes: int = 5,
                   enablement_cap_mw: Mapping[str, float] | None = None) -> IntervalClearing:
    """Clear ``bid`` for the interval ending ``dispatch_interval`` (AEST) at regional ``prices``.

    ``prices`` maps product names to prices (ENERGY → RRP $/MWh, FCAS → $/MW/h);
    ``state_of_charge_mwh`` is the stored energy (MWh) at the start of the interval and
    ``previous_net_mw`` the net output (MW) of the interval before. ``enablement_cap_mw`` (FCAS product →
    MW; None or NaN: no cap) is the market-depth cap on each service's enablement. Rules in the module
    docstring.
    Raises ValueError when the RRP is missing or not finite, the bid is for another unit, or an offer's
    band prices and availabilities differ in number.
    """
    params = battery_from_spec(battery)
    rrp = _check_inputs(prices, state_of_charge_mwh, previous_net_mw, params, bid)
    hours = nem_time.hours_per_interval(interval_minutes)
    interval_s = interval_minutes * 60
    utc_seconds = nem_time.to_timestamp(dispatch_interval).seconds
    notes: list[str] = []
    energy: dict[int, tuple[bid_pb2.ProductOffer, bid_pb2.PeriodOffer | None]] = {}
    fcas: dict[str, dict[int, tuple[bid_pb2.ProductOffer, bid_pb2.PeriodOffer | None]]] = {}
    for offer in bid.offers:
        period = _find_period(offer, utc_seconds, interval_s)
        if offer.product == ENERGY:
            energy.setdefault(offer.direction, (offer, period))
        else:
            fcas.setdefault(offer.product, {}).setdefault(offer.direction, (offer, period))
    used_prices = {ENERGY: rrp}
    used_prices.update({p: float(prices[p]) for p in fcas if p in prices and math.isfinite(prices[p])})
    gen_side = energy.get(common_pb2.DIRECTION_GEN, (None, None))
    load_side = energy.get(common_pb2.DIRECTION_LOAD, (None, None))
    if gen_side[1] is None and load_side[1] is None:
        notes.append(f"no {ENERGY} period for {dispatch_interval:%Y-%m-%d %H:%M}: "
                     "unit not dispatched")
        return IntervalClearing(dispatch_interval, 0.0, 0.0, dict.fromkeys(fcas, 0.0), used_prices,
                                state_of_charge_mwh, 0.0, 0.0, tuple(notes), dict.fromkeys(fcas, 0.0))

    gen_target = (energy_cleared_mw(gen_side[0], gen_side[1], rrp, params.mlf_gen)
                  if gen_side[0] is not None and gen_side[1] is not None else 0.0)
    load_target = (energy_cleared_mw(load_side[0], load_side[1], rrp, params.mlf_load)
                   if load_side[0] is not None and load_side[1] is not None else 0.0)
    if gen_target > 0 and load_target > 0:
        notes.append(f"GEN {gen_target:.3f} MW and LOAD {load_target:.3f} MW both cleared: netted")
    target = gen_target - load_target

    up_rate, down_rate = _ramp_limits([gen_side[1], load_side[1]],
                                      [common_pb2.DIRECTION_GEN, common_pb2.DIRECTION_LOAD])
    net = min(max(target, previous_net_mw - down_rate * interval_minutes),
              previous_net_mw + up_rate * interval_minutes)
    if net != target:
        notes.append(f"ramp: target {target:.3f} MW limited to {net:.3f} MW from {previous_net_mw:.3f} MW "
                     f"(up {up_rate:g}, down {down_rate:g} MW/min)")

    gen_mw, load_mw = max(net, 0.0), max(-net, 0.0)
    max_gen = max((state_of_charge_mwh - params.soc_min_mwh) * params.discharge_efficiency / hours, 0.0)
    max_load = max((params.soc_max_mwh - state_of_charge_mwh) / (params.charge_efficiency * hours), 0.0)
    if gen_mw > max_gen:
        notes.append(f"SoC: discharge {gen_mw:.3f} MW trimmed to {max_gen:.3f} MW "
                     f"(SoC {state_of_charge_mwh:.3f} MWh, minimum {params.soc_min_mwh:.3f} MWh)")
        gen_mw = max_gen
    if load_mw > max_load:
        notes.append(f"SoC: charge {load_mw:.3f} MW trimmed to {max_load:.3f} MW "
                     f"(SoC {state_of_charge_mwh:.3f} MWh, maximum {params.soc_max_mwh:.3f} MWh)")
        load_mw = max_load
    net = gen_mw - load_mw
    soc_after = (state_of_charge_mwh + params.charge_efficiency * load_mw * hours
                 - gen_mw * hours / params.discharge_efficiency)

    enabled: dict[str, float] = {}
    for product, offers in fcas.items():
        enabled[product] = _fcas_enabled_mw(product, offers, used_prices.get(product), net, params.power_mw,
                                            notes)
        cap = None if enablement_cap_mw is None else enablement_cap_mw.get(product)
        if cap is not None and not math.isnan(cap) and enabled[product] > max(cap, 0.0):
            notes.append(f"market depth: {product} {enabled[product]:.3f} MW capped at {max(cap, 0.0):.3f} MW")
            enabled[product] = max(cap, 0.0)
    enabled, joint_notes = apply_joint_capacity(enabled, net, params.power_mw)
    notes.extend(joint_notes)

    energy_revenue = rrp * (params.mlf_gen * gen_mw - params.mlf_load * load_mw) * hours
    fcas_revenue = {product: mw * used_prices.get(product, 0.0) * hours for product, mw in enabled.items()}
    return IntervalClearing(
        dispatch_interval=dispatch_interval, gen_mw=gen_mw, load_mw=load_mw, fcas_enabled_mw=enabled,
        prices=used_prices, state_of_charge_mwh=soc_after, energy_revenue_dollars=energy_revenue,
        fcas_revenue_dollars=float(sum(fcas_revenue.values())), notes=tuple(notes),
        fcas_revenue_by_product_dollars=fcas_revenue)


def _fcas_enabled_mw(product: str, offers: Mapping[int, tuple[bid_pb2.ProductOffer, bid_pb2.PeriodOffer | None]],
                     price: float | None, net_mw: float, power_mw: float, notes: list[str]) -> float:
    """FCAS MW enabled for ``product``: the largest over its offers (one per direction) of what each offers
    by price, capped at MAXAVAIL, the per-service cap and its trapezium at ``net_mw``."""
    periods = [(offer, period) for offer, period in offers.values() if period is not None]
    if not periods:
        return 0.0
    if not is_fcas(product):
        notes.append(f"{product}: neither a {RAISE_PREFIX} nor a {LOWER_PREFIX} service; not enabled")
        return 0.0
    if price is None:
        notes.append(f"no finite price for {product}: not enabled")
        return 0.0
    best_offered, best_enabled = 0.0, 0.0
    for offer, period in periods:
        _check_band_shapes(offer, period)
        prices = np.asarray(offer.band_price, dtype=np.float64)
        bands = np.asarray(period.band_avail_mw, dtype=np.float64)
        offered = float(min(bands[prices <= price].sum(), period.max_avail_mw, power_mw))
        enabled = max(min(offered, trapezium_limit_mw(net_mw, period, offer.direction)), 0.0)
        if enabled > best_enabled or (enabled == best_enabled and offered > best_offered):
            best_offered, best_enabled = offered, enabled
    if best_enabled < best_offered:
        notes.append(f"trapezium: {product} {best_offered:.3f} MW limited to {best_enabled:.3f} MW at "
                     f"{net_mw:.3f} MW")
    return best_enabled


@dataclass(frozen=True)
class FcasOffer:
    """What a bid offers of one FCAS service in one interval (MW): ``max_avail_mw`` its MAXAVAIL (the larger of
    its offers' where it is offered in each direction, at most the registered power) and ``at_price_mw`` the part
    of it in bands priced at or below the service's price ($/MW/h), before the trapezium, market depth and joint
    capacity."""

    max_avail_mw: float
    at_price_mw: float


def fcas_offers(bid: bid_pb2.Bid, dispatch_interval: datetime, prices: Mapping[str, float], *, power_mw: float,
                interval_minutes: int = 5) -> dict[str, FcasOffer]:
    """Each FCAS service's :class:`FcasOffer` in ``bid`` for the interval ending ``dispatch_interval`` (AEST), at
    the interval's ``prices`` (FCAS $/MW/h; a service without a finite price offers nothing at price). A service
    the bid has no period of offers 0 MW. Pure: the offer side of step 5 of the module docstring."""
    utc_seconds = nem_time.to_timestamp(dispatch_interval).seconds
    offers: dict[str, FcasOffer] = {}
    for offer in bid.offers:
        if offer.product == ENERGY:
            continue
        period = _find_period(offer, utc_seconds, interval_minutes * 60)
        max_avail, at_price = 0.0, 0.0
        if period is not None:
            _check_band_shapes(offer, period)
            max_avail = float(min(period.max_avail_mw, power_mw))
            price = prices.get(offer.product, math.nan)
            if math.isfinite(price):
                band_prices = np.asarray(offer.band_price, dtype=np.float64)
                bands = np.asarray(period.band_avail_mw, dtype=np.float64)
                at_price = float(min(bands[band_prices <= price].sum(), max_avail))
        held = offers.get(offer.product)
        if held is None or max_avail > held.max_avail_mw or at_price > held.at_price_mw:
            offers[offer.product] = FcasOffer(max(max_avail, held.max_avail_mw if held else 0.0),
                                              max(at_price, held.at_price_mw if held else 0.0))
    return offers


def apply_administered_pricing(rrp: FloatArray, trading_day_index: npt.NDArray[np.int64], threshold: float,
                               floor: float, cap: float, lookback: int) -> FloatArray:
    """Prices ($/MWh) after administered pricing under the cumulative price threshold ($/MWh).

    ``rrp``: consecutive interval prices; ``trading_day_index``: the trading day of each (any integer
    label, each day one contiguous run). When the sum of the last ``lookback`` prices (fewer at the
    start of the series), ending at interval t, exceeds ``threshold``, the prices after t are clamped
    to [``floor``, ``cap``] for the rest of t's trading day. Sums use the prices as administered, so a
    clamped day lowers the sums of the days after it. Vectorised within each trading day.
    """
    prices = np.asarray(rrp, dtype=np.float64)
    days = np.asarray(trading_day_index)
    if prices.ndim != 1 or days.shape != prices.shape:
        raise ValueError(f"rrp {prices.shape} and trading_day_index {days.shape} must be 1-D and of the "
                         "same length")
    if not bool(np.all(np.isfinite(prices))):
        raise ValueError("rrp holds non-finite prices; fill or drop missing intervals first")
    if lookback < 1 or floor > cap:
        raise ValueError(f"need lookback >= 1 and floor <= cap, got {lookback}, [{floor}, {cap}]")
    administered = prices.copy()
    if len(prices) == 0:
        return administered
    starts = np.flatnonzero(np.concatenate([[True], days[1:] != days[:-1]]))
    ends = np.concatenate([starts[1:], [len(prices)]])
    if len(np.unique(days[starts])) != len(starts):
        raise ValueError("trading_day_index: each trading day must be one contiguous run of intervals")
    cumulative = np.zeros(len(prices) + 1)
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        cumulative[start + 1:end + 1] = cumulative[start] + np.cumsum(administered[start:end])
        t = np.arange(start, end)
        window_sum = cumulative[t + 1] - cumulative[np.maximum(t + 1 - lookback, 0)]
        breaches = np.flatnonzero(window_sum > threshold)
        if len(breaches) == 0:
            continue
        first = start + int(breaches[0])
        administered[first + 1:end] = np.clip(administered[first + 1:end], floor, cap)
        cumulative[start + 1:end + 1] = cumulative[start] + np.cumsum(administered[start:end])
    return administered


def administered_energy_prices(rrp: FloatArray, intervals: npt.NDArray[np.datetime64],
                               rules: MarketRules) -> FloatArray:
    """Energy prices ($/MWh) of consecutive 5-minute ``intervals`` (interval-ending AEST) after
    administered pricing, with the cumulative price threshold in force on each trading day
    (:meth:`settings.MarketRules.price_cap_for`: AEMO's MARKET_PRICE_THRESHOLDS where given, else the
    configured financial year).

    A threshold defined over half-hour prices (``threshold_interval_minutes`` = 30, before 5-minute
    settlement) is scaled by 30/5 to compare with sums of 5-minute prices (a half hour's price is the average
    of six). Missing prices (NaN) count as 0 in the sums and stay NaN. Raises
    :class:`settings.PriceLimitsUnknownError` when a trading day's financial year has no price limits.
    """
    prices = np.asarray(rrp, dtype=np.float64)
    moments = np.asarray(intervals, dtype="datetime64[s]")
    if prices.shape != moments.shape:
        raise ValueError(f"rrp {prices.shape} and intervals {moments.shape} must have the same shape")
    if len(prices) == 0:
        return prices.copy()
    shifted = moments - np.timedelta64(4 * 3600 + 5 * 60, "s")
    day_index = shifted.astype("datetime64[D]").astype(np.int64)
    unique_days, day_of_interval = np.unique(day_index, return_inverse=True)
    caps = [rules.price_cap_for(day) for day in unique_days.astype("datetime64[D]").astype(object)]
    cap_index = np.array([caps.index(cap) for cap in caps], dtype=np.int64)[day_of_interval]
    missing = ~np.isfinite(prices)
    result = np.where(missing, 0.0, prices)
    for position in np.unique(cap_index).tolist():
        cap = caps[position]
        in_force = cap_index == position
        threshold = cap.cumulative_price_threshold * cap.threshold_interval_minutes / rules.interval_minutes
        result[in_force] = apply_administered_pricing(
            result[in_force], day_index[in_force], threshold, rules.administered_price_floor,
            rules.administered_price_cap, rules.administered_lookback_intervals)
    result[missing] = np.nan
    return result


def with_administered_pricing(dispatch: DispatchPrices, rules: MarketRules) -> DispatchPrices:
    """The market's prices: historical DISPATCHPRICE with administered pricing applied to ENERGY.

    Historical prices already reflect any administered pricing AEMO applied; this re-applies the rule
    of the configured thresholds so a month that breaches them (or a changed configuration) settles as
    the market would. Vectorised per region.
    """
    energy = dispatch.product_index(ENERGY)
    price = np.array(dispatch.price)
    for region in range(len(dispatch.regions)):
        price[region, :, energy] = administered_energy_prices(price[region, :, energy], dispatch.intervals, rules)
    return DispatchPrices(intervals=dispatch.intervals, regions=dispatch.regions, products=dispatch.products,
                          price=price, region_enabled_mw=dispatch.region_enabled_mw)
