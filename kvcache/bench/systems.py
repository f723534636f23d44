"""The systems the serving benchmark compares, built on one model: HF ``generate``, our engine (fp32, INT8,
INT4, prompt lookup) and llama.cpp, each as ``run(requests, arrival_times) -> traces`` plus its notes.

Reference libraries (transformers, llama_cpp) and quant are imported inside the functions that need them.
"""

import copy
import inspect
from pathlib import Path

import torch

from gpt import GPT, to_hf
from gpt.sizes import SIZES
from gpt.training.precision import DTYPES
from kvcache.bench.load import (
    drive_engine,
    drive_hf,
    drive_llama_cpp,
    engine_info,
)
from kvcache.bench.serving_config import ServingConfig
from kvcache.engine import LLMEngine
from kvcache.speculative import PromptLookup


def engine_options(cfg: ServingConfig) -> dict:
    """The GPU options of ``LLMEngine`` the config asks for; a clear error where this engine lacks one."""
    opts = {"attention": cfg.attention} if cfg.attention != "auto" else {}
    opts |= {k: True for k in ("cuda_graphs", "compile") if getattr(cfg, k)}
    missing = [k for k in opts if k not in inspect.signature(LLMEngine).parameters]
    if missing:
        raise ValueError(f"this LLMEngine has no {missing} option (kvcache/engine.py); drop those flags")
    return opts


# -- systems: each builds its model once and returns run(reqs, arrivals) -> (traces, info) ----------------


def make_engine(cfg: ServingConfig, model: GPT, **overrides) -> LLMEngine:
    kw = dict(
        block_size=cfg.block_size,
        memory_budget=int(cfg.kv_budget_mib * 2**20),
        max_num_seqs=cfg.batch,
        enable_prefix_caching=cfg.prefix_caching,
        **engine_options(cfg),
    )
    return LLMEngine(model, **{**kw, **overrides})


def engine_system(cfg: ServingConfig, model: GPT, eos, **overrides):
    def run(reqs, arrivals):
        eng = make_engine(cfg, model, **overrides)  # a fresh pool: no prefix cache carried between runs
        traces = drive_engine(eng, reqs, arrivals, eos)
        sync(model)
        return traces, engine_info(eng)

    return run


def quantized(cfg: ServingConfig, model: GPT, scheme: str) -> GPT:
    """A copy in ``scheme``; with ``quant_head`` the tied head (also the embedding) in int8, as
    ``quant.bench`` and llama.cpp's 4-bit files keep it."""
    from quant import quantize_model

    q = quantize_model(copy.deepcopy(model), scheme)
    return quantize_model(q, "int8", quantize_tied=True) if cfg.quant_head else q


def llama_cpp_file(
    model_name: str, cfg: ServingConfig, model: GPT, tok, tmp: Path
) -> tuple[Path | None, str]:
    """The GGUF llama.cpp runs: the shipped file, or for ``--n-layer`` our Q4_1 export of the same layers."""
    from quant import export_gguf
    from quant.load import smollm2_path

    if model_name != "smollm2":
        return None, "no GGUF of a random GPT-2 (our exporter writes the Llama flavour)"
    if cfg.n_layer is None:
        return smollm2_path(), "the shipped Q4_1 file"
    path = export_gguf(model, tok, tmp / f"smollm2-{cfg.n_layer}-layers.Q4_1.gguf", "Q4_1")
    return path, f"our Q4_1 export of its first {cfg.n_layer} layers"


def build_system(key: str, cfg: ServingConfig, model_name: str, model: GPT, tok, tmp: Path):
    """(label, run or None, note) for one system of the table."""
    eos = None if cfg.ignore_eos else tok.eos_id
    dt = cfg.dtype
    if key == "engine":
        return f"engine {dt}", engine_system(cfg, model, eos), ""
    if key in ("int8", "int4"):
        scheme = "int8" if key == "int8" else "int4-g32"
        head = ", head int8" if cfg.quant_head else ""
        return f"engine {scheme}{head}", engine_system(cfg, quantized(cfg, model, scheme), eos), ""
    if key == "lookup":
        pl = PromptLookup(num_tokens=cfg.lookup_tokens, max_ngram=cfg.lookup_max_ngram)
        return f"engine {dt} + prompt lookup", engine_system(cfg, model, eos, speculative=pl), ""
    if key == "hf":
        hf = to_hf(model).to(device=_device(model), dtype=DTYPES[dt]).eval()
        pad = tok.eos_id if tok.eos_id is not None else 0
        hf.generation_config.eos_token_id, hf.generation_config.pad_token_id = eos, pad  # None: no stop

        def run_hf(reqs, arrivals):
            return drive_hf(hf, reqs, arrivals, cfg.batch), {}

        return f"HF generate {dt} (static batches)", run_hf, ""
    assert key == "llama_cpp", key
    try:
        import llama_cpp
    except ImportError as err:
        return "llama.cpp (single stream)", None, f"llama-cpp-python is not installed ({err})"
    path, what = llama_cpp_file(model_name, cfg, model, tok, tmp)
    if path is None:
        return "llama.cpp (single stream)", None, what
    n_ctx = cfg.prompt_tokens[1] + cfg.max_tokens[1] + 8
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_threads=cfg.threads,
        n_threads_batch=cfg.threads,
        n_gpu_layers=0,
        verbose=False,
    )

    def run_llama(reqs, arrivals):
        return drive_llama_cpp(llm, reqs, arrivals, eos), {}

    return f"llama.cpp {path.name.split('.')[-2]}, CPU (single stream)", run_llama, what


def _device(model: GPT) -> torch.device:
    return next(model.parameters()).device


def sync(model: GPT):
    if _device(model).type == "cuda":
        torch.cuda.synchronize(_device(model))


# -- sections ---------------------------------------------------------------------------------------------


def load_model(name: str, cfg: ServingConfig):
    """(fp32 model on the device, SmolLM2's tokenizer): the prompts are SmolLM2's for every model."""
    from quant import read_gguf, tokenizer_from_gguf
    from quant.load import load_gguf, smollm2_path

    if name == "smollm2":
        return load_gguf(n_layer=cfg.n_layer, device=cfg.device)
    tok = tokenizer_from_gguf(read_gguf(smollm2_path()).metadata)
    torch.manual_seed(cfg.seed)
    return GPT(SIZES["124m"].gpt_config()).to(cfg.device).eval(), tok
