"""Our DPO step against TRL's ``DPOTrainer.training_step`` on the same HF model and batch: the losses first,
then alternating timings."""

import copy
import statistics
import tempfile

import torch

from gpt.bench import time_pair
from rl.bench.config import RATIO_TARGET, BenchConfig
from rl.dpo import DPOConfig, dpo_step, frozen_reference

# -- 5. our DPO step against TRL's ----------------------------------------------------------------------


def trl_trainer(hf, cfg: BenchConfig, tmp: str):
    """A ``trl.DPOTrainer`` over ``hf`` and a frozen copy as its reference, built offline: a word-level
    tokenizer over the model's ids (the batch is given as ids, the tokenizer only satisfies the trainer)."""
    import datasets
    import tokenizers
    import trl
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(hf.config.vocab_size)}
    word_level = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t2"))
    word_level.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="t0", eos_token="t1", unk_token="t2")
    data = datasets.Dataset.from_dict({"prompt": ["t3 t4"], "chosen": [" t5"], "rejected": [" t6"]})
    args = trl.DPOConfig(output_dir=tmp, bf16=False, report_to="none",
                         use_cpu=cfg.device == "cpu", per_device_train_batch_size=cfg.trl_batch,
                         beta=cfg.dpo_beta, loss_type=[cfg.dpo_loss])  # fmt: skip
    ref = copy.deepcopy(hf).eval().requires_grad_(False)
    return trl.DPOTrainer(model=hf, ref_model=ref, args=args, train_dataset=data, processing_class=tok)


def trl_part(cfg: BenchConfig, base, tok, train) -> dict:
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from gpt import from_hf, to_hf

    device = torch.device(cfg.device)
    if not cfg.smoke:
        from quant.load import load_gguf

        base = load_gguf(n_layer=cfg.trl_layers)[0]
    hf = to_hf(base).float().to(device)
    policy = from_hf(hf).train()
    reference = frozen_reference(policy)
    batch = train[: cfg.trl_batch]
    dcfg = DPOConfig(beta=cfg.dpo_beta, loss_type=cfg.dpo_loss, pad_id=tok.eos_id, progress=False)
    triples = []
    for p in batch:
        P = len(p.prompt_ids)
        triples.append(dict(prompt_ids=p.prompt_ids, chosen_ids=list(p.chosen.targets[P - 1 :]),
                            rejected_ids=list(p.rejected.targets[P - 1 :])))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trl_trainer(hf, cfg, tmp)
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop, which we do not run
        inputs = {
            k: v.to(device) for k, v in DataCollatorForPreference(pad_token_id=tok.eos_id)(triples).items()
        }
        with torch.no_grad():
            theirs = trainer._compute_loss(trainer.model, inputs, return_outputs=False).item()
            ours, stats = dpo_step(policy, reference, batch, dcfg)
        logged = trainer._metrics["train" if trainer.model.training else "eval"]
        # policy == reference at the start, so both losses are log 2: the log-probabilities are the check
        logp_diff = max(abs(stats["logp_chosen"] - logged["logps/chosen"][-1]),
                        abs(stats["logp_rejected"] - logged["logps/rejected"][-1]))  # fmt: skip

        def step_ours():
            policy.zero_grad(set_to_none=True)
            dpo_step(policy, reference, batch, dcfg)[0].backward()

        def step_trl():
            trainer.model.zero_grad(set_to_none=True)
            trainer.training_step(trainer.model, inputs)

        times = time_pair({"ours": step_ours, "trl": step_trl}, cfg, device)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    T = max(len(t["prompt_ids"]) + max(len(t["chosen_ids"]), len(t["rejected_ids"])) for t in triples)
    out = dict(ours_s=med["ours"], trl_s=med["trl"], ratio=med["trl"] / med["ours"], target=RATIO_TARGET)
    out |= dict(
        loss_ours=ours.item(), loss_trl=theirs, loss_diff=abs(ours.item() - theirs), logp_diff=logp_diff
    )
    out |= dict(pairs=len(batch), max_T=T)
    out |= dict(params=sum(p.numel() for p in policy.parameters()), layers=policy.config.n_layer, times=times)
    return out
