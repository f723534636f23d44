"""micrograd.viz draws one labelled box per Value and one circle per operation."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from micrograd.engine import Value
from micrograd.viz import OP_GID, VALUE_GID, draw_graph


def texts(fig, gid):
    return [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() == gid]


def test_one_box_per_value_and_one_circle_per_op():
    # L = (a*b + c) * f, with a used a second time: Values a, b, c, f, e=a*b, d=e+c, L=d*f, out=L+a
    # -> 8 boxes (a drawn once although used twice) and 4 op circles (*, +, *, +)
    a, b, c, f = Value(2.0, label="a"), Value(-3.0, label="b"), Value(10.0, label="c"), Value(-2.0, label="f")
    e = a * b
    d = e + c
    L = d * f
    out = L + a
    out.backward()
    fig = draw_graph(out)
    boxes, ops = texts(fig, VALUE_GID), texts(fig, OP_GID)
    assert len(boxes) == 8
    assert sorted(ops) == ["*", "*", "+", "+"]
    # each box shows its Value's data and grad; a's grad is 6 (through e) + 1 (direct) = 7
    assert "a | data 2.0000 | grad 7.0000" in boxes
    assert "data -8.0000 | grad 1.0000" in boxes  # L: no label
    assert "data -6.0000 | grad -2.0000" in boxes  # e
    # one arrow per (input, op) pair and one per op output: e, d, L, out each read 2 inputs
    n_arrows = sum(1 for ax in fig.axes for t in ax.texts if t.get_gid() is None)
    assert n_arrows == 4 * 2 + 4
    plt.close(fig)


def test_reused_input_is_one_box_with_one_arrow_per_op():
    # y = x * x: 2 boxes, 1 circle; the op reads x twice but one arrow is drawn
    x = Value(3.0, label="x")
    y = x * x
    y.backward()
    fig = draw_graph(y)
    assert texts(fig, VALUE_GID) == ["x | data 3.0000 | grad 6.0000", "data 9.0000 | grad 1.0000"]
    assert texts(fig, OP_GID) == ["*"]
    plt.close(fig)


def test_draws_on_a_given_axes_and_refuses_huge_graphs():
    fig, ax = plt.subplots()
    v = Value(1.0)
    assert draw_graph(v.tanh(), ax=ax) is fig
    plt.close(fig)
    y = Value(0.0)
    for _ in range(150):
        y = y + 1.0  # 301 Values
    with pytest.raises(ValueError, match=r"301 Values, more than max_values=200"):
        draw_graph(y)
