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

A dataset that streams (``fineweb-edu``, ``sources.STREAMED_DATASETS``) is read a batch of documents
at a time and written straight into the shards (``stream_to_shards``), so memory stays flat for 10B
tokens; steps that need every document first (dedup, mixture weights, a char vocabulary) switch it to
the in-memory path above.

``meta.json`` records the settings, the tokenizer spec (``load_tokenizer`` rebuilds it), the token
counts, a description of what was read and each filter's report. ``prepare`` is idempotent: when
``out_dir`` already holds a ``meta.json`` with the same settings and all its shards, it returns that
data without tokenizing again; with other settings, the old data stays until the new shards are
complete (written under ``out_dir/.incomplete``), so a run that fails leaves the old data usable.
Reference: nanoGPT ``data/openwebtext/prepare.py`` and build-nanogpt ``fineweb.py`` (EOT *before* each
document, uint16 shards of 100M tokens, first shard as val).

    python -m gpt.data pystdlib --out data/pystdlib
    python -m gpt.data tinyshakespeare --tokenizer char --out data/shakespeare_char
"""

import itertools
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpt.data.clean import CleanConfig, clean_documents
from gpt.data.dedup import MinHashConfig, exact_duplicate_mask, near_duplicate_mask
from gpt.data.filters import FilterConfig, FilterReport, apply_filters
from gpt.data.mixture import mix_documents
from gpt.data.shards import MAX_TOKEN_ID, ShardWriter
from gpt.data.sources import STREAMED_DATASETS, load_corpus, source_fingerprint, unit_hash
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


def write_documents(docs: list[str], tok, writer: ShardWriter, num_workers: int) -> None:
    """Encode ``docs`` (``tok.encode_batch`` runs ``num_workers`` threads/processes) into ``writer``,
    ``tok.eot_id`` before each document when the tokenizer has one."""
    eot = None if tok.eot_id is None else np.array([tok.eot_id], dtype=np.int64)
    for ids in tok.encode_batch(docs, num_workers=num_workers):
        if eot is not None:
            writer.add(eot)
        writer.add(np.asarray(ids, dtype=np.int64))


def tokenize_to_shards(docs, tok, out_dir: Path, prefix: str, shard_tokens: int, num_workers: int, desc: str):
    """Encode a list of documents in batches, with a progress bar, into ``{prefix}_*.bin`` shards."""
    from tqdm import tqdm

    writer = ShardWriter(out_dir, prefix, shard_tokens)
    batch = 256 * max(1, num_workers)
    with tqdm(total=len(docs), unit="docs", desc=desc) as bar:
        for start in range(0, len(docs), batch):
            chunk = docs[start : start + batch]
            write_documents(chunk, tok, writer, num_workers)
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
    old_shards = []  # what an earlier run with other settings left; removed only once the new data is done
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        old_shards = [out_dir / n for n in meta.get("train_shards", []) + meta.get("val_shards", [])]
        if meta.get("settings") == settings and all(p.is_file() for p in old_shards):
            print(f"prepare: using {meta['source_description']} already tokenized in {out_dir}")
            return load_prepared(out_dir)
        print(f"prepare: {out_dir} holds data prepared with other settings; preparing again")

    num_workers = num_workers or os.cpu_count() or 1
    staging = out_dir / ".incomplete"  # shards are written here, then moved in beside meta.json
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # a streamed source is read one batch of documents at a time unless a step needs them all at once
    stream = STREAMED_DATASETS.get(sources[0]) if len(sources) == 1 else None
    try:
        if stream is not None and not dedup and not weights and tokenizer != "char":
            docs = stream(limits.get("max_docs"))
            meta = stream_to_shards(sources[0], docs, settings, staging, shard_tokens, num_workers)
        else:
            meta = prepare_in_memory(sources, settings, staging, shard_tokens, num_workers)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    meta_path.unlink(missing_ok=True)  # from here until the new meta.json lands, out_dir holds no data
    for p in old_shards:
        p.unlink(missing_ok=True)
    for p in meta["train_shards"] + meta["val_shards"]:
        os.replace(p, out_dir / p.name)
    staging.rmdir()
    meta = {"settings": settings, **meta}
    meta["train_shards"] = [p.name for p in meta["train_shards"]]
    meta["val_shards"] = [p.name for p in meta["val_shards"]]
    tmp = meta_path.with_name("meta.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path)  # meta.json appears last, after every shard is complete
    n_train, n_val = meta["num_train_tokens"], meta["num_val_tokens"]
    print(f"prepare: wrote {n_train:,} train and {n_val:,} val tokens to {out_dir}")
    return load_prepared(out_dir)


def checked_tokenizer(spec: str, text_for_chars: str | None = None):
    tok = make_tokenizer(spec, text_for_chars=text_for_chars)
    if tok.vocab_size > MAX_TOKEN_ID + 1:
        raise ValueError(
            f"the {tok.kind} tokenizer has {tok.vocab_size} ids but uint16 shards hold ids up to "
            f"{MAX_TOKEN_ID}; use a vocabulary of at most 65,536 tokens"
        )
    return tok


def prepare_in_memory(sources: list[str], settings: dict, staging: Path, shard_tokens: int, num_workers: int):
    """Every source's documents in memory: clean, filter, dedup across sources, mix, tokenize."""
    tokenizer, seed, weights = settings["tokenizer"], settings["seed"], settings["weights"]
    limits = settings["limits"]
    corpora = [load_corpus(s, val_fraction=settings["val_fraction"], seed=seed, **limits) for s in sources]
    description = "; ".join(c.description for c in corpora)
    reports: list[dict] = []
    tagged = []  # (source, split, text), every train document before every val document
    for split in ("train", "val"):
        for name, corpus in zip(sources, corpora, strict=True):
            docs = getattr(corpus, split)
            report = FilterReport(len(docs))
            tagged += [(name, split, d) for d in filter_documents(docs, settings, report)]
            reports.append({"source": name, "split": split, **report.to_dict()})
    if settings["dedup"]:
        report = FilterReport(len(tagged))
        tagged = dedup_documents(tagged, seed, report)
        reports.append({"source": "all", "split": "train+val", **report.to_dict()})
    print_reports(reports, settings)
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
    tok = checked_tokenizer(tokenizer, text_for_chars=chars)
    print(f"prepare: {description} -> {staging.parent} ({tok.kind} tokenizer, {num_workers} workers)")
    train_shards, n_train = tokenize_to_shards(
        train_docs, tok, staging, "train", shard_tokens, num_workers, "train"
    )
    val_shards, n_val = tokenize_to_shards(val_docs, tok, staging, "val", shard_tokens, num_workers, "val")
    return {
        "source_description": description,
        "documents": {"train": len(train_docs), "val": len(val_docs), "train_by_source": counts},
        "tokenizer_spec": tok.to_dict(),
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "train_shards": train_shards,
        "val_shards": val_shards,
        "num_train_tokens": n_train,
        "num_val_tokens": n_val,
        "reports": reports,
    }


def stream_to_shards(source: str, docs, settings: dict, staging: Path, shard_tokens: int, num_workers: int):
    """One streamed source, a batch of documents at a time: split each document by the hash of its index
    (the rule ``load_corpus`` uses), clean and filter it, tokenize it into the train or val shards.

    Nothing needs all documents at once, so memory stays flat however many there are; the price is
    that there is no dedup, no mixture and no char vocabulary (those read everything first), and
    documents stay in stream order (``ShardedLoader(order="shuffled")`` shuffles the windows).
    """
    from tqdm import tqdm

    tok = checked_tokenizer(settings["tokenizer"])
    val_fraction, seed = settings["val_fraction"], settings["seed"]
    writers = {split: ShardWriter(staging, split, shard_tokens) for split in ("train", "val")}
    num_in = {"train": 0, "val": 0}
    removed = {"train": Counter(), "val": Counter()}  # step name -> documents removed, over all batches
    print(f"prepare: streaming {source} -> {staging.parent} ({tok.kind} tokenizer, {num_workers} workers)")
    index, batch_size = 0, 256 * max(1, num_workers)
    with tqdm(unit="docs", desc=source) as bar:
        while batch := list(itertools.islice(docs, batch_size)):
            is_val = [unit_hash(str(i), seed) < val_fraction for i in range(index, index + len(batch))]
            index += len(batch)
            for split, want_val in (("train", False), ("val", True)):
                part = [d for d, v in zip(batch, is_val, strict=True) if v == want_val]
                report = FilterReport(len(part))
                write_documents(filter_documents(part, settings, report), tok, writers[split], num_workers)
                num_in[split] += len(part)
                removed[split].update({name: count for name, count, _ in report.rows})
            bar.update(len(batch))
    totals = {split: FilterReport(num_in[split]) for split in num_in}
    for split, report in totals.items():
        for name, count in removed[split].items():
            report.add(name, count)
    reports = [{"source": source, "split": split, **r.to_dict()} for split, r in totals.items()]
    print_reports(reports, settings)
    for split, writer in writers.items():
        if not writer.num_tokens:
            raise ValueError(
                f"no {split} text from the {index} documents streamed from {source}: the stream is empty, "
                f"every document was filtered out, or val_fraction={val_fraction} is too small for it"
            )
    return {
        "source_description": f"{source}: first {index} docs, streamed",
        "documents": {
            "train": totals["train"].num_out,
            "val": totals["val"].num_out,
            "train_by_source": {source: totals["train"].num_out},
        },
        "tokenizer_spec": tok.to_dict(),
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "train_shards": writers["train"].close(),
        "val_shards": writers["val"].close(),
        "num_train_tokens": writers["train"].num_tokens,
        "num_val_tokens": writers["val"].num_tokens,
        "reports": reports,
    }


def print_reports(reports: list[dict], settings: dict) -> None:
    if settings["clean"] or settings["quality_filter"] or settings["dedup"]:
        for r in reports:
            print(f"prepare: {r['source']} ({r['split']})\n" + FilterReport(r["num_in"], r["rows"]).table())


def parse_weight(text: str) -> tuple[str, float]:
    """``"wikitext2=3"`` -> ``("wikitext2", 3.0)`` for ``--weights``."""
    name, sep, value = text.rpartition("=")
    try:
        if not sep:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise ValueError(f"--weights {text!r}: write SOURCE=EPOCHS, e.g. wikitext2=3") from None
