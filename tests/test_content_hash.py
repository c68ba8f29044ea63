"""Content hashes of worker requests: a request stamped in place carries the hash of its inputs, as a copy does."""

from __future__ import annotations

from datetime import datetime

from algorithms.common.content_hash import inputs_hash, message_bytes, stamp_inputs_hash, with_inputs_hash
from algorithms.common.nem_time import to_timestamp
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2


def _forecast_request(request_id: str) -> worker_pb2.ForecastRequest:
    return worker_pb2.ForecastRequest(
        request_id=request_id, algorithm=common_pb2.AlgorithmRef(name="sarx-quantile", version="2"), region="SA1",
        product="ENERGY", first_interval=to_timestamp(datetime(2021, 1, 15, 0, 5)), horizon_intervals=288,
        quantiles=[0.1, 0.5, 0.9],
        history=market_data_pb2.ProductPriceHistory(product="ENERGY", price=[41.5, 38.2, -12.0, 300.0]))


def test_a_request_stamped_in_place_is_the_copy_with_its_inputs_hash() -> None:
    for request_id in ("backtest-SA1-20210115T0005/forecast/ENERGY", ""):
        original = _forecast_request(request_id)
        copied = with_inputs_hash(original)
        assert original.inputs_hash == ""  # the copy's, not the original's
        stamped = stamp_inputs_hash(_forecast_request(request_id))
        assert message_bytes(stamped) == message_bytes(copied)
        assert stamped.request_id == request_id
        assert stamped.inputs_hash == inputs_hash(original) == inputs_hash(stamped)


def test_the_inputs_hash_ignores_the_request_id_and_an_earlier_hash() -> None:
    first = stamp_inputs_hash(_forecast_request("a"))
    second = stamp_inputs_hash(_forecast_request("b"))
    assert first.inputs_hash == second.inputs_hash
    assert stamp_inputs_hash(first).inputs_hash == first.inputs_hash  # restamping changes nothing
    other = _forecast_request("a")
    other.history.price.append(1.0)
    assert stamp_inputs_hash(other).inputs_hash != first.inputs_hash
    forecasts = [worker_pb2.ForecastResult(product="ENERGY", price=[1.0, 2.0])]
    optimisation = stamp_inputs_hash(worker_pb2.OptimisationRequest(request_id="x", forecasts=forecasts))
    assert optimisation.request_id == "x" and optimisation.inputs_hash == inputs_hash(optimisation)
