"""Distributed data parallel (DDP) setup: one process per device, gradients averaged across processes.

Teaches what ``torchrun`` hands a training script and what the script does with it. torchrun starts
``--nproc_per_node`` copies of the script and sets ``RANK`` (global index), ``LOCAL_RANK`` (index on this
machine, i.e. which GPU) and ``WORLD_SIZE`` in each one's environment. The script then joins the
process group (NCCL between GPUs, gloo between CPU processes), pins itself to its GPU, and wraps the
model in ``DistributedDataParallel``, which all-reduces gradients during ``backward``. Without those
variables (``python gpt/train.py``) nothing is initialised and world_size is 1, so every layer and the
whole loop run on a CPU without a process group.

Reference: nanoGPT ``train.py`` and build-nanogpt ``train_gpt2.py`` (ddp setup); PyTorch docs
"Getting Started with Distributed Data Parallel" and ``torchrun`` (elastic launch) environment variables.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its machine, its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def ddp(self) -> bool:
        return self.world_size > 1

    @property
    def is_master(self) -> bool:
        """Rank 0 logs, plots, samples and writes checkpoints."""
        return self.rank == 0


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, else cpu; or exactly what was asked for (cpu, cuda, cuda:1, mps)."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={requested!r} but CUDA is not available; use --device=cpu or auto")
    return device


def setup(requested_device: str = "auto") -> DistInfo:
    """Join the process group if torchrun started us (``WORLD_SIZE`` > 1), else describe a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device)
    if world_size == 1:
        return DistInfo(0, 0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, **kwargs)
    assert dist.get_world_size() == world_size, "WORLD_SIZE does not match the process group"
    return DistInfo(rank, local_rank, world_size, device)


def teardown(info: DistInfo) -> None:
    if info.ddp and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``t`` over processes (SUM then divide: gloo has no AVG op)."""
    if info.ddp:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size
    return t


def barrier(info: DistInfo) -> None:
    if info.ddp:
        dist.barrier()


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not info.ddp:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.ddp:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def current_rank() -> int:
    """This process's global rank from torchrun's environment (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))
