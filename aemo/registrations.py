"""Unit registrations from AEMO's DUDETAILSUMMARY, by trading day.

DUDETAILSUMMARY (MMS package PARTICIPANT_REGISTRATION) holds one row per unit (DUID) and period
``[START_DATE, END_DATE)``: its dispatch type (GENERATOR, LOAD, BIDIRECTIONAL), region, loss factors and, since
2020, its registered minimum and maximum ramp rates. :class:`UnitRegistry` answers "how was this unit
registered on this trading day" with an :class:`algorithms.market.registration.UnitRegistration`.

Assumptions where AEMO's table is silent:

- The loss factor of a unit's generating side is TRANSMISSIONLOSSFACTOR × DISTRIBUTIONLOSSFACTOR; a
  bidirectional unit's consuming side uses SECONDARY_TLF where the table has it, else the same factor.
- MIN_RAMP_RATE_UP / MIN_RAMP_RATE_DOWN (MW/min) are the registered minimum ramp rates of rule V8.
- The table gives no registered capacity or storage: they are taken from MAXCAPACITY and MAXSTORAGECAPACITY
  where a file has those columns, and are otherwise unknown (the checks that need them are not made).
- A trading day covered by no row has no registration (the unit is unknown that day).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from aemo.errors import AemoDataError
from algorithms.market.registration import UnitKind, UnitRegistration

TABLE = "DUDETAILSUMMARY"
_REQUIRED = ("DUID", "START_DATE", "END_DATE", "DISPATCHTYPE")


@dataclass(frozen=True)
class RegistrationPeriod:
    """A unit's registration for the trading days ``[first_day, end_day)``."""

    registration: UnitRegistration
    first_day: date
    end_day: date


class UnitRegistry:
    """Registrations of units over time (see the module docstring)."""

    def __init__(self, periods: Mapping[str, Sequence[RegistrationPeriod]]) -> None:
        self._periods = {unit: sorted(rows, key=lambda row: row.first_day) for unit, rows in periods.items()}

    @property
    def units(self) -> tuple[str, ...]:
        """The units the registry knows, sorted."""
        return tuple(sorted(self._periods))

    def on(self, unit_id: str, trading_day: date) -> UnitRegistration | None:
        """The registration of ``unit_id`` in force on ``trading_day``; None when no period covers it."""
        covering = [row for row in self._periods.get(unit_id, ()) if row.first_day <= trading_day < row.end_day]
        return covering[-1].registration if covering else None


def _number(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return np.asarray(pd.to_numeric(frame[column], errors="coerce"), dtype=np.float64)


def _optional(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def registry_from_dudetailsummary(frame: pd.DataFrame | None) -> UnitRegistry:
    """A :class:`UnitRegistry` of DUDETAILSUMMARY rows (normalised, :mod:`aemo.tables`); an empty registry for
    None. Raises :class:`AemoDataError` for a missing column or a dispatch type AEMO does not use."""
    if frame is None or frame.empty:
        return UnitRegistry({})
    missing = [column for column in _REQUIRED if column not in frame.columns]
    if missing:
        raise AemoDataError(f"{TABLE} lacks the column(s) {', '.join(missing)}")
    kinds = frame["DISPATCHTYPE"].astype("str").str.strip().str.upper()
    unknown = sorted(set(kinds) - {kind.value for kind in UnitKind})
    if unknown:
        raise AemoDataError(f"{TABLE}: dispatch type(s) {', '.join(unknown)} are none of "
                            f"{', '.join(kind.value for kind in UnitKind)}")
    tlf = _number(frame, "TRANSMISSIONLOSSFACTOR")
    dlf = _number(frame, "DISTRIBUTIONLOSSFACTOR")
    mlf_gen = np.where(np.isfinite(tlf), tlf, 1.0) * np.where(np.isfinite(dlf), dlf, 1.0)
    secondary = _number(frame, "SECONDARY_TLF")
    mlf_load = np.where(np.isfinite(secondary), secondary * np.where(np.isfinite(dlf), dlf, 1.0), mlf_gen)
    ramp_up, ramp_down = _number(frame, "MIN_RAMP_RATE_UP"), _number(frame, "MIN_RAMP_RATE_DOWN")
    capacity, storage = _number(frame, "MAXCAPACITY"), _number(frame, "MAXSTORAGECAPACITY")
    regions = frame["REGIONID"].astype("str") if "REGIONID" in frame.columns else pd.Series("", index=frame.index)
    starts = pd.to_datetime(frame["START_DATE"]).dt.date
    ends = pd.to_datetime(frame["END_DATE"]).dt.date
    periods: dict[str, list[RegistrationPeriod]] = {}
    for row, unit_id in enumerate(frame["DUID"].astype("str")):
        registration = UnitRegistration(
            unit_id=unit_id, kind=UnitKind(kinds.iloc[row]), region=str(regions.iloc[row]),
            max_capacity_mw=_optional(capacity[row]), storage_mwh=_optional(storage[row]),
            mlf_gen=float(mlf_gen[row]), mlf_load=float(mlf_load[row]),
            min_ramp_up_mw_per_min=_optional(ramp_up[row]), min_ramp_down_mw_per_min=_optional(ramp_down[row]))
        periods.setdefault(unit_id, []).append(RegistrationPeriod(registration, starts.iloc[row], ends.iloc[row]))
    return UnitRegistry(periods)
