"""vision: a PaliGemma-style vision-language model from gpt's parts, matched to transformers (Week 8.1).

Teaches how an image becomes a sequence of vectors a language model can read (late fusion): pixels are
resized and normalised, cut into patches by a strided conv, mixed by a bidirectional transformer, mapped
by one Linear into the decoder's width and put in place of the image placeholder tokens; the decoder
then reads image and prompt with full attention and writes the answer causally (a prefix-LM).
Every part is built from ``gpt`` (Block, attention with multi-query heads and the prefix-LM mask,
RMSNorm, GeGLU, RoPE) and checked against transformers on small random configs.

Reading order: ``processor.py`` (resize, rescale, normalise) -> ``siglip.py`` (the SigLIP vision tower)
-> ``paligemma.py`` (projector, Gemma decoder, prefix-LM mask, ``from_hf``, greedy ``generate``);
``shapes.py`` (a synthetic captioning / question task and its ``Vocab``, for comparing fusion strategies),
``fusion_models.py`` (late fusion, PaliGemma-style, against early fusion, Fuyu-style, at one parameter
budget) and ``fusion.py`` (their training loop, ``python -m vision.fusion``; imported on its own);
``figures.py`` (the pictures: fusion diagram, prefix-LM mask, shapes, the comparison, attention maps);
``bench.py`` (``python -m vision.bench``: our PaliGemma against transformers' in tokens/s, and the fusion
table). Apart:
``voice.py``, a Pipecat frame pipeline (source -> our model -> optional espeak-ng speech -> sink) that runs
any ``generate(messages)`` callable; it needs the ``voice`` extra, so it is imported on its own:
``from vision.voice import run_pipeline, ImageQuestion, ModelReply, EspeakTTS``.

References: Beyer et al. 2024, "PaliGemma: A versatile 3B VLM for transfer"; Zhai et al. 2023, "Sigmoid
Loss for Language Image Pre-Training" (SigLIP); Dosovitskiy et al. 2021 (ViT); Gemma Team 2024; HF
``transformers`` ``models/paligemma``, ``models/siglip``, ``models/gemma``.
"""

from vision.fusion_models import EarlyFusion, FusionConfig, LateFusion, attention_maps, param_counts
from vision.paligemma import PaliGemma, PaliGemmaConfig
from vision.processor import preprocess
from vision.shapes import Sample, Vocab, make_split
from vision.siglip import SiglipConfig, SiglipVisionTower

__all__ = [
    "EarlyFusion",
    "FusionConfig",
    "LateFusion",
    "PaliGemma",
    "PaliGemmaConfig",
    "Sample",
    "SiglipConfig",
    "SiglipVisionTower",
    "Vocab",
    "attention_maps",
    "make_split",
    "param_counts",
    "preprocess",
]
