"""What the harness asks of a model: two request kinds, defined as lm-evaluation-harness defines them.

- ``loglikelihood([(context, continuation), ...]) -> [(logprob, is_greedy), ...]``: the summed log
  probability of the continuation's tokens after the context, and whether greedy decoding would have
  produced exactly those tokens. Tokenized as lm-eval's ``_encode_pair`` does: trailing spaces of the
  context move to the continuation, the pair is encoded whole, and the continuation is the tokens after
  the context's own encoding; too long an input loses tokens on the left.
- ``generate([GenRequest, ...]) -> [text, ...]``: continue each context until a stop string, the end of
  sequence token or ``max_gen_toks``; the text is cut before the first stop string.

Two backends serve our ``gpt.GPT`` and differ only in generation: ``GPTBackend`` runs one request at a
time through ``GPT.generate`` with a contiguous KV cache (the simple loop, easy to read), ``EngineBackend``
hands every request to ``kvcache.LLMEngine`` (continuous batching, paged cache). Loglikelihoods are one
batched forward either way, right-padded (padding after a causal sequence cannot change its logits), and
project only the continuation's positions to the vocabulary.

Reference: lm-evaluation-harness ``lm_eval/api/model.py`` (``_encode_pair``, ``loglikelihood``) and
``lm_eval/models/huggingface.py`` (``_loglikelihood_tokens``, ``generate_until``).
"""

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from gpt.model import GPT
from kvcache import ContiguousKVCache, LLMEngine, SamplingParams


@dataclass(frozen=True)
class GenRequest:
    """One generation: continue ``context`` (greedy when ``temperature == 0``)."""

    context: str
    stop: tuple[str, ...] = ()
    max_gen_toks: int = 256
    temperature: float = 0.0
    seed: int | None = None  # sampling only: a private generator, so a sample does not depend on its batch


class Backend(Protocol):
    name: str

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]: ...

    def generate(self, requests: list[GenRequest]) -> list[str]: ...

    def chat_template(self, messages: list[dict]) -> str: ...


def cut_at_stop(text: str, stop) -> str:
    """``text`` before the first occurrence of any stop string (lm-eval's ``postprocess_generated_text``)."""
    for s in stop:
        if s:
            text = text.split(s)[0]
    return text


class GPTBackend:
    """Evaluate a ``gpt.GPT`` with ``tokenizer`` (``encode``/``decode``, ``eos_id``, and for chat tasks
    ``apply_chat_template``). ``batch_size`` sequences per loglikelihood forward."""

    name = "gpt.generate"

    def __init__(self, model: GPT, tokenizer, batch_size: int = 16):
        if not isinstance(model, GPT):
            raise TypeError(f"{type(self).__name__} evaluates a gpt.GPT, got {type(model).__name__}")
        for attr in ("encode", "decode"):
            if not callable(getattr(tokenizer, attr, None)):
                raise TypeError(f"tokenizer needs encode/decode, got {type(tokenizer).__name__}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.device = next(model.parameters()).device
        self.max_length = model.config.block_size
        self.eos_id = getattr(tokenizer, "eos_id", None)
        special = getattr(tokenizer, "special_tokens", {}) or {}
        self.special_ids = set(
            special.values()
        )  # dropped when decoding a generation, as HF's skip_special_tokens

    # -- tokenization -------------------------------------------------------------------------------------

    def chat_template(self, messages: list[dict]) -> str:
        apply = getattr(self.tokenizer, "apply_chat_template", None)
        if apply is None:
            raise ValueError(
                f"{type(self.tokenizer).__name__} has no chat template; use a task with chat=False"
            )
        return apply(messages, add_generation_prompt=True, tokenize=False)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) as lm-eval's ``_encode_pair`` splits them."""
        if context == "":  # condition on one prefix token (BOS, else EOS), as lm-eval does
            prefix = getattr(self.tokenizer, "bos_id", None)
            prefix = self.eos_id if prefix is None else prefix
            if prefix is None:
                raise ValueError("an empty context needs a tokenizer with bos_id or eos_id")
            cont = self.tokenizer.encode(continuation)
            return ([prefix], cont) if cont[:1] != [prefix] else (cont[:1], cont[1:])
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        ctx = self.tokenizer.encode(context)
        return ctx, whole[len(ctx) :]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t not in self.special_ids])

    # -- loglikelihood ------------------------------------------------------------------------------------

    @torch.no_grad()
    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        pairs = []
        for i, (ctx, cont) in enumerate(requests):
            ctx_ids, cont_ids = self.encode_pair(ctx, cont)
            if not cont_ids:
                raise ValueError(f"request {i}: the continuation {cont!r} encodes to no tokens")
            pairs.append((ctx_ids, cont_ids))
        # longest first (lm-eval's order): a batch's first row sets its padded length
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, res in zip(chunk, self._score([pairs[i] for i in chunk]), strict=True):
                out[i] = res
        return out  # type: ignore[return-value]

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """One right-padded forward over ``pairs``; only the continuation positions reach the vocabulary."""
        inputs = [
            (c + k)[-(self.max_length + 1) :][:-1] for c, k in pairs
        ]  # left-truncated, last token dropped
        T = max(len(x) for x in inputs)
        idx = torch.zeros(len(inputs), T, dtype=torch.long)  # (B, T), right-padded with token 0
        rows = []  # flattened (b * T + t) positions whose logits predict a continuation token
        for b, (x, (_, cont)) in enumerate(zip(inputs, pairs, strict=True)):
            idx[b, : len(x)] = torch.tensor(x)
            rows.extend(b * T + t for t in range(len(x) - len(cont), len(x)))
        logits, _ = self.model(idx.to(self.device), logits_rows=torch.tensor(rows, device=self.device))
        logprobs = F.log_softmax(logits.float(), dim=-1)  # (sum of continuation lengths, vocab)
        targets = torch.tensor([t for _, cont in pairs for t in cont], device=self.device)
        picked = logprobs.gather(1, targets[:, None])[:, 0]
        greedy = logprobs.argmax(dim=-1) == targets
        results, at = [], 0
        for _, cont in pairs:
            n = len(cont)
            results.append((float(picked[at : at + n].sum()), bool(greedy[at : at + n].all())))
            at += n
        return results

    # -- generation ---------------------------------------------------------------------------------------

    def _context_ids(self, req: GenRequest) -> list[int]:
        if req.max_gen_toks >= self.max_length:
            raise ValueError(f"max_gen_toks={req.max_gen_toks} leaves no room for a context of block_size")
        ids = self.tokenizer.encode(req.context)
        return ids[-(self.max_length - req.max_gen_toks) :]  # lm-eval truncates the context on the left

    def _finish(self, ids: list[int], stop) -> str:
        if self.eos_id is not None and self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return cut_at_stop(self.decode(ids), stop)

    @torch.no_grad()
    def generate(self, requests: list[GenRequest], chunk: int = 16) -> list[str]:
        """One request at a time through ``GPT.generate`` and a KV cache, ``chunk`` tokens per call, stopping
        once a stop string or EOS has appeared."""
        return [self._generate_one(r, chunk) for r in requests]

    def _generate_one(self, req: GenRequest, chunk: int) -> str:
        ids = self._context_ids(req)
        cache = ContiguousKVCache(self.model.config, 1, len(ids) + req.max_gen_toks, device=self.device)
        gen = None
        if req.temperature > 0 and req.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(req.seed)
        feed, new = torch.tensor([ids], device=self.device), []
        while len(new) < req.max_gen_toks:
            n = min(chunk, req.max_gen_toks - len(new))
            out = self.model.generate(
                feed, n, temperature=req.temperature, eos_id=self.eos_id, generator=gen, cache=cache
            )
            new += out[0, feed.size(1) :].tolist()
            feed = out[:, -1:]  # sampled but not yet in the cache: the next call feeds it
            text = self.decode(new)
            if (self.eos_id is not None and self.eos_id in new) or any(s and s in text for s in req.stop):
                break
        return self._finish(new[: req.max_gen_toks], req.stop)


class EngineBackend(GPTBackend):
    """``GPTBackend`` whose generations run together in ``kvcache.LLMEngine`` (continuous batching)."""

    name = "kvcache.LLMEngine"

    def __init__(
        self,
        model: GPT,
        tokenizer,
        batch_size: int = 16,
        max_num_seqs: int = 32,
        max_num_batched_tokens: int = 512,
        **engine_kwargs,
    ):
        super().__init__(model, tokenizer, batch_size)
        # Prefill in chunks of 512 tokens: the engine packs a step's prompts into one row, whose attention
        # grows with the square of its length. Eight 3-shot GSM8K prompts (~450 tokens each), 64 new
        # tokens, 2 CPU threads: 5.3 s at 512, 6.1 s at 1024, 8.1 s at 2048, 13.3 s at the default (all
        # 8192 positions), 15.6 s one at a time through GPT.generate.
        kw = {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens}
        self.engine_kwargs = {**kw, **engine_kwargs}

    @torch.no_grad()
    def generate(self, requests: list[GenRequest]) -> list[str]:
        """All requests through one engine whose KV pool holds the ``max_num_seqs`` longest at once (not a
        whole context per sequence: SmolLM2's 8192 positions x 32 sequences would be 12 GB)."""
        contexts = [self._context_ids(r) for r in requests]
        kw = dict(self.engine_kwargs)
        if "num_blocks" not in kw and "memory_budget" not in kw:
            bs = kw.get("block_size", 16)
            need = sorted(
                (-(-(len(c) + r.max_gen_toks) // bs) for c, r in zip(contexts, requests, strict=True))
            )
            kw["num_blocks"] = sum(need[-kw["max_num_seqs"] :])
        engine = LLMEngine(self.model, tokenizer=self.tokenizer, **kw)
        stop_ids = () if self.eos_id is None else (self.eos_id,)
        params = [
            SamplingParams(
                temperature=r.temperature,
                max_tokens=r.max_gen_toks,
                stop_token_ids=stop_ids,
                stop=r.stop,
                seed=r.seed if r.temperature > 0 else None,
            )
            for r in requests
        ]
        outs = engine.generate(contexts, params, use_tqdm=False)
        for r, o in zip(requests, outs, strict=True):
            if o.error:
                raise RuntimeError(f"the engine aborted a request ({o.error}); context: {r.context[:80]!r}")
        return [self._finish(o.token_ids, r.stop) for r, o in zip(requests, outs, strict=True)]
