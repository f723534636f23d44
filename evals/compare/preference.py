"""Do reference-free scores agree with people? Predicting HH-RLHF's human choices without a reference.

What it teaches: with no reference answer, a method can still be checked against human judgements. Each
HH-RLHF harmless-base record is a conversation and two final replies, one of which a person chose. Each
method predicts which:

- **perplexity** of the reply given the conversation (``evals.reference_free``): the likelier reply is
  predicted chosen. People preferred the *harmless* reply, not the likely one, so there is no reason for
  this to work well; measuring it says so with an interval;
- **the judge's single-answer grade** (``evals.judge.grade``): each reply graded 1-5 on its own; the
  higher expected grade is predicted chosen;
- **the judge's pairwise verdict** (``evals.judge.compare``): both replies in one prompt, in both orders;
  a verdict that flips with the order (or is too close) is a tie. Accuracy is reported over the decided
  pairs and over all pairs with a tie as half, beside the tie and flip rates; ``judge pairwise mean p``
  decides every pair by the order-averaged probability alone, what is left once the position bias cancels.

Any other scorer plugs in as ``scorers[name] = callable(prompt_messages, reply) -> float`` (higher:
predicted chosen), e.g. a trained reward model. Accuracy comes with a percentile bootstrap 95% interval
(``evals.metrics.bootstrap_ci``) over the pairs, and the methods' predictions are compared with each
other (Cohen's kappa, ``evals.agreement``).

The data contain offensive text (the source's content warning): results name record indices, never text.
References: Bai et al. 2022 (the HH-RLHF data); Zheng et al. 2023 (LLM judges, position swap).
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from evals.agreement import cohen_kappa
from evals.backend import GPTBackend
from evals.judge import GRADE_V1, PAIRWISE_V1, LabelScorer, compare, grade, position_consistency
from evals.metrics import bootstrap_ci
from evals.reference_free import Perplexity, perplexities
from gpt.data.hh_rlhf import ROLES, PreferencePair, load_preferences

# (prompt messages, reply) -> score, higher: predicted to be the reply people chose
Scorer = Callable[[list[dict], str], float]


def load_hh_pairs(path: str | Path | None = None) -> tuple[list[PreferencePair], dict]:
    """Every scorable pair of HH-RLHF harmless-base test (``gpt.data.hh_rlhf``, which drops identical
    replies) less those with an empty reply (nothing to score), and the counts."""
    pairs, report = load_preferences(path)
    kept = [p for p in pairs if p.chosen and p.rejected]
    counts = dict(records=report.records, kept=len(kept), identical=report.identical)
    return kept, counts | dict(empty=len(pairs) - len(kept))


def transcript(messages: Sequence[dict]) -> str:
    """The conversation as the judge reads it: ``Human: ...`` / ``Assistant: ...`` turns."""
    names = {v: k for k, v in ROLES.items()}
    return "\n".join(f"{names[m['role']]}: {m['content']}" for m in messages)


def choose_pairs(
    pairs: Sequence[PreferencePair], n: int, seed: int, fits: Callable[[PreferencePair], bool]
) -> tuple[list, int]:
    """The first ``n`` pairs of a seeded permutation that ``fits`` accepts, in file order, and how many
    were skipped on the way (too long for the model)."""
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n={n!r}: pass at least 2 pairs (an interval needs more than one)")
    chosen, skipped = [], 0
    for i in np.random.default_rng(seed).permutation(len(pairs)).tolist():
        if len(chosen) == n:
            break
        if fits(pairs[i]):
            chosen.append(pairs[i])
        else:
            skipped += 1
    if len(chosen) < n:
        raise ValueError(f"only {len(chosen)} of {len(pairs)} pairs fit the model; ask for fewer than {n}")
    return sorted(chosen, key=lambda p: p.index), skipped


def select_pairs(tokenizer, n: int, seed: int = 0, max_tokens: int = 1024, path=None) -> tuple[list, dict]:
    """The seeded subset every method scores: ``n`` HH pairs whose pairwise judge prompt (the longest
    prompt any method builds) is at most ``max_tokens`` tokens in ``tokenizer``'s chat template, and a
    report of what was read, dropped and skipped."""

    def fits(pair: PreferencePair) -> bool:
        item = {"question": transcript(pair.prompt), "answer_a": pair.chosen, "answer_b": pair.rejected}
        text = tokenizer.apply_chat_template(PAIRWISE_V1.messages(item), add_generation_prompt=True)
        return len(tokenizer.encode(text)) <= max_tokens

    pairs, report = load_hh_pairs(path)
    subset, skipped = choose_pairs(pairs, n, seed, fits)
    return subset, {**report, "skipped_too_long": skipped, "max_tokens": max_tokens, "seed": seed}


class PerplexityScorer:
    """Minus the mean NLL of the reply's own tokens given the chat-templated conversation (lower perplexity
    -> higher score).

    ``evals.reference_free.perplexities`` splits a context's trailing whitespace into the continuation, as
    lm-eval does, so the newline that opens the assistant turn would be scored with the reply; a nearly
    free token that lowers the mean of a short reply more. Its NLL (one request per distinct prompt) is
    taken back out."""

    def __init__(self, backend: GPTBackend):
        self.backend = backend

    def score_batch(self, prompts: list[list[dict]], replies: list[str]) -> list[float]:
        contexts = [self.backend.chat_template(list(p)) for p in prompts]
        full = perplexities(self.backend, replies, contexts)
        ends = sorted({c for c in contexts if c != c.rstrip()})  # contexts that end in whitespace
        heads = [c.rstrip() for c in ends]
        tails = [c[len(h) :] for c, h in zip(ends, heads, strict=True)]
        spaces = perplexities(self.backend, tails, heads) if ends else []
        opening = dict(zip(ends, spaces, strict=True))
        out = []
        for c, r, f in zip(contexts, replies, full, strict=True):
            w = opening.get(c, Perplexity(0.0, 0))
            if w.n_tokens:
                head = self.backend.encode_pair(c.rstrip(), c[len(c.rstrip()) :])[1]
                assert self.backend.encode_pair(c, r)[1][: len(head)] == head, (
                    "the reply's tokens do not start with the template's trailing whitespace"
                )
            out.append(-(f.nll - w.nll) / (f.n_tokens - w.n_tokens))
        return out

    def __call__(self, prompt: list[dict], reply: str) -> float:
        return self.score_batch([prompt], [reply])[0]


class GradeScorer:
    """The judge's expected 1-5 grade of the reply (``evals.judge.grade``, G-Eval weighting)."""

    def __init__(self, label_scorer: LabelScorer):
        self.label_scorer = label_scorer

    def score_batch(self, prompts: list[list[dict]], replies: list[str]) -> list[float]:
        items = [{"question": transcript(p), "answer": r} for p, r in zip(prompts, replies, strict=True)]
        return [g["expected"] for g in grade(self.label_scorer, items, GRADE_V1)]

    def __call__(self, prompt: list[dict], reply: str) -> float:
        return self.score_batch([prompt], [reply])[0]


def _by_length(pairs: Sequence[PreferencePair]) -> np.ndarray:
    """(n,) pair order, shortest first: a padded batch then holds texts of similar length."""
    return np.argsort(
        [len(transcript(p.prompt)) + len(p.chosen) + len(p.rejected) for p in pairs], kind="stable"
    )


def score_pairs(scorer: Scorer, pairs: Sequence[PreferencePair]) -> tuple[np.ndarray, np.ndarray]:
    """(chosen scores, rejected scores), each (n,) in ``pairs``' order; batched (by length) when the
    scorer has ``score_batch``."""
    order = _by_length(pairs)
    ordered = [pairs[j] for j in order]
    prompts = [list(p.prompt) for p in ordered] * 2
    replies = [p.chosen for p in ordered] + [p.rejected for p in ordered]
    batch = getattr(scorer, "score_batch", None)
    out = batch(prompts, replies) if batch else [scorer(p, r) for p, r in zip(prompts, replies, strict=True)]
    out = np.asarray(out, dtype=np.float64)
    if out.shape != (len(replies),) or not np.isfinite(out).all():
        raise ValueError(
            f"a scorer must return one finite float per reply; got {out.shape} for {len(replies)}"
        )
    chosen, rejected = np.empty(len(pairs)), np.empty(len(pairs))
    chosen[order], rejected[order] = out[: len(pairs)], out[len(pairs) :]
    return chosen, rejected


def accuracy(correct: Sequence[float], seed: int = 0) -> dict:
    """Mean of per-pair credit (1 right, 0.5 tie, 0 wrong) with its bootstrap 95% interval."""
    x = np.asarray(correct, dtype=np.float64)
    if x.size == 0:
        return {"accuracy": None, "ci95": None, "n": 0}
    lo, hi = bootstrap_ci(x, seed=seed)
    return {"accuracy": float(x.mean()), "ci95": [lo, hi], "n": int(x.size)}


def judge_pairwise(
    label_scorer: LabelScorer, pairs: Sequence[PreferencePair], seed: int = 0, margin: float = 0.1
) -> dict:
    """``evals.judge.compare`` on each pair, the chosen reply shown as A or B by a seeded coin (both orders
    are judged anyway); per-pair prediction +1 (chosen), -1 (rejected) or 0 (tie), and the order-averaged
    probability that the chosen reply is better."""
    chosen_first = np.random.default_rng(seed).random(len(pairs)) < 0.5
    order = _by_length(pairs)
    items = [
        {"question": transcript(p.prompt), "answer_a": a, "answer_b": b}
        for p, first in ((pairs[j], chosen_first[j]) for j in order)
        for a, b in [(p.chosen, p.rejected) if first else (p.rejected, p.chosen)]
    ]
    records = compare(label_scorer, items, PAIRWISE_V1, margin)
    winner = {"A": 1, "B": -1, "tie": 0}
    pred = np.empty(len(pairs), dtype=int)
    pred[order] = [
        winner[r["verdict"]] * (1 if chosen_first[j] else -1) for r, j in zip(records, order, strict=True)
    ]
    p_chosen = np.empty(len(pairs))  # P(the chosen reply is better), averaged over both orders
    p_chosen[order] = [
        r["p_a"] if chosen_first[j] else 1 - r["p_a"] for r, j in zip(records, order, strict=True)
    ]
    return {"prediction": pred, "p_chosen": p_chosen, "consistency": position_consistency(records)}


def compare_preferences(
    pairs: Sequence[PreferencePair],
    scorers: dict[str, Scorer],
    judge: LabelScorer | None = None,
    seed: int = 0,
    margin: float = 0.1,
) -> dict:
    """Each scorer's and the pairwise judge's accuracy at predicting the chosen reply, the methods'
    agreement (Cohen's kappa on predictions +1/0/-1), and the pairs where they disagree (by index)."""
    if not scorers and judge is None:
        raise ValueError("nothing to compare: pass scorers {name: callable} and/or a judge LabelScorer")
    methods, predictions = {}, {}
    for name, scorer in scorers.items():
        c, r = score_pairs(scorer, pairs)
        pred = np.sign(c - r).astype(int)
        predictions[name] = pred
        methods[name] = {**accuracy((pred + 1) / 2, seed), "ties": int((pred == 0).sum())}
        methods[name]["margin_mean"] = float((c - r).mean())
    if judge is not None:
        verdict = judge_pairwise(judge, pairs, seed, margin)
        pred = predictions["judge pairwise"] = verdict["prediction"]
        decided = pred[pred != 0]
        methods["judge pairwise"] = {
            **accuracy((pred + 1) / 2, seed),  # a tie counts half
            "ties": int((pred == 0).sum()),
            "decided": accuracy((decided + 1) / 2, seed),
            **{k: verdict["consistency"][k] for k in ("flip_rate", "consistency")},
        }
        # The order-averaged probability alone, flips and margin ignored: any signal under the position bias
        soft = predictions["judge pairwise mean p"] = np.sign(verdict["p_chosen"] - 0.5).astype(int)
        methods["judge pairwise mean p"] = {**accuracy((soft + 1) / 2, seed), "ties": int((soft == 0).sum())}
    names = list(predictions)
    kappa = {a: {b: _kappa(predictions[a], predictions[b]) for b in names} for a in names}
    stacked = np.stack([predictions[n] for n in names])  # (methods, pairs)
    split = np.flatnonzero((stacked != stacked[0]).any(axis=0))
    return {
        "n_pairs": len(pairs),
        "indices": [p.index for p in pairs],
        "methods": methods,
        "predictions": {n: p.tolist() for n, p in predictions.items()},
        "kappa": kappa,
        "disagreements": [
            {"index": pairs[j].index, **{n: int(predictions[n][j]) for n in names}} for j in split
        ],
    }


def _kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    k = cohen_kappa(a.tolist(), b.tolist(), labels=[-1, 0, 1])
    return float(k) if np.isfinite(k) else None
