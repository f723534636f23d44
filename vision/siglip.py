"""The SigLIP vision encoder: an image becomes a sequence of patch vectors, with no CLS token.

Teaches the vision transformer (ViT, Dosovitskiy et al. 2021) in SigLIP's form (Zhai et al. 2023): a
strided convolution cuts the image into ``patch_size`` squares and projects each to the model width
(a conv whose kernel equals its stride is one Linear applied to every flattened patch), a learned
position vector per patch is added, and pre-LN transformer blocks with a GELU-tanh MLP mix the patches
with full (bidirectional) attention. A final LayerNorm closes it. Unlike CLIP's ViT there is no CLS
token: PaliGemma hands every patch vector to the language model.

The blocks are :class:`gpt.Block` with LayerNorm, biases, no positions and a GELU-tanh MLP; attention
is made bidirectional by handing it an all-true mask through :class:`gpt.CacheStep`.

Reference: HF ``transformers`` ``models/siglip/modeling_siglip.py`` (``SiglipVisionEmbeddings``,
``SiglipEncoderLayer``, ``SiglipVisionTransformer``), checked in ``tests/test_vision_siglip.py``.
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gpt import Block, CacheStep, GPTConfig
from gpt.norms import LayerNorm
from gpt.state_dict import load_checked


@dataclass
class SiglipConfig:
    """Shape of the vision tower; defaults are SigLIP-So400m's patch grid at 224 px with a small width."""

    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    ffn_hidden: int = 3072
    norm_eps: float = 1e-6
    num_patches: int = field(init=False)

    def __post_init__(self):
        for name in ("image_size", "patch_size", "num_channels", "n_embd", "n_layer", "n_head", "ffn_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SiglipConfig.{name} must be a positive int, got {value!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of patch_size={self.patch_size} "
                "(the strided conv tiles the image exactly)"
            )
        self.num_patches = (self.image_size // self.patch_size) ** 2

    def block_config(self) -> GPTConfig:
        """The GPTConfig of one encoder block: LayerNorm, biases, GELU-tanh MLP, no position scheme."""
        return GPTConfig(
            vocab_size=1,
            block_size=self.num_patches,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            ffn_hidden=self.ffn_hidden,
            activation="gelu_tanh",
            norm="layernorm",
            norm_eps=self.norm_eps,
            pos="none",
            bias=True,
        )


class PatchEmbedding(nn.Module):
    """(B, 3, H, W) pixels -> (B, N, C) patch vectors plus one learned position vector per patch."""

    def __init__(self, config: SiglipConfig):
        super().__init__()
        P = config.patch_size
        self.patch = nn.Conv2d(config.num_channels, config.n_embd, kernel_size=P, stride=P)
        self.pos = nn.Embedding(config.num_patches, config.n_embd)

    def forward(self, pixel_values: Tensor) -> Tensor:
        x = self.patch(pixel_values)  # (B, C, H/P, W/P)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C): patches in row-major order
        return x + self.pos.weight[None]  # (B, N, C)


class SiglipVisionTower(nn.Module):
    """``tower(pixel_values (B, 3, H, W)) -> (B, N, C)``: the last hidden state, post-LayerNorm."""

    def __init__(self, config: SiglipConfig):
        super().__init__()
        self.config = config
        self.embed = PatchEmbedding(config)
        block_cfg = config.block_config()
        self.h = nn.ModuleList(Block(block_cfg, i) for i in range(config.n_layer))
        self.ln_post = LayerNorm(config.n_embd, config.norm_eps)

    def check_pixels(self, pixel_values) -> None:
        """ValueError/TypeError naming the expected (B, C, H, W) unless ``pixel_values`` has it."""
        cfg = self.config
        want = f"(B, {cfg.num_channels}, {cfg.image_size}, {cfg.image_size})"
        if not isinstance(pixel_values, Tensor) or not pixel_values.is_floating_point():
            got = pixel_values.dtype if isinstance(pixel_values, Tensor) else type(pixel_values).__name__
            raise TypeError(f"pixel_values must be a float tensor {want}, got {got}")
        shape = tuple(pixel_values.shape)
        if len(shape) != 4 or shape[1:] != (cfg.num_channels, cfg.image_size, cfg.image_size):
            raise ValueError(
                f"pixel_values must have shape {want}, got {shape}; resize and normalise images with "
                "vision.processor.preprocess"
            )

    def forward(self, pixel_values: Tensor) -> Tensor:
        self.check_pixels(pixel_values)
        x = self.embed(pixel_values)  # (B, N, C)
        N = x.size(1)
        positions = torch.zeros(1, N, dtype=torch.long, device=x.device)  # unused: pos="none"
        full = torch.ones(N, N, dtype=torch.bool, device=x.device)  # every patch sees every patch
        step = CacheStep(positions, attn_mask=full)
        for block in self.h:
            x = block(x, positions, step)
        return self.ln_post(x)  # (B, N, C)

    @classmethod
    def from_hf(cls, hf_model, prefix: str | None = None) -> "SiglipVisionTower":
        """The tower with the weights of a ``SiglipVisionModel`` (or any module holding one's state dict
        under ``prefix``, e.g. ``model.vision_tower.`` inside PaliGemma). The pooling head is left out."""
        hf_cfg = getattr(hf_model, "config", None)
        hf_cfg = getattr(hf_cfg, "vision_config", hf_cfg)
        if hf_cfg.hidden_act != "gelu_pytorch_tanh":
            raise ValueError(f"SigLIP hidden_act={hf_cfg.hidden_act!r} is not supported (gelu_pytorch_tanh)")
        config = SiglipConfig(
            image_size=hf_cfg.image_size,
            patch_size=hf_cfg.patch_size,
            num_channels=hf_cfg.num_channels,
            n_embd=hf_cfg.hidden_size,
            n_layer=hf_cfg.num_hidden_layers,
            n_head=hf_cfg.num_attention_heads,
            ffn_hidden=hf_cfg.intermediate_size,
            norm_eps=hf_cfg.layer_norm_eps,
        )
        sd = hf_model.state_dict()
        prefix = "" if prefix is None else prefix
        ref = sd[prefix + "embeddings.patch_embedding.weight"]
        with torch.device("meta"):  # no random init: every parameter is overwritten below
            model = cls(config)
        model = model.to_empty(device=ref.device).to(ref.dtype)  # no buffers, no tied weights
        load_checked(model, _hf_to_ours(sd, config, prefix))
        return model.eval()


def _hf_to_ours(sd: dict[str, Tensor], config: SiglipConfig, prefix: str) -> dict[str, Tensor]:
    """Rename an HF SigLIP vision state dict into our names; Q/K/V are fused (rows q, then k, then v)."""
    out = {
        "embed.patch.weight": sd[prefix + "embeddings.patch_embedding.weight"],
        "embed.patch.bias": sd[prefix + "embeddings.patch_embedding.bias"],
        "embed.pos.weight": sd[prefix + "embeddings.position_embedding.weight"],
        "ln_post.weight": sd[prefix + "post_layernorm.weight"],
        "ln_post.bias": sd[prefix + "post_layernorm.bias"],
    }
    names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.c_proj": "self_attn.out_proj"}
    names |= {"mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for i in range(config.n_layer):
        theirs = f"{prefix}encoder.layers.{i}."
        for kind in ("weight", "bias"):
            for ours, hf in names.items():
                out[f"h.{i}.{ours}.{kind}"] = sd[f"{theirs}{hf}.{kind}"]
            qkv = [sd[f"{theirs}self_attn.{x}_proj.{kind}"] for x in "qkv"]
            out[f"h.{i}.attn.c_attn.{kind}"] = torch.cat(qkv, dim=0)
    return out
