"""The pieces of gpt/train.py on their own: schedule, config and flags, precision, checkpoints, run log.

The schedule is checked against hand-worked values and against torch's CosineAnnealingLR (an
independent implementation of the same closed form); checkpoints against truncation, garbage and
pickled objects that ``weights_only=True`` must refuse.
"""

import json
import math
import random
from dataclasses import fields

import numpy as np
import pytest
import torch

from gpt.model import GPT, GPTConfig
from gpt.training.checkpoint import (
    copy_checked,
    export_safetensors,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from gpt.training.config import PRESETS, TrainConfig, get_preset, grad_accum_steps, parse_args
from gpt.training.precision import Precision, resolve_dtype
from gpt.training.runlog import RunLog, ema, read_metrics
from gpt.training.schedule import lr_at

# -- schedule -------------------------------------------------------------------------------------------


def test_schedule_hand_worked():
    kw = dict(max_lr=1.0, min_lr=0.1, warmup_steps=10, decay_steps=110)
    assert lr_at(0, **kw) == pytest.approx(0.1)  # (0 + 1) / 10 of the peak: step 0 is not lr 0
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_at(60, **kw) == pytest.approx(0.55)  # halfway down: min + (max - min) / 2
    assert lr_at(110, **kw) == pytest.approx(0.1)
    assert lr_at(10_000, **kw) == pytest.approx(0.1)


def test_schedule_matches_torch_cosine_annealing():
    warmup, decay, max_lr, min_lr = 5, 45, 3e-3, 3e-4
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=max_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=decay - warmup, eta_min=min_lr)
    for t in range(decay - warmup + 1):
        ours = lr_at(warmup + t, max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup, decay_steps=decay)
        assert ours == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6), t
        opt.step()
        sched.step()


def test_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_at(0, max_lr=1.0, min_lr=0.1, warmup_steps=20, decay_steps=10)
    with pytest.raises(ValueError, match="step"):
        lr_at(-1, max_lr=1.0, min_lr=0.1, warmup_steps=0, decay_steps=10)


# -- config and flags -----------------------------------------------------------------------------------


def test_every_field_is_a_flag_and_presets_are_defaults():
    cfg = parse_args(["--preset", "shakespeare-char"])
    assert cfg == PRESETS["shakespeare-char"]
    assert cfg is not PRESETS["shakespeare-char"]
    for f in fields(TrainConfig):  # each field can be set from the command line
        value = getattr(TrainConfig(), f.name)
        if isinstance(value, bool):
            flag = ["--no-" + f.name.replace("_", "-")] if value else ["--" + f.name.replace("_", "-")]
            assert getattr(parse_args(flag), f.name) is (not value), f.name
        elif f.name == "stop_step":
            assert parse_args(["--stop-step=7"]).stop_step == 7
            assert parse_args(["--stop-step=none"]).stop_step is None
        else:
            new = {int: 3, float: 0.25, str: "x"}[type(value)]
            argv = [f"--{f.name.replace('_', '-')}={new}"]
            choice = {"dtype": "fp16", "flavour": "llama", "data_order": "sequential"}
            if f.name in choice:  # a field with a fixed set of values
                new, argv = choice[f.name], [f"--{f.name.replace('_', '-')}={choice[f.name]}"]
            if f.name in ("max_steps", "lr_decay_steps"):
                argv.append("--warmup-steps=0")  # the default warmup is longer than 3 steps
            assert getattr(parse_args(argv), f.name) == new, f.name


def test_flags_override_a_preset():
    cfg = parse_args(["--preset=cpu-demo", "--max-steps=70", "--no-checkpoint", "--dtype", "bf16"])
    assert (cfg.max_steps, cfg.checkpoint, cfg.dtype) == (70, False, "bf16")
    assert cfg.n_embd == PRESETS["cpu-demo"].n_embd


def test_unknown_preset_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--preset=gpt5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "gpt5" in err and all(name in err for name in PRESETS)
    with pytest.raises(ValueError, match="unknown preset 'gpt5'; choose one of: cpu-demo"):
        get_preset("gpt5")


def test_config_checks():
    with pytest.raises(ValueError, match="dtype"):
        TrainConfig(dtype="fp8")
    with pytest.raises(ValueError, match="micro_batch"):
        TrainConfig(micro_batch=0)
    with pytest.raises(ValueError, match="stop_step"):
        TrainConfig(max_steps=10, warmup_steps=2, stop_step=11)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(max_steps=10, warmup_steps=20)


def test_grad_accum_steps():
    assert grad_accum_steps(524_288, 64, 1024, 8) == 1  # the gpt2-124m-fineweb preset on 8 GPUs
    assert grad_accum_steps(524_288, 16, 1024, 8) == 4
    assert grad_accum_steps(768, 12, 64, 1) == 1
    with pytest.raises(ValueError, match=r"not divisible by micro_batch \* block_size \* world_size"):
        grad_accum_steps(1000, 4, 32, 2)


# -- precision ------------------------------------------------------------------------------------------


def test_precision_recipes_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == "fp32"
    model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=16))
    idx = torch.zeros(1, 4, dtype=torch.long)
    for dtype, expected in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        precision = Precision.select(dtype, cpu)
        with precision.autocast():
            logits, _ = model(idx)
        assert logits.dtype == expected, dtype
        assert precision.make_scaler().is_enabled() == (dtype == "fp16")


# -- checkpoints ----------------------------------------------------------------------------------------


def tiny_state():
    model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=16))
    opt = torch.optim.AdamW(model.parameters())
    return model, {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scaler": {},
        "step": 3,
        "model_config": {"vocab_size": 16},
        "train_config": {"seed": 1},
        "ranks": [{"rng": rng_state(), "loader": {"position": 5}}],
    }


def test_checkpoint_round_trip_and_rng(tmp_path):
    model, state = tiny_state()
    path = save_checkpoint(tmp_path / "ckpt.pt", state)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # the temp file was renamed away
    expected = (torch.rand(3), np.random.rand(3), random.random())
    loaded = load_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded["model"][k], v), k
    set_rng_state(loaded["ranks"][0]["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_is_one_clear_error(tmp_path, damage):
    _, state = tiny_state()
    path = save_checkpoint(tmp_path / "ckpt.pt", state)
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage]
    )
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_checkpoint_refuses_pickled_objects(tmp_path):
    _, state = tiny_state()
    state["train_config"] = TrainConfig()  # a dataclass: weights_only=True must not rebuild it
    torch.save(state, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match=r"pickled gpt\.training\.config\.TrainConfig that torch\.load"):
        load_checkpoint(tmp_path / "ckpt.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="missing"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_export_safetensors_stores_tied_weights_once(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    model, _ = tiny_state()
    path = export_safetensors(model, tmp_path / "model.safetensors", {"note": "x"})
    tensors = safetensors.load_file(str(path))
    assert "lm_head.weight" not in tensors and torch.equal(tensors["wte.weight"], model.wte.weight)
    fresh = GPT(model.config)
    missing, unexpected = fresh.load_state_dict(tensors, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected
    assert torch.equal(fresh.lm_head.weight, model.wte.weight)


# -- run log --------------------------------------------------------------------------------------------


def test_runlog_resume_drops_lines_after_the_checkpoint(tmp_path):
    log = RunLog(tmp_path)
    for step in range(1, 6):
        log.log(kind="train", step=step, loss=5.0 - step)
    log.log(kind="eval", step=4, val_loss=1.5)
    assert log.plot().stat().st_size > 0
    RunLog(tmp_path, resume_step=3)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["loss"] == 4.0


def test_ema_is_bias_corrected():
    assert ema([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])
    assert ema([1.0, 3.0], 0.5)[1] == pytest.approx((0.25 * 1 + 0.5 * 3) / 0.75)
    assert math.isclose(ema([4.0], 0.99)[0], 4.0)


def test_copy_checked_copies_all_or_nothing():
    own = {"a": torch.zeros(2), "b": torch.zeros(3, dtype=torch.float64)}
    assert copy_checked(own, {"a": torch.tensor([1.0, 2.0]), "b": torch.ones(3)}, "bad", "fix it") == 2
    assert own["a"].tolist() == [1.0, 2.0] and own["b"].dtype == torch.float64 and own["b"].sum() == 3
    with pytest.raises(ValueError, match=r"^bad: missing \['b'\], unexpected \['c'\]; fix it$"):
        copy_checked(own, {"a": torch.zeros(2), "c": torch.zeros(3)}, "bad", "fix it")
    with pytest.raises(ValueError, match=r"^weight 'b' is \(4,\), the model's is \(3,\); fix it$"):
        copy_checked(own, {"a": torch.full((2,), 7.0), "b": torch.zeros(4)}, "bad", "fix it")
    assert own["a"].tolist() == [1.0, 2.0]  # the good tensor before the bad one was not copied either
