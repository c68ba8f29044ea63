"""Synthetic household consumption per site: a documented generator, deterministic in its seed.

No package ships a real Australian household load profile, so the load is synthetic:

``load_kw(site, t) = mean_load_kw[site] × shape(local clock hour of t + shift[site], weekend?) × noise[site, t]``

- **Daily shape** (relative, mean 1 over a day, :data:`WEEKDAY_SHAPE` / :data:`WEEKEND_SHAPE`, one value
  per hour at the start of the hour, linear in between, periodic): a low overnight base, a morning peak
  around 7:00 on weekdays (later and broader at weekends, with more daytime use) and the evening peak
  around 18:00–20:00. Clock time is Adelaide's (``Australia/Adelaide``, with daylight saving), because
  people live by the clock.
- **Per-site scale**: average consumption drawn log-normally around 14 kWh/day (σ = 0.35 in log space,
  clipped to 4–45 kWh/day), i.e. ``mean_load_kw = daily_kwh / 24``.
- **Per-site habits**: the whole shape shifted by one of −60, −30, 0, +30, +60 minutes per site.
- **Noise**: a multiplicative log-normal factor per site that follows an AR(1) process in log space
  (σ = 0.3, correlation time 15 minutes, :func:`next_log_noise`), so consumption wanders smoothly
  rather than jumping every second; the factor is ``exp(noise − σ²/2)`` so its mean is 1. Its state
  lives with the caller (the simulator).

The shape is evaluated at only five shifted times per call, then gathered per site: no per-site
interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

from algorithms.fleet.fleet_types import FloatArray, IntArray

SITE_TIME_ZONE = ZoneInfo("Australia/Adelaide")

WEEKDAY_SHAPE_RAW = np.array([
    0.45, 0.40, 0.38, 0.38, 0.40, 0.50, 0.85, 1.30, 1.15, 0.80, 0.65, 0.60,
    0.60, 0.60, 0.62, 0.75, 1.00, 1.45, 1.95, 2.00, 1.80, 1.45, 1.05, 0.65,
])
WEEKEND_SHAPE_RAW = np.array([
    0.50, 0.42, 0.38, 0.37, 0.37, 0.40, 0.55, 0.80, 1.15, 1.35, 1.25, 1.10,
    1.00, 0.95, 0.90, 0.95, 1.10, 1.45, 1.85, 1.90, 1.75, 1.45, 1.10, 0.75,
])
WEEKDAY_SHAPE: FloatArray = WEEKDAY_SHAPE_RAW / WEEKDAY_SHAPE_RAW.mean()
"""Relative weekday consumption at each clock hour (mean 1)."""
WEEKEND_SHAPE: FloatArray = WEEKEND_SHAPE_RAW / WEEKEND_SHAPE_RAW.mean()
"""Relative Saturday/Sunday consumption at each clock hour (mean 1)."""

SHIFT_MINUTES = np.array([-60.0, -30.0, 0.0, 30.0, 60.0])
SHIFT_SHARES = np.array([0.1, 0.2, 0.4, 0.2, 0.1])
DAILY_KWH_MEDIAN = 14.0
DAILY_KWH_LOG_SIGMA = 0.35
DAILY_KWH_RANGE = (4.0, 45.0)
NOISE_LOG_SIGMA = 0.3
NOISE_CORRELATION_S = 900.0


@dataclass(frozen=True)
class HouseholdLoads:
    """Per-site load description: ``mean_load_kw`` (average kW over a day) and ``shift_class`` (index
    into :data:`SHIFT_MINUTES`)."""

    mean_load_kw: FloatArray
    shift_class: IntArray


def make_household_loads(site_count: int, seed: int) -> HouseholdLoads:
    """Draw ``site_count`` households (scale and habit shift), deterministic in ``seed``."""
    if site_count < 0:
        raise ValueError(f"site_count must be >= 0, got {site_count}")
    rng = np.random.default_rng(seed)
    daily_kwh = np.clip(DAILY_KWH_MEDIAN * np.exp(rng.normal(0.0, DAILY_KWH_LOG_SIGMA, site_count)),
                        *DAILY_KWH_RANGE)
    shift_class = rng.choice(len(SHIFT_MINUTES), size=site_count, p=SHIFT_SHARES).astype(np.int64)
    return HouseholdLoads(mean_load_kw=daily_kwh / 24.0, shift_class=shift_class)


def local_clock(epoch_ms: int) -> tuple[float, bool]:
    """Adelaide clock hour of day (0–24, fractional) at ``epoch_ms`` and whether it is a weekend."""
    local = datetime.fromtimestamp(epoch_ms / 1000.0, tz=UTC).astimezone(SITE_TIME_ZONE)
    hour = local.hour + local.minute / 60.0 + (local.second + local.microsecond / 1e6) / 3600.0
    return hour, local.weekday() >= 5


def daily_shape(hour_of_day: FloatArray, weekend: bool) -> FloatArray:
    """Relative consumption (mean 1 over a day) at clock hours ``hour_of_day`` (any real, periodic 24 h)."""
    shape = WEEKEND_SHAPE if weekend else WEEKDAY_SHAPE
    hours = np.mod(np.asarray(hour_of_day, dtype=np.float64), 24.0)
    return np.asarray(np.interp(hours, np.arange(25.0), np.append(shape, shape[0])), dtype=np.float64)


def household_load_kw(loads: HouseholdLoads, epoch_ms: int, log_noise: FloatArray) -> FloatArray:
    """Consumption of every site at ``epoch_ms`` (kW, > 0), given each site's current log-noise value.

    Args:
        loads: per-site scale and habit shift.
        epoch_ms: time (epoch ms UTC).
        log_noise: per-site noise in log space (dimensionless; 0 = none), see :func:`next_log_noise`.
    """
    hour, weekend = local_clock(epoch_ms)
    per_shift = daily_shape(hour - SHIFT_MINUTES / 60.0, weekend)
    return loads.mean_load_kw * per_shift[loads.shift_class] * np.exp(log_noise - NOISE_LOG_SIGMA**2 / 2.0)


def initial_log_noise(site_count: int, rng: np.random.Generator) -> FloatArray:
    """Stationary draw of the per-site log noise (normal, σ = :data:`NOISE_LOG_SIGMA`)."""
    return rng.normal(0.0, NOISE_LOG_SIGMA, site_count)


def next_log_noise(log_noise: FloatArray, elapsed_s: float, rng: np.random.Generator) -> FloatArray:
    """Advance the AR(1) log noise by ``elapsed_s`` seconds (stationary σ, correlation time 15 min)."""
    if elapsed_s < 0:
        raise ValueError(f"elapsed_s must be >= 0, got {elapsed_s}")
    correlation = float(np.exp(-elapsed_s / NOISE_CORRELATION_S))
    innovation = NOISE_LOG_SIGMA * np.sqrt(1.0 - correlation**2)
    return np.asarray(correlation * log_noise + innovation * rng.normal(0.0, 1.0, len(log_noise)), dtype=np.float64)
