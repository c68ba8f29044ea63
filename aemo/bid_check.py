"""Checking AEMO's published bids against the platform's bid rules: every bid AEMO accepted must pass.

:func:`check_published_bids` reads the bids of AEMO's BIDDAYOFFER_D / BIDPEROFFER_D tables
(:mod:`aemo.bids`), looks up each unit's registration on the trading day (DUDETAILSUMMARY,
:mod:`aemo.registrations`) and validates every bid (:func:`algorithms.market.bid_validation.validate_bid`)
with the price limits of AEMO's MARKET_PRICE_THRESHOLDS where given, else the configured ones. The result is
kept per unit and trading day, which is how ``vpp bids check`` reports it.

The tradable products are those the data's bid types name (ENERGY and AEMO's FCAS services), so a bid type
that is neither fails V0. A unit with no registration on a trading day is not checked (its kind, loss factors
and limits are unknown) and is reported as such.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import pandas as pd

from aemo.bids import BidTables, IncompleteBid, PublishedBid, published_bids
from aemo.price_thresholds import with_price_thresholds
from aemo.registrations import UnitRegistry, registry_from_dudetailsummary
from aemo.tables import FCAS_SERVICE
from algorithms.common import nem_time
from algorithms.common.products import ENERGY
from algorithms.market.bid_validation import Violation, validate_bid
from settings import MarketRules

_FCAS = re.compile(rf"^{FCAS_SERVICE}$")


@dataclass(frozen=True)
class OfferFailure:
    """A violated rule of one offer (the bid of one OFFERDATE) of a unit's trading day."""

    offer_time: str
    violation: Violation


@dataclass(frozen=True)
class DayCheck:
    """The bids of one unit on one trading day: how many, and every rule they break.

    ``registered``: False when the unit had no registration that day (nothing was checked).
    """

    unit_id: str
    trading_day: date
    bids: int
    failures: tuple[OfferFailure, ...]
    registered: bool = True

    @property
    def passed(self) -> bool:
        """Whether every bid of the day was checked and broke no rule."""
        return self.registered and not self.failures


@dataclass(frozen=True)
class CheckReport:
    """Every unit and trading day checked, and the rows that did not make a bid."""

    days: tuple[DayCheck, ...]
    incomplete: tuple[IncompleteBid, ...]

    @property
    def bids(self) -> int:
        """Bids (offers) read."""
        return sum(day.bids for day in self.days)

    @property
    def passed_bids(self) -> int:
        """Bids checked that broke no rule."""
        return sum(day.bids for day in self.days if day.registered) - self.failed_bids

    @property
    def failed_bids(self) -> int:
        """Bids that broke at least one rule."""
        return sum(len({failure.offer_time for failure in day.failures}) for day in self.days)

    @property
    def unchecked_bids(self) -> int:
        """Bids of units with no registration on their trading day."""
        return sum(day.bids for day in self.days if not day.registered)


def tradable_products(day_offers: pd.DataFrame) -> tuple[str, ...]:
    """ENERGY and the FCAS services among the bid types of the data (AEMO's names)."""
    names = sorted(set(day_offers["BIDTYPE"].astype("str")))
    return (ENERGY, *(name for name in names if _FCAS.match(name)))


def check_published_bids(tables: BidTables, rules: MarketRules, *, registry: UnitRegistry | None = None,
                         thresholds: pd.DataFrame | None = None) -> CheckReport:
    """Validate every bid of ``tables`` (see the module docstring).

    ``registry`` / ``thresholds`` default to the DUDETAILSUMMARY / MARKET_PRICE_THRESHOLDS rows of ``tables``.
    Raises :class:`settings.PriceLimitsUnknownError` (before checking anything) when a trading day of the bids
    lies in a financial year neither the thresholds nor ``rules`` cover.
    """
    if tables.day_offers is None or tables.period_offers is None:
        return CheckReport(days=(), incomplete=())
    limits = with_price_thresholds(rules, tables.price_thresholds if thresholds is None else thresholds)
    units = registry if registry is not None else registry_from_dudetailsummary(tables.registrations)
    read = published_bids(tables.day_offers, tables.period_offers, limits.daily_bid_close)
    for day in sorted({bid.trading_day for bid in read.bids}):
        limits.price_cap_for(day)
    products = tradable_products(tables.day_offers)
    by_day: dict[tuple[str, date], list[PublishedBid]] = {}
    for bid in read.bids:
        by_day.setdefault((bid.unit_id, bid.trading_day), []).append(bid)
    days = [_check_day(unit_id, day, bids, units, limits, products)
            for (unit_id, day), bids in sorted(by_day.items())]
    return CheckReport(days=tuple(days), incomplete=read.incomplete)


def _check_day(unit_id: str, day: date, bids: Sequence[PublishedBid], units: UnitRegistry, rules: MarketRules,
               products: Sequence[str]) -> DayCheck:
    registration = units.on(unit_id, day)
    if registration is None:
        return DayCheck(unit_id, day, len(bids), (), registered=False)
    failures = [OfferFailure(f"{nem_time.from_timestamp(bid.bid.offer_time):%Y-%m-%d %H:%M:%S}", violation)
                for bid in bids
                for violation in validate_bid(bid.bid, registration, rules, products=products,
                                              withheld=bid.withheld)]
    return DayCheck(unit_id, day, len(bids), tuple(failures))
