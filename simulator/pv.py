"""Rooftop PV output of every site from real typical-year weather, vectorised over sites.

**Weather.** pvlib's wheel ships no Australian weather file, so the model uses the TMY3 typical
meteorological year it ships for Greensboro, NC (``pvlib/data/723170TYA.CSV``, 36.1° N, hourly GHI, DNI,
DHI, air temperature, wind speed), read with :func:`pvlib.iotools.read_tmy3`. Greensboro's latitude is
close in magnitude to Adelaide's (34.9° S), so its sun paths are Adelaide's mirrored north↔south and
shifted by six months:

- a site's *local standard time* (ACST, UTC+9:30, no daylight saving: the sun does not observe it) at
  hour-of-year ``h`` reads the weather row of Greensboro local standard time ``h + 4368`` (182 days of 8760
  hours, wrapping round the year), so January in Adelaide is July in Greensboro: midsummer;
- an Adelaide roof facing compass azimuth ``a`` (0° = north, 90° = east) is modelled as a Greensboro
  roof facing ``180° − a``, so the equator-facing (north) Adelaide roof is the equator-facing (south)
  Greensboro roof, and east stays east.

Both places have their solar noon within about 20 minutes of local standard noon; the residual
difference (a few minutes) and the 1.2° of latitude are ignored.

**Plane of array and power (PVWatts-style), once per orientation class over the year.**
Solar position (:func:`pvlib.solarposition.get_solarposition`) at the middle of each hourly record;
transposition with the Hay–Davies sky model (:func:`pvlib.irradiance.get_total_irradiance`, ground
albedo 0.2); beam reflection losses with the physical IAM model; cell temperature with the SAPM model for
close-roof-mounted glass/glass modules; DC with :func:`pvlib.pvsystem.pvwatts_dc` (γ = −0.37 %/°C)
less 8.5 % system losses (PVWatts' default loss table without its shading and availability terms:
soiling 2 %, mismatch 2 %, wiring 2 %, connections 0.5 %, light-induced degradation 1.5 %, nameplate
1 %; shading is in the per-site derate, outages in the simulator); AC with
:func:`pvlib.inverter.pvwatts` (nominal efficiency 96 %) for an inverter sized at DC/AC ratio 1.2,
which clips at 1/1.2 kW AC per kW DC. The result is one profile per orientation class in kW AC per kW
DC, hourly over the year (:func:`orientation_class_profiles`, cached).

**Per site.** Each site is given an orientation class (by the class shares) and a fixed derate
(uniform 0.85–1.0: shading, soiling, ageing) from a seed; its output at time ``t`` is
``pv_capacity_kw × derate × class_profile(t)``, the class profile linearly interpolated between the
hourly records (taken at the middle of their hour). No pvlib work per site: a call costs one
interpolation per class and one gather over sites. All sites see the same weather (one city's clouds).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from algorithms.fleet.fleet_types import FloatArray, IntArray
from settings.extras import LOCAL, import_extra

WEATHER_FILE_NAME = "723170TYA.CSV"
"""pvlib's shipped TMY3 file (Greensboro, NC) used as the typical year, in pvlib's ``data`` folder."""

HOURS_PER_YEAR = 8760
SIX_MONTHS_H = 182 * 24
"""The six-month shift, in whole days so local noon stays noon (182 days: 1 January reads 2 July)."""
SITE_STANDARD_UTC_OFFSET_MS = int(9.5 * 3_600_000)
"""Adelaide standard time (ACST) offset from UTC in ms; PV follows the sun, so no daylight saving."""

ALBEDO = 0.2
GAMMA_PDC_PER_C = -0.0037
SYSTEM_LOSS_FRACTION = 0.085
INVERTER_NOMINAL_EFFICIENCY = 0.96
DC_AC_RATIO = 1.2
DERATE_RANGE = (0.85, 1.0)


@dataclass(frozen=True)
class OrientationClass:
    """A roof orientation shared by many sites: ``azimuth_deg`` compass (0 = north, 90 = east) in the
    southern hemisphere, ``tilt_deg`` from horizontal, ``share`` of PV sites with this roof."""

    name: str
    azimuth_deg: float
    tilt_deg: float
    share: float


ORIENTATION_CLASSES: tuple[OrientationClass, ...] = (
    OrientationClass("north-20", 0.0, 20.0, 0.35),
    OrientationClass("north-30", 0.0, 30.0, 0.10),
    OrientationClass("north-east-20", 45.0, 20.0, 0.12),
    OrientationClass("north-west-20", 315.0, 20.0, 0.12),
    OrientationClass("east-15", 90.0, 15.0, 0.10),
    OrientationClass("west-15", 270.0, 15.0, 0.10),
    OrientationClass("north-10", 0.0, 10.0, 0.06),
    OrientationClass("south-15", 180.0, 15.0, 0.05),
)


def _pvlib() -> ModuleType:
    """pvlib, imported when the PV model is first used: it comes with the ``local`` extra (the simulated
    homes run on a developer's machine, never in a deployment)."""
    return import_extra("pvlib", LOCAL, "the simulated homes' rooftop PV model")


def weather_file() -> Path:
    """Path of pvlib's shipped TMY3 file (:data:`WEATHER_FILE_NAME`)."""
    return Path(_pvlib().__file__ or "").parent / "data" / WEATHER_FILE_NAME


@functools.lru_cache(maxsize=1)
def typical_year_weather() -> pd.DataFrame:
    """The TMY3 records (8760 hourly rows, Greensboro local standard time, hour-ending stamps) with
    ``ghi``/``dni``/``dhi`` (W/m²), ``temp_air`` (°C), ``wind_speed`` (m/s), plus the file's metadata
    in ``DataFrame.attrs`` (``latitude``, ``longitude``, ``altitude``, ``TZ``)."""
    path = weather_file()
    data, metadata = _pvlib().iotools.read_tmy3(str(path), map_variables=True)
    frame = data[["ghi", "dni", "dhi", "temp_air", "wind_speed"]].reset_index(drop=True)
    if len(frame) != HOURS_PER_YEAR:
        raise ValueError(f"{path} has {len(frame)} hourly records, expected {HOURS_PER_YEAR}")
    frame.attrs.update(metadata)
    result: pd.DataFrame = frame
    return result


def _record_midpoints(utc_offset_h: float) -> pd.DatetimeIndex:
    """Middle of each hourly record of a non-leap typical year, in the file's standard time zone."""
    zone = f"Etc/GMT{-int(utc_offset_h):+d}"  # Etc zones have inverted signs
    start = pd.Timestamp("1990-01-01 00:30").tz_localize(zone)
    return pd.date_range(start, periods=HOURS_PER_YEAR, freq="h")


def _class_profile(weather: pd.DataFrame, times: pd.DatetimeIndex, solar: pd.DataFrame,
                   orientation: OrientationClass) -> FloatArray:
    """kW AC per kW DC over the weather's hours for one (Adelaide) orientation, mirrored to Greensboro."""
    pvlib = _pvlib()
    surface_azimuth = (180.0 - orientation.azimuth_deg) % 360.0
    poa = pvlib.irradiance.get_total_irradiance(
        surface_tilt=orientation.tilt_deg, surface_azimuth=surface_azimuth,
        solar_zenith=solar["apparent_zenith"], solar_azimuth=solar["azimuth"],
        dni=weather["dni"].to_numpy(), ghi=weather["ghi"].to_numpy(), dhi=weather["dhi"].to_numpy(),
        dni_extra=pvlib.irradiance.get_extra_radiation(times).to_numpy(),
        airmass=pvlib.atmosphere.get_relative_airmass(solar["apparent_zenith"]).to_numpy(),
        albedo=ALBEDO, model="haydavies",
    )
    aoi = pvlib.irradiance.aoi(orientation.tilt_deg, surface_azimuth, solar["apparent_zenith"], solar["azimuth"])
    iam = np.nan_to_num(np.asarray(pvlib.iam.physical(aoi), dtype=np.float64))
    effective = np.nan_to_num(np.asarray(poa["poa_direct"], dtype=np.float64)) * iam + np.nan_to_num(
        np.asarray(poa["poa_diffuse"], dtype=np.float64))
    effective = np.clip(effective, 0.0, None)
    parameters = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["close_mount_glass_glass"]
    temp_cell = pvlib.temperature.sapm_cell(effective, weather["temp_air"].to_numpy(),
                                            weather["wind_speed"].to_numpy(), **parameters)
    dc = np.asarray(pvlib.pvsystem.pvwatts_dc(effective, temp_cell, pdc0=1.0, gamma_pdc=GAMMA_PDC_PER_C),
                    dtype=np.float64) * (1.0 - SYSTEM_LOSS_FRACTION)
    ac = pvlib.inverter.pvwatts(dc, pdc0=1.0 / DC_AC_RATIO / INVERTER_NOMINAL_EFFICIENCY,
                                eta_inv_nom=INVERTER_NOMINAL_EFFICIENCY)
    return np.clip(np.nan_to_num(np.asarray(ac, dtype=np.float64)), 0.0, None)


@functools.lru_cache(maxsize=1)
def orientation_class_profiles() -> FloatArray:
    """AC output per kW DC (kW/kW) of every orientation class, shape ``(8760, classes)``.

    Row ``h`` is the average over hour ``[h, h+1)`` of the *site's* standard-time year (ACST), i.e. the
    Greensboro record ``(h + 4368) mod 8760`` (see the module docstring). Computed once per process.
    """
    weather = typical_year_weather()
    with warnings.catch_warnings():  # pvlib's own use of a pandas name pandas is retiring
        warnings.filterwarnings("ignore", message=".*dayofyear is deprecated")
        return _all_class_profiles(weather)


def _all_class_profiles(weather: pd.DataFrame) -> FloatArray:
    latitude, longitude = float(weather.attrs["latitude"]), float(weather.attrs["longitude"])
    times = _record_midpoints(float(weather.attrs["TZ"]))
    solar = _pvlib().solarposition.get_solarposition(times, latitude, longitude,
                                                  altitude=float(weather.attrs["altitude"]))
    greensboro = np.stack([_class_profile(weather, times, solar, orientation)
                           for orientation in ORIENTATION_CLASSES], axis=1)
    return np.roll(greensboro, -SIX_MONTHS_H, axis=0)


def site_hour_of_year(epoch_ms: int) -> float:
    """Hours since 1 January 00:00 of the site's standard-time (ACST) year (fractional, ≥ 0).

    Leap years are folded onto the 8760-hour typical year by wrapping (31 December of a leap year reads
    1 January's weather).
    """
    local = pd.Timestamp(epoch_ms + SITE_STANDARD_UTC_OFFSET_MS, unit="ms")
    year_start = pd.Timestamp(year=local.year, month=1, day=1)
    return ((local - year_start) / pd.Timedelta(hours=1)) % HOURS_PER_YEAR


def class_output_per_kw(epoch_ms: int) -> FloatArray:
    """kW AC per kW DC of every orientation class at ``epoch_ms`` (UTC), linear between hourly records."""
    profiles = orientation_class_profiles()
    position = site_hour_of_year(epoch_ms) - 0.5
    lower = int(np.floor(position))
    weight = position - lower
    return np.asarray((1.0 - weight) * profiles[lower % HOURS_PER_YEAR]
                      + weight * profiles[(lower + 1) % HOURS_PER_YEAR], dtype=np.float64)


@dataclass(frozen=True)
class PvFleet:
    """Per-site PV description: nameplate ``pv_capacity_kw`` (kW DC), ``orientation_class`` (index into
    :data:`ORIENTATION_CLASSES`) and ``derate`` (fraction: shading, soiling, ageing)."""

    pv_capacity_kw: FloatArray
    orientation_class: IntArray
    derate: FloatArray


def make_pv_fleet(pv_capacity_kw: FloatArray, seed: int) -> PvFleet:
    """Give each site an orientation class (by the class shares) and a derate, deterministic in ``seed``.

    Args:
        pv_capacity_kw: nameplate per site (kW DC, ≥ 0; 0 = no PV).
    """
    capacity = np.asarray(pv_capacity_kw, dtype=np.float64)
    if capacity.ndim != 1 or bool(np.any(~np.isfinite(capacity))) or bool(np.any(capacity < 0)):
        raise ValueError("pv_capacity_kw must be a 1-D array of finite values >= 0 (kW DC)")
    rng = np.random.default_rng(seed)
    shares = np.array([orientation.share for orientation in ORIENTATION_CLASSES])
    orientation_class = rng.choice(len(ORIENTATION_CLASSES), size=len(capacity), p=shares / shares.sum())
    derate = rng.uniform(DERATE_RANGE[0], DERATE_RANGE[1], len(capacity))
    return PvFleet(pv_capacity_kw=capacity, orientation_class=orientation_class.astype(np.int64), derate=derate)


def pv_power_kw(fleet: PvFleet, epoch_ms: int) -> FloatArray:
    """AC output of every site at ``epoch_ms`` (kW, ≥ 0): capacity × derate × the class profile."""
    return fleet.pv_capacity_kw * fleet.derate * class_output_per_kw(epoch_ms)[fleet.orientation_class]
