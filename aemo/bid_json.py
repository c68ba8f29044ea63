"""Bids as AEMO's bid submission JSON (the NEM Dispatch Bidding API's ``submitBids`` payload), both ways.

The protobuf ``Bid`` stays the source of truth inside the platform; this is the adapter at the edge. A
payload is typed by the dataclasses below (:class:`BidSubmission` and its parts) and read strictly: a value
of the wrong kind or a missing field is one :class:`BidJsonError` naming its path
(``energyBids[0].energyPeriods[3].bandAvail``). The numbers themselves are judged by the validator, not here.

Payload (AEMO's names; the ``submitBids`` request, with the fields AEMO's ``getSubmission`` / ``getBids``
answers add when ``record=True``):

``referenceId``, ``comments``, ``authorisedBy``, [``offerTimestamp``, ``participantId``], ``energyBids``:
``tradingDate``, ``duid``, ``direction`` (GEN / LOAD; absent when the offer has none), ``prices`` (10),
``fastStartProfile`` {``minimumLoad``, ``t1``..``t4``}, ``dailyEnergyConstraint``, ``rebidExplanation``
{``reason``, ``eventTime``, ``awareTime``, ``decisionTime``, ``category``}, [``entryType``], ``energyPeriods``:
``periodId`` (1..288), ``maxAvail``, ``rampUpRate``, ``rampDownRate``, ``bandAvail`` (10), ``pasaAvail``,
``fixedLoad``, ``energyLimit``, ``recallPeriod``; ``fcasBids``: ``tradingDate``, ``duid``, ``direction``,
``service``, ``prices``, ``rebidExplanation``, [``entryType``], ``fcasPeriods``: ``periodId``, ``maxAvail``,
``bandAvail``, ``enablementMin``, ``lowBreakPoint``, ``highBreakPoint``, ``enablementMax``; ``mnspBids`` (empty).

Assumptions where AEMO's documents are silent (README, "Bids in AEMO's format"):

- Field names are AEMO's camelCase; reading ignores case (AEMO's own example writes ``MaxAvail``,
  ``EnablementMin`` in ``fcasPeriods``).
- ``periodId`` is the interval's number in its trading day, 1 (ending 04:05) to 288 (ending 04:00 next day).
- Times (``offerTimestamp``, ``eventTime``, ``awareTime``, ``decisionTime``) are written ISO 8601 with the
  market's +10:00 offset; reading also takes a bare ``HH:MM:SS`` (as MMS stores the rebid times), which is
  the latest such time at or before the offer time.
- The rebid explanation and entry type are the same on every offer of one unit and trading day: they belong
  to the submission. A ramp-rate reason is carried in the explanation's text, AEMO's one place for the
  reasons for rebids and inflexibilities. Without an ``entryType`` the entry type follows from the offer
  time (DAILY up to the daily bid close).
- Optional numbers are left out when 0 (none): ``fixedLoad``, ``energyLimit``, ``recallPeriod``,
  ``dailyEnergyConstraint``; ``fastStartProfile`` when the offer has none.
- A BIDIRECTIONAL offer (as MMS labels a bidirectional unit's contingency FCAS) is written without a
  direction, as AEMO's API takes it; it reads back as an offer without one.
- The platform's version number and plan hash do not travel: AEMO keeps its own versions; the reference id
  (default ``<unit>-<trading day>-<first interval HHMM>-v<version>``) names the submission.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from aemo.errors import AemoDataError
from algorithms.common import nem_time
from algorithms.common.products import ENERGY
from algorithms.market.bid_validation import entry_type_at
from vpp.v1 import bid_pb2, common_pb2

MARKET_TIMEZONE = timezone(nem_time.AEST_OFFSET)
_DIRECTIONS = {"GEN": common_pb2.DIRECTION_GEN, "LOAD": common_pb2.DIRECTION_LOAD}
_DIRECTION_NAMES = {common_pb2.DIRECTION_GEN: "GEN", common_pb2.DIRECTION_LOAD: "LOAD"}
_ENTRY_TYPES = {"DAILY": bid_pb2.ENTRY_TYPE_DAILY, "REBID": bid_pb2.ENTRY_TYPE_REBID}
_ENTRY_NAMES = {value: name for name, value in _ENTRY_TYPES.items()}
_RAMP_REASON_PREFIX = "Ramp rates: "


class BidJsonError(AemoDataError):
    """A payload that is not AEMO's bid submission JSON; the message names the field's path."""


@dataclass(frozen=True)
class RebidExplanation:
    """``rebidExplanation``: the reason and the times (market time) of the event, awareness and decision."""

    reason: str = ""
    event_time: datetime | None = None
    aware_time: datetime | None = None
    decision_time: datetime | None = None
    category: str = ""


@dataclass(frozen=True)
class FastStartProfile:
    """``fastStartProfile``: minimum load (MW) and the inflexibility times T1..T4 (minutes)."""

    minimum_load: float
    t1: float
    t2: float
    t3: float
    t4: float


@dataclass(frozen=True)
class EnergyPeriod:
    """One ``energyPeriods`` entry (MW, MW/min, MWh)."""

    period_id: int
    max_avail: float
    ramp_up_rate: float
    ramp_down_rate: float
    band_avail: tuple[float, ...]
    pasa_avail: float
    fixed_load: float = 0.0
    energy_limit: float = 0.0
    recall_period: float = 0.0


@dataclass(frozen=True)
class FcasPeriod:
    """One ``fcasPeriods`` entry (MW)."""

    period_id: int
    max_avail: float
    band_avail: tuple[float, ...]
    enablement_min: float
    low_break_point: float
    high_break_point: float
    enablement_max: float


@dataclass(frozen=True)
class EnergyBid:
    """One ``energyBids`` entry: a unit's ENERGY offer for a trading day and direction ($/MWh, MWh)."""

    trading_date: date
    duid: str
    direction: str | None
    prices: tuple[float, ...]
    energy_periods: tuple[EnergyPeriod, ...]
    rebid_explanation: RebidExplanation | None = None
    fast_start_profile: FastStartProfile | None = None
    daily_energy_constraint: float = 0.0
    entry_type: str | None = None


@dataclass(frozen=True)
class FcasBid:
    """One ``fcasBids`` entry: a unit's offer of one FCAS service for a trading day ($/MW/h)."""

    trading_date: date
    duid: str
    direction: str | None
    service: str
    prices: tuple[float, ...]
    fcas_periods: tuple[FcasPeriod, ...]
    rebid_explanation: RebidExplanation | None = None
    entry_type: str | None = None


@dataclass(frozen=True)
class BidSubmission:
    """A ``submitBids`` payload: energy and FCAS bids of any units and trading days, with the submission's
    reference and, as AEMO records it, the offer time and participant."""

    reference_id: str
    energy_bids: tuple[EnergyBid, ...]
    fcas_bids: tuple[FcasBid, ...]
    comments: str = ""
    authorised_by: str = ""
    offer_timestamp: datetime | None = None
    participant_id: str = ""

    def to_json(self) -> dict[str, Any]:
        """The payload as JSON-ready dicts, lists, strings and numbers."""
        payload: dict[str, Any] = {"referenceId": self.reference_id, "comments": self.comments,
                                   "authorisedBy": self.authorised_by}
        if self.offer_timestamp is not None:
            payload["offerTimestamp"] = _time_text(self.offer_timestamp)
        if self.participant_id:
            payload["participantId"] = self.participant_id
        payload["energyBids"] = [_energy_bid_json(bid) for bid in self.energy_bids]
        payload["fcasBids"] = [_fcas_bid_json(bid) for bid in self.fcas_bids]
        payload["mnspBids"] = []
        return payload

    @classmethod
    def from_json(cls, payload: object) -> BidSubmission:
        """Read a payload (parsed JSON); :class:`BidJsonError` naming the first field that is not AEMO's."""
        fields = _object(payload, "payload")
        offer_time = _optional_time(fields, "offerTimestamp", "payload", None)
        mnsp = fields.get("mnspbids")
        if mnsp:
            raise BidJsonError("payload.mnspBids: MNSP bids are not supported")
        return cls(
            reference_id=_text(fields, "referenceId", "payload", required=False),
            comments=_text(fields, "comments", "payload", required=False),
            authorised_by=_text(fields, "authorisedBy", "payload", required=False),
            offer_timestamp=offer_time,
            participant_id=_text(fields, "participantId", "payload", required=False),
            energy_bids=tuple(_energy_bid(item, f"energyBids[{i}]", offer_time)
                              for i, item in enumerate(_list(fields, "energyBids", "payload"))),
            fcas_bids=tuple(_fcas_bid(item, f"fcasBids[{i}]", offer_time)
                            for i, item in enumerate(_list(fields, "fcasBids", "payload"))),
        )


# --------------------------------------------------------------------------------------------------
# Bid -> payload
# --------------------------------------------------------------------------------------------------


def default_reference_id(bid: bid_pb2.Bid) -> str:
    """``<unit>-<trading day>-<first interval HHMM>-v<version>``: the reference id of a bid that has none."""
    first = nem_time.from_timestamp(bid.dispatch_interval) if bid.HasField("dispatch_interval") else None
    return f"{bid.unit_id}-{bid.trading_day}-{first:%H%M}-v{bid.version}" if first else \
        f"{bid.unit_id}-{bid.trading_day}-v{bid.version}"


def _market_time(bid: bid_pb2.Bid, field: str) -> datetime | None:
    return nem_time.from_timestamp(getattr(bid, field)) if bid.HasField(field) else None  # type: ignore[arg-type]


def _explanation_of(bid: bid_pb2.Bid) -> RebidExplanation | None:
    reason = bid.rebid_explanation
    if bid.ramp_rate_reason.strip():
        reason = f"{reason.rstrip()} {_RAMP_REASON_PREFIX}{bid.ramp_rate_reason.strip()}".strip()
    explanation = RebidExplanation(reason=reason, event_time=_market_time(bid, "event_time"),
                                   aware_time=_market_time(bid, "aware_time"),
                                   decision_time=_market_time(bid, "decision_time"), category=bid.rebid_category)
    return None if explanation == RebidExplanation() else explanation


def submission_of(bid: bid_pb2.Bid, *, energy_product: str = ENERGY, authorised_by: str = "",
                  comments: str = "", record: bool = False) -> BidSubmission:
    """``bid`` as a typed :class:`BidSubmission` (see :func:`bid_to_submission`)."""
    day = date.fromisoformat(bid.trading_day)
    explanation = _explanation_of(bid)
    entry = _ENTRY_NAMES.get(bid.entry_type) if record else None
    energy: list[EnergyBid] = []
    fcas: list[FcasBid] = []
    for offer in bid.offers:
        direction = _DIRECTION_NAMES.get(offer.direction)
        if offer.product == energy_product:
            profile = offer.fast_start_profile
            energy.append(EnergyBid(
                trading_date=day, duid=bid.unit_id, direction=direction, prices=tuple(offer.band_price),
                energy_periods=tuple(EnergyPeriod(
                    period_id=_period_id(period), max_avail=period.max_avail_mw,
                    ramp_up_rate=period.ramp_up_rate_mw_per_min, ramp_down_rate=period.ramp_down_rate_mw_per_min,
                    band_avail=tuple(period.band_avail_mw), pasa_avail=period.pasa_avail_mw,
                    fixed_load=period.fixed_load_mw, energy_limit=period.energy_limit_mwh,
                    recall_period=period.pasa_recall_period) for period in offer.periods),
                rebid_explanation=explanation,
                fast_start_profile=FastStartProfile(profile.minimum_load_mw, profile.t1_minutes, profile.t2_minutes,
                                                    profile.t3_minutes, profile.t4_minutes)
                if offer.HasField("fast_start_profile") else None,
                daily_energy_constraint=offer.daily_energy_constraint_mwh, entry_type=entry))
        else:
            fcas.append(FcasBid(
                trading_date=day, duid=bid.unit_id, direction=direction, service=offer.product,
                prices=tuple(offer.band_price),
                fcas_periods=tuple(FcasPeriod(
                    period_id=_period_id(period), max_avail=period.max_avail_mw,
                    band_avail=tuple(period.band_avail_mw), enablement_min=period.enablement_min_mw,
                    low_break_point=period.low_breakpoint_mw, high_break_point=period.high_breakpoint_mw,
                    enablement_max=period.enablement_max_mw) for period in offer.periods),
                rebid_explanation=explanation, entry_type=entry))
    return BidSubmission(
        reference_id=bid.reference_id or default_reference_id(bid), energy_bids=tuple(energy),
        fcas_bids=tuple(fcas), comments=comments, authorised_by=authorised_by,
        offer_timestamp=_market_time(bid, "offer_time") if record else None,
        participant_id=bid.participant_id if record else "")


def bid_to_submission(bid: bid_pb2.Bid, *, energy_product: str = ENERGY, authorised_by: str = "",
                      comments: str = "", record: bool = False) -> dict[str, Any]:
    """``bid`` as AEMO's ``submitBids`` JSON payload (dicts and lists, ready for ``json.dumps``).

    ``authorised_by`` / ``comments``: AEMO's ``authorisedBy`` and ``comments``. ``record``: also the fields
    AEMO records with a submission (``offerTimestamp``, ``participantId``, each bid's ``entryType``), so that
    the payload reads back into the same bid (:func:`submission_to_bid`). Raises ValueError for a bid without
    a readable trading day or with a period outside it.
    """
    return submission_of(bid, energy_product=energy_product, authorised_by=authorised_by, comments=comments,
                         record=record).to_json()


def _period_id(period: bid_pb2.PeriodOffer) -> int:
    return nem_time.interval_number(nem_time.from_timestamp(period.dispatch_interval))


def _time_text(moment: datetime) -> str:
    return moment.replace(tzinfo=MARKET_TIMEZONE).isoformat()


def _number_json(value: float) -> float | int:
    return int(value) if math.isfinite(value) and value == int(value) and abs(value) < 2**53 else value


def _numbers_json(values: Iterable[float]) -> list[float | int]:
    return [_number_json(value) for value in values]


def _explanation_json(explanation: RebidExplanation) -> dict[str, Any]:
    fields: dict[str, Any] = {"reason": explanation.reason}
    for name, moment in (("eventTime", explanation.event_time), ("awareTime", explanation.aware_time),
                         ("decisionTime", explanation.decision_time)):
        if moment is not None:
            fields[name] = _time_text(moment)
    if explanation.category:
        fields["category"] = explanation.category
    return fields


def _bid_head_json(trading_date: date, duid: str, direction: str | None, prices: Sequence[float],
                   explanation: RebidExplanation | None, entry_type: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"tradingDate": trading_date.isoformat(), "duid": duid}
    if direction is not None:
        fields["direction"] = direction
    fields["prices"] = _numbers_json(prices)
    if explanation is not None:
        fields["rebidExplanation"] = _explanation_json(explanation)
    if entry_type is not None:
        fields["entryType"] = entry_type
    return fields


def _energy_bid_json(bid: EnergyBid) -> dict[str, Any]:
    fields = _bid_head_json(bid.trading_date, bid.duid, bid.direction, bid.prices, bid.rebid_explanation,
                            bid.entry_type)
    if bid.fast_start_profile is not None:
        profile = bid.fast_start_profile
        fields["fastStartProfile"] = {"minimumLoad": _number_json(profile.minimum_load),
                                      **{name: _number_json(getattr(profile, name))
                                         for name in ("t1", "t2", "t3", "t4")}}
    if bid.daily_energy_constraint:
        fields["dailyEnergyConstraint"] = _number_json(bid.daily_energy_constraint)
    periods: list[dict[str, Any]] = []
    for period in bid.energy_periods:
        entry: dict[str, Any] = {
            "periodId": period.period_id, "maxAvail": _number_json(period.max_avail),
            "rampUpRate": _number_json(period.ramp_up_rate), "rampDownRate": _number_json(period.ramp_down_rate),
            "bandAvail": _numbers_json(period.band_avail), "pasaAvail": _number_json(period.pasa_avail)}
        for name, value in (("fixedLoad", period.fixed_load), ("energyLimit", period.energy_limit),
                            ("recallPeriod", period.recall_period)):
            if value:
                entry[name] = _number_json(value)
        periods.append(entry)
    fields["energyPeriods"] = periods
    return fields


def _fcas_bid_json(bid: FcasBid) -> dict[str, Any]:
    fields = _bid_head_json(bid.trading_date, bid.duid, bid.direction, bid.prices, bid.rebid_explanation,
                            bid.entry_type)
    fields["service"] = bid.service
    fields["fcasPeriods"] = [{
        "periodId": period.period_id, "maxAvail": _number_json(period.max_avail),
        "bandAvail": _numbers_json(period.band_avail), "enablementMin": _number_json(period.enablement_min),
        "lowBreakPoint": _number_json(period.low_break_point),
        "highBreakPoint": _number_json(period.high_break_point),
        "enablementMax": _number_json(period.enablement_max)} for period in bid.fcas_periods]
    return fields


# --------------------------------------------------------------------------------------------------
# payload -> Bid
# --------------------------------------------------------------------------------------------------


def submission_to_bids(payload: object, *, daily_bid_close: time, energy_product: str = ENERGY,
                       offer_time: datetime | None = None) -> list[bid_pb2.Bid]:
    """AEMO's ``submitBids`` JSON (parsed) as one bid per unit and trading day, in payload order.

    ``offer_time`` (market time) stands in for a payload without ``offerTimestamp`` (AEMO stamps it on
    receipt). The entry type is the payload's ``entryType``, else the one the offer time gives
    (``daily_bid_close`` on D-1). Raises :class:`BidJsonError` naming the first field that is not AEMO's.
    """
    submission = BidSubmission.from_json(payload)
    offered = submission.offer_timestamp or offer_time
    bids: dict[tuple[str, date], bid_pb2.Bid] = {}
    for energy in submission.energy_bids:
        offer = _bid_for(bids, submission, energy.duid, energy.trading_date, energy.rebid_explanation,
                         energy.entry_type, offered, daily_bid_close).offers.add(
            product=energy_product, direction=_DIRECTIONS.get(energy.direction or "", 0),  # type: ignore[arg-type]
            band_price=energy.prices, daily_energy_constraint_mwh=energy.daily_energy_constraint)
        if energy.fast_start_profile is not None:
            profile = energy.fast_start_profile
            offer.fast_start_profile.CopyFrom(bid_pb2.FastStartProfile(
                minimum_load_mw=profile.minimum_load, t1_minutes=profile.t1, t2_minutes=profile.t2,
                t3_minutes=profile.t3, t4_minutes=profile.t4))
        for period in energy.energy_periods:
            offer.periods.add(
                dispatch_interval=_interval(energy.trading_date, period.period_id), max_avail_mw=period.max_avail,
                band_avail_mw=period.band_avail, ramp_up_rate_mw_per_min=period.ramp_up_rate,
                ramp_down_rate_mw_per_min=period.ramp_down_rate, pasa_avail_mw=period.pasa_avail,
                fixed_load_mw=period.fixed_load, energy_limit_mwh=period.energy_limit,
                pasa_recall_period=period.recall_period)
    for fcas in submission.fcas_bids:
        offer = _bid_for(bids, submission, fcas.duid, fcas.trading_date, fcas.rebid_explanation, fcas.entry_type,
                         offered, daily_bid_close).offers.add(
            product=fcas.service, direction=_DIRECTIONS.get(fcas.direction or "", 0),  # type: ignore[arg-type]
            band_price=fcas.prices)
        for fcas_period in fcas.fcas_periods:
            offer.periods.add(
                dispatch_interval=_interval(fcas.trading_date, fcas_period.period_id),
                max_avail_mw=fcas_period.max_avail, band_avail_mw=fcas_period.band_avail,
                enablement_min_mw=fcas_period.enablement_min, low_breakpoint_mw=fcas_period.low_break_point,
                high_breakpoint_mw=fcas_period.high_break_point, enablement_max_mw=fcas_period.enablement_max)
    for bid in bids.values():
        first = min((period.dispatch_interval.seconds for offer in bid.offers for period in offer.periods),
                    default=None)
        if first is not None:
            bid.dispatch_interval.seconds = first
    return list(bids.values())


def submission_to_bid(payload: object, *, daily_bid_close: time, energy_product: str = ENERGY,
                      offer_time: datetime | None = None) -> bid_pb2.Bid:
    """The one bid of a payload for one unit and trading day (:func:`submission_to_bids`); BidJsonError when
    the payload holds none or several."""
    bids = submission_to_bids(payload, daily_bid_close=daily_bid_close, energy_product=energy_product,
                              offer_time=offer_time)
    if len(bids) != 1:
        raise BidJsonError(f"payload: {len(bids)} bids (units and trading days), expected one")
    return bids[0]


def _interval(trading_date: date, period_id: int) -> Any:
    start = datetime.combine(trading_date, nem_time.TRADING_DAY_START)
    return nem_time.to_timestamp(start + nem_time.INTERVAL * period_id)


def _bid_for(bids: dict[tuple[str, date], bid_pb2.Bid], submission: BidSubmission, duid: str, trading_date: date,
             explanation: RebidExplanation | None, entry_type: str | None, offer_time: datetime | None,
             daily_bid_close: time) -> bid_pb2.Bid:
    """The bid of (unit, trading day), made on its first offer from the submission and that offer's head."""
    key = (duid, trading_date)
    if key in bids:
        return bids[key]
    bid = bid_pb2.Bid(unit_id=duid, trading_day=trading_date.isoformat(), reference_id=submission.reference_id,
                      participant_id=submission.participant_id)
    if offer_time is not None:
        bid.offer_time.CopyFrom(nem_time.to_timestamp(offer_time))
        bid.entry_type = _ENTRY_TYPES.get(entry_type or "",  # type: ignore[assignment]
                                          entry_type_at(trading_date, offer_time, daily_bid_close))
    elif entry_type is not None:
        bid.entry_type = _ENTRY_TYPES[entry_type]  # type: ignore[assignment]
    if explanation is not None:
        bid.rebid_explanation = explanation.reason
        bid.rebid_category = explanation.category
        for field, moment in (("event_time", explanation.event_time), ("aware_time", explanation.aware_time),
                              ("decision_time", explanation.decision_time)):
            if moment is not None:
                getattr(bid, field).CopyFrom(nem_time.to_timestamp(moment))
    bids[key] = bid
    return bid


# --------------------------------------------------------------------------------------------------
# Strict reading of parsed JSON
# --------------------------------------------------------------------------------------------------


def _object(value: object, path: str) -> dict[str, Any]:
    """A JSON object with its keys lower-cased (AEMO's names are read without regard to case)."""
    if not isinstance(value, Mapping):
        raise BidJsonError(f"{path}: expected an object, got {type(value).__name__}")
    return {str(key).lower(): item for key, item in value.items()}


def _get(fields: Mapping[str, Any], name: str, path: str, *, required: bool = True) -> Any:
    value = fields.get(name.lower())
    if value is None and required:
        raise BidJsonError(f"{path}.{name} is missing")
    return value


def _text(fields: Mapping[str, Any], name: str, path: str, *, required: bool = True) -> str:
    value = _get(fields, name, path, required=required)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BidJsonError(f"{path}.{name}: expected text, got {value!r}")
    return value


def _number(fields: Mapping[str, Any], name: str, path: str, *, required: bool = True) -> float:
    value = _get(fields, name, path, required=required)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BidJsonError(f"{path}.{name}: expected a number, got {value!r}")
    return float(value)


def _numbers(fields: Mapping[str, Any], name: str, path: str) -> tuple[float, ...]:
    values = _get(fields, name, path)
    if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise BidJsonError(f"{path}.{name}: expected a list of numbers, got {values!r}")
    return tuple(float(v) for v in values)


def _list(fields: Mapping[str, Any], name: str, path: str) -> list[Any]:
    value = _get(fields, name, path, required=False)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BidJsonError(f"{path}.{name}: expected a list, got {type(value).__name__}")
    return value


def _optional_time(fields: Mapping[str, Any], name: str, path: str, offer_time: datetime | None) -> datetime | None:
    """A time field as naive market time: ISO 8601 (any offset), or HH:MM:SS relative to ``offer_time``."""
    text = _text(fields, name, path, required=False)
    if not text:
        return None
    try:
        clock = time.fromisoformat(text)
    except ValueError:
        clock = None
    if clock is not None and clock.tzinfo is None and len(text) <= 15:
        if offer_time is None:
            raise BidJsonError(f"{path}.{name}: a time of day ({text}) needs the submission's offerTimestamp")
        moment = datetime.combine(offer_time.date(), clock)
        return moment if moment <= offer_time else moment - timedelta(days=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BidJsonError(f"{path}.{name}: {text!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        return parsed
    return parsed.astimezone(MARKET_TIMEZONE).replace(tzinfo=None)


def _trading_date(fields: Mapping[str, Any], path: str) -> date:
    text = _text(fields, "tradingDate", path)
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise BidJsonError(f"{path}.tradingDate: {text!r} is not a YYYY-MM-DD date") from None


def _direction(fields: Mapping[str, Any], path: str) -> str | None:
    text = _text(fields, "direction", path, required=False).strip().upper()
    if not text:
        return None
    if text not in _DIRECTIONS:
        raise BidJsonError(f"{path}.direction: {text!r} is neither GEN nor LOAD")
    return text


def _entry_type(fields: Mapping[str, Any], path: str) -> str | None:
    text = _text(fields, "entryType", path, required=False).strip().upper()
    if text and text not in _ENTRY_TYPES:
        raise BidJsonError(f"{path}.entryType: {text!r} is neither DAILY nor REBID")
    return text or None


def _period_id_of(fields: Mapping[str, Any], path: str) -> int:
    value = _get(fields, "periodId", path)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= nem_time.INTERVALS_PER_DAY:
        raise BidJsonError(f"{path}.periodId: expected a whole number 1..{nem_time.INTERVALS_PER_DAY}, "
                           f"got {value!r}")
    return value


def _explanation(fields: Mapping[str, Any], path: str, offer_time: datetime | None) -> RebidExplanation | None:
    value = _get(fields, "rebidExplanation", path, required=False)
    if value is None:
        return None
    if isinstance(value, str):
        return RebidExplanation(reason=value)
    where = f"{path}.rebidExplanation"
    explanation = _object(value, where)
    return RebidExplanation(
        reason=_text(explanation, "reason", where, required=False),
        event_time=_optional_time(explanation, "eventTime", where, offer_time),
        aware_time=_optional_time(explanation, "awareTime", where, offer_time),
        decision_time=_optional_time(explanation, "decisionTime", where, offer_time),
        category=_text(explanation, "category", where, required=False))


def _energy_bid(value: object, path: str, offer_time: datetime | None) -> EnergyBid:
    fields = _object(value, path)
    profile_value = _get(fields, "fastStartProfile", path, required=False)
    profile: FastStartProfile | None = None
    if isinstance(profile_value, Mapping):
        where = f"{path}.fastStartProfile"
        profile_fields = _object(profile_value, where)
        profile = FastStartProfile(*(_number(profile_fields, name, where, required=False)
                                     for name in ("minimumLoad", "t1", "t2", "t3", "t4")))
    elif profile_value is not None and not isinstance(profile_value, bool):
        raise BidJsonError(f"{path}.fastStartProfile: expected an object, got {profile_value!r}")
    periods: list[EnergyPeriod] = []
    for i, item in enumerate(_list(fields, "energyPeriods", path)):
        where = f"{path}.energyPeriods[{i}]"
        period = _object(item, where)
        periods.append(EnergyPeriod(
            period_id=_period_id_of(period, where), max_avail=_number(period, "maxAvail", where),
            ramp_up_rate=_number(period, "rampUpRate", where), ramp_down_rate=_number(period, "rampDownRate", where),
            band_avail=_numbers(period, "bandAvail", where), pasa_avail=_number(period, "pasaAvail", where),
            fixed_load=_number(period, "fixedLoad", where, required=False),
            energy_limit=_number(period, "energyLimit", where, required=False),
            recall_period=_number(period, "recallPeriod", where, required=False)))
    return EnergyBid(
        trading_date=_trading_date(fields, path), duid=_text(fields, "duid", path), direction=_direction(fields, path),
        prices=_numbers(fields, "prices", path), energy_periods=tuple(periods),
        rebid_explanation=_explanation(fields, path, offer_time), fast_start_profile=profile,
        daily_energy_constraint=_number(fields, "dailyEnergyConstraint", path, required=False),
        entry_type=_entry_type(fields, path))


def _fcas_bid(value: object, path: str, offer_time: datetime | None) -> FcasBid:
    fields = _object(value, path)
    periods: list[FcasPeriod] = []
    for i, item in enumerate(_list(fields, "fcasPeriods", path)):
        where = f"{path}.fcasPeriods[{i}]"
        period = _object(item, where)
        periods.append(FcasPeriod(
            period_id=_period_id_of(period, where), max_avail=_number(period, "maxAvail", where),
            band_avail=_numbers(period, "bandAvail", where),
            enablement_min=_number(period, "enablementMin", where),
            low_break_point=_number(period, "lowBreakPoint", where),
            high_break_point=_number(period, "highBreakPoint", where),
            enablement_max=_number(period, "enablementMax", where)))
    return FcasBid(
        trading_date=_trading_date(fields, path), duid=_text(fields, "duid", path), direction=_direction(fields, path),
        service=_text(fields, "service", path), prices=_numbers(fields, "prices", path), fcas_periods=tuple(periods),
        rebid_explanation=_explanation(fields, path, offer_time), entry_type=_entry_type(fields, path))
