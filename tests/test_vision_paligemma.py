"""vision.PaliGemma against transformers' PaliGemmaForConditionalGeneration on small random configs."""

import pytest
import torch

from gpt import prefix_lm_mask
from gpt.norms import RMSNorm
from vision.paligemma import PaliGemma

pytestmark = pytest.mark.usefixtures("one_thread")

N_IMG = 4  # (16 / 8) ** 2 patches
VOCAB, IMAGE_ID, EOS = 96, 95, 1


def _hf_paligemma(seed: int, matrix_std: float | None = None):
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=16, patch_size=8, projection_dim=48,
    )  # fmt: skip
    text = dict(
        hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=12, vocab_size=VOCAB, max_position_embeddings=64,
        eos_token_id=EOS, pad_token_id=EOS,
    )  # fmt: skip
    cfg = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_ID, projection_dim=48)
    torch.manual_seed(seed)
    hf = PaliGemmaForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # HF initialises Gemma's norm weights to 0 (gain 1): make the (1 + w) visible
        for name, p in hf.named_parameters():
            if "norm" in name and "language_model" in name:
                p.normal_(0.0, 0.3)
            elif matrix_std is not None and p.dim() >= 2:  # sharper logits: greedy text that varies
                p.normal_(0.0, matrix_std)
    return hf


def _inputs(B: int, n_prefix: int, n_suffix: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(B, 3, 16, 16, generator=g)
    text = torch.randint(2, IMAGE_ID, (B, n_prefix + n_suffix), generator=g)
    ids = torch.cat([torch.full((B, N_IMG), IMAGE_ID), text], dim=1)
    types = torch.cat([torch.zeros(B, N_IMG + n_prefix), torch.ones(B, n_suffix)], dim=1).long()
    return pixels, ids, types


@pytest.mark.parametrize("seed", [0, 1])
def test_logits_match_hf_prefix_lm(seed):
    hf = _hf_paligemma(seed)
    ours = PaliGemma.from_hf(hf)
    pixels, ids, types = _inputs(B=2, n_prefix=5, n_suffix=4, seed=seed)
    with torch.no_grad():
        want = hf(pixel_values=pixels, input_ids=ids, token_type_ids=types).logits
        got = ours(pixels, ids, types)
    assert got.shape == want.shape == (2, N_IMG + 9, VOCAB)
    diff = (got - want).abs().max().item()
    assert diff < 1e-4, f"max |ours - HF| = {diff}"
    # the mask matters: a causal-only run differs from the prefix-LM one on the prefix rows
    with torch.no_grad():
        causal = ours(pixels, ids, None)
    assert (causal - got).abs().max().item() > 1e-3


def test_logits_match_hf_without_token_types():
    """No token_type_ids: HF's mask function is plain causal. Its SDPA path skips an all-causal mask and
    then runs Gemma with is_causal=False (PaliGemmaConfig sets use_bidirectional_attention=True), which
    makes everything bidirectional in transformers 5.24; the eager path applies the mask, so it is the
    reference here."""
    hf = _hf_paligemma(2)
    hf.set_attn_implementation("eager")
    ours = PaliGemma.from_hf(hf)
    pixels, ids, _ = _inputs(B=1, n_prefix=3, n_suffix=3, seed=2)
    with torch.no_grad():
        want = hf(pixel_values=pixels, input_ids=ids).logits
        got = ours(pixels, ids)
    diff = (got - want).abs().max().item()
    assert diff < 1e-4, f"max |ours - HF| = {diff}"


def test_greedy_generation_matches_hf():
    hf = _hf_paligemma(3, matrix_std=0.3)
    ours = PaliGemma.from_hf(hf)
    pixels, ids, _ = _inputs(B=2, n_prefix=4, n_suffix=0, seed=3)
    types = torch.zeros_like(ids)  # the whole prompt is prefix, as PaliGemmaProcessor makes it
    want = hf.generate(
        pixel_values=pixels,
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        token_type_ids=types,
        max_new_tokens=10,
        do_sample=False,
    )
    got = ours.generate(pixels, ids, max_new_tokens=10, token_type_ids=types, eos_id=EOS)
    new = got[:, ids.shape[1] :]
    assert new.shape[1] == 10 and len(new.unique()) >= 3, f"a degenerate continuation {new.tolist()}"
    assert torch.equal(got, want), f"ours {got.tolist()} != HF {want.tolist()}"


def test_prefix_lm_mask_hand_worked():
    """2 image tokens + 1 prefix token see each other both ways; the 2 suffix tokens are causal."""
    want = torch.tensor(
        [
            [1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(prefix_lm_mask(5, torch.tensor([3]))[0, 0], want)


def test_one_plus_w_norm_hand_worked():
    """Gemma's norm x / rms(x) * (1 + w): x = (3, 4) has rms sqrt(12.5); w = (0, -0.5) -> gains (1, 0.5)."""
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    hf = GemmaRMSNorm(2, eps=0.0)
    with torch.no_grad():
        hf.weight.copy_(torch.tensor([0.0, -0.5]))
    ours = RMSNorm(2, eps=0.0)
    with torch.no_grad():
        ours.weight.copy_(1.0 + hf.weight)  # what PaliGemma.from_hf stores
    x = torch.tensor([[3.0, 4.0]])
    want = torch.tensor([[3.0 / 12.5**0.5, 0.5 * 4.0 / 12.5**0.5]])
    assert torch.allclose(hf(x), want) and torch.allclose(ours(x), want)


@pytest.fixture(scope="module")
def tiny():
    return PaliGemma.from_hf(_hf_paligemma(4))


@pytest.mark.parametrize(
    "shape", [(1, 3, 8, 8), (1, 1, 16, 16), (1, 4, 16, 16)], ids=["size", "gray", "rgba"]
)
def test_wrong_image_names_expected_shape(tiny, shape):
    _, ids, _ = _inputs(B=1, n_prefix=2, n_suffix=0, seed=0)
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        tiny(torch.zeros(shape), ids)


def test_prompt_without_room_after_the_image(tiny):
    pixels, _, _ = _inputs(B=1, n_prefix=1, n_suffix=0, seed=0)
    ids = torch.full((1, N_IMG), IMAGE_ID)
    with pytest.raises(ValueError, match=rf"T > {N_IMG}"):
        tiny(pixels, ids)
    with pytest.raises(ValueError, match=rf"T > {N_IMG}"):
        tiny.generate(pixels, ids, max_new_tokens=3)


def test_token_types_must_be_prefix_then_suffix(tiny):
    pixels, ids, types = _inputs(B=1, n_prefix=2, n_suffix=2, seed=0)
    with pytest.raises(ValueError, match=r"0 .* then 1"):
        tiny(pixels, ids, types.flip(1))
    with pytest.raises(ValueError, match=r"shape of input_ids \(1, 8\)"):
        tiny(pixels, ids, types[:, 1:])


def test_from_hf_keeps_the_head_tied(tiny):
    """from_hf builds on the meta device and materialises with to_empty(), which unties Parameters."""
    lm = tiny.language_model
    assert lm.lm_head.weight is lm.wte.weight
    assert not any(p.is_meta for p in tiny.parameters())


def test_image_tokens_must_come_first(tiny):
    pixels, ids, _ = _inputs(B=1, n_prefix=2, n_suffix=0, seed=0)
    with pytest.raises(ValueError, match="start with exactly 4 image tokens"):
        tiny(pixels, ids.flip(1))
