"""The file a :class:`~rag.store.vector_store.VectorStore` saves to: one file, versioned, checksummed, atomic.

The file is an uncompressed zip (what ``np.savez`` writes) of raw ``.npy`` arrays, ``metadata.json``, and
``header.json`` last: format name and version, dim, metric, the index kind and its params, and the
sha256, dtype and shape of every member. Arrays are read back with ``np.load(allow_pickle=False)``, so
a store file cannot run code, and only after their checksum matched, so a flipped bit or a cut-off file
raises ``ValueError("corrupt store ...")`` instead of returning wrong neighbours.

A save writes ``.<name>.tmp-<pid>-<random>`` next to the target, fsyncs it, renames it over the target
with ``os.replace`` (atomic on POSIX and Windows) and fsyncs the directory, so a crash at any moment
leaves either the old store or the new one at ``path``, never a mix; a crash leaves the hidden temp file
behind, which :func:`load_file` never reads (it opens ``path`` only). This is the recipe of
``gpt.training.checkpoint.atomic_file``, written out here (plus the directory fsync) so that the
numpy-only store does not import torch through that module.
"""

import hashlib
import io
import json
import os
import secrets
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "rag.store.VectorStore"
VERSION = 1


class _HashingWriter:
    """A write-only file that forwards to ``f`` and hashes what passes through."""

    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.f.write(data)


def save_file(path, header: dict, arrays: dict[str, np.ndarray], metadata: list[dict]) -> None:
    """Write ``arrays`` (member name -> array), ``metadata`` and ``header`` (JSON fields, to which the
    format, version and member checksums are added) to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                members = {}
                for name, arr in arrays.items():
                    arr = np.ascontiguousarray(arr)
                    with zf.open(name, "w", force_zip64=True) as out:
                        writer = _HashingWriter(out)
                        np.lib.format.write_array(writer, arr, allow_pickle=False)
                    members[name] = {
                        "sha256": writer.sha.hexdigest(),
                        "dtype": arr.dtype.str,
                        "shape": arr.shape,
                    }
                meta = json.dumps(metadata).encode()
                zf.writestr("metadata.json", meta)
                members["metadata.json"] = {"sha256": hashlib.sha256(meta).hexdigest()}
                full = {"format": FORMAT, "version": VERSION, **header, "members": members}
                zf.writestr("header.json", json.dumps(full, indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX; Windows cannot open a directory and needs no fsync)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_file(path) -> tuple[dict, dict[str, np.ndarray], list[dict]]:
    """(header, arrays, metadata) of the file :func:`save_file` wrote, after checking its format, version
    and every member's checksum, dtype and shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no store file at {path}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"corrupt store {path}: truncated or not a store file ({e})") from None
    with zf:
        header = _read_header(zf, path)
        arrays, metadata = {}, None
        for name, info in header["members"].items():
            data = _read(zf, name, path)
            if hashlib.sha256(data).hexdigest() != info["sha256"]:
                raise ValueError(f"corrupt store {path}: member {name!r} checksum mismatch")
            if name == "metadata.json":
                metadata = json.loads(data)
                continue
            arr = np.load(io.BytesIO(data), allow_pickle=False)
            if arr.dtype.str != info["dtype"] or list(arr.shape) != list(info["shape"]):
                raise ValueError(f"corrupt store {path}: member {name!r} is not the {info} the header lists")
            arrays[name] = arr
    if metadata is None:
        raise ValueError(f"corrupt store {path}: metadata.json missing")
    return header, arrays, metadata


def _read(zf: zipfile.ZipFile, name: str, path: Path) -> bytes:
    try:
        return zf.read(name)
    except KeyError:
        raise ValueError(f"corrupt store {path}: member {name!r} missing (truncated?)") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:  # zip's own CRC-32 fails before our sha256
        raise ValueError(
            f"corrupt store {path}: member {name!r} checksum mismatch or truncated ({e})"
        ) from None


def _read_header(zf: zipfile.ZipFile, path: Path) -> dict:
    if "header.json" not in zf.namelist():
        raise ValueError(f"corrupt store {path}: no header.json (truncated, or not a {FORMAT} file)")
    try:
        header = json.loads(_read(zf, "header.json", path))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"corrupt store {path}: header.json is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file (its header.json has no format {FORMAT!r})")
    if header.get("version") != VERSION:
        raise ValueError(
            f"{path}: store format version {header.get('version')!r} not supported (reads {VERSION})"
        )
    return header
