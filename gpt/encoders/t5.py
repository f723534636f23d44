"""A T5-style encoder-decoder: relative position buckets, RMSNorm, cross-attention, unscaled attention.

Unlike the decoder-only GPT (``model.py``), the input and the output are two sequences: a bidirectional
**encoder** reads the source once, and a causal **decoder** writes the target, each of its blocks reading
the encoder's output through **cross-attention** (Vaswani et al. 2017, the original transformer). T5's own
choices (Raffel et al. 2020, section 2.1) are all here:

- no position embeddings: each attention layer adds a learned scalar per head and per **relative position
  bucket** to the scores; buckets are exact for small distances and logarithmic up to ``max_distance``,
  signed (bidirectional) in the encoder and causal-only in the decoder; the first layer's table is
  shared by every layer of its stack (:func:`relative_position_bucket`);
- pre-norm blocks with RMSNorm (T5LayerNorm: no mean, no bias), no biases anywhere;
- attention scores are **not** scaled by 1/sqrt(d) (the initialisation absorbs it);
- FFN: ReLU (original T5) or gated GELU (T5 v1.1, "gated-gelu" = GeGLU with tanh GELU);
- one embedding table shared by encoder, decoder and (original T5) the output layer, whose input is
  then scaled by ``d_model ** -0.5``.

Decoding (greedy, beam search) is in ``gpt/encoders/t5_decode.py``, training on Multi30k En->De in
``gpt/tasks/translation.py`` (``python -m gpt.tasks.translation``). ``gpt.encoders.t5_hf.from_hf``
copies a ``transformers`` ``T5ForConditionalGeneration``; ``tests/test_t5.py`` checks logits and
``generate`` against it.

References: HF ``models/t5/modeling_t5.py``; Mesh TensorFlow ``transformer_layers.py``
(``_relative_position_bucket``). Norm: :class:`gpt.norms.RMSNorm`; FFN: :class:`gpt.feedforward.MLP`;
attention: :class:`gpt.encoders.mha.MultiHeadAttention`.
"""

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gpt.attention import ATTN_IMPLS, causal_mask, padding_mask
from gpt.encoders.mha import MultiHeadAttention
from gpt.feedforward import MLP
from gpt.model import IGNORE_INDEX, token_cross_entropy
from gpt.norms import RMSNorm

ACTIVATIONS = ("relu", "geglu")  # T5 "relu" and T5 v1.1 "gated-gelu"


@dataclass
class T5Config:
    """Shape of the model. Defaults are t5-small (60M); ``n_decoder_layer`` None means ``n_layer``."""

    vocab_size: int = 32128
    n_embd: int = 512  # d_model
    n_head: int = 8
    head_dim: int = 64  # d_kv; n_head * head_dim need not equal n_embd
    ffn_hidden: int = 2048  # d_ff
    n_layer: int = 6  # encoder blocks
    n_decoder_layer: int | None = None
    num_buckets: int = 32
    max_distance: int = 128
    activation: str = "relu"  # relu | geglu
    norm_eps: float = 1e-6
    dropout: float = 0.1
    tie_embeddings: bool = True  # the output layer is the shared embedding matrix
    scale_logits: bool | None = None  # multiply the decoder output by n_embd**-0.5; None: = tie_embeddings
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_id: int = 0  # T5 starts every target with the pad token
    attn_impl: str = "sdpa"  # sdpa | manual
    bias: bool = field(default=False, init=False)  # T5 has no biases (read by gpt.feedforward.MLP)

    def __post_init__(self):
        if self.n_decoder_layer is None:
            self.n_decoder_layer = self.n_layer
        if self.scale_logits is None:
            self.scale_logits = self.tie_embeddings
        for name in (
            "vocab_size",
            "n_embd",
            "n_head",
            "head_dim",
            "ffn_hidden",
            "n_layer",
            "n_decoder_layer",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"T5Config.{name} must be a positive int, got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}; choose one of {ACTIVATIONS}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl={self.attn_impl!r}; choose one of {ATTN_IMPLS}")
        if self.num_buckets < 4 or self.max_distance <= self.num_buckets // 4:
            raise ValueError(
                f"need num_buckets >= 4 and max_distance > num_buckets/4, got {self.num_buckets}, "
                f"{self.max_distance}"
            )
        for name in ("pad_id", "eos_id", "decoder_start_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"T5Config.{name}={getattr(self, name)} is outside the vocabulary")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def relative_position_bucket(
    relative: Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> Tensor:
    """Bucket of each ``key_pos - query_pos``: exact below ``num_buckets / 2`` (halved again if signed), then
    logarithmic up to ``max_distance``, beyond which everything shares the last bucket.

    Bidirectional (encoder): half the buckets for keys to the right (relative > 0). Causal (decoder): only
    keys to the left exist, so every bucket goes to distances 0 .. max_distance into the past.
    """
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = (-relative).clamp(min=0)  # (T, S), >= 0: how far back the key is
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    log_ratio = torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()  # .long() truncates, as T5 does
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """One learned scalar per (bucket, head): (T, S) positions -> a (1, nh, T, S) bias on the scores."""

    def __init__(self, config: T5Config, bidirectional: bool):
        super().__init__()
        self.bidirectional = bidirectional
        self.num_buckets, self.max_distance = config.num_buckets, config.max_distance
        self.table = nn.Embedding(config.num_buckets, config.n_head)

    def forward(self, T: int, S: int) -> Tensor:
        device = self.table.weight.device
        relative = torch.arange(S, device=device)[None, :] - torch.arange(T, device=device)[:, None]  # (T, S)
        bucket = relative_position_bucket(relative, self.bidirectional, self.num_buckets, self.max_distance)
        return self.table(bucket).permute(2, 0, 1)[None]  # (1, nh, T, S)


class T5Block(nn.Module):
    """x + attn(norm(x)) [+ x + cross_attn(norm(x), encoder)] + x + ffn(norm(x)), all pre-norm."""

    def __init__(self, config: T5Config, is_decoder: bool):
        super().__init__()

        def attention():
            C, nh, hs = config.n_embd, config.n_head, config.head_dim
            return MultiHeadAttention(
                C, nh, hs, bias=False, scale=1.0, dropout=config.dropout, attn_impl=config.attn_impl
            )

        self.ln_1 = RMSNorm(config.n_embd, config.norm_eps)
        self.attn = attention()
        self.ln_cross = RMSNorm(config.n_embd, config.norm_eps) if is_decoder else None
        self.cross = attention() if is_decoder else None
        self.ln_2 = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = MLP(config)  # its output dropout is the residual dropout
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, bias: Tensor, enc: Tensor | None = None, cross_mask: Tensor | None = None):
        x = x + self.drop(self.attn(self.ln_1(x), attn_mask=bias))
        if self.cross is not None:
            x = x + self.drop(self.cross(self.ln_cross(x), enc, attn_mask=cross_mask))
        return x + self.mlp(self.ln_2(x))


def shift_right(targets: Tensor, start_id: int, pad_id: int) -> Tensor:
    """Decoder inputs for teacher forcing: ``[start, y_0, .., y_{T-2}]`` with -100 labels read as pad."""
    shifted = torch.full_like(targets, start_id)
    shifted[:, 1:] = targets[:, :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_id)


class T5(nn.Module):
    """``forward(src, tgt_in, src_mask=None, targets=None) -> (logits, loss)``; ``encode`` / ``decode``."""

    def __init__(self, config: T5Config):
        super().__init__()
        if not isinstance(config, T5Config):
            raise TypeError(f"T5 expects a T5Config, got {type(config).__name__}")
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.n_embd)
        self.enc_pos = RelativePositionBias(config, bidirectional=True)
        self.encoder = nn.ModuleList(T5Block(config, is_decoder=False) for _ in range(config.n_layer))
        self.enc_ln = RMSNorm(config.n_embd, config.norm_eps)
        self.dec_pos = RelativePositionBias(config, bidirectional=False)
        self.decoder = nn.ModuleList(T5Block(config, is_decoder=True) for _ in range(config.n_decoder_layer))
        self.dec_ln = RMSNorm(config.n_embd, config.norm_eps)
        self.drop = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.shared.weight
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self):
        # T5's initialisation (HF T5PreTrainedModel._init_weights, factor 1): each matrix ~ N(0, 1/fan_in),
        # so that unscaled q.k scores start at unit size; q gets the 1/sqrt(head_dim) here instead.
        C, hs = self.config.n_embd, self.config.head_dim
        nn.init.normal_(self.shared.weight, std=1.0)
        for name, p in self.named_parameters():
            if p.dim() < 2 or name == "shared.weight":
                continue
            if name.endswith(".q.weight"):
                nn.init.normal_(p, std=(C * hs) ** -0.5)
            elif name.endswith("table.weight"):
                nn.init.normal_(p, std=C**-0.5)
            else:
                nn.init.normal_(p, std=p.size(1) ** -0.5)  # (out, in): 1/sqrt(fan_in)

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """src (B, S) ids, src_mask (B, S) 1 = real token -> encoder output (B, S, C)."""
        if src.dim() != 2:
            raise ValueError(
                f"src must be (B, S), got shape {tuple(src.shape)}; add a batch dim with src[None]"
            )
        S = src.size(1)
        bias = self.enc_pos(S, S)  # (1, nh, S, S), shared by every encoder layer
        if src_mask is not None:
            bias = bias.masked_fill(~padding_mask(src_mask), float("-inf"))  # (B, nh, S, S)
        x = self.drop(self.shared(src))  # (B, S, C)
        for block in self.encoder:
            x = block(x, bias)
        return self.drop(self.enc_ln(x))

    def decode(self, tgt_in: Tensor, enc: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """tgt_in (B, T) decoder inputs (start token first), enc (B, S, C) -> logits (B, T, vocab)."""
        T = tgt_in.size(1)
        bias = self.dec_pos(T, T).masked_fill(~causal_mask(T, device=tgt_in.device), float("-inf"))
        cross_mask = None if src_mask is None else padding_mask(src_mask)  # (B, 1, 1, S)
        x = self.drop(self.shared(tgt_in))  # (B, T, C)
        for block in self.decoder:
            x = block(x, bias, enc, cross_mask)
        x = self.drop(self.dec_ln(x))
        if self.config.scale_logits:  # original T5: the tied output layer sees x / sqrt(d_model)
            x = x * self.config.n_embd**-0.5
        return self.lm_head(x)

    def forward(
        self, src: Tensor, tgt_in: Tensor, src_mask: Tensor | None = None, targets: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: logits (B, T, vocab) for decoder inputs ``tgt_in`` (``shift_right(targets)``)
        and, with targets (B, T) (-100 = ignored), the mean cross-entropy."""
        logits = self.decode(tgt_in, self.encode(src, src_mask), src_mask)
        loss = None if targets is None else token_cross_entropy(logits, targets, tgt_in)
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
