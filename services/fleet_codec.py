"""Columnar protobuf batches of the fleet gateway <-> the struct-of-arrays types of algorithms/fleet_types.

Each batch message carries one repeated field per measurement; converting is one array build per field
(no per-reading Python work beyond what protobuf's repeated containers do). A batch whose fields have
different lengths is malformed and raises :class:`MalformedBatchError` naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from algorithms.fleet.fleet_types import AckBatch, SetpointBatch, TelemetryBatch
from algorithms.fleet.site_plan_types import SitePlans
from vpp.v1 import fleet_pb2


class MalformedBatchError(ValueError):
    """A columnar batch whose repeated fields do not all have the same length."""


def _check_lengths(kind: str, columns: dict[str, Sequence[object]]) -> int:
    lengths = {name: len(column) for name, column in columns.items()}
    expected = next(iter(lengths.values()))
    for name, length in lengths.items():
        if length != expected:
            raise MalformedBatchError(
                f"{kind}: field {name} has {length} values, site_id has {expected}")
    return expected


def _strings(values: Sequence[str]) -> np.ndarray:
    return np.array(list(values), dtype=np.str_) if len(values) else np.array([], dtype="<U1")


def telemetry_from_proto(message: fleet_pb2.TelemetryBatch) -> TelemetryBatch:
    """The readings of a TelemetryBatch message as arrays (kW, %, epoch ms UTC)."""
    _check_lengths("TelemetryBatch", {
        "site_id": message.site_id, "sequence": message.sequence, "measured_at_ms": message.measured_at_ms,
        "battery_power_kw": message.battery_power_kw, "state_of_charge_pct": message.state_of_charge_pct,
        "pv_power_kw": message.pv_power_kw, "load_power_kw": message.load_power_kw})
    return TelemetryBatch(
        site_ids=_strings(message.site_id),
        sequence=np.asarray(message.sequence, dtype=np.int64),
        measured_at_ms=np.asarray(message.measured_at_ms, dtype=np.int64),
        battery_power_kw=np.asarray(message.battery_power_kw, dtype=np.float64),
        state_of_charge_pct=np.asarray(message.state_of_charge_pct, dtype=np.float64),
        pv_power_kw=np.asarray(message.pv_power_kw, dtype=np.float64),
        load_power_kw=np.asarray(message.load_power_kw, dtype=np.float64),
    )


def telemetry_to_proto(batch: TelemetryBatch) -> fleet_pb2.TelemetryBatch:
    """A TelemetryBatch message carrying ``batch``'s readings."""
    return fleet_pb2.TelemetryBatch(
        site_id=batch.site_ids.tolist(), sequence=batch.sequence.tolist(),
        measured_at_ms=batch.measured_at_ms.tolist(), battery_power_kw=batch.battery_power_kw.tolist(),
        state_of_charge_pct=batch.state_of_charge_pct.tolist(), pv_power_kw=batch.pv_power_kw.tolist(),
        load_power_kw=batch.load_power_kw.tolist())


def acks_from_proto(message: fleet_pb2.AckBatch) -> AckBatch:
    """The acknowledgements of an AckBatch message as arrays."""
    _check_lengths("AckBatch", {
        "site_id": message.site_id, "command_id": message.command_id,
        "acknowledged_at_ms": message.acknowledged_at_ms, "accepted": message.accepted})
    return AckBatch(
        site_ids=_strings(message.site_id),
        command_id=np.asarray(message.command_id, dtype=np.int64),
        acknowledged_at_ms=np.asarray(message.acknowledged_at_ms, dtype=np.int64),
        accepted=np.asarray(message.accepted, dtype=np.bool_),
    )


def acks_to_proto(batch: AckBatch) -> fleet_pb2.AckBatch:
    """An AckBatch message carrying ``batch``."""
    return fleet_pb2.AckBatch(
        site_id=batch.site_ids.tolist(), command_id=batch.command_id.tolist(),
        acknowledged_at_ms=batch.acknowledged_at_ms.tolist(), accepted=batch.accepted.tolist())


def setpoints_from_proto(message: fleet_pb2.SetpointBatch) -> SetpointBatch:
    """The commands of a SetpointBatch message as arrays (kW, epoch ms UTC)."""
    _check_lengths("SetpointBatch", {
        "site_id": message.site_id, "command_id": message.command_id,
        "setpoint_kw": message.setpoint_kw, "valid_until_ms": message.valid_until_ms})
    return SetpointBatch(
        site_ids=_strings(message.site_id),
        command_id=np.asarray(message.command_id, dtype=np.int64),
        setpoint_kw=np.asarray(message.setpoint_kw, dtype=np.float64),
        valid_until_ms=np.asarray(message.valid_until_ms, dtype=np.int64),
    )


def setpoints_to_proto(batch: SetpointBatch) -> fleet_pb2.SetpointBatch:
    """A SetpointBatch message carrying ``batch``."""
    return fleet_pb2.SetpointBatch(
        site_id=batch.site_ids.tolist(), command_id=batch.command_id.tolist(),
        setpoint_kw=batch.setpoint_kw.tolist(), valid_until_ms=batch.valid_until_ms.tolist())


_PLAN_MATRICES = ("battery_power_kw", "net_export_kw", "discharge_flexibility_kw", "charge_flexibility_kw",
                  "state_of_charge_kwh")


def plans_from_proto(message: fleet_pb2.PlanBatch) -> SitePlans:
    """The plans of a PlanBatch message as ``(sites × horizon)`` arrays (kW, kWh, epoch ms UTC).

    Raises MalformedBatchError when the per-site fields differ in length or a per-interval field does not
    hold ``sites × horizon_intervals`` values.
    """
    site_count = _check_lengths("PlanBatch", {"site_id": message.site_id,
                                              "forecast_version": message.forecast_version,
                                              "start_ms": message.start_ms})
    horizon = int(message.horizon_intervals)
    if site_count and (horizon <= 0 or message.plan_interval_minutes <= 0):
        raise MalformedBatchError("PlanBatch: horizon_intervals and plan_interval_minutes must be positive")
    matrices: dict[str, np.ndarray] = {}
    for name in _PLAN_MATRICES:
        values = getattr(message, name)
        if len(values) != site_count * horizon:
            raise MalformedBatchError(f"PlanBatch: field {name} has {len(values)} values, expected "
                                      f"{site_count} sites × {horizon} intervals = {site_count * horizon}")
        matrices[name] = np.asarray(values, dtype=np.float64).reshape(site_count, horizon)
    return SitePlans(site_ids=_strings(message.site_id),
                     forecast_version=np.asarray(message.forecast_version, dtype=np.int64),
                     start_ms=np.asarray(message.start_ms, dtype=np.int64),
                     plan_interval_minutes=int(message.plan_interval_minutes), **matrices)


def plans_to_proto(plans: SitePlans) -> fleet_pb2.PlanBatch:
    """A PlanBatch message carrying ``plans`` (row-major site × interval)."""
    return fleet_pb2.PlanBatch(
        site_id=plans.site_ids.tolist(), forecast_version=plans.forecast_version.tolist(),
        start_ms=plans.start_ms.tolist(), plan_interval_minutes=plans.plan_interval_minutes,
        horizon_intervals=plans.horizon_intervals,
        **{name: getattr(plans, name).ravel().tolist() for name in _PLAN_MATRICES})


def forecast_prices(message: fleet_pb2.PriceForecast) -> np.ndarray:
    """The forecast's prices as a ``(quantiles × horizon)`` array ($/MWh).

    Raises MalformedBatchError when the price count is not quantiles × horizon_intervals.
    """
    quantiles, horizon = len(message.quantile), int(message.horizon_intervals)
    if len(message.price_per_mwh) != quantiles * horizon:
        raise MalformedBatchError(f"PriceForecast v{message.version}: {len(message.price_per_mwh)} prices, expected "
                                  f"{quantiles} quantiles × {horizon} intervals")
    return np.asarray(message.price_per_mwh, dtype=np.float64).reshape(quantiles, horizon)


def median_price_per_mwh(message: fleet_pb2.PriceForecast) -> np.ndarray:
    """The forecast's P50 path ($/MWh per interval): the 0.5 quantile, else the one nearest to it."""
    prices = forecast_prices(message)
    if not len(message.quantile):
        raise MalformedBatchError(f"PriceForecast v{message.version} has no quantiles")
    nearest = int(np.argmin(np.abs(np.asarray(message.quantile) - 0.5)))
    median: np.ndarray = prices[nearest]
    return median
