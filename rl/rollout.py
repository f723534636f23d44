"""Rollouts through the serving engine: G samples per prompt from ``kvcache.LLMEngine``, with weight pushes.

Teaches how an RL trainer samples fast and stays on-policy. GRPO's generation is most of its step time; a
serving engine batches every group of the step into one continuous batch, prefills each prompt once and
forks its G samples on shared KV blocks (``SamplingParams(n=G)``). Unlike :class:`GenerateSampler`
(``GPT.generate`` with a KV cache, one prompt's G copies at a time, as ``rl.best_of_n`` samples), the engine
holds its own model, which goes stale after each optimizer step: :meth:`EngineSampler.sync` pushes the
policy's weights to it (``LLMEngine.load_weights``, which also drops every prefix-cache block the old
weights computed). A LoRA policy is pushed as plain weights with its adapters merged
(:func:`merged_state_dict`), leaving the policy itself untouched.

Both samplers follow the GRPO trainer's protocol ``sampler(prompt_ids, G, params) -> B * G completions``,
grouped by prompt, each ending after its first EOS (kept). ``params`` has ``temperature``, ``top_k``,
``max_new_tokens``, ``eos_id``, ``seed`` (and optionally ``top_p``); prompt i samples with seed
``seed * 1009 + i`` in both, but from different random streams (the engine gives each sample its own
generator), so their samples agree in distribution, not token by token; greedy ones agree exactly.

Reference: TRL ``GRPOTrainer`` with ``use_vllm`` (trl/generation/vllm_generation.py ``sync_weights``: the
adapters merged into the weights it sends, ``load_weights``, then ``reset_prefix_cache``); vLLM
``LLM.generate`` with ``n``.
"""

import time
from collections.abc import Sequence
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from kvcache import LLMEngine, SamplingParams
from lora.inject import lora_layers
from lora.lora_linear import dense_weight
from rl.best_of_n import generate_completions


def prompt_seed(seed: int, i: int) -> int:
    """The seed of prompt ``i``'s group in a sampling call with ``seed``."""
    return seed * 1009 + i


@torch.no_grad()
def merged_state_dict(policy: nn.Module) -> dict[str, Tensor]:
    """``policy``'s weights under plain (LoRA-free) names, every adapter merged into a copy of its base
    weight: what a ``gpt.GPT`` of the same config loads. The policy is not modified; a policy without LoRA
    layers gives its own state dict. A quantized (QLoRA) base is dequantized first."""
    layers = lora_layers(policy)
    inside = tuple(name + "." for name in layers)
    state = {k: v for k, v in policy.state_dict().items() if not k.startswith(inside)}
    for name, layer in layers.items():
        w = dense_weight(layer.base).detach().clone()  # (out, in)
        if not layer.merged:  # a merged layer's base already holds the update
            norms = getattr(layer, "_merge_norms", None)  # DoRA records the norms it merged with
            saved = None if norms is None else dict(norms)
            for slice_name in layer.adapted():
                lo, hi = layer.rows[slice_name]
                w[lo:hi] = layer._merged_rows(slice_name, w[lo:hi])  # lora's own merge rule, on the copy
            if norms is not None:
                norms.clear()
                norms.update(saved)
        state[name + ".weight"] = w
        bias = getattr(layer.base, "bias", None)
        if bias is not None:
            state[name + ".bias"] = bias.detach()
    return state


def _check_params(prompt_ids, G: int, params):
    if isinstance(G, bool) or not isinstance(G, int) or G < 1:
        raise ValueError(f"G (completions per prompt) must be a positive int, got {G!r}")
    if not isinstance(prompt_ids, (list, tuple)) or not all(isinstance(p, (list, tuple)) for p in prompt_ids):
        raise TypeError("prompt_ids must be a list of prompts, each a list of token ids")
    for attr in ("temperature", "top_k", "max_new_tokens", "eos_id", "seed"):
        if not hasattr(params, attr):
            raise TypeError(f"params must have {attr!r} (e.g. rl.grpo_trainer.RolloutParams), got {params!r}")


class EngineSampler:
    """Samples groups through ``engine``, serving ``policy``'s current weights.

    ``engine`` may serve ``policy`` itself (shared weights: a push only resets the prefix cache) or its
    own copy (a push copies the weights, merged if LoRA). ``sync_on_call``: push before every call, so a
    trainer that calls the sampler once per generation batch always samples from the updated policy."""

    def __init__(self, engine: LLMEngine, policy: nn.Module, sync_on_call: bool = True):
        if not isinstance(engine, LLMEngine):
            raise TypeError(f"engine must be a kvcache.LLMEngine, got {type(engine).__name__}")
        if not isinstance(policy, nn.Module):
            raise TypeError(
                f"policy must be an nn.Module (the model being trained), got {type(policy).__name__}"
            )
        self.engine, self.policy, self.sync_on_call = engine, policy, sync_on_call
        self.num_syncs, self.sync_s = 0, 0.0

    def sync(self):
        """Push the policy's weights to the engine (merged adapters for a separate engine copy)."""
        t0 = time.perf_counter()
        if self.policy is self.engine.model:
            self.engine.load_weights(self.policy)
        else:
            self.engine.load_weights(merged_state_dict(self.policy))
        self.num_syncs += 1
        self.sync_s += time.perf_counter() - t0

    def __call__(self, prompt_ids: list[list[int]], G: int, params) -> list[list[int]]:
        _check_params(prompt_ids, G, params)
        if self.sync_on_call:
            self.sync()
        stop = () if params.eos_id is None else (params.eos_id,)
        sps = [
            SamplingParams(
                temperature=params.temperature,
                top_k=params.top_k,
                top_p=getattr(params, "top_p", None),
                max_tokens=params.max_new_tokens,
                stop_token_ids=stop,
                seed=prompt_seed(params.seed, i),
                n=G,
            )
            for i in range(len(prompt_ids))
        ]
        model = self.engine.model
        training = model.training  # a shared policy may be in train mode: sample without dropout
        model.eval()
        try:
            outs = self.engine.generate([list(p) for p in prompt_ids], sps, use_tqdm=False)
        finally:
            model.train(training)
        return [list(o.token_ids) for o in outs]  # (B * G,), grouped by prompt


class GenerateSampler:
    """Samples groups with ``policy.generate`` and a contiguous KV cache, one prompt (G rows) at a time."""

    def __init__(self, policy: nn.Module):
        self.policy = policy

    def __call__(self, prompt_ids: list[list[int]], G: int, params) -> list[list[int]]:
        _check_params(prompt_ids, G, params)
        out = []
        for i, ids in enumerate(prompt_ids):
            out += generate_completions(
                self.policy, ids, G, params.max_new_tokens, params.temperature, params.top_k,
                getattr(params, "top_p", None), params.eos_id, prompt_seed(params.seed, i),
            )  # fmt: skip
        return out


def engine_for(
    model: nn.Module, prompts: Sequence[Sequence[int]], G: int, max_new_tokens: int, **kw
) -> LLMEngine:
    """An engine serving ``model`` (shared weights) sized to run every group of ``prompts`` at once:
    ``len(prompts) * G`` sequences and KV blocks for all of them (not the whole context per sequence)."""
    block_size = kw.pop("block_size", 16)
    blocks = sum(G * -(-(len(p) + max_new_tokens) // block_size) for p in prompts)
    kw.setdefault("max_num_seqs", len(prompts) * G)
    return LLMEngine(model, block_size=block_size, num_blocks=blocks + len(prompts) * G, **kw)


def time_samplers(
    policy: nn.Module,
    prompts: Sequence[Sequence[int]],
    G: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    engine: LLMEngine | None = None,
) -> dict[str, float]:
    """Seconds to sample the same groups (G completions of each prompt, ``max_new_tokens`` each, no EOS so
    both do the same work) with :class:`EngineSampler` and :class:`GenerateSampler`, after one short
    warm-up of each; ``ratio`` is generate / engine (above 1: the engine is faster). The engine wins where
    the model's matmuls dominate a step (SmolLM2, many groups batched at once); on a tiny model its
    per-sequence bookkeeping and K/V gathers cost more than the batching saves."""
    engine = engine_for(policy, prompts, G, max_new_tokens) if engine is None else engine
    samplers = {"engine": EngineSampler(engine, policy), "generate": GenerateSampler(policy)}
    params = SimpleNamespace(temperature=temperature, top_k=None, max_new_tokens=max_new_tokens, eos_id=None,
                             seed=seed)  # fmt: skip
    warm = SimpleNamespace(**{**vars(params), "max_new_tokens": 2})
    out = {}
    for name, sampler in samplers.items():
        sampler([list(prompts[0])], min(G, 2), warm)
        t0 = time.perf_counter()
        completions = sampler([list(p) for p in prompts], G, params)
        out[f"{name}_s"] = time.perf_counter() - t0
        out[f"{name}_tokens"] = sum(len(c) for c in completions)
    out["ratio"] = out["generate_s"] / out["engine_s"]
    return out
