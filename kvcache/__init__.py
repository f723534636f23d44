"""kvcache: KV caching, paged attention and a continuous-batching inference engine (Weeks 3.2, 6.1, 6.3).

Teaches why decoding is memory-bound and how serving engines manage the KV cache: a contiguous cache
(``ContiguousKVCache``, ``generate_static``), the memory model (``kv_cache_bytes``), PagedAttention's
block pool (``PagedKVCache``) and its bookkeeping (``BlockManager``: reference counts, copy-on-write,
prefix caching, LRU eviction), paged decode attention in torch and in Triton
(``paged_attention_torch``, ``paged_attention_triton``), and ``LLMEngine`` (scheduler with continuous
batching, chunked prefill, preemption by recompute, sampling, ``n`` samples per prompt sharing its
blocks, abort), speculative decoding by prompt lookup (``PromptLookup``). Everything plugs into ``gpt.GPT``
through its ``KVCache`` protocol. The benchmark is ``python -m kvcache.bench``.

References: Kwon et al. 2023 (vLLM, PagedAttention); nano-vllm; Yu et al. 2022 (Orca).
"""

from kvcache.block_manager import BlockManager, NoFreeBlocksError
from kvcache.contiguous import ContiguousKVCache, generate_static
from kvcache.engine import LLMEngine
from kvcache.memory import blocks_for_budget, kv_bytes_per_token, kv_cache_bytes
from kvcache.paged_attention import paged_attention_torch, paged_attention_triton
from kvcache.paged_cache import PagedKVCache, Segment, slots_for
from kvcache.request import Output, SamplingParams
from kvcache.scheduler import Scheduler
from kvcache.speculative import PromptLookup

__all__ = [
    "BlockManager",
    "ContiguousKVCache",
    "LLMEngine",
    "NoFreeBlocksError",
    "Output",
    "PagedKVCache",
    "PromptLookup",
    "SamplingParams",
    "Scheduler",
    "Segment",
    "blocks_for_budget",
    "generate_static",
    "kv_bytes_per_token",
    "kv_cache_bytes",
    "paged_attention_torch",
    "paged_attention_triton",
    "slots_for",
]
