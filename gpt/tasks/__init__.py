"""gpt.tasks: what the models are trained to do, kept apart from the models themselves (Week 3.3).

- ``translation.py``: Multi30k English -> German with a T5 from scratch (joint BPE, label smoothing, a
  wall-clock budget, sacreBLEU); ``python -m gpt.tasks.translation --help``.
- ``compare_architectures.py``: decoder-only vs encoder-only vs encoder-decoder on language modelling,
  fill-in-the-blank and translation, with one (source, target) framing for all three.

Nothing is imported here, so ``python -m gpt.tasks.translation`` runs its module fresh.
"""
