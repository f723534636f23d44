"""The loader benchmark runs end to end at a tiny size and writes its table and JSON."""

import json

import pytest

from gpt.data.bench import DataBenchConfig, main


def test_bench_tiny(tmp_path, capsys):
    cfg = DataBenchConfig(
        batch=2, seq=8, steps=3, warmup=1, rounds=1, workers=(0,), tokens=1000, out=str(tmp_path)
    )
    rows = main(cfg)
    assert [r["method"] for r in rows] == ["ShardedLoader (memmap)", "DataLoader workers=0"]
    assert rows[0]["ratio"] == 1.0 and all(r["batches_per_s"] > 0 for r in rows)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"] == rows and saved["config"]["seq"] == 8
    assert "vs memmap" in capsys.readouterr().out
    shuffled = main(DataBenchConfig(**{**saved["config"], "workers": (0,), "shuffle": True}))
    assert len(shuffled) == 2 and all(r["batches_per_s"] > 0 for r in shuffled)


def test_bench_config_errors():
    with pytest.raises(ValueError, match="raise --tokens"):
        DataBenchConfig(batch=2, seq=8, steps=10, tokens=50)
    with pytest.raises(ValueError, match="workers"):
        DataBenchConfig(workers=(-1,))
