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
row's keys block by block through the block tables with one ``index_select`` (the readable path).

With ``attention="triton"`` a decode step (every row one sequence with one new token) skips the gather:
``prepare`` builds a :class:`DecodeBatch` (slot mapping, block tables, context lengths) on the device,
checked there once, and the step's ``attend`` hook (``gpt.CacheStep.attend``) stores each layer's new
K/V and runs the Triton kernel of ``kvcache/paged_attention.py`` over the pool in place. Prefill steps
keep the gather path. :class:`kvcache.ModelRunner` replays CUDA graphs of that fixed-shape step.

References: vLLM ``attention/backends`` (slot mapping, block tables); nano-vllm ``layers/attention.py``
and ``engine/model_runner.py`` (``prepare_prefill`` / ``prepare_decode``).
"""

import importlib.util
import math
import os
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from gpt import CacheStep, GPTConfig
from gpt.positions import alibi_slopes
from kvcache.paged_attention import paged_decode_step

ATTENTION_BACKENDS = ("auto", "torch", "triton")


@dataclass
class Segment:
    """One sequence's part of a forward call: ``slots`` (end,) flat slot ids of its positions 0..end-1,
    of which the last ``end - start`` are new this call."""

    slots: Tensor
    start: int

    @property
    def end(self) -> int:
        return self.slots.numel()


@dataclass
class DecodeBatch:
    """What the kernel path reads in one decode step of B rows (B may include padding rows)."""

    positions: Tensor  # (B, 1) long: position of each row's new token
    slot_mapping: Tensor  # (B,) long: flat pool slot its K/V go to; -1 = a padding row, stores nothing
    block_tables: Tensor  # (B, W) int32: each row's blocks, zero past its last one
    context_lens: Tensor  # (B,) int32: tokens each row attends to, the new one included (1 for padding)

    @classmethod
    def padding(cls, B: int, width: int, device="cpu") -> "DecodeBatch":
        """B padding rows: no store, one key read from block 0 (finite, ignored)."""
        return cls(
            positions=torch.zeros(B, 1, dtype=torch.long, device=device),
            slot_mapping=torch.full((B,), -1, dtype=torch.long, device=device),
            block_tables=torch.zeros(B, width, dtype=torch.int32, device=device),
            context_lens=torch.ones(B, dtype=torch.int32, device=device),
        )

    def to(self, device) -> "DecodeBatch":
        return DecodeBatch(*(getattr(self, f.name).to(device) for f in fields(self)))

    def first(self, n: int) -> "DecodeBatch":
        """The first n rows (views: writing into the full batch changes them)."""
        return DecodeBatch(*(getattr(self, f.name)[:n] for f in fields(self)))

    def copy_(self, other: "DecodeBatch"):
        for f in fields(self):
            getattr(self, f.name).copy_(getattr(other, f.name), non_blocking=True)


def resolve_attention(attention: str, device) -> str:
    """The backend to run: "auto" becomes "triton" on CUDA (if triton is installed), else "torch"; a
    "triton" that cannot run (no triton, or a CPU pool outside Triton's interpreter) is refused here."""
    if attention not in ATTENTION_BACKENDS:
        raise ValueError(f"attention must be one of {ATTENTION_BACKENDS}, got {attention!r}")
    device = torch.device(device)
    has_triton = importlib.util.find_spec("triton") is not None
    if attention == "auto":
        return "triton" if device.type == "cuda" and has_triton else "torch"
    if attention == "triton":
        if not has_triton:
            raise ValueError(
                "attention='triton' needs the triton package; install it or use attention='torch'"
            )
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"attention='triton' runs its kernels on CUDA, and the pool is on {device}: move the model "
                "to a GPU, use attention='torch', or (slow, for tests) set TRITON_INTERPRET=1 before "
                "triton is first imported"
            )
    return attention


def slots_for(table: list[int], block_size: int, end: int, device="cpu") -> Tensor:
    """Flat slot ids (end,) of positions 0..end-1 of a sequence with block table ``table``."""
    assert end <= len(table) * block_size, f"{end} positions but only {len(table)} blocks of {block_size}"
    blocks = torch.tensor(table, dtype=torch.long, device=device)
    return (blocks[:, None] * block_size + torch.arange(block_size, device=device)).flatten()[:end]


class PagedKVCache:
    """The block pool plus the :class:`gpt.KVCache` protocol for a batch described by :meth:`prepare`.

    ``attention``: "torch" (gather, then the model's SDPA), "triton" (decode steps on the paged kernel)
    or "auto" (triton on CUDA, else torch).
    """

    def __init__(
        self,
        config: GPTConfig,
        num_blocks: int,
        block_size: int,
        dtype=torch.float32,
        device="cpu",
        attention: str = "auto",
    ):
        self.config, self.num_blocks, self.block_size = config, num_blocks, block_size
        shape = (2, config.n_layer, num_blocks, block_size, config.n_kv_head, config.head_dim)
        self.kv = torch.zeros(shape, dtype=dtype, device=device)  # (2, L, nblocks, bs, nkv, hs)
        self.device = torch.device(device)
        self.attention = resolve_attention(attention, self.device)
        self.scale = 1.0 / math.sqrt(config.head_dim)  # SDPA's default, as the model uses
        self.alibi_slopes = None  # (nh,) float32, one source: gpt.positions
        if config.pos == "alibi":
            self.alibi_slopes = alibi_slopes(config.n_head).to(self.device)
        self._step = None
        self._decode = None

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

    @staticmethod
    def is_decode(rows: list[list[Segment]]) -> bool:
        """Is every row one sequence with exactly one new token (the kernel path's shape)?"""
        return all(len(row) == 1 and row[0].end - row[0].start == 1 for row in rows)

    def prepare(self, rows: list[list[Segment]]) -> Tensor:
        """Describe the next forward call. Returns ``last`` (n_segments,): the flat index into the
        (B * T) fed tokens of each segment's last new token (whose logits pick the next token)."""
        assert rows and all(rows), "prepare needs at least one row, each with at least one segment"
        if self.attention == "triton" and self.is_decode(rows):
            self.use_decode(self.decode_batch(rows).to(self.device))
            return torch.arange(len(rows), device=self.device)
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
        self._T, self._key_blocks, self._decode = T, key_blocks.to(dev), None  # (B, NB)
        self._write_slots = torch.cat(write_slots).to(dev)
        self._write_index = torch.cat(write_index).to(dev)
        return torch.tensor(last, dtype=torch.long).to(dev)

    def decode_batch(self, rows: list[list[Segment]], width: int | None = None, pad_to: int | None = None):
        """A decode step's :class:`DecodeBatch`, built and checked on the host (the boundary: the kernel
        path never reads a tensor back). ``width``: block table columns (default: the longest row's);
        ``pad_to``: add padding rows up to this many (a CUDA graph's batch size)."""
        assert self.is_decode(rows), "decode_batch takes rows of one segment with one new token each"
        bs, B = self.block_size, len(rows)
        P = B if pad_to is None else pad_to
        lens = [row[0].end for row in rows]
        W = max(-(-n // bs) for n in lens) if width is None else width
        if P < B or max(lens) > W * bs:
            raise ValueError(f"{B} rows of up to {max(lens)} tokens do not fit {P} rows x {W} blocks of {bs}")
        d = DecodeBatch.padding(P, W)
        for r, (seg,) in enumerate(rows):
            d.positions[r, 0] = seg.start
            d.slot_mapping[r] = seg.slots[-1]
            d.block_tables[r, : -(-seg.end // bs)] = seg.slots[::bs] // bs  # its block table
            d.context_lens[r] = seg.end
        return d

    def use_decode(self, batch: DecodeBatch):
        """Run the next forward (T = 1) on the kernel path over ``batch``, device tensors that the
        forward reads and never copies (a CUDA graph captures their addresses)."""
        assert self.attention == "triton", f"the kernel path needs attention='triton', not {self.attention!r}"
        self._decode, self._T = batch, 1
        self._step = CacheStep(positions=batch.positions, attend=self.attend)

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

    def attend(self, layer_idx: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """``CacheStep.attend`` of a decode step: q (B, nh, 1, hs), k, v (B, nkv, 1, hs) -> (B, nh, 1, hs)."""
        d = self._decode
        k_pool, v_pool = self.layer(layer_idx)
        y = paged_decode_step(
            q[:, :, 0], k[:, :, 0], v[:, :, 0], k_pool, v_pool,
            d.slot_mapping, d.block_tables, d.context_lens, self.scale, self.alibi_slopes,
        )  # fmt: skip
        return y[:, :, None]  # (B, nh, 1, hs)
