"""vision.siglip against transformers' SiglipVisionModel on a small random config (fp32, seeded)."""

import pytest
import torch

from vision.siglip import SiglipConfig, SiglipVisionTower


def _hf_tower(seed: int = 0):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    cfg = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        layer_norm_eps=1e-6,
        attn_implementation="eager",
    )
    return SiglipVisionModel(cfg).eval()


def test_tower_matches_hf(one_thread):
    hf = _hf_tower()
    ours = SiglipVisionTower.from_hf(hf)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(pixel_values=pixels).last_hidden_state
        got = ours(pixels)
    assert got.shape == want.shape == (3, 16, 32)
    diff = (got - want).abs().max().item()
    assert diff < 1e-5, f"max |ours - HF| = {diff}"


def test_patch_embedding_is_a_linear_map_of_each_patch():
    """Hand-worked: a conv with kernel == stride applies one matrix to every flattened patch."""
    torch.manual_seed(0)
    cfg = SiglipConfig(image_size=8, patch_size=4, n_embd=6, n_layer=1, n_head=2, ffn_hidden=8)
    tower = SiglipVisionTower(cfg)
    pixels = torch.randn(1, 3, 8, 8)
    W = tower.embed.patch.weight.reshape(6, -1)  # (C, 3 * 4 * 4)
    # the top-right patch is the second in row-major order
    patch = pixels[0, :, 0:4, 4:8].reshape(-1)
    want = W @ patch + tower.embed.patch.bias + tower.embed.pos.weight[1]
    got = tower.embed(pixels)[0, 1]
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize(
    "shape",
    [(1, 3, 16, 32), (1, 1, 32, 32), (3, 32, 32), (1, 4, 32, 32)],
    ids=["size", "gray", "nobatch", "rgba"],
)
def test_wrong_image_shape_names_the_expected_one(shape):
    tower = SiglipVisionTower(
        SiglipConfig(image_size=32, patch_size=8, n_embd=8, n_layer=1, n_head=2, ffn_hidden=8)
    )
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        tower(torch.zeros(shape))
