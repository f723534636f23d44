"""Writing GGUF: the layout of ``gguf.py`` run backwards, with typed metadata and an atomic write.

The writer's choices are the reader's facts: each metadata value needs a type (inferred from the Python
value, or given in ``types`` so that a file read with ``read_gguf`` is rewritten byte for byte), each
tensor's bytes come from ``ggml_blocks.quantize`` (or are passed already encoded), and the data section
is aligned. The file appears whole or not at all: a temp file in the same folder, fsync, then rename.

Reference: gguf-py ``gguf/gguf_writer.py`` (the tests check that its reader parses our files).
"""

import os
import struct
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from quant.ggml_blocks import GGMLType, n_bytes, quantize
from quant.gguf import (
    ALIGNMENT_KEY,
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_VERSION,
    MAX_DIMS,
    NUMPY_VALUE_TYPES,
    VALUE_FORMATS,
    GGUFValueType,
    V,
    ValueType,
)


def _type_of(value: Any, key: str) -> ValueType:
    """The default type of a metadata value: str, bool, int (INT32), float (FLOAT32), numpy scalars by
    dtype, and lists/1-D arrays of one such type."""
    if (
        isinstance(value, np.ndarray)
        and value.ndim == 1
        and value.dtype.newbyteorder("<") in NUMPY_VALUE_TYPES
    ):
        return (V.ARRAY, NUMPY_VALUE_TYPES[value.dtype.newbyteorder("<")])
    if isinstance(value, np.generic) and value.dtype.newbyteorder("<") in NUMPY_VALUE_TYPES:
        return (NUMPY_VALUE_TYPES[value.dtype.newbyteorder("<")],)
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
            return struct.pack("<" + VALUE_FORMATS[head], value)
        items = list(value)
        elem = vtype[1:]
        out = struct.pack("<IQ", elem[0], len(items))
        if elem[0] in VALUE_FORMATS:
            return out + struct.pack(f"<{len(items)}{VALUE_FORMATS[elem[0]]}", *items)
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
