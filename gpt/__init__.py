"""gpt: the transformer package (Weeks 2-4).

Attention from scratch, positional encodings, GPT / BERT-like / T5-like models that load Hugging Face
weights exactly, the training loop (DDP, mixed precision, resume) and the data pipeline.
"""
