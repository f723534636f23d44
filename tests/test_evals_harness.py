"""evals.evaluate against lm-evaluation-harness itself, on SmolLM2-135M-Instruct.

The same two tasks run twice: through lm-eval's HF backend (``HFLM``) on the same weights, saved as a
local HF folder, with the task configs in ``tests/lm_eval_tasks/``; and through ``evals.evaluate`` on
our ``gpt.GPT`` loaded by ``quant.load_gguf``:

- multiple choice (loglikelihood): the pystdlib docstring benchmark, 0-shot: every per-choice
  loglikelihood within 1e-3 (fp32 sums over a few tokens), the same prediction on every item except near
  ties (top-2 loglikelihoods within 1e-4 in either harness: counted), and acc / acc_norm equal up to
  those ties;
- generate-until: GSM8K, 3-shot (first-n), greedy, lm-eval's strict-match and flexible-extract filters:
  identical generated text, identical per-item scores, equal aggregates.

The default tier runs a few items of each; the ``slow`` tier more. Then the harness's own guarantees:
resuming a killed run scores no item twice, a file from another task is refused, prompts are built as
lm-eval builds them.
"""

import json
from pathlib import Path

import pytest

from evals import EngineBackend, GPTBackend, TaskSpec, evaluate
from gpt.data.gsm8k import load_gsm8k

TASKS = Path(__file__).parent / "lm_eval_tasks"
TIE = 1e-4
STOP = ("Question:", "</s>", "<|im_end|>")


def write_jsonl(path: Path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hf_folder(smollm2, smollm2_file, tmp_path_factory):
    """The same weights as a local HF model folder (``gpt.to_hf``: transformers will not save a model it
    dequantized from GGUF), with the tokenizer transformers builds from the GGUF file."""
    transformers = pytest.importorskip("transformers")
    from gpt import to_hf

    folder = tmp_path_factory.mktemp("smollm2-hf")
    to_hf(smollm2[0]).save_pretrained(folder)
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_file.parent, gguf_file=smollm2_file.name)
    tok.save_pretrained(folder)
    return folder


def task_data(folder: Path, n_mc: int, n_gen: int) -> Path:
    from evals.benchmarks.pystdlib_mc import build_pystdlib_mc

    write_jsonl(folder / "pystdlib_mc.jsonl", build_pystdlib_mc(n_mc, seed=0))
    test = [
        {"id": f"test-{i}", "question": p.question, "answer": p.answer}
        for i, p in enumerate(load_gsm8k("test"))
    ]
    train = [
        {"id": f"train-{i}", "question": p.question, "answer": p.answer}
        for i, p in enumerate(load_gsm8k("train"))
    ]
    write_jsonl(folder / "gsm8k_test.jsonl", test[:n_gen])
    write_jsonl(folder / "gsm8k_train.jsonl", train[:3])
    for name in ("llmc_pystdlib_mc", "llmc_gsm8k"):
        yaml = (TASKS / f"{name}.yaml").read_text().replace("@DATA@", str(folder))
        (folder / f"{name}.yaml").write_text(yaml)
    return folder


def our_tasks(folder: Path):
    mc = TaskSpec(
        "llmc_pystdlib_mc",
        folder / "pystdlib_mc.jsonl",
        template="Module: {module}\nDocstring: {question}\nFunction:",
    )
    gen = TaskSpec(
        "llmc_gsm8k",
        folder / "gsm8k_test.jsonl",
        kind="generate_until",
        template="Question: {question}\nAnswer:",
        target="{answer}",
        metric="gsm8k",
        num_fewshot=3,
        fewshot_data=folder / "gsm8k_train.jsonl",
        stop=STOP,
        max_gen_toks=128,
    )
    return mc, gen


def run_lm_eval(hf_folder: Path, folder: Path):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(hf_folder), device="cpu", dtype="float32", batch_size=8)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=["llmc_pystdlib_mc", "llmc_gsm8k"],
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        log_samples=True,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
    )
    return out


def compare(smollm2, hf_folder, folder, n_mc, n_gen):
    model, tok = smollm2
    ref = run_lm_eval(hf_folder, task_data(folder, n_mc, n_gen))
    mc, gen = our_tasks(folder)
    ours_mc = evaluate(mc, GPTBackend(model, tok, batch_size=8), progress=False)
    ours_gen = evaluate(gen, EngineBackend(model, tok), progress=False)

    # multiple choice: per-choice loglikelihoods, predictions, aggregates
    samples = sorted(ref["samples"]["llmc_pystdlib_mc"], key=lambda s: s["doc_id"])
    assert len(samples) == n_mc == len(ours_mc.items)
    ties, worst = 0, 0.0
    for s, ours in zip(samples, ours_mc.items, strict=True):
        theirs = [r[0] for r in s["filtered_resps"]]
        worst = max(worst, max(abs(a - b) for a, b in zip(theirs, ours["lls"], strict=True)))
        gaps = [sorted(x)[-1] - sorted(x)[-2] for x in (theirs, ours["lls"])]
        if min(gaps) < TIE:
            ties += 1
            continue
        assert ours["acc"] == s["acc"] and ours["acc_norm"] == s["acc_norm"], s["doc_id"]
    assert worst < 1e-3, f"loglikelihoods differ by up to {worst}"
    for name in ("acc", "acc_norm"):
        assert abs(ours_mc.value(name) - ref["results"]["llmc_pystdlib_mc"][f"{name},none"]) <= ties / n_mc

    # generation: identical text and per-item scores under both filters
    for f in ("strict-match", "flexible-extract"):
        samples = [s for s in ref["samples"]["llmc_gsm8k"] if s["filter"] == f]
        samples.sort(key=lambda s: s["doc_id"])
        assert len(samples) == n_gen == len(ours_gen.items)
        for s, ours in zip(samples, ours_gen.items, strict=True):
            assert ours["generations"] == [s["resps"][0][0]], s["doc_id"]
            assert ours[f"exact_match,{f}"] == s["exact_match"], (s["doc_id"], f)
    res = ref["results"]["llmc_gsm8k"]
    for f in ("strict-match", "flexible-extract"):
        assert ours_gen.value(f"exact_match,{f}") == pytest.approx(res[f"exact_match,{f}"], abs=1e-12)
    return ties, worst


def test_matches_lm_eval_on_smollm2(smollm2, hf_folder, tmp_path):
    compare(smollm2, hf_folder, tmp_path, n_mc=24, n_gen=4)


@pytest.mark.slow
def test_matches_lm_eval_on_smollm2_more_items(smollm2, hf_folder, tmp_path):
    ties, worst = compare(smollm2, hf_folder, tmp_path, n_mc=200, n_gen=30)
    print(f"near ties: {ties}; worst loglikelihood diff: {worst:.2e}")


# -- the harness itself ---------------------------------------------------------------------------------


class Letters:
    """A character tokenizer for a tiny random model: ids are code points mod 97."""

    eos_id = None

    def encode(self, s):
        return [ord(c) % 97 for c in s]

    def decode(self, ids):
        return "".join(chr(32 + i % 90) for i in ids)


@pytest.fixture
def tiny(tiny_hf, one_thread):
    from gpt import from_hf

    return from_hf(tiny_hf("llama")).eval(), Letters()


def toy_task(tmp_path, **kw) -> TaskSpec:
    recs = [
        {"id": f"q{i}", "question": f"{i} plus {i}", "choices": ["a", "bb", "ccc"], "gold": i % 3}
        for i in range(10)
    ]
    return TaskSpec("toy", write_jsonl(tmp_path / "toy.jsonl", recs), template="Q: {question}\nA:", **kw)


def test_resume_scores_no_item_twice(tiny, tmp_path):
    model, tok = tiny
    task, out = toy_task(tmp_path), tmp_path / "res.jsonl"

    class Counting(GPTBackend):
        calls = 0

        def loglikelihood(self, requests):
            Counting.calls += len(requests)
            return super().loglikelihood(requests)

    full = evaluate(task, Counting(model, tok), batch_items=4, progress=False)
    evaluate(task, Counting(model, tok), out=out, batch_items=4, progress=False)
    lines = out.read_text().splitlines()
    assert len(lines) == 11  # header + 10 items
    # a kill mid-write: keep the header and 6 items, then half a line
    out.write_text("\n".join(lines[:7]) + "\n" + lines[7][:20])
    Counting.calls = 0
    resumed = evaluate(task, Counting(model, tok), out=out, batch_items=4, progress=False)
    assert Counting.calls == 4 * 3  # only the 4 missing items, 3 choices each
    assert resumed.scored_now == 4 and resumed.metrics == full.metrics
    out_lines = out.read_text().splitlines()
    assert len(out_lines) == 11 and [json.loads(x)["id"] for x in out_lines[1:]] == [
        f"q{i}" for i in range(10)
    ]
    Counting.calls = 0
    assert (
        evaluate(task, Counting(model, tok), out=out, progress=False).scored_now == 0 and Counting.calls == 0
    )


def test_a_file_from_another_task_or_model_is_refused(tiny, tmp_path):
    model, tok = tiny
    out = tmp_path / "res.jsonl"
    evaluate(toy_task(tmp_path), GPTBackend(model, tok), out=out, limit=2, progress=False)
    other = toy_task(tmp_path, num_fewshot=1)
    with pytest.raises(ValueError, match="fingerprint"):
        evaluate(other, GPTBackend(model, tok), out=out, progress=False)
    with pytest.raises(ValueError, match="model"):
        evaluate(toy_task(tmp_path), GPTBackend(model, tok), out=out, model="another", progress=False)


def test_prompts_are_built_as_lm_eval_builds_them(tmp_path):
    task = toy_task(tmp_path, num_fewshot=2, description="Sums.\n\n")
    rec = task.records()[5]
    want = "Sums.\n\nQ: 0 plus 0\nA: a\n\nQ: 1 plus 1\nA: bb\n\nQ: 5 plus 5\nA:"
    assert task.context(rec) == want
    first = task.records()[0]  # an item is never its own example
    assert task.context(first).startswith("Sums.\n\nQ: 1 plus 1\nA: bb\n\nQ: 2 plus 2")
    rnd = toy_task(tmp_path, num_fewshot=3, fewshot_sampler="random")
    assert rnd.context(rec) == rnd.context(rec) and "Q: 5 plus 5\nA: " not in rnd.context(rec)
    assert task.continuations(rec) == [" a", " bb", " ccc"]


def test_encode_pair_moves_trailing_spaces_like_lm_eval(tiny):
    model, tok = tiny
    b = GPTBackend(model, tok)
    assert b.encode_pair("Q: x\nA: ", "yes") == (tok.encode("Q: x\nA:"), tok.encode(" yes"))
    assert b.encode_pair("Q: x\nA:", " yes") == (tok.encode("Q: x\nA:"), tok.encode(" yes"))


def test_loglikelihood_batching_and_engine_generation_agree_with_one_at_a_time(tiny, tmp_path):
    model, tok = tiny
    task = toy_task(tmp_path)
    one = evaluate(task, GPTBackend(model, tok, batch_size=1), progress=False)
    many = evaluate(task, GPTBackend(model, tok, batch_size=7), progress=False)
    for a, b in zip(one.items, many.items, strict=True):
        assert a["lls"] == pytest.approx(b["lls"], abs=1e-5)
    gen = toy_task(
        tmp_path,
        kind="generate_until",
        metric="exact_match",
        target="{question}",
        stop=("z",),
        max_gen_toks=12,
    )
    plain = evaluate(gen, GPTBackend(model, tok), progress=False)
    engine = evaluate(gen, EngineBackend(model, tok, max_num_seqs=3), progress=False)
    assert [i["generations"] for i in plain.items] == [i["generations"] for i in engine.items]
    assert all("z" not in g[0] for g in [i["generations"] for i in plain.items])


def test_bad_input_is_a_clear_error(tiny, tmp_path):
    model, tok = tiny
    with pytest.raises(ValueError, match="kind must be"):
        TaskSpec("t", tmp_path / "x.jsonl", kind="essay")
    with pytest.raises(ValueError, match="repeats"):
        TaskSpec("t", tmp_path / "x.jsonl", kind="generate_until", repeats=5)
    with pytest.raises(TypeError, match="tuple of strings"):
        TaskSpec("t", tmp_path / "x.jsonl", kind="generate_until", stop="\n")
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [{"id": "a", "question": "x", "choices": ["p", "q"], "gold": 2}]
    )
    with pytest.raises(ValueError, match="'gold' must be an int in"):
        evaluate(TaskSpec("t", bad), GPTBackend(model, tok), progress=False)
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "question": "x"}, {"id": "a", "question": "y"}])
    with pytest.raises(ValueError, match="appears more than once"):
        TaskSpec("t", dup).records()
    (tmp_path / "torn.jsonl").write_text('{"id": "a"}\n{"id": \n')
    with pytest.raises(ValueError, match=r"torn\.jsonl:2: not JSON"):
        TaskSpec("t", tmp_path / "torn.jsonl").records()
    with pytest.raises(ValueError, match="names the field 'nope'"):
        TaskSpec("t", write_jsonl(tmp_path / "ok.jsonl", [{"id": "a"}]), template="{nope}").context(
            {"id": "a"}
        )


def test_a_lite_run_scores_only_the_subset_and_weights_it(tiny, tmp_path):
    from evals.lite import Subset

    model, tok = tiny
    task = toy_task(tmp_path)
    full = evaluate(task, GPTBackend(model, tok), progress=False)
    subset = Subset(items=[1, 4, 7], weights=[0.5, 0.3, 0.2], method="hand")
    lite = evaluate(task, GPTBackend(model, tok), lite=subset, progress=False)
    assert lite.lite and lite.n == 3 and [it["id"] for it in lite.items] == ["q1", "q4", "q7"]
    acc = [it["acc"] for it in full.items]
    assert lite.value("acc") == pytest.approx(0.5 * acc[1] + 0.3 * acc[4] + 0.2 * acc[7], abs=1e-12)
    with pytest.raises(ValueError, match="outside the task's 10 items"):
        evaluate(task, GPTBackend(model, tok), lite=Subset(items=[3, 12], weights=[0.5, 0.5], method="hand"))


def test_saved_results_reads_a_finished_file_and_nothing_else(tiny, tmp_path):
    from evals.harness import saved_results

    model, tok = tiny
    task, out = toy_task(tmp_path), tmp_path / "res.jsonl"
    assert saved_results(task, out, "tiny") is None  # no file yet
    evaluate(task, GPTBackend(model, tok), out=out, limit=4, model="tiny", progress=False)
    assert saved_results(task, out, "tiny") is None  # 4 of 10 items
    full = evaluate(task, GPTBackend(model, tok), out=out, model="tiny", progress=False)
    again = saved_results(task, out, "tiny")
    assert again.metrics == full.metrics and again.scored_now == 0
    with pytest.raises(ValueError, match="model"):
        saved_results(task, out, "another")
