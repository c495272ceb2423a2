"""Exponential moving average of the head weights (projector + action expert, not LoRA or the backbone).

Averaging smooths the noisy flow-matching updates; the averaged weights are what validation and the
saved checkpoints use when EMA is on, while training keeps updating the raw weights.
"""

from __future__ import annotations

import contextlib

import torch

from .optim import is_backbone_param


class HeadEMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad and not is_backbone_param(n)}
        self.shadow = {n: p.detach().float().clone() for n, p in self.params.items()}
        self.num_updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        # warm up the decay so early averages are not dominated by the random init
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for n, p in self.params.items():
            self.shadow[n].mul_(d).add_(p.detach().float(), alpha=1 - d)

    @contextlib.contextmanager
    def applied(self):
        """Temporarily swap the averaged weights into the model."""
        backup = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.shadow[n].to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(backup[n])

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {**self.shadow, "__num_updates__": torch.tensor([self.num_updates], dtype=torch.int64)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.num_updates = int(tensors["__num_updates__"][0])
        for n in self.shadow:
            self.shadow[n].copy_(tensors[n])
