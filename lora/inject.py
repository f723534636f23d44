"""Putting LoRA into a model by module name, and the model-wide operations on it.

Teaches that "which layers get an adapter" is a list of names. :func:`inject_lora` swaps each matching
linear layer for a :class:`~lora.lora_linear.LoRALinear` (or :class:`~lora.dora.DoRALinear`) around it
and freezes everything else, so an optimizer over ``requires_grad`` parameters trains only the adapters.

Targets are matched as peft matches ``LoraConfig.target_modules``: a list of names, each equal to a
module's full name or to its last dotted parts ("c_attn" matches "h.0.attn.c_attn"); a glob
("h.0.*") also works. A single string is a regular expression over full names, and "all-linear"
means every linear layer except the output head. For a GPT that converts to transformers (``gpt.to_hf``)
every layer also answers to its peft / HF name: "q_proj", "k_proj" and "v_proj" are the three output
slices of our fused ``attn.c_attn``, "o_proj" is ``attn.c_proj``, "gate_proj", "up_proj" and
"down_proj" are ``mlp.c_gate``, ``mlp.c_fc`` and ``mlp.c_proj``, so a peft config's ``target_modules``
works unchanged. A tied output head is never a target: merging into it would change the embedding.

Reference: peft ``src/peft/tuners/tuners_utils.py`` (``check_target_module_exists``,
``inject_adapter``) and ``src/peft/tuners/lora/model.py``.
"""

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from gpt.hf import hf_flavour as config_flavour
from gpt.hf import key_table
from gpt.model import GPT
from lora.dora import DoRALinear
from lora.lora_linear import LoRALinear, layer_features

QKV = ("q", "k", "v")  # the output slices of our fused attn.c_attn, in row order


@dataclass(frozen=True)
class Site:
    """One place an adapter can go: a linear module of ours, or one output slice of a fused one."""

    module: str  # our module name, "h.0.attn.c_attn"
    slice: str | None = None  # "q", "k" or "v" for a slice of c_attn; None for the whole module
    hf: str | None = None  # the peft / transformers module name, "model.layers.0.self_attn.q_proj"
    splits: tuple[int, ...] | None = None  # the fused module's output sizes, one per slice


def lora_sites(model: nn.Module) -> list[Site]:
    """Every site of ``model`` that can take an adapter, with its HF name where the model has one."""
    sites, covered = [], set()
    tied = tied_weight_ids(model)
    kind = hf_flavour(model)
    if kind is not None:
        cfg = model.config
        kv = cfg.n_kv_head * cfg.head_dim
        for ours, theirs, how in key_table(cfg, kind):
            module, hf = ours.removesuffix(".weight"), theirs.removesuffix(".weight")
            if not ours.endswith(".weight") or not _is_linear(model.get_submodule(module)):
                continue
            covered.add(module)
            if how == "qkv":  # Llama's q_proj/k_proj/v_proj are the row blocks of our c_attn
                splits = (cfg.n_embd, kv, kv)
                sites += [Site(module, x, hf.format(x), splits) for x in QKV]
            else:
                sites.append(Site(module, None, hf))
    inside = ()  # the base inside a LoRA layer is not a site of its own
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            inside += (name + ".",)
        if name in covered or not name or name.startswith(inside) or not _is_linear(m):
            continue
        if id(getattr(m, "weight", None)) in tied:
            continue
        sites.append(Site(name))
    return sites


def hf_flavour(model: nn.Module) -> str | None:
    """ "gpt2" or "llama" for a GPT that ``gpt.to_hf`` converts, None for any other model."""
    if not isinstance(model, GPT):
        return None
    try:
        return config_flavour(model.config)
    except ValueError:  # a GPT that transformers has no class for (ALiBi, ...): our names only
        return None


def select_sites(sites: list[Site], targets: str | Sequence[str]) -> list[Site]:
    """The sites ``targets`` names (peft's rules, module docstring); ValueError for a name matching none."""

    def names(s: Site) -> list[str]:
        return [s.module] + ([s.hf] if s.hf else [])

    if isinstance(targets, str):
        if targets == "all-linear":
            hits = [s for s in sites if not s.module.endswith("lm_head")]
        else:
            hits = [s for s in sites if any(re.fullmatch(targets, n) for n in names(s))]
        if not hits:
            raise ValueError(f"target pattern {targets!r} matches no layer; available: {describe(sites)}")
        return hits
    if not targets or not all(isinstance(t, str) for t in targets):
        raise TypeError(f"targets must be a string or a non-empty list of module names, got {targets!r}")
    hits = []
    for pattern in targets:
        found = [s for s in sites if any(name_matches(pattern, n) for n in names(s))]
        if not found:
            raise ValueError(f"target {pattern!r} matches no layer; available: {describe(sites)}")
        hits += [s for s in found if s not in hits]
    return [s for s in sites if s in hits]  # model order


def describe(sites: list[Site]) -> str:
    """Site names with layer numbers folded into {i}: 'h.{i}.attn.c_attn (q_proj ...), ...'."""
    fold = lambda n: re.sub(r"\.\d+\.", ".{i}.", n)  # noqa: E731
    ours = list(dict.fromkeys(fold(s.module) for s in sites))
    hf = list(dict.fromkeys(fold(s.hf) for s in sites if s.hf))
    layers = sorted({int(m) for s in sites for m in re.findall(r"\.(\d+)\.", s.module)})
    text = f"our names {ours}"
    if hf:
        text += f"; peft/HF names {hf}"
    if layers:
        text += f"; i in {layers[0]}..{layers[-1]}"
    return text


def inject_lora(
    model: nn.Module,
    targets: str | Sequence[str],
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    rslora: bool = False,
    dora: bool = False,
) -> list[str]:
    """Wrap every target layer in a LoRA (DoRA with ``dora=True``) layer, in place; freeze all the rest.

    Returns our names of the wrapped modules. ValueError for a target matching nothing (listing the
    names there are), a layer already adapted, or a rank outside 1..min(in, out) of a layer.
    """
    chosen = select_sites(lora_sites(model), targets)
    plan: dict[str, list[Site]] = {}
    for s in chosen:
        plan.setdefault(s.module, []).append(s)
    return wrap_sites(model, plan, r, alpha, dropout, rslora, dora)


def wrap_sites(model, plan: dict[str, list[Site]], r, alpha, dropout, rslora, dora) -> list[str]:
    """Build every layer first (so a bad rank leaves the model untouched), then swap them in."""
    cls = DoRALinear if dora else LoRALinear
    layers = {}
    for module, sites in plan.items():
        base = model.get_submodule(module)
        if isinstance(base, LoRALinear):
            raise ValueError(f"{module} already has a LoRA adapter; merge_lora or build a fresh model first")
        fused = sites[0].splits
        kw = {}
        if fused is not None:
            slices = {s.slice for s in sites}
            kw = dict(splits=fused, adapt=[x in slices for x in QKV], names=QKV)
        try:
            layers[module] = cls(base, r, alpha, dropout, rslora, **kw)
        except (ValueError, TypeError) as err:
            hf = ", ".join(s.hf for s in sites if s.hf)
            raise type(err)(f"{module}{f' ({hf})' if hf else ''}: {err}") from None
    for module, layer in layers.items():
        parent, _, leaf = module.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, layer)
    freeze_base(model)
    return list(layers)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every LoRA layer of ``model`` by our module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def freeze_base(model: nn.Module) -> None:
    """requires_grad only on adapter parameters (A, B, DoRA's magnitude)."""
    model.requires_grad_(False)
    for layer in lora_layers(model).values():
        for p in layer.adapter_parameters():
            p.requires_grad_(True)


def merge_lora(model: nn.Module) -> list[str]:
    """Merge every LoRA layer into its base weight; ValueError naming any that is already merged."""
    return _set_merged(model, True)


def unmerge_lora(model: nn.Module) -> list[str]:
    """Undo :func:`merge_lora`; ValueError naming any layer that is not merged."""
    return _set_merged(model, False)


def _set_merged(model: nn.Module, merge: bool) -> list[str]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers; call inject_lora (or load_adapter) first")
    wrong = [n for n, m in layers.items() if m.merged == merge]
    if wrong:
        state = "already merged" if merge else "not merged"
        raise ValueError(f"LoRA layers {wrong} are {state}; {'unmerge' if merge else 'merge'} them first")
    for name, layer in layers.items():  # check every layer before changing any
        try:
            layer.mergeable_weight()
        except TypeError as err:
            raise TypeError(f"{name}: {err}") from None
    for layer in layers.values():
        if merge:
            layer.merge()
        else:
            layer.unmerge()
    return list(layers)


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the adapter tensors, by our parameter names ("h.0.attn.c_attn.lora_A.q", ...)."""
    keep = {id(p) for layer in lora_layers(model).values() for p in layer.adapter_parameters()}
    return {n: p.detach() for n, p in model.named_parameters() if id(p) in keep}


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters that require grad, all parameters), a tied matrix counted once."""
    params = list(model.parameters())  # deduplicated by nn.Module
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def name_matches(pattern: str, name: str) -> bool:
    """peft's rule: the full name, its last dotted parts ("c_attn" matches "h.0.attn.c_attn"), or a glob."""
    return name == pattern or name.endswith("." + pattern) or fnmatch.fnmatchcase(name, pattern)


def _is_linear(m: nn.Module) -> bool:
    try:
        layer_features(m)
    except TypeError:
        return False
    return not isinstance(m, nn.Embedding)


def tied_weight_ids(model: nn.Module) -> set[int]:
    """ids of parameters registered under more than one name (a tied head and embedding)."""
    seen, tied = set(), set()
    for _, p in model.named_parameters(remove_duplicate=False):
        (tied if id(p) in seen else seen).add(id(p))
    return tied
