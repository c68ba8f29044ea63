"""Push versus poll: how fast a new price-forecast version reaches the fleet, and what it costs on the wire.

``python -m bench.distribution --sites N`` runs, in process and in real time, the fleet gateway's real gRPC
server (:func:`services.fleet_gateway.serve_gateway`, plaintext on loopback) over
``make_site_parameters(N, seed)`` and the simulated sites behind ``K`` concentrators
(:func:`simulator.concentrators.run_concentrators` with an :class:`~simulator.edge_planner.EdgePlannerConfig`: every
site plans its own battery on each version it gets and sends its plan up). Per distribution mode (all sites
push, then all sites poll, each on a fresh gateway and fleet):

1. **publication**: once every stream is connected (and, polling, has made its first poll), a version is
   published (``PublishForecast``). Measured from just before the call: the time until half and until
   99 % of the sites hold it (a concentrator's sites hold it when its stream delivered it), the time
   until 99 % of the sites' plans built on it are stored at the gateway, and, over an observation window
   of two poll intervals, the downlink forecast messages and bytes and the uplink poll messages and bytes;
2. **reconnect storm**: every concentrator drops its stream (``run_concentrators`` stops), a new version
   is published while they are away, and all of them reconnect at once (a new ``run_concentrators`` over the
   same devices, which kept the version they held). Push delivers on the hello (the gateway's catch-up),
   poll on the first poll after connecting. Measured from the reconnection: the same figures, over a window
   that ends once 99 % of the plans are stored (at least one second).

Planning is timed separately: one :func:`simulator.edge_planner.plan_for_sites` call over all ``N`` sites (what
planning one version costs the fleet's devices put together), and the CPU time the concentrators' worker
threads spent planning in each scenario (summed over threads).

Forecast sizes are those of the serialised ``ConnectResponse`` (payload without gRPC/HTTP2 framing); the
forecast is a realistic one: P10/P50/P90 over 24 hours of 5-minute intervals (864 prices).

**The poll interval sets the trade-off**: polling, a version reaches 99 % of the sites after about one poll
interval (the concentrators' phases are spread evenly over it) and the uplink carries
``K × 900 / poll_interval_s`` polls per 15-minute publication whether or not anything changed; push
delivers within milliseconds and sends nothing when nothing changed. The default run uses a **10 s** poll
interval to finish in under three minutes; a device would rather poll every minute or so, which
multiplies the poll-mode delay by six and divides the poll traffic by six. In both modes a version costs
one forecast message per stream, and in a reconnect storm both send one forecast per stream at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import grpc
import numpy as np

from algorithms.fleet.fleet_types import BoolArray, IntArray
from services.fleet_gateway import CHANNEL_OPTIONS, FleetGateway, serve_gateway, wall_clock_ms
from services.health import wait_healthy
from services.security import EdgeSecurity
from settings import FleetSettings
from simulator.concentrators import ConcentratorStats, concentrator_of_rows, run_concentrators
from simulator.edge_planner import EdgePlannerConfig, HeldForecasts, plan_for_sites
from simulator.homes import FleetSimulator, SimulatorConfig
from simulator.population import make_site_parameters
from stack.ports import free_tcp_port
from vpp.v1 import fleet_pb2, fleet_pb2_grpc

MS_PER_MINUTE = 60_000
FORECAST_QUANTILES = (0.1, 0.5, 0.9)
FORECAST_INTERVAL_MINUTES = 5
FORECAST_HORIZON_INTERVALS = 288
"""24 hours of 5-minute intervals."""
PUBLICATION_PERIOD_S = 900.0
"""A version is published every 15 minutes."""
HOLD_SHARE = 0.99
SAMPLE_S = 0.05
"""How often the bench looks at the gateway's plan store and the concentrators' stats (s)."""

MODES = ("push", "poll")


class DistributionBenchError(RuntimeError):
    """The bench could not run a mode (streams never connected)."""


def bench_forecast(version: int, published_at_ms: int, region: str = "SA1") -> fleet_pb2.PriceForecast:
    """A realistic forecast version ($/MWh): P10/P50/P90 over 24 h of 5-minute intervals from the 5-minute
    boundary before ``published_at_ms`` (epoch ms UTC), an evening peak and a midday dip in the P50."""
    step_ms = FORECAST_INTERVAL_MINUTES * MS_PER_MINUTE
    start_ms = (published_at_ms // step_ms) * step_ms
    hours = ((start_ms + np.arange(FORECAST_HORIZON_INTERVALS) * step_ms) / 3_600_000 + 10.0) % 24.0  # AEST
    median = 90.0 - 50.0 * np.exp(-((hours - 13.0) / 2.5) ** 2) + 180.0 * np.exp(-((hours - 18.5) / 1.5) ** 2)
    median = median + 5.0 * version  # each version differs a little
    prices = np.concatenate([0.7 * median, median, 1.6 * median])
    return fleet_pb2.PriceForecast(
        version=version, region=region, published_at_ms=published_at_ms, start_ms=start_ms,
        interval_minutes=FORECAST_INTERVAL_MINUTES, horizon_intervals=FORECAST_HORIZON_INTERVALS,
        quantile=list(FORECAST_QUANTILES), price_per_mwh=prices.tolist(), algorithm="bench-daily-shape")


def time_to_share_s(held_at_ms: dict[int, int], sites_per_concentrator: IntArray, since_ms: int,
                    share: float) -> float:
    """Seconds from ``since_ms`` until ``share`` of the sites hold a version (NaN if they never did).

    Args:
        held_at_ms: concentrator index → when it first held the version (epoch ms UTC).
        sites_per_concentrator: sites served by each concentrator.
        since_ms: the reference time (epoch ms UTC), e.g. the publication.
        share: fraction of all sites (0–1].
    """
    if not held_at_ms:
        return float("nan")
    indices = np.array(list(held_at_ms), dtype=np.int64)
    times_ms = np.array([held_at_ms[index] for index in indices.tolist()], dtype=np.int64)
    order = np.argsort(times_ms, kind="stable")
    covered = np.cumsum(sites_per_concentrator[indices[order]])
    needed = share * float(sites_per_concentrator.sum())
    reached = np.flatnonzero(covered >= needed - 1e-9)
    return float((times_ms[order][reached[0]] - since_ms) / 1000.0) if len(reached) else float("nan")


def share_time_s(received_at_ms: IntArray, done: BoolArray, since_ms: int, share: float) -> float:
    """Seconds from ``since_ms`` until ``share`` of the sites were done (``received_at_ms`` where ``done``);
    NaN if fewer were."""
    needed = int(np.ceil(share * len(done) - 1e-9))
    if needed == 0:
        return 0.0
    times_ms = np.sort(received_at_ms[done])
    if len(times_ms) < needed:
        return float("nan")
    return float((times_ms[needed - 1] - since_ms) / 1000.0)


@dataclass(frozen=True)
class _Counters:
    """The concentrators' wire counters at one moment."""

    forecasts_received: int
    forecast_bytes_received: int
    polls_sent: int
    poll_bytes_sent: int
    plans_sent: int
    plan_bytes_sent: int
    plan_runs: int
    planning_s: float

    @classmethod
    def of(cls, stats: ConcentratorStats) -> _Counters:
        return cls(**{field.name: getattr(stats, field.name) for field in fields(cls)})

    def since(self, earlier: _Counters) -> _Counters:
        return _Counters(**{field.name: getattr(self, field.name) - getattr(earlier, field.name)
                            for field in fields(self)})


@dataclass
class _Fleet:
    """One mode's gateway, simulated devices and running concentrators."""

    gateway: FleetGateway
    simulator: FleetSimulator
    address: str
    held: HeldForecasts
    stats: ConcentratorStats
    stop: asyncio.Event
    run: asyncio.Task[ConcentratorStats] | None = None


def _figures(fleet: _Fleet, version: int, since_ms: int, sites_per_concentrator: IntArray, before: _Counters,
             window_s: float, concentrators: int, poll_interval_s: float, poll: bool) -> dict[str, float]:
    held_at = fleet.stats.version_held_at_ms.get(version, {})
    store = fleet.gateway.distribution.plans
    planned = store.forecast_version >= version
    moved = _Counters.of(fleet.stats).since(before)
    return {
        "hold_p50_s": time_to_share_s(held_at, sites_per_concentrator, since_ms, 0.5),
        "hold_p99_s": time_to_share_s(held_at, sites_per_concentrator, since_ms, HOLD_SHARE),
        "plans_stored_p99_s": share_time_s(store.received_at_ms, planned, since_ms, HOLD_SHARE),
        "window_s": window_s,
        "forecast_messages": float(moved.forecasts_received),
        "forecast_bytes": float(moved.forecast_bytes_received),
        "poll_messages": float(moved.polls_sent),
        "poll_bytes": float(moved.poll_bytes_sent),
        "plan_bytes": float(moved.plan_bytes_sent),
        "polls_per_publication": concentrators * PUBLICATION_PERIOD_S / poll_interval_s if poll else 0.0,
        "planning_cpu_s": moved.planning_s,
    }


async def _wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Wait until ``condition()`` holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(SAMPLE_S)
    return True


def _held_share(fleet: _Fleet, version: int, sites_per_concentrator: IntArray) -> float:
    held_at = fleet.stats.version_held_at_ms.get(version, {})
    return float(sites_per_concentrator[list(held_at)].sum()) / float(sites_per_concentrator.sum())


def _planned_share(fleet: _Fleet, version: int) -> float:
    return float(np.mean(fleet.gateway.distribution.plans.forecast_version >= version))


async def _connect(fleet: _Fleet, concentrators: int, edge: EdgePlannerConfig, poll: bool) -> None:
    """(Re)start the concentrators; return once every stream is connected (and, polling, has polled)."""
    polls_before = fleet.gateway.distribution.counters.polls
    fleet.stop = asyncio.Event()
    fleet.run = asyncio.create_task(run_concentrators(
        fleet.simulator, fleet.address, fleet.stop, concentrator_count=concentrators, stats=fleet.stats,
        security=EdgeSecurity(), edge=edge, poll=poll, held=fleet.held))
    counters = fleet.gateway.distribution.counters
    connected = await _wait_for(
        lambda: len(fleet.gateway.streams) >= concentrators and (not poll or counters.polls >= polls_before
                                                                 + concentrators), 60.0)
    if not connected:
        raise DistributionBenchError(f"only {len(fleet.gateway.streams)} of {concentrators} streams connected")


async def _disconnect(fleet: _Fleet) -> None:
    fleet.stop.set()
    if fleet.run is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await fleet.run
    fleet.run = None
    await _wait_for(lambda: not fleet.gateway.streams, 10.0)


async def _run_mode(mode: str, *, sites: int, concentrators: int, edge: EdgePlannerConfig, seed: int,
                    settle_timeout_s: float) -> dict[str, dict[str, float]]:
    poll = mode == "poll"
    parameters = make_site_parameters(sites, seed)
    gateway = FleetGateway(parameters, FleetSettings(plan_interval_minutes=edge.plan_interval_minutes,
                                                     plan_horizon_intervals=edge.plan_horizon_intervals))
    port = free_tcp_port()
    address = f"127.0.0.1:{port}"
    server_stop = asyncio.Event()
    server = asyncio.create_task(serve_gateway(gateway, port, server_stop, EdgeSecurity()))
    simulator = FleetSimulator(parameters, SimulatorConfig(seed=seed), wall_clock_ms())
    fleet = _Fleet(gateway=gateway, simulator=simulator, address=address, held=HeldForecasts(),
                   stats=ConcentratorStats(), stop=asyncio.Event())
    sites_per_concentrator = np.bincount(concentrator_of_rows(sites, concentrators), minlength=concentrators)
    window_s = 2.0 * edge.poll_interval_s
    results: dict[str, dict[str, float]] = {}
    try:
        await wait_healthy(address, 20.0, EdgeSecurity())
        async with grpc.aio.insecure_channel(address, options=list(CHANNEL_OPTIONS)) as channel:
            stub = fleet_pb2_grpc.FleetGatewayServiceStub(channel)
            await stub.SetDistributionMode(fleet_pb2.SetDistributionModeRequest(
                site_id=parameters.site_ids.tolist(),
                mode=fleet_pb2.DISTRIBUTION_MODE_POLL if poll else fleet_pb2.DISTRIBUTION_MODE_PUSH))
            await _connect(fleet, concentrators, edge, poll)

            # 1. A publication to connected sites.
            before = _Counters.of(fleet.stats)
            published_ms = wall_clock_ms()
            await stub.PublishForecast(fleet_pb2.PublishForecastRequest(forecast=bench_forecast(1, published_ms)))
            await asyncio.sleep(window_s)
            await _wait_for(lambda: _held_share(fleet, 1, sites_per_concentrator) >= HOLD_SHARE
                            and _planned_share(fleet, 1) >= HOLD_SHARE, settle_timeout_s)
            results[mode] = _figures(fleet, 1, published_ms, sites_per_concentrator, before,
                                     (wall_clock_ms() - published_ms) / 1000.0, concentrators,
                                     edge.poll_interval_s, poll)

            # 2. A reconnect storm: everybody away while version 2 is published, then back at once.
            await _disconnect(fleet)
            await stub.PublishForecast(fleet_pb2.PublishForecastRequest(
                forecast=bench_forecast(2, wall_clock_ms())))
            before = _Counters.of(fleet.stats)
            reconnected_ms = wall_clock_ms()
            await _connect(fleet, concentrators, edge, poll)
            await _wait_for(lambda: _held_share(fleet, 2, sites_per_concentrator) >= HOLD_SHARE
                            and _planned_share(fleet, 2) >= HOLD_SHARE, settle_timeout_s)
            await asyncio.sleep(1.0)
            results[f"{mode}_reconnect"] = _figures(fleet, 2, reconnected_ms, sites_per_concentrator, before,
                                                    (wall_clock_ms() - reconnected_ms) / 1000.0, concentrators,
                                                    edge.poll_interval_s, poll)
    finally:
        await _disconnect(fleet)
        server_stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    return results


def planning_figures(sites: int, seed: int, edge: EdgePlannerConfig) -> dict[str, float]:
    """Wall time (s) of one :func:`plan_for_sites` call over ``sites`` sites on a bench forecast."""
    parameters = make_site_parameters(sites, seed)
    now_ms = wall_clock_ms()
    simulator = FleetSimulator(parameters, SimulatorConfig(seed=seed), now_ms)
    started = time.perf_counter()
    plan_for_sites(simulator, np.arange(sites), bench_forecast(1, now_ms), now_ms, edge)
    elapsed_s = time.perf_counter() - started
    return {"sites": float(sites), "plan_s": elapsed_s, "per_site_ms": 1000.0 * elapsed_s / max(sites, 1),
            "horizon_intervals": float(edge.plan_horizon_intervals), "soc_levels": float(edge.soc_levels)}


async def run_distribution_bench_async(sites: int = 10_000, concentrators: int = 20, poll_interval_s: float = 10.0,
                                       *, seed: int = 7, settle_timeout_s: float = 120.0,
                                       edge: EdgePlannerConfig | None = None) -> dict[str, dict[str, float]]:
    """The bench (see the module docstring) in the running event loop; see :func:`run_distribution_bench`."""
    edge = replace(edge or EdgePlannerConfig(), poll_interval_s=poll_interval_s)
    results: dict[str, dict[str, float]] = {"planning": planning_figures(sites, seed, edge)}
    for mode in MODES:
        results.update(await _run_mode(mode, sites=sites, concentrators=concentrators, edge=edge, seed=seed,
                                       settle_timeout_s=settle_timeout_s))
    return results


def run_distribution_bench(sites: int = 10_000, concentrators: int = 20, poll_interval_s: float = 10.0, *,
                           seed: int = 7, settle_timeout_s: float = 120.0,
                           edge: EdgePlannerConfig | None = None) -> dict[str, dict[str, float]]:
    """Push versus poll over the real gateway (see the module docstring), in real time.

    Args:
        sites: simulated homes.
        concentrators: streams (sites multiplexed per stream).
        poll_interval_s: seconds between two polls of a poll-mode concentrator (the bench default, 10 s, is
            shorter than a device's so the run stays short; delays and poll traffic scale with it).
        seed: population and simulator seed.
        settle_timeout_s: longest wait (s) for 99 % of sites to hold a version and store its plans.
        edge: the devices' planner settings (default :class:`EdgePlannerConfig`; its poll interval is
            replaced by ``poll_interval_s``).

    Returns:
        ``{"planning": {...}, "push": {...}, "push_reconnect": {...}, "poll": {...}, "poll_reconnect": {...}}``:
        per scenario ``hold_p50_s`` / ``hold_p99_s`` (s until half / 99 % of sites hold the version),
        ``plans_stored_p99_s`` (s until 99 % of the sites' plans on it are stored at the gateway),
        ``window_s`` (observation window, s), ``forecast_messages`` / ``forecast_bytes`` (downlink),
        ``poll_messages`` / ``poll_bytes`` (uplink), ``plan_bytes`` (uplink plans),
        ``polls_per_publication`` (uplink polls per 15-minute publication at this interval) and
        ``planning_cpu_s`` (the CPU time of the concentrators' planning threads, s); ``planning`` has ``plan_s``
        (one planner call over every site, s) and ``per_site_ms``.
    """
    return asyncio.run(run_distribution_bench_async(sites, concentrators, poll_interval_s, seed=seed,
                                                    settle_timeout_s=settle_timeout_s, edge=edge))


def format_table(results: dict[str, dict[str, float]]) -> str:
    """The bench's figures as a text table (one column per scenario)."""
    scenarios = [name for name in ("push", "poll", "push_reconnect", "poll_reconnect") if name in results]
    rows = [("time to 50 % of sites holding it (s)", "hold_p50_s", "{:.3f}"),
            ("time to 99 % of sites holding it (s)", "hold_p99_s", "{:.3f}"),
            ("time to 99 % of plans stored (s)", "plans_stored_p99_s", "{:.2f}"),
            ("observation window (s)", "window_s", "{:.1f}"),
            ("downlink forecast messages", "forecast_messages", "{:.0f}"),
            ("downlink forecast bytes", "forecast_bytes", "{:,.0f}"),
            ("uplink poll messages", "poll_messages", "{:.0f}"),
            ("uplink poll bytes", "poll_bytes", "{:,.0f}"),
            ("uplink plan bytes", "plan_bytes", "{:,.0f}"),
            ("polls per 15-min publication", "polls_per_publication", "{:,.0f}"),
            ("planning CPU, all threads (s)", "planning_cpu_s", "{:.2f}")]
    width = max(len(label) for label, _, _ in rows)
    lines = [" " * width + "".join(f"{name:>16}" for name in scenarios)]
    for label, key, fmt in rows:
        cells = "".join(f"{fmt.format(results[name][key]):>16}" for name in scenarios)
        lines.append(f"{label:<{width}}{cells}")
    planning = results.get("planning")
    if planning:
        lines.append(f"planning one version for {planning['sites']:,.0f} sites in one call: {planning['plan_s']:.2f} s "
                     f"({planning['per_site_ms']:.3f} ms per site, {planning['horizon_intervals']:.0f} intervals, "
                     f"{planning['soc_levels']:.0f} levels)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.distribution [--sites N] [--concentrators K] [--poll-interval S] [--seed S]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--concentrators", type=int, default=20)
    parser.add_argument("--poll-interval", type=float, default=10.0, help="seconds between polls (poll mode)")
    parser.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args(argv)
    results = run_distribution_bench(arguments.sites, arguments.concentrators, arguments.poll_interval,
                                     seed=arguments.seed)
    print(f"{arguments.sites:,} sites, {arguments.concentrators} concentrators, poll every "
          f"{arguments.poll_interval:g} s (delays and poll traffic scale with the poll interval)")
    print(format_table(results))


if __name__ == "__main__":  # pragma: no cover
    main()
