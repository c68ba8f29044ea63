"""Per-site accounting of a dispatch event: what each site was asked, acknowledged, delivered, fell short.

:func:`account_event` turns the event's per-control-step samples (steps × sites arrays) into an impact
log operators and site owners can read (:meth:`EventAccount.to_rows`) and an event summary. Pure and
vectorised: column sums over the step axis, no loop over sites.

Conventions: each step's sample stands for the whole step (``step_duration_s``); power in kW
(+ discharge / − charge), energy in kWh per site and MWh in the summary. A site's delivery in a step
counts in the direction it was asked (σ = sign of its setpoint); steps where it was asked nothing (0 kW)
do not count for or against it. A missing measurement (NaN) counts as delivering nothing and is
counted in ``missing_samples``. With ``baseline_kw`` (what the site would have done anyway), delivery
is measured minus baseline; without it, the measured battery power itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from algorithms.fleet.fleet_types import NEVER, BoolArray, FloatArray, IntArray, StrArray
from algorithms.fleet.telemetry import FleetInputError

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class EventSummary:
    """Totals of one event.

    Attributes:
        asked_mwh: energy asked over all sites (MWh, magnitude).
        delivered_mwh: energy delivered in the asked directions (MWh; can exceed asked).
        shortfall_mwh: energy short of what was asked, summed per site and step (MWh).
        delivered_pct: delivered / asked (%; NaN when nothing was asked).
        sites_asked: sites asked anything.
        sites_acknowledged: sites that acknowledged at least one command.
        sites_short: sites asked something whose shortfall exceeds the tolerance share of their ask.
        sites_missing_telemetry: sites with at least one missing sample while asked.
    """

    asked_mwh: float
    delivered_mwh: float
    shortfall_mwh: float
    delivered_pct: float
    sites_asked: int
    sites_acknowledged: int
    sites_short: int
    sites_missing_telemetry: int

    def describe(self) -> str:
        """One readable line, e.g. ``"asked 0.833 MWh, delivered 0.816 MWh (97.9 %), ..."``."""
        return (f"asked {self.asked_mwh:,.3f} MWh, delivered {self.delivered_mwh:,.3f} MWh "
                f"({self.delivered_pct:.1f} %), short {self.shortfall_mwh:,.3f} MWh; "
                f"{self.sites_acknowledged:,} of {self.sites_asked:,} sites asked acknowledged, "
                f"{self.sites_short:,} short, {self.sites_missing_telemetry:,} with missing telemetry")


@dataclass(frozen=True)
class EventAccount:
    """Per-site accounting of one event, arrays aligned with ``site_ids``.

    Attributes:
        site_ids: the event's sites.
        asked_kwh: energy asked (kWh, magnitude).
        delivered_kwh: energy delivered in the asked direction (kWh; negative if it went the other way).
        shortfall_kwh: Σ per step of max(asked − delivered, 0) (kWh).
        acknowledged: the site acknowledged at least one command.
        first_ack_ms: its first acknowledgement (epoch ms), :data:`NEVER` if none.
        missing_samples: steps with no measurement while asked something.
        short: shortfall above the tolerance share of the ask.
        summary: the event totals.
    """

    site_ids: StrArray
    asked_kwh: FloatArray
    delivered_kwh: FloatArray
    shortfall_kwh: FloatArray
    acknowledged: BoolArray
    first_ack_ms: IntArray
    missing_samples: IntArray
    short: BoolArray
    summary: EventSummary

    def to_rows(self) -> list[dict[str, str | float | int | bool]]:
        """The impact log: one readable dict per site (kWh rounded to Wh, ack time as ISO 8601 UTC)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            pct = np.where(self.asked_kwh > 0, self.delivered_kwh / self.asked_kwh * 100.0, np.nan)
        rows: list[dict[str, str | float | int | bool]] = []
        for index, site_id in enumerate(self.site_ids.tolist()):  # formatting only, after the maths
            ack_ms = int(self.first_ack_ms[index])
            rows.append({
                "site_id": site_id,
                "asked_kwh": round(float(self.asked_kwh[index]), 3),
                "delivered_kwh": round(float(self.delivered_kwh[index]), 3),
                "shortfall_kwh": round(float(self.shortfall_kwh[index]), 3),
                "delivered_pct": round(float(pct[index]), 1),
                "acknowledged": bool(self.acknowledged[index]),
                "first_ack_utc": "" if ack_ms == NEVER else _iso_utc(ack_ms),
                "missing_samples": int(self.missing_samples[index]),
                "short": bool(self.short[index]),
            })
        return rows


def _iso_utc(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000.0, tz=UTC).isoformat(timespec="milliseconds")


def _check_shapes(site_ids: StrArray, asked_kw: FloatArray, acknowledged: BoolArray, measured_kw: FloatArray,
                  step_duration_s: FloatArray, baseline_kw: FloatArray | None,
                  first_ack_ms: IntArray | None) -> None:
    shape = (len(step_duration_s), len(site_ids))
    for name, values in (("asked_kw", asked_kw), ("acknowledged", acknowledged),
                         ("measured_kw", measured_kw), ("baseline_kw", baseline_kw)):
        if values is not None and np.shape(values) != shape:
            raise FleetInputError(f"{name} has shape {np.shape(values)}, expected (steps, sites) = {shape}")
    if first_ack_ms is not None and np.shape(first_ack_ms) != (len(site_ids),):
        raise FleetInputError(f"first_ack_ms has shape {np.shape(first_ack_ms)}, expected ({len(site_ids)},)")
    if np.any(~np.isfinite(asked_kw)):
        raise FleetInputError("asked_kw must be finite (0 where a site was asked nothing)")
    if np.any(~(np.asarray(step_duration_s) >= 0)):
        raise FleetInputError("step_duration_s must be ≥ 0 seconds")


def account_event(site_ids: StrArray, asked_kw: FloatArray, acknowledged: BoolArray, measured_kw: FloatArray,
                  step_duration_s: FloatArray, *, first_ack_ms: IntArray | None = None,
                  baseline_kw: FloatArray | None = None, short_tolerance_fraction: float = 0.05) -> EventAccount:
    """Account an event from its per-step samples (steps × sites arrays).

    Args:
        site_ids: the event's sites (length S).
        asked_kw: setpoint in force per step and site (kW, + discharge / − charge; 0 = not asked).
        acknowledged: per step and site, whether the site had acknowledged (accepted) a command of the
            event by then.
        measured_kw: measured battery power per step and site (kW), NaN if no reading.
        step_duration_s: duration of each step (s, ≥ 0), length T (e.g. ``np.diff(sample_times_ms) / 1000``
            with one more time at the end of the event).
        first_ack_ms: optional per site, its first acknowledgement (epoch ms, NEVER if none); without
            it the log has no acknowledgement times (NEVER everywhere).
        baseline_kw: optional power each site would have had anyway (kW), subtracted from measured.
        short_tolerance_fraction: a site is *short* when its shortfall exceeds this share of its ask.

    Returns:
        :class:`EventAccount` with per-site kWh and the event summary (MWh).

    Raises:
        FleetInputError: shapes that do not match (steps, sites), non-finite asks, negative durations.
    """
    _check_shapes(site_ids, asked_kw, acknowledged, measured_kw, step_duration_s, baseline_kw, first_ack_ms)
    hours = np.asarray(step_duration_s, dtype=np.float64)[:, None] / SECONDS_PER_HOUR
    asked = np.asarray(asked_kw, dtype=np.float64)
    direction = np.sign(asked)
    was_asked = direction != 0
    measured = np.asarray(measured_kw, dtype=np.float64)
    missing = was_asked & ~np.isfinite(measured)
    response = np.where(np.isfinite(measured), measured, 0.0)
    if baseline_kw is not None:
        response = response - np.nan_to_num(np.asarray(baseline_kw, dtype=np.float64))
    delivered_kw = np.where(was_asked, direction * response, 0.0)
    asked_kwh = (np.abs(asked) * hours).sum(axis=0)
    delivered_kwh = (delivered_kw * hours).sum(axis=0)
    shortfall_kwh = (np.maximum(np.abs(asked) - delivered_kw, 0.0) * hours).sum(axis=0)

    ever_acknowledged = np.asarray(np.asarray(acknowledged, dtype=bool).any(axis=0), dtype=bool)
    if first_ack_ms is not None:
        ever_acknowledged |= np.asarray(first_ack_ms) != NEVER
    first_ack = (np.full(len(site_ids), NEVER, dtype=np.int64) if first_ack_ms is None
                 else np.asarray(first_ack_ms, dtype=np.int64))
    asked_any = asked_kwh > 0
    short = asked_any & (shortfall_kwh > short_tolerance_fraction * asked_kwh + 1e-9)
    missing_samples = missing.sum(axis=0).astype(np.int64)
    total_asked = float(asked_kwh.sum())
    total_delivered = float(delivered_kwh.sum())
    summary = EventSummary(
        asked_mwh=total_asked / 1000.0,
        delivered_mwh=total_delivered / 1000.0,
        shortfall_mwh=float(shortfall_kwh.sum()) / 1000.0,
        delivered_pct=total_delivered / total_asked * 100.0 if total_asked > 0 else float("nan"),
        sites_asked=int(asked_any.sum()),
        sites_acknowledged=int((ever_acknowledged & asked_any).sum()),
        sites_short=int(short.sum()),
        sites_missing_telemetry=int((missing_samples > 0).sum()),
    )
    return EventAccount(
        site_ids=np.asarray(site_ids),
        asked_kwh=asked_kwh,
        delivered_kwh=delivered_kwh,
        shortfall_kwh=shortfall_kwh,
        acknowledged=ever_acknowledged,
        first_ack_ms=first_ack,
        missing_samples=missing_samples,
        short=short,
        summary=summary,
    )


def readings_in_force(step_times_ms: IntArray, measured_at_ms: IntArray, measured_kw: FloatArray,
                      max_age_ms: int) -> FloatArray:
    """Per step and site, the power of the reading that was *in force* at the step's time (kW).

    Telemetry lags: at a control step the platform holds readings measured seconds earlier, some of
    them before the command in force, and readings measured before a step can arrive after it. For
    accounting, each step ``k`` is therefore judged by the newest reading measured at or before
    ``step_times_ms[k]`` among everything recorded over the event (samples ``j >= k`` included),
    provided it is at most ``max_age_ms`` old; otherwise NaN (no evidence).

    Args:
        step_times_ms: the steps' times (T,), ascending (epoch ms).
        measured_at_ms: per recorded sample and site (T, S), the measurement time of the site's latest
            reading as held then (NEVER if none); non-decreasing down each column.
        measured_kw: the matching battery power (T, S), kW.
        max_age_ms: oldest reading that still counts for a step.

    Vectorised: one ``np.searchsorted`` over the column-major flattening (O(T·S·log(T·S))).
    """
    steps, sites = measured_at_ms.shape
    if steps == 0 or sites == 0:
        return np.full((len(step_times_ms), sites), np.nan)
    first_reading = measured_at_ms[measured_at_ms >= 0].min(initial=step_times_ms.min())
    origin = int(min(int(step_times_ms.min()), int(first_reading)))
    span = int(max(int(step_times_ms.max()), int(measured_at_ms.max()))) - origin + 2
    relative = np.where(measured_at_ms >= 0, measured_at_ms - origin + 1, 0).astype(np.int64)
    offsets = np.arange(sites, dtype=np.int64) * span
    keys = (relative.T + offsets[:, None]).ravel()
    values = measured_kw.T.ravel()
    times = measured_at_ms.T.ravel()
    queries = (step_times_ms.astype(np.int64)[None, :] - origin + 1) + offsets[:, None]
    index = np.searchsorted(keys, queries.ravel(), side="right") - 1
    column_start = np.repeat(offsets // span * steps, len(step_times_ms))
    found = index >= column_start
    safe = np.where(found, index, 0)
    age = np.repeat(step_times_ms[None, :], sites, axis=0).ravel() - times[safe]
    usable = found & (times[safe] >= 0) & (age <= max_age_ms)
    return np.where(usable, values[safe], np.nan).reshape(sites, len(step_times_ms)).T
