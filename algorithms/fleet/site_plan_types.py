"""Local site plans as arrays: what each home battery intends to do over its next horizon.

The co-optimised VPP does not solve one giant problem over every home. Every 15 minutes the platform
publishes a versioned market price forecast; each site plans its own battery against its household
load and PV forecasts, its tariff, its owner's backup reserve and the market signal, and sends the plan
back. These containers carry those inputs and plans between the pure planner
(:mod:`algorithms.fleet.site_plan`), the fleet gateway, plan aggregation and the fleet bid.

Conventions (as in :mod:`algorithms.fleet.fleet_types`): site power in kW, + discharge (export) / − charge;
energy kWh; rows aligned with sorted site ids; plan intervals are ``plan_interval_minutes`` long and the
plan's first interval starts at ``start_ms`` (epoch ms UTC), so interval ``k`` covers
``[start_ms + k·Δ, start_ms + (k+1)·Δ)``. Prices are $/MWh (the market's unit), tariffs $/kWh (the
bill's unit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms.fleet.fleet_types import BoolArray, FloatArray, IntArray, SiteParameters, StrArray

NO_VERSION = 0
"""``forecast_version`` of a site that holds no price forecast yet (versions start at 1)."""


def _check_matrix(name: str, value: np.ndarray, shape: tuple[int, int]) -> None:
    if value.shape != shape:
        raise ValueError(f"{name} has shape {value.shape}, expected {shape}")


@dataclass(frozen=True)
class Tariff:
    """A home's retail tariff per plan interval ($/kWh): what importing costs and exporting earns.

    Attributes:
        import_per_kwh: price of energy imported from the grid, one per plan interval ($/kWh).
        feed_in_per_kwh: price paid for energy exported, one per plan interval ($/kWh).
    """

    import_per_kwh: FloatArray
    feed_in_per_kwh: FloatArray

    def __post_init__(self) -> None:
        if self.import_per_kwh.shape != self.feed_in_per_kwh.shape or self.import_per_kwh.ndim != 1:
            raise ValueError("Tariff arrays must be one-dimensional and of equal length")


@dataclass(frozen=True)
class SitePlanInputs:
    """Everything a batch of sites needs to plan its next horizon (``n`` sites × ``T`` plan intervals).

    Attributes:
        parameters: the sites' batteries (``n`` rows).
        state_of_charge_kwh: stored energy now (kWh), ``(n,)``.
        load_forecast_kw: expected household consumption per interval (kW, ≥ 0), ``(n, T)``.
        pv_forecast_kw: expected rooftop PV output per interval (kW, ≥ 0), ``(n, T)``.
        tariff: the retail tariff per interval (the same for every site of the batch).
        market_price_per_mwh: the market signal per interval ($/MWh; the forecast's P50 resampled to
            the plan intervals), ``(T,)``.
        market_share: share of the market value of the battery's power that the programme passes to
            the owner (0 = the site optimises its bill only; 1 = the full spot value).
        storm_warning: sites under a storm warning, ``(n,)``: their reserve rises to
            ``storm_reserve_fraction`` of capacity (never below the owner's own reserve).
        storm_reserve_fraction: reserve under a storm warning (fraction of capacity, 0–1).
        start_ms: start of the first plan interval (epoch ms UTC).
        plan_interval_minutes: plan interval length (minutes).
        forecast_version: version of the price forecast the plan is built on (``NO_VERSION`` if none).
    """

    parameters: SiteParameters
    state_of_charge_kwh: FloatArray
    load_forecast_kw: FloatArray
    pv_forecast_kw: FloatArray
    tariff: Tariff
    market_price_per_mwh: FloatArray
    market_share: float
    storm_warning: BoolArray
    storm_reserve_fraction: float
    start_ms: int
    plan_interval_minutes: int
    forecast_version: int

    def __post_init__(self) -> None:
        site_count = self.parameters.site_count
        horizon = len(self.market_price_per_mwh)
        _check_matrix("load_forecast_kw", self.load_forecast_kw, (site_count, horizon))
        _check_matrix("pv_forecast_kw", self.pv_forecast_kw, (site_count, horizon))
        if self.state_of_charge_kwh.shape != (site_count,) or self.storm_warning.shape != (site_count,):
            raise ValueError(f"state_of_charge_kwh and storm_warning must have shape ({site_count},)")
        if len(self.tariff.import_per_kwh) != horizon:
            raise ValueError(f"the tariff covers {len(self.tariff.import_per_kwh)} intervals, the prices {horizon}")
        if self.plan_interval_minutes <= 0:
            raise ValueError(f"plan_interval_minutes must be positive, got {self.plan_interval_minutes}")

    @property
    def horizon_intervals(self) -> int:
        """Number of plan intervals ``T``."""
        return len(self.market_price_per_mwh)


@dataclass(frozen=True)
class SitePlans:
    """Plans of ``n`` sites over ``T`` intervals, rows aligned with ``site_ids``.

    Attributes:
        site_ids: the planning sites (sorted, unique).
        forecast_version: the price-forecast version each plan was built on, ``(n,)`` (``NO_VERSION``:
            planned without a market forecast).
        start_ms: start of each plan's first interval (epoch ms UTC), ``(n,)``.
        plan_interval_minutes: interval length (minutes), the same for the batch.
        battery_power_kw: intended battery power per interval (kW, + discharge / − charge), ``(n, T)``.
        net_export_kw: intended power at the meter (kW, + export / − import) = battery + PV − load,
            ``(n, T)``.
        discharge_flexibility_kw: extra discharge the site could give in each interval on top of its
            plan without leaving its power and reserve limits (kW, ≥ 0), ``(n, T)``.
        charge_flexibility_kw: extra charge it could take (kW, ≥ 0), ``(n, T)``.
        state_of_charge_kwh: planned stored energy at the END of each interval (kWh), ``(n, T)``.
    """

    site_ids: StrArray
    forecast_version: IntArray
    start_ms: IntArray
    plan_interval_minutes: int
    battery_power_kw: FloatArray
    net_export_kw: FloatArray
    discharge_flexibility_kw: FloatArray
    charge_flexibility_kw: FloatArray
    state_of_charge_kwh: FloatArray

    def __post_init__(self) -> None:
        site_count = len(self.site_ids)
        if self.forecast_version.shape != (site_count,) or self.start_ms.shape != (site_count,):
            raise ValueError(f"forecast_version and start_ms must have shape ({site_count},)")
        shape = self.battery_power_kw.shape
        if len(shape) != 2 or shape[0] != site_count:
            raise ValueError(f"battery_power_kw has shape {shape}, expected ({site_count}, T)")
        for name in ("net_export_kw", "discharge_flexibility_kw", "charge_flexibility_kw", "state_of_charge_kwh"):
            _check_matrix(name, getattr(self, name), shape)

    @property
    def site_count(self) -> int:
        """Number of sites ``n``."""
        return len(self.site_ids)

    @property
    def horizon_intervals(self) -> int:
        """Number of plan intervals ``T``."""
        return int(self.battery_power_kw.shape[1])

    def take(self, rows: IntArray | BoolArray, *, shift_ms: int = 0) -> SitePlans:
        """The plans of ``rows`` (indices or a mask, in that order), their starts moved by ``shift_ms``."""
        return SitePlans(site_ids=self.site_ids[rows], forecast_version=self.forecast_version[rows],
                         start_ms=self.start_ms[rows] + shift_ms, plan_interval_minutes=self.plan_interval_minutes,
                         battery_power_kw=self.battery_power_kw[rows], net_export_kw=self.net_export_kw[rows],
                         discharge_flexibility_kw=self.discharge_flexibility_kw[rows],
                         charge_flexibility_kw=self.charge_flexibility_kw[rows],
                         state_of_charge_kwh=self.state_of_charge_kwh[rows])
