"""Does the policy use its inputs? Effect sizes of swapping one input at a time.

The classic failure of this model family is a policy that ignores its images: it reaches a low training
loss from proprio alone and never looks at the cameras. The test: give each sample one input of another
sample (its images, its instruction or its proprio), keep everything else and the flow-matching noise
identical, and compare how far the predicted chunk moves with how far the chunks of two different
samples are apart:

    effect = mean_i ||pred(x_i with input of x_j) - pred(x_i)|| / mean_i ||pred(x_j) - pred(x_i)||

~0 means the input is ignored; a policy whose targets depend on the scene typically lands around
0.3-0.7 for its images. The SAME noise must be used for both predictions, otherwise the sampling noise
dominates the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

INPUTS = ("context_image", "wrist_image", "instruction", "proprio")


@torch.no_grad()
def input_effect(model, batch: Mapping, swap: Sequence[str], *, num_steps: int | None = None, seed: int = 0,
                 alt_instruction: str | None = None) -> float:
    """Effect size of swapping the inputs named in ``swap`` (a subset of ``INPUTS``) on ``batch``.

    ``batch`` has the dataset's keys (context_image, wrist_image, instruction, proprio; >= 2 samples).
    ``alt_instruction`` replaces every instruction instead of taking another sample's (a dataset of one
    task has one instruction, so another sample's would change nothing).
    """
    bad = sorted(set(swap) - set(INPUTS))
    if bad:
        raise ValueError(f"unknown input(s) {bad}; choose from {INPUTS}")
    x = {
        "context_image": torch.as_tensor(batch["context_image"]),
        "wrist_image": torch.as_tensor(batch["wrist_image"]),
        "instruction": list(batch["instruction"]),
        "proprio": torch.as_tensor(batch["proprio"]).float(),
    }
    n = x["proprio"].shape[0]
    if n < 2:
        raise ValueError("an input effect needs a batch of at least 2 samples")
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((1, cfg.num_queries, cfg.action_dim), generator=gen).expand(n, -1, -1).contiguous()
    other = torch.roll(torch.arange(n), 1)  # sample i gets the input of sample i-1
    kw = {"noise": noise, "num_steps": num_steps}

    def predict(inp):
        return model.predict_action(inp["context_image"], inp["wrist_image"], inp["instruction"], inp["proprio"],
                                    **kw).float().cpu()

    swapped = dict(x)
    for name in swap:
        if name == "instruction":
            swapped[name] = [alt_instruction] * n if alt_instruction else [x[name][int(j)] for j in other]
        else:
            swapped[name] = x[name][other]
    pred = predict(x)
    moved = (predict(swapped) - pred).flatten(1).norm(dim=1).mean()
    between = (pred[other] - pred).flatten(1).norm(dim=1).mean()  # same noise row for every sample
    return float(moved / between.clamp_min(1e-12))


def conditioning_effects(model, batch: Mapping, *, seed: int = 0, alt_instruction: str | None = None,
                         num_steps: int | None = None) -> dict[str, float]:
    """Effect sizes of the context image, the wrist image, both, the instruction and the proprio."""
    kw = {"seed": seed, "num_steps": num_steps}
    return {
        "context_image": input_effect(model, batch, ["context_image"], **kw),
        "wrist_image": input_effect(model, batch, ["wrist_image"], **kw),
        "both_images": input_effect(model, batch, ["context_image", "wrist_image"], **kw),
        "instruction": input_effect(model, batch, ["instruction"], alt_instruction=alt_instruction, **kw),
        "proprio": input_effect(model, batch, ["proprio"], **kw),
    }
