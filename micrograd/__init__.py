"""micrograd: a scalar autograd engine and a tiny neural-net library on top of it (Week 2.3).

Teaches reverse-mode automatic differentiation one scalar at a time: every operation records its
inputs and a local derivative, and ``backward()`` applies the chain rule in reverse topological order.
Read in this order: ``engine.py`` (Value, backward), ``nn.py`` (Neuron, Layer, MLP, sgd_step),
``viz.py`` (draw_graph), ``data.py`` (two_moons). A leaf package: it imports nothing else from this
repository.
"""

from micrograd.engine import Value, topological_order
from micrograd.nn import MLP, Layer, Module, Neuron, sgd_step
from micrograd.viz import draw_graph

__all__ = ["MLP", "Layer", "Module", "Neuron", "Value", "draw_graph", "sgd_step", "topological_order"]
