"""Pure, typed business logic of the platform: no I/O, no configuration reads, no clocks.

Every function here takes its inputs as arguments and returns its outputs, so it can be unit-tested
without a server and replayed bit for bit by the backtester. Three subpackages:

- :mod:`algorithms.common` — what both domains share: NEM time, the battery, content hashes, errors,
  the replay clock.
- :mod:`algorithms.market` — trading one unit in the NEM: as-of market snapshots, price forecasts, the
  dispatch optimisation, bid building, validation and the bid decision, clearing and settlement.
- :mod:`algorithms.fleet` — the virtual power plant: telemetry, aggregation with uncertainty,
  allocation, accounting, local site plans, plan aggregation, the fleet bid, peak shaving.

:mod:`algorithms.registry` names the pure functions the worker pools serve (algorithm name and version).
"""
