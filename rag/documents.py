"""What retrieval passes around: a source :class:`Document`, a :class:`Chunk` of it, a search :class:`Hit`.

A chunk keeps its document's id and its character span, so every retrieved passage (and every citation
of one) traces back to the exact text it came from: ``doc.text[chunk.start:chunk.end] == chunk.text``.
A :class:`Retriever` is anything that maps a batch of queries to ranked hits; BM25, dense and hybrid
search all have that shape, so the pipeline and the metrics never care which one they get.
"""

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Document:
    """One source text. ``id`` is unique in its corpus; ``meta`` carries anything a filter may use."""

    id: str
    text: str
    title: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"a document id must be a non-empty str, got {self.id!r}")
        if not isinstance(self.text, str):
            raise TypeError(f"document {self.id!r}: text must be a str, got {type(self.text).__name__}")


@dataclass(frozen=True)
class Chunk:
    """``text == document.text[start:end]``; ``id`` is ``"{doc_id}@{start}"``, unique and traceable."""

    doc_id: str
    start: int
    end: int
    text: str
    title: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not 0 <= self.start <= self.end:
            raise ValueError(
                f"chunk of {self.doc_id!r}: need 0 <= start <= end, got {self.start}, {self.end}"
            )
        if len(self.text) != self.end - self.start:
            raise ValueError(
                f"chunk of {self.doc_id!r}: text has {len(self.text)} characters but the span "
                f"[{self.start}, {self.end}) has {self.end - self.start}"
            )

    @property
    def id(self) -> str:
        return f"{self.doc_id}@{self.start}"


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its score under the retriever that found it (higher is better)."""

    chunk: Chunk
    score: float


def check_search(queries, k) -> None:
    """The Retriever protocol's input check: ``queries`` a list of str, ``k`` a positive int."""
    if isinstance(queries, str):
        raise TypeError(f"queries must be a list of str, got a bare str {queries[:40]!r}; pass [query]")
    if not isinstance(queries, (list, tuple)) or not all(isinstance(q, str) for q in queries):
        raise TypeError(f"queries must be a list of str, got {type(queries).__name__} {str(queries)[:60]}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")


class Retriever(Protocol):
    """Ranked hits, best first, at most ``k`` per query, for a batch of queries."""

    def search(self, queries: list[str], k: int) -> list[list[Hit]]: ...  # check_search(queries, k) first
