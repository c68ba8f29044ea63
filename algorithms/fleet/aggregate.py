"""Aggregates at every node of an asset graph, with bounds that say how sure each number is.

:func:`aggregate_fleet` answers, for all nodes at once, "how much could this node discharge / charge,
how many of its sites are telling us, and how sure are we" — e.g. *10.0 MWh available to discharge
(±0.4 MWh), 95 % of 1,000 expected sites reporting, 12 stale*. It computes a handful of per-site
columns (vectorised over sites) and sums them per node with one sparse matrix product
``membership (nodes × sites) @ columns (sites × k)``; no Python loop over nodes or sites.

Site classes (per site, at ``now_ms``):

* **reporting** (fresh): has a reading no older than ``stale_after_ms``;
* **stale**: has a reading, older than that;
* **never reported**: no reading (``measured_at_ms == NEVER``).

Per-site figures (kW, kWh; nodes get MW, MWh), from stored energy ``E = SoC/100 × capacity``:

* ``discharge_energy`` = max(E − reserve × capacity, 0) × discharge efficiency (energy the owner's
  backup reserve allows the site to export);
* ``charge_energy`` = (capacity − E) / charge efficiency (energy it could draw until full);
* ``discharge_power`` = min(max discharge kW, discharge_energy / horizon h): the power it could hold for
  the whole ``power_horizon_h``; ``charge_power`` symmetric;
* ``battery_power``: the last measured battery power (+ discharge / − charge).

Each node figure is a :class:`BoundedFigure`: the estimate and a lower/upper bound made of

1. sites with a reading (reporting or stale): their value from their last reading; a reading of age
   *a* hours bounds the stored energy to ``[E − max_discharge × a / eff_d, E + max_charge × a × eff_c]``
   (clipped to [0, capacity]), and the figures are monotone in E, so the bounds are the figures at
   those energies. (A fresh reading's interval is tiny; a stale one's grows with its age.) A stale
   site's battery power can be anything its inverter allows now: [−max charge, +max discharge].
2. never-reported sites (*m* of them), assumed to be like the node's *n* reporting sites: estimate
   ``mean × m``; bounds ``± z × s × sqrt(m + m²/n)`` (s = sample std of the reporting sites' values;
   the ``m²/n`` term is the uncertainty of the mean itself — a prediction interval for the sum of m
   new draws), clipped to the sites' physical range (0 … their figures at full/empty). With fewer than
   two reporting sites there is no spread to go by: the bounds are the physical range, and the
   estimate its midpoint (or mean × m, clipped, with exactly one reporting site).

The bounds are as good as the "missing at random" assumption of (2): a node whose silent sites are
systematically different (e.g. one feeder down) can fall outside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from algorithms.fleet.fleet_types import NEVER, BoolArray, FleetState, FloatArray, IntArray, SiteParameters
from algorithms.fleet.telemetry import FleetInputError, check_state_matches

MS_PER_HOUR = 3_600_000.0
FIGURES = ("battery_power", "discharge_energy", "charge_energy", "discharge_power", "charge_power")
"""The bounded node figures, in column order."""
_COLUMNS_PER_FIGURE = 7  # reported, reported low, reported high, fresh centred, fresh centred², never min, never max
_COUNT_COLUMNS = 5  # expected, fresh, stale, never, age sum over reported sites


@dataclass(frozen=True)
class BoundedFigure:
    """One figure per node with how sure it is (MW or MWh; arrays of length node count).

    Attributes:
        estimate: best estimate over all the node's expected sites.
        lower: lower bound (at the aggregation's confidence for the never-reported part).
        upper: upper bound.
        reported: sum over the sites that have a reading (reporting or stale), last values, no estimate
            for the silent ones.
    """

    estimate: FloatArray
    lower: FloatArray
    upper: FloatArray
    reported: FloatArray


@dataclass(frozen=True)
class NodeAggregates:
    """Aggregates of every node of a membership matrix, one array entry per node (row).

    Attributes:
        expected_sites: sites under the node.
        reporting_sites: sites with a fresh reading.
        stale_sites: sites whose latest reading is older than ``stale_after_ms``.
        never_reported_sites: sites without any reading.
        reporting_fraction: reporting / expected (NaN for a node without sites).
        mean_reading_age_s: mean age of the latest readings of sites that have one (s; NaN if none).
        oldest_reading_age_s: age of the oldest latest reading (s; NaN if none).
        battery_power_mw: measured battery power (+ discharge / − charge).
        discharge_energy_available_mwh: energy deliverable above the owners' backup reserves.
        charge_energy_available_mwh: energy that could be drawn until full.
        discharge_power_available_mw: discharge power sustainable over ``power_horizon_h``.
        charge_power_available_mw: charge power sustainable over ``power_horizon_h``.
        now_ms, stale_after_ms, power_horizon_h, confidence_z: the settings used.
    """

    expected_sites: IntArray
    reporting_sites: IntArray
    stale_sites: IntArray
    never_reported_sites: IntArray
    reporting_fraction: FloatArray
    mean_reading_age_s: FloatArray
    oldest_reading_age_s: FloatArray
    battery_power_mw: BoundedFigure
    discharge_energy_available_mwh: BoundedFigure
    charge_energy_available_mwh: BoundedFigure
    discharge_power_available_mw: BoundedFigure
    charge_power_available_mw: BoundedFigure
    now_ms: int
    stale_after_ms: int
    power_horizon_h: float
    confidence_z: float

    @property
    def node_count(self) -> int:
        """Number of nodes."""
        return len(self.expected_sites)


@dataclass(frozen=True)
class _SiteFigures:
    """Per-site point value, bounds for sites with a reading, and physical range (kW / kWh)."""

    point: FloatArray
    low: FloatArray
    high: FloatArray
    physical_min: FloatArray
    physical_max: FloatArray


def discharge_energy_kwh(parameters: SiteParameters, stored_kwh: FloatArray) -> FloatArray:
    """Energy a site can export above its owner's backup reserve (kWh) given its stored energy (kWh)."""
    reserve_kwh = parameters.backup_reserve_fraction * parameters.capacity_kwh
    return np.maximum(stored_kwh - reserve_kwh, 0.0) * parameters.discharge_efficiency


def charge_energy_kwh(parameters: SiteParameters, stored_kwh: FloatArray) -> FloatArray:
    """Energy a site can draw until full (kWh, grid side) given its stored energy (kWh)."""
    return np.maximum(parameters.capacity_kwh - stored_kwh, 0.0) / parameters.charge_efficiency


def _energy_figures(parameters: SiteParameters, stored: FloatArray, low: FloatArray, high: FloatArray,
                    horizon_h: float) -> list[_SiteFigures]:
    capacity = parameters.capacity_kwh
    empty = np.zeros_like(capacity)

    def discharge_power(energy_kwh: FloatArray) -> FloatArray:
        return np.minimum(parameters.max_discharge_kw, discharge_energy_kwh(parameters, energy_kwh) / horizon_h)

    def charge_power(energy_kwh: FloatArray) -> FloatArray:
        return np.minimum(parameters.max_charge_kw, charge_energy_kwh(parameters, energy_kwh) / horizon_h)

    def discharge_energy(energy_kwh: FloatArray) -> FloatArray:
        return discharge_energy_kwh(parameters, energy_kwh)

    def charge_energy(energy_kwh: FloatArray) -> FloatArray:
        return charge_energy_kwh(parameters, energy_kwh)

    # Discharge figures rise with stored energy (bounds at low / high energy), charge figures fall.
    return [
        _SiteFigures(discharge_energy(stored), discharge_energy(low), discharge_energy(high), empty,
                     discharge_energy(capacity)),
        _SiteFigures(charge_energy(stored), charge_energy(high), charge_energy(low), empty, charge_energy(empty)),
        _SiteFigures(discharge_power(stored), discharge_power(low), discharge_power(high), empty,
                     discharge_power(capacity)),
        _SiteFigures(charge_power(stored), charge_power(high), charge_power(low), empty, charge_power(empty)),
    ]


def _site_figures(parameters: SiteParameters, state: FleetState, reported: BoolArray, fresh: BoolArray,
                  age_h: FloatArray, horizon_h: float) -> list[_SiteFigures]:
    """The per-site figures in :data:`FIGURES` order; values of sites without a reading are 0."""
    capacity = parameters.capacity_kwh
    stored = np.where(reported, np.nan_to_num(state.state_of_charge_pct) / 100.0, 0.0) * capacity
    drained = stored - parameters.max_discharge_kw * age_h / parameters.discharge_efficiency
    filled = stored + parameters.max_charge_kw * age_h * parameters.charge_efficiency
    low = np.clip(drained, 0.0, capacity)
    high = np.clip(filled, 0.0, capacity)
    measured_kw = np.where(reported, np.nan_to_num(state.battery_power_kw), 0.0)
    power_low = np.where(fresh, measured_kw, np.minimum(-parameters.max_charge_kw, measured_kw))
    power_high = np.where(fresh, measured_kw, np.maximum(parameters.max_discharge_kw, measured_kw))
    power = _SiteFigures(measured_kw, power_low, power_high, -parameters.max_charge_kw, parameters.max_discharge_kw)
    return [power, *_energy_figures(parameters, stored, low, high, horizon_h)]


def _site_columns(figures: list[_SiteFigures], reported: BoolArray, fresh: BoolArray, never: BoolArray,
                  age_s: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Stacked per-site columns (sites × k, C order) and the per-figure centring constants.

    The columns are written as contiguous rows of a (k × sites) array and transposed once: much faster
    than writing strided columns.
    """
    site_count = len(reported)
    rows = np.empty((_COUNT_COLUMNS + _COLUMNS_PER_FIGURE * len(figures), site_count))
    has = reported.astype(np.float64)
    is_fresh = fresh.astype(np.float64)
    is_never = never.astype(np.float64)
    rows[0] = 1.0
    rows[1] = is_fresh
    rows[2] = reported & ~fresh
    rows[3] = is_never
    np.multiply(has, age_s, out=rows[4])
    centres = np.zeros(len(figures))
    fresh_count = int(fresh.sum())
    for index, figure in enumerate(figures):
        centre = float(figure.point[fresh].sum() / fresh_count) if fresh_count else 0.0
        centres[index] = centre
        first = _COUNT_COLUMNS + index * _COLUMNS_PER_FIGURE
        np.multiply(figure.point, has, out=rows[first])
        np.multiply(figure.low, has, out=rows[first + 1])
        np.multiply(figure.high, has, out=rows[first + 2])
        centred = rows[first + 3]
        np.subtract(figure.point, centre, out=centred)
        centred *= is_fresh
        np.multiply(centred, centred, out=rows[first + 4])
        np.multiply(figure.physical_min, is_never, out=rows[first + 5])
        np.multiply(figure.physical_max, is_never, out=rows[first + 6])
    return np.ascontiguousarray(rows.T), centres


def _bounded(sums: FloatArray, centre: float, fresh_n: FloatArray, never_m: FloatArray, z: float,
             to_mega: float) -> BoundedFigure:
    reported, reported_low, reported_high, centred, centred_sq, never_min, never_max = sums.T
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = centre + centred / fresh_n
        variance = np.maximum((centred_sq - centred * centred / fresh_n) / (fresh_n - 1.0), 0.0)
        spread = z * np.sqrt(variance) * np.sqrt(never_m + never_m * never_m / fresh_n)
    midpoint = (never_min + never_max) / 2.0
    missing = np.where(fresh_n >= 1, np.clip(mean * never_m, never_min, never_max), midpoint)
    has_spread = fresh_n >= 2
    missing_low = np.where(has_spread, np.clip(missing - spread, never_min, never_max), never_min)
    missing_high = np.where(has_spread, np.clip(missing + spread, never_min, never_max), never_max)
    no_missing = never_m == 0
    missing = np.where(no_missing, 0.0, missing)
    missing_low = np.where(no_missing, 0.0, missing_low)
    missing_high = np.where(no_missing, 0.0, missing_high)
    return BoundedFigure(
        estimate=(reported + missing) * to_mega,
        lower=(reported_low + missing_low) * to_mega,
        upper=(reported_high + missing_high) * to_mega,
        reported=reported * to_mega,
    )


def _as_membership(membership_matrix: sp.csr_matrix | sp.csr_array, site_count: int) -> sp.csr_matrix:
    if not sp.issparse(membership_matrix):
        raise FleetInputError("membership_matrix must be a scipy.sparse matrix (nodes × sites)")
    membership = sp.csr_matrix(membership_matrix)
    if membership.shape[1] != site_count:
        raise FleetInputError(
            f"membership_matrix has {membership.shape[1]} site columns but the parameters describe {site_count} sites"
        )
    if not membership.has_canonical_format:
        membership = membership.copy()
        membership.sum_duplicates()
    if membership.nnz and not bool(np.all(membership.data == 1.0)):
        raise FleetInputError("membership_matrix entries must be 1.0 (site under node); found other values")
    return membership


def _oldest_age_s(membership: sp.csr_matrix, age_s: FloatArray) -> FloatArray:
    """Largest age among each node's sites that have a reading (NaN where none): one reduceat."""
    values = age_s[membership.indices]  # NaN for sites without a reading
    values = np.where(np.isnan(values), -np.inf, values)
    node_count = membership.shape[0]
    oldest = np.full(node_count, -np.inf)
    starts = membership.indptr[:-1]
    non_empty = np.flatnonzero(membership.indptr[1:] > starts)
    if len(values):
        oldest[non_empty] = np.maximum.reduceat(values, starts[non_empty])
    return np.where(np.isinf(oldest), np.nan, oldest)


def aggregate_fleet(parameters: SiteParameters, state: FleetState,
                    membership_matrix: sp.csr_matrix | sp.csr_array, now_ms: int, stale_after_ms: int = 30_000,
                    confidence_z: float = 1.96, power_horizon_h: float = 1.0) -> NodeAggregates:
    """Aggregate every node of a hierarchy at once, with bounds (see the module docstring).

    Args:
        parameters: the sites (kW, kWh, fractions), rows aligned with ``state``.
        state: the latest reading per site.
        membership_matrix: scipy.sparse (nodes × sites), 1.0 where the site is under the node (directly
            or through any number of levels); any hierarchy or overlapping groups.
        now_ms: the clock (epoch ms UTC) ages are measured from.
        stale_after_ms: a reading older than this is stale (ms, > 0).
        confidence_z: normal quantile of the bounds for never-reported sites (1.96 ≈ 95 %).
        power_horizon_h: the duration (h) the available power figures must be sustainable for.

    Returns:
        :class:`NodeAggregates` (MW, MWh, counts, seconds), one entry per node.

    Raises:
        FleetInputError: misaligned state, a membership matrix of the wrong width or with entries ≠ 1,
            or a non-positive ``stale_after_ms`` / ``power_horizon_h`` / negative ``confidence_z``.
    """
    check_state_matches(parameters, state)
    if stale_after_ms <= 0 or not power_horizon_h > 0 or not confidence_z >= 0:
        raise FleetInputError(
            f"need stale_after_ms > 0, power_horizon_h > 0, confidence_z ≥ 0; got {stale_after_ms}, "
            f"{power_horizon_h}, {confidence_z}"
        )
    membership = _as_membership(membership_matrix, parameters.site_count)
    reported = state.measured_at_ms != NEVER
    age_ms = np.where(reported, np.maximum(now_ms - state.measured_at_ms, 0), 0)
    fresh = reported & (age_ms <= stale_after_ms)
    age_h = age_ms / MS_PER_HOUR
    age_s = age_ms / 1000.0
    figures = _site_figures(parameters, state, reported, fresh, age_h, power_horizon_h)
    columns, centres = _site_columns(figures, reported, fresh, ~reported, age_s)
    sums = np.asarray(membership @ columns)

    expected, fresh_n, stale_n, never_m, age_sum = sums[:, :_COUNT_COLUMNS].T
    bounded = []
    for index in range(len(FIGURES)):
        start = _COUNT_COLUMNS + index * _COLUMNS_PER_FIGURE
        bounded.append(_bounded(sums[:, start:start + _COLUMNS_PER_FIGURE], float(centres[index]), fresh_n,
                                never_m, confidence_z, 1e-3))
    with np.errstate(invalid="ignore", divide="ignore"):
        reporting_fraction = np.where(expected > 0, fresh_n / expected, np.nan)
        mean_age = np.where(fresh_n + stale_n > 0, age_sum / (fresh_n + stale_n), np.nan)
    power, discharge_energy, charge_energy, discharge_power, charge_power = bounded
    return NodeAggregates(
        expected_sites=np.rint(expected).astype(np.int64),
        reporting_sites=np.rint(fresh_n).astype(np.int64),
        stale_sites=np.rint(stale_n).astype(np.int64),
        never_reported_sites=np.rint(never_m).astype(np.int64),
        reporting_fraction=reporting_fraction,
        mean_reading_age_s=mean_age,
        oldest_reading_age_s=_oldest_age_s(membership, np.where(reported, age_s, np.nan)),
        battery_power_mw=power,
        discharge_energy_available_mwh=discharge_energy,
        charge_energy_available_mwh=charge_energy,
        discharge_power_available_mw=discharge_power,
        charge_power_available_mw=charge_power,
        now_ms=now_ms,
        stale_after_ms=stale_after_ms,
        power_horizon_h=power_horizon_h,
        confidence_z=confidence_z,
    )


DescribedFigure = Literal["discharge_energy", "charge_energy", "discharge_power", "charge_power", "battery_power"]
_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "discharge_energy": ("discharge_energy_available_mwh", "MWh available to discharge"),
    "charge_energy": ("charge_energy_available_mwh", "MWh available to charge"),
    "discharge_power": ("discharge_power_available_mw", "MW of discharge power available"),
    "charge_power": ("charge_power_available_mw", "MW of charge power available"),
    "battery_power": ("battery_power_mw", "MW battery power (+ discharge)"),
}


def spread_decimals(spread: float) -> int:
    """Decimals that show a spread with one significant digit (1 … 3)."""
    if not spread > 0 or not np.isfinite(spread):
        return 1
    return int(min(max(1, -np.floor(np.log10(spread))), 3))


def uncertainty_text(below: float, above: float, unit: str, decimals: int) -> str:
    """A bound as people read it: ``±0.4 MW`` when symmetric (within 5 %), else ``−0.2/+0.5 MW``."""
    if abs(below - above) <= 0.05 * max(below, above) + 1e-9:
        return f"±{max(below, above):,.{decimals}f} {unit}"
    return f"−{below:,.{decimals}f}/+{above:,.{decimals}f} {unit}"


def describe(aggregates: NodeAggregates, node_index: int, figure: DescribedFigure = "discharge_energy") -> str:
    """One readable line for a node, e.g. ``"10.0 MWh available to discharge (±0.4 MWh), 95 % of 1,000
    expected sites reporting, 12 stale"`` (never-reported sites are named when there are any)."""
    if not 0 <= node_index < aggregates.node_count:
        raise FleetInputError(f"node_index {node_index} outside 0..{aggregates.node_count - 1}")
    attribute, text = _DESCRIPTIONS[figure]
    bounded: BoundedFigure = getattr(aggregates, attribute)
    estimate = float(bounded.estimate[node_index])
    below = estimate - float(bounded.lower[node_index])
    above = float(bounded.upper[node_index]) - estimate
    decimals = spread_decimals(max(below, above))
    spread = uncertainty_text(below, above, text.split()[0], decimals)
    expected = int(aggregates.expected_sites[node_index])
    fraction = float(aggregates.reporting_fraction[node_index]) if expected else 0.0
    line = (f"{estimate:,.{decimals}f} {text} ({spread}), {fraction * 100:.0f} % of {expected:,} expected sites "
            f"reporting, {int(aggregates.stale_sites[node_index]):,} stale")
    never = int(aggregates.never_reported_sites[node_index])
    return line + (f", {never:,} never reported" if never else "")
