"""The serving benchmark's configuration: every knob of ``python -m kvcache.bench --model smollm2``, checked.

Kept apart so that the systems and the sections (``kvcache.bench.systems``, ``kvcache.bench.sections``)
and the entry point (``kvcache.bench.serving``) can all name it.
"""

from dataclasses import dataclass, field

from gpt.sizes import SIZES
from gpt.training.precision import DTYPES

MODELS = ("smollm2", "gpt-124m")  # the shipped GGUF; a random GPT-2 small (same prompts, its own weights)
SYSTEMS = ("hf", "engine", "int8", "int4", "lookup", "llama_cpp")
ATTENTION = ("auto", "torch", "triton")


@dataclass
class ServingConfig:
    model: str = field(default="smollm2", metadata={"choices": MODELS, "help": "every section runs on it"})
    extra_models: tuple[str, ...] = field(default=(), metadata={"help": "offline table only (gpt-124m)"})
    device: str = "cpu"
    dtype: str = field(default="fp32", metadata={"choices": tuple(DTYPES)})
    threads: int = field(default=2, metadata={"help": "torch intra-op threads (and llama.cpp's)"})
    n_layer: int | None = field(default=None, metadata={"help": "SmolLM2's first layers only (smoke)"})
    systems: tuple[str, ...] = field(default=SYSTEMS, metadata={"help": f"of {SYSTEMS}"})
    requests: int = field(default=32, metadata={"help": "offline batch (all arrive at t=0)"})
    rates: tuple[float, ...] = field(default=(1.0, 4.0, 16.0), metadata={"help": "Poisson req/s"})
    rate_requests: int = field(default=12, metadata={"help": "requests per rate point"})
    prompt_tokens: tuple[int, int] = (20, 600)
    max_tokens: tuple[int, int] = (16, 96)
    ignore_eos: bool = field(default=False, metadata={"help": "run every request to max_tokens"})
    batch: int = field(default=16, metadata={"help": "engine max_num_seqs and HF's static batch"})
    block_size: int = 16
    kv_budget_mib: float = field(default=512.0, metadata={"help": "the engine's KV pool (memory_budget)"})
    prefix_caching: bool = True
    quant_head: bool = field(default=True, metadata={"help": "INT8/INT4 rows: the tied head in int8 too"})
    lookup_tokens: int = field(default=4, metadata={"help": "prompt-lookup draft tokens per step"})
    lookup_max_ngram: int = 3
    copy_requests: int = field(default=8, metadata={"help": "copy-heavy requests (prompt lookup)"})
    copy_prompt_tokens: tuple[int, int] = (60, 600)
    copy_max_tokens: tuple[int, int] = (64, 128)
    sweep_requests: int = field(default=16, metadata={"help": "chat requests of each sweep run"})
    batch_sweep: tuple[int, ...] = (1, 4, 16, 32)
    block_sweep: tuple[int, ...] = (8, 16, 32)
    budget_sweep: tuple[float, ...] = field(
        default=(1.0, 0.5, 0.25), metadata={"help": "KV pool as a fraction of the sweep's peak need"}
    )
    server: bool = field(default=True, metadata={"help": "time kvcache.serve with the openai client"})
    attention: str = field(default="auto", metadata={"choices": ATTENTION, "help": "engine decode path"})
    cuda_graphs: bool = field(default=False, metadata={"help": "engine option (CUDA)"})
    compile: bool = field(default=False, metadata={"help": "engine option: torch.compile (CUDA)"})
    dtype_sweep: tuple[str, ...] = field(default=("fp32", "bf16"), metadata={"help": "x batch_sweep (CUDA)"})
    seed: int = 0
    out: str | None = None

    def __post_init__(self):
        for name in (self.model, *self.extra_models):
            if name not in MODELS:
                raise ValueError(f"model {name!r}; choose from {MODELS}")
        if self.dtype not in DTYPES or any(d not in DTYPES for d in self.dtype_sweep):
            raise ValueError(f"dtypes must be among {tuple(DTYPES)}, got {self.dtype}, {self.dtype_sweep}")
        bad = [s for s in self.systems if s not in SYSTEMS]
        if bad or not self.systems:
            raise ValueError(f"systems {bad or '()'}; choose some of {SYSTEMS}")
        if self.n_layer is not None and (self.n_layer < 1 or self.model != "smollm2"):
            raise ValueError(f"n_layer={self.n_layer} needs --model smollm2 and n_layer >= 1")
        counts = dict(
            threads=self.threads,
            requests=self.requests,
            rate_requests=self.rate_requests,
            batch=self.batch,
            block_size=self.block_size,
            lookup_tokens=self.lookup_tokens,
            lookup_max_ngram=self.lookup_max_ngram,
            copy_requests=self.copy_requests,
            sweep_requests=self.sweep_requests,
        )
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if any(r <= 0 for r in self.rates) or any(b < 1 for b in (*self.batch_sweep, *self.block_sweep)):
            raise ValueError(f"need rates > 0 and sweep sizes >= 1: {self.rates}, {self.batch_sweep}")
        if any(not f > 0 for f in self.budget_sweep) or self.kv_budget_mib <= 0:
            raise ValueError(f"KV budgets must be > 0, got {self.kv_budget_mib}, {self.budget_sweep}")
        for name in ("prompt_tokens", "max_tokens", "copy_prompt_tokens", "copy_max_tokens"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be (lo, hi) with 1 <= lo <= hi, got {(lo, hi)}")
        context = min(
            8192 if m == "smollm2" else SIZES["124m"].block_size for m in (self.model, *self.extra_models)
        )
        longest = max(
            self.prompt_tokens[1] + self.max_tokens[1],
            sum(self.copy_prompt_tokens[1:] + self.copy_max_tokens[1:]),
        )
        if longest >= context:
            raise ValueError(f"prompt + output tokens must stay within the context ({context}); lower them")
        cuda_only = dict(
            attention=self.attention == "triton", cuda_graphs=self.cuda_graphs, compile=self.compile
        )
        wants = [k for k, on in cuda_only.items() if on]
        if wants and not self.device.startswith("cuda"):
            raise ValueError(f"{wants} are CUDA options; add --device cuda or drop them")
