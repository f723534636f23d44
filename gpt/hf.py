"""Hugging Face <-> gpt.GPT weight conversion: GPT-2 and Llama, both directions, every shape asserted.

Teaches that a "model architecture" is a naming convention for a handful of matrices. GPT-2 stores its
Linear layers as ``Conv1D`` with transposed weights (in, out) and fuses Q/K/V into ``c_attn``; Llama keeps
``q_proj/k_proj/v_proj`` apart (fewer K/V rows under GQA) and a gated MLP as ``gate_proj/up_proj``. Our
GPT fuses Q/K/V into one matrix, so conversion is concatenation, transposition and
renaming, nothing else. HF Llama's RoPE is the rotate_half layout we use, so no row permutation is needed
here (``gpt.positions.interleaved_to_half_permutation`` is what a Meta-layout checkpoint would need).

``transformers`` is imported only inside these functions (house rule: reference libraries stay out of
the library's import path). References: nanoGPT ``model.py`` ``from_pretrained``; HF
``models/gpt2/modeling_gpt2.py``, ``models/llama/modeling_llama.py``.
"""

import torch
from torch import Tensor

from gpt.feedforward import HF_ACTIVATIONS
from gpt.model import GPT, GPTConfig
from gpt.state_dict import load_checked

SUPPORTED = ("gpt2", "llama")
OVERRIDABLE = ("dropout", "attn_impl")


def _require(condition: bool, message: str):
    if not condition:
        raise ValueError(message)


def config_from_hf(hf_config, **overrides) -> GPTConfig:
    """GPTConfig equivalent to a GPT2Config or LlamaConfig; unsupported options raise ValueError."""
    kind = getattr(hf_config, "model_type", type(hf_config).__name__)
    if kind == "gpt2":
        act = hf_config.activation_function
        _require(act in HF_ACTIVATIONS, f"GPT-2 activation_function={act!r} is not supported")
        _require(hf_config.scale_attn_weights, "GPT-2 with scale_attn_weights=False is not supported")
        _require(
            not hf_config.scale_attn_by_inverse_layer_idx,
            "GPT-2 with scale_attn_by_inverse_layer_idx=True is not supported",
        )
        _require(
            not getattr(hf_config, "add_cross_attention", False), "GPT-2 cross-attention is not supported"
        )
        kw = dict(
            vocab_size=hf_config.vocab_size,
            block_size=hf_config.n_positions,
            n_layer=hf_config.n_layer,
            n_head=hf_config.n_head,
            n_embd=hf_config.n_embd,
            ffn_hidden=hf_config.n_inner,
            activation=HF_ACTIVATIONS[act],
            norm="layernorm",
            norm_eps=hf_config.layer_norm_epsilon,
            pos="learned",
            bias=True,
            tie_embeddings=hf_config.tie_word_embeddings,
        )
    elif kind == "llama":
        rope = getattr(hf_config, "rope_parameters", None) or {}
        rope_type = rope.get("rope_type", "default")
        _require(rope_type == "default", f"Llama rope_type={rope_type!r} (RoPE scaling) is not supported")
        theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
        head_dim = (
            getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
        )
        _require(
            head_dim * hf_config.num_attention_heads == hf_config.hidden_size,
            f"Llama head_dim={head_dim} != hidden_size/num_attention_heads is not supported",
        )
        _require(
            hf_config.hidden_act == "silu", f"Llama hidden_act={hf_config.hidden_act!r} is not supported"
        )
        _require(
            not hf_config.attention_bias and not hf_config.mlp_bias, "Llama with biases is not supported"
        )
        kw = dict(
            vocab_size=hf_config.vocab_size,
            block_size=hf_config.max_position_embeddings,
            n_layer=hf_config.num_hidden_layers,
            n_head=hf_config.num_attention_heads,
            n_embd=hf_config.hidden_size,
            n_kv_head=hf_config.num_key_value_heads or hf_config.num_attention_heads,
            ffn_hidden=hf_config.intermediate_size,
            activation="swiglu",
            norm="rmsnorm",
            norm_eps=hf_config.rms_norm_eps,
            pos="rope",
            rope_theta=float(theta),
            bias=False,
            tie_embeddings=hf_config.tie_word_embeddings,
        )
    else:
        raise ValueError(f"unknown HF architecture {kind!r}: from_hf supports {SUPPORTED}")
    bad = sorted(set(overrides) - set(OVERRIDABLE))
    _require(
        not bad, f"from_hf can override only {OVERRIDABLE} (the rest is fixed by the weights), got {bad}"
    )
    return GPTConfig(**{**kw, **overrides})


# One key table per flavour, read in both directions: (our name, HF name, how). ``how`` is "copy";
# "t" for GPT-2's Conv1D weights, stored (in, out); or "qkv" for Llama's q_proj/k_proj/v_proj, which are
# the row blocks of our fused c_attn (the HF name then holds "{}" for q, k, v).
GPT2_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
LLAMA_LAYER = {
    "ln_1.weight": "input_layernorm.weight",
    "ln_2.weight": "post_attention_layernorm.weight",
    "attn.c_attn.weight": "self_attn.{}_proj.weight",
    "attn.c_proj.weight": "self_attn.o_proj.weight",
    "mlp.c_gate.weight": "mlp.gate_proj.weight",
    "mlp.c_fc.weight": "mlp.up_proj.weight",
    "mlp.c_proj.weight": "mlp.down_proj.weight",
}


def key_table(cfg: GPTConfig, kind: str) -> list[tuple[str, str, str]]:
    """Every parameter as (our name, HF name, how); the head only when it is not tied."""
    rows = []
    if kind == "gpt2":
        rows += [
            ("wte.weight", "transformer.wte.weight", "copy"),
            ("wpe.weight", "transformer.wpe.weight", "copy"),
        ]
        for i in range(cfg.n_layer):
            for name in ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias"):
                rows.append((f"h.{i}.{name}", f"transformer.h.{i}.{name}", "copy"))
            for name in GPT2_CONV1D:
                rows.append((f"h.{i}.{name}.weight", f"transformer.h.{i}.{name}.weight", "t"))
                rows.append((f"h.{i}.{name}.bias", f"transformer.h.{i}.{name}.bias", "copy"))
        rows += [
            ("ln_f.weight", "transformer.ln_f.weight", "copy"),
            ("ln_f.bias", "transformer.ln_f.bias", "copy"),
        ]
    else:
        rows.append(("wte.weight", "model.embed_tokens.weight", "copy"))
        for i in range(cfg.n_layer):
            for ours, theirs in LLAMA_LAYER.items():
                how = "qkv" if "{}" in theirs else "copy"
                rows.append((f"h.{i}.{ours}", f"model.layers.{i}.{theirs}", how))
        rows.append(("ln_f.weight", "model.norm.weight", "copy"))
    if not cfg.tie_embeddings:
        rows.append(("lm_head.weight", "lm_head.weight", "copy"))
    return rows


def _hf_to_ours(sd: dict[str, Tensor], cfg: GPTConfig, kind: str) -> dict[str, Tensor]:
    """Rename (and fuse / transpose) an HF state dict into our parameter names."""
    out = {}
    for ours, theirs, how in key_table(cfg, kind):
        if how == "qkv":
            out[ours] = torch.cat([sd[theirs.format(x)] for x in "qkv"], dim=0)  # rows: q, then k, then v
        else:
            out[ours] = sd[theirs].t() if how == "t" else sd[theirs]
    return out


def _ours_to_hf(ours: dict[str, Tensor], cfg: GPTConfig, kind: str) -> dict[str, Tensor]:
    """The inverse of :func:`_hf_to_ours`, plus ``lm_head.weight``, which HF lists even when tied."""
    sd = {}
    kv = cfg.n_kv_head * cfg.head_dim
    for name, theirs, how in key_table(cfg, kind):
        if how == "qkv":
            for x, block in zip("qkv", ours[name].split([cfg.n_embd, kv, kv], dim=0), strict=True):
                sd[theirs.format(x)] = block
        else:
            sd[theirs] = ours[name].t().contiguous() if how == "t" else ours[name]
    sd["lm_head.weight"] = ours["lm_head.weight"]  # equals the embedding when tied
    return sd


def from_hf(hf_model, **overrides) -> GPT:
    """A GPT with the weights of ``hf_model`` (GPT2LMHeadModel or LlamaForCausalLM), on its device/dtype."""
    kind = getattr(getattr(hf_model, "config", None), "model_type", type(hf_model).__name__)
    if kind not in SUPPORTED:
        raise ValueError(
            f"unknown HF architecture {kind!r} ({type(hf_model).__name__}); supported: {SUPPORTED}"
        )
    if not hasattr(hf_model, "lm_head"):
        raise ValueError(
            f"{type(hf_model).__name__} has no language-model head; pass GPT2LMHeadModel or LlamaForCausalLM "
            "(e.g. transformers.AutoModelForCausalLM.from_pretrained(...))"
        )
    cfg = config_from_hf(hf_model.config, **overrides)
    sd = hf_model.state_dict()
    ref = next(iter(sd.values()))
    with torch.device("meta"):  # no random init: every parameter is overwritten below
        model = GPT(cfg)
    model = model.to_empty(device=ref.device).to(ref.dtype)  # these flavours have no buffers to rebuild
    if cfg.tie_embeddings:  # to_empty() makes new Parameters and loses the tie: restore it
        model.lm_head.weight = model.wte.weight
        assert model.lm_head.weight is model.wte.weight, "tied head must share the embedding Parameter"
    try:
        ours = _hf_to_ours(sd, cfg, kind)
    except KeyError as err:
        raise ValueError(f"HF state dict has no key {err.args[0]!r} that a {kind} checkpoint needs") from None
    load_checked(model, ours)
    return model.eval()


def from_pretrained(name_or_path: str, **overrides) -> GPT:
    """Download (or read from a local folder) an HF causal LM and convert it: ``from_pretrained("gpt2")``."""
    import transformers

    hf_model = transformers.AutoModelForCausalLM.from_pretrained(name_or_path)
    return from_hf(hf_model, **overrides)


def hf_flavour(cfg: GPTConfig) -> str:
    """ "gpt2" or "llama": the transformers family ``cfg`` converts to; ValueError naming the mismatch."""
    gpt2 = dict(pos="learned", norm="layernorm", bias=True, n_kv_head=cfg.n_head)
    llama = dict(pos="rope", norm="rmsnorm", activation="swiglu", bias=False)
    if all(getattr(cfg, k) == v for k, v in gpt2.items()) and cfg.activation in HF_ACTIVATIONS.values():
        return "gpt2"
    if all(getattr(cfg, k) == v for k, v in llama.items()):
        return "llama"
    raise ValueError(
        f"to_hf needs a GPT-2 flavour {gpt2} (activation gelu_tanh/gelu/relu) or a Llama flavour {llama}; "
        f"this config has pos={cfg.pos!r}, norm={cfg.norm!r}, activation={cfg.activation!r}, "
        f"bias={cfg.bias}, n_kv_head={cfg.n_kv_head}"
    )


def to_hf(model: GPT):
    """The ``transformers`` model (GPT2LMHeadModel or LlamaForCausalLM) equal to ``model``, weights copied."""
    import transformers

    cfg = model.config
    kind = hf_flavour(cfg)
    ours = {k: v.detach() for k, v in model.state_dict().items()}
    if kind == "gpt2":
        act = {v: k for k, v in HF_ACTIVATIONS.items() if k != "gelu_pytorch_tanh"}[cfg.activation]
        hf_config = transformers.GPT2Config(
            vocab_size=cfg.vocab_size,
            n_positions=cfg.block_size,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_inner=cfg.ffn_hidden,
            activation_function=act,
            layer_norm_epsilon=cfg.norm_eps,
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            tie_word_embeddings=cfg.tie_embeddings,
        )
        hf_cls = transformers.GPT2LMHeadModel
    else:
        hf_config = transformers.LlamaConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.n_embd,
            intermediate_size=cfg.ffn_hidden,
            num_hidden_layers=cfg.n_layer,
            num_attention_heads=cfg.n_head,
            num_key_value_heads=cfg.n_kv_head,
            max_position_embeddings=cfg.block_size,
            rms_norm_eps=cfg.norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
            attention_dropout=cfg.dropout,
            tie_word_embeddings=cfg.tie_embeddings,
        )
        hf_cls = transformers.LlamaForCausalLM
    sd = _ours_to_hf(ours, cfg, kind)
    hf_model = hf_cls(hf_config).to(ours["wte.weight"].device, ours["wte.weight"].dtype)
    hf_sd = hf_model.state_dict()
    missing = sorted(set(hf_sd) - set(sd))
    assert not missing, f"to_hf produced no tensor for HF keys {missing}"
    for key, t in sd.items():
        assert key in hf_sd, f"to_hf produced {key!r}, which {hf_cls.__name__} does not have"
        assert hf_sd[key].shape == t.shape, f"{key}: ours {tuple(t.shape)} vs HF {tuple(hf_sd[key].shape)}"
    hf_model.load_state_dict(sd, strict=True)
    return hf_model.eval()
