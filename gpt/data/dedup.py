"""Deduplication: exact (a hash per document) and near-duplicate (MinHash signatures + LSH bands).

Teaches why and how web-scale corpora are deduplicated. Exact dedup keeps the first document with a
given SHA-256. Near-duplicates (the same page with a different date, footer or a few edits) need a
similarity: the Jaccard index of the documents' sets of word 5-grams ("shingles"). MinHash (Broder
1997, "On the resemblance and containment of documents") estimates it cheaply: for a random hash
function h, P[min h(A) = min h(B)] = J(A, B), so the fraction of equal entries in two signatures of
``num_perm`` minima is an unbiased estimate with standard error sqrt(J(1-J)/num_perm).

Comparing all pairs of signatures is quadratic; locality-sensitive hashing cuts each signature into
``bands`` bands of ``rows`` entries and only compares documents that agree on a whole band, which
happens with probability 1 - (1 - J^rows)^bands (an S-curve around (1/bands)^(1/rows)). Candidates are
then confirmed by their estimated Jaccard >= ``threshold`` and grouped with union-find; the first
document of each group is kept. Lee et al. 2022 ("Deduplicating Training Data Makes Language Models
Better", NearDup) use 5-grams, 9,000 hashes in 20 bands of 450 and threshold 0.8; we default to 128
hashes in 16 bands of 8, enough for a course corpus.

The hash family is h(x) = (a*x + b) mod p with p = 2^31 - 1 (a Mersenne prime), so a*x + b < 2^62
fits numpy's uint64 exactly and one (num_perm, num_shingles) matrix product gives a signature.
Shingles are hashed with ``zlib.crc32``, not Python's ``hash`` (salted per process, not reproducible).
"""

import hashlib
import zlib
from dataclasses import dataclass

import numpy as np

MERSENNE_PRIME = (1 << 31) - 1


@dataclass
class MinHashConfig:
    num_perm: int = 128
    bands: int = 16
    ngram: int = 5
    threshold: float = 0.8
    seed: int = 0

    def __post_init__(self):
        if self.num_perm < 1 or self.bands < 1 or self.num_perm % self.bands:
            raise ValueError(
                f"num_perm={self.num_perm} must be a positive multiple of bands={self.bands} "
                "(each band holds num_perm // bands rows)"
            )
        if self.ngram < 1:
            raise ValueError(f"ngram={self.ngram}; shingles need at least one word")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold={self.threshold}; a Jaccard threshold is in (0, 1]")

    @property
    def rows(self) -> int:
        return self.num_perm // self.bands


def exact_duplicate_mask(docs: list[str]) -> np.ndarray:
    """True for every document whose exact text (SHA-256) already appeared earlier in ``docs``."""
    seen, mask = set(), np.zeros(len(docs), dtype=bool)
    for i, doc in enumerate(docs):
        digest = hashlib.sha256(doc.encode("utf-8")).digest()
        mask[i] = digest in seen
        seen.add(digest)
    return mask


def exact_dedup(docs: list[str]) -> tuple[list[str], int]:
    """(documents with the first copy of each exact text kept, number removed)."""
    mask = exact_duplicate_mask(docs)
    return [d for d, dup in zip(docs, mask, strict=True) if not dup], int(mask.sum())


def shingles(text: str, n: int = 5) -> set[str]:
    """Lowercased word n-grams; a text shorter than n words is one shingle (an empty text, none)."""
    words = text.lower().split()
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """|A & B| / |A | B| (1.0 for two empty sets)."""
    return len(a & b) / len(a | b) if a or b else 1.0


def hash_family(cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """The ``num_perm`` (a, b) pairs of h(x) = (a*x + b) mod p, drawn from ``cfg.seed``."""
    rng = np.random.default_rng(cfg.seed)
    a = rng.integers(1, MERSENNE_PRIME, size=cfg.num_perm, dtype=np.uint64)
    b = rng.integers(0, MERSENNE_PRIME, size=cfg.num_perm, dtype=np.uint64)
    return a, b


def signature(shingle_set: set[str], family: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """MinHash signature (num_perm,) uint64; an empty set gets all-p (matches nothing but itself)."""
    a, b = family
    if not shingle_set:
        return np.full(a.shape, MERSENNE_PRIME, dtype=np.uint64)
    x = np.fromiter((zlib.crc32(s.encode("utf-8")) for s in shingle_set), dtype=np.uint64)
    x %= np.uint64(MERSENNE_PRIME)
    h = (a[:, None] * x[None, :] + b[:, None]) % np.uint64(MERSENNE_PRIME)  # (num_perm, num_shingles)
    return h.min(axis=1)


def signatures(docs: list[str], cfg: MinHashConfig) -> np.ndarray:
    """(num_docs, num_perm) uint64 signatures of the documents' word n-gram sets."""
    family = hash_family(cfg)
    sigs = np.empty((len(docs), cfg.num_perm), dtype=np.uint64)
    for i, doc in enumerate(docs):
        sigs[i] = signature(shingles(doc, cfg.ngram), family)
    return sigs


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))


def candidate_probability(similarity, bands: int, rows: int):
    """P[two documents with Jaccard ``similarity`` share at least one LSH band] = 1 - (1 - s^r)^b."""
    return 1 - (1 - np.asarray(similarity, dtype=np.float64) ** rows) ** bands


def lsh_candidates(sigs: np.ndarray, cfg: MinHashConfig) -> set[tuple[int, int]]:
    """Pairs (i < j) whose signatures agree on every row of at least one band."""
    pairs: set[tuple[int, int]] = set()
    for band in range(cfg.bands):
        buckets: dict[bytes, list[int]] = {}
        block = np.ascontiguousarray(sigs[:, band * cfg.rows : (band + 1) * cfg.rows])  # (N, rows)
        for i in range(len(sigs)):
            buckets.setdefault(block[i].tobytes(), []).append(i)
        for members in buckets.values():
            pairs.update(
                (members[x], members[y]) for x in range(len(members)) for y in range(x + 1, len(members))
            )
    return pairs


def near_duplicate_pairs(docs: list[str], cfg: MinHashConfig | None = None) -> list[tuple[int, int, float]]:
    """(i, j, estimated Jaccard) for LSH candidates whose estimate is >= ``cfg.threshold``, sorted."""
    cfg = cfg or MinHashConfig()
    sigs = signatures(docs, cfg)
    found = []
    for i, j in sorted(lsh_candidates(sigs, cfg)):
        est = estimated_jaccard(sigs[i], sigs[j])
        if est >= cfg.threshold:
            found.append((i, j, est))
    return found


def near_duplicate_mask(docs: list[str], cfg: MinHashConfig | None = None) -> np.ndarray:
    """True for every document in a near-duplicate group except the group's first (union-find)."""
    parent = list(range(len(docs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving
            i = parent[i]
        return i

    for i, j, _ in near_duplicate_pairs(docs, cfg):
        ri, rj = root(i), root(j)
        parent[max(ri, rj)] = min(ri, rj)  # the group's root is its first document
    return np.array([root(i) != i for i in range(len(docs))], dtype=bool)


def near_dedup(docs: list[str], cfg: MinHashConfig | None = None) -> tuple[list[str], int]:
    """(documents with one per near-duplicate group kept, the first; number removed)."""
    mask = near_duplicate_mask(docs, cfg)
    return [d for d, dup in zip(docs, mask, strict=True) if not dup], int(mask.sum())
