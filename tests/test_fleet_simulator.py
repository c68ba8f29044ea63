"""The fleet simulator: physics, telemetry imperfections, commands and acknowledgements, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from algorithms.fleet.fleet_types import AckBatch, SetpointBatch, TelemetryBatch
from simulator.battery import reserve_kwh
from simulator.homes import (
    NO_COMMAND,
    FleetSimulator,
    InvalidSetpointError,
    InvalidSimulatorConfigError,
    SimulatorConfig,
    SimulatorTimeError,
)
from simulator.population import make_site_parameters

QUIET = SimulatorConfig(offline_fraction=0.0, telemetry_late_probability=0.0, telemetry_duplicate_probability=0.0,
                        telemetry_reorder_probability=0.0, command_loss_probability=0.0, ack_late_probability=0.0)
"""A well-behaved fleet: every site online, every reading and command on time, nothing lost."""


def epoch_ms(local: str) -> int:
    return int(pd.Timestamp(local, tz="Australia/Adelaide").value // 1_000_000)


MIDDAY = epoch_ms("2021-01-15 12:00")
NIGHT = epoch_ms("2021-01-15 23:00")


def simulator(site_count: int, config: SimulatorConfig, start_ms: int = MIDDAY, seed: int = 1) -> FleetSimulator:
    return FleetSimulator(make_site_parameters(site_count, seed=seed), config, start_ms)


def run(sim: FleetSimulator, seconds: int, step_ms: int = 1000) -> tuple[TelemetryBatch, np.ndarray]:
    """Advance second by second, collecting telemetry each step; the readings in arrival order and the
    time each was collected; a final collection picks up everything still in flight."""
    batches: list[TelemetryBatch] = []
    collected_at: list[np.ndarray] = []
    start = sim.now_ms
    for now in range(start + step_ms, start + seconds * 1000 + 1, step_ms):
        batch = sim.collect_telemetry(now)
        batches.append(batch)
        collected_at.append(np.full(batch.reading_count, now))
    return concatenate(batches), np.concatenate(collected_at)


def measured_until(readings: TelemetryBatch, until_ms: int) -> TelemetryBatch:
    keep = readings.measured_at_ms <= until_ms
    return TelemetryBatch(**{field.name: getattr(readings, field.name)[keep]
                             for field in dataclasses.fields(TelemetryBatch)})


def drain(sim: FleetSimulator, until_ms: int) -> TelemetryBatch:
    """Readings measured by ``until_ms`` that are still in flight (collected long after)."""
    return measured_until(sim.collect_telemetry(sim.now_ms + 400_000), until_ms)


def concatenate(batches: list[TelemetryBatch]) -> TelemetryBatch:
    return TelemetryBatch(**{field.name: np.concatenate([getattr(batch, field.name) for batch in batches])
                             for field in dataclasses.fields(TelemetryBatch)})


def setpoints(sim: FleetSimulator, setpoint_kw: float, command_id: int, valid_for_s: int,
              rows: slice = slice(None)) -> SetpointBatch:
    site_ids = sim.parameters.site_ids[rows]
    count = len(site_ids)
    return SetpointBatch(site_ids=site_ids, command_id=np.full(count, command_id, dtype=np.int64),
                         setpoint_kw=np.full(count, setpoint_kw),
                         valid_until_ms=np.full(count, sim.now_ms + valid_for_s * 1000, dtype=np.int64))


def out_of_order_count(readings: TelemetryBatch) -> int:
    """Readings that arrive after a reading the same site measured later."""
    latest: dict[str, int] = {}
    count = 0
    for site, sequence in zip(readings.site_ids.tolist(), readings.sequence.tolist(), strict=True):
        if sequence < latest.get(site, -1):
            count += 1
        latest[site] = max(sequence, latest.get(site, -1))
    return count


# ---- physics -----------------------------------------------------------------------------------------------


def test_at_night_batteries_cover_household_load_down_to_the_reserve() -> None:
    sim = simulator(500, QUIET, start_ms=NIGHT)
    sim.advance(NIGHT + 10_000)
    parameters = sim.parameters
    assert np.all(sim.true_pv_power_kw == 0.0)
    load = sim.true_load_power_kw
    power = sim.true_battery_power_kw
    above_reserve = sim.true_state_of_charge_kwh > reserve_kwh(parameters) + 0.01
    coverable = above_reserve & (load <= parameters.max_discharge_kw)
    assert coverable.sum() > 400
    np.testing.assert_allclose(power[coverable], load[coverable])


def test_at_midday_batteries_store_the_pv_surplus() -> None:
    sim = simulator(500, QUIET)
    sim.advance(MIDDAY + 10_000)
    parameters = sim.parameters
    surplus = sim.true_pv_power_kw - sim.true_load_power_kw
    room = sim.true_state_of_charge_kwh < parameters.capacity_kwh - 0.01
    storing = room & (surplus > 0) & (surplus <= parameters.max_charge_kw)
    assert storing.sum() > 300
    np.testing.assert_allclose(sim.true_battery_power_kw[storing], -surplus[storing])
    full = ~room
    assert np.all(sim.true_battery_power_kw[full] >= 0.0)


def test_a_setpoint_is_followed_when_feasible_until_it_expires() -> None:
    sim = simulator(400, QUIET)
    parameters = sim.parameters
    sim.advance(MIDDAY + 3_000)
    sim.deliver_setpoints(setpoints(sim, 2.5, command_id=1, valid_for_s=60), MIDDAY + 3_000)
    sim.advance(MIDDAY + 30_000)
    feasible = sim.true_state_of_charge_kwh > reserve_kwh(parameters) + 0.1
    assert feasible.sum() > 300
    np.testing.assert_allclose(sim.true_battery_power_kw[feasible], 2.5)
    np.testing.assert_allclose(sim.active_setpoint_kw, 2.5)
    sim.advance(MIDDAY + 70_000)  # expired: back to self-consumption (storing PV at midday)
    assert np.all(np.isnan(sim.active_setpoint_kw))
    assert np.mean(sim.true_battery_power_kw < 0) > 0.5


def test_setpoint_expiring_mid_step_is_applied_for_its_share_of_the_step() -> None:
    config = dataclasses.replace(QUIET, physics_step_s=5.0)
    sim = simulator(50, config, start_ms=NIGHT)
    sim.deliver_setpoints(setpoints(sim, -3.0, command_id=1, valid_for_s=2), NIGHT)
    sim.advance(NIGHT + 5_000)
    load = sim.true_load_power_kw
    room = sim.true_state_of_charge_kwh < sim.parameters.capacity_kwh - 0.1
    above = sim.true_state_of_charge_kwh > reserve_kwh(sim.parameters) + 0.1
    ok = room & above & (load < 4.0)
    np.testing.assert_allclose(sim.true_battery_power_kw[ok], 0.4 * -3.0 + 0.6 * load[ok])


@hypothesis_settings(max_examples=15, deadline=None)
@given(commands=st.lists(st.tuples(st.floats(-15.0, 15.0), st.integers(1, 900), st.integers(1, 600)),
                         min_size=1, max_size=6))
def test_commands_never_push_a_battery_past_its_limits_or_reserve(commands: list[tuple[float, int, int]]) -> None:
    sim = simulator(60, QUIET, start_ms=NIGHT)
    parameters = sim.parameters
    floor = reserve_kwh(parameters)
    for command_id, (setpoint_kw, valid_for_s, run_s) in enumerate(commands, start=1):
        sim.deliver_setpoints(setpoints(sim, setpoint_kw, command_id, valid_for_s), sim.now_ms)
        for _ in range(3):
            sim.advance(sim.now_ms + run_s * 1000 // 3)
            soc, power = sim.true_state_of_charge_kwh, sim.true_battery_power_kw
            assert np.all(soc >= floor - 1e-9)
            assert np.all(soc <= parameters.capacity_kwh + 1e-9)
            assert np.all(power <= parameters.max_discharge_kw + 1e-9)
            assert np.all(-power <= parameters.max_charge_kw + 1e-9)


# ---- telemetry ----------------------------------------------------------------------------------------------


def test_quiet_telemetry_every_interval_in_order_and_matching_the_truth() -> None:
    sim = simulator(300, QUIET)
    readings, collected_at = run(sim, 61)
    measured_in_first_minute = readings.measured_at_ms <= MIDDAY + 60_000
    readings = TelemetryBatch(**{field.name: getattr(readings, field.name)[measured_in_first_minute]
                                 for field in dataclasses.fields(TelemetryBatch)})
    collected_at = collected_at[measured_in_first_minute]
    counts = pd.Series(readings.site_ids).value_counts()
    assert set(counts.to_numpy()) == {12}  # every 5 s for 60 s
    assert out_of_order_count(readings) == 0
    frame = pd.DataFrame({"site": readings.site_ids, "sequence": readings.sequence, "at": readings.measured_at_ms})
    for _, site in frame.groupby("site"):
        assert list(site["sequence"]) == list(range(12))
        assert set(np.diff(site["at"].to_numpy())) == {5000}
    delay = collected_at - readings.measured_at_ms
    assert delay.min() >= 0 and delay.max() <= 1300  # ≤ 300 ms transit + 1 s collection granularity
    assert np.all((readings.state_of_charge_pct >= 0) & (readings.state_of_charge_pct <= 100))
    # the last reading of each site (measured in the last 5 s) is close to the truth a second later
    last = frame.groupby("site")["at"].idxmax().to_numpy()
    rows = np.searchsorted(sim.parameters.site_ids, readings.site_ids[last])
    truth_pct = 100 * sim.true_state_of_charge_kwh[rows] / sim.parameters.capacity_kwh[rows]
    np.testing.assert_allclose(readings.state_of_charge_pct[last], truth_pct, atol=0.2)


def test_late_readings_arrive_at_the_configured_rate() -> None:
    config = dataclasses.replace(QUIET, telemetry_late_probability=0.1, telemetry_late_delay_mean_s=30.0)
    sim = simulator(2_000, config)
    readings, collected_at = run(sim, 30)
    final = drain(sim, MIDDAY + 30_000)
    assert final.reading_count > 0
    total = readings.reading_count + final.reading_count
    assert total == 2_000 * 6
    late = int(np.sum(collected_at - readings.measured_at_ms > 2_000)) + final.reading_count
    # P(extra delay > ~1.7 s) = exp(-1.7/30): expected rate 0.1 × 0.945
    assert late / total == pytest.approx(0.0945, abs=0.012)


def test_duplicates_arrive_at_the_configured_rate_with_the_same_content() -> None:
    config = dataclasses.replace(QUIET, telemetry_duplicate_probability=0.05)
    sim = simulator(2_000, config)
    readings, _ = run(sim, 30)
    readings = concatenate([readings, drain(sim, MIDDAY + 30_000)])
    frame = pd.DataFrame({"site": readings.site_ids, "sequence": readings.sequence,
                          "at": readings.measured_at_ms, "soc": readings.state_of_charge_pct})
    copies = frame.groupby(["site", "sequence"]).agg(n=("at", "size"), at=("at", "nunique"), soc=("soc", "nunique"))
    assert len(copies) == 2_000 * 6
    assert copies["n"].max() == 2
    assert (copies["at"] == 1).all() and (copies["soc"] == 1).all()
    assert (copies["n"] == 2).mean() == pytest.approx(0.05, abs=0.01)


def test_out_of_order_readings_arrive_at_the_configured_rate() -> None:
    config = dataclasses.replace(QUIET, telemetry_reorder_probability=0.05)
    sim = simulator(2_000, config)
    readings, _ = run(sim, 40)
    # a reordered reading overtaken by the next one (i.e. all but the last of each site's run)
    assert out_of_order_count(readings) / readings.reading_count == pytest.approx(0.05 * 7 / 8, abs=0.01)
    measured_order = np.diff(readings.measured_at_ms)
    assert np.any(measured_order < 0)  # a batch stream is not in measurement order


def test_offline_sites_are_silent_and_offline_time_matches_the_configured_fraction() -> None:
    config = dataclasses.replace(QUIET, offline_fraction=0.2, mean_offline_duration_s=20.0)
    sim = simulator(1_000, config)
    online_history = []
    received_from = []
    for second in range(1, 121):
        batch = sim.collect_telemetry(MIDDAY + second * 1000)
        online_history.append(sim.online.copy())
        received_from.append(np.searchsorted(sim.parameters.site_ids, batch.site_ids))
        # readings measured in this last second come only from sites online at its end
        measured_now = batch.measured_at_ms > MIDDAY + (second - 1) * 1000
        recent_sites = np.searchsorted(sim.parameters.site_ids, batch.site_ids[measured_now])
        assert np.all(sim.online[recent_sites])
    history = np.array(online_history)
    assert 1.0 - history.mean() == pytest.approx(0.2, abs=0.03)
    assert np.any(history.any(axis=0) & ~history.all(axis=0))  # sites go offline and come back
    never_online = ~history.any(axis=0)
    heard = np.zeros(1_000, dtype=bool)
    heard[np.concatenate(received_from)] = True
    assert not np.any(heard & never_online)


# ---- commands and acknowledgements --------------------------------------------------------------------------


def collect_all_acks(sim: FleetSimulator, until_ms: int) -> AckBatch:
    return sim.collect_acks(until_ms)


def test_lost_commands_are_never_applied_nor_acknowledged() -> None:
    config = dataclasses.replace(QUIET, command_loss_probability=0.3)
    sim = simulator(2_000, config, start_ms=NIGHT)
    sim.deliver_setpoints(setpoints(sim, 1.0, command_id=7, valid_for_s=600), NIGHT)
    acks = collect_all_acks(sim, NIGHT + 400_000)
    applied = sim.last_command_id == 7
    acked = np.isin(sim.parameters.site_ids, acks.site_ids)
    np.testing.assert_array_equal(acked, applied)
    assert acked.mean() == pytest.approx(0.7, abs=0.03)
    assert np.all(acks.accepted) and np.all(acks.command_id == 7)
    assert np.all(sim.last_command_id[~applied] == NO_COMMAND)


def test_acknowledgements_are_delayed_and_some_are_late() -> None:
    config = dataclasses.replace(QUIET, ack_late_probability=0.1, ack_late_delay_mean_s=60.0)
    sim = simulator(2_000, config, start_ms=NIGHT)
    sim.deliver_setpoints(setpoints(sim, 1.0, command_id=1, valid_for_s=600), NIGHT)
    assert sim.collect_acks(NIGHT).site_ids.size == 0  # nothing arrives instantly
    first = sim.collect_acks(NIGHT + 3_000)
    assert np.all(first.acknowledged_at_ms == NIGHT)
    assert first.site_ids.size / 2_000 == pytest.approx(0.9 * 0.9987, abs=0.02)  # log-normal median 0.5 s, σ 0.5
    rest = sim.collect_acks(NIGHT + 400_000)
    assert first.site_ids.size + rest.site_ids.size == 2_000
    assert sim.acks_in_flight == 0


def test_duplicate_commands_are_acknowledged_again_but_applied_once() -> None:
    sim = simulator(100, QUIET, start_ms=NIGHT)
    first = setpoints(sim, 2.0, command_id=5, valid_for_s=600)
    sim.deliver_setpoints(first, NIGHT)
    sim.deliver_setpoints(setpoints(sim, -1.0, command_id=6, valid_for_s=600), NIGHT + 1_000)
    sim.deliver_setpoints(first, NIGHT + 2_000)  # a resend of the older command
    np.testing.assert_allclose(sim.active_setpoint_kw, -1.0)
    assert np.all(sim.last_command_id == 6)
    acks = sim.collect_acks(NIGHT + 400_000)
    assert np.sum(acks.command_id == 5) == 200 and np.sum(acks.command_id == 6) == 100


def test_same_site_twice_in_one_delivery_keeps_the_newest_command() -> None:
    sim = simulator(3, QUIET, start_ms=NIGHT)
    site = sim.parameters.site_ids[1]
    batch = SetpointBatch(site_ids=np.array([site, site, site]), command_id=np.array([9, 11, 10]),
                          setpoint_kw=np.array([1.0, 3.0, 2.0]),
                          valid_until_ms=np.full(3, NIGHT + 60_000, dtype=np.int64))
    sim.deliver_setpoints(batch, NIGHT)
    assert sim.active_setpoint_kw[1] == 3.0 and sim.last_command_id[1] == 11
    assert np.isnan(sim.active_setpoint_kw[0])
    assert sorted(sim.collect_acks(NIGHT + 400_000).command_id.tolist()) == [9, 10, 11]


def test_offline_opted_out_unknown_and_expired() -> None:
    config = dataclasses.replace(QUIET, offline_fraction=0.3, owner_opt_out_fraction=0.2)
    sim = simulator(2_000, config, start_ms=NIGHT)
    online = sim.online.copy()
    batch = setpoints(sim, 1.0, command_id=1, valid_for_s=600)
    with_unknown = SetpointBatch(site_ids=np.append(batch.site_ids, "site-999999"),
                                 command_id=np.append(batch.command_id, 1),
                                 setpoint_kw=np.append(batch.setpoint_kw, 1.0),
                                 valid_until_ms=np.append(batch.valid_until_ms, NIGHT + 600_000))
    sim.deliver_setpoints(with_unknown, NIGHT)
    acks = sim.collect_acks(NIGHT + 400_000)
    acked = np.isin(sim.parameters.site_ids, acks.site_ids)
    np.testing.assert_array_equal(acked, online)  # offline sites receive nothing; the unknown id is ignored
    assert 1 - acks.accepted.mean() == pytest.approx(0.2, abs=0.04)
    refused = np.isin(sim.parameters.site_ids, acks.site_ids[~acks.accepted])
    assert np.all(sim.last_command_id[refused] == NO_COMMAND)
    expired = setpoints(sim, 1.0, command_id=2, valid_for_s=0)
    sim.deliver_setpoints(expired, sim.now_ms)
    assert not np.any(sim.collect_acks(sim.now_ms + 400_000).accepted)


# ---- determinism and errors ---------------------------------------------------------------------------------


def scripted_run(seed: int) -> tuple[TelemetryBatch, AckBatch, np.ndarray]:
    sim = simulator(500, SimulatorConfig(seed=seed, offline_fraction=0.1, mean_offline_duration_s=10.0))
    readings, _ = run(sim, 10)
    sim.deliver_setpoints(setpoints(sim, 1.5, command_id=1, valid_for_s=30), sim.now_ms)
    more, _ = run(sim, 10)
    return concatenate([readings, more]), sim.collect_acks(sim.now_ms + 1_000), sim.true_state_of_charge_kwh.copy()


def test_the_same_seed_gives_the_same_run_and_another_seed_another() -> None:
    readings, acks, soc = scripted_run(seed=4)
    again_readings, again_acks, again_soc = scripted_run(seed=4)
    for field in dataclasses.fields(TelemetryBatch):
        np.testing.assert_array_equal(getattr(readings, field.name), getattr(again_readings, field.name))
    np.testing.assert_array_equal(acks.site_ids, again_acks.site_ids)
    np.testing.assert_array_equal(soc, again_soc)
    other_readings, _, other_soc = scripted_run(seed=5)
    assert not np.array_equal(other_soc, soc)
    assert other_readings.reading_count != readings.reading_count or not np.array_equal(
        other_readings.site_ids, readings.site_ids)


def test_time_never_goes_backwards() -> None:
    sim = simulator(10, QUIET)
    sim.advance(MIDDAY + 5_000)
    with pytest.raises(SimulatorTimeError, match="before"):
        sim.collect_telemetry(MIDDAY + 4_000)


def test_bad_config_and_setpoints_are_named() -> None:
    with pytest.raises(InvalidSimulatorConfigError, match="command_loss_probability"):
        SimulatorConfig(command_loss_probability=1.5)
    with pytest.raises(InvalidSimulatorConfigError, match="physics_step_s"):
        SimulatorConfig(physics_step_s=10.0, reporting_interval_s=5.0)
    with pytest.raises(InvalidSimulatorConfigError, match="offline_fraction"):
        SimulatorConfig(offline_fraction=1.0)
    sim = simulator(2, QUIET)
    bad = SetpointBatch(site_ids=sim.parameters.site_ids, command_id=np.array([1, 2]),
                        setpoint_kw=np.array([1.0, np.nan]), valid_until_ms=np.full(2, MIDDAY + 1000))
    with pytest.raises(InvalidSetpointError, match="NaN"):
        sim.deliver_setpoints(bad, MIDDAY)


def test_truth_arrays_are_read_only() -> None:
    sim = simulator(5, QUIET)
    with pytest.raises(ValueError, match="read-only"):
        sim.true_state_of_charge_kwh[0] = 1.0
