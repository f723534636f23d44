"""vision.processor.preprocess against transformers' SigLIP image processor on numpy-made images."""

import numpy as np
import pytest
import torch

from vision.processor import preprocess


def _images(seed: int) -> list[np.ndarray]:
    """Real-looking uint8 RGB images: a smooth gradient with a disc, and textured noise; several sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in [(224, 224), (100, 160), (300, 257), (31, 47)]:
        yy, xx = np.mgrid[0:h, 0:w]
        grad = np.stack([xx / w, yy / h, 1 - xx / w], axis=-1) * 255
        disc = ((yy - h / 2) ** 2 + (xx - w / 3) ** 2) < (min(h, w) / 4) ** 2
        grad[disc] = (200, 30, 60)
        noise = rng.normal(0, 25, size=(h, w, 3))
        out.append(np.clip(grad + noise, 0, 255).astype(np.uint8))
    out.append(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
    return out


@pytest.mark.parametrize("size", [224, 64])
def test_pixels_equal_hf(size):
    from transformers import SiglipImageProcessorPil

    images = _images(seed=0)
    hf = SiglipImageProcessorPil(size={"height": size, "width": size})
    want = hf(images=images, return_tensors="pt")["pixel_values"]
    got = preprocess(images, size=size)
    assert got.dtype == want.dtype == torch.float32
    assert got.shape == want.shape == (len(images), 3, size, size)
    assert torch.equal(got, want), f"max |ours - HF| = {(got - want).abs().max().item()}"


def test_hand_worked_values():
    """A constant image stays constant under resize: 0 -> -1, 255 -> 1, 51 -> 0.2 * 2 - 1 = -0.6."""
    img = np.zeros((10, 12, 3), dtype=np.uint8)
    img[..., 1], img[..., 2] = 255, 51
    x = preprocess(img, size=8)
    assert x.shape == (1, 3, 8, 8)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([-1.0, 1.0, -0.6]), atol=1e-6)


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 4), (3, 32, 32, 1)])
def test_wrong_channels_name_the_expected_shape(shape):
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        preprocess([np.zeros(shape, dtype=np.uint8)])


def test_float_images_are_refused():
    with pytest.raises(TypeError, match="uint8"):
        preprocess(np.zeros((8, 8, 3), dtype=np.float32))
