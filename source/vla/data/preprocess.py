"""Image preprocessing shared by the dataset and the Isaac Lab policy.

Training reads recorded frames, deployment reads live camera frames; both go through
``resize_images`` so the model sees bit-identical pixels for identical inputs. The resize runs in
float32 on the CPU (antialiased bilinear, then rounded) because GPU kernels may round differently.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


class ImageFormatError(ValueError):
    """Images are not uint8 (B, H, W, 3)."""


def resize_images(images, size: Sequence[int] | None):
    """Resize uint8 ``(B, H, W, 3)`` (or ``(H, W, 3)``) images to ``size = (h, w)``.

    Returns the same kind of array it was given (numpy array, or a torch tensor on the input's device),
    uint8. Identity (no copy) when the size already matches or ``size`` is None.
    """
    is_numpy = isinstance(images, np.ndarray)
    if not is_numpy and not torch.is_tensor(images):
        raise ImageFormatError(f"images must be a numpy array or torch tensor, got {type(images).__name__}")
    if images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ImageFormatError(f"images must be uint8 (B, H, W, 3) RGB, got shape {tuple(images.shape)}")
    if (images.dtype != np.uint8) if is_numpy else (images.dtype != torch.uint8):
        raise ImageFormatError(f"images must be uint8 RGB (0..255), got dtype {images.dtype}")
    if size is None:
        return images
    h, w = int(size[0]), int(size[1])
    if tuple(images.shape[-3:-1]) == (h, w):
        return images
    single = images.ndim == 3
    x = torch.from_numpy(np.ascontiguousarray(images)) if is_numpy else images.detach().cpu()
    if single:
        x = x[None]
    x = x.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    x = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    if single:
        x = x[0]
    if is_numpy:
        return x.numpy()
    return x.to(images.device)
