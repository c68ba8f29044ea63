"""Load history of asset-graph nodes (table ``node_load_history`` of migration 0004), for peak shaving.

One row per node and **5-minute** interval (:data:`algorithms.fleet.peak_shaving.INTERVAL_MS`), named by the
interval's end: ``load_mw`` (household consumption), ``net_load_mw`` (consumption less rooftop PV,
before batteries) and ``sites_reporting``. A missing interval is a missing row (never NaN: the table
rejects non-finite values); readers put the rows on a regular grid with
:func:`algorithms.fleet.peak_shaving.regular_series`, gaps as NaN.

Where rows come from: in production a sampler aggregates the fleet gateway's latest readings per node
(:func:`algorithms.fleet.peak_shaving.node_load_figures`) each interval; for tests, benchmarks and demos
:func:`simulator.load_history.synthetic_node_load_history`.

Writes go through ``COPY`` into a temporary table and one ``INSERT … ON CONFLICT DO UPDATE``, so
recording the same interval again replaces it (idempotent; a re-run sampler does no harm). Reads return
a window as arrays (one query, ``array_agg``). The functions take an open synchronous
:class:`psycopg.Connection`; :func:`record_node_load` commits its own transaction block
(``conn.transaction()``), like :func:`models.dispatch_events.record_event`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg

from algorithms.fleet.peak_shaving import INTERVAL_MS, NodeLoadHistory

Conn = psycopg.Connection[Any]


class NodeLoadRecordError(ValueError):
    """History that cannot be stored (intervals off the 5-minute grid, non-finite values, …)."""


def _csv(history: NodeLoadHistory) -> bytes:
    """The rows as CSV text (node id, interval end ms, load, net load, sites) for COPY, built with
    vectorised string operations."""
    node = '"' + history.node_id.replace('"', '""') + '",'
    columns = (history.interval_end_ms.astype(np.str_), np.char.mod("%.17g", history.load_mw),
               np.char.mod("%.17g", history.net_load_mw), history.sites_reporting.astype(np.str_))
    lines = columns[0]
    for column in columns[1:]:
        lines = np.char.add(np.char.add(lines, ","), column)
    return "".join(np.char.add(np.char.add(node, lines), "\n").tolist()).encode()


def check_recordable(history: NodeLoadHistory) -> None:
    """Nothing if ``history`` can be stored; :class:`NodeLoadRecordError` naming the problem otherwise."""
    if not history.node_id:
        raise NodeLoadRecordError("node_id must not be empty")
    off_grid = history.interval_end_ms % INTERVAL_MS != 0
    if bool(np.any(off_grid)):
        raise NodeLoadRecordError(
            f"{int(off_grid.sum())} interval end(s) are not on the 5-minute grid, e.g. "
            f"{int(history.interval_end_ms[off_grid][0])} ms")
    for name in ("load_mw", "net_load_mw"):
        values = getattr(history, name)
        if not bool(np.all(np.isfinite(values))):
            raise NodeLoadRecordError(f"{name} holds non-finite values (leave a missing interval out instead)")
    if bool(np.any(history.sites_reporting < 0)):
        raise NodeLoadRecordError("sites_reporting must be >= 0")


def record_node_load(conn: Conn, history: NodeLoadHistory) -> int:
    """Store (insert or replace) every interval of ``history``; returns the number of rows written."""
    check_recordable(history)
    if history.interval_count == 0:
        return 0
    with conn.transaction():
        conn.execute("CREATE TEMPORARY TABLE node_load_staging (node_id text, interval_end_ms bigint,"
                     " load_mw double precision, net_load_mw double precision, sites_reporting integer)"
                     " ON COMMIT DROP")
        with conn.cursor().copy("COPY node_load_staging FROM STDIN (FORMAT csv)") as copy:
            copy.write(_csv(history))
        cursor = conn.execute(
            "INSERT INTO node_load_history (node_id, interval_end, load_mw, net_load_mw, sites_reporting)"
            " SELECT node_id, to_timestamp(interval_end_ms / 1000.0), load_mw, net_load_mw, sites_reporting"
            " FROM node_load_staging"
            " ON CONFLICT (node_id, interval_end) DO UPDATE SET load_mw = EXCLUDED.load_mw,"
            " net_load_mw = EXCLUDED.net_load_mw, sites_reporting = EXCLUDED.sites_reporting")
        return cursor.rowcount


def read_node_load(conn: Conn, node_id: str, after_ms: int, until_ms: int) -> NodeLoadHistory:
    """The rows of ``node_id`` with ``after_ms < interval_end <= until_ms`` (epoch ms UTC), in time order,
    as arrays (gaps are simply absent; empty arrays when there is nothing)."""
    row = conn.execute(
        "SELECT array_agg((extract(epoch FROM interval_end) * 1000)::bigint ORDER BY interval_end),"
        " array_agg(load_mw ORDER BY interval_end), array_agg(net_load_mw ORDER BY interval_end),"
        " array_agg(sites_reporting ORDER BY interval_end)"
        " FROM node_load_history WHERE node_id = %s"
        " AND interval_end > to_timestamp(%s / 1000.0) AND interval_end <= to_timestamp(%s / 1000.0)",
        (node_id, after_ms, until_ms)).fetchone()
    ends, load, net, sites = row if row is not None and row[0] is not None else ([], [], [], [])
    return NodeLoadHistory(node_id=node_id, interval_end_ms=np.array(ends, dtype=np.int64),
                           load_mw=np.array(load, dtype=np.float64), net_load_mw=np.array(net, dtype=np.float64),
                           sites_reporting=np.array(sites, dtype=np.int64))


def latest_interval_end_ms(conn: Conn, node_id: str) -> int | None:
    """End of the node's most recent recorded interval (epoch ms UTC), or None when it has none."""
    row = conn.execute("SELECT (extract(epoch FROM max(interval_end)) * 1000)::bigint FROM node_load_history"
                       " WHERE node_id = %s", (node_id,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])
