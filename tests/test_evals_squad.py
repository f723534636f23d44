"""evals.text.squad against the SQuAD v1.1 evaluation script's functions as lm-evaluation-harness ships
them (lm_eval/tasks/qasper/metrics.py: normalize_answer and f1_score, "taken from the official evaluation
script for v1.1"), exactly, plus worked examples of the script's definitions."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lm_eval.tasks.qasper.metrics import f1_abstractive as official_f1
from lm_eval.tasks.qasper.metrics import normalize_answer as official_normalize

from evals.text.squad import exact_match, max_over_golds, normalize_answer, squad_scores, token_f1

pytestmark = pytest.mark.usefixtures("one_thread")


def official_em(prediction: str, gold: str) -> float:
    # evaluate-v1.1.py: exact_match_score = normalize_answer(prediction) == normalize_answer(ground_truth)
    return float(official_normalize(prediction) == official_normalize(gold))


@pytest.fixture(scope="module")
def spans(multi30k_test):
    """(prediction, gold) pairs cut from Multi30k English sentences: overlapping word spans."""
    rng = random.Random(0)
    pairs = []
    for s in multi30k_test["en"]:
        words = s.split()
        a, b = sorted(rng.sample(range(len(words) + 1), 2))
        c, d = max(0, a + rng.randint(-2, 2)), min(len(words), b + rng.randint(-2, 2))
        pairs.append((" ".join(words[c:d]), " ".join(words[a:b])))
    return pairs


def test_matches_official_script_on_multi30k_spans(spans):
    assert len(spans) == 1000
    for pred, gold in spans:
        assert normalize_answer(pred) == official_normalize(pred)
        assert exact_match(pred, gold) == official_em(pred, gold)
        assert token_f1(pred, gold) == official_f1([pred], [gold])
    assert 0 < sum(exact_match(p, g) for p, g in spans) < len(spans), "some spans equal, most do not"


ANSWERS = [
    "the",
    "The",
    "a",
    "an",
    "Denver",
    "Broncos",
    "Broncos.",
    "1,000",
    "(2016)",
    "théâtre",
    "!",
    "",
    "and",
]
answers = st.one_of(st.lists(st.sampled_from(ANSWERS), max_size=6).map(" ".join), st.text(max_size=20))


@given(pred=answers, golds=st.lists(answers, min_size=1, max_size=4))
@settings(max_examples=300, deadline=None)
def test_matches_official_script_on_generated_answers(pred, golds):
    assert normalize_answer(pred) == official_normalize(pred)
    # evaluate-v1.1.py: metric_max_over_ground_truths takes the max over the gold answers
    assert max_over_golds(exact_match, pred, golds) == max(official_em(pred, g) for g in golds)
    assert max_over_golds(token_f1, pred, golds) == max(official_f1([pred], [g]) for g in golds)


def test_hand_worked_examples():
    # normalisation: lowercase, punctuation out, articles out, whitespace collapsed
    assert normalize_answer("  The  Denver Broncos! ") == "denver broncos"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre", "articles are removed as whole words only"
    assert exact_match("the Denver Broncos", "Denver Broncos") == 1.0
    # "broncos won" vs "denver broncos": 1 shared token, P = 1/2, R = 1/2, F1 = 1/2
    assert token_f1("Broncos won", "the Denver Broncos") == pytest.approx(0.5)
    # "denver broncos" vs "denver": P = 1/2, R = 1, F1 = 2/3
    assert token_f1("Denver Broncos", "Denver") == pytest.approx(2 / 3)
    # both sides normalise to nothing: equal strings (EM 1) but no shared token (v1.1 F1 0)
    assert (exact_match("The.", "a"), token_f1("The.", "a")) == (1.0, 0.0)
    # two questions: EM 1 and 0 -> 50; F1 best over golds 1 and 2/3 -> 83.33
    scores = squad_scores(
        ["Denver Broncos", "Denver Broncos"], [["Broncos", "the Denver Broncos"], ["Denver"]]
    )
    assert scores["exact_match"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="2 predictions for 1 questions"):
        squad_scores(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one gold answer"):
        max_over_golds(exact_match, "a", [])
