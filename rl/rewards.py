"""Rewards for RL from verifiable rewards: functions ``(prompt, completion, example) -> float``, combined.

Teaches how a verifier becomes a training signal. Unlike the learned ``RewardModel`` of ``reward_model.py``,
these rewards are programs: **correctness** runs the task's exact checker (``tasks.py``) on the extracted
answer; **format** rewards the ``<think>...</think><answer>...</answer>`` structure (strict, as open-r1's
``format_reward``; soft, as its ``tag_count_reward``; or TRL's ``think_format_reward``) or an answer on the
chat reply's last line; the **length penalty** is DAPO's soft overlong punishment (Yu et al. 2025, section
3.4, eq. 13). :func:`combine` weighs them into one score per completion and keeps each function's column for
logging (TRL's ``rewards/<name>/mean``). A reward function that raises or returns a NaN, an infinity or a
non-number stops the step with a :class:`RewardError` naming the function, the example and the completion,
rather than a silently skipped or poisoned batch.

References: open-r1 ``src/open_r1/rewards.py``; TRL ``trl/rewards/format_rewards.py`` and
``other_rewards.py`` (``get_soft_overlong_punishment``), the references the tests compare with; DeepSeek-AI
2025, "DeepSeek-R1", section 2.2.2 (accuracy and format rewards).
"""

import math
import numbers
import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from rl.tasks import ANSWER_LABEL, FORMATS, MAX_EXPRESSION_CHARS, Example, is_correct

RewardFn = Callable[[str, str, Example], float]
TAGS = ("<think>", "</think>", "<answer>", "</answer>")
STRICT_FORMAT = re.compile(r"<think>\n?.*?\n?</think>\n?<answer>.*?</answer>", re.DOTALL)
THINK_FORMAT = re.compile(r"^<think>(?!.*<think>)(.*?)</think>.*$", re.DOTALL | re.MULTILINE)  # TRL's


class RewardError(ValueError):
    """A reward function failed on one completion: ``fn``, ``example_id`` and ``completion`` say which."""

    def __init__(self, fn: str, example_id: str, completion: str, problem: str):
        self.fn, self.example_id, self.completion = fn, example_id, completion
        super().__init__(
            f"reward {fn!r} on example {example_id!r} {problem}; completion {completion!r:.200} "
            "(fix the reward function, or drop the example)"
        )


def correctness(fmt: str = "r1") -> RewardFn:
    """1.0 when the answer extracted in ``fmt`` (``tasks.extract_answer``) passes the task's checker."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r}; choose from {FORMATS}")

    def correctness(prompt: str, completion: str, example: Example) -> float:
        return float(is_correct(example, completion, fmt))

    return correctness


def format_reward(prompt: str, completion: str, example: Example) -> float:
    """1.0 for exactly ``<think>...</think><answer>...</answer>`` (a newline allowed around the tags, trailing
    whitespace ignored) with each tag once; open-r1's ``format_reward`` regex, newlines optional."""
    single = all(completion.count(tag) == 1 for tag in TAGS)
    return float(single and STRICT_FORMAT.fullmatch(completion.rstrip()) is not None)


def soft_format_reward(prompt: str, completion: str, example: Example) -> float:
    """0.25 for each of the four tags that appears exactly once: open-r1's ``tag_count_reward`` with the
    newlines around the tags optional, partial credit while the strict format is still rare."""
    return sum(0.25 for tag in TAGS if completion.count(tag) == 1)


def think_format_reward(prompt: str, completion: str, example: Example) -> float:
    """1.0 when the completion opens with one ``<think>...</think>`` block, whatever follows: TRL's
    ``think_format_reward`` (R1-style models that answer in free text after thinking)."""
    return float(THINK_FORMAT.match(completion) is not None)


def chat_format_reward(prompt: str, completion: str, example: Example) -> float:
    """1.0 when the reply's last non-empty line is a short answer (holds a digit, at most
    ``MAX_EXPRESSION_CHARS`` characters after an ``Answer:`` label): the ``"chat"`` format's contract."""
    lines = [line for line in completion.splitlines() if line.strip()]
    if not lines:
        return 0.0
    last = ANSWER_LABEL.sub("", lines[-1].strip())
    return float(any(c.isdigit() for c in last) and len(last) <= MAX_EXPRESSION_CHARS)


def length_penalty(max_len: int, cache: int, count: Callable[[str], int] = len) -> RewardFn:
    """DAPO's soft overlong punishment (eq. 13): 0 up to ``max_len - cache``, then falling linearly to -1 at
    ``max_len``, and -1 beyond. ``count`` measures a completion (characters by default; pass
    ``lambda s: len(tokenizer.encode(s))`` for tokens, as DAPO and TRL count)."""
    if not (isinstance(max_len, int) and isinstance(cache, int) and 0 <= cache <= max_len and max_len > 0):
        raise ValueError(f"max_len={max_len!r}, cache={cache!r}; pass ints with 0 <= cache <= max_len > 0")

    def length_penalty(prompt: str, completion: str, example: Example) -> float:
        n = count(completion)
        if n <= max_len - cache:
            return 0.0
        if n <= max_len:
            return (max_len - cache - n) / cache
        return -1.0

    return length_penalty


class RewardBatch(NamedTuple):
    """Scores of N completions: the weighted ``total`` (N,) and each function's column ``per_fn[name]`` (N,),
    float64, before weighting. A tuple, so ``total, per_fn = scorer(...)`` unpacks it."""

    total: np.ndarray
    per_fn: dict[str, np.ndarray]

    def summary(self) -> dict[str, float]:
        """Mean and std of the total and of each function, under TRL's log names."""
        out = {"reward": float(self.total.mean()), "reward_std": float(self.total.std())}
        for name, col in self.per_fn.items():
            out[f"rewards/{name}/mean"] = float(col.mean())
            out[f"rewards/{name}/std"] = float(col.std())
        return out


class CombinedReward:
    """A weighted sum of named reward functions; :meth:`score` a batch (``__call__`` does the same)."""

    def __init__(self, rewards: dict[str, tuple[RewardFn, float]]):
        if not isinstance(rewards, dict) or not rewards:
            raise ValueError("rewards must be a non-empty dict {name: (fn, weight)}")
        self.fns, self.weights = {}, {}
        for name, entry in rewards.items():
            fn, weight = entry if isinstance(entry, tuple) else (entry, 1.0)
            if not callable(fn):
                raise TypeError(f"reward {name!r}: {fn!r} is not callable; pass (fn, weight)")
            if not (isinstance(weight, numbers.Real) and math.isfinite(weight)):
                raise ValueError(f"reward {name!r}: weight {weight!r} must be a finite number")
            self.fns[name], self.weights[name] = fn, float(weight)

    def score(self, prompts: list[str], completions: list[str], examples: list[Example]) -> RewardBatch:
        """Every function on every (prompt, completion, example); a RewardError on the first bad value."""
        if isinstance(completions, str) or not len(prompts) == len(completions) == len(examples):
            raise ValueError(
                f"prompts, completions and examples must be lists of one length, got {len(prompts)}, "
                f"{len(completions)} and {len(examples)}"
            )
        bad = next((ex for ex in examples if not isinstance(ex, Example)), None)
        if bad is not None:
            raise TypeError(f"examples must be rl.tasks.Example, got {type(bad).__name__}")
        per_fn = {}
        for name, fn in self.fns.items():
            col = np.empty(len(completions), dtype=np.float64)  # (N,)
            for i, (p, c, ex) in enumerate(zip(prompts, completions, examples, strict=True)):
                try:
                    value = fn(p, c, ex)
                except Exception as err:
                    raise RewardError(name, ex.id, c, f"raised {type(err).__name__}: {err}") from err
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    problem = f"returned {type(value).__name__} {value!r:.40}, not a float"
                    raise RewardError(name, ex.id, c, problem)
                if not math.isfinite(value):
                    raise RewardError(name, ex.id, c, f"returned {value!r}")
                col[i] = value
            per_fn[name] = col
        total = sum(self.weights[name] * col for name, col in per_fn.items())  # (N,)
        return RewardBatch(np.asarray(total, dtype=np.float64), per_fn)

    __call__ = score


def combine(rewards: dict[str, tuple[RewardFn, float]]) -> CombinedReward:
    """``{name: (fn, weight)}`` (a bare fn weighs 1.0) -> a :class:`CombinedReward` scoring batches."""
    return CombinedReward(rewards)
