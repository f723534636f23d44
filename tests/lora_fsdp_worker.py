"""One rank of the FSDP2 tests in ``tests/test_lora_sharded.py``: ``torchrun --nproc_per_node=2`` runs it.

Reads ``spec.pt`` from the folder given as its argument (the tiny model's config, its initial weights,
the global batches, a second state dict to load unsharded) and writes what the test compares:
- ``straight``: AdamW steps on the sharded model, each rank on its rows of every global batch; sharded
  checkpoints ``mid`` (after ``save_at``) and ``last`` (saved twice: the second save replaces the first);
- ``resumed``: a fresh sharded model and optimizer loaded from ``mid``, then the remaining steps;
- ``from_full``: the second state dict loaded into a sharded model from rank 0, its loss on batch 0,
  the model gathered back to rank 0 and saved sharded again;
- ``rank{r}.json``: losses, this rank's memory report and what load_sharded returned.
- ``loop`` (with ``finetune`` in the spec): ``lora.finetune.finetune`` with ``fsdp=True`` on the
  spec's examples, straight (``straight/``) and stopped then resumed (``stopped/``).
With ``gguf`` in the spec it runs SmolLM2 instead: load, shard, AdamW steps, the memory report.
"""

import json
import sys
from pathlib import Path

import torch

from gpt.model import GPT, GPTConfig
from gpt.training import distributed
from gpt.training.checkpoint import rng_state
from lora.sharded import (
    full_state_dict,
    load_full_state_dict,
    load_sharded,
    memory_report,
    save_sharded,
    shard_model,
)


def sharded_model(spec: dict, info, state_dict: dict | None) -> GPT:
    model = GPT(GPTConfig.llama(**spec["config"]))
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return shard_model(model, info)


def my_rows(batch: torch.Tensor, info) -> torch.Tensor:
    rows = batch.size(0) // info.world_size
    return batch[info.rank * rows : (info.rank + 1) * rows]  # (B / N, T + 1)


def step(model, optimizer, batch: torch.Tensor, info, report: dict | None = None) -> float:
    """One AdamW step on this rank's rows of the global batch (B, T + 1); the global mean loss.

    With ``report``, this rank's memory report goes in it while gradients and moments both exist."""
    mine = my_rows(batch, info)
    _, loss = model(mine[:, :-1], mine[:, 1:])
    loss.backward()  # FSDP reduce-scatters: each rank's shard gets the mean over ranks
    optimizer.step()
    if report is not None:
        report.update(memory_report(model, optimizer))
    optimizer.zero_grad(set_to_none=True)
    return distributed.all_reduce_mean(loss.detach(), info).item()


def smollm2(spec: dict, info) -> dict:
    """The real model: every rank loads the GGUF, shards it, takes AdamW steps and reports its memory."""
    from quant.load import load_gguf

    model = shard_model(load_gguf(spec["gguf"])[0].train(), info)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    report = {}
    losses = [step(model, optimizer, b, info, report) for b in spec["batches"]]
    return {"rank": info.rank, "losses": losses, "memory": report}


def the_loop(spec: dict, info, out: Path) -> dict:
    """lora.finetune with fsdp=True: straight to the end, and stopped half way then resumed."""
    from lora.examples import Example
    from lora.finetune import FinetuneConfig, finetune

    train, val = ([Example(tuple(i), tuple(t)) for i, t in spec[name]] for name in ("train", "val"))
    record = {}
    runs = (("straight", {}), ("stopped", {"stop_step": spec["stop_step"]}), ("resumed", {"resume": True}))
    for run, overrides in runs:
        model = GPT(GPTConfig.llama(**spec["config"]))
        model.load_state_dict(spec["init"])
        folder = "straight" if run == "straight" else "stopped"
        cfg = FinetuneConfig(**spec["finetune"], **overrides, out_dir=str(out / folder), fsdp=True)
        history = finetune(model, train, val, cfg, pad_id=0, info=info)
        record[run] = {k: history[k] for k in ("step", "train_losses", "val_losses", "grad_norms")}
    return record


def main(out: Path) -> None:
    info = distributed.setup("cpu")
    spec = torch.load(out / "spec.pt", weights_only=True)
    if "gguf" in spec:
        (out / f"rank{info.rank}.json").write_text(json.dumps(smollm2(spec, info)))
        distributed.teardown(info)
        return
    loop = the_loop(spec, info, out) if "finetune" in spec else None
    batches, lr = spec["batches"], spec["lr"]
    record = {"rank": info.rank}

    model = sharded_model(spec, info, spec["init"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=spec["weight_decay"])
    losses, record["memory"] = [], {}
    for i, batch in enumerate(batches, start=1):
        losses.append(step(model, optimizer, batch, info, record["memory"] if i == len(batches) else None))
        extra = {"step": i, "rank": info.rank, "rng": rng_state()}
        if i == spec["save_at"]:
            save_sharded(out / "mid", model, optimizer, extra)
        if i >= len(batches) - 1:
            save_sharded(out / "last", model, optimizer, extra)
    record["losses"] = losses

    model = sharded_model(spec, info, None)  # fresh weights and optimizer: everything comes from `mid`
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=spec["weight_decay"])
    extra = load_sharded(out / "mid", model, optimizer)
    record["loaded_extra"] = {"step": extra["step"], "rank": extra["rank"]}
    record["resumed_losses"] = [step(model, optimizer, b, info) for b in batches[extra["step"] :]]
    save_sharded(out / "resumed", model, optimizer, {"step": len(batches)})

    model = sharded_model(spec, info, None)
    load_full_state_dict(model, spec["full"] if info.is_master else {})
    with torch.no_grad():
        mine = my_rows(batches[0], info)
        loss = model(mine[:, :-1], mine[:, 1:])[1]
        record["from_full_loss"] = distributed.all_reduce_mean(loss, info).item()
    gathered = full_state_dict(model)
    if info.is_master:
        torch.save(gathered, out / "gathered.pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    save_sharded(out / "from_full", model, optimizer, {})

    record["loop"] = loop
    (out / f"rank{info.rank}.json").write_text(json.dumps(record))
    distributed.teardown(info)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
