"""evals.text ROUGE against rouge_score's RougeScorer (tolerance 1e-9) and the Porter stemmer against
NLTK's PorterStemmer (identical strings), on Multi30k and WikiText-2, generated text and worked examples."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.stem.porter import PorterStemmer as NLTKPorter
from rouge_score.rouge_scorer import RougeScorer

from evals.text.porter import MODES, PorterStemmer
from evals.text.rouge import ROUGE_TYPES, rouge, tokenize
from gpt.tasks.translation import load_pairs

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-9
NLTK_MODES = {"original": "ORIGINAL_ALGORITHM", "martin": "MARTIN_EXTENSIONS", "nltk": "NLTK_EXTENSIONS"}


@pytest.fixture(scope="module")
def english(multi30k_test):
    """Multi30k test_2016_flickr English sentences and deterministic perturbations of them."""
    return multi30k_test["en"], multi30k_test["en_hyp"]


@pytest.fixture(scope="module")
def vocabulary(data_file):
    """Every distinct whitespace token of Multi30k's English training text and WikiText-2's test split."""
    data_file("multi30k", "train.en.gz")
    en, _ = load_pairs("train")
    words = {w for s in en for w in s.split()}
    words |= set(data_file("wikitext2", "test.txt").read_text(encoding="utf-8").split())
    return sorted(words)


@pytest.mark.parametrize("mode", MODES)
def test_porter_matches_nltk_on_real_vocabulary(vocabulary, mode):
    ours, theirs = PorterStemmer(mode), NLTKPorter(NLTK_MODES[mode])
    assert len(vocabulary) > 20_000
    differ = [(w, ours.stem(w), theirs.stem(w)) for w in vocabulary if ours.stem(w) != theirs.stem(w)]
    assert differ == []


@given(word=st.text(alphabet="aeiouybcdglmnrstvwxz", max_size=14), mode=st.sampled_from(MODES))
@settings(max_examples=400, deadline=None)
def test_porter_matches_nltk_on_generated_words(word, mode):
    assert PorterStemmer(mode).stem(word) == NLTKPorter(NLTK_MODES[mode]).stem(word)


def test_porter_examples_from_the_paper():
    # Porter 1980's own walk-throughs, step by step, and its step examples
    original = PorterStemmer("original")
    assert original.stem("generalizations") == "gener"  # -> generalization -> generalize -> general -> gener
    assert original.stem("oscillators") == "oscil"  # -> oscillator -> oscillate -> oscill -> oscil
    for word, stem in [("caresses", "caress"), ("ponies", "poni"), ("ties", "ti"), ("cats", "cat")]:
        assert original.step1a(word) == stem
    for word, stem in [("feed", "feed"), ("agreed", "agree"), ("plastered", "plaster"), ("bled", "bled")]:
        assert original.step1b(word) == stem
    for word, stem in [
        ("conflated", "conflate"),
        ("hopping", "hop"),
        ("falling", "fall"),
        ("filing", "file"),
    ]:
        assert original.step1b(word) == stem
    assert original.step1c("happy") == "happi" and original.step1c("sky") == "sky"
    assert original.step2("relational") == "relate" and original.step2("rational") == "rational"
    assert original.step3("triplicate") == "triplic" and original.step4("adoption") == "adopt"
    assert original.step5("probate") == "probat" and original.step5("rate") == "rate"
    assert original.step5("controll") == "control" and original.step5("roll") == "roll"
    # where the variants part: NLTK keeps "ties" a word and leaves "enjoy" alone
    assert PorterStemmer("nltk").stem("ties") == "tie" and original.stem("enjoy") == "enjoi"
    assert PorterStemmer("nltk").stem("enjoy") == "enjoy"
    with pytest.raises(ValueError, match="unknown Porter mode 'snowball'"):
        PorterStemmer("snowball")


def assert_scores_equal(ours, theirs, types=ROUGE_TYPES):
    for kind in types:
        assert tuple(ours[kind]) == pytest.approx(tuple(theirs[kind]), abs=TOL), kind


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_matches_rouge_score_on_multi30k(english, use_stemmer):
    en, hyps = english
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    for target, pred in zip(en[:400], hyps[:400], strict=True):
        assert tokenize(target, use_stemmer) == scorer._tokenizer.tokenize(target)
        assert_scores_equal(rouge(target, pred, use_stemmer=use_stemmer), scorer.score(target, pred))
    # unrelated sentence pairs: low but mostly non-zero overlap
    for target, pred in zip(en[:200], en[200:400], strict=True):
        assert_scores_equal(rouge(target, pred, use_stemmer=use_stemmer), scorer.score(target, pred))


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_lsum_matches_rouge_score_on_summaries(english, use_stemmer):
    en, hyps = english
    rng = random.Random(1)
    kinds = ["rougeLsum", "rougeL"]
    scorer = RougeScorer(kinds, use_stemmer=use_stemmer)
    for i in range(0, 600, 5):
        target = "\n".join(en[i : i + 5])
        pred = "\n".join(rng.sample(hyps[i : i + 8], rng.randint(1, 5)))
        assert_scores_equal(rouge(target, pred, kinds, use_stemmer), scorer.score(target, pred), kinds)


def test_rouge_hand_worked():
    # Lin 2004, section 3.1: against "police killed the gunman", "police kill the gunman" shares the LCS
    # "police the gunman" (3 of 4 words), "the gunman kill police" only "the gunman" (2 of 4)
    ref = "police killed the gunman"
    assert tuple(rouge(ref, "police kill the gunman")["rougeL"]) == pytest.approx((3 / 4, 3 / 4, 3 / 4))
    assert tuple(rouge(ref, "the gunman kill police")["rougeL"]) == pytest.approx((2 / 4, 2 / 4, 2 / 4))
    # bigrams: only "the gunman" of 3; with stemming "killed" -> "kill", so every unigram matches
    assert rouge(ref, "police kill the gunman")["rouge2"].recall == pytest.approx(1 / 3)
    assert rouge(ref, "police kill the gunman", use_stemmer=True)["rouge1"].fmeasure == pytest.approx(1.0)
    # Lin 2004, section 3.2: r = w1..w5, c1 = w1 w2 w6 w7 w8, c2 = w1 w3 w8 w9 w5; the union of
    # LCS(r, c1) = w1 w2 and LCS(r, c2) = w1 w3 w5 is w1 w2 w3 w5: 4 hits, recall 4/5, precision 4/10
    lsum = rouge("w1 w2 w3 w4 w5", "w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5", ["rougeLsum"])["rougeLsum"]
    assert (lsum.recall, lsum.precision) == pytest.approx((4 / 5, 4 / 10))
    assert tokenize("The CAT's 2 cats!", use_stemmer=True) == ["the", "cat", "s", "2", "cat"]


WORDS = ["the", "cat", "cats", "running", "runs", "ran", "police", "killed", "gunman", "a", "A", "3", "x-y"]
WORDS += ["Größe", "naïve", "!", ",", "", "generalizations", "happy", "happiness", "\n"]
texts = st.one_of(st.lists(st.sampled_from(WORDS), max_size=14).map(" ".join), st.text(max_size=30))


@given(target=texts, pred=texts, use_stemmer=st.booleans())
@settings(max_examples=200, deadline=None)
def test_rouge_on_generated_text(target, pred, use_stemmer):
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    assert_scores_equal(rouge(target, pred, use_stemmer=use_stemmer), scorer.score(target, pred))


def test_bad_rouge_types_are_clear_errors():
    with pytest.raises(ValueError, match="unknown ROUGE type 'rougeW'"):
        rouge("a", "a", ["rougeW"])
    with pytest.raises(TypeError, match=r"\['rouge1'\]"):
        rouge("a", "a", "rouge1")
