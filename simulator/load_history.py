"""Synthetic load history of a node (feeder, region, …): what a sampler would have recorded, for tests,
benchmarks and demos.

The history is built from the same models the fleet simulator uses, for the node's sites:

- **household consumption** per site from :mod:`simulator.household_load` (Adelaide clock, weekday /
  weekend shapes with the evening peak around 18:00–20:00, per-site scale and habit shift, per-site
  AR(1) log-normal noise with a 15-minute correlation time);
- **rooftop PV** per site from :mod:`simulator.pv` (typical-year weather, orientation class and derate
  per site); all sites see the same weather, so cloudy days lower the node's PV together.

Each 5-minute interval (:data:`INTERVAL_MS`, the resolution of ``node_load_history``) is represented
by the sites' power at its **midpoint** (interval end − 150 s): the household noise moves slowly
compared with 5 minutes, so the midpoint value stands for the interval's mean. Node figures:

- ``load_mw`` = Σ household consumption (MW);
- ``net_load_mw`` = Σ (consumption − PV) (MW): the node's demand net of rooftop PV, **before** batteries
  (see :mod:`algorithms.fleet.peak_shaving` for why batteries are left out);
- ``sites_reporting`` = every site (the synthetic history has no outages).

Everything is vectorised: time-only quantities (clock hour, weekend, PV class profiles) are computed
once for every interval; the per-site noise is an AR(1) filter along time (``scipy.signal.lfilter``)
over chunks of :data:`SITE_CHUNK` sites, so memory stays bounded for any node size. Deterministic in
``seed``. 28 days take 0.05 s for 100 sites, 0.4 s for 1,000 and 3.1 s for 10,000 on this machine
(PV profiles already computed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from algorithms.fleet.fleet_types import FloatArray, IntArray, SiteParameters
from algorithms.fleet.peak_shaving import INTERVAL_MS, NodeLoadHistory
from simulator.household_load import (
    NOISE_CORRELATION_S,
    NOISE_LOG_SIGMA,
    SHIFT_MINUTES,
    SITE_TIME_ZONE,
    HouseholdLoads,
    daily_shape,
    make_household_loads,
)
from simulator.pv import (
    HOURS_PER_YEAR,
    ORIENTATION_CLASSES,
    SITE_STANDARD_UTC_OFFSET_MS,
    PvFleet,
    make_pv_fleet,
    orientation_class_profiles,
)

SITE_CHUNK = 512
"""Sites whose noise paths are held in memory at once (sites × intervals floats)."""
MS_PER_DAY = 86_400_000


class InvalidLoadHistoryRequestError(ValueError):
    """A synthetic history that cannot be built (misaligned start, no intervals, …)."""


def interval_ends(start_ms: int, interval_count: int, interval_ms: int = INTERVAL_MS) -> IntArray:
    """Interval ends ``start_ms + interval_ms``, …, ``start_ms + interval_count × interval_ms`` (epoch ms)."""
    return (start_ms + interval_ms * np.arange(1, interval_count + 1, dtype=np.int64)).astype(np.int64)


def shift_class_shapes(epoch_ms: IntArray) -> FloatArray:
    """Relative consumption of every habit-shift class at each time, shape ``(len(SHIFT_MINUTES), T)``.

    The same as :func:`simulator.household_load.household_load_kw`'s shape (Adelaide clock, weekend flag of
    the unshifted time), evaluated for many times at once.
    """
    local = pd.to_datetime(np.asarray(epoch_ms, dtype=np.int64), unit="ms", utc=True).tz_convert(SITE_TIME_ZONE)
    hour = (local.hour + local.minute / 60.0 + local.second / 3600.0).to_numpy(dtype=np.float64)
    weekend = np.asarray(local.day_of_week >= 5, dtype=np.bool_)
    shifted = hour[None, :] - SHIFT_MINUTES[:, None] / 60.0
    weekday_shape = daily_shape(shifted, False).reshape(shifted.shape)
    weekend_shape = daily_shape(shifted, True).reshape(shifted.shape)
    return np.asarray(np.where(weekend[None, :], weekend_shape, weekday_shape), dtype=np.float64)


def class_outputs_per_kw(epoch_ms: IntArray) -> FloatArray:
    """kW AC per kW DC of every PV orientation class at each time, shape ``(T, classes)``.

    The vectorised form of :func:`simulator.pv.class_output_per_kw` (same hour-of-year, same linear
    interpolation between the hourly records).
    """
    local = (np.asarray(epoch_ms, dtype=np.int64) + SITE_STANDARD_UTC_OFFSET_MS).astype("datetime64[ms]")
    year_start = local.astype("datetime64[Y]").astype("datetime64[ms]")
    hours = ((local - year_start).astype(np.int64) / 3_600_000.0) % HOURS_PER_YEAR
    position = hours - 0.5
    lower = np.floor(position).astype(np.int64)
    weight = (position - lower)[:, None]
    profiles = orientation_class_profiles()
    return np.asarray((1.0 - weight) * profiles[lower % HOURS_PER_YEAR]
                      + weight * profiles[(lower + 1) % HOURS_PER_YEAR], dtype=np.float64)


def node_pv_mw(pv_fleet: PvFleet, epoch_ms: IntArray) -> FloatArray:
    """Total PV output of the sites at each time (MW): Σ per class of capacity × derate, times the class
    profile — exact, with no per-site work per time."""
    per_class_kw = np.bincount(pv_fleet.orientation_class, weights=pv_fleet.pv_capacity_kw * pv_fleet.derate,
                               minlength=len(ORIENTATION_CLASSES))
    return np.asarray(class_outputs_per_kw(epoch_ms) @ per_class_kw / 1000.0, dtype=np.float64)


def node_household_load_mw(loads: HouseholdLoads, epoch_ms: IntArray, interval_s: float,
                           rng: np.random.Generator) -> FloatArray:
    """Total household consumption of the sites at each time (MW), with each site's AR(1) log noise
    advanced ``interval_s`` seconds between consecutive times (stationary start)."""
    shapes = shift_class_shapes(epoch_ms)
    correlation = float(np.exp(-interval_s / NOISE_CORRELATION_S))
    innovation = NOISE_LOG_SIGMA * np.sqrt(1.0 - correlation**2)
    total_kw = np.zeros(len(epoch_ms))
    site_count = len(loads.mean_load_kw)
    for first in range(0, site_count, SITE_CHUNK):
        chunk = slice(first, min(first + SITE_CHUNK, site_count))
        size = chunk.stop - chunk.start
        shocks = rng.normal(0.0, 1.0, (size, len(epoch_ms))) * innovation
        shocks[:, 0] = rng.normal(0.0, NOISE_LOG_SIGMA, size)
        log_noise = lfilter([1.0], [1.0, -correlation], shocks, axis=1)
        factor = np.exp(log_noise - NOISE_LOG_SIGMA**2 / 2.0)
        per_site = loads.mean_load_kw[chunk, None] * shapes[loads.shift_class[chunk]] * factor
        total_kw += per_site.sum(axis=0)
    return total_kw / 1000.0


def synthetic_node_load_history(node_id: str, parameters: SiteParameters, start_ms: int, days: float = 28.0,
                                seed: int = 0, interval_ms: int = INTERVAL_MS) -> NodeLoadHistory:
    """A synthetic load history of the node whose sites are ``parameters`` (see the module docstring).

    Args:
        node_id: the node the history belongs to (carried into the result).
        parameters: the node's sites (their PV nameplate is used; household loads are drawn per site).
        start_ms: start of the first interval (epoch ms UTC, a multiple of ``interval_ms``).
        days: length of the history (days, > 0; whole intervals).
        seed: seed of the household draws, the PV orientations and the noise.
        interval_ms: interval length (ms; the table's resolution is 5 minutes).

    Returns:
        :class:`NodeLoadHistory` with intervals ending ``start_ms + interval_ms`` … (MW, site counts).
    """
    if interval_ms <= 0 or start_ms % interval_ms:
        raise InvalidLoadHistoryRequestError(
            f"start_ms {start_ms} must be a multiple of the interval ({interval_ms} ms)")
    interval_count = round(days * MS_PER_DAY / interval_ms)
    if interval_count < 1:
        raise InvalidLoadHistoryRequestError(f"days must cover at least one interval, got {days}")
    load_seed, pv_seed, noise_seed = np.random.SeedSequence(seed).spawn(3)
    ends = interval_ends(start_ms, interval_count, interval_ms)
    midpoints = ends - interval_ms // 2
    loads = make_household_loads(parameters.site_count, int(np.random.default_rng(load_seed).integers(2**63 - 1)))
    pv_fleet = make_pv_fleet(parameters.pv_capacity_kw, int(np.random.default_rng(pv_seed).integers(2**63 - 1)))
    load_mw = node_household_load_mw(loads, midpoints, interval_ms / 1000.0, np.random.default_rng(noise_seed))
    pv_mw = node_pv_mw(pv_fleet, midpoints)
    return NodeLoadHistory(
        node_id=node_id, interval_end_ms=ends, load_mw=load_mw, net_load_mw=load_mw - pv_mw,
        sites_reporting=np.full(interval_count, parameters.site_count, dtype=np.int64))
