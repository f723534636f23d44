"""Masked language modelling: BERT's pre-training objective, its corruption recipe and its output head.

Unlike the causal objective of ``train.py`` (every position predicts the next token from the left only),
MLM hides some tokens and predicts them from **both** sides (Devlin et al. 2019, section 3.1, "Task #1"):

1. select 15% of the ordinary (non-special, non-padding) positions;
2. replace 80% of the selected tokens with ``[MASK]``, 10% with a random token, and leave 10% unchanged,
   so that the model cannot learn "only [MASK] positions matter" (a token it sees may still be asked
   about) and fine-tuning, which never shows ``[MASK]``, is not too far from pre-training;
3. compute the cross-entropy on the selected positions only (labels are -100 elsewhere).

Only 15% of the tokens give a training signal per pass, against 100% for a causal LM: one reason
decoder-only pre-training is more sample-efficient (compare both in ``notebooks/w4/4.3_pretraining``).

The head (:class:`MLMHead`) is BERT's ``cls.predictions``: dense + GELU + LayerNorm, then a projection
tied to the token embedding plus a bias. :class:`BertMLM` is ``gpt.encoders.bert.Bert`` + that head,
and loads HF ``BertForMaskedLM`` weights. References: HF ``models/bert/modeling_bert.py``
``BertLMPredictionHead``; HF ``data/data_collator.py`` ``DataCollatorForLanguageModeling.torch_mask_tokens``
(same recipe).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpt.encoders.bert import Bert, BertConfig, config_from_hf, hf_state_dict_to_ours
from gpt.feedforward import ACTIVATIONS
from gpt.model import IGNORE_INDEX
from gpt.norms import LayerNorm
from gpt.state_dict import load_checked


def mask_tokens(
    idx: Tensor,
    mask_id: int,
    vocab_size: int,
    maskable: Tensor,
    mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's corruption: returns ``(inputs, labels)``, both (B, T) long.

    ``maskable`` (B, T) bool marks the positions that may be selected (not [CLS]/[SEP]/padding).
    ``labels`` holds the original token at selected positions and -100 elsewhere. Seed ``generator`` for
    reproducible masks.
    """
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
    if maskable.shape != idx.shape or maskable.dtype != torch.bool:
        raise ValueError(f"maskable must be a bool tensor of shape {tuple(idx.shape)}, got {maskable.dtype}")
    kw = dict(generator=generator, device=idx.device)
    selected = (torch.rand(idx.shape, **kw) < mask_prob) & maskable  # (B, T)
    labels = idx.masked_fill(~selected, IGNORE_INDEX)
    action = torch.rand(idx.shape, **kw)  # < 0.8: [MASK], 0.8 .. 0.9: random token, >= 0.9: unchanged
    random_tokens = torch.randint(vocab_size, idx.shape, **kw)
    inputs = torch.where(selected & (action < 0.8), torch.full_like(idx, mask_id), idx)
    inputs = torch.where(selected & (action >= 0.8) & (action < 0.9), random_tokens, inputs)
    return inputs, labels


class MLMHead(nn.Module):
    """hidden (B, T, C) -> logits (B, T, vocab): LN(act(dense(h))) @ wte^T + bias."""

    def __init__(self, config: BertConfig, wte: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.n_embd, config.n_embd)
        self.act = ACTIVATIONS[config.activation]
        self.ln = LayerNorm(config.n_embd, config.norm_eps)
        self.wte = wte  # tied: the output projection is the input embedding matrix (shared Parameter)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        h = self.ln(self.act(self.dense(hidden)))  # (B, T, C)
        return F.linear(h, self.wte.weight, self.bias)  # (B, T, vocab)


class BertMLM(nn.Module):
    """Bert + MLM head: ``forward(idx, targets=None, token_type_ids=None, attention_mask=None)``."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = Bert(config)
        self.head = MLMHead(config, self.bert.wte)
        nn.init.normal_(self.head.dense.weight, std=0.02)
        nn.init.zeros_(self.head.dense.bias)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """-> logits (B, T, vocab) and, with targets (B, T) (-100 = not predicted), the mean loss."""
        logits = self.head(self.bert(idx, token_type_ids, attention_mask))
        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(f"targets shape {tuple(targets.shape)} must equal idx {tuple(idx.shape)}")
            loss = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
            )
        return logits, loss

    @classmethod
    def from_hf(cls, hf_model, **overrides) -> "BertMLM":
        """Copy a ``transformers`` ``BertForMaskedLM`` (same logits)."""
        if type(hf_model).__name__ != "BertForMaskedLM":
            raise ValueError(f"BertMLM.from_hf expects a BertForMaskedLM, got {type(hf_model).__name__}")
        sd = hf_model.state_dict()
        config = config_from_hf(hf_model.config, **overrides)
        model = cls(config)
        ours = {f"bert.{k}": v for k, v in hf_state_dict_to_ours(sd, config, prefix="bert.").items()}
        p = "cls.predictions."
        ours |= {
            "head.dense.weight": sd[p + "transform.dense.weight"],
            "head.dense.bias": sd[p + "transform.dense.bias"],
            "head.ln.weight": sd[p + "transform.LayerNorm.weight"],
            "head.ln.bias": sd[p + "transform.LayerNorm.bias"],
            "head.bias": sd[p + "bias"],
        }
        load_checked(model, ours)
        return model.eval()
