"""A tiny neural-net library on ``Value``: a neuron, a layer of neurons, a multi-layer perceptron.

Teaches that a neural network is only arithmetic on scalars: a neuron computes
``act(w . x + b)``, a layer is a list of neurons that read the same input, an MLP is a list of
layers, and its parameters are the ``Value`` leaves that ``backward()`` fills with gradients.
``sgd_step`` is the whole optimiser: ``p.data -= lr * p.grad``. The API copies torch's on purpose
(``parameters()``, ``zero_grad()``), so the training loop in the notebook reads like a torch one.

Unlike micrograd's ``nn.py``, initialisation takes an explicit ``random.Random`` (or a seed), so
two models built with the same seed are identical and nothing reads the global random state.

Reference: Karpathy's micrograd (github.com/karpathy/micrograd, ``micrograd/nn.py``).
"""

import random

from micrograd.engine import Value

ACTIVATIONS = ("relu", "tanh", "linear")


class Module:
    """What Neuron, Layer and MLP share: a list of parameters and a way to reset their gradients."""

    def parameters(self):
        return []

    def zero_grad(self):
        """Set every parameter's grad to 0.0; backward() adds to grads (as in torch), so call this first."""
        for p in self.parameters():
            p.grad = 0.0


class Neuron(Module):
    """``act(sum_i w_i x_i + b)`` for ``nin`` inputs; weights ~ U(-1, 1), bias 0, as in micrograd."""

    def __init__(self, nin, act="relu", rng=0):
        _check_positive_int("nin", nin)
        _check_activation(act)
        rng = _as_rng(rng)
        self.w = [Value(rng.uniform(-1.0, 1.0)) for _ in range(nin)]
        self.b = Value(0.0)
        self.act = act

    def __call__(self, x):
        if len(x) != len(self.w):
            raise ValueError(f"this neuron takes {len(self.w)} inputs, got {len(x)}: {x!r}")
        z = sum(
            (wi * xi for wi, xi in zip(self.w, x, strict=True)), self.b
        )  # w . x + b, one Value per + and *
        if self.act == "relu":
            return z.relu()
        if self.act == "tanh":
            return z.tanh()
        return z

    def parameters(self):
        return [*self.w, self.b]

    def __repr__(self):
        return f"Neuron({len(self.w)}, act={self.act!r})"


class Layer(Module):
    """``nout`` neurons that all read the same ``nin`` inputs; returns a list of ``nout`` Values."""

    def __init__(self, nin, nout, act="relu", rng=0):
        _check_positive_int("nout", nout)
        rng = _as_rng(rng)
        self.neurons = [Neuron(nin, act, rng) for _ in range(nout)]

    def __call__(self, x):
        return [n(x) for n in self.neurons]

    def parameters(self):
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self):
        return f"Layer[{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    """Layers of sizes ``nin -> nouts[0] -> ... -> nouts[-1]``; ``act`` on every layer but the last.

    The last layer is linear, so its outputs are raw scores (logits). Calling the MLP returns one
    Value when the last layer has a single neuron, else a list of Values.
    """

    def __init__(self, nin, nouts, act="relu", rng=0):
        if not nouts:
            raise ValueError(f"nouts must list at least one layer size, got {nouts!r}")
        rng = _as_rng(rng)  # one generator for all layers, so the layers differ from each other
        sizes = [nin, *nouts]
        self.layers = [
            Layer(sizes[i], sizes[i + 1], act if i < len(nouts) - 1 else "linear", rng)
            for i in range(len(nouts))
        ]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x[0] if len(x) == 1 else x

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self):
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"


def sgd_step(params, lr):
    """One step of plain gradient descent: move every parameter a step ``lr`` against its gradient."""
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive, got lr={lr!r}")
    for p in params:
        p.data -= lr * p.grad


def _as_rng(rng):
    """A random.Random as is, or a new one seeded with an int; so ``rng=0`` gives reproducible weights."""
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, int) and not isinstance(rng, bool):
        return random.Random(rng)
    raise TypeError(f"rng must be a random.Random or an int seed, got {type(rng).__name__} {rng!r}")


def _check_positive_int(name, n):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive int, got {n!r}")


def _check_activation(act):
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
