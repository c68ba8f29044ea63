"""Bid validation: the rules V1–V8 of shared/NEM.md ("Validation"), plus V0 for structure.

A bid that fails any rule never leaves the platform; :func:`validate_bid` returns every violated rule
(empty list = valid) and never raises, whatever the bid contains (NaN, inf, huge numbers, missing
fields, unknown products, random strings).

Rules (each :class:`Violation` names one of them and the product / direction / intervals concerned):

* **V0 structure** — unit id missing or not the battery's; trading day missing or unparsable; bid
  dispatch interval missing or in another trading day; entry type or offer time missing; no offers;
  an offer for a product not tradable in the data; an ENERGY offer without a GEN/LOAD direction or an
  FCAS offer with one; the same product/direction offered twice; an offer without periods; a period
  without a dispatch interval, off the 5-minute grid, outside the trading day, or given twice.
* **V1** exactly ``rules.band_count`` band prices per offer, strictly increasing, and exactly
  ``band_count`` band availabilities per period.
* **V2** band prices finite and within [market price floor, market price cap of the trading day's
  financial year] ($/MWh); FCAS prices ($/MW/h) ≥ the FCAS price floor and ≤ the cap.
* **V3** availabilities finite and ≥ 0 (bands, MAXAVAIL, PASA); MAXAVAIL ≤ registered capacity (MW).
* **V4** a REBID offered after the daily bid close (``rules.daily_bid_close`` on D−1) keeps the band
  prices in force for the day (``daily_band_prices``), and a DAILY entry cannot be offered after it.
* **V5** a REBID carries a non-empty explanation of at most ``rules.rebid_explanation_max_chars``
  characters and an event time that is not after the offer time.
* **V6** battery: ENERGY offered in both directions (GEN and LOAD); convexity in every interval
  (highest effective LOAD price / MLF_load < lowest effective GEN price / MLF_gen, a band being
  effective when it has MW within MAXAVAIL); energy limit finite, whole MWh, 0 ≤ limit ≤ registered
  storage (MWh).
* **V7** FCAS trapezium finite and ENABLEMENTMIN ≤ LOWBREAKPOINT ≤ HIGHBREAKPOINT ≤ ENABLEMENTMAX (MW).
* **V8** ENERGY ramp rates finite, ≥ 0 and whole MW/min; below the registered minimum only with a
  ``ramp_rate_reason``.

Every number is checked by the rule it belongs to, so a NaN band price fails V2, a NaN MAXAVAIL V3.
Period checks are vectorised with numpy over the (up to 288) periods of each offer; a violation
reports how many intervals fail and the first few of them (interval-ending AEST).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import numpy.typing as npt

from algorithms.common import nem_time
from algorithms.common.products import ENERGY
from settings import MarketRules
from vpp.v1 import bid_pb2, common_pb2

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_GEN = common_pb2.DIRECTION_GEN
_LOAD = common_pb2.DIRECTION_LOAD
_DIRECTION_NAMES = {common_pb2.DIRECTION_UNSPECIFIED: "", _GEN: "GEN", _LOAD: "LOAD"}
# Trading days a bid may be for (the NEM started in 1998; anything far outside is a corrupt field).
_EARLIEST_TRADING_DAY = date(1998, 12, 13)
_LATEST_TRADING_DAY = date(2200, 1, 1)
# How many failing intervals a message lists by time.
_LISTED_INTERVALS = 3


@dataclass(frozen=True)
class Violation:
    """One violated bid rule: ``rule`` is "V0".."V8", ``message`` names what and where."""

    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


_Add = Callable[[str, str], None]


@dataclass(frozen=True)
class _OfferArrays:
    """The period offers of one ProductOffer as arrays (one entry per period, in bid order)."""

    has_time: BoolArray
    seconds: IntArray  # UTC seconds of the interval-ending time (0 when missing)
    nanos: IntArray
    max_avail_mw: FloatArray
    pasa_avail_mw: FloatArray
    band_counts: IntArray
    band_avail_mw: FloatArray | None  # [periods x band_count] when every period has band_count bands
    band_avail_invalid: BoolArray  # a band availability of the period is negative or not finite
    ramp_up_mw_per_min: FloatArray
    ramp_down_mw_per_min: FloatArray
    energy_limit_mwh: FloatArray
    enablement_min_mw: FloatArray
    low_breakpoint_mw: FloatArray
    high_breakpoint_mw: FloatArray
    enablement_max_mw: FloatArray


def _floats(offer: bid_pb2.ProductOffer, field: str) -> FloatArray:
    return np.fromiter((getattr(p, field) for p in offer.periods), dtype=np.float64, count=len(offer.periods))


def _offer_arrays(offer: bid_pb2.ProductOffer, band_count: int) -> _OfferArrays:
    periods = offer.periods
    band_counts = np.fromiter((len(p.band_avail_mw) for p in periods), dtype=np.int64, count=len(periods))
    bands: FloatArray | None = None
    with np.errstate(all="ignore"):
        if len(periods) > 0 and bool(np.all(band_counts == band_count)):
            bands = np.array([list(p.band_avail_mw) for p in periods], dtype=np.float64).reshape(
                len(periods), band_count)
            band_invalid = ~np.all(np.isfinite(bands) & (bands >= 0), axis=1)
        else:  # ragged band counts (reported under V1): judge each period's bands on their own
            band_invalid = np.fromiter(
                (not bool(np.all(np.isfinite(row) & (row >= 0)))
                 for row in (np.asarray(p.band_avail_mw, dtype=np.float64) for p in periods)),
                dtype=np.bool_, count=len(periods))
    return _OfferArrays(
        has_time=np.fromiter((p.HasField("dispatch_interval") for p in periods), dtype=np.bool_,
                             count=len(periods)),
        seconds=np.fromiter((p.dispatch_interval.seconds for p in periods), dtype=np.int64,
                            count=len(periods)),
        nanos=np.fromiter((p.dispatch_interval.nanos for p in periods), dtype=np.int64, count=len(periods)),
        max_avail_mw=_floats(offer, "max_avail_mw"),
        pasa_avail_mw=_floats(offer, "pasa_avail_mw"),
        band_counts=band_counts,
        band_avail_mw=bands,
        band_avail_invalid=band_invalid,
        ramp_up_mw_per_min=_floats(offer, "ramp_up_rate_mw_per_min"),
        ramp_down_mw_per_min=_floats(offer, "ramp_down_rate_mw_per_min"),
        energy_limit_mwh=_floats(offer, "energy_limit_mwh"),
        enablement_min_mw=_floats(offer, "enablement_min_mw"),
        low_breakpoint_mw=_floats(offer, "low_breakpoint_mw"),
        high_breakpoint_mw=_floats(offer, "high_breakpoint_mw"),
        enablement_max_mw=_floats(offer, "enablement_max_mw"),
    )


def _market_time_text(utc_seconds: int) -> str:
    """Interval-ending AEST text of UTC epoch seconds; the raw number if it is out of range."""
    try:
        moment = datetime(1970, 1, 1) + timedelta(seconds=int(utc_seconds)) + nem_time.AEST_OFFSET
    except (OverflowError, ValueError):
        return f"t={utc_seconds}s"
    return moment.strftime("%Y-%m-%d %H:%M")


def _where(arrays: _OfferArrays, failing: BoolArray) -> str:
    """'in N interval(s) (first: ...)' for the periods flagged in ``failing``."""
    indices = np.flatnonzero(failing)
    listed = ", ".join(
        _market_time_text(int(arrays.seconds[i])) if arrays.has_time[i] else f"period #{i + 1}"
        for i in indices[:_LISTED_INTERVALS])
    more = ", ..." if len(indices) > _LISTED_INTERVALS else ""
    return f"in {len(indices)} interval(s) ({listed}{more})"


def _safe_market_time(bid: bid_pb2.Bid, field: str) -> datetime | None:
    """Market time of a Timestamp field of ``bid``; None when unset or out of range."""
    if not bid.HasField(field):  # type: ignore[arg-type]
        return None
    try:
        return nem_time.from_timestamp(getattr(bid, field))
    except (OverflowError, ValueError, OSError):
        return None


def _label(offer: bid_pb2.ProductOffer) -> str:
    direction = _DIRECTION_NAMES.get(offer.direction, f"direction {offer.direction}")
    return f"{offer.product!r}" + (f" {direction}" if direction else "")


def validate_bid(bid: bid_pb2.Bid, battery: common_pb2.BatterySpec, rules: MarketRules, *,
                 products: Sequence[str],
                 daily_band_prices: Mapping[tuple[str, int], Sequence[float]] | None = None,
                 ) -> list[Violation]:
    """Every rule (V0–V8, see the module docstring) that ``bid`` violates; an empty list when valid.

    ``battery`` gives the registered capacity (MW), storage (MWh), loss factors and minimum ramp rate
    (MW/min). ``products`` are the products tradable in the data (ENERGY and the FCAS names).
    ``daily_band_prices`` maps (product, direction) to the band prices in force for the trading day
    ($/MWh, FCAS $/MW/h), from the accepted daily bid; without it V4 only checks the entry type. Never
    raises: a defect in the checks themselves is reported as a V0 violation.
    """
    try:
        return _validate(bid, battery, rules, products, daily_band_prices)
    except Exception as exc:  # the contract is "never crashes"; a bid we cannot check is not valid
        return [Violation("V0", f"bid could not be checked: {type(exc).__name__}: {exc}")]


def _validate(bid: bid_pb2.Bid, battery: common_pb2.BatterySpec, rules: MarketRules,
              products: Sequence[str],
              daily_band_prices: Mapping[tuple[str, int], Sequence[float]] | None) -> list[Violation]:
    violations: list[Violation] = []

    def add(rule: str, message: str) -> None:
        violations.append(Violation(rule, message))

    day = _check_header(bid, battery, rules, add)
    offer_time = _safe_market_time(bid, "offer_time")
    after_close = (day is not None and offer_time is not None
                   and offer_time > nem_time.daily_bid_deadline(day, rules.daily_bid_close))
    if after_close and bid.entry_type == bid_pb2.ENTRY_TYPE_DAILY:
        add("V4", f"DAILY entry offered at {offer_time:%Y-%m-%d %H:%M}, after the daily bid close "
                  f"{rules.daily_bid_close:%H:%M} on D-1; it must be a REBID")
    check_prices_fixed = (after_close and bid.entry_type == bid_pb2.ENTRY_TYPE_REBID
                          and daily_band_prices is not None)
    cap = _price_cap(rules, day)
    allowed = set(products) | {ENERGY}
    seen: set[tuple[str, int]] = set()
    energy_sides: dict[int, tuple[bid_pb2.ProductOffer, _OfferArrays]] = {}
    for offer in bid.offers:
        label = _label(offer)
        is_energy = offer.product == ENERGY
        if offer.product not in allowed:
            add("V0", f"offer for product {offer.product!r}, which is not tradable "
                      f"(tradable: {', '.join(sorted(allowed))})")
        if is_energy and offer.direction not in (_GEN, _LOAD):
            add("V0", f"{label} offer has no GEN/LOAD direction")
        if not is_energy and offer.direction != common_pb2.DIRECTION_UNSPECIFIED:
            add("V0", f"{label} offer carries a direction; only ENERGY offers have one")
        key = (offer.product, int(offer.direction))
        if key in seen:
            add("V0", f"{label} offered more than once")
        seen.add(key)
        arrays = _offer_arrays(offer, rules.band_count)
        _check_band_prices(offer, label, is_energy, rules, cap, add)
        if check_prices_fixed and daily_band_prices is not None:
            _check_prices_unchanged(offer, label, daily_band_prices, add)
        _check_period_times(offer, label, arrays, day, rules, add)
        _check_period_quantities(label, arrays, battery, rules, add)
        if is_energy:
            _check_energy_periods(label, arrays, battery, bool(bid.ramp_rate_reason.strip()), add)
            if offer.direction in (_GEN, _LOAD) and offer.direction not in energy_sides:
                energy_sides[offer.direction] = (offer, arrays)
        else:
            _check_trapezium(label, arrays, add)
    _check_battery_sides(energy_sides, battery, rules, add)
    _check_rebid(bid, rules, offer_time, add)
    return violations


def _check_header(bid: bid_pb2.Bid, battery: common_pb2.BatterySpec, rules: MarketRules,
                  add: _Add) -> date | None:
    """V0 checks of the bid's own fields; returns its trading day when it can be read."""
    if not bid.unit_id:
        add("V0", "bid has no unit id")
    elif battery.unit_id and bid.unit_id != battery.unit_id:
        add("V0", f"bid is for unit {bid.unit_id!r}, not the battery {battery.unit_id!r}")
    day: date | None = None
    if not bid.trading_day:
        add("V0", "bid has no trading day")
    else:
        try:
            day = date.fromisoformat(bid.trading_day)
        except ValueError:
            add("V0", f"trading day {bid.trading_day!r} is not a YYYY-MM-DD date")
        if day is not None and not _EARLIEST_TRADING_DAY <= day <= _LATEST_TRADING_DAY:
            add("V0", f"trading day {day} is outside {_EARLIEST_TRADING_DAY}..{_LATEST_TRADING_DAY}")
            day = None
    first_interval = _safe_market_time(bid, "dispatch_interval")
    if first_interval is None:
        add("V0", "bid has no (readable) dispatch interval")
    elif day is not None and nem_time.trading_day(first_interval) != day:
        add("V0", f"dispatch interval {first_interval:%Y-%m-%d %H:%M} is not in trading day {day}")
    if bid.entry_type not in (bid_pb2.ENTRY_TYPE_DAILY, bid_pb2.ENTRY_TYPE_REBID):
        add("V0", "entry type is neither DAILY nor REBID")
    if _safe_market_time(bid, "offer_time") is None:
        add("V0", "bid has no (readable) offer time")
    if len(bid.offers) == 0:
        add("V0", "bid has no product offers")
    return day


def _price_cap(rules: MarketRules, day: date | None) -> float:
    """Market price cap ($/MWh) of the trading day; the highest configured cap if the day is unknown."""
    if not rules.price_caps:
        return math.inf
    if day is None:
        return max(c.cap for c in rules.price_caps)
    return rules.price_cap_for(day).cap


def _check_band_prices(offer: bid_pb2.ProductOffer, label: str, is_energy: bool, rules: MarketRules,
                       cap: float, add: _Add) -> None:
    """V1 (count, strictly increasing) and V2 (finite, within floor and cap) for the band prices."""
    prices = np.asarray(offer.band_price, dtype=np.float64)
    if len(prices) != rules.band_count:
        add("V1", f"{label} has {len(prices)} band prices, not {rules.band_count}")
    with np.errstate(all="ignore"):
        if len(prices) > 1 and not bool(np.all(np.diff(prices) > 0)):
            add("V1", f"{label} band prices are not strictly increasing: {list(prices)}")
        floor = rules.market_price_floor if is_energy else rules.fcas_price_floor
        unit = "$/MWh" if is_energy else "$/MW/h"
        if not bool(np.all(np.isfinite(prices))):
            add("V2", f"{label} band prices are not all finite numbers: {list(prices)}")
        outside = np.isfinite(prices) & ((prices < floor) | (prices > cap))
    if bool(np.any(outside)):
        add("V2", f"{label} band prices {list(prices[outside])} lie outside [{floor:g}, {cap:g}] {unit}")


def _check_prices_unchanged(offer: bid_pb2.ProductOffer, label: str,
                            daily_band_prices: Mapping[tuple[str, int], Sequence[float]], add: _Add) -> None:
    """V4: after the daily close a rebid keeps the day's band prices."""
    key = (offer.product, int(offer.direction))
    in_force = daily_band_prices.get(key)
    if in_force is None:
        add("V4", f"{label}: no daily band prices in force for the day; prices cannot be introduced "
                  "after the daily bid close")
        return
    fixed = np.asarray(in_force, dtype=np.float64)
    prices = np.asarray(offer.band_price, dtype=np.float64)
    if fixed.shape != prices.shape or not bool(np.array_equal(fixed, prices, equal_nan=False)):
        add("V4", f"{label} rebid after the daily bid close changes band prices from {list(fixed)} "
                  f"to {list(prices)}")


def _check_period_times(offer: bid_pb2.ProductOffer, label: str, arrays: _OfferArrays, day: date | None,
                        rules: MarketRules, add: _Add) -> None:
    """V0: every period has a dispatch interval on the 5-minute grid, inside the trading day, once."""
    if len(offer.periods) == 0:
        add("V0", f"{label} offer has no period offers")
        return
    interval_s = rules.interval_minutes * 60
    if not bool(np.all(arrays.has_time)):
        add("V0", f"{label}: period offer(s) without a dispatch interval {_where(arrays, ~arrays.has_time)}")
    off_grid = arrays.has_time & ((arrays.seconds % interval_s != 0) | (arrays.nanos != 0))
    if bool(np.any(off_grid)):
        add("V0", f"{label}: dispatch interval not on the {rules.interval_minutes}-minute grid "
                  f"{_where(arrays, off_grid)}")
    if day is not None:
        day_start = datetime.combine(day, rules.trading_day_start)
        first_s = nem_time.to_timestamp(day_start + timedelta(minutes=rules.interval_minutes)).seconds
        last_s = nem_time.to_timestamp(
            day_start + timedelta(minutes=rules.interval_minutes * rules.intervals_per_trading_day)).seconds
        outside = arrays.has_time & ((arrays.seconds < first_s) | (arrays.seconds > last_s))
        if bool(np.any(outside)):
            add("V0", f"{label}: period offer(s) outside trading day {day} {_where(arrays, outside)}")
    timed = arrays.seconds[arrays.has_time]
    unique, counts = np.unique(timed, return_counts=True)
    if bool(np.any(counts > 1)):
        repeated = ", ".join(_market_time_text(int(s)) for s in unique[counts > 1][:_LISTED_INTERVALS])
        add("V0", f"{label}: dispatch interval(s) offered more than once ({repeated})")


def _check_period_quantities(label: str, arrays: _OfferArrays, battery: common_pb2.BatterySpec,
                             rules: MarketRules, add: _Add) -> None:
    """V1 band availability counts; V3 availabilities finite, >= 0, MAXAVAIL <= registered capacity."""
    wrong_count = arrays.band_counts != rules.band_count
    if bool(np.any(wrong_count)):
        add("V1", f"{label}: band availabilities not exactly {rules.band_count} per period "
                  f"{_where(arrays, wrong_count)}")
    with np.errstate(all="ignore"):
        band_bad = arrays.band_avail_invalid
        max_bad = ~(np.isfinite(arrays.max_avail_mw) & (arrays.max_avail_mw >= 0))
        pasa_bad = ~(np.isfinite(arrays.pasa_avail_mw) & (arrays.pasa_avail_mw >= 0))
        over_capacity = np.isfinite(arrays.max_avail_mw) & (arrays.max_avail_mw > battery.power_mw)
    if bool(np.any(band_bad)):
        add("V3", f"{label}: band availabilities negative or not finite {_where(arrays, band_bad)}")
    if bool(np.any(max_bad)):
        add("V3", f"{label}: MAXAVAIL negative or not finite {_where(arrays, max_bad)}")
    if bool(np.any(pasa_bad)):
        add("V3", f"{label}: PASA availability negative or not finite {_where(arrays, pasa_bad)}")
    if bool(np.any(over_capacity)):
        add("V3", f"{label}: MAXAVAIL above the registered capacity {battery.power_mw:g} MW "
                  f"{_where(arrays, over_capacity)}")


def _check_energy_periods(label: str, arrays: _OfferArrays, battery: common_pb2.BatterySpec,
                          has_ramp_reason: bool, add: _Add) -> None:
    """V8 ramp rates (finite, >= 0, whole MW/min, >= registered minimum unless a reason is given) and
    V6 energy limit (finite, whole MWh, 0 <= limit <= registered storage)."""
    with np.errstate(all="ignore"):
        ramps = (("ramp up", arrays.ramp_up_mw_per_min), ("ramp down", arrays.ramp_down_mw_per_min))
        for name, rates in ramps:
            unusable = ~(np.isfinite(rates) & (rates >= 0))
            if bool(np.any(unusable)):
                add("V8", f"{label}: {name} rate negative or not finite {_where(arrays, unusable)}")
            fractional = np.isfinite(rates) & (rates != np.floor(rates))
            if bool(np.any(fractional)):
                add("V8", f"{label}: {name} rate not a whole number of MW/min {_where(arrays, fractional)}")
            too_slow = np.isfinite(rates) & (rates >= 0) & (rates < battery.min_ramp_rate_mw_per_min)
            if not has_ramp_reason and bool(np.any(too_slow)):
                add("V8", f"{label}: {name} rate below the registered minimum "
                          f"{battery.min_ramp_rate_mw_per_min:g} MW/min without a ramp rate reason "
                          f"{_where(arrays, too_slow)}")
        limit = arrays.energy_limit_mwh
        limit_bad = ~(np.isfinite(limit) & (limit >= 0) & (limit <= battery.energy_mwh))
        if bool(np.any(limit_bad)):
            add("V6", f"{label}: energy limit not within [0, {battery.energy_mwh:g}] MWh "
                      f"{_where(arrays, limit_bad)}")
        limit_fractional = np.isfinite(limit) & (limit != np.floor(limit))
        if bool(np.any(limit_fractional)):
            add("V6", f"{label}: energy limit not a whole number of MWh {_where(arrays, limit_fractional)}")


def _check_trapezium(label: str, arrays: _OfferArrays, add: _Add) -> None:
    """V7: ENABLEMENTMIN <= LOWBREAKPOINT <= HIGHBREAKPOINT <= ENABLEMENTMAX, all finite (MW)."""
    corners = np.vstack([arrays.enablement_min_mw, arrays.low_breakpoint_mw, arrays.high_breakpoint_mw,
                         arrays.enablement_max_mw])
    with np.errstate(all="ignore"):
        ordered = np.all(np.isfinite(corners), axis=0) & np.all(np.diff(corners, axis=0) >= 0, axis=0)
    if not bool(np.all(ordered)):
        add("V7", f"{label}: trapezium not ordered ENABLEMENTMIN <= LOWBREAKPOINT <= HIGHBREAKPOINT <= "
                  f"ENABLEMENTMAX (or not finite) {_where(arrays, ~ordered)}")


def _effective_price_extreme(offer: bid_pb2.ProductOffer, arrays: _OfferArrays, highest: bool) -> FloatArray:
    """Per period, the highest (LOAD) or lowest (GEN) price of the bands with MW within MAXAVAIL.

    A band is effective when its own MW > 0 and the MW of the cheaper bands before it < MAXAVAIL.
    Periods without an effective band get -inf (highest) or +inf (lowest).
    """
    assert arrays.band_avail_mw is not None
    bands = arrays.band_avail_mw
    prices = np.asarray(offer.band_price, dtype=np.float64)
    with np.errstate(all="ignore"):
        before = np.cumsum(bands, axis=1) - bands
        effective = (bands > 0) & (before < arrays.max_avail_mw[:, None])
        if highest:
            extreme: FloatArray = np.where(effective, prices[None, :], -np.inf).max(axis=1)
        else:
            extreme = np.where(effective, prices[None, :], np.inf).min(axis=1)
    return extreme


def _convexity_checkable(offer: bid_pb2.ProductOffer, arrays: _OfferArrays, rules: MarketRules) -> bool:
    prices = np.asarray(offer.band_price, dtype=np.float64)
    return (arrays.band_avail_mw is not None and len(prices) == rules.band_count
            and bool(np.all(np.isfinite(prices))))


def _check_battery_sides(energy_sides: Mapping[int, tuple[bid_pb2.ProductOffer, _OfferArrays]],
                         battery: common_pb2.BatterySpec, rules: MarketRules, add: _Add) -> None:
    """V6: ENERGY has both GEN and LOAD offers, and the bid is convex in every interval."""
    missing = [name for direction, name in ((_GEN, "GEN"), (_LOAD, "LOAD")) if direction not in energy_sides]
    if missing:
        add("V6", f"battery {ENERGY} bid lacks the {' and '.join(missing)} side")
        return
    gen_offer, gen = energy_sides[_GEN]
    load_offer, load = energy_sides[_LOAD]
    if not (_convexity_checkable(gen_offer, gen, rules) and _convexity_checkable(load_offer, load, rules)):
        return  # malformed bands are reported under V1/V2; convexity cannot be judged on them
    if not (math.isfinite(battery.mlf_gen) and battery.mlf_gen > 0
            and math.isfinite(battery.mlf_load) and battery.mlf_load > 0):
        add("V6", f"convexity cannot be checked: loss factors gen {battery.mlf_gen} / load "
                  f"{battery.mlf_load} are not positive numbers")
        return
    gen_idx = np.flatnonzero(gen.has_time)
    load_idx = np.flatnonzero(load.has_time)
    _, gen_pos, load_pos = np.intersect1d(gen.seconds[gen_idx], load.seconds[load_idx], return_indices=True)
    gen_rows = gen_idx[gen_pos]
    load_rows = load_idx[load_pos]
    lowest_gen = _effective_price_extreme(gen_offer, gen, highest=False)[gen_rows] / battery.mlf_gen
    highest_load = _effective_price_extreme(load_offer, load, highest=True)[load_rows] / battery.mlf_load
    failing_rows = np.isfinite(lowest_gen) & np.isfinite(highest_load) & (highest_load >= lowest_gen)
    if bool(np.any(failing_rows)):
        failing = np.zeros(len(gen.has_time), dtype=np.bool_)
        failing[gen_rows[failing_rows]] = True
        first = int(np.flatnonzero(failing_rows)[0])
        add("V6", f"{ENERGY} bid not convex {_where(gen, failing)}: highest effective LOAD "
                  f"price / MLF {highest_load[first]:g} is not below lowest effective GEN price / MLF "
                  f"{lowest_gen[first]:g}")


def _check_rebid(bid: bid_pb2.Bid, rules: MarketRules, offer_time: datetime | None, add: _Add) -> None:
    """V5: a REBID has a brief explanation and the time of the event it responds to."""
    if bid.entry_type != bid_pb2.ENTRY_TYPE_REBID:
        return
    explanation = bid.rebid_explanation.strip()
    if not explanation:
        add("V5", "REBID without an explanation")
    elif len(bid.rebid_explanation) > rules.rebid_explanation_max_chars:
        add("V5", f"REBID explanation has {len(bid.rebid_explanation)} characters, more than "
                  f"{rules.rebid_explanation_max_chars}")
    event_time = _safe_market_time(bid, "event_time")
    if event_time is None:
        add("V5", "REBID without a (readable) event time")
    elif offer_time is not None and event_time > offer_time:
        add("V5", f"REBID event time {event_time:%Y-%m-%d %H:%M:%S} is after its offer time "
                  f"{offer_time:%Y-%m-%d %H:%M:%S}")
