"""TFRecord shards of ``tf.train.Example`` records, read without TensorFlow.

The PGDL tasks store each sample as an Example with two bytes features, ``inputs`` and
``output``, each a serialized TensorProto (``tf.io.serialize_tensor``). This module
implements exactly the subset of the formats that needs:

* record framing: ``uint64 length | uint32 masked crc32c(length) | payload |
  uint32 masked crc32c(payload)``, little-endian, both checksums verified;
* the protobuf wire format (varints, length-delimited fields, fixed32/64), enough for
  ``Example -> Features -> map<string, Feature> -> BytesList`` and ``TensorProto``.

Every malformed input raises :class:`TFRecordError` naming the file and the byte offset;
no other exception escapes, whatever the bytes (the fuzz test in tests/test_pgdl.py
checks this).
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pgen.errors import PgenError

__all__ = ["TFRecordError", "crc32c", "masked_crc32c", "iter_records", "index_records",
           "parse_example", "parse_tensor", "serialize_tensor", "serialize_example", "frame_record",
           "write_pgdl_shard"]


class TFRecordError(PgenError, ValueError):
    """A TFRecord file, record, Example or TensorProto is malformed; the message says where."""


# --- CRC32C (Castagnoli) -------------------------------------------------------------

def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def _crc32c_python(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # the C implementation is ~1000x faster; the pure-Python one is the fallback
    import google_crc32c as _gcrc

    def crc32c(data: bytes) -> int:
        """CRC-32C (Castagnoli) of ``data``."""
        return _gcrc.value(bytes(data))
except ImportError:  # pragma: no cover - exercised where google-crc32c is absent
    crc32c = _crc32c_python


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits and add a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- record framing --------------------------------------------------------------------

def index_records(path: str | Path, *, check_payload: bool = True) -> list[tuple[int, int]]:
    """``(payload offset, payload length)`` of every record in a TFRecord file.

    Both CRCs are verified (the payload's only with ``check_payload``). A truncated file,
    a length beyond the end of the file or a CRC mismatch raises :class:`TFRecordError`.
    """
    path = Path(path)
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        if size == 0:
            return []
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _index(buf, size, path, check_payload)


def _index(buf, size: int, path: Path, check_payload: bool) -> list[tuple[int, int]]:
    out = []
    pos = 0
    while pos < size:
        if size - pos < 12:
            raise TFRecordError(f"{path}: truncated record header at byte {pos}")
        header = buf[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", buf[pos + 8:pos + 12])
        if masked_crc32c(header) != length_crc:
            raise TFRecordError(f"{path}: bad length CRC in record {len(out)} at byte {pos} (corrupted file?)")
        start = pos + 12
        if length > size - start - 4:
            raise TFRecordError(f"{path}: record {len(out)} at byte {pos} claims {length} bytes "
                                f"but the file ends at {size} (truncated file?)")
        end = start + length
        if check_payload:
            (data_crc,) = struct.unpack("<I", buf[end:end + 4])
            if masked_crc32c(buf[start:end]) != data_crc:
                raise TFRecordError(f"{path}: bad data CRC in record {len(out)} at byte {pos} (corrupted file?)")
        out.append((start, length))
        pos = end + 4
    return out


def iter_records(path: str | Path) -> Iterator[bytes]:
    """Every record's payload, CRC-checked, in file order."""
    path = Path(path)
    data = path.read_bytes()
    for start, length in _index(data, len(data), path, True):
        yield data[start:start + length]


# --- protobuf wire format ----------------------------------------------------------------

def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise TFRecordError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if result >> 64:  # protobuf varints are 64-bit; 2**64 as a dimension was once read as 0
                raise TFRecordError(f"varint {result} does not fit in 64 bits")
            return result, pos
        shift += 7
        if shift >= 70:
            raise TFRecordError("varint longer than 10 bytes")


def _fields(buf: bytes, pos: int = 0, end: int | None = None) -> Iterator[tuple[int, int, object]]:
    """``(field number, wire type, value)``; length-delimited values are ``(start, end)``."""
    end = len(buf) if end is None else end
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise TFRecordError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 1:
            if pos + 8 > end:
                raise TFRecordError("truncated fixed64")
            value, pos = bytes(buf[pos:pos + 8]), pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if n > end - pos:
                raise TFRecordError("length-delimited field runs past its message")
            value, pos = (pos, pos + n), pos + n
        elif wire == 5:
            if pos + 4 > end:
                raise TFRecordError("truncated fixed32")
            value, pos = bytes(buf[pos:pos + 4]), pos + 4
        else:
            raise TFRecordError(f"unsupported wire type {wire}")
        yield field, wire, value


def parse_example(payload: bytes) -> dict[str, list[bytes]]:
    """A ``tf.train.Example``'s bytes features: ``{name: [bytes, ...]}``.

    Float and int64 features are returned as numpy arrays under the same name.
    """
    features: dict[str, object] = {}
    for f, w, v in _fields(payload):
        if f != 1 or w != 2:
            continue
        for f2, w2, entry in _fields(payload, *v):  # Features.feature: map entries
            if f2 != 1 or w2 != 2:
                continue
            key, value = None, None
            for f3, w3, v3 in _fields(payload, *entry):
                if f3 == 1 and w3 == 2:
                    try:
                        key = bytes(payload[v3[0]:v3[1]]).decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise TFRecordError(f"feature name is not UTF-8: {exc}") from exc
                elif f3 == 2 and w3 == 2:
                    value = _parse_feature(payload, *v3)
            if key is not None and value is not None:
                features[key] = value
    return features


def _parse_feature(buf: bytes, start: int, end: int):
    for f, w, v in _fields(buf, start, end):
        if w != 2:
            continue
        if f == 1:  # BytesList
            return [bytes(buf[v2[0]:v2[1]]) for f2, w2, v2 in _fields(buf, *v) if f2 == 1 and w2 == 2]
        if f == 2:  # FloatList
            return _list_values(buf, v, "<f4")
        if f == 3:  # Int64List
            return _list_values(buf, v, "varint")
    return None


def _raw(buf, span, dtype) -> np.ndarray:
    """A packed repeated fixed-width field's values."""
    raw = bytes(buf[span[0]:span[1]])
    if len(raw) % np.dtype(dtype).itemsize:
        raise TFRecordError("packed field length is not a multiple of its item size")
    return np.frombuffer(raw, dtype=dtype)


def _list_values(buf, span, dtype) -> np.ndarray:
    """FloatList / Int64List: field 1, packed or not."""
    out = []
    for f, w, v in _fields(buf, *span):
        if f != 1:
            continue
        if w == 2:
            out.append(_raw(buf, v, dtype) if dtype != "varint" else np.array(_packed_varints(buf, *v), np.uint64))
        elif w == 5 and dtype == "<f4":
            out.append(np.frombuffer(v, "<f4"))
        elif w == 0 and dtype == "varint":
            out.append(np.array([v], np.uint64))
    if not out:
        return np.zeros(0, np.float32 if dtype == "<f4" else np.int64)
    vals = np.concatenate(out)
    return vals.view(np.int64) if dtype == "varint" else vals


def _packed_varints(buf, start, end) -> list[int]:
    vals, pos = [], start
    while pos < end:
        v, pos = _varint(buf, pos, end)
        vals.append(v)
    return vals


# TensorFlow DataType enum -> numpy dtype (the types a PGDL shard can hold)
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 9: np.int64}
# Ceilings checked before anything is allocated. A PGDL sample holds about 3e3 values; a
# constant tensor may be stored as one value ("splat"), so its declared size, not the
# record's, is what gets allocated: hence a per-tensor ceiling and a per-dataset one.
_MAX_ELEMENTS = 1 << 24  # values of one tensor (64 MB of float32)
_MAX_DIMS = 8
MAX_DATASET_ELEMENTS = 1 << 28  # values of a whole shard folder (1 GB of float32; CIFAR-10's train set is 1.5e8)


def parse_tensor(data: bytes) -> np.ndarray:
    """A serialized ``TensorProto`` (``tf.io.serialize_tensor``) as a numpy array."""
    dtype_code, shape, content = None, [], None
    float_vals, double_vals, int_vals, int64_vals = [], [], [], []
    for f, w, v in _fields(data):
        if f == 1 and w == 0:
            dtype_code = v
        elif f == 2 and w == 2:  # TensorShapeProto
            for f2, w2, v2 in _fields(data, *v):
                if f2 == 2 and w2 == 2:  # Dim
                    size = 0
                    for f3, w3, v3 in _fields(data, *v2):
                        if f3 == 1 and w3 == 0:
                            size = v3 - (1 << 64) if v3 >= 1 << 63 else v3
                    shape.append(size)
        elif f == 4 and w == 2:
            content = bytes(data[v[0]:v[1]])
        elif f == 5 and w in (2, 5):
            float_vals.append(_raw(data, v, "<f4") if w == 2 else np.frombuffer(v, "<f4"))
        elif f == 6 and w in (2, 1):
            double_vals.append(_raw(data, v, "<f8") if w == 2 else np.frombuffer(v, "<f8"))
        elif f == 7 and w in (2, 0):
            int_vals.extend(_packed_varints(data, *v) if w == 2 else [v])
        elif f == 10 and w in (2, 0):
            int64_vals.extend(_packed_varints(data, *v) if w == 2 else [v])
    if dtype_code not in _DTYPES:
        raise TFRecordError(f"unsupported tensor dtype code {dtype_code} (supported: {sorted(_DTYPES)})")
    dtype = np.dtype(_DTYPES[dtype_code]).newbyteorder("<")
    if len(shape) > _MAX_DIMS:
        raise TFRecordError(f"tensor has {len(shape)} dimensions, more than {_MAX_DIMS}")
    if any(s < 0 for s in shape):
        raise TFRecordError(f"tensor has an unknown dimension: {shape}")
    if any(s > _MAX_ELEMENTS for s in shape):
        raise TFRecordError(f"tensor shape {shape} has a dimension over {_MAX_ELEMENTS}")
    count = math.prod(shape)
    if count > _MAX_ELEMENTS:
        raise TFRecordError(f"tensor shape {shape} has more than {_MAX_ELEMENTS} elements")
    if content is not None:
        if len(content) != count * dtype.itemsize:
            raise TFRecordError(f"tensor_content has {len(content)} bytes; shape {shape} of {dtype} needs "
                                f"{count * dtype.itemsize}")
        return np.frombuffer(content, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    if dtype_code == 1:
        vals = np.concatenate(float_vals) if float_vals else np.zeros(0, np.float32)
    elif dtype_code == 2:
        vals = np.concatenate(double_vals) if double_vals else np.zeros(0, np.float64)
    else:
        raw = int_vals if dtype_code in (3, 4) else int64_vals
        # int32 values travel as sign-extended 64-bit varints
        vals = np.array([x - (1 << 64) if x >= 1 << 63 else x for x in raw], dtype=np.int64)
    if len(vals) == 1 and count > 1:  # TensorFlow's splat encoding for a constant tensor
        vals = np.repeat(vals, count)
    if len(vals) != count:
        raise TFRecordError(f"tensor holds {len(vals)} values; shape {shape} needs {count}")
    return vals.astype(_DTYPES[dtype_code]).reshape(shape)


# --- writing (PGDL-style shards: for tests, benchmarks and users who build tasks) --------

def _encode_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _encode_varint(field << 3 | 2) + _encode_varint(len(payload)) + payload


_CODES = {np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3, np.dtype(np.uint8): 4,
          np.dtype(np.int64): 9}


def serialize_tensor(array) -> bytes:
    """A TensorProto with ``tensor_content``, as ``tf.io.serialize_tensor`` writes it."""
    a = np.asarray(array)  # (np.ascontiguousarray would turn a scalar into shape (1,))
    if a.dtype not in _CODES:
        raise TFRecordError(f"cannot serialize dtype {a.dtype} (supported: {sorted(str(d) for d in _CODES)})")
    dims = b"".join(_length_delimited(2, b"\x08" + _encode_varint(s)) for s in a.shape)
    return (b"\x08" + _encode_varint(_CODES[a.dtype]) + _length_delimited(2, dims)
            + _length_delimited(4, a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes(order="C")))


def serialize_example(features: dict[str, bytes]) -> bytes:
    """A ``tf.train.Example`` whose features each hold one bytes value."""
    entries = b"".join(
        _length_delimited(1, _length_delimited(1, k.encode()) + _length_delimited(2, _length_delimited(1, _length_delimited(1, v))))
        for k, v in features.items())
    return _length_delimited(1, entries)


def frame_record(payload: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the payload, its masked CRC."""
    header = struct.pack("<Q", len(payload))
    return header + struct.pack("<I", masked_crc32c(header)) + payload + struct.pack("<I", masked_crc32c(payload))


def write_pgdl_shard(path: str | Path, inputs, labels) -> None:
    """A PGDL shard: one record per sample, ``inputs`` (HWC float32) and ``output`` (int32)."""
    with Path(path).open("wb") as fh:
        for x, y in zip(inputs, labels):
            # TensorFlow writes "output" first; keeping its order makes shards byte-identical.
            example = serialize_example({"output": serialize_tensor(np.asarray(y, dtype=np.int32)),
                                         "inputs": serialize_tensor(np.asarray(x, dtype=np.float32))})
            fh.write(frame_record(example))
