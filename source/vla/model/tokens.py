"""Token helpers of the conditioning path: gather the selected VLM hidden states of each row
(`select_tokens`) and collate per-sample cached features (`pad_vlm_features`), both left-aligned with a mask."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def select_tokens(hidden: torch.Tensor, selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather the selected positions of each row, left-aligned: (B,L,H), (B,L) bool -> (B,M,H), (B,M) bool.

    Works for left or right padding alike; padded slots are zeros with mask False.
    """
    counts = selected.sum(1)
    width = max(int(counts.max()), 1)
    order = torch.argsort((~selected).to(torch.int32), dim=1, stable=True)[:, :width]
    feats = hidden.gather(1, order[..., None].expand(-1, -1, hidden.shape[-1]))
    mask = torch.arange(width, device=hidden.device)[None] < counts[:, None]
    return feats * mask[..., None].to(feats.dtype), mask


def pad_vlm_features(items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate per-sample cached (features (M_i,H), mask (M_i,)) into (B,M,H), (B,M), padding on the right."""
    width = max(int(f.shape[0]) for f, _ in items)
    feats = torch.zeros(len(items), width, items[0][0].shape[-1], dtype=items[0][0].dtype)
    mask = torch.zeros(len(items), width, dtype=torch.bool)
    for i, (f, m) in enumerate(items):
        feats[i, : f.shape[0]] = f
        mask[i, : m.shape[0]] = m.bool()
    return feats, mask
