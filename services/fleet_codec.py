"""Columnar protobuf batches of the fleet gateway <-> the struct-of-arrays types of algorithms/fleet_types.

Each batch message carries one repeated field per measurement; converting is one array build per field
(no per-reading Python work beyond what protobuf's repeated containers do). A batch whose fields have
different lengths is malformed and raises :class:`MalformedBatchError` naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from algorithms.fleet_types import AckBatch, SetpointBatch, TelemetryBatch
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
