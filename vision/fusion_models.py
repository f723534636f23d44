"""Late fusion against early fusion: two small captioning / question-answering models of one size.

Teaches where the image meets the text. Late fusion (PaliGemma, Beyer et al. 2024) runs the patches
through a vision tower of their own (``vision/siglip.py``), maps each output vector into the decoder's
width with one Linear and puts them in front of the text; the text layers see only what the tower made
of the image. Early fusion (Fuyu, Bavishi et al. 2023; Chameleon Team 2024) embeds each raw patch with one
Linear and feeds patches and words into ONE transformer from its first layer. Both decode as a prefix-LM
(:func:`gpt.prefix_lm_mask`): image and question attend both ways, the answer causally; the loss covers
the answer only. One :class:`FusionConfig` builds both with the same block shape, so that the late model's
``n_vision_layer + n_text_layer`` blocks equal the early model's, and :meth:`FusionConfig.for_budget`
picks the width that puts both near a parameter budget.

Sequence layout (both models): ``[N patches][prefix ids, left-padded][target ids[:-1]]``; ``pad_id`` keys
are hidden and take no position, so padding changes nothing.

References: Fuyu-8B model card (adept.ai/blog/fuyu-8b); HF ``models/paligemma``.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpt import GPT, FullSequence, GPTConfig, prefix_lm_mask
from gpt.model import IGNORE_INDEX
from gpt.positions import apply_rope
from vision.siglip import SiglipConfig, SiglipVisionTower


@dataclass
class FusionConfig:
    """Sizes shared by both fusion models; every block is pre-LN, GELU-tanh, 4x MLP, biases, RoPE text."""

    vocab_size: int
    image_size: int = 32
    patch_size: int = 8  # 16 image tokens: each shape spans 1-4 patches
    n_embd: int = 64
    n_head: int = 4
    n_vision_layer: int = 2  # late: the tower's blocks; early: the first blocks of the one transformer
    n_text_layer: int = 2
    max_text: int = 32  # prefix + answer tokens
    pad_id: int = 0
    num_patches: int = field(init=False)
    block_size: int = field(init=False)

    def __post_init__(self):
        for name in (
            "vocab_size",
            "image_size",
            "patch_size",
            "n_embd",
            "n_head",
            "n_text_layer",
            "max_text",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FusionConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.n_vision_layer, int) or self.n_vision_layer < 0:
            raise ValueError(f"FusionConfig.n_vision_layer must be an int >= 0, got {self.n_vision_layer!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of patch_size={self.patch_size}"
            )
        if self.n_embd % (2 * self.n_head):
            raise ValueError(
                f"n_embd={self.n_embd} must be a multiple of 2 * n_head={2 * self.n_head} (RoPE)"
            )
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id={self.pad_id} must lie in [0, {self.vocab_size})")
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.block_size = self.num_patches + self.max_text

    def vision_config(self) -> SiglipConfig:
        return SiglipConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            n_embd=self.n_embd,
            n_layer=max(self.n_vision_layer, 1),
            n_head=self.n_head,
            ffn_hidden=4 * self.n_embd,
        )

    def text_config(self, n_layer: int) -> GPTConfig:
        return GPTConfig(
            vocab_size=self.vocab_size,
            block_size=self.block_size,
            n_layer=n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            ffn_hidden=4 * self.n_embd,
            activation="gelu_tanh",
            norm="layernorm",
            pos="rope",
            bias=True,
            tie_embeddings=True,
        )

    @classmethod
    def for_budget(cls, n_params: int, **kwargs) -> "FusionConfig":
        """The config (other fields from ``kwargs``) whose width puts the mean of both counts nearest
        ``n_params``; widths step by ``2 * n_head``."""
        base = cls(**kwargs)
        step = 2 * base.n_head
        best = None
        for width in range(step, 4097, step):  # counts grow with the width: stop once past the budget
            cfg = cls(**{**kwargs, "n_embd": width})
            counts = param_counts(cfg)
            mean = (counts["late"] + counts["early"]) / 2
            if best is None or abs(mean - n_params) < best[0]:
                best = (abs(mean - n_params), cfg)
            if mean > n_params:
                break
        return best[1]


def param_counts(cfg: FusionConfig) -> dict[str, int]:
    """{"late": ..., "early": ...}, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return {"late": LateFusion(cfg).num_params(), "early": EarlyFusion(cfg).num_params()}


def to_pixels(images, cfg: FusionConfig) -> Tensor:
    """uint8 (0..255) or float (0..1) images (B, 3, H, W) -> float32 in [-1, 1]; errors name the shape."""
    want = f"(B, 3, {cfg.image_size}, {cfg.image_size})"
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch tensor {want} (uint8 or float), got {type(images).__name__}")
    if tuple(images.shape[1:]) != (3, cfg.image_size, cfg.image_size) or images.dim() != 4:
        raise ValueError(f"images must have shape {want}, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    elif not images.is_floating_point():
        raise TypeError(f"images must be uint8 or float, got {images.dtype}")
    return (images.float() - 0.5) / 0.5


class FusionModel(nn.Module):
    """Shared by both: ``forward(images, prefix, target) -> loss``, ``logits``, greedy ``generate``.

    ``prefix`` (B, Tp) long ids, left-padded with ``pad_id``; ``target`` (B, Ta) the answer ending in
    ``<eos>``, right-padded. Subclasses define ``self.lm`` (a :class:`gpt.GPT`) and :meth:`image_embeds`.
    """

    config: FusionConfig
    lm: GPT

    def image_embeds(self, pixels: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, N, C)
        raise NotImplementedError

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check_ids(self, name: str, ids, B: int) -> None:
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point():
            got = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(f"{name} must be an integer tensor (B={B}, T), got {got}")
        if ids.size(0) != B:
            raise ValueError(f"{name} has {ids.size(0)} rows for {B} images: pass one row per image")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            raise ValueError(f"{name} ids must lie in [0, {self.config.vocab_size})")

    def _text_room(self, Tp: int, Ta: int) -> None:
        if Tp < 1:
            raise ValueError("prefix must hold at least one token (e.g. <bos>)")
        if Tp + Ta > self.config.max_text:
            raise ValueError(
                f"{Tp} prefix + {Ta} answer tokens leave no room after the {self.config.num_patches} "
                f"image tokens: max_text={self.config.max_text} (block_size={self.config.block_size})"
            )

    def _run(self, pixels: Tensor, text: Tensor, n_prefix: int) -> Tensor:
        """Logits (B, N + T, vocab) of image embeds + text (B, T), the first N + n_prefix bidirectional."""
        img = self.image_embeds(pixels)  # (B, N, C)
        B, N, _ = img.shape
        T = N + text.size(1)
        x = torch.cat([img, self.lm.wte(text)], dim=1)  # (B, N + Tt, C)
        real = torch.cat([torch.ones(B, N, dtype=torch.bool, device=x.device), text != self.config.pad_id], 1)
        mask = prefix_lm_mask(T, N + n_prefix, device=x.device)[None, None] & real[:, None, None, :]
        # pads take no position: a left-padded prompt reads exactly as the unpadded one
        positions = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
        logits, _ = self.lm(inputs_embeds=x, cache=FullSequence(positions, mask))  # (B, T, vocab)
        return logits

    def logits(self, images, prefix: Tensor, target: Tensor) -> Tensor:
        """(B, N + Tp + Ta - 1, vocab): image, prefix and teacher-forced answer positions."""
        pixels = to_pixels(images, self.config)
        B = pixels.size(0)
        self._check_ids("prefix", prefix, B)
        self._check_ids("target", target, B)
        self._text_room(prefix.size(1), target.size(1))
        return self._run(pixels, torch.cat([prefix, target[:, :-1]], dim=1), prefix.size(1))

    def labels(self, prefix: Tensor, target: Tensor) -> Tensor:
        """(B, N + Tp + Ta - 1): the answer token each position predicts, IGNORE_INDEX elsewhere."""
        B, N = prefix.size(0), self.config.num_patches
        ignore = torch.full((B, N + prefix.size(1) - 1), IGNORE_INDEX, dtype=torch.long, device=prefix.device)
        answer = target.masked_fill(target == self.config.pad_id, IGNORE_INDEX)
        return torch.cat([ignore, answer], dim=1)

    def forward(self, images, prefix: Tensor, target: Tensor) -> Tensor:
        """Mean cross-entropy over the answer tokens only (pads of ``target`` left out)."""
        logits = self.logits(images, prefix, target)
        labels = self.labels(prefix, target)
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)

    @torch.no_grad()
    def generate(self, images, prefix: Tensor, max_new_tokens: int, eos_id: int | None = None) -> Tensor:
        """Greedy answers (B, <= max_new_tokens); a finished row is padded with ``pad_id``."""
        pixels = to_pixels(images, self.config)
        B = pixels.size(0)
        self._check_ids("prefix", prefix, B)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self._text_room(prefix.size(1), max_new_tokens)
        out = torch.empty(B, 0, dtype=torch.long, device=prefix.device)
        done = torch.zeros(B, dtype=torch.bool, device=prefix.device)
        for _ in range(max_new_tokens):
            logits = self._run(pixels, torch.cat([prefix, out], dim=1), prefix.size(1))[:, -1]  # (B, vocab)
            nxt = logits.argmax(dim=-1).masked_fill(done, self.config.pad_id)  # (B,)
            out = torch.cat([out, nxt[:, None]], dim=1)
            if eos_id is not None:
                done = done | (nxt == eos_id)
                if bool(done.all()):
                    break
        return out


class LateFusion(FusionModel):
    """PaliGemma-style: SigLIP tower over patches -> Linear projector -> prefix of a text decoder."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        if config.n_vision_layer < 1:
            raise ValueError("late fusion needs n_vision_layer >= 1 (the tower's blocks)")
        self.config = config
        self.tower = SiglipVisionTower(config.vision_config())
        self.projector = nn.Linear(config.n_embd, config.n_embd)
        self.lm = GPT(config.text_config(config.n_text_layer))

    def image_embeds(self, pixels: Tensor) -> Tensor:
        return self.projector(self.tower(pixels))  # (B, N, C)


class EarlyFusion(FusionModel):
    """Fuyu-style: each raw patch -> one Linear (+ a learned patch position) -> the one transformer."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        P = config.patch_size
        self.patch = nn.Linear(3 * P * P, config.n_embd)
        self.patch_pos = nn.Parameter(torch.zeros(config.num_patches, config.n_embd))
        self.lm = GPT(config.text_config(config.n_vision_layer + config.n_text_layer))

    def image_embeds(self, pixels: Tensor) -> Tensor:
        B, C, H, W = pixels.shape
        P = self.config.patch_size
        x = pixels.view(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P)
        x = x.reshape(B, (H // P) * (W // P), C * P * P)  # (B, N, 3 P P): patches in row-major order
        return self.patch(x) + self.patch_pos[None]  # (B, N, C)


@torch.no_grad()
def attention_maps(model: FusionModel, images, prefix: Tensor, target: Tensor) -> Tensor:
    """(heads, Ta, N): attention from the positions that predict each answer token to the image
    positions, averaged over the text model's layers, for one sample (batch of 1). Rows sum to <= 1
    (the rest of each row goes to text keys)."""
    if prefix.dim() != 2 or prefix.size(0) != 1:
        raise ValueError(f"attention_maps takes one sample: prefix (1, Tp), got {tuple(prefix.shape)}")
    captured: list[Tensor] = []

    def hook(attn, args):
        x, _positions, step, _cache, rope = args  # x: (1, T, C), already normed
        B, T, C = x.shape
        nh, hs = attn.n_head, attn.head_dim
        q, k, _ = attn.c_attn(x).split([C, attn.n_kv_head * hs, attn.n_kv_head * hs], dim=2)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, attn.n_kv_head, hs).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        k = k.repeat_interleave(nh // attn.n_kv_head, dim=1)  # (B, nh, T, hs)
        scores = (q @ k.transpose(-2, -1)) / hs**0.5  # (B, nh, T, T)
        captured.append(scores.masked_fill(~step.attn_mask, float("-inf")).softmax(-1)[0])  # (nh, T, T)

    handles = [block.attn.register_forward_pre_hook(hook) for block in model.lm.h]
    try:
        model.logits(images, prefix, target)
    finally:
        for h in handles:
            h.remove()
    N, Tp, Ta = model.config.num_patches, prefix.size(1), target.size(1)
    rows = slice(N + Tp - 1, N + Tp - 1 + Ta)
    return torch.stack(captured).mean(0)[:, rows, :N]  # (heads, Ta, N)
