"""The fleet simulator: N simulated homes, vectorised, with an in-process API the fleet gateway drives.

Each site has a home battery (:mod:`simulator.battery`), rooftop PV from typical-year weather
(:mod:`simulator.pv`) and household load (:mod:`simulator.household_load`). The simulator keeps every site's
state in arrays and exchanges the shared struct-of-arrays types of :mod:`algorithms.fleet.fleet_types`.

**Time.** All methods take ``now_ms`` (epoch ms UTC), which must never go backwards. Each first advances
the physics to ``now_ms`` in steps of at most ``physics_step_s`` (the last one partial), so the state is
exact at ``now_ms``; a command delivered at ``now_ms`` acts from ``now_ms`` on.

**Physics per step** ``(t0, t1]``: PV and load are evaluated at the step's middle; each site requests its
active VPP setpoint for the part of the step before the setpoint's ``valid_until_ms`` and, for the rest,
its own plan's battery power for the plan interval covering the step's middle if it holds a plan that
covers it (:meth:`FleetSimulator.set_plans`), else self-consumption (``load − pv``);
:func:`simulator.battery.battery_step` enforces power limits, capacity, efficiencies and the backup reserve.
Sites keep running (self-consumption, their plan, or a command they already hold) while offline: offline
means out of contact, not switched off.

**Own plans.** A site that plans its own battery (the co-optimised VPP, :mod:`simulator.edge_planner`) is given
its plan with :meth:`FleetSimulator.set_plans`: battery power per plan interval (kW) from a start time.
Plans are stored as one ``(sites × T)`` array and a start per site; a VPP setpoint in force always
overrides the plan. What a site's own forecaster would predict for its load and PV is
:meth:`FleetSimulator.expected_load_and_pv_kw` (the fleet's models without noise).

**Telemetry.** Each site reports every ``reporting_interval_s`` with its own phase (uniform over the
interval). A reading carries the site's sequence number (0, 1, 2, …, per site), its measurement time,
the battery power and PV/load of the step it falls in, and the state of charge interpolated to the
measurement time (% of usable capacity). An offline site measures nothing and sends nothing. Transit:

- every reading takes ``telemetry_latency_ms × U(0.5, 1.5)``;
- with ``telemetry_late_probability`` it is held up an extra exponential delay (mean
  ``telemetry_late_delay_mean_s``, capped at ``telemetry_late_delay_max_s``);
- with ``telemetry_reorder_probability`` it is held up an extra ``U(1, 2) × reporting_interval_s``, so it
  reaches the platform after the site's next reading (out of order);
- with ``telemetry_duplicate_probability`` a second copy is sent, arriving after the normal latency plus an
  exponential delay (mean ``telemetry_duplicate_delay_mean_s``, capped at ``telemetry_late_delay_max_s``).

:meth:`FleetSimulator.collect_telemetry` returns what has arrived by ``now_ms`` in order of arrival, which is
therefore not the order of measurement.

**Commands.** A delivered setpoint reaches its site unless the site is unknown or offline, or the command
is lost (``command_loss_probability``): then nothing is applied and nothing is acknowledged. A site that
receives a command acknowledges every copy it receives (``acknowledged_at_ms`` = receipt time); the
acknowledgement reaches the platform after a log-normal delay (median ``ack_delay_median_s``,
σ ``ack_delay_log_sigma``), plus, with ``ack_late_probability``, an exponential extra (mean
``ack_late_delay_mean_s``, capped at ``ack_late_delay_max_s``). A site **refuses** (acknowledges with
``accepted=False``, applies nothing) if its owner has opted out of VPP control (a fixed share
``owner_opt_out_fraction`` of sites) or the command has already expired on arrival. An accepted command is
applied only if its ``command_id`` is greater than every command id the site has applied before (command
ids are assumed to increase over time, as a global counter gives): a resend (same id) or a stale command is
acknowledged but not applied again. If one delivery holds several new commands for a site, the one with
the highest id wins. An applied setpoint holds until its ``valid_until_ms``, then the site returns to
self-consumption.

**Outages.** Each site alternates online/offline periods, both exponential: offline periods have mean
``mean_offline_duration_s``; online periods have the mean that makes ``offline_fraction`` of the time
offline; at the start each site is offline with probability ``offline_fraction``.

**Randomness.** Everything is drawn from generators seeded by ``SimulatorConfig.seed`` (one independent
stream per concern: setup, outages, load noise, telemetry, commands), so the same parameters, config,
start time and sequence of calls always give the same results.

**Queues** of readings and acknowledgements in flight are arrays (chunks concatenated on collection and
filtered with a mask on arrival time), never one Python object per item. They are unbounded: a caller
that never collects keeps them growing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Generic, TypeVar

import numpy as np

from algorithms.fleet.fleet_types import (
    AckBatch,
    BoolArray,
    FloatArray,
    IntArray,
    SetpointBatch,
    SiteParameters,
    TelemetryBatch,
    site_positions,
)
from simulator.battery import battery_step, self_consumption_request_kw
from simulator.household_load import (
    SHIFT_MINUTES,
    HouseholdLoads,
    daily_shape,
    household_load_kw,
    initial_log_noise,
    local_clock,
    make_household_loads,
    next_log_noise,
)
from simulator.pv import ORIENTATION_CLASSES, PvFleet, class_output_per_kw, make_pv_fleet, pv_power_kw

NO_TRANSITION_MS = np.iinfo(np.int64).max
"""``next transition`` time of a site that never changes online state (offline_fraction 0)."""
NO_COMMAND = -1
"""Command id a site holds before it has applied any command."""
NO_PLAN = -1
"""Plan start (epoch ms) of a site that holds no plan of its own."""
MS_PER_MINUTE = 60_000


class InvalidSimulatorConfigError(ValueError):
    """A :class:`SimulatorConfig` value is out of range."""


class SimulatorTimeError(ValueError):
    """``now_ms`` went backwards."""


class InvalidSetpointError(ValueError):
    """A :class:`SetpointBatch` holds a value no site could apply (non-finite setpoint)."""


class InvalidPlanError(ValueError):
    """Plans given to :meth:`FleetSimulator.set_plans` that no site could follow (unknown rows, shapes that
    do not match, non-finite power, a non-positive interval)."""


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated fleet behaves and misbehaves (see the module docstring for each mechanism).

    Attributes:
        reporting_interval_s: seconds between a site's readings.
        physics_step_s: longest physics step (seconds, ≤ reporting_interval_s).
        offline_fraction: long-run share of time each site is offline (0–1).
        mean_offline_duration_s: mean length of an outage (seconds).
        telemetry_latency_ms: typical transit time of a reading (ms; actual U(0.5, 1.5) × this).
        telemetry_late_probability: share of readings held up (0–1).
        telemetry_late_delay_mean_s / telemetry_late_delay_max_s: their extra delay (exponential, capped).
        telemetry_duplicate_probability: share of readings sent twice (0–1).
        telemetry_duplicate_delay_mean_s: extra delay of the second copy (exponential mean, seconds).
        telemetry_reorder_probability: share of readings overtaken by the site's next reading (0–1).
        command_loss_probability: share of command deliveries lost (never applied, never acknowledged).
        owner_opt_out_fraction: share of sites whose owner refuses VPP commands (acknowledged, refused).
        ack_delay_median_s / ack_delay_log_sigma: log-normal delay of an acknowledgement (seconds).
        ack_late_probability: share of acknowledgements held up (0–1).
        ack_late_delay_mean_s / ack_late_delay_max_s: their extra delay (exponential, capped; seconds).
        seed: seed of every random stream.
    """

    reporting_interval_s: float = 5.0
    physics_step_s: float = 1.0
    offline_fraction: float = 0.02
    mean_offline_duration_s: float = 1800.0
    telemetry_latency_ms: float = 200.0
    telemetry_late_probability: float = 0.02
    telemetry_late_delay_mean_s: float = 20.0
    telemetry_late_delay_max_s: float = 300.0
    telemetry_duplicate_probability: float = 0.01
    telemetry_duplicate_delay_mean_s: float = 2.0
    telemetry_reorder_probability: float = 0.01
    command_loss_probability: float = 0.01
    owner_opt_out_fraction: float = 0.0
    ack_delay_median_s: float = 0.5
    ack_delay_log_sigma: float = 0.5
    ack_late_probability: float = 0.02
    ack_late_delay_mean_s: float = 30.0
    ack_late_delay_max_s: float = 300.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("telemetry_late_probability", "telemetry_duplicate_probability",
                     "telemetry_reorder_probability", "command_loss_probability", "owner_opt_out_fraction",
                     "ack_late_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidSimulatorConfigError(f"{name} must be within [0, 1], got {value}")
        if not 0.0 <= self.offline_fraction < 1.0:
            raise InvalidSimulatorConfigError(f"offline_fraction must be within [0, 1), got {self.offline_fraction}")
        for name in ("reporting_interval_s", "physics_step_s", "mean_offline_duration_s", "ack_delay_median_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise InvalidSimulatorConfigError(f"{name} must be a finite number > 0, got {value}")
        for name in ("telemetry_latency_ms", "telemetry_late_delay_mean_s", "telemetry_late_delay_max_s",
                     "telemetry_duplicate_delay_mean_s", "ack_delay_log_sigma", "ack_late_delay_mean_s",
                     "ack_late_delay_max_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise InvalidSimulatorConfigError(f"{name} must be a finite number >= 0, got {value}")
        if self.physics_step_s > self.reporting_interval_s:
            raise InvalidSimulatorConfigError(
                f"physics_step_s ({self.physics_step_s}) must not exceed reporting_interval_s "
                f"({self.reporting_interval_s})")
        if round(self.reporting_interval_s * 1000) < 1 or round(self.physics_step_s * 1000) < 1:
            raise InvalidSimulatorConfigError("reporting_interval_s and physics_step_s must be at least 1 ms")


@dataclass(frozen=True)
class _InFlightReadings:
    """Readings on their way to the platform; ``arrives_at_ms`` is when each reaches it."""

    site_index: IntArray
    sequence: IntArray
    measured_at_ms: IntArray
    battery_power_kw: FloatArray
    state_of_charge_pct: FloatArray
    pv_power_kw: FloatArray
    load_power_kw: FloatArray
    arrives_at_ms: IntArray


@dataclass(frozen=True)
class _InFlightAcks:
    """Acknowledgements on their way to the platform; ``arrives_at_ms`` is when each reaches it."""

    site_index: IntArray
    command_id: IntArray
    acknowledged_at_ms: IntArray
    accepted: BoolArray
    arrives_at_ms: IntArray


_Chunk = TypeVar("_Chunk", _InFlightReadings, _InFlightAcks)


class _ArrivalQueue(Generic[_Chunk]):
    """Items in flight, as a list of array chunks; :meth:`pop_arrived` returns those due, by arrival."""

    def __init__(self) -> None:
        self._chunks: list[_Chunk] = []

    def push(self, chunk: _Chunk) -> None:
        if len(chunk.arrives_at_ms):
            self._chunks.append(chunk)

    def __len__(self) -> int:
        return sum(len(chunk.arrives_at_ms) for chunk in self._chunks)

    def pop_arrived(self, now_ms: int, empty: _Chunk) -> _Chunk:
        """Remove and return every item with ``arrives_at_ms <= now_ms``, ordered by arrival (stable)."""
        if not self._chunks:
            return empty
        everything = _concatenate(self._chunks)
        arrived = everything.arrives_at_ms <= now_ms
        waiting = _take(everything, ~arrived)
        self._chunks = [waiting] if len(waiting.arrives_at_ms) else []
        due = _take(everything, arrived)
        return _take(due, np.argsort(due.arrives_at_ms, kind="stable"))


def _concatenate(chunks: list[_Chunk]) -> _Chunk:
    if len(chunks) == 1:
        return chunks[0]
    first = chunks[0]
    return type(first)(**{field.name: np.concatenate([getattr(chunk, field.name) for chunk in chunks])
                          for field in fields(first)})


def _take(chunk: _Chunk, selection: BoolArray | IntArray) -> _Chunk:
    return type(chunk)(**{field.name: getattr(chunk, field.name)[selection] for field in fields(chunk)})


def _empty_readings() -> _InFlightReadings:
    integers, floats = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    return _InFlightReadings(integers, integers, integers, floats, floats, floats, floats, integers)


def _empty_acks() -> _InFlightAcks:
    integers = np.zeros(0, dtype=np.int64)
    return _InFlightAcks(integers, integers, integers, np.zeros(0, dtype=np.bool_), integers)


_Array = TypeVar("_Array", FloatArray, BoolArray)


def _read_only(values: _Array) -> _Array:
    view = values.view()
    view.flags.writeable = False
    return view


def _capped_exponential(rng: np.random.Generator, mean_s: float, cap_s: float, count: int) -> FloatArray:
    """Exponential delays (ms) with mean ``mean_s`` seconds, capped at ``cap_s`` seconds."""
    return np.minimum(rng.exponential(mean_s, count), cap_s) * 1000.0


class FleetSimulator:
    """N simulated homes advanced in lock-step (see the module docstring for the model)."""

    def __init__(self, parameters: SiteParameters, config: SimulatorConfig, start_ms: int) -> None:
        """Set up ``parameters.site_count`` sites at ``start_ms`` (epoch ms UTC).

        Initial state: stored energy uniform between each owner's reserve and full; no setpoint; each site
        online with probability ``1 − offline_fraction``; first reading within one reporting interval.
        """
        self._parameters = parameters
        self._config = config
        self._now_ms = int(start_ms)
        self._reporting_interval_ms = round(config.reporting_interval_s * 1000)
        self._physics_step_ms = round(config.physics_step_s * 1000)
        setup, outages, load_noise, telemetry, commands = (
            np.random.default_rng(stream) for stream in np.random.SeedSequence(config.seed).spawn(5))
        self._outage_rng, self._load_rng, self._telemetry_rng, self._command_rng = (
            outages, load_noise, telemetry, commands)
        site_count = parameters.site_count
        self._pv_fleet: PvFleet = make_pv_fleet(parameters.pv_capacity_kw, int(setup.integers(2**63 - 1)))
        self._loads: HouseholdLoads = make_household_loads(site_count, int(setup.integers(2**63 - 1)))
        self._opted_out: BoolArray = setup.random(site_count) < config.owner_opt_out_fraction
        reserve = parameters.backup_reserve_fraction
        self._state_of_charge_kwh: FloatArray = parameters.capacity_kwh * (
            reserve + (1.0 - reserve) * setup.random(site_count))
        self._next_report_ms: IntArray = self._now_ms + 1 + setup.integers(
            0, self._reporting_interval_ms, site_count, dtype=np.int64)
        self._sequence: IntArray = np.full(site_count, -1, dtype=np.int64)
        self._log_noise: FloatArray = initial_log_noise(site_count, load_noise)
        self._online: BoolArray = setup.random(site_count) >= config.offline_fraction
        self._next_transition_ms: IntArray = np.full(site_count, NO_TRANSITION_MS, dtype=np.int64)
        self._schedule_transitions(np.arange(site_count), self._now_ms)
        self._setpoint_kw: FloatArray = np.zeros(site_count)
        self._setpoint_valid_until_ms: IntArray = np.full(site_count, self._now_ms, dtype=np.int64)
        self._last_command_id: IntArray = np.full(site_count, NO_COMMAND, dtype=np.int64)
        self._pv_power_kw: FloatArray = pv_power_kw(self._pv_fleet, self._now_ms)
        self._load_power_kw: FloatArray = household_load_kw(self._loads, self._now_ms, self._log_noise)
        self._battery_power_kw: FloatArray = np.zeros(site_count)
        self._plan_start_ms: IntArray = np.full(site_count, NO_PLAN, dtype=np.int64)
        self._plan_interval_ms: IntArray = np.ones(site_count, dtype=np.int64)
        self._plan_power_kw: FloatArray = np.full((site_count, 0), np.nan)
        self._readings: _ArrivalQueue[_InFlightReadings] = _ArrivalQueue()
        self._acks: _ArrivalQueue[_InFlightAcks] = _ArrivalQueue()

    # ---- read-only truth -------------------------------------------------------------------------------

    @property
    def parameters(self) -> SiteParameters:
        """The simulated sites."""
        return self._parameters

    @property
    def config(self) -> SimulatorConfig:
        """The simulator's configuration."""
        return self._config

    @property
    def now_ms(self) -> int:
        """Time the physics has reached (epoch ms UTC)."""
        return self._now_ms

    @property
    def true_battery_power_kw(self) -> FloatArray:
        """Battery power of every site over the last physics step (kW, + discharge / − charge), read-only."""
        return _read_only(self._battery_power_kw)

    @property
    def true_state_of_charge_kwh(self) -> FloatArray:
        """Stored energy of every site now (kWh), read-only."""
        return _read_only(self._state_of_charge_kwh)

    @property
    def true_pv_power_kw(self) -> FloatArray:
        """PV output of every site in the last physics step (kW AC), read-only."""
        return _read_only(self._pv_power_kw)

    @property
    def true_load_power_kw(self) -> FloatArray:
        """Household consumption of every site in the last physics step (kW), read-only."""
        return _read_only(self._load_power_kw)

    @property
    def online(self) -> BoolArray:
        """Whether each site is in contact now, read-only."""
        return _read_only(self._online)

    @property
    def active_setpoint_kw(self) -> FloatArray:
        """Each site's VPP setpoint in force now (kW; NaN where it runs self-consumption)."""
        return np.where(self._setpoint_valid_until_ms > self._now_ms, self._setpoint_kw, np.nan)

    @property
    def planned_power_kw(self) -> FloatArray:
        """Each site's own plan's battery power for now (kW, + discharge / − charge; NaN where no plan covers
        now), a new array."""
        return self._planned_power_kw(self._now_ms)

    @property
    def last_command_id(self) -> IntArray:
        """Highest command id each site has applied (:data:`NO_COMMAND` if none), a copy."""
        return self._last_command_id.copy()

    @property
    def readings_in_flight(self) -> int:
        """Readings sent but not yet collected."""
        return len(self._readings)

    @property
    def acks_in_flight(self) -> int:
        """Acknowledgements sent but not yet collected."""
        return len(self._acks)

    # ---- the API the gateway drives ----------------------------------------------------------------------

    def advance(self, now_ms: int) -> None:
        """Advance every site to ``now_ms`` (epoch ms UTC, ≥ the current time) in steps ≤ physics_step_s."""
        now_ms = int(now_ms)
        if now_ms < self._now_ms:
            raise SimulatorTimeError(f"now_ms {now_ms} is before the simulator's time {self._now_ms}")
        while self._now_ms < now_ms:
            self._step(min(self._now_ms + self._physics_step_ms, now_ms))

    def deliver_setpoints(self, batch: SetpointBatch, now_ms: int) -> None:
        """Commands arriving at the sites at ``now_ms`` (see the module docstring for what each site does).

        Raises:
            InvalidSetpointError: a setpoint is NaN or infinite.
        """
        if not bool(np.all(np.isfinite(batch.setpoint_kw))):
            raise InvalidSetpointError("SetpointBatch.setpoint_kw holds NaN or infinite values")
        self.advance(now_ms)
        positions = site_positions(self._parameters.site_ids, batch.site_ids)
        known = positions >= 0
        not_lost = self._command_rng.random(len(positions)) >= self._config.command_loss_probability
        received = np.flatnonzero(known & not_lost)
        received = received[self._online[positions[received]]]
        sites = positions[received]
        command_id = batch.command_id[received].astype(np.int64)
        valid_until_ms = batch.valid_until_ms[received].astype(np.int64)
        accepted = ~self._opted_out[sites] & (valid_until_ms > self._now_ms)
        self._apply(sites[accepted], command_id[accepted], batch.setpoint_kw[received][accepted],
                    valid_until_ms[accepted])
        self._send_acks(sites, command_id, accepted)

    def set_plans(self, site_rows: IntArray, start_ms: IntArray | int, plan_interval_ms: int,
                  battery_power_kw: FloatArray) -> None:
        """Give sites their own plans: from then on each follows its plan whenever no VPP setpoint is in force.

        Row ``i`` of ``battery_power_kw`` is the plan of site row ``site_rows[i]``: battery power (kW,
        + discharge / − charge) for interval ``k`` covering ``[start + k·plan_interval_ms, start +
        (k+1)·plan_interval_ms)`` (epoch ms UTC). A new plan replaces the site's previous one entirely;
        outside its intervals the site runs self-consumption. The physics does not move.

        Args:
            site_rows: rows of the sites (into ``parameters.site_ids``), unique.
            start_ms: start of each plan's first interval (epoch ms UTC), one per row or one for all.
            plan_interval_ms: interval length (ms, > 0).
            battery_power_kw: planned power, ``(len(site_rows), T)`` (kW, finite).

        Raises:
            InvalidPlanError: unknown or repeated rows, shapes that do not match, non-finite power, or a
                non-positive interval.
        """
        rows = np.asarray(site_rows, dtype=np.int64)
        power_kw = np.asarray(battery_power_kw, dtype=np.float64)
        starts_ms = np.asarray(start_ms, dtype=np.int64)
        site_count = self._parameters.site_count
        if rows.ndim != 1 or power_kw.ndim != 2 or power_kw.shape[0] != len(rows):
            raise InvalidPlanError(f"battery_power_kw has shape {power_kw.shape}, expected ({len(rows)}, T) "
                                   "for one-dimensional site_rows")
        if starts_ms.ndim == 0:
            starts_ms = np.full(len(rows), int(starts_ms), dtype=np.int64)
        if starts_ms.shape != rows.shape:
            raise InvalidPlanError(f"start_ms has shape {starts_ms.shape}, expected one value or {rows.shape}")
        if bool(np.any((rows < 0) | (rows >= site_count))) or len(np.unique(rows)) != len(rows):
            raise InvalidPlanError(f"site_rows must be unique rows within 0..{site_count - 1}")
        if plan_interval_ms <= 0:
            raise InvalidPlanError(f"plan_interval_ms must be positive, got {plan_interval_ms}")
        if not bool(np.all(np.isfinite(power_kw))):
            raise InvalidPlanError("battery_power_kw holds NaN or infinite values")
        if bool(np.any(starts_ms < 0)):
            raise InvalidPlanError("plan start_ms must be >= 0 (epoch ms UTC)")
        horizon = power_kw.shape[1]
        if horizon > self._plan_power_kw.shape[1]:
            grown = np.full((site_count, horizon), np.nan)
            grown[:, :self._plan_power_kw.shape[1]] = self._plan_power_kw
            self._plan_power_kw = grown
        self._plan_power_kw[rows] = np.nan
        self._plan_power_kw[rows, :horizon] = power_kw
        self._plan_start_ms[rows] = starts_ms
        self._plan_interval_ms[rows] = int(plan_interval_ms)

    def clear_plans(self, site_rows: IntArray) -> None:
        """Forget the plans of ``site_rows``: they return to self-consumption (outside VPP setpoints)."""
        rows = np.asarray(site_rows, dtype=np.int64)
        self._plan_start_ms[rows] = NO_PLAN
        self._plan_power_kw[rows] = np.nan

    def expected_load_and_pv_kw(self, site_rows: IntArray, start_ms: int, horizon_intervals: int,
                                plan_interval_minutes: int) -> tuple[FloatArray, FloatArray]:
        """What each site's own forecaster predicts for its household load and PV over a plan horizon (kW).

        The fleet's own models evaluated without noise at the middle of each plan interval ``k``
        (``start_ms + (k + ½)·plan_interval_minutes``, epoch ms UTC): the load is the household model's
        expectation (daily shape × the site's mean load, with the site's habit shift; the noise factor
        has mean 1), the PV the typical-year PV model (which has no noise, so it is what the site will
        see). This stands in for an edge device's forecaster trained on its own history; the realised
        load differs by the model's noise.

        Returns:
            (load_kw, pv_kw), each ``(len(site_rows), horizon_intervals)`` (kW, ≥ 0).
        """
        rows = np.asarray(site_rows, dtype=np.int64)
        if horizon_intervals < 1 or plan_interval_minutes <= 0:
            raise InvalidPlanError(f"horizon_intervals ({horizon_intervals}) and plan_interval_minutes "
                                   f"({plan_interval_minutes}) must be positive")
        interval_ms = plan_interval_minutes * MS_PER_MINUTE
        middles_ms = int(start_ms) + np.arange(horizon_intervals, dtype=np.int64) * interval_ms + interval_ms // 2
        shape_by_shift = np.empty((horizon_intervals, len(SHIFT_MINUTES)))
        pv_by_class = np.empty((horizon_intervals, len(ORIENTATION_CLASSES)))
        for interval, middle_ms in enumerate(middles_ms.tolist()):  # per interval, not per site
            hour, weekend = local_clock(middle_ms)
            shape_by_shift[interval] = daily_shape(hour - SHIFT_MINUTES / 60.0, weekend)
            pv_by_class[interval] = class_output_per_kw(middle_ms)
        loads, pv = self._loads, self._pv_fleet
        load_kw = loads.mean_load_kw[rows, None] * shape_by_shift[:, loads.shift_class[rows]].T
        pv_kw = (pv.pv_capacity_kw[rows] * pv.derate[rows])[:, None] * pv_by_class[:, pv.orientation_class[rows]].T
        return np.asarray(load_kw, dtype=np.float64), np.asarray(pv_kw, dtype=np.float64)

    def collect_telemetry(self, now_ms: int) -> TelemetryBatch:
        """Readings that have reached the platform by ``now_ms`` and were not collected before, by arrival."""
        self.advance(now_ms)
        arrived = self._readings.pop_arrived(self._now_ms, _empty_readings())
        return TelemetryBatch(
            site_ids=self._parameters.site_ids[arrived.site_index],
            sequence=arrived.sequence,
            measured_at_ms=arrived.measured_at_ms,
            battery_power_kw=arrived.battery_power_kw,
            state_of_charge_pct=arrived.state_of_charge_pct,
            pv_power_kw=arrived.pv_power_kw,
            load_power_kw=arrived.load_power_kw,
        )

    def collect_acks(self, now_ms: int) -> AckBatch:
        """Acknowledgements that have reached the platform by ``now_ms`` and were not collected, by arrival."""
        self.advance(now_ms)
        arrived = self._acks.pop_arrived(self._now_ms, _empty_acks())
        return AckBatch(site_ids=self._parameters.site_ids[arrived.site_index], command_id=arrived.command_id,
                        acknowledged_at_ms=arrived.acknowledged_at_ms, accepted=arrived.accepted)

    # ---- internals -----------------------------------------------------------------------------------------

    def _step(self, end_ms: int) -> None:
        start_ms = self._now_ms
        duration_ms = end_ms - start_ms
        middle_ms = start_ms + duration_ms // 2
        self._log_noise = next_log_noise(self._log_noise, duration_ms / 1000.0, self._load_rng)
        pv_kw = pv_power_kw(self._pv_fleet, middle_ms)
        load_kw = household_load_kw(self._loads, middle_ms, self._log_noise)
        setpoint_share = np.clip((self._setpoint_valid_until_ms - start_ms) / duration_ms, 0.0, 1.0)
        planned_kw = self._planned_power_kw(middle_ms)
        own_kw = np.where(np.isnan(planned_kw), self_consumption_request_kw(pv_kw, load_kw), planned_kw)
        request_kw = setpoint_share * self._setpoint_kw + (1.0 - setpoint_share) * own_kw
        previous_soc_kwh = self._state_of_charge_kwh
        step = battery_step(self._parameters, previous_soc_kwh, request_kw, duration_ms / 1000.0)
        self._state_of_charge_kwh = step.state_of_charge_kwh
        self._battery_power_kw, self._pv_power_kw, self._load_power_kw = step.battery_power_kw, pv_kw, load_kw
        self._now_ms = end_ms
        self._update_outages(end_ms)
        self._send_readings(start_ms, end_ms, previous_soc_kwh)

    def _planned_power_kw(self, at_ms: int) -> FloatArray:
        """Each site's planned power for the plan interval covering ``at_ms`` (kW; NaN where none covers it)."""
        horizon = self._plan_power_kw.shape[1]
        if horizon == 0:
            return np.full(self._parameters.site_count, np.nan)
        interval = (at_ms - self._plan_start_ms) // self._plan_interval_ms
        covered = (self._plan_start_ms != NO_PLAN) & (interval >= 0) & (interval < horizon)
        column = np.where(covered, interval, 0)
        planned = np.take_along_axis(self._plan_power_kw, column[:, None], axis=1)[:, 0]
        return np.where(covered, planned, np.nan)

    def _schedule_transitions(self, sites: IntArray, from_ms: int) -> None:
        """Draw the next online/offline change of ``sites`` (exponential, by their current state)."""
        config = self._config
        if config.offline_fraction == 0.0 or len(sites) == 0:
            self._next_transition_ms[sites] = NO_TRANSITION_MS
            return
        mean_online_s = config.mean_offline_duration_s * (1.0 - config.offline_fraction) / config.offline_fraction
        mean_s = np.where(self._online[sites], mean_online_s, config.mean_offline_duration_s)
        delay_ms = np.ceil(self._outage_rng.exponential(1.0, len(sites)) * mean_s * 1000.0).astype(np.int64)
        self._next_transition_ms[sites] = from_ms + np.maximum(delay_ms, 1)

    def _update_outages(self, now_ms: int) -> None:
        changing = np.flatnonzero(self._next_transition_ms <= now_ms)
        if len(changing):
            self._online[changing] = ~self._online[changing]
            self._schedule_transitions(changing, now_ms)

    def _send_readings(self, start_ms: int, end_ms: int, previous_soc_kwh: FloatArray) -> None:
        due = np.flatnonzero(self._next_report_ms <= end_ms)
        if len(due) == 0:
            return
        measured_at_ms = self._next_report_ms[due]
        self._next_report_ms[due] += self._reporting_interval_ms
        sending = self._online[due]
        sites, measured_at_ms = due[sending], measured_at_ms[sending]
        self._sequence[sites] += 1
        fraction = (measured_at_ms - start_ms) / (end_ms - start_ms)
        soc_kwh = previous_soc_kwh[sites] + fraction * (self._state_of_charge_kwh[sites] - previous_soc_kwh[sites])
        readings = _InFlightReadings(
            site_index=sites, sequence=self._sequence[sites], measured_at_ms=measured_at_ms,
            battery_power_kw=self._battery_power_kw[sites],
            state_of_charge_pct=100.0 * soc_kwh / self._parameters.capacity_kwh[sites],
            pv_power_kw=self._pv_power_kw[sites], load_power_kw=self._load_power_kw[sites],
            arrives_at_ms=measured_at_ms)
        self._readings.push(self._with_transit(readings))

    def _with_transit(self, readings: _InFlightReadings) -> _InFlightReadings:
        """Give each reading its arrival time, and add the duplicate copies (see the module docstring)."""
        config, rng = self._config, self._telemetry_rng
        count = len(readings.site_index)
        draws = rng.random((4, count))
        latency_ms = config.telemetry_latency_ms * (0.5 + draws[0])
        delay_ms = latency_ms.copy()
        late = draws[1] < config.telemetry_late_probability
        delay_ms[late] += _capped_exponential(rng, config.telemetry_late_delay_mean_s,
                                              config.telemetry_late_delay_max_s, int(late.sum()))
        reordered = draws[2] < config.telemetry_reorder_probability
        delay_ms[reordered] += self._reporting_interval_ms * (1.0 + rng.random(int(reordered.sum())))
        originals = _InFlightReadings(**{**_fields_of(readings),
                                         "arrives_at_ms": readings.measured_at_ms + np.ceil(delay_ms).astype(np.int64)})
        duplicated = np.flatnonzero(draws[3] < config.telemetry_duplicate_probability)
        if len(duplicated) == 0:
            return originals
        copies = _take(readings, duplicated)
        copy_delay_ms = latency_ms[duplicated] + _capped_exponential(
            rng, config.telemetry_duplicate_delay_mean_s, config.telemetry_late_delay_max_s, len(duplicated))
        copies = _InFlightReadings(**{**_fields_of(copies),
                                      "arrives_at_ms": copies.measured_at_ms + np.ceil(copy_delay_ms).astype(np.int64)})
        return _concatenate([originals, copies])

    def _apply(self, sites: IntArray, command_id: IntArray, setpoint_kw: FloatArray, valid_until_ms: IntArray) -> None:
        """Apply each site's newest command that is newer than anything it applied before."""
        if len(sites) == 0:
            return
        order = np.lexsort((command_id, sites))
        sites, command_id = sites[order], command_id[order]
        newest_per_site = np.append(sites[1:] != sites[:-1], True)
        newer = newest_per_site & (command_id > self._last_command_id[sites])
        chosen, rows = sites[newer], order[newer]
        self._last_command_id[chosen] = command_id[newer]
        self._setpoint_kw[chosen] = setpoint_kw[rows]
        self._setpoint_valid_until_ms[chosen] = valid_until_ms[rows]

    def _send_acks(self, sites: IntArray, command_id: IntArray, accepted: BoolArray) -> None:
        config, rng = self._config, self._command_rng
        count = len(sites)
        delay_ms = config.ack_delay_median_s * 1000.0 * np.exp(config.ack_delay_log_sigma * rng.normal(0, 1, count))
        late = rng.random(count) < config.ack_late_probability
        delay_ms[late] += _capped_exponential(rng, config.ack_late_delay_mean_s, config.ack_late_delay_max_s,
                                              int(late.sum()))
        acknowledged_at_ms = np.full(count, self._now_ms, dtype=np.int64)
        self._acks.push(_InFlightAcks(site_index=sites, command_id=command_id, acknowledged_at_ms=acknowledged_at_ms,
                                      accepted=accepted,
                                      arrives_at_ms=acknowledged_at_ms + np.ceil(delay_ms).astype(np.int64)))


def _fields_of(readings: _InFlightReadings) -> dict[str, IntArray | FloatArray]:
    return {field.name: getattr(readings, field.name) for field in fields(readings)}
