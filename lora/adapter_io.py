"""Saving and loading only the adapter, in peft's own format, so peft and we read each other's files.

Teaches that a LoRA fine-tune ships as a few megabytes next to an unchanged base model. The folder
holds exactly what ``PeftModel.save_pretrained`` writes: ``adapter_config.json`` (rank, alpha, targets,
the variant) and ``adapter_model.safetensors`` with one ``lora_A.weight`` (r, in) and ``lora_B.weight``
(out, r) per adapted layer, under the transformers name of that layer with peft's prefix
(``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``), plus DoRA's
``lora_magnitude_vector`` (out,). Our fused ``c_attn`` is written as the separate q/k/v layers peft
sees, so ``PeftModel.from_pretrained(gpt.to_hf(base), folder)`` loads what we save, and
:func:`load_adapter` loads what peft saves. Each file is written atomically (temp file, fsync, rename).

Reference: peft ``src/peft/utils/save_and_load.py`` (``get_peft_model_state_dict``,
``set_peft_model_state_dict``) and ``src/peft/tuners/lora/config.py`` (``LoraConfig``).
"""

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from gpt.training.checkpoint import write_atomic
from lora.dora import DoRALinear
from lora.inject import QKV, Site, describe, freeze_base, hf_flavour, lora_layers, lora_sites, wrap_sites
from lora.lora_linear import LoRALinear, layer_features

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."  # peft's wrapper (PeftModel.base_model) around the model (LoraModel.model)
SUFFIXES = {  # peft's key endings -> our tensor kind
    ".lora_A.weight": "A",
    ".lora_B.weight": "B",
    ".lora_magnitude_vector": "m",
    ".lora_magnitude_vector.weight": "m",  # the name peft used before it dropped ".weight"
}


def save_adapter(model: nn.Module, directory) -> Path:
    """Write the model's adapters to ``directory`` as peft does; returns the folder."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to save; call inject_lora (or load_adapter) first")
    settings = {n: _settings(m) for n, m in layers.items()}
    if len(set(settings.values())) > 1:
        raise ValueError(
            "save_adapter writes one (r, alpha, dropout, rsLoRA, DoRA) for every layer, but they differ: "
            f"{settings}"
        )
    r, alpha, dropout, rslora, dora = next(iter(settings.values()))
    sites = {(s.module, s.slice): s for s in lora_sites(model)}
    tensors, saved = {}, []
    for module, layer in layers.items():
        for name in layer.adapted():
            site = sites.get((module, name if len(layer.names) > 1 else None))
            if site is None:
                raise ValueError(
                    f"{module} slice {name!r} has no single-layer name to save it under (only our c_attn's "
                    "q/k/v slices do); inject with targets on whole modules"
                )
            key = site.hf or site.module
            saved.append(key)
            tensors[f"{PREFIX}{key}.lora_A.weight"] = layer.lora_A[name]
            tensors[f"{PREFIX}{key}.lora_B.weight"] = layer.lora_B[name]
            if dora:
                tensors[f"{PREFIX}{key}.lora_magnitude_vector"] = layer.lora_magnitude[name]
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": None,
        "r": r,
        "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
        "lora_dropout": dropout,
        "use_rslora": rslora,
        "use_dora": dora,
        "target_modules": _target_modules(saved, [s.hf or s.module for s in sites.values()]),
        "fan_in_fan_out": hf_flavour(model) == "gpt2",  # GPT-2's Conv1D stores weights (in, out)
        "bias": "none",
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    blob = save({k: t.detach().cpu().contiguous() for k, t in tensors.items()}, metadata={"format": "pt"})
    write_atomic(directory / WEIGHTS_NAME, blob)
    write_atomic(directory / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())
    return directory


def load_adapter(model: nn.Module, directory) -> list[str]:
    """Load a peft LoRA/DoRA adapter folder (ours or peft's) into ``model``; returns our module names.

    Into a model without adapters, the layers the file names are wrapped first (rank from the tensors,
    alpha, dropout, rsLoRA and DoRA from the config); a model with adapters must have the same ones.
    ValueError names the layer for a layer this model lacks or shapes that differ.
    """
    config, groups = _read(Path(directory))
    dora = bool(config.get("use_dora", False))
    sites = lora_sites(model)
    by_name = {s.hf: s for s in sites if s.hf} | {s.module: s for s in sites if s.slice is None}
    plan: dict[str, list[Site]] = {}
    ranks: dict[str, int] = {}
    for key, parts in groups.items():
        site = by_name.get(key)
        if site is None:
            raise ValueError(
                f"the adapter has weights for {key}, which this model does not have; its layers: "
                f"{describe(sites)}. Load the adapter onto the base model it was trained on"
            )
        r = _check_shapes(model, key, site, parts, dora)
        if ranks.setdefault(site.module, r) != r:
            raise ValueError(f"{site.module}: its q/k/v slices have different ranks; one rank per layer")
        plan.setdefault(site.module, []).append(site)

    existing = lora_layers(model)
    alpha, dropout, rslora = config["lora_alpha"], config.get("lora_dropout", 0.0), config.get("use_rslora")
    if existing:
        _check_existing(existing, plan, ranks, (alpha, dropout, bool(rslora), dora))
    else:
        for r in sorted(set(ranks.values())):
            same = {m: s for m, s in plan.items() if ranks[m] == r}
            wrap_sites(model, same, r, alpha, dropout, bool(rslora), dora)
    layers = lora_layers(model)
    with torch.no_grad():
        for key, parts in groups.items():
            site = by_name[key]
            layer = layers[site.module]
            name = site.slice if site.slice is not None else layer.names[0]
            layer.lora_A[name].copy_(parts["A"])
            layer.lora_B[name].copy_(parts["B"])
            if dora:
                layer.lora_magnitude[name].copy_(parts["m"])
    freeze_base(model)
    return [m for m in layers if m in plan]  # model order


def _read(directory: Path) -> tuple[dict, dict[str, dict[str, Tensor]]]:
    """The config and the tensors grouped by layer name: {name: {"A": .., "B": .., "m": ..}}."""
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"no {name} in {directory}; an adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME}"
            )
    config = json.loads((directory / CONFIG_NAME).read_text())
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{directory} holds a {config.get('peft_type')!r} adapter; load_adapter reads LORA")
    unsupported = {
        "alpha_pattern": config.get("alpha_pattern") or {},
        "modules_to_save": config.get("modules_to_save"),
        "bias": None if config.get("bias", "none") == "none" else config["bias"],
        "lora_bias": config.get("lora_bias") or None,
    }
    used = {k: v for k, v in unsupported.items() if v}
    if used:
        raise ValueError(
            f"{directory}: adapter options {used} are not supported (plain LoRA/DoRA matrices only)"
        )
    from safetensors.torch import load_file

    groups: dict[str, dict[str, Tensor]] = {}
    for key, t in load_file(directory / WEIGHTS_NAME).items():
        name = key.removeprefix(PREFIX)
        suffix = next((s for s in SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            raise ValueError(f"{directory}: tensor {key} is not a LoRA A/B matrix or DoRA magnitude")
        groups.setdefault(name.removesuffix(suffix), {})[SUFFIXES[suffix]] = t
    return config, groups


def _check_shapes(model: nn.Module, key: str, site: Site, parts: dict, dora: bool) -> int:
    """The rank of one layer's adapter; ValueError naming the layer when a tensor does not fit it."""
    ours = site.module + (f" slice {site.slice}" if site.slice else "")
    where = key if key == site.module else f"{key} (our {ours})"
    need = {"A", "B"} | ({"m"} if dora else set())
    if set(parts) != need:
        raise ValueError(f"{where}: the adapter has tensors {sorted(parts)}, expected {sorted(need)}")
    n_in, n_out = layer_features(model.get_submodule(site.module))
    if site.slice is not None:
        n_out = site.splits[QKV.index(site.slice)]
    r = parts["A"].shape[0]
    want = {"A": (r, n_in), "B": (n_out, r), "m": (n_out,)}
    got = {k: tuple(t.shape) for k, t in parts.items()}
    if any(got[k] != want[k] for k in got):
        raise ValueError(
            f"{where}: the adapter's shapes {got} do not fit this layer ({n_in} -> {n_out} features, "
            f"expected { ({k: want[k] for k in got}) }); it was trained on a different base model"
        )
    return r


def _check_existing(existing: dict[str, LoRALinear], plan, ranks, settings) -> None:
    """A model that already has adapters must have exactly the file's layers, slices and settings."""
    if set(existing) != set(plan):
        raise ValueError(
            f"the model's LoRA layers {sorted(existing)} differ from the adapter's {sorted(plan)}; "
            "load into the plain base model instead"
        )
    for module, sites in plan.items():
        layer = existing[module]
        slices = sorted(s.slice or layer.names[0] for s in sites)
        have = (layer.r, sorted(layer.adapted()), layer.alpha, _dropout(layer), layer.rslora)
        want = (ranks[module], slices, float(settings[0]), settings[1], settings[2])
        if have != want or isinstance(layer, DoRALinear) != settings[3] or layer.merged:
            raise ValueError(
                f"{module}: its adapter (r, slices, alpha, dropout, rslora) = {have}"
                f"{' merged' if layer.merged else ''} differs from the file's {want} (DoRA: {settings[3]})"
            )


def _settings(layer: LoRALinear) -> tuple:
    return layer.r, layer.alpha, _dropout(layer), layer.rslora, isinstance(layer, DoRALinear)


def _dropout(layer: LoRALinear) -> float:
    return getattr(layer.lora_dropout, "p", 0.0)


def _target_modules(saved: list[str], every: list[str]) -> list[str]:
    """peft's target_modules: a last name ("q_proj") where all layers of it are saved, else full names."""
    leaf = lambda n: n.rpartition(".")[2]  # noqa: E731
    out = []
    for name in saved:
        short = leaf(name)
        if all(n in saved for n in every if leaf(n) == short):
            name = short
        if name not in out:
            out.append(name)
    return sorted(out)
