"""A unit as registered with AEMO: what kind of unit it is and the registered limits its bids are judged by.

The bid rules that depend on the unit (:mod:`algorithms.market.bid_validation`) read them from a
:class:`UnitRegistration`, never from the bid: a rule for bidirectional units (both ENERGY directions,
directed regulation FCAS, convexity, the energy limit) applies because the registration says
``BIDIRECTIONAL``. The platform's own battery (:class:`vpp.v1.common_pb2.BatterySpec`) is a bidirectional
unit (:func:`registration_of_battery`); AEMO's DUDETAILSUMMARY gives the registration of any other unit
(:mod:`aemo.registrations`).

Units: MW, MWh, MW/min; loss factors are fractions of 1. A limit AEMO's data does not give is ``None``
(unknown), and the checks that need it are not made.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from vpp.v1 import common_pb2


class UnitKind(StrEnum):
    """AEMO's dispatch type of a unit (DUDETAILSUMMARY's DISPATCHTYPE)."""

    GENERATOR = "GENERATOR"
    LOAD = "LOAD"
    BIDIRECTIONAL = "BIDIRECTIONAL"


@dataclass(frozen=True)
class UnitRegistration:
    """A unit's registration (AEMO's DUID) on a trading day.

    ``max_capacity_mw``: registered maximum capacity in each direction (MW); ``storage_mwh``: registered
    maximum storage capacity of a bidirectional unit (MWh). ``mlf_gen`` / ``mlf_load``: the loss factors of
    the generating and consuming side (a generator's or load's one factor in both).
    ``min_ramp_up_mw_per_min`` / ``min_ramp_down_mw_per_min``: the registered minimum ramp rates; an ENERGY
    bid below them must say why (rule V8).
    """

    unit_id: str
    kind: UnitKind
    region: str = ""
    max_capacity_mw: float | None = None
    storage_mwh: float | None = None
    mlf_gen: float = 1.0
    mlf_load: float = 1.0
    min_ramp_up_mw_per_min: float | None = None
    min_ramp_down_mw_per_min: float | None = None

    @property
    def bidirectional(self) -> bool:
        """Whether the unit is a bidirectional unit (BDU: one unit that generates and consumes)."""
        return self.kind is UnitKind.BIDIRECTIONAL


def registration_of_battery(battery: common_pb2.BatterySpec) -> UnitRegistration:
    """The registration of a battery: a bidirectional unit of its power (MW) and storage (MWh)."""
    return UnitRegistration(
        unit_id=battery.unit_id, kind=UnitKind.BIDIRECTIONAL, region=battery.region,
        max_capacity_mw=battery.power_mw, storage_mwh=battery.energy_mwh, mlf_gen=battery.mlf_gen,
        mlf_load=battery.mlf_load, min_ramp_up_mw_per_min=battery.min_ramp_rate_mw_per_min,
        min_ramp_down_mw_per_min=battery.min_ramp_rate_mw_per_min)


def as_registration(unit: UnitRegistration | common_pb2.BatterySpec) -> UnitRegistration:
    """``unit`` as a :class:`UnitRegistration` (a battery spec is a bidirectional unit)."""
    return unit if isinstance(unit, UnitRegistration) else registration_of_battery(unit)
