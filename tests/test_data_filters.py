"""Gopher quality and repetition rules, each on a hand-written document that fails only it."""

import pytest

from gpt.data.filters import (
    FilterConfig,
    apply_filters,
    duplicate_ngram_fraction,
    first_failed_rule,
    top_ngram_fraction,
)

# 60 distinct ordinary words with stop words: passes every rule
GOOD = (
    "The history of the lighthouse is a story of engineering and of the people who kept the lamps "
    "burning. Early towers were built with wood and stone, and keepers had to climb the stairs each "
    "night with oil. Later designs used iron frames that could survive storms, and lenses invented "
    "in France made the beam visible from far away. Today most lights are automatic, but many old "
    "towers remain as museums that visitors enjoy during the summer months along quiet coasts."
)


def test_good_document_passes_everything():
    assert first_failed_rule(GOOD) is None


@pytest.mark.parametrize(
    ("doc", "rule"),
    [
        ("the cat and the dog sat with me", "word count"),
        (" ".join(["a", "to", "of", "the", "an", "and"] * 10), "mean word length"),
        (GOOD + " #" * 12, "symbol-to-word ratio"),
        ("\n".join(f"• item {w} of the list and more" for w in GOOD.split()[:60]), "bullet lines"),
        ("\n".join(sentence + "..." for sentence in GOOD.split(". ")), "ellipsis lines"),
        (GOOD + " " + " ".join(["123", "4.5", "--", "%%"] * 6), "words with a letter"),
        (
            " ".join(
                w for w in GOOD.split() if w.lower().strip(".,") not in {"the", "of", "and", "with", "to"}
            ),
            "stop words",
        ),
        ("\n".join([GOOD] + ["the same line of text is here and again"] * 10), "duplicate lines"),
        (GOOD + " the lighthouse" * 12, "top n-gram"),
    ],
)
def test_each_rule_catches_its_example(doc, rule):
    assert first_failed_rule(doc) == rule


def test_ngram_fractions_hand_worked():
    words = ["ab", "cd", "ab", "cd", "ef"]  # 10 characters
    # most frequent bigram ("ab","cd") occurs twice, 4 characters each time: 8 / 10
    assert top_ngram_fraction(words, 2) == pytest.approx(0.8)
    # duplicated bigram ("ab","cd") covers words 0..3: 8 / 10; no trigram repeats
    assert duplicate_ngram_fraction(words, 2) == pytest.approx(0.8)
    assert duplicate_ngram_fraction(words, 3) == 0.0


def test_duplicate_ngrams_rule():
    sentence = "every keeper of the old tower wrote a long letter home to the family"
    doc = GOOD + " " + sentence + " " + " ".join(GOOD.split()[:20]) + " " + sentence
    cfg = FilterConfig(max_top_ngram_frac={})  # isolate the duplicate n-gram rule
    assert first_failed_rule(doc, cfg) == "duplicate n-grams"


def test_report_counts_each_rule_in_order():
    docs = [GOOD, "too short", GOOD + " #" * 12, "the cat sat"]
    kept, report = apply_filters(docs)
    assert kept == [GOOD]
    rows = {name: removed for name, removed, _ in report.rows}
    assert rows["word count"] == 2 and rows["symbol-to-word ratio"] == 1
    assert sum(rows.values()) == 3 and report.num_in == 4 and report.num_out == 1
    table = report.table()
    assert "word count" in table and table.splitlines()[1].split()[-1] == "4"
