"""Bid validation: the rules V1–V8 of shared/NEM.md ("Validation") as AEMO applies them since the
bidirectional-unit rules of 3 June 2024, plus V0 for structure.

A bid that fails any rule never leaves the platform; :func:`validate_bid` returns every violated rule
(empty list = valid) and never raises, whatever the bid contains (NaN, inf, huge numbers, missing
fields, unknown products, random strings). The rules that depend on the unit read its registration
(:class:`algorithms.market.registration.UnitRegistration`; a battery spec is a bidirectional unit): the
bidirectional-unit (BDU) rules apply because the registration says so.

Rules (each :class:`Violation` names one of them, the bid field at fault and the product / direction /
intervals concerned):

* **V0 structure** — unit id missing or not the registered unit's; trading day missing or unparsable; bid
  dispatch interval missing or in another trading day; entry type or offer time missing; reference id
  longer than AEMO's 100 characters; no offers; an offer for a product not tradable in the data; an offer
  whose direction the registration does not allow (a BDU's ENERGY and regulation FCAS offers need GEN or
  LOAD, its contingency FCAS offers none or BIDIRECTIONAL; a generator's offers GEN or none, a load's LOAD
  or none); the same product/direction offered twice; an offer without periods; a period without a dispatch
  interval, off the 5-minute grid, outside the trading day, or given twice.
* **V1** exactly ``rules.band_count`` band prices per offer, strictly increasing, and exactly
  ``band_count`` band availabilities per period.
* **V2** band prices finite and within the limits of the trading day (market price floor and cap from
  :meth:`settings.MarketRules.price_cap_for`: AEMO's MARKET_PRICE_THRESHOLDS where given, else the configured
  financial year; a day no source covers fails V2). ENERGY prices are at the unit's connection point, so
  their limits are the floor and cap times the loss factor of the offer's side (AEMO's MINIMUM_ENERGY_PRICE /
  MAXIMUM_ENERGY_PRICE, $/MWh, to the cent); FCAS prices ($/MW/h) lie in [FCAS price floor, cap].
* **V3** availabilities finite and ≥ 0 (bands, MAXAVAIL, PASA, FIXEDLOAD, daily energy constraint, fast-start
  profile); MAXAVAIL and FIXEDLOAD ≤ the registered maximum capacity (MW) when it is known.
* **V4** a REBID offered after the daily bid close (``rules.daily_bid_close`` on D−1) keeps the band
  prices in force for the day (``daily_band_prices``), and a DAILY entry cannot be offered after it.
* **V5** a REBID carries a non-empty explanation of at most ``rules.rebid_explanation_max_chars``
  characters and an event time not after the offer time; where given, the times it became aware of the
  event and decided to rebid lie in order between the event and the offer time, and the category is one
  letter.
* **V6** bidirectional unit: ENERGY offered in both directions (GEN and LOAD); convexity in every interval
  (highest effective LOAD price / MLF_load < lowest effective GEN price / MLF_gen, a band being effective
  when it has MW within MAXAVAIL); energy limit finite, whole MWh, 0 ≤ limit ≤ registered storage (MWh), and
  where both sides give one the GEN side's (the minimum energy in storage) below the LOAD side's (the
  maximum). Any other unit: no energy limit.
* **V7** FCAS trapezium finite and ordered on net output (:mod:`algorithms.market.trapezium`: a LOAD
  offer's corners are mirrored); a BDU's GEN regulation offer at net output ≥ 0, its LOAD offer ≤ 0; a unit
  that is not bidirectional at ≥ 0 MW.
* **V8** ENERGY ramp rates finite, ≥ 0 and whole MW/min; below the registered minimum (up and down apart)
  only with a reason: ``ramp_rate_reason``, or the bid's explanation (AEMO's format carries the reason for
  every rebid and inflexibility in that one text).

Every number is checked by the rule it belongs to, so a NaN band price fails V2, a NaN MAXAVAIL V3.
Period checks are vectorised with numpy over the (up to 288) periods of each offer; a violation
reports how many intervals fail and the first few of them (interval-ending AEST).

``withheld``: fields the bid's source does not carry. AEMO's public bid tables (BIDDAYOFFER_D /
BIDPEROFFER_D) publish neither the rebid event, aware and decision times, category and reference id, nor
the explanation of a rebid that is not the day's first offer; the checks that need only such a field are
not made (they cannot fail or pass on data that is not there).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
import numpy.typing as npt

from algorithms.common import nem_time
from algorithms.common.products import ENERGY, is_regulation
from algorithms.market.bid_columns import ColumnarBid, bid_of, period_columns
from algorithms.market.bid_columns import PeriodColumns as _OfferArrays
from algorithms.market.registration import UnitKind, UnitRegistration, as_registration
from algorithms.market.trapezium import net_output_corners
from settings import MarketRules, PriceCap, PriceLimitsUnknownError
from vpp.v1 import bid_pb2, common_pb2

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_GEN = common_pb2.DIRECTION_GEN
_LOAD = common_pb2.DIRECTION_LOAD
_BOTH = common_pb2.DIRECTION_BIDIRECTIONAL
_NONE = common_pb2.DIRECTION_UNSPECIFIED
_DIRECTION_NAMES = {_NONE: "", _GEN: "GEN", _LOAD: "LOAD", _BOTH: "BIDIRECTIONAL"}
# Trading days a bid may be for (the NEM started in 1998; anything far outside is a corrupt field).
_EARLIEST_TRADING_DAY = date(1998, 12, 13)
_LATEST_TRADING_DAY = date(2200, 1, 1)
# How many failing intervals a message lists by time.
_LISTED_INTERVALS = 3
# AEMO's limits on text fields (MMS column widths).
_REFERENCE_ID_MAX_CHARS = 100
# Band prices are AEMO NUMBER(9,2): the price limits are compared to the cent.
_PRICE_DECIMALS = 2
_PRICE_TOLERANCE = 1e-6

# Fields of a Bid whose checks are skipped when its source withholds them (see the module docstring).
WITHHOLDABLE_FIELDS = frozenset({"rebid_explanation", "event_time", "aware_time", "decision_time",
                                 "rebid_category", "reference_id"})


@dataclass(frozen=True)
class Violation:
    """One violated bid rule: ``rule`` is "V0".."V8", ``message`` names what and where, ``field`` the bid
    field at fault (the protobuf field name, e.g. ``max_avail_mw``; empty for the bid as a whole)."""

    rule: str
    message: str
    field: str = ""

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


_Add = Callable[[str, str, str], None]


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


def entry_type_at(trading_day: date, offer_time: datetime,
                  daily_bid_close: time) -> bid_pb2.EntryType.ValueType:
    """The entry type of a bid for ``trading_day`` offered at ``offer_time`` (market time): DAILY up to the
    daily bid close (``daily_bid_close`` on D-1), REBID after it (rule V4)."""
    deadline = nem_time.daily_bid_deadline(trading_day, daily_bid_close)
    return bid_pb2.ENTRY_TYPE_DAILY if offer_time <= deadline else bid_pb2.ENTRY_TYPE_REBID


def validate_bid(bid: bid_pb2.Bid | ColumnarBid, unit: UnitRegistration | common_pb2.BatterySpec, rules: MarketRules, *,
                 products: Sequence[str],
                 daily_band_prices: Mapping[tuple[str, int], Sequence[float]] | None = None,
                 withheld: Collection[str] = (),
                 ) -> list[Violation]:
    """Every rule (V0–V8, see the module docstring) that ``bid`` violates; an empty list when valid.

    ``unit`` is the unit's registration (kind, registered capacity MW and storage MWh, loss factors,
    minimum ramp rates MW/min); a battery spec is read as a bidirectional unit. ``products`` are the
    products tradable in the data (ENERGY and the FCAS names). ``daily_band_prices`` maps (product,
    direction) to the band prices in force for the trading day ($/MWh, FCAS $/MW/h), from the accepted daily
    bid; without it V4 only checks the entry type. ``withheld`` names fields the bid's source does not carry
    (among :data:`WITHHOLDABLE_FIELDS`); their checks are not made. A
    :class:`~algorithms.market.bid_columns.ColumnarBid` is checked on its columns (the same verdict as its
    protobuf's, without reading each period offer). Never raises: a defect in the checks themselves is
    reported as a V0 violation.
    """
    try:
        columns = bid.offer_periods if isinstance(bid, ColumnarBid) else None
        return _validate(bid_of(bid), as_registration(unit), rules, products, daily_band_prices,
                         frozenset(withheld) & WITHHOLDABLE_FIELDS, columns)
    except Exception as exc:  # the contract is "never crashes"; a bid we cannot check is not valid
        return [Violation("V0", f"bid could not be checked: {type(exc).__name__}: {exc}")]


def _validate(bid: bid_pb2.Bid, unit: UnitRegistration, rules: MarketRules, products: Sequence[str],
              daily_band_prices: Mapping[tuple[str, int], Sequence[float]] | None,
              withheld: frozenset[str], columns: Sequence[_OfferArrays] | None = None) -> list[Violation]:
    violations: list[Violation] = []

    def add(rule: str, field: str, message: str) -> None:
        violations.append(Violation(rule, message, field))

    day = _check_header(bid, unit, rules, withheld, add)
    offer_time = _safe_market_time(bid, "offer_time")
    after_close = (day is not None and offer_time is not None
                   and offer_time > nem_time.daily_bid_deadline(day, rules.daily_bid_close))
    if after_close and bid.entry_type == bid_pb2.ENTRY_TYPE_DAILY:
        add("V4", "entry_type", f"DAILY entry offered at {offer_time:%Y-%m-%d %H:%M}, after the daily bid "
                                f"close {rules.daily_bid_close:%H:%M} on D-1; it must be a REBID")
    check_prices_fixed = (after_close and bid.entry_type == bid_pb2.ENTRY_TYPE_REBID
                          and daily_band_prices is not None)
    limits = _price_limits(rules, day, add)
    allowed = set(products) | {ENERGY}
    seen: set[tuple[str, int]] = set()
    energy_sides: dict[int, tuple[bid_pb2.ProductOffer, _OfferArrays]] = {}
    explanation_known = "rebid_explanation" not in withheld
    has_ramp_reason = bool(bid.ramp_rate_reason.strip()) or (explanation_known
                                                             and bool(bid.rebid_explanation.strip()))
    for index, offer in enumerate(bid.offers):
        label = _label(offer)
        is_energy = offer.product == ENERGY
        if offer.product not in allowed:
            add("V0", "product", f"offer for product {offer.product!r}, which is not tradable "
                                 f"(tradable: {', '.join(sorted(allowed))})")
        _check_direction(offer, label, is_energy, unit, add)
        key = (offer.product, _side(offer.direction, unit))
        if key in seen:
            add("V0", "product", f"{label} offered more than once")
        seen.add(key)
        arrays = columns[index] if columns is not None else period_columns(offer, rules.band_count)
        _check_band_prices(offer, label, is_energy, _side_mlf(offer.direction, unit), rules, limits, add)
        if check_prices_fixed and daily_band_prices is not None:
            _check_prices_unchanged(offer, label, daily_band_prices, add)
        _check_period_times(offer, label, arrays, day, rules, add)
        _check_period_quantities(label, arrays, unit, rules, add)
        if is_energy:
            _check_energy_offer(offer, label, arrays, unit, has_ramp_reason or not explanation_known, add)
            if offer.direction in (_GEN, _LOAD) and offer.direction not in energy_sides:
                energy_sides[offer.direction] = (offer, arrays)
        else:
            _check_trapezium(offer, label, arrays, unit, add)
    if unit.bidirectional:
        _check_bidirectional_sides(energy_sides, unit, rules, add)
    _check_rebid(bid, rules, offer_time, withheld, add)
    return violations


def _check_header(bid: bid_pb2.Bid, unit: UnitRegistration, rules: MarketRules, withheld: frozenset[str],
                  add: _Add) -> date | None:
    """V0 checks of the bid's own fields; returns its trading day when it can be read."""
    if not bid.unit_id:
        add("V0", "unit_id", "bid has no unit id")
    elif unit.unit_id and bid.unit_id != unit.unit_id:
        add("V0", "unit_id", f"bid is for unit {bid.unit_id!r}, not the registered unit {unit.unit_id!r}")
    day: date | None = None
    if not bid.trading_day:
        add("V0", "trading_day", "bid has no trading day")
    else:
        try:
            day = date.fromisoformat(bid.trading_day)
        except ValueError:
            add("V0", "trading_day", f"trading day {bid.trading_day!r} is not a YYYY-MM-DD date")
        if day is not None and not _EARLIEST_TRADING_DAY <= day <= _LATEST_TRADING_DAY:
            add("V0", "trading_day", f"trading day {day} is outside {_EARLIEST_TRADING_DAY}.."
                                     f"{_LATEST_TRADING_DAY}")
            day = None
    first_interval = _safe_market_time(bid, "dispatch_interval")
    if first_interval is None:
        add("V0", "dispatch_interval", "bid has no (readable) dispatch interval")
    elif day is not None and nem_time.trading_day(first_interval) != day:
        add("V0", "dispatch_interval",
            f"dispatch interval {first_interval:%Y-%m-%d %H:%M} is not in trading day {day}")
    if bid.entry_type not in (bid_pb2.ENTRY_TYPE_DAILY, bid_pb2.ENTRY_TYPE_REBID):
        add("V0", "entry_type", "entry type is neither DAILY nor REBID")
    if _safe_market_time(bid, "offer_time") is None:
        add("V0", "offer_time", "bid has no (readable) offer time")
    if "reference_id" not in withheld and len(bid.reference_id) > _REFERENCE_ID_MAX_CHARS:
        add("V0", "reference_id", f"reference id has {len(bid.reference_id)} characters, more than AEMO's "
                                  f"{_REFERENCE_ID_MAX_CHARS}")
    if len(bid.offers) == 0:
        add("V0", "offers", "bid has no product offers")
    return day


def _side(direction: int, unit: UnitRegistration) -> int:
    """The side an offer is for, for telling duplicates apart: a generator's or load's offers are all on
    its one side, a BDU's contingency offer (no direction or BIDIRECTIONAL) on both."""
    if unit.kind is UnitKind.GENERATOR and direction in (_NONE, _GEN):
        return _GEN
    if unit.kind is UnitKind.LOAD and direction in (_NONE, _LOAD):
        return _LOAD
    if unit.bidirectional and direction in (_NONE, _BOTH):
        return _BOTH
    return direction


def _side_mlf(direction: int, unit: UnitRegistration) -> float:
    """The loss factor of an offer's side (1 when the registration's is not a positive number)."""
    consuming = direction == _LOAD or (direction == _NONE and unit.kind is UnitKind.LOAD)
    mlf = unit.mlf_load if consuming else unit.mlf_gen
    return mlf if math.isfinite(mlf) and mlf > 0 else 1.0


def _check_direction(offer: bid_pb2.ProductOffer, label: str, is_energy: bool, unit: UnitRegistration,
                     add: _Add) -> None:
    """V0: the offer's direction is one the unit's registration allows (see the module docstring)."""
    direction = offer.direction
    if direction not in _DIRECTION_NAMES:
        add("V0", "direction", f"{label} offer has an unknown direction")
        return
    if unit.bidirectional:
        if is_energy or is_regulation(offer.product):
            if direction not in (_GEN, _LOAD):
                kind = ENERGY if is_energy else "regulation FCAS"
                add("V0", "direction", f"{label}: a bidirectional unit's {kind} offer needs a GEN/LOAD "
                                       "direction")
        elif direction not in (_NONE, _BOTH):
            add("V0", "direction", f"{label}: a bidirectional unit's contingency FCAS offer is one offer for "
                                   "both directions; it carries no GEN/LOAD direction")
        return
    own = _GEN if unit.kind is UnitKind.GENERATOR else _LOAD
    if direction not in (_NONE, own):
        add("V0", "direction", f"{label}: a {unit.kind.value.lower()} offers {_DIRECTION_NAMES[own]} only; "
                               f"{_DIRECTION_NAMES[direction]} is for bidirectional units")


@dataclass(frozen=True)
class _PriceLimits:
    """The price limits of the trading day ($/MWh); None when the day is unknown (no limit applies)."""

    cap: float
    floor: float


def _price_limits(rules: MarketRules, day: date | None, add: _Add) -> _PriceLimits | None:
    """The trading day's cap and floor (:meth:`MarketRules.price_cap_for`); V2 when no source covers it."""
    if day is None:
        return None
    try:
        entry: PriceCap = rules.price_cap_for(day)
    except PriceLimitsUnknownError as exc:
        add("V2", "band_price", f"band prices cannot be checked: {exc}")
        return None
    floor = rules.market_price_floor if entry.market_price_floor is None else entry.market_price_floor
    return _PriceLimits(cap=entry.cap, floor=floor)


def _check_band_prices(offer: bid_pb2.ProductOffer, label: str, is_energy: bool, mlf: float, rules: MarketRules,
                       limits: _PriceLimits | None, add: _Add) -> None:
    """V1 (count, strictly increasing) and V2 (finite, within the day's limits) for the band prices."""
    prices = np.asarray(offer.band_price, dtype=np.float64)
    if len(prices) != rules.band_count:
        add("V1", "band_price", f"{label} has {len(prices)} band prices, not {rules.band_count}")
    with np.errstate(all="ignore"):
        if len(prices) > 1 and not bool(np.all(np.diff(prices) > 0)):
            add("V1", "band_price", f"{label} band prices are not strictly increasing: {prices.tolist()}")
        if not bool(np.all(np.isfinite(prices))):
            add("V2", "band_price", f"{label} band prices are not all finite numbers: {prices.tolist()}")
        if limits is None:
            return
        if is_energy:
            floor = round(limits.floor * mlf, _PRICE_DECIMALS)
            cap = round(limits.cap * mlf, _PRICE_DECIMALS)
            unit_text = "$/MWh" + (f" (floor and cap x loss factor {mlf:g})" if mlf != 1.0 else "")
        else:
            floor, cap, unit_text = rules.fcas_price_floor, limits.cap, "$/MW/h"
        outside = np.isfinite(prices) & ((prices < floor - _PRICE_TOLERANCE) | (prices > cap + _PRICE_TOLERANCE))
    if bool(np.any(outside)):
        add("V2", "band_price", f"{label} band prices {prices[outside].tolist()} lie outside [{floor:g}, {cap:g}] "
                                f"{unit_text}")


def _check_prices_unchanged(offer: bid_pb2.ProductOffer, label: str,
                            daily_band_prices: Mapping[tuple[str, int], Sequence[float]], add: _Add) -> None:
    """V4: after the daily close a rebid keeps the day's band prices."""
    key = (offer.product, int(offer.direction))
    in_force = daily_band_prices.get(key)
    if in_force is None:
        add("V4", "band_price", f"{label}: no daily band prices in force for the day; prices cannot be "
                                "introduced after the daily bid close")
        return
    fixed = np.asarray(in_force, dtype=np.float64)
    prices = np.asarray(offer.band_price, dtype=np.float64)
    if fixed.shape != prices.shape or not bool(np.array_equal(fixed, prices, equal_nan=False)):
        add("V4", "band_price", f"{label} rebid after the daily bid close changes band prices from "
                                f"{fixed.tolist()} to {prices.tolist()}")


def _check_period_times(offer: bid_pb2.ProductOffer, label: str, arrays: _OfferArrays, day: date | None,
                        rules: MarketRules, add: _Add) -> None:
    """V0: every period has a dispatch interval on the 5-minute grid, inside the trading day, once."""
    if len(offer.periods) == 0:
        add("V0", "periods", f"{label} offer has no period offers")
        return
    field = "periods.dispatch_interval"
    interval_s = rules.interval_minutes * 60
    if not bool(np.all(arrays.has_time)):
        add("V0", field, f"{label}: period offer(s) without a dispatch interval {_where(arrays, ~arrays.has_time)}")
    off_grid = arrays.has_time & ((arrays.seconds % interval_s != 0) | (arrays.nanos != 0))
    if bool(np.any(off_grid)):
        add("V0", field, f"{label}: dispatch interval not on the {rules.interval_minutes}-minute grid "
                         f"{_where(arrays, off_grid)}")
    if day is not None:
        first_s, last_s = _trading_day_seconds(day, rules.trading_day_start, rules.interval_minutes,
                                               rules.intervals_per_trading_day)
        outside = arrays.has_time & ((arrays.seconds < first_s) | (arrays.seconds > last_s))
        if bool(np.any(outside)):
            add("V0", field, f"{label}: period offer(s) outside trading day {day} {_where(arrays, outside)}")
    timed = arrays.seconds[arrays.has_time]
    if timed.size < 2 or bool((timed[1:] > timed[:-1]).all()):  # strictly increasing: each interval once
        return
    unique, counts = np.unique(timed, return_counts=True)
    if bool(np.any(counts > 1)):
        repeated = ", ".join(_market_time_text(int(s)) for s in unique[counts > 1][:_LISTED_INTERVALS])
        add("V0", field, f"{label}: dispatch interval(s) offered more than once ({repeated})")


@functools.lru_cache(maxsize=16)
def _trading_day_seconds(day: date, trading_day_start: time, interval_minutes: int,
                         intervals_per_trading_day: int) -> tuple[int, int]:
    """UTC epoch seconds of the first and the last interval end (AEST) of trading day ``day``."""
    day_start = datetime.combine(day, trading_day_start)
    first = nem_time.to_timestamp(day_start + timedelta(minutes=interval_minutes)).seconds
    last = nem_time.to_timestamp(day_start + timedelta(minutes=interval_minutes * intervals_per_trading_day)).seconds
    return first, last


def _check_period_quantities(label: str, arrays: _OfferArrays, unit: UnitRegistration, rules: MarketRules,
                             add: _Add) -> None:
    """V1 band availability counts; V3 availabilities finite, >= 0, MAXAVAIL <= registered capacity."""
    wrong_count = arrays.band_counts != rules.band_count
    if bool(np.any(wrong_count)):
        add("V1", "band_avail_mw", f"{label}: band availabilities not exactly {rules.band_count} per period "
                                   f"{_where(arrays, wrong_count)}")
    with np.errstate(all="ignore"):
        band_bad = arrays.band_avail_invalid
        max_bad = ~(np.isfinite(arrays.max_avail_mw) & (arrays.max_avail_mw >= 0))
        pasa_bad = ~(np.isfinite(arrays.pasa_avail_mw) & (arrays.pasa_avail_mw >= 0))
        capacity = unit.max_capacity_mw
        over_capacity = (np.isfinite(arrays.max_avail_mw) & (arrays.max_avail_mw > capacity)
                         if capacity is not None else np.zeros_like(max_bad))
    if bool(np.any(band_bad)):
        add("V3", "band_avail_mw", f"{label}: band availabilities negative or not finite "
                                   f"{_where(arrays, band_bad)}")
    if bool(np.any(max_bad)):
        add("V3", "max_avail_mw", f"{label}: MAXAVAIL negative or not finite {_where(arrays, max_bad)}")
    if bool(np.any(pasa_bad)):
        add("V3", "pasa_avail_mw", f"{label}: PASA availability negative or not finite {_where(arrays, pasa_bad)}")
    if bool(np.any(over_capacity)):
        add("V3", "max_avail_mw", f"{label}: MAXAVAIL above the registered capacity {capacity:g} MW "
                                  f"{_where(arrays, over_capacity)}")


def _check_energy_offer(offer: bid_pb2.ProductOffer, label: str, arrays: _OfferArrays, unit: UnitRegistration,
                        has_ramp_reason: bool, add: _Add) -> None:
    """V3 fixed load, daily energy constraint and fast-start profile; V8 ramp rates (finite, >= 0, whole
    MW/min, >= the registered minimum unless a reason is given); V6 energy limit."""
    with np.errstate(all="ignore"):
        fixed = arrays.fixed_load_mw
        fixed_bad = ~(np.isfinite(fixed) & (fixed >= 0))
        if unit.max_capacity_mw is not None:
            fixed_bad |= np.isfinite(fixed) & (fixed > unit.max_capacity_mw)
        if bool(np.any(fixed_bad)):
            add("V3", "fixed_load_mw", f"{label}: FIXEDLOAD negative, not finite or above the registered "
                                       f"capacity {_where(arrays, fixed_bad)}")
        day_values = [("daily_energy_constraint_mwh", "daily energy constraint",
                       offer.daily_energy_constraint_mwh)]
        profile = offer.fast_start_profile
        day_values += [(f"fast_start_profile.{name}", f"fast-start {name}", getattr(profile, name))
                       for name in ("minimum_load_mw", "t1_minutes", "t2_minutes", "t3_minutes", "t4_minutes")]
        for field, name, value in day_values:
            if not (math.isfinite(value) and value >= 0):
                add("V3", field, f"{label}: {name} {value} is negative or not finite")
        minima = (("ramp up", "ramp_up_rate_mw_per_min", arrays.ramp_up_mw_per_min, unit.min_ramp_up_mw_per_min),
                  ("ramp down", "ramp_down_rate_mw_per_min", arrays.ramp_down_mw_per_min,
                   unit.min_ramp_down_mw_per_min))
        for name, field, rates, minimum in minima:
            unusable = ~(np.isfinite(rates) & (rates >= 0))
            if bool(np.any(unusable)):
                add("V8", field, f"{label}: {name} rate negative or not finite {_where(arrays, unusable)}")
            fractional = np.isfinite(rates) & (rates != np.floor(rates))
            if bool(np.any(fractional)):
                add("V8", field, f"{label}: {name} rate not a whole number of MW/min {_where(arrays, fractional)}")
            if minimum is None or has_ramp_reason:
                continue
            too_slow = np.isfinite(rates) & (rates >= 0) & (rates < minimum)
            if bool(np.any(too_slow)):
                add("V8", field, f"{label}: {name} rate below the registered minimum {minimum:g} MW/min "
                                 f"without a reason (a ramp rate reason or the bid's explanation) "
                                 f"{_where(arrays, too_slow)}")
        _check_energy_limit(label, arrays, unit, add)


def _check_energy_limit(label: str, arrays: _OfferArrays, unit: UnitRegistration, add: _Add) -> None:
    """V6: energy limit finite, whole MWh, within [0, registered storage]; none for other units."""
    field = "energy_limit_mwh"
    limit = arrays.energy_limit_mwh
    with np.errstate(all="ignore"):
        if not unit.bidirectional:
            given = ~(np.isfinite(limit) & (limit == 0))
            if bool(np.any(given)):
                add("V6", field, f"{label}: an energy limit is for bidirectional units only "
                                 f"{_where(arrays, given)}")
            return
        storage = unit.storage_mwh if unit.storage_mwh is not None else math.inf
        limit_bad = ~(np.isfinite(limit) & (limit >= 0) & (limit <= storage))
        if bool(np.any(limit_bad)):
            add("V6", field, f"{label}: energy limit not within [0, {storage:g}] MWh {_where(arrays, limit_bad)}")
        limit_fractional = np.isfinite(limit) & (limit != np.floor(limit))
        if bool(np.any(limit_fractional)):
            add("V6", field, f"{label}: energy limit not a whole number of MWh {_where(arrays, limit_fractional)}")


def _check_trapezium(offer: bid_pb2.ProductOffer, label: str, arrays: _OfferArrays, unit: UnitRegistration,
                     add: _Add) -> None:
    """V7: the trapezium is finite and ordered on net output, on the side the offer is for."""
    corners = net_output_corners(offer.direction, arrays.enablement_min_mw, arrays.low_breakpoint_mw,
                                 arrays.high_breakpoint_mw, arrays.enablement_max_mw)
    with np.errstate(all="ignore"):
        ordered = np.all(np.isfinite(corners), axis=1) & np.all(np.diff(corners, axis=1) >= 0, axis=1)
        if not bool(np.all(ordered)):
            order = ("0 >= ENABLEMENTMIN >= LOWBREAKPOINT >= HIGHBREAKPOINT >= ENABLEMENTMAX"
                     if offer.direction == _LOAD else
                     "ENABLEMENTMIN <= LOWBREAKPOINT <= HIGHBREAKPOINT <= ENABLEMENTMAX")
            add("V7", "trapezium", f"{label}: trapezium not ordered {order} (or not finite) "
                                   f"{_where(arrays, ~ordered)}")
        finite: BoolArray = np.all(np.isfinite(corners), axis=1)
        if unit.bidirectional and offer.direction == _GEN:
            wrong_side: BoolArray = finite & np.any(corners < 0, axis=1)
            side = "a GEN offer's trapezium lies at net output >= 0 MW"
        elif unit.bidirectional and offer.direction == _LOAD:
            wrong_side = finite & np.any(corners > 0, axis=1)
            side = "a LOAD offer's trapezium lies at net output <= 0 MW (negative figures)"
        elif not unit.bidirectional:
            wrong_side = finite & np.any(corners < 0, axis=1)
            side = "only a bidirectional unit's trapezium may reach below 0 MW"
        else:
            return
    if bool(np.any(wrong_side)):
        add("V7", "trapezium", f"{label}: {side} {_where(arrays, wrong_side)}")


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


def _matched_rows(gen: _OfferArrays, load: _OfferArrays) -> tuple[IntArray, IntArray]:
    """Rows of the GEN and LOAD offers for the same dispatch intervals."""
    gen_idx = np.flatnonzero(gen.has_time)
    load_idx = np.flatnonzero(load.has_time)
    _, gen_pos, load_pos = np.intersect1d(gen.seconds[gen_idx], load.seconds[load_idx], return_indices=True)
    return gen_idx[gen_pos], load_idx[load_pos]


def _check_bidirectional_sides(energy_sides: Mapping[int, tuple[bid_pb2.ProductOffer, _OfferArrays]],
                               unit: UnitRegistration, rules: MarketRules, add: _Add) -> None:
    """V6: ENERGY has both GEN and LOAD offers, the GEN side's energy limit is below the LOAD side's, and the
    bid is convex in every interval."""
    missing = [name for direction, name in ((_GEN, "GEN"), (_LOAD, "LOAD")) if direction not in energy_sides]
    if missing:
        add("V6", "direction", f"bidirectional unit's {ENERGY} bid lacks the "
                               f"{' and '.join(missing)} side")
        return
    gen_offer, gen = energy_sides[_GEN]
    load_offer, load = energy_sides[_LOAD]
    gen_rows, load_rows = _matched_rows(gen, load)
    with np.errstate(all="ignore"):
        minimum, maximum = gen.energy_limit_mwh[gen_rows], load.energy_limit_mwh[load_rows]
        crossed = (np.isfinite(minimum) & np.isfinite(maximum) & (minimum > 0) & (maximum > 0)
                   & (minimum >= maximum))
    if bool(np.any(crossed)):
        failing = np.zeros(len(gen.has_time), dtype=np.bool_)
        failing[gen_rows[crossed]] = True
        add("V6", "energy_limit_mwh", f"the GEN side's energy limit (minimum energy in storage) is not below the "
                                      f"LOAD side's (maximum) {_where(gen, failing)}")
    if not (_convexity_checkable(gen_offer, gen, rules) and _convexity_checkable(load_offer, load, rules)):
        return  # malformed bands are reported under V1/V2; convexity cannot be judged on them
    if not (math.isfinite(unit.mlf_gen) and unit.mlf_gen > 0
            and math.isfinite(unit.mlf_load) and unit.mlf_load > 0):
        add("V6", "band_price", f"convexity cannot be checked: loss factors gen {unit.mlf_gen} / load "
                                f"{unit.mlf_load} are not positive numbers")
        return
    lowest_gen = _effective_price_extreme(gen_offer, gen, highest=False)[gen_rows] / unit.mlf_gen
    highest_load = _effective_price_extreme(load_offer, load, highest=True)[load_rows] / unit.mlf_load
    failing_rows = np.isfinite(lowest_gen) & np.isfinite(highest_load) & (highest_load >= lowest_gen)
    if bool(np.any(failing_rows)):
        failing = np.zeros(len(gen.has_time), dtype=np.bool_)
        failing[gen_rows[failing_rows]] = True
        first = int(np.flatnonzero(failing_rows)[0])
        add("V6", "band_avail_mw", f"{ENERGY} bid not convex {_where(gen, failing)}: highest "
                                   f"effective LOAD price / MLF {highest_load[first]:g} is not below lowest "
                                   f"effective GEN price / MLF {lowest_gen[first]:g}")


def _check_rebid(bid: bid_pb2.Bid, rules: MarketRules, offer_time: datetime | None, withheld: frozenset[str],
                 add: _Add) -> None:
    """V5: a REBID has a brief explanation, the time of the event it responds to and, where given, the times
    it became aware of it and decided, in order, and a one-letter category."""
    if bid.entry_type != bid_pb2.ENTRY_TYPE_REBID:
        return
    if "rebid_explanation" not in withheld:
        explanation = bid.rebid_explanation.strip()
        if not explanation:
            add("V5", "rebid_explanation", "REBID without an explanation")
        elif len(bid.rebid_explanation) > rules.rebid_explanation_max_chars:
            add("V5", "rebid_explanation", f"REBID explanation has {len(bid.rebid_explanation)} characters, "
                                           f"more than {rules.rebid_explanation_max_chars}")
    if "event_time" not in withheld and _safe_market_time(bid, "event_time") is None:
        add("V5", "event_time", "REBID without a (readable) event time")
    times = [(name, _safe_market_time(bid, name)) for name in ("event_time", "aware_time", "decision_time")
             if name not in withheld]
    times.append(("offer_time", offer_time))
    known = [(name, moment) for name, moment in times if moment is not None]
    for (earlier_name, earlier), (later_name, later) in itertools.pairwise(known):
        if earlier > later:
            add("V5", earlier_name, f"REBID {earlier_name.replace('_', ' ')} {earlier:%Y-%m-%d %H:%M:%S} is "
                                    f"after its {later_name.replace('_', ' ')} {later:%Y-%m-%d %H:%M:%S}")
    category = bid.rebid_category
    if "rebid_category" not in withheld and category and not (len(category) == 1 and category.isalpha()):
        add("V5", "rebid_category", f"REBID category {category!r} is not one letter")
