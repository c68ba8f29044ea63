"""From an optimisation plan to a valid, price-contingent bid for a bidirectional battery.

The band PRICES are the daily ladders of :class:`settings.BiddingSettings` (ENERGY GEN and LOAD in
$/MWh, FCAS in $/MW/h); only the band QUANTITIES follow the plan, so every bid of a trading day keeps
the same prices and a rebid after the daily close never changes them (rule V4).

Steps 1-2 and 5-7 hold for every strategy; steps 3-4 are the *fixed* strategy
(``[bidding] headroom_pricing = "fixed"``; the default is the opportunity-cost strategy below). Per
dispatch interval ``i`` of the bid (MW, interval-ending AEST):

1. Planned discharge ``g`` and charge ``c`` are netted (a bid cannot be convex with both planned):
   ``g = max(gen - load, 0)``, ``c = max(load - gen, 0)``.
2. What state of charge can deliver, from ``soc_start`` = the plan's SoC at the end of interval
   ``i - 1`` (``initial_state_of_charge_mwh`` before the plan's first interval) and ``h`` hours per interval:
   discharge ``min(P, (soc_start - soc_min) * eta_d / h)``, charge ``min(P, (soc_max - soc_start) /
   (eta_c * h))``. Planned MW above these are cut; nothing beyond them is ever offered.
3. Planned discharge goes in the cheapest GEN band priced at $0/MWh or more (dispatched whenever RRP is
   at or above it); the rest of the deliverable discharge is the *spike headroom*, spread over the GEN
   bands priced (divided by MLF_gen) strictly above every LOAD band price (divided by MLF_load) but the
   *trough* bands (LOAD bands at or above $300/MWh, :data:`TROUGH_LOAD_PRICE_PER_MWH`, which only
   opportunity-cost charge headroom uses) — the bands at 300 $/MWh and above — so the unit earns price spikes
   the forecast missed. Headroom that
   would displace planned raise FCAS (joint capacity, :func:`fcas_reserved_mw`) is kept off the first
   of those bands; ``headroom_front_share`` of the rest can be put on it.
4. Planned charge goes in the highest LOAD band below the trough bands (consumed whenever RRP is below
   it); the rest of the deliverable charge is spread over the negative-price LOAD bands (below the
   planned GEN band's price where discharge is planned), so the unit charges whenever prices go negative.
5. Convexity (V6) therefore holds in every interval: headroom GEN bands lie above every LOAD band,
   headroom LOAD bands below every GEN band, and the planned bands (GEN band 1, the planned LOAD band) are
   never used together because the plan is netted.
6. MAXAVAIL = the sum of the band MW; every MW figure is rounded down to 1 kW, so rounding never
   offers more than SoC can deliver. Ramp rates = the battery's ramp capability rounded down to whole
   MW/min; energy limit 0 (none); PASA availability = registered power.
7. FCAS: the planned enablement (capped at P) in FCAS band 1 with MAXAVAIL = the planned MW
   (``[bidding] fcas_offer = "planned"``); ``"headroom"`` offers more than the plan where that displaces nothing
   it holds (:func:`fcas_offer_mw`: contingency at P, regulation up to the capacity the planned dispatch and
   planned FCAS leave free, never beyond what the stored energy can deliver), the energy bands unchanged
   (they still read the planned FCAS). A contingency
   service is one offer without a direction, with the trapezium of a bidirectional battery of power P on
   net output: raise ``(-P, -P, P - MAXAVAIL, P)``, lower ``(-P, -P + MAXAVAIL, P, P)``. A regulation service
   is offered in each direction (a bidirectional unit's regulation offers carry one, rule V0), the same MW in
   both, each with that trapezium's part on its side (:mod:`algorithms.market.trapezium`; a LOAD offer's
   corners mirrored): GEN raise ``(0, 0, P - MAXAVAIL, P)``, lower ``(0, 0, P, P)``; LOAD raise
   ``(0, 0, -P, -P)``, lower ``(0, 0, -(P - MAXAVAIL), -P)``. The market enables the offer of the side the
   energy target is on, so the unit is enabled as for the one combined trapezium.

The bid covers the intervals from ``dispatch_interval`` to the end of its trading day, at most
``bid_horizon_intervals`` and at most what the plan covers. It is a DAILY entry when offered at or
before the daily bid close (12:30 on D−1), otherwise a REBID whose explanation names the plan, the
first interval's planned action and the SoC it starts from.

*Opportunity-cost pricing* (``[bidding] headroom_pricing = "opportunity_cost"``, with
``planned_pricing = "energy_value"``: the default strategy). Steps 3 and 4 above spread headroom over
fixed bands; this prices every MW by what dispatching it gives up, from the plan's duals
(:func:`headroom_opportunity_cost`): ``lambda_i`` the value of stored energy at the end of interval
``i`` ($/MWh) and ``mu_raise_i`` / ``mu_lower_i`` the value of joint capacity on each side ($/MW/h, what a
MW of energy in that direction displaces in planned FCAS).

* GEN floor ``lambda_i / eta_d + mu_raise_i``; LOAD ceiling ``lambda_i * eta_c - mu_lower_i``.
* Planned discharge goes in the dearest GEN band at most the floor, planned charge in the cheapest
  LOAD band at least the ceiling: the plan is carried out unless the price moves past the point where
  it stops paying (so a plan to discharge at -$30 before a -$500 midday can be carried out, and a plan
  to discharge at $80 is not carried out at $5).
* *Free* headroom — deliverable MW that planned FCAS does not need under the joint-capacity rule
  (:func:`fcas_reserved_mw`) — goes whole into one band: GEN, the cheapest spike band (priced above
  every LOAD band) at least the floor; LOAD, the dearest band at most the ceiling and below the planned
  GEN band's price (convexity) — among the negative-price bands only with ``charge_headroom = "negative"``,
  among all of them with ``"energy_value"`` (the default): a battery whose stored energy the plan values at
  $400/MWh ahead of an evening of price spikes then buys whenever the price falls below that value times
  eta_c, instead of waiting for a negative price. Free charge headroom alone may use the trough bands (none in the
  default ladder; with a $500 band, between the spikes of an evening whose energy the plan values above $543/MWh it
  recharges at up to $500: README "Recharging between price spikes"). Planned charge stays in the bands below them
  (a plan to charge at $100 whose energy is worth $350 is not carried out at $480), and in every interval discharge
  headroom goes only in spike bands priced above the dearest LOAD band that interval uses, so the bid stays convex.
* Headroom that would displace planned regulation is dispatched only at ``fcas_displacement_gen_floor``
  and above (GEN, default $1,000/MWh) or ``fcas_displacement_load_ceiling`` and below (LOAD, default
  -$50/MWh): a P50 plan cannot see FCAS price spikes coming (24 Jan 2021 in SA1: regulation at
  $2,600-7,900/MW/h while energy was $330), and an energy price that high pays for the risk. Planned
  contingency FCAS (trimmed first by the market) may be displaced at the headroom's own cost
  (``fcas_displacement_scope = "regulation"``; ``"all"`` protects it too).
* Plans without duals (the PuLP build) keep the fixed headroom of steps 3-4.

Measured (``vpp backtest run --region SA1``, all of January 2021, see the README): the fixed strategy
captures 77 % of perfect foresight (energy + FCAS), opportunity-cost headroom with price-taking planned
MW 81 %, energy-value planned bands with a GEN ladder below zero and a value floor of -$50/MWh 83.1 %,
and protecting only planned regulation (the default) 83.7 %.
Tried and not adopted: a value floor of $0 (82 %), no floor (82.8 %), a LOAD displacement ceiling of
-$10 (81 %), planning on P45 instead of P50 (83.2 %, within noise), a 576-interval horizon (83.1 %).

When the plan is unusable (status not OPTIMAL, arrays empty, short or not finite, or not covering the
dispatch interval) :func:`build_safe_bid` is used instead: no planned dispatch, only SoC-deliverable
headroom at the spike GEN bands and the negative-price LOAD bands, FCAS offered at 0 MW; its
explanation says it is a safe fallback and why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import NamedTuple, cast

import numpy as np
import numpy.typing as npt
from google.protobuf.timestamp_pb2 import Timestamp

from algorithms.common import nem_time
from algorithms.common.battery import BatteryParams, battery_from_spec
from algorithms.common.products import ENERGY, LOWER_PREFIX, RAISE_PREFIX, is_lower, is_raise, is_regulation
from algorithms.market.bid_columns import ColumnarBid, PeriodColumns, columns_from_arrays, encode_periods
from algorithms.market.bid_validation import entry_type_at
from algorithms.market.trapezium import offer_corners
from settings import BiddingSettings, MarketRules
from vpp.v1 import bid_pb2, common_pb2, worker_pb2

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# MW figures of a bid are rounded down to this resolution (1 kW).
_MW_RESOLUTION = 1e-3
_KW_PER_MW = 1000.0


def _floor_mw(mw: FloatArray) -> FloatArray:
    """MW rounded down to 1 kW (a tiny tolerance keeps exact kW values exact), never negative."""
    floored: FloatArray = np.floor(mw / _MW_RESOLUTION + 1e-6) / _KW_PER_MW
    return np.maximum(floored, 0.0)


def _check_ladder(name: str, prices: Sequence[float], band_count: int) -> FloatArray:
    ladder = np.asarray(prices, dtype=np.float64)
    if len(ladder) != band_count:
        raise ValueError(f"{name} has {len(ladder)} prices, the market needs exactly {band_count}")
    if not bool(np.all(np.isfinite(ladder))) or not bool(np.all(np.diff(ladder) > 0)):
        raise ValueError(f"{name} must be finite and strictly increasing, got {list(prices)}")
    return ladder


# The smallest step between two band prices ($/MWh, $/MW/h) when a ladder is pulled within the day's limits.
_LADDER_STEP = 0.01


def _within(prices: Sequence[float], low: float, high: float) -> list[float]:
    """``prices`` (strictly increasing) pulled into ``[low, high]``, still strictly increasing: bands above
    ``high`` step down from it by :data:`_LADDER_STEP`, bands below ``low`` step up from it. Unchanged when
    the ladder already lies within the limits."""
    ladder = np.clip(np.asarray(prices, dtype=np.float64), low, high)
    for index in range(len(ladder) - 2, -1, -1):
        ladder[index] = min(ladder[index], ladder[index + 1] - _LADDER_STEP)
    for index in range(1, len(ladder)):
        ladder[index] = max(ladder[index], ladder[index - 1] + _LADDER_STEP)
    return [round(float(price), 2) for price in ladder]


def bidding_for_trading_day(bidding: BiddingSettings, rules: MarketRules, battery: BatteryParams,
                            trading_day: date) -> BiddingSettings:
    """The configured ladders as the market takes them on ``trading_day``: every ENERGY band price within the
    day's market price floor and cap at the connection point (× the side's loss factor, $/MWh), every FCAS
    band price within [FCAS price floor, cap] ($/MW/h). A year whose cap is below the ladder's top band (the
    cap was $14,200 in FY2017-18 against a $14,900 spike band) bids its top bands just under the cap; the
    band order is kept, so the strategy's band choices stand. Raises settings.PriceLimitsUnknownError when no
    source gives the day's limits, ValueError for a ladder that is not ``band_count`` strictly increasing prices."""
    for name in ("gen_band_prices", "load_band_prices", "fcas_band_prices"):
        _check_ladder(name, getattr(bidding, name), rules.band_count)
    cap = rules.price_cap_for(trading_day).cap
    floor = rules.price_floor_for(trading_day)
    return replace(
        bidding,
        gen_band_prices=tuple(_within(bidding.gen_band_prices, floor * battery.mlf_gen, cap * battery.mlf_gen)),
        load_band_prices=tuple(_within(bidding.load_band_prices, floor * battery.mlf_load,
                                       cap * battery.mlf_load)),
        fcas_band_prices=tuple(_within(bidding.fcas_band_prices, rules.fcas_price_floor, cap)))


def _check_battery(battery: BatteryParams) -> None:
    checks = {
        "power_mw": battery.power_mw > 0,
        "energy_mwh": battery.energy_mwh > 0,
        "charge_efficiency": 0 < battery.charge_efficiency <= 1,
        "discharge_efficiency": 0 < battery.discharge_efficiency <= 1,
        "soc fractions": 0 <= battery.soc_min_fraction <= battery.soc_max_fraction <= 1,
        "mlf_gen": battery.mlf_gen > 0,
        "mlf_load": battery.mlf_load > 0,
        "ramp_rate_mw_per_min": battery.ramp_rate_mw_per_min >= 0,
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"battery {battery.unit_id!r} cannot be bid: invalid {', '.join(bad)}")


# LOAD bands priced (divided by MLF_load) at or above this ($/MWh; the strike of the NEM's standard $300 cap
# contract, above which a price is a spike) are *trough* bands: only free charge headroom priced by the plan's
# value of stored energy uses them (``charge_headroom = "energy_value"``), to recharge between price spikes.
TROUGH_LOAD_PRICE_PER_MWH = 300.0


class HeadroomLadders(NamedTuple):
    """The day's GEN and LOAD ladders ($/MWh) and which of their bands may carry what (module docstring)."""

    gen_prices: FloatArray
    load_prices: FloatArray
    spike_gen: BoolArray
    """GEN bands (not the first) priced above every LOAD band but the trough bands, after MLF."""
    negative_load: BoolArray
    """LOAD bands priced below $0/MWh after MLF, the planned-charge band excepted."""
    trough_load: BoolArray
    """LOAD bands at or above :data:`TROUGH_LOAD_PRICE_PER_MWH` after MLF."""
    planned_load_band: int
    """The LOAD band of price-taking planned charge: the dearest that is not a trough band."""


def _headroom_masks(battery: BatteryParams, bidding: BiddingSettings, rules: MarketRules) -> HeadroomLadders:
    """The GEN and LOAD ladders and which of their bands may carry headroom (see module docstring). ValueError
    for a LOAD ladder whose every band is a trough band (price-taking planned charge would have no band)."""
    gen_prices = _check_ladder("gen_band_prices", bidding.gen_band_prices, rules.band_count)
    load_prices = _check_ladder("load_band_prices", bidding.load_band_prices, rules.band_count)
    load_effective = load_prices / battery.mlf_load
    trough_load = load_effective >= TROUGH_LOAD_PRICE_PER_MWH
    ordinary = np.flatnonzero(~trough_load)
    if len(ordinary) == 0:
        raise ValueError(f"load_band_prices needs a band below ${TROUGH_LOAD_PRICE_PER_MWH:g}/MWh (after MLF) for "
                         f"planned charge, got {list(bidding.load_band_prices)}")
    planned_load_band = int(ordinary[-1])
    band = np.arange(rules.band_count)
    spike_gen = (band > 0) & (gen_prices / battery.mlf_gen > load_effective[planned_load_band])
    negative_load = (band != planned_load_band) & (load_effective < 0.0)
    return HeadroomLadders(gen_prices, load_prices, spike_gen, negative_load, trough_load, planned_load_band)


def _price_taking_gen_band(battery: BatteryParams, bidding: BiddingSettings, rules: MarketRules) -> int:
    """The GEN band that carries price-taking planned discharge: the cheapest whose effective price is at
    least $0/MWh (band 1 when none is), so planned discharge never pays to generate."""
    gen_prices = _check_ladder("gen_band_prices", bidding.gen_band_prices, rules.band_count)
    non_negative = np.flatnonzero(gen_prices / battery.mlf_gen >= 0.0)
    return int(non_negative[0]) if len(non_negative) else 0


def deliverable_mw(soc_start_mwh: FloatArray, battery: BatteryParams, interval_hours: float,
                   ) -> tuple[FloatArray, FloatArray]:
    """Discharge and charge (MW) that state of charge ``soc_start_mwh`` (MWh) can sustain for one interval.

    Discharge ``min(P, (soc - soc_min) * eta_d / h)``, charge ``min(P, (soc_max - soc) / (eta_c * h))``,
    both at least 0.
    """
    discharge = np.clip((soc_start_mwh - battery.soc_min_mwh) * battery.discharge_efficiency / interval_hours,
                        0.0, battery.power_mw)
    charge = np.clip((battery.soc_max_mwh - soc_start_mwh) / (battery.charge_efficiency * interval_hours),
                     0.0, battery.power_mw)
    return discharge, charge


def fcas_reserved_mw(fcas_enablement_mw: Mapping[str, FloatArray], count: int) -> tuple[FloatArray, FloatArray]:
    """Capacity (MW per interval) that planned FCAS enablement holds on the GEN and the LOAD side under the
    joint-capacity rule: the largest contingency raise service plus raise regulation, and the same for
    lower (shared/NEM.md). Energy dispatched beyond ``P - reserved`` displaces planned FCAS."""
    raise_mw, lower_mw = np.zeros(count), np.zeros(count)
    raise_regulation, lower_regulation = np.zeros(count), np.zeros(count)
    for product, enablement in fcas_enablement_mw.items():
        mw = np.asarray(enablement, dtype=np.float64)[:count]
        regulation = is_regulation(product)
        if is_raise(product):
            if regulation:
                raise_regulation = raise_regulation + mw
            else:
                raise_mw = np.maximum(raise_mw, mw)
        elif is_lower(product):
            if regulation:
                lower_regulation = lower_regulation + mw
            else:
                lower_mw = np.maximum(lower_mw, mw)
    return raise_mw + raise_regulation, lower_mw + lower_regulation


def fcas_regulation_mw(fcas_enablement_mw: Mapping[str, FloatArray], count: int) -> tuple[FloatArray, FloatArray]:
    """Planned raise and lower regulation (MW per interval): the part of :func:`fcas_reserved_mw` that the
    market trims last when energy needs the capacity (algorithms/market/clearing.py)."""
    raise_mw, lower_mw = np.zeros(count), np.zeros(count)
    for product, enablement in fcas_enablement_mw.items():
        if is_regulation(product):
            mw = np.asarray(enablement, dtype=np.float64)[:count]
            if is_raise(product):
                raise_mw = raise_mw + mw
            elif is_lower(product):
                lower_mw = lower_mw + mw
    return raise_mw, lower_mw


FCAS_OFFERS = ("planned", "headroom")


def fcas_offer_mw(planned_fcas_mw: Mapping[str, FloatArray], planned_net_mw: FloatArray, power_mw: float,
                  offer: str, deliverable: tuple[FloatArray, FloatArray] | None = None) -> dict[str, FloatArray]:
    """MAXAVAIL (MW per interval) of each FCAS service's offer (step 7 of the module docstring), from the plan's
    enablement ``planned_fcas_mw`` (MW, at most ``power_mw``) and its net output ``planned_net_mw`` (gen − load,
    MW).

    ``offer = "planned"``: the planned MW. ``"headroom"``: a contingency service is offered at the registered
    power P (the market trims contingency first under joint capacity and the trapezium at the energy dispatched
    limits it, so the offer beyond the plan displaces nothing the plan holds); a regulation service at its
    planned MW plus the capacity the plan leaves free on its side at the planned dispatch — raise
    ``P − net − reserved_raise``, lower ``P + net − reserved_lower`` (:func:`fcas_reserved_mw`), at least 0 —
    at most P, so at the planned dispatch the extra regulation never trims a planned contingency MW. What the
    market enables of the rest depends on the region's depth, not on the plan's expectation of it.
    ``deliverable`` = (discharge, charge) MW that the stored energy can sustain for an interval
    (:func:`deliverable_mw`, with the floor in force — an operator's SoC hold included): the offer beyond the plan
    never exceeds what the battery could deliver if enabled — raise at most the planned charge it can drop plus
    that discharge, lower at most the planned discharge it can drop plus that charge — so an empty battery (or one
    held at its floor) offers no raise beyond the plan and a full one no lower. The planned MW is always offered
    (the plan is energy-feasible). Pure."""
    if offer not in FCAS_OFFERS:
        raise ValueError(f"fcas_offer must be one of {FCAS_OFFERS}, got {offer!r}")
    if offer == "planned":
        return dict(planned_fcas_mw)
    net = np.asarray(planned_net_mw, dtype=np.float64)
    count = len(net)
    reserved_raise, reserved_lower = fcas_reserved_mw(planned_fcas_mw, count)
    spare_raise = np.maximum(power_mw - net - reserved_raise, 0.0)
    spare_lower = np.maximum(power_mw + net - reserved_lower, 0.0)
    offers: dict[str, FloatArray] = {}
    for product, planned in planned_fcas_mw.items():
        if not is_regulation(product):
            offers[product] = np.full(count, power_mw)
            continue
        spare = spare_raise if is_raise(product) else spare_lower
        offers[product] = _floor_mw(np.minimum(np.asarray(planned, dtype=np.float64) + spare, power_mw))
    if deliverable is None:
        return offers
    can_discharge, can_charge = (np.asarray(mw, dtype=np.float64) for mw in deliverable)
    raise_limit = np.maximum(-net, 0.0) + can_discharge
    lower_limit = np.maximum(net, 0.0) + can_charge
    return {product: np.maximum(np.asarray(planned_fcas_mw[product], dtype=np.float64),
                                _floor_mw(np.minimum(mw, raise_limit if is_raise(product) else lower_limit)))
            for product, mw in offers.items()}


def energy_band_availabilities(planned_gen_mw: FloatArray, planned_load_mw: FloatArray,
                               soc_start_mwh: FloatArray, battery: BatteryParams, bidding: BiddingSettings,
                               rules: MarketRules,
                               fcas_enablement_mw: Mapping[str, FloatArray] | None = None,
                               opportunity_cost: tuple[FloatArray, FloatArray] | None = None,
                               ) -> tuple[FloatArray, FloatArray]:
    """GEN and LOAD band availabilities [intervals x bands] (MW) for the plan, per the module docstring.

    ``planned_gen_mw`` / ``planned_load_mw``: planned discharge / charge per interval (MW);
    ``soc_start_mwh``: stored energy at the start of each interval (MWh); ``fcas_enablement_mw``: the
    planned FCAS enablement per product (MW), whose joint capacity decides which headroom is *free*;
    ``opportunity_cost``: (GEN floor, LOAD ceiling) per interval ($/MWh) — when given, all headroom goes
    to one band per side and interval (:func:`headroom_opportunity_cost`).
    """
    hours = nem_time.hours_per_interval(rules.interval_minutes)
    ladders = _headroom_masks(battery, bidding, rules)
    spike_gen, negative_load = ladders.spike_gen, ladders.negative_load
    net = planned_gen_mw - planned_load_mw
    can_discharge, can_charge = deliverable_mw(soc_start_mwh, battery, hours)
    discharge = _floor_mw(np.minimum(np.maximum(net, 0.0), can_discharge))
    charge = _floor_mw(np.minimum(np.maximum(-net, 0.0), can_charge))
    count = len(net)
    gen_bands = np.zeros((count, rules.band_count))
    load_bands = np.zeros((count, rules.band_count))
    gen_bands[:, _price_taking_gen_band(battery, bidding, rules)] = discharge
    load_bands[:, ladders.planned_load_band] = charge
    front_share = bidding.headroom_front_share
    if not 0.0 <= front_share <= 1.0:
        raise ValueError(f"headroom_front_share must be in [0, 1], got {front_share}")
    raise_reserved, lower_reserved = fcas_reserved_mw(fcas_enablement_mw or {}, count)
    gen_headroom = can_discharge - discharge
    load_headroom = can_charge - charge
    if opportunity_cost is not None:
        if bidding.fcas_displacement_scope == "regulation":
            raise_reserved, lower_reserved = fcas_regulation_mw(fcas_enablement_mw or {}, count)
        elif bidding.fcas_displacement_scope != "all":
            raise ValueError("fcas_displacement_scope must be 'all' or 'regulation', got "
                             f"{bidding.fcas_displacement_scope!r}")
        return _opportunity_cost_bands(gen_bands, load_bands, discharge, charge, gen_headroom, load_headroom,
                                       raise_reserved, lower_reserved, opportunity_cost, ladders, battery, bidding,
                                       rules)
    free_gen = np.clip(battery.power_mw - discharge - raise_reserved, 0.0, gen_headroom)
    free_load = np.clip(battery.power_mw - charge - lower_reserved, 0.0, load_headroom)
    _spread_headroom(gen_bands, gen_headroom, free_gen, spike_gen, front_share, front_band="lowest")
    # Convexity: where discharge is planned (GEN band 1), charge headroom only below GEN band 1's price.
    gen_prices, load_prices = ladders.gen_prices, ladders.load_prices
    planned_gen_price = gen_prices[_price_taking_gen_band(battery, bidding, rules)] / battery.mlf_gen
    below_gen_band_1 = negative_load & (load_prices / battery.mlf_load < planned_gen_price)
    discharging = discharge > 0
    for rows, eligible in ((discharging, below_gen_band_1), (~discharging, negative_load)):
        if rows.any():
            selected = load_bands[rows]
            _spread_headroom(selected, load_headroom[rows], free_load[rows], eligible, front_share,
                             front_band="highest")
            load_bands[rows] = selected
    return gen_bands, load_bands


def headroom_opportunity_cost(energy_value_per_mwh: FloatArray, raise_capacity_value_per_mw: FloatArray,
                              lower_capacity_value_per_mw: FloatArray, battery: BatteryParams,
                              ) -> tuple[FloatArray, FloatArray]:
    """What unplanned dispatch gives up, per interval ($/MWh), from the plan's duals.

    Discharging one more MW-interval spends ``1/eta_d`` MWh of stored energy worth ``lambda`` ($/MWh) and
    displaces ``mu_raise`` ($/MW/h) of planned raise FCAS: GEN floor ``lambda / eta_d + mu_raise``.
    Charging stores ``eta_c`` MWh and displaces ``mu_lower`` of planned lower FCAS: LOAD ceiling
    ``lambda * eta_c - mu_lower``. ``lambda`` is the value of energy at the END of the interval.
    """
    gen_floor = energy_value_per_mwh / battery.discharge_efficiency + raise_capacity_value_per_mw
    load_ceiling = energy_value_per_mwh * battery.charge_efficiency - lower_capacity_value_per_mw
    return gen_floor, load_ceiling


def _opportunity_cost_bands(gen_bands: FloatArray, load_bands: FloatArray, discharge: FloatArray, charge: FloatArray,
                            gen_headroom: FloatArray, load_headroom: FloatArray, raise_reserved: FloatArray,
                            lower_reserved: FloatArray, opportunity_cost: tuple[FloatArray, FloatArray],
                            ladders: HeadroomLadders, battery: BatteryParams, bidding: BiddingSettings,
                            rules: MarketRules) -> tuple[FloatArray, FloatArray]:
    """Band availabilities (MW) when every MW is priced by what dispatching it gives up (module docstring,
    ``headroom_pricing = "opportunity_cost"``). ``gen_bands`` / ``load_bands`` arrive holding the planned
    MW at the price-taking GEN band / the planned LOAD band and are returned filled in; ``ladders`` are the
    caller's :func:`_headroom_masks`."""
    gen_floor, load_ceiling = opportunity_cost
    gen_effective, load_effective = ladders.gen_prices / battery.mlf_gen, ladders.load_prices / battery.mlf_load
    count = len(discharge)
    if bidding.planned_pricing == "energy_value":
        gen_bands[:] = 0.0
        load_bands[:] = 0.0
        everywhere = np.ones((count, rules.band_count), dtype=bool)
        _headroom_at_cost(gen_bands, discharge, gen_effective, everywhere, gen_floor, side="load")
        _headroom_at_cost(load_bands, charge, load_effective, ~ladders.trough_load, load_ceiling, side="gen")
    elif bidding.planned_pricing != "price_taking":
        raise ValueError(f"planned_pricing must be 'price_taking' or 'energy_value', got {bidding.planned_pricing!r}")
    # Convexity: charge headroom only below the cheapest GEN band the plan's discharge uses — and, unless
    # charge_headroom is "energy_value", only below zero; free charge headroom alone may use the trough bands.
    planned_gen_price = np.where(gen_bands > 0, gen_effective[None, :], np.inf).min(axis=1)
    load_eligible = (load_effective[None, :] < np.minimum(planned_gen_price, _charge_headroom_limit(bidding))[:, None])
    load_eligible &= load_bands == 0
    free_gen = _floor_mw(np.clip(battery.power_mw - discharge - raise_reserved, 0.0, gen_headroom))
    free_load = _floor_mw(np.clip(battery.power_mw - charge - lower_reserved, 0.0, load_headroom))
    _headroom_at_cost(load_bands, free_load, load_effective, load_eligible, load_ceiling, side="load")
    _headroom_at_cost(load_bands, _floor_mw(load_headroom - free_load), load_effective, load_eligible,
                      np.minimum(load_ceiling, bidding.fcas_displacement_load_ceiling), side="load")
    # Convexity again: discharge headroom only in spike bands above every LOAD band the interval now uses.
    dearest_load_price = np.where(load_bands > 0, load_effective[None, :], -np.inf).max(axis=1)
    gen_eligible = ladders.spike_gen[None, :] & (gen_effective[None, :] > dearest_load_price[:, None])
    _headroom_at_cost(gen_bands, free_gen, gen_effective, gen_eligible, gen_floor, side="gen")
    _headroom_at_cost(gen_bands, _floor_mw(gen_headroom - free_gen), gen_effective, gen_eligible,
                      np.maximum(gen_floor, bidding.fcas_displacement_gen_floor), side="gen")
    return gen_bands, load_bands


# ``[bidding] charge_headroom`` → the LOAD band price ($/MWh, after MLF) below which unplanned charge may be offered:
# $0 for "negative", no limit for "energy_value" (the LOAD ceiling then decides).
CHARGE_HEADROOM_LIMIT_PER_MWH: Mapping[str, float] = {"negative": 0.0, "energy_value": math.inf}


def _charge_headroom_limit(bidding: BiddingSettings) -> float:
    """:data:`CHARGE_HEADROOM_LIMIT_PER_MWH` of ``bidding.charge_headroom`` ($/MWh); ValueError for another value."""
    limit = CHARGE_HEADROOM_LIMIT_PER_MWH.get(bidding.charge_headroom)
    if limit is None:
        raise ValueError(f"charge_headroom must be one of {sorted(CHARGE_HEADROOM_LIMIT_PER_MWH)}, "
                         f"got {bidding.charge_headroom!r}")
    return limit


def _headroom_at_cost(bands: FloatArray, mw: FloatArray, effective_prices: FloatArray, eligible: BoolArray,
                      threshold: FloatArray, *, side: str) -> None:
    """Add each interval's ``mw`` to one of its ``eligible`` bands (``eligible``: one row per interval, or one
    row for all), in place. ``side="gen"``: the cheapest band whose effective price ($/MWh) is at least
    ``threshold`` (the dearest eligible when none is) — dispatched only at or above the threshold;
    ``side="load"``: the dearest band at most ``threshold`` (the cheapest eligible when none is).
    Intervals with no eligible band get nothing."""
    count = len(mw)
    allowed = np.broadcast_to(eligible, (count, len(effective_prices)))
    band = np.arange(len(effective_prices))
    if side == "gen":
        meets = allowed & (effective_prices[None, :] >= threshold[:, None])
        first_meeting = np.where(meets, band[None, :], len(band)).min(axis=1)
        fallback = np.where(allowed, band[None, :], -1).max(axis=1)
        chosen = np.where(first_meeting < len(band), first_meeting, fallback)
    else:
        meets = allowed & (effective_prices[None, :] <= threshold[:, None])
        last_meeting = np.where(meets, band[None, :], -1).max(axis=1)
        fallback = np.where(allowed, band[None, :], len(band)).min(axis=1)
        chosen = np.where(last_meeting >= 0, last_meeting, fallback)
    usable = (chosen >= 0) & (chosen < len(band)) & (mw > 0)
    rows = np.flatnonzero(usable)
    bands[rows, chosen[rows]] += mw[rows]


def _spread_headroom(bands: FloatArray, headroom_mw: FloatArray, free_mw: FloatArray, eligible: BoolArray,
                     front_share: float, *, front_band: str) -> None:
    """Add ``headroom_mw`` (MW per interval) to the ``eligible`` bands of ``bands`` in place.

    Of the *free* headroom ``free_mw`` (what planned FCAS does not need), ``front_share`` goes to the
    front band (the lowest eligible GEN band / the highest eligible LOAD band) and the rest is spread
    evenly over every eligible band; the headroom that would displace planned FCAS is spread evenly over
    the eligible bands behind the front one (all of them when there is only one). Every figure is rounded
    down to 1 kW so the total never exceeds the headroom.
    """
    positions = np.flatnonzero(eligible)
    if len(positions) == 0:
        return
    front_position = positions[0] if front_band == "lowest" else positions[-1]
    behind = positions[positions != front_position] if len(positions) > 1 else positions
    free = np.minimum(free_mw, headroom_mw)
    front = _floor_mw(free * front_share)
    even = _floor_mw((free - front) / len(positions))
    displacing = _floor_mw((headroom_mw - free) / len(behind))
    bands[:, positions] += even[:, None]
    bands[:, behind] += displacing[:, None]
    bands[:, front_position] += front


def _fcas_trapezium(product: str, max_avail_mw: FloatArray, power_mw: float,
                    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """ENABLEMENTMIN, LOWBREAKPOINT, HIGHBREAKPOINT, ENABLEMENTMAX (MW) of a bidirectional battery."""
    low_edge = np.full_like(max_avail_mw, -power_mw)
    high_edge = np.full_like(max_avail_mw, power_mw)
    if is_raise(product):
        return low_edge, low_edge, power_mw - max_avail_mw, high_edge
    if is_lower(product):
        return low_edge, -power_mw + max_avail_mw, high_edge, high_edge
    raise ValueError(f"FCAS product {product!r} is neither a {RAISE_PREFIX} nor a {LOWER_PREFIX} service")


def _fcas_offers(product: str, max_avail_mw: FloatArray, power_mw: float,
                 ) -> list[tuple[int, tuple[FloatArray, FloatArray, FloatArray, FloatArray]]]:
    """(direction, corners) of each FCAS offer of ``product``: one undirected offer of a contingency service,
    a GEN and a LOAD offer of a regulation service (step 7 of the module docstring)."""
    combined = _fcas_trapezium(product, max_avail_mw, power_mw)
    if not is_regulation(product):
        return [(common_pb2.DIRECTION_UNSPECIFIED, combined)]
    net = np.vstack(combined).T  # increasing net-output corners, one row per interval
    offers: list[tuple[int, tuple[FloatArray, FloatArray, FloatArray, FloatArray]]] = []
    for direction, side in ((common_pb2.DIRECTION_GEN, np.clip(net, 0.0, None)),
                            (common_pb2.DIRECTION_LOAD, np.clip(net, None, 0.0))):
        corners = offer_corners(direction, side)
        offers.append((direction, (corners[:, 0], corners[:, 1], corners[:, 2], corners[:, 3])))
    return offers


def _bid_interval_count(dispatch_interval: datetime, bidding: BiddingSettings, rules: MarketRules) -> int:
    """Intervals from ``dispatch_interval`` to the end of its trading day, at most the bid horizon."""
    if bidding.bid_horizon_intervals < 1:
        raise ValueError(f"bid_horizon_intervals must be at least 1, got {bidding.bid_horizon_intervals}")
    interval = timedelta(minutes=rules.interval_minutes)
    if (dispatch_interval - datetime(2000, 1, 1)) % interval != timedelta(0):
        raise ValueError(f"dispatch interval {dispatch_interval} is not on the "
                         f"{rules.interval_minutes}-minute grid")
    last = nem_time.trading_day_last_interval(nem_time.trading_day(dispatch_interval))
    return min(int((last - dispatch_interval) / interval) + 1, bidding.bid_horizon_intervals)


def _truncate(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max(max_chars - 3, 0)] + "..."


def _assemble(battery: BatteryParams, bidding: BiddingSettings, rules: MarketRules, *,
              dispatch_interval: datetime, offer_time: datetime, version: int, plan_hash: str,
              explanation: str, event_time: datetime | None, gen_bands: FloatArray, load_bands: FloatArray,
              fcas_enablement_mw: Mapping[str, FloatArray]) -> ColumnarBid:
    """The Bid message for band availabilities over consecutive intervals from ``dispatch_interval``, with
    the columns of its period offers (made from the same arrays)."""
    count = gen_bands.shape[0]
    interval = timedelta(minutes=rules.interval_minutes)
    first_stamp = nem_time.to_timestamp(dispatch_interval)
    seconds = first_stamp.seconds + int(interval.total_seconds()) * np.arange(count, dtype=np.int64)
    nanos = first_stamp.nanos
    columns: list[PeriodColumns] = []

    def stamps() -> list[Timestamp]:
        return [nem_time.to_timestamp(dispatch_interval + interval * i) for i in range(count)]

    entry_type = entry_type_at(nem_time.trading_day(dispatch_interval), offer_time, rules.daily_bid_close)
    ramp = float(math.floor(battery.ramp_rate_mw_per_min))
    bid = bid_pb2.Bid(
        unit_id=battery.unit_id,
        trading_day=nem_time.trading_day(dispatch_interval).isoformat(),
        dispatch_interval=first_stamp,
        version=version,
        entry_type=entry_type,
        offer_time=nem_time.to_timestamp(offer_time),
        rebid_explanation=_truncate(explanation, rules.rebid_explanation_max_chars),
        plan_hash=plan_hash,
    )
    if entry_type == bid_pb2.ENTRY_TYPE_REBID:
        bid.event_time.CopyFrom(nem_time.to_timestamp(event_time or offer_time))
    if ramp < battery.min_ramp_rate_mw_per_min:
        bid.ramp_rate_reason = (f"registered ramp capability {battery.ramp_rate_mw_per_min:g} MW/min is "
                                f"below the {battery.min_ramp_rate_mw_per_min:g} MW/min minimum")
    for direction, ladder, bands in ((common_pb2.DIRECTION_GEN, bidding.gen_band_prices, gen_bands),
                                     (common_pb2.DIRECTION_LOAD, bidding.load_band_prices, load_bands)):
        offer = bid.offers.add(product=ENERGY, direction=direction, band_price=list(ladder))
        # The exact kW sum of the bands (float addition may add an ulp above it).
        max_avail = np.round(np.cumsum(bands, axis=1)[:, -1], 3)
        columns.append(columns_from_arrays(seconds=seconds, nanos=nanos, band_avail_mw=bands,
                                           max_avail_mw=max_avail, band_count=rules.band_count,
                                           ramp_mw_per_min=ramp, pasa_avail_mw=battery.power_mw))
        encoded = encode_periods(columns[-1])
        if encoded is not None:  # the same periods as the loop below writes, as arrays
            offer.MergeFromString(encoded)
            continue
        for stamp, row, total in zip(stamps(), bands.tolist(), max_avail.tolist(), strict=True):
            offer.periods.add(dispatch_interval=stamp, max_avail_mw=total, band_avail_mw=row,
                              ramp_up_rate_mw_per_min=ramp, ramp_down_rate_mw_per_min=ramp,
                              pasa_avail_mw=battery.power_mw, energy_limit_mwh=0.0)
    fcas_ladder = _check_ladder("fcas_band_prices", bidding.fcas_band_prices, rules.band_count)
    zero_bands = [0.0] * (rules.band_count - 1)
    for product, enablement in fcas_enablement_mw.items():
        for fcas_direction, corners in _fcas_offers(product, enablement, battery.power_mw):
            offer = bid.offers.add(product=product, direction=cast(common_pb2.Direction.ValueType, fcas_direction),
                                   band_price=fcas_ladder.tolist())
            fcas_bands = np.zeros((count, len(zero_bands) + 1))
            fcas_bands[:, 0] = enablement
            columns.append(columns_from_arrays(
                seconds=seconds, nanos=nanos, band_avail_mw=fcas_bands, max_avail_mw=enablement,
                band_count=rules.band_count, enablement_min_mw=corners[0], low_breakpoint_mw=corners[1],
                high_breakpoint_mw=corners[2], enablement_max_mw=corners[3]))
            encoded = encode_periods(columns[-1])
            if encoded is not None:
                offer.MergeFromString(encoded)
                continue
            for stamp, mw, e_min, low, high, e_max in zip(stamps(), enablement.tolist(),
                                                          *(c.tolist() for c in corners), strict=True):
                offer.periods.add(dispatch_interval=stamp, max_avail_mw=mw, band_avail_mw=[mw, *zero_bands],
                                  enablement_min_mw=e_min, low_breakpoint_mw=low, high_breakpoint_mw=high,
                                  enablement_max_mw=e_max)
    return ColumnarBid(bid, tuple(columns))


def _check_fcas_products(fcas_products: Sequence[str]) -> None:
    if len(set(fcas_products)) != len(fcas_products):
        raise ValueError(f"FCAS products listed more than once: {list(fcas_products)}")
    if ENERGY in fcas_products:
        raise ValueError(f"{ENERGY} is not an FCAS product")
    for product in fcas_products:
        _fcas_trapezium(product, np.zeros(0), 0.0)


def build_safe_bid(battery: common_pb2.BatterySpec, bidding: BiddingSettings, rules: MarketRules, *,
                   dispatch_interval: datetime, offer_time: datetime, version: int,
                   fcas_products: Sequence[str], initial_state_of_charge_mwh: float, reason: str, plan_hash: str = "",
                   event_time: datetime | None = None) -> bid_pb2.Bid:
    """The safe fallback bid (:func:`build_safe_bid_columns`, units and times as there) as a protobuf."""
    return build_safe_bid_columns(battery, bidding, rules, dispatch_interval=dispatch_interval,
                                  offer_time=offer_time, version=version, fcas_products=fcas_products,
                                  initial_state_of_charge_mwh=initial_state_of_charge_mwh, reason=reason,
                                  plan_hash=plan_hash, event_time=event_time).bid


def build_safe_bid_columns(battery: common_pb2.BatterySpec, bidding: BiddingSettings, rules: MarketRules, *,
                           dispatch_interval: datetime, offer_time: datetime, version: int,
                           fcas_products: Sequence[str], initial_state_of_charge_mwh: float, reason: str,
                           plan_hash: str = "", event_time: datetime | None = None) -> ColumnarBid:
    """The safe fallback bid: no planned dispatch, only headroom that ``initial_state_of_charge_mwh`` can deliver.

    Every interval from ``dispatch_interval`` (interval-ending AEST) to the end of its trading day (at
    most ``bid_horizon_intervals``) offers the discharge (MW) stored energy ``initial_state_of_charge_mwh`` (MWh)
    can deliver at the spike GEN bands and the charge it can absorb at the negative-price LOAD bands;
    FCAS products are offered at 0 MW. The explanation says it is a safe fallback and gives ``reason``.
    Returned with the columns of its period offers (:mod:`algorithms.market.bid_columns`).
    """
    params = battery_from_spec(battery)
    _check_battery(params)
    _check_fcas_products(fcas_products)
    bidding = bidding_for_trading_day(bidding, rules, params, nem_time.trading_day(dispatch_interval))
    if not math.isfinite(initial_state_of_charge_mwh):
        raise ValueError(f"initial state of charge must be a finite MWh figure, got {initial_state_of_charge_mwh}")
    count = _bid_interval_count(dispatch_interval, bidding, rules)
    ladders = _headroom_masks(params, bidding, rules)
    gen_prices, load_prices, spike_gen, negative_load = (ladders.gen_prices, ladders.load_prices, ladders.spike_gen,
                                                         ladders.negative_load)
    zeros = np.zeros(count)
    gen_bands, load_bands = energy_band_availabilities(zeros, zeros, np.full(count, initial_state_of_charge_mwh),
                                                       params, bidding, rules)
    interval = timedelta(minutes=rules.interval_minutes)
    spike_text = f"GEN >= ${gen_prices[spike_gen].min():g}" if spike_gen.any() else "no GEN band"
    negative_text = (f"LOAD <= ${load_prices[negative_load].max():g}" if negative_load.any()
                     else "no LOAD band")
    tail = (f". No planned dispatch: only SoC-deliverable headroom at {spike_text} and {negative_text}, "
            f"FCAS 0 MW; SoC {initial_state_of_charge_mwh:.1f} MWh at {dispatch_interval - interval:%H:%M}")
    head = f"Safe fallback bid from {dispatch_interval:%H:%M}: "
    room = max(rules.rebid_explanation_max_chars - len(head) - len(tail), 20)
    explanation = head + _truncate(reason.strip() or "no usable plan", room) + tail
    return _assemble(params, bidding, rules, dispatch_interval=dispatch_interval, offer_time=offer_time,
                     version=version, plan_hash=plan_hash, explanation=explanation, event_time=event_time,
                     gen_bands=gen_bands, load_bands=load_bands,
                     fcas_enablement_mw={product: zeros for product in fcas_products})


def _finite_non_negative(values: FloatArray) -> bool:
    return bool(np.all(np.isfinite(values)) and np.all(values >= 0))


def unusable_plan_reason(plan: worker_pb2.OptimisationResult, dispatch_interval: datetime, rules: MarketRules,
                         fcas_products: Sequence[str]) -> str | None:
    """Why ``plan`` cannot be bid for the interval ending ``dispatch_interval`` (AEST), None when it can:
    status not OPTIMAL, no intervals, arrays short, negative or not finite, FCAS products the market does
    not trade (``fcas_products``), or a horizon that does not cover the dispatch interval. Such a plan
    gets the safe bid (:func:`build_safe_bid`) with this reason."""
    interval = timedelta(minutes=rules.interval_minutes)
    if plan.status != worker_pb2.RESULT_STATUS_OPTIMAL:
        known = plan.status in worker_pb2.ResultStatus.values()
        status = worker_pb2.ResultStatus.Name(plan.status) if known else str(plan.status)
        detail = f" ({plan.status_reason})" if plan.status_reason else ""
        return f"plan status {status}{detail}"
    horizon = plan.horizon_intervals
    if horizon == 0:
        return "plan is empty (0 intervals)"
    lengths = {"gen_mw": len(plan.gen_mw), "load_mw": len(plan.load_mw),
               "state_of_charge_mwh": len(plan.state_of_charge_mwh)}
    lengths.update({f"fcas {s.product}": len(s.enablement_mw) for s in plan.fcas})
    short = [f"{name} has {n}" for name, n in lengths.items() if n < horizon]
    if short:
        return f"plan arrays shorter than its {horizon} intervals: {', '.join(short)}"
    if not (_finite_non_negative(np.asarray(plan.gen_mw)) and _finite_non_negative(np.asarray(plan.load_mw))
            and bool(np.all(np.isfinite(np.asarray(plan.state_of_charge_mwh))))
            and all(_finite_non_negative(np.asarray(s.enablement_mw)) for s in plan.fcas)):
        return "plan holds negative or non-finite MW/MWh values"
    unknown = sorted({s.product for s in plan.fcas} - set(fcas_products))
    if unknown:
        return f"plan schedules FCAS products not offered in the market: {', '.join(unknown)}"
    if not plan.HasField("first_interval"):
        return "plan has no first interval"
    first = nem_time.from_timestamp(plan.first_interval)
    offset = (dispatch_interval - first) / interval
    if offset != int(offset) or not 0 <= offset < horizon:
        return (f"plan covers {first:%Y-%m-%d %H:%M} + {horizon} intervals, not the dispatch interval "
                f"{dispatch_interval:%Y-%m-%d %H:%M}")
    return None


def _action_text(gen_mw: float, load_mw: float, fcas_mw: float) -> str:
    if gen_mw > 0:
        action = f"discharge {gen_mw:.1f} MW"
    elif load_mw > 0:
        action = f"charge {load_mw:.1f} MW"
    else:
        action = "no energy dispatch"
    return action + (f", FCAS {fcas_mw:.1f} MW enabled" if fcas_mw > 0 else "")


def _plan_opportunity_cost(plan: worker_pb2.OptimisationResult, window: slice, count: int, battery: BatteryParams,
                           bidding: BiddingSettings) -> tuple[FloatArray, FloatArray] | None:
    """The headroom opportunity cost of the bid's intervals when ``headroom_pricing`` asks for it and the
    plan carries its duals (finite, one per interval); None otherwise (fixed headroom)."""
    if bidding.headroom_pricing == "fixed":
        return None
    if bidding.headroom_pricing != "opportunity_cost":
        raise ValueError(f"headroom_pricing must be 'fixed' or 'opportunity_cost', got {bidding.headroom_pricing!r}")
    series = [np.asarray(values, dtype=np.float64)[window] for values in
              (plan.energy_value_per_mwh, plan.raise_capacity_value_per_mw, plan.lower_capacity_value_per_mw)]
    if any(len(values) != count or not bool(np.all(np.isfinite(values))) for values in series):
        return None
    energy_value = np.maximum(series[0], bidding.energy_value_floor_per_mwh)
    return headroom_opportunity_cost(energy_value, series[1], series[2], battery)


def build_bid(plan: worker_pb2.OptimisationResult, battery: common_pb2.BatterySpec, bidding: BiddingSettings,
              rules: MarketRules, *, dispatch_interval: datetime, offer_time: datetime, version: int,
              fcas_products: Sequence[str], initial_state_of_charge_mwh: float, plan_hash: str,
              event_time: datetime | None = None) -> bid_pb2.Bid:
    """The price-contingent bid for ``plan`` (:func:`build_bid_columns`, units and times as there) as a
    protobuf."""
    return build_bid_columns(plan, battery, bidding, rules, dispatch_interval=dispatch_interval,
                             offer_time=offer_time, version=version, fcas_products=fcas_products,
                             initial_state_of_charge_mwh=initial_state_of_charge_mwh, plan_hash=plan_hash,
                             event_time=event_time).bid


def build_bid_columns(plan: worker_pb2.OptimisationResult, battery: common_pb2.BatterySpec,
                      bidding: BiddingSettings, rules: MarketRules, *, dispatch_interval: datetime,
                      offer_time: datetime, version: int, fcas_products: Sequence[str],
                      initial_state_of_charge_mwh: float, plan_hash: str,
                      event_time: datetime | None = None) -> ColumnarBid:
    """The price-contingent bid for ``plan`` (strategy in the module docstring).

    ``dispatch_interval``: first interval of the bid (interval-ending AEST); ``offer_time``: when the
    bid is made (AEST), which decides DAILY or REBID; ``initial_state_of_charge_mwh``: stored energy (MWh) at the
    start of the plan's first interval; ``fcas_products``: the FCAS products tradable in the data;
    ``event_time`` (REBID): the event the rebid responds to, ``offer_time`` when not given. An
    unusable plan yields :func:`build_safe_bid_columns`. Returned with the columns of its period offers
    (:mod:`algorithms.market.bid_columns`). Raises ValueError for inputs no bid can be made from
    (ladders, battery, off-grid dispatch interval, non-finite SoC, unknown FCAS product names).
    """
    params = battery_from_spec(battery)
    _check_battery(params)
    _check_fcas_products(fcas_products)
    bidding = bidding_for_trading_day(bidding, rules, params, nem_time.trading_day(dispatch_interval))
    if not math.isfinite(initial_state_of_charge_mwh):
        raise ValueError(f"initial state of charge must be a finite MWh figure, got {initial_state_of_charge_mwh}")
    interval = timedelta(minutes=rules.interval_minutes)
    count = _bid_interval_count(dispatch_interval, bidding, rules)
    reason = unusable_plan_reason(plan, dispatch_interval, rules, fcas_products)
    if reason is not None:
        return build_safe_bid_columns(battery, bidding, rules, dispatch_interval=dispatch_interval,
                                      offer_time=offer_time, version=version, fcas_products=fcas_products,
                                      initial_state_of_charge_mwh=initial_state_of_charge_mwh, reason=reason,
                                      plan_hash=plan_hash, event_time=event_time)
    offset = int((dispatch_interval - nem_time.from_timestamp(plan.first_interval)) / interval)
    count = min(count, plan.horizon_intervals - offset)
    window = slice(offset, offset + count)
    planned_gen = np.asarray(plan.gen_mw, dtype=np.float64)[window]
    planned_load = np.asarray(plan.load_mw, dtype=np.float64)[window]
    planned_soc = np.asarray(plan.state_of_charge_mwh, dtype=np.float64)
    soc_start = np.concatenate([[initial_state_of_charge_mwh], planned_soc])[window]
    schedules = {s.product: np.asarray(s.enablement_mw, dtype=np.float64)[window] for s in plan.fcas}
    fcas = {product: _floor_mw(np.minimum(schedules.get(product, np.zeros(count)), params.power_mw))
            for product in fcas_products}
    opportunity = _plan_opportunity_cost(plan, window, count, params, bidding)
    gen_bands, load_bands = energy_band_availabilities(planned_gen, planned_load, soc_start, params, bidding,
                                                       rules, fcas, opportunity)
    offered_fcas = fcas_offer_mw(fcas, planned_gen - planned_load, params.power_mw, bidding.fcas_offer,
                                 deliverable_mw(soc_start, params, nem_time.hours_per_interval(rules.interval_minutes)))
    fcas_first = sum(float(mw[0]) for mw in fcas.values())
    algorithm = f"{plan.algorithm.name} v{plan.algorithm.version}, " if plan.algorithm.name else ""
    ladders = _headroom_masks(params, bidding, rules)
    gen_prices, spike_gen = ladders.gen_prices, ladders.spike_gen
    spike_text = f" at >= ${gen_prices[spike_gen].min():g}" if spike_gen.any() else ""
    first_net = float(planned_gen[0] - planned_load[0])
    planned_discharge = min(max(first_net, 0.0), float(gen_bands[0].sum()))
    planned_charge = min(max(-first_net, 0.0), float(load_bands[0].sum()))
    explanation = (f"Availability rebid from {dispatch_interval:%H:%M}: plan {plan_hash[:8] or 'unhashed'} "
                   f"({algorithm}forecast-based) sets "
                   f"{_action_text(planned_discharge, planned_charge, fcas_first)}; "
                   f"spike headroom {float(gen_bands[0][spike_gen].sum()):.1f} MW{spike_text}; "
                   f"SoC {soc_start[0]:.1f} MWh at {dispatch_interval - interval:%H:%M}")
    is_rebid = (entry_type_at(nem_time.trading_day(dispatch_interval), offer_time, rules.daily_bid_close)
                == bid_pb2.ENTRY_TYPE_REBID)
    return _assemble(params, bidding, rules, dispatch_interval=dispatch_interval, offer_time=offer_time,
                     version=version, plan_hash=plan_hash, explanation=explanation if is_rebid else "",
                     event_time=event_time, gen_bands=gen_bands, load_bands=load_bands,
                     fcas_enablement_mw=offered_fcas)

