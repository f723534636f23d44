"""micrograd: a scalar autograd engine and a tiny neural-net library on top of it (Week 2.3).

Teaches reverse-mode automatic differentiation one scalar at a time: every operation records its
inputs and a local derivative, and ``backward()`` applies the chain rule in reverse topological order.
"""
