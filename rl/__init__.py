"""rl: aligning a language model with preferences: preference pairs, reward models, DPO and best-of-n.

Teaches how a human preference ("this reply is better than that one") becomes a training signal, and how
to keep a tuned policy close to the model it started from. Reading order:

- ``preferences.py``: Anthropic HH-RLHF transcripts -> (prompt messages, chosen, rejected) pairs, a seeded
  split, and tokenization in the model's chat template with the loss on the replies only;
- ``reward_model.py``: a scalar head on a ``gpt.GPT`` read at the last real token, trained with the
  Bradley-Terry loss; held-out pairwise accuracy and calibration;
- ``dpo.py``: completion-only sequence log-probabilities of a policy and a frozen reference; the DPO, IPO
  and hinge losses with their implicit rewards; KL to the reference; a LoRA DPO loop;
- ``best_of_n.py``: the simplest use of a reward model: sample n replies, keep the best.

References: Bradley and Terry 1952; Ouyang et al. 2022 (InstructGPT); Rafailov et al. 2023 (DPO); Azar et al.
2023 (IPO); Bai et al. 2022 (HH-RLHF); TRL's ``DPOTrainer``, the reference the tests compare with.
"""

from rl.best_of_n import best_of_n, best_of_n_curve, generate_completions
from rl.dpo import (
    DPOConfig,
    evaluate_dpo,
    kl_to_reference,
    plot_margins,
    preference_loss,
    sequence_logps,
    train_dpo,
)
from rl.preferences import (
    PairExample,
    PreferencePair,
    PreferenceReport,
    load_preferences,
    pair_example,
    split_pairs,
    tokenize_pairs,
)
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

__all__ = [
    "DPOConfig",
    "PairExample",
    "PreferencePair",
    "PreferenceReport",
    "RewardModel",
    "RewardTrainConfig",
    "best_of_n",
    "best_of_n_curve",
    "bradley_terry_loss",
    "calibration",
    "evaluate_dpo",
    "evaluate_pairs",
    "generate_completions",
    "kl_to_reference",
    "load_preferences",
    "load_reward_model",
    "pair_example",
    "plot_margins",
    "preference_loss",
    "save_reward_model",
    "sequence_logps",
    "split_pairs",
    "tokenize_pairs",
    "train_dpo",
    "train_reward_model",
]
