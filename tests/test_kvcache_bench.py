"""kvcache.bench end to end at a toy size: every system runs on the same requests, greedy tokens agree
across naive recompute, HF generate, our static batches and the paged engine (fp32), the JSON and PNG
are written, and the memory numbers are consistent with the formula."""

import json

import torch

from kvcache.bench import BenchConfig, main, parse_args


def test_bench_runs_and_systems_agree(tmp_path):
    cfg = BenchConfig(
        requests=4,
        batch=2,
        prompt_len=(4, 12),
        output_len=(2, 8),
        naive_requests=2,
        system_prompt=32,
        block_size=4,
        sweep=(2,),
        waste_block_sizes=(16,),
        threads=1,  # two spinning threads on a shared 2-core runner are many times slower
        out=str(tmp_path),
    )
    threads = torch.get_num_threads()
    try:
        res = main(cfg)
    finally:
        torch.set_num_threads(threads)
    assert [r["system"].split()[0] for r in res["rows"]] == ["naive", "HF", "ours", "ours"]
    assert all(v == 1.0 for v in res["agreement"].values()), res["agreement"]
    assert all(r["gen_tokens"] > 0 and r["tok_per_s"] > 0 for r in res["rows"])
    off, on = res["prefix"]
    assert on["prefill_tokens"] < off["prefill_tokens"]  # the shared system prompt was reused
    m = res["memory"]
    assert 0 <= m["paged_waste"] < m["static_contiguous_waste"] < 1  # blocks of 4 for 6..20-token sequences
    assert set(m["paged_waste_by_block_size"]) == {4, 16}
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["memory"]["max_seqs_contiguous"] == m["max_seqs_contiguous"] == 2
    assert (tmp_path / "bench.png").stat().st_size > 10_000


def test_cli_flags():
    cfg = parse_args(["--size", "small", "--dtype", "bf16", "--prompt-len", "8", "16", "--sweep", "1", "2"])
    assert (cfg.size, cfg.dtype, cfg.prompt_len, cfg.sweep) == ("small", "bf16", (8, 16), (1, 2))
