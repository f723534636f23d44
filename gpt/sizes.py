"""Named model sizes: one table that every bench, task and notebook reads.

A size is a shape (layers, width, heads) plus the vocabulary and context a bench uses when no data set
fixes them. ``SIZES["tiny"].gpt_config("llama")`` builds the Llama flavour of the same shape, with a
SwiGLU hidden width of 8/3 the model width rounded up to 64, so both flavours do comparable work.
Encoder-decoders (``gpt.tasks.translation``) use the same shape for each of their two stacks.

``base`` is the Transformer-base of Vaswani et al. 2017 (and T5-small); ``124m`` is GPT-2 small.
"""

from dataclasses import dataclass

from gpt.model import GPTConfig

FLAVOURS = ("gpt2", "llama")


@dataclass(frozen=True)
class ModelSize:
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int = 50257  # GPT-2's, for benches on random tokens
    block_size: int = 1024

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def gpt_config(self, flavour: str = "gpt2", **overrides) -> GPTConfig:
        """The GPTConfig of this size in the ``gpt2`` or ``llama`` flavour; ``overrides`` win."""
        shape = dict(
            vocab_size=self.vocab_size,
            block_size=self.block_size,
            n_layer=self.n_layer,
            n_embd=self.n_embd,
            n_head=self.n_head,
        )
        if flavour == "gpt2":
            return GPTConfig(**{**shape, **overrides})
        if flavour == "llama":
            shape["ffn_hidden"] = -(-8 * self.n_embd // 3 // 64) * 64
            return GPTConfig.llama(**{**shape, **overrides})
        raise ValueError(f"flavour={flavour!r}; choose one of {FLAVOURS}")


SIZES = {
    "micro": ModelSize(n_layer=1, n_embd=32, n_head=2, vocab_size=512, block_size=128),
    "mini": ModelSize(n_layer=2, n_embd=128, n_head=4, vocab_size=4096, block_size=256),
    "tiny": ModelSize(n_layer=4, n_embd=256, n_head=4, vocab_size=8192, block_size=512),
    "small": ModelSize(n_layer=6, n_embd=384, n_head=6),
    "base": ModelSize(n_layer=6, n_embd=512, n_head=8),
    "124m": ModelSize(n_layer=12, n_embd=768, n_head=12),
}


def get_size(name: str) -> ModelSize:
    """``SIZES[name]``, or a ValueError listing the names."""
    if name not in SIZES:
        raise ValueError(f"size={name!r}; choose one of {tuple(SIZES)}")
    return SIZES[name]
