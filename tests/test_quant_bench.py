"""quant.bench runs end to end on a one-layer slice of the real SmolLM2 file (timings not asserted)."""

import json
import math

import pytest

from gpt.flags import parse_dataclass
from quant.bench import BenchConfig, main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_smoke(smollm2_file, tmp_path, capsys):
    cfg = BenchConfig(
        threads=1, schemes=("int8", "int4-g64", "int4-g128"), ppl_tokens=256, window=64, batch=(1, 2),
        prompt_len=8, new_tokens=4, repeats=1, llama_cpp=False, gguf=str(smollm2_file), n_layer=1,
        out=str(tmp_path),
    )  # fmt: skip
    result = main(cfg)
    names = [r["name"] for r in result["quality"]]
    assert names[0].startswith("baseline") and {"int8", "int4-g64", "int4-g128"} <= set(names)
    assert [n.split(" ")[0] for n in names[-3:]] == ["Q8_0", "Q4_0", "Q4_1"]
    for row in result["quality"]:
        if row["name"] == "int4-g128":  # SmolLM2's width 576 is not a multiple of 128: named, not run
            assert row["ppl"] is None and "h.0.attn.c_attn: in_features 576" in row["note"]
        else:
            assert math.isfinite(row["ppl"]) and row["ppl"] > 1 and row["bytes_per_param"] > 0
    speeds = {r["name"]: r for r in result["speed"]}
    assert set(speeds) == {"ours fp32", "ours bf16", "ours int8", "ours int4-g64", "HF fp32 generate"}
    assert all(r["tok_s_b1"] > 0 and r["tok_s_b2"] > 0 for r in speeds.values())
    assert speeds["ours int4-g64"]["bytes_per_param"] < speeds["ours int8"]["bytes_per_param"] < 4
    assert json.loads((tmp_path / "bench.json").read_text())["n_params"] == result["n_params"]
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert "n/a: h.0.attn.c_attn" in capsys.readouterr().out


def test_flags_and_errors():
    cfg = parse_dataclass(BenchConfig, ["--batch", "1", "4", "--no-llama-cpp", "--n-layer", "2"])
    assert (cfg.batch, cfg.llama_cpp, cfg.n_layer) == ((1, 4), False, 2)
    with pytest.raises(ValueError, match="ppl_tokens >= window"):
        BenchConfig(ppl_tokens=100, window=1024)
