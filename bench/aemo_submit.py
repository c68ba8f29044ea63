"""``vpp bench aemo-submit``: SubmitBid latency through the bid service's aemo backend.

A real gRPC bid service (aemo backend) over PostgreSQL (``DATABASE_URL``, else the embedded server) submits
over HTTP to the AEMO stand-in (aemo_sandbox, in this process on a thread of its own). Each of ``bids`` bids is
the configured battery's ENERGY bid (GEN and LOAD, the configured ladders) from one interval to the end of its
trading day, as a cycle bids; every bid is new (one validation, one submission row committed before sending,
one HTTP exchange, AEMO's decision recorded). Each bid is then submitted again: the duplicate answer comes
from the platform's record, without AEMO. Figures are wall-clock milliseconds per SubmitBid call, client side.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from rich.console import Console
from rich.table import Table

from aemo_sandbox.rules import UnitDefaults
from aemo_sandbox.server import SandboxClock, SandboxConfig, SandboxServer
from algorithms.common import nem_time
from services import bid_service
from services.health import wait_healthy
from services.security import EdgeSecurity
from settings import Settings
from stack.ports import free_tcp_port
from vpp.v1 import bid_pb2, common_pb2

DEFAULT_BIDS = 50
FIRST_INTERVAL = datetime(2021, 1, 15, 8, 0)  # interval-ending AEST: the bids cover 08:00 .. 04:00 next day
INTERVAL = timedelta(minutes=5)


@dataclass(frozen=True)
class LatencyFigures:
    """Milliseconds per SubmitBid call: median, 95th percentile, min and max over ``calls`` calls."""

    label: str
    calls: int
    median_ms: float
    p95_ms: float
    min_ms: float
    max_ms: float


def latency_figures(label: str, seconds: list[float]) -> LatencyFigures:
    """The figures of ``seconds`` (one entry per call, s)."""
    ms = sorted(1000.0 * s for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return LatencyFigures(label, len(ms), statistics.median(ms), p95, ms[0], ms[-1])


def energy_bid(settings: Settings, unit_id: str, first: datetime, version: int) -> bid_pb2.Bid:
    """The configured battery's ENERGY bid from ``first`` (interval-ending AEST) to the end of its trading day:
    GEN offers the full power in band 5, LOAD nothing; the configured ladders ($/MWh)."""
    day = nem_time.trading_day(first)
    intervals = []
    moment = first
    while nem_time.trading_day(moment) == day:
        intervals.append(moment)
        moment += INTERVAL
    power_mw = settings.battery.power_mw
    ramp = settings.battery.ramp_rate_mw_per_min

    def periods(gen_mw: float) -> list[bid_pb2.PeriodOffer]:
        return [bid_pb2.PeriodOffer(dispatch_interval=nem_time.to_timestamp(t), max_avail_mw=gen_mw,
                                    band_avail_mw=[0.0, 0.0, 0.0, 0.0, gen_mw, 0.0, 0.0, 0.0, 0.0, 0.0],
                                    ramp_up_rate_mw_per_min=ramp, ramp_down_rate_mw_per_min=ramp,
                                    pasa_avail_mw=power_mw) for t in intervals]

    return bid_pb2.Bid(
        unit_id=unit_id, trading_day=day.isoformat(), dispatch_interval=nem_time.to_timestamp(first), version=version,
        entry_type=bid_pb2.ENTRY_TYPE_DAILY,
        offer_time=nem_time.to_timestamp(datetime.combine(day - timedelta(days=1), datetime.min.time())),
        offers=[bid_pb2.ProductOffer(product="ENERGY", direction=common_pb2.DIRECTION_GEN,
                                     band_price=settings.bidding.gen_band_prices, periods=periods(power_mw)),
                bid_pb2.ProductOffer(product="ENERGY", direction=common_pb2.DIRECTION_LOAD,
                                     band_price=settings.bidding.load_band_prices, periods=periods(0.0))])


async def run_aemo_submit_bench(settings: Settings, database_url: str, bids: int) -> list[LatencyFigures]:
    """Time ``bids`` new submissions and their ``bids`` repeats (see the module docstring)."""
    unit_id = f"B{secrets.token_hex(4).upper()}"
    username, password = f"bench-{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    bidding = settings.bidding
    config = SandboxConfig("OPENVPP", username, password, {unit_id: UnitDefaults(
        unit_id, bidding.gen_band_prices, bidding.load_band_prices, bidding.fcas_band_prices)})
    configured = replace(settings, database_url=database_url, battery=replace(settings.battery, unit_id=unit_id),
                         stack=replace(settings.stack, bid_service_port=free_tcp_port()),
                         bid_service=replace(settings.bid_service, backend="aemo"))
    firsts = [FIRST_INTERVAL + INTERVAL * i for i in range(bids)]
    if nem_time.trading_day(firsts[-1]) != nem_time.trading_day(firsts[0]):
        raise ValueError(f"at most {_intervals_left(FIRST_INTERVAL)} bids fit in the benchmark's trading day")
    with SandboxServer(config, SandboxClock.at(FIRST_INTERVAL - timedelta(minutes=10))) as sandbox:
        saved = {name: os.environ.get(name) for name in _ENV}
        os.environ.update({"VPP_AEMO_API_URL": sandbox.url, "VPP_AEMO_PARTICIPANT_ID": "OPENVPP",
                           "VPP_AEMO_API_USER": username, "VPP_AEMO_API_PASSWORD": password})
        stop = asyncio.Event()
        security = EdgeSecurity()
        server = asyncio.create_task(bid_service.serve(configured, stop, security))
        try:
            address = f"127.0.0.1:{configured.stack.bid_service_port}"
            await wait_healthy(address, timeout_s=30, security=security)
            fresh, repeated = [], []
            for version, first in enumerate(firsts, start=1):
                bid = energy_bid(configured, unit_id, first, version)
                started = time.perf_counter()
                answer = await bid_service.submit_bid(address, bid, security=security)
                fresh.append(time.perf_counter() - started)
                if answer.status != bid_pb2.BID_STATUS_ACCEPTED or answer.duplicate:
                    raise RuntimeError(f"bid {answer.bid_id} was not accepted as new: {list(answer.reasons)}")
                started = time.perf_counter()
                again = await bid_service.submit_bid(address, bid, security=security)
                repeated.append(time.perf_counter() - started)
                if not again.duplicate:
                    raise RuntimeError(f"bid {again.bid_id} resubmitted was not answered as a duplicate")
        finally:
            stop.set()
            await server
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return [latency_figures("new bid (validated, recorded, submitted, AEMO's answer recorded)", fresh),
            latency_figures("same bid again (duplicate, from the record)", repeated)]


_ENV = ("VPP_AEMO_API_URL", "VPP_AEMO_PARTICIPANT_ID", "VPP_AEMO_API_USER", "VPP_AEMO_API_PASSWORD")


def _intervals_left(first: datetime) -> int:
    end = datetime.combine(nem_time.trading_day(first) + timedelta(days=1), datetime.min.time()) + timedelta(hours=4)
    return int((end - first) / INTERVAL) + 1


def print_figures(console: Console, figures: list[LatencyFigures], periods: int) -> None:
    """The figures as a table."""
    table = Table(title=f"SubmitBid through the aemo backend (ENERGY GEN + LOAD, up to {periods} periods each)")
    for column in ("call", "calls", "median ms", "p95 ms", "min ms", "max ms"):
        table.add_column(column, justify="left" if column == "call" else "right")
    for f in figures:
        table.add_row(f.label, str(f.calls), f"{f.median_ms:.1f}", f"{f.p95_ms:.1f}", f"{f.min_ms:.1f}",
                      f"{f.max_ms:.1f}")
    console.print(table)


def main(settings: Settings, bids: int) -> int:
    """``vpp bench aemo-submit``: run, print, 0."""
    from models.db import resolve_database_url

    url, embedded = resolve_database_url(settings)
    try:
        figures = asyncio.run(run_aemo_submit_bench(settings, url, bids))
    finally:
        if embedded is not None:
            embedded.stop()
    print_figures(Console(), figures, _intervals_left(FIRST_INTERVAL))
    return 0

