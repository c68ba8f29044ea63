"""Side-by-side comparison of backtest runs, as plain text tables (rendered by the CLI and the HTML report).

For each run (a column): revenue (energy, each FCAS product, total, $), perfect foresight and capture,
the value of perfect information (the same strategy fed the actual prices: realised with
``forecast_source = "actual"`` − realised, $), cycles and throughput (MWh), the bidding path's health
(safe fallbacks, rejected bids, failed decisions), forecast MAE and pinball loss by lead ($/MWh), and
where money was won or lost against perfect foresight, interval by interval: realised − PF ($) by
trading day, hour of day, price band and spike events (:func:`backtest.ledger.attribution`).

Pure functions over run summaries (``summary.json`` content) and ledgers; no I/O.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from backtest.ledger import attribution

MISSING = "-"
# A depth-limited figure of data without DISPATCHREGIONSUM: only the price-taker figure exists.
PRICE_TAKER_ONLY = "price-taker only"
# Spike events listed: the ones with the largest |realised − PF| summed over the runs.
TOP_SPIKE_EVENTS = 10


@dataclass(frozen=True)
class TextTable:
    """A titled table of text cells (first column: row labels); ``note`` explains it."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


@dataclass(frozen=True, eq=False)
class RunView:
    """One run as compared: its label, summary, ledger, and its perfect-information twin's summary."""

    label: str
    summary: Mapping[str, Any]
    ledger: pd.DataFrame
    perfect_information: Mapping[str, Any] | None = None

    @property
    def results(self) -> Mapping[str, Any]:
        """The summary's ``results`` section."""
        results: Mapping[str, Any] = self.summary["results"]
        return results


def dollars(value: float | None) -> str:
    """Whole dollars with thousands separators (``-`` for none)."""
    if value is None or not math.isfinite(value):
        return MISSING
    return "0" if round(value) == 0 else f"{value:,.0f}"


def percent(value: float | None) -> str:
    """A fraction of 1 as a whole percentage (``-`` for none)."""
    return MISSING if value is None or not math.isfinite(value) else f"{value:.1%}"


def number(value: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals (``-`` for none)."""
    return MISSING if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or not denominator > 0:
        return None
    return numerator / denominator


def _labels(views: Sequence[RunView]) -> tuple[str, ...]:
    return tuple(view.label for view in views)


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def run_labels(run_ids: Sequence[str]) -> list[str]:
    """Column labels of runs: the ids' hash parts when the ids differ only there, else the ids."""
    prefixes = {run_id.rpartition("-")[0] for run_id in run_ids}
    hashes = [run_id.rpartition("-")[2] for run_id in run_ids]
    if len(prefixes) == 1 and len(set(hashes)) == len(hashes) and all(hashes):
        return hashes
    return list(run_ids)


def runs_table(views: Sequence[RunView]) -> TextTable:
    """What each run is: id, region, period, strategy, parameters, forecast source, code version, data."""
    def parameters(view: RunView) -> str:
        items = view.summary["strategy"].get("parameters", {})
        return ", ".join(f"{k}={v}" for k, v in sorted(items.items())) or "(configured defaults)"

    rows = [
        ("run id", *(str(v.summary.get("run_id", v.label)) for v in views)),
        ("region", *(str(v.summary["region"]) for v in views)),
        ("first interval (AEST)", *(str(v.summary["period"]["first_interval"]) for v in views)),
        ("last interval (AEST)", *(str(v.summary["period"]["last_interval"]) for v in views)),
        ("decisions", *(str(v.results["decisions"]) for v in views)),
        ("forecaster", *(str(v.summary["strategy"]["forecaster"]) for v in views)),
        ("optimiser", *(str(v.summary["strategy"]["optimiser"]) for v in views)),
        ("bid builder", *(str(v.summary["strategy"]["bid_builder"]) for v in views)),
        ("parameters", *(parameters(v) for v in views)),
        ("forecast source", *(str(v.summary.get("forecast_source", "model")) for v in views)),
        ("code version", *(str(v.summary.get("code_version", MISSING)) for v in views)),
        ("data sha256", *(", ".join(d["sha256"][:12] for d in v.summary.get("data", [])) for v in views)),
    ]
    return TextTable("Runs", ("", *_labels(views)), tuple(rows))


def revenue_table(views: Sequence[RunView]) -> TextTable:
    """Realised revenue ($): energy, each FCAS product, FCAS, total."""
    products = sorted({p for v in views for p in v.results.get("fcas_revenue_by_product_dollars", {})})
    rows = [("energy", *(dollars(v.results["energy_revenue_dollars"]) for v in views))]
    rows += [(f"  {p}", *(dollars(v.results["fcas_revenue_by_product_dollars"].get(p)) for v in views))
             for p in products]
    rows += [("FCAS", *(dollars(v.results["fcas_revenue_dollars"]) for v in views)),
             ("total", *(dollars(v.results["total_revenue_dollars"]) for v in views)),
             ("FCAS depth-limited", *(depth_text(v, "fcas_revenue_dollars") for v in views)),
             ("total depth-limited", *(depth_text(v, "total_revenue_dollars") for v in views)),
             ("end-of-run SoC charge",
              *(dollars(v.results.get("end_of_run_adjustment_dollars", 0.0)) for v in views))]
    note = ("Price-taker: every offered FCAS MW enabled at the regional price. Depth-limited: each FCAS "
            "enablement capped at the region's enabled MW (DISPATCHREGIONSUM) × [market_depth] "
            f"fcas_enablement_share; energy is price-taking in both. '{PRICE_TAKER_ONLY}': the data has no "
            "DISPATCHREGIONSUM. End-of-run SoC charge: a run ending below its starting SoC pays for refilling "
            "the shortfall at its mean energy price (in every capture).")
    return TextTable("Realised revenue, $", ("", *_labels(views)), tuple(rows), note)


def depth_limited(view: RunView) -> Mapping[str, Any] | None:
    """The run's depth-limited figures (``results.depth_limited``), None when price-taker only."""
    depth: Mapping[str, Any] | None = view.results.get("depth_limited")
    return depth


def depth_text(view: RunView, key: str, *, as_percent: bool = False) -> str:
    """A depth-limited figure of a run as text ($ or %), ``price-taker only`` without market depth."""
    depth = depth_limited(view)
    if depth is None:
        return PRICE_TAKER_ONLY
    value = depth.get(key)
    return percent(value) if as_percent else dollars(value)


def _pi_total(view: RunView) -> float | None:
    if view.perfect_information is None:
        return None
    total: float = view.perfect_information["results"]["total_revenue_dollars"]
    return total


def benchmark_table(views: Sequence[RunView]) -> TextTable:
    """Perfect foresight, capture and the value of perfect information ($, %)."""
    pf = [v.results["perfect_foresight"] for v in views]
    pi = [_pi_total(v) for v in views]
    realised = [float(v.results["total_revenue_dollars"]) for v in views]
    rows = [
        ("PF energy only", *(dollars(p["energy_only_dollars"]) for p in pf)),
        ("PF energy + FCAS", *(dollars(p["energy_fcas_dollars"]) for p in pf)),
        ("PF energy + FCAS depth-limited",
         *(depth_text(v, "perfect_foresight_energy_fcas_dollars") for v in views)),
        ("PF energy only, LP relaxation", *(dollars(p.get("energy_only_relaxation_dollars")) for p in pf)),
        ("PF energy + FCAS, LP relaxation", *(dollars(p.get("energy_fcas_relaxation_dollars")) for p in pf)),
        ("PF largest MIP gap, %", *(number(None if p.get("energy_fcas_mip_gap") is None
                                           else 100 * p["energy_fcas_mip_gap"], 4) for p in pf)),
        ("capture total", *(percent(v.results.get("capture_total")) for v in views)),
        ("capture total depth-limited", *(depth_text(v, "capture_total", as_percent=True) for v in views)),
        ("capture energy", *(percent(v.results.get("capture_energy")) for v in views)),
        ("capture total vs LP relaxation", *(percent(v.results.get("capture_total_vs_relaxation")) for v in views)),
        ("capture energy vs LP relaxation",
         *(percent(v.results.get("capture_energy_vs_relaxation")) for v in views)),
        ("perfect information (same strategy, actual prices)", *(dollars(x) for x in pi)),
        ("value of perfect information", *(dollars(None if x is None else x - r)
                                           for x, r in zip(pi, realised, strict=True))),
        ("realised / perfect information", *(percent(_ratio(r, x)) for x, r in zip(pi, realised, strict=True))),
        ("perfect information / PF energy + FCAS",
         *(percent(_ratio(x, p["energy_fcas_dollars"])) for x, p in zip(pi, pf, strict=True))),
    ]
    note = ("capture total = realised energy + FCAS / PF energy + FCAS; capture energy = realised energy / PF "
            "energy only; both after the end-of-run SoC charge. Depth-limited: FCAS capped at the region's "
            "enablement × share in the clearing and in PF alike. PF ends with at least the starting energy and "
            "never charges and discharges in the same interval (a MILP, HiGHS); its LP relaxation, which may, is "
            "shown beside it ('-': a run from before the physical benchmark, whose PF is the relaxation). "
            "Perfect information: the same strategy "
            "with its forecasts replaced by the actual prices ('-': no such run; vpp backtest run "
            "--perfect-information, or compare --perfect-information).")
    return TextTable("Against perfect foresight, $", ("", *_labels(views)), tuple(rows), note)


def operations_table(views: Sequence[RunView]) -> TextTable:
    """Cycles, throughput (MWh), SoC and the bidding path's health."""
    r = [v.results for v in views]
    rows = [
        ("cycles (discharged MWh / storage MWh)", *(number(x["cycles"]) for x in r)),
        ("throughput MWh", *(number(x["throughput_mwh"], 0) for x in r)),
        ("SoC start → end MWh", *(f"{x['initial_state_of_charge_mwh']:.0f} → {x['final_state_of_charge_mwh']:.0f}"
                                  for x in r)),
        ("rebids", *(str(x["rebids"]) for x in r)),
        ("safe fallbacks", *(str(x["safe_fallbacks"]) for x in r)),
        ("rejected bids", *(str(x["validation_rejections"]) for x in r)),
        ("failed decisions", *(str(x["failed_decisions"]) for x in r)),
    ]
    return TextTable("Operations", ("", *_labels(views)), tuple(rows))


def _lead_text(minutes: int) -> str:
    return f"{minutes} min" if minutes < 60 else f"{minutes / 60:g} h"


def skill_table(views: Sequence[RunView]) -> TextTable:
    """ENERGY forecast MAE and pinball loss by lead ($/MWh), two columns per run."""
    by_run = [{int(e["lead"]): e for e in v.summary.get("forecast_skill", {}).get("leads", [])} for v in views]
    leads = sorted({lead for entries in by_run for lead in entries})
    rows = []
    for lead in leads:
        cells: list[str] = []
        for entries in by_run:
            entry = entries.get(lead, {})
            cells += [number(entry.get("mae"), 1), number(entry.get("pinball"), 1)]
        minutes = 5 * lead
        rows.append((f"{lead} ({_lead_text(minutes)})", *cells))
    columns = ("lead (intervals)", *(f"{label} {m}" for label in _labels(views) for m in ("MAE", "pinball")))
    note = ("Lead 1 is the dispatch interval the decision bids for; lead L targets the interval L − 1 after it. "
            "MAE of the median; pinball loss averaged over the forecast levels; against DISPATCHPRICE RRP. "
            "'-': no forecast reported at that lead.")
    return TextTable("ENERGY forecast skill by lead, $/MWh", columns, tuple(rows), note)


def _same_period(views: Sequence[RunView]) -> bool:
    return period_warning(views) is None


def _pair_columns(views: Sequence[RunView]) -> tuple[str, ...]:
    """PF once then realised − PF per run when the runs share their period, else both per run."""
    if _same_period(views):
        return ("PF", *(f"{label} realised − PF" for label in _labels(views)))
    return tuple(f"{label} {m}" for label in _labels(views) for m in ("PF", "realised − PF"))


def _pair_cells(views: Sequence[RunView], pairs: Sequence[tuple[float | None, float | None]]) -> list[str]:
    if _same_period(views):
        first_pf = next((pf for pf, _ in pairs if pf is not None), None)
        return [dollars(first_pf), *(dollars(delta) for _, delta in pairs)]
    return [cell for pf, delta in pairs for cell in (dollars(pf), dollars(delta))]


def _grouped(views: Sequence[RunView], tables: Sequence[Mapping[str, pd.DataFrame]], key: str, title: str,
             first_column: str) -> TextTable:
    keys: list[Any] = []
    for table in tables:
        for value in table[key][key].tolist():
            if value not in keys:
                keys.append(value)
    if key != "price_band":
        keys.sort()
    rows = []
    for value in keys:
        pairs: list[tuple[float | None, float | None]] = []
        for table in tables:
            frame = table[key]
            match = frame.loc[frame[key] == value]
            pairs.append((None, None) if match.empty else (float(match["pf_dollars"].iloc[0]),
                                                           float(match["vs_pf_dollars"].iloc[0])))
        rows.append((str(value), *_pair_cells(views, pairs)))
    return TextTable(title, (first_column, *_pair_columns(views)), tuple(rows))


def spike_events_table(views: Sequence[RunView], tables: Sequence[Mapping[str, pd.DataFrame]],
                       top: int = TOP_SPIKE_EVENTS) -> TextTable:
    """The spike events (dispatch price ≥ the spike threshold) with the largest |realised − PF|."""
    events: dict[Any, dict[str, Any]] = {}
    for index, table in enumerate(tables):
        for row in table["spike_events"].itertuples(index=False):
            entry = events.setdefault(row.first_interval, {"last": row.last_interval, "n": row.intervals,
                                                           "max": row.max_rrp, "by_run": {}})
            entry["by_run"][index] = (row.pf_dollars, row.vs_pf_dollars)
    ranked = sorted(events.items(), key=lambda item: -sum(abs(v[1]) for v in item[1]["by_run"].values()))[:top]
    rows = []
    for first, entry in sorted(ranked, key=lambda item: item[0]):
        pairs = [entry["by_run"].get(index, (None, None)) for index in range(len(views))]
        period = f"{pd.Timestamp(first):%Y-%m-%d %H:%M} → {pd.Timestamp(entry['last']):%H:%M}"
        rows.append((period, str(entry["n"]), f"{entry['max']:,.0f}", *_pair_cells(views, pairs)))
    columns = ("event (intervals ending, AEST)", "intervals", "max $/MWh", *_pair_columns(views))
    note = (f"{len(events)} spike event(s) in all; the {min(top, len(events))} with the largest |realised − PF| "
            "are listed.")
    return TextTable("Spike events, $", columns, tuple(rows), note)


def attribution_tables(views: Sequence[RunView]) -> list[TextTable]:
    """Where money was won or lost against perfect foresight: by trading day, hour of day, price band,
    spike or not, and the largest spike events."""
    tables = [attribution(view.ledger) for view in views]
    return [
        _grouped(views, tables, "day", "Realised − perfect foresight by trading day, $", "trading day"),
        _grouped(views, tables, "hour", "Realised − perfect foresight by hour of day (interval start, AEST), $",
                 "hour"),
        _grouped(views, tables, "price_band", "Realised − perfect foresight by dispatch price band ($/MWh), $",
                 "price band"),
        _grouped(views, tables, "spike", "Realised − perfect foresight in and out of price spikes, $", ""),
        spike_events_table(views, tables),
    ]


def comparison_tables(views: Sequence[RunView]) -> list[TextTable]:
    """Every table of a comparison (a single run is a comparison of one)."""
    if not views:
        raise ValueError("nothing to compare")
    return [runs_table(views), revenue_table(views), benchmark_table(views), operations_table(views),
            skill_table(views), *attribution_tables(views)]


def period_warning(views: Sequence[RunView]) -> str | None:
    """A warning when the runs do not cover the same region and intervals (their figures then do not add
    up side by side), else None."""
    keys = {(v.summary["region"], v.summary["period"]["first_interval"], v.summary["period"]["last_interval"])
            for v in views}
    if len(keys) > 1:
        return "the runs cover different regions or periods: compare their capture, not their dollars"
    return None


def headline(summary: Mapping[str, Any]) -> str:
    """One line: realised revenue, perfect foresight and capture of a run."""
    results = summary["results"]
    pf = results["perfect_foresight"]
    realised = (f"revenue ${dollars(results['total_revenue_dollars'])} (energy "
                f"${dollars(results['energy_revenue_dollars'])}, FCAS ${dollars(results['fcas_revenue_dollars'])})")
    benchmark = (f"perfect foresight ${dollars(pf['energy_fcas_dollars'])} energy + FCAS, "
                 f"${dollars(pf['energy_only_dollars'])} energy only")
    if pf.get("energy_fcas_relaxation_dollars") is not None:
        benchmark += (f" (LP relaxation ${dollars(pf['energy_fcas_relaxation_dollars'])} / "
                      f"${dollars(pf.get('energy_only_relaxation_dollars'))})")
    capture = (f"capture {percent(results.get('capture_total'))} total, "
               f"{percent(results.get('capture_energy'))} energy")
    depth = results.get("depth_limited")
    depth_line = (f"depth-limited: {PRICE_TAKER_ONLY} (no DISPATCHREGIONSUM)" if depth is None else
                  f"depth-limited: revenue ${dollars(depth['total_revenue_dollars'])}, perfect foresight "
                  f"${dollars(depth['perfect_foresight_energy_fcas_dollars'])}, capture "
                  f"{percent(depth.get('capture_total'))}")
    return f"{realised}; {benchmark}; {capture}; {depth_line}"


# --------------------------------------------------------------------------------------------------
# Sweeps: one row per run
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepRow:
    """One run of a sweep as its table shows it: the grid point, id, status, the summary's ``results`` (None
    for a failed run), the worker's wall time (s) and, for a failed run, the reason."""

    label: str
    run_id: str
    status: str
    results: Mapping[str, Any] | None
    wall_time_s: float | None = None
    reason: str = ""


SWEEP_COLUMNS = ("run", "run id", "status", "revenue $", "energy $", "FCAS $", "perfect foresight $",
                 "capture", "capture depth-limited", "capture energy", "failed decisions", "safe fallbacks", "wall s",
                 "reason")


def sweep_table(rows: Sequence[SweepRow], title: str = "Sweep") -> TextTable:
    """The sweep's comparison, one row per run in grid order: revenue (total, energy, FCAS), perfect
    foresight (energy + FCAS) and capture (total; energy against energy-only perfect foresight), failed
    decisions, safe fallbacks, wall time; failed runs with their reason (never left out)."""
    cells = []
    for row in rows:
        results = row.results
        if results is None:
            figures = (MISSING,) * 9
        else:
            pf = results.get("perfect_foresight", {})
            figures = (dollars(results.get("total_revenue_dollars")), dollars(results.get("energy_revenue_dollars")),
                       dollars(results.get("fcas_revenue_dollars")), dollars(pf.get("energy_fcas_dollars")),
                       percent(results.get("capture_total")),
                       (PRICE_TAKER_ONLY if results.get("depth_limited") is None
                        else percent(results["depth_limited"].get("capture_total"))),
                       percent(results.get("capture_energy")),
                       str(results.get("failed_decisions", MISSING)), str(results.get("safe_fallbacks", MISSING)))
        cells.append((row.label, row.run_id, row.status, *figures, number(row.wall_time_s, 1), row.reason or ""))
    return TextTable(title, SWEEP_COLUMNS, tuple(cells),
                     note="capture: realised ÷ perfect foresight, energy + FCAS; capture energy: energy against "
                          "energy-only perfect foresight")


def markdown_table(table: TextTable) -> str:
    """A :class:`TextTable` as a GitHub-flavoured markdown table (``|`` in cells escaped), its title above."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"

    aligns = ["---"] + ["---:"] * (len(table.columns) - 1)
    parts = [f"### {table.title}", "", line(table.columns), line(aligns), *(line(row) for row in table.rows)]
    if table.note:
        parts += ["", table.note]
    return "\n".join(parts) + "\n"


def csv_table(table: TextTable) -> str:
    """A :class:`TextTable` as CSV text (header row first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    return buffer.getvalue()
