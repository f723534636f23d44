"""PaliGemma: a SigLIP vision tower, one linear projector, and a Gemma decoder run as a prefix-LM.

Teaches late fusion (Beyer et al. 2024, "PaliGemma"): the image becomes ``num_image_tokens`` patch
vectors (``vision/siglip.py``), a Linear maps each to the decoder's width, and they take the places of
the image placeholder tokens at the start of the prompt. The decoder is Gemma's (Gemma Team 2024):
RMSNorm with a ``(1 + w)`` weight, GeGLU, RoPE, multi-query attention, token embeddings scaled by
sqrt(d), tied input and output embeddings. The image and the text prefix attend to each other both
ways and only the suffix (the answer) is causal: the prefix-LM mask of :func:`gpt.prefix_lm_mask`.

Unlike a new decoder, this one is :class:`gpt.GPT` (Llama flavour with ``activation="geglu"``):

- Gemma's norm computes ``x_hat * (1 + w)``; ``from_hf`` stores ``1 + w`` in :class:`gpt.norms.RMSNorm`'s
  weight, which in fp32 is the same product (bf16 would round ``1 + w`` once more than HF does);
- the sqrt(d) scale multiplies the token embeddings before they enter ``GPT.forward(inputs_embeds=...)``;
  image features are placed after the scaling, unscaled, as HF does;
- the mask and HF's 1-based positions reach the attention layers through :class:`gpt.FullSequence`, a
  :class:`gpt.KVCache` that stores nothing and only describes one whole-sequence forward call.

Reference: HF ``transformers`` ``models/paligemma/modeling_paligemma.py`` and
``models/gemma/modeling_gemma.py``, checked in ``tests/test_vision_paligemma.py``.
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gpt import GPT, FullSequence, GPTConfig, causal_mask, prefix_lm_mask
from gpt.state_dict import load_checked
from vision.siglip import SiglipConfig, SiglipVisionTower


@dataclass
class PaliGemmaConfig:
    """The vision tower's config, the Gemma decoder's (a :class:`gpt.GPTConfig`), and the image token."""

    vision: SiglipConfig
    text: GPTConfig
    image_token_id: int
    num_image_tokens: int = field(init=False)

    def __post_init__(self):
        if not 0 <= self.image_token_id < self.text.vocab_size:
            raise ValueError(
                f"image_token_id={self.image_token_id} must be inside the vocabulary "
                f"[0, {self.text.vocab_size})"
            )
        if self.text.pos != "rope" or self.text.norm != "rmsnorm" or self.text.activation != "geglu":
            raise ValueError(
                "PaliGemma's decoder is Gemma-style: pos='rope', norm='rmsnorm', activation='geglu'"
            )
        self.num_image_tokens = self.vision.num_patches


class PaliGemma(nn.Module):
    """``model(pixel_values (B, 3, H, W), input_ids (B, T), token_type_ids=None) -> logits (B, T, vocab)``.

    ``input_ids`` start with ``num_image_tokens`` copies of ``image_token_id``. ``token_type_ids`` (B, T)
    are 0 for the image and the text prefix and 1 for the suffix (zeros then ones in every row); None
    means a plain causal mask everywhere, as in HF.
    """

    def __init__(self, config: PaliGemmaConfig):
        super().__init__()
        self.config = config
        self.vision_tower = SiglipVisionTower(config.vision)
        self.projector = nn.Linear(config.vision.n_embd, config.text.n_embd)
        self.language_model = GPT(config.text)

    # -- inputs ---------------------------------------------------------------------------------------

    def check_inputs(self, pixel_values: Tensor, input_ids: Tensor, token_type_ids: Tensor | None) -> None:
        """ValueError naming the expected shape for images, prompts and token types that do not fit."""
        self.vision_tower.check_pixels(pixel_values)
        N, image_id, vocab = (
            self.config.num_image_tokens,
            self.config.image_token_id,
            self.config.text.vocab_size,
        )
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            got = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be an integer tensor (B, T) with T > {N}, got {got}")
        B, T = input_ids.shape
        if pixel_values.size(0) != B:
            raise ValueError(f"{pixel_values.size(0)} images for {B} prompts: pass one image per prompt")
        if T <= N:
            raise ValueError(
                f"input_ids of shape {(B, T)} leave no room for text after the {N} image tokens: "
                f"expected (B, T) with T > {N} ({N} x image_token_id={image_id}, then the prompt)"
            )
        if self.config.text.block_size < T:
            raise ValueError(
                f"sequence of {T} tokens is longer than block_size={self.config.text.block_size}"
            )
        is_image = input_ids == image_id
        if not bool(is_image[:, :N].all()) or bool(is_image[:, N:].any()):
            raise ValueError(
                f"input_ids must start with exactly {N} image tokens (id {image_id}) and have none after them"
            )
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab:
            raise ValueError(f"token ids must lie in [0, {vocab})")
        if token_type_ids is not None:
            if tuple(token_type_ids.shape) != (B, T):
                raise ValueError(
                    f"token_type_ids must have the shape of input_ids {(B, T)}, "
                    f"got {tuple(token_type_ids.shape)}"
                )
            if bool(((token_type_ids != 0) & (token_type_ids != 1)).any()) or bool(
                (token_type_ids[:, 1:] < token_type_ids[:, :-1]).any()
            ):
                raise ValueError("token_type_ids must be 0 (image and prefix) then 1 (suffix) in every row")
            if bool(token_type_ids[:, :N].any()):
                raise ValueError(f"the {N} image tokens belong to the prefix: their token_type_ids must be 0")

    def image_features(self, pixel_values: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, num_image_tokens, n_embd of the decoder)."""
        return self.projector(self.vision_tower(pixel_values))

    def _embed(self, image_features: Tensor, input_ids: Tensor) -> Tensor:
        """Token embeddings scaled by sqrt(d), the image features in the placeholders' places -> (B, T, C)."""
        N, C = self.config.num_image_tokens, self.config.text.n_embd
        text = self.language_model.wte(input_ids[:, N:])  # (B, T - N, C)
        text = text * torch.tensor(C**0.5, dtype=text.dtype)  # Gemma: the scale rounded to the weights' dtype
        return torch.cat([image_features.to(text.dtype), text], dim=1)  # (B, T, C)

    def _decode(self, x: Tensor, token_type_ids: Tensor | None) -> Tensor:
        B, T, _ = x.shape
        positions = torch.arange(1, T + 1, device=x.device).expand(B, T)  # (B, T): HF counts from 1
        if token_type_ids is None:  # HF eager's mask (its SDPA path turns bidirectional here, 5.24)
            mask = causal_mask(T, device=x.device).expand(B, 1, T, T)  # (B, 1, T, T)
        else:
            prefix_len = (token_type_ids == 0).sum(dim=1)  # (B,)
            mask = prefix_lm_mask(T, prefix_len, device=x.device)  # (B, 1, T, T)
        logits, _ = self.language_model(inputs_embeds=x, cache=FullSequence(positions, mask))
        return logits  # (B, T, vocab)

    def forward(
        self, pixel_values: Tensor, input_ids: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        self.check_inputs(pixel_values, input_ids, token_type_ids)
        return self._decode(self._embed(self.image_features(pixel_values), input_ids), token_type_ids)

    @torch.no_grad()
    def generate(
        self,
        pixel_values: Tensor,
        input_ids: Tensor,
        max_new_tokens: int,
        token_type_ids: Tensor | None = None,
        eos_id: int | None = None,
    ) -> Tensor:
        """Greedy decoding -> (B, T + new). Generated tokens are suffix (type 1); a finished row is padded
        with ``eos_id``. The image is encoded once; each step recomputes the decoder over the sequence."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        self.check_inputs(pixel_values, input_ids, token_type_ids)
        T, block_size = input_ids.size(1), self.config.text.block_size
        if T + max_new_tokens > block_size:
            raise ValueError(
                f"{T} prompt tokens + max_new_tokens={max_new_tokens} exceed block_size={block_size}"
            )
        image = self.image_features(pixel_values)  # (B, N, C)
        ids, types = input_ids, token_type_ids
        done = torch.zeros(ids.size(0), dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            logits = self._decode(self._embed(image, ids), types)[:, -1]  # (B, vocab)
            nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            if eos_id is not None:
                nxt = nxt.masked_fill(done[:, None], eos_id)
                done = done | (nxt[:, 0] == eos_id)
            ids = torch.cat([ids, nxt], dim=1)
            if types is not None:
                types = torch.cat([types, torch.ones_like(nxt)], dim=1)
            if eos_id is not None and bool(done.all()):
                break
        return ids

    # -- Hugging Face weights -------------------------------------------------------------------------

    @classmethod
    def from_hf(cls, hf_model) -> "PaliGemma":
        """Our model with the weights of a ``PaliGemmaForConditionalGeneration`` (Gemma-1 decoder)."""
        hf_cfg = hf_model.config
        t = hf_cfg.text_config
        if t.model_type != "gemma":
            raise ValueError(f"decoder {t.model_type!r} is not supported; PaliGemma 1 uses 'gemma'")
        if t.head_dim * t.num_attention_heads != t.hidden_size:
            raise ValueError(
                f"head_dim={t.head_dim} * num_attention_heads={t.num_attention_heads} must equal "
                f"hidden_size={t.hidden_size} (gpt derives head_dim from the width)"
            )
        if t.hidden_act != "gelu_pytorch_tanh" or t.attention_bias or not t.tie_word_embeddings:
            raise ValueError(
                "only Gemma with gelu_pytorch_tanh, no attention bias and tied embeddings is supported"
            )
        rope = getattr(t, "rope_parameters", None) or {"rope_type": "default", "rope_theta": t.rope_theta}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"RoPE scaling {rope['rope_type']!r} is not supported")
        text = GPTConfig.llama(
            vocab_size=t.vocab_size,
            block_size=t.max_position_embeddings,
            n_layer=t.num_hidden_layers,
            n_head=t.num_attention_heads,
            n_kv_head=t.num_key_value_heads,
            n_embd=t.hidden_size,
            ffn_hidden=t.intermediate_size,
            activation="geglu",
            norm_eps=t.rms_norm_eps,
            rope_theta=rope["rope_theta"],
            tie_embeddings=True,
        )
        vision = SiglipVisionTower.from_hf(hf_model.model.vision_tower)
        config = PaliGemmaConfig(vision=vision.config, text=text, image_token_id=hf_cfg.image_token_id)
        sd = hf_model.state_dict()
        ref = sd["model.language_model.embed_tokens.weight"]
        with torch.device("meta"):  # no random init: every parameter is overwritten below
            model = cls(config)
        model = model.to_empty(device=ref.device).to(ref.dtype)  # no buffers to rebuild
        lm = model.language_model
        lm.lm_head.weight = lm.wte.weight  # to_empty() made new Parameters: restore the tie
        ours = {f"language_model.{k}": v for k, v in _gemma_to_ours(sd, text).items()}
        ours["projector.weight"] = sd["model.multi_modal_projector.linear.weight"]
        ours["projector.bias"] = sd["model.multi_modal_projector.linear.bias"]
        ours |= {f"vision_tower.{k}": v for k, v in vision.state_dict().items()}
        load_checked(model, ours)
        return model.eval()


def _gemma_to_ours(sd: dict[str, Tensor], cfg: GPTConfig) -> dict[str, Tensor]:
    """HF Gemma decoder weights -> gpt.GPT names; every RMSNorm weight w becomes 1 + w."""
    p = "model.language_model."
    out = {"wte.weight": sd[p + "embed_tokens.weight"], "ln_f.weight": 1.0 + sd[p + "norm.weight"]}
    for i in range(cfg.n_layer):
        L = f"{p}layers.{i}."
        out[f"h.{i}.ln_1.weight"] = 1.0 + sd[L + "input_layernorm.weight"]
        out[f"h.{i}.ln_2.weight"] = 1.0 + sd[L + "post_attention_layernorm.weight"]
        qkv = [sd[f"{L}self_attn.{x}_proj.weight"] for x in "qkv"]
        out[f"h.{i}.attn.c_attn.weight"] = torch.cat(qkv, dim=0)  # rows: q, then k, then v
        out[f"h.{i}.attn.c_proj.weight"] = sd[L + "self_attn.o_proj.weight"]
        out[f"h.{i}.mlp.c_gate.weight"] = sd[L + "mlp.gate_proj.weight"]
        out[f"h.{i}.mlp.c_fc.weight"] = sd[L + "mlp.up_proj.weight"]
        out[f"h.{i}.mlp.c_proj.weight"] = sd[L + "mlp.down_proj.weight"]
    return out
