"""Secure edges: TLS, bearer tokens on every service, site authentication at the fleet gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import grpc
import numpy as np
import pytest

from algorithms.fleet.fleet_types import NEVER, AckBatch, TelemetryBatch
from services import market_data
from services.bid_service import get_unit_status
from services.fleet_codec import setpoints_from_proto, telemetry_to_proto
from services.fleet_gateway import (
    CHANNEL_OPTIONS,
    UNAUTHENTICATED_SITE,
    FleetGateway,
    serve_gateway,
    wall_clock_ms,
)
from services.health import SERVER_OPTIONS, add_health, bind_port, wait_healthy
from services.security import (
    SITE_AUTH_WINDOW_MS,
    ChannelPool,
    EdgeConfigError,
    EdgeSecurity,
    SiteAuthenticator,
    SiteAuthError,
    SiteKeys,
    call_channel,
    channel,
    derive_site_key,
    generate_local_tls,
    operator_security,
    prove_sites,
    secure_server,
    site_proof,
)
from settings import FleetSettings, Settings
from simulator.concentrators import ConcentratorStats, run_concentrators
from simulator.homes import FleetSimulator, SimulatorConfig
from simulator.population import make_site_parameters
from stack.supervisor import FLEET_GATEWAY, FLEET_SIMULATOR, LocalStack
from tests.conftest import free_port
from vpp.v1 import bid_pb2_grpc, fleet_pb2, fleet_pb2_grpc

T0 = 1_750_000_000_000
FLEET_SECRET = b"fleet-secret-for-tests-0123456789"
OPERATOR_TOKEN = "operator-token-0123456789abcdef"
EDGE_TOKEN = "edge-token-0123456789abcdefghij"
TOKENS = (("operator", OPERATOR_TOKEN), ("concentrator-a", EDGE_TOKEN))


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = T0

    def __call__(self) -> int:
        return self.now_ms


def _telemetry(site_ids: list[str], at_ms: int, power_kw: float = 1.0) -> TelemetryBatch:
    n = len(site_ids)
    return TelemetryBatch(site_ids=np.array(site_ids), sequence=np.ones(n, dtype=np.int64),
                          measured_at_ms=np.full(n, at_ms, dtype=np.int64), battery_power_kw=np.full(n, power_kw),
                          state_of_charge_pct=np.full(n, 60.0), pv_power_kw=np.zeros(n), load_power_kw=np.ones(n))


def _authenticated_gateway(site_count: int = 10) -> tuple[FleetGateway, FakeClock]:
    clock = FakeClock()
    gateway = FleetGateway(make_site_parameters(site_count, 5), FleetSettings(), clock=clock,
                           site_auth=SiteAuthenticator(SiteKeys(fleet_secret=FLEET_SECRET)))
    return gateway, clock


def _hello_proofs(site_ids: list[str], concentrator_id: str, issued_at_ms: int,
                  secret: bytes = FLEET_SECRET) -> list[bytes]:
    return prove_sites(SiteKeys(fleet_secret=secret), concentrator_id, site_ids, issued_at_ms)


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_local_tls(tmp_path_factory.mktemp("tls"))


# --------------------------------------------------------------------------------------------------
# Site authentication, without a server


def test_a_concentrator_authenticated_for_sites_a_cannot_speak_for_site_b() -> None:
    gateway, _ = _authenticated_gateway()
    sites = gateway.parameters.site_ids.tolist()
    sites_a, sites_b = sites[:5], sites[5:]
    stream_a, queue_a = gateway.open_stream(np.array([], dtype=np.str_))
    stream_b, queue_b = gateway.open_stream(np.array([], dtype=np.str_))
    outcome_a = gateway.authenticate_sites(stream_a, "c-a", np.array(sites_a), T0,
                                           _hello_proofs(sites_a, "c-a", T0))
    outcome_b = gateway.authenticate_sites(stream_b, "c-b", np.array(sites_b), T0,
                                           _hello_proofs(sites_b, "c-b", T0))
    assert len(outcome_a.authenticated) == 5 and len(outcome_a.refused) == 0
    assert len(outcome_b.authenticated) == 5

    # A names B's sites (telemetry, a plain route request): nothing of B changes.
    gateway.route_sites(stream_a, np.array(sites_b))
    ingested = gateway.ingest_from(stream_a, _telemetry(sites_a[:2] + sites_b[:3], T0 - 500, 2.0))
    rows_b = np.searchsorted(gateway.parameters.site_ids, sites_b[:3])
    assert (gateway.state.measured_at_ms[rows_b] == NEVER).all()
    assert int(ingested.result.applied.sum()) == 2
    assert ingested.receipt().quarantined[UNAUTHENTICATED_SITE] == 3
    assert gateway.counters.quarantined[UNAUTHENTICATED_SITE] == 3 and gateway.counters.readings == 5
    assert {r.reason for r in gateway.recent_quarantine} == {UNAUTHENTICATED_SITE}
    # Telemetry from no stream at all is refused too.
    gateway.ingest(_telemetry(sites_b[:1], T0 - 400))
    assert gateway.state.measured_at_ms[rows_b[0]] == NEVER

    # B's own stream reports B; an event over every site sends each stream only its own sites.
    gateway.ingest_from(stream_b, _telemetry(sites_b, T0 - 500, 1.0))
    gateway.ingest_from(stream_a, _telemetry(sites_a, T0 - 400, 1.0))
    gateway.start_event("e1", np.array(sites), 0.02, T0, T0 + 60_000)
    gateway.control_event("e1", 0.02)
    sent_a = {site for message in _drain(queue_a) for site in setpoints_from_proto(message.setpoints).site_ids}
    sent_b = {site for message in _drain(queue_b) for site in setpoints_from_proto(message.setpoints).site_ids}
    assert sent_a and sent_a <= set(sites_a)
    assert sent_b and sent_b <= set(sites_b)

    # A acknowledges B's commands: ignored.
    book = gateway.events["e1"].book
    ignored = gateway.acknowledge(AckBatch(site_ids=np.array(sites_b), command_id=book.command_id[5:],
                                           acknowledged_at_ms=np.full(5, T0 + 10, dtype=np.int64),
                                           accepted=np.ones(5, dtype=np.bool_)), stream_a)
    assert ignored == 5 and gateway.counters.unauthenticated_acks == 5
    assert not gateway.events["e1"].book.acknowledged[5:].any()
    assert gateway.acknowledge(AckBatch(site_ids=np.array(sites_b), command_id=book.command_id[5:],
                                        acknowledged_at_ms=np.full(5, T0 + 10, dtype=np.int64),
                                        accepted=np.ones(5, dtype=np.bool_)), stream_b) == 0
    assert gateway.events["e1"].book.acknowledged[5:].all()


def _drain(queue: asyncio.Queue[fleet_pb2.ConnectResponse]) -> list[fleet_pb2.ConnectResponse]:
    messages = []
    while not queue.empty():
        messages.append(queue.get_nowait())
    return messages


def test_forged_replayed_expired_and_unknown_site_proofs_are_refused() -> None:
    gateway, clock = _authenticated_gateway()
    sites = gateway.parameters.site_ids.tolist()[:3]
    stream, _ = gateway.open_stream(np.array([], dtype=np.str_))
    forged = gateway.authenticate_sites(stream, "c-x", np.array(sites), T0,
                                        _hello_proofs(sites, "c-x", T0, secret=b"another-secret-0123456789abc"))
    assert forged.refused.tolist() == sites
    # A proof for another concentrator id, or another time, does not transfer.
    assert len(gateway.authenticate_sites(stream, "c-x", np.array(sites), T0,
                                          _hello_proofs(sites, "c-y", T0)).authenticated) == 0
    assert len(gateway.authenticate_sites(stream, "c-x", np.array(sites), T0,
                                          _hello_proofs(sites, "c-x", T0 + 1)).authenticated) == 0
    good = _hello_proofs(sites, "c-x", T0)
    assert len(gateway.authenticate_sites(stream, "c-x", np.array(sites), T0, good).authenticated) == 3
    replayed = gateway.authenticate_sites(stream, "c-x", np.array(sites), T0, good)
    assert len(replayed.authenticated) == 0
    clock.now_ms = T0 + SITE_AUTH_WINDOW_MS + 1
    late = T0
    assert len(gateway.authenticate_sites(stream, "c-x", np.array(sites), late,
                                          _hello_proofs(sites, "c-x", late)).authenticated) == 0
    unknown = ["site-999999"]
    assert gateway.authenticate_sites(stream, "c-x", np.array(unknown), clock.now_ms,
                                      _hello_proofs(unknown, "c-x", clock.now_ms)).refused.tolist() == unknown
    assert gateway.counters.refused_site_auth == 3 + 3 + 3 + 3 + 3 + 1
    with pytest.raises(SiteAuthError, match="2 site_proof values for 3 site_id values"):
        gateway.authenticate_sites(stream, "c-x", np.array(sites), clock.now_ms, good[:2])


def test_site_keys_derive_per_site_and_explicit_keys_win() -> None:
    keys = SiteKeys(fleet_secret=FLEET_SECRET, table={"site-1": b"k" * 32})
    assert keys.key_of("site-1") == b"k" * 32
    assert keys.key_of("site-2") == derive_site_key(FLEET_SECRET, "site-2") != derive_site_key(FLEET_SECRET, "site-3")
    assert SiteKeys().key_of("site-2") is None
    assert site_proof(b"k" * 32, "c", "site-1", 5) != site_proof(b"k" * 32, "c", "site-1", 6)
    assert "fleet-secret" not in repr(keys) and "kkkk" not in repr(keys)


def test_the_open_gateway_serves_whatever_a_stream_names() -> None:
    gateway = FleetGateway(make_site_parameters(4, 5), FleetSettings(), clock=FakeClock())
    sites = gateway.parameters.site_ids.tolist()
    stream, _ = gateway.open_stream(np.array(sites[:2]))
    result = gateway.ingest_from(stream, _telemetry(sites, T0 - 500))
    assert int(result.result.applied.sum()) == 4 and result.unauthenticated.reading_count == 0


# --------------------------------------------------------------------------------------------------
# Configuration and local material


def test_environment_parsing_and_errors_never_show_secrets(tmp_path: Path) -> None:
    security = EdgeSecurity.from_environment({
        "VPP_TLS_CERT_DIR": str(tmp_path), "VPP_GRPC_TOKENS": f"operator:{OPERATOR_TOKEN}, concentrator-a:{EDGE_TOKEN}",
        "VPP_GRPC_TOKEN": OPERATOR_TOKEN, "VPP_BIND_HOST": "0.0.0.0",
        "VPP_FLEET_SITE_SECRET": FLEET_SECRET.decode()})
    assert security.tls and security.bind_host == "0.0.0.0"
    assert dict(security.accepted_tokens) == dict(TOKENS)
    assert security.site_authenticator() is not None
    assert OPERATOR_TOKEN not in repr(security) and FLEET_SECRET.decode() not in repr(security)
    assert EdgeSecurity.from_environment({}) == EdgeSecurity()
    assert EdgeSecurity.from_environment({}).site_authenticator() is None
    with pytest.raises(EdgeConfigError, match="entry 2") as bad:
        EdgeSecurity.from_environment({"VPP_GRPC_TOKENS": f"operator:{OPERATOR_TOKEN},short:abc"})
    assert OPERATOR_TOKEN not in str(bad.value)
    with pytest.raises(EdgeConfigError, match="share a token"):
        EdgeSecurity.from_environment({"VPP_GRPC_TOKENS": f"a:{OPERATOR_TOKEN},b:{OPERATOR_TOKEN}"})
    keys_file = tmp_path / "site-keys"
    keys_file.write_text(f"# provisioned keys\nsite-1:{(b'x' * 32).hex()}\n")
    from_file = EdgeSecurity.from_environment({"VPP_FLEET_SITE_KEYS_FILE": str(keys_file)})
    assert from_file.site_keys is not None and from_file.site_keys.key_of("site-1") == b"x" * 32
    keys_file.write_text("site-1:nothex\n")
    with pytest.raises(EdgeConfigError, match="line 1"):
        EdgeSecurity.from_environment({"VPP_FLEET_SITE_KEYS_FILE": str(keys_file)})


def test_vpp_up_generates_private_material_and_gives_each_child_only_what_it_needs(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VPP_TLS_CERT_DIR", "VPP_GRPC_TOKENS", "VPP_GRPC_TOKEN", "VPP_FLEET_SITE_SECRET",
                 "VPP_FLEET_SITE_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    stack = LocalStack(settings, parts={"market-data", "forecast", "temporal-worker", FLEET_GATEWAY,
                                        FLEET_SIMULATOR, "vpp-worker"})
    stack._prepare_edge()
    children = {child.name: child.env or {} for child in stack._child_processes()}
    tls = settings.stack.state_dir / "tls"
    assert {path.name for path in tls.iterdir()} == {"ca.pem", "server.pem", "server-key.pem", "operator.token"}
    assert stat.S_IMODE((tls / "server-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    assert "VPP_GRPC_TOKENS" in children["market-data"] and "VPP_FLEET_SITE_SECRET" not in children["market-data"]
    assert children[FLEET_GATEWAY]["VPP_FLEET_SITE_SECRET"] == children[FLEET_SIMULATOR]["VPP_FLEET_SITE_SECRET"]
    assert "VPP_GRPC_TOKENS" not in children[FLEET_SIMULATOR]
    simulator = EdgeSecurity.from_environment(children[FLEET_SIMULATOR])
    gateway = EdgeSecurity.from_environment(children[FLEET_GATEWAY])
    assert dict(gateway.accepted_tokens)["concentrator-simulator"] == simulator.client_token
    assert children["temporal-worker"]["VPP_GRPC_TOKEN"] != children["vpp-worker"]["VPP_GRPC_TOKEN"]
    assert not {"VPP_TLS_CERT_DIR", "VPP_GRPC_TOKEN", "VPP_GRPC_TOKENS"} & set(children["forecast-1"])
    operator = operator_security(settings.stack.state_dir, environ={})
    assert operator.tls_dir == tls and operator.client_token == dict(gateway.accepted_tokens)["operator"]


# --------------------------------------------------------------------------------------------------
# Over gRPC


@contextlib.asynccontextmanager
async def _gateway_server(gateway: FleetGateway, security: EdgeSecurity,
                          port: int | None = None) -> AsyncIterator[str]:
    port = port if port is not None else free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_gateway(gateway, port, stop, security))
    address = f"127.0.0.1:{port}"
    try:
        await wait_healthy(address, 20.0, replace(security, client_token=None))  # health needs no token
        yield address
    finally:
        stop.set()
        await task


async def _stats(address: str, security: EdgeSecurity) -> fleet_pb2.GetIngestStatsResponse:
    async with channel(address, security, CHANNEL_OPTIONS) as gateway_channel:
        stub = fleet_pb2_grpc.FleetGatewayServiceStub(gateway_channel)
        response: fleet_pb2.GetIngestStatsResponse = await stub.GetIngestStats(
            fleet_pb2.GetIngestStatsRequest(), timeout=5)
        return response


async def test_tls_works_with_the_generated_ca_and_fails_without_it(tls_dir: Path, tmp_path: Path) -> None:
    server_security = EdgeSecurity(tls_dir=tls_dir)
    gateway = FleetGateway(make_site_parameters(3, 5), FleetSettings())
    async with _gateway_server(gateway, server_security) as address:
        assert (await _stats(address, EdgeSecurity(tls_dir=tls_dir))).readings == 0
        with pytest.raises(grpc.aio.AioRpcError) as plaintext:
            await _stats(address, EdgeSecurity())
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
        other_ca = generate_local_tls(tmp_path / "other")
        with pytest.raises(grpc.aio.AioRpcError) as untrusted:
            await _stats(address, EdgeSecurity(tls_dir=other_ca))
        assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_channel_pool_keeps_one_tls_channel_per_address_for_every_call(tls_dir: Path) -> None:
    """A ChannelPool calls on one open TLS channel per address (one handshake, not one per call), answers as a
    channel per call does, and after close() makes a new one."""
    gateway = FleetGateway(make_site_parameters(3, 5), FleetSettings())
    async with _gateway_server(gateway, EdgeSecurity(tls_dir=tls_dir)) as address:
        pool = ChannelPool(EdgeSecurity(tls_dir=tls_dir))

        async def pooled_stats() -> fleet_pb2.GetIngestStatsResponse:
            async with call_channel(address, channels=pool) as pooled:
                stub = fleet_pb2_grpc.FleetGatewayServiceStub(pooled)
                response: fleet_pb2.GetIngestStatsResponse = await stub.GetIngestStats(
                    fleet_pb2.GetIngestStatsRequest(), timeout=5)
                return response

        first = pool.channel(address)
        answers = [await pooled_stats() for _ in range(3)]
        assert pool.open_channels() == 1 and pool.channel(address) is first
        assert first.get_state() == grpc.ChannelConnectivity.READY  # still open after the calls
        assert answers == [await _stats(address, EdgeSecurity(tls_dir=tls_dir))] * 3
        await pool.close()
        assert pool.open_channels() == 0
        assert (await pooled_stats()).readings == 0 and pool.channel(address) is not first
        await pool.close()
        with pytest.raises(grpc.aio.AioRpcError) as untrusted:  # the pool's channels use the pool's trust
            async with call_channel(address, channels=ChannelPool(EdgeSecurity())) as plaintext:
                await fleet_pb2_grpc.FleetGatewayServiceStub(plaintext).GetIngestStats(
                    fleet_pb2.GetIngestStatsRequest(), timeout=5)
        assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_pooled_channel_that_finds_no_server_is_dropped_and_the_next_call_dials_afresh(tls_dir: Path) -> None:
    """UNAVAILABLE (nothing listening yet, or a server restarting) drops the pooled channel: once the server is
    up the next call connects at once instead of waiting out the failed channel's reconnect back-off."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    pool = ChannelPool(EdgeSecurity(tls_dir=tls_dir))

    async def stats() -> fleet_pb2.GetIngestStatsResponse:
        async with call_channel(address, channels=pool) as pooled:
            response: fleet_pb2.GetIngestStatsResponse = await fleet_pb2_grpc.FleetGatewayServiceStub(
                pooled).GetIngestStats(fleet_pb2.GetIngestStatsRequest(), timeout=5)
            return response

    with pytest.raises(grpc.aio.AioRpcError) as down:
        await stats()
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE and pool.open_channels() == 0
    gateway = FleetGateway(make_site_parameters(3, 5), FleetSettings())
    async with _gateway_server(gateway, EdgeSecurity(tls_dir=tls_dir), port=port):
        assert (await stats()).readings == 0 and pool.open_channels() == 1
    await pool.close()


async def test_missing_or_wrong_tokens_are_unauthenticated_on_every_service_but_health(
        tls_dir: Path, settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = EdgeSecurity(tls_dir=tls_dir, accepted_tokens=TOKENS)
    operator = EdgeSecurity(tls_dir=tls_dir, client_token=OPERATOR_TOKEN)
    nobody = EdgeSecurity(tls_dir=tls_dir)
    stranger = EdgeSecurity(tls_dir=tls_dir, client_token="wrong-token-0123456789abcdefgh")
    edge = EdgeSecurity(tls_dir=tls_dir, client_token=EDGE_TOKEN)

    # Fleet gateway.
    gateway = FleetGateway(make_site_parameters(3, 5), FleetSettings())
    async with _gateway_server(gateway, server) as address:
        assert (await _stats(address, operator)).connected_streams == 0
        for client in (nobody, stranger):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _stats(address, client)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "bearer token" in (refused.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as edge_reads:
            await _stats(address, edge)
        assert edge_reads.value.code() == grpc.StatusCode.PERMISSION_DENIED
        async with channel(address, nobody, CHANNEL_OPTIONS) as anonymous:
            stream = fleet_pb2_grpc.FleetGatewayServiceStub(anonymous).Connect(_hello_only())
            with pytest.raises(grpc.aio.AioRpcError) as anonymous_stream:
                async for _ in stream:
                    pass
            assert anonymous_stream.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # Market data (the real server).
    port = free_port()
    stop = asyncio.Event()
    configured = replace(settings, stack=replace(settings.stack, market_data_port=port))
    task = asyncio.create_task(market_data.serve(configured, stop, server))
    address = f"127.0.0.1:{port}"
    try:
        await wait_healthy(address, 30.0, nobody)
        as_of = datetime(2021, 1, 15, 17, 30, 25)
        snapshot = await market_data.fetch_snapshot(address, "SA1", datetime(2021, 1, 15, 17, 35), as_of,
                                                    history_intervals=3, security=operator)
        assert snapshot.region == "SA1"
        for client in (nobody, stranger):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await market_data.fetch_snapshot(address, "SA1", datetime(2021, 1, 15, 17, 35), as_of,
                                                 security=client)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        stop.set()
        await task

    # Bids (the service's interface behind the same server set-up; the servicer itself is not reached).
    bids = secure_server(server, SERVER_OPTIONS)
    bid_pb2_grpc.add_BidServiceServicer_to_server(bid_pb2_grpc.BidServiceServicer(), bids)  # type: ignore[abstract]
    add_health(bids, ["vpp.v1.BidService"])
    address = bind_port(bids, free_port(), "bid service", security=server)
    await bids.start()
    try:
        await wait_healthy(address, 20.0, nobody)
        with pytest.raises(grpc.aio.AioRpcError) as passed:
            await get_unit_status(address, "HPR1", security=operator)
        assert passed.value.code() == grpc.StatusCode.UNIMPLEMENTED  # authenticated: reached the servicer
        for client in (nobody, stranger):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await get_unit_status(address, "HPR1", security=client)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await bids.stop(grace=0.5)

    assert "refused" in caplog.text
    for secret in (OPERATOR_TOKEN, EDGE_TOKEN, "wrong-token-0123456789abcdefgh"):
        assert secret not in caplog.text


async def _hello_only() -> AsyncIterator[fleet_pb2.ConnectRequest]:
    yield fleet_pb2.ConnectRequest(hello=fleet_pb2.ConcentratorHello(concentrator_id="c", site_id=[]))
    await asyncio.sleep(0.5)


async def test_a_stream_with_forged_proofs_is_refused_and_a_valid_one_cannot_report_other_sites(
        tls_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = FleetGateway(make_site_parameters(6, 5), FleetSettings(),
                           site_auth=SiteAuthenticator(SiteKeys(fleet_secret=FLEET_SECRET)))
    sites = gateway.parameters.site_ids.tolist()
    server = EdgeSecurity(tls_dir=tls_dir, accepted_tokens=TOKENS)
    edge = EdgeSecurity(tls_dir=tls_dir, client_token=EDGE_TOKEN)
    now = int(datetime.now().timestamp() * 1000)

    async def uplink(proofs: list[bytes], telemetry_sites: list[str]) -> AsyncIterator[fleet_pb2.ConnectRequest]:
        yield fleet_pb2.ConnectRequest(hello=fleet_pb2.ConcentratorHello(
            concentrator_id="concentrator-a", site_id=sites[:3], issued_at_ms=now, site_proof=proofs))
        yield fleet_pb2.ConnectRequest(telemetry=telemetry_to_proto(_telemetry(telemetry_sites, now - 500)))
        await asyncio.sleep(0.3)

    forged = _hello_proofs(sites[:3], "concentrator-a", now, secret=b"guessed-secret-0123456789abcdef")
    async with _gateway_server(gateway, server) as address, \
            channel(address, edge, CHANNEL_OPTIONS) as edge_channel:
        stub = fleet_pb2_grpc.FleetGatewayServiceStub(edge_channel)
        answers: list[fleet_pb2.ConnectResponse] = []
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for response in stub.Connect(uplink(forged, sites[:1])):
                answers.append(response)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert list(answers[0].site_auth.refused_site_id) == sites[:3]
        assert (gateway.state.measured_at_ms == NEVER).all()

        valid = _hello_proofs(sites[:3], "concentrator-a", now)
        receipts = [response async for response in stub.Connect(uplink(valid, sites[:2] + sites[4:]))]
    assert receipts[0].site_auth.authenticated == 3
    assert receipts[1].receipt.applied == 2
    assert dict(receipts[1].receipt.quarantined) == {UNAUTHENTICATED_SITE: 2}
    assert (gateway.state.measured_at_ms[4:] == NEVER).all()
    assert gateway.counters.refused_site_auth == 3
    for secret in (EDGE_TOKEN, FLEET_SECRET.decode(), *(proof.hex() for proof in forged + valid)):
        assert secret not in caplog.text


async def test_simulated_concentrators_prove_their_sites_over_tls_with_their_token(tls_dir: Path) -> None:
    parameters = make_site_parameters(40, 3)
    gateway = FleetGateway(parameters, FleetSettings(),
                           site_auth=SiteAuthenticator(SiteKeys(fleet_secret=FLEET_SECRET)))
    server = EdgeSecurity(tls_dir=tls_dir, accepted_tokens=TOKENS)
    edge = EdgeSecurity(tls_dir=tls_dir, client_token=EDGE_TOKEN, site_keys=SiteKeys(fleet_secret=FLEET_SECRET))
    simulator = FleetSimulator(parameters, SimulatorConfig(seed=3), wall_clock_ms())
    stats = ConcentratorStats()
    stop = asyncio.Event()
    async with _gateway_server(gateway, server) as address:
        running = asyncio.create_task(run_concentrators(simulator, address, stop, concentrator_count=2,
                                                        tick_s=0.2, stats=stats, security=edge))
        for _ in range(100):
            await asyncio.sleep(0.1)
            if (gateway.state.measured_at_ms != NEVER).all():
                break
        stop.set()
        await running
    assert stats.sites_authenticated == 40 and stats.sites_refused == 0
    assert (gateway.state.measured_at_ms != NEVER).all()
    assert UNAUTHENTICATED_SITE not in gateway.counters.quarantined
