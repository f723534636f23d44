"""Hugging Face T5 -> gpt.encoders.t5.T5: config mapping and weight renaming, every key and shape checked.

T5's checkpoint layout: ``shared`` (one embedding for both stacks), per block a list of sub-layers
``layer.0`` (self-attention), ``layer.1`` (cross-attention, decoder only) and the last one (FFN: ``wi`` or
gated ``wi_0``/``wi_1``, then ``wo``), each with its own ``layer_norm``; the relative-position table lives
only in block 0 of each stack. ``transformers`` is never imported here: the caller passes the model.

Reference: HF ``models/t5/modeling_t5.py`` and ``configuration_t5.py``.
"""

from torch import Tensor

from gpt.encoders.t5 import T5, T5Config
from gpt.state_dict import load_checked

HF_FFN = {"relu": "relu", "gated-gelu": "geglu"}
OVERRIDABLE = ("dropout", "attn_impl")


def config_from_hf(hf_config, tied: bool, **overrides) -> T5Config:
    """T5Config equivalent to a ``transformers.T5Config``; options we do not model raise ValueError."""
    kind = getattr(hf_config, "model_type", type(hf_config).__name__)
    if kind != "t5":
        raise ValueError(f"expected a T5 config (model_type 't5'), got {kind!r}")
    ffn = hf_config.feed_forward_proj
    if ffn not in HF_FFN:
        raise ValueError(f"feed_forward_proj={ffn!r} is not supported; use one of {list(HF_FFN)}")
    bad = sorted(set(overrides) - set(OVERRIDABLE))
    if bad:
        raise ValueError(
            f"from_hf can override only {OVERRIDABLE} (the rest is fixed by the weights), got {bad}"
        )
    scale = getattr(hf_config, "scale_decoder_outputs", hf_config.tie_word_embeddings)
    start = getattr(hf_config, "decoder_start_token_id", None)
    kw = dict(
        vocab_size=hf_config.vocab_size,
        n_embd=hf_config.d_model,
        n_head=hf_config.num_heads,
        head_dim=hf_config.d_kv,
        ffn_hidden=hf_config.d_ff,
        n_layer=hf_config.num_layers,
        n_decoder_layer=hf_config.num_decoder_layers,
        num_buckets=hf_config.relative_attention_num_buckets,
        max_distance=hf_config.relative_attention_max_distance,
        activation=HF_FFN[ffn],
        norm_eps=hf_config.layer_norm_epsilon,
        dropout=hf_config.dropout_rate,
        tie_embeddings=tied,
        scale_logits=bool(scale),
        pad_id=hf_config.pad_token_id,
        eos_id=hf_config.eos_token_id,
        decoder_start_id=hf_config.pad_token_id if start is None else start,
    )
    return T5Config(**{**kw, **overrides})


def hf_state_dict_to_ours(sd: dict[str, Tensor], config: T5Config) -> dict[str, Tensor]:
    def get(key: str) -> Tensor:
        if key not in sd:
            raise ValueError(
                f"HF state dict has no {key!r}, which the config (n_layer={config.n_layer}, "
                f"n_decoder_layer={config.n_decoder_layer}, activation={config.activation!r}) needs: "
                "the model's config does not match its weights"
            )
        return sd[key]

    ffn = {"relu": {"c_fc": "wi"}, "geglu": {"c_gate": "wi_0", "c_fc": "wi_1"}}[config.activation]
    ffn = {**ffn, "c_proj": "wo"}
    out = {"shared.weight": get("shared.weight")}
    for stack, n, ours in (("encoder", config.n_layer, "enc"), ("decoder", config.n_decoder_layer, "dec")):
        out[f"{ours}_pos.table.weight"] = get(
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        )
        out[f"{ours}_ln.weight"] = get(f"{stack}.final_layer_norm.weight")
        for i in range(n):
            p, q = f"{stack}.block.{i}.layer.", f"{stack}.{i}."
            subs = [("attn", "0.SelfAttention", "ln_1")]
            if stack == "decoder":
                subs.append(("cross", "1.EncDecAttention", "ln_cross"))
            for mine, theirs, norm in subs:
                for x in "qkvo":
                    out[f"{q}{mine}.{x}.weight"] = get(f"{p}{theirs}.{x}.weight")
                out[f"{q}{norm}.weight"] = get(f"{p}{theirs[0]}.layer_norm.weight")
            last = len(subs)
            for mine, theirs in ffn.items():
                out[f"{q}mlp.{mine}.weight"] = get(f"{p}{last}.DenseReluDense.{theirs}.weight")
            out[f"{q}ln_2.weight"] = get(f"{p}{last}.layer_norm.weight")
    if not config.tie_embeddings:
        out["lm_head.weight"] = get("lm_head.weight")
    return out


def from_hf(hf_model, **overrides) -> T5:
    """A T5 with the weights of ``hf_model`` (a T5ForConditionalGeneration), in eval mode."""
    if type(hf_model).__name__ != "T5ForConditionalGeneration":
        raise ValueError(f"from_hf expects a T5ForConditionalGeneration, got {type(hf_model).__name__}")
    tied = hf_model.lm_head.weight.data_ptr() == hf_model.shared.weight.data_ptr()
    config = config_from_hf(hf_model.config, tied, **overrides)
    model = T5(config)
    load_checked(model, hf_state_dict_to_ours(hf_model.state_dict(), config))
    return model.eval()
