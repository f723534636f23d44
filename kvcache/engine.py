"""``LLMEngine``: continuous batching over a paged KV cache, for ``gpt.GPT`` unchanged.

Teaches how the pieces of a serving engine fit: requests go into the :class:`kvcache.Scheduler`'s
waiting queue; each :meth:`LLMEngine.step` asks it for a batch (prefill chunks, or one decode token per
running sequence), lays the batch out as rows of segments for :class:`kvcache.PagedKVCache`, runs one
forward of the model through the ``gpt.KVCache`` protocol, samples one token for every sequence whose
context is complete (each request with its own ``torch.Generator`` when it has a seed), and retires the
finished ones, freeing their blocks for the waiting. :meth:`generate` is the offline loop over
:meth:`step` with a progress bar; ``add_request`` + ``step`` is the streaming interface.

The model is fed many positions but only each sequence's last one is sampled; projecting every
prefill position to the vocabulary would make that the most expensive layer, so the engine passes
``logits_rows`` and the model projects just those rows (HF's ``logits_to_keep``).

References: vLLM ``engine/llm_engine.py`` and ``entrypoints/llm.py`` (``LLM.generate``); nano-vllm
``engine/llm_engine.py``, ``engine/model_runner.py``.
"""

import itertools
import time

import torch
from torch import Tensor

from gpt import GPT
from gpt.sampling import sample_next
from kvcache.block_manager import BlockManager
from kvcache.memory import blocks_for_budget, kv_cache_bytes
from kvcache.paged_cache import PagedKVCache, Segment, slots_for
from kvcache.request import Output, SamplingParams, Sequence
from kvcache.scheduler import Batch, Scheduler


class LLMEngine:
    """Serve ``model`` with a paged KV cache of ``num_blocks`` blocks (or ``memory_budget`` bytes of them).

    ``block_size``: tokens per KV block. ``max_num_seqs``: most sequences running at once.
    ``max_num_batched_tokens``: prefill tokens per step (default: the model's context length).
    ``enable_prefix_caching``: reuse full blocks of earlier prompts with the same prefix.
    ``tokenizer``: anything with ``encode(str) -> list[int]`` and ``decode(list[int]) -> str`` (a
    tiktoken encoding, a ``bpe`` tokenizer), needed for string prompts.
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
        self.cache = PagedKVCache(cfg, num_blocks, block_size, self.dtype, self.device)
        assert self.cache.nbytes == kv_cache_bytes(cfg, num_blocks * block_size, self.dtype)
        self.block_manager = BlockManager(num_blocks, block_size, enable_prefix_caching)
        tokens = self.max_model_len if max_num_batched_tokens is None else max_num_batched_tokens
        self.scheduler = Scheduler(self.block_manager, max_num_seqs, tokens, chunked_prefill)
        self.tokenizer = tokenizer
        self._ids = itertools.count()
        self.stats = {"steps": 0, "prefill_tokens": 0, "decode_tokens": 0, "slots_used": 0, "slots_held": 0}
        self.stats["max_running"] = 0

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
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(params.seed)
        rid = str(seq_id) if request_id is None else str(request_id)
        self.scheduler.add(Sequence(seq_id, rid, ids, params, gen))
        return rid

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # -- one step -----------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> list[Output]:
        """Run one scheduled forward; return an :class:`Output` for every request that got a new token
        or finished in this step."""
        batch = self.scheduler.schedule()
        now = time.perf_counter()
        outputs = []
        for seq in batch.aborted:
            seq.finish_time = now
            outputs.append(Output.of(seq, self.tokenizer))
        if batch.kind in ("prefill", "decode") and batch.seqs:
            outputs += self._run(batch)
        self.stats["steps"] += 1
        return outputs

    def _run(self, batch: Batch) -> list[Output]:
        bm, bs = self.block_manager, self.block_size
        self.cache.copy_blocks(batch.copies)
        segments, tokens = [], []
        for seq, n in zip(batch.seqs, batch.chunks, strict=True):
            start = seq.num_computed_tokens
            table = bm.block_table(seq.seq_id)
            segments.append(Segment(slots_for(table, bs, start + n), start))
            tokens.append(seq.token_ids[start : start + n])
        if batch.kind == "prefill":  # one packed row: no padding in the matmuls
            rows, idx = [segments], torch.tensor([[t for ts in tokens for t in ts]], device=self.device)
        else:  # one row per sequence, one token each
            rows, idx = [[s] for s in segments], torch.tensor(tokens, device=self.device)
        last = self.cache.prepare(rows)
        logits, _ = self.model(idx, cache=self.cache, logits_rows=last)  # (n_segments, vocab)

        key = "prefill_tokens" if batch.kind == "prefill" else "decode_tokens"
        self.stats[key] += sum(batch.chunks)
        self.stats["max_running"] = max(self.stats["max_running"], len(self.scheduler.running))
        # memory statistics from counters the scheduler and block manager keep: O(1), not a walk over
        # every running sequence and block table
        self.stats["slots_held"] += bm.num_used_blocks * bs
        stored = self.scheduler.num_computed_running + sum(batch.chunks)
        shared = bm.num_refs - bm.num_used_blocks  # references beyond the first: shared full blocks
        self.stats["slots_used"] += stored - shared * bs  # a shared prefix block holds its tokens once

        ready = []
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.chunks, strict=True)):
            self.scheduler.advance(seq, n)
            bm.commit(seq.seq_id, seq.token_ids, seq.num_computed_tokens)
            if seq.num_computed_tokens == len(seq):  # context complete: sample its next token
                ready.append(i)
        outputs = []
        if not ready:
            return outputs
        next_ids = self._sample(logits[ready], [batch.seqs[i] for i in ready])
        now = time.perf_counter()
        for i, tok in zip(ready, next_ids, strict=True):
            seq = batch.seqs[i]
            seq.append_token(tok)
            if seq.first_token_time is None:
                seq.first_token_time = now
            p = seq.params
            if tok in p.stop_token_ids or (p.stop and self._stop_string_at_end(seq)):
                seq.finish_reason = "stop"
            elif seq.num_output_tokens >= p.max_tokens or len(seq) >= self.max_model_len:
                seq.finish_reason = "length"
            if seq.finish_reason is not None:
                seq.finish_time = now
                self.scheduler.finish(seq)
            outputs.append(Output.of(seq, self.tokenizer))
        return outputs

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
        """Run every prompt to completion; outputs in the order of ``prompts``. All prompts are checked
        first, so a bad one raises (naming its index) before any work is done."""
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
        ids = [self._add(p, sp, None) for p, sp in checked]
        done: dict[str, Output] = {}
        bar = None
        if use_tqdm:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(ids), desc="generate", unit="req")
        while self.has_unfinished():
            for out in self.step():
                if out.finished:
                    done[out.request_id] = out
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
        return [done[i] for i in ids]

    # -- memory accounting ------------------------------------------------------------------------------

    def kv_waste(self) -> float:
        """Fraction of held slots (blocks in use x block_size) not holding a token, averaged over steps."""
        held = self.stats["slots_held"]
        return 0.0 if held == 0 else 1.0 - self.stats["slots_used"] / held
