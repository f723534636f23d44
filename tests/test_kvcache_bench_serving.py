"""kvcache.bench.serving end to end at a toy size (SmolLM2's first 2 layers, a handful of chat requests):
every system and section runs on the same prompts, the engine's greedy tokens equal HF ``generate``'s
(and prompt lookup's equal plain decoding's), the server generates what the offline engine does, and
bench.json / bench.png are written. Plus the load metrics worked by hand and the flags' checks."""

import importlib.util
import inspect
import json

import numpy as np
import pytest
import torch

from kvcache import LLMEngine
from kvcache.bench import run
from kvcache.bench.load import Trace, arrival_times, summarize
from kvcache.bench.sections import dtype_batch, table
from kvcache.bench.serving import main, parse_args
from kvcache.bench.serving_config import SYSTEMS, ServingConfig
from kvcache.bench.systems import engine_options, load_model
from kvcache.workloads import chat_workload

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def datasets(smollm2_file, data_file):
    for name in ("alpaca_libre", "code_alpaca_2k", "gsm8k", "wikitext2"):
        data_file(name)


def smoke_config(tmp_path, **kw) -> ServingConfig:
    return ServingConfig(
        n_layer=2,
        threads=1,
        requests=3,
        rates=(16.0,),
        rate_requests=2,
        prompt_tokens=(20, 160),
        max_tokens=(2, 6),
        copy_requests=2,
        copy_prompt_tokens=(60, 240),
        copy_max_tokens=(4, 8),
        sweep_requests=2,
        batch_sweep=(1, 2),
        block_sweep=(8,),
        budget_sweep=(1.0, 0.25),
        out=str(tmp_path),
        **kw,
    )


def test_bench_serving_runs_every_section(tmp_path, datasets):
    res = main(smoke_config(tmp_path))
    has_llama = importlib.util.find_spec("llama_cpp") is not None
    expected = {s for s in SYSTEMS if has_llama or s != "llama_cpp"}
    rows = res["rows"]
    assert {r["key"] for r in rows} == expected
    assert {r["load"] for r in rows} == {"offline", "16 req/s"}
    assert len(rows) == 2 * len(expected)
    for r in rows:
        assert r["gen_tokens"] > 0 and r["tok_per_s"] > 0, r
        assert 0 <= r["ttft_p50_s"] <= r["lat_p99_s"], r
    off = {r["key"]: r for r in rows if r["load"] == "offline"}
    assert all(r["requests"] == 3 for r in off.values())
    assert off["hf"]["vs_hf"] == 1.0 and off["engine"]["vs_hf"] > 0
    if has_llama:
        assert off["llama_cpp"]["vs_llama_cpp"] == 1.0 and [w["load"] for w in res["winners"]] == [
            "offline",
            "16 req/s",
        ]
    # the reference: fp32 greedy tokens of the engine equal HF generate's on the bench's own prompts,
    # and prompt lookup changes no token
    assert res["agreement"]["hf"] == 1.0 and res["agreement"]["lookup"] == 1.0, res["agreement"]
    assert 0 <= off["engine"]["kv_waste"] < 1 and off["engine"]["preemptions"] == 0

    lk = res["lookup"]
    for name in ("copy_heavy", "copy_heavy_single", "chat_single"):  # own runs: plain and lookup tokens equal
        assert lk[name]["identical"] == 1.0 and lk[name]["speedup"] > 0, (name, lk[name])
    assert lk["copy_heavy_single"]["batch"] == 1 and lk["chat"]["speedup"] > 0
    sw = res["sweeps"]
    assert [s["batch"] for s in sw["batch"]] == [1, 2] and [s["block"] for s in sw["block"]] == [8]
    small, large = sorted(sw["budget"], key=lambda s: s["budget_mib"])
    assert small["budget_mib"] < large["budget_mib"] <= sw["peak_mib"] + 1e-9
    assert small["max_running"] <= large["max_running"]

    sv = res["server"]
    assert sv["tok_per_s"] > 0 and sv["gen_tokens"] == sv["offline_gen_tokens"], sv
    assert res["dtype_batch"] is None  # CPU: nothing CUDA runs
    names = [t["name"] for t in res["targets"]]
    assert len(names) == (5 if has_llama else 4) and all(
        isinstance(t["passed"], bool) for t in res["targets"]
    )

    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["meta"]["device"] == "cpu" and saved["meta"]["threads"] == 1
    assert saved["meta"]["versions"]["torch"] == torch.__version__
    assert saved["workload"]["chat"]["requests"] == 3 and saved["rows"] == json.loads(json.dumps(rows))
    assert set(saved["sections_s"]) == {"table", "prompt lookup", "sweeps", "server"}
    assert (tmp_path / "bench.png").stat().st_size > 10_000


def test_metrics_by_hand():
    a = Trace(arrival=1.0)
    a.extend([7], 1.5)  # first token 0.5 s after arrival
    a.extend([7, 8], 1.7)
    a.extend([7, 8, 9, 10], 2.1)  # two tokens at once (accepted drafts): 0.2 s each
    assert a.times == pytest.approx([1.5, 1.7, 1.9, 2.1])
    b = Trace(arrival=0.0, tokens=[1, 2], times=[1.0, 3.0])
    row = summarize([a, b])
    assert row["gen_tokens"] == 6 and row["wall_s"] == 3.0 and row["tok_per_s"] == 2.0
    assert row["ttft_p50_s"] == pytest.approx(np.percentile([0.5, 1.0], 50)) == pytest.approx(0.75)
    assert row["itl_p50_s"] == pytest.approx(0.2) and row["itl_p99_s"] == pytest.approx(
        np.percentile([0.2] * 3 + [2], 99)
    )
    assert row["lat_p50_s"] == pytest.approx(np.percentile([1.1, 3.0], 50))

    assert arrival_times(3, None, 0) == [0.0, 0.0, 0.0]
    t = arrival_times(4000, 8.0, 0)
    assert t[0] == 0.0 and t == arrival_times(4000, 8.0, 0) and t != arrival_times(4000, 8.0, 1)
    gaps = np.diff(t)
    assert (gaps > 0).all() and abs(gaps.mean() - 1 / 8) < 0.01  # exponential gaps of mean 1/rate


def test_flags_and_dispatch():
    cfg = parse_args(["--rates", "2", "8", "--systems", "engine", "hf", "--no-server", "--n-layer", "2"])
    assert (cfg.rates, cfg.systems, cfg.server, cfg.n_layer) == ((2.0, 8.0), ("engine", "hf"), False, 2)
    with pytest.raises(SystemExit):  # kvcache.bench hands --model to the serving bench, whose --help exits
        run(["--model", "smollm2", "--help"])
    for bad in (
        dict(systems=("engine", "vllm")),
        dict(rates=(0.0,)),
        dict(model="gpt-124m", n_layer=2),
        dict(prompt_tokens=(400, 20)),
        dict(prompt_tokens=(20, 8000), max_tokens=(16, 300)),  # past SmolLM2's 8192 context
        dict(cuda_graphs=True),  # CUDA options on a CPU run
        dict(attention="triton"),
        dict(budget_sweep=(0.0,)),
    ):
        with pytest.raises(ValueError):
            ServingConfig(**bad)
    cfg = ServingConfig(device="cuda", cuda_graphs=True)
    if "cuda_graphs" in inspect.signature(LLMEngine).parameters:
        assert engine_options(cfg) == {"cuda_graphs": True}
    else:
        with pytest.raises(ValueError, match="cuda_graphs"):
            engine_options(cfg)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            main(ServingConfig(device="cuda", systems=("engine",)))


def test_gpt124m_table_and_dtype_batch_paths(tmp_path, datasets):
    """The code paths a CUDA run takes, on the CPU: the random GPT-2 small's table (llama.cpp left out, HF's
    GPT-2 agreeing with the engine) and the dtype x batch loop."""
    cfg = smoke_config(tmp_path, systems=("engine", "hf", "llama_cpp"), dtype_sweep=("fp32", "bf16"))
    model, tok = load_model("gpt-124m", cfg)
    work = chat_workload(tok, n=2, prompt_tokens=cfg.prompt_tokens, max_tokens=cfg.max_tokens, seed=0)
    rows, offline, notes = table(cfg, "gpt-124m", model, tok, work, [("offline", None, 2)], tmp_path)
    assert [r["key"] for r in rows] == ["engine", "hf"] and "llama_cpp" not in notes
    assert offline["engine"] == offline["hf"]  # GPT-2 flavour: engine greedy == HF generate greedy
    assert all(len(t) == r.max_tokens for t, r in zip(offline["engine"], work, strict=True))  # no EOS early
    grid = dtype_batch(cfg, model, tok, work)
    assert [(r["dtype"], r["batch"]) for r in grid] == [("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)]
    assert all(r["tok_per_s"] > 0 for r in grid)
