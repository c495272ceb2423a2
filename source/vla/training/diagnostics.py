"""Does the policy look at its images? The image-conditioning effect size.

Logged at the end of every training run; the measure itself (same noise for the original and the
swapped input, normalised by the between-sample change) lives in ``vla.eval.conditioning``.
"""

from __future__ import annotations

from collections.abc import Mapping

from vla.eval.conditioning import input_effect

SWAPS = ("both", "context", "wrist")


_VIEWS = {"both": ["context_image", "wrist_image"], "context": ["context_image"], "wrist": ["wrist_image"]}


def image_effect(model, batch: Mapping, *, swap: str = "both", num_steps: int | None = None, seed: int = 0) -> float:
    """Image-swap effect size on ``batch`` (>= 2 samples; keys as the dataset's: context_image,
    wrist_image, instruction, proprio). ``swap`` picks which view(s) come from the other sample."""
    if swap not in SWAPS:
        raise ValueError(f"swap must be one of {SWAPS}, got {swap!r}")
    return input_effect(model, batch, _VIEWS[swap], num_steps=num_steps, seed=seed)


def image_effects(model, batch: Mapping, **kw) -> dict[str, float]:
    """``image_effect`` for both views, the context view alone and the wrist view alone."""
    return {f"image_effect{'' if s == 'both' else '_' + s}": image_effect(model, batch, swap=s, **kw) for s in SWAPS}
