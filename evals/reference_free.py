"""Scores that need no reference answer: perplexity under a reference model, and self-consistency.

Teaches two ways to judge text when there is no gold answer to compare with:

- **perplexity** under a reference language model: how surprised the model is by each text, ``exp`` of
  the mean negative log-likelihood per token. With a prompt, only the continuation's tokens are scored
  (the prompt is context), so a fluent but off-topic answer is not rewarded for a likely prompt. The
  sums come from :meth:`evals.backend.GPTBackend.loglikelihood` (one right-padded forward per batch,
  tokenized as lm-eval's ``_encode_pair``); a text with no prompt is conditioned on the BOS token (EOS when
  there is none), as lm-eval's ``loglikelihood_rolling`` conditions a document's first token, so every
  token of the text is scored.
- **self-consistency**: sample ``n`` answers and look at how much they agree. The majority answer is
  Wang et al. 2023's self-consistency decoding; its share and the entropy of the answer distribution
  are a confidence signal that needs no label (low entropy, high share: the model answers the same way
  each time). Answers are compared after an extractor (for GSM8K: lm-eval's flexible-extract, then its
  normalisation), as a free-form text is rarely repeated verbatim.

References: lm-evaluation-harness ``lm_eval/api/model.py`` (``loglikelihood_rolling``) for the scoring
convention; Wang et al. 2023, "Self-Consistency Improves Chain of Thought Reasoning in Language Models".
"""

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from evals.backend import GenRequest, GPTBackend
from evals.benchmarks.gsm8k import FALLBACK, flexible_extract, normalize


@dataclass(frozen=True)
class Perplexity:
    """One text's score: ``nll`` summed over its ``n_tokens`` scored tokens (nats)."""

    nll: float
    n_tokens: int

    @property
    def mean_nll(self) -> float:
        return self.nll / self.n_tokens

    @property
    def ppl(self) -> float:
        return math.exp(self.mean_nll)


def perplexities(backend: GPTBackend, texts: list[str], prompts: list[str] | None = None) -> list[Perplexity]:
    """Per-text NLL and perplexity of ``texts`` under the backend's model; with ``prompts`` (one per text)
    each text is scored as the continuation of its prompt and only its own tokens count."""
    if not isinstance(backend, GPTBackend):
        raise TypeError(f"backend must be an evals GPTBackend, got {type(backend).__name__}")
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of str (wrap a single text in a list)")
    if not texts:
        raise ValueError("texts is empty: pass at least one text")
    if prompts is None:
        prompts = [""] * len(texts)
    elif isinstance(prompts, str) or len(prompts) != len(texts):
        raise ValueError(
            f"prompts must be a list with one prompt per text ({len(texts)}), got {prompts!r:.80}"
        )
    counts = []
    for i, (p, t) in enumerate(zip(prompts, texts, strict=True)):
        ctx, cont = backend.encode_pair(p, t)
        if not cont:
            raise ValueError(f"text {i} ({t!r:.40}) has no tokens to score; drop empty texts first")
        if len(ctx) + len(cont) - 1 > backend.max_length:
            raise ValueError(
                f"text {i}: {len(ctx) + len(cont)} tokens do not fit the model's block_size "
                f"{backend.max_length}; shorten the prompt or split the text"
            )
        counts.append(len(cont))
    lls = backend.loglikelihood(list(zip(prompts, texts, strict=True)))
    return [Perplexity(-ll, n) for (ll, _), n in zip(lls, counts, strict=True)]


def corpus_perplexity(scores: list[Perplexity]) -> float:
    """``exp`` of the token-weighted mean NLL over all texts (long texts count more, as in one stream)."""
    if not scores:
        raise ValueError("scores is empty: score at least one text")
    return math.exp(sum(s.nll for s in scores) / sum(s.n_tokens for s in scores))


# -- self-consistency ---------------------------------------------------------------------------------------


def gsm8k_answer(text: str | None) -> str | None:
    """The final number of a GSM8K-style answer as lm-eval compares it (flexible-extract, then normalised:
    ``"so $1,200."`` -> ``"1200"``), or ``None`` when the text has no number."""
    found = flexible_extract(text)
    return None if found == FALLBACK else normalize(found)


@dataclass(frozen=True)
class Consistency:
    """Agreement among ``n`` sampled answers: the ``majority`` answer (``None`` when none was valid), its
    ``share`` of the valid answers, the ``entropy`` of the answer distribution in bits (0 when all agree,
    log2(k) when k answers split evenly), and the ``counts`` of each answer."""

    majority: str | None
    share: float
    entropy: float
    n: int
    n_invalid: int
    counts: dict[str, int]


def self_consistency(answers: list[str], extract: Callable[[str], str | None] | None = None) -> Consistency:
    """Agreement among ``answers`` after ``extract`` (identity when ``None``); an extraction of ``None`` is an
    invalid answer, counted in ``n_invalid`` and left out of the vote. Ties go to the answer seen first."""
    if isinstance(answers, str) or not answers:
        raise ValueError("answers must be a non-empty list of sampled answers (str)")
    keys = [a if extract is None else extract(a) for a in answers]
    for k in keys:
        if k is not None and not isinstance(k, str):
            raise TypeError(f"the extractor must return a str or None, got {type(k).__name__} ({k!r})")
    counts = Counter(k for k in keys if k is not None)  # insertion order: most_common breaks ties by it
    n_valid = sum(counts.values())
    if n_valid == 0:
        return Consistency(None, 0.0, 0.0, len(answers), len(answers), {})
    majority, top = counts.most_common(1)[0]
    probs = [c / n_valid for c in counts.values()]
    entropy = 0.0 - sum(p * math.log2(p) for p in probs)  # 0.0 - ...: a unanimous vote is 0.0, not -0.0
    return Consistency(majority, top / n_valid, entropy, len(answers), len(answers) - n_valid, dict(counts))


def sample_answers(
    backend: GPTBackend,
    prompt: str,
    n: int,
    temperature: float = 0.7,
    seed: int = 0,
    max_gen_toks: int = 256,
    stop: tuple[str, ...] = (),
) -> list[str]:
    """``n`` sampled continuations of ``prompt``; sample ``i`` uses seed ``seed + i`` (a private generator),
    so the same call returns the same answers whatever the backend's batching."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (answers to sample), got {n!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 to sample different answers, got {temperature!r}")
    reqs = [
        GenRequest(
            prompt, stop=tuple(stop), max_gen_toks=max_gen_toks, temperature=temperature, seed=seed + i
        )
        for i in range(n)
    ]
    return backend.generate(reqs)
