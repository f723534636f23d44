"""Exact dedup, MinHash estimates vs the true Jaccard, LSH candidates and near-duplicate removal."""

import numpy as np
import pytest

from gpt.data.dedup import (
    MinHashConfig,
    candidate_probability,
    estimated_jaccard,
    exact_dedup,
    hash_family,
    jaccard,
    near_dedup,
    near_duplicate_pairs,
    shingles,
    signature,
)


def random_doc(rng, n_words=300, vocab=2000):
    return " ".join(f"w{i}" for i in rng.integers(0, vocab, size=n_words))


def edit_tail(doc, k, rng):
    """The same document with its last k words replaced by fresh ones."""
    words = doc.split()
    return " ".join(words[: len(words) - k] + [f"new{i}" for i in rng.integers(0, 10**6, size=k)])


def test_hand_worked_shingles_and_jaccard():
    assert shingles("A b c d", n=2) == {"a b", "b c", "c d"}
    assert shingles("a b", n=5) == {"a b"} and shingles("   ", n=5) == set()
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    # 2 bands of 1 row at similarity 0.5: 1 - (1 - 0.5)^2 = 0.75
    assert candidate_probability(0.5, bands=2, rows=1) == pytest.approx(0.75)


def test_exact_dedup_keeps_first_copy():
    kept, removed = exact_dedup(["a", "b", "a", "c", "b"])
    assert kept == ["a", "b", "c"] and removed == 2


def test_identical_sets_have_identical_signatures():
    family = hash_family(MinHashConfig())
    s = shingles("the quick brown fox jumps over the lazy dog again and again")
    assert estimated_jaccard(signature(s, family), signature(set(s), family)) == 1.0


def test_minhash_estimate_close_to_true_jaccard():
    rng = np.random.default_rng(0)
    cfg = MinHashConfig(num_perm=256, bands=32)
    family = hash_family(cfg)
    errors = []
    for k in (10, 40, 80, 150, 220, 280):
        a = random_doc(rng)
        b = edit_tail(a, k, rng)
        sa, sb = shingles(a), shingles(b)
        est = estimated_jaccard(signature(sa, family), signature(sb, family))
        true = jaccard(sa, sb)
        # standard error sqrt(J(1-J)/256) <= 0.031; allow about 3 standard errors
        assert abs(est - true) <= 0.1, (k, est, true)
        errors.append(est - true)
    assert abs(np.mean(errors)) <= 0.04  # unbiased on average


def test_near_duplicate_pair_caught_distinct_pair_not():
    rng = np.random.default_rng(1)
    a = random_doc(rng)
    near = edit_tail(a, 3, rng)  # true Jaccard of 5-gram sets about 0.95
    other = random_doc(rng)
    assert jaccard(shingles(a), shingles(near)) > 0.9
    pairs = near_duplicate_pairs([a, other, near])
    assert [(i, j) for i, j, _ in pairs] == [(0, 2)]
    assert pairs[0][2] >= 0.8


def test_near_dedup_keeps_first_of_each_group():
    rng = np.random.default_rng(2)
    a, x = random_doc(rng), random_doc(rng)
    docs = [a, x, edit_tail(a, 2, rng), edit_tail(a, 4, rng), edit_tail(x, 1, rng)]
    kept, removed = near_dedup(docs)
    assert kept == [a, x] and removed == 3


def test_config_errors():
    with pytest.raises(ValueError, match="multiple of bands"):
        MinHashConfig(num_perm=100, bands=16)
    with pytest.raises(ValueError, match="threshold"):
        MinHashConfig(threshold=0.0)
