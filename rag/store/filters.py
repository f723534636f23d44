"""Metadata filters that run during search: a filter becomes the index's ``allowed`` row mask.

Filtering after search (take the top-k, drop the rows that fail) returns fewer than k results, or none,
when the filter is selective. Turning the filter into a mask first lets every index skip the rejected
rows while it ranks, so a filtered search returns k results whenever k rows match (the "pre-filter"
of Weaviate/Qdrant/Milvus; faiss takes the same mask as an ``IDSelector`` in ``SearchParameters``).

Syntax, in the spirit of MongoDB/Chroma ``where`` clauses, several fields AND-ed::

    {"lang": "en"}                        # equality
    {"year": {"gte": 2000, "lt": 2010}}   # ranges: gt, gte, lt, lte (and eq, ne)
    {"tag": {"in": ["a", "b"]}}           # set membership

Metadata is kept columnar (one object array and one "present" mask per field) rather than as a list
of dicts: a filter is then a few comparisons over whole columns instead of a Python loop over every
row's dict, and a field nobody stored is a missing key in one dict, easy to report.
"""

import json

import numpy as np

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in")


class MetadataTable:
    """Per-row metadata dicts stored as columns; row ``i`` is the store's row ``i`` (rows never move)."""

    def __init__(self):
        self.n_rows = 0
        self._chunks: dict[
            str, list[tuple[int, np.ndarray, np.ndarray]]
        ] = {}  # field -> [(first row, values, present)]
        self._columns: dict[
            str, tuple[np.ndarray, np.ndarray]
        ] = {}  # field -> (values, present), built lazily

    @property
    def fields(self) -> list[str]:
        return sorted(self._chunks)

    def append(self, metadata: list[dict] | None, n: int) -> None:
        """Add ``n`` rows; ``metadata``: one dict per row from :func:`check_metadata` (None: empty)."""
        if metadata:
            for field in {key for meta in metadata for key in meta}:
                values = np.empty(n, dtype=object)
                present = np.zeros(n, dtype=bool)
                for i, meta in enumerate(metadata):
                    if field in meta:
                        values[i] = meta[field]
                        present[i] = True
                self._chunks.setdefault(field, []).append((self.n_rows, values, present))
                self._columns.pop(field, None)
        self.n_rows += n

    def column(self, field: str) -> tuple[np.ndarray, np.ndarray]:
        """(values, present), each (n_rows,); values of absent rows are None."""
        if field not in self._columns or len(self._columns[field][0]) != self.n_rows:
            values = np.empty(self.n_rows, dtype=object)
            present = np.zeros(self.n_rows, dtype=bool)
            for start, v, p in self._chunks[field]:
                values[start : start + len(v)] = v
                present[start : start + len(p)] = p
            self._columns[field] = (values, present)
        return self._columns[field]

    def row(self, row: int) -> dict:
        out = {}
        for field in self._chunks:
            values, present = self.column(field)
            if present[row]:
                out[field] = values[row]
        return out

    def rows(self) -> list[dict]:
        """Every row's dict, for saving."""
        out = [{} for _ in range(self.n_rows)]
        for field in self._chunks:
            values, present = self.column(field)
            for i in np.flatnonzero(present):
                out[i][field] = values[i]
        return out


def check_metadata(metadata, n: int) -> list[dict] | None:
    """``metadata`` as a list of ``n`` JSON-serialisable dicts with str keys, or a clear error."""
    if metadata is None:
        return None
    if isinstance(metadata, dict) or not hasattr(metadata, "__len__"):
        raise TypeError(f"metadata must be a list of dicts, one per vector, got {type(metadata).__name__}")
    metadata = list(metadata)
    if len(metadata) != n:
        raise ValueError(f"got {n} vectors but {len(metadata)} metadata dicts; pass one dict per vector")
    for i, meta in enumerate(metadata):
        if not isinstance(meta, dict):
            raise TypeError(f"metadata[{i}] must be a dict, got {type(meta).__name__}")
        if not all(isinstance(key, str) for key in meta):
            raise TypeError(f"metadata[{i}] keys must be str, got {list(meta)!r}")
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"metadata[{i}] must hold JSON values (str, number, bool, None, list): {e}"
            ) from None
    return metadata


def filter_mask(flt: dict, table: MetadataTable) -> np.ndarray:
    """(n_rows,) bool: rows whose metadata passes every clause of ``flt``."""
    if not isinstance(flt, dict):
        raise TypeError(f"filter must be a dict like {{'lang': 'en'}}, got {type(flt).__name__}")
    mask = np.ones(table.n_rows, dtype=bool)
    for field, cond in flt.items():
        if field not in table.fields:
            raise ValueError(
                f"filter field {field!r}: no stored vector has it (stored fields: {table.fields})"
            )
        values, present = table.column(field)
        clauses = cond if isinstance(cond, dict) else {"eq": cond}
        for op, operand in clauses.items():
            if op not in OPERATORS:
                raise ValueError(f"filter on {field!r}: unknown operator {op!r}; choose from {OPERATORS}")
            mask &= _clause(field, op, operand, values, present)
    return mask


def _clause(field, op, operand, values, present) -> np.ndarray:
    rows = np.flatnonzero(present)
    sub = values[rows]
    if op == "in":
        if isinstance(operand, (str, bytes, dict)) or not hasattr(operand, "__iter__"):
            raise TypeError(f"filter on {field!r}: 'in' takes a list of values, got {operand!r}")
        try:
            choices = set(operand)
            ok = [v in choices for v in sub]
        except TypeError:  # unhashable values (lists) compare one by one
            choices = list(operand)
            ok = [v in choices for v in sub]
    else:
        compare = {
            "eq": lambda v: v == operand,
            "ne": lambda v: v != operand,
            "gt": lambda v: v > operand,
            "gte": lambda v: v >= operand,
            "lt": lambda v: v < operand,
            "lte": lambda v: v <= operand,
        }[op]
        try:
            ok = [bool(compare(v)) for v in sub]
        except TypeError:
            kinds = sorted({type(v).__name__ for v in sub})
            raise ValueError(
                f"filter on {field!r}: cannot compare stored values of type {kinds} with {operand!r} ({op})"
            ) from None
    mask = np.zeros(len(values), dtype=bool)
    mask[rows] = np.asarray(ok, dtype=bool)
    return mask
