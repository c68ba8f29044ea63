"""Rooftop PV, household load and the site population of the fleet simulator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulator.household_load import (
    WEEKDAY_SHAPE,
    daily_shape,
    household_load_kw,
    initial_log_noise,
    make_household_loads,
    next_log_noise,
)
from simulator.population import InvalidPopulationError, make_site_parameters, site_ids_for
from simulator.pv import (
    ORIENTATION_CLASSES,
    class_output_per_kw,
    make_pv_fleet,
    orientation_class_profiles,
    pv_power_kw,
)

ADELAIDE = "Australia/Adelaide"


def epoch_ms(local: str) -> int:
    return int(pd.Timestamp(local, tz=ADELAIDE).value // 1_000_000)


def class_index(name: str) -> int:
    return [orientation.name for orientation in ORIENTATION_CLASSES].index(name)


def january_days_kwh_per_kw() -> np.ndarray:
    """Daily energy (kWh per kW DC) of every class on each January day, from the hourly profiles."""
    return orientation_class_profiles()[: 31 * 24].reshape(31, 24, -1).sum(axis=1)


def test_pv_is_zero_at_night() -> None:
    for local in ("2021-01-10 00:00", "2021-01-10 03:30", "2021-01-10 22:30", "2021-06-20 19:00"):
        assert np.all(class_output_per_kw(epoch_ms(local)) == 0.0), local


def test_january_output_peaks_around_solar_noon() -> None:
    # average the month to wash out clouds; 5-minute samples of local standard (ACST) hours
    minutes = np.arange(0, 24 * 60, 5)
    january = np.zeros(len(minutes))
    for day in range(1, 32):
        midnight_acst = int(pd.Timestamp(f"2021-01-{day:02d} 00:00", tz="Etc/GMT-9").value // 1_000_000) - 1_800_000
        january += [class_output_per_kw(midnight_acst + minute * 60_000)[class_index("north-20")] for minute in minutes]
    peak_hour_acst = minutes[int(np.argmax(january))] / 60
    assert 11.5 <= peak_hour_acst <= 13.5  # Adelaide's solar noon is about 12:25 ACST in January


def test_east_roofs_peak_before_west_roofs() -> None:
    profiles = orientation_class_profiles()[: 31 * 24].reshape(31, 24, -1).mean(axis=0)
    hours = np.arange(24) + 0.5
    east, west = profiles[:, class_index("east-15")], profiles[:, class_index("west-15")]
    assert np.average(hours, weights=east) < np.average(hours, weights=west) - 0.5
    assert east[:12].sum() > 1.2 * west[:12].sum()


def test_summer_daily_yield_is_sensible() -> None:
    daily = january_days_kwh_per_kw()[:, class_index("north-20")]
    clear_days = np.sort(daily)[-8:]
    assert 5.0 <= clear_days.mean() <= 8.0  # a clear summer day in SA gives roughly 6 kWh per kW
    assert 3.5 <= daily.mean() <= 6.5
    june = orientation_class_profiles()[151 * 24: 181 * 24, class_index("north-20")].sum() / 30
    assert june < 0.75 * daily.mean()  # winter yields much less


def test_site_output_is_capacity_times_derate_times_class_profile() -> None:
    capacity = np.array([0.0, 6.6, 10.0, 5.0])
    fleet = make_pv_fleet(capacity, seed=3)
    moment = epoch_ms("2021-01-15 13:00")
    output = pv_power_kw(fleet, moment)
    np.testing.assert_allclose(output, capacity * fleet.derate * class_output_per_kw(moment)[fleet.orientation_class])
    assert output[0] == 0.0
    assert np.all(output[1:] > 0.0)
    assert np.all(output <= capacity / 1.2 + 1e-9)  # inverter clips at DC/AC 1.2
    again = make_pv_fleet(capacity, seed=3)
    np.testing.assert_array_equal(again.orientation_class, fleet.orientation_class)
    np.testing.assert_array_equal(again.derate, fleet.derate)


def test_orientation_classes_follow_their_shares() -> None:
    fleet = make_pv_fleet(np.full(20_000, 5.0), seed=1)
    shares = np.bincount(fleet.orientation_class, minlength=len(ORIENTATION_CLASSES)) / 20_000
    expected = np.array([orientation.share for orientation in ORIENTATION_CLASSES])
    np.testing.assert_allclose(shares, expected / expected.sum(), atol=0.015)
    assert np.all((fleet.derate >= 0.85) & (fleet.derate <= 1.0))


def test_bad_pv_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="pv_capacity_kw"):
        make_pv_fleet(np.array([1.0, -2.0]), seed=0)


def test_daily_shape_averages_one_and_has_evening_and_morning_peaks() -> None:
    hours = np.arange(0, 24, 0.05)
    for weekend in (False, True):
        assert daily_shape(hours, weekend).mean() == pytest.approx(1.0, abs=0.01)
    weekday = daily_shape(np.array([3.0, 7.0, 12.0, 19.0]), weekend=False)
    night, morning, midday, evening = weekday
    assert evening > morning > midday > night
    assert evening == pytest.approx(WEEKDAY_SHAPE.max())
    assert daily_shape(np.array([12.0]), weekend=True)[0] > midday  # people are home at weekends


def test_household_load_scale_and_noise() -> None:
    loads = make_household_loads(5_000, seed=2)
    daily_kwh = loads.mean_load_kw * 24
    assert 12.0 <= np.median(daily_kwh) <= 16.0
    assert np.all((daily_kwh >= 4.0) & (daily_kwh <= 45.0))
    rng = np.random.default_rng(0)
    noise = initial_log_noise(5_000, rng)
    evening = household_load_kw(loads, epoch_ms("2021-01-13 19:30"), noise)
    night = household_load_kw(loads, epoch_ms("2021-01-13 03:30"), noise)
    assert np.all(evening > 0) and np.all(night > 0)
    assert evening.mean() > 3 * night.mean()
    # noise is smooth: one second later it has barely moved; an hour later it has decorrelated
    assert np.corrcoef(noise, next_log_noise(noise, 1.0, rng))[0, 1] > 0.99
    assert np.corrcoef(noise, next_log_noise(noise, 3600.0, rng))[0, 1] < 0.1
    np.testing.assert_array_equal(make_household_loads(5_000, seed=2).mean_load_kw, loads.mean_load_kw)


def test_population_is_realistic_and_deterministic() -> None:
    parameters = make_site_parameters(20_000, seed=7)
    assert parameters.site_ids[0] == "site-000001" and parameters.site_ids[-1] == "site-020000"
    assert np.all(parameters.site_ids[1:] > parameters.site_ids[:-1])
    assert set(np.unique(parameters.capacity_kwh)) == {6.5, 10.0, 13.5, 27.0}
    assert np.mean(parameters.capacity_kwh == 13.5) == pytest.approx(0.75, abs=0.02)
    assert np.mean(parameters.capacity_kwh == 27.0) == pytest.approx(0.10, abs=0.01)
    assert np.all((parameters.charge_efficiency >= 0.94) & (parameters.charge_efficiency <= 0.96))
    assert np.all((parameters.backup_reserve_fraction >= 0) & (parameters.backup_reserve_fraction <= 0.4))
    assert np.mean(parameters.backup_reserve_fraction == 0.2) == pytest.approx(0.5, abs=0.02)
    assert np.mean(parameters.pv_capacity_kw == 0) == pytest.approx(0.08, abs=0.01)
    assert parameters.pv_capacity_kw.max() == 10.0
    again = make_site_parameters(20_000, seed=7)
    np.testing.assert_array_equal(again.backup_reserve_fraction, parameters.backup_reserve_fraction)
    assert not np.array_equal(make_site_parameters(20_000, seed=8).pv_capacity_kw, parameters.pv_capacity_kw)
    assert site_ids_for(1_000_000)[-1] == "site-1000000"
    with pytest.raises(InvalidPopulationError, match="site_count"):
        make_site_parameters(-1, seed=0)
