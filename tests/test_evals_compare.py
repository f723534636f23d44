"""evals.compare: both parts end to end at smoke size, and the pieces on hand-made data.

The corpus metrics are checked against sacreBLEU and rouge_score on the run's own hypotheses, the rank
correlations against scipy.stats (to 1e-12), the HH pairs it scores against gpt.data.hh_rlhf's reader on the
real file, and accuracy, ties and position swap on stub scorers worked by hand. The smoke models are tiny and
barely trained, so no quality is asserted.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer
from scipy import stats

from evals.backend import GPTBackend
from evals.compare import preference, run, translation
from evals.compare.preference import (
    PAIRWISE_V1,
    PerplexityScorer,
    accuracy,
    choose_pairs,
    compare_preferences,
    score_pairs,
    select_pairs,
    transcript,
)
from evals.compare.run import CompareConfig, cli, main
from evals.compare.translation import (
    SystemsConfig,
    disagreements,
    rank_correlations,
    rank_gaps,
    score_systems,
)
from evals.metrics import bootstrap_ci
from gpt.data.hh_rlhf import PreferencePair, load_preferences

pytestmark = pytest.mark.usefixtures("one_thread")


def _one_thread_main(cfg: CompareConfig) -> dict:
    threads = torch.get_num_threads()  # module-scoped fixtures run before the one_thread fixture
    torch.set_num_threads(1)
    try:
        return main(cfg)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory, data_file):
    data_file("multi30k", "test_2016_flickr.de.gz")
    out = tmp_path_factory.mktemp("translation")
    return out, _one_thread_main(CompareConfig(part="translation", smoke=True, out_dir=str(out)))


@pytest.fixture(scope="module")
def preference_run(tmp_path_factory, data_file):
    data_file("hh_rlhf_harmless_base", "test.jsonl.gz")
    out = tmp_path_factory.mktemp("preference")
    return out, _one_thread_main(CompareConfig(part="preference", smoke=True, out_dir=str(out)))


def _check_correlations(corr: dict, metrics: list[str]):
    for kind in ("spearman", "kendall"):
        assert set(corr[kind]) == set(metrics)
        for a in metrics:
            for b in metrics:
                r = corr[kind][a][b]
                assert r is None or -1 - 1e-12 <= r <= 1 + 1e-12, (kind, a, b, r)
                assert r == corr[kind][b][a] or (r is not None and abs(r - corr[kind][b][a]) < 1e-12)


def test_translation_smoke_end_to_end(translation_run):
    out, result = translation_run
    saved = json.loads((out / "compare.json").read_text())
    assert saved["corpus"] == result["corpus"]
    for png in ("compare.png", "compare-sentences.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    texts = json.loads((out / "hypotheses.json").read_text())
    assert list(texts["systems"]) == result["systems"] and len(result["systems"]) == 5
    assert texts["systems"]["copy source"] == texts["sources"]
    assert result["metrics"] == list(translation.METRICS)
    refs = texts["references"]
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for name, hyps in texts["systems"].items():
        corpus, sentence = result["corpus"][name], result["sentence"][name]
        assert set(corpus) == set(sentence) == set(translation.METRICS), name
        assert all(len(v) == len(refs) == 20 for v in sentence.values())
        assert corpus["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
        assert corpus["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-9)
        chrfpp = sacrebleu.metrics.CHRF(word_order=2).corpus_score(hyps, [refs]).score
        assert corpus["chrf++"] == pytest.approx(chrfpp, abs=1e-9)
        rl = np.mean([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs, strict=True)])
        assert corpus["rougeL"] == pytest.approx(rl, abs=1e-12)
        sb = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs, strict=True)]
        np.testing.assert_allclose(sentence["bleu"], sb, atol=1e-9)
    for kind, n in (("correlation_systems", 5), ("correlation_sentences", 100)):
        assert result[kind]["n"] == n
        _check_correlations(result[kind], result["metrics"])
    assert [d["metrics"] for d in result["disagreements"]] == [list(p) for p in translation.PAIRS]
    assert all(d["b_over_a"] and d["a_over_b"] for d in result["disagreements"])


def test_translation_rerun_reuses_hypotheses(translation_run, monkeypatch):
    out, first = translation_run

    def no_training(*args, **kwargs):
        raise AssertionError("the saved hypotheses should have been reused")

    monkeypatch.setattr(translation, "train", no_training)
    texts = translation.build_systems(SystemsConfig(**run.SMOKE_SYSTEMS), out / "hypotheses.json")
    assert list(texts["systems"]) == first["systems"]
    with pytest.raises(AssertionError, match="reused"):  # another config does not reuse them
        translation.build_systems(SystemsConfig(**{**run.SMOKE_SYSTEMS, "seed": 1}), out / "hypotheses.json")


def test_preference_smoke_end_to_end(preference_run):
    out, result = preference_run
    assert json.loads((out / "compare.json").read_text())["methods"] == result["methods"]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["n_pairs"] == len(result["indices"]) == 20
    assert set(result["methods"]) == {"perplexity", "judge grade", "judge pairwise", "judge pairwise mean p"}
    for name, m in result["methods"].items():
        lo, hi = m["ci95"]
        assert lo <= m["accuracy"] <= hi, name
        credit = [(p + 1) / 2 for p in result["predictions"][name]]
        assert m["accuracy"] == pytest.approx(np.mean(credit))
        assert m["ties"] == sum(p == 0 for p in result["predictions"][name])
    pairwise = result["methods"]["judge pairwise"]
    assert 0 <= pairwise["flip_rate"] <= 1 and pairwise["decided"]["n"] == 20 - pairwise["ties"]
    assert result["kappa"]["perplexity"]["perplexity"] == pytest.approx(1.0)


# -- the pieces on hand-made data ---------------------------------------------------------------------------


def test_rank_correlations_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 40).astype(float)  # ties, as sentence BLEU has
    cols = {"a": x, "b": x + rng.normal(0, 2, 40), "c": -x, "flat": np.ones(40)}
    corr = rank_correlations(cols)
    for a in ("a", "b", "c"):
        for b in ("a", "b", "c"):
            assert corr["spearman"][a][b] == pytest.approx(stats.spearmanr(cols[a], cols[b])[0], abs=1e-12)
            assert corr["kendall"][a][b] == pytest.approx(stats.kendalltau(cols[a], cols[b])[0], abs=1e-12)
    assert corr["spearman"]["a"]["c"] == pytest.approx(-1.0)
    assert corr["spearman"]["a"]["flat"] is None and corr["kendall"]["flat"]["b"] is None
    sub = rank_correlations({"a": x, "b": cols["b"]}, max_kendall_points=10)
    assert sub["kendall_n"] == 10 and sub["n"] == 40, "tau on a subsample, rho on every point"
    assert sub["spearman"]["a"]["b"] == corr["spearman"]["a"]["b"]
    assert sub["kendall"]["a"]["b"] != corr["kendall"]["a"]["b"]


def test_rank_gaps_and_disagreements_by_hand():
    np.testing.assert_allclose(rank_gaps([1, 2, 3], [3, 2, 1]), [1.0, 0.0, -1.0])
    np.testing.assert_allclose(rank_gaps([0, 0, 1], [1, 2, 3]), [-0.25, 0.25, 0.0])  # ties share rank 1.5
    scores = {
        "sentence": {
            "x": {"bleu": [10.0, 60.0, 30.0], "bertscore": [0.9, 0.5, 0.6]},  # #0 a paraphrase
            "y": {"bleu": [40.0, 50.0, 80.0], "bertscore": [0.7, 0.8, 0.1]},  # y#2 high BLEU, low meaning
        }
    }
    texts = {"sources": ["s0", "s1", "s2"], "references": ["r0", "r1", "r2"]}
    texts["systems"] = {"x": ["x0", "x1", "x2"], "y": ["y0", "y1", "y2"]}
    d = disagreements(scores, texts, "bleu", "bertscore", k=1)
    (top,) = d["b_over_a"]
    assert (top["system"], top["index"], top["hypothesis"], top["reference"]) == ("x", 0, "x0", "r0")
    assert top["rank_gap"] == pytest.approx((6 - 1) / 5) and top["bleu"] == 10.0
    (bottom,) = d["a_over_b"]
    assert (bottom["system"], bottom["index"], bottom["rank_gap"]) == ("y", 2, pytest.approx(-1.0))


def _pair(i: int, chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair(i, ({"role": "user", "content": f"question {i}"},), chosen, rejected)


def test_scorer_accuracy_ties_and_plugged_in_callable():
    pairs = [
        _pair(0, "long reply", "no"),
        _pair(1, "ok", "a longer one"),
        _pair(2, "same", "size"),
        _pair(3, "yes!", "n"),
    ]
    by_length = {"length": lambda prompt, reply: float(len(reply))}  # no score_batch: called per reply
    result = compare_preferences(pairs, by_length, seed=3)
    m = result["methods"]["length"]
    assert result["predictions"]["length"] == [1, -1, 0, 1]
    assert m["accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4) and m["ties"] == 1
    assert m["ci95"] == list(bootstrap_ci([1, 0, 0.5, 1], seed=3))
    assert score_pairs(by_length["length"], pairs)[0].tolist() == [10, 2, 4, 4]
    assert accuracy([])["accuracy"] is None


def test_pairwise_judge_position_swap_by_hand():
    pairs = [_pair(i, "good " * (i + 1), "bad") for i in range(6)]

    def always_a(conversations, labels):  # a judge that always picks the first answer: every pair flips
        return np.log(np.tile([0.9, 0.1], (len(conversations), 1)))

    def prefers_good(conversations, labels):  # picks whichever answer holds "good", in either order
        p_a = [0.8 if "Answer A: good" in c[-1]["content"] else 0.2 for c in conversations]
        return np.log(np.stack([p_a, 1 - np.array(p_a)], axis=1))

    flips = compare_preferences(pairs, {}, judge=always_a)["methods"]["judge pairwise"]
    assert flips["ties"] == 6 and flips["accuracy"] == 0.5 and flips["flip_rate"] == 1.0
    assert flips["decided"]["n"] == 0 and flips["decided"]["accuracy"] is None
    soft = compare_preferences(pairs, {}, judge=always_a)["methods"]["judge pairwise mean p"]
    assert soft["ties"] == 6 and soft["accuracy"] == 0.5, "both orders average to exactly 1/2"
    good = compare_preferences(pairs, {}, judge=prefers_good)["methods"]["judge pairwise"]
    assert good["accuracy"] == 1.0 and good["ties"] == 0 and good["flip_rate"] == 0.0
    assert good["decided"]["ci95"] == [1.0, 1.0]
    # longest first, "good" chosen only at even i: predictions come back in the pairs' own order
    mixed = [_pair(i, *(("good", "bad") if i % 2 == 0 else ("bad", "good"))) for i in range(6)]
    mixed = [
        PreferencePair(p.index, p.prompt, p.chosen + "!" * (20 - 3 * i), p.rejected)
        for i, p in enumerate(mixed)
    ]
    pred = compare_preferences(mixed, {}, judge=prefers_good)["predictions"]["judge pairwise"]
    assert pred == [1, -1, 1, -1, 1, -1]
    soft = compare_preferences(mixed, {}, judge=prefers_good)["predictions"]["judge pairwise mean p"]
    assert soft == pred


def test_hh_pairs_are_the_readers_pairs_with_a_reply_on_each_side(data_file):
    data_file("hh_rlhf_harmless_base", "test.jsonl.gz")
    pairs, report = preference.load_hh_pairs()
    all_pairs, full = load_preferences()
    assert report["records"] == full.records and report["identical"] == full.identical
    assert report["kept"] + report["empty"] == full.kept and report["empty"] == full.empty_replies
    assert pairs == [p for p in all_pairs if p.chosen and p.rejected]
    subset, skipped = choose_pairs(pairs, 5, 0, lambda p: p.index % 2 == 0)
    assert len(subset) == 5 and all(p.index % 2 == 0 for p in subset) and skipped >= 0
    assert [p.index for p in subset] == sorted(p.index for p in subset)
    assert choose_pairs(pairs, 5, 0, lambda p: True) == choose_pairs(pairs, 5, 0, lambda p: True)


def test_smollm2_reply_perplexity_equals_transformers_loss(smollm2, smollm2_hf):
    """The perplexity scorer on real HH pairs: minus the mean NLL of the reply's tokens after the chat
    template, as transformers' loss on the same ids with the prompt's labels masked (rel 1e-4)."""
    model, tok = smollm2
    subset, report = select_pairs(tok, 2, seed=1, max_tokens=160)
    ids_ok = []
    for pair in subset:
        item = {"question": transcript(pair.prompt), "answer_a": pair.chosen, "answer_b": pair.rejected}
        prompt = tok.apply_chat_template(PAIRWISE_V1.messages(item), add_generation_prompt=True)
        ids_ok.append(len(tok.encode(prompt)) <= 160)
    assert all(ids_ok) and report["skipped_too_long"] > 0, "long pairs are skipped, short ones kept"
    chosen, rejected = score_pairs(PerplexityScorer(GPTBackend(model, tok)), subset)
    for pair, c, r in zip(subset, chosen, rejected, strict=True):
        for reply, ours in ((pair.chosen, c), (pair.rejected, r)):
            context = tok.apply_chat_template(list(pair.prompt), add_generation_prompt=True, tokenize=False)
            n_ctx = len(tok.encode(context))
            x = torch.tensor([tok.encode(context + reply)])
            labels = x.clone()
            labels[:, :n_ctx] = -100
            with torch.no_grad():
                loss = smollm2_hf(x, labels=labels).loss.item()
            assert -ours == pytest.approx(loss, rel=1e-4)


def test_module_entry_point_lists_every_knob():
    run_ = subprocess.run([sys.executable, "-m", "evals.compare", "--help"], capture_output=True, text=True)
    assert run_.returncode == 0, run_.stderr
    for flag in (
        "--part",
        "--smoke",
        "--n-pairs",
        "--n-sentences",
        "--budget-minutes",
        "--snapshot-fractions",
    ):
        assert flag in run_.stdout, flag


def test_bad_input_errors():
    with pytest.raises(ValueError, match="n_sentences=1"):
        SystemsConfig(n_sentences=1)
    with pytest.raises(ValueError, match="small_size='mini' is the main size"):
        SystemsConfig(size="mini", small_size="mini")
    with pytest.raises(ValueError, match="num_beams=1"):
        SystemsConfig(num_beams=1)
    with pytest.raises(ValueError, match="part='poetry'"):
        CompareConfig(part="poetry")
    with pytest.raises(ValueError, match="has 1 hypotheses for 2 references"):
        score_systems(["r0", "r1"], {"sys": ["h0"]}, None)
    with pytest.raises(ValueError, match="at least two metrics"):
        rank_correlations({"bleu": [1, 2, 3]})
    with pytest.raises(ValueError, match="same number"):
        rank_correlations({"bleu": [1, 2, 3], "chrf": [1, 2]})
    with pytest.raises(ValueError, match="metric 'bertscore' was not scored"):
        disagreements({"sentence": {"s": {"bleu": [1.0, 2.0]}}}, {}, "bleu", "bertscore")
    with pytest.raises(ValueError, match="only 0 of 1 pairs fit"):
        choose_pairs([_pair(0, "a", "b")], 2, 0, lambda p: False)
    with pytest.raises(ValueError, match="one finite float per reply"):
        score_pairs(lambda prompt, reply: float("nan"), [_pair(0, "a", "b")])
    with pytest.raises(ValueError, match="nothing to compare"):
        compare_preferences([_pair(0, "a", "b")], {})
    with pytest.raises(SystemExit):
        cli(["--part", "poetry"])
    with pytest.raises(SystemExit):
        cli(["--part", "preference", "--n-pairs", "1"])
