"""Preference pairs: one prompt conversation, a chosen and a rejected final reply, as a model reads them.

Teaches what a preference pair becomes before a model trains on it. The HH-RLHF reader
(``gpt.data.hh_rlhf``: :func:`load_preferences`, :func:`parse_transcript`, :class:`PreferencePair`) is
re-exported here; :func:`split_pairs` holds pairs out with a seed, and :func:`tokenize_pair` renders a
pair with the model's chat template into two :class:`lora.examples.Example` rows whose targets cover only
the reply and its end token: the sequences a reward model scores and DPO sums log-probabilities over.

The data contain offensive text (the source's content warning): nothing here prints a record's text;
errors name the record index only.

Reference: Bai et al. 2022 (the data); Rafailov et al. 2023 (DPO sums the reply's log-probabilities).
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from gpt.data.hh_rlhf import (
    HH_FILE,
    PreferencePair,
    PreferenceReport,
    load_preferences,
    pair_from_record,
    parse_transcript,
    read_pairs,
)
from gpt.model import IGNORE_INDEX
from lora.examples import Example, end_text, split

__all__ = [  # the HH reader re-exported from gpt.data.hh_rlhf, and what this module adds
    "HH_FILE",
    "PairExample",
    "PreferencePair",
    "PreferenceReport",
    "completion_example",
    "load_preferences",
    "pair_example",
    "pair_from_record",
    "parse_transcript",
    "read_pairs",
    "seeded_batches",
    "split_pairs",
    "tokenize_pair",
    "tokenize_pairs",
]


def split_pairs(
    pairs: Sequence[PreferencePair], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, val): a seeded shuffle with ``round(val_fraction * n)`` pairs held out (at least one).

    The two sides never share a record index; the same seed gives the same split."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must be in (0, 1)")
    n_val = max(1, round(val_fraction * len(pairs)))
    return split(pairs, n_val, seed)


@dataclass(frozen=True)
class PairExample:
    """A pair as token rows: targets are -100 on the prompt, so only each reply (and its end) counts."""

    chosen: Example
    rejected: Example
    index: int = -1  # the source record, -1 for a synthetic pair

    @property
    def prompt_ids(self) -> list[int]:
        """The prompt's ids: the inputs up to the first reply token (targets are -100 before it)."""
        P = sum(t == IGNORE_INDEX for t in self.chosen.targets) + 1
        return list(self.chosen.input_ids[:P])


def completion_example(prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> Example:
    """``prompt + completion`` shifted into (input, target) with the prompt's targets masked.

    The unmasked targets are exactly ``completion_ids`` (as in :func:`lora.examples.make_example`)."""
    if not prompt_ids or not completion_ids:
        raise ValueError(
            f"need a non-empty prompt and completion, got {len(prompt_ids)} and {len(completion_ids)} tokens"
        )
    ids = list(prompt_ids) + list(completion_ids)
    targets = [IGNORE_INDEX] * (len(prompt_ids) - 1) + list(completion_ids)
    return Example(tuple(ids[:-1]), tuple(targets))


def pair_example(
    prompt_ids: Sequence[int], chosen_ids: Sequence[int], rejected_ids: Sequence[int], index: int = -1
) -> PairExample:
    """A pair from token ids (synthetic data, or ids already rendered)."""
    return PairExample(
        completion_example(prompt_ids, chosen_ids), completion_example(prompt_ids, rejected_ids), index
    )


def tokenize_pair(tokenizer, pair: PreferencePair, end: str | None = None) -> PairExample:
    """A pair in the tokenizer's chat template: the prompt conversation ends at ``<|im_start|>assistant\\n``
    and each reply is closed by the end-of-turn token (``end``, default the tokenizer's eos text)."""
    if not pair.prompt or pair.prompt[-1]["role"] != "user":
        raise ValueError(f"record {pair.index}: the prompt must end with a user turn for the reply to follow")
    prompt = tokenizer.encode(
        tokenizer.apply_chat_template(list(pair.prompt), add_generation_prompt=True, tokenize=False)
    )
    end = end_text(tokenizer) if end is None else end
    chosen, rejected = (tokenizer.encode(reply + end) for reply in (pair.chosen, pair.rejected))
    return pair_example(prompt, chosen, rejected, pair.index)


def tokenize_pairs(tokenizer, pairs: Sequence[PreferencePair], max_len: int) -> tuple[list[PairExample], int]:
    """(examples, number dropped): pairs whose longer side exceeds ``max_len`` tokens are dropped, not cut
    (a cut reply would teach the end of a sentence to nobody)."""
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2 tokens, got {max_len}")
    kept, dropped = [], 0
    for pair in pairs:
        ex = tokenize_pair(tokenizer, pair)
        if max(len(ex.chosen.input_ids), len(ex.rejected.input_ids)) > max_len:
            dropped += 1
        else:
            kept.append(ex)
    return kept, dropped


def seeded_batches(items: Sequence, batch_size: int, seed: int) -> Iterator[list]:
    """Endless batches of ``batch_size`` items: seeded epochs, each a fresh permutation, a batch may
    straddle two epochs. The same seed gives the same stream."""
    if not items or batch_size < 1:
        raise ValueError(
            f"need items and batch_size >= 1, got {len(items)} items and batch_size={batch_size}"
        )
    order = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(len(items), generator=order).tolist(), 0
    while True:
        batch = []
        while len(batch) < batch_size:
            if pos == len(perm):
                perm, pos = torch.randperm(len(items), generator=order).tolist(), 0
            batch.append(items[perm[pos]])
            pos += 1
        yield batch
