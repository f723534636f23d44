"""rl: aligning a language model with preferences: reward models, DPO and policy-gradient fine-tuning.

Will teach how a preference pair becomes a loss, and how to keep a tuned policy close to its reference.
Filled by a later issue.
"""
