"""The battery as the algorithms see it: registered limits in MW, MWh and fractions of 1."""

from __future__ import annotations

from dataclasses import dataclass

from settings import BatterySettings
from vpp.v1 import common_pb2


@dataclass(frozen=True)
class BatteryParams:
    """A bidirectional battery unit. MW, MWh, efficiencies and SoC limits as fractions of 1."""

    unit_id: str
    region: str
    power_mw: float
    energy_mwh: float
    charge_efficiency: float
    discharge_efficiency: float
    soc_min_fraction: float
    soc_max_fraction: float
    mlf_gen: float
    mlf_load: float
    ramp_rate_mw_per_min: float
    min_ramp_rate_mw_per_min: float

    @property
    def soc_min_mwh(self) -> float:
        """Lowest allowed stored energy (MWh)."""
        return self.energy_mwh * self.soc_min_fraction

    @property
    def soc_max_mwh(self) -> float:
        """Highest allowed stored energy (MWh)."""
        return self.energy_mwh * self.soc_max_fraction


def battery_from_spec(spec: common_pb2.BatterySpec) -> BatteryParams:
    """BatteryParams of a wire BatterySpec."""
    return BatteryParams(
        unit_id=spec.unit_id,
        region=spec.region,
        power_mw=spec.power_mw,
        energy_mwh=spec.energy_mwh,
        charge_efficiency=spec.charge_efficiency,
        discharge_efficiency=spec.discharge_efficiency,
        soc_min_fraction=spec.soc_min_fraction,
        soc_max_fraction=spec.soc_max_fraction,
        mlf_gen=spec.mlf_gen,
        mlf_load=spec.mlf_load,
        ramp_rate_mw_per_min=spec.ramp_rate_mw_per_min,
        min_ramp_rate_mw_per_min=spec.min_ramp_rate_mw_per_min,
    )


def battery_spec_from_settings(battery: BatterySettings) -> common_pb2.BatterySpec:
    """Wire BatterySpec of the configured battery."""
    return common_pb2.BatterySpec(
        unit_id=battery.unit_id,
        region=battery.region,
        power_mw=battery.power_mw,
        energy_mwh=battery.energy_mwh,
        charge_efficiency=battery.charge_efficiency,
        discharge_efficiency=battery.discharge_efficiency,
        soc_min_fraction=battery.soc_min_fraction,
        soc_max_fraction=battery.soc_max_fraction,
        mlf_gen=battery.mlf_gen,
        mlf_load=battery.mlf_load,
        ramp_rate_mw_per_min=battery.ramp_rate_mw_per_min,
        min_ramp_rate_mw_per_min=battery.min_ramp_rate_mw_per_min,
    )
