"""Image preprocessing shared by the dataset and the Isaac Lab policy.

Training reads recorded frames, deployment reads live camera frames; both go through
``resize_images`` so the model sees bit-identical pixels for identical inputs. The resize is Pillow's
bilinear filter (antialiased when shrinking, integer arithmetic) on the CPU: deterministic on every
machine, independent of the GPU, and ~0.1 ms per frame without touching torch's thread pool (small torch
ops cost ~15 ms each on a busy 2-core machine).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


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
    frames = images if is_numpy else images.detach().cpu().numpy()
    single = frames.ndim == 3
    if single:
        frames = frames[None]
    out = np.empty((frames.shape[0], h, w, 3), np.uint8)
    for i, frame in enumerate(frames):
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize((w, h), Image.Resampling.BILINEAR))
    if single:
        out = out[0]
    return out if is_numpy else torch.from_numpy(out).to(images.device)
