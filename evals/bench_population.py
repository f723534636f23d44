"""The population of real models that lite evaluation is fitted and tested on: per-item correctness of each.

Lite evaluation (:mod:`evals.lite`) learns which items matter from how *other* models answered them, so
its population must be real and varied. Here it is built from what this repo makes:

- SmolLM2-135M-Instruct as loaded (fp32, from the Q4_1 file) and at every weight format of ``quant``:
  ggml Q8_0 and Q4_0 (quantized, then dequantized), INT4 in groups of 32 and 64
  (``quant.quantize_model``), NF4 (``quant.nf4``). INT8 and Q4_1 are left out to keep the build
  short on a CPU (minutes per member): they are the two formats closest to the loaded weights;
- SmolLM2 with LoRA adapters trained briefly by ``lora.finetune`` on two domains (code and GSM8K), merged;
- SmolLM2 with only its first layers (``load_gguf(n_layer=...)``): weaker relatives of the same model;
- checkpoints along one training run of our own: the ``cpu-demo`` char-level GPT on the Python standard
  library (``gpt/train.py``), stopped and resumed.

Each member is scored by ``evals.evaluate`` into its own resumable results file, so a killed build
continues with the member it was on. The result is ``Y`` (models, items) of 0/1 correctness, saved with
the member names and item ids.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from evals.backend import GPTBackend
from evals.harness import evaluate, saved_results
from evals.task import TaskSpec

ROOT = Path(__file__).resolve().parents[1]  # the repository: gpt/train.py is run as a script
QUANT_MEMBERS = ("q8_0", "q4_0", "int4-g32", "int4-g64", "nf4")
LORA_MEMBERS = ("lora-code-r8-qv", "lora-gsm8k-r16-all")
TRUNCATED = (24, 20)
CHAR_STEPS = (200, 450, 800, 1400)


def _linears(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]


@torch.no_grad()
def round_weights(model, fmt: str):
    """Every Linear weight (the tied head/embedding stays float) rounded through ``fmt`` and back."""
    from quant import GGMLType, dequantize, dequantize_nf4, quantize, quantize_model, quantize_nf4

    if fmt.startswith("int"):
        return quantize_model(model, fmt)
    for _, lin in _linears(model):
        w = lin.weight
        if fmt == "nf4":
            lin.weight.copy_(dequantize_nf4(quantize_nf4(w.float())))
        else:
            t = GGMLType[fmt.upper()]
            back = dequantize(quantize(w.float().numpy(), t), t, tuple(w.shape[::-1])[::-1])
            lin.weight.copy_(torch.from_numpy(back).view_as(w))
    return model


def lora_member(name: str, steps: int = 30, seed: int = 0):
    """SmolLM2 + a LoRA adapter trained for ``steps`` steps on code_alpaca or GSM8K, then merged."""
    from gpt.data.gsm8k import load_gsm8k
    from lora import chat_examples, inject_lora, merge_lora
    from lora.finetune import FinetuneConfig, finetune
    from quant import load_gguf

    model, tok = load_gguf()
    if "code" in name:
        from gpt.data.paths import dataset_path

        rows = json.loads(dataset_path("code_alpaca_2k", "code_alpaca_2k.json").read_text())
        pairs = [((r["instruction"] + "\n" + r.get("input", "")).strip(), r["output"]) for r in rows[:400]]
        pairs = [(q, a) for q, a in pairs if a.strip()]  # a few rows have no output
        inject_lora(model, ["c_attn"], r=8, alpha=16)
    else:
        pairs = [(p.question, p.answer) for p in load_gsm8k("train", limit=400)]
        inject_lora(model, ["c_attn", "c_proj", "c_fc", "c_gate"], r=16, alpha=32)
    examples, _ = chat_examples(tok, pairs, max_len=320)
    cfg = FinetuneConfig(
        out_dir=f"/tmp/llm-course-population-{name}",
        steps=steps,
        batch_size=8,
        lr=1e-3,
        warmup_steps=2,
        eval_interval=0,
        checkpoint=False,
        device="cpu",
        seed=seed,
        progress=False,
    )
    finetune(model, examples, examples[:8], cfg, pad_id=tok.eos_id)
    merge_lora(model)
    return model.eval(), tok


class KnownChars:
    """A char tokenizer that maps characters outside its vocabulary to a space (a char model's
    vocabulary is the characters of its training text; a benchmark may hold others)."""

    eos_id = None

    def __init__(self, tok):
        self.tok, self.known = tok, {}

    def _ok(self, c: str) -> bool:
        if c not in self.known:
            try:
                self.tok.encode(c)
                self.known[c] = True
            except ValueError:
                self.known[c] = False
        return self.known[c]

    def encode(self, text: str) -> list[int]:
        return self.tok.encode("".join(c if self._ok(c) else " " for c in text))

    def decode(self, ids) -> str:
        return self.tok.decode(ids)


def char_checkpoints(out: Path, steps=CHAR_STEPS):
    """Train the cpu-demo preset, stopping at each of ``steps`` to keep a copy of its checkpoint."""
    from gpt.training.checkpoint import load_checkpoint

    out = out.resolve()
    run = out / "cpu-demo"
    for i, s in enumerate(steps):
        dest = out / f"char-step{s}.pt"
        if dest.exists():
            continue
        cmd = [sys.executable, str(ROOT / "gpt" / "train.py"), "--preset=cpu-demo", f"--out-dir={run}"]
        cmd += [f"--stop-step={s}"] + (["--resume"] if i else [])
        subprocess.run(cmd, check=True, cwd=ROOT)
        state = load_checkpoint(run / "ckpt.pt")
        torch.save({"model": state["model"], "model_config": state["model_config"]}, dest)
    return [out / f"char-step{s}.pt" for s in steps]


def char_member(path: Path):
    from gpt.data.prepare import load_prepared
    from gpt.data.tokenize import load_tokenizer
    from gpt.model import GPT, GPTConfig
    from gpt.train import default_data_dir
    from gpt.training.config import get_preset

    state = torch.load(path, weights_only=True)
    model = GPT(GPTConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    spec = load_prepared(default_data_dir(get_preset("cpu-demo"))).tokenizer_spec
    return model.eval(), KnownChars(load_tokenizer(spec))


def members(out: Path):
    """(name, build) pairs: ``build()`` returns (model, tokenizer), so only one model lives at a time."""
    from quant import load_gguf

    yield "smollm2-fp32", load_gguf
    for fmt in QUANT_MEMBERS:
        yield f"smollm2-{fmt}", lambda fmt=fmt: (lambda m, t: (round_weights(m, fmt), t))(*load_gguf())
    for name in LORA_MEMBERS:
        yield f"smollm2-{name}", lambda name=name: lora_member(name)
    for n in TRUNCATED:
        yield f"smollm2-first{n}layers", lambda n=n: load_gguf(n_layer=n)
    for path in char_checkpoints(out / "char-run"):
        yield f"char-gpt-{path.stem.split('-')[-1]}", lambda path=path: char_member(path)


def build_population(task: TaskSpec, out, batch_size: int = 16) -> dict:
    """Score every member on ``task``; returns {"names", "ids", "Y" (models, items), "wall_s"}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names, rows, wall = [], [], {}
    for name, build in members(out):
        t0 = time.perf_counter()
        path = out / f"{name}.jsonl"
        res = saved_results(
            task, path, name
        )  # a member already scored in full is not rebuilt (nor retrained)
        if res is None:
            model, tok = build()
            res = evaluate(task, GPTBackend(model, tok, batch_size), out=path, model=name)
            del model
        names.append(name)
        rows.append([it["acc"] for it in res.items])
        wall[name] = {
            "build_and_eval_s": time.perf_counter() - t0,
            "eval_s": res.wall_s,
            "scored": res.scored_now,
        }
        print(f"{name:28s} acc {res.value('acc'):.3f}  ({res.scored_now} items scored in {res.wall_s:.0f} s)")
    ids = [str(r[task.id_field]) for r in task.records()]
    Y = np.array(rows, dtype=np.float64)
    np.savez(out / "population.npz", Y=Y, names=np.array(names), ids=np.array(ids))
    return {"names": names, "ids": ids, "Y": Y, "wall": wall}


def load_population(out) -> dict:
    z = np.load(Path(out) / "population.npz")
    return {"names": list(z["names"]), "ids": list(z["ids"]), "Y": z["Y"]}
