"""FSDP2 sharded full fine-tuning (lora.sharded) on a tiny tied Llama-style GPT, 2 gloo ranks on the CPU.

Against one plain process: ``lora.finetune`` with ``fsdp=True`` on 2 ranks gives the losses, gradient
norms and weights of the same loop in one process with 2 micro-steps (masked targets, clipping,
evaluation) within 1e-5, and resumes from its sharded checkpoint exactly; ``lora.sharded``'s pieces on
their own (shard, a bare AdamW step) match plain AdamW on the whole batch. A sharded checkpoint
consolidates into a plain GPT, a plain state dict loads into the sharded model, and each rank's memory
report equals the arithmetic of its shards. The ranks run ``tests/lora_fsdp_worker.py`` under
``torchrun --standalone --nproc_per_node=2``, once per test run (about 10 s).

The model's sizes are chosen so FSDP pads: vocab 97 and ffn 75 rows do not split evenly in two.
"""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lora.sharded as sharded
from gpt.model import GPT, GPTConfig
from gpt.training.distributed import DistInfo
from lora.sharded import consolidate, load_sharded, memory_report, save_sharded, shard_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = dict(vocab_size=97, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, ffn_hidden=75)
CONFIG["tie_embeddings"] = True  # as SmolLM2: lm_head.weight is wte.weight
LR, WEIGHT_DECAY, STEPS, SAVE_AT, WORLD = 1e-2, 0.1, 4, 2, 2
# lora.finetune's loop: 4 examples per step, one micro-batch per rank (two micro-steps in one process)
FINETUNE = dict(steps=STEPS, batch_size=4, lr=LR, warmup_steps=1, weight_decay=WEIGHT_DECAY, eval_interval=2)
FINETUNE |= dict(eval_batch=3, device="cpu", dtype="fp32", progress=False, seed=0)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_gpt(seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.llama(**CONFIG))


def global_batches() -> torch.Tensor:
    """(STEPS, B, T + 1) tokens from a 10-token alphabet, so a few steps lower the loss."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 10, (STEPS, 4, CONFIG["block_size"] + 1), generator=g)


def masked_examples(n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """(input_ids, targets) pairs of 6..16 tokens, a prompt of 1..L-2 masked targets: every example has
    its own count of scored tokens, so the ranks' shares of a batch differ."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        L = int(torch.randint(6, CONFIG["block_size"] + 1, (1,), generator=g))
        seq = torch.randint(0, 10, (L + 1,), generator=g).tolist()
        p = int(torch.randint(1, L - 1, (1,), generator=g))
        pairs.append((seq[:L], [-100] * p + seq[p + 1 :]))
    return pairs


TRAIN, VAL = masked_examples(12, seed=0), masked_examples(7, seed=1)  # 7 val: 3 batches of 3 on 2 ranks


def one_process() -> tuple[list[float], GPT]:
    """The reference: a plain GPT and AdamW, each step on the whole global batch."""
    model = tiny_gpt(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    losses = []
    for batch in global_batches():
        _, loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, model


def launch_workers(out: Path, spec: dict) -> list[dict]:
    """``torchrun`` the worker on ``spec``; each rank's record."""
    torch.save(spec, out / "spec.pt")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}"]
    worker = [*launch, "tests/lora_fsdp_worker.py", str(out)]
    run = subprocess.run(worker, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def padded_arithmetic(params: list[torch.nn.Parameter]) -> tuple[int, list[int], int, int]:
    """(full bytes, bytes rank r holds, bytes every rank allocates, one row of each parameter): each
    rank holds rows [r * c, (r + 1) * c) of a parameter, c = ceil(rows / N), and allocates all c rows."""
    full, held, padded, rows = 0, [0] * WORLD, 0, 0
    for p in params:
        row = p.numel() // p.shape[0] * p.element_size()
        c = math.ceil(p.shape[0] / WORLD)
        full += p.numel() * p.element_size()
        padded += c * row
        rows += row
        for r in range(WORLD):
            held[r] += min(c, max(0, p.shape[0] - r * c)) * row
    return full, held, padded, rows


def assert_report_matches(records: list[dict], params: list[torch.nn.Parameter]) -> None:
    """Parameters and gradients allocate the padded chunk, AdamW's two moments only the rows held."""
    full, held, padded, rows = padded_arithmetic(params)
    assert sum(held) == full
    for record in records:
        report, r = record["memory"], record["rank"]
        assert report["world_size"] == WORLD and report["rank"] == r
        for kind in ("params", "grads"):
            got = report[kind]
            assert got["full"] == full and got["ideal"] == full / WORLD
            assert got["local"] == held[r] and got["allocated"] == got["padded"] == padded
            assert full / WORLD <= got["allocated"] < full / WORLD + rows  # under 1 row per parameter
        opt = report["optimizer"]
        assert opt["full"] == 2 * full and opt["local"] == opt["allocated"] == 2 * held[r]
        assert opt["replicated"] == len(params) * torch.tensor(0.0).element_size()  # one step per param


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    """The worker's output folder and each rank's record (losses, memory report, loaded extra)."""
    out = tmp_path_factory.mktemp("fsdp")
    spec = dict(
        config=CONFIG,
        init=tiny_gpt(0).state_dict(),
        full=tiny_gpt(1).state_dict(),
        batches=global_batches(),
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        save_at=SAVE_AT,
        finetune=FINETUNE,
        train=TRAIN,
        val=VAL,
        stop_step=SAVE_AT,
    )
    return out, launch_workers(out, spec)


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def test_the_loop_with_fsdp_on_two_ranks_equals_one_process(fsdp_run, tmp_path):
    """lora.finetune: fsdp=True on 2 ranks x 1 micro-batch == one plain process x 2 micro-batches (masked
    targets, grad clipping, evaluation): losses, grad norms and weights within 1e-5."""
    from lora.examples import Example
    from lora.finetune import FinetuneConfig, finetune

    out, records = fsdp_run
    train, val = ([Example(tuple(i), tuple(t)) for i, t in pairs] for pairs in (TRAIN, VAL))
    cfg = FinetuneConfig(**FINETUNE, grad_accum=2, out_dir=str(tmp_path))
    ref = finetune(tiny_gpt(0), train, val, cfg, pad_id=0)
    assert ref["train_losses"][-1][1] < ref["train_losses"][0][1]
    for record in records:
        got = record["loop"]["straight"]
        for key in ("train_losses", "val_losses", "grad_norms"):
            assert [s for s, _ in got[key]] == [s for s, _ in ref[key]], key
            for (step, a), (_, b) in zip(got[key], ref[key], strict=True):
                assert abs(a - b) <= 1e-5, (key, step, a, b)
    single = torch.load(tmp_path / "ckpt.pt", weights_only=True)["model"]  # the trained parameters
    sharded = consolidate(out / "straight" / "ckpt-sharded")
    assert_same_weights({k: sharded[k] for k in single}, single, atol=1e-5)


def test_the_loop_resumes_from_its_sharded_checkpoint_exactly(fsdp_run):
    out, records = fsdp_run
    for record in records:
        loop = record["loop"]
        assert loop["stopped"]["step"] == SAVE_AT and loop["resumed"]["step"] == STEPS
        for key in ("train_losses", "val_losses"):
            assert loop["stopped"][key] + loop["resumed"][key] == loop["straight"][key], key
    straight, resumed = (consolidate(out / run / "ckpt-sharded") for run in ("straight", "stopped"))
    assert_same_weights(resumed, straight, atol=0)


def test_sharded_steps_equal_plain_steps(fsdp_run):
    """lora.sharded alone (the worker's own step): 2 ranks == one process, losses and weights."""
    out, records = fsdp_run
    ref_losses, ref_model = one_process()
    assert ref_losses[-1] < ref_losses[0]  # it learns, so the steps moved the weights
    for record in records:
        assert len(record["losses"]) == STEPS
        for step, (a, b) in enumerate(zip(record["losses"], ref_losses, strict=True), start=1):
            assert abs(a - b) <= 1e-5, (step, a, b)
    assert_same_weights(consolidate(out / "last"), ref_model.state_dict(), atol=1e-5)


def test_sharded_checkpoint_loads_into_a_plain_gpt(fsdp_run):
    """consolidate -> GPT.load_state_dict (strict): the head is tied again, logits as the reference."""
    out, _ = fsdp_run
    full = consolidate(out / "last")
    assert full["lm_head.weight"] is full["wte.weight"]  # stored once, tied again
    plain = tiny_gpt(5)
    plain.load_state_dict(full)
    assert plain.lm_head.weight is plain.wte.weight
    _, ref_model = one_process()
    idx = global_batches()[0][:, :-1]
    with torch.no_grad():
        torch.testing.assert_close(plain(idx)[0], ref_model(idx)[0], rtol=0, atol=1e-5)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temp or old folders


def test_plain_state_dict_loads_into_the_sharded_model(fsdp_run):
    """Rank 0's full state dict, broadcast into the shards: the same loss, gathered and saved back exactly."""
    out, records = fsdp_run
    full = tiny_gpt(1)
    batch = global_batches()[0]
    with torch.no_grad():
        ref = full(batch[:, :-1], batch[:, 1:])[1].item()
    for record in records:
        assert abs(record["from_full_loss"] - ref) <= 1e-6, (record["from_full_loss"], ref)
    assert_same_weights(consolidate(out / "from_full"), full.state_dict(), atol=0)
    assert_same_weights(torch.load(out / "gathered.pt", weights_only=True), full.state_dict(), atol=0)


def test_resume_from_a_sharded_checkpoint_is_exact(fsdp_run):
    """Fresh model and optimizer + load_sharded(mid) + the remaining steps == the straight run."""
    out, records = fsdp_run
    for record in records:
        assert record["loaded_extra"] == {"step": SAVE_AT, "rank": record["rank"]}  # each rank its own
        assert record["resumed_losses"] == record["losses"][SAVE_AT:]
    assert_same_weights(consolidate(out / "resumed"), consolidate(out / "last"), atol=0)


def test_memory_report_equals_the_arithmetic(fsdp_run):
    _, records = fsdp_run
    model = tiny_gpt(0)
    params = list(model.parameters())  # the tied matrix once
    assert len(params) == len(dict(model.named_parameters(remove_duplicate=False))) - 1
    full, _, padded, _ = padded_arithmetic(params)
    assert padded > full / WORLD  # vocab 97 and ffn 75 rows: these sizes do pad
    assert_report_matches(records, params)


def test_the_cli_trains_sharded_and_measures_on_rank_0(data_file, tmp_path):
    """``torchrun -m lora.finetune --fsdp --smoke`` on 2 ranks: the val loss (sharded), exact match and
    perplexity (rank 0's gathered copy) before and after equal ``lora.finetune.main`` in one process;
    rank 0 alone writes and prints; each rank's parameters, gradients and moments are half the whole."""
    from lora.finetune import main, smoke_config

    data_file("gsm8k", "train.jsonl")
    data_file("wikitext2", "test.txt")
    flags = dict(steps=3, eval_interval=2, n_test=2, max_new_tokens=6)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}"]
    cli = [*launch, "-m", "lora.finetune", "--fsdp", "--smoke", "--out-dir", str(tmp_path / "fsdp")]
    cli += [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    run = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads((tmp_path / "fsdp" / "result.json").read_text())
    ref = main(smoke_config(out_dir=str(tmp_path / "one"), **flags))
    assert got["world_size"] == WORLD and got["config"]["fsdp"] and ref["memory"] is None
    assert [s for s, _ in got["history"]["val_losses"]] == [0, 2, 3]
    for key in ("train_losses", "val_losses"):  # seen: 1e-6 (padding: 2 micro-batches of 1, not 1 of 2)
        for (step, a), (_, b) in zip(got["history"][key], ref["history"][key], strict=True):
            assert abs(a - b) <= 1e-5, (key, step, a, b)
    for when in ("before", "after"):
        assert got[when].keys() == {"val_loss", "exact_match", "wikitext2_ppl"}
        assert abs(got[when]["val_loss"] - ref[when]["val_loss"]) <= 1e-5
        assert got[when]["exact_match"] == ref[when]["exact_match"]
        assert abs(got[when]["wikitext2_ppl"] / ref[when]["wikitext2_ppl"] - 1) <= 1e-5
    assert got["after"]["val_loss"] < got["before"]["val_loss"]
    assert got["after"]["wikitext2_ppl"] != got["before"]["wikitext2_ppl"]  # rank 0 saw the trained weights
    assert got["samples"] == ref["samples"]  # the same greedy generations, before and after
    assert [r["rank"] for r in got["memory"]] == list(range(WORLD))
    for report in got["memory"]:
        assert report["world_size"] == WORLD
        for kind, copies in (("params", 1), ("grads", 1), ("optimizer", 2)):
            full = copies * got["n_params"] * 4  # fp32
            assert report[kind]["full"] == full
            assert full / WORLD <= report[kind]["allocated"] <= full / WORLD * 1.001, (kind, report[kind])
    assert run.stdout.count("val_loss: before") == 1 and run.stdout.count(f"of {WORLD}: params") == WORLD
    assert (tmp_path / "fsdp" / "ckpt-sharded" / "sharded.json").is_file()


@pytest.mark.slow
def test_smollm2_two_ranks_equal_one_process(smollm2, smollm2_file, tmp_path):
    """The real model: 2 AdamW steps sharded over 2 ranks == one process; per-rank memory as computed."""
    model, tokenizer = smollm2
    text = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    ids = torch.tensor(tokenizer.encode(text)[:33])
    batches = torch.stack([torch.stack([ids.roll(-i), ids.roll(-7 - i)]) for i in range(2)])  # (2, 2, 33)
    spec = dict(gguf=str(smollm2_file), batches=batches, lr=1e-4, weight_decay=0.0)
    records = launch_workers(tmp_path, spec)
    plain = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(plain.parameters(), lr=spec["lr"], weight_decay=0.0)
    ref = []
    for batch in batches:
        _, loss = plain(batch[:, :-1], batch[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ref.append(loss.item())
    for record in records:
        for a, b in zip(record["losses"], ref, strict=True):
            assert abs(a - b) <= 1e-5, (record["losses"], ref)
    assert_report_matches(records, list(model.parameters()))


# -- one process, no process group ----------------------------------------------------------------


def single() -> DistInfo:
    return DistInfo(0, 0, 1, torch.device("cpu"))


def trained_one_step(seed: int = 0):
    model = shard_model(tiny_gpt(seed), single())
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    batch = global_batches()[0]
    model(batch[:, :-1], batch[:, 1:])[1].backward()
    optimizer.step()
    return model, optimizer


def test_one_process_is_unsharded_and_its_report_is_the_full_size():
    model = tiny_gpt(0)
    assert shard_model(model, single()) is model
    model, optimizer = trained_one_step()
    report = memory_report(model, optimizer)
    full = sum(p.numel() * 4 for p in model.parameters())
    for kind, n in (("params", 1), ("grads", 1), ("optimizer", 2)):
        got = report[kind]
        assert got["full"] == got["ideal"] == got["padded"] == got["local"] == got["allocated"] == n * full


def test_save_and_load_in_one_process(tmp_path):
    model, optimizer = trained_one_step()
    save_sharded(tmp_path / "ckpt", model, optimizer, {"step": 1, "note": "x"})
    fresh = tiny_gpt(3)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=LR)
    assert load_sharded(tmp_path / "ckpt", fresh, fresh_opt) == {"step": 1, "note": "x"}
    assert_same_weights(fresh.state_dict(), model.state_dict(), atol=0)
    assert fresh.lm_head.weight is fresh.wte.weight
    a, b = optimizer.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert a.keys() == b.keys()
    for i in a:
        assert_same_weights(a[i], b[i], atol=0)


def test_a_crash_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = trained_one_step()
    save_sharded(tmp_path / "ckpt", model, optimizer, {"step": 1})
    first = consolidate(tmp_path / "ckpt")
    later, later_opt = trained_one_step(seed=7)

    def dies_half_way(state, checkpoint_id, **kwargs):
        (Path(checkpoint_id) / "__0_0.distcp").write_bytes(b"half a shard")
        raise RuntimeError("killed")

    monkeypatch.setattr(sharded.dcp, "save", dies_half_way)
    with pytest.raises(RuntimeError, match="killed"):
        save_sharded(tmp_path / "ckpt", later, later_opt, {"step": 2})
    fresh = tiny_gpt(3)
    assert load_sharded(tmp_path / "ckpt", fresh, torch.optim.AdamW(fresh.parameters())) == {"step": 1}
    assert_same_weights(consolidate(tmp_path / "ckpt"), first, atol=0)
    monkeypatch.undo()
    save_sharded(tmp_path / "ckpt", later, later_opt, {"step": 2})  # the next save clears the debris
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert_same_weights(consolidate(tmp_path / "ckpt"), later.state_dict(), atol=0)


def test_a_crash_between_the_renames_reads_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = trained_one_step()
    save_sharded(tmp_path / "ckpt", model, optimizer, {"step": 1})
    later, later_opt = trained_one_step(seed=7)
    real_replace, calls = os.replace, []

    def dies_after_first(src, dst):
        calls.append(src)
        if len(calls) == 2:  # ckpt -> .ckpt.old done, .ckpt.tmp -> ckpt not yet
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(sharded.os, "replace", dies_after_first)
    with pytest.raises(OSError, match="power cut"):
        save_sharded(tmp_path / "ckpt", later, later_opt, {"step": 2})
    monkeypatch.undo()
    assert not (tmp_path / "ckpt").exists()
    fresh = tiny_gpt(3)
    assert load_sharded(tmp_path / "ckpt", fresh, torch.optim.AdamW(fresh.parameters())) == {"step": 1}
    assert_same_weights(fresh.state_dict(), model.state_dict(), atol=0)
    save_sharded(tmp_path / "ckpt", later, later_opt, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_user_errors(fsdp_run, tmp_path):
    out, _ = fsdp_run
    with pytest.raises(TypeError, match=r"shard_model expects a gpt\.GPT, got Linear"):
        shard_model(torch.nn.Linear(2, 2), single())
    with pytest.raises(ValueError, match="world_size=2 but no process group"):
        shard_model(tiny_gpt(0), DistInfo(0, 0, 2, torch.device("cpu")))
    model = tiny_gpt(0)
    message = r"saved by 2 rank\(s\), this run has 1: resume with --nproc_per_node=2"
    with pytest.raises(ValueError, match=message):
        load_sharded(out / "last", model, torch.optim.AdamW(model.parameters()))
    with pytest.raises(FileNotFoundError, match="no sharded checkpoint at"):
        consolidate(tmp_path / "nothing")
