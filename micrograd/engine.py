"""A scalar autograd engine: reverse-mode automatic differentiation one number at a time.

Teaches how ``loss.backward()`` works. Every arithmetic operation on a ``Value`` returns a new
``Value`` that remembers its inputs (``_children``) and, computed right there in the forward pass,
the local derivative of the output with respect to each input (``_local_grads``). ``backward()``
then visits the graph from the output down to the leaves in reverse topological order and applies
the chain rule::

    d(root)/d(child) += d(node)/d(child) * d(root)/d(node)      # local grad * upstream grad

The ``+=`` is the multivariate chain rule: a node used several times (``a * a``, or ``a`` feeding
two branches) collects one contribution per use.

Gradients accumulate across ``backward()`` calls, exactly like PyTorch: each call *adds*
d(root)/d(v) to ``v.grad`` for every ``Value`` v in the graph (torch does this for leaf tensors,
and for non-leaf tensors after ``retain_grad()``). So reset them between optimisation steps:
``Module.zero_grad()`` in ``micrograd.nn`` sets every parameter's ``grad`` to 0.0, the counterpart
of torch's ``optimizer.zero_grad()`` (which sets them to ``None`` by default; 0.0 and ``None``
mean the same thing to the next ``backward()``). Unlike torch, a second ``backward()`` over the
same graph needs no ``retain_graph=True``: the graph is plain Python objects and is never freed.

``backward()`` sorts the graph with an explicit stack, not recursion, so a 200,000-node chain
works (a recursive sort hits Python's recursion limit near 1,000 deep).

Differences from floats and torch, on purpose:
- ``x ** p`` takes a plain number ``p`` only; ``Value ** Value`` raises TypeError (write
  ``(p * x.log()).exp()`` for a learnable exponent).
- ``0 ** negative`` raises ValueError and ``x / 0`` raises ZeroDivisionError (torch returns inf);
  ``log`` of a non-positive number raises ValueError (torch returns nan or -inf).
- ``relu``'s derivative at exactly 0 is 0, as in torch.

Reference: Karpathy's micrograd (github.com/karpathy/micrograd, ``micrograd/engine.py``), with the
local gradients stored at forward time, as in his later ``microgpt.py``
(gist.github.com/karpathy/8627fe009c40f57531cb18360106ce95), instead of one ``_backward`` closure
per node.
"""

import math
import numbers


class Value:
    """One scalar in a computation graph: its ``data``, its ``grad`` = d(root)/d(self), and its inputs."""

    # __slots__: a 200,000-node graph stays small, and a typo like ``v.grd = 0`` raises instead of passing.
    __slots__ = ("_children", "_local_grads", "_op", "data", "grad", "label")

    def __init__(self, data, _children=(), _local_grads=(), _op="", label=""):
        if type(data) is not float:  # the ops below always pass floats: skip the slower checks for them
            if isinstance(data, bool) or not isinstance(data, numbers.Real):
                raise TypeError(
                    f"Value needs a real number (int or float), got {type(data).__name__} {data!r}; "
                    "convert it first, e.g. Value(float(x))"
                )
            data = float(data)
        self.data = data
        self.grad = 0.0
        self._children = _children  # the Values this one was computed from (empty for a leaf)
        self._local_grads = _local_grads  # d(self)/d(child), one per child, in the same order
        self._op = _op  # "+", "*", "tanh", ... : for printing and drawing only
        self.label = label

    def __repr__(self):
        name = f"{self.label}: " if self.label else ""
        return f"Value({name}data={self.data!r}, grad={self.grad!r})"

    # ---- binary operators: each returns a new Value with its children and local derivatives ----

    def __add__(self, other):
        other = _as_value(other)
        if other is None:
            return NotImplemented
        # d(a+b)/da = 1, d(a+b)/db = 1
        return Value(self.data + other.data, (self, other), (1.0, 1.0), "+")

    def __sub__(self, other):
        other = _as_value(other)
        if other is None:
            return NotImplemented
        # d(a-b)/da = 1, d(a-b)/db = -1
        return Value(self.data - other.data, (self, other), (1.0, -1.0), "-")

    def __mul__(self, other):
        other = _as_value(other)
        if other is None:
            return NotImplemented
        # d(a*b)/da = b, d(a*b)/db = a
        return Value(self.data * other.data, (self, other), (other.data, self.data), "*")

    def __truediv__(self, other):
        other = _as_value(other)
        if other is None:
            return NotImplemented
        if other.data == 0:
            raise ZeroDivisionError(f"division by zero: the denominator is {other!r}")
        # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
        b = other.data
        return Value(self.data / b, (self, other), (1.0 / b, -self.data / (b * b)), "/")

    def __pow__(self, exponent):
        if isinstance(exponent, Value):
            raise TypeError(
                f"the exponent must be a plain number, got {exponent!r}: micrograd differentiates "
                "x ** p with respect to x only. For a learnable exponent write (p * x.log()).exp()"
            )
        if isinstance(exponent, bool) or not isinstance(exponent, numbers.Real):
            raise TypeError(
                f"the exponent must be an int or float, got {type(exponent).__name__} {exponent!r}"
            )
        x, p = self.data, float(exponent)
        if x == 0 and p < 0:
            raise ValueError(f"0 ** {exponent} is undefined (division by zero): the base is {self!r}")
        if x < 0 and not p.is_integer():
            raise ValueError(
                f"a negative base to a non-integer power is not a real number: {x!r} ** {exponent!r}"
            )
        if p == 0:
            local = 0.0  # x ** 0 = 1 everywhere, so its slope is 0 (torch agrees, even at x = 0)
        elif x == 0 and p < 1:
            local = math.inf  # the slope of x ** p at 0 for 0 < p < 1 is infinite (torch gives inf too)
        else:
            local = p * x ** (p - 1)  # d(x^p)/dx = p x^(p-1)
        return Value(x**p, (self,), (local,), f"**{exponent:g}")

    # ---- the reflected and unary forms, so 2 * x, 1 - x, 3 / x and -x all work ----

    def __radd__(self, other):  # other + self
        other = _as_value(other)
        return NotImplemented if other is None else other + self

    def __rsub__(self, other):  # other - self
        other = _as_value(other)
        return NotImplemented if other is None else other - self

    def __rmul__(self, other):  # other * self
        other = _as_value(other)
        return NotImplemented if other is None else other * self

    def __rtruediv__(self, other):  # other / self
        other = _as_value(other)
        return NotImplemented if other is None else other / self

    def __rpow__(self, base):  # base ** self: a Value exponent, which we do not differentiate
        raise TypeError(
            f"the exponent must be a plain number, got {self!r}: micrograd differentiates "
            "x ** p with respect to x only. For b ** x write (x * math.log(b)).exp()"
        )

    def __neg__(self):
        return Value(-self.data, (self,), (-1.0,), "neg")

    # ---- activation functions and elementary functions ----

    def relu(self):
        # slope 1 for x > 0, 0 for x <= 0 (0 at the kink, like torch)
        return Value(max(0.0, self.data), (self,), (1.0 if self.data > 0 else 0.0,), "relu")

    def tanh(self):
        t = math.tanh(self.data)
        return Value(t, (self,), (1.0 - t * t,), "tanh")  # d tanh(x)/dx = 1 - tanh(x)^2

    def sigmoid(self):
        # Two algebraically equal forms, each exp() argument <= 0, so neither overflows.
        x = self.data
        if x >= 0:
            s = 1.0 / (1.0 + math.exp(-x))
        else:
            e = math.exp(x)
            s = e / (1.0 + e)
        return Value(s, (self,), (s * (1.0 - s),), "sigmoid")  # d sigma(x)/dx = sigma(x) (1 - sigma(x))

    def exp(self):
        e = math.exp(self.data)
        return Value(e, (self,), (e,), "exp")  # d e^x/dx = e^x

    def log(self):
        if self.data <= 0:
            raise ValueError(f"log needs a positive number, got {self!r}")
        return Value(math.log(self.data), (self,), (1.0 / self.data,), "log")  # d ln(x)/dx = 1/x

    # ---- the backward pass ----

    def backward(self):
        """Add d(self)/d(v) to ``v.grad`` for every Value v that self depends on (self included).

        Gradients accumulate across calls, as in torch; reset them with ``Module.zero_grad()``.
        """
        # This call's gradients live in a dict, so that a v.grad left over from an earlier call is never
        # pushed down the graph a second time: only the fresh d(self)/d(v) flows to v's children.
        upstream = {self: 1.0}  # d(self)/d(self) = 1
        for node in reversed(topological_order(self)):  # every node comes before its children
            g = upstream.pop(node)  # complete: all of node's parents were visited before it
            node.grad += g
            for child, local in zip(node._children, node._local_grads, strict=True):
                upstream[child] = upstream.get(child, 0.0) + local * g  # chain rule, summed over uses


def _as_value(x):
    """A Value for a Value or a plain real number; None for anything else (the operator then returns
    NotImplemented and Python raises "unsupported operand type(s)")."""
    if isinstance(x, Value):
        return x
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return Value(x)
    return None


def topological_order(root):
    """Every Value that ``root`` depends on, children before parents, ``root`` last.

    A depth-first search with an explicit stack (no recursion, so any depth works). Each node is
    pushed twice: first to expand it (push its children on top), then, once everything above it
    is done, to emit it, so it comes after all of its children.
    """
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)  # all its children were emitted while this entry waited below them
            continue
        if node in seen:  # reached again through another parent
            continue
        seen.add(node)
        stack.append((node, True))
        for child in node._children:
            if child not in seen:
                stack.append((child, False))
    return order
