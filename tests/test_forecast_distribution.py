"""Price-forecast distribution (push and poll) and plan collection at the fleet gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from algorithms.fleet.fleet_types import SiteParameters
from algorithms.fleet.plan_store import PlanShapeError, PlanStore, ingest_plans
from algorithms.fleet.site_plan_types import NO_VERSION, SitePlans
from services.fleet_codec import (
    MalformedBatchError,
    median_price_per_mwh,
    plans_from_proto,
    plans_to_proto,
)
from services.fleet_gateway import FleetGateway
from services.forecast_distribution import ForecastRequestError
from settings import FleetSettings
from simulator.population import make_site_parameters
from tests.gateway_helpers import served_gateway
from vpp.v1 import fleet_pb2

T0 = 1_750_000_000_000
HORIZON = 4
INTERVAL_MINUTES = 30


def _gateway(site_count: int = 12) -> FleetGateway:
    settings = FleetSettings(plan_interval_minutes=INTERVAL_MINUTES, plan_horizon_intervals=HORIZON)
    return FleetGateway(make_site_parameters(site_count, 3), settings, clock=lambda: T0)


def _forecast(version: int, region: str = "SA1") -> fleet_pb2.PriceForecast:
    return fleet_pb2.PriceForecast(
        version=version, region=region, published_at_ms=T0, start_ms=T0, interval_minutes=5, horizon_intervals=3,
        quantile=[0.1, 0.5, 0.9], price_per_mwh=[10, 20, 30, 50, 60, 70, 90, 100, 110])


def _plans(parameters: SiteParameters, rows: list[int], *, version: int = 1, start_ms: int = T0,
           power_kw: float = 1.0) -> SitePlans:
    n = len(rows)
    capacity = parameters.capacity_kwh[rows]
    shape = (n, HORIZON)
    return SitePlans(site_ids=parameters.site_ids[rows], forecast_version=np.full(n, version, dtype=np.int64),
                     start_ms=np.full(n, start_ms, dtype=np.int64), plan_interval_minutes=INTERVAL_MINUTES,
                     battery_power_kw=np.full(shape, power_kw), net_export_kw=np.full(shape, power_kw - 0.5),
                     discharge_flexibility_kw=np.ones(shape), charge_flexibility_kw=np.ones(shape),
                     state_of_charge_kwh=np.tile(capacity[:, None] * 0.5, (1, HORIZON)))


def test_a_forecast_is_pushed_once_per_stream_to_push_mode_sites_only() -> None:
    gateway = _gateway()
    sites = gateway.parameters.site_ids
    first, first_queue = gateway.open_stream(sites[:6])
    _, second_queue = gateway.open_stream(sites[6:])
    gateway.distribution.set_push(sites[6:], False)  # the second stream's programme polls
    response = gateway.publish_forecast(_forecast(1))
    assert response.published and response.version == 1
    assert (response.streams_pushed, response.sites_pushed) == (1, 6)
    assert response.bytes_pushed == fleet_pb2.ConnectResponse(forecast=_forecast(1)).ByteSize()
    assert first_queue.qsize() == 1 and first_queue.get_nowait().forecast.version == 1
    assert second_queue.empty()
    held = gateway.distribution.held_version
    assert held[:6].tolist() == [1] * 6 and held[6:].tolist() == [NO_VERSION] * 6
    assert first == 0


def test_an_older_or_equal_version_changes_nothing_and_a_bad_forecast_is_refused() -> None:
    gateway = _gateway()
    gateway.open_stream(gateway.parameters.site_ids)
    gateway.publish_forecast(_forecast(5))
    again = gateway.publish_forecast(_forecast(5))
    older = gateway.publish_forecast(_forecast(4))
    assert not again.published and not older.published and older.version == 5
    with pytest.raises(ForecastRequestError, match="version > 0"):
        gateway.publish_forecast(_forecast(0))
    ragged = _forecast(6)
    ragged.price_per_mwh.append(1.0)
    with pytest.raises(ForecastRequestError, match="expected 3 quantiles × 3 intervals"):
        gateway.publish_forecast(ragged)
    non_finite = _forecast(7)
    non_finite.price_per_mwh[4] = float("nan")
    with pytest.raises(ForecastRequestError, match="finite"):
        gateway.publish_forecast(non_finite)
    with pytest.raises(ForecastRequestError, match="region"):
        gateway.publish_forecast(_forecast(8, region=""))
    assert gateway.distribution.latest_version == 5


def test_a_poll_gets_only_a_newer_version_and_marks_the_streams_sites() -> None:
    gateway = _gateway()
    sites = gateway.parameters.site_ids
    gateway.distribution.set_push(sites, False)
    stream, queue = gateway.open_stream(sites[:4])
    assert gateway.poll_forecast(stream, 0) is None  # nothing published yet
    gateway.publish_forecast(_forecast(3))
    assert queue.empty()
    answer = gateway.poll_forecast(stream, 0)
    assert answer is not None and answer.forecast.version == 3
    assert gateway.poll_forecast(stream, 3) is None
    assert gateway.distribution.held_version[:4].tolist() == [3] * 4
    assert gateway.distribution.held_version[4:].tolist() == [NO_VERSION] * 8
    counters = gateway.distribution.counters
    assert (counters.polls, counters.polls_answered) == (3, 1)


def test_a_site_that_comes_back_online_is_caught_up_on_connect() -> None:
    gateway = _gateway()
    sites = gateway.parameters.site_ids
    gateway.publish_forecast(_forecast(2))  # nobody connected: nothing pushed
    assert gateway.distribution.counters.forecasts_pushed == 0
    stream, queue = gateway.open_stream(sites[:5])
    gateway.catch_up(stream)
    assert queue.get_nowait().forecast.version == 2
    gateway.catch_up(stream)  # already holds it: nothing more
    assert queue.empty()
    assert gateway.distribution.held_version[:5].tolist() == [2] * 5


def test_a_full_stream_misses_the_push_and_is_counted() -> None:
    gateway = _gateway()
    _, queue = gateway.open_stream(gateway.parameters.site_ids)
    for _ in range(gateway.settings.stream_queue_size):
        queue.put_nowait(fleet_pb2.ConnectResponse())
    response = gateway.publish_forecast(_forecast(1))
    assert response.streams_dropped == 1 and response.streams_pushed == 0
    assert gateway.counters.dropped_downlink == 1
    assert (gateway.distribution.held_version == NO_VERSION).all()


def test_plans_are_kept_newest_first_and_nonsense_is_quarantined_with_its_reason() -> None:
    gateway = _gateway()
    parameters = gateway.parameters
    gateway.publish_forecast(_forecast(2))
    receipt = gateway.ingest_plans_from(None, _plans(parameters, [0, 1, 2], version=2))
    assert receipt.accepted == 3 and not receipt.quarantined
    bad = _plans(parameters, [3, 4, 5, 6, 7, 8], version=1)
    bad.battery_power_kw[0, 1] = np.nan                                   # row 3: non_finite
    bad.forecast_version[1] = 9                                           # row 4: unknown_forecast_version
    bad.battery_power_kw[2, 0] = parameters.max_discharge_kw[5] * 2       # row 5: battery_power_out_of_range
    bad.charge_flexibility_kw[3, 2] = -1.0                                # row 6: negative_flexibility
    bad.state_of_charge_kwh[4, 3] = parameters.capacity_kwh[7] * 1.5      # row 7: soc_out_of_range
    receipt = gateway.ingest_plans_from(None, bad)
    assert receipt.accepted == 1
    assert dict(receipt.quarantined) == {"non_finite": 1, "unknown_forecast_version": 1,
                                         "battery_power_out_of_range": 1, "negative_flexibility": 1,
                                         "soc_out_of_range": 1}
    store = gateway.distribution.plans
    assert store.planned.tolist() == [True] * 3 + [False] * 5 + [True] + [False] * 3
    older = _plans(parameters, [0], version=2, start_ms=T0 - 1_800_000, power_kw=-2.0)
    gateway.ingest_plans_from(None, older)
    assert gateway.distribution.plans.battery_power_kw[0, 0] == 1.0  # the older plan did not replace it
    assert gateway.distribution.counters.plans_superseded == 1
    # A plan names the version its site holds: site 8 planned on v1 without a push or poll.
    assert gateway.distribution.held_version[8] == 1
    response = gateway.distribution.plans_response(np.array([], dtype=np.str_))
    assert sorted(response.plans.site_id) == sorted(parameters.site_ids[[0, 1, 2, 8]].tolist())
    assert response.latest_version == 2 and dict(response.plans_quarantined)["non_finite"] == 1


def test_plans_of_another_shape_or_an_unknown_site_are_refused() -> None:
    gateway = _gateway()
    parameters = gateway.parameters
    plans = _plans(parameters, [0])
    shorter = SitePlans(site_ids=plans.site_ids, forecast_version=plans.forecast_version, start_ms=plans.start_ms,
                        plan_interval_minutes=15, battery_power_kw=plans.battery_power_kw,
                        net_export_kw=plans.net_export_kw, discharge_flexibility_kw=plans.discharge_flexibility_kw,
                        charge_flexibility_kw=plans.charge_flexibility_kw,
                        state_of_charge_kwh=plans.state_of_charge_kwh)
    with pytest.raises(PlanShapeError, match="15-minute"):
        gateway.ingest_plans_from(None, shorter)
    stranger = _plans(parameters, [1], version=0)
    stranger = SitePlans(**{**stranger.__dict__, "site_ids": np.array(["site-999999"])})
    assert dict(gateway.ingest_plans_from(None, stranger).quarantined) == {"unknown_site": 1}


@hypothesis_settings(max_examples=40, deadline=None)
@given(order_seed=st.integers(0, 10_000), starts=st.lists(st.integers(0, 5), min_size=6, max_size=6))
def test_the_stored_plan_is_the_newest_whatever_the_arrival_order(order_seed: int, starts: list[int]) -> None:
    parameters = make_site_parameters(3, 1)
    rows = [0, 1, 2, 0, 1, 2]
    batch = _plans(parameters, rows)
    batch.start_ms[:] = T0 + np.asarray(starts) * 60_000
    batch.battery_power_kw[:] = 0.1 * np.asarray(starts, dtype=float)[:, None]
    order = np.random.default_rng(order_seed).permutation(len(rows))
    store = PlanStore.empty(3, plan_interval_minutes=INTERVAL_MINUTES, horizon_intervals=HORIZON)
    for index in order:  # one plan per batch, in a random order
        single = batch.take(np.array([index]))
        store = ingest_plans(parameters, store, single, latest_version=1, now_ms=T0).store
    all_at_once = ingest_plans(parameters, PlanStore.empty(3, plan_interval_minutes=INTERVAL_MINUTES,
                                                           horizon_intervals=HORIZON),
                               batch, latest_version=1, now_ms=T0).store
    for site in range(3):
        newest = max(starts[site], starts[site + 3])
        assert store.start_ms[site] == T0 + newest * 60_000
        assert store.battery_power_kw[site, 0] == pytest.approx(0.1 * newest)
        assert all_at_once.start_ms[site] == store.start_ms[site]


def test_plan_batches_and_forecasts_round_trip_and_ragged_ones_are_rejected() -> None:
    parameters = make_site_parameters(4, 2)
    plans = _plans(parameters, [0, 2, 3])
    again = plans_from_proto(plans_to_proto(plans))
    np.testing.assert_array_equal(again.state_of_charge_kwh, plans.state_of_charge_kwh)
    np.testing.assert_array_equal(again.site_ids, plans.site_ids)
    ragged = plans_to_proto(plans)
    ragged.net_export_kw.append(1.0)
    with pytest.raises(MalformedBatchError, match="net_export_kw has 13 values, expected 3 sites × 4 intervals"):
        plans_from_proto(ragged)
    np.testing.assert_array_equal(median_price_per_mwh(_forecast(1)), [50, 60, 70])


async def test_push_poll_and_plans_over_the_real_grpc_stream() -> None:
    gateway = _gateway()
    parameters = gateway.parameters
    sites = parameters.site_ids.tolist()
    async with served_gateway(gateway) as stub:
        mode = await stub.SetDistributionMode(fleet_pb2.SetDistributionModeRequest(
            site_id=[*sites[6:], "site-999999"], mode=fleet_pb2.DISTRIBUTION_MODE_POLL))
        assert mode.site_count == 6 and list(mode.unknown_site_id) == ["site-999999"]
        with pytest.raises(grpc.aio.AioRpcError) as unspecified:
            await stub.SetDistributionMode(fleet_pb2.SetDistributionModeRequest(site_id=sites))
        assert unspecified.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        published = await stub.PublishForecast(fleet_pb2.PublishForecastRequest(forecast=_forecast(1)))
        assert published.published and published.streams_pushed == 0  # nobody connected yet
        received: list[fleet_pb2.ConnectResponse] = []
        done = asyncio.Event()

        async def pusher() -> AsyncIterator[fleet_pb2.ConnectRequest]:
            yield fleet_pb2.ConnectRequest(hello=fleet_pb2.ConcentratorHello(concentrator_id="c1", site_id=sites[:6]))
            yield fleet_pb2.ConnectRequest(plans=plans_to_proto(_plans(parameters, list(range(6)))))
            await done.wait()

        async def poller() -> AsyncIterator[fleet_pb2.ConnectRequest]:
            yield fleet_pb2.ConnectRequest(hello=fleet_pb2.ConcentratorHello(concentrator_id="c2", site_id=sites[6:]))
            yield fleet_pb2.ConnectRequest(forecast_poll=fleet_pb2.ForecastPoll(after_version=0))
            await done.wait()

        async def read(stream: grpc.aio.StreamStreamCall[fleet_pb2.ConnectRequest, fleet_pb2.ConnectResponse],
                       wanted: int) -> list[fleet_pb2.ConnectResponse]:
            messages = []
            async for message in stream:
                messages.append(message)
                if len(messages) == wanted:
                    break
            return messages

        push_stream, poll_stream = stub.Connect(pusher()), stub.Connect(poller())
        pushed, polled = await asyncio.wait_for(asyncio.gather(read(push_stream, 2), read(poll_stream, 1)), 20)
        received = pushed + polled
        done.set()
        push_stream.cancel()
        poll_stream.cancel()
        plans = await stub.GetPlans(fleet_pb2.GetPlansRequest())
    kinds = [m.WhichOneof("body") for m in pushed]
    assert kinds == ["forecast", "plan_receipt"] and pushed[1].plan_receipt.accepted == 6
    assert polled[0].forecast.version == 1
    assert len(received) == 3
    assert len(plans.plans.site_id) == 6 and plans.plans.horizon_intervals == HORIZON
    assert list(plans.held_version) == [1] * 12 and plans.polls_answered == 1 and plans.forecasts_pushed == 1


def test_the_status_rows_count_sites_by_the_version_they_hold() -> None:
    from cli.coopt import distribution_rows

    gateway = _gateway()
    sites = gateway.parameters.site_ids
    gateway.open_stream(sites[:8])
    gateway.publish_forecast(_forecast(1))
    gateway.publish_forecast(_forecast(2))
    gateway.ingest_plans_from(None, _plans(gateway.parameters, [9], version=1))
    gateway.ingest_plans_from(None, _plans(gateway.parameters, [0, 1], version=2))
    rows = dict(distribution_rows(gateway.distribution.plans_response(np.array([], dtype=np.str_))))
    assert rows["newest version"] == "v2"
    assert rows["sites holding the newest version"] == "8 (66.7 %)"
    assert rows["sites holding an older version"] == "1" and rows["sites holding no version"] == "3"
    assert rows["plans on v2 (current)"] == "2" and rows["plans on v1 (older)"] == "1"
    assert rows["forecasts pushed (messages / bytes)"].startswith("2 / ")
