"""lora: parameter-efficient fine-tuning with low-rank adapters, checked against peft.

Will teach why a rank-r update to a frozen weight is enough to adapt a model, and how adapters merge
back into the base weights. Filled by a later issue.
"""
