"""Copying a converted state dict into a model, with every key and shape checked.

Every Hugging Face converter in this package (GPT-2/Llama in ``gpt.hf``, BERT, T5) ends the same way: a
dict of our parameter names -> tensors that must cover the model exactly. :func:`load_checked` is that
last step, and it imports only torch so any converter can use it without importing another model.
"""

import torch
from torch import Tensor


def load_checked(model: torch.nn.Module, sd: dict[str, Tensor]) -> None:
    """Copy ``sd`` into ``model``'s parameters, insisting on the same key set and every shape equal.

    Raises ValueError naming the missing/unexpected key or the key with its two shapes. A tied head is
    covered by the embedding (it is the same Parameter).
    """
    params = dict(model.named_parameters())  # shared (tied) parameters appear once
    missing = sorted(set(params) - set(sd))
    unexpected = sorted(set(sd) - set(params))
    if missing or unexpected:
        raise ValueError(f"state dict mismatch: missing keys {missing}, unexpected keys {unexpected}")
    for name, p in params.items():
        if tuple(sd[name].shape) != tuple(p.shape):
            raise ValueError(
                f"shape mismatch for {name!r}: checkpoint has {tuple(sd[name].shape)}, "
                f"model expects {tuple(p.shape)}"
            )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(sd[name])
