"""The VPP asset graph: sites and aggregation nodes in several time-varying hierarchies (PostgreSQL).

Schema (source of truth: ``models/migrations/0002_asset_graph.sql``; the SQLModel classes below mirror
it and ``tests/test_assets.py`` fails when they drift):

- ``asset_nodes(node_id, kind, name, created_at)``: every node, sites included. Kinds: :data:`NODE_KINDS`.
- ``sites``: the current battery facts of each site (the columns of
  :class:`algorithms.fleet.fleet_types.SiteParameters`) plus ``postcode`` and ``battery_count``.
  **Site facts are not versioned in time**: a site row holds the facts as they are now, an import
  overwrites them (``updated_at`` says when). Membership is what changes over time and is versioned;
  battery facts change rarely and every consumer (allocation, aggregation) wants the current ones.
- ``asset_edges(hierarchy, parent_id, child_id, valid_from, valid_to)``: ``child`` is under ``parent``
  in ``hierarchy`` over ``[valid_from, valid_to)`` (``valid_to`` NULL = still valid); timestamptz.
  Hierarchies (``asset_hierarchies``): ``electrical`` (site → feeder → substation → region → network)
  and ``geography`` (site → postcode → state → country) are trees at any instant (``single_parent``);
  ``programme`` (programmes and logical groups) lets a node be in many parents at once. A statement
  trigger rejects overlapping validity of the same (hierarchy, parent, child), a second parent at the
  same time in a single-parent hierarchy, and a site as parent (sites are leaves); see the migration.

Every query is asked **as of** an aware datetime ``t``: an edge counts when ``valid_from <= t <
valid_to``. The functions take an open synchronous :class:`psycopg.Connection` (the caller owns it and
its transaction; none commits); async callers run them in a thread (``asyncio.to_thread``). Site ids
are returned sorted in code-point order (numpy's order, as :class:`SiteParameters` requires), never in
the database collation's order.

Subtree resolution: **recursive CTE**, chosen over a closure table by measurement
(``python -m bench.assets --sites 100000``: 100,000 sites, 295,216 edges, 5 electrical levels
including sites; this machine, 2 shared cores, PostgreSQL 15, after VACUUM ANALYZE; median of 5; as of
a time when every site is connected; both honour edge validity; the closure table holds every
ancestor/descendant path with the intersection of its edges' validity, 847,270 rows, built in SQL in
3.3 s):

=====================================  ==================  ==================
subtree of                             recursive CTE (ms)  closure table (ms)
=====================================  ==================  ==================
the root (network, 100,000 sites)      231                 224
one feeder (104 sites)                 0.59                0.86
=====================================  ==================  ==================

The CTE is as fast as the closure at the root and faster for small subtrees, and needs no derived
table to keep in step with every edge change (a time-valid closure must be rebuilt or patched path by
path on each import: 3.3 s for the whole graph). Two schema choices made the CTE fast: the edge's
primary key (parent_id, child_id, hierarchy, valid_from) INCLUDE (valid_to) is a covering index for
the walk, and ``child_kind`` on the edge lets the walk stop at sites and return them without joining
``sites`` (before that: root 397 ms, feeder 18 ms). Other figures of the same run: file import
(read, validate, write) 11.5–12.9 s, about 8,000 sites/s or 31,000–35,000 rows/s; membership matrix
(every node × every site, 921,861 non-zeros) 0.76–1.33 s; whole-graph aggregation
``matrix @ capacity_kwh`` 1.2–1.7 ms; :func:`site_parameters` of every site 0.27–0.41 s.

Whole-graph aggregation does not resolve subtrees one by one: :func:`membership_as_of` reads the edges
valid at ``t`` once and builds the (nodes × sites) 0/1 matrix in numpy/scipy, level by level; the
aggregation is then one sparse product (``membership.matrix @ per_site_values``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import psycopg
import scipy.sparse as sp
from sqlalchemy import Column, DateTime, Float, func
from sqlalchemy.engine import URL
from sqlmodel import Field, SQLModel

from algorithms.fleet.fleet_types import FloatArray, IntArray, SiteParameters, StrArray, site_positions

Conn = psycopg.Connection[Any]

SITE_KIND = "site"
NODE_KINDS = ("site", "feeder", "substation", "zone", "region", "network", "postcode", "county", "state",
              "country", "programme", "group")
"""Every kind of node the schema accepts (``asset_nodes.kind``)."""
HIERARCHIES = ("electrical", "geography", "programme")
"""The hierarchies the migration creates (more can be inserted into ``asset_hierarchies``)."""
SINGLE_PARENT_HIERARCHIES = ("electrical", "geography")
OPEN_ENDED_MS = int(np.iinfo(np.int64).max)
"""``valid_to_ms`` of an edge that is still valid (``valid_to`` NULL in the database)."""
MAX_DEPTH = 64
"""Deepest level :func:`membership_as_of` walks before it reports a cycle."""
SITE_FACT_COLUMNS = ("capacity_kwh", "max_charge_kw", "max_discharge_kw", "charge_efficiency",
                     "discharge_efficiency", "backup_reserve_fraction", "pv_capacity_kw")
"""The ``sites`` columns that are the fields of :class:`SiteParameters` (besides ``site_ids``)."""
ASSET_TABLES = ("asset_hierarchies", "asset_nodes", "sites", "asset_edges")


class AssetGraphError(ValueError):
    """A request to the asset graph that cannot be answered (the message names the problem)."""


class UnknownNodeError(AssetGraphError):
    """A node (or site) id that the asset graph does not hold."""


class UnknownHierarchyError(AssetGraphError):
    """A hierarchy name that ``asset_hierarchies`` does not hold."""


class GraphCycleError(AssetGraphError):
    """The edges valid at a time form a cycle (import validation prevents this)."""


# ---------------------------------------------------------------------------------------------------
# SQLModel mirror of the migration (for ORM users and the drift test; queries below are plain SQL).


class AssetHierarchyRow(SQLModel, table=True):
    """A row of ``asset_hierarchies``."""

    __tablename__: ClassVar[str] = "asset_hierarchies"  # type: ignore[misc]

    hierarchy: str = Field(primary_key=True)
    single_parent: bool
    description: str = ""


class AssetNodeRow(SQLModel, table=True):
    """A row of ``asset_nodes``: one node of the graph (sites included)."""

    __tablename__: ClassVar[str] = "asset_nodes"  # type: ignore[misc]

    node_id: str = Field(primary_key=True)
    kind: str
    name: str = ""
    created_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()))


class SiteRow(SQLModel, table=True):
    """A row of ``sites``: the current battery facts of one site (kWh, kW, fractions)."""

    __tablename__: ClassVar[str] = "sites"  # type: ignore[misc]

    site_id: str = Field(primary_key=True)
    node_kind: str = SITE_KIND
    postcode: str
    battery_count: int = 1
    capacity_kwh: float = Field(sa_column=Column(Float, nullable=False))
    max_charge_kw: float = Field(sa_column=Column(Float, nullable=False))
    max_discharge_kw: float = Field(sa_column=Column(Float, nullable=False))
    charge_efficiency: float = Field(sa_column=Column(Float, nullable=False))
    discharge_efficiency: float = Field(sa_column=Column(Float, nullable=False))
    backup_reserve_fraction: float = Field(sa_column=Column(Float, nullable=False))
    pv_capacity_kw: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    updated_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()))


class AssetEdgeRow(SQLModel, table=True):
    """A row of ``asset_edges``: ``child_id`` under ``parent_id`` in ``hierarchy`` over [valid_from, valid_to)."""

    __tablename__: ClassVar[str] = "asset_edges"  # type: ignore[misc]

    parent_id: str = Field(primary_key=True)
    child_id: str = Field(primary_key=True)
    hierarchy: str = Field(primary_key=True)
    child_kind: str
    valid_from: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True, nullable=False))
    valid_to: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


SQLMODEL_TABLES: dict[str, type[SQLModel]] = {
    "asset_hierarchies": AssetHierarchyRow, "asset_nodes": AssetNodeRow, "sites": SiteRow,
    "asset_edges": AssetEdgeRow,
}


def sqlalchemy_url(database_url: str) -> URL:
    """The SQLAlchemy URL (``postgresql+psycopg``) of a psycopg URL or ``key=value`` conninfo string."""
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    port = params.pop("port", None)
    return URL.create(
        "postgresql+psycopg",
        username=_text_or_none(params.pop("user", None)),
        password=_text_or_none(params.pop("password", None)),
        host=_text_or_none(params.pop("host", None)),
        port=int(port) if port else None,
        database=_text_or_none(params.pop("dbname", None)),
        query={key: str(value) for key, value in params.items() if value is not None},
    )


def _text_or_none(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


# ---------------------------------------------------------------------------------------------------
# Arrays (struct of arrays, as in algorithms/fleet/fleet_types.py)


@dataclass(frozen=True)
class AssetNodes:
    """Aggregation nodes (every kind but ``site``), one row per node."""

    node_ids: StrArray
    kinds: StrArray
    names: StrArray


@dataclass(frozen=True)
class SiteRecords:
    """Sites: their battery facts (``parameters``, sorted by site id) and, aligned, address and name."""

    parameters: SiteParameters
    postcodes: StrArray
    battery_counts: IntArray
    names: StrArray


@dataclass(frozen=True)
class AssetEdges:
    """Edges, one row per relationship: ``child_ids[i]`` under ``parent_ids[i]`` in ``hierarchies[i]``
    over ``[valid_from_ms[i], valid_to_ms[i])`` (epoch ms UTC; :data:`OPEN_ENDED_MS` = still valid)."""

    hierarchies: StrArray
    parent_ids: StrArray
    child_ids: StrArray
    valid_from_ms: IntArray
    valid_to_ms: IntArray


@dataclass(frozen=True)
class AssetGraph:
    """A whole asset graph in memory (what a file or the factory holds)."""

    nodes: AssetNodes
    sites: SiteRecords
    edges: AssetEdges


@dataclass(frozen=True)
class NodeMembership:
    """Which sites are under which node at one time.

    Attributes:
        node_ids: every node of the graph (sites included), sorted ascending (code-point order).
        node_kinds: the kind of each node, aligned with ``node_ids``.
        site_ids: every site, sorted ascending: the rows of ``site_parameters(conn)``.
        matrix: ``scipy.sparse.csr_matrix`` (len(node_ids), len(site_ids)), 1.0 where the site is the
            node or under it at any depth at that time, else 0. ``matrix @ x`` sums a per-site quantity
            ``x`` (aligned with ``site_ids``) for every node.
        as_of: the time asked.
        hierarchy: the hierarchy followed (None: every hierarchy).
    """

    node_ids: StrArray
    node_kinds: StrArray
    site_ids: StrArray
    matrix: sp.csr_matrix
    as_of: datetime
    hierarchy: str | None

    def row_of(self, node_id: str) -> int:
        """Row of ``node_id`` in :attr:`matrix`; :class:`UnknownNodeError` if absent."""
        position = int(np.searchsorted(self.node_ids, node_id))
        if position >= len(self.node_ids) or self.node_ids[position] != node_id:
            raise UnknownNodeError(f"unknown asset node {node_id!r}")
        return position


@dataclass(frozen=True)
class NodeInfo:
    """One node: its id, kind and name."""

    node_id: str
    kind: str
    name: str


@dataclass(frozen=True)
class EdgeInfo:
    """One stored edge (aware UTC datetimes; ``valid_to`` None = still valid)."""

    hierarchy: str
    parent_id: str
    child_id: str
    valid_from: datetime
    valid_to: datetime | None

    def valid_at(self, as_of: datetime) -> bool:
        """Whether the edge holds at ``as_of``."""
        return self.valid_from <= as_of and (self.valid_to is None or as_of < self.valid_to)


# ---------------------------------------------------------------------------------------------------
# Queries


def check_as_of(as_of: datetime) -> datetime:
    """``as_of`` itself if timezone-aware; :class:`AssetGraphError` for a naive datetime."""
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise AssetGraphError(f"as_of {as_of.isoformat()} must be timezone-aware (asset graph times are UTC)")
    return as_of


def check_hierarchy(conn: Conn, hierarchy: str | None) -> None:
    """Nothing if ``hierarchy`` is None or known; :class:`UnknownHierarchyError` otherwise."""
    if hierarchy is None:
        return
    known = [str(row[0]) for row in conn.execute("SELECT hierarchy FROM asset_hierarchies ORDER BY 1")]
    if hierarchy not in known:
        raise UnknownHierarchyError(f"unknown hierarchy {hierarchy!r} (known: {', '.join(known)})")


def node_info(conn: Conn, node_id: str) -> NodeInfo:
    """The node ``node_id``; :class:`UnknownNodeError` if the graph does not hold it."""
    row = conn.execute("SELECT node_id, kind, name FROM asset_nodes WHERE node_id = %s", (node_id,)).fetchone()
    if row is None:
        raise UnknownNodeError(f"unknown asset node {node_id!r}")
    return NodeInfo(str(row[0]), str(row[1]), str(row[2]))


_VALID_AT = "e.valid_from <= %(as_of)s AND (e.valid_to IS NULL OR e.valid_to > %(as_of)s)"

SUBTREE_SITES_SQL = (
    "WITH RECURSIVE down(node_id, kind) AS ("
    " SELECT node_id, kind FROM asset_nodes WHERE node_id = %(node_id)s"
    " UNION"
    " SELECT e.child_id, e.child_kind FROM down d JOIN asset_edges e ON e.parent_id = d.node_id"
    f" WHERE d.kind <> '{SITE_KIND}' AND {_VALID_AT}{{hierarchy}})"
    " SELECT (SELECT count(*) FROM asset_nodes WHERE node_id = %(node_id)s),"
    f" coalesce(string_agg(node_id, E'\\n'), '') FROM down WHERE kind = '{SITE_KIND}'"
)
"""Sites under a node as of a time: recursive CTE over the edges valid then, not walking below sites
(sites are leaves); UNION (not UNION ALL) also ends the walk on a cycle."""


def sites_under(conn: Conn, node_id: str, as_of: datetime, hierarchy: str | None = None) -> StrArray:
    """Sorted ids of the sites under ``node_id`` at ``as_of`` (aware), following edges of ``hierarchy``
    (None: every hierarchy). A site node gives itself; a node with no site under it, an empty array.

    Raises :class:`UnknownNodeError` for an unknown node, :class:`UnknownHierarchyError`, and
    :class:`AssetGraphError` for a naive ``as_of``.
    """
    check_as_of(as_of)
    check_hierarchy(conn, hierarchy)
    query = SUBTREE_SITES_SQL.format(hierarchy="" if hierarchy is None else " AND e.hierarchy = %(hierarchy)s")
    row = conn.execute(query.encode(), {"node_id": node_id, "as_of": as_of, "hierarchy": hierarchy}).fetchone()
    if row is None or not row[0]:
        raise UnknownNodeError(f"unknown asset node {node_id!r}")
    text = str(row[1])
    return np.sort(np.array(text.split("\n") if text else [], dtype=np.str_))


def _copy_csv(conn: Conn, query: str, params: dict[str, Any] | None = None) -> bytes:
    """The CSV text (no header) of ``COPY (query) TO STDOUT`` (psycopg binds ``params`` client-side)."""
    buffer = io.BytesIO()
    with conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)".encode(), params) as copy:
        for block in copy:
            buffer.write(block)
    return buffer.getvalue()


def _read_csv(data: bytes, columns: list[str], text_columns: tuple[str, ...]) -> pd.DataFrame:
    if not data:
        return pd.DataFrame({column: pd.Series([], dtype=str if column in text_columns else float)
                             for column in columns})
    return pd.read_csv(io.BytesIO(data), header=None, names=columns, keep_default_na=False, na_values=[],
                       dtype={column: str for column in text_columns})


def site_parameters(conn: Conn, site_ids: StrArray | None = None) -> SiteParameters:
    """Current battery facts of ``site_ids`` (None: every site), rows sorted by site id.

    Raises :class:`UnknownNodeError` naming the ids that are not sites.
    """
    return site_records(conn, site_ids).parameters


def node_site_parameters(conn: Conn, node_id: str, as_of: datetime, hierarchy: str | None = None) -> SiteParameters:
    """Battery facts of the sites under ``node_id`` at ``as_of`` (:func:`sites_under` then
    :func:`site_parameters`; no rows when the node has no site). Raises as :func:`sites_under` does."""
    return site_parameters(conn, sites_under(conn, node_id, as_of, hierarchy))


def site_records(conn: Conn, site_ids: StrArray | None = None) -> SiteRecords:
    """:func:`site_parameters` with each site's postcode, battery count and name (rows sorted by id)."""
    columns = ["site_id", *SITE_FACT_COLUMNS, "postcode", "battery_count", "name"]
    select = ("SELECT s.site_id, " + ", ".join(f"s.{c}" for c in SITE_FACT_COLUMNS)
              + ", s.postcode, s.battery_count, n.name FROM sites s JOIN asset_nodes n ON n.node_id = s.site_id")
    wanted = None if site_ids is None else np.unique(np.asarray(site_ids, dtype=np.str_))
    if wanted is None:
        data = _copy_csv(conn, select)
    else:
        data = _copy_csv(conn, select + " WHERE s.site_id = ANY(%(ids)s)", {"ids": wanted.tolist()})
    frame = _read_csv(data, columns, ("site_id", "postcode", "name")).sort_values("site_id", kind="stable")
    found = frame["site_id"].to_numpy(dtype=np.str_)
    if wanted is not None and len(found) != len(wanted):
        missing = np.setdiff1d(wanted, found)
        shown = ", ".join(missing[:5].tolist()) + (" ..." if len(missing) > 5 else "")
        raise UnknownNodeError(f"{len(missing)} unknown site id(s): {shown}")
    facts: dict[str, FloatArray] = {c: frame[c].to_numpy(dtype=np.float64) for c in SITE_FACT_COLUMNS}
    return SiteRecords(
        parameters=SiteParameters(site_ids=found, **facts),
        postcodes=frame["postcode"].to_numpy(dtype=np.str_),
        battery_counts=frame["battery_count"].to_numpy(dtype=np.int64),
        names=frame["name"].to_numpy(dtype=np.str_),
    )


def all_nodes(conn: Conn, *, include_sites: bool = True) -> AssetNodes:
    """Every node (or every aggregation node), sorted by id."""
    where = "" if include_sites else f" WHERE kind <> '{SITE_KIND}'"
    frame = _read_csv(_copy_csv(conn, f"SELECT node_id, kind, name FROM asset_nodes{where}"),
                      ["node_id", "kind", "name"], ("node_id", "kind", "name"))
    order = np.argsort(frame["node_id"].to_numpy(dtype=np.str_), kind="stable")
    return AssetNodes(node_ids=frame["node_id"].to_numpy(dtype=np.str_)[order],
                      kinds=frame["kind"].to_numpy(dtype=np.str_)[order],
                      names=frame["name"].to_numpy(dtype=np.str_)[order])


def edges_valid_at(conn: Conn, as_of: datetime, hierarchy: str | None = None) -> tuple[StrArray, StrArray]:
    """(child ids, parent ids) of the edges valid at ``as_of`` (of ``hierarchy``; None: every one)."""
    check_as_of(as_of)
    where = _VALID_AT.replace("e.", "") + ("" if hierarchy is None else " AND hierarchy = %(hierarchy)s")
    params: dict[str, Any] = {"as_of": as_of, "hierarchy": hierarchy}
    frame = _read_csv(_copy_csv(conn, f"SELECT child_id, parent_id FROM asset_edges WHERE {where}",
                                {k: v for k, v in params.items() if v is not None}),
                      ["child_id", "parent_id"], ("child_id", "parent_id"))
    return frame["child_id"].to_numpy(dtype=np.str_), frame["parent_id"].to_numpy(dtype=np.str_)


def membership_matrix(node_ids: StrArray, node_kinds: StrArray, child_ids: StrArray,
                      parent_ids: StrArray) -> tuple[StrArray, sp.csr_matrix]:
    """(site ids, the (nodes × sites) 0/1 matrix) of a graph given as sorted nodes and valid edges.

    Pure and vectorised: the sites are the nodes of kind ``site`` (sorted, as ``node_ids`` is); the
    matrix starts as each site's own row and climbs one level per sparse product until no edge is left
    above (at most :data:`MAX_DEPTH` levels, else :class:`GraphCycleError`). Edges naming unknown nodes
    raise :class:`UnknownNodeError`.
    """
    node_count = len(node_ids)
    is_site = node_kinds == SITE_KIND
    site_rows = np.flatnonzero(is_site)
    site_ids = node_ids[site_rows]
    child_rows = _positions(node_ids, child_ids)
    parent_rows = _positions(node_ids, parent_ids)
    # up[parent, child] = 1: multiplying a (nodes × sites) matrix by it moves each entry one level up.
    up = sp.csr_matrix((np.ones(len(child_rows)), (parent_rows, child_rows)), shape=(node_count, node_count))
    level = sp.csr_matrix((np.ones(len(site_rows)), (site_rows, np.arange(len(site_rows)))),
                          shape=(node_count, len(site_rows)))
    levels = [level]
    for _ in range(MAX_DEPTH):
        level = up @ level
        if level.nnz == 0:
            break
        levels.append(level)
    else:
        raise GraphCycleError(f"the asset graph has a path deeper than {MAX_DEPTH} levels: it contains a cycle")
    matrix = sp.csr_matrix(sum(levels[1:], levels[0]))
    matrix.sum_duplicates()
    matrix.data = np.ones_like(matrix.data)
    return site_ids, matrix


def _positions(sorted_ids: StrArray, ids: StrArray) -> IntArray:
    positions = site_positions(sorted_ids, ids)
    unknown = np.flatnonzero(positions < 0)
    if len(unknown):
        raise UnknownNodeError(f"edges name unknown node {ids[unknown[0]]!r}")
    return positions


def membership_as_of(conn: Conn, as_of: datetime, hierarchy: str | None = None) -> NodeMembership:
    """Which sites are under which node at ``as_of`` (aware), following ``hierarchy`` (None: all).

    Two reads (every node; the edges valid at ``as_of``) and :func:`membership_matrix`. Every node is
    a row, sites included (a site's row is itself); a node outside ``hierarchy`` has only its own site,
    if it is one. ``site_ids`` are the rows of :func:`site_parameters` ``(conn)``.
    """
    check_as_of(as_of)
    check_hierarchy(conn, hierarchy)
    nodes = all_nodes(conn)
    child_ids, parent_ids = edges_valid_at(conn, as_of, hierarchy)
    site_ids, matrix = membership_matrix(nodes.node_ids, nodes.kinds, child_ids, parent_ids)
    return NodeMembership(node_ids=nodes.node_ids, node_kinds=nodes.kinds, site_ids=site_ids, matrix=matrix,
                          as_of=as_of, hierarchy=hierarchy)


def edges_of(conn: Conn, node_id: str, limit: int | None = None) -> list[EdgeInfo]:
    """The stored edges that have ``node_id`` as parent or child (the first ``limit``; None: all), by
    hierarchy, then start time."""
    rows = conn.execute(
        "SELECT hierarchy, parent_id, child_id, valid_from, valid_to FROM asset_edges"
        " WHERE parent_id = %(id)s OR child_id = %(id)s ORDER BY hierarchy, valid_from, parent_id, child_id"
        " LIMIT %(limit)s",
        {"id": node_id, "limit": limit},
    ).fetchall()
    return [EdgeInfo(str(r[0]), str(r[1]), str(r[2]), r[3], r[4]) for r in rows]


def ancestors_of(conn: Conn, node_id: str, as_of: datetime) -> list[tuple[str, int, str]]:
    """(hierarchy, depth, ancestor id) of every node above ``node_id`` at ``as_of``, nearest first."""
    check_as_of(as_of)
    rows = conn.execute(
        "WITH RECURSIVE up(hierarchy, depth, node_id) AS ("
        " SELECT NULL::text, 0, %(id)s::text"
        " UNION"
        " SELECT e.hierarchy, u.depth + 1, e.parent_id FROM up u JOIN asset_edges e ON e.child_id = u.node_id"
        f" WHERE {_VALID_AT} AND (u.hierarchy IS NULL OR u.hierarchy = e.hierarchy) AND u.depth < {MAX_DEPTH})"
        " SELECT hierarchy, depth, node_id FROM up WHERE depth > 0 ORDER BY hierarchy, depth, node_id",
        {"id": node_id, "as_of": as_of},
    ).fetchall()
    return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]


def edge_count(conn: Conn, node_id: str) -> int:
    """How many stored edges have ``node_id`` as parent or child."""
    row = conn.execute("SELECT count(*) FROM asset_edges WHERE parent_id = %(id)s OR child_id = %(id)s",
                       {"id": node_id}).fetchone()
    return int(row[0]) if row else 0
