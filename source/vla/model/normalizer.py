"""`Normalizer`: the model's action/proprio normalisation stats as float32 buffers (``normalizer.*`` in the
state dict), so that callers deal in raw units and bf16 casts never round the stats."""

from __future__ import annotations

import torch
from torch import nn

from vla.normalization import STD_FLOOR, FeatureStats, NormStats


class Normalizer(nn.Module):
    """Action/proprio stats as float32 buffers that stay float32 when the model is cast to bf16."""

    FIELDS = ("mean", "std", "q01", "q99")

    def __init__(self, action_dim: int, proprio_dim: int, mode: str = "mean_std"):
        super().__init__()
        self.mode = mode
        self.set_stats(NormStats.identity(action_dim, proprio_dim), _register=True)

    def set_stats(self, stats: NormStats, _register: bool = False) -> None:
        for prefix, feat in (("action", stats.action), ("proprio", stats.proprio)):
            for name in self.FIELDS:
                value = torch.as_tensor(getattr(feat, name), dtype=torch.float32)
                key = f"{prefix}_{name}"
                if _register:
                    self.register_buffer(key, value)
                else:
                    old = getattr(self, key)
                    if old.shape != value.shape:
                        raise ValueError(f"norm stats: {prefix} has {value.shape[0]} dims but the model expects "
                                         f"{old.shape[0]}; recompute the stats with the model's key mapping")
                    setattr(self, key, value.to(old.device))

    def get_stats(self) -> NormStats:
        def feat(prefix: str) -> FeatureStats:
            return FeatureStats(**{n: getattr(self, f"{prefix}_{n}").cpu().numpy() for n in self.FIELDS})

        return NormStats(action=feat("action"), proprio=feat("proprio"))

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for key, buf in self._buffers.items():  # follow device moves, ignore dtype casts
            if buf is not None and buf.dtype != torch.float32:
                self._buffers[key] = buf.float()
        return self

    def _scale_shift(self, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "quantile":  # [q01, q99] -> [-1, 1]
            lo, hi = getattr(self, f"{prefix}_q01"), getattr(self, f"{prefix}_q99")
            return ((hi - lo) / 2).clamp_min(STD_FLOOR), (hi + lo) / 2
        return getattr(self, f"{prefix}_std").clamp_min(STD_FLOOR), getattr(self, f"{prefix}_mean")

    def normalize(self, prefix: str, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self._scale_shift(prefix)
        return (x.float() - shift) / scale

    def denormalize(self, prefix: str, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self._scale_shift(prefix)
        return x.float() * scale + shift
