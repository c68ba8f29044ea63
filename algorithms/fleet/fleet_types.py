"""The fleet's data model as arrays: one row per site (or per reading), never one Python object per site.

Everything the VPP computes over thousands of home batteries (telemetry ingest, aggregation, setpoint
allocation, the fleet simulator) exchanges these struct-of-arrays containers. Conventions, used
everywhere in the fleet code:

- **Site ids** are strings (``"site-000042"``). A :class:`SiteParameters` holds them **sorted
  ascending and unique**, so a site's row is found with :func:`site_positions` (``np.searchsorted``),
  and every per-site array of a :class:`FleetState` is aligned with those rows.
- **Power** at a site is in kW, positive = the battery discharges (exports), negative = it charges.
  Aggregates over sites are reported in MW / MWh.
- **Energy** at a site is in kWh; **state of charge** in telemetry is a percentage (0–100 %) of usable
  capacity; the backup reserve an owner sets is a fraction (0–1) of capacity.
- **Time** in the fleet is wall-clock, not market time: epoch milliseconds UTC (``int64``). A
  ``measured_at_ms`` of :data:`NEVER` (-1) means "no reading yet".
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

NEVER = -1
"""``measured_at_ms`` / ``acknowledged_at_ms`` value meaning no reading (or acknowledgement) yet."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
StrArray = npt.NDArray[np.str_]


def _check_aligned(container: Any, length: int) -> None:
    for field in fields(container):
        value = getattr(container, field.name)
        if isinstance(value, np.ndarray) and value.shape != (length,):
            raise ValueError(
                f"{type(container).__name__}.{field.name} has shape {value.shape}, expected ({length},)"
            )


@dataclass(frozen=True)
class SiteParameters:
    """Static facts about each site's battery, one row per site, ``site_ids`` sorted and unique.

    Attributes:
        site_ids: site identifiers, ascending.
        capacity_kwh: usable battery energy (kWh).
        max_charge_kw: largest charging power (kW, positive number).
        max_discharge_kw: largest discharging power (kW, positive number).
        charge_efficiency: fraction of energy drawn that is stored (0–1].
        discharge_efficiency: fraction of stored energy delivered (0–1].
        backup_reserve_fraction: share of capacity the owner keeps for outages (0–1); a VPP never
            discharges below it.
        pv_capacity_kw: rooftop PV nameplate (kW DC; 0 for none).
    """

    site_ids: StrArray
    capacity_kwh: FloatArray
    max_charge_kw: FloatArray
    max_discharge_kw: FloatArray
    charge_efficiency: FloatArray
    discharge_efficiency: FloatArray
    backup_reserve_fraction: FloatArray
    pv_capacity_kw: FloatArray

    def __post_init__(self) -> None:
        _check_aligned(self, len(self.site_ids))
        if len(self.site_ids) > 1 and not bool(np.all(self.site_ids[1:] > self.site_ids[:-1])):
            raise ValueError("SiteParameters.site_ids must be sorted ascending and unique")

    @property
    def site_count(self) -> int:
        """Number of sites."""
        return len(self.site_ids)


@dataclass(frozen=True)
class TelemetryBatch:
    """Readings as they arrive from sites, one row per reading (possibly late, duplicated, out of order).

    Attributes:
        site_ids: which site sent each reading (may include ids the platform does not know).
        sequence: the site's own reading counter (increases by one per reading; a repeat is a duplicate).
        measured_at_ms: when the site measured it (epoch ms UTC).
        battery_power_kw: battery power (kW, + discharge / − charge).
        state_of_charge_pct: battery state of charge (% of usable capacity).
        pv_power_kw: rooftop PV output (kW, ≥ 0).
        load_power_kw: household consumption (kW, ≥ 0).
    """

    site_ids: StrArray
    sequence: IntArray
    measured_at_ms: IntArray
    battery_power_kw: FloatArray
    state_of_charge_pct: FloatArray
    pv_power_kw: FloatArray
    load_power_kw: FloatArray

    def __post_init__(self) -> None:
        _check_aligned(self, len(self.site_ids))

    @property
    def reading_count(self) -> int:
        """Number of readings."""
        return len(self.site_ids)


@dataclass(frozen=True)
class FleetState:
    """Latest accepted reading per site, rows aligned with :attr:`SiteParameters.site_ids`.

    A site that never reported has ``measured_at_ms == NEVER`` and NaN measurements.
    """

    measured_at_ms: IntArray
    sequence: IntArray
    battery_power_kw: FloatArray
    state_of_charge_pct: FloatArray
    pv_power_kw: FloatArray
    load_power_kw: FloatArray

    def __post_init__(self) -> None:
        _check_aligned(self, len(self.measured_at_ms))

    @classmethod
    def empty(cls, site_count: int) -> FleetState:
        """The state of ``site_count`` sites none of which has reported yet."""
        nan = np.full(site_count, np.nan)
        return cls(
            measured_at_ms=np.full(site_count, NEVER, dtype=np.int64),
            sequence=np.full(site_count, -1, dtype=np.int64),
            battery_power_kw=nan.copy(),
            state_of_charge_pct=nan.copy(),
            pv_power_kw=nan.copy(),
            load_power_kw=nan.copy(),
        )


@dataclass(frozen=True)
class SetpointBatch:
    """Commands to sites: hold ``setpoint_kw`` (+ discharge / − charge) until ``valid_until_ms``.

    ``command_id`` is unique per command; a resend of the same command keeps its id, so a site that
    receives it twice acknowledges it twice and applies it once.
    """

    site_ids: StrArray
    command_id: IntArray
    setpoint_kw: FloatArray
    valid_until_ms: IntArray

    def __post_init__(self) -> None:
        _check_aligned(self, len(self.site_ids))


@dataclass(frozen=True)
class AckBatch:
    """Acknowledgements from sites: ``accepted`` False means the site refused (e.g. owner override)."""

    site_ids: StrArray
    command_id: IntArray
    acknowledged_at_ms: IntArray
    accepted: BoolArray

    def __post_init__(self) -> None:
        _check_aligned(self, len(self.site_ids))


def site_positions(known_site_ids: npt.NDArray[Any], site_ids: npt.NDArray[Any]) -> IntArray:
    """Row of each of ``site_ids`` in the sorted ``known_site_ids``; -1 where the id is unknown.

    Works for any sorted, unique array and its look-ups (site ids, node ids, or rows of an event's sites).

    Vectorised (``np.searchsorted``): O(n log N), no per-site Python work.
    """
    if len(known_site_ids) == 0:
        return np.full(len(site_ids), -1, dtype=np.int64)
    positions = np.searchsorted(known_site_ids, site_ids).astype(np.int64)
    clipped = np.minimum(positions, len(known_site_ids) - 1)
    found = known_site_ids[clipped] == site_ids
    return np.where(found, clipped, -1).astype(np.int64)
