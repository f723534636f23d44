"""Benchmark: the preference pipeline measured end to end on SmolLM2-135M-Instruct, and our DPO step vs TRL's.

Teaches what each stage of a simplified RLHF pipeline buys, measured on held-out data only. Every part
starts from a fresh copy of the same base model:

1. **reward model** (``rl.reward_model``, LoRA + a scalar head) on HH-RLHF harmless-base, split by
   ``rl.preferences.split_pairs`` (seed 0): training time, held-out pairwise accuracy (chance 0.5) and
   the expected calibration error of ``sigmoid(r_c - r_r)``, before and after training; the trained
   model is saved to ``<out>/reward_model`` (``--rm-from`` evaluates a saved one instead of training);
2. **DPO** (``rl.dpo``, LoRA) over the preference train split: held-out implicit-reward accuracy, time,
   the KL to the reference on the policy's own samples, and the trained reward model's mean score of
   greedy and sampled replies to fixed held-out prompts, before and after;
3. **best-of-n** (``rl.best_of_n``): the base policy's ``--bon-n`` samples per held-out prompt scored by
   the reward model; the mean best score of the first k, against k, beside the greedy reply's score;
4. **SFT** (``lora.finetune``, LoRA) on ``lora.chat_data``'s mixture rendered by ``lora.chat_mask``:
   assistant-token val loss and GSM8K exact match (``lora.evaluation``) on the first test problems,
   before and after;
5. **our DPO step against TRL's** ``DPOTrainer.training_step`` (forward of policy and reference, loss,
   backward; no optimizer step on either side) on the same HF ``LlamaForCausalLM`` (SmolLM2's first
   ``--trl-layers`` blocks through ``gpt.to_hf``; ours is ``gpt.from_hf`` of it) and the same batch of
   HH pairs: the two losses are compared first, then the median of alternating timings
   (``gpt.bench.time_pair``); the ratio is TRL's time / ours, target >= 1.0x.

``--part preference`` runs all five; ``reward``, ``dpo`` and ``best_of_n`` (each with the reward model it
scores with), ``sft`` and ``trl`` run one. Each part has its size knobs (``--rm-*``, ``--dpo-*``,
``--bon-*``, ``--sft-*``, ``--trl-*``).

``--part grpo`` (``rl.bench.grpo``, RL from verifiable rewards) measures sampling through
``kvcache.LLMEngine`` against ``GPT.generate`` for the same groups (generate / engine, target >= 2x), a few
LoRA GRPO steps with their time split into generation, reward and training, and lists the reward and
accuracy curves with the CPU R1 runs' and the s1 scaling curves read from ``--runs-dir`` (``--ratio-*``,
``--r1-*``, ``--grpo-*``).

    python -m rl.bench --part preference --threads 2    # SmolLM2-135M-Instruct, CPU: about an hour
    python -m rl.bench --smoke                          # a tiny random GPT, a handful of pairs, seconds
    python -m rl.bench --part grpo --threads 1          # SmolLM2, CPU: about 4 minutes

On 2 shared CPU threads one full-size step took about 4-5 s for the reward model (4 pairs of <= 256
tokens, peak 5.6 GB resident; 8 pairs reached 15 GB), 3.5 s for DPO (2 pairs), 4-13 s for SFT (4
conversations of <= 512 tokens); 32 GSM8K answers of 256 tokens take about 2 minutes; best-of-16 on 32
prompts of 64 new tokens took 875 s with other work on the cores. Timings in the
DPO-vs-TRL table are medians of alternating steps on one batch, ratios only.

Writes ``bench.json`` and ``bench.png`` to ``--out`` (default ``runs/rl-bench-<part>-<device>``),
fp32 throughout. HH-RLHF contains offensive text: nothing here prints a record or a generation.
References: Rafailov et al. 2023 (DPO); Ouyang et al. 2022 (reward model); TRL ``DPOTrainer``.
"""

import time
from dataclasses import asdict
from pathlib import Path

import torch

from gpt.flags import parse_dataclass
from lora.finetune import load_base
from rl.bench.config import PARTS, BenchConfig, smoke_config
from rl.bench.grpo import grpo_part
from rl.bench.preference import best_of_n_part, dpo_part, preference_data, reward_part
from rl.bench.report import plot, report, write_json
from rl.bench.sft import sft_part
from rl.bench.trl_step import trl_part


def main(cfg: BenchConfig) -> dict:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    base, tok = load_base(cfg.smoke, cfg.seed, None if cfg.smoke else cfg.n_layer)
    base = base.float().to(device).eval()
    sections = PARTS[cfg.part]
    name = "tiny random GPT (smoke)" if cfg.smoke else f"SmolLM2-135M-Instruct ({base.config.n_layer} layers)"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    env = dict(model=name, params=sum(p.numel() for p in base.parameters()), device=where, dtype="fp32",
               threads=torch.get_num_threads(), torch=torch.__version__)  # fmt: skip
    print(f"rl.bench --part {cfg.part}: {name}, {where} ({env['threads']} threads), fp32", flush=True)
    out = Path(cfg.out or f"runs/rl-bench-{cfg.part}-{cfg.device.replace(':', '')}{'-smoke' * cfg.smoke}")
    result = dict(config=asdict(cfg), env=env)
    t0 = time.perf_counter()
    if {"reward", "dpo", "trl"} & set(sections):
        train, val, result["pairs"] = preference_data(cfg, tok)
    if "reward" in sections:
        result["reward"], rm = reward_part(cfg, base, tok, train, val, out)
    if "dpo" in sections:
        result["dpo"] = dpo_part(cfg, base, tok, train, val, rm)
    if "best_of_n" in sections:
        result["best_of_n"] = best_of_n_part(cfg, base, tok, val, rm)
    if "sft" in sections:
        result["sft"] = sft_part(cfg, base, tok, out)
    if "trl" in sections:
        result["trl"] = trl_part(cfg, base, tok, train)
    if "grpo" in sections:
        result["grpo"] = grpo_part(cfg, base, tok, name)
    result["wall_s"] = time.perf_counter() - t0
    print(report(result), flush=True)
    write_json(result, out / "bench.json")
    plot(result, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return result


def parse_args(argv=None) -> BenchConfig:
    """Flags -> BenchConfig; with ``--smoke`` the defaults are :func:`smoke_config`'s."""
    import argparse
    import sys

    argv = sys.argv[1:] if argv is None else argv
    defaults = smoke_config() if "--smoke" in argv else BenchConfig()
    kw = dict(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, prog="rl.bench")
    return parse_dataclass(BenchConfig, argv, defaults=defaults, **kw)
