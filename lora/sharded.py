"""Sharded full fine-tuning: FSDP2 (``fully_shard``, ZeRO-3 style) and its sharded checkpoints.

Teaches how a model that outgrows one device still trains with plain AdamW. Unlike DDP
(``gpt.training.distributed``), where every rank holds the whole model, its gradients and both Adam
moments, FSDP2 splits each parameter along dim 0 into N pieces (``torch.chunk``, one per rank) and each
rank keeps only its piece, so parameters, gradients and optimizer state all cost 1/N per rank. A block's
full weights exist only while that block runs: its forward (and backward) all-gathers them first and frees
them after, and backward reduce-scatters the gradients, so each rank ends with the averaged gradient of its
own piece. The optimizer then steps only that piece. Same math as one process, less memory per rank.

Wrapping is per transformer block, then the root: the root group holds what no block owns (the token
embedding, the final norm and the head). SmolLM2 ties ``lm_head.weight`` to ``wte.weight``: one
Parameter, so it must live in one group (the root), never be sharded twice.

A sharded checkpoint is a folder written by ``torch.distributed.checkpoint`` (DCP): each rank writes its
own pieces plus a ``.metadata`` index, so saving never gathers the model on one rank, and the folder
loads at another world size, or into one process as a full state dict (``consolidate``). Plain data the
loop needs to resume (step, RNG states, data position) is per rank, in ``extra-rank{r}.pt``.

References: PyTorch FSDP2 docs (``torch.distributed.fsdp.fully_shard``) and the torchtitan
``docs/fsdp.md`` notes; DCP docs ("Getting Started with Distributed Checkpoint"); ZeRO (Rajbhandari et al.
2020, arXiv:1910.02054, stage 3).
"""

import contextlib
import json
import math
import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.tensor import DTensor

from gpt.model import GPT
from gpt.training.distributed import DistInfo

META_FILE = "sharded.json"  # world size and tied names, written by rank 0


def shard_model(model: GPT, info: DistInfo) -> GPT:
    """``fully_shard`` each block, then the root, on a 1-D mesh over all ranks; the model, sharded in place.

    With one process and no process group there is nothing to split: the model comes back unchanged
    (1/1 of everything), so the same loop runs with or without torchrun.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"shard_model expects a gpt.GPT, got {type(model).__name__}")
    if not (dist.is_available() and dist.is_initialized()):
        if info.world_size > 1:
            raise ValueError(
                f"world_size={info.world_size} but no process group; call gpt.training.distributed.setup() "
                "first (launch with torchrun --nproc_per_node=N)"
            )
        return model
    if dist.get_world_size() != info.world_size:
        raise ValueError(
            f"info.world_size={info.world_size} but the process group has {dist.get_world_size()} ranks"
        )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard  # torch >= 2.6

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    for block in model.h:  # one all-gather per block: peak unsharded memory is one block, not the model
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)  # the rest: wte (= lm_head when tied), wpe, ln_f
    if model.config.tie_embeddings:
        assert model.lm_head.weight is model.wte.weight, "fully_shard untied lm_head from wte"
    return model


# -- checkpoints ------------------------------------------------------------------------------------


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@contextlib.contextmanager
def _one_process():
    """DCP warns each time it runs without a process group; here that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is .*assuming the intent")
        yield


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _ties(model: nn.Module) -> dict[str, str]:
    """{tied name: the name stored}, e.g. {"lm_head.weight": "wte.weight"} (one Parameter, two names)."""
    first: dict[int, str] = {}
    ties = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            ties[name] = first[id(p)]
        else:
            first[id(p)] = name
    return ties


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _resolve(path: Path) -> Path:
    """The checkpoint folder, or the previous one if a save died between its two renames."""
    if (path / META_FILE).is_file():
        return path
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and (old / META_FILE).is_file():
        return old
    raise FileNotFoundError(f"no sharded checkpoint at {path} (no {META_FILE}); save_sharded writes one")


def save_sharded(path, model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict) -> Path:
    """Every rank writes its shards of model and optimizer (DCP) and its own ``extra``; collective.

    Written to ``.<name>.tmp`` first; after a barrier rank 0 moves the previous folder aside, renames
    the new one into place and deletes the old one, so ``path`` is always a complete checkpoint (a crash
    between the renames leaves the previous one at ``.<name>.old``, which ``load_sharded`` reads).
    ``path`` must be on a filesystem every rank sees.
    """
    path = Path(path)
    tmp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
    rank, ties = _rank(), _ties(model)
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # what a crashed save left
        tmp.mkdir(parents=True)
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)  # this rank's shards (DTensors), names as in GPT
    model_sd = {k: v for k, v in model_sd.items() if k not in ties}  # the tied matrix once
    with _one_process():
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp, no_dist=_world() == 1)
    with open(tmp / f"extra-rank{rank}.pt", "wb") as f:
        torch.save(extra, f)
        f.flush()
        os.fsync(f.fileno())
    if rank == 0:
        (tmp / META_FILE).write_text(json.dumps({"world_size": _world(), "ties": ties}))
    _barrier()  # every rank's files are on disk
    if rank == 0:
        _fsync_dir(tmp)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()  # nobody returns before the rename
    return path


def load_sharded(path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Load a ``save_sharded`` folder into the (sharded) model and optimizer; returns this rank's extra.

    Model and optimizer reshard to any world size (DCP reads the pieces each rank needs); ``extra`` is
    per rank, so the world size must match the one that saved.
    """
    path = _resolve(Path(path))
    meta = json.loads((path / META_FILE).read_text())
    if meta["world_size"] != _world():
        raise ValueError(
            f"{path} was saved by {meta['world_size']} rank(s), this run has {_world()}: resume with "
            f"--nproc_per_node={meta['world_size']}, or take the weights alone with consolidate('{path}')"
        )
    model_sd, optim_sd = get_state_dict(model, optimizer)  # templates, filled in place
    stored = {k: v for k, v in model_sd.items() if k not in meta["ties"]}
    with _one_process():
        dcp.load({"model": stored, "optim": optim_sd}, checkpoint_id=path, no_dist=_world() == 1)
    stored.update({tied: stored[name] for tied, name in meta["ties"].items()})
    set_state_dict(model, optimizer, model_state_dict=stored, optim_state_dict=optim_sd)
    return torch.load(path / f"extra-rank{_rank()}.pt", weights_only=True)


# -- sharded <-> unsharded --------------------------------------------------------------------------


def consolidate(path) -> dict[str, Tensor]:
    """A sharded checkpoint's model as one full state dict, read in this process alone (no process group
    needed): loads with ``GPT.load_state_dict``; tied names share one tensor, as in the model."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    path = _resolve(Path(path))
    ties = json.loads((path / META_FILE).read_text())["ties"]
    index = FileSystemReader(path).read_metadata().state_dict_metadata  # {"model.wte.weight": sizes, ...}
    full = {
        key.removeprefix("model."): torch.empty(md.size, dtype=md.properties.dtype)
        for key, md in index.items()
        if key.startswith("model.") and isinstance(md, TensorStorageMetadata)
    }
    with _one_process():
        dcp.load({"model": full}, checkpoint_id=path, no_dist=True)
    full.update({tied: full[name] for tied, name in ties.items()})
    return full


def load_full_state_dict(model: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """An unsharded state dict (on rank 0; the others pass ``{}``) into the sharded model: rank 0
    broadcasts each tensor and every rank keeps its piece."""
    if _world() == 1:
        model.load_state_dict(state_dict)
        return
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, state_dict, options=options)


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The sharded model gathered into a full CPU state dict on rank 0 (``{}`` elsewhere); collective."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


# -- memory -----------------------------------------------------------------------------------------


def _local(t: Tensor) -> Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def _storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (FSDP's grads are views of one buffer)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def memory_report(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """This rank's bytes of parameters, gradients and optimizer state, against the arithmetic.

    For each kind: ``full`` (the unsharded tensors, what one process holds), ``ideal`` (full / N),
    ``padded`` (the arithmetic with FSDP's padding: each parameter is cut into N chunks of
    ceil(rows / N) rows, and every rank allocates a whole chunk, so a rank holds at most one extra row
    per parameter), ``local`` (the elements this rank's shards hold) and ``allocated`` (the bytes of the
    storages behind them). Parameters and gradients allocate the padded chunk; AdamW's moments are
    created from the unpadded shard. The per-parameter ``step`` counters are replicated scalars, counted
    apart as ``optimizer["replicated"]``.
    """
    N = _world()
    params = list(model.parameters())  # a tied Parameter once
    trained = [p for p in params if p.requires_grad]

    def arithmetic(ps, copies=1) -> dict:
        full = sum(p.numel() * p.element_size() for p in ps) * copies
        rows = 0
        for p in ps:
            n_rows = p.shape[0] if p.dim() else 1
            rows += math.ceil(n_rows / N) * (p.numel() // n_rows) * p.element_size()
        return {"full": full, "ideal": full / N, "padded": rows * copies}

    grads = [_local(p.grad) for p in trained if p.grad is not None]
    moments, replicated = [], []  # AdamW: exp_avg, exp_avg_sq shaped like p; step a scalar
    for p in trained:
        for v in optimizer.state.get(p, {}).values():
            if torch.is_tensor(v):
                (moments if v.shape == p.shape else replicated).append(_local(v))
    report = {"world_size": N, "rank": _rank()}
    report["params"] = arithmetic(params) | {
        "local": sum(_local(p).numel() * p.element_size() for p in params),
        "allocated": _storage_bytes(_local(p) for p in params),
    }
    report["grads"] = arithmetic(trained) | {
        "local": sum(g.numel() * g.element_size() for g in grads),
        "allocated": _storage_bytes(grads),
    }
    n_moments = len(moments) // max(len(trained), 1)  # 2 for Adam(W): exp_avg and exp_avg_sq
    report["optimizer"] = arithmetic(trained, n_moments) | {
        "local": sum(m.numel() * m.element_size() for m in moments),
        "allocated": _storage_bytes(moments),
        "replicated": sum(v.numel() * v.element_size() for v in replicated),
    }
    return report
