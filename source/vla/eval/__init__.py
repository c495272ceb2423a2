"""Evaluation helpers that need no simulator (metrics, summaries)."""

from .metrics import EpisodeResult, summarize, wilson_interval

__all__ = ["EpisodeResult", "summarize", "wilson_interval"]
