"""Packed repeated fields from NumPy arrays: the same message, byte for byte, as appending element by element."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from algorithms.market.as_of import build_snapshot, publication_model
from algorithms.market.packed_wire import packed_doubles, packed_varints, varint_bytes
from backtest.runs import load_inputs
from settings import load_settings
from vpp.v1 import common_pb2, market_data_pb2

HISTORY = market_data_pb2.ProductPriceHistory
FIELD = {field.name: field.number for field in HISTORY.DESCRIPTOR.fields}
EDGE_INTEGERS = [0, 1, 127, 128, 16_383, 16_384, 2**35, 1_609_459_500_000, 2**63 - 1, -1, -(2**63)]


def appended(prices: list[float], known_ms: list[int], quality: list[int]) -> bytes:
    message = HISTORY(product="ENERGY")
    message.price.extend(prices)
    message.known_at_unix_ms.extend(known_ms)
    message.quality.extend(quality)
    return message.SerializeToString()


def packed(prices: np.ndarray, known_ms: np.ndarray, quality: np.ndarray) -> bytes:
    message = HISTORY(product="ENERGY")
    message.MergeFromString(packed_doubles(FIELD["price"], prices) + packed_varints(FIELD["known_at_unix_ms"], known_ms)
                            + packed_varints(FIELD["quality"], quality))
    return message.SerializeToString()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packed_fields_serialise_as_the_same_values_appended_one_by_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    count = 3_000
    prices = rng.normal(50.0, 300.0, count)
    prices[::11] = np.nan
    prices[1:4] = [np.inf, -np.inf, -0.0]
    prices[4] = 5e-324  # the smallest subnormal double
    known_ms = rng.integers(-(2**63), 2**63 - 1, count, dtype=np.int64)
    known_ms[::3] = 0
    known_ms[: len(EDGE_INTEGERS)] = EDGE_INTEGERS
    quality = rng.integers(0, 5, count)
    assert packed(prices, known_ms, quality) == appended(prices.tolist(), known_ms.tolist(), quality.tolist())
    parsed = HISTORY.FromString(packed(prices, known_ms, quality))
    np.testing.assert_array_equal(np.asarray(parsed.known_at_unix_ms, dtype=np.int64), known_ms)
    assert np.asarray(parsed.price).view(np.uint64).tolist() == prices.view(np.uint64).tolist()  # NaN bits too


def test_varints_are_protobufs_own_encoding() -> None:
    assert varint_bytes([0, 1, 127, 128, 300]) == bytes([0, 1, 0x7F, 0x80, 0x01, 0xAC, 0x02])
    assert varint_bytes([-1]) == bytes([0xFF] * 9 + [0x01])  # int64 -1: its two's complement, 10 bytes
    assert varint_bytes(np.array([2**64 - 1], dtype=np.uint64)) == bytes([0xFF] * 9 + [0x01])


def test_empty_arrays_add_nothing_and_bad_input_is_refused() -> None:
    assert packed_doubles(3, np.zeros(0)) == b""
    assert packed_varints(4, np.zeros(0, dtype=np.int64)) == b""
    assert packed(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)) == appended([], [], [])
    with pytest.raises(ValueError, match="integers"):
        varint_bytes(np.array([1.5]))
    with pytest.raises(ValueError, match="field_number"):
        packed_doubles(0, np.ones(3))


def test_a_snapshot_holds_the_data_it_was_built_from() -> None:
    """January 2021, SA1: the snapshot's packed price and quality columns read back as the data's prices."""
    settings = load_settings(environ={})
    inputs = load_inputs([settings.market_data.data_dir])
    snapshot = build_snapshot(inputs.dispatch, inputs.predispatch, region="SA1",
                              dispatch_interval=datetime(2021, 1, 15, 12, 5), as_of=datetime(2021, 1, 15, 12, 0, 40),
                              history_intervals=2016, publication=publication_model(settings.market_data))
    dispatch = inputs.dispatch
    last = int(np.flatnonzero(np.array(dispatch.intervals) == np.datetime64(datetime(2021, 1, 15, 12, 0)))[0])
    for index, product in enumerate(dispatch.products):
        [history] = [h for h in snapshot.history if h.product == product]
        expected = dispatch.price[dispatch.region_index("SA1"), last - 2015:last + 1, index]
        np.testing.assert_array_equal(np.asarray(history.price), expected)
        assert len(history.known_at_unix_ms) == 2016
        assert list(history.quality) == [common_pb2.DATA_QUALITY_ON_TIME] * 2016
