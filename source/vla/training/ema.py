"""Exponential moving average of the head weights (projector + action expert, not LoRA or the backbone).

Averaging smooths the noisy flow-matching updates; the averaged weights are what validation and the
saved checkpoints use when EMA is on, while training keeps updating the raw weights. The average is
torch's ``torch.optim.swa_utils.AveragedModel`` over the head modules, with an EMA update whose decay
warms up (``min(decay, (1 + n) / (10 + n))``) so early averages are not dominated by the random init.
"""

from __future__ import annotations

import contextlib

import torch
from torch.optim.swa_utils import AveragedModel

from ..modeling import HEAD_MODULES


def warmup_ema_multi_avg_fn(decay: float):
    """``multi_avg_fn`` for ``AveragedModel``: EMA with a warmed-up decay (torch's ``get_ema_multi_avg_fn``
    uses a fixed one)."""

    @torch.no_grad()
    def ema_update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = int(num_averaged)
        d = min(float(decay), (1 + n) / (10 + n))
        for a, c in zip(averaged, current):
            a.lerp_(c.to(a.dtype), 1.0 - d)

    return ema_update


class HeadEMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.head = torch.nn.ModuleDict({n: getattr(model, n) for n in HEAD_MODULES if getattr(model, n) is not None})
        self.averaged = AveragedModel(self.head, multi_avg_fn=warmup_ema_multi_avg_fn(decay), use_buffers=False)

    def update(self) -> None:
        self.averaged.update_parameters(self.head)

    @contextlib.contextmanager
    def applied(self):
        """Temporarily swap the averaged weights into the model."""
        live, avg = list(self.head.parameters()), list(self.averaged.module.parameters())
        backup = [p.detach().clone() for p in live]
        with torch.no_grad():
            for p, a in zip(live, avg):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(live, backup):
                    p.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.averaged.state_dict()

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.averaged.load_state_dict(tensors)
