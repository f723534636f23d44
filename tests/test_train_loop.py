"""The training loop end to end on a tiny char-level model: DDP == one process (training losses, weights
and the val loss), resume == no stop, accumulation == one big batch, fp16/bf16 paths learn, --init-from
loads HF folders and our own checkpoints, and user errors are one clear message.

Each run is a 2-layer, 32-wide GPT on a small synthetic text, a few seconds on CPU. The DDP run goes
through the real entry point (``torchrun --standalone --nproc_per_node=2 gpt/train.py``, gloo).
"""

import json
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gpt.train import main
from gpt.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 60k-character text (random words, fixed seed) and the folder its char shards go to."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven"]
    words += ["wizards", "quietly", "hex", "jovial", "kings"]
    lines = (" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(1500))
    text = root / "words.txt"
    text.write_text("\n".join(lines) + "\n")
    return text, root / "shards"


def tiny(corpus, out_dir, **overrides) -> TrainConfig:
    text, shards = corpus
    cfg = TrainConfig(
        out_dir=str(out_dir),
        dataset=str(text),
        tokenizer="char",
        data_dir=str(shards),
        device="cpu",
        n_layer=2,
        n_head=2,
        n_embd=32,
        block_size=32,
        micro_batch=4,
        global_batch_tokens=4 * 32 * 4,  # 4 micro-steps in one process, 2 per process with two
        max_steps=6,
        learning_rate=3e-3,
        warmup_steps=2,
        eval_interval=3,
        eval_steps=2,
        num_samples=1,
        sample_tokens=8,
        progress=False,
    )
    return replace(cfg, **overrides)


def metrics(out_dir, kind="train", key="loss"):
    lines = (json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines())
    return [(r["step"], r[key]) for r in lines if r["kind"] == kind]


def weights(out_dir):
    return torch.load(Path(out_dir) / "ckpt.pt", weights_only=True)["model"]


def assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def test_run_writes_checkpoint_log_plot_and_samples(corpus, tmp_path):
    out = main(tiny(corpus, tmp_path))
    assert out["step"] == 6 and len(out["losses"]) == 6
    assert [s for s, _ in metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in metrics(tmp_path, "eval", "val_loss")] == [3, 6]
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "samples.txt").read_text().count("--- step") == 2
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 6 and len(ckpt["ranks"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt.pt",
        "loss.png",
        "metrics.jsonl",
        "samples.txt",
    ]


def test_ddp_two_processes_equal_one_process(corpus, tmp_path):
    """2 gloo processes x 2 micro-steps == 1 process x 4 micro-steps: same global batch, same numbers."""
    single = tmp_path / "single"
    main(tiny(corpus, single))  # prepares the shards first, so the torchrun ranks only read them
    text, shards = corpus
    ddp = tmp_path / "ddp"
    flags = [
        f"--out-dir={ddp}", f"--dataset={text}", "--tokenizer=char", f"--data-dir={shards}", "--device=cpu",
        "--n-layer=2", "--n-head=2", "--n-embd=32", "--block-size=32", "--micro-batch=4",
        f"--global-batch-tokens={4 * 32 * 4}", "--max-steps=6", "--learning-rate=3e-3", "--warmup-steps=2",
        "--eval-interval=3", "--eval-steps=2", "--num-samples=1", "--sample-tokens=8", "--no-progress",
    ]  # fmt: skip
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run = subprocess.run(
        [*launch, "gpt/train.py", *flags], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 process(es)" in run.stdout + run.stderr
    a, b = metrics(single), metrics(ddp)
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4, 5, 6]
    for (step, la), (_, lb) in zip(a, b, strict=True):
        assert abs(la - lb) <= 1e-5, (step, la, lb)
    assert_same_weights(weights(single), weights(ddp), atol=1e-5)
    assert len(torch.load(ddp / "ckpt.pt", weights_only=True)["ranks"]) == 2
    # the val loss is over the same fixed windows whatever the world size (each rank takes a share)
    va, vb = metrics(single, "eval", "val_loss"), metrics(ddp, "eval", "val_loss")
    assert [s for s, _ in va] == [s for s, _ in vb] == [3, 6]
    for (step, la), (_, lb) in zip(va, vb, strict=True):
        assert abs(la - lb) <= 1e-5, (step, la, lb)


def test_accumulation_equals_one_big_batch(corpus, tmp_path):
    """4 micro-batches of 4 sequences == 1 micro-batch of 16 (loss divided by the micro-step count)."""
    main(tiny(corpus, tmp_path / "accum"))
    main(tiny(corpus, tmp_path / "big", micro_batch=16))
    for (_, la), (_, lb) in zip(metrics(tmp_path / "accum"), metrics(tmp_path / "big"), strict=True):
        assert abs(la - lb) <= 1e-5
    assert_same_weights(weights(tmp_path / "accum"), weights(tmp_path / "big"), atol=1e-5)


def test_resume_is_exact(corpus, tmp_path):
    """20 steps straight == 10 steps, stop, resume, 10 more: identical losses and weights (dropout on, so
    the RNG states must be restored too)."""
    kw = dict(max_steps=20, eval_interval=5, dropout=0.1, global_batch_tokens=4 * 32 * 2)
    main(tiny(corpus, tmp_path / "straight", **kw))
    first = main(tiny(corpus, tmp_path / "stopped", stop_step=10, **kw))
    assert first["step"] == 10
    second = main(tiny(corpus, tmp_path / "stopped", resume=True, **kw))
    assert second["step"] == 20 and len(second["losses"]) == 10
    assert metrics(tmp_path / "straight") == metrics(tmp_path / "stopped")
    straight = metrics(tmp_path / "straight", "eval", "val_loss")
    assert straight == metrics(tmp_path / "stopped", "eval", "val_loss")
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "stopped"), atol=0)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_learns(corpus, tmp_path, dtype):
    """bf16 autocast and fp16 autocast + GradScaler both run on CPU and bring the loss down."""
    out = main(
        tiny(corpus, tmp_path, dtype=dtype, max_steps=30, eval_interval=30, global_batch_tokens=4 * 32)
    )
    first, last = out["losses"][:3], out["losses"][-3:]
    assert sum(last) / 3 < sum(first) / 3 - 0.5, (first, last)
    scaler = torch.load(tmp_path / "ckpt.pt", weights_only=True)["scaler"]
    assert bool(scaler) == (dtype == "fp16")  # the scaler's state is saved only when it is in use
    if dtype == "fp16":
        assert scaler["scale"] > 0


def test_truncated_checkpoint_resume_is_one_clear_error(corpus, tmp_path):
    main(tiny(corpus, tmp_path, max_steps=3, eval_interval=3))
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        main(tiny(corpus, tmp_path, max_steps=6, resume=True))


def test_init_from_a_corrupt_file_is_one_clear_error(corpus, tmp_path):
    """--init-from=<damaged ckpt.pt> or <folder with a broken config.json>: a ValueError naming the path
    (the script prints it as one line), not a transformers traceback."""
    main(tiny(corpus, tmp_path / "run", max_steps=3, eval_interval=3))
    ckpt = tmp_path / "run" / "ckpt.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"--init-from: checkpoint {ckpt} is corrupt or truncated"):
        main(tiny(corpus, tmp_path / "b", init_from=str(ckpt)))
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2", ')
    with pytest.raises(ValueError, match=rf"--init-from={folder} could not be loaded .* not a valid JSON"):
        main(tiny(corpus, tmp_path / "c", init_from=str(folder)))
    text, shards = corpus
    flags = [f"--out-dir={tmp_path / 'd'}", f"--dataset={text}", "--tokenizer=char", f"--data-dir={shards}"]
    run = subprocess.run(
        [sys.executable, "gpt/train.py", *flags, f"--init-from={ckpt}", "--device=cpu", "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"error: --init-from: checkpoint {ckpt} is corrupt or truncated" in run.stderr


def test_init_from_our_own_checkpoint(corpus, tmp_path):
    """--init-from=<ckpt.pt of this script>: its weights, a fresh optimizer and step count; the first
    logged loss is the checkpointed model's loss on the first batch."""
    from gpt.data.loader import ShardedLoader
    from gpt.data.prepare import load_prepared
    from gpt.model import GPT, GPTConfig

    main(tiny(corpus, tmp_path / "first", max_steps=6))
    state = torch.load(tmp_path / "first" / "ckpt.pt", weights_only=True)
    cfg = tiny(corpus, tmp_path / "second", init_from=str(tmp_path / "first" / "ckpt.pt"), max_steps=3)
    out = main(replace(cfg, global_batch_tokens=4 * 32, eval_interval=3))
    assert out["step"] == 3
    ref_model = GPT(GPTConfig(**state["model_config"])).eval()
    ref_model.load_state_dict(state["model"])
    x, y = ShardedLoader(
        load_prepared(corpus[1]).train_shards, 4, 32, order=cfg.data_order, seed=cfg.seed
    ).next_batch()
    with torch.no_grad():
        ref = ref_model(x, y)[1].item()
    assert abs(out["losses"][0] - ref) < 1e-5, (out["losses"][0], ref)


def test_first_batch_is_checked_against_the_model():
    """The forward checks shapes only (no GPU->CPU sync per step); the loop checks ids once."""
    from gpt.model import GPTConfig
    from gpt.train import check_first_batch

    config = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=4)
    check_first_batch(torch.zeros(2, 8, dtype=torch.long), torch.full((2, 8), 9), config)
    with pytest.raises(ValueError, match=r"token ids in \[0, 10\] but the model has vocab_size=10"):
        check_first_batch(torch.zeros(2, 8, dtype=torch.long), torch.full((2, 8), 10), config)
    with pytest.raises(ValueError, match="batches of 9 tokens are longer than the model's block_size=8"):
        check_first_batch(torch.zeros(2, 9, dtype=torch.long), torch.zeros(2, 9, dtype=torch.long), config)


def test_user_errors(corpus, tmp_path):
    with pytest.raises(ValueError, match="unknown source 'no-such-corpus'"):
        main(tiny(corpus, tmp_path, dataset="no-such-corpus", data_dir=str(tmp_path / "d")))
    with pytest.raises(ValueError, match=r"global_batch_tokens=1000 is not divisible by .* = 128"):
        main(tiny(corpus, tmp_path, global_batch_tokens=1000))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--preset=gpt5"], "invalid choice: 'gpt5' (choose from 'cpu-demo', 'shakespeare-char'"),
        (
            ["--preset=cpu-demo", "--global-batch-tokens=1000"],
            "error: global_batch_tokens=1000 is not divisible",
        ),
        (["--preset=cpu-demo", "--dtype=fp8"], "error: dtype='fp8'; choose one of"),
    ],
)
def test_command_line_errors_are_one_line(flags, message):
    run = subprocess.run(
        [sys.executable, "gpt/train.py", *flags], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "compile_model"), [("bf16", True), ("fp16", False), ("auto", False)])
def test_cuda_paths_learn(corpus, tmp_path, dtype, compile_model):
    """On a GPU: bf16 autocast with torch.compile, fp16 with the GradScaler, and the auto choice."""
    cfg = tiny(
        corpus, tmp_path, device="cuda", dtype=dtype, compile=compile_model, max_steps=40, eval_interval=40
    )
    out = main(replace(cfg, global_batch_tokens=4 * 32))
    first, last = out["losses"][:3], out["losses"][-3:]
    assert sum(last) / 3 < sum(first) / 3 - 0.5, (first, last)
    scaler = torch.load(tmp_path / "ckpt.pt", weights_only=True)["scaler"]
    expect_fp16 = dtype == "fp16" or (dtype == "auto" and torch.cuda.get_device_capability()[0] < 8)
    assert bool(scaler) == expect_fp16


@pytest.mark.gpu
def test_cuda_resume_is_exact(corpus, tmp_path):
    """The CUDA RNG state travels in the checkpoint too (dropout on the GPU)."""
    kw = dict(device="cuda", dtype="fp32", max_steps=12, eval_interval=6, dropout=0.1)
    main(tiny(corpus, tmp_path / "straight", **kw))
    main(tiny(corpus, tmp_path / "stopped", stop_step=6, **kw))
    main(tiny(corpus, tmp_path / "stopped", resume=True, **kw))
    a, b = metrics(tmp_path / "straight"), metrics(tmp_path / "stopped")
    for (sa, la), (sb, lb) in zip(a, b, strict=True):
        assert sa == sb and abs(la - lb) <= 1e-6, (sa, la, lb)
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "stopped"), atol=1e-6)


def test_init_from_a_local_hf_directory(corpus, tmp_path):
    """--init-from=<HF folder>: the first logged loss is the HF model's own loss on the first batch."""
    transformers = pytest.importorskip("transformers")
    from gpt.data.loader import ShardedLoader
    from gpt.data.prepare import load_prepared

    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    hf.save_pretrained(tmp_path / "hf")
    cfg = tiny(corpus, tmp_path / "run", init_from=str(tmp_path / "hf"), max_steps=3, eval_interval=3)
    out = main(replace(cfg, global_batch_tokens=4 * 32))  # one micro-step: step 1's loss is batch 1's
    train_shards = load_prepared(corpus[1]).train_shards
    x, y = ShardedLoader(train_shards, 4, 32, order=cfg.data_order, seed=cfg.seed).next_batch()
    with torch.no_grad():
        logits = hf(x).logits
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item()
    assert abs(out["losses"][0] - ref) < 1e-5, (out["losses"][0], ref)
    assert torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)["model_config"]["vocab_size"] == 64
