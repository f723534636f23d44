"""rag.retrieval.chunking: exact spans, asked-for overlap, full coverage, headings and code fences respected.

Real text: the first articles of wikitext2's validation split (one Document per "= Title =" article).
Hand-worked examples fix the exact windows on small strings; hypothesis checks spans and coverage on
random text with newlines, periods and fences.
"""

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rag.documents import Document
from rag.retrieval.chunking import fixed_chunks, sentence_chunks, sentence_spans, structure_chunks

pytestmark = pytest.mark.usefixtures("one_thread")

CHUNKERS = {
    "fixed-word": lambda d: fixed_chunks(d, 50, 10),
    "fixed-char": lambda d: fixed_chunks(d, 300, 60, unit="char"),
    "sentence": lambda d: sentence_chunks(d, 400),
    "structure": lambda d: structure_chunks(d, 600),
}


@pytest.fixture(scope="module")
def articles(data_file):
    text = data_file("wikitext2", "valid.txt").read_text(encoding="utf-8")
    starts = [m.start() for m in re.finditer(r"^ = [^=].* = $", text, flags=re.M)][:9]
    return [
        Document(f"wiki{i}", text[s:e], title=text[s:e].split("\n")[0].strip(" ="))
        for i, (s, e) in enumerate(itertools.pairwise(starts))
    ]


def assert_exact_and_covering(doc, chunks):
    assert len({c.id for c in chunks}) == len(chunks), "chunk ids are unique"
    covered = bytearray(len(doc.text))
    for c in chunks:
        assert c.doc_id == doc.id and c.id == f"{doc.id}@{c.start}"
        assert doc.text[c.start : c.end] == c.text and c.text.strip() == c.text and c.text
        covered[c.start : c.end] = b"\1" * (c.end - c.start)
    missed = [i for i, ch in enumerate(doc.text) if not ch.isspace() and not covered[i]]
    assert not missed, f"non-whitespace characters in no chunk, first at {missed[:3]}"
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)


@pytest.mark.parametrize("name", CHUNKERS)
def test_spans_exact_and_cover_wikitext(articles, name):
    for doc in articles:
        chunks = CHUNKERS[name](doc)
        assert len(chunks) > 3
        assert_exact_and_covering(doc, chunks)
        assert all(c.meta["chunk"] == i for i, c in enumerate(chunks))


def test_fixed_word_windows_overlap_exactly(articles):
    for size, overlap in [(50, 10), (7, 6), (20, 0)]:
        for doc in articles[:3]:
            chunks = fixed_chunks(doc, size, overlap)
            words = [c.text.split() for c in chunks]
            assert all(len(w) == size for w in words[:-1]) and 0 < len(words[-1]) <= size
            for a, b, c in zip(words, words[1:], chunks[1:], strict=False):
                assert a[size - overlap :] == b[:overlap], "the next window starts size - overlap words on"
                assert not doc.text[c.start - 1].strip() if c.start else True, "a window starts at a word"


def test_fixed_char_windows_respect_size_and_overlap(articles):
    size, overlap = 300, 60
    doc = articles[0]
    chunks = fixed_chunks(doc, size, overlap, unit="char")
    longest_word = max(len(w) for w in doc.text.split())
    for a, b in itertools.pairwise(chunks):
        assert len(a.text) <= size or " " not in a.text
        shared = max(0, a.end - b.start)
        assert shared <= overlap, "never more overlap than asked"
        assert overlap - shared <= longest_word + 2, "short of the overlap by less than a word and its gap"
        assert b.start > a.start


def test_fixed_hand_worked():
    doc = Document("d", "one two three four five six seven")
    assert [c.text for c in fixed_chunks(doc, 3, 1)] == ["one two three", "three four five", "five six seven"]
    assert [c.id for c in fixed_chunks(doc, 3, 1)] == ["d@0", "d@8", "d@19"]
    # chars: "one two" (7); "two" starts within the last 4 characters; "three" does not (ends at 13)
    assert [c.text for c in fixed_chunks(doc, 10, 4, unit="char")] == [
        "one two",
        "two three",
        "four five",
        "five six",
        "six seven",
    ]
    assert fixed_chunks(Document("e", " \n "), 5, 1) == []


def test_sentence_splitter_hand_worked():
    text = 'Dr. Smith met H. americanus. Then he left!  "Why?" she asked.\n\nnew paragraph here'
    got = [text[s:e] for s, e in sentence_spans(text)]
    assert got == ["Dr. Smith met H. americanus.", "Then he left!", '"Why?" she asked.', "new paragraph here"]
    # wikitext spaces its periods: "Sea . It is"
    text = "the Black Sea . It is 60 cm ."
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "the Black Sea .",
        "It is 60 cm .",
    ]


def test_sentence_chunks_pack_whole_sentences():
    doc = Document("s", "Aa aa. Bb bb bb. Cc. " + "Dd " * 10 + "end.")
    chunks = sentence_chunks(doc, 16)
    assert [c.text for c in chunks][:2] == ["Aa aa. Bb bb bb.", "Cc."]
    assert all(len(c.text) <= 16 for c in chunks), "the long sentence is cut between words"
    assert_exact_and_covering(doc, chunks)


def test_sentence_chunks_end_at_sentence_ends(articles):
    doc = articles[1]
    sentences = sentence_spans(doc.text)
    ends = {e for _, e in sentences}
    long = [(s, e) for s, e in sentences if e - s > 400]
    for c in sentence_chunks(doc, 400):
        cut = any(s < c.end < e or s < c.start < e for s, e in long)
        assert (c.end in ends and len(c.text) <= 400) or cut, c.text[-40:]


MARKDOWN = """# Guide

Intro paragraph.

## Install

Run this:

```bash
# not a heading
pip install x

echo done
```

### Details
Detail one. Detail two.

## Use
Last words.
"""


def test_structure_hand_worked_markdown():
    doc = Document("md", MARKDOWN, title="Doc")
    chunks = structure_chunks(doc, 40)
    assert [(c.title, c.text) for c in chunks] == [
        ("Guide", "# Guide\n\nIntro paragraph."),
        ("Guide > Install", "## Install\n\nRun this:"),
        ("Guide > Install", MARKDOWN[MARKDOWN.index("```") : MARKDOWN.index("done\n```") + 8]),
        ("Guide > Install > Details", "### Details\nDetail one. Detail two."),
        ("Guide > Use", "## Use\nLast words."),
    ]
    assert chunks[3].meta["headings"] == ["Guide", "Install", "Details"]
    assert_exact_and_covering(doc, chunks)


def test_structure_wikitext_headings_and_fallback(articles):
    for doc in articles:
        chunks = structure_chunks(doc, 600)
        heads = [m for m in re.finditer(r"^ (=(?: =)*) (.+?) \1 $", doc.text, flags=re.M)]
        assert heads and chunks[0].title == doc.title
        for m in heads:  # every heading opens a chunk whose title path ends with it
            (c,) = [c for c in chunks if c.start == m.start() + 1]
            assert c.title.split(" > ")[-1] == m.group(2) and len(c.meta["headings"]) == m.group(1).count("=")
        for c in chunks:  # no heading inside a chunk but at its start
            assert not re.search(r"\n (=(?: =)*) .+? \1 ?(\n|$)", c.text)
        big = [c for c in chunks if len(c.text) > 600]
        assert not big, "oversized paragraphs fall back to sentence packing"


def test_structure_never_splits_a_code_fence():
    code = "```python\n" + "\n\n".join(f"x{i} = {i}  # line {i}" for i in range(40)) + "\n```"
    doc = Document("c", f"# T\n\nBefore.\n\n{code}\n\nAfter.\n\n~~~\nopen fence to the end\n\n# no")
    chunks = structure_chunks(doc, 50)
    assert code in [c.text for c in chunks], "the 40-line block is one chunk despite max_chars=50"
    assert chunks[-1].text == "After.\n\n~~~\nopen fence to the end\n\n# no", "packed with what fits"
    assert_exact_and_covering(doc, chunks)


@given(
    st.text(alphabet=st.sampled_from("ab .\n\t#=`~"), max_size=300), st.integers(1, 40), st.integers(0, 39)
)
def test_random_text_spans_exact_and_covering(text, size, overlap):
    doc = Document("r", text)
    overlap = min(overlap, size - 1)
    for unit in ("word", "char"):
        assert_exact_and_covering(doc, fixed_chunks(doc, size, overlap, unit=unit))
    assert_exact_and_covering(doc, sentence_chunks(doc, size))
    assert_exact_and_covering(doc, structure_chunks(doc, size))


def test_bad_arguments_name_the_value():
    doc = Document("d", "a b c")
    with pytest.raises(ValueError, match="size"):
        fixed_chunks(doc, 0, 0)
    with pytest.raises(ValueError, match="overlap"):
        fixed_chunks(doc, 5, 5)
    with pytest.raises(ValueError, match="overlap"):
        fixed_chunks(doc, 5, -1)
    with pytest.raises(ValueError, match="unit"):
        fixed_chunks(doc, 5, 1, unit="token")
    with pytest.raises(ValueError, match="max_chars"):
        sentence_chunks(doc, 0)
    with pytest.raises(ValueError, match="max_chars"):
        structure_chunks(doc, -3)
    with pytest.raises(TypeError, match="Document"):
        sentence_chunks("a b c", 10)
