"""What the stand-in checks in a ``submitBids`` payload, written apart from the platform's validator.

This module imports nothing of the platform (an import-linter contract keeps it so): it reads AEMO's JSON
with its own code, so that it is an independent check of what the platform sends. Each check returns
AEMO-style errors (:class:`SandboxError`: ``code``, ``title``, ``detail``, ``source`` — the JSON path).

Checks, in order (a payload that fails the schema is not checked further):

1. Schema: ``referenceId`` (1..100 characters), ``energyBids`` / ``fcasBids`` lists (at least one bid),
   each bid's ``tradingDate`` (YYYY-MM-DD), ``duid``, ``direction`` (GEN / LOAD or absent), ``service`` (FCAS:
   one of AEMO's ten services), ten ``prices`` strictly increasing, and periods with ``periodId`` 1..288 and
   their numbers (``maxAvail``, ten ``bandAvail`` ≥ 0, ramp rates and PASA availability for energy, the
   trapezium for FCAS). Field names are read ignoring case.
2. Units the participant owns.
3. Gate closure: a period whose dispatch interval has started (interval-ending time − interval length,
   less ``gate_closure_lead_s``) is closed; a bid for a closed period is rejected.
4. The 12:30 rule: received at or after the daily bid close on the day before its trading day, a bid's band
   prices must equal those of that day's DAILY bid for the unit, service and direction, or the unit's
   default bid when there was no DAILY bid.

Times are naive market time (AEST, UTC+10, no daylight saving).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

ENERGY_SERVICE = "ENERGY"
FCAS_SERVICES = frozenset({"RAISE1SEC", "RAISE6SEC", "RAISE60SEC", "RAISE5MIN", "RAISEREG",
                           "LOWER1SEC", "LOWER6SEC", "LOWER60SEC", "LOWER5MIN", "LOWERREG"})
DIRECTIONS = frozenset({"GEN", "LOAD"})
BAND_COUNT = 10
PERIODS_PER_DAY = 288
INTERVAL = timedelta(minutes=5)
TRADING_DAY_START = time(4, 0)
PRICE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class SandboxError:
    """One reason AEMO gives for refusing a submission."""

    code: str
    title: str
    detail: str
    source: str = ""

    def to_json(self) -> dict[str, str]:
        """AEMO's error object: ``code``, ``title``, ``detail``, ``source``."""
        return {"code": self.code, "title": self.title, "detail": self.detail, "source": self.source}


@dataclass(frozen=True)
class UnitDefaults:
    """A unit the participant owns and its default bid's band prices ($/MWh for energy, $/MW/h for FCAS)."""

    duid: str
    energy_gen_prices: tuple[float, ...]
    energy_load_prices: tuple[float, ...]
    fcas_prices: tuple[float, ...]

    def default_prices(self, service: str, direction: str | None) -> tuple[float, ...]:
        """The default bid's band prices of ``service`` (and ``direction`` for energy: LOAD or else GEN)."""
        if service == ENERGY_SERVICE:
            return self.energy_load_prices if direction == "LOAD" else self.energy_gen_prices
        return self.fcas_prices


@dataclass(frozen=True)
class OfferHead:
    """What the 12:30 rule and gate closure need of one bid in a submission."""

    duid: str
    trading_date: date
    service: str
    direction: str | None
    prices: tuple[float, ...]
    period_ids: tuple[int, ...]
    source: str

    @property
    def price_key(self) -> tuple[str, date, str, str | None]:
        """(DUID, trading date, service, direction): whose band prices a DAILY bid fixes."""
        return (self.duid, self.trading_date, self.service, self.direction)


def _lower_keys(value: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key).lower(): item for key, item in value.items()}


class _Reader:
    """Collects schema errors while reading a payload."""

    def __init__(self) -> None:
        self.errors: list[SandboxError] = []

    def fail(self, source: str, detail: str) -> None:
        self.errors.append(SandboxError("SCHEMA", "Invalid submission", detail, source))

    def text(self, fields: Mapping[str, Any], name: str, source: str, *, required: bool = True) -> str | None:
        value = fields.get(name.lower())
        if value is None:
            if required:
                self.fail(f"{source}.{name}", f"{name} is required")
            return None
        if not isinstance(value, str) or (required and not value.strip()):
            self.fail(f"{source}.{name}", f"{name} must be a non-empty string")
            return None
        return value

    def number(self, fields: Mapping[str, Any], name: str, source: str, *, required: bool = True,
               non_negative: bool = False) -> float | None:
        value = fields.get(name.lower())
        if value is None:
            if required:
                self.fail(f"{source}.{name}", f"{name} is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(f"{source}.{name}", f"{name} must be a finite number, got {value!r}")
            return None
        if non_negative and value < 0:
            self.fail(f"{source}.{name}", f"{name} must not be negative, got {value}")
        return float(value)

    def bands(self, fields: Mapping[str, Any], name: str, source: str, *, increasing: bool,
              non_negative: bool) -> tuple[float, ...] | None:
        value = fields.get(name.lower())
        path = f"{source}.{name}"
        if not isinstance(value, list) or len(value) != BAND_COUNT:
            self.fail(path, f"{name} must be a list of {BAND_COUNT} numbers")
            return None
        if any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in value):
            self.fail(path, f"{name} must hold finite numbers only")
            return None
        numbers = tuple(float(v) for v in value)
        if increasing and any(b <= a for a, b in itertools.pairwise(numbers)):
            self.fail(path, f"{name} must increase strictly from band 1 to band {BAND_COUNT}")
        if non_negative and any(v < 0 for v in numbers):
            self.fail(path, f"{name} must not be negative")
        return numbers

    def objects(self, fields: Mapping[str, Any], name: str, source: str) -> list[tuple[str, dict[str, Any]]]:
        value = fields.get(name.lower(), [])
        if not isinstance(value, list):
            self.fail(f"{source}{name}", f"{name} must be a list")
            return []
        out: list[tuple[str, dict[str, Any]]] = []
        for index, item in enumerate(value):
            path = f"{source}{name}[{index}]"
            if not isinstance(item, dict):
                self.fail(path, "must be an object")
                continue
            out.append((path, _lower_keys(item)))
        return out


def read_submission(payload: object) -> tuple[str | None, list[OfferHead], list[SandboxError]]:
    """Check the schema of a ``submitBids`` payload: (reference id, the bids' heads, schema errors)."""
    reader = _Reader()
    if not isinstance(payload, dict):
        reader.fail("", "the submission must be a JSON object")
        return None, [], reader.errors
    fields = _lower_keys(payload)
    reference_id = reader.text(fields, "referenceId", "")
    if reference_id is not None and len(reference_id) > 100:
        reader.fail(".referenceId", "referenceId must be at most 100 characters")
    heads: list[OfferHead] = []
    for kind, periods_name in (("energyBids", "energyPeriods"), ("fcasBids", "fcasPeriods")):
        for path, bid in reader.objects(fields, kind, ""):
            head = _read_bid(reader, bid, path, periods_name, energy=kind == "energyBids")
            if head is not None:
                heads.append(head)
    if not fields.get("energybids") and not fields.get("fcasbids") and not reader.errors:
        reader.fail("", "a submission needs at least one energy or FCAS bid")
    return reference_id, heads, reader.errors


def _read_bid(reader: _Reader, bid: dict[str, Any], path: str, periods_name: str, *,
              energy: bool) -> OfferHead | None:
    before = len(reader.errors)
    trading_text = reader.text(bid, "tradingDate", path)
    trading: date | None = None
    if trading_text is not None:
        try:
            trading = date.fromisoformat(trading_text)
        except ValueError:
            reader.fail(f"{path}.tradingDate", f"tradingDate {trading_text!r} is not YYYY-MM-DD")
    duid = reader.text(bid, "duid", path)
    direction = reader.text(bid, "direction", path, required=False)
    if direction is not None and direction not in DIRECTIONS:
        reader.fail(f"{path}.direction", f"direction must be GEN or LOAD, got {direction!r}")
    service = ENERGY_SERVICE
    if not energy:
        service_text = reader.text(bid, "service", path)
        if service_text is not None and service_text not in FCAS_SERVICES:
            reader.fail(f"{path}.service", f"service {service_text!r} is not an FCAS service")
        service = service_text or ""
    prices = reader.bands(bid, "prices", path, increasing=True, non_negative=False)
    period_ids: list[int] = []
    periods = reader.objects(bid, periods_name, f"{path}.")
    if not periods:
        reader.fail(f"{path}.{periods_name}", f"{periods_name} must hold at least one period")
    for period_path, period in periods:
        period_id = period.get("periodid")
        if isinstance(period_id, bool) or not isinstance(period_id, int) or not 1 <= period_id <= PERIODS_PER_DAY:
            reader.fail(f"{period_path}.periodId", f"periodId must be an integer 1..{PERIODS_PER_DAY}")
        else:
            period_ids.append(period_id)
        reader.number(period, "maxAvail", period_path, non_negative=True)
        reader.bands(period, "bandAvail", period_path, increasing=False, non_negative=True)
        if energy:
            for name in ("rampUpRate", "rampDownRate", "pasaAvail"):
                reader.number(period, name, period_path, non_negative=True)
        else:
            for name in ("enablementMin", "lowBreakPoint", "highBreakPoint", "enablementMax"):
                reader.number(period, name, period_path)
    if len(set(period_ids)) != len(period_ids):
        reader.fail(f"{path}.{periods_name}", "a periodId appears twice")
    if len(reader.errors) > before or trading is None or duid is None or prices is None:
        return None
    return OfferHead(duid=duid, trading_date=trading, service=service, direction=direction, prices=prices,
                     period_ids=tuple(period_ids), source=path)


def interval_ending(trading_date: date, period_id: int) -> datetime:
    """Interval-ending market time of period ``period_id`` (1 ends 04:05) of ``trading_date``."""
    return datetime.combine(trading_date, TRADING_DAY_START) + INTERVAL * period_id


def daily_bid_close_of(trading_date: date, daily_close: time) -> datetime:
    """When DAILY bids for ``trading_date`` close: ``daily_close`` on the day before."""
    return datetime.combine(trading_date - timedelta(days=1), daily_close)


def is_daily(head: OfferHead, received: datetime, daily_close: time) -> bool:
    """Whether a bid received at ``received`` is a DAILY bid (before the close), else a REBID."""
    return received < daily_bid_close_of(head.trading_date, daily_close)


def check_owned(heads: list[OfferHead], units: Mapping[str, UnitDefaults]) -> list[SandboxError]:
    """A bid for a unit the participant does not own."""
    return [SandboxError("UNIT_NOT_OWNED", "Unit not registered to participant",
                         f"DUID {head.duid} is not a unit of this participant", f"{head.source}.duid")
            for head in heads if head.duid not in units]


def check_gate_closure(heads: list[OfferHead], received: datetime, gate_closure_lead_s: float) -> list[SandboxError]:
    """Periods whose gate has closed: their dispatch interval started (less the lead) before ``received``."""
    errors: list[SandboxError] = []
    lead = timedelta(seconds=gate_closure_lead_s)
    for head in heads:
        closed = [p for p in head.period_ids if interval_ending(head.trading_date, p) - INTERVAL - lead <= received]
        if closed:
            first = min(closed)
            errors.append(SandboxError(
                "GATE_CLOSED", "Gate closure has passed",
                f"{head.service}{' ' + head.direction if head.direction else ''} of {head.duid} for "
                f"{head.trading_date}: {len(closed)} period(s) closed (first period {first}, interval ending "
                f"{interval_ending(head.trading_date, first):%Y-%m-%d %H:%M}) at receipt {received:%Y-%m-%d %H:%M:%S}",
                f"{head.source}.periodId"))
    return errors


def check_band_prices(heads: list[OfferHead], received: datetime, daily_close: time,
                      daily_prices: Mapping[tuple[str, date, str, str | None], tuple[float, ...]],
                      units: Mapping[str, UnitDefaults]) -> list[SandboxError]:
    """The 12:30 rule: after the daily close, band prices equal the DAILY bid's, else the default bid's."""
    errors: list[SandboxError] = []
    for head in heads:
        unit = units.get(head.duid)
        if unit is None or is_daily(head, received, daily_close):
            continue
        daily = daily_prices.get(head.price_key)
        fixed, origin = (daily, "the DAILY bid") if daily is not None else (
            unit.default_prices(head.service, head.direction), "the default bid")
        if len(fixed) != len(head.prices) or any(abs(a - b) > PRICE_TOLERANCE
                                                 for a, b in zip(fixed, head.prices, strict=False)):
            errors.append(SandboxError(
                "PRICE_BANDS_FIXED", "Band prices cannot change after the daily bid close",
                f"{head.service}{' ' + head.direction if head.direction else ''} prices of {head.duid} for "
                f"{head.trading_date} differ from {origin} ({list(fixed)}); received {received:%Y-%m-%d %H:%M:%S}, "
                f"after {daily_bid_close_of(head.trading_date, daily_close):%Y-%m-%d %H:%M}",
                f"{head.source}.prices"))
    return errors
