"""The platform's copy of every site's latest plan, and the checks a plan passes before it is kept.

Plans arrive through the same ingestion path as telemetry (columnar batches on the sites' streams). A
plan that makes no sense is quarantined with one reason, counted, and never used; a valid plan replaces
the site's stored plan unless it is older (an earlier ``start_ms``) than the one already held, in which
case it is counted as ``superseded`` and ignored — nothing valid disappears unaccounted.

Reasons, checked in this order (the first that applies is the plan's reason):

- ``unknown_site``: the id is not a site of the fleet;
- ``non_finite``: a NaN or infinite value anywhere in the plan;
- ``unknown_forecast_version``: built on a version newer than any the platform published;
- ``battery_power_out_of_range``: planned power beyond the site's charge or discharge limit (1 % slack);
- ``negative_flexibility``: a flexibility bound below zero;
- ``soc_out_of_range``: planned stored energy below 0 or above the capacity (1 % slack).

Storage is one ``(sites × horizon)`` array per field, rows aligned with the fleet's sorted site ids, so
aggregation reads them without any per-site work. Units as in :mod:`algorithms.fleet.site_plan_types`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from algorithms.fleet.fleet_types import BoolArray, FloatArray, IntArray, SiteParameters, StrArray, site_positions
from algorithms.fleet.site_plan_types import NO_VERSION, SitePlans

SLACK = 0.01
"""Relative slack on power and energy limits (rounding at the device, not a licence to exceed them)."""

UNKNOWN_SITE = "unknown_site"
NON_FINITE = "non_finite"
UNKNOWN_FORECAST_VERSION = "unknown_forecast_version"
BATTERY_POWER_OUT_OF_RANGE = "battery_power_out_of_range"
NEGATIVE_FLEXIBILITY = "negative_flexibility"
SOC_OUT_OF_RANGE = "soc_out_of_range"

_PLAN_FIELDS = ("battery_power_kw", "net_export_kw", "discharge_flexibility_kw", "charge_flexibility_kw",
                "state_of_charge_kwh")


class PlanShapeError(ValueError):
    """A plan batch whose interval length or horizon differs from what the platform stores."""


@dataclass(frozen=True)
class PlanStore:
    """Latest valid plan per fleet site (rows aligned with the fleet's sorted site ids).

    ``start_ms`` is -1 and ``forecast_version`` :data:`NO_VERSION` for a site that never sent a plan;
    its rows of the per-interval arrays are NaN.
    """

    plan_interval_minutes: int
    horizon_intervals: int
    start_ms: IntArray
    forecast_version: IntArray
    received_at_ms: IntArray
    battery_power_kw: FloatArray
    net_export_kw: FloatArray
    discharge_flexibility_kw: FloatArray
    charge_flexibility_kw: FloatArray
    state_of_charge_kwh: FloatArray

    @classmethod
    def empty(cls, site_count: int, *, plan_interval_minutes: int, horizon_intervals: int) -> PlanStore:
        """A store of ``site_count`` sites none of which has planned yet."""
        if plan_interval_minutes <= 0 or horizon_intervals <= 0:
            raise PlanShapeError(f"plan_interval_minutes ({plan_interval_minutes}) and horizon_intervals "
                                 f"({horizon_intervals}) must be positive")
        nan = np.full((site_count, horizon_intervals), np.nan)
        return cls(plan_interval_minutes=plan_interval_minutes, horizon_intervals=horizon_intervals,
                   start_ms=np.full(site_count, -1, dtype=np.int64),
                   forecast_version=np.full(site_count, NO_VERSION, dtype=np.int64),
                   received_at_ms=np.full(site_count, -1, dtype=np.int64),
                   battery_power_kw=nan.copy(), net_export_kw=nan.copy(), discharge_flexibility_kw=nan.copy(),
                   charge_flexibility_kw=nan.copy(), state_of_charge_kwh=nan.copy())

    @property
    def planned(self) -> BoolArray:
        """Sites that hold a plan."""
        held: BoolArray = self.start_ms >= 0
        return held

    def plans(self, site_ids: StrArray, rows: IntArray) -> SitePlans:
        """The stored plans of ``rows`` (fleet rows of sites that hold one) as :class:`SitePlans`."""
        return SitePlans(site_ids=site_ids, forecast_version=self.forecast_version[rows],
                         start_ms=self.start_ms[rows], plan_interval_minutes=self.plan_interval_minutes,
                         battery_power_kw=self.battery_power_kw[rows], net_export_kw=self.net_export_kw[rows],
                         discharge_flexibility_kw=self.discharge_flexibility_kw[rows],
                         charge_flexibility_kw=self.charge_flexibility_kw[rows],
                         state_of_charge_kwh=self.state_of_charge_kwh[rows])


@dataclass(frozen=True)
class PlanIngestResult:
    """The store after a batch, and what happened to each plan of it.

    ``reasons`` has one entry per plan of the batch: ``""`` for a valid plan, else its quarantine reason.
    ``superseded`` counts valid plans older than the plan already held (kept out of the store).
    """

    store: PlanStore
    reasons: StrArray
    stored: int
    superseded: int

    @property
    def quarantined(self) -> dict[str, int]:
        """Quarantined plans by reason."""
        return dict(Counter(reason for reason in self.reasons.tolist() if reason))


def _first_reason(checks: list[tuple[str, BoolArray]], count: int) -> StrArray:
    reasons = np.full(count, "", dtype=object)
    for reason, failed in reversed(checks):  # the first check that fails wins
        reasons[failed] = reason
    return reasons.astype(np.str_) if count else np.array([], dtype="<U1")


def plan_reasons(parameters: SiteParameters, plans: SitePlans, latest_version: int) -> StrArray:
    """Quarantine reason of every plan of ``plans`` (``""`` when valid); see the module docstring."""
    rows = site_positions(parameters.site_ids, plans.site_ids)
    known = rows >= 0
    safe = np.maximum(rows, 0)
    matrices = [getattr(plans, name) for name in _PLAN_FIELDS]
    finite = np.all([np.isfinite(matrix).all(axis=1) for matrix in matrices], axis=0)
    with np.errstate(invalid="ignore"):
        limit_discharge = parameters.max_discharge_kw[safe, None] * (1 + SLACK)
        limit_charge = parameters.max_charge_kw[safe, None] * (1 + SLACK)
        power_ok = np.all((plans.battery_power_kw <= limit_discharge) & (plans.battery_power_kw >= -limit_charge),
                          axis=1)
        flexibility_ok = np.all((plans.discharge_flexibility_kw >= -SLACK) & (plans.charge_flexibility_kw >= -SLACK),
                                axis=1)
        capacity = parameters.capacity_kwh[safe, None]
        soc_ok = np.all((plans.state_of_charge_kwh >= -SLACK * capacity)
                        & (plans.state_of_charge_kwh <= capacity * (1 + SLACK)), axis=1)
    checks = [
        (UNKNOWN_SITE, ~known),
        (NON_FINITE, ~finite),
        (UNKNOWN_FORECAST_VERSION, (plans.forecast_version > latest_version) | (plans.forecast_version < 0)),
        (BATTERY_POWER_OUT_OF_RANGE, ~power_ok),
        (NEGATIVE_FLEXIBILITY, ~flexibility_ok),
        (SOC_OUT_OF_RANGE, ~soc_ok),
    ]
    return _first_reason(checks, plans.site_count)


def ingest_plans(parameters: SiteParameters, store: PlanStore, plans: SitePlans, *, latest_version: int,
                 now_ms: int) -> PlanIngestResult:
    """Check a batch of plans and keep the valid newest plan of each site (pure; vectorised).

    Args:
        parameters: the fleet's sites (limits for the checks).
        store: plans held so far.
        plans: the batch (any order; a site may appear more than once: its newest start wins).
        latest_version: newest forecast version published (plans naming a newer one are refused).
        now_ms: reception time (epoch ms UTC), recorded per stored plan.

    Raises:
        PlanShapeError: the batch's interval length or horizon is not the store's.
    """
    if plans.site_count and (plans.plan_interval_minutes != store.plan_interval_minutes
                             or plans.horizon_intervals != store.horizon_intervals):
        raise PlanShapeError(
            f"plans of {plans.horizon_intervals} × {plans.plan_interval_minutes}-minute intervals; the platform "
            f"stores {store.horizon_intervals} × {store.plan_interval_minutes}-minute plans")
    reasons = plan_reasons(parameters, plans, latest_version)
    valid = np.flatnonzero(reasons == "")
    rows = site_positions(parameters.site_ids, plans.site_ids[valid])
    newer = plans.start_ms[valid] >= store.start_ms[rows]
    candidates, candidate_rows = valid[newer], rows[newer]
    # Several plans of one site in a batch: keep the one with the latest start (then the last sent).
    order = np.lexsort((np.arange(len(candidates)), plans.start_ms[candidates], candidate_rows))
    last_of_row = np.ones(len(order), dtype=np.bool_)
    last_of_row[:-1] = candidate_rows[order][1:] != candidate_rows[order][:-1]
    chosen, chosen_rows = candidates[order][last_of_row], candidate_rows[order][last_of_row]
    updated = {name: getattr(store, name).copy() for name in _PLAN_FIELDS}
    for name in _PLAN_FIELDS:
        updated[name][chosen_rows] = getattr(plans, name)[chosen]
    start_ms, version, received = store.start_ms.copy(), store.forecast_version.copy(), store.received_at_ms.copy()
    start_ms[chosen_rows] = plans.start_ms[chosen]
    version[chosen_rows] = plans.forecast_version[chosen]
    received[chosen_rows] = now_ms
    new_store = replace(store, start_ms=start_ms, forecast_version=version, received_at_ms=received, **updated)
    return PlanIngestResult(store=new_store, reasons=reasons, stored=len(chosen),
                            superseded=int(len(valid) - len(chosen)))
