"""prepare(): raw sources -> cleaned, deduplicated, mixed, tokenized uint16 shards + meta.json.

Teaches the whole offline half of a pre-training data pipeline in one function that composes the
sibling modules in order:

    sources (load_corpus) -> clean (clean_text) -> quality filters (Gopher rules) -> exact + MinHash
    dedup over all sources, train before val -> mixture of the train documents (epochs per source,
    shuffled by seed) -> tokenize in parallel, EOT before every document -> ShardWriter
    (train_000000.bin, ..., val_000000.bin) -> meta.json

Dedup runs over every source's train and val documents together, train first, so a val document
that repeats a training document is the one removed: otherwise the val loss would reward memorising.
The val set is every source's val split once (the mixture weights only the training documents).

``meta.json`` records the settings, the tokenizer spec (``load_tokenizer`` rebuilds it), the token
counts, a description of what was read and each filter's report. ``prepare`` is idempotent: when
``out_dir`` already holds a ``meta.json`` with the same settings and all its shards, it returns that
data without tokenizing again. Reference: nanoGPT ``data/openwebtext/prepare.py`` and build-nanogpt
``fineweb.py`` (EOT *before* each document, uint16 shards of 100M tokens, first shard as val).

    python -m gpt.data pystdlib --out data/pystdlib
    python -m gpt.data tinyshakespeare --tokenizer char --out data/shakespeare_char
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpt.data.clean import CleanConfig, clean_documents
from gpt.data.dedup import MinHashConfig, exact_duplicate_mask, near_duplicate_mask
from gpt.data.filters import FilterConfig, FilterReport, apply_filters
from gpt.data.mixture import mix_documents
from gpt.data.shards import MAX_TOKEN_ID, ShardWriter
from gpt.data.sources import load_corpus, source_fingerprint
from gpt.data.tokenize import make_tokenizer

META_VERSION = 1
KNOWN_LIMITS = ("max_docs",)


@dataclass
class PreparedData:
    out_dir: Path
    train_shards: list[Path]
    val_shards: list[Path]
    vocab_size: int
    eot_id: int | None
    tokenizer_spec: dict
    num_train_tokens: int
    num_val_tokens: int


def load_prepared(out_dir) -> PreparedData:
    """The ``PreparedData`` recorded in ``out_dir/meta.json``; FileNotFoundError if there is none."""
    out_dir = Path(out_dir)
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found; run gpt.data.prepare(source, '{out_dir}') first")
    meta = json.loads(meta_path.read_text())
    return PreparedData(
        out_dir=out_dir,
        train_shards=[out_dir / n for n in meta["train_shards"]],
        val_shards=[out_dir / n for n in meta["val_shards"]],
        vocab_size=meta["vocab_size"],
        eot_id=meta["eot_id"],
        tokenizer_spec=meta["tokenizer_spec"],
        num_train_tokens=meta["num_train_tokens"],
        num_val_tokens=meta["num_val_tokens"],
    )


def tokenize_to_shards(docs, tok, out_dir: Path, prefix: str, shard_tokens: int, num_workers: int, desc: str):
    """Encode ``docs`` in batches (``tok.encode_batch`` runs ``num_workers`` threads/processes) and
    stream the ids, ``tok.eot_id`` before each document when the tokenizer has one, into shards."""
    from tqdm import tqdm

    writer = ShardWriter(out_dir, prefix, shard_tokens)
    batch = 256 * max(1, num_workers)
    eot = None if tok.eot_id is None else np.array([tok.eot_id], dtype=np.int64)
    with tqdm(total=len(docs), unit="docs", desc=desc) as bar:
        for start in range(0, len(docs), batch):
            chunk = docs[start : start + batch]
            for ids in tok.encode_batch(chunk, num_workers=num_workers):
                if eot is not None:
                    writer.add(eot)
                writer.add(np.asarray(ids, dtype=np.int64))
            bar.update(len(chunk))
    return writer.close(), writer.num_tokens


def filter_documents(docs: list[str], settings: dict, report: FilterReport) -> list[str]:
    """Clean and quality-filter one source's split, adding a row per step to ``report``."""
    if settings["clean"]:
        docs = clean_documents(docs, CleanConfig())
    kept = [d for d in docs if d.strip()]
    report.add("empty documents", len(docs) - len(kept))
    if settings["quality_filter"]:
        kept, quality = apply_filters(kept, FilterConfig())
        for name, removed, _ in quality.rows:
            report.add(name, removed)
    return kept


def dedup_documents(
    tagged: list[tuple[str, str, str]], seed: int, report: FilterReport
) -> list[tuple[str, str, str]]:
    """Exact then MinHash dedup over (source, split, text) of *all* sources, train before val, so a val
    document that duplicates a training document is the copy removed (no train/val leakage)."""
    mask = exact_duplicate_mask([t for _, _, t in tagged])
    report.add("exact duplicates", int(mask.sum()))
    tagged = [d for d, dup in zip(tagged, mask, strict=True) if not dup]
    mask = near_duplicate_mask([t for _, _, t in tagged], MinHashConfig(seed=seed))
    report.add("near duplicates (MinHash)", int(mask.sum()))
    return [d for d, dup in zip(tagged, mask, strict=True) if not dup]


def prepare(
    source: str | list[str],
    out_dir,
    *,
    tokenizer: str = "gpt2",
    val_fraction: float = 0.05,
    shard_tokens: int = 100_000_000,
    num_workers: int | None = None,
    seed: int = 0,
    weights: dict[str, float] | None = None,
    clean: bool = False,
    quality_filter: bool = False,
    dedup: bool = False,
    **limits,
) -> PreparedData:
    """Tokenize ``source`` (a dataset name, a local file/folder, or a list of them) into ``out_dir``.

    ``tokenizer``: "gpt2", "char" or a bpe ``.model`` path. ``weights``: epochs per source (by the name
    given in ``source``; default 1 each). ``clean`` / ``quality_filter`` / ``dedup`` switch on the text
    cleaning, Gopher quality rules and exact + MinHash dedup (off by default: tinyshakespeare and
    Python code are neither OCR output nor web text). ``limits``: ``max_docs`` caps each source's
    documents per split. Each run with the same arguments (and unchanged local files) reuses the shards.
    """
    sources = [str(source)] if isinstance(source, (str, os.PathLike)) else [str(s) for s in source]
    if not sources:
        raise ValueError("source is an empty list; name at least one dataset or local file")
    unknown = sorted(set(limits) - set(KNOWN_LIMITS))
    if unknown:
        raise TypeError(f"prepare() got unknown limits {unknown}; known limits: {list(KNOWN_LIMITS)}")
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens={shard_tokens}; it must be a positive number of tokens")
    settings = {
        "meta_version": META_VERSION,
        "sources": sources,
        "fingerprints": [source_fingerprint(s) for s in sources] + [source_fingerprint(str(tokenizer))],
        "tokenizer": str(tokenizer),
        "val_fraction": val_fraction,
        "shard_tokens": shard_tokens,
        "seed": seed,
        "weights": weights or {},
        "clean": clean,
        "quality_filter": quality_filter,
        "dedup": dedup,
        "limits": limits,
    }
    settings = json.loads(json.dumps(settings))  # the form it has when read back from meta.json
    out_dir = Path(out_dir)
    meta_path = out_dir / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        shards = [out_dir / n for n in meta.get("train_shards", []) + meta.get("val_shards", [])]
        if meta.get("settings") == settings and all(p.is_file() for p in shards):
            print(f"prepare: using {meta['source_description']} already tokenized in {out_dir}")
            return load_prepared(out_dir)
        print(f"prepare: {out_dir} holds data prepared with other settings; preparing again")
        meta_path.unlink()
        for p in shards:
            p.unlink(missing_ok=True)

    num_workers = num_workers or os.cpu_count() or 1
    corpora = [load_corpus(s, val_fraction=val_fraction, seed=seed, **limits) for s in sources]
    description = "; ".join(c.description for c in corpora)
    reports: list[dict] = []
    tagged = []  # (source, split, text), every train document before every val document
    for split in ("train", "val"):
        for name, corpus in zip(sources, corpora, strict=True):
            docs = getattr(corpus, split)
            report = FilterReport(len(docs))
            tagged += [(name, split, d) for d in filter_documents(docs, settings, report)]
            reports.append({"source": name, "split": split, **report.to_dict()})
    if dedup:
        report = FilterReport(len(tagged))
        tagged = dedup_documents(tagged, seed, report)
        reports.append({"source": "all", "split": "train+val", **report.to_dict()})
    for r in reports if (clean or quality_filter or dedup) else []:
        print(f"prepare: {r['source']} ({r['split']})\n" + FilterReport(r["num_in"], r["rows"]).table())
    train_by_source = {
        name: [t for s, split, t in tagged if s == name and split == "train"] for name in sources
    }
    val_docs = [t for _, split, t in tagged if split == "val"]
    train_docs, counts = mix_documents(train_by_source, weights, seed)
    if not train_docs:
        raise ValueError(
            f"no training text left from {sources} ({description}): the source is empty or every "
            "document was filtered out"
        )

    chars = (
        "".join(sorted(set("".join(train_docs)) | set("".join(val_docs)))) if tokenizer == "char" else None
    )
    tok = make_tokenizer(str(tokenizer), text_for_chars=chars)
    if tok.vocab_size > MAX_TOKEN_ID + 1:
        raise ValueError(
            f"the {tok.kind} tokenizer has {tok.vocab_size} ids but uint16 shards hold ids up to "
            f"{MAX_TOKEN_ID}; use a vocabulary of at most 65,536 tokens"
        )
    print(f"prepare: {description} -> {out_dir} ({tok.kind} tokenizer, {num_workers} workers)")
    out_dir.mkdir(parents=True, exist_ok=True)
    train_shards, n_train = tokenize_to_shards(
        train_docs, tok, out_dir, "train", shard_tokens, num_workers, "train"
    )
    val_shards, n_val = tokenize_to_shards(val_docs, tok, out_dir, "val", shard_tokens, num_workers, "val")
    meta = {
        "settings": settings,
        "source_description": description,
        "documents": {"train": len(train_docs), "val": len(val_docs), "train_by_source": counts},
        "tokenizer_spec": tok.to_dict(),
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "train_shards": [p.name for p in train_shards],
        "val_shards": [p.name for p in val_shards],
        "num_train_tokens": n_train,
        "num_val_tokens": n_val,
        "reports": reports,
    }
    tmp = meta_path.with_name("meta.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path)  # meta.json appears last, after every shard is complete
    print(f"prepare: wrote {n_train:,} train and {n_val:,} val tokens to {out_dir}")
    return load_prepared(out_dir)


def parse_weight(text: str) -> tuple[str, float]:
    """``"wikitext2=3"`` -> ``("wikitext2", 3.0)`` for ``--weights``."""
    name, sep, value = text.rpartition("=")
    try:
        if not sep:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise ValueError(f"--weights {text!r}: write SOURCE=EPOCHS, e.g. wikitext2=3") from None
