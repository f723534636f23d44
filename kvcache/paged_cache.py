"""The paged KV cache: one preallocated pool of fixed-size blocks, read through block tables.

Teaches the memory half of PagedAttention (Kwon et al. 2023, section 4.1). Keys and values of every
sequence live in one tensor ``kv`` of shape (2, n_layer, num_blocks, block_size, n_kv_head, head_dim);
token ``p`` of a sequence sits in slot ``table[p // block_size] * block_size + p % block_size``. The
:class:`kvcache.BlockManager` decides the tables; this file only stores and gathers.

Unlike :class:`kvcache.ContiguousKVCache`, one forward call here may mix sequences of any lengths, and
even pack several sequences into one row: the engine describes the call as *rows* of *segments* (a
segment = one sequence's new tokens plus the slots of its whole context). A decode step is one row per
sequence with one new token each; a prefill step packs every prompt chunk into a single row (no
padding in the matmuls: what vLLM calls a "varlen" batch). The attention mask lets each query see only
earlier keys of its own segment. ``update`` writes the new K/V into their slots, then gathers each
row's keys block by block through the block tables with one ``index_select`` (the readable path;
``kvcache/paged_attention.py`` has the Triton kernel that reads the blocks in place instead).

References: vLLM ``attention/backends`` (slot mapping, block tables); nano-vllm ``layers/attention.py``
and ``engine/model_runner.py`` (``prepare_prefill`` / ``prepare_decode``).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from gpt import CacheStep, GPTConfig


@dataclass
class Segment:
    """One sequence's part of a forward call: ``slots`` (end,) flat slot ids of its positions 0..end-1,
    of which the last ``end - start`` are new this call."""

    slots: Tensor
    start: int

    @property
    def end(self) -> int:
        return self.slots.numel()


def slots_for(table: list[int], block_size: int, end: int, device="cpu") -> Tensor:
    """Flat slot ids (end,) of positions 0..end-1 of a sequence with block table ``table``."""
    assert end <= len(table) * block_size, f"{end} positions but only {len(table)} blocks of {block_size}"
    blocks = torch.tensor(table, dtype=torch.long, device=device)
    return (blocks[:, None] * block_size + torch.arange(block_size, device=device)).flatten()[:end]


class PagedKVCache:
    """The block pool plus the :class:`gpt.KVCache` protocol for a batch described by :meth:`prepare`."""

    def __init__(
        self, config: GPTConfig, num_blocks: int, block_size: int, dtype=torch.float32, device="cpu"
    ):
        self.config, self.num_blocks, self.block_size = config, num_blocks, block_size
        shape = (2, config.n_layer, num_blocks, block_size, config.n_kv_head, config.head_dim)
        self.kv = torch.zeros(shape, dtype=dtype, device=device)  # (2, L, nblocks, bs, nkv, hs)
        self.device = torch.device(device)
        self._step = None

    @property
    def nbytes(self) -> int:
        return self.kv.nbytes

    def layer(self, layer_idx: int) -> tuple[Tensor, Tensor]:
        """This layer's (K, V) pools, each (num_blocks, block_size, n_kv_head, head_dim)."""
        return self.kv[0, layer_idx], self.kv[1, layer_idx]

    def copy_blocks(self, pairs: list[tuple[int, int]]):
        """Copy-on-write: copy the K/V of block src into block dst, every layer."""
        for src, dst in pairs:
            self.kv[:, :, dst] = self.kv[:, :, src]

    def prepare(self, rows: list[list[Segment]]) -> Tensor:
        """Describe the next forward call. Returns ``last`` (n_segments,): the flat index into the
        (B * T) fed tokens of each segment's last new token (whose logits pick the next token)."""
        assert rows and all(rows), "prepare needs at least one row, each with at least one segment"
        # Built on the CPU (many tiny writes), then moved to the model's device in one go.
        bs = self.block_size
        nblocks = lambda seg: -(-seg.end // bs)  # noqa: E731
        T = max(sum(s.end - s.start for s in row) for row in rows)
        NB = max(sum(nblocks(s) for s in row) for row in rows)
        S, B = NB * bs, len(rows)  # keys are gathered a whole block at a time
        positions = torch.zeros(B, T, dtype=torch.long)
        q_seg = torch.full((B, T), -1, dtype=torch.long)
        key_blocks = torch.zeros(B, NB, dtype=torch.long)
        key_pos = torch.zeros(B, S, dtype=torch.long)
        k_seg = torch.full((B, S), -2, dtype=torch.long)  # -2: padding, matches no query
        write_slots, write_index, last = [], [], []
        for r, row in enumerate(rows):
            t = s = 0
            for i, seg in enumerate(row):
                nb = nblocks(seg)
                n = seg.end - seg.start
                assert n >= 1, f"a segment needs at least one new token, got start={seg.start}, end={seg.end}"
                positions[r, t : t + n] = torch.arange(seg.start, seg.end)
                q_seg[r, t : t + n] = i
                key_blocks[r, s // bs : s // bs + nb] = seg.slots[::bs] // bs  # its block table
                key_pos[r, s : s + nb * bs] = torch.arange(nb * bs)
                k_seg[r, s : s + seg.end] = i  # slots past the end of its last block stay -2
                write_slots.append(seg.slots[seg.start :])
                write_index.append(torch.arange(r * T + t, r * T + t + n))
                last.append(r * T + t + n - 1)
                t, s = t + n, s + nb * bs
            if t < T:  # padded queries copy the row's last real query (finite softmax, output unused)
                positions[r, t:] = positions[r, t - 1]
                q_seg[r, t:] = q_seg[r, t - 1]
        dev = self.device
        positions, q_seg, key_pos, k_seg = (x.to(dev) for x in (positions, q_seg, key_pos, k_seg))
        mask = (k_seg[:, None, :] == q_seg[:, :, None]) & (key_pos[:, None, :] <= positions[:, :, None])
        self._step = CacheStep(positions=positions, attn_mask=mask[:, None], key_positions=key_pos)
        self._T, self._key_blocks = T, key_blocks.to(dev)  # (B, NB)
        self._write_slots = torch.cat(write_slots).to(dev)
        self._write_index = torch.cat(write_index).to(dev)
        return torch.tensor(last, dtype=torch.long).to(dev)

    # -- the KVCache protocol -----------------------------------------------------------------------

    def begin(self, T: int) -> CacheStep:
        assert self._step is not None, "call prepare(rows) before each forward"
        assert T == self._T, f"fed T={T} tokens per row, prepare() described {self._T}"
        return self._step

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        B, nkv, T, hs = k.shape
        k_pool, v_pool = self.layer(layer_idx)
        k_flat = k_pool.view(-1, nkv, hs)  # (num_blocks * bs, nkv, hs): one row per slot
        v_flat = v_pool.view(-1, nkv, hs)
        new_k = k.transpose(1, 2).reshape(B * T, nkv, hs)[self._write_index]  # (N, nkv, hs) real tokens
        new_v = v.transpose(1, 2).reshape(B * T, nkv, hs)[self._write_index]
        k_flat.index_copy_(0, self._write_slots, new_k.to(k_flat.dtype))
        v_flat.index_copy_(0, self._write_slots, new_v.to(v_flat.dtype))
        blocks = self._key_blocks.flatten()  # gather whole blocks: one index per block_size tokens
        S = self._key_blocks.size(1) * self.block_size
        k_all = k_pool.index_select(0, blocks).view(B, S, nkv, hs).transpose(1, 2)  # (B, nkv, S, hs)
        v_all = v_pool.index_select(0, blocks).view(B, S, nkv, hs).transpose(1, 2)
        return k_all, v_all
