"""Serving new weights in place: a checked copy of a state dict into the served model.

Teaches how an RL trainer hands its policy to the inference engine without rebuilding it (TRL pushes
each update into vLLM the same way). Every name and shape is checked before the first copy, so a bad
state dict leaves the model unchanged; the copy keeps every tensor's storage, so captured CUDA graphs
and ``torch.compile``'d steps, which read parameters at their addresses, replay with the new values.
``LLMEngine.load_weights`` calls it and then drops the prefix cache, whose K/V the old weights made.

Reference: vLLM ``model_executor/model_loader`` (``load_weights`` behind TRL's GRPO weight sync).
"""

from collections.abc import Mapping

from torch import Tensor, nn

from gpt.training.checkpoint import copy_checked


def copy_weights(model: nn.Module, weights: nn.Module | Mapping[str, Tensor]) -> int:
    """Copy ``weights`` (a state dict, or a module's) into ``model`` in place, cast to its dtype and
    device; returns how many tensors were copied. Names and shapes must match exactly (merge LoRA
    layers into plain weights first)."""
    if isinstance(weights, nn.Module):
        weights = weights.state_dict()
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a state dict or an nn.Module, got {type(weights).__name__}")
    return copy_checked(
        model.state_dict(),  # tensors sharing the parameters' storage
        weights,
        "the weights do not match the served model",
        "pass a state dict of the same gpt.GPT config (LoRA layers merged)",
    )
