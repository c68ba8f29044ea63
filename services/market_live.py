"""The live source of the market-data service: AEMO's current reports, followed as AEMO publishes them.

``[market_data] source = "live"`` (``vpp up --market-data live --source URL``): the service follows the
``Reports/Current`` folders of ``[market_data] live_folders`` at ``[market_store] source`` (NEMWEB, or a
stand-in) every ``live_poll_s`` seconds with :class:`aemo.live.LiveFollower`, which ingests each new file
once into the market store; :class:`aemo.live_market.LiveMarketTables` turns what the store holds into the
snapshot's tables, each dispatch price known at the publication time of its file
(:class:`algorithms.market.as_of.ObservedPublication`). What the store already holds is served at once
after a restart; only new files are downloaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from aemo.live import FollowerConfig, LiveFollower
from aemo.live_market import LiveMarketTables
from aemo.nemweb import Source, SourceError, open_source
from aemo.store import MarketStore
from algorithms.common.nem_time import INTERVAL
from algorithms.market.as_of import DEFAULT_HISTORY_INTERVALS, MarketTables
from settings import Settings

log = logging.getLogger(__name__)

# Kept on top of the cycle's history: a day, so a snapshot a little in the past still has its week.
WINDOW_MARGIN = timedelta(days=1)


def follower_config(settings: Settings) -> FollowerConfig:
    """The follower's configuration from ``[market_data]`` (folders, poll) and ``[market_store]`` (path,
    downloads at once)."""
    market_data = settings.market_data
    return FollowerConfig(folders=market_data.live_folders, current_path=settings.market_store.current_path,
                          poll_s=market_data.live_poll_s, workers=settings.market_store.workers,
                          retry_max_s=market_data.live_retry_max_s)


def live_source(settings: Settings) -> Source:
    """``[market_store] source`` with the live download limits (attempts, timeout) of ``[market_data]``."""
    return open_source(settings.market_store.source, timeout_s=settings.market_data.live_timeout_s,
                       attempts=settings.market_data.live_attempts, backoff_s=settings.market_store.backoff_s)


def live_window(settings: Settings) -> timedelta:
    """How much live data is kept in memory: the cycle's history and a day."""
    return INTERVAL * (settings.cycle.history_intervals or DEFAULT_HISTORY_INTERVALS) + WINDOW_MARGIN


@asynccontextmanager
async def live_market_tables(settings: Settings, *, source: Source | None = None,
                             store: MarketStore | None = None) -> AsyncIterator[Callable[[], MarketTables]]:
    """Follow the live reports while the ``async with`` lasts; yields the function giving the current tables.

    Loads what the store (``[market_store] folder``, or ``store``) holds first, then polls. A source that
    cannot be reached now is polled all the same (NEMWEB comes back); one that can never be used (not an
    address, no such folder) raises :class:`aemo.nemweb.SourceError`. :class:`aemo.store.StoreError` when
    another sync holds the store.
    """
    store = store if store is not None else MarketStore.from_settings(settings)
    source = source if source is not None else live_source(settings)
    tables = LiveMarketTables(store, dispatch_price_delay_s=settings.market_data.dispatch_price_delay_s,
                              window=live_window(settings))
    await asyncio.to_thread(tables.load)
    try:
        await asyncio.to_thread(source.probe)
    except SourceError as exc:
        log.warning("live market data: %s; polling it all the same", exc)
    follower = LiveFollower(store, source, follower_config(settings), listeners=[tables.on_ingested])
    await asyncio.to_thread(follower.start)
    log.info("live market data: following %s of %s every %.1f s", ", ".join(follower.config.folders),
             source.description, follower.config.poll_s)
    try:
        yield tables.current
    finally:
        await asyncio.to_thread(follower.stop)


__all__ = ["follower_config", "live_market_tables", "live_source", "live_window"]
