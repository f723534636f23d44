"""gpt.training: what a training run is made of, apart from the model (Weeks 4.2 and 4.3).

Reading order: ``config.py`` (one TrainConfig dataclass, named presets, every field a flag) ->
``distributed.py`` (DDP setup on CPU with gloo or on GPUs with NCCL) -> ``precision.py`` (autocast,
loss scaling, peak FLOPs for MFU) -> ``schedule.py`` (warmup + cosine) -> ``checkpoint.py`` (atomic
saves, exact resume, safetensors export) -> ``runlog.py`` (metrics.jsonl and the loss plot). The loop
that uses them all is the script ``gpt/train.py`` (``torchrun gpt/train.py --preset=...``).

References: nanoGPT ``train.py`` and build-nanogpt ``train_gpt2.py`` (Karpathy).
"""

from gpt.training.checkpoint import export_safetensors, load_checkpoint, save_checkpoint
from gpt.training.config import PRESETS, TrainConfig, get_preset, grad_accum_steps, parse_args
from gpt.training.precision import DTYPES, Precision, peak_flops
from gpt.training.runlog import RunLog, plot_losses, read_metrics
from gpt.training.schedule import lr_at

__all__ = [
    "DTYPES",
    "PRESETS",
    "Precision",
    "RunLog",
    "TrainConfig",
    "export_safetensors",
    "get_preset",
    "grad_accum_steps",
    "load_checkpoint",
    "lr_at",
    "parse_args",
    "peak_flops",
    "plot_losses",
    "read_metrics",
    "save_checkpoint",
]
