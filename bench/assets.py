"""Asset graph figures at scale: import rate, subtree resolution (recursive CTE vs closure table),
membership matrix build and whole-graph aggregation.

``python -m bench.assets --sites 100000 [--database-url URL] [--repeats 5]`` builds the synthetic graph of
:mod:`models.asset_factory`, writes it to a CSV file, imports the file into a fresh database (created on
the server of ``--database-url``, default ``$DATABASE_URL`` or the local test server, dropped afterwards)
and times, as of a time when every site is connected:

- ``import_rows_per_s`` / ``import_sites_per_s``: the file import (read, validate, write) rate;
- subtree resolution of the root (``network-nem``, every site) and of one feeder (about 100 sites), by
  the recursive CTE :func:`models.assets.sites_under` uses, and by a closure table (every
  ancestor/descendant path with the intersection of its edges' validity, built here in SQL as a
  temporary table; ``closure_build_s`` is its build time);
- ``membership_s``: :func:`models.assets.membership_as_of` (every node × every site);
- ``aggregate_ms``: one whole-graph aggregation (:func:`algorithms.fleet.aggregate.aggregate_fleet`, every
  aggregation node of every hierarchy, 4+ levels) of a fleet state in which every site has reported;
  ``aggregate_with_site_rows_ms`` also computes each site as its own node (the membership's site rows).

Medians of ``--repeats`` runs, in seconds or milliseconds as the key says.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from algorithms.fleet.aggregate import aggregate_fleet
from algorithms.fleet.fleet_types import FleetState, StrArray
from algorithms.fleet.telemetry import ingest_telemetry
from bench.fleet_maths import synthetic_batch
from models.asset_factory import GRAPH_COMPLETE_AT, NETWORK_ID, synthetic_asset_graph
from models.asset_io import graph_frame, import_assets, write_asset_file
from models.assets import membership_as_of, site_parameters, sites_under
from models.db import migrate, scratch_database
from simulator.population import make_site_parameters

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/test"

CLOSURE_BUILD_SQL = """
CREATE TEMP TABLE asset_closure AS
WITH RECURSIVE paths(ancestor_id, descendant_id, depth, valid_from, valid_to) AS (
    SELECT parent_id, child_id, 1, valid_from, coalesce(valid_to, 'infinity') FROM asset_edges
  UNION ALL
    SELECT p.ancestor_id, e.child_id, p.depth + 1, greatest(p.valid_from, e.valid_from),
           least(p.valid_to, coalesce(e.valid_to, 'infinity'))
      FROM paths p JOIN asset_edges e ON e.parent_id = p.descendant_id
     WHERE greatest(p.valid_from, e.valid_from) < least(p.valid_to, coalesce(e.valid_to, 'infinity'))
       AND p.depth < 64
)
SELECT * FROM paths;
CREATE INDEX ON asset_closure (ancestor_id) INCLUDE (descendant_id, valid_from, valid_to);
ANALYZE asset_closure;
"""

CLOSURE_SITES_SQL = (
    "SELECT coalesce(string_agg(DISTINCT c.descendant_id, E'\\n'), '') FROM asset_closure c"
    " JOIN sites s ON s.site_id = c.descendant_id"
    " WHERE c.ancestor_id = %(node_id)s AND c.valid_from <= %(as_of)s AND c.valid_to > %(as_of)s"
)


def _median_s(action: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def closure_sites_under(conn: psycopg.Connection[Any], node_id: str, as_of: datetime) -> StrArray:
    """Sorted sites under ``node_id`` at ``as_of`` from the temporary closure table (every hierarchy)."""
    if conn.execute("SELECT 1 FROM sites WHERE site_id = %s", (node_id,)).fetchone() is not None:
        return np.array([node_id], dtype=np.str_)
    row = conn.execute(CLOSURE_SITES_SQL, {"node_id": node_id, "as_of": as_of}).fetchone()
    text = "" if row is None else str(row[0])
    return np.sort(np.array(text.split("\n") if text else [], dtype=np.str_))


def measure_asset_graph(database_url: str, site_count: int, *, repeats: int = 5, seed: int = 7) -> dict[str, float]:
    """Figures of the asset graph with ``site_count`` sites in an EMPTY, migrated-or-not database at
    ``database_url`` (migrated here). Prints and returns them (seconds ``_s``, milliseconds ``_ms``)."""
    migrate(database_url)
    graph = synthetic_asset_graph(make_site_parameters(site_count, seed), seed)
    figures: dict[str, float] = {"sites": float(site_count), "edges": float(len(graph.edges.child_ids))}
    with tempfile.TemporaryDirectory() as folder, psycopg.connect(database_url) as conn:
        path = Path(folder) / "assets.csv"
        write_asset_file(graph_frame(graph), path)
        start = time.perf_counter()
        report = import_assets(conn, path)
        conn.commit()
        elapsed = time.perf_counter() - start
        # What autovacuum does shortly after a bulk load: visibility map (index-only scans) and statistics.
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE asset_nodes, sites, asset_edges")
        conn.autocommit = False
        if report.rejected:
            raise RuntimeError(f"benchmark import rejected rows, e.g. {report.rejected[0]}")
        figures |= {"import_s": elapsed, "import_rows_per_s": report.rows_read / elapsed,
                    "import_sites_per_s": site_count / elapsed}
        as_of = GRAPH_COMPLETE_AT
        feeders = graph.nodes.node_ids[graph.nodes.kinds == "feeder"]
        feeder = str(feeders[len(feeders) // 2])
        start = time.perf_counter()
        conn.execute(CLOSURE_BUILD_SQL)
        figures["closure_build_s"] = time.perf_counter() - start
        figures["closure_rows"] = float(conn.execute("SELECT count(*) FROM asset_closure").fetchone()[0])  # type: ignore[index]
        for label, node in (("root", NETWORK_ID), ("feeder", feeder)):
            by_cte = sites_under(conn, node, as_of)
            by_closure = closure_sites_under(conn, node, as_of)
            if not np.array_equal(by_cte, by_closure):
                raise RuntimeError(f"closure table and recursive CTE disagree under {node}")
            figures[f"{label}_sites"] = float(len(by_cte))
            figures[f"{label}_cte_ms"] = 1000 * _median_s(partial(sites_under, conn, node, as_of), repeats)
            figures[f"{label}_closure_ms"] = 1000 * _median_s(partial(closure_sites_under, conn, node, as_of),
                                                              repeats)
        figures["membership_s"] = _median_s(lambda: membership_as_of(conn, as_of), repeats)
        figures["site_parameters_s"] = _median_s(lambda: site_parameters(conn), repeats)
        membership = membership_as_of(conn, as_of)
        parameters = site_parameters(conn)
        figures["membership_nnz"] = float(membership.matrix.nnz)
        # The whole graph aggregated from a live fleet state (every site reported once).
        now_ms = int(time.time() * 1000)
        state = ingest_telemetry(parameters, FleetState.empty(parameters.site_count),
                                 synthetic_batch(parameters, now_ms), now_ms).state
        aggregation_nodes = membership.matrix[np.flatnonzero(membership.node_kinds != "site")]
        figures["aggregation_nodes"] = float(aggregation_nodes.shape[0])
        figures["aggregate_ms"] = 1000 * _median_s(
            lambda: aggregate_fleet(parameters, state, aggregation_nodes, now_ms), repeats)
        figures["aggregate_with_site_rows_ms"] = 1000 * _median_s(
            lambda: aggregate_fleet(parameters, state, membership.matrix, now_ms), repeats)
    for key, value in figures.items():
        print(f"{key:>22}: {value:,.3f}")
    return figures


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.assets``: figures in a scratch database (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sites", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL,
                        help="A server URL; a scratch database is created on it and dropped afterwards.")
    args = parser.parse_args(argv)
    with scratch_database(args.database_url) as url:
        measure_asset_graph(url, args.sites, repeats=args.repeats)


if __name__ == "__main__":
    main()
