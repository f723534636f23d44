"""Budget forcing (s1): control how long a model thinks at inference, by editing its output, not its weights.

Teaches sequential test-time scaling (Muennighoff et al. 2025, "s1: Simple test-time scaling", section 3.1).
The reply is ``<think> thinking </think> <answer> answer``; the thinking length is the knob:

- **cap**: once the thinking reaches ``max_thinking_tokens``, the end-of-thinking delimiter is appended
  for the model, which must answer now (s1 appends its "Final Answer:"); a cap that lands inside the
  model's own delimiter (``...</thi``) drops that beginning first, so the text never reads
  ``</thi</think>``;
- **extend**: when the model ends its thinking early (emits the delimiter, or its end-of-turn token),
  the delimiter is suppressed and "Wait" is appended instead, up to ``num_waits`` times, so it goes on
  thinking (and often checks itself).

Unlike plain sampling (:class:`rl.rollout.EngineSampler`), generation runs in rounds through
``kvcache.LLMEngine``: each round generates until the delimiter (a stop string) or the remaining budget,
the caller edits the text and the next round continues the grown prompt. Prefix caching makes a round
prefill only what was appended, since every full block of the previous rounds is reused. Suppression is
done by stopping and stripping, as s1's own code does with vLLM (stop tokens, then ``prompt += text +
"Wait"``), not by masking the delimiter's first token in the logits: the engine has no per-request
logits processor, and a delimiter spelled in several ordinary tokens ("</", "think", ">") would have
its first piece banned everywhere.

:func:`budget_force` returns each reply as :class:`Piece`s (the model's thinking, each inserted "Wait",
the delimiter, marked when forced, and the answer), so a notebook can show who wrote which token.
Majority voting over parallel samples is ``evals.reference_free.self_consistency``.

Reference: s1 (github.com/simplescaling/s1, README "Budget forcing" vLLM example; paper section 3.1).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from kvcache import LLMEngine, SamplingParams


@dataclass(frozen=True)
class Piece:
    """A run of reply tokens and who wrote them: ``kind`` is "start" (the opening delimiter, inserted),
    "think" (the model), "wait" (inserted), "end" (the closing delimiter: the model's own when it stops
    within its budget, inserted when ``forced``), "answer_prefix" (inserted) or "answer" (the model)."""

    kind: str
    token_ids: tuple[int, ...]
    text: str
    forced: bool = False


@dataclass(frozen=True)
class BudgetForced:
    """One prompt's reply: ``thinking_tokens`` between the delimiters (the model's and the inserted
    "Wait"s), how many ``waits`` were inserted, whether the end was ``forced`` at the cap, and
    ``truncated`` when the model's context ran out before an answer."""

    prompt_ids: tuple[int, ...]
    pieces: tuple[Piece, ...]
    thinking_tokens: int
    waits: int
    forced: bool
    truncated: bool = False

    @property
    def text(self) -> str:
        """The reply after the prompt, pieces joined."""
        return "".join(p.text for p in self.pieces)

    @property
    def answer(self) -> str:
        return "".join(p.text for p in self.pieces if p.kind == "answer")

    @property
    def token_ids(self) -> list[int]:
        return [t for p in self.pieces for t in p.token_ids]


def cut_at(tokenizer, tokens: Sequence[int], stop: str) -> list[int]:
    """``tokens`` up to where ``stop`` first starts in their text: a token holding text before and after
    that point is replaced by the encoding of its part before it. No ``stop`` in the text: unchanged."""
    cut = tokenizer.decode(list(tokens)).find(stop)
    return list(tokens) if cut < 0 else _cut(tokenizer, tokens, cut)


def cut_partial(tokenizer, tokens: Sequence[int], delimiter: str) -> list[int]:
    """``tokens`` without a trailing beginning of ``delimiter`` (``"...=10</thi"`` -> ``"...=10"``): a cap
    that lands inside the model's own end delimiter ends the thinking where the delimiter began."""
    text = tokenizer.decode(list(tokens))
    for n in range(min(len(delimiter) - 1, len(text)), 0, -1):
        if text.endswith(delimiter[:n]):
            return _cut(tokenizer, tokens, len(text) - n)
    return list(tokens)


def _cut(tokenizer, tokens: Sequence[int], cut: int) -> list[int]:
    """The tokens whose text is the first ``cut`` characters of ``tokens``' text (a straddling token
    re-encoded)."""
    text = tokenizer.decode(list(tokens))
    keep = len(tokens)
    while keep > 0 and len(tokenizer.decode(list(tokens[:keep]))) > cut:  # the cut is near the end
        keep -= 1
    rest = text[len(tokenizer.decode(list(tokens[:keep]))) : cut]
    return list(tokens[:keep]) + (tokenizer.encode(rest) if rest else [])


@dataclass
class _Reply:
    ids: list[int]  # prompt + reply so far: the next round's prompt
    prompt_len: int
    pieces: list[Piece]
    thinking: int = 0
    waits: int = 0
    forced: bool = False
    truncated: bool = False

    def add(self, kind: str, ids: list[int], tokenizer, forced: bool = False):
        self.ids += ids
        self.pieces.append(Piece(kind, tuple(ids), tokenizer.decode(ids), forced))


def budget_force(
    engine: LLMEngine,
    prompts: list,
    max_thinking_tokens: int,
    num_waits: int = 0,
    start_think: str | None = "<think>",
    end_think: str = "</think>",
    wait: str = "Wait",
    answer_prefix: str | None = "<answer>",
    answer_stop: tuple[str, ...] = ("</answer>",),
    max_answer_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    eos_id: int | None = None,
) -> list[BudgetForced]:
    """Think for at most ``max_thinking_tokens`` tokens, extended ``num_waits`` times, then answer.

    ``prompts``: chat conversations (lists of message dicts, rendered with the assistant turn open) or
    token-id lists. ``eos_id`` (default: the tokenizer's) also counts as an attempt to stop thinking, and
    ends the answer. All prompts run together in each round; a seeded round r of prompt i uses seed
    ``seed + 7919 * r + i``. Returns one :class:`BudgetForced` per prompt, in order."""
    tok = getattr(engine, "tokenizer", None)
    if tok is None:
        raise ValueError("budget forcing reads the model's text: build the engine with tokenizer=...")
    for name, n, low in (("max_thinking_tokens", max_thinking_tokens, 0), ("num_waits", num_waits, 0),
                         ("max_answer_tokens", max_answer_tokens, 1)):  # fmt: skip
        if isinstance(n, bool) or not isinstance(n, int) or n < low:
            raise ValueError(f"{name} must be an int >= {low}, got {n!r}")
    if not end_think or not wait:
        raise ValueError(f"end_think and wait must be non-empty strings, got {end_think!r} and {wait!r}")
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise TypeError("prompts must be a non-empty list of conversations or token-id lists")
    eos = getattr(tok, "eos_id", None) if eos_id is None else eos_id
    stop_ids = () if eos is None else (eos,)
    wait_ids, end_ids = tok.encode(wait), tok.encode(end_think)
    replies = []
    for i, p in enumerate(prompts):
        if isinstance(p, (list, tuple)) and p and isinstance(p[0], dict):
            try:
                ids = engine.chat_ids(p)
            except (TypeError, ValueError) as err:
                raise type(err)(f"prompt {i}: {err}") from None
        elif isinstance(p, (list, tuple)) and p and all(isinstance(t, int) for t in p):
            ids = list(p)  # the engine checks ids and lengths when the first round is queued
        else:
            raise TypeError(
                f"prompt {i} must be a conversation (list of message dicts) or token ids, got {p!r:.60}"
            )
        replies.append(_Reply(list(ids), len(ids), []))
        if start_think:
            replies[-1].add("start", tok.encode(start_think), tok)

    def params(r: int, i: int, max_tokens: int, stop: tuple[str, ...]) -> SamplingParams:
        s = None if seed is None else seed + 7919 * r + i
        return SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, max_tokens=max_tokens,
                              stop_token_ids=stop_ids, stop=stop, seed=s)  # fmt: skip

    def fits(reply: _Reply, extra: int) -> bool:
        return len(reply.ids) + extra < engine.max_model_len

    active, r = list(range(len(replies))), 0
    while active:  # thinking rounds
        for i in list(active):  # no budget left (or no room): forced end without a round
            rep = replies[i]
            if rep.thinking >= max_thinking_tokens or not fits(rep, 1):
                _end(rep, end_ids, tok, forced=True)
                active.remove(i)
        if not active:
            break
        reqs = [replies[i].ids for i in active]
        ps = [params(r, i, max_thinking_tokens - replies[i].thinking, (end_think,)) for i in active]
        outs = engine.generate(reqs, ps, use_tqdm=False)
        still = []
        for i, out in zip(active, outs, strict=True):
            rep, new = replies[i], list(out.token_ids)
            if out.finish_reason == "abort":
                raise RuntimeError(f"prompt {i}: the engine aborted the request: {out.error}")
            stopped = out.finish_reason == "stop"
            at_cap = not stopped and rep.thinking + len(new) >= max_thinking_tokens
            if stopped:  # the model tried to end its thinking: drop the delimiter or the end-of-turn token
                new = new[:-1] if eos is not None and new and new[-1] == eos else cut_at(tok, new, end_think)
            elif at_cap:
                new = cut_partial(tok, new, end_think)
            if new:
                rep.add("think", new, tok)
                rep.thinking += len(new)
            if stopped and rep.waits < num_waits and rep.thinking + len(wait_ids) < max_thinking_tokens:
                rep.add("wait", wait_ids, tok)
                rep.thinking += len(wait_ids)
                rep.waits += 1
                still.append(i)
            elif stopped:
                _end(rep, end_ids, tok, forced=False)
            elif at_cap:
                _end(rep, end_ids, tok, forced=True)
            else:  # "length" below the budget: the context is full
                rep.truncated = True
        active, r = still, r + 1

    todo = [i for i, rep in enumerate(replies) if not rep.truncated]
    for i in todo:
        if answer_prefix:
            replies[i].add("answer_prefix", tok.encode(answer_prefix), tok)
        if not fits(replies[i], 1):
            replies[i].truncated = True
    todo = [i for i in todo if not replies[i].truncated]
    if todo:
        ps = [params(r, i, max_answer_tokens, tuple(answer_stop)) for i in todo]
        outs = engine.generate([replies[i].ids for i in todo], ps, use_tqdm=False)
        for i, out in zip(todo, outs, strict=True):
            replies[i].add("answer", list(out.token_ids), tok)
    return [
        BudgetForced(
            tuple(rep.ids[: rep.prompt_len]),
            tuple(rep.pieces),
            rep.thinking,
            rep.waits,
            rep.forced,
            rep.truncated,
        )
        for rep in replies
    ]


def _end(rep: _Reply, end_ids: list[int], tok, forced: bool):
    rep.add("end", end_ids, tok, forced)
    rep.forced = forced
