"""The n-gram contamination check: hand-worked overlaps on tiny corpora, the hashed numpy index against
plain Python sets of word tuples (random corpora and GSM8K test against train), the report and the
split, the corpus loaders, and one index over the real pystdlib train split."""

import random
import time
import warnings

import pytest

from evals.benchmarks.contamination import (
    CORPORA,
    DEFAULT_N,
    THRESHOLD,
    NGramIndex,
    contamination_report,
    decontaminate,
    gsm8k_test_report,
    training_corpora,
    words,
)
from gpt.data.gsm8k import load_gsm8k

LONG = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, "
    "it was the age of foolishness, it was the epoch of belief."
)


def reference_overlap(docs, text, n):
    """Plain Python: the set of word tuples of each size, and the fraction of the text's windows in it."""
    tokens = words(text)
    if not tokens:
        return 0.0
    k = min(n, len(tokens))
    corpus = {tuple(t[i : i + k]) for t in map(words, docs) for i in range(len(t) - k + 1)}
    windows = [tuple(tokens[i : i + k]) for i in range(len(tokens) - k + 1)]
    return sum(w in corpus for w in windows) / len(windows)


def test_words_ignore_case_and_punctuation():
    assert words("The CAT, sat! on_the mat... 1,250") == ["the", "cat", "sat", "on_the", "mat", "1", "250"]
    assert words("") == [] and words("?!") == []


def test_planted_item_is_flagged_and_a_fresh_one_is_not():
    index = NGramIndex(
        ["Some unrelated text about boats.", "Preface. " + LONG + " And more."], name="dickens"
    )
    assert DEFAULT_N == 13 and index.n == 13
    assert index.overlap(LONG) == 1.0 and LONG in index
    assert index.overlap(LONG.upper().replace(",", ";")) == 1.0  # case and punctuation are ignored
    fresh = "A quiet library opened on the hill, and nobody in the town could remember why it closed."
    assert index.overlap(fresh) == 0.0 and fresh not in index


def test_hand_worked_partial_overlap():
    index = NGramIndex(["the cat sat on the mat"], n=3)
    # trigrams of the item: the cat sat (in), cat sat on (in), sat on a, on a mat, a mat today: 2 of 5
    assert index.overlap("The cat sat on a mat today") == 2 / 5
    assert len(index) == 4  # the cat sat, cat sat on, sat on the, on the mat
    # repeated windows count each time: "the cat sat the cat sat" has 4 trigrams, 2 of them in the corpus
    assert index.overlap("the cat sat the cat sat") == 2 / 4


def test_items_shorter_than_n_are_one_gram_of_their_own_length():
    index = NGramIndex(["Preface. " + LONG], n=13)
    assert index.overlap("the age of wisdom") == 1.0  # 4 words, verbatim inside the document
    assert index.overlap("the wisdom of age") == 0.0  # same words, another order
    assert index.overlap("times") == 1.0 and index.overlap("centuries") == 0.0
    assert index.overlap("") == 0.0 and index.overlap("... !!") == 0.0  # no words: nothing to match


def test_grams_never_span_two_documents():
    index = NGramIndex(["a b c", "d e f"], n=2)
    assert index.overlap("b c") == 1.0 and index.overlap("d e") == 1.0
    assert index.overlap("c d") == 0.0  # the end of one document and the start of the next
    assert index.overlap("f a") == 0.0
    assert NGramIndex([], n=2).overlap("a b") == 0.0


@pytest.mark.parametrize("n", [1, 2, 3, 5, 13])
def test_hashed_index_equals_python_sets_on_random_corpora(n):
    rng = random.Random(n)
    vocab = [f"w{i}" for i in range(12)]  # a small vocabulary, so that many n-grams repeat

    def text(k):
        return " ".join(rng.choices(vocab, k=k))

    docs = [text(rng.randint(0, 60)) for _ in range(40)]
    index = NGramIndex(docs, n=n)
    seen = set()
    for _ in range(300):
        item = text(rng.randint(0, 30))
        overlap = index.overlap(item)
        assert overlap == reference_overlap(docs, item, n), item
        seen.add(overlap)
    assert 0.0 in seen and 1.0 in seen  # both outcomes occur
    assert len(index) == len({tuple(t[i : i + n]) for t in map(words, docs) for i in range(len(t) - n + 1)})


def test_gsm8k_test_against_train_equals_python_sets(data_file):
    data_file("gsm8k", "train.jsonl")
    train = [f"{p.question}\n{p.answer}" for p in load_gsm8k("train")]
    test = [f"{p.question}\n{p.answer}" for p in load_gsm8k("test")]
    index = NGramIndex(train, name="gsm8k")
    report = gsm8k_test_report(index)
    corpus = {tuple(t[i : i + 13]) for t in map(words, train) for i in range(len(t) - 12)}
    want = []
    for doc in test:
        windows = [tuple(t) for t in (words(doc)[i : i + 13] for i in range(len(words(doc)) - 12))]
        want.append(sum(w in corpus for w in windows) / len(windows))
    assert [row["overlap"] for row in report] == want
    flagged = sum(row["contaminated"] for row in report)
    assert 0 < flagged < len(test) // 10  # a few shared phrasings, not a copied test set
    assert {row["corpus"] for row in report if row["contaminated"]} == {"gsm8k"}


def test_report_and_decontaminate():
    indexes = {
        "prose": NGramIndex(["Preface. " + LONG], name="prose"),
        "cats": NGramIndex(["the cat sat on the mat"]),
    }
    records = [
        {"id": "copied", "text": LONG},
        {
            "id": "fresh",
            "text": "Completely new words that appear nowhere in either of the corpora here today.",
        },
        {"id": "short", "text": "the cat sat"},
    ]
    report = contamination_report(records, lambda r: r["text"], indexes)
    assert THRESHOLD == 0.0
    assert report == [
        {"id": "copied", "overlap": 1.0, "contaminated": True, "corpus": "prose"},
        {"id": "fresh", "overlap": 0.0, "contaminated": False, "corpus": None},
        {"id": "short", "overlap": 1.0, "contaminated": True, "corpus": "cats"},
    ]
    kept, dropped = decontaminate(records, lambda r: r["text"], indexes)
    assert [r["id"] for r in kept] == ["fresh"] and [r["id"] for r in dropped] == ["copied", "short"]
    partial = {"id": "partial", "text": "the cat sat on a mat today"}
    small = NGramIndex(["the cat sat on the mat"], n=3, name="cats")
    assert (
        contamination_report([partial], lambda r: r["text"], small, threshold=0.5)[0]["contaminated"] is False
    )
    assert (
        contamination_report([partial], lambda r: r["text"], small, threshold=0.3)[0]["contaminated"] is True
    )
    with pytest.raises(ValueError, match="no index"):
        contamination_report(records, lambda r: r["text"], {})


def test_bad_arguments():
    with pytest.raises(ValueError, match="n >= 1"):
        NGramIndex(["a"], n=0)
    with pytest.raises(TypeError, match="wrap it in a list"):
        NGramIndex("one document")
    with pytest.raises(TypeError, match="str"):
        NGramIndex(["a"]).overlap(None)


def test_training_corpora_skip_a_missing_corpus_by_name(tmp_path, monkeypatch, data_file):
    data_file("gsm8k", "train.jsonl")
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text('{"question": "q1", "answer": "a\\n#### 1"}\n')
    monkeypatch.setenv("LLM_COURSE_DATA", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        corpora = training_corpora(["gsm8k", "tinyshakespeare", "code_alpaca_2k"])
    assert corpora == {"gsm8k": ["q1\na\n#### 1"]}
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and "'tinyshakespeare'" in messages[0] and "'code_alpaca_2k'" in messages[1]
    with pytest.raises(ValueError, match="unknown corpus"):
        training_corpora(["fineweb"])


def test_the_shipped_corpora_load(data_file):
    for name, file in [
        ("code_alpaca_2k", "code_alpaca_2k.json"),
        ("alpaca_libre", "alpaca_libre_tasks_v1.jsonl"),
    ]:
        data_file(name, file)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may be skipped when the data is there
        corpora = training_corpora([c for c in CORPORA if c != "pystdlib"])
    sizes = {name: len(docs) for name, docs in corpora.items()}  # the record counts of each SOURCE.md
    assert sizes == {
        "tinyshakespeare": 1,
        "wikitext2": 60,
        "gsm8k": 7473,
        "code_alpaca_2k": 2017,
        "alpaca_libre": 1856,
    }


def test_real_pystdlib_train_index_is_quick():
    from gpt.data.sources import load_pystdlib

    corpus = load_pystdlib(0.05)
    start = time.perf_counter()
    index = NGramIndex(corpus.train, name="pystdlib")
    seconds = time.perf_counter() - start
    assert seconds < 20, f"indexing pystdlib train took {seconds:.1f} s"
    line = next(ln for ln in corpus.train[0].splitlines() if len(words(ln)) >= 13)  # a line of a train file
    assert index.overlap(line) == 1.0
    assert (
        index.overlap("Quietly the seventeen purple giraffes assembled a harpsichord beneath Lisbon's moon")
        == 0.0
    )
