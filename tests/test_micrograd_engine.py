"""micrograd.engine against torch float64 autograd (rel. tolerance 1e-6), plus examples worked by hand.

Every expression is built twice, once from Values and once from 0-d float64 tensors with
requires_grad, and the outputs and the gradients of every node are compared.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from micrograd.engine import Value, topological_order

REL = 1e-6  # both sides compute in float64; differences come only from libm ulps, far below this
ABS = 1e-12  # for gradients that cancel to ~0 (e.g. a - a) with different rounding on the two sides


def close(a, b):
    return math.isclose(a, b, rel_tol=REL, abs_tol=ABS) or (math.isinf(a) and a == b)


def leaf_pair(x):
    return Value(x), torch.tensor(x, dtype=torch.float64, requires_grad=True)


def torch_grad(t):
    return 0.0 if t.grad is None else t.grad.item()


# ---- worked by hand ----


def test_hand_worked_expression():
    # L = (a*b + c) * f with a=2, b=-3, c=10, f=-2
    # forward:  e = a*b = -6,  d = e + c = 4,  L = d*f = -8
    # backward: dL/dL = 1
    #           dL/df = d = 4            dL/dd = f = -2
    #           dL/dc = dL/dd * 1 = -2   dL/de = dL/dd * 1 = -2
    #           dL/da = dL/de * b = 6    dL/db = dL/de * a = -4
    a, b, c, f = Value(2.0), Value(-3.0), Value(10.0), Value(-2.0)
    e = a * b
    d = e + c
    L = d * f
    L.backward()
    assert (e.data, d.data, L.data) == (-6.0, 4.0, -8.0)
    assert (a.grad, b.grad, c.grad, f.grad) == (6.0, -4.0, -2.0, 4.0)
    assert (e.grad, d.grad, L.grad) == (-2.0, -2.0, 1.0)


def test_hand_worked_tanh_neuron():
    # o = tanh(x1*w1 + x2*w2 + b) with x1=2, x2=0, w1=-3, w2=1, b = 6 + atanh(1/sqrt 2)
    # n = -6 + 0 + 6 + atanh(1/sqrt 2) = atanh(1/sqrt 2), so o = 1/sqrt 2 ~ 0.7071
    # do/dn = 1 - o^2 = 1/2; each + passes 1/2 down unchanged;
    # dx1 = 1/2 * w1 = -1.5, dw1 = 1/2 * x1 = 1, dx2 = 1/2 * w2 = 0.5, dw2 = 1/2 * x2 = 0, db = 0.5
    x1, x2, w1, w2 = Value(2.0), Value(0.0), Value(-3.0), Value(1.0)
    b = Value(6.0 + math.atanh(1 / math.sqrt(2)))
    o = (x1 * w1 + x2 * w2 + b).tanh()
    o.backward()
    assert o.data == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    got = [x1.grad, w1.grad, x2.grad, w2.grad, b.grad]
    assert got == pytest.approx([-1.5, 1.0, 0.5, 0.0, 0.5], rel=1e-12, abs=1e-12)


def test_reused_node_collects_one_gradient_per_use():
    # y = a*a + a at a = 3: y = 12, dy/da = 2a + 1 = 7 (three uses of a: two in a*a, one in + a)
    a = Value(3.0)
    y = a * a + a
    y.backward()
    assert (y.data, a.grad) == (12.0, 7.0)


# ---- random expression graphs vs torch ----

UNARY = ("neg", "relu", "tanh", "exp", "log", "sigmoid", "pow")
BINARY = ("add", "sub", "mul", "div")
WITH_CONST = ("radd", "rsub", "rmul", "rdiv", "add_c", "mul_c", "div_c")
EXPONENTS = (2, 3, -1, -2, 0.5, 1.5, 2.5)
CONSTS = (-2.5, -1.0, 0.5, 3.0)


def safe(op, a, b, p):
    """Whether op is well inside its domain (torch and micrograd then agree to rounding), else use tanh."""
    if op in ("div",):
        return abs(b) > 0.1
    if op == "rdiv":
        return abs(a) > 0.1
    if op == "log":
        return a > 0.1
    if op == "exp":
        return a < 5
    if op == "relu":
        return abs(a) > 1e-6  # at the kink a rounding difference would flip the slope
    if op == "pow":
        return abs(a) > 0.1 and abs(a) < 50 and (float(p).is_integer() or a > 0.1)
    return True


def apply(op, x, y, p, c):
    """One op on two operands (Values or tensors), an exponent p and a constant c: the same code for both."""
    fns = {
        "add": lambda: x + y,
        "sub": lambda: x - y,
        "mul": lambda: x * y,
        "div": lambda: x / y,
        "neg": lambda: -x,
        "pow": lambda: x**p,
        "radd": lambda: c + x,
        "rsub": lambda: c - x,
        "rmul": lambda: c * x,
        "rdiv": lambda: c / x,
        "add_c": lambda: x + c,
        "mul_c": lambda: x * c,
        "div_c": lambda: x / c,
    }
    if op in fns:
        return fns[op]()
    if isinstance(x, Value):
        return getattr(x, op)()
    return getattr(torch, op)(x)


@st.composite
def programs(draw):
    leaves = draw(st.lists(st.floats(-3.0, 3.0), min_size=1, max_size=4))
    step = st.tuples(
        st.sampled_from(UNARY + BINARY + WITH_CONST),
        st.integers(0, 63),  # operand indices, taken modulo the number of nodes so far
        st.integers(0, 63),
        st.sampled_from(EXPONENTS),
        st.sampled_from(CONSTS),
    )
    return leaves, draw(st.lists(step, min_size=1, max_size=15))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_graphs_match_torch(program):
    leaves, steps = program
    pairs = [leaf_pair(x) for x in leaves]
    for op, i, j, p, c in steps:
        (xv, xt), (yv, yt) = pairs[i % len(pairs)], pairs[j % len(pairs)]  # i == j: a node used twice
        if not safe(op, xv.data, yv.data, p):
            op = "tanh"
        v, t = apply(op, xv, yv, p, c), apply(op, xt, yt, p, c)
        if abs(v.data) > 1e4:  # keep magnitudes tame so that relative errors stay meaningful
            v, t = xv.tanh(), xt.tanh()
        t.retain_grad()
        pairs.append((v, t))
    # The output sums every op's result, so every node (leaves included) reaches it, most by several paths.
    out_v = sum(v for v, _ in pairs[len(leaves) :])
    out_t = sum(t for _, t in pairs[len(leaves) :])
    out_v.backward()
    out_t.backward()
    assert close(out_v.data, out_t.item()), (out_v.data, out_t.item())
    for k, (v, t) in enumerate(pairs):
        assert close(v.data, t.item()), (k, v.data, t.item())
        assert close(v.grad, torch_grad(t)), (k, "leaf" if k < len(leaves) else "op", v.grad, torch_grad(t))


@pytest.mark.parametrize("op", ["relu", "tanh", "exp", "log", "sigmoid"])
@pytest.mark.parametrize("x", [-2.5, -0.3, 0.0, 0.7, 4.0])
def test_each_function_matches_torch(op, x):
    if op == "log" and x <= 0:
        return  # an error by design; see test_bad_input_raises_clear_errors
    v, t = leaf_pair(x)
    yv, yt = getattr(v, op)(), getattr(torch, op)(t)
    yv.backward()
    yt.backward()
    assert close(yv.data, yt.item()) and close(v.grad, t.grad.item()), (yv, yt, v.grad, t.grad)


@pytest.mark.parametrize(("x", "p"), [(0.0, 0), (0.0, 0.5), (0.0, 2), (-2.0, 3), (-2.0, -1), (4.0, 0.5)])
def test_pow_edge_cases_match_torch(x, p):
    # 0 ** 0.5 has an infinite slope, 0 ** 0 a zero one: torch's conventions, reproduced
    v, t = leaf_pair(x)
    (v**p).backward()
    (t**p).backward()
    assert close(v.grad, t.grad.item()), (x, p, v.grad, t.grad)


def test_sigmoid_does_not_overflow():
    # math.exp(800) overflows; the stable form only ever calls exp on a non-positive number
    assert Value(-800.0).sigmoid().data == 0.0
    assert Value(800.0).sigmoid().data == 1.0


# ---- gradient accumulation: the same rules as torch ----


def test_grads_accumulate_across_backward_calls_like_torch():
    (av, at), (bv, bt) = leaf_pair(1.5), leaf_pair(-0.5)
    hv, ht = av * bv + av.tanh(), at * bt + at.tanh()  # an interior node, read by both outputs below
    ht.retain_grad()  # torch keeps (and accumulates) a non-leaf's grad only when asked; micrograd always
    yv, yt = hv * hv, ht * ht
    pairs = [(av, at), (bv, bt), (hv, ht)]

    yv.backward()
    yt.backward(retain_graph=True)
    first = [v.grad for v, _ in pairs]
    yv.backward()  # the same graph again: every grad doubles
    yt.backward(retain_graph=True)
    assert [v.grad for v, _ in pairs] == [2 * g for g in first]
    assert all(close(v.grad, t.grad.item()) for v, t in pairs)

    zv, zt = hv.exp() + bv, ht.exp() + bt  # a second output sharing h and b adds its own gradients
    zv.backward()
    zt.backward(retain_graph=True)
    assert all(close(v.grad, t.grad.item()) for v, t in pairs)

    for v, t in pairs:  # reset, as Module.zero_grad() / optimizer.zero_grad() do
        v.grad, t.grad = 0.0, None
    yv.backward()
    yt.backward()
    assert [v.grad for v, _ in pairs] == first
    assert all(close(v.grad, t.grad.item()) for v, t in pairs)


# ---- the iterative topological sort ----


def test_200k_node_chain_backward_without_recursion(cycle_gc_paused):
    # y = x + 1 + 1 + ... (200,000 additions), so dy/dx = 1 and every node in between has grad 1
    x = Value(0.5)
    y = x
    for _ in range(200_000):
        y = y + 1.0
    order = topological_order(y)
    assert len(order) == 1 + 2 * 200_000  # x, plus one constant leaf and one sum per step
    assert order[-1] is y and x in set(order)
    y.backward()
    assert (y.data, x.grad) == (200_000.5, 1.0)


def test_topological_order_puts_children_first():
    a, b = Value(1.0), Value(2.0)
    c = a * b
    d = c + a
    e = d * c
    order = topological_order(e)
    where = {id(v): k for k, v in enumerate(order)}
    assert len(order) == 5 and order[-1] is e
    for v in order:
        assert all(where[id(ch)] < where[id(v)] for ch in v._children)


# ---- errors name the problem ----


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Value("x"), TypeError, r"real number .* got str 'x'"),
        (lambda: Value(None), TypeError, r"got NoneType None"),
        (lambda: Value(True), TypeError, r"got bool True"),
        (lambda: Value(0) ** -1, ValueError, r"0 \*\* -1 is undefined"),
        (lambda: Value(0.0) ** -0.5, ValueError, r"0 \*\* -0.5 is undefined"),
        (lambda: Value(-8.0) ** (1 / 3), ValueError, r"negative base to a non-integer power"),
        (lambda: Value(2.0) ** Value(3.0), TypeError, r"exponent must be a plain number, got Value"),
        (lambda: 2.0 ** Value(3.0), TypeError, r"exponent must be a plain number, got Value"),
        (lambda: Value(2.0) ** "3", TypeError, r"exponent must be an int or float, got str"),
        (lambda: Value(-1.0).log(), ValueError, r"log needs a positive number, got Value\(data=-1.0"),
        (lambda: Value(0.0).log(), ValueError, r"log needs a positive number, got Value\(data=0.0"),
        (lambda: Value(1.0) / 0, ZeroDivisionError, r"the denominator is Value\(data=0.0"),
        (lambda: 1.0 / Value(0.0), ZeroDivisionError, r"the denominator is Value\(data=0.0"),
        (lambda: Value(1.0) + "x", TypeError, r"unsupported operand .* 'Value' and 'str'"),
        (lambda: "x" * Value(1.0), TypeError, r"can't multiply sequence|unsupported operand"),
    ],
)
def test_bad_input_raises_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()
