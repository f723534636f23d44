"""Prompt tuning (Lester et al. 2021): a few trainable "virtual token" embeddings in front of every input.

Teaches the smallest adapter of all: the model stays frozen, and only P vectors of width C are learned,
prepended to the token embeddings as if they were the embeddings of P extra tokens. They need not be the
embedding of any real token; gradient descent moves them freely in embedding space. Unlike the bottleneck
adapters (``bottleneck.py``) nothing inside the model changes, so one frozen model serves many tasks, each
a (P, C) tensor. The model sees them through ``GPT.forward(inputs_embeds=...)``; they get positions
0..P-1 and the real tokens P..P+T-1.

Initialisation matters for small models (Lester et al., section 3.2): from the embeddings of a text
describing the task (``init="text"``; the ids are repeated or cropped to P as peft's ``TEXT`` init does),
from random vocabulary rows (``"vocab"``, peft's ``SAMPLE_VOCAB``), or uniform in [-0.5, 0.5]
(``"random"``, the paper's random init; peft's ``RANDOM`` leaves ``nn.Embedding``'s N(0, 1)).

:class:`PromptTuning` returns logits for all P + T positions, as peft's ``PeftModelForCausalLM`` does;
the loss counts only the T real positions (targets as in ``GPT.forward``: already shifted). So the first
real token is conditioning, never predicted; peft's ``labels=input_ids`` also scores it from the last
virtual position. Tested equal to peft's ``PROMPT_TUNING`` on the same embeddings in
``tests/test_lora_prompt_prefix.py``.

References: Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"; peft
``tuners/prompt_tuning/model.py`` (``PromptEmbedding``) and ``peft_model.py``
(``PeftModelForCausalLM.forward``).
"""

import math

import torch
from torch import Tensor, nn

from gpt.model import GPT, IGNORE_INDEX, GPTConfig, token_cross_entropy
from kvcache.contiguous import ContiguousKVCache

INITS = ("text", "vocab", "random")


def init_prompt(
    model: GPT,
    n_virtual: int,
    init: str = "text",
    text: str | None = None,
    tokenizer=None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(n_virtual, C) float32 starting virtual-token embeddings for ``model``.

    ``init="text"`` embeds ``tokenizer.encode(text)``, repeated or cropped to ``n_virtual`` tokens;
    ``"vocab"`` embeds ``n_virtual`` token ids drawn with ``generator``; ``"random"`` draws U(-0.5, 0.5).
    """
    if not isinstance(n_virtual, int) or n_virtual < 1:
        raise ValueError(f"n_virtual={n_virtual!r} must be a positive int (the number of virtual tokens)")
    if init not in INITS:
        raise ValueError(f"init={init!r}; choose one of {INITS}")
    wte = model.wte.weight  # (V, C)
    if init == "random":
        return torch.rand(n_virtual, wte.size(1), generator=generator).to(wte.device) - 0.5
    if init == "vocab":
        ids = torch.randint(0, wte.size(0), (n_virtual,), generator=generator).to(wte.device)
    else:
        if not text or tokenizer is None:
            raise ValueError("init='text' needs a non-empty text and a tokenizer with .encode(text)")
        ids = list(tokenizer.encode(text))
        if not ids:
            raise ValueError(f"the tokenizer turned text={text!r} into no tokens")
        ids = (ids * math.ceil(n_virtual / len(ids)))[:n_virtual]  # repeat, then crop (peft's TEXT)
        ids = torch.tensor(ids, device=wte.device)
    return wte.detach()[ids].float().clone()  # (P, C), a copy: training moves it, not the vocabulary


def prompt_param_count(config: GPTConfig, n_virtual: int) -> int:
    """Trainable parameters of prompt tuning: one C-vector per virtual token."""
    return n_virtual * config.n_embd


class PromptTuning(nn.Module):
    """A frozen :class:`gpt.GPT` behind ``prompt`` (P, C) trainable virtual-token embeddings.

    ``forward(idx, targets)`` -> logits (B, P + T, vocab) and the mean loss over the T real positions.
    Wrapping freezes the model: only ``prompt`` trains.
    """

    def __init__(self, model: GPT, prompt: Tensor):
        super().__init__()
        if not isinstance(model, GPT):
            raise TypeError(f"PromptTuning wraps a gpt.GPT, got {type(model).__name__}")
        C = model.config.n_embd
        if not isinstance(prompt, Tensor) or prompt.dim() != 2 or prompt.size(1) != C:
            got = tuple(prompt.shape) if isinstance(prompt, Tensor) else type(prompt).__name__
            raise ValueError(f"prompt must be (n_virtual, C={C}), got {got}")
        self.model = model.requires_grad_(False)
        self.prompt = nn.Parameter(prompt.detach().clone())  # (P, C), kept in float32 like peft's

    @property
    def n_virtual(self) -> int:
        return self.prompt.size(0)

    def embed(self, idx: Tensor) -> Tensor:
        """idx (B, T) -> (B, P + T, C): the virtual tokens, then the tokens' own embeddings."""
        tokens = self.model.wte(idx)  # (B, T, C)
        prompt = self.prompt.to(tokens.dtype).expand(idx.size(0), -1, -1)  # (B, P, C)
        return torch.cat([prompt, tokens], dim=1)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) -> logits (B, P + T, vocab); with targets (B, T), the loss over the last T positions."""
        if not isinstance(idx, Tensor) or idx.dim() != 2:
            got = tuple(idx.shape) if isinstance(idx, Tensor) else type(idx).__name__
            raise ValueError(f"idx must be (B, T) token ids, got {got}")
        logits, _ = self.model(inputs_embeds=self.embed(idx))  # (B, P + T, vocab)
        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(f"targets shape {tuple(targets.shape)} must equal idx's {tuple(idx.shape)}")
            # the P virtual positions have no target: IGNORE_INDEX in front, as peft pads its labels
            ignore = targets.new_full((idx.size(0), self.n_virtual), IGNORE_INDEX)  # (B, P)
            targets = torch.cat([ignore, targets], dim=1)  # (B, P + T)
            loss = token_cross_entropy(logits, targets, targets)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, cache=None, **sampling) -> Tensor:
        """Append ``max_new_tokens`` tokens to idx (B, T) behind the virtual tokens; returns (B, T + new).

        The virtual tokens are fed once into ``cache`` (an empty :class:`gpt.KVCache`; by default a
        :class:`kvcache.contiguous.ContiguousKVCache` just big enough), then ``GPT.generate`` continues
        with the same cache. ``sampling``: ``GPT.generate``'s temperature, top_k, top_p, eos_id, seed, ...
        """
        P, (B, T) = self.n_virtual, idx.shape
        needed = P + T + max(max_new_tokens - 1, 0)  # the last sampled token is never fed
        if needed > self.model.config.block_size:
            raise ValueError(
                f"{P} virtual tokens + a {T}-token prompt + max_new_tokens={max_new_tokens} need {needed} "
                f"positions, more than block_size={self.model.config.block_size}: crop the prompt"
            )
        w = self.model.wte.weight
        cache = ContiguousKVCache(self.model.config, B, needed, w.dtype, w.device) if cache is None else cache
        self.model(inputs_embeds=self.prompt.to(w.dtype).expand(B, -1, -1), cache=cache)  # positions 0..P-1
        return self.model.generate(idx, max_new_tokens, cache=cache, **sampling)


def prompt_tune(
    model: GPT,
    n_virtual: int,
    init: str = "text",
    text: str | None = None,
    tokenizer=None,
    generator: torch.Generator | None = None,
) -> PromptTuning:
    """Freeze ``model`` and wrap it with ``n_virtual`` trainable virtual tokens (see :func:`init_prompt`)."""
    return PromptTuning(model, init_prompt(model, n_virtual, init, text, tokenizer, generator))
