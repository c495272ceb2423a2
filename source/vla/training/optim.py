"""AdamW with separate learning rates for LoRA adapters and the head, and a warmup + cosine schedule."""

from __future__ import annotations

import math

import torch

from .config import OptimConfig


def is_lora_param(name: str) -> bool:
    return "lora_" in name


def is_backbone_param(name: str) -> bool:
    """LoRA adapters and (when unfrozen) backbone weights: everything under ``backbone.``."""
    return name.startswith("backbone.") or "lora_" in name


def param_groups(model: torch.nn.Module, cfg: OptimConfig) -> list[dict]:
    """Groups {backbone (LoRA / unfrozen weights), head} x {decayed matrices, undecayed biases/norms}.

    The backbone side gets ``lr_lora``, the head (projector, memory positions, expert) ``lr_heads``;
    frozen parameters are left out.
    """
    buckets: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kind = "lora" if is_backbone_param(name) else "heads"
        buckets.setdefault((kind, p.ndim >= 2), []).append(p)
    groups = []
    for (kind, decay), params in sorted(buckets.items()):
        groups.append(
            {
                "params": params,
                "lr": cfg.lr_lora if kind == "lora" else cfg.lr_heads,
                "weight_decay": cfg.weight_decay if decay else 0.0,
                "name": f"{kind}{'' if decay else '_no_decay'}",
            }
        )
    if not groups:
        raise ValueError("the model has no trainable parameters; check freeze_backbone / lora in the model preset")
    return groups


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    # foreach=False: identical update order on every device / resume, and no large temporaries on the CPU
    return torch.optim.AdamW(param_groups(model, cfg), betas=tuple(cfg.betas), foreach=False)


class WarmupCosine:
    """lr multiplier: linear warmup over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total``.

    A class (not a lambda) so the schedule is plain data; LambdaLR stores only its own counters.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float):
        # a warmup longer than a fifth of the run (short test/overfit runs) is capped so the run can learn
        self.warmup, self.total, self.min_ratio = min(int(warmup), int(total) // 5), int(total), float(min_ratio)

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        span = max(self.total - self.warmup, 1)
        progress = min(max(step - self.warmup, 0) / span, 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer, cfg: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(cfg.warmup_steps, total_steps, cfg.min_lr_ratio))
