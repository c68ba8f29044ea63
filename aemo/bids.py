"""AEMO's published bids (BIDDAYOFFER_D + BIDPEROFFER_D) read into the platform's bid model (``bid_pb2.Bid``).

AEMO publishes, the day after, the bids in force in dispatch: BIDDAYOFFER_D one row per unit, trading day, bid
type (and DIRECTION since the bidirectional-unit rules of 3 June 2024) with the band prices and the day's
fields of the offer that set them; BIDPEROFFER_D one row per interval with the period fields of whichever
offer was in force for that interval (its OFFERDATE). A unit that rebids during the day therefore has periods
from several offers on one trading day.

:func:`published_bids` makes one :class:`PublishedBid` per unit, trading day and offer (OFFERDATE): the product
offers (bid type and direction) that offer covered, each with the day's band prices and the periods in
which it was in force. How AEMO's fields map onto the model:

- unit_id = DUID, trading_day = SETTLEMENTDATE, submitted_for_trading_day = BIDSETTLEMENTDATE when it differs
  (an offer stays in force on later days until replaced), offer_time = OFFERDATE, version = VERSIONNO,
  participant_id = PARTICIPANTID, dispatch_interval = the offer's first interval in force;
- entry type and explanation from BIDDAYOFFER_D (ENTRYTYPE, REBIDEXPLANATION) for the offer it names; an offer
  BIDDAYOFFER_D does not name came in during the trading day (so after the daily close): a REBID whose
  explanation AEMO does not publish;
- direction = DIRECTION (GEN, LOAD, BIDIRECTIONAL); rows before June 2024 have none (DIRECTION_UNSPECIFIED:
  for a generator, its one side);
- band_price = PRICEBAND1..10, daily_energy_constraint_mwh = DAILYENERGYCONSTRAINT, fast_start_profile =
  MINIMUMLOAD, T1..T4;
- per interval (INTERVAL_DATETIME, interval-ending; PERIODID counts half hours in versions before 5-minute
  settlement and is not used): MAXAVAIL, BANDAVAIL1..10, ROCUP, ROCDOWN, PASAAVAILABILITY, FIXEDLOAD,
  ENERGYLIMIT, RECALL_PERIOD, ENABLEMENTMIN, LOWBREAKPOINT, HIGHBREAKPOINT, ENABLEMENTMAX. A blank number is 0
  (AEMO leaves fields blank that do not apply, e.g. ramp rates of an FCAS offer).

The public tables withhold the rebid event, aware and decision times, the category and the reference id of
every bid, and the explanation of offers BIDDAYOFFER_D does not name: each :class:`PublishedBid` lists them
in ``withheld`` so validation does not judge data that is not there. Period offers whose day offer is not in
the data (no band prices) are returned as :class:`IncompleteBid`, never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from aemo.errors import AemoDataError
from aemo.table_files import read_tables
from aemo.tables import BANDS
from algorithms.common import nem_time
from algorithms.market.bid_validation import entry_type_at
from vpp.v1 import bid_pb2, common_pb2

DAY_OFFERS = "BIDDAYOFFER_D"
PERIOD_OFFERS = "BIDPEROFFER_D"
PRICE_THRESHOLDS = "MARKET_PRICE_THRESHOLDS"
REGISTRATIONS = "DUDETAILSUMMARY"
TABLES = (DAY_OFFERS, PERIOD_OFFERS, PRICE_THRESHOLDS, REGISTRATIONS)
DIRECTIONS: dict[str, int] = {"": common_pb2.DIRECTION_UNSPECIFIED, "GEN": common_pb2.DIRECTION_GEN,
                              "LOAD": common_pb2.DIRECTION_LOAD,
                              "BIDIRECTIONAL": common_pb2.DIRECTION_BIDIRECTIONAL}
DIRECTION_NAMES: dict[int, str] = {value: name for name, value in DIRECTIONS.items()}
ENTRY_TYPES: dict[str, int] = {"DAILY": bid_pb2.ENTRY_TYPE_DAILY, "REBID": bid_pb2.ENTRY_TYPE_REBID}
# Fields BIDDAYOFFER_D / BIDPEROFFER_D never publish.
ALWAYS_WITHHELD = frozenset({"event_time", "aware_time", "decision_time", "rebid_category", "reference_id"})
# The platform's bid fields and the AEMO columns they come from (for naming a field in AEMO's terms).
AEMO_COLUMNS: dict[str, str] = {
    "unit_id": "DUID", "trading_day": "SETTLEMENTDATE", "offer_time": "OFFERDATE", "entry_type": "ENTRYTYPE",
    "rebid_explanation": "REBIDEXPLANATION", "direction": "DIRECTION", "product": "BIDTYPE",
    "band_price": "PRICEBAND1..10", "band_avail_mw": "BANDAVAIL1..10", "max_avail_mw": "MAXAVAIL",
    "pasa_avail_mw": "PASAAVAILABILITY", "fixed_load_mw": "FIXEDLOAD", "energy_limit_mwh": "ENERGYLIMIT",
    "ramp_up_rate_mw_per_min": "ROCUP", "ramp_down_rate_mw_per_min": "ROCDOWN",
    "trapezium": "ENABLEMENTMIN/LOWBREAKPOINT/HIGHBREAKPOINT/ENABLEMENTMAX",
    "daily_energy_constraint_mwh": "DAILYENERGYCONSTRAINT", "periods.dispatch_interval": "INTERVAL_DATETIME",
    "dispatch_interval": "INTERVAL_DATETIME", "periods": "BIDPEROFFER_D", "offers": "BIDDAYOFFER_D",
    "event_time": "REBID_EVENT_TIME", "aware_time": "REBID_AWARE_TIME", "decision_time": "REBID_DECISION_TIME",
    "rebid_category": "REBID_CATEGORY", "reference_id": "REFERENCE_ID",
}
_PRICE_COLUMNS = tuple(f"PRICEBAND{band}" for band in BANDS)
_AVAIL_COLUMNS = tuple(f"BANDAVAIL{band}" for band in BANDS)
_PERIOD_NUMBERS = ("MAXAVAIL", "ROCUP", "ROCDOWN", "PASAAVAILABILITY", "FIXEDLOAD", "ENERGYLIMIT",
                   "RECALL_PERIOD", "ENABLEMENTMIN", "LOWBREAKPOINT", "HIGHBREAKPOINT", "ENABLEMENTMAX")
_DAY_NUMBERS = ("DAILYENERGYCONSTRAINT", "MINIMUMLOAD", "T1", "T2", "T3", "T4")
_OFFER_KEY = ("DUID", "SETTLEMENTDATE", "BIDTYPE", "_direction")


def aemo_column(field: str) -> str:
    """AEMO's column for a bid field named by a violation (the field itself when AEMO has no column)."""
    return AEMO_COLUMNS.get(field, field)


@dataclass(frozen=True)
class PublishedBid:
    """One offer of a unit for a trading day as AEMO published it, and the fields AEMO withheld."""

    bid: bid_pb2.Bid
    withheld: frozenset[str]

    @property
    def unit_id(self) -> str:
        """The unit (DUID)."""
        return self.bid.unit_id

    @property
    def trading_day(self) -> date:
        """The trading day the offer was in force on."""
        return date.fromisoformat(self.bid.trading_day)


@dataclass(frozen=True)
class IncompleteBid:
    """Rows that do not make a bid: period offers without their day offer (or the reverse)."""

    unit_id: str
    trading_day: date
    products: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class PublishedBids:
    """Every bid read from AEMO's tables, and the rows that could not be made into one."""

    bids: tuple[PublishedBid, ...]
    incomplete: tuple[IncompleteBid, ...]


@dataclass(frozen=True)
class BidTables:
    """The tables read from AEMO's files (normalised, :mod:`aemo.tables`); None for a table no file held."""

    day_offers: pd.DataFrame | None
    period_offers: pd.DataFrame | None
    price_thresholds: pd.DataFrame | None
    registrations: pd.DataFrame | None
    files: tuple[str, ...]


def _directions(frame: pd.DataFrame, table: str) -> pd.Series:
    """The Direction enum value of each row (blank or absent DIRECTION: unspecified)."""
    if "DIRECTION" not in frame.columns:
        return pd.Series(common_pb2.DIRECTION_UNSPECIFIED, index=frame.index, dtype="int64")
    text = frame["DIRECTION"].fillna("").astype("str").str.strip().str.upper()
    unknown = sorted(set(text) - set(DIRECTIONS))
    if unknown:
        raise AemoDataError(f"{table}: DIRECTION {', '.join(unknown)} is none of GEN, LOAD, BIDIRECTIONAL")
    return text.map(DIRECTIONS).astype("int64")


def _numbers(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The columns as a float matrix, blanks and absent columns 0."""
    values = np.zeros((len(frame), len(columns)))
    for position, column in enumerate(columns):
        if column in frame.columns:
            values[:, position] = np.nan_to_num(pd.to_numeric(frame[column], errors="coerce").to_numpy(
                dtype=np.float64), nan=0.0)
    return values


def _utc_seconds(times: pd.Series) -> np.ndarray:
    """UTC epoch seconds of naive AEST market times."""
    market = times.to_numpy(dtype="datetime64[s]").astype(np.int64)
    return market - int(nem_time.AEST_OFFSET.total_seconds())


def _day(value: object) -> date:
    """The date of a SETTLEMENTDATE group key (a pandas Timestamp)."""
    return pd.Timestamp(cast(datetime, value)).date()


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def _check_columns(frame: pd.DataFrame, table: str, columns: Iterable[str]) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise AemoDataError(f"{table} lacks the column(s) {', '.join(missing)}")


def published_bids(day_offers: pd.DataFrame, period_offers: pd.DataFrame, daily_bid_close: time) -> PublishedBids:
    """AEMO's BIDDAYOFFER_D and BIDPEROFFER_D rows (normalised) as one bid per unit, trading day and offer.

    See the module docstring; ``daily_bid_close`` (market time on D-1, ``[market] daily_bid_close``) tells the
    entry type of an offer AEMO does not name. Bids come sorted by unit, trading day and offer time. Raises
    :class:`AemoDataError` for a missing column or an unknown DIRECTION.
    """
    _check_columns(day_offers, DAY_OFFERS, ("SETTLEMENTDATE", "DUID", "BIDTYPE", "OFFERDATE", *_PRICE_COLUMNS))
    _check_columns(period_offers, PERIOD_OFFERS, ("SETTLEMENTDATE", "DUID", "BIDTYPE", "OFFERDATE",
                                                  "INTERVAL_DATETIME", "MAXAVAIL", *_AVAIL_COLUMNS))
    days = day_offers.assign(_direction=_directions(day_offers, DAY_OFFERS)).reset_index(drop=True)
    days = days.drop_duplicates(list(_OFFER_KEY), keep="last").reset_index(drop=True)
    periods = period_offers.assign(_direction=_directions(period_offers, PERIOD_OFFERS))
    periods = periods.sort_values(["DUID", "SETTLEMENTDATE", "OFFERDATE", "BIDTYPE", "_direction",
                                   "INTERVAL_DATETIME"], kind="stable").reset_index(drop=True)
    day_position = pd.Series(np.arange(len(days)), index=pd.MultiIndex.from_frame(days[list(_OFFER_KEY)]))
    matched = day_position.reindex(pd.MultiIndex.from_frame(periods[list(_OFFER_KEY)])).to_numpy()
    has_day = ~np.isnan(matched)
    incomplete = _incomplete(days, periods, has_day)
    periods = periods[has_day].reset_index(drop=True)
    tables = _Arrays.of(days, periods, matched[has_day].astype(np.int64), daily_bid_close)
    bids = [_bid(tables, rows, unit_id, day, offer_time) for (unit_id, day, offer_time), rows
            in periods.groupby(["DUID", "SETTLEMENTDATE", "OFFERDATE"], sort=True).indices.items()]
    return PublishedBids(bids=tuple(bids), incomplete=incomplete)


@dataclass(frozen=True)
class _Arrays:
    """The day and period rows as plain arrays and look-ups, for building bids without pandas indexing."""

    day_product: list[str]
    day_direction: list[int]
    day_prices: np.ndarray
    day_numbers: np.ndarray
    named: dict[tuple[str, pd.Timestamp, pd.Timestamp], tuple[str, str]]  # offer -> (entry type, explanation)
    participants: dict[tuple[str, pd.Timestamp], str]
    day_of_period: np.ndarray
    bands: np.ndarray
    period_numbers: np.ndarray
    seconds: np.ndarray
    versions: np.ndarray
    submitted_for: list[date | None]
    daily_bid_close: time

    @classmethod
    def of(cls, days: pd.DataFrame, periods: pd.DataFrame, day_of_period: np.ndarray,
           daily_bid_close: time) -> _Arrays:
        units, dates, offers = list(days["DUID"]), list(days["SETTLEMENTDATE"]), list(days["OFFERDATE"])
        entries = [_text(v).strip().upper() for v in days.get("ENTRYTYPE", pd.Series("", index=days.index))]
        explanations = [_text(v) for v in days.get("REBIDEXPLANATION", pd.Series("", index=days.index))]
        named: dict[tuple[str, pd.Timestamp, pd.Timestamp], tuple[str, str]] = {}
        for key, entry, explanation in zip(zip(units, dates, offers, strict=True), entries, explanations,
                                           strict=True):
            named.setdefault(key, (entry, explanation))
        participants: dict[tuple[str, pd.Timestamp], str] = {}
        for unit_id, day, participant in zip(units, dates, days.get("PARTICIPANTID", pd.Series("", index=days.index)),
                                             strict=True):
            if _text(participant):
                participants.setdefault((unit_id, day), _text(participant))
        versions = (pd.to_numeric(periods["VERSIONNO"], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
                    if "VERSIONNO" in periods.columns else np.zeros(len(periods), dtype=np.int64))
        submitted = (list(pd.to_datetime(periods["BIDSETTLEMENTDATE"]).dt.date)
                     if "BIDSETTLEMENTDATE" in periods.columns else [None] * len(periods))
        return cls(day_product=[str(v) for v in days["BIDTYPE"]], day_direction=[int(v) for v in days["_direction"]],
                   day_prices=_numbers(days, _PRICE_COLUMNS), day_numbers=_numbers(days, _DAY_NUMBERS),
                   named=named, participants=participants, day_of_period=day_of_period,
                   bands=_numbers(periods, _AVAIL_COLUMNS), period_numbers=_numbers(periods, _PERIOD_NUMBERS),
                   seconds=_utc_seconds(periods["INTERVAL_DATETIME"]), versions=versions,
                   submitted_for=[d if isinstance(d, date) else None for d in submitted],
                   daily_bid_close=daily_bid_close)


def _incomplete(days: pd.DataFrame, periods: pd.DataFrame, has_day: np.ndarray) -> tuple[IncompleteBid, ...]:
    """Period offers without their day offer, and day offers without any period offer."""
    found: list[IncompleteBid] = []
    orphans = periods[~has_day]
    for (unit_id, day), rows in orphans.groupby(["DUID", "SETTLEMENTDATE"], sort=True):
        found.append(IncompleteBid(str(unit_id), _day(day), tuple(sorted(set(rows["BIDTYPE"]))),
                                   f"{PERIOD_OFFERS} rows without their {DAY_OFFERS} row (no band prices)"))
    period_keys = pd.MultiIndex.from_frame(periods[list(_OFFER_KEY)])
    lonely = days[~pd.MultiIndex.from_frame(days[list(_OFFER_KEY)]).isin(period_keys)]
    for (unit_id, day), rows in lonely.groupby(["DUID", "SETTLEMENTDATE"], sort=True):
        found.append(IncompleteBid(str(unit_id), _day(day), tuple(sorted(set(rows["BIDTYPE"]))),
                                   f"{DAY_OFFERS} rows without any {PERIOD_OFFERS} row (no periods)"))
    return tuple(found)


def _bid(tables: _Arrays, rows: np.ndarray, unit_id: str, day: pd.Timestamp, offer_time: pd.Timestamp,
         ) -> PublishedBid:
    """One offer's bid: its header from the day offer naming it (if any), its product offers and periods."""
    trading_day = day.date()
    offered = offer_time.to_pydatetime()
    first = int(rows[np.argmin(tables.seconds[rows])])
    bid = bid_pb2.Bid(unit_id=str(unit_id), trading_day=trading_day.isoformat(),
                      offer_time=nem_time.to_timestamp(offered), version=int(tables.versions[first]),
                      participant_id=tables.participants.get((unit_id, day), ""))
    bid.dispatch_interval.seconds = int(tables.seconds[first])
    submitted_for = tables.submitted_for[first]
    if submitted_for is not None and submitted_for != trading_day:
        bid.submitted_for_trading_day = submitted_for.isoformat()
    withheld = set(ALWAYS_WITHHELD)
    named = tables.named.get((unit_id, day, offer_time))
    if named is not None:
        entry, bid.rebid_explanation = named
        bid.entry_type = ENTRY_TYPES.get(  # type: ignore[assignment]
            entry, entry_type_at(trading_day, offered, tables.daily_bid_close))
    else:
        bid.entry_type = entry_type_at(trading_day, offered, tables.daily_bid_close)
        withheld.add("rebid_explanation")
    day_rows = tables.day_of_period[rows]
    for day_row in sorted(set(day_rows.tolist()), key=lambda r: (tables.day_product[r], tables.day_direction[r])):
        _add_offer(bid, tables, day_row, rows[day_rows == day_row])
    return PublishedBid(bid=bid, withheld=frozenset(withheld))


def _add_offer(bid: bid_pb2.Bid, tables: _Arrays, day_row: int, rows: np.ndarray) -> None:
    """The product offer of day-offer row ``day_row`` with the period rows ``rows``."""
    offer = bid.offers.add(product=tables.day_product[day_row],
                           direction=tables.day_direction[day_row],  # type: ignore[arg-type]
                           band_price=tables.day_prices[day_row].tolist())
    constraint, minimum_load, t1, t2, t3, t4 = tables.day_numbers[day_row].tolist()
    offer.daily_energy_constraint_mwh = constraint
    if any((minimum_load, t1, t2, t3, t4)):
        offer.fast_start_profile.CopyFrom(bid_pb2.FastStartProfile(
            minimum_load_mw=minimum_load, t1_minutes=t1, t2_minutes=t2, t3_minutes=t3, t4_minutes=t4))
    for band_row, numbers, second in zip(tables.bands[rows].tolist(), tables.period_numbers[rows].tolist(),
                                         tables.seconds[rows].tolist(), strict=True):
        max_avail, ramp_up, ramp_down, pasa, fixed, limit, recall, e_min, low, high, e_max = numbers
        period = offer.periods.add(max_avail_mw=max_avail, band_avail_mw=band_row,
                                   ramp_up_rate_mw_per_min=ramp_up, ramp_down_rate_mw_per_min=ramp_down,
                                   pasa_avail_mw=pasa, fixed_load_mw=fixed, energy_limit_mwh=limit,
                                   pasa_recall_period=recall, enablement_min_mw=e_min, low_breakpoint_mw=low,
                                   high_breakpoint_mw=high, enablement_max_mw=e_max)
        period.dispatch_interval.seconds = second


def read_bid_tables(paths: Sequence[Path]) -> BidTables:
    """BIDDAYOFFER_D, BIDPEROFFER_D, MARKET_PRICE_THRESHOLDS and DUDETAILSUMMARY from AEMO's files: zips, CSVs,
    or folders holding them (any depth; monthly archives of other tables are skipped unread). Where files
    repeat a key, the last file's row holds. Raises :class:`AemoDataError` naming the file it cannot read."""
    found = read_tables(paths, TABLES)
    return BidTables(day_offers=found.frames[DAY_OFFERS], period_offers=found.frames[PERIOD_OFFERS],
                     price_thresholds=found.frames[PRICE_THRESHOLDS], registrations=found.frames[REGISTRATIONS],
                     files=found.files)
