"""Per-site event accounting: asked, acknowledged, delivered and shortfall, in kWh a person can check."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.fleet.accounting import account_event
from algorithms.fleet.fleet_types import NEVER
from algorithms.fleet.telemetry import FleetInputError

T0 = 1_700_000_000_000
SITES = np.array(["site-a", "site-b", "site-c"])


def test_hand_worked_discharge_event() -> None:
    # Two 30-minute steps. a: asked 2 kW, delivers 2 then 1. b: asked 4 kW, never acks, delivers 0.
    # c: asked 1 kW then nothing, over-delivers 1.5 kW in step 1.
    asked = np.array([[2.0, 4.0, 1.0], [2.0, 4.0, 0.0]])
    acks = np.array([[True, False, True], [True, False, True]])
    measured = np.array([[2.0, 0.0, 1.5], [1.0, 0.0, 0.7]])
    first_ack = np.array([T0 + 2_000, NEVER, T0 + 1_000])
    account = account_event(SITES, asked, acks, measured, np.array([1_800.0, 1_800.0]), first_ack_ms=first_ack)
    np.testing.assert_allclose(account.asked_kwh, [2.0, 4.0, 0.5])
    np.testing.assert_allclose(account.delivered_kwh, [1.5, 0.0, 0.75])  # c's step 2 was not asked: not counted
    np.testing.assert_allclose(account.shortfall_kwh, [0.5, 4.0, 0.0])
    assert account.acknowledged.tolist() == [True, False, True]
    assert account.first_ack_ms.tolist() == [T0 + 2_000, NEVER, T0 + 1_000]
    assert account.short.tolist() == [True, True, False]
    summary = account.summary
    assert summary.asked_mwh == pytest.approx(0.0065)
    assert summary.delivered_mwh == pytest.approx(0.00225)
    assert summary.shortfall_mwh == pytest.approx(0.0045)
    assert summary.delivered_pct == pytest.approx(2.25 / 6.5 * 100)
    assert (summary.sites_asked, summary.sites_acknowledged, summary.sites_short) == (3, 2, 2)
    assert "(34.6 %)" in summary.describe() and "2 of 3 sites asked acknowledged, 2 short" in summary.describe()


def test_charge_events_count_in_the_asked_direction_and_wrong_way_power_is_negative_delivery() -> None:
    asked = np.array([[-3.0, -3.0, 0.0]])
    measured = np.array([[-3.0, 1.0, -2.0]])
    account = account_event(SITES, asked, np.zeros((1, 3), bool), measured, np.array([3_600.0]))
    np.testing.assert_allclose(account.asked_kwh, [3.0, 3.0, 0.0])
    np.testing.assert_allclose(account.delivered_kwh, [3.0, -1.0, 0.0])
    np.testing.assert_allclose(account.shortfall_kwh, [0.0, 4.0, 0.0])
    assert account.summary.sites_asked == 2 and account.summary.sites_acknowledged == 0


def test_missing_telemetry_counts_as_nothing_delivered_and_is_reported() -> None:
    asked = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    measured = np.array([[1.0, np.nan, 1.0], [np.nan, np.nan, 1.0]])
    account = account_event(SITES, asked, np.ones((2, 3), bool), measured, np.array([600.0, 600.0]))
    assert account.missing_samples.tolist() == [1, 2, 0]
    np.testing.assert_allclose(account.delivered_kwh, [1 / 6, 0.0, 2 / 6])
    assert account.summary.sites_missing_telemetry == 2


def test_baseline_is_subtracted_from_the_measured_power() -> None:
    asked = np.array([[2.0, 2.0, 2.0]])
    measured = np.array([[2.5, 2.0, 2.0]])
    baseline = np.array([[0.5, 0.0, 1.0]])
    account = account_event(SITES, asked, np.ones((1, 3), bool), measured, np.array([3_600.0]), baseline_kw=baseline)
    np.testing.assert_allclose(account.delivered_kwh, [2.0, 2.0, 1.0])
    assert account.short.tolist() == [False, False, True]


def test_impact_log_rows_are_readable() -> None:
    asked = np.array([[2.0, 4.0, 0.0]])
    acks = np.array([[True, False, False]])
    account = account_event(SITES, asked, acks, np.array([[1.9, 0.0, 0.0]]), np.array([1_800.0]),
                            first_ack_ms=np.array([T0, NEVER, NEVER]))
    assert account.first_ack_ms.tolist() == [T0, NEVER, NEVER]
    rows = account.to_rows()
    assert rows[0] == {
        "site_id": "site-a", "asked_kwh": 1.0, "delivered_kwh": 0.95, "shortfall_kwh": 0.05, "delivered_pct": 95.0,
        "acknowledged": True, "first_ack_utc": "2023-11-14T22:13:20.000+00:00", "missing_samples": 0,
        "short": False,
    }
    assert rows[1]["first_ack_utc"] == "" and rows[1]["short"] is True
    assert np.isnan(rows[2]["delivered_pct"])  # type: ignore[arg-type]


def test_shapes_must_be_steps_by_sites() -> None:
    with pytest.raises(FleetInputError, match="measured_kw has shape"):
        account_event(SITES, np.zeros((2, 3)), np.zeros((2, 3), bool), np.zeros((2, 2)), np.ones(2))
    with pytest.raises(FleetInputError, match="asked_kw must be finite"):
        account_event(SITES, np.full((1, 3), np.nan), np.zeros((1, 3), bool), np.zeros((1, 3)), np.ones(1))
    with pytest.raises(FleetInputError, match="step_duration_s"):
        account_event(SITES, np.zeros((1, 3)), np.zeros((1, 3), bool), np.zeros((1, 3)), -np.ones(1))
    with pytest.raises(FleetInputError, match="first_ack_ms"):
        account_event(SITES, np.zeros((1, 3)), np.zeros((1, 3), bool), np.zeros((1, 3)), np.ones(1),
                      first_ack_ms=np.zeros(2, dtype=np.int64))
