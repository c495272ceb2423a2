"""Camera images -> the uint8 (B, H, W, 3) numpy batch the Qwen2.5-VL processor is given.

The resize must be identical in training (dataset) and deployment (Isaac Lab policy), so the shared
`vla.data.preprocess.resize_images` is used when it exists; the local fallback has the same contract
(uint8 in, uint8 out, bilinear with antialiasing) and is a no-op when the size already matches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class ImageInputError(ValueError):
    """Images have the wrong shape/dtype for the VLA model."""


def _local_resize_images(images: np.ndarray, size: Sequence[int]) -> np.ndarray:
    h, w = int(size[0]), int(size[1])
    if images.shape[1:3] == (h, w):
        return images
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


try:  # the data contributor's shared implementation, if present
    from vla.data.preprocess import resize_images  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on what is installed
    resize_images = _local_resize_images


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
            raise ImageInputError(f"{name}: float images in [0, 1]; pass uint8 (0-255) images, e.g. (x * 255).astype(uint8)")
        images = np.clip(images, 0, 255).astype(np.uint8)
    return images


def prepare_images(images, size: Sequence[int], name: str = "images") -> np.ndarray:
    return resize_images(as_uint8_batch(images, name), tuple(size))
