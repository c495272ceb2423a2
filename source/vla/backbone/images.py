"""Camera images -> the uint8 (B, H, W, 3) numpy batch the Qwen2.5-VL processor is given.

The resize must be identical in training (dataset) and deployment (Isaac Lab policy), so it is the
shared `vla.data.preprocess.resize_images` (a no-op when the dataset already resized the frames).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vla.data.preprocess import ImageFormatError, resize_images

ImageInputError = ImageFormatError  # one exception type for bad images, whichever check finds them


def as_uint8_batch(images, name: str = "images") -> np.ndarray:
    """numpy or torch, (H,W,3) or (B,H,W,3), uint8 (or float in [0,255]) -> uint8 numpy (B,H,W,3)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    elif isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(i.detach().cpu() if isinstance(i, torch.Tensor) else i) for i in images])
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ImageInputError(f"{name}: expected uint8 images shaped (B, H, W, 3) or (H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        if np.issubdtype(images.dtype, np.floating) and images.size and images.max() <= 1.0:
            raise ImageInputError(f"{name}: float images in [0, 1]; pass uint8 (0-255) images, "
                                  "e.g. (x * 255).astype(uint8)")
        images = np.clip(images, 0, 255).astype(np.uint8)
    return images


def prepare_images(images, size: Sequence[int], name: str = "images") -> np.ndarray:
    return resize_images(as_uint8_batch(images, name), tuple(size))
