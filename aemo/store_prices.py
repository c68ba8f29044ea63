"""The market store's price tables as the platform's structures: DISPATCHPRICE (and PREDISPATCHPRICE where
the store holds it) of some regions over a period, as :class:`~algorithms.market.prices.DispatchPrices` and
:class:`~algorithms.market.prices.PredispatchPrices`, with the identities and sha256 of the source files the
rows came from (the manifest's), so a backtest or a service can say exactly which data it used.

Reading is :meth:`aemo.store.MarketStore.load` (only the regions and months asked for, one row per key, the
newest publication winning); the conversion is the pure :func:`aemo.mms.dispatch_prices_from_frame` /
:func:`aemo.mms.predispatch_prices_from_frame` the files of :mod:`aemo.mms` go through too. The products
come from the data: ENERGY and every FCAS price column with a price in the rows loaded (8 FCAS markets
before 9 October 2023, 10 after). Where the store holds DISPATCHREGIONSUM, the MW each region enabled of
each FCAS product comes along (market depth, :func:`aemo.mms.with_region_enablement`). Without PREDISPATCHPRICE
rows the pre-dispatch table is empty
(:meth:`PredispatchPrices.empty`): the forecaster then plans on the price history alone.

Times are naive AEST market time, interval-ending; prices $/MWh (ENERGY) and $/MW/h (FCAS).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from aemo.errors import AemoDataError
from aemo.mms import (
    DISPATCH_TABLE,
    PREDISPATCH_TABLE,
    REGION_SUM_TABLE,
    dispatch_prices_from_frame,
    load_dispatch_prices,
    load_market_data,
    predispatch_prices_from_frame,
    with_region_enablement,
)
from aemo.store import PROVENANCE_COLUMNS, SOURCE_COLUMN, Holding, MarketStore
from algorithms.common.products import ENERGY
from algorithms.market.depth import local_dispatch_column
from algorithms.market.prices import DispatchPrices, PredispatchPrices
from settings import Settings

# Pre-dispatch periods are loaded up to this long after the span: a decision at its end forecasts a day
# ahead, and a pre-dispatch run reaches about 40 hours ahead.
PREDISPATCH_LOOKAHEAD = timedelta(hours=48)


class StoreCoverageError(AemoDataError):
    """The store does not hold what was asked for; the message says what it holds."""


@dataclass(frozen=True)
class StoreSource:
    """A source file of the store whose rows a load used: the table, the file's name and identity (its
    name without the publication part), its sha256 and size (bytes), as the manifest records them."""

    table: str
    name: str
    identity: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True, eq=False)
class StorePrices:
    """Price tables loaded from the store at ``store_dir`` and the source files their rows came from."""

    dispatch: DispatchPrices
    predispatch: PredispatchPrices
    sources: tuple[StoreSource, ...]
    store_dir: Path

    @property
    def has_predispatch(self) -> bool:
        """Whether AEMO's pre-dispatch forecasts were held for the regions and period."""
        return not self.predispatch.is_empty


def describe_holdings(holdings: Sequence[Holding]) -> str:
    """What the store holds of a table, compactly: ``"NSW1, SA1: 2018-04, 2018-05; QLD1: 2021-01"`` (the
    months of each group of regions holding the same months), or ``"nothing"``."""
    months_by_region: dict[str, list[str]] = {}
    for holding in holdings:
        if holding.region is not None and holding.rows:
            months_by_region.setdefault(holding.region, []).append(holding.month)
    regions_by_months: dict[tuple[str, ...], list[str]] = {}
    for region, months in sorted(months_by_region.items()):
        regions_by_months.setdefault(tuple(sorted(set(months))), []).append(region)
    if not regions_by_months:
        return "nothing"
    return "; ".join(f"{', '.join(regions)}: {', '.join(months)}" for months, regions in regions_by_months.items())


def held_dispatch(store: MarketStore, regions: Collection[str] | None = None) -> list[Holding]:
    """The store's DISPATCHPRICE holdings (month × region: rows, first and last interval), optionally of some
    regions."""
    held = store.holdings(tables=[DISPATCH_TABLE])
    return [h for h in held if regions is None or h.region in regions]


def held_span(store: MarketStore, region: str) -> tuple[datetime, datetime] | None:
    """The first and last interval (interval-ending AEST) the store holds a DISPATCHPRICE row of ``region``
    for (gaps between them included), or None. Reads the first and last months holding the region only."""
    months = store.months(DISPATCH_TABLE)
    first = last = None
    for label in months:
        frame = store.load_month(DISPATCH_TABLE, label, regions=[region], columns=["RRP"])
        if not frame.empty:
            first = pd.Timestamp(frame["SETTLEMENTDATE"].min()).to_pydatetime()
            break
    for label in reversed(months):
        frame = store.load_month(DISPATCH_TABLE, label, regions=[region], columns=["RRP"])
        if not frame.empty:
            last = pd.Timestamp(frame["SETTLEMENTDATE"].max()).to_pydatetime()
            break
    return None if first is None or last is None else (first, last)


def _sources(store: MarketStore, table: str, frame: pd.DataFrame) -> list[StoreSource]:
    """The manifest's records of the source files named in ``frame``'s provenance column."""
    names = sorted(set(frame[SOURCE_COLUMN].dropna().astype(str))) if SOURCE_COLUMN in frame.columns else []
    sources: list[StoreSource] = []
    for name in names:
        record = store.record(name)
        if record is None:
            raise StoreCoverageError(f"{store.root}: rows of {table} name the source {name}, which the manifest "
                                     "does not hold (run vpp data sync again)")
        sources.append(StoreSource(table=table, name=record.name, identity=record.identity, sha256=record.sha256,
                                   size_bytes=record.size))
    return sources


def load_store_prices(store: MarketStore, *, regions: Collection[str] | None, start: datetime,
                      end: datetime) -> StorePrices:
    """DISPATCHPRICE of ``regions`` (None: every region held) with intervals ending in [start, end] (AEST)
    and PREDISPATCHPRICE runs forecasting periods in that span, as the platform's tables, with the sources
    of their rows.

    Raises StoreCoverageError (saying what the store holds) when the store holds no DISPATCHPRICE row of
    these regions in the span, and the :mod:`aemo.errors` of rows that cannot be converted.
    """
    wanted = None if regions is None else sorted(set(regions))
    frame = store.load(DISPATCH_TABLE, start, end, regions=wanted, provenance=True)
    if frame.empty:
        named = "any region" if wanted is None else ", ".join(wanted)
        raise StoreCoverageError(
            f"the market store {store.root} holds no {DISPATCH_TABLE} of {named} for intervals ending "
            f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}; it holds {describe_holdings(held_dispatch(store))}")
    label = f"market store {store.root} {DISPATCH_TABLE}"
    dispatch = dispatch_prices_from_frame(frame.drop(columns=list(PROVENANCE_COLUMNS)), label)
    sources = _sources(store, DISPATCH_TABLE, frame)
    if REGION_SUM_TABLE in store.tables():
        columns = [local_dispatch_column(product) for product in dispatch.products if product != ENERGY]
        region_sum = store.load(REGION_SUM_TABLE, start, end, regions=wanted, columns=columns, provenance=True)
        if not region_sum.empty:
            dispatch = with_region_enablement(dispatch, region_sum.drop(columns=list(PROVENANCE_COLUMNS)),
                                              f"market store {store.root} {REGION_SUM_TABLE}")
            sources += _sources(store, REGION_SUM_TABLE, region_sum)
    predispatch = PredispatchPrices.empty(dispatch.products)
    if PREDISPATCH_TABLE in store.tables():
        runs = store.load(PREDISPATCH_TABLE, start, end + PREDISPATCH_LOOKAHEAD, regions=wanted, provenance=True)
        if not runs.empty:
            predispatch = predispatch_prices_from_frame(runs.drop(columns=list(PROVENANCE_COLUMNS)),
                                                        f"market store {store.root} {PREDISPATCH_TABLE}")
            sources += _sources(store, PREDISPATCH_TABLE, runs)
    return StorePrices(dispatch=dispatch, predispatch=predispatch, sources=tuple(sources), store_dir=store.root)


def replay_span(settings: Settings) -> tuple[datetime, datetime]:
    """The intervals (ending, AEST) the live replay reads: the history window (or the reach, when longer)
    before ``[cycle] replay_start`` to the horizon after its last day (``replay_days``)."""
    cycle = settings.cycle
    step = timedelta(minutes=settings.market.interval_minutes)
    start = cycle.replay_start - step * (settings.market_data.history_read_intervals(cycle.history_intervals) + 1)
    return start, cycle.replay_start + timedelta(days=cycle.replay_days) + step * cycle.horizon_intervals


def configured_dispatch_prices(settings: Settings) -> DispatchPrices:
    """DISPATCHPRICE of ``[market_data] source`` (see :func:`configured_market_tables`) without pre-dispatch:
    the prices the simulated market clears at."""
    if settings.market_data.source != "store":
        return load_dispatch_prices(settings.market_data.data_dir)
    return configured_market_tables(settings)[0]


def configured_market_tables(settings: Settings) -> tuple[DispatchPrices, PredispatchPrices]:
    """The price tables the platform's services serve, from ``[market_data] source``: ``files`` reads the
    tables in ``[market_data] data_dir`` (:func:`aemo.mms.load_market_data`); ``store`` reads the market store
    over the replay period (:func:`replay_span`), every region it holds. Raises the :mod:`aemo.errors` of
    data that cannot be read, StoreCoverageError when the store does not hold the replay period."""
    if settings.market_data.source != "store":
        return load_market_data(settings.market_data.data_dir)
    store = MarketStore.from_settings(settings)
    start, end = replay_span(settings)
    try:
        loaded = load_store_prices(store, regions=None, start=start, end=end)
    except StoreCoverageError as error:
        raise StoreCoverageError(f"[market_data] source = store: {error}; set [cycle] replay_start to a period "
                                 "the store holds, or sync it (vpp data sync)") from None
    return loaded.dispatch, loaded.predispatch


__all__ = [
    "StoreCoverageError",
    "StorePrices",
    "StoreSource",
    "configured_dispatch_prices",
    "configured_market_tables",
    "describe_holdings",
    "held_dispatch",
    "held_span",
    "load_store_prices",
    "replay_span",
]
