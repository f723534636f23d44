"""Perplexity: exp of the mean next-token loss, the one quality number every precision, fine-tune and
adapter in this course is compared on.

Windows are scored independently (no sliding overlap), so each window's first tokens see little context;
the number is comparable only between runs with the same tokens and window, as llama.cpp's
``perplexity`` tool reports it. The WikiText-2 test split is the course's held-out general text.

Reference: llama.cpp ``examples/perplexity``; HF "Perplexity of fixed-length models" (the strided
variant this simplifies).
"""

import math

import torch

from gpt.data.paths import dataset_path


def wikitext2_tokens(tokenizer, n: int, split: str = "test") -> torch.Tensor:
    """The first ``n`` token ids (n,) of WikiText-2's ``split`` (``$LLM_COURSE_DATA/wikitext2/``)."""
    text = dataset_path("wikitext2", f"{split}.txt").read_text(encoding="utf-8")
    ids = tokenizer.encode(text[: 8 * n], allowed_special="none")  # ~4 characters per token: enough
    if len(ids) < n:
        raise ValueError(f"WikiText-2 {split} gave {len(ids)} tokens, fewer than the {n} asked for")
    return torch.tensor(ids[:n])


@torch.no_grad()
def perplexity(model, tokens: torch.Tensor, window: int, batch: int = 4) -> float:
    """exp(mean next-token loss) of ``model`` over independent windows of ``window`` tokens of ``tokens``
    (n,); the tail that does not fill a window is dropped. ``batch`` windows go through each forward."""
    if tokens.dim() != 1 or len(tokens) < window:
        raise ValueError(f"tokens must be 1-D with at least window={window} ids, got {tuple(tokens.shape)}")
    device = next(model.parameters()).device
    rows = tokens[: len(tokens) // window * window].view(-1, window).to(device)  # (n_windows, window)
    total, count = 0.0, 0
    for row in rows.split(batch):
        _, loss = model(row[:, :-1], targets=row[:, 1:])
        total, count = total + loss.item() * row[:, 1:].numel(), count + row[:, 1:].numel()
    return math.exp(total / count)
