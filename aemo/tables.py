"""Typed schemas of the AEMO tables a bidder needs, and their normalisation into clean DataFrames.

A :class:`TableSchema` names a table of the store (``DISPATCHPRICE`` …) and says where AEMO publishes it
(the ``I``-row identities, the same in the monthly archive and in current reports: ``DISPATCH.PRICE`` in
``PUBLIC_DVD_DISPATCHPRICE_…`` and in ``PUBLIC_DISPATCHIS_…``), its key columns, its required columns,
its datetime columns (naive market time, AEST; interval times are interval-ENDING), how it is partitioned
by month, and how intervention runs are treated. :func:`normalise` turns a parsed
:class:`~aemo.mms_csv.MmsTable` into a DataFrame with typed numbers (float64 for MW, MWh, $/MWh and $/MW/h;
int64 for counters and flags), ``datetime64[s]`` times and one row per key.

Versions and columns: AEMO adds columns over time (DISPATCHPRICE v5 adds the 1-second FCAS prices in
October 2023; BIDDAYOFFER_D / BIDPEROFFER_D carry DIRECTION since the bidirectional-unit rules of June
2024). Columns beyond the schema are kept as parsed; a required column that is absent is one
:class:`~aemo.errors.MissingColumnError` naming the file, table, version and column. The FCAS products
are taken from the data (:func:`price_products`), never from a fixed list: 8 before 9 October 2023, 10 after.

Intervention (AEMO runs dispatch twice during an intervention): ``INTERVENTION = 1`` rows are the physical
run, ``INTERVENTION = 0`` the pricing run whose prices are settled. Price tables keep the pricing run only
(:attr:`InterventionRule.PRICING_RUN`); DISPATCHREGIONSUM and DISPATCHLOAD keep both runs with
INTERVENTION in their key (:attr:`InterventionRule.KEPT_IN_KEY`), so a reader chooses (physical targets:
``INTERVENTION = 1`` where present, else 0).

Assumptions where AEMO's files are ambiguous: the Daily report's DREGION table (price and regional
solution in one table) feeds both DISPATCHPRICE and DISPATCHREGIONSUM, and its DUNIT table DISPATCHLOAD;
BIDDAYOFFER_D / BIDPEROFFER_D rows before June 2024 have no DIRECTION column and are stored without one
(not filled with a guessed direction).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

import numpy as np
import pandas as pd

from aemo.errors import MissingColumnError, MmsFormatError, UnknownTableError
from aemo.mms_csv import DATETIME_DTYPE, MMS_DATETIME_FORMAT, MmsTable
from algorithms.common.products import ENERGY

ENERGY_PRICE_COLUMN = "RRP"
FCAS_SERVICE = r"(?:RAISE|LOWER)(?:\d+(?:SEC|MIN)|REG)"
FCAS_PRICE_COLUMN = re.compile(rf"^(?P<product>{FCAS_SERVICE})RRP$")
FCAS_PRICE_PATTERN = rf"^{FCAS_SERVICE}(?:RRP|ROP)$"
REGION_FCAS_PATTERN = rf"^{FCAS_SERVICE}(?:LOCALDISPATCH|LOCALREQ|REQ|DISPATCH|IMPORT|LOCALPRICE|PRICE)$"
UNIT_FCAS_PATTERN = rf"^{FCAS_SERVICE}(?:ACTUALAVAILABILITY)?$"
ALL_MONTHS = "all"
FIVE_MINUTE_SETTLEMENT_START = date(2021, 10, 1)
BANDS = tuple(range(1, 11))


class InterventionRule(StrEnum):
    """What is kept of intervention runs (see the module docstring)."""

    PRICING_RUN = "pricing_run"
    KEPT_IN_KEY = "kept_in_key"
    NOT_APPLICABLE = "not_applicable"


class Partitioning(StrEnum):
    """How rows are grouped into monthly partitions of the store."""

    INTERVAL_MONTH = "interval_month"
    """Month of the interval: of the interval-ending time less one second (00:00 on the 1st is last month's)."""
    DAY_MONTH = "day_month"
    """Month of a trading day (a date at 00:00)."""
    SINGLE = "single"
    """One partition for the whole table (reference tables: thresholds, unit details)."""


@dataclass(frozen=True)
class TableSchema:
    """One table of the store (names are AEMO's column names; units in :mod:`aemo.tables`'s docstring).

    ``sources``: the (report type, sub-type) pairs of the ``I`` rows that carry it. ``key_columns``: one
    row per key after normalisation (``optional_key_columns`` join the key when the data has them).
    ``time_column``: the column partitions and periods are read on. ``gap_minutes``: the interval length
    (minutes) gaps are checked at, None if the table is not an interval series; ``coarse_minutes`` is the
    length before five-minute settlement (1 October 2021) where it differed. ``archive_names``: the table
    names in monthly archive file names.
    """

    name: str
    description: str
    sources: tuple[tuple[str, str], ...]
    key_columns: tuple[str, ...]
    required_columns: tuple[str, ...]
    datetime_columns: tuple[str, ...]
    partitioning: Partitioning
    time_column: str | None
    text_columns: tuple[str, ...] = ()
    integer_columns: tuple[str, ...] = ()
    float_columns: tuple[str, ...] = ()
    float_pattern: str | None = None
    optional_key_columns: tuple[str, ...] = ()
    region_column: str | None = None
    unit_column: str | None = None
    intervention: InterventionRule = InterventionRule.NOT_APPLICABLE
    gap_minutes: int | None = None
    coarse_minutes: int | None = None
    archive_names: tuple[str, ...] = ()
    column_selections: tuple[tuple[str, str, str], ...] = ()
    """(report type, sub-type, regex): from that source keep only the columns the regex matches (a source
    table shared by several schemas, e.g. DREGION, gives each schema its own columns)."""

    def keys_in(self, columns: Iterable[str]) -> tuple[str, ...]:
        """The key of a frame with ``columns``: the key columns plus the optional ones it has."""
        present = set(columns)
        return self.key_columns + tuple(c for c in self.optional_key_columns if c in present)

    def interval_minutes(self, month: date) -> int | None:
        """Length (minutes) of this table's intervals in ``month``; None for a table of no intervals."""
        if self.gap_minutes is None:
            return None
        if self.coarse_minutes is not None and month < FIVE_MINUTE_SETTLEMENT_START:
            return self.coarse_minutes
        return self.gap_minutes

    def selected_columns(self, report_type: str, sub_type: str, columns: Iterable[str]) -> list[str]:
        """The columns of a source table this schema takes (all of them unless a selection applies)."""
        columns = list(columns)
        for source_type, source_sub_type, pattern in self.column_selections:
            if (source_type, source_sub_type) == (report_type, sub_type):
                matcher = re.compile(pattern)
                return [column for column in columns if matcher.match(column)]
        return columns

    def carries(self, report_type: str, sub_type: str) -> bool:
        """Whether an ``I`` row (report type, sub-type) is a source of this table."""
        return (report_type, sub_type) in self.sources


_PRICE_COLUMNS = (r"^(?:SETTLEMENTDATE|RUNNO|REGIONID|INTERVENTION|RRP|EEP|ROP|APCFLAG|MARKETSUSPENDEDFLAG|"
                  rf"LASTCHANGED|PRICE_STATUS)$|^{FCAS_SERVICE}(?:RRP|ROP|APCFLAG)$")
_NOT_PRICE_COLUMNS = (r"^(?!(?:RRP|EEP|ROP|APCFLAG|MARKETSUSPENDEDFLAG|PRICE_STATUS)$)"
                      rf"(?!{FCAS_SERVICE}(?:RRP|ROP|APCFLAG)$)")
_PRICE_BANDS = tuple(f"PRICEBAND{band}" for band in BANDS)
_BAND_AVAILS = tuple(f"BANDAVAIL{band}" for band in BANDS)

SCHEMAS: tuple[TableSchema, ...] = (
    TableSchema(
        name="DISPATCHPRICE",
        description="Regional dispatch prices: RRP ($/MWh) and every FCAS price ($/MW/h) of the data.",
        sources=(("DISPATCH", "PRICE"), ("DREGION", "")),
        key_columns=("SETTLEMENTDATE", "REGIONID"),
        required_columns=("SETTLEMENTDATE", "REGIONID", "INTERVENTION", "RRP"),
        datetime_columns=("SETTLEMENTDATE", "LASTCHANGED"),
        partitioning=Partitioning.INTERVAL_MONTH, time_column="SETTLEMENTDATE",
        text_columns=("REGIONID", "PRICE_STATUS"), integer_columns=("INTERVENTION", "RUNNO"),
        float_columns=("RRP", "EEP", "ROP"), float_pattern=FCAS_PRICE_PATTERN, region_column="REGIONID",
        intervention=InterventionRule.PRICING_RUN, gap_minutes=5, archive_names=("DISPATCHPRICE",),
        column_selections=(("DREGION", "", _PRICE_COLUMNS),)),
    TableSchema(
        name="DISPATCHREGIONSUM",
        description="Regional dispatch solution: demand (MW) and FCAS dispatch and requirements (MW) per service.",
        sources=(("DISPATCH", "REGIONSUM"), ("DREGION", "")),
        key_columns=("SETTLEMENTDATE", "REGIONID", "INTERVENTION"),
        required_columns=("SETTLEMENTDATE", "REGIONID", "INTERVENTION", "TOTALDEMAND"),
        datetime_columns=("SETTLEMENTDATE", "LASTCHANGED"),
        partitioning=Partitioning.INTERVAL_MONTH, time_column="SETTLEMENTDATE",
        text_columns=("REGIONID",), integer_columns=("INTERVENTION", "RUNNO"),
        float_columns=("TOTALDEMAND", "AVAILABLEGENERATION", "AVAILABLELOAD", "DEMANDFORECAST",
                       "DISPATCHABLEGENERATION", "DISPATCHABLELOAD", "NETINTERCHANGE", "EXCESSGENERATION",
                       "CLEAREDSUPPLY", "INITIALSUPPLY"),
        float_pattern=REGION_FCAS_PATTERN, region_column="REGIONID",
        intervention=InterventionRule.KEPT_IN_KEY, gap_minutes=5, archive_names=("DISPATCHREGIONSUM",),
        column_selections=(("DREGION", "", _NOT_PRICE_COLUMNS),)),
    TableSchema(
        name="DISPATCHLOAD",
        description="Unit dispatch: targets INITIALMW / TOTALCLEARED (MW) and FCAS enablement (MW) per service.",
        sources=(("DISPATCH", "UNIT_SOLUTION"), ("DUNIT", "")),
        key_columns=("SETTLEMENTDATE", "DUID", "INTERVENTION"),
        required_columns=("SETTLEMENTDATE", "DUID", "INTERVENTION", "INITIALMW", "TOTALCLEARED"),
        datetime_columns=("SETTLEMENTDATE", "LASTCHANGED"),
        partitioning=Partitioning.INTERVAL_MONTH, time_column="SETTLEMENTDATE",
        text_columns=("DUID", "CONNECTIONPOINTID"), integer_columns=("INTERVENTION", "RUNNO"),
        float_columns=("INITIALMW", "TOTALCLEARED", "RAMPDOWNRATE", "RAMPUPRATE", "AVAILABILITY"),
        float_pattern=UNIT_FCAS_PATTERN, unit_column="DUID",
        intervention=InterventionRule.KEPT_IN_KEY, gap_minutes=5, archive_names=("DISPATCHLOAD",)),
    TableSchema(
        name="TRADINGPRICE",
        description="Regional trading prices: RRP ($/MWh) and FCAS ($/MW/h); half-hourly before October 2021.",
        sources=(("TRADING", "PRICE"),),
        key_columns=("SETTLEMENTDATE", "REGIONID"),
        required_columns=("SETTLEMENTDATE", "REGIONID", "RRP"),
        datetime_columns=("SETTLEMENTDATE", "LASTCHANGED"),
        partitioning=Partitioning.INTERVAL_MONTH, time_column="SETTLEMENTDATE",
        text_columns=("REGIONID", "PRICE_STATUS"), integer_columns=("RUNNO", "PERIODID"),
        float_columns=("RRP", "EEP", "ROP"), float_pattern=FCAS_PRICE_PATTERN, region_column="REGIONID",
        intervention=InterventionRule.PRICING_RUN, gap_minutes=5, coarse_minutes=30,
        archive_names=("TRADINGPRICE",)),
    TableSchema(
        name="PREDISPATCHPRICE",
        description="Pre-dispatch regional prices per run and half-hour period: RRP ($/MWh), FCAS ($/MW/h).",
        sources=(("PREDISPATCH", "REGION_PRICES"),),
        key_columns=("PREDISPATCHSEQNO", "REGIONID", "DATETIME"),
        required_columns=("PREDISPATCHSEQNO", "REGIONID", "DATETIME", "RRP", "LASTCHANGED"),
        datetime_columns=("DATETIME", "LASTCHANGED", "PREDISPATCH_RUN_DATETIME"),
        partitioning=Partitioning.INTERVAL_MONTH, time_column="DATETIME",
        text_columns=("REGIONID",), integer_columns=("PREDISPATCHSEQNO", "RUNNO", "PERIODID", "INTERVENTION"),
        float_columns=("RRP", "EEP"), float_pattern=FCAS_PRICE_PATTERN, region_column="REGIONID",
        intervention=InterventionRule.PRICING_RUN, gap_minutes=30, archive_names=("PREDISPATCHPRICE",)),
    TableSchema(
        name="P5MIN_REGIONSOLUTION",
        description="5-minute pre-dispatch per run and interval: RRP ($/MWh), FCAS ($/MW/h), demand (MW).",
        sources=(("P5MIN", "REGIONSOLUTION"),),
        key_columns=("RUN_DATETIME", "INTERVAL_DATETIME", "REGIONID"),
        required_columns=("RUN_DATETIME", "INTERVENTION", "INTERVAL_DATETIME", "REGIONID", "RRP"),
        datetime_columns=("RUN_DATETIME", "INTERVAL_DATETIME", "LASTCHANGED"),
        partitioning=Partitioning.INTERVAL_MONTH, time_column="RUN_DATETIME",
        text_columns=("REGIONID",), integer_columns=("INTERVENTION",),
        float_columns=("RRP", "ROP", "TOTALDEMAND", "AVAILABLEGENERATION", "DEMANDFORECAST"),
        float_pattern=FCAS_PRICE_PATTERN, region_column="REGIONID",
        intervention=InterventionRule.PRICING_RUN, gap_minutes=5, archive_names=("P5MIN_REGIONSOLUTION",)),
    TableSchema(
        name="BIDDAYOFFER_D",
        description="Daily bids in force per unit, trading day and bid type (and DIRECTION since June 2024): "
                    "10 band prices ($/MWh; FCAS $/MW/h).",
        sources=(("BID", "BIDDAYOFFER_D"), ("BIDS", "BIDDAYOFFER_D")),
        key_columns=("SETTLEMENTDATE", "DUID", "BIDTYPE"), optional_key_columns=("DIRECTION",),
        required_columns=("SETTLEMENTDATE", "DUID", "BIDTYPE", "OFFERDATE", "VERSIONNO", *_PRICE_BANDS),
        datetime_columns=("SETTLEMENTDATE", "BIDSETTLEMENTDATE", "OFFERDATE", "LASTCHANGED"),
        partitioning=Partitioning.DAY_MONTH, time_column="SETTLEMENTDATE",
        text_columns=("DUID", "BIDTYPE", "DIRECTION", "PARTICIPANTID", "REBIDEXPLANATION", "ENTRYTYPE"),
        integer_columns=("VERSIONNO",), float_columns=(*_PRICE_BANDS, "DAILYENERGYCONSTRAINT", "MINIMUMLOAD"),
        unit_column="DUID", archive_names=("BIDDAYOFFER_D",)),
    TableSchema(
        name="BIDPEROFFER_D",
        description="Period bids in force per unit, trading day, bid type (and DIRECTION) and 5-minute interval "
                    "(PERIODID counts half hours in older versions, INTERVAL_DATETIME is the key): MAXAVAIL "
                    "and BANDAVAIL1..10 (MW), ramp rates (MW/min), FCAS trapezium (MW).",
        sources=(("BID", "BIDPEROFFER_D"), ("BIDS", "BIDPEROFFER_D")),
        key_columns=("SETTLEMENTDATE", "DUID", "BIDTYPE", "INTERVAL_DATETIME"), optional_key_columns=("DIRECTION",),
        required_columns=("SETTLEMENTDATE", "DUID", "BIDTYPE", "PERIODID", "INTERVAL_DATETIME", "MAXAVAIL",
                          *_BAND_AVAILS),
        datetime_columns=("SETTLEMENTDATE", "INTERVAL_DATETIME", "BIDSETTLEMENTDATE", "OFFERDATE", "LASTCHANGED"),
        partitioning=Partitioning.DAY_MONTH, time_column="SETTLEMENTDATE",
        text_columns=("DUID", "BIDTYPE", "DIRECTION"), integer_columns=("PERIODID",),
        float_columns=("MAXAVAIL", *_BAND_AVAILS, "ROCUP", "ROCDOWN", "ENABLEMENTMIN", "ENABLEMENTMAX",
                       "LOWBREAKPOINT", "HIGHBREAKPOINT", "PASAAVAILABILITY", "FIXEDLOAD", "ENERGYLIMIT"),
        unit_column="DUID", archive_names=("BIDPEROFFER_D",)),
    TableSchema(
        name="MARKET_PRICE_THRESHOLDS",
        description="Market price cap (VOLL), floor and administered price threshold ($/MWh) by effective date.",
        sources=(("MARKET_CONFIG", "MARKET_PRICE_THRESHOLDS"),),
        key_columns=("EFFECTIVEDATE", "VERSIONNO"),
        required_columns=("EFFECTIVEDATE", "VERSIONNO", "VOLL", "MARKETPRICEFLOOR", "ADMINISTERED_PRICE_THRESHOLD"),
        datetime_columns=("EFFECTIVEDATE", "AUTHORISEDDATE", "LASTCHANGED"),
        partitioning=Partitioning.SINGLE, time_column="EFFECTIVEDATE",
        text_columns=("AUTHORISEDBY",), integer_columns=("VERSIONNO",),
        float_columns=("VOLL", "MARKETPRICEFLOOR", "ADMINISTERED_PRICE_THRESHOLD"),
        archive_names=("MARKET_PRICE_THRESHOLDS",)),
    TableSchema(
        name="DISPATCH_UNIT_SCADA",
        description="Unit SCADA output (MW) at the end of each dispatch interval.",
        sources=(("DISPATCH", "UNIT_SCADA"),),
        key_columns=("SETTLEMENTDATE", "DUID"),
        required_columns=("SETTLEMENTDATE", "DUID", "SCADAVALUE"),
        datetime_columns=("SETTLEMENTDATE", "LASTCHANGED"),
        partitioning=Partitioning.INTERVAL_MONTH, time_column="SETTLEMENTDATE",
        text_columns=("DUID",), float_columns=("SCADAVALUE",), unit_column="DUID", gap_minutes=5,
        archive_names=("DISPATCH_UNIT_SCADA",)),
    TableSchema(
        name="ROOFTOP_PV_ACTUAL",
        description="Rooftop PV output estimates (MW) per region and half hour, MEASUREMENT and SATELLITE.",
        sources=(("ROOFTOP", "ACTUAL"),),
        key_columns=("INTERVAL_DATETIME", "REGIONID", "TYPE"),
        required_columns=("INTERVAL_DATETIME", "REGIONID", "POWER", "TYPE"),
        datetime_columns=("INTERVAL_DATETIME", "LASTCHANGED"),
        partitioning=Partitioning.INTERVAL_MONTH, time_column="INTERVAL_DATETIME",
        text_columns=("REGIONID", "TYPE"), float_columns=("POWER", "QI"), region_column="REGIONID",
        gap_minutes=30, archive_names=("ROOFTOP_PV_ACTUAL",)),
    TableSchema(
        name="DUDETAILSUMMARY",
        description="Unit registration over time: region, dispatch type, loss factors, price limits ($/MWh).",
        sources=(("PARTICIPANT_REGISTRATION", "DUDETAILSUMMARY"),),
        key_columns=("DUID", "START_DATE"),
        required_columns=("DUID", "START_DATE", "END_DATE", "REGIONID"),
        datetime_columns=("START_DATE", "END_DATE", "LASTCHANGED"),
        partitioning=Partitioning.SINGLE, time_column="START_DATE",
        text_columns=("DUID", "DISPATCHTYPE", "CONNECTIONPOINTID", "REGIONID", "STATIONID", "PARTICIPANTID",
                      "STARTTYPE", "SCHEDULE_TYPE"),
        float_columns=("TRANSMISSIONLOSSFACTOR", "DISTRIBUTIONLOSSFACTOR", "MINIMUM_ENERGY_PRICE",
                       "MAXIMUM_ENERGY_PRICE"),
        region_column="REGIONID", archive_names=("DUDETAILSUMMARY",)),
    TableSchema(
        name="INTERMITTENT_GEN_SCADA",
        description="Semi-scheduled unit SCADA (MW) per interval and SCADA type (ELAV, LOCL).",
        sources=(("DEMAND", "INTERMITTENT_GEN_SCADA"),),
        key_columns=("RUN_DATETIME", "DUID", "SCADA_TYPE"),
        required_columns=("RUN_DATETIME", "DUID", "SCADA_TYPE", "SCADA_VALUE"),
        datetime_columns=("RUN_DATETIME", "LASTCHANGED"),
        partitioning=Partitioning.INTERVAL_MONTH, time_column="RUN_DATETIME",
        text_columns=("DUID", "SCADA_TYPE", "SCADA_QUALITY"), float_columns=("SCADA_VALUE",),
        unit_column="DUID", gap_minutes=5, archive_names=("INTERMITTENT_GEN_SCADA",)),
)
TABLE_NAMES: tuple[str, ...] = tuple(schema.name for schema in SCHEMAS)
_BY_NAME = {schema.name: schema for schema in SCHEMAS}


def schema_named(name: str) -> TableSchema:
    """The schema of store table ``name`` (case-insensitive); :class:`UnknownTableError` listing the known ones."""
    try:
        return _BY_NAME[name.strip().upper()]
    except KeyError:
        raise UnknownTableError(f"unknown table {name!r}; known tables: {', '.join(TABLE_NAMES)}") from None


def schemas_for(report_type: str, sub_type: str) -> tuple[TableSchema, ...]:
    """The schemas an ``I`` row (report type, sub-type) feeds (none, one, or several for DREGION)."""
    return tuple(schema for schema in SCHEMAS if schema.carries(report_type, sub_type))


def schema_for_archive(table_name: str) -> TableSchema | None:
    """The schema of a monthly archive's table name (e.g. ``DISPATCHPRICE``), None if the store has none."""
    for schema in SCHEMAS:
        if table_name in schema.archive_names:
            return schema
    return None


def fcas_price_columns(columns: Iterable[str]) -> tuple[str, ...]:
    """The FCAS price columns (``RAISE6SECRRP`` …) among ``columns``, in their order."""
    return tuple(column for column in columns if FCAS_PRICE_COLUMN.match(column))


def price_products(columns: Iterable[str]) -> tuple[str, ...]:
    """The products priced by a price table's columns: ENERGY (RRP) then each FCAS service, in column order."""
    columns = tuple(columns)
    products = [ENERGY] if ENERGY_PRICE_COLUMN in columns else []
    for column in columns:
        match = FCAS_PRICE_COLUMN.match(column)
        if match:
            products.append(match["product"])
    return tuple(products)


def _as_datetime(values: pd.Series, label: str, column: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.astype(DATETIME_DTYPE)
    if values.isna().all():
        return pd.Series(pd.NaT, index=values.index, dtype=DATETIME_DTYPE)
    parsed = pd.to_datetime(values.astype("str"), format=MMS_DATETIME_FORMAT, errors="coerce")
    bad = parsed.isna() & values.notna()
    if bad.any():
        raise MmsFormatError(f"{label}: column {column} holds {values[bad].iloc[0]!r}, not a YYYY/MM/DD HH:MM:SS time")
    return parsed.astype(DATETIME_DTYPE)


def _as_number(values: pd.Series, label: str, column: str, dtype: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        numbers = values
    else:
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() & values.notna()
        if bad.any():
            raise MmsFormatError(f"{label}: column {column} holds {values[bad].iloc[0]!r}, not a number")
    if dtype == "int64":
        if numbers.isna().any():
            raise MmsFormatError(f"{label}: column {column} has blank values where a whole number is needed")
        return numbers.astype("int64")
    return numbers.astype("float64")


def _as_text(values: pd.Series) -> pd.Series:
    if pd.api.types.is_string_dtype(values.dtype):
        return values
    return values.astype("str").where(values.notna())


def normalise(table: MmsTable, schema: TableSchema) -> pd.DataFrame:
    """A parsed table as clean rows of ``schema``: typed columns, the intervention rule applied, one row per key.

    Datetime columns become ``datetime64[s]`` (market time, AEST), text columns strings, the schema's
    number columns float64 (MW, MWh, $/MWh, $/MW/h) or int64 (counters, flags); other columns stay as
    parsed. Rows are sorted by the key; where a file repeats a key its last row wins. Raises
    :class:`MissingColumnError` for an absent required column, :class:`MmsFormatError` for a value of
    the wrong kind in a typed column.
    """
    label = f"{table.source}: table {table.name} version {table.version}"
    columns = table.frame.columns
    missing = tuple(column for column in schema.required_columns if column not in columns)
    if missing:
        raise MissingColumnError(table.source, table.name, table.version, missing)
    columns = pd.Index(schema.selected_columns(table.report_type, table.sub_type, columns))
    pattern = re.compile(schema.float_pattern) if schema.float_pattern else None
    converted: dict[str, pd.Series] = {}
    for column in columns:
        values = table.frame[column]
        if column in schema.datetime_columns:
            converted[column] = _as_datetime(values, label, column)
        elif column in schema.integer_columns:
            converted[column] = _as_number(values, label, column, "int64")
        elif column in schema.float_columns or (pattern is not None and pattern.match(column)):
            converted[column] = _as_number(values, label, column, "float64")
        elif column in schema.text_columns:
            converted[column] = _as_text(values)
    frame = pd.DataFrame({column: converted.get(column, table.frame[column]) for column in columns},
                         index=table.frame.index)
    if schema.intervention is InterventionRule.PRICING_RUN and "INTERVENTION" in frame.columns:
        frame = frame[frame["INTERVENTION"] == 0]
    keys = list(schema.keys_in(frame.columns))
    null_keys = frame[keys].isna().any(axis=1)
    if null_keys.any():
        raise MmsFormatError(f"{label}: {int(null_keys.sum())} rows with a blank key column ({', '.join(keys)})")
    frame = frame.drop_duplicates(keys, keep="last").sort_values(keys, kind="stable")
    return frame.reset_index(drop=True)


def partition_labels(frame: pd.DataFrame, schema: TableSchema) -> pd.Series:
    """Each row's monthly partition, ``YYYY-MM`` (or ``all`` for a single-partition table)."""
    if schema.partitioning is Partitioning.SINGLE or schema.time_column is None:
        return pd.Series(ALL_MONTHS, index=frame.index, dtype="str")
    times = frame[schema.time_column]
    if schema.partitioning is Partitioning.INTERVAL_MONTH:
        times = times - pd.Timedelta(seconds=1)
    year_month = times.dt.year.to_numpy() * 100 + times.dt.month.to_numpy()
    labels = {int(code): f"{int(code) // 100:04d}-{int(code) % 100:02d}" for code in np.unique(year_month)}
    return pd.Series(year_month, index=frame.index).map(labels).astype("str")


def month_label(month: date) -> str:
    """``YYYY-MM`` of a month (any day of it)."""
    return f"{month.year:04d}-{month.month:02d}"


def parse_month(text: str) -> date:
    """The first day of month ``YYYY-MM``; ``ValueError`` with the reason if malformed."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
    if match is None or not 1 <= int(match[2]) <= 12:
        raise ValueError(f"malformed month {text!r}: expected YYYY-MM, e.g. 2024-08")
    return date(int(match[1]), int(match[2]), 1)


def next_month(month: date) -> date:
    """The first day of the month after ``month``."""
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def month_range(first: date, last: date) -> tuple[date, ...]:
    """Every month from ``first`` to ``last`` inclusive (first days)."""
    months: list[date] = []
    month = date(first.year, first.month, 1)
    while month <= last:
        months.append(month)
        month = next_month(month)
    return tuple(months)
