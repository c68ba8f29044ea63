"""What the trading desk reads in the Temporal UI: a cycle's bid, intent and outcome; a unit's P&L.

Pure functions from facts to text (Temporal markdown for workflow details, one line for terminals and
memos). Nothing here does I/O or reads a clock: the workflows call these functions with facts they
already hold, so the text is deterministic on replay.

Times: market times are naive interval-ending AEST (UTC+10, the NEM's time all year) and are always
shown with that zone; wall-clock times are aware and shown as UTC, labelled "wall clock".
Units: band prices $/MWh, availability MW, revenue $.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

from algorithms.common.nem_time import AEST_OFFSET, INTERVAL, from_timestamp, trading_day
from algorithms.common.products import ENERGY
from vpp.v1 import bid_pb2, common_pb2, worker_pb2

MARKET_ZONE = "AEST"
# Table cells end with an em space: the UI renders markdown tables without cell padding (and shows HTML
# entities as typed).
_CELL_GAP = "\u2003"
MARKET_ZONE_LONG = "AEST (UTC+10)"
# Band availability below this is shown as nothing offered (MW).
SHOWN_MW = 1e-6


@dataclass(frozen=True)
class BidBand:
    """One band of one product and direction of a bid, for one dispatch interval: its price ($/MWh for
    energy, $/MW/h for FCAS, as in the bid) and the MW offered in it (``band`` counts from 1)."""

    product: str
    direction: str
    band: int
    price: float
    band_availability_mw: float


@dataclass(frozen=True)
class CycleOutcomeView:
    """What the market did with the cycle's interval: MW dispatched (gen +, load −), the energy price
    ($/MWh, None when unknown), revenue ($) and whether this cycle's record counted it (False when an
    earlier cycle already did: revenue is counted once per unit and interval)."""

    gen_mw: float
    load_mw: float
    price: float | None
    energy_revenue_dollars: float
    fcas_revenue_dollars: float
    state_of_charge_mwh: float
    revenue_counted: bool = True
    counted_by_cycle: str | None = None
    # In live mode: what AEMO dispatched that the bid in force cannot explain (algorithms/market/dispatch_check.py).
    dispatch_flags: tuple[str, ...] = ()

    @property
    def dispatched_mw(self) -> float:
        """Net MW the unit was dispatched to: generation minus load."""
        return self.gen_mw - self.load_mw

    @property
    def revenue_dollars(self) -> float:
        """Energy plus FCAS revenue of the interval ($)."""
        return self.energy_revenue_dollars + self.fcas_revenue_dollars


@dataclass(frozen=True)
class CycleView:
    """Everything a cycle's page shows. ``status`` is SUBMITTED, NO_REBID, PAUSED or FAILED (or the stage
    while it runs); ``not_submitted_reason`` says why no bid left the platform; ``bid_id`` is the bid
    submitted, or the bid in force when none was."""

    unit_id: str
    region: str
    dispatch_interval: datetime
    status: str
    started_wall_clock: datetime | None = None
    decision_market_time: datetime | None = None
    bid_id: str | None = None
    bid_bands: tuple[BidBand, ...] = ()
    plan_intent: str = ""
    outcome: CycleOutcomeView | None = None
    not_submitted_reason: str | None = None


@dataclass(frozen=True)
class UnitPnl:
    """A unit's profit and loss over one trading day (market time), each dispatch interval counted
    once whatever the number of cycles that recorded it: energy and FCAS revenue ($), the intervals
    counted and the latest of them (naive AEST)."""

    unit_id: str
    trading_day: date | None
    energy_revenue_dollars: float = 0.0
    fcas_revenue_dollars: float = 0.0
    intervals: int = 0
    cycles: int = 0
    latest_interval: datetime | None = None

    @property
    def total_dollars(self) -> float:
        """Energy plus FCAS revenue ($)."""
        return self.energy_revenue_dollars + self.fcas_revenue_dollars


# -- times -----------------------------------------------------------------------------------------


def market_time_text(market_time: datetime) -> str:
    """``2021-01-15 16:10 AEST`` for a naive AEST market time (ValueError for an aware one)."""
    if market_time.tzinfo is not None:
        raise ValueError(f"market time {market_time.isoformat()} must be naive AEST")
    return f"{market_time:%Y-%m-%d %H:%M} {MARKET_ZONE}"


def interval_text(dispatch_interval: datetime) -> str:
    """``2021-01-15 16:05–16:10 AEST`` (the interval ending ``dispatch_interval``, naive AEST)."""
    start = dispatch_interval - INTERVAL
    return f"{start:%Y-%m-%d %H:%M}–{dispatch_interval:%H:%M} {MARKET_ZONE}"


def wall_clock_text(moment: datetime) -> str:
    """``2026-12-06 03:10:05 UTC`` for an aware wall-clock time (ValueError for a naive one)."""
    if moment.tzinfo is None:
        raise ValueError(f"wall-clock time {moment.isoformat()} must be timezone-aware")
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def market_time_iso(market_time: datetime) -> str:
    """ISO-8601 of a naive AEST market time with its offset: ``2021-01-15T16:10:00+10:00``."""
    return market_time.isoformat() + "+10:00" if market_time.tzinfo is None else market_time.isoformat()


# -- the bid ---------------------------------------------------------------------------------------


def _direction(offer: bid_pb2.ProductOffer) -> str:
    name = common_pb2.Direction.Name(cast(Any, offer.direction)).removeprefix("DIRECTION_")
    return "" if name == "UNSPECIFIED" else name


def bid_bands(bid: bid_pb2.Bid, dispatch_interval: datetime) -> tuple[BidBand, ...]:
    """The bands with MW offered in ``dispatch_interval`` (naive AEST), per product and direction in the
    bid's order: price of the band and its availability (MW). Empty when the bid has no period for it."""
    bands: list[BidBand] = []
    for offer in bid.offers:
        period = next((p for p in offer.periods if from_timestamp(p.dispatch_interval) == dispatch_interval), None)
        if period is None:
            continue
        for number, (price, mw) in enumerate(zip(offer.band_price, period.band_avail_mw, strict=False), start=1):
            if mw > SHOWN_MW:
                bands.append(BidBand(product=offer.product, direction=_direction(offer), band=number,
                                     price=float(price), band_availability_mw=float(mw)))
    return tuple(bands)


def _label(band: BidBand) -> str:
    return f"{band.product} {band.direction}".strip()


def bid_table_markdown(bands: Sequence[BidBand]) -> str:
    """A markdown table of the bid's bands: product and direction, band, price, MW (one row per band with
    MW offered); a sentence when nothing is offered."""
    if not bands:
        return "_No MW offered in this interval._"
    gap = _CELL_GAP
    lines = [f"| product{gap} | band{gap} | price{gap} | MW |", "| --- | ---: | ---: | ---: |"]
    for band in bands:
        unit = "$/MWh" if band.product == ENERGY else "$/MW/h"
        lines.append(f"| {_label(band)}{gap} | {band.band}{gap} | {_money(band.price)} {unit}{gap} "
                     f"| {band.band_availability_mw:,.1f} |")
    return _escape_dollars("\n".join(lines))


def _escape_dollars(markdown: str) -> str:
    """``$`` as ``\\$``: the UI's markdown reads text between two dollar signs as mathematics."""
    return markdown.replace("\\$", "$").replace("$", "\\$")


def bid_line(bands: Sequence[BidBand]) -> str:
    """The bid in a few words: MW offered per product and direction (``ENERGY GEN 150 MW, RAISE6SEC 20 MW``)."""
    totals: dict[str, float] = {}
    for band in bands:
        totals[_label(band)] = totals.get(_label(band), 0.0) + band.band_availability_mw
    return ", ".join(f"{label} {mw:,.0f} MW" for label, mw in totals.items()) or "nothing offered"


# -- the plan --------------------------------------------------------------------------------------


def _first(values: Sequence[float]) -> float:
    return float(values[0]) if len(values) else 0.0


def plan_intent(plan: worker_pb2.OptimisationResult, interval_hours: float = INTERVAL.total_seconds() / 3600) -> str:
    """The plan's intent in one sentence: what it does in its first interval (MW, SoC), the FCAS it
    keeps enabled there, what it does over the horizon (MWh) and the value of stored energy ($/MWh)."""
    if not len(plan.gen_mw):
        reason = f": {plan.status_reason}" if plan.status_reason else ""
        return f"The optimiser gave no plan{reason}."
    first = from_timestamp(plan.first_interval)
    net_mw = _first(plan.gen_mw) - _first(plan.load_mw)
    action = (f"discharge {net_mw:,.1f} MW" if net_mw > SHOWN_MW else
              f"charge {-net_mw:,.1f} MW" if net_mw < -SHOWN_MW else "stay idle")
    soc = list(plan.state_of_charge_mwh)
    soc_text = f" (SoC {soc[0]:,.1f} MWh after it)" if soc else ""
    enabled = [f"{s.product} {_first(s.enablement_mw):,.0f} MW" for s in plan.fcas if _first(s.enablement_mw) > 0.5]
    fcas_text = f", with {', '.join(enabled)} enabled" if enabled else ""
    discharged = sum(plan.gen_mw) * interval_hours
    charged = sum(plan.load_mw) * interval_hours
    hours = len(plan.gen_mw) * interval_hours
    value = _first(plan.energy_value_per_mwh)
    known = math.isfinite(value) and len(plan.energy_value_per_mwh) > 0
    value_text = f"; stored energy is worth {_money(value)}/MWh" if known else ""
    return (f"The plan is to {action} in the interval ending {market_time_text(first)}{soc_text}{fcas_text}, "
            f"and over the next {hours:g} h to discharge {discharged:,.0f} MWh and charge {charged:,.0f} MWh"
            f"{value_text}.")


# -- a cycle ---------------------------------------------------------------------------------------


def _money(dollars: float) -> str:
    return f"-${-dollars:,.2f}" if dollars < 0 else f"${dollars:,.2f}"


def _price(price: float | None) -> str:
    return "an unknown price" if price is None else f"{_money(price)}/MWh"


def outcome_sentence(outcome: CycleOutcomeView) -> str:
    """``Dispatched +45.0 MW at $123.45/MWh: revenue $378.00 (energy $370.31, FCAS $7.69).`` with a note
    when the revenue was already counted by an earlier cycle."""
    sentence = (f"Dispatched {outcome.dispatched_mw:+,.1f} MW at {_price(outcome.price)}: revenue "
                f"{_money(outcome.revenue_dollars)} (energy {_money(outcome.energy_revenue_dollars)}, FCAS "
                f"{_money(outcome.fcas_revenue_dollars)}); SoC {outcome.state_of_charge_mwh:,.1f} MWh after it.")
    if not outcome.revenue_counted:
        by = f" by {outcome.counted_by_cycle}" if outcome.counted_by_cycle else ""
        sentence += f" This interval's revenue was already counted{by}; it is not counted again."
    if outcome.dispatch_flags:
        sentence += f" UNEXPLAINED by the bid in force: {'; '.join(outcome.dispatch_flags)}."
    return sentence


def cycle_summary(view: CycleView) -> str:
    """One line: unit, interval (AEST), status and, once known, dispatched MW and revenue."""
    text = f"{view.unit_id} {market_time_text(view.dispatch_interval)}: {view.status}"
    if view.outcome is not None:
        counted = "" if view.outcome.revenue_counted else " (already counted)"
        text += (f", {view.outcome.dispatched_mw:+,.1f} MW at {_price(view.outcome.price)}, "
                 f"{_money(view.outcome.revenue_dollars)}{counted}")
    elif view.not_submitted_reason:
        text += f" — {view.not_submitted_reason}"
    return text


def cycle_line(view: CycleView) -> str:
    """The terminal's line for a finished cycle: unit, interval, bid, dispatched MW, price, revenue."""
    parts = [f"cycle {view.unit_id} {interval_text(view.dispatch_interval)} {view.status}"]
    if view.bid_bands:
        parts.append(f"bid {view.bid_id or '?'} [{bid_line(view.bid_bands)}]")
    if view.outcome is not None:
        counted = "" if view.outcome.revenue_counted else " (already counted)"
        parts.append(f"dispatched {view.outcome.dispatched_mw:+,.1f} MW at {_price(view.outcome.price)}, "
                     f"revenue {_money(view.outcome.revenue_dollars)}{counted}")
        if view.outcome.dispatch_flags:
            parts.append(f"UNEXPLAINED DISPATCH: {'; '.join(view.outcome.dispatch_flags)}")
    if view.not_submitted_reason:
        parts.append(view.not_submitted_reason)
    return "; ".join(parts)


def cycle_details_markdown(view: CycleView) -> str:
    """The cycle's page (Temporal markdown): unit, interval in market time with its zone, the bid for the
    interval as a table, the plan's intent, the outcome, and why nothing was submitted when nothing was."""
    lines = [f"**{view.unit_id}** ({view.region}) · interval {interval_text(view.dispatch_interval)} "
             f"(interval-ending {market_time_text(view.dispatch_interval)}, market time {MARKET_ZONE_LONG}) · "
             f"**{view.status}**", ""]
    clocks = []
    if view.decision_market_time is not None:
        clocks.append(f"Decided at {market_time_text(view.decision_market_time)} market time")
    if view.started_wall_clock is not None:
        clocks.append(f"{'started' if clocks else 'Started'} {wall_clock_text(view.started_wall_clock)} (wall clock)")
    if clocks:
        lines += ["; ".join(clocks) + ".", ""]
    if view.not_submitted_reason:
        lines += [f"**Not submitted:** {view.not_submitted_reason}", ""]
    if view.plan_intent:
        lines += [f"**Intent:** {view.plan_intent}", ""]
    if view.bid_bands or view.bid_id:
        title = "Bid submitted" if view.status == "SUBMITTED" else "Bid in force"
        lines += [f"**{title}** {view.bid_id or ''} for {interval_text(view.dispatch_interval)}:", "",
                  bid_table_markdown(view.bid_bands), ""]
    if view.outcome is not None:
        lines += [f"**Outcome:** {outcome_sentence(view.outcome)}", ""]
    return _escape_dollars("\n".join(lines).rstrip() + "\n")


# -- a unit's day ----------------------------------------------------------------------------------


def pnl_of(unit_id: str, rows: Iterable[tuple[datetime, float, float]], day: date | None = None,
           cycles: int = 0) -> UnitPnl:
    """The P&L of ``day`` (default: the trading day of the latest interval) from counted rows of
    (interval-ending AEST, energy $, FCAS $); each interval counted once (a repeated interval raises
    ValueError: the record stage counts an interval once)."""
    listed = list(rows)
    if day is None and listed:
        day = trading_day(max(r[0] for r in listed))
    chosen = [r for r in listed if day is not None and trading_day(r[0]) == day]
    seen = [r[0] for r in chosen]
    if len(set(seen)) != len(seen):
        raise ValueError(f"{unit_id}: an interval is counted twice in the P&L rows")
    return UnitPnl(unit_id=unit_id, trading_day=day,
                   energy_revenue_dollars=sum(r[1] for r in chosen), fcas_revenue_dollars=sum(r[2] for r in chosen),
                   intervals=len(chosen), cycles=cycles, latest_interval=max(seen) if seen else None)


def pnl_markdown(pnl: UnitPnl) -> str:
    """The unit's P&L today as a markdown table (energy, FCAS, total, intervals counted)."""
    if pnl.trading_day is None:
        return "_No interval recorded yet._"
    latest = f", latest interval ending {market_time_text(pnl.latest_interval)}" if pnl.latest_interval else ""
    return "\n".join([
        f"Trading day {pnl.trading_day:%Y-%m-%d} (04:00–04:00 {MARKET_ZONE}): {pnl.intervals} "
        f"interval{'' if pnl.intervals == 1 else 's'} counted once each{latest}.", "",
        f"| energy{_CELL_GAP} | FCAS{_CELL_GAP} | total |", "| ---: | ---: | ---: |",
        f"| {_money(pnl.energy_revenue_dollars)}{_CELL_GAP} | {_money(pnl.fcas_revenue_dollars)}{_CELL_GAP} "
        f"| {_money(pnl.total_dollars)} |",
    ])


@dataclass(frozen=True)
class ControlsText:
    """The operator controls as shown: bidding paused (and why), the SoC hold (floor fraction, end as an
    aware wall-clock time), a pending manual rebid's reason."""

    paused: bool = False
    paused_reason: str | None = None
    soc_floor_fraction: float | None = None
    soc_floor_until: datetime | None = None
    pending_rebid_reason: str | None = None


def controls_markdown(controls: ControlsText) -> str:
    """The controls in force and how to change them (the workflow's updates)."""
    bidding = (f"**PAUSED** ({controls.paused_reason or 'no reason given'})" if controls.paused else "active")
    hold = (f"no discharge below {controls.soc_floor_fraction:.0%} of capacity until "
            f"{wall_clock_text(controls.soc_floor_until)} (wall clock)"
            if controls.soc_floor_fraction is not None and controls.soc_floor_until is not None else "none")
    return "\n".join([
        f"- Bidding: {bidding}",
        f"- SoC hold: {hold}",
        f"- Manual rebid pending: {controls.pending_rebid_reason or 'no'}",
        "",
        "Controls (Send Update, or `vpp ops …`): `pause`, `resume`, `hold_soc`, `release_soc`, `manual_rebid`"
        " — each with a reason.",
    ])


def operator_details_markdown(unit_id: str, pnl: UnitPnl, controls: ControlsText, bid_id: str | None,
                              bands: Sequence[BidBand], bid_interval: datetime | None) -> str:
    """The unit's operator page (Temporal markdown): today's P&L, the bid in force and the controls."""
    lines = [f"**{unit_id}** — today's P&L, the bid in force, the controls. Market time is {MARKET_ZONE_LONG}.", "",
             "**P&L today**", "", pnl_markdown(pnl), ""]
    if bid_interval is not None:
        lines += [f"**Bid in force** {bid_id or '(none)'} for {interval_text(bid_interval)}:", "",
                  bid_table_markdown(bands) if bid_id else "_No accepted bid covers this interval._", ""]
    lines += ["**Controls**", "", controls_markdown(controls)]
    return _escape_dollars("\n".join(lines).rstrip() + "\n")


def pnl_line(pnl: UnitPnl) -> str:
    """One line of the P&L: ``HPR1 2021-01-15: energy $1.00, FCAS $2.00, total $3.00 (12 intervals)``."""
    if pnl.trading_day is None:
        return f"{pnl.unit_id}: no interval recorded yet"
    return (f"{pnl.unit_id} trading day {pnl.trading_day:%Y-%m-%d}: energy {_money(pnl.energy_revenue_dollars)}, "
            f"FCAS {_money(pnl.fcas_revenue_dollars)}, total {_money(pnl.total_dollars)} ({pnl.intervals} intervals)")


__all__ = ["AEST_OFFSET", "MARKET_ZONE", "BidBand", "ControlsText", "CycleOutcomeView", "CycleView", "UnitPnl",
           "bid_bands", "bid_line", "bid_table_markdown", "controls_markdown", "cycle_details_markdown",
           "cycle_line", "cycle_summary", "interval_text", "market_time_iso", "market_time_text",
           "operator_details_markdown", "outcome_sentence", "plan_intent", "pnl_line", "pnl_markdown", "pnl_of",
           "wall_clock_text"]
