"""Success-rate statistics for closed-loop evaluation.

A success rate over a few dozen episodes is noisy, so every report carries a 95% Wilson score
interval (well-behaved at 0% and 100%, unlike the normal approximation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion; (0, 1) when ``n == 0``."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must lie in [0, n={n}]")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class EpisodeResult:
    """One finished episode, as written to ``episodes.jsonl``."""

    episode: int
    env_id: int
    success: bool
    length: int
    outcome: str  # "success" | "time_out" | "dropped" | other termination term name
    seed: int | None = None
    rank: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def summarize(results: list[EpisodeResult], **meta) -> dict:
    """Summary JSON: success rate with its Wilson interval, mean length, outcome counts and, where the episodes
    carry subtask flags (multi-stage tasks), how many episodes reached each subtask."""
    n = len(results)
    k = sum(r.success for r in results)
    lo, hi = wilson_interval(k, n)
    outcomes: dict[str, int] = {}
    subtasks: dict[str, int] = {}
    for r in results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
        for name, hit in r.extra.get("subtasks", {}).items():
            subtasks[name] = subtasks.get(name, 0) + int(bool(hit))
    extra = {"subtasks_reached": subtasks} if subtasks else {}
    return {
        **meta,
        "num_episodes": n,
        "num_success": k,
        "success_rate": (k / n) if n else 0.0,
        "success_ci95": [lo, hi],
        "mean_episode_length": (sum(r.length for r in results) / n) if n else 0.0,
        "mean_success_length": (sum(r.length for r in results if r.success) / k) if k else None,
        "outcomes": outcomes,
        **extra,
    }
