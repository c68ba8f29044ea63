"""Telemetry ingest: nonsense is quarantined with one reason, nothing valid is dropped, newest reading wins."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.fleet.fleet_types import NEVER, FleetState, SiteParameters, TelemetryBatch, site_positions
from algorithms.fleet.telemetry import (
    FleetInputError,
    RejectionReason,
    ingest_telemetry,
    lookup_site_rows,
)

NOW = 1_700_000_000_000
SITE_IDS = ["site-a", "site-b", "site-c", "site-d"]


def parameters() -> SiteParameters:
    count = len(SITE_IDS)
    return SiteParameters(
        site_ids=np.array(SITE_IDS),
        capacity_kwh=np.full(count, 13.5),
        max_charge_kw=np.full(count, 5.0),
        max_discharge_kw=np.full(count, 7.0),
        charge_efficiency=np.full(count, 0.95),
        discharge_efficiency=np.full(count, 0.95),
        backup_reserve_fraction=np.full(count, 0.2),
        pv_capacity_kw=np.full(count, 6.0),
    )


def batch(rows: list[tuple[str, int, int, float, float, float, float]]) -> TelemetryBatch:
    """Rows of (site, sequence, measured_at_ms, battery kW, SoC %, PV kW, load kW)."""
    columns: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [()] * 7
    return TelemetryBatch(
        site_ids=np.array(columns[0], dtype="<U16"),
        sequence=np.array(columns[1], dtype=np.int64),
        measured_at_ms=np.array(columns[2], dtype=np.int64),
        battery_power_kw=np.array(columns[3], dtype=np.float64),
        state_of_charge_pct=np.array(columns[4], dtype=np.float64),
        pv_power_kw=np.array(columns[5], dtype=np.float64),
        load_power_kw=np.array(columns[6], dtype=np.float64),
    )


def reading(site: str = "site-a", sequence: int = 1, at_ms: int = NOW - 1_000, power_kw: float = 1.0,
            soc_pct: float = 50.0, pv_kw: float = 2.0, load_kw: float = 1.0) -> tuple[str, int, int, float, float,
                                                                                     float, float]:
    return (site, sequence, at_ms, power_kw, soc_pct, pv_kw, load_kw)


def assert_partition(result_masks: list[np.ndarray], row_count: int) -> None:
    stacked = np.vstack(result_masks).astype(int)
    assert np.array_equal(stacked.sum(axis=0), np.ones(row_count, dtype=int))


@pytest.mark.parametrize(("row", "reason"), [
    (reading(site="site-zzz"), RejectionReason.UNKNOWN_SITE),
    (reading(power_kw=float("nan")), RejectionReason.NON_FINITE),
    (reading(load_kw=float("inf")), RejectionReason.NON_FINITE),
    (reading(soc_pct=100.5), RejectionReason.SOC_OUT_OF_RANGE),
    (reading(soc_pct=-0.1), RejectionReason.SOC_OUT_OF_RANGE),
    (reading(at_ms=NOW + 5_001), RejectionReason.FUTURE_TIMESTAMP),
    (reading(power_kw=7.0 * 1.5 + 0.01), RejectionReason.BATTERY_POWER_OUT_OF_RANGE),
    (reading(power_kw=-(5.0 * 1.5 + 0.01)), RejectionReason.BATTERY_POWER_OUT_OF_RANGE),
    (reading(pv_kw=-0.1), RejectionReason.NEGATIVE_PV_OR_LOAD),
    (reading(load_kw=-0.1), RejectionReason.NEGATIVE_PV_OR_LOAD),
])
def test_each_rule_rejects_with_its_reason_and_valid_rows_stay(row: tuple[str, int, int, float, float, float, float],
                                                                reason: RejectionReason) -> None:
    incoming = batch([row, reading(site="site-b")])
    result = ingest_telemetry(parameters(), FleetState.empty(4), incoming, NOW)
    assert result.quarantine.reasons.tolist() == [reason.value]
    assert result.quarantine.batch_rows.tolist() == [0]
    assert result.quarantine.readings.site_ids.tolist() == [row[0]]
    assert result.quarantine.counts[reason] == 1
    assert sum(result.quarantine.counts.values()) == 1
    assert result.accepted.tolist() == [False, True]
    assert result.applied.tolist() == [False, True]
    assert result.state.measured_at_ms[1] == NOW - 1_000
    assert result.state.measured_at_ms[0] == NEVER


def test_edges_of_the_rules_are_valid() -> None:
    incoming = batch([
        reading(site="site-a", soc_pct=0.0, power_kw=7.0 * 1.5, at_ms=NOW + 5_000),
        reading(site="site-b", soc_pct=100.0, power_kw=-5.0 * 1.5, pv_kw=0.0, load_kw=0.0),
    ])
    result = ingest_telemetry(parameters(), FleetState.empty(4), incoming, NOW)
    assert result.accepted.all() and result.quarantine.reading_count == 0


def test_the_first_failing_rule_is_the_one_reason() -> None:
    incoming = batch([
        reading(site="nobody", power_kw=float("nan"), soc_pct=500.0),
        reading(power_kw=float("nan"), soc_pct=500.0, at_ms=NOW + 60_000),
        reading(soc_pct=500.0, at_ms=NOW + 60_000, power_kw=100.0),
        reading(at_ms=NOW + 60_000, power_kw=100.0, pv_kw=-1.0),
        reading(power_kw=100.0, pv_kw=-1.0),
    ])
    result = ingest_telemetry(parameters(), FleetState.empty(4), incoming, NOW)
    assert result.quarantine.reasons.tolist() == [
        "unknown_site", "non_finite", "soc_out_of_range", "future_timestamp", "battery_power_out_of_range"]
    assert result.counts()["rejected"] == 5 and result.counts()["accepted"] == 0


def test_clock_skew_setting_moves_the_future_boundary() -> None:
    incoming = batch([reading(at_ms=NOW + 20_000)])
    assert ingest_telemetry(parameters(), FleetState.empty(4), incoming, NOW).quarantine.reading_count == 1
    assert ingest_telemetry(parameters(), FleetState.empty(4), incoming, NOW, max_clock_skew_ms=30_000).accepted[0]


def test_newest_reading_of_a_site_wins_and_older_ones_are_superseded() -> None:
    incoming = batch([
        reading(site="site-a", sequence=5, at_ms=NOW - 5_000, soc_pct=40.0),
        reading(site="site-a", sequence=7, at_ms=NOW - 1_000, soc_pct=42.0),
        reading(site="site-a", sequence=6, at_ms=NOW - 3_000, soc_pct=41.0),
        reading(site="site-c", sequence=1, at_ms=NOW - 2_000, soc_pct=80.0),
    ])
    state = FleetState.empty(4)
    result = ingest_telemetry(parameters(), state, incoming, NOW)
    assert result.applied.tolist() == [False, True, False, True]
    assert result.superseded.tolist() == [True, False, True, False]
    assert result.state.state_of_charge_pct[0] == 42.0 and result.state.sequence[0] == 7
    assert result.state.state_of_charge_pct[2] == 80.0
    assert np.isnan(result.state.state_of_charge_pct[1])
    assert state.measured_at_ms[0] == NEVER, "the input state must not change"
    assert result.history.tolist() == [True, True, True, True]


def test_equal_timestamps_are_ordered_by_sequence() -> None:
    incoming = batch([reading(sequence=9, at_ms=NOW - 1_000, soc_pct=60.0),
                      reading(sequence=8, at_ms=NOW - 1_000, soc_pct=59.0)])
    result = ingest_telemetry(parameters(), FleetState.empty(4), incoming, NOW)
    assert result.applied.tolist() == [True, False]
    assert result.state.state_of_charge_pct[0] == 60.0


def test_duplicates_of_the_held_reading_and_within_a_batch_are_counted_not_applied() -> None:
    first = ingest_telemetry(parameters(), FleetState.empty(4),
                             batch([reading(sequence=3, at_ms=NOW - 2_000, soc_pct=50.0)]), NOW)
    again = batch([
        reading(sequence=3, at_ms=NOW - 2_000, soc_pct=50.0),  # what the state holds
        reading(site="site-b", sequence=1, at_ms=NOW - 1_000),
        reading(site="site-b", sequence=1, at_ms=NOW - 1_000),  # same reading twice in the batch
    ])
    result = ingest_telemetry(parameters(), first.state, again, NOW)
    assert result.duplicate.tolist() == [True, False, True]
    assert result.applied.tolist() == [False, True, False]
    assert result.accepted.all()
    assert result.history.tolist() == [False, True, False]
    assert result.counts()["duplicate"] == 2
    assert result.state.sequence[0] == 3


def test_late_readings_go_to_history_only() -> None:
    held = ingest_telemetry(parameters(), FleetState.empty(4),
                            batch([reading(sequence=10, at_ms=NOW - 1_000, soc_pct=70.0)]), NOW).state
    late = batch([reading(sequence=9, at_ms=NOW - 6_000, soc_pct=69.0),
                  reading(sequence=4, at_ms=NOW - 30_000, soc_pct=60.0)])
    result = ingest_telemetry(parameters(), held, late, NOW)
    assert result.out_of_order.tolist() == [True, True]
    assert not result.applied.any()
    assert result.history.all()
    assert result.state.state_of_charge_pct[0] == 70.0


def test_masks_partition_every_batch_and_counts_match() -> None:
    rng = np.random.default_rng(4)
    rows = []
    for index in range(300):
        site = SITE_IDS[index % 4] if index % 17 else "ghost"
        soc = float(rng.uniform(-10, 110))
        at_ms = NOW - int(rng.integers(-10_000, 60_000))
        rows.append(reading(site=site, sequence=int(rng.integers(0, 40)), at_ms=at_ms,
                            power_kw=float(rng.uniform(-12, 12)), soc_pct=soc))
    incoming = batch(rows)
    held = ingest_telemetry(parameters(), FleetState.empty(4), batch([reading(sequence=20, at_ms=NOW - 20_000)]),
                            NOW).state
    result = ingest_telemetry(parameters(), held, incoming, NOW)
    rejected = np.zeros(len(rows), dtype=bool)
    rejected[result.quarantine.batch_rows] = True
    assert_partition([result.applied, result.superseded, result.out_of_order, result.duplicate, rejected], len(rows))
    assert np.array_equal(result.accepted, ~rejected)
    assert result.accepted.sum() + result.quarantine.reading_count == len(rows)
    assert sum(result.quarantine.counts.values()) == result.quarantine.reading_count
    assert result.applied.sum() <= 4


@st.composite
def shuffled_batches(draw: st.DrawFn) -> tuple[TelemetryBatch, list[int]]:
    count = draw(st.integers(1, 25))
    rows = []
    for _ in range(count):
        site = draw(st.sampled_from([*SITE_IDS, "stranger"]))
        sequence = draw(st.integers(0, 6))
        at_ms = NOW - 1_000 * sequence - draw(st.integers(0, 1)) * 500
        soc = draw(st.sampled_from([10.0, 55.0, 120.0]))
        rows.append(reading(site=site, sequence=sequence, at_ms=at_ms, soc_pct=soc, power_kw=float(sequence)))
    if draw(st.booleans()):
        rows.append(rows[0])  # an exact resend
    order = draw(st.permutations(list(range(len(rows)))))
    return batch(rows), order


@settings(max_examples=80, deadline=None)
@given(shuffled_batches())
def test_row_order_does_not_change_the_latest_state(case: tuple[TelemetryBatch, list[int]]) -> None:
    incoming, order = case
    held = ingest_telemetry(parameters(), FleetState.empty(4),
                            batch([reading(site="site-b", sequence=3, at_ms=NOW - 3_000)]), NOW).state
    permutation = np.array(order)
    shuffled = TelemetryBatch(*(getattr(incoming, name)[permutation] for name in (
        "site_ids", "sequence", "measured_at_ms", "battery_power_kw", "state_of_charge_pct", "pv_power_kw",
        "load_power_kw")))
    straight = ingest_telemetry(parameters(), held, incoming, NOW)
    mixed = ingest_telemetry(parameters(), held, shuffled, NOW)
    for name in ("measured_at_ms", "sequence", "battery_power_kw", "state_of_charge_pct"):
        np.testing.assert_array_equal(getattr(straight.state, name), getattr(mixed.state, name))
    assert np.array_equal(straight.accepted[permutation], mixed.accepted)
    for name in ("applied", "superseded", "out_of_order", "duplicate"):  # identical copies may swap labels
        assert int(getattr(straight, name).sum()) == int(getattr(mixed, name).sum()), name
    assert straight.quarantine.counts == mixed.quarantine.counts


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab-1é", min_size=1, max_size=6), min_size=1, max_size=30, unique=True),
       st.lists(st.text(alphabet="ab-1é", min_size=0, max_size=8), max_size=30))
def test_hashed_lookup_finds_the_same_rows_as_the_string_search(known: list[str], queries: list[str]) -> None:
    known_ids = np.array(sorted(known))
    asked = np.array(queries + known[:3])
    np.testing.assert_array_equal(lookup_site_rows(known_ids, asked), site_positions(known_ids, asked))


def test_bad_inputs_raise_named_errors() -> None:
    with pytest.raises(FleetInputError, match="state has 3 rows"):
        ingest_telemetry(parameters(), FleetState.empty(3), batch([reading()]), NOW)
    with pytest.raises(FleetInputError, match="max_clock_skew_ms"):
        ingest_telemetry(parameters(), FleetState.empty(4), batch([reading()]), NOW, max_clock_skew_ms=-1)


def test_empty_batch_is_a_no_op() -> None:
    state = FleetState.empty(4)
    result = ingest_telemetry(parameters(), state, batch([]), NOW)
    assert result.accepted.shape == (0,) and result.quarantine.reading_count == 0
    np.testing.assert_array_equal(result.state.measured_at_ms, state.measured_at_ms)
