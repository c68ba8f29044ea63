"""When a new bid is worth submitting: material differences from the bid in force, as specific reasons.

A cycle always builds a fresh bid from its plan, but it only rebids when the new bid differs
materially from the last accepted bid covering the same intervals; otherwise the bid in force stands
and the market keeps dispatching it. The differences become the rebid's reason, so every version in
the audit trail says what changed (NEM rebid reasons must be brief, verifiable and specific).
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from google.protobuf.timestamp_pb2 import Timestamp

from algorithms.common.nem_time import from_timestamp
from algorithms.market.bid_columns import ColumnarBid, PeriodColumns, bid_of
from vpp.v1 import bid_pb2, common_pb2

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

_SIDES = {common_pb2.DIRECTION_GEN: "GEN", common_pb2.DIRECTION_LOAD: "LOAD"}


def _offer_label(offer: bid_pb2.ProductOffer) -> str:
    side = _SIDES.get(offer.direction)
    return f"{offer.product}/{side}" if side else offer.product


def _interval_seconds(periods: Sequence[bid_pb2.PeriodOffer]) -> IntArray:
    """UTC seconds of every period's interval, in period order (cheap: no datetime per period)."""
    return np.fromiter((p.dispatch_interval.seconds for p in periods), dtype=np.int64, count=len(periods))


def _standing_positions(new_seconds: IntArray, standing_seconds: IntArray) -> IntArray:
    """For each new period, the position of the standing period of the same interval (the last one when the
    standing offer repeats an interval), or -1 when the standing offer does not cover it."""
    if not len(standing_seconds):
        return np.full(len(new_seconds), -1, dtype=np.int64)
    order = np.argsort(standing_seconds, kind="stable")
    ordered = standing_seconds[order]
    candidate = np.maximum(np.searchsorted(ordered, new_seconds, side="right") - 1, 0)
    return np.where(ordered[candidate] == new_seconds, order[candidate], -1)


def _band_shift_mw(new: Sequence[float], standing: Sequence[float]) -> float:
    """Largest band availability move (MW) of one period; infinite when the band counts differ."""
    if len(new) != len(standing):
        return math.inf
    return max((abs(a - b) for a, b in zip(new, standing, strict=True)), default=0.0)


def _band_shifts_mw(pairs: Sequence[tuple[bid_pb2.PeriodOffer, bid_pb2.PeriodOffer]]) -> FloatArray:
    """Largest band availability move (MW) of every (new, standing) period pair, as one array operation
    when every period has the same number of bands."""
    new_bands = [list(p.band_avail_mw) for p, _ in pairs]
    old_bands = [list(o.band_avail_mw) for _, o in pairs]
    counts = {len(bands) for bands in itertools.chain(new_bands, old_bands)}
    if len(counts) == 1 and counts != {0}:
        shift: FloatArray = np.abs(np.array(new_bands) - np.array(old_bands)).max(axis=1)
        return shift
    return np.array([_band_shift_mw(n, o) for n, o in zip(new_bands, old_bands, strict=True)], dtype=np.float64)


def _availability_moves(pairs: Sequence[tuple[bid_pb2.PeriodOffer, bid_pb2.PeriodOffer]],
                        tolerance_mw: float) -> BoolArray:
    """Which (new, standing) period pairs move MAXAVAIL or any band availability by more than
    ``tolerance_mw`` (MW)."""
    new_max = np.fromiter((p.max_avail_mw for p, _ in pairs), dtype=np.float64, count=len(pairs))
    old_max = np.fromiter((o.max_avail_mw for _, o in pairs), dtype=np.float64, count=len(pairs))
    moved: BoolArray = (np.abs(new_max - old_max) > tolerance_mw) | (_band_shifts_mw(pairs) > tolerance_mw)
    return moved


def _offer_changes(new: bid_pb2.ProductOffer, standing: bid_pb2.ProductOffer | None,
                   tolerance_mw: float) -> list[str]:
    label = _offer_label(new)
    if standing is None:
        return [f"{label} not offered in the bid in force"]
    changes: list[str] = []
    if list(new.band_price) != list(standing.band_price):
        changes.append(f"{label} band prices changed")
    new_periods, old_periods = new.periods, standing.periods
    new_seconds = _interval_seconds(new_periods)
    positions = _standing_positions(new_seconds, _interval_seconds(old_periods))
    uncovered = np.flatnonzero(positions < 0)
    if len(uncovered):
        first_new = new_periods[int(uncovered[np.argmin(new_seconds[uncovered])])]
        changes.append(f"{label} adds {len(uncovered)} intervals from "
                       f"{from_timestamp(first_new.dispatch_interval):%H:%M}")
    covered = positions >= 0
    shared = [(new_periods[i], old_periods[j])
              for i, j in zip(np.flatnonzero(covered).tolist(), positions[covered].tolist(), strict=True)]
    if tolerance_mw >= 0:
        # Identical period offers cannot move: only the (few) differing pairs are compared numerically.
        shared = list(itertools.compress(shared, itertools.starmap(operator.ne, shared)))
    if not shared:
        return changes
    moved = np.flatnonzero(_availability_moves(shared, tolerance_mw))
    if len(moved):
        new_first, old_first = shared[int(moved[0])]
        changes.append(f"{label} availability changes in {len(moved)} intervals, first "
                       f"{from_timestamp(new_first.dispatch_interval):%H:%M} "
                       f"MAXAVAIL {old_first.max_avail_mw:.0f}->{new_first.max_avail_mw:.0f} MW")
    return changes


def _seconds_text(utc_seconds: int) -> str:
    """Interval-ending AEST ``%H:%M`` of UTC epoch seconds (as :func:`from_timestamp` reads them)."""
    return f"{from_timestamp(Timestamp(seconds=utc_seconds)):%H:%M}"


def _columnar_offer_changes(new: bid_pb2.ProductOffer, new_columns: PeriodColumns,
                            standing: tuple[bid_pb2.ProductOffer, PeriodColumns] | None,
                            tolerance_mw: float) -> list[str] | None:
    """:func:`_offer_changes` on the offers' columns, as whole-array operations; None when the columns
    cannot say it alone (ragged bands, periods without a time or with nanoseconds)."""
    label = _offer_label(new)
    if standing is None:
        return [f"{label} not offered in the bid in force"]
    old, old_columns = standing
    if any(columns.band_avail_mw is None or not bool(columns.has_time.all()) or bool(columns.nanos.any())
           for columns in (new_columns, old_columns)):
        return None
    new_bands, old_bands = new_columns.band_avail_mw, old_columns.band_avail_mw
    assert new_bands is not None and old_bands is not None
    changes: list[str] = []
    if list(new.band_price) != list(old.band_price):
        changes.append(f"{label} band prices changed")
    new_seconds = new_columns.seconds
    positions = _standing_positions(new_seconds, old_columns.seconds)
    uncovered = np.flatnonzero(positions < 0)
    if len(uncovered):
        first_new = int(new_seconds[uncovered[np.argmin(new_seconds[uncovered])]])
        changes.append(f"{label} adds {len(uncovered)} intervals from {_seconds_text(first_new)}")
    covered = np.flatnonzero(positions >= 0)
    if not covered.size:
        return changes
    matched = positions[covered]
    if new_bands.shape[1] != old_bands.shape[1]:
        band_shift = np.full(covered.size, math.inf)
    else:
        with np.errstate(invalid="ignore"):
            band_shift = (np.abs(new_bands[covered] - old_bands[matched]).max(axis=1) if new_bands.shape[1]
                          else np.zeros(covered.size))
    with np.errstate(invalid="ignore"):
        moved = np.flatnonzero(
            (np.abs(new_columns.max_avail_mw[covered] - old_columns.max_avail_mw[matched]) > tolerance_mw)
            | (band_shift > tolerance_mw))
    if len(moved):
        first, standing_first = int(covered[moved[0]]), int(matched[moved[0]])
        changes.append(f"{label} availability changes in {len(moved)} intervals, first "
                       f"{_seconds_text(int(new_seconds[first]))} "
                       f"MAXAVAIL {old_columns.max_avail_mw[standing_first]:.0f}->"
                       f"{new_columns.max_avail_mw[first]:.0f} MW")
    return changes


def material_changes(new: bid_pb2.Bid | ColumnarBid, standing: bid_pb2.Bid | ColumnarBid | None,
                     tolerance_mw: float) -> list[str]:
    """Specific differences between ``new`` and the bid in force ``standing`` that justify a rebid.

    A change is material when band prices differ, the new bid covers intervals the standing bid does
    not, or any period's MAXAVAIL or band availability moves by more than ``tolerance_mw`` (MW). An
    empty list means the standing bid still says what the new one would. No standing bid: one reason.

    Per offer (product and direction), in the new bid's offer order: band prices changed; intervals the
    standing offer does not cover (count, first by time); periods whose availability moved (count, first
    in period order, with its MAXAVAIL before and after). A new period is compared with the standing
    period of the same interval (the last one should the standing offer repeat an interval); periods with
    different numbers of bands always count as moved. Intervals are matched as arrays and only period
    offers that differ at all are compared numerically (a few ms for two full-day bids of 10 offers).
    When both bids come with their columns (:class:`~algorithms.market.bid_columns.ColumnarBid`), each
    offer is compared on its columns as whole arrays (the same changes, no period offer read).
    """
    if standing is None:
        return ["no bid in force for these intervals"]
    if isinstance(new, ColumnarBid) and isinstance(standing, ColumnarBid):
        columnar = {(o.product, o.direction): (o, columns)
                    for o, columns in zip(standing.bid.offers, standing.offer_periods, strict=True)}
        changes: list[str] = []
        for offer, columns in zip(new.bid.offers, new.offer_periods, strict=True):
            key = (offer.product, offer.direction)
            offer_changes = _columnar_offer_changes(offer, columns, columnar.get(key), tolerance_mw)
            if offer_changes is None:
                standing_offer = columnar.get(key)
                offer_changes = _offer_changes(offer, standing_offer[0] if standing_offer else None, tolerance_mw)
            changes += offer_changes
        return changes
    new_bid, standing_bid = bid_of(new), bid_of(standing)
    standing_offers = {(o.product, o.direction): o for o in standing_bid.offers}
    changes = []
    for offer in new_bid.offers:
        changes += _offer_changes(offer, standing_offers.get((offer.product, offer.direction)), tolerance_mw)
    return changes


def with_rebid_reason(bid: bid_pb2.Bid, changes: Iterable[str], max_chars: int) -> bid_pb2.Bid:
    """A copy of a REBID ``bid`` whose explanation ends with the material changes (at most ``max_chars``)."""
    return _with_rebid_reason(bid, changes, max_chars)


def with_rebid_reason_columns(bid: ColumnarBid, changes: Iterable[str], max_chars: int) -> ColumnarBid:
    """:func:`with_rebid_reason` of a bid with its columns (the offers, hence the columns, are unchanged)."""
    return bid.with_bid(_with_rebid_reason(bid.bid, changes, max_chars))


def _with_rebid_reason(bid: bid_pb2.Bid, changes: Iterable[str], max_chars: int) -> bid_pb2.Bid:
    copy = bid_pb2.Bid()
    copy.CopyFrom(bid)
    if copy.entry_type != bid_pb2.ENTRY_TYPE_REBID:
        return copy
    listed = "; ".join(changes)
    if not listed:
        return copy
    text = f"{copy.rebid_explanation.rstrip('. ')}. Changes: {listed}"
    copy.rebid_explanation = text if len(text) <= max_chars else text[: max_chars - 1] + "…"
    return copy
