"""Scoring a text by meaning, not by shared n-grams: sentence-embedding cosine and BERTScore (Week 7.2).

Unlike BLEU or ROUGE (``evals/text/``), which count surface overlaps, both scores compare contextual
vectors from an encoder, here all-MiniLM-L6-v2 in our :class:`gpt.encoders.bert.Bert` with our WordPiece
tokenizer, so a paraphrase scores high:

- **embedding similarity** (Reimers & Gurevych 2019, Sentence-BERT): the cosine of the two texts'
  mean-pooled, L2-normalised last hidden states, what sentence-transformers' ``encode`` + ``cos_sim``
  give;
- **BERTScore** (Zhang et al. 2020, section 3): token vectors from one layer, every candidate token
  greedily matched to its most similar reference token (precision) and every reference token to its
  most similar candidate token (recall), optionally weighted by the reference corpus' idf
  ``log((M + 1) / (df + 1))``; F is their harmonic mean. As the reference implementation
  (Tiiiger/bert_score ``bert_score/utils.py``), [CLS] and [SEP] get weight 0 but stay in the
  similarity matrix, an empty text scores 0, and no baseline rescaling is applied. Unlike it, padding
  never wins the max (bert_score pads a batch's similarity matrices with 0, so a token whose best cosine
  is negative scores 0 there unless its pair is the longest in the batch): our scores do not depend on
  the batch size and equal bert_score's at ``batch_size=1``.

``tests/test_evals_semantic.py`` checks the first against sentence-transformers and the second against
the ``bert-score`` package on the same weights.
"""

import json
import math
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from bpe.wordpiece import WordPieceTokenizer
from gpt.encoders.bert import Bert, sentence_embedding


def load_minilm(path: str | Path) -> tuple[Bert, WordPieceTokenizer]:
    """Our Bert and tokenizer from a sentence-transformers BERT folder (e.g. all-MiniLM-L6-v2's).

    The tokenizer's ``model_max_length`` is sentence-transformers' ``max_seq_length`` when the folder
    has a ``sentence_bert_config.json``. Converts through ``transformers.BertModel`` (imported here only).
    """
    from transformers import BertModel

    path = Path(path)
    if not (path / "config.json").exists() or not (path / "vocab.txt").exists():
        raise ValueError(f"{path} has no config.json or vocab.txt; pass a BERT model folder")
    model = Bert.from_hf(BertModel.from_pretrained(path))
    config = json.loads((path / "tokenizer_config.json").read_text())
    max_length = config.get("model_max_length", model.config.block_size)
    st = path / "sentence_bert_config.json"
    if st.exists():
        max_length = json.loads(st.read_text())["max_seq_length"]
    tokenizer = WordPieceTokenizer.from_file(
        path / "vocab.txt",
        lowercase=config.get("do_lower_case", True),
        strip_accents=config.get("strip_accents"),
        model_max_length=min(max_length, model.config.block_size),
    )
    return model, tokenizer


def _check_pairs(candidates: list[str], references: list[str], model: Bert):
    if len(candidates) != len(references):
        raise ValueError(
            f"got {len(candidates)} candidates but {len(references)} references; pass one reference each"
        )
    if not candidates:
        raise ValueError("no candidates: pass at least one (candidate, reference) pair")
    if model.training:
        raise ValueError("the model is in training mode (dropout on); call model.eval() first")


@torch.no_grad()
def hidden_states(
    model: Bert,
    tokenizer: WordPieceTokenizer,
    texts: list[str],
    layer: int | None = None,
    batch_size: int = 32,
) -> list[tuple[list[int], Tensor]]:
    """Per text, its ids with [CLS]/[SEP] and their (T, C) vectors after ``layer`` blocks (0: the
    embeddings, default: the last block)."""
    n_layer = model.config.n_layer
    layer = n_layer if layer is None else layer
    if not 0 <= layer <= n_layer:
        raise ValueError(f"layer={layer}; this model has layers 0 (embeddings) to {n_layer}")
    # The output of block `layer` (or of the embedding LayerNorm for 0), caught on the way through.
    module = model.ln_emb if layer == 0 else model.h[layer - 1]
    caught = {}
    handle = module.register_forward_hook(lambda mod, args, out: caught.__setitem__("h", out))
    out = []
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size])
            idx, mask = torch.tensor(enc.input_ids), torch.tensor(enc.attention_mask)  # (B, T) each
            model(idx, None, mask)
            h = caught["h"]  # (B, T, C)
            for ids, m, row in zip(enc.input_ids, enc.attention_mask, h, strict=True):
                T = sum(m)
                out.append((ids[:T], row[:T]))
    finally:
        handle.remove()
    return out


@torch.no_grad()
def embedding_similarity(
    candidates: list[str],
    references: list[str],
    model: Bert,
    tokenizer: WordPieceTokenizer,
    batch_size: int = 32,
) -> Tensor:
    """(N,) cosine of each candidate's sentence embedding with its reference's."""
    _check_pairs(candidates, references, model)

    def embed(texts: list[str]) -> Tensor:  # (N, C) unit vectors
        rows = []
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size])
            idx, mask = torch.tensor(enc.input_ids), torch.tensor(enc.attention_mask)
            rows.append(sentence_embedding(model(idx, None, mask), mask))
        return torch.cat(rows)

    return (embed(candidates) * embed(references)).sum(-1)


def idf_weights(references: list[str], tokenizer: WordPieceTokenizer) -> dict[int, float]:
    """{token id: log((M + 1) / (df + 1))} over the M references (df: how many contain the id); an id
    in none of them weighs ``log(M + 1)``, [CLS] and [SEP] weigh 0 (in every text)."""
    if not references:
        raise ValueError("idf needs at least one reference text")
    M = len(references)
    df = Counter(
        i for text in references for i in {tokenizer.cls_id, tokenizer.sep_id, *tokenizer.encode(text)}
    )
    return {i: math.log((M + 1) / (n + 1)) for i, n in df.items()}


def greedy_match(cand: Tensor, ref: Tensor, cand_w: Tensor, ref_w: Tensor) -> tuple[float, float, float]:
    """P, R, F of one pair: cand (Tc, C) and ref (Tr, C) vectors, their (Tc,) and (Tr,) token weights."""
    if cand_w.sum() == 0 or ref_w.sum() == 0:  # an empty text (only [CLS] [SEP]) scores 0, as bert_score
        return 0.0, 0.0, 0.0
    sim = F.normalize(cand, dim=-1) @ F.normalize(ref, dim=-1).T  # (Tc, Tr) cosines
    P = ((sim.max(1).values * cand_w).sum() / cand_w.sum()).item()
    R = ((sim.max(0).values * ref_w).sum() / ref_w.sum()).item()
    return P, R, (2 * P * R / (P + R) if P + R != 0 else 0.0)


def bertscore(
    candidates: list[str],
    references: list[str],
    model: Bert,
    tokenizer: WordPieceTokenizer,
    layer: int | None = None,
    idf: bool | dict[int, float] = False,
    batch_size: int = 32,
) -> tuple[Tensor, Tensor, Tensor]:
    """BERTScore (P, R, F), each (N,), of candidates against their references at ``layer`` (default:
    the last block); ``idf`` True weighs tokens by :func:`idf_weights` of the references, a dict uses
    those weights (ids it lacks weigh ``log(M + 1)``)."""
    _check_pairs(candidates, references, model)
    unseen = math.log(len(references) + 1)
    table = idf_weights(references, tokenizer) if idf is True else (idf if isinstance(idf, dict) else None)
    specials = (tokenizer.cls_id, tokenizer.sep_id)

    def weight(ids: list[int]) -> Tensor:  # (T,)
        w = [0.0 if i in specials else (1.0 if table is None else table.get(i, unseen)) for i in ids]
        return torch.tensor(w)

    cands = hidden_states(model, tokenizer, candidates, layer, batch_size)
    refs = hidden_states(model, tokenizer, references, layer, batch_size)
    scores = [
        greedy_match(c, r, weight(c_ids), weight(r_ids))
        for (c_ids, c), (r_ids, r) in zip(cands, refs, strict=True)
    ]
    P, R, F1 = torch.tensor(scores).unbind(1)  # (N,) each
    return P, R, F1
