"""Import and export of the asset graph as CSV or JSON, validated row by row, written in bulk.

File layout (what :func:`export_assets` writes and :func:`import_assets` reads):

- **CSV**: one table, one record per row, the columns :data:`FILE_COLUMNS`. ``record`` says what the row
  is: ``node`` (an aggregation node: ``node_id``, ``kind``, ``name``), ``site`` (a home: ``node_id`` is
  the site id, then ``name``, ``postcode``, ``battery_count`` (default 1) and the battery facts of
  :data:`models.assets.SITE_FACT_COLUMNS`, ``pv_capacity_kw`` default 0) or ``edge`` (``hierarchy``,
  ``parent_id``, ``child_id``, ``valid_from``, ``valid_to``; empty ``valid_to`` = still valid). Cells a
  record does not use are left empty. Without a ``record`` column, the header decides for every row: a
  ``parent_id`` column makes edges, ``capacity_kwh`` sites (``site_id`` may name the id column), else
  nodes.
- **JSON**: ``{"nodes": [...], "sites": [...], "edges": [...]}`` of objects with those keys (or one list
  of objects each with a ``record`` key); ``null`` = empty.

Times are ISO 8601 **with** a UTC offset (``2021-03-01T00:00:00Z``, ``…+10:00``); a time without an offset
is rejected (it could be market time AEST or UTC). Exported times are UTC to the millisecond.

Import semantics: nodes and sites are upserted (a site's facts are overwritten: they are not versioned);
an edge is identified by (hierarchy, parent_id, child_id, valid_from): importing it again changes only its
``valid_to`` (how a relationship is closed), so re-importing an export changes nothing. Every row is
checked (vectorised, per column) and a row with any problem is rejected with its row number (1-based, in
the file's order: CSV data rows after the header; JSON position within its list), column and reason;
nothing is written unless every row is valid (all or nothing: half a structure never reaches the graph);
with ``partial=True`` the other rows are written in one transaction. Checks: ids, kinds and hierarchies
known, numbers finite and in range, times aware and ``valid_to > valid_from``, no duplicate ids or edges,
a node id never changes kind, edges name existing nodes (in the file or the database), sites are leaves, no overlap of
validity with the file's or the database's edges (same hierarchy, child and parent; any parent in a
single-parent hierarchy), no cycle. The database trigger checks overlaps again (the last word when
several writers race).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from models.assets import (
    NODE_KINDS,
    OPEN_ENDED_MS,
    SITE_FACT_COLUMNS,
    SITE_KIND,
    AssetEdges,
    AssetGraph,
    AssetNodes,
    Conn,
    all_nodes,
    site_records,
)

FileFormat = Literal["csv", "json"]
RECORD_NODE, RECORD_SITE, RECORD_EDGE = "node", "site", "edge"
RECORDS = (RECORD_NODE, RECORD_SITE, RECORD_EDGE)
JSON_KEYS = {"nodes": RECORD_NODE, "sites": RECORD_SITE, "edges": RECORD_EDGE}
NODE_COLUMNS = ("node_id", "kind", "name")
SITE_COLUMNS = ("node_id", "name", "postcode", "battery_count", *SITE_FACT_COLUMNS)
EDGE_COLUMNS = ("hierarchy", "parent_id", "child_id", "valid_from", "valid_to")
FILE_COLUMNS = ("record", "node_id", "kind", "name", "postcode", "battery_count", *SITE_FACT_COLUMNS,
                *EDGE_COLUMNS)
NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
POSTCODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 -]{1,9}$"
AWARE_TIME_PATTERN = r"(?:Z|z|[+-]\d{2}(?::?\d{2})?)$"
MAX_NAME_CHARS = 200
ANALYZE_AFTER_ROWS = 10_000
"""An import writing at least this many nodes + edges refreshes the planner statistics of the graph tables."""
# (column, lowest, highest, lowest allowed, highest allowed) of the site facts, as the migration checks.
SITE_FACT_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "capacity_kwh": (0.0, np.inf, False, False),
    "max_charge_kw": (0.0, np.inf, False, False),
    "max_discharge_kw": (0.0, np.inf, False, False),
    "charge_efficiency": (0.0, 1.0, False, True),
    "discharge_efficiency": (0.0, 1.0, False, True),
    "backup_reserve_fraction": (0.0, 1.0, True, True),
    "pv_capacity_kw": (0.0, np.inf, True, False),
}


class AssetFileError(ValueError):
    """A file that cannot be imported at all (unreadable, unknown format, unusable header)."""


@dataclass(frozen=True)
class RejectedRow:
    """One problem of one rejected row: where (``row``, ``record``, ``column``), why, and the value."""

    row: int
    record: str
    column: str
    reason: str
    value: str


@dataclass(frozen=True)
class ImportReport:
    """What an import did: rows read, rows accepted (by record), the problems of the rejected rows."""

    rows_read: int
    accepted_nodes: int
    accepted_sites: int
    accepted_edges: int
    rejected: tuple[RejectedRow, ...]
    # False when valid rows were not written because others were rejected (an all-or-nothing import).
    written: bool = True

    @property
    def accepted(self) -> int:
        """Rows accepted (written unless ``written`` is False)."""
        return self.accepted_nodes + self.accepted_sites + self.accepted_edges

    @property
    def rejected_rows(self) -> int:
        """Rows rejected (a row can have several problems)."""
        return len({(problem.record, problem.row) for problem in self.rejected})


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: the file and how many records of each kind."""

    path: Path
    nodes: int
    sites: int
    edges: int


# ---------------------------------------------------------------------------------------------------
# Files <-> frames (every cell a string, "" = empty; plus the 1-based "row" of each record)


def file_format_of(path: Path, file_format: str | None = None) -> FileFormat:
    """``file_format`` if given, else from the suffix (``.csv``, ``.json``); :class:`AssetFileError` else."""
    chosen = (file_format or path.suffix.lstrip(".")).lower()
    if chosen == "csv":
        return "csv"
    if chosen == "json":
        return "json"
    raise AssetFileError(f"{path}: unknown asset file format {chosen!r} (use .csv or .json, or give the format)")


def read_asset_file(path: Path, file_format: str | None = None) -> pd.DataFrame:
    """The records of an asset file as strings in the columns :data:`FILE_COLUMNS` plus ``row``."""
    chosen = file_format_of(path, file_format)
    try:
        return _read_csv(path) if chosen == "csv" else _read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, pd.errors.ParserError) as exc:
        raise AssetFileError(f"{path}: cannot read the asset file: {exc}") from exc


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], skipinitialspace=True)
    except pd.errors.EmptyDataError as exc:
        raise AssetFileError(f"{path}: the asset file is empty") from exc
    frame.columns = [str(column).strip() for column in frame.columns]
    if "site_id" in frame.columns and "node_id" not in frame.columns:
        frame = frame.rename(columns={"site_id": "node_id"})
    if "record" not in frame.columns:
        record = RECORD_EDGE if "parent_id" in frame.columns else (
            RECORD_SITE if "capacity_kwh" in frame.columns else RECORD_NODE)
        frame["record"] = record
    frame["row"] = np.arange(1, len(frame) + 1)
    return _normalise(frame, path)


def _read_json(path: Path) -> pd.DataFrame:
    document = json.loads(path.read_text())
    parts: list[pd.DataFrame] = []
    if isinstance(document, dict):
        unknown = set(document) - set(JSON_KEYS)
        if unknown:
            raise AssetFileError(f"{path}: unknown top-level keys {sorted(unknown)} (expected {sorted(JSON_KEYS)})")
        for key, record in JSON_KEYS.items():
            items = document.get(key, [])
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                raise AssetFileError(f"{path}: {key!r} must be a list of objects")
            part = pd.DataFrame([_json_cells(item) for item in items]).fillna("")
            part["record"] = record
            part["row"] = np.arange(1, len(items) + 1)
            parts.append(part)
    elif isinstance(document, list) and all(isinstance(item, dict) for item in document):
        part = pd.DataFrame([_json_cells(item) for item in document]).fillna("")
        part["row"] = np.arange(1, len(document) + 1)
        parts.append(part)
    else:
        raise AssetFileError(f"{path}: expected an object of nodes/sites/edges lists or a list of records")
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if "site_id" in frame.columns:
        frame["node_id"] = frame.get("node_id", pd.Series("", index=frame.index)).where(
            frame.get("node_id", pd.Series("", index=frame.index)).fillna("") != "", frame["site_id"])
    return _normalise(frame.fillna(""), path)


def _json_cells(item: dict[str, Any]) -> dict[str, str]:
    return {str(key): "" if value is None else (json.dumps(value) if isinstance(value, (dict, list)) else
                                                 str(value).lower() if isinstance(value, bool) else str(value))
            for key, value in item.items()}


def _normalise(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    if "record" not in frame.columns and len(frame):
        raise AssetFileError(f"{path}: the records have no 'record' key")
    for column in FILE_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
        frame[column] = frame[column].astype(str).str.strip()
    if "row" not in frame.columns:
        frame["row"] = np.arange(1, len(frame) + 1)
    frame["record"] = frame["record"].str.lower()
    return frame[["row", *FILE_COLUMNS]].reset_index(drop=True)


def _iso_ms(values_ms: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """ISO 8601 UTC strings of epoch ms (``""`` for :data:`OPEN_ENDED_MS`), vectorised."""
    open_ended = values_ms == OPEN_ENDED_MS
    text = np.char.add(np.datetime_as_string(np.where(open_ended, 0, values_ms).astype("datetime64[ms]"),
                                             unit="ms"), "Z")
    return np.where(open_ended, "", text)


def graph_frame(graph: AssetGraph) -> pd.DataFrame:
    """The records of an in-memory graph in the file layout (nodes, then sites, then edges)."""
    nodes, sites, edges = graph.nodes, graph.sites, graph.edges
    parameters = sites.parameters
    node_part = pd.DataFrame({"record": RECORD_NODE, "node_id": nodes.node_ids, "kind": nodes.kinds,
                              "name": nodes.names})
    site_part = pd.DataFrame({
        "record": RECORD_SITE, "node_id": parameters.site_ids, "name": sites.names, "postcode": sites.postcodes,
        "battery_count": sites.battery_counts.astype(str),
        **{column: getattr(parameters, column).astype(str) for column in SITE_FACT_COLUMNS},
    })
    edge_part = pd.DataFrame({
        "record": RECORD_EDGE, "hierarchy": edges.hierarchies, "parent_id": edges.parent_ids,
        "child_id": edges.child_ids, "valid_from": _iso_ms(edges.valid_from_ms), "valid_to": _iso_ms(edges.valid_to_ms),
    })
    frame = pd.concat([node_part, site_part, edge_part], ignore_index=True).fillna("")
    frame["row"] = np.arange(1, len(frame) + 1)
    return frame[["row", *FILE_COLUMNS]]


def write_asset_file(frame: pd.DataFrame, path: Path, file_format: str | None = None) -> None:
    """Write records in the file layout to ``path`` as CSV or JSON (numbers as numbers in JSON)."""
    chosen = file_format_of(path, file_format)
    if chosen == "csv":
        frame[list(FILE_COLUMNS)].to_csv(path, index=False)
        return
    document: dict[str, list[dict[str, Any]]] = {}
    for key, record, columns in (("nodes", RECORD_NODE, NODE_COLUMNS), ("sites", RECORD_SITE, SITE_COLUMNS),
                                 ("edges", RECORD_EDGE, EDGE_COLUMNS)):
        part = frame.loc[frame["record"] == record, list(columns)].copy()
        if record == RECORD_SITE:
            part = part.rename(columns={"node_id": "site_id"})
            part["battery_count"] = part["battery_count"].astype(np.int64)
            for column in SITE_FACT_COLUMNS:
                part[column] = part[column].astype(np.float64)
        if record == RECORD_EDGE:
            part["valid_to"] = part["valid_to"].astype(object).where(part["valid_to"] != "", None)
        document[key] = [{str(k): v for k, v in item.items()} for item in part.to_dict(orient="records")]
    path.write_text(json.dumps(document, indent=1))


# ---------------------------------------------------------------------------------------------------
# Validation (vectorised per column)


class _Problems:
    """The problems found so far (row, record, column, reason, value) and which frame rows are bad."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.parts: list[pd.DataFrame] = []
        self.bad = np.zeros(len(frame), dtype=bool)

    def add(self, mask: pd.Series, column: str, reason: str | pd.Series) -> None:
        """Reject the rows where ``mask`` (indexed by frame row labels) is True, for ``reason``."""
        chosen = mask.to_numpy(dtype=bool)
        if not chosen.any():
            return
        labels = mask.index.to_numpy()[chosen]
        rows = self.frame.iloc[labels]
        reasons = reason.to_numpy()[chosen] if isinstance(reason, pd.Series) else reason
        self.parts.append(pd.DataFrame({"row": rows["row"].to_numpy(), "record": rows["record"].to_numpy(),
                                        "column": column, "reason": reasons,
                                        "value": rows[column].to_numpy() if column in rows else ""}))
        self.bad[labels] = True

    def good(self, part: pd.DataFrame) -> pd.Series:
        """For each row of ``part``: no problem so far."""
        return pd.Series(~self.bad[part.index.to_numpy()], index=part.index)

    def report(self) -> tuple[RejectedRow, ...]:
        if not self.parts:
            return ()
        table = pd.concat(self.parts, ignore_index=True).sort_values(["row", "record"], kind="stable")
        columns = [table[name].tolist() for name in ("row", "record", "column", "reason", "value")]
        return tuple(RejectedRow(int(row), str(record), str(column), str(reason), str(value))
                     for row, record, column, reason, value in zip(*columns, strict=True))


def _strings(values: pd.Series) -> np.ndarray[Any, Any]:
    return np.asarray(values.to_numpy(dtype=object), dtype=np.str_)


@dataclass(frozen=True)
class _Lookup:
    """Sorted node ids with their kinds: membership and kind of many ids at once (``np.searchsorted``)."""

    ids: np.ndarray[Any, Any]
    kinds: np.ndarray[Any, Any]

    def positions(self, ids: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if len(self.ids) == 0:
            return np.full(len(ids), -1)
        found = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.where(self.ids[found] == ids, found, -1)

    def kind_of(self, ids: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        where = self.positions(ids)
        return np.where(where >= 0, self.kinds[np.maximum(where, 0)] if len(self.kinds) else "", "")


def _parse_times(text: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(UTC timestamps, unparseable mask, no-offset mask) of ISO 8601 strings ("" gives NaT, no problem)."""
    present = text != ""
    parsed = pd.to_datetime(text.where(present, None), utc=True, format="ISO8601", errors="coerce")
    naive = present & ~text.str.contains(AWARE_TIME_PATTERN, regex=True)
    unparseable = present & parsed.isna() & ~naive
    return parsed, unparseable, naive


def _site_facts(sites: pd.DataFrame, problems: _Problems) -> pd.DataFrame:
    facts = pd.DataFrame(index=sites.index)
    counts = pd.to_numeric(sites["battery_count"].where(sites["battery_count"] != "", "1"), errors="coerce")
    problems.add(~(counts.notna() & (counts >= 1) & (counts == np.floor(counts))), "battery_count",
                 "must be a whole number >= 1")
    facts["battery_count"] = counts.fillna(1).astype(np.int64)
    for column, (low, high, low_ok, high_ok) in SITE_FACT_BOUNDS.items():
        text = sites[column]
        if column == "pv_capacity_kw":
            text = text.where(text != "", "0")
        values = pd.to_numeric(text, errors="coerce").astype(np.float64)
        finite = pd.Series(np.isfinite(values.to_numpy()), index=sites.index)
        missing = text == ""
        above = values >= low if low_ok else values > low
        below = values <= high if high_ok else values < high
        problems.add(missing, column, "is required")
        problems.add(~missing & ~finite, column, "must be a finite number")
        interval = f"{'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"
        problems.add(finite & ~(above & below), column, f"must be in {interval}")
        facts[column] = values
    return facts


def _check_ids(part: pd.DataFrame, column: str, problems: _Problems) -> None:
    text = part[column]
    empty = text == ""
    problems.add(empty, column, "is required")
    problems.add(~empty & ~text.str.match(NODE_ID_PATTERN), column,
                 "must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit")


def _known_hierarchies(conn: Conn) -> dict[str, bool]:
    return {str(r[0]): bool(r[1]) for r in conn.execute("SELECT hierarchy, single_parent FROM asset_hierarchies")}


@dataclass(frozen=True)
class _Validated:
    nodes: pd.DataFrame  # node_id, kind, name (sites included, kind site)
    sites: pd.DataFrame  # node_id, postcode, battery_count, facts
    edges: pd.DataFrame  # row, hierarchy, parent_id, child_id, valid_from, valid_to (file text), child_kind


def _validate(conn: Conn, frame: pd.DataFrame, problems: _Problems) -> _Validated:
    record = frame["record"]
    problems.add(~record.isin(RECORDS), "record", f"must be one of {', '.join(RECORDS)}")
    nodes, sites, edges = (frame[record == name] for name in RECORDS)
    named = pd.concat([nodes, sites]).sort_index()

    _check_ids(named, "node_id", problems)
    problems.add(nodes["kind"] == SITE_KIND, "kind", "a site is a 'site' record, not a node")
    problems.add(~nodes["kind"].isin(NODE_KINDS), "kind", f"must be one of {', '.join(NODE_KINDS)}")
    problems.add(named["name"].str.len() > MAX_NAME_CHARS, "name", f"is longer than {MAX_NAME_CHARS} characters")
    problems.add(~sites["postcode"].str.match(POSTCODE_PATTERN), "postcode",
                 "must be 2-10 letters, digits, spaces or '-'")
    facts = _site_facts(sites, problems)
    kind = named["kind"].where(named["record"] != RECORD_SITE, SITE_KIND)
    candidate = problems.good(named)
    problems.add(candidate & named["node_id"].where(candidate).duplicated() & candidate, "node_id",
                 "duplicate node id (an earlier row of the file has it)")

    stored = all_nodes(conn)
    lookup = _Lookup(stored.node_ids, stored.kinds)
    stored_kind = pd.Series(lookup.kind_of(_strings(named["node_id"])), index=named.index)
    problems.add((stored_kind != "") & (stored_kind != kind), "kind",
                 "the node exists with kind " + stored_kind + " (a node never changes kind)")
    accepted = problems.good(named)
    ids = np.concatenate([stored.node_ids, _strings(named["node_id"][accepted])])
    kinds = np.concatenate([stored.kinds, _strings(kind[accepted])])
    unique_ids, first = np.unique(ids, return_index=True)
    valid_edges = _validate_edges(conn, edges, _Lookup(unique_ids, kinds[first]), problems)

    accepted = problems.good(named)
    nodes_out = pd.DataFrame({"node_id": named["node_id"], "kind": kind, "name": named["name"]})[accepted]
    sites_ok = problems.good(sites)
    sites_out = pd.concat([sites[["node_id", "postcode"]], facts], axis=1)[sites_ok]
    return _Validated(nodes=nodes_out, sites=sites_out, edges=valid_edges)


def _validate_edges(conn: Conn, edges: pd.DataFrame, nodes: _Lookup, problems: _Problems) -> pd.DataFrame:
    hierarchies = _known_hierarchies(conn)
    problems.add(~edges["hierarchy"].isin(list(hierarchies)), "hierarchy",
                 f"must be one of {', '.join(sorted(hierarchies))}")
    kinds: dict[str, pd.Series] = {}
    for column in ("parent_id", "child_id"):
        _check_ids(edges, column, problems)
        kinds[column] = pd.Series(nodes.kind_of(_strings(edges[column])), index=edges.index)
        problems.add(problems.good(edges) & (kinds[column] == ""), column,
                     "unknown node (neither in the database nor an accepted row of the file)")
    problems.add(edges["parent_id"] == edges["child_id"], "child_id", "a node cannot be its own parent")
    problems.add(kinds["parent_id"] == SITE_KIND, "parent_id", "is a site: sites are leaves of every hierarchy")
    valid_from, from_bad, from_naive = _parse_times(edges["valid_from"])
    valid_to, to_bad, to_naive = _parse_times(edges["valid_to"])
    problems.add(edges["valid_from"] == "", "valid_from", "is required")
    for column, bad, naive in (("valid_from", from_bad, from_naive), ("valid_to", to_bad, to_naive)):
        problems.add(bad, column, "is not an ISO 8601 time")
        problems.add(naive, column, "has no UTC offset (write e.g. 2021-03-01T00:00:00Z)")
    problems.add(valid_to.notna() & valid_from.notna() & ~(valid_to > valid_from), "valid_to",
                 "must be after valid_from")

    timed = edges.assign(start=valid_from, end=valid_to)
    key = ["hierarchy", "parent_id", "child_id", "start"]
    candidate = problems.good(edges)
    problems.add(candidate & timed[key].where(candidate).duplicated(), "valid_from",
                 "duplicate edge (an earlier row has the same hierarchy, parent, child and valid_from)")
    single = edges["hierarchy"].map(hierarchies).fillna(False).astype(bool)
    problems.add(_overlaps_earlier(timed[problems.good(edges)], single), "valid_from",
                 "validity overlaps an earlier-starting edge of the file for this child (same parent, or any "
                 "parent in a single-parent hierarchy)")
    inner = problems.good(edges) & (kinds["child_id"] != SITE_KIND)
    problems.add(_in_cycle(conn, edges[inner]), "parent_id", "the edge closes a cycle in the graph")
    return edges.assign(child_kind=kinds["child_id"])[problems.good(edges)]


def _overlaps_earlier(edges: pd.DataFrame, single: pd.Series) -> pd.Series:
    """Rows whose validity starts before an earlier-starting edge of the same group ends (vectorised)."""
    group = edges["hierarchy"] + "\x00" + edges["child_id"] + "\x00" + edges["parent_id"].where(
        ~single.reindex(edges.index, fill_value=False), "")
    start = edges["start"].astype("int64")
    end = edges["end"].astype("int64").where(edges["end"].notna(), np.iinfo(np.int64).max)
    table = pd.DataFrame({"group": group, "start": start, "end": end}).sort_values(["group", "start"], kind="stable")
    table["reach"] = table.groupby("group", sort=False)["end"].cummax()
    previous_reach = table.groupby("group", sort=False)["reach"].shift(1)
    return (table["start"] < previous_reach).reindex(edges.index)


def _in_cycle(conn: Conn, edges: pd.DataFrame) -> pd.Series:
    """Edges (between aggregation nodes: sites are leaves) that close a cycle of the stored graph plus
    these edges, ignoring time: while a cycle remains, its last file row is rejected."""
    closing = pd.Series(False, index=edges.index)
    if edges.empty:
        return closing
    stored = conn.execute(
        "SELECT e.child_id, e.parent_id FROM asset_edges e JOIN asset_nodes n ON n.node_id = e.child_id"
        " WHERE n.kind <> 'site'").fetchall()
    children = np.concatenate([np.array([r[0] for r in stored], dtype=np.str_), _strings(edges["child_id"])])
    parents = np.concatenate([np.array([r[1] for r in stored], dtype=np.str_), _strings(edges["parent_id"])])
    names, codes = np.unique(np.concatenate([children, parents]), return_inverse=True)
    child_codes, parent_codes = codes[: len(children)], codes[len(children):]
    kept = np.ones(len(children), dtype=bool)
    file_order = np.argsort(edges["row"].to_numpy(), kind="stable")
    for _ in range(len(edges)):
        graph = sp.csr_matrix((np.ones(int(kept.sum())), (child_codes[kept], parent_codes[kept])),
                              shape=(len(names), len(names)))
        _, labels = connected_components(graph, directed=True, connection="strong")
        sizes = np.bincount(labels)
        in_cycle = (labels[child_codes] == labels[parent_codes]) & (sizes[labels[child_codes]] > 1) & kept
        file_in_cycle = in_cycle[len(stored):][file_order]
        if not file_in_cycle.any():
            break
        last = file_order[np.flatnonzero(file_in_cycle)[-1]]
        kept[len(stored) + last] = False
        closing.iloc[last] = True
    return closing


# ---------------------------------------------------------------------------------------------------
# Writing (COPY into temporary tables, then set-based upserts)


def _csv_cell(values: pd.Series, *, empty_is_null: bool = False) -> pd.Series:
    quoted = '"' + values.astype(str).str.replace('"', '""', regex=False) + '"'
    return quoted.where(values != "", "") if empty_is_null else quoted


def _copy_in(conn: Conn, table: str, columns: dict[str, pd.Series], nullable: tuple[str, ...] = ()) -> None:
    """COPY the aligned ``columns`` into ``table`` (every cell quoted; "" in ``nullable`` columns = NULL)."""
    cells = [_csv_cell(values, empty_is_null=name in nullable) for name, values in columns.items()]
    if not cells or len(cells[0]) == 0:
        return
    lines = cells[0]
    for cell in cells[1:]:
        lines = lines + "," + cell
    data = ("\n".join(lines.tolist()) + "\n").encode()
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT csv)".encode()
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(data)


def _store(conn: Conn, valid: _Validated, problems: _Problems) -> tuple[int, int, int]:
    """Write the validated rows; returns (nodes, sites, edges) written; edges clashing with stored ones are
    added to ``problems`` instead."""
    conn.execute("CREATE TEMP TABLE asset_import_nodes (node_id text, kind text, name text) ON COMMIT DROP")
    conn.execute("CREATE TEMP TABLE asset_import_sites (site_id text, postcode text, battery_count integer, "
                 + ", ".join(f"{c} double precision" for c in SITE_FACT_COLUMNS) + ") ON COMMIT DROP")
    conn.execute("CREATE TEMP TABLE asset_import_edges (row_number integer, hierarchy text, parent_id text, "
                 "child_id text, child_kind text, valid_from timestamptz, valid_to timestamptz) ON COMMIT DROP")
    _copy_in(conn, "asset_import_nodes", {c: valid.nodes[c] for c in ("node_id", "kind", "name")})
    sites = valid.sites
    _copy_in(conn, "asset_import_sites", {"site_id": sites["node_id"], "postcode": sites["postcode"],
                                          **{c: sites[c].astype(str) for c in ("battery_count", *SITE_FACT_COLUMNS)}})
    edges = valid.edges
    _copy_in(conn, "asset_import_edges", {"row_number": edges["row"].astype(str),
                                          **{c: edges[c] for c in (*EDGE_COLUMNS, "child_kind")}},
             nullable=("valid_to",))
    conn.execute("ANALYZE asset_import_nodes, asset_import_sites, asset_import_edges")
    # Updates of existing rows, then plain inserts of new ones (cheaper than INSERT ... ON CONFLICT for
    # bulk loads); the advisory lock (the one the edge trigger takes) serialises imports, so no other
    # import inserts the same ids meanwhile.
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('openvpp.asset_edges'))")
    conn.execute("UPDATE asset_nodes n SET name = s.name FROM asset_import_nodes s"
                 " WHERE n.node_id = s.node_id AND n.name IS DISTINCT FROM s.name")
    conn.execute("INSERT INTO asset_nodes (node_id, kind, name) SELECT node_id, kind, name FROM asset_import_nodes s"
                 " WHERE NOT EXISTS (SELECT 1 FROM asset_nodes n WHERE n.node_id = s.node_id)")
    facts = ("postcode", "battery_count", *SITE_FACT_COLUMNS)
    listed, staged = ", ".join(facts), ", ".join(f"s.{c}" for c in facts)
    conn.execute(f"UPDATE sites SET ({listed}, updated_at) = ({staged}, now()) FROM asset_import_sites s"
                 f" WHERE sites.site_id = s.site_id AND ({', '.join('sites.' + c for c in facts)}) IS DISTINCT FROM"
                 f" ({staged})")
    conn.execute(f"INSERT INTO sites (site_id, {listed}) SELECT s.site_id, {staged} FROM asset_import_sites s"
                 " WHERE NOT EXISTS (SELECT 1 FROM sites WHERE sites.site_id = s.site_id)")
    clashes = conn.execute(_STORED_CLASH_SQL).fetchall()
    if clashes:
        first: dict[int, str] = {}
        for row, parent, child, hierarchy, start, end in clashes:
            first.setdefault(int(row), f"validity overlaps the stored edge {parent} -> {child} ({hierarchy}) valid "
                                       f"from {start.isoformat()} to {'open' if end is None else end.isoformat()}")
        stored_edges = problems.frame[problems.frame["record"] == RECORD_EDGE]
        reason = stored_edges["row"].map(first)
        problems.add(reason.notna(), "valid_from", reason.fillna(""))
        conn.execute("DELETE FROM asset_import_edges WHERE row_number = ANY(%s)", (list(first),))
    conn.execute(
        "UPDATE asset_edges e SET valid_to = s.valid_to FROM asset_import_edges s"
        " WHERE (e.parent_id, e.child_id, e.hierarchy, e.valid_from) = (s.parent_id, s.child_id, s.hierarchy,"
        " s.valid_from) AND e.valid_to IS DISTINCT FROM s.valid_to")
    conn.execute(
        "INSERT INTO asset_edges (hierarchy, parent_id, child_id, child_kind, valid_from, valid_to)"
        " SELECT hierarchy, parent_id, child_id, child_kind, valid_from, valid_to FROM asset_import_edges s"
        " WHERE NOT EXISTS (SELECT 1 FROM asset_edges e WHERE (e.parent_id, e.child_id, e.hierarchy, e.valid_from)"
        " = (s.parent_id, s.child_id, s.hierarchy, s.valid_from))")
    edge_count = conn.execute("SELECT count(*) FROM asset_import_edges").fetchone()
    if len(valid.nodes) + len(valid.edges) >= ANALYZE_AFTER_ROWS:
        conn.execute("ANALYZE asset_nodes, sites, asset_edges")
    return len(valid.nodes) - len(valid.sites), len(valid.sites), int(edge_count[0]) if edge_count else 0


# Staged edges whose validity overlaps a stored edge that the import does not replace (same key) — with
# stored edges taken as the import leaves them (a staged row with a stored edge's key sets its valid_to).
_STORED_CLASH_SQL = """
SELECT s.row_number, e.parent_id, e.child_id, e.hierarchy, e.valid_from, coalesce(u.valid_to, e.valid_to)
  FROM asset_import_edges s
  JOIN asset_hierarchies h ON h.hierarchy = s.hierarchy
  JOIN asset_edges e ON e.child_id = s.child_id AND e.hierarchy = s.hierarchy
                    AND (e.parent_id = s.parent_id OR h.single_parent)
                    AND NOT (e.parent_id = s.parent_id AND e.valid_from = s.valid_from)
  LEFT JOIN asset_import_edges u ON u.hierarchy = e.hierarchy AND u.parent_id = e.parent_id
                                AND u.child_id = e.child_id AND u.valid_from = e.valid_from
 WHERE e.valid_from < coalesce(s.valid_to, 'infinity')
   AND s.valid_from < coalesce(CASE WHEN u.row_number IS NULL THEN e.valid_to ELSE u.valid_to END, 'infinity')
 ORDER BY s.row_number
"""


class _NothingWrittenError(Exception):
    """Rolls the import's transaction back (a row was rejected and the import is all or nothing)."""


def import_frame(conn: Conn, frame: pd.DataFrame, *, partial: bool = False) -> ImportReport:
    """Validate the records of ``frame`` (file layout) and write them in one transaction: all of them, or
    none when any row is rejected (``partial=True``: the valid ones). ``written`` says whether anything was."""
    problems = _Problems(frame.reset_index(drop=True))
    try:
        with conn.transaction():
            valid = _validate(conn, problems.frame, problems)
            nodes, sites, edges = _store(conn, valid, problems)
            if problems.report() and not partial:
                raise _NothingWrittenError
    except _NothingWrittenError:
        return ImportReport(rows_read=len(frame), accepted_nodes=nodes, accepted_sites=sites, accepted_edges=edges,
                            rejected=problems.report(), written=False)
    return ImportReport(rows_read=len(frame), accepted_nodes=nodes, accepted_sites=sites, accepted_edges=edges,
                        rejected=problems.report())


def import_assets(conn: Conn, path: Path, file_format: str | None = None, *, partial: bool = False) -> ImportReport:
    """Import an asset file (CSV or JSON, see the module docstring) into the database of ``conn``: every row
    or none (``partial=True``: the valid rows even when others are rejected).

    Raises :class:`AssetFileError` when the file cannot be read at all; bad rows are reported, not raised.
    """
    return import_frame(conn, read_asset_file(path, file_format), partial=partial)


def import_graph(conn: Conn, graph: AssetGraph) -> ImportReport:
    """Import an in-memory graph (e.g. :func:`models.asset_factory.synthetic_asset_graph`) like a file."""
    return import_frame(conn, graph_frame(graph))


def load_graph(conn: Conn) -> AssetGraph:
    """The whole stored graph (times as epoch ms UTC, truncated to the millisecond)."""
    records = site_records(conn)
    rows = conn.execute(
        "SELECT hierarchy, parent_id, child_id, (extract(epoch FROM valid_from) * 1000)::bigint,"
        " (extract(epoch FROM valid_to) * 1000)::bigint FROM asset_edges"
        " ORDER BY hierarchy, child_id, valid_from, parent_id").fetchall()
    columns: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
    edges = AssetEdges(
        hierarchies=np.array(columns[0], dtype=np.str_).astype(np.str_),
        parent_ids=np.array(columns[1], dtype=np.str_).astype(np.str_),
        child_ids=np.array(columns[2], dtype=np.str_).astype(np.str_),
        valid_from_ms=np.array(columns[3], dtype=np.int64),
        valid_to_ms=np.array([OPEN_ENDED_MS if v is None else v for v in columns[4]], dtype=np.int64),
    )
    nodes = all_nodes(conn, include_sites=False)
    return AssetGraph(nodes=AssetNodes(nodes.node_ids, nodes.kinds, nodes.names), sites=records, edges=edges)


def export_assets(conn: Conn, path: Path, file_format: str | None = None) -> ExportReport:
    """Write the whole stored graph to ``path`` (CSV or JSON); importing it back changes nothing."""
    graph = load_graph(conn)
    write_asset_file(graph_frame(graph), path, file_format)
    return ExportReport(path=path, nodes=len(graph.nodes.node_ids), sites=graph.sites.parameters.site_count,
                        edges=len(graph.edges.child_ids))

