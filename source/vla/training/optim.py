"""AdamW with separate learning rates for LoRA adapters and the head, and a warmup + cosine schedule."""

from __future__ import annotations

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


def warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    """``optim.warmup_steps``, capped at a fifth of the run so short test/overfit runs can still learn."""
    return min(int(cfg.warmup_steps), int(total_steps) // 5)


def build_scheduler(optimizer, cfg: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' linear warmup + cosine to ``min_lr_ratio * lr`` (a ``LambdaLR``; its state is plain data).

    As in transformers, the multiplier is ``step / warmup`` during warmup, so the first update has lr 0.
    """
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, warmup_steps(cfg, total_steps), int(total_steps), min_lr_rate=float(cfg.min_lr_ratio)
    )
