"""Cutting documents into retrievable chunks: fixed windows, packed sentences, and document structure.

A retriever ranks chunks, not documents, so the chunker decides what a hit can be. Three chunkers, from
simplest to most aware of the text, each ``(doc, ...) -> list[Chunk]`` with exact character spans
(``doc.text[c.start:c.end] == c.text``, so a citation points at the source) and ids ``"{doc_id}@{start}"``:

- :func:`fixed_chunks`: windows of ``size`` words (or characters) that overlap by ``overlap``, as
  LangChain's ``CharacterTextSplitter``; a window only starts and ends at whitespace, so no word is cut;
- :func:`sentence_chunks`: whole sentences packed up to ``max_chars``, so no chunk ends mid-sentence;
- :func:`structure_chunks`: Markdown (``# H``) and wikitext (``= = H = =``) sections, paragraphs and fenced
  code blocks (kept whole) packed up to ``max_chars`` without crossing a heading; each chunk's ``title``
  is its heading path ("Article > Section"), as LangChain's ``MarkdownHeaderTextSplitter`` records it.
  Only ATX headings and ``` / ~~~ fences are structure: setext (underlined) headings, indented code
  and HTML read as paragraphs.

Every chunk copies its document's ``meta`` and adds ``"chunker"`` (which one made it) and ``"chunk"`` (its
position in the document's list).
"""

import itertools
import re

from rag.documents import Chunk, Document

_WORD = re.compile(r"\S+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends at . ! or ? (plus closing quotes/brackets) before whitespace and an opening quote,
# capital letter or digit. Not a boundary: a known abbreviation or a single-letter initial before the
# period ("Dr. Smith", "H. americanus"). Limits: other abbreviations ("approx. Paris") split, a sentence
# starting in lower case ("... end. then") does not, and quotes are handled only as single characters.
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s+[\"'“‘(\[]?\s?[A-Z0-9])")
_ABBREVIATIONS = frozenset(
    re.split(
        r"\s+",
        (
            "mr mrs ms dr prof sr jr st mt ft vs etc e.g i.e cf al fig no vol ch pp jan feb mar apr jun jul "
            "aug sep sept oct nov dec inc ltd co corp gen col lt sgt capt rev u.s u.k"
        ),
    )
)
_MD_HEADING = re.compile(r" {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*")
_WIKI_HEADING = re.compile(r"(=(?: ?=)*)(.*?)((?:= ?)*=)")  # on the stripped line: "= = H = =" or "== H =="
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


def _check_doc(doc) -> None:
    if not isinstance(doc, Document):
        raise TypeError(f"chunkers take a rag.documents.Document, got {type(doc).__name__}; wrap the text")


def _positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _make(doc: Document, spans, chunker: str, titles=None, headings=None) -> list[Chunk]:
    chunks = []
    for i, (s, e) in enumerate(spans):
        meta = {**doc.meta, "chunker": chunker, "chunk": i}
        if headings is not None:
            meta["headings"] = headings[i]
        title = doc.title if titles is None else titles[i]
        chunks.append(Chunk(doc.id, s, e, doc.text[s:e], title, meta))
    return chunks


def _pack(spans: list[tuple[int, int]], max_chars: int) -> list[tuple[int, int]]:
    """Greedily join consecutive spans while the joined span (gaps included) fits ``max_chars``; a span
    longer than ``max_chars`` on its own stays whole."""
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if out and e - out[-1][0] <= max_chars:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def fixed_chunks(doc: Document, size: int, overlap: int = 0, unit: str = "word") -> list[Chunk]:
    """Windows of ``size`` units, each starting ``size - overlap`` units after the last.

    ``unit="word"`` counts whitespace-separated words: every window but the last has exactly ``size``
    words and shares exactly ``overlap`` with the next. ``unit="char"`` packs whole words into at most
    ``size`` characters (a longer word is a window of its own); the next window starts at the first word
    that begins within the last ``overlap`` characters, so the shared text is at most ``overlap``
    characters and short of it by less than one word and its following whitespace.
    """
    _check_doc(doc)
    _positive("size", size)
    if not isinstance(overlap, int) or not 0 <= overlap < size:
        raise ValueError(f"overlap must be an int in [0, size={size}), got {overlap!r}")
    if unit not in ("word", "char"):
        raise ValueError(f"unit={unit!r}; choose 'word' or 'char'")
    words = [m.span() for m in _WORD.finditer(doc.text)]
    spans = []
    if unit == "word":
        step = size - overlap
        for i in range(0, len(words), step):
            spans.append((words[i][0], words[min(i + size, len(words)) - 1][1]))
            if i + size >= len(words):
                break
        return _make(doc, spans, "fixed")
    i = 0
    while i < len(words):
        j = i + 1  # words[i:j] is the window
        while j < len(words) and words[j][1] - words[i][0] <= size:
            j += 1
        spans.append((words[i][0], words[j - 1][1]))
        if j == len(words):
            break
        i += 1  # the next window opens at the first word starting within the last `overlap` characters
        while i < j and words[i][0] < words[j - 1][1] - overlap:
            i += 1
    return _make(doc, spans, "fixed")


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Spans of the sentences in ``text[start:end]``, leading/trailing whitespace excluded. A blank line
    (paragraph break) always ends a sentence; see ``_SENTENCE_END`` for the rest and its limits."""
    end = len(text) if end is None else end
    cuts = [start]
    for m in _PARAGRAPH_BREAK.finditer(text, start, end):
        cuts.append(m.start())
        cuts.append(m.end())
    for m in _SENTENCE_END.finditer(text, start, end):
        before = text[text.rfind(" ", start, m.start()) + 1 : m.start()].lstrip("\"'“‘([").lower()
        if before in _ABBREVIATIONS or (len(before) == 1 and before.isalpha()):
            continue
        cuts.append(m.end())
    cuts = sorted([*cuts, end])
    spans = []
    for s, e in itertools.pairwise(cuts):
        piece = text[s:e]
        if piece.strip():
            s2 = s + len(piece) - len(piece.lstrip())
            spans.append((s2, s + len(piece.rstrip())))
    return spans


def _fit(text: str, spans: list[tuple[int, int]], max_chars: int) -> list[tuple[int, int]]:
    """Each span that is longer than ``max_chars`` replaced by its words packed into ``max_chars``."""
    out = []
    for s, e in spans:
        if e - s <= max_chars:
            out.append((s, e))
        else:
            out.extend(_pack([m.span() for m in _WORD.finditer(text, s, e)], max_chars))
    return out


def sentence_chunks(doc: Document, max_chars: int) -> list[Chunk]:
    """Consecutive whole sentences packed into at most ``max_chars`` characters per chunk; a sentence
    longer than that is cut between words (a single longer word stays whole)."""
    _check_doc(doc)
    _positive("max_chars", max_chars)
    spans = _fit(doc.text, sentence_spans(doc.text), max_chars)
    return _make(doc, _pack(spans, max_chars), "sentence")


def _heading(line: str) -> tuple[int, str] | None:
    """(level, title) when ``line`` is a Markdown or wikitext heading, else None."""
    m = _MD_HEADING.fullmatch(line)
    if m and m.group(2):
        return len(m.group(1)), m.group(2)
    m = _WIKI_HEADING.fullmatch(line.strip())
    title = m.group(2).strip() if m else ""
    if title and not title.startswith("=") and m.group(1).count("=") == m.group(3).count("="):
        return m.group(1).count("="), title
    return None


def _sections(text: str):
    """Yield (heading path, blocks) per section; a block is (start, end, atomic), atomic for code fences.

    A section starts at its heading line (included in its first block) or at the start of the text."""
    path: list[tuple[int, str]] = []
    blocks: list[tuple[int, int, bool]] = []
    para: list[int] | None = None  # [start, end] of the open paragraph
    fence: tuple[str, int] | None = None  # (marker, start) of the open code block
    pos = 0
    for line in text.splitlines(keepends=True):
        s, e = pos, pos + len(line.rstrip("\r\n"))
        pos += len(line)
        body = text[s:e]
        if fence is not None:
            if body.strip().startswith(fence[0]) and not body.strip().strip(fence[0][0]):
                blocks.append((fence[1], e, True))
                fence = None
            continue
        m = _FENCE.match(body)
        if m:
            if para:
                blocks.append((para[0], para[1], False))
                para = None
            fence = (m.group(1), s + len(body) - len(body.lstrip()))
            continue
        if not body.strip():
            if para:
                blocks.append((para[0], para[1], False))
                para = None
            continue
        heading = _heading(body)
        if heading is not None:
            if para:
                blocks.append((para[0], para[1], False))
                para = None
            if blocks:
                yield [t for _, t in path], blocks
            level, title = heading
            path = [(lv, t) for lv, t in path if lv < level] + [(level, title)]
            s2 = s + len(body) - len(body.lstrip())
            blocks = [(s2, s2 + len(body.strip()), True)]
            continue
        s2 = s + len(body) - len(body.lstrip())
        e2 = s + len(body.rstrip())
        para = [s2, e2] if para is None else [para[0], e2]
    if para:
        blocks.append((para[0], para[1], False))
    if fence is not None:  # an unclosed fence runs to the end of the text
        blocks.append((fence[1], len(text.rstrip()), True))
    if blocks:
        yield [t for _, t in path], blocks


def structure_chunks(doc: Document, max_chars: int) -> list[Chunk]:
    """Sections split at every heading; inside one, paragraphs and code blocks packed up to ``max_chars``.

    A heading line opens its section's first chunk. A fenced code block is never split (it may exceed
    ``max_chars``); a paragraph longer than ``max_chars`` falls back to sentence packing. ``title`` is
    the heading path joined by " > " (the document's title before any heading); ``meta["headings"]`` is
    the path as a list."""
    _check_doc(doc)
    _positive("max_chars", max_chars)
    spans, titles, headings = [], [], []
    for path, blocks in _sections(doc.text):
        pieces = []
        for s, e, atomic in blocks:
            if atomic or e - s <= max_chars:
                pieces.append((s, e))
            else:
                pieces.extend(_fit(doc.text, sentence_spans(doc.text, s, e), max_chars))
        packed = _pack(pieces, max_chars)
        spans += packed
        titles += [" > ".join(path) if path else doc.title] * len(packed)
        headings += [list(path) for _ in packed]
    return _make(doc, spans, "structure", titles, headings)
