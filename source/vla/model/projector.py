"""VLM hidden states -> expert width.

"mlp" is a 2-layer MLP. "ln_linear" normalises first: a frozen (especially a random tiny)
backbone's hidden states are dominated by a few large, nearly constant channels, and a LayerNorm
before a linear map lets the per-token differences through; measured on the tiny backbone it learns
far faster than the MLP (see docs/model.md).
"""

from __future__ import annotations

from torch import nn


def build_projector(kind: str, vlm_hidden: int, d_model: int) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Linear(vlm_hidden, d_model), nn.GELU(), nn.Linear(d_model, d_model))
    if kind == "ln_linear":
        return nn.Sequential(nn.LayerNorm(vlm_hidden), nn.Linear(vlm_hidden, d_model))
    raise ValueError(f"projector: unknown kind {kind!r}; use 'mlp' or 'ln_linear'")
