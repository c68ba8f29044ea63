"""Activities of the peak-shaving workflow: thin adapters to PostgreSQL (load history, asset graph) and the
fleet gateway (gRPC ``GetAggregate``), and the planning. The forecast itself is the pure
:func:`algorithms.fleet.peak_shaving.forecast_node_load`, run here in a thread (statsmodels, ~0.2 s); the
plan is the pure :func:`algorithms.fleet.peak_shaving.plan_node_peak_shaving` (numpy, ~1 ms), run here so
the workflow imports no numpy.
"""

from __future__ import annotations

import asyncio

import numpy as np
import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.gateway_client import GatewayActivities, utc
from activities.peak_shaving_facts import (
    INSUFFICIENT_HISTORY,
    INVALID_PEAK_SHAVING,
    FleetCapacity,
    FleetCapacityInput,
    NodeForecast,
    NodeForecastInput,
    PeakShavingPlanInput,
)
from algorithms.fleet.peak_shaving import (
    INTERVAL_MS,
    LoadForecast,
    forecast_node_load,
    plan_node_peak_shaving,
    regular_series,
)
from algorithms.fleet.peak_shaving_types import InsufficientHistoryError, PeakShavingInputError, PlannedPeakShaving
from models.assets import AssetGraphError, node_site_parameters
from models.node_load import read_node_load
from vpp.v1 import fleet_pb2

MS_PER_DAY = 86_400_000


def forecast_from_history(request: NodeForecastInput, interval_end_ms: np.ndarray, values_mw: np.ndarray
                          ) -> tuple[LoadForecast, int]:
    """The forecast of ``request`` from the node's recorded rows: put on the 5-minute grid ending at the
    origin (floored to the grid; gaps NaN) over ``history_days``, then forecast. Returns it and the
    number of valid history values used."""
    last_end = request.origin_ms - request.origin_ms % INTERVAL_MS
    first_end = last_end - (round(request.history_days * MS_PER_DAY) // INTERVAL_MS - 1) * INTERVAL_MS
    grid, values = regular_series(interval_end_ms, values_mw, first_end, last_end)
    forecast = forecast_node_load(values, grid, request.horizon_intervals, request.quantiles)
    return forecast, int(np.count_nonzero(~np.isnan(values)))


def load_forecast_of(fact: NodeForecast) -> LoadForecast:
    """The :class:`LoadForecast` (arrays, MW) carried by a :class:`NodeForecast` (lists)."""
    return LoadForecast(interval_end_ms=np.array(fact.interval_end_ms, dtype=np.int64), interval_ms=fact.interval_ms,
                        quantiles=tuple(fact.quantiles),
                        values_mw=np.array(fact.values_mw, dtype=np.float64), method=fact.method)


@activity.defn(name="plan_peak_shaves")
async def plan_peak_shaves(request: PeakShavingPlanInput) -> PlannedPeakShaving:
    """The node's shaves and the figures the plan shows, from its forecast and its batteries' capacity
    (pure and deterministic: a retry plans the same). Input the planning cannot use (a malformed forecast,
    a non-finite threshold or capacity) fails at once (non-retryable ``InvalidPeakShaving``)."""
    try:
        return plan_node_peak_shaving(load_forecast_of(request.forecast), request.threshold_mw,
                                      request.capacity.energy_lower_mwh, request.capacity.max_discharge_mw,
                                      request.rules)
    except ValueError as exc:  # PeakShavingInputError, or a ragged forecast numpy cannot make an array of
        raise ApplicationError(f"node {request.node_id}: {exc}", type=INVALID_PEAK_SHAVING,
                               non_retryable=True) from exc


class PeakShavingActivities(GatewayActivities):
    """The peak-shaving activities, bound to a fleet gateway address and a database URL."""

    @activity.defn(name="forecast_node_load")
    async def forecast_node_load(self, request: NodeForecastInput) -> NodeForecast:
        """Read the node's history (``history_days`` before the origin) and forecast its load."""

        def run() -> NodeForecast:
            window_ms = round(request.history_days * MS_PER_DAY)
            with psycopg.connect(self.database_url) as conn:
                history = read_node_load(conn, request.node_id, request.origin_ms - window_ms, request.origin_ms)
            values = history.series(request.load_column)
            forecast, used = forecast_from_history(request, history.interval_end_ms, values)
            return NodeForecast(
                node_id=request.node_id, interval_end_ms=tuple(forecast.interval_end_ms.tolist()),
                interval_ms=forecast.interval_ms, quantiles=forecast.quantiles,
                values_mw=tuple(tuple(row) for row in forecast.values_mw.tolist()), method=forecast.method,
                history_intervals=used)

        try:
            return await asyncio.to_thread(run)
        except InsufficientHistoryError as exc:
            raise ApplicationError(f"node {request.node_id}: {exc}", type=INSUFFICIENT_HISTORY,
                                   non_retryable=True) from exc
        except PeakShavingInputError as exc:
            raise ApplicationError(f"node {request.node_id}: {exc}", type=INVALID_PEAK_SHAVING,
                                   non_retryable=True) from exc

    @activity.defn(name="node_fleet_capacity")
    async def node_fleet_capacity(self, request: FleetCapacityInput) -> FleetCapacity:
        """The node's sites (asset graph, as of the origin), their total discharge power (site facts) and
        the energy they hold above reserves (the fleet gateway's live aggregate)."""

        def resolve() -> tuple[np.ndarray, float]:
            with psycopg.connect(self.database_url) as conn:
                parameters = node_site_parameters(conn, request.node_id, utc(request.as_of_ms), request.hierarchy)
            return parameters.site_ids, float(parameters.max_discharge_kw.sum()) / 1000.0

        try:
            site_ids, max_discharge_mw = await asyncio.to_thread(resolve)
        except AssetGraphError as exc:
            raise ApplicationError(str(exc), type=INVALID_PEAK_SHAVING, non_retryable=True) from exc
        if len(site_ids) == 0:
            return FleetCapacity(site_count=0, reporting_sites=0, energy_available_mwh=0.0, energy_lower_mwh=0.0,
                                 max_discharge_mw=0.0, description=f"node {request.node_id} has no sites")
        response: fleet_pb2.GetAggregateResponse = await self._stub().GetAggregate(
            fleet_pb2.GetAggregateRequest(site_id=site_ids.tolist()), timeout=30)
        return FleetCapacity(
            site_count=len(site_ids), reporting_sites=response.reporting_sites,
            energy_available_mwh=response.discharge_energy_available_mwh,
            energy_lower_mwh=response.discharge_energy_lower_mwh, max_discharge_mw=max_discharge_mw,
            description=response.description)
