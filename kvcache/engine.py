"""``LLMEngine``: continuous batching over a paged KV cache, for ``gpt.GPT`` unchanged.

Teaches how the pieces of a serving engine fit: requests go into the :class:`kvcache.Scheduler`'s
waiting queue; each :meth:`LLMEngine.step` asks it for a batch (prefill chunks, or one decode token per
running sequence), lays the batch out as rows of segments for :class:`kvcache.PagedKVCache`, runs one
forward of the model through the ``gpt.KVCache`` protocol, samples one token for every sequence whose
context is complete (each request with its own ``torch.Generator`` when it has a seed), and retires the
finished ones, freeing their blocks for the waiting. :meth:`generate` is the offline loop over
:meth:`step` with a progress bar; ``add_request`` + ``step`` is the streaming interface.
:meth:`load_weights` swaps in new weights between batches (an RL trainer's policy after each update)
and drops the prefix cache, whose K/V the old weights computed.

The model is fed many positions but only each sequence's last one is sampled; projecting every
prefill position to the vocabulary would make that the most expensive layer, so the engine passes
``logits_rows`` and the model projects just those rows (HF's ``logits_to_keep``).

References: vLLM ``engine/llm_engine.py`` and ``entrypoints/llm.py`` (``LLM.generate``); nano-vllm
``engine/llm_engine.py``, ``engine/model_runner.py``.
"""

import itertools
import time
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from gpt import GPT
from gpt.sampling import sample_next
from kvcache.block_manager import BlockManager
from kvcache.chat import chat_template_ids, stop_at_end_of_turn
from kvcache.memory import blocks_for_budget, kv_cache_bytes
from kvcache.model_runner import ModelRunner
from kvcache.paged_cache import PagedKVCache, Segment, slots_for
from kvcache.request import Output, SamplingParams, Sequence
from kvcache.scheduler import Batch, Scheduler
from kvcache.speculative import PromptLookup
from kvcache.weights import copy_weights


class LLMEngine:
    """Serve ``model`` with a paged KV cache of ``num_blocks`` blocks (or ``memory_budget`` bytes of them).

    ``block_size``: tokens per KV block. ``max_num_seqs``: most sequences admitted at once (forked
    samples of a request with ``n > 1`` join their parent). ``max_num_batched_tokens``: prefill tokens
    per step (default: 512, or the context if shorter; longer prompts are prefilled in chunks).
    ``enable_prefix_caching``: reuse full blocks of earlier prompts with the same prefix.
    ``tokenizer``: anything with ``encode(str) -> list[int]`` and ``decode(list[int]) -> str`` (a
    tiktoken encoding, a ``bpe`` tokenizer), needed for string prompts; :meth:`chat` also needs its
    ``apply_chat_template``. ``speculative``: a :class:`kvcache.PromptLookup` to draft tokens for
    greedy requests (verified in the same forward; outputs unchanged).
    ``attention``: decode attention, "torch" (gather + SDPA), "triton" (the paged kernel over the pool in
    place) or "auto" (triton on CUDA). ``cuda_graphs``: replay captured CUDA graphs of decode steps;
    ``compile``: decode steps through ``torch.compile`` (both need the triton path; see ModelRunner).
    """

    def __init__(
        self,
        model: GPT,
        block_size: int = 16,
        num_blocks: int | None = None,
        memory_budget: int | None = None,
        max_num_seqs: int = 32,
        max_num_batched_tokens: int | None = None,
        enable_prefix_caching: bool = True,
        chunked_prefill: bool = True,
        tokenizer=None,
        speculative: PromptLookup | None = None,
        attention: str = "auto",
        cuda_graphs: bool = False,
        compile: bool = False,
    ):
        if not isinstance(model, GPT):
            raise TypeError(f"LLMEngine serves a gpt.GPT, got {type(model).__name__}")
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        param = next(model.parameters())
        self.model, self.device, self.dtype = model.eval(), param.device, param.dtype
        cfg = model.config
        self.max_model_len = cfg.block_size
        if num_blocks is not None and memory_budget is not None:
            raise ValueError("pass num_blocks or memory_budget, not both")
        if memory_budget is not None:
            num_blocks = blocks_for_budget(cfg, memory_budget, block_size, self.dtype)
        elif num_blocks is None:  # enough for max_num_seqs full-length sequences
            num_blocks = max_num_seqs * -(-self.max_model_len // block_size)
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive int, got {num_blocks!r}")
        self.block_size, self.num_blocks = block_size, num_blocks
        self.cache = PagedKVCache(cfg, num_blocks, block_size, self.dtype, self.device, attention)
        assert self.cache.nbytes == kv_cache_bytes(cfg, num_blocks * block_size, self.dtype)
        self.block_manager = BlockManager(num_blocks, block_size, enable_prefix_caching)
        # 512-token prefill chunks: long enough to keep the matmuls efficient, short enough that a long
        # prompt does not build one huge attention mask (a packed 8192-token row was 2.5x slower on CPU)
        tokens = min(self.max_model_len, 512) if max_num_batched_tokens is None else max_num_batched_tokens
        self.scheduler = Scheduler(self.block_manager, max_num_seqs, tokens, chunked_prefill)
        self.runner = ModelRunner(self.model, self.cache, max_num_seqs, cuda_graphs, compile)
        self.tokenizer = tokenizer
        if speculative is not None and not isinstance(speculative, PromptLookup):
            raise TypeError(f"speculative must be a kvcache.PromptLookup or None, got {speculative!r}")
        self.speculative = speculative
        self._ids = itertools.count()
        self._live: dict[str, list[Sequence]] = {}  # request id -> its unfinished sequences
        self.stats = {"steps": 0, "prefill_tokens": 0, "decode_tokens": 0, "slots_used": 0, "slots_held": 0}
        self.stats.update(max_running=0, draft_tokens=0, accepted_tokens=0)

    # -- requests -----------------------------------------------------------------------------------

    def _prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise TypeError(
                    "string prompts need a tokenizer: LLMEngine(model, tokenizer=...) with encode/decode "
                    "(e.g. tiktoken.get_encoding('gpt2')), or pass token ids"
                )
            prompt = self.tokenizer.encode(prompt)
        if isinstance(prompt, Tensor):
            prompt = prompt.tolist()
        if not isinstance(prompt, (list, tuple)) or not all(isinstance(t, int) for t in prompt):
            raise TypeError(f"a prompt is a str or a list of int token ids, got {type(prompt).__name__}")
        if len(prompt) == 0:
            raise ValueError("empty prompt: give at least one token")
        vocab = self.model.config.vocab_size
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        if len(prompt) >= self.max_model_len:
            raise ValueError(
                f"prompt of {len(prompt)} tokens does not fit the model context of {self.max_model_len} "
                "tokens (at least one position must be left to generate); shorten the prompt"
            )
        if self.block_manager.blocks_for(len(prompt) + 1) > self.num_blocks:
            raise ValueError(
                f"prompt of {len(prompt)} tokens needs more KV blocks than the pool's {self.num_blocks}; "
                "give the engine more memory"
            )
        return list(prompt)

    def add_request(self, prompt, params: SamplingParams | None = None, request_id: str | None = None) -> str:
        """Queue one request (str or token ids); returns its id. Bad input raises here, and nothing
        already queued is affected. This is where ids are range-checked and the prompt must leave room
        in the context; a request that reaches the context length finishes there (``"length"``), so the
        model, which does not check cached positions, never sees one past its block_size."""
        params = SamplingParams() if params is None else params
        self._check_params(params)
        if request_id is not None and str(request_id) in self._live:
            raise ValueError(f"request id {request_id!r} is already running; ids must be unique")
        return self._add(self._prompt_ids(prompt), params, request_id)

    def _check_params(self, params):
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a kvcache.SamplingParams, got {type(params).__name__}")
        if params.stop and self.tokenizer is None:
            raise ValueError(
                "stop strings need a tokenizer to read the output: LLMEngine(model, tokenizer=...)"
            )

    def _add(self, ids: list[int], params: SamplingParams, request_id: str | None) -> str:
        seq_id = next(self._ids)
        rid = str(seq_id) if request_id is None else str(request_id)
        seq = Sequence(seq_id, rid, ids, params, self._generator(params.seed, 0), forks=params.n - 1)
        self.scheduler.add(seq)
        self._live[rid] = [seq]
        return rid

    def _generator(self, seed: int | None, index: int) -> torch.Generator | None:
        """Sample ``index`` of a seeded request draws from its own stream: reproducible whatever else
        is batched with it. Sample 0 uses the seed itself, so ``n=1`` matches a plain seeded request."""
        if seed is None:
            return None
        return torch.Generator(device=self.device).manual_seed((seed + index * 0x9E3779B97F4A7C15) % 2**64)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def abort(self, request_id: str) -> bool:
        """Finish every sample of a request now (a client went away) and free its blocks. Returns False
        for an id that is unknown or already finished. No :class:`Output` is emitted for it."""
        seqs = self._live.pop(str(request_id), None)
        if not seqs:
            return False
        now = time.perf_counter()
        for seq in seqs:
            self.scheduler.abort(seq, "aborted by the caller")
            seq.finish_time = now
        return True

    def _retire(self, seq: Sequence):
        live = self._live.get(seq.request_id, [])
        if seq in live:
            live.remove(seq)
        if not live:
            self._live.pop(seq.request_id, None)

    # -- one step -----------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> list[Output]:
        """Run one scheduled forward; return an :class:`Output` for every request that got a new token
        or finished in this step."""
        propose = self._propose if self.speculative is not None else None
        batch = self.scheduler.schedule(propose)
        now = time.perf_counter()
        outputs = []
        for seq in batch.aborted:
            seq.finish_time = now
            self._retire(seq)
            outputs.append(Output.of(seq, self.tokenizer))
        if batch.kind in ("prefill", "decode") and batch.seqs:
            outputs += self._run(batch)
        self.stats["steps"] += 1
        return outputs

    def _propose(self, seq: Sequence) -> list[int]:
        """Draft tokens for a greedy sequence, never past ``max_tokens`` or the context."""
        limit = self.speculative.max_batch
        if seq.params.temperature > 0 or (limit is not None and len(self.scheduler.running) > limit):
            return []
        room = min(seq.params.max_tokens - seq.num_output_tokens, self.max_model_len - len(seq)) - 1
        return self.speculative.propose(seq.token_ids, room) if room > 0 else []

    def _run(self, batch: Batch) -> list[Output]:
        bm, bs = self.block_manager, self.block_size
        decode = batch.kind == "decode"
        self.cache.copy_blocks(batch.copies)
        segments, tokens = [], []
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.chunks, strict=True)):
            start = seq.num_computed_tokens
            table = bm.block_table(seq.seq_id)
            segments.append(Segment(slots_for(table, bs, start + n), start))
            draft = batch.drafts[i] if decode else []  # fed after the newest token, to be verified
            tokens.append(seq.token_ids[start : start + n] + draft)
        if not decode:  # one packed row: no padding in the matmuls
            rows, idx = [segments], torch.tensor([[t for ts in tokens for t in ts]], device=self.device)
        else:  # one row per sequence: its newest token (and its drafts), padded to the longest
            T = max(batch.chunks)
            rows = [[s] for s in segments]
            idx = torch.tensor([ts + [0] * (T - len(ts)) for ts in tokens], device=self.device)
        offsets = list(range(len(tokens) + 1))  # segment i owns rows offsets[i]:offsets[i + 1] of logits
        keep = None  # the runner's default: each segment's last new token
        if decode and T > 1:  # logits at every fed position of a drafted sequence, to verify its drafts
            offsets = list(itertools.accumulate(batch.chunks, initial=0))
            keep = torch.cat([torch.arange(r * T, r * T + n) for r, n in enumerate(batch.chunks)])
            keep = keep.to(self.device)
        logits = self.runner.run(rows, idx, keep)  # (rows, vocab)

        key = "prefill_tokens" if batch.kind == "prefill" else "decode_tokens"
        self.stats[key] += sum(batch.chunks)
        self.stats["max_running"] = max(self.stats["max_running"], len(self.scheduler.running))
        # memory statistics from counters the scheduler and block manager keep: O(1), not a walk over
        # every running sequence and block table
        self.stats["slots_held"] += bm.num_used_blocks * bs
        stored = self.scheduler.num_computed_running + sum(batch.chunks)
        shared = bm.num_refs - bm.num_used_blocks  # references beyond the first: shared full blocks
        self.stats["slots_used"] += stored - shared * bs  # a shared prefix block holds its tokens once

        # A sequence whose context is now complete samples one token from its last row of logits; a
        # drafted one takes the argmax of each of its rows and keeps the drafts that match them.
        ready: list[tuple[Sequence, int]] = []  # (sequence, row of logits)
        drafted: list[int] = []  # batch indices of drafted sequences
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.chunks, strict=True)):
            if decode and batch.drafts[i]:
                drafted.append(i)
                continue
            self.scheduler.advance(seq, n)
            bm.commit(seq.seq_id, seq.token_ids, seq.num_computed_tokens)
            if seq.num_computed_tokens == len(seq):
                ready.append((seq, offsets[i + 1] - 1))
                if seq.forks:  # n > 1: the other samples start here, sharing the prompt's blocks
                    ready += [(child, offsets[i + 1] - 1) for child in self._fork(seq)]
        outputs = []
        now = time.perf_counter()
        if ready:
            sampled = self._sample(logits[[r for _, r in ready]], [seq for seq, _ in ready])
            for (seq, _), tok in zip(ready, sampled, strict=True):
                self._extend(seq, [tok], now)
                outputs.append(self._settle(seq))
        for i in drafted:
            seq, draft = batch.seqs[i], batch.drafts[i]
            preds = logits[offsets[i] : offsets[i + 1]].argmax(dim=-1).tolist()  # (1 + len(draft),)
            accepted = 0
            while accepted < len(draft) and draft[accepted] == preds[accepted]:
                accepted += 1
            self.stats["draft_tokens"] += len(draft)
            self.stats["accepted_tokens"] += accepted
            old_len = len(seq)
            added = self._extend(seq, preds[: accepted + 1], now)  # accepted drafts, then the model's own
            valid = min(accepted, added)  # drafts whose K/V are now right: they are in the sequence
            self.scheduler.advance(seq, 1 + valid)
            bm.truncate(seq.seq_id, old_len + valid)  # rejected drafts give their slots back
            bm.commit(seq.seq_id, seq.token_ids, seq.num_computed_tokens)
            outputs.append(self._settle(seq))
        return outputs

    def _fork(self, parent: Sequence) -> list[Sequence]:
        """The other ``n - 1`` samples of ``parent``'s request, on its blocks (copy-on-write)."""
        children = []
        for index in range(1, parent.params.n):
            seed = parent.params.seed
            child = Sequence(
                next(self._ids), parent.request_id, parent.prompt_token_ids, parent.params,
                self._generator(seed, index), index=index, arrival_time=parent.arrival_time,
            )  # fmt: skip
            self.scheduler.fork(parent, child)
            self._live[parent.request_id].append(child)
            children.append(child)
        parent.forks = 0
        return children

    def _extend(self, seq: Sequence, new: list[int], now: float) -> int:
        """Append tokens until one finishes the sequence; returns how many were appended."""
        p = seq.params
        for k, tok in enumerate(new, start=1):
            seq.append_token(tok)
            if seq.first_token_time is None:
                seq.first_token_time = now
            if tok in p.stop_token_ids or (p.stop and self._stop_string_at_end(seq)):
                seq.finish_reason = "stop"
            elif seq.num_output_tokens >= p.max_tokens or len(seq) >= self.max_model_len:
                seq.finish_reason = "length"
            if seq.finish_reason is not None:
                seq.finish_time = now
                return k
        return len(new)

    def _settle(self, seq: Sequence) -> Output:
        """Retire a sequence that just finished; its :class:`Output` either way."""
        if seq.finish_reason is not None:
            self.scheduler.finish(seq)
            self._retire(seq)
        return Output.of(seq, self.tokenizer)

    def _stop_string_at_end(self, seq: Sequence) -> bool:
        """Does a stop string end in the newest token? Every token is at least one byte, so a stop string
        of b bytes that ends there lies within the last b tokens: only those are decoded."""
        window = max(len(s.encode("utf-8")) for s in seq.params.stop)
        tail = self.tokenizer.decode(seq.token_ids[-window:][-seq.num_output_tokens :])
        return any(s in tail for s in seq.params.stop)

    def _sample(self, logits: Tensor, seqs: list[Sequence]) -> list[int]:
        """logits (n, vocab) -> one token per sequence; greedy rows in one argmax, others row by row
        (each with its own generator)."""
        out = logits.argmax(dim=-1).tolist()
        for i, seq in enumerate(seqs):
            p = seq.params
            if p.temperature > 0:
                row = logits[i : i + 1].float()
                out[i] = int(sample_next(row, p.temperature, p.top_k, p.top_p, seq.generator)[0, 0])
        return out

    # -- offline batch --------------------------------------------------------------------------------

    def generate(
        self,
        prompts: list,
        params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = True,
    ) -> list[Output]:
        """Run every prompt to completion; outputs in the order of ``prompts`` (a request with ``n > 1``
        gives its ``n`` samples in a row, by ``index``). All prompts are checked first, so a bad one
        raises (naming its index) before any work is done."""
        if isinstance(prompts, (str, Tensor)) or not isinstance(prompts, (list, tuple)):
            raise TypeError("prompts must be a list of prompts (str or list of token ids)")
        if not isinstance(params, list):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(params)} SamplingParams for {len(prompts)} prompts")
        checked = []  # (token ids, params): every prompt tokenized and checked once, before any is queued
        for i, (p, sp) in enumerate(zip(prompts, params, strict=True)):
            try:
                prompt_ids = self._prompt_ids(p)
                if sp is not None:
                    self._check_params(sp)
                checked.append((prompt_ids, SamplingParams() if sp is None else sp))
            except (TypeError, ValueError) as err:
                raise type(err)(f"prompt {i}: {err}") from None
        ids = [(self._add(p, sp, None), sp.n) for p, sp in checked]
        done: dict[tuple[str, int], Output] = {}
        bar = None
        if use_tqdm:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(n for _, n in ids), desc="generate", unit="seq")
        while self.has_unfinished():
            for out in self.step():
                if out.finished:
                    done[out.request_id, out.index] = out
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
        return [done[rid, index] for rid, n in ids for index in range(n)]

    # -- chat -------------------------------------------------------------------------------------------

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """A conversation -> prompt ids through the tokenizer's chat template, ending with the assistant's
        turn opened (``kvcache.chat.chat_template_ids``). Checks the messages and the prompt first."""
        return self._prompt_ids(chat_template_ids(self.tokenizer, messages))

    def chat(
        self,
        conversations: list[list[dict]],
        params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = True,
    ) -> list[Output]:
        """:meth:`generate` for conversations. Each request also stops at the tokenizer's end-of-turn
        token (``eos_id``), as a chat model's generation config asks."""
        if not isinstance(conversations, (list, tuple)) or any(isinstance(c, dict) for c in conversations):
            raise TypeError("conversations must be a list of conversations (each a list of message dicts)")
        prompts = []
        for i, messages in enumerate(conversations):
            try:
                prompts.append(self.chat_ids(messages))
            except (TypeError, ValueError) as err:
                raise type(err)(f"conversation {i}: {err}") from None
        params = stop_at_end_of_turn(params, len(prompts), getattr(self.tokenizer, "eos_id", None))
        return self.generate(prompts, params, use_tqdm)

    # -- weight updates ---------------------------------------------------------------------------------

    def reset_prefix_cache(self):
        """Forget every cached prefix block: after the weights change, K/V computed with the old ones must
        never be reused. Refused while requests are unfinished (their cache holds old K/V too)."""
        self._check_idle("resetting the prefix cache")
        self.block_manager.reset_prefix_cache()

    def load_weights(self, weights: nn.Module | Mapping[str, Tensor]) -> int:
        """Serve new weights: ``kvcache.weights.copy_weights`` (checked, in place), then
        :meth:`reset_prefix_cache`; returns how many tensors were copied. The engine's own model object
        (weights shared with a trained policy) copies nothing and only resets the cache."""
        self._check_idle("loading weights")
        copied = 0 if weights is self.model else copy_weights(self.model, weights)
        self.reset_prefix_cache()
        return copied

    def _check_idle(self, what: str):
        if self.has_unfinished():
            n = len(self.scheduler.waiting) + len(self.scheduler.running)
            raise ValueError(
                f"{n} sequences are unfinished; run step() until has_unfinished() is False, or abort() "
                f"them, before {what}: their cached K/V belong to the current weights"
            )

    # -- memory accounting ------------------------------------------------------------------------------

    def kv_waste(self) -> float:
        """Fraction of held slots (blocks in use x block_size) not holding a token, averaged over steps."""
        held = self.stats["slots_held"]
        return 0.0 if held == 0 else 1.0 - self.stats["slots_used"] / held
