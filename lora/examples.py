"""Supervised fine-tuning examples: (prompt, completion) pairs -> token ids with the prompt masked out.

Teaches what a fine-tuning batch is. The prompt is rendered with the model's own chat template (the
text it will see at inference, ending in ``<|im_start|>assistant\\n``) and the completion follows,
closed by the end-of-turn token, so the model learns to stop. Prompt and completion are encoded
separately and concatenated: the prompt's ids are then exactly those the model is given at inference.
Only the completion counts: every target on a prompt position is ``IGNORE_INDEX`` (-100), which
``F.cross_entropy`` skips, so the loss is the model's surprise at the answer, not at the question.

Examples longer than the context budget are dropped (not cut: a cut answer teaches the model to stop
mid-sentence). A batch is right-padded to its longest example; padded targets are -100 too, and causal
attention already keeps every real token from looking at the padding after it, so no attention mask is
needed. :class:`ExampleStream` hands out global batches in a seeded order and saves its position, so a
resumed run reads the same batches; :func:`rank_micro_batches` gives each process its slice of one.

Reference: stanford_alpaca ``train.py`` (``preprocess``: IGNORE_INDEX on the source tokens); Hugging
Face TRL ``SFTTrainer`` (``completion_only_loss``) and ``DataCollatorForCompletionOnlyLM``.
"""

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gpt.model import IGNORE_INDEX


@dataclass(frozen=True)
class Example:
    """One training sequence: ``targets[t]`` is the token after ``input_ids[t]``, or -100 on the prompt."""

    input_ids: tuple[int, ...]  # (T,)
    targets: tuple[int, ...]  # (T,)

    def __post_init__(self):
        if len(self.input_ids) != len(self.targets) or not self.input_ids:
            raise ValueError(
                f"input_ids and targets must be non-empty and equally long, got {len(self.input_ids)} "
                f"and {len(self.targets)}"
            )

    @property
    def n_targets(self) -> int:
        """Tokens that count toward the loss (the completion and its end token)."""
        return sum(t != IGNORE_INDEX for t in self.targets)


def chat_prompt(tokenizer, prompt: str, system: str | None = None) -> str:
    """``prompt`` as a user turn in the tokenizer's chat template, ending where the assistant starts."""
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": prompt}
    ]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def end_text(tokenizer) -> str:
    """The text of the tokenizer's end token (``<|im_end|>`` for SmolLM2): what closes a completion."""
    if getattr(tokenizer, "eos_id", None) is None:
        raise ValueError("the tokenizer has no eos_id; pass end=<the end-of-turn text> explicitly")
    return tokenizer.decode([tokenizer.eos_id])


def make_example(tokenizer, prompt_text: str, completion: str, end: str | None = None) -> Example:
    """Ids of ``prompt_text + completion + end`` shifted into (input, target) pairs, prompt targets -100.

    ``prompt_text`` is already rendered (:func:`chat_prompt`); ``end`` defaults to :func:`end_text`.
    The unmasked targets are exactly ``encode(completion + end)``.
    """
    if not completion:
        raise ValueError("the completion is empty: an example needs something to learn")
    end = end_text(tokenizer) if end is None else end
    prompt = tokenizer.encode(prompt_text)
    answer = tokenizer.encode(completion + end)
    if not prompt:
        raise ValueError("the prompt encodes to no tokens; the first target needs a token before it")
    ids = prompt + answer  # (P + A,)
    targets = [IGNORE_INDEX] * (len(prompt) - 1) + answer  # the target of the last prompt token is answer[0]
    return Example(tuple(ids[:-1]), tuple(targets))


def chat_examples(
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    max_len: int,
    system: str | None = None,
    end: str | None = None,
) -> tuple[list[Example], int]:
    """(examples, number dropped): each (prompt, completion) in the chat template, those longer than
    ``max_len`` tokens dropped."""
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2 tokens, got {max_len}")
    examples, dropped = [], 0
    for prompt, completion in pairs:
        example = make_example(tokenizer, chat_prompt(tokenizer, prompt, system), completion, end)
        if len(example.input_ids) > max_len:
            dropped += 1
        else:
            examples.append(example)
    return examples, dropped


def check_examples(examples, name: str, vocab_size: int, block_size: int) -> None:
    """Once, where the data enters: every id has an embedding row, every example fits the context and
    has a target."""
    if not examples:
        raise ValueError(f"{name} is empty")
    for i, e in enumerate(examples):
        if not isinstance(e, Example):
            raise TypeError(f"{name}[{i}] is a {type(e).__name__}; build examples with lora.examples")
        if len(e.input_ids) > block_size or e.n_targets == 0:
            raise ValueError(
                f"{name}[{i}] has {len(e.input_ids)} tokens and {e.n_targets} targets; every example "
                f"needs 1..block_size={block_size} tokens and at least one target"
            )
        ids = e.input_ids + tuple(t for t in e.targets if t != IGNORE_INDEX)
        if min(ids) < 0 or max(ids) >= vocab_size:
            raise ValueError(f"{name}[{i}] has ids outside [0, {vocab_size}): use the model's tokenizer")


def split(items: Sequence, n_val: int, seed: int) -> tuple[list, list]:
    """(train, val): a seeded shuffle, the last ``n_val`` items held out. The same seed, the same split."""
    if not 0 <= n_val < len(items):
        raise ValueError(f"n_val={n_val} must be in [0, {len(items)}): keep at least one training item")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    cut = len(items) - n_val
    return [items[i] for i in order[:cut]], [items[i] for i in order[cut:]]


def collate(examples: Sequence[Example], pad_id: int) -> tuple[Tensor, Tensor]:
    """(x, y), both (B, T) long with T the longest example: inputs right-padded with ``pad_id``,
    targets with -100."""
    if not examples:
        raise ValueError("collate needs at least one example")
    T = max(len(e.input_ids) for e in examples)
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)  # (B, T)
    y = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for b, e in enumerate(examples):
        x[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
        y[b, : len(e.targets)] = torch.tensor(e.targets)
    return x, y


def rank_micro_batches(batch: Sequence[int], rank: int, world_size: int, accum: int) -> list[list[int]]:
    """This rank's ``accum`` micro-batches of one global batch: rank r takes the r-th of ``world_size``
    equal slices, then cuts it into ``accum`` equal parts. One process with ``accum = k * n`` reads the
    same micro-batches, in order, as ``n`` processes with ``accum = k`` together."""
    if world_size < 1 or accum < 1 or len(batch) % (world_size * accum):
        raise ValueError(
            f"a global batch of {len(batch)} examples cannot be split over {world_size} process(es) x "
            f"{accum} micro-steps; make the batch size a multiple of world_size * grad_accum"
        )
    per_rank = len(batch) // world_size
    mine = list(batch[rank * per_rank : (rank + 1) * per_rank])
    micro = per_rank // accum
    return [mine[i * micro : (i + 1) * micro] for i in range(accum)]


class ExampleStream:
    """Global batches of ``batch_size`` example indices out of ``n``, reshuffled each epoch (seeded).

    A batch that runs past the end of an epoch is completed from the next epoch's order. The position
    is two ints (``state_dict``), so a resumed run continues with the very batch it would have read.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < 1 or batch_size < 1:
            raise ValueError(f"need at least one example and batch_size >= 1, got n={n}, {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.pos = 0, 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)  # its own RNG: training's is untouched
        return torch.randperm(self.n, generator=generator).tolist()

    def next_batch(self) -> list[int]:
        batch = []
        while len(batch) < self.batch_size:
            take = self._order[self.pos : self.pos + self.batch_size - len(batch)]
            batch += take
            self.pos += len(take)
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        if not 0 <= state["pos"] < self.n:
            raise ValueError(f"stream position {state['pos']} is outside a {self.n}-example epoch")
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._epoch_order(self.epoch)
