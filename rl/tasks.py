"""Verifiable tasks: problems whose answers a program checks exactly, the fuel of RL from verifiable rewards.

Teaches what replaces the reward model of ``reward_model.py`` when the answer can be checked: a generator
that makes problems with known answers, and a checker that grades a model's answer exactly. Three tasks:

- **arithmetic**: ``"What is 347 + 58?"`` -> ``"405"``; graded by the final number, as
  :func:`evals.benchmarks.arithmetic.check_arithmetic` grades it;
- **countdown** (TinyZero, Pan et al. 2025; Gandhi et al. 2024, "Stream of Search"): reach a target from
  3-4 numbers with ``+ - * /``, using each given number exactly once, as TinyZero's ``countdown.py``
  requires. The generator builds a random expression over the numbers (positive integer intermediate
  results), so every problem is solvable; :func:`countdown_check` parses the answer with ``ast`` (numbers,
  the four operators and parentheses only: never ``eval``) and evaluates it in exact fractions;
- **gsm8k**: the dataset's problems, graded by lm-eval's flexible-extract (:func:`evals.reference_free.
  gsm8k_answer`) compared as numbers (:func:`gpt.data.gsm8k.exact_match`).

Held-out splits are disjoint by construction: a hash of the problem's key (its operands, or its numbers and
target) decides whether it is a ``"train"`` or a ``"test"`` problem, so the two never share one whatever the
seeds. Prompts come in two formats: ``"r1"`` asks for ``<think>...</think><answer>...</answer>`` (the
DeepSeek-R1-Zero template, Guo et al. 2025 Table 1; TinyZero), ``"chat"`` for the answer on the last line.

References: TinyZero ``verl/utils/reward_score/countdown.py``; open-r1 ``src/open_r1/rewards.py``;
DeepSeek-AI 2025, "DeepSeek-R1", section 2.2.
"""

import ast
import hashlib
import random
import re
from dataclasses import dataclass, field
from fractions import Fraction

from evals.benchmarks.arithmetic import check_arithmetic
from evals.reference_free import gsm8k_answer
from gpt.data.gsm8k import exact_match, load_gsm8k

TASKS = ("arithmetic", "countdown", "gsm8k")
FORMATS = ("r1", "chat")
SPLITS = ("train", "test")
# DeepSeek-R1-Zero's template (Guo et al. 2025, Table 1); the completion starts with "<think>"
R1_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>."
)
R1_HINT = {
    "countdown": "Put only the equation inside <answer> </answer>, e.g. <answer> (1 + 2) / 3 </answer>.",
    "number": "Put only the final number inside <answer> </answer>.",
}
CHAT_HINT = {
    "countdown": "Write the equation, and nothing else, on the last line.",
    "number": "Give the final answer as a number on the last line.",
}
MAX_EXPRESSION_CHARS = 200  # a countdown answer longer than this is wrong, and is never parsed
EXPRESSION_CHARS = re.compile(r"[\d+\-*/()\s]+")  # TinyZero's allowed characters
ANSWER_LABEL = re.compile(r"^[*#\s]*(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:=]?[*\s]*", re.I)
OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


@dataclass(frozen=True)
class Example:
    """One problem: ``prompt`` is the user turn (no format instructions), ``answer`` the canonical answer (for
    countdown, one witness expression), ``meta`` what the checker needs (``numbers``, ``target``, ...)."""

    id: str
    task: str
    prompt: str
    answer: str
    meta: dict = field(default_factory=dict, hash=False)  # hashed by the other fields

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}; choose from {TASKS}")


def split_of(key: str, test_fraction: float) -> str:
    """``"test"`` for a stable ``test_fraction`` of problem keys (by SHA-256), else ``"train"``."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return "test" if h < test_fraction else "train"


def _check_split(split, test_fraction):
    if split not in (*SPLITS, None):
        raise ValueError(f"split={split!r}; choose 'train', 'test' or None (both)")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r}; pass a fraction in (0, 1)")


def _draw(n, make, split, test_fraction, what):
    """``n`` distinct problems from ``make()`` -> (key, Example) whose key falls in ``split``."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r}; ask for a whole number of problems >= 0")
    out, seen = [], set()
    for _ in range(50 * n + 1000):
        if len(out) == n:
            break
        key, make_example = make()
        if key in seen or (split is not None and split_of(key, test_fraction) != split):
            continue
        seen.add(key)
        out.append(make_example(len(out)))
    if len(out) < n:
        raise ValueError(
            f"only {len(out)} distinct {what} problems found for n={n}; widen the ranges or lower n"
        )
    return out


def arithmetic(n, digits=(2, 3), ops="+-*", seed=0, split="train", test_fraction=0.1) -> list[Example]:
    """``n`` distinct two-operand problems ``"What is a op b?"``, each operand with ``digits[0]..digits[1]``
    digits; ``/`` is exact division (the dividend rounded down to a multiple of the divisor). ``split=None``
    ignores the held-out hash."""
    _check_split(split, test_fraction)
    lo, hi = digits
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        raise ValueError(f"digits={digits!r}; pass (min, max) digit counts with 1 <= min <= max")
    if not ops or set(ops) - set("+-*/"):
        raise ValueError(f"ops={ops!r}; pass a non-empty string of '+', '-', '*', '/'")
    rng = random.Random(seed)

    def operand():
        d = rng.randint(lo, hi)
        return rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1)

    def make():
        op, a, b = rng.choice(ops), operand(), operand()
        if op == "/":
            b = max(b, 1)
            a = b * max(1, a // b)
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // max(b, 1)}[op]
        key = f"{a}{op}{b}"

        def example(i):
            name = f"arithmetic-{split or 'all'}-{seed}-{i:05d}"
            meta = {"a": a, "b": b, "op": op, "split": split_of(key, test_fraction)}
            return Example(name, "arithmetic", f"What is {a} {op} {b}?", str(value), meta)

        return key, example

    return _draw(n, make, split, test_fraction, "arithmetic")


def countdown(
    n, n_numbers=(3, 4), num_range=(1, 99), max_target=1000, seed=0, split="train", test_fraction=0.1
) -> list[Example]:
    """``n`` distinct solvable countdown problems: ``n_numbers[0]..n_numbers[1]`` numbers from ``num_range``,
    combined in random order by random operators with positive integer intermediate results; the value is
    the target (kept in 1..``max_target``) and the expression the witness ``answer``."""
    _check_split(split, test_fraction)
    if not 2 <= n_numbers[0] <= n_numbers[1]:
        raise ValueError(f"n_numbers={n_numbers!r}; pass (min, max) with 2 <= min <= max")
    if not 1 <= num_range[0] <= num_range[1]:
        raise ValueError(f"num_range={num_range!r}; pass positive (low, high)")
    rng = random.Random(seed)

    def make():
        for _ in range(1000):
            numbers = [rng.randint(*num_range) for _ in range(rng.randint(*n_numbers))]
            pool = [(str(x), x) for x in numbers]
            while len(pool) > 1:
                (ea, a), (eb, b) = pool.pop(rng.randrange(len(pool))), pool.pop(rng.randrange(len(pool)))
                if a < b:
                    (ea, a), (eb, b) = (eb, b), (ea, a)
                choices = ["+", "*"] + (["-"] if a > b else []) + (["/"] if a % b == 0 else [])
                op = rng.choice(choices)
                value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
                pool.append((f"({ea} {op} {eb})", value))
            expr, target = pool[0]
            if 1 <= target <= max_target:
                break
        else:
            raise ValueError(f"no target in 1..{max_target} from numbers in {num_range}; raise max_target")
        expr = expr[1:-1]  # the outer parentheses
        key = f"{sorted(numbers)}->{target}"

        def example(i):
            name = f"countdown-{split or 'all'}-{seed}-{i:05d}"
            prompt = (
                f"Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
                "arithmetic operations (+, -, *, /) and each number exactly once."
            )
            meta = {"numbers": numbers, "target": target, "split": split_of(key, test_fraction)}
            return Example(name, "countdown", prompt, expr, meta)

        return key, example

    return _draw(n, make, split, test_fraction, "countdown")


def gsm8k(split="train", n=None) -> list[Example]:
    """The first ``n`` GSM8K problems of a split (the dataset's own train/test split holds out the test)."""
    return [
        Example(
            f"gsm8k-{split}-{i:04d}", "gsm8k", p.question, p.final, {"solution": p.answer, "split": split}
        )
        for i, p in enumerate(load_gsm8k(split, n))
    ]


def make_examples(task: str, n: int | None, split: str = "train", seed: int = 0, **kwargs) -> list[Example]:
    """``n`` examples of ``task`` by name (``kwargs`` go to its generator; GSM8K takes neither seed nor
    kwargs and ``n=None`` is all of a split)."""
    if task == "gsm8k":
        if kwargs:
            raise ValueError(f"gsm8k takes no generator options, got {sorted(kwargs)}")
        return gsm8k(split, n)
    if task == "arithmetic":
        return arithmetic(n, seed=seed, split=split, **kwargs)
    if task == "countdown":
        return countdown(n, seed=seed, split=split, **kwargs)
    raise ValueError(f"task={task!r}; choose from {TASKS}")


def split_examples(examples, n_test, seed=0) -> tuple[list[Example], list[Example]]:
    """(train, test): a seeded shuffle with ``n_test`` examples held out; examples with the same prompt stay
    on one side, so the two never share a problem."""
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(ex.prompt, []).append(ex)
    if not 0 <= n_test <= len(groups):
        raise ValueError(f"n_test={n_test!r}; there are {len(groups)} distinct problems")
    order = list(groups)
    random.Random(seed).shuffle(order)
    test = [ex for p in order[:n_test] for ex in groups[p]]
    train = [ex for p in order[n_test:] for ex in groups[p]]
    return train, test


# -- countdown checker --------------------------------------------------------------------------------------


def _evaluate(node, used):
    """Exact value of a parsed expression of integer literals and + - * /; literals appended to ``used``."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in OPS:
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if right == 0:
            raise ZeroDivisionError("division by zero")
        return left / right
    raise ValueError(f"{type(node).__name__} is not allowed in a countdown equation")


def countdown_value(expression: str) -> tuple[Fraction, list[int]] | None:
    """(exact value, numbers used) of an expression of integers, ``+ - * /`` and parentheses; None when it
    is anything else (names, calls, unary minus, floats), too long, or divides by zero. Never executes it."""
    if not isinstance(expression, str) or len(expression) > MAX_EXPRESSION_CHARS:
        return None
    if not EXPRESSION_CHARS.fullmatch(expression):
        return None
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        used: list[int] = []
        return _evaluate(tree.body, used), used
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, MemoryError):
        return None


def countdown_check(expression: str | None, numbers, target) -> bool:
    """Whether ``expression`` uses each of ``numbers`` exactly once (as a multiset, as TinyZero requires) and
    equals ``target`` exactly (fractions: ``7 / 2 * 2`` is 7). A trailing ``= target`` is allowed."""
    if expression is None:
        return False
    expression = re.sub(rf"=\s*{int(target)}\s*\.?\s*$", "", expression.strip())
    found = countdown_value(expression)
    if found is None:
        return False
    value, used = found
    return value == target and sorted(used) == sorted(numbers)


# -- prompts, extraction and grading ------------------------------------------------------------------------


def _hint(example, table):
    return table["countdown" if example.task == "countdown" else "number"]


def chat_messages(example: Example, fmt: str = "r1", system: bool = True) -> list[dict]:
    """Messages for ``tokenizer.apply_chat_template``: for ``"r1"`` the R1 system prompt (unless ``system`` is
    False) and the problem with the answer-tag hint; for ``"chat"`` the problem asking for the answer on the
    last line."""
    if fmt == "r1":
        head = [{"role": "system", "content": R1_SYSTEM}] if system else []
        return [*head, {"role": "user", "content": f"{example.prompt} {_hint(example, R1_HINT)}"}]
    if fmt == "chat":
        return [{"role": "user", "content": f"{example.prompt} {_hint(example, CHAT_HINT)}"}]
    raise ValueError(f"fmt={fmt!r}; choose from {FORMATS}")


def render(example: Example, fmt: str = "r1", tokenizer=None, system: bool = True) -> str:
    """The prompt text: with a ``tokenizer``, its chat template over :func:`chat_messages`; without, plain
    text (``"r1"``: R1-Zero's template ending ``"Assistant:\\n"``, its preamble dropped when ``system`` is
    False, as a tiny model's short context wants; ``"chat"``: the user turn)."""
    messages = chat_messages(example, fmt, system)
    if tokenizer is not None:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if fmt == "r1":
        return f"{R1_SYSTEM + ' ' if system else ''}User: {messages[-1]['content']}\nAssistant:\n"
    return messages[0]["content"]


def prompt_ids(example: Example, tokenizer, fmt="r1", chat_template=True, system=True) -> list[int]:
    """Token ids of the prompt: the tokenizer's chat template when ``chat_template``, else plain text."""
    if not chat_template:
        return list(tokenizer.encode(render(example, fmt, system=system)))
    messages = chat_messages(example, fmt, system)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def check_prompts(examples, tokenizer, max_prompt_tokens: int, fmt="r1", chat_template=True, system=True):
    """Prompt lengths in tokens (a list); a ValueError naming the first example whose prompt exceeds
    ``max_prompt_tokens`` (leave room for the completion in the context)."""
    lengths = []
    for ex in examples:
        n = len(prompt_ids(ex, tokenizer, fmt, chat_template, system))
        if n > max_prompt_tokens:
            raise ValueError(
                f"example {ex.id!r}: its {fmt!r} prompt is {n} tokens, over max_prompt_tokens="
                f"{max_prompt_tokens}; drop it or raise the limit (the context must also hold the completion)"
            )
        lengths.append(n)
    return lengths


def extract_answer(completion: str, fmt: str = "r1") -> str | None:
    """The model's answer: for ``"r1"`` the text inside the last ``<answer>...</answer>``; for ``"chat"`` the
    last line holding a digit (an answer label like ``"Answer:"`` removed). None when there is none."""
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a str, got {type(completion).__name__}")
    if fmt == "r1":
        end = completion.rfind("</answer>")
        start = completion.rfind("<answer>", 0, max(end, 0))
        if end < 0 or start < 0:
            return None
        return completion[start + len("<answer>") : end].strip()
    if fmt == "chat":
        for line in reversed(completion.splitlines()):
            if any(c.isdigit() for c in line):
                return ANSWER_LABEL.sub("", line.strip())
        return None
    raise ValueError(f"fmt={fmt!r}; choose from {FORMATS}")


def check(example: Example, answer: str | None) -> bool:
    """Whether an extracted ``answer`` solves ``example`` under its task's exact checker."""
    if answer is None:
        return False
    if example.task == "countdown":
        return countdown_check(answer, example.meta["numbers"], example.meta["target"])
    if example.task == "arithmetic":
        return check_arithmetic(answer, example.answer)
    return exact_match(gsm8k_answer(answer), example.answer)


def is_correct(example: Example, completion: str, fmt: str = "r1") -> bool:
    """Whether the completion's extracted answer solves the example."""
    return check(example, extract_answer(completion, fmt))
