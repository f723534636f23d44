"""rl.tasks: generators recomputed independently, held-out splits disjoint, countdown solvable (a brute-force
solver) and checked against an independent float oracle (TinyZero's rule), prompts measured with our and
Hugging Face's tokenizer, and hand-worked answers, including malformed, empty, endless and hostile ones."""

import itertools
import operator
import re
import time
from fractions import Fraction

import pytest
import transformers

from quant.gguf import read_gguf
from quant.tokenizer import tokenizer_from_gguf
from rl.tasks import (
    Example,
    arithmetic,
    chat_messages,
    check,
    check_prompts,
    countdown,
    countdown_check,
    countdown_value,
    extract_answer,
    gsm8k,
    is_correct,
    make_examples,
    prompt_ids,
    render,
    split_examples,
    split_of,
)

pytestmark = pytest.mark.usefixtures("one_thread")
PY_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}


# -- an independent oracle: the rule TinyZero's countdown reward states (the numbers used are exactly the
# given multiset; the value is within 1e-5 of the target), evaluated by Python's own float arithmetic on the
# strings this test generates (digits, operators, parentheses and spaces only, checked first)
_ARITH_ONLY = re.compile(r"[0-9+\-*/() ]+")


def reference_correct(expression: str, numbers, target) -> bool:
    if sorted(int(t) for t in re.findall(r"[0-9]+", expression)) != sorted(numbers):
        return False
    if not _ARITH_ONLY.fullmatch(expression):
        return False
    try:
        value = eval(
            compile(expression, "<test>", "eval"), {"__builtins__": {}}, {}
        )  # generated strings only
    except (ZeroDivisionError, SyntaxError):
        return False
    return abs(value - target) < 1e-5


def solvable(numbers, target):
    """Brute force: every way to combine the numbers (each exactly once) with + - * /, in exact fractions."""

    def values(items):
        if len(items) == 1:
            yield items[0]
            return
        for i, j in itertools.permutations(range(len(items)), 2):
            a, b = items[i], items[j]
            rest = [x for k, x in enumerate(items) if k not in (i, j)]
            for v in (a + b, a - b, a * b) + ((a / b,) if b != 0 else ()):
                yield from values([*rest, v])

    return any(v == target for v in values([Fraction(x) for x in numbers]))


@pytest.fixture(scope="module")
def tokenizers(smollm2_file):
    ours = tokenizer_from_gguf(read_gguf(smollm2_file).metadata)
    hf = transformers.AutoTokenizer.from_pretrained(smollm2_file.parent, gguf_file=smollm2_file.name)
    return ours, hf


def test_arithmetic_answers_recomputed_and_seeded():
    examples = arithmetic(300, digits=(2, 3), ops="+-*/", seed=3)
    for ex in examples:
        a, b, op = ex.meta["a"], ex.meta["b"], ex.meta["op"]
        assert ex.prompt == f"What is {a} {op} {b}?"
        assert 10 <= a <= 999 * 999 and 10 <= b <= 999
        assert int(ex.answer) == PY_OPS[op](a, b)
        if op == "/":
            assert a % b == 0
    assert {ex.meta["op"] for ex in examples} == set("+-*/")
    assert len({ex.prompt for ex in examples}) == 300
    assert len({ex.id for ex in examples}) == 300
    assert [e.prompt for e in arithmetic(50, seed=3)] == [e.prompt for e in arithmetic(50, seed=3)]
    assert [e.prompt for e in arithmetic(50, seed=3)] != [e.prompt for e in arithmetic(50, seed=4)]


def test_held_out_splits_are_disjoint_by_construction():
    train = arithmetic(2000, digits=(1, 2), ops="+", seed=0, split="train")
    test = arithmetic(200, digits=(1, 2), ops="+", seed=1, split="test")  # another seed: still disjoint
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    assert all(e.meta["split"] == "train" for e in train) and all(e.meta["split"] == "test" for e in test)
    c_train, c_test = countdown(500, seed=0, split="train"), countdown(100, seed=5, split="test")
    key = lambda e: (tuple(sorted(e.meta["numbers"])), e.meta["target"])  # noqa: E731
    assert not {key(e) for e in c_train} & {key(e) for e in c_test}
    both = arithmetic(3000, seed=2, split=None)
    share = sum(e.meta["split"] == "test" for e in both) / len(both)
    assert 0.08 < share < 0.12  # test_fraction 0.1 of a hash
    assert split_of("7+8", 0.1) == split_of("7+8", 0.1)


def test_small_problem_space_is_an_error_not_a_hang():
    with pytest.raises(ValueError, match="distinct arithmetic problems"):
        arithmetic(500, digits=(1, 1), ops="+", split=None)  # 100 problems exist
    with pytest.raises(ValueError, match="digits"):
        arithmetic(5, digits=(0, 2))
    with pytest.raises(ValueError, match="ops"):
        arithmetic(5, ops="+^")
    with pytest.raises(ValueError, match="split"):
        arithmetic(5, split="dev")


def test_split_examples_keeps_a_problem_on_one_side():
    examples = arithmetic(100, seed=0, split=None)
    examples = [*examples, Example("dup", "arithmetic", examples[0].prompt, examples[0].answer)]
    train, test = split_examples(examples, 20, seed=1)
    assert len({e.prompt for e in test}) == 20 and len(train) + len(test) == 101
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    assert split_examples(examples, 20, seed=1) == (train, test)
    with pytest.raises(ValueError, match="n_test"):
        split_examples(examples, 101)


def test_countdown_problems_are_solvable_and_witnessed():
    examples = countdown(150, n_numbers=(3, 4), seed=0)
    for ex in examples:
        numbers, target = ex.meta["numbers"], ex.meta["target"]
        assert 3 <= len(numbers) <= 4 and all(1 <= x <= 99 for x in numbers) and 1 <= target <= 1000
        assert countdown_check(ex.answer, numbers, target)
        assert reference_correct(ex.answer, numbers, target)
        assert str(numbers) in ex.prompt and f"equals {target}" in ex.prompt
    assert all(solvable(e.meta["numbers"], e.meta["target"]) for e in examples[:40])
    assert {len(e.meta["numbers"]) for e in examples} == {3, 4}


def test_countdown_check_agrees_with_a_float_oracle_on_random_expressions():
    import random

    rng = random.Random(0)
    agree = positives = 0
    for _ in range(3000):
        numbers = [rng.randint(1, 20) for _ in range(rng.randint(3, 4))]
        used = rng.sample(numbers, rng.randint(2, len(numbers))) + (
            [rng.randint(1, 20)] if rng.random() < 0.2 else []
        )
        expr = str(used[0])
        for x in used[1:]:
            op = rng.choice("+-*/")
            expr = f"({expr} {op} {x})" if rng.random() < 0.5 else f"{x} {op} {expr}"
        found = countdown_value(expr)
        target = int(found[0]) if found and rng.random() < 0.7 else rng.randint(1, 50)
        ours, ref = countdown_check(expr, numbers, target), reference_correct(expr, numbers, target)
        agree += ours == ref
        positives += ours
    assert agree == 3000  # exact fractions and the oracle's 1e-5 float tolerance agree on every case here
    assert positives > 300


def test_countdown_check_hand_cases(tmp_path):
    assert countdown_check("(84 / 3) + 4", [3, 4, 84], 32)
    assert countdown_check("6 / (1 - 3 / 4)", [1, 3, 4, 6], 24)  # 3/4 is a fraction on the way
    assert countdown_check("4 + 84 / 3 = 32", [3, 4, 84], 32)  # restating the target is allowed
    assert not countdown_check("7 / 2 * 3", [2, 3, 7], 10)  # 10.5, not floored to 10
    assert not countdown_check("84 / 3 + 4 + 3", [3, 4, 84], 35)  # 3 used twice
    assert not countdown_check("84 / 3 + 4", [3, 4, 84, 5], 32)  # 5 not used: exactly once each
    assert not countdown_check("84 / 3 + 4 * 1", [3, 4, 84], 32)  # 1 was not given
    assert not countdown_check("-3 + 4 + 84", [3, 4, 84], 85)  # unary minus is not an operation
    assert not countdown_check("84 / (4 - 4)", [4, 4, 84], 1)  # division by zero
    assert not countdown_check("2 ** 3 + 84", [2, 3, 84], 92)  # ** is not allowed
    assert not countdown_check("3.0 + 4 + 84", [3, 4, 84], 91)
    assert not countdown_check("", [3, 4, 84], 32) and not countdown_check(None, [3, 4, 84], 32)
    assert not countdown_check("(" * 5000, [3, 4, 84], 32)
    marker = tmp_path / "pwned"
    for attack in (
        f"__import__('os').system('touch {marker}')",
        f"(lambda: open('{marker}', 'w'))()",
        "().__class__.__bases__[0].__subclasses__()",
        "1" + "0" * 10000,
    ):
        assert not countdown_check(attack, [3, 4, 84], 32)
    assert not marker.exists()
    t0 = time.perf_counter()
    assert countdown_value("9 ** 9 ** 9 ** 9") is None  # refused before anything is computed
    assert time.perf_counter() - t0 < 0.1


def test_gsm8k_examples(data_file):
    data_file("gsm8k", "test.jsonl")
    examples = gsm8k("test", 50)
    assert len(examples) == 50 and examples[0].answer == "18"
    for ex in examples:
        assert is_correct(ex, ex.meta["solution"], "chat")  # the gold solution ends "#### N"
        assert is_correct(ex, f"<think>sum</think><answer>{ex.answer}</answer>", "r1")
    ex = examples[0]
    assert is_correct(ex, "She makes 9 * 2 = $18.00 every day.", "chat")  # numeric, not string, equality
    assert not is_correct(ex, "She makes 9 * 2 = 18 dollars... no, 19.", "chat")


def test_extract_answer_hand_cases():
    assert extract_answer("<think>5+5</think><answer> 10 </answer>", "r1") == "10"
    assert extract_answer("<answer>1</answer> then <answer>2</answer>", "r1") == "2"
    assert extract_answer("<think>a</think><answer>3", "r1") is None  # unclosed
    assert extract_answer("</answer><answer>", "r1") is None  # tags in the wrong order
    assert extract_answer("", "r1") is None and extract_answer("", "chat") is None
    assert extract_answer("<think>" + "x" * 5000, "r1") is None  # endless: no closing tag
    assert extract_answer("x" * 5000, "chat") is None
    assert extract_answer("So 3 + 4 = 7.\nAnswer: 7\n\nHope that helps!", "chat") == "7"
    assert extract_answer("**Final answer:** (3 + 5) * 7", "chat") == "(3 + 5) * 7"
    with pytest.raises(TypeError, match="str"):
        extract_answer(None, "r1")
    with pytest.raises(ValueError, match="fmt"):
        extract_answer("1", "xml")


def test_check_routes_each_task_to_its_checker():
    ex = arithmetic(1, seed=0)[0]
    assert check(ex, ex.answer) and check(ex, f"it is {ex.answer}.") and not check(ex, None)
    assert not check(ex, str(int(ex.answer) + 1))
    cd = Example("c", "countdown", "p", "3 + 4", {"numbers": [3, 4], "target": 7})
    assert is_correct(cd, "<think>t</think><answer>4 + 3</answer>")
    assert is_correct(cd, "I add them.\n4 + 3", "chat") and not is_correct(cd, "7", "chat")
    with pytest.raises(ValueError, match="task"):
        Example("x", "sudoku", "p", "a")


def test_prompts_in_both_formats(tokenizers):
    ours, hf = tokenizers
    ex = countdown(1, seed=0)[0]
    text = render(ex, "r1")
    assert text.startswith("A conversation between User and Assistant") and text.endswith("Assistant:\n")
    assert ex.prompt in text and "<answer>" in text
    assert render(ex, "chat").startswith(ex.prompt) and "last line" in render(ex, "chat")
    assert [m["role"] for m in chat_messages(ex, "r1")] == ["system", "user"]
    assert [m["role"] for m in chat_messages(ex, "chat")] == ["user"]
    chat_text = render(ex, "r1", tokenizer=ours)
    assert chat_text.startswith("<|im_start|>system\nA conversation") and chat_text.endswith("assistant\n")
    for e in countdown(3, seed=1) + arithmetic(3, seed=1):
        for fmt in ("r1", "chat"):
            assert prompt_ids(e, ours, fmt) == prompt_ids(e, hf, fmt)  # Hugging Face's template, exactly
            assert prompt_ids(e, ours, fmt, chat_template=False) == ours.encode(render(e, fmt))
    short = render(ex, "r1", system=False)  # for a tiny model's short context
    assert short == f"User: {chat_messages(ex, 'r1')[1]['content']}\nAssistant:\n"
    assert [m["role"] for m in chat_messages(ex, "r1", system=False)] == ["user"]
    assert prompt_ids(ex, ours, chat_template=False, system=False) == ours.encode(short)
    with pytest.raises(ValueError, match="fmt"):
        render(ex, "xml")


def test_make_examples_by_name(data_file):
    data_file("gsm8k", "train.jsonl")
    assert make_examples("arithmetic", 5, "test", seed=2, digits=(1, 2)) == arithmetic(
        5, digits=(1, 2), seed=2, split="test"
    )
    assert make_examples("countdown", 3, seed=1) == countdown(3, seed=1)
    assert [e.answer for e in make_examples("gsm8k", 2)] == [e.answer for e in gsm8k("train", 2)]
    with pytest.raises(ValueError, match="task"):
        make_examples("sudoku", 1)
    with pytest.raises(ValueError, match="no generator options"):
        make_examples("gsm8k", 1, digits=(1, 2))


def test_a_prompt_longer_than_the_context_is_rejected_by_name(tokenizers):
    ours, _ = tokenizers
    examples = arithmetic(3, seed=0)
    long = Example("too-long-7", "arithmetic", "What is 1 + 1? " * 200, "2")
    lengths = check_prompts(examples, ours, 512)
    assert len(lengths) == 3 and all(
        n == len(prompt_ids(e, ours)) for n, e in zip(lengths, examples, strict=True)
    )
    n = len(prompt_ids(long, ours))
    with pytest.raises(ValueError, match=rf"'too-long-7'.* {n} tokens, over max_prompt_tokens=512"):
        check_prompts([*examples, long], ours, 512)
