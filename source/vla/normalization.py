"""Normalisation statistics for actions and proprio (mean/std and 1st/99th percentiles).

The stats travel inside the model (float32 buffers) and inside checkpoints (`norm_stats.json`), so
training and deployment always normalise the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

STD_FLOOR = 1e-6  # a constant dimension (e.g. an unused gripper channel) must not divide by zero


class NormStatsError(ValueError):
    """norm_stats.json (or a stats dict) is malformed."""


@dataclass
class FeatureStats:
    """Per-dimension statistics of one feature (actions: per action dim, pooled over the chunk)."""

    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray
    q99: np.ndarray

    def __post_init__(self) -> None:
        for name in ("mean", "std", "q01", "q99"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32).reshape(-1))
        dims = {getattr(self, n).shape[0] for n in ("mean", "std", "q01", "q99")}
        if len(dims) != 1:
            raise NormStatsError(f"mean/std/q01/q99 have different lengths: {sorted(dims)}")
        if not all(np.isfinite(getattr(self, n)).all() for n in ("mean", "std", "q01", "q99")):
            raise NormStatsError("statistics contain NaN or Inf; recompute them from clean data")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_array(cls, x: np.ndarray) -> FeatureStats:
        """Stats over every axis but the last."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
        return cls(mean=x.mean(0), std=x.std(0), q01=np.quantile(x, 0.01, axis=0), q99=np.quantile(x, 0.99, axis=0))

    @classmethod
    def identity(cls, dim: int) -> FeatureStats:
        z, o = np.zeros(dim, np.float32), np.ones(dim, np.float32)
        return cls(mean=z, std=o, q01=-o, q99=o)

    def to_dict(self) -> dict[str, list[float]]:
        return {n: getattr(self, n).astype(float).tolist() for n in ("mean", "std", "q01", "q99")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureStats:
        missing = [k for k in ("mean", "std", "q01", "q99") if k not in d]
        if missing:
            raise NormStatsError(f"missing key(s) {missing}")
        return cls(**{k: d[k] for k in ("mean", "std", "q01", "q99")})


@dataclass
class NormStats:
    action: FeatureStats
    proprio: FeatureStats

    @classmethod
    def from_arrays(cls, actions: np.ndarray, proprio: np.ndarray) -> NormStats:
        """actions (..., action_dim), proprio (..., proprio_dim)."""
        return cls(action=FeatureStats.from_array(actions), proprio=FeatureStats.from_array(proprio))

    @classmethod
    def identity(cls, action_dim: int, proprio_dim: int) -> NormStats:
        return cls(action=FeatureStats.identity(action_dim), proprio=FeatureStats.identity(proprio_dim))

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action.to_dict(), "proprio": self.proprio.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NormStats:
        try:
            return cls(action=FeatureStats.from_dict(d["action"]), proprio=FeatureStats.from_dict(d["proprio"]))
        except KeyError as exc:
            raise NormStatsError(f"norm stats: missing section {exc}; expected 'action' and 'proprio'") from exc

    def save(self, path: str | Path) -> None:
        from vla.utils.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> NormStats:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as exc:
            raise NormStatsError(f"{path}: {exc}") from exc
