"""Does the policy look at its images? The image-conditioning effect size.

A policy can reach a low training loss from proprio alone and still ignore the cameras (the seed's
failure). The test: give each sample the images of another sample, keep everything else and the
flow-matching noise identical, and compare how far the predicted chunk moves with how far chunks of two
different samples are apart:

    effect = mean_i ||pred(x_i with images of x_j) - pred(x_i)|| / mean_i ||pred(x_j) - pred(x_i)||

~0 means blind; a policy whose targets depend on the scene typically lands around 0.3-0.7. The SAME
noise must be used for both predictions, otherwise the sampling noise dominates the difference.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

SWAPS = ("both", "context", "wrist")


@torch.no_grad()
def image_effect(model, batch: Mapping, *, swap: str = "both", num_steps: int | None = None, seed: int = 0) -> float:
    """Image-swap effect size on ``batch`` (>= 2 samples; keys as the dataset's: context_image,
    wrist_image, instruction, proprio). ``swap`` picks which view(s) come from the other sample."""
    if swap not in SWAPS:
        raise ValueError(f"swap must be one of {SWAPS}, got {swap!r}")
    ctx, wrist = torch.as_tensor(batch["context_image"]), torch.as_tensor(batch["wrist_image"])
    instr, proprio = list(batch["instruction"]), torch.as_tensor(batch["proprio"]).float()
    n = proprio.shape[0]
    if n < 2:
        raise ValueError("image_effect needs a batch of at least 2 samples")
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, cfg.num_queries, cfg.action_dim), generator=gen).expand(n, -1, -1).contiguous()
    other = torch.roll(torch.arange(n), 1)  # sample i gets the images of sample i-1
    kw = {"noise": noise, "num_steps": num_steps}
    pred = model.predict_action(ctx, wrist, instr, proprio, **kw).float().cpu()
    ctx2 = ctx[other] if swap in ("both", "context") else ctx
    wrist2 = wrist[other] if swap in ("both", "wrist") else wrist
    swapped = model.predict_action(ctx2, wrist2, instr, proprio, **kw).float().cpu()
    moved = (swapped - pred).flatten(1).norm(dim=1).mean()
    between = (pred[other] - pred).flatten(1).norm(dim=1).mean()
    return float(moved / between.clamp_min(1e-12))


def image_effects(model, batch: Mapping, **kw) -> dict[str, float]:
    """``image_effect`` for both views, the context view alone and the wrist view alone."""
    return {f"image_effect{'' if s == 'both' else '_' + s}": image_effect(model, batch, swap=s, **kw) for s in SWAPS}
