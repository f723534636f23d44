"""rl.bench: ``python -m rl.bench``, the preference pipeline measured end to end on SmolLM2, and our DPO step
beside TRL's in one process.

Reading order: ``config.py`` (the parts and their knobs), ``preference.py`` (HH pairs, the reward model,
DPO, best-of-n), ``sft.py`` (SFT before and after, packing's padding), ``trl_step.py`` (our DPO step
against ``trl.DPOTrainer``), ``report.py`` (the table, the PNG, the JSON), ``run.py`` (``main``; its
docstring is the ``--help`` text and the measured step times).

References: Rafailov et al. 2023 (DPO); Ouyang et al. 2022 (reward model); TRL ``DPOTrainer``.
"""

from rl.bench.config import PARTS, BenchConfig, smoke_config
from rl.bench.run import main, parse_args

__all__ = ["PARTS", "BenchConfig", "main", "parse_args", "smoke_config"]
