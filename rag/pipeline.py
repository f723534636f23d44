"""The RAG loop: retrieve passages, put them numbered in front of a chat model, generate, read the citations.

Teaches the plumbing every retrieval-augmented system shares, on top of a :class:`~rag.documents.Retriever`
and a :class:`kvcache.LLMEngine`:

- **the prompt.** A system turn asks for a brief answer from the sources, cited as ``[1]``, ``[2]``; the
  user turn lists the sources ``[n] (chunk id) text`` in rank order, then the question. The chunk id in
  each line lets a reader trace the passage to its document.
- **the context budget.** Sources are added best first while the rendered chat prompt fits
  ``max_context_tokens`` (counted with the engine's tokenizer, chat template included); the first source
  that does not fit is cut at a word boundary to what is left (if at least ``min_source_tokens``), and the
  rest are dropped. A top-k list longer than the window therefore degrades to its best prefix.
- **citations.** ``[n]`` markers in the reply (also ``[1, 2]``) map to the chunk ids of the sources shown;
  numbers outside ``1..n_sources`` are recorded as invalid rather than trusted, repeats count once. The
  answer text is the reply with the markers removed, ready for exact match.
- **closed book.** With ``retriever=None`` the same system prompt minus its sources sentence, and the bare
  question: the no-retrieval baseline uses exactly the same generation path.

References: Lewis et al. 2020, "Retrieval-Augmented Generation for Knowledge-Intensive NLP Tasks" (retrieve
then read); Gao et al. 2023, "Enabling Large Language Models to Generate Text with Citations" (ALCE: numbered
passages, ``[n]`` citations); the SmolLM2 chat template (system/user/assistant turns).
"""

import re
import time
from dataclasses import dataclass

from kvcache.engine import LLMEngine
from kvcache.request import SamplingParams
from rag.documents import Hit, Retriever

SYSTEM_RAG = (
    "Answer the question using only the numbered sources. Answer briefly, in a few words, "
    "and cite the sources you used as [1], [2]."
)
SYSTEM_CLOSED = "Answer the question briefly, in a few words."
_CITATION = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")  # [1], [1, 2]


@dataclass(frozen=True)
class Answer:
    """One generated answer. ``hits`` are what the retriever returned (best first); the first
    ``len(sources)`` of them were shown, as the texts in ``sources`` (the last one possibly cut).
    ``citations`` are the chunk ids cited; ``invalid_citations`` the cited numbers that named no source.
    ``latency_s`` is the request's time in the engine (arrival to finish, batched), ``retrieval_s`` the
    batch's retrieval time divided by the number of questions."""

    question: str
    text: str
    raw: str
    citations: tuple[str, ...]
    invalid_citations: tuple[int, ...]
    hits: tuple[Hit, ...]
    sources: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    retrieval_s: float


def parse_citations(raw: str, n_sources: int) -> tuple[str, list[int], list[int]]:
    """``(text without markers, valid source numbers in first-cited order without repeats, invalid ones)``.

    A marker is ``[n]`` or ``[n, m, ...]``; anything else in brackets (``[x]``, an unclosed ``[1``) is left
    in the text. Valid numbers are ``1..n_sources``; invalid ones are recorded once each, in order."""
    valid, invalid = [], []
    for match in _CITATION.finditer(raw):
        for n in (int(s) for s in match.group(1).split(",")):
            target = valid if 1 <= n <= n_sources else invalid
            if n not in target:
                target.append(n)
    text = _CITATION.sub(" ", raw)
    text = re.sub(r"\s+([.,;:!?])", r"\1", " ".join(text.split()))  # "dumps [1]." -> "dumps."
    return text.strip(), valid, invalid


class RAGPipeline:
    """``answer(questions)``: retrieve ``k`` hits per question, prompt with them, generate greedily."""

    def __init__(
        self,
        retriever: Retriever | None,
        engine: LLMEngine,
        k: int = 3,
        max_context_tokens: int = 1536,
        system: str | None = None,
        min_source_tokens: int = 32,
    ):
        if retriever is not None and not callable(getattr(retriever, "search", None)):
            raise TypeError(
                f"retriever must have search(queries, k) (or be None), got {type(retriever).__name__}"
            )
        if not isinstance(engine, LLMEngine) or engine.tokenizer is None:
            raise TypeError("engine must be a kvcache.LLMEngine built with tokenizer=... (a chat tokenizer)")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if not isinstance(max_context_tokens, int) or not 0 < max_context_tokens < engine.max_model_len:
            raise ValueError(
                f"max_context_tokens must be an int in (0, {engine.max_model_len}) (the model's context), "
                f"got {max_context_tokens!r}"
            )
        self.retriever, self.engine, self.k = retriever, engine, k
        self.max_context_tokens, self.min_source_tokens = max_context_tokens, min_source_tokens
        self.tokenizer = engine.tokenizer
        self.system = system if system is not None else SYSTEM_RAG if retriever is not None else SYSTEM_CLOSED

    # -- the prompt -----------------------------------------------------------------------------------

    def _messages(self, question: str, sources: list[tuple[Hit, str]]) -> list[dict]:
        user = f"Question: {question}"
        if sources:
            lines = "\n\n".join(f"[{i}] ({hit.chunk.id}) {text}" for i, (hit, text) in enumerate(sources, 1))
            user = f"Sources:\n{lines}\n\n{user}"
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def count_tokens(self, messages: list[dict]) -> int:
        """Tokens of the rendered chat prompt, generation prompt included (what the engine will prefill)."""
        return len(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))

    def _fit(self, question: str, shown: list[tuple[Hit, str]], hit: Hit) -> str | None:
        """The longest word-boundary prefix of ``hit``'s text that keeps the prompt in budget, or None."""
        text = hit.chunk.text
        if self.count_tokens(self._messages(question, [*shown, (hit, text)])) <= self.max_context_tokens:
            return text
        lo, hi = 0, len(text)  # binary search the longest prefix (in characters) that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            cut = text[:mid].rsplit(None, 1)[0] if " " in text[:mid] else text[:mid]
            fits = self.count_tokens(self._messages(question, [*shown, (hit, cut + " ...")]))
            lo, hi = (mid, hi) if fits <= self.max_context_tokens else (lo, mid - 1)
        cut = text[:lo].rsplit(None, 1)[0] if " " in text[:lo] else text[:lo]
        if not cut or len(self.tokenizer.encode(cut)) < self.min_source_tokens:
            return None
        return cut + " ..."

    def build_messages(self, question: str, hits: list[Hit]) -> list[dict]:
        """The chat messages for ``question`` with as many of ``hits`` (best first) as fit the budget."""
        return self._messages(question, self._sources(question, hits))

    def _sources(self, question: str, hits: list[Hit]) -> list[tuple[Hit, str]]:
        base = self.count_tokens(self._messages(question, []))
        if base > self.max_context_tokens:
            raise ValueError(
                f"question {question!r:.60} alone is {base} tokens, over max_context_tokens="
                f"{self.max_context_tokens}; raise the budget or shorten the question"
            )
        shown: list[tuple[Hit, str]] = []
        for hit in hits:
            text = self._fit(question, shown, hit)
            if text is None:
                break
            shown.append((hit, text))
            if text != hit.chunk.text:  # cut: nothing more fits
                break
        return shown

    # -- answering ------------------------------------------------------------------------------------

    def answer(
        self, questions: list[str], max_tokens: int = 32, stop: tuple[str, ...] = (), use_tqdm: bool = False
    ) -> list[Answer]:
        """One :class:`Answer` per question, in order: one batched retrieval, one batched greedy ``chat``.
        ``stop`` strings end a reply early (e.g. ``("\n",)`` keeps a chatty model's first line); the reply
        is cut before the first one."""
        if isinstance(questions, str) or not all(isinstance(q, str) and q.strip() for q in questions):
            raise TypeError("questions must be a list of non-empty str (wrap a single question in a list)")
        if not questions:
            raise ValueError("questions is empty: ask at least one")
        if self.max_context_tokens + max_tokens > self.engine.max_model_len:
            raise ValueError(
                f"max_context_tokens {self.max_context_tokens} + max_tokens {max_tokens} exceed the model "
                f"context {self.engine.max_model_len}; lower one of them"
            )
        start = time.perf_counter()
        if self.retriever is None:
            all_hits = [[] for _ in questions]
        else:
            all_hits = self.retriever.search(list(questions), self.k)
            if len(all_hits) != len(questions):
                raise ValueError(
                    f"the retriever returned {len(all_hits)} hit lists for {len(questions)} queries"
                )
        retrieval_s = (time.perf_counter() - start) / len(questions)
        shown = [self._sources(q, hits[: self.k]) for q, hits in zip(questions, all_hits, strict=True)]
        conversations = [self._messages(q, s) for q, s in zip(questions, shown, strict=True)]
        params = SamplingParams(temperature=0, max_tokens=max_tokens, stop=tuple(stop))
        outputs = self.engine.chat(conversations, params, use_tqdm=use_tqdm)
        answers = []
        for q, hits, srcs, out in zip(questions, all_hits, shown, outputs, strict=True):
            if out.error is not None:
                raise RuntimeError(f"the engine failed on question {q!r:.60}: {out.error}")
            ids = out.token_ids
            if ids and out.finish_reason == "stop" and ids[-1] == getattr(self.tokenizer, "eos_id", None):
                ids = ids[:-1]  # the end-of-turn token is not part of the answer
            raw = self.tokenizer.decode(ids)
            for s in stop:
                raw = raw.split(s, 1)[0]
            text, valid, invalid = parse_citations(raw, len(srcs))
            answers.append(
                Answer(
                    question=q,
                    text=text,
                    raw=raw,
                    citations=tuple(srcs[n - 1][0].chunk.id for n in valid),
                    invalid_citations=tuple(invalid),
                    hits=tuple(hits[: self.k]),
                    sources=tuple(t for _, t in srcs),
                    prompt_tokens=len(out.prompt_token_ids),
                    completion_tokens=len(out.token_ids),
                    latency_s=float(out.latency_s or 0.0),
                    retrieval_s=retrieval_s,
                )
            )
        return answers
