"""GGUF, the single-file model format of llama.cpp: a reader (memory-mapped) and an atomic writer.

A GGUF file is four sections, all little-endian, read front to back with no index:

1. header: magic ``b"GGUF"``, version (uint32, 3), tensor count (uint64), metadata count (uint64);
2. metadata: that many key-value pairs; a key is a string (uint64 length + UTF-8 bytes), then a
   uint32 value type (``GGUFValueType``) and the value. An array stores its element type (uint32) and
   length (uint64), then the elements; elements may be strings or arrays themselves;
3. tensor infos: per tensor its name, n_dims (uint32), the dims (uint64 each, in ggml order:
   ``ne[0]`` first, the contiguous row length), its ggml type (uint32, ``GGMLType``) and the offset
   of its bytes from the start of the data section (uint64, a multiple of the alignment);
4. data: starts at the first multiple of ``general.alignment`` (a uint32 key, default 32) after the
   tensor infos; each tensor's bytes are padded with zeros to the alignment.

The whole model, tokenizer included, lives in the metadata, so a loader needs nothing else. What this
adds over reading a checkpoint with ``torch.load``: typed, self-describing metadata, and quantized
weights that can be mapped straight from disk (``ggml_blocks`` explains their byte layout).

Shapes: ``TensorInfo.shape`` is in numpy/torch order, outermost first, i.e. the file's ggml dims
reversed. A linear weight of torch shape ``(out, in)`` is stored with dims ``[in, out]``.

Reference: the spec, ggml ``docs/gguf.md``; llama.cpp ``ggml/src/gguf.cpp``; gguf-py
``gguf/gguf_reader.py`` and ``gguf_writer.py``, which the tests compare against.
"""

import os
import struct
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from quant.ggml_blocks import GGMLType, dequantize, n_bytes, quantize

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
READ_VERSIONS = (2, 3)  # version 2 has the same layout; 3 only allowed big-endian files
DEFAULT_ALIGNMENT = 32
ALIGNMENT_KEY = "general.alignment"
MAX_DIMS = 4  # GGML_MAX_DIMS


class GGUFValueType(IntEnum):
    """Metadata value types (``enum gguf_type`` in ggml's ``gguf.h``)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


V = GGUFValueType
# struct format of each fixed-size value type
_FORMATS = {
    V.UINT8: "B",
    V.INT8: "b",
    V.UINT16: "H",
    V.INT16: "h",
    V.UINT32: "I",
    V.INT32: "i",
    V.FLOAT32: "f",
    V.BOOL: "?",
    V.UINT64: "Q",
    V.INT64: "q",
    V.FLOAT64: "d",
}
_NUMPY_TYPES = {np.dtype(f"<{fmt}"): vtype for vtype, fmt in _FORMATS.items()}

# A value's type is a tuple: (UINT32,) for a scalar, (ARRAY, STRING) for a list of strings,
# (ARRAY, ARRAY, INT32) for a list of lists of int32.
ValueType = tuple[GGUFValueType, ...]


class GGUFError(ValueError):
    """A file that is not valid GGUF; the message names the byte offset and what was expected there."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order: the ggml dims reversed
    type: GGMLType
    offset: int  # absolute byte offset of the tensor's data in the file
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(repr=False)
class GGUFFile:
    """A parsed GGUF file; tensor bytes stay on disk (memory-mapped) until asked for."""

    path: Path
    version: int
    metadata: dict[str, Any]  # Python scalars, str and (nested) lists, in file order
    types: dict[str, ValueType]  # the value type of every metadata key, so a rewrite keeps it
    tensors: dict[str, TensorInfo]  # in file order
    alignment: int
    data_offset: int  # where the data section starts
    _data: np.ndarray = field(repr=False)  # the whole file, uint8, memory-mapped

    def __repr__(self) -> str:
        return (
            f"GGUFFile({str(self.path)!r}, version={self.version}, {len(self.metadata)} metadata keys, "
            f"{len(self.tensors)} tensors)"
        )

    def _info(self, name: str) -> TensorInfo:
        if name not in self.tensors:
            raise KeyError(
                f"no tensor named {name!r} in {self.path} (see .tensors for the {len(self.tensors)} names)"
            )
        return self.tensors[name]

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The tensor's raw bytes as a uint8 view into the mapped file (no copy, read-only)."""
        info = self._info(name)
        return self._data[info.offset : info.offset + info.n_bytes].view(np.ndarray)

    def tensor(self, name: str) -> np.ndarray:
        """The tensor dequantized to a new float32 array of shape ``tensors[name].shape``."""
        info = self._info(name)
        return dequantize(self.tensor_bytes(name), info.type, info.shape)


# ---------------------------------------------------------------------------------------------------
# Reading


class _Cursor:
    """Reads little-endian fields front to back, naming the offset of anything that is not there."""

    def __init__(self, buf: memoryview):
        self.buf = buf
        self.pos = 0
        self.size = len(buf)

    def take(self, n: int, what: str) -> int:
        """Advance past ``n`` bytes of ``what``; returns where they start."""
        start = self.pos
        if n > self.size - start:
            raise GGUFError(
                f"truncated file: expected {n} bytes of {what} at byte {start}, "
                f"but the file ends at byte {self.size}"
            )
        self.pos = start + n
        return start

    def scalar(self, vtype: GGUFValueType, what: str):
        fmt = "<" + _FORMATS[vtype]
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.scalar(V.UINT64, f"the length of {what}")
        start = self.take(n, what)
        try:
            return str(self.buf[start : start + n], "utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(
                f"{what} at byte {start} is not valid UTF-8 ({e.reason} at byte {start + e.start})"
            ) from None

    def value_type(self, what: str) -> GGUFValueType:
        raw = self.scalar(V.UINT32, what)
        if raw not in GGUFValueType._value2member_map_:
            raise GGUFError(
                f"unknown {what} {raw} at byte {self.pos - 4}; "
                f"expected one of 0..12 ({', '.join(V.__members__)})"
            )
        return GGUFValueType(raw)

    def value(self, vtype: GGUFValueType, what: str) -> tuple[Any, ValueType]:
        """One value of type ``vtype``, and its full type (element types included)."""
        if vtype == V.STRING:
            return self.string(what), (vtype,)
        if vtype != V.ARRAY:
            return self.scalar(vtype, what), (vtype,)
        elem = self.value_type(f"array element type of {what}")
        n = self.scalar(V.UINT64, f"the array length of {what}")
        if elem in _FORMATS:
            start = self.take(n * struct.calcsize(_FORMATS[elem]), f"{n} {elem.name} elements of {what}")
            dtype = np.uint8 if elem == V.BOOL else "<" + _FORMATS[elem]
            items = np.frombuffer(self.buf, dtype=dtype, count=n, offset=start)
            return (items != 0 if elem == V.BOOL else items).tolist(), (vtype, elem)
        if n > (self.size - self.pos) // 8:  # strings and arrays take 8 bytes or more each
            self.take(8 * n, f"{n} {elem.name} elements of {what}")  # raises, before building a list of n
        items, elem_type = [], (elem,)
        for i in range(n):
            start = self.pos
            item, item_type = self.value(elem, f"element {i} of {what}")
            if i > 0 and item_type != elem_type:
                raise GGUFError(
                    f"element {i} of {what} at byte {start} has type {[t.name for t in item_type]}, "
                    f"but element 0 has {[t.name for t in elem_type]}; nested arrays must share one type"
                )
            items.append(item)
            elem_type = item_type
        return items, (vtype, *elem_type)


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """Parse the header, metadata and tensor infos of a GGUF file; the tensor data is memory-mapped."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise GGUFError(f"{path} is empty: expected the magic b'GGUF' at byte 0")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(memoryview(data))

    start = cur.take(4, "the magic b'GGUF'")
    magic = bytes(cur.buf[start : start + 4])
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{path} is not a GGUF file: expected the magic b'GGUF' at byte 0, found {magic!r}")
    version = cur.scalar(V.UINT32, "the version")
    if version not in READ_VERSIONS:
        hint = " (a big-endian file?)" if version & 0xFFFF == 0 else ""
        raise GGUFError(
            f"unsupported GGUF version {version} at byte 4{hint}; this reader handles {READ_VERSIONS}"
        )
    n_tensors = cur.scalar(V.UINT64, "the tensor count")
    n_kv = cur.scalar(V.UINT64, "the metadata count")

    metadata, types, key_offsets = {}, {}, {}
    for i in range(n_kv):
        start = cur.pos
        key = cur.string(f"metadata key {i}")
        if key in metadata:
            raise GGUFError(
                f"duplicate metadata key {key!r} at byte {start} (first at byte {key_offsets[key]})"
            )
        vtype = cur.value_type(f"value type of {key!r}")
        metadata[key], types[key] = cur.value(vtype, f"value of {key!r}")
        key_offsets[key] = start

    alignment = metadata.get(ALIGNMENT_KEY, DEFAULT_ALIGNMENT)
    is_power_of_two = isinstance(alignment, int) and alignment > 0 and alignment & (alignment - 1) == 0
    if ALIGNMENT_KEY in metadata and (types[ALIGNMENT_KEY] != (V.UINT32,) or not is_power_of_two):
        raise GGUFError(
            f"{ALIGNMENT_KEY} at byte {key_offsets[ALIGNMENT_KEY]} must be a UINT32 power of two; "
            f"found {alignment!r} of type {[t.name for t in types[ALIGNMENT_KEY]]}"
        )

    infos = []  # (name, ggml dims, type, relative offset, offset of the info)
    for i in range(n_tensors):
        start = cur.pos
        name = cur.string(f"the name of tensor {i}")
        n_dims = cur.scalar(V.UINT32, f"n_dims of tensor {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFError(f"tensor {name!r} at byte {start} has n_dims {n_dims}; expected 1..{MAX_DIMS}")
        dims = [cur.scalar(V.UINT64, f"dim {d} of tensor {name!r}") for d in range(n_dims)]
        raw = cur.scalar(V.UINT32, f"the type of tensor {name!r}")
        if raw not in GGMLType._value2member_map_:
            raise GGUFError(
                f"unknown ggml type {raw} for tensor {name!r} at byte {cur.pos - 4}; see GGMLType"
            )
        rel = cur.scalar(V.UINT64, f"the data offset of tensor {name!r}")
        infos.append((name, dims, GGMLType(raw), rel, start))

    data_offset = -(-cur.pos // alignment) * alignment
    tensors = {}
    for name, dims, type, rel, start in infos:
        if name in tensors:
            raise GGUFError(f"duplicate tensor name {name!r} in the tensor info at byte {start}")
        if rel % alignment:
            raise GGUFError(
                f"tensor {name!r} (info at byte {start}) has data offset {rel}; "
                f"expected a multiple of {alignment}"
            )
        shape = tuple(reversed(dims))
        try:
            nb = n_bytes(type, shape)
        except ValueError as e:
            raise GGUFError(f"tensor {name!r} (info at byte {start}): {e}") from None
        offset = data_offset + rel
        if offset + nb > size:
            raise GGUFError(
                f"tensor {name!r} (info at byte {start}) expects its {nb} bytes at bytes "
                f"{offset}..{offset + nb}, but the file ends at byte {size} (truncated?)"
            )
        tensors[name] = TensorInfo(name, shape, type, offset, nb)

    return GGUFFile(path, version, metadata, types, tensors, alignment, data_offset, data)


# ---------------------------------------------------------------------------------------------------
# Writing


def _type_of(value: Any, key: str) -> ValueType:
    """The default type of a metadata value: str, bool, int (INT32), float (FLOAT32), numpy scalars by
    dtype, and lists/1-D arrays of one such type."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.newbyteorder("<") in _NUMPY_TYPES:
        return (V.ARRAY, _NUMPY_TYPES[value.dtype.newbyteorder("<")])
    if isinstance(value, np.generic) and value.dtype.newbyteorder("<") in _NUMPY_TYPES:
        return (_NUMPY_TYPES[value.dtype.newbyteorder("<")],)
    if isinstance(value, (str, bytes)):
        return (V.STRING,)
    if isinstance(value, bool):
        return (V.BOOL,)
    if isinstance(value, int):
        if not -(2**31) <= value < 2**31:
            raise ValueError(
                f"metadata {key!r} = {value} does not fit the default INT32; "
                f"pass types={{{key!r}: GGUFValueType.INT64}}"
            )
        return (V.INT32,)
    if isinstance(value, float):
        return (V.FLOAT32,)
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(
                f"metadata {key!r} is an empty list, so its element type is unknown; pass "
                f"types={{{key!r}: (GGUFValueType.ARRAY, GGUFValueType.INT32)}} (or the type you mean)"
            )
        elem = _type_of(value[0], key)
        for item in value[1:]:
            if _type_of(item, key) != elem:
                raise ValueError(
                    f"metadata {key!r} mixes {[t.name for t in elem]} and "
                    f"{[t.name for t in _type_of(item, key)]} elements; a GGUF array holds one type "
                    f"(pass types={{{key!r}: ...}} to convert)"
                )
        return (V.ARRAY, *elem)
    raise TypeError(
        f"metadata {key!r} has a value of type {type(value).__name__}; use str, bool, int, float or a list"
    )


def _as_type(t: GGUFValueType | Iterable[GGUFValueType], key: str) -> ValueType:
    vt = tuple(GGUFValueType(x) for x in (t if isinstance(t, Iterable) else (t,)))
    if not vt or vt[-1] == V.ARRAY or any(x != V.ARRAY for x in vt[:-1]):
        raise ValueError(
            f"types[{key!r}] = {t!r} is not a value type; use a scalar type such as GGUFValueType.UINT32, "
            "or ARRAY followed by the element type, such as (GGUFValueType.ARRAY, GGUFValueType.STRING)"
        )
    return vt


def _encode(value: Any, vtype: ValueType, key: str) -> bytes:
    """The bytes of ``value`` (without its leading type id)."""
    head = vtype[0]
    if head == V.STRING:
        if not isinstance(value, (str, bytes)):
            raise TypeError(f"metadata {key!r} is declared STRING but holds a {type(value).__name__}")
        raw = value.encode("utf-8") if isinstance(value, str) else value
        return struct.pack("<Q", len(raw)) + raw
    try:
        if head != V.ARRAY:
            return struct.pack("<" + _FORMATS[head], value)
        items = list(value)
        elem = vtype[1:]
        out = struct.pack("<IQ", elem[0], len(items))
        if elem[0] in _FORMATS:
            return out + struct.pack(f"<{len(items)}{_FORMATS[elem[0]]}", *items)
        return out + b"".join(_encode(item, elem, key) for item in items)
    except (struct.error, OverflowError, TypeError) as e:
        names = [t.name for t in vtype]
        raise ValueError(
            f"metadata {key!r} cannot be stored as {names}: {e} (pass types={{{key!r}: ...}})"
        ) from None


def _tensor_bytes(entry: tuple) -> tuple[str, np.ndarray, GGMLType, tuple[int, ...]]:
    """Check one ``(name, data, type[, shape])`` entry; returns its name, bytes, type and shape."""
    if len(entry) not in (3, 4):
        raise ValueError(
            f"a tensor entry is (name, data, type) or (name, data, type, shape); got {len(entry)} items"
        )
    name, data, type = entry[:3]
    shape = tuple(int(s) for s in entry[3]) if len(entry) == 4 and entry[3] is not None else None
    type = GGMLType(type)
    data = np.asarray(data)
    if data.dtype == np.uint8:  # already encoded
        if shape is None:
            raise ValueError(
                f"tensor {name!r} is given as raw bytes, so it needs a shape: (name, bytes, type, shape)"
            )
        if data.size != n_bytes(type, shape):
            raise ValueError(
                f"tensor {name!r}: {type.name} of shape {shape} takes {n_bytes(type, shape)} bytes; "
                f"got {data.size}"
            )
        return name, data.reshape(-1), type, shape
    if not np.issubdtype(data.dtype, np.floating):
        raise TypeError(f"tensor {name!r} has dtype {data.dtype}; pass float values, or raw bytes as uint8")
    if shape is not None and shape != data.shape:
        raise ValueError(f"tensor {name!r} has shape {data.shape} but the entry says {shape}; drop the shape")
    return name, quantize(data, type).reshape(-1), type, data.shape


def write_gguf(
    path: str | os.PathLike,
    metadata: Mapping[str, Any],
    tensors: Iterable[tuple] = (),
    types: Mapping[str, GGUFValueType | tuple[GGUFValueType, ...]] | None = None,
) -> None:
    """Write a GGUF v3 file atomically (a temp file in the same folder, fsync, then rename).

    ``metadata`` keeps its order. A value's type comes from ``types[key]`` when given (a
    ``GGUFValueType`` or a tuple such as ``(ARRAY, UINT32)``), else from the value: str -> STRING,
    bool -> BOOL, int -> INT32, float -> FLOAT32, numpy scalars and 1-D arrays by dtype, lists -> ARRAY
    of their elements' type; ``general.alignment`` defaults to UINT32, as the spec requires.
    ``read_gguf(p).types`` passed back as ``types`` reproduces every type exactly.

    ``tensors`` are ``(name, data, type)`` with float ``data`` (encoded with ``ggml_blocks.quantize``),
    or ``(name, data, type, shape)`` with ``data`` the already-encoded uint8 bytes and ``shape`` in
    numpy order. The alignment is ``metadata["general.alignment"]`` if present, else 32.
    """
    types = dict(types or {})
    unknown = set(types) - set(metadata)
    if unknown:
        raise ValueError(f"types names keys that are not in metadata: {sorted(unknown)}")
    kv = bytearray()
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata keys are str; got {key!r}")
        if key in types:
            vtype = _as_type(types[key], key)
        elif key == ALIGNMENT_KEY:
            vtype = (V.UINT32,)
        else:
            vtype = _type_of(value, key)
        kv += _encode(key, (V.STRING,), key) + struct.pack("<I", vtype[0]) + _encode(value, vtype, key)

    alignment = metadata.get(ALIGNMENT_KEY, DEFAULT_ALIGNMENT)
    if not isinstance(alignment, (int, np.integer)) or alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"{ALIGNMENT_KEY} = {alignment!r}; it must be a positive power of two such as 32")

    entries, names, infos, offset = [], set(), bytearray(), 0
    for entry in tensors:
        name, raw, type, shape = _tensor_bytes(entry)
        if name in names:
            raise ValueError(f"tensor name {name!r} appears twice; GGUF tensor names are unique")
        if not 1 <= len(shape) <= MAX_DIMS:
            raise ValueError(f"tensor {name!r} has shape {shape}; GGUF tensors have 1..{MAX_DIMS} dims")
        names.add(name)
        dims = shape[::-1]  # ggml order: the contiguous row length first
        infos += _encode(name, (V.STRING,), name) + struct.pack(
            f"<I{len(dims)}QIQ", len(dims), *dims, type, offset
        )
        entries.append(raw)
        offset += -(-raw.size // alignment) * alignment

    header = GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(entries), len(metadata))
    head = header + kv + infos
    _atomic_write(Path(path), head, entries, int(alignment))


def _atomic_write(path: Path, head: bytes, entries: list[np.ndarray], alignment: int) -> None:
    """Write head, pad, then each tensor padded to the alignment; readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            f.write(bytes(-len(head) % alignment))
            for raw in entries:
                f.write(memoryview(np.ascontiguousarray(raw)))
                f.write(bytes(-raw.size % alignment))
            f.flush()
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes it owner-only
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
