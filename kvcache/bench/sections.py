"""The serving benchmark's sections: every system at every load (the table), prompt lookup by batch size,
the engine's batch / block / memory-budget sweeps, the OpenAI server against the offline engine, and on
CUDA a dtype x batch-size table. Each returns the dicts that ``kvcache.bench.serving_report`` prints.
"""

import copy
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from gpt import GPT
from gpt.training.precision import DTYPES
from kvcache.bench.load import (
    arrival_times,
    pct,
    summarize,
)
from kvcache.bench.serving_config import ServingConfig
from kvcache.bench.systems import build_system, engine_system, make_engine
from kvcache.memory import kv_cache_bytes
from kvcache.speculative import PromptLookup
from kvcache.workloads import ChatRequest, copy_heavy_workload


def table(cfg: ServingConfig, model_name: str, model: GPT, tok, work: list[ChatRequest], loads, tmp) -> tuple:
    """Every system at every load point; returns (rows, offline tokens per system, notes)."""
    rows, offline, notes = [], {}, {}
    systems = [s for s in cfg.systems if not (model_name != "smollm2" and s == "llama_cpp")]
    warm = [dataclasses.replace(r, max_tokens=2) for r in work[:4]]  # a small batch: prefill and decode
    bar = tqdm(total=len(systems) * len(loads), desc=f"{model_name}: systems x loads")
    for key in systems:
        label, run, note = build_system(key, cfg, model_name, model, tok, tmp)
        if note:
            notes[key] = note
        if run is None:
            bar.update(len(loads))
            continue
        run(warm, [0.0] * len(warm))  # first-call costs (allocator, threads, kernels) outside the timing
        for load, rate, n in loads:
            traces, info = run(work[:n], arrival_times(n, rate, cfg.seed))
            rows.append(
                dict(
                    model=model_name, system=label, key=key, load=load, rate=rate, **summarize(traces), **info
                )
            )
            if rate is None:
                offline[key] = [t.tokens for t in traces]
            bar.update(1)
        del run
    bar.close()
    for row in rows:  # ratios at the same load point
        peers = {
            r["key"]: r["tok_per_s"] for r in rows if r["load"] == row["load"] and r["model"] == row["model"]
        }
        row["vs_hf"] = row["tok_per_s"] / peers["hf"] if "hf" in peers else None
        row["vs_llama_cpp"] = row["tok_per_s"] / peers["llama_cpp"] if "llama_cpp" in peers else None
    return rows, offline, notes


def agreement(offline: dict) -> dict:
    """Fraction of offline requests whose greedy tokens equal the plain engine's (same dtype), per system."""
    if "engine" not in offline:
        return {}
    ref = offline["engine"]
    return {
        k: sum(a == b for a, b in zip(v, ref, strict=True)) / len(ref)
        for k, v in offline.items()
        if k != "engine"
    }


def lookup_section(cfg: ServingConfig, model: GPT, tok, rows: list[dict], chat: list[ChatRequest]) -> dict:
    """Prompt lookup against plain decoding, offline: copy-heavy prompts at the bench's batch size, and
    copy-heavy and chat prompts one request at a time (``max_num_seqs=1``: the latency regime, where a
    decode step is bound by reading the weights and extra positions are nearly free). The chat row at
    the bench's batch comes from the table."""
    eos = None if cfg.ignore_eos else tok.eos_id
    work = copy_heavy_workload(
        tok,
        n=cfg.copy_requests,
        prompt_tokens=cfg.copy_prompt_tokens,
        max_tokens=cfg.copy_max_tokens,
        seed=cfg.seed,
    )
    pl = PromptLookup(num_tokens=cfg.lookup_tokens, max_ngram=cfg.lookup_max_ngram)

    def pair(reqs: list[ChatRequest], **over) -> dict:
        res = {}
        for name, extra in (("plain", {}), ("lookup", {"speculative": pl})):
            traces, info = engine_system(cfg, model, eos, **over, **extra)(reqs, [0.0] * len(reqs))
            res[name] = dict(summarize(traces), **info, tokens=[t.tokens for t in traces])
        same = [a == b for a, b in zip(res["plain"]["tokens"], res["lookup"]["tokens"], strict=True)]
        return dict(
            speedup=res["lookup"]["tok_per_s"] / res["plain"]["tok_per_s"],
            acceptance=res["lookup"]["acceptance"],
            plain_tok_per_s=res["plain"]["tok_per_s"],
            lookup_tok_per_s=res["lookup"]["tok_per_s"],
            identical=sum(same) / len(reqs),
            requests=len(reqs),
            batch=over.get("max_num_seqs", cfg.batch),
            prompt_tokens_mean=float(np.mean([len(r.prompt_ids) for r in reqs])),
        )

    out = {"lookup_tokens": cfg.lookup_tokens, "min_ngram": pl.min_ngram, "max_ngram": pl.max_ngram}
    out["copy_heavy"] = pair(work)
    out["copy_heavy_single"] = pair(work, max_num_seqs=1)
    out["chat_single"] = pair(chat[: cfg.copy_requests], max_num_seqs=1)
    table = {r["key"]: r for r in rows if r["load"] == "offline" and r["key"] in ("engine", "lookup")}
    out["chat"] = None
    if len(table) == 2:
        out["chat"] = dict(
            speedup=table["lookup"]["tok_per_s"] / table["engine"]["tok_per_s"],
            acceptance=table["lookup"]["acceptance"],
            plain_tok_per_s=table["engine"]["tok_per_s"],
            lookup_tok_per_s=table["lookup"]["tok_per_s"],
            batch=cfg.batch,
        )
    return out


def sweeps(cfg: ServingConfig, model: GPT, tok, work: list[ChatRequest]) -> dict:
    """Offline engine runs on ``sweep_requests`` chat requests: batch size, block size, KV budget."""
    eos = None if cfg.ignore_eos else tok.eos_id
    zeros = [0.0] * len(work)
    per_seq = [len(r.prompt_ids) + r.max_tokens for r in work]
    dt = next(model.parameters()).dtype

    def peak(bs):  # KV bytes to hold every request's whole sequence at once, in blocks of bs
        return sum(kv_cache_bytes(model.config, -(-n // bs) * bs, dt) for n in per_seq)

    def one(**over):
        traces, info = engine_system(cfg, model, eos, **over)(work, zeros)
        s = summarize(traces)
        keep = ("tok_per_s", "ttft_p50_s", "itl_p50_s", "lat_p50_s")
        return {k: s[k] for k in keep} | {k: info[k] for k in ("kv_waste", "preemptions", "max_running")}

    runs = [("batch", b, {"max_num_seqs": b}) for b in cfg.batch_sweep]
    runs += [("block", b, {"block_size": b}) for b in cfg.block_sweep]
    one_seq = kv_cache_bytes(model.config, -(-max(per_seq) // cfg.block_size) * cfg.block_size, dt)
    for f in cfg.budget_sweep:  # never below one whole request, which the pool must hold alone
        budget = max(int(f * peak(cfg.block_size)), one_seq)
        runs.append(("budget", f, {"memory_budget": budget, "max_num_seqs": len(work)}))
    out = {"batch": [], "block": [], "budget": []}
    for kind, value, over in tqdm(runs, desc="engine sweeps"):
        row = {kind: value, **one(**over)}
        if kind == "budget":
            row["budget_mib"] = over["memory_budget"] / 2**20
        out[kind].append(row)
    out["peak_mib"] = peak(cfg.block_size) / 2**20
    return out


def server_section(cfg: ServingConfig, model: GPT, tok, work: list[ChatRequest]) -> dict:
    """The workload through ``kvcache.serve`` (OpenAI chat API, streamed), all requests sent at once from
    threads, against the offline engine on the same requests and settings, timed just before."""
    try:
        import openai

        from kvcache.serve import Server, build_app
    except ImportError as err:
        return {"skipped": f"kvcache.serve or the openai client is not importable: {err}"}
    eos = None if cfg.ignore_eos else tok.eos_id
    offline = summarize(engine_system(cfg, model, eos)(work, [0.0] * len(work))[0])
    engine = make_engine(cfg, model, tokenizer=tok)
    extra = {"ignore_eos": True} if cfg.ignore_eos else {}

    def one(req: ChatRequest, client, t0: float) -> tuple[float | None, int, float]:
        stream = client.chat.completions.create(
            model="bench",
            messages=req.messages,
            max_tokens=req.max_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=extra,
        )
        first, n = None, 0
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - t0
            if chunk.usage is not None:
                n = chunk.usage.completion_tokens
        return first, n, time.perf_counter() - t0

    with Server(build_app(engine, "bench")) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=3600)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(work)) as pool:
            got = list(pool.map(lambda r: one(r, client, t0), work))
    wall = max(end for _, _, end in got)
    tokens = sum(n for _, n, _ in got)
    ttft = [f for f, _, _ in got if f is not None]
    row = dict(
        requests=len(work),
        gen_tokens=tokens,
        wall_s=wall,
        tok_per_s=tokens / wall,
        ttft_p50_s=pct(ttft, 50),
        ttft_p99_s=pct(ttft, 99),
        lat_p50_s=pct([e for *_, e in got], 50),
    )
    row |= dict(
        offline_tok_per_s=offline["tok_per_s"],
        offline_gen_tokens=offline["gen_tokens"],
        vs_offline=row["tok_per_s"] / offline["tok_per_s"],
    )
    return row


def dtype_batch(cfg: ServingConfig, base: GPT, tok, work: list[ChatRequest]) -> list[dict]:
    """CUDA: engine throughput for each dtype x max_num_seqs, offline on the sweep requests."""
    eos = None if cfg.ignore_eos else tok.eos_id
    rows = []
    for dt in cfg.dtype_sweep:
        model = copy.deepcopy(base).to(DTYPES[dt])
        for b in tqdm(cfg.batch_sweep, desc=f"dtype {dt} x batch"):
            traces, _ = engine_system(cfg, model, eos, max_num_seqs=b)(work, [0.0] * len(work))
            rows.append(dict(dtype=dt, batch=b, tok_per_s=summarize(traces)["tok_per_s"]))
        del model
    return rows


# -- main -------------------------------------------------------------------------------------------------
