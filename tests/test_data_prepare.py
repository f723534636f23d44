"""prepare(): tinyshakespeare with char and GPT-2 tokenizers decodes back to the text (GPT-2 ids equal
tiktoken's), idempotent reuse, the cleaning/filter/dedup/mixture switches, and the errors."""

import json

import numpy as np
import pytest
import torch

from gpt.data.loader import ShardedLoader
from gpt.data.prepare import load_prepared, prepare
from gpt.data.shards import read_shard
from gpt.data.sources import load_corpus, split_text
from gpt.data.tokenize import gpt2_encoding, load_tokenizer


def docs_file(tmp_path, docs, name="docs.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps({"text": d}) for d in docs))
    return str(path)


def tokens_of(paths):
    return np.concatenate([np.asarray(read_shard(p)) for p in paths]).astype(np.int64)


@pytest.fixture(scope="module")
def shakespeare(data_file):
    return data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")


def test_tinyshakespeare_char_decodes_back(shakespeare, tmp_path):
    data = prepare("tinyshakespeare", tmp_path, tokenizer="char", val_fraction=0.1, shard_tokens=300_000)
    assert data.vocab_size == 65 and data.eot_id is None  # SOURCE.md: 65 distinct characters
    assert len(data.train_shards) == 4 and len(data.val_shards) == 1
    tok = load_tokenizer(data.tokenizer_spec)
    train, val = tok.decode(tokens_of(data.train_shards)), tok.decode(tokens_of(data.val_shards))
    assert train + val == shakespeare
    assert (train, val) == split_text(shakespeare, 0.1)
    assert data.num_train_tokens + data.num_val_tokens == len(shakespeare)


def test_tinyshakespeare_gpt2_ids_equal_tiktoken(shakespeare, tmp_path, data_file):
    data_file("tokenizers", "gpt2.tiktoken")
    data = prepare("tinyshakespeare", tmp_path, shard_tokens=100_000)
    train_text, val_text = split_text(shakespeare, 0.05)
    enc = gpt2_encoding()
    train = tokens_of(data.train_shards)
    assert train.tolist() == [50256, *enc.encode_ordinary(train_text)]  # EOT before the document
    assert tokens_of(data.val_shards).tolist() == [50256, *enc.encode_ordinary(val_text)]
    assert load_tokenizer(data.tokenizer_spec).decode(train[1:]) == train_text
    assert data.vocab_size == 50257 and data.eot_id == 50256 and len(data.train_shards) == 4


def test_idempotent_and_redone_for_new_settings(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("hello world\n" * 50)
    out = tmp_path / "out"
    first = prepare(str(tmp_path / "in.txt"), out, tokenizer="char")
    stamp = first.train_shards[0].stat().st_mtime_ns
    again = prepare(str(tmp_path / "in.txt"), out, tokenizer="char")
    assert again == first and first.train_shards[0].stat().st_mtime_ns == stamp
    assert "already tokenized" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert (
        meta["tokenizer_spec"] == {"kind": "char", "chars": "\n dehlorw"}
        and "in.txt" in meta["source_description"]
    )
    other = prepare(str(tmp_path / "in.txt"), out, tokenizer="char", val_fraction=0.5)
    assert other.num_val_tokens == 25 * 12 and load_prepared(out) == other


def test_failed_prepare_with_new_settings_keeps_the_old_data(tmp_path):
    (tmp_path / "in.txt").write_text("hello world\n" * 50)
    (tmp_path / "empty.txt").write_text("")
    out = tmp_path / "out"
    first = prepare(str(tmp_path / "in.txt"), out, tokenizer="char")
    with pytest.raises(ValueError, match="no training text"):
        prepare(str(tmp_path / "empty.txt"), out, tokenizer="char")
    assert load_prepared(out) == first and all(p.is_file() for p in first.train_shards + first.val_shards)
    assert tokens_of(first.train_shards).size == first.num_train_tokens
    again = prepare(str(tmp_path / "in.txt"), out, tokenizer="char", val_fraction=0.5)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train_000000.bin", "val_000000.bin"]
    assert tokens_of(again.val_shards).size == again.num_val_tokens == 25 * 12


def test_clean_filter_dedup_and_mixture(tmp_path):
    good = (
        "The keeper of the lighthouse wrote to the harbour master that the lamp had failed twice during "
        "the storm and that the oil would not last until the supply ship came back with the spring tide. "
        "{} He asked for a new wick, for glass, and for a second man to share the watch."
    )
    docs = [good.format(f"Entry {i} of the log book.") for i in range(4)]
    web = [{"text": d} for d in [*docs, docs[0], "buy now cheap"]]  # one exact copy, one junk page
    (tmp_path / "web.jsonl").write_text("\n".join(json.dumps(r) for r in web))
    book = (
        "The ﬁrst chapter of the book tells how a young woman from the village became the keeper of the "
        "light, how she learned to read the weather from the colour of the sea, and why she stayed on the "
        "island for forty years when everyone else had left for the towns on the mainland."
    )
    (tmp_path / "book.txt").write_text(book)
    data = prepare(
        [str(tmp_path / "web.jsonl"), str(tmp_path / "book.txt")],
        tmp_path / "out",
        tokenizer="char",
        val_fraction=0.0,
        weights={str(tmp_path / "book.txt"): 3.0},
        clean=True,
        quality_filter=True,
        dedup=True,
    )
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    reports = {(r["source"], r["split"]): {n: k for n, k, _ in r["rows"]} for r in meta["reports"]}
    assert reports[(str(tmp_path / "web.jsonl"), "train")]["word count"] == 1  # "buy now cheap"
    assert reports[("all", "train+val")]["exact duplicates"] == 1
    # the 4 log entries differ in one short sentence: near duplicates at Jaccard >= 0.8
    assert reports[("all", "train+val")]["near duplicates (MinHash)"] == 3
    assert meta["documents"]["train_by_source"] == {
        str(tmp_path / "web.jsonl"): 1,
        str(tmp_path / "book.txt"): 3,
    }
    text = load_tokenizer(data.tokenizer_spec).decode(tokens_of(data.train_shards))
    assert "ﬁ" not in text and text.count("The first chapter") == 3


def test_pystdlib_into_the_loader(tmp_path):
    data = prepare("pystdlib", tmp_path, tokenizer="char", max_docs=30)
    x, y = ShardedLoader(data.train_shards, batch_size=2, seq_len=64).next_batch()
    assert x.shape == (2, 64) and int(x.max()) < data.vocab_size and torch.equal(x[:, 1:], y[:, :-1])
    assert json.loads((tmp_path / "meta.json").read_text())["documents"]["train"] == 30


def test_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown source 'openwebtext'.*pystdlib.*tinyshakespeare"):
        prepare("openwebtext", tmp_path)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="no training text"):
        prepare(str(tmp_path / "empty.txt"), tmp_path / "out", tokenizer="char")
    (tmp_path / "blank.jsonl").write_text('{"text": ""}\n{"text": ""}\n')
    with pytest.raises(ValueError, match="no training text"):
        prepare(str(tmp_path / "blank.jsonl"), tmp_path / "out", tokenizer="char")
    with pytest.raises(TypeError, match="unknown limits \\['max_tokens'\\]"):
        prepare("pystdlib", tmp_path, max_tokens=10)
    with pytest.raises(ValueError, match="empty list"):
        prepare([], tmp_path)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_dedup_removes_val_copies_of_train_documents(tmp_path):
    docs = [f"document number {i} " + " ".join(f"w{i}x{j}" for j in range(30)) for i in range(40)]
    original = docs_file(tmp_path, docs)
    val = load_corpus(original, val_fraction=0.3).val  # the split prepare makes
    # a second source holding a copy of every val document; its own split sends some copies to train
    copies = docs_file(tmp_path, val, "copies.jsonl")
    copies_in_train = len(load_corpus(copies, val_fraction=0.3).train)
    assert len(val) > 0 and 0 < copies_in_train < len(val)
    prepare([original, copies], tmp_path / "out", tokenizer="char", val_fraction=0.3, dedup=True)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    # train (both sources) comes before val: a val original whose copy is in train is dropped; a copy
    # that landed in val is dropped as a later duplicate of its original
    assert meta["documents"]["val"] == len(val) - copies_in_train
    assert meta["documents"]["train"] == 40 - len(val) + copies_in_train
    # (40 + len(val)) documents in, every copy pair loses one: len(val) removed, 40 left
    assert meta["reports"][-1]["rows"][0] == ["exact duplicates", len(val), 40]


def test_local_file_change_is_noticed(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("first version\n" * 20)
    first = prepare(str(path), tmp_path / "out", tokenizer="char")
    path.write_text("second version!\n" * 20)
    second = prepare(str(path), tmp_path / "out", tokenizer="char")
    assert first.tokenizer_spec != second.tokenizer_spec and "!" in second.tokenizer_spec["chars"]


def test_command_line_prepares_local_files(tmp_path):
    import json
    import subprocess
    import sys

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"{i}.txt").write_text(f"document number {i}, with a little text in it.\n" * 5)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "gpt.data", str(docs), "--tokenizer", "char", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "RuntimeWarning" not in result.stderr
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert (out / "meta.json").exists()
    data = load_prepared(out)
    assert data.num_train_tokens + data.num_val_tokens == sum(len(p.read_text()) for p in docs.iterdir())
    assert int(printed["num_train_tokens"]) == data.num_train_tokens


def test_command_line_needs_out(capsys):
    from gpt.data.__main__ import cli

    with pytest.raises(SystemExit):
        cli(["pystdlib"])
    assert "--out is required" in capsys.readouterr().err


def fake_hub(monkeypatch, num_docs, on_doc=None):
    """A stand-in for ``datasets``: fineweb-edu as a generator of ``num_docs`` short web pages."""
    import sys
    import types

    def documents():
        for i in range(num_docs):
            if on_doc is not None:
                on_doc(i)
            yield {"text": f"page {i}: " + "the quick brown fox jumps over the lazy dog. " * (1 + i % 4)}

    def load_dataset(path, name, split, streaming):
        assert (path, name, split, streaming) == ("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", True)
        return documents()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))


def test_fineweb_edu_is_streamed_into_shards_with_the_in_memory_split(tmp_path, monkeypatch, data_file):
    data_file("tokenizers", "gpt2.tiktoken")
    out = tmp_path / "out"
    shards_seen_at = {}

    def on_doc(i):
        if i == 1500:  # by now earlier batches of 256 documents must already be tokens on disk
            shards_seen_at[i] = sorted(p.name for p in (out / ".incomplete").glob("train_*.bin"))

    fake_hub(monkeypatch, 2000, on_doc)
    data = prepare("fineweb-edu", out, val_fraction=0.1, max_docs=2000, shard_tokens=4096, num_workers=1)
    assert shards_seen_at[1500][:2] == ["train_000000.bin", "train_000001.bin"]
    assert not (out / ".incomplete").exists() and len(data.train_shards) > 5

    meta = json.loads((out / "meta.json").read_text())
    assert meta["source_description"] == "fineweb-edu: first 2000 docs, streamed"
    enc = gpt2_encoding()
    # documents as the shards hold them: EOT (50256) before each one
    train_docs = enc.decode(tokens_of(data.train_shards).tolist()).split("<|endoftext|>")[1:]
    val_docs = enc.decode(tokens_of(data.val_shards).tolist()).split("<|endoftext|>")[1:]
    corpus = load_corpus("fineweb-edu", val_fraction=0.1, max_docs=2000)  # the in-memory path's split
    assert train_docs == corpus.train and val_docs == corpus.val  # stream order = corpus order
    assert meta["documents"]["train"] == len(train_docs) and 150 < len(val_docs) < 250


def test_streamed_prepare_that_fails_leaves_no_partial_shards(tmp_path, monkeypatch, data_file):
    data_file("tokenizers", "gpt2.tiktoken")

    def drop(i):
        if i == 700:
            raise OSError("connection reset")

    fake_hub(monkeypatch, 2000, drop)
    with pytest.raises(ConnectionError, match="connection reset"):
        prepare("fineweb-edu", tmp_path / "out", max_docs=2000, num_workers=1)
    assert list((tmp_path / "out").iterdir()) == []
