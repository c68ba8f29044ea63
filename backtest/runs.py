"""Backtest runs: inputs, period, a deterministic run id, execution and the results folder.

A *run* is one strategy (:mod:`backtest.strategy`) replayed by :func:`backtest.engine.run_backtest` over
one region and period of historical MMS data. Everything that decides its result is written down:

* the data files and their sha256 (``--data``: a folder, or DISPATCHPRICE and PREDISPATCHPRICE files,
  as :mod:`aemo.mms` reads them: parquet, CSV, raw MMS CSV, zipped CSV);
* the period (market time, AEST; the run bids every dispatch interval ending in ``(start, end]``);
* the strategy (parts by name and version, every parameter), the effective settings and their sha256;
* the code version: ``git describe --tags --always --dirty`` of the source tree, else the package version.

**Run id.** Deterministic: ``<region>-<start YYYYmmddTHHMM>-<intervals>-<sha256 of the manifest, 10 hex>``
where the manifest is the canonical JSON of region, period, strategy, data hashes (not paths), settings
hash and code version. The same inputs and versions give the same id (and, the engine being
deterministic, the same ``summary.json`` and ``ledger.parquet`` bytes); running it again replaces the
folder. A tree with uncommitted changes is marked ``-dirty`` in the code version, which then does not pin
the code.

**Results folder** ``<root>/<run id>/`` (root ``backtests`` by default): ``summary.json`` (deterministic:
inputs, parameters, revenue, perfect foresight, capture, forecast skill, reproduce command),
``ledger.parquet`` (one row per interval, see :mod:`backtest.ledger`), ``timing.json`` (wall time,
decisions per second, time per stage, when it ran: everything that is not deterministic), PNG plots and
``report.html`` (:mod:`backtest.report`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aemo.mms import REGION_SUM_TABLE, load_dispatch_prices, load_predispatch_prices, load_region_enablement
from aemo.price_thresholds import read_price_thresholds, with_price_thresholds
from aemo.store import MANIFEST_NAME, MarketStore
from aemo.store_prices import StoreCoverageError, describe_holdings, held_dispatch, held_span, load_store_prices
from algorithms.common.nem_time import trading_day
from algorithms.market.prices import DispatchPrices, PredispatchPrices
from backtest.engine import (
    BacktestConfig,
    BacktestError,
    BacktestResult,
    BenchmarkSolve,
    depth_caps_window,
    end_of_run_adjustment,
    market_prices,
    perfect_foresight_revenue,
    run_backtest,
)
from backtest.ledger import (
    LeadSkill,
    backtest_ledger,
    contiguous_runs,
    forecast_skill_by_lead,
    perfect_foresight_ledger,
    result_leads,
    result_quantiles,
)
from backtest.strategy import Strategy, StrategyError, strategy_from_dict
from settings import REPO_ROOT, Settings

SUMMARY_FILE = "summary.json"
LEDGER_FILE = "ledger.parquet"
TIMING_FILE = "timing.json"
REPORT_FILE = "report.html"
DEFAULT_ROOT = Path("backtests")
SUMMARY_FORMAT = 1
INTERVAL = timedelta(minutes=5)
INTERVALS_PER_DAY = 288
DISPATCH_TABLE = "DISPATCHPRICE"
PREDISPATCH_TABLE = "PREDISPATCHPRICE"
# Optional: AEMO's price limits, used instead of the configured ones where they cover a trading day.
THRESHOLDS_TABLE = "MARKET_PRICE_THRESHOLDS"
# Preferred file types in a data folder, as aemo.mms chooses them.
_SUFFIX_PREFERENCE = (".parquet", ".csv", ".zip")
_HASH_CHUNK = 1 << 20
_ID_HASH_CHARS = 10
PERFECT_INFORMATION_SOURCE = "actual"
FORECAST_SOURCE_KEY = "forecast_source"
# Where a run's market data comes from: files (--data, or the configured data folder) or the market store.
FILES_ORIGIN = "files"
STORE_ORIGIN = "store"
DATA_CHOICES = ("auto", FILES_ORIGIN, STORE_ORIGIN)

Progress = Callable[[int, int], None]


class RunError(ValueError):
    """A run that cannot be made, found or read as asked; the message says why."""


# --------------------------------------------------------------------------------------------------
# Inputs: data files, code version, settings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFile:
    """One MMS file a run read: absolute path, table, sha256 (hex) and size (bytes). For data from the
    market store, ``path`` is the store folder joined with the source file's name as AEMO published it
    and ``identity`` the file's identity in the store's manifest (its name without the publication part)."""

    path: Path
    table: str
    sha256: str
    size_bytes: int
    identity: str | None = None


@dataclass(frozen=True, eq=False)
class MarketInputs:
    """The MMS tables of a run, the files they came from and where they were read: the ``--data`` paths as
    given (``origin`` files) or the market store's folder (``origin`` store; ``span`` the intervals loaded,
    AEST, and ``regions`` the regions)."""

    dispatch: DispatchPrices
    predispatch: PredispatchPrices
    files: tuple[DataFile, ...]
    sources: tuple[Path, ...]
    # MARKET_PRICE_THRESHOLDS rows found among the data (None: the configured price limits alone).
    price_thresholds: pd.DataFrame | None = None
    origin: str = FILES_ORIGIN
    span: tuple[datetime, datetime] | None = None
    regions: tuple[str, ...] = ()

    @property
    def has_predispatch(self) -> bool:
        """Whether AEMO's pre-dispatch forecasts are part of the data."""
        return not self.predispatch.is_empty


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for chunk in iter(lambda: stream.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def table_of(name: str) -> str | None:
    """The MMS table a file name says it holds (PREDISPATCHPRICE / DISPATCHPRICE / MARKET_PRICE_THRESHOLDS /
    DISPATCHREGIONSUM), or None."""
    upper = name.upper()
    if THRESHOLDS_TABLE in upper:
        return THRESHOLDS_TABLE
    if REGION_SUM_TABLE in upper:
        return REGION_SUM_TABLE
    if PREDISPATCH_TABLE in upper:
        return PREDISPATCH_TABLE
    if DISPATCH_TABLE in upper:
        return DISPATCH_TABLE
    return None


def _folder_files(folder: Path, table: str) -> list[Path]:
    """The files of ``table`` a folder holds, of the preferred type, sorted (as aemo.mms picks them)."""
    candidates = [child for child in folder.iterdir() if child.is_file() and table_of(child.name) == table]
    for suffix in _SUFFIX_PREFERENCE:
        chosen = sorted(child for child in candidates if child.suffix.lower() == suffix)
        if chosen:
            return chosen
    return []


def data_files(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """The DISPATCHPRICE and PREDISPATCHPRICE files of ``paths`` (folders and/or files), absolute and in
    order, and any MARKET_PRICE_THRESHOLDS and DISPATCHREGIONSUM (market depth) files; RunError for a path
    that does not exist, a file whose name names none of the tables, or no DISPATCHPRICE file
    (PREDISPATCHPRICE is optional: without it the strategy
    plans on its own; MARKET_PRICE_THRESHOLDS too: without it the configured price limits apply)."""
    if not paths:
        raise RunError("no --data given")
    tables: dict[str, list[Path]] = {DISPATCH_TABLE: [], PREDISPATCH_TABLE: [], THRESHOLDS_TABLE: [],
                                     REGION_SUM_TABLE: []}
    for given in paths:
        path = Path(given).expanduser().resolve()
        if not path.exists():
            raise RunError(f"--data {given}: no such file or folder")
        if path.is_dir():
            for table, files in tables.items():
                files.extend(f for f in _folder_files(path, table) if f not in files)
            continue
        named = table_of(path.name)
        if named is None:
            raise RunError(f"--data {given}: cannot tell which MMS table it holds (its name must contain "
                           f"{DISPATCH_TABLE} or {PREDISPATCH_TABLE})")
        if path not in tables[named]:
            tables[named].append(path)
    if not tables[DISPATCH_TABLE]:
        shown = ", ".join(str(p) for p in paths)
        raise RunError(f"--data {shown}: no {DISPATCH_TABLE} file (.parquet, .csv or .zip with {DISPATCH_TABLE} "
                       "in its name)")
    return tables


@contextmanager
def _as_one_path(files: Sequence[Path], table: str) -> Iterator[Path]:
    """A path aemo.mms reads as exactly ``files``: the file itself, or a temporary folder linking them."""
    if len(files) == 1:
        yield files[0]
        return
    suffixes = {f.suffix.lower() for f in files}
    if len(suffixes) > 1:
        raise RunError(f"{table} files of different types ({', '.join(sorted(suffixes))}): give one type")
    with tempfile.TemporaryDirectory(prefix="vpp-backtest-") as folder:
        for k, file in enumerate(files):
            os.symlink(file, Path(folder) / f"{k:04d}_{table}{file.suffix.lower()}")
        yield Path(folder)


def load_inputs(paths: Sequence[Path]) -> MarketInputs:
    """Load DISPATCHPRICE and (when given) PREDISPATCHPRICE from ``paths`` (see :func:`data_files`) and hash
    every file; without PREDISPATCHPRICE the pre-dispatch table is empty; DISPATCHREGIONSUM, when given,
    attaches the market depth (:func:`aemo.mms.load_region_enablement`). Raises RunError or
    aemo.errors.MmsFormatError (naming the file) when they cannot be used."""
    tables = data_files(paths)
    with _as_one_path(tables[DISPATCH_TABLE], DISPATCH_TABLE) as path:
        dispatch = load_dispatch_prices(path)
    dispatch = load_region_enablement(dispatch, tables[REGION_SUM_TABLE])
    predispatch = PredispatchPrices.empty(dispatch.products)
    if tables[PREDISPATCH_TABLE]:
        with _as_one_path(tables[PREDISPATCH_TABLE], PREDISPATCH_TABLE) as path:
            predispatch = load_predispatch_prices(path)
    thresholds = read_price_thresholds(tables[THRESHOLDS_TABLE]) if tables[THRESHOLDS_TABLE] else None
    files = tuple(DataFile(path=f, table=table, sha256=file_sha256(f), size_bytes=f.stat().st_size)
                  for table, found in tables.items() for f in found)
    return MarketInputs(dispatch=dispatch, predispatch=predispatch, files=files,
                        sources=tuple(Path(p).expanduser().resolve() for p in paths), price_thresholds=thresholds)


def with_data_price_limits(settings: Settings, inputs: MarketInputs) -> Settings:
    """``settings`` whose price limits are AEMO's MARKET_PRICE_THRESHOLDS among the run's data where they cover
    a trading day, and the configured financial years elsewhere."""
    return replace(settings, market=with_price_thresholds(settings.market, inputs.price_thresholds))


def require_price_limits(settings: Settings, period: Period) -> None:
    """Raise :class:`settings.PriceLimitsUnknownError` at start-up when a trading day of ``period`` lies in a
    financial year no source of price limits covers (never a guess from the nearest year)."""
    settings.market.require_price_caps(trading_day(period.first_interval), trading_day(period.last_interval))


def code_version(repo: Path = REPO_ROOT) -> str:
    """``git <describe --tags --always --dirty>`` of ``repo`` when it is a git work tree, else
    ``openvpp <package version>``."""
    try:
        described = subprocess.run(["git", "describe", "--tags", "--always", "--dirty"], cwd=repo,
                                   capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        if described:
            return f"git {described}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"openvpp {metadata.version('openvpp')}"
    except metadata.PackageNotFoundError:
        return "openvpp unknown"


def settings_snapshot(settings: Settings) -> dict[str, Any]:
    """The settings that decide a backtest's result (market rules, battery, bidding, cycle, publication
    model, market depth: the FCAS enablement share and whether and how the plan expects it), JSON-ready; the
    data folder is left out (the data files are hashed instead)."""
    market_data = {f.name: getattr(settings.market_data, f.name) for f in fields(settings.market_data)
                   if f.name != "data_dir"}
    raw = {"market": asdict(settings.market), "battery": asdict(settings.battery),
           "bidding": asdict(settings.bidding), "cycle": asdict(settings.cycle), "market_data": market_data,
           "market_depth": asdict(settings.market_depth)}
    loaded: dict[str, Any] = _finite_json(json.loads(json.dumps(raw, default=str)))
    return loaded


def _finite_json(value: Any) -> Any:
    """``value`` (parsed JSON) with every non-finite float written as its name (``"inf"``, ``"-inf"``,
    ``"nan"``), so the snapshot is standard JSON and hashes (:func:`canonical_json` refuses non-finite
    numbers): AEMO's price thresholds of before 2002 have no cumulative price threshold (an infinite one)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_json(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: the text hashed for ids and digests."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def sha256_text(text: str) -> str:
    """sha256 (hex) of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------------
# The period
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """Market time (naive AEST) from ``start`` to ``end``: the dispatch intervals ending in (start, end]."""

    start: datetime
    end: datetime

    @property
    def intervals(self) -> int:
        """Number of 5-minute dispatch intervals (= decisions)."""
        return (self.end - self.start) // INTERVAL

    @property
    def first_interval(self) -> datetime:
        """The first dispatch interval (interval-ending AEST)."""
        return self.start + INTERVAL

    @property
    def last_interval(self) -> datetime:
        """The last dispatch interval (interval-ending AEST)."""
        return self.end

    def first_decision(self, schedule_offset_s: int) -> datetime:
        """When the decision bidding the first interval is made (AEST): during the interval before it,
        ``schedule_offset_s`` after that interval starts."""
        return self.start - INTERVAL + timedelta(seconds=schedule_offset_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: start, end, first and last interval (ISO, AEST) and the interval count."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "first_interval": self.first_interval.isoformat(), "last_interval": self.last_interval.isoformat(),
                "intervals": self.intervals}


def _on_grid(moment: datetime, label: str) -> datetime:
    if moment.tzinfo is not None:
        raise RunError(f"{label} must be a market time (AEST) without a time zone, got {moment}")
    if moment.second or moment.microsecond or moment.minute % 5:
        raise RunError(f"{label} {moment:%Y-%m-%d %H:%M:%S} is not on the 5-minute grid")
    return moment


def _datetime(value: np.datetime64) -> datetime:
    moment: datetime = value.astype("datetime64[s]").item()
    return moment


def resolve_period(dispatch: DispatchPrices, region: str, *, start: datetime | None = None,
                   end: datetime | None = None, days: float | None = None,
                   held: tuple[datetime, datetime] | None = None) -> Period:
    """The period of a run (AEST): ``start`` / ``end`` / ``days`` as given (at most two of them), the rest
    from the data (default: every interval of the file). RunError for an unknown region, an empty or
    misaligned period, a period with no ENERGY price for ``region`` or one reaching before the first or past
    the last interval the source holds for it (``held``: first and last interval, AEST; default those of
    ``dispatch``), with what the data covers. Intervals the data skips inside that span are gaps: the run
    makes no decision for them."""
    if region not in dispatch.regions:
        raise RunError(f"unknown region {region!r}; the data has regions {', '.join(dispatch.regions)}")
    if len(dispatch.intervals) == 0:
        raise RunError("the dispatch data has no intervals")
    if start is not None and end is not None and days is not None:
        raise RunError("give at most two of --start, --end and --days")
    if days is not None and not (math.isfinite(days) and days > 0):
        raise RunError(f"--days must be positive, got {days}")
    span = None if days is None else INTERVAL * round(days * INTERVALS_PER_DAY)
    first_start = _datetime(dispatch.intervals[0]) - INTERVAL
    last_end = _datetime(dispatch.intervals[-1])
    if start is None:
        start = end - span if end is not None and span is not None else first_start
    if end is None:
        end = start + span if span is not None else last_end
    period = Period(_on_grid(start, "--start"), _on_grid(end, "--end"))
    if period.intervals < 1:
        raise RunError(f"the period {period.start:%Y-%m-%d %H:%M} .. {period.end:%Y-%m-%d %H:%M} has no "
                       "5-minute interval")
    _check_coverage(dispatch, region, period, held)
    return period


def priced_span(dispatch: DispatchPrices, region: str) -> tuple[datetime, datetime] | None:
    """The first and last interval (AEST) with an ENERGY price of ``region`` in ``dispatch``, or None."""
    priced = np.flatnonzero(np.isfinite(dispatch.price[dispatch.region_index(region), :, 0]))
    if priced.size == 0:
        return None
    return _datetime(dispatch.intervals[priced[0]]), _datetime(dispatch.intervals[priced[-1]])


def _check_coverage(dispatch: DispatchPrices, region: str, period: Period,
                    held: tuple[datetime, datetime] | None) -> None:
    wanted = np.arange(np.datetime64(period.first_interval, "s"), np.datetime64(period.end, "s") + 1,
                       np.timedelta64(300, "s"))
    energy = dispatch.price[dispatch.region_index(region), :, 0]
    position = np.clip(np.searchsorted(dispatch.intervals, wanted), 0, len(dispatch.intervals) - 1)
    present = (dispatch.intervals[position] == wanted) & np.isfinite(energy[position])
    span = held if held is not None else priced_span(dispatch, region)
    first, last = span if span is not None else (_datetime(dispatch.intervals[0]), _datetime(dispatch.intervals[-1]))
    covers = f"the data covers intervals ending {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M}"
    shown = f"{period.start:%Y-%m-%d %H:%M} .. {period.end:%Y-%m-%d %H:%M}"
    if not bool(present.any()):
        raise RunError(f"no {region} dispatch prices in the period {shown} (AEST); {covers}")
    outside = (wanted < np.datetime64(first, "s")) | (wanted > np.datetime64(last, "s"))
    if bool(outside.any()):
        first_missing = _datetime(wanted[int(np.argmax(outside))])
        raise RunError(f"{int((~present).sum())} of the {len(wanted)} intervals of {shown} have no {region} "
                       f"dispatch price (first: ending {first_missing:%Y-%m-%d %H:%M}); {covers}")


def intervals_with_prices(dispatch: DispatchPrices, region: str, period: Period) -> int:
    """How many of the period's dispatch intervals have an ENERGY price of ``region`` (the rest are gaps)."""
    wanted = np.arange(np.datetime64(period.first_interval, "s"), np.datetime64(period.end, "s") + 1,
                       np.timedelta64(300, "s"))
    energy = dispatch.price[dispatch.region_index(region), :, 0]
    position = np.clip(np.searchsorted(dispatch.intervals, wanted), 0, len(dispatch.intervals) - 1)
    return int(((dispatch.intervals[position] == wanted) & np.isfinite(energy[position])).sum())


# --------------------------------------------------------------------------------------------------
# Choosing the data: files or the market store
# --------------------------------------------------------------------------------------------------


def requested_period(start: datetime | None, end: datetime | None, days: float | None) -> Period | None:
    """The period two of ``start`` / ``end`` / ``days`` give (AEST), None with fewer; RunError when it is
    malformed (three given, misaligned, not positive)."""
    if start is not None and end is not None and days is not None:
        raise RunError("give at most two of --start, --end and --days")
    if days is not None and not (math.isfinite(days) and days > 0):
        raise RunError(f"--days must be positive, got {days}")
    length = None if days is None else INTERVAL * round(days * INTERVALS_PER_DAY)
    if start is not None and end is None and length is not None:
        end = start + length
    if end is not None and start is None and length is not None:
        start = end - length
    if start is None or end is None:
        return None
    period = Period(_on_grid(start, "--start"), _on_grid(end, "--end"))
    if period.intervals < 1:
        raise RunError(f"the period {period.start:%Y-%m-%d %H:%M} .. {period.end:%Y-%m-%d %H:%M} has no "
                       "5-minute interval")
    return period


def data_span(period: Period, history_intervals: int, horizon_intervals: int) -> tuple[datetime, datetime]:
    """The intervals (ending, AEST) a run over ``period`` reads: the history window of its first decision
    (``history_intervals`` 5-minute intervals) to its last decision's horizon (``horizon_intervals``)."""
    return (period.start - INTERVAL * (history_intervals + 1), period.end + INTERVAL * horizon_intervals)


def open_store(settings: Settings) -> MarketStore | None:
    """The configured market store, or None when it was never created (nothing synced: nothing is made)."""
    folder = settings.market_store.store_dir(settings.stack.state_dir)
    return MarketStore(folder) if (folder / MANIFEST_NAME).is_file() else None


def store_holds(store: MarketStore | None, region: str, period: Period) -> tuple[datetime, datetime] | None:
    """The first and last interval the store holds of ``region`` when they enclose ``period``'s intervals,
    else None."""
    if store is None:
        return None
    held = held_span(store, region)
    if held is None or not held[0] <= period.first_interval or not period.last_interval <= held[1]:
        return None
    return held


def describe_store(store: MarketStore | None, settings: Settings) -> str:
    """What the configured market store holds of DISPATCHPRICE, for messages."""
    folder = settings.market_store.store_dir(settings.stack.state_dir)
    if store is None:
        return f"the market store {folder} is empty (vpp data sync fills it)"
    return f"the market store {folder} holds DISPATCHPRICE of {describe_holdings(held_dispatch(store))}"


def load_store_inputs(store: MarketStore, regions: Sequence[str], span: tuple[datetime, datetime]) -> MarketInputs:
    """DISPATCHPRICE (and PREDISPATCHPRICE where held) of ``regions`` over ``span`` (intervals ending, AEST)
    from the market store, with the identity and sha256 of every source file whose rows were read.
    Raises RunError when the store holds nothing there (saying what it holds)."""
    try:
        loaded = load_store_prices(store, regions=regions, start=span[0], end=span[1])
    except StoreCoverageError as error:
        raise RunError(str(error)) from None
    files = tuple(DataFile(path=store.root / source.name, table=source.table, sha256=source.sha256,
                           size_bytes=source.size_bytes, identity=source.identity) for source in loaded.sources)
    # AEMO's price limits where the store holds them (else the configured years apply).
    thresholds = store.load(THRESHOLDS_TABLE) if THRESHOLDS_TABLE in store.tables() else None
    return MarketInputs(dispatch=loaded.dispatch, predispatch=loaded.predispatch, files=files,
                        sources=(store.root,), price_thresholds=thresholds, origin=STORE_ORIGIN, span=span,
                        regions=tuple(sorted(regions)))


def choose_inputs(settings: Settings, strategy: Strategy, region: str, *, data: Sequence[Path] = (),
                  source: str = "auto", start: datetime | None = None, end: datetime | None = None,
                  days: float | None = None) -> tuple[MarketInputs, Period]:
    """The market data and period of a run (see README "Backtesting"): ``--data`` files when given; else,
    with ``source`` "auto", the market store when a period is given (two of start / end / days) and the
    store holds ``region`` over it, otherwise the configured data folder (the embedded January 2021);
    ``source`` "store" or "files" forces one. RunError saying what each source holds when none covers the
    period."""
    if source not in DATA_CHOICES:
        raise RunError(f"unknown data source {source!r}; choose one of {', '.join(DATA_CHOICES)}")
    if data and source == STORE_ORIGIN:
        raise RunError("--data reads files: it cannot be combined with --source store")
    if data or source == FILES_ORIGIN:
        inputs = load_inputs(list(data) or [settings.market_data.data_dir])
        return inputs, resolve_period(inputs.dispatch, region, start=start, end=end, days=days)
    period = requested_period(start, end, days)
    store = open_store(settings)
    if period is None:
        if source == STORE_ORIGIN:
            raise RunError("reading the market store needs a period: give two of --start, --end and --days")
    else:
        held = store_holds(store, region, period)
        if held is not None and store is not None:
            history, horizon = strategy_window(settings, strategy)
            try:
                inputs = load_store_inputs(store, [region], data_span(period, history, horizon))
                return inputs, resolve_period(inputs.dispatch, region, start=period.start, end=period.end,
                                              held=held)
            except RunError:
                if source == STORE_ORIGIN:
                    raise
        elif source == STORE_ORIGIN:
            shown = f"{period.start:%Y-%m-%d %H:%M} .. {period.end:%Y-%m-%d %H:%M}"
            raise RunError(f"the market store does not hold {region} over {shown}: {describe_store(store, settings)}")
    inputs = load_inputs([settings.market_data.data_dir])
    try:
        return inputs, resolve_period(inputs.dispatch, region, start=start, end=end, days=days)
    except RunError as error:
        raise RunError(f"{error} (in {settings.market_data.data_dir}); "
                       f"{describe_store(store, settings)}") from None


def data_line(inputs: MarketInputs, region: str, period: Period) -> str:
    """One line saying which data a run reads: the source, AEMO's forecasts or not, the FCAS markets, market
    depth or not, and the period's intervals without data."""
    where = (f"the market store {inputs.sources[0]}" if inputs.origin == STORE_ORIGIN
             else ", ".join(str(source) for source in inputs.sources))
    fcas = len(inputs.dispatch.products) - 1
    priced = intervals_with_prices(inputs.dispatch, region, period)
    gaps = period.intervals - priced
    forecasts = "with AEMO's pre-dispatch forecasts" if inputs.has_predispatch else "without AEMO's forecasts"
    depth = ("market depth from DISPATCHREGIONSUM" if inputs.dispatch.region_enabled_mw is not None
             else "no DISPATCHREGIONSUM (FCAS price-taker only)")
    return (f"data: {where} ({len(inputs.files)} files), {fcas} FCAS markets, {forecasts}, {depth}; "
            f"{priced} of {period.intervals} intervals have prices" + (f" ({gaps} without data)" if gaps else ""))


def strategy_window(settings: Settings, strategy: Strategy) -> tuple[int, int]:
    """(history, horizon) in 5-minute intervals a run of ``strategy`` reads around each decision (history: the
    window or the reach, the longer; ``[market_data] history_reach_intervals``)."""
    overrides = strategy.backtest_overrides()
    effective = strategy.apply(settings).cycle
    history = overrides.get("history_intervals", effective.history_intervals)
    horizon = overrides.get("horizon_intervals", effective.horizon_intervals)
    return settings.market_data.history_read_intervals(int(history)), int(horizon)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# The run's specification and id
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RunSpec:
    """Everything that decides a run's result, and how it was asked for.

    ``settings`` is the effective settings snapshot (:func:`settings_snapshot`, the strategy's overrides
    applied); ``config_file`` the ``--config`` file given (path, sha256), if any; ``sources`` the
    ``--data`` paths as given (absolute).
    """

    region: str
    period: Period
    strategy: Strategy
    files: tuple[DataFile, ...]
    sources: tuple[Path, ...]
    code_version: str
    settings: Mapping[str, Any]
    config_file: tuple[Path, str] | None = None
    origin: str = FILES_ORIGIN
    span: tuple[datetime, datetime] | None = None

    @property
    def settings_sha256(self) -> str:
        """sha256 of the effective settings snapshot's canonical JSON."""
        return sha256_text(canonical_json(self.settings))

    def manifest(self) -> dict[str, Any]:
        """What the run id hashes: region, period, strategy, data hashes, settings hash, code version."""
        return {"format": SUMMARY_FORMAT, "region": self.region, "period": self.period.to_dict(),
                "strategy": self.strategy.to_dict(),
                "data": [{"table": f.table, "sha256": f.sha256} for f in self.files],
                "settings_sha256": self.settings_sha256, "code_version": self.code_version}

    @property
    def run_id(self) -> str:
        """``<region>-<start>-<intervals>-<manifest hash>`` (see the module docstring)."""
        digest = sha256_text(canonical_json(self.manifest()))[:_ID_HASH_CHARS]
        return f"{self.region}-{self.period.start:%Y%m%dT%H%M}-{self.period.intervals}-{digest}"

    @property
    def forecast_source(self) -> str:
        """Where the run's forecasts come from (``model`` unless the strategy says otherwise)."""
        return str(self.strategy.parameter_map.get(FORECAST_SOURCE_KEY, "model"))

    def command(self) -> str:
        """The ``vpp`` command line that makes this run again."""
        from backtest.strategy import parameter_flags

        words = ["vpp"]
        if self.config_file is not None:
            words += ["--config", shlex.quote(str(self.config_file[0]))]
        words += ["backtest", "run"]
        if self.origin == STORE_ORIGIN:
            words += ["--source", STORE_ORIGIN]
        for source in self.sources if self.origin == FILES_ORIGIN else ():
            words += ["--data", shlex.quote(str(source))]
        words += ["--region", self.region, "--start", f"{self.period.start:%Y-%m-%dT%H:%M}",
                  "--end", f"{self.period.end:%Y-%m-%dT%H:%M}", *parameter_flags(self.strategy)]
        return " ".join(words)


def supports_forecast_source() -> bool:
    """Whether the engine's configuration has a ``forecast_source`` (perfect-information runs)."""
    return FORECAST_SOURCE_KEY in {f.name for f in fields(BacktestConfig)}


def perfect_information_spec(spec: RunSpec) -> RunSpec:
    """The same run with forecasts replaced by the actual prices (``forecast_source = "actual"``).
    RunError when the engine cannot do that."""
    if not supports_forecast_source():
        raise RunError("this engine has no forecast_source: perfect-information runs are not available")
    strategy = spec.strategy.with_parameter(FORECAST_SOURCE_KEY, PERFECT_INFORMATION_SOURCE)
    return RunSpec(region=spec.region, period=spec.period, strategy=strategy, files=spec.files,
                   sources=spec.sources, code_version=spec.code_version, settings=spec.settings,
                   config_file=spec.config_file, origin=spec.origin, span=spec.span)


def make_spec(settings: Settings, inputs: MarketInputs, region: str, period: Period, strategy: Strategy, *,
              config_file: Path | None = None, version: str | None = None) -> RunSpec:
    """The specification of a run of ``strategy`` (its overrides applied to ``settings``)."""
    config = None
    if config_file is not None:
        path = Path(config_file).expanduser().resolve()
        config = (path, file_sha256(path))
    return RunSpec(region=region, period=period, strategy=strategy, files=inputs.files, sources=inputs.sources,
                   code_version=version if version is not None else code_version(),
                   settings=settings_snapshot(strategy.apply(settings)), config_file=config, origin=inputs.origin,
                   span=inputs.span)


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RunOutcome:
    """A finished run: its spec, the engine's result, the ledger, summary and timing (JSON-ready)."""

    spec: RunSpec
    result: BacktestResult
    ledger: pd.DataFrame
    summary: dict[str, Any]
    timing: dict[str, Any]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def engine_run(settings: Settings, inputs: MarketInputs, config: BacktestConfig, *, market: DispatchPrices,
               workers: int | None, progress: Progress | None) -> BacktestResult:
    """:func:`backtest.engine.run_backtest` of ``inputs`` on ``workers`` processes (None: the engine's
    default), reporting ``progress(done, total)``."""
    return run_backtest(settings, inputs.dispatch, inputs.predispatch, config, market=market, progress=progress,
                        workers=workers)


def depth_limited_results(result: BacktestResult, pf_depth_dollars: float | None, end_of_run_dollars: float,
                          share: float) -> dict[str, Any] | None:
    """The depth-limited figures of a run ($, fractions): FCAS capped at the region's enablement × ``share``
    in clearing and in perfect foresight (``pf_depth_dollars``, energy + FCAS), energy price-taking, the
    end-of-run charge included. None ("price-taker only") when the data has no market depth for the run."""
    depth_fcas = result.depth_fcas_revenue_dollars
    if depth_fcas is None or result.depth_fcas_revenue_by_product_dollars is None or pf_depth_dollars is None:
        return None
    total = result.energy_revenue_dollars + depth_fcas
    return {
        "fcas_enablement_share": share,
        "fcas_revenue_dollars": depth_fcas,
        "fcas_revenue_by_product_dollars": dict(result.depth_fcas_revenue_by_product_dollars),
        "total_revenue_dollars": total,
        "credited_revenue_dollars": total + end_of_run_dollars,
        "perfect_foresight_energy_fcas_dollars": pf_depth_dollars,
        "capture_total": _ratio(total + end_of_run_dollars, pf_depth_dollars),
    }


def benchmark_figures(energy_fcas: Sequence[BenchmarkSolve], energy_only: Sequence[BenchmarkSolve]) -> dict[str, Any]:
    """The physical benchmark beside its LP relaxation, summed over the stretches of a run ($): relaxation
    values, intervals in which the relaxation charged and discharged at once, the largest MIP gap and
    whether every stretch solved to optimality."""
    figures: dict[str, Any] = {}
    for label, solves in (("energy_fcas", energy_fcas), ("energy_only", energy_only)):
        figures[f"{label}_relaxation_dollars"] = math.fsum(s.relaxation_dollars for s in solves)
        figures[f"{label}_bound_dollars"] = math.fsum(s.bound_dollars for s in solves)
        figures[f"{label}_relaxation_simultaneous_intervals"] = sum(s.relaxation_simultaneous_intervals
                                                                    for s in solves)
        figures[f"{label}_mip_gap"] = max((s.mip_gap for s in solves), default=0.0)
        figures[f"{label}_optimal"] = all(s.status == "OPTIMAL" for s in solves)
    return figures


def _results(result: BacktestResult, ledger: pd.DataFrame, pf_energy_only: float,
             benchmark: Mapping[str, Any] | None = None, *, end_of_run_dollars: float = 0.0,
             depth: dict[str, Any] | None = None) -> dict[str, Any]:
    pf_energy = float(ledger["pf_energy_revenue_dollars"].sum())
    pf_fcas_by_product = {p: float(ledger[f"pf_fcas_revenue_dollars_{p}"].sum()) for p in result.fcas_products}
    pf_total = float(ledger["pf_total_revenue_dollars"].sum())
    relaxation = dict(benchmark or {})
    relaxed_total = relaxation.get("energy_fcas_relaxation_dollars")
    relaxed_energy = relaxation.get("energy_only_relaxation_dollars")
    return {
        "decisions": len(result.records),
        "energy_revenue_dollars": result.energy_revenue_dollars,
        "fcas_revenue_dollars": result.fcas_revenue_dollars,
        "fcas_revenue_by_product_dollars": dict(result.fcas_revenue_by_product_dollars),
        "total_revenue_dollars": result.total_revenue_dollars,
        "end_of_run_adjustment_dollars": end_of_run_dollars,
        "credited_revenue_dollars": result.total_revenue_dollars + end_of_run_dollars,
        "perfect_foresight": {
            "energy_only_dollars": pf_energy_only,
            "energy_fcas_dollars": pf_total,
            "energy_fcas_energy_dollars": pf_energy,
            "energy_fcas_fcas_by_product_dollars": pf_fcas_by_product,
            "physical": True,
            **relaxation,
        },
        "capture_total": _ratio(result.total_revenue_dollars + end_of_run_dollars, pf_total),
        "capture_energy": _ratio(result.energy_revenue_dollars + end_of_run_dollars, pf_energy_only),
        "capture_total_vs_relaxation": (None if relaxed_total is None
                                        else _ratio(result.total_revenue_dollars + end_of_run_dollars,
                                                    relaxed_total)),
        "capture_energy_vs_relaxation": (None if relaxed_energy is None
                                         else _ratio(result.energy_revenue_dollars + end_of_run_dollars,
                                                     relaxed_energy)),
        "depth_limited": depth,
        "initial_state_of_charge_mwh": result.initial_state_of_charge_mwh,
        "final_state_of_charge_mwh": result.final_state_of_charge_mwh,
        "throughput_mwh": result.throughput_mwh,
        "cycles": result.cycles,
        "safe_fallbacks": result.safe_fallbacks,
        "validation_rejections": result.validation_rejections,
        "rebids": result.rebids,
        "failed_decisions": result.failed_decisions,
        "intervals_without_data": result.intervals_without_data,
    }


def _skill(skills: Sequence[LeadSkill], levels: Sequence[float]) -> dict[str, Any]:
    return {"quantiles": list(levels), "actual": "DISPATCHPRICE RRP of the target interval ($/MWh)",
            "leads": [{"lead": s.lead, "minutes": s.minutes, "n": s.n, "mae": _finite(s.mae),
                       "pinball": _finite(s.pinball)} for s in skills]}


def build_summary(spec: RunSpec, result: BacktestResult, ledger: pd.DataFrame, pf_energy_only: float,
                  skills: Sequence[LeadSkill], levels: Sequence[float],
                  benchmark: Mapping[str, Any] | None = None, *, end_of_run_dollars: float = 0.0,
                  depth: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's ``summary.json`` content (deterministic: no timing, no time of running). ``benchmark``: the
    LP relaxation beside the physical benchmark (:func:`benchmark_figures`); ``end_of_run_dollars`` (≤ 0,
    :func:`backtest.engine.end_of_run_adjustment`) is in every capture; ``depth`` the depth-limited figures
    (:func:`depth_limited_results`; None: price-taker only)."""
    pi_id = (perfect_information_spec(spec).run_id
             if supports_forecast_source() and spec.forecast_source != PERFECT_INFORMATION_SOURCE else None)
    return {
        "format": SUMMARY_FORMAT,
        "run_id": spec.run_id,
        "region": spec.region,
        "period": spec.period.to_dict(),
        "first_decision": result.config.first_decision.isoformat(),
        "strategy": spec.strategy.to_dict(),
        "strategy_label": spec.strategy.label,
        "forecast_source": spec.forecast_source,
        "perfect_information_run_id": pi_id,
        "code_version": spec.code_version,
        "data": [{"path": str(f.path), "table": f.table, "sha256": f.sha256, "bytes": f.size_bytes,
                  **({"identity": f.identity} if f.identity is not None else {})} for f in spec.files],
        "data_sources": [str(s) for s in spec.sources],
        "data_origin": spec.origin,
        "data_span": None if spec.span is None else [moment.isoformat() for moment in spec.span],
        "aemo_forecasts": any(f.table == PREDISPATCH_TABLE for f in spec.files),
        "config_file": (None if spec.config_file is None
                        else {"path": str(spec.config_file[0]), "sha256": spec.config_file[1]}),
        "settings_sha256": spec.settings_sha256,
        "settings": spec.settings,
        "command": spec.command(),
        "fcas_products": list(result.fcas_products),
        "results": _results(result, ledger, pf_energy_only, benchmark, end_of_run_dollars=end_of_run_dollars,
                            depth=depth),
        "forecast_skill": _skill(skills, levels),
    }


def segment_market(market: DispatchPrices, region: str, first_interval: datetime, count: int) -> DispatchPrices:
    """``region``'s prices of ``count`` consecutive intervals from ``first_interval`` (AEST), with only the
    products priced in every one of them (ENERGY always): a market that has not opened yet, or a column a
    file version lacks, takes no part. BacktestError when an interval is not in ``market``. Pure."""
    start = market.interval_index(first_interval)
    if start is None or start + count > len(market.intervals):
        raise BacktestError(f"the market data does not cover {count} intervals from {first_interval:%Y-%m-%d %H:%M}")
    window = np.asarray(market.price[market.region_index(region):market.region_index(region) + 1,
                                     start:start + count], dtype=np.float64)
    priced = np.asarray(np.isfinite(window).all(axis=(0, 1)), dtype=bool)
    priced[0] = True
    enabled = (None if market.region_enabled_mw is None else
               np.array(market.region_enabled_mw[market.region_index(region):market.region_index(region) + 1,
                                                 start:start + count][:, :, priced]))
    return DispatchPrices(intervals=np.array(market.intervals[start:start + count]), regions=(region,),
                          products=tuple(p for p, kept in zip(market.products, priced, strict=True) if kept),
                          price=np.array(window[:, :, priced]), region_enabled_mw=enabled)


def perfect_foresight_of(settings: Settings, market: DispatchPrices, region: str, intervals: Sequence[datetime],
                         fcas_products: Sequence[str]) -> tuple[pd.DataFrame, float, dict[str, Any]]:
    """Perfect foresight over the backtest's dispatch ``intervals`` (AEST, sorted): the per-interval ledger
    (energy + FCAS, :func:`backtest.ledger.perfect_foresight_ledger`) and the energy-only revenue ($,
    :func:`backtest.engine.perfect_foresight_revenue`). Over a gap in the data the battery can do nothing:
    each stretch of consecutive intervals (:func:`backtest.ledger.contiguous_runs`) is its own benchmark,
    starting at the configured SoC and ending with at least as much; their sums are the run's. The third
    element: :func:`benchmark_figures` (the LP relaxation's values beside the physical benchmark)."""
    ledgers: list[pd.DataFrame] = []
    energy_only = 0.0
    energy_fcas_solves: list[BenchmarkSolve] = []
    energy_only_solves: list[BenchmarkSolve] = []
    for first, count in contiguous_runs(list(intervals)):
        window = segment_market(market, region, first, count)
        ledgers.append(perfect_foresight_ledger(settings, window, region, first, count, solves=energy_fcas_solves))
        energy_only += perfect_foresight_revenue(settings, window, region, first, count, include_fcas=False,
                                                 solves=energy_only_solves)[0]
    pf = pd.concat(ledgers, ignore_index=True) if len(ledgers) > 1 else ledgers[0]
    for product in fcas_products:
        for column in (f"pf_fcas_enabled_mw_{product}", f"pf_fcas_revenue_dollars_{product}"):
            pf[column] = pf[column].fillna(0.0) if column in pf.columns else 0.0
    return pf, energy_only, benchmark_figures(energy_fcas_solves, energy_only_solves)


def depth_perfect_foresight(settings: Settings, market: DispatchPrices, region: str,
                            intervals: Sequence[datetime]) -> float | None:
    """Depth-limited perfect foresight (energy + FCAS $) over the backtest's dispatch ``intervals`` (AEST,
    sorted), stretch by stretch as :func:`perfect_foresight_of`, with every FCAS enablement capped at the
    market depth the clearing used (:func:`backtest.engine.depth_caps_window`). None ("price-taker only")
    when the data lacks the depth of some stretch."""
    total = 0.0
    for first, count in contiguous_runs(list(intervals)):
        window = segment_market(market, region, first, count)
        if depth_caps_window(settings, window, region, first, count) is None:
            return None
        energy, fcas = perfect_foresight_revenue(settings, window, region, first, count, include_fcas=True,
                                                 depth_limited=True)
        total += energy + fcas
    return total


def execute_run(settings: Settings, inputs: MarketInputs, spec: RunSpec, *, workers: int | None = None,
                progress: Progress | None = None) -> RunOutcome:
    """Run ``spec``: the backtest, perfect foresight over the same intervals (energy + FCAS per interval,
    energy only in total), the ledger, forecast skill by lead and the summary. ``settings`` are the
    settings before the strategy's overrides. Raises BacktestError / StrategyError when it cannot run."""
    started = time.perf_counter()
    effective = spec.strategy.apply(settings)
    config = spec.strategy.config(spec.region, spec.period.first_decision(effective.cycle.schedule_offset_s),
                                  spec.period.intervals)
    market = market_prices(effective, inputs.dispatch)
    result = engine_run(effective, inputs, config, market=market, workers=workers, progress=progress)
    if not spec.period.first_interval <= result.first_interval <= spec.period.last_interval:
        raise BacktestError(f"the backtest's first interval {result.first_interval} is not in the period "
                            f"{spec.period.first_interval} .. {spec.period.last_interval}")
    backtest_s = time.perf_counter() - started
    pf_started = time.perf_counter()
    pf, energy, benchmark = perfect_foresight_of(effective, market, spec.region,
                                      [record.dispatch_interval for record in result.records],
                                      result.fcas_products)
    pf_s = time.perf_counter() - pf_started
    levels = result_quantiles(result, effective)
    leads = result_leads(result)
    ledger = backtest_ledger(result, pf, leads=leads, levels=levels)
    region = inputs.dispatch.region_index(spec.region)
    skills = forecast_skill_by_lead(ledger, leads, levels, inputs.dispatch.intervals,
                                    inputs.dispatch.price[region, :, 0])
    intervals = [record.dispatch_interval for record in result.records]
    pf_depth = (depth_perfect_foresight(effective, market, spec.region, intervals)
                if result.depth_fcas_revenue_by_product_dollars is not None else None)
    end_of_run = end_of_run_adjustment(effective, result)
    depth = depth_limited_results(result, pf_depth, end_of_run, effective.market_depth.fcas_enablement_share)
    summary = build_summary(spec, result, ledger, energy, skills, levels, benchmark, end_of_run_dollars=end_of_run,
                            depth=depth)
    timing = {
        "run_id": spec.run_id,
        "finished_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "workers": workers,
        "wall_time_s": time.perf_counter() - started,
        "backtest_s": backtest_s,
        "perfect_foresight_s": pf_s,
        "decisions_per_second": len(result.records) / backtest_s if backtest_s > 0 else None,
        "stage_seconds": result.stage_seconds(),
    }
    return RunOutcome(spec=spec, result=result, ledger=ledger, summary=summary, timing=timing)


# --------------------------------------------------------------------------------------------------
# The results folder
# --------------------------------------------------------------------------------------------------


def _json_ready(value: Any) -> Any:
    """``value`` with non-finite floats as null (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented, key-sorted strict JSON (non-finite floats as null)."""
    path.write_text(json.dumps(_json_ready(value), indent=2, sort_keys=True, allow_nan=False) + "\n",
                    encoding="utf-8")


def save_run(root: Path, outcome: RunOutcome) -> Path:
    """Write the run's ``summary.json``, ``ledger.parquet`` and ``timing.json`` to ``root/<run id>/``
    (replacing an earlier run of the same id); returns the folder."""
    folder = Path(root) / outcome.spec.run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SUMMARY_FILE).unlink(missing_ok=True)
    outcome.ledger.to_parquet(folder / LEDGER_FILE, index=False)
    write_json(folder / TIMING_FILE, outcome.timing)
    write_json(folder / SUMMARY_FILE, outcome.summary)  # last: a folder without it is not a run
    return folder


@dataclass(frozen=True, eq=False)
class StoredRun:
    """A run in a results folder: its folder, summary and timing (empty if absent)."""

    folder: Path
    summary: dict[str, Any]
    timing: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        """The run id."""
        return str(self.summary["run_id"])

    def ledger(self) -> pd.DataFrame:
        """The per-interval ledger; RunError when the file is missing or unreadable."""
        path = self.folder / LEDGER_FILE
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as error:
            raise RunError(f"{path}: cannot be read: {error}") from None


def read_run(folder: Path) -> StoredRun:
    """The run stored in ``folder``; RunError when it has no readable summary.json."""
    path = Path(folder) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{folder} is not a backtest run (no {SUMMARY_FILE})") from None
    except (OSError, ValueError) as error:
        raise RunError(f"{path}: cannot be read: {error}") from None
    if not isinstance(summary, dict) or "run_id" not in summary:
        raise RunError(f"{path}: not a backtest summary")
    timing: dict[str, Any] = {}
    try:
        loaded = json.loads((Path(folder) / TIMING_FILE).read_text(encoding="utf-8"))
        timing = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    return StoredRun(folder=Path(folder), summary=summary, timing=timing)


def list_runs(root: Path) -> list[StoredRun]:
    """Every run under ``root`` (folders with a summary.json), oldest first (by finish time, then id)."""
    base = Path(root)
    if not base.is_dir():
        return []
    runs = [read_run(child) for child in sorted(base.iterdir()) if (child / SUMMARY_FILE).is_file()]
    return sorted(runs, key=lambda run: (str(run.timing.get("finished_at_utc", "")), run.run_id))


def find_run(root: Path, reference: str) -> StoredRun:
    """The run ``reference`` names: a run folder's path, a run id under ``root``, or a unique prefix of a run
    id or of its hash part (the last 10 characters). RunError when none or several match."""
    as_path = Path(reference)
    if (as_path / SUMMARY_FILE).is_file():
        return read_run(as_path)
    base = Path(root)
    if (base / reference / SUMMARY_FILE).is_file():
        return read_run(base / reference)
    matches = ([child for child in sorted(base.iterdir())
                if (child.name.startswith(reference) or child.name.rpartition("-")[2].startswith(reference))
                and (child / SUMMARY_FILE).is_file()]
               if base.is_dir() and reference else [])
    if len(matches) == 1:
        return read_run(matches[0])
    if matches:
        raise RunError(f"run {reference!r} is ambiguous in {base}: {', '.join(m.name for m in matches)}")
    raise RunError(f"no run {reference!r} in {base} (see vpp backtest list --out {base})")


def stored_strategy(run: StoredRun, settings: Settings) -> Strategy:
    """The strategy a stored run used (names and parameters checked against this code)."""
    try:
        return strategy_from_dict(run.summary["strategy"], settings)
    except (KeyError, TypeError, StrategyError) as error:
        raise RunError(f"run {run.run_id}: its strategy cannot be used here: {error}") from None


def stored_spec(run: StoredRun, settings: Settings, inputs: MarketInputs) -> RunSpec:
    """The spec of a stored run, re-made with ``inputs`` (see :func:`inputs_of`), ``settings`` and this
    code's version."""
    period = Period(datetime.fromisoformat(run.summary["period"]["start"]),
                    datetime.fromisoformat(run.summary["period"]["end"]))
    strategy = stored_strategy(run, settings)
    config = run.summary.get("config_file")
    return RunSpec(region=str(run.summary["region"]), period=period, strategy=strategy, files=inputs.files,
                   sources=inputs.sources, code_version=code_version(),
                   settings=settings_snapshot(strategy.apply(settings)),
                   config_file=None if config is None else (Path(config["path"]), str(config["sha256"])),
                   origin=inputs.origin, span=inputs.span)


def run_and_save(settings: Settings, inputs: MarketInputs, spec: RunSpec, root: Path, *,
                 workers: int | None = None, progress: Progress | None = None, report: bool = True,
                 plot_day: str | None = None, perfect_information: Mapping[str, Any] | None = None,
                 ) -> tuple[RunOutcome, Path]:
    """:func:`execute_run` then :func:`save_run` under ``root`` and, with ``report``, the plots and HTML
    report (:func:`backtest.report.write_run_report`; ``perfect_information`` is the summary of the run's
    perfect-information twin, if made). Returns the outcome and the run's folder."""
    from backtest.compare import RunView
    from backtest.report import write_run_report

    outcome = execute_run(settings, inputs, spec, workers=workers, progress=progress)
    folder = save_run(root, outcome)
    if report:
        write_run_report(folder, RunView(spec.run_id, outcome.summary, outcome.ledger, perfect_information),
                         plot_day)
    return outcome, folder


def _twin_key(summary: Mapping[str, Any]) -> tuple[Any, ...]:
    strategy = dict(summary.get("strategy", {}))
    parameters = dict(strategy.pop("parameters", {}))
    parameters.pop(FORECAST_SOURCE_KEY, None)
    return (summary.get("region"), canonical_json(summary.get("period")), canonical_json(strategy),
            canonical_json(parameters), canonical_json(sorted(d["sha256"] for d in summary.get("data", []))),
            summary.get("settings_sha256"))


def find_perfect_information(root: Path, run: StoredRun) -> StoredRun | None:
    """The perfect-information twin of ``run`` under ``root``: the run its summary names, else a run of the
    same region, period, strategy, parameters, data and settings with ``forecast_source = "actual"`` (any
    code version). None when there is none or ``run`` is itself such a run."""
    if run.summary.get("forecast_source") == PERFECT_INFORMATION_SOURCE:
        return None
    named = run.summary.get("perfect_information_run_id")
    if named and (Path(root) / str(named) / SUMMARY_FILE).is_file():
        return read_run(Path(root) / str(named))
    key = _twin_key(run.summary)
    twins = [other for other in list_runs(root)
             if other.summary.get("forecast_source") == PERFECT_INFORMATION_SOURCE and _twin_key(other.summary) == key]
    return twins[-1] if twins else None


def inputs_of(run: StoredRun) -> MarketInputs:
    """Load the data a stored run read (its ``--data`` paths, or the same span of the same market store);
    RunError when they are gone or changed."""
    sources = [Path(p) for p in run.summary.get("data_sources", [])]
    span = run.summary.get("data_span")
    try:
        if run.summary.get("data_origin") == STORE_ORIGIN and span and len(sources) == 1:
            if not (sources[0] / MANIFEST_NAME).is_file():
                raise RunError(f"the market store {sources[0]} is gone")
            inputs = load_store_inputs(MarketStore(sources[0]), [str(run.summary["region"])],
                                       (datetime.fromisoformat(span[0]), datetime.fromisoformat(span[1])))
        else:
            inputs = load_inputs(sources)
    except RunError as error:
        raise RunError(f"run {run.run_id}: its data cannot be loaded again: {error}") from None
    recorded = sorted((d["table"], d["sha256"]) for d in run.summary.get("data", []))
    if sorted((f.table, f.sha256) for f in inputs.files) != recorded:
        raise RunError(f"run {run.run_id}: its data files have changed since (sha256 differs)")
    return inputs
