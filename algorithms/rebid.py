"""When a new bid is worth submitting: material differences from the bid in force, as specific reasons.

A cycle always builds a fresh bid from its plan, but it only rebids when the new bid differs
materially from the last accepted bid covering the same intervals; otherwise the bid in force stands
and the market keeps dispatching it. The differences become the rebid's reason, so every version in
the audit trail says what changed (NEM rebid reasons must be brief, verifiable and specific).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from algorithms.nem_time import from_timestamp
from vpp.v1 import bid_pb2, common_pb2

_SIDES = {common_pb2.DIRECTION_GEN: "GEN", common_pb2.DIRECTION_LOAD: "LOAD"}


def _offer_label(offer: bid_pb2.ProductOffer) -> str:
    side = _SIDES.get(offer.direction)
    return f"{offer.product}/{side}" if side else offer.product


def _periods_by_interval(offer: bid_pb2.ProductOffer) -> dict[int, bid_pb2.PeriodOffer]:
    """Period offers keyed by their interval's UTC seconds (cheap: no datetime per period)."""
    return {p.dispatch_interval.seconds: p for p in offer.periods}


def _offer_changes(new: bid_pb2.ProductOffer, standing: bid_pb2.ProductOffer | None,
                   tolerance_mw: float) -> list[str]:
    label = _offer_label(new)
    if standing is None:
        return [f"{label} not offered in the bid in force"]
    changes: list[str] = []
    if list(new.band_price) != list(standing.band_price):
        changes.append(f"{label} band prices changed")
    old_periods = _periods_by_interval(standing)
    uncovered = [p for p in new.periods if p.dispatch_interval.seconds not in old_periods]
    if uncovered:
        first_new = min(uncovered, key=lambda p: p.dispatch_interval.seconds)
        changes.append(f"{label} adds {len(uncovered)} intervals from "
                       f"{from_timestamp(first_new.dispatch_interval):%H:%M}")
    shared = [(p, old_periods[p.dispatch_interval.seconds]) for p in new.periods
              if p.dispatch_interval.seconds in old_periods]
    if not shared:
        return changes
    new_max = np.array([p.max_avail_mw for p, _ in shared])
    old_max = np.array([o.max_avail_mw for _, o in shared])
    new_bands = np.array([list(p.band_avail_mw) for p, _ in shared], dtype=float)
    old_bands = np.array([list(o.band_avail_mw) for _, o in shared], dtype=float)
    band_shift = np.abs(new_bands - old_bands).max(axis=1) if new_bands.shape == old_bands.shape else \
        np.full(len(shared), np.inf)
    moved = np.flatnonzero((np.abs(new_max - old_max) > tolerance_mw) | (band_shift > tolerance_mw))
    if len(moved):
        first = int(moved[0])
        when = from_timestamp(shared[first][0].dispatch_interval)
        changes.append(f"{label} availability changes in {len(moved)} intervals, first {when:%H:%M} "
                       f"MAXAVAIL {old_max[first]:.0f}->{new_max[first]:.0f} MW")
    return changes


def material_changes(new: bid_pb2.Bid, standing: bid_pb2.Bid | None, tolerance_mw: float) -> list[str]:
    """Specific differences between ``new`` and the bid in force ``standing`` that justify a rebid.

    A change is material when band prices differ, the new bid covers intervals the standing bid does
    not, or any period's MAXAVAIL or band availability moves by more than ``tolerance_mw`` (MW). An
    empty list means the standing bid still says what the new one would. No standing bid: one reason.
    """
    if standing is None:
        return ["no bid in force for these intervals"]
    standing_offers = {(o.product, o.direction): o for o in standing.offers}
    changes: list[str] = []
    for offer in new.offers:
        changes += _offer_changes(offer, standing_offers.get((offer.product, offer.direction)), tolerance_mw)
    return changes


def with_rebid_reason(bid: bid_pb2.Bid, changes: Iterable[str], max_chars: int) -> bid_pb2.Bid:
    """A copy of a REBID ``bid`` whose explanation ends with the material changes (at most ``max_chars``)."""
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
