"""Character n-gram language models two ways: by counting, and as a tiny neural network.

Teaches that "training a language model" and "counting" meet. The count model estimates
``P(next | previous n-1 chars) = (count + alpha) / (row total + V * alpha)``. The neural model holds one
row of logits per context (a one-hot context times a weight matrix, Karpathy's makemore part 1) and is
trained by gradient descent on the cross-entropy. Its optimum is the count model exactly: the gradient of
``sum_t (count[c, t] + alpha) * -log softmax(W[c])[t]`` vanishes when ``softmax(W[c])`` equals the
smoothed counts, so add-alpha smoothing is the same as alpha pseudo-observations of every pair (a
regulariser). ``tests/test_gpt_ngram.py`` and notebook 2.2 show the two converge to the same table.

Reference: Jurafsky & Martin, "Speech and Language Processing", ch. 3 (n-grams, Laplace smoothing);
karpathy/makemore (bigram counts vs the one-layer network).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class NGramConfig:
    """n: tokens per n-gram (2 = bigram); vocab_size: V; alpha: add-alpha smoothing pseudo-count."""

    n: int = 2
    vocab_size: int = 65
    alpha: float = 1.0

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1 (1 = unigram), got {self.n}")
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {self.vocab_size}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.vocab_size ** (self.n - 1) * self.vocab_size > 50_000_000:
            raise ValueError(f"a {self.n}-gram table over {self.vocab_size} tokens is too large; lower n")

    @property
    def n_contexts(self) -> int:
        return self.vocab_size ** (self.n - 1)


def context_ids(tokens: Tensor, n: int, vocab_size: int) -> tuple[Tensor, Tensor]:
    """All (context id, next token) pairs of a 1-D token tensor; a context (n-1 tokens) is a base-V number."""
    if tokens.dim() != 1 or tokens.numel() < n:
        raise ValueError(f"need a 1-D tensor of at least n={n} tokens, got shape {tuple(tokens.shape)}")
    windows = tokens.unfold(0, n, 1)  # (N, n): each row one n-gram
    ctx = torch.zeros(windows.size(0), dtype=torch.long)
    for i in range(n - 1):
        ctx = ctx * vocab_size + windows[:, i]
    return ctx, windows[:, -1]


def count_table(tokens: Tensor, config: NGramConfig) -> Tensor:
    """(V^(n-1), V) raw counts: row = context, column = next token."""
    ctx, nxt = context_ids(tokens, config.n, config.vocab_size)
    counts = torch.zeros(config.n_contexts * config.vocab_size, dtype=torch.float64)
    counts.index_add_(0, ctx * config.vocab_size + nxt, torch.ones_like(ctx, dtype=torch.float64))
    return counts.view(config.n_contexts, config.vocab_size)


def count_probs(tokens: Tensor, config: NGramConfig) -> Tensor:
    """(V^(n-1), V) smoothed conditional probabilities from counts; each row sums to 1 (alpha > 0)."""
    counts = count_table(tokens, config) + config.alpha
    return counts / counts.sum(dim=1, keepdim=True).clamp_min(1e-300)


def nll(probs: Tensor, tokens: Tensor, config: NGramConfig) -> float:
    """Mean negative log-likelihood (nats per token) of ``tokens`` under a probability table."""
    ctx, nxt = context_ids(tokens, config.n, config.vocab_size)
    return -probs[ctx, nxt].log().mean().item()


class NeuralNGram(nn.Module):
    """One row of logits per context: ``logits = one_hot(context) @ W`` (done as a row lookup)."""

    def __init__(self, config: NGramConfig):
        super().__init__()
        self.config = config
        self.W = nn.Parameter(torch.zeros(config.n_contexts, config.vocab_size, dtype=torch.float64))

    def forward(self, ctx: Tensor) -> Tensor:
        return F.embedding(ctx, self.W)  # (N, V): row lookup, same as F.one_hot(ctx).double() @ self.W

    def probs(self) -> Tensor:
        return self.W.softmax(dim=1)

    def loss(self, ctx: Tensor, nxt: Tensor) -> Tensor:
        """Cross-entropy on the data plus alpha pseudo-observations of every (context, token) pair, both
        divided by the number of real tokens: the objective whose optimum is ``count_probs``."""
        data = F.cross_entropy(self(ctx), nxt, reduction="sum")
        prior = -self.config.alpha * self.W.log_softmax(dim=1).sum()
        return (data + prior) / ctx.numel()


def train_neural(
    tokens: Tensor,
    config: NGramConfig,
    steps: int = 200,
    lr: float = 0.3,
    on_step: Callable[[int, NeuralNGram], None] | None = None,
) -> tuple[NeuralNGram, list[float]]:
    """Full-batch Adam with a cosine-decayed learning rate on :meth:`NeuralNGram.loss`; returns the model
    and the loss at each step; ``on_step(step, model)`` is called after each update (e.g. to watch the
    table approach the counts). Adam's per-parameter step size copes with rare contexts, whose gradients
    are tiny; plain gradient descent needs thousands of steps for them."""
    model = NeuralNGram(config)
    ctx, nxt = context_ids(tokens, config.n, config.vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    losses = []
    for _ in range(steps):
        loss = model.loss(ctx, nxt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(len(losses), model)
    return model, losses
