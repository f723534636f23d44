"""gpt.bench runs end to end at a toy size and writes its table, JSON and plot (timings not asserted)."""

import json

import pytest

from gpt.bench import BenchConfig, main, parse_args

pytest.importorskip("transformers")


def test_bench_smoke(tmp_path, capsys):
    rows = main(BenchConfig(batch=1, seq=8, warmup=0, iters=1, out=str(tmp_path)))
    assert [r["family"] for r in rows] == ["gpt2", "llama"]
    assert all(r["ours_tok_s"] > 0 and r["hf_tok_s"] > 0 and r["ours_mfu"] > 0 for r in rows)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"][0]["params_M"] == rows[0]["params_M"]
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "ours/HF" in capsys.readouterr().out


def test_flags():
    cfg = parse_args(
        ["--device", "cuda", "--dtype", "bf16", "--size", "124m", "--compile", "--families", "gpt2"]
    )
    assert (cfg.device, cfg.dtype, cfg.size, cfg.compile, cfg.families) == (
        "cuda",
        "bf16",
        "124m",
        True,
        ("gpt2",),
    )
    assert parse_args(["--no-compile"]).compile is False
    with pytest.raises(ValueError, match="size='1b'"):
        BenchConfig(size="1b")
