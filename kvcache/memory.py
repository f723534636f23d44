"""How many bytes a KV cache takes, and how many blocks a memory budget buys.

Teaches the one formula behind every KV-cache decision: each token keeps one key and one value vector
per layer and per key/value head, so

    bytes = 2 (K and V) x n_layer x n_kv_head x head_dim x tokens x bytes_per_element

For GPT-2 small in fp32 that is 2 x 12 x 12 x 64 x 4 = 73,728 bytes (72 KiB) per token: a 1,024-token
context costs 72 MiB per sequence, which is why serving is limited by cache memory, not by weights.
Grouped-query attention (fewer ``n_kv_head``) divides it directly. The tests check the formula against
the ``nbytes`` of the tensors the contiguous and paged caches actually allocate.

Reference: Kwon et al. 2023, "Efficient Memory Management for Large Language Model Serving with
PagedAttention" (vLLM), section 2.3 (the 13B OPT example: 800 KB per token).
"""

import torch

from gpt import GPTConfig


def kv_bytes_per_token(config: GPTConfig, dtype: torch.dtype = torch.float32) -> int:
    """Bytes one token of context occupies in the cache, across all layers (keys and values)."""
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a gpt.GPTConfig, got {type(config).__name__}")
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * config.n_layer * config.n_kv_head * config.head_dim * element


def kv_cache_bytes(config: GPTConfig, tokens: int, dtype: torch.dtype = torch.float32) -> int:
    """bytes = 2 x n_layer x n_kv_head x head_dim x tokens x dtype size."""
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    return kv_bytes_per_token(config, dtype) * tokens


def blocks_for_budget(
    config: GPTConfig, budget_bytes: int, block_size: int, dtype: torch.dtype = torch.float32
) -> int:
    """How many ``block_size``-token blocks fit in ``budget_bytes`` (raises if not even one does)."""
    if block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size}")
    per_block = kv_cache_bytes(config, block_size, dtype)
    n = int(budget_bytes) // per_block
    if n < 1:
        raise ValueError(
            f"memory budget of {budget_bytes} bytes holds no KV block: one block of {block_size} tokens "
            f"takes {per_block} bytes for this model in {dtype}; raise the budget or lower block_size"
        )
    return n
