"""A GGUF file -> our ``gpt.GPT`` and its tokenizer: a real pretrained model (SmolLM2) in our own code.

A GGUF file is a whole model: metadata that says what the architecture is (``llama.block_count``,
``llama.attention.head_count_kv``, ``llama.rope.freq_base``, ...), the tokenizer (``tokenizer.*``, read
by ``quant.tokenizer``) and the weights, each tensor in its own ggml block format (``quant.ggml_blocks``).
Loading it is three steps: a :class:`gpt.GPTConfig` from the metadata, every tensor dequantized to float
and renamed into ours by one key table (:func:`gguf_key_table`, read in the other direction by
``quant.export``), and one fix of layout: llama.cpp's converter reorders the rows of ``attn_q`` and
``attn_k`` within each head so that RoPE rotates *adjacent* channel pairs (ggml's rope), where our GPT
(like Hugging Face) rotates channel ``i`` with ``i + head_dim/2``; :func:`gguf_to_half_rows` undoes it
with ``gpt.positions.interleaved_to_half_permutation``.

Reference: llama.cpp ``convert_hf_to_gguf.py`` (``LlamaModel.permute``) and ``gguf-py/gguf/constants.py``
(tensor names); transformers' GGUF loader (``integrations/ggml.py``, ``modeling_gguf_pytorch_utils.py``),
which ``tests/test_quant_load.py`` checks our logits and greedy tokens against.
"""

from pathlib import Path

import torch
from torch import Tensor

from gpt import GPT, GPTConfig
from gpt.data.paths import dataset_path
from gpt.positions import interleaved_to_half_permutation
from gpt.state_dict import load_checked
from quant.gguf import GGUFFile, read_gguf
from quant.tokenizer import tokenizer_from_gguf

SMOLLM2 = ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")  # under $LLM_COURSE_DATA
ARCHITECTURES = ("llama",)  # general.architecture values we can build

# Our per-layer names -> GGUF's ("blk.{i}." in front). "{}" stands for q, k, v: our fused c_attn holds
# their three matrices as row blocks.
GGUF_LAYER = {
    "ln_1.weight": "attn_norm.weight",
    "attn.c_attn.weight": "attn_{}.weight",
    "attn.c_proj.weight": "attn_output.weight",
    "ln_2.weight": "ffn_norm.weight",
    "mlp.c_gate.weight": "ffn_gate.weight",
    "mlp.c_fc.weight": "ffn_up.weight",
    "mlp.c_proj.weight": "ffn_down.weight",
}
GGUF_LAYER_NAMES = [n.format(x) for n in GGUF_LAYER.values() for x in ("qkv" if "{}" in n else "-")]


def smollm2_path() -> Path:
    """The shipped SmolLM2-135M-Instruct GGUF, found through ``LLM_COURSE_DATA`` like every dataset."""
    return dataset_path(*SMOLLM2)


def gguf_key_table(config: GPTConfig) -> list[tuple[str, str]]:
    """Every parameter of a Llama-flavour GPT as (our name, GGUF name); ``output.weight`` only untied."""
    rows = [("wte.weight", "token_embd.weight")]
    for i in range(config.n_layer):
        rows += [(f"h.{i}.{ours}", f"blk.{i}.{theirs}") for ours, theirs in GGUF_LAYER.items()]
    rows.append(("ln_f.weight", "output_norm.weight"))
    if not config.tie_embeddings:
        rows.append(("lm_head.weight", "output.weight"))
    return rows


def config_from_gguf(gguf: GGUFFile, n_layer: int | None = None) -> GPTConfig:
    """The GPTConfig a GGUF's metadata describes; ``n_layer`` keeps only the first layers (smoke runs)."""
    meta = gguf.metadata
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"{gguf.path}: general.architecture = {arch!r} is not supported; we build {ARCHITECTURES}"
        )

    def get(key):
        if f"{arch}.{key}" not in meta:
            raise ValueError(f"{gguf.path}: metadata has no {arch}.{key!r}, which a {arch} model needs")
        return meta[f"{arch}.{key}"]

    if "token_embd.weight" not in gguf.tensors:
        raise ValueError(f"{gguf.path}: no tensor 'token_embd.weight' (the token embedding)")
    n_embd, n_head = int(get("embedding_length")), int(get("attention.head_count"))
    rope_dims = meta.get(f"{arch}.rope.dimension_count", n_embd // n_head)
    if rope_dims != n_embd // n_head:
        raise ValueError(
            f"{gguf.path}: partial RoPE ({rope_dims} of {n_embd // n_head} dims) is not supported"
        )
    total = int(get("block_count"))
    if n_layer is not None and not 1 <= n_layer <= total:
        raise ValueError(f"n_layer={n_layer} must be in 1..{total} (the file's {arch}.block_count)")
    return GPTConfig.llama(
        vocab_size=gguf.tensors["token_embd.weight"].shape[0],
        block_size=int(get("context_length")),
        n_layer=total if n_layer is None else n_layer,
        n_head=n_head,
        n_kv_head=int(meta.get(f"{arch}.attention.head_count_kv", n_head)),
        n_embd=n_embd,
        ffn_hidden=int(get("feed_forward_length")),
        norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        tie_embeddings="output.weight" not in gguf.tensors,
    )


def gguf_to_half_rows(w: Tensor, n_head: int) -> Tensor:
    """Undo llama.cpp's per-head row order of ``attn_q``/``attn_k``: (n_head * hs, C) -> rotate_half rows."""
    hs = w.size(0) // n_head
    perm = interleaved_to_half_permutation(hs)
    return w.view(n_head, hs, -1)[:, perm].reshape(w.shape)  # (nh, hs, C) rows reordered per head


def expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """GGUF tensor name -> the (numpy-order) shape the config implies."""
    C, kv, F = config.n_embd, config.n_kv_head * config.head_dim, config.ffn_hidden
    layer = {  # one entry per GGUF_LAYER_NAMES
        "attn_norm.weight": (C,),
        "attn_q.weight": (C, C),
        "attn_k.weight": (kv, C),
        "attn_v.weight": (kv, C),
        "attn_output.weight": (C, C),
        "ffn_norm.weight": (C,),
        "ffn_gate.weight": (F, C),
        "ffn_up.weight": (F, C),
        "ffn_down.weight": (C, F),
    }
    shapes = {"token_embd.weight": (config.vocab_size, C), "output_norm.weight": (C,)}
    if not config.tie_embeddings:
        shapes["output.weight"] = (config.vocab_size, C)
    for i in range(config.n_layer):
        shapes |= {f"blk.{i}.{name}": shape for name, shape in layer.items()}
    return shapes


def check_tensors(gguf: GGUFFile, config: GPTConfig) -> None:
    """Every tensor the config needs is there with its shape, and the file has nothing we would drop
    (the layers past ``config.n_layer`` of a sliced load aside)."""
    expected = expected_shapes(config)
    for name, shape in expected.items():
        if name not in gguf.tensors:
            raise ValueError(f"{gguf.path}: tensor {name!r} is missing")
        if gguf.tensors[name].shape != shape:
            raise ValueError(
                f"{gguf.path}: tensor {name!r} has shape {gguf.tensors[name].shape}, but the metadata "
                f"implies {shape}"
            )
    layer_names = set(GGUF_LAYER_NAMES)

    def sliced_off(name: str) -> bool:  # blk.{i}.<a layer tensor> with i >= n_layer
        _, i, rest = name.split(".", 2) if name.startswith("blk.") and name.count(".") >= 2 else ("", "", "")
        return i.isdigit() and int(i) >= config.n_layer and rest in layer_names

    unknown = [n for n in gguf.tensors if n not in expected and not sliced_off(n)]
    if unknown:
        raise ValueError(f"{gguf.path}: tensors we do not know how to use: {unknown[:5]}")


def load_gguf(path=None, dtype: torch.dtype = torch.float32, n_layer: int | None = None, device="cpu"):
    """``(GPT, tokenizer)`` from a GGUF file (default: the shipped SmolLM2-135M-Instruct).

    Weights are dequantized to float32 and cast to ``dtype``. ``n_layer`` loads only the first layers of
    the real file (a smaller, faster model for smoke runs; its outputs are not the model's).
    """
    gguf = read_gguf(smollm2_path() if path is None else path)
    config = config_from_gguf(gguf, n_layer)
    check_tensors(gguf, config)
    tokenizer = tokenizer_from_gguf(gguf.metadata)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} ids, the embedding {config.vocab_size} rows"
        )

    def tensor(name: str) -> Tensor:
        return torch.from_numpy(gguf.tensor(name))

    state = {}
    for ours, theirs in gguf_key_table(config):
        if "{}" in theirs:
            q, k, v = (tensor(theirs.format(x)) for x in "qkv")
            q, k = gguf_to_half_rows(q, config.n_head), gguf_to_half_rows(k, config.n_kv_head)
            state[ours] = torch.cat([q, k, v], dim=0)  # rows: q, then k, then v
        else:
            state[ours] = tensor(theirs)
    with torch.device("meta"):  # no random init: every parameter is overwritten
        model = GPT(config)
    model = model.to_empty(device=device)
    if config.tie_embeddings:  # to_empty() makes new Parameters and loses the tie: restore it
        model.lm_head.weight = model.wte.weight
    load_checked(model, state)
    return model.to(dtype).eval(), tokenizer
