"""vision.bench runs end to end at a toy size: logits check, table, JSON and plot (timings not asserted)."""

import json

import pytest

from vision.bench import BenchConfig, main, parse_args

pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_smoke(tmp_path, capsys):
    cfg = BenchConfig(
        batch=1, prefix=3, suffix=2, image_size=16, patch=8, vision_width=16, vision_layers=1,
        text_width=16, text_layers=1, head_dim=4, vocab=32, warmup=0, iters=1, out=str(tmp_path),
        fusion_dir=str(tmp_path / "no-runs"),
    )  # fmt: skip
    result = main(cfg)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["logits_check"]["shape"] == [1, 4 + 5, 32]
    assert saved["logits_check"]["max_abs_diff"] < 1e-4 < saved["logits_check"]["max_abs_logit"]
    assert [r["mode"] for r in saved["rows"]] == ["forward", "forward+backward"]
    assert all(
        r["ours_tok_s"] > 0 and r["hf_tok_s"] > 0 and r["passed"] == (r["ratio"] >= 1.0)
        for r in saved["rows"]
    )
    assert saved["env"]["tokens_per_batch"] == 9 and saved["env"]["threads"] == 1
    assert saved["fusion"] is None and "missing" in saved["fusion_note"]
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    out = capsys.readouterr().out
    assert "ours/HF" in out and "max |ours - HF|" in out and "python -m vision.fusion" in out


def test_flags():
    cfg = parse_args(
        ["--device", "cuda", "--dtype", "bf16", "--batch", "8", "--threads", "2", "--patch", "4"]
    )
    assert (cfg.device, cfg.dtype, cfg.batch, cfg.threads, cfg.patch, cfg.image_tokens) == (
        "cuda", "bf16", 8, 2, 4, 64,
    )  # fmt: skip
    assert parse_args(["--threads", "none"]).threads is None
    with pytest.raises(SystemExit):
        parse_args(["--dtype", "fp8"])
    for kwargs, match in [
        (dict(image_size=30), "image_size=30 must be a multiple of patch=8"),
        (dict(text_width=130), "text_width=130 must be divisible by text_heads=4"),
        (dict(iters=0), "iters=0"),
        (dict(vocab=2), "vocab=2"),
        (dict(threads=0), "threads=0"),
        (dict(fusion_minutes=-1), "fusion_minutes=-1"),
    ]:
        with pytest.raises(ValueError, match=match):
            BenchConfig(**kwargs)


def test_help_lists_every_knob(capsys):
    from dataclasses import fields

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    assert all("--" + f.name.replace("_", "-") in text for f in fields(BenchConfig))


def test_bench_reads_the_fusion_results(tmp_path, capsys):
    """The fusion table is made of the numbers in each model's result.json, and fusion.png is drawn."""
    from vision.fusion import TrainConfig
    from vision.fusion import main as train_fusion

    runs = tmp_path / "runs"
    tiny = TrainConfig(minutes=1, max_steps=2, batch_size=4, n_eval=2, eval_every=1e9, threads=1)
    results = {name: train_fusion(name, tiny, budget=30_000, out_dir=runs) for name in ("late", "early")}
    cfg = BenchConfig(
        batch=1, prefix=3, suffix=2, image_size=16, patch=8, vision_width=16, vision_layers=1,
        text_width=16, text_layers=1, head_dim=4, vocab=32, warmup=0, iters=1, out=str(tmp_path / "b"),
        fusion_dir=str(runs), threads=1,
    )  # fmt: skip
    saved = main(cfg)["fusion"]
    assert (tmp_path / "b" / "fusion.png").read_bytes()[:4] == b"\x89PNG"
    for name, r in results.items():
        assert saved[name]["params"] == r["params"] and saved[name]["final"] == r["final"]
        assert saved[name]["steps"] == 2 and saved[name]["tokens_per_image"] == r["tokens_per_image"]
    out = capsys.readouterr().out
    assert "early vs late fusion" in out and f"{results['late']['params']:,}" in out
    assert json.loads((tmp_path / "b" / "bench.json").read_text())["fusion"] == json.loads(json.dumps(saved))
