"""The content-addressed archive: local folder and S3 (moto server) backends behave the same."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from google.protobuf import any_pb2
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from archive import (
    Archive,
    ArchiveCorruptError,
    ArchiveNotFoundError,
    InvalidArchiveKeyError,
    LocalArchive,
    S3Archive,
    archive_key,
    open_archive,
    unpack,
)
from archive.store import object_path, packed_bytes
from settings import Settings
from vpp.v1 import common_pb2, market_data_pb2, worker_pb2


def _forecast_result(product: str = "ENERGY", price: float = 42.5) -> worker_pb2.ForecastResult:
    result = worker_pb2.ForecastResult(
        request_id="r-1", product=product, horizon_intervals=2, quantiles=[0.1, 0.9],
        price=[price, price + 1.0, price + 2.0, price + 3.0], status=worker_pb2.RESULT_STATUS_OK,
        compute_ms=3.5)
    result.algorithm.CopyFrom(common_pb2.AlgorithmRef(name="sarx-quantile", version="1"))
    result.first_interval.FromDatetime(datetime(2021, 1, 1, 4, 5))
    return result


def _plan() -> worker_pb2.OptimisationResult:
    plan = worker_pb2.OptimisationResult(request_id="p-1", status=worker_pb2.RESULT_STATUS_OPTIMAL,
                                         horizon_intervals=2, gen_mw=[10.0, 0.0], load_mw=[0.0, 5.0],
                                         state_of_charge_mwh=[96.0, 97.5], objective_dollars=123.0)
    plan.fcas.add(product="RAISE6SEC", enablement_mw=[1.0, 2.0])
    return plan


@pytest.fixture(scope="module")
def s3_bucket(sqs_endpoint: str) -> str:
    """A fresh bucket on the moto server (which serves S3 as well as SQS)."""
    name = f"archive-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=sqs_endpoint, region_name="ap-southeast-2",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "ap-southeast-2"})
    return name


def _s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=endpoint, region_name="ap-southeast-2",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    """Each backend in turn; the S3 one under a prefix of its own in the shared bucket."""
    if request.param == "local":
        yield LocalArchive(tmp_path / "archive")
    else:
        endpoint = request.getfixturevalue("sqs_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        yield S3Archive(_s3_client(endpoint), bucket, f"test-{uuid.uuid4().hex[:8]}/archive")


def test_key_is_sha256_of_the_deterministic_any(store: Archive) -> None:
    result = _forecast_result()
    key = store.put(result)
    packed = any_pb2.Any()
    packed.Pack(result, deterministic=True)
    expected = "sha256:" + hashlib.sha256(packed.SerializeToString(deterministic=True)).hexdigest()
    assert key == expected == archive_key(result)
    assert store.get_bytes(key) == packed.SerializeToString(deterministic=True)


def test_get_decodes_to_the_generated_class(store: Archive) -> None:
    messages = [_forecast_result(), _plan(), market_data_pb2.GetSnapshotRequest(), common_pb2.BatterySpec(
        unit_id="HPR1", power_mw=150.0, energy_mwh=194.0)]
    for message in messages:
        restored = store.get(store.put(message))
        assert type(restored) is type(message)
        assert restored == message


def test_same_message_same_key_and_different_message_different_key(store: Archive) -> None:
    assert store.put(_forecast_result()) == store.put(_forecast_result())
    assert store.put(_forecast_result(price=1.0)) != store.put(_forecast_result(price=2.0))


def test_absent_key_raises_not_found(store: Archive) -> None:
    missing = "sha256:" + "0" * 64
    with pytest.raises(ArchiveNotFoundError) as caught:
        store.get(missing)
    assert isinstance(caught.value, KeyError)
    with pytest.raises(ArchiveNotFoundError):
        store.get_bytes(missing)


@pytest.mark.parametrize("bad_key", ["", "sha256:abc", "md5:" + "0" * 64, "sha256:" + "G" * 64,
                                     "sha256:../" + "0" * 61])
def test_malformed_key_is_refused(store: Archive, bad_key: str) -> None:
    with pytest.raises(InvalidArchiveKeyError):
        store.get(bad_key)


def test_cycle_index_lists_entries_in_order_without_duplicates(store: Archive) -> None:
    cycle = "autobidder/2021-01-01T04:05:00"  # a slash and colons: quoted into one name segment
    energy = store.put(_forecast_result("ENERGY"), cycle_id=cycle, label="forecast-result/ENERGY")
    raise6 = store.put(_forecast_result("RAISE6SEC"), cycle_id=cycle, label="forecast-result/RAISE6SEC")
    plan = store.put(_plan(), cycle_id=cycle, label="optimisation-result/")
    store.put(_forecast_result("ENERGY"), cycle_id=cycle, label="forecast-result/ENERGY")  # a retry
    store.put(_plan(), cycle_id="other-cycle", label="optimisation-result/")
    store.put(_plan())  # no cycle: not indexed

    entries = store.list_cycle(cycle)
    assert [(e.label, e.key) for e in entries] == [
        ("forecast-result/ENERGY", energy), ("forecast-result/RAISE6SEC", raise6),
        ("optimisation-result/", plan)]
    assert {e.cycle_id for e in entries} == {cycle}
    assert [e.type_name for e in entries] == ["vpp.v1.ForecastResult"] * 2 + ["vpp.v1.OptimisationResult"]
    assert all(e.recorded_at.tzinfo is not None for e in entries)
    assert store.list_cycles() == sorted([cycle, "other-cycle"])
    assert store.list_cycle("never-ran") == []


def test_a_batch_is_archived_and_indexed_in_order_with_one_index_write(store: Archive) -> None:
    cycle = "batch-cycle"
    store.put(_forecast_result("ENERGY"), cycle_id=cycle, label="forecast-result/ENERGY")
    keys = store.put_all([(_forecast_result("ENERGY"), "forecast-result/ENERGY"),  # already listed
                          (_forecast_result("RAISE6SEC"), "forecast-result/RAISE6SEC"),
                          (_plan(), "optimisation-result/")], cycle_id=cycle)
    assert keys == [store.put(_forecast_result("ENERGY")), store.put(_forecast_result("RAISE6SEC")), store.put(_plan())]
    entries = store.list_cycle(cycle)
    assert [(e.label, e.key) for e in entries] == [
        ("forecast-result/ENERGY", keys[0]), ("forecast-result/RAISE6SEC", keys[1]), ("optimisation-result/", keys[2])]
    assert store.get(keys[2]) == _plan()
    assert store.put_all([], cycle_id=cycle) == [] and len(store.list_cycle(cycle)) == 3


def test_a_local_batch_is_written_at_once_and_indexed_only_once_every_object_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A LocalArchive writes a batch's new objects on several threads at once (their fsyncs overlap); the index
    names them only after every one is written: a failed write leaves no index entry, and the batch again
    writes only what is missing."""
    import archive.store

    store = LocalArchive(tmp_path / "archive")
    products = [f"P{index}" for index in range(9)]
    batch = [(_forecast_result(product), f"forecast-result/{product}") for product in products]
    written: list[tuple[str, str]] = []
    write = archive.store._atomic_write
    failing = (tmp_path / "archive" / object_path(archive_key(batch[4][0]))).name

    def failing_once(target: Path, content: bytes) -> None:
        written.append((threading.current_thread().name, target.name))
        if target.name == failing and len(written) <= len(batch):
            raise OSError("disk full")
        write(target, content)

    monkeypatch.setattr(archive.store, "_atomic_write", failing_once)
    with pytest.raises(OSError, match="disk full"):
        store.put_all(batch, cycle_id="failed-batch")
    assert store.list_cycle("failed-batch") == []
    assert len(written) == len(batch)
    assert all(name.startswith("archive-write") for name, _ in written)  # not one by one on the caller's thread
    keys = store.put_all(batch, cycle_id="failed-batch")
    assert len(written) == len(batch) + 2  # only the object that failed is written again, then the index
    assert [(e.label, e.key) for e in store.list_cycle("failed-batch")] == [
        (label, key) for (_, label), key in zip(batch, keys, strict=True)]
    assert [store.get(key) for key in keys] == [message for message, _ in batch]


def test_concurrent_index_writers_lose_no_entry(store: Archive) -> None:
    products = [f"P{i}" for i in range(12)]

    def put(product: str) -> str:
        return store.put(_forecast_result(product), cycle_id="busy", label=f"forecast-result/{product}")

    with ThreadPoolExecutor(max_workers=6) as pool:
        keys = list(pool.map(put, products))
    entries = store.list_cycle("busy")
    assert sorted((e.label, e.key) for e in entries) == sorted(
        (f"forecast-result/{p}", k) for p, k in zip(products, keys, strict=True))


def test_local_object_layout_and_immutability(tmp_path: Path) -> None:
    store = LocalArchive(tmp_path)
    key = store.put(_plan(), cycle_id="c1", label="optimisation-result/")
    digest = key.removeprefix("sha256:")
    path = tmp_path / "objects" / "sha256" / digest[:2] / digest[2:]
    assert path.is_file()
    assert (tmp_path / "cycles" / "c1.jsonl").is_file()
    first_inode = path.stat().st_ino
    store.put(_plan())
    assert path.stat().st_ino == first_inode  # not rewritten
    assert not list(path.parent.glob(".tmp-*"))


def test_local_tampered_object_is_reported_corrupt(tmp_path: Path) -> None:
    store = LocalArchive(tmp_path)
    key = store.put(_forecast_result())
    path = tmp_path / object_path(key)
    path.write_bytes(packed_bytes(_forecast_result(price=-99.0)))
    with pytest.raises(ArchiveCorruptError, match="hash"):
        store.get(key)


def test_s3_tampered_object_is_reported_corrupt(sqs_endpoint: str, s3_bucket: str) -> None:
    client = _s3_client(sqs_endpoint)
    store = S3Archive(client, s3_bucket, "tamper")
    key = store.put(_forecast_result())
    client.put_object(Bucket=s3_bucket, Key=f"tamper/{object_path(key)}", Body=b"garbage")
    with pytest.raises(ArchiveCorruptError):
        store.get_bytes(key)


def test_s3_layout_matches_local(sqs_endpoint: str, s3_bucket: str) -> None:
    client = _s3_client(sqs_endpoint)
    key = S3Archive(client, s3_bucket, "layout/").put(_plan(), cycle_id="c1", label="optimisation-result/")
    listed = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="layout/")["Contents"]}
    assert listed == {f"layout/{object_path(key)}", "layout/cycles/c1.jsonl"}


def test_unknown_packed_type_is_reported() -> None:
    packed = any_pb2.Any(type_url="type.googleapis.com/vpp.v1.NoSuchMessage", value=b"")
    archived = packed.SerializeToString(deterministic=True)
    key = "sha256:" + hashlib.sha256(archived).hexdigest()
    with pytest.raises(ArchiveCorruptError, match="unknown message type"):
        unpack(archived, key)


def test_injected_clock_stamps_entries(tmp_path: Path) -> None:
    stamp = datetime(2021, 1, 1, 0, 0, tzinfo=UTC)
    store = LocalArchive(tmp_path, clock=lambda: stamp)
    store.put(_plan(), cycle_id="c", label="optimisation-result/")
    assert store.list_cycle("c")[0].recorded_at == stamp


@hypothesis_settings(max_examples=40, deadline=None)
@given(prices=st.lists(st.floats(allow_nan=False, width=64), max_size=20), product=st.text(max_size=12))
def test_round_trip_property(prices: list[float], product: str) -> None:
    result = worker_pb2.ForecastResult(product=product, price=prices)
    archived = packed_bytes(result)
    assert unpack(archived, archive_key(result)) == result


def test_open_archive_backends(settings: Settings, sqs_endpoint: str, s3_bucket: str,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    local = open_archive(settings)
    assert isinstance(local, LocalArchive)
    assert local.root == settings.stack.state_dir / "archive"

    monkeypatch.setenv("VPP_S3_ENDPOINT", sqs_endpoint)
    s3_settings = replace(settings, archive=replace(settings.archive, backend="s3", s3_bucket=s3_bucket,
                                                    s3_prefix="opened"))
    remote = open_archive(s3_settings)
    assert isinstance(remote, S3Archive)
    assert remote.get(remote.put(_plan())) == _plan()

    with pytest.raises(ValueError, match="s3_bucket"):
        open_archive(replace(settings, archive=replace(settings.archive, backend="s3", s3_bucket="")))
    with pytest.raises(ValueError, match="unknown archive backend 'ftp'"):
        open_archive(replace(settings, archive=replace(settings.archive, backend="ftp")))
