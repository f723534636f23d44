"""Prefix tuning (Li and Liang 2021): trainable keys and values in front of every layer's attention.

Teaches what prompt tuning (``prompt_tuning.py``) leaves on the table: instead of P vectors at the input,
every layer gets P trainable key/value pairs that its queries attend to, as if P tokens had been seen
before the input, but tokens whose keys and values at each layer are free parameters. The model stays
frozen; a prefix is a tensor of shape (n_layer, 2, n_kv_head, P, head_dim).

It needs no change to the model: the prefix enters through gpt's :class:`gpt.KVCache` protocol.
:class:`PrefixCache` is a cache that, at every layer, returns the prefix keys/values followed by the new
ones, and hands the tokens positions P, P+1, ... A key in a cache is stored already rotated by RoPE, and
the prefix is used as stored, unrotated: exactly how Hugging Face treats ``past_key_values`` and so how
peft's ``PREFIX_TUNING`` builds it (``PeftModel.get_prompt`` puts the raw embedding in a ``DynamicCache``;
the Llama model then starts ``cache_position``/``position_ids`` at P and lets every query see the P
prefix slots). Wrapped around a real cache (``inner``), it also decodes token by token.

``init="text"`` follows the paper's advice to start from the activations of real words (section 7.2):
the prefix is the keys/values the frozen model computes for a text, so at init prefix tuning equals
prepending that text. peft's default (``init="random"``) draws N(0, 1), ``nn.Embedding``'s init.

References: Li and Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation"; peft
``tuners/prefix_tuning/model.py`` (``PrefixEncoder``, ``prefix_projection=False``) and ``peft_model.py``
(``get_prompt``, ``PeftModelForCausalLM.forward``).
"""

import math

import torch
from torch import Tensor, nn

from gpt.attention import CacheStep
from gpt.model import GPT, GPTConfig
from kvcache.contiguous import ContiguousKVCache

INITS = ("text", "random")


class PrefixCache:
    """A :class:`gpt.KVCache` that puts ``prefix`` (L, 2, nkv, P, hs) before the keys/values of each layer.

    Without ``inner`` it serves one forward call of ``batch_size`` sequences (training, scoring): the keys
    are the prefix and the call's own. With ``inner`` (any empty KVCache) it wraps that cache, shifts its
    positions by P and widens its mask by P always-visible slots, so decoding works as without a prefix;
    the inner cache's lengths plus P must stay within the model's block_size (``PrefixTuning`` checks).
    """

    def __init__(self, prefix: Tensor, batch_size: int, inner=None):
        self.prefix, self.batch_size, self.inner = prefix, batch_size, inner
        self.P = prefix.size(3)
        self._used = False

    def begin(self, T: int) -> CacheStep:
        P, B = self.P, self.batch_size
        if self.inner is None:
            if self._used:
                raise ValueError(
                    "a PrefixCache without an inner cache serves one forward call; to decode token by token "
                    "pass inner=ContiguousKVCache(...) (PrefixTuning.generate does)"
                )
            self._used = True
            positions = P + torch.arange(T, device=self.prefix.device).expand(B, T)  # (B, T)
            # attn_mask None: the T queries are the last T of the P + T keys, so the model's shifted causal
            # mask lets query t see the whole prefix and tokens 0..t
            return CacheStep(positions=positions)
        step = self.inner.begin(T)
        mask, key_pos = step.attn_mask, step.key_positions
        if mask is not None:  # (B, 1, T, S) -> (B, 1, T, P + S): every query sees the prefix
            seen = torch.ones(*mask.shape[:-1], P, dtype=mask.dtype, device=mask.device)
            mask = torch.cat([seen, mask], dim=-1)
        if key_pos is not None:  # (B, S) -> (B, P + S), for ALiBi distances
            first = torch.arange(P, device=key_pos.device).expand(key_pos.size(0), P)
            key_pos = torch.cat([first, key_pos + P], dim=1)
        return CacheStep(positions=step.positions + P, attn_mask=mask, key_positions=key_pos)

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.inner is not None:
            k, v = self.inner.update(layer_idx, k, v)  # (B, nkv, S, hs)
        B = k.size(0)
        pk, pv = self.prefix[layer_idx].to(k.dtype).unbind(0)  # (nkv, P, hs) each
        k = torch.cat([pk.expand(B, -1, -1, -1), k], dim=2)  # (B, nkv, P + S, hs)
        v = torch.cat([pv.expand(B, -1, -1, -1), v], dim=2)
        return k, v


def prefix_shape(config: GPTConfig, n_virtual: int) -> tuple[int, int, int, int, int]:
    """(n_layer, 2, n_kv_head, P, head_dim): a key and a value per layer, KV head and virtual token."""
    return (config.n_layer, 2, config.n_kv_head, n_virtual, config.head_dim)


def prefix_param_count(config: GPTConfig, n_virtual: int) -> int:
    """Trainable parameters of prefix tuning: 2 * n_layer * n_kv_head * head_dim per virtual token."""
    return math.prod(prefix_shape(config, n_virtual))


@torch.no_grad()
def init_prefix(
    model: GPT,
    n_virtual: int,
    init: str = "text",
    text: str | None = None,
    tokenizer=None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(L, 2, nkv, P, hs) float32 starting prefix for ``model``.

    ``init="text"`` runs ``model`` on ``tokenizer.encode(text)`` (repeated or cropped to ``n_virtual``
    tokens) and keeps every layer's keys (RoPE-rotated at positions 0..P-1, as a cache stores them) and
    values. ``"random"`` draws N(0, 1) with ``generator``.
    """
    if not isinstance(n_virtual, int) or n_virtual < 1:
        raise ValueError(f"n_virtual={n_virtual!r} must be a positive int (the number of virtual tokens)")
    if init not in INITS:
        raise ValueError(f"init={init!r}; choose one of {INITS}")
    cfg, w = model.config, model.wte.weight
    if n_virtual >= cfg.block_size:
        raise ValueError(f"n_virtual={n_virtual} leaves no room for tokens in block_size={cfg.block_size}")
    if init == "random":
        return torch.randn(prefix_shape(cfg, n_virtual), generator=generator).to(w.device)
    if not text or tokenizer is None:
        raise ValueError("init='text' needs a non-empty text and a tokenizer with .encode(text)")
    ids = list(tokenizer.encode(text))
    if not ids:
        raise ValueError(f"the tokenizer turned text={text!r} into no tokens")
    ids = (ids * math.ceil(n_virtual / len(ids)))[:n_virtual]  # repeat, then crop, as prompt tuning
    cache = ContiguousKVCache(cfg, 1, n_virtual, w.dtype, w.device)
    model(torch.tensor([ids], device=w.device), cache=cache)
    return torch.stack([cache.k[:, 0], cache.v[:, 0]], dim=1).float()  # (L, 2, nkv, P, hs)


class PrefixTuning(nn.Module):
    """A frozen :class:`gpt.GPT` whose every layer attends first to a trainable ``prefix``.

    ``prefix``: (n_layer, 2, n_kv_head, P, head_dim), keys at ``[:, 0]`` and values at ``[:, 1]``, kept in
    float32. ``forward(idx, targets)`` returns what ``GPT.forward`` returns for idx: logits (B, T, vocab)
    and the loss. Wrapping freezes the model: only ``prefix`` trains.
    """

    def __init__(self, model: GPT, prefix: Tensor):
        super().__init__()
        if not isinstance(model, GPT):
            raise TypeError(f"PrefixTuning wraps a gpt.GPT, got {type(model).__name__}")
        L, _, nkv, _, hs = prefix_shape(model.config, 1)
        shape = tuple(prefix.shape) if isinstance(prefix, Tensor) else type(prefix).__name__
        if not isinstance(prefix, Tensor) or prefix.dim() != 5 or shape[:3] != (L, 2, nkv) or shape[4] != hs:
            raise ValueError(
                f"prefix must be (n_layer={L}, 2, n_kv_head={nkv}, P, head_dim={hs}), got {shape}"
            )
        self.model = model.requires_grad_(False)
        self.prefix = nn.Parameter(prefix.detach().float().clone())  # (L, 2, nkv, P, hs)

    @property
    def n_virtual(self) -> int:
        return self.prefix.size(3)

    def _check_room(self, T: int):
        block_size = self.model.config.block_size
        if self.n_virtual + T > block_size:
            raise ValueError(
                f"{self.n_virtual} prefix slots + {T} tokens exceed block_size={block_size}: the tokens "
                "sit at positions P, P+1, ...; crop the input"
            )

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) -> logits (B, T, vocab) and, with targets (B, T), the mean loss, behind the prefix."""
        if not isinstance(idx, Tensor) or idx.dim() != 2:
            got = tuple(idx.shape) if isinstance(idx, Tensor) else type(idx).__name__
            raise ValueError(f"idx must be (B, T) token ids, got {got}")
        self._check_room(idx.size(1))
        return self.model(idx, targets, cache=PrefixCache(self.prefix, idx.size(0)))

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, cache=None, **sampling) -> Tensor:
        """Append ``max_new_tokens`` tokens to idx (B, T) behind the prefix; returns (B, T + new).

        ``cache``: an empty :class:`gpt.KVCache` to decode with (default: a
        :class:`kvcache.contiguous.ContiguousKVCache` just big enough), wrapped in a :class:`PrefixCache`.
        ``sampling``: ``GPT.generate``'s temperature, top_k, top_p, eos_id, seed, ...
        """
        B, T = idx.shape
        needed = T + max(max_new_tokens - 1, 0)  # the last sampled token is never fed
        self._check_room(needed)
        w = self.model.wte.weight
        inner = ContiguousKVCache(self.model.config, B, needed, w.dtype, w.device) if cache is None else cache
        return self.model.generate(idx, max_new_tokens, cache=PrefixCache(self.prefix, B, inner), **sampling)


def prefix_tune(
    model: GPT,
    n_virtual: int,
    init: str = "text",
    text: str | None = None,
    tokenizer=None,
    generator: torch.Generator | None = None,
) -> PrefixTuning:
    """Freeze ``model`` and wrap it with an ``n_virtual``-slot trainable prefix (see :func:`init_prefix`)."""
    return PrefixTuning(model, init_prefix(model, n_virtual, init, text, tokenizer, generator))


def to_peft(prefix: Tensor) -> Tensor:
    """Our (L, 2, nkv, P, hs) -> peft's ``prompt_encoder.embedding.weight`` (P, L * 2 * nkv * hs).

    peft views each row as (2L, nkv, hs) with layer l's key at 2l and its value at 2l + 1
    (``PeftModel.get_prompt``: ``view(B, P, 2L, nkv, hs).permute(2, 0, 3, 1, 4).split(2)``)."""
    return prefix.permute(3, 0, 1, 2, 4).reshape(prefix.size(3), -1)  # (P, L, 2, nkv, hs) flattened


def from_peft(weight: Tensor, config: GPTConfig) -> Tensor:
    """peft's (P, L * 2 * nkv * hs) prefix embedding -> our (L, 2, nkv, P, hs)."""
    L, _, nkv, _, hs = prefix_shape(config, 1)
    if weight.dim() != 2 or weight.size(1) != L * 2 * nkv * hs:
        raise ValueError(
            f"a peft prefix for this model is (P, {L * 2 * nkv * hs}) = (P, n_layer*2*n_kv_head*head_dim), "
            f"got {tuple(weight.shape)}"
        )
    return weight.view(weight.size(0), L, 2, nkv, hs).permute(1, 2, 3, 0, 4)  # (L, 2, nkv, P, hs)
