"""Load for a serving benchmark: seeded arrival times, one driver per kind of system, and what each
request's client saw (TTFT, inter-token latency, throughput).

Teaches how vLLM's ``benchmarks/benchmark_serving.py`` measures a server, without the network: requests
arrive as a Poisson process of a given rate (or all at t=0, an offline batch); a driver hands each to
the system under test once it is due and stamps every generated token with the time it came back. From
those :class:`Trace` s, :func:`summarize` computes generated tokens/s over the whole run and the
percentiles of time to first token (arrival -> first token, queueing included), inter-token latency
(the gaps between a request's tokens) and request latency. Three drivers, one per way of serving:

- :func:`drive_engine`: continuous batching (``LLMEngine``): add what is due, step, repeat;
- :func:`drive_hf`: static batches (HF ``generate``): take what has arrived, run it to completion;
- :func:`drive_llama_cpp`: one request after another (llama.cpp's single stream).

References: vLLM ``benchmarks/benchmark_serving.py`` (``get_request``'s Poisson arrivals, TTFT / ITL);
Yu et al. 2022 (Orca: static vs iteration-level batching).
"""

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from kvcache.engine import LLMEngine
from kvcache.request import SamplingParams
from kvcache.workloads import ChatRequest

# -- load: arrival times, and what each request saw ------------------------------------------------------


def arrival_times(n: int, rate: float | None, seed: int) -> list[float]:
    """Seconds after the start: a Poisson process of ``rate`` req/s (first at 0), or all at 0 (None)."""
    if rate is None:
        return [0.0] * n
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, n)
    gaps[0] = 0.0
    return np.cumsum(gaps).tolist()


@dataclass
class Trace:
    """One request as its client saw it: arrival and each generated token's time (s after the start)."""

    arrival: float
    tokens: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def extend(self, tokens: list[int], t: float):
        """``tokens`` generated so far, delivered at ``t``; several new ones (accepted prompt-lookup
        drafts) share the time since the previous delivery evenly, so ITL stays a per-token figure."""
        new = len(tokens) - len(self.tokens)
        prev = self.times[-1] if self.times else t
        self.times += [prev + (t - prev) * j / new for j in range(1, new + 1)]
        self.tokens = list(tokens)


def pct(xs: list[float], p: float) -> float | None:
    return float(np.percentile(xs, p)) if xs else None


def summarize(traces: list[Trace]) -> dict:
    """Throughput over the whole run (start to last token) and TTFT / ITL / latency percentiles."""
    wall = max(t.times[-1] for t in traces if t.times)
    tokens = sum(len(t.tokens) for t in traces)
    row = dict(
        requests=len(traces),
        gen_tokens=tokens,
        wall_s=wall,
        tok_per_s=tokens / wall,
        req_per_s=len(traces) / wall,
    )
    series = {
        "ttft": [t.times[0] - t.arrival for t in traces if t.times],
        "itl": [b - a for t in traces for a, b in zip(t.times, t.times[1:], strict=False)],
        "lat": [t.times[-1] - t.arrival for t in traces if t.times],
    }
    for name, xs in series.items():
        for p in (50, 90, 99):
            row[f"{name}_p{p}_s"] = pct(xs, p)
    return row


def sleep_until(t0: float, t: float):
    time.sleep(max(0.0, t - (time.perf_counter() - t0)))


# -- drivers: one per kind of system ---------------------------------------------------------------------


def params_for(req: ChatRequest, eos: int | None) -> SamplingParams:
    return SamplingParams(
        temperature=0.0, max_tokens=req.max_tokens, stop_token_ids=() if eos is None else (eos,)
    )


def drive_engine(engine: LLMEngine, reqs: list[ChatRequest], arrivals: list[float], eos) -> list[Trace]:
    """Add each request when it is due, step while anything runs, sleep until the next arrival otherwise.
    A request that arrives during a step joins at the next one (its wait counts in its TTFT)."""
    traces = [Trace(a) for a in arrivals]
    order = sorted(range(len(reqs)), key=arrivals.__getitem__)
    t0, nxt = time.perf_counter(), 0
    while nxt < len(order) or engine.has_unfinished():
        now = time.perf_counter() - t0
        while nxt < len(order) and arrivals[order[nxt]] <= now:
            i = order[nxt]
            engine.add_request(reqs[i].prompt_ids, params_for(reqs[i], eos), request_id=str(i))
            nxt += 1
        if not engine.has_unfinished():
            sleep_until(t0, arrivals[order[nxt]])
            continue
        outs = engine.step()
        t = time.perf_counter() - t0
        for out in outs:
            traces[int(out.request_id)].extend(out.token_ids, t)
    return traces


def drive_hf(hf, reqs: list[ChatRequest], arrivals: list[float], batch: int) -> list[Trace]:
    """Static batching: whatever has arrived (up to ``batch``), left-padded, generated to completion.
    The stop token (or None) and the pad token are ``hf.generation_config``'s."""
    from transformers.generation.streamers import BaseStreamer

    class StepClock(BaseStreamer):  # generate() calls put() with the prompt, then after every step
        def __init__(self):
            self.times = None

        def put(self, value):
            if self.times is None:
                self.times = []
            else:  # put() receives the new tokens on the CPU: the step has finished
                self.times.append(time.perf_counter() - t0)

        def end(self):
            pass

    device = next(hf.parameters()).device
    eos, pad = hf.generation_config.eos_token_id, hf.generation_config.pad_token_id
    traces = [Trace(a) for a in arrivals]
    order = sorted(range(len(reqs)), key=arrivals.__getitem__)
    t0, done = time.perf_counter(), 0
    while done < len(order):
        now = time.perf_counter() - t0
        if arrivals[order[done]] > now:
            sleep_until(t0, arrivals[order[done]])
            continue
        group = [i for i in order[done : done + batch] if arrivals[i] <= now]
        done += len(group)
        T = max(len(reqs[i].prompt_ids) for i in group)
        x = torch.full((len(group), T), pad, dtype=torch.long)
        mask = torch.zeros_like(x)
        for b, i in enumerate(group):  # left padding: every row's last prompt token at T - 1
            p = reqs[i].prompt_ids
            x[b, T - len(p) :], mask[b, T - len(p) :] = torch.tensor(p), 1
        clock = StepClock()
        y = hf.generate(
            x.to(device),
            attention_mask=mask.to(device),
            do_sample=False,
            streamer=clock,
            max_new_tokens=max(reqs[i].max_tokens for i in group),
        )
        for b, i in enumerate(group):
            out = y[b, T:].tolist()[: reqs[i].max_tokens]
            if eos is not None and eos in out:
                out = out[: out.index(eos) + 1]  # the rest is padding after this row finished
            traces[i].tokens, traces[i].times = out, clock.times[: len(out)]
    return traces


def drive_llama_cpp(llm, reqs: list[ChatRequest], arrivals: list[float], eos) -> list[Trace]:
    """One request after another in arrival order (a single stream), greedy, stopping at ``eos``."""
    traces = [Trace(a) for a in arrivals]
    t0 = time.perf_counter()
    for i in sorted(range(len(reqs)), key=arrivals.__getitem__):
        sleep_until(t0, arrivals[i])
        tr, limit = traces[i], reqs[i].max_tokens
        for tok in llm.generate(reqs[i].prompt_ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            tr.tokens.append(tok)
            tr.times.append(time.perf_counter() - t0)
            if tok == eos or len(tr.tokens) == limit:
                break
    return traces


def engine_info(eng: LLMEngine) -> dict:
    drafts, accepted = eng.stats["draft_tokens"], eng.stats["accepted_tokens"]
    return dict(
        kv_waste=eng.kv_waste(),
        preemptions=eng.scheduler.num_preemptions,
        steps=eng.stats["steps"],
        max_running=eng.stats["max_running"],
        draft_tokens=drafts,
        accepted_tokens=accepted,
        acceptance=accepted / drafts if drafts else None,
    )
