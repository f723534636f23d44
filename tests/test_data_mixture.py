"""Mixtures: epochs per source (exact counts, subsets without replacement) and sampling proportions."""

from collections import Counter

import pytest

from gpt.data.mixture import mix_documents, mixture_counts, sample_sources


def test_mixture_counts_hand_worked():
    assert mixture_counts({"web": 10, "books": 4}, {"web": 0.5, "books": 2.5}) == {"web": 5, "books": 10}
    assert mixture_counts({"web": 3}, {}) == {"web": 3}  # a missing weight is one epoch


def test_mix_documents_up_and_downsamples():
    sources = {"web": [f"web{i}" for i in range(10)], "books": [f"book{i}" for i in range(4)]}
    docs, counts = mix_documents(sources, {"web": 0.5, "books": 2.5}, seed=0)
    assert counts == {"web": 5, "books": 10} and len(docs) == 15
    c = Counter(docs)
    web = [d for d in c if d.startswith("web")]
    assert len(web) == 5 and all(c[d] == 1 for d in web)  # a subset, without replacement
    assert sorted(c[f"book{i}"] for i in range(4)) == [2, 2, 3, 3]  # 2 whole epochs + 2 of 4 more
    assert mix_documents(sources, {"web": 0.5, "books": 2.5}, seed=0)[0] == docs
    assert mix_documents(sources, {"web": 0.5, "books": 2.5}, seed=1)[0] != docs


def test_sampled_proportions_match_weights_and_seed():
    weights = {"web": 7.0, "code": 2.0, "books": 1.0}
    draws = sample_sources(weights, 20_000, seed=3)
    counts = Counter(draws)
    for name, w in weights.items():
        # binomial standard error <= sqrt(0.25 / 20000) = 0.0035; tolerance about 3 of them
        assert abs(counts[name] / 20_000 - w / 10) <= 0.011
    assert sample_sources(weights, 100, seed=3) == draws[:100]
    assert sample_sources(weights, 100, seed=4) != draws[:100]


def test_bad_weights():
    with pytest.raises(ValueError, match="unknown sources"):
        mix_documents({"a": ["x"]}, {"b": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        sample_sources({"a": -1.0, "b": 1.0}, 10)
    with pytest.raises(ValueError, match="sum to zero"):
        sample_sources({"a": 0.0}, 10)
