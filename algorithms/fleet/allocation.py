"""Dispatch allocation: an aggregate target (MW) → per-site setpoints (kW), and the closed-loop correction.

Two pure, vectorised functions the dispatch workflow calls:

* :func:`allocate_setpoints` plans the event's first setpoints from live state, like a query planner:
  it leaves out sites it cannot rely on (never reported, stale, too empty to discharge / too full to
  charge, counted per reason), works out each remaining site's *headroom* (the power it can hold for
  the whole window without going below its owner's backup reserve plus a margin, or above full), and
  puts every site at the same fraction of its headroom, so the target is spread in proportion to
  headroom. A target beyond the total headroom puts everyone at their headroom and reports the rest as
  ``unallocated_mw``.
* :func:`correct_setpoints` is one step of the control loop (called every few seconds while the event
  runs): it compares the measured response with the target and moves the setpoints to close the error
  (the control law is in its docstring).

Sign convention: kW / MW, positive = discharge (export), negative = charge. A target's sign is the
event's *direction* ``σ`` (+1 discharge, −1 charge; 0 counts as discharge); headroom is a magnitude
(kW ≥ 0) in that direction; setpoints are ``σ × magnitude``.

The event's target is the total battery power of the event's sites (``site_rows``), measured as the
sum of their battery power: sites the allocation leaves out are not commanded (setpoint 0), and
whatever they do is measured and compensated by the others during correction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from algorithms.fleet.fleet_types import NEVER, BoolArray, FleetState, FloatArray, IntArray, SiteParameters, StrArray
from algorithms.fleet.telemetry import FleetInputError, check_state_matches

NO_EXCLUSION = -1
"""Exclusion code of a site that takes part normally."""
MIN_REMAINING_WINDOW_S = 60.0
"""When headroom is re-derived late in a window, the remaining window counts as at least this (s)."""


class SiteExclusion(StrEnum):
    """Why a site does not take its share of the target (a code's index is its position here).

    The first four are decided at allocation and hold for the whole event (setpoint 0);
    ``under_delivering`` also holds once found; ``offline`` and ``not_acknowledged`` are re-judged at
    every correction step.
    """

    NEVER_REPORTED = "never_reported"
    STALE = "stale"
    NEAR_EMPTY = "near_empty"
    NEAR_FULL = "near_full"
    OFFLINE = "offline"
    NOT_ACKNOWLEDGED = "not_acknowledged"
    UNDER_DELIVERING = "under_delivering"


SITE_EXCLUSIONS: tuple[SiteExclusion, ...] = tuple(SiteExclusion)
_CODE = {reason: np.int8(index) for index, reason in enumerate(SITE_EXCLUSIONS)}
_PERSISTENT_CODES = np.array([_CODE[SiteExclusion.NEVER_REPORTED], _CODE[SiteExclusion.STALE],
                              _CODE[SiteExclusion.NEAR_EMPTY], _CODE[SiteExclusion.NEAR_FULL],
                              _CODE[SiteExclusion.UNDER_DELIVERING]], dtype=np.int8)


@dataclass(frozen=True)
class AllocationRules:
    """How setpoints are planned and corrected.

    Attributes:
        stale_after_ms: a site whose latest reading is older than this is left out (ms).
        min_soc_margin_pct: SoC margin (percentage points) kept above the backup reserve when
            discharging, and below 100 % when charging; a site within it is near empty / near full.
            It should cover the SoC drift a reading can have within ``stale_after_ms``.
        max_fraction_of_headroom: use at most this share of each site's headroom (0–1].
        under_delivery_fraction: an acknowledged, settled site delivering less than this share of its
            setpoint (minus ``under_delivery_tolerance_kw``) is under-delivering.
        under_delivery_tolerance_kw: absolute slack of that test (kW), so tiny setpoints are not judged.
        settle_steps: correction steps a site must have been acknowledged before its measurement is
            judged (its response takes about a step to show), and steps before the integral starts.
        integral_gain: share of the aggregate error added to the integral per step (0–1]; the error of
            a steady loss shrinks by (1 − gain × delivery ratio) per step.
        integral_limit_fraction: the integral term is clamped to ± this share of |target|.
    """

    stale_after_ms: int = 30_000
    min_soc_margin_pct: float = 5.0
    max_fraction_of_headroom: float = 1.0
    under_delivery_fraction: float = 0.5
    under_delivery_tolerance_kw: float = 0.2
    settle_steps: int = 1
    integral_gain: float = 0.5
    integral_limit_fraction: float = 0.25

    def __post_init__(self) -> None:
        problems = []
        if self.stale_after_ms <= 0:
            problems.append(f"stale_after_ms must be > 0, got {self.stale_after_ms}")
        if not 0.0 <= self.min_soc_margin_pct < 100.0:
            problems.append(f"min_soc_margin_pct must be in [0, 100), got {self.min_soc_margin_pct}")
        if not 0.0 < self.max_fraction_of_headroom <= 1.0:
            problems.append(f"max_fraction_of_headroom must be in (0, 1], got {self.max_fraction_of_headroom}")
        if not 0.0 <= self.under_delivery_fraction <= 1.0:
            problems.append(f"under_delivery_fraction must be in [0, 1], got {self.under_delivery_fraction}")
        if self.under_delivery_tolerance_kw < 0 or self.settle_steps < 0:
            problems.append("under_delivery_tolerance_kw and settle_steps must be ≥ 0")
        if not 0.0 <= self.integral_gain <= 1.0 or self.integral_limit_fraction < 0:
            problems.append("integral_gain must be in [0, 1] and integral_limit_fraction ≥ 0")
        if problems:
            raise FleetInputError("invalid AllocationRules: " + "; ".join(problems))


@dataclass(frozen=True)
class Allocation:
    """Setpoints of one dispatch event at one step; arrays are aligned with ``site_rows``.

    Attributes:
        site_rows: the event's sites (rows into the parameters / state).
        setpoint_kw: setpoint per site (kW, σ × magnitude; 0 for excluded sites).
        headroom_kw: power each site can hold in the event's direction for the rest of the window
            (kW ≥ 0; 0 for sites excluded at allocation).
        exclusion_codes: per site, index into :data:`SITE_EXCLUSIONS`, or :data:`NO_EXCLUSION`.
        target_mw: the event's target (MW, + discharge / − charge).
        direction: σ, +1 discharge or −1 charge.
        unallocated_mw: part of the plan no site could take (MW, same sign as the target when short,
            opposite when the sites that cannot be moved already overshoot).
        window_end_ms: end of the event window (epoch ms).
        step: correction steps done (0 for the first allocation).
        integral_mw: the controller's integral term (MW, signed like the target).
        acknowledged_steps: per site, consecutive correction steps it has been acknowledged.
    """

    site_rows: IntArray
    setpoint_kw: FloatArray
    headroom_kw: FloatArray
    exclusion_codes: npt.NDArray[np.int8]
    target_mw: float
    direction: int
    unallocated_mw: float
    window_end_ms: int
    step: int
    integral_mw: float
    acknowledged_steps: IntArray

    @property
    def allocated_mw(self) -> float:
        """Sum of the setpoints (MW)."""
        return float(self.setpoint_kw.sum()) / 1000.0

    @property
    def exclusions(self) -> StrArray:
        """Per site, the :class:`SiteExclusion` value, or "" for a site taking part."""
        names = np.array(["", *(reason.value for reason in SITE_EXCLUSIONS)])
        return names[self.exclusion_codes.astype(np.int64) + 1]

    @property
    def excluded(self) -> dict[SiteExclusion, int]:
        """Same as :attr:`exclusion_counts`."""
        return self.exclusion_counts

    @property
    def exclusion_counts(self) -> dict[SiteExclusion, int]:
        """Sites per exclusion reason (every reason present, 0 when none)."""
        excluded = self.exclusion_codes[self.exclusion_codes != NO_EXCLUSION].astype(np.int64)
        counts = np.bincount(excluded, minlength=len(SITE_EXCLUSIONS))
        return {reason: int(counts[code]) for code, reason in enumerate(SITE_EXCLUSIONS)}


def _check_site_rows(parameters: SiteParameters, site_rows: IntArray) -> IntArray:
    rows = np.asarray(site_rows)
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise FleetInputError("site_rows must be a 1-d integer array of rows into the site parameters")
    rows = rows.astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= parameters.site_count):
        raise FleetInputError(f"site_rows must lie in 0..{parameters.site_count - 1}")
    if rows.size and int(np.bincount(rows, minlength=parameters.site_count).max()) > 1:
        raise FleetInputError("site_rows must not repeat a site (it would be allocated twice)")
    return rows


def _direction(target_mw: float) -> int:
    if not np.isfinite(target_mw):
        raise FleetInputError(f"target_mw must be finite, got {target_mw}")
    return -1 if target_mw < 0 else 1


def site_headroom_kw(parameters: SiteParameters, state: FleetState, site_rows: IntArray, direction: int,
                     window_s: float, rules: AllocationRules) -> tuple[FloatArray, BoolArray]:
    """Per site: headroom (kW ≥ 0) in ``direction`` over ``window_s``, and whether it is near empty/full.

    Discharge: ``min(max_discharge_kw, stored energy above (reserve + margin) × discharge eff / window
    h)``; near empty when SoC ≤ reserve + margin. Charge: ``min(max_charge_kw, room below (100 % −
    margin) / charge eff / window h)``; near full when SoC ≥ 100 % − margin. Both are scaled by
    ``rules.max_fraction_of_headroom``. A site without a SoC gets 0 (and is not flagged here).
    """
    capacity = parameters.capacity_kwh[site_rows]
    soc_pct = state.state_of_charge_pct[site_rows]
    window_h = window_s / 3600.0
    known = np.isfinite(soc_pct)
    soc = np.where(known, soc_pct, 0.0)
    if direction > 0:
        floor_pct = parameters.backup_reserve_fraction[site_rows] * 100.0 + rules.min_soc_margin_pct
        energy_kwh = np.maximum(soc - floor_pct, 0.0) / 100.0 * capacity * parameters.discharge_efficiency[site_rows]
        headroom = np.minimum(parameters.max_discharge_kw[site_rows], energy_kwh / window_h)
        limited = known & (soc <= floor_pct)
    else:
        ceiling_pct = 100.0 - rules.min_soc_margin_pct
        room_kwh = np.maximum(ceiling_pct - soc, 0.0) / 100.0 * capacity / parameters.charge_efficiency[site_rows]
        headroom = np.minimum(parameters.max_charge_kw[site_rows], room_kwh / window_h)
        limited = known & (soc >= ceiling_pct)
    headroom = np.where(known & ~limited, np.maximum(headroom, 0.0), 0.0) * rules.max_fraction_of_headroom
    return headroom, limited


def _spread(direction: int, plan_kw: float, headroom_kw: FloatArray) -> tuple[FloatArray, float]:
    """Put every site at the same fraction of its headroom to reach ``plan_kw``; returns setpoints, rest kW."""
    wanted = direction * plan_kw  # magnitude in the event's direction (may be < 0: must reduce)
    total = float(headroom_kw.sum())
    fraction = min(max(wanted / total, 0.0), 1.0) if total > 0 else 0.0
    return direction * fraction * headroom_kw, direction * (wanted - fraction * total)


def allocate_setpoints(parameters: SiteParameters, state: FleetState, site_rows: IntArray, target_mw: float,
                       window_s: float, now_ms: int, rules: AllocationRules) -> Allocation:
    """First setpoints of a dispatch event: ``target_mw`` for ``window_s`` over the sites ``site_rows``.

    Sites are left out, in this order of reasons: never reported, stale (reading older than
    ``rules.stale_after_ms`` at ``now_ms``), near empty (discharge) / near full (charge). The others get
    ``σ × f × headroom`` with one fraction ``f = min(|target| / Σ headroom, 1)`` for all (see
    :func:`site_headroom_kw`), so the setpoints sum to the target whenever the target is feasible and no
    site is asked beyond its headroom (never below reserve + margin within the window, never above its
    max power).

    Args:
        parameters, state: the fleet (kW, kWh, %), aligned.
        site_rows: rows of the sites under the event's node (unique).
        target_mw: aggregate battery power asked (MW, + discharge / − charge).
        window_s: event duration (s, > 0).
        now_ms: the clock (epoch ms) staleness is judged at; the window starts here.
        rules: :class:`AllocationRules`.

    Raises:
        FleetInputError: misaligned state, bad rows, non-finite target, non-positive window.
    """
    check_state_matches(parameters, state)
    rows = _check_site_rows(parameters, site_rows)
    direction = _direction(target_mw)
    if not window_s > 0:
        raise FleetInputError(f"window_s must be > 0, got {window_s}")
    measured_at_ms = state.measured_at_ms[rows]
    never = measured_at_ms == NEVER
    stale = ~never & (now_ms - measured_at_ms > rules.stale_after_ms)
    headroom, limited = site_headroom_kw(parameters, state, rows, direction, window_s, rules)
    codes = np.full(len(rows), NO_EXCLUSION, dtype=np.int8)
    limit_reason = SiteExclusion.NEAR_EMPTY if direction > 0 else SiteExclusion.NEAR_FULL
    for reason, mask in ((limit_reason, limited), (SiteExclusion.STALE, stale),
                         (SiteExclusion.NEVER_REPORTED, never)):
        codes[mask] = _CODE[reason]  # earlier reasons written last, so they win
    headroom = np.where(codes == NO_EXCLUSION, headroom, 0.0)
    setpoints, rest_kw = _spread(direction, target_mw * 1000.0, headroom)
    return Allocation(
        site_rows=rows,
        setpoint_kw=setpoints,
        headroom_kw=headroom,
        exclusion_codes=codes,
        target_mw=float(target_mw),
        direction=direction,
        unallocated_mw=rest_kw / 1000.0,
        window_end_ms=int(now_ms + round(window_s * 1000.0)),
        step=0,
        integral_mw=0.0,
        acknowledged_steps=np.zeros(len(rows), dtype=np.int64),
    )


def _check_step_inputs(allocation: Allocation, acknowledged: BoolArray, measured_power_kw: FloatArray,
                       target_mw: float) -> None:
    site_count = len(allocation.site_rows)
    for name, values in (("acknowledged", acknowledged), ("measured_power_kw", measured_power_kw)):
        if np.shape(values) != (site_count,):
            raise FleetInputError(f"{name} has shape {np.shape(values)}, expected ({site_count},) like site_rows")
    if _direction(target_mw) != allocation.direction and target_mw != 0:
        raise FleetInputError("target_mw changed direction; allocate the event again for the other direction")


def correct_setpoints(parameters: SiteParameters, state: FleetState, allocation: Allocation,
                      acknowledged: BoolArray, measured_power_kw: FloatArray, target_mw: float,
                      rules: AllocationRules, *, now_ms: int | None = None) -> Allocation:
    """One closed-loop correction step: new setpoints that close the gap between target and response.

    Control law (σ = direction, T = target kW, m_i = measured power of site i, kW, NaN = no reading):

    1. **Classify** each site not excluded at allocation:
       *offline* (no finite measurement, or with ``now_ms`` a state reading older than
       ``rules.stale_after_ms``), *not acknowledged* (no accepted ack of this event's commands),
       *under-delivering* (acknowledged at ``rules.settle_steps`` earlier steps in a row, yet delivering
       ``σ·m_i < under_delivery_fraction × |previous setpoint| − tolerance``; this one is kept for the
       rest of the event and its headroom is capped at what it delivers), else *responsive*.
    2. **Fixed contribution** C = Σ σ·m_i over every site that is not responsive (NaN counts 0): the
       loop counts on what those sites are measured to do, nothing more. Their new setpoint is what
       they deliver, clipped to [0, headroom] in the event's direction, so a command that lands late
       cannot cause a surprise overshoot; once such a site acknowledges, it is responsive again at the
       next step and takes its share back. (Call the first correction only after the first commands
       had time to be acknowledged, or every site counts as not acknowledged.)
    3. **Integral** (damped, anti-windup): e = T − Σ m_i (all sites); once the event has run
       ``settle_steps`` steps, I ← clip(I + g·e, ±limit·|T|), skipped when the previous step was
       saturated in the direction e pushes. With measurements reflecting the previous setpoints, a
       steady loss (delivery ratio a) shrinks by (1 − g·a) per step: no overshoot for g·a ≤ 1. (If
       sites respond more slowly than a step, use a gain ≤ 0.25 per step of delay.)
    4. **Spread** the rest P = σ(T + I) − C over the responsive sites at one common fraction of their
       headroom (``_spread``); this equals adding the error to each in proportion to its remaining
       headroom, since they all sat at a common fraction. Offline and under-delivering sites are thus
       compensated by the others, within their headroom; what cannot be placed is ``unallocated_mw``.

    Args:
        parameters, state: the fleet; with ``now_ms`` the state judges staleness and the headroom is
            re-derived from the latest SoC over the window left (at least 60 s).
        allocation: the previous step's (or the first) allocation.
        acknowledged: per site row, True if the site has accepted a command of this event.
        measured_power_kw: per site row, its latest fresh battery power (kW), NaN if none.
        target_mw: the target now (MW, same direction as the allocation).
        rules: :class:`AllocationRules`.
        now_ms: the clock (epoch ms), optional.

    Returns:
        The next :class:`Allocation` (``step`` + 1, updated integral and acknowledgement counters).
    """
    check_state_matches(parameters, state)
    _check_step_inputs(allocation, acknowledged, measured_power_kw, target_mw)
    rows = allocation.site_rows
    direction = allocation.direction
    acked = np.asarray(acknowledged, dtype=bool)
    measured = np.asarray(measured_power_kw, dtype=np.float64)
    online = np.isfinite(measured)
    headroom = allocation.headroom_kw
    if now_ms is not None:
        online &= (state.measured_at_ms[rows] != NEVER) & (now_ms - state.measured_at_ms[rows] <= rules.stale_after_ms)
        remaining_s = max((allocation.window_end_ms - now_ms) / 1000.0, MIN_REMAINING_WINDOW_S)
        fresh_headroom, _ = site_headroom_kw(parameters, state, rows, direction, remaining_s, rules)
        headroom = np.where(allocation.headroom_kw > 0, fresh_headroom, 0.0)
        capped = allocation.exclusion_codes == _CODE[SiteExclusion.UNDER_DELIVERING]
        headroom = np.where(capped, np.minimum(headroom, allocation.headroom_kw), headroom)

    delivered = direction * np.where(online, measured, 0.0)
    persistent = np.isin(allocation.exclusion_codes, _PERSISTENT_CODES)
    codes = np.where(persistent, allocation.exclusion_codes, NO_EXCLUSION).astype(np.int8)
    settled = acked & (allocation.acknowledged_steps >= rules.settle_steps)
    previous = direction * allocation.setpoint_kw
    under = (~persistent & settled & online & (previous > rules.under_delivery_tolerance_kw)
             & (delivered < rules.under_delivery_fraction * previous - rules.under_delivery_tolerance_kw))
    codes[~persistent & ~acked] = _CODE[SiteExclusion.NOT_ACKNOWLEDGED]
    codes[~persistent & ~online] = _CODE[SiteExclusion.OFFLINE]
    codes[under] = _CODE[SiteExclusion.UNDER_DELIVERING]
    headroom = np.where(under, np.clip(delivered, 0.0, headroom), headroom)
    responsive = codes == NO_EXCLUSION

    target_kw = target_mw * 1000.0
    error_kw = target_kw - float(np.where(np.isfinite(measured), measured, 0.0).sum())
    integral_kw = allocation.integral_mw * 1000.0
    saturated_same_way = allocation.unallocated_mw * direction > 0 and error_kw * direction > 0
    if allocation.step >= rules.settle_steps and not saturated_same_way:
        limit_kw = rules.integral_limit_fraction * abs(target_kw)
        integral_kw = float(np.clip(integral_kw + rules.integral_gain * error_kw, -limit_kw, limit_kw))

    fixed_kw = direction * float(delivered[~responsive].sum())
    responsive_headroom = np.where(responsive, headroom, 0.0)
    spread_kw, rest_kw = _spread(direction, target_kw + integral_kw - fixed_kw, responsive_headroom)
    fixed_setpoints = direction * np.clip(delivered, 0.0, headroom)
    fixed_setpoints = np.where(np.isin(codes, _PERSISTENT_CODES[:4]), 0.0, fixed_setpoints)
    return replace(
        allocation,
        setpoint_kw=np.where(responsive, spread_kw, fixed_setpoints),
        headroom_kw=headroom,
        exclusion_codes=codes,
        target_mw=float(target_mw),
        unallocated_mw=rest_kw / 1000.0,
        step=allocation.step + 1,
        integral_mw=integral_kw / 1000.0,
        acknowledged_steps=np.where(acked, allocation.acknowledged_steps + 1, 0).astype(np.int64),
    )
