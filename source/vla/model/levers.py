"""`TrainingLevers`: the training config's regularisers (wrist/proprio dropout, noise draws per VLM
forward) as `VLAModel.forward` reads them; kept apart from the model config because checkpoints never store them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainingLevers:
    """Training-only regularisers applied by `VLAModel.forward` while it trains (the training config's
    `levers`); they change what the head learns from, not the model a checkpoint runs, so they are not saved."""

    wrist_dropout: float = 0.0  # share of samples whose wrist-view image tokens are hidden from the expert
    proprio_dropout: float = 0.0  # share of samples whose proprio is replaced by its dataset mean
    noise_draws_per_obs: int = 1  # flow noise/time draws sharing one (expensive) VLM forward
    # share of samples whose expert reads the recorded object state instead of the state head's estimate
    # (a model with `state_dim` > 0): the expert learns to trust its state token
    state_teacher_forcing: float = 0.0

    def __post_init__(self) -> None:
        for key in ("wrist_dropout", "proprio_dropout", "state_teacher_forcing"):
            if not 0.0 <= float(getattr(self, key)) < 1.0:
                raise ValueError(f"levers.{key}: must be in [0, 1), got {getattr(self, key)}")
        if int(self.noise_draws_per_obs) < 1:
            raise ValueError(f"levers.noise_draws_per_obs: must be >= 1, got {self.noise_draws_per_obs}")
