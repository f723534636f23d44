"""GGUF, the single-file model format of llama.cpp, and a memory-mapped reader for it.

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

The writer, the same layout run backwards, is ``gguf_writer.py``. Reference: the spec, ggml
``docs/gguf.md``; llama.cpp ``ggml/src/gguf.cpp``; gguf-py ``gguf/gguf_reader.py``, which the tests
compare against.
"""

import os
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from quant.ggml_blocks import GGMLType, dequantize, n_bytes

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
VALUE_FORMATS = {
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
NUMPY_VALUE_TYPES = {np.dtype(f"<{fmt}"): vtype for vtype, fmt in VALUE_FORMATS.items()}

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
        fmt = "<" + VALUE_FORMATS[vtype]
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
        if elem in VALUE_FORMATS:
            start = self.take(n * struct.calcsize(VALUE_FORMATS[elem]), f"{n} {elem.name} elements of {what}")
            dtype = np.uint8 if elem == V.BOOL else "<" + VALUE_FORMATS[elem]
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
