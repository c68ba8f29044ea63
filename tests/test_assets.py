"""models/assets.py: the asset graph as of a time, against a real PostgreSQL (schema, triggers, queries)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import DateTime, TypeDecorator, create_engine
from sqlmodel import Session, select

from algorithms.fleet.fleet_types import site_positions
from models import db
from models.asset_factory import (
    GRAPH_COMPLETE_AT,
    NETWORK_ID,
    PROGRAMME_X,
    synthetic_asset_graph,
)
from models.asset_io import import_graph
from models.assets import (
    ASSET_TABLES,
    OPEN_ENDED_MS,
    SQLMODEL_TABLES,
    AssetGraph,
    AssetGraphError,
    AssetNodeRow,
    GraphCycleError,
    UnknownHierarchyError,
    UnknownNodeError,
    membership_as_of,
    membership_matrix,
    site_parameters,
    sites_under,
    sqlalchemy_url,
)
from simulator.population import make_site_parameters
from tests.conftest import temporary_database

T0 = datetime(2022, 1, 1, tzinfo=UTC)
T1 = datetime(2023, 1, 1, tzinfo=UTC)
T2 = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
SITE_FACTS = (13.5, 5.0, 5.0, 0.95, 0.95, 0.2, 0.0)


@pytest.fixture
def empty_graph_url(server_url: str) -> Iterator[str]:
    """A fresh migrated database with no assets (URL)."""
    with temporary_database(server_url) as url:
        db.migrate(url)
        yield url


@pytest.fixture(scope="module")
def synthetic(server_url: str) -> Iterator[tuple[str, AssetGraph]]:
    """A migrated database holding a 600-site synthetic graph, and the graph."""
    graph = synthetic_asset_graph(make_site_parameters(600, 3), 3)
    with temporary_database(server_url) as url:
        db.migrate(url)
        with psycopg.connect(url) as conn:
            report = import_graph(conn, graph)
        assert report.rejected == ()
        yield url, graph


def _nodes(conn: psycopg.Connection[Any], *nodes: tuple[str, str]) -> None:
    for node_id, kind in nodes:
        conn.execute("INSERT INTO asset_nodes (node_id, kind) VALUES (%s, %s)", (node_id, kind))
        if kind == "site":
            conn.execute("INSERT INTO sites (site_id, postcode, capacity_kwh, max_charge_kw, max_discharge_kw,"
                         " charge_efficiency, discharge_efficiency, backup_reserve_fraction, pv_capacity_kw)"
                         " VALUES (%s, '5000', %s, %s, %s, %s, %s, %s, %s)", (node_id, *SITE_FACTS))


def _edge(conn: psycopg.Connection[Any], hierarchy: str, parent: str, child: str, start: datetime,
          end: datetime | None = None) -> None:
    conn.execute("INSERT INTO asset_edges (hierarchy, parent_id, child_id, child_kind, valid_from, valid_to)"
                 " SELECT %s, %s, %s, kind, %s, %s FROM asset_nodes WHERE node_id = %s",
                 (hierarchy, parent, child, start, end, child))


def _small_graph(conn: psycopg.Connection[Any]) -> None:
    """region r → substation sub → feeders f1, f2; s1 moves f1 → f2 at T1; s2 connects at T1; s3 on f2
    from T0; programme p holds s1 over [T0, T2) and s3 from T0."""
    _nodes(conn, ("r", "region"), ("sub", "substation"), ("f1", "feeder"), ("f2", "feeder"), ("p", "programme"),
           ("s1", "site"), ("s2", "site"), ("s3", "site"))
    _edge(conn, "electrical", "r", "sub", T0 - 365 * DAY)
    _edge(conn, "electrical", "sub", "f1", T0 - 365 * DAY)
    _edge(conn, "electrical", "sub", "f2", T0 - 365 * DAY)
    _edge(conn, "electrical", "f1", "s1", T0, T1)
    _edge(conn, "electrical", "f2", "s1", T1)
    _edge(conn, "electrical", "f1", "s2", T1)
    _edge(conn, "electrical", "f2", "s3", T0)
    _edge(conn, "programme", "p", "s1", T0, T2)
    _edge(conn, "programme", "p", "s3", T0)


def _ids(values: np.ndarray[Any, Any]) -> list[str]:
    return [str(v) for v in values]


def test_sites_under_follows_the_graph_as_of_each_time(empty_graph_url: str) -> None:
    with psycopg.connect(empty_graph_url) as conn:
        _small_graph(conn)
        assert _ids(sites_under(conn, "r", T0 - DAY)) == []
        assert _ids(sites_under(conn, "r", T0)) == ["s1", "s3"]
        assert _ids(sites_under(conn, "f1", T0 + DAY)) == ["s1"]
        assert _ids(sites_under(conn, "f1", T1 - timedelta(microseconds=1))) == ["s1"]
        assert _ids(sites_under(conn, "f1", T1)) == ["s2"]  # valid_to is exclusive, valid_from inclusive
        assert _ids(sites_under(conn, "f2", T1)) == ["s1", "s3"]
        assert _ids(sites_under(conn, "sub", T1)) == ["s1", "s2", "s3"]
        assert _ids(sites_under(conn, "p", T1)) == ["s1", "s3"]
        assert _ids(sites_under(conn, "p", T2)) == ["s3"]


def test_sites_under_a_hierarchy_and_a_site_itself(empty_graph_url: str) -> None:
    with psycopg.connect(empty_graph_url) as conn:
        _small_graph(conn)
        assert _ids(sites_under(conn, "p", T1, "electrical")) == []
        assert _ids(sites_under(conn, "p", T1, "programme")) == ["s1", "s3"]
        assert _ids(sites_under(conn, "r", T1, "electrical")) == ["s1", "s2", "s3"]
        assert _ids(sites_under(conn, "s2", T0 - DAY)) == ["s2"]  # a site is itself, whatever the time
        assert sites_under(conn, "s2", T0).dtype.kind == "U"


def test_sites_under_rejects_unknown_nodes_hierarchies_and_naive_times(empty_graph_url: str) -> None:
    with psycopg.connect(empty_graph_url) as conn:
        _small_graph(conn)
        with pytest.raises(UnknownNodeError, match="'nowhere'"):
            sites_under(conn, "nowhere", T1)
        with pytest.raises(UnknownHierarchyError, match="'plumbing'"):
            sites_under(conn, "r", T1, "plumbing")
        with pytest.raises(AssetGraphError, match="timezone-aware"):
            sites_under(conn, "r", datetime(2023, 1, 1))


def test_membership_matches_sites_under_for_every_node_at_several_times(synthetic: tuple[str, AssetGraph]) -> None:
    url, graph = synthetic
    with psycopg.connect(url) as conn:
        for as_of in (datetime(2020, 6, 1, tzinfo=UTC), datetime(2023, 3, 1, tzinfo=UTC), GRAPH_COMPLETE_AT):
            membership = membership_as_of(conn, as_of)
            assert np.array_equal(membership.site_ids, graph.sites.parameters.site_ids)
            aggregation_nodes = np.flatnonzero(membership.node_kinds != "site")
            for row in aggregation_nodes:
                expected = sites_under(conn, str(membership.node_ids[row]), as_of)
                got = membership.site_ids[membership.matrix[row].indices]
                assert np.array_equal(np.sort(got), expected), membership.node_ids[row]
            site_rows = np.flatnonzero(membership.node_kinds == "site")
            assert np.array_equal(membership.matrix[site_rows].toarray(), np.eye(len(site_rows)))


def test_membership_agrees_with_an_independent_walk_of_the_factory_edges(synthetic: tuple[str, AssetGraph]) -> None:
    url, graph = synthetic
    as_of = datetime(2023, 9, 1, tzinfo=UTC)
    at_ms = int(as_of.timestamp() * 1000)
    edges = graph.edges
    valid = (edges.valid_from_ms <= at_ms) & (at_ms < edges.valid_to_ms)
    parents: dict[str, list[str]] = {}
    for child, parent in zip(edges.child_ids[valid], edges.parent_ids[valid], strict=True):
        parents.setdefault(str(child), []).append(str(parent))
    expected: dict[str, set[str]] = {}
    for site in graph.sites.parameters.site_ids:
        stack, seen = [str(site)], set()
        while stack:
            node = stack.pop()
            for parent in parents.get(node, []):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        for ancestor in seen:
            expected.setdefault(ancestor, set()).add(str(site))
    with psycopg.connect(url) as conn:
        membership = membership_as_of(conn, as_of)
    for node, sites in expected.items():
        row = membership.matrix[membership.row_of(node)]
        assert set(_ids(membership.site_ids[row.indices])) == sites, node
    total = membership.matrix[membership.row_of(NETWORK_ID)] @ graph.sites.parameters.capacity_kwh
    connected = site_positions(graph.sites.parameters.site_ids, np.array(sorted(expected[NETWORK_ID])))
    assert float(total[0]) == pytest.approx(float(graph.sites.parameters.capacity_kwh[connected].sum()))


def test_membership_of_one_hierarchy_leaves_other_nodes_empty(synthetic: tuple[str, AssetGraph]) -> None:
    url, _ = synthetic
    with psycopg.connect(url) as conn:
        electrical = membership_as_of(conn, GRAPH_COMPLETE_AT, "electrical")
        everything = membership_as_of(conn, GRAPH_COMPLETE_AT)
    assert electrical.matrix[electrical.row_of(PROGRAMME_X)].nnz == 0
    assert everything.matrix[everything.row_of(PROGRAMME_X)].nnz > 0
    assert electrical.matrix[electrical.row_of(NETWORK_ID)].nnz == len(electrical.site_ids)
    with pytest.raises(UnknownNodeError):
        electrical.row_of("nowhere")


def test_site_parameters_round_trip_sorted_and_subset(synthetic: tuple[str, AssetGraph]) -> None:
    url, graph = synthetic
    expected = graph.sites.parameters
    with psycopg.connect(url) as conn:
        stored = site_parameters(conn)
        subset = site_parameters(conn, np.array(["site-000007", "site-000002"]))
        with pytest.raises(UnknownNodeError, match="site-999999"):
            site_parameters(conn, np.array(["site-000002", "site-999999"]))
    assert np.array_equal(stored.site_ids, expected.site_ids)
    for name in ("capacity_kwh", "max_charge_kw", "max_discharge_kw", "charge_efficiency", "discharge_efficiency",
                 "backup_reserve_fraction", "pv_capacity_kw"):
        np.testing.assert_allclose(getattr(stored, name), getattr(expected, name), rtol=0, atol=1e-12)
    assert _ids(subset.site_ids) == ["site-000002", "site-000007"]
    assert float(subset.capacity_kwh[1]) == pytest.approx(float(expected.capacity_kwh[7]))


def test_trigger_rejects_overlapping_validity_of_the_same_edge(empty_graph_url: str) -> None:
    with psycopg.connect(empty_graph_url) as conn:
        _small_graph(conn)
        conn.commit()
        _edge(conn, "programme", "p", "s1", T2, None)  # adjacent to [T0, T2): allowed
        conn.commit()
        with pytest.raises(psycopg.errors.ExclusionViolation, match="overlaps"):
            _edge(conn, "programme", "p", "s3", T2)
        conn.rollback()
        with pytest.raises(psycopg.errors.ExclusionViolation):  # closing it later would overlap [T2, open)
            conn.execute("UPDATE asset_edges SET valid_to = %s WHERE parent_id = 'p' AND child_id = 's1'"
                         " AND valid_from = %s", (T2 + DAY, T0))
        conn.rollback()


def test_trigger_rejects_a_second_parent_at_once_in_a_single_parent_hierarchy(empty_graph_url: str) -> None:
    with psycopg.connect(empty_graph_url) as conn:
        _small_graph(conn)
        conn.commit()
        with pytest.raises(psycopg.errors.ExclusionViolation):
            _edge(conn, "electrical", "f2", "s2", T2)  # s2 is on f1 from T1, open
        conn.rollback()
        _nodes(conn, ("q", "programme"))
        _edge(conn, "programme", "q", "s3", T0)  # programme: many parents at once are fine
        conn.commit()
        assert _ids(sites_under(conn, "q", T1)) == ["s3"]


def test_trigger_rejects_sites_as_parents_and_unknown_nodes(empty_graph_url: str) -> None:
    with psycopg.connect(empty_graph_url) as conn:
        _small_graph(conn)
        conn.commit()
        with pytest.raises(psycopg.errors.CheckViolation, match="leaves"):
            conn.execute("INSERT INTO asset_edges (hierarchy, parent_id, child_id, child_kind, valid_from)"
                         " VALUES ('programme', 's1', 's2', 'site', %s)", (T0,))
        conn.rollback()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO asset_edges (hierarchy, parent_id, child_id, child_kind, valid_from)"
                         " VALUES ('programme', 'p', 'ghost', 'site', %s)", (T0,))
        conn.rollback()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):  # child_kind must be the child's kind
            conn.execute("INSERT INTO asset_edges (hierarchy, parent_id, child_id, child_kind, valid_from)"
                         " VALUES ('programme', 'p', 's2', 'feeder', %s)", (T0,))
        conn.rollback()


def test_concurrent_writers_cannot_both_add_overlapping_edges(empty_graph_url: str) -> None:
    with psycopg.connect(empty_graph_url) as first, psycopg.connect(empty_graph_url) as second:
        _small_graph(first)
        first.commit()
        _edge(first, "programme", "p", "s2", T0)  # not committed yet: holds the edge lock
        outcome: list[BaseException | None] = []

        def race() -> None:
            try:
                _edge(second, "programme", "p", "s2", T1)
                second.commit()
                outcome.append(None)
            except psycopg.Error as exc:
                second.rollback()
                outcome.append(exc)

        thread = threading.Thread(target=race)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # waiting for the first writer
        first.commit()
        thread.join(10)
        assert isinstance(outcome[0], psycopg.errors.ExclusionViolation)
        count = first.execute("SELECT count(*) FROM asset_edges WHERE parent_id = 'p' AND child_id = 's2'").fetchone()
        assert count == (1,)


def test_deleting_a_node_deletes_its_edges(empty_graph_url: str) -> None:
    with psycopg.connect(empty_graph_url) as conn:
        _small_graph(conn)
        conn.execute("DELETE FROM asset_nodes WHERE node_id = 'f1'")
        left = conn.execute("SELECT count(*) FROM asset_edges WHERE 'f1' IN (parent_id, child_id)").fetchone()
        assert left == (0,)
        assert _ids(sites_under(conn, "sub", T1)) == ["s1", "s3"]


def test_sqlmodel_classes_mirror_the_migrated_schema(empty_graph_url: str) -> None:
    types = {str: {"text", "character varying"}, int: {"integer", "bigint"}, float: {"double precision"},
             bool: {"boolean"}, datetime: {"timestamp with time zone"}}
    with psycopg.connect(empty_graph_url) as conn:
        rows = conn.execute("SELECT table_name, column_name, is_nullable, data_type FROM information_schema.columns"
                            " WHERE table_schema = 'public' AND table_name = ANY(%s)", (list(ASSET_TABLES),)).fetchall()
    database = {(str(r[0]), str(r[1])): (r[2] == "YES", str(r[3])) for r in rows}
    model = {}
    for table_name, cls in SQLMODEL_TABLES.items():
        for column in cls.__table__.columns:  # type: ignore[attr-defined]
            model[(table_name, column.name)] = (bool(column.nullable), column.type)
    assert set(model) == set(database)
    for key, (nullable, column_type) in model.items():
        assert nullable == database[key][0], key
        base = column_type.impl_instance if isinstance(column_type, TypeDecorator) else column_type
        assert database[key][1] in types[base.python_type], key
        if isinstance(column_type, DateTime):
            assert column_type.timezone, key


def test_sqlmodel_session_reads_the_graph(empty_graph_url: str) -> None:
    with psycopg.connect(empty_graph_url) as conn:
        _small_graph(conn)
    engine = create_engine(sqlalchemy_url(empty_graph_url))
    try:
        with Session(engine) as session:
            feeders = session.exec(select(AssetNodeRow).where(AssetNodeRow.kind == "feeder")).all()
    finally:
        engine.dispose()
    assert sorted(node.node_id for node in feeders) == ["f1", "f2"]
    assert all(node.created_at is not None and node.created_at.tzinfo is not None for node in feeders)


def _brute_force(node_count: int, parent_of: list[int], is_site: list[bool]) -> np.ndarray[Any, Any]:
    sites = [i for i in range(node_count) if is_site[i]]
    expected = np.zeros((node_count, len(sites)))
    for column, site in enumerate(sites):
        node = site
        while node >= 0:
            expected[node, column] = 1.0
            node = parent_of[node]
    return expected


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=40).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.integers(min_value=-1, max_value=n - 1), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n))))
def test_membership_matrix_of_a_random_forest_matches_a_brute_force_walk(
        case: tuple[int, list[int], list[bool]]) -> None:
    node_count, raw_parents, is_site = case
    # A forest: each node's parent has a smaller index and is not a site.
    parent_of = [p if p < i and p >= 0 and not is_site[p] else -1 for i, p in enumerate(raw_parents)]
    node_ids = np.array([f"n{i:03d}" for i in range(node_count)])
    kinds = np.where(np.array(is_site), "site", "group")
    children = np.array([node_ids[i] for i in range(node_count) if parent_of[i] >= 0], dtype=np.str_)
    parents = np.array([node_ids[parent_of[i]] for i in range(node_count) if parent_of[i] >= 0], dtype=np.str_)
    site_ids, matrix = membership_matrix(node_ids, kinds, children, parents)
    assert isinstance(matrix, sp.csr_matrix)
    assert _ids(site_ids) == [str(node_ids[i]) for i in range(node_count) if is_site[i]]
    np.testing.assert_array_equal(matrix.toarray(), _brute_force(node_count, parent_of, is_site))


def test_membership_matrix_reports_a_cycle() -> None:
    node_ids = np.array(["a", "b", "s"])
    kinds = np.array(["group", "group", "site"])
    with pytest.raises(GraphCycleError, match="cycle"):
        membership_matrix(node_ids, kinds, np.array(["s", "a", "b"]), np.array(["a", "b", "a"]))
    with pytest.raises(UnknownNodeError, match="'x'"):
        membership_matrix(node_ids, kinds, np.array(["s"]), np.array(["x"]))


def test_open_ended_sentinel_is_the_largest_time() -> None:
    assert OPEN_ENDED_MS > int(datetime(9999, 1, 1, tzinfo=UTC).timestamp() * 1000)
