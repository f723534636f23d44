"""The memory of full fine-tuning with AdamW: the arithmetic, then one training step measured against it.

Teaches where the bytes of a training step go, for our Llama-flavour GPT in fp32 (4 bytes a number)
with P parameters, of which all train:

- **weights** 4P; **gradients** 4P; **AdamW's state** two moments, 8P, plus a 4-byte step counter per
  parameter tensor. Together 16P: a 135M model needs 2.2 GB before it sees a token.
- **activations**: what autograd saves for the backward pass, for a batch of N = B * T tokens. Per
  layer (C = n_embd, F = ffn_hidden, nh = n_head), counted tensor by tensor from what each op saves:

  ====================================================================  ===============
  the block input x (the residual stream), saved by ln_1                N*C
  ln_1 (RMSNorm): 1/rms, x/rms, the output w*x/rms (c_attn's input)    N + 2*N*C
  attention: q after RoPE, SDPA's output (c_proj's input), its          2*N*C + N*nh
  log-sum-exp per head
  views that keep k after RoPE (kv = n_kv_head * head_dim) and,         N*kv + N*(C + 2*kv)
  through v, the whole fused q|k|v output alive
  the residual after attention, ln_2's 1/rms, x/rms, output             3*N*C + N
  SwiGLU: gate, silu(gate), up, silu(gate)*up (c_proj's input)          4*N*F
  ====================================================================  ===============

  so N * (9*C + 3*kv + 4*F + nh + 2) numbers a layer. Grouped-query attention adds no copies: SDPA
  reads each key/value head for its group of query heads in place (``enable_gqa``). After the last
  layer: the final residual and ln_f
  (3*N*C + N), the log-softmax of the logits (N*V, the largest single term), RoPE's cos and sin
  (2*T*head_dim), and the int64 token ids and targets (2*N*8 bytes).
- **the peak** (:attr:`MemoryBudget.peak`) is not the sum of all four. Gradients appear as
  activations are freed, layer by layer from the top. The high point is the start of backward:
  weights, optimizer state, every activation, plus two more N*V tensors (the gradients of the
  log-softmax and of the logits). Or, for a model with few activations, the optimizer step:
  gradients plus the two temporaries torch's single-tensor AdamW makes for the largest parameter
  (``sqrt``, then ``/``); then the sum of the four is below the peak.

The measurement: on a GPU, ``torch.cuda.max_memory_allocated``. On a CPU there is no such counter
and the process's RSS includes Python's heap and memory malloc keeps, so we read the allocator
itself: with ``profile_memory=True`` the profiler records every allocation and free of PyTorch's
CPU allocator (kernel workspaces included, not only tensors Python sees), and the running sum of
those events over one step, on top of the tensors held before it, is the step's peak. The saved
activations are counted separately with ``torch.autograd.graph.saved_tensors_hooks`` (unique
storages, parameters excluded).

Reference: Rajbhandari et al. 2020 (ZeRO), section 3.1 (the 16P of mixed-precision Adam; 16P here
in fp32, without the fp16 copy); Korthikanti et al. 2022 ("Reducing Activation Recomputation in
Large Transformer Models"), section 4 (activations per layer, counted the same way for GPT-3's
blocks); PyTorch "Understanding CUDA memory usage" and ``torch.profiler`` docs.
"""

from dataclasses import dataclass

import torch

from gpt.accounting import param_counts
from gpt.model import GPTConfig

FP32 = 4  # bytes per number: weights, gradients, moments and activations
INT64 = 8  # token ids and targets


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes of one full fine-tuning step with AdamW, from the shapes alone."""

    weights: int
    gradients: int
    optimizer: int  # AdamW's exp_avg and exp_avg_sq, and a step counter per tensor
    activations: int  # saved for backward at the end of the forward (the batch's ids included)
    inputs: int  # the token ids and targets: part of activations, but held before the step
    logits_grad: int  # the two N x vocab gradients alive at the start of backward
    largest_param: int  # bytes of the largest parameter tensor (AdamW's temporaries are its size)

    @property
    def total(self) -> int:
        """weights + gradients + optimizer + activations: the usual budget. It counts gradients and
        activations as if they coexisted and leaves out the transients, so it is not the peak."""
        return self.weights + self.gradients + self.optimizer + self.activations

    @property
    def peak(self) -> int:
        """The high point of a step: the start of backward or the optimizer step, whichever is higher.

        Exact at the start of backward. At the optimizer step it is a little low: torch's AdamW keeps
        the previous parameter's ``denom`` while it computes the next one's (1% for a tiny model whose
        embedding outweighs its activations)."""
        backward = self.activations + self.logits_grad
        step = self.inputs + self.gradients + 2 * self.largest_param
        return self.weights + self.optimizer + max(backward, step)


def check_llama_fp32(config: GPTConfig) -> None:
    """The activation count is derived for one architecture; refuse the others by name."""
    expected = dict(norm="rmsnorm", activation="swiglu", pos="rope", attn_impl="sdpa", bias=False)
    wrong = {k: getattr(config, k) for k, v in expected.items() if getattr(config, k) != v}
    if wrong or config.dropout:
        raise ValueError(
            f"the activation count is derived for the Llama flavour ({expected}, dropout 0), got "
            f"{wrong or {'dropout': config.dropout}}; build the config with GPTConfig.llama(...)"
        )


def activation_bytes(config: GPTConfig, batch: int, seq_len: int) -> int:
    """Bytes autograd saves for backward in one fp32 forward of ``batch`` x ``seq_len`` tokens."""
    check_llama_fp32(config)
    if batch < 1 or not 1 <= seq_len <= config.block_size:
        raise ValueError(f"need batch >= 1 and 1 <= seq_len <= block_size={config.block_size}")
    N, C, F, nh = batch * seq_len, config.n_embd, config.ffn_hidden, config.n_head
    kv = config.n_kv_head * config.head_dim
    # q and the output, and views that keep k (after RoPE) and the fused q|k|v output alive (SDPA reads
    # grouped key/value heads in place: no copies to nh heads)
    attention = 2 * N * C + N * kv + N * (C + 2 * kv)
    per_layer = N * (6 * C + 4 * F + nh + 2) + attention
    final = N * (3 * C + 1) + N * config.vocab_size + 2 * seq_len * config.head_dim
    return (config.n_layer * per_layer + final) * FP32 + 2 * N * INT64 + FP32  # + the scalar loss


def full_finetune_budget(config: GPTConfig, batch: int, seq_len: int) -> MemoryBudget:
    """The :class:`MemoryBudget` of full fine-tuning ``config`` with AdamW on ``batch`` x ``seq_len``."""
    P = param_counts(**config.param_counts_kwargs()).total
    # tensors: per layer 2 norms, c_attn, c_proj and 3 MLP matrices; then wte, ln_f and an untied head
    tensors = 7 * config.n_layer + 2 + (0 if config.tie_embeddings else 1)
    C, kv = config.n_embd, config.n_kv_head * config.head_dim
    largest = max(config.vocab_size * C, config.ffn_hidden * C, (C + 2 * kv) * C)
    N = batch * seq_len
    return MemoryBudget(
        weights=P * FP32,
        gradients=P * FP32,
        optimizer=2 * P * FP32 + tensors * FP32,
        activations=activation_bytes(config, batch, seq_len),
        inputs=2 * N * INT64,
        logits_grad=2 * N * config.vocab_size * FP32,
        largest_param=largest * FP32,
    )


# -- measured -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredStep:
    """Bytes measured in one training step (``how`` says with what)."""

    weights: int  # the parameters' storages (a tied matrix once)
    gradients: int  # the .grad tensors after backward
    optimizer: int  # every tensor in the optimizer's state
    activations: int  # the storages autograd saved in the forward (parameters excluded)
    peak: int  # the most bytes alive at once during the step
    how: str


def tensor_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and tied tensors counted once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in ``model(x, y)`` (not parameters)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, y)  # the graph is dropped at once: only what it saved is counted
    return sum(saved.values())


def cpu_allocation_peak(fn) -> tuple[object, int]:
    """(fn(), the most bytes PyTorch's CPU allocator held during it above what it held before).

    Replays the profiler's allocation events (+bytes on malloc, -bytes on free) in time order.
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = []

    def walk(node):
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    live = peak = 0
    for _, size in sorted(events, key=lambda e: e[0]):
        live += size
        peak = max(peak, live)
    return out, peak


def measure_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x, y) -> MeasuredStep:
    """Train ``model`` for two steps on (x, y) and measure the second (AdamW's state is made by the
    first); ``model`` and ``optimizer`` are changed. CUDA: the allocator's peak; CPU: its events."""
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    model.train()

    def step():
        model(x, y)[1].backward()  # the logits are dropped as soon as the loss exists
        grads = tensor_bytes(p.grad for p in model.parameters() if p.grad is not None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return grads

    step()
    held = [*model.parameters(), x, y] + [t for s in optimizer.state.values() for t in s.values()]
    weights = tensor_bytes(model.parameters())
    optim = tensor_bytes(t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        grads = step()
        peak, how = torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    else:
        grads, above = cpu_allocation_peak(step)
        peak, how = tensor_bytes(t for t in held if torch.is_tensor(t)) + above, "profiler: CPU allocator"
    activations = saved_activation_bytes(model, x, y)
    return MeasuredStep(weights, grads, optim, activations, peak, how)


# -- the table ------------------------------------------------------------------------------------------


def compare(budget: MemoryBudget, measured: MeasuredStep) -> list[dict]:
    """One row per term: the arithmetic, the measurement and their ratio (bytes)."""
    rows = []
    for name in ("weights", "gradients", "optimizer", "activations", "peak"):
        want, got = getattr(budget, name), getattr(measured, name)
        rows.append(dict(term=name, arithmetic=want, measured=got, ratio=got / want))
    rows.append(dict(term="total (the four summed)", arithmetic=budget.total, measured=None, ratio=None))
    return rows


@dataclass
class MemoryConfig:
    batch: int = 4
    seq_len: int = 320
    smoke: bool = False  # a 2-layer slice of SmolLM2 instead of the whole model
    device: str = "cpu"


def main(cfg: MemoryConfig) -> list[dict]:
    """Full fine-tuning of SmolLM2 on ``batch`` x ``seq_len`` random tokens: the budget, one step measured."""
    from quant.load import load_gguf

    model, _ = load_gguf(n_layer=2 if cfg.smoke else None, device=cfg.device)
    model = model.float()
    optimizer = model.configure_optimizers(0.0, 1e-5, (0.9, 0.999))
    x = torch.randint(
        0, model.config.vocab_size, (cfg.batch, cfg.seq_len), generator=torch.Generator().manual_seed(0)
    )
    budget = full_finetune_budget(model.config, cfg.batch, cfg.seq_len)
    measured = measure_step(model, optimizer, x, x.roll(-1, dims=1))
    rows = compare(budget, measured)
    print(
        f"full fine-tuning {model.num_params():,} parameters with AdamW, fp32, batch {cfg.batch} x "
        f"{cfg.seq_len} tokens on {cfg.device} (measured with {measured.how}):"
    )
    for r in rows:
        got = "" if r["measured"] is None else f"{r['measured'] / 2**20:10.1f} MiB  x{r['ratio']:.4f}"
        print(f"  {r['term']:>24}: {r['arithmetic'] / 2**20:10.1f} MiB  {got}")
    return rows


if __name__ == "__main__":
    from gpt.flags import parse_dataclass

    main(parse_dataclass(MemoryConfig, description=__doc__.split("\n\n")[0]))
