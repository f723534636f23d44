"""evals: measuring models: perplexity, BLEU (checked against sacrebleu), pass@k on HumanEval, and more.

Will teach what each metric measures, how it is computed exactly, and how sandboxed code execution
keeps generated programs from harming the machine. Filled by a later issue.
"""
