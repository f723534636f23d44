"""Numerics of a training step: which dtype to compute in, autocast, the fp16 GradScaler, TF32.

Teaches mixed precision as three recipes behind one interface. ``bf16``: autocast runs matmuls in
bfloat16 (same exponent range as fp32, so no loss scaling); ``fp16``: autocast in float16 plus a
:class:`torch.amp.GradScaler`, which multiplies the loss before ``backward`` so small gradients do not
underflow, unscales them before clipping and skips steps whose gradients overflowed; ``fp32``: no
autocast. Weights and optimizer state stay fp32 in all three. TF32 (Ampere+) speeds up the fp32 matmuls
that remain. The same scaler object is used (disabled) for bf16/fp32 so the loop has one code path.

References: PyTorch "Automatic Mixed Precision" recipe and ``torch.amp`` docs; nanoGPT ``train.py``
(``ptdtype``, ``GradScaler(enabled=(dtype == 'float16'))``); Micikevicius et al. 2018, "Mixed
Precision Training" (loss scaling).
"""

import contextlib
from dataclasses import dataclass

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # names used by every flag
AUTOCAST_DTYPES = {name: dtype for name, dtype in DTYPES.items() if name != "fp32"}

# Dense peak FLOP/s per device for the MFU readout (vendor datasheets; bf16/fp16 tensor cores, TF32 for
# fp32). Matched by substring of torch.cuda.get_device_name(); unknown devices show no MFU, and so does
# bf16 on the T4 and V100, which have no bf16 tensor cores (torch emulates it there).
PEAK_FLOPS = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "fp32": 495e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "fp32": 495e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12},
    "A10": {"bf16": 125e12, "fp16": 125e12, "fp32": 62.5e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "fp32": 60e12},
    "T4": {"fp16": 65e12, "fp32": 8.1e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},
}


def resolve_dtype(requested: str, device: torch.device) -> str:
    """``auto`` -> bf16 on compute capability >= 8 (Ampere+), fp16 on older GPUs, fp32 elsewhere.

    ``torch.cuda.is_bf16_supported()`` is True on a T4 through emulation, so capability decides.
    """
    if requested not in ("auto", *DTYPES):
        raise ValueError(f"dtype={requested!r}; choose one of auto, bf16, fp16, fp32")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    return "fp32"


@dataclass
class Precision:
    """A resolved recipe: ``autocast()`` for the forward pass, ``make_scaler()`` for backward/step."""

    dtype: str  # bf16 | fp16 | fp32
    device_type: str  # cuda | cpu | mps

    @classmethod
    def select(cls, requested: str, device: torch.device, tf32: bool = True) -> "Precision":
        dtype = resolve_dtype(requested, device)
        if device.type == "cuda":
            # the fp32 matmuls/convs that remain use TF32 tensor cores on Ampere+ (10-bit mantissa)
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        return cls(dtype, device.type)

    def autocast(self):
        if self.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=AUTOCAST_DTYPES[self.dtype])

    def make_scaler(self) -> torch.amp.GradScaler:
        """Enabled only for fp16; disabled, ``scale``/``unscale_``/``step`` pass straight through."""
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype == "fp16")


def peak_flops(device: torch.device, dtype: str) -> float | None:
    """The device's dense peak FLOP/s for ``dtype`` if we know it (used for MFU), else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, table in PEAK_FLOPS.items():
        if key in name:
            return table.get(dtype)
    return None
