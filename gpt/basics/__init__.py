"""gpt.basics: the Week 2.2 stepping stones to a transformer.

Reading order: ``ngram.py`` (a counted n-gram model and the same model as a one-layer network trained by
gradient descent: both reach the same table) -> ``manual_backprop.py`` (the backward pass of an MLP
block and of one attention head written by hand, checked against autograd in fp64).

References: Karpathy's makemore (n-grams); "Building makemore Part 4: Becoming a Backprop Ninja".
"""

from gpt.basics.manual_backprop import (
    attention_head_backward,
    attention_head_forward,
    mlp_backward,
    mlp_forward,
)
from gpt.basics.ngram import NeuralNGram, NGramConfig, count_probs, count_table, nll, train_neural

__all__ = [
    "NGramConfig",
    "NeuralNGram",
    "attention_head_backward",
    "attention_head_forward",
    "count_probs",
    "count_table",
    "mlp_backward",
    "mlp_forward",
    "nll",
    "train_neural",
]
