"""Fertility statistics (hand-counted, tiktoken == ours), the training CLI, and a benchmark smoke run."""

import json
import os
import subprocess
import sys

import pytest

import bpe
from bpe.fertility import Fertility, fertility, load_udhr, premium, udhr_text


def test_fertility_hand_counted():
    # An untrained byte-level tokenizer has one token per byte: "héllo wörld" is 11 chars, 13 bytes, 2 words.
    stats = fertility(bpe.BasicTokenizer(), {"eng": "héllo wörld", "tha": "สวัสดี"})
    assert stats["eng"] == Fertility("eng", chars=11, bytes=13, words=2, tokens=13, spaced=True)
    assert stats["eng"].bytes_per_token == 1.0
    assert stats["eng"].tokens_per_word == 6.5
    assert stats["tha"].chars == 6 and stats["tha"].tokens == 18  # 3 bytes per Thai character
    assert stats["tha"].tokens_per_word is None  # no spaces between Thai words: not defined
    assert premium(stats) == {"eng": 1.0, "tha": 18 / 13}


def test_fertility_same_for_ours_and_tiktoken(data_file):
    path = data_file("tokenizers", "gpt2.tiktoken")
    texts = load_udhr(data_file("udhr_sea", "udhr_eng.txt").parent)
    assert len(texts) == 16 and not texts["eng"].startswith("Universal Declaration of Human Rights - English")
    ours, ref = fertility(bpe.from_tiktoken(path), texts), fertility(bpe.load_tiktoken(path), texts)
    assert ours == ref
    assert premium(ref)["mya"] > 5 * premium(ref)["ind"]  # GPT-2 spends far more on Burmese than Indonesian


def test_fertility_errors(tmp_path):
    with pytest.raises(TypeError, match="encode_ordinary"):
        fertility(object(), {"eng": "x"})
    with pytest.raises(ValueError, match="non-empty str"):
        fertility(bpe.BasicTokenizer(), {"eng": ""})
    with pytest.raises(ValueError, match="reference language 'fra'"):
        premium(fertility(bpe.BasicTokenizer(), {"eng": "x"}), reference="fra")
    bad = tmp_path / "udhr_xx.txt"
    bad.write_text("no header here")
    with pytest.raises(ValueError, match="no '---' line"):
        udhr_text(bad)
    with pytest.raises(FileNotFoundError, match="no udhr_"):
        load_udhr(tmp_path / "empty")


def test_train_cli(tmp_path, data_file):
    src = data_file("tinyshakespeare", "input.txt")
    small = tmp_path / "small.txt"
    small.write_text(src.read_text(encoding="utf-8")[:100_000], encoding="utf-8")
    out = tmp_path / "tok"
    cmd = [
        sys.executable,
        "-m",
        "bpe.train",
        "--input",
        str(small),
        "--vocab-size",
        "300",
        "--pattern",
        "gpt4",
    ]
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}  # the bar is what is checked
    run = subprocess.run(
        [*cmd, "--special-tokens", "<|endoftext|>", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert "merging" in run.stderr  # the tqdm progress bar
    tok = bpe.RegexTokenizer().load(tmp_path / "tok.model")
    assert tok.vocab_size == 301 and tok.special_tokens == {"<|endoftext|>": 300}
    assert tok.pattern == bpe.GPT4_SPLIT_PATTERN
    bad = subprocess.run([*cmd[:-1], "gpt3", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown pattern name 'gpt3'" in bad.stderr


def test_bench_quick(tmp_path, data_dir, data_file):
    data_file("tokenizers", "gpt2.tiktoken")
    run = subprocess.run(
        [sys.executable, "-m", "bpe.bench", "--quick", "--out", str(tmp_path), "--data", str(data_dir)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "bench.json").read_text())
    assert {r["text"] for r in result["encode"]} == {"tinyshakespeare", "wikitext2", "udhr_sea", "all"}
    assert all(r["tiktoken_mbs"] > 0 and r["warm_ratio"] > 0 for r in result["encode"])
    assert result["train"][-1]["reference_s"] > 0
    assert (tmp_path / "bench.png").stat().st_size > 10_000
