"""Benchmark: forward and forward + backward tokens/s of vision.PaliGemma vs HF's, same weights and inputs.

Teaches how to compare two implementations of one model honestly: HF's
``PaliGemmaForConditionalGeneration`` is built from a small random config, ours is converted from it
with ``PaliGemma.from_hf``, and both run in one process on the same images, prompts and token types
(prefix-LM mask), same device and dtype. Before any timing the two models' logits are compared (max abs
difference, printed and saved). Warmup calls are dropped, the two models alternate call by call (a noisy
shared machine slows both alike), and the median is reported. Tokens are image + text positions. The
training step's loss is the same cross-entropy on the suffix for both, computed outside the models.

    python -m vision.bench                          # CPU, fp32, small config
    python -m vision.bench --device cuda --dtype bf16 --batch 16

Writes ``bench.json`` and ``bench.png`` to ``--out`` (default ``runs/vision-bench-<device>-<dtype>``).
The early-against-late fusion comparison is the other table: each model's ``result.json`` from
``python -m vision.fusion --model late|early`` (read from ``--fusion-dir``), or both trained here first with
``--fusion-minutes M`` (one after the other, each on its own clock); it goes into ``bench.json`` under
``"fusion"`` and into ``fusion.png``.
Reference for the methodology: nanoGPT ``bench.py``; ``gpt/bench.py`` here.
"""

import io
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from gpt.bench import ours_vs_hf_figure, time_pair
from gpt.flags import parse_dataclass
from gpt.training.checkpoint import write_atomic
from gpt.training.precision import DTYPES
from vision.figures import first_reaching, fusion_figure, fusion_table
from vision.paligemma import PaliGemma

RATIO_TARGET = 1.0  # ours / HF tokens per second, forward and forward + backward


@dataclass
class BenchConfig:
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:1, ..."})
    dtype: str = field(default="fp32", metadata={"choices": tuple(DTYPES)})
    batch: int = 4
    prefix: int = field(default=16, metadata={"help": "text prefix tokens after the image tokens"})
    suffix: int = field(default=16, metadata={"help": "suffix (answer) tokens, causal"})
    image_size: int = 32
    patch: int = 8
    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    text_width: int = 128
    text_layers: int = 4
    text_heads: int = 4
    head_dim: int = 32
    vocab: int = 1024
    warmup: int = 2
    iters: int = 10
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (none: leave as is)"})
    out: str | None = field(default=None, metadata={"help": "output folder (default runs/vision-bench-...)"})
    seed: int = 0
    fusion_dir: str = field(default="runs", metadata={"help": "where vision-fusion-<model>/result.json live"})
    fusion_minutes: float = field(
        default=0.0, metadata={"help": "train both fusion models for this long each first (0: read results)"}
    )

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; choose one of {tuple(DTYPES)}")
        for name in ("batch", "prefix", "suffix", "image_size", "patch", "iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.warmup < 0:
            raise ValueError(f"warmup={self.warmup}: must be at least 0")
        if self.vocab < 3:
            raise ValueError(f"vocab={self.vocab}: need at least 3 (pad, eos and the image token)")
        if self.image_size % self.patch:
            raise ValueError(f"image_size={self.image_size} must be a multiple of patch={self.patch}")
        for width, heads in (("vision_width", "vision_heads"), ("text_width", "text_heads")):
            if getattr(self, width) % getattr(self, heads):
                raise ValueError(
                    f"{width}={getattr(self, width)} must be divisible by {heads}={getattr(self, heads)}"
                )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads={self.threads}: use a positive count or none")
        if self.fusion_minutes < 0:
            raise ValueError(f"fusion_minutes={self.fusion_minutes}: use 0 (read results) or more")

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch) ** 2


def make_pair(cfg: BenchConfig):
    """(ours, HF): HF's PaliGemma from a random config, ours converted from it (same weights)."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    vision = dict(
        hidden_size=cfg.vision_width, intermediate_size=4 * cfg.vision_width,
        num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size, patch_size=cfg.patch, projection_dim=cfg.text_width,
    )  # fmt: skip
    text = dict(
        hidden_size=cfg.text_width, intermediate_size=4 * cfg.text_width, num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads, num_key_value_heads=1, head_dim=cfg.head_dim,
        vocab_size=cfg.vocab, max_position_embeddings=cfg.image_tokens + cfg.prefix + cfg.suffix,
        eos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    config = PaliGemmaConfig(
        vision_config=vision, text_config=text, image_token_id=cfg.vocab - 1, projection_dim=cfg.text_width
    )
    torch.manual_seed(cfg.seed)
    hf = PaliGemmaForConditionalGeneration(config).eval()
    with torch.no_grad():  # HF starts Gemma's norm weights at 0 (gain 1): make the (1 + w) visible
        for name, p in hf.named_parameters():
            if "norm" in name and "language_model" in name:
                p.normal_(0.0, 0.3)
    hf.config.use_cache = False
    return PaliGemma.from_hf(hf), hf


def make_inputs(cfg: BenchConfig, device: torch.device, dtype: torch.dtype):
    """pixels (B, 3, H, W), input_ids (B, T) (image tokens first), token_type_ids (B, T), targets (B, T)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    B, N, image_id = cfg.batch, cfg.image_tokens, cfg.vocab - 1
    pixels = torch.randn(B, 3, cfg.image_size, cfg.image_size, generator=g)
    text = torch.randint(2, image_id, (B, cfg.prefix + cfg.suffix + 1), generator=g)
    ids = torch.cat([torch.full((B, N), image_id), text[:, :-1]], dim=1)  # (B, T)
    types = torch.cat([torch.zeros(B, N + cfg.prefix), torch.ones(B, cfg.suffix)], dim=1).long()
    targets = torch.full_like(ids, -100)
    targets[:, N + cfg.prefix :] = text[:, cfg.prefix + 1 :]  # next suffix token; prefix/image not scored
    return pixels.to(device, dtype), ids.to(device), types.to(device), targets.to(device)


def main(cfg: BenchConfig) -> dict:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]
    ours, hf = make_pair(cfg)
    ours, hf = ours.to(device, dtype), hf.to(device, dtype)
    pixels, ids, types, targets = make_inputs(cfg, device, dtype)

    with torch.no_grad():  # the two must compute the same function before their speeds mean anything
        want = hf(pixel_values=pixels, input_ids=ids, token_type_ids=types).logits.float()
        got = ours(pixels, ids, types).float()
    logits_check = {
        "max_abs_diff": (got - want).abs().max().item(),
        "max_abs_logit": want.abs().max().item(),
        "shape": list(got.shape),
    }

    def loss_of(logits):
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)

    @torch.no_grad()
    def fwd_ours():
        ours(pixels, ids, types)

    @torch.no_grad()
    def fwd_hf():
        hf(pixel_values=pixels, input_ids=ids, token_type_ids=types)

    def train_ours():
        ours.zero_grad(set_to_none=True)
        loss_of(ours(pixels, ids, types)).backward()

    def train_hf():
        hf.zero_grad(set_to_none=True)
        loss_of(hf(pixel_values=pixels, input_ids=ids, token_type_ids=types).logits).backward()

    tokens = ids.numel()
    rows = []
    for mode, fns in (("forward", (fwd_ours, fwd_hf)), ("forward+backward", (train_ours, train_hf))):
        ours.train(mode != "forward"), hf.train(mode != "forward")
        times = time_pair(dict(zip(("ours", "hf"), fns, strict=True)), cfg, device)  # alternating turns
        med = {name: statistics.median(ts) for name, ts in times.items()}
        ratio = med["hf"] / med["ours"]
        rows.append(
            dict(
                mode=mode,
                ours_tok_s=tokens / med["ours"],
                hf_tok_s=tokens / med["hf"],
                ratio=ratio,
                target=RATIO_TARGET,
                passed=ratio >= RATIO_TARGET,
            )
        )

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    env = dict(
        device_name=name,
        dtype=cfg.dtype,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        params_M=round(sum(p.numel() for p in ours.parameters()) / 1e6, 3),
        image_tokens=cfg.image_tokens,
        text_tokens=cfg.prefix + cfg.suffix,
        tokens_per_batch=tokens,
    )
    print(
        f"device={name} ({env['threads']} threads) dtype={cfg.dtype} torch={torch.__version__} "
        f"params={env['params_M']}M batch={cfg.batch} tokens/sample={cfg.image_tokens}+{env['text_tokens']} "
        f"iters={cfg.iters} (median)"
    )
    print(f"logits vs HF: max |ours - HF| = {logits_check['max_abs_diff']:.3g} "
          f"(max |logit| {logits_check['max_abs_logit']:.3g})")  # fmt: skip
    print(f"{'mode':<18}{'ours tok/s':>12}{'HF tok/s':>12}{'ours/HF':>9}  target >= {RATIO_TARGET:.1f}x")
    for r in rows:
        verdict = "pass" if r["passed"] else "FAIL"
        print(
            f"{r['mode']:<18}{r['ours_tok_s']:>12,.0f}{r['hf_tok_s']:>12,.0f}{r['ratio']:>8.2f}x  {verdict}"
        )

    out = Path(cfg.out or f"runs/vision-bench-{cfg.device.replace(':', '')}-{cfg.dtype}")
    out.mkdir(parents=True, exist_ok=True)
    fusion, note = fusion_results(cfg)
    if fusion:
        print(f"\nearly vs late fusion on vision.shapes (held-out scenes, greedy exact match; {note}):")
        print(fusion_table(fusion))
        write_atomic(out / "fusion.png", _png(fusion_figure(fusion)))
    else:
        print(f"\nfusion (early vs late): {note}")
    result = {
        "config": asdict(cfg),
        "env": env,
        "logits_check": logits_check,
        "rows": rows,
        "fusion": {name: _summary(r) for name, r in fusion.items()} or None,
        "fusion_note": note,
    }
    write_atomic(out / "bench.json", json.dumps(result, indent=2).encode())
    write_atomic(out / "bench.png", _plot(rows, env))
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}" + (" and fusion.png" if fusion else ""))
    return result


def fusion_results(cfg: BenchConfig) -> tuple[dict, str]:
    """({"late": result, "early": result} or {}, where they came from). Trains both first when
    ``cfg.fusion_minutes`` > 0; otherwise reads ``<fusion_dir>/vision-fusion-<model>/result.json``."""
    from vision.fusion import MODELS, TrainConfig
    from vision.fusion import main as train_fusion

    root = Path(cfg.fusion_dir)
    if cfg.fusion_minutes > 0:
        threads = cfg.threads or torch.get_num_threads()
        for name in MODELS:
            train_fusion(name, TrainConfig(minutes=cfg.fusion_minutes, threads=threads), out_dir=root)
    paths = {name: root / f"vision-fusion-{name}" / "result.json" for name in MODELS}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        return {}, f"not measured: {', '.join(missing)} missing (python -m vision.fusion --model late|early)"
    return {name: json.loads(p.read_text()) for name, p in paths.items()}, f"from {root}/vision-fusion-*"


def _summary(r: dict) -> dict:
    """The fields of a fusion result the bench keeps (the per-step losses stay in result.json)."""
    keep = ("params", "tokens_per_image", "steps", "train_seconds", "final", "n_eval", "threads", "curve")
    return {k: r.get(k) for k in keep} | {"caption_95_at_s": first_reaching(r, "caption", 0.95)}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def _plot(rows, env) -> bytes:
    title = f"PaliGemma, {env['device_name']} ({env['threads']} threads), {env['dtype']}"
    return _png(
        ours_vs_hf_figure(rows, "mode", "ours (vision.PaliGemma)", "tokens / s (image + text)", title)
    )


def parse_args(argv=None) -> BenchConfig:
    return parse_dataclass(BenchConfig, argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    main(parse_args())
