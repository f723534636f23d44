"""``python -m evals.bench``: the harness's speed against lm-eval's HF backend; lite against full evaluation.

Two tables, one process, SmolLM2-135M-Instruct on the same device:

1. **Throughput** (items/s): loglikelihood multiple choice (the pystdlib benchmark) and generate-until
   (GSM8K, greedy) through ``GPTBackend`` (``GPT.generate``, one request at a time), ``EngineBackend``
   (``kvcache.LLMEngine``) and lm-evaluation-harness's ``HFLM`` on the same weights (``gpt.to_hf``) and the
   same task definition (:func:`lm_eval_config`), with ratios to lm-eval.
2. **Lite**: the population of :mod:`evals.bench_population` (at least 12 real models) on the pystdlib
   benchmark; for each selector of :mod:`evals.lite`, leave-one-model-out Spearman and mean absolute
   error of the estimate from ``k`` items, the error as a function of ``k``, and the measured speed-up of
   a lite run (``evaluate(..., lite=subset)``) against the full run on SmolLM2.

Writes ``runs/evals-bench-<device>-<time>/bench.{json,png}``.
"""

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from evals.backend import EngineBackend, GPTBackend
from evals.benchmarks.suites import gsm8k_task, pystdlib_mc_task
from evals.harness import evaluate
from evals.task import TaskSpec
from gpt.training.checkpoint import write_atomic


@dataclass
class BenchConfig:
    out: str = field(default="runs", metadata={"help": "parent folder of the bench folder"})
    device: str = "cpu"
    mc_items: int = field(default=100, metadata={"help": "multiple-choice items for the throughput table"})
    gen_items: int = field(default=16, metadata={"help": "GSM8K problems for the throughput table"})
    gen_fewshot: int = 3
    gen_tokens: int = field(default=128, metadata={"help": "max_gen_toks for the throughput table"})
    batch_size: int = 16
    peer: bool = field(default=True, metadata={"help": "run lm-eval's HF backend (needs lm-eval)"})
    throughput: bool = True
    lite: bool = True
    population: str = field(
        default="runs/evals-population", metadata={"help": "population folder (resumable)"}
    )
    lite_k: int = field(default=50, metadata={"help": "items a lite run answers (10% of 500)"})
    sizes: str = field(default="10,25,50,100,200", metadata={"help": "subset sizes for the error curve"})
    seeds: int = field(default=3, metadata={"help": "seeds per subset size"})

    def __post_init__(self):
        if min(self.mc_items, self.gen_items, self.gen_tokens, self.batch_size, self.lite_k, self.seeds) < 1:
            raise ValueError("mc_items, gen_items, gen_tokens, batch_size, lite_k and seeds must be >= 1")


def lm_eval_config(spec: TaskSpec) -> dict:
    """The lm-eval task config (a dict, as its YAML would hold) that defines ``spec``'s task identically."""

    def jinja(template: str) -> str:
        return template.replace("{", "{{").replace("}", "}}")

    files = {"test": str(spec.data)}
    cfg = {
        "task": spec.name,
        "dataset_path": "json",
        "test_split": "test",
        "output_type": spec.kind,
        "doc_to_text": jinja(spec.template),
        "target_delimiter": spec.target_delimiter,
        "fewshot_delimiter": spec.fewshot_delimiter,
        "num_fewshot": spec.num_fewshot,
        "description": spec.description,
    }
    if spec.num_fewshot:
        files["train"] = str(spec.fewshot_data)
        cfg |= {"fewshot_split": "train", "fewshot_config": {"sampler": "first_n"}}
    if spec.kind == "multiple_choice":
        cfg |= {"doc_to_choice": "{{" + spec.choices + "}}", "doc_to_target": "{{" + spec.gold + "}}"}
        cfg["metric_list"] = [
            {"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")
        ]
    else:
        cfg |= {"doc_to_target": jinja(spec.target), "metric_list": [{"metric": "exact_match"}]}
        cfg["generation_kwargs"] = {
            "until": list(spec.stop),
            "do_sample": False,
            "temperature": 0.0,
            "max_gen_toks": spec.max_gen_toks,
        }
    cfg["dataset_kwargs"] = {"data_files": files}
    return cfg


def _row(kind: str, backend: str, n: int, wall: float, score: float) -> dict:
    return {
        "kind": kind,
        "backend": backend,
        "items": n,
        "wall_s": wall,
        "items_per_s": n / wall,
        "score": score,
    }


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def throughput(cfg: BenchConfig, model, tok, folder: Path) -> list[dict]:
    mc = pystdlib_mc_task()
    gen = gsm8k_task(n=cfg.gen_items, num_fewshot=cfg.gen_fewshot, max_gen_toks=cfg.gen_tokens)
    gen.fewshot_sampler = "first_n"  # what lm-eval's first_n sampler shows: the same prompts in both
    rows = []
    plain, engine = GPTBackend(model, tok, cfg.batch_size), EngineBackend(model, tok, cfg.batch_size)
    for name, backend, task, n in [
        ("loglikelihood", plain, mc, cfg.mc_items),
        ("generate", plain, gen, cfg.gen_items),
        ("generate", engine, gen, cfg.gen_items),
    ]:
        res, wall = _timed(lambda b=backend, t=task, n=n: evaluate(t, b, limit=n, progress=False))
        metric = "acc" if name == "loglikelihood" else "exact_match,flexible-extract"
        rows.append(_row(name, backend.name, n, wall, res.value(metric)))
    if cfg.peer:
        rows += lm_eval_throughput(cfg, model, folder, [(mc, cfg.mc_items), (gen, cfg.gen_items)])
    for kind in ("loglikelihood", "generate"):
        peer = next((r for r in rows if r["kind"] == kind and r["backend"] == "lm-eval HFLM"), None)
        for r in rows:
            if r["kind"] == kind and peer is not None:
                r["vs_lm_eval"] = r["items_per_s"] / peer["items_per_s"]
    return rows


def lm_eval_throughput(cfg: BenchConfig, model, folder: Path, tasks) -> list[dict]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from gpt import to_hf
    from quant.load import smollm2_path

    hf_dir = folder / "smollm2-hf"
    to_hf(model).save_pretrained(hf_dir)
    import transformers

    path = smollm2_path()
    transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(hf_dir)
    lm = HFLM(pretrained=str(hf_dir), device=cfg.device, dtype="float32", batch_size=cfg.batch_size)
    rows = []
    for spec, n in tasks:
        config = lm_eval_config(spec)
        out, wall = _timed(
            lambda c=config, n=n: lm_eval.simple_evaluate(
                model=lm, tasks=[c], limit=n, task_manager=TaskManager(include_defaults=False)
            )
        )
        res = out["results"][config["task"]]
        kind = "loglikelihood" if spec.kind == "multiple_choice" else "generate"
        score = res.get("acc,none", res.get("exact_match,none"))
        rows.append(_row(kind, "lm-eval HFLM", n, wall, score))
    return rows


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def lite(cfg: BenchConfig, model, tok) -> tuple[dict, dict, dict]:
    from evals.bench_population import build_population
    from evals.lite import SELECTORS, error_vs_size, leave_one_out, stratified

    task = pystdlib_mc_task()
    pop = build_population(task, cfg.population, cfg.batch_size)
    Y = pop["Y"]
    results, curves = {}, {}
    with _one_blas_thread():  # k-means on small matrices: BLAS threads only fight over the cores
        for name in SELECTORS:
            results[name] = leave_one_out(Y, cfg.lite_k, name, seed=0)
            curves[name] = error_vs_size(
                Y, [int(s) for s in cfg.sizes.split(",")], name, seeds=range(cfg.seeds)
            )
        for method in ("pirt", "gpirt"):
            results[f"irt_anchor+{method}"] = leave_one_out(
                Y, cfg.lite_k, "irt_anchor", seed=0, method=method
            )
    # the lite flag on the harness: the same evaluate, k items instead of N, timed on SmolLM2
    subset = stratified(Y[1:], cfg.lite_k, seed=0)  # selected without SmolLM2-fp32 (row 0)
    backend = GPTBackend(model, tok, cfg.batch_size)
    full, full_s = _timed(lambda: evaluate(task, backend, progress=False))
    lit, lite_s = _timed(lambda: evaluate(task, backend, lite=subset, progress=False))
    timing = {"full_s": full_s, "lite_s": lite_s, "speedup": full_s / lite_s, "full_acc": full.value("acc"),
              "lite_estimate": lit.value("acc"), "k": cfg.lite_k, "n": full.n}  # fmt: skip
    return pop, results, curves | {"_timing": timing}


def main(cfg: BenchConfig) -> dict:
    from quant.load import load_gguf

    torch.manual_seed(0)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(cfg.out) / f"evals-bench-{cfg.device}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    model, tok = load_gguf(device=cfg.device)
    report = {
        "config": asdict(cfg),
        "device": cfg.device,
        "dtype": "float32",
        "threads": torch.get_num_threads(),
    }
    if cfg.throughput:
        rows = throughput(cfg, model, tok, folder)
        report["throughput"] = rows
        print(
            f"\n{'kind':14s} {'backend':20s} {'items':>5s} {'items/s':>8s} {'vs lm-eval':>10s} {'score':>6s}"
        )
        for r in rows:
            ratio = f"{r['vs_lm_eval']:.2f}x" if "vs_lm_eval" in r else "-"
            speed = f"{r['items']:5d} {r['items_per_s']:8.2f} {ratio:>10s}"
            print(f"{r['kind']:14s} {r['backend']:20s} {speed} {r['score']:6.3f}")
    if cfg.lite:
        from evals.lite import plot_lite

        pop, results, curves = lite(cfg, model, tok)
        timing = curves.pop("_timing")
        report["population"] = {"names": pop["names"], "accuracy": pop["Y"].mean(1).round(4).tolist()}
        report["lite"] = {
            name: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()}
            for name, r in results.items()
        }
        report["lite_curves"], report["lite_timing"] = curves, timing
        print(f"\npopulation: {len(pop['names'])} models x {pop['Y'].shape[1]} items")
        print(f"{'selector':20s} {'k':>4s} {'spearman':>9s} {'MAE (pts)':>10s} {'speed-up':>9s}")
        for name, r in results.items():
            print(f"{name:20s} {r['k']:4d} {r['spearman']:9.3f} {r['mae']:10.2f} {r['speedup']:8.1f}x")
        t = timing
        print(f"lite run on SmolLM2: {t['lite_s']:.1f} s vs full {t['full_s']:.1f} s ({t['speedup']:.1f}x)")
        print(f"  estimate {t['lite_estimate']:.3f} vs full {t['full_acc']:.3f}")
        plot_lite({k: v for k, v in results.items() if k in curves}, curves).savefig(
            folder / "bench.png", dpi=120
        )
    write_atomic(folder / "bench.json", (json.dumps(report, indent=1, default=float) + "\n").encode())
    print(f"wrote {folder}")
    return report


if __name__ == "__main__":
    from gpt.flags import parse_dataclass

    main(parse_dataclass(BenchConfig, prog="python -m evals.bench", description=__doc__.split("\n\n")[0]))
