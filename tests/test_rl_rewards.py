"""rl.rewards: the format rewards against TRL's ``think_format_reward`` (and its documented examples), the
length penalty against TRL's ``get_soft_overlong_punishment``, GSM8K correctness against lm-eval's own
flexible-extract filter and exact-match metric, hand cases (malformed, empty and endless completions), and
the combination with its errors."""

import math
import random

import numpy as np
import pytest
from lm_eval.api.metrics import exact_match_hf_evaluate
from lm_eval.filters.extraction import RegexFilter
from trl.rewards import get_soft_overlong_punishment
from trl.rewards import think_format_reward as trl_think_format_reward

from evals.benchmarks.gsm8k import FALLBACK, FLEXIBLE_PATTERN, REGEXES_TO_IGNORE
from gpt.data.gsm8k import parse_number
from rl.rewards import (
    RewardBatch,
    RewardError,
    chat_format_reward,
    combine,
    correctness,
    format_reward,
    length_penalty,
    soft_format_reward,
    think_format_reward,
)
from rl.tasks import Example, arithmetic, countdown, gsm8k

pytestmark = pytest.mark.usefixtures("one_thread")
ENDLESS = "<think>" + "let me think again. " * 250  # 5,000+ characters, never closed
FRAGMENTS = ("<think>", "</think>", "<answer>", "</answer>", "\n", "abc", " ", "<think", "42", "</", ">")
CD = Example(
    "cd-1",
    "countdown",
    "Using the numbers [3, 4, 84] ...",
    "84 / 3 + 4",
    {"numbers": [3, 4, 84], "target": 32},
)


def r1(think, answer):
    return f"<think>\n{think}\n</think>\n<answer>{answer}</answer>"


def random_strings(n, seed=0):
    """Mutations of the r1 format: each piece dropped, doubled or swapped for a random fragment."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pieces = []
        for piece in ("<think>", "\n", "abc", "\n", "</think>", "\n", "<answer>", "42", "</answer>", "\n"):
            u = rng.random()
            if u < 0.08:
                continue
            pieces += [piece, piece] if u < 0.12 else [rng.choice(FRAGMENTS)] if u < 0.25 else [piece]
        out.append("".join(pieces))
    return out


def test_format_reward_hand_cases():
    assert format_reward("", r1("3 + 4 is 7", "7"), CD) == 1.0
    assert format_reward("", "<think>a</think><answer>7</answer>", CD) == 1.0  # newlines optional
    assert (
        format_reward("", "<think>\na\nb\n</think>\n<answer>\n7\n</answer>\n  ", CD) == 1.0
    )  # trailing space
    for bad in (
        "",
        "7",
        "<think>a</think>",  # no answer
        "<answer>7</answer>",  # no thinking
        "I think <think>a</think><answer>7</answer>",  # text before
        "<think>a</think><answer>7</answer> done",  # text after
        "<think>a</think>\n\n\n<answer>7</answer>",  # more than one newline between the blocks
        "<think>a</think><think>b</think><answer>7</answer>",  # two thinking blocks
        "<think>a</think><answer>7</answer><answer>8</answer>",
        "<answer>7</answer><think>a</think>",  # wrong order
        "<think>a<answer>7</answer></think>",  # nested
        ENDLESS,
        ENDLESS + "</think>",
    ):
        assert format_reward("", bad, CD) == 0.0, bad[:60]


def test_soft_format_and_chat_format_hand_cases():
    assert soft_format_reward("", r1("a", "7"), CD) == 1.0
    assert soft_format_reward("", "<think>a</think> 7", CD) == 0.5
    assert soft_format_reward("", "<think>a<think>b</think>", CD) == 0.25  # "<think>" twice earns nothing
    assert soft_format_reward("", "", CD) == 0.0 and soft_format_reward("", ENDLESS, CD) == 0.25
    assert chat_format_reward("", "3 + 4 = 7.\nAnswer: 7\n\n", CD) == 1.0
    assert chat_format_reward("", "Let me see.\n**Final answer:** (84 / 3) + 4", CD) == 1.0
    assert chat_format_reward("", "The answer is 7.\nHope this helps!", CD) == 0.0  # not on the last line
    assert chat_format_reward("", "", CD) == 0.0 and chat_format_reward("", " \n\n", CD) == 0.0
    assert chat_format_reward("", "1" * 5000, CD) == 0.0  # endless is not a short answer


def test_think_format_matches_trl_exactly():
    documented = [  # trl.rewards.think_format_reward's docstring example: [1.0, 0.0]
        "<think>\nThis is my reasoning.\n</think>\nThis is my answer.",
        "<think>\nThis is my reasoning.\nThis is my answer.",
    ]
    texts = [*documented, r1("a", "7"), "", ENDLESS, " <think>a</think>", *random_strings(3000)]
    ref = trl_think_format_reward([[{"content": t}] for t in texts])
    ours = [think_format_reward("", t, CD) for t in texts]
    assert ref[:2] == [1.0, 0.0]
    assert ours == ref  # exact, on every string
    assert 0.05 < sum(ours) / len(ours) < 0.95  # both outcomes occur
    strict = [format_reward("", t, CD) for t in texts]
    assert [format_reward("", t, CD) for t in documented] == [0.0, 0.0]  # no <answer> block
    assert all(r == 1.0 for s, r in zip(strict, ref, strict=True) if s == 1.0)  # strict implies TRL's
    assert sum(strict) >= 3


def test_length_penalty_matches_trl():
    for max_len, cache in ((100, 20), (100, 0), (50, 50), (7, 3)):
        lengths = list(range(0, max_len + 30))
        ref = get_soft_overlong_punishment(max_len, cache)([[0] * n for n in lengths])
        ours = [length_penalty(max_len, cache)("", "x" * n, CD) for n in lengths]
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    pen = length_penalty(100, 20)
    assert pen("", "x" * 90, CD) == -0.5  # TRL's documented example: 90 of max 100, cache 20
    assert pen("", "", CD) == 0.0 and pen("", "x" * 80, CD) == 0.0 and pen("", "x" * 5000, CD) == -1.0
    by_words = length_penalty(10, 5, count=lambda s: len(s.split()))
    assert by_words("", "a " * 8, CD) == -0.6  # 8 words: (5 - 8) / 5
    with pytest.raises(ValueError, match="cache"):
        length_penalty(10, 11)
    with pytest.raises(ValueError, match="max_len"):
        length_penalty(0, 0)


def test_correctness_hand_cases():
    acc_r1, acc_chat = correctness("r1"), correctness("chat")
    assert acc_r1("", r1("84/3 is 28", "(84 / 3) + 4"), CD) == 1.0
    assert acc_r1("", r1("", "84 / 3 + 4 = 32"), CD) == 1.0
    assert acc_r1("", r1("", "84 - 3 * 4"), CD) == 0.0  # 72
    assert acc_r1("", r1("", "84 / 3 + 4 + 4"), CD) == 0.0  # 4 reused
    assert acc_r1("", r1("", "__import__('os').system('true')"), CD) == 0.0
    assert acc_r1("", "(84 / 3) + 4", CD) == 0.0  # right, but not in the r1 format
    assert acc_chat("", "Divide, then add.\n(84 / 3) + 4", CD) == 1.0
    ex = arithmetic(1, seed=0)[0]
    assert acc_r1("", r1("", ex.answer), ex) == 1.0 and acc_chat("", f"So it is {ex.answer}.", ex) == 1.0
    assert acc_r1("", r1("", int(ex.answer) + 1), ex) == 0.0
    for junk in ("", "<answer></answer>", ENDLESS, ENDLESS + "</answer>", "<answer>" * 3000, "\x00" * 100):
        assert acc_r1("", junk, CD) == 0.0 and acc_chat("", junk, CD) == 0.0
        assert acc_r1("", junk, ex) == 0.0
    with pytest.raises(ValueError, match="fmt"):
        correctness("xml")


def test_gsm8k_correctness_against_lm_eval(data_file):
    data_file("gsm8k", "test.jsonl")
    examples = gsm8k("test", 200)
    cases = []
    for ex in examples:
        reasoning, _ = ex.meta["solution"].rsplit("#### ", 1)
        n = int(ex.answer)
        for gen in (
            ex.meta["solution"],
            f"{reasoning}The answer is {n}.",
            f"{reasoning}#### {n}.0",
            f"So she pays ${n:,}.00 in total.",
            f"{reasoning}#### {n + 1}",
            f"The answer is {n}.\n\nI hope this helps!",
            f"{n} or {n + 1}",
            "I do not know.",
            "",
        ):
            cases.append((ex, gen))
    flexible = RegexFilter(regex_pattern=FLEXIBLE_PATTERN, group_select=-1, fallback=FALLBACK)
    preds = [p[0] for p in flexible.apply([[gen] for _, gen in cases], [{}] * len(cases))]
    acc = correctness("chat")
    disagree = 0
    for (ex, gen), pred in zip(cases, preds, strict=True):
        theirs = exact_match_hf_evaluate(
            [pred], [ex.meta["solution"]], regexes_to_ignore=list(REGEXES_TO_IGNORE), ignore_case=True
        )["exact_match"]
        ours = acc("", gen, ex)
        if theirs == 1.0:
            assert ours == 1.0, gen
        elif ours == 1.0:  # lm-eval compares strings, we compare numbers: "18.0" and "$18.00" are 18
            disagree += 1
            number = parse_number(pred.replace(",", "").rstrip("."))
            assert number is not None and number == parse_number(ex.answer), (gen, pred)
    assert disagree == 2 * len(examples)  # exactly the ".0" and "$N.00" generations


def test_combine_weights_and_logs():
    examples = countdown(4, seed=0)
    completions = [r1("t", examples[0].answer), "no format " + examples[1].answer, r1("t", "1 + 1"), ENDLESS]
    scorer = combine(
        {
            "acc": (correctness("r1"), 1.0),
            "fmt": (format_reward, 0.5),
            "len": (length_penalty(1000, 200), 2.0),
        }
    )
    batch = scorer(["p"] * 4, completions, examples)
    assert isinstance(batch, RewardBatch) and batch.total.dtype == np.float64 and batch.total.shape == (4,)
    np.testing.assert_array_equal(batch.per_fn["acc"], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(batch.per_fn["fmt"], [1.0, 0.0, 1.0, 0.0])
    assert batch.per_fn["len"][3] == -1.0 and batch.per_fn["len"][:3].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(batch.total, [1.5, 0.0, 0.5, -2.0], rtol=0, atol=1e-12)
    total, per_fn = batch  # unpacks as (total, {name: column})
    assert total is batch.total and per_fn is batch.per_fn
    log = batch.summary()
    assert log["reward"] == pytest.approx(0.0) and log["reward_std"] == pytest.approx(
        np.std([1.5, 0, 0.5, -2])
    )
    assert log["rewards/fmt/mean"] == 0.5 and log["rewards/acc/std"] == pytest.approx(math.sqrt(3) / 4)
    assert combine({"fmt": format_reward}).weights == {"fmt": 1.0}  # a bare function weighs 1
    with pytest.raises(ValueError, match="one length"):
        scorer(["p"], completions, examples)
    with pytest.raises(ValueError, match="weight"):
        combine({"fmt": (format_reward, float("nan"))})
    with pytest.raises(TypeError, match="callable"):
        combine({"fmt": ("format", 1.0)})
    with pytest.raises(TypeError, match="Example"):
        scorer(["p"], ["c"], [{"id": "x"}])


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (float("nan"), "returned nan"),
        (float("inf"), "returned inf"),
        (None, "returned NoneType None, not a float"),
        ("1.0", "returned str '1.0', not a float"),
        (True, "returned bool True, not a float"),
        (np.array([1.0]), "returned ndarray"),
    ],
)
def test_a_bad_reward_value_names_function_example_and_completion(value, problem):
    examples = countdown(2, seed=0)
    scorer = combine(
        {"fmt": (format_reward, 1.0), "broken": (lambda p, c, ex: value if ex is examples[1] else 0.5, 1)}
    )
    with pytest.raises(RewardError, match=problem) as info:
        scorer(["p", "p"], ["fine", ENDLESS], examples)
    err = info.value
    assert isinstance(err, ValueError) and err.fn == "broken" and err.example_id == examples[1].id
    assert err.completion == ENDLESS
    message = str(err)
    assert "'broken'" in message and repr(examples[1].id) in message and "'<think>let me think" in message
    assert len(message) < 500  # the endless completion is truncated in the message


def test_a_raising_reward_is_reported_not_skipped():
    def crashes(prompt, completion, example):
        return 1.0 / len(completion)

    ex = arithmetic(2, seed=0)
    scorer = combine({"crashes": (crashes, 1.0)})
    assert scorer(["p", "p"], ["ab", "abcd"], ex).total.tolist() == [0.5, 0.25]
    with pytest.raises(RewardError, match=r"'crashes' on example .* raised ZeroDivisionError") as info:
        scorer(["p", "p"], ["ab", ""], ex)
    assert isinstance(info.value.__cause__, ZeroDivisionError) and info.value.example_id == ex[1].id
    np_scorer = combine({"np": (lambda p, c, e: np.float32(0.25), 1.0), "int": (lambda p, c, e: 1, 1.0)})
    assert np_scorer(["p"], ["c"], ex[:1]).total.tolist() == [1.25]  # numpy scalars and ints are numbers
