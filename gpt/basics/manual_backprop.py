"""Backpropagation by hand: an MLP layer with LayerNorm and cross-entropy, and one causal attention head.

Teaches what ``loss.backward()`` computes, one line of calculus per forward line, in the order that
reverses the forward pass (Karpathy, "Building makemore Part 4: Becoming a Backprop Ninja"). Each forward
function returns the loss (or output) and a cache of intermediates; each backward function takes the cache
(and, for the attention head, the gradient of its output) and returns the gradient of every input and
weight. ``tests/test_gpt_manual_backprop.py`` checks them against autograd in fp64 (<= 1e-6).

The three results worth remembering:
- cross-entropy of softmax: dlogits = (softmax(logits) - one_hot(y)) / N;
- LayerNorm: dx = (1/sigma) * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat));
- softmax rows: dscores = P * (dP - sum(dP * P, over the row)).
"""

import math

import torch
from torch import Tensor


def mlp_forward(x: Tensor, y: Tensor, p: dict[str, Tensor], eps: float = 1e-5) -> tuple[Tensor, dict]:
    """x (N, D) -> h = x W1 + b1 -> LayerNorm(gamma, beta) -> tanh -> logits = a W2 + b2 -> mean CE(y).

    ``p`` holds W1 (D, H), b1 (H,), gamma (H,), beta (H,), W2 (H, V), b2 (V,).
    """
    h = x @ p["W1"] + p["b1"]  # (N, H)
    mu = h.mean(dim=1, keepdim=True)
    var = ((h - mu) ** 2).mean(dim=1, keepdim=True)  # biased variance, as nn.LayerNorm
    rstd = (var + eps).rsqrt()
    xhat = (h - mu) * rstd  # (N, H)
    hn = xhat * p["gamma"] + p["beta"]
    a = torch.tanh(hn)
    logits = a @ p["W2"] + p["b2"]  # (N, V)
    logp = logits - logits.logsumexp(dim=1, keepdim=True)
    loss = -logp[torch.arange(len(y)), y].mean()
    return loss, dict(x=x, y=y, p=p, xhat=xhat, rstd=rstd, a=a, logp=logp)


def mlp_backward(cache: dict) -> dict[str, Tensor]:
    """Gradients of the mean cross-entropy w.r.t. x and every weight of :func:`mlp_forward`."""
    x, y, p, xhat, rstd, a, logp = (cache[k] for k in ("x", "y", "p", "xhat", "rstd", "a", "logp"))
    N = x.size(0)
    dlogits = logp.exp()  # softmax
    dlogits[torch.arange(N), y] -= 1.0
    dlogits /= N  # (N, V): (softmax - one_hot) / N
    dW2, db2 = a.T @ dlogits, dlogits.sum(0)
    da = dlogits @ p["W2"].T  # (N, H)
    dhn = da * (1.0 - a**2)  # tanh' = 1 - tanh^2
    dgamma, dbeta = (dhn * xhat).sum(0), dhn.sum(0)
    dxhat = dhn * p["gamma"]
    dh = rstd * (dxhat - dxhat.mean(1, keepdim=True) - xhat * (dxhat * xhat).mean(1, keepdim=True))
    dW1, db1 = x.T @ dh, dh.sum(0)
    dx = dh @ p["W1"].T
    return dict(x=dx, W1=dW1, b1=db1, gamma=dgamma, beta=dbeta, W2=dW2, b2=db2)


def attention_head_forward(x: Tensor, Wq: Tensor, Wk: Tensor, Wv: Tensor) -> tuple[Tensor, dict]:
    """One causal head: x (T, C), W* (C, hs) -> out (T, hs) = softmax(mask(q k^T / sqrt(hs))) v."""
    T = x.size(0)
    hs = Wq.size(1)
    q, k, v = x @ Wq, x @ Wk, x @ Wv  # (T, hs) each
    scale = 1.0 / math.sqrt(hs)
    scores = (q @ k.T) * scale  # (T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    P = scores.softmax(dim=1)  # (T, T), zeros above the diagonal
    out = P @ v
    return out, dict(x=x, Wq=Wq, Wk=Wk, Wv=Wv, q=q, k=k, v=v, P=P, scale=scale)


def attention_head_backward(cache: dict, dout: Tensor) -> dict[str, Tensor]:
    """Given dL/dout (T, hs), gradients w.r.t. x, Wq, Wk, Wv of :func:`attention_head_forward`."""
    x, Wq, Wk, Wv, q, k, v, P, scale = (
        cache[n] for n in ("x", "Wq", "Wk", "Wv", "q", "k", "v", "P", "scale")
    )
    dP = dout @ v.T  # (T, T)
    dv = P.T @ dout  # (T, hs)
    dscores = P * (dP - (dP * P).sum(dim=1, keepdim=True))  # softmax backward; masked entries have P = 0
    dq = dscores @ k * scale
    dk = dscores.T @ q * scale
    dWq, dWk, dWv = x.T @ dq, x.T @ dk, x.T @ dv
    dx = dq @ Wq.T + dk @ Wk.T + dv @ Wv.T  # x feeds all three projections: gradients add
    return dict(x=dx, Wq=dWq, Wk=dWk, Wv=dWv)
