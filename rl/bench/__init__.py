"""rl.bench: ``python -m rl.bench``, the preference pipeline measured end to end on SmolLM2, our DPO step
beside TRL's in one process, and GRPO's costs (``--part grpo``).

Reading order: ``config.py`` (the parts and their knobs), ``preference.py`` (HH pairs, the reward model,
DPO, best-of-n), ``sft.py`` (SFT before and after, packing's padding), ``trl_step.py`` (our DPO step
against ``trl.DPOTrainer``), ``grpo.py`` (generation through ``kvcache.LLMEngine`` against
``GPT.generate`` for the same groups, a GRPO step's time split, the R1 and s1 curves of earlier runs),
``report.py`` (the table, the PNG, the JSON), ``run.py`` (``main``; its docstring is the ``--help`` text and
the measured step times).

References: Rafailov et al. 2023 (DPO); Ouyang et al. 2022 (reward model); TRL ``DPOTrainer`` and
``GRPOTrainer`` (which samples through vLLM, as ``--part grpo`` samples through the engine).
"""

from rl.bench.config import GEN_RATIO_TARGET, PARTS, BenchConfig, smoke_config
from rl.bench.run import main, parse_args

__all__ = ["GEN_RATIO_TARGET", "PARTS", "BenchConfig", "main", "parse_args", "smoke_config"]
