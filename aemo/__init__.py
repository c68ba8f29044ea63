"""AEMO's published market data, read exactly as AEMO publishes it, and the local market store.

An adapter layer: it depends on :mod:`settings`, :mod:`algorithms` (the price tables it fills), numpy, pandas,
pyarrow and the standard library only.

- :mod:`aemo.mms_csv` — AEMO's MMS CSV layout (``C`` / ``I`` / ``D`` rows, several tables per file).
- :mod:`aemo.archive_files` — AEMO's file names and zips (monthly archives, current reports, nested zips).
- :mod:`aemo.tables` — typed schemas of the tables a bidder needs and their normalisation.
- :mod:`aemo.store` — the local columnar market store (parquet by table and month) and its manifest.
- :mod:`aemo.nemweb` — the sync client mirroring NEMWEB (or a local copy of it) into the store.
- :mod:`aemo.live` — the follower of AEMO's live reports: polls the ``Reports/Current`` folders, ingests each new
  report once, tells listeners what became known and when it was published.
- :mod:`aemo.live_market` — the price tables over the live reports held, each value known at its file's publication.
- :mod:`aemo.mms` — DISPATCHPRICE / PREDISPATCHPRICE files (parquet, CSV, MMS CSV, zip) into the price tables
  of :mod:`algorithms.market.prices`.

Every time is naive AEMO market time (AEST, UTC+10, no daylight saving); interval times are
interval-ENDING. Energy prices are $/MWh, FCAS prices $/MW/h, power MW.
"""
