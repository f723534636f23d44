"""Image preprocessing for SigLIP: resize, rescale to [0, 1], normalise, with transformers' arithmetic.

Teaches what happens to an image before the first patch: a bicubic resize to the model's square size
(done by PIL on the uint8 image, as transformers' PIL backend does), a rescale by 1/255 computed in
float64 and stored as float32, and ``(x - mean) / std`` per channel in float32 (SigLIP's mean and std
are 0.5, which maps [0, 1] to [-1, 1]). Doing the same operations in the same dtypes is what makes the
pixel values equal, not just close.

Reference: HF ``transformers`` ``models/siglip/image_processing_pil_siglip.py`` and
``image_transforms.py`` (``resize``, ``rescale``, ``normalize``), checked in
``tests/test_vision_processor.py``.
"""

import numpy as np
import torch
from torch import Tensor

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


def preprocess(
    images: list[np.ndarray] | np.ndarray,
    size: int = 224,
    mean: tuple[float, ...] = SIGLIP_MEAN,
    std: tuple[float, ...] = SIGLIP_STD,
) -> Tensor:
    """uint8 RGB images (H, W, 3), any sizes -> pixel values (B, 3, size, size) float32."""
    from PIL import Image  # pillow ships with matplotlib, a runtime dependency

    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    out = []
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            got = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
            raise TypeError(f"image {i} must be a uint8 numpy array (H, W, 3), got {got}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {i} must have shape (H, W, 3) (RGB, channels last), got {image.shape}")
        resized = np.asarray(Image.fromarray(image).resize((size, size), resample=Image.BICUBIC))  # (S, S, 3)
        x = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)  # HF rescales in float64
        x = (x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
        out.append(x.transpose(2, 0, 1))  # (3, S, S)
    return torch.from_numpy(np.stack(out))  # (B, 3, S, S)
