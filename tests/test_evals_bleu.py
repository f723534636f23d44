"""evals.text BLEU, chrF and the 13a tokenizer against sacreBLEU 2.6 (tolerance 1e-6), on Multi30k, on
generated text, and on hand-worked examples."""

import math

import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from evals.text.bleu import SACREBLEU_VERSION, BLEUConfig, corpus_bleu, sentence_bleu
from evals.text.chrf import CHRFConfig, corpus_chrf, sentence_chrf
from evals.text.tokenize_13a import tokenize_13a

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-6
SMOOTHS = ["none", "floor", "add-k", "exp"]


@pytest.fixture(scope="module")
def multi30k(multi30k_test):
    """test_2016_flickr: German references, perturbed German hypotheses, English sources (1,000 each)."""
    return {"de": multi30k_test["de"], "hyp": multi30k_test["de_hyp"], "en": multi30k_test["en"]}


def sacre_bleu(cfg: BLEUConfig) -> BLEU:
    return BLEU(
        tokenize=cfg.tokenize,
        lowercase=cfg.lowercase,
        smooth_method=cfg.smooth,
        smooth_value=cfg.smooth_value,
        effective_order=cfg.effective_order,
    )


def assert_bleu_equal(ours, theirs):
    assert ours.score == pytest.approx(theirs.score, abs=TOL)
    assert ours.bp == pytest.approx(theirs.bp, abs=TOL)
    assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    assert ours.precisions == pytest.approx(theirs.precisions, abs=TOL)


def test_13a_tokenizer_matches_sacrebleu(multi30k):
    ref = Tokenizer13a()
    lines = (
        multi30k["de"] + multi30k["en"] + ["3.14, 1,000 and 1990-1995.", "a &amp; b &lt;c&gt; &quot;d&quot;"]
    )
    lines += ["end.(x)", "[tag]{x}~`^|\\", "co-op - -\nline<skipped>", "¿Qué? «Größe» — 5€."]
    assert [tokenize_13a(s) for s in lines] == [ref(s) for s in lines]
    assert tokenize_13a("Hello, world. Pi is 3.14!") == "Hello , world . Pi is 3.14 !"


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_13a_tokenizer_on_generated_text(text):
    assert tokenize_13a(text) == Tokenizer13a()(text)


@pytest.mark.parametrize("smooth", SMOOTHS)
@pytest.mark.parametrize("tokenize,lowercase", [("13a", False), ("13a", True), ("none", False)])
def test_corpus_bleu_matches_sacrebleu(multi30k, smooth, tokenize, lowercase):
    cfg = BLEUConfig(tokenize=tokenize, lowercase=lowercase, smooth=smooth)
    for hyps in (multi30k["hyp"], multi30k["en"]):
        theirs = sacre_bleu(cfg).corpus_score(hyps, [multi30k["de"]])
        ours = corpus_bleu(hyps, [multi30k["de"]], cfg)
        assert_bleu_equal(ours, theirs)
        if smooth != "add-k":  # sacrebleu returns add-k's counts with k already added
            assert (ours.counts, ours.totals) == (theirs.counts, theirs.totals)
    # perturbing words keeps most n-grams; English against German keeps almost none
    assert corpus_bleu(multi30k["hyp"], [multi30k["de"]], cfg).score > 50
    assert corpus_bleu(multi30k["en"], [multi30k["de"]], cfg).score < 5


def test_corpus_bleu_two_references_and_floor_value(multi30k):
    refs = [multi30k["de"], multi30k["hyp"][::-1]]
    for cfg in (
        BLEUConfig(),
        BLEUConfig(smooth="floor", smooth_value=0.3),
        BLEUConfig(smooth="add-k", smooth_value=2),
    ):
        m = sacre_bleu(cfg)
        assert_bleu_equal(corpus_bleu(multi30k["en"], refs, cfg), m.corpus_score(multi30k["en"], refs))
        assert cfg.signature(2) == str(m.get_signature())


@pytest.mark.parametrize("smooth", SMOOTHS)
@pytest.mark.parametrize("effective_order", [True, False])
def test_sentence_bleu_matches_sacrebleu(multi30k, smooth, effective_order):
    cfg = BLEUConfig(smooth=smooth, effective_order=effective_order)
    m = sacre_bleu(cfg)
    for hyp, de, en in list(zip(multi30k["hyp"], multi30k["de"], multi30k["en"], strict=True))[:300]:
        assert_bleu_equal(sentence_bleu(hyp, [de], cfg), m.sentence_score(hyp, [de]))
        assert_bleu_equal(sentence_bleu(en, [de, hyp], cfg), m.sentence_score(en, [de, hyp]))


def test_sentence_bleu_defaults_are_sacrebleus(multi30k):
    for hyp, de in list(zip(multi30k["hyp"], multi30k["de"], strict=True))[:300]:
        assert_bleu_equal(sentence_bleu(hyp, [de]), sacrebleu.sentence_bleu(hyp, [de]))
    assert sentence_bleu("a b c", ["a b c"]).score == pytest.approx(100.0), "3 words: effective order 3"


def test_signature_is_sacrebleus():
    for cfg in (
        BLEUConfig(),
        BLEUConfig(lowercase=True, tokenize="none", smooth="floor"),
        BLEUConfig(smooth="add-k", effective_order=True),
        BLEUConfig(smooth="none"),
    ):
        m = sacre_bleu(cfg)
        m.corpus_score(["a b"], [["a b"]])  # sacrebleu learns nrefs while scoring
        assert cfg.signature(1) == str(m.get_signature())
    assert sacrebleu.__version__ == SACREBLEU_VERSION, (
        "the signature's version field names the tested release"
    )
    assert (
        BLEUConfig().signature(1)
        == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" + SACREBLEU_VERSION
    )


def test_bleu_hand_worked():
    # hyp 1 "the cat sat on the mat"  vs ref "the cat is on the mat"  (6 vs 6 words)
    #   1-grams 5/6 (the x2, cat, on, mat), 2-grams 3/5 (the cat, on the, the mat), 3-grams 1/4 (on the mat),
    #   4-grams 0/3
    # hyp 2 "a dog runs" vs ref "the dog runs fast" (3 vs 4 words)
    #   1-grams 2/3 (dog, runs), 2-grams 1/2 (dog runs), 3-grams 0/1, 4-grams 0/0
    # corpus: matches [7, 4, 1, 0] of [9, 7, 5, 3]; c = 9 < r = 10, BP = exp(1 - 10/9)
    hyps = ["the cat sat on the mat", "a dog runs"]
    refs = [["the cat is on the mat", "the dog runs fast"]]
    none = corpus_bleu(hyps, refs, BLEUConfig(smooth="none"))
    assert (none.counts, none.totals, none.sys_len, none.ref_len) == ([7, 4, 1, 0], [9, 7, 5, 3], 9, 10)
    assert none.bp == pytest.approx(math.exp(-1 / 9))
    assert none.score == 0.0, "no 4-gram matches and no smoothing: the geometric mean is 0"
    # exp smoothing: the first zero precision becomes 1 / (2 * 3 four-grams)
    expected = 100 * math.exp(-1 / 9) * (7 / 9 * 4 / 7 * 1 / 5 * 1 / 6) ** 0.25
    assert corpus_bleu(hyps, refs).score == pytest.approx(expected, abs=TOL)
    assert corpus_bleu(hyps, refs).score == pytest.approx(sacrebleu.corpus_bleu(hyps, refs).score, abs=TOL)


def test_chrf_hand_worked():
    # char_order 2, hyp "ab" vs ref "abc": 1-grams P = 2/2, R = 2/3;
    # 2-grams: hyp "ab", ref "ab" "bc", so P = 1/1, R = 1/2
    # mean P = 1, mean R = 7/12; chrF2 = 5 P R / (4 P + R) = (35/12) / (55/12) = 7/11
    cfg = CHRFConfig(char_order=2)
    assert sentence_chrf("ab", ["abc"], cfg) == pytest.approx(100 * 7 / 11, abs=TOL)
    assert sentence_chrf("ab", ["abc"], cfg) == pytest.approx(
        CHRF(char_order=2).sentence_score("ab", ["abc"]).score, abs=TOL
    )
    assert CHRFConfig(word_order=2).name == "chrF2++"


CHRF_CONFIGS = [
    CHRFConfig(),
    CHRFConfig(word_order=2),
    CHRFConfig(lowercase=True, whitespace=True),
    CHRFConfig(eps_smoothing=True),
    CHRFConfig(word_order=2, eps_smoothing=True),
]


def sacre_chrf(cfg: CHRFConfig) -> CHRF:
    return CHRF(
        char_order=cfg.char_order,
        word_order=cfg.word_order,
        beta=cfg.beta,
        lowercase=cfg.lowercase,
        whitespace=cfg.whitespace,
        eps_smoothing=cfg.eps_smoothing,
    )


@pytest.mark.parametrize("cfg", CHRF_CONFIGS, ids=lambda c: f"{c.name}-lc{c.lowercase}-eps{c.eps_smoothing}")
def test_chrf_matches_sacrebleu(multi30k, cfg):
    m = sacre_chrf(cfg)
    de, hyp, en = multi30k["de"], multi30k["hyp"], multi30k["en"]
    for hyps, refs in ((hyp, [de]), (en, [de]), (en, [de, hyp])):
        assert corpus_chrf(hyps, refs, cfg) == pytest.approx(m.corpus_score(hyps, refs).score, abs=TOL)
    for h, d, e in list(zip(hyp, de, en, strict=True))[:200]:
        assert sentence_chrf(h, [d], cfg) == pytest.approx(m.sentence_score(h, [d]).score, abs=TOL)
        assert sentence_chrf(e, [d, h], cfg) == pytest.approx(m.sentence_score(e, [d, h]).score, abs=TOL)


WORDS = [
    "the",
    "The",
    "cat",
    "Hund",
    "Hunde",
    "Größe",
    "3.14",
    "1,000",
    "1990-95",
    "co-op",
    "(hi)",
    ",",
    ".",
    "!",
]
WORDS += ["&amp;", "&quot;", "é", "日本", "a", "a.", "'s", ""]
sentences = st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join)
texts = st.one_of(sentences, st.text(max_size=30))


@given(hyp=texts, refs=st.lists(texts, min_size=1, max_size=3), smooth=st.sampled_from(SMOOTHS))
@settings(max_examples=150, deadline=None)
def test_sentence_scores_on_generated_text(hyp, refs, smooth):
    cfg = BLEUConfig(smooth=smooth, effective_order=True)
    assert_bleu_equal(sentence_bleu(hyp, refs, cfg), sacre_bleu(cfg).sentence_score(hyp, refs))
    for ccfg in CHRF_CONFIGS[:2]:
        assert sentence_chrf(hyp, refs, ccfg) == pytest.approx(
            sacre_chrf(ccfg).sentence_score(hyp, refs).score, abs=TOL
        )


@given(pairs=st.lists(st.tuples(texts, texts), min_size=1, max_size=6), smooth=st.sampled_from(SMOOTHS))
@settings(max_examples=100, deadline=None)
def test_corpus_scores_on_generated_text(pairs, smooth):
    hyps, refs = [h for h, _ in pairs], [[r for _, r in pairs]]
    cfg = BLEUConfig(smooth=smooth, lowercase=True)
    assert_bleu_equal(corpus_bleu(hyps, refs, cfg), sacre_bleu(cfg).corpus_score(hyps, refs))
    cfg = CHRFConfig(word_order=2)
    assert corpus_chrf(hyps, refs, cfg) == pytest.approx(
        sacre_chrf(cfg).corpus_score(hyps, refs).score, abs=TOL
    )


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="smooth='add-one'"):
        BLEUConfig(smooth="add-one")
    with pytest.raises(ValueError, match="unknown tokenizer 'intl'"):
        BLEUConfig(tokenize="intl")
    with pytest.raises(TypeError, match="reference streams"):
        corpus_bleu(["a b"], ["a b"])
    with pytest.raises(ValueError, match="1 lines for 2 hypotheses"):
        corpus_chrf(["a", "b"], [["a"]])
    with pytest.raises(TypeError, match="list of reference strings"):
        sentence_bleu("a b", "a b")
