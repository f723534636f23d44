"""bpe: byte-level byte-pair encoding, trained from scratch and reproducing tiktoken exactly (Week 1.3).

A leaf package: it imports nothing else from this repository.
"""
