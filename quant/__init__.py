"""quant: a real pretrained model from a GGUF file, and what rounding its weights costs (Week 6.2).

Teaches how a quantized model is laid out on disk and in memory, and measures the accuracy, size and
speed that each format trades. Reading order:

- ``gguf.py`` and ``gguf_writer.py``: the GGUF v3 container (header, typed metadata, tensor infos,
  alignment), read and written by hand;
- ``ggml_blocks.py``: ggml's block formats (Q8_0, Q4_0, Q4_1 both ways; Q4_K, Q6_K dequantized);
- ``tokenizer.py``: the tokenizer a GGUF carries, built by ``bpe``;
- ``load.py``: ``load_gguf`` -> (GPT, tokenizer): SmolLM2-135M-Instruct in our own ``gpt.GPT``;
- ``weight_only.py``: INT8 per channel and INT4 in groups, ``QuantLinear`` and ``quantize_model``, with
  the CPU fast paths of ``cpu_kernels.py`` and the Triton W8A16/W4A16 kernels of ``triton_kernels.py``;
- ``nf4.py``: QLoRA's 4-bit NormalFloat with double quantization of the absmax, bit-exact with
  bitsandbytes, and ``NF4Linear``, the frozen base that ``lora.qlora`` trains adapters on;
- ``export.py``: ``export_gguf``, the way back to a file llama.cpp and transformers load;
- ``bench.py``: ``python -m quant.bench``, perplexity / bytes / decode speed side by side.

References: the GGUF spec and ``gguf-py`` (ggml-org/llama.cpp), which the tests read and write against;
llama.cpp ``ggml-quants.c``; Dettmers et al. 2022 (LLM.int8()); Frantar et al. 2023 (GPTQ); Lin et al.
2024 (AWQ); Dettmers et al. 2023 (QLoRA: NF4, double quantization); transformers' GGUF loader, the
reference for ``load_gguf``.
"""

from quant.export import export_gguf
from quant.ggml_blocks import GGMLType, dequantize, quantize
from quant.gguf import GGUFError, GGUFFile, TensorInfo, read_gguf
from quant.gguf_writer import write_gguf
from quant.load import load_gguf, smollm2_path
from quant.nf4 import NF4Linear, NF4Weight, dequantize_nf4, nf4_codebook, nf4_nbytes, quantize_nf4
from quant.tokenizer import tokenizer_from_gguf
from quant.weight_only import QuantEmbedding, QuantLinear, QuantScheme, quantize_model, weight_bytes

__all__ = [
    "GGMLType",
    "GGUFError",
    "GGUFFile",
    "NF4Linear",
    "NF4Weight",
    "QuantEmbedding",
    "QuantLinear",
    "QuantScheme",
    "TensorInfo",
    "dequantize",
    "dequantize_nf4",
    "export_gguf",
    "load_gguf",
    "nf4_codebook",
    "nf4_nbytes",
    "quantize",
    "quantize_model",
    "quantize_nf4",
    "read_gguf",
    "smollm2_path",
    "tokenizer_from_gguf",
    "weight_bytes",
    "write_gguf",
]
