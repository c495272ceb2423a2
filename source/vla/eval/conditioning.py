"""Does the policy use its inputs? Effect sizes of swapping one input at a time.

The classic failure of this model family is a policy that ignores its images. For a batch of
samples we predict chunks with the SAME flow-matching noise for the original and the perturbed
inputs (otherwise sampling noise dominates), then report

    effect(input) = mean ||pred(input swapped with another sample's) - pred(original)||
                    / mean ||pred(sample b) - pred(sample a)||

i.e. the share of the between-sample change in predictions that one input alone explains. ~0 means
the input is ignored; the ratio for the ground-truth actions (``target``) says how much the data
itself varies between the same pairs of samples.
"""

from __future__ import annotations

import torch


def _roll(x, shift: int = 1):
    if isinstance(x, list):
        return x[shift:] + x[:shift]
    return torch.roll(torch.as_tensor(x), shifts=shift, dims=0)


@torch.no_grad()
def conditioning_effects(model, batch: dict, *, seed: int = 0, alt_instruction: str | None = None) -> dict[str, float]:
    """Effect sizes for context image, wrist image, instruction and proprio on one batch (B >= 2).

    ``batch`` holds ``context_image``, ``wrist_image`` (uint8 B,H,W,3), ``instruction`` (list), ``proprio``
    and optionally ``actions`` (B,16,7) for the data's own between-sample change.
    """
    ctx, wrist = torch.as_tensor(batch["context_image"]), torch.as_tensor(batch["wrist_image"])
    instr, proprio = list(batch["instruction"]), torch.as_tensor(batch["proprio"]).float()
    b = ctx.shape[0]
    if b < 2:
        raise ValueError("conditioning_effects needs a batch of at least 2 samples")
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(b, cfg.num_queries, cfg.action_dim, generator=g)

    def pred(c, w, i, p):
        return model.predict_action(c, w, i, p, noise=noise.clone()).float().cpu()

    base = pred(ctx, wrist, instr, proprio)
    other = pred(_roll(ctx), _roll(wrist), _roll(instr), _roll(proprio))
    # the same noise row for sample a in both calls: compare pred(a's inputs) vs pred(b's inputs)
    between = (other - base).flatten(1).norm(dim=1).mean().clamp_min(1e-12)

    def effect(out) -> float:
        return float((out - base).flatten(1).norm(dim=1).mean() / between)

    alt = [alt_instruction] * b if alt_instruction else _roll(instr)
    res = {
        "context_image": effect(pred(_roll(ctx), wrist, instr, proprio)),
        "wrist_image": effect(pred(ctx, _roll(wrist), instr, proprio)),
        "both_images": effect(pred(_roll(ctx), _roll(wrist), instr, proprio)),
        "instruction": effect(pred(ctx, wrist, alt, proprio)) if alt != instr else 0.0,
        "proprio": effect(pred(ctx, wrist, instr, _roll(proprio))),
        "between_sample_change": float(between),
    }
    if "actions" in batch:
        a = torch.as_tensor(batch["actions"]).float()
        res["target_between_sample_change"] = float((_roll(a) - a).flatten(1).norm(dim=1).mean())
    return res
