"""The platform's price tables over AEMO's live reports, as the follower ingests them.

:class:`LiveMarketTables` keeps in memory the dispatch prices of the DispatchIS reports (DISPATCHPRICE) and
the regions' FCAS local dispatch they carry (DISPATCHREGIONSUM ``<product>LOCALDISPATCH``, the market depth
attached to the dispatch prices as :attr:`~algorithms.market.prices.DispatchPrices.region_enabled_mw`, known
with them), the pre-dispatch runs of the PredispatchIS reports (PREDISPATCHPRICE) and the P5MIN runs of the P5MIN
reports (P5MIN_REGIONSOLUTION) that the market store holds, and turns them into the structures the as-of
snapshot is built from (:class:`algorithms.market.as_of.MarketTables`):
:class:`~algorithms.market.prices.DispatchPrices`, with an :class:`~algorithms.market.as_of.ObservedPublication`
saying when each interval became known (the publication time of the file that carried it), and
:class:`~algorithms.market.prices.PredispatchPrices` / :class:`~algorithms.market.prices.P5minPrices`
whose runs are known at their file's publication time.

It loads what the store holds when it starts (so a restarted service resumes without downloading
anything) and is a listener of :class:`aemo.live.LiveFollower`: each new file's rows are read back from
the store (its own parts only) and the tables rebuilt. A re-published report (same report, newer
publication) replaces its rows and their publication time. Only rows within ``window`` of the newest
publication are kept (dispatch intervals by their end; pre-dispatch and P5MIN runs, of which only the newest
matter, by their publication within ``runs_window``), which bounds memory and rebuild time. Thread-safe: the
follower's thread updates, any thread reads :meth:`LiveMarketTables.current`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pandas as pd

from aemo.archive_files import parse_file_name
from aemo.live import IngestedFile
from aemo.mms import REGION_SUM_TABLE, dispatch_prices_from_frame, predispatch_prices_from_frame, with_region_enablement
from aemo.p5min import p5min_prices
from aemo.store import PUBLISHED_COLUMN, SOURCE_COLUMN, MarketStore
from algorithms.common.nem_time import AEST_OFFSET
from algorithms.market.as_of import MarketTables, ObservedPublication

log = logging.getLogger(__name__)

DISPATCH_REPORT = "DISPATCHIS"
PREDISPATCH_REPORT = "PREDISPATCHIS"
P5MIN_REPORT = "P5MIN"
DISPATCH_TABLE = "DISPATCHPRICE"
PREDISPATCH_TABLE = "PREDISPATCHPRICE"
P5MIN_TABLE = "P5MIN_REGIONSOLUTION"
IDENTITY_COLUMN = "_identity"
# The tables each report gives (DispatchIS: the prices and the regions' FCAS local dispatch).
_REPORT_TABLES = {DISPATCH_REPORT: (DISPATCH_TABLE, REGION_SUM_TABLE), PREDISPATCH_REPORT: (PREDISPATCH_TABLE,),
                  P5MIN_REPORT: (P5MIN_TABLE,)}
# Per table: the key of one value, and the column the window is kept on.
_KEYS = {DISPATCH_TABLE: ("SETTLEMENTDATE", "REGIONID"),
         REGION_SUM_TABLE: ("SETTLEMENTDATE", "REGIONID", "INTERVENTION"),
         PREDISPATCH_TABLE: ("PREDISPATCHSEQNO", "REGIONID", "DATETIME"),
         P5MIN_TABLE: ("RUN_DATETIME", "REGIONID", "INTERVAL_DATETIME")}
_WINDOW_COLUMN = {DISPATCH_TABLE: "SETTLEMENTDATE", REGION_SUM_TABLE: "SETTLEMENTDATE",
                  PREDISPATCH_TABLE: PUBLISHED_COLUMN, P5MIN_TABLE: PUBLISHED_COLUMN}
# Tables kept over the dispatch history's window (the others: over the runs' window).
_INTERVAL_TABLES = frozenset({DISPATCH_TABLE, REGION_SUM_TABLE})


def _identity(name: str) -> str:
    return parse_file_name(name).identity


class LiveMarketTables:
    """Dispatch prices (with the regions' FCAS local dispatch), pre-dispatch and P5MIN runs of the live
    reports in ``store`` (see the module docstring).

    ``dispatch_price_delay_s``: a value published later than its interval end + this many seconds is LATE.
    ``window``: how much dispatch history is kept (default 8 days: a week of history for the cycle and a day
    to spare); ``runs_window``: how long pre-dispatch and P5MIN runs are kept after their publication.
    """

    def __init__(self, store: MarketStore, *, dispatch_price_delay_s: float,
                 window: timedelta = timedelta(days=8), runs_window: timedelta = timedelta(days=1)) -> None:
        self.store = store
        self.dispatch_price_delay_s = dispatch_price_delay_s
        self.window = window
        self.runs_window = runs_window
        self._lock = threading.Lock()
        self._rows: dict[str, pd.DataFrame] = {table: pd.DataFrame() for table in _KEYS}
        self._current = self._build()

    def load(self) -> int:
        """Read the live reports the store holds (within ``window`` of the newest); returns the files read."""
        records = self.store.current_reports(tuple(_REPORT_TABLES))
        if not records:
            return 0
        newest = max((record.published for record in records if record.published is not None), default=None)
        recent = [record for record in records
                  if newest is None or record.published is None or record.published >= newest - self.window]
        by_table: dict[str, list[str]] = {}
        for record in recent:
            for table in _REPORT_TABLES[parse_file_name(record.name).subject]:
                by_table.setdefault(table, []).append(record.name)
        with self._lock:
            for table, names in by_table.items():
                self._rows[table] = self._merge(table, self._rows[table], self._read(table, names))
            self._current = self._build()
        log.info("live market data: %d reports loaded from the store (%s)", len(recent), self.describe())
        return len(recent)

    def on_ingested(self, files: Sequence[IngestedFile]) -> None:
        """Listener of the follower: take the rows of the DispatchIS / PredispatchIS / P5MIN files just
        committed."""
        by_table: dict[str, list[str]] = {}
        for ingested in files:
            for table in _REPORT_TABLES.get(parse_file_name(ingested.name).subject, ()):
                if table in ingested.tables:
                    by_table.setdefault(table, []).append(ingested.name)
        if not by_table:
            return
        with self._lock:
            for table, names in by_table.items():
                self._rows[table] = self._merge(table, self._rows[table], self._read(table, names))
            self._current = self._build()

    def current(self) -> MarketTables:
        """The tables as of the last file taken (immutable: safe to use while newer files arrive)."""
        with self._lock:
            return self._current

    def describe(self) -> str:
        """One line: intervals, regions, pre-dispatch and P5MIN runs held."""
        tables = self.current()
        dispatch = tables.dispatch
        span = (f"intervals {dispatch.intervals[0]} .. {dispatch.intervals[-1]}" if len(dispatch.intervals)
                else "no dispatch prices yet")
        p5min_runs = len(tables.p5min.run_time) if tables.p5min is not None else 0
        return (f"{span}, {len(dispatch.regions)} regions, {len(dispatch.products)} products, "
                f"{len(tables.predispatch.run_time)} pre-dispatch runs, {p5min_runs} P5MIN runs")

    # -- rows -----------------------------------------------------------------------------------------

    def _read(self, table: str, names: Sequence[str]) -> pd.DataFrame:
        """The rows the files ``names`` gave ``table``, with their report identity and publication time (a
        file whose header and name carry no time counts as published when it was ingested)."""
        frame = self.store.load_sources(table, names)
        if frame.empty:
            return frame
        sources = frame[SOURCE_COLUMN].astype(str)
        identities = {name: _identity(name) for name in sources.unique()}
        frame = frame.assign(**{IDENTITY_COLUMN: sources.map(identities)})
        if frame[PUBLISHED_COLUMN].isna().any():
            ingested = {}
            for name in sources[frame[PUBLISHED_COLUMN].isna()].unique():
                record = self.store.record(name)
                ingested[name] = pd.Timestamp(record.ingested_at + AEST_OFFSET) if record else pd.NaT
            frame[PUBLISHED_COLUMN] = frame[PUBLISHED_COLUMN].fillna(sources.map(ingested))
        return frame

    def _merge(self, table: str, held: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
        """``held`` without the rows of the reports ``new`` re-publishes, plus ``new``; one row per key (the
        newest publication's); only what lies within the table's window of the newest publication."""
        if new.empty:
            return held
        if not held.empty:
            held = held[~held[IDENTITY_COLUMN].isin(new[IDENTITY_COLUMN].unique())]
        frame = new if held.empty else pd.concat([held, new], ignore_index=True)
        keys = [column for column in _KEYS[table] if column in frame.columns]
        window = self.window if table in _INTERVAL_TABLES else self.runs_window
        frame = frame.sort_values(PUBLISHED_COLUMN, kind="stable").drop_duplicates(keys, keep="last")
        newest = frame[PUBLISHED_COLUMN].max()
        frame = frame[frame[_WINDOW_COLUMN[table]] >= newest - pd.Timedelta(window)]
        merged: pd.DataFrame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
        return merged

    def _build(self) -> MarketTables:
        """The snapshot's structures from the rows held."""
        dispatch_rows = self._rows[DISPATCH_TABLE]
        if dispatch_rows.empty:
            dispatch_rows = pd.DataFrame({column: pd.Series(dtype=object)
                                          for column in ("SETTLEMENTDATE", "REGIONID", "RRP")})
            intervals = np.array([], dtype="datetime64[s]")
            published = np.array([], dtype="datetime64[s]")
        else:
            # An interval is known when the last of its regions' rows was published (one file, normally).
            known = dispatch_rows.groupby("SETTLEMENTDATE", sort=True)[PUBLISHED_COLUMN].max()
            intervals = known.index.to_numpy(dtype="datetime64[s]")
            published = known.to_numpy(dtype="datetime64[s]")
        dispatch = dispatch_prices_from_frame(dispatch_rows, "live DispatchIS reports")
        region_sum_rows = self._rows[REGION_SUM_TABLE]
        if not region_sum_rows.empty:
            dispatch = with_region_enablement(dispatch, region_sum_rows, f"live DispatchIS reports {REGION_SUM_TABLE}")
        predispatch_rows = self._rows[PREDISPATCH_TABLE]
        if predispatch_rows.empty:
            predispatch_rows = pd.DataFrame({column: pd.Series(dtype=object) for column in (
                "PREDISPATCHSEQNO", "REGIONID", "DATETIME", "RRP", "LASTCHANGED", PUBLISHED_COLUMN)})
        predispatch = predispatch_prices_from_frame(predispatch_rows, "live PredispatchIS reports",
                                                    known_at_column=PUBLISHED_COLUMN)
        publication = ObservedPublication(dispatch_price_delay_s=self.dispatch_price_delay_s,
                                          intervals=intervals, published=published)
        p5min_rows = self._rows[P5MIN_TABLE]
        # A run is known when its file was published (not at its rows' LASTCHANGED, a few seconds earlier).
        p5min = (None if p5min_rows.empty else
                 p5min_prices(p5min_rows.drop(columns=["LASTCHANGED"], errors="ignore"), "live P5MIN reports"))
        return MarketTables(dispatch=dispatch, predispatch=predispatch, publication=publication, p5min=p5min)


__all__ = ["LiveMarketTables"]
