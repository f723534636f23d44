"""LLM-as-judge: a chat model grades one answer on a 1-5 rubric, or picks the better of two answers.

Teaches how to read a judge's verdict without parsing free text, and how to keep its biases visible:

- **versioned prompts.** A ``JudgePrompt`` is frozen data (name, version, system and user templates, the
  labels it answers with); its name and version go into every result record, so a score is never compared
  with one from another prompt by accident.
- **verdicts from next-token probabilities.** The prompt is rendered with the model's chat template (the
  generation prompt opens the assistant's turn) and one forward gives the distribution over the next token;
  we read the log-probabilities of the label tokens ("1".."5", or "A"/"B") and renormalise over them. This
  is deterministic and never fails to parse; the probability mass the labels hold before renormalising
  (``mass``) says how far the model was from answering in the format at all, and the expected score
  under the renormalised probabilities is finer-grained than the argmax (G-Eval's weighting). Generating
  and parsing a reply would need a fallback for replies with no digit, common from a 135M model.
- **position swap.** A pairwise judge often prefers whichever answer comes first. Every pair is judged
  in both orders; an item whose verdict flips with the order is a tie, as is one whose order-averaged
  preference is within ``margin`` of 1/2. The share of items that flip is reported: it measures the
  position bias directly.

References: Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena" (position bias,
swapping the order, ties on disagreement); Liu et al. 2023, "G-Eval" (score = sum of score x probability).
"""

import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gpt.model import GPT

# (conversations, labels) -> (n, len(labels)) log p(label | conversation) under the model's full softmax
LabelScorer = Callable[[list[list[dict]], tuple[str, ...]], np.ndarray]


@dataclass(frozen=True)
class JudgePrompt:
    """A judge prompt as data: ``user`` is a ``str.format`` template over the item's fields; the judge
    answers with one of ``labels``, each of which must be a single token of the judge's tokenizer."""

    name: str
    version: str
    system: str
    user: str
    labels: tuple[str, ...]

    def __post_init__(self):
        for f in ("name", "version", "user"):
            if not isinstance(getattr(self, f), str) or not getattr(self, f):
                raise ValueError(f"JudgePrompt.{f} must be a non-empty str, got {getattr(self, f)!r}")
        if (
            not isinstance(self.labels, tuple)
            or len(set(self.labels)) != len(self.labels)
            or len(self.labels) < 2
        ):
            raise ValueError(f"labels must be a tuple of 2+ distinct strings, got {self.labels!r}")
        if not self.fields:
            raise ValueError(f"the user template of {self.name!r} has no {{field}}; it cannot show the item")

    @property
    def fields(self) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(self.user) if f}

    def messages(self, item: dict) -> list[dict]:
        """The chat conversation that asks about ``item`` (a dict holding every template field)."""
        missing = self.fields - set(item)
        if missing:
            raise ValueError(
                f"{self.name} v{self.version} needs fields {sorted(missing)}; got {sorted(item)}"
            )
        user = self.user.format(**{f: item[f] for f in self.fields})
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": user}]


GRADE_V1 = JudgePrompt(
    name="rubric-1to5",
    version="1",
    system="You are a strict grader of answers.",
    user=(
        "Rate how correct and helpful the answer is, from 1 (wrong or useless) to 5 (fully correct and "
        "helpful).\n\nQuestion: {question}\nAnswer: {answer}\n\nReply with one digit from 1 to 5."
    ),
    labels=("1", "2", "3", "4", "5"),
)

PAIRWISE_V1 = JudgePrompt(
    name="pairwise-ab",
    version="1",
    system="You are a strict judge comparing two answers.",
    user=(
        "Which answer to the question is more correct and helpful?\n\nQuestion: {question}\n\n"
        "Answer A: {answer_a}\n\nAnswer B: {answer_b}\n\nReply with one letter: A or B."
    ),
    labels=("A", "B"),
)


class NextTokenScorer:
    """A ``LabelScorer`` on a ``gpt.GPT``: each conversation through the tokenizer's chat template (with the
    generation prompt), ``batch_size`` prompts per right-padded forward, only the last position of each
    projected to the vocabulary."""

    def __init__(self, model: GPT, tokenizer, batch_size: int = 8):
        if not isinstance(model, GPT):
            raise TypeError(f"NextTokenScorer needs a gpt.GPT, got {type(model).__name__}")
        if not callable(getattr(tokenizer, "apply_chat_template", None)):
            raise TypeError(
                f"the judge needs a chat tokenizer (apply_chat_template), got {type(tokenizer).__name__}"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.device = next(model.parameters()).device

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        ids = self.tokenizer.encode(text)
        if not 0 < len(ids) <= self.model.config.block_size:
            raise ValueError(
                f"a judge prompt of {len(ids)} tokens does not fit block_size {self.model.config.block_size}"
            )
        return ids

    def label_ids(self, labels: tuple[str, ...]) -> list[int]:
        ids = [self.tokenizer.encode(label) for label in labels]
        for label, i in zip(labels, ids, strict=True):
            if len(i) != 1:
                raise ValueError(f"label {label!r} is {len(i)} tokens {i}; a judge label must be one token")
        return [i[0] for i in ids]

    @torch.no_grad()
    def next_token_logprobs(self, prompts: list[list[int]]) -> torch.Tensor:
        """(n, vocab) log-probabilities of the token after each prompt."""
        out = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            T = max(len(p) for p in chunk)
            idx = torch.zeros(len(chunk), T, dtype=torch.long)  # (B, T), right-padded with token 0
            for b, p in enumerate(chunk):
                idx[b, : len(p)] = torch.tensor(p)
            rows = torch.tensor([b * T + len(p) - 1 for b, p in enumerate(chunk)], device=self.device)
            logits, _ = self.model(idx.to(self.device), logits_rows=rows)  # (B, vocab)
            out.append(F.log_softmax(logits.float(), dim=-1).cpu())
        return torch.cat(out)

    def __call__(self, conversations: list[list[dict]], labels: tuple[str, ...]) -> np.ndarray:
        label_ids = self.label_ids(labels)
        logprobs = self.next_token_logprobs([self.prompt_ids(m) for m in conversations])
        return logprobs[:, label_ids].double().numpy()  # (n, len(labels))


def _label_probs(
    scorer: LabelScorer, conversations: list[list[dict]], labels
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities renormalised over ``labels`` (n, L), the mass the labels held before (n,))."""
    lp = np.asarray(scorer(conversations, labels), dtype=np.float64)
    if lp.shape != (len(conversations), len(labels)):
        raise ValueError(
            f"the scorer returned shape {lp.shape}, expected {(len(conversations), len(labels))}"
        )
    top = lp.max(axis=1, keepdims=True)
    p = np.exp(lp - top)  # stable softmax over the labels only
    return p / p.sum(axis=1, keepdims=True), np.exp(lp).sum(axis=1)


def _check_items(items, fields) -> None:
    if isinstance(items, dict) or not items:
        raise ValueError(f"items must be a non-empty list of dicts with fields {sorted(fields)}")


def grade(scorer: LabelScorer, items: list[dict], prompt: JudgePrompt = GRADE_V1) -> list[dict]:
    """Score each item on the prompt's numeric rubric: the argmax label (``score``), the ``expected``
    score under the renormalised label probabilities, the ``probs`` themselves and their ``mass``."""
    _check_items(items, prompt.fields)
    try:
        values = np.array([float(label) for label in prompt.labels])
    except ValueError:
        raise ValueError(
            f"grade needs numeric labels, {prompt.name} has {prompt.labels}; use compare"
        ) from None
    probs, mass = _label_probs(scorer, [prompt.messages(it) for it in items], prompt.labels)
    return [
        {
            "judge": prompt.name,
            "version": prompt.version,
            "score": float(values[p.argmax()]),
            "expected": float(p @ values),
            "probs": p.tolist(),
            "mass": float(m),
        }
        for p, m in zip(probs, mass, strict=True)
    ]


def _side(p_a: float) -> str:
    return "A" if p_a > 0.5 else "B" if p_a < 0.5 else "tie"


def combine_orders(p_first: float, p_swapped: float, margin: float = 0.1) -> dict:
    """Merge the two orders' probabilities that answer A is better (A shown first; A shown second).

    The verdict is a tie when the orders disagree (``flipped``) or the mean is within ``margin`` of 1/2."""
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin!r}")
    for p in (p_first, p_swapped):
        if not 0 <= p <= 1:
            raise ValueError(f"probabilities must be in [0, 1], got {p!r}")
    p_a = (p_first + p_swapped) / 2
    flipped = _side(p_first) != _side(p_swapped)
    verdict = "tie" if flipped or abs(p_a - 0.5) < margin else _side(p_a)
    return {
        "p_a_first": p_first,
        "p_a_swapped": p_swapped,
        "p_a": p_a,
        "flipped": flipped,
        "verdict": verdict,
    }


def compare(
    scorer: LabelScorer, items: list[dict], prompt: JudgePrompt = PAIRWISE_V1, margin: float = 0.1
) -> list[dict]:
    """Judge each item's ``answer_a`` against ``answer_b`` in both orders (one batch of 2n prompts); each
    record holds both orders' P(A better), their mean, whether the verdict flipped, and the final verdict
    (``"A"``, ``"B"`` or ``"tie"``, in the item's own A/B)."""
    _check_items(items, prompt.fields)
    if len(prompt.labels) != 2 or not {"answer_a", "answer_b"} <= prompt.fields:
        raise ValueError(
            f"compare needs a prompt with two labels and fields answer_a, answer_b; {prompt.name} has "
            f"labels {prompt.labels} and fields {sorted(prompt.fields)}"
        )
    swapped = [{**it, "answer_a": it["answer_b"], "answer_b": it["answer_a"]} for it in items]
    probs, _ = _label_probs(scorer, [prompt.messages(it) for it in [*items, *swapped]], prompt.labels)
    n = len(items)
    return [
        {
            "judge": prompt.name,
            "version": prompt.version,
            **combine_orders(float(probs[i, 0]), float(probs[n + i, 1]), margin),
        }
        for i in range(n)
    ]


def position_consistency(records: list[dict]) -> dict:
    """Over ``compare``'s records: the share whose verdict flipped with the order (``flip_rate``), the share
    that did not (``consistency``), and the share of each final verdict."""
    if not records:
        raise ValueError("records is empty: compare at least one pair")
    flips = np.array([r["flipped"] for r in records], dtype=np.float64)
    shares = {v: sum(r["verdict"] == v for r in records) / len(records) for v in ("A", "B", "tie")}
    return {
        "n": len(records),
        "flip_rate": float(flips.mean()),
        "consistency": float(1 - flips.mean()),
        **shares,
    }
