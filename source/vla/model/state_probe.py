"""Object-state regression from the expert memory: one learned attention query pools the memory tokens
into an estimate of recorded privileged state (e.g. the cube's position and orientation).

Two uses:
- the training-only probe (`aux_state` without a model `state_dim`): it reads the context view's tokens,
  and its loss shapes the projector so the context view's content is easy to attend to; it is not saved;
- the model's state head (`state_dim` > 0 in the model config): it reads every memory token (or only the
  context view's, `state_head_views: context`) plus the proprio (the wrist camera's pose), and its
  estimate goes to the action expert as one token, so the policy acts on where its images say the object
  is. It is part of the checkpoint; its labels (the recorded state) are needed only for training.
"""

from __future__ import annotations

import torch
from torch import nn

from vla.model.action_expert import Attention


class StateProbe(nn.Module):
    def __init__(self, d_model: int, state_dim: int, heads: int = 4, proprio_dim: int = 0, layers: int = 1):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.proprio_in = nn.Linear(proprio_dim, d_model) if proprio_dim > 0 else None
        # scaled_dot_product_attention, not nn.MultiheadAttention: the latter's inference fast path changes the
        # numerics with requires_grad / inference mode, so a served copy of a checkpoint would act differently
        self.attn = Attention(d_model, heads)
        # layers > 1: the pooled query is refined (MLP) and attends again, so a second look can go where the
        # first one found the object
        self.refine = nn.ModuleList(_RefineBlock(d_model, heads) for _ in range(layers - 1))
        self.out = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, state_dim))
        self.register_buffer("mean", torch.zeros(state_dim))
        self.register_buffer("std", torch.ones(state_dim))

    @property
    def state_dim(self) -> int:
        return int(self.mean.shape[0])

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if tuple(mean.shape) != tuple(self.mean.shape):
            raise ValueError(f"state stats have {tuple(mean.shape)[0]} dims but the state head estimates "
                             f"{self.state_dim}; set the model's state_dim to the aux_state keys' total size")
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-4))

    def forward(self, memory: torch.Tensor, mask: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised state estimate (B, state_dim) from memory (B, M, d) where ``mask`` is True (and the
        normalised proprio (B, P) when the probe was built with ``proprio_dim``)."""
        q = self.query.expand(memory.shape[0], -1, -1).to(memory.dtype)
        if self.proprio_in is not None:
            q = q + self.proprio_in(proprio.to(memory.dtype))[:, None]
        q = self.attn(q, memory, mask)
        for block in self.refine:
            q = block(q, memory, mask)
        return self.out(q[:, 0])

    def normalize(self, state: torch.Tensor) -> torch.Tensor:
        return (state.float() - self.mean) / self.std

    def loss(self, memory: torch.Tensor, mask: torch.Tensor, state: torch.Tensor,
             proprio: torch.Tensor | None = None) -> torch.Tensor:
        return nn.functional.mse_loss(self(memory, mask, proprio).float(), self.normalize(state))


class _RefineBlock(nn.Module):
    """One more look at the memory: a residual MLP on the pooled query, then residual cross-attention."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model))
        self.norm_attn = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, heads)

    def forward(self, q: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = q + self.mlp(self.norm_mlp(q))
        return q + self.attn(self.norm_attn(q), memory, mask)
