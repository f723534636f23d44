"""two_moons: the toy 2-D classification set that micrograd's MLP learns (Week 2.3).

Teaches what "non-linearly separable" looks like: two interleaved half circles that no straight line
splits, so a model needs a hidden layer. The points are those of scikit-learn's ``make_moons`` (upper
moon, then lower, plus Gaussian noise), standardised per coordinate so that ``tanh`` units start in
their sensitive range. Labels are -1 and +1, for a hinge loss.
"""

import numpy as np


def two_moons(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: ``n`` points (n, 2), standardised, and their labels (n,), -1 (upper) or +1 (lower)."""
    if n < 2 or n % 2:
        raise ValueError(f"n={n}: need an even number of points, at least 2 (half per moon)")
    rng = np.random.default_rng(seed)
    t = np.linspace(0, np.pi, n // 2)
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)  # (n/2, 2)
    lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=1)  # (n/2, 2)
    X = np.concatenate([upper, lower]) + rng.normal(scale=noise, size=(n, 2))  # (n, 2)
    X = (X - X.mean(axis=0)) / X.std(axis=0)  # zero mean, unit variance per coordinate
    y = np.concatenate([-np.ones(n // 2), np.ones(n // 2)])  # (n,)
    return X, y
