"""Data mixtures: how many times each source is seen, reproducible from a seed.

Teaches the two ways a pre-training corpus is mixed from sources of very different sizes and value:

- **Epochs per source** (offline, what ``prepare`` does): a weight of 2.0 repeats every document of
  that source twice (upsampling a small, high-quality source), 0.25 keeps a random quarter
  (downsampling a large, noisy one). The integer part repeats the whole source, the fractional part
  draws a random subset without replacement; then all documents are shuffled together. The GPT-3
  paper's Table 2.2 lists exactly these "epochs elapsed when training for 300B tokens" per source
  (e.g. 0.44 for Common Crawl, 3.4 for Wikipedia; Brown et al. 2020).
- **Sampling probabilities** (online): ``sample_sources`` draws the source of each next sequence with
  probability proportional to its weight, as streaming loaders do (e.g. the DoReMi / Llama mixtures).

Every draw uses a ``numpy.random.Generator`` built from the given seed, so a mixture is reproducible.
"""

import numpy as np


def check_weights(weights: dict[str, float], names) -> None:
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"weights name unknown sources {unknown}; the sources are {sorted(names)}")
    bad = {k: w for k, w in weights.items() if not (w >= 0 and np.isfinite(w))}
    if bad:
        raise ValueError(f"weights must be finite and >= 0, got {bad}")


def mixture_counts(sizes: dict[str, int], epochs: dict[str, float]) -> dict[str, int]:
    """Documents taken from each source: ``round(size * epochs)`` (a missing weight means 1 epoch)."""
    check_weights(epochs, sizes)
    return {name: round(n * epochs.get(name, 1.0)) for name, n in sizes.items()}


def mix_documents(sources: dict[str, list[str]], epochs: dict[str, float] | None = None, seed: int = 0):
    """Documents of all sources, each repeated/subsampled by its epochs, shuffled together by ``seed``.

    Returns ``(documents, counts)`` where ``counts[name]`` is how many documents came from that source.
    """
    epochs = epochs or {}
    counts = mixture_counts({k: len(v) for k, v in sources.items()}, epochs)
    rng = np.random.default_rng(seed)
    picked: list[str] = []
    for name, docs in sources.items():
        whole, rest = divmod(counts[name], len(docs)) if docs else (0, 0)
        index = np.concatenate([np.tile(np.arange(len(docs)), whole), rng.permutation(len(docs))[:rest]])
        picked.extend(docs[i] for i in index.astype(np.int64))
    order = rng.permutation(len(picked))
    return [picked[i] for i in order], counts


def sample_sources(weights: dict[str, float], n: int, seed: int = 0) -> list[str]:
    """``n`` source names drawn i.i.d. with probability ``weight / sum(weights)``."""
    check_weights(weights, weights)
    names = list(weights)
    p = np.array([weights[k] for k in names], dtype=np.float64)
    if p.sum() <= 0:
        raise ValueError(f"weights {weights} sum to zero; give at least one source a positive weight")
    draws = np.random.default_rng(seed).choice(len(names), size=n, p=p / p.sum())
    return [names[i] for i in draws]
