"""Hand-written backward passes vs autograd, fp64, max abs diff <= 1e-6, plus a hand-worked gradient."""

import math

import torch
import torch.nn.functional as F

from gpt.basics.manual_backprop import (
    attention_head_backward,
    attention_head_forward,
    mlp_backward,
    mlp_forward,
)

TOL = 1e-6


def test_mlp_layernorm_cross_entropy_matches_autograd():
    g = torch.Generator().manual_seed(0)
    N, D, H, V = 6, 5, 7, 4

    def rand(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)

    x = rand(N, D)
    p = dict(W1=rand(D, H), b1=rand(H), gamma=rand(H), beta=rand(H), W2=rand(H, V), b2=rand(V))
    y = torch.randint(0, V, (N,), generator=g)
    loss, cache = mlp_forward(x, y, p)
    # independent reference: torch's own layers
    h = F.layer_norm(x @ p["W1"] + p["b1"], (H,), p["gamma"], p["beta"], eps=1e-5)
    ref = F.cross_entropy(torch.tanh(h) @ p["W2"] + p["b2"], y)
    assert abs(loss.item() - ref.item()) <= TOL
    names = ["x", *p]
    auto = torch.autograd.grad(ref, [x, *p.values()])
    manual = mlp_backward({k: v.detach() if torch.is_tensor(v) else v for k, v in cache.items()})
    for name, a in zip(names, auto, strict=True):
        assert (manual[name] - a).abs().max().item() <= TOL, name


def test_attention_head_matches_autograd():
    g = torch.Generator().manual_seed(1)
    T, C, hs = 5, 6, 3
    x, Wq, Wk, Wv = (
        torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
        for s in [(T, C), (C, hs), (C, hs), (C, hs)]
    )
    out, cache = attention_head_forward(x, Wq, Wk, Wv)
    ref = F.scaled_dot_product_attention(x @ Wq, x @ Wk, x @ Wv, is_causal=True)
    assert (out - ref).abs().max().item() <= TOL
    dout = torch.randn(T, hs, generator=g, dtype=torch.float64)
    auto = torch.autograd.grad(ref, [x, Wq, Wk, Wv], grad_outputs=dout)
    manual = attention_head_backward(
        {k: v.detach() if torch.is_tensor(v) else v for k, v in cache.items()}, dout
    )
    for name, a in zip(["x", "Wq", "Wk", "Wv"], auto, strict=True):
        assert (manual[name] - a).abs().max().item() <= TOL, name


def test_cross_entropy_gradient_hand_worked():
    # one example, logits [0, 0], target 1: softmax [0.5, 0.5] -> dlogits = [0.5, -0.5]
    H = 2
    p = dict(
        W1=torch.eye(H, dtype=torch.float64),
        b1=torch.zeros(H, dtype=torch.float64),
        gamma=torch.ones(H, dtype=torch.float64),
        beta=torch.zeros(H, dtype=torch.float64),
        W2=torch.zeros(H, 2, dtype=torch.float64),
        b2=torch.zeros(2, dtype=torch.float64),
    )
    loss, cache = mlp_forward(torch.tensor([[1.0, -1.0]], dtype=torch.float64), torch.tensor([1]), p)
    assert abs(loss.item() - math.log(2.0)) < 1e-12
    assert mlp_backward(cache)["b2"].tolist() == [0.5, -0.5]
