"""models/asset_io.py and `vpp assets`: CSV/JSON import validated row by row, export, round trips."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from typer.testing import CliRunner

from cli.main import app
from models import db
from models.asset_factory import (
    FEEDER_SWITCH_AT,
    GRAPH_COMPLETE_AT,
    NETWORK_ID,
    synthetic_asset_graph,
)
from models.asset_io import (
    FILE_COLUMNS,
    AssetFileError,
    ImportReport,
    RejectedRow,
    export_assets,
    graph_frame,
    import_assets,
    load_graph,
    write_asset_file,
)
from models.assets import AssetGraphError, membership_as_of, site_records, sites_under
from simulator.population import make_site_parameters
from tests.conftest import temporary_database

runner = CliRunner()
HEADER = ",".join(FILE_COLUMNS)


@pytest.fixture
def url(server_url: str) -> Iterator[str]:
    """A fresh migrated database (URL)."""
    with temporary_database(server_url) as fresh:
        db.migrate(fresh)
        yield fresh


def _csv(tmp_path: Path, *lines: str, name: str = "assets.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


def _node(node_id: str, kind: str, name: str = "") -> str:
    return f"node,{node_id},{kind},{name}" + "," * (len(FILE_COLUMNS) - 4)


def _edge(hierarchy: str, parent: str, child: str, start: str, end: str = "") -> str:
    return "edge" + "," * (len(FILE_COLUMNS) - 6) + f",{hierarchy},{parent},{child},{start},{end}"


def _site(site_id: str, **changes: str) -> str:
    cells = dict(zip(FILE_COLUMNS, ["site", site_id, "", "", "5000", "1", "13.5", "5", "5", "0.95", "0.95", "0.2",
                                    "4.5", "", "", "", "", ""], strict=True))
    cells.update(changes)
    return ",".join(cells[column] for column in FILE_COLUMNS)


def _problems(report: ImportReport) -> set[tuple[int, str]]:
    return {(problem.row, problem.column) for problem in report.rejected}


def test_factory_graph_round_trips_through_csv_and_json(url: str, tmp_path: Path) -> None:
    graph = synthetic_asset_graph(make_site_parameters(300, 11), 11)
    original = tmp_path / "graph.csv"
    write_asset_file(graph_frame(graph), original)
    with psycopg.connect(url) as conn:
        report = import_assets(conn, original)
        assert report.rejected == ()
        assert report.rows_read == report.accepted == len(graph_frame(graph))
        assert report.accepted_sites == 300
        exported_csv, exported_json = tmp_path / "out.csv", tmp_path / "out.json"
        export_assets(conn, exported_csv)
        export_assets(conn, exported_json)
        stored = load_graph(conn)
        again = import_assets(conn, exported_json)
        assert again.rejected == ()
        assert _same_graph_frames(load_graph(conn), stored)
    expected = graph_frame(graph).drop(columns="row")
    for path in (exported_csv, original):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        assert _sorted(frame).equals(_sorted(expected)), path
    document = json.loads(exported_json.read_text())
    assert len(document["sites"]) == 300 and isinstance(document["sites"][0]["capacity_kwh"], float)
    assert any(edge["valid_to"] is None for edge in document["edges"])


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    cleaned = frame[list(FILE_COLUMNS)].astype(str)
    for column in ("capacity_kwh", "max_charge_kw", "max_discharge_kw", "charge_efficiency", "discharge_efficiency",
                   "backup_reserve_fraction", "pv_capacity_kw"):
        numbers = pd.to_numeric(cleaned[column].replace("", np.nan))
        cleaned[column] = numbers.map(lambda v: "" if pd.isna(v) else repr(float(v)))
    return cleaned.sort_values(list(FILE_COLUMNS)).reset_index(drop=True)


def _same_graph_frames(left: object, right: object) -> bool:
    return _sorted(graph_frame(left)).equals(_sorted(graph_frame(right)))  # type: ignore[arg-type]


def test_imported_graph_answers_as_of_queries(url: str, tmp_path: Path) -> None:
    graph = synthetic_asset_graph(make_site_parameters(400, 5), 5)
    path = tmp_path / "graph.json"
    write_asset_file(graph_frame(graph), path)
    with psycopg.connect(url) as conn:
        assert import_assets(conn, path).rejected == ()
        everyone = sites_under(conn, NETWORK_ID, GRAPH_COMPLETE_AT)
        assert np.array_equal(everyone, graph.sites.parameters.site_ids)
        # Sites move feeder at FEEDER_SWITCH_AT: the day before and after, each site is on exactly one feeder.
        for as_of in (datetime(2023, 6, 30, tzinfo=UTC), FEEDER_SWITCH_AT):
            membership = membership_as_of(conn, as_of, "electrical")
            feeders = membership.matrix[np.flatnonzero(membership.node_kinds == "feeder")]
            assert np.all(np.asarray(feeders.sum(axis=0)).ravel() <= 1.0)
        assert len(sites_under(conn, NETWORK_ID, datetime(2018, 1, 1, tzinfo=UTC))) == 0


def test_bad_rows_are_rejected_with_row_column_and_reason_and_the_rest_written(url: str, tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        _node("feeder-a", "feeder", "Feeder A"),                                     # 1 ok
        _node("feeder-b", "feeder"),                                                 # 2 ok
        _site("site-1"),                                                             # 3 ok
        _site("site-2", capacity_kwh="-1"),                                          # 4 capacity
        _site("site-3", charge_efficiency="1.5", pv_capacity_kw="nan"),              # 5 two problems
        _site("site-1"),                                                             # 6 duplicate id
        _site("bad id!"),                                                            # 7 id
        _node("zone-x", "volcano"),                                                  # 8 kind
        _edge("electrical", "feeder-a", "site-1", "2021-01-01T00:00:00Z"),           # 9 ok
        _edge("electrical", "feeder-b", "site-1", "2021-06-01T00:00:00Z"),           # 10 second parent at once
        _edge("electrical", "feeder-a", "site-2", "2021-01-01T00:00:00Z"),           # 11 site-2 was rejected
        _edge("electrical", "feeder-a", "site-1", "2020-01-01T00:00:00"),            # 12 naive time
        _edge("programme", "site-1", "feeder-a", "2020-01-01T00:00:00Z"),            # 13 site as parent
        _edge("plumbing", "feeder-a", "site-1", "2020-01-01T00:00:00Z"),             # 14 hierarchy
        _edge("programme", "feeder-a", "site-1", "2022-01-01Z", "2021-01-01Z"),      # 15 to before from
        _edge("programme", "feeder-a", "feeder-b", "2020-01-01T00:00:00Z"),          # 16 ok
        _edge("programme", "feeder-b", "feeder-a", "2020-01-01T00:00:00Z"),          # 17 cycle (with 16)
        "mystery" + "," * (len(FILE_COLUMNS) - 1),                                   # 18 record
    )
    with psycopg.connect(url) as conn:
        all_or_nothing = import_assets(conn, path)
        assert not all_or_nothing.written and all_or_nothing.rejected_rows == 13
        with pytest.raises(AssetGraphError, match="unknown asset node 'feeder-a'"):
            sites_under(conn, "feeder-a", datetime(2021, 2, 1, tzinfo=UTC))
        report = import_assets(conn, path, partial=True)
        assert report.written
        problems = _problems(report)
        assert {(4, "capacity_kwh"), (5, "charge_efficiency"), (5, "pv_capacity_kw"), (6, "node_id"),
                (7, "node_id"), (8, "kind"), (10, "valid_from"), (11, "child_id"), (12, "valid_from"),
                (13, "parent_id"), (14, "hierarchy"), (15, "valid_to"), (18, "record")} <= problems
        assert {row for row, _ in problems} == {4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 17, 18}
        assert report.rows_read == 18
        assert report.rejected_rows == 13
        assert (report.accepted_nodes, report.accepted_sites, report.accepted_edges) == (2, 1, 2)
        reasons = {p.row: p.reason for p in report.rejected}
        assert "no UTC offset" in reasons[12]
        assert "cycle" in reasons[17]
        assert "overlaps" in reasons[10]
        assert next(p for p in report.rejected if p.row == 4).value == "-1"
        assert list(sites_under(conn, "feeder-a", datetime(2021, 2, 1, tzinfo=UTC))) == ["site-1"]


def test_overlap_with_stored_edges_is_rejected_and_closing_an_edge_is_an_update(url: str, tmp_path: Path) -> None:
    first = _csv(tmp_path, _node("vpp", "programme"), _node("feeder-a", "feeder"), _node("feeder-b", "feeder"),
                 _site("site-1"), _edge("programme", "vpp", "site-1", "2021-01-01T00:00:00Z"),
                 _edge("electrical", "feeder-a", "site-1", "2021-01-01T00:00:00Z"), name="first.csv")
    # Close the programme membership, rejoin later; move feeders (close the old edge, open the new one);
    # and an overlapping membership that must be rejected against the stored graph.
    second = _csv(tmp_path,
                  _edge("programme", "vpp", "site-1", "2021-01-01T00:00:00Z", "2022-01-01T00:00:00Z"),
                  _edge("programme", "vpp", "site-1", "2023-01-01T00:00:00+10:00"),
                  _edge("electrical", "feeder-a", "site-1", "2021-01-01T00:00:00Z", "2022-06-01T00:00:00Z"),
                  _edge("electrical", "feeder-b", "site-1", "2022-06-01T00:00:00Z"),
                  name="second.csv")
    third = _csv(tmp_path, _edge("programme", "vpp", "site-1", "2021-12-01T00:00:00Z", "2022-02-01T00:00:00Z"),
                 name="third.csv")
    with psycopg.connect(url) as conn:
        assert import_assets(conn, first).rejected == ()
        report = import_assets(conn, second)
        assert report.rejected == () and report.accepted_edges == 4
        rejected = import_assets(conn, third)
        assert [(p.row, p.column) for p in rejected.rejected] == [(1, "valid_from")]
        assert "stored edge vpp -> site-1" in rejected.rejected[0].reason
        assert rejected.accepted == 0
        at = {day: datetime.fromisoformat(day).replace(tzinfo=UTC)
              for day in ("2021-06-01", "2022-06-01", "2023-06-01")}
        assert list(sites_under(conn, "vpp", at["2021-06-01"])) == ["site-1"]
        assert list(sites_under(conn, "vpp", at["2022-06-01"])) == []
        assert list(sites_under(conn, "vpp", at["2023-06-01"])) == ["site-1"]
        assert list(sites_under(conn, "feeder-a", at["2022-06-01"])) == []
        assert list(sites_under(conn, "feeder-b", at["2022-06-01"])) == ["site-1"]


def test_site_facts_are_overwritten_by_a_new_import(url: str, tmp_path: Path) -> None:
    with psycopg.connect(url) as conn:
        assert import_assets(conn, _csv(tmp_path, _site("site-1"), name="a.csv")).rejected == ()
        changed = _csv(tmp_path, _site("site-1", capacity_kwh="27", postcode="5001", battery_count="2"), name="b.csv")
        assert import_assets(conn, changed).rejected == ()
        records = site_records(conn)
    assert float(records.parameters.capacity_kwh[0]) == pytest.approx(27.0)
    assert (str(records.postcodes[0]), int(records.battery_counts[0])) == ("5001", 2)


def test_a_node_cannot_change_kind(url: str, tmp_path: Path) -> None:
    with psycopg.connect(url) as conn:
        import_assets(conn, _csv(tmp_path, _node("x-1", "feeder"), name="a.csv"))
        report = import_assets(conn, _csv(tmp_path, _node("x-1", "substation"), name="b.csv"))
    assert report.rejected == (RejectedRow(1, "node", "kind", "the node exists with kind feeder (a node never "
                                                              "changes kind)", "substation"),)


def test_single_record_csv_and_json_list_files(url: str, tmp_path: Path) -> None:
    sites = tmp_path / "sites.csv"
    sites.write_text("site_id,postcode,capacity_kwh,max_charge_kw,max_discharge_kw,charge_efficiency,"
                     "discharge_efficiency,backup_reserve_fraction\nsite-9,2000,10,5,5,0.9,0.9,0.1\n")
    records = tmp_path / "records.json"
    records.write_text(json.dumps([
        {"record": "node", "node_id": "grp", "kind": "group", "name": "Group"},
        {"record": "edge", "hierarchy": "programme", "parent_id": "grp", "child_id": "site-9",
         "valid_from": "2021-01-01T00:00:00Z", "valid_to": None},
    ]))
    with psycopg.connect(url) as conn:
        assert import_assets(conn, sites).accepted_sites == 1
        report = import_assets(conn, records)
        assert report.rejected == () and report.accepted == 2
        assert list(sites_under(conn, "grp", datetime(2022, 1, 1, tzinfo=UTC))) == ["site-9"]
        assert float(site_records(conn).parameters.pv_capacity_kw[0]) == 0.0


def test_unreadable_files_are_one_clear_error(url: str, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "bad.json").write_text('{"robots": []}')
    with psycopg.connect(url) as conn:
        with pytest.raises(AssetFileError, match="unknown asset file format"):
            import_assets(conn, tmp_path / "a.txt")
        with pytest.raises(AssetFileError, match="empty"):
            import_assets(conn, tmp_path / "empty.csv")
        with pytest.raises(AssetFileError, match="robots"):
            import_assets(conn, tmp_path / "bad.json")


def test_cli_import_show_and_export(url: str, tmp_path: Path) -> None:
    good = _csv(tmp_path, _node("feeder-a", "feeder", "Feeder A"), _site("site-1"),
                _edge("electrical", "feeder-a", "site-1", "2021-01-01T00:00:00Z"), name="good.csv")
    bad = _csv(tmp_path, _site("site-2", capacity_kwh="zero"), name="bad.csv")
    env = {"VPP_STATE_DIR": str(tmp_path / "state"), "VPP_CONFIG": None, "DATABASE_URL": None}
    base = ["assets", "--database-url", url]
    imported = runner.invoke(app, [*base, "import", str(good)], env=env, terminal_width=200)
    assert imported.exit_code == 0, imported.output
    assert "3 rows read, 3 written" in imported.output
    rejected = runner.invoke(app, [*base, "import", str(bad)], env=env, terminal_width=200)
    assert rejected.exit_code == 1
    assert "capacity_kwh" in rejected.output and "finite number" in rejected.output
    half_bad = _csv(tmp_path, _site("site-3"), _site("site-4", capacity_kwh="zero"), name="half.csv")
    nothing = runner.invoke(app, [*base, "import", str(half_bad)], env=env, terminal_width=200)
    assert nothing.exit_code == 1 and "1 valid but NOT written" in nothing.output, nothing.output
    assert runner.invoke(app, [*base, "show", "site-3"], env=env).exit_code == 1
    partial = runner.invoke(app, [*base, "import", "--partial", str(half_bad)], env=env, terminal_width=200)
    assert partial.exit_code == 1 and "1 written" in partial.output, partial.output
    assert runner.invoke(app, [*base, "show", "site-3"], env=env).exit_code == 0
    shown = runner.invoke(app, [*base, "show", "feeder-a", "--as-of", "2022-01-01T00:00:00"], env=env,
                          terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "sites under it" in shown.output and "13.5 kWh" in shown.output
    before = runner.invoke(app, [*base, "show", "feeder-a", "--as-of", "2020-01-01"], env=env, terminal_width=200)
    assert "13.5 kWh" not in before.output
    unknown = runner.invoke(app, [*base, "show", "nowhere"], env=env, terminal_width=200)
    assert unknown.exit_code == 1 and "unknown asset node 'nowhere'" in unknown.output
    out = tmp_path / "out.json"
    exported = runner.invoke(app, [*base, "export", str(out)], env=env, terminal_width=200)
    assert exported.exit_code == 0, exported.output
    assert len(json.loads(out.read_text())["edges"]) == 1
