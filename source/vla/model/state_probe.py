"""Training-only auxiliary head: regress privileged state (e.g. the cube positions) from the context view.

A frozen random backbone encodes where the cube is in its context-view tokens (a linear probe recovers
it), but the action expert, trained on actions alone, prefers the wrist view, where the same fact is
larger and easier. This head reads the projected context-view memory tokens through one learned
attention query and predicts the recorded state; its loss shapes the projector and the memory
position table so that the context view's content is easy to attend to. It never reaches the policy:
the checkpoint saves the projector and expert only, and the policy still acts from images, proprio and
text.
"""

from __future__ import annotations

import torch
from torch import nn


class StateProbe(nn.Module):
    def __init__(self, d_model: int, state_dim: int, heads: int = 4):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.out = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, state_dim))
        self.register_buffer("mean", torch.zeros(state_dim))
        self.register_buffer("std", torch.ones(state_dim))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-4))

    def forward(self, memory: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """Normalised state estimate (B, state_dim) from memory (B, M, d) where ``context_mask`` is True."""
        q = self.query.expand(memory.shape[0], -1, -1).to(memory.dtype)
        pooled, _ = self.attn(q, memory, memory, key_padding_mask=~context_mask, need_weights=False)
        return self.out(pooled[:, 0])

    def loss(self, memory: torch.Tensor, context_mask: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        target = (state.float() - self.mean) / self.std
        return nn.functional.mse_loss(self(memory, context_mask).float(), target)
