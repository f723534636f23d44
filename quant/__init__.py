"""quant: post-training quantization (int8, 4-bit groups) and the GGUF format, checked against gguf.

Will teach what is lost when weights are rounded, how per-group scales bound that error, and how a
quantized file is laid out on disk. Filled by a later issue.
"""
