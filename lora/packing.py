"""Packing: several conversations per row of the context, none attending to another.

Teaches why and how fine-tuning batches are packed. Conversations are short and uneven, so one per row,
padded to the context length T, spends most of each forward pass on padding. Packing fills each row with
several conversations, first-fit decreasing (the longest first, each into the first row with room; at
most 11/9 of the fewest rows possible plus 6/9, Dósa 2007), and leaves padding only at the end of a
row. Packing must not change what the model computes for each conversation:

- **no attention across conversations**: the mask is block-diagonal, each block causal, so a token sees
  only earlier tokens of its own conversation. A padding token sees only itself (a query row with no key
  at all would make softmax divide by zero);
- **positions restart at 0** for each conversation, so RoPE angles and learned position rows are those
  of the conversation alone.

Both go to ``gpt.GPT`` through ``gpt.FullSequence(positions, attn_mask)``, the store-nothing cache that
hands one forward call any mask and positions. Then each conversation's per-token losses are those it
has alone in a row (up to float rounding), and the packed summed loss is the sum of the per-conversation
losses: ``tests/test_lora_packing.py`` checks it. ALiBi is refused: its key distances come from slot
indices, which ignore the position resets.

Reference: Krell et al. 2021, "Efficient Sequence Packing without Cross-contamination" (block-diagonal
masks, position resets); Hugging Face TRL ``SFTConfig(packing=True, padding_free=True)`` and
transformers' ``DataCollatorWithFlattening`` (positions restart per sequence).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gpt.attention import FullSequence
from gpt.model import IGNORE_INDEX
from lora.examples import Example


def first_fit(lengths: Sequence[int], T: int) -> list[list[int]]:
    """Rows of indices into ``lengths``, each summing to at most ``T``: first-fit decreasing (ties kept
    in input order; each row lists its items in the order they were placed)."""
    too_long = [(i, n) for i, n in enumerate(lengths) if not 1 <= n <= T]
    if too_long:
        i, n = too_long[0]
        raise ValueError(f"item {i} has length {n}; every item needs 1..T={T} tokens (drop longer ones)")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if r is None:
            rows.append([])
            room.append(T)
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= lengths[i]
    return rows


@dataclass
class PackedBatch:
    """Rows of packed examples and what the model needs to keep them apart."""

    idx: Tensor  # (B, T) long token ids, padding at the end of each row
    targets: Tensor  # (B, T) long, -100 on prompts and padding
    positions: Tensor  # (B, T) long, 0 at the start of each conversation (0 on padding)
    attn_mask: Tensor  # (B, 1, T, T) bool block-diagonal causal: True = may attend
    segments: Tensor  # (B, T) long, the example index of each token, -1 on padding
    rows: list[list[int]]  # the example indices in each row, in order


def pack(
    examples: Sequence[Example], T: int, pad_id: int, rows: list[list[int]] | None = None
) -> PackedBatch:
    """Pack ``examples`` into rows of ``T`` tokens (``rows``: default :func:`first_fit` of their lengths)."""
    if not examples:
        raise ValueError("pack needs at least one example")
    rows = first_fit([len(e.input_ids) for e in examples], T) if rows is None else rows
    if sorted(i for row in rows for i in row) != list(range(len(examples))):
        raise ValueError(f"rows {rows} must list every index of the {len(examples)} examples exactly once")
    B = len(rows)
    idx = torch.full((B, T), pad_id, dtype=torch.long)  # (B, T)
    targets = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    positions = torch.zeros((B, T), dtype=torch.long)  # (B, T)
    segments = torch.full((B, T), -1, dtype=torch.long)  # (B, T)
    for b, row in enumerate(rows):
        start = 0
        for i in row:
            e = examples[i]
            n = len(e.input_ids)
            if start + n > T:
                raise ValueError(f"row {b} holds {start + n} tokens of examples {row}, more than T={T}")
            idx[b, start : start + n] = torch.tensor(e.input_ids)
            targets[b, start : start + n] = torch.tensor(e.targets)
            positions[b, start : start + n] = torch.arange(n)
            segments[b, start : start + n] = i
            start += n
    t = torch.arange(T)
    same = segments[:, :, None] == segments[:, None, :]  # (B, T, T) query and key in one conversation
    real = (segments >= 0)[:, :, None]  # (B, T, 1) the query is not padding
    causal = t[None, :, None] >= t[None, None, :]  # (1, T, T)
    attn_mask = (same & real & causal) | torch.eye(T, dtype=torch.bool)  # padding sees itself only
    return PackedBatch(idx, targets, positions, attn_mask[:, None], segments, rows)  # mask (B, 1, T, T)


def packed_token_losses(model, batch: PackedBatch) -> Tensor:
    """(B, T) cross-entropy of each target (0 where the target is -100), in fp32, one forward call."""
    if getattr(model.config, "pos", None) == "alibi":
        raise ValueError("packing with ALiBi is not supported: its distances ignore the position resets")
    B, T = batch.idx.shape
    if model.config.block_size < T:
        raise ValueError(
            f"rows of T={T} tokens do not fit block_size={model.config.block_size}; pack with a smaller T"
        )
    device = next(model.parameters()).device
    cache = FullSequence(batch.positions.to(device), batch.attn_mask.to(device))
    logits, _ = model(batch.idx.to(device), cache=cache)  # (B, T, V)
    V = logits.size(-1)
    losses = F.cross_entropy(
        logits.float().view(B * T, V),
        batch.targets.to(device).view(B * T),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return losses.view(B, T)  # (B, T)


def packed_loss(model, batch: PackedBatch, reduction: str = "mean") -> Tensor:
    """The loss over every target of the batch: ``"sum"`` of token losses, or their ``"mean"`` (the sum
    divided by the number of targets, as ``lora.finetune`` weighs tokens)."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction={reduction!r}; use 'sum' or 'mean'")
    total = packed_token_losses(model, batch).sum()
    n = int((batch.targets != IGNORE_INDEX).sum())
    return total if reduction == "sum" else total / n


@dataclass(frozen=True)
class PaddingCounts:
    """Padding tokens in rows of T: packed, and with one conversation per row."""

    tokens: int  # real tokens
    T: int
    packed_rows: int
    packed_padding: int  # packed_rows * T - tokens
    unpacked_padding: int  # len(lengths) * T - tokens

    @property
    def saved(self) -> float:
        """The share of one-per-row padding that packing saves."""
        return 1 - self.packed_padding / self.unpacked_padding if self.unpacked_padding else 0.0


def padding_counts(lengths: Sequence[int], T: int, rows: list[list[int]] | None = None) -> PaddingCounts:
    """Padding of ``lengths`` packed into rows of ``T`` (``rows``: default :func:`first_fit`) against one
    per row, padded to ``T``."""
    rows = first_fit(lengths, T) if rows is None else rows
    tokens = sum(lengths)
    return PaddingCounts(tokens, T, len(rows), len(rows) * T - tokens, len(lengths) * T - tokens)
