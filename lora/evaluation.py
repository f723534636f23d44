"""Measuring a fine-tune: the masked validation loss, and a task metric from greedy generations.

Teaches the two numbers a fine-tune is judged by. The *domain loss* is the fine-tuning objective on
held-out examples: the loss summed over completion tokens only, divided by their count (not a mean of
per-batch means, which would weigh a short answer's tokens more). It moves smoothly, but a model can
lower it without getting better at the task. The *task metric* asks the question the user cares
about: for GSM8K, does the number after ``####`` in a greedy generation equal the gold answer
(``gpt.data.gsm8k``)? Generation runs through ``kvcache.LLMEngine`` (continuous batching over a paged
KV cache, stopping each sequence at the end token). The third number, the *forgetting* side, is
WikiText-2 perplexity (``gpt.perplexity``). A sharded model (``lora.sharded``) computes the loss on
every rank; generation needs whole weights, so they are gathered into a plain copy on rank 0.

Reference: Ouyang et al. 2022 (InstructGPT) and Cobbe et al. 2021 (GSM8K) for loss vs task accuracy;
lm-evaluation-harness ``gsm8k`` (greedy, exact match after extraction).
"""

import contextlib
from collections.abc import Sequence

import torch

from gpt.data.gsm8k import GSM8KProblem, exact_match, extract_answer
from gpt.model import IGNORE_INDEX
from gpt.sampling import sample_next
from gpt.training.distributed import DistInfo, all_reduce_mean
from gpt.training.precision import Precision
from kvcache import LLMEngine, SamplingParams
from kvcache.contiguous import ContiguousKVCache
from lora.examples import Example, chat_prompt, collate
from lora.prefix_tuning import PrefixCache, PrefixTuning
from lora.prompt_tuning import PromptTuning


@torch.no_grad()
def masked_loss(
    model,
    examples: Sequence[Example],
    batch_size: int,
    pad_id: int,
    info: DistInfo | None = None,
    precision: Precision | None = None,
) -> float:
    """Mean loss per target token over ``examples`` (completion tokens only), in eval mode.

    With several processes, rank r evaluates batches r, r + world_size, ... and the sums are
    all-reduced, so the number does not depend on the world size. Every rank runs the same number of
    forwards (a sharded model gathers its weights collectively inside each one): a rank with no batch
    left runs the first batch again and counts nothing.
    """
    if not examples:
        raise ValueError("masked_loss needs at least one example")
    device = next(model.parameters()).device if info is None else info.device
    rank, world = (0, 1) if info is None else (info.rank, info.world_size)
    batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of token losses, tokens)
    for start in range(0, len(batches), world):
        index = start + rank
        counted = index < len(batches)
        x, y = collate(batches[index if counted else 0], pad_id)
        with precision.autocast() if precision is not None else contextlib.nullcontext():
            loss = model(x.to(device), y.to(device))[1]
        if counted:
            n = int((y != IGNORE_INDEX).sum())
            sums += torch.stack([loss.double() * n, torch.tensor(n, dtype=torch.float64, device=device)])
    model.train(was_training)
    if info is not None:
        sums = all_reduce_mean(sums, info)  # the mean of sums has the same ratio
    loss_sum, tokens = sums.tolist()
    return loss_sum / tokens


@torch.no_grad()
def greedy_completions(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    """Greedy completions of chat-rendered ``prompts`` (strings ending where the assistant starts), each
    cut at the tokenizer's end token, in the order given: a GPT through ``kvcache.LLMEngine``, a prompt- or
    prefix-tuning wrapper through :func:`greedy_wrapped`."""
    if not prompts:
        return []
    if isinstance(model, (PromptTuning, PrefixTuning)):  # the engine serves a plain GPT only
        return greedy_wrapped(model, tokenizer, prompts, max_new_tokens, batch_size)
    was_training = model.training
    ids = [tokenizer.encode(p) for p in prompts]
    block = 16  # KV blocks for batch_size sequences of the longest prompt plus its answer, no more
    num_blocks = batch_size * -(-(max(map(len, ids)) + max_new_tokens) // block)
    engine = LLMEngine(model, block, num_blocks, max_num_seqs=batch_size, tokenizer=tokenizer)  # eval mode
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=(tokenizer.eos_id,))
    outputs = engine.generate(ids, params, use_tqdm=False)
    model.train(was_training)
    texts = []
    for out in outputs:
        ids = list(out.token_ids)
        if tokenizer.eos_id in ids:
            ids = ids[: ids.index(tokenizer.eos_id)]
        texts.append(tokenizer.decode(ids))
    return texts


@torch.no_grad()
def greedy_wrapped(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy completions of chat-rendered ``prompts`` through a :class:`PromptTuning` or
    :class:`PrefixTuning` wrapper, cut at the end token: static batches, ragged prompts right-padded in
    a contiguous cache (``kvcache.contiguous``) behind the virtual tokens or the prefix."""
    gpt, eos, texts = model.model, tokenizer.eos_id, []
    w, was_training = gpt.wte.weight, model.training
    model.eval()
    for i in range(0, len(prompts), batch_size):
        ids = [tokenizer.encode(p) for p in prompts[i : i + batch_size]]
        B, lens = len(ids), [len(s) for s in ids]
        T, P = max(lens), model.n_virtual
        if isinstance(model, PromptTuning):  # the virtual tokens take positions 0..P-1 of every row
            cache = inner = ContiguousKVCache(gpt.config, B, P + T + max_new_tokens, w.dtype, w.device)
            gpt(inputs_embeds=model.prompt.to(w.dtype).expand(B, -1, -1), cache=cache)
        else:  # the prefix sits in front of every layer's keys and values
            inner = ContiguousKVCache(gpt.config, B, T + max_new_tokens, w.dtype, w.device)
            cache = PrefixCache(model.prefix, B, inner)
        x = torch.tensor([s + [eos] * (T - len(s)) for s in ids], device=w.device)  # (B, T) right-padded
        inner.set_new_tokens(lens)
        logits, _ = gpt(x, cache=cache)  # (B, T, vocab)
        last = logits[torch.arange(B), torch.tensor(lens) - 1]  # (B, vocab): each row's last real token
        out, done = [[] for _ in ids], [False] * B
        for step in range(max_new_tokens):
            nxt = sample_next(last, temperature=0.0)  # (B, 1)
            for b, t in enumerate(nxt[:, 0].tolist()):
                done[b] = done[b] or t == eos
                if not done[b]:
                    out[b].append(t)
            if all(done) or step + 1 == max_new_tokens:
                break
            last = gpt(nxt, cache=cache)[0][:, -1]  # (B, vocab)
        texts += [tokenizer.decode(o) for o in out]
    model.train(was_training)
    return texts


def gsm8k_exact_match(
    model, tokenizer, problems: Sequence[GSM8KProblem], max_new_tokens: int = 256, batch_size: int = 8
) -> dict:
    """Share of ``problems`` whose greedy answer (:func:`gpt.data.gsm8k.extract_answer`) equals the gold
    number; also every (question, generation, extracted, gold, correct) row."""
    prompts = [chat_prompt(tokenizer, p.question) for p in problems]
    texts = greedy_completions(model, tokenizer, prompts, max_new_tokens, batch_size)
    rows = []
    for problem, text in zip(problems, texts, strict=True):
        pred = extract_answer(text)
        gold = problem.final
        rows.append(dict(question=problem.question, generation=text, pred=pred, gold=gold))
        rows[-1]["correct"] = exact_match(pred, gold)
    accuracy = sum(r["correct"] for r in rows) / len(rows) if rows else 0.0
    return {"exact_match": accuracy, "n": len(rows), "rows": rows}


def domain_metrics(
    model,
    tokenizer,
    problems: Sequence[GSM8KProblem],
    ppl_tokens: torch.Tensor,
    ppl_window: int,
    max_new_tokens: int = 256,
    gen_batch: int = 8,
) -> dict:
    """The task and forgetting numbers of a fine-tune: GSM8K ``exact_match`` on ``problems`` (with every
    generation in ``rows``) and ``wikitext2_ppl`` on ``ppl_tokens`` (n,) in windows of ``ppl_window``.
    The domain val loss is :func:`masked_loss`."""
    from gpt.perplexity import perplexity

    em = gsm8k_exact_match(model, tokenizer, problems, max_new_tokens, gen_batch)
    was_training = model.training
    model.eval()
    ppl = perplexity(model, ppl_tokens, ppl_window)
    model.train(was_training)
    return dict(exact_match=em["exact_match"], wikitext2_ppl=ppl, rows=em["rows"])


def gathered_model(model, plain, info: DistInfo):
    """The trained weights of a sharded ``model`` in ``plain`` (an unsharded copy of it) on rank 0, for
    generation and perplexity there; None on the other ranks. Collective: every rank calls it. With
    one process ``model`` is already whole and comes back as it is."""
    if not info.ddp:
        return model
    from lora.sharded import full_state_dict

    state = full_state_dict(model)  # the full CPU state dict on rank 0, {} elsewhere
    if not info.is_master:
        return None
    plain.load_state_dict(state)
    return plain


def memory_line(report: dict) -> str:
    """One rank's ``lora.sharded.memory_report`` in a line: allocated MB of parameters, gradients and
    optimizer moments, each as a share of the unsharded size (the arithmetic says 1/N, plus padding)."""
    parts = []
    for kind in ("params", "grads", "optimizer"):
        got = report[kind]
        parts.append(f"{kind} {got['allocated'] / 2**20:.2f} MB ({got['allocated'] / got['full']:.4f} of "
                     f"{got['full'] / 2**20:.2f} MB)")  # fmt: skip
    N = report["world_size"]
    return f"rank {report['rank']} of {N}: " + ", ".join(parts) + f"; 1/N = {1 / N:.4f}"


def plot_report(result: dict, path) -> None:
    """Train and val loss against step, and the three numbers before and after, to one PNG."""
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    history, before, after = result["history"], result["before"], result["after"]
    fig = Figure(figsize=(15, 3.6))
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [2.2, 1, 1, 1]})
    for key, style, label in (("train_losses", "-", "train"), ("val_losses", "o-", "val (held out)")):
        if history[key]:
            steps, losses = zip(*history[key], strict=True)
            axes[0].plot(steps, losses, style, label=label)
    axes[0].set(xlabel="step", ylabel="loss on completion tokens (nats)", title="fine-tuning")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    titles = {"val_loss": "domain val loss", "exact_match": "GSM8K exact match"}
    titles["wikitext2_ppl"] = "WikiText-2 perplexity"
    for ax, (key, title) in zip(axes[1:], titles.items(), strict=True):
        bars = ax.bar(["before", "after"], [before[key], after[key]], color=["tab:gray", "tab:blue"])
        ax.bar_label(bars, fmt="%.3g")
        ax.set_title(title)
    config = result["config"]
    fig.suptitle(f"{config['domain']}: {history['step']} steps of {config['batch_size']} examples")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
