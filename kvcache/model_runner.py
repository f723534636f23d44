"""``ModelRunner``: runs the engine's forward steps, eagerly or as replayed CUDA graphs.

Teaches why a decode step is launch-bound and what CUDA graphs do about it. A decode step of a small
model is hundreds of tiny kernels (a few per layer) on one token per sequence; the GPU finishes each
faster than Python launches the next. A CUDA graph records the whole step once and replays it with a
single launch. A graph fixes every shape and every address, which the kernel path of
:class:`kvcache.PagedKVCache` allows: its decode step reads only a :class:`kvcache.paged_cache.DecodeBatch`
(token ids, positions, slot mapping, block tables, context lengths) and no per-step mask. So the
runner keeps one static copy of those tensors, sized for ``max_num_seqs`` rows and block tables as wide
as the model's context, captures one graph per batch size in 1, 2, 4, 8, 16, 32, 48, ... (up to
``max_num_seqs``), and for a decode step of B rows writes the step into the static tensors, pads the
rest with rows that store nothing, and replays the graph of the next captured size. Prefill steps, and
whatever else is not one new token per row, run eagerly.

``compile=True`` runs decode steps through ``torch.compile(model)`` (fusing the norms, rotary and MLP
element-wise work between the matmuls) on the same padded batch sizes: one static graph for the first
size, then one with a dynamic batch dimension (dynamo's automatic dynamic shapes). The paged kernels
are one custom op in its graph (``kvcache.paged_attention.paged_decode_step``). With ``cuda_graphs``
too, the compiled step is what is captured. Prefill stays eager: its shapes change every step.

References: nano-vllm ``engine/model_runner.py`` (``capture_cudagraph``, ``run_model``); vLLM
``worker/model_runner.py`` (``CUDAGraphRunner``); PyTorch ``torch.cuda.graphs`` documentation.
"""

import torch
from torch import Tensor

from gpt import GPT
from kvcache.paged_cache import DecodeBatch, PagedKVCache, Segment


def graph_batch_sizes(max_num_seqs: int) -> list[int]:
    """Decode batch sizes to capture: 1, 2, 4, 8, then every 16 (nano-vllm's), and max_num_seqs itself."""
    sizes = [b for b in (1, 2, 4, 8, *range(16, max_num_seqs + 1, 16)) if b <= max_num_seqs]
    return sizes if sizes[-1] == max_num_seqs else [*sizes, max_num_seqs]


class ModelRunner:
    """Runs ``model`` over ``cache``: :meth:`run` takes the cache's rows of segments and the fed tokens.

    ``cuda_graphs``: replay captured graphs for decode steps (CUDA only). ``compile``: decode steps run
    ``torch.compile(model)``. Both need ``cache.attention == "triton"`` (the fixed-shape decode step).
    """

    def __init__(
        self, model: GPT, cache: PagedKVCache, max_num_seqs: int, cuda_graphs: bool = False, compile=False
    ):
        if cuda_graphs and cache.device.type != "cuda":
            raise ValueError(
                f"cuda_graphs=True needs the model on a CUDA device, got {cache.device}; "
                "pass cuda_graphs=False on a CPU"
            )
        if (cuda_graphs or compile) and cache.attention != "triton":
            raise ValueError(
                f"cuda_graphs and compile need decode attention on the paged kernel (attention='triton'), "
                f"got attention={cache.attention!r}: the torch path's keys change shape every step"
            )
        self.model, self.cache = model, cache
        self.forward = torch.compile(model) if compile else model
        self.batch_sizes = graph_batch_sizes(max_num_seqs) if (cuda_graphs or compile) else []
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        if self.batch_sizes:
            n, dev = self.batch_sizes[-1], cache.device
            width = -(-model.config.block_size // cache.block_size)  # blocks of a full-context sequence
            self.static = DecodeBatch.padding(n, width, dev)  # the step the compiled / captured code reads
            self.ids = torch.zeros(n, 1, dtype=torch.long, device=dev)  # (n, 1) fed tokens
            dtype = next(model.parameters()).dtype
            self.logits = torch.zeros(n, model.config.vocab_size, dtype=dtype, device=dev)  # (n, vocab)
        if cuda_graphs:
            self._capture()

    def run(self, rows: list[list[Segment]], idx: Tensor, logits_rows: Tensor | None = None) -> Tensor:
        """One forward over ``rows`` (see :meth:`PagedKVCache.prepare`) fed ``idx`` (B, T) -> logits
        (n, vocab) at ``logits_rows`` (n,) of the flattened (B * T) positions, by default each segment's
        last new token (one row per segment)."""
        padded = self.batch_sizes and logits_rows is None and len(rows) <= self.batch_sizes[-1]
        if padded and self.cache.is_decode(rows):  # one new token per row: a captured / compiled size
            return self._decode(rows, idx)
        last = self.cache.prepare(rows)
        keep = last if logits_rows is None else logits_rows
        logits, _ = self.model(idx, cache=self.cache, logits_rows=keep)  # (n, vocab)
        return logits

    def _decode(self, rows: list[list[Segment]], idx: Tensor) -> Tensor:
        B = len(rows)
        n = next(b for b in self.batch_sizes if b >= B)  # pad up to the next captured size
        width = self.static.block_tables.size(1)
        self.static.first(n).copy_(self.cache.decode_batch(rows, width, pad_to=n))  # checked on the host
        self.ids[:B].copy_(idx)  # (B, 1); padding rows keep old ids: any valid token does
        if self.graphs:
            self.graphs[n].replay()
            return self.logits[:B].clone()  # (B, vocab): the next replay overwrites the static logits
        self.cache.use_decode(self.static.first(n))
        logits, _ = self.forward(self.ids[:n], cache=self.cache)  # (n, 1, vocab)
        return logits[:B, 0]

    @torch.no_grad()
    def _capture(self):
        """One graph per batch size, largest first, all sharing one memory pool (the static tensors hold
        only padding rows here, so neither warm-up nor capture writes to the pool)."""
        pool = None
        for n in reversed(self.batch_sizes):
            self.cache.use_decode(self.static.first(n))
            self.forward(self.ids[:n], cache=self.cache)  # warm-up: builds kernels, compiles
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                logits, _ = self.forward(self.ids[:n], cache=self.cache)  # (n, 1, vocab)
                self.logits[:n].copy_(logits[:, 0])
            pool = graph.pool()
            self.graphs[n] = graph
        torch.cuda.synchronize()
