"""Our GPT + its tokenizer -> a GGUF file that llama.cpp and transformers load: ``load_gguf`` run backwards.

The writer reuses every piece of the reader: the key table of ``quant.load`` (read from our side), the
block formats of ``quant.ggml_blocks`` (``quantize``), the tokenizer metadata of ``quant.tokenizer`` and
``quant.gguf_writer.write_gguf`` (atomic). What is new is the choice a quantizer makes per tensor: matrices
take the requested type, vectors (the RMSNorm gains) stay F32, as llama.cpp keeps them, since they are
tiny and every activation is multiplied by them, and in 4-bit exports the token embedding (which a tied
model also uses as its output layer) stays Q8_0, as in the shipped SmolLM2 file. The q/k rows go back to
llama.cpp's per-head order.

Reference: llama.cpp ``convert_hf_to_gguf.py`` (metadata keys, ``LlamaModel.permute``) and
``gguf-py/gguf/constants.py`` (``LlamaFileType``).
"""

import copy
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gpt import GPT
from gpt.positions import interleaved_to_half_permutation
from quant.ggml_blocks import GGMLType, dequantize, quantize
from quant.gguf import GGUFValueType
from quant.gguf_writer import write_gguf
from quant.load import gguf_key_table
from quant.tokenizer import gguf_tokenizer_metadata

EXPORT_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")
FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7}  # llama.cpp's LlamaFileType ids


def half_to_gguf_rows(w: Tensor, n_head: int) -> Tensor:
    """Our rotate_half rows of ``attn_q``/``attn_k`` -> llama.cpp's per-head order (the loader's inverse)."""
    hs = w.size(0) // n_head
    inverse = torch.argsort(interleaved_to_half_permutation(hs))
    return w.view(n_head, hs, -1)[:, inverse].reshape(w.shape)  # (nh, hs, C) rows reordered per head


def tensor_type(qtype: str, dims: int, embedding: bool) -> GGMLType:
    """The ggml type export writes a tensor in: vectors F32, the token embedding Q8_0 in 4-bit files,
    every other matrix ``qtype``."""
    if dims < 2:
        return GGMLType.F32
    return GGMLType.Q8_0 if embedding and qtype in ("Q4_0", "Q4_1") else GGMLType[qtype]


def ggml_round_trip(model: GPT, qtype: str) -> GPT:
    """A copy of ``model`` whose weights went through export's formats in memory: what ``load_gguf``
    returns for ``export_gguf(model, ..., qtype)``, without the file."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in twin.named_parameters():
            kind = tensor_type(qtype, p.dim(), embedding=name == "wte.weight")
            w = p.detach().float().cpu().numpy()
            p.copy_(torch.from_numpy(dequantize(quantize(w, kind), kind, w.shape)))
    return twin


def model_metadata(model: GPT, name: str) -> dict:
    """The ``general.*`` and ``llama.*`` keys that describe ``model``'s shape."""
    cfg = model.config
    return {
        "general.architecture": "llama",
        "general.name": name,
        "llama.block_count": cfg.n_layer,
        "llama.context_length": cfg.block_size,
        "llama.embedding_length": cfg.n_embd,
        "llama.feed_forward_length": cfg.ffn_hidden,
        "llama.attention.head_count": cfg.n_head,
        "llama.attention.head_count_kv": cfg.n_kv_head,
        "llama.rope.freq_base": float(cfg.rope_theta),
        "llama.rope.dimension_count": cfg.head_dim,
        "llama.attention.layer_norm_rms_epsilon": float(cfg.norm_eps),
        "llama.vocab_size": cfg.vocab_size,
    }


def check_exportable(model: GPT, qtype: str) -> None:
    if qtype not in EXPORT_TYPES:
        raise ValueError(f"qtype={qtype!r}; export writes one of {EXPORT_TYPES}")
    cfg = model.config
    llama = dict(pos="rope", norm="rmsnorm", activation="swiglu", bias=False)
    wrong = {k: getattr(cfg, k) for k, v in llama.items() if getattr(cfg, k) != v}
    if wrong:
        raise ValueError(f"GGUF 'llama' needs a Llama-flavour GPT {llama}; this config has {wrong}")


def export_gguf(model: GPT, tokenizer, path, qtype: str = "Q8_0", name: str = "llm-course export") -> Path:
    """Write ``model`` and ``tokenizer`` to ``path`` as GGUF v3; 2-D weights in ``qtype``, vectors in F32."""
    check_exportable(model, qtype)
    cfg = model.config
    ours = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    tensors = []
    for our_name, gguf_name in gguf_key_table(cfg):
        if "{}" in gguf_name:
            kv = cfg.n_kv_head * cfg.head_dim
            q, k, v = ours[our_name].split([cfg.n_embd, kv, kv], dim=0)
            parts = {"q": half_to_gguf_rows(q, cfg.n_head), "k": half_to_gguf_rows(k, cfg.n_kv_head), "v": v}
            tensors += [(gguf_name.format(x), parts[x]) for x in "qkv"]
        else:
            tensors.append((gguf_name, ours[our_name]))
    entries = []
    for tensor_name, t in tensors:
        ggml_type = tensor_type(qtype, t.dim(), embedding=tensor_name == "token_embd.weight")
        if t.dim() == 2 and t.size(1) % ggml_type.block_size:
            raise ValueError(
                f"{tensor_name}: rows of {t.size(1)} values do not split into {qtype} blocks of "
                f"{ggml_type.block_size}; export as F32 or F16"
            )
        entries.append((tensor_name, np.ascontiguousarray(t.numpy()), ggml_type))
    metadata = model_metadata(model, name)
    metadata["general.file_type"] = FILE_TYPES[qtype]
    metadata["general.quantization_version"] = 2
    metadata |= gguf_tokenizer_metadata(tokenizer)
    # llama.cpp reads counts and ids as uint32 and token types as int32 (the types of its own converter)
    types = {k: GGUFValueType.UINT32 for k, v in metadata.items() if type(v) is int}
    types["tokenizer.ggml.token_type"] = (GGUFValueType.ARRAY, GGUFValueType.INT32)
    write_gguf(path, metadata, entries, types=types)
    return Path(path)
