"""Plots (PNG) and a self-contained HTML report of backtest runs.

* :func:`plot_dispatch_day` — one trading day: dispatch price ($/MWh) with the median forecast for the
  dispatch interval, net dispatch (MW) and FCAS enabled (MW), state of charge (MWh); realised and perfect
  foresight.
* :func:`plot_forecast_fan` — one trading day: the ENERGY forecast's band (outermost levels) and median at a
  few leads, against the dispatch price of the interval it targets.
* :func:`plot_cumulative` — cumulative realised revenue of each run and perfect foresight ($).
* :func:`render_html` — the tables of :mod:`backtest.compare` and PNGs embedded as base64: one file, no
  external resources.

Matplotlib draws through its Agg canvas only (no display, no global pyplot state).
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from backtest.compare import RunView, TextTable, comparison_tables, headline, period_warning
from backtest.ledger import cumulative_revenue, forecast_column, median_of, trading_days
from settings.extras import BENCH, MissingExtraError, import_extra

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn (the bench extra)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DAY_PLOT_FILE = "day.png"
FAN_PLOT_FILE = "forecast_fan.png"
CUMULATIVE_PLOT_FILE = "cumulative_revenue.png"
# Leads (5-minute intervals) drawn in the fan chart when the run has them: 5 min, 1 h, 4 h ahead.
FAN_LEADS = (1, 12, 48)
DPI = 100
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
.note { color: #555; font-size: 0.85em; max-width: 60em; }
code { background: #f4f4f4; padding: 0.1em 0.3em; word-break: break-all; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0 1.5em; }
.warning { color: #a40; }
"""


class ReportError(ValueError):
    """A plot or report that cannot be made as asked (e.g. a day outside the run)."""


# --------------------------------------------------------------------------------------------------
# Days
# --------------------------------------------------------------------------------------------------


def available_days(ledger: pd.DataFrame) -> list[str]:
    """The trading days (YYYY-MM-DD) the ledger has intervals of, in order."""
    return sorted(set(trading_days(ledger["dispatch_interval"])))


def default_plot_day(ledger: pd.DataFrame) -> str:
    """The trading day with the most perfect-foresight revenue (the most at stake)."""
    totals = ledger.groupby(trading_days(ledger["dispatch_interval"]))["pf_total_revenue_dollars"].sum()
    return str(totals.idxmax())


def day_rows(ledger: pd.DataFrame, day: str | date) -> pd.DataFrame:
    """The ledger rows of trading day ``day``; ReportError naming the run's days when it has none."""
    text = day.isoformat() if isinstance(day, date) else str(day)
    rows = ledger.loc[(trading_days(ledger["dispatch_interval"]) == text).to_numpy()]
    if rows.empty:
        days = available_days(ledger)
        span = f"{days[0]} .. {days[-1]}" if days else "none"
        raise ReportError(f"--plot-day {text} is not in the run (its trading days: {span})")
    return rows


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------


def _figure(width_in: float, height_in: float) -> Figure:
    """A new matplotlib figure (inches). matplotlib comes with the ``bench`` extra; without it the report
    fails with one :class:`ReportError` line naming the extra (the backtest itself needs no plots)."""
    try:
        figure_module = import_extra("matplotlib.figure", BENCH, "the backtest report's plots")
    except MissingExtraError as exc:
        raise ReportError(str(exc)) from None
    figure: Figure = figure_module.Figure(figsize=(width_in, height_in))
    return figure


def _png(figure: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _times(frame: pd.DataFrame, column: str = "dispatch_interval") -> np.ndarray:
    return pd.to_datetime(frame[column]).to_numpy()


def plot_dispatch_day(ledger: pd.DataFrame, day: str | date, title: str = "") -> bytes:
    """PNG of one trading day: price and median forecast ($/MWh), net dispatch and FCAS enabled (MW), state
    of charge (MWh), realised vs perfect foresight, against the interval-ending time (AEST)."""
    rows = day_rows(ledger, day)
    times = _times(rows)
    figure = _figure(11, 8.5)
    price, power, energy = figure.subplots(3, 1, sharex=True)
    price.step(times, rows["rrp"], where="pre", color="black", linewidth=1, label="dispatch price (RRP)")
    if "forecast_energy_p50" in rows and bool(np.isfinite(rows["forecast_energy_p50"]).any()):
        price.step(times, rows["forecast_energy_p50"], where="pre", color="tab:orange", linewidth=1,
                   label="median forecast for the interval")
    price.set_ylabel("$/MWh")
    power.step(times, rows["net_mw"], where="pre", color="tab:blue", label="realised net MW (gen − load)")
    power.step(times, rows["pf_gen_mw"] - rows["pf_load_mw"], where="pre", color="tab:green", alpha=0.7,
               label="perfect foresight net MW")
    fcas = [c for c in rows.columns if c.startswith("fcas_enabled_mw_")]
    if fcas:
        power.step(times, rows[fcas].sum(axis=1), where="pre", color="tab:purple", alpha=0.6, linewidth=0.8,
                   label="realised FCAS enabled MW (all products)")
    power.axhline(0.0, color="grey", linewidth=0.5)
    power.set_ylabel("MW")
    energy.plot(times, rows["state_of_charge_mwh"], color="tab:blue", label="realised SoC")
    energy.plot(times, rows["pf_state_of_charge_mwh"], color="tab:green", alpha=0.7, label="perfect foresight SoC")
    energy.set_ylabel("MWh")
    energy.set_xlabel("interval ending (AEST)")
    for axes in (price, power, energy):
        axes.legend(loc="best", fontsize=8)
        axes.grid(alpha=0.3)
    figure.suptitle(title or f"Trading day {day}")
    figure.autofmt_xdate()
    figure.tight_layout()
    return _png(figure)


def _fan_rows(ledger: pd.DataFrame, day: str | date, lead: int, levels: Sequence[float]) -> pd.DataFrame:
    """Target interval (``target``), forecast levels and actual price (``actual``) of every decision whose
    lead-``lead`` forecast targets an interval of trading day ``day`` that the ledger has a price for."""
    text = day.isoformat() if isinstance(day, date) else str(day)
    names = [forecast_column(lead, level) for level in levels]
    if not all(name in ledger.columns for name in names):
        return pd.DataFrame()
    targets = pd.to_datetime(ledger["dispatch_interval"]) + pd.Timedelta(minutes=5 * (lead - 1))
    prices = pd.Series(ledger["rrp"].to_numpy(), index=pd.to_datetime(ledger["dispatch_interval"]))
    frame = ledger[names].assign(target=targets.to_numpy(), actual=prices.reindex(targets).to_numpy())
    keep = (trading_days(frame["target"]) == text).to_numpy() & np.isfinite(frame["actual"].to_numpy())
    keep &= np.all(np.isfinite(frame[names].to_numpy(dtype=np.float64)), axis=1)
    chosen: pd.DataFrame = frame.loc[keep]
    return chosen


def _fan_panel(axes: Axes, rows: pd.DataFrame, lead: int, levels: Sequence[float]) -> None:
    names = [forecast_column(lead, level) for level in levels]
    targets = _times(rows, "target")
    forecast = rows[names].to_numpy(dtype=np.float64)
    axes.fill_between(targets, forecast[:, 0], forecast[:, -1], step="pre", color="tab:orange", alpha=0.3,
                      label=f"forecast q{levels[0]:g}–q{levels[-1]:g}")
    axes.step(targets, median_of(forecast, levels), where="pre", color="tab:orange", linewidth=1,
              label="forecast median")
    axes.step(targets, rows["actual"], where="pre", color="black", linewidth=1, label="dispatch price")
    axes.set_title(f"lead {lead}: interval {lead} of the horizon (the bid interval is lead 1), "
                   f"{rows.shape[0]} decisions", fontsize=9)
    axes.set_ylabel("$/MWh")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)


def plot_forecast_fan(ledger: pd.DataFrame, day: str | date, levels: Sequence[float],
                      leads: Sequence[int] = FAN_LEADS) -> bytes:
    """PNG of the ENERGY forecast fan over one trading day: for each lead of ``leads`` with forecasts that
    target intervals of the day, the band between the outermost ``levels`` and the median, against the
    dispatch price of the targeted interval ($/MWh, interval-ending AEST)."""
    day_rows(ledger, day)
    panels_rows = [(lead, _fan_rows(ledger, day, lead, levels)) for lead in leads] if levels else []
    shown = [(lead, rows) for lead, rows in panels_rows if not rows.empty]
    figure = _figure(11, 2.8 * max(len(shown), 1) + 0.8)
    if not shown:
        axes = figure.subplots(1, 1)
        axes.text(0.5, 0.5, "no forecasts by lead target this day", ha="center", va="center")
        axes.set_axis_off()
    else:
        panels = figure.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
        for axes, (lead, rows) in zip(panels, shown, strict=True):
            _fan_panel(axes, rows, lead, levels)
        panels[-1].set_xlabel("interval ending (AEST)")
    figure.suptitle(f"ENERGY forecast fan, trading day {day}")
    figure.autofmt_xdate()
    figure.tight_layout()
    return _png(figure)


def plot_cumulative(runs: Sequence[tuple[str, pd.DataFrame]]) -> bytes:
    """PNG of cumulative realised revenue ($) of each (label, ledger), and each distinct period's
    perfect foresight (dashed)."""
    figure = _figure(11, 5)
    axes = figure.subplots(1, 1)
    seen_pf: set[tuple[object, object]] = set()
    for label, ledger in runs:
        curve = cumulative_revenue(ledger)
        axes.plot(curve["dispatch_interval"], curve["realised_dollars"], label=label)
        key = (curve["dispatch_interval"].iloc[0], curve["dispatch_interval"].iloc[-1])
        if key not in seen_pf:
            seen_pf.add(key)
            axes.plot(curve["dispatch_interval"], curve["pf_dollars"], linestyle="--", color="grey",
                      label="perfect foresight" if len(seen_pf) == 1 else f"perfect foresight ({label})")
    axes.set_ylabel("cumulative revenue, $")
    axes.set_xlabel("interval ending (AEST)")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    figure.suptitle("Cumulative revenue (energy + FCAS)")
    figure.autofmt_xdate()
    figure.tight_layout()
    return _png(figure)


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------


def html_table(table: TextTable) -> str:
    """One :class:`TextTable` as an HTML table with its title and note."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in table.rows)
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    return f"<h3>{html.escape(table.title)}</h3><table><tr>{head}</tr>{body}</table>{note}"


def render_html(title: str, lines: Sequence[str], tables: Sequence[TextTable],
                images: Sequence[tuple[str, bytes]], *, warning: str | None = None) -> str:
    """A self-contained HTML page: title, ``lines`` (paragraphs, ``$ `` lines shown as code), tables and
    PNG ``images`` (caption, bytes) embedded as base64 data URIs."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if warning:
        parts.append(f'<p class="warning">{html.escape(warning)}</p>')
    for line in lines:
        if line.startswith("$ "):
            parts.append(f"<p><code>{html.escape(line[2:])}</code></p>")
        else:
            parts.append(f"<p>{html.escape(line)}</p>")
    for caption, png in images:
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(f"<h3>{html.escape(caption)}</h3><img alt='{html.escape(caption)}' "
                     f"src='data:image/png;base64,{encoded}'>")
    parts.extend(html_table(table) for table in tables)
    parts.append("</body></html>")
    return "\n".join(parts)


def _levels(view: RunView) -> list[float]:
    return [float(q) for q in view.summary.get("forecast_skill", {}).get("quantiles", [])]


def write_run_report(folder: Path, view: RunView, plot_day: str | None = None) -> list[Path]:
    """Write the run's plots (``day.png``, ``forecast_fan.png``, ``cumulative_revenue.png``) and
    ``report.html`` into ``folder``; ``plot_day`` (YYYY-MM-DD trading day) defaults to the day with the
    most perfect-foresight revenue. Returns the files written; ReportError for a day outside the run."""
    day = plot_day or default_plot_day(view.ledger)
    summary = view.summary
    images = [
        (f"Price, dispatch and state of charge, trading day {day}",
         plot_dispatch_day(view.ledger, day, f"{summary['run_id']}: trading day {day}")),
        (f"ENERGY forecast fan, trading day {day}", plot_forecast_fan(view.ledger, day, _levels(view))),
        ("Cumulative revenue", plot_cumulative([(view.label, view.ledger)])),
    ]
    written = []
    for name, (_, png) in zip((DAY_PLOT_FILE, FAN_PLOT_FILE, CUMULATIVE_PLOT_FILE), images, strict=True):
        (folder / name).write_bytes(png)
        written.append(folder / name)
    lines = [f"{summary['region']}, intervals ending {summary['period']['first_interval']} .. "
             f"{summary['period']['last_interval']} (AEST), strategy {summary['strategy_label']}.",
             headline(summary), "Reproduce:", f"$ {summary['command']}"]
    page = render_html(f"Backtest {summary['run_id']}", lines, comparison_tables([view]), images)
    (folder / "report.html").write_text(page, encoding="utf-8")
    written.append(folder / "report.html")
    return written


def write_compare_report(path: Path, views: Sequence[RunView]) -> tuple[Path, Path]:
    """Write the comparison's cumulative-revenue PNG and self-contained HTML report (``path``; the PNG
    beside it). Returns (html, png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    png = plot_cumulative([(view.label, view.ledger) for view in views])
    png_path = path.with_suffix(".png")
    png_path.write_bytes(png)
    lines = [f"{view.label}: {headline(view.summary)}" for view in views]
    page = render_html("Backtest comparison", lines, comparison_tables(views),
                       [("Cumulative revenue by run", png)], warning=period_warning(views))
    path.write_text(page, encoding="utf-8")
    return path, png_path


def trading_day_of(moment: datetime) -> str:
    """The trading day (YYYY-MM-DD) of an interval-ending time (AEST)."""
    return (moment - timedelta(hours=4, minutes=5)).date().isoformat()


# --------------------------------------------------------------------------------------------------
# Console
# --------------------------------------------------------------------------------------------------


@contextmanager
def decision_progress(console: Console, description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar (decisions done / total, rate, elapsed, ETA) on ``console``; yields the
    ``progress(done, total)`` callback the engine calls."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=None, rate="")
        started = time.perf_counter()

        def update(done: int, total: int) -> None:
            elapsed = time.perf_counter() - started
            rate = f"{done / elapsed:.1f} decisions/s" if elapsed > 0 else ""
            bar.update(task, completed=done, total=total, rate=rate)

        yield update


def print_tables(console: Console, tables: Sequence[TextTable]) -> None:
    """Print :class:`TextTable` s as rich tables (notes below them)."""
    for table in tables:
        rendered = Table(title=table.title, title_justify="left")
        for index, column in enumerate(table.columns):
            rendered.add_column(column, justify="left" if index == 0 else "right", overflow="fold")
        for row in table.rows:
            rendered.add_row(*row)
        console.print(rendered)
        if table.note:
            console.print(table.note, style="dim", highlight=False)
