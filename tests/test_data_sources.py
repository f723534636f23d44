"""Sources: pystdlib is deterministic and skips tests, splits are fixed by hash, local files of every
kind, downloads (through file:// URLs, offline), the optional fineweb-edu path, and the errors."""

import json
import sys
import types

import pytest

from gpt.data import sources
from gpt.data.sources import (
    KNOWN_DATASETS,
    download,
    fetch,
    load_corpus,
    split_by_hash,
    split_text,
    stdlib_files,
    wikitext_articles,
)


def test_stdlib_files_skip_tests_and_site_packages(tmp_path):
    for rel in [
        "b.py",
        "a.py",
        "pkg/c.py",
        "test/test_a.py",
        "pkg/tests/t.py",
        "site-packages/x.py",
        "d.txt",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    assert [rel for rel, _ in stdlib_files(tmp_path)] == ["a.py", "b.py", "pkg/c.py"]
    corpus = sources.load_pystdlib(0.0, stdlib_dir=tmp_path)
    assert corpus.train == ["# a.py\n", "# b.py\n", "# pkg/c.py\n"] and corpus.val == []


def test_pystdlib_is_deterministic_and_non_empty():
    one = load_corpus("pystdlib", val_fraction=0.05)
    two = load_corpus("pystdlib", val_fraction=0.05)
    assert one.train == two.train and one.val == two.val
    assert len(one.train) > 100 and len(one.val) > 5
    assert sum(map(len, one.train)) > 1_000_000
    assert "import" in one.train[0]


def test_split_by_hash_is_fixed_and_never_leaves_val_empty():
    docs = [f"doc{i}" for i in range(200)]
    train, val = split_by_hash(docs, docs, 0.1)
    assert (train, val) == split_by_hash(docs, docs, 0.1)
    assert 8 <= len(val) <= 35 and len(train) + len(val) == 200 and not set(train) & set(val)
    train, val = split_by_hash(["a", "b"], ["a", "b"], 0.001)
    assert len(val) == 1 and len(train) == 1


def test_split_text_at_a_line_break():
    assert split_text("a\nb\nc\nd\n", 0.5) == ("a\nb\n", "c\nd\n")
    assert split_text("abcdef", 0.0) == ("abcdef", "")


def test_wikitext_articles_split_on_top_headings_only():
    text = " \n = A = \n x \n = = S = = \n y \n = B = \n z \n"
    assert wikitext_articles(text) == [" = A = \n x \n = = S = = \n y \n", " = B = \n z \n"]


def test_local_txt_jsonl_folder(tmp_path):
    (tmp_path / "one.txt").write_text("line one\nline two\nline three\n")
    corpus = load_corpus(str(tmp_path / "one.txt"), val_fraction=0.3)
    assert corpus.train == ["line one\nline two\n"] and corpus.val == ["line three\n"]
    rows = [{"text": f"document {i}", "id": i} for i in range(20)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    corpus = load_corpus(str(tmp_path / "d.jsonl"), val_fraction=0.2)
    assert sorted(corpus.train + corpus.val) == sorted(r["text"] for r in rows) and corpus.val
    folder = load_corpus(str(tmp_path), val_fraction=0.2)
    assert len(folder.train) + len(folder.val) == 21


def test_local_parquet(tmp_path):
    import pyarrow as pa  # a dev extra: this check runs in CI
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["alpha", "beta", None, "gamma"]}), tmp_path / "d.parquet")
    corpus = load_corpus(str(tmp_path / "d.parquet"), val_fraction=0.3)
    assert sorted(corpus.train + corpus.val) == ["alpha", "beta", "gamma"]
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no 'text' column"):
        load_corpus(str(tmp_path / "bad.parquet"))


def test_bad_sources(tmp_path):
    with pytest.raises(ValueError, match="unknown source 'shakespeare'") as err:
        load_corpus("shakespeare")
    assert all(name in str(err.value) for name in KNOWN_DATASETS)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not a JSON object with a 'text' field"):
        load_corpus(str(tmp_path / "bad.jsonl"))
    with pytest.raises(FileNotFoundError):
        load_corpus(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="val_fraction=1"):
        load_corpus("pystdlib", val_fraction=1)


def test_download_and_fetch_offline_via_file_urls(tmp_path, monkeypatch):
    src = tmp_path / "remote.txt"
    src.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    monkeypatch.setenv("LLM_COURSE_DATA", str(tmp_path / "root"))
    path = fetch("tinyshakespeare", "input.txt", src.as_uri())
    assert path == tmp_path / "root" / "tinyshakespeare" / "input.txt"
    assert path.read_text() == src.read_text()
    src.unlink()  # present now: fetch must not download again
    assert fetch("tinyshakespeare", "input.txt", src.as_uri()).read_text().startswith("First Citizen")
    with pytest.raises(FileNotFoundError, match="downloading it from") as err:
        download(src.as_uri(), tmp_path / "root" / "x" / "gone.txt")
    assert "LLM_COURSE_DATA" in str(err.value)
    assert not list((tmp_path / "root" / "x").glob("*.part"))


def test_fineweb_edu_needs_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ImportError, match="pip install datasets"):
        load_corpus("fineweb-edu", max_docs=3)


def test_fineweb_edu_streams_with_a_fake_hub(monkeypatch):
    calls = {}

    def load_dataset(path, name, split, streaming):
        calls.update(path=path, name=name, split=split, streaming=streaming)
        return iter({"text": f"web page {i}"} for i in range(10**6))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    corpus = load_corpus("fineweb-edu", val_fraction=0.25, max_docs=40)
    assert calls == {
        "path": "HuggingFaceFW/fineweb-edu",
        "name": "sample-10BT",
        "split": "train",
        "streaming": True,
    }
    assert sorted(corpus.train + corpus.val) == sorted(f"web page {i}" for i in range(40))
    assert corpus.val

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(ConnectionError, match="network"):
        load_corpus("fineweb-edu", max_docs=3)


def test_wikitext2_articles(data_file):
    data_file("wikitext2", "valid.txt")
    data_file("wikitext2", "test.txt")
    corpus = load_corpus("wikitext2")
    # SOURCE.md: 60 articles in valid.txt, 62 in test.txt
    assert len(corpus.train) == 60 and len(corpus.val) == 62
    assert corpus.train[0].startswith(" = Homarus gammarus = ")
