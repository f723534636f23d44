"""The s1 loop: verified reasoning traces, a fine-tune on them, and test-time scaling curves.

Teaches how test-time compute buys accuracy, and where it stops buying it (Muennighoff et al. 2025, "s1:
Simple test-time scaling"). Unlike ``budget_forcing.py``, which controls one reply's thinking length, this
file runs the whole recipe around it:

- **traces** (s1 section 2): sample ``<think>...</think><answer>...</answer>`` replies through budget
  forcing, keep only those the task's exact checker (``rl.tasks.is_correct``) accepts, and record where
  each came from (model, prompt, seed, sample): s1 kept 1,000 of 59K questions' traces, here a few;
- **fine-tune** (s1 section 4.1): SFT with the loss on the trace only (``lora.examples``), LoRA adapters
  (``lora.inject``) trained by ``lora.finetune.finetune`` and merged back for serving;
- **curves** (s1 section 3, Figure 4): on one held-out set, accuracy against tokens spent for
  *sequential* scaling (greedy, thinking capped at N tokens, then extended k times with "Wait") and for
  *parallel* scaling (majority vote over n samples, ``evals.reference_free.self_consistency``).

``python -m rl.s1`` runs it on SmolLM2-135M-Instruct; ``--smoke`` on a tiny random GPT in seconds.
Any (``gpt.GPT``, tokenizer) pair works: plain-text prompts (``chat_template=False``) suit a model trained
here without a chat template.

Reference: s1 (github.com/simplescaling/s1: ``train/sft.py``, the budget-forcing eval); Wang et al. 2023
(self-consistency).
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evals.reference_free import gsm8k_answer, self_consistency
from gpt.training.checkpoint import atomic_file, write_atomic
from lora.examples import chat_examples
from lora.finetune import FinetuneConfig, finetune
from lora.inject import inject_lora, merge_lora
from rl.budget_forcing import budget_force
from rl.rollout import engine_for
from rl.tasks import R1_SYSTEM, Example, chat_messages, check, extract_answer, is_correct, make_examples
from rl.tasks import prompt_ids as task_prompt_ids


@dataclass(frozen=True)
class Trace:
    """One sampled reply and its provenance: ``completion`` starts at ``<think>`` (the assistant turn
    after ``prompt``, the user message), ``correct`` is the verifier's verdict on it."""

    example_id: str
    task: str
    prompt: str
    completion: str
    gold: str
    correct: bool
    model: str
    seed: int
    sample: int
    max_thinking_tokens: int
    thinking_tokens: int


def keep_correct(traces: list[Trace], examples: list[Example], fmt: str = "r1") -> list[Trace]:
    """The traces whose completion the task's checker accepts (re-checked here, whatever ``correct``
    says), in order; a trace of an unknown example is a ValueError."""
    by_id = {ex.id: ex for ex in examples}
    missing = next((t.example_id for t in traces if t.example_id not in by_id), None)
    if missing is not None:
        raise ValueError(f"trace of example {missing!r} has no example in `examples`; pass its problem too")
    return [t for t in traces if is_correct(by_id[t.example_id], t.completion, fmt)]


def _prompts(examples, tokenizer, fmt, chat_template, system):
    return [task_prompt_ids(ex, tokenizer, fmt, chat_template, system) for ex in examples]


def _run(model, tokenizer, prompts, max_thinking_tokens, num_waits, temperature, seed, max_answer_tokens):
    """``budget_force`` over token-id prompts on an engine sized for them."""
    new = max_thinking_tokens + max_answer_tokens + 32  # the delimiters and the answer tag
    engine = engine_for(model, prompts, 1, new, tokenizer=tokenizer)
    return budget_force(engine, [list(p) for p in prompts], max_thinking_tokens, num_waits,
                        max_answer_tokens=max_answer_tokens, temperature=temperature, seed=seed)  # fmt: skip


def generate_traces(
    model,
    tokenizer,
    examples: list[Example],
    n_samples: int = 4,
    max_thinking_tokens: int = 64,
    seed: int = 0,
    temperature: float = 0.7,
    model_name: str = "model",
    fmt: str = "r1",
    chat_template: bool = True,
    system: bool = True,
    max_answer_tokens: int = 16,
) -> tuple[list[Trace], int]:
    """(kept traces, number sampled): ``n_samples`` budget-forced replies per example at ``temperature``,
    only the verified ones kept (:func:`keep_correct`)."""
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples={n_samples!r}; sample at least one reply per example")
    rows = [(ex, s) for ex in examples for s in range(n_samples)]
    prompts = _prompts([ex for ex, _ in rows], tokenizer, fmt, chat_template, system)
    outs = _run(model, tokenizer, prompts, max_thinking_tokens, 0, temperature, seed, max_answer_tokens)
    traces = [
        Trace(
            ex.id,
            ex.task,
            chat_messages(ex, fmt)[-1]["content"],
            out.text,
            ex.answer,
            is_correct(ex, out.text, fmt),
            model_name,
            seed,
            s,
            max_thinking_tokens,
            out.thinking_tokens,
        )
        for (ex, s), out in zip(rows, outs, strict=True)
    ]
    return keep_correct(traces, examples, fmt), len(traces)


def save_traces(path, traces: list[Trace]) -> Path:
    """Write ``traces`` as JSONL (one record a line), atomically."""
    with atomic_file(path) as f:
        for t in traces:
            f.write((json.dumps(asdict(t)) + "\n").encode())
    return Path(path)


def load_traces(path) -> list[Trace]:
    """The traces :func:`save_traces` wrote."""
    with open(path, encoding="utf-8") as f:
        return [Trace(**json.loads(line)) for line in f if line.strip()]


def trace_examples(tokenizer, traces: list[Trace], max_len: int, system: str | None = R1_SYSTEM):
    """(SFT examples, dropped): each trace's user prompt in the chat template (under the R1 system prompt),
    loss on the trace and its end token only."""
    return chat_examples(tokenizer, [(t.prompt, t.completion) for t in traces], max_len, system)


@dataclass
class SFTConfig:
    """The s1 fine-tune, small: LoRA on ``targets`` for ``steps`` steps of ``batch_size`` traces."""

    steps: int = 20
    batch_size: int = 4
    lr: float = 1e-3
    r: int = 8
    alpha: float = 16.0
    targets: str = "all-linear"
    max_len: int = 512
    out_dir: str = "runs/s1/sft"
    device: str = "auto"
    seed: int = 0


def finetune_on_traces(model, tokenizer, traces: list[Trace], cfg: SFTConfig) -> dict:
    """LoRA SFT of ``model`` on the traces (completion-only loss), adapters merged afterwards so the engine
    serves plain weights. Returns ``lora.finetune.finetune``'s history (without the model) and counts."""
    train, dropped = trace_examples(tokenizer, traces, cfg.max_len)
    if not train:
        raise ValueError(f"no trace fits max_len={cfg.max_len} (of {len(traces)}); generate more or raise it")
    inject_lora(model, cfg.targets, r=cfg.r, alpha=cfg.alpha)
    ft = FinetuneConfig(out_dir=cfg.out_dir, steps=cfg.steps, batch_size=min(cfg.batch_size, len(train)),
                        lr=cfg.lr, warmup_steps=min(2, cfg.steps), eval_interval=0, checkpoint=False,
                        device=cfg.device, seed=cfg.seed, progress=False)  # fmt: skip
    history = finetune(model, train, train[:4], ft, pad_id=tokenizer.eos_id)  # no evals: val is a stand-in
    history.pop("model")
    merge_lora(model)
    model.eval()
    return history | {"n_examples": len(train), "n_dropped": dropped}


def vote_key(example: Example, completion: str, fmt: str = "r1") -> str | None:
    """The answer a vote counts: the extracted answer, a number normalised (``"405."`` -> ``"405"``)."""
    answer = extract_answer(completion, fmt)
    if answer is None or example.task == "countdown":
        return None if answer is None else " ".join(answer.split())
    return gsm8k_answer(answer)


def majority_vote(example: Example, completions: list[str], fmt: str = "r1") -> tuple[str | None, bool]:
    """(majority answer, whether it is correct) over sampled completions: self-consistency's vote."""
    vote = self_consistency(completions, lambda c: vote_key(example, c, fmt))
    return vote.majority, check(example, vote.majority)


def scaling_curves(
    model,
    tokenizer,
    examples: list[Example],
    budgets=(16, 32, 64, 128),
    waits=(1, 2),
    ns=(1, 2, 4, 8),
    seed: int = 0,
    temperature: float = 0.7,
    parallel_budget: int | None = None,
    fmt: str = "r1",
    chat_template: bool = True,
    system: bool = True,
    max_answer_tokens: int = 16,
    log=None,
) -> dict:
    """Accuracy and mean tokens per problem on ``examples``. ``sequential``: greedy, thinking capped at
    each budget, then at the largest budget extended by each count of "Wait"s. ``parallel``: ``max(ns)``
    samples per problem at ``temperature`` and ``parallel_budget`` (default: the smallest budget), the
    majority of the first n for each n (no ``ns``: no parallel curve); its tokens are those of all n
    samples. Tokens count the whole reply (thinking, inserted delimiters and "Wait"s, answer); ``thinking``
    the thinking alone. ``log`` (a callable taking a str) hears each point as it is measured."""
    if not examples:
        raise ValueError("examples is empty: pass the held-out problems to measure on")
    if not budgets and parallel_budget is None:
        raise ValueError("budgets is empty: pass parallel_budget for the voted samples' thinking cap")
    say = log or (lambda _: None)
    prompts = _prompts(examples, tokenizer, fmt, chat_template, system)
    run = dict(max_answer_tokens=max_answer_tokens)
    sequential = []
    for budget, k in [(b, 0) for b in budgets] + [(max(budgets), k) for k in waits if budgets]:
        outs = _run(model, tokenizer, prompts, budget, k, 0.0, seed, **run)
        right = [is_correct(ex, o.text, fmt) for ex, o in zip(examples, outs, strict=True)]
        sequential.append(dict(budget=budget, waits=k, accuracy=sum(right) / len(right),
                               tokens=sum(len(o.token_ids) for o in outs) / len(outs),
                               thinking=sum(o.thinking_tokens for o in outs) / len(outs)))  # fmt: skip
        say(f"sequential {sequential[-1]}")
    pb = min(budgets) if parallel_budget is None else parallel_budget
    if not ns:
        return dict(n_problems=len(examples), seed=seed, temperature=temperature, sequential=sequential,
                    parallel=[])  # fmt: skip
    many = [p for p in prompts for _ in range(max(ns))]
    outs = _run(model, tokenizer, many, pb, 0, temperature, seed, **run)
    groups = [outs[i * max(ns) : (i + 1) * max(ns)] for i in range(len(examples))]  # (P, max(ns))
    parallel = []
    for n in ns:
        right = [
            majority_vote(ex, [o.text for o in g[:n]], fmt)[1] for ex, g in zip(examples, groups, strict=True)
        ]
        tokens = sum(len(o.token_ids) for g in groups for o in g[:n]) / len(groups)
        parallel.append(dict(n=n, budget=pb, accuracy=sum(right) / len(right), tokens=tokens))
        say(f"parallel {parallel[-1]}")
    return dict(n_problems=len(examples), seed=seed, temperature=temperature, sequential=sequential,
                parallel=parallel)  # fmt: skip


def plot_curves(curves: dict, title: str = "test-time scaling", ax=None):
    """Accuracy against tokens spent per problem (log scale), sequential and parallel on one axes (``ax``,
    or a new figure's); returns the figure."""
    from matplotlib.figure import Figure

    ax = Figure(figsize=(6, 4)).add_subplot() if ax is None else ax
    seq, par = curves["sequential"], curves["parallel"]
    ax.plot([p["tokens"] for p in seq], [p["accuracy"] for p in seq], "o-", label="sequential (budget, Wait)")
    for p in seq:
        label = f"{p['budget']}" + (f"+{p['waits']}W" if p["waits"] else "")
        ax.annotate(
            label, (p["tokens"], p["accuracy"]), fontsize=7, xytext=(2, 4), textcoords="offset points"
        )
    ax.plot([p["tokens"] for p in par], [p["accuracy"] for p in par], "s--", label="parallel (majority of n)")
    for p in par:
        ax.annotate(f"n={p['n']}", (p["tokens"], p["accuracy"]), fontsize=7, xytext=(2, -10),
                    textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("tokens generated per problem")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax.figure


def write_curves(out_dir, result: dict, title: str = "test-time scaling") -> tuple[Path, Path]:
    """``curves.json`` and ``curves.png`` in ``out_dir``, each written atomically."""
    import io

    out = Path(out_dir)
    js = write_atomic(out / "curves.json", json.dumps(result, indent=2).encode())
    buf = io.BytesIO()
    plot_curves(result.get("curves", result), title).savefig(buf, format="png", dpi=120)
    return js, write_atomic(out / "curves.png", buf.getvalue())


@dataclass
class S1RunConfig:
    """``python -m rl.s1``: traces on the train split, SFT, curves on the test split before and after.
    Arithmetic is 1-2 digit ``+`` and ``-``, what SmolLM2-135M solves a little."""

    out_dir: str = "runs/s1"
    smoke: bool = field(default=False, metadata={"help": "a tiny random GPT, seconds"})
    task: str = field(default="arithmetic", metadata={"choices": ("arithmetic", "countdown", "gsm8k")})
    n_train: int = field(default=32, metadata={"help": "train problems to sample traces for"})
    n_samples: int = 4
    trace_budget: int = 64
    n_test: int = field(default=32, metadata={"help": "held-out (test split) problems for the curves"})
    budgets: tuple[int, ...] = (16, 32, 64, 128)
    waits: tuple[int, ...] = (1, 2)
    ns: tuple[int, ...] = (1, 2, 4, 8)
    temperature: float = 0.7
    parallel_budget: int | None = field(default=None, metadata={"help": "thinking cap of the voted samples"})
    before: bool = field(default=True, metadata={"help": "measure the curves before the fine-tune"})
    sft: bool = field(default=True, metadata={"help": "generate traces, fine-tune, measure the curves again"})
    sft_steps: int = 20
    device: str = "auto"
    seed: int = 0

    def __post_init__(self):
        if min(self.n_train, self.n_samples, self.n_test, self.sft_steps) < 1:
            raise ValueError("n_train, n_samples, n_test and sft_steps must be >= 1")


def main(cfg: S1RunConfig) -> dict:
    """Curves, traces -> SFT -> curves; writes ``traces.jsonl``, ``curves.json`` and ``curves.png`` (the
    latest curves) to ``out_dir``."""
    import time

    from gpt.training.distributed import pick_device
    from lora.finetune import load_base

    model, tok = load_base(cfg.smoke, cfg.seed)
    model = model.float().to(pick_device(cfg.device)).eval()
    name = "tiny-random-gpt" if cfg.smoke else "SmolLM2-135M-Instruct"
    kw = dict(digits=(1, 2), ops="+-") if cfg.task == "arithmetic" else {}
    train = make_examples(cfg.task, cfg.n_train, "train", cfg.seed, **kw)
    test = make_examples(cfg.task, cfg.n_test, "test", cfg.seed, **kw)
    grid = dict(budgets=cfg.budgets, waits=cfg.waits, ns=cfg.ns, seed=cfg.seed, temperature=cfg.temperature,
                parallel_budget=cfg.parallel_budget, log=lambda m: print(m, flush=True))  # fmt: skip
    t0 = time.perf_counter()
    before = scaling_curves(model, tok, test, **grid) if cfg.before else None
    kept, sampled, after, sft = [], 0, None, None
    if cfg.sft:
        kept, sampled = generate_traces(model, tok, train, cfg.n_samples, cfg.trace_budget, cfg.seed,
                                        cfg.temperature, name)  # fmt: skip
        save_traces(Path(cfg.out_dir) / "traces.jsonl", kept)
        print(f"traces: kept {len(kept)} of {sampled} ({cfg.n_train} problems x {cfg.n_samples}), verified",
              flush=True)  # fmt: skip
    if kept:
        sft = finetune_on_traces(
            model, tok, kept, SFTConfig(steps=cfg.sft_steps, out_dir=f"{cfg.out_dir}/sft", device=cfg.device)
        )
        after = scaling_curves(model, tok, test, **grid)
    result = dict(config=asdict(cfg), model=name, kept=len(kept), sampled=sampled, before=before, after=after,
                  sft=None if sft is None else {k: v for k, v in sft.items() if k != "out_dir"},
                  wall_s=time.perf_counter() - t0)  # fmt: skip
    if after or before:
        write_curves(cfg.out_dir, {**result, "curves": after or before}, f"{name}, {cfg.task} test")
    for label, curves in (("before", before), ("after", after)):
        for p in (curves or {}).get("sequential", []):
            point = f"budget {p['budget']:>4} +{p['waits']}W"
            print(f"{label} {point}: acc {p['accuracy']:.3f}, {p['tokens']:.1f} tok")
        for p in (curves or {}).get("parallel", []):
            print(f"{label} n={p['n']}: acc {p['accuracy']:.3f}, {p['tokens']:.1f} tok")
    print(f"outputs in {cfg.out_dir}/ after {result['wall_s']:.0f} s")
    return result


if __name__ == "__main__":
    import sys

    from gpt.flags import parse_dataclass

    smoke = "--smoke" in sys.argv[1:]
    small = dict(smoke=True, out_dir="runs/s1-smoke", n_train=4, n_samples=2, trace_budget=8, n_test=4,
                 budgets=(4, 8), waits=(1,), ns=(1, 2), sft_steps=2)  # fmt: skip
    defaults = S1RunConfig(**small) if smoke else S1RunConfig()
    main(parse_dataclass(S1RunConfig, defaults=defaults, description=__doc__.split("\n\n")[0]))
