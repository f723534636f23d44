"""rl: aligning a language model with preferences and with verifiable rewards.

Teaches how a human preference ("this reply is better than that one") or a checker ("is 405 the sum?")
becomes a training signal, and how to keep a tuned policy close to the model it started from. Reading
order, preferences (Week 5.3):

- ``preferences.py``: Anthropic HH-RLHF transcripts -> (prompt messages, chosen, rejected) pairs, a seeded
  split, and tokenization in the model's chat template with the loss on the replies only;
- ``reward_model.py``: a scalar head on a ``gpt.GPT`` read at the last real token, trained with the
  Bradley-Terry loss; held-out pairwise accuracy and calibration;
- ``dpo.py``: completion-only sequence log-probabilities of a policy and a frozen reference; the DPO, IPO
  and hinge losses with their implicit rewards; KL to the reference; a LoRA DPO loop;
- ``best_of_n.py``: the simplest use of a reward model: sample n replies, keep the best.

and verifiable rewards (Week 8.2):

- ``tasks.py``: arithmetic, countdown and GSM8K problems with exact checkers, seeded, with held-out splits,
  in the R1 ``<think>``/``<answer>`` format or the model's own chat format;
- ``rewards.py``: composable ``(prompt, completion, example) -> float`` rewards: correctness, format, an
  overlong penalty; a reward that fails is reported with the completion that broke it;
- ``grpo.py``: group-normalised advantages, per-token log-probabilities, the clipped importance ratio, k3 KL
  and the grpo / bnpo / dapo / dr_grpo aggregations;
- ``rollout.py``: groups sampled through ``kvcache.LLMEngine``, with the policy's weights pushed to it;
- ``grpo_trainer.py``: the GRPO loop (mu steps per generation batch, accumulation, LoRA or full, resumable);
- ``r1_model.py`` and ``r1.py``: the R1 loop on a CPU: a tiny character-level GPT pre-trained on worked
  additions from a corpus that often forgets the carry, then GRPO for a wall-clock budget with held-out
  evaluations;
- ``r1_smollm2.py``: the same loop on SmolLM2 (countdown or GSM8K, LoRA, sampled through the engine);
- ``budget_forcing.py``: s1's test-time scaling: cap the thinking, or extend it with "Wait";
- ``s1.py``: reasoning traces kept by the verifier, a fine-tune on them, and the accuracy-against-thinking
  (sequential) and majority-vote (parallel) scaling curves;
- ``s1_tiny.py``: those curves for the tiny R1 model, before and after GRPO.

References: Bradley and Terry 1952; Ouyang et al. 2022 (InstructGPT); Rafailov et al. 2023 (DPO); Azar et al.
2023 (IPO); Bai et al. 2022 (HH-RLHF); Shao et al. 2024 (GRPO, DeepSeekMath section 4.1); DeepSeek-AI 2025
(R1); Yu et al. 2025 (DAPO); Liu et al. 2025 (Dr. GRPO); Muennighoff et al. 2025 (s1); TRL's ``DPOTrainer``
and ``GRPOTrainer``, the references the tests compare with.
"""

from rl.best_of_n import best_of_n, best_of_n_curve, generate_completions
from rl.budget_forcing import BudgetForced, Piece, budget_force, cut_partial
from rl.dpo import (
    DPOConfig,
    evaluate_dpo,
    kl_to_reference,
    plot_margins,
    preference_loss,
    sequence_logps,
    train_dpo,
)
from rl.grpo import LOSS_TYPES, group_advantages, grpo_loss, k3_kl, token_logps
from rl.grpo_trainer import GRPOConfig, GRPORun, RolloutParams, train_grpo
from rl.preferences import (
    PairExample,
    PreferencePair,
    PreferenceReport,
    load_preferences,
    pair_example,
    split_pairs,
    tokenize_pairs,
)
from rl.r1 import R1Config, plot_r1, run_r1, tiny_model
from rl.r1_model import R1Tokenizer, TinyConfig, carries, corpus, pretrain, worked_completion
from rl.r1_smollm2 import SmolR1Config, run_r1_smollm2
from rl.reward_model import (
    RewardModel,
    RewardTrainConfig,
    bradley_terry_loss,
    calibration,
    evaluate_pairs,
    load_reward_model,
    save_reward_model,
    train_reward_model,
)
from rl.rewards import (
    CombinedReward,
    RewardBatch,
    RewardError,
    chat_format_reward,
    combine,
    correctness,
    format_reward,
    length_penalty,
    soft_format_reward,
    think_format_reward,
)
from rl.rollout import EngineSampler, GenerateSampler, merged_state_dict, time_samplers
from rl.s1 import (
    S1RunConfig,
    SFTConfig,
    Trace,
    finetune_on_traces,
    generate_traces,
    keep_correct,
    load_traces,
    majority_vote,
    plot_curves,
    save_traces,
    scaling_curves,
    trace_examples,
    write_curves,
)
from rl.s1_tiny import TinyScalingConfig
from rl.tasks import (
    Example,
    arithmetic,
    chat_messages,
    check_prompts,
    countdown,
    countdown_check,
    extract_answer,
    gsm8k,
    make_examples,
    render,
    split_examples,
)

__all__ = [
    "LOSS_TYPES",
    "BudgetForced",
    "CombinedReward",
    "DPOConfig",
    "EngineSampler",
    "Example",
    "GRPOConfig",
    "GRPORun",
    "GenerateSampler",
    "PairExample",
    "Piece",
    "PreferencePair",
    "PreferenceReport",
    "R1Config",
    "R1Tokenizer",
    "RewardBatch",
    "RewardError",
    "RewardModel",
    "RewardTrainConfig",
    "RolloutParams",
    "S1RunConfig",
    "SFTConfig",
    "SmolR1Config",
    "TinyConfig",
    "TinyScalingConfig",
    "Trace",
    "arithmetic",
    "best_of_n",
    "best_of_n_curve",
    "bradley_terry_loss",
    "budget_force",
    "calibration",
    "carries",
    "chat_format_reward",
    "chat_messages",
    "check_prompts",
    "combine",
    "corpus",
    "correctness",
    "countdown",
    "countdown_check",
    "cut_partial",
    "evaluate_dpo",
    "evaluate_pairs",
    "extract_answer",
    "finetune_on_traces",
    "format_reward",
    "generate_completions",
    "generate_traces",
    "group_advantages",
    "grpo_loss",
    "gsm8k",
    "k3_kl",
    "keep_correct",
    "kl_to_reference",
    "length_penalty",
    "load_preferences",
    "load_reward_model",
    "load_traces",
    "majority_vote",
    "make_examples",
    "merged_state_dict",
    "pair_example",
    "plot_curves",
    "plot_margins",
    "plot_r1",
    "preference_loss",
    "pretrain",
    "render",
    "run_r1",
    "run_r1_smollm2",
    "save_reward_model",
    "save_traces",
    "scaling_curves",
    "sequence_logps",
    "soft_format_reward",
    "split_examples",
    "split_pairs",
    "think_format_reward",
    "time_samplers",
    "tiny_model",
    "token_logps",
    "tokenize_pairs",
    "trace_examples",
    "train_dpo",
    "train_grpo",
    "train_reward_model",
    "worked_completion",
    "write_curves",
]
