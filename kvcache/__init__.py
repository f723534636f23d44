"""kvcache: KV caches, paged attention, a continuous-batching engine, an OpenAI server (Weeks 3.2, 6.1, 6.3).

Teaches why decoding is memory-bound and how serving engines manage the KV cache. Reading order:

- ``memory.py`` (the KV memory model), ``contiguous.py`` (``ContiguousKVCache``, ``generate_static``);
- ``block_manager.py`` (PagedAttention's bookkeeping: reference counts, copy-on-write, prefix caching,
  LRU eviction), ``paged_cache.py`` (the block pool behind gpt's ``KVCache`` protocol),
  ``paged_attention.py`` (paged decode attention in torch and as Triton kernels), ``model_runner.py``
  (forward steps, eager or as CUDA graphs / ``torch.compile``);
- ``request.py`` (``SamplingParams``, a request's lifecycle), ``scheduler.py`` (continuous batching,
  chunked prefill, preemption by recompute), ``speculative.py`` (prompt-lookup drafts), ``engine.py``
  (``LLMEngine``: steps, sampling, ``n`` samples sharing a prompt's blocks, abort, chat), with
  ``chat.py`` (conversations checked and rendered) and ``weights.py`` (new weights copied in place);
- ``workloads.py`` (realistic chat and copy-heavy requests from the course data);
- ``serve/`` (``python -m kvcache.serve``: the OpenAI-compatible server) and ``bench/``
  (``python -m kvcache.bench``; ``--model smollm2`` serves the real model beside HF and llama.cpp).

Everything plugs into ``gpt.GPT`` through its ``KVCache`` protocol.

References: Kwon et al. 2023 (vLLM, PagedAttention); nano-vllm; Yu et al. 2022 (Orca); Saxena 2023
(prompt lookup decoding).
"""

from kvcache.block_manager import BlockManager, NoFreeBlocksError
from kvcache.contiguous import ContiguousKVCache, generate_static
from kvcache.engine import LLMEngine
from kvcache.memory import blocks_for_budget, kv_bytes_per_token, kv_cache_bytes
from kvcache.model_runner import ModelRunner
from kvcache.paged_attention import paged_attention_torch, paged_attention_triton
from kvcache.paged_cache import PagedKVCache, Segment, slots_for
from kvcache.request import Output, SamplingParams
from kvcache.scheduler import Scheduler
from kvcache.speculative import PromptLookup
from kvcache.workloads import ChatRequest, chat_workload, copy_heavy_workload

__all__ = [
    "BlockManager",
    "ChatRequest",
    "ContiguousKVCache",
    "LLMEngine",
    "ModelRunner",
    "NoFreeBlocksError",
    "Output",
    "PagedKVCache",
    "PromptLookup",
    "SamplingParams",
    "Scheduler",
    "Segment",
    "blocks_for_budget",
    "chat_workload",
    "copy_heavy_workload",
    "generate_static",
    "kv_bytes_per_token",
    "kv_cache_bytes",
    "paged_attention_torch",
    "paged_attention_triton",
    "slots_for",
]
