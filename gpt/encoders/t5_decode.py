"""Decoding an encoder-decoder: greedy search and beam search with a length penalty and EOS handling.

Both run the encoder once and then call the decoder on the growing target, one token per step (without
a KV cache: the whole prefix is recomputed, which is simple and fast enough for short sentences).

**Greedy** appends the arg-max token; a sequence that has produced EOS is padded with ``pad_id`` until
every sequence of the batch has finished.

**Beam search** keeps the ``num_beams`` best partial targets by total log-probability. Each step scores
every (beam, token) extension, keeps the top ``2 * num_beams``, moves those that end in EOS (and rank
among the first ``num_beams``) to a per-sentence list of finished hypotheses scored
``sum_logprob / length ** length_penalty`` (length = generated tokens, EOS included), and continues with
the best ``num_beams`` that did not end. A sentence is done when its worst kept finished hypothesis
beats what the best running beam could reach at its current length (``early_stopping=False``), as soon
as ``num_beams`` hypotheses are finished (``True``), or only when no running beam could beat them even
at ``max_new_tokens`` (``"never"``). This is exactly HF ``GenerationMixin._beam_search`` (transformers
5.x, ``generation/utils.py``), which ``tests/test_t5.py`` checks token for token; reference: Wu et al.
2016 (GNMT), section 7, for the length penalty idea.
"""

import torch
from torch import Tensor

NEG = -1.0e9  # "impossible" score, as HF uses (not -inf, so that sums stay finite)
EARLY_STOPPING = (False, True, "never")


def _check(model, src: Tensor, max_new_tokens: int):
    if src.dim() != 2:
        raise ValueError(f"src must be (B, S), got shape {tuple(src.shape)}; add a batch dim with src[None]")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return model.config


@torch.no_grad()
def greedy_decode(model, src: Tensor, src_mask: Tensor | None = None, max_new_tokens: int = 64) -> Tensor:
    """(B, S) source ids -> (B, 1 + n) target ids, starting with the decoder start token (HF's layout)."""
    cfg = _check(model, src, max_new_tokens)
    enc = model.encode(src, src_mask)  # (B, S, C), once
    out = torch.full((src.size(0), 1), cfg.decoder_start_id, dtype=torch.long, device=src.device)
    done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    for _ in range(max_new_tokens):
        nxt = model.decode(out, enc, src_mask)[:, -1].argmax(-1)  # (B,)
        nxt = nxt.masked_fill(done, cfg.pad_id)
        out = torch.cat([out, nxt[:, None]], dim=1)
        done = done | (nxt == cfg.eos_id)
        if bool(done.all()):
            break
    return out


@torch.no_grad()
def beam_search(
    model,
    src: Tensor,
    src_mask: Tensor | None = None,
    num_beams: int = 4,
    max_new_tokens: int = 64,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
) -> Tensor:
    """(B, S) -> (B, 1 + n): the best finished hypothesis per sentence, padded after EOS (see module doc)."""
    cfg = _check(model, src, max_new_tokens)
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if early_stopping not in EARLY_STOPPING:
        raise ValueError(f"early_stopping={early_stopping!r}; choose one of {EARLY_STOPPING}")
    B, K, L, dev = src.size(0), num_beams, 1 + max_new_tokens, src.device
    enc = model.encode(src, src_mask).repeat_interleave(K, dim=0)  # (B*K, S, C)
    mask = None if src_mask is None else src_mask.repeat_interleave(K, dim=0)
    # HF fills unused slots with pad_token_id, or with EOS when pad is 0 (``pad or eos`` on a tensor)
    fill = cfg.pad_id or cfg.eos_id
    seqs = torch.full((B, K, 1), cfg.decoder_start_id, dtype=torch.long, device=dev)  # running beams
    run_scores = torch.zeros(B, K, device=dev)
    run_scores[:, 1:] = NEG  # all beams start identical: let only the first one expand at step 0
    fin_seqs = torch.full((B, K, L), fill, dtype=torch.long, device=dev)  # finished hypotheses
    fin_scores = torch.full((B, K), NEG, device=dev)
    fin_len = torch.zeros(B, K, dtype=torch.long, device=dev)
    fin_real = torch.zeros(B, K, dtype=torch.bool, device=dev)  # slot holds a real finished hypothesis
    improvable = torch.ones(B, dtype=torch.bool, device=dev)  # the early-stop test has not fired yet
    first_k = torch.arange(2 * K, device=dev) < K  # only the top K candidates may finish
    for step in range(max_new_tokens):
        T = step + 1  # current target length, start token included
        logits = model.decode(seqs.view(B * K, T), enc, mask)[:, -1].float()  # (B*K, V)
        V = logits.size(-1)
        logp = logits.log_softmax(-1).view(B, K, V) + run_scores[..., None]  # (B, K, V) total scores
        top, index = logp.view(B, K * V).topk(2 * K)  # (B, 2K), best first
        beam, token = index // V, index % V
        cand = torch.cat([seqs.gather(1, beam[..., None].expand(B, 2 * K, T)), token[..., None]], dim=2)
        ends = (token == cfg.eos_id) | (step == max_new_tokens - 1)  # (B, 2K): EOS, or out of room
        # the best K candidates that go on
        go_on = top + ends.float() * NEG
        keep = go_on.topk(K).indices  # (B, K)
        seqs = cand.gather(1, keep[..., None].expand(B, K, T + 1))
        run_scores = go_on.gather(1, keep)
        # finished candidates compete with the kept finished hypotheses on the length-penalised score
        just_finished = ends & first_k
        score = top / (T**length_penalty)
        full = fin_real.all(1) & (early_stopping is True)
        blocked = full | ~improvable  # (B,)
        score = score + (~just_finished).float() * NEG + blocked[:, None].float() * NEG
        padded = torch.full((B, 2 * K, L), fill, dtype=torch.long, device=dev)
        padded[..., : T + 1] = cand
        all_scores = torch.cat([fin_scores, score], 1)  # (B, 3K)
        best = all_scores.topk(K).indices
        fin_seqs = torch.cat([fin_seqs, padded], 1).gather(1, best[..., None].expand(B, K, L))
        fin_scores = all_scores.gather(1, best)
        fin_len = torch.cat([fin_len, torch.full_like(score, T, dtype=torch.long)], 1).gather(1, best)
        fin_real = torch.cat([fin_real, just_finished], 1).gather(1, best)
        # can a running beam still beat the worst kept hypothesis?
        horizon = max_new_tokens if (early_stopping == "never" and length_penalty > 0) else T
        best_running = run_scores[:, 0] / (horizon**length_penalty)
        worst = torch.where(
            fin_real, fin_scores.min(1, keepdim=True).values, torch.full_like(fin_scores, NEG)
        )
        improvable = improvable & (best_running[:, None] > worst).any(1)
        if not improvable.any() or (early_stopping is True and fin_real.all()) or bool(ends.all()):
            break
    out = fin_seqs[:, 0]  # (B, L), best first
    return out[:, : 1 + int(fin_len[:, 0].max())]
