"""A BERT-style encoder: bidirectional attention, post-LayerNorm, and sentence embeddings by mean pooling.

Unlike the decoder in ``model.py``, every token attends to every other (real) token in both directions:
the only mask is the padding mask. BERT's other differences from GPT-2 are all in this file (Devlin et al.
2019, section 3):

- the input is the sum of three embeddings: token, learned absolute position, and **token type**
  (segment A = 0 / B = 1, for sentence pairs), followed by a LayerNorm;
- blocks are **post-norm**, ``x = LN(x + attn(x)); x = LN(x + ffn(x))`` (GPT-2 moved the norm in front);
- the FFN uses exact (erf) GELU; LayerNorm eps is 1e-12.

Sentence embeddings (Reimers & Gurevych 2019, Sentence-BERT) average the last hidden states over the
real tokens and L2-normalise: :func:`mean_pool`, :func:`sentence_embedding`. ``Bert.from_hf`` copies a
``transformers`` ``BertModel``; ``tests/test_bert.py`` reproduces sentence-transformers'
all-MiniLM-L6-v2 embeddings to 1e-5. The masked-LM head and objective are in ``gpt/encoders/mlm.py``.

References: HF ``models/bert/modeling_bert.py``; sentence-transformers ``models/Pooling.py`` and
``models/Normalize.py``. The attention is :class:`gpt.encoders.mha.MultiHeadAttention`, the FFN
:class:`gpt.feedforward.MLP` and the norm :class:`gpt.norms.LayerNorm`.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpt.attention import ATTN_IMPLS, padding_mask
from gpt.encoders.mha import MultiHeadAttention
from gpt.feedforward import ACTIVATIONS, GATED, HF_ACTIVATIONS, MLP
from gpt.norms import LayerNorm
from gpt.state_dict import load_checked


@dataclass
class BertConfig:
    """Shape of the encoder. Defaults are BERT-base (110M); ``ffn_hidden`` None means ``4 * n_embd``."""

    vocab_size: int = 30522
    block_size: int = 512  # rows of the learned position table (HF max_position_embeddings)
    type_vocab_size: int = 2
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    ffn_hidden: int | None = None
    activation: str = "gelu"  # exact erf GELU, as BERT; any of gpt.feedforward.ACTIVATIONS that is not gated
    norm_eps: float = 1e-12
    dropout: float = 0.1
    pooler: bool = False  # HF BertModel's tanh(dense(h_CLS)) head (next-sentence prediction)
    pad_id: int = 0
    attn_impl: str = "sdpa"  # sdpa | manual
    bias: bool = field(default=True, init=False)  # every BERT Linear has a bias (read by gpt.feedforward.MLP)
    head_dim: int = field(init=False)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "type_vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"BertConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.ffn_hidden is None:
            self.ffn_hidden = 4 * self.n_embd
        if self.activation not in ACTIVATIONS or self.activation in GATED:
            raise ValueError(f"activation={self.activation!r}; choose relu, gelu or gelu_tanh")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl={self.attn_impl!r}; choose one of {ATTN_IMPLS}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.head_dim = self.n_embd // self.n_head


class BertLayer(nn.Module):
    """One post-norm encoder block: x = LN(x + attn(x)), then x = LN(x + mlp(x))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.n_embd
        self.attn = MultiHeadAttention(
            C, config.n_head, config.head_dim, bias=True, dropout=config.dropout, attn_impl=config.attn_impl
        )
        self.drop = nn.Dropout(config.dropout)
        self.ln_1 = LayerNorm(C, config.norm_eps)
        self.mlp = MLP(config)
        self.ln_2 = LayerNorm(C, config.norm_eps)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = self.ln_1(x + self.drop(self.attn(x, attn_mask=mask)))
        return self.ln_2(x + self.mlp(x))


class Bert(nn.Module):
    """The encoder: ``forward(idx, token_type_ids=None, attention_mask=None) -> hidden (B, T, C)``."""

    def __init__(self, config: BertConfig):
        super().__init__()
        if not isinstance(config, BertConfig):
            raise TypeError(f"Bert expects a BertConfig, got {type(config).__name__}")
        self.config = config
        C = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, C)
        self.wpe = nn.Embedding(config.block_size, C)
        self.wtt = nn.Embedding(config.type_vocab_size, C)
        self.ln_emb = LayerNorm(C, config.norm_eps)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(BertLayer(config) for _ in range(config.n_layer))
        self.pooler = nn.Linear(C, C) if config.pooler else None
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        # BERT's initialisation: N(0, 0.02) for every matrix, zero biases (HF initializer_range)
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self, idx: Tensor, token_type_ids: Tensor | None = None, attention_mask: Tensor | None = None
    ) -> Tensor:
        """idx (B, T) ids; token_type_ids (B, T) segments (default 0); attention_mask (B, T), 1 = real."""
        if idx.dim() != 2:
            raise ValueError(
                f"idx must be (B, T), got shape {tuple(idx.shape)}; add a batch dim with idx[None]"
            )
        T = idx.size(1)
        if T > self.config.block_size:  # noqa: SIM300 (T, not a constant: the sequence length)
            raise ValueError(
                f"sequence of length {T} is longer than block_size={self.config.block_size}; truncate the "
                "input (WordPieceTokenizer(max_length=...)) or build the model with a larger block_size"
            )
        positions = torch.arange(T, device=idx.device)[None]  # (1, T)
        token_type_ids = torch.zeros_like(idx) if token_type_ids is None else token_type_ids
        x = self.wte(idx) + self.wpe(positions) + self.wtt(token_type_ids)  # (B, T, C)
        x = self.drop(self.ln_emb(x))
        mask = None if attention_mask is None else padding_mask(attention_mask)  # (B, 1, 1, T)
        for layer in self.h:
            x = layer(x, mask)
        return x

    def pooled(self, hidden: Tensor) -> Tensor:
        """BERT's pooler: tanh(dense(hidden of [CLS])) -> (B, C); needs ``BertConfig(pooler=True)``."""
        if self.pooler is None:
            raise ValueError("this Bert has no pooler; build it with BertConfig(pooler=True)")
        return torch.tanh(self.pooler(hidden[:, 0]))

    @torch.no_grad()
    def sentence_embeddings(self, idx: Tensor, attention_mask: Tensor, token_type_ids=None) -> Tensor:
        """(B, C) unit vectors: mean of the last hidden states over real tokens, L2-normalised."""
        return sentence_embedding(self(idx, token_type_ids, attention_mask), attention_mask)

    # -- Hugging Face conversion (transformers is imported only by the caller) -------------------------

    @classmethod
    def from_hf(cls, hf_model, **overrides) -> "Bert":
        """Copy a ``transformers`` ``BertModel`` (with or without pooler) into a new Bert (same outputs)."""
        if type(hf_model).__name__ != "BertModel":
            raise ValueError(
                f"Bert.from_hf expects a transformers BertModel, got {type(hf_model).__name__} "
                "(a BertForMaskedLM goes to gpt.encoders.mlm.BertMLM.from_hf)"
            )
        sd = hf_model.state_dict()
        config = config_from_hf(hf_model.config, pooler="pooler.dense.weight" in sd, **overrides)
        model = cls(config)
        load_checked(model, hf_state_dict_to_ours(sd, config))
        return model.eval()


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """(B, T, C), (B, T) -> (B, C): the average of the real tokens' vectors (sentence-transformers "mean")."""
    m = attention_mask[..., None].to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def sentence_embedding(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean pooling then L2 normalisation, as all-MiniLM-L6-v2's Pooling + Normalize modules."""
    return F.normalize(mean_pool(hidden, attention_mask), p=2, dim=1)


def config_from_hf(hf_config, **overrides) -> BertConfig:
    """BertConfig equivalent to a ``transformers.BertConfig``; options we do not model raise ValueError."""
    kind = getattr(hf_config, "model_type", type(hf_config).__name__)
    if kind != "bert":
        raise ValueError(f"expected a BERT config (model_type 'bert'), got {kind!r}")
    position = getattr(hf_config, "position_embedding_type", "absolute")
    if position != "absolute":
        raise ValueError(f"position_embedding_type={position!r} is not supported (only 'absolute')")
    if hf_config.hidden_act not in HF_ACTIVATIONS:
        raise ValueError(
            f"hidden_act={hf_config.hidden_act!r} is not supported; use one of {list(HF_ACTIVATIONS)}"
        )
    if getattr(hf_config, "is_decoder", False) or getattr(hf_config, "add_cross_attention", False):
        raise ValueError("BERT as a decoder (is_decoder / add_cross_attention) is not supported")
    kw = dict(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.max_position_embeddings,
        type_vocab_size=hf_config.type_vocab_size,
        n_layer=hf_config.num_hidden_layers,
        n_head=hf_config.num_attention_heads,
        n_embd=hf_config.hidden_size,
        ffn_hidden=hf_config.intermediate_size,
        activation=HF_ACTIVATIONS[hf_config.hidden_act],
        norm_eps=hf_config.layer_norm_eps,
        dropout=hf_config.hidden_dropout_prob,  # one rate here, also for the attention weights
        pad_id=hf_config.pad_token_id if hf_config.pad_token_id is not None else 0,
    )
    return BertConfig(**{**kw, **overrides})


def hf_state_dict_to_ours(sd: dict[str, Tensor], config: BertConfig, prefix: str = "") -> dict[str, Tensor]:
    """Rename a BertModel state dict (keys under ``prefix``, e.g. "bert." in BertForMaskedLM) to ours."""

    def get(key: str) -> Tensor:
        if prefix + key not in sd:
            raise ValueError(
                f"HF state dict has no {prefix + key!r}, which the config (n_layer={config.n_layer}, "
                f"pooler={config.pooler}) needs: the model's config does not match its weights"
            )
        return sd[prefix + key]

    out = {
        "wte.weight": get("embeddings.word_embeddings.weight"),
        "wpe.weight": get("embeddings.position_embeddings.weight"),
        "wtt.weight": get("embeddings.token_type_embeddings.weight"),
        "ln_emb.weight": get("embeddings.LayerNorm.weight"),
        "ln_emb.bias": get("embeddings.LayerNorm.bias"),
    }
    names = {
        "attn.q": "attention.self.query",
        "attn.k": "attention.self.key",
        "attn.v": "attention.self.value",
        "attn.o": "attention.output.dense",
        "ln_1": "attention.output.LayerNorm",
        "mlp.c_fc": "intermediate.dense",
        "mlp.c_proj": "output.dense",
        "ln_2": "output.LayerNorm",
    }
    for i in range(config.n_layer):
        for ours, theirs in names.items():
            for leaf in ("weight", "bias"):
                out[f"h.{i}.{ours}.{leaf}"] = get(f"encoder.layer.{i}.{theirs}.{leaf}")
    if config.pooler:
        out["pooler.weight"], out["pooler.bias"] = get("pooler.dense.weight"), get("pooler.dense.bias")
    return out
