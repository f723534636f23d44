"""Checkpoints that survive a crash mid-write and load without running pickled code.

Teaches what "resume exactly" needs and how to store it safely. A training checkpoint holds the model
and optimizer state, the fp16 loss scaler, the step, every rank's data-loader position and every
rank's random-number-generator states (torch CPU and CUDA, numpy, Python), so a resumed run draws the
same dropout masks and reads the same batches as one that never stopped. It is written atomically
(temp file in the same folder, fsync, ``os.replace``): a crash leaves the previous checkpoint intact,
never half of a new one. It is read with ``torch.load(weights_only=True)``, which only rebuilds
tensors and plain containers (so RNG states are stored as tensors, ints and tuples, configs as
dicts), and a corrupt or truncated file gives one clear error. ``export_safetensors`` writes just the
weights in the format inference tools load.

Reference: nanoGPT ``train.py`` (``ckpt.pt`` with model/optimizer/model_args/iter_num); PyTorch
``torch.load`` weights_only docs; the ``safetensors`` format (Hugging Face).
"""

import contextlib
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_KEYS = ("model", "optimizer", "scaler", "step", "model_config", "train_config", "ranks")


def rng_state() -> dict:
    """This process's RNG states as tensors and plain types (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@contextlib.contextmanager
def atomic_file(path):
    """``with atomic_file(path) as f:`` writes ``path`` whole or not at all: a temp file in the same folder,
    fsync, then rename (atomic on POSIX: readers see the old file or the new one, never half of one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (:func:`atomic_file`), streamed, never whole in memory."""
    with atomic_file(path) as f:
        torch.save(state, f)
    return Path(path)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``; ValueError if it is missing, corrupt or truncated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train without --resume first (or fix --out-dir)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip/pickle/EOF errors differ by how the file is damaged: one message for all
        text = str(err)
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if unsafe:
            raise ValueError(
                f"checkpoint {path} holds a pickled {unsafe.group(1)} that torch.load(weights_only=True) "
                "refuses to rebuild; it was not written by gpt/train.py. Load only checkpoints you trust"
            ) from err
        raise ValueError(
            f"checkpoint {path} is corrupt or truncated ({type(err).__name__}); use another checkpoint "
            "(or delete this one and start again)"
        ) from err
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(
            f"checkpoint {path} is not a training checkpoint of gpt/train.py (missing {missing})"
        )
    return state


def copy_checked(own: dict, new, mismatch: str, fix: str) -> int:
    """Copy the tensors of ``new`` (a mapping of name -> tensor) into those of ``own`` (a state dict or
    named parameters) in place, cast to each one's dtype and device; returns how many were copied.
    Names and shapes are all checked before the first copy, so a mismatch (a ValueError starting with
    ``mismatch`` and ending with ``fix``) leaves every tensor as it was."""
    missing, unexpected = sorted(own.keys() - new.keys()), sorted(new.keys() - own.keys())
    if missing or unexpected:
        raise ValueError(f"{mismatch}: missing {missing[:5]}, unexpected {unexpected[:5]}; {fix}")
    for name, t in own.items():
        value = new[name]
        if not isinstance(value, torch.Tensor) or value.shape != t.shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"weight {name!r} is {got}, the model's is {tuple(t.shape)}; {fix}")
    with torch.no_grad():
        for name, t in own.items():
            t.copy_(new[name])
    return len(own)


def export_safetensors(model: torch.nn.Module, path, metadata: dict[str, str] | None = None) -> Path:
    """Weights only, as ``.safetensors``; a tied ``lm_head.weight`` is stored once (as ``wte.weight``)."""
    from safetensors.torch import save_file

    tensors, seen = {}, set()
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen:  # tied weights share storage; safetensors refuses duplicates
            continue
        seen.add(t.data_ptr())
        tensors[name] = t.detach().cpu().contiguous()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path
