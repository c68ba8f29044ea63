"""A bid's period offers as columns: one array per field and offer, read from the protobuf once or made by
the bid builder from the arrays it bids, so that the rebid check, validation and the backtest's bid book
never read a ``PeriodOffer`` field by field.

A :class:`ColumnarBid` is a ``bid_pb2.Bid`` together with the :class:`PeriodColumns` of each of its offers
(in offer order). :meth:`ColumnarBid.of` reads them from any bid (the general path, e.g. a bid from AEMO's
tables or an archive); :func:`algorithms.market.bid_builder.build_bid_columns` makes them from the same arrays
it writes into the protobuf, so they are equal to what :meth:`ColumnarBid.of` would read (a test checks it).
Every consumer takes either form and reads the columns; the protobuf stays the bid that is archived and
submitted.

Units: MW, MW/min, MWh; interval times as the protobuf's UTC epoch seconds (+ nanoseconds) of the
interval-ending time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from algorithms.market.packed_wire import varint
from vpp.v1 import bid_pb2

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class PeriodColumns:
    """The period offers of one ProductOffer as arrays (one entry per period, in bid order; MW, MW/min,
    MWh). ``band_avail_mw`` is [periods x band_count] when every period has ``band_count`` bands, else None
    (ragged; ``band_counts`` says how many each has)."""

    has_time: BoolArray
    seconds: IntArray  # UTC seconds of the interval-ending time (0 when missing)
    nanos: IntArray
    max_avail_mw: FloatArray
    pasa_avail_mw: FloatArray
    fixed_load_mw: FloatArray
    band_counts: IntArray
    band_avail_mw: FloatArray | None  # [periods x band_count] when every period has band_count bands
    band_avail_invalid: BoolArray  # a band availability of the period is negative or not finite
    ramp_up_mw_per_min: FloatArray
    ramp_down_mw_per_min: FloatArray
    energy_limit_mwh: FloatArray
    enablement_min_mw: FloatArray
    low_breakpoint_mw: FloatArray
    high_breakpoint_mw: FloatArray
    enablement_max_mw: FloatArray

    @property
    def periods(self) -> int:
        """Number of period offers."""
        return int(self.seconds.size)

    def same_as(self, other: PeriodColumns) -> bool:
        """True when every column holds the same values (NaN equal to NaN; -0.0 equal to 0.0)."""
        names = [name for name in self.__dataclass_fields__ if name != "band_avail_mw"]
        if (self.band_avail_mw is None) != (other.band_avail_mw is None):
            return False
        pairs = [(getattr(self, name), getattr(other, name)) for name in names]
        if self.band_avail_mw is not None and other.band_avail_mw is not None:
            pairs.append((self.band_avail_mw, other.band_avail_mw))
        return all(left.shape == right.shape
                   and bool(np.array_equal(left, right, equal_nan=left.dtype.kind == "f")) for left, right in pairs)


def _floats(offer: bid_pb2.ProductOffer, field: str) -> FloatArray:
    return np.fromiter((getattr(p, field) for p in offer.periods), dtype=np.float64, count=len(offer.periods))


def _band_invalid(rows: FloatArray) -> BoolArray:
    """Per row: some band availability is negative or not finite."""
    with np.errstate(all="ignore"):
        invalid: BoolArray = ~np.all(np.isfinite(rows) & (rows >= 0), axis=1)
    return invalid


def period_columns(offer: bid_pb2.ProductOffer, band_count: int) -> PeriodColumns:
    """The columns of ``offer``'s period offers, read from the protobuf (``band_count``: the bands every
    period should have): from the offer's encoding as whole arrays when every period offer is encoded in one
    layout (:func:`wire_period_columns`, the common case: a bid the builder made), else field by field."""
    wire = wire_period_columns(offer, band_count)
    return wire if wire is not None else fieldwise_period_columns(offer, band_count)


def fieldwise_period_columns(offer: bid_pb2.ProductOffer, band_count: int) -> PeriodColumns:
    """:func:`period_columns` read field by field from every period offer (any offer)."""
    periods = offer.periods
    band_counts = np.fromiter((len(p.band_avail_mw) for p in periods), dtype=np.int64, count=len(periods))
    bands: FloatArray | None = None
    with np.errstate(all="ignore"):
        if len(periods) > 0 and bool(np.all(band_counts == band_count)):
            bands = np.array([list(p.band_avail_mw) for p in periods], dtype=np.float64).reshape(
                len(periods), band_count)
            band_invalid = _band_invalid(bands)
        else:  # ragged band counts (reported under V1): judge each period's bands on their own
            band_invalid = np.fromiter(
                (not bool(np.all(np.isfinite(row) & (row >= 0)))
                 for row in (np.asarray(p.band_avail_mw, dtype=np.float64) for p in periods)),
                dtype=np.bool_, count=len(periods))
    return PeriodColumns(
        has_time=np.fromiter((p.HasField("dispatch_interval") for p in periods), dtype=np.bool_,
                             count=len(periods)),
        seconds=np.fromiter((p.dispatch_interval.seconds for p in periods), dtype=np.int64,
                            count=len(periods)),
        nanos=np.fromiter((p.dispatch_interval.nanos for p in periods), dtype=np.int64, count=len(periods)),
        max_avail_mw=_floats(offer, "max_avail_mw"),
        pasa_avail_mw=_floats(offer, "pasa_avail_mw"),
        fixed_load_mw=_floats(offer, "fixed_load_mw"),
        band_counts=band_counts,
        band_avail_mw=bands,
        band_avail_invalid=band_invalid,
        ramp_up_mw_per_min=_floats(offer, "ramp_up_rate_mw_per_min"),
        ramp_down_mw_per_min=_floats(offer, "ramp_down_rate_mw_per_min"),
        energy_limit_mwh=_floats(offer, "energy_limit_mwh"),
        enablement_min_mw=_floats(offer, "enablement_min_mw"),
        low_breakpoint_mw=_floats(offer, "low_breakpoint_mw"),
        high_breakpoint_mw=_floats(offer, "high_breakpoint_mw"),
        enablement_max_mw=_floats(offer, "enablement_max_mw"),
    )



# ---------------------------------------------------------------------------------------------------
# Reading the columns from the encoding


# PeriodOffer's double fields (number -> column; pasa_recall_period, 13, is read past, not a column).
_PERIOD_DOUBLE_COLUMNS = {2: "max_avail_mw", 4: "ramp_up_mw_per_min", 5: "ramp_down_mw_per_min", 6: "pasa_avail_mw",
                          7: "enablement_min_mw", 8: "low_breakpoint_mw", 9: "high_breakpoint_mw",
                          10: "enablement_max_mw", 11: "energy_limit_mwh", 12: "fixed_load_mw"}
_PERIOD_DOUBLE_FIELDS = (*_PERIOD_DOUBLE_COLUMNS, 13)
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
# Longest varint read here as a non-negative value (a negative int64 takes ten bytes: read field by field).
_MAX_VARINT_BYTES = 9
# The one-byte tag of ProductOffer.periods (field 4, length-delimited).
_PERIODS_TAG_BYTE = 4 << 3 | _LENGTH_DELIMITED


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at ``at`` in ``data`` and the position after it (IndexError past the end)."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _periods_spans(encoded: bytes) -> tuple[list[int], list[int]] | None:
    """The starts and ends in ``encoded`` (a serialised ProductOffer) of its ``periods`` entries, in order; None
    when the encoding holds a wire type this reader does not skip."""
    starts: list[int] = []
    ends: list[int] = []
    at = 0
    size = len(encoded)
    while at < size:
        if encoded[at] == _PERIODS_TAG_BYTE and at + 2 < size:
            # A period offer's entry whose length takes one or two bytes (any period offer under 16 KiB), read
            # inline: a bid holds a few thousand of them, and this loop is most of reading a bid's columns.
            length = encoded[at + 1]
            body = at + 2
            if length >= 0x80:
                second = encoded[at + 2]
                if second < 0x80:
                    length = (length & 0x7F) | second << 7
                    body = at + 3
                else:
                    body = 0  # a longer length: read below
            if body:
                starts.append(body)
                at = body + length
                ends.append(at)
                continue
        tag, at = _read_varint(encoded, at)
        wire_type = tag & 7
        if wire_type == _VARINT:
            _, at = _read_varint(encoded, at)
        elif wire_type == _FIXED64:
            at += 8
        elif wire_type == _FIXED32:
            at += 4
        elif wire_type == _LENGTH_DELIMITED:
            length, at = _read_varint(encoded, at)
            if tag >> 3 == 4:
                starts.append(at)
                ends.append(at + length)
            at += length
        else:
            return None
    return (starts, ends) if at == len(encoded) else None


@dataclass
class _PeriodLayout:
    """Where each field of one encoded PeriodOffer lies (byte offsets within it): the bytes that must be equal in
    every period offer of this layout (tags and lengths), the varints' spans (offset, bytes), the doubles'
    offsets by field number, and the packed bands' offset and count."""

    size: int
    fixed: list[int]
    has_time: bool = False
    seconds: tuple[int, int] | None = None
    nanos: tuple[int, int] | None = None
    doubles: dict[int, int] = field(default_factory=dict)
    bands: tuple[int, int] | None = None


def _varint_span(row: bytes, at: int) -> tuple[int, int] | None:
    """(offset, bytes) of the varint at ``at`` in ``row``; None when it is longer than _MAX_VARINT_BYTES."""
    _, after = _read_varint(row, at)
    return (at, after - at) if after - at <= _MAX_VARINT_BYTES else None


def _timestamp_layout(row: bytes, at: int, end: int, layout: _PeriodLayout) -> bool:
    """Lay out the Timestamp encoded in ``row[at:end]``; False unless it is seconds and nanos, each at most once."""
    seen: set[int] = set()
    while at < end:
        tag = row[at]
        number = tag >> 3
        if tag & 7 != _VARINT or number not in (1, 2) or number in seen:
            return False
        seen.add(number)
        layout.fixed.append(at)
        span = _varint_span(row, at + 1)
        if span is None:
            return False
        if number == 1:
            layout.seconds = span
        else:
            layout.nanos = span
        at = span[0] + span[1]
    return at == end


def _period_layout(row: bytes) -> _PeriodLayout | None:
    """The layout of one encoded PeriodOffer; None when it holds anything but PeriodOffer's known fields once
    each (an unknown field, bands not packed, a negative time)."""
    layout = _PeriodLayout(size=len(row), fixed=[])
    seen: set[int] = set()
    at = 0
    while at < len(row):
        tag = row[at]
        number, wire_type = tag >> 3, tag & 7
        if tag >= 0x80 or number in seen:
            return None
        seen.add(number)
        layout.fixed.append(at)
        at += 1
        if number in _PERIOD_DOUBLE_FIELDS and wire_type == _FIXED64:
            layout.doubles[number] = at
            at += 8
        elif number in (1, 3) and wire_type == _LENGTH_DELIMITED:
            length, body = _read_varint(row, at)
            layout.fixed.extend(range(at, body))
            if number == 1:
                layout.has_time = True
                if not _timestamp_layout(row, body, body + length, layout):
                    return None
            elif length % 8:
                return None
            else:
                layout.bands = (body, length // 8)
            at = body + length
        else:
            return None
    return layout if at == len(row) else None


def _varint_column(rows: npt.NDArray[np.uint8], span: tuple[int, int]) -> IntArray | None:
    """The varint at ``span`` of every row; None when one does not end where the span does."""
    at, size = span
    block = rows[:, at:at + size].astype(np.int64)
    if bool(np.any(block[:, :-1] < 0x80)) or bool(np.any(block[:, -1] >= 0x80)):
        return None
    values: IntArray = np.zeros(rows.shape[0], dtype=np.int64)
    for index in range(size):
        values |= (block[:, index] & 0x7F) << (7 * index)
    return values


def _matching(rows: npt.NDArray[np.uint8], layout: _PeriodLayout) -> BoolArray:
    """Which ``rows`` (encoded period offers of the layout's size) are laid out as ``layout``: the same tags and
    lengths, each varint ending where the layout's does (so every byte is read as the layout reads it)."""
    fixed = np.asarray(layout.fixed, dtype=np.int64)
    matches: BoolArray = np.all(rows[:, fixed] == rows[0, fixed], axis=1) if fixed.size else np.ones(
        rows.shape[0], dtype=np.bool_)
    for span in (layout.seconds, layout.nanos):
        if span is not None:
            at, size = span
            block = rows[:, at:at + size]
            matches &= np.all(block[:, :-1] >= 0x80, axis=1) & (block[:, -1] < 0x80)
    return matches


def wire_period_columns(offer: bid_pb2.ProductOffer, band_count: int) -> PeriodColumns | None:
    """:func:`period_columns` read from ``offer``'s encoding with whole-array operations: the period offers are
    grouped by layout (which fields their encodings hold: a field zero in some periods is absent from theirs),
    and each layout's fields are read from all its period offers at once. None when a period offer holds
    anything but PeriodOffer's known fields once each, or the bands are not of one count in every period offer
    (callers then read them field by field). Equal to :func:`fieldwise_period_columns` wherever it answers (a
    test checks it): every byte of a period offer is read as its layout's first period offer's are."""
    encoded = offer.SerializeToString()
    spans = _periods_spans(encoded)
    if spans is None or not spans[0]:
        return None
    data = np.frombuffer(encoded, dtype=np.uint8)
    starts = np.asarray(spans[0], dtype=np.int64)
    sizes = np.asarray(spans[1], dtype=np.int64) - starts
    count = starts.size
    has_time = np.zeros(count, dtype=np.bool_)
    seconds = np.zeros(count, dtype=np.int64)
    nanos = np.zeros(count, dtype=np.int64)
    doubles = {name: np.zeros(count, dtype=np.float64) for name in _PERIOD_DOUBLE_COLUMNS.values()}
    band_width: int | None = None
    bands: FloatArray | None = None
    unread = np.ones(count, dtype=np.bool_)
    while bool(unread.any()):
        first = int(np.argmax(unread))
        layout = _period_layout(encoded[int(starts[first]):int(starts[first] + sizes[first])])
        if layout is None:
            return None
        width = layout.bands[1] if layout.bands is not None else 0
        if band_width is None:
            band_width = width
            bands = np.zeros((count, width), dtype=np.float64)
        elif width != band_width:  # ragged band counts (reported under V1)
            return None
        candidates = np.flatnonzero(unread & (sizes == layout.size))
        rows = data[starts[candidates][:, None] + np.arange(layout.size, dtype=np.int64)[None, :]]
        matched = _matching(rows, layout)
        chosen, rows = candidates[matched], rows[matched]
        unread[chosen] = False
        has_time[chosen] = layout.has_time
        for span, column in ((layout.seconds, seconds), (layout.nanos, nanos)):
            if span is not None:
                values = _varint_column(rows, span)
                if values is None:
                    return None
                column[chosen] = values
        for number, at in layout.doubles.items():
            if number in _PERIOD_DOUBLE_COLUMNS:
                column = np.ascontiguousarray(rows[:, at:at + 8]).view("<f8")[:, 0]
                doubles[_PERIOD_DOUBLE_COLUMNS[number]][chosen] = column
        if layout.bands is not None and bands is not None:
            at = layout.bands[0]
            bands[chosen] = np.ascontiguousarray(rows[:, at:at + 8 * width]).view("<f8")
    assert bands is not None and band_width is not None
    return PeriodColumns(
        has_time=has_time, seconds=seconds, nanos=nanos, band_counts=np.full(count, band_width, dtype=np.int64),
        band_avail_mw=bands if band_width == band_count else None, band_avail_invalid=_band_invalid(bands),
        **doubles)

def columns_from_arrays(*, seconds: IntArray, nanos: int, band_avail_mw: FloatArray, max_avail_mw: FloatArray,
                        band_count: int, ramp_mw_per_min: float = 0.0, pasa_avail_mw: float = 0.0,
                        energy_limit_mwh: float = 0.0, enablement_min_mw: FloatArray | None = None,
                        low_breakpoint_mw: FloatArray | None = None, high_breakpoint_mw: FloatArray | None = None,
                        enablement_max_mw: FloatArray | None = None) -> PeriodColumns:
    """The columns of period offers the builder writes from arrays: one period per row of ``band_avail_mw``
    ([periods x bands], MW), each at ``seconds`` (UTC epoch seconds of the interval end) + ``nanos``, with
    the given MAXAVAIL (MW), the same ramp rates (MW/min), PASA availability (MW) and energy limit (MWh) in
    every period, and the FCAS trapezium where given (MW; 0 otherwise) — equal to what
    :func:`period_columns` reads from the protobuf those arrays are written into."""
    count = int(seconds.size)
    bands = np.asarray(band_avail_mw, dtype=np.float64)
    zeros = np.zeros(count)

    def column(values: FloatArray | None) -> FloatArray:
        return zeros.copy() if values is None else np.asarray(values, dtype=np.float64).copy()

    return PeriodColumns(
        has_time=np.ones(count, dtype=np.bool_), seconds=np.asarray(seconds, dtype=np.int64).copy(),
        nanos=np.full(count, nanos, dtype=np.int64), max_avail_mw=column(max_avail_mw),
        pasa_avail_mw=np.full(count, pasa_avail_mw), fixed_load_mw=zeros.copy(),
        band_counts=np.full(count, bands.shape[1], dtype=np.int64),
        band_avail_mw=bands.copy() if count > 0 and bands.shape[1] == band_count else None,
        band_avail_invalid=_band_invalid(bands), ramp_up_mw_per_min=np.full(count, ramp_mw_per_min),
        ramp_down_mw_per_min=np.full(count, ramp_mw_per_min), energy_limit_mwh=np.full(count, energy_limit_mwh),
        enablement_min_mw=column(enablement_min_mw), low_breakpoint_mw=column(low_breakpoint_mw),
        high_breakpoint_mw=column(high_breakpoint_mw), enablement_max_mw=column(enablement_max_mw))


@dataclass(frozen=True, eq=False)
class ColumnarBid:
    """A bid and the :class:`PeriodColumns` of each of its offers, in offer order."""

    bid: bid_pb2.Bid
    offer_periods: tuple[PeriodColumns, ...]

    def __post_init__(self) -> None:
        if len(self.offer_periods) != len(self.bid.offers):
            raise ValueError(f"{len(self.offer_periods)} offers' columns for a bid of {len(self.bid.offers)} offers")

    @classmethod
    def of(cls, bid: bid_pb2.Bid, band_count: int) -> ColumnarBid:
        """Read the columns of every offer of ``bid`` (``band_count``: the bands every period should have)."""
        return cls(bid, tuple(period_columns(offer, band_count) for offer in bid.offers))

    def with_bid(self, bid: bid_pb2.Bid) -> ColumnarBid:
        """The same columns with ``bid``, a copy of this bid whose offers are unchanged (e.g. a new
        explanation); raises ValueError when its offers are not the same number."""
        return ColumnarBid(bid, self.offer_periods)

    def interval_seconds(self) -> IntArray:
        """The sorted, distinct UTC seconds of every interval some period offer (with a time) covers."""
        parts = [columns.seconds[columns.has_time] for columns in self.offer_periods]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def as_columnar(bid: bid_pb2.Bid | ColumnarBid, band_count: int) -> ColumnarBid:
    """``bid`` with its columns: itself when it has them, else read from the protobuf."""
    return bid if isinstance(bid, ColumnarBid) else ColumnarBid.of(bid, band_count)


def bid_of(bid: bid_pb2.Bid | ColumnarBid) -> bid_pb2.Bid:
    """The protobuf of ``bid``."""
    return bid.bid if isinstance(bid, ColumnarBid) else bid



# Wire format of ProductOffer.periods (field 4) and of PeriodOffer's fields (protobuf encoding: tag byte =
# field number << 3 | wire type; 1 = 64-bit, 2 = length-delimited, 0 = varint).
_PERIODS_TAG = 4 << 3 | 2
_TIMESTAMP_TAG = 1 << 3 | 2
_SECONDS_TAG = 1 << 3 | 0
_BANDS_TAG = 3 << 3 | 2
# PeriodOffer's double fields (number, column) after MAXAVAIL (2) and the bands (3).
_DOUBLE_FIELDS = ((4, "ramp_up_mw_per_min"), (5, "ramp_down_mw_per_min"), (6, "pasa_avail_mw"),
                  (7, "enablement_min_mw"), (8, "low_breakpoint_mw"), (9, "high_breakpoint_mw"),
                  (10, "enablement_max_mw"), (11, "energy_limit_mwh"), (12, "fixed_load_mw"))
# Epoch seconds whose varint takes exactly five bytes (1978 .. 3058): every period's timestamp has one size.
_FIVE_BYTE_SECONDS = (1 << 28, 1 << 35)


def encode_periods(columns: PeriodColumns) -> bytes | None:
    """The protobuf encoding of the ``periods`` of a ProductOffer holding exactly ``columns`` (merge it into
    the offer with ``MergeFromString``), made with whole-array operations; None when the columns cannot be
    written in one fixed layout (a period without a time, nanoseconds, seconds outside 1978..3058, ragged
    bands). Zero fields are written explicitly, which parses to the same message (proto3 scalars)."""
    count = columns.periods
    bands = columns.band_avail_mw
    seconds = columns.seconds
    if (count == 0 or bands is None or not bool(columns.has_time.all()) or bool(columns.nanos.any())
            or int(seconds.min()) < _FIVE_BYTE_SECONDS[0] or int(seconds.max()) >= _FIVE_BYTE_SECONDS[1]):
        return None
    doubles = [(number, getattr(columns, name)) for number, name in _DOUBLE_FIELDS]
    doubles = [(number, values) for number, values in doubles if bool((values != 0).any() or np.signbit(values).any())]
    band_bytes = 8 * bands.shape[1]
    band_header = bytes([_BANDS_TAG]) + varint(band_bytes)
    body = 8 + 9 + len(band_header) + band_bytes + 9 * len(doubles)
    header = bytes([_PERIODS_TAG]) + varint(body)
    rows = np.empty((count, len(header) + body), dtype=np.uint8)
    at = len(header)
    rows[:, :at] = np.frombuffer(header, dtype=np.uint8)
    rows[:, at:at + 3] = (_TIMESTAMP_TAG, 6, _SECONDS_TAG)
    shifted = seconds[:, None] >> np.arange(0, 35, 7, dtype=np.int64)[None, :]
    rows[:, at + 3:at + 8] = (shifted & 0x7F) | np.array([0x80, 0x80, 0x80, 0x80, 0], dtype=np.int64)
    at += 8

    def put(number: int, values: FloatArray) -> None:
        nonlocal at
        rows[:, at] = number << 3 | 1
        rows[:, at + 1:at + 9] = np.ascontiguousarray(values, dtype="<f8").view(np.uint8).reshape(count, 8)
        at += 9

    put(2, columns.max_avail_mw)
    rows[:, at:at + len(band_header)] = np.frombuffer(band_header, dtype=np.uint8)
    at += len(band_header)
    rows[:, at:at + band_bytes] = np.ascontiguousarray(bands, dtype="<f8").view(np.uint8).reshape(count, band_bytes)
    at += band_bytes
    for number, values in doubles:
        put(number, values)
    return rows.tobytes()
