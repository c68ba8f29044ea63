"""The local home-battery planner every site runs: one pure, vectorised dynamic programme over a batch.

Each site plans its own battery over the horizon of :class:`~algorithms.fleet.site_plan_types.SitePlanInputs`
(``T`` intervals of ``h = plan_interval_minutes / 60`` hours). It minimises

    Σ_t h · (import_per_kwh[t] · max(g_t, 0) − feed_in_per_kwh[t] · max(−g_t, 0))
      − market_share · Σ_t h · market_price_per_mwh[t] / 1000 · b_t
      − terminal_value_per_kwh · (stored energy at the horizon's end)

where ``b_t`` is battery power (kW, + discharge / − charge) and ``g_t = load_t − pv_t − b_t`` grid import
(kW): its retail bill ($) less the market value of its battery's power passed to the owner ($), less a
value on the energy left at the end. The battery is the one of :mod:`simulator.battery`: power within
``[−max_charge_kw, +max_discharge_kw]``; discharging at ``b > 0`` removes ``b·h / discharge_efficiency``
kWh, charging at ``b < 0`` adds ``−b·h · charge_efficiency`` kWh; stored energy stays within
``[effective reserve, capacity_kwh]``, with

    effective reserve = max(backup_reserve_fraction, storm_reserve_fraction if storm_warning else 0)
                        × capacity_kwh  (kWh).

A site that starts below its effective reserve may charge but not discharge until it is back above it
(its plan is never infeasible).

**Method: dynamic programming on a stored-energy grid, with off-grid moves.** Each site gets
``soc_levels`` equally spaced stored-energy levels from its effective reserve (or from its starting
energy, if that is lower: the levels below the reserve can only be reached by charging, and a discharge
may neither start nor end below the reserve) to its capacity.

- *Backward*, over the intervals, with all sites of a chunk at once as ``(sites, levels)`` arrays: the
  cost-to-go ($) at every level at the start of every interval. From a level the site may move ``d``
  levels — on a uniform grid a move of ``d`` levels is the same energy change and power at every level,
  so one ``(sites, moves)`` cost array per interval serves all levels, and moves beyond the power limits
  cost +inf — or take one of three off-grid powers: follow its net load (self-consumption), full
  discharge or full charge (within power and energy limits), whose end energy falls between levels and
  is valued by linear interpolation of the next cost-to-go.
- *Forward*, from the exact starting energy: in each interval the site takes the cheapest of landing
  exactly on any reachable level, the three off-grid powers, or idling, against the next interval's
  cost-to-go (interpolated off the grid).

Every planned power is derived with the battery model of :mod:`simulator.battery` from the planned stored
energy, so :func:`simulator.battery.battery_step` delivers it (up to rounding) whatever the grid. The grid
only approximates the cost-to-go: the plan is feasible but can be slightly worse than the continuous
optimum. Measured against exact LPs (41 levels): 0.03 % of the LP's saving over an idle battery on the
benchmark fleet (``bench/site_plan.py``); over 150 random one-site, 24-interval cases with spiky prices
0.4 % on average, 3.4 % at worst. Ties are broken towards less battery throughput by a negligible cost
(:data:`THROUGHPUT_TIE_BREAK_PER_KWH`).

Sites are sorted by their move range (so a chunk's move set stays small) and planned ``chunk_sites`` at a
time; a chunk holds ``(T + 1) × chunk_sites × soc_levels`` cost-to-go values (16 MB at the defaults) on top
of the ``(n, T)`` inputs and outputs. Time grows with ``soc_levels × moves ∝ soc_levels²``.

**Why not an LP per site.** With a non-negative market value and feed-in below import the problem is a
convex piecewise-linear programme, so an LP per site is exact; but HiGHS takes about 2.5–6 ms per site
for 48 intervals (4–10 minutes for 100,000 sites on one core) against about 0.1–0.2 ms per site for this
batched programme (``bench/site_plan.py``). With negative prices the LP relaxation may also charge and discharge
at once (burning energy in losses), which one battery power per interval cannot do; the DP's plans are
always physical.

**Terminal value (default).** With ``terminal_value_per_kwh=None`` each kWh left in storage at the end is
worth ``charge_efficiency × discharge_efficiency × max(min_t import_per_kwh[t], 0)`` ($/kWh): what it
saves when it later displaces the cheapest import, discounted by one round trip. This keeps a plan from
dumping energy at the horizon's end for a low feed-in, but stays strictly below the value of using the
energy within the horizon (``discharge_efficiency × import`` ≥ that), so under a flat tariff the battery
still discharges into the evening load instead of being indifferent to holding its energy (which valuing
it at ``mean import × discharge_efficiency`` would make it), and it never pays to charge from the grid
only to hold energy at the end.

**Flexibility** (per interval, not cumulative): ``discharge_flexibility_kw[t]`` is the extra discharge
(kW) the site could give in interval ``t`` on top of its plan, given its *planned* stored energy at the
start of ``t``: ``max(0, min(max_discharge_kw, (soc_start − reserve)·discharge_efficiency/h) − b_t)``;
``charge_flexibility_kw[t] = max(0, min(max_charge_kw, (capacity − soc_start)/(charge_efficiency·h)) +
b_t)``. Using the flexibility of one interval changes the stored energy, so the flexibility of later
intervals no longer holds as stated: the figures must not be summed over intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from algorithms.fleet.fleet_types import FloatArray, IntArray
from algorithms.fleet.site_plan_types import SitePlanInputs, SitePlans, Tariff

MINUTES_PER_HOUR = 60.0
KWH_PER_MWH = 1000.0
PRICE_STEP_MINUTES = 5
MS_PER_HOUR = 3_600_000
MS_PER_MINUTE = 60_000

THROUGHPUT_TIE_BREAK_PER_KWH = 1e-6
"""Cost ($/kWh of battery AC throughput) that breaks exact ties towards not moving the battery."""
DEFAULT_CHUNK_SITES = 1_000
"""Sites planned together: small enough that a chunk's ``(sites, levels)`` arrays stay in cache (measured
faster than 5,000–20,000 on a 2-core machine), large enough to amortise the per-interval numpy calls."""
ENERGY_TOLERANCE_KWH = 1e-9
"""Slack (kWh) when comparing stored energy with the reserve and capacity."""
START_ABOVE_CAPACITY_TOLERANCE_KWH = 1e-6
"""A starting energy up to this much (kWh) outside ``[0, capacity]`` is clipped, beyond it rejected."""
MAX_SOC_LEVELS = 2_001
"""Most grid levels accepted (time grows with their square)."""


class InvalidSitePlanInputError(ValueError):
    """The planner was given unusable inputs (non-finite or negative forecasts, a starting energy outside
    the battery, efficiencies outside (0, 1], too few grid levels, a price path that does not fit the plan
    intervals, ...)."""


def resample_prices_to_plan(price_per_mwh_5min: FloatArray, plan_interval_minutes: int) -> FloatArray:
    """Mean market price ($/MWh) over each plan interval of a 5-minute price path ($/MWh).

    Args:
        price_per_mwh_5min: one price per 5-minute interval ($/MWh), in time order, starting at the first
            plan interval's start.
        plan_interval_minutes: plan interval length (minutes, a positive multiple of 5).

    Returns:
        one price per plan interval ($/MWh): the mean of the 5-minute prices it covers.

    Raises:
        InvalidSitePlanInputError: if the interval is not a positive multiple of 5 minutes, the path is not
            one-dimensional, or its length is not a whole number of plan intervals.
    """
    prices = np.asarray(price_per_mwh_5min, dtype=np.float64)
    if plan_interval_minutes <= 0 or plan_interval_minutes % PRICE_STEP_MINUTES != 0:
        raise InvalidSitePlanInputError(
            f"plan_interval_minutes must be a positive multiple of {PRICE_STEP_MINUTES}, got {plan_interval_minutes}")
    if prices.ndim != 1:
        raise InvalidSitePlanInputError(f"price_per_mwh_5min must be one-dimensional, got shape {prices.shape}")
    steps = plan_interval_minutes // PRICE_STEP_MINUTES
    if len(prices) % steps != 0:
        raise InvalidSitePlanInputError(
            f"{len(prices)} five-minute prices do not divide into {plan_interval_minutes}-minute intervals")
    return np.asarray(prices.reshape(-1, steps).mean(axis=1), dtype=np.float64)


def time_of_use_tariff(start_ms: int, horizon_intervals: int, plan_interval_minutes: int, *, peak_per_kwh: float,
                       offpeak_per_kwh: float, feed_in_per_kwh: float, peak_start_hour: int, peak_end_hour: int,
                       utc_offset_hours: float = 10.0) -> Tariff:
    """A two-rate time-of-use tariff ($/kWh) with a flat feed-in ($/kWh) over the plan intervals.

    The peak rate applies to an interval whose start, in local time (``utc_offset_hours`` ahead of UTC;
    10 = AEST), falls in an hour ``H`` with ``peak_start_hour ≤ H < peak_end_hour``. A window with
    ``peak_start_hour > peak_end_hour`` wraps past midnight (e.g. 22 → 6); equal hours mean no peak.

    Args:
        start_ms: start of the first plan interval (epoch ms UTC).
        horizon_intervals: number of plan intervals (≥ 1).
        plan_interval_minutes: plan interval length (minutes, > 0).
        peak_per_kwh: import price in the peak window ($/kWh).
        offpeak_per_kwh: import price outside it ($/kWh).
        feed_in_per_kwh: export price in every interval ($/kWh).
        peak_start_hour: first local hour of the peak window (0–23).
        peak_end_hour: local hour the peak window ends (exclusive, 0–24).
        utc_offset_hours: local time's offset from UTC (hours).

    Raises:
        InvalidSitePlanInputError: on a non-positive horizon or interval, hours outside 0–24 or
            non-finite prices.
    """
    if horizon_intervals < 1 or plan_interval_minutes <= 0:
        raise InvalidSitePlanInputError(
            f"horizon_intervals ({horizon_intervals}) and plan_interval_minutes ({plan_interval_minutes}) must be >= 1")
    if not (0 <= peak_start_hour <= 23 and 0 <= peak_end_hour <= 24):
        raise InvalidSitePlanInputError(
            f"peak hours must lie in 0..23 (start) and 0..24 (end), got {peak_start_hour}..{peak_end_hour}")
    if not all(np.isfinite([peak_per_kwh, offpeak_per_kwh, feed_in_per_kwh, utc_offset_hours])):
        raise InvalidSitePlanInputError("tariff prices and utc_offset_hours must be finite")
    offset_ms = round(utc_offset_hours * MS_PER_HOUR)
    starts_ms = start_ms + np.arange(horizon_intervals, dtype=np.int64) * plan_interval_minutes * MS_PER_MINUTE
    local_hour = ((starts_ms + offset_ms) // MS_PER_HOUR) % 24
    if peak_start_hour <= peak_end_hour:
        peak = (local_hour >= peak_start_hour) & (local_hour < peak_end_hour)
    else:
        peak = (local_hour >= peak_start_hour) | (local_hour < peak_end_hour)
    return Tariff(import_per_kwh=np.where(peak, peak_per_kwh, offpeak_per_kwh).astype(np.float64),
                  feed_in_per_kwh=np.full(horizon_intervals, feed_in_per_kwh, dtype=np.float64))


@dataclass(frozen=True)
class _Batteries:
    """Per-site battery quantities the DP works with (all ``(n,)``; kWh, kW, fractions)."""

    capacity_kwh: FloatArray
    max_charge_kw: FloatArray
    max_discharge_kw: FloatArray
    charge_efficiency: FloatArray
    discharge_efficiency: FloatArray
    reserve_kwh: FloatArray
    start_kwh: FloatArray
    grid_floor_kwh: FloatArray
    grid_step_kwh: FloatArray
    max_down_levels: IntArray
    max_up_levels: IntArray
    terminal_value_per_kwh: FloatArray

    def rows(self, rows: IntArray) -> _Batteries:
        """The same quantities for the sites at ``rows``."""
        return _Batteries(**{name: getattr(self, name)[rows] for name in self.__dataclass_fields__})


@dataclass(frozen=True)
class _Market:
    """Per-interval prices shared by the batch: tariff ($/kWh), market value passed on ($/kWh)."""

    import_per_kwh: FloatArray
    feed_in_per_kwh: FloatArray
    market_value_per_kwh: FloatArray
    hours: float


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidSitePlanInputError(message)


def _all_finite(*arrays: FloatArray) -> bool:
    return all(bool(np.all(np.isfinite(array))) for array in arrays)


def _validate(inputs: SitePlanInputs, soc_levels: int, terminal_value_per_kwh: float | None, chunk_sites: int) -> None:
    parameters = inputs.parameters
    _require(2 <= soc_levels <= MAX_SOC_LEVELS, f"soc_levels must lie in 2..{MAX_SOC_LEVELS}, got {soc_levels}")
    _require(chunk_sites >= 1, f"chunk_sites must be >= 1, got {chunk_sites}")
    _require(inputs.horizon_intervals >= 1, "the plan needs at least one interval (market_price_per_mwh is empty)")
    _require(_all_finite(inputs.load_forecast_kw, inputs.pv_forecast_kw),
             "load_forecast_kw and pv_forecast_kw must be finite (no NaN or inf)")
    _require(bool(np.all(inputs.load_forecast_kw >= 0)) and bool(np.all(inputs.pv_forecast_kw >= 0)),
             "load_forecast_kw and pv_forecast_kw must be >= 0 kW")
    _require(_all_finite(inputs.tariff.import_per_kwh, inputs.tariff.feed_in_per_kwh, inputs.market_price_per_mwh),
             "tariff and market_price_per_mwh must be finite")
    _require(bool(np.isfinite(inputs.market_share)) and 0.0 <= inputs.market_share <= 1.0,
             f"market_share must lie in [0, 1], got {inputs.market_share}")
    _require(bool(np.isfinite(inputs.storm_reserve_fraction)) and 0.0 <= inputs.storm_reserve_fraction <= 1.0,
             f"storm_reserve_fraction must lie in [0, 1], got {inputs.storm_reserve_fraction}")
    _require(terminal_value_per_kwh is None or bool(np.isfinite(terminal_value_per_kwh)),
             f"terminal_value_per_kwh must be finite or None, got {terminal_value_per_kwh}")
    _require(_all_finite(parameters.capacity_kwh, parameters.max_charge_kw, parameters.max_discharge_kw,
                         parameters.charge_efficiency, parameters.discharge_efficiency,
                         parameters.backup_reserve_fraction), "site parameters must be finite")
    _require(bool(np.all(parameters.capacity_kwh >= 0)), "capacity_kwh must be >= 0")
    _require(bool(np.all(parameters.max_charge_kw >= 0)) and bool(np.all(parameters.max_discharge_kw >= 0)),
             "max_charge_kw and max_discharge_kw must be >= 0")
    for name in ("charge_efficiency", "discharge_efficiency"):
        efficiency = getattr(parameters, name)
        _require(bool(np.all((efficiency > 0) & (efficiency <= 1))), f"{name} must lie in (0, 1]")
    reserve = parameters.backup_reserve_fraction
    _require(bool(np.all((reserve >= 0) & (reserve <= 1))), "backup_reserve_fraction must lie in [0, 1]")
    start = inputs.state_of_charge_kwh
    _require(_all_finite(start), "state_of_charge_kwh must be finite")
    outside = (start < -START_ABOVE_CAPACITY_TOLERANCE_KWH) | (
        start > parameters.capacity_kwh + START_ABOVE_CAPACITY_TOLERANCE_KWH)
    if bool(np.any(outside)):
        first = int(np.flatnonzero(outside)[0])
        raise InvalidSitePlanInputError(
            f"state_of_charge_kwh of {parameters.site_ids[first]} is {start[first]} kWh, outside "
            f"[0, {parameters.capacity_kwh[first]}] kWh ({int(outside.sum())} sites outside their battery)")


def _batteries(inputs: SitePlanInputs, soc_levels: int, terminal_value_per_kwh: float | None) -> _Batteries:
    """Effective reserve, the stored-energy grid and the largest moves per interval of every site."""
    parameters = inputs.parameters
    hours = inputs.plan_interval_minutes / MINUTES_PER_HOUR
    capacity = parameters.capacity_kwh.astype(np.float64)
    storm_fraction = np.where(inputs.storm_warning, inputs.storm_reserve_fraction, 0.0)
    reserve = np.maximum(parameters.backup_reserve_fraction, storm_fraction) * capacity
    start = np.clip(inputs.state_of_charge_kwh, 0.0, capacity)
    below_reserve = start < reserve - ENERGY_TOLERANCE_KWH
    floor = np.where(below_reserve, start, reserve)
    step = (capacity - floor) / (soc_levels - 1)
    moving = step > ENERGY_TOLERANCE_KWH / soc_levels
    safe_step = np.where(moving, step, 1.0)
    down_kwh = parameters.max_discharge_kw * hours / parameters.discharge_efficiency
    up_kwh = parameters.max_charge_kw * hours * parameters.charge_efficiency
    # The relative slack only absorbs rounding when a power limit is an exact multiple of the step.
    max_down = np.where(moving, np.minimum(np.floor(down_kwh / safe_step * (1 + 1e-12)), soc_levels - 1), 0)
    max_up = np.where(moving, np.minimum(np.floor(up_kwh / safe_step * (1 + 1e-12)), soc_levels - 1), 0)
    if terminal_value_per_kwh is None:
        cheapest_import = max(float(np.min(inputs.tariff.import_per_kwh)), 0.0)
        terminal = parameters.charge_efficiency * parameters.discharge_efficiency * cheapest_import
    else:
        terminal = np.full(parameters.site_count, float(terminal_value_per_kwh))
    return _Batteries(
        capacity_kwh=capacity, max_charge_kw=parameters.max_charge_kw.astype(np.float64),
        max_discharge_kw=parameters.max_discharge_kw.astype(np.float64),
        charge_efficiency=parameters.charge_efficiency.astype(np.float64),
        discharge_efficiency=parameters.discharge_efficiency.astype(np.float64),
        reserve_kwh=reserve, start_kwh=start, grid_floor_kwh=floor, grid_step_kwh=np.where(moving, step, 0.0),
        max_down_levels=max_down.astype(np.int64), max_up_levels=max_up.astype(np.int64),
        terminal_value_per_kwh=terminal.astype(np.float64))


def _power_for_energy_change(energy_change_kwh: FloatArray, hours: float, charge_efficiency: FloatArray,
                             discharge_efficiency: FloatArray) -> FloatArray:
    """Battery power (kW, + discharge) that changes stored energy by ``energy_change_kwh`` over ``hours``."""
    return np.where(energy_change_kwh < 0, -energy_change_kwh * discharge_efficiency / hours,
                    -energy_change_kwh / (charge_efficiency * hours))


def _interval_cost(net_load_kw: FloatArray, battery_kw: FloatArray, market: _Market, interval: int) -> FloatArray:
    """Bill less market value ($) of one interval at battery power ``battery_kw`` (broadcast shapes)."""
    grid_kw = net_load_kw - battery_kw
    imported = market.import_per_kwh[interval]
    feed_in = market.feed_in_per_kwh[interval]
    per_kw = (imported * np.maximum(grid_kw, 0.0) - feed_in * np.maximum(-grid_kw, 0.0)
              - market.market_value_per_kwh[interval] * battery_kw
              + THROUGHPUT_TIE_BREAK_PER_KWH * np.abs(battery_kw))
    return np.asarray(per_kw * market.hours, dtype=np.float64)


def _energy_after(stored_kwh: FloatArray, battery_kw: FloatArray, hours: float, batteries: _Batteries) -> FloatArray:
    """Stored energy (kWh) after ``hours`` at ``battery_kw`` from ``stored_kwh`` (``(m, X)`` arrays), as in
    :func:`simulator.battery.battery_step`: exact within the reserve and capacity, rounding kept inside them."""
    charge_eff, discharge_eff = batteries.charge_efficiency[:, None], batteries.discharge_efficiency[:, None]
    after = stored_kwh - np.where(battery_kw > 0, battery_kw * hours / discharge_eff, battery_kw * hours * charge_eff)
    return np.asarray(np.where(battery_kw > 0,
                               np.maximum(after, np.minimum(batteries.reserve_kwh[:, None], stored_kwh)),
                               np.minimum(after, np.maximum(batteries.capacity_kwh[:, None], stored_kwh))),
                      dtype=np.float64)


def _power_limits(stored_kwh: FloatArray, hours: float, batteries: _Batteries) -> tuple[FloatArray, FloatArray]:
    """Largest discharge and charge (kW, both ≥ 0) over one interval from ``stored_kwh`` (``(m, X)``): the
    power limits, the energy above the effective reserve (none below it) and the room below capacity."""
    reserve = batteries.reserve_kwh[:, None]
    discharge_room = np.where(stored_kwh >= reserve - ENERGY_TOLERANCE_KWH,
                              np.maximum(stored_kwh - reserve, 0.0) * batteries.discharge_efficiency[:, None] / hours,
                              0.0)
    charge_room = np.maximum(batteries.capacity_kwh[:, None] - stored_kwh, 0.0) / (
        batteries.charge_efficiency[:, None] * hours)
    return (np.minimum(batteries.max_discharge_kw[:, None], discharge_room),
            np.minimum(batteries.max_charge_kw[:, None], charge_room))


@dataclass(frozen=True)
class _GridPositions:
    """Off-grid stored energies of a chunk as positions on its level grid: the flat index of the level below
    (into a ``(m, levels)`` array) and the weight of the level above (0–1)."""

    flat_below: IntArray
    weight_above: FloatArray

    def interpolate(self, value: FloatArray) -> FloatArray:
        """``value`` (``(m, levels)``, $) linearly interpolated at these positions."""
        flat = value.reshape(-1)
        below = flat[self.flat_below]
        return np.asarray(below + self.weight_above * (flat[self.flat_below + 1] - below), dtype=np.float64)


def _grid_positions(level_position: FloatArray, soc_levels: int) -> _GridPositions:
    """Positions (in levels, ``(m, X)``, clipped to the grid) as :class:`_GridPositions`."""
    position = np.clip(level_position, 0.0, soc_levels - 1.0)
    below = np.minimum(position.astype(np.int64), soc_levels - 2)
    rows = np.arange(position.shape[0], dtype=np.int64)[:, None] * soc_levels
    return _GridPositions(flat_below=rows + below, weight_above=position - below)


def _levels_moved(battery_kw: FloatArray, discharge_levels_per_kw: FloatArray,
                  charge_levels_per_kw: FloatArray) -> FloatArray:
    """Grid levels the stored energy falls over one interval at ``battery_kw`` (negative when charging)."""
    return np.asarray(battery_kw * np.where(battery_kw > 0, discharge_levels_per_kw, charge_levels_per_kw),
                      dtype=np.float64)


def _special_powers(net_load_kw: FloatArray, max_discharge_kw: FloatArray, max_charge_kw: FloatArray) -> list[
        FloatArray]:
    """Off-grid candidate powers (kW): follow the net load (self-consumption), full discharge, full charge."""
    return [np.clip(net_load_kw, -max_charge_kw, max_discharge_kw), max_discharge_kw, -max_charge_kw]


def _backward(batteries: _Batteries, net_load_kw: FloatArray, market: _Market, levels: FloatArray) -> FloatArray:
    """Cost-to-go ($) on the grid at the start of each interval ``1..T`` (index ``T``: minus the terminal
    value), ``(T + 1, m, levels)``; index 0 is left unset (the forward pass starts off the grid)."""
    site_count, horizon = net_load_kw.shape
    soc_levels = levels.shape[1]
    hours = market.hours
    charge_eff = batteries.charge_efficiency[:, None]
    discharge_eff = batteries.discharge_efficiency[:, None]
    # Moves of d levels per interval, d in [-max_down, max_up] of the chunk; per site outside its own range: +inf.
    max_down, max_up = int(batteries.max_down_levels.max()), int(batteries.max_up_levels.max())
    moves = np.arange(-max_down, max_up + 1)
    move_kw = _power_for_energy_change(moves[None, :] * batteries.grid_step_kwh[:, None], hours, charge_eff,
                                       discharge_eff)
    move_allowed = (moves[None, :] >= -batteries.max_down_levels[:, None]) & (
        moves[None, :] <= batteries.max_up_levels[:, None])
    # A discharge may not end below the effective reserve (only sites that start below it have such levels).
    discharge_blocked = levels < batteries.reserve_kwh[:, None] - ENERGY_TOLERANCE_KWH
    any_blocked = bool(discharge_blocked.any()) and max_down > 0

    # Off-grid candidates from every level: full discharge and full charge (fixed), following the net load.
    step = np.where(batteries.grid_step_kwh > 0, batteries.grid_step_kwh, np.inf)[:, None]
    discharge_levels_per_kw = hours / (discharge_eff * step)
    charge_levels_per_kw = hours * charge_eff / step
    level_index = np.arange(soc_levels, dtype=np.float64)[None, :]
    max_discharge_kw, max_charge_kw = _power_limits(levels, hours, batteries)
    full_kw = (max_discharge_kw, -max_charge_kw)
    full_positions = [_grid_positions(level_index - _levels_moved(kw, discharge_levels_per_kw, charge_levels_per_kw),
                                      soc_levels) for kw in full_kw]

    values = np.empty((horizon + 1, site_count, soc_levels))
    values[horizon] = -batteries.terminal_value_per_kwh[:, None] * levels
    padded = np.full((site_count, soc_levels + len(moves) - 1), np.inf)
    padded_discharge = np.full_like(padded, np.inf)
    candidate = np.empty((site_count, soc_levels))
    for interval in range(horizon - 1, 0, -1):
        following = values[interval + 1]
        net_kw = net_load_kw[:, interval, None]
        move_cost = np.where(move_allowed, _interval_cost(net_kw, move_kw, market, interval), np.inf)
        padded[:, max_down:max_down + soc_levels] = following
        if any_blocked:
            padded_discharge[:, max_down:max_down + soc_levels] = np.where(discharge_blocked, np.inf, following)
        value = values[interval]
        value[...] = np.inf
        for column in range(len(moves)):  # value[i, j] = min over moves d of cost(d) + following[i, j + d]
            source = padded_discharge if any_blocked and column < max_down else padded
            np.add(source[:, column:column + soc_levels], move_cost[:, column, None], out=candidate)
            np.minimum(value, candidate, out=value)
        follow_kw = np.clip(net_kw, -max_charge_kw, max_discharge_kw)
        follow_position = _grid_positions(
            level_index - _levels_moved(follow_kw, discharge_levels_per_kw, charge_levels_per_kw), soc_levels)
        for battery_kw, position in ((follow_kw, follow_position), *zip(full_kw, full_positions, strict=True)):
            np.minimum(value, _interval_cost(net_kw, battery_kw, market, interval) + position.interpolate(following),
                       out=value)
    return values


def _plan_chunk(batteries: _Batteries, net_load_kw: FloatArray, market: _Market,
                soc_levels: int) -> tuple[FloatArray, FloatArray]:
    """Planned battery power (kW) and stored energy at the end of each interval (kWh), ``(m, T)`` each,
    of one chunk of sites."""
    site_count, horizon = net_load_kw.shape
    hours = market.hours
    level_index = np.arange(soc_levels, dtype=np.float64)
    levels = batteries.grid_floor_kwh[:, None] + batteries.grid_step_kwh[:, None] * level_index[None, :]
    charge_eff = batteries.charge_efficiency[:, None]
    discharge_eff = batteries.discharge_efficiency[:, None]
    step = np.where(batteries.grid_step_kwh > 0, batteries.grid_step_kwh, np.inf)[:, None]
    values = _backward(batteries, net_load_kw, market, levels)

    # Forward: from the exact stored energy, land on a grid level or take an off-grid candidate (or idle).
    stored = batteries.start_kwh.copy()
    planned_kw = np.empty((site_count, horizon))
    planned_kwh = np.empty((site_count, horizon))
    rows = np.arange(site_count)
    for interval in range(horizon):
        following = values[interval + 1]
        net_kw = net_load_kw[:, interval, None]
        start = stored[:, None]
        max_discharge_kw, max_charge_kw = _power_limits(start, hours, batteries)
        landing_change = levels - start
        landing_kw = _power_for_energy_change(landing_change, hours, charge_eff, discharge_eff)
        # (max_discharge_kw is 0 below the reserve and never reaches below it from above)
        landing_allowed = ((landing_kw <= max_discharge_kw * (1 + 1e-12) + 1e-12)
                           & (landing_kw >= -max_charge_kw * (1 + 1e-12) - 1e-12))
        special_kw = np.concatenate([*_special_powers(net_kw, max_discharge_kw, max_charge_kw),
                                     np.zeros((site_count, 1))], axis=1)
        special_after = _energy_after(np.broadcast_to(start, special_kw.shape), special_kw, hours, batteries)
        special_position = _grid_positions((special_after - batteries.grid_floor_kwh[:, None]) / step, soc_levels)
        options_kw = np.concatenate([landing_kw, special_kw], axis=1)
        options_after = np.concatenate([levels, special_after], axis=1)
        options_total = _interval_cost(net_kw, options_kw, market, interval) + np.concatenate(
            [np.where(landing_allowed, following, np.inf), special_position.interpolate(following)], axis=1)
        choice = np.argmin(options_total, axis=1)
        planned_kw[:, interval] = options_kw[rows, choice]
        stored = options_after[rows, choice]
        planned_kwh[:, interval] = stored
    return planned_kw, planned_kwh


def _chunks(batteries: _Batteries, chunk_sites: int) -> list[IntArray]:
    """Site rows in chunks of at most ``chunk_sites``, sorted by move range so each chunk's move set stays small."""
    order = np.lexsort((batteries.max_up_levels, batteries.max_down_levels,
                        batteries.max_down_levels + batteries.max_up_levels))
    return [order[position:position + chunk_sites] for position in range(0, len(order), chunk_sites)]


def plan_sites(inputs: SitePlanInputs, *, soc_levels: int = 41, terminal_value_per_kwh: float | None = None,
               chunk_sites: int = DEFAULT_CHUNK_SITES) -> SitePlans:
    """Plan every site's battery over the horizon (see the module docstring for objective and method).

    Args:
        inputs: the batch: batteries, starting stored energy (kWh), load and PV forecasts (kW), tariff
            ($/kWh), market price ($/MWh) and share, storm warnings, start (epoch ms UTC), interval
            (minutes), forecast version.
        soc_levels: stored-energy grid points per site between its effective reserve (or lower start)
            and its capacity (2..2001). Time and memory grow with ``soc_levels²``.
        terminal_value_per_kwh: value ($/kWh) of each kWh stored at the horizon's end; ``None`` =
            ``charge_eff × discharge_eff × cheapest import of the horizon`` per site (module docstring);
            ``0.0`` = none.
        chunk_sites: largest number of sites solved together (bounds memory; the plans do not depend
            on it).

    Returns:
        :class:`SitePlans` aligned with ``inputs.parameters.site_ids``: battery power (kW, + discharge),
        net export at the meter (kW), stored energy at the end of each interval (kWh), per-interval
        discharge/charge flexibility (kW), and ``forecast_version`` / ``start_ms`` of the inputs on
        every row.

    Raises:
        InvalidSitePlanInputError: on unusable inputs (see the class).
    """
    _validate(inputs, soc_levels, terminal_value_per_kwh, chunk_sites)
    site_count, horizon = inputs.parameters.site_count, inputs.horizon_intervals
    hours = inputs.plan_interval_minutes / MINUTES_PER_HOUR
    batteries = _batteries(inputs, soc_levels, terminal_value_per_kwh)
    market = _Market(
        import_per_kwh=inputs.tariff.import_per_kwh.astype(np.float64),
        feed_in_per_kwh=inputs.tariff.feed_in_per_kwh.astype(np.float64),
        market_value_per_kwh=inputs.market_share * inputs.market_price_per_mwh.astype(np.float64) / KWH_PER_MWH,
        hours=hours)
    net_load_kw = inputs.load_forecast_kw - inputs.pv_forecast_kw
    battery_kw = np.empty((site_count, horizon))
    stored_kwh = np.empty((site_count, horizon))
    for rows in _chunks(batteries, chunk_sites):
        battery_kw[rows], stored_kwh[rows] = _plan_chunk(batteries.rows(rows), net_load_kw[rows], market, soc_levels)

    start_of_interval = np.concatenate([batteries.start_kwh[:, None], stored_kwh[:, :-1]], axis=1)
    charge_eff = batteries.charge_efficiency[:, None]
    discharge_eff = batteries.discharge_efficiency[:, None]
    discharge_room_kw = np.minimum(batteries.max_discharge_kw[:, None],
                                   (start_of_interval - batteries.reserve_kwh[:, None]) * discharge_eff / hours)
    charge_room_kw = np.minimum(batteries.max_charge_kw[:, None],
                                (batteries.capacity_kwh[:, None] - start_of_interval) / (charge_eff * hours))
    return SitePlans(
        site_ids=inputs.parameters.site_ids,
        forecast_version=np.full(site_count, inputs.forecast_version, dtype=np.int64),
        start_ms=np.full(site_count, inputs.start_ms, dtype=np.int64),
        plan_interval_minutes=inputs.plan_interval_minutes,
        battery_power_kw=battery_kw,
        net_export_kw=battery_kw - net_load_kw,
        discharge_flexibility_kw=np.maximum(discharge_room_kw - battery_kw, 0.0),
        charge_flexibility_kw=np.maximum(charge_room_kw + battery_kw, 0.0),
        state_of_charge_kwh=stored_kwh,
    )
