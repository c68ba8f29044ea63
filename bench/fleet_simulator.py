"""Speed of the fleet simulator at fleet scale: physics steps, telemetry collection, command delivery.

A fleet of ``site_count`` homes (:func:`simulator.population.make_site_parameters`) with the default
:class:`simulator.homes.SimulatorConfig` (5 s reporting, 1 s physics steps, 2 % offline, late, duplicated
and reordered telemetry, lost and late commands) starts at midday on a January day in Adelaide. Figures
are medians of wall time on the calling thread (milliseconds):

- ``setup_ms``: building the simulator (population excluded; the PV profiles are computed first, once per
  process, and not counted);
- ``advance_1s_ms`` / ``advance_5s_ms``: one :meth:`~simulator.homes.FleetSimulator.advance` by 1 s / 5 s;
- ``collect_telemetry_1s_ms`` / ``collect_telemetry_5s_ms``: one
  :meth:`~simulator.homes.FleetSimulator.collect_telemetry` after 1 s / 5 s of readings accumulated (the
  advance itself excluded), with ``readings_per_5s`` the readings one 5 s collection returns;
- ``deliver_setpoints_all_ms``: one :meth:`~simulator.homes.FleetSimulator.deliver_setpoints` of a command
  to every site;
- ``collect_acks_all_ms``: collecting the acknowledgements of that delivery;
- ``realtime_factor``: simulated seconds per wall-clock second when advancing 1 s at a time.

Run ``python -m bench.fleet_simulator [site_count ...]`` (default 10000 100000); it prints the figures.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import pandas as pd

from algorithms.fleet.fleet_types import SetpointBatch
from simulator.homes import FleetSimulator, SimulatorConfig
from simulator.population import make_site_parameters
from simulator.pv import orientation_class_profiles

START_MS = int(pd.Timestamp("2021-01-15 12:00", tz="Australia/Adelaide").value // 1_000_000)
"""Midday on a January (summer) day in Adelaide, epoch ms UTC."""


class _Stopwatch:
    """Wall time of the block it wraps, in milliseconds (``elapsed_ms``)."""

    def __enter__(self) -> _Stopwatch:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.elapsed_ms = (time.perf_counter() - self._started) * 1000


def measure_simulator(site_count: int = 100_000, repeats: int = 5, seed: int = 0) -> dict[str, float]:
    """Time the simulator's operations on ``site_count`` sites (see the module docstring); milliseconds."""
    orientation_class_profiles()
    parameters = make_site_parameters(site_count, seed)
    with _Stopwatch() as setup:
        simulator = FleetSimulator(parameters, SimulatorConfig(seed=seed), START_MS)
    now_ms = START_MS + 10_000
    simulator.collect_telemetry(now_ms)  # fill the pipeline

    samples: dict[str, list[float]] = {name: [] for name in (
        "advance_1s_ms", "collect_telemetry_1s_ms", "advance_5s_ms", "collect_telemetry_5s_ms", "readings_per_5s",
        "deliver_setpoints_all_ms", "collect_acks_all_ms")}
    for step_s in (1, 5):
        for _ in range(repeats):
            now_ms += step_s * 1000
            with _Stopwatch() as advance:
                simulator.advance(now_ms)
            with _Stopwatch() as collect:
                batch = simulator.collect_telemetry(now_ms)
            samples[f"advance_{step_s}s_ms"].append(advance.elapsed_ms)
            samples[f"collect_telemetry_{step_s}s_ms"].append(collect.elapsed_ms)
            if step_s == 5:
                samples["readings_per_5s"].append(batch.reading_count)
    for command_id in range(1, repeats + 1):
        commands = SetpointBatch(
            site_ids=parameters.site_ids, command_id=np.full(site_count, command_id, dtype=np.int64),
            setpoint_kw=np.full(site_count, 2.0), valid_until_ms=np.full(site_count, now_ms + 300_000, dtype=np.int64))
        with _Stopwatch() as deliver:
            simulator.deliver_setpoints(commands, now_ms)
        now_ms += 3000  # most acknowledgements are back within 3 s (log-normal, median 0.5 s)
        simulator.collect_telemetry(now_ms)
        with _Stopwatch() as acks:
            simulator.collect_acks(now_ms)
        samples["deliver_setpoints_all_ms"].append(deliver.elapsed_ms)
        samples["collect_acks_all_ms"].append(acks.elapsed_ms)

    figures = {"site_count": float(site_count), "setup_ms": setup.elapsed_ms}
    figures.update({name: float(statistics.median(values)) for name, values in samples.items()})
    figures["realtime_factor"] = 1000.0 / figures["advance_1s_ms"]
    return figures


def main(arguments: list[str]) -> None:
    """Print the figures for each site count given (default 10 000 and 100 000)."""
    for site_count in [int(argument) for argument in arguments] or [10_000, 100_000]:
        figures = measure_simulator(site_count)
        print(f"{site_count} sites: " + ", ".join(f"{name} {value:.1f}" for name, value in figures.items()
                                                  if name != "site_count"))


if __name__ == "__main__":
    main(sys.argv[1:])
