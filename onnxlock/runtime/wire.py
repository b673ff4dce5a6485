"""Find initializer data in a serialized ONNX model without parsing it (protobuf wire format).

``scan`` walks the ModelProto's bytes (a memory-mapped file, say) and returns where each graph
initializer's raw bytes lie, so that large tensors can be used in place and the rest of the model
rebuilt small: ``skeleton`` writes the model with chosen initializers swapped for other entries.
Anything the scanner does not expect makes it return None; the caller then parses the model.
"""

from __future__ import annotations

import numpy as np

from ..proto import TensorProto, numpy_dtype

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_DIMS, _DATA_TYPE, _NAME, _RAW_DATA, _EXTERNAL_DATA, _DATA_LOCATION = 1, 2, 8, 9, 13, 14
_PLAIN_TENSOR_FIELDS = {_DIMS, _DATA_TYPE, _NAME, _RAW_DATA, 12}  # 12: doc_string


class WireError(ValueError):
    """The bytes are not the plain layout the scanner handles (the caller falls back)."""


class Span:
    """One graph initializer: its entry in the graph's bytes and where its raw data lies.
    (Plain classes here and across the loader, not dataclasses: making one costs 1-2 ms in a
    fresh process, and a load would make a dozen.)"""

    __slots__ = ("name", "dims", "data_type", "entry", "body", "data", "location")

    def __init__(self, name: str, dims: tuple[int, ...], data_type: int, entry: tuple[int, int], body: int,
                 data: tuple[int, int] | None, location: str | None = None):
        self.name, self.dims, self.data_type = name, dims, data_type
        self.entry = entry  # start, end of the whole initializer field (tag included) in the file
        self.body = body  # where the TensorProto's own bytes start (they end with the entry)
        self.data = data  # start, end of raw_data (in the file, or in ``location``); None otherwise
        self.location = location  # the external data file holding ``data`` (None: the model's own bytes)

    @property
    def dtype(self) -> np.dtype:
        return numpy_dtype(self.data_type)

    @property
    def nbytes(self) -> int:
        return 0 if self.data is None else self.data[1] - self.data[0]

    def message(self, buffer) -> bytes:
        """The serialized TensorProto."""
        return bytes(buffer[self.body:self.entry[1]])

    def array(self, buffer) -> np.ndarray:
        """A read-only view of the tensor's values in ``buffer`` (the model's bytes, or those of its
        ``location`` for external data; no copy)."""
        start, end = self.data
        if end > len(buffer):
            raise WireError(f"the data of {self.name} lies past the end of its file (truncated?)")
        count = (end - start) // self.dtype.itemsize
        return np.frombuffer(buffer, dtype=self.dtype, count=count, offset=start).reshape(self.dims)


class Layout:
    """Where the graph field and its initializers lie in a serialized model."""

    __slots__ = ("graph", "graph_body", "initializers")

    def __init__(self, graph: tuple[int, int], graph_body: int, initializers: list[Span]):
        self.graph = graph  # start, end of the graph field (tag included)
        self.graph_body = graph_body  # where the graph message's own bytes start
        self.initializers = initializers


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, field start, value start, value end) for each field in buf[start:end]."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos)
        number, kind = key >> 3, key & 7
        if kind == _VARINT:
            value_start = pos
            _, pos = _varint(buf, pos)
        elif kind == _LEN:
            length, value_start = _varint(buf, pos)
            pos = value_start + length
        elif kind in (_I64, _I32):
            value_start = pos
            pos += 8 if kind == _I64 else 4
        else:
            raise WireError(f"unsupported wire type {kind}")
        if pos > end:
            raise WireError("field runs past its message")
        yield number, kind, field_start, value_start, pos


def _string_entry(buf, start: int, end: int) -> tuple[str, str]:
    """A StringStringEntryProto: (key, value)."""
    found = {number: bytes(buf[value:stop]).decode("utf-8")
             for number, kind, _, value, stop in _fields(buf, start, end) if kind == _LEN}
    return found.get(1, ""), found.get(2, "")


def _external(entries: list[tuple[str, str]]) -> tuple[str, tuple[int, int]]:
    """(location, (start, end)) of external data holding only location, offset and length."""
    found = dict(entries)
    if len(found) != len(entries) or not set(found) <= {"location", "offset", "length"} \
            or "location" not in found or "length" not in found:
        raise WireError("external data with other entries than location, offset and length")
    try:
        offset, length = int(found.get("offset", "0")), int(found["length"])
    except ValueError:
        raise WireError("external data offset or length is not a number") from None
    if offset < 0 or length < 0:
        raise WireError("negative external data offset or length")
    return found["location"], (offset, offset + length)


def _tensor(buf, entry: tuple[int, int], start: int, end: int) -> Span:
    name, dims, data_type, data, plain = None, [], 0, None, True
    stored, entries = 0, []
    for number, kind, _, value, stop in _fields(buf, start, end):
        if number == _NAME:
            if name is not None:
                raise WireError("tensor with two names")
            name = bytes(buf[value:stop]).decode("utf-8")
        elif number == _DATA_TYPE:
            data_type = _varint(buf, value)[0]
        elif number == _DIMS and kind == _LEN:
            pos = value
            while pos < stop:
                dim, pos = _varint(buf, pos)
                dims.append(dim)
        elif number == _DIMS:
            dims.append(_varint(buf, value)[0])
        elif number == _RAW_DATA:
            if data is not None:
                raise WireError("tensor with two raw_data fields")
            data = (value, stop)
        elif number == _DATA_LOCATION and kind == _VARINT:
            stored = _varint(buf, value)[0]
        elif number == _EXTERNAL_DATA and kind == _LEN:
            entries.append(_string_entry(buf, value, stop))
        elif number not in _PLAIN_TENSOR_FIELDS:
            plain = False  # typed fields, segments: left for the slow path
    if name is None:
        raise WireError("initializer without a name")
    if stored == TensorProto.EXTERNAL and plain and data is None:
        location, where = _external(entries)
        return Span(name, tuple(dims), data_type, entry, start, where, location)
    if stored != TensorProto.DEFAULT or entries:
        plain = False
    return Span(name, tuple(dims), data_type, entry, start, data if plain else None)


def scan(buf) -> Layout:
    """The layout of the serialized ModelProto in ``buf`` (bytes, mmap or memoryview)."""
    graphs = [(start, value, stop) for number, kind, start, value, stop in _fields(buf, 0, len(buf))
              if number == _MODEL_GRAPH and kind == _LEN]
    if len(graphs) != 1:
        raise WireError("expected exactly one graph field")
    graph_start, body, graph_end = graphs[0]
    spans = [_tensor(buf, (start, stop), value, stop)
             for number, kind, start, value, stop in _fields(buf, body, graph_end)
             if number == _GRAPH_INITIALIZER and kind == _LEN]
    for span in spans:
        if span.data is not None and span.nbytes != span.dtype.itemsize * int(np.prod(span.dims, dtype=np.int64)):
            raise WireError(f"raw_data of {span.name} does not match its shape")
    return Layout((graph_start, graph_end), body, spans)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(payload)) + payload


def external_placeholder(name: str, dims, data_type: int, location: str, offset: int, length: int) -> bytes:
    """A serialized TensorProto whose data is external: ``length`` bytes at ``offset`` of ``location``."""
    tensor = TensorProto(name=name, data_type=data_type, dims=list(dims), data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor.SerializeToString()


def skeleton(buf, layout: Layout, replace: dict[str, bytes]) -> bytes:
    """The model in ``buf`` with the initializers named in ``replace`` swapped for the given
    serialized TensorProtos (e.g. ``external_placeholder``); everything else copied as is."""
    graph = bytearray()
    pos = layout.graph_body
    for span in layout.initializers:
        if span.name in replace:
            graph += buf[pos:span.entry[0]]
            graph += _length_delimited(_GRAPH_INITIALIZER, replace[span.name])
            pos = span.entry[1]
    graph += buf[pos:layout.graph[1]]
    start, end = layout.graph
    return bytes(buf[:start]) + _length_delimited(_MODEL_GRAPH, bytes(graph)) + bytes(buf[end:])
