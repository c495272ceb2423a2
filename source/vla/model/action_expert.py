"""The action expert: a small pre-norm transformer that predicts the flow velocity of a 16 x 7 chunk.

Tokens: one proprio token, an optional object-state token (the model's own estimate of the object's
pose from its images, `state_dim` > 0), then `num_queries` action tokens (learned query + embedded noisy
action), all shifted by the flow-time embedding. Each block: self-attention among the tokens, cross-attention to
the (layer-normed) VLM memory, MLP. Pre-norm keeps the cross-attention's contribution on the same
scale as the residual stream, so the image/text conditioning is not swamped by the action/time
inputs (a post-norm head reading one 3584-d last token keeps its cross-attention output ~100x smaller
than the residual stream and ignores the images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """Sinusoidal embedding of flow time t in [0, 1], (B,) -> (B, dim), float32.

    Always float32, also under autocast (bf16 has too few mantissa bits for the high frequencies: with
    periods down to 4e-3, a bf16 angle is off by whole turns); the caller casts it to its weights' dtype.
    """
    half = dim // 2
    fraction = torch.linspace(0.0, 1.0, half, device=t.device, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.float()[:, None] * (2 * math.pi / period)[None]
    with torch.autocast(t.device.type, enabled=False):
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class Attention(nn.Module):
    """Multi-head attention over `context` with a key padding mask, through `scaled_dot_product_attention`.

    (Not nn.MultiheadAttention: its inference fast path changes the numerics depending on whether
    parameters require grad, so a reloaded checkpoint would not reproduce predictions bit for bit.)
    """

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head keys and values of `context`, (B, heads, M, d_head) each."""
        b, m, _ = context.shape
        k, v = self.kv_proj(context).view(b, m, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, context_mask: torch.Tensor | None = None,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Attend from `x` to `context`, or to its precomputed `keys_values` `kv` (the same numbers)."""
        b, n, d = x.shape
        q = self.q_proj(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = kv if kv is not None else self.keys_values(context)
        mask = None if context_mask is None else context_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class ExpertBlock(nn.Module):
    def __init__(self, d_model: int, heads: int, ff_mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attn = Attention(d_model, heads, dropout)
        self.norm_cross = nn.LayerNorm(d_model)
        self.norm_memory = nn.LayerNorm(d_model)
        self.cross_attn = Attention(d_model, heads, dropout)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(approximate="tanh"),
                                nn.Dropout(dropout), nn.Linear(ff_mult * d_model, d_model))

    def memory_keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-attention's keys and values of the (normed) memory: fixed for a whole chunk's sampling."""
        return self.cross_attn.keys_values(self.norm_memory(memory))

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None, memory_mask: torch.Tensor,
                memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        h = self.norm_self(x)
        x = x + self.self_attn(h, h)
        kv = memory_kv if memory_kv is not None else self.memory_keys_values(memory)
        x = x + self.cross_attn(self.norm_cross(x), None, memory_mask, kv=kv)
        return x + self.ff(self.norm_ff(x))


class ActionExpert(nn.Module):
    def __init__(self, d_model: int = 512, layers: int = 6, heads: int = 8, num_queries: int = 16,
                 action_dim: int = 7, proprio_dim: int = 27, ff_mult: int = 4, dropout: float = 0.0,
                 state_dim: int = 0):
        super().__init__()
        self.d_model = d_model
        self.queries = nn.Parameter(torch.randn(num_queries, d_model) * 0.02)
        self.action_in = nn.Linear(action_dim, d_model)
        self.proprio_in = nn.Sequential(nn.Linear(proprio_dim, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        self.time_in = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        self.state_in = (nn.Sequential(nn.Linear(state_dim, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
                         if state_dim > 0 else None)
        self.blocks = nn.ModuleList(ExpertBlock(d_model, heads, ff_mult, dropout) for _ in range(layers))
        self.norm_out = nn.LayerNorm(d_model)
        self.velocity_out = nn.Linear(d_model, action_dim)

    def condition(self, proprio: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
                  state: torch.Tensor | None = None) -> ExpertCondition:
        """Everything of a forward pass that does not depend on the noisy actions or the flow time: the
        proprio (and state) tokens and every block's memory keys and values. Sampling a chunk computes it
        once and reuses it for all its Euler steps (the same numbers as recomputing them each step)."""
        tokens = [self.proprio_in(proprio)[:, None]]
        if self.state_in is not None:
            if state is None:
                raise ValueError("this action expert reads an object-state estimate (state_dim > 0); pass state=")
            tokens.append(self.state_in(state.to(proprio.dtype))[:, None])
        kv = [block.memory_keys_values(memory) for block in self.blocks]
        return ExpertCondition(torch.cat(tokens, dim=1), memory_mask, kv)

    def velocity(self, noisy_actions: torch.Tensor, t: torch.Tensor, cond: ExpertCondition) -> torch.Tensor:
        """The flow velocity (B,Q,A) at `noisy_actions` (B,Q,A) and flow time `t` (B,) under `condition`'s output."""
        # Flow time and its sinusoidal embedding in float32; the time MLP gets its weights' dtype (a no-op
        # for a float32 head, autocast or not; bf16 for a model cast to bf16).
        emb = timestep_embedding(t.float(), self.d_model)
        time = self.time_in(emb.to(self.time_in[0].weight.dtype))[:, None]
        actions = self.queries + self.action_in(noisy_actions)
        x = torch.cat([cond.prefix, actions], dim=1) + time
        for block, kv in zip(self.blocks, cond.memory_kv, strict=True):
            x = block(x, None, cond.memory_mask, memory_kv=kv)
        return self.velocity_out(self.norm_out(x[:, cond.prefix.shape[1]:]))

    def forward(self, noisy_actions: torch.Tensor, t: torch.Tensor, proprio: torch.Tensor,
                memory: torch.Tensor, memory_mask: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """noisy_actions (B,Q,A), t (B,), proprio (B,P) normalised, memory (B,M,d), memory_mask (B,M) bool,
        state (B,S) normalised object-state estimate (only with `state_dim` > 0) -> velocity (B,Q,A)."""
        return self.velocity(noisy_actions, t, self.condition(proprio, memory, memory_mask, state))


@dataclass
class ExpertCondition:
    """`ActionExpert.condition`'s output: the prefix tokens (proprio, state), the memory mask and each block's
    memory keys/values."""

    prefix: torch.Tensor
    memory_mask: torch.Tensor
    memory_kv: list[tuple[torch.Tensor, torch.Tensor]]
