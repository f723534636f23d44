"""A decoder-only transformer that can be GPT-2 or Llama: one config, one Block, one GPT.

Teaches how the pieces of ``attention.py``, ``positions.py``, ``norms.py`` and ``feedforward.py`` compose:
token embedding (+ learned or sinusoidal positions), ``n_layer`` pre-norm blocks
``x = x + attn(norm(x)); x = x + mlp(norm(x))``, a final norm and a language-model head (tied to the
token embedding or not). Unlike nanoGPT's ``model.py``, which it follows closely, the same code also
builds Llama-style models (RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases), loads Hugging Face
GPT-2 and Llama weights exactly (``gpt/hf.py``, which imports this file, never the other way round)
and accepts a KV cache through the protocol in ``gpt/attention.py``.

References: nanoGPT ``model.py`` (Karpathy); HF ``models/gpt2/modeling_gpt2.py`` and
``models/llama/modeling_llama.py`` (checked against in ``tests/test_gpt_hf.py``).
"""

import inspect
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpt.accounting import param_counts, training_flops_per_token
from gpt.attention import ATTN_IMPLS, CacheStep, CausalSelfAttention
from gpt.feedforward import ACTIVATIONS, GATED, MLP
from gpt.norms import make_norm
from gpt.positions import rope_cos_sin, sinusoidal_table
from gpt.sampling import sample_next

POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "none")
NORMS = ("layernorm", "rmsnorm")
IGNORE_INDEX = -100  # targets equal to this are left out of the loss (as in HF and F.cross_entropy)


def token_cross_entropy(logits: Tensor, targets: Tensor, inputs: Tensor) -> Tensor:
    """Mean cross-entropy of logits (B, T, vocab) against targets (B, T), skipping IGNORE_INDEX entries.

    ``inputs`` is what the logits were computed from (B, T); a targets tensor of another shape is the
    usual mistake (e.g. forgetting to shift), so it is named. The softmax runs in fp32 under autocast.
    """
    if targets.shape != inputs.shape:
        raise ValueError(
            f"targets shape {tuple(targets.shape)} must equal the input shape {tuple(inputs.shape)}"
        )
    return F.cross_entropy(
        logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )


@dataclass
class GPTConfig:
    """Shape and flavour of the model. Defaults are GPT-2 small (124M); :meth:`llama` gives Llama's.

    ``n_kv_head`` (default ``n_head``: plain multi-head attention) and ``ffn_hidden`` (default
    ``4 * n_embd``) are filled in by ``__post_init__`` only when left as None; ``head_dim`` is derived.
    """

    vocab_size: int = 50257
    block_size: int = 1024  # longest sequence the model accepts (rows of the learned position table)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_kv_head: int | None = None
    ffn_hidden: int | None = None
    activation: str = "gelu_tanh"  # relu | gelu | gelu_tanh | swiglu | geglu
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    pos: str = "learned"  # learned | sinusoidal | rope | alibi | none
    rope_theta: float = 10000.0
    bias: bool = True  # biases in every Linear and LayerNorm
    tie_embeddings: bool = True  # lm_head shares the token embedding matrix
    dropout: float = 0.0
    attn_impl: str = "sdpa"  # sdpa (torch kernels) | manual (the written-out attention, for teaching)
    head_dim: int = field(init=False)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} must be divisible by n_head={self.n_head} "
                "(each head gets n_embd / n_head channels)"
            )
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.n_kv_head < 1 or self.n_head % self.n_kv_head:
            raise ValueError(
                f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head} "
                "(each key/value head serves a whole group of query heads)"
            )
        if self.ffn_hidden is None:
            self.ffn_hidden = 4 * self.n_embd
        if self.ffn_hidden < 1:
            raise ValueError(f"ffn_hidden must be positive, got {self.ffn_hidden}")
        choices = (("activation", tuple(ACTIVATIONS)), ("norm", NORMS), ("pos", POSITIONS))
        for name, allowed in (*choices, ("attn_impl", ATTN_IMPLS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"GPTConfig.{name}={getattr(self, name)!r}; choose one of {allowed}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.head_dim = self.n_embd // self.n_head
        if self.pos == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE rotates channel pairs: head_dim={self.head_dim} must be even")
        if self.pos == "sinusoidal" and self.n_embd % 2:
            raise ValueError(f"sinusoidal positions need an even n_embd, got {self.n_embd}")

    @property
    def gated_ffn(self) -> bool:
        return self.activation in GATED

    @classmethod
    def llama(cls, **kwargs) -> "GPTConfig":
        """Llama flavour: RoPE, RMSNorm (eps 1e-6), SwiGLU, no biases, untied head; override any field."""
        flavour = dict(pos="rope", norm="rmsnorm", norm_eps=1e-6, activation="swiglu", bias=False)
        flavour["tie_embeddings"] = False
        return cls(**{**flavour, **kwargs})

    def param_counts_kwargs(self) -> dict:
        """Arguments for :func:`gpt.accounting.param_counts` describing this model."""
        return dict(
            n_layer=self.n_layer,
            n_embd=self.n_embd,
            n_head=self.n_head,
            vocab_size=self.vocab_size,
            block_size=self.block_size,
            n_kv_head=self.n_kv_head,
            ffn_hidden=self.ffn_hidden,
            gated_ffn=self.gated_ffn,
            bias=self.bias,
            norm=self.norm,
            learned_positions=self.pos == "learned",
            tied_embeddings=self.tie_embeddings,
        )


class Block(nn.Module):
    """One pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = make_norm(config.norm, config.n_embd, config.norm_eps, config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = make_norm(config.norm, config.n_embd, config.norm_eps, config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: Tensor, positions: Tensor, step: CacheStep | None = None, cache=None, rope=None
    ) -> Tensor:
        x = x + self.attn(self.ln_1(x), positions, step, cache, rope)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The language model: ``forward(idx, targets=None, cache=None) -> (logits, loss)``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT expects a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.pos == "learned" else None
        if config.pos == "sinusoidal":
            self.register_buffer("pe", sinusoidal_table(config.block_size, config.n_embd), persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = make_norm(config.norm, config.n_embd, config.norm_eps, config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight  # one matrix, used to embed and to unembed
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer): two residual adds per layer
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # -- forward ------------------------------------------------------------------------------------

    def forward(
        self,
        idx: Tensor | None = None,
        targets: Tensor | None = None,
        cache=None,
        logits_rows: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) long token ids -> logits (B, T, vocab) and, with targets (B, T), the mean loss.

        ``inputs_embeds`` (B, T, C) replaces ``self.wte(idx)`` (pass exactly one of the two; HF's name):
        soft prompts and image embeddings enter the decoder here; positions are added as for tokens.

        ``targets[b, t]`` is the token that should follow ``idx[b, t]`` (already shifted); entries equal
        to -100 are ignored. ``cache`` is any :class:`gpt.attention.KVCache`. ``logits_rows`` (n,) picks
        rows of the flattened (B * T) positions to project to the vocabulary, and logits come back as
        (n, vocab): a server sampling one token per sequence skips the vocabulary matmul for every other
        position (HF's ``logits_to_keep``).

        Only shapes and dtypes are checked here (metadata: no GPU->CPU sync). Token ids are not
        range-checked and, with a cache, neither are positions: that happens once where the input enters
        (``generate``, the engine's ``add_request``, the training loop's first batch).
        """
        if (idx is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of idx (B, T) token ids or inputs_embeds (B, T, C)")
        if inputs_embeds is not None:
            C = self.config.n_embd
            if not isinstance(inputs_embeds, Tensor) or not inputs_embeds.is_floating_point():
                e = inputs_embeds
                got = e.dtype if isinstance(e, Tensor) else type(e).__name__
                raise TypeError(f"inputs_embeds must be a floating-point tensor (B, T, C), got {got}")
            if inputs_embeds.dim() != 3 or inputs_embeds.size(-1) != C:
                shape = tuple(inputs_embeds.shape)
                raise ValueError(f"inputs_embeds must be (B, T, C={C}), got shape {shape}")
            inputs = inputs_embeds[..., 0]  # (B, T): a view whose shape stands for the input's
        else:
            if not isinstance(idx, Tensor) or idx.dtype not in (torch.long, torch.int32, torch.int64):
                got = idx.dtype if isinstance(idx, Tensor) else type(idx).__name__
                raise TypeError(f"idx must be an integer tensor of token ids (torch.long), got {got}")
            if idx.dim() != 2:
                raise ValueError(
                    f"idx must be (B, T), got shape {tuple(idx.shape)}; add a batch dim with idx[None]"
                )
            inputs = idx
        B, T = inputs.shape
        step = None
        if cache is not None:
            # the cache's positions live on the device: reading their max here would stall every decode
            # step on a GPU->CPU sync, so whoever fills the cache keeps them below block_size (the
            # contiguous cache's max_len, generate's entry, the engine's add_request)
            step = cache.begin(T)
            positions = step.positions  # (B, T), each sequence's own positions
            assert positions.shape == (B, T), f"cache positions {tuple(positions.shape)} != {(B, T)}"
        else:
            if inputs.size(1) > self.config.block_size:  # a Python int: no sync
                raise ValueError(
                    f"sequence of length {T} is longer than block_size={self.config.block_size} "
                    "(the context the model was configured for); crop the input to the last block_size "
                    "tokens or build the model with a larger block_size"
                )
            positions = torch.arange(T, device=inputs.device)[None]  # (1, T): the same for every sequence

        x = self.wte(idx) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(positions)
        elif self.config.pos == "sinusoidal":
            x = x + self.pe[positions].to(x.dtype)
        x = self.drop(x)
        rope = None
        if self.config.pos == "rope":  # the same angles serve every layer: compute them once
            rope = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, dtype=x.dtype)
        for block in self.h:
            x = block(x, positions, step, cache, rope)
        x = self.ln_f(x)
        if logits_rows is not None:
            if targets is not None:
                raise ValueError("logits_rows and targets cannot be combined: the loss needs every position")
            return self.lm_head(x.flatten(0, 1)[logits_rows]), None  # (n, vocab)
        logits = self.lm_head(x)  # (B, T, vocab)
        loss = None if targets is None else token_cross_entropy(logits, targets, inputs)
        return logits, loss

    # -- generation ---------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        cache=None,
        vocab_limit: int | None = None,
    ) -> Tensor:
        """Append ``max_new_tokens`` tokens to idx (B, T) and return (B, T + new).

        ``temperature=0`` is greedy (what HF calls ``do_sample=False``). Pass ``seed`` or a
        ``generator`` for reproducible sampling. With ``eos_id``, a finished sequence is padded with
        ``eos_id`` and generation stops early once every sequence has finished. Without a ``cache`` the
        whole (cropped) context is recomputed each step; with an empty :class:`KVCache` only the new
        token is fed after the first step. ``vocab_limit`` samples only ids below it: a vocabulary padded
        for speed (50257 -> 50304) has rows that are not tokens.
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if isinstance(idx, Tensor) and idx.numel() and not idx.is_floating_point():  # once per call
            lo, hi, vocab = int(idx.min()), int(idx.max()), self.config.vocab_size
            if lo < 0 or hi >= vocab:
                raise ValueError(f"token ids in [{lo}, {hi}] are outside the vocabulary [0, {vocab})")
        T, block_size = idx.size(-1), self.config.block_size
        if cache is not None and max_new_tokens > 0 and T + max_new_tokens - 1 > block_size:
            raise ValueError(
                f"a {T}-token prompt and max_new_tokens={max_new_tokens} put {T + max_new_tokens - 1} tokens "
                f"in the cache, more than block_size={block_size}; without a cache generate slides the "
                "context window, with one it cannot: lower max_new_tokens or crop the prompt"
            )
        if vocab_limit is not None and not 1 <= vocab_limit <= self.config.vocab_size:
            raise ValueError(f"vocab_limit={vocab_limit} must be in 1..vocab_size={self.config.vocab_size}")
        if seed is not None:
            if generator is not None:
                raise ValueError("pass either seed or generator, not both")
            generator = torch.Generator(device=idx.device).manual_seed(seed)
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        feed = idx
        for _ in range(max_new_tokens):
            if cache is None:
                feed = idx[:, -self.config.block_size :]
            logits, _ = self(feed, cache=cache)
            logits = logits[:, -1, :vocab_limit]  # (B, V), padding rows dropped
            nxt = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
            if eos_id is not None:
                nxt = nxt.masked_fill(done[:, None], eos_id)
                done = done | (nxt[:, 0] == eos_id)
            idx = torch.cat([idx, nxt], dim=1)
            feed = nxt
            if eos_id is not None and bool(done.all()):
                break
        return idx

    # -- accounting and optimisation ----------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once each (a tied head is the embedding). ``non_embedding`` leaves out the
        token and position tables, as :attr:`gpt.accounting.ParamCounts.non_embedding` does."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
            if self.wpe is not None:
                n -= self.wpe.weight.numel()
        return n

    def estimate_mfu(
        self, tokens_per_iter: int, dt: float, peak_flops: float, seq_len: int | None = None
    ) -> float:
        """Model FLOPs utilisation: achieved training FLOP/s over ``peak_flops`` (the device's, per second).

        Uses :func:`gpt.accounting.training_flops_per_token` with the weights that multiply
        (:attr:`gpt.accounting.ParamCounts.matmul`: attention, MLP and the output projection, tied or
        not) and ``seq_len`` (default ``block_size``). E.g. A100 bf16 dense: 312e12; H100 SXM: 989e12.
        """
        if dt <= 0 or peak_flops <= 0:
            raise ValueError(f"dt and peak_flops must be positive, got dt={dt}, peak_flops={peak_flops}")
        cfg = self.config
        seq_len = cfg.block_size if seq_len is None else seq_len
        matmul_params = param_counts(**cfg.param_counts_kwargs()).matmul
        per_token = training_flops_per_token(matmul_params, cfg.n_layer, cfg.n_embd, seq_len)
        return per_token * tokens_per_iter / dt / peak_flops

    def configure_optimizers(
        self,
        weight_decay: float = 0.1,
        learning_rate: float = 6e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        device_type: str | None = None,
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices (dim >= 2: Linear and embedding weights) and none on biases
        and norm gains; the fused CUDA kernel when available."""
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        decay = [p for p in params.values() if p.dim() >= 2]
        no_decay = [p for p in params.values() if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        device_type = next(self.parameters()).device.type if device_type is None else device_type
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        extra = {"fused": True} if fused else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)
